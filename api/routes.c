/* routes.c — the API's route table: method, pattern, metrics label, handler, auth class, flags.
 * Adding an endpoint is one line here (and its handler, and api/openapi.yaml). The server's
 * matcher (server/router.h) is handed this table at start (api/main.c): the server knows no
 * handler, so dependencies run one way, api -> server -> engine. */
#include "api/api.h"
#include "server/router.h"

#define INF SRV_ROUTE_INFERENCE
#define WR SRV_ROUTE_WRITE
#define JOB SRV_ROUTE_JOB

static const srv_route ROUTES[] = {
    /* KServe v2 / Open Inference Protocol: health and metadata */
    {"GET", "/v2/health/live", "v2_live", api_v2_live, SRV_AUTH_NONE, 0},
    {"GET", "/v2/health/ready", "v2_ready", api_v2_ready, SRV_AUTH_NONE, 0},
    {"GET", "/v2", "v2_server", api_v2_server_meta, SRV_AUTH_NONE, 0},
    /* before /v2/models/{name}, which would otherwise take "stats" for a model name */
    {"GET", "/v2/models/stats", "v2_stats", api_v2_stats, SRV_AUTH_INFER, 0},
    {"GET", "/v2/models/{name}", "v2_model", api_v2_model_meta, SRV_AUTH_INFER, 0},
    {"GET", "/v2/models/{name}/versions/{version}", "v2_model", api_v2_model_meta, SRV_AUTH_INFER, 0},
    {"GET", "/v2/models/{name}/ready", "v2_model_ready", api_v2_model_ready, SRV_AUTH_INFER, 0},
    {"GET", "/v2/models/{name}/versions/{version}/ready", "v2_model_ready", api_v2_model_ready,
     SRV_AUTH_INFER, 0},
    /* inference */
    {"POST", "/v2/models/{name}/infer", "v2_infer", api_v2_infer, SRV_AUTH_INFER, INF},
    {"POST", "/v2/models/{name}/versions/{version}/infer", "v2_infer", api_v2_infer,
     SRV_AUTH_INFER, INF},
    {"POST", "/v1/models/{name}/classify", "classify", api_v1_classify, SRV_AUTH_INFER, INF},
    {"POST", "/v1/models/{name}/versions/{version}/classify", "classify", api_v1_classify,
     SRV_AUTH_INFER, INF},
    /* model configuration (Triton) */
    {"GET", "/v2/models/{name}/config", "v2_model_config", api_v2_model_config, SRV_AUTH_INFER, 0},
    {"GET", "/v2/models/{name}/versions/{version}/config", "v2_model_config", api_v2_model_config, SRV_AUTH_INFER, 0},
    /* statistics extension */
    {"GET", "/v2/models/{name}/stats", "v2_stats", api_v2_stats, SRV_AUTH_INFER, 0},
    {"GET", "/v2/models/{name}/versions/{version}/stats", "v2_stats", api_v2_stats, SRV_AUTH_INFER, 0},
    /* model repository */
    {"GET", "/v1/models", "v1_models", api_v1_models, SRV_AUTH_INFER, 0},
    {"POST", "/v2/repository/index", "repo_index", api_repo_index, SRV_AUTH_ADMIN, 0},
    {"POST", "/v2/repository/models/{name}/load", "repo_load", api_repo_load, SRV_AUTH_ADMIN, WR},
    {"POST", "/v2/repository/models/{name}/unload", "repo_unload", api_repo_unload, SRV_AUTH_ADMIN, WR},
    /* operations */
    {"GET", "/metrics", "metrics", api_metrics, SRV_AUTH_NONE, 0},
    /* jobs (api/jobs.c) */
    {"POST", "/v1/conversions", "conversions", api_jobs_convert, SRV_AUTH_ADMIN,
     SRV_ROUTE_UPLOAD | WR | JOB},
    {"POST", "/v1/finetunes", "finetunes", api_jobs_finetune, SRV_AUTH_ADMIN, WR | JOB},
    {"GET", "/v1/jobs", "jobs", api_jobs_list, SRV_AUTH_ADMIN, 0},
    {"GET", "/v1/jobs/{id}", "job", api_job_get, SRV_AUTH_ADMIN, 0},
    {"DELETE", "/v1/jobs/{id}", "job_cancel", api_job_cancel, SRV_AUTH_ADMIN, WR},
    {"POST", "/v1/jobs/{id}/resume", "job_resume", api_job_resume, SRV_AUTH_ADMIN, WR | JOB},
    /* data sets (api/datasets.c): archives of images stored in data_dir */
    {"GET", "/v1/datasets", "datasets", api_datasets_list, SRV_AUTH_ADMIN, 0},
    {"PUT", "/v1/datasets/{name}", "dataset_put", api_dataset_put, SRV_AUTH_ADMIN,
     SRV_ROUTE_UPLOAD | SRV_ROUTE_ARCHIVE | WR},
    {"GET", "/v1/datasets/{name}", "dataset", api_dataset_get, SRV_AUTH_ADMIN, 0},
    {"DELETE", "/v1/datasets/{name}", "dataset_delete", api_dataset_delete, SRV_AUTH_ADMIN, WR},
    /* model edits (api/models.c): labels and preprocessing, published as a new version */
    {"PATCH", "/v1/models/{name}", "model_patch", api_model_patch, SRV_AUTH_ADMIN, WR},
    /* the web console (api/console.c): static files embedded at build time, no token needed
     * (the API calls it makes carry the user's) */
    {"GET", "/", "console", api_console_index, SRV_AUTH_NONE, 0},
    {"GET", "/console/{file}", "console", api_console_file_get, SRV_AUTH_NONE, 0},
};

const srv_route *api_routes(int *n) {
    *n = (int)DYN_ARRAY_LEN(ROUTES);
    return ROUTES;
}
