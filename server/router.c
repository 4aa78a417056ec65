/* router.c — the route table and its matcher. See router.h. */
#include "server/router.h"

#include <string.h>


/* The table the API handed over (srv_router_set); NULL before. */
static const srv_route *g_routes;
static int g_nroutes;

void srv_router_set(const srv_route *routes, int n) {
    g_routes = routes;
    g_nroutes = n;
}

const srv_route *srv_router_routes(int *n) {
    *n = g_nroutes;
    return g_routes;
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
    for (int i = 0; i < g_nroutes; i++) {
        const srv_route *rt = &g_routes[i];
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
