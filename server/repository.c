/* repository.c — see repository.h. Two locks: scan_mu serializes scans, loads, unloads and
 * evictions (slow: file I/O, model building); mu guards the table (fast: pointer swaps and
 * refcount increments), so requests for loaded versions never wait for a load. mu is taken
 * with scan_mu held, never the other way. */
#include "server/repository.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "backend.h"
#include "io/model_file.h"
#include "server/log.h"

#define MAX_VERSIONS 16

typedef struct file_id {
    int version;
    dev_t dev;
    ino_t ino;
    off_t size;
    struct timespec mtime;
} file_id;

/* A version with a file that is not loaded now (memory budget). */
typedef struct lazy_ver {
    file_id id;
    char path[1200];
    long long mem_bytes; /* measured at its last load; 0 = never loaded */
} lazy_ver;

typedef struct entry {
    char name[SRV_NAME_MAX + 1];
    int nver;
    srv_model *ver[MAX_VERSIONS]; /* served, ascending version; each holds one repo reference */
    int nlazy;
    lazy_ver lazy[MAX_VERSIONS];  /* not loaded (budget); a version is never in both lists */
    int unloaded;                 /* unloaded by request: skipped by scans while files match */
    int nskip;
    file_id skip[MAX_VERSIONS];   /* files not to (re)load while unchanged: failed or unloaded */
    char reason[300];
} entry;

struct srv_repo {
    pthread_mutex_t mu, scan_mu;
    srv_config cfg; /* guarded by scan_mu */
    srv_metrics *metrics;
    uint64_t clock;  /* LRU clock, guarded by mu */
    atomic_ullong evictions;
    int n, cap;
    entry **entries; /* guarded by mu (contents of an entry: versions under mu, rest scan_mu) */
};

/* A file found by a scan. */
typedef struct found {
    char name[SRV_NAME_MAX + 1];
    char path[1200];
    file_id id;
} found;

typedef struct found_list {
    found *v;
    int n, cap;
} found_list;

int srv_repo_name_valid(const char *n) {
    size_t len = n ? strlen(n) : 0;
    if (len == 0 || len > SRV_NAME_MAX || n[0] == '.') return 0;
    for (size_t i = 0; i < len; i++)
        if (!isalnum((unsigned char)n[i]) && n[i] != '_' && n[i] != '-' && n[i] != '.') return 0;
    return 1;
}

srv_repo *srv_repo_new(const srv_config *cfg, srv_metrics *metrics) {
    srv_repo *r = calloc(1, sizeof *r);
    if (!r) return NULL;
    pthread_mutex_init(&r->mu, NULL);
    pthread_mutex_init(&r->scan_mu, NULL);
    r->cfg = *cfg;
    r->metrics = metrics;
    return r;
}

void srv_repo_config_set(srv_repo *r, const srv_config *cfg) {
    pthread_mutex_lock(&r->scan_mu);
    r->cfg = *cfg;
    pthread_mutex_unlock(&r->scan_mu);
}

static void model_free(srv_model *m) {
    srv_batcher_free(m->batcher);
    dyn_model_free(m->model);
    free(m);
}

void srv_model_release(srv_model *m) {
    if (m && atomic_fetch_sub(&m->refs, 1) == 1) model_free(m);
}

static int id_same(const file_id *a, const file_id *b) {
    return a->version == b->version && a->dev == b->dev && a->ino == b->ino && a->size == b->size &&
           a->mtime.tv_sec == b->mtime.tv_sec && a->mtime.tv_nsec == b->mtime.tv_nsec;
}

static void batch_observer(void *ctx, const char *model, int n) {
    srv_metrics_batch(ctx, model, n);
}

static double wall_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* Bytes the allocator has handed out and not taken back (every arena, mmapped blocks too). */
static long long heap_in_use(void) {
    struct mallinfo2 mi = mallinfo2();
    return (long long)(mi.uordblks + mi.hblkhd);
}

/* Places a loaded model on the device its settings name (engine/backend.h); a model that
 * cannot be placed is served from the CPU, with a warning naming the cause. On a GPU its
 * batches may grow to gpu_max_batch. */
static void place_model(dyn_model *dm, srv_batch_cfg *bc, const found *f) {
    const dyn_backend *be = NULL;
    int dev = 0, on_cpu = 0;
    char why[320];
    dyn_err err = {0};
    if (dyn_backend_select(srv_device_name(bc->device), &be, &dev, why, sizeof why, &err) || !be)
        return; /* cpu (check_settings refused an unusable `cuda` at start) */
    if (dyn_model_place(dm, be, dev, &on_cpu, &err)) {
        srv_log(SRV_LOG_WARN, "model not placed on the GPU: it runs on the CPU",
                json_pack("{s:s, s:i, s:s, s:s}", "model", f->name, "version", f->id.version,
                          "device", why, "error", err.msg));
        return;
    }
    bc->max_batch = bc->gpu_max_batch;
    srv_log(SRV_LOG_INFO, "model placed on the GPU",
            json_pack("{s:s, s:i, s:s, s:i, s:i}", "model", f->name, "version", f->id.version,
                      "device", why, "layers_on_cpu", on_cpu, "max_batch", bc->max_batch));
}

/* Loads one file into a new version (scan_mu held, mu not held). */
static srv_model *version_load(srv_repo *r, const found *f, dyn_err *err) {
    double t0 = dyn_now();
    long long heap0 = heap_in_use();
    dyn_model *dm = dyn_model_load(f->path, err);
    if (!dm) return NULL;
    srv_model *m = calloc(1, sizeof *m);
    if (!m) {
        dyn_model_free(dm);
        dyn_err_set(err, DYN_ENOMEM, "%s: out of memory", f->path);
        return NULL;
    }
    snprintf(m->name, sizeof m->name, "%s", f->name);
    snprintf(m->path, sizeof m->path, "%s", f->path);
    m->version = f->id.version;
    m->model = dm;
    m->in_numel = dyn_shape_numel(&dm->input);
    m->out_numel = dyn_model_outputs(dm);
    dyn_err perr = {0};
    m->is_image = dyn_preprocess_parse(dm->preprocess, &dm->input, &m->pp, &perr) == 0;
    if (!m->is_image && json_object_size(dm->preprocess) > 0) /* metadata there, but unusable */
        srv_log(SRV_LOG_WARN, "model's preprocess metadata refused: it is served without image "
                              "classification (v2 tensors only); PATCH /v1/models/{name} with "
                              "a valid \"preprocess\" publishes a fixed version",
                json_pack("{s:s, s:i, s:s}", "model", f->name, "version", f->id.version, "error",
                          perr.msg));
    srv_batch_cfg bc = srv_config_batch(&r->cfg, f->name);
    place_model(dm, &bc, f);
    snprintf(m->device, sizeof m->device, "%s", dyn_model_device_name(dm));
    m->batcher = srv_batcher_new(dm, &bc, r->cfg.threads, f->name, batch_observer, r->metrics, err);
    if (!m->batcher) {
        dyn_err_prefix(err, "%s", f->path);
        dyn_model_free(dm);
        free(m);
        return NULL;
    }
    m->dev = f->id.dev;
    m->ino = f->id.ino;
    m->size = f->id.size;
    m->mtime = f->id.mtime;
    m->load_seconds = dyn_now() - t0;
    m->loaded_at = wall_now();
    /* What the process holds now that it did not before (loads are serialized; other threads'
     * allocations meanwhile blur it), at least the buffers counted one by one. */
    dyn_layer_stats st;
    dyn_model_stats(dm, NULL, &st);
    long long floor_bytes = st.memory_floats * (long long)sizeof(float) +
                            srv_batcher_bytes(m->batcher) + (long long)sizeof *m;
    m->mem_bytes = DYN_MAX(heap_in_use() - heap0, floor_bytes);
    atomic_store(&m->refs, 1); /* the repository's */
    srv_metrics_model_load(r->metrics, m->name, m->version, m->load_seconds);
    srv_log(SRV_LOG_INFO, "model loaded",
            json_pack("{s:s, s:i, s:s, s:f, s:b, s:I}", "model", m->name, "version", m->version,
                      "path", m->path, "load_seconds", m->load_seconds, "image_input", m->is_image,
                      "mem_bytes", (json_int_t)m->mem_bytes));
    return m;
}

static int found_push(found_list *l, const char *name, const char *path, const struct stat *st,
                      int version) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 16;
        found *v = realloc(l->v, sizeof(found) * (size_t)cap);
        if (!v) return -1;
        l->v = v;
        l->cap = cap;
    }
    found *f = &l->v[l->n++];
    snprintf(f->name, sizeof f->name, "%s", name);
    snprintf(f->path, sizeof f->path, "%s", path);
    f->id = (file_id){version, st->st_dev, st->st_ino, st->st_size, st->st_mtim};
    return 0;
}

/* "<digits>.dyn" → version (1..1e9), else 0. */
static int version_of(const char *file) {
    size_t n = strlen(file);
    if (n < 5 || n > 14 || strcmp(file + n - 4, ".dyn")) return 0;
    long v = 0;
    for (size_t i = 0; i + 4 < n; i++) {
        if (!isdigit((unsigned char)file[i])) return 0;
        v = v * 10 + (file[i] - '0');
    }
    return v > 0 && v <= 1000000000 ? (int)v : 0;
}

static void list_versions(const char *dirpath, const char *name, found_list *out) {
    DIR *d = opendir(dirpath);
    if (!d) return;
    struct dirent *e;
    char path[1400];
    int count = 0;
    while ((e = readdir(d)) && count < MAX_VERSIONS) {
        int v = version_of(e->d_name);
        if (!v) continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", dirpath, e->d_name) >= sizeof(found){0}.path)
            continue;
        struct stat st;
        if (stat(path, &st) == 0 && S_ISREG(st.st_mode) && found_push(out, name, path, &st, v) == 0)
            count++;
    }
    closedir(d);
}

/* Every model file in the directory (only `only` when not NULL). */
static int list_files(srv_repo *r, const char *only, found_list *out, dyn_err *err) {
    DIR *d = opendir(r->cfg.model_dir);
    if (!d)
        return dyn_err_set(err, DYN_EIO, "model_dir %s: %s", r->cfg.model_dir, strerror(errno));
    struct dirent *e;
    char path[1400], name[SRV_NAME_MAX + 8];
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        size_t len = strlen(e->d_name);
        if (len >= sizeof name) continue;
        if ((size_t)snprintf(path, sizeof path, "%s/%s", r->cfg.model_dir, e->d_name) >=
            sizeof(found){0}.path)
            continue;
        struct stat st;
        if (stat(path, &st) != 0) continue;
        memcpy(name, e->d_name, len + 1);
        if (S_ISDIR(st.st_mode)) {
            if (srv_repo_name_valid(name) && (!only || !strcmp(only, name)))
                list_versions(path, name, out);
        } else if (S_ISREG(st.st_mode) && len > 4 && !strcmp(name + len - 4, ".dyn")) {
            name[len - 4] = 0;
            if (srv_repo_name_valid(name) && (!only || !strcmp(only, name)))
                found_push(out, name, path, &st, 1);
        }
    }
    closedir(d);
    /* A directory's versions win over the flat file of the same name. */
    for (int i = 0; i < out->n; i++) {
        if (strstr(out->v[i].path + strlen(r->cfg.model_dir) + 1, "/")) continue; /* a dir file */
        for (int j = 0; j < out->n; j++) {
            if (j != i && !strcmp(out->v[j].name, out->v[i].name) &&
                strstr(out->v[j].path + strlen(r->cfg.model_dir) + 1, "/")) {
                out->v[i] = out->v[--out->n];
                i--;
                break;
            }
        }
    }
    return 0;
}

/* mu held. */
static entry *entry_find(srv_repo *r, const char *name) {
    for (int i = 0; i < r->n; i++)
        if (!strcmp(r->entries[i]->name, name)) return r->entries[i];
    return NULL;
}

/* scan_mu held; takes mu. NULL on ENOMEM. */
static entry *entry_get(srv_repo *r, const char *name) {
    pthread_mutex_lock(&r->mu);
    entry *e = entry_find(r, name);
    if (!e && r->n == r->cap) {
        int cap = r->cap ? r->cap * 2 : 16;
        entry **v = realloc(r->entries, sizeof(entry *) * (size_t)cap);
        if (v) {
            r->entries = v;
            r->cap = cap;
        }
    }
    if (!e && r->n < r->cap && (e = calloc(1, sizeof *e))) {
        snprintf(e->name, sizeof e->name, "%s", name);
        r->entries[r->n++] = e;
    }
    pthread_mutex_unlock(&r->mu);
    return e;
}

/* Puts m in as its version (replacing one of the same number). Returns the replaced version
 * (the caller releases it outside the lock) or NULL. scan_mu held; takes mu. */
static int lazy_find(const entry *e, int version) {
    for (int i = 0; i < e->nlazy; i++)
        if (e->lazy[i].id.version == version) return i;
    return -1;
}

static srv_model *entry_put(srv_repo *r, entry *e, srv_model *m) {
    srv_model *old = NULL;
    pthread_mutex_lock(&r->mu);
    int li = lazy_find(e, m->version);
    if (li >= 0) e->lazy[li] = e->lazy[--e->nlazy];
    m->last_used = ++r->clock;
    int i = 0;
    while (i < e->nver && e->ver[i]->version < m->version) i++;
    if (i < e->nver && e->ver[i]->version == m->version) {
        old = e->ver[i];
        e->ver[i] = m;
    } else if (e->nver < MAX_VERSIONS) {
        memmove(&e->ver[i + 1], &e->ver[i], sizeof(srv_model *) * (size_t)(e->nver - i));
        e->ver[i] = m;
        e->nver++;
    } else {
        old = m; /* no room: never happens with list_versions' cap */
    }
    pthread_mutex_unlock(&r->mu);
    return old;
}

static void skip_add(entry *e, const file_id *id) {
    for (int i = 0; i < e->nskip; i++)
        if (e->skip[i].version == id->version) {
            e->skip[i] = *id;
            return;
        }
    if (e->nskip < MAX_VERSIONS) e->skip[e->nskip++] = *id;
}

static int skip_has(const entry *e, const file_id *id) {
    for (int i = 0; i < e->nskip; i++)
        if (id_same(&e->skip[i], id)) return 1;
    return 0;
}

/* ---- memory budget ---- */

static int budget_on(const srv_config *c) {
    return c->max_loaded_models > 0 || c->max_model_memory_bytes > 0;
}

/* Loaded versions and their memory (mu held). */
static void totals(const srv_repo *r, int *count, long long *bytes) {
    *count = 0;
    *bytes = 0;
    for (int i = 0; i < r->n; i++)
        for (int k = 0; k < r->entries[i]->nver; k++) {
            (*count)++;
            *bytes += r->entries[i]->ver[k]->mem_bytes;
        }
}

/* The memory a version never loaded yet is expected to take: the mean of those loaded (0 when
 * none is). mu held. */
static long long size_guess(const srv_repo *r) {
    int count;
    long long bytes;
    totals(r, &count, &bytes);
    return count ? bytes / count : 0;
}

/* Whether `count` versions of `bytes` fit (a lone version always does). */
static int budget_fits(const srv_config *c, int count, long long bytes) {
    return count <= 1 || ((c->max_loaded_models == 0 || count <= c->max_loaded_models) &&
                          (c->max_model_memory_bytes == 0 || bytes <= c->max_model_memory_bytes));
}

/* Remembers a version as lazy (mu held). */
static void lazy_put(entry *e, const file_id *id, const char *path, long long mem_bytes) {
    int i = lazy_find(e, id->version);
    if (i < 0) {
        if (e->nlazy == MAX_VERSIONS) return;
        i = e->nlazy++;
    }
    e->lazy[i].id = *id;
    snprintf(e->lazy[i].path, sizeof e->lazy[i].path, "%s", path);
    e->lazy[i].mem_bytes = mem_bytes;
}

/* Unloads idle versions (no reference but the repository's, nothing queued), least recently
 * used first, until `need_count` more versions of `need_bytes` fit in the budget; `keep` (may
 * be NULL) is never unloaded. Unloaded versions become lazy. 0 when they fit, -1 when no idle
 * version is left to unload. scan_mu held; takes mu. */
static int make_room(srv_repo *r, int need_count, long long need_bytes, const srv_model *keep) {
    for (;;) {
        int count;
        long long bytes;
        srv_model *victim = NULL;
        entry *ve = NULL;
        int vi = -1;
        pthread_mutex_lock(&r->mu);
        totals(r, &count, &bytes);
        int fits = !budget_on(&r->cfg) ||
                   budget_fits(&r->cfg, count + need_count, bytes + need_bytes);
        for (int i = 0; !fits && i < r->n; i++)
            for (int k = 0; k < r->entries[i]->nver; k++) {
                srv_model *m = r->entries[i]->ver[k];
                if (m == keep || atomic_load(&m->refs) != 1 || srv_batcher_depth(m->batcher) > 0)
                    continue;
                if (!victim || m->last_used < victim->last_used) {
                    victim = m;
                    ve = r->entries[i];
                    vi = k;
                }
            }
        if (victim) { /* refs == 1 under mu: no request can take it any more */
            memmove(&ve->ver[vi], &ve->ver[vi + 1], sizeof(srv_model *) * (size_t)(ve->nver - vi - 1));
            ve->nver--;
            file_id id = {victim->version, victim->dev, victim->ino, victim->size, victim->mtime};
            lazy_put(ve, &id, victim->path, victim->mem_bytes);
        }
        pthread_mutex_unlock(&r->mu);
        if (fits) return 0;
        if (!victim) return -1;
        atomic_fetch_add(&r->evictions, 1);
        srv_log(SRV_LOG_INFO, "model unloaded to make room (memory budget); its next request "
                              "loads it again",
                json_pack("{s:s, s:i, s:I, s:i, s:I}", "model", victim->name, "version",
                          victim->version, "mem_bytes", (json_int_t)victim->mem_bytes,
                          "loaded_before", count, "loaded_bytes_before", (json_int_t)bytes));
        srv_model_release(victim); /* the last reference: frees it (joins its workers) */
    }
}

/* Loads f into its entry unless it is already served unchanged (force: always). lazy_ok
 * (scans): with a budget, a version not loaded is loaded only when it is new and the budget
 * has room, else remembered as lazy. Returns 1 when a version was loaded, 0 when nothing
 * changed, a DYN_E* code on a failed load. scan_mu held. */
static int sync_file(srv_repo *r, const found *f, int force, int lazy_ok, dyn_err *err) {
    entry *e = entry_get(r, f->name);
    if (!e) return dyn_err_set(err, DYN_ENOMEM, "repository: out of memory");
    if (!force && skip_has(e, &f->id)) return 0;
    pthread_mutex_lock(&r->mu);
    int same = 0, loaded = 0;
    for (int i = 0; i < e->nver; i++) {
        const srv_model *m = e->ver[i];
        file_id cur = {m->version, m->dev, m->ino, m->size, m->mtime};
        if (id_same(&cur, &f->id)) same = 1;
        if (m->version == f->id.version) loaded = 1;
    }
    int li = lazy_find(e, f->id.version);
    long long est = li >= 0 && id_same(&e->lazy[li].id, &f->id) ? e->lazy[li].mem_bytes : 0;
    if (!est) est = size_guess(r);
    if (!loaded && lazy_ok && budget_on(&r->cfg)) {
        int count;
        long long bytes;
        totals(r, &count, &bytes);
        if (li >= 0 || !budget_fits(&r->cfg, count + 1, bytes + est)) {
            /* known lazy (unloaded to make room: never reloaded by a scan), or no room */
            lazy_put(e, &f->id, f->path, li >= 0 && id_same(&e->lazy[li].id, &f->id)
                                             ? e->lazy[li].mem_bytes : 0);
            pthread_mutex_unlock(&r->mu);
            return 0;
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (same && !force) return 0;
    if (!loaded && budget_on(&r->cfg)) make_room(r, 1, est, NULL); /* best effort */
    e->unloaded = 0;
    srv_model *m = version_load(r, f, err);
    if (!m) {
        skip_add(e, &f->id);
        snprintf(e->reason, sizeof e->reason, "%.299s", err ? err->msg : "load failed");
        srv_log(SRV_LOG_ERROR, "model load failed",
                json_pack("{s:s, s:i, s:s, s:s}", "model", f->name, "version", f->id.version,
                          "path", f->path, "error", e->reason));
        return err ? err->code : DYN_EFORMAT;
    }
    e->reason[0] = 0;
    srv_model_release(entry_put(r, e, m));
    if (budget_on(&r->cfg)) make_room(r, 0, 0, m); /* its measured size may not fit */
    return 1;
}

/* Drops served versions of e not in `files` (scan_mu held). */
static void drop_missing(srv_repo *r, entry *e, const found_list *files) {
    srv_model *gone[MAX_VERSIONS];
    int ngone = 0;
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < e->nver;) {
        int present = 0;
        for (int k = 0; k < files->n && !present; k++)
            present = !strcmp(files->v[k].name, e->name) && files->v[k].id.version == e->ver[i]->version;
        if (present) {
            i++;
            continue;
        }
        gone[ngone++] = e->ver[i];
        memmove(&e->ver[i], &e->ver[i + 1], sizeof(srv_model *) * (size_t)(e->nver - i - 1));
        e->nver--;
    }
    for (int i = 0; i < e->nlazy;) {
        int present = 0;
        for (int k = 0; k < files->n && !present; k++)
            present = !strcmp(files->v[k].name, e->name) &&
                      files->v[k].id.version == e->lazy[i].id.version;
        if (present) i++;
        else e->lazy[i] = e->lazy[--e->nlazy];
    }
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < ngone; i++) {
        srv_log(SRV_LOG_INFO, "model file removed: version unloaded",
                json_pack("{s:s, s:i}", "model", e->name, "version", gone[i]->version));
        srv_model_release(gone[i]);
    }
}

int srv_repo_scan(srv_repo *r, int force, dyn_err *err) {
    pthread_mutex_lock(&r->scan_mu);
    found_list files = {0};
    int rc = list_files(r, NULL, &files, err), changed = 0;
    if (!rc) {
        for (int i = 0; i < files.n; i++) {
            const found *f = &files.v[i];
            entry *e = entry_get(r, f->name);
            if (e && e->unloaded && skip_has(e, &f->id)) continue;
            dyn_err ferr = {0};
            if (sync_file(r, f, force, 1, &ferr) == 1) changed++;
        }
        for (int i = 0; i < r->n; i++) drop_missing(r, r->entries[i], &files);
        /* forget entries with nothing served and no files */
        pthread_mutex_lock(&r->mu);
        for (int i = 0; i < r->n;) {
            entry *e = r->entries[i];
            int has_file = 0;
            for (int k = 0; k < files.n && !has_file; k++) has_file = !strcmp(files.v[k].name, e->name);
            if (e->nver == 0 && e->nlazy == 0 && !has_file) {
                free(e);
                r->entries[i] = r->entries[--r->n];
            } else {
                i++;
            }
        }
        pthread_mutex_unlock(&r->mu);
        if (budget_on(&r->cfg)) make_room(r, 0, 0, NULL); /* e.g. after SIGHUP lowered it */
        rc = changed;
    }
    free(files.v);
    pthread_mutex_unlock(&r->scan_mu);
    return rc;
}

int srv_repo_load(srv_repo *r, const char *name, dyn_err *err) {
    if (!srv_repo_name_valid(name))
        return dyn_err_set(err, DYN_EINVAL, "invalid model name");
    pthread_mutex_lock(&r->scan_mu);
    found_list files = {0};
    int rc = list_files(r, name, &files, err);
    if (!rc && files.n == 0)
        rc = dyn_err_set(err, DYN_EINVAL, "no file for model '%s' in the repository (%s.dyn or "
                         "%s/<version>.dyn)", name, name, name);
    if (!rc) {
        entry *e = entry_get(r, name);
        if (e) e->nskip = 0;
        for (int i = 0; i < files.n && rc >= 0; i++) rc = sync_file(r, &files.v[i], 1, 0, err);
        if (rc > 0) rc = 0;
        if (e && rc == 0) drop_missing(r, e, &files);
    }
    free(files.v);
    pthread_mutex_unlock(&r->scan_mu);
    return rc;
}

/* srv_repo_refresh with scan_mu held. */
static int refresh_locked(srv_repo *r, const char *name, dyn_err *err) {
    found_list files = {0};
    char path[1200];
    struct stat st;
    /* list_files' rules for one name: the directory's versions, else the flat file */
    if ((size_t)snprintf(path, sizeof path, "%s/%s", r->cfg.model_dir, name) < sizeof path &&
        stat(path, &st) == 0 && S_ISDIR(st.st_mode))
        list_versions(path, name, &files);
    if (files.n == 0 &&
        (size_t)snprintf(path, sizeof path, "%s/%s.dyn", r->cfg.model_dir, name) < sizeof path &&
        stat(path, &st) == 0 && S_ISREG(st.st_mode))
        found_push(&files, name, path, &st, 1);
    int rc = 0;
    for (int i = 0; i < files.n; i++) {
        entry *e = entry_get(r, name);
        if (e && e->unloaded && skip_has(e, &files.v[i].id)) continue; /* as srv_repo_scan */
        int k = sync_file(r, &files.v[i], 0, 1, err);
        if (k < 0) rc = k;
        else if (rc >= 0) rc += k;
    }
    free(files.v);
    return rc;
}

int srv_repo_refresh(srv_repo *r, const char *name, dyn_err *err) {
    if (!srv_repo_name_valid(name)) return 0;
    pthread_mutex_lock(&r->scan_mu);
    int rc = refresh_locked(r, name, err);
    pthread_mutex_unlock(&r->scan_mu);
    return rc;
}

int srv_repo_unload(srv_repo *r, const char *name, dyn_err *err) {
    pthread_mutex_lock(&r->scan_mu);
    srv_model *gone[MAX_VERSIONS];
    int ngone = 0;
    pthread_mutex_lock(&r->mu);
    entry *e = entry_find(r, name);
    if (e) {
        for (int i = 0; i < e->nver; i++) {
            gone[ngone++] = e->ver[i];
            file_id id = {e->ver[i]->version, e->ver[i]->dev, e->ver[i]->ino, e->ver[i]->size,
                          e->ver[i]->mtime};
            skip_add(e, &id);
        }
        for (int i = 0; i < e->nlazy; i++) skip_add(e, &e->lazy[i].id);
        e->nver = 0;
        e->nlazy = 0;
        e->unloaded = 1;
        snprintf(e->reason, sizeof e->reason, "unloaded by request");
    }
    pthread_mutex_unlock(&r->mu);
    pthread_mutex_unlock(&r->scan_mu);
    if (!e) return dyn_err_set(err, DYN_EINVAL, "unknown model '%s'", name);
    for (int i = 0; i < ngone; i++) srv_model_release(gone[i]);
    srv_log(SRV_LOG_INFO, "model unloaded", json_pack("{s:s}", "model", name));
    return 0;
}

/* The default version of e: the highest loaded or lazy; 0 when none (mu held). */
static int top_version(const entry *e) {
    int v = e->nver ? e->ver[e->nver - 1]->version : 0;
    for (int i = 0; i < e->nlazy; i++) v = DYN_MAX(v, e->lazy[i].id.version);
    return v;
}

/* Version `version` of e (0: the default) when loaded, else NULL (mu held). */
static srv_model *pick(const entry *e, int version) {
    if (version <= 0) version = top_version(e);
    for (int i = 0; i < e->nver; i++)
        if (e->ver[i]->version == version) return e->ver[i];
    return NULL;
}

srv_model *srv_repo_acquire(srv_repo *r, const char *name, int version, int *known) {
    pthread_mutex_lock(&r->mu);
    entry *e = entry_find(r, name);
    if (known) *known = e != NULL;
    srv_model *m = e ? pick(e, version) : NULL;
    if (m) {
        atomic_fetch_add(&m->refs, 1);
        m->last_used = ++r->clock;
    }
    pthread_mutex_unlock(&r->mu);
    return m;
}

/* Locks mu, waiting at most until deadline (dyn_now() seconds; 0 = no bound). 0 or an errno. */
static int lock_until(pthread_mutex_t *mu, double deadline) {
    if (deadline <= 0) return pthread_mutex_lock(mu);
    double left = DYN_MAX(0.0, deadline - dyn_now());
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    long long ns = ts.tv_nsec + (long long)(left * 1e9);
    ts.tv_sec += (time_t)(ns / 1000000000LL);
    ts.tv_nsec = (long)(ns % 1000000000LL);
    return pthread_mutex_timedlock(mu, &ts);
}

/* The lazy version `version` (0: the default) of model `name` into *f and its last measured
 * size; 0 when that version is not lazy. mu held. */
static int lazy_target(srv_repo *r, const char *name, int version, found *f, long long *est) {
    entry *e = entry_find(r, name);
    if (!e) return 0;
    int i = lazy_find(e, version > 0 ? version : top_version(e));
    if (i < 0) return 0;
    snprintf(f->name, sizeof f->name, "%s", name);
    snprintf(f->path, sizeof f->path, "%s", e->lazy[i].path);
    f->id = e->lazy[i].id;
    *est = e->lazy[i].mem_bytes ? e->lazy[i].mem_bytes : size_guess(r);
    return 1;
}

/* Loads lazy version f for a request: room first (waiting for an idle version until the
 * deadline), then the load; the caller gets a reference. scan_mu held. */
static srv_model *load_lazy(srv_repo *r, const found *f, long long est, double deadline,
                            srv_repo_why *why, dyn_err *err) {
    while (make_room(r, 1, est, NULL) != 0) {
        if (deadline > 0 && dyn_now() >= deadline) {
            *why = SRV_REPO_BUDGET_BUSY;
            return NULL;
        }
        nanosleep(&(struct timespec){0, 2000000}, NULL); /* a request in flight finishes */
    }
    entry *e = entry_get(r, f->name);
    if (!e) {
        *why = SRV_REPO_LOAD_FAILED;
        dyn_err_set(err, DYN_ENOMEM, "repository: out of memory");
        return NULL;
    }
    srv_model *m = version_load(r, f, err);
    if (!m) {
        *why = SRV_REPO_LOAD_FAILED;
        pthread_mutex_lock(&r->mu);
        int li = lazy_find(e, f->id.version);
        if (li >= 0) e->lazy[li] = e->lazy[--e->nlazy];
        pthread_mutex_unlock(&r->mu);
        skip_add(e, &f->id); /* retried when the file changes, as a scan's failed load */
        snprintf(e->reason, sizeof e->reason, "%.299s", err ? err->msg : "load failed");
        srv_log(SRV_LOG_ERROR, "model load failed",
                json_pack("{s:s, s:i, s:s, s:s}", "model", f->name, "version", f->id.version,
                          "path", f->path, "error", e->reason));
        return NULL;
    }
    atomic_fetch_add(&m->refs, 1); /* the caller's, before anyone else can see it */
    srv_model_release(entry_put(r, e, m));
    make_room(r, 0, 0, m); /* its measured size may not fit */
    return m;
}

srv_model *srv_repo_acquire_load(srv_repo *r, const char *name, int version, double deadline,
                                 int *known, srv_repo_why *why, dyn_err *err) {
    srv_repo_why w = SRV_REPO_NOT_SERVED;
    dyn_err lerr = {0};
    if (!err) err = &lerr;
    srv_model *m = srv_repo_acquire(r, name, version, known);
    if (!m && srv_repo_name_valid(name)) {
        if (lock_until(&r->scan_mu, deadline) != 0) {
            w = SRV_REPO_TIMEOUT;
        } else {
            dyn_err rerr = {0};
            refresh_locked(r, name, &rerr); /* published since the last scan? */
            m = srv_repo_acquire(r, name, version, known); /* loaded meanwhile? */
            found f;
            long long est = 0;
            pthread_mutex_lock(&r->mu);
            int lazy = !m && lazy_target(r, name, version, &f, &est);
            pthread_mutex_unlock(&r->mu);
            if (lazy) m = load_lazy(r, &f, est, deadline, &w, err);
            pthread_mutex_unlock(&r->scan_mu);
        }
    }
    if (why) *why = m ? SRV_REPO_NOT_SERVED : w;
    return m;
}

srv_model_state srv_repo_state(srv_repo *r, const char *name, int version, char *reason,
                               size_t n) {
    srv_model_state st = SRV_STATE_UNKNOWN;
    const char *why = "";
    pthread_mutex_lock(&r->mu);
    entry *e = entry_find(r, name);
    if (e) {
        int v = version > 0 ? version : top_version(e);
        if (pick(e, v)) {
            st = SRV_STATE_READY;
        } else if (v > 0 && lazy_find(e, v) >= 0) {
            st = SRV_STATE_LAZY;
            why = SRV_REPO_LAZY_REASON;
        } else if (version <= 0 || (e->nver == 0 && e->nlazy == 0)) {
            st = SRV_STATE_UNAVAILABLE;
            why = e->reason[0] ? e->reason : "not loaded";
        }
    }
    if (reason && n) snprintf(reason, n, "%s", why);
    pthread_mutex_unlock(&r->mu);
    return st;
}

srv_repo_usage srv_repo_usage_get(srv_repo *r) {
    srv_repo_usage u = {0};
    pthread_mutex_lock(&r->mu);
    totals(r, &u.loaded, &u.mem_bytes);
    for (int i = 0; i < r->n; i++) u.lazy += r->entries[i]->nlazy;
    pthread_mutex_unlock(&r->mu);
    u.evictions = atomic_load(&r->evictions);
    return u;
}

json_t *srv_repo_index(srv_repo *r) {
    json_t *a = json_array();
    pthread_mutex_lock(&r->mu);
    for (int i = 0; i < r->n; i++) {
        entry *e = r->entries[i];
        for (int k = 0; k < e->nver; k++) {
            char v[16];
            snprintf(v, sizeof v, "%d", e->ver[k]->version);
            json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s}", "name", e->name, "version",
                                               v, "state", "READY", "reason", ""));
        }
        for (int k = 0; k < e->nlazy; k++) {
            char v[16];
            snprintf(v, sizeof v, "%d", e->lazy[k].id.version);
            json_array_append_new(a, json_pack("{s:s, s:s, s:s, s:s}", "name", e->name, "version",
                                               v, "state", "UNAVAILABLE", "reason",
                                               SRV_REPO_LAZY_REASON));
        }
        if (e->nver == 0 && e->nlazy == 0)
            json_array_append_new(a, json_pack("{s:s, s:s, s:s}", "name", e->name, "state",
                                               "UNAVAILABLE", "reason", e->reason));
    }
    pthread_mutex_unlock(&r->mu);
    return a;
}

void srv_repo_foreach(srv_repo *r, void (*fn)(srv_model *m, void *ctx), void *ctx) {
    pthread_mutex_lock(&r->mu);
    int n = 0;
    for (int i = 0; i < r->n; i++) n += r->entries[i]->nver;
    srv_model **all = malloc(sizeof(srv_model *) * (size_t)(n ? n : 1));
    int k = 0;
    for (int i = 0; all && i < r->n; i++)
        for (int j = 0; j < r->entries[i]->nver; j++) {
            all[k] = r->entries[i]->ver[j];
            atomic_fetch_add(&all[k]->refs, 1);
            k++;
        }
    pthread_mutex_unlock(&r->mu);
    for (int i = 0; i < k; i++) {
        fn(all[i], ctx);
        srv_model_release(all[i]);
    }
    free(all);
}

int srv_repo_count(srv_repo *r) {
    pthread_mutex_lock(&r->mu);
    int n = 0;
    for (int i = 0; i < r->n; i++) n += r->entries[i]->nver;
    pthread_mutex_unlock(&r->mu);
    return n;
}

static void stop_one(srv_model *m, void *ctx) { srv_batcher_stop(m->batcher, *(int *)ctx); }

void srv_repo_stop(srv_repo *r, int cancel_queued) {
    srv_repo_foreach(r, stop_one, &cancel_queued); /* callbacks run with no repository lock */
}

void srv_repo_free(srv_repo *r) {
    if (!r) return;
    for (int i = 0; i < r->n; i++) {
        entry *e = r->entries[i];
        for (int j = 0; j < e->nver; j++) srv_model_release(e->ver[j]);
        free(e);
    }
    free(r->entries);
    pthread_mutex_destroy(&r->mu);
    pthread_mutex_destroy(&r->scan_mu);
    free(r);
}
