/* infer.c — see infer.h. */
#include "api/infer.h"

#include <string.h>

#include "train.h"

static void job_free(srv_req *r) {
    api_job *j = r->user;
    if (!j) return;
    srv_model_release(j->m);
    dyn_free(j->x);
    dyn_free(j->y);
    json_decref(j->state);
    free(j);
    r->user = NULL;
}

api_job *api_job_new(srv_req *r, srv_model *m, int n) {
    api_job *j = calloc(1, sizeof *j);
    if (j) {
        j->x = dyn_alloc(sizeof(float) * (size_t)(n * m->in_numel));
        j->y = dyn_alloc(sizeof(float) * (size_t)(n * m->out_numel));
    }
    if (!j || !j->x || !j->y) {
        if (j) {
            dyn_free(j->x);
            dyn_free(j->y);
            free(j);
        }
        srv_model_release(m);
        srv_reply_error(r, 500, "out_of_memory", "out of memory for %d samples", n);
        return NULL;
    }
    j->req = r;
    j->m = m;
    j->n = n;
    r->user = j;
    r->cleanup = job_free;
    return j;
}

static void job_done(srv_infer *inf) {
    api_job *j = (api_job *)inf; /* inf is the first member */
    srv_req_resume(j->req);
}

void api_job_submit(srv_req *r, api_job *j, srv_handler on_done) {
    j->inf.n = j->n;
    j->inf.x = j->x;
    j->inf.y = j->y;
    j->inf.deadline = r->deadline;
    j->inf.done = job_done;
    j->inf.arg = j;
    int rc = srv_batcher_submit(j->m->batcher, &j->inf);
    if (rc == -1) {
        srv_req_header_add(r, "Retry-After", "1");
        srv_reply_error(r, 503, "queue_full",
                        "model '%s' has %d requests waiting (queue_capacity); retry shortly",
                        j->m->name, srv_batcher_cfg(j->m->batcher)->queue_capacity);
        return;
    }
    if (rc) {
        srv_req_header_add(r, "Retry-After", "1");
        srv_reply_error(r, 503, "model_unavailable", "model '%s' is stopping", j->m->name);
        return;
    }
    srv_req_suspend(r, on_done);
}

int api_job_check(srv_req *r, const api_job *j) {
    if (j->inf.status == SRV_INFER_OK) return 0;
    if (j->inf.status == SRV_INFER_TIMEOUT) {
        srv_reply_error(r, 504, "deadline_exceeded",
                        "the request waited past its deadline of %d ms (request_timeout_ms or "
                        "X-Request-Timeout-Ms)", (int)((r->deadline - r->t_start) * 1e3 + 0.5));
    } else if (j->inf.status == SRV_INFER_DEVICE_ERROR) {
        srv_reply_error(r, 500, "device_error", "model '%s' failed on %s: %s", j->m->name,
                        j->m->device, j->inf.error);
    } else {
        srv_req_header_add(r, "Retry-After", "1");
        srv_reply_error(r, 503, "shutting_down", "the server stopped before the request ran");
    }
    return -1;
}

float *api_job_probs(const api_job *j) {
    size_t k = (size_t)(j->n * j->m->out_numel);
    float *p = malloc(sizeof(float) * k);
    if (!p) return NULL;
    memcpy(p, j->y, sizeof(float) * k);
    dyn_softmax(p, j->n, (int)j->m->out_numel);
    return p;
}

void api_topk(const float *v, int c, int k, int *idx) {
    for (int i = 0; i < k; i++) {
        int best = -1;
        for (int t = 0; t < c; t++) {
            int used = 0;
            for (int u = 0; u < i && !used; u++) used = idx[u] == t;
            if (!used && (best < 0 || v[t] > v[best])) best = t;
        }
        idx[i] = best;
    }
}
