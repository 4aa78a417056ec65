/* stub_dyn.c — dyn_cuda_dyn.h in a build without CUDA (the default `make`): every launcher fails
 * with DYN_EUNSUP (no context can exist in this build, so none is reached with a valid one).
 * `make CUDA=1` compiles dyn_lin.cu and fit.cu instead. */
#include "dyn_cuda_dyn.h"
#include "stub.h"

int dyn_cuda_dyn_transpose(dyn_cuda_ctx *ctx, const float *src, int64_t rows, int64_t cols,
                           float *dst, dyn_err *err) {
    (void)ctx, (void)src, (void)rows, (void)cols, (void)dst;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_dyn_zero(dyn_cuda_ctx *ctx, float *p, int64_t n, dyn_err *err) {
    (void)ctx, (void)p, (void)n;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_dyn_bias_rows(dyn_cuda_ctx *ctx, float *y, const float *b, int64_t N, int out,
                           dyn_err *err) {
    (void)ctx, (void)y, (void)b, (void)N, (void)out;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_dyn_bias_grad(dyn_cuda_ctx *ctx, const float *dy, int64_t N, int out, float *db,
                           dyn_err *err) {
    (void)ctx, (void)dy, (void)N, (void)out, (void)db;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_dyn_gemm(dyn_cuda_ctx *ctx, int ta, int tb, int M, int N, int K, float alpha,
                      const float *A, int lda, const float *B, int ldb, float beta, float *C,
                      int ldc, dyn_err *err) {
    (void)ctx, (void)ta, (void)tb, (void)M, (void)N, (void)K, (void)alpha, (void)A, (void)lda;
    (void)B, (void)ldb, (void)beta, (void)C, (void)ldc;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_fit_residual(dyn_cuda_ctx *ctx, const float *what, const float *c, const float *wp,
                          float gs, int64_t n, float *g, dyn_err *err) {
    (void)ctx, (void)what, (void)c, (void)wp, (void)gs, (void)n, (void)g;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_fit_grad_l1(dyn_cuda_ctx *ctx, const dyn_sys *s, const float *g, float *gt,
                         float *part, const dyn_sys_grad *out, dyn_err *err) {
    (void)ctx, (void)s, (void)g, (void)gt, (void)part, (void)out;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_fit_adam(dyn_cuda_ctx *ctx, float lr, float b1, float b2, float bc1, float bc2,
                      float eps, const float *g, float *m1, float *m2, float *th, int64_t n,
                      dyn_err *err) {
    (void)ctx, (void)lr, (void)b1, (void)b2, (void)bc1, (void)bc2, (void)eps, (void)g, (void)m1;
    (void)m2, (void)th, (void)n;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_fit_sumsq(dyn_cuda_ctx *ctx, const float *x, int64_t n, double *h_out,
                       dyn_err *err) {
    (void)ctx, (void)x, (void)n;
    *h_out = 0.0;
    return dyn_cuda__no_cuda(err);
}
