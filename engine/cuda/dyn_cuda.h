/* dyn_cuda.h — the CUDA backend's C API (design: engine/README.md "Backends (CPU, CUDA)").
 *
 * Callable from C17 code in every build: `make CUDA=1` compiles the implementation (the .cu
 * files of engine/cuda/); the default (CPU) build links engine/cuda/stub.c instead, where every
 * function fails with DYN_EUNSUP ("this build has no CUDA backend: rebuild with `make CUDA=1`
 * ...") and dyn_cuda_built() returns 0, so callers need no #ifdef.
 *
 * Error convention (engine/base.h): 0 on success or a negative DYN_E* code, with err->msg
 * naming the failing CUDA / cuBLAS call, its error string, and the source file and line:
 *   DYN_EUNSUP  no CUDA in this build, no device, or a device number out of range;
 *   DYN_ENOMEM  device or pinned host memory exhausted (cudaErrorMemoryAllocation);
 *   DYN_EINVAL  a bad argument (negative size, NULL context);
 *   DYN_EIO     any other CUDA or cuBLAS failure (a launch failure, a lost device).
 *
 * Memory: a context owns a caching pool of device memory (size classes: powers of two from
 * 256 bytes to 1 MiB, multiples of 2 MiB above): dyn_cuda_alloc takes the smallest free cached
 * block of at least the request's class and at most twice it, and cudaMalloc's a new one only
 * when there is none; dyn_cuda_free marks the block free again. Everything the pool ever
 * allocated is released by dyn_cuda_ctx_free (or, for free blocks, dyn_cuda_pool_trim). No
 * managed memory. Device pointers are never
 * dereferenced on the host: move data with dyn_cuda_upload / dyn_cuda_download.
 *
 * Streams: every call on a context is ordered on its one stream. Uploads and kernels are
 * asynchronous; dyn_cuda_download and dyn_cuda_sync wait for the stream. A context is used by
 * one thread at a time.
 */
#ifndef DYN_CUDA_H
#define DYN_CUDA_H

/* The engine's headers are C: from the .cu files (C++) their functions have C linkage. */
#ifdef __cplusplus
extern "C" {
#endif

#include "../base.h"
#include "../dyn/dyn.h"

/* 1 when this build has the CUDA backend (make CUDA=1), else 0. Never fails. */
int dyn_cuda_built(void);

/* Number of CUDA devices into *count (0 in a build without CUDA: then DYN_EUNSUP). Returns 0,
 * or DYN_EUNSUP when the build lacks CUDA or the driver reports no device (err says which:
 * "no CUDA-capable device is detected", "CUDA driver version is insufficient", ...). */
int dyn_cuda_device_count(int *count, dyn_err *err);

typedef struct dyn_cuda_info {
    char name[256];      /* "NVIDIA H200" */
    int major, minor;    /* compute capability */
    size_t total_bytes;  /* device memory */
    size_t free_bytes;   /* free device memory at the time of the query */
    int multiprocessors;
} dyn_cuda_info;

/* Fills *info for device `dev` (0-based). Returns 0, DYN_EUNSUP (no CUDA, dev out of range),
 * or DYN_EIO. */
int dyn_cuda_device_info(int dev, dyn_cuda_info *info, dyn_err *err);

/* A context on one device: its stream, its cuBLAS handle, its memory pool. */
typedef struct dyn_cuda_ctx dyn_cuda_ctx;

/* New context on device `dev`. Returns it (the caller frees it with dyn_cuda_ctx_free), or NULL
 * with err filled (DYN_EUNSUP without CUDA or device, DYN_ENOMEM, DYN_EIO). */
dyn_cuda_ctx *dyn_cuda_ctx_new(int dev, dyn_err *err);
/* Waits for the stream, releases every pool block (handed out or cached), the stream and the
 * cuBLAS handle. Blocks still held by callers become invalid. NULL is a no-op. */
void dyn_cuda_ctx_free(dyn_cuda_ctx *ctx);

/* Pool accounting of a context, in bytes. */
typedef struct dyn_cuda_pool_stats {
    size_t reserved;  /* cudaMalloc'ed and not yet freed (handed out + cached) */
    size_t in_use;    /* handed out (rounded to the size class) */
    int64_t mallocs;  /* cudaMalloc calls made so far */
    int64_t hits;     /* allocations served from a free list */
} dyn_cuda_pool_stats;
void dyn_cuda_pool_get(const dyn_cuda_ctx *ctx, dyn_cuda_pool_stats *st);
/* The same totals over every context of the process (what dynd's /metrics reports): device
 * memory the pools hold (reserved) and hand out (in use), in bytes; 0 without CUDA. */
void dyn_cuda_mem_process(size_t *reserved, size_t *in_use);

/* Device memory of at least `bytes` (> 0) from the context's pool, 256-byte aligned, contents
 * undefined. Returns 0 with *p set, or DYN_EINVAL / DYN_ENOMEM / DYN_EIO with *p = NULL. The
 * block belongs to the context: give it back with dyn_cuda_free (or dyn_cuda_ctx_free). */
int dyn_cuda_alloc(dyn_cuda_ctx *ctx, size_t bytes, void **p, dyn_err *err);
/* Returns a block of dyn_cuda_alloc to its free list (work queued on the stream that still
 * reads it stays valid: the block is reused only by later calls on the same stream). NULL is a
 * no-op; a pointer the pool did not hand out aborts (a bug). */
void dyn_cuda_free(dyn_cuda_ctx *ctx, void *p);
/* Releases the cached (free) blocks to the device; handed-out blocks stay valid. Returns 0 or
 * DYN_EIO. */
int dyn_cuda_pool_trim(dyn_cuda_ctx *ctx, dyn_err *err);

/* Page-locked host memory (fast, asynchronous copies) for staging batches. Returns 0 with *p
 * set (caller frees with dyn_cuda_host_free), or DYN_EUNSUP / DYN_ENOMEM / DYN_EIO. */
int dyn_cuda_host_alloc(size_t bytes, void **p, dyn_err *err);
void dyn_cuda_host_free(void *p);

/* Host -> device copy queued on the context's stream (asynchronous: from pinned memory it
 * returns at once; `src` must stay unchanged until the stream reaches the copy). */
int dyn_cuda_upload(dyn_cuda_ctx *ctx, void *dst_dev, const void *src, size_t bytes,
                    dyn_err *err);
/* Device -> host copy; waits for the stream, so `dst` holds the data on return. */
int dyn_cuda_download(dyn_cuda_ctx *ctx, void *dst, const void *src_dev, size_t bytes,
                      dyn_err *err);
/* Waits for everything queued on the context's stream; reports a kernel's failure. */
int dyn_cuda_sync(dyn_cuda_ctx *ctx, dyn_err *err);

/* ---- kernels (device pointers; queued on the context's stream) ---------------------------- */

/* W[m][n] (row stride n, overwritten) from the states of s, whose u, v and lambda point to
 * device memory (layouts of dyn_sys: u [H][q][m], v [H][q][n], lambda [H]); any kernel (l1, l2,
 * inv). The device counterpart of dyn_sys_materialize. Returns 0, DYN_EINVAL or DYN_EIO. */
int dyn_cuda_materialize(dyn_cuda_ctx *ctx, const dyn_sys *s, float *w_dev, dyn_err *err);

/* Given G = ∂L/∂W [m][n] (row stride n) on the device, accumulates (+=) the gradients of the
 * states, λ and c into out (device pointers, each may be NULL) — any kernel; the counterpart of
 * dyn_sys_grad_materialized. dλ and dc are summed per block and added atomically (their
 * rounding varies from run to run). Returns 0, DYN_EINVAL or DYN_EIO. */
int dyn_cuda_grad_materialized(dyn_cuda_ctx *ctx, const dyn_sys *s, const float *g_dev,
                               const dyn_sys_grad *out, dyn_err *err);

/* Dense linear forward y[N][out] = x[N][in] Wᵀ + b (row-major, W [out][in], b [out] or NULL),
 * device pointers; one cuBLAS sgemm (FP32, no TF32) after b is broadcast into y. The device
 * counterpart of the `linear` op. Returns 0, DYN_EINVAL or DYN_EIO. */
int dyn_cuda_linear_forward(dyn_cuda_ctx *ctx, const float *x_dev, int N, int in,
                            const float *w_dev, const float *b_dev, int out, float *y_dev,
                            dyn_err *err);

/* Native l1 forward on the device (no W): y[m][cols] += W x for x [n][cols] (feature-major,
 * contiguous), the states of s on the device (s->kernel must be l1). Each (h, k) slice's
 * sources are sorted with CUB's radix sort and their prefix sums taken with CUB scans; the
 * device counterpart of dyn_native_forward. Scratch comes from the context's pool and is
 * returned before the call ends. Returns 0, DYN_EINVAL, DYN_ENOMEM or DYN_EIO. */
int dyn_cuda_native_forward(dyn_cuda_ctx *ctx, const dyn_sys *s, const float *x_dev,
                            float *y_dev, int64_t cols, dyn_err *err);

/* Native l1 backward on the device, the counterpart of dyn_native_backward: with
 * d = ∂L/∂y [m][cols], dx [n][cols] += Wᵀ d when dx_dev is not NULL (the transposed product),
 * and the gradients in g (+=; device pointers, each may be NULL): du [H][q][m], dv [H][q][n]
 * (the forces: sign sums from the same prefix sums), dλ [H] and dc [1] (summed per block, then
 * added atomically: their rounding varies from run to run). Returns as
 * dyn_cuda_native_forward. */
int dyn_cuda_native_backward(dyn_cuda_ctx *ctx, const dyn_sys *s, const float *x_dev,
                             const float *d_dev, float *dx_dev, int64_t cols,
                             const dyn_sys_grad *g, dyn_err *err);

#ifdef __cplusplus
}
#endif

#endif
