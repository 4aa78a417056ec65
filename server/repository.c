/* repository.c — see repository.h. Two locks, never held together: scan_mu serializes scans,
 * loads and unloads (slow: file I/O, model building); mu guards the table (fast: pointer swaps
 * and refcount increments), so requests never wait for a load. */
#include "server/repository.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

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

typedef struct entry {
    char name[SRV_NAME_MAX + 1];
    int nver;
    srv_model *ver[MAX_VERSIONS]; /* served, ascending version; each holds one repo reference */
    int unloaded;                 /* unloaded by request: skipped by scans while files match */
    int nskip;
    file_id skip[MAX_VERSIONS];   /* files not to (re)load while unchanged: failed or unloaded */
    char reason[300];
} entry;

struct srv_repo {
    pthread_mutex_t mu, scan_mu;
    srv_config cfg; /* guarded by scan_mu */
    srv_metrics *metrics;
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

/* Loads one file into a new version (scan_mu held, mu not held). */
static srv_model *version_load(srv_repo *r, const found *f, dyn_err *err) {
    double t0 = dyn_now();
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
    atomic_store(&m->refs, 1); /* the repository's */
    srv_metrics_model_load(r->metrics, m->name, m->version, m->load_seconds);
    srv_log(SRV_LOG_INFO, "model loaded",
            json_pack("{s:s, s:i, s:s, s:f, s:b}", "model", m->name, "version", m->version, "path",
                      m->path, "load_seconds", m->load_seconds, "image_input", m->is_image));
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
static srv_model *entry_put(srv_repo *r, entry *e, srv_model *m) {
    srv_model *old = NULL;
    pthread_mutex_lock(&r->mu);
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

/* Loads f into its entry unless it is already served unchanged (force: always). Returns 1
 * when a version was loaded, 0 when nothing changed, a DYN_E* code on a failed load. scan_mu
 * held. */
static int sync_file(srv_repo *r, const found *f, int force, dyn_err *err) {
    entry *e = entry_get(r, f->name);
    if (!e) return dyn_err_set(err, DYN_ENOMEM, "repository: out of memory");
    if (!force) {
        if (skip_has(e, &f->id)) return 0;
        pthread_mutex_lock(&r->mu);
        int same = 0;
        for (int i = 0; i < e->nver; i++) {
            const srv_model *m = e->ver[i];
            file_id cur = {m->version, m->dev, m->ino, m->size, m->mtime};
            if (id_same(&cur, &f->id)) same = 1;
        }
        pthread_mutex_unlock(&r->mu);
        if (same) return 0;
    }
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
            if (sync_file(r, f, force, &ferr) == 1) changed++;
        }
        for (int i = 0; i < r->n; i++) drop_missing(r, r->entries[i], &files);
        /* forget entries with nothing served and no files */
        pthread_mutex_lock(&r->mu);
        for (int i = 0; i < r->n;) {
            entry *e = r->entries[i];
            int has_file = 0;
            for (int k = 0; k < files.n && !has_file; k++) has_file = !strcmp(files.v[k].name, e->name);
            if (e->nver == 0 && !has_file) {
                free(e);
                r->entries[i] = r->entries[--r->n];
            } else {
                i++;
            }
        }
        pthread_mutex_unlock(&r->mu);
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
        for (int i = 0; i < files.n && rc >= 0; i++) rc = sync_file(r, &files.v[i], 1, err);
        if (rc > 0) rc = 0;
        if (e && rc == 0) drop_missing(r, e, &files);
    }
    free(files.v);
    pthread_mutex_unlock(&r->scan_mu);
    return rc;
}

int srv_repo_refresh(srv_repo *r, const char *name, dyn_err *err) {
    if (!srv_repo_name_valid(name)) return 0;
    pthread_mutex_lock(&r->scan_mu);
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
        int k = sync_file(r, &files.v[i], 0, err);
        if (k < 0) rc = k;
        else if (rc >= 0) rc += k;
    }
    free(files.v);
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
        e->nver = 0;
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

srv_model *srv_repo_acquire(srv_repo *r, const char *name, int version, int *known) {
    srv_model *m = NULL;
    pthread_mutex_lock(&r->mu);
    entry *e = entry_find(r, name);
    if (known) *known = e != NULL;
    if (e && e->nver > 0) {
        if (version <= 0) {
            m = e->ver[e->nver - 1];
        } else {
            for (int i = 0; i < e->nver; i++)
                if (e->ver[i]->version == version) m = e->ver[i];
        }
        if (m) atomic_fetch_add(&m->refs, 1);
    }
    pthread_mutex_unlock(&r->mu);
    return m;
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
        if (e->nver == 0)
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
