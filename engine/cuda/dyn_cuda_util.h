/* dyn_cuda_util.h — the CUDA backend's buffer kernels and optimizer update (util.cu; stubs in
 * stub_util.c). Device pointers, queued on the context's stream; each returns 0, or DYN_EUNSUP
 * (a build without CUDA), DYN_EINVAL or DYN_EIO with err naming the failing call. */
#ifndef DYN_CUDA_UTIL_H
#define DYN_CUDA_UTIL_H

#ifdef __cplusplus
extern "C" {
#endif

#include "../backend.h"
#include "dyn_cuda.h"

/* p[0..n) = v. */
int dyn_cuda_fill(dyn_cuda_ctx *ctx, float *p, float v, int64_t n, dyn_err *err);
/* y[0..n) += a x[0..n). */
int dyn_cuda_axpy(dyn_cuda_ctx *ctx, float *y, const float *x, float a, int64_t n,
                  dyn_err *err);
/* One optimizer update of w[0..n) (backend.h's dyn_optim_update; v may be NULL for SGD). */
int dyn_cuda_optim(dyn_cuda_ctx *ctx, const dyn_optim_update *u, float *w, const float *g,
                   float *m, float *v, int64_t n, dyn_err *err);
/* Device -> device copy of `bytes`. */
int dyn_cuda_copy(dyn_cuda_ctx *ctx, void *dst_dev, const void *src_dev, size_t bytes,
                  dyn_err *err);

#ifdef __cplusplus
}
#endif

#endif
