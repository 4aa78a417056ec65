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
#include <unistd.h>

#include "convert/finetune.h"
#include "data.h"
#include "io/dataset.h"
#include "io/file.h"
#include "io/model_file.h"
#include "io/onnx.h"
#include "server/jobs_impl.h"
#include "server/log.h"

/* ---- options ---- */

enum { K_C = 1 << SRV_JOB_CONVERSION, K_F = 1 << SRV_JOB_FINETUNE, K_ALL = K_C | K_F };
typedef enum { O_NUM, O_INT, O_BOOL, O_CHOICE, O_MODEL, O_DATASET, O_OUTPUT, O_LIST } opt_type;

typedef struct job_opt {
    const char *name;
    int kinds;
    opt_type type;
    double lo, hi;       /* O_NUM / O_INT bounds (inclusive); O_NUM with lo_open: lo excluded */
    int lo_open;
    const char *def;     /* default as JSON text; NULL: absent unless given */
    const char *choices; /* O_CHOICE: "a|b|c" */
    const char *doc;
} job_opt;

static const job_opt OPTS[] = {
    {"model", K_ALL, O_MODEL, 0, 0, 0, NULL, NULL, "repository model to convert / fine-tune"},
    {"output", K_ALL, O_OUTPUT, 0, 0, 0, NULL, NULL, "name of the produced model"},
    {"overwrite", K_ALL, O_BOOL, 0, 0, 0, "false", NULL, "replace an existing model"},
    {"seed", K_ALL, O_INT, 0, 2147483647, 0, "1", NULL, "seed"},
    {"quant", K_ALL, O_NUM, 0, 1, 0, "0.001", NULL, "state grid (0 = off)"},
    /* conversion */
    {"ratio", K_C, O_NUM, 1, 1000, 0, "4", NULL, "per-layer compression"},
    {"rel_err", K_C, O_NUM, 0, 1, 1, NULL, NULL, "instead of ratio: target relative error"},
    {"fit", K_C, O_CHOICE, 0, 0, 0, "\"fixed\"", "fixed|activation", "fit mode"},
    {"steps", K_C, O_INT, 1, 100000, 0, "2000", NULL, "Adam steps per layer"},
    {"lr", K_C, O_NUM, 0, 10, 1, "0.1", NULL, "fitting learning rate"},
    {"init", K_C, O_CHOICE, 0, 0, 0, "\"svd\"", "svd|lsq|random", "initialization"},
    {"restarts", K_C, O_INT, 1, 64, 0, "1", NULL, "initial candidates"},
    {"fit_algo", K_C, O_CHOICE, 0, 0, 0, "\"fast\"", "fast|reference",
     "data-free l1 fit: fused pass, closed-form lambda and c; or the path before issue 9"},
    {"sample", K_C, O_NUM, 0, 1, 1, "0.5", NULL, "fraction of the rows each fitting step sees (layers of >= 256 rows)"},
    {"plateau", K_C, O_NUM, 0, 0.5, 0, "0", NULL, "stop a fit early on a plateau (0 = off)"},
    {"kernel", K_C, O_CHOICE, 0, 0, 0, "\"l1\"", "l1|l2|inv", "DyN kernel"},
    {"q", K_C, O_INT, 1, 64, 0, "1", NULL, "state dimensions"},
    {"keep_dense", K_C, O_LIST, 0, 64, 0, NULL, NULL, "layer names kept dense"},
    {"keep_first_conv", K_C, O_BOOL, 0, 0, 0, "false", NULL, "keep the first conv dense"},
    {"keep_last", K_C, O_BOOL, 0, 0, 0, "false", NULL, "keep the classifier dense"},
    {"min_saving", K_C, O_NUM, 0, 1, 0, "0.25", NULL, "least saving to convert a layer"},
    {"calib", K_C, O_DATASET, 0, 0, 0, NULL, NULL, "calibration data set (train split)"},
    {"calib_n", K_C, O_INT, 1, 100000, 0, "512", NULL, "calibration images"},
    {"eval", K_C, O_DATASET, 0, 0, 0, NULL, NULL, "accuracy before/after on its test split"},
    {"eval_n", K_C, O_INT, 1, 10000000, 0, NULL, NULL, "evaluation images (default all)"},
    {"preprocess_from", K_C, O_DATASET, 0, 0, 0, NULL, NULL,
     "normalization (and labels) for a model without preprocess metadata"},
    /* fine-tuning */
    {"data", K_F, O_DATASET, 0, 0, 0, NULL, NULL, "training data set"},
    {"mode", K_F, O_CHOICE, 0, 0, 0, "\"native\"", "native|unfixed", "fine-tuning mode"},
    {"epochs", K_F, O_INT, 1, 1000, 0, "5", NULL, "epochs / rounds"},
    {"lr", K_F, O_NUM, 0, 1, 1, "0.001", NULL, "Adam learning rate"},
    {"lr_final", K_F, O_NUM, 0, 1, 0, "0.05", NULL, "final lr fraction (cosine)"},
    {"val", K_F, O_INT, 1, 10000000, 0, "5000", NULL, "validation images held out"},
    {"limit", K_F, O_INT, 0, 100000000, 0, "0", NULL, "training images used (0 = all)"},
    {"batch", K_F, O_INT, 1, 4096, 0, "64", NULL, "batch size"},
    {"augment", K_F, O_BOOL, 0, 0, 0, "true", NULL, "random shifts"},
    {"fit_steps", K_F, O_INT, 1, 100000, 0, "300", NULL, "unfixed: refit steps"},
};

#define jerr srv__job_err_set

static const job_opt *opt_find(int kind, const char *name) {
    for (size_t i = 0; i < DYN_ARRAY_LEN(OPTS); i++)
        if ((OPTS[i].kinds & (1 << kind)) && !strcmp(OPTS[i].name, name)) return &OPTS[i];
    return NULL;
}

static int choice_ok(const char *choices, const char *v) {
    size_t n = strlen(v);
    for (const char *p = choices; p;) {
        const char *bar = strchr(p, '|');
        size_t l = bar ? (size_t)(bar - p) : strlen(p);
        if (l == n && !strncmp(p, v, n)) return 1;
        p = bar ? bar + 1 : NULL;
    }
    return 0;
}

/* A number given as JSON or as text (form field, query string). 0 or -1. */
static int as_number(const json_t *v, double *x) {
    if (json_is_number(v)) return *x = json_number_value(v), 0;
    const char *s = json_string_value(v);
    if (!s || !*s) return -1;
    char *end;
    errno = 0;
    *x = strtod(s, &end);
    return errno || *end || !isfinite(*x) ? -1 : 0;
}

static int as_bool(const json_t *v, int *b) {
    if (json_is_boolean(v)) return *b = json_is_true(v), 0;
    const char *s = json_string_value(v);
    if (!s) return -1;
    if (!strcmp(s, "true") || !strcmp(s, "1") || !strcmp(s, "yes")) return *b = 1, 0;
    if (!strcmp(s, "false") || !strcmp(s, "0") || !strcmp(s, "no")) return *b = 0, 0;
    return -1;
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

/* Validates one option value; stores the normalized value in out. 0 or -1 with e. */
static int opt_check(srv_jobs *js, int kind, const job_opt *o, const json_t *v, json_t *out,
                     srv_job_err *e) {
    double x;
    int b;
    dyn_err derr = {0};
    dyn_dataset_spec dspec;
    switch (o->type) {
    case O_NUM:
    case O_INT:
        if (as_number(v, &x) || x < o->lo || x > o->hi || (o->lo_open && x <= o->lo) ||
            (o->type == O_INT && x != floor(x))) {
            jerr(e, 400, "invalid_option", "%s must be %s in %s%g..%g]", o->name,
                 o->type == O_INT ? "an integer" : "a number", o->lo_open ? "(" : "[", o->lo, o->hi);
            return -1;
        }
        json_object_set_new(out, o->name, o->type == O_INT ? json_integer((json_int_t)x) : json_real(x));
        return 0;
    case O_BOOL:
        if (as_bool(v, &b)) {
            jerr(e, 400, "invalid_option", "%s must be true or false", o->name);
            return -1;
        }
        json_object_set_new(out, o->name, json_boolean(b));
        return 0;
    case O_CHOICE:
        if (!json_is_string(v) || !choice_ok(o->choices, json_string_value(v))) {
            jerr(e, 400, "invalid_option", "%s must be one of %s", o->name, o->choices);
            return -1;
        }
        json_object_set(out, o->name, (json_t *)v);
        return 0;
    case O_LIST: {
        json_t *list = json_array();
        if (json_is_string(v)) { /* "a,b" from a form field */
            char buf[4096];
            snprintf(buf, sizeof buf, "%s", json_string_value(v));
            char *save = NULL;
            for (char *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
                json_array_append_new(list, json_string(t));
        } else if (json_is_array(v)) {
            json_array_extend(list, (json_t *)v);
        }
        size_t i;
        json_t *s;
        int bad = !json_is_array(v) && !json_is_string(v);
        json_array_foreach(list, i, s) bad |= !json_is_string(s) || json_string_length(s) == 0 ||
                                             json_string_length(s) > 63;
        if (bad || json_array_size(list) > (size_t)o->hi) {
            json_decref(list);
            jerr(e, 400, "invalid_option", "%s must be a list of at most %g layer names", o->name,
                 o->hi);
            return -1;
        }
        json_object_set_new(out, o->name, list);
        return 0;
    }
    case O_MODEL:
    case O_OUTPUT: {
        const char *name = json_string_value(v);
        if (!name || !srv_repo_name_valid(name)) {
            jerr(e, 400, "invalid_name",
                 "%s: model names are 1-64 characters of A-Z a-z 0-9 _ . - and do not start "
                 "with '.'", o->name);
            return -1;
        }
        json_object_set(out, o->name, (json_t *)v);
        if (o->type == O_OUTPUT) return 0;
        int known = 0;
        srv_model *m = srv_repo_acquire(js->repo, name, 0, &known);
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
    case O_DATASET: {
        const char *name = json_string_value(v);
        int rc = name ? dataset_resolve(js, name, &dspec, &derr) : DYN_EINVAL;
        if (rc) {
            jerr(e, rc == DYN_EIO ? 404 : 400, rc == DYN_EIO ? "dataset_not_found" : "invalid_name",
                 "%s: %s", o->name, name ? derr.msg : "a data set name (string)");
            return -1;
        }
        json_object_set(out, o->name, (json_t *)v);
        return 0;
    }
    }
    return 0;
}

json_t *srv_jobs_spec(srv_jobs *js, int kind, const json_t *in, int has_upload, srv_job_err *e) {
    json_t *out = json_object();
    const char *k;
    json_t *v;
    json_object_foreach((json_t *)in, k, v) {
        const job_opt *o = opt_find(kind, k);
        if (!o) {
            char names[1024] = "";
            for (size_t i = 0; i < DYN_ARRAY_LEN(OPTS); i++)
                if (OPTS[i].kinds & (1 << kind)) {
                    size_t l = strlen(names);
                    snprintf(names + l, sizeof names - l, "%s%s", l ? ", " : "", OPTS[i].name);
                }
            jerr(e, 400, "unknown_option", "unknown option '%.64s' for a %s job (options: %s)", k,
                 srv_job_kind_name(kind), names);
            goto fail;
        }
        if (json_is_null(v)) continue;
        if (opt_check(js, kind, o, v, out, e)) goto fail;
    }
    for (size_t i = 0; i < DYN_ARRAY_LEN(OPTS); i++) { /* defaults */
        const job_opt *o = &OPTS[i];
        if (!(o->kinds & (1 << kind)) || !o->def || json_object_get(out, o->name)) continue;
        json_object_set_new(out, o->name, json_loads(o->def, JSON_DECODE_ANY, NULL));
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
    if (!json_object_get(out, "output") && model) {
        char name[96];
        snprintf(name, sizeof name, "%.60s-%s", model, kind == SRV_JOB_FINETUNE ? "ft" : "dyn");
        json_object_set_new(out, "output", json_string(name));
    }
    const char *output = json_string_value(json_object_get(out, "output"));
    int is_dir = 0;
    if (output && model_exists(js, output, &is_dir) &&
        (is_dir || !json_is_true(json_object_get(out, "overwrite")))) {
        jerr(e, 409, "model_exists",
             is_dir ? "model '%s' is versioned (a directory of versions); choose another output name"
                    : "model '%s' exists; choose another \"output\" or set \"overwrite\": true",
             output);
        goto fail;
    }
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
    if (!rc) rc = dyn_dataset_load(d, split, &m->input, ds, err);
    if (rc) return rc;
    const dyn_shape *in = &m->input;
    int64_t numel = 1;
    for (int i = 0; i < in->ndim; i++) numel *= in->d[i];
    if ((int64_t)ds->c * ds->h * ds->w != numel || (in->ndim == 3 && in->d[0] != ds->c)) {
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

/* The input model: the upload, a snapshot kept for resuming, or the repository's file. */
static dyn_model *input_load(srv_jobs *js, srv_job *j, const char *snapshot, dyn_err *err) {
    char p[1300];
    const json_t *up = json_object_get(j->spec, "upload");
    if (up) {
        snprintf(p, sizeof p, "%s/upload.bin", j->dir);
        const char *fmt = sget(up, "format");
        dyn_model *m = fmt && !strcmp(fmt, "dyn") ? dyn_model_load(p, err) : dyn_onnx_load(p, err);
        if (!m) dyn_err_prefix(err, "the uploaded model");
        return m;
    }
    if (snapshot) {
        snprintf(p, sizeof p, "%s/%s", j->dir, snapshot);
        if (access(p, R_OK) == 0) return dyn_model_load(p, err);
    }
    const char *name = sget(j->spec, "model");
    srv_model *sm = name ? srv_repo_acquire(js->repo, name, 0, NULL) : NULL;
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

static void preprocess_set(dyn_model *m, const char *set) {
    dyn_dataset_spec d;
    dyn_dataset_spec_init(&d, set);
    if (!m->preprocess) m->preprocess = dyn_dataset_preprocess_json(&d, &m->input);
    if (!m->nlabels && dyn_model_outputs(m) == d.nlabels)
        dyn_model_labels_set(m, d.labels, d.nlabels);
}

static int run_conversion(srv_jobs *js, srv_job *j, dyn_err *err) {
    const json_t *s = j->spec;
    dyn_model *m = input_load(js, j, NULL, err), *out = NULL;
    if (!m) return err->code ? err->code : DYN_EIO;
    dyn_convert_opts o = dyn_convert_opts_default();
    o.ratio = nget(s, "ratio", 4);
    if (nget(s, "rel_err", 0) > 0) {
        o.rel_err = nget(s, "rel_err", 0);
        o.ratio = 0;
    }
    int rc = 0;
    if (dyn_fit_mode_parse(sget(s, "fit") ? sget(s, "fit") : "fixed", &o.fit) ||
        dyn_kernel_parse(sget(s, "kernel") ? sget(s, "kernel") : "l1", &o.kernel) ||
        dyn_fit_init_parse(sget(s, "init") ? sget(s, "init") : "svd", &o.fitopt.init))
        rc = dyn_err_set(err, DYN_EINVAL, "bad fit, kernel or init in the job's options");
    o.q = (int)nget(s, "q", 1);
    o.fitopt.steps = (int)nget(s, "steps", 2000);
    o.fitopt.lr = (float)nget(s, "lr", 0.1);
    o.fitopt.restarts = (int)nget(s, "restarts", 1);
    o.fitopt.algo = sget(s, "fit_algo") && strcmp(sget(s, "fit_algo"), "reference") == 0;
    o.fitopt.sample = nget(s, "sample", 1);
    o.fitopt.plateau = nget(s, "plateau", 0);
    o.fitopt.quant = nget(s, "quant", 1e-3);
    o.fitopt.seed = (uint64_t)nget(s, "seed", 1);
    o.keep_first_conv = bget(s, "keep_first_conv");
    o.keep_last = bget(s, "keep_last");
    o.min_saving = nget(s, "min_saving", 0.25);
    const char *keep[64];
    const json_t *kl = json_object_get(s, "keep_dense");
    for (size_t i = 0; i < json_array_size(kl) && o.nkeep < 64; i++)
        if (json_is_string(json_array_get(kl, i))) keep[o.nkeep++] = json_string_value(json_array_get(kl, i));
    o.keep_dense = keep;
    const char *calib = sget(s, "calib"), *eval = sget(s, "eval"), *pp = sget(s, "preprocess_from");
    if (!m->preprocess && (pp || calib || eval)) preprocess_set(m, pp ? pp : calib ? calib : eval);
    dyn_dataset cal = {0}, te = {0};
    dyn_data_view vcal = {0}, vrest = {0}, vte = {0}, vnone = {0};
    dyn_batch_source scal, ste;
    dyn_dataset_spec dsp;
    float mean, sd;
    const uint64_t seed = o.fitopt.seed;
    if (!rc && eval && !j->cancel && !(rc = dataset_load(js, eval, "test", m, &dsp, &te, err))) {
        dyn_dataset_norm(&dsp, m, &mean, &sd);
        int n = (int)nget(s, "eval_n", te.n);
        rc = dyn_data_split(&te, 0, DYN_MIN(n, te.n), seed, mean, sd, &vte, &vnone, err);
        ste = dyn_data_view_source(&vte);
        o.eval = &ste;
    }
    if (!rc && calib && !j->cancel &&
        !(rc = dataset_load(js, calib, "train", m, &dsp, &cal, err))) {
        dyn_dataset_norm(&dsp, m, &mean, &sd);
        int n = DYN_MAX(1, DYN_MIN((int)nget(s, "calib_n", 512), cal.n));
        rc = dyn_data_split(&cal, n, 0, seed, mean, sd, &vrest, &vcal, err);
        scal = dyn_data_view_source(&vcal);
        o.calib = &scal;
        o.calib_n = n;
    }
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
        json_t *r = dyn_convert_report_json(&rep);
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
    dyn_data_view_free(&vrest);
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
} ft_ctx;

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
    if (access(snap, R_OK) != 0) rc = dyn_model_save(m, snap, err); /* atomic: whole or absent */
    dyn_ft_opts o = dyn_ft_opts_default();
    if (!rc && dyn_ft_mode_parse(sget(s, "mode") ? sget(s, "mode") : "native", &o.mode))
        rc = dyn_err_set(err, DYN_EINVAL, "bad mode in the job's options");
    o.epochs = (int)nget(s, "epochs", 5);
    o.batch = (int)nget(s, "batch", 64);
    o.lr = (float)nget(s, "lr", 1e-3);
    o.lr_final_frac = (float)nget(s, "lr_final", 0.05);
    o.augment = !json_is_false(json_object_get(s, "augment"));
    o.seed = (uint64_t)nget(s, "seed", 1);
    o.fit.steps = (int)nget(s, "fit_steps", 300);
    o.fit.quant = nget(s, "quant", 1e-3);
    o.fit.seed = o.seed;
    o.ckpt_dir = ckpt;
    o.resume = access(state, R_OK) == 0; /* an epoch finished before the interruption */
    ft_ctx fc = {js, j, o.mode == DYN_FT_UNFIXED};
    o.progress = ft_progress;
    o.progress_ctx = &fc;
    o.cancel = &j->cancel;
    atomic_store(&j->epochs, o.epochs);
    const char *data = sget(s, "data");
    dyn_dataset tr = {0};
    dyn_data_view vtr = {0}, vva = {0};
    if (!rc && !data) rc = dyn_err_set(err, DYN_EINVAL, "the job has no data set");
    dyn_dataset_spec dsp;
    if (!rc && !(rc = dataset_load(js, data, "train", m, &dsp, &tr, err))) {
        float mean, sd;
        dyn_dataset_norm(&dsp, m, &mean, &sd);
        if (tr.n < 2) rc = dyn_err_set(err, DYN_EINVAL, "data set '%s' has fewer than 2 images", data);
        else rc = dyn_data_split(&tr, DYN_MIN((int)nget(s, "val", 5000), tr.n - 1),
                                 (int)nget(s, "limit", 0), o.seed, mean, sd, &vtr, &vva, err);
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
