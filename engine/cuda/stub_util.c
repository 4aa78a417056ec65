/* stub_util.c — util.cu's functions in a build without CUDA: they fail like stub.c's (no context
 * can exist in such a build, so they are unreachable with a valid one). */
#include "dyn_cuda_util.h"
#include "stub.h"

int dyn_cuda_fill(dyn_cuda_ctx *ctx, float *p, float v, int64_t n, dyn_err *err) {
    (void)ctx, (void)p, (void)v, (void)n;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_axpy(dyn_cuda_ctx *ctx, float *y, const float *x, float a, int64_t n,
                  dyn_err *err) {
    (void)ctx, (void)y, (void)x, (void)a, (void)n;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_optim(dyn_cuda_ctx *ctx, const dyn_optim_update *u, float *w, const float *g,
                   float *m, float *v, int64_t n, dyn_err *err) {
    (void)ctx, (void)u, (void)w, (void)g, (void)m, (void)v, (void)n;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_copy(dyn_cuda_ctx *ctx, void *dst_dev, const void *src_dev, size_t bytes,
                  dyn_err *err) {
    (void)ctx, (void)dst_dev, (void)src_dev, (void)bytes;
    return dyn_cuda__no_cuda(err);
}
