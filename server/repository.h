/* repository.h — the model directory: scan, versions, load-before-release, refcounts.
 *
 * Layout (model_dir):
 *   <name>.dyn            model <name>, version 1
 *   <name>/<v>.dyn        model <name>, version v (a positive integer); every version found is
 *                         served, the highest is the default. When both exist the directory wins.
 * Names: 1..64 of [A-Za-z0-9_.-], not starting with '.'. Files starting with '.' or ending in
 * anything but ".dyn" (temp files of an atomic publish) are ignored.
 *
 * Versions are refcounted (srv_model). The repository holds one reference to each served
 * version; srv_repo_acquire gives a request another. Replacing a version (the file changed)
 * loads the new one completely, then swaps it in under the lock and drops the repository's
 * reference to the old one: requests already holding the old one finish on it, new requests
 * get the new one, and no request ever finds the model missing. The last release frees the
 * version (stops its batcher after its queue drained, frees the model).
 *
 * A file that fails to load is logged with the reason and remembered by (inode, size, mtime):
 * it is retried only when it changes, and the version already served (if any) stays served.
 *
 * Memory budget (max_loaded_models, max_model_memory_bytes; 0 = no limit): a version's memory
 * is measured at its load (what the process holds afterwards that it did not before: weights,
 * each batch worker's execution buffers, the batcher) and kept with it. Scans load new files
 * only while the budget has room; the other versions are known but not loaded ("lazy"), as
 * are versions unloaded to make room. srv_repo_acquire_load loads a lazy version for a
 * request: first it unloads the least recently used idle versions (idle: no reference but the
 * repository's, nothing queued) until the new one fits, waiting up to the request's deadline
 * while every loaded version is busy. Concurrent requests for one lazy version load it once
 * (the later ones find it loaded). A lazy version whose file changes is reloaded from the new
 * file by its next request; explicit loads (srv_repo_load) make room the same way but load
 * even when nothing is idle, and the next scan brings the repository back under the budget.
 *
 * Threads: every function is thread-safe. Scans and loads are serialized by an internal mutex
 * (loading happens outside the table lock, so requests for loaded versions never wait for a
 * load).
 */
#ifndef SRV_REPOSITORY_H
#define SRV_REPOSITORY_H

#include <jansson.h>
#include <stdatomic.h>
#include <stdint.h>
#include <sys/types.h>

#include "io/image.h"
#include "model.h"
#include "server/batcher.h"
#include "server/config.h"
#include "server/metrics.h"

#define SRV_NAME_MAX 64

typedef struct srv_model {
    char name[SRV_NAME_MAX + 1];
    int version;
    char path[1200];
    dyn_model *model;
    srv_batcher *batcher;
    int is_image;           /* the input is [1|3, H, W] and preprocess parsed */
    dyn_preprocess pp;
    int64_t in_numel, out_numel;
    double load_seconds, loaded_at; /* loaded_at: epoch seconds */
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
    long long mem_bytes;  /* measured at load (see above) */
    char device[32];      /* where it runs: "cpu", "cuda:0" (engine/backend.h) */
    uint64_t last_used;   /* LRU clock of the last acquire (guarded by the repository) */
    atomic_int refs;
} srv_model;

/* The reason given for a lazy version (index, readiness). */
#define SRV_REPO_LAZY_REASON \
    "not loaded (memory budget: max_loaded_models / max_model_memory_bytes); its next " \
    "inference or metadata request loads it"

/* srv_repo_acquire_load's reason for NULL. */
typedef enum {
    SRV_REPO_NOT_SERVED = 0, /* unknown, failed or unloaded by request: *known tells which */
    SRV_REPO_TIMEOUT,        /* the deadline passed while a scan or another load ran */
    SRV_REPO_BUDGET_BUSY,    /* no room in the memory budget: every loaded version is busy */
    SRV_REPO_LOAD_FAILED,    /* the file did not load (err says why) */
    SRV_REPO_WHY_COUNT
} srv_repo_why;

/* State of one model (version) in the repository (srv_repo_state). */
typedef enum {
    SRV_STATE_UNKNOWN = 0, /* no such model (version) */
    SRV_STATE_READY,       /* loaded and servable */
    SRV_STATE_LAZY,        /* has a file, not loaded now (memory budget): a request loads it */
    SRV_STATE_UNAVAILABLE, /* failed to load or unloaded by request */
    SRV_STATE_COUNT
} srv_model_state;

/* Totals of the loaded versions and evictions so far (srv_repo_usage). */
typedef struct srv_repo_usage {
    int loaded;            /* versions loaded */
    int lazy;              /* versions known but not loaded (budget) */
    long long mem_bytes;   /* their measured memory */
    unsigned long long evictions; /* versions unloaded to make room */
} srv_repo_usage;

typedef struct srv_repo srv_repo;

/* New repository over cfg->model_dir (the settings used for new versions are copied; see
 * srv_repo_config_set). Nothing is loaded until the first scan. NULL on ENOMEM. */
srv_repo *srv_repo_new(const srv_config *cfg, srv_metrics *metrics);

/* Stops every batcher (cancel_queued: queued requests answer "shutting down") without freeing. */
void srv_repo_stop(srv_repo *r, int cancel_queued);

/* Drops every served version (each freed once its last request released it) and frees r. */
void srv_repo_free(srv_repo *r);

/* Settings for versions loaded from now on (batching, threads, model_dir). */
void srv_repo_config_set(srv_repo *r, const srv_config *cfg);

/* Scans model_dir: loads new and changed files (force: every file, e.g. after SIGHUP changed
 * the batching settings), unloads versions whose file disappeared.
 * Models unloaded by request stay unloaded until their file changes or they are loaded again.
 * Returns the number of versions loaded or replaced, or DYN_EIO when the directory cannot be
 * read. A file that fails to load is logged and does not fail the scan. */
int srv_repo_scan(srv_repo *r, int force, dyn_err *err);

/* Loads (or reloads from disk) model `name` now. 0, DYN_EINVAL (bad name / no such files:
 * err says which) or the load error of its file. */
int srv_repo_load(srv_repo *r, const char *name, dyn_err *err);

/* Looks at the files of model `name` only (model_dir/<name>/<v>.dyn, else model_dir/<name>.dyn)
 * and loads the new or changed ones as a scan would (a model unloaded by request stays
 * unloaded; nothing is unloaded here). For a request that misses: another process sharing
 * model_dir (a replica behind a load balancer, a job) may have published the model since the
 * last scan, which file events do not report across hosts on a shared file system. Cheap when
 * nothing changed: a stat or two (and a listing of model_dir/<name>/ when it exists). Returns
 * the number of versions loaded (0: no change, no such file, or an invalid name), or the load
 * error of a file (DYN_E*, err says why). */
int srv_repo_refresh(srv_repo *r, const char *name, dyn_err *err);

/* Stops serving `name` (all versions); in-flight requests finish. 0 or DYN_EINVAL (unknown). */
int srv_repo_unload(srv_repo *r, const char *name, dyn_err *err);

/* A served version with a reference for the caller (release with srv_model_release): version
 * 0 = the default (highest). NULL when not served; *known tells whether the name exists in
 * the repository at all (files or an unloaded entry) so callers can say 404 vs 503. */
srv_model *srv_repo_acquire(srv_repo *r, const char *name, int version, int *known);
void srv_model_release(srv_model *m);

/* srv_repo_acquire, and when the version is not loaded: looks for a newly published file
 * (srv_repo_refresh) and loads a lazy version (see "Memory budget"), waiting at most until
 * `deadline` (dyn_now() seconds; 0 = no bound) for a scan or load in progress or for room.
 * Returns the version with a reference for the caller (srv_model_release), or NULL with *why
 * (and err for SRV_REPO_LOAD_FAILED) and *known as srv_repo_acquire sets it. */
srv_model *srv_repo_acquire_load(srv_repo *r, const char *name, int version, double deadline,
                                 int *known, srv_repo_why *why, dyn_err *err);

/* The state of model `name` (version 0: its default, the highest version with a file or
 * loaded); reason (may be NULL) gets why it is not READY. Never loads. */
srv_model_state srv_repo_state(srv_repo *r, const char *name, int version, char *reason,
                               size_t n);

/* Loaded versions, their memory, lazy versions and evictions so far. */
srv_repo_usage srv_repo_usage_get(srv_repo *r);

/* 1 when the name is valid for a model (and so for a file name). */
int srv_repo_name_valid(const char *name);

/* Repository index (new reference): [{"name", "version", "state", "reason"}] for every model
 * known, as Triton's repository index (state READY per served version; UNAVAILABLE with reason
 * "not loaded (memory budget): ..." per lazy version; UNAVAILABLE with the reason, no version,
 * for a model with files but nothing served or lazy). */
json_t *srv_repo_index(srv_repo *r);

/* Calls fn for every served version, with a reference held during the call. */
void srv_repo_foreach(srv_repo *r, void (*fn)(srv_model *m, void *ctx), void *ctx);

/* Versions loaded now. */
int srv_repo_count(srv_repo *r);

#endif
