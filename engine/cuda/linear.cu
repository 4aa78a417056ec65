/* linear.cu — the dense linear forward on the device (the counterpart of the `linear` op,
 * engine/ops/linear.c): y[N][out] = x[N][in] Wᵀ + b with one cuBLAS sgemm.
 *
 * cuBLAS is column-major: a row-major [r][c] array is its c×r matrix. So y (row-major
 * [N][out]) is the out×N matrix yᵀ = W xᵀ, where W (row-major [out][in]) is read as the in×out
 * matrix Wᵀ transposed (CUBLAS_OP_T, lda = in) and x as the in×N matrix xᵀ (lda = in). The
 * bias is broadcast into y first and the product accumulated on it (beta = 1).
 */
#include "cuda_impl.h"

__global__ void bias_rows_kernel(int64_t total, int out, const float *__restrict__ b,
                                 float *__restrict__ y) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t < total) y[t] = b[t % out];
}

extern "C" int dyn_cuda_linear_forward(dyn_cuda_ctx *ctx, const float *x_dev, int N, int in,
                                       const float *w_dev, const float *b_dev, int out,
                                       float *y_dev, dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    if (N < 1 || in < 1 || out < 1)
        return dyn_err_set(err, DYN_EINVAL, "linear forward: bad shape N=%d in=%d out=%d", N, in,
                           out);
    const float one = 1.0f, zero = 0.0f;
    if (b_dev) {
        const int64_t total = (int64_t)N * out;
        bias_rows_kernel<<<dyn_cuda__blocks(total, 256), 256, 0, ctx->stream>>>(total, out, b_dev,
                                                                                y_dev);
        CUDA_CHECK_LAUNCH();
    }
    CUBLAS_CHECK(cublasSgemm(ctx->blas, CUBLAS_OP_T, CUBLAS_OP_N, out, N, in, &one, w_dev, in,
                             x_dev, in, b_dev ? &one : &zero, y_dev, out));
    return 0;
}
