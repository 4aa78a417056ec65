/* batcher.h — per-model-version request queue, dynamic batching, deadlines, backpressure.
 *
 * Design. A batcher serves one loaded model version. Requests (srv_infer: n samples in, n rows
 * of outputs back) wait in a bounded FIFO. Each of cfg.workers threads owns one dyn_exec sized
 * for cfg.max_batch and loops: take the oldest request, then — with batching on — keep taking
 * requests while they fit in max_batch, waiting at most max_queue_delay_us for company; drop the
 * requests whose deadline passed (status SRV_INFER_TIMEOUT), copy the rest into one input,
 * run one forward, copy each request's rows out and call each request's `done` callback.
 * The model is only read (engine/model.h), so many workers and versions share it.
 *
 * Threads and locks: one mutex per batcher guards the queue and the counters; `done` callbacks
 * run on a worker thread with no batcher lock held. A request bigger than max_batch runs alone,
 * in max_batch chunks.
 *
 * Promise (as libuv's): if srv_batcher_submit returns an error, `done` is never called; if it
 * returns 0, `done` is called exactly once, also when the batcher is stopped (status
 * SRV_INFER_SHUTDOWN for requests that never ran).
 */
#ifndef SRV_BATCHER_H
#define SRV_BATCHER_H

#include <stdint.h>

#include "model.h"
#include "server/config.h"

typedef enum {
    SRV_INFER_OK = 0,
    SRV_INFER_TIMEOUT,  /* the deadline passed while queued */
    SRV_INFER_SHUTDOWN, /* the batcher stopped before the request ran */
    SRV_INFER_DEVICE_ERROR, /* the model's device failed the forward (srv_infer.error says why) */
    SRV_INFER_STATUS_COUNT
} srv_infer_status;

typedef struct srv_infer srv_infer;
struct srv_infer {
    int n;            /* samples */
    const float *x;   /* n * in_numel floats, borrowed until done */
    float *y;         /* n * out_numel floats, written before done */
    double deadline;  /* dyn_now() seconds; 0 = none */
    int status;       /* srv_infer_status, set before done */
    double t_queued, t_start, t_end; /* dyn_now() at submit, compute start / end (stats) */
    int batch_size;   /* samples in the forward this request ran in */
    char error[200];  /* SRV_INFER_DEVICE_ERROR: the engine's message */
    void (*done)(srv_infer *req); /* called once, on a worker thread, no lock held */
    void *arg;        /* for done */
    srv_infer *next;  /* queue link, owned by the batcher while queued */
};

/* Triton statistics-extension counters (cumulative). Per request (each request of a batch is
 * charged the batch's whole time, as Triton does): success, queue, compute_input (copying the
 * inputs into the batch), compute_infer (the forward), compute_output (copying the outputs out);
 * fail counts requests refused or dropped here (queue full, deadline passed, stopped) and those
 * counted by srv_batcher_count_fail, with their time since submission / arrival. */
typedef struct srv_batch_stats {
    uint64_t success, fail, inferences, executions;
    uint64_t queue_ns, compute_ns, success_ns, fail_ns;
    uint64_t input_ns, infer_ns, output_ns; /* per request, summed */
    double last_inference; /* epoch seconds of the last success, 0 = none */
} srv_batch_stats;

/* Per executed batch size (Triton's batch_stats): executions of that size and their time. */
typedef struct srv_batch_size_stats {
    int batch_size;
    uint64_t count, input_ns, infer_ns, output_ns;
} srv_batch_size_stats;

typedef struct srv_batcher srv_batcher;

/* Observer of batch sizes (metrics); may be NULL. Called on a worker thread. */
typedef void (*srv_batch_observer)(void *ctx, const char *model, int batch_size);

/* Starts cfg->workers threads for model m (borrowed: it must outlive the batcher). `label`
 * names the model in observations (copied). engine_threads: dyn_threads_set value per worker.
 * Returns NULL with err on failure (exec allocation, thread start). Free with
 * srv_batcher_free. */
srv_batcher *srv_batcher_new(dyn_model *m, const srv_batch_cfg *cfg, int engine_threads,
                             const char *label, srv_batch_observer obs, void *obs_ctx,
                             dyn_err *err);

/* Queues req (n >= 1, x, y, done set). Returns 0, or -1 when the queue is full (the caller
 * answers 503) or -2 when the batcher is stopping. req->next, status and timings are set here. */
int srv_batcher_submit(srv_batcher *b, srv_infer *req);

/* Stops accepting; requests already queued still run (drain) unless `cancel_queued`, in which
 * case they complete at once with SRV_INFER_SHUTDOWN. Returns at once; srv_batcher_free waits. */
void srv_batcher_stop(srv_batcher *b, int cancel_queued);

/* Stops (draining the queue), joins the workers and frees. Must not be called from a `done`
 * callback or a worker. Safe on NULL. */
void srv_batcher_free(srv_batcher *b);

/* Requests queued now (not counting those running). */
int srv_batcher_depth(srv_batcher *b);
void srv_batcher_stats_get(srv_batcher *b, srv_batch_stats *out);
/* The batch sizes executed so far, ascending, as a new malloc'd array of *n entries (free()
 * it); NULL with *n = 0 when nothing ran yet or on ENOMEM. */
srv_batch_size_stats *srv_batcher_batch_stats(srv_batcher *b, int *n);
/* Counts a request for this model that failed before reaching the queue (a bad input), ns
 * after it arrived. */
void srv_batcher_count_fail(srv_batcher *b, uint64_t ns);
const srv_batch_cfg *srv_batcher_cfg(const srv_batcher *b);

/* Bytes of the buffers the workers own (execution inputs and activations, batch input): a lower
 * bound of what the batcher holds (scratch areas and allocator overhead come on top). */
long long srv_batcher_bytes(const srv_batcher *b);

#endif
