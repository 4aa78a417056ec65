/* datasets.c — the data set API: PUT /v1/datasets/{name} (a zip / tar / tar.gz archive of PNG
 * or JPEG images as the body, streamed to disk by the HTTP layer), GET /v1/datasets,
 * GET /v1/datasets/{name}, DELETE /v1/datasets/{name}. What is accepted and how a set is
 * stored: server/datasets.h.
 *
 * An import decodes every image once and may take a while on a large archive, so it runs on a
 * thread of its own while the connection is suspended (the HTTP thread serves other
 * connections meanwhile); at most MAX_IMPORTS run at once, more answer 503 + Retry-After.
 * A shutdown stops an import between two entries (503, nothing left behind).
 */
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>

#include "api/api.h"
#include "server/datasets.h"

#define MAX_IMPORTS 2

static atomic_int g_imports;

typedef struct import_job {
    srv_req *r;
    char name[SRV_NAME_MAX + 1];
    int overwrite, existed;
    srv_dataset_limits lim;
    json_t *result; /* the manifest, or NULL with e */
    srv_dataset_err e;
} import_job;

static void reply_ds_err(srv_req *r, const srv_dataset_err *e) {
    srv_reply_error(r, e->status, e->code, "%s", e->msg);
}

/* The import thread: the request is suspended while it runs; it touches nothing of the job
 * after srv_req_resume (the reply may be sent and the request freed at once). */
static void *import_run(void *arg) {
    import_job *j = arg;
    srv_req *r = j->r;
    j->result = srv_dataset_import(r->cfg->data_dir, j->name, r->upload_path, j->overwrite,
                                   &j->lim, &r->srv->draining, &j->e);
    atomic_fetch_sub(&g_imports, 1);
    srv_req_resume(r);
    return NULL;
}

static void import_reply(srv_req *r) {
    import_job *j = r->user;
    if (!j->result) {
        if (j->e.status == 503) srv_req_header_add(r, "Retry-After", "1");
        reply_ds_err(r, &j->e);
        return;
    }
    char loc[96];
    snprintf(loc, sizeof loc, "/v1/datasets/%s", j->name);
    srv_req_header_add(r, "Location", loc);
    srv_reply_json(r, j->existed ? 200 : 201, j->result);
    j->result = NULL; /* stolen by the reply */
}

static void import_free(srv_req *r) {
    import_job *j = r->user;
    if (j) json_decref(j->result);
    free(j);
    r->user = NULL;
}

void api_dataset_put(srv_req *r) {
    const char *name = srv_req_param(r, "name");
    srv_dataset_err e = {0};
    if (srv_dataset_name_check(name, &e)) {
        reply_ds_err(r, &e);
        return;
    }
    char ow[33];
    int overwrite = 0;
    const int has_ow = api_query(r, "overwrite", ow, sizeof ow);
    if (has_ow < 0) return;
    if (has_ow) {
        if (!strcmp(ow, "true") || !strcmp(ow, "1")) overwrite = 1;
        else if (strcmp(ow, "false") && strcmp(ow, "0")) {
            srv_reply_error(r, 400, "invalid_parameter", "overwrite must be true or false");
            return;
        }
    }
    if (!r->upload_path || r->upload_len == 0) {
        srv_reply_error(r, 400, "missing_archive",
                        "the body must be a zip or tar (.tar.gz) archive of PNG / JPEG images: "
                        "curl -T set.zip or --data-binary @set.zip, or a multipart \"file\"");
        return;
    }
    if (atomic_load(&r->srv->draining)) {
        srv_req_header_add(r, "Retry-After", "1");
        srv_reply_error(r, 503, "shutting_down", "the server is shutting down; upload again later");
        return;
    }
    if (atomic_fetch_add(&g_imports, 1) >= MAX_IMPORTS) {
        atomic_fetch_sub(&g_imports, 1);
        srv_req_header_add(r, "Retry-After", "5");
        srv_reply_error(r, 503, "busy", "%d data set imports are running; retry shortly",
                        MAX_IMPORTS);
        return;
    }
    import_job *j = calloc(1, sizeof *j);
    if (!j) {
        atomic_fetch_sub(&g_imports, 1);
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return;
    }
    j->r = r;
    snprintf(j->name, sizeof j->name, "%s", name);
    j->overwrite = overwrite;
    char dst[1200];
    struct stat st;
    snprintf(dst, sizeof dst, "%s/%s", r->cfg->data_dir, name);
    j->existed = lstat(dst, &st) == 0;
    srv_dataset_limits_get(r->cfg, &j->lim);
    r->user = j;
    r->cleanup = import_free;
    pthread_attr_t attr;
    pthread_t t;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    srv_req_suspend(r, import_reply); /* before the thread exists: it may resume at once */
    if (pthread_create(&t, &attr, import_run, j) != 0) {
        atomic_fetch_sub(&g_imports, 1);
        j->e = (srv_dataset_err){500, "internal", "cannot start the import thread"};
        srv_req_resume(r);
    }
    pthread_attr_destroy(&attr);
}

void api_datasets_list(srv_req *r) { srv_reply_json(r, 200, srv_dataset_list(r->cfg->data_dir)); }

void api_dataset_get(srv_req *r) {
    srv_dataset_err e = {0};
    json_t *d = srv_dataset_describe(r->cfg->data_dir, srv_req_param(r, "name"), &e);
    if (d) srv_reply_json(r, 200, d);
    else reply_ds_err(r, &e);
}

void api_dataset_delete(srv_req *r) {
    const char *name = srv_req_param(r, "name");
    srv_dataset_err e = {0};
    if (srv_dataset_delete(r->cfg->data_dir, name, &e)) reply_ds_err(r, &e);
    else srv_reply_json(r, 200, json_pack("{s:s, s:b}", "name", name, "deleted", 1));
}
