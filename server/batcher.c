/* batcher.c — see batcher.h for the design. */
#include "server/batcher.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <time.h>

typedef struct worker {
    struct srv_batcher *b;
    pthread_t thread;
    dyn_exec *exec;
    float *xbuf; /* max_batch * in_numel */
    int started;
} worker;

struct srv_batcher {
    dyn_model *model;
    srv_batch_cfg cfg;
    int engine_threads;
    char label[65];
    int64_t in_numel, out_numel;
    srv_batch_observer obs;
    void *obs_ctx;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    srv_infer *head, *tail; /* FIFO, guarded by mu */
    int depth, stopping, cancel;
    srv_batch_stats stats; /* guarded by mu */
    srv_batch_size_stats *sizes; /* batch sizes seen, ascending; guarded by mu */
    int nsizes, sizes_cap;
    int nworkers;
    worker *workers;
};

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* mu held. */
static srv_infer *pop(srv_batcher *b) {
    srv_infer *r = b->head;
    if (r) {
        b->head = r->next;
        if (!b->head) b->tail = NULL;
        r->next = NULL;
        b->depth--;
    }
    return r;
}

static void abs_deadline(struct timespec *ts, double from_now_s) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    long long ns = (long long)(from_now_s * 1e9) + ts->tv_nsec;
    ts->tv_sec += ns / 1000000000LL;
    ts->tv_nsec = ns % 1000000000LL;
}

/* Takes one batch off the queue (mu held on entry and exit). Returns the list, NULL to exit. */
static srv_infer *gather(srv_batcher *b) {
    while (!b->head && !b->stopping) pthread_cond_wait(&b->cv, &b->mu);
    if (!b->head) return NULL; /* stopping and drained */
    srv_infer *first = pop(b), *last = first;
    int n = first->n;
    if (!b->cfg.batching || n >= b->cfg.max_batch) return first;
    struct timespec until;
    abs_deadline(&until, b->cfg.max_queue_delay_us * 1e-6);
    while (n < b->cfg.max_batch) {
        if (b->head) {
            if (n + b->head->n > b->cfg.max_batch) break;
            srv_infer *r = pop(b);
            n += r->n;
            last->next = r;
            last = r;
            continue;
        }
        if (b->stopping || b->cfg.max_queue_delay_us == 0) break;
        if (pthread_cond_timedwait(&b->cv, &b->mu, &until) == ETIMEDOUT && !b->head) break;
    }
    return first;
}

static void finish(srv_infer *list) {
    while (list) {
        srv_infer *next = list->next; /* done may free the request */
        list->next = NULL;
        list->done(list);
        list = next;
    }
}

/* Adds one execution of batch size k to b->sizes (mu held). Dropped on ENOMEM. */
static void size_add(srv_batcher *b, int k, double in_s, double infer_s, double out_s) {
    int i = 0;
    while (i < b->nsizes && b->sizes[i].batch_size < k) i++;
    if (i == b->nsizes || b->sizes[i].batch_size != k) {
        if (b->nsizes == b->sizes_cap) {
            int cap = b->sizes_cap ? b->sizes_cap * 2 : 8;
            srv_batch_size_stats *ns = realloc(b->sizes, sizeof *ns * (size_t)cap);
            if (!ns) return;
            b->sizes = ns;
            b->sizes_cap = cap;
        }
        memmove(&b->sizes[i + 1], &b->sizes[i], sizeof *b->sizes * (size_t)(b->nsizes - i));
        memset(&b->sizes[i], 0, sizeof *b->sizes);
        b->sizes[i].batch_size = k;
        b->nsizes++;
    }
    srv_batch_size_stats *s = &b->sizes[i];
    s->count++;
    s->input_ns += (uint64_t)(in_s * 1e9);
    s->infer_ns += (uint64_t)(infer_s * 1e9);
    s->output_ns += (uint64_t)(out_s * 1e9);
}

/* Runs the live requests of `list` (deadline checked) in one forward, or chunked for one
 * oversized request. No lock held. */
static void run_batch(worker *w, srv_infer *list) {
    srv_batcher *b = w->b;
    double now = dyn_now();
    int n = 0, nreq = 0;
    srv_infer *live = NULL, **tail = &live, *dead = NULL;
    for (srv_infer *r = list, *next; r; r = next) {
        next = r->next;
        r->next = NULL;
        if (r->deadline > 0 && now > r->deadline) {
            r->status = SRV_INFER_TIMEOUT;
            r->next = dead;
            dead = r;
        } else {
            *tail = r;
            tail = &r->next;
            n += r->n;
            nreq++;
        }
    }
    double t_in = 0, t_infer = 0, t_out = 0; /* this request's (or batch's) share */
    int execs = 0, failed = 0; /* failed: the device failed a forward (engine/backend.h) */
    if (live) {
        const int mb = w->exec->max_batch;
        if (live->n > mb) { /* one oversized request: chunks of max_batch, one execution each */
            for (int s = 0; s < live->n; s += mb) {
                int k = DYN_MIN(mb, live->n - s);
                double a = dyn_now();
                const dyn_tensor *out = dyn_exec_forward(w->exec, live->x + (int64_t)s * b->in_numel, k);
                double c = dyn_now();
                if (!out) {
                    failed = 1;
                    break;
                }
                memcpy(live->y + (int64_t)s * b->out_numel, out->data,
                       sizeof(float) * (size_t)(k * b->out_numel));
                double d = dyn_now();
                t_infer += c - a;
                t_out += d - c;
                execs++;
                pthread_mutex_lock(&b->mu);
                size_add(b, k, 0, c - a, d - c);
                pthread_mutex_unlock(&b->mu);
            }
        } else {
            int64_t off = 0;
            double a = dyn_now();
            for (srv_infer *r = live; r; r = r->next) {
                memcpy(w->xbuf + off, r->x, sizeof(float) * (size_t)(r->n * b->in_numel));
                off += r->n * b->in_numel;
            }
            double c = dyn_now();
            const dyn_tensor *out = dyn_exec_forward(w->exec, w->xbuf, n);
            double d = dyn_now();
            off = 0;
            failed = out == NULL;
            for (srv_infer *r = live; r && out; r = r->next) {
                memcpy(r->y, out->data + off, sizeof(float) * (size_t)(r->n * b->out_numel));
                off += r->n * b->out_numel;
            }
            double e = dyn_now();
            t_in = c - a;
            t_infer = d - c;
            t_out = e - d;
            execs = 1;
            pthread_mutex_lock(&b->mu);
            size_add(b, n, t_in, t_infer, t_out);
            pthread_mutex_unlock(&b->mu);
        }
    }
    double end = dyn_now(), wall = wall_now();
    pthread_mutex_lock(&b->mu);
    for (srv_infer *r = live; r; r = r->next) {
        r->t_start = now;
        r->t_end = end;
        r->batch_size = n;
        if (failed) {
            r->status = SRV_INFER_DEVICE_ERROR;
            snprintf(r->error, sizeof r->error, "%s", dyn_exec_error(w->exec));
            b->stats.fail++;
            b->stats.fail_ns += (uint64_t)((end - r->t_queued) * 1e9);
            continue;
        }
        r->status = SRV_INFER_OK;
        b->stats.success++;
        b->stats.inferences += (uint64_t)r->n;
        b->stats.queue_ns += (uint64_t)((now - r->t_queued) * 1e9);
        b->stats.success_ns += (uint64_t)((end - r->t_queued) * 1e9);
        b->stats.input_ns += (uint64_t)(t_in * 1e9);
        b->stats.infer_ns += (uint64_t)(t_infer * 1e9);
        b->stats.output_ns += (uint64_t)(t_out * 1e9);
    }
    for (srv_infer *r = dead; r; r = r->next) {
        b->stats.fail++;
        b->stats.fail_ns += (uint64_t)((now - r->t_queued) * 1e9);
    }
    if (live) {
        b->stats.executions += (uint64_t)execs;
        b->stats.compute_ns += (uint64_t)((end - now) * 1e9);
        b->stats.last_inference = wall;
    }
    pthread_mutex_unlock(&b->mu);
    if (live && b->obs) b->obs(b->obs_ctx, b->label, n);
    finish(live);
    finish(dead);
}

static void *worker_main(void *arg) {
    worker *w = arg;
    srv_batcher *b = w->b;
    dyn_threads_set(b->engine_threads);
    for (;;) {
        pthread_mutex_lock(&b->mu);
        srv_infer *list = gather(b);
        pthread_mutex_unlock(&b->mu);
        if (!list) break;
        run_batch(w, list);
    }
    return NULL;
}

srv_batcher *srv_batcher_new(dyn_model *m, const srv_batch_cfg *cfg, int engine_threads,
                             const char *label, srv_batch_observer obs, void *obs_ctx,
                             dyn_err *err) {
    srv_batcher *b = calloc(1, sizeof *b);
    if (!b) return dyn_err_set(err, DYN_ENOMEM, "batcher: out of memory"), NULL;
    b->model = m;
    b->cfg = *cfg;
    if (!b->cfg.batching) b->cfg.max_batch = DYN_MAX(1, b->cfg.max_batch);
    b->engine_threads = engine_threads;
    snprintf(b->label, sizeof b->label, "%s", label);
    b->in_numel = dyn_shape_numel(&m->input);
    b->out_numel = dyn_model_outputs(m);
    b->obs = obs;
    b->obs_ctx = obs_ctx;
    pthread_mutex_init(&b->mu, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->cv, &ca);
    pthread_condattr_destroy(&ca);
    b->nworkers = cfg->workers;
    b->workers = calloc((size_t)b->nworkers, sizeof(worker));
    if (!b->workers) {
        dyn_err_set(err, DYN_ENOMEM, "batcher: out of memory");
        srv_batcher_free(b);
        return NULL;
    }
    /* Batching off still runs a request of n samples in one forward when n <= max_batch. */
    int exec_batch = b->cfg.max_batch;
    for (int i = 0; i < b->nworkers; i++) {
        worker *w = &b->workers[i];
        w->b = b;
        w->exec = dyn_exec_new(m, exec_batch, 0, err);
        w->xbuf = dyn_alloc(sizeof(float) * (size_t)(exec_batch * b->in_numel));
        if (!w->exec || !w->xbuf) {
            if (w->exec && !w->xbuf) dyn_err_set(err, DYN_ENOMEM, "batcher: out of memory");
            srv_batcher_free(b);
            return NULL;
        }
    }
    for (int i = 0; i < b->nworkers; i++) {
        worker *w = &b->workers[i];
        if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
            dyn_err_set(err, DYN_ENOMEM, "batcher: cannot start a worker thread");
            srv_batcher_free(b);
            return NULL;
        }
        w->started = 1;
    }
    return b;
}

int srv_batcher_submit(srv_batcher *b, srv_infer *req) {
    req->next = NULL;
    req->status = SRV_INFER_OK;
    req->t_queued = dyn_now();
    pthread_mutex_lock(&b->mu);
    int rc = b->stopping ? -2 : b->depth >= b->cfg.queue_capacity ? -1 : 0;
    if (!rc) {
        if (b->tail) b->tail->next = req;
        else b->head = req;
        b->tail = req;
        b->depth++;
        pthread_cond_signal(&b->cv);
    } else {
        b->stats.fail++;
    }
    pthread_mutex_unlock(&b->mu);
    return rc;
}

void srv_batcher_stop(srv_batcher *b, int cancel_queued) {
    if (!b) return;
    srv_infer *cancelled = NULL;
    pthread_mutex_lock(&b->mu);
    b->stopping = 1;
    if (cancel_queued) {
        cancelled = b->head;
        double now = dyn_now();
        for (srv_infer *r = cancelled; r; r = r->next) {
            r->status = SRV_INFER_SHUTDOWN;
            b->stats.fail++;
            b->stats.fail_ns += (uint64_t)((now - r->t_queued) * 1e9);
        }
        b->head = b->tail = NULL;
        b->depth = 0;
    }
    pthread_cond_broadcast(&b->cv);
    pthread_mutex_unlock(&b->mu);
    finish(cancelled);
}

void srv_batcher_free(srv_batcher *b) {
    if (!b) return;
    srv_batcher_stop(b, 0);
    for (int i = 0; b->workers && i < b->nworkers; i++) {
        worker *w = &b->workers[i];
        if (w->started) pthread_join(w->thread, NULL);
        dyn_exec_free(w->exec);
        dyn_free(w->xbuf);
    }
    free(b->workers);
    free(b->sizes);
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
    free(b);
}

int srv_batcher_depth(srv_batcher *b) {
    pthread_mutex_lock(&b->mu);
    int d = b->depth;
    pthread_mutex_unlock(&b->mu);
    return d;
}

void srv_batcher_stats_get(srv_batcher *b, srv_batch_stats *out) {
    pthread_mutex_lock(&b->mu);
    *out = b->stats;
    pthread_mutex_unlock(&b->mu);
}

const srv_batch_cfg *srv_batcher_cfg(const srv_batcher *b) { return &b->cfg; }

srv_batch_size_stats *srv_batcher_batch_stats(srv_batcher *b, int *n) {
    pthread_mutex_lock(&b->mu);
    srv_batch_size_stats *out = b->nsizes ? malloc(sizeof *out * (size_t)b->nsizes) : NULL;
    *n = out ? b->nsizes : 0;
    if (out) memcpy(out, b->sizes, sizeof *out * (size_t)b->nsizes);
    pthread_mutex_unlock(&b->mu);
    return out;
}

void srv_batcher_count_fail(srv_batcher *b, uint64_t ns) {
    pthread_mutex_lock(&b->mu);
    b->stats.fail++;
    b->stats.fail_ns += ns;
    pthread_mutex_unlock(&b->mu);
}

long long srv_batcher_bytes(const srv_batcher *b) {
    long long floats = 0;
    for (int i = 0; b->workers && i < b->nworkers; i++) {
        const dyn_exec *e = b->workers[i].exec;
        if (!e) continue;
        floats += dyn_tensor_numel(&e->input) + (long long)e->max_batch * b->in_numel; /* + xbuf */
        for (int k = 0; k < e->model->nnodes; k++) floats += dyn_tensor_numel(&e->act[k]);
    }
    return floats * (long long)sizeof(float) + (long long)sizeof *b +
           (long long)b->nworkers * (long long)sizeof(worker);
}
