/* native.cu — the native l1 forward on the device (the counterpart of dyn_native_forward,
 * engine/dyn/native.c): y[m][cols] += W x without forming W, for x [n][cols] feature-major.
 *
 * Per slice hk = (h, k), with the sources v sorted (s_r, original index p_r) and shifted by
 * the slice's median μ = s_{n/2} (|t − s| is shift-invariant; it keeps the products small):
 *
 *     Σ_j |t − s_j| x_j = t'·(2·P0[lo] − T0) − (2·P1[lo] − T1),   t' = t − μ,
 *
 * P0[r] = Σ_{r' < r} x_{p_r'}, P1[r] = Σ_{r' < r} (s_r' − μ)·x_{p_r'}, T0, T1 their totals and
 * lo = #{s < t} (native.c derives it). Steps:
 *   1. all slices' sources sorted at once: CUB segmented radix sort (pairs value → index);
 *   2. per slice and chunk of columns, a gather writes A0[c][r] = x[p_r][c] and
 *      A1[c][r] = (s_r − μ)·x[p_r][c] (one row of n per column), and CUB's inclusive scan by
 *      key (key = the column) turns both into prefix sums;
 *   3. one thread per (i, c) finds lo by binary search in the sorted slice and adds
 *      λ_h·(t'(2P0 − T0) − (2P1 − T1)) to y[i][c]; the first slice also adds c·T0 (the offset).
 * Slices run one after the other on the context's stream, so the updates of y never race.
 * This is the first, plain version (launches per slice, gathers not coalesced): correctness
 * against the CPU first, speed in the next slice.
 */
#include <cub/cub.cuh>
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include "cuda_impl.h"

/* Prefix-sum elements per chunk of columns (×4 floats of scratch: 256 MiB). */
#define NAT_CHUNK_ELEMS ((int64_t)1 << 24)

struct div_by {
    int n;
    __host__ __device__ int operator()(int t) const { return t / n; }
};

__global__ void iota_mod_kernel(int total, int n, int *__restrict__ idx, int *__restrict__ off) {
    const int t = blockIdx.x * blockDim.x + threadIdx.x;
    if (t < total) idx[t] = t % n;
    if (t <= total / n && t * n <= total) off[t] = t * n;
}

__global__ void gather_kernel(int n, int64_t cols, int c0, int cc, const float *__restrict__ sval,
                              const int *__restrict__ perm, const float *__restrict__ x,
                              float *__restrict__ a0, float *__restrict__ a1) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (int64_t)cc * n) return;
    const int c = (int)(t / n), r = (int)(t % n);
    const float mu = sval[n / 2];
    const float xv = x[(int64_t)perm[r] * cols + c0 + c];
    a0[t] = xv;
    a1[t] = (sval[r] - mu) * xv;
}

__global__ void out_kernel(int m, int n, int64_t cols, int c0, int cc,
                           const float *__restrict__ lambda_h, float offset,
                           const float *__restrict__ u, const float *__restrict__ sval,
                           const float *__restrict__ p0, const float *__restrict__ p1,
                           float *__restrict__ y) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (int64_t)m * cc) return;
    const int c = (int)(t % cc), i = (int)(t / cc);
    const float ut = u[i];
    int lo = 0, hi = n; /* lower bound: first r with s_r >= t */
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (sval[mid] < ut) lo = mid + 1;
        else hi = mid;
    }
    const float *q0 = p0 + (int64_t)c * n, *q1 = p1 + (int64_t)c * n;
    const float T0 = q0[n - 1], T1 = q1[n - 1];
    const float P0 = lo ? q0[lo - 1] : 0.0f, P1 = lo ? q1[lo - 1] : 0.0f;
    const float tp = ut - sval[n / 2];
    y[(int64_t)i * cols + c0 + c] +=
        *lambda_h * (tp * (2.0f * P0 - T0) - (2.0f * P1 - T1)) + offset * T0;
}

/* Scratch of one call, from the context's pool; released by scratch_free. */
typedef struct nat_scratch {
    float *sval, *a0, *a1, *p0, *p1;
    int *perm, *idx, *off;
    void *tmp;
} nat_scratch;

static void scratch_free(dyn_cuda_ctx *ctx, nat_scratch *w) {
    void *ps[] = {w->sval, w->a0, w->a1, w->p0, w->p1, w->perm, w->idx, w->off, w->tmp};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) dyn_cuda_free(ctx, ps[i]);
}

static int run(dyn_cuda_ctx *ctx, const dyn_sys *s, const float *x, float *y, int64_t cols,
               nat_scratch *w, dyn_err *err) {
    const int m = s->m, n = s->n, Hq = s->H * s->q, total = Hq * n;
    const int cc_max = (int)DYN_MAX(1, DYN_MIN(cols, NAT_CHUNK_ELEMS / n));
    const int64_t celems = (int64_t)cc_max * n;
    int rc;
#define TAKE(ptr, count)                                                                    \
    if ((rc = dyn_cuda_alloc(ctx, (size_t)(count) * sizeof *(ptr), (void **)&(ptr), err)))  \
        return rc;
    TAKE(w->sval, total);
    TAKE(w->perm, total);
    TAKE(w->idx, total);
    TAKE(w->off, Hq + 1);
    TAKE(w->a0, celems);
    TAKE(w->a1, celems);
    TAKE(w->p0, celems);
    TAKE(w->p1, celems);
#undef TAKE
    auto keys = thrust::make_transform_iterator(thrust::make_counting_iterator<int>(0), div_by{n});
    size_t sort_bytes = 0, scan_bytes = 0;
    CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(NULL, sort_bytes, s->v, w->sval, w->idx,
                                                        w->perm, total, Hq, w->off, w->off + 1,
                                                        0, 32, ctx->stream));
    CUDA_CHECK(cub::DeviceScan::InclusiveSumByKey(NULL, scan_bytes, keys, w->a0, w->p0,
                                                  (int)celems, ::cuda::std::equal_to<>(),
                                                  ctx->stream));
    const size_t tmp_bytes = DYN_MAX(DYN_MAX(sort_bytes, scan_bytes), (size_t)1);
    if ((rc = dyn_cuda_alloc(ctx, tmp_bytes, &w->tmp, err))) return rc;

    iota_mod_kernel<<<dyn_cuda__blocks(total + 1, 256), 256, 0, ctx->stream>>>(total, n, w->idx,
                                                                               w->off);
    CUDA_CHECK_LAUNCH();
    size_t sb = tmp_bytes;
    CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(w->tmp, sb, s->v, w->sval, w->idx,
                                                        w->perm, total, Hq, w->off, w->off + 1,
                                                        0, 32, ctx->stream));
    for (int hk = 0; !rc && hk < Hq; hk++) {
        const float *sv = w->sval + (int64_t)hk * n;
        const int *pm = w->perm + (int64_t)hk * n;
        for (int64_t c0 = 0; !rc && c0 < cols; c0 += cc_max) {
            const int cc = (int)DYN_MIN((int64_t)cc_max, cols - c0);
            const int64_t ne = (int64_t)cc * n;
            gather_kernel<<<dyn_cuda__blocks(ne, 256), 256, 0, ctx->stream>>>(
                n, cols, (int)c0, cc, sv, pm, x, w->a0, w->a1);
            cudaError_t e = cudaGetLastError();
            size_t b0 = tmp_bytes, b1 = tmp_bytes;
            if (e == cudaSuccess)
                e = cub::DeviceScan::InclusiveSumByKey(w->tmp, b0, keys, w->a0, w->p0, (int)ne,
                                                       ::cuda::std::equal_to<>(), ctx->stream);
            if (e == cudaSuccess)
                e = cub::DeviceScan::InclusiveSumByKey(w->tmp, b1, keys, w->a1, w->p1, (int)ne,
                                                       ::cuda::std::equal_to<>(), ctx->stream);
            if (e == cudaSuccess) {
                const int64_t no = (int64_t)m * cc;
                out_kernel<<<dyn_cuda__blocks(no, 256), 256, 0, ctx->stream>>>(
                    m, n, cols, (int)c0, cc, s->lambda + hk / s->q, hk == 0 ? s->c : 0.0f,
                    s->u + (int64_t)hk * m, sv, w->p0, w->p1, y);
                e = cudaGetLastError();
            }
            if (e != cudaSuccess)
                rc = dyn_cuda__fail(err, e, "native forward (gather, scans, output)", __FILE__,
                                    __LINE__);
        }
    }
    return rc;
}

extern "C" int dyn_cuda_native_forward(dyn_cuda_ctx *ctx, const dyn_sys *s, const float *x_dev,
                                       float *y_dev, int64_t cols, dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    if (s->kernel != DYN_KERNEL_L1)
        return dyn_err_set(err, DYN_EUNSUP, "native forward needs kernel l1 (got %s)",
                           dyn_kernel_name(s->kernel));
    int64_t total = 0;
    if (s->m < 1 || s->n < 1 || s->H < 1 || s->q < 1 || cols < 1 ||
        !dyn_mul_ok((int64_t)s->H * s->q, s->n, &total) || total >= INT32_MAX ||
        (int64_t)s->n >= NAT_CHUNK_ELEMS)
        return dyn_err_set(err, DYN_EINVAL,
                           "native forward: unsupported shape m=%d n=%d H=%d q=%d cols=%lld "
                           "(H·q·n must stay below 2^31 and n below 2^24)",
                           s->m, s->n, s->H, s->q, (long long)cols);
    nat_scratch w = {};
    rc = run(ctx, s, x_dev, y_dev, cols, &w, err);
    scratch_free(ctx, &w);
    return rc;
}
