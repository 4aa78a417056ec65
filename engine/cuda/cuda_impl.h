/* cuda_impl.h — what the CUDA backend's .cu files share: the context, CUDA_CHECK / CUBLAS_CHECK
 * and launch helpers. Internal (C++, compiled by nvcc only); the public API is dyn_cuda.h. */
#ifndef DYN_CUDA_IMPL_H
#define DYN_CUDA_IMPL_H

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "dyn_cuda.h"

/* One block of the pool: a cudaMalloc'ed region of `size` bytes (its size class). */
typedef struct dyn_cuda_block {
    void *p;
    size_t size;
    int used;
} dyn_cuda_block;

struct dyn_cuda_ctx {
    int dev;
    cudaStream_t stream;
    cublasHandle_t blas;
    dyn_cuda_block *blocks; /* every block the pool holds (malloc'ed array) */
    int nblocks, cap;
    dyn_cuda_pool_stats st;
};

/* Fills err from a failed CUDA runtime call and returns its DYN_E* code (mapping in
 * dyn_cuda.h); clears the thread's last (non-sticky) CUDA error. */
int dyn_cuda__fail(dyn_err *err, cudaError_t e, const char *expr, const char *file, int line);
int dyn_cuda__blas_fail(dyn_err *err, cublasStatus_t s, const char *expr, const char *file,
                        int line);

/* CUDA_CHECK(expr): runs a CUDA runtime call; on failure returns from the enclosing function
 * (which returns int and has `dyn_err *err` in scope) with a message naming the expression,
 * the file and line and CUDA's error name and string:
 *   "engine/cuda/device.cu:120: cudaMalloc(&p, 1073741824) failed: cudaErrorMemoryAllocation
 *    (out of memory)". */
#define CUDA_CHECK(expr)                                                                    \
    do {                                                                                    \
        cudaError_t e_ = (expr);                                                            \
        if (e_ != cudaSuccess) return dyn_cuda__fail(err, e_, #expr, __FILE__, __LINE__);   \
    } while (0)

/* The same for cuBLAS calls. */
#define CUBLAS_CHECK(expr)                                                                  \
    do {                                                                                    \
        cublasStatus_t s_ = (expr);                                                         \
        if (s_ != CUBLAS_STATUS_SUCCESS)                                                    \
            return dyn_cuda__blas_fail(err, s_, #expr, __FILE__, __LINE__);                 \
    } while (0)

/* After a kernel launch: reports a bad launch configuration at once (faults inside the
 * kernel surface at the next synchronization, dyn_cuda_sync / dyn_cuda_download). */
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

/* Makes ctx's device current for this thread (a context may be used from any thread, one at a
 * time). Returns 0 or a DYN_E* code. */
int dyn_cuda__enter(dyn_cuda_ctx *ctx, dyn_err *err);

static inline unsigned dyn_cuda__blocks(int64_t n, int threads) {
    return (unsigned)((n + threads - 1) / threads);
}

#endif
