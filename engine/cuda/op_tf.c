/* op_tf.c — the CUDA backend's element-wise and transformer ops (backend.h's dyn_backend_op):
 * mul, sub, div, sigmoid, clip, erf, sqrt, pow, scale, softmax, layernorm, matmul, permute,
 * concat, reduce_mean, affine, cat_param.
 *
 * Glue only: each op reads the layer's attributes (the impl structs of engine/ops/<op>_impl.h)
 * and the shapes of its tensors, and calls a launcher of dyn_cuda_tf.h (engine/cuda/tf.cu;
 * stubs without CUDA). Forward and backward compute what the CPU op computes (engine/ops/),
 * parameters read from dyn_param.dval, their gradients accumulated into .dgrad (trainable
 * parameters only, as on the CPU). Every op runs every shape its CPU op accepts (supports is
 * NULL), except matmul with more than INT_MAX products (cuBLAS's batch count).
 *
 * Errors: the launcher's message (the failing CUDA / cuBLAS call) prefixed with the layer's
 * name and op.
 */
#include <limits.h>
#include <string.h>

#include "../ops/affine_impl.h"
#include "../ops/cat_param_impl.h"
#include "../ops/concat_impl.h"
#include "../ops/layernorm_impl.h"
#include "../ops/matmul_impl.h"
#include "../ops/permute_impl.h"
#include "../ops/reduce_impl.h"
#include "../ops/unary_impl.h"
#include "dyn_cuda_tf.h"
#include "op_tf.h"

/* rc, with err prefixed by the layer when it failed. */
static int tf_rc(int rc, const dyn_layer *l, dyn_err *err) {
    return rc ? dyn_err_prefix(err, "layer '%s' (%s) on cuda", l->name, l->ops->name) : 0;
}

/* The gradient of trainable parameter i on the device, or NULL. */
static float *tf_dgrad(dyn_layer *l, int i) {
    return i >= 0 && l->params[i].trainable ? l->params[i].dgrad : NULL;
}

/* ---- mul, sub, div ---- */

static int bin_kind(const dyn_layer *l) {
    return l->ops->op == DYN_OP_MUL ? DYN_KBIN_MUL : l->ops->op == DYN_OP_SUB ? DYN_KBIN_SUB
                                                                              : DYN_KBIN_DIV;
}

static int bin_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *s,
                       int training, dyn_err *err) {
    (void)s, (void)training;
    dyn_kbin g;
    dyn_kbin_geom(&g, bin_kind(l), x[0].ndim, x[0].shape, x[1].shape);
    return tf_rc(dyn_cuda_tf_bin_forward(ctx, &g, x[0].data, x[1].data, y->data, err), l, err);
}

static int bin_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                        const dyn_tensor *dy, dyn_tensor *dx, float *s, dyn_err *err) {
    (void)s;
    dyn_kbin g;
    dyn_kbin_geom(&g, bin_kind(l), x[0].ndim, x[0].shape, x[1].shape);
    return tf_rc(dyn_cuda_tf_bin_backward(ctx, &g, x[0].data, x[1].data, y->data, dy->data,
                                          dx[0].data, dx[1].data, err),
                 l, err);
}

/* ---- sigmoid, clip, erf, sqrt, pow ---- */

/* The DYN_KUN_* kind and its parameters of layer l. */
static int un_kind(const dyn_layer *l, float *p0, float *p1) {
    *p0 = *p1 = 0.0f;
    switch (l->ops->op) {
    case DYN_OP_SIGMOID: return DYN_KUN_SIGMOID;
    case DYN_OP_CLIP: {
        const clip_impl *c = l->impl;
        *p0 = c->lo;
        *p1 = c->hi;
        return DYN_KUN_CLIP;
    }
    case DYN_OP_ERF: return DYN_KUN_ERF;
    case DYN_OP_SQRT: return DYN_KUN_SQRT;
    default: *p0 = ((const pow_impl *)l->impl)->p; return DYN_KUN_POW;
    }
}

static int un_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *s,
                      int training, dyn_err *err) {
    (void)s, (void)training;
    float p0, p1;
    const int k = un_kind(l, &p0, &p1);
    return tf_rc(dyn_cuda_tf_unary_forward(ctx, k, p0, p1, x[0].data, y->data,
                                           dyn_tensor_numel(y), err),
                 l, err);
}

static int un_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                       const dyn_tensor *dy, dyn_tensor *dx, float *s, dyn_err *err) {
    (void)s;
    if (!dx[0].data) return 0;
    float p0, p1;
    const int k = un_kind(l, &p0, &p1);
    return tf_rc(dyn_cuda_tf_unary_backward(ctx, k, p0, p1, x[0].data, y->data, dy->data,
                                            dx[0].data, dyn_tensor_numel(y), err),
                 l, err);
}

/* ---- scale: y[n, c, ...] = x w[c] + b[c] ---- */

static void scale_geom(const dyn_layer *l, const dyn_tensor *x, int64_t *batch, int64_t *ch,
                       int64_t *inner) {
    *ch = l->params[0].value.shape[0];
    *batch = x->shape[0];
    *inner = *batch ? dyn_tensor_numel(x) / (*batch * *ch) : 1;
}

static int scale_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *s,
                         int training, dyn_err *err) {
    (void)s, (void)training;
    int64_t batch, ch, inner;
    scale_geom(l, &x[0], &batch, &ch, &inner);
    return tf_rc(dyn_cuda_tf_scale_forward(ctx, batch, ch, inner, l->params[0].dval,
                                           l->params[1].dval, x[0].data, y->data, err),
                 l, err);
}

static int scale_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                          const dyn_tensor *dy, dyn_tensor *dx, float *s, dyn_err *err) {
    (void)y, (void)s;
    int64_t batch, ch, inner;
    scale_geom(l, &x[0], &batch, &ch, &inner);
    return tf_rc(dyn_cuda_tf_scale_backward(ctx, batch, ch, inner, l->params[0].dval, x[0].data,
                                            dy->data, dx[0].data, tf_dgrad(l, 0), tf_dgrad(l, 1),
                                            err),
                 l, err);
}

/* ---- softmax over the last axis ---- */

static int sm_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *s,
                      int training, dyn_err *err) {
    (void)s, (void)training;
    const int64_t n = x[0].shape[x[0].ndim - 1];
    return tf_rc(dyn_cuda_tf_softmax_forward(ctx, dyn_tensor_numel(&x[0]) / n, n, x[0].data,
                                             y->data, err),
                 l, err);
}

static int sm_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                       const dyn_tensor *dy, dyn_tensor *dx, float *s, dyn_err *err) {
    (void)x, (void)s;
    if (!dx[0].data) return 0;
    const int64_t n = y->shape[y->ndim - 1];
    return tf_rc(dyn_cuda_tf_softmax_backward(ctx, dyn_tensor_numel(y) / n, n, y->data, dy->data,
                                              dx[0].data, err),
                 l, err);
}

/* ---- layernorm over the last axis: backward keeps the row statistics in scratch ---- */

static size_t ln_scratch(const dyn_layer *l, const dyn_shape *in, int training) {
    const ln_impl *p = l->impl;
    return training ? (size_t)(2 * (dyn_shape_numel(&in[0]) / p->dim)) : 0;
}

static int ln_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *s,
                      int training, dyn_err *err) {
    (void)s, (void)training;
    const ln_impl *p = l->impl;
    return tf_rc(dyn_cuda_tf_layernorm_forward(ctx, dyn_tensor_numel(&x[0]) / p->dim, p->dim,
                                               p->eps, l->params[0].dval, l->params[1].dval,
                                               x[0].data, y->data, err),
                 l, err);
}

static int ln_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                       const dyn_tensor *dy, dyn_tensor *dx, float *s, dyn_err *err) {
    (void)y;
    const ln_impl *p = l->impl;
    return tf_rc(dyn_cuda_tf_layernorm_backward(ctx, dyn_tensor_numel(&x[0]) / p->dim, p->dim,
                                                p->eps, l->params[0].dval, x[0].data, dy->data,
                                                dx[0].data, tf_dgrad(l, 0), tf_dgrad(l, 1), s,
                                                err),
                 l, err);
}

/* ---- matmul (cuBLAS strided-batched) ---- */

typedef struct mm_geo {
    int64_t groups;
    int M, K, N;
} mm_geo;

/* The product's sizes from shapes a, b (infer checked M, K, N <= INT_MAX). */
static mm_geo mm_get(const mm_impl *m, const dyn_shape *a, const dyn_shape *b) {
    int64_t M, K, Kb, N;
    mm_dims(m, a, b, &M, &K, &Kb, &N);
    mm_geo d = {.groups = 1, .M = (int)M, .K = (int)K, .N = (int)N};
    for (int i = 0; i < a->ndim - 2; i++) d.groups *= a->d[i];
    return d;
}

/* cuBLAS's batch count is an int. */
static int mm_supports(const dyn_layer *l, const dyn_shape *in, int training) {
    (void)training;
    return mm_get(l->impl, &in[0], &in[1]).groups <= INT_MAX;
}

static int mm_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *s,
                      int training, dyn_err *err) {
    (void)s, (void)training;
    const mm_impl *m = l->impl;
    const dyn_shape a = dyn_tensor_shape(&x[0]), b = dyn_tensor_shape(&x[1]);
    const mm_geo d = mm_get(m, &a, &b);
    return tf_rc(dyn_cuda_tf_matmul_forward(ctx, d.groups, d.M, d.K, d.N, m->ta, m->tb,
                                            x[0].data, x[1].data, y->data, err),
                 l, err);
}

static int mm_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                       const dyn_tensor *dy, dyn_tensor *dx, float *s, dyn_err *err) {
    (void)y, (void)s;
    const mm_impl *m = l->impl;
    const dyn_shape a = dyn_tensor_shape(&x[0]), b = dyn_tensor_shape(&x[1]);
    const mm_geo d = mm_get(m, &a, &b);
    return tf_rc(dyn_cuda_tf_matmul_backward(ctx, d.groups, d.M, d.K, d.N, m->ta, m->tb,
                                             x[0].data, x[1].data, dy->data, dx[0].data,
                                             dx[1].data, err),
                 l, err);
}

/* ---- permute ---- */

_Static_assert(DYN_KPERM_MAX >= PERM_MAX_ATOMS, "dyn_kperm holds every atom of a permute");

static dyn_kperm perm_geom(const dyn_layer *l) {
    const perm_impl *p = l->impl;
    dyn_kperm g;
    dyn_kperm_geom(&g, p->k, p->dims, p->perm, p->axis, p->start, p->len, p->step, p->nrun,
                   p->osz, p->ist, p->base, p->in_numel, p->out_numel);
    return g;
}

static int perm_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *s,
                        int training, dyn_err *err) {
    (void)s, (void)training;
    const dyn_kperm g = perm_geom(l);
    return tf_rc(dyn_cuda_tf_permute_forward(ctx, &g, x[0].shape[0], x[0].data, y->data, err), l,
                 err);
}

static int perm_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                         const dyn_tensor *dy, dyn_tensor *dx, float *s, dyn_err *err) {
    (void)y, (void)s;
    if (!dx[0].data) return 0;
    const dyn_kperm g = perm_geom(l);
    return tf_rc(dyn_cuda_tf_permute_backward(ctx, &g, x[0].shape[0], dy->data, dx[0].data, err),
                 l, err);
}

/* ---- concat along axis 1 ---- */

static dyn_kcat cat_geom(const dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y) {
    const concat_impl *p = l->impl;
    const int64_t batch = y->shape[0];
    dyn_kcat g = {.n = p->n};
    int64_t off = 0;
    for (int k = 0; k < p->n; k++) {
        g.xs[k] = batch ? dyn_tensor_numel(&x[k]) / batch : 0;
        g.off[k] = off;
        off += g.xs[k];
    }
    g.ys = off;
    return g;
}

static int cat_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *s,
                       int training, dyn_err *err) {
    (void)s, (void)training;
    const dyn_kcat g = cat_geom(l, x, y);
    const float *xs[4] = {NULL, NULL, NULL, NULL};
    for (int k = 0; k < g.n; k++) xs[k] = x[k].data;
    return tf_rc(dyn_cuda_tf_concat_forward(ctx, &g, y->shape[0], xs, y->data, err), l, err);
}

static int cat_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                        const dyn_tensor *dy, dyn_tensor *dx, float *s, dyn_err *err) {
    (void)s;
    const dyn_kcat g = cat_geom(l, x, y);
    float *dxs[4] = {NULL, NULL, NULL, NULL};
    for (int k = 0; k < g.n; k++) dxs[k] = dx[k].data;
    return tf_rc(dyn_cuda_tf_concat_backward(ctx, &g, y->shape[0], dy->data, dxs, err), l, err);
}

/* ---- reduce_mean over one axis ---- */

static int rm_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *s,
                      int training, dyn_err *err) {
    (void)s, (void)training;
    int64_t outer, n, inner;
    rm_geom(l->impl, &x[0], &outer, &n, &inner);
    return tf_rc(dyn_cuda_tf_mean_forward(ctx, outer, n, inner, x[0].data, y->data, err), l, err);
}

static int rm_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                       const dyn_tensor *dy, dyn_tensor *dx, float *s, dyn_err *err) {
    (void)y, (void)s;
    if (!dx[0].data) return 0;
    int64_t outer, n, inner;
    rm_geom(l->impl, &x[0], &outer, &n, &inner);
    return tf_rc(dyn_cuda_tf_mean_backward(ctx, outer, n, inner, dy->data, dx[0].data, err), l,
                 err);
}

/* ---- affine over trailing dims ---- */

/* Index of parameter `name`, or -1 (affine's weight and bias are each optional). */
static int param_index(const dyn_layer *l, const char *name) {
    for (int i = 0; i < l->nparams; i++)
        if (strcmp(l->params[i].name, name) == 0) return i;
    return -1;
}

static int af_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *s,
                      int training, dyn_err *err) {
    (void)s, (void)training;
    const af_impl *p = l->impl;
    const int iw = param_index(l, "weight"), ib = param_index(l, "bias");
    return tf_rc(dyn_cuda_tf_affine_forward(ctx, dyn_tensor_numel(&x[0]) / p->period, p->period,
                                            iw >= 0 ? l->params[iw].dval : NULL,
                                            ib >= 0 ? l->params[ib].dval : NULL, x[0].data,
                                            y->data, err),
                 l, err);
}

static int af_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                       const dyn_tensor *dy, dyn_tensor *dx, float *s, dyn_err *err) {
    (void)y, (void)s;
    const af_impl *p = l->impl;
    const int iw = param_index(l, "weight"), ib = param_index(l, "bias");
    return tf_rc(dyn_cuda_tf_affine_backward(ctx, dyn_tensor_numel(&x[0]) / p->period, p->period,
                                             iw >= 0 ? l->params[iw].dval : NULL, x[0].data,
                                             dy->data, dx[0].data, tf_dgrad(l, iw),
                                             tf_dgrad(l, ib), err),
                 l, err);
}

/* ---- cat_param ---- */

static dyn_kcp cp_kgeom(const dyn_layer *l, const dyn_tensor *x) {
    const cp_impl *p = l->impl;
    dyn_kcp g = {.at = p->at};
    cp_geom(p, x, &g.outer, &g.xs, &g.ps);
    return g;
}

static int cp_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *s,
                      int training, dyn_err *err) {
    (void)s, (void)training;
    const dyn_kcp g = cp_kgeom(l, &x[0]);
    return tf_rc(dyn_cuda_tf_cat_param_forward(ctx, &g, x[0].shape[0], l->params[0].dval,
                                               x[0].data, y->data, err),
                 l, err);
}

static int cp_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                       const dyn_tensor *dy, dyn_tensor *dx, float *s, dyn_err *err) {
    (void)y, (void)s;
    const dyn_kcp g = cp_kgeom(l, &x[0]);
    return tf_rc(dyn_cuda_tf_cat_param_backward(ctx, &g, x[0].shape[0], dy->data, dx[0].data,
                                                tf_dgrad(l, 0), err),
                 l, err);
}

/* ---- the op tables (registered by engine/cuda/backend.c) ---- */

#define TF_OP(NAME, FWD, BWD)                                                               \
    const dyn_backend_op dyn_cuda_op_##NAME = {.forward = FWD, .backward = BWD}

TF_OP(mul, bin_forward, bin_backward);
TF_OP(sub, bin_forward, bin_backward);
TF_OP(div, bin_forward, bin_backward);
TF_OP(sigmoid, un_forward, un_backward);
TF_OP(clip, un_forward, un_backward);
TF_OP(erf, un_forward, un_backward);
TF_OP(sqrt, un_forward, un_backward);
TF_OP(pow, un_forward, un_backward);
TF_OP(scale, scale_forward, scale_backward);
TF_OP(softmax, sm_forward, sm_backward);
TF_OP(permute, perm_forward, perm_backward);
TF_OP(concat, cat_forward, cat_backward);
TF_OP(reduce_mean, rm_forward, rm_backward);
TF_OP(affine, af_forward, af_backward);
TF_OP(cat_param, cp_forward, cp_backward);
const dyn_backend_op dyn_cuda_op_layernorm = {
    .scratch = ln_scratch, .forward = ln_forward, .backward = ln_backward};
const dyn_backend_op dyn_cuda_op_matmul = {
    .supports = mm_supports, .forward = mm_forward, .backward = mm_backward};
