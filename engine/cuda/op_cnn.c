/* op_cnn.c — the CNN ops on the CUDA backend: one dyn_backend_op (backend.h) per op — conv2d,
 * relu, flatten, add, maxpool2d, avgpool2d, globalavgpool, linear, batchnorm, dyn_conv2d —
 * from a layer's attributes and device parameters (dyn_param.dval / .dgrad) to the launchers
 * of dyn_cuda_cnn.h. Plain C, compiled in every build: without CUDA the launchers are the
 * stubs of stub_cnn.c (and no context exists to call these with).
 *
 * Each forward computes what the CPU op's forward computes (batchnorm: batch statistics and
 * the running-statistics update when training), each backward what the CPU op's backward does
 * (parameter gradients +=, dx[k] = when dx[k].data is not NULL). Errors: the launcher's
 * message (the failing CUDA / cuBLAS call) prefixed with the layer's name.
 */
#include <string.h>

#include "../backend.h"
#include "../ops/conv_impl.h"
#include "../ops/dyn_conv_impl.h"
#include "../ops/linear_impl.h"
#include "../ops/norm_impl.h"
#include "../ops/pool_impl.h"
#include "dyn_cuda_cnn.h"
#include "op_cnn.h"

/* rc, with err naming the layer when it is an error. */
static int op_rc(int rc, const dyn_layer *l, dyn_err *err) {
    if (rc && err) dyn_err_prefix(err, "layer '%s'", l->name);
    return rc;
}

/* The shape of a tensor as the shape inference sees it. */
static dyn_shape shape_of(const dyn_tensor *t) { return dyn_tensor_shape(t); }

/* ---- conv2d ---------------------------------------------------------------------------------- */

/* Geometry of a convolution on input shape s; 0, or -1 when the output would be empty. */
static int geom_of(const dyn_shape *s, int kh, int kw, int sh, int sw, int ph, int pw, int dh,
                   int dw, dyn_conv_geom *g) {
    if (s->ndim != 4) return -1;
    *g = (dyn_conv_geom){.N = (int)s->d[0], .C = (int)s->d[1], .H = (int)s->d[2],
                         .W = (int)s->d[3], .KH = kh, .KW = kw, .SH = sh, .SW = sw, .PH = ph,
                         .PW = pw, .DH = dh, .DW = dw};
    return dyn_conv_geom_out(g);
}

static int conv_geom_l(const dyn_layer *l, const dyn_shape *s, dyn_conv_geom *g) {
    const conv_impl *c = l->impl;
    return geom_of(s, c->kh, c->kw, c->sh, c->sw, c->ph, c->pw, c->dh, c->dw, g);
}

/* Every shape the CPU op accepts (its infer() checks the sizes). */
static int conv_supports(const dyn_layer *l, const dyn_shape *in, int training) {
    (void)training;
    dyn_shape out;
    return l->ops->infer(l, in, &out, NULL) == 0;
}

static size_t conv_scratch(const dyn_layer *l, const dyn_shape *in, int training) {
    (void)training;
    dyn_conv_geom g;
    if (conv_geom_l(l, &in[0], &g)) return 0;
    return dyn_cuda_conv2d_scratch(&g, ((const conv_impl *)l->impl)->cout);
}

static int conv_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y,
                        float *scratch, int training, dyn_err *err) {
    (void)training;
    const conv_impl *c = l->impl;
    dyn_shape s = shape_of(&x[0]);
    dyn_conv_geom g;
    if (conv_geom_l(l, &s, &g))
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': bad input shape", l->name);
    return op_rc(dyn_cuda_conv2d_forward(ctx, &g, c->groups, c->cout, x[0].data, l->params[0].dval,
                                         c->has_bias ? l->params[1].dval : NULL, y->data, scratch,
                                         err),
                 l, err);
}

static int conv_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                         const dyn_tensor *dy, dyn_tensor *dx, float *scratch, dyn_err *err) {
    (void)y;
    const conv_impl *c = l->impl;
    dyn_shape s = shape_of(&x[0]);
    dyn_conv_geom g;
    if (conv_geom_l(l, &s, &g))
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': bad input shape", l->name);
    return op_rc(dyn_cuda_conv2d_backward(ctx, &g, c->groups, c->cout, l->params[0].dval,
                                          dy->data, l->params[0].dgrad, 1,
                                          c->has_bias ? l->params[1].dgrad : NULL, dx[0].data,
                                          scratch, err),
                 l, err);
}

const dyn_backend_op dyn_cuda_op_conv2d = {
    .supports = conv_supports,
    .scratch = conv_scratch,
    .forward = conv_forward,
    .backward = conv_backward,
};

/* ---- relu, flatten, add ---------------------------------------------------------------------- */

static int relu_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y,
                        float *scratch, int training, dyn_err *err) {
    (void)scratch, (void)training;
    return op_rc(dyn_cuda_relu_forward(ctx, x[0].data, y->data, dyn_tensor_numel(y), err), l, err);
}

static int relu_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                         const dyn_tensor *dy, dyn_tensor *dx, float *scratch, dyn_err *err) {
    (void)x, (void)scratch;
    if (!dx[0].data) return 0;
    return op_rc(dyn_cuda_relu_backward(ctx, y->data, dy->data, dx[0].data, dyn_tensor_numel(y),
                                        err),
                 l, err);
}

const dyn_backend_op dyn_cuda_op_relu = {.forward = relu_forward, .backward = relu_backward};

/* flatten: the same bytes (a copy unless the executor aliased y to x). */
static int flatten_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y,
                           float *scratch, int training, dyn_err *err) {
    (void)scratch, (void)training;
    return op_rc(dyn_cuda_cnn_copy(ctx, y->data, x[0].data, dyn_tensor_numel(y), err), l, err);
}

static int flatten_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                            const dyn_tensor *dy, dyn_tensor *dx, float *scratch, dyn_err *err) {
    (void)x, (void)y, (void)scratch;
    if (!dx[0].data) return 0;
    return op_rc(dyn_cuda_cnn_copy(ctx, dx[0].data, dy->data, dyn_tensor_numel(dy), err), l, err);
}

const dyn_backend_op dyn_cuda_op_flatten = {.forward = flatten_forward,
                                            .backward = flatten_backward};

/* Sizes of t right-aligned into 4 dimensions. */
static void sizes4(const dyn_tensor *t, int64_t *s) {
    for (int i = 0; i < 4; i++) {
        const int d = i - (4 - t->ndim);
        s[i] = d >= 0 ? t->shape[d] : 1;
    }
}

static dyn_kbcast bcast_of(const dyn_tensor *x, const dyn_tensor *y) {
    dyn_kbcast s;
    sizes4(&x[0], s.a);
    sizes4(&x[1], s.b);
    sizes4(y, s.y);
    return s;
}

static int add_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y,
                       float *scratch, int training, dyn_err *err) {
    (void)scratch, (void)training;
    dyn_kbcast s = bcast_of(x, y);
    return op_rc(dyn_cuda_add_forward(ctx, &s, x[0].data, x[1].data, y->data, err), l, err);
}

static int add_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                        const dyn_tensor *dy, dyn_tensor *dx, float *scratch, dyn_err *err) {
    (void)scratch;
    dyn_kbcast s = bcast_of(x, y);
    return op_rc(dyn_cuda_add_backward(ctx, &s, dy->data, dx[0].data, dx[1].data, err), l, err);
}

const dyn_backend_op dyn_cuda_op_add = {.forward = add_forward, .backward = add_backward};

/* ---- pooling --------------------------------------------------------------------------------- */

static dyn_kpool pool_of(const dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y) {
    const pool_impl *p = l->impl;
    return (dyn_kpool){.H = (int)x->shape[2], .W = (int)x->shape[3], .OH = (int)y->shape[2],
                       .OW = (int)y->shape[3], .kh = p->kh, .kw = p->kw, .sh = p->sh, .sw = p->sw,
                       .ph = p->ph, .pw = p->pw, .count_include_pad = p->count_include_pad};
}

/* The argmax of each output (int32, in float scratch as on the CPU). */
static size_t maxpool_scratch(const dyn_layer *l, const dyn_shape *in, int training) {
    (void)training;
    dyn_shape out;
    if (l->ops->infer(l, in, &out, NULL)) return 0;
    return (size_t)dyn_shape_numel(&out);
}

static int maxpool_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y,
                           float *scratch, int training, dyn_err *err) {
    (void)training;
    dyn_kpool p = pool_of(l, &x[0], y);
    return op_rc(dyn_cuda_maxpool2d_forward(ctx, &p, x[0].shape[0] * x[0].shape[1], x[0].data,
                                            y->data, (int32_t *)scratch, err),
                 l, err);
}

static int maxpool_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                            const dyn_tensor *dy, dyn_tensor *dx, float *scratch, dyn_err *err) {
    if (!dx[0].data) return 0;
    dyn_kpool p = pool_of(l, &x[0], y);
    return op_rc(dyn_cuda_maxpool2d_backward(ctx, &p, x[0].shape[0] * x[0].shape[1],
                                             (const int32_t *)scratch, dy->data, dx[0].data, err),
                 l, err);
}

const dyn_backend_op dyn_cuda_op_maxpool2d = {
    .scratch = maxpool_scratch,
    .forward = maxpool_forward,
    .backward = maxpool_backward,
};

static int avgpool_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y,
                           float *scratch, int training, dyn_err *err) {
    (void)scratch, (void)training;
    dyn_kpool p = pool_of(l, &x[0], y);
    return op_rc(dyn_cuda_avgpool2d_forward(ctx, &p, x[0].shape[0] * x[0].shape[1], x[0].data,
                                            y->data, err),
                 l, err);
}

static int avgpool_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                            const dyn_tensor *dy, dyn_tensor *dx, float *scratch, dyn_err *err) {
    (void)scratch;
    if (!dx[0].data) return 0;
    dyn_kpool p = pool_of(l, &x[0], y);
    return op_rc(dyn_cuda_avgpool2d_backward(ctx, &p, x[0].shape[0] * x[0].shape[1], dy->data,
                                             dx[0].data, err),
                 l, err);
}

const dyn_backend_op dyn_cuda_op_avgpool2d = {.forward = avgpool_forward,
                                              .backward = avgpool_backward};

static int gap_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y,
                       float *scratch, int training, dyn_err *err) {
    (void)scratch, (void)training;
    return op_rc(dyn_cuda_gap_forward(ctx, x[0].shape[0] * x[0].shape[1],
                                      x[0].shape[2] * x[0].shape[3], x[0].data, y->data, err),
                 l, err);
}

static int gap_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                        const dyn_tensor *dy, dyn_tensor *dx, float *scratch, dyn_err *err) {
    (void)y, (void)scratch;
    if (!dx[0].data) return 0;
    return op_rc(dyn_cuda_gap_backward(ctx, x[0].shape[0] * x[0].shape[1],
                                       x[0].shape[2] * x[0].shape[3], dy->data, dx[0].data, err),
                 l, err);
}

const dyn_backend_op dyn_cuda_op_globalavgpool = {.forward = gap_forward,
                                                  .backward = gap_backward};

/* ---- linear ---------------------------------------------------------------------------------- */

/* Rows of an input [N, ..., in] (what the CPU op runs: every row of the last axis). */
static int linear_rows(const dyn_layer *l, const dyn_tensor *x) {
    return (int)(dyn_tensor_numel(x) / ((const linear_impl *)l->impl)->in);
}

static int linear_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y,
                          float *scratch, int training, dyn_err *err) {
    (void)scratch, (void)training;
    const linear_impl *im = l->impl;
    return op_rc(dyn_cuda_linear_forward(ctx, x[0].data, linear_rows(l, &x[0]), im->in,
                                         l->params[0].dval,
                                         im->has_bias ? l->params[1].dval : NULL, im->out,
                                         y->data, err),
                 l, err);
}

static int linear_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                           const dyn_tensor *dy, dyn_tensor *dx, float *scratch, dyn_err *err) {
    (void)y, (void)scratch;
    const linear_impl *im = l->impl;
    return op_rc(dyn_cuda_linear_backward(ctx, x[0].data, dy->data, linear_rows(l, &x[0]),
                                          im->in, im->out, l->params[0].dval, l->params[0].dgrad,
                                          im->has_bias ? l->params[1].dgrad : NULL, dx[0].data,
                                          err),
                 l, err);
}

const dyn_backend_op dyn_cuda_op_linear = {.forward = linear_forward,
                                           .backward = linear_backward};

/* ---- batchnorm ------------------------------------------------------------------------------- */

static size_t bn_scratch(const dyn_layer *l, const dyn_shape *in, int training) {
    (void)training;
    return DYN_KBN_SCRATCH(((const bn_impl *)l->impl)->channels, in[0].d[0]);
}

static dyn_kbn bn_of(const dyn_layer *l, const dyn_tensor *x, int training) {
    const bn_impl *im = l->impl;
    dyn_kbn b = {.N = x->shape[0], .S = 1, .C = im->channels, .eps = im->eps,
                 .momentum = (float)im->momentum, .training = training};
    for (int i = 2; i < x->ndim; i++) b.S *= x->shape[i];
    return b;
}

static int bn_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y,
                      float *scratch, int training, dyn_err *err) {
    dyn_kbn b = bn_of(l, &x[0], training);
    dyn_param *p = l->params;
    return op_rc(dyn_cuda_batchnorm_forward(ctx, &b, x[0].data, p[BN_WEIGHT].dval,
                                            p[BN_BIAS].dval, p[BN_RMEAN].dval, p[BN_RVAR].dval,
                                            scratch, y->data, err),
                 l, err);
}

static int bn_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                       const dyn_tensor *dy, dyn_tensor *dx, float *scratch, dyn_err *err) {
    (void)y;
    dyn_kbn b = bn_of(l, &x[0], 1); /* the flag in scratch says which statistics ran */
    dyn_param *p = l->params;
    return op_rc(dyn_cuda_batchnorm_backward(ctx, &b, x[0].data, dy->data, p[BN_WEIGHT].dval,
                                             scratch, p[BN_WEIGHT].dgrad, p[BN_BIAS].dgrad,
                                             dx[0].data, err),
                 l, err);
}

const dyn_backend_op dyn_cuda_op_batchnorm = {
    .scratch = bn_scratch,
    .forward = bn_forward,
    .backward = bn_backward,
};

/* ---- dyn_conv2d --------------------------------------------------------------------------------
 * Two executions on the device, chosen per layer (dc_native):
 *   materialized — prepare() materializes the kernel on the device: the K² systems (r, t) into
 *     slices [K²][Cout][Cin] (dyn_cuda_materialize, states read from the params' dval, offset
 *     0), permuted into w [Cout][Cin·K²] with the offset c added from its dval (no copy to the
 *     host). Forward and backward are conv2d's with that w, the kernel gradient going to a
 *     scratch G and from its (r, t) slices into the states' gradients
 *     (dyn_cuda_grad_materialized).
 *   native (l1) — no kernel formed, nothing prepared: dyn_cuda_dc_native_forward / _backward
 *     (dyn_cuda_cnn.h) run the K² systems natively on tap-major columns, as the CPU op's
 *     native path does.
 * exec = "native" runs native; "materialized" materialized; "auto" (l1) native where the CPU op
 * holds no kernel (its cost model: native at every batch size), else materialized — the CPU
 * op's per-shape measurement times the CPU, which says nothing about the device, where the
 * materialized kernel's cuBLAS sgemm is the fast path. l2 / inv: materialized (no native). */

typedef struct dc_dev {
    float *w; /* [Cout][Cin·K²], from the context's pool */
} dc_dev;

static int dc_geom_l(const dyn_layer *l, const dyn_shape *s, dyn_conv_geom *g) {
    const dc_impl *d = l->impl;
    return geom_of(s, d->K, d->K, d->stride, d->stride, d->pad, d->pad, d->dil, d->dil, g);
}

/* 1 when layer l runs natively on the device (see above). */
static int dc_native(const dc_impl *d) {
    return d->kernel == DYN_KERNEL_L1 &&
           (d->exec == DYN_EXEC_NATIVE || (d->exec == DYN_EXEC_AUTO && !d->hold_w));
}

/* Every shape the CPU op accepts (groups > 1 never gets here: the CPU op refuses them too). */
static int dc_supports(const dyn_layer *l, const dyn_shape *in, int training) {
    (void)training;
    dyn_shape out;
    return l->ops->infer(l, in, &out, NULL) == 0;
}

/* Native: dyn_cuda_dcn_scratch's. Materialized: conv2d's; training adds G [Cout][Cin·K²] and
 * the slices [K²][Cout][Cin]. */
static size_t dc_scratch(const dyn_layer *l, const dyn_shape *in, int training) {
    const dc_impl *d = l->impl;
    dyn_conv_geom g;
    if (dc_geom_l(l, &in[0], &g)) return 0;
    if (dc_native(d)) return dyn_cuda_dcn_scratch(&g, d->cout, training).total;
    const size_t kern = (size_t)d->cout * d->cin * d->K * d->K;
    return dyn_cuda_conv2d_scratch(&g, d->cout) + (training ? 2 * kern : 0);
}

/* The native launchers' view of the layer on geometry g. */
static dyn_cuda_dcn dc_dcn(const dyn_layer *l, const dyn_conv_geom *g) {
    const dc_impl *d = l->impl;
    return (dyn_cuda_dcn){.g = *g, .cout = d->cout, .H = d->H, .q = d->q,
                          .a = l->params[P_A].dval, .b = l->params[P_B].dval,
                          .lambda = l->params[P_LAMBDA].dval, .c = l->params[P_C].dval,
                          .bias = d->bias ? l->params[P_BIAS].dval : NULL};
}

/* The (r, t) system on the device parameters, without its offset: c lives on the device (the
 * kernel adds it there; the states' gradients do not depend on it). */
static dyn_sys dc_dev_sys(const dyn_layer *l, int r, int t) {
    const dc_impl *d = l->impl;
    const int64_t hq = (int64_t)d->H * d->q;
    return (dyn_sys){.m = d->cout, .n = d->cin, .H = d->H, .q = d->q, .kernel = d->kernel,
                     .u = l->params[P_A].dval + r * hq * d->cout,
                     .v = l->params[P_B].dval + t * hq * d->cin,
                     .lambda = l->params[P_LAMBDA].dval + ((int64_t)r * d->K + t) * d->H,
                     .c = 0.0f};
}

static void dc_release(void *ctx, dyn_layer *l) {
    dc_dev *dv = l->dev;
    if (!dv) return;
    dyn_cuda_free(ctx, dv->w);
    free(dv);
    l->dev = NULL;
}

static int dc_prepare(void *ctx, dyn_layer *l, dyn_err *err) {
    const dc_impl *d = l->impl;
    const int KK = d->K * d->K;
    const size_t kern = (size_t)d->cout * d->cin * KK;
    dc_dev *dv = l->dev;
    float *sl = NULL;
    int rc = 0;
    if (dc_native(d)) { /* nothing derived: the systems run from the states */
        dc_release(ctx, l);
        return 0;
    }
    if (!dv) {
        if (!(dv = calloc(1, sizeof *dv)))
            return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
        l->dev = dv;
        if ((rc = dyn_cuda_alloc(ctx, kern * sizeof(float), (void **)&dv->w, err))) goto out;
    }
    if ((rc = dyn_cuda_alloc(ctx, kern * sizeof(float), (void **)&sl, err))) goto out;
    for (int r = 0; r < d->K && !rc; r++)
        for (int t = 0; t < d->K && !rc; t++) {
            const dyn_sys s = dc_dev_sys(l, r, t);
            rc = dyn_cuda_materialize(ctx, &s, sl + ((size_t)r * d->K + t) * d->cout * d->cin,
                                      err);
        }
    if (!rc)
        rc = dyn_cuda_dc_kernel(ctx, d->cout, d->cin, KK, sl, l->params[P_C].dval, dv->w, err);
out:
    dyn_cuda_free(ctx, sl);
    if (rc) dc_release(ctx, l);
    return op_rc(rc, l, err);
}

/* The geometry of input shape s into *g, and the device kernel prepared when materialized: 0, or
 * DYN_EINVAL naming the layer. */
static int dc_check(const dyn_layer *l, const dyn_shape *s, dyn_conv_geom *g, dyn_err *err) {
    if (dc_geom_l(l, s, g))
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': bad input shape", l->name);
    if (!dc_native(l->impl) && !l->dev)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': the device kernel is not prepared",
                           l->name);
    return 0;
}

static int dc_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y,
                      float *scratch, int training, dyn_err *err) {
    (void)training;
    const dc_impl *d = l->impl;
    const dc_dev *dv = l->dev;
    dyn_shape s = shape_of(&x[0]);
    dyn_conv_geom g;
    const int rc = dc_check(l, &s, &g, err);
    if (rc) return rc;
    if (dc_native(d)) {
        const dyn_cuda_dcn p = dc_dcn(l, &g);
        return op_rc(dyn_cuda_dc_native_forward(ctx, &p, x[0].data, y->data, scratch, err), l,
                     err);
    }
    return op_rc(dyn_cuda_conv2d_forward(ctx, &g, 1, d->cout, x[0].data, dv->w,
                                         d->bias ? l->params[P_BIAS].dval : NULL, y->data,
                                         scratch, err),
                 l, err);
}

static int dc_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                       const dyn_tensor *dy, dyn_tensor *dx, float *scratch, dyn_err *err) {
    (void)y;
    const dc_impl *d = l->impl;
    const dc_dev *dv = l->dev;
    dyn_shape s = shape_of(&x[0]);
    dyn_conv_geom g;
    int rc = dc_check(l, &s, &g, err);
    if (rc) return rc;
    if (dc_native(d)) {
        const dyn_cuda_dcn p = dc_dcn(l, &g);
        const dyn_sys_grad gr = {.du = l->params[P_A].dgrad, .dv = l->params[P_B].dgrad,
                                 .dlambda = l->params[P_LAMBDA].dgrad,
                                 .dc = l->params[P_C].dgrad};
        return op_rc(dyn_cuda_dc_native_backward(ctx, &p, dy->data, &gr,
                                                 d->bias ? l->params[P_BIAS].dgrad : NULL,
                                                 dx[0].data, scratch, err),
                     l, err);
    }
    const int KK = d->K * d->K;
    const int64_t hq = (int64_t)d->H * d->q;
    const size_t kern = (size_t)d->cout * d->cin * KK;
    float *G = scratch + dyn_cuda_conv2d_scratch(&g, d->cout), *sl = G + kern;
    rc = dyn_cuda_conv2d_backward(ctx, &g, 1, d->cout, dv->w, dy->data, G, 0,
                                  d->bias ? l->params[P_BIAS].dgrad : NULL, dx[0].data, scratch,
                                  err);
    if (!rc) rc = dyn_cuda_dc_slices(ctx, d->cout, d->cin, KK, G, sl, err);
    for (int r = 0; r < d->K && !rc; r++)
        for (int t = 0; t < d->K && !rc; t++) {
            const dyn_sys sys = dc_dev_sys(l, r, t);
            const int64_t col = (int64_t)r * d->K + t;
            const dyn_sys_grad gr = {.du = l->params[P_A].dgrad + r * hq * d->cout,
                                     .dv = l->params[P_B].dgrad + t * hq * d->cin,
                                     .dlambda = l->params[P_LAMBDA].dgrad + col * d->H,
                                     .dc = l->params[P_C].dgrad};
            rc = dyn_cuda_grad_materialized(ctx, &sys, sl + col * d->cout * d->cin, &gr, err);
        }
    return op_rc(rc, l, err);
}

const dyn_backend_op dyn_cuda_op_dyn_conv2d = {
    .supports = dc_supports,
    .scratch = dc_scratch,
    .prepare = dc_prepare,
    .release = dc_release,
    .forward = dc_forward,
    .backward = dc_backward,
};
