/* native_kern.h — internal to native.c: the l1 kernels, compiled once per instruction set.
 *
 * native.c includes this file once per version with
 *   L1K_SUF     the name suffix (base, avx2, avx512): the functions are L1K(name) = name_SUF;
 *   L1K_ATTR    the function attribute (DYN_TARGET_AVX2, DYN_TARGET_AVX512, or empty);
 *   L1K_AVX512  1 where dot_tw may use AVX-512 intrinsics;
 * so the same source runs on the baseline ISA of the build and, chosen at run time by
 * cpu/isa.h, with the wider vectors of the CPU (the always-inline helpers take the ISA of the
 * kernel they are inlined into). No include guard: included several times on purpose.
 */
#define L1K_CAT2(a, b) a##_##b
#define L1K_CAT(a, b) L1K_CAT2(a, b)
#define L1K(name) L1K_CAT(name, L1K_SUF)

#ifndef L1K_SLICE_LOCALS
/* The locals of slice hk at column c0 both kernels start from: sorted sources (sp, sv) and
 * targets (tp, tv, lo, hi), the copy's strength, the column tile's inputs and row strides. */
#define L1K_SLICE_LOCALS                                                 \
    const int M = jb->M, N = jb->N;                                      \
    const int64_t so = (int64_t)hk * N, to = (int64_t)hk * M;            \
    const int32_t *restrict sp = jb->s_perm + so;                        \
    const float *restrict sv = jb->s_val + so;                           \
    const int32_t *restrict tp = jb->t_perm + to;                        \
    const int32_t *restrict lo = jb->t_lo + to;                          \
    const int32_t *restrict hi = jb->t_hi + to;                          \
    const float *restrict tv = jb->t_val + to;                           \
    const float lam = jb->lambda[hk / jb->q], lam2 = 2.0f * lam;         \
    const float *restrict xs = jb->xs + c0;                              \
    const int64_t xrs = jb->xs_rs, drs = jb->dt_rs
#endif

/* Σ_c a[c]·b[c] for one target: a plain float reduction compiles to an in-order chain of
 * scalar adds, so use one vector accumulator and a single horizontal sum. */
#if L1K_AVX512
static ALWAYS_INLINE L1K_ATTR float L1K(dot_tw)(const float *a, const float *b, const int n) {
    __m512 acc = _mm512_setzero_ps();
    int c = 0;
    for (; c + 16 <= n; c += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(a + c), _mm512_loadu_ps(b + c), acc);
    if (c < n) {
        const __mmask16 m = (__mmask16)((1u << (n - c)) - 1u);
        acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + c), _mm512_maskz_loadu_ps(m, b + c),
                              acc);
    }
    return _mm512_reduce_add_ps(acc);
}
#else
static ALWAYS_INLINE L1K_ATTR float L1K(dot_tw)(const float *restrict a, const float *restrict b,
                                                const int n) {
    float acc[16];
    for (int k = 0; k < 16; k++) acc[k] = 0.0f;
    int c = 0;
    for (; c + 16 <= n; c += 16)
        for (int k = 0; k < 16; k++) acc[k] += a[c + k] * b[c + k];
    for (int k = 0; c + k < n; k++) acc[k] += a[c + k] * b[c + k];
    for (int w = 8; w >= 1; w /= 2)
        for (int k = 0; k < w; k++) acc[k] += acc[k + w];
    return acc[0];
}
#endif

/* One slice hk over one column tile [c0, c0 + tw). ybase/c1/D0 point at column c0 of their
 * arrays; dT_hk at the slice's M accumulators. */
static ALWAYS_INLINE L1K_ATTR void L1K(l1_tile)(const dyn_l1_job *jb, int hk, int64_t c0,
                                               const int tw, const int flags, float *ybase,
                                               int64_t y_rs, float *dT_hk, double *lamacc,
                                               float *c1, const float *D0, float mu) {
    L1K_SLICE_LOCALS;
    const float *restrict dt = jb->dt ? jb->dt + c0 : NULL;
    const int gt = flags & DYN_L1_GRAD_T, gl = flags & DYN_L1_GRAD_LAMBDA,
              out = flags & DYN_L1_OUT;
    float P0[TW_MAX], P1[TW_MAX], L0[TW_MAX], L1[TW_MAX], SG[TW_MAX], LA[TW_MAX];
    for (int c = 0; c < tw; c++) P0[c] = P1[c] = L0[c] = L1[c] = SG[c] = LA[c] = 0.0f;
    int j = 0;
#define ADVANCE(lim)                                                                   \
    do {                                                                               \
        const int lim_ = (lim);                                                        \
        for (; j < lim_; j++) {                                                        \
            if (j + PF < N) __builtin_prefetch(xs + (int64_t)sp[j + PF] * xrs);        \
            const float *restrict x = xs + (int64_t)sp[j] * xrs;                       \
            const float s = sv[j] - mu;                                                \
            _Pragma("omp simd") for (int c = 0; c < tw; c++) {                         \
                P0[c] += x[c];                                                         \
                P1[c] += s * x[c];                                                     \
            }                                                                          \
        }                                                                              \
    } while (0)
    for (int r = 0; r < M; r++) {
        const int i = tp[r];
        const float t = tv[r] - mu;
        if (r + PF < M) {
            if (out) __builtin_prefetch(ybase + (int64_t)tp[r + PF] * y_rs, 1);
            if (dt) __builtin_prefetch(dt + (int64_t)tp[r + PF] * drs);
        }
        const float *l0 = P0, *l1 = P1;
        if (gt) {
            if (lo[r] >= j) { /* else: a tie with the previous target, same sums */
                ADVANCE(lo[r]);
                for (int c = 0; c < tw; c++) {
                    L0[c] = P0[c];
                    L1[c] = P1[c];
                }
                ADVANCE(hi[r]);
                for (int c = 0; c < tw; c++) SG[c] = L0[c] + P0[c];
            }
            l0 = L0;
            l1 = L1;
        } else {
            ADVANCE(lo[r]);
        }
        if (out) {
            float *restrict y = ybase + (int64_t)i * y_rs;
#pragma omp simd
            for (int c = 0; c < tw; c++) y[c] += lam2 * (t * l0[c] - l1[c]);
        }
        if (gt || gl) {
            const float *restrict d = dt + (int64_t)i * drs;
            if (gt) dT_hk[i] += lam * L1K(dot_tw)(d, SG, tw);
            if (gl) {
#pragma omp simd
                for (int c = 0; c < tw; c++) LA[c] += d[c] * (t * l0[c] - l1[c]);
            }
        }
    }
    if (out || gl) {
        ADVANCE(N);
        if (out)
            for (int c = 0; c < tw; c++) c1[c] += lam * P1[c];
        if (gl) {
            double acc = 0.0;
            for (int c = 0; c < tw; c++) acc += 2.0 * (double)LA[c] + (double)D0[c] * P1[c];
            *lamacc += acc;
        }
    }
#undef ADVANCE
}

/* The single-column case (batch 1): the merge above would spend most of its time on
 * mispredicted loop exits, so build the prefix arrays P0/P1 ((N+1) floats each, `pre`) in one
 * branch-free pass, then visit the targets as independent look-ups (gathers and scatters;
 * the target permutation has no repeats, so the loop vectorizes safely). */
static L1K_ATTR void L1K(l1_col1)(const dyn_l1_job *jb, int hk, int64_t c0, float *ybase,
                                  int64_t y_rs, float *dT_hk, double *lamacc, float *c1,
                                  const float *D0, float mu, float *pre) {
    L1K_SLICE_LOCALS;
    const int flags = jb->flags;
    float *restrict P0 = pre, *restrict P1 = pre + (N + 1);
    float a0 = 0.0f, a1 = 0.0f;
    P0[0] = P1[0] = 0.0f;
    for (int j = 0; j < N; j++) {
        const float x = xs[(int64_t)sp[j] * xrs];
        a0 += x;
        a1 += (sv[j] - mu) * x;
        P0[j + 1] = a0;
        P1[j + 1] = a1;
    }
    if (flags & DYN_L1_OUT) {
        float *restrict y = ybase;
#pragma omp simd
        for (int r = 0; r < M; r++) {
            const int l = lo[r];
            y[(int64_t)tp[r] * y_rs] += lam2 * ((tv[r] - mu) * P0[l] - P1[l]);
        }
        c1[0] += lam * a1;
    }
    if (flags & (DYN_L1_GRAD_T | DYN_L1_GRAD_LAMBDA)) {
        const float *restrict dt = jb->dt + c0;
        if (flags & DYN_L1_GRAD_T) {
#pragma omp simd
            for (int r = 0; r < M; r++) {
                const int i = tp[r];
                dT_hk[i] += lam * dt[(int64_t)i * drs] * (P0[lo[r]] + P0[hi[r]]);
            }
        }
        if (flags & DYN_L1_GRAD_LAMBDA) {
            float la = 0.0f;
#pragma omp simd reduction(+ : la)
            for (int r = 0; r < M; r++) {
                const int l = lo[r];
                la += dt[(int64_t)tp[r] * drs] * ((tv[r] - mu) * P0[l] - P1[l]);
            }
            *lamacc += 2.0 * (double)la + (double)D0[0] * a1;
        }
    }
}

static L1K_ATTR void L1K(l1_tile_any)(const dyn_l1_job *jb, int hk, int64_t c0, int tw,
                                      float *ybase, int64_t y_rs, float *dT_hk, double *lamacc,
                                      float *c1, const float *D0, float mu, float *pre) {
    const int f = jb->flags;
    if (tw == 1 && pre) {
        L1K(l1_col1)(jb, hk, c0, ybase, y_rs, dT_hk, lamacc, c1, D0, mu, pre);
        return;
    }
    enum { O = DYN_L1_OUT, G = DYN_L1_GRAD_T, L = DYN_L1_GRAD_LAMBDA };
#define TILE(TW, F) L1K(l1_tile)(jb, hk, c0, TW, F, ybase, y_rs, dT_hk, lamacc, c1, D0, mu)
#define BY_FLAGS(TW)                          \
    switch (f) {                              \
    case O: TILE(TW, O); break;               \
    case G | L: TILE(TW, G | L); break;       \
    case O | G: TILE(TW, O | G); break;       \
    default: TILE(TW, f); break;              \
    }
    switch (tw) {
    case 1: BY_FLAGS(1); break;
    case 16: BY_FLAGS(16); break;
    case 32: BY_FLAGS(32); break;
    case 64: BY_FLAGS(64); break;
    default: BY_FLAGS(tw); break;
    }
#undef BY_FLAGS
#undef TILE
}

#undef L1K
#undef L1K_CAT
#undef L1K_CAT2
