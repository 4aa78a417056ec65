/* test_device.c — the CUDA plumbing (engine/cuda/device.cu): device query, the context's pool
 * (size classes, reuse without cudaMalloc, accounting, trim), pinned buffers and copies (a
 * round trip is bit-exact), and CUDA_CHECK's message (expression, file, line). Runs first in
 * `make test-gpu`: without a device it prints CUDA's reason and exits 1. */
#include <string.h>

#include "gpu_util.h"

static void test_query(void) {
    dyn_err err = {0};
    int n = 0;
    gt_ok(dyn_cuda_device_count(&n, &err), &err, "device count");
    for (int d = 0; d < n; d++) {
        dyn_cuda_info in;
        gt_ok(dyn_cuda_device_info(d, &in, &err), &err, "device info");
        printf("device %d: %s, compute %d.%d, %d SMs, %.1f GiB total, %.1f GiB free\n", d, in.name,
               in.major, in.minor, in.multiprocessors, (double)in.total_bytes / (1 << 30),
               (double)in.free_bytes / (1 << 30));
    }
    gt_check("device count", "devices missing", n >= 1 ? 0 : 1, 0);
    dyn_cuda_info in;
    int rc = dyn_cuda_device_info(n, &in, &err);
    gt_check("device past the last is refused (DYN_EUNSUP, says it does not exist)",
             "mismatches", (rc != DYN_EUNSUP) + !strstr(err.msg, "does not exist"), 0);
}

static void test_pool(dyn_cuda_ctx *ctx) {
    dyn_err err = {0};
    dyn_cuda_pool_stats st0, st;
    dyn_cuda_pool_get(ctx, &st0);
    void *a, *b, *c, *big;
    gt_ok(dyn_cuda_alloc(ctx, 1000, &a, &err), &err, "alloc 1000");
    dyn_cuda_free(ctx, a);
    gt_ok(dyn_cuda_alloc(ctx, 900, &b, &err), &err, "alloc 900");
    dyn_cuda_pool_get(ctx, &st);
    gt_check("a freed 1000-byte block serves a 900-byte request", "new cudaMalloc calls",
             (double)(st.mallocs - st0.mallocs - 1) + (a != b), 0);
    gt_check("size class of 900 bytes is 1024", "bytes off",
             (double)(st.in_use - st0.in_use) - 1024.0, 0);
    gt_ok(dyn_cuda_alloc(ctx, 3u << 20, &c, &err), &err, "alloc 3 MiB");
    gt_ok(dyn_cuda_alloc(ctx, (size_t)1 << 30, &big, &err), &err, "alloc 1 GiB");
    dyn_cuda_pool_get(ctx, &st);
    gt_check("3 MiB rounds to 4 MiB (2 MiB steps), 1 GiB stays 1 GiB", "bytes off",
             (double)(st.in_use - st0.in_use) - (1024.0 + (4 << 20) + (1 << 30)), 0);
    dyn_cuda_free(ctx, big);
    void *small;
    gt_ok(dyn_cuda_alloc(ctx, 256u << 20, &small, &err), &err, "alloc 256 MiB");
    dyn_cuda_pool_get(ctx, &st);
    gt_check("a 256 MiB request does not take the cached 1 GiB block (best fit within 2x)",
             "blocks reused", small == big, 0);
    dyn_cuda_free(ctx, small);
    dyn_cuda_free(ctx, c);
    gt_ok(dyn_cuda_pool_trim(ctx, &err), &err, "trim");
    dyn_cuda_pool_get(ctx, &st);
    gt_check("trim keeps the handed-out blocks only", "bytes off",
             (double)st.reserved - (double)st.in_use, 0);
    dyn_cuda_free(ctx, b);
}

static void test_copies(dyn_cuda_ctx *ctx) {
    dyn_err err = {0};
    const int64_t n = 1 << 22;
    float *h = NULL, *back = NULL;
    gt_ok(dyn_cuda_host_alloc((size_t)n * sizeof(float), (void **)&h, &err), &err, "pinned");
    gt_ok(dyn_cuda_host_alloc((size_t)n * sizeof(float), (void **)&back, &err), &err, "pinned");
    dyn_rng r;
    dyn_rng_seed(&r, 7);
    for (int64_t i = 0; i < n; i++) h[i] = dyn_rng_normal(&r);
    float *d = gt_upload(ctx, h, n);
    memset(back, 0, (size_t)n * sizeof(float));
    gt_download(ctx, back, d, n);
    gt_check("pinned upload + download of 16 MiB is bit-exact", "differing bytes",
             memcmp(h, back, (size_t)n * sizeof(float)) != 0, 0);
    dyn_cuda_free(ctx, d);
    dyn_cuda_host_free(h);
    dyn_cuda_host_free(back);
}

/* Requests no machine can meet (32 TiB): CUDA refuses them at the call (a non-sticky error),
 * the code is DYN_ENOMEM, the message names the expression (CUDA_CHECK: file and line too),
 * and the context stays usable. */
static void test_check_message(dyn_cuda_ctx *ctx) {
    dyn_err err = {0};
    void *p = NULL;
    int rc = dyn_cuda_host_alloc((size_t)1 << 45, &p, &err);
    printf("32 TiB pinned: %s\n", err.msg);
    gt_check("CUDA_CHECK names expression, file and line; DYN_ENOMEM", "missing parts",
             (rc != DYN_ENOMEM) + !strstr(err.msg, "cudaMallocHost(&q, bytes)") +
                 !strstr(err.msg, "device.cu:") + (p != NULL),
             0);
    dyn_err e2 = {0};
    rc = dyn_cuda_alloc(ctx, (size_t)1 << 45, &p, &e2);
    printf("32 TiB from the pool: %s\n", e2.msg);
    gt_check("pool refusal: DYN_ENOMEM, says how much was asked", "missing parts",
             (rc != DYN_ENOMEM) + !strstr(e2.msg, "35184372088832 bytes") + (p != NULL), 0);
    void *q = NULL;
    gt_ok(dyn_cuda_alloc(ctx, 4096, &q, &err), &err, "allocation after a refused one");
    gt_ok(dyn_cuda_sync(ctx, &err), &err, "sync after refused allocations");
    dyn_cuda_free(ctx, q);
}

int main(void) {
    dyn_cuda_ctx *ctx = gt_ctx("test_device");
    test_query();
    test_pool(ctx);
    test_copies(ctx);
    test_check_message(ctx);
    dyn_cuda_ctx_free(ctx);
    return gt_finish("test_device");
}
