/* models.c — PATCH /v1/models/{name}: edit a served model's labels and input preprocessing.
 *
 * Body: {"labels": [...], "preprocess": {...}} (either or both). "labels" must hold exactly one
 * string per model output ([] or null removes them); "preprocess" must be accepted by
 * dyn_preprocess_parse for the model's input (null removes it). The edit never touches a
 * version already served: the latest version's file is loaded, changed, and published as a
 * NEW version, as a Triton / KServe model repository would hold it:
 *   - versioned model (model_dir/<name>/<v>.dyn): <name>/<max v + 1>.dyn, written under a
 *     hidden name then hard-linked into place (a version number taken meanwhile, e.g. by a
 *     replica, is never replaced: the next number is tried);
 *   - single file (model_dir/<name>.dyn): it becomes a versioned directory — <name>/1.dyn (the
 *     same file, hard-linked) and <name>/2.dyn (the edit), built in a hidden directory and
 *     renamed to <name>/ in one step (the directory wins over the flat file, which is then
 *     removed), so /versions/1 keeps answering with the original.
 * The repository loads the new version before the reply (200 with its metadata, as
 * GET /v2/models/{name}/versions/{v}, plus "previous_version"); requests already running
 * finish on the old one. At most 16 versions are served (repository.h): a model with 16 files
 * refuses further edits with 409 too_many_versions. Edits in one process are serialized from
 * reading the latest version to loading the new one, so two edits compose (the second starts
 * from the first's version); replicas sharing model_dir never overwrite each other's version
 * files but may each edit the version they serve. With a model store (model_store, server/store.h)
 * the edit is published to the store as its next version instead, and reaches every replica.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "api/api.h"
#include "io/file.h"
#include "io/model_file.h"
#include "server/store.h"

#define MAX_LABEL_BYTES 256
#define MAX_VERSION_FILES 16 /* the repository's MAX_VERSIONS */

static pthread_mutex_t g_edit_mu = PTHREAD_MUTEX_INITIALIZER;

typedef srv_err edit_err;

/* "<digits>.dyn" → version, else 0 (as the repository reads version files). */
static int version_of(const char *file) {
    size_t n = strlen(file);
    if (n < 5 || n > 14 || strcmp(file + n - 4, ".dyn")) return 0;
    long v = 0;
    for (size_t i = 0; i + 4 < n; i++) {
        if (file[i] < '0' || file[i] > '9') return 0;
        v = v * 10 + (file[i] - '0');
    }
    return v > 0 && v <= 1000000000 ? (int)v : 0;
}

/* Copies src to dst atomically (when a hard link is not possible). 0 or -1 with errno. */
static int copy_file(const char *src, const char *dst) {
    int in = open(src, O_RDONLY | O_CLOEXEC);
    if (in < 0) return -1;
    dyn_file_atomic f;
    if (dyn_file_atomic_begin(&f, dst, 0644, NULL)) {
        close(in);
        return errno = EIO, -1;
    }
    char buf[65536];
    ssize_t n;
    while ((n = read(in, buf, sizeof buf)) > 0)
        if (dyn_file_write_all(f.fd, buf, (size_t)n)) break;
    int bad = n != 0;
    close(in);
    if (bad) {
        dyn_file_atomic_abort(&f);
        return errno = EIO, -1;
    }
    return dyn_file_atomic_commit(&f, NULL) ? (errno = EIO, -1) : 0;
}

#define eset srv_err_set

/* A new version in an existing versions directory. Returns the version or -1 with e. */
static int publish_in_dir(const char *dir, const dyn_model *dm, edit_err *e) {
    DIR *d = opendir(dir);
    if (!d) return eset(e, 500, "storage_failed", "%s: %s", dir, strerror(errno)), -1;
    int maxv = 0, count = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        int v = version_of(de->d_name);
        if (!v) continue;
        count++;
        if (v > maxv) maxv = v;
    }
    closedir(d);
    if (count >= MAX_VERSION_FILES)
        return eset(e, 409, "too_many_versions", "the model has %d version files; at most %d are "
                    "served: remove old ones from its directory first", count,
                    MAX_VERSION_FILES), -1;
    char tmp[1400], dst[1400];
    static atomic_uint seq;
    snprintf(tmp, sizeof tmp, "%s/.edit-%ld-%u.tmp", dir, (long)getpid(), atomic_fetch_add(&seq, 1));
    dyn_err err = {0};
    if (dyn_model_save(dm, tmp, &err))
        return eset(e, 500, "storage_failed", "%s", err.msg), -1;
    int v = -1;
    for (int k = 1; k <= 8 && v < 0; k++) {
        snprintf(dst, sizeof dst, "%s/%d.dyn", dir, maxv + k);
        if (link(tmp, dst) == 0) {
            v = maxv + k;
        } else if (errno != EEXIST) {
            if ((errno == EPERM || errno == EOPNOTSUPP) && access(dst, F_OK) != 0 &&
                rename(tmp, dst) == 0) { /* no hard links on this file system */
                v = maxv + k;
                break;
            }
            eset(e, 500, "storage_failed", "publishing %s: %s", dst, strerror(errno));
            break;
        }
    }
    if (v < 0 && !e->code)
        eset(e, 409, "conflict", "version numbers after %d were taken meanwhile; retry", maxv);
    unlink(tmp);
    if (v > 0) dyn_file_fsync_dir(dir);
    return v;
}

/* The single file <name>.dyn becomes <name>/1.dyn + <name>/2.dyn. Returns 2 or -1 with e. */
static int publish_from_file(const char *model_dir, const char *name, const dyn_model *dm,
                             edit_err *e) {
    char flat[1300], tmpd[1300], p1[1400], p2[1400], dir[1300];
    snprintf(flat, sizeof flat, "%s/%s.dyn", model_dir, name);
    snprintf(dir, sizeof dir, "%s/%s", model_dir, name);
    snprintf(tmpd, sizeof tmpd, "%s/.edit-XXXXXX", model_dir);
    if (!mkdtemp(tmpd))
        return eset(e, 500, "storage_failed", "cannot create a directory in %s: %s", model_dir,
                    strerror(errno)), -1;
    chmod(tmpd, 0755);
    snprintf(p1, sizeof p1, "%s/1.dyn", tmpd);
    snprintf(p2, sizeof p2, "%s/2.dyn", tmpd);
    dyn_err err = {0};
    int rc = 0;
    if (link(flat, p1) != 0 && copy_file(flat, p1) != 0) {
        eset(e, 500, "storage_failed", "keeping %s as version 1: %s", flat, strerror(errno));
        rc = -1;
    }
    if (!rc && dyn_model_save(dm, p2, &err)) {
        eset(e, 500, "storage_failed", "%s", err.msg);
        rc = -1;
    }
    if (!rc) {
        dyn_file_fsync_dir(tmpd);
        if (rename(tmpd, dir) != 0) {
            int x = errno;
            if (x == EEXIST || x == ENOTEMPTY)
                eset(e, 409, "conflict", "model '%s' became versioned meanwhile; retry", name);
            else
                eset(e, 500, "storage_failed", "renaming into %s: %s", dir, strerror(x));
            rc = -1;
        }
    }
    if (rc) {
        unlink(p1);
        unlink(p2);
        rmdir(tmpd);
        return -1;
    }
    dyn_file_fsync_dir(model_dir);
    unlink(flat); /* the directory already wins over it (repository.h) */
    dyn_file_fsync_dir(model_dir);
    return 2;
}

/* With a model store (server/store.h): the edit becomes the store's next version of the model
 * (then cached as model_dir/<name>/<v>.dyn). Returns the version or -1 with e (502 when the
 * store failed: nothing was published). */
static int publish_to_store(srv_store *st, const char *model_dir, const char *name,
                            const dyn_model *dm, edit_err *e) {
    char tmp[1300];
    static atomic_uint seq;
    snprintf(tmp, sizeof tmp, "%s/.edit-%ld-%u.tmp", model_dir, (long)getpid(), atomic_fetch_add(&seq, 1));
    dyn_err err = {0};
    int v = -1;
    if (dyn_model_save(dm, tmp, &err)) eset(e, 500, "storage_failed", "%s", err.msg);
    else if (srv_store_publish(st, model_dir, name, tmp, 1, &v, &err))
        eset(e, 502, "storage_failed", "%s", err.msg), v = -1;
    unlink(tmp);
    return v;
}

/* Checks the body against the served model m. 0 or -1 with e. */
static int edit_check(const json_t *body, const srv_model *m, edit_err *e) {
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)body, k, v) {
        if (strcmp(k, "labels") && strcmp(k, "preprocess"))
            return eset(e, 400, "unknown_field", "unknown field '%.64s' (a model edit takes "
                        "\"labels\" and \"preprocess\")", k), -1;
    }
    const json_t *labels = json_object_get(body, "labels"), *pp = json_object_get(body, "preprocess");
    if (!labels && !pp)
        return eset(e, 400, "nothing_to_change", "give \"labels\" and/or \"preprocess\""), -1;
    if (labels && !json_is_null(labels)) {
        size_t n = json_array_size(labels), i;
        if (!json_is_array(labels))
            return eset(e, 400, "invalid_labels", "labels must be an array of strings"), -1;
        if (n && (json_int_t)n != (json_int_t)m->out_numel)
            return eset(e, 400, "invalid_labels", "model '%s' has %lld outputs; got %zu labels "
                        "(give one per output, or [] to remove them)", m->name,
                        (long long)m->out_numel, n), -1;
        json_array_foreach(labels, i, v) {
            if (!json_is_string(v) || json_string_length(v) == 0 ||
                json_string_length(v) > MAX_LABEL_BYTES ||
                strlen(json_string_value(v)) != json_string_length(v))
                return eset(e, 400, "invalid_labels", "label %zu must be a string of 1-%d bytes",
                            i, MAX_LABEL_BYTES), -1;
        }
    }
    if (pp && !json_is_null(pp)) {
        dyn_preprocess out;
        dyn_err err = {0};
        if (!json_is_object(pp))
            return eset(e, 400, "invalid_preprocess", "preprocess must be a JSON object"), -1;
        if (dyn_preprocess_check(pp, &err) || /* no unknown keys: a typo must not pass */
            dyn_preprocess_parse(pp, &m->model->input, &out, &err))
            return eset(e, 400, "invalid_preprocess", "%s", err.msg), -1;
    }
    return 0;
}

/* Applies the body to dm (a fresh copy of the model) and notes the edit in its info. */
static int edit_apply(dyn_model *dm, const json_t *body, int from_version) {
    const json_t *labels = json_object_get(body, "labels"), *pp = json_object_get(body, "preprocess");
    json_t *fields = json_array();
    if (labels) {
        size_t n = json_array_size(labels);
        const char **v = calloc(n ? n : 1, sizeof *v);
        if (!v) return DYN_ENOMEM;
        for (size_t i = 0; i < n; i++) v[i] = json_string_value(json_array_get(labels, i));
        int rc = dyn_model_labels_set(dm, v, (int)n);
        free(v);
        if (rc) return rc;
        json_array_append_new(fields, json_string("labels"));
    }
    if (pp) {
        json_decref(dm->preprocess);
        dm->preprocess = json_is_null(pp) ? NULL : json_deep_copy(pp);
        json_array_append_new(fields, json_string("preprocess"));
    }
    if (!dm->info) dm->info = json_object();
    char when[32];
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    json_object_set_new(dm->info, "edit", json_pack("{s:i, s:o, s:s}", "from_version",
                                                    from_version, "fields", fields, "at", when));
    return 0;
}

/* Reads, changes, publishes and loads the edit of model `name` (g_edit_mu held, so edits
 * compose: each starts from the version the previous one published). Returns the new version
 * (served) with a reference and *from = the version edited, or NULL after replying. */
static srv_model *edit_locked(srv_req *r, const json_t *body, int *from) {
    srv_model *m = api_model_acquire(r);
    if (!m) return NULL;
    edit_err e = {0};
    char name[SRV_NAME_MAX + 1], dir[1300];
    snprintf(name, sizeof name, "%s", m->name);
    *from = m->version;
    int v = -1;
    dyn_model *dm = NULL;
    if (!edit_check(body, m, &e)) {
        dyn_err err = {0};
        dm = dyn_model_load(m->path, &err);
        if (!dm) eset(&e, 500, "model_load_failed", "reading the model to edit: %s", err.msg);
        else if (edit_apply(dm, body, *from)) eset(&e, 500, "out_of_memory", "out of memory");
    }
    srv_model_release(m);
    if (dm && !e.code) {
        snprintf(dir, sizeof dir, "%s/%s", r->cfg->model_dir, name);
        struct stat st;
        srv_store *store = srv_store_active();
        v = store ? publish_to_store(store, r->cfg->model_dir, name, dm, &e)
            : stat(dir, &st) == 0 && S_ISDIR(st.st_mode)
                ? publish_in_dir(dir, dm, &e)
                : publish_from_file(r->cfg->model_dir, name, dm, &e);
    }
    dyn_model_free(dm);
    dyn_err err = {0};
    if (v > 0 && srv_repo_load(r->srv->repo, name, &err))
        eset(&e, 500, "model_load_failed", "version %d was written but does not load: %s", v,
             err.msg);
    srv_model *nm = v > 0 && !e.code ? srv_repo_acquire_load(r->srv->repo, name, v, r->deadline,
                                                             NULL, NULL, NULL)
                                     : NULL; /* (loaded again if the budget unloaded it) */
    if (v > 0 && !e.code && !nm)
        eset(&e, 500, "model_load_failed", "version %d was written but is not served", v);
    if (!nm) srv_reply_error(r, e.status, e.code, "%s", e.msg);
    return nm;
}

void api_model_patch(srv_req *r) {
    json_t *body = api_body_json(r);
    if (!body) return;
    int from = 0;
    pthread_mutex_lock(&g_edit_mu);
    srv_model *nm = edit_locked(r, body, &from);
    pthread_mutex_unlock(&g_edit_mu);
    json_decref(body);
    if (!nm) return;
    json_t *meta = api_model_meta_json(r->srv->repo, nm, 1);
    char vs[16], loc[128];
    snprintf(loc, sizeof loc, "/v2/models/%s/versions/%d", nm->name, nm->version);
    snprintf(vs, sizeof vs, "%d", nm->version);
    json_object_set_new(meta, "version", json_string(vs));
    snprintf(vs, sizeof vs, "%d", from);
    json_object_set_new(meta, "previous_version", json_string(vs));
    srv_model_release(nm);
    srv_req_header_add(r, "Location", loc);
    srv_reply_json(r, 200, meta);
}
