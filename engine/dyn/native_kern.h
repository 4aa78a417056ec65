/* native_kern.h — internal to native.c: the l1 kernels, compiled once per instruction set.
 *
 * native.c includes this file once per version with
 *   L1K_SUF     the name suffix (base, avx2, avx512): the functions are L1K(name) = name_SUF;
 *   L1K_ATTR    the function attribute (DYN_TARGET_AVX2, DYN_TARGET_AVX512, or empty);
 *   L1K_AVX512  1 where dot_tw and l1_fwd1 may use AVX-512 intrinsics;
 *   L1K_AVX2    1 where l1_fwd1 may use AVX2 intrinsics (the AVX2 version);
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

/* The batch-1 forward (OUT only) of slice hk, visiting the targets in their own order:
 * y_acc[i] += λ(2(t'_i·P0[l_i] − P1[l_i]) − t'_i·T0) with t' = t − μ and l_i the sources
 * below t_i, so the outputs are written contiguously (no scatter) and the τ and T0 terms of
 * the general epilogue are folded in. The prefix sums come from the 16-run layout
 * (dyn_l1_job's s_perm16): step t advances the 16 runs' sums by one source each — a gather,
 * a multiply and two adds, no shuffles —, storing before each step the runs' sums so far as
 * (P0, P1) pairs, PP[2(16t + k)]; after the last step the run totals (row L) give the runs'
 * offsets, and P[k·L + t] = offset_k + PP[2(16t + k)]. pre: 32(L + 1) floats.
 * *t0 = T0 = Σ_j x_j, *t1 = T1 = Σ_j (s_j − μ) x_j. */
static L1K_ATTR void L1K(l1_fwd1)(const dyn_l1_job *jb, int hk, float mu, float *pre,
                                  float *y_acc, float *t0, float *t1) {
    const int M = jb->M, N = jb->N, L = (N + 15) / 16;
    const int32_t *restrict sp = jb->s_perm16 + (int64_t)hk * 16 * L;
    const float *restrict sv = jb->s_val16 + (int64_t)hk * 16 * L;
    const int32_t *restrict pos = jb->t_pos16 + (int64_t)hk * M;
    const float *restrict ts = jb->t_states + (int64_t)hk * M;
    const float *restrict xs = jb->xs;
    const int64_t xrs = jb->xs_rs;
    const float lam = jb->lambda[hk / jb->q], lam2 = 2.0f * lam;
    float *restrict PP = pre;
    float off0[16], off1[16];
    int i = 0;
#if L1K_AVX512
    if ((int64_t)N * xrs < INT32_MAX) {
        const __m512i vrs = _mm512_set1_epi32((int)xrs);
        const __m512i ilo = _mm512_set_epi32(23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1, 16, 0);
        const __m512i ihi =
            _mm512_set_epi32(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9, 24, 8);
        __m512 r0 = _mm512_setzero_ps(), r1 = _mm512_setzero_ps();
        for (int t = 0; t <= L; t++) {
            float *dst = PP + 32 * t;
            _mm512_storeu_ps(dst, _mm512_permutex2var_ps(r0, ilo, r1));
            _mm512_storeu_ps(dst + 16, _mm512_permutex2var_ps(r0, ihi, r1));
            if (t == L) break;
            __m512i idx = _mm512_loadu_si512(sp + 16 * t);
            if (xrs != 1) idx = _mm512_mullo_epi32(idx, vrs);
            const __m512 x = _mm512_i32gather_ps(idx, xs, 4);
            r0 = _mm512_add_ps(r0, x);
            r1 = _mm512_fmadd_ps(_mm512_loadu_ps(sv + 16 * t), x, r1);
        }
        _mm512_storeu_ps(off0, r0);
        _mm512_storeu_ps(off1, r1);
    } else
#elif L1K_AVX2
    if ((int64_t)N * xrs < INT32_MAX) {
        const __m256i vrs = _mm256_set1_epi32((int)xrs);
        __m256 r0a = _mm256_setzero_ps(), r0b = r0a, r1a = r0a, r1b = r0a;
        for (int t = 0; t <= L; t++) {
            float *dst = PP + 32 * t;
            const __m256 la = _mm256_unpacklo_ps(r0a, r1a), ha = _mm256_unpackhi_ps(r0a, r1a);
            const __m256 lb = _mm256_unpacklo_ps(r0b, r1b), hb = _mm256_unpackhi_ps(r0b, r1b);
            _mm256_storeu_ps(dst, _mm256_permute2f128_ps(la, ha, 0x20));
            _mm256_storeu_ps(dst + 8, _mm256_permute2f128_ps(la, ha, 0x31));
            _mm256_storeu_ps(dst + 16, _mm256_permute2f128_ps(lb, hb, 0x20));
            _mm256_storeu_ps(dst + 24, _mm256_permute2f128_ps(lb, hb, 0x31));
            if (t == L) break;
            __m256i ia = _mm256_loadu_si256((const __m256i *)(const void *)(sp + 16 * t));
            __m256i ib = _mm256_loadu_si256((const __m256i *)(const void *)(sp + 16 * t + 8));
            if (xrs != 1) {
                ia = _mm256_mullo_epi32(ia, vrs);
                ib = _mm256_mullo_epi32(ib, vrs);
            }
            const __m256 xa = _mm256_i32gather_ps(xs, ia, 4), xb = _mm256_i32gather_ps(xs, ib, 4);
            r0a = _mm256_add_ps(r0a, xa);
            r0b = _mm256_add_ps(r0b, xb);
            r1a = _mm256_fmadd_ps(_mm256_loadu_ps(sv + 16 * t), xa, r1a);
            r1b = _mm256_fmadd_ps(_mm256_loadu_ps(sv + 16 * t + 8), xb, r1b);
        }
        _mm256_storeu_ps(off0, r0a);
        _mm256_storeu_ps(off0 + 8, r0b);
        _mm256_storeu_ps(off1, r1a);
        _mm256_storeu_ps(off1 + 8, r1b);
    } else
#endif
    {
        float r0[16], r1[16];
        for (int k = 0; k < 16; k++) r0[k] = r1[k] = 0.0f;
        for (int t = 0; t <= L; t++) {
            float *dst = PP + 32 * t;
            for (int k = 0; k < 16; k++) {
                dst[2 * k] = r0[k];
                dst[2 * k + 1] = r1[k];
            }
            if (t == L) break;
#pragma omp simd
            for (int k = 0; k < 16; k++) {
                const float x = xs[(int64_t)sp[16 * t + k] * xrs];
                r0[k] += x;
                r1[k] += sv[16 * t + k] * x;
            }
        }
        for (int k = 0; k < 16; k++) {
            off0[k] = r0[k];
            off1[k] = r1[k];
        }
    }
    /* run totals -> exclusive offsets; T0, T1 = the sums at rank N (the padding past N, index
     * 0 and value 0, only changes sums at later ranks, which no target reads) */
    {
        float c0 = 0.0f, c1 = 0.0f;
        for (int k = 0; k < 16; k++) {
            const float u0 = off0[k], u1 = off1[k];
            off0[k] = c0;
            off1[k] = c1;
            c0 += u0;
            c1 += u1;
        }
    }
    const int pN = pos16_of(N, L);
    const float a0 = off0[pN & 15] + PP[2 * pN], a1 = off1[pN & 15] + PP[2 * pN + 1];
#if L1K_AVX512
    {
        const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
        const __m512i od = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
        const __m512i k15 = _mm512_set1_epi32(15);
        const __m512 vl = _mm512_set1_ps(lam), vl2 = _mm512_set1_ps(lam2), va0 = _mm512_set1_ps(a0);
        const __m512 vmu = _mm512_set1_ps(mu), o0 = _mm512_loadu_ps(off0), o1 = _mm512_loadu_ps(off1);
        const double *PD = (const double *)(void *)PP;
        for (; i + 16 <= M; i += 16) {
            const __m512i l = _mm512_loadu_si512(pos + i);
            const __m512i k = _mm512_and_si512(l, k15);
            const __m512 g0 = _mm512_castpd_ps(_mm512_i32gather_pd(_mm512_castsi512_si256(l), PD, 8));
            const __m512 g1 =
                _mm512_castpd_ps(_mm512_i32gather_pd(_mm512_extracti64x4_epi64(l, 1), PD, 8));
            const __m512 q0 = _mm512_add_ps(_mm512_permutex2var_ps(g0, ev, g1),
                                            _mm512_permutexvar_ps(k, o0));
            const __m512 q1 = _mm512_add_ps(_mm512_permutex2var_ps(g0, od, g1),
                                            _mm512_permutexvar_ps(k, o1));
            const __m512 t = _mm512_sub_ps(_mm512_loadu_ps(ts + i), vmu);
            /* λ2(t·P0 − P1) − λ·t·T0 */
            __m512 v = _mm512_mul_ps(vl2, _mm512_fmsub_ps(t, q0, q1));
            v = _mm512_fnmadd_ps(_mm512_mul_ps(vl, t), va0, v);
            _mm512_storeu_ps(y_acc + i, _mm512_add_ps(_mm512_loadu_ps(y_acc + i), v));
        }
    }
#elif L1K_AVX2
    {
        const __m256i k15 = _mm256_set1_epi32(15), k7 = _mm256_set1_epi32(7);
        const __m256 vl = _mm256_set1_ps(lam), vl2 = _mm256_set1_ps(lam2), va0 = _mm256_set1_ps(a0);
        const __m256 vmu = _mm256_set1_ps(mu);
        const __m256 o0l = _mm256_loadu_ps(off0), o0h = _mm256_loadu_ps(off0 + 8);
        const __m256 o1l = _mm256_loadu_ps(off1), o1h = _mm256_loadu_ps(off1 + 8);
        for (; i + 8 <= M; i += 8) {
            const __m256i l = _mm256_loadu_si256((const __m256i *)(const void *)(pos + i));
            const __m256i k = _mm256_and_si256(l, k15), l2 = _mm256_slli_epi32(l, 1);
            const __m256 hi = _mm256_castsi256_ps(_mm256_cmpgt_epi32(k, k7));
            const __m256 q0 = _mm256_add_ps(
                _mm256_i32gather_ps(PP, l2, 4),
                _mm256_blendv_ps(_mm256_permutevar8x32_ps(o0l, k), _mm256_permutevar8x32_ps(o0h, k), hi));
            const __m256 q1 = _mm256_add_ps(
                _mm256_i32gather_ps(PP + 1, l2, 4),
                _mm256_blendv_ps(_mm256_permutevar8x32_ps(o1l, k), _mm256_permutevar8x32_ps(o1h, k), hi));
            const __m256 t = _mm256_sub_ps(_mm256_loadu_ps(ts + i), vmu);
            __m256 v = _mm256_mul_ps(vl2, _mm256_fmsub_ps(t, q0, q1));
            v = _mm256_fnmadd_ps(_mm256_mul_ps(vl, t), va0, v);
            _mm256_storeu_ps(y_acc + i, _mm256_add_ps(_mm256_loadu_ps(y_acc + i), v));
        }
    }
#endif
#pragma omp simd
    for (int r = i; r < M; r++) {
        const float t = ts[r] - mu;
        const int l = pos[r], k = l & 15;
        const float p0 = PP[2 * l] + off0[k], p1 = PP[2 * l + 1] + off1[k];
        y_acc[r] += lam2 * (t * p0 - p1) - lam * t * a0;
    }
    *t0 = a0;
    *t1 = a1;
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
