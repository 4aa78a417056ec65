/* test_srv_pg.c — server/pg and server/jobs_pg against a real PostgreSQL that main() starts
 * with tests/ptu_pg_harness.sh (a temporary directory, loopback only) and stops at the end.
 * Without PostgreSQL's server binaries the program prints SKIP and exits 0; any other failure
 * to start the server fails it. Every test starts from an empty database (fresh()). Run it from
 * the repository root (make unit does), or give the harness's path in DYND_PG_HARNESS.
 *
 * Covered: schema creation from nothing and from version 0, step by step, idempotent, refused
 * when newer; two connections claiming 20 queued jobs concurrently claim each exactly once; an
 * expired lease is taken over at gen + 1 and the old holder's fenced writes are refused; renew
 * reports the leases lost; a cancel's NOTIFY reaches a listening srv_pg within a second;
 * srv_pg and srv_pgsync reconnect after `pg_ctl restart` and their next queries succeed, the
 * LISTEN re-issued. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "server/jobs_pg.h"
#include "server/pg.h"
#include "testutil.h"


static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static PGconn *connect_ok(void) {
    PGconn *c = PQconnectdb(tu_pg_conninfo);
    ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
    PQclear(PQexec(c, "SET client_min_messages = warning"));
    return c;
}

static void exec_ok(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_COMMAND_OK || PQresultStatus(r) == PGRES_TUPLES_OK,
                  "%s: %s", sql, PQresultErrorMessage(r));
    PQclear(r);
}

static long query_long(PGconn *c, const char *sql) {
    PGresult *r = PQexec(c, sql);
    ck_assert_msg(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql, PQresultErrorMessage(r));
    long v = atol(PQgetvalue(r, 0, 0));
    PQclear(r);
    return v;
}

/* An empty database with the latest schema (migrate = 1) or none. */
static PGconn *fresh(int migrate) {
    PGconn *c = connect_ok();
    exec_ok(c, "DROP TABLE IF EXISTS dynd_jobs, dynd_schema_version");
    dyn_err e = {0};
    if (migrate)
        ck_assert_msg(srv_jobs_pg_migrate(c, 0, &e) == SRV_JOBS_PG_SCHEMA_VERSION, "%s", e.msg);
    return c;
}

static void insert_jobs(PGconn *c, int n, const char *prefix) {
    srv_jobs_pg_via via = {.conn = c};
    for (int i = 0; i < n; i++) {
        char id[64];
        snprintf(id, sizeof id, "%s-%02d", prefix, i);
        json_t *spec = json_pack("{s:s, s:i}", "model", "m", "i", i);
        dyn_err e = {0};
        ck_assert_msg(srv_jobs_pg_insert(&via, id, "conversion", spec, NULL, &e) == 0, "%s", e.msg);
        json_decref(spec);
    }
}

#define INDEX_COUNT "SELECT count(*) FROM pg_indexes WHERE indexname = 'dynd_jobs_claimable'"

START_TEST(schema_migrations) {
    PGconn *c = fresh(0);
    dyn_err e = {0};
    /* step by step from nothing: version 1 has the table, not yet the index of version 2 */
    ck_assert_int_eq(srv_jobs_pg_migrate(c, 1, &e), 1);
    ck_assert_int_eq(query_long(c, "SELECT version FROM dynd_schema_version"), 1);
    ck_assert_int_eq(query_long(c, INDEX_COUNT), 0);
    ck_assert_int_eq(srv_jobs_pg_migrate(c, 0, &e), SRV_JOBS_PG_SCHEMA_VERSION);
    ck_assert_int_eq(query_long(c, INDEX_COUNT), 1);
    /* idempotent: again, nothing to do, the data stays */
    insert_jobs(c, 1, "keep");
    ck_assert_int_eq(srv_jobs_pg_migrate(c, 0, &e), SRV_JOBS_PG_SCHEMA_VERSION);
    ck_assert_int_eq(query_long(c, "SELECT count(*) FROM dynd_jobs"), 1);
    ck_assert_int_eq(query_long(c, "SELECT count(*) FROM dynd_schema_version"), 1);
    /* from an explicit version 0 (the version table alone) */
    exec_ok(c, "DROP TABLE dynd_jobs");
    exec_ok(c, "UPDATE dynd_schema_version SET version = 0");
    ck_assert_int_eq(srv_jobs_pg_migrate(c, 0, &e), SRV_JOBS_PG_SCHEMA_VERSION);
    ck_assert_int_eq(query_long(c, "SELECT count(*) FROM dynd_jobs"), 0);
    /* a database migrated by a newer dynd is refused, and nothing is changed */
    exec_ok(c, "UPDATE dynd_schema_version SET version = 99");
    ck_assert_int_lt(srv_jobs_pg_migrate(c, 0, &e), 0);
    ck_assert_msg(strstr(e.msg, "newer"), "%s", e.msg);
    ck_assert_int_eq(query_long(c, "SELECT version FROM dynd_schema_version"), 99);
    ck_assert_int_eq(PQtransactionStatus(c), PQTRANS_IDLE);
    PQfinish(c);
}
END_TEST

/* ---- concurrent claims ---- */

enum { NJOBS = 20 };
typedef struct claimer {
    const char *holder;
    pthread_barrier_t *start;
    int *total; /* claims by both, under mu */
    pthread_mutex_t *mu;
    char ids[NJOBS * 2][64];
    int n, errors;
    char err[512];
} claimer;

static void *claim_main(void *arg) {
    claimer *cl = arg;
    PGconn *c = PQconnectdb(tu_pg_conninfo);
    srv_jobs_pg_via via = {.conn = c};
    pthread_barrier_wait(cl->start);
    double end = now_s() + 20;
    for (;;) {
        pthread_mutex_lock(cl->mu);
        int done = *cl->total >= NJOBS;
        pthread_mutex_unlock(cl->mu);
        if (done || now_s() > end || cl->n == NJOBS * 2) break;
        srv_jobs_pg_claim cj;
        dyn_err e = {0};
        int rc = srv_jobs_pg_claim_next(&via, cl->holder, 60, &cj, &e);
        if (rc < 0) {
            cl->errors++;
            snprintf(cl->err, sizeof cl->err, "%s", e.msg);
            continue;
        }
        if (rc == 0) continue; /* none free right now, or lost a race: poll again */
        snprintf(cl->ids[cl->n++], 64, "%s", cj.id);
        srv_jobs_pg_claim_clear(&cj);
        pthread_mutex_lock(cl->mu);
        (*cl->total)++;
        pthread_mutex_unlock(cl->mu);
    }
    PQfinish(c);
    return NULL;
}

/* Both race for k-00 .. k-19 by id, in the same order; wins[i] = 1 for each won. */
static void *claim_id_main(void *arg) {
    claimer *cl = arg;
    PGconn *c = PQconnectdb(tu_pg_conninfo);
    srv_jobs_pg_via via = {.conn = c};
    pthread_barrier_wait(cl->start);
    for (int i = 0; i < NJOBS; i++) {
        char id[64];
        snprintf(id, sizeof id, "k-%02d", i);
        dyn_err e = {0};
        int g = srv_jobs_pg_claim_id(&via, id, cl->holder, 60, &e);
        if (g < 0) cl->errors++, snprintf(cl->err, sizeof cl->err, "%s", e.msg);
        cl->ids[i][0] = g > 0;
    }
    PQfinish(c);
    return NULL;
}

START_TEST(concurrent_claims_once_each) {
    PGconn *c = fresh(1);
    insert_jobs(c, NJOBS, "job");
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, 2);
    pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
    int total = 0;
    claimer a = {.holder = "host-a:1", .start = &start, .total = &total, .mu = &mu};
    claimer b = {.holder = "host-b:2", .start = &start, .total = &total, .mu = &mu};
    pthread_t ta, tb;
    pthread_create(&ta, NULL, claim_main, &a);
    pthread_create(&tb, NULL, claim_main, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    ck_assert_msg(a.errors == 0 && b.errors == 0, "claim errors: %s %s", a.err, b.err);
    ck_assert_int_eq(a.n + b.n, NJOBS);
    /* each id exactly once across both */
    for (int i = 0; i < NJOBS; i++) {
        char id[64];
        snprintf(id, sizeof id, "job-%02d", i);
        int seen = 0;
        for (int k = 0; k < a.n; k++) seen += !strcmp(a.ids[k], id);
        for (int k = 0; k < b.n; k++) seen += !strcmp(b.ids[k], id);
        ck_assert_msg(seen == 1, "%s claimed %d times", id, seen);
    }
    ck_assert_int_eq(
        query_long(c, "SELECT count(*) FROM dynd_jobs WHERE holder IS NOT NULL AND lease_gen = 1"),
        NJOBS);
    char q[160];
    snprintf(q, sizeof q, "SELECT count(*) FROM dynd_jobs WHERE holder = 'host-a:1'");
    ck_assert_int_eq(query_long(c, q), a.n);
    /* nothing is left to claim */
    srv_jobs_pg_via via = {.conn = c};
    srv_jobs_pg_claim cj;
    dyn_err e = {0};
    ck_assert_int_eq(srv_jobs_pg_claim_next(&via, "host-c:3", 60, &cj, &e), 0);
    /* by id: of two holders racing for the same job exactly one gets it */
    insert_jobs(c, NJOBS, "k");
    a.n = b.n = 0;
    pthread_create(&ta, NULL, claim_id_main, &a);
    pthread_create(&tb, NULL, claim_id_main, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    ck_assert_msg(a.errors == 0 && b.errors == 0, "claim errors: %s %s", a.err, b.err);
    for (int i = 0; i < NJOBS; i++)
        ck_assert_msg(a.ids[i][0] + b.ids[i][0] == 1, "k-%02d won %d times", i,
                      a.ids[i][0] + b.ids[i][0]);
    ck_assert_int_eq(
        query_long(c, "SELECT count(*) FROM dynd_jobs WHERE id LIKE 'k-%' AND lease_gen = 1"),
        NJOBS);
    pthread_barrier_destroy(&start);
    PQfinish(c);
}
END_TEST

START_TEST(takeover_and_fenced_writes) {
    PGconn *c = fresh(1);
    insert_jobs(c, 1, "t");
    srv_jobs_pg_via via = {.conn = c};
    srv_jobs_pg_claim a, b;
    dyn_err e = {0};
    ck_assert_int_eq(srv_jobs_pg_claim_next(&via, "A:1", 1.0, &a, &e), 1);
    ck_assert_int_eq(a.gen, 1);
    ck_assert_int_eq(a.taken_over, 0);
    ck_assert_int_eq(json_integer_value(json_object_get(a.spec, "i")), 0);
    /* the lease is alive: nothing to claim */
    ck_assert_int_eq(srv_jobs_pg_claim_next(&via, "B:2", 30, &b, &e), 0);
    json_t *rec = json_pack("{s:i}", "progress", 1);
    ck_assert_int_eq(srv_jobs_pg_write(&via, "t-00", "A:1", 1, "running", rec, 0, &e), 1);
    json_decref(rec);
    usleep(1100 * 1000); /* A's lease passes (1 s: room for a loaded machine before) */
    ck_assert_int_eq(srv_jobs_pg_claim_next(&via, "B:2", 30, &b, &e), 1);
    ck_assert_str_eq(b.id, "t-00");
    ck_assert_int_eq(b.gen, 2);
    ck_assert_int_eq(b.taken_over, 1);
    ck_assert_str_eq(b.prev_holder, "A:1");
    ck_assert_int_eq(json_integer_value(json_object_get(b.record, "progress")), 1);
    /* A, presumed dead, writes: refused (state, record and release alike) */
    rec = json_pack("{s:i}", "progress", 99);
    ck_assert_int_eq(srv_jobs_pg_write(&via, "t-00", "A:1", 1, "succeeded", rec, 1, &e), 0);
    ck_assert_int_eq(srv_jobs_pg_write(&via, "t-00", "B:2", 1, "succeeded", rec, 1, &e), 0);
    json_decref(rec);
    rec = json_pack("{s:i}", "progress", 2);
    ck_assert_int_eq(srv_jobs_pg_write(&via, "t-00", "B:2", 2, NULL, rec, 0, &e), 1);
    json_decref(rec);
    json_t *j = NULL;
    ck_assert_int_eq(srv_jobs_pg_get(&via, "t-00", &j, &e), 1);
    ck_assert_str_eq(json_string_value(json_object_get(j, "holder")), "B:2");
    ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "running");
    ck_assert_int_eq(json_integer_value(json_object_get(j, "lease_gen")), 2);
    json_t *jr = json_object_get(j, "record");
    ck_assert_int_eq(json_integer_value(json_object_get(jr, "progress")), 2);
    ck_assert(json_is_number(json_object_get(j, "lease_age_s")));
    ck_assert(json_is_false(json_object_get(j, "lease_expired")));
    json_decref(j);
    /* B finishes and releases */
    ck_assert_int_eq(srv_jobs_pg_write(&via, "t-00", "B:2", 2, "succeeded", NULL, 1, &e), 1);
    ck_assert_int_eq(srv_jobs_pg_get(&via, "t-00", &j, &e), 1);
    ck_assert(json_is_null(json_object_get(j, "holder")));
    ck_assert(json_is_null(json_object_get(j, "lease_age_s")));
    ck_assert_str_eq(json_string_value(json_object_get(j, "state")), "succeeded");
    json_decref(j);
    ck_assert_int_eq(srv_jobs_pg_get(&via, "nope", &j, &e), 0);
    ck_assert_ptr_null(j);
    ck_assert_int_eq(srv_jobs_pg_list(&via, "succeeded", "conversion", &j, &e), 1);
    json_decref(j);
    ck_assert_int_eq(srv_jobs_pg_list(&via, "queued", NULL, &j, &e), 0);
    json_decref(j);
    srv_jobs_pg_claim_clear(&a);
    srv_jobs_pg_claim_clear(&b);
    PQfinish(c);
}
END_TEST

START_TEST(renew_reports_lost_leases) {
    PGconn *c = fresh(1);
    insert_jobs(c, 3, "r");
    srv_jobs_pg_via via = {.conn = c};
    srv_jobs_pg_lease held[3];
    dyn_err e = {0};
    for (int i = 0; i < 3; i++) {
        srv_jobs_pg_claim cj;
        ck_assert_int_eq(srv_jobs_pg_claim_next(&via, "A:1", 60, &cj, &e), 1);
        snprintf(held[i].id, sizeof held[i].id, "%s", cj.id);
        held[i].gen = cj.gen;
        srv_jobs_pg_claim_clear(&cj);
    }
    ck_assert_int_eq(srv_jobs_pg_renew(&via, "A:1", 60, held, 3, &e), 3);
    /* r-01: its lease passes (A stalled) and B takes it over; r-02: A ends it */
    exec_ok(c, "UPDATE dynd_jobs SET leased_until = now() - interval '1 second' WHERE id = 'r-01'");
    srv_jobs_pg_claim cj;
    ck_assert_int_eq(srv_jobs_pg_claim_next(&via, "B:2", 60, &cj, &e), 1);
    ck_assert_str_eq(cj.id, "r-01");
    srv_jobs_pg_claim_clear(&cj);
    ck_assert_int_eq(srv_jobs_pg_write(&via, "r-02", "A:1", 1, "succeeded", NULL, 1, &e), 1);
    exec_ok(c, "UPDATE dynd_jobs SET leased_until = now() + interval '1 second' WHERE id = 'r-00'");
    ck_assert_int_eq(srv_jobs_pg_renew(&via, "A:1", 60, held, 3, &e), 1);
    ck_assert_int_eq(held[0].lost, 0);
    ck_assert_int_eq(held[1].lost, 1);
    ck_assert_int_eq(held[2].lost, 1);
    ck_assert_int_eq(held[0].cancel_requested, 0);
    /* the renewal moved r-00's lease to a minute from now */
    ck_assert_int_gt(query_long(c, "SELECT extract(epoch FROM leased_until - now())::int"
                                   " FROM dynd_jobs WHERE id = 'r-00'"),
                     50);
    /* a cancel of a held job is reported by renew too (a NOTIFY missed while disconnected) */
    ck_assert_int_eq(srv_jobs_pg_cancel(&via, "r-00", &e), SRV_JOBS_PG_CANCEL_REQUESTED);
    ck_assert_int_eq(srv_jobs_pg_renew(&via, "A:1", 60, held, 1, &e), 1);
    ck_assert_int_eq(held[0].cancel_requested, 1);
    /* the same holder claimed r-00 again after its lease passed (gen 2): the stale gen 1 is lost */
    exec_ok(c, "UPDATE dynd_jobs SET leased_until = now() - interval '1 second' WHERE id = 'r-00'");
    ck_assert_int_eq(srv_jobs_pg_claim_next(&via, "A:1", 60, &cj, &e), 1);
    ck_assert_int_eq(cj.gen, 2);
    ck_assert_int_eq(srv_jobs_pg_renew(&via, "A:1", 60, held, 1, &e), 0);
    ck_assert_int_eq(held[0].lost, 1);
    held[0].gen = cj.gen;
    srv_jobs_pg_claim_clear(&cj);
    ck_assert_int_eq(srv_jobs_pg_renew(&via, "A:1", 60, held, 1, &e), 1);
    /* ids that need quoting in an array literal */
    snprintf(held[1].id, sizeof held[1].id, "we\"ird\\id,{x}");
    ck_assert_int_eq(srv_jobs_pg_renew(&via, "A:1", 60, held, 2, &e), 1);
    ck_assert_int_eq(held[1].lost, 1);
    PQfinish(c);
}
END_TEST

/* ---- the loop: srv_pg ---- */

typedef struct loopst {
    uv_loop_t loop;
    uv_timer_t tick;
    int connects, reconnects, disconnects, notified, answered, work;
    srv_pg_status status;
    char payload[64], work_payload[64], msg[512];
    long value;
    int outcome;
} loopst;

static void on_tick(uv_timer_t *t) {
    (void)t;
}

static void on_connect(void *ud, int connected, int reconnected, const char *msg) {
    loopst *s = ud;
    (void)msg;
    if (connected) s->connects++, s->reconnects += reconnected;
    else s->disconnects++;
}

static void on_notify(void *ud, const char *channel, const char *payload) {
    loopst *s = ud;
    if (!strcmp(channel, SRV_JOBS_PG_CANCEL_CHANNEL)) {
        snprintf(s->payload, sizeof s->payload, "%s", payload);
        s->notified++;
    }
    if (!strcmp(channel, SRV_JOBS_PG_WORK_CHANNEL)) {
        snprintf(s->work_payload, sizeof s->work_payload, "%s", payload);
        s->work++;
    }
}

static void on_answer(void *ud, srv_pg_status st, PGresult *res, const char *msg) {
    loopst *s = ud;
    s->status = st;
    s->value = st == SRV_PG_OK && PQntuples(res) ? atol(PQgetvalue(res, 0, 0)) : -1;
    snprintf(s->msg, sizeof s->msg, "%s", msg);
    s->answered++;
}

static void on_outcome(void *ud, int outcome, const dyn_err *err) {
    loopst *s = ud;
    s->outcome = outcome;
    snprintf(s->msg, sizeof s->msg, "%s", err->msg);
    s->answered++;
}

/* Runs the loop until *flag >= want or `seconds` pass; returns *flag >= want. */
static int run_until(loopst *s, int *flag, int want, double seconds) {
    double end = now_s() + seconds;
    while (*flag < want && now_s() < end) uv_run(&s->loop, UV_RUN_ONCE);
    return *flag >= want;
}

static srv_pg *loop_open(loopst *s) {
    memset(s, 0, sizeof *s);
    ck_assert_int_eq(uv_loop_init(&s->loop), 0);
    uv_timer_init(&s->loop, &s->tick);
    uv_timer_start(&s->tick, on_tick, 10, 10); /* UV_RUN_ONCE returns at least this often */
    srv_pg_opts o = {
        .conninfo = tu_pg_conninfo, .on_notify = on_notify, .on_connect = on_connect, .ud = s};
    dyn_err e = {0};
    srv_pg *pg = srv_pg_new(&s->loop, &o, &e);
    ck_assert_msg(pg != NULL, "%s", e.msg);
    ck_assert_int_eq(srv_pg_listen(pg, SRV_JOBS_PG_CANCEL_CHANNEL, &e), 0);
    ck_assert_int_eq(srv_pg_listen(pg, SRV_JOBS_PG_WORK_CHANNEL, &e), 0);
    ck_assert_int_ne(srv_pg_listen(pg, "Bad-Name", &e), 0);
    ck_assert_msg(run_until(s, &s->connects, 1, 10), "no connection");
    return pg;
}

/* Closes pg and checks every libuv handle of it was closed. */
static void loop_close(loopst *s, srv_pg *pg) {
    srv_pg_close(pg);
    uv_close((uv_handle_t *)&s->tick, NULL);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&s->loop), 0);
}

static void query_ok(loopst *s, srv_pg *pg, const char *sql, long want) {
    dyn_err e = {0};
    int before = s->answered;
    ck_assert_int_eq(srv_pg_query(pg, sql, 0, NULL, on_answer, s, &e), 0);
    ck_assert_msg(run_until(s, &s->answered, before + 1, 10), "%s: no answer", sql);
    ck_assert_msg(s->status == SRV_PG_OK, "%s: %d %s", sql, s->status, s->msg);
    ck_assert_int_eq(s->value, want);
}

START_TEST(cancel_notify_within_a_second) {
    PGconn *c = fresh(1);
    insert_jobs(c, 2, "n");
    loopst s;
    srv_pg *pg = loop_open(&s);
    query_ok(&s, pg, "SELECT 1", 1); /* after the LISTEN in the FIFO: it is in force */
    /* the holder claims through the loop (the async path of jobs_pg) */
    srv_jobs_pg_claim cj;
    srv_jobs_pg_via av = {.pg = pg, .cb = on_outcome, .ud = &s};
    dyn_err e = {0};
    ck_assert_int_eq(srv_jobs_pg_claim_next(&av, "H:1", 30, &cj, &e), 0);
    ck_assert_msg(run_until(&s, &s.answered, 2, 10), "claim: no answer");
    ck_assert_msg(s.outcome == 1, "claim: %d %s", s.outcome, s.msg);
    ck_assert_str_eq(cj.id, "n-00");
    srv_jobs_pg_claim_clear(&cj);
    /* another replica cancels it */
    srv_jobs_pg_via sv = {.conn = c};
    double t0 = now_s();
    ck_assert_int_eq(srv_jobs_pg_cancel(&sv, "n-00", &e), SRV_JOBS_PG_CANCEL_REQUESTED);
    ck_assert_msg(run_until(&s, &s.notified, 1, 1.0), "no NOTIFY within 1 s");
    double dt = now_s() - t0;
    ck_assert_str_eq(s.payload, "n-00");
    ck_assert_double_lt(dt, 1.0);
    /* a queued job nobody holds is cancelled at once, without a notification; then finished */
    ck_assert_int_eq(srv_jobs_pg_cancel(&sv, "n-01", &e), SRV_JOBS_PG_CANCELLED);
    ck_assert_int_eq(srv_jobs_pg_cancel(&sv, "n-01", &e), SRV_JOBS_PG_FINISHED);
    ck_assert_int_eq(srv_jobs_pg_cancel(&sv, "zz", &e), SRV_JOBS_PG_NOT_FOUND);
    query_ok(&s, pg, "SELECT 2", 2);
    ck_assert_int_eq(s.notified, 1);
    /* retention: of 4 cancelled jobs the 2 most recently finished are kept, running ones stay */
    insert_jobs(c, 4, "p");
    for (int i = 0; i < 4; i++) {
        char id[16];
        snprintf(id, sizeof id, "p-%02d", i);
        ck_assert_int_eq(srv_jobs_pg_cancel(&sv, id, &e), SRV_JOBS_PG_CANCELLED);
    }
    ck_assert_int_eq(srv_jobs_pg_prune(&sv, 2, &e), 3); /* n-01 and p-00, p-01 */
    json_t *l = NULL;
    ck_assert_int_eq(srv_jobs_pg_list(&sv, "cancelled", NULL, &l, &e), 2);
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(l, 0), "id")), "p-03");
    ck_assert_str_eq(json_string_value(json_object_get(json_array_get(l, 1), "id")), "p-02");
    json_decref(l);
    ck_assert_int_eq(srv_jobs_pg_list(&sv, NULL, NULL, &l, &e), 3);
    json_decref(l);
    /* an SQL error is reported as such, with its SQLSTATE, and the connection goes on */
    int before = s.answered;
    ck_assert_int_eq(srv_pg_query(pg, "SELECT nonsense", 0, NULL, on_answer, &s, &e), 0);
    ck_assert(run_until(&s, &s.answered, before + 1, 10));
    ck_assert_msg(strstr(s.msg, "nonsense"), "%s", s.msg);
    ck_assert_int_eq(s.status, SRV_PG_SQL);
    /* refused by libpq before sending (too many parameters): answered on the loop, not inside
     * srv_pg_query, as SRV_PG_SQL */
    static const char *many[70000];
    before = s.answered;
    ck_assert_int_eq(srv_pg_query(pg, "SELECT 1", 70000, many, on_answer, &s, &e), 0);
    ck_assert_int_eq(s.answered, before);
    ck_assert(run_until(&s, &s.answered, before + 1, 10));
    ck_assert_int_eq(s.status, SRV_PG_SQL);
    query_ok(&s, pg, "SELECT 3", 3);
    loop_close(&s, pg);
    PQfinish(c);
}
END_TEST

START_TEST(claim_by_id_unheld_writes_work_notify) {
    PGconn *c = fresh(1);
    loopst s;
    srv_pg *pg = loop_open(&s);
    query_ok(&s, pg, "SELECT 1", 1); /* the LISTENs are in force */
    srv_jobs_pg_via via = {.conn = c};
    dyn_err e = {0};
    /* a new job is announced on the work channel; inserting it again changes nothing */
    insert_jobs(c, 1, "w");
    ck_assert_msg(run_until(&s, &s.work, 1, 1.0), "no work NOTIFY for an insert");
    ck_assert_str_eq(s.work_payload, "w-00");
    json_t *spec = json_object();
    ck_assert_int_eq(srv_jobs_pg_insert(&via, "w-00", "conversion", spec, NULL, &e), 1);
    json_decref(spec);
    /* claim by id: taken, kept by the same holder, refused to another while alive */
    ck_assert_int_eq(srv_jobs_pg_claim_id(&via, "w-00", "A:1", 1.0, &e), 1);
    ck_assert_int_eq(srv_jobs_pg_claim_id(&via, "w-00", "A:1", 1.0, &e), 1);
    ck_assert_int_eq(srv_jobs_pg_claim_id(&via, "w-00", "B:2", 30, &e), 0);
    ck_assert_int_eq(srv_jobs_pg_claim_id(&via, "nope", "B:2", 30, &e), 0);
    /* a write by no holder is refused while A holds it */
    json_t *rec = json_pack("{s:s}", "state", "queued");
    ck_assert_int_eq(srv_jobs_pg_write(&via, "w-00", "", 0, "queued", rec, 0, &e), 0);
    usleep(1100 * 1000);
    ck_assert_int_eq(srv_jobs_pg_claim_id(&via, "w-00", "B:2", 30, &e), 2);
    /* B hands it back queued: announced again; then a write by no holder is allowed (and, as
     * it leaves the job queued and unheld, announced) */
    ck_assert_int_eq(srv_jobs_pg_write(&via, "w-00", "B:2", 2, "queued", NULL, 1, &e), 1);
    ck_assert_msg(run_until(&s, &s.work, 2, 1.0), "no work NOTIFY for a release");
    ck_assert_int_eq(srv_jobs_pg_write(&via, "w-00", "", 0, "queued", rec, 0, &e), 1);
    ck_assert_msg(run_until(&s, &s.work, 3, 1.0), "no work NOTIFY for a write leaving it queued");
    json_decref(rec);
    /* a release in a final state is not announced */
    ck_assert_int_eq(srv_jobs_pg_claim_id(&via, "w-00", "B:2", 30, &e), 3);
    ck_assert_int_eq(srv_jobs_pg_write(&via, "w-00", "B:2", 3, "succeeded", NULL, 1, &e), 1);
    query_ok(&s, pg, "SELECT 2", 2);
    ck_assert_int_eq(s.work, 3);
    ck_assert_int_eq(srv_jobs_pg_delete(&via, "w-00", &e), 1);
    ck_assert_int_eq(srv_jobs_pg_delete(&via, "w-00", &e), 0);
    loop_close(&s, pg);
    PQfinish(c);
}
END_TEST

static void *restart_main(void *arg) {
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "%s restart %s", tu_pg_harness, tu_pg_dir);
    *(int *)arg = system(cmd);
    return NULL;
}

static void restart_server(void) {
    int rc = -1;
    restart_main(&rc);
    ck_assert_int_eq(rc, 0);
}

START_TEST(reconnect_after_restart) {
    PGconn *c = fresh(1);
    loopst s;
    srv_pg *pg = loop_open(&s);
    query_ok(&s, pg, "SELECT 1", 1);
    srv_pgsync sync;
    dyn_err e = {0};
    ck_assert_int_eq(srv_pgsync_init(&sync, tu_pg_conninfo, &e), 0);
    PGconn *sc = srv_pgsync_lock(&sync, &e);
    ck_assert_ptr_nonnull(sc);
    PQclear(srv_pg_exec(sc, "select", "SELECT 1", 0, NULL, &e));
    srv_pgsync_unlock(&sync);
    PQfinish(c);

    restart_server();

    /* the loop: a query now finds the old connection gone (LOST or DOWN: not run) or the
     * new one (OK); the next one, once connected again, succeeds */
    int before = s.answered;
    ck_assert_int_eq(srv_pg_query(pg, "SELECT 5", 0, NULL, on_answer, &s, &e), 0);
    ck_assert(run_until(&s, &s.answered, before + 1, 15));
    ck_assert_msg(s.status == SRV_PG_OK || s.status == SRV_PG_LOST || s.status == SRV_PG_DOWN,
                  "%d %s", s.status, s.msg);
    ck_assert_msg(run_until(&s, &s.connects, 2, 15), "no reconnection");
    ck_assert_int_eq(s.reconnects, 1);
    query_ok(&s, pg, "SELECT 6", 6);
    /* the LISTEN was issued again: a cancel NOTIFY still arrives */
    c = connect_ok();
    exec_ok(c, "NOTIFY " SRV_JOBS_PG_CANCEL_CHANNEL ", 'after-restart'");
    ck_assert_msg(run_until(&s, &s.notified, 1, 1.0), "no NOTIFY after the reconnection");
    ck_assert_str_eq(s.payload, "after-restart");

    /* restarted again while the loop runs and the connection is idle: the loss is noticed
     * without a query, and the connection comes back */
    int rc = -1, lost = s.disconnects;
    pthread_t t;
    pthread_create(&t, NULL, restart_main, &rc);
    ck_assert_msg(run_until(&s, &s.disconnects, lost + 1, 15), "idle loss not noticed");
    ck_assert_msg(run_until(&s, &s.connects, 3, 15), "no second reconnection");
    pthread_join(t, NULL);
    ck_assert_int_eq(rc, 0);
    query_ok(&s, pg, "SELECT 8", 8);
    PQfinish(c);
    c = connect_ok();

    /* the sync helper: the statement that finds the connection broken fails, the next
     * lock connects again */
    int ok = 0;
    for (int attempt = 0; attempt < 2 && !ok; attempt++) {
        sc = srv_pgsync_lock(&sync, &e);
        ck_assert_msg(sc != NULL, "%s", e.msg);
        PGresult *r = srv_pg_exec(sc, "select", "SELECT 7", 0, NULL, &e);
        ok = r && atoi(PQgetvalue(r, 0, 0)) == 7;
        PQclear(r);
        srv_pgsync_unlock(&sync);
    }
    ck_assert_msg(ok, "sync connection not back: %s", e.msg);
    srv_pgsync_free(&sync);
    loop_close(&s, pg);
    PQfinish(c);
}
END_TEST

START_TEST(unreachable_timeout_closed) {
    /* a server that is not there: queries fail DOWN (never sent), close fails the rest */
    loopst s;
    memset(&s, 0, sizeof s);
    ck_assert_int_eq(uv_loop_init(&s.loop), 0);
    uv_timer_init(&s.loop, &s.tick);
    uv_timer_start(&s.tick, on_tick, 10, 10);
    srv_pg_opts o = {.conninfo = "host=127.0.0.1 port=1 connect_timeout=2", .ud = &s};
    dyn_err e = {0};
    srv_pg *pg = srv_pg_new(&s.loop, &o, &e);
    ck_assert_ptr_nonnull(pg);
    ck_assert_int_eq(srv_pg_query(pg, "SELECT 1", 0, NULL, on_answer, &s, &e), 0);
    ck_assert(run_until(&s, &s.answered, 1, 10));
    ck_assert_int_eq(s.status, SRV_PG_DOWN);
    ck_assert_msg(strstr(s.msg, "unreachable"), "%s", s.msg);
    ck_assert_int_eq(srv_pg_connected(pg), 0);
    ck_assert_int_eq(srv_pg_query(pg, "SELECT 2", 0, NULL, on_answer, &s, &e), 0);
    srv_pg_close(pg); /* answers SELECT 2 now */
    ck_assert_int_eq(s.answered, 2);
    ck_assert_int_eq(s.status, SRV_PG_CLOSED);
    uv_close((uv_handle_t *)&s.tick, NULL);
    uv_run(&s.loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&s.loop), 0);
    /* a server that accepts TCP connections but never answers: connect_timeout fails the
     * attempt (PQconnectPoll alone would wait for ever) */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t sl = sizeof sa;
    ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    ck_assert_int_eq(listen(fd, 4), 0);
    ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char ci[128];
    snprintf(ci, sizeof ci, "host=127.0.0.1 port=%d connect_timeout=2", ntohs(sa.sin_port));
    memset(&s, 0, sizeof s);
    ck_assert_int_eq(uv_loop_init(&s.loop), 0);
    uv_timer_init(&s.loop, &s.tick);
    uv_timer_start(&s.tick, on_tick, 10, 10);
    o.conninfo = ci;
    pg = srv_pg_new(&s.loop, &o, &e);
    ck_assert_ptr_nonnull(pg);
    double t0 = now_s();
    ck_assert_int_eq(srv_pg_query(pg, "SELECT 1", 0, NULL, on_answer, &s, &e), 0);
    ck_assert(run_until(&s, &s.answered, 1, 10));
    ck_assert_int_eq(s.status, SRV_PG_DOWN);
    ck_assert_msg(strstr(s.msg, "connect_timeout"), "%s", s.msg);
    ck_assert_double_lt(now_s() - t0, 4.0);
    srv_pg_close(pg);
    uv_close((uv_handle_t *)&s.tick, NULL);
    uv_run(&s.loop, UV_RUN_DEFAULT);
    ck_assert_int_eq(uv_loop_close(&s.loop), 0);
    close(fd);
    /* a conninfo that does not parse */
    o.conninfo = "nonsense_key=1";
    ck_assert_ptr_null(srv_pg_new(&s.loop, &o, &e));
    ck_assert_msg(strstr(e.msg, "connection string"), "%s", e.msg);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("srv_pg");
    TCase *tc = tcase_create("pg");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, schema_migrations);
    tcase_add_test(tc, concurrent_claims_once_each);
    tcase_add_test(tc, takeover_and_fenced_writes);
    tcase_add_test(tc, renew_reports_lost_leases);
    tcase_add_test(tc, cancel_notify_within_a_second);
    tcase_add_test(tc, claim_by_id_unheld_writes_work_notify);
    tcase_add_test(tc, reconnect_after_restart);
    tcase_add_test(tc, unreachable_timeout_closed);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) { return tu_pg_main("test_srv_pg", suite); }
