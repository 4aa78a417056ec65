/* dyn_cuda_dyn.h — launchers of the DyN layers' device op (op_dyn.c; dyn_lin.cu) and of the
 * conversion fit on the GPU (engine/convert/fit_cuda.c; fit.cu). Bodies: kern_dyn.h.
 *
 * Callable from C17 in every build: `make CUDA=1` compiles dyn_lin.cu / fit.cu, the default build
 * stub_dyn.c (every function fails with DYN_EUNSUP, "this build has no CUDA backend ...").
 * All pointers are device pointers (never dereferenced on the host) unless named h_*; work is
 * queued on ctx's stream (asynchronous unless said otherwise). Nothing is allocated: outputs
 * and scratch are the caller's.
 *
 * Errors (dyn_cuda.h): 0, or DYN_EINVAL (a bad size), DYN_EUNSUP (no CUDA in this build),
 * DYN_EIO (a failed launch or cuBLAS call; err names the call, file and line).
 */
#ifndef DYN_CUDA_DYN_H
#define DYN_CUDA_DYN_H

#include "dyn_cuda.h"

#ifdef __cplusplus
extern "C" {
#endif

/* dst [cols][rows] = srcᵀ for src [rows][cols] (dst must not overlap src). */
int dyn_cuda_dyn_transpose(dyn_cuda_ctx *ctx, const float *src, int64_t rows, int64_t cols,
                           float *dst, dyn_err *err);

/* p[0..n) = 0. */
int dyn_cuda_dyn_zero(dyn_cuda_ctx *ctx, float *p, int64_t n, dyn_err *err);

/* y[r][i] += b[i] for y [N][out]. */
int dyn_cuda_dyn_bias_rows(dyn_cuda_ctx *ctx, float *y, const float *b, int64_t N, int out,
                           dyn_err *err);

/* db[i] += Σ_r dy[r][i] for dy [N][out] (one thread per entry, rows in order: deterministic). */
int dyn_cuda_dyn_bias_grad(dyn_cuda_ctx *ctx, const float *dy, int64_t N, int out, float *db,
                           dyn_err *err);

/* Row-major C [M][N] = alpha·op(A)·op(B) + beta·C, op(X) = X or Xᵀ (ta, tb = 1: transposed),
 * lda / ldb / ldc the row strides; one cuBLAS sgemm (FP32, CUBLAS_DEFAULT_MATH: no TF32). */
int dyn_cuda_dyn_gemm(dyn_cuda_ctx *ctx, int ta, int tb, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc, dyn_err *err);

/* ---- the conversion fit (fit.cu) ------------------------------------------------------------ */

/* g[t] = gs·(what[t] + c[0] − wp[t]) for t in [0, n) (g may equal what). */
int dyn_cuda_fit_residual(dyn_cuda_ctx *ctx, const float *what, const float *c, const float *wp,
                          float gs, int64_t n, float *g, dyn_err *err);

/* The gradient of an l1 system's states from G = ∂loss/∂Ŵ [m][n] (s: states on the device),
 * accumulated (+=) into out (du, dv, dλ, dc: all required) — dyn_cuda_grad_materialized's
 * result for l1, deterministic (kern_dyn.h dyn_k_fit_du / _dv / _lc). Scratch: gt (m·n floats:
 * Gᵀ) and part ((H + 1)·n floats). DYN_EINVAL for another kernel or a NULL gradient. */
int dyn_cuda_fit_grad_l1(dyn_cuda_ctx *ctx, const dyn_sys *s, const float *g, float *gt,
                         float *part, const dyn_sys_grad *out, dyn_err *err);

/* One Adam step (kern_dyn.h dyn_k_adam) of θ[0..n) with gradient g and moments m1, m2. */
int dyn_cuda_fit_adam(dyn_cuda_ctx *ctx, float lr, float b1, float b2, float bc1, float bc2,
                      float eps, const float *g, float *m1, float *m2, float *th, int64_t n,
                      dyn_err *err);

/* *h_out = Σ x[t]² over [0, n) (cuBLAS sdot; waits for the stream). */
int dyn_cuda_fit_sumsq(dyn_cuda_ctx *ctx, const float *x, int64_t n, double *h_out,
                       dyn_err *err);

#ifdef __cplusplus
}
#endif

#endif
