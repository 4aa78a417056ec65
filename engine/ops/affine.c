/* affine.c — element-wise affine map with constants over trailing dims (ONNX Add / Sub / Mul /
 * Div of an activation and a constant of any trailing shape: LayerNorm's weight and bias,
 * positional embeddings [1, T, D], scalars such as GELU's 1/sqrt(2) or attention's 1/sqrt(d)).
 *
 * Attributes: "shape" (1..3 sizes: the trailing dims of the input the constants span; [1] =
 * a scalar for any input), "weight" / "bias" (0/1, default 1: which parameters exist),
 * "trainable" (0/1, default 1). Parameters "weight" (init 1) and "bias" (init 0) of that
 * shape. y[r, i] = x[r, i] * weight[i] + bias[i] over rows r of the leading dims.
 */
#include <string.h>

#include "../layer.h"
#include "affine_impl.h"
#include "../cpu/par.h"

static void af_identity(dyn_layer *l) {
    for (int i = 0; i < l->nparams; i++) {
        dyn_tensor *t = &l->params[i].value;
        float v = strcmp(l->params[i].name, "weight") == 0 ? 1.0f : 0.0f;
        for (int64_t k = 0; k < dyn_tensor_numel(t); k++) t->data[k] = v;
    }
}

static int af_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    af_impl p;
    memset(&p, 0, sizeof p);
    int64_t w, b, tr;
    int rc;
    if ((rc = dyn_attr_ints(l, attrs, "shape", 1, DYN_MAX_DIMS - 1, 1, DYN_TENSOR_MAX_NUMEL,
                            p.shape, &p.nshape, err)))
        return rc;
    char what[96];
    snprintf(what, sizeof what, "layer '%s': 'shape'", l->name);
    if ((rc = dyn_numel_checked(p.nshape, p.shape, DYN_TENSOR_MAX_NUMEL, &p.period, err, what)))
        return rc;
    if ((rc = dyn_attr_int(l, attrs, "weight", 1, 0, 1, &w, err)) ||
        (rc = dyn_attr_int(l, attrs, "bias", 1, 0, 1, &b, err)) ||
        (rc = dyn_attr_int(l, attrs, "trainable", 1, 0, 1, &tr, err)))
        return rc;
    p.has_w = (int)w;
    p.has_b = (int)b;
    p.trainable = (int)tr;
    af_impl *im = malloc(sizeof *im);
    if (!im) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    *im = p;
    l->impl = im;
    if ((w && !dyn_layer_param_add(l, "weight", p.nshape, p.shape, (int)tr, err)) ||
        (b && !dyn_layer_param_add(l, "bias", p.nshape, p.shape, (int)tr, err)))
        return err ? err->code : DYN_EINVAL;
    af_identity(l);
    return 0;
}

static void af_destroy(dyn_layer *l) {
    free(l->impl);
    l->impl = NULL;
}

static json_t *af_attrs(const dyn_layer *l) {
    const af_impl *p = l->impl;
    json_t *s = json_array();
    for (int i = 0; s && i < p->nshape; i++) json_array_append_new(s, json_integer(p->shape[i]));
    return json_pack("{s:o, s:i, s:i, s:i}", "shape", s, "weight", p->has_w, "bias", p->has_b,
                     "trainable", p->trainable);
}

static void af_init(dyn_layer *l, dyn_rng *rng) {
    (void)rng;
    af_identity(l);
}

static int af_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    const af_impl *p = l->impl;
    int ok = p->period == 1 || in[0].ndim - 1 >= p->nshape;
    for (int i = 0; ok && p->period != 1 && i < p->nshape; i++)
        ok = in[0].d[in[0].ndim - p->nshape + i] == p->shape[i];
    if (!ok) {
        char a[64];
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': affine constants of %d trailing dims (%lld values) do not "
                           "fit input %s",
                           l->name, p->nshape, (long long)p->period,
                           dyn_shape_str(&in[0], a, sizeof a));
    }
    *out = in[0];
    return 0;
}

static const float *af_param(dyn_layer *l, const char *name, int grad) {
    dyn_param *q = dyn_layer_param(l, name);
    return q ? (grad ? (q->trainable ? q->grad.data : NULL) : q->value.data) : NULL;
}

static void af_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                       int training) {
    (void)scratch;
    (void)training;
    const af_impl *p = l->impl;
    const float *w = af_param(l, "weight", 0), *b = af_param(l, "bias", 0);
    const int64_t P = p->period, rows = dyn_tensor_numel(&x[0]) / P;
    const float *xp = x[0].data;
    float *yp = y->data;
    DYN_PAR_FOR(rows * P > 65536,
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < P; i++) {
            float v = xp[r * P + i];
            if (w) v *= w[i];
            if (b) v += b[i];
            yp[r * P + i] = v;
        });
}

static void af_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                        const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)y;
    (void)scratch;
    const af_impl *p = l->impl;
    const float *w = af_param(l, "weight", 0);
    float *dw = (float *)af_param(l, "weight", 1), *db = (float *)af_param(l, "bias", 1);
    const int64_t P = p->period, rows = dyn_tensor_numel(&x[0]) / P;
    const float *g = dy->data, *xp = x[0].data;
    if (dx[0].data)
        for (int64_t r = 0; r < rows; r++)
            for (int64_t i = 0; i < P; i++)
                dx[0].data[r * P + i] = w ? g[r * P + i] * w[i] : g[r * P + i];
    if (!dw && !db) return;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t i = 0; i < P; i++) {
            if (dw) dw[i] += g[r * P + i] * xp[r * P + i];
            if (db) db[i] += g[r * P + i];
        }
}

static void af_stats(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    (void)l;
    st->macs = dyn_shape_numel(in);
}

const dyn_layer_ops dyn_op_affine = {
    .op = DYN_OP_AFFINE,
    .name = "affine",
    .ninputs = 1,
    .create = af_create,
    .destroy = af_destroy,
    .attrs = af_attrs,
    .init = af_init,
    .infer = af_infer,
    .forward = af_forward,
    .backward = af_backward,
    .stats = af_stats,
};
