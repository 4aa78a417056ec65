/* jobs.h — conversion and fine-tuning jobs: a bounded queue of long work, persisted in the
 * state directory so that a crash, `kill -9` or SIGTERM never loses or corrupts a job.
 *
 * A job is submitted with a spec (validated here: srv_jobs_spec), queued, handed by the
 * daemon's libuv loop to one of jobs_max_concurrent worker threads of this module (not libuv's
 * shared pool: a job runs for minutes), and publishes a model into the repository. States:
 *
 *   queued ──> running ──> succeeded | failed | cancelled
 *      │          └──────> interrupted (SIGTERM, or found running/queued after a crash)
 *      └─> cancelled | interrupted                 interrupted ──resume──> queued
 *
 * Records and leases live behind server/jobs_backend.h; with the default, jobs_backend = fs
 * (server/jobs_fs.c), on disk (state_dir/jobs/<id>/):
 *   job.json      the record (spec, state, progress, result, history, error), written atomically
 *                 (temp file, fsync, rename, directory fsync) at every transition, after every
 *                 fine-tuning epoch and every few seconds of progress;
 *   upload.bin    a streamed upload (conversions from an upload), kept until the job ends;
 *   ckpt/         fine-tuning checkpoints (engine/convert/finetune.h): resume continues from the
 *                 last finished epoch; removed when the job ends;
 *   lease.<g>     the claim (below).
 * With model_store set, upload.bin, the fine-tune's input snapshot (input.dyn) and its last
 * complete checkpoint are also kept in the store (server/store.h "job files"): an upload before
 * the job is queued (503 store_unavailable otherwise), a checkpoint after every epoch; a run
 * without them locally fetches them from there; they leave the store when the job ends.
 * Retention: at most jobs_keep finished (succeeded / failed / cancelled) records are kept; when
 * a job ends beyond that, the oldest finished ones leave the list and their directories are
 * removed (at start-up too). Interrupted jobs are kept: they may be resumed. Jobs are
 * reference-counted, so a record pruned while a request reads it is freed after that request.
 * The produced model is written as model_dir/.job-<id>.tmp, fsync'd, then renamed (or, without
 * "overwrite", hard-linked: an existing model is never replaced by accident) to <output>.dyn and
 * loaded by the repository before the job turns succeeded: no half-written model is ever served.
 *
 * Replicas sharing state_dir and model_dir: the job's state lives on disk, and whoever runs or
 * queues a job holds its lease: lease.<g> created with O_CREAT|O_EXCL, holding
 * {"host", "pid", "start"}. Taking a job over creates lease.<g+1> (O_EXCL again, so of two
 * replicas racing for a dead holder's job exactly one wins); the holder is the highest
 * generation. A lease is alive while its holder is: on the same host the process (pid + its
 * start time) exists; on another host the file's mtime was renewed within jobs_lease_s (a
 * heartbeat timer on the loop touches it every jobs_lease_s/3). A holder that finds a higher
 * generation (it was presumed dead) cancels its run. At start-up, queued/running records
 * without a live lease become interrupted. Cancelling a job held by another replica drops a
 * `cancel` file in its directory, which the holder's heartbeat acts on. A record another replica may change (it
 * holds the job, or the job is interrupted and nobody holds it) is read again at every get and
 * list; resume and cancel of an interrupted job read it again once they hold its lease, so a job
 * cancelled or resumed to its end elsewhere is never run again.
 * With jobs_backend = postgres (jobs_backend.h) the same protocol runs on the dynd_jobs table
 * instead of files: the lease is the row's (holder, lease_gen, leased_until), record writes are
 * fenced by it, a cancel reaches the holder by NOTIFY, and a queued or running job whose holder
 * died is not made interrupted but taken over by an idle replica's claim_next and run again.
 *
 * Threads: srv_jobs_new, srv_jobs_shutdown, srv_jobs_detach and srv_jobs_free are called on
 * the loop's thread (the daemon's main thread); every other function is thread-safe and never
 * waits for the loop (HTTP threads call them: a submission or a resume queues the job and wakes
 * the loop with uv_async_send). Runs start and end on the loop thread, the engine work runs on
 * the workers (jobs.c: "Jobs on libuv"). Progress is published through atomics by the engine's
 * callbacks and read by srv_jobs_get without waiting for the work; the job's mutex is held only
 * to copy small fields, never during work or file I/O.
 */
#ifndef SRV_JOBS_H
#define SRV_JOBS_H

#include <jansson.h>
#include <uv.h>

#include "server/config.h"
#include "server/metrics.h"
#include "server/repository.h"
#include "server/server.h"

typedef enum srv_job_state {
    SRV_JOB_QUEUED,
    SRV_JOB_RUNNING,
    SRV_JOB_SUCCEEDED,
    SRV_JOB_FAILED,
    SRV_JOB_CANCELLED,
    SRV_JOB_INTERRUPTED,
    SRV_JOB_STATE_COUNT
} srv_job_state;

typedef enum srv_job_kind { SRV_JOB_CONVERSION, SRV_JOB_FINETUNE, SRV_JOB_KIND_COUNT } srv_job_kind;

const char *srv_job_state_name(int state);
/* "queued" ... -> state, or -1. */
int srv_job_state_parse(const char *s);
const char *srv_job_kind_name(int kind);

typedef struct srv_jobs srv_jobs;

/* Opens state_dir/jobs (creating it), lists the records found there (queued / running ones
 * without a live lease become interrupted), starts the workers and attaches to `loop` (the
 * daemon's: a wake-up handle and the lease heartbeat timer; the loop need not run yet, and must
 * be run by the calling thread). cfg is copied (state_dir, model_dir, data_dir, jobs_*); repo,
 * metrics and loop are borrowed and must outlive the jobs. jobs_backend = postgres: the records
 * and leases live in the database jobs_db instead (jobs_backend.h: srv_jobs_backend_pg; the
 * holder is "<replica_id or hostname>:<pid>"); state_dir/jobs still holds the working files.
 * NULL with err (DYN_EIO: state_dir unusable, or the jobs database unreachable: the message
 * names its host and database; DYN_ENOMEM). */
srv_jobs *srv_jobs_new(const srv_config *cfg, srv_repo *repo, srv_metrics *metrics,
                       uv_loop_t *loop, dyn_err *err);

/* An error for the HTTP layer: status, stable code (static string), message. */
typedef srv_err srv_job_err;

/* Validates the options `in` of a new job of `kind` (JSON object; numbers may be given as
 * strings, as they arrive from form fields and query strings) and returns the normalized spec
 * (new reference) with defaults filled in, or NULL with e set (400 unknown_option /
 * invalid_option / invalid_name, 404 model_not_found / dataset_not_found, 409 model_exists).
 * has_upload: the conversion's input is an uploaded file (then "model" must be absent). */
json_t *srv_jobs_spec(srv_jobs *js, int kind, const json_t *in, int has_upload, srv_job_err *e);

/* Queues a job with the spec (a reference is taken) and, for an upload, takes the file at
 * upload_path (renamed into the job's directory; the caller must not unlink it after success).
 * The upload is checked to be an ONNX or DyN model file (400 bad_model otherwise).
 * Returns the job's record (new reference) or NULL with e set (400 bad_model, 500 state_io,
 * 503 shutting_down, 503 store_unavailable: a model store did not take the upload). */
json_t *srv_jobs_submit(srv_jobs *js, int kind, json_t *spec, const char *upload_path,
                        srv_job_err *e);

/* The record of job `id` with live progress (new reference), or NULL with e set (400
 * invalid_job_id, 404 job_not_found). */
json_t *srv_jobs_get(srv_jobs *js, const char *id, srv_job_err *e);

/* Records of every job (newest first), only those in `state` when state >= 0 and of `kind`
 * when kind >= 0. New reference: {"jobs": [...], "counts": {"queued": n, ...}}. */
json_t *srv_jobs_list(srv_jobs *js, int state, int kind);

/* DELETE: a queued (or interrupted) job becomes cancelled at once (*now = 1); a running one
 * gets its cancel flag raised and turns cancelled when the engine stops (*now = 0). Returns the
 * record (new reference) or NULL with e (404 job_not_found, 409 job_finished). */
json_t *srv_jobs_cancel(srv_jobs *js, const char *id, int *now, srv_job_err *e);

/* Queues an interrupted job again (a fine-tune continues from its last checkpoint, a
 * conversion reruns). Returns the record or NULL with e (404 job_not_found, 409 not_resumable,
 * 409 job_claimed: another replica holds it, 503 shutting_down). */
json_t *srv_jobs_resume(srv_jobs *js, const char *id, srv_job_err *e);

/* SIGTERM: no new work is started; queued jobs become interrupted now; running ones are asked
 * to stop (cancel flag) and become interrupted, resumable, when they do. Returns at once. */
void srv_jobs_shutdown(srv_jobs *js);

/* Jobs running now (shutdown waits for 0). */
int srv_jobs_running(srv_jobs *js);

/* /metrics: appends the gauge dynd_job_lease_age_seconds{job,holder} of every queued or running
 * job somebody holds (its HELP and TYPE lines always; js may be NULL). Any thread; asks the
 * backend (a file read, or a query, per job). */
void srv_jobs_metrics_write(srv_jobs *js, FILE *f);

/* Closes the jobs' loop handles (uv_close; loop thread, before the loop is torn down, e.g.
 * before a uv_walk that closes every handle). Jobs keep running: the ends of their runs are
 * recorded by srv_jobs_free. Idempotent; NULL-safe. */
void srv_jobs_detach(srv_jobs *js);

/* Stops the workers and frees; returns 0. Called after the loop ended (it detaches first, and
 * runs the loop once to close its handles, if srv_jobs_detach was not called). Runs that end
 * within wait_s seconds are recorded. Workers still inside the engine after wait_s seconds are
 * left to the process exit (their records stay "running" on disk and read as interrupted at the
 * next start): nothing is freed then and the count of those workers is returned, so the caller
 * keeps the repository they may still publish into. */
int srv_jobs_free(srv_jobs *js, double wait_s);

#endif
