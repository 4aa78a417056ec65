/* fit.cu — launchers of the conversion fit on the GPU (engine/convert/fit_cuda.c): the residual
 * of the data-free loss, the l1 state gradient (du, dv, then dλ and dc from column partials:
 * coalesced reads, fixed summation order), the Adam update, and the sum of squares that gives
 * the loss. Bodies: kern_dyn.h; API: dyn_cuda_dyn.h. Grid-stride loops of 256 threads (at most
 * 65535 blocks). */
#include "cuda_impl.h"
#include "dyn_cuda_dyn.h"
#include "kern_dyn.h"

#define FIT_THREADS 256

static unsigned grid_for(int64_t n) {
    return (unsigned)DYN_MAX(1, DYN_MIN((n + FIT_THREADS - 1) / FIT_THREADS, (int64_t)65535));
}

__global__ void fit_residual_kernel(int64_t n, const float *what, const float *__restrict__ c,
                                    const float *__restrict__ wp, float gs, float *g) {
    DYN_GRID_LOOP(t, n) dyn_k_fit_residual(t, what, c, wp, gs, g);
}

__global__ void fit_adam_kernel(int64_t n, float lr, float b1, float b2, float bc1, float bc2,
                                float eps, const float *__restrict__ g, float *__restrict__ m1,
                                float *__restrict__ m2, float *__restrict__ th) {
    DYN_GRID_LOOP(i, n) dyn_k_adam(i, lr, b1, b2, bc1, bc2, eps, g, m1, m2, th);
}

__global__ void fit_du_kernel(int64_t total, int m, int n, int q, const float *__restrict__ u,
                              const float *__restrict__ v, const float *__restrict__ lambda,
                              const float *__restrict__ gt, float *__restrict__ du) {
    DYN_GRID_LOOP(t, total) dyn_k_fit_du(t, m, n, q, u, v, lambda, gt, du);
}

__global__ void fit_dv_kernel(int64_t total, int m, int n, int q, const float *__restrict__ u,
                              const float *__restrict__ v, const float *__restrict__ lambda,
                              const float *__restrict__ g, float *__restrict__ dv,
                              float *__restrict__ lpart, float *__restrict__ cpart) {
    DYN_GRID_LOOP(t, total) dyn_k_fit_dv(t, m, n, q, u, v, lambda, g, dv, lpart, cpart);
}

__global__ void fit_lc_kernel(int n, int H, const float *__restrict__ lpart,
                              const float *__restrict__ cpart, float *__restrict__ dlambda,
                              float *__restrict__ dc) {
    DYN_GRID_LOOP(h, (int64_t)H + 1) dyn_k_fit_lc(h, n, H, lpart, cpart, dlambda, dc);
}

extern "C" int dyn_cuda_fit_grad_l1(dyn_cuda_ctx *ctx, const dyn_sys *s, const float *g,
                                    float *gt, float *part, const dyn_sys_grad *out,
                                    dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    if (s->kernel != DYN_KERNEL_L1 || s->m < 1 || s->n < 1 || s->H < 1 || s->q < 1 || !out->du ||
        !out->dv || !out->dlambda || !out->dc)
        return dyn_err_set(err, DYN_EINVAL,
                           "fit gradient: needs an l1 system (m=%d n=%d H=%d q=%d) and every "
                           "gradient pointer",
                           s->m, s->n, s->H, s->q);
    if ((rc = dyn_cuda_dyn_transpose(ctx, g, s->m, s->n, gt, err))) return rc;
    const int64_t hq = (int64_t)s->H * s->q, ndu = hq * s->m, ndv = (int64_t)s->H * s->n;
    fit_du_kernel<<<grid_for(ndu), FIT_THREADS, 0, ctx->stream>>>(ndu, s->m, s->n, s->q, s->u,
                                                                  s->v, s->lambda, gt, out->du);
    CUDA_CHECK_LAUNCH();
    fit_dv_kernel<<<grid_for(ndv), FIT_THREADS, 0, ctx->stream>>>(
        ndv, s->m, s->n, s->q, s->u, s->v, s->lambda, g, out->dv, part, part + ndv);
    CUDA_CHECK_LAUNCH();
    fit_lc_kernel<<<grid_for(s->H + 1), FIT_THREADS, 0, ctx->stream>>>(
        s->n, s->H, part, part + ndv, out->dlambda, out->dc);
    CUDA_CHECK_LAUNCH();
    return 0;
}

extern "C" int dyn_cuda_fit_residual(dyn_cuda_ctx *ctx, const float *what, const float *c,
                                     const float *wp, float gs, int64_t n, float *g,
                                     dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    if (n < 1) return dyn_err_set(err, DYN_EINVAL, "fit residual: bad size %lld", (long long)n);
    fit_residual_kernel<<<grid_for(n), FIT_THREADS, 0, ctx->stream>>>(n, what, c, wp, gs, g);
    CUDA_CHECK_LAUNCH();
    return 0;
}

extern "C" int dyn_cuda_fit_adam(dyn_cuda_ctx *ctx, float lr, float b1, float b2, float bc1,
                                 float bc2, float eps, const float *g, float *m1, float *m2,
                                 float *th, int64_t n, dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    if (n < 0) return dyn_err_set(err, DYN_EINVAL, "fit Adam: bad size %lld", (long long)n);
    if (!n) return 0;
    fit_adam_kernel<<<grid_for(n), FIT_THREADS, 0, ctx->stream>>>(n, lr, b1, b2, bc1, bc2, eps, g,
                                                                  m1, m2, th);
    CUDA_CHECK_LAUNCH();
    return 0;
}

extern "C" int dyn_cuda_fit_sumsq(dyn_cuda_ctx *ctx, const float *x, int64_t n, double *h_out,
                                  dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    if (n < 1 || n > INT32_MAX)
        return dyn_err_set(err, DYN_EINVAL, "fit loss: bad size %lld", (long long)n);
    float s = 0.0f; /* host pointer mode (the context's default): cublasSdot waits for it */
    CUBLAS_CHECK(cublasSdot(ctx->blas, (int)n, x, 1, x, 1, &s));
    *h_out = s;
    return 0;
}
