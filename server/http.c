/* http.c — the libmicrohttpd front. See http.h for a request's life.
 *
 * Suspend / resume without a race: a batch worker may finish before the handler has returned,
 * so r->mu orders the two: the pool thread marks `suspended` and calls MHD_suspend_connection
 * under r->mu unless the work already completed (then it replies at once); the worker marks
 * `completed` under r->mu and calls MHD_resume_connection only if the connection is suspended.
 */
#include "server/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/encoding.h"
#include "server/guard.h"
#include "server/log.h"
#include "server/router.h"

struct srv_http {
    srv_ctx *ctx;
    struct MHD_Daemon *d;
    int port;
    atomic_int stopping; /* srv_http_stop began: requests get 503 at once, nothing suspends */
    int quiesced_fd;     /* the listening socket after srv_http_quiesce; -1 before; ours to close */
    srv_guard *guard;    /* deadlines and the per-IP cap (server/guard.h); a connection's
                            socket_context is its srv_conn */
};

static atomic_ullong g_req_counter;

const char *srv_req_param(const srv_req *r, const char *name) {
    char buf[32];
    for (int k = 0; k < r->nparams; k++) {
        const char *pn = srv_route_param_name(r->route, k, buf, sizeof buf);
        if (pn && !strcmp(pn, name)) return r->params[k];
    }
    return NULL;
}

const char *srv_req_header(const srv_req *r, const char *name) {
    return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

typedef struct {
    const char *key;
    int n;
} key_count;

static enum MHD_Result count_key(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value) {
    (void)kind, (void)value;
    key_count *c = cls;
    if (key && !strcmp(key, c->key)) c->n++;
    return MHD_YES;
}

int srv_req_query_arg(const srv_req *r, const char *key, char *buf, size_t n) {
    key_count kc = {key, 0};
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, count_key, &kc);
    if (kc.n > 1) return SRV_QUERY_REPEATED; /* which one counts would be a guess */
    const char *raw = NULL;
    if (MHD_lookup_connection_value_n(r->conn, MHD_GET_ARGUMENT_KIND, key, strlen(key), &raw,
                                      NULL) != MHD_YES)
        return SRV_QUERY_ABSENT;
    if (!raw) raw = ""; /* "?key" without '=': present, empty */
    char *d = srv_pct_decode(raw, strlen(raw));
    size_t dn = d ? strlen(d) : 0;
    if (!d || dn >= n) {
        free(d);
        return SRV_QUERY_INVALID;
    }
    memcpy(buf, d, dn + 1);
    free(d);
    return SRV_QUERY_OK;
}

typedef struct query_acc {
    json_t *o;
    char *bad;
    size_t badn;
    int failed; /* 0, SRV_QUERY_INVALID or SRV_QUERY_REPEATED */
} query_acc;

static enum MHD_Result query_put(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value) {
    (void)kind;
    query_acc *a = cls;
    if (a->failed) return MHD_NO;
    char *k = key ? srv_pct_decode(key, strlen(key)) : NULL;
    char *v = value ? srv_pct_decode(value, strlen(value)) : strdup("");
    if (k && v && json_object_get(a->o, k)) { /* which one counts would be a guess */
        a->failed = SRV_QUERY_REPEATED;
        snprintf(a->bad, a->badn, "%s", k);
    } else if (!k || !v || json_object_set_new(a->o, k, json_string(v))) {
        /* jansson refuses keys and strings that are not UTF-8: invalid too */
        a->failed = SRV_QUERY_INVALID;
        snprintf(a->bad, a->badn, "%s", key ? key : "");
    }
    free(k);
    free(v);
    return a->failed ? MHD_NO : MHD_YES;
}

json_t *srv_req_query_json(const srv_req *r, char *bad, size_t badn, int *why) {
    query_acc a = {json_object(), bad, badn, 0};
    if (badn) bad[0] = 0;
    *why = SRV_QUERY_INVALID;
    if (!a.o) return NULL;
    MHD_get_connection_values(r->conn, MHD_GET_ARGUMENT_KIND, query_put, &a);
    if (a.failed) {
        *why = a.failed;
        json_decref(a.o);
        return NULL;
    }
    return a.o;
}

void srv_req_reply(srv_req *r, int status, const char *type, char *body, size_t len) {
    free(r->reply);
    r->status = status;
    r->reply_type = type;
    r->reply = body;
    r->reply_len = len;
}

void srv_req_header_add(srv_req *r, const char *name, const char *value) {
    if (r->nextra == SRV_MAX_EXTRA_HEADERS) return;
    r->extra[r->nextra][0] = strdup(name);
    r->extra[r->nextra][1] = strdup(value);
    r->nextra++;
}

void srv_req_suspend(srv_req *r, srv_handler on_resume) {
    r->on_resume = on_resume;
    r->suspended = 1; /* finished under r->mu in after_handler */
}

void srv_req_resume(srv_req *r) {
    pthread_mutex_lock(&r->mu);
    r->completed = 1;
    if (r->resumed == 1) { /* the connection is suspended in MHD: wake it */
        r->resumed = 2;
        MHD_resume_connection(r->conn);
    }
    pthread_mutex_unlock(&r->mu);
}

static int token_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           c == '-' || c == '_' || c == '.';
}

static void make_request_id(srv_req *r) {
    const char *h = srv_req_header(r, "X-Request-Id");
    if (h) {
        size_t n = strlen(h), ok = n > 0 && n <= 64;
        for (size_t i = 0; ok && i < n; i++) ok = token_char(h[i]);
        if (ok) {
            memcpy(r->request_id, h, n + 1);
            return;
        }
    }
    unsigned long long c = atomic_fetch_add(&g_req_counter, 1);
    static unsigned long long salt;
    if (!salt) salt = (unsigned long long)(dyn_now() * 1e6) * 0x9E3779B97F4A7C15ULL;
    snprintf(r->request_id, sizeof r->request_id, "%08llx%08llx", (salt >> 32) & 0xffffffffULL,
             c & 0xffffffffULL);
}

static enum MHD_Result queue_reply(srv_req *r) {
    if (!r->reply) srv_reply_error(r, 500, "internal", "the handler produced no reply");
    const char *coding = srv_encoding_reply(r); /* gzip / deflate when asked for and large */
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(r->reply_len, r->reply, MHD_RESPMEM_MUST_FREE);
    if (!resp) return MHD_NO;
    r->reply = NULL; /* owned by resp now */
    r->queued = 1;
    MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, r->reply_type);
    MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    if (r->cfg->replica_id[0]) MHD_add_response_header(resp, "X-Dynd-Replica", r->cfg->replica_id);
    for (int i = 0; i < r->nextra; i++) MHD_add_response_header(resp, r->extra[i][0], r->extra[i][1]);
    if (coding) {
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_ENCODING, coding);
        MHD_add_response_header(resp, MHD_HTTP_HEADER_VARY, "Accept-Encoding");
    }
    if (atomic_load(&r->srv->draining) || r->body_too_large)
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    enum MHD_Result ret = MHD_queue_response(r->conn, (unsigned)r->status, resp);
    MHD_destroy_response(resp);
    return ret;
}

static int auth_check(srv_req *r) {
    if ((r->route->flags & SRV_ROUTE_WRITE) && r->cfg->ntokens == 0 &&
        !r->cfg->allow_unauthenticated_writes) {
        srv_reply_error(r, 403, "writes_need_auth",
                        "this dynd has no auth_tokens, so it refuses jobs, data set uploads and "
                        "model changes: set auth_tokens and send 'Authorization: Bearer <token>' "
                        "(or allow_unauthenticated_writes = true, on a private machine only)");
        return -1;
    }
    int need = r->route->auth == SRV_AUTH_ADMIN ||
               (r->route->auth == SRV_AUTH_INFER && r->cfg->auth_inference);
    if (!need || r->cfg->ntokens == 0) return 0;
    const char *h = srv_req_header(r, MHD_HTTP_HEADER_AUTHORIZATION);
    if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
        srv_req_header_add(r, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"dynd\"");
        srv_reply_error(r, 401, "unauthorized",
                        "this endpoint needs 'Authorization: Bearer <token>'");
        return -1;
    }
    const char *tok = h + 7;
    while (*tok == ' ') tok++;
    if (!srv_config_token_ok(r->cfg, tok)) {
        srv_reply_error(r, 403, "forbidden", "the bearer token is not valid");
        return -1;
    }
    return 0;
}

/* The replica's role (setting role): a serving replica starts no job, a jobs replica runs no
 * inference; both answer 503 saying where to send the request. */
static int role_check(srv_req *r) {
    if (r->cfg->role == SRV_ROLE_SERVE && (r->route->flags & SRV_ROUTE_JOB)) {
        srv_reply_error(r, 503, "jobs_unavailable",
                        "this replica serves inference only (role = serve): send jobs to a "
                        "replica with role = jobs or all");
        return -1;
    }
    if (r->cfg->role == SRV_ROLE_JOBS && (r->route->flags & SRV_ROUTE_INFERENCE)) {
        srv_reply_error(r, 503, "inference_unavailable",
                        "this replica runs jobs only (role = jobs): send inference to a replica "
                        "with role = serve or all");
        return -1;
    }
    return 0;
}

/* ---- streamed uploads (SRV_ROUTE_UPLOAD) ---- */

/* 0: buffer the body; 1: stream a raw body; 2: stream the file part of a multipart body.
 * Archive routes stream every body, whatever its media type (curl -T sends none). */
static int upload_wanted(const srv_req *r) {
    if (!(r->route->flags & SRV_ROUTE_UPLOAD)) return 0;
    char mt[96];
    srv_media_type(r, mt, sizeof mt);
    if (!strcmp(mt, "multipart/form-data")) return 2;
    if (!strcmp(mt, "application/octet-stream") || (r->route->flags & SRV_ROUTE_ARCHIVE)) return 1;
    return 0;
}

/* The streamed upload limit of the route, and the setting's name for messages. */
static long long upload_limit(const srv_req *r, const char **setting) {
    int archive = r->route && (r->route->flags & SRV_ROUTE_ARCHIVE);
    if (setting) *setting = archive ? "dataset_max_upload_bytes" : "max_upload_bytes";
    return archive ? r->cfg->dataset_max_upload_bytes : r->cfg->max_upload_bytes;
}

static void upload_write(srv_req *r, const char *data, size_t n) {
    if (r->body_too_large || r->upload_errno) return;
    if (r->upload_len + (long long)n > upload_limit(r, NULL)) {
        r->body_too_large = 1;
        if (ftruncate(r->upload_fd, 0) != 0) r->upload_errno = errno; /* give the space back */
        return;
    }
    while (n) {
        ssize_t w = write(r->upload_fd, data, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            r->upload_errno = w < 0 ? errno : EIO;
            return;
        }
        data += w;
        n -= (size_t)w;
        r->upload_len += w;
    }
}

#define MAX_FORM_BYTES (64 * 1024)

/* libmicrohttpd's multipart parser: the file part goes to the file, text fields to r->form. */
static enum MHD_Result post_iter(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *filename, const char *content_type,
                                 const char *transfer_encoding, const char *data, uint64_t off,
                                 size_t size) {
    (void)kind, (void)content_type, (void)transfer_encoding;
    srv_req *r = cls;
    if (!key) key = "";
    if (off == 0) { /* a new part */
        int file = filename || !strcmp(key, "file") || !strcmp(key, "model_file");
        r->upload_in_file = file && !r->upload_has_file;
        if (r->upload_in_file) {
            r->upload_has_file = 1;
            snprintf(r->upload_filename, sizeof r->upload_filename, "%s", filename ? filename : "");
        }
    }
    if (r->upload_in_file || filename) r->form_last[0] = 0;
    if (r->upload_in_file) {
        upload_write(r, data, size);
        return MHD_YES;
    }
    if (filename) return MHD_YES; /* a second file: ignored */
    /* A text field given twice is refused. libmicrohttpd reports each value from offset 0,
     * first with 0 bytes when none has arrived yet and then from offset 0 again: offset 0 with
     * a value already stored is a new part unless that value is empty and came in the call just
     * before (a field left empty and given again then reads as one field). */
    json_t *prev = json_object_get(r->form, key);
    if (off == 0 && prev && (json_string_length(prev) > 0 ||
                              strncmp(r->form_last, key, sizeof r->form_last - 1))) {
        snprintf(r->form_dup, sizeof r->form_dup, "%s", key);
        return MHD_NO;
    }
    snprintf(r->form_last, sizeof r->form_last, "%s", key);
    const char *old = json_string_value(prev);
    size_t ol = old ? strlen(old) : 0;
    /* keys and values so far, kept as they come (summing r->form per call was quadratic) */
    r->form_bytes += (off == 0 ? strlen(key) : 0) + size;
    if (r->form_bytes > MAX_FORM_BYTES) {
        r->upload_bad = 1;
        return MHD_NO;
    }
    char *s = malloc(ol + size + 1);
    if (!s) return MHD_NO;
    if (ol) memcpy(s, old, ol);
    memcpy(s + ol, data, size);
    s[ol + size] = 0;
    json_object_set_new(r->form, key, json_stringn(s, ol + size));
    free(s);
    return MHD_YES;
}

/* Opens the upload file (and the multipart parser). On failure replies and returns -1. */
static int upload_start(srv_req *r, int multipart) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/uploads", r->cfg->state_dir);
    if (mkdir(dir, 0750) != 0 && errno != EEXIST) {
        srv_reply_error(r, 500, "upload_failed", "cannot create %s: %s (check state_dir)", dir,
                        strerror(errno));
        return -1;
    }
    size_t n = strlen(dir) + 16;
    r->upload_path = malloc(n);
    if (!r->upload_path) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory");
        return -1;
    }
    snprintf(r->upload_path, n, "%s/.up-XXXXXX", dir);
    r->upload_fd = mkostemp(r->upload_path, O_CLOEXEC);
    if (r->upload_fd < 0) {
        srv_reply_error(r, 500, "upload_failed", "cannot create a file in %s: %s", dir,
                        strerror(errno));
        free(r->upload_path);
        r->upload_path = NULL;
        return -1;
    }
    if (multipart) {
        r->form = json_object();
        r->post = MHD_create_post_processor(r->conn, 64 * 1024, post_iter, r);
        if (!r->post || !r->form) {
            srv_reply_error(r, 400, "bad_multipart",
                            "a multipart/form-data body needs a boundary parameter");
            return -1;
        }
    }
    return 0;
}

static void upload_feed(srv_req *r, const char *data, size_t n) {
    if (!r->post) {
        upload_write(r, data, n);
    } else if (!r->upload_bad && MHD_post_process(r->post, data, n) != MHD_YES && !r->body_too_large) {
        r->upload_bad = 1;
    }
}

/* The body is complete: flush the parser, fsync and close the file. */
static void upload_finish(srv_req *r) {
    if (r->post) {
        if (MHD_destroy_post_processor(r->post) != MHD_YES) r->upload_bad = 1;
        r->post = NULL;
        if (!r->upload_has_file) r->upload_bad = 1;
    }
    if (!r->upload_errno && fsync(r->upload_fd) != 0) r->upload_errno = errno;
    close(r->upload_fd);
    r->upload_fd = -1;
}

/* Frees what an upload left (the file unless a handler took it). */
static void upload_free(srv_req *r) {
    if (r->post) MHD_destroy_post_processor(r->post);
    if (r->upload_fd >= 0) close(r->upload_fd);
    if (r->upload_path) unlink(r->upload_path);
    free(r->upload_path);
    json_decref(r->form);
}

/* The Content-Length headers of a request: how many, and whether their values differ. */
typedef struct cl_count {
    const char *first;
    int n, differ;
} cl_count;

static enum MHD_Result cl_count_put(void *cls, enum MHD_ValueKind kind, const char *key,
                                    const char *value) {
    (void)kind;
    cl_count *c = cls;
    if (!key || strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH)) return MHD_YES;
    if (!value) value = "";
    if (c->n++ == 0) c->first = value;
    else if (strcmp(c->first, value)) c->differ = 1;
    return MHD_YES;
}

/* First call: make the request, decide what can be decided before the body. */
static srv_req *req_new(srv_http *h, struct MHD_Connection *conn, const char *url,
                        const char *method) {
    const union MHD_ConnectionInfo *ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    srv_conn *gc = ci ? ci->socket_context : NULL;
    srv_guard_headers_done(gc);
    srv_req *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    r->gconn = gc;
    r->srv = h->ctx;
    r->conn = conn;
    r->t_start = dyn_now();
    r->cfg = srv_ctx_config_acquire(h->ctx);
    r->upload_fd = -1;
    pthread_mutex_init(&r->mu, NULL);
    atomic_fetch_add(&h->ctx->inflight, 1);
    snprintf(r->method, sizeof r->method, "%s", method);
    r->path = strdup(url);
    make_request_id(r);
    const char *tmo = srv_req_header(r, "X-Request-Timeout-Ms");
    long ms = tmo ? strtol(tmo, NULL, 10) : 0;
    if (ms <= 0 || ms > r->cfg->request_timeout_ms) ms = r->cfg->request_timeout_ms;
    r->deadline = r->t_start + (double)ms * 1e-3;
    int status;
    char allow[64];
    r->route = srv_router_match(method, url, r->params, &r->nparams, &status, allow, sizeof allow);
    if (atomic_load(&h->stopping)) { /* MHD_stop_daemon must find no suspended connection */
        srv_reply_error(r, 503, "shutting_down", "this dynd is shutting down; retry on another replica");
        r->route = NULL;
        return r;
    }
    /* libmicrohttpd frames the body by the first Content-Length and ignores the others: two
     * that disagree are a request-smuggling attempt (a proxy may have framed it by the other).
     * Refuse, and close the connection: where this body ends is not known. */
    cl_count cls = {0};
    MHD_get_connection_values(conn, MHD_HEADER_KIND, cl_count_put, &cls);
    if (cls.differ) {
        srv_req_header_add(r, MHD_HTTP_HEADER_CONNECTION, "close");
        srv_reply_error(r, 400, "conflicting_content_length",
                        "the request has %d Content-Length headers with different values; send "
                        "one", cls.n);
        return r;
    }
    /* Content-Length and Transfer-Encoding together (RFC 9112 6.3): libmicrohttpd frames the
     * body as chunked and keeps the connection, while a proxy in front may have framed it by
     * the length: the same smuggling risk. Refused, and the connection closed. */
    if (cls.n && srv_req_header(r, MHD_HTTP_HEADER_TRANSFER_ENCODING)) {
        srv_req_header_add(r, MHD_HTTP_HEADER_CONNECTION, "close");
        srv_reply_error(r, 400, "conflicting_framing",
                        "the request has both Content-Length and Transfer-Encoding; send one");
        return r;
    }
    if (!r->route) {
        if (status == 405) {
            srv_req_header_add(r, MHD_HTTP_HEADER_ALLOW, allow);
            srv_reply_error(r, 405, "method_not_allowed", "%s is not allowed here (allowed: %s)",
                            method, allow);
        } else {
            srv_reply_error(r, 404, "not_found", "no such endpoint (the API is described in api/openapi.yaml)");
        }
        return r;
    }
    if (auth_check(r) || role_check(r)) return r;
    const int stream = upload_wanted(r);
    const char *setting = "max_body_bytes";
    const long long limit = stream ? upload_limit(r, &setting) : r->cfg->max_body_bytes;
    const char *cl = srv_req_header(r, MHD_HTTP_HEADER_CONTENT_LENGTH);
    if (cl && strtoll(cl, NULL, 10) > limit) {
        r->body_too_large = 1;
        srv_reply_error(r, 413, "body_too_large", "the body is %s bytes; the limit is %lld (%s)",
                        cl, limit, setting);
        return r;
    }
    if (srv_encoding_check(r, stream)) return r; /* 415 for a coding not decoded */
    if (stream) upload_start(r, stream == 2);
    return r;
}

static void body_append(srv_req *r, const char *data, size_t n) {
    if (r->body_too_large) return;
    if (r->body_len + n > (size_t)r->cfg->max_body_bytes) {
        r->body_too_large = 1;
        free(r->body);
        r->body = NULL;
        r->body_len = r->body_cap = 0;
        return;
    }
    if (r->body_len + n + 1 > r->body_cap) {
        size_t cap = r->body_cap ? r->body_cap : 4096;
        while (cap < r->body_len + n + 1) cap *= 2;
        char *b = realloc(r->body, cap);
        if (!b) {
            r->body_too_large = 1;
            return;
        }
        r->body = b;
        r->body_cap = cap;
    }
    memcpy(r->body + r->body_len, data, n);
    r->body_len += n;
    r->body[r->body_len] = 0; /* bodies are also NUL-terminated for parsers */
}

/* After a handler or on_resume ran: suspend, or reply. */
static enum MHD_Result after_handler(srv_req *r) {
    if (!r->suspended) return queue_reply(r);
    r->suspended = 0;
    pthread_mutex_lock(&r->mu);
    int done = r->completed;
    if (!done) {
        r->resumed = 1;
        MHD_suspend_connection(r->conn);
    }
    pthread_mutex_unlock(&r->mu);
    if (!done) return MHD_YES;
    srv_handler fn = r->on_resume;
    r->on_resume = NULL;
    fn(r);
    return after_handler(r);
}

static enum MHD_Result on_access(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version,
                                 const char *upload_data, size_t *upload_data_size,
                                 void **con_cls) {
    (void)version;
    srv_http *h = cls;
    srv_req *r = *con_cls;
    if (!r) {
        r = req_new(h, conn, url, method);
        if (!r) return MHD_NO;
        *con_cls = r;
        if (r->reply) return queue_reply(r);
        return MHD_YES;
    }
    if (r->queued) {
        /* Answered already (an early 4xx/503), yet called again: libmicrohttpd accepts but drops
         * a response queued while MHD_stop_daemon runs, then goes on reading the body. Nothing
         * of the request may run (its handler was refused, or its route is NULL): swallow the
         * body and close the connection. */
        if (*upload_data_size) {
            *upload_data_size = 0;
            return MHD_YES;
        }
        return MHD_NO;
    }
    if (r->resumed == 2) { /* woken by srv_req_resume */
        r->resumed = 0;
        srv_handler fn = r->on_resume;
        r->on_resume = NULL;
        fn(r);
        return after_handler(r);
    }
    if (*upload_data_size) {
        srv_guard_body_bytes(r->gconn, *upload_data_size);
        if (r->upload_fd >= 0) upload_feed(r, upload_data, *upload_data_size);
        else body_append(r, upload_data, *upload_data_size);
        *upload_data_size = 0;
        return MHD_YES;
    }
    srv_guard_handling(r->gconn); /* the body is complete: no deadline while it is handled */
    const int streamed = r->upload_fd >= 0;
    if (streamed) upload_finish(r);
    if (r->body_too_large) {
        const char *setting = "max_body_bytes";
        long long limit = streamed ? upload_limit(r, &setting) : r->cfg->max_body_bytes;
        srv_reply_error(r, 413, "body_too_large", "the body is over the limit of %lld bytes (%s)",
                        limit, setting);
        return queue_reply(r);
    }
    if (r->upload_errno) {
        int full = r->upload_errno == ENOSPC || r->upload_errno == EDQUOT;
        srv_reply_error(r, full ? 507 : 500, "upload_failed", "storing the upload failed: %s",
                        strerror(r->upload_errno));
        return queue_reply(r);
    }
    if (r->form_dup[0]) {
        srv_reply_error(r, 400, "duplicate_field",
                        "the multipart field '%s' is given more than once", r->form_dup);
        return queue_reply(r);
    }
    if (r->upload_bad) {
        srv_reply_error(r, 400, "bad_multipart",
                        "damaged multipart/form-data body, no file part, or text fields over "
                        "%d bytes", MAX_FORM_BYTES);
        return queue_reply(r);
    }
    if (atomic_load(&h->stopping)) { /* the body came in after srv_http_stop began */
        srv_reply_error(r, 503, "shutting_down", "this dynd is shutting down; retry on another replica");
        return queue_reply(r);
    }
    if (!streamed && srv_encoding_decode(r)) return queue_reply(r); /* gzip / deflate bodies */
    r->route->handler(r);
    return after_handler(r);
}

static void on_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
    (void)conn;
    srv_http *h = cls;
    srv_req *r = *con_cls;
    if (!r) return;
    *con_cls = NULL;
    double dt = dyn_now() - r->t_start;
    int code = r->status ? r->status : 499; /* 499: the client went away first */
    const char *endpoint = r->route ? r->route->endpoint : "unmatched";
    srv_metrics_request(h->ctx->metrics, endpoint, r->model_label, code, dt);
    srv_log_level lvl = code >= 500 ? SRV_LOG_WARN : SRV_LOG_INFO;
    if (srv_log_enabled(lvl)) {
        json_t *f = json_pack("{s:s, s:s, s:s, s:i, s:f, s:s}", "request_id", r->request_id,
                              "method", r->method, "path", r->path ? r->path : "", "status", code,
                              "duration_ms", dt * 1e3, "endpoint", endpoint);
        if (f && r->model_label[0]) json_object_set_new(f, "model", json_string(r->model_label));
        if (f && r->error_code) json_object_set_new(f, "error_code", json_string(r->error_code));
        if (f && toe != MHD_REQUEST_TERMINATED_COMPLETED_OK)
            json_object_set_new(f, "terminated", json_integer(toe));
        srv_log(lvl, "request", f);
    }
    srv_guard_reply_done(r->gconn); /* the next request's header deadline starts now */
    if (r->cleanup) r->cleanup(r);
    upload_free(r);
    for (int i = 0; i < r->nparams; i++) free(r->params[i]);
    for (int i = 0; i < r->nextra; i++) free(r->extra[i][0]), free(r->extra[i][1]);
    free(r->body);
    free(r->reply);
    free(r->path);
    srv_ctx_config_release(r->cfg);
    /* A worker's srv_req_resume may still be inside r->mu (it resumed us, then unlocks): wait
     * for it before the mutex goes. It touches nothing of r after that unlock. */
    pthread_mutex_lock(&r->mu);
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_destroy(&r->mu);
    free(r);
    atomic_fetch_sub(&h->ctx->inflight, 1);
}

/* Keep the raw URL: the router splits on '/' first and decodes each segment after, so
 * "..%2F.." cannot become a path. Query values are decoded by srv_req_query_arg. */
static size_t no_unescape(void *cls, struct MHD_Connection *c, char *s) {
    (void)cls, (void)c;
    return strlen(s);
}

static void on_mhd_log(void *cls, const char *fmt, va_list ap) {
    (void)cls;
    char msg[512];
    vsnprintf(msg, sizeof msg, fmt, ap);
    size_t n = strlen(msg);
    while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r')) msg[--n] = 0;
    srv_log(SRV_LOG_DEBUG, "libmicrohttpd", json_pack("{s:s}", "detail", msg));
}

static socklen_t addr_len(const struct sockaddr *a) {
    return !a ? 0 : a->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

static void on_connection(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
    srv_http *h = cls;
    if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
        const union MHD_ConnectionInfo *fi = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CONNECTION_FD);
        const union MHD_ConnectionInfo *ai = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
        const struct sockaddr *sa = ai ? ai->client_addr : NULL;
        *socket_context = fi ? srv_guard_open(h->guard, fi->connect_fd, sa, addr_len(sa)) : NULL;
        return;
    }
    srv_guard_close(h->guard, *socket_context);
    *socket_context = NULL;
}

static enum MHD_Result on_accept(void *cls, const struct sockaddr *addr, socklen_t len) {
    srv_http *h = cls;
    return srv_guard_admit(h->guard, addr, len) ? MHD_YES : MHD_NO;
}

srv_http *srv_http_start(srv_ctx *ctx, const srv_config *cfg, dyn_err *err) {
    srv_http *h = calloc(1, sizeof *h);
    if (!h) return dyn_err_set(err, DYN_ENOMEM, "http: out of memory"), NULL;
    h->ctx = ctx;
    h->quiesced_fd = -1;
    const srv_guard_limits lim = {.header_timeout_s = cfg->request_header_timeout_s,
                                  .min_body_rate = cfg->min_body_rate,
                                  .max_per_ip = cfg->max_connections_per_ip};
    h->guard = srv_guard_new(&lim, ctx->metrics);
    if (!h->guard) {
        free(h);
        return dyn_err_set(err, DYN_ENOMEM, "http: cannot start the connection guard"), NULL;
    }
    struct sockaddr_storage ss;
    memset(&ss, 0, sizeof ss);
    /* MHD_USE_ITC: srv_http_quiesce wakes the pool threads to stop polling the listen socket */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ITC |
                     MHD_USE_ERROR_LOG | MHD_USE_TURBO |
                     (cfg->http_poller == SRV_HTTP_EPOLL ? MHD_USE_EPOLL_LINUX_ONLY : MHD_USE_POLL);
    struct sockaddr_in *a4 = (struct sockaddr_in *)&ss;
    struct sockaddr_in6 *a6 = (struct sockaddr_in6 *)&ss;
    if (inet_pton(AF_INET, cfg->listen_address, &a4->sin_addr) == 1) {
        a4->sin_family = AF_INET;
        a4->sin_port = htons((uint16_t)cfg->port);
    } else if (inet_pton(AF_INET6, cfg->listen_address, &a6->sin6_addr) == 1) {
        a6->sin6_family = AF_INET6;
        a6->sin6_port = htons((uint16_t)cfg->port);
        flags |= MHD_USE_IPv6;
    } else {
        srv_guard_free(h->guard);
        free(h);
        return dyn_err_set(err, DYN_EINVAL,
                           "listen_address '%s' is not an IPv4 or IPv6 address literal",
                           cfg->listen_address), NULL;
    }
    h->d = MHD_start_daemon(
        flags, (uint16_t)cfg->port, on_accept, h, on_access, h, MHD_OPTION_SOCK_ADDR, &ss,
        MHD_OPTION_THREAD_POOL_SIZE, (unsigned)srv_config_http_threads(cfg), MHD_OPTION_CONNECTION_LIMIT,
        (unsigned)cfg->max_connections, MHD_OPTION_CONNECTION_TIMEOUT,
        (unsigned)cfg->connection_timeout_s, MHD_OPTION_NOTIFY_COMPLETED, on_completed, h,
        MHD_OPTION_NOTIFY_CONNECTION, on_connection, h,
        MHD_OPTION_UNESCAPE_CALLBACK, no_unescape, NULL, MHD_OPTION_EXTERNAL_LOGGER, on_mhd_log,
        NULL, MHD_OPTION_LISTEN_BACKLOG_SIZE, 1024u, MHD_OPTION_END);
    if (!h->d) {
        srv_guard_free(h->guard);
        free(h);
        return dyn_err_set(err, DYN_EIO,
                           "cannot listen on %s:%d (address in use, or not an address of this "
                           "machine?)", cfg->listen_address, cfg->port), NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(h->d, MHD_DAEMON_INFO_BIND_PORT);
    h->port = info ? info->port : cfg->port;
    return h;
}

int srv_http_port(const srv_http *h) { return h->port; }

static int drop_new_handshakes(int fd);
static int take_backlog(srv_http *h, int fd);

void srv_http_quiesce(srv_http *h) {
    if (!h || h->quiesced_fd >= 0) return;
    MHD_socket fd = MHD_quiesce_daemon(h->d);
    if (fd == MHD_INVALID_SOCKET) {
        srv_log(SRV_LOG_WARN, "cannot stop accepting connections; the drain goes on without it", NULL);
        return;
    }
    h->quiesced_fd = fd;
    /* The pool threads no longer accept. Closing the socket now would reset the connections the
     * kernel completed and nobody accepted yet (the backlog), and one completing between our last
     * accept and the close: first stop new handshakes (a filter drops bare SYNs: those clients
     * retry in a second and are refused then), let the ones under way finish, take in the whole
     * backlog, and only then shut the socket down. It stays open (its number is not reused under
     * a pool thread still polling it) until srv_http_stop. */
    int filtered = drop_new_handshakes(fd) == 0;
    int taken = take_backlog(h, fd);
    if (filtered) {
        usleep(50000); /* handshakes whose SYN-ACK is out: one round trip on a LAN */
        taken += take_backlog(h, fd);
    }
    shutdown(fd, SHUT_RDWR);
    srv_log(SRV_LOG_INFO, "stopped accepting connections",
            json_pack("{s:i, s:b}", "taken_from_backlog", taken, "syn_filter", filtered));
}

/* A socket filter on the listening socket: TCP segments with SYN and not ACK (new handshakes)
 * are dropped; everything else passes. The filter sees the segment from its TCP header on. */
static int drop_new_handshakes(int fd) {
    static struct sock_filter code[] = {
        BPF_STMT(BPF_LD | BPF_B | BPF_ABS, 13),               /* A = TCP flags */
        BPF_STMT(BPF_ALU | BPF_AND | BPF_K, 0x12),            /* SYN | ACK */
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 0x02, 0, 1),      /* SYN alone? */
        BPF_STMT(BPF_RET | BPF_K, 0),                         /* drop */
        BPF_STMT(BPF_RET | BPF_K, 0xffffffffu),               /* keep */
    };
    struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
    if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_FILTER, &prog, sizeof prog) != 0) {
        srv_log(SRV_LOG_WARN, "drain: cannot filter new connections; one arriving as the socket "
                              "closes may be reset", json_pack("{s:s}", "error", strerror(errno)));
        return -1;
    }
    return 0;
}

/* Accepts every connection waiting in the listen backlog and hands it to libmicrohttpd. */
static int take_backlog(srv_http *h, int fd) {
    int taken = 0;
    for (;;) {
        struct sockaddr_storage sa;
        socklen_t len = sizeof sa;
        int c = accept4(fd, (struct sockaddr *)&sa, &len, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR || errno == ECONNABORTED) continue;
            break; /* EAGAIN: the backlog is empty */
        }
        if (MHD_add_connection(h->d, c, (struct sockaddr *)&sa, len) != MHD_YES) {
            close(c); /* libmicrohttpd refused it (connection limit): the client sees a reset */
            srv_log(SRV_LOG_WARN, "drain: a connection from the backlog was refused", NULL);
            continue;
        }
        taken++;
    }
    return taken;
}

int srv_http_unserved(const srv_http *h) { return h ? srv_guard_unserved(h->guard) : 0; }

void srv_http_stop(srv_http *h) {
    if (!h) return;
    /* Requests still arrive on open connections after the drain (a balancer keeps sending until
     * it notices): answer them 503 from now on, and give the ones already past that point up to
     * 2 s to finish, since libmicrohttpd aborts when stopped with a suspended connection. */
    atomic_store(&h->stopping, 1);
    for (int i = 0; i < 200 && atomic_load(&h->ctx->inflight) > 0; i++) usleep(10000);
    MHD_stop_daemon(h->d);
    if (h->quiesced_fd >= 0) close(h->quiesced_fd);
    srv_guard_free(h->guard);
    free(h);
}
