/* stub_cnn.c — the CNN launchers of dyn_cuda_cnn.h in a build without CUDA (the default
 * `make`): every call fails with DYN_EUNSUP, like stub.c, so the glue (op_cnn.c) needs no
 * #ifdef. `make CUDA=1` compiles cnn.cu instead of this file. */
#include "dyn_cuda_cnn.h"
#include "stub.h"

int dyn_cuda_conv2d_forward(dyn_cuda_ctx *ctx, const dyn_conv_geom *g, int groups, int cout,
                            const float *x, const float *w, const float *b, float *y,
                            float *scratch, dyn_err *err) {
    (void)ctx, (void)g, (void)groups, (void)cout, (void)x, (void)w, (void)b, (void)y, (void)scratch;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_conv2d_backward(dyn_cuda_ctx *ctx, const dyn_conv_geom *g, int groups, int cout,
                             const float *w, const float *dy, float *dw, int accumulate, float *db,
                             float *dx, float *scratch, dyn_err *err) {
    (void)ctx, (void)g, (void)groups, (void)cout, (void)w, (void)dy, (void)dw, (void)accumulate,
    (void)db, (void)dx, (void)scratch;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_relu_forward(dyn_cuda_ctx *ctx, const float *x, float *y, int64_t n, dyn_err *err) {
    (void)ctx, (void)x, (void)y, (void)n;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_relu_backward(dyn_cuda_ctx *ctx, const float *y, const float *dy, float *dx, int64_t n,
                           dyn_err *err) {
    (void)ctx, (void)y, (void)dy, (void)dx, (void)n;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_cnn_copy(dyn_cuda_ctx *ctx, float *dst, const float *src, int64_t n, dyn_err *err) {
    (void)ctx, (void)dst, (void)src, (void)n;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_add_forward(dyn_cuda_ctx *ctx, const dyn_kbcast *s, const float *a, const float *b,
                         float *y, dyn_err *err) {
    (void)ctx, (void)s, (void)a, (void)b, (void)y;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_add_backward(dyn_cuda_ctx *ctx, const dyn_kbcast *s, const float *dy, float *da,
                          float *db, dyn_err *err) {
    (void)ctx, (void)s, (void)dy, (void)da, (void)db;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_maxpool2d_forward(dyn_cuda_ctx *ctx, const dyn_kpool *p, int64_t planes,
                               const float *x, float *y, int32_t *am, dyn_err *err) {
    (void)ctx, (void)p, (void)planes, (void)x, (void)y, (void)am;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_maxpool2d_backward(dyn_cuda_ctx *ctx, const dyn_kpool *p, int64_t planes,
                                const int32_t *am, const float *dy, float *dx, dyn_err *err) {
    (void)ctx, (void)p, (void)planes, (void)am, (void)dy, (void)dx;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_avgpool2d_forward(dyn_cuda_ctx *ctx, const dyn_kpool *p, int64_t planes,
                               const float *x, float *y, dyn_err *err) {
    (void)ctx, (void)p, (void)planes, (void)x, (void)y;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_avgpool2d_backward(dyn_cuda_ctx *ctx, const dyn_kpool *p, int64_t planes,
                                const float *dy, float *dx, dyn_err *err) {
    (void)ctx, (void)p, (void)planes, (void)dy, (void)dx;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_gap_forward(dyn_cuda_ctx *ctx, int64_t planes, int64_t HW, const float *x, float *y,
                         dyn_err *err) {
    (void)ctx, (void)planes, (void)HW, (void)x, (void)y;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_gap_backward(dyn_cuda_ctx *ctx, int64_t planes, int64_t HW, const float *dy, float *dx,
                          dyn_err *err) {
    (void)ctx, (void)planes, (void)HW, (void)dy, (void)dx;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_linear_backward(dyn_cuda_ctx *ctx, const float *x, const float *dy, int N, int in,
                             int out, const float *w, float *dw, float *db, float *dx,
                             dyn_err *err) {
    (void)ctx, (void)x, (void)dy, (void)N, (void)in, (void)out, (void)w, (void)dw, (void)db,
    (void)dx;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_batchnorm_forward(dyn_cuda_ctx *ctx, const dyn_kbn *b, const float *x,
                               const float *gamma, const float *beta, float *rmean, float *rvar,
                               float *scratch, float *y, dyn_err *err) {
    (void)ctx, (void)b, (void)x, (void)gamma, (void)beta, (void)rmean, (void)rvar, (void)scratch,
    (void)y;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_batchnorm_backward(dyn_cuda_ctx *ctx, const dyn_kbn *b, const float *x,
                                const float *dy, const float *gamma, float *scratch, float *dgamma,
                                float *dbeta, float *dx, dyn_err *err) {
    (void)ctx, (void)b, (void)x, (void)dy, (void)gamma, (void)scratch, (void)dgamma, (void)dbeta,
    (void)dx;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_dc_kernel(dyn_cuda_ctx *ctx, int cout, int cin, int KK, const float *sl,
                       const float *off, float *w, dyn_err *err) {
    (void)ctx, (void)cout, (void)cin, (void)KK, (void)sl, (void)off, (void)w;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_dc_slices(dyn_cuda_ctx *ctx, int cout, int cin, int KK, const float *g, float *sl,
                       dyn_err *err) {
    (void)ctx, (void)cout, (void)cin, (void)KK, (void)g, (void)sl;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_dc_native_forward(dyn_cuda_ctx *ctx, const dyn_cuda_dcn *p, const float *x,
                               float *y, float *scratch, dyn_err *err) {
    (void)ctx, (void)p, (void)x, (void)y, (void)scratch;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_dc_native_backward(dyn_cuda_ctx *ctx, const dyn_cuda_dcn *p, const float *dy,
                                const dyn_sys_grad *gr, float *dbias, float *dx,
                                float *scratch, dyn_err *err) {
    (void)ctx, (void)p, (void)dy, (void)gr, (void)dbias, (void)dx, (void)scratch;
    return dyn_cuda__no_cuda(err);
}
