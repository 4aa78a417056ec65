/* util.cu — the backend's buffer kernels and the optimizer update on the device (bodies in
 * kern_util.h, shared with the host test tests/unit/test_cuda_kern_util.c). */
#include "cuda_impl.h"
#include "dyn_cuda_util.h"
#include "kern_util.h"

__global__ void fill_kernel(int64_t n, float *p, float v) {
    DYN_GRID_LOOP(i, n) kb_fill(i, p, v);
}

__global__ void axpy_kernel(int64_t n, float *y, const float *x, float a) {
    DYN_GRID_LOOP(i, n) kb_axpy(i, y, x, a);
}

__global__ void optim_kernel(int64_t n, dyn_optim_update u, float *w, const float *g, float *m,
                             float *v) {
    DYN_GRID_LOOP(i, n)
    kb_optim(i, u.adam, u.lr, u.mu, u.b1, u.b2, u.bc1, u.bc2, u.eps, u.wd, w, g, m, v);
}

/* Grid size of a grid-stride loop over n elements: enough blocks to fill the device, capped
 * (the loop covers the rest). */
static unsigned grid_of(int64_t n) {
    const int64_t b = (n + 255) / 256;
    return (unsigned)(b < 65535 ? (b > 0 ? b : 1) : 65535);
}

extern "C" int dyn_cuda_fill(dyn_cuda_ctx *ctx, float *p, float v, int64_t n, dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc || n <= 0) return rc;
    fill_kernel<<<grid_of(n), 256, 0, ctx->stream>>>(n, p, v);
    CUDA_CHECK_LAUNCH();
    return 0;
}

extern "C" int dyn_cuda_axpy(dyn_cuda_ctx *ctx, float *y, const float *x, float a, int64_t n,
                             dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc || n <= 0) return rc;
    axpy_kernel<<<grid_of(n), 256, 0, ctx->stream>>>(n, y, x, a);
    CUDA_CHECK_LAUNCH();
    return 0;
}

extern "C" int dyn_cuda_optim(dyn_cuda_ctx *ctx, const dyn_optim_update *u, float *w,
                              const float *g, float *m, float *v, int64_t n, dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc || n <= 0) return rc;
    if (u->adam && !v) return dyn_err_set(err, DYN_EINVAL, "optimizer: Adam needs v");
    optim_kernel<<<grid_of(n), 256, 0, ctx->stream>>>(n, *u, w, g, m, v);
    CUDA_CHECK_LAUNCH();
    return 0;
}

extern "C" int dyn_cuda_copy(dyn_cuda_ctx *ctx, void *dst_dev, const void *src_dev,
                             size_t bytes, dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc || bytes == 0) return rc;
    CUDA_CHECK(cudaMemcpyAsync(dst_dev, src_dev, bytes, cudaMemcpyDeviceToDevice, ctx->stream));
    return 0;
}
