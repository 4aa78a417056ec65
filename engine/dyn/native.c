/* native.c — weight-free execution of l1 DyN systems (DYN.md §2–3; design: README.md).
 *
 * For one slice (h, k), a target value t and sorted source values s_j with data rows X_j:
 *
 *     Σ_j |t − s_j| X_j       = t·(2·P0[lo] − T0) − (2·P1[lo] − T1)
 *     Σ_j sign(t − s_j) X_j   = P0[lo] + P0[hi] − T0
 *
 * where P0[r] = Σ_{first r sorted j} X_j, P1[r] = Σ s_j X_j, T0/T1 the totals, lo = #{s < t},
 * hi = #{s <= t} (so ties, sign(0) = 0, are exact). Values are shifted by the slice's source
 * median μ first (|t − s| is shift-invariant) to keep the two products small when states
 * drift far from 0.
 *
 * Instead of storing the prefix arrays, the kernel walks the targets in sorted order and
 * advances one running prefix (a tile of columns wide) through the sorted sources: a merge.
 * Per slice and column tile it reads every source row and every target row once. The
 * column-independent parts are taken out of the loop and applied once in an epilogue:
 *
 *   OUT:    Y_i += Σ_hk 2λ(t'·P0[lo] − P1[lo])  then  Y_i += (offset − τ_i)·T0 + C1
 *           with t' = t − μ, τ_i = Σ_hk λ_h t'_i, C1 = Σ_hk λ_h T1_hk;
 *   GRAD_T: dT_i += λ·Dt_i·(P0[lo] + P0[hi])  then  dT_i −= λ·ρ_i,  ρ_i = Dt_i·T0;
 *   GRAD_LAMBDA: Σ_i Dt_i·2(t'P0[lo] − P1[lo]) − Σ_i t'_i ρ_i + D0·T1,  D0 = Σ_i Dt_i.
 *
 * Batch 1 (a single column) builds the prefix arrays instead (l1_col1): no merge, no
 * mispredicted loop exits, vectorized gathers. The batch-1 forward (l1_fwd1, when the job
 * carries the 16-run layout of dyn_native_prepare) scans the sources as 16 runs at once and
 * visits the targets in their own order (README.md "Batch 1").
 *
 * Threads: with at least 64 columns per thread, tiles are spread over threads (outputs are
 * disjoint; dT goes to private copies). With fewer columns, slices are spread over threads
 * and the outputs of threads 1.. go to private copies, reduced in the epilogue (thread 0
 * accumulates into the real output).
 */
#include <string.h>

#include <cblas.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "dyn.h"
#include "../cpu/isa.h"
#if DYN_ISA_X86
#include <immintrin.h>
#endif
#include "../cpu/par.h"

#define TW_MAX 64 /* widest column tile */
#define TW_MIN 16 /* narrowest tile in the tile-parallel mode */
#define PF 8      /* prefetch distance, in rows */
#define FWD1_PAR_MIN (1 << 20) /* slice elements below which the batch-1 forward runs on one thread */

#if defined(__GNUC__)
#define ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE inline
#endif

typedef struct l1_plan {
    int nt;       /* threads */
    int by_slice; /* 1: parallel over slices with private outputs; 0: over column tiles */
    int tw;       /* tile width (<= TW_MAX) */
    int64_t ntiles;
} l1_plan;

/* Small jobs run on one thread (the plan also sizes the workspace, so it must not depend on
 * anything but the job's shape and the thread count). */
static l1_plan l1_plan_make(const dyn_l1_job *jb) {
    const int64_t cols = jb->cols;
    const int Hq = jb->H * jb->q;
    l1_plan p;
    p.nt = dyn_threads_get();
    if (p.nt < 1 || (int64_t)Hq * ((int64_t)jb->M + jb->N) * cols <= 32768) p.nt = 1;
    /* The batch-1 forward runs ~0.5-0.8 ns per slice element on one thread; waking a second,
     * sleeping thread (OMP_WAIT_POLICY=PASSIVE) costs tens of µs and more under load, which
     * measured as much as the second thread saves below ~1 M elements (tests/bench/bench_dyn). */
    if (jb->cols == 1 && jb->flags == DYN_L1_OUT && (int64_t)Hq * ((int64_t)jb->M + jb->N) < FWD1_PAR_MIN)
        p.nt = 1;
    /* The cost is dominated by visiting a state (a row of the tile), not by the columns of a
     * row: tiles as wide as possible. Each thread gets whole TW_MAX tiles when there are
     * enough columns; otherwise the slices are split (private outputs). */
    if (p.nt == 1) {
        p.by_slice = 0;
        p.tw = (int)DYN_MIN(cols, TW_MAX);
    } else if (cols >= (int64_t)p.nt * TW_MAX || Hq < p.nt) {
        p.by_slice = 0;
        int64_t per = (cols + p.nt - 1) / p.nt;
        if (per > TW_MIN) per = (per + TW_MIN - 1) / TW_MIN * TW_MIN;
        p.tw = (int)DYN_MIN(per, TW_MAX);
    } else {
        p.by_slice = 1;
        p.tw = (int)DYN_MIN(cols, TW_MAX);
    }
    if (p.tw < 1) p.tw = 1;
    p.ntiles = (cols + p.tw - 1) / p.tw;
    return p;
}

static size_t seg(size_t floats) { return (floats + 15) / 16 * 16; }

/* Position in the batch-1 forward's 16-run layout (runs of L sources) of the prefix sum at
 * rank r, as 16·t + k with r = k·L + t; r = N = 16·L, past the last run, is the row of run
 * totals (k = 15, t = L). */
static inline int pos16_of(int r, int L) {
    const int k = r / L;
    return k >= 16 ? 16 * L + 15 : 16 * (r % L) + k;
}

/* Per-thread prefix scratch of the batch-1 paths: 2(N+1) floats (l1_col1), or 32 per step of
 * the 16-run layout plus a row of run totals (l1_fwd1). */
static size_t prefix_floats(int N) {
    const size_t a = 2 * ((size_t)N + 1), b = 32 * ((size_t)(N + 15) / 16 + 1);
    return seg(a > b ? a : b);
}

/* The batch-1 forward that visits targets in their own order (l1_fwd1_run) applies: one
 * column, outputs only, and the ranks by original index at hand. */
static int fwd1_ok(const dyn_l1_job *jb) {
    return jb->cols == 1 && jb->flags == DYN_L1_OUT && jb->t_pos16;
}

/* Workspace layout; every segment 64-byte aligned. */
typedef struct l1_ws {
    float *T0, *D0, *C1, *mu, *tau, *rho, *ypriv, *dTpriv, *prefix;
    double *lamacc;
    size_t total;
} l1_ws;

static l1_ws l1_ws_layout(const dyn_l1_job *jb, const l1_plan *p, float *base) {
    const int Hq = jb->H * jb->q;
    const int grad = jb->flags & (DYN_L1_GRAD_T | DYN_L1_GRAD_LAMBDA);
    const int out = jb->flags & DYN_L1_OUT;
    size_t at = 0;
    l1_ws w;
#define TAKE(field, n)                                  \
    do {                                                \
        size_t n_ = (n);                                \
        w.field = base && n_ ? base + at : NULL;        \
        at += seg(n_);                                  \
    } while (0)
    TAKE(T0, (size_t)jb->cols);
    TAKE(D0, jb->dt ? (size_t)jb->cols : 0);
    TAKE(C1, out ? DYN_MAX((size_t)jb->cols * (p->by_slice ? p->nt : 1),
                           fwd1_ok(jb) ? (size_t)Hq : 0)
             : 0);
    TAKE(mu, (size_t)Hq);
    TAKE(tau, out ? (size_t)jb->M : 0);
    TAKE(rho, grad ? (size_t)jb->M : 0);
    /* private copies for threads 1.. (thread 0 accumulates into the real output) */
    /* batch 1 forward (l1_fwd1_run): one contiguous accumulator per thread */
    TAKE(ypriv, fwd1_ok(jb) ? (size_t)p->nt * jb->M
                : out && p->by_slice ? (size_t)(p->nt - 1) * jb->M * (size_t)jb->cols
                                     : 0);
    TAKE(dTpriv, (jb->flags & DYN_L1_GRAD_T) && !p->by_slice
                     ? (size_t)(p->nt - 1) * Hq * jb->M
                     : 0);
    TAKE(prefix, p->tw == 1 ? (size_t)p->nt * prefix_floats(jb->N) : 0);
    w.lamacc = base ? (double *)(base + at) : NULL;
    at += seg(2 * (size_t)p->nt * Hq);
#undef TAKE
    w.total = at;
    return w;
}

size_t dyn_l1_ws_floats(int H, int q, int M, int N, int64_t cols, int flags) {
    dyn_l1_job jb = {.H = H, .q = q, .M = M, .N = N, .cols = cols, .flags = flags};
    jb.dt = (flags & (DYN_L1_GRAD_T | DYN_L1_GRAD_LAMBDA)) ? (const float *)&jb : NULL;
    /* callers size for the largest need: count the batch-1 forward's accumulators too */
    if (flags == DYN_L1_OUT) jb.t_pos16 = (const int32_t *)&jb;
    l1_plan p = l1_plan_make(&jb);
    return l1_ws_layout(&jb, &p, NULL).total;
}

/* The kernels (native_kern.h), once per instruction set; dyn_l1_run picks one per call. */
typedef void (*l1_kern_fn)(const dyn_l1_job *jb, int hk, int64_t c0, int tw, float *ybase,
                           int64_t y_rs, float *dT_hk, double *lamacc, float *c1, const float *D0,
                           float mu, float *pre);
#define L1K_SUF base
#define L1K_ATTR
#define L1K_AVX512 0
#define L1K_AVX2 0
#include "native_kern.h"
#undef L1K_SUF
#undef L1K_ATTR
#undef L1K_AVX512
#undef L1K_AVX2
#if DYN_ISA_X86
#define L1K_SUF avx2
#define L1K_ATTR DYN_TARGET_AVX2
#define L1K_AVX512 0
#define L1K_AVX2 1
#include "native_kern.h"
#undef L1K_SUF
#undef L1K_ATTR
#undef L1K_AVX512
#undef L1K_AVX2
#define L1K_SUF avx512
#define L1K_ATTR DYN_TARGET_AVX512
#define L1K_AVX512 1
#define L1K_AVX2 0
#include "native_kern.h"
#undef L1K_SUF
#undef L1K_ATTR
#undef L1K_AVX512
#undef L1K_AVX2
#endif

static l1_kern_fn l1_kern(void) {
#if DYN_ISA_X86
    switch (dyn_isa()) {
    case DYN_ISA_AVX512: return l1_tile_any_avx512;
    case DYN_ISA_AVX2: return l1_tile_any_avx2;
    default: break;
    }
#endif
    return l1_tile_any_base;
}

typedef void (*l1_fwd1_fn)(const dyn_l1_job *jb, int hk, float mu, float *pre, float *y_acc,
                           float *t0, float *t1);

static l1_fwd1_fn l1_fwd1_kern(void) {
#if DYN_ISA_X86
    switch (dyn_isa()) {
    case DYN_ISA_AVX512: return l1_fwd1_avx512;
    case DYN_ISA_AVX2: return l1_fwd1_avx2;
    default: break;
    }
#endif
    return l1_fwd1_base;
}

/* Σ_c a[c] b[c] in double. */
static double dot_fd(const float *a, const float *b, int64_t n) {
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (int64_t c = 0; c < n; c++) acc += (double)a[c] * b[c];
    return acc;
}

/* sum[c] = Σ_r rows[r][c] for c < cols. */
static void column_sums(const float *rows, int64_t rs, int nrows, int64_t cols, float *sum,
                        int par) {
    enum { CB = 256 };
    const int64_t nb = (cols + CB - 1) / CB;
    if (nb >= 2 || !par) {
DYN_PAR_FOR(par && nb >= 2, for (int64_t b = 0; b < nb; b++) {
            const int64_t c0 = b * CB, w = DYN_MIN((int64_t)CB, cols - c0);
            float acc[CB];
            for (int64_t c = 0; c < w; c++) acc[c] = 0.0f;
            for (int r = 0; r < nrows; r++) {
                const float *x = rows + (int64_t)r * rs + c0;
                for (int64_t c = 0; c < w; c++) acc[c] += x[c];
            }
            memcpy(sum + c0, acc, (size_t)w * sizeof(float));
        });
        return;
    }
    /* Few columns, many rows: split the rows. */
    for (int64_t c = 0; c < cols; c++) sum[c] = 0.0f;
#pragma omp parallel
    {
        float acc[CB];
        for (int64_t c = 0; c < cols; c++) acc[c] = 0.0f;
#pragma omp for schedule(static) nowait
        for (int r = 0; r < nrows; r++) {
            const float *x = rows + (int64_t)r * rs;
            for (int64_t c = 0; c < cols; c++) acc[c] += x[c];
        }
#pragma omp critical(dyn_l1_colsum)
        for (int64_t c = 0; c < cols; c++) sum[c] += acc[c];
    }
}

/* One tile of columns over every slice (the column-split schedule). dTp: this thread's dT
 * accumulator (NULL without GRAD_T); lam_t, pre: this thread's λ accumulators and scratch. */
static void l1_cols(l1_kern_fn kern, const dyn_l1_job *jb, const l1_plan *p, const l1_ws *w,
                    int64_t tile, float *dTp, double *lam_t, float *pre) {
    const int out = jb->flags & DYN_L1_OUT, Hq = jb->H * jb->q;
    const int64_t c0 = tile * p->tw;
    const int tw = (int)DYN_MIN((int64_t)p->tw, jb->cols - c0);
    for (int hk = 0; hk < Hq; hk++)
        kern(jb, hk, c0, tw, out ? jb->y + c0 : NULL, jb->y_rs,
             dTp ? dTp + (int64_t)hk * jb->M : NULL, lam_t + hk, out ? w->C1 + c0 : NULL,
             jb->dt ? w->D0 + c0 : NULL, w->mu[hk], pre);
}

/* One slice over every tile (the slice-split schedule): yp / yrs / c1p this thread's output. */
static void l1_slice(l1_kern_fn kern, const dyn_l1_job *jb, const l1_plan *p, const l1_ws *w,
                     int hk, float *yp, int64_t yrs, float *c1p, double *lam_t, float *pre) {
    const int gt = jb->flags & DYN_L1_GRAD_T;
    for (int64_t tile = 0; tile < p->ntiles; tile++) {
        const int64_t c0 = tile * p->tw;
        const int tw = (int)DYN_MIN((int64_t)p->tw, jb->cols - c0);
        kern(jb, hk, c0, tw, yp ? yp + c0 : NULL, yrs, gt ? jb->dT + (int64_t)hk * jb->M : NULL,
             lam_t + hk, c1p ? c1p + c0 : NULL, jb->dt ? w->D0 + c0 : NULL, w->mu[hk], pre);
    }
}

/* Inside a parallel region: this thread's number; thread 0 also stores the team's size in
 * *team (shared by the caller). */
static int region_ids(int *team) {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
    if (tid == 0) *team = omp_get_num_threads();
    return tid;
#else
    (void)team;
    return 0;
#endif
}

/* The batch-1 forward (fwd1_ok): one OpenMP region with no barrier inside (with sleeping
 * waits every barrier costs a wake-up, tens of µs in a VM: as much as the work at 8192²).
 * Each thread runs whole slices into its own contiguous accumulator (l1_fwd1); after the
 * region the calling thread adds the accumulators, offset·T0 and C1 = Σ_hk λ_h T1_hk into y.
 * T1 is kept per slice and summed in slice order, so C1 does not depend on the thread count. */
static void l1_fwd1_run(const dyn_l1_job *jb, const l1_plan *p, const l1_ws *w) {
    const int Hq = jb->H * jb->q, M = jb->M, N = jb->N;
    const l1_fwd1_fn kern = l1_fwd1_kern();
    float *t1 = w->C1; /* [Hq] here (sized max(cols·nt, Hq) by the layout) */
    float T0 = 0.0f;
    int team = 1;
    for (int hk = 0; hk < Hq; hk++) w->mu[hk] = jb->s_val[(int64_t)hk * N + N / 2];
#pragma omp parallel num_threads(p->nt) if (p->nt > 1)
    {
        const int tid = region_ids(&team);
        float *acc = w->ypriv + (int64_t)tid * M;
        float *pre = w->prefix + (int64_t)tid * prefix_floats(N);
        memset(acc, 0, (size_t)M * sizeof(float));
#pragma omp for schedule(static) nowait
        for (int hk = 0; hk < Hq; hk++) {
            float t0;
            kern(jb, hk, w->mu[hk], pre, acc, &t0, &t1[hk]);
            if (hk == 0) T0 = t0;
        }
    }
    double c1 = 0.0;
    for (int hk = 0; hk < Hq; hk++) c1 += (double)jb->lambda[hk / jb->q] * t1[hk];
    const float base = jb->offset * T0 + (float)c1;
    float *restrict y = jb->y;
    const int64_t yrs = jb->y_rs;
    const float *restrict a0 = w->ypriv;
    for (int i = 0; i < M; i++) {
        float v = base + a0[i];
        for (int t = 1; t < team; t++) v += w->ypriv[(int64_t)t * M + i];
        y[(int64_t)i * yrs] += v;
    }
}

void dyn_l1_run(const dyn_l1_job *jb) {
    const int H = jb->H, q = jb->q, Hq = H * q, M = jb->M, N = jb->N;
    const int64_t cols = jb->cols;
    const int flags = jb->flags;
    const int out = flags & DYN_L1_OUT, gt = flags & DYN_L1_GRAD_T,
              gl = flags & DYN_L1_GRAD_LAMBDA;
    DYN_ASSERT(!(gt || gl || jb->doffset) || jb->dt);
    DYN_ASSERT(!gt || jb->dT);
    DYN_ASSERT(!gl || jb->dlambda);
    DYN_ASSERT(!out || jb->y);
    if (cols <= 0 || M <= 0 || N <= 0) return;

    const l1_plan p = l1_plan_make(jb);
    const l1_kern_fn kern = l1_kern();
    const size_t need = l1_ws_layout(jb, &p, NULL).total;
    float *own = NULL, *base = jb->ws;
    if (!base || jb->ws_floats < need) {
        own = base = dyn_alloc(need * sizeof(float));
        DYN_ASSERT(own);
    }
    const l1_ws w = l1_ws_layout(jb, &p, base);
    const int par = p.nt > 1;
    if (fwd1_ok(jb)) {
        l1_fwd1_run(jb, &p, &w);
        dyn_free(own);
        return;
    }

    /* Column-independent precomputation. */
    column_sums(jb->xs, jb->xs_rs, N, cols, w.T0, par);
    if (jb->dt) column_sums(jb->dt, jb->dt_rs, M, cols, w.D0, par);
    for (int hk = 0; hk < Hq; hk++) w.mu[hk] = jb->s_val[(int64_t)hk * N + N / 2];
    if (gt || gl) {
DYN_PAR_FOR(par && (int64_t)M * cols > 16384, for (int i = 0; i < M; i++) {
            w.rho[i] = (float)dot_fd(jb->dt + (int64_t)i * jb->dt_rs, w.T0, cols);
        });
    }
    if (out) {
        /* τ_i = Σ_hk λ_h (t_i − μ_hk), in blocks of targets so the inner loop runs over i. */
        enum { TB = 512 };
        const int nb = (M + TB - 1) / TB;
DYN_PAR_FOR(par && (int64_t)M * Hq > 16384, for (int b = 0; b < nb; b++) {
            const int i0 = b * TB, i1 = DYN_MIN(M, i0 + TB);
            double acc[TB];
            for (int i = i0; i < i1; i++) acc[i - i0] = 0.0;
            for (int hk = 0; hk < Hq; hk++) {
                const double lam = jb->lambda[hk / q], mu = w.mu[hk];
                const float *ts = jb->t_states + (int64_t)hk * M;
                for (int i = i0; i < i1; i++) acc[i - i0] += lam * ((double)ts[i] - mu);
            }
            for (int i = i0; i < i1; i++) w.tau[i] = (float)acc[i - i0];
        });
        memset(w.C1, 0, (size_t)cols * (p.by_slice ? p.nt : 1) * sizeof(float));
    }
    memset(w.lamacc, 0, 2 * (size_t)p.nt * Hq * sizeof(float));

    int team = 1; /* threads that really ran (private copies of absent ones are not read) */
    if ((out || gt || gl) && !par) {
        /* one thread, no OpenMP region (entering one costs a system call in a VM) */
        if (!p.by_slice)
            for (int64_t tile = 0; tile < p.ntiles; tile++)
                l1_cols(kern, jb, &p, &w, tile, gt ? jb->dT : NULL, w.lamacc, w.prefix);
        else
            for (int hk = 0; hk < Hq; hk++)
                l1_slice(kern, jb, &p, &w, hk, out ? jb->y : NULL, jb->y_rs, out ? w.C1 : NULL,
                         w.lamacc, w.prefix);
    } else if (out || gt || gl) {
#pragma omp parallel num_threads(p.nt)
        {
            const int tid = region_ids(&team);
            double *lam_t = w.lamacc + (int64_t)tid * Hq;
            float *pre = w.prefix ? w.prefix + (int64_t)tid * prefix_floats(N) : NULL;
            if (!p.by_slice) {
                /* thread 0 accumulates into dT itself, the others into private copies */
                float *dTp = !gt ? NULL : tid > 0 ? w.dTpriv + (int64_t)(tid - 1) * Hq * M : jb->dT;
                if (dTp && tid > 0) memset(dTp, 0, (size_t)Hq * M * sizeof(float));
#pragma omp for schedule(dynamic, 1)
                for (int64_t tile = 0; tile < p.ntiles; tile++)
                    l1_cols(kern, jb, &p, &w, tile, dTp, lam_t, pre);
            } else {
                float *yp = !out ? NULL : tid > 0 ? w.ypriv + (int64_t)(tid - 1) * M * cols : jb->y;
                const int64_t yrs = tid > 0 ? cols : jb->y_rs;
                float *c1p = out ? w.C1 + (int64_t)tid * cols : NULL;
                if (yp && tid > 0) memset(yp, 0, (size_t)M * cols * sizeof(float));
#pragma omp for schedule(dynamic, 1)
                for (int hk = 0; hk < Hq; hk++)
                    l1_slice(kern, jb, &p, &w, hk, yp, yrs, c1p, lam_t, pre);
            }
        }
    }

    /* Epilogue: the column-independent terms and the reductions of private copies. */
    if (out) {
        if (p.by_slice)
            for (int t = 1; t < team; t++)
                for (int64_t c = 0; c < cols; c++) w.C1[c] += w.C1[(int64_t)t * cols + c];
DYN_PAR_FOR(par && (int64_t)M * cols > 16384, for (int i = 0; i < M; i++) {
            float *y = jb->y + (int64_t)i * jb->y_rs;
            const float a = jb->offset - w.tau[i];
            if (p.by_slice) {
                for (int t = 1; t < team; t++) {
                    const float *yp = w.ypriv + ((int64_t)(t - 1) * M + i) * cols;
                    for (int64_t c = 0; c < cols; c++) y[c] += yp[c];
                }
            }
            for (int64_t c = 0; c < cols; c++) y[c] += a * w.T0[c] + w.C1[c];
        });
    }
    if (gt) {
DYN_PAR_FOR(par && (int64_t)Hq * M > 16384, for (int hk = 0; hk < Hq; hk++) {
            float *d = jb->dT + (int64_t)hk * M;
            const float lam = jb->lambda[hk / q];
            if (!p.by_slice)
                for (int t = 1; t < team; t++) {
                    const float *s = w.dTpriv + ((int64_t)(t - 1) * Hq + hk) * M;
                    for (int i = 0; i < M; i++) d[i] += s[i];
                }
            for (int i = 0; i < M; i++) d[i] -= lam * w.rho[i];
        });
    }
    if (gl) {
        for (int hk = 0; hk < Hq; hk++) {
            double acc = 0.0;
            for (int t = 0; t < p.nt; t++) acc += w.lamacc[(int64_t)t * Hq + hk];
            const float *ts = jb->t_states + (int64_t)hk * M;
            const double mu = w.mu[hk];
            double sub = 0.0;
#pragma omp simd reduction(+ : sub)
            for (int i = 0; i < M; i++) sub += ((double)ts[i] - mu) * w.rho[i];
            acc -= sub;
            jb->dlambda[hk / q] += (float)acc;
        }
    }
    if (jb->doffset) {
        double acc = 0.0;
#pragma omp simd reduction(+ : acc)
        for (int64_t c = 0; c < cols; c++) acc += (double)w.T0[c] * w.D0[c];
        jb->doffset[0] += (float)acc;
    }
    dyn_free(own);
}

/* ---- one linear system --------------------------------------------------------------------- */

/* The batch-1 forward's layout (dyn_l1_job's s_perm16, s_val16, t_pos16) from the sorted v
 * side and u's ranks in it. */
static int fwd1_build(dyn_native *nat, const dyn_sys *s, dyn_err *err) {
    const int Hq = s->H * s->q, m = s->m, n = s->n, L = (n + 15) / 16;
    const int64_t len16 = (int64_t)Hq * 16 * L, lenpos = (int64_t)Hq * m;
    if (!nat->perm16 || nat->len16 != len16 || nat->lenpos != lenpos) {
        dyn_free(nat->perm16);
        dyn_free(nat->val16);
        dyn_free(nat->pos16);
        nat->perm16 = dyn_alloc((size_t)(len16 ? len16 : 1) * sizeof(int32_t));
        nat->val16 = dyn_alloc((size_t)(len16 ? len16 : 1) * sizeof(float));
        nat->pos16 = dyn_alloc((size_t)(lenpos ? lenpos : 1) * sizeof(int32_t));
        nat->len16 = len16;
        nat->lenpos = lenpos;
        if (!nat->perm16 || !nat->val16 || !nat->pos16) {
            dyn_native_free(nat);
            return dyn_err_set(err, DYN_ENOMEM, "out of memory for DyN orders");
        }
    }
    for (int64_t sl = 0; sl < Hq; sl++) {
        const int32_t *sp = nat->sv.perm + sl * n;
        const float *sv = nat->sv.val + sl * n;
        const float mu = sv[n / 2];
        int32_t *p16 = nat->perm16 + sl * 16 * L;
        float *v16 = nat->val16 + sl * 16 * L;
        for (int t = 0; t < L; t++)
            for (int k = 0; k < 16; k++) {
                const int r = k * L + t;
                p16[16 * t + k] = r < n ? sp[r] : 0;
                v16[16 * t + k] = r < n ? sv[r] - mu : 0.0f;
            }
        const int32_t *up = nat->su.perm + sl * m, *lo = nat->r.a_lo + sl * m;
        int32_t *pos = nat->pos16 + sl * m;
        for (int r = 0; r < m; r++) pos[up[r]] = pos16_of(lo[r], L);
    }
    return 0;
}

int dyn_native_prepare(dyn_native *nat, const dyn_sys *s, dyn_err *err) {
    DYN_ASSERT(s->kernel == DYN_KERNEL_L1);
    const int Hq = s->H * s->q;
    int rc = dyn_sorted_update(&nat->su, s->u, Hq, s->m, 0, err);
    if (!rc) rc = dyn_sorted_update(&nat->sv, s->v, Hq, s->n, 0, err);
    if (!rc) rc = dyn_ranks_update(&nat->r, nat->su.val, nat->sv.val, Hq, s->m, s->n, err);
    if (rc) return rc;
    return fwd1_build(nat, s, err);
}

void dyn_native_free(dyn_native *nat) {
    dyn_sorted_free(&nat->su);
    dyn_sorted_free(&nat->sv);
    dyn_ranks_free(&nat->r);
    dyn_free(nat->perm16);
    dyn_free(nat->val16);
    dyn_free(nat->pos16);
    nat->perm16 = nat->pos16 = NULL;
    nat->val16 = NULL;
    nat->len16 = nat->lenpos = 0;
}

int64_t dyn_native_aux_words(const dyn_sys *s) {
    return (int64_t)s->H * s->q * (4 * ((int64_t)s->m + s->n) + s->m + 2 * 16 * ((s->n + 15) / 16));
}

/* T = A (u), S = B (v). */
static dyn_l1_job job_ab(const dyn_sys *s, const dyn_native *nat, int64_t cols) {
    dyn_l1_job jb = {.H = s->H, .q = s->q, .M = s->m, .N = s->n, .cols = cols,
                     .lambda = s->lambda, .t_states = s->u, .t_perm = nat->su.perm,
                     .t_val = nat->su.val, .t_lo = nat->r.a_lo, .t_hi = nat->r.a_hi,
                     .s_perm16 = nat->perm16, .s_val16 = nat->val16, .t_pos16 = nat->pos16,
                     .s_perm = nat->sv.perm, .s_val = nat->sv.val, .offset = s->c};
    return jb;
}

/* T = B (v), S = A (u). */
static dyn_l1_job job_ba(const dyn_sys *s, const dyn_native *nat, int64_t cols) {
    dyn_l1_job jb = {.H = s->H, .q = s->q, .M = s->n, .N = s->m, .cols = cols,
                     .lambda = s->lambda, .t_states = s->v, .t_perm = nat->sv.perm,
                     .t_val = nat->sv.val, .t_lo = nat->r.b_lo, .t_hi = nat->r.b_hi,
                     .s_perm = nat->su.perm, .s_val = nat->su.val, .offset = s->c};
    return jb;
}

size_t dyn_native_ws_floats(const dyn_sys *s, int64_t cols) {
    size_t a = dyn_l1_ws_floats(s->H, s->q, s->m, s->n, cols, DYN_L1_OUT);
    size_t b = dyn_l1_ws_floats(s->H, s->q, s->m, s->n, cols,
                                DYN_L1_GRAD_T | DYN_L1_GRAD_LAMBDA);
    size_t c = dyn_l1_ws_floats(s->H, s->q, s->n, s->m, cols, DYN_L1_OUT | DYN_L1_GRAD_T);
    return DYN_MAX(a, DYN_MAX(b, c));
}

void dyn_native_forward(const dyn_sys *s, const dyn_native *nat, const float *x, int64_t ldx,
                        float *y, int64_t ldy, int64_t cols, float *ws, size_t ws_floats) {
    dyn_l1_job jb = job_ab(s, nat, cols);
    jb.flags = DYN_L1_OUT;
    jb.xs = x;
    jb.xs_rs = ldx;
    jb.y = y;
    jb.y_rs = ldy;
    jb.ws = ws;
    jb.ws_floats = ws_floats;
    dyn_l1_run(&jb);
}

void dyn_native_backward(const dyn_sys *s, const dyn_native *nat, const float *x, int64_t ldx,
                         const float *d, int64_t ldd, float *dx, int64_t lddx, int64_t cols,
                         const dyn_sys_grad *g, float *ws, size_t ws_floats) {
    if (g->du || g->dlambda || g->dc) {
        dyn_l1_job jb = job_ab(s, nat, cols);
        jb.flags = (g->du ? DYN_L1_GRAD_T : 0) | (g->dlambda ? DYN_L1_GRAD_LAMBDA : 0);
        jb.xs = x;
        jb.xs_rs = ldx;
        jb.dt = d;
        jb.dt_rs = ldd;
        jb.dT = g->du;
        jb.dlambda = g->dlambda;
        jb.doffset = g->dc;
        jb.ws = ws;
        jb.ws_floats = ws_floats;
        dyn_l1_run(&jb);
    }
    if (dx || g->dv) {
        dyn_l1_job jb = job_ba(s, nat, cols);
        jb.flags = (dx ? DYN_L1_OUT : 0) | (g->dv ? DYN_L1_GRAD_T : 0);
        jb.xs = d;
        jb.xs_rs = ldd;
        jb.y = dx;
        jb.y_rs = lddx;
        jb.dt = g->dv ? x : NULL;
        jb.dt_rs = ldx;
        jb.dT = g->dv;
        jb.ws = ws;
        jb.ws_floats = ws_floats;
        dyn_l1_run(&jb);
    }
}

void dyn_transpose(const float *src, int64_t rows, int64_t cols, float *dst) {
    enum { B = 16 };
    if (rows == 1 || cols == 1) {
        memcpy(dst, src, (size_t)(rows * cols) * sizeof(float));
        return;
    }
    /* 16×16 blocks through a local tile: both the loads and the stores stay contiguous (a
     * plain double loop vectorizes into scatters, ~20× slower). */
    const int64_t rb = (rows + B - 1) / B, cb = (cols + B - 1) / B;
    DYN_PAR_FOR2(rows * cols > 32768, for (int64_t bi = 0; bi < rb; bi++)
        for (int64_t bj = 0; bj < cb; bj++) {
            const int64_t r0 = bi * B, c0 = bj * B;
            if (r0 + B <= rows && c0 + B <= cols) {
                float tmp[B][B];
                for (int r = 0; r < B; r++)
                    for (int c = 0; c < B; c++) tmp[c][r] = src[(r0 + r) * cols + c0 + c];
                for (int c = 0; c < B; c++)
                    for (int r = 0; r < B; r++) dst[(c0 + c) * rows + r0 + r] = tmp[c][r];
            } else {
                const int64_t r1 = DYN_MIN(rows, r0 + B), c1 = DYN_MIN(cols, c0 + B);
                for (int64_t c = c0; c < c1; c++)
                    for (int64_t r = r0; r < r1; r++) dst[c * rows + r] = src[r * cols + c];
            }
        });
}

/* ---- cost model ---------------------------------------------------------------------------- */

/* Single-thread costs measured on the development machine (AMD EPYC Zen 5, AVX-512, OpenBLAS
 * 0.3.21) by tests/bench/bench_dyn and a conv sweep; README "Choosing the execution". Only
 * their ratios matter for the decisions; with two threads both sides roughly halve (the
 * memory-bound GEMV less, which favors native at batch 1 a little more). dyn_cost_calibrate
 * replaces them by this machine's (dynd and dyn bench with DYN_COST=calibrate). */
#define COST_BUILTIN                                                                        \
    {                                                                                       \
        .native_ns_per_elem_col = 0.15, /* one slice element × one column */                \
        .native_ns_per_elem = 1.2,      /* per slice element and call (the batch-1 floor) */ \
        .dense_ns_per_mac = 0.024,      /* sgemm at batch >= 64 */                           \
        .dense_ns_per_wfloat = 0.125,   /* streaming W once (GEMV is memory-bound) */        \
        /* a dense convolution as inference runs it (oneDNN, fused graph): ResNet-18 at   */ \
        /* batch 1, one thread, 19.4 ms for 1.81 G MACs (tests/experiments/RESULTS.md)    */ \
        .dense_conv_ns_per_mac = 0.0107,                                                     \
    }
static const dyn_cost_consts cost_builtin = COST_BUILTIN;
/* (C17 does not take a const object as a static initializer: clang refuses it, gcc allows it.) */
static dyn_cost_consts cost = COST_BUILTIN;

void dyn_cost_get(dyn_cost_consts *out) { *out = cost; }

double dyn_cost_native_s(int64_t slice_elems, int64_t cols) {
    return 1e-9 * (double)slice_elems *
           (cost.native_ns_per_elem + cost.native_ns_per_elem_col * (double)cols);
}

double dyn_cost_dense_s(int64_t macs_per_col, int64_t w_floats, int64_t cols) {
    double compute = 1e-9 * cost.dense_ns_per_mac * (double)macs_per_col * (double)cols;
    double stream = 1e-9 * cost.dense_ns_per_wfloat * (double)w_floats;
    return compute > stream ? compute : stream;
}

int dyn_cost_native_wins(int64_t slice_elems, int64_t macs_per_col, int64_t w_floats,
                         int64_t cols) {
    return dyn_cost_native_s(slice_elems, cols) <
           dyn_cost_dense_s(macs_per_col, w_floats, cols);
}

/* The best of `reps` runs of fn, in seconds. */
#define BEST_OF(reps, out, ...)                                                            \
    do {                                                                                   \
        (out) = 1e300;                                                                     \
        for (int r_ = 0; r_ < (reps); r_++) {                                              \
            double t0_ = dyn_now();                                                        \
            __VA_ARGS__;                                                                   \
            double t_ = dyn_now() - t0_;                                                   \
            if (t_ < (out)) (out) = t_;                                                    \
        }                                                                                  \
    } while (0)

int dyn_cost_calibrate(dyn_cost_consts *out, dyn_err *err) {
    /* native: a 512 x 512 system of H·q = 16 at 1 and 64 columns; dense: a 256³ sgemm and a
     * 2048² GEMV (8 MB of W, past the caches), one thread each, the best of several runs. */
    enum { M = 512, HQ = 16, C = 64, G = 256, V = 2048 };
    const int threads = dyn_threads_get();
    dyn_native nat = {0};
    float *u = dyn_alloc((size_t)HQ * M * sizeof(float)), *v = dyn_alloc((size_t)HQ * M * sizeof(float));
    float *x = dyn_alloc((size_t)V * V * sizeof(float)), *y = dyn_alloc((size_t)V * C * sizeof(float));
    float *a = dyn_alloc((size_t)G * G * sizeof(float)), *b = dyn_alloc((size_t)G * G * sizeof(float));
    float lambda[HQ];
    int rc = 0;
    if (!u || !v || !x || !y || !a || !b) {
        rc = dyn_err_set(err, DYN_ENOMEM, "cost calibration: out of memory");
        goto done;
    }
    dyn_rng rng;
    dyn_rng_seed(&rng, 1);
    for (int i = 0; i < HQ * M; i++) u[i] = dyn_rng_uniform(&rng), v[i] = dyn_rng_uniform(&rng);
    for (int i = 0; i < HQ; i++) lambda[i] = dyn_rng_uniform(&rng) - 0.5f;
    for (int64_t i = 0; i < (int64_t)V * V; i++) x[i] = dyn_rng_uniform(&rng) - 0.5f;
    for (int i = 0; i < G * G; i++) a[i] = x[i], b[i] = x[G * G + i];
    const dyn_sys s = {.m = M, .n = M, .H = HQ, .q = 1, .kernel = DYN_KERNEL_L1, .u = u, .v = v,
                       .lambda = lambda, .c = 0.0f};
    if ((rc = dyn_native_prepare(&nat, &s, err))) goto done;
    dyn_threads_set(1);
    double t1, tc, tg, tv;
    dyn_native_forward(&s, &nat, x, 1, y, 1, 1, NULL, 0); /* warm-up (workspace, caches) */
    BEST_OF(20, t1, dyn_native_forward(&s, &nat, x, 1, y, 1, 1, NULL, 0));
    BEST_OF(10, tc, dyn_native_forward(&s, &nat, x, C, y, C, C, NULL, 0));
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, G, G, G, 1.0f, a, G, b, G, 0.0f, y, G);
    BEST_OF(10, tg, cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, G, G, G, 1.0f, a, G,
                                b, G, 0.0f, y, G));
    BEST_OF(5, tv, cblas_sgemv(CblasRowMajor, CblasNoTrans, V, V, 1.0f, x, V, a, 1, 0.0f, y, 1));
    dyn_threads_set(threads);
    const double elems = (double)HQ * (2 * M);
    dyn_cost_consts c = {
        .native_ns_per_elem_col = 1e9 * (tc - t1) / (elems * (C - 1)),
        .native_ns_per_elem = 0,
        .dense_ns_per_mac = 1e9 * tg / ((double)G * G * G),
        .dense_ns_per_wfloat = 1e9 * tv / ((double)V * V),
    };
    c.native_ns_per_elem = 1e9 * t1 / elems - c.native_ns_per_elem_col;
    /* not measured: the built-in ratio of a convolution's MAC to the sgemm's */
    c.dense_conv_ns_per_mac =
        c.dense_ns_per_mac * cost_builtin.dense_conv_ns_per_mac / cost_builtin.dense_ns_per_mac;
    /* A measurement far from the built-in figures (a machine busy in one of the runs, a
     * timer gone wrong) keeps the built-in constant. */
    const double *bi = &cost_builtin.native_ns_per_elem_col;
    double *cv = &c.native_ns_per_elem_col;
    for (int i = 0; i < 4; i++)
        if (!(cv[i] >= bi[i] / 16 && cv[i] <= bi[i] * 16)) cv[i] = bi[i];
    cost = c;
    if (out) *out = c;
done:
    dyn_native_free(&nat);
    dyn_free(u), dyn_free(v), dyn_free(x), dyn_free(y), dyn_free(a), dyn_free(b);
    return rc;
}

void dyn_cost_reset(void) { cost = cost_builtin; }

int dyn_cost_conv_native_wins(int64_t slice_elems, int64_t macs_per_col, int64_t cols) {
    return dyn_cost_native_s(slice_elems, cols) <
           1e-9 * cost.dense_conv_ns_per_mac * (double)macs_per_col * (double)cols;
}

int dyn_cost_conv_native_always(int64_t slice_elems, int64_t macs_per_col) {
    return cost.native_ns_per_elem_col * (double)slice_elems <
           cost.dense_conv_ns_per_mac * (double)macs_per_col;
}

int dyn_cost_native_always(int64_t slice_elems, int64_t macs_per_col) {
    return cost.native_ns_per_elem_col * (double)slice_elems <
           cost.dense_ns_per_mac * (double)macs_per_col;
}
