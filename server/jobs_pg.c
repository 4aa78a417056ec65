/* jobs_pg.c — the jobs table on PostgreSQL: migrations and one statement per operation
 * (jobs_pg.h has the schema and the guarantees). Each operation is its SQL, its text
 * parameters and a parser of its result, run by run() synchronously on a PGconn or through
 * the loop's srv_pg; both paths share the parser, so they cannot disagree.
 */
#include "server/jobs_pg.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Migration v (1-based) brings the schema from version v-1 to v. Append only: a released
 * migration is never edited (databases have applied it). */
static const char *const MIGRATIONS[SRV_JOBS_PG_SCHEMA_VERSION] = {
    /* 1: the jobs table */
    "CREATE TABLE dynd_jobs ("
    " id text PRIMARY KEY,"
    " kind text NOT NULL,"
    " state text NOT NULL,"
    " spec jsonb NOT NULL,"
    " record jsonb NOT NULL DEFAULT '{}',"
    " holder text,"
    " leased_until timestamptz,"
    " renewed_at timestamptz,"
    " lease_gen integer NOT NULL DEFAULT 0,"
    " cancel_requested boolean NOT NULL DEFAULT false,"
    " created_at timestamptz NOT NULL DEFAULT clock_timestamp(),"
    " updated_at timestamptz NOT NULL DEFAULT clock_timestamp())",
    /* 2: claims scan the unfinished jobs, oldest first */
    "CREATE INDEX dynd_jobs_claimable ON dynd_jobs (created_at, id)"
    " WHERE state IN ('queued', 'running')",
};

/* Any 64-bit number all dynd replicas agree on ("dyndjobs" in ASCII). */
#define MIGRATE_LOCK "7311150265508553331"

typedef int (*parse_fn)(PGresult *res, void *out, int n, dyn_err *err);

typedef struct actx {
    parse_fn parse;
    void *out;
    int n;
    srv_jobs_pg_cb cb;
    void *ud;
    const char *what; /* a string literal */
} actx;

static void on_result(void *ud, srv_pg_status st, PGresult *res, const char *msg) {
    actx *a = ud;
    dyn_err e = {0};
    int rc = st == SRV_PG_OK ? a->parse(res, a->out, a->n, &e)
                             : srv_pg_seterr(&e, a->what, msg, res);
    a->cb(a->ud, rc, &e);
    free(a);
}

/* Runs one statement as `via` says (jobs_pg.h "Calls"); parse(res, out, n, err) turns its
 * result into the outcome. */
static int run(const srv_jobs_pg_via *via, const char *what, const char *sql, int nparams,
               const char *const *params, parse_fn parse, void *out, int n, dyn_err *err) {
    if (via->conn) {
        PGresult *r = srv_pg_exec(via->conn, what, sql, nparams, params, err);
        if (!r) return DYN_EIO;
        int rc = parse(r, out, n, err);
        PQclear(r);
        return rc;
    }
    if (!via->pg || !via->cb)
        return dyn_err_set(err, DYN_EINVAL, "%s: neither a connection nor a loop and callback",
                           what);
    actx *a = malloc(sizeof *a);
    if (!a) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    *a = (actx){parse, out, n, via->cb, via->ud, what};
    int rc = srv_pg_query(via->pg, sql, nparams, params, on_result, a, err);
    if (rc) free(a);
    return rc;
}

/* ---- migrations ---- */

static int exec_checked(PGconn *c, const char *what, const char *sql, dyn_err *err) {
    PGresult *r = srv_pg_exec(c, what, sql, 0, NULL, err);
    PQclear(r);
    return r ? 0 : DYN_EIO;
}

int srv_jobs_pg_migrate(PGconn *c, int target, dyn_err *err) {
    if (target <= 0) target = SRV_JOBS_PG_SCHEMA_VERSION;
    if (target > SRV_JOBS_PG_SCHEMA_VERSION)
        return dyn_err_set(err, DYN_EINVAL, "jobs schema version %d: this dynd knows up to %d",
                           target, SRV_JOBS_PG_SCHEMA_VERSION);
    const char *what = "creating the jobs schema";
    if (exec_checked(c, what, "BEGIN", err)) return DYN_EIO;
    int version = -1;
    PGresult *r = NULL;
    if (exec_checked(c, what, "SELECT pg_advisory_xact_lock(" MIGRATE_LOCK ")", err) ||
        exec_checked(c, what,
                     "CREATE TABLE IF NOT EXISTS dynd_schema_version ("
                     " id integer PRIMARY KEY CHECK (id = 1), version integer NOT NULL)", err) ||
        exec_checked(c, what,
                     "INSERT INTO dynd_schema_version VALUES (1, 0) ON CONFLICT DO NOTHING", err) ||
        !(r = srv_pg_exec(c, what, "SELECT version FROM dynd_schema_version", 0, NULL, err)))
        goto fail;
    version = atoi(PQgetvalue(r, 0, 0));
    PQclear(r);
    if (version > SRV_JOBS_PG_SCHEMA_VERSION) {
        dyn_err_set(err, DYN_EIO, "the database's jobs schema is version %d, newer than this "
                    "dynd's %d: run a dynd at least as new as the replicas that upgraded it",
                    version, SRV_JOBS_PG_SCHEMA_VERSION);
        goto fail;
    }
    for (; version < target; version++) {
        char v[16];
        snprintf(v, sizeof v, "%d", version + 1);
        const char *p[] = {v};
        if (exec_checked(c, "migrating the jobs schema", MIGRATIONS[version], err) ||
            !(r = srv_pg_exec(c, what, "UPDATE dynd_schema_version SET version = $1::int", 1, p,
                              err))) {
            dyn_err_prefix(err, "to version %d", version + 1);
            goto fail;
        }
        PQclear(r);
    }
    if (exec_checked(c, what, "COMMIT", err)) return DYN_EIO;
    return version;
fail:
    PQclear(PQexec(c, "ROLLBACK"));
    return DYN_EIO;
}

/* ---- parsers ---- */

/* The rows a statement changed. */
static int parse_count(PGresult *res, void *out, int n, dyn_err *err) {
    (void)out, (void)n, (void)err;
    return atoi(PQcmdTuples(res));
}

static int parse_affected(PGresult *res, void *out, int n, dyn_err *err) {
    return parse_count(res, out, n, err) > 0;
}

/* The first column of the first row: a count, or a boolean as 0 / 1. */
static int parse_first(PGresult *res, void *out, int n, dyn_err *err) {
    (void)out, (void)n, (void)err;
    const char *v = PQgetvalue(res, 0, 0);
    return v[0] == 't' ? 1 : v[0] == 'f' ? 0 : atoi(v);
}

static void copy_field(char *dst, size_t cap, PGresult *res, int row, int col) {
    snprintf(dst, cap, "%s", PQgetisnull(res, row, col) ? "" : PQgetvalue(res, row, col));
}

static json_t *json_field(PGresult *res, int row, int col, const char *what, dyn_err *err) {
    json_error_t je;
    json_t *j = json_loads(PQgetvalue(res, row, col), JSON_DECODE_ANY, &je);
    if (!j) dyn_err_set(err, DYN_EFORMAT, "%s from PostgreSQL: %s", what, je.text);
    return j;
}

static int is_true(PGresult *res, int row, int col) {
    return !PQgetisnull(res, row, col) && PQgetvalue(res, row, col)[0] == 't';
}

void srv_jobs_pg_claim_clear(srv_jobs_pg_claim *c) {
    json_decref(c->spec);
    json_decref(c->record);
    memset(c, 0, sizeof *c);
}

/* Columns: id, kind, spec, record, lease_gen, cancel_requested, prev_holder. */
static int parse_claim(PGresult *res, void *out, int n, dyn_err *err) {
    (void)n;
    srv_jobs_pg_claim *c = out;
    memset(c, 0, sizeof *c);
    if (PQntuples(res) == 0) return 0;
    copy_field(c->id, sizeof c->id, res, 0, 0);
    copy_field(c->kind, sizeof c->kind, res, 0, 1);
    c->gen = atoi(PQgetvalue(res, 0, 4));
    c->cancel_requested = is_true(res, 0, 5);
    c->taken_over = !PQgetisnull(res, 0, 6);
    copy_field(c->prev_holder, sizeof c->prev_holder, res, 0, 6);
    if (!(c->spec = json_field(res, 0, 2, "a job's spec", err)) ||
        !(c->record = json_field(res, 0, 3, "a job's record", err))) {
        /* claimed but unreadable: the lease passes and another replica reports it too */
        srv_jobs_pg_claim_clear(c);
        return DYN_EFORMAT;
    }
    return 1;
}

/* Rows: id, cancel_requested of each lease renewed; the others are lost. */
static int parse_renew(PGresult *res, void *out, int n, dyn_err *err) {
    (void)err;
    srv_jobs_pg_lease *held = out;
    for (int i = 0; i < n; i++) held[i].lost = 1, held[i].cancel_requested = 0;
    int kept = 0;
    for (int r = 0; r < PQntuples(res); r++)
        for (int i = 0; i < n; i++)
            if (held[i].lost && !strcmp(held[i].id, PQgetvalue(res, r, 0))) {
                held[i].lost = 0;
                held[i].cancel_requested = is_true(res, r, 1);
                kept++;
                break;
            }
    return kept;
}

/* One row: the state before (NULL: no such job), the state after the update (NULL: nothing
 * to cancel). */
static int parse_cancel(PGresult *res, void *out, int n, dyn_err *err) {
    (void)out, (void)n, (void)err;
    if (PQgetisnull(res, 0, 0)) return SRV_JOBS_PG_NOT_FOUND;
    if (PQgetisnull(res, 0, 1)) return SRV_JOBS_PG_FINISHED;
    return strcmp(PQgetvalue(res, 0, 1), "cancelled") ? SRV_JOBS_PG_CANCEL_REQUESTED
                                                      : SRV_JOBS_PG_CANCELLED;
}

/* get: zero or one row of JSON text; list: one row, a JSON array. */
static int parse_json(PGresult *res, void *out, int n, dyn_err *err) {
    (void)n;
    json_t **j = out;
    *j = NULL;
    if (PQntuples(res) == 0) return 0;
    if (!(*j = json_field(res, 0, 0, "jobs", err))) return DYN_EFORMAT;
    return json_is_array(*j) ? (int)json_array_size(*j) : 1;
}

/* ---- operations ---- */

/* A JSON value as text for a parameter (NULL: SQL NULL); *buf is what to free. */
static int json_param(const json_t *j, char **buf, dyn_err *err) {
    *buf = NULL;
    if (j && !(*buf = json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY)))
        return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    return 0;
}

int srv_jobs_pg_insert(const srv_jobs_pg_via *via, const char *id, const char *kind,
                       const json_t *spec, const json_t *record, dyn_err *err) {
    char *s, *r = NULL;
    if (json_param(spec, &s, err) || json_param(record, &r, err)) {
        free(s);
        return DYN_ENOMEM;
    }
    const char *p[] = {id, kind, s, r};
    int rc = run(via, "inserting a job",
                 "WITH i AS ("
                 "  INSERT INTO dynd_jobs (id, kind, state, spec, record)"
                 "  VALUES ($1, $2, 'queued', $3::jsonb, coalesce($4::jsonb, '{}'))"
                 "  ON CONFLICT (id) DO NOTHING RETURNING id),"
                 " n AS (SELECT pg_notify('" SRV_JOBS_PG_WORK_CHANNEL "', id) FROM i)"
                 " SELECT (SELECT count(*) FROM i) = 0, (SELECT count(*) FROM n)",
                 4, p, parse_first, NULL, 0, err);
    free(s);
    free(r);
    return rc;
}

int srv_jobs_pg_claim_next(const srv_jobs_pg_via *via, const char *holder, double lease_s,
                           srv_jobs_pg_claim *out, dyn_err *err) {
    char secs[32];
    snprintf(secs, sizeof secs, "%.3f", lease_s);
    const char *p[] = {holder, secs};
    return run(via, "claiming a job",
               "WITH c AS ("
               "  SELECT id, holder AS prev_holder FROM dynd_jobs"
               "   WHERE (state = 'queued' AND (holder IS NULL OR leased_until < now()))"
               "      OR (state = 'running' AND leased_until < now())"
               "   ORDER BY created_at, id LIMIT 1"
               "   FOR UPDATE SKIP LOCKED)"
               " UPDATE dynd_jobs j SET holder = $1,"
               "   leased_until = now() + make_interval(secs => $2::float8), renewed_at = now(),"
               "   lease_gen = j.lease_gen + 1, updated_at = now()"
               "  FROM c WHERE j.id = c.id"
               " RETURNING j.id, j.kind, j.spec::text, j.record::text, j.lease_gen,"
               "   j.cancel_requested, c.prev_holder",
               2, p, parse_claim, out, 0, err);
}

int srv_jobs_pg_claim_id(const srv_jobs_pg_via *via, const char *id, const char *holder,
                         double lease_s, dyn_err *err) {
    char secs[32];
    snprintf(secs, sizeof secs, "%.3f", lease_s);
    const char *p[] = {id, holder, secs};
    return run(via, "claiming a job",
               "WITH u AS ("
               "  UPDATE dynd_jobs SET holder = $2,"
               "    leased_until = now() + make_interval(secs => $3::float8), renewed_at = now(),"
               "    lease_gen = CASE WHEN holder = $2 THEN lease_gen ELSE lease_gen + 1 END,"
               "    updated_at = now()"
               "   WHERE id = $1 AND (holder IS NULL OR holder = $2 OR leased_until < now())"
               "  RETURNING lease_gen)"
               " SELECT coalesce((SELECT lease_gen FROM u), 0)",
               3, p, parse_first, NULL, 0, err);
}

int srv_jobs_pg_delete(const srv_jobs_pg_via *via, const char *id, dyn_err *err) {
    const char *p[] = {id};
    return run(via, "deleting a job", "DELETE FROM dynd_jobs WHERE id = $1", 1, p, parse_affected,
               NULL, 0, err);
}

/* Appends s (at most 63 bytes of it: ids are char[64]) to the array literal b[0..len), begun
 * with '{', as an element (quoted and escaped when `quote`); returns the new length. The caller
 * sized b: 130 bytes per element. */
static size_t array_elem(char *b, size_t len, const char *s, int quote) {
    if (len > 1) b[len++] = ',';
    if (quote) b[len++] = '"';
    for (size_t k = 0; k < 63 && s[k]; k++) {
        if (s[k] == '"' || s[k] == '\\') b[len++] = '\\';
        b[len++] = s[k];
    }
    if (quote) b[len++] = '"';
    return len;
}

int srv_jobs_pg_renew(const srv_jobs_pg_via *via, const char *holder, double lease_s,
                      srv_jobs_pg_lease *held, int n, dyn_err *err) {
    size_t cap = (size_t)n * 130 + 3, len = 1, glen = 1;
    char *ids = malloc(cap), *gens = malloc(cap);
    if (!ids || !gens) {
        free(ids), free(gens);
        return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    }
    ids[0] = gens[0] = '{';
    for (int i = 0; i < n; i++) {
        char g[16];
        snprintf(g, sizeof g, "%d", held[i].gen);
        len = array_elem(ids, len, held[i].id, 1);
        glen = array_elem(gens, glen, g, 0);
    }
    ids[len++] = '}', ids[len] = 0;
    gens[glen++] = '}', gens[glen] = 0;
    char secs[32];
    snprintf(secs, sizeof secs, "%.3f", lease_s);
    const char *p[] = {holder, secs, ids, gens};
    int rc = run(via, "renewing job leases",
                 "UPDATE dynd_jobs j SET leased_until = now() + make_interval(secs => $2::float8),"
                 "   renewed_at = now()"
                 "  FROM unnest($3::text[], $4::int[]) AS h(id, gen)"
                 " WHERE j.id = h.id AND j.lease_gen = h.gen AND j.holder = $1"
                 "   AND j.state IN ('queued', 'running')"
                 " RETURNING j.id, j.cancel_requested",
                 4, p, parse_renew, held, n, err);
    free(ids);
    free(gens);
    return rc;
}

int srv_jobs_pg_write(const srv_jobs_pg_via *via, const char *id, const char *holder, int gen,
                      const char *state, const json_t *record, int release, dyn_err *err) {
    char *r, g[16];
    if (json_param(record, &r, err)) return DYN_ENOMEM;
    snprintf(g, sizeof g, "%d", gen);
    const char *p[] = {id, holder, g, state, r, release ? "t" : "f"};
    int rc = run(via, "writing a job's record",
                 "WITH u AS ("
                 "  UPDATE dynd_jobs SET state = coalesce($4, state),"
                 "    record = coalesce($5::jsonb, record), updated_at = now(),"
                 "    holder = CASE WHEN $6::bool THEN NULL ELSE holder END,"
                 "    leased_until = CASE WHEN $6::bool THEN NULL ELSE leased_until END"
                 "   WHERE id = $1 AND CASE WHEN $3::int = 0"
                 "     THEN holder IS NULL OR leased_until < now()"
                 "     ELSE holder = $2 AND lease_gen = $3::int END"
                 "  RETURNING id, state, holder),"
                 " n AS (SELECT pg_notify('" SRV_JOBS_PG_WORK_CHANNEL "', id) FROM u"
                 "       WHERE holder IS NULL AND state = 'queued')"
                 " SELECT (SELECT count(*) FROM u), (SELECT count(*) FROM n)",
                 6, p, parse_first, NULL, 0, err);
    free(r);
    return rc;
}

int srv_jobs_pg_cancel(const srv_jobs_pg_via *via, const char *id, dyn_err *err) {
    const char *p[] = {id};
    /* "alive": a holder whose lease has not passed. The NOTIFY is sent at commit. */
    return run(via, "cancelling a job",
               "WITH u AS ("
               "  UPDATE dynd_jobs j SET cancel_requested = true, updated_at = now(),"
               "    state = CASE WHEN j.holder IS NOT NULL AND j.leased_until >= now()"
               "                 THEN j.state ELSE 'cancelled' END,"
               "    holder = CASE WHEN j.leased_until >= now() THEN j.holder END,"
               "    leased_until = CASE WHEN j.holder IS NOT NULL AND j.leased_until >= now()"
               "                        THEN j.leased_until END"
               "   WHERE j.id = $1 AND j.state IN ('queued', 'running', 'interrupted')"
               "  RETURNING j.id, j.state),"
               " n AS (SELECT pg_notify('" SRV_JOBS_PG_CANCEL_CHANNEL "', id) FROM u"
               "       WHERE state <> 'cancelled')"
               " SELECT (SELECT state FROM dynd_jobs WHERE id = $1), (SELECT state FROM u),"
               "        (SELECT count(*) FROM n)",
               1, p, parse_cancel, NULL, 0, err);
}

int srv_jobs_pg_prune(const srv_jobs_pg_via *via, int keep, dyn_err *err) {
    char k[16];
    snprintf(k, sizeof k, "%d", keep < 0 ? 0 : keep);
    const char *p[] = {k};
    return run(via, "pruning finished jobs",
               "DELETE FROM dynd_jobs WHERE id IN ("
               "  SELECT id FROM dynd_jobs WHERE state IN ('succeeded', 'failed', 'cancelled')"
               "   ORDER BY updated_at DESC, id OFFSET $1::int)",
               1, p, parse_count, NULL, 0, err);
}

/* The columns of a job as the API shows it (jobs_pg.h, srv_jobs_pg_get). */
#define JOB_JSON                                                                               \
    "SELECT id, kind, state, spec, record, holder, lease_gen, cancel_requested, created_at,"    \
    " updated_at, leased_until,"                                                               \
    " CASE WHEN holder IS NOT NULL THEN extract(epoch FROM now() - renewed_at)::float8 END"    \
    "   AS lease_age_s,"                                                                       \
    " holder IS NOT NULL AND leased_until < now() AS lease_expired FROM dynd_jobs"

int srv_jobs_pg_get(const srv_jobs_pg_via *via, const char *id, json_t **out, dyn_err *err) {
    const char *p[] = {id};
    return run(via, "reading a job",
               "SELECT row_to_json(x)::text FROM (" JOB_JSON " WHERE id = $1) x", 1, p,
               parse_json, out, 0, err);
}

int srv_jobs_pg_list(const srv_jobs_pg_via *via, const char *state, const char *kind,
                     json_t **out, dyn_err *err) {
    const char *p[] = {state, kind};
    return run(via, "listing jobs",
               "SELECT coalesce(json_agg(row_to_json(x) ORDER BY x.created_at DESC, x.id),"
               " '[]')::text FROM (" JOB_JSON
               " WHERE ($1::text IS NULL OR state = $1) AND ($2::text IS NULL OR kind = $2)) x",
               2, p, parse_json, out, 0, err);
}
