/* op_dyn.c — the DyN linear layer ("dyn_linear", engine/ops/dyn_linear.c) on the CUDA backend:
 * the glue from the layer to the kernels (dyn_cuda.h, dyn_cuda_dyn.h). Plain C, compiled in
 * every build (the launchers are stubs without CUDA=1).
 *
 * The two execution paths of the CPU layer, chosen the same way from its attributes:
 *   materialized — prepare() materializes W [out][in] on the device (dyn_cuda_materialize from
 *                  the states' dval) into l->dev; forward: dyn_cuda_linear_forward (bias, one
 *                  sgemm); backward: dx = δ W and G = δᵀ x (sgemm), then the states' gradients
 *                  from G (dyn_cuda_grad_materialized).
 *   native (l1)  — never forms W: x and δ are transposed into the native kernels' feature-major
 *                  layout ([in][N], scratch), dyn_cuda_native_forward / _backward (CUB sorts and
 *                  scans), the result transposed back (batch 1 needs no transpose).
 * Which: the CPU layer's choice of what it holds decides (d->hold_w: exec "materialized", the
 * l2 / inv kernels, or "auto" where its cost model says dense can win). A layer that holds W
 * runs materialized, except at most DYN_CUDA_DL_NATIVE_MAX_ROWS batch rows with exec "auto"
 * (l1): natively. A layer without W (exec "native", or "auto" where native always wins) runs
 * natively. Forward and backward make the same choice (a function of the rows only).
 *
 * The offset c is a device parameter but the kernels take it by value: prepare() downloads it
 * (one float) into l->dev, so it is current after every optimizer step (backend.h calls
 * prepare then).
 *
 * Not supported (the layer stays on the CPU): the native path with max(in, out) >= 2^24 or
 * H·q·max(in, out) >= 2^31 (the CUB kernels' index range), a W with more than 524280 rows
 * (dyn_cuda_materialize's grid).
 */
#include <stdlib.h>

#include "../ops/dyn_linear_impl.h"
#include "dyn_cuda_dyn.h"
#include "op_dyn.h"

enum { P_U = DYN_LINEAR_P_U, P_V = DYN_LINEAR_P_V, P_LAMBDA = DYN_LINEAR_P_LAMBDA,
       P_C = DYN_LINEAR_P_C, P_BIAS = DYN_LINEAR_P_BIAS };

/* l->dev of a placed dyn_linear layer. */
typedef struct dl_dev {
    float *w; /* [out][in] on the device when the layer holds W, else NULL */
    float c;  /* the offset c (a copy of its device value, taken by prepare) */
} dl_dev;

/* Scratch offsets are rounded to 64 floats (256 bytes: cuBLAS's and CUB's preferred alignment). */
static int64_t pad64(int64_t n) { return (n + 63) & ~(int64_t)63; }

static int64_t dl_rows(const dyn_linear_impl *d, int64_t numel) { return numel / d->in; }

static int dl_native_at(const dyn_linear_impl *d, int64_t N) {
    if (d->kernel != DYN_KERNEL_L1 || d->exec == DYN_EXEC_MATERIALIZED) return 0;
    return !d->hold_w || (d->exec == DYN_EXEC_AUTO && N <= DYN_CUDA_DL_NATIVE_MAX_ROWS);
}

/* The layer's system with the states on the device. */
static dyn_sys dl_dev_sys(const dyn_layer *l) {
    const dyn_linear_impl *d = l->impl;
    const dl_dev *dv = l->dev;
    dyn_sys s = {.m = d->out, .n = d->in, .H = d->H, .q = d->q, .kernel = d->kernel,
                 .u = l->params[P_U].dval, .v = l->params[P_V].dval,
                 .lambda = l->params[P_LAMBDA].dval, .c = dv ? dv->c : 0.0f};
    return s;
}

static int dl_supports(const dyn_layer *l, const dyn_shape *in, int training) {
    (void)training;
    const dyn_linear_impl *d = l->impl;
    if (in[0].ndim < 2 || in[0].d[in[0].ndim - 1] != d->in) return 0;
    const int64_t N = dl_rows(d, dyn_shape_numel(&in[0]));
    if (N < 1 || N > INT32_MAX) return 0;
    const int64_t big = DYN_MAX(d->in, d->out);
    if (dl_native_at(d, N) &&
        (big >= ((int64_t)1 << 24) || (int64_t)d->H * d->q * big >= INT32_MAX))
        return 0;
    if (d->hold_w && d->out > 65535 * 8) return 0;
    return 1;
}

static size_t dl_scratch(const dyn_layer *l, const dyn_shape *in, int training) {
    const dyn_linear_impl *d = l->impl;
    const int64_t N = dl_rows(d, dyn_shape_numel(&in[0]));
    if (dl_native_at(d, N)) {
        if (N == 1) return 0; /* [1][F] is already feature-major */
        /* forward: xt [in][N], yt [out][N]; backward: xt, dt [out][N], dxt [in][N] */
        return (size_t)(pad64((int64_t)d->in * N) * 2 + pad64((int64_t)d->out * N));
    }
    return training ? (size_t)d->in * d->out : 0; /* G [out][in] */
}

static int dl_prepare(void *ctx, dyn_layer *l, dyn_err *err) {
    const dyn_linear_impl *d = l->impl;
    dl_dev *dv = l->dev;
    if (!dv) {
        dv = calloc(1, sizeof *dv);
        if (!dv) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
        l->dev = dv;
    }
    int rc = dyn_cuda_download(ctx, &dv->c, l->params[P_C].dval, sizeof(float), err);
    if (!rc && d->hold_w && !dv->w)
        rc = dyn_cuda_alloc(ctx, (size_t)d->in * d->out * sizeof(float), (void **)&dv->w, err);
    if (!rc && d->hold_w) {
        const dyn_sys s = dl_dev_sys(l);
        rc = dyn_cuda_materialize(ctx, &s, dv->w, err);
    }
    return rc ? dyn_err_prefix(err, "layer '%s' (dyn_linear on the GPU)", l->name) : 0;
}

static void dl_release(void *ctx, dyn_layer *l) {
    dl_dev *dv = l->dev;
    if (!dv) return;
    dyn_cuda_free(ctx, dv->w);
    free(dv);
    l->dev = NULL;
}

static int dl_forward(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                      int training, dyn_err *err) {
    (void)training; /* the forward does not depend on it */
    const dyn_linear_impl *d = l->impl;
    const dl_dev *dv = l->dev;
    const int64_t N = dl_rows(d, dyn_tensor_numel(&x[0]));
    const float *b = d->bias ? l->params[P_BIAS].dval : NULL;
    const dyn_sys s = dl_dev_sys(l);
    int rc;
    if (dl_native_at(d, N)) {
        const float *xt = x[0].data;
        float *yt = y->data;
        if (N > 1) {
            float *xs = scratch;
            yt = scratch + pad64((int64_t)d->in * N);
            rc = dyn_cuda_dyn_transpose(ctx, x[0].data, N, d->in, xs, err);
            xt = xs;
            if (rc) goto fail;
        }
        if ((rc = dyn_cuda_dyn_zero(ctx, yt, (int64_t)d->out * N, err)) ||
            (rc = dyn_cuda_native_forward(ctx, &s, xt, yt, N, err)) ||
            (N > 1 && (rc = dyn_cuda_dyn_transpose(ctx, yt, d->out, N, y->data, err))) ||
            (b && (rc = dyn_cuda_dyn_bias_rows(ctx, y->data, b, N, d->out, err))))
            goto fail;
    } else if ((rc = dyn_cuda_linear_forward(ctx, x[0].data, (int)N, d->in, dv->w, b, d->out,
                                             y->data, err))) {
        goto fail;
    }
    return 0;
fail:
    return dyn_err_prefix(err, "layer '%s' (dyn_linear forward on the GPU)", l->name);
}

static int dl_backward(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                       const dyn_tensor *dy, dyn_tensor *dx, float *scratch, dyn_err *err) {
    (void)y;
    const dyn_linear_impl *d = l->impl;
    const dl_dev *dv = l->dev;
    const int64_t N = dl_rows(d, dyn_tensor_numel(&x[0]));
    const dyn_sys s = dl_dev_sys(l);
    const dyn_sys_grad g = {.du = l->params[P_U].dgrad, .dv = l->params[P_V].dgrad,
                            .dlambda = l->params[P_LAMBDA].dgrad, .dc = l->params[P_C].dgrad};
    float *dxo = dx[0].data;
    int rc;
    if (dl_native_at(d, N)) {
        const float *xt = x[0].data, *dt = dy->data;
        float *dxt = dxo;
        if (N > 1) {
            float *xs = scratch, *ds = xs + pad64((int64_t)d->in * N);
            dxt = dxo ? ds + pad64((int64_t)d->out * N) : NULL;
            if ((rc = dyn_cuda_dyn_transpose(ctx, x[0].data, N, d->in, xs, err)) ||
                (rc = dyn_cuda_dyn_transpose(ctx, dy->data, N, d->out, ds, err)))
                goto fail;
            xt = xs;
            dt = ds;
        }
        if ((dxt && (rc = dyn_cuda_dyn_zero(ctx, dxt, (int64_t)d->in * N, err))) ||
            (rc = dyn_cuda_native_backward(ctx, &s, xt, dt, dxt, N, &g, err)) ||
            (dxo && N > 1 && (rc = dyn_cuda_dyn_transpose(ctx, dxt, d->in, N, dxo, err))))
            goto fail;
    } else {
        /* dx [N][in] = δ [N][out] · W [out][in]; G [out][in] = δᵀ · x [N][in] */
        if ((dxo && (rc = dyn_cuda_dyn_gemm(ctx, 0, 0, (int)N, d->in, d->out, 1.0f, dy->data,
                                            d->out, dv->w, d->in, 0.0f, dxo, d->in, err))) ||
            (rc = dyn_cuda_dyn_gemm(ctx, 1, 0, d->out, d->in, (int)N, 1.0f, dy->data, d->out,
                                    x[0].data, d->in, 0.0f, scratch, d->in, err)) ||
            (rc = dyn_cuda_grad_materialized(ctx, &s, scratch, &g, err)))
            goto fail;
    }
    if (d->bias &&
        (rc = dyn_cuda_dyn_bias_grad(ctx, dy->data, N, d->out, l->params[P_BIAS].dgrad, err)))
        goto fail;
    return 0;
fail:
    return dyn_err_prefix(err, "layer '%s' (dyn_linear backward on the GPU)", l->name);
}

const dyn_backend_op dyn_cuda_op_dyn_linear = {
    .supports = dl_supports,
    .scratch = dl_scratch,
    .prepare = dl_prepare,
    .release = dl_release,
    .forward = dl_forward,
    .backward = dl_backward,
};
