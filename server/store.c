/* store.c — the S3 model store of store.h: settings, manifests, publish, and the poller
 * that keeps model_dir (the local cache) in step with the store. */
#include "server/store.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "io/file.h"
#include "server/log.h"
#include "server/repository.h"

#define MANIFEST_LEAF "manifest.json"
#define MANIFEST_MAX (1u << 20)
#define PUBLISH_TRIES 5

/* What the poller knows of one model of the store. */
typedef struct known {
    char name[SRV_NAME_MAX + 1];
    char etag[128];   /* of its manifest at the last read */
    json_t *versions; /* that manifest's versions (reference) */
    int seen;         /* in the current listing */
} known;

struct srv_store {
    srv_s3 s3;      /* publishes */
    srv_s3 poll_s3; /* the poller's: the same, cancelled by srv_store_poller_stop */
    atomic_int cancel;
    srv_s3 bg_s3;   /* background job-file deletes: cancelled by srv_store_free after a wait */
    atomic_int bg_cancel;
    pthread_mutex_t bg_mu;
    pthread_cond_t bg_cv;
    int bg_n; /* background deletes running */
    char prefix[512];
    char host[128];
    pthread_mutex_t sync_mu; /* one sync at a time; guards known */
    known *known;
    int nknown, capknown;
    /* poller (loop thread) */
    uv_loop_t *loop;
    uv_timer_t timer;
    uv_work_t work;
    int running, stopped, changed, rc, polls;
    char model_dir[1024];
    void (*on_change)(void *);
    void *arg;
};

static _Atomic(srv_store *) g_active;

srv_store *srv_store_active(void) { return atomic_load(&g_active); }
void srv_store_set_active(srv_store *st) { atomic_store(&g_active, st); }

/* ---- names, keys, manifests ---- */

int srv_store_parse_uri(const char *uri, char *bucket, size_t bn, char *prefix, size_t pn,
                        dyn_err *err) {
    if (strncmp(uri, "s3://", 5))
        return dyn_err_set(err, DYN_EINVAL, "model_store '%s': only s3://<bucket>/<prefix> is "
                                            "supported (leave it empty to use model_dir alone)", uri);
    const char *b = uri + 5, *slash = strchr(b, '/');
    size_t bl = slash ? (size_t)(slash - b) : strlen(b);
    if (bl < 3 || bl > 63 || bl >= bn)
        return dyn_err_set(err, DYN_EINVAL, "model_store '%s': the bucket name must be 3-63 characters", uri);
    for (size_t i = 0; i < bl; i++) {
        char c = b[i];
        if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.'))
            return dyn_err_set(err, DYN_EINVAL, "model_store '%s': bucket names are lower-case "
                                                "letters, digits, '-' and '.'", uri);
    }
    memcpy(bucket, b, bl);
    bucket[bl] = 0;
    const char *p = slash ? slash + 1 : "";
    size_t pl = strlen(p);
    while (pl && p[pl - 1] == '/') pl--;
    if (pl >= pn || pl > 400)
        return dyn_err_set(err, DYN_EINVAL, "model_store '%s': the prefix is too long", uri);
    memcpy(prefix, p, pl);
    prefix[pl] = 0;
    if (strstr(prefix, "//") || !strncmp(prefix, "./", 2) || strstr(prefix, "/./") ||
        strstr(prefix, "..") || prefix[0] == '/')
        return dyn_err_set(err, DYN_EINVAL, "model_store '%s': the prefix may not hold empty, '.' "
                                            "or '..' parts", uri);
    return 0;
}

int srv_store_key(const char *prefix, const char *name, const char *leaf, char *buf, size_t n) {
    int w = snprintf(buf, n, "%s%s%s/%s", prefix, prefix[0] ? "/" : "", name, leaf);
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

json_t *srv_store_manifest_parse(const char *text, const char *prefix, const char *name,
                                 dyn_err *err) {
    json_error_t je;
    json_t *m = json_loads(text, 0, &je);
    char dir[1200];
    if (!m) {
        dyn_err_set(err, DYN_EIO, "manifest of '%s': not JSON (%s, line %d)", name, je.text, je.line);
        return NULL;
    }
    const json_t *vs = json_object_get(m, "versions");
    if (!json_is_object(m) || !json_is_string(json_object_get(m, "format")) ||
        strcmp(json_string_value(json_object_get(m, "format")), SRV_STORE_MANIFEST_FORMAT)) {
        dyn_err_set(err, DYN_EIO, "manifest of '%s': \"format\" is not \"%s\"", name,
                    SRV_STORE_MANIFEST_FORMAT);
        goto bad;
    }
    if (!json_is_string(json_object_get(m, "name")) ||
        strcmp(json_string_value(json_object_get(m, "name")), name)) {
        dyn_err_set(err, DYN_EIO, "manifest of '%s': \"name\" does not match its key", name);
        goto bad;
    }
    if (!json_is_array(vs) || json_array_size(vs) > SRV_STORE_MAX_VERSIONS) {
        dyn_err_set(err, DYN_EIO, "manifest of '%s': \"versions\" must be an array of at most %d",
                    name, SRV_STORE_MAX_VERSIONS);
        goto bad;
    }
    if (srv_store_key(prefix, name, "", dir, sizeof dir)) {
        dyn_err_set(err, DYN_EIO, "manifest of '%s': name too long", name);
        goto bad;
    }
    json_int_t last = 0;
    size_t i;
    const json_t *v;
    json_array_foreach(vs, i, v) {
        const json_t *ver = json_object_get(v, "version"), *sz = json_object_get(v, "size");
        const char *key = json_string_value(json_object_get(v, "key"));
        if (!json_is_integer(ver) || json_integer_value(ver) <= last ||
            json_integer_value(ver) > 1000000000) {
            dyn_err_set(err, DYN_EIO, "manifest of '%s': versions must be ascending positive "
                                      "integers (entry %zu)", name, i);
            goto bad;
        }
        last = json_integer_value(ver);
        if (!key || strncmp(key, dir, strlen(dir)) || strchr(key + strlen(dir), '/') ||
            strlen(key) <= strlen(dir) + 4 || strcmp(key + strlen(key) - 4, ".dyn")) {
            dyn_err_set(err, DYN_EIO, "manifest of '%s': version %lld: \"key\" must be a .dyn "
                                      "object directly under %s", name, (long long)last, dir);
            goto bad;
        }
        if (!json_is_integer(sz) || json_integer_value(sz) < 0) {
            dyn_err_set(err, DYN_EIO, "manifest of '%s': version %lld: \"size\" must be a "
                                      "non-negative integer", name, (long long)last);
            goto bad;
        }
    }
    return m;
bad:
    json_decref(m);
    return NULL;
}

/* ---- settings ---- */

/* The first non-empty of a, then the environment variables e1, e2 (may be NULL). */
static const char *pick(const char *a, const char *e1, const char *e2) {
    if (a && a[0]) return a;
    const char *v = e1 ? getenv(e1) : NULL;
    if (v && v[0]) return v;
    v = e2 ? getenv(e2) : NULL;
    return v && v[0] ? v : NULL;
}

int srv_store_open(const srv_config *cfg, srv_store **out, dyn_err *err) {
    *out = NULL;
    if (!cfg->model_store[0]) return 0;
    srv_store *st = calloc(1, sizeof *st);
    if (!st) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    int rc = srv_store_parse_uri(cfg->model_store, st->s3.bucket, sizeof st->s3.bucket, st->prefix,
                                 sizeof st->prefix, err);
    const char *region = pick(cfg->store_region, "AWS_REGION", "AWS_DEFAULT_REGION");
    const char *endpoint = pick(cfg->store_endpoint, "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL");
    const char *key = pick(cfg->store_access_key_id, "AWS_ACCESS_KEY_ID", NULL);
    const char *secret = pick(cfg->store_secret_access_key, "AWS_SECRET_ACCESS_KEY", NULL);
    snprintf(st->s3.region, sizeof st->s3.region, "%s", region ? region : "us-east-1");
    if (endpoint)
        snprintf(st->s3.endpoint, sizeof st->s3.endpoint, "%s", endpoint);
    else
        snprintf(st->s3.endpoint, sizeof st->s3.endpoint, "https://s3.%s.amazonaws.com", st->s3.region);
    size_t el = strlen(st->s3.endpoint);
    while (el && st->s3.endpoint[el - 1] == '/') st->s3.endpoint[--el] = 0;
    if (!rc && strncmp(st->s3.endpoint, "http://", 7) && strncmp(st->s3.endpoint, "https://", 8))
        rc = dyn_err_set(err, DYN_EINVAL, "store_endpoint '%s': give an http:// or https:// URL",
                         st->s3.endpoint);
    if (!rc && (!key || !secret))
        rc = dyn_err_set(err, DYN_EINVAL, "model_store = %s needs credentials: set "
                                          "store_access_key_id and store_secret_access_key (or "
                                          "DYND_STORE_ACCESS_KEY_ID / DYND_STORE_SECRET_ACCESS_KEY, "
                                          "or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)",
                         cfg->model_store);
    if (!rc && (strlen(key) >= sizeof st->s3.access_key || strlen(secret) >= sizeof st->s3.secret_key))
        rc = dyn_err_set(err, DYN_EINVAL, "store credentials are too long");
    if (rc) {
        free(st);
        return rc;
    }
    snprintf(st->s3.access_key, sizeof st->s3.access_key, "%s", key);
    snprintf(st->s3.secret_key, sizeof st->s3.secret_key, "%s", secret);
    st->s3.connect_timeout_s = 5;
    st->s3.timeout_s = cfg->store_timeout_s;
    st->poll_s3 = st->s3;
    st->poll_s3.cancel = &st->cancel;
    st->bg_s3 = st->s3;
    st->bg_s3.cancel = &st->bg_cancel;
    pthread_mutex_init(&st->bg_mu, NULL);
    pthread_cond_init(&st->bg_cv, NULL);
    if (gethostname(st->host, sizeof st->host) != 0) snprintf(st->host, sizeof st->host, "?");
    pthread_mutex_init(&st->sync_mu, NULL);
    *out = st;
    return 0;
}

void srv_store_free(srv_store *st) {
    if (!st) return;
    /* background deletes: a grace period, then cancelled (each request ends within a second) */
    pthread_mutex_lock(&st->bg_mu);
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += 5;
    while (st->bg_n > 0 && pthread_cond_timedwait(&st->bg_cv, &st->bg_mu, &until) == 0) {}
    if (st->bg_n > 0) atomic_store(&st->bg_cancel, 1);
    while (st->bg_n > 0) pthread_cond_wait(&st->bg_cv, &st->bg_mu);
    pthread_mutex_unlock(&st->bg_mu);
    pthread_cond_destroy(&st->bg_cv);
    pthread_mutex_destroy(&st->bg_mu);
    for (int i = 0; i < st->nknown; i++) json_decref(st->known[i].versions);
    free(st->known);
    pthread_mutex_destroy(&st->sync_mu);
    free(st);
}

/* ---- publish ---- */

/* The manifest of name: *man (new reference; an empty one when the store has none) and its
 * ETag ("" when none). 0 or DYN_EIO. */
static int manifest_read(srv_store *st, const srv_s3 *s3, const char *name, json_t **man,
                         char *etag, size_t en, dyn_err *err) {
    char key[1200], *text = NULL;
    srv_store_key(st->prefix, name, MANIFEST_LEAF, key, sizeof key);
    srv_s3_res res;
    int rc = srv_s3_get_mem(s3, key, MANIFEST_MAX, &text, NULL, &res, err);
    if (rc && res.status == 404) {
        etag[0] = 0;
        *man = json_pack("{s:s, s:s, s:[]}", "format", SRV_STORE_MANIFEST_FORMAT, "name", name,
                         "versions");
        return *man ? 0 : dyn_err_set(err, DYN_ENOMEM, "out of memory");
    }
    if (rc) return rc;
    snprintf(etag, en, "%s", res.etag);
    *man = srv_store_manifest_parse(text, st->prefix, name, err);
    free(text);
    return *man ? 0 : DYN_EIO;
}

/* Writes man as name's manifest, conditional on etag ("" → create only). A server that refuses
 * conditional writes outright (501 NotImplemented) gets an unconditional one (the read-back
 * in srv_store_publish still catches most lost writes). */
static int manifest_write(srv_store *st, const char *name, const json_t *man, const char *etag,
                          srv_s3_res *res, dyn_err *err) {
    char key[1200];
    srv_store_key(st->prefix, name, MANIFEST_LEAF, key, sizeof key);
    char *text = json_dumps(man, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
    if (!text) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    int rc = srv_s3_put_mem(&st->s3, key, text, strlen(text), "application/json",
                            etag[0] ? etag : "*", res, err);
    if (rc && res->status == 501)
        rc = srv_s3_put_mem(&st->s3, key, text, strlen(text), "application/json", NULL, res, err);
    free(text);
    return rc;
}

/* 1 when man lists object key. */
static int manifest_has(const json_t *man, const char *key) {
    size_t i;
    const json_t *v;
    json_array_foreach(json_object_get(man, "versions"), i, v)
        if (!strcmp(json_string_value(json_object_get(v, "key")), key)) return 1;
    return 0;
}

static void utc_now(char *buf, size_t n) {
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(buf, n, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Moves the published file into the cache as model_dir/<name>/<v>.dyn. */
static int cache_place(const char *model_dir, const char *name, int v, const char *path,
                       dyn_err *err) {
    char dir[1200], dst[1300];
    snprintf(dir, sizeof dir, "%s/%s", model_dir, name);
    snprintf(dst, sizeof dst, "%s/%d.dyn", dir, v);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST)
        return dyn_err_set(err, DYN_EIO, "%s: %s", dir, strerror(errno));
    if (rename(path, dst) != 0)
        return dyn_err_set(err, DYN_EIO, "moving %s to %s: %s", path, dst, strerror(errno));
    dyn_file_fsync_dir(dir);
    dyn_file_fsync_dir(model_dir);
    return 0;
}

int srv_store_publish(srv_store *st, const char *model_dir, const char *name, const char *path,
                      int replace, int *version, dyn_err *err) {
    if (!srv_repo_name_valid(name)) return dyn_err_set(err, DYN_EINVAL, "invalid model name '%s'", name);
    struct stat sb;
    if (stat(path, &sb) != 0) return dyn_err_set(err, DYN_EIO, "%s: %s", path, strerror(errno));
    char leaf[96], obj[1200];
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    unsigned rnd = (unsigned)ts.tv_nsec ^ ((unsigned)getpid() << 16) ^ (unsigned)(uintptr_t)&ts;
    snprintf(leaf, sizeof leaf, "%lld-%d-%08x.dyn", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec,
             (int)getpid(), rnd * 2654435761u);
    if (srv_store_key(st->prefix, name, leaf, obj, sizeof obj))
        return dyn_err_set(err, DYN_EINVAL, "model name too long for the store");
    json_t *man = NULL;
    char etag[128];
    /* refuse early, before the upload, when the name is taken and replace is off */
    int rc = manifest_read(st, &st->s3, name, &man, etag, sizeof etag, err);
    if (rc) return dyn_err_prefix(err, "model store: reading the manifest of '%s'", name);
    if (!replace && json_array_size(json_object_get(man, "versions"))) {
        json_decref(man);
        return dyn_err_set(err, DYN_EINVAL, "model '%s' already exists in the model store; "
                                            "resubmit with another output or overwrite = true", name);
    }
    srv_s3_res res;
    if ((rc = srv_s3_put_file(&st->s3, obj, path, &res, err))) {
        json_decref(man);
        srv_s3_delete(&st->s3, obj, NULL, NULL); /* S3 PUTs are atomic; in case one half-landed */
        return dyn_err_prefix(err, "model store: uploading '%s'", name);
    }
    char upload_etag[128];
    snprintf(upload_etag, sizeof upload_etag, "%s", res.etag);
    int v = 0;
    json_t *dropped = json_array();
    for (int attempt = 0; attempt < PUBLISH_TRIES; attempt++) {
        if (attempt && (rc = manifest_read(st, &st->s3, name, &man, etag, sizeof etag, err))) {
            dyn_err_prefix(err, "model store: reading the manifest of '%s'", name);
            break;
        }
        json_t *vs = json_object_get(man, "versions");
        if (!replace && json_array_size(vs)) {
            rc = dyn_err_set(err, DYN_EINVAL, "model '%s' appeared in the model store while the "
                                              "job ran; resubmit with another output or "
                                              "overwrite = true", name);
            break;
        }
        const json_t *lastv = json_array_get(vs, json_array_size(vs) - 1);
        v = lastv ? (int)json_integer_value(json_object_get(lastv, "version")) + 1 : 1;
        char when[32];
        utc_now(when, sizeof when);
        json_array_append_new(vs, json_pack("{s:i, s:s, s:I, s:s, s:s, s:s}", "version", v, "key",
                                            obj, "size", (json_int_t)sb.st_size, "etag",
                                            upload_etag, "published_at", when, "publisher",
                                            st->host));
        json_array_clear(dropped);
        while (json_array_size(vs) > SRV_STORE_MAX_VERSIONS) {
            json_array_append(dropped, json_object_get(json_array_get(vs, 0), "key"));
            json_array_remove(vs, 0);
        }
        rc = manifest_write(st, name, man, etag, &res, err);
        json_decref(man);
        man = NULL;
        if (rc && res.status == 412) continue; /* another publisher wrote first: read again */
        if (rc) {
            dyn_err_prefix(err, "model store: writing the manifest of '%s'", name);
            break;
        }
        /* read back: a server without conditional writes may have let another writer win */
        json_t *back = NULL;
        char e2[128];
        if ((rc = manifest_read(st, &st->s3, name, &back, e2, sizeof e2, err))) {
            dyn_err_prefix(err, "model store: reading back the manifest of '%s'", name);
            break;
        }
        int ok = manifest_has(back, obj);
        json_decref(back);
        if (ok) break;
        rc = dyn_err_set(err, DYN_EIO, "model store: concurrent publishers of '%s' kept "
                                       "replacing the manifest (%d tries)", name, PUBLISH_TRIES);
    }
    json_decref(man);
    if (rc) {
        srv_s3_delete(&st->s3, obj, NULL, NULL); /* unreferenced: clean it up (best effort) */
        json_decref(dropped);
        return rc;
    }
    size_t i;
    json_t *k;
    json_array_foreach(dropped, i, k) srv_s3_delete(&st->s3, json_string_value(k), NULL, NULL);
    json_decref(dropped);
    srv_log(SRV_LOG_INFO, "model published to the store",
            json_pack("{s:s, s:i, s:s, s:I}", "model", name, "version", v, "key", obj, "bytes",
                      (json_int_t)sb.st_size));
    *version = v;
    if ((rc = cache_place(model_dir, name, v, path, err)))
        return dyn_err_prefix(err, "published '%s' version %d to the store, but", name, v);
    return 0;
}

/* ---- sync (the poller's work) ---- */

static known *known_find(srv_store *st, const char *name) {
    for (int i = 0; i < st->nknown; i++)
        if (!strcmp(st->known[i].name, name)) return &st->known[i];
    return NULL;
}

static known *known_add(srv_store *st, const char *name) {
    if (st->nknown == st->capknown) {
        int cap = st->capknown ? 2 * st->capknown : 16;
        known *g = realloc(st->known, (size_t)cap * sizeof *g);
        if (!g) return NULL;
        st->known = g, st->capknown = cap;
    }
    known *k = &st->known[st->nknown++];
    memset(k, 0, sizeof *k);
    snprintf(k->name, sizeof k->name, "%s", name);
    return k;
}

/* 1 when versions (a manifest's array) has version v. */
static int versions_have(const json_t *versions, json_int_t v) {
    size_t i;
    const json_t *e;
    json_array_foreach(versions, i, e) if (json_integer_value(json_object_get(e, "version")) == v) return 1;
    return 0;
}

/* Removes the cached files of the versions in old that are not in now (now NULL: all). */
static int cache_prune(const char *model_dir, const char *name, const json_t *old, const json_t *now) {
    int n = 0;
    size_t i;
    const json_t *e;
    char p[1300];
    json_array_foreach(old, i, e) {
        json_int_t v = json_integer_value(json_object_get(e, "version"));
        if (now && versions_have(now, v)) continue;
        snprintf(p, sizeof p, "%s/%s/%lld.dyn", model_dir, name, (long long)v);
        if (unlink(p) == 0) n++;
    }
    snprintf(p, sizeof p, "%s/%s", model_dir, name);
    if (n && rmdir(p) == 0) dyn_file_fsync_dir(model_dir); /* only when empty */
    return n;
}

/* Downloads the versions of versions missing from model_dir/<name>/. Returns files added; a
 * failed download is logged and retried next poll (*failed set). */
static int cache_fill(srv_store *st, const char *model_dir, const char *name, const json_t *versions,
                      int *failed) {
    int n = 0;
    size_t i;
    const json_t *e;
    char dir[1200], p[1300];
    snprintf(dir, sizeof dir, "%s/%s", model_dir, name);
    json_array_foreach(versions, i, e) {
        json_int_t v = json_integer_value(json_object_get(e, "version"));
        json_int_t size = json_integer_value(json_object_get(e, "size"));
        const char *key = json_string_value(json_object_get(e, "key"));
        struct stat sb;
        snprintf(p, sizeof p, "%s/%lld.dyn", dir, (long long)v);
        if (stat(p, &sb) == 0 && sb.st_size == size) continue;
        dyn_err err = {0};
        srv_s3_res res;
        int rc = mkdir(dir, 0755) != 0 && errno != EEXIST
                     ? dyn_err_set(&err, DYN_EIO, "%s: %s", dir, strerror(errno))
                     : srv_s3_get_file(&st->poll_s3, key, p, &res, &err);
        if (!rc && stat(p, &sb) == 0 && sb.st_size != size) {
            unlink(p);
            rc = dyn_err_set(&err, DYN_EIO, "%s: %lld bytes in the store, the manifest says %lld",
                             key, (long long)sb.st_size, (long long)size);
        }
        if (rc) {
            *failed = 1;
            srv_log(SRV_LOG_WARN, "model store: download failed (retried at the next poll)",
                    json_pack("{s:s, s:I, s:s}", "model", name, "version", v, "error", err.msg));
            continue;
        }
        srv_log(SRV_LOG_INFO, "model store: version cached",
                json_pack("{s:s, s:I, s:s, s:I}", "model", name, "version", v, "path", p, "bytes", size));
        n++;
    }
    return n;
}

/* Every manifest key of the store: names (json array of strings) with their ETags. */
static int list_manifests(srv_store *st, json_t *out, dyn_err *err) {
    char lp[600], token[1024] = "";
    snprintf(lp, sizeof lp, "%s%s", st->prefix, st->prefix[0] ? "/" : "");
    size_t pl = strlen(lp);
    for (int pages = 0; pages < 100000; pages++) {
        srv_s3_page page;
        int rc = srv_s3_list(&st->poll_s3, lp, token, &page, NULL, err);
        if (rc) return rc;
        for (int i = 0; i < page.n; i++) {
            const char *k = page.objs[i].key + pl, *sl = strchr(k, '/');
            if (strncmp(page.objs[i].key, lp, pl) || !sl || strcmp(sl + 1, MANIFEST_LEAF)) continue;
            char name[SRV_NAME_MAX + 1];
            if ((size_t)(sl - k) > SRV_NAME_MAX) continue;
            memcpy(name, k, (size_t)(sl - k));
            name[sl - k] = 0;
            if (srv_repo_name_valid(name)) json_object_set_new(out, name, json_string(page.objs[i].etag));
        }
        int more = page.truncated;
        snprintf(token, sizeof token, "%s", page.next_token);
        free(page.objs);
        if (!more) return 0;
    }
    return dyn_err_set(err, DYN_EIO, "model store: the listing never ends");
}

int srv_store_sync(srv_store *st, const char *model_dir, int *changed, dyn_err *err) {
    *changed = 0;
    json_t *names = json_object();
    pthread_mutex_lock(&st->sync_mu);
    int rc = list_manifests(st, names, err);
    if (rc) goto out;
    for (int i = 0; i < st->nknown; i++) st->known[i].seen = 0;
    const char *name;
    json_t *et;
    int failed = 0;
    json_object_foreach(names, name, et) {
        known *k = known_find(st, name);
        if (!k && !(k = known_add(st, name))) {
            rc = dyn_err_set(err, DYN_ENOMEM, "out of memory");
            goto out;
        }
        k->seen = 1;
        if (k->versions && !strcmp(k->etag, json_string_value(et))) {
            /* unchanged manifest: only refill what is missing (a failed download, a deleted file) */
            *changed += cache_fill(st, model_dir, name, k->versions, &failed);
            continue;
        }
        json_t *man = NULL;
        char etag[128];
        dyn_err e2 = {0};
        if (manifest_read(st, &st->poll_s3, name, &man, etag, sizeof etag, &e2)) {
            failed = 1;
            srv_log(SRV_LOG_WARN, "model store: manifest unreadable (model kept as it was)",
                    json_pack("{s:s, s:s}", "model", name, "error", e2.msg));
            continue;
        }
        json_t *vs = json_incref(json_object_get(man, "versions"));
        json_decref(man);
        if (k->versions) *changed += cache_prune(model_dir, name, k->versions, vs);
        json_decref(k->versions);
        k->versions = vs;
        snprintf(k->etag, sizeof k->etag, "%s", etag);
        *changed += cache_fill(st, model_dir, name, vs, &failed);
    }
    /* models gone from the store */
    for (int i = 0; i < st->nknown;) {
        known *k = &st->known[i];
        if (k->seen) {
            i++;
            continue;
        }
        *changed += cache_prune(model_dir, k->name, k->versions, NULL);
        srv_log(SRV_LOG_INFO, "model store: model removed from the store; cache dropped",
                json_pack("{s:s}", "model", k->name));
        json_decref(k->versions);
        st->known[i] = st->known[--st->nknown];
    }
    if (failed) rc = dyn_err_set(err, DYN_EIO, "model store: some models could not be synced (logged)");
out:
    pthread_mutex_unlock(&st->sync_mu);
    json_decref(names);
    return rc;
}

/* ---- the poller ---- */

static void poll_work(uv_work_t *w) {
    srv_store *st = w->data;
    dyn_err err = {0};
    st->rc = srv_store_sync(st, st->model_dir, &st->changed, &err);
    if (st->rc)
        srv_log(SRV_LOG_WARN, "model store: poll failed; serving the cached models",
                json_pack("{s:s}", "error", err.msg));
}

static void poll_after(uv_work_t *w, int status) {
    srv_store *st = w->data;
    st->running = 0;
    if (status == 0 && (st->changed || !st->polls) && !st->stopped && st->on_change)
        st->on_change(st->arg);
    st->polls++;
}

static void on_timer(uv_timer_t *t) {
    srv_store *st = t->data;
    if (st->running || st->stopped) return; /* the previous poll is still running */
    st->running = 1;
    st->work.data = st;
    if (uv_queue_work(st->loop, &st->work, poll_work, poll_after) != 0) st->running = 0;
}

int srv_store_poller_start(srv_store *st, uv_loop_t *loop, const char *model_dir, int interval_ms,
                           void (*on_change)(void *arg), void *arg) {
    st->loop = loop;
    snprintf(st->model_dir, sizeof st->model_dir, "%s", model_dir);
    st->on_change = on_change;
    st->arg = arg;
    uv_timer_init(loop, &st->timer);
    st->timer.data = st;
    return uv_timer_start(&st->timer, on_timer, 0, (uint64_t)(interval_ms > 0 ? interval_ms : 5000));
}

void srv_store_poller_stop(srv_store *st) {
    st->stopped = 1;
    atomic_store(&st->cancel, 1); /* a poll in progress ends within a second */
    if (st->loop) uv_timer_stop(&st->timer);
}

/* ---- job files (store.h: "job files") ---- */

#define JOBS_LEAF ".jobs"
#define JOB_LAST_MAX (16u << 20) /* a `last` object read into memory (a state.json) */

static int job_id_ok(const char *id) {
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > 64) return 0;
    for (size_t i = 0; i < n; i++)
        if (!((id[i] >= 'a' && id[i] <= 'z') || (id[i] >= '0' && id[i] <= '9') || id[i] == '-'))
            return 0;
    return 1;
}

static int leaf_ok(const char *leaf) {
    return leaf && leaf[0] != '/' && !strstr(leaf, "..") && !strstr(leaf, "//");
}

int srv_store_job_key(const srv_store *st, const char *id, const char *leaf, char *buf, size_t n) {
    if (!job_id_ok(id) || !leaf_ok(leaf)) return -1;
    int w = snprintf(buf, n, "%s%s" JOBS_LEAF "/%s/%s", st->prefix, st->prefix[0] ? "/" : "", id,
                     leaf);
    return w < 0 || (size_t)w >= n ? -1 : 0;
}

static int job_key_err(const srv_store *st, const char *id, const char *leaf, char *buf, size_t n,
                       dyn_err *err) {
    if (srv_store_job_key(st, id, leaf, buf, n) == 0) return 0;
    return dyn_err_set(err, DYN_EINVAL, "model store: no valid key for file '%s' of job '%s'",
                       leaf ? leaf : "?", id ? id : "?");
}

int srv_store_job_put(srv_store *st, const char *id, const char *leaf, const char *path,
                      dyn_err *err) {
    char key[1300];
    int rc = job_key_err(st, id, leaf, key, sizeof key, err);
    if (!rc) rc = srv_s3_put_file(&st->s3, key, path, NULL, err);
    return rc ? dyn_err_prefix(err, "model store: storing %s of job '%s'", leaf, id) : 0;
}

int srv_store_job_get(srv_store *st, const char *id, const char *leaf, const char *path,
                      int *found, dyn_err *err) {
    *found = 0;
    char key[1300];
    int rc = job_key_err(st, id, leaf, key, sizeof key, err);
    if (rc) return rc;
    srv_s3_res res;
    memset(&res, 0, sizeof res);
    rc = srv_s3_get_file(&st->s3, key, path, &res, err);
    if (rc && res.status == 404) {
        err->code = 0;
        err->msg[0] = 0;
        return 0;
    }
    if (rc) return dyn_err_prefix(err, "model store: fetching %s of job '%s'", leaf, id);
    *found = 1;
    return 0;
}

/* Calls fn(key, leaf, obj, arg) for every object under the job's folder `sub` ("" : the whole
 * folder); leaf is the key's part after "<folder>/<sub>/". fn returns 0 to go on, else the
 * listing stops with that code. 0, DYN_EIO (err) or fn's code. */
static int job_list(srv_store *st, const srv_s3 *s3, const char *id, const char *sub,
                    int (*fn)(const char *key, const char *leaf, const srv_s3_obj *o, void *arg),
                    void *arg, dyn_err *err) {
    char lp[1300], token[1024] = "";
    char leaf[300];
    snprintf(leaf, sizeof leaf, "%s%s", sub, sub[0] ? "/" : "");
    int rc = job_key_err(st, id, leaf, lp, sizeof lp, err);
    if (rc) return rc;
    size_t pl = strlen(lp);
    for (int pages = 0; pages < 100000; pages++) {
        srv_s3_page page;
        if ((rc = srv_s3_list(s3, lp, token, &page, NULL, err)))
            return dyn_err_prefix(err, "model store: listing the files of job '%s'", id);
        for (int i = 0; i < page.n && !rc; i++)
            if (!strncmp(page.objs[i].key, lp, pl))
                rc = fn(page.objs[i].key, page.objs[i].key + pl, &page.objs[i], arg);
        int more = page.truncated && !rc;
        snprintf(token, sizeof token, "%s", page.next_token);
        free(page.objs);
        if (!more) return rc;
    }
    return dyn_err_set(err, DYN_EIO, "model store: the listing of job '%s' never ends", id);
}

/* ---- push ---- */

typedef struct push_ctx {
    srv_store *st;
    const char *dir;
    dyn_err *err;
    int failed;
} push_ctx;

/* Deletes an object that the local directory no longer holds. */
static int push_prune(const char *key, const char *leaf, const srv_s3_obj *o, void *arg) {
    push_ctx *c = arg;
    char p[1400];
    struct stat sb;
    (void)o;
    if (strchr(leaf, '/')) return 0; /* not a file of this directory level */
    snprintf(p, sizeof p, "%s/%s", c->dir, leaf);
    if (stat(p, &sb) == 0) return 0;
    dyn_err e2 = {0};
    if (srv_s3_delete(&c->st->s3, key, NULL, &e2) && !c->failed) {
        c->failed = 1;
        snprintf(c->err->msg, sizeof c->err->msg, "%s", e2.msg);
    }
    return 0;
}

static int skip_name(const char *name) { return name[0] == '.' || strstr(name, ".tmp.") != NULL; }

int srv_store_job_push_dir(srv_store *st, const char *id, const char *sub, const char *dir,
                           const char *last, double since, long long *bytes, dyn_err *err) {
    char leaf[600], p[1400];
    long long total = 0;
    if (bytes) *bytes = 0;
    DIR *d = opendir(dir);
    if (!d) return dyn_err_set(err, DYN_EIO, "%s: %s", dir, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (!rc && (e = readdir(d))) {
        struct stat sb;
        if (skip_name(e->d_name) || !strcmp(e->d_name, last)) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (stat(p, &sb) != 0 || !S_ISREG(sb.st_mode)) continue;
        double mt = (double)sb.st_mtim.tv_sec + sb.st_mtim.tv_nsec * 1e-9;
        if (since > 0 && mt < since) continue; /* unchanged since the last push */
        snprintf(leaf, sizeof leaf, "%s/%s", sub, e->d_name);
        if (!(rc = srv_store_job_put(st, id, leaf, p, err))) total += sb.st_size;
    }
    closedir(d);
    if (rc) return rc;
    snprintf(p, sizeof p, "%s/%s", dir, last);
    snprintf(leaf, sizeof leaf, "%s/%s", sub, last);
    struct stat sb;
    if (stat(p, &sb) != 0) return dyn_err_set(err, DYN_EIO, "%s: %s", p, strerror(errno));
    if ((rc = srv_store_job_put(st, id, leaf, p, err))) return rc;
    total += sb.st_size;
    if (bytes) *bytes = total;
    /* what `last` no longer names: only now, so a reader of the previous `last` found its files */
    push_ctx c = {st, dir, err, 0};
    rc = job_list(st, &st->s3, id, sub, push_prune, &c, err);
    if (!rc && c.failed) {
        char first[sizeof err->msg];
        snprintf(first, sizeof first, "%s", err->msg);
        rc = dyn_err_set(err, DYN_EIO, "model store: removing old files of job '%s': %s", id, first);
    }
    return rc;
}

/* ---- fetch ---- */

typedef struct fetch_ctx {
    srv_store *st;
    const char *id, *sub, *dir, *last, *last_text;
    int (*keep)(const char *leaf, const char *last_text, void *arg);
    void *arg;
    dyn_err *err;
    int n;
} fetch_ctx;

static int fetch_one(const char *key, const char *leaf, const srv_s3_obj *o, void *arg) {
    fetch_ctx *c = arg;
    (void)o;
    if (strchr(leaf, '/') || !strcmp(leaf, c->last) || skip_name(leaf)) return 0;
    if (c->keep && !c->keep(leaf, c->last_text, c->arg)) return 0;
    char p[1400];
    snprintf(p, sizeof p, "%s/%s", c->dir, leaf);
    if (srv_s3_get_file(&c->st->s3, key, p, NULL, c->err))
        return dyn_err_prefix(c->err, "model store: fetching %s/%s of job '%s'", c->sub, leaf, c->id);
    c->n++;
    return 0;
}

int srv_store_job_fetch_dir(srv_store *st, const char *id, const char *sub, const char *dir,
                            const char *last,
                            int (*keep)(const char *leaf, const char *last_text, void *arg),
                            void *arg, int *found, dyn_err *err) {
    *found = 0;
    char leaf[600], key[1300], p[1400], *text = NULL;
    size_t n = 0;
    snprintf(leaf, sizeof leaf, "%s/%s", sub, last);
    int rc = job_key_err(st, id, leaf, key, sizeof key, err);
    if (rc) return rc;
    srv_s3_res res;
    memset(&res, 0, sizeof res);
    rc = srv_s3_get_mem(&st->s3, key, JOB_LAST_MAX, &text, &n, &res, err);
    if (rc && res.status == 404) {
        err->code = 0;
        err->msg[0] = 0;
        return 0;
    }
    if (rc) return dyn_err_prefix(err, "model store: fetching %s of job '%s'", leaf, id);
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        rc = dyn_err_set(err, DYN_EIO, "%s: %s", dir, strerror(errno));
        goto out;
    }
    fetch_ctx c = {st, id, sub, dir, last, text, keep, arg, err, 0};
    if ((rc = job_list(st, &st->s3, id, sub, fetch_one, &c, err))) goto out;
    snprintf(p, sizeof p, "%s/%s", dir, last);
    if ((rc = dyn_file_write_atomic(p, text, n, 0644, err))) goto out;
    *found = 1;
    srv_log(SRV_LOG_INFO, "model store: job files fetched",
            json_pack("{s:s, s:s, s:i}", "job", id, "folder", sub, "files", c.n + 1));
out:
    free(text);
    return rc;
}

/* ---- delete ---- */

typedef struct del_ctx {
    const srv_s3 *s3;
    dyn_err *err;
    int n, failed;
} del_ctx;

static int del_one(const char *key, const char *leaf, const srv_s3_obj *o, void *arg) {
    del_ctx *c = arg;
    dyn_err e2 = {0};
    (void)leaf, (void)o;
    if (srv_s3_delete(c->s3, key, NULL, &e2) == 0) {
        c->n++;
        return 0;
    }
    if (!c->failed++) snprintf(c->err->msg, sizeof c->err->msg, "%s", e2.msg);
    return c->s3->cancel && atomic_load(c->s3->cancel) ? DYN_ECANCEL : 0; /* shutting down */
}

static int job_delete(srv_store *st, const srv_s3 *s3, const char *id, int *deleted, dyn_err *err) {
    del_ctx c = {s3, err, 0, 0};
    int rc = job_list(st, s3, id, "", del_one, &c, err);
    if (deleted) *deleted = c.n;
    if (rc == DYN_ECANCEL || (!rc && c.failed)) {
        char first[sizeof err->msg];
        snprintf(first, sizeof first, "%s", err->msg);
        rc = dyn_err_set(err, DYN_EIO, "model store: %d file(s) of job '%s' could not be deleted%s: %s",
                         c.failed, id, rc ? " (cancelled: shutting down)" : "", first);
    }
    return rc;
}

int srv_store_job_delete(srv_store *st, const char *id, int *deleted, dyn_err *err) {
    return job_delete(st, &st->s3, id, deleted, err);
}

typedef struct bg_delete {
    srv_store *st;
    char id[72];
} bg_delete;

static void *bg_delete_main(void *arg) {
    bg_delete *b = arg;
    srv_store *st = b->st;
    dyn_err err = {0};
    int n = 0, rc = job_delete(st, &st->bg_s3, b->id, &n, &err);
    if (rc)
        srv_log(SRV_LOG_WARN, "model store: the files of a finished job were not all deleted",
                json_pack("{s:s, s:i, s:s}", "job", b->id, "deleted", n, "error", err.msg));
    else if (n)
        srv_log(SRV_LOG_INFO, "model store: job files deleted",
                json_pack("{s:s, s:i}", "job", b->id, "deleted", n));
    free(b);
    pthread_mutex_lock(&st->bg_mu);
    st->bg_n--;
    pthread_cond_broadcast(&st->bg_cv);
    pthread_mutex_unlock(&st->bg_mu);
    return NULL;
}

void srv_store_job_delete_async(srv_store *st, const char *id) {
    bg_delete *b = calloc(1, sizeof *b);
    if (!b || !job_id_ok(id)) {
        free(b);
        srv_log(SRV_LOG_WARN, "model store: job files not deleted (out of memory or bad id)",
                json_pack("{s:s}", "job", id ? id : "?"));
        return;
    }
    b->st = st;
    snprintf(b->id, sizeof b->id, "%s", id);
    pthread_mutex_lock(&st->bg_mu);
    st->bg_n++;
    pthread_mutex_unlock(&st->bg_mu);
    pthread_attr_t at;
    pthread_attr_init(&at);
    pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
    pthread_t t;
    int e = pthread_create(&t, &at, bg_delete_main, b);
    pthread_attr_destroy(&at);
    if (e != 0) { /* no thread: do it here */
        bg_delete_main(b);
    }
}
