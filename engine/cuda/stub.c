/* stub.c — the CUDA API of dyn_cuda.h in a build without CUDA (the default `make`): every call
 * fails with DYN_EUNSUP, so callers need no #ifdef. `make CUDA=1` compiles the .cu files
 * instead of this file. */
#include "dyn_cuda.h"
#include "stub.h"

int dyn_cuda__no_cuda(dyn_err *err) {
    return dyn_err_set(err, DYN_EUNSUP,
                       "this build has no CUDA backend: rebuild with `make CUDA=1` (needs the "
                       "CUDA Toolkit) to use a GPU");
}

int dyn_cuda_built(void) { return 0; }

int dyn_cuda_device_count(int *count, dyn_err *err) {
    *count = 0;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_device_info(int dev, dyn_cuda_info *info, dyn_err *err) {
    (void)dev;
    *info = (dyn_cuda_info){0};
    return dyn_cuda__no_cuda(err);
}

dyn_cuda_ctx *dyn_cuda_ctx_new(int dev, dyn_err *err) {
    (void)dev;
    dyn_cuda__no_cuda(err);
    return NULL;
}

/* No context can exist in this build: the functions taking one are unreachable with a valid
 * one, and do nothing (or fail) with NULL. */
void dyn_cuda_ctx_free(dyn_cuda_ctx *ctx) { (void)ctx; }

void dyn_cuda_pool_get(const dyn_cuda_ctx *ctx, dyn_cuda_pool_stats *st) {
    (void)ctx;
    *st = (dyn_cuda_pool_stats){0};
}

void dyn_cuda_mem_process(size_t *reserved, size_t *in_use) {
    *reserved = 0;
    *in_use = 0;
}

int dyn_cuda_alloc(dyn_cuda_ctx *ctx, size_t bytes, void **p, dyn_err *err) {
    (void)ctx, (void)bytes;
    *p = NULL;
    return dyn_cuda__no_cuda(err);
}

void dyn_cuda_free(dyn_cuda_ctx *ctx, void *p) { (void)ctx, (void)p; }

int dyn_cuda_pool_trim(dyn_cuda_ctx *ctx, dyn_err *err) {
    (void)ctx;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_host_alloc(size_t bytes, void **p, dyn_err *err) {
    (void)bytes;
    *p = NULL;
    return dyn_cuda__no_cuda(err);
}

void dyn_cuda_host_free(void *p) { (void)p; }

int dyn_cuda_upload(dyn_cuda_ctx *ctx, void *dst_dev, const void *src, size_t bytes,
                    dyn_err *err) {
    (void)ctx, (void)dst_dev, (void)src, (void)bytes;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_download(dyn_cuda_ctx *ctx, void *dst, const void *src_dev, size_t bytes,
                      dyn_err *err) {
    (void)ctx, (void)dst, (void)src_dev, (void)bytes;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_sync(dyn_cuda_ctx *ctx, dyn_err *err) {
    (void)ctx;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_materialize(dyn_cuda_ctx *ctx, const dyn_sys *s, float *w_dev, dyn_err *err) {
    (void)ctx, (void)s, (void)w_dev;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_linear_forward(dyn_cuda_ctx *ctx, const float *x_dev, int N, int in,
                            const float *w_dev, const float *b_dev, int out, float *y_dev,
                            dyn_err *err) {
    (void)ctx, (void)x_dev, (void)N, (void)in, (void)w_dev, (void)b_dev, (void)out, (void)y_dev;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_native_forward(dyn_cuda_ctx *ctx, const dyn_sys *s, const float *x_dev,
                            float *y_dev, int64_t cols, dyn_err *err) {
    (void)ctx, (void)s, (void)x_dev, (void)y_dev, (void)cols;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_native_backward(dyn_cuda_ctx *ctx, const dyn_sys *s, const float *x_dev,
                             const float *d_dev, float *dx_dev, int64_t cols,
                             const dyn_sys_grad *g, dyn_err *err) {
    (void)ctx, (void)s, (void)x_dev, (void)d_dev, (void)dx_dev, (void)cols, (void)g;
    return dyn_cuda__no_cuda(err);
}

int dyn_cuda_grad_materialized(dyn_cuda_ctx *ctx, const dyn_sys *s, const float *g_dev,
                               const dyn_sys_grad *out, dyn_err *err) {
    (void)ctx, (void)s, (void)g_dev, (void)out;
    return dyn_cuda__no_cuda(err);
}
