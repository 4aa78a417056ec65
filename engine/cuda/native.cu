/* native.cu — native l1 products on the device, without forming W (the counterpart of
 * dyn_l1_run / dyn_native_forward / dyn_native_backward, engine/dyn/native.c).
 *
 * One generic job, as on the CPU: a target set T (M values per slice hk = (h, k)) meets a
 * sorted source set S (N values per slice) with source data Xs [N][cols] (feature-major):
 *   OUT:     Y[i][c]  += Σ_hk λ_h Σ_j |t_i − s_j| Xs[j][c] + offset·Σ_j Xs[j][c]
 *   GRAD_T:  dT[hk][i] += λ_h Σ_c Dt[i][c] Σ_j sign(t_i − s_j) Xs[j][c]
 *   dλ_h     += Σ_k Σ_c Σ_i Dt[i][c] Σ_j |t_i − s_j| Xs[j][c];  doffset += Σ_c Σ_j Xs Σ_i Dt
 * (forward: T = u, S = v, Xs = x; backward: T = u, S = v, Xs = x, Dt = δ for du, dλ, dc, and
 * T = v, S = u, Xs = δ, Dt = x for dx and dv). With the sources sorted (s_r, original index
 * p_r) and shifted by the slice's median μ = s_{N/2} (|t − s| is shift-invariant; it keeps the
 * products small), lo = #{s < t}, hi = #{s <= t}:
 *
 *     Σ_j |t − s_j| X_j    = t'·(2·P0[lo] − T0) − (2·P1[lo] − T1),   t' = t − μ,
 *     Σ_j sign(t − s_j) X_j = P0[lo] + P0[hi] − T0,
 *
 * P0[r] = Σ_{r' < r} X_{p_r'}, P1[r] = Σ_{r' < r} (s_r' − μ)·X_{p_r'}, T0, T1 their totals
 * (native.c derives both). Steps:
 *   1. all slices' sources sorted at once: CUB segmented radix sort (pairs value → index);
 *   2. per slice and chunk of columns, a gather writes A0[c][r] = X[p_r][c] and
 *      A1[c][r] = (s_r − μ)·X[p_r][c] (one row of N per column), and CUB's inclusive scan by
 *      key (key = the column) turns both into prefix sums;
 *   3. one thread per (i, c) finds lo by binary search and adds to Y, and to per-block sums
 *      of dλ and doffset (added to them atomically: their order of summation varies);
 *      one thread per i finds lo and hi and adds its sum over the chunk's columns to dT.
 * Slices run one after the other on the context's stream, so the updates of Y and dT never
 * race. This is the first, plain version (launches per slice, gathers not coalesced):
 * correctness against the CPU first, speed in the next slice.
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

/* One job on the device (pointers to device memory; NULL = not wanted). */
typedef struct l1_job {
    int H, q, M, N;
    int64_t cols;
    const float *lambda, *t, *s; /* [H], [H·q][M], [H·q][N] */
    const float *xs;             /* [N][cols] */
    float *y;                    /* OUT: [M][cols] (+=) */
    float offset;
    const float *dt; /* [M][cols]: for dT, dlambda, doffset */
    float *dT, *dlambda, *doffset;
} l1_job;

/* First index r in sorted s[0..n) with s[r] >= t (upper = 0) or s[r] > t (upper = 1). */
__device__ static int bound(const float *s, int n, float t, int upper) {
    int lo = 0, hi = n;
    while (lo < hi) {
        const int mid = (lo + hi) >> 1;
        if (s[mid] < t || (upper && s[mid] == t)) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

#define OUT_THREADS 256

/* One thread per (target i, column c of the chunk): OUT, and the dλ / doffset terms summed
 * over the block, then added atomically. */
__global__ void out_kernel(l1_job j, int hk, int c0, int cc, const float *__restrict__ sv,
                           const float *__restrict__ p0, const float *__restrict__ p1) {
    __shared__ float red[2][OUT_THREADS];
    const int64_t t = (int64_t)blockIdx.x * OUT_THREADS + threadIdx.x;
    const int h = hk / j.q, N = j.N;
    float dl = 0.0f, doff = 0.0f;
    if (t < (int64_t)j.M * cc) {
        const int c = (int)(t % cc), i = (int)(t / cc);
        const float ut = j.t[(int64_t)hk * j.M + i];
        const int lo = bound(sv, N, ut, 0);
        const float *q0 = p0 + (int64_t)c * N, *q1 = p1 + (int64_t)c * N;
        const float T0 = q0[N - 1], T1 = q1[N - 1];
        const float P0 = lo ? q0[lo - 1] : 0.0f, P1 = lo ? q1[lo - 1] : 0.0f;
        const float val = (ut - sv[N / 2]) * (2.0f * P0 - T0) - (2.0f * P1 - T1);
        const int64_t at = (int64_t)i * j.cols + c0 + c;
        if (j.y) j.y[at] += j.lambda[h] * val + (hk == 0 ? j.offset * T0 : 0.0f);
        if (j.dt) {
            dl = j.dt[at] * val;
            doff = hk == 0 ? j.dt[at] * T0 : 0.0f;
        }
    }
    if (!j.dlambda && !j.doffset) return; /* uniform across the block */
    red[0][threadIdx.x] = dl;
    red[1][threadIdx.x] = doff;
    __syncthreads();
    for (int w = OUT_THREADS / 2; w > 0; w >>= 1) {
        if ((int)threadIdx.x < w) {
            red[0][threadIdx.x] += red[0][threadIdx.x + w];
            red[1][threadIdx.x] += red[1][threadIdx.x + w];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) {
        if (j.dlambda) atomicAdd(j.dlambda + h, red[0][0]);
        if (j.doffset && hk == 0) atomicAdd(j.doffset, red[1][0]);
    }
}

/* One thread per target i: dT[hk][i] += λ_h Σ_c Dt[i][c]·(P0[lo] + P0[hi] − T0). */
__global__ void gradt_kernel(l1_job j, int hk, int c0, int cc, const float *__restrict__ sv,
                             const float *__restrict__ p0) {
    const int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= j.M) return;
    const int N = j.N;
    const float ut = j.t[(int64_t)hk * j.M + i];
    const int lo = bound(sv, N, ut, 0), hi = bound(sv, N, ut, 1);
    float acc = 0.0f;
    for (int c = 0; c < cc; c++) {
        const float *q0 = p0 + (int64_t)c * N;
        const float s = (lo ? q0[lo - 1] : 0.0f) + (hi ? q0[hi - 1] : 0.0f) - q0[N - 1];
        acc += j.dt[(int64_t)i * j.cols + c0 + c] * s;
    }
    j.dT[(int64_t)hk * j.M + i] += j.lambda[hk / j.q] * acc;
}

/* Scratch of one job, from the context's pool; released by scratch_free. */
typedef struct nat_scratch {
    float *sval, *a0, *a1, *p0, *p1;
    int *perm, *idx, *off;
    void *tmp;
} nat_scratch;

static void scratch_free(dyn_cuda_ctx *ctx, nat_scratch *w) {
    void *ps[] = {w->sval, w->a0, w->a1, w->p0, w->p1, w->perm, w->idx, w->off, w->tmp};
    for (size_t i = 0; i < sizeof ps / sizeof ps[0]; i++) dyn_cuda_free(ctx, ps[i]);
}

static int run(dyn_cuda_ctx *ctx, const l1_job *jb, nat_scratch *w, dyn_err *err) {
    const int M = jb->M, N = jb->N, Hq = jb->H * jb->q, total = Hq * N;
    const int64_t cols = jb->cols;
    const int cc_max = (int)DYN_MAX(1, DYN_MIN(cols, NAT_CHUNK_ELEMS / N));
    const int64_t celems = (int64_t)cc_max * N;
    const int need_p1 = jb->y || jb->dlambda || jb->doffset;
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
    auto keys = thrust::make_transform_iterator(thrust::make_counting_iterator<int>(0), div_by{N});
    size_t sort_bytes = 0, scan_bytes = 0;
    CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(NULL, sort_bytes, jb->s, w->sval, w->idx,
                                                        w->perm, total, Hq, w->off, w->off + 1,
                                                        0, 32, ctx->stream));
    CUDA_CHECK(cub::DeviceScan::InclusiveSumByKey(NULL, scan_bytes, keys, w->a0, w->p0,
                                                  (int)celems, ::cuda::std::equal_to<>(),
                                                  ctx->stream));
    const size_t tmp_bytes = DYN_MAX(DYN_MAX(sort_bytes, scan_bytes), (size_t)1);
    if ((rc = dyn_cuda_alloc(ctx, tmp_bytes, &w->tmp, err))) return rc;

    iota_mod_kernel<<<dyn_cuda__blocks(total + 1, 256), 256, 0, ctx->stream>>>(total, N, w->idx,
                                                                               w->off);
    CUDA_CHECK_LAUNCH();
    size_t sb = tmp_bytes;
    CUDA_CHECK(cub::DeviceSegmentedRadixSort::SortPairs(w->tmp, sb, jb->s, w->sval, w->idx,
                                                        w->perm, total, Hq, w->off, w->off + 1,
                                                        0, 32, ctx->stream));
    for (int hk = 0; !rc && hk < Hq; hk++) {
        const float *sv = w->sval + (int64_t)hk * N;
        const int *pm = w->perm + (int64_t)hk * N;
        for (int64_t c0 = 0; !rc && c0 < cols; c0 += cc_max) {
            const int cc = (int)DYN_MIN((int64_t)cc_max, cols - c0);
            const int64_t ne = (int64_t)cc * N;
            gather_kernel<<<dyn_cuda__blocks(ne, 256), 256, 0, ctx->stream>>>(
                N, cols, (int)c0, cc, sv, pm, jb->xs, w->a0, w->a1);
            cudaError_t e = cudaGetLastError();
            size_t b0 = tmp_bytes, b1 = tmp_bytes;
            if (e == cudaSuccess)
                e = cub::DeviceScan::InclusiveSumByKey(w->tmp, b0, keys, w->a0, w->p0, (int)ne,
                                                       ::cuda::std::equal_to<>(), ctx->stream);
            if (e == cudaSuccess && need_p1)
                e = cub::DeviceScan::InclusiveSumByKey(w->tmp, b1, keys, w->a1, w->p1, (int)ne,
                                                       ::cuda::std::equal_to<>(), ctx->stream);
            if (e == cudaSuccess && need_p1) {
                out_kernel<<<dyn_cuda__blocks((int64_t)M * cc, OUT_THREADS), OUT_THREADS, 0,
                             ctx->stream>>>(*jb, hk, (int)c0, cc, sv, w->p0, w->p1);
                e = cudaGetLastError();
            }
            if (e == cudaSuccess && jb->dT) {
                gradt_kernel<<<dyn_cuda__blocks(M, 256), 256, 0, ctx->stream>>>(*jb, hk, (int)c0,
                                                                                cc, sv, w->p0);
                e = cudaGetLastError();
            }
            if (e != cudaSuccess)
                rc = dyn_cuda__fail(err, e, "native l1 job (gather, scans, outputs)", __FILE__,
                                    __LINE__);
        }
    }
    return rc;
}

/* Checks the shapes, runs one job with scratch from the pool, returns the scratch. */
static int run_job(dyn_cuda_ctx *ctx, const dyn_sys *s, const l1_job *jb, const char *what,
                   dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    if (s->kernel != DYN_KERNEL_L1)
        return dyn_err_set(err, DYN_EUNSUP, "native %s needs kernel l1 (got %s)", what,
                           dyn_kernel_name(s->kernel));
    int64_t total = 0;
    if (s->m < 1 || s->n < 1 || s->H < 1 || s->q < 1 || jb->cols < 1 ||
        !dyn_mul_ok((int64_t)s->H * s->q, DYN_MAX(s->m, s->n), &total) || total >= INT32_MAX ||
        (int64_t)DYN_MAX(s->m, s->n) >= NAT_CHUNK_ELEMS)
        return dyn_err_set(err, DYN_EINVAL,
                           "native %s: unsupported shape m=%d n=%d H=%d q=%d cols=%lld "
                           "(H·q·max(m, n) must stay below 2^31 and m, n below 2^24)",
                           what, s->m, s->n, s->H, s->q, (long long)jb->cols);
    nat_scratch w = {};
    rc = run(ctx, jb, &w, err);
    scratch_free(ctx, &w);
    return rc;
}

/* Target u (m), source v (n). */
static l1_job job_ab(const dyn_sys *s, int64_t cols) {
    l1_job j = {};
    j.H = s->H, j.q = s->q, j.M = s->m, j.N = s->n, j.cols = cols;
    j.lambda = s->lambda, j.t = s->u, j.s = s->v, j.offset = s->c;
    return j;
}

/* Target v (n), source u (m). */
static l1_job job_ba(const dyn_sys *s, int64_t cols) {
    l1_job j = job_ab(s, cols);
    j.M = s->n, j.N = s->m, j.t = s->v, j.s = s->u;
    return j;
}

extern "C" int dyn_cuda_native_forward(dyn_cuda_ctx *ctx, const dyn_sys *s, const float *x_dev,
                                       float *y_dev, int64_t cols, dyn_err *err) {
    l1_job j = job_ab(s, cols);
    j.xs = x_dev, j.y = y_dev;
    return run_job(ctx, s, &j, "forward", err);
}

extern "C" int dyn_cuda_native_backward(dyn_cuda_ctx *ctx, const dyn_sys *s, const float *x_dev,
                                        const float *d_dev, float *dx_dev, int64_t cols,
                                        const dyn_sys_grad *g, dyn_err *err) {
    int rc = 0;
    if (g->du || g->dlambda || g->dc) {
        l1_job j = job_ab(s, cols);
        j.xs = x_dev, j.dt = d_dev, j.dT = g->du, j.dlambda = g->dlambda, j.doffset = g->dc;
        rc = run_job(ctx, s, &j, "backward", err);
    }
    if (!rc && (dx_dev || g->dv)) {
        l1_job j = job_ba(s, cols);
        j.xs = d_dev, j.y = dx_dev, j.dt = g->dv ? x_dev : NULL, j.dT = g->dv;
        rc = run_job(ctx, s, &j, "backward", err);
    }
    return rc;
}
