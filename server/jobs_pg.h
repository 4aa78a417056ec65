/* jobs_pg.h — the jobs store on PostgreSQL (jobs_backend = postgres): the table, its schema
 * migrations and the statements a replica needs to share jobs with others through nothing but
 * the database.
 *
 * Schema (version SRV_JOBS_PG_SCHEMA_VERSION; srv_jobs_pg_migrate creates and upgrades it):
 *   dynd_schema_version (id int = 1, version int)   one row: the version applied
 *   dynd_jobs (
 *     id text PRIMARY KEY, kind text, state text     queued | running | succeeded | failed |
 *                                                    cancelled | interrupted (jobs.h's names)
 *     spec jsonb                                     the normalized options (srv_jobs_spec)
 *     record jsonb                                   what the holder publishes: progress,
 *                                                    history, result, error ...
 *     holder text                                    "host:pid" of the replica holding it, or NULL
 *     leased_until timestamptz                       the holder's lease ends then unless renewed
 *     renewed_at timestamptz                         the lease's last claim or renewal
 *     lease_gen int                                  +1 at every claim: the fencing token
 *     cancel_requested bool                          a cancel was asked while someone held it
 *     created_at, updated_at timestamptz)
 *   version 2 adds the partial index dynd_jobs_claimable (created_at, id) on queued / running rows.
 *
 * Guarantees. Every time is the database's clock (now()), so replicas' clocks do not matter.
 * A job is claimable when it is queued and nobody holds it (or its holder's lease has passed),
 * or running and its holder's lease has passed (a takeover). A claim is one statement
 * (SELECT … FOR UPDATE SKIP LOCKED, then UPDATE): of replicas claiming at once each job goes
 * to exactly one, and the claim gives it a new lease_gen. The holder renews its leases in one
 * statement and learns which it lost (taken over after its lease passed, or cancelled). Every
 * write of a held job names (holder, lease_gen): a holder that lost the job has its writes
 * refused (0 rows), so a replica presumed dead can never overwrite its successor. A cancel
 * of a job nobody holds alive ends it at once; of a held one it sets cancel_requested and sends
 * NOTIFY SRV_JOBS_PG_CANCEL_CHANNEL with the job id as payload (delivered when the statement
 * commits); renew also reports cancel_requested, for notifications missed while disconnected.
 * Inserting a job, and any write that leaves one queued with no holder (a release), NOTIFY
 * SRV_JOBS_PG_WORK_CHANNEL.
 * Under contention a claim may find nothing while rows are still claimable (another replica's
 * claim changed the row it had picked): claimers poll again.
 *
 * Calls. Every statement runs either synchronously on a PGconn (any thread holding that
 * connection: srv_pgsync_lock) or asynchronously on the loop's srv_pg, as `via` says. Sync: the
 * function returns the outcome. Async: it returns 0 once queued (or < 0 with err and then no
 * callback), and via->cb(via->ud, outcome, err) runs later on the loop thread; output
 * structures passed in must then stay valid until that callback. Outcomes are >= 0, errors
 * DYN_EIO (database unreachable, statement refused: err says which, with the SQLSTATE) or as
 * listed. Strings in results are copied into the output structures; json_t results are new
 * references for the caller to json_decref.
 */
#ifndef SRV_JOBS_PG_H
#define SRV_JOBS_PG_H

#include <jansson.h>
#include <libpq-fe.h>

#include "server/pg.h"

#define SRV_JOBS_PG_SCHEMA_VERSION 2
#define SRV_JOBS_PG_CANCEL_CHANNEL "dynd_jobs_cancel"
/* NOTIFY'd (payload: the id) when a job becomes claimable by anyone: inserted, or written
 * queued with no holder (released). Claimers LISTEN to claim at once instead of at their next
 * poll. */
#define SRV_JOBS_PG_WORK_CHANNEL "dynd_jobs_work"

/* The outcome of an async call: outcome as the sync call would return it (>= 0), or < 0 with
 * err (valid during the call). */
typedef void (*srv_jobs_pg_cb)(void *ud, int outcome, const dyn_err *err);

typedef struct srv_jobs_pg_via {
    PGconn *conn; /* sync when set (the caller holds it for the call) */
    srv_pg *pg;   /* else async on the loop */
    srv_jobs_pg_cb cb;
    void *ud;
} srv_jobs_pg_via;

/* Creates the tables or upgrades them, from the version found up to `target` (<= 0: the
 * latest), in one transaction under an advisory lock, so replicas starting together migrate
 * once. Sync only (start-up). Returns the version now applied, or DYN_EIO with err (also when
 * the database is at a newer version than this dynd knows: upgrade dynd). */
int srv_jobs_pg_migrate(PGconn *conn, int target, dyn_err *err);

/* Inserts a queued job (spec and record borrowed; record may be NULL: {}). Returns 0, 1 when a
 * job with that id exists already (nothing written), or < 0. */
int srv_jobs_pg_insert(const srv_jobs_pg_via *via, const char *id, const char *kind,
                       const json_t *spec, const json_t *record, dyn_err *err);

/* A claimed job. spec and record: new references (srv_jobs_pg_claim_clear drops them). */
typedef struct srv_jobs_pg_claim {
    char id[64];
    char kind[32];
    int gen;              /* the lease generation now held */
    int cancel_requested; /* finish it as cancelled instead of running it */
    int taken_over;       /* someone held it before (its lease had passed) */
    char prev_holder[128];
    json_t *spec, *record;
} srv_jobs_pg_claim;
void srv_jobs_pg_claim_clear(srv_jobs_pg_claim *c);

/* Claims the oldest claimable job for `holder` ("host:pid") for lease_s seconds. Its state is
 * left as it was (queued, or running for a takeover): the holder writes the state it runs the
 * job in. Returns 1 with *out filled, 0 when nothing was claimable, or < 0. */
int srv_jobs_pg_claim_next(const srv_jobs_pg_via *via, const char *holder, double lease_s,
                           srv_jobs_pg_claim *out, dyn_err *err);

/* Claims job `id` itself (a resume, or the submitter holding its own queued job) for holder:
 * taken when nobody holds it or its holder's lease has passed (new generation), or kept when
 * `holder` holds it already (same generation, lease extended). Its state is not looked at.
 * Returns the generation now held (> 0), 0 when another holder's lease is alive or there is no
 * such job, or < 0. Of holders racing for it exactly one gets it. */
int srv_jobs_pg_claim_id(const srv_jobs_pg_via *via, const char *id, const char *holder,
                         double lease_s, dyn_err *err);

/* A lease held: in, the job and the generation claimed; out, what renew found. */
typedef struct srv_jobs_pg_lease {
    char id[64];
    int gen;
    int lost;             /* out: no longer ours (taken over, ended, or cancelled at once) */
    int cancel_requested; /* out: a cancel is pending: stop the work */
} srv_jobs_pg_lease;

/* Extends by lease_s seconds every lease in held[0..n) that `holder` still holds at that
 * generation (one statement) and sets lost / cancel_requested of each. Returns how many were
 * renewed, or < 0 (then nothing is known: renew again before the leases pass). */
int srv_jobs_pg_renew(const srv_jobs_pg_via *via, const char *holder, double lease_s,
                      srv_jobs_pg_lease *held, int n, dyn_err *err);

/* The fenced write of a held job: state (NULL: unchanged) and record (NULL: unchanged), only
 * while holder holds it at generation gen; release = 1 also drops the lease (holder and
 * leased_until cleared: for final states, or to hand a queued / interrupted job back; a job
 * left queued with no holder is NOTIFY'd on SRV_JOBS_PG_WORK_CHANNEL). gen = 0: a write by no
 * holder, done only while nobody holds the job alive (e.g. a record written at start-up).
 * Returns 1 when written, 0 when refused (the lease was lost: stop and write nothing more;
 * gen 0: someone holds it), or < 0. */
int srv_jobs_pg_write(const srv_jobs_pg_via *via, const char *id, const char *holder, int gen,
                      const char *state, const json_t *record, int release, dyn_err *err);

typedef enum srv_jobs_pg_cancel_outcome {
    SRV_JOBS_PG_CANCELLED,        /* nobody held it alive: it is cancelled now */
    SRV_JOBS_PG_CANCEL_REQUESTED, /* its holder was notified and stops it */
    SRV_JOBS_PG_NOT_FOUND,
    SRV_JOBS_PG_FINISHED,         /* succeeded / failed / cancelled already */
} srv_jobs_pg_cancel_outcome;

/* Cancels job id (see Guarantees). Returns a srv_jobs_pg_cancel_outcome, or < 0. */
int srv_jobs_pg_cancel(const srv_jobs_pg_via *via, const char *id, dyn_err *err);

/* Deletes job id. Returns 1, 0 when there was none, or < 0. */
int srv_jobs_pg_delete(const srv_jobs_pg_via *via, const char *id, dyn_err *err);

/* Retention: deletes the finished (succeeded / failed / cancelled) jobs beyond the `keep` most
 * recently finished. Returns how many were deleted, or < 0. */
int srv_jobs_pg_prune(const srv_jobs_pg_via *via, int keep, dyn_err *err);

/* The job as JSON: {"id", "kind", "state", "spec", "record", "holder", "lease_gen",
 * "cancel_requested", "created_at", "updated_at", "leased_until", "lease_age_s" (seconds since
 * the lease's claim or renewal, null when nobody holds it), "lease_expired"}. get: *out is the
 * object (returns 1) or NULL (0: no such job); list: *out is an array, newest first, of the jobs
 * in `state` and of `kind` (each NULL: any); returns its length. < 0 on error. */
int srv_jobs_pg_get(const srv_jobs_pg_via *via, const char *id, json_t **out, dyn_err *err);
int srv_jobs_pg_list(const srv_jobs_pg_via *via, const char *state, const char *kind,
                     json_t **out, dyn_err *err);

#endif
