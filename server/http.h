/* http.h — the libmicrohttpd front: connections, limits, request ids, bodies, replies, and the
 * asynchronous path (suspend / resume) that lets a request wait for a batch worker without
 * holding a connection thread.
 *
 * Request life (all on a libmicrohttpd pool thread unless said otherwise):
 *   1. headers in: a srv_req is made (request id from X-Request-Id when it is a safe token, else
 *      generated; a config snapshot taken), the route matched (404 / 405), auth checked (401 /
 *      403), the draining state (503 for inference while shutting down), Content-Length against
 *      max_body_bytes (413 before the body is read).
 *   2. body in: appended to r->body up to max_body_bytes (413 after, the rest discarded).
 *      Upload routes (SRV_ROUTE_UPLOAD) with an application/octet-stream or multipart/form-data
 *      body stream it instead to a new file in <state_dir>/uploads (r->upload_path), up to
 *      max_upload_bytes: a raw body whole; of a multipart body the file part (named "file" or
 *      "model", else the first part with a filename) while the other, small, fields are
 *      collected in r->form. The file is fsync'd when the body is complete; the handler may take
 *      it (rename it away and free + NULL r->upload_path), else it is removed at completion.
 *      Archive routes (SRV_ROUTE_ARCHIVE) stream any body that is not multipart, whatever its
 *      media type, up to dataset_max_upload_bytes. A buffered body with Content-Encoding gzip
 *      or deflate is decoded before the handler (server/encoding.h); replies are gzip'd for
 *      clients that accept it.
 *   3. handler: must end with exactly one reply (srv_reply_* below, srv_req_reply) or with
 *      srv_req_suspend(r, on_resume); in the latter case another thread later calls
 *      srv_req_resume(r) and on_resume(r) runs on a pool thread and replies.
 *   4. completed: metrics, one access log line, r->cleanup(r), free.
 * The reply always carries X-Request-Id, and X-Dynd-Replica when replica_id is set.
 */
#ifndef SRV_HTTP_H
#define SRV_HTTP_H

#include <pthread.h>
#include <stddef.h>

#include "server/server.h"

#define SRV_MAX_PARAMS 4
#define SRV_MAX_EXTRA_HEADERS 4

typedef struct srv_route srv_route;
typedef struct srv_req srv_req;
typedef void (*srv_handler)(srv_req *r);

struct srv_req {
    srv_ctx *srv;
    struct MHD_Connection *conn;
    const srv_config *cfg; /* snapshot for this request (released at completion) */
    char method[16];
    char *path;            /* raw path, without the query */
    const srv_route *route;
    int nparams;
    char *params[SRV_MAX_PARAMS]; /* percent-decoded captures, in pattern order */
    char request_id[72];
    double t_start, deadline; /* dyn_now() seconds */
    /* body */
    char *body;
    size_t body_len, body_cap;
    int body_too_large;
    /* streamed upload (SRV_ROUTE_UPLOAD routes; see step 2): upload_fd >= 0 while streaming */
    int upload_fd;
    char *upload_path;     /* owned; unlinked at completion unless the handler took it */
    long long upload_len;  /* bytes of the file */
    int upload_errno;      /* a write to the file failed (ENOSPC, ...) */
    int upload_bad;        /* the multipart envelope could not be parsed */
    int upload_has_file;   /* a multipart body: a file part was found */
    int upload_in_file;    /* multipart: the part being read is the file */
    char upload_filename[128]; /* multipart: the file part's filename ("" = none) */
    struct MHD_PostProcessor *post;
    json_t *form;          /* multipart text fields: {"name": "value"} (owned) */
    char form_dup[64];     /* multipart: a text field given twice (its name), refused */
    char form_last[64];    /* multipart: the text field of the last call ("" after a file) */
    size_t form_bytes;     /* multipart: bytes of the text fields' names and values so far */
    /* reply */
    int status;
    char *reply;
    size_t reply_len;
    const char *reply_type;
    const char *error_code; /* static string, for the log */
    int nextra;
    char *extra[SRV_MAX_EXTRA_HEADERS][2];
    char model_label[66]; /* served model name for metrics ("" = none) */
    int queued; /* a reply went to libmicrohttpd: nothing of the request runs any more */
    struct srv_conn *gconn; /* the connection's guard state (server/guard.h); may be NULL */
    /* async */
    pthread_mutex_t mu;
    int suspended, completed, resumed;
    srv_handler on_resume;
    void *user; /* handler state, freed by cleanup */
    void (*cleanup)(srv_req *r);
};

/* Value of the route capture `name` ("name", "version"), NULL when the route has none. */
const char *srv_req_param(const srv_req *r, const char *name);
/* Request header (case-insensitive), NULL when absent. Valid during the request. */
const char *srv_req_header(const srv_req *r, const char *name);
/* Query argument `key`, percent-decoded into buf (n bytes, NUL included; "?key" alone is
 * present and empty). SRV_QUERY_OK with buf set; SRV_QUERY_ABSENT; SRV_QUERY_INVALID when the
 * value does not decode (bad or %00 escape) or does not fit in buf; SRV_QUERY_REPEATED when the
 * key is given more than once: the caller replies 400 naming the parameter (api_query does). */
enum { SRV_QUERY_REPEATED = -2, SRV_QUERY_INVALID = -1, SRV_QUERY_ABSENT = 0, SRV_QUERY_OK = 1 };
int srv_req_query_arg(const srv_req *r, const char *key, char *buf, size_t n);

/* Every query argument, percent-decoded, as {"key": "value"} (new reference). NULL when an
 * argument does not decode (or is not UTF-8): *why = SRV_QUERY_INVALID and its raw key, cut to
 * badn bytes, is in bad; when a key is given twice (after decoding): *why = SRV_QUERY_REPEATED
 * and the decoded key is in bad; NULL with bad "" when out of memory. */
json_t *srv_req_query_json(const srv_req *r, char *bad, size_t badn, int *why);

/* Sets the reply: body (malloc'd; ownership moves to r), its length and media type (static). */
void srv_req_reply(srv_req *r, int status, const char *type, char *body, size_t len);

/* Replies with `body` as JSON (the reference is stolen). server/reply.c */
void srv_reply_json(srv_req *r, int status, json_t *body);

/* Replies {"error": message, "code": code} (code: a static string), counted in
 * dynd_errors_total{code}. */
void srv_reply_error(srv_req *r, int status, const char *code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* Same, with extra fields merged into the object (stolen; may be NULL). */
void srv_reply_error_with(srv_req *r, int status, const char *code, json_t *extra,
                          const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Media type of the request without parameters, lower-case, into buf ("" when absent). */
const char *srv_media_type(const srv_req *r, char *buf, size_t n);
/* Adds a reply header (copied). At most SRV_MAX_EXTRA_HEADERS. */
void srv_req_header_add(srv_req *r, const char *name, const char *value);

/* From a handler: the reply will come later. on_resume runs on a pool thread after
 * srv_req_resume and must reply. */
void srv_req_suspend(srv_req *r, srv_handler on_resume);
/* From any thread, once per suspended request (also when called before the handler returned). */
void srv_req_resume(srv_req *r);

typedef struct srv_http srv_http;

/* Starts listening as cfg says. NULL with err (address in use, bad address, ...). */
srv_http *srv_http_start(srv_ctx *ctx, const srv_config *cfg, dyn_err *err);
/* The port actually bound (useful with port = 0). */
int srv_http_port(const srv_http *h);
/* Stops accepting, for the drain: the connections the kernel already completed (the listen
 * backlog) are taken in and served; later ones are refused (the listening socket is shut down,
 * so a client or balancer sees "connection refused" and goes elsewhere). Replies carry
 * "Connection: close" from now on (the server's draining flag). Call once, from any thread. */
void srv_http_quiesce(srv_http *h);
/* Connections open but with no request begun yet (taken from the backlog, or a client slow to
 * send its first request): the drain waits for them too, within its grace period. */
int srv_http_unserved(const srv_http *h);
/* Stops: from now on requests get 503 (code shutting_down) without reaching a handler; waits up
 * to 2 s for the requests in flight, then closes every connection. Frees h. */
void srv_http_stop(srv_http *h);

#endif
