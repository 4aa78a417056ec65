/* jobs.c — the jobs' life cycle: queue and workers on the daemon's libuv loop, records and
 * leases (through the backend, jobs_backend.h: jobs_fs.c), recovery after a crash, cancel /
 * resume / shutdown. Running a job on the engine is job_run.c. See jobs.h for the states, the
 * files and the replica protocol.
 *
 * Jobs on libuv. The loop thread (the daemon's main thread) schedules; jobs_max_concurrent
 * uv_thread_t workers do the long work — not uv_queue_work: libuv's shared pool serves the
 * repository scans and file I/O, and a job holds its thread for minutes.
 *   - A submission or a resume (an HTTP thread) writes the record, puts the job on the queue
 *     (js->mu) and uv_async_send()s js->wake. Sends coalesce: on_wake handles all that is
 *     pending — records the finished runs, then dispatch hands queued jobs to idle workers.
 *   - dispatch (loop thread) writes the "running" record and posts the worker's semaphore; the
 *     run's work is embedded in the job (j->worker, j->run_rc, j->run_err). The worker runs the
 *     engine, puts the job on js->done and wakes the loop; finish_runs (loop thread) records the
 *     end (state, record, lease release, metrics, retention) and frees the worker.
 *   - The lease heartbeat is a uv_timer_t (every jobs_lease_s/3 s): the backend renews our
 *     leases and reports, as events on the loop thread, jobs taken over by another replica
 *     (their runs are cancelled) and cancels requested through another replica.
 *   - A worker left idle with nothing queued asks the backend for work (claim_next, answered on
 *     the loop: a job queued by another replica, or held under an expired lease; fs has none)
 *     at start, after each run and at each heartbeat; a job handed over is adopted under that
 *     lease and queued here (job_adopt).
 *   - Cancelling a queued job stays synchronous (the HTTP thread takes it off the queue under
 *     js->mu and answers "cancelled"); a running one gets its cancel flag, which the engine
 *     polls; its end is then recorded like any other.
 *   - Shutdown: srv_jobs_shutdown interrupts the queue and raises every cancel flag; the daemon
 *     drains while srv_jobs_running > 0, then srv_jobs_detach closes the handles (uv_close)
 *     before the loop's teardown, and srv_jobs_free records runs that end within its wait and
 *     leaves workers still in the engine to the process exit.
 *
 * Locks: js->mu guards the job list and the queue; j->mu a job's small fields; j->write_mu one
 * job's record file. A j->mu is taken under js->mu only to read a state (prune), never the
 * other way round (a transition takes js->mu, drops it, then takes j->mu), and none is held
 * during engine work; uv_async_send is called under js->mu (it does not block). A job popped
 * from the queue belongs to its run (the loop thread, then the worker, then the loop thread
 * again); a job still in the queue to whoever removes it under js->mu (DELETE, shutdown).
 * Job structs live until srv_jobs_free, so a pointer found under js->mu stays valid after.
 */
#include "server/jobs_impl.h"

#include <dirent.h>
#include <limits.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/file.h"
#include "server/log.h"
#include "server/store.h"

static const char *const STATE_NAMES[] = {"queued",    "running",  "succeeded",
                                          "failed",    "cancelled", "interrupted"};
static const char *const KIND_NAMES[] = {"conversion", "finetune"};
static const char *const PHASE_NAMES[] = {"queued",   "load",  "calibrate", "fit",
                                          "evaluate", "train", "publish",   "done"};
_Static_assert(DYN_ARRAY_LEN(STATE_NAMES) == SRV_JOB_STATE_COUNT, "state names");
_Static_assert(DYN_ARRAY_LEN(PHASE_NAMES) == SRV_PHASE_COUNT, "phase names");

const char *srv_job_state_name(int s) {
    return s >= 0 && s < SRV_JOB_STATE_COUNT ? STATE_NAMES[s] : "?";
}
const char *srv_job_kind_name(int k) { return k >= 0 && k < SRV_JOB_KIND_COUNT ? KIND_NAMES[k] : "?"; }
int srv_job_state_parse(const char *s) {
    for (int i = 0; s && i < SRV_JOB_STATE_COUNT; i++)
        if (!strcmp(STATE_NAMES[i], s)) return i;
    return -1;
}
static int kind_parse(const char *s) {
    for (int i = 0; s && i < SRV_JOB_KIND_COUNT; i++)
        if (!strcmp(KIND_NAMES[i], s)) return i;
    return -1;
}
static int phase_parse(const char *s) {
    for (int i = 0; s && i < SRV_PHASE_COUNT; i++)
        if (!strcmp(PHASE_NAMES[i], s)) return i;
    return SRV_PHASE_QUEUED;
}
static int terminal(int s) {
    return s == SRV_JOB_SUCCEEDED || s == SRV_JOB_FAILED || s == SRV_JOB_CANCELLED;
}

static double epoch_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

#define jerr srv__job_err_set

/* ---- files ---- */

static void job_file(const srv_job *j, const char *name, char *buf, size_t n) {
    snprintf(buf, n, "%s/%s", j->dir, name);
}

/* A finished job's working files (upload, input snapshot, checkpoints); the record stays.
 * With a model store, also their copies there (jobs/<id>/, store.h): on a thread of the
 * store's, since this runs on the loop thread too; best effort, logged. */
static void job_files_remove(const srv_job *j) {
    static const char *const FILES[] = {"upload.bin", "input.dyn", "ckpt"};
    char p[1300];
    for (size_t i = 0; i < DYN_ARRAY_LEN(FILES); i++) {
        job_file(j, FILES[i], p, sizeof p);
        srv__remove_tree(p);
    }
    srv_store *st = srv_store_active();
    if (st) srv_store_job_delete_async(st, j->id);
}

/* ---- ids ---- */

static int id_valid(const char *id) {
    size_t n = id ? strlen(id) : 0;
    if (n < 3 || n >= sizeof(((srv_job *)0)->id)) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9') || id[i] == '-'))
            return 0;
    return 1;
}

static void id_new(int kind, char *id, size_t n) {
    unsigned char b[6];
    if (getrandom(b, sizeof b, 0) != (ssize_t)sizeof b) { /* no entropy: time + counter */
        static atomic_uint c;
        uint64_t t = (uint64_t)(epoch_now() * 1e6) ^ ((uint64_t)atomic_fetch_add(&c, 1) << 40);
        memcpy(b, &t, sizeof b);
    }
    snprintf(id, n, "%s-%02x%02x%02x%02x%02x%02x", kind == SRV_JOB_FINETUNE ? "ft" : "conv", b[0],
             b[1], b[2], b[3], b[4], b[5]);
}

/* ---- records ---- */

static double eta_locked(const srv_job *j, double p) {
    if (j->state != SRV_JOB_RUNNING || p <= j->attempt_p0 + 0.005) return -1;
    double el = epoch_now() - j->attempt_t0;
    return el * (1 - p) / (p - j->attempt_p0);
}

/* Epoch seconds as RFC 3339 UTC with milliseconds ("2026-11-22T19:56:12.345Z"), or null. */
static json_t *time_json(double t) {
    if (!(t > 0)) return json_null();
    time_t s = (time_t)t;
    struct tm tm;
    gmtime_r(&s, &tm);
    char buf[40], out[48];
    strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(out, sizeof out, "%s.%03dZ", buf, (int)((t - (double)s) * 1000) % 1000);
    return json_string(out);
}

static double time_parse(const json_t *v) {
    const char *s = json_string_value(v);
    struct tm tm;
    memset(&tm, 0, sizeof tm);
    const char *rest = s ? strptime(s, "%Y-%m-%dT%H:%M:%S", &tm) : NULL;
    if (!rest) return 0;
    double frac = *rest == '.' ? atof(rest) : 0;
    return (double)timegm(&tm) + frac;
}

/* The record (new reference); j->mu held. */
static json_t *job_json_locked(srv_job *j) {
    double p = (double)atomic_load(&j->progress_e9) * 1e-9;
    int phase = atomic_load(&j->phase);
    json_t *o = json_pack("{s:s, s:s, s:s, s:o, s:o, s:o, s:i, s:O, s:f, s:s, s:o}", "id", j->id,
                          "kind", srv_job_kind_name(j->kind), "state", srv_job_state_name(j->state),
                          "created_at", time_json(j->created_at), "started_at",
                          time_json(j->started_at), "finished_at", time_json(j->finished_at),
                          "attempts", j->attempts, "options", j->spec, "progress", p, "phase",
                          PHASE_NAMES[phase >= 0 && phase < SRV_PHASE_COUNT ? phase : 0],
                          "resumable", json_boolean(j->state == SRV_JOB_INTERRUPTED));
    if (!o) return NULL;
    double eta = eta_locked(j, p);
    json_object_set_new(o, "eta_s", eta >= 0 ? json_real(round(eta * 10) / 10) : json_null());
    json_object_set_new(o, "output", json_incref(json_object_get(j->spec, "output")));
    json_object_set_new(o, "model", j->model[0] ? json_string(j->model) : json_null());
    json_object_set_new(o, "error", j->error[0] ? json_string(j->error) : json_null());
    json_object_set_new(o, "error_code", j->error_code ? json_string(j->error_code) : json_null());
    json_t *res = j->result ? json_deep_copy(j->result) : json_null();
    json_object_del(res, "layers"); /* conversions: "layers" below */
    json_object_set_new(o, "result", res);
    if (j->kind == SRV_JOB_FINETUNE) {
        json_object_set_new(o, "epoch", json_integer(atomic_load(&j->epoch)));
        json_object_set_new(o, "epochs", json_integer(atomic_load(&j->epochs)));
        json_object_set_new(o, "step", json_integer(atomic_load(&j->step)));
        json_object_set_new(o, "steps", json_integer(atomic_load(&j->steps)));
        json_object_set_new(o, "history", j->history ? json_deep_copy(j->history) : json_array());
    } else {
        json_object_set_new(o, "layer",
                            json_pack("{s:i, s:i, s:s}", "index", atomic_load(&j->layer), "count",
                                      atomic_load(&j->nlayers), "name", j->layer_name));
        if (atomic_load(&j->epochs) > 0) { /* finetune_epochs: training after the fit */
            json_object_set_new(o, "epoch", json_integer(atomic_load(&j->epoch)));
            json_object_set_new(o, "epochs", json_integer(atomic_load(&j->epochs)));
        }
        json_t *layers = j->result ? json_object_get(j->result, "layers") : NULL;
        json_object_set_new(o, "layers", layers ? json_deep_copy(layers) : json_array());
    }
    return o;
}

static json_t *job_json(srv_job *j) {
    pthread_mutex_lock(&j->mu);
    json_t *o = job_json_locked(j);
    pthread_mutex_unlock(&j->mu);
    return o;
}

int srv__job_record_write(srv_jobs *js, srv_job *j, dyn_err *err) {
    pthread_mutex_lock(&j->mu);
    uint64_t seq = ++j->seq;
    long long lease = j->lease;
    json_t *o = job_json_locked(j);
    pthread_mutex_unlock(&j->mu);
    if (!o || json_object_set_new(o, "format", json_string("dynd-job-1"))) {
        json_decref(o);
        return dyn_err_set(err, DYN_ENOMEM, "out of memory writing the job record");
    }
    int rc = 0;
    pthread_mutex_lock(&j->write_mu);
    if (seq > j->written_seq) { /* else a newer snapshot is already stored */
        rc = js->be->record_write(js->be->state, j->id, lease, o, err);
        if (!rc) j->written_seq = seq;
    }
    pthread_mutex_unlock(&j->write_mu);
    json_decref(o);
    return rc;
}

static void record_write_logged(srv_jobs *js, srv_job *j) {
    dyn_err err = {0};
    if (srv__job_record_write(js, j, &err))
        srv_log(SRV_LOG_ERROR, "job record not written",
                json_pack("{s:s, s:s}", "job", j->id, "error", err.msg));
}

void srv__job_record_maybe(srv_jobs *js, srv_job *j) {
    double now = dyn_now();
    if (now - j->last_write < 2.0) return;
    j->last_write = now;
    record_write_logged(js, j);
}

void srv__job_progress_set(srv_job *j, double frac) {
    if (!(frac >= 0)) frac = 0;
    if (frac > 1) frac = 1;
    long long v = (long long)(frac * 1e9);
    long long cur = atomic_load(&j->progress_e9);
    while (v > cur && !atomic_compare_exchange_weak(&j->progress_e9, &cur, v)) {
    }
}

static srv_job *job_alloc(srv_jobs *js, const char *id, int kind) {
    srv_job *j = calloc(1, sizeof *j);
    if (!j) return NULL;
    snprintf(j->id, sizeof j->id, "%s", id);
    snprintf(j->dir, sizeof j->dir, "%s/%s", js->jobs_dir, id);
    j->kind = kind;
    atomic_init(&j->refs, 1);
    pthread_mutex_init(&j->mu, NULL);
    pthread_mutex_init(&j->write_mu, NULL);
    return j;
}

static void job_free(srv_job *j) {
    json_decref(j->spec);
    json_decref(j->result);
    json_decref(j->history);
    pthread_mutex_destroy(&j->mu);
    pthread_mutex_destroy(&j->write_mu);
    free(j);
}

/* A job is freed when its last reference goes: the list holds one while the job is listed, and
 * every function that hands out a job pointer (list_copy, list_find, job_load, job_lookup, the
 * worker's pop from the queue) takes one that its caller gives back with job_unref. */
static void job_ref(srv_job *j) { atomic_fetch_add(&j->refs, 1); }

static void job_unref(srv_job *j) {
    if (j && atomic_fetch_sub(&j->refs, 1) == 1) job_free(j);
}

static double jnum(const json_t *o, const char *k) {
    const json_t *v = json_object_get(o, k);
    return json_is_number(v) ? json_number_value(v) : 0;
}

/* Sets j's fields from a record read from disk (j->mu held, or j not shared yet). */
static int job_apply_record_locked(srv_job *j, json_t *rec) {
    int st = srv_job_state_parse(json_string_value(json_object_get(rec, "state")));
    json_t *spec = json_object_get(rec, "options");
    if (st < 0 || !json_is_object(spec)) return -1;
    j->state = st;
    json_decref(j->spec);
    j->spec = json_incref(spec);
    j->created_at = time_parse(json_object_get(rec, "created_at"));
    j->started_at = time_parse(json_object_get(rec, "started_at"));
    j->finished_at = time_parse(json_object_get(rec, "finished_at"));
    j->attempts = (int)jnum(rec, "attempts");
    const char *s = json_string_value(json_object_get(rec, "error"));
    snprintf(j->error, sizeof j->error, "%s", s ? s : "");
    s = json_string_value(json_object_get(rec, "error_code"));
    /* codes are static strings: map back onto ours */
    static const char *const CODES[] = {"job_failed", "interrupted", "cancelled", "lease_lost"};
    j->error_code = NULL;
    for (size_t i = 0; s && i < DYN_ARRAY_LEN(CODES); i++)
        if (!strcmp(s, CODES[i])) j->error_code = CODES[i];
    if (s && !j->error_code) j->error_code = "job_failed";
    s = json_string_value(json_object_get(rec, "model"));
    snprintf(j->model, sizeof j->model, "%s", s && srv_repo_name_valid(s) ? s : "");
    json_t *r = json_object_get(rec, "result"), *layers = json_object_get(rec, "layers");
    json_decref(j->result);
    j->result = json_is_object(r) ? json_deep_copy(r) : NULL;
    if (j->result && json_is_array(layers) && json_array_size(layers)) /* see job_json_locked */
        json_object_set(j->result, "layers", layers);
    json_t *h = json_object_get(rec, "history");
    json_decref(j->history);
    j->history = json_is_array(h) ? json_incref(h) : NULL;
    double p = jnum(rec, "progress");
    atomic_store(&j->progress_e9, (long long)(DYN_MIN(DYN_MAX(p, 0), 1) * 1e9));
    atomic_store(&j->phase, phase_parse(json_string_value(json_object_get(rec, "phase"))));
    atomic_store(&j->epoch, (int)jnum(rec, "epoch"));
    atomic_store(&j->epochs, (int)jnum(rec, "epochs"));
    atomic_store(&j->step, (long long)jnum(rec, "step"));
    atomic_store(&j->steps, (long long)jnum(rec, "steps"));
    return 0;
}

/* ---- leases (the backend's, jobs_backend.h) ---- */

/* Claims job j: the new lease token, 0 when a live replica holds it (or won the race), -1 on a
 * storage error (logged). */
static long long lease_claim(srv_jobs *js, srv_job *j) {
    dyn_err err = {0};
    long long g = js->be->claim(js->be->state, j->id, &err);
    if (g < 0)
        srv_log(SRV_LOG_ERROR, "cannot claim the job",
                json_pack("{s:s, s:s}", "job", j->id, "error", err.msg));
    return g;
}

static void lease_release(srv_jobs *js, srv_job *j) {
    pthread_mutex_lock(&j->mu);
    long long g = j->lease;
    j->lease = 0;
    pthread_mutex_unlock(&j->mu);
    if (g > 0) js->be->release(js->be->state, j->id, g);
}

/* ---- metrics and logs ---- */

/* A copy of the job list holding a reference to each job (give it back with list_release);
 * *n jobs. NULL on ENOMEM. */
static srv_job **list_copy(srv_jobs *js, int *n) {
    pthread_mutex_lock(&js->mu);
    *n = js->n;
    srv_job **copy = malloc(sizeof *copy * (size_t)DYN_MAX(*n, 1));
    if (copy)
        for (int i = 0; i < *n; i++) job_ref(copy[i] = js->all[i]);
    pthread_mutex_unlock(&js->mu);
    return copy;
}

static void list_release(srv_job **copy, int n) {
    for (int i = 0; copy && i < n; i++) job_unref(copy[i]);
    free(copy);
}

static void metrics_update(srv_jobs *js) {
    int counts[SRV_JOB_STATE_COUNT] = {0}, n;
    srv_job **copy = list_copy(js, &n);
    if (!copy) return;
    for (int i = 0; i < n; i++) {
        pthread_mutex_lock(&copy[i]->mu);
        int s = copy[i]->state;
        pthread_mutex_unlock(&copy[i]->mu);
        counts[s]++;
    }
    list_release(copy, n);
    srv_metrics_jobs_set(js->metrics, STATE_NAMES, counts, SRV_JOB_STATE_COUNT);
}

static void log_transition(srv_job *j, const char *msg) {
    pthread_mutex_lock(&j->mu);
    json_t *f = json_pack("{s:s, s:s, s:s, s:i}", "job", j->id, "kind", srv_job_kind_name(j->kind),
                          "state", srv_job_state_name(j->state), "attempt", j->attempts);
    if (f && j->model[0]) json_object_set_new(f, "model", json_string(j->model));
    if (f && j->error[0]) json_object_set_new(f, "error", json_string(j->error));
    if (f && j->started_at > 0 && terminal(j->state))
        json_object_set_new(f, "duration_s", json_real(j->finished_at - j->started_at));
    int st = j->state;
    pthread_mutex_unlock(&j->mu);
    srv_log(st == SRV_JOB_FAILED ? SRV_LOG_WARN : SRV_LOG_INFO, msg, f);
}

/* ---- the job list ---- */

/* Adds j (owned from now on). 0 or -1 (ENOMEM). js->mu held. */
static int list_add_locked(srv_jobs *js, srv_job *j) {
    if (js->n == js->cap) {
        int cap = js->cap ? 2 * js->cap : 64;
        srv_job **a = realloc(js->all, sizeof *a * (size_t)cap);
        if (!a) return -1;
        js->all = a;
        js->cap = cap;
    }
    js->all[js->n++] = j;
    return 0;
}

/* The listed job `id` with a reference taken (job_unref it), or NULL. */
static srv_job *list_find(srv_jobs *js, const char *id) {
    srv_job *j = NULL;
    pthread_mutex_lock(&js->mu);
    for (int i = 0; i < js->n && !j; i++)
        if (!strcmp(js->all[i]->id, id)) job_ref(j = js->all[i]);
    pthread_mutex_unlock(&js->mu);
    return j;
}

static void queue_push_locked(srv_jobs *js, srv_job *j) {
    j->next = NULL;
    if (js->qtail) js->qtail->next = j;
    else js->qhead = j;
    js->qtail = j;
    if (js->attached) uv_async_send(&js->wake); /* the loop thread dispatches it */
}

/* A job we hold, queued again (resumed, or claimed from the backend): its record, then the
 * queue. */
static void job_enqueue(srv_jobs *js, srv_job *j, const char *msg) {
    /* its working directory: made by the submitter, absent here when the backend is shared
     * without state_dir (postgres: a job queued or left by another replica) */
    if (mkdir(j->dir, 0750) != 0 && errno != EEXIST)
        srv_log(SRV_LOG_WARN, "cannot create the job's directory (its run fails)",
                json_pack("{s:s, s:s}", "dir", j->dir, "error", strerror(errno)));
    record_write_logged(js, j);
    pthread_mutex_lock(&js->mu);
    queue_push_locked(js, j);
    pthread_mutex_unlock(&js->mu);
    log_transition(j, msg);
    metrics_update(js);
}

/* Removes j from the queue; 1 when it was there. js->mu held. */
static int queue_remove_locked(srv_jobs *js, srv_job *j) {
    srv_job *prev = NULL;
    for (srv_job *q = js->qhead; q; prev = q, q = q->next) {
        if (q != j) continue;
        if (prev) prev->next = q->next;
        else js->qhead = q->next;
        if (js->qtail == q) js->qtail = prev;
        q->next = NULL;
        return 1;
    }
    return 0;
}

/* A queued or running record whose holder is gone becomes interrupted (claiming it first, so
 * only one replica rewrites it) — unless the backend hands such jobs out through claim_next
 * (takes_over: postgres), where it stays as it is, read again at every look, until a replica's
 * claim_next takes it over and runs it again. */
static void job_recover(srv_jobs *js, srv_job *j) {
    pthread_mutex_lock(&j->mu);
    int st = j->state, ours = j->lease > 0;
    if (!ours && js->be->takes_over && (st == SRV_JOB_QUEUED || st == SRV_JOB_RUNNING))
        j->remote = 1; /* whoever claims it next changes it */
    pthread_mutex_unlock(&j->mu);
    if (ours || js->be->takes_over || (st != SRV_JOB_QUEUED && st != SRV_JOB_RUNNING)) return;
    long long g = lease_claim(js, j);
    if (g <= 0) { /* a live replica holds it */
        pthread_mutex_lock(&j->mu);
        j->remote = 1;
        pthread_mutex_unlock(&j->mu);
        return;
    }
    pthread_mutex_lock(&j->mu);
    j->lease = g;
    j->remote = 0;
    j->state = SRV_JOB_INTERRUPTED;
    j->error_code = "interrupted";
    snprintf(j->error, sizeof j->error,
             "dynd stopped while the job was %s (crash, kill or power loss); POST "
             "/v1/jobs/%s/resume %s",
             srv_job_state_name(st), j->id,
             j->kind == SRV_JOB_FINETUNE ? "continues from the last checkpoint" : "runs it again");
    pthread_mutex_unlock(&j->mu);
    record_write_logged(js, j);
    lease_release(js, j);
    log_transition(j, "job interrupted");
}

/* Reads the record of `id` from disk into a new job added to the list (a job another replica
 * made, or found at start-up). NULL when there is none; otherwise the job with a reference
 * taken (job_unref it). lease: the token we hold for it already (claim_next), or 0. */
static srv_job *job_load(srv_jobs *js, const char *id, long long lease) {
    json_t *rec = js->be->record_read(js->be->state, id);
    if (!rec) return NULL;
    int kind = kind_parse(json_string_value(json_object_get(rec, "kind")));
    srv_job *j = kind >= 0 ? job_alloc(js, id, kind) : NULL;
    if (j && job_apply_record_locked(j, rec)) {
        job_free(j);
        j = NULL;
    }
    json_decref(rec);
    if (j) j->lease = lease;
    if (!j) {
        srv_log(SRV_LOG_WARN, "ignoring a damaged job record",
                json_pack("{s:s, s:s}", "job", id, "dir", js->jobs_dir));
        return NULL;
    }
    pthread_mutex_lock(&js->mu);
    srv_job *dup = NULL;
    for (int i = 0; i < js->n && !dup; i++)
        if (!strcmp(js->all[i]->id, id)) job_ref(dup = js->all[i]);
    int added = !dup && list_add_locked(js, j) == 0;
    if (added) job_ref(j); /* the list's and the caller's */
    pthread_mutex_unlock(&js->mu);
    if (!added) { /* loaded meanwhile by another request, or ENOMEM */
        job_free(j);
        return dup;
    }
    job_recover(js, j);
    return j;
}

/* 1 when another replica may change j's record: it holds the job, or the job is interrupted
 * and nobody holds it (any replica may resume or cancel it). j->mu held. */
static int job_stale_locked(const srv_job *j) {
    return j->remote || (j->state == SRV_JOB_INTERRUPTED && j->lease <= 0);
}

/* A job another replica may change (job_stale_locked): its record is re-read (and recovered if
 * the holder died). */
static void job_refresh(srv_jobs *js, srv_job *j) {
    pthread_mutex_lock(&j->mu);
    int stale = job_stale_locked(j);
    pthread_mutex_unlock(&j->mu);
    if (!stale) return;
    json_t *rec = js->be->record_read(js->be->state, j->id);
    if (rec) {
        pthread_mutex_lock(&j->mu);
        if (job_stale_locked(j)) job_apply_record_locked(j, rec); /* not resumed here meanwhile */
        pthread_mutex_unlock(&j->mu);
        json_decref(rec);
    }
    job_recover(js, j);
}

/* j was interrupted when we looked, and we have just claimed it (lease generation g) to resume
 * or cancel it; another replica may have resumed it to the end or cancelled it since. The
 * record is read again under our lease: 0 when the job has not ended (interrupted, or queued /
 * running under a holder our claim found dead); otherwise the record is applied, the lease
 * released, and the final state returned. */
static int claimed_interrupted(srv_jobs *js, srv_job *j, long long g) {
    json_t *rec = js->be->record_read(js->be->state, j->id);
    int st = rec ? srv_job_state_parse(json_string_value(json_object_get(rec, "state"))) : -1;
    if (st < 0 || !terminal(st)) {
        json_decref(rec);
        return 0;
    }
    pthread_mutex_lock(&j->mu);
    job_apply_record_locked(j, rec);
    j->lease = g;
    pthread_mutex_unlock(&j->mu);
    json_decref(rec);
    lease_release(js, j);
    return st;
}

static int scan_one(void *arg, const char *id) {
    srv_jobs *js = arg;
    if (!id_valid(id)) return 0;
    srv_job *j = list_find(js, id);
    if (!j) j = job_load(js, id, 0);
    job_unref(j);
    return 0;
}

/* Loads the records of jobs made by other replicas since the last look. */
static void scan_dir(srv_jobs *js) {
    dyn_err err = {0};
    if (js->be->list(js->be->state, scan_one, js, &err))
        srv_log(SRV_LOG_ERROR, "cannot list the jobs", json_pack("{s:s}", "error", err.msg));
}

typedef struct fin_rec {
    double t; /* finished_at, else created_at */
    int i;    /* index in js->all */
} fin_rec;

static int fin_cmp(const void *a, const void *b) {
    const fin_rec *x = a, *y = b;
    return x->t < y->t ? -1 : x->t > y->t ? 1 : x->i - y->i;
}

/* Forgets the oldest finished jobs beyond jobs_keep: out of the list (their memory goes with
 * the last reference) and their directories off the disk. Interrupted jobs are kept (they
 * may be resumed), and so is everything once shutdown began. */
static void prune(srv_jobs *js) {
    int ngone = 0;
    srv_job **gone = NULL;
    pthread_mutex_lock(&js->mu);
    fin_rec *fin = js->stopping ? NULL : malloc(sizeof *fin * (size_t)DYN_MAX(js->n, 1));
    int nfin = 0;
    for (int i = 0; fin && i < js->n; i++) { /* the finished ones, with their finish time */
        srv_job *j = js->all[i];
        pthread_mutex_lock(&j->mu);
        if (terminal(j->state) && j->state != SRV_JOB_INTERRUPTED)
            fin[nfin++] = (fin_rec){j->finished_at > 0 ? j->finished_at : j->created_at, i};
        pthread_mutex_unlock(&j->mu);
    }
    const int excess = nfin - js->keep;
    if (excess > 0 && (gone = malloc(sizeof *gone * (size_t)excess))) {
        qsort(fin, (size_t)nfin, sizeof *fin, fin_cmp); /* oldest first */
        for (int k = 0; k < excess; k++) {
            gone[ngone++] = js->all[fin[k].i];
            js->all[fin[k].i] = NULL;
        }
        int w = 0; /* close the gaps, keeping the order */
        for (int i = 0; i < js->n; i++)
            if (js->all[i]) js->all[w++] = js->all[i];
        js->n = w;
    }
    pthread_mutex_unlock(&js->mu);
    free(fin);
    for (int i = 0; i < ngone; i++) {
        js->be->remove(js->be->state, gone[i]->id);
        srv__remove_tree(gone[i]->dir); /* the working files (the same directory with fs) */
        srv_log(SRV_LOG_DEBUG, "finished job record removed (jobs_keep)",
                json_pack("{s:s, s:i}", "job", gone[i]->id, "jobs_keep", js->keep));
        job_unref(gone[i]);
    }
    free(gone);
}

/* ---- running ---- */

/* What a client may see of an engine error: the server's directories become their settings'
 * names ("data_dir/mnist/train-images-idx3-ubyte"), and any other absolute path its last
 * component. The full message goes to the log. Writes at most n bytes (NUL included) to out. */
static void client_message(const srv_jobs *js, const char *msg, char *out, size_t n) {
    const char *dirs[3][2] = {{js->state_dir, "state_dir"}, {js->model_dir, "model_dir"},
                              {js->data_dir, "data_dir"}};
    char real[3][PATH_MAX];
    for (int i = 0; i < 3; i++)
        if (!realpath(dirs[i][0], real[i])) real[i][0] = 0;
    size_t k = 0;
    const char *p = msg;
    while (*p && k + 1 < n) {
        int token_start = p == msg || strchr(" '\"(=:,[", p[-1]) != NULL;
        if (token_start && *p == '/') {
            const char *name = NULL;
            size_t skip = 0;
            for (int i = 0; i < 3 && !name; i++)
                for (int v = 0; v < 2 && !name; v++) {
                    const char *d = v ? real[i] : dirs[i][0];
                    size_t l = strlen(d);
                    while (l > 1 && d[l - 1] == '/') l--;
                    if (l > 1 && !strncmp(p, d, l) && (p[l] == '/' || p[l] == 0 || p[l] == ' ' ||
                                                      p[l] == '\'' || p[l] == ':'))
                        name = dirs[i][1], skip = l;
                }
            const char *end = p + strcspn(p, " '\"),:;[]");
            if (!name) { /* another absolute path: its last component */
                const char *last = p;
                for (const char *q = p; q < end; q++)
                    if (*q == '/' && q + 1 < end) last = q + 1;
                name = "";
                skip = (size_t)(last - p);
            }
            int w = snprintf(out + k, n - k, "%s", name);
            k += w > 0 ? (size_t)w : 0;
            if (k >= n) k = n - 1;
            p += skip;
            continue;
        }
        out[k++] = *p++;
    }
    out[k < n ? k : n - 1] = 0;
}

/* With a backend that takes jobs over (postgres), a job this replica stops holding at shutdown
 * goes back to the shared queue, to be claimed by another replica (a fine-tune continues from
 * its last checkpoint in the store), instead of waiting interrupted for a resume by request. */
static void job_hand_back(srv_jobs *js, srv_job *j, const char *msg) {
    pthread_mutex_lock(&j->mu);
    j->state = SRV_JOB_QUEUED;
    j->error[0] = 0;
    j->error_code = NULL;
    pthread_mutex_unlock(&j->mu);
    atomic_store(&j->phase, SRV_PHASE_QUEUED);
    record_write_logged(js, j);
    lease_release(js, j); /* postgres: queued with no holder, NOTIFY'd to the claimers */
    pthread_mutex_lock(&j->mu);
    j->remote = 1; /* another replica's now: read again at every look */
    pthread_mutex_unlock(&j->mu);
    log_transition(j, msg);
}

static void job_finish(srv_jobs *js, srv_job *j, int rc, const dyn_err *err) {
    int reason = atomic_load(&j->cancel_reason);
    if (rc == DYN_ECANCEL && reason == SRV_CANCEL_SHUTDOWN && js->be->takes_over) {
        job_hand_back(js, j, "job handed back at shutdown (another replica takes it)");
        return;
    }
    int st = rc == 0 ? SRV_JOB_SUCCEEDED
             : rc != DYN_ECANCEL ? SRV_JOB_FAILED
             : reason == SRV_CANCEL_USER ? SRV_JOB_CANCELLED
                                         : SRV_JOB_INTERRUPTED;
    if (rc == DYN_ECANCEL && reason == SRV_CANCEL_LEASE) { /* another replica has it now */
        pthread_mutex_lock(&j->mu);
        j->remote = 1;
        j->lease = 0;
        pthread_mutex_unlock(&j->mu);
        srv_log(SRV_LOG_WARN, "job taken over by another replica; stopped here",
                json_pack("{s:s}", "job", j->id));
        return;
    }
    pthread_mutex_lock(&j->mu);
    j->state = st;
    if (terminal(st)) j->finished_at = epoch_now();
    j->error[0] = 0;
    j->error_code = NULL;
    if (st == SRV_JOB_FAILED) {
        j->error_code = "job_failed";
        client_message(js, err->msg[0] ? err->msg : "failed", j->error, sizeof j->error);
        if (strcmp(j->error, err->msg))
            srv_log(SRV_LOG_WARN, "job failed (the full message; clients see paths shortened)",
                    json_pack("{s:s, s:s}", "job", j->id, "error", err->msg));
    } else if (st == SRV_JOB_INTERRUPTED) {
        j->error_code = "interrupted";
        snprintf(j->error, sizeof j->error,
                 "dynd was shut down while the job ran; POST /v1/jobs/%s/resume %s", j->id,
                 j->kind == SRV_JOB_FINETUNE ? "continues from the last checkpoint"
                                             : "runs it again");
    } else if (st == SRV_JOB_CANCELLED) {
        j->error_code = "cancelled";
        snprintf(j->error, sizeof j->error, "cancelled by request");
    }
    if (st == SRV_JOB_SUCCEEDED) {
        srv__job_progress_set(j, 1.0);
        atomic_store(&j->phase, SRV_PHASE_DONE);
    }
    double dur = j->started_at > 0 ? epoch_now() - j->attempt_t0 : 0;
    pthread_mutex_unlock(&j->mu);
    if (terminal(st)) job_files_remove(j);
    record_write_logged(js, j);
    lease_release(js, j);
    srv_metrics_job_duration(js->metrics, srv_job_kind_name(j->kind), srv_job_state_name(st), dur);
    log_transition(j, st == SRV_JOB_SUCCEEDED ? "job succeeded"
                      : st == SRV_JOB_FAILED  ? "job failed"
                      : st == SRV_JOB_CANCELLED ? "job cancelled"
                                                : "job interrupted");
}

/* ---- running: the loop thread hands runs to the workers and records their ends ---- */

/* A run begins (loop thread): the record says running before the worker starts on it. */
static void job_start(srv_jobs *js, srv_job *j) {
    pthread_mutex_lock(&j->mu);
    j->state = SRV_JOB_RUNNING;
    double now = epoch_now();
    if (j->started_at <= 0) j->started_at = now;
    j->attempt_t0 = now;
    if (j->kind == SRV_JOB_CONVERSION) atomic_store(&j->progress_e9, 0); /* a rerun starts over */
    j->attempt_p0 = (double)atomic_load(&j->progress_e9) * 1e-9;
    j->attempts++;
    j->error[0] = 0;
    j->error_code = NULL;
    pthread_mutex_unlock(&j->mu);
    atomic_store(&j->phase, SRV_PHASE_LOAD);
    j->last_write = dyn_now();
    record_write_logged(js, j);
    log_transition(j, "job started");
    metrics_update(js);
}

/* A worker thread: the long work, on the engine, then the run goes back to the loop thread
 * (js->done) which records its end. */
static void worker_main(void *arg) {
    srv_jobs_worker *w = arg;
    srv_jobs *js = w->js;
    dyn_threads_set(js->threads); /* OpenMP's thread count is per thread: set it here too */
    for (;;) {
        uv_sem_wait(&w->go);
        srv_job *j = w->job;
        if (!j) break; /* quit */
        memset(&j->run_err, 0, sizeof j->run_err);
        j->run_rc = j->cancel ? DYN_ECANCEL : srv__job_execute(js, j, &j->run_err);
#ifdef __GLIBC__
        /* A job frees hundreds of MB of work buffers, spread over glibc's per-thread arenas
         * (this worker's and OpenMP's); without a trim the freed pages stay resident and the
         * daemon's RSS creeps up with every job (make soak). */
        malloc_trim(0);
#endif
        pthread_mutex_lock(&js->mu);
        j->next = js->done;
        js->done = j;
        if (js->attached) uv_async_send(&js->wake);
        pthread_mutex_unlock(&js->mu);
    }
    atomic_fetch_sub(&js->workers_alive, 1);
}

/* Records the ends of the runs the workers finished (the loop thread, or srv_jobs_free's once
 * the loop is gone) and makes their workers idle. Returns how many. */
static int finish_runs(srv_jobs *js) {
    pthread_mutex_lock(&js->mu);
    srv_job *d = js->done;
    js->done = NULL;
    pthread_mutex_unlock(&js->mu);
    int n = 0;
    while (d) {
        srv_job *j = d;
        d = d->next; /* before job_finish: once the job is interrupted a resume may queue it */
        j->next = NULL;
        srv_jobs_worker *w = j->worker;
        j->worker = NULL;
        job_finish(js, j, j->run_rc, &j->run_err);
        j->cancel = 0;
        atomic_store(&j->cancel_reason, SRV_CANCEL_NONE);
        w->busy = 0;
        pthread_mutex_lock(&js->mu);
        js->nrunning--;
        pthread_mutex_unlock(&js->mu);
        job_unref(j);
        n++;
    }
    return n;
}

static void on_claimed(void *arg, const char *id, long long lease);

/* Hands queued jobs to idle workers (loop thread). A worker left idle asks the backend for a job
 * queued elsewhere or held under an expired lease (claim_next; fs has none). */
static void dispatch(srv_jobs *js) {
    for (int i = 0; i < js->nworkers; i++) {
        srv_jobs_worker *w = &js->workers[i];
        if (w->busy || w->quit) continue;
        pthread_mutex_lock(&js->mu);
        int stopping = js->stopping;
        srv_job *j = stopping ? NULL : js->qhead;
        if (j) {
            js->qhead = j->next;
            if (!js->qhead) js->qtail = NULL;
            j->next = NULL;
            job_ref(j); /* the run's, given back by finish_runs */
            js->nrunning++;
        }
        pthread_mutex_unlock(&js->mu);
        if (!j) {
            if (!stopping && !js->claiming && js->claims) {
                js->claiming = 1;
                js->be->claim_next(js->be->state, on_claimed, js);
            }
            return;
        }
        job_start(js, j);
        j->worker = w;
        w->busy = 1;
        w->job = j;
        uv_sem_post(&w->go);
    }
}

/* Job `id`, claimed through claim_next under `lease` (queued by another replica, or taken over
 * from a dead holder), is queued here (loop thread). 0, or -1 when it has no readable record
 * or has ended meanwhile (the lease is given back). */
static int job_adopt(srv_jobs *js, const char *id, long long lease) {
    json_t *rec = js->be->record_read(js->be->state, id);
    srv_job *j = rec ? list_find(js, id) : NULL;
    if (j) {
        pthread_mutex_lock(&j->mu);
        job_apply_record_locked(j, rec);
        j->lease = lease;
        pthread_mutex_unlock(&j->mu);
    } else if (rec) {
        j = job_load(js, id, lease);
    }
    json_decref(rec);
    if (!j) {
        js->be->release(js->be->state, id, lease);
        srv_log(SRV_LOG_WARN, "claimed job has no readable record; released",
                json_pack("{s:s}", "job", id));
        return -1;
    }
    pthread_mutex_lock(&j->mu);
    int st = j->state;
    j->remote = 0;
    if (!terminal(st)) {
        j->state = SRV_JOB_QUEUED;
        j->error[0] = 0;
        j->error_code = NULL;
    }
    pthread_mutex_unlock(&j->mu);
    if (terminal(st)) {
        lease_release(js, j);
        job_unref(j);
        return -1;
    }
    atomic_store(&j->phase, SRV_PHASE_QUEUED);
    job_enqueue(js, j, "job claimed");
    job_unref(j);
    return 0;
}

static void on_claimed(void *arg, const char *id, long long lease) {
    srv_jobs *js = arg;
    js->claiming = 0;
    if (!id || lease <= 0) return;
    pthread_mutex_lock(&js->mu);
    int stopping = js->stopping;
    pthread_mutex_unlock(&js->mu);
    if (stopping) /* answered after shutdown began: the job stays as it is, for another replica */
        js->be->release(js->be->state, id, lease);
    else if (job_adopt(js, id, lease) == 0)
        dispatch(js);
}

/* js->wake: jobs were queued, or runs finished. uv_async_send coalesces: everything pending is
 * handled here. */
static void on_wake(uv_async_t *a) {
    srv_jobs *js = a->data;
    if (finish_runs(js)) {
        prune(js);
        metrics_update(js);
    }
    dispatch(js);
}

/* ---- heartbeat (a timer on the loop): renew our leases, hear of takeovers and cancels ---- */

static void cancel_raise(srv_job *j, int reason) {
    int none = SRV_CANCEL_NONE;
    atomic_compare_exchange_strong(&j->cancel_reason, &none, reason);
    j->cancel = 1;
}

static void on_lease_lost(void *arg, const char *id) {
    srv_job *j = list_find(arg, id);
    if (!j) return;
    srv_log(SRV_LOG_WARN, "job lease lost (another replica took the job over)",
            json_pack("{s:s}", "job", id));
    cancel_raise(j, SRV_CANCEL_LEASE);
    job_unref(j);
}

static void on_cancel_requested(void *arg, const char *id) { /* DELETE sent to another replica */
    int now = 0;
    srv_job_err e;
    json_decref(srv_jobs_cancel(arg, id, &now, &e));
}

static void on_work_available(void *arg) { dispatch(arg); }

static void on_heartbeat(uv_timer_t *t) {
    srv_jobs *js = t->data;
    int n;
    srv_job **copy = list_copy(js, &n);
    const char **ids = copy ? malloc(sizeof *ids * (size_t)DYN_MAX(n, 1)) : NULL;
    long long *leases = ids ? malloc(sizeof *leases * (size_t)DYN_MAX(n, 1)) : NULL;
    int m = 0;
    for (int i = 0; leases && i < n; i++) {
        pthread_mutex_lock(&copy[i]->mu);
        long long g = copy[i]->lease;
        pthread_mutex_unlock(&copy[i]->mu);
        if (g > 0) {
            ids[m] = copy[i]->id; /* alive while copy holds the job */
            leases[m++] = g;
        }
    }
    dyn_err err = {0};
    if (m > 0 && js->be->renew(js->be->state, m, ids, leases, &err))
        srv_log(SRV_LOG_ERROR, "job leases not renewed (they expire unless the next beat succeeds)",
                json_pack("{s:i, s:s}", "jobs", m, "error", err.msg));
    free(leases);
    free(ids);
    list_release(copy, n);
    js->be->poll(js->be->state);
    dispatch(js); /* idle workers ask the backend again: work queued elsewhere, expired leases */
}

/* ---- public ---- */

/* Attaches to the loop: the wake-up, the heartbeat, the backend's events. 0 or DYN_E*. */
static int loop_attach(srv_jobs *js, uv_loop_t *loop, dyn_err *err) {
    js->loop = loop;
    if (uv_async_init(loop, &js->wake, on_wake) != 0)
        return dyn_err_set(err, DYN_ENOMEM, "jobs: cannot create the loop's wake-up handle");
    js->wake.data = js;
    uv_timer_init(loop, &js->heartbeat);
    js->heartbeat.data = js;
    pthread_mutex_lock(&js->mu);
    js->attached = 1; /* from now on the handles must be closed (srv_jobs_detach) */
    pthread_mutex_unlock(&js->mu);
    uint64_t period_ms = (uint64_t)(DYN_MAX(1.0, js->lease_s / 3.0) * 1000);
    uv_timer_start(&js->heartbeat, on_heartbeat, period_ms, period_ms);
    srv_jobs_backend_events ev = {js, on_cancel_requested, on_lease_lost, on_work_available};
    if (js->be->start(js->be->state, loop, &ev, err)) return err->code;
    uv_async_send(&js->wake); /* the first turn dispatches: idle workers ask for work */
    return 0;
}

srv_jobs *srv_jobs_new(const srv_config *cfg, srv_repo *repo, srv_metrics *metrics,
                       uv_loop_t *loop, dyn_err *err) {
    srv_jobs_backend *be = NULL; /* fs: made by srv__jobs_new_with once jobs_dir exists */
    if (cfg->jobs_backend == SRV_JOBS_BACKEND_POSTGRES) {
        char holder[160], host[128] = "localhost";
        if (!cfg->replica_id[0] && gethostname(host, sizeof host) != 0)
            snprintf(host, sizeof host, "localhost");
        host[sizeof host - 1] = 0;
        snprintf(holder, sizeof holder, "%s:%ld", cfg->replica_id[0] ? cfg->replica_id : host,
                 (long)getpid());
        if (!(be = srv_jobs_backend_pg(cfg->jobs_db, holder, cfg->jobs_lease_s, err)))
            return NULL;
    }
    return srv__jobs_new_with(cfg, repo, metrics, loop, be, err);
}

srv_jobs *srv__jobs_new_with(const srv_config *cfg, srv_repo *repo, srv_metrics *metrics,
                             uv_loop_t *loop, srv_jobs_backend *be, dyn_err *err) {
    srv_jobs *js = calloc(1, sizeof *js);
    if (!js) {
        if (be) be->free(be);
        return dyn_err_set(err, DYN_ENOMEM, "jobs: out of memory"), NULL;
    }
    js->be = be;
    snprintf(js->state_dir, sizeof js->state_dir, "%s", cfg->state_dir);
    snprintf(js->jobs_dir, sizeof js->jobs_dir, "%s/jobs", cfg->state_dir);
    snprintf(js->model_dir, sizeof js->model_dir, "%s", cfg->model_dir);
    snprintf(js->data_dir, sizeof js->data_dir, "%s", cfg->data_dir);
    js->max_concurrent = cfg->jobs_max_concurrent;
    js->claims = cfg->role != SRV_ROLE_SERVE; /* a serving replica runs no one's jobs */
    js->lease_s = cfg->jobs_lease_s;
    js->keep = cfg->jobs_keep > 0 ? cfg->jobs_keep : 1000;
    js->threads = cfg->threads;
    js->repo = repo;
    js->metrics = metrics;
    pthread_mutex_init(&js->mu, NULL);
    char up[1100];
    snprintf(up, sizeof up, "%s/uploads", cfg->state_dir);
    if ((mkdir(cfg->state_dir, 0750) != 0 && errno != EEXIST) ||
        (mkdir(js->jobs_dir, 0750) != 0 && errno != EEXIST) ||
        (mkdir(up, 0750) != 0 && errno != EEXIST)) {
        dyn_err_set(err, DYN_EIO, "state_dir '%s' is not usable: %s", cfg->state_dir,
                    strerror(errno));
        srv_jobs_free(js, 0);
        return NULL;
    }
    if (!js->be && !(js->be = srv_jobs_backend_fs(js->jobs_dir, js->lease_s, err))) {
        srv_jobs_free(js, 0);
        return NULL;
    }
    /* uploads of requests that never finished (the process died meanwhile) */
    DIR *d = opendir(up);
    for (struct dirent *e; d && (e = readdir(d));) {
        if (strncmp(e->d_name, ".up-", 4)) continue;
        char p[1400];
        snprintf(p, sizeof p, "%s/%s", up, e->d_name);
        unlink(p);
    }
    if (d) closedir(d);
    scan_dir(js);
    prune(js);
    metrics_update(js);
    js->workers = calloc((size_t)DYN_MAX(js->max_concurrent, 1), sizeof *js->workers);
    if (!js->workers) {
        srv_jobs_free(js, 0);
        return dyn_err_set(err, DYN_ENOMEM, "jobs: out of memory"), NULL;
    }
    for (int i = 0; i < js->max_concurrent; i++) {
        srv_jobs_worker *w = &js->workers[i];
        w->js = js;
        if (uv_sem_init(&w->go, 0) != 0) break;
        atomic_fetch_add(&js->workers_alive, 1);
        if (uv_thread_create(&w->tid, worker_main, w) != 0) {
            atomic_fetch_sub(&js->workers_alive, 1);
            uv_sem_destroy(&w->go);
            break;
        }
        js->nworkers++;
    }
    if (js->nworkers == 0) {
        srv_jobs_free(js, 5);
        return dyn_err_set(err, DYN_ENOMEM, "jobs: cannot start worker threads"), NULL;
    }
    if (loop_attach(js, loop, err)) {
        srv_jobs_free(js, 5);
        return NULL;
    }
    pthread_mutex_lock(&js->mu);
    int n = js->n;
    pthread_mutex_unlock(&js->mu);
    srv_log(SRV_LOG_INFO, "jobs ready",
            json_pack("{s:s, s:s, s:i, s:i}", "dir", js->jobs_dir, "backend", js->be->name, "jobs",
                      n, "workers", js->nworkers));
    return js;
}

/* Checks that the upload is an ONNX model or a DyN model file, from its first bytes. Returns
 * "onnx" / "dyn", or NULL with e set. */
static const char *upload_format(const char *path, long long *bytes, srv_job_err *e) {
    unsigned char b[16] = {0};
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        if (fd >= 0) close(fd);
        jerr(e, 500, "state_io", "the upload could not be read back: %s", strerror(errno));
        return NULL;
    }
    ssize_t n = read(fd, b, sizeof b);
    close(fd);
    *bytes = st.st_size;
    if (n < 16) {
        jerr(e, 400, "bad_model", "the upload is %lld bytes: not an ONNX or DyN model",
             (long long)st.st_size);
        return NULL;
    }
    /* safetensors (DyN model file): u64 header length, then '{' */
    uint64_t hl = 0;
    memcpy(&hl, b, 8);
    if (b[8] == '{' && hl > 2 && hl < (uint64_t)st.st_size) return "dyn";
    /* ONNX ModelProto: the first byte is the tag of one of its fields (serializers write them
     * in field order: ir_version = 0x08 nearly always). A deeper check is the importer's, in
     * the job: a damaged model fails the job with its reason. */
    static const unsigned char TAGS[] = {0x08, 0x12, 0x1a, 0x22, 0x28, 0x32, 0x3a, 0x42, 0x72};
    if (memchr(TAGS, b[0], sizeof TAGS)) return "onnx";
    jerr(e, 400, "bad_model",
         "the upload is neither an ONNX model (protobuf ModelProto) nor a DyN model file "
         "(safetensors)");
    return NULL;
}

/* 1 (e set: 503 shutting_down) once shutdown began. */
static int refuse_stopping(srv_jobs *js, srv_job_err *e, const char *what) {
    pthread_mutex_lock(&js->mu);
    int stopping = js->stopping;
    pthread_mutex_unlock(&js->mu);
    if (stopping)
        jerr(e, 503, "shutting_down", "the server is shutting down; %s the job elsewhere", what);
    return stopping;
}

json_t *srv_jobs_submit(srv_jobs *js, int kind, json_t *spec, const char *upload_path,
                        srv_job_err *e) {
    if (refuse_stopping(js, e, "submit")) return NULL;
    long long bytes = 0;
    const char *fmt = NULL;
    if (upload_path && !(fmt = upload_format(upload_path, &bytes, e))) return NULL;
    if (upload_path && kind == SRV_JOB_CONVERSION && srv__job_conv_data_check(spec, spec, e))
        return NULL;
    char id[32];
    id_new(kind, id, sizeof id);
    srv_job *j = job_alloc(js, id, kind);
    if (!j) {
        jerr(e, 500, "out_of_memory", "out of memory");
        return NULL;
    }
    j->spec = json_deep_copy(spec);
    if (j->spec && fmt)
        json_object_set_new(j->spec, "upload", json_pack("{s:s, s:I}", "format", fmt, "bytes",
                                                         (json_int_t)bytes));
    if (j->spec && !json_is_string(json_object_get(j->spec, "output")))
        json_object_set_new(j->spec, "output", json_string(id)); /* an upload without a name */
    if (!j->spec && (jerr(e, 500, "out_of_memory", "out of memory"), 1)) goto fail;
    j->state = SRV_JOB_QUEUED;
    j->created_at = epoch_now();
    atomic_store(&j->epochs, (int)json_integer_value(json_object_get(spec, "epochs")));
    dyn_err err = {0};
    /* with a model store, every replica must be able to run the job: the upload goes there
     * before the backend knows the job (store.h: "job files") */
    srv_store *st = srv_store_active();
    if (upload_path && st && srv_store_job_put(st, id, "upload.bin", upload_path, &err)) {
        jerr(e, 503, "store_unavailable", "the model store did not take the upload, so the job "
             "was not queued; try again later (%s)", err.msg);
        goto fail_store;
    }
    if (js->be->create(js->be->state, id, &err) ||
        (mkdir(j->dir, 0750) != 0 && errno != EEXIST && dyn_err_set(&err, DYN_EIO,
                                                                    "cannot create %s: %s", j->dir,
                                                                    strerror(errno)))) {
        jerr(e, 500, "state_io", "%s", err.msg);
        goto fail;
    }
    if (upload_path) {
        char p[1300];
        job_file(j, "upload.bin", p, sizeof p);
        if (rename(upload_path, p) != 0) {
            jerr(e, 500, "state_io", "cannot move the upload into %s: %s", j->dir, strerror(errno));
            goto fail_dir;
        }
    }
    j->lease = lease_claim(js, j);
    if (j->lease <= 0 || srv__job_record_write(js, j, &err)) {
        jerr(e, 500, "state_io", "cannot write the job record in %s: %s", j->dir,
             err.msg[0] ? err.msg : strerror(errno));
        goto fail_dir;
    }
    json_t *rec = job_json(j);
    pthread_mutex_lock(&js->mu);
    int added = js->stopping ? -1 : list_add_locked(js, j);
    if (!added) {
        queue_push_locked(js, j);
        job_ref(j); /* ours until the log line below: a cancel and a prune may come first */
    }
    pthread_mutex_unlock(&js->mu);
    if (added) {
        json_decref(rec);
        jerr(e, 503, "shutting_down", "the server is shutting down; submit the job elsewhere");
        goto fail_dir;
    }
    log_transition(j, "job queued");
    job_unref(j);
    metrics_update(js);
    return rec;
fail_dir:
    js->be->remove(js->be->state, id);
    srv__remove_tree(j->dir);
fail_store:
    if (upload_path && st) { /* its upload in the store, if (a part of) it got there */
        dyn_err e2 = {0};
        if (srv_store_job_delete(st, id, NULL, &e2))
            srv_log(SRV_LOG_WARN, "model store: the upload of a refused job was not deleted",
                    json_pack("{s:s, s:s}", "job", id, "error", e2.msg));
    }
fail:
    job_free(j);
    return NULL;
}

/* The job named id (loaded from disk when another replica made it, refreshed when another
 * replica holds it) with a reference taken (job_unref it), or NULL with e set (400
 * invalid_job_id, 404 job_not_found). */
static srv_job *job_lookup(srv_jobs *js, const char *id, srv_job_err *e) {
    if (!id_valid(id)) {
        jerr(e, 400, "invalid_job_id", "a job id is like 'conv-1a2b3c4d5e6f' (GET /v1/jobs lists them)");
        return NULL;
    }
    srv_job *j = list_find(js, id);
    if (j) job_refresh(js, j);
    else j = job_load(js, id, 0);
    if (!j) jerr(e, 404, "job_not_found", "no job '%s' (GET /v1/jobs lists them)", id);
    return j;
}

/* Adds "holder" and "lease_age_s" to the job JSON o (its "state" says whether anyone may hold
 * it): the backend's lease_info for a job not finished, else nulls. Never under j->mu (the
 * backend may query a database). */
static void lease_fields(srv_jobs *js, json_t *o) {
    const char *id = json_string_value(json_object_get(o, "id"));
    int st = srv_job_state_parse(json_string_value(json_object_get(o, "state")));
    json_t *li = id && st >= 0 && !terminal(st) && js->be->lease_info
                     ? js->be->lease_info(js->be->state, id)
                     : NULL;
    json_t *h = json_object_get(li, "holder"), *age = json_object_get(li, "lease_age_s");
    json_object_set_new(o, "holder", json_is_string(h) ? json_incref(h) : json_null());
    json_object_set_new(o, "lease_age_s",
                        json_is_number(age) ? json_real(round(json_number_value(age) * 10) / 10)
                                            : json_null());
    json_decref(li);
}

json_t *srv_jobs_get(srv_jobs *js, const char *id, srv_job_err *e) {
    srv_job *j = job_lookup(js, id, e);
    if (!j) return NULL;
    json_t *o = job_json(j);
    job_unref(j);
    if (o) lease_fields(js, o);
    if (!o) jerr(e, 500, "out_of_memory", "out of memory");
    return o;
}

json_t *srv_jobs_list(srv_jobs *js, int state, int kind) {
    scan_dir(js);
    int n;
    srv_job **copy = list_copy(js, &n);
    json_t *list = json_array(), *counts = json_object();
    for (int s = 0; s < SRV_JOB_STATE_COUNT; s++) json_object_set_new(counts, STATE_NAMES[s], json_integer(0));
    for (int i = copy ? n - 1 : -1; i >= 0; i--) { /* newest first */
        srv_job *j = copy[i];
        job_refresh(js, j);
        pthread_mutex_lock(&j->mu);
        int st = j->state;
        json_t *o = (state < 0 || st == state) && (kind < 0 || j->kind == kind) ? job_json_locked(j)
                                                                                 : NULL;
        pthread_mutex_unlock(&j->mu);
        if (o) lease_fields(js, o);
        json_object_set_new(counts, STATE_NAMES[st],
                            json_integer(json_integer_value(json_object_get(counts, STATE_NAMES[st])) + 1));
        if (o) {
            json_object_del(o, "result"); /* the list stays small: GET /v1/jobs/{id} has it */
            json_object_del(o, "layers");
            json_object_del(o, "history");
            json_array_append_new(list, o);
        }
    }
    list_release(copy, n);
    /* sort by creation time, newest first (records loaded from disk come in directory order) */
    size_t m = json_array_size(list);
    for (size_t a = 1; a < m; a++)
        for (size_t b = a; b > 0; b--) {
            const char *x = json_string_value(json_object_get(json_array_get(list, b - 1), "created_at"));
            const char *y = json_string_value(json_object_get(json_array_get(list, b), "created_at"));
            if (!x || !y || strcmp(x, y) >= 0) break; /* RFC 3339 UTC sorts as text */
            json_t *t = json_incref(json_array_get(list, b - 1));
            json_array_set(list, b - 1, json_array_get(list, b));
            json_array_set_new(list, b, t);
        }
    return json_pack("{s:o, s:o}", "jobs", list, "counts", counts);
}

static json_t *job_cancel(srv_jobs *js, srv_job *j, const char *id, int *now, srv_job_err *e);

json_t *srv_jobs_cancel(srv_jobs *js, const char *id, int *now, srv_job_err *e) {
    *now = 0;
    srv_job *j = job_lookup(js, id, e);
    if (!j) return NULL;
    json_t *o = job_cancel(js, j, id, now, e);
    job_unref(j);
    if (*now) prune(js);
    return o;
}

static json_t *job_cancel(srv_jobs *js, srv_job *j, const char *id, int *now, srv_job_err *e) {
    pthread_mutex_lock(&js->mu);
    int was_queued = queue_remove_locked(js, j);
    pthread_mutex_unlock(&js->mu);
    pthread_mutex_lock(&j->mu);
    int st = j->state, remote = j->remote;
    if (was_queued || st == SRV_JOB_INTERRUPTED) {
        j->state = SRV_JOB_CANCELLED;
        j->finished_at = epoch_now();
        j->error_code = "cancelled";
        snprintf(j->error, sizeof j->error, "cancelled by request");
        *now = 1;
    }
    pthread_mutex_unlock(&j->mu);
    if (*now) {
        if (st == SRV_JOB_INTERRUPTED && !was_queued) {
            /* nobody holds an interrupted job: claim it to rewrite the record */
            long long g = lease_claim(js, j);
            pthread_mutex_lock(&j->mu);
            if (g > 0) j->lease = g;
            else j->state = st; /* taken by another replica meanwhile */
            pthread_mutex_unlock(&j->mu);
            if (g <= 0) {
                jerr(e, 409, "job_claimed", "job '%s' was just resumed elsewhere", id);
                return NULL;
            }
            int now_st = claimed_interrupted(js, j, g);
            if (now_st) {
                jerr(e, 409, "job_finished", "job '%s' already %s (by another replica)", id,
                     srv_job_state_name(now_st));
                return NULL;
            }
        }
        job_files_remove(j);
        record_write_logged(js, j);
        lease_release(js, j);
        log_transition(j, "job cancelled");
        metrics_update(js);
    } else if (terminal(st)) {
        jerr(e, 409, "job_finished", "job '%s' already %s", id, srv_job_state_name(st));
        return NULL;
    } else if (remote) { /* the holder hears of it (jobs_backend.h: cancel_requested) */
        dyn_err err = {0};
        if (js->be->cancel_request(js->be->state, id, &err)) {
            jerr(e, 500, "state_io", "cannot ask the replica holding job '%s' to cancel it: %s", id,
                 err.msg);
            return NULL;
        }
    } else {
        cancel_raise(j, SRV_CANCEL_USER);
    }
    json_t *o = job_json(j);
    if (o && !*now) json_object_set_new(o, "cancel_requested", json_true());
    return o;
}

static json_t *job_resume(srv_jobs *js, srv_job *j, const char *id, srv_job_err *e);

json_t *srv_jobs_resume(srv_jobs *js, const char *id, srv_job_err *e) {
    srv_job *j = job_lookup(js, id, e);
    if (!j) return NULL;
    json_t *o = job_resume(js, j, id, e);
    job_unref(j);
    return o;
}

static json_t *job_resume(srv_jobs *js, srv_job *j, const char *id, srv_job_err *e) {
    if (refuse_stopping(js, e, "resume")) return NULL;
    pthread_mutex_lock(&j->mu);
    int st = j->state;
    if (st == SRV_JOB_INTERRUPTED) j->state = SRV_JOB_QUEUED; /* ours now: a second resume sees queued */
    pthread_mutex_unlock(&j->mu);
    if (st != SRV_JOB_INTERRUPTED) {
        jerr(e, 409, "not_resumable", "job '%s' is %s; only interrupted jobs can be resumed", id,
             srv_job_state_name(st));
        return NULL;
    }
    long long g = lease_claim(js, j);
    pthread_mutex_lock(&j->mu);
    if (g <= 0) j->state = SRV_JOB_INTERRUPTED;
    else {
        j->lease = g;
        j->remote = 0;
        j->error[0] = 0;
        j->error_code = NULL;
        atomic_store(&j->phase, SRV_PHASE_QUEUED);
    }
    pthread_mutex_unlock(&j->mu);
    if (g <= 0) {
        if (g < 0) jerr(e, 500, "state_io", "cannot claim job '%s': %s", id, strerror(errno));
        else jerr(e, 409, "job_claimed", "job '%s' is held by another replica", id);
        return NULL;
    }
    int now_st = claimed_interrupted(js, j, g);
    if (now_st) {
        jerr(e, 409, "not_resumable", "job '%s' is %s (another replica resumed or cancelled it); "
             "only interrupted jobs can be resumed", id, srv_job_state_name(now_st));
        return NULL;
    }
    job_enqueue(js, j, "job resumed");
    return job_json(j);
}

void srv_jobs_shutdown(srv_jobs *js) {
    pthread_mutex_lock(&js->mu);
    js->stopping = 1;
    srv_job *q = js->qhead;
    js->qhead = js->qtail = NULL;
    for (int i = 0; i < js->n; i++) cancel_raise(js->all[i], SRV_CANCEL_SHUTDOWN);
    pthread_mutex_unlock(&js->mu);
    while (q) {
        srv_job *j = q;
        q = q->next;
        j->next = NULL;
        if (js->be->takes_over) {
            job_hand_back(js, j, "job handed back at shutdown (another replica takes it)");
            continue;
        }
        pthread_mutex_lock(&j->mu);
        j->state = SRV_JOB_INTERRUPTED;
        j->error_code = "interrupted";
        snprintf(j->error, sizeof j->error,
                 "dynd was shut down before the job started; POST /v1/jobs/%s/resume queues it "
                 "again", j->id);
        pthread_mutex_unlock(&j->mu);
        record_write_logged(js, j);
        lease_release(js, j);
        log_transition(j, "job interrupted");
    }
    metrics_update(js);
}

void srv_jobs_metrics_write(srv_jobs *js, FILE *f) {
    fprintf(f, "# HELP dynd_job_lease_age_seconds Seconds since the lease of a queued or running "
               "job was claimed or last renewed, by job and holding replica (host:pid).\n"
               "# TYPE dynd_job_lease_age_seconds gauge\n");
    if (!js) return;
    int n;
    srv_job **copy = list_copy(js, &n);
    for (int i = 0; copy && i < n; i++) {
        pthread_mutex_lock(&copy[i]->mu);
        int st = copy[i]->state;
        pthread_mutex_unlock(&copy[i]->mu);
        if (st != SRV_JOB_QUEUED && st != SRV_JOB_RUNNING) continue; /* bounded by the queue */
        json_t *li = js->be->lease_info ? js->be->lease_info(js->be->state, copy[i]->id) : NULL;
        const char *h = json_string_value(json_object_get(li, "holder"));
        json_t *age = json_object_get(li, "lease_age_s");
        if (h && json_is_number(age)) {
            char hl[160]; /* a label value: no quote, backslash or newline */
            snprintf(hl, sizeof hl, "%s", h);
            for (char *c = hl; *c; c++)
                if (*c == '"' || *c == '\\' || *c == '\n') *c = '_';
            fprintf(f, "dynd_job_lease_age_seconds{job=\"%s\",holder=\"%s\"} %.3f\n",
                    copy[i]->id, hl, json_number_value(age));
        }
        json_decref(li);
    }
    list_release(copy, n);
}

int srv_jobs_running(srv_jobs *js) {
    pthread_mutex_lock(&js->mu);
    int n = js->nrunning;
    pthread_mutex_unlock(&js->mu);
    return n;
}

void srv_jobs_detach(srv_jobs *js) {
    if (!js) return;
    pthread_mutex_lock(&js->mu);
    int attached = js->attached;
    js->attached = 0; /* workers and HTTP threads stop waking the loop */
    pthread_mutex_unlock(&js->mu);
    if (!attached) return;
    js->be->stop(js->be->state);
    uv_timer_stop(&js->heartbeat);
    uv_handle_t *hs[] = {(uv_handle_t *)&js->heartbeat, (uv_handle_t *)&js->wake};
    for (size_t i = 0; i < DYN_ARRAY_LEN(hs); i++)
        if (!uv_is_closing(hs[i])) uv_close(hs[i], NULL);
}

int srv_jobs_free(srv_jobs *js, double wait_s) {
    if (!js) return 0;
    pthread_mutex_lock(&js->mu);
    js->stopping = 1;
    int attached = js->attached;
    pthread_mutex_unlock(&js->mu);
    if (attached) { /* not detached while the loop ran: close the handles now */
        srv_jobs_detach(js);
        uv_run(js->loop, UV_RUN_NOWAIT);
    }
    /* The loop is gone: runs that end now are recorded here. Idle workers are told to quit. */
    double t0 = dyn_now();
    for (;;) {
        finish_runs(js);
        for (int i = 0; i < js->nworkers; i++) {
            srv_jobs_worker *w = &js->workers[i];
            if (w->busy || w->quit) continue;
            w->quit = 1;
            w->job = NULL;
            uv_sem_post(&w->go);
        }
        if (atomic_load(&js->workers_alive) == 0 || dyn_now() - t0 >= wait_s) break;
        usleep(20000);
    }
    int alive = atomic_load(&js->workers_alive);
    if (alive > 0) {
        srv_log(SRV_LOG_WARN, "jobs still running at exit; they will read as interrupted",
                json_pack("{s:i}", "running", alive));
        return alive; /* the workers still use js: leave it to the process exit */
    }
    for (int i = 0; i < js->nworkers; i++) {
        uv_thread_join(&js->workers[i].tid);
        uv_sem_destroy(&js->workers[i].go);
    }
    for (int i = 0; i < js->n; i++) job_unref(js->all[i]);
    free(js->all);
    free(js->workers);
    if (js->be) js->be->free(js->be);
    pthread_mutex_destroy(&js->mu);
    free(js);
    return 0;
}
