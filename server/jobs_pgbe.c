/* jobs_pgbe.c — the jobs backend on PostgreSQL (jobs_backend = postgres; the interface is
 * server/jobs_backend.h, the SQL server/jobs_pg.c). Two connections:
 *
 *   sync   a srv_pgsync (one PGconn behind a mutex) for the record and lease calls, which may
 *          come from any thread and block for one statement;
 *   async  a srv_pg on the loop (start .. stop): LISTEN on the cancel and work channels, and the
 *          loop-thread calls that must not block it (claim_next, renew).
 *
 * Mapping. A lease token is the row's lease_gen; every record write names (holder, lease_gen)
 * and is refused (DYN_ECANCEL) once another replica took the job over. create inserts the row
 * and claims it for us in one transaction, so that no other replica's claim_next (woken by the
 * insert's NOTIFY) can take a job its submitter is about to queue. The row's state column
 * follows the record's "state"; a cancel of a job nobody held alive ends the row at once
 * (jobs_pg.h), and record_read then shows the record as cancelled.
 *
 * Events. The leases this process holds are kept in a small table (id, gen) with what was
 * delivered for each: a cancel NOTIFY is passed on only for a job held here (every replica
 * hears every NOTIFY; passing on the others would have jobs.c ask again, forever), and
 * cancel_requested / lease_lost reach jobs.c once per (job, lease) whether they come from a
 * NOTIFY or from renew. After stop nothing is delivered: stop clears `started` before
 * srv_pg_close, whose SRV_PG_CLOSED answers of the queries in flight only free their contexts.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "server/jobs_impl.h"
#include "server/jobs_pg.h"
#include "server/log.h"
#include "server/pg.h"

typedef struct held_lease {
    char id[64];
    long long gen;
    int held;            /* 0 once released or lost (the entry remembers what was delivered) */
    int cancel_sent, lost_sent;
    double ok_at;        /* dyn_now() when a claim or a renewal that kept the lease was sent */
} held_lease;

typedef struct pg_state {
    char *conninfo;
    char where[400]; /* srv_jobs_pg_conninfo_describe, for messages */
    char holder[160];
    double lease_s;
    srv_pgsync sync;
    /* loop thread only */
    uv_loop_t *loop;
    srv_pg *pg;
    srv_jobs_backend_events ev;
    int started;
    int renewing; /* a renew is in flight */
    int down;     /* the async connection's last attempt failed (log once) */
    /* the leases held here (any thread) */
    pthread_mutex_t mu;
    held_lease *leases;
    int nleases, cap;
} pg_state;

/* ---- conninfo ---- */

void srv_jobs_pg_conninfo_describe(const char *conninfo, char *buf, size_t n) {
    static const struct {
        const char *key, *env, *def;
    } K[] = {{"host", "PGHOST", "local socket"},
             {"port", "PGPORT", "5432"},
             {"dbname", "PGDATABASE", NULL},
             {"user", "PGUSER", NULL}};
    const char *vals[4] = {0};
    char *perr = NULL;
    PQconninfoOption *opts = PQconninfoParse(conninfo ? conninfo : "", &perr);
    for (PQconninfoOption *o = opts; o && o->keyword; o++)
        for (size_t k = 0; k < DYN_ARRAY_LEN(K); k++)
            if (!strcmp(o->keyword, K[k].key) && o->val && o->val[0]) vals[k] = o->val;
    size_t len = 0;
    buf[0] = 0;
    for (size_t k = 0; k < DYN_ARRAY_LEN(K) && len < n; k++) {
        const char *v = vals[k] ? vals[k] : getenv(K[k].env);
        if (!v || !*v) v = K[k].def;
        if (k == 2 && !v) v = vals[3] ? vals[3] : getenv("PGUSER"); /* libpq: dbname = user */
        if (!v) continue;
        int w = snprintf(buf + len, n - len, "%s%s=%s", len ? " " : "", K[k].key, v);
        if (w > 0) len += (size_t)w;
    }
    if (perr) {
        snprintf(buf + (len < n ? len : n - 1), n - (len < n ? len : n - 1),
                 "%s(unparsable conninfo)", len ? " " : "");
        PQfreemem(perr);
    }
    PQconninfoFree(opts);
}

/* ---- the table of leases held here ---- */

/* The entry of id (s->mu held), or NULL; add: made when missing (NULL on ENOMEM). */
static held_lease *lease_find_locked(pg_state *s, const char *id, int add) {
    for (int i = 0; i < s->nleases; i++)
        if (!strcmp(s->leases[i].id, id)) return &s->leases[i];
    if (!add) return NULL;
    if (s->nleases == s->cap) {
        /* entries of leases no longer held go first: they only remember deliveries */
        int w = 0;
        for (int i = 0; i < s->nleases; i++)
            if (s->leases[i].held) s->leases[w++] = s->leases[i];
        s->nleases = w;
    }
    if (s->nleases == s->cap) {
        int cap = s->cap ? 2 * s->cap : 16;
        held_lease *a = realloc(s->leases, sizeof *a * (size_t)cap);
        if (!a) return NULL;
        s->leases = a;
        s->cap = cap;
    }
    held_lease *h = &s->leases[s->nleases++];
    memset(h, 0, sizeof *h);
    snprintf(h->id, sizeof h->id, "%s", id);
    return h;
}

/* We hold id at gen now. */
static void lease_note(pg_state *s, const char *id, long long gen) {
    pthread_mutex_lock(&s->mu);
    held_lease *h = lease_find_locked(s, id, 1);
    if (h && (h->gen != gen || !h->held)) {
        if (h->gen != gen) h->cancel_sent = h->lost_sent = 0;
        h->gen = gen;
        h->held = 1;
    }
    if (h) h->ok_at = dyn_now(); /* claimed (or extended) by a statement sent before now */
    pthread_mutex_unlock(&s->mu);
}

static void lease_forget(pg_state *s, const char *id, long long gen) {
    pthread_mutex_lock(&s->mu);
    held_lease *h = lease_find_locked(s, id, 0);
    if (h && h->gen == gen) h->held = 0;
    pthread_mutex_unlock(&s->mu);
}

/* 1 when an event of this kind (cancel: 1, lost: 0) is due for id at gen (gen 0: whatever we
 * hold): marks it sent. */
static int lease_event_due(pg_state *s, const char *id, long long gen, int cancel) {
    pthread_mutex_lock(&s->mu);
    held_lease *h = lease_find_locked(s, id, gen > 0);
    int due = 0;
    if (h && gen > 0 && h->gen != gen) { /* a lease we did not see claimed (renew's input) */
        h->gen = gen;
        h->held = 1;
        h->cancel_sent = h->lost_sent = 0;
    }
    if (h && (h->held || (gen > 0 && h->gen == gen))) {
        int *sent = cancel ? &h->cancel_sent : &h->lost_sent;
        due = !*sent;
        *sent = 1;
        if (!cancel) h->held = 0;
    }
    pthread_mutex_unlock(&s->mu);
    return due;
}

/* ---- life cycle ---- */

static void on_notify(void *ud, const char *channel, const char *payload) {
    pg_state *s = ud;
    if (!s->started) return;
    if (!strcmp(channel, SRV_JOBS_PG_WORK_CHANNEL)) {
        if (s->ev.work_available) s->ev.work_available(s->ev.arg);
    } else if (!strcmp(channel, SRV_JOBS_PG_CANCEL_CHANNEL) && payload) {
        if (lease_event_due(s, payload, 0, 1) && s->ev.cancel_requested)
            s->ev.cancel_requested(s->ev.arg, payload);
    }
}

static void on_connect(void *ud, int connected, int reconnected, const char *msg) {
    pg_state *s = ud;
    if (!connected) {
        if (!s->down)
            srv_log(SRV_LOG_WARN, "jobs database unreachable (retrying)",
                    json_pack("{s:s, s:s}", "db", s->where, "error", msg ? msg : ""));
        s->down = 1;
        return;
    }
    if (s->down || reconnected)
        srv_log(SRV_LOG_INFO, "jobs database connected", json_pack("{s:s}", "db", s->where));
    s->down = 0;
    /* notifications sent while no connection was open are lost: look for work now */
    if (s->started && s->ev.work_available) s->ev.work_available(s->ev.arg);
}

static int pg_start(void *state, uv_loop_t *loop, const srv_jobs_backend_events *ev,
                    dyn_err *err) {
    pg_state *s = state;
    srv_pg_opts o = {.conninfo = s->conninfo, .on_notify = on_notify, .on_connect = on_connect,
                     .ud = s};
    srv_pg *pg = srv_pg_new(loop, &o, err);
    if (!pg) return dyn_err_prefix(err, "jobs database (%s)", s->where);
    if (srv_pg_listen(pg, SRV_JOBS_PG_CANCEL_CHANNEL, err) ||
        srv_pg_listen(pg, SRV_JOBS_PG_WORK_CHANNEL, err)) {
        srv_pg_close(pg);
        return err->code;
    }
    s->loop = loop;
    s->ev = *ev;
    s->pg = pg;
    s->started = 1;
    return 0;
}

static void pg_poll(void *state) {
    (void)state; /* srv_pg reconnects by itself, and re-LISTENs */
}

static void pg_stop(void *state) {
    pg_state *s = state;
    s->started = 0; /* first: the SRV_PG_CLOSED answers below deliver nothing */
    srv_pg *pg = s->pg;
    s->pg = NULL;
    srv_pg_close(pg);
}

static void pg_free(srv_jobs_backend *b) {
    if (!b) return;
    pg_state *s = b->state;
    if (s) {
        if (s->pg) pg_stop(s);
        srv_pgsync_free(&s->sync);
        pthread_mutex_destroy(&s->mu);
        free(s->leases);
        free(s->conninfo);
        free(s);
    }
    free(b);
}

/* ---- records ---- */

/* Locks the sync connection: NULL with err naming the database. */
static PGconn *sync_lock(pg_state *s, dyn_err *err) {
    PGconn *c = srv_pgsync_lock(&s->sync, err);
    if (!c) dyn_err_prefix(err, "jobs database (%s)", s->where);
    return c;
}

static const char *kind_of_id(const char *id) {
    if (!strncmp(id, "ft-", 3)) return "finetune";
    if (!strncmp(id, "conv-", 5)) return "conversion";
    return "unknown"; /* the record's "kind" replaces it at its first write */
}

static int pg_create(void *state, const char *id, dyn_err *err) {
    pg_state *s = state;
    PGconn *c = sync_lock(s, err);
    if (!c) return DYN_EIO;
    srv_jobs_pg_via via = {.conn = c};
    json_t *spec = json_object();
    int rc = DYN_EIO, gen = 0;
    PGresult *r = srv_pg_exec(c, "creating a job", "BEGIN", 0, NULL, err);
    if (r) {
        PQclear(r);
        int ins = srv_jobs_pg_insert(&via, id, kind_of_id(id), spec, NULL, err);
        if (ins == 1)
            dyn_err_set(err, DYN_EIO, "job %s exists already in the jobs database", id);
        else if (ins == 0 && (gen = srv_jobs_pg_claim_id(&via, id, s->holder, s->lease_s, err)) > 0)
            rc = 0;
        else if (ins == 0 && gen == 0)
            dyn_err_set(err, DYN_EIO, "job %s: inserted but not claimable", id);
        r = srv_pg_exec(c, "creating a job", rc ? "ROLLBACK" : "COMMIT", 0, NULL,
                        rc ? NULL : err);
        if (!r && !rc) rc = DYN_EIO;
        PQclear(r);
    }
    srv_pgsync_unlock(&s->sync);
    json_decref(spec);
    if (!rc) lease_note(s, id, gen);
    return rc ? (err->code ? err->code : DYN_EIO) : 0;
}

static int pg_record_write(void *state, const char *id, long long lease, const json_t *rec,
                           dyn_err *err) {
    pg_state *s = state;
    const char *st = json_string_value(json_object_get(rec, "state"));
    const char *kind = json_string_value(json_object_get(rec, "kind"));
    const json_t *opts = json_object_get(rec, "options");
    PGconn *c = sync_lock(s, err);
    if (!c) return DYN_EIO;
    srv_jobs_pg_via via = {.conn = c};
    int w = srv_jobs_pg_write(&via, id, s->holder, (int)lease, st, rec, 0, err);
    if (w == 1 && kind && st && !strcmp(st, "queued")) {
        /* the kind and options as the record has them (create only guessed from the id) */
        char *spec = json_is_object(opts) ? json_dumps(opts, JSON_COMPACT) : NULL;
        const char *p[] = {id, kind, spec ? spec : "{}"};
        PGresult *r = srv_pg_exec(c, "writing a job's kind", "UPDATE dynd_jobs SET kind = $2,"
                                  " spec = $3::jsonb WHERE id = $1 AND (kind <> $2 OR spec <> $3::jsonb)",
                                  3, p, err);
        if (!r) w = DYN_EIO;
        PQclear(r);
        free(spec);
    }
    srv_pgsync_unlock(&s->sync);
    if (w == 1) return 0;
    if (w == 0) {
        if (lease > 0) {
            lease_forget(s, id, lease);
            return dyn_err_set(err, DYN_ECANCEL,
                               "job %s was taken over by another replica (lease %lld is no longer "
                               "its): record not written", id, lease);
        }
        return dyn_err_set(err, DYN_ECANCEL,
                           "job %s is held by a replica (or gone): record not written without "
                           "its lease", id);
    }
    return dyn_err_prefix(err, "jobs database (%s)", s->where);
}

/* The row of id as srv_jobs_pg_get gives it (new reference), or NULL (none, or an error:
 * logged at debug). */
static json_t *row_get(pg_state *s, const char *id) {
    dyn_err err = {0};
    PGconn *c = sync_lock(s, &err);
    json_t *row = NULL;
    if (c) {
        srv_jobs_pg_via via = {.conn = c};
        if (srv_jobs_pg_get(&via, id, &row, &err) < 0) row = NULL;
        srv_pgsync_unlock(&s->sync);
    }
    if (err.code)
        srv_log(SRV_LOG_WARN, "cannot read a job from the jobs database",
                json_pack("{s:s, s:s}", "job", id, "error", err.msg));
    return row;
}

static json_t *pg_record_read(void *state, const char *id) {
    json_t *row = row_get(state, id);
    json_t *rec = json_object_get(row, "record");
    const char *rid = json_string_value(json_object_get(rec, "id"));
    const char *rst = json_string_value(json_object_get(rec, "state"));
    if (!json_is_object(rec) || !rst || !rid || strcmp(rid, id)) { /* not written yet */
        json_decref(row);
        return NULL;
    }
    rec = json_deep_copy(rec);
    /* a cancel that found no live holder ended the row itself (jobs_pg.h): the record says so */
    const char *col = json_string_value(json_object_get(row, "state"));
    if (rec && col && !strcmp(col, "cancelled") && strcmp(rst, "cancelled")) {
        json_object_set_new(rec, "state", json_string("cancelled"));
        json_object_set_new(rec, "error_code", json_string("cancelled"));
        json_object_set_new(rec, "error", json_string("cancelled by request"));
        json_object_set_new(rec, "resumable", json_false());
    }
    json_decref(row);
    return rec;
}

static int pg_list(void *state, srv_jobs_backend_id_fn fn, void *arg, dyn_err *err) {
    pg_state *s = state;
    PGconn *c = sync_lock(s, err);
    if (!c) return DYN_EIO;
    PGresult *r = srv_pg_exec(c, "listing jobs", "SELECT id FROM dynd_jobs ORDER BY created_at, id",
                              0, NULL, err);
    srv_pgsync_unlock(&s->sync); /* fn reads records: it takes the connection again */
    if (!r) return dyn_err_prefix(err, "jobs database (%s)", s->where);
    for (int i = 0; i < PQntuples(r); i++)
        if (fn(arg, PQgetvalue(r, i, 0))) break;
    PQclear(r);
    return 0;
}

static void pg_remove(void *state, const char *id) {
    pg_state *s = state;
    dyn_err err = {0};
    PGconn *c = sync_lock(s, &err);
    if (c) {
        srv_jobs_pg_via via = {.conn = c};
        srv_jobs_pg_delete(&via, id, &err);
        srv_pgsync_unlock(&s->sync);
    }
    if (err.code)
        srv_log(SRV_LOG_WARN, "job not deleted from the jobs database",
                json_pack("{s:s, s:s}", "job", id, "error", err.msg));
}

/* ---- leases ---- */

static long long pg_claim(void *state, const char *id, dyn_err *err) {
    pg_state *s = state;
    PGconn *c = sync_lock(s, err);
    if (!c) return -1;
    srv_jobs_pg_via via = {.conn = c};
    int g = srv_jobs_pg_claim_id(&via, id, s->holder, s->lease_s, err);
    srv_pgsync_unlock(&s->sync);
    if (g < 0) {
        dyn_err_prefix(err, "jobs database (%s)", s->where);
        return -1;
    }
    if (g > 0) lease_note(s, id, g);
    return g;
}

typedef struct claim_ctx {
    pg_state *s;
    srv_jobs_backend_claimed_fn done;
    void *arg;
    srv_jobs_pg_claim c;
} claim_ctx;

static void write_release(pg_state *s, const char *id, long long lease) {
    dyn_err err = {0};
    PGconn *c = sync_lock(s, &err);
    if (c) {
        srv_jobs_pg_via via = {.conn = c};
        srv_jobs_pg_write(&via, id, s->holder, (int)lease, NULL, NULL, 1, &err);
        srv_pgsync_unlock(&s->sync);
    }
    lease_forget(s, id, lease);
    if (err.code)
        srv_log(SRV_LOG_WARN, "job lease not released (it expires)",
                json_pack("{s:s, s:s}", "job", id, "error", err.msg));
}

static void on_claimed_next(void *ud, int outcome, const dyn_err *err) {
    claim_ctx *a = ud;
    pg_state *s = a->s;
    if (!s->started) { /* stopped with the claim in flight: jobs.c may be gone, answer nothing */
        if (outcome == 1) write_release(s, a->c.id, a->c.gen);
        srv_jobs_pg_claim_clear(&a->c);
        free(a);
        return;
    }
    if (outcome < 0) {
        srv_log(SRV_LOG_WARN, "cannot claim a job from the jobs database",
                json_pack("{s:s, s:s}", "db", s->where, "error", err ? err->msg : ""));
        a->done(a->arg, NULL, 0);
    } else if (outcome == 0) {
        a->done(a->arg, NULL, 0);
    } else {
        char id[64];
        snprintf(id, sizeof id, "%s", a->c.id);
        long long gen = a->c.gen;
        int cancel = a->c.cancel_requested;
        if (a->c.taken_over)
            srv_log(SRV_LOG_INFO, "job taken over from a replica whose lease passed",
                    json_pack("{s:s, s:s, s:I}", "job", id, "previous_holder", a->c.prev_holder,
                              "lease", (json_int_t)gen));
        lease_note(s, id, gen);
        a->done(a->arg, id, gen);
        /* its holder died after a cancel was asked: cancel it here (queued by done) */
        if (cancel && s->started && lease_event_due(s, id, gen, 1) && s->ev.cancel_requested)
            s->ev.cancel_requested(s->ev.arg, id);
    }
    srv_jobs_pg_claim_clear(&a->c);
    free(a);
}

static void pg_claim_next(void *state, srv_jobs_backend_claimed_fn done, void *arg) {
    pg_state *s = state;
    claim_ctx *a = s->pg ? calloc(1, sizeof *a) : NULL;
    dyn_err err = {0};
    if (a) {
        a->s = s;
        a->done = done;
        a->arg = arg;
        srv_jobs_pg_via via = {.pg = s->pg, .cb = on_claimed_next, .ud = a};
        if (srv_jobs_pg_claim_next(&via, s->holder, s->lease_s, &a->c, &err) == 0) return;
        free(a);
        srv_log(SRV_LOG_WARN, "cannot claim a job from the jobs database",
                json_pack("{s:s, s:s}", "db", s->where, "error", err.msg));
    }
    done(arg, NULL, 0); /* not started, out of memory, or the query not queued */
}

static void pg_release(void *state, const char *id, long long lease) {
    if (lease > 0) write_release(state, id, lease);
}

typedef struct renew_ctx {
    pg_state *s;
    double sent_at;
    int n;
    srv_jobs_pg_lease held[];
} renew_ctx;

static void on_renewed(void *ud, int outcome, const dyn_err *err) {
    renew_ctx *a = ud;
    pg_state *s = a->s;
    s->renewing = 0;
    if (!s->started) {
        free(a);
        return;
    }
    if (outcome < 0) {
        srv_log(SRV_LOG_ERROR, "job leases not renewed (they expire unless the next beat succeeds)",
                json_pack("{s:i, s:s}", "jobs", a->n, "error", err ? err->msg : ""));
        free(a);
        return;
    }
    pthread_mutex_lock(&s->mu); /* the leases kept: alive until at least sent_at + lease_s */
    for (int i = 0; i < a->n; i++) {
        held_lease *k = a->held[i].lost ? NULL : lease_find_locked(s, a->held[i].id, 0);
        if (k && k->held && k->gen == a->held[i].gen && k->ok_at < a->sent_at) k->ok_at = a->sent_at;
    }
    pthread_mutex_unlock(&s->mu);
    for (int i = 0; i < a->n && s->started; i++) {
        const srv_jobs_pg_lease *h = &a->held[i];
        if (h->lost) {
            if (lease_event_due(s, h->id, h->gen, 0) && s->ev.lease_lost)
                s->ev.lease_lost(s->ev.arg, h->id);
        } else if (h->cancel_requested) {
            if (lease_event_due(s, h->id, h->gen, 1) && s->ev.cancel_requested)
                s->ev.cancel_requested(s->ev.arg, h->id);
        }
    }
    free(a);
}

/* Self-fencing: a lease whose last successful renewal was sent more than lease_s ago may have
 * passed in the database (unreachable, or too slow to answer) and the job been taken over by
 * another replica: its work stops here (lease_lost) before it can write over the successor's
 * files in the store. The database's own fencing refuses its record writes in any case. */
static void fence_expired(pg_state *s) {
    double now = dyn_now();
    for (;;) {
        char id[64] = "";
        long long gen = 0;
        pthread_mutex_lock(&s->mu);
        for (int i = 0; i < s->nleases && !id[0]; i++) {
            const held_lease *h = &s->leases[i];
            if (h->held && !h->lost_sent && h->ok_at > 0 && now - h->ok_at > s->lease_s) {
                snprintf(id, sizeof id, "%s", h->id);
                gen = h->gen;
            }
        }
        pthread_mutex_unlock(&s->mu);
        if (!id[0]) return;
        if (!lease_event_due(s, id, gen, 0)) continue; /* marks it: the loop moves on */
        srv_log(SRV_LOG_ERROR, "job lease not renewed for jobs_lease_s: stopping the job here "
                               "(another replica may have taken it over)",
                json_pack("{s:s, s:s, s:f}", "job", id, "db", s->where, "lease_s", s->lease_s));
        if (s->ev.lease_lost) s->ev.lease_lost(s->ev.arg, id);
    }
}

static int pg_renew(void *state, int n, const char *const *ids, const long long *leases,
                    dyn_err *err) {
    pg_state *s = state;
    if (n <= 0) return 0;
    if (!s->pg) return dyn_err_set(err, DYN_EINVAL, "jobs database: renew before start");
    if (s->started) fence_expired(s);
    if (s->renewing) return 0; /* the last beat's renew is still out: no pile-up */
    renew_ctx *a = calloc(1, sizeof *a + sizeof a->held[0] * (size_t)n);
    if (!a) return dyn_err_set(err, DYN_ENOMEM, "out of memory renewing job leases");
    a->s = s;
    a->sent_at = dyn_now();
    a->n = n;
    for (int i = 0; i < n; i++) {
        snprintf(a->held[i].id, sizeof a->held[i].id, "%s", ids[i]);
        a->held[i].gen = (int)leases[i];
    }
    srv_jobs_pg_via via = {.pg = s->pg, .cb = on_renewed, .ud = a};
    if (srv_jobs_pg_renew(&via, s->holder, s->lease_s, a->held, n, err)) {
        free(a);
        return dyn_err_prefix(err, "jobs database (%s)", s->where);
    }
    s->renewing = 1;
    return 0;
}

static int pg_cancel_request(void *state, const char *id, dyn_err *err) {
    pg_state *s = state;
    PGconn *c = sync_lock(s, err);
    if (!c) return DYN_EIO;
    srv_jobs_pg_via via = {.conn = c};
    int rc = srv_jobs_pg_cancel(&via, id, err);
    srv_pgsync_unlock(&s->sync);
    if (rc < 0) return dyn_err_prefix(err, "jobs database (%s)", s->where);
    if (rc == SRV_JOBS_PG_NOT_FOUND)
        return dyn_err_set(err, DYN_EIO, "job %s is no longer in the jobs database (deleted "
                           "by retention?)", id);
    /* CANCEL_REQUESTED: the holder hears the NOTIFY (or its next renew); CANCELLED: its holder
     * was dead, the row is cancelled now and record_read shows it; FINISHED: it ended first,
     * the next read shows how. */
    return 0;
}

static json_t *pg_lease_info(void *state, const char *id) {
    json_t *row = row_get(state, id);
    const char *holder = json_string_value(json_object_get(row, "holder"));
    json_t *age = json_object_get(row, "lease_age_s");
    json_t *o = holder ? json_pack("{s:s, s:f}", "holder", holder, "lease_age_s",
                                   json_is_number(age) ? json_number_value(age) : 0.0)
                       : NULL;
    json_decref(row);
    return o;
}

srv_jobs_backend *srv_jobs_backend_pg(const char *conninfo, const char *holder, int lease_s,
                                      dyn_err *err) {
    srv_jobs_backend *b = calloc(1, sizeof *b);
    pg_state *s = calloc(1, sizeof *s);
    if (!b || !s || !(s->conninfo = strdup(conninfo ? conninfo : ""))) {
        if (s) free(s->conninfo);
        free(b);
        free(s);
        return dyn_err_set(err, DYN_ENOMEM, "jobs: out of memory"), NULL;
    }
    pthread_mutex_init(&s->mu, NULL);
    srv_jobs_pg_conninfo_describe(s->conninfo, s->where, sizeof s->where);
    s->lease_s = lease_s;
    if (holder && *holder) {
        snprintf(s->holder, sizeof s->holder, "%s", holder);
    } else {
        char host[128] = "localhost";
        if (gethostname(host, sizeof host) != 0) snprintf(host, sizeof host, "localhost");
        host[sizeof host - 1] = 0;
        snprintf(s->holder, sizeof s->holder, "%s:%ld", host, (long)getpid());
    }
    *b = (srv_jobs_backend){
        .name = "postgres",
        .state = s,
        .takes_over = 1,
        .start = pg_start,
        .poll = pg_poll,
        .stop = pg_stop,
        .free = pg_free,
        .create = pg_create,
        .record_write = pg_record_write,
        .record_read = pg_record_read,
        .list = pg_list,
        .remove = pg_remove,
        .claim = pg_claim,
        .claim_next = pg_claim_next,
        .release = pg_release,
        .renew = pg_renew,
        .cancel_request = pg_cancel_request,
        .lease_info = pg_lease_info,
    };
    if (srv_pgsync_init(&s->sync, s->conninfo, err)) {
        pthread_mutex_destroy(&s->mu);
        free(s->conninfo);
        free(s);
        free(b);
        return NULL;
    }
    PGconn *c = srv_pgsync_lock(&s->sync, err);
    int v = c ? srv_jobs_pg_migrate(c, 0, err) : DYN_EIO;
    if (c) srv_pgsync_unlock(&s->sync);
    if (v < 0) {
        dyn_err_prefix(err, "jobs_db: %s the jobs database (%s)",
                       c ? "cannot set up the schema of" : "cannot connect to", s->where);
        err->code = DYN_EIO;
        pg_free(b);
        return NULL;
    }
    return b;
}
