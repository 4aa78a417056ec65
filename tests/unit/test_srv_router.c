/* test_srv_router.c — server/router: the route table and its matcher. Every route is reached
 * by a path built from its own pattern (so no route shadows another); literal paths, {name}
 * and /versions/{v} captures, percent-decoding of captures; 405 with Allow when the path
 * exists under another method vs 404 for unknown paths; trailing and empty segments;
 * traversal names (.., %2e%2e, %2F) reach the handler decoded, where the repository's name
 * check refuses them; very long paths and too many segments. */
#include <stdlib.h>
#include <string.h>

#include "api/api.h"
#include "server/repository.h"
#include "server/router.h"
#include "testutil.h"

typedef struct match {
    const srv_route *rt;
    int status, nparams;
    char *params[SRV_MAX_PARAMS];
    char allow[64];
} match;

static match route(const char *method, const char *path) {
    match m;
    memset(&m, 0, sizeof m);
    m.status = -1;
    memset(m.allow, 'Z', sizeof m.allow); /* must be reset by the matcher */
    m.rt = srv_router_match(method, path, m.params, &m.nparams, &m.status, m.allow,
                            sizeof m.allow);
    ck_assert_int_ge(m.nparams, 0);
    ck_assert_int_le(m.nparams, SRV_MAX_PARAMS);
    ck_assert_ptr_nonnull(memchr(m.allow, 0, sizeof m.allow));
    if (m.rt) {
        ck_assert_int_eq(m.status, 200);
    } else {
        ck_assert_int_eq(m.nparams, 0);
        ck_assert(m.status == 404 || m.status == 405);
        if (m.status == 404) ck_assert_str_eq(m.allow, "");
    }
    return m;
}

static void match_free(match *m) {
    for (int i = 0; i < m->nparams; i++) free(m->params[i]);
}

/* Asserts method + path reach the route with this endpoint and pattern, with these captures
 * (NULL-terminated). */
static void expect_route(const char *method, const char *path, const char *endpoint,
                         const char *pattern, const char *const *params) {
    match m = route(method, path);
    ck_assert_msg(m.rt, "%s %s: %d", method, path, m.status);
    ck_assert_str_eq(m.rt->method, method);
    ck_assert_str_eq(m.rt->endpoint, endpoint);
    ck_assert_str_eq(m.rt->pattern, pattern);
    int n = 0;
    while (params && params[n]) n++;
    ck_assert_int_eq(m.nparams, n);
    for (int i = 0; i < n; i++) ck_assert_str_eq(m.params[i], params[i]);
    match_free(&m);
}

static void expect_status(const char *method, const char *path, int status, const char *allow) {
    match m = route(method, path);
    ck_assert_msg(!m.rt, "%s %s reached %s", method, path, m.rt ? m.rt->pattern : "");
    ck_assert_int_eq(m.status, status);
    if (allow) ck_assert_str_eq(m.allow, allow);
}

/* ---- the table ---- */

START_TEST(table_well_formed) {
    int n = 0;
    const srv_route *rt = srv_router_routes(&n);
    ck_assert_int_gt(n, 20);
    for (int i = 0; i < n; i++) {
        ck_assert_ptr_nonnull(rt[i].handler);
        ck_assert_ptr_nonnull(rt[i].endpoint);
        ck_assert_int_eq(rt[i].pattern[0], '/');
        ck_assert_int_lt(rt[i].auth, SRV_AUTH_COUNT);
        ck_assert(!strcmp(rt[i].method, "GET") || !strcmp(rt[i].method, "POST") ||
                  !strcmp(rt[i].method, "PUT") || !strcmp(rt[i].method, "PATCH") ||
                  !strcmp(rt[i].method, "DELETE"));
        for (int j = 0; j < i; j++)
            ck_assert_msg(strcmp(rt[i].method, rt[j].method) || strcmp(rt[i].pattern, rt[j].pattern),
                          "%s %s twice", rt[i].method, rt[i].pattern);
        /* Captures: named, whole segments, at most SRV_MAX_PARAMS. */
        char name[32];
        int k = 0;
        while (srv_route_param_name(&rt[i], k, name, sizeof name)) {
            char brace[40];
            snprintf(brace, sizeof brace, "/{%s}", name);
            ck_assert_msg(strstr(rt[i].pattern, brace), "%s: capture %d '%s'", rt[i].pattern, k, name);
            k++;
        }
        ck_assert_int_le(k, SRV_MAX_PARAMS);
        const char *p = rt[i].pattern;
        int braces = 0;
        for (; *p; p++) braces += *p == '{';
        ck_assert_int_eq(braces, k);
    }
}
END_TEST

/* Each route is reached by its own pattern with its captures filled in: no earlier route
 * shadows a later one (e.g. "/v2/models/{name}" must not swallow "/v2/models/stats"). */
START_TEST(every_route_reachable) {
    int n = 0;
    const srv_route *rt = srv_router_routes(&n);
    for (int i = 0; i < n; i++) {
        char path[256], *o = path;
        int k = 0;
        for (const char *p = rt[i].pattern; *p;) {
            if (*p == '{') {
                o += sprintf(o, "p%d", k++);
                p = strchr(p, '}') + 1;
            } else {
                *o++ = *p++;
            }
        }
        *o = 0;
        match m = route(rt[i].method, path);
        ck_assert_msg(m.rt == &rt[i], "%s %s reached %s", rt[i].method, path,
                      m.rt ? m.rt->pattern : "nothing");
        ck_assert_int_eq(m.nparams, k);
        for (int j = 0; j < k; j++) {
            char want[16];
            snprintf(want, sizeof want, "p%d", j);
            ck_assert_str_eq(m.params[j], want);
        }
        match_free(&m);
    }
}
END_TEST

/* ---- pattern shapes ---- */

START_TEST(literal_routes) {
    expect_route("GET", "/v2", "v2_server", "/v2", NULL);
    expect_route("GET", "/v2/health/live", "v2_live", "/v2/health/live", NULL);
    expect_route("GET", "/v2/health/ready", "v2_ready", "/v2/health/ready", NULL);
    expect_route("GET", "/metrics", "metrics", "/metrics", NULL);
    expect_route("GET", "/v1/models", "v1_models", "/v1/models", NULL);
    expect_route("GET", "/v2/models/stats", "v2_stats", "/v2/models/stats", NULL);
    expect_route("POST", "/v2/repository/index", "repo_index", "/v2/repository/index", NULL);
    expect_route("GET", "/v1/jobs", "jobs", "/v1/jobs", NULL);
    match m = route("POST", "/v1/conversions");
    ck_assert_ptr_nonnull(m.rt);
    ck_assert_int_eq(m.rt->flags, SRV_ROUTE_UPLOAD | SRV_ROUTE_WRITE | SRV_ROUTE_JOB);
    ck_assert_int_eq(m.rt->auth, SRV_AUTH_ADMIN);
    /* routes that create jobs or change the repository / data sets are writes (refused with
     * no auth_tokens unless allowed); reads are not */
    static const char *const writes[][2] = {
        {"POST", "/v1/finetunes"}, {"DELETE", "/v1/jobs/x"}, {"POST", "/v1/jobs/x/resume"},
        {"PUT", "/v1/datasets/x"}, {"DELETE", "/v1/datasets/x"}, {"PATCH", "/v1/models/x"},
        {"POST", "/v2/repository/models/x/load"}, {"POST", "/v2/repository/models/x/unload"}};
    for (size_t i = 0; i < sizeof writes / sizeof writes[0]; i++) {
        m = route(writes[i][0], writes[i][1]);
        ck_assert_msg(m.rt && (m.rt->flags & SRV_ROUTE_WRITE), "%s %s", writes[i][0], writes[i][1]);
        match_free(&m);
    }
    static const char *const reads[][2] = {{"GET", "/v1/jobs"}, {"GET", "/v1/jobs/x"},
                                           {"GET", "/v1/datasets"}, {"POST", "/v2/repository/index"},
                                           {"POST", "/v2/models/x/infer"}};
    for (size_t i = 0; i < sizeof reads / sizeof reads[0]; i++) {
        m = route(reads[i][0], reads[i][1]);
        ck_assert_msg(m.rt && !(m.rt->flags & SRV_ROUTE_WRITE), "%s %s", reads[i][0], reads[i][1]);
        match_free(&m);
    }
    /* routes that start a job (refused by a replica with role = serve), and only those */
    static const char *const jobs[][2] = {{"POST", "/v1/finetunes"}, {"POST", "/v1/jobs/x/resume"}};
    for (size_t i = 0; i < sizeof jobs / sizeof jobs[0]; i++) {
        m = route(jobs[i][0], jobs[i][1]);
        ck_assert_msg(m.rt && (m.rt->flags & SRV_ROUTE_JOB), "%s %s", jobs[i][0], jobs[i][1]);
        match_free(&m);
    }
    static const char *const not_jobs[][2] = {{"DELETE", "/v1/jobs/x"}, {"GET", "/v1/jobs"},
                                              {"PUT", "/v1/datasets/x"}, {"POST", "/v2/models/x/infer"}};
    for (size_t i = 0; i < sizeof not_jobs / sizeof not_jobs[0]; i++) {
        m = route(not_jobs[i][0], not_jobs[i][1]);
        ck_assert_msg(m.rt && !(m.rt->flags & SRV_ROUTE_JOB), "%s %s", not_jobs[i][0], not_jobs[i][1]);
        match_free(&m);
    }
    m = route("GET", "/v2/health/live");
    ck_assert_int_eq(m.rt->auth, SRV_AUTH_NONE);
}
END_TEST

START_TEST(capture_routes) {
    static const struct {
        const char *method, *path, *endpoint, *pattern, *params[3];
    } c[] = {
        {"GET", "/v2/models/mnist", "v2_model", "/v2/models/{name}", {"mnist"}},
        {"GET", "/v2/models/mnist/versions/3", "v2_model", "/v2/models/{name}/versions/{version}",
         {"mnist", "3"}},
        {"GET", "/v2/models/mnist/ready", "v2_model_ready", "/v2/models/{name}/ready", {"mnist"}},
        {"GET", "/v2/models/mnist/versions/3/ready", "v2_model_ready",
         "/v2/models/{name}/versions/{version}/ready", {"mnist", "3"}},
        {"POST", "/v2/models/mnist/infer", "v2_infer", "/v2/models/{name}/infer", {"mnist"}},
        {"POST", "/v2/models/mnist/versions/3/infer", "v2_infer",
         "/v2/models/{name}/versions/{version}/infer", {"mnist", "3"}},
        {"POST", "/v1/models/mnist/classify", "classify", "/v1/models/{name}/classify", {"mnist"}},
        {"POST", "/v1/models/mnist/versions/3/classify", "classify",
         "/v1/models/{name}/versions/{version}/classify", {"mnist", "3"}},
        {"GET", "/v2/models/mnist/stats", "v2_stats", "/v2/models/{name}/stats", {"mnist"}},
        {"GET", "/v2/models/mnist/versions/3/stats", "v2_stats",
         "/v2/models/{name}/versions/{version}/stats", {"mnist", "3"}},
        {"POST", "/v2/repository/models/mnist/load", "repo_load",
         "/v2/repository/models/{name}/load", {"mnist"}},
        {"POST", "/v2/repository/models/mnist/unload", "repo_unload",
         "/v2/repository/models/{name}/unload", {"mnist"}},
        {"GET", "/v1/jobs/j-42", "job", "/v1/jobs/{id}", {"j-42"}},
        {"DELETE", "/v1/jobs/j-42", "job_cancel", "/v1/jobs/{id}", {"j-42"}},
        {"POST", "/v1/jobs/j-42/resume", "job_resume", "/v1/jobs/{id}/resume", {"j-42"}},
    };
    for (size_t i = 0; i < DYN_ARRAY_LEN(c); i++)
        expect_route(c[i].method, c[i].path, c[i].endpoint, c[i].pattern, c[i].params);
    /* A capture may hold a literal word of another pattern. */
    const char *ready[] = {"ready", "versions", NULL};
    expect_route("GET", "/v2/models/ready/versions/versions", "v2_model",
                 "/v2/models/{name}/versions/{version}", ready);
    match m = route("POST", "/v2/models/x/infer");
    ck_assert_int_eq(m.rt->flags, SRV_ROUTE_INFERENCE);
    ck_assert_int_eq(m.rt->auth, SRV_AUTH_INFER);
    char name[16];
    ck_assert_str_eq(srv_route_param_name(m.rt, 0, name, sizeof name), "name");
    ck_assert_ptr_null(srv_route_param_name(m.rt, 1, name, sizeof name));
    match_free(&m);
    m = route("GET", "/v2/models/x/versions/1");
    ck_assert_str_eq(srv_route_param_name(m.rt, 1, name, sizeof name), "version");
    match_free(&m);
}
END_TEST

/* Captures are percent-decoded after the split: %2F never makes a segment. */
START_TEST(capture_decoding) {
    const char *sp[] = {"a b", NULL}, *sl[] = {"a/b", NULL}, *pct[] = {"%", NULL};
    expect_route("GET", "/v2/models/a%20b/ready", "v2_model_ready", "/v2/models/{name}/ready", sp);
    expect_route("GET", "/v2/models/a%2Fb/ready", "v2_model_ready", "/v2/models/{name}/ready", sl);
    expect_route("GET", "/v2/models/a%2fb", "v2_model", "/v2/models/{name}", sl);
    /* A bad escape or an encoded NUL becomes "%", an invalid name for the handler to refuse. */
    const char *bad[] = {"%zz", "%4", "%", "a%00b", "%0", "%%41"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        char path[64];
        snprintf(path, sizeof path, "/v2/models/%s", bad[i]);
        expect_route("GET", path, "v2_model", "/v2/models/{name}", pct);
    }
    /* Literal segments are not decoded. */
    expect_status("GET", "/v2/health/%6Cive", 404, "");
}
END_TEST

START_TEST(pct_decode) {
    const struct {
        const char *in, *out;
    } c[] = {{"", ""},           {"abc", "abc"},     {"a%20b", "a b"}, {"%2e%2E", ".."},
             {"%41%4a%4A", "AJJ"}, {"%ff", "\xff"}, {"%", NULL},      {"%2", NULL},
             {"%g0", NULL},      {"%0g", NULL},      {"%00", NULL},    {"ab%", NULL},
             {"a+b", "a+b"}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        char *d = srv_pct_decode(c[i].in, strlen(c[i].in));
        if (!c[i].out) {
            ck_assert_msg(!d, "'%s' decoded to '%s'", c[i].in, d);
        } else {
            ck_assert_msg(d, "'%s' refused", c[i].in);
            ck_assert_str_eq(d, c[i].out);
        }
        free(d);
    }
    /* Only s[0..n) is read: a trailing escape cut by n is incomplete. */
    char *d = srv_pct_decode("ab%41", 2);
    ck_assert_str_eq(d, "ab");
    free(d);
    ck_assert_ptr_null(srv_pct_decode("ab%41", 4));
}
END_TEST

/* ---- 404 vs 405 ---- */

START_TEST(method_mismatch_405) {
    expect_status("POST", "/v2/health/live", 405, "GET");
    expect_status("DELETE", "/metrics", 405, "GET");
    expect_status("GET", "/v2/models/m/infer", 405, "POST");
    expect_status("GET", "/v1/conversions", 405, "POST");
    expect_status("PUT", "/v1/jobs/7", 405, "GET, DELETE");
    expect_status("POST", "/v1/jobs/7", 405, "GET, DELETE");
    expect_status("POST", "/v2/models/m/versions/1", 405, "GET");
    expect_status("get", "/v2/health/live", 405, "GET"); /* methods are case-sensitive */
    expect_status("", "/v2", 405, "GET");
    /* The Allow list fits its buffer even when tiny. */
    char allow[4];
    char *params[SRV_MAX_PARAMS];
    int np = -1, st = 0;
    ck_assert_ptr_null(srv_router_match("PUT", "/v1/jobs/7", params, &np, &st, allow, sizeof allow));
    ck_assert_int_eq(st, 405);
    ck_assert_str_eq(allow, "GET");
}
END_TEST

START_TEST(unknown_path_404) {
    const char *paths[] = {
        "/console/",               "",                       "v2/health/live",
        "/nope",                   "/v2/",                   "/v2/health",
        "/v2/health/live/",        "/v2/health/live/x",      "/V2/health/live",
        "/v2//health/live",        "//v2/health/live",       "/v2/models/",
        "/v2/models//ready",       "/v2/models/m/versions/", "/v2/models/m/versions//ready",
        "/v2/models/m/versions",   "/v1/jobs/",              "/metrics?x=1",
        "/v2/health/live\n",       "/v2/models/m/infer/",    "/v2/models/m/versions/1/2/infer",
    };
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        match m = route("GET", paths[i]);
        ck_assert_msg(!m.rt && m.status == 404, "GET '%s': %d", paths[i], m.status);
        m = route("POST", paths[i]);
        ck_assert_msg(!m.rt && m.status == 404, "POST '%s': %d", paths[i], m.status);
    }
    /* "/" is the web console's index (GET only); other methods are 405 */
    match m = route("GET", "/");
    ck_assert(m.rt && m.rt->handler == api_console_index);
    m = route("POST", "/");
    ck_assert_int_eq(m.status, 405);
}
END_TEST

/* ---- traversal and size ---- */

/* "..", "%2e%2e", "%2F" reach the handler as a capture (the router does not judge names);
 * the repository's name check refuses every one of them. */
START_TEST(traversal_names) {
    const char *paths[] = {"/v2/models/../ready",      "/v2/models/%2e%2e/ready",
                           "/v2/models/%2E%2e/ready",  "/v2/models/.%2e/ready",
                           "/v2/models/..%2Fetc/ready", "/v2/models/%2e%2e%2f%2e%2e/ready",
                           "/v2/models/./ready",       "/v2/models/%2e/ready"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        match m = route("GET", paths[i]);
        ck_assert_msg(m.rt, "%s: %d", paths[i], m.status);
        ck_assert_str_eq(m.rt->pattern, "/v2/models/{name}/ready");
        ck_assert_int_eq(m.nparams, 1);
        ck_assert_msg(!srv_repo_name_valid(m.params[0]), "'%s' accepted", m.params[0]);
        match_free(&m);
    }
    /* A path made of ".." segments is just an unknown path. */
    expect_status("GET", "/v2/models/m/../../health/live", 404, "");
    expect_status("GET", "/v2/health/live/..", 404, "");
}
END_TEST

START_TEST(long_paths) {
    size_t big = 1 << 20;
    char *path = malloc(big + 64);
    ck_assert_ptr_nonnull(path);
    /* A 1 MiB capture is captured whole; the name check refuses it. */
    char *p = stpcpy(path, "/v2/models/");
    memset(p, 'a', big), p += big;
    strcpy(p, "/ready");
    match m = route("GET", path);
    ck_assert_ptr_nonnull(m.rt);
    ck_assert_uint_eq(strlen(m.params[0]), big);
    ck_assert(!srv_repo_name_valid(m.params[0]));
    match_free(&m);
    /* 1 MiB of slashes, and many short segments: no route, no crash. */
    memset(path, '/', big);
    path[big] = 0;
    expect_status("GET", path, 404, "");
    for (size_t i = 0; i + 1 < big; i += 2) path[i] = '/', path[i + 1] = 'a';
    expect_status("GET", path, 404, "");
    /* 16 and 17 segments. */
    p = path;
    for (int i = 0; i < 17; i++) p = stpcpy(p, "/s");
    expect_status("GET", path, 404, "");
    path[16 * 2] = 0;
    expect_status("GET", path, 404, "");
    free(path);
}
END_TEST

/* The daemon's table, handed over as api/main.c does. */
static void use_api_routes(void) {
    int n;
    const srv_route *rt = api_routes(&n);
    srv_router_set(rt, n);
}

Suite *router_suite(void) {
    Suite *s = suite_create("srv_router");
    TCase *tc = tcase_create("router");
    tcase_add_unchecked_fixture(tc, use_api_routes, NULL);
    tcase_add_test(tc, table_well_formed);
    tcase_add_test(tc, every_route_reachable);
    tcase_add_test(tc, literal_routes);
    tcase_add_test(tc, capture_routes);
    tcase_add_test(tc, capture_decoding);
    tcase_add_test(tc, pct_decode);
    tcase_add_test(tc, method_mismatch_405);
    tcase_add_test(tc, unknown_path_404);
    tcase_add_test(tc, traversal_names);
    tcase_add_test(tc, long_paths);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(router_suite)
