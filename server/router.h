/* router.h — the route matcher. The table (method, pattern, handler, auth, flags) is the API's
 * (api/routes.c), handed over once at start with srv_router_set.
 *
 * Patterns are '/'-separated segments; "{name}" captures one segment (percent-decoded after the
 * split, so an encoded "%2F" can never create a segment). Matching is exact, segment by segment;
 * a path that matches some pattern under another method answers 405 with Allow.
 */
#ifndef SRV_ROUTER_H
#define SRV_ROUTER_H

#include "server/http.h"

typedef enum {
    SRV_AUTH_NONE,  /* open (health, metrics) */
    SRV_AUTH_INFER, /* token required when auth_inference = true */
    SRV_AUTH_ADMIN, /* token required whenever tokens are configured (repository, jobs) */
    SRV_AUTH_COUNT
} srv_auth;

enum {
    SRV_ROUTE_INFERENCE = 1 << 0, /* refused with 503 once draining */
    SRV_ROUTE_UPLOAD = 1 << 1,    /* raw / multipart bodies are streamed to a file (http.h) */
    SRV_ROUTE_ARCHIVE = 1 << 2,   /* with UPLOAD: any body is streamed (the file part of a
                                     multipart one), up to dataset_max_upload_bytes */
    SRV_ROUTE_WRITE = 1 << 3,     /* creates jobs or changes the repository / data sets: with
                                     no auth_tokens refused (403) unless
                                     allow_unauthenticated_writes */
    SRV_ROUTE_JOB = 1 << 4,       /* starts a job: refused (503) by a replica with role = serve */
};

struct srv_route {
    const char *method;
    const char *pattern;
    const char *endpoint; /* metrics label */
    srv_handler handler;
    int auth;  /* srv_auth */
    int flags; /* SRV_ROUTE_* */
};

/* Matches method + path. On a match returns the route and fills params (malloc'd decoded
 * strings, *nparams of them; the caller frees each). Otherwise NULL and *status = 404 or 405
 * (allow then lists the methods, e.g. "GET, POST"). */
const srv_route *srv_router_match(const char *method, const char *path, char **params,
                                  int *nparams, int *status, char *allow, size_t allow_n);

/* Sets the table the matcher uses (borrowed: it must outlive every request; n entries). Call
 * once, before the HTTP front starts. */
void srv_router_set(const srv_route *routes, int n);

/* The table (for docs and tests); NULL (and *n = 0) before srv_router_set. */
const srv_route *srv_router_routes(int *n);

/* The name of capture k of route rt ("name", "version"), NULL past the last. */
const char *srv_route_param_name(const srv_route *rt, int k, char *buf, size_t n);

/* Percent-decodes s[0..n) into a new malloc'd string (the caller frees it); NULL on a bad
 * escape, an encoded NUL, or ENOMEM. */
char *srv_pct_decode(const char *s, size_t n);

#endif
