/* bench_native.c — first timings on the GPU (not a check: it prints, it does not judge): the
 * native l1 forward (dyn_cuda_native_forward) against the dense product with W materialized
 * (dyn_cuda_linear_forward, cuBLAS sgemm), m = n ∈ {4096, 16384, 32768}, H = 2, q = 8
 * (H·q = 16), batch ∈ {1, 64, 1024}; also the time to materialize W. Each time is the median
 * of 5 runs after one warm-up, measured on the host around the call and a stream sync.
 * One JSON line per size and batch (device, command) follows each table row (make bench-gpu
 * collects them). tests/gpu/run.sh runs it after the checks. Issue 13's target: native >= 10x
 * faster than cuBLAS at batch 1 for 16384 x 16384 (this first native kernel is not tuned for it
 * yet). */
#include <stdio.h>
#include <stdlib.h>

#include "dyn/dyn.h"
#include "gpu_util.h"

#define REPS 5

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* Median seconds of REPS runs of `call` (after one warm-up), each synchronized. */
#define MEDIAN_S(out, call)                                                                \
    do {                                                                                   \
        double ts_[REPS];                                                                  \
        dyn_err e_ = {0};                                                                  \
        for (int r_ = -1; r_ < REPS; r_++) {                                               \
            double t0_ = dyn_now();                                                        \
            gt_ok((call), &e_, #call);                                                     \
            gt_ok(dyn_cuda_sync(ctx, &e_), &e_, "sync");                                   \
            if (r_ >= 0) ts_[r_] = dyn_now() - t0_;                                        \
        }                                                                                  \
        qsort(ts_, REPS, sizeof ts_[0], cmp_double);                                       \
        (out) = ts_[REPS / 2];                                                             \
    } while (0)

int main(int argc, char **argv) {
    dyn_cuda_ctx *ctx = gt_ctx("bench_native");
    dyn_cuda_info info = {0};
    dyn_err ierr = {0};
    gt_ok(dyn_cuda_device_info(0, &info, &ierr), &ierr, "device info");
    const int sizes[] = {4096, 16384, 32768}, batches[] = {1, 64, 1024}, H = 2, q = 8;
    dyn_rng rng;
    dyn_rng_seed(&rng, 3);
    printf("%7s %6s %12s %12s %9s %14s\n", "m=n", "batch", "native ms", "cuBLAS ms",
           "speedup", "materialize ms");
    for (size_t si = 0; si < DYN_ARRAY_LEN(sizes); si++) {
        const int n = sizes[si];
        const int64_t ns = (int64_t)H * q * n;
        float *u = gt_rand(&rng, ns, 0, 1), *v = gt_rand(&rng, ns, 0, 1);
        float *lam = gt_rand(&rng, H, 0.1f, 1.0f);
        dyn_sys s = {n, n, H, q, DYN_KERNEL_L1, NULL, NULL, NULL, 0.0f};
        s.u = gt_upload(ctx, u, ns), s.v = gt_upload(ctx, v, ns), s.lambda = gt_upload(ctx, lam, H);
        void *w = NULL;
        dyn_err err = {0};
        gt_ok(dyn_cuda_alloc(ctx, (size_t)n * n * sizeof(float), &w, &err), &err, "W");
        double tm;
        MEDIAN_S(tm, dyn_cuda_materialize(ctx, &s, w, &e_));
        for (size_t bi = 0; bi < DYN_ARRAY_LEN(batches); bi++) {
            const int b = batches[bi];
            float *x = gt_rand(&rng, (int64_t)n * b, -1, 1);
            float *xd = gt_upload(ctx, x, (int64_t)n * b), *yd = NULL;
            gt_ok(dyn_cuda_alloc(ctx, (size_t)n * b * sizeof(float), (void **)&yd, &err), &err,
                  "y");
            double tn, td;
            /* native is feature-major ([n][b]), dense batch-first ([b][n]): the same bytes,
             * a different reading; only the time matters here */
            MEDIAN_S(tn, dyn_cuda_native_forward(ctx, &s, xd, yd, b, &e_));
            MEDIAN_S(td, dyn_cuda_linear_forward(ctx, xd, b, n, w, NULL, n, yd, &e_));
            printf("%7d %6d %12.3f %12.3f %9.2f %14.3f\n", n, b, 1e3 * tn, 1e3 * td, td / tn,
                   1e3 * tm);
            printf("{\"bench\": \"native_vs_cublas\", \"device\": \"%s\", \"command\": "
                   "\"%s\", \"m\": %d, \"n\": %d, \"H\": %d, \"q\": %d, \"batch\": %d, "
                   "\"native_ms\": %.4f, \"cublas_ms\": %.4f, \"materialize_ms\": %.4f}\n",
                   info.name, gt_command(argc, argv), n, n, H, q, b, 1e3 * tn, 1e3 * td,
                   1e3 * tm);
            dyn_cuda_free(ctx, xd), dyn_cuda_free(ctx, yd);
            free(x);
        }
        dyn_cuda_free(ctx, w), dyn_cuda_free(ctx, (void *)s.u), dyn_cuda_free(ctx, (void *)s.v);
        dyn_cuda_free(ctx, (void *)s.lambda);
        free(u), free(v), free(lam);
    }
    dyn_cuda_ctx_free(ctx);
    return 0;
}
