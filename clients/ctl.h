/* ctl.h — what the parts of dynctl share: exit codes, the connection to dynd, HTTP calls with
 * bodies from memory, from a file (streamed) or multipart, and output helpers.
 *
 * dynctl.c holds main, the global flags and the small subcommands; infer.c classify and infer;
 * jobs.c conversions, fine-tunes and everything about jobs (the progress bar); http.c libcurl.
 * Every subcommand is `int dynctl_x(ctl *c, int argc, char **argv)` (argv[0] is its name, the
 * global flags already taken out) and returns a CTL_* exit code; it prints its own messages
 * (stderr) and results (stdout).
 */
#ifndef CLIENTS_CTL_H
#define CLIENTS_CTL_H

#include <curl/curl.h>
#include <jansson.h>
#include <stddef.h>

/* Exit codes (documented in `dynctl --help` and clients/README.md; scripts rely on them). */
enum {
    CTL_OK = 0,
    CTL_LOCAL = 1,    /* a local failure: a file that cannot be read, out of memory */
    CTL_USAGE = 2,    /* bad command line (nothing was sent) */
    CTL_CONN = 3,     /* the server cannot be reached (refused, no such host, timeout, reset) */
    CTL_NOTFOUND = 4, /* the server answered 404 (model, job, data set, route) */
    CTL_SERVER = 5,   /* the server answered another error (4xx / 5xx, {"error", "code"}) */
    CTL_JOB = 6,      /* a waited-for job ended failed, cancelled or interrupted */
    CTL_AUTH = 7,     /* the server answered 401 / 403 (missing or wrong token) */
};

typedef struct ctl {
    char url[512];     /* base URL without a trailing slash */
    const char *token; /* bearer token or NULL */
    int json;          /* --json: machine output on stdout */
    CURL *curl;        /* one handle for the whole run (keeps the connection alive) */
} ctl;

/* A request body: nothing (all fields zero), bytes in memory, a file streamed by libcurl's read
 * callback (never read whole), or a multipart form (owned by the caller). */
typedef struct ctl_body {
    const char *data;
    size_t len;
    const char *file;
    const char *content_type; /* for data / file */
    curl_mime *mime;
} ctl_body;

/* A reply: status, the body (malloc'd, NUL-terminated) and, when it is JSON, its value. */
typedef struct ctl_resp {
    long status;
    char *body;
    size_t len;
    json_t *json;
} ctl_resp;

/* Sends `method` to c->url + path (path starts with '/'; the caller escapes names). On any HTTP
 * answer returns CTL_OK with *r filled (free with ctl_resp_free); CTL_CONN when the server
 * cannot be reached, CTL_LOCAL when a body file cannot be read (message printed, *r empty). */
int ctl_http(ctl *c, const char *method, const char *path, const ctl_body *b, ctl_resp *r);

void ctl_resp_free(ctl_resp *r);

/* The exit code of a reply: CTL_OK for 2xx; otherwise prints "dynctl CMD: <error> (<code>, HTTP
 * <status>)" to stderr (and with --json the error object to stdout) and returns CTL_NOTFOUND,
 * CTL_AUTH or CTL_SERVER. */
int ctl_reply_status(ctl *c, const char *cmd, const ctl_resp *r);

/* ctl_http + ctl_reply_status; on CTL_OK *out (when not NULL) is the reply's JSON (new
 * reference; a non-JSON 2xx reply is CTL_SERVER). */
int ctl_call(ctl *c, const char *cmd, const char *method, const char *path, const ctl_body *b,
             json_t **out);

/* Writes path + escaped name + suffix into buf ("/v1/jobs/" "x y" "/resume"). 0, or -1 when it
 * does not fit. */
int ctl_path(char *buf, size_t n, const char *prefix, const char *name, const char *suffix);

/* Prints j to stdout as indented JSON and a newline. */
void ctl_print_json(const json_t *j);

/* Prints "dynctl CMD: message (dynctl CMD --help)" to stderr; returns CTL_USAGE. */
int ctl_usage(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Takes the subcommand flags `names` (NULL-terminated; "--wait" style, a trailing '=' meaning
 * "takes a value") out of argv in place, storing each value in vals[i] (a flag without value:
 * "1"); stops at "--". Returns the new argc, or -1 with a usage message when a value is missing. */
int ctl_take_flags(const char *cmd, int argc, char **argv, const char *const *names,
                   const char **vals);

/* Subcommands. */
int dynctl_classify(ctl *c, int argc, char **argv);
int dynctl_infer(ctl *c, int argc, char **argv);
int dynctl_convert(ctl *c, int argc, char **argv);
int dynctl_finetune(ctl *c, int argc, char **argv);
int dynctl_jobs(ctl *c, int argc, char **argv);
int dynctl_cancel(ctl *c, int argc, char **argv);
int dynctl_resume(ctl *c, int argc, char **argv);

#endif
