/* convert.c — converting a whole dense model into DyN (convert.h).
 *
 * 1. Plan: each linear / conv2d node is a candidate unless kept dense (by name, first conv,
 *    unsupported shape); its H comes from the ratio (dyn_convert_budget_H with the chosen q),
 *    or, with a target error, from a bisection over H with short fits. A layer whose DyN form
 *    would not save at least `min_saving` of its floats stays dense.
 * 2. Calibrate (when calibration inputs are given): per candidate layer C = X Xᵀ / N of its
 *    inputs (im2col patches for conv) and their mean; layers whose C would exceed 8192² are
 *    fitted data-free (reported). Fixed fit: one pass of the dense model (C only reports the
 *    output error). Activation fit, sequential (default): right before fitting layer k, one
 *    pass of the dense model and of the model converted so far (nodes 0..k−1) side by side
 *    gives C̃ (converted inputs X̃), Cx = X X̃ᵀ and Cxx, and the fit minimizes ‖Ŵ X̃ − W X‖²:
 *    each layer also absorbs what the layers before it got wrong. Then the bias is corrected
 *    so the mean output matches: b −= Ŵ x̃̄ − W x̄.
 * 3. Fit each candidate (fit.c), copy the bias, copy every other layer as it is.
 * 4. Measure: accuracy before / after on labelled data, logits' relative error on the
 *    calibration inputs, stored floats, MACs and entropy from the layers' stats, and the SVD
 *    baseline at equal floats per layer.
 */
#include <math.h>
#include <string.h>

#include <cblas.h>

#include "../cpu/im2col.h"
#include "baseline.h"
#include "convert.h"

#define COV_MAX_DIM 8192

dyn_convert_opts dyn_convert_opts_default(void) {
    dyn_convert_opts o = {.ratio = 4.0, .q = 1, .kernel = DYN_KERNEL_L1, .exec = "auto",
                          .fit = DYN_FIT_FIXED, .fitopt = dyn_fit_opts_default(),
                          .min_saving = 0.25, .batch = 64, .sequential = 1, .bias_correct = 1};
    return o;
}

dyn_layer *dyn_layer_clone(const dyn_layer *l, dyn_err *err) {
    json_t *a = l->ops->attrs(l);
    if (!a) {
        dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
        return NULL;
    }
    dyn_layer *c = dyn_layer_create(l->ops->name, l->name, a, err);
    json_decref(a);
    if (!c) return NULL;
    DYN_ASSERT(c->nparams == l->nparams);
    for (int i = 0; i < l->nparams; i++) {
        DYN_ASSERT(dyn_tensor_numel(&c->params[i].value) == dyn_tensor_numel(&l->params[i].value));
        memcpy(c->params[i].value.data, l->params[i].value.data,
               (size_t)dyn_tensor_numel(&l->params[i].value) * sizeof(float));
    }
    if (c->ops->prepare && c->ops->prepare(c, err)) {
        dyn_layer_free(c);
        return NULL;
    }
    return c;
}

float *dyn_model_logits(dyn_model *m, const dyn_batch_source *src, int n, int batch,
                        dyn_err *err) {
    n = DYN_MIN(n, src->n);
    if (n < 1 || batch < 1) {
        dyn_err_set(err, DYN_EINVAL, "no samples to run");
        return NULL;
    }
    batch = DYN_MIN(batch, n);
    const int64_t C = dyn_model_outputs(m);
    float *out = malloc((size_t)n * C * sizeof(float));
    int *idx = malloc((size_t)batch * sizeof(int)), *y = malloc((size_t)batch * sizeof(int));
    dyn_exec *e = out && idx && y ? dyn_exec_new(m, batch, 0, err) : NULL;
    if (!e) {
        if (!out || !idx || !y) dyn_err_set(err, DYN_ENOMEM, "out of memory");
        free(out);
        out = NULL;
    } else {
        for (int s = 0; s < n; s += batch) {
            const int cnt = DYN_MIN(batch, n - s);
            for (int i = 0; i < cnt; i++) idx[i] = s + i;
            src->fill(src->ctx, idx, cnt, e->input.data, y, NULL);
            const dyn_tensor *o = dyn_exec_forward(e, e->input.data, cnt);
            memcpy(out + (int64_t)s * C, o->data, (size_t)cnt * C * sizeof(float));
        }
    }
    dyn_exec_free(e);
    free(idx);
    free(y);
    return out;
}

/* ---- planning ----------------------------------------------------------------------------- */

typedef struct cand {
    int node, m, n, K, H;
    int stride, pad, dil, bias;
    float *w;   /* [m][nK²] (borrowed from the dense layer) */
    int stats;  /* the layer gets calibration statistics (nK² small enough) */
    /* calibration statistics (owned; NULL until computed): Cxx = X Xᵀ/N of the dense model's
     * inputs; sequential mode also C̃ = X̃ X̃ᵀ/N of the partly converted model's inputs and
     * Cx = X X̃ᵀ/N; the means of X and X̃ (bias correction). */
    float *cxx, *ctt, *cx;
    double *xm, *xtm;
    int64_t count;
} cand;

static void cand_stats_free(cand *c) {
    dyn_free(c->cxx);
    dyn_free(c->ctt);
    dyn_free(c->cx);
    free(c->xm);
    free(c->xtm);
    c->cxx = c->ctt = c->cx = NULL;
    c->xm = c->xtm = NULL;
    c->count = 0;
}

static int cand_stats_alloc(cand *c, int seq, dyn_err *err) {
    const int64_t nk = (int64_t)c->n * c->K * c->K;
    const size_t b = (size_t)(nk * nk) * sizeof(float);
    c->cxx = dyn_alloc_zero(b);
    c->xm = calloc((size_t)nk, sizeof(double));
    c->xtm = calloc((size_t)nk, sizeof(double));
    if (seq) {
        c->ctt = dyn_alloc_zero(b);
        c->cx = dyn_alloc_zero(b);
    }
    if (!c->cxx || !c->xm || !c->xtm || (seq && (!c->ctt || !c->cx))) {
        cand_stats_free(c);
        return dyn_err_set(err, DYN_ENOMEM, "out of memory for the %lld² input covariances",
                           (long long)nk);
    }
    return 0;
}

static int name_listed(const dyn_convert_opts *o, const char *name) {
    for (int i = 0; i < o->nkeep; i++)
        if (o->keep_dense && o->keep_dense[i] && strcmp(o->keep_dense[i], name) == 0) return 1;
    return 0;
}

static int attr_get(const dyn_layer *l, const char *key, int def) {
    json_t *a = l->ops->attrs(l);
    json_t *v = a ? json_object_get(a, key) : NULL;
    char kh[40];
    if (!v && a) {
        snprintf(kh, sizeof kh, "%s_h", key);
        v = json_object_get(a, kh);
    }
    int r = json_is_integer(v) ? (int)json_integer_value(v) : def;
    json_decref(a);
    return r;
}

/* ---- calibration ---------------------------------------------------------------------------- */

/* Rows of a layer's inputs as a [rows][nk] matrix view: the activation itself for a linear
 * layer, the transposed im2col patches ([nk][rows], returned through *trans) for a conv. */
static const float *layer_rows(const cand *cd, const dyn_tensor *x, int cnt, float **buf,
                               size_t *cap, int *rows, int *trans, dyn_err *err) {
    if (cd->K == 1 && x->ndim == 2) {
        *rows = cnt;
        *trans = 0;
        return x->data;
    }
    dyn_conv_geom g = {.N = cnt, .C = (int)x->shape[1], .H = (int)x->shape[2],
                       .W = (int)x->shape[3], .KH = cd->K, .KW = cd->K, .SH = cd->stride,
                       .SW = cd->stride, .PH = cd->pad, .PW = cd->pad, .DH = cd->dil,
                       .DW = cd->dil};
    DYN_ASSERT(x->ndim == 4 && dyn_conv_geom_out(&g) == 0);
    const size_t nk = (size_t)cd->n * cd->K * cd->K, need = nk * cnt * g.OH * g.OW;
    if (need > *cap) {
        dyn_free(*buf);
        *buf = dyn_alloc(need * sizeof(float));
        *cap = *buf ? need : 0;
        if (!*buf) {
            dyn_err_set(err, DYN_ENOMEM, "calibration: out of memory (im2col)");
            return NULL;
        }
    }
    dyn_im2col(&g, x->data, *buf);
    *rows = cnt * g.OH * g.OW;
    *trans = 1;
    return *buf;
}

/* C += Aᵀ B for row matrices A, B ([rows][nk], or [nk][rows] when trans). */
static void acc_cross(float *C, const float *A, const float *B, int nk, int rows, int trans) {
    if (A == B)
        cblas_ssyrk(CblasRowMajor, CblasUpper, trans ? CblasNoTrans : CblasTrans, nk, rows, 1.0f,
                    A, trans ? rows : nk, 1.0f, C, nk);
    else
        cblas_sgemm(CblasRowMajor, trans ? CblasNoTrans : CblasTrans, trans ? CblasTrans : CblasNoTrans,
                    nk, nk, rows, 1.0f, A, trans ? rows : nk, B, trans ? rows : nk, 1.0f, C, nk);
}

static void acc_mean(double *mu, const float *A, int nk, int rows, int trans) {
    for (int i = 0; i < nk; i++) {
        double s = 0;
        for (int r = 0; r < rows; r++) s += trans ? A[(int64_t)i * rows + r] : A[(int64_t)r * nk + i];
        mu[i] += s;
    }
}

/* One pass over the calibration inputs accumulating, for every candidate with statistics
 * buffers, Cxx and the mean of the dense model's inputs, and with `partial` (the converted
 * model so far: its node k computes what the dense node k does) C̃, Cx and the mean of its
 * inputs. Then normalizes by the row count and fills the lower triangles of the symmetric
 * ones. */
static int calib_pass(dyn_model *dense, dyn_model *partial, cand *cs, int nc,
                      const dyn_convert_opts *o, void (*report)(void *, const char *, int, double),
                      void *rctx, dyn_err *err) {
    const int n = DYN_MIN(o->calib_n > 0 ? o->calib_n : o->calib->n, o->calib->n);
    const int B = DYN_MIN(o->batch, n);
    dyn_exec *e = dyn_exec_new(dense, B, 0, err), *ep = NULL;
    if (!e) return err ? err->code : DYN_ENOMEM;
    if (partial && !(ep = dyn_exec_new(partial, B, 0, err))) {
        dyn_exec_free(e);
        return err ? err->code : DYN_ENOMEM;
    }
    int *idx = malloc((size_t)B * sizeof(int)), *y = malloc((size_t)B * sizeof(int));
    float *cols = NULL, *cols2 = NULL;
    size_t cap = 0, cap2 = 0;
    int rc = 0;
    if (!idx || !y) rc = dyn_err_set(err, DYN_ENOMEM, "calibration: out of memory");
    for (int s = 0; s < n && !rc; s += B) {
        if (o->cancel && *o->cancel) {
            rc = dyn_err_set(err, DYN_ECANCEL, "conversion cancelled during calibration");
            break;
        }
        const int cnt = DYN_MIN(B, n - s);
        for (int i = 0; i < cnt; i++) idx[i] = s + i;
        o->calib->fill(o->calib->ctx, idx, cnt, e->input.data, y, NULL);
        dyn_exec_forward(e, e->input.data, cnt);
        if (ep) dyn_exec_forward(ep, e->input.data, cnt);
        for (int c = 0; c < nc && !rc; c++) {
            cand *cd = &cs[c];
            if (!cd->cxx) continue;
            const int src = dense->nodes[cd->node].inputs[0], nk = cd->n * cd->K * cd->K;
            int rows = 0, tr = 0;
            const float *X = layer_rows(cd, src < 0 ? &e->input : &e->act[src], cnt, &cols, &cap,
                                        &rows, &tr, err);
            if (!X) {
                rc = DYN_ENOMEM;
                break;
            }
            acc_cross(cd->cxx, X, X, nk, rows, tr);
            acc_mean(cd->xm, X, nk, rows, tr);
            if (ep && cd->ctt) {
                const float *Xt = layer_rows(cd, src < 0 ? &ep->input : &ep->act[src], cnt,
                                             &cols2, &cap2, &rows, &tr, err);
                if (!Xt) {
                    rc = DYN_ENOMEM;
                    break;
                }
                acc_cross(cd->ctt, Xt, Xt, nk, rows, tr);
                acc_cross(cd->cx, X, Xt, nk, rows, tr);
                acc_mean(cd->xtm, Xt, nk, rows, tr);
            }
            cd->count += rows;
        }
        if (report) report(rctx, "calibrate", 0, (double)(s + cnt) / n);
    }
    for (int c = 0; c < nc && !rc; c++) {
        cand *cd = &cs[c];
        if (!cd->cxx) continue;
        const int nk = cd->n * cd->K * cd->K;
        const double inv = cd->count ? 1.0 / (double)cd->count : 0.0;
        float *sym[2] = {cd->cxx, cd->ctt};
        for (int k = 0; k < 2; k++) {
            if (!sym[k]) continue;
            for (int i = 0; i < nk; i++)
                for (int j = i; j < nk; j++) {
                    float v = (float)(sym[k][(int64_t)i * nk + j] * inv);
                    sym[k][(int64_t)i * nk + j] = sym[k][(int64_t)j * nk + i] = v;
                }
        }
        if (cd->cx)
            for (int64_t i = 0; i < (int64_t)nk * nk; i++) cd->cx[i] = (float)(cd->cx[i] * inv);
        for (int i = 0; i < nk; i++) {
            cd->xm[i] *= inv;
            cd->xtm[i] = ep && cd->ctt ? cd->xtm[i] * inv : cd->xm[i];
        }
    }
    dyn_free(cols);
    dyn_free(cols2);
    free(idx);
    free(y);
    dyn_exec_free(e);
    dyn_exec_free(ep);
    return rc;
}

/* Bias correction (activation-aware fits): the mean output of the DyN layer on its inputs
 * equals the dense layer's on the dense inputs: b −= Ŵ x̃̄ − W x̄. */
static int bias_correct(dyn_layer *l, const cand *cd, dyn_err *err) {
    dyn_param *b = dyn_layer_param(l, "bias");
    if (!b || !cd->xm) return 0;
    const int nk = cd->n * cd->K * cd->K;
    float *w = malloc((size_t)cd->m * nk * sizeof(float));
    if (!w) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    int rc = dyn_layer_reconstruct(l, w, err);
    for (int i = 0; i < cd->m && !rc; i++) {
        double s = 0;
        for (int j = 0; j < nk; j++)
            s += (double)w[(int64_t)i * nk + j] * cd->xtm[j] - (double)cd->w[(int64_t)i * nk + j] * cd->xm[j];
        b->value.data[i] -= (float)s;
    }
    free(w);
    if (!rc && l->ops->prepare) rc = l->ops->prepare(l, err);
    return rc;
}

/* ---- building the DyN layers -------------------------------------------------------------- */

static dyn_layer *dyn_layer_for(const dyn_layer *dense, const cand *cd, int H,
                                const dyn_convert_opts *o, dyn_err *err) {
    json_t *a;
    const char *kn = dyn_kernel_name(o->kernel), *ex = o->exec ? o->exec : "auto";
    if (cd->K == 1 && strcmp(dense->ops->name, "linear") == 0)
        a = json_pack("{s:i, s:i, s:i, s:i, s:s, s:s, s:i}", "in", cd->n, "out", cd->m, "H", H,
                      "q", o->q, "kernel", kn, "exec", ex, "bias", cd->bias);
    else
        a = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:s, s:i}", "in_channels",
                      cd->n, "out_channels", cd->m, "kernel", cd->K, "stride", cd->stride,
                      "padding", cd->pad, "dilation", cd->dil, "H", H, "q", o->q, "kernel_fn",
                      kn, "exec", ex, "bias", cd->bias);
    if (!a) {
        dyn_err_set(err, DYN_ENOMEM, "out of memory");
        return NULL;
    }
    dyn_layer *l = dyn_layer_create(cd->K == 1 && strcmp(dense->ops->name, "linear") == 0
                                        ? "dyn_linear"
                                        : "dyn_conv2d",
                                    dense->name, a, err);
    json_decref(a);
    if (!l) return NULL;
    if (cd->bias) {
        dyn_param *bd = dyn_layer_param((dyn_layer *)dense, "bias"), *bn = dyn_layer_param(l, "bias");
        DYN_ASSERT(bd && bn);
        memcpy(bn->value.data, bd->value.data, (size_t)cd->m * sizeof(float));
    }
    return l;
}

typedef struct conv_ctx {
    const dyn_convert_opts *o;
    double t0, base, span; /* fit progress maps onto [base, base + span] of the whole */
    int layer, nlayers;
    const char *name;
} conv_ctx;

static void conv_report(void *ctx, const char *phase, int layer, double frac) {
    conv_ctx *c = ctx;
    (void)layer;
    if (!c->o->progress) return;
    dyn_convert_progress p = {.phase = phase, .layer = c->layer, .nlayers = c->nlayers,
                              .layer_name = c->name, .frac = c->base + c->span * frac,
                              .elapsed_s = dyn_now() - c->t0};
    c->o->progress(c->o->progress_ctx, &p);
}

static void fit_progress(void *ctx, double frac) { conv_report(ctx, "fit", 0, frac); }

/* Fits a new DyN layer for candidate cd with H copies; *out owns it on success. */
static int fit_candidate(const dyn_layer *dense, const cand *cd, int H, const dyn_fit_opts *fo,
                         const dyn_convert_opts *o, dyn_layer **out, dyn_fit_result *res,
                         dyn_err *err) {
    dyn_layer *l = dyn_layer_for(dense, cd, H, o, err);
    if (!l) return err ? err->code : DYN_ENOMEM;
    const dyn_fit_mode mode = cd->cxx ? o->fit : DYN_FIT_FIXED;
    dyn_fit_data fd = {.cov = cd->ctt ? cd->ctt : cd->cxx, .cross = cd->cx, .cov_dense = cd->cxx};
    int rc = dyn_fit_layer_data(l, cd->w, cd->cxx ? &fd : NULL, mode, 0, fo, res, err);
    if (!rc && mode == DYN_FIT_ACTIVATION && o->bias_correct) rc = bias_correct(l, cd, err);
    if (rc) {
        dyn_layer_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

/* Target-error mode: the smallest H in 1..Hmax whose short fit reaches o->rel_err (bisection
 * over H, assuming the error falls with H); 0 when even Hmax does not. */
static int search_H(const dyn_layer *dense, const cand *cd, int Hmax, const dyn_convert_opts *o,
                    conv_ctx *cc, int *H_out, dyn_err *err) {
    dyn_fit_opts fo = o->fitopt;
    fo.steps = DYN_MAX(1, fo.steps / 4);
    fo.restarts = 1;
    fo.quant = 0;
    fo.progress = NULL;
    int lo = 1, hi = Hmax, found = 0;
    while (lo <= hi) {
        const int mid = (lo + hi) / 2;
        dyn_layer *l = NULL;
        dyn_fit_result r;
        int rc = fit_candidate(dense, cd, mid, &fo, o, &l, &r, err);
        if (rc) return rc;
        dyn_layer_free(l);
        const double e = o->fit == DYN_FIT_ACTIVATION && r.out_rel_err >= 0 ? r.out_rel_err : r.rel_err;
        if (e <= o->rel_err) {
            found = mid;
            hi = mid - 1;
        } else {
            lo = mid + 1;
        }
        conv_report(cc, "fit", 0, 0.0);
    }
    *H_out = found;
    return 0;
}

/* ---- the conversion ------------------------------------------------------------------------ */

static int copy_meta(const dyn_model *in, dyn_model *out, const dyn_convert_opts *o,
                     dyn_err *err) {
    if (in->nlabels && dyn_model_labels_set(out, (const char *const *)in->labels, in->nlabels))
        return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    if (in->preprocess) out->preprocess = json_deep_copy(in->preprocess);
    out->info = in->info ? json_deep_copy(in->info) : json_object();
    json_t *cv = json_pack("{s:s, s:s, s:f, s:f, s:i, s:i, s:f}", "fit", dyn_fit_mode_name(o->fit),
                           "kernel", dyn_kernel_name(o->kernel), "ratio", o->ratio, "rel_err",
                           o->rel_err, "q", o->q, "steps", o->fitopt.steps, "quant",
                           o->fitopt.quant);
    if (!out->info || !cv) {
        json_decref(cv);
        return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    }
    json_object_set_new(out->info, "convert", cv);
    return 0;
}

static void layer_rep_init(dyn_convert_layer *L, const dyn_layer *l) {
    memset(L, 0, sizeof *L);
    snprintf(L->name, sizeof L->name, "%s", l->name);
    snprintf(L->op_before, sizeof L->op_before, "%s", l->ops->name);
    snprintf(L->op_after, sizeof L->op_after, "%s", l->ops->name);
    L->rel_err = L->svd_rel_err = L->out_rel_err = L->init_rel_err = -1;
    L->svd_rank = -1;
}

static int svd_baseline(const cand *cd, int64_t weight_floats, dyn_convert_layer *L,
                        dyn_err *err) {
    const int nk = cd->n * cd->K * cd->K, ns = DYN_MIN(cd->m, nk);
    double *s = malloc((size_t)ns * sizeof(double));
    if (!s) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    int rc = dyn_svd_values(cd->w, cd->m, nk, s, err);
    if (!rc) {
        L->svd_rank = weight_floats / ((int64_t)cd->m + nk);
        L->svd_rel_err = dyn_svd_tail_rel_err(s, ns, (int)DYN_MIN(L->svd_rank, (int64_t)ns));
    }
    free(s);
    return rc;
}

int dyn_convert(dyn_model *in, const dyn_convert_opts *o, dyn_model **out,
                dyn_convert_report *rep, dyn_err *err) {
    memset(rep, 0, sizeof *rep);
    *out = NULL;
    const double t0 = dyn_now();
    rep->acc_before = rep->acc_after = rep->logit_rel_err = -1;
    if (!(o->ratio > 0) && !(o->rel_err > 0))
        return dyn_err_set(err, DYN_EINVAL, "give a compression ratio > 0 or a target error > 0");
    if (o->q < 1 || o->q > 64) return dyn_err_set(err, DYN_EINVAL, "q must be in 1..64");
    if (o->fit == DYN_FIT_ACTIVATION && !o->calib)
        return dyn_err_set(err, DYN_EINVAL,
                           "the activation-aware fit needs calibration images (--calib)");
    if (o->kernel < 0 || o->kernel >= DYN_KERNEL_COUNT)
        return dyn_err_set(err, DYN_EINVAL, "unknown kernel");
    rep->nlayers = in->nnodes;
    rep->layers = calloc((size_t)DYN_MAX(1, in->nnodes), sizeof *rep->layers);
    cand *cs = calloc((size_t)DYN_MAX(1, in->nnodes), sizeof *cs);
    dyn_layer_stats *st0 = calloc((size_t)DYN_MAX(1, in->nnodes), sizeof *st0);
    dyn_layer_stats *st1 = calloc((size_t)DYN_MAX(1, in->nnodes), sizeof *st1);
    int *cand_of = malloc((size_t)DYN_MAX(1, in->nnodes) * sizeof(int));
    float *lg0 = NULL, *lg1 = NULL;
    dyn_model *m = NULL;
    int nc = 0, rc = 0, seen_conv = 0;
    const int seq = o->calib && o->fit == DYN_FIT_ACTIVATION && o->sequential;
    snprintf(rep->fit, sizeof rep->fit, "%s", dyn_fit_mode_name(o->fit));
    snprintf(rep->kernel, sizeof rep->kernel, "%s", dyn_kernel_name(o->kernel));
    rep->ratio = o->rel_err > 0 ? 0 : o->ratio;
    rep->target_rel_err = o->rel_err;
    rep->quant = o->fitopt.quant;
    rep->steps = o->fitopt.steps;
    rep->q = o->q;
    if (!rep->layers || !cs || !st0 || !st1 || !cand_of) {
        rc = dyn_err_set(err, DYN_ENOMEM, "out of memory");
        goto done;
    }
    dyn_layer_stats tot0;
    dyn_model_stats(in, st0, &tot0);
    conv_ctx cc = {.o = o, .t0 = t0, .nlayers = 0};

    /* 1. plan */
    int last_w = -1;
    for (int k = 0; k < in->nnodes; k++) {
        const char *op = in->nodes[k].layer->ops->name;
        if (strcmp(op, "linear") == 0 || strcmp(op, "conv2d") == 0) last_w = k;
    }
    for (int k = 0; k < in->nnodes; k++) {
        const dyn_layer *l = in->nodes[k].layer;
        dyn_convert_layer *L = &rep->layers[k];
        layer_rep_init(L, l);
        L->floats_before = L->floats_after = st0[k].stored_floats;
        L->macs_before = st0[k].macs;
        cand_of[k] = -1;
        const int is_lin = strcmp(l->ops->name, "linear") == 0;
        const int is_conv = strcmp(l->ops->name, "conv2d") == 0;
        if (!is_lin && !is_conv) continue;
        const int first_conv = is_conv && !seen_conv;
        seen_conv |= is_conv;
        cand cd = {.node = k};
        dyn_err e2 = {0};
        if (dyn_layer_fit_shape(l, &cd.m, &cd.n, &cd.K, &e2)) {
            snprintf(L->reason, sizeof L->reason, "%.95s", e2.msg);
            continue;
        }
        L->m = cd.m;
        L->n = cd.n;
        L->K = cd.K;
        if (name_listed(o, l->name)) {
            snprintf(L->reason, sizeof L->reason, "kept dense (--keep-dense)");
            continue;
        }
        if (first_conv && o->keep_first_conv) {
            snprintf(L->reason, sizeof L->reason, "kept dense (first conv)");
            continue;
        }
        if (k == last_w && o->keep_last) {
            snprintf(L->reason, sizeof L->reason, "kept dense (last layer)");
            continue;
        }
        const double dense_w = (double)cd.m * cd.n * cd.K * cd.K;
        const int Hmax = dyn_convert_budget_H(cd.m, cd.n, cd.K, o->q, 1.0 / (1.0 - o->min_saving));
        cd.H = o->rel_err > 0 ? Hmax : DYN_MIN(Hmax, dyn_convert_budget_H(cd.m, cd.n, cd.K, o->q, o->ratio));
        if (cd.H < 1) {
            snprintf(L->reason, sizeof L->reason,
                     "kept dense: DyN with H = 1 would not save %.0f%% of %.0f floats",
                     100 * o->min_saving, dense_w);
            continue;
        }
        cd.stride = is_conv ? attr_get(l, "stride", 1) : 1;
        cd.pad = is_conv ? attr_get(l, "padding", 0) : 0;
        cd.dil = is_conv ? attr_get(l, "dilation", 1) : 1;
        dyn_param *bp = dyn_layer_param((dyn_layer *)l, "bias");
        cd.bias = bp != NULL;
        dyn_param *wp = dyn_layer_param((dyn_layer *)l, "weight");
        DYN_ASSERT(wp && dyn_tensor_numel(&wp->value) == (int64_t)dense_w);
        cd.w = wp->value.data;
        const int64_t nk = (int64_t)cd.n * cd.K * cd.K;
        if (o->calib) {
            cd.stats = nk <= COV_MAX_DIM;
            if (cd.stats && !seq && (rc = cand_stats_alloc(&cd, 0, err))) goto done;
            if (!cd.stats) {
                snprintf(L->reason, sizeof L->reason,
                         "input covariance %lld² too large: fitted data-free", (long long)nk);
            }
        }
        cand_of[k] = nc;
        cs[nc++] = cd;
    }
    cc.nlayers = nc;
    double w_total = 0, w_done = 0;
    for (int c = 0; c < nc; c++) w_total += (double)cs[c].m * cs[c].n * cs[c].K * cs[c].K;
    const double cal_span = o->calib ? 0.05 : 0.0, eval_span = o->eval || o->calib ? 0.05 : 0.0;

    /* 2. calibrate (sequential mode: per layer, below), the dense model's accuracy and logits */
    if (o->calib) {
        cc.base = 0;
        cc.span = cal_span;
        if (!seq && (rc = calib_pass(in, NULL, cs, nc, o, conv_report, &cc, err))) goto done;
        lg0 = dyn_model_logits(in, o->calib, o->calib_n > 0 ? o->calib_n : o->calib->n, o->batch, err);
        if (!lg0) {
            rc = err ? err->code : DYN_ENOMEM;
            goto done;
        }
    }
    if (o->eval && (rep->acc_before = dyn_evaluate(in, o->eval, o->batch, NULL, err)) < 0) {
        rc = err ? err->code : DYN_EINVAL;
        goto done;
    }

    /* 3. build and fit */
    m = dyn_model_new(&in->input);
    if (!m || (rc = copy_meta(in, m, o, err))) {
        if (!rc) rc = dyn_err_set(err, DYN_ENOMEM, "out of memory");
        goto done;
    }
    for (int k = 0; k < in->nnodes; k++) {
        const dyn_layer *l = in->nodes[k].layer;
        dyn_convert_layer *L = &rep->layers[k];
        dyn_layer *nl = NULL;
        if (cand_of[k] >= 0) {
            cand *cd = &cs[cand_of[k]];
            const double wl = (double)cd->m * cd->n * cd->K * cd->K;
            cc.layer = cand_of[k] + 1;
            cc.name = l->name;
            cc.base = cal_span + (1 - cal_span - eval_span) * w_done / w_total;
            cc.span = (1 - cal_span - eval_span) * wl / w_total;
            w_done += wl;
            if (seq && cd->stats) { /* inputs of the model converted so far (nodes 0..k-1) */
                if ((rc = cand_stats_alloc(cd, k > 0, err)) ||
                    (rc = calib_pass(in, k > 0 ? m : NULL, cd, 1, o, NULL, NULL, err)))
                    goto done;
            }
            int H = cd->H;
            if (o->rel_err > 0 && (rc = search_H(l, cd, cd->H, o, &cc, &H, err))) goto done;
            if (H < 1) {
                snprintf(L->reason, sizeof L->reason,
                         "kept dense: error %.3g not reached with %.0f%% fewer floats",
                         o->rel_err, 100 * o->min_saving);
            } else {
                dyn_fit_opts fo = o->fitopt;
                fo.progress = fit_progress;
                fo.progress_ctx = &cc;
                fo.cancel = o->cancel;
                fo.seed = o->fitopt.seed + (uint64_t)k * 7919;
                dyn_fit_result fr;
                if ((rc = fit_candidate(l, cd, H, &fo, o, &nl, &fr, err))) {
                    if (rc != DYN_ECANCEL) dyn_err_prefix(err, "layer '%s'", l->name);
                    goto done;
                }
                L->converted = 1;
                L->H = H;
                L->q = o->q;
                L->rel_err = fr.rel_err;
                L->out_rel_err = fr.out_rel_err;
                L->init_rel_err = fr.init_rel_err;
                L->seconds = fr.seconds;
                snprintf(L->op_after, sizeof L->op_after, "%s", nl->ops->name);
                const int64_t wf = dyn_convert_floats(cd->m, cd->n, cd->K, H, o->q);
                if ((rc = svd_baseline(cd, wf, L, err)) ||
                    (rc = dyn_baseline_layer(cd->w, cd->m, cd->n * cd->K * cd->K, wf, L, err)))
                    goto done;
                if (seq) cand_stats_free(cd);
            }
        }
        if (!nl && !(nl = dyn_layer_clone(l, err))) {
            rc = err ? err->code : DYN_ENOMEM;
            goto done;
        }
        const dyn_node *nd = &in->nodes[k];
        if ((rc = dyn_model_add(m, nl, nd->inputs, nd->ninputs, err)) < 0) goto done;
        rc = 0;
    }
    if ((rc = dyn_model_prepare(m, err))) goto done;

    /* 4. measure */
    dyn_layer_stats tot1;
    dyn_model_stats(m, st1, &tot1);
    for (int k = 0; k < in->nnodes; k++) {
        dyn_convert_layer *L = &rep->layers[k];
        L->floats_after = st1[k].stored_floats;
        L->macs_after = st1[k].macs;
        L->macs_native = L->macs_after;
        if (L->converted) {
            const double dense_w = (double)L->m * L->n * L->K * L->K;
            const double slices = (double)L->K * L->K * L->H * L->q * ((double)L->m + L->n);
            L->macs_native = (int64_t)((double)L->macs_before * slices / dense_w + 0.5);
        }
        rep->macs_native += L->macs_native;
        L->entropy_bits = st1[k].is_dyn ? st1[k].entropy_bits : 0;
        rep->nconverted += L->converted;
    }
    rep->floats_before = tot0.stored_floats;
    rep->floats_after = tot1.stored_floats;
    rep->macs_before = tot0.macs;
    rep->macs_after = tot1.macs;
    rep->entropy_bits = tot1.is_dyn ? tot1.entropy_bits : 0;
    cc.name = NULL;
    cc.base = 1 - eval_span;
    cc.span = eval_span;
    if (eval_span > 0) conv_report(&cc, "evaluate", 0, 0.0);
    if (o->calib) {
        const int n = DYN_MIN(o->calib_n > 0 ? o->calib_n : o->calib->n, o->calib->n);
        lg1 = dyn_model_logits(m, o->calib, n, o->batch, err);
        if (!lg1) {
            rc = err ? err->code : DYN_ENOMEM;
            goto done;
        }
        double num = 0, den = 0;
        const int64_t tot = (int64_t)n * dyn_model_outputs(m);
        for (int64_t i = 0; i < tot; i++) {
            num += ((double)lg1[i] - lg0[i]) * ((double)lg1[i] - lg0[i]);
            den += (double)lg0[i] * lg0[i];
        }
        rep->logit_rel_err = den > 0 ? sqrt(num / den) : -1;
    }
    if (o->eval && (rep->acc_after = dyn_evaluate(m, o->eval, o->batch, NULL, err)) < 0) {
        rc = err ? err->code : DYN_EINVAL;
        goto done;
    }
    if (eval_span > 0) conv_report(&cc, "evaluate", 0, 1.0);
done:
    rep->seconds = dyn_now() - t0;
    for (int c = 0; c < nc; c++) cand_stats_free(&cs[c]);
    free(cs);
    free(st0);
    free(st1);
    free(cand_of);
    free(lg0);
    free(lg1);
    if (rc) {
        dyn_model_free(m);
        m = NULL;
    }
    *out = m;
    return rc;
}

void dyn_convert_report_free(dyn_convert_report *r) {
    free(r->layers);
    memset(r, 0, sizeof *r);
}
