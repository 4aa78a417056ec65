/* api.h — HTTP handlers (one file per resource) and the helpers every handler shares.
 *
 * A handler runs on a connection thread with the request fully read (r->body, r->body_len,
 * NUL-terminated) and must end with exactly one reply — srv_reply_json / srv_reply_error /
 * srv_req_reply (server/http.h) — or suspend (srv_req_suspend) and reply from its on_resume callback.
 * Errors always have the shape {"error": "<message a person can act on>", "code": "<stable
 * machine code>"} and go through srv_reply_error, which also counts them in the metrics.
 */
#ifndef API_API_H
#define API_API_H

#include <jansson.h>

#include "server/http.h"
#include "server/repository.h"
#include "server/router.h"

/* Parses the body as a JSON object within cfg->max_json_depth. On failure replies (400
 * bad_json / json_too_deep, 415 unsupported_media_type) and returns NULL. New reference. */
json_t *api_body_json(srv_req *r);

/* The JSON object in text[0..len) (the first len bytes of a body), depth-limited, media type not
 * checked. Same replies and ownership as api_body_json. */
json_t *api_json_parse(srv_req *r, const char *text, size_t len);

/* Whether a media type (srv_media_type) is one a JSON body may come with ("" included). */
int api_json_media_type(const char *mt);

/* 0 when `name` is a valid model name; otherwise replies 400 invalid_name and returns -1. */
int api_name_check(srv_req *r, const char *name);

/* The model version named by the route's {name} (and {version}) with a reference (release
 * with srv_model_release), loaded for the request when it is not loaded now (memory budget;
 * srv_repo_acquire_load, bounded by r->deadline). On failure replies (400 invalid_name /
 * invalid_version, 404 model_not_found / version_not_found, 503 model_unavailable /
 * model_loading / model_budget_busy) and returns NULL. Sets r->model_label. */
srv_model *api_model_acquire(srv_req *r);

/* Query argument `key`, percent-decoded into buf (n bytes, NUL included): 1 with buf set, 0
 * when absent; -1 after replying 400 invalid_parameter naming it when the value does not decode
 * or is longer than n - 1 bytes. */
int api_query(srv_req *r, const char *key, char *buf, size_t n);

/* The route's {version}: 0 when absent, else a positive version; -1 after replying 400
 * invalid_version. */
int api_version_param(srv_req *r);

/* Sets r->cleanup to release m once the request completes (model stays alive while the reply
 * is built). */
void api_hold_model(srv_req *r, srv_model *m);

/* The Open Inference Protocol metadata of model version m (new reference): name, versions (m's
 * alone when this_version_only, else every served version of the name), inputs, outputs,
 * parameters {labels, preprocess, info}. */
json_t *api_model_meta_json(srv_repo *repo, const srv_model *m, int this_version_only);

/* ---- handlers ---- */
/* The route table (api/routes.c; static, n entries), handed to the server's matcher at start. */
const srv_route *api_routes(int *n);

void api_v2_live(srv_req *r);
void api_v2_ready(srv_req *r);
void api_v2_server_meta(srv_req *r);
void api_v2_model_meta(srv_req *r);
void api_v2_model_ready(srv_req *r);
void api_v2_infer(srv_req *r);
void api_v2_stats(srv_req *r);
void api_v2_model_config(srv_req *r);
void api_v1_classify(srv_req *r);
void api_v1_models(srv_req *r);
void api_repo_index(srv_req *r);
void api_repo_load(srv_req *r);
void api_repo_unload(srv_req *r);
void api_metrics(srv_req *r);
/* jobs (api/jobs.c) */
void api_jobs_convert(srv_req *r);
void api_jobs_finetune(srv_req *r);
void api_jobs_list(srv_req *r);
void api_job_get(srv_req *r);
void api_job_cancel(srv_req *r);
void api_job_resume(srv_req *r);
/* data sets (api/datasets.c) */
void api_dataset_put(srv_req *r);
void api_datasets_list(srv_req *r);
void api_dataset_get(srv_req *r);
void api_dataset_delete(srv_req *r);
/* model edits (api/models.c) */
void api_model_patch(srv_req *r);
/* the web console's embedded files (api/console.c): GET / and GET /console/{file} */
void api_console_index(srv_req *r);
void api_console_file_get(srv_req *r);

#endif
