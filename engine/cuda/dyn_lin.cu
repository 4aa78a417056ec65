/* dyn_lin.cu — launchers of the DyN linear layer's device op (op_dyn.c): transposes between
 * the layer's batch-first activations and the native kernels' feature-major arrays, the bias
 * and its gradient, and a row-major sgemm. Bodies: kern_dyn.h; API: dyn_cuda_dyn.h.
 *
 * Every 1-D kernel is a grid-stride loop over its body (kern.h), 256 threads a block, at most
 * 65535 blocks (larger sizes loop).
 */
#include "cuda_impl.h"
#include "dyn_cuda_dyn.h"
#include "kern_dyn.h"

#define LIN_THREADS 256

/* Blocks of a grid-stride launch over n indices. */
static unsigned grid_for(int64_t n) {
    return (unsigned)DYN_MAX(1, DYN_MIN((n + LIN_THREADS - 1) / LIN_THREADS, (int64_t)65535));
}

__global__ void transpose_kernel(int64_t rows, int64_t cols, const float *__restrict__ src,
                                 float *__restrict__ dst) {
    DYN_GRID_LOOP(t, rows * cols) dyn_k_transpose(t, rows, cols, src, dst);
}

__global__ void bias_rows_add_kernel(int64_t total, int out, const float *__restrict__ b,
                                     float *__restrict__ y) {
    DYN_GRID_LOOP(t, total) dyn_k_add_bias_rows(t, out, b, y);
}

__global__ void bias_grad_kernel(int64_t N, int out, const float *__restrict__ dy,
                                 float *__restrict__ db) {
    DYN_GRID_LOOP(i, (int64_t)out) dyn_k_bias_grad(i, N, out, dy, db);
}

extern "C" int dyn_cuda_dyn_transpose(dyn_cuda_ctx *ctx, const float *src, int64_t rows,
                                      int64_t cols, float *dst, dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    if (rows < 1 || cols < 1)
        return dyn_err_set(err, DYN_EINVAL, "transpose: bad shape %lld×%lld", (long long)rows,
                           (long long)cols);
    transpose_kernel<<<grid_for(rows * cols), LIN_THREADS, 0, ctx->stream>>>(rows, cols, src,
                                                                            dst);
    CUDA_CHECK_LAUNCH();
    return 0;
}

extern "C" int dyn_cuda_dyn_zero(dyn_cuda_ctx *ctx, float *p, int64_t n, dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    if (n < 0) return dyn_err_set(err, DYN_EINVAL, "zero: negative size %lld", (long long)n);
    if (n) CUDA_CHECK(cudaMemsetAsync(p, 0, (size_t)n * sizeof(float), ctx->stream));
    return 0;
}

extern "C" int dyn_cuda_dyn_bias_rows(dyn_cuda_ctx *ctx, float *y, const float *b, int64_t N,
                                      int out, dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    if (N < 1 || out < 1)
        return dyn_err_set(err, DYN_EINVAL, "bias: bad shape N=%lld out=%d", (long long)N, out);
    bias_rows_add_kernel<<<grid_for(N * out), LIN_THREADS, 0, ctx->stream>>>(N * out, out, b, y);
    CUDA_CHECK_LAUNCH();
    return 0;
}

extern "C" int dyn_cuda_dyn_bias_grad(dyn_cuda_ctx *ctx, const float *dy, int64_t N, int out,
                                      float *db, dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    if (N < 1 || out < 1)
        return dyn_err_set(err, DYN_EINVAL, "bias gradient: bad shape N=%lld out=%d",
                           (long long)N, out);
    bias_grad_kernel<<<grid_for(out), LIN_THREADS, 0, ctx->stream>>>(N, out, dy, db);
    CUDA_CHECK_LAUNCH();
    return 0;
}

/* Row-major C = op(A) op(B) is, read column-major, Cᵀ = op(B)ᵀ op(A)ᵀ: cuBLAS gets B first
 * (N×K after its op), then A, with the same transpose flags and the row strides as leading
 * dimensions. */
extern "C" int dyn_cuda_dyn_gemm(dyn_cuda_ctx *ctx, int ta, int tb, int M, int N, int K,
                                 float alpha, const float *A, int lda, const float *B, int ldb,
                                 float beta, float *C, int ldc, dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    if (M < 1 || N < 1 || K < 1)
        return dyn_err_set(err, DYN_EINVAL, "gemm: bad shape M=%d N=%d K=%d", M, N, K);
    CUBLAS_CHECK(cublasSgemm(ctx->blas, tb ? CUBLAS_OP_T : CUBLAS_OP_N,
                             ta ? CUBLAS_OP_T : CUBLAS_OP_N, N, M, K, &alpha, B, ldb, A, lda,
                             &beta, C, ldc));
    return 0;
}
