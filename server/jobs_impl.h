/* jobs_impl.h — internal to server/jobs.c (life cycle and scheduling on the loop),
 * server/jobs_fs.c (records and leases in state_dir) and server/job_run.c (running a conversion
 * or a fine-tune on the engine): not a public API. */
#ifndef SRV_JOBS_IMPL_H
#define SRV_JOBS_IMPL_H

#include <pthread.h>
#include <stdatomic.h>

#include "server/jobs.h"
#include "server/jobs_backend.h"

/* Phases a job reports ("phase" in the record). */
typedef enum {
    SRV_PHASE_QUEUED,
    SRV_PHASE_LOAD,      /* reading the model and the data */
    SRV_PHASE_CALIBRATE, /* conversion: calibration statistics */
    SRV_PHASE_FIT,       /* conversion: fitting layers; fine-tune (unfixed): refitting */
    SRV_PHASE_EVALUATE,
    SRV_PHASE_TRAIN,     /* fine-tune: an epoch */
    SRV_PHASE_PUBLISH,   /* writing the model into the repository */
    SRV_PHASE_DONE,
    SRV_PHASE_COUNT
} srv_job_phase;

enum { SRV_CANCEL_NONE, SRV_CANCEL_USER, SRV_CANCEL_SHUTDOWN, SRV_CANCEL_LEASE };

typedef struct srv_job {
    char id[32];
    int kind;            /* srv_job_kind */
    char dir[1200];      /* state_dir/jobs/<id> */
    json_t *spec;        /* normalized options; not changed while queued or running */
    pthread_mutex_t mu;  /* guards the fields marked (mu); held only to copy them */
    int state;           /* (mu) srv_job_state */
    double created_at, started_at, finished_at; /* (mu) epoch seconds, 0 = not yet */
    int attempts;        /* (mu) runs started */
    char error[512];     /* (mu) "" unless failed / interrupted */
    const char *error_code; /* (mu) static */
    char model[SRV_NAME_MAX + 1]; /* (mu) the published model, "" before */
    json_t *result;      /* (mu) conversion report / fine-tuning result (owned) */
    json_t *history;     /* (mu) fine-tuning epochs [{epoch, train_loss, ...}] (owned) */
    char layer_name[64]; /* (mu) conversion: the layer being fitted */
    double attempt_t0, attempt_p0; /* (mu) when this run started, and the progress then */
    long long lease;     /* (mu) our lease token (jobs_backend.h), 0 = we hold none */
    int remote;          /* (mu) record read from disk; another replica holds the job */
    uint64_t seq;        /* (mu) bumped by every record snapshot */
    /* progress, written by the worker, read without locks */
    atomic_llong progress_e9; /* 0..1e9 */
    atomic_int phase, layer, nlayers, epoch, epochs;
    atomic_llong step, steps;
    volatile int cancel;      /* the engine polls it */
    atomic_int cancel_reason; /* SRV_CANCEL_* */
    /* record writes: one at a time, never an older snapshot over a newer one */
    pthread_mutex_t write_mu;
    uint64_t written_seq;     /* (write_mu) */
    double last_write;        /* worker only: dyn_now() of the last progress write */
    struct srv_job *next;     /* (jobs mu) link in the queue, then in the list of finished runs */
    /* one run, handed to a worker by the loop thread and back (jobs.c: dispatch, on_wake) */
    struct srv_jobs_worker *worker; /* (loop) the worker running it, NULL when none */
    int run_rc;               /* the run's result: written by the worker, read on the loop */
    dyn_err run_err;
    atomic_int refs;          /* the list's reference + one per thread using the job (job_unref) */
} srv_job;

/* A worker thread: waits on `go` for the job the loop thread hands it (job), runs it, puts it
 * on the list of finished runs and wakes the loop. */
typedef struct srv_jobs_worker {
    struct srv_jobs *js;
    uv_thread_t tid;
    uv_sem_t go;        /* posted by the loop thread: job set, or quit */
    srv_job *job;       /* the next run; NULL with quit */
    int quit;
    int busy;           /* (loop) a job was handed over and has not come back */
} srv_jobs_worker;

struct srv_jobs {
    char state_dir[1024], jobs_dir[1100], model_dir[1024], data_dir[1024];
    int max_concurrent, lease_s, threads;
    srv_repo *repo;
    srv_metrics *metrics;
    srv_jobs_backend *be; /* records and leases (jobs_backend.h) */
    pthread_mutex_t mu; /* guards all/n, the queue, the finished runs (done), stopping,
                         * nrunning, attached */
    srv_job **all;      /* every job known, oldest first (one reference each; jobs_keep prunes
                         * the oldest finished ones) */
    int keep;           /* jobs_keep: finished records kept */
    int n, cap;
    srv_job *qhead, *qtail; /* queued, oldest first */
    srv_job *done;          /* runs the workers finished, for the loop thread */
    int stopping, nrunning;
    /* the loop (jobs.c: "Jobs on libuv") */
    uv_loop_t *loop;
    uv_async_t wake;        /* a submission, a resume or a finished run: the loop dispatches */
    uv_timer_t heartbeat;   /* renews our leases, polls the backend */
    int attached;           /* (mu) the handles are open: uv_async_send is allowed */
    int claiming;           /* (loop) a claim_next is out */
    int claims;             /* asks the backend for others' jobs (role != serve) */
    srv_jobs_worker *workers;
    int nworkers;
    atomic_int workers_alive;
};

/* Fills e (status, static code, printf message): srv_err_set (server.h). */
#define srv__job_err_set srv_err_set

/* Runs job j (kind and spec) on the engine: loads, converts or fine-tunes, publishes the model
 * (j->model set under j->mu). Returns 0, DYN_ECANCEL (j->cancel was raised), or another DYN_E*
 * with err set — a message for the job's user. Called on a worker thread (job_run.c). */
int srv__job_execute(srv_jobs *js, srv_job *j, dyn_err *err);
/* A conversion's spec asks for nothing it cannot verify: images to measure agreement on (calib
 * or eval) unless force_publish or min_agreement = 0, images for target_agreement, one budget.
 * `in` holds the options as given, `out` the normalized spec (may be the same). 0, or -1 with e
 * (400). job_run.c. */
int srv__job_conv_data_check(const json_t *in, const json_t *out, srv_job_err *e);

/* Sets the progress fraction (0..1; never goes backwards within a run). */
void srv__job_progress_set(srv_job *j, double frac);
/* Writes the record when the last write is older than a few seconds (worker thread). */
void srv__job_record_maybe(srv_jobs *js, srv_job *j);
/* Writes the record now (any thread). 0 or DYN_EIO with err. */
int srv__job_record_write(srv_jobs *js, srv_job *j, dyn_err *err);
/* srv_jobs_new on backend `be` (owned from now on, freed on failure too; NULL: fs on
 * state_dir/jobs). The seam for other backends and for tests. */
srv_jobs *srv__jobs_new_with(const srv_config *cfg, srv_repo *repo, srv_metrics *metrics,
                             uv_loop_t *loop, srv_jobs_backend *be, dyn_err *err);
/* Removes path, a file or a directory tree. Best effort. jobs_fs.c. */
void srv__remove_tree(const char *path);

#endif
