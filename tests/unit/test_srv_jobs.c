/* test_srv_jobs.c — server/jobs.c's scheduling on a libuv loop, without HTTP: a submitted job
 * waits until the loop runs (the loop thread dispatches it), runs on a worker and its end is
 * recorded by the loop thread; a job the backend hands over through claim_next (queued by
 * another replica, taken over from a holder whose lease expired) is adopted, run and recorded
 * under the new lease; detach closes the jobs' handles so that the loop closes cleanly. The jobs
 * here fail at once (their input model is not served): the engine's work is the integration
 * tests' (tests/integration/test_jobs.sh). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/jobs_impl.h"
#include "testutil.h"

typedef struct fx {
    char dir[64], jobs_dir[128];
    srv_config cfg;
    srv_metrics *metrics;
    srv_repo *repo;
    uv_loop_t loop;
    srv_jobs *js;
} fx;

static void fx_open(fx *f) {
    snprintf(f->dir, sizeof f->dir, "/tmp/dynd_jobs_ut_XXXXXX");
    ck_assert(mkdtemp(f->dir));
    char *argv[] = {"dynd", NULL};
    srv_cmd cmd;
    dyn_err err = {0};
    ck_assert(srv_config_load(1, argv, &f->cfg, &cmd, &err) == 0);
    snprintf(f->cfg.model_dir, sizeof f->cfg.model_dir, "%s/models", f->dir);
    snprintf(f->cfg.state_dir, sizeof f->cfg.state_dir, "%s/state", f->dir);
    snprintf(f->cfg.data_dir, sizeof f->cfg.data_dir, "%s/data", f->dir);
    snprintf(f->jobs_dir, sizeof f->jobs_dir, "%s/state/jobs", f->dir);
    ck_assert_int_eq(mkdir(f->cfg.model_dir, 0750), 0);
    f->cfg.jobs_max_concurrent = 2;
    f->cfg.jobs_lease_s = 3;
    f->metrics = srv_metrics_new();
    f->repo = srv_repo_new(&f->cfg, f->metrics);
    ck_assert(f->repo);
    ck_assert_int_eq(uv_loop_init(&f->loop), 0);
}

/* Shutdown as the daemon does it: interrupt, detach, let the loop close the handles, free. */
static void fx_close(fx *f) {
    srv_jobs_shutdown(f->js);
    srv_jobs_detach(f->js);
    uv_run(&f->loop, UV_RUN_DEFAULT); /* returns once every handle is closed */
    ck_assert_int_eq(srv_jobs_free(f->js, 5), 0);
    ck_assert_int_eq(uv_loop_close(&f->loop), 0); /* no handle of the jobs left behind */
    srv_repo_stop(f->repo, 1);
    srv_repo_free(f->repo);
    srv_metrics_free(f->metrics);
    srv__remove_tree(f->dir);
}

typedef struct waiter {
    fx *f;
    const char *id;
    double deadline;
    json_t *rec; /* the record once the job ended */
} waiter;

static void on_check(uv_timer_t *t) {
    waiter *w = t->data;
    srv_job_err e;
    json_t *rec = srv_jobs_get(w->f->js, w->id, &e);
    ck_assert_ptr_nonnull(rec);
    int st = srv_job_state_parse(json_string_value(json_object_get(rec, "state")));
    if ((st == SRV_JOB_SUCCEEDED || st == SRV_JOB_FAILED || st == SRV_JOB_CANCELLED) &&
        srv_jobs_running(w->f->js) == 0) {
        w->rec = rec;
        uv_stop(t->loop);
        return;
    }
    json_decref(rec);
    if (dyn_now() > w->deadline) uv_stop(t->loop);
}

/* Runs the loop until job id has ended and its run is recorded (NULL after 30 s). */
static json_t *run_until_ended(fx *f, const char *id) {
    waiter w = {f, id, dyn_now() + 30, NULL};
    uv_timer_t t;
    uv_timer_init(&f->loop, &t);
    t.data = &w;
    uv_timer_start(&t, on_check, 10, 10);
    uv_run(&f->loop, UV_RUN_DEFAULT);
    uv_close((uv_handle_t *)&t, NULL);
    uv_run(&f->loop, UV_RUN_NOWAIT);
    return w.rec;
}

static void check_failed_once(json_t *rec) {
    ck_assert_ptr_nonnull(rec);
    ck_assert_str_eq(json_string_value(json_object_get(rec, "state")), "failed");
    ck_assert_int_eq((int)json_integer_value(json_object_get(rec, "attempts")), 1);
    const char *msg = json_string_value(json_object_get(rec, "error"));
    ck_assert_msg(msg && strstr(msg, "'nope' is not served"), "error: %s", msg ? msg : "null");
}

START_TEST(submitted_job_runs_from_the_loop) {
    fx f;
    fx_open(&f);
    dyn_err err = {0};
    f.js = srv_jobs_new(&f.cfg, f.repo, f.metrics, &f.loop, &err);
    ck_assert_msg(f.js != NULL, "%s", err.msg);
    json_t *spec = json_pack("{s:s, s:s}", "model", "nope", "output", "out1");
    srv_job_err e;
    json_t *rec = srv_jobs_submit(f.js, SRV_JOB_CONVERSION, spec, NULL, &e);
    json_decref(spec);
    ck_assert_ptr_nonnull(rec);
    char id[32];
    snprintf(id, sizeof id, "%s", json_string_value(json_object_get(rec, "id")));
    json_decref(rec);
    /* the loop has not run: nothing dispatched it */
    usleep(200 * 1000);
    rec = srv_jobs_get(f.js, id, &e);
    ck_assert_str_eq(json_string_value(json_object_get(rec, "state")), "queued");
    json_decref(rec);
    ck_assert_int_eq(srv_jobs_running(f.js), 0);
    rec = run_until_ended(&f, id);
    check_failed_once(rec);
    json_decref(rec);
    /* the record on disk says the same, and no lease is left */
    char p[256];
    snprintf(p, sizeof p, "%s/%s/job.json", f.jobs_dir, id);
    json_t *disk = json_load_file(p, 0, NULL);
    ck_assert_str_eq(json_string_value(json_object_get(disk, "state")), "failed");
    json_decref(disk);
    snprintf(p, sizeof p, "%s/%s/lease.1", f.jobs_dir, id);
    ck_assert_int_ne(access(p, F_OK), 0);
    fx_close(&f);
}
END_TEST

/* ---- claim_next: a backend (fs underneath) that offers one job held by a dead replica ---- */

static const char *g_offer; /* the job claim_next hands over once, then NULL */
static int g_asked;
static srv_jobs_backend *g_be;
static char g_jobs_dir[128];

static void offer_claim_next(void *state, srv_jobs_backend_claimed_fn done, void *arg) {
    g_asked++;
    const char *id = g_offer;
    g_offer = NULL;
    if (!id) {
        done(arg, NULL, 0);
        return;
    }
    /* the other replica's lease runs out: the claim takes the job over */
    char p[256];
    snprintf(p, sizeof p, "%s/%s/lease.1", g_jobs_dir, id);
    struct timespec ts[2] = {{.tv_sec = 1000}, {.tv_sec = 1000}};
    ck_assert_int_eq(utimensat(AT_FDCWD, p, ts, 0), 0);
    dyn_err err = {0};
    long long g = g_be->claim(state, id, &err);
    ck_assert_int_eq((int)g, 2);
    done(arg, id, g);
}

START_TEST(claimed_job_is_adopted) {
    fx f;
    fx_open(&f);
    dyn_err err = {0};
    ck_assert_int_eq(mkdir(f.cfg.state_dir, 0750), 0);
    ck_assert_int_eq(mkdir(f.jobs_dir, 0750), 0);
    snprintf(g_jobs_dir, sizeof g_jobs_dir, "%s", f.jobs_dir);
    g_be = srv_jobs_backend_fs(f.jobs_dir, f.cfg.jobs_lease_s, &err);
    ck_assert_ptr_nonnull(g_be);
    /* another replica (another host) queued conv-0000000000aa and holds its lease */
    const char *id = "conv-0000000000aa";
    ck_assert_int_eq(g_be->create(g_be->state, id, &err), 0);
    char p[256];
    snprintf(p, sizeof p, "%s/%s/lease.1", f.jobs_dir, id);
    FILE *fl = fopen(p, "w");
    ck_assert_ptr_nonnull(fl);
    fputs("{\"host\": \"elsewhere.invalid\", \"pid\": 1, \"start\": 1}\n", fl);
    fclose(fl);
    json_t *rec = json_pack("{s:s, s:s, s:s, s:{s:s, s:s}, s:s, s:i}", "id", id, "kind",
                            "conversion", "state", "queued", "options", "model", "nope", "output",
                            "out2", "created_at", "2026-01-01T00:00:00.000Z", "attempts", 0);
    ck_assert_int_eq(g_be->record_write(g_be->state, id, 1, rec, &err), 0);
    json_decref(rec);
    g_be->claim_next = offer_claim_next;
    g_offer = id;
    g_asked = 0;
    f.js = srv__jobs_new_with(&f.cfg, f.repo, f.metrics, &f.loop, g_be, &err);
    ck_assert_msg(f.js != NULL, "%s", err.msg);
    srv_job_err e;
    rec = srv_jobs_get(f.js, id, &e); /* held elsewhere: listed as it is, not interrupted */
    ck_assert_str_eq(json_string_value(json_object_get(rec, "state")), "queued");
    json_decref(rec);
    rec = run_until_ended(&f, id);
    check_failed_once(rec);
    json_decref(rec);
    ck_assert_int_ge(g_asked, 2); /* asked again once the worker was idle */
    snprintf(p, sizeof p, "%s/%s/lease.2", f.jobs_dir, id);
    ck_assert_int_ne(access(p, F_OK), 0); /* released at the end */
    fx_close(&f);
}
END_TEST

Suite *jobs_suite(void) {
    Suite *s = suite_create("srv_jobs");
    TCase *tc = tcase_create("loop");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, submitted_job_runs_from_the_loop);
    tcase_add_test(tc, claimed_job_is_adopted);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(jobs_suite)
