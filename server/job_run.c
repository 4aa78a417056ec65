/* job_run.c — what a job does: its options (one table: name, kinds, type, bounds, default), the
 * data sets of data_dir, a conversion (engine/convert/convert.h) or a fine-tune
 * (engine/convert/finetune.h) with progress published through the job's atomics, and the
 * publication of the produced model (temp file, fsync, rename / link, repository load).
 *
 * The options mirror `dyn convert` / `dyn finetune` (engine/cli/), with underscores for dashes.
 * Data sets are named, never given as paths: "mnist" and "fashion" (data_dir/mnist,
 * data_dir/fashion, with their normalization and labels) or any other directory of data_dir
 * holding IDX files, or PNG / JPEG images in one sub-folder per class (DIR/train/<class>/ and
 * DIR/test/<class>/, or DIR/<class>/ as the training split alone).
 */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "convert/finetune.h"
#include "convert/options.h"
#include "data.h"
#include "io/dataset.h"
#include "io/file.h"
#include "io/image.h"
#include "io/model_file.h"
#include "io/onnx.h"
#include "server/jobs_impl.h"
#include "server/log.h"
#include "server/store.h"

/* ---- options: the engine's one table (engine/convert/options.h) ---- */

#define jerr srv__job_err_set

static int kind_bit(int kind) {
    return kind == SRV_JOB_FINETUNE ? DYN_OPT_FINETUNE : DYN_OPT_CONVERT;
}

/* The option of a job of `kind` named `name`, or NULL (CLI-only options are not job options). */
static const dyn_opt *opt_find(int kind, const char *name) {
    const dyn_opt *o = dyn_opt_find(kind_bit(kind), name);
    return o && !(o->flags & DYN_OPT_CLI_ONLY) ? o : NULL;
}

/* 1 when model_dir already has a model called name (file or versions directory). */
static int model_exists(const srv_jobs *js, const char *name, int *is_dir) {
    char p[1200];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", js->model_dir, name);
    *is_dir = stat(p, &st) == 0 && S_ISDIR(st.st_mode);
    snprintf(p, sizeof p, "%s/%s.dyn", js->model_dir, name);
    return *is_dir || stat(p, &st) == 0;
}

/* Resolves data set `name` of data_dir into d: the same naming rules as model names (no '/', no
 * leading '.'), so a name never leaves data_dir. 0, DYN_EINVAL (not a valid name) or DYN_EIO
 * (no such data set), err saying which. */
static int dataset_resolve(const srv_jobs *js, const char *name, dyn_dataset_spec *d,
                           dyn_err *err) {
    if (!srv_repo_name_valid(name))
        return dyn_err_set(err, DYN_EINVAL,
                           "data set names are 1-64 characters of A-Z a-z 0-9 _ . - naming a "
                           "directory of data_dir, and do not start with '.'");
    int rc = dyn_dataset_resolve(js->data_dir, name, DYN_DATASET_IN_ROOT, d, err);
    if (rc == DYN_EIO) /* in the terms of the API user, who knows names, not data_dir */
        dyn_err_set(err, DYN_EIO, "no data set '%s' in the server's data_dir", name);
    return rc;
}

/* Validates one option value (type and bounds by the table, then names: models exist, data
 * sets resolve in data_dir); stores the normalized value in out. 0 or -1 with e. */
static int opt_check(srv_jobs *js, int kind, const dyn_opt *o, const json_t *v, json_t *out,
                     srv_job_err *e) {
    dyn_err derr = {0};
    dyn_dataset_spec dspec;
    if (dyn_opt_check(o, v, out, &derr)) {
        jerr(e, 400, "invalid_option", "%s", derr.msg);
        return -1;
    }
    switch (o->type) {
    case DYN_OPT_MODEL:
    case DYN_OPT_OUTPUT: {
        const char *name = json_string_value(v);
        if (!name || !srv_repo_name_valid(name)) {
            jerr(e, 400, "invalid_name",
                 "%s: model names are 1-64 characters of A-Z a-z 0-9 _ . - and do not start "
                 "with '.'", o->name);
            return -1;
        }
        if (o->type == DYN_OPT_OUTPUT) return 0;
        int known = 0;
        /* a model not loaded now (memory budget) is loaded, as for a request */
        srv_model *m = srv_repo_acquire_load(js->repo, name, 0, dyn_now() + 30, &known, NULL, NULL);
        if (!m) {
            jerr(e, known ? 409 : 404, known ? "model_unavailable" : "model_not_found",
                 known ? "model '%s' is not loaded (POST /v2/repository/models/%s/load)"
                       : "unknown model '%s' (GET /v1/models lists them)",
                 name, name);
            return -1;
        }
        srv_model_release(m);
        (void)kind;
        return 0;
    }
    case DYN_OPT_DATASET: {
        const char *name = json_string_value(v);
        int rc = name ? dataset_resolve(js, name, &dspec, &derr) : DYN_EINVAL;
        if (rc) {
            jerr(e, rc == DYN_EIO ? 404 : 400, rc == DYN_EIO ? "dataset_not_found" : "invalid_name",
                 "%s: %s", o->name, name ? derr.msg : "a data set name (string)");
            return -1;
        }
        return 0;
    }
    default:
        return 0;
    }
}

/* The data a conversion needs to be verified (or to meet a target) is there; checked after the
 * upload itself (srv_jobs_submit) so a bad upload is reported as such. 0, or -1 with e. */
int srv__job_conv_data_check(const json_t *in, const json_t *out, srv_job_err *e) {
    const int data = json_object_get(out, "calib") || json_object_get(out, "eval");
    dyn_convert_opts tmp; /* what only the combination of values can tell (copies) */
    const char *keep[64];
    dyn_err derr = {0};
    if (dyn_convert_opts_from_spec(out, &tmp, keep, 64, &derr)) {
        jerr(e, 400, "invalid_option", "%s", derr.msg);
        return -1;
    }
    if (json_object_get(in, "rel_err") && json_object_get(in, "target_agreement")) {
        jerr(e, 400, "invalid_option", "give rel_err or target_agreement, not both");
        return -1;
    }
    if (json_object_get(out, "target_agreement") && !data) {
        jerr(e, 400, "missing_option",
             "target_agreement needs images to measure agreement on: \"calib\" (a data set "
             "of the model's inputs, labels optional; PUT /v1/datasets/{name} uploads one) or "
             "\"eval\"");
        return -1;
    }
    if (json_integer_value(json_object_get(out, "finetune_epochs")) > 0 &&
        !json_object_get(out, "calib")) {
        jerr(e, 400, "missing_option",
             "finetune_epochs trains the converted model on the labels of \"calib\": give a "
             "labelled data set (one folder per class; PUT /v1/datasets/{name} uploads one)");
        return -1;
    }
    if (!data && json_number_value(json_object_get(out, "min_agreement")) > 0 &&
        !json_is_true(json_object_get(out, "force_publish"))) {
        jerr(e, 400, "missing_option",
             "a conversion is checked against the original model before it is published: "
             "give \"calib\" (a data set of images the model classifies, labels optional; "
             "PUT /v1/datasets/{name} uploads a zip or tar) or \"eval\"; or set "
             "\"force_publish\": true to publish an unverified model (data-free fit; its "
             "metadata then says unverified), or \"min_agreement\": 0");
        return -1;
    }
    return 0;
}

json_t *srv_jobs_spec(srv_jobs *js, int kind, const json_t *in, int has_upload, srv_job_err *e) {
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v) {
        const dyn_opt *o = opt_find(kind, k);
        if (!o) {
            char names[1500] = "";
            int nopts;
            const dyn_opt *tab = dyn_opts_table(&nopts);
            for (int i = 0; i < nopts; i++)
                if (opt_find(kind, tab[i].name) == &tab[i]) {
                    size_t l = strlen(names);
                    snprintf(names + l, sizeof names - l, "%s%s", l ? ", " : "", tab[i].name);
                }
            jerr(e, 400, "unknown_option", "unknown option '%.64s' for a %s job (options: %s)", k,
                 srv_job_kind_name(kind), names);
            goto fail;
        }
        if (json_is_null(v)) continue;
        if (opt_check(js, kind, o, v, out, e)) goto fail;
    }
    dyn_err derr = {0};
    if (dyn_opts_defaults(kind_bit(kind), 0, out, &derr)) {
        jerr(e, 500, "internal", "%s", derr.msg);
        goto fail;
    }
    const char *model = json_string_value(json_object_get(out, "model"));
    if (kind == SRV_JOB_CONVERSION && has_upload == !!model) {
        jerr(e, 400, has_upload ? "invalid_option" : "missing_option",
             has_upload ? "give either an upload or \"model\", not both"
                        : "a conversion needs an ONNX / DyN upload (raw body or multipart "
                          "\"file\") or {\"model\": \"<repository model>\"}");
        goto fail;
    }
    if (kind == SRV_JOB_FINETUNE && (!model || !json_object_get(out, "data"))) {
        jerr(e, 400, "missing_option", "a fine-tune needs \"model\" (a repository model) and "
                                       "\"data\" (a data set of data_dir)");
        goto fail;
    }
    if (kind == SRV_JOB_CONVERSION &&
        !strcmp(json_string_value(json_object_get(out, "fit")), "activation") &&
        !json_object_get(out, "calib")) {
        if (!json_object_get(out, "eval")) {
            jerr(e, 400, "missing_option", "fit = activation needs \"calib\" (a data set)");
            goto fail;
        }
        json_object_set(out, "calib", json_object_get(out, "eval"));
    }
    const json_t *ppo = json_object_get(out, "preprocess");
    if (ppo && model) { /* a repository model: the pipeline against its input now (an upload's
                         * when the job starts) */
        srv_model *sm = srv_repo_acquire_load(js->repo, model, 0, dyn_now() + 30, NULL, NULL, NULL);
        dyn_preprocess pp;
        int bad = sm && dyn_preprocess_parse(ppo, &sm->model->input, &pp, &derr);
        if (sm) srv_model_release(sm);
        if (bad) {
            jerr(e, 400, "invalid_option", "%s%s", strncmp(derr.msg, "preprocess", 10) ?
                 "preprocess: " : "", derr.msg);
            goto fail;
        }
    }
    if (!json_object_get(out, "output") && model) {
        char name[96];
        snprintf(name, sizeof name, "%.60s-%s", model, kind == SRV_JOB_FINETUNE ? "ft" : "dyn");
        json_object_set_new(out, "output", json_string(name));
    }
    const char *output = json_string_value(json_object_get(out, "output"));
    int is_dir = 0;
    const int exists = output && model_exists(js, output, &is_dir);
    if (srv_store_active()) is_dir = 0; /* a model store publishes versions (store.h) */
    if (exists && (is_dir || !json_is_true(json_object_get(out, "overwrite")))) {
        jerr(e, 409, "model_exists",
             is_dir ? "model '%s' is versioned (a directory of versions); choose another output name"
                    : "model '%s' exists; choose another \"output\" or set \"overwrite\": true",
             output);
        goto fail;
    }
    if (kind == SRV_JOB_CONVERSION && !has_upload && srv__job_conv_data_check(in, out, e))
        goto fail;
    return out;
fail:
    json_decref(out);
    return NULL;
}

/* ---- data sets ---- */

/* Loads split "train" / "test" of data set `name` (d: its spec) for model m, checking that the
 * samples fit the model. ds: caller frees with dyn_dataset_free. */
static int dataset_load(const srv_jobs *js, const char *name, const char *split,
                        const dyn_model *m, dyn_dataset_spec *d, dyn_dataset *ds, dyn_err *err) {
    memset(ds, 0, sizeof *ds);
    int rc = dataset_resolve(js, name, d, err);
    if (!rc) rc = dyn_dataset_load_for_model(d, split, m, ds, err); /* through its pipeline */
    if (rc) return rc;
    const dyn_shape *in = &m->input;
    int64_t numel = 1;
    for (int i = 0; i < in->ndim; i++) numel *= in->d[i];
    dyn_preprocess pp;
    const int image = dyn_dataset_model_pp(d, m, &pp, NULL) == 0;
    if ((int64_t)ds->c * ds->h * ds->w != numel ||
        (in->ndim == 3 && (image ? pp.c : in->d[0]) != ds->c)) {
        char shape[64];
        dyn_shape_str(in, shape, sizeof shape);
        dyn_err_set(err, DYN_EINVAL, "data set '%s' has %dx%dx%d samples; the model's input is %s",
                    name, ds->c, ds->h, ds->w, shape);
        dyn_dataset_free(ds);
        return DYN_EINVAL;
    }
    if (ds->nclasses > dyn_model_outputs(m)) {
        int nc = ds->nclasses;
        dyn_dataset_free(ds);
        return dyn_err_set(err, DYN_EINVAL, "data set '%s' has %d classes; the model has %lld outputs",
                           name, nc, (long long)dyn_model_outputs(m));
    }
    return 0;
}

/* ---- helpers on the spec ---- */

static const char *sget(const json_t *spec, const char *k) {
    return json_string_value(json_object_get(spec, k));
}
static double nget(const json_t *spec, const char *k, double def) {
    const json_t *v = json_object_get(spec, k);
    return json_is_number(v) ? json_number_value(v) : def;
}
static int bget(const json_t *spec, const char *k) { return json_is_true(json_object_get(spec, k)); }

static void phase_set(srv_job *j, int phase) { atomic_store(&j->phase, phase); }

/* ---- job files in the model store (store.h: "job files") ---- */

/* The job's directory (state_dir/jobs/<id>), made when missing: a replica that did not submit
 * the job may have none. 0 or DYN_EIO. */
static int job_dir_make(const srv_jobs *js, const srv_job *j, dyn_err *err) {
    if ((mkdir(js->jobs_dir, 0750) != 0 && errno != EEXIST) ||
        (mkdir(j->dir, 0750) != 0 && errno != EEXIST))
        return dyn_err_set(err, DYN_EIO, "cannot create %s: %s", j->dir, strerror(errno));
    return 0;
}

/* With a model store and no local copy of the job's file `leaf` (another replica submitted or
 * ran the job): fetches it into the job's directory. *found: the file is here now. 0, or DYN_EIO
 * (the store failed: the job cannot know whether it exists). */
static int job_file_fetch(const srv_jobs *js, srv_job *j, const char *leaf, int *found,
                          dyn_err *err) {
    char p[1300];
    snprintf(p, sizeof p, "%s/%s", j->dir, leaf);
    *found = access(p, R_OK) == 0;
    srv_store *st = srv_store_active();
    if (*found || !st) return 0;
    int rc = job_dir_make(js, j, err);
    if (!rc) rc = srv_store_job_get(st, j->id, leaf, p, found, err);
    if (!rc && *found)
        srv_log(SRV_LOG_INFO, "model store: job file fetched",
                json_pack("{s:s, s:s}", "job", j->id, "file", leaf));
    return rc;
}

/* The input model: the upload, a snapshot kept for resuming, or the repository's file. */
static dyn_model *input_load(srv_jobs *js, srv_job *j, const char *snapshot, dyn_err *err) {
    char p[1300];
    const json_t *up = json_object_get(j->spec, "upload");
    int found = 0;
    if (up) {
        snprintf(p, sizeof p, "%s/upload.bin", j->dir);
        if (job_file_fetch(js, j, "upload.bin", &found, err)) return NULL;
        if (!found) {
            dyn_err_set(err, DYN_EIO, "the upload of job '%s' is gone (neither in %s nor in the "
                        "model store): submit the model again", j->id, j->dir);
            return NULL;
        }
        const char *fmt = sget(up, "format");
        dyn_model *m = fmt && !strcmp(fmt, "dyn") ? dyn_model_load(p, err) : dyn_onnx_load(p, err);
        if (!m) dyn_err_prefix(err, "the uploaded model");
        return m;
    }
    if (snapshot) {
        snprintf(p, sizeof p, "%s/%s", j->dir, snapshot);
        if (job_file_fetch(js, j, snapshot, &found, err)) return NULL;
        if (found) return dyn_model_load(p, err);
    }
    const char *name = sget(j->spec, "model");
    srv_model *sm = name ? srv_repo_acquire_load(js->repo, name, 0, 0, NULL, NULL, NULL) : NULL;
    if (!sm) {
        dyn_err_set(err, DYN_EINVAL, "model '%s' is not served any more", name ? name : "?");
        return NULL;
    }
    snprintf(p, sizeof p, "%s", sm->path);
    srv_model_release(sm);
    return dyn_model_load(p, err);
}

/* Writes m into the repository as <output>.dyn and loads it there. */
static int publish(srv_jobs *js, srv_job *j, dyn_model *m, dyn_err *err) {
    phase_set(j, SRV_PHASE_PUBLISH);
    const char *name = sget(j->spec, "output");
    if (!name || !srv_repo_name_valid(name))
        return dyn_err_set(err, DYN_EINVAL, "the job has no valid output name");
    if (m->info) json_object_set_new(m->info, "job", json_pack("{s:s, s:s}", "id", j->id, "kind",
                                                               srv_job_kind_name(j->kind)));
    char tmp[1300], dst[1300];
    snprintf(tmp, sizeof tmp, "%s/.job-%s.tmp", js->model_dir, j->id);
    snprintf(dst, sizeof dst, "%s/%s.dyn", js->model_dir, name);
    int rc = dyn_model_save(m, tmp, err); /* written durably (io/file.h), under a hidden name */
    if (rc) {
        unlink(tmp);
        return rc;
    }
    srv_store *st = srv_store_active();
    if (st) { /* model_store: upload + manifest, then the file becomes <name>/<v>.dyn (store.h) */
        int v;
        if ((rc = srv_store_publish(st, js->model_dir, name, tmp, bget(j->spec, "overwrite"), &v,
                                    err))) {
            unlink(tmp);
            return rc;
        }
        snprintf(dst, sizeof dst, "%s/%s/%d.dyn", js->model_dir, name, v);
        goto load;
    }
    int bad;
    if (bget(j->spec, "overwrite")) {
        bad = rename(tmp, dst) != 0;
    } else { /* link: fails if the name was taken meanwhile (never replaces a model) */
        bad = link(tmp, dst) != 0;
        if (bad && errno == EEXIST) {
            unlink(tmp);
            return dyn_err_set(err, DYN_EINVAL,
                               "model '%s' appeared while the job ran; resubmit with another "
                               "output or overwrite = true", name);
        }
        if (bad && (errno == EPERM || errno == EOPNOTSUPP) && access(dst, F_OK) != 0)
            bad = rename(tmp, dst) != 0; /* no hard links on this file system */
        else unlink(tmp);
    }
    if (bad) {
        int e = errno;
        unlink(tmp);
        return dyn_err_set(err, DYN_EIO, "publishing %s: %s", dst, strerror(e));
    }
    dyn_file_fsync_dir(js->model_dir);
load:
    if ((rc = srv_repo_load(js->repo, name, err)))
        return dyn_err_prefix(err, "published %s but the repository cannot load it", dst);
    pthread_mutex_lock(&j->mu);
    snprintf(j->model, sizeof j->model, "%s", name);
    pthread_mutex_unlock(&j->mu);
    return 0;
}

/* ---- conversion ---- */

typedef struct conv_ctx {
    srv_jobs *js;
    srv_job *j;
} conv_ctx;

static void conv_progress(void *ctx, const dyn_convert_progress *p) {
    conv_ctx *c = ctx;
    srv_job *j = c->j;
    if (!strcmp(p->phase, "finetune")) { /* finetune_epochs: layer / nlayers count epochs */
        phase_set(j, SRV_PHASE_TRAIN);
        atomic_store(&j->epoch, p->layer);
        atomic_store(&j->epochs, p->nlayers);
        srv__job_progress_set(j, 0.05 + 0.9 * p->frac);
        srv__job_record_maybe(c->js, j);
        return;
    }
    int ph = !strcmp(p->phase, "calibrate") ? SRV_PHASE_CALIBRATE
             : !strcmp(p->phase, "evaluate") ? SRV_PHASE_EVALUATE
                                             : SRV_PHASE_FIT;
    phase_set(j, ph);
    if (atomic_exchange(&j->layer, p->layer) != p->layer || atomic_load(&j->nlayers) != p->nlayers) {
        pthread_mutex_lock(&j->mu);
        snprintf(j->layer_name, sizeof j->layer_name, "%s", p->layer_name ? p->layer_name : "");
        pthread_mutex_unlock(&j->mu);
    }
    atomic_store(&j->nlayers, p->nlayers);
    srv__job_progress_set(j, 0.05 + 0.9 * p->frac);
    srv__job_record_maybe(c->js, j);
}

/* Gives views a and b (may be NULL) model m's per-channel normalization and layout for data
 * set d. */
static int views_norm(const dyn_dataset_spec *d, const dyn_model *m, dyn_data_view *a,
                      dyn_data_view *b, dyn_err *err) {
    dyn_data_norm nm;
    int rc = dyn_dataset_model_norm(d, m, &nm, err);
    if (!rc) rc = dyn_data_view_set_norm(a, &nm, err);
    if (!rc && b) rc = dyn_data_view_set_norm(b, &nm, err);
    return rc;
}

static void preprocess_set(dyn_model *m, const char *set) {
    dyn_dataset_spec d;
    dyn_dataset_spec_init(&d, set);
    if (!m->preprocess) m->preprocess = dyn_dataset_preprocess_json(&d, &m->input);
    if (!m->nlabels && dyn_model_outputs(m) == d.nlabels)
        dyn_model_labels_set(m, d.labels, d.nlabels);
}

/* Labels for a model without any: the classes of an uploaded labelled data set (its manifest,
 * server/datasets.h), when there are as many as the model has outputs. */
static void labels_from_set(const srv_jobs *js, const char *set, dyn_model *m) {
    if (!set) return;
    char p[1200];
    snprintf(p, sizeof p, "%s/%s/.dataset.json", js->data_dir, set);
    json_t *man = json_load_file(p, 0, NULL);
    const json_t *cls = json_object_get(man, "classes");
    const size_t n = json_array_size(cls);
    if (json_is_true(json_object_get(man, "labeled")) && n > 0 && (int64_t)n == dyn_model_outputs(m)) {
        const char **names = malloc(n * sizeof *names);
        int ok = names != NULL;
        for (size_t i = 0; ok && i < n; i++) ok = (names[i] = json_string_value(json_array_get(cls, i))) != NULL;
        if (ok) dyn_model_labels_set(m, names, (int)n);
        free(names);
    }
    json_decref(man);
}

static int run_conversion(srv_jobs *js, srv_job *j, dyn_err *err) {
    const json_t *s = j->spec;
    dyn_model *m = input_load(js, j, NULL, err), *out = NULL;
    if (!m) return err->code ? err->code : DYN_EIO;
    dyn_convert_opts o;
    const char *keep[64];
    int rc = dyn_convert_opts_from_spec(s, &o, keep, 64, err);
    const json_t *ppo = json_object_get(s, "preprocess");
    if (!rc && ppo) { /* the user's pipeline: replaces the model's (form checked at submit) */
        dyn_preprocess chk;
        if ((rc = dyn_preprocess_parse(ppo, &m->input, &chk, err)))
            dyn_err_prefix(err, "option preprocess does not fit the model");
        else {
            json_decref(m->preprocess);
            m->preprocess = json_deep_copy(ppo);
        }
    }
    const char *calib = sget(s, "calib"), *eval = sget(s, "eval"), *pp = sget(s, "preprocess_from");
    if (!rc && !m->preprocess && (pp || calib || eval)) preprocess_set(m, pp ? pp : calib ? calib : eval);
    dyn_dataset cal = {0}, te = {0};
    dyn_data_view vcal = {0}, vhold = {0}, vte = {0}, vnone = {0}, vpool = {0};
    dyn_batch_source scal, ste, shold, spool;
    dyn_dataset_spec dsp;
    float mean, sd;
    const uint64_t seed = o.fitopt.seed;
    if (!rc && eval && !j->cancel && !(rc = dataset_load(js, eval, "test", m, &dsp, &te, err))) {
        dyn_dataset_norm(&dsp, m, &mean, &sd);
        int n = (int)nget(s, "eval_n", te.n);
        rc = dyn_data_split(&te, 0, DYN_MIN(n, te.n), seed, mean, sd, &vte, &vnone, err);
        if (!rc) rc = views_norm(&dsp, m, &vte, NULL, err);
        ste = dyn_data_view_source(&vte);
        o.eval = &ste;
        if (!dyn_dataset_labeled(&dsp))
            rc = dyn_err_set(err, DYN_EINVAL, "eval: data set '%s' has no labels (use it as calib)",
                             eval);
    }
    if (!rc && calib && !j->cancel &&
        !(rc = dataset_load(js, calib, "train", m, &dsp, &cal, err))) {
        dyn_dataset_norm(&dsp, m, &mean, &sd);
        rc = dyn_data_calib_split(&cal, (int)nget(s, "calib_n", 512), (int)nget(s, "holdout_n", 256),
                                  seed, mean, sd, &vcal, &vhold, &vpool, err);
        if (!rc) rc = views_norm(&dsp, m, &vcal, &vhold, err);
        if (!rc) rc = views_norm(&dsp, m, &vpool, NULL, err);
        scal = dyn_data_view_source(&vcal);
        o.calib = &scal;
        o.calib_n = vcal.n;
        o.calib_labeled = dyn_dataset_labeled(&dsp);
        if (vpool.n > 0) {
            spool = dyn_data_view_source(&vpool);
            o.distill = &spool;
        }
        if (vhold.n > 0) {
            shold = dyn_data_view_source(&vhold);
            o.holdout = &shold;
            o.holdout_n = vhold.n;
            o.holdout_labeled = dyn_dataset_labeled(&dsp);
        }
    }
    if (!rc && !m->nlabels) /* the class folders of the user's labelled set name the outputs */
        labels_from_set(js, calib ? calib : eval, m);
    conv_ctx cc = {js, j};
    o.progress = conv_progress;
    o.progress_ctx = &cc;
    o.cancel = &j->cancel;
    dyn_convert_report rep;
    memset(&rep, 0, sizeof rep);
    if (!rc && j->cancel) rc = dyn_err_set(err, DYN_ECANCEL, "cancelled");
    if (!rc) {
        srv__job_progress_set(j, 0.05);
        rc = dyn_convert(m, &o, &out, &rep, err);
        json_t *r = rep.layers ? dyn_convert_report_json(&rep) : NULL;
        pthread_mutex_lock(&j->mu);
        json_decref(j->result);
        j->result = r;
        pthread_mutex_unlock(&j->mu);
        dyn_convert_report_free(&rep);
    }
    if (!rc) rc = publish(js, j, out, err);
    dyn_model_free(out);
    dyn_model_free(m);
    dyn_data_view_free(&vcal);
    dyn_data_view_free(&vhold);
    dyn_data_view_free(&vpool);
    dyn_data_view_free(&vte);
    dyn_data_view_free(&vnone);
    dyn_dataset_free(&cal);
    dyn_dataset_free(&te);
    return rc;
}

/* ---- fine-tuning ---- */

typedef struct ft_ctx {
    srv_jobs *js;
    srv_job *j;
    int unfixed;
    double pushed_at; /* when the last push of the checkpoint to the store began (0: none) */
} ft_ctx;

static double wall_now(void) { /* the clock of file times */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec * 1e-9;
}

/* A checkpoint is complete (the engine's checkpointed callback): with a model store it is
 * mirrored to jobs/<id>/ckpt/ there, the data files first and state.json last (the files
 * changed since the last push; all of them after a failed one). A failure is logged and the
 * job goes on: the store keeps the previous complete checkpoint, the next epoch tries again. */
static void ft_checkpointed(void *ctx, const char *dir, int epoch) {
    ft_ctx *c = ctx;
    srv_store *st = srv_store_active();
    if (!st) return;
    const double t = wall_now();
    dyn_err err = {0};
    long long bytes = 0;
    /* 2 s of slack: file times come from a coarser clock than this one */
    int rc = srv_store_job_push_dir(st, c->j->id, "ckpt", dir, "state.json",
                                    c->pushed_at > 0 ? c->pushed_at - 2 : 0, &bytes, &err);
    c->pushed_at = rc ? 0 : t;
    if (rc)
        srv_log(SRV_LOG_WARN, "model store: checkpoint not stored (the store keeps the previous "
                              "one; retried after the next epoch)",
                json_pack("{s:s, s:i, s:s}", "job", c->j->id, "epoch", epoch, "error", err.msg));
    else
        srv_log(SRV_LOG_INFO, "model store: checkpoint stored",
                json_pack("{s:s, s:i, s:I}", "job", c->j->id, "epoch", epoch, "bytes",
                          (json_int_t)bytes));
}

/* Which checkpoint files of the store belong to the checkpoint that state.json (text) names:
 * best.dyn and the files of its epoch (cur-<e>.*, dense-<e>.*; finetune.h). */
static int ckpt_keep(const char *leaf, const char *text, void *arg) {
    (void)arg;
    json_t *sj = json_loads(text, 0, NULL);
    long long e = json_integer_value(json_object_get(sj, "epoch"));
    json_decref(sj);
    char cur[48], dense[48];
    snprintf(cur, sizeof cur, "cur-%lld.", e);
    snprintf(dense, sizeof dense, "dense-%lld.", e);
    return !strcmp(leaf, "best.dyn") || !strncmp(leaf, cur, strlen(cur)) ||
           !strncmp(leaf, dense, strlen(dense));
}

static void ft_progress(void *ctx, const dyn_ft_progress *p) {
    ft_ctx *c = ctx;
    srv_job *j = c->j;
    const double E = DYN_MAX(p->epochs, 1), train_share = c->unfixed ? 0.8 : 1.0;
    atomic_store(&j->epoch, p->epoch);
    atomic_store(&j->epochs, p->epochs);
    if (!strcmp(p->phase, "train")) {
        phase_set(j, SRV_PHASE_TRAIN);
        atomic_store(&j->step, (long long)p->train.step);
        atomic_store(&j->steps, (long long)p->train.steps);
        double f = p->train.steps > 0 ? (double)p->train.step / (double)p->train.steps : 0;
        srv__job_progress_set(j, (p->epoch - 1 + train_share * f) / E);
    } else if (!strcmp(p->phase, "fit")) {
        phase_set(j, SRV_PHASE_FIT);
        srv__job_progress_set(j, (p->epoch - 1 + train_share + (1 - train_share) * p->fit_frac) / E);
    } else { /* evaluate: an epoch is done; its line joins the history */
        phase_set(j, SRV_PHASE_EVALUATE);
        json_t *h = json_pack("{s:i, s:f, s:f, s:f, s:f}", "epoch", p->epoch, "train_loss",
                              (double)p->train.loss, "train_acc", (double)p->train.acc, "val_acc",
                              (double)p->train.val_acc, "best_val_acc", (double)p->best_val_acc);
        pthread_mutex_lock(&j->mu);
        if (!j->history) j->history = json_array();
        for (size_t i = json_array_size(j->history); i-- > 0;) /* a resumed epoch replaces its line */
            if (json_integer_value(json_object_get(json_array_get(j->history, i), "epoch")) >= p->epoch)
                json_array_remove(j->history, i);
        json_array_append_new(j->history, h);
        pthread_mutex_unlock(&j->mu);
        srv__job_progress_set(j, p->epoch / E);
        j->last_write = 0; /* write the record now */
    }
    srv__job_record_maybe(c->js, j);
}

static int run_finetune(srv_jobs *js, srv_job *j, dyn_err *err) {
    const json_t *s = j->spec;
    char ckpt[1300], state[1400], snap[1300];
    snprintf(ckpt, sizeof ckpt, "%s/ckpt", j->dir);
    snprintf(state, sizeof state, "%s/state.json", ckpt);
    snprintf(snap, sizeof snap, "%s/input.dyn", j->dir);
    /* the model as it was when the job first ran: a resume must not pick up a replaced one */
    dyn_model *m = input_load(js, j, "input.dyn", err);
    if (!m) return err->code ? err->code : DYN_EIO;
    int rc = 0;
    srv_store *st = srv_store_active();
    if (access(snap, R_OK) != 0) {
        rc = dyn_model_save(m, snap, err); /* atomic: whole or absent */
        dyn_err e2 = {0};
        if (!rc && st && srv_store_job_put(st, j->id, "input.dyn", snap, &e2))
            srv_log(SRV_LOG_WARN, "model store: the fine-tune's input snapshot was not stored (a "
                                  "replica taking the job over would start from the repository's "
                                  "model)", json_pack("{s:s, s:s}", "job", j->id, "error", e2.msg));
    }
    /* no local checkpoint: the store's, if any (the job ran elsewhere, or its files are gone) */
    int found = 0;
    if (!rc && st && access(state, R_OK) != 0 && !(rc = job_dir_make(js, j, err)) &&
        (rc = srv_store_job_fetch_dir(st, j->id, "ckpt", ckpt, "state.json", ckpt_keep, NULL,
                                      &found, err)))
        dyn_err_prefix(err, "cannot tell whether job '%s' has a checkpoint to resume from", j->id);
    dyn_ft_opts o;
    if (dyn_ft_opts_from_spec(s, &o, err) && !rc) rc = err->code;
    o.ckpt_dir = ckpt;
    o.resume = access(state, R_OK) == 0; /* an epoch finished before the interruption */
    ft_ctx fc = {js, j, o.mode == DYN_FT_UNFIXED, 0};
    o.progress = ft_progress;
    o.progress_ctx = &fc;
    o.checkpointed = ft_checkpointed;
    o.checkpointed_ctx = &fc;
    o.cancel = &j->cancel;
    atomic_store(&j->epochs, o.epochs);
    const char *data = sget(s, "data");
    dyn_dataset tr = {0};
    dyn_data_view vtr = {0}, vva = {0};
    if (!rc && !data) rc = dyn_err_set(err, DYN_EINVAL, "the job has no data set");
    dyn_dataset_spec dsp;
    if (!rc && !(rc = dataset_load(js, data, "train", m, &dsp, &tr, err)) &&
        !dyn_dataset_labeled(&dsp))
        rc = dyn_err_set(err, DYN_EINVAL, "data: data set '%s' has no labels; fine-tuning needs "
                         "class folders (it can calibrate a conversion: calib)", data);
    if (!rc) {
        float mean, sd;
        dyn_dataset_norm(&dsp, m, &mean, &sd);
        if (tr.n < 2) rc = dyn_err_set(err, DYN_EINVAL, "data set '%s' has fewer than 2 images", data);
        else rc = dyn_data_split(&tr, DYN_MIN((int)nget(s, "val", 5000), tr.n - 1),
                                 (int)nget(s, "limit", 0), o.seed, mean, sd, &vtr, &vva, err);
        if (!rc) rc = views_norm(&dsp, m, &vtr, &vva, err);
    }
    dyn_ft_result res;
    memset(&res, 0, sizeof res);
    if (!rc && j->cancel) rc = dyn_err_set(err, DYN_ECANCEL, "cancelled");
    if (!rc) {
        dyn_batch_source str = dyn_data_view_source(&vtr), sva = dyn_data_view_source(&vva);
        phase_set(j, SRV_PHASE_TRAIN);
        rc = dyn_finetune(m, &str, &sva, &o, &res, err);
        json_t *r = dyn_ft_result_json(&res);
        if (r) {
            json_object_set_new(r, "mode", json_string(dyn_ft_mode_name(o.mode)));
            json_object_set_new(r, "train_images", json_integer(vtr.n));
            json_object_set_new(r, "val_images", json_integer(vva.n));
        }
        pthread_mutex_lock(&j->mu);
        if (r && rc == 0) { /* the engine's history is authoritative (also across resumes) */
            json_decref(j->history);
            j->history = json_incref(json_object_get(r, "history"));
            json_object_del(r, "history");
        }
        if (r && rc == 0) {
            json_decref(j->result);
            j->result = r;
        } else {
            json_decref(r);
        }
        pthread_mutex_unlock(&j->mu);
        if (!rc && m->info)
            json_object_set_new(m->info, "finetune",
                                json_pack("{s:s, s:i, s:f, s:i}", "mode", dyn_ft_mode_name(o.mode),
                                          "epochs", o.epochs, "best_val_acc",
                                          (double)res.best_val_acc, "best_epoch", res.best_epoch));
        dyn_ft_result_free(&res);
    }
    if (!rc) rc = publish(js, j, m, err);
    dyn_model_free(m);
    dyn_data_view_free(&vtr);
    dyn_data_view_free(&vva);
    dyn_dataset_free(&tr);
    return rc;
}

int srv__job_execute(srv_jobs *js, srv_job *j, dyn_err *err) {
    phase_set(j, SRV_PHASE_LOAD);
    int rc = j->kind == SRV_JOB_FINETUNE ? run_finetune(js, j, err) : run_conversion(js, j, err);
    if (rc && !err->msg[0]) dyn_err_set(err, rc, "the job failed (code %d)", rc);
    if (rc == DYN_ECANCEL || (rc && j->cancel)) return DYN_ECANCEL;
    return rc;
}
