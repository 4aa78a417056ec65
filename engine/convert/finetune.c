/* finetune.c — native and unfixed (Algorithm 1) fine-tuning with resumable checkpoints
 * (finetune.h). */
#include <errno.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../cpu/dnnl_conv.h"
#include "../io/file.h"
#include "../io/model_file.h"
#include "finetune.h"

#define STATE_FORMAT "dynd-finetune"

int dyn_ft_mode_parse(const char *s, dyn_ft_mode *m) {
    if (strcmp(s, "native") == 0) *m = DYN_FT_NATIVE;
    else if (strcmp(s, "unfixed") == 0) *m = DYN_FT_UNFIXED;
    else return -1;
    return 0;
}

const char *dyn_ft_mode_name(dyn_ft_mode m) { return m == DYN_FT_UNFIXED ? "unfixed" : "native"; }

dyn_ft_opts dyn_ft_opts_default(void) {
    dyn_ft_opts o = {.mode = DYN_FT_NATIVE, .epochs = 5, .batch = 64, .lr = 1e-3f,
                     .lr_final_frac = 0.05f, .augment = 1, .seed = 1,
                     .fit = dyn_fit_opts_default()};
    o.fit.steps = 300;
    return o;
}

void dyn_ft_result_free(dyn_ft_result *r) {
    free(r->hist);
    memset(r, 0, sizeof *r);
}

/* ---- dense copy --------------------------------------------------------------------------- */

static dyn_layer *densify_layer(const dyn_layer *l, dyn_err *err) {
    int m, n, K;
    if (dyn_layer_fit_shape(l, &m, &n, &K, err)) return NULL;
    json_t *a = l->ops->attrs(l);
    const int lin = strcmp(l->ops->name, "dyn_linear") == 0;
    const int bias = json_is_true(json_object_get(a, "bias")) ||
                     json_integer_value(json_object_get(a, "bias")) != 0;
    json_t *da = lin ? json_pack("{s:i, s:i, s:i}", "in", n, "out", m, "bias", bias)
                     : json_pack("{s:i, s:i, s:i, s:O, s:O, s:O, s:i, s:i}", "in_channels", n,
                                 "out_channels", m, "kernel", K, "stride",
                                 json_object_get(a, "stride"), "padding",
                                 json_object_get(a, "padding"), "dilation",
                                 json_object_get(a, "dilation"), "groups", 1, "bias", bias);
    json_decref(a);
    if (!da) {
        dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
        return NULL;
    }
    dyn_layer *d = dyn_layer_create(lin ? "linear" : "conv2d", l->name, da, err);
    json_decref(da);
    if (!d) return NULL;
    dyn_param *w = dyn_layer_param(d, "weight");
    if (dyn_layer_reconstruct(l, w->value.data, err)) {
        dyn_layer_free(d);
        return NULL;
    }
    if (bias)
        dyn_tensor_copy(&dyn_layer_param(d, "bias")->value,
                        &dyn_layer_param((dyn_layer *)l, "bias")->value);
    if (d->ops->prepare && d->ops->prepare(d, err)) {
        dyn_layer_free(d);
        return NULL;
    }
    return d;
}

static int is_dyn_layer(const dyn_layer *l) {
    return strcmp(l->ops->name, "dyn_linear") == 0 || strcmp(l->ops->name, "dyn_conv2d") == 0;
}

dyn_model *dyn_model_densify(const dyn_model *m, dyn_err *err) {
    dyn_model *d = dyn_model_new(&m->input);
    if (!d) {
        dyn_err_set(err, DYN_ENOMEM, "out of memory");
        return NULL;
    }
    if (m->nlabels) dyn_model_labels_set(d, (const char *const *)m->labels, m->nlabels);
    if (m->preprocess) d->preprocess = json_deep_copy(m->preprocess);
    if (m->info) d->info = json_deep_copy(m->info);
    for (int k = 0; k < m->nnodes; k++) {
        const dyn_layer *l = m->nodes[k].layer;
        dyn_layer *c = is_dyn_layer(l) ? densify_layer(l, err) : dyn_layer_clone(l, err);
        if (!c || dyn_model_add(d, c, m->nodes[k].inputs, m->nodes[k].ninputs, err) < 0) {
            dyn_model_free(d);
            return NULL;
        }
    }
    return d;
}

/* ---- snapshots of parameter values -------------------------------------------------------- */

static int64_t model_floats(const dyn_model *m) {
    int64_t t = 0;
    for (int k = 0; k < m->nnodes; k++) t += dyn_layer_param_floats(m->nodes[k].layer);
    return t;
}

static void snap_save(const dyn_model *m, float *buf) {
    for (int k = 0; k < m->nnodes; k++) {
        const dyn_layer *l = m->nodes[k].layer;
        for (int i = 0; i < l->nparams; i++) {
            const int64_t n = dyn_tensor_numel(&l->params[i].value);
            memcpy(buf, l->params[i].value.data, (size_t)n * sizeof(float));
            buf += n;
        }
    }
}

static int snap_restore(dyn_model *m, const float *buf, dyn_err *err) {
    for (int k = 0; k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer;
        for (int i = 0; i < l->nparams; i++) {
            const int64_t n = dyn_tensor_numel(&l->params[i].value);
            memcpy(l->params[i].value.data, buf, (size_t)n * sizeof(float));
            buf += n;
        }
    }
    return dyn_model_prepare(m, err);
}

/* Copies the parameter values of `src` into `dst` (same structure: checked). */
static int copy_params(dyn_model *dst, const dyn_model *src, dyn_err *err) {
    if (dst->nnodes != src->nnodes)
        return dyn_err_set(err, DYN_EINVAL, "checkpoint: %d layers where the model has %d",
                           src->nnodes, dst->nnodes);
    for (int k = 0; k < dst->nnodes; k++) {
        dyn_layer *a = dst->nodes[k].layer;
        const dyn_layer *b = src->nodes[k].layer;
        if (a->nparams != b->nparams || strcmp(a->ops->name, b->ops->name) != 0)
            return dyn_err_set(err, DYN_EINVAL, "checkpoint: layer %d ('%s') does not match", k,
                               a->name);
        for (int i = 0; i < a->nparams; i++) {
            if (dyn_tensor_numel(&a->params[i].value) != dyn_tensor_numel(&b->params[i].value))
                return dyn_err_set(err, DYN_EINVAL, "checkpoint: parameter '%s.%s' differs in size",
                                   a->name, a->params[i].name);
            dyn_tensor_copy(&a->params[i].value, &b->params[i].value);
        }
    }
    return dyn_model_prepare(dst, err);
}

/* ---- checkpoint files --------------------------------------------------------------------- */

static void path_in(char *buf, size_t n, const char *dir, const char *name) {
    snprintf(buf, n, "%s/%s", dir, name);
}

/* Swaps every parameter's value with its first (which = 0) or second (1) Adam moment where
 * that moment exists; returns how many were swapped. Applying it twice restores m. */
static int swap_moments(dyn_model *m, int which) {
    int swapped = 0;
    for (int k = 0; k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer;
        for (int i = 0; i < l->nparams; i++) {
            dyn_param *pr = &l->params[i];
            dyn_tensor *mt = which ? &pr->v : &pr->m;
            if (!mt->data) continue;
            dyn_tensor t = pr->value;
            pr->value = *mt;
            *mt = t;
            swapped++;
        }
    }
    return swapped;
}

/* Saves the model, then (when present) its Adam moments as two more model files: the
 * moments take the place of the values of the parameters that have them. */
static int save_with_moments(dyn_model *m, const char *dir, const char *stem, dyn_err *err) {
    char p[1200], name[200];
    snprintf(name, sizeof name, "%s.dyn", stem);
    path_in(p, sizeof p, dir, name);
    int rc = dyn_model_save(m, p, err);
    for (int which = 0; which < 2 && !rc; which++) {
        if (!swap_moments(m, which)) break;
        snprintf(name, sizeof name, "%s.adam_%c.dyn", stem, which ? 'v' : 'm');
        path_in(p, sizeof p, dir, name);
        rc = dyn_model_save(m, p, err);
        swap_moments(m, which);
    }
    return rc;
}

/* Loads stem.dyn into m's parameters and stem.adam_{m,v}.dyn (when present) into its moments. */
static int load_with_moments(dyn_model *m, const char *dir, const char *stem, dyn_err *err) {
    char p[1200], name[200];
    snprintf(name, sizeof name, "%s.dyn", stem);
    path_in(p, sizeof p, dir, name);
    dyn_model *f = dyn_model_load(p, err);
    if (!f) return err ? err->code : DYN_EIO;
    int rc = copy_params(m, f, err);
    dyn_model_free(f);
    for (int which = 0; which < 2 && !rc; which++) {
        snprintf(name, sizeof name, "%s.adam_%c.dyn", stem, which ? 'v' : 'm');
        path_in(p, sizeof p, dir, name);
        if (access(p, R_OK) != 0) continue;
        if (!(f = dyn_model_load(p, err))) return err ? err->code : DYN_EIO;
        for (int k = 0; k < m->nnodes && !rc; k++) {
            dyn_layer *l = m->nodes[k].layer;
            for (int i = 0; i < l->nparams && !rc; i++) {
                dyn_param *pr = &l->params[i];
                if (!pr->trainable) continue;
                dyn_tensor *mt = which ? &pr->v : &pr->m;
                if (!mt->data) rc = dyn_tensor_init(mt, pr->value.ndim, pr->value.shape, err);
                if (!rc) dyn_tensor_copy(mt, &f->nodes[k].layer->params[i].value);
            }
        }
        dyn_model_free(f);
    }
    return rc;
}

static void remove_stem(const char *dir, const char *stem) {
    static const char *sfx[] = {".dyn", ".adam_m.dyn", ".adam_v.dyn"};
    for (size_t i = 0; i < DYN_ARRAY_LEN(sfx); i++) {
        char p[1200], name[200];
        snprintf(name, sizeof name, "%s%s", stem, sfx[i]);
        path_in(p, sizeof p, dir, name);
        unlink(p);
    }
}

json_t *dyn_ft_result_json(const dyn_ft_result *r) {
    json_t *h = json_array();
    for (int i = 0; i < r->nhist; i++) {
        const dyn_ft_epoch *e = &r->hist[i];
        json_array_append_new(
            h, json_pack("{s:i, s:f, s:f, s:f, s:o, s:f}", "epoch", e->epoch, "train_loss",
                         (double)e->train_loss, "train_acc", (double)e->train_acc, "val_acc",
                         (double)e->val_acc, "fit_rel_err",
                         e->fit_rel_err < 0 ? json_null() : json_real(e->fit_rel_err),
                         "seconds", e->seconds));
    }
    return json_pack("{s:f, s:i, s:f, s:i, s:f, s:o}", "best_val_acc", (double)r->best_val_acc,
                     "best_epoch", r->best_epoch, "start_val_acc", (double)r->start_val_acc,
                     "resumed_from", r->resumed_from, "seconds", r->seconds, "history", h);
}

typedef struct ft_state {
    int done; /* epochs finished */
    int64_t t, dense_t;
} ft_state;

static json_t *state_json(const dyn_ft_opts *o, const ft_state *s, const dyn_ft_result *r,
                          int64_t nfloats) {
    json_t *j = json_pack("{s:s, s:i, s:s, s:i, s:i, s:I, s:I, s:I, s:f, s:f, s:i, s:I, s:i, s:f}",
                          "format", STATE_FORMAT, "version", 1, "mode", dyn_ft_mode_name(o->mode),
                          "epoch", s->done, "epochs", o->epochs, "optim_t", (json_int_t)s->t,
                          "dense_optim_t", (json_int_t)s->dense_t, "seed",
                          (json_int_t)o->seed, "lr", (double)o->lr, "lr_final_frac",
                          (double)o->lr_final_frac, "batch", o->batch, "model_floats",
                          (json_int_t)nfloats, "fit_steps", o->fit.steps, "quant", o->fit.quant);
    json_object_set_new(j, "result", dyn_ft_result_json(r));
    return j;
}

static int hist_push(dyn_ft_result *r, const dyn_ft_epoch *e) {
    dyn_ft_epoch *h = realloc(r->hist, (size_t)(r->nhist + 1) * sizeof *h);
    if (!h) return -1;
    r->hist = h;
    r->hist[r->nhist++] = *e;
    return 0;
}

/* Reads state.json; checks it belongs to this run; restores s and the result's history. */
static int state_load(const dyn_ft_opts *o, int64_t nfloats, ft_state *s, dyn_ft_result *r,
                      dyn_err *err) {
    char p[1200];
    path_in(p, sizeof p, o->ckpt_dir, "state.json");
    json_error_t je;
    json_t *j = json_load_file(p, 0, &je);
    if (!j) return dyn_err_set(err, DYN_EIO, "%s: %s (nothing to resume?)", p, je.text);
    const char *fmt = json_string_value(json_object_get(j, "format"));
    const char *mode = json_string_value(json_object_get(j, "mode"));
    int rc = 0;
    if (!fmt || strcmp(fmt, STATE_FORMAT) != 0)
        rc = dyn_err_set(err, DYN_EFORMAT, "%s: not a fine-tuning state", p);
    else if (!mode || strcmp(mode, dyn_ft_mode_name(o->mode)) != 0)
        rc = dyn_err_set(err, DYN_EINVAL, "%s: the checkpoint is of mode '%s', not '%s'", p,
                         mode ? mode : "?", dyn_ft_mode_name(o->mode));
    else if (json_integer_value(json_object_get(j, "model_floats")) != nfloats)
        rc = dyn_err_set(err, DYN_EINVAL, "%s: the checkpoint belongs to another model", p);
    else if ((uint64_t)json_integer_value(json_object_get(j, "seed")) != o->seed)
        rc = dyn_err_set(err, DYN_EINVAL, "%s: the checkpoint was made with seed %lld; resume "
                                          "with the same --seed",
                         p, (long long)json_integer_value(json_object_get(j, "seed")));
    if (!rc) {
        s->done = (int)json_integer_value(json_object_get(j, "epoch"));
        s->t = json_integer_value(json_object_get(j, "optim_t"));
        s->dense_t = json_integer_value(json_object_get(j, "dense_optim_t"));
        json_t *res = json_object_get(j, "result");
        r->best_val_acc = (float)json_number_value(json_object_get(res, "best_val_acc"));
        r->best_epoch = (int)json_integer_value(json_object_get(res, "best_epoch"));
        r->start_val_acc = (float)json_number_value(json_object_get(res, "start_val_acc"));
        size_t i;
        json_t *e;
        json_array_foreach(json_object_get(res, "history"), i, e) {
            dyn_ft_epoch h = {.epoch = (int)json_integer_value(json_object_get(e, "epoch")),
                              .train_loss = (float)json_number_value(json_object_get(e, "train_loss")),
                              .train_acc = (float)json_number_value(json_object_get(e, "train_acc")),
                              .val_acc = (float)json_number_value(json_object_get(e, "val_acc")),
                              .fit_rel_err = json_is_number(json_object_get(e, "fit_rel_err"))
                                                 ? json_number_value(json_object_get(e, "fit_rel_err"))
                                                 : -1,
                              .seconds = json_number_value(json_object_get(e, "seconds"))};
            if (hist_push(r, &h)) rc = dyn_err_set(err, DYN_ENOMEM, "out of memory");
        }
        if (s->done < 0 || s->t < 0 || s->dense_t < 0)
            rc = dyn_err_set(err, DYN_EFORMAT, "%s: bad epoch or step counts", p);
    }
    json_decref(j);
    return rc;
}

/* ---- the loop ----------------------------------------------------------------------------- */

typedef struct ft_ctx {
    const dyn_ft_opts *o;
    int epoch;
    float best;
} ft_ctx;

static void train_progress(void *ctx, const dyn_progress *p) {
    ft_ctx *c = ctx;
    dyn_ft_progress fp = {.phase = "train", .epoch = c->epoch, .epochs = c->o->epochs,
                          .train = *p, .best_val_acc = c->best};
    fp.train.epoch = c->epoch;
    fp.train.epochs = c->o->epochs;
    c->o->progress(c->o->progress_ctx, &fp);
}

static float epoch_lr(const dyn_ft_opts *o, int e) {
    const double frac = o->epochs > 1 ? (double)(e - 1) / (o->epochs - 1) : 0.0;
    return (float)(o->lr * (o->lr_final_frac + (1 - o->lr_final_frac) * 0.5 * (1 + cos(M_PI * frac))));
}

/* One epoch of dyn_train on model t (optimizer step count *t_steps, updated). */
static int train_epoch(dyn_model *t, const dyn_batch_source *train, const dyn_ft_opts *o, int e,
                       int64_t *t_steps, ft_ctx *ctx, dyn_train_result *tr, dyn_err *err) {
    dyn_train_cfg cfg = dyn_train_cfg_default();
    cfg.epochs = 1;
    cfg.batch = o->batch;
    cfg.optim = dyn_optim_default(DYN_OPT_ADAM, epoch_lr(o, e));
    cfg.optim.t = *t_steps;
    cfg.lr_final_frac = 1.0f;
    cfg.seed = o->seed * 1000003ULL + (uint64_t)e;
    cfg.augment = o->augment;
    cfg.keep_best = 0;
    cfg.cancel = o->cancel;
    cfg.targets = o->targets;
    cfg.targets_ctx = o->targets_ctx;
    cfg.kd_temp = o->kd_temp;
    cfg.backend = o->backend;
    cfg.device = o->device;
    if (o->progress) {
        cfg.progress = train_progress;
        cfg.progress_ctx = ctx;
    }
    int rc = dyn_train(t, train, NULL, &cfg, tr, err);
    *t_steps += tr->steps;
    return rc;
}

/* Unfixed: refit every DyN layer of m to the dense copy d, write the reconstruction back into
 * d, copy the other parameters d -> m. Returns 0 or an error; *mean_err = mean rel. error. */
static int refit_round(dyn_model *m, dyn_model *d, const dyn_ft_opts *o, int e, ft_ctx *ctx,
                       double *mean_err, dyn_err *err) {
    int nd = 0, done = 0;
    double sum = 0;
    for (int k = 0; k < m->nnodes; k++) nd += is_dyn_layer(m->nodes[k].layer);
    for (int k = 0; k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer, *dl = d->nodes[k].layer;
        if (!is_dyn_layer(l)) {
            for (int i = 0; i < l->nparams; i++)
                dyn_tensor_copy(&l->params[i].value, &dl->params[i].value);
            if (l->ops->prepare && l->ops->prepare(l, err)) return err ? err->code : DYN_ENOMEM;
            continue;
        }
        dyn_param *w = dyn_layer_param(dl, "weight"), *b = dyn_layer_param(dl, "bias");
        if (b) dyn_tensor_copy(&dyn_layer_param(l, "bias")->value, &b->value);
        dyn_fit_opts fo = o->fit;
        fo.cancel = o->cancel;
        fo.seed = o->fit.seed + (uint64_t)e * 7919 + (uint64_t)k;
        fo.progress = NULL;
        dyn_fit_result fr;
        int rc = dyn_fit_layer(l, w->value.data, NULL, DYN_FIT_FIXED, 1, &fo, &fr, err);
        if (rc) return rc;
        if ((rc = dyn_layer_reconstruct(l, w->value.data, err))) return rc;
        if (dl->ops->prepare && (rc = dl->ops->prepare(dl, err))) return rc;
        sum += fr.rel_err;
        done++;
        if (o->progress) {
            dyn_ft_progress fp = {.phase = "fit", .epoch = e, .epochs = o->epochs,
                                  .fit_frac = (double)done / nd, .best_val_acc = ctx->best};
            o->progress(o->progress_ctx, &fp);
        }
    }
    *mean_err = done ? sum / done : -1;
    return 0;
}

static int dyn_finetune_impl(dyn_model *m, const dyn_batch_source *train, const dyn_batch_source *val,
                 const dyn_ft_opts *o, dyn_ft_result *res, dyn_err *err) {
    memset(res, 0, sizeof *res);
    res->best_val_acc = -1;
    const double t0 = dyn_now();
    if (o->epochs < 1 || o->batch < 1 || !(o->lr > 0) || !val || val->n < 1 || !train ||
        train->n < 1)
        return dyn_err_set(err, DYN_EINVAL, "fine-tuning needs epochs >= 1, batch >= 1, lr > 0, "
                                            "training samples and a validation split");
    if (o->resume && !o->ckpt_dir)
        return dyn_err_set(err, DYN_EINVAL, "resume needs a checkpoint directory");
    int ndyn = 0;
    for (int k = 0; k < m->nnodes; k++) ndyn += is_dyn_layer(m->nodes[k].layer);
    if (o->mode == DYN_FT_UNFIXED && ndyn == 0)
        return dyn_err_set(err, DYN_EINVAL, "unfixed fine-tuning needs a DyN model (convert first)");
    if (o->ckpt_dir && mkdir(o->ckpt_dir, 0755) != 0 && errno != EEXIST)
        return dyn_err_set(err, DYN_EIO, "%s: %s", o->ckpt_dir, strerror(errno));
    const int64_t nf = model_floats(m);
    float *best = malloc((size_t)DYN_MAX(nf, 1) * sizeof(float));
    if (!best) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    dyn_model *d = NULL;
    ft_state s = {0};
    ft_ctx ctx = {.o = o, .best = -1};
    int rc = 0;
    char stem[64], prev[64] = "";
    if (o->mode == DYN_FT_UNFIXED && !(d = dyn_model_densify(m, err))) {
        rc = err ? err->code : DYN_ENOMEM;
        goto done;
    }
    if (o->resume) {
        if ((rc = state_load(o, nf, &s, res, err))) goto done;
        char p[1200];
        path_in(p, sizeof p, o->ckpt_dir, "best.dyn");
        dyn_model *b = dyn_model_load(p, err);
        if (!b || (rc = copy_params(m, b, err))) {
            if (!rc) rc = err ? err->code : DYN_EIO;
            dyn_model_free(b);
            goto done;
        }
        dyn_model_free(b);
        snap_save(m, best);
        snprintf(stem, sizeof stem, "cur-%d", s.done);
        if ((rc = load_with_moments(m, o->ckpt_dir, stem, err))) goto done;
        if (d) {
            snprintf(stem, sizeof stem, "dense-%d", s.done);
            if ((rc = load_with_moments(d, o->ckpt_dir, stem, err))) goto done;
        }
        snprintf(prev, sizeof prev, "%d", s.done);
        res->resumed_from = s.done;
        ctx.best = res->best_val_acc;
    } else {
        /* native: states to the balanced range first (W unchanged; after a conversion they sit
         * at unit spread for the δ grid, where Adam would move λ far faster than the states) */
        for (int k = 0; k < m->nnodes && o->mode == DYN_FT_NATIVE; k++)
            if (is_dyn_layer(m->nodes[k].layer) &&
                (rc = dyn_layer_rescale(m->nodes[k].layer, err)))
                goto done;
        double acc = dyn_evaluate(m, val, 256, NULL, err);
        if (acc < 0) {
            rc = err ? err->code : DYN_EINVAL;
            goto done;
        }
        res->start_val_acc = res->best_val_acc = (float)acc;
        ctx.best = res->best_val_acc;
        snap_save(m, best);
        if (o->ckpt_dir) {
            char p[1200];
            path_in(p, sizeof p, o->ckpt_dir, "best.dyn");
            if ((rc = dyn_model_save(m, p, err))) goto done;
        }
    }
    for (int e = s.done + 1; e <= o->epochs; e++) {
        const double te = dyn_now();
        ctx.epoch = e;
        dyn_train_result tr;
        dyn_ft_epoch h = {.epoch = e, .fit_rel_err = -1};
        if (o->mode == DYN_FT_NATIVE) {
            rc = train_epoch(m, train, o, e, &s.t, &ctx, &tr, err);
        } else {
            rc = train_epoch(d, train, o, e, &s.dense_t, &ctx, &tr, err);
            if (!rc) rc = refit_round(m, d, o, e, &ctx, &h.fit_rel_err, err);
        }
        if (rc) {
            if (rc == DYN_ECANCEL)
                dyn_err_set(err, DYN_ECANCEL,
                            "fine-tuning cancelled in epoch %d; %d epoch(s) finished%s", e, e - 1,
                            o->ckpt_dir ? " (resume from the checkpoint)" : "");
            goto done;
        }
        double acc = dyn_evaluate(m, val, 256, NULL, err);
        if (acc < 0) {
            rc = err ? err->code : DYN_EINVAL;
            goto done;
        }
        h.train_loss = tr.last_loss;
        h.train_acc = tr.last_train_acc;
        h.val_acc = (float)acc;
        h.seconds = dyn_now() - te;
        if (hist_push(res, &h)) {
            rc = dyn_err_set(err, DYN_ENOMEM, "out of memory");
            goto done;
        }
        const int improved = acc > res->best_val_acc;
        if (improved) {
            res->best_val_acc = (float)acc;
            res->best_epoch = e;
            ctx.best = (float)acc;
            snap_save(m, best);
        }
        s.done = e;
        if (o->progress) {
            dyn_ft_progress fp = {.phase = "evaluate", .epoch = e, .epochs = o->epochs,
                                  .best_val_acc = res->best_val_acc};
            fp.train.epoch = e;
            fp.train.epochs = o->epochs;
            fp.train.loss = h.train_loss;
            fp.train.acc = h.train_acc;
            fp.train.val_acc = h.val_acc;
            fp.train.epoch_end = 1;
            fp.train.elapsed_s = dyn_now() - t0;
            o->progress(o->progress_ctx, &fp);
        }
        if (o->ckpt_dir) {
            char p[1200];
            snprintf(stem, sizeof stem, "cur-%d", e);
            if ((rc = save_with_moments(m, o->ckpt_dir, stem, err))) goto done;
            if (d) {
                snprintf(stem, sizeof stem, "dense-%d", e);
                if ((rc = save_with_moments(d, o->ckpt_dir, stem, err))) goto done;
            }
            path_in(p, sizeof p, o->ckpt_dir, "best.dyn");
            if (improved && (rc = dyn_model_save(m, p, err))) goto done;
            res->seconds = dyn_now() - t0;
            json_t *js = state_json(o, &s, res, nf);
            char *txt = js ? json_dumps(js, JSON_INDENT(1)) : NULL;
            json_decref(js);
            path_in(p, sizeof p, o->ckpt_dir, "state.json");
            rc = txt ? dyn_file_write_atomic(p, txt, strlen(txt), 0644, err)
                     : dyn_err_set(err, DYN_ENOMEM, "out of memory");
            free(txt);
            if (rc) goto done;
            if (prev[0]) { /* the previous epoch's files are no longer referenced */
                snprintf(stem, sizeof stem, "cur-%s", prev);
                remove_stem(o->ckpt_dir, stem);
                snprintf(stem, sizeof stem, "dense-%s", prev);
                remove_stem(o->ckpt_dir, stem);
            }
            snprintf(prev, sizeof prev, "%d", e);
            if (o->checkpointed) o->checkpointed(o->checkpointed_ctx, o->ckpt_dir, e);
        }
    }
done:
    if (rc == 0 || rc == DYN_ECANCEL) {
        int rc2 = snap_restore(m, best, err);
        if (rc2 && !rc) rc = rc2;
    }
    res->seconds = dyn_now() - t0;
    dyn_model_free(d);
    free(best);
    return rc;
}

/* Reproducible: one dense implementation, and DyN layers deciding by the cost model alone,
 * for every forward of the run (cpu/dnnl_conv.h; `auto` would choose by timing, so validation
 * accuracies could differ by rounding between two runs, or a run and its resume). */
int dyn_finetune(dyn_model *m, const dyn_batch_source *train, const dyn_batch_source *val,
                 const dyn_ft_opts *o, dyn_ft_result *res, dyn_err *err) {
    const int saved = dyn_conv_impl_set_thread(DYN_CONV_IM2COL);
    const int rc = dyn_finetune_impl(m, train, val, o, res, err);
    dyn_conv_impl_set_thread(saved);
    return rc;
}
