/* fuzz_router.c — server/router.c: route matching with percent-decoded captures, and the query
 * string's decoding (srv_pct_decode on each key and value, as http.c does).
 * Input: method, a space, the request target (path[?query]). */
#include "api/api.h"
#include "fuzz.h"
#include "server/router.h"

static void check_decoded(const char *raw, size_t n) {
    char *d = srv_pct_decode(raw, n);
    if (d) {
        DYN_ASSERT(strlen(d) <= n); /* decoding never grows */
        free(d);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int routes_set;
    if (!routes_set) { /* the daemon's table, handed over as api/main.c does */
        int n;
        const srv_route *t = api_routes(&n);
        srv_router_set(t, n);
        routes_set = 1;
    }
    char *in = fuzz_cstr(data, size);
    if (!in) return 0;
    char *sp = strchr(in, ' ');
    const char *method = sp ? in : "GET";
    char *target = sp ? sp + 1 : in;
    if (sp) *sp = 0;
    char *q = strchr(target, '?');
    if (q) *q++ = 0;
    char *params[SRV_MAX_PARAMS + 1] = {0};
    int np = 0, status = 0;
    char allow[128];
    const srv_route *rt = srv_router_match(method, target, params, &np, &status, allow, sizeof allow);
    if (rt) {
        DYN_ASSERT(status == 200 && np >= 0 && np <= SRV_MAX_PARAMS);
        for (int i = 0; i < np; i++) {
            DYN_ASSERT(params[i] != NULL);
            free(params[i]);
        }
    } else {
        DYN_ASSERT(status == 404 || status == 405);
    }
    fuzz_note("router: %s %s -> %d (%d captures)", method, target, status, np);
    /* query: key=value pairs split on '&' (libmicrohttpd's split), each side decoded */
    for (char *p = q; p && *p;) {
        char *amp = strchr(p, '&');
        size_t len = amp ? (size_t)(amp - p) : strlen(p);
        char *eq = memchr(p, '=', len);
        check_decoded(p, eq ? (size_t)(eq - p) : len);
        if (eq) check_decoded(eq + 1, len - (size_t)(eq - p) - 1);
        p = amp ? amp + 1 : NULL;
    }
    free(in);
    return 0;
}
