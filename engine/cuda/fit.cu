/* fit.cu — launchers of the conversion fit on the GPU (engine/convert/fit_cuda.c): the residual
 * of the data-free loss, the Adam update, and the sum of squares that gives the loss. Bodies:
 * kern_dyn.h; API: dyn_cuda_dyn.h. Grid-stride loops of 256 threads (at most 65535 blocks). */
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
