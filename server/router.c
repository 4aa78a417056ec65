/* router.c — the route table and its matcher. See router.h. */
#include "server/router.h"

#include <string.h>

#include "api/api.h"

#define INF SRV_ROUTE_INFERENCE
#define WR SRV_ROUTE_WRITE

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
     SRV_ROUTE_UPLOAD | WR},
    {"POST", "/v1/finetunes", "finetunes", api_jobs_finetune, SRV_AUTH_ADMIN, WR},
    {"GET", "/v1/jobs", "jobs", api_jobs_list, SRV_AUTH_ADMIN, 0},
    {"GET", "/v1/jobs/{id}", "job", api_job_get, SRV_AUTH_ADMIN, 0},
    {"DELETE", "/v1/jobs/{id}", "job_cancel", api_job_cancel, SRV_AUTH_ADMIN, WR},
    {"POST", "/v1/jobs/{id}/resume", "job_resume", api_job_resume, SRV_AUTH_ADMIN, WR},
    /* data sets (api/datasets.c): archives of images stored in data_dir */
    {"GET", "/v1/datasets", "datasets", api_datasets_list, SRV_AUTH_ADMIN, 0},
    {"PUT", "/v1/datasets/{name}", "dataset_put", api_dataset_put, SRV_AUTH_ADMIN,
     SRV_ROUTE_UPLOAD | SRV_ROUTE_ARCHIVE | WR},
    {"GET", "/v1/datasets/{name}", "dataset", api_dataset_get, SRV_AUTH_ADMIN, 0},
    {"DELETE", "/v1/datasets/{name}", "dataset_delete", api_dataset_delete, SRV_AUTH_ADMIN, WR},
    /* model edits (api/models.c): labels and preprocessing, published as a new version */
    {"PATCH", "/v1/models/{name}", "model_patch", api_model_patch, SRV_AUTH_ADMIN, WR},
};

const srv_route *srv_router_routes(int *n) {
    *n = (int)DYN_ARRAY_LEN(ROUTES);
    return ROUTES;
}

static int hexval(int c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

char *srv_pct_decode(const char *s, size_t n) {
    char *out = malloc(n + 1);
    if (!out) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '%') {
            if (i + 2 >= n) { /* fewer than two hex digits left */
                free(out);
                return NULL;
            }
            int a = hexval((unsigned char)s[i + 1]), b = hexval((unsigned char)s[i + 2]);
            if (a < 0 || b < 0 || (a == 0 && b == 0)) {
                free(out);
                return NULL;
            }
            out[k++] = (char)(a * 16 + b);
            i += 2;
        } else {
            out[k++] = s[i];
        }
    }
    out[k] = 0;
    return out;
}

/* Splits path into segments (pointers into path, lengths). Returns the count or -1. */
static int split(const char *path, const char **seg, size_t *len, int max) {
    if (path[0] != '/') return -1;
    int n = 0;
    const char *p = path + 1;
    if (!*p) return 0;
    for (;;) {
        const char *e = strchr(p, '/');
        size_t l = e ? (size_t)(e - p) : strlen(p);
        if (n == max) return -1;
        seg[n] = p;
        len[n] = l;
        n++;
        if (!e) break;
        p = e + 1;
    }
    return n;
}

/* 1 when route rt's pattern matches the segments (captures not decoded here). */
static int pattern_match(const srv_route *rt, const char **seg, const size_t *len, int n) {
    const char *pseg[16];
    size_t plen[16];
    int pn = split(rt->pattern, pseg, plen, 16);
    if (pn != n) return 0;
    for (int i = 0; i < n; i++) {
        if (plen[i] > 2 && pseg[i][0] == '{') {
            if (len[i] == 0) return 0;
            continue;
        }
        if (plen[i] != len[i] || memcmp(pseg[i], seg[i], len[i])) return 0;
    }
    return 1;
}

const char *srv_route_param_name(const srv_route *rt, int k, char *buf, size_t n) {
    const char *pseg[16];
    size_t plen[16];
    int pn = split(rt->pattern, pseg, plen, 16), seen = 0;
    for (int i = 0; i < pn; i++) {
        if (pseg[i][0] != '{') continue;
        if (seen++ == k) {
            snprintf(buf, n, "%.*s", (int)plen[i] - 2, pseg[i] + 1);
            return buf;
        }
    }
    return NULL;
}

const srv_route *srv_router_match(const char *method, const char *path, char **params,
                                  int *nparams, int *status, char *allow, size_t allow_n) {
    const char *seg[16];
    size_t len[16];
    *nparams = 0;
    *status = 404;
    if (allow_n) allow[0] = 0;
    int n = split(path, seg, len, 16);
    if (n < 0) return NULL;
    const srv_route *hit = NULL;
    for (size_t i = 0; i < DYN_ARRAY_LEN(ROUTES); i++) {
        const srv_route *rt = &ROUTES[i];
        if (!pattern_match(rt, seg, len, n)) continue;
        if (!strcmp(rt->method, method)) {
            hit = rt;
            break;
        }
        *status = 405;
        if (!strstr(allow, rt->method)) {
            size_t l = strlen(allow);
            snprintf(allow + l, allow_n - l, "%s%s", l ? ", " : "", rt->method);
        }
    }
    if (!hit) return NULL;
    const char *pseg[16];
    size_t plen[16];
    int pn = split(hit->pattern, pseg, plen, 16);
    for (int i = 0; i < pn; i++) {
        if (pseg[i][0] != '{' || *nparams == SRV_MAX_PARAMS) continue;
        char *v = srv_pct_decode(seg[i], len[i]);
        if (!v) { /* a bad escape: treat as an invalid name (the handler reports it) */
            v = strdup("%");
        }
        params[(*nparams)++] = v;
    }
    *status = 200;
    return hit;
}
