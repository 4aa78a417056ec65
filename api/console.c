/* console.c — GET / and GET /console/{file}: the web console's static files, embedded in the
 * binary (api/console.h; no file is read at run time and nothing is fetched from elsewhere).
 *
 * Every reply carries an ETag (If-None-Match with it, or "*", answers 304 with no body),
 * Cache-Control: no-cache (the browser keeps its copy but asks again; the ETag makes that a
 * 304), a Content-Security-Policy that allows scripts, styles and connections to this origin
 * only (no inline script or style element), and X-Content-Type-Options: nosniff. Loading the
 * console needs no token: the API calls it makes carry the one the user typed in. An unknown
 * file is 404 not_found, the API's error shape.
 */
#include <string.h>

#include "api/api.h"
#include "api/console.h"

/* img-src data: blob:: the preprocessed input arrives as a data: URL and the picked image is
 * previewed from a blob: URL. */
#define CONSOLE_CSP                                                                        \
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; " \
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

const api_console_file *api_console_find(const char *name) {
    for (int i = 0; i < API_CONSOLE_NFILES; i++)
        if (!strcmp(API_CONSOLE_FILES[i].name, name)) return &API_CONSOLE_FILES[i];
    return NULL;
}

/* 1 when the If-None-Match header value names etag (or is "*"): a comma-separated list whose
 * entries are compared weakly (a W/ prefix on either side is ignored). */
static int etag_matches(const char *inm, const char *etag) {
    const char *bare = strncmp(etag, "W/", 2) ? etag : etag + 2;
    size_t bl = strlen(bare);
    const char *p = inm;
    while (*p) {
        while (*p == ' ' || *p == ',' || *p == '\t') p++;
        if (!*p) break;
        const char *e = p;
        while (*e && *e != ',') e++;
        const char *end = e;
        while (end > p && (end[-1] == ' ' || end[-1] == '\t')) end--;
        const char *s = p;
        if (end - s == 1 && *s == '*') return 1;
        if (end - s > 2 && !strncmp(s, "W/", 2)) s += 2;
        if ((size_t)(end - s) == bl && !memcmp(s, bare, bl)) return 1;
        p = e;
    }
    return 0;
}

static void serve(srv_req *r, const char *name) {
    const api_console_file *f = api_console_find(name);
    if (!f) {
        srv_reply_error(r, 404, "not_found",
                        "the console has no file '%s' (it serves / and /console/<file> for "
                        "the files it is built with)", name);
        return;
    }
    srv_req_header_add(r, "ETag", f->etag);
    srv_req_header_add(r, "Cache-Control", "no-cache");
    srv_req_header_add(r, "Content-Security-Policy", CONSOLE_CSP);
    srv_req_header_add(r, "X-Content-Type-Options", "nosniff");
    const char *inm = srv_req_header(r, "If-None-Match");
    int not_modified = inm && etag_matches(inm, f->etag);
    size_t n = not_modified ? 0 : f->len;
    char *body = malloc(n ? n : 1);
    if (!body) {
        srv_reply_error(r, 500, "out_of_memory", "out of memory copying the console file");
        return;
    }
    if (n) memcpy(body, f->data, n);
    srv_req_reply(r, not_modified ? 304 : 200, f->type, body, n);
}

void api_console_index(srv_req *r) {
    serve(r, "index.html");
}

void api_console_file_get(srv_req *r) {
    const char *name = srv_req_param(r, "file");
    serve(r, name ? name : "");
}
