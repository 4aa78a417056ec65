/* riem_layer.c — layer "riem": a linear or conv2d layer whose weight is the RieM-style form of
 * fit_riem.h, stored as its states and metric and materialized at prepare (fit-only: frozen).
 *
 * Attributes: "base" ("linear" | "conv2d"), the base op's own attributes (linear: in, out,
 * bias; conv2d: in_channels, out_channels, kernel, stride, padding, ... — square kernel,
 * groups 1), "q" (state width, 1..4096), "D" (metric units per group, 1..256).
 * Parameters (the form's θ with the scale folded in): "x" [rows][q], "y" [cols][q],
 * "A" [6][D][q], "b" [6][D], "w" [D], "b0" [1], and "bias" [out] when the base has one;
 * rows × cols = out × in for linear, (Cout·K) × (Cin·K) for conv2d (dyn_riem_conv_rows).
 * prepare: Ŵ = dyn_riem_materialize (double precision, exact sigmoid) into a private base
 * layer, which runs forward (and backward for the input gradient only: the form's parameters
 * get no gradient — training leaves them as they are).
 */
#include <string.h>

#include "fit_riem.h"

enum { R_X, R_Y, R_A, R_B, R_W, R_B0, R_NP };
static const char *const r_names[R_NP] = {"x", "y", "A", "b", "w", "b0"};

typedef struct riem_impl {
    dyn_layer *base;
    int is_conv, m, n, K, q, D, rows, cols;
    float *wtmp; /* [m·n·K²] */
} riem_impl;

static int rl_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    const char *base = NULL;
    int64_t q, D;
    int rc;
    if ((rc = dyn_attr_str(l, attrs, "base", "linear", &base, err)) ||
        (rc = dyn_attr_int(l, attrs, "q", 1, 1, 4096, &q, err)) ||
        (rc = dyn_attr_int(l, attrs, "D", 4, 1, 256, &D, err)))
        return rc;
    if (strcmp(base, "linear") != 0 && strcmp(base, "conv2d") != 0)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': riem base must be linear or conv2d, not '%s'",
                           l->name, base);
    riem_impl *im = calloc(1, sizeof *im);
    if (!im) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    l->impl = im;
    im->is_conv = strcmp(base, "conv2d") == 0;
    im->q = (int)q;
    im->D = (int)D;
    json_t *ba = json_deep_copy(attrs);
    if (!ba) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    json_object_del(ba, "base");
    json_object_del(ba, "q");
    json_object_del(ba, "D");
    im->base = dyn_layer_create(base, l->name, ba, err);
    json_decref(ba);
    if (!im->base) return err ? err->code : DYN_EINVAL;
    if ((rc = dyn_layer_fit_shape(im->base, &im->m, &im->n, &im->K, err))) return rc;
    im->rows = im->m * im->K;
    im->cols = im->n * im->K;
    const int64_t U = 6 * D;
    const int64_t shapes[R_NP][2] = {{im->rows, q}, {im->cols, q}, {U, q}, {6, D}, {D, 1}, {1, 1}};
    const int nd[R_NP] = {2, 2, 2, 2, 1, 1};
    for (int p = 0; p < R_NP; p++)
        if (!dyn_layer_param_add(l, r_names[p], nd[p], shapes[p], 1, err))
            return err ? err->code : DYN_EINVAL;
    dyn_param *bp = dyn_layer_param(im->base, "bias");
    if (bp && !dyn_layer_param_add(l, "bias", 1, &bp->value.shape[0], 1, err))
        return err ? err->code : DYN_EINVAL;
    im->wtmp = malloc((size_t)im->m * im->n * im->K * im->K * sizeof(float));
    if (!im->wtmp) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    return 0;
}

static void rl_destroy(dyn_layer *l) {
    riem_impl *im = l->impl;
    if (!im) return;
    dyn_layer_free(im->base);
    free(im->wtmp);
    free(im);
    l->impl = NULL;
}

static json_t *rl_attrs(const dyn_layer *l) {
    const riem_impl *im = l->impl;
    json_t *a = im->base->ops->attrs(im->base);
    if (!a) return NULL;
    json_object_set_new(a, "base", json_string(im->is_conv ? "conv2d" : "linear"));
    json_object_set_new(a, "q", json_integer(im->q));
    json_object_set_new(a, "D", json_integer(im->D));
    return a;
}

static void rl_init(dyn_layer *l, dyn_rng *rng) {
    for (int p = 0; p < l->nparams; p++) {
        dyn_tensor *t = &l->params[p].value;
        const float s = p == R_A ? 0.3f : p == R_W ? 0.01f : p < R_A ? 1.0f : 0.0f;
        for (int64_t i = 0; i < dyn_tensor_numel(t); i++) t->data[i] = s * dyn_rng_normal(rng);
    }
}

static int rl_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    const riem_impl *im = l->impl;
    return im->base->ops->infer(im->base, in, out, err);
}

static size_t rl_scratch(const dyn_layer *l, const dyn_shape *in, int training) {
    const riem_impl *im = l->impl;
    return im->base->ops->scratch ? im->base->ops->scratch(im->base, in, training) : 0;
}

static void rl_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                       int training) {
    riem_impl *im = l->impl;
    im->base->ops->forward(im->base, x, y, scratch, training);
}

static void rl_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                        const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    riem_impl *im = l->impl;
    im->base->ops->backward(im->base, x, y, dy, dx, scratch);
}

static int rl_prepare(dyn_layer *l, dyn_err *err) {
    riem_impl *im = l->impl;
    dyn_riem r = {.m = im->rows, .nk = im->cols, .q = im->q, .D = im->D, .scale = 1.0f};
    const int64_t n = dyn_riem_floats(im->rows, im->cols, im->q, im->D);
    if (!(r.theta = malloc((size_t)n * sizeof(float))))
        return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    int64_t off = 0;
    for (int p = 0; p < R_NP; p++) {
        const int64_t k = dyn_tensor_numel(&l->params[p].value);
        memcpy(r.theta + off, l->params[p].value.data, (size_t)k * sizeof(float));
        off += k;
    }
    DYN_ASSERT(off == n);
    float *w = dyn_layer_param(im->base, "weight")->value.data;
    dyn_riem_materialize(&r, im->is_conv ? im->wtmp : w);
    if (im->is_conv) dyn_riem_conv_rows(im->wtmp, im->m, im->n, im->K, 1, w);
    free(r.theta);
    dyn_param *bp = dyn_layer_param(im->base, "bias");
    if (bp)
        memcpy(bp->value.data, l->params[R_NP].value.data,
               (size_t)dyn_tensor_numel(&bp->value) * sizeof(float));
    return im->base->ops->prepare ? im->base->ops->prepare(im->base, err) : 0;
}

static void rl_stats(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    const riem_impl *im = l->impl;
    int64_t stored = 0;
    for (int p = 0; p < l->nparams; p++) stored += dyn_tensor_numel(&l->params[p].value);
    dyn_layer_stats bs = {0};
    if (im->base->ops->stats) im->base->ops->stats(im->base, in, &bs);
    st->stored_floats = stored;
    st->memory_floats = stored + (int64_t)im->m * im->n * im->K * im->K;
    st->macs = bs.macs;
    st->entropy_bits = 0;
    st->is_dyn = 0;
}

int dyn_riem_layer_from_fit(const dyn_layer *dense, const dyn_riem *r, dyn_layer **out,
                            dyn_err *err) {
    *out = NULL;
    int m, n, K, rc;
    if ((rc = dyn_layer_fit_shape(dense, &m, &n, &K, err))) return rc;
    if (r->m != m * K || r->nk != n * K)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': the form is %d×%d, the layer %d×%d",
                           dense->name, r->m, r->nk, m * K, n * K);
    json_t *a = dense->ops->attrs(dense);
    if (!a) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    json_object_set_new(a, "base", json_string(dense->ops->name));
    json_object_set_new(a, "q", json_integer(r->q));
    json_object_set_new(a, "D", json_integer(r->D));
    dyn_layer *l = dyn_layer_create("riem", dense->name, a, err);
    json_decref(a);
    if (!l) return err && err->code ? err->code : DYN_EINVAL;
    int64_t off = 0;
    for (int p = 0; p < R_NP; p++) {
        dyn_tensor *t = &l->params[p].value;
        const int64_t k = dyn_tensor_numel(t);
        for (int64_t i = 0; i < k; i++) {
            float v = r->theta[off + i];
            if (p == R_W || p == R_B0) v *= r->scale; /* fold the scale */
            t->data[i] = v;
        }
        off += k;
    }
    dyn_param *bd = dyn_layer_param((dyn_layer *)dense, "bias");
    if (bd)
        memcpy(l->params[R_NP].value.data, bd->value.data,
               (size_t)dyn_tensor_numel(&bd->value) * sizeof(float));
    if ((rc = rl_prepare(l, err))) {
        dyn_layer_free(l);
        return rc;
    }
    *out = l;
    return 0;
}

const dyn_layer_ops dyn_op_riem = {
    .op = DYN_OP_RIEM,
    .name = "riem",
    .ninputs = 1,
    .create = rl_create,
    .destroy = rl_destroy,
    .attrs = rl_attrs,
    .init = rl_init,
    .infer = rl_infer,
    .scratch = rl_scratch,
    .forward = rl_forward,
    .backward = rl_backward,
    .prepare = rl_prepare,
    .stats = rl_stats,
};
