/* stub_tf.c — the launchers of dyn_cuda_tf.h in a build without CUDA (the default `make`):
 * each fails with DYN_EUNSUP, like stub.c. `make CUDA=1` compiles engine/cuda/tf.cu instead. */
#include "dyn_cuda_tf.h"
#include "stub.h"

int dyn_cuda_tf_bin_forward(dyn_cuda_ctx *ctx, const dyn_kbin *g, const float *a, const float *b,
                            float *y, dyn_err *err) {
    (void)ctx, (void)g, (void)a, (void)b, (void)y;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_bin_backward(dyn_cuda_ctx *ctx, const dyn_kbin *g, const float *a, const float *b,
                             const float *y, const float *dy, float *da, float *db, dyn_err *err) {
    (void)ctx, (void)g, (void)a, (void)b, (void)y, (void)dy, (void)da, (void)db;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_unary_forward(dyn_cuda_ctx *ctx, int kind, float p0, float p1, const float *x,
                              float *y, int64_t n, dyn_err *err) {
    (void)ctx, (void)kind, (void)p0, (void)p1, (void)x, (void)y, (void)n;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_unary_backward(dyn_cuda_ctx *ctx, int kind, float p0, float p1, const float *x,
                               const float *y, const float *dy, float *dx, int64_t n,
                               dyn_err *err) {
    (void)ctx, (void)kind, (void)p0, (void)p1, (void)x, (void)y, (void)dy, (void)dx, (void)n;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_scale_forward(dyn_cuda_ctx *ctx, int64_t batch, int64_t ch, int64_t inner,
                              const float *w, const float *b, const float *x, float *y,
                              dyn_err *err) {
    (void)ctx, (void)batch, (void)ch, (void)inner, (void)w, (void)b, (void)x, (void)y;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_scale_backward(dyn_cuda_ctx *ctx, int64_t batch, int64_t ch, int64_t inner,
                               const float *w, const float *x, const float *dy, float *dx,
                               float *dw, float *db, dyn_err *err) {
    (void)ctx, (void)batch, (void)ch, (void)inner, (void)w, (void)x, (void)dy, (void)dx, (void)dw,
        (void)db;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_softmax_forward(dyn_cuda_ctx *ctx, int64_t rows, int64_t n, const float *x,
                                float *y, dyn_err *err) {
    (void)ctx, (void)rows, (void)n, (void)x, (void)y;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_softmax_backward(dyn_cuda_ctx *ctx, int64_t rows, int64_t n, const float *y,
                                 const float *dy, float *dx, dyn_err *err) {
    (void)ctx, (void)rows, (void)n, (void)y, (void)dy, (void)dx;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_layernorm_forward(dyn_cuda_ctx *ctx, int64_t rows, int64_t n, double eps,
                                  const float *w, const float *b, const float *x, float *y,
                                  dyn_err *err) {
    (void)ctx, (void)rows, (void)n, (void)eps, (void)w, (void)b, (void)x, (void)y;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_layernorm_backward(dyn_cuda_ctx *ctx, int64_t rows, int64_t n, double eps,
                                   const float *w, const float *x, const float *dy, float *dx,
                                   float *dw, float *db, float *st, dyn_err *err) {
    (void)ctx, (void)rows, (void)n, (void)eps, (void)w, (void)x, (void)dy, (void)dx, (void)dw,
        (void)db, (void)st;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_matmul_forward(dyn_cuda_ctx *ctx, int64_t groups, int M, int K, int N, int ta,
                               int tb, const float *A, const float *B, float *C, dyn_err *err) {
    (void)ctx, (void)groups, (void)M, (void)K, (void)N, (void)ta, (void)tb, (void)A, (void)B,
        (void)C;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_matmul_backward(dyn_cuda_ctx *ctx, int64_t groups, int M, int K, int N, int ta,
                                int tb, const float *A, const float *B, const float *dC, float *dA,
                                float *dB, dyn_err *err) {
    (void)ctx, (void)groups, (void)M, (void)K, (void)N, (void)ta, (void)tb, (void)A, (void)B,
        (void)dC, (void)dA, (void)dB;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_permute_forward(dyn_cuda_ctx *ctx, const dyn_kperm *g, int64_t batch,
                                const float *x, float *y, dyn_err *err) {
    (void)ctx, (void)g, (void)batch, (void)x, (void)y;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_permute_backward(dyn_cuda_ctx *ctx, const dyn_kperm *g, int64_t batch,
                                 const float *dy, float *dx, dyn_err *err) {
    (void)ctx, (void)g, (void)batch, (void)dy, (void)dx;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_concat_forward(dyn_cuda_ctx *ctx, const dyn_kcat *g, int64_t batch,
                               const float *const *x, float *y, dyn_err *err) {
    (void)ctx, (void)g, (void)batch, (void)x, (void)y;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_concat_backward(dyn_cuda_ctx *ctx, const dyn_kcat *g, int64_t batch,
                                const float *dy, float *const *dx, dyn_err *err) {
    (void)ctx, (void)g, (void)batch, (void)dy, (void)dx;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_mean_forward(dyn_cuda_ctx *ctx, int64_t outer, int64_t n, int64_t inner,
                             const float *x, float *y, dyn_err *err) {
    (void)ctx, (void)outer, (void)n, (void)inner, (void)x, (void)y;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_mean_backward(dyn_cuda_ctx *ctx, int64_t outer, int64_t n, int64_t inner,
                              const float *dy, float *dx, dyn_err *err) {
    (void)ctx, (void)outer, (void)n, (void)inner, (void)dy, (void)dx;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_affine_forward(dyn_cuda_ctx *ctx, int64_t rows, int64_t P, const float *w,
                               const float *b, const float *x, float *y, dyn_err *err) {
    (void)ctx, (void)rows, (void)P, (void)w, (void)b, (void)x, (void)y;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_affine_backward(dyn_cuda_ctx *ctx, int64_t rows, int64_t P, const float *w,
                                const float *x, const float *dy, float *dx, float *dw, float *db,
                                dyn_err *err) {
    (void)ctx, (void)rows, (void)P, (void)w, (void)x, (void)dy, (void)dx, (void)dw, (void)db;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_cat_param_forward(dyn_cuda_ctx *ctx, const dyn_kcp *g, int64_t batch,
                                  const float *w, const float *x, float *y, dyn_err *err) {
    (void)ctx, (void)g, (void)batch, (void)w, (void)x, (void)y;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_tf_cat_param_backward(dyn_cuda_ctx *ctx, const dyn_kcp *g, int64_t batch,
                                   const float *dy, float *dx, float *dw, dyn_err *err) {
    (void)ctx, (void)g, (void)batch, (void)dy, (void)dx, (void)dw;
    return dyn_cuda__no_cuda(err);
}
