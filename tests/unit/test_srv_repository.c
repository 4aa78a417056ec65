/* test_srv_repository.c — server/repository: the model-name check every request name and
 * every file in model_dir goes through (repository.h: 1..64 of [A-Za-z0-9_.-], not starting
 * with '.'), which is what keeps names from escaping model_dir; and the memory budget
 * (max_loaded_models / max_model_memory_bytes): least-recently-used unloading of idle
 * versions only, lazy loading by srv_repo_acquire_load, scans that leave lazy versions alone. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "io/model_file.h"
#include "server/repository.h"
#include "testutil.h"

START_TEST(valid_names) {
    const char *ok[] = {"mnist", "a", "Z", "0", "A-b_c.1", "lenet5.v2", "a..b", "a.", "-x", "_"};
    for (size_t i = 0; i < sizeof ok / sizeof ok[0]; i++)
        ck_assert_msg(srv_repo_name_valid(ok[i]), "'%s' refused", ok[i]);
    char longest[SRV_NAME_MAX + 1];
    memset(longest, 'n', SRV_NAME_MAX);
    longest[SRV_NAME_MAX] = 0;
    ck_assert(srv_repo_name_valid(longest));
}
END_TEST

START_TEST(invalid_names) {
    const char *bad[] = {NULL,    "",     ".",      "..",      ".hidden", "../etc", "a/b",
                         "/abs",  "a\\b", "a b",    " a",      "a\n",     "a%2e",   "a:b",
                         "a*",    "a?",   "\xc3\xa9", "na\xffme", "a;b",    "~x",     "$(x)"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
        ck_assert_msg(!srv_repo_name_valid(bad[i]), "'%s' accepted", bad[i] ? bad[i] : "NULL");
    char toolong[SRV_NAME_MAX + 2];
    memset(toolong, 'n', SRV_NAME_MAX + 1);
    toolong[SRV_NAME_MAX + 1] = 0;
    ck_assert(!srv_repo_name_valid(toolong));
    /* Every byte outside the allowed set is refused, in any position. */
    for (int c = 1; c < 256; c++) {
        int allowed = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                      c == '_' || c == '-' || c == '.';
        char mid[4] = {'a', (char)c, 'b', 0};
        ck_assert_msg(srv_repo_name_valid(mid) == allowed, "byte %d", c);
    }
}
END_TEST

/* ---- memory budget ---- */

typedef struct budget_fx {
    char dir[64];
    srv_config cfg;
    srv_metrics *metrics;
    srv_repo *repo;
} budget_fx;

/* model_dir/<name>.dyn: a linear 6 -> 3 model. */
static void write_model(const char *dir, const char *name) {
    dyn_shape in = {.ndim = 1, .d = {6}};
    dyn_model *m = dyn_model_new(&in);
    dyn_err err = {0};
    json_t *a = json_pack("{s:i, s:i}", "in", 6, "out", 3);
    ck_assert(dyn_model_add_seq(m, dyn_layer_create("linear", "fc", a, &err), &err) >= 0);
    json_decref(a);
    dyn_model_init(m, 7);
    char path[256];
    snprintf(path, sizeof path, "%s/%s.dyn", dir, name);
    ck_assert_msg(dyn_model_save(m, path, &err) == 0, "%s", err.msg);
    dyn_model_free(m);
}

/* A repository over a new directory holding `names`, scanned once. */
static void fx_open(budget_fx *f, int max_models, long long max_bytes, const char *const *names,
                    int n) {
    snprintf(f->dir, sizeof f->dir, "/tmp/dynd_repo_ut_XXXXXX");
    ck_assert(mkdtemp(f->dir));
    for (int i = 0; i < n; i++) write_model(f->dir, names[i]);
    char *argv[] = {"dynd", NULL};
    srv_cmd cmd;
    dyn_err err = {0};
    ck_assert(srv_config_load(1, argv, &f->cfg, &cmd, &err) == 0);
    snprintf(f->cfg.model_dir, sizeof f->cfg.model_dir, "%s", f->dir);
    f->cfg.max_loaded_models = max_models;
    f->cfg.max_model_memory_bytes = max_bytes;
    f->metrics = srv_metrics_new();
    f->repo = srv_repo_new(&f->cfg, f->metrics);
    ck_assert(f->repo);
    ck_assert_int_ge(srv_repo_scan(f->repo, 0, &err), 0);
}

static void fx_close(budget_fx *f) {
    srv_repo_stop(f->repo, 1);
    srv_repo_free(f->repo);
    srv_metrics_free(f->metrics);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    ck_assert(system(cmd) == 0);
}

/* Acquires (loading when needed) and releases at once; 1 when it was served. */
static int touch(budget_fx *f, const char *name) {
    srv_repo_why why;
    srv_model *m = srv_repo_acquire_load(f->repo, name, 0, dyn_now() + 10, NULL, &why, NULL);
    srv_model_release(m);
    return m != NULL;
}

static srv_model_state state(budget_fx *f, const char *name) {
    return srv_repo_state(f->repo, name, 0, NULL, 0);
}

START_TEST(budget_lru_unloads_least_recently_used) {
    budget_fx f;
    const char *names[] = {"a", "b"};
    fx_open(&f, 2, 0, names, 2);
    ck_assert_int_eq(srv_repo_usage_get(f.repo).loaded, 2);
    /* new files with the budget full: known, not loaded */
    write_model(f.dir, "c");
    write_model(f.dir, "d");
    dyn_err err = {0};
    ck_assert_int_ge(srv_repo_scan(f.repo, 0, &err), 0);
    srv_repo_usage u = srv_repo_usage_get(f.repo);
    ck_assert_int_eq(u.loaded, 2);
    ck_assert_int_eq(u.lazy, 2);
    ck_assert_int_eq(state(&f, "c"), SRV_STATE_LAZY);
    ck_assert(srv_repo_acquire(f.repo, "c", 0, NULL) == NULL); /* the fast path never loads */
    /* b, then a used: loading c unloads b, the least recently used */
    ck_assert(touch(&f, "b"));
    ck_assert(touch(&f, "a"));
    ck_assert(touch(&f, "c"));
    ck_assert_int_eq(state(&f, "a"), SRV_STATE_READY);
    ck_assert_int_eq(state(&f, "b"), SRV_STATE_LAZY);
    ck_assert_int_eq(state(&f, "c"), SRV_STATE_READY);
    u = srv_repo_usage_get(f.repo);
    ck_assert_int_eq(u.loaded, 2);
    ck_assert_uint_eq(u.evictions, 1);
    ck_assert_int_gt(u.mem_bytes, 0);
    /* every model in turn: never more than 2 loaded, each served */
    const char *all[] = {"a", "b", "c", "d", "b", "d", "a"};
    for (int i = 0; i < 7; i++) {
        ck_assert_msg(touch(&f, all[i]), "%s not served", all[i]);
        ck_assert_int_le(srv_repo_usage_get(f.repo).loaded, 2);
        ck_assert_int_eq(state(&f, all[i]), SRV_STATE_READY);
    }
    /* scans leave lazy versions alone (no reload to fill the budget back) */
    unsigned long long ev = srv_repo_usage_get(f.repo).evictions;
    ck_assert_int_eq(srv_repo_scan(f.repo, 0, &err), 0);
    ck_assert_int_eq(srv_repo_scan(f.repo, 1, &err), 2); /* force: the 2 loaded reload */
    ck_assert_uint_eq(srv_repo_usage_get(f.repo).evictions, ev);
    ck_assert_int_eq(srv_repo_usage_get(f.repo).loaded, 2);
    fx_close(&f);
}
END_TEST

START_TEST(budget_never_unloads_busy) {
    budget_fx f;
    const char *names[] = {"a", "b"};
    fx_open(&f, 2, 0, names, 2);
    write_model(f.dir, "c");
    dyn_err err = {0};
    ck_assert_int_ge(srv_repo_scan(f.repo, 0, &err), 0);
    srv_model *a = srv_repo_acquire(f.repo, "a", 0, NULL), *b = srv_repo_acquire(f.repo, "b", 0, NULL);
    ck_assert(a && b);
    /* both loaded versions are held: c waits for room until its deadline */
    srv_repo_why why = SRV_REPO_NOT_SERVED;
    int known = 0;
    srv_model *c = srv_repo_acquire_load(f.repo, "c", 0, dyn_now() + 0.05, &known, &why, &err);
    ck_assert(c == NULL);
    ck_assert_int_eq(why, SRV_REPO_BUDGET_BUSY);
    ck_assert(known);
    ck_assert_int_eq(state(&f, "a"), SRV_STATE_READY);
    ck_assert_int_eq(state(&f, "b"), SRV_STATE_READY);
    /* b released: it is the one unloaded, a (still held, used less recently) stays */
    srv_model_release(b);
    c = srv_repo_acquire_load(f.repo, "c", 0, dyn_now() + 10, &known, &why, &err);
    ck_assert(c != NULL);
    ck_assert_int_eq(state(&f, "a"), SRV_STATE_READY);
    ck_assert_int_eq(state(&f, "b"), SRV_STATE_LAZY);
    /* a held version keeps answering after a scan and an explicit load of another */
    ck_assert_int_eq(srv_repo_load(f.repo, "b", &err), 0); /* loads even with nothing idle */
    ck_assert_int_eq(state(&f, "a"), SRV_STATE_READY);
    ck_assert_int_eq(state(&f, "c"), SRV_STATE_READY);
    ck_assert_int_eq(srv_repo_usage_get(f.repo).loaded, 3); /* over, while a and c are busy */
    srv_model_release(a);
    srv_model_release(c);
    ck_assert_int_ge(srv_repo_scan(f.repo, 0, &err), 0); /* the scan brings it back to 2 */
    ck_assert_int_eq(srv_repo_usage_get(f.repo).loaded, 2);
    fx_close(&f);
}
END_TEST

START_TEST(budget_memory_bytes) {
    budget_fx f;
    const char *names[] = {"a", "b", "c"};
    fx_open(&f, 0, 1, names, 3); /* 1 byte: one version at a time (a lone one always fits) */
    ck_assert_int_eq(srv_repo_usage_get(f.repo).loaded, 1);
    /* the scan expected the others not to fit (the mean size of those loaded): it loaded them
     * not at all, rather than each in turn unloading the one before */
    ck_assert_uint_eq(srv_repo_usage_get(f.repo).evictions, 0);
    for (int i = 0; i < 6; i++) {
        ck_assert(touch(&f, names[i % 3]));
        ck_assert_int_eq(srv_repo_usage_get(f.repo).loaded, 1);
    }
    ck_assert_uint_ge(srv_repo_usage_get(f.repo).evictions, 5);
    fx_close(&f);
}
END_TEST

START_TEST(budget_lazy_files_change) {
    budget_fx f;
    const char *names[] = {"a"};
    fx_open(&f, 1, 0, names, 1);
    write_model(f.dir, "b");
    write_model(f.dir, "c");
    dyn_err err = {0};
    ck_assert_int_ge(srv_repo_scan(f.repo, 0, &err), 0);
    ck_assert_int_eq(state(&f, "b"), SRV_STATE_LAZY);
    /* a lazy version's file removed: forgotten; replaced by a bad file: refused on its load */
    char path[256];
    snprintf(path, sizeof path, "%s/b.dyn", f.dir);
    ck_assert(unlink(path) == 0);
    ck_assert_int_ge(srv_repo_scan(f.repo, 0, &err), 0);
    ck_assert_int_eq(state(&f, "b"), SRV_STATE_UNKNOWN);
    snprintf(path, sizeof path, "%s/c.dyn", f.dir);
    FILE *fp = fopen(path, "w");
    ck_assert(fp && fputs("not a model", fp) >= 0 && fclose(fp) == 0);
    ck_assert_int_ge(srv_repo_scan(f.repo, 0, &err), 0);
    ck_assert_int_eq(state(&f, "c"), SRV_STATE_LAZY); /* not loaded by the scan */
    srv_repo_why why;
    int known = 0;
    ck_assert(srv_repo_acquire_load(f.repo, "c", 0, dyn_now() + 10, &known, &why, &err) == NULL);
    ck_assert_int_eq(why, SRV_REPO_LOAD_FAILED);
    ck_assert_int_eq(state(&f, "c"), SRV_STATE_UNAVAILABLE);
    /* room was made before the load (a, idle, unloaded): a request loads it back */
    ck_assert_int_eq(state(&f, "a"), SRV_STATE_LAZY);
    ck_assert(touch(&f, "a"));
    /* unloaded by request: not loaded by a request either */
    ck_assert_int_eq(srv_repo_unload(f.repo, "a", &err), 0);
    ck_assert(srv_repo_acquire_load(f.repo, "a", 0, dyn_now() + 10, &known, &why, &err) == NULL);
    ck_assert_int_eq(why, SRV_REPO_NOT_SERVED);
    ck_assert(known);
    ck_assert_int_eq(state(&f, "a"), SRV_STATE_UNAVAILABLE);
    fx_close(&f);
}
END_TEST

Suite *repository_suite(void) {
    Suite *s = suite_create("srv_repository");
    TCase *tc = tcase_create("names");
    tcase_add_test(tc, valid_names);
    tcase_add_test(tc, invalid_names);
    suite_add_tcase(s, tc);
    tc = tcase_create("budget");
    tcase_add_test(tc, budget_lru_unloads_least_recently_used);
    tcase_add_test(tc, budget_never_unloads_busy);
    tcase_add_test(tc, budget_memory_bytes);
    tcase_add_test(tc, budget_lazy_files_change);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(repository_suite)
