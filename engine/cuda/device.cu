/* device.cu — the CUDA backend's plumbing: error reporting, device query, contexts (a stream
 * and a cuBLAS handle each), the caching device-memory pool, pinned host buffers and copies.
 *
 * The pool: sizes are rounded up to a class — a power of two from 256 B to 1 MiB, a multiple of
 * 2 MiB above — and a request is served by the smallest free cached block of at least its class
 * and at most twice it (best fit), else by a new cudaMalloc. Freeing marks the block free; only
 * dyn_cuda_pool_trim and dyn_cuda_ctx_free give memory back. The blocks are kept in one array
 * searched linearly: a model holds tens of blocks, and allocation is off the request path
 * (buffers are sized once per exec). All work of a context is on its one stream, so a block
 * freed while queued kernels still read it is only reused by work queued after them.
 */
#include <stdlib.h>
#include <string.h>

#include "cuda_impl.h"

#define POOL_MIN ((size_t)256)
#define POOL_POW2_MAX ((size_t)1 << 20)
#define POOL_STEP ((size_t)2 << 20)

extern "C" int dyn_cuda_built(void) { return 1; }

/* Errors that mean "no usable GPU here" rather than a failure of this program. */
static int no_device(cudaError_t e) {
    return e == cudaErrorNoDevice || e == cudaErrorInsufficientDriver ||
           e == cudaErrorInvalidDevice || e == cudaErrorDevicesUnavailable ||
           e == cudaErrorSystemDriverMismatch || e == cudaErrorCompatNotSupportedOnDevice;
}

int dyn_cuda__fail(dyn_err *err, cudaError_t e, const char *expr, const char *file, int line) {
    (void)cudaGetLastError(); /* clears a non-sticky error so later calls start clean */
    int code = e == cudaErrorMemoryAllocation ? DYN_ENOMEM : no_device(e) ? DYN_EUNSUP : DYN_EIO;
    return dyn_err_set(err, code, "%s:%d: %s failed: %s (%s)", file, line, expr,
                       cudaGetErrorName(e), cudaGetErrorString(e));
}

int dyn_cuda__blas_fail(dyn_err *err, cublasStatus_t s, const char *expr, const char *file,
                        int line) {
    int code = s == CUBLAS_STATUS_ALLOC_FAILED ? DYN_ENOMEM : DYN_EIO;
    return dyn_err_set(err, code, "%s:%d: %s failed: %s (%s)", file, line, expr,
                       cublasGetStatusName(s), cublasGetStatusString(s));
}

int dyn_cuda__enter(dyn_cuda_ctx *ctx, dyn_err *err) {
    if (!ctx) return dyn_err_set(err, DYN_EINVAL, "CUDA call without a context");
    CUDA_CHECK(cudaSetDevice(ctx->dev));
    return 0;
}

extern "C" int dyn_cuda_device_count(int *count, dyn_err *err) {
    *count = 0;
    int n = 0;
    CUDA_CHECK(cudaGetDeviceCount(&n));
    if (n < 1) return dyn_err_set(err, DYN_EUNSUP, "the CUDA driver reports no device");
    *count = n;
    return 0;
}

extern "C" int dyn_cuda_device_info(int dev, dyn_cuda_info *info, dyn_err *err) {
    int n = 0, rc;
    memset(info, 0, sizeof *info);
    if ((rc = dyn_cuda_device_count(&n, err))) return rc;
    if (dev < 0 || dev >= n)
        return dyn_err_set(err, DYN_EUNSUP, "CUDA device %d does not exist (%d device%s)", dev,
                           n, n == 1 ? "" : "s");
    cudaDeviceProp p;
    CUDA_CHECK(cudaGetDeviceProperties(&p, dev));
    snprintf(info->name, sizeof info->name, "%s", p.name);
    info->major = p.major;
    info->minor = p.minor;
    info->multiprocessors = p.multiProcessorCount;
    CUDA_CHECK(cudaSetDevice(dev));
    CUDA_CHECK(cudaMemGetInfo(&info->free_bytes, &info->total_bytes));
    return 0;
}

/* The process's pool totals over every context (dyn_cuda_mem_process), kept with the
 * per-context ones; updated with atomic builtins (contexts live on different threads). */
static size_t g_reserved, g_in_use;

static void acct(dyn_cuda_ctx *ctx, long long reserved, long long in_use) {
    ctx->st.reserved = (size_t)((long long)ctx->st.reserved + reserved);
    ctx->st.in_use = (size_t)((long long)ctx->st.in_use + in_use);
    __atomic_add_fetch(&g_reserved, (size_t)reserved, __ATOMIC_RELAXED);
    __atomic_add_fetch(&g_in_use, (size_t)in_use, __ATOMIC_RELAXED);
}

extern "C" void dyn_cuda_mem_process(size_t *reserved, size_t *in_use) {
    *reserved = __atomic_load_n(&g_reserved, __ATOMIC_RELAXED);
    *in_use = __atomic_load_n(&g_in_use, __ATOMIC_RELAXED);
}

/* Releases what ctx_new made so far (also the failure path of ctx_new). */
static void ctx_release(dyn_cuda_ctx *ctx) {
    acct(ctx, -(long long)ctx->st.reserved, -(long long)ctx->st.in_use);
    if (ctx->stream) cudaStreamSynchronize(ctx->stream);
    for (int i = 0; i < ctx->nblocks; i++) cudaFree(ctx->blocks[i].p);
    free(ctx->blocks);
    if (ctx->blas) cublasDestroy(ctx->blas);
    if (ctx->stream) cudaStreamDestroy(ctx->stream);
    free(ctx);
}

static int ctx_init(dyn_cuda_ctx *ctx, int dev, dyn_err *err) {
    dyn_cuda_info info;
    int rc = dyn_cuda_device_info(dev, &info, err);
    if (rc) return rc;
    ctx->dev = dev;
    CUDA_CHECK(cudaSetDevice(dev));
    CUDA_CHECK(cudaStreamCreateWithFlags(&ctx->stream, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&ctx->blas));
    CUBLAS_CHECK(cublasSetStream(ctx->blas, ctx->stream));
    /* FP32 products stay FP32 (no TF32 tensor-core rounding): results comparable with the CPU. */
    CUBLAS_CHECK(cublasSetMathMode(ctx->blas, CUBLAS_DEFAULT_MATH));
    return 0;
}

extern "C" dyn_cuda_ctx *dyn_cuda_ctx_new(int dev, dyn_err *err) {
    dyn_cuda_ctx *ctx = (dyn_cuda_ctx *)calloc(1, sizeof *ctx);
    if (!ctx) {
        dyn_err_set(err, DYN_ENOMEM, "out of memory for a CUDA context");
        return NULL;
    }
    if (ctx_init(ctx, dev, err)) {
        ctx_release(ctx);
        return NULL;
    }
    return ctx;
}

extern "C" void dyn_cuda_ctx_free(dyn_cuda_ctx *ctx) {
    if (!ctx) return;
    cudaSetDevice(ctx->dev);
    ctx_release(ctx);
}

extern "C" void dyn_cuda_pool_get(const dyn_cuda_ctx *ctx, dyn_cuda_pool_stats *st) {
    *st = ctx->st;
}

static size_t size_class(size_t bytes) {
    if (bytes <= POOL_MIN) return POOL_MIN;
    if (bytes <= POOL_POW2_MAX) {
        size_t c = POOL_MIN;
        while (c < bytes) c <<= 1;
        return c;
    }
    return (bytes + POOL_STEP - 1) / POOL_STEP * POOL_STEP;
}

extern "C" int dyn_cuda_alloc(dyn_cuda_ctx *ctx, size_t bytes, void **p, dyn_err *err) {
    *p = NULL;
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    if (bytes == 0 || bytes > ((size_t)1 << 46))
        return dyn_err_set(err, DYN_EINVAL, "device allocation of %zu bytes", bytes);
    const size_t cls = size_class(bytes);
    int best = -1;
    for (int i = 0; i < ctx->nblocks; i++) {
        const dyn_cuda_block *b = &ctx->blocks[i];
        if (!b->used && b->size >= cls && b->size / 2 <= cls &&
            (best < 0 || b->size < ctx->blocks[best].size))
            best = i;
    }
    if (best >= 0) {
        ctx->blocks[best].used = 1;
        acct(ctx, 0, (long long)ctx->blocks[best].size);
        ctx->st.hits++;
        *p = ctx->blocks[best].p;
        return 0;
    }
    if (ctx->nblocks == ctx->cap) {
        int cap = ctx->cap ? 2 * ctx->cap : 16;
        void *nb = realloc(ctx->blocks, (size_t)cap * sizeof *ctx->blocks);
        if (!nb) return dyn_err_set(err, DYN_ENOMEM, "out of host memory for the CUDA pool");
        ctx->blocks = (dyn_cuda_block *)nb;
        ctx->cap = cap;
    }
    void *d = NULL;
    cudaError_t e = cudaMalloc(&d, cls);
    if (e == cudaErrorMemoryAllocation && ctx->st.reserved > ctx->st.in_use) {
        /* Cached blocks of other sizes may be what is missing: give them back, retry once. */
        if ((rc = dyn_cuda_pool_trim(ctx, err))) return rc;
        e = cudaMalloc(&d, cls);
    }
    if (e != cudaSuccess) {
        rc = dyn_cuda__fail(err, e, "cudaMalloc", __FILE__, __LINE__);
        if (err)
            dyn_err_prefix(err, "allocating %zu bytes of device memory (%zu in use): ", cls,
                           ctx->st.in_use);
        return rc;
    }
    ctx->blocks[ctx->nblocks++] = (dyn_cuda_block){d, cls, 1};
    acct(ctx, (long long)cls, (long long)cls);
    ctx->st.mallocs++;
    *p = d;
    return 0;
}

extern "C" void dyn_cuda_free(dyn_cuda_ctx *ctx, void *p) {
    if (!p) return;
    for (int i = 0; i < ctx->nblocks; i++)
        if (ctx->blocks[i].p == p) {
            DYN_ASSERT(ctx->blocks[i].used); /* freed twice */
            ctx->blocks[i].used = 0;
            acct(ctx, 0, -(long long)ctx->blocks[i].size);
            return;
        }
    DYN_ASSERT(!"dyn_cuda_free: pointer not from this context's pool");
}

extern "C" int dyn_cuda_pool_trim(dyn_cuda_ctx *ctx, dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    int k = 0;
    for (int i = 0; i < ctx->nblocks; i++) {
        dyn_cuda_block b = ctx->blocks[i];
        if (b.used) {
            ctx->blocks[k++] = b;
            continue;
        }
        acct(ctx, -(long long)b.size, 0);
        cudaError_t e = cudaFree(b.p);
        if (e != cudaSuccess) {
            for (int j = i + 1; j < ctx->nblocks; j++) ctx->blocks[k++] = ctx->blocks[j];
            ctx->nblocks = k;
            return dyn_cuda__fail(err, e, "cudaFree(block)", __FILE__, __LINE__);
        }
    }
    ctx->nblocks = k;
    return 0;
}

extern "C" int dyn_cuda_host_alloc(size_t bytes, void **p, dyn_err *err) {
    *p = NULL;
    if (bytes == 0) return dyn_err_set(err, DYN_EINVAL, "pinned allocation of 0 bytes");
    void *q = NULL; /* *p stays NULL on failure */
    CUDA_CHECK(cudaMallocHost(&q, bytes));
    *p = q;
    return 0;
}

extern "C" void dyn_cuda_host_free(void *p) {
    if (p) cudaFreeHost(p);
}

extern "C" int dyn_cuda_upload(dyn_cuda_ctx *ctx, void *dst_dev, const void *src, size_t bytes,
                               dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    CUDA_CHECK(cudaMemcpyAsync(dst_dev, src, bytes, cudaMemcpyHostToDevice, ctx->stream));
    return 0;
}

extern "C" int dyn_cuda_download(dyn_cuda_ctx *ctx, void *dst, const void *src_dev, size_t bytes,
                                 dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    CUDA_CHECK(cudaMemcpyAsync(dst, src_dev, bytes, cudaMemcpyDeviceToHost, ctx->stream));
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    return 0;
}

extern "C" int dyn_cuda_sync(dyn_cuda_ctx *ctx, dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    CUDA_CHECK(cudaStreamSynchronize(ctx->stream));
    return 0;
}
