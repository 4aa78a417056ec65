/* test_srv_jobs_fs.c — server/jobs_fs.c, the fs jobs backend, through its interface
 * (server/jobs_backend.h): records round-trip and are refused under another job's name; a
 * second create fails; claims (ours again, a live holder on another host refused, a stale one
 * taken over with the next generation, the older lease files removed); renew delivers
 * cancel_requested once per request and lease_lost once another replica holds a higher
 * generation; a terminal record drops a pending cancel request; list and remove. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "server/jobs_backend.h"
#include "server/jobs_impl.h"
#include "testutil.h"

static char g_dir[256];
static srv_jobs_backend *g_be;

typedef struct events {
    int cancelled, lost;
    char last[64];
} events;
static events g_ev;

static void ev_cancel(void *arg, const char *id) {
    events *e = arg;
    e->cancelled++;
    snprintf(e->last, sizeof e->last, "%s", id);
}
static void ev_lost(void *arg, const char *id) {
    events *e = arg;
    e->lost++;
    snprintf(e->last, sizeof e->last, "%s", id);
}

static void setup(void) {
    snprintf(g_dir, sizeof g_dir, "/tmp/dyn_jobs_fs_XXXXXX");
    ck_assert_ptr_nonnull(mkdtemp(g_dir));
    dyn_err err = {0};
    g_be = srv_jobs_backend_fs(g_dir, 30, &err);
    ck_assert_ptr_nonnull(g_be);
    ck_assert_str_eq(g_be->name, "fs");
    memset(&g_ev, 0, sizeof g_ev);
    srv_jobs_backend_events ev = {&g_ev, ev_cancel, ev_lost, NULL};
    ck_assert_int_eq(g_be->start(g_be->state, uv_default_loop(), &ev, &err), 0);
}

static void teardown(void) {
    g_be->stop(g_be->state);
    g_be->free(g_be);
    srv__remove_tree(g_dir);
}

static int exists(const char *id, const char *name) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s/%s", g_dir, id, name);
    return access(p, F_OK) == 0;
}

/* A lease file of generation g held by another host, its mtime age_s seconds ago. */
static void foreign_lease(const char *id, int g, int age_s) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s/lease.%d", g_dir, id, g);
    FILE *f = fopen(p, "w");
    ck_assert_ptr_nonnull(f);
    fputs("{\"host\": \"elsewhere.invalid\", \"pid\": 1, \"start\": 1}\n", f);
    fclose(f);
    struct timespec ts[2];
    clock_gettime(CLOCK_REALTIME, &ts[0]);
    ts[0].tv_sec -= age_s;
    ts[1] = ts[0];
    ck_assert_int_eq(utimensat(AT_FDCWD, p, ts, 0), 0);
}

static json_t *record(const char *id, const char *state) {
    return json_pack("{s:s, s:s, s:s, s:{}}", "id", id, "kind", "conversion", "state", state,
                     "options");
}

START_TEST(records_round_trip) {
    dyn_err err = {0};
    const srv_jobs_backend *b = g_be;
    ck_assert_int_eq(b->create(b->state, "conv-aa", &err), 0);
    ck_assert_int_eq(b->create(b->state, "conv-aa", &err), DYN_EIO);
    ck_assert_ptr_nonnull(strstr(err.msg, "conv-aa"));
    ck_assert_ptr_null(b->record_read(b->state, "conv-aa")); /* nothing written yet */
    json_t *rec = record("conv-aa", "queued");
    json_object_set_new(rec, "progress", json_real(0.25));
    ck_assert_int_eq(b->record_write(b->state, "conv-aa", 1, rec, &err), 0);
    json_t *back = b->record_read(b->state, "conv-aa");
    ck_assert_ptr_nonnull(back);
    ck_assert(json_equal(rec, back));
    json_decref(back);
    /* a record copied under another job's name is not that job's */
    ck_assert_int_eq(b->create(b->state, "conv-bb", &err), 0);
    ck_assert_int_eq(b->record_write(b->state, "conv-bb", 1, rec, &err), 0);
    ck_assert_ptr_null(b->record_read(b->state, "conv-bb"));
    json_decref(rec);
}
END_TEST

static int collect(void *arg, const char *id) {
    json_t *a = arg;
    json_array_append_new(a, json_string(id));
    return 0;
}

START_TEST(list_and_remove) {
    dyn_err err = {0};
    const srv_jobs_backend *b = g_be;
    ck_assert_int_eq(b->create(b->state, "conv-aa", &err), 0);
    ck_assert_int_eq(b->create(b->state, "ft-bb", &err), 0);
    json_t *ids = json_array();
    ck_assert_int_eq(b->list(b->state, collect, ids, &err), 0);
    ck_assert_int_eq((int)json_array_size(ids), 2);
    b->remove(b->state, "conv-aa");
    json_array_clear(ids);
    ck_assert_int_eq(b->list(b->state, collect, ids, &err), 0);
    ck_assert_int_eq((int)json_array_size(ids), 1);
    ck_assert_str_eq(json_string_value(json_array_get(ids, 0)), "ft-bb");
    json_decref(ids);
}
END_TEST

static void count_none(void *arg, const char *id, long long lease) {
    ck_assert_ptr_null(id);
    ck_assert_int_eq((int)lease, 0);
    ++*(int *)arg;
}

START_TEST(claims_and_takeover) {
    dyn_err err = {0};
    const srv_jobs_backend *b = g_be;
    ck_assert_int_eq(b->create(b->state, "conv-aa", &err), 0);
    ck_assert_int_eq((int)b->claim(b->state, "conv-aa", &err), 1);
    ck_assert_int_eq((int)b->claim(b->state, "conv-aa", &err), 1); /* ours already */
    b->release(b->state, "conv-aa", 1);
    ck_assert(!exists("conv-aa", "lease.1"));
    /* another host holds it and renews: refused */
    foreign_lease("conv-aa", 3, 0);
    ck_assert_int_eq((int)b->claim(b->state, "conv-aa", &err), 0);
    /* it stopped renewing (older than lease_s = 30): taken over, generation 4 */
    foreign_lease("conv-aa", 3, 120);
    ck_assert_int_eq((int)b->claim(b->state, "conv-aa", &err), 4);
    ck_assert(exists("conv-aa", "lease.4"));
    ck_assert(!exists("conv-aa", "lease.3"));
    /* no claim without the job's place */
    ck_assert_int_eq((int)b->claim(b->state, "conv-none", &err), -1);
    ck_assert_int_eq(err.code, DYN_EIO);
    int answers = 0;
    b->claim_next(b->state, count_none, &answers); /* fs: nothing to claim, answered at once */
    ck_assert_int_eq(answers, 1);
}
END_TEST

START_TEST(renew_events) {
    dyn_err err = {0};
    const srv_jobs_backend *b = g_be;
    ck_assert_int_eq(b->create(b->state, "conv-aa", &err), 0);
    long long g = b->claim(b->state, "conv-aa", &err);
    ck_assert_int_eq((int)g, 1);
    const char *ids[] = {"conv-aa"};
    ck_assert_int_eq(b->renew(b->state, 1, ids, &g, &err), 0);
    ck_assert_int_eq(g_ev.cancelled + g_ev.lost, 0);
    /* a cancel sent to another replica: heard once */
    ck_assert_int_eq(b->cancel_request(b->state, "conv-aa", &err), 0);
    ck_assert_int_eq(b->renew(b->state, 1, ids, &g, &err), 0);
    ck_assert_int_eq(g_ev.cancelled, 1);
    ck_assert_str_eq(g_ev.last, "conv-aa");
    ck_assert_int_eq(b->renew(b->state, 1, ids, &g, &err), 0);
    ck_assert_int_eq(g_ev.cancelled, 1);
    /* another replica took it over (presumed us dead): lost, every beat until we let go */
    foreign_lease("conv-aa", 2, 0);
    ck_assert_int_eq(b->renew(b->state, 1, ids, &g, &err), 0);
    ck_assert_int_eq(g_ev.lost, 1);
    /* no events once stopped */
    b->stop(b->state);
    ck_assert_int_eq(b->renew(b->state, 1, ids, &g, &err), 0);
    ck_assert_int_eq(g_ev.lost, 1);
}
END_TEST

START_TEST(terminal_record_drops_cancel) {
    dyn_err err = {0};
    const srv_jobs_backend *b = g_be;
    ck_assert_int_eq(b->create(b->state, "conv-aa", &err), 0);
    ck_assert_int_eq(b->cancel_request(b->state, "conv-aa", &err), 0);
    json_t *rec = record("conv-aa", "running");
    ck_assert_int_eq(b->record_write(b->state, "conv-aa", 1, rec, &err), 0);
    ck_assert(exists("conv-aa", "cancel"));
    json_object_set_new(rec, "state", json_string("succeeded"));
    ck_assert_int_eq(b->record_write(b->state, "conv-aa", 1, rec, &err), 0);
    ck_assert(!exists("conv-aa", "cancel"));
    json_decref(rec);
}
END_TEST

Suite *jobs_fs_suite(void) {
    Suite *s = suite_create("srv_jobs_fs");
    TCase *tc = tcase_create("fs");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, records_round_trip);
    tcase_add_test(tc, list_and_remove);
    tcase_add_test(tc, claims_and_takeover);
    tcase_add_test(tc, renew_events);
    tcase_add_test(tc, terminal_record_drops_cancel);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(jobs_fs_suite)
