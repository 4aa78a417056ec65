/* jobs_backend.h — where jobs' records and leases live: the persistence half of the jobs,
 * behind a small table of functions, so that the scheduling half (server/jobs.c: the queue, the
 * workers, the libuv loop) does not know whether replicas share a directory or a database.
 *
 * Implementations:
 *   fs        (server/jobs_fs.c; jobs_backend = fs, the default): state_dir/jobs/<id>/job.json
 *             records, lease.<g> files created with O_EXCL, a `cancel` file; no service needed.
 *   postgres  (server/jobs_pgbe.c over server/jobs_pg.c; jobs_backend = postgres): the
 *             dynd_jobs table; claims with FOR UPDATE SKIP LOCKED; leased_until renewed by the
 *             holder; record writes fenced by (holder, lease_gen); cancel as a column plus
 *             LISTEN/NOTIFY.
 *
 * The model (both implementations):
 *   - A job has an id (srv jobs' ids: [a-z0-9-], < 32 bytes) and one record: the JSON object that
 *     GET /v1/jobs/{id} shows ("state", "options", "progress", "history", "result", ...). The
 *     backend stores it as given and returns it as stored; it reads only "state" (a terminal state
 *     lets it drop what belongs to a running job, e.g. fs's cancel file).
 *   - Whoever runs or queues a job holds its lease, a token > 0 (fs: the lease file's generation;
 *     postgres: lease_gen). A claim succeeds only when nobody holds the job or its holder is
 *     dead (fs: the process is gone or the file was not renewed for lease_s; postgres:
 *     leased_until passed) — a takeover —, and its token is greater than the one it takes the
 *     job from (a lease released leaves none behind: fs may then start again at 1). Of two
 *     replicas racing for a job exactly one wins. A holder renews its leases (renew) more often
 *     than lease_s; one that learns it lost a lease must stop the job's work (lease_lost event),
 *     and so does one that could not renew for lease_s (postgres delivers lease_lost itself
 *     then: the lease may have passed and the job been taken over).
 *   - Record writes carry the writer's token; a backend that can fence (postgres) refuses a
 *     write under a token that is no longer the job's (DYN_ECANCEL: the job was taken over).
 *   - Cancelling a job another replica holds is a request (cancel_request); the holder learns it
 *     through the cancel_requested event and stops the job itself.
 *
 * Threads: the record and lease functions (create ... cancel_request) may be called from any
 * thread — HTTP threads, job workers, the loop thread — at once, for different jobs or the same
 * one; they block (file I/O, or a synchronous query) but never wait for the loop. start, poll and
 * stop are called on the loop thread only, and the events are delivered there. A backend that
 * needs the loop (postgres: an async connection for LISTEN, its socket in a uv_poll_t) sets it up
 * in start and closes its handles in stop.
 *
 * Errors: functions returning int return 0 or a DYN_E* code with err filled with a message for
 * the log (DYN_EIO: storage unusable; DYN_ENOMEM), unless stated otherwise. Ownership: strings
 * and JSON passed in are borrowed for the call; JSON returned is a new reference the caller
 * decrefs.
 */
#ifndef SRV_JOBS_BACKEND_H
#define SRV_JOBS_BACKEND_H

#include <jansson.h>
#include <uv.h>

#include "dyn/dyn.h"

/* What a backend tells the jobs' scheduler, on the loop thread. `arg` is the scheduler's. */
typedef struct srv_jobs_backend_events {
    void *arg;
    /* A cancel was requested elsewhere for job `id`, which this replica holds (fs: the cancel
     * file seen by renew; postgres: NOTIFY). */
    void (*cancel_requested)(void *arg, const char *id);
    /* This replica no longer holds job `id` (another one took it over): stop its work. */
    void (*lease_lost)(void *arg, const char *id);
    /* Work may be waiting (postgres: a NOTIFY for a new queued job): the scheduler tries
     * claim_next when it has an idle worker. fs never sends it. */
    void (*work_available)(void *arg);
} srv_jobs_backend_events;

/* Called by list for every job id the backend knows; returns 0 to go on, nonzero to stop. */
typedef int (*srv_jobs_backend_id_fn)(void *arg, const char *id);
/* claim_next's answer, on the loop thread: the job claimed and its lease token (> 0), or
 * id NULL and lease 0 when there is none (or the store could not be reached: logged by the
 * backend). */
typedef void (*srv_jobs_backend_claimed_fn)(void *arg, const char *id, long long lease);

typedef struct srv_jobs_backend {
    const char *name; /* "fs", "postgres": for logs and metrics */
    void *state;      /* the implementation's; freed by free */
    /* 1 when claim_next hands out the queued and running jobs of dead holders (postgres): the
     * scheduler then leaves such a job to it (it runs again) instead of recording it
     * interrupted on sight (fs: 0). */
    int takes_over;

    /* ---- life cycle (loop thread) ---- */

    /* Attaches to the loop: from now on events may be delivered (ev is copied). 0 or DYN_E*. */
    int (*start)(void *state, uv_loop_t *loop, const srv_jobs_backend_events *ev, dyn_err *err);
    /* Periodic work on the loop thread, every lease_s/3 seconds (the scheduler's heartbeat
     * timer), after renew: fs does nothing; postgres may reconnect or re-LISTEN. */
    void (*poll)(void *state);
    /* Detaches from the loop: closes its handles (uv_close; their callbacks run in the loop's
     * next turn), delivers no more events and no more claim_next answers. The other functions
     * keep working (synchronously). */
    void (*stop)(void *state);
    /* Frees the state and the backend itself (after stop, once the loop ran the close
     * callbacks; or without start). */
    void (*free)(struct srv_jobs_backend *b);

    /* ---- records (any thread) ---- */

    /* Makes room for a new job `id` (fs: its directory). DYN_EIO when it exists or cannot be
     * made. */
    int (*create)(void *state, const char *id, dyn_err *err);
    /* Stores job id's record (borrowed) under lease token `lease` (0: the writer holds none,
     * e.g. a record written once at start-up). Atomic: a reader sees the old or the new record,
     * never a mix. DYN_ECANCEL when the backend fences and `lease` is not the job's token. */
    int (*record_write)(void *state, const char *id, long long lease, const json_t *rec,
                        dyn_err *err);
    /* The stored record of `id` (new reference), or NULL: none, or unreadable (damaged records
     * are treated as absent; the caller logs). */
    json_t *(*record_read)(void *state, const char *id);
    /* Calls fn for every job id stored (every replica's), in no particular order. 0, or DYN_EIO
     * when the store cannot be read (fn is then not called). */
    int (*list)(void *state, srv_jobs_backend_id_fn fn, void *arg, dyn_err *err);
    /* Forgets job `id` entirely (retention: jobs_keep): record, lease, working files. Best
     * effort, no error. */
    void (*remove)(void *state, const char *id);

    /* ---- leases (any thread) ---- */

    /* Claims job `id` for this replica. Returns the new token (> 0; the current one when this
     * process holds the job already), 0 when a live replica holds it or won the race, -1 on a
     * storage error (err set). */
    long long (*claim)(void *state, const char *id, dyn_err *err);
    /* Claims the next job that any replica may run — queued and held by nobody, or held under an
     * expired lease (a takeover: the job runs again, a fine-tune from its last checkpoint) — and
     * answers through done(arg, id, lease) on the loop thread, exactly once, possibly before
     * returning (fs: at once, with none: a submitter queues and runs its own jobs, and an
     * expired holder's jobs turn interrupted, to be resumed by request). Loop thread only: the
     * scheduler asks when a worker is idle and its queue is empty, one claim at a time, and
     * again after work_available. A backend on a network store answers asynchronously (the loop
     * thread must not wait on it). */
    void (*claim_next)(void *state, srv_jobs_backend_claimed_fn done, void *arg);
    /* Gives up the lease `lease` of job `id` (no-op when it is not the job's token). */
    void (*release)(void *state, const char *id, long long lease);
    /* Renews the leases of the n jobs ids[i] held under leases[i] (loop thread: the heartbeat).
     * Delivers lease_lost for each job no longer ours and cancel_requested for each job with a
     * pending cancel request (consumed: delivered once). 0, or DYN_E* when the store could not
     * be reached (the leases may expire: the caller logs and tries again at the next beat). */
    int (*renew)(void *state, int n, const char *const *ids, const long long *leases,
                 dyn_err *err);
    /* Asks the holder of job `id` (another replica) to cancel it. 0 or DYN_E*. */
    int (*cancel_request)(void *state, const char *id, dyn_err *err);

    /* ---- observability (any thread; optional: NULL when the backend cannot tell) ---- */

    /* Who holds job `id`: {"holder": "host:pid" (string), "lease_age_s": seconds since the
     * lease's claim or last renewal (number)} as a new reference, or NULL when nobody holds it
     * (or the store cannot say: not an error, the caller shows nulls). */
    json_t *(*lease_info)(void *state, const char *id);
} srv_jobs_backend;

/* The fs backend (server/jobs_fs.c) on jobs_dir (state_dir/jobs, made by the caller), with
 * leases alive for lease_s seconds without renewal on another host (on this host: while the
 * holding process lives). Returns the backend (b->free(b) frees it) or NULL with err
 * (DYN_ENOMEM). */
srv_jobs_backend *srv_jobs_backend_fs(const char *jobs_dir, int lease_s, dyn_err *err);

/* The postgres backend (server/jobs_pgbe.c) on the database `conninfo` (a libpq key=value
 * string or URI, borrowed; libpq's own environment, PGPASSWORD etc., applies), as holder
 * `holder` ("<replica_id or hostname>:<pid>"; NULL or "": "<hostname>:<pid>"), with leases of
 * lease_s seconds. Connects now (one synchronous connection, shared by every thread under its
 * mutex) and creates or upgrades the jobs schema (srv_jobs_pg_migrate). Returns the backend
 * (b->free(b) frees it) or NULL with err: DYN_EIO when the database cannot be reached or
 * migrated (the message names its host, port and database, never the password), DYN_ENOMEM.
 * start opens the asynchronous connection on the loop (LISTEN for cancels and new work). */
srv_jobs_backend *srv_jobs_backend_pg(const char *conninfo, const char *holder, int lease_s,
                                      dyn_err *err);

/* Describes conninfo for messages: "host=H port=P dbname=D user=U" with what the string and
 * libpq's environment (PGHOST ...) give, never the password. Writes at most n bytes to buf. */
void srv_jobs_pg_conninfo_describe(const char *conninfo, char *buf, size_t n);

#endif
