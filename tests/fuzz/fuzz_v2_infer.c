/* fuzz_v2_infer.c — api/v2_infer.c: a POST /v2/models/{name}/infer request as the handler
 * parses it (JSON body, the binary tensor extension's header and trailing bytes, inputs,
 * shapes, datatypes, requested outputs) and answers it, including the binary reply.
 *
 * The handler's code (api/v2_infer.c, api/infer.c, api/errors.c) runs unchanged; this file
 * stands in for what lies under it: the HTTP request (headers from the input, the reply
 * captured), the repository (one LeNet-sized image model, [1, 28, 28] in, 10 classes out, with
 * MNIST-like preprocess metadata) and the batcher (runs the job at once with fixed scores).
 * It checks that every request gets exactly one reply, a JSON one for errors.
 *
 * Input: header lines "Name: value\n" up to an empty line, then the body. Content-Type defaults
 * to application/json. */
#include <jansson.h>
#include <strings.h>

#include "api/infer.h"
#include "fuzz.h"
#include "server/batcher.h"

#define MAX_HDR 8

typedef struct fake_http {
    int nh;
    char *hname[MAX_HDR], *hval[MAX_HDR];
    int replies, status;
    char *reply;
    size_t reply_len;
    const char *reply_type;
    char *ihcl; /* Inference-Header-Content-Length added to the reply */
} fake_http;

static fake_http g_h;
static srv_model g_model;
static srv_batch_cfg g_batch = {.batching = 0, .max_batch = 64, .queue_capacity = 16, .workers = 1};

/* ---- the HTTP layer (server/http.h) ---- */

const char *srv_req_header(const srv_req *r, const char *name) {
    (void)r;
    for (int i = 0; i < g_h.nh; i++)
        if (!strcasecmp(g_h.hname[i], name)) return g_h.hval[i];
    return NULL;
}

const char *srv_req_param(const srv_req *r, const char *name) {
    (void)r;
    return !strcmp(name, "name") ? "m" : NULL;
}

int srv_req_query_arg(const srv_req *r, const char *key, char *buf, size_t n) {
    (void)r, (void)key;
    if (n) buf[0] = 0;
    return SRV_QUERY_ABSENT; /* the fuzzed input is the body; no query string */
}

void srv_req_reply(srv_req *r, int status, const char *type, char *body, size_t len) {
    (void)r;
    g_h.replies++;
    free(g_h.reply);
    g_h.status = status;
    g_h.reply = body;
    g_h.reply_len = len;
    g_h.reply_type = type;
}

void srv_req_header_add(srv_req *r, const char *name, const char *value) {
    (void)r;
    if (!strcasecmp(name, "Inference-Header-Content-Length")) {
        free(g_h.ihcl);
        g_h.ihcl = strdup(value);
    }
}

void srv_req_suspend(srv_req *r, srv_handler on_resume) {
    r->suspended = 1;
    r->on_resume = on_resume;
}

void srv_req_resume(srv_req *r) { r->resumed = 1; }

void srv_metrics_error(srv_metrics *m, const char *code) {
    (void)m;
    DYN_ASSERT(code && *code);
}

/* ---- the repository (server/repository.h) ---- */

srv_model *srv_repo_acquire(srv_repo *r, const char *name, int version, int *known) {
    (void)r;
    int hit = !strcmp(name, "m") && version <= 1;
    if (known) *known = !strcmp(name, "m");
    if (hit) atomic_fetch_add(&g_model.refs, 1);
    return hit ? &g_model : NULL;
}

srv_model *srv_repo_acquire_load(srv_repo *r, const char *name, int version, double deadline,
                                 int *known, srv_repo_why *why, dyn_err *err) {
    (void)deadline, (void)err;
    srv_model *m = srv_repo_acquire(r, name, version, known);
    if (!m && why) *why = SRV_REPO_NOT_SERVED;
    return m;
}

srv_model_state srv_repo_state(srv_repo *r, const char *name, int version, char *reason,
                               size_t n) {
    (void)r, (void)version;
    if (reason && n) reason[0] = 0;
    return !strcmp(name, "m") ? SRV_STATE_READY : SRV_STATE_UNKNOWN;
}

int srv_repo_refresh(srv_repo *r, const char *name, dyn_err *err) {
    (void)r, (void)name, (void)err;
    return 0;
}

int srv_repo_name_valid(const char *name) { return name && *name && strlen(name) <= SRV_NAME_MAX; }

void srv_model_release(srv_model *m) {
    if (m) DYN_ASSERT(atomic_fetch_sub(&m->refs, 1) > 0);
}

/* ---- the batcher (server/batcher.h): runs at once ---- */

void srv_batcher_count_fail(srv_batcher *b, uint64_t ns) { (void)b, (void)ns; }

int srv_batcher_submit(srv_batcher *b, srv_infer *req) {
    (void)b;
    DYN_ASSERT(req->n >= 1 && req->x && req->y);
    for (int i = 0; i < req->n * (int)g_model.out_numel; i++) req->y[i] = (float)(i % 10) - req->x[0];
    req->status = SRV_INFER_OK;
    req->done(req);
    return 0;
}

const srv_batch_cfg *srv_batcher_cfg(const srv_batcher *b) {
    (void)b;
    return &g_batch;
}

/* ---- the harness ---- */

static srv_config g_cfg;
static srv_ctx g_ctx;

static void init_once(void) {
    static int done;
    if (done) return;
    char *argv[] = {"dynd", NULL};
    srv_cmd cmd;
    dyn_err err = {0};
    fuzz_verbose();
    clearenv();
    DYN_ASSERT(srv_config_load(1, argv, &g_cfg, &cmd, &err) == 0);
    dyn_shape in = {.ndim = 3, .d = {1, 28, 28}};
    g_model.model = dyn_model_new(&in);
    DYN_ASSERT(g_model.model);
    snprintf(g_model.name, sizeof g_model.name, "m");
    g_model.version = 1;
    g_model.in_numel = 784;
    g_model.out_numel = 10;
    json_t *pp = json_pack("{s:s, s:f, s:[f], s:[f]}", "color", "gray", "scale", 255.0, "mean",
                           0.1307, "std", 0.3081);
    DYN_ASSERT(pp && dyn_preprocess_parse(pp, &in, &g_model.pp, &err) == 0);
    json_decref(pp);
    g_model.is_image = 1;
    done = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    init_once();
    memset(&g_h, 0, sizeof g_h);
    /* headers */
    size_t off = 0;
    while (off < size && g_h.nh < MAX_HDR) {
        const uint8_t *nl = memchr(data + off, '\n', size - off);
        size_t ln = nl ? (size_t)(nl - data) - off : size - off;
        if (ln == 0) {
            off++;
            break;
        }
        const uint8_t *colon = memchr(data + off, ':', ln);
        if (colon) {
            size_t kn = (size_t)(colon - data) - off, vo = kn + 1;
            while (vo < ln && data[off + vo] == ' ') vo++;
            g_h.hname[g_h.nh] = fuzz_cstr(data + off, kn);
            g_h.hval[g_h.nh] = fuzz_cstr(data + off + vo, ln - vo);
            g_h.nh++;
        }
        off += ln + (nl != NULL);
    }
    if (!srv_req_header(NULL, "Content-Type") && g_h.nh < MAX_HDR) {
        g_h.hname[g_h.nh] = strdup("Content-Type");
        g_h.hval[g_h.nh++] = strdup("application/json");
    }
    srv_req r;
    memset(&r, 0, sizeof r);
    r.srv = &g_ctx;
    r.cfg = &g_cfg;
    snprintf(r.method, sizeof r.method, "POST");
    r.body_len = size - off;
    r.body = fuzz_cstr(data + off, r.body_len); /* NUL-terminated, as http.c keeps bodies */
    if (r.body) {
        api_v2_infer(&r);
        if (r.suspended) {
            DYN_ASSERT(r.resumed && g_h.replies == 0);
            r.on_resume(&r);
        }
        DYN_ASSERT(g_h.replies == 1);
        fuzz_note("v2_infer: %d %s %.*s", g_h.status, g_h.reply_type,
                  (int)DYN_MIN(g_h.reply_len, 160), g_h.reply);
        DYN_ASSERT(g_h.status >= 200 && g_h.status <= 599);
        if (g_h.status >= 400) { /* errors are {"error": ..., "code": ...} */
            json_error_t je;
            json_t *e = json_loadb(g_h.reply, g_h.reply_len, 0, &je);
            DYN_ASSERT(e && json_is_string(json_object_get(e, "error")) &&
                       json_is_string(json_object_get(e, "code")));
            json_decref(e);
        } else if (g_h.ihcl) { /* binary reply: the JSON part's length is within the reply */
            DYN_ASSERT(strtoull(g_h.ihcl, NULL, 10) <= g_h.reply_len);
        }
        if (r.cleanup) r.cleanup(&r);
    }
    DYN_ASSERT(atomic_load(&g_model.refs) == 0);
    free(r.body);
    free(g_h.reply);
    free(g_h.ihcl);
    for (int i = 0; i < g_h.nh; i++) {
        free(g_h.hname[i]);
        free(g_h.hval[i]);
    }
    return 0;
}
