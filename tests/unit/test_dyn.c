/* test_dyn.c — DyN systems: native == materialized == reference, ties, re-sorting, entropy,
 * the dyn_linear and dyn_conv2d layers (gradient checks in every kernel and execution mode,
 * conv against a plain reference convolution, stored-float counts). */
#include <math.h>
#include <string.h>

#include "dyn/dyn.h"
#include "testutil.h"

/* ---- helpers ----------------------------------------------------------------------------- */

typedef struct tsys {
    dyn_sys s;
    float *u, *v, *lam;
} tsys;

enum { ST_UNIFORM, ST_QUANT, ST_SHIFTED, ST_SPREAD, ST_COARSE };

static float state_value(dyn_rng *r, int style, int side) {
    switch (style) {
    case ST_QUANT: return (float)dyn_rng_below(r, 4) * 0.25f;           /* many exact ties */
    case ST_SHIFTED: return 7.0f + 2.0f * dyn_rng_uniform(r);          /* far from 0 */
    case ST_SPREAD: /* u and v on interleaved grids: |u - v| >= 0.005 (no l1 kink near) */
        return ((float)dyn_rng_below(r, 100) + (side ? 0.5f : 0.0f)) * 0.01f;
    case ST_COARSE: /* per-coordinate |u - v| >= 0.05: l2/inv are smooth within ±h */
        return ((float)dyn_rng_below(r, 10) + (side ? 0.5f : 0.0f)) * 0.1f;
    default: return dyn_rng_uniform(r);
    }
}

static void tsys_make(tsys *t, int m, int n, int H, int q, dyn_kernel k, int style, dyn_rng *r) {
    t->u = malloc((size_t)H * q * m * sizeof(float));
    t->v = malloc((size_t)H * q * n * sizeof(float));
    t->lam = malloc((size_t)H * sizeof(float));
    for (int64_t i = 0; i < (int64_t)H * q * m; i++) t->u[i] = state_value(r, style, 1);
    for (int64_t i = 0; i < (int64_t)H * q * n; i++) t->v[i] = state_value(r, style, 0);
    for (int h = 0; h < H; h++) t->lam[h] = (dyn_rng_uniform(r) - 0.5f) * 2.0f;
    dyn_sys s = {.m = m, .n = n, .H = H, .q = q, .kernel = k, .u = t->u, .v = t->v,
                 .lambda = t->lam, .c = dyn_rng_uniform(r) - 0.5f};
    t->s = s;
}

static void tsys_free(tsys *t) {
    free(t->u);
    free(t->v);
    free(t->lam);
}

static float *randv(int64_t n, dyn_rng *r) {
    float *p = malloc((size_t)(n ? n : 1) * sizeof(float));
    tu_fill_uniform(p, n, r, -1.0f, 1.0f);
    return p;
}

static float *zerov(int64_t n) { return calloc((size_t)(n ? n : 1), sizeof(float)); }

/* Relative error with a floor on the reference norm: for scalar gradients such as dc, whose
 * value can be a cancellation of large terms, `floor` is the scale of those terms. */
static double rel_err_floor(const float *a, const float *b, int64_t n, double floor) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * (double)b[i];
    }
    return sqrt(num) / fmax(fmax(sqrt(den), floor), 1e-30);
}

typedef struct grads {
    float *du, *dv, *dl, *dc;
} grads;

static void grads_alloc(grads *g, const dyn_sys *s) {
    g->du = zerov((int64_t)s->H * s->q * s->m);
    g->dv = zerov((int64_t)s->H * s->q * s->n);
    g->dl = zerov(s->H);
    g->dc = zerov(1);
}

static void grads_free(grads *g) {
    free(g->du);
    free(g->dv);
    free(g->dl);
    free(g->dc);
}

static dyn_sys_grad grads_view(grads *g) {
    dyn_sys_grad o = {.du = g->du, .dv = g->dv, .dlambda = g->dl, .dc = g->dc};
    return o;
}

/* Native forward/backward on batch-first data (transposes into strided feature-major
 * buffers with padded rows, so the row-stride path is exercised). */
static void native_run(const dyn_sys *s, const dyn_native *nat, const float *x, const float *d,
                       int N, float *y, float *dx, grads *g) {
    const int64_t ld = N + 3;
    float *xt = zerov((int64_t)s->n * ld), *dt = zerov((int64_t)s->m * ld);
    float *yt = zerov((int64_t)s->m * ld), *dxt = zerov((int64_t)s->n * ld);
    for (int b = 0; b < N; b++) {
        for (int j = 0; j < s->n; j++) xt[j * ld + b] = x[(int64_t)b * s->n + j];
        for (int i = 0; i < s->m; i++) dt[i * ld + b] = d[(int64_t)b * s->m + i];
    }
    dyn_native_forward(s, nat, xt, ld, yt, ld, N, NULL, 0);
    dyn_sys_grad gv = grads_view(g);
    dyn_native_backward(s, nat, xt, ld, dt, ld, dxt, ld, N, &gv, NULL, 0);
    for (int b = 0; b < N; b++) {
        for (int i = 0; i < s->m; i++) y[(int64_t)b * s->m + i] = yt[i * ld + b];
        for (int j = 0; j < s->n; j++) dx[(int64_t)b * s->n + j] = dxt[j * ld + b];
    }
    free(xt);
    free(dt);
    free(yt);
    free(dxt);
}

/* Materialized path: W, then plain products, G = dᵀ x and the materialized gradient. */
static void materialized_run(const dyn_sys *s, const float *x, const float *d, int N, float *y,
                             float *dx, grads *g) {
    const int m = s->m, n = s->n;
    float *w = malloc((size_t)m * n * sizeof(float)), *G = malloc((size_t)m * n * sizeof(float));
    dyn_sys_materialize(s, w);
    for (int b = 0; b < N; b++) {
        for (int i = 0; i < m; i++) {
            double a = 0;
            for (int j = 0; j < n; j++) a += (double)w[(int64_t)i * n + j] * x[(int64_t)b * n + j];
            y[(int64_t)b * m + i] = (float)a;
        }
        for (int j = 0; j < n; j++) {
            double a = 0;
            for (int i = 0; i < m; i++) a += (double)w[(int64_t)i * n + j] * d[(int64_t)b * m + i];
            dx[(int64_t)b * n + j] = (float)a;
        }
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double a = 0;
            for (int b = 0; b < N; b++) a += (double)d[(int64_t)b * m + i] * x[(int64_t)b * n + j];
            G[(int64_t)i * n + j] = (float)a;
        }
    dyn_sys_grad gv = grads_view(g);
    dyn_sys_grad_materialized(s, G, &gv);
    free(w);
    free(G);
}

/* Scale of the terms of dc = Σ_ij G_ij and dλ_h = Σ_ij G_ij φ: Σ |G_ij| (·φ̄), a floor for
 * the relative error of these cancellation-prone scalars. */
static double g_abs_sum(const float *x, const float *d, int N, int m, int n) {
    double s = 0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double g = 0;
            for (int b = 0; b < N; b++) g += (double)d[(int64_t)b * m + i] * x[(int64_t)b * n + j];
            s += fabs(g);
        }
    return s;
}

typedef struct errs {
    double y, dx, du, dv, dl, dc;
} errs;

static errs compare(const dyn_sys *s, const float *y, const float *yr, const float *dx,
                    const float *dxr, const grads *g, const grads *gr, int N, double gscale) {
    errs e;
    e.y = tu_rel_err(y, yr, (int64_t)N * s->m);
    e.dx = tu_rel_err(dx, dxr, (int64_t)N * s->n);
    e.du = tu_rel_err(g->du, gr->du, (int64_t)s->H * s->q * s->m);
    e.dv = tu_rel_err(g->dv, gr->dv, (int64_t)s->H * s->q * s->n);
    /* dλ and dc: floor at 1e-3 of the sum of |terms| (their float rounding scale). */
    e.dl = rel_err_floor(g->dl, gr->dl, s->H, 1e-3 * gscale);
    e.dc = rel_err_floor(g->dc, gr->dc, 1, 1e-3 * gscale / s->q);
    return e;
}

static double errs_max(errs e) {
    double m = e.y;
    m = fmax(m, e.dx);
    m = fmax(m, e.du);
    m = fmax(m, e.dv);
    m = fmax(m, e.dl);
    return fmax(m, e.dc);
}

/* Runs native (l1 only), materialized and reference on one random system; returns the worst
 * relative error of the two fast paths against the reference. */
static double check_system(int m, int n, int H, int q, int N, dyn_kernel k, int style,
                           uint64_t seed) {
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    tsys t;
    tsys_make(&t, m, n, H, q, k, style, &r);
    const dyn_sys *s = &t.s;
    float *x = randv((int64_t)N * n, &r), *d = randv((int64_t)N * m, &r);
    float *yr = zerov((int64_t)N * m), *dxr = zerov((int64_t)N * n);
    float *y = zerov((int64_t)N * m), *dx = zerov((int64_t)N * n);
    grads gr, g;
    grads_alloc(&gr, s);
    dyn_sys_ref_forward(s, x, N, yr);
    dyn_sys_ref_transpose(s, d, N, dxr);
    dyn_sys_grad grv = grads_view(&gr);
    dyn_sys_ref_grad(s, x, d, N, &grv);
    const double gscale = g_abs_sum(x, d, N, m, n) * (double)q;
    double worst = 0;

    grads_alloc(&g, s);
    materialized_run(s, x, d, N, y, dx, &g);
    errs em = compare(s, y, yr, dx, dxr, &g, &gr, N, gscale);
    grads_free(&g);
    worst = errs_max(em);
    if (errs_max(em) > 1e-4)
        fprintf(stderr, "materialized %s m=%d n=%d H=%d q=%d N=%d style=%d: y %.2g dx %.2g du %.2g "
                "dv %.2g dl %.2g dc %.2g\n", dyn_kernel_name(k), m, n, H, q, N, style, em.y,
                em.dx, em.du, em.dv, em.dl, em.dc);

    if (k == DYN_KERNEL_L1) {
        dyn_native nat = {0};
        ck_assert_int_eq(dyn_native_prepare(&nat, s, NULL), 0);
        grads_alloc(&g, s);
        native_run(s, &nat, x, d, N, y, dx, &g);
        errs en = compare(s, y, yr, dx, dxr, &g, &gr, N, gscale);
        grads_free(&g);
        dyn_native_free(&nat);
        if (errs_max(en) > 1e-4)
            fprintf(stderr, "native m=%d n=%d H=%d q=%d N=%d style=%d: y %.2g dx %.2g du %.2g "
                    "dv %.2g dl %.2g dc %.2g\n", m, n, H, q, N, style, en.y, en.dx, en.du, en.dv,
                    en.dl, en.dc);
        worst = fmax(worst, errs_max(en));
    }
    grads_free(&gr);
    free(x);
    free(d);
    free(y);
    free(yr);
    free(dx);
    free(dxr);
    tsys_free(&t);
    return worst;
}

/* ---- systems ----------------------------------------------------------------------------- */

START_TEST(test_native_grid) {
    dyn_threads_set(2);
    static const int mn[][2] = {{1, 1}, {1, 9}, {9, 1}, {5, 3}, {17, 33}, {64, 64}, {130, 70}};
    static const int hq[][2] = {{1, 1}, {2, 3}, {3, 2}};
    static const int batch[] = {1, 3, 64, 67, 150};
    double worst = 0;
    int cases = 0;
    for (size_t a = 0; a < DYN_ARRAY_LEN(mn); a++)
        for (size_t b = 0; b < DYN_ARRAY_LEN(hq); b++)
            for (size_t c = 0; c < DYN_ARRAY_LEN(batch); c++) {
                double e = check_system(mn[a][0], mn[a][1], hq[b][0], hq[b][1], batch[c],
                                        DYN_KERNEL_L1, ST_UNIFORM, 1000 + (uint64_t)cases);
                worst = fmax(worst, e);
                cases++;
            }
    fprintf(stderr, "native grid: %d cases, worst relative error %.3g\n", cases, worst);
    ck_assert_double_le(worst, 1e-4);
}
END_TEST

/* Sizes large enough to run both threads in every mode: over slices (batch 1, 20) and over
 * column tiles (batch 64, 200 = 3 tiles of 64 + 8). */
START_TEST(test_native_threaded) {
    dyn_threads_set(2);
    static const int batch[] = {1, 20, 64, 200};
    double worst = 0;
    for (size_t c = 0; c < DYN_ARRAY_LEN(batch); c++) {
        worst = fmax(worst, check_system(300, 257, 4, 8, batch[c], DYN_KERNEL_L1, ST_UNIFORM,
                                         77 + c));
        worst = fmax(worst, check_system(200, 400, 2, 4, batch[c], DYN_KERNEL_L1, ST_SHIFTED,
                                         91 + c));
    }
    fprintf(stderr, "native threaded: worst relative error %.3g\n", worst);
    ck_assert_double_le(worst, 1e-4);
    dyn_threads_set(1);
    double w1 = check_system(300, 257, 4, 8, 64, DYN_KERNEL_L1, ST_UNIFORM, 5);
    dyn_threads_set(2);
    ck_assert_double_le(w1, 1e-4);
}
END_TEST

/* Every version of the l1 kernels this CPU runs (cpu/isa.h: baseline, AVX2, AVX-512) against
 * the materialized reference: batch 1 (prefix arrays), narrow and full tiles, ties, one and two
 * threads. */
START_TEST(test_native_every_isa) {
    static const int batch[] = {1, 3, 16, 64, 150};
    int levels = 0;
    TU_FOR_EACH_ISA(lv) {
        levels++;
        double worst = 0;
        for (int nt = 1; nt <= 2; nt++) {
            dyn_threads_set(nt);
            for (size_t c = 0; c < DYN_ARRAY_LEN(batch); c++) {
                worst = fmax(worst, check_system(70, 33, 2, 3, batch[c], DYN_KERNEL_L1,
                                                 ST_UNIFORM, 300 + c));
                worst = fmax(worst, check_system(40, 30, 2, 3, batch[c], DYN_KERNEL_L1,
                                                 ST_QUANT, 310 + c));
                /* the batch-1 forward's 16 runs: N a multiple of 16 (a target above every
                 * source maps to the row of run totals), N < 16 (runs of padding) */
                worst = fmax(worst, check_system(24, 32, 2, 2, batch[c], DYN_KERNEL_L1,
                                                 ST_SHIFTED, 320 + c));
                worst = fmax(worst, check_system(9, 5, 1, 2, batch[c], DYN_KERNEL_L1,
                                                 ST_UNIFORM, 330 + c));
            }
        }
        fprintf(stderr, "native %s: worst relative error %.3g\n", dyn_isa_name(lv), worst);
        ck_assert_double_le(worst, 1e-4);
    }
    ck_assert_int_eq(levels, (int)dyn_isa_detected() + 1);
}
END_TEST

START_TEST(test_native_ties) {
    dyn_threads_set(2);
    static const int batch[] = {1, 5, 64, 100};
    double worst = 0;
    for (size_t c = 0; c < DYN_ARRAY_LEN(batch); c++) {
        worst = fmax(worst, check_system(40, 30, 2, 3, batch[c], DYN_KERNEL_L1, ST_QUANT, 7 + c));
        worst = fmax(worst, check_system(1, 50, 1, 2, batch[c], DYN_KERNEL_L1, ST_QUANT, 17 + c));
        worst = fmax(worst, check_system(300, 300, 3, 4, batch[c], DYN_KERNEL_L1, ST_QUANT,
                                         27 + c));
    }
    fprintf(stderr, "ties: worst relative error %.3g\n", worst);
    ck_assert_double_le(worst, 1e-4);
}
END_TEST

START_TEST(test_materialized_kernels) {
    dyn_threads_set(2);
    static const dyn_kernel ks[] = {DYN_KERNEL_L2, DYN_KERNEL_INV, DYN_KERNEL_L1};
    static const int mn[][2] = {{1, 1}, {7, 3}, {33, 300}, {270, 20}};
    double worst = 0;
    int cases = 0;
    for (size_t k = 0; k < DYN_ARRAY_LEN(ks); k++)
        for (size_t a = 0; a < DYN_ARRAY_LEN(mn); a++) {
            worst = fmax(worst, check_system(mn[a][0], mn[a][1], 2, 3, 5, ks[k], ST_UNIFORM,
                                             300 + (uint64_t)cases));
            worst = fmax(worst, check_system(mn[a][0], mn[a][1], 3, 1, 1, ks[k], ST_QUANT,
                                             400 + (uint64_t)cases));
            cases++;
        }
    fprintf(stderr, "materialized l1/l2/inv: worst relative error %.3g\n", worst);
    ck_assert_double_le(worst, 1e-4);
}
END_TEST

/* Exact ties: with states on a coarse grid, the native result is the exact integer
 * arithmetic of the definition (inputs are small integers too). */
START_TEST(test_ties_exact) {
    dyn_rng r;
    dyn_rng_seed(&r, 3);
    const int m = 6, n = 9, N = 2;
    tsys t;
    tsys_make(&t, m, n, 1, 2, DYN_KERNEL_L1, ST_QUANT, &r);
    t.lam[0] = 1.0f;
    t.s.c = 0.0f;
    float x[N * n], d[N * m], y[N * m], dx[N * n], yr[N * m];
    for (int i = 0; i < N * n; i++) x[i] = (float)((int)dyn_rng_below(&r, 5) - 2);
    for (int i = 0; i < N * m; i++) d[i] = (float)((int)dyn_rng_below(&r, 5) - 2);
    dyn_native nat = {0};
    ck_assert_int_eq(dyn_native_prepare(&nat, &t.s, NULL), 0);
    grads g, gr;
    grads_alloc(&g, &t.s);
    grads_alloc(&gr, &t.s);
    native_run(&t.s, &nat, x, d, N, y, dx, &g);
    dyn_sys_ref_forward(&t.s, x, N, yr);
    dyn_sys_grad grv = grads_view(&gr);
    dyn_sys_ref_grad(&t.s, x, d, N, &grv);
    ck_assert_double_le(tu_max_abs_diff(y, yr, N * m), 1e-5);
    ck_assert_double_le(tu_max_abs_diff(g.du, gr.du, 2 * m), 1e-5);
    ck_assert_double_le(tu_max_abs_diff(g.dv, gr.dv, 2 * n), 1e-5);
    ck_assert_double_le(tu_max_abs_diff(g.dl, gr.dl, 1), 1e-4);
    grads_free(&g);
    grads_free(&gr);
    dyn_native_free(&nat);
    tsys_free(&t);
}
END_TEST

/* Incremental re-sort after a small move == full sort; a big move falls back to a full sort. */
START_TEST(test_resort) {
    dyn_threads_set(2);
    dyn_rng r;
    dyn_rng_seed(&r, 11);
    const int len = 5000, ns = 6;
    float *x = malloc((size_t)len * ns * sizeof(float));
    for (int i = 0; i < len * ns; i++) x[i] = dyn_rng_uniform(&r);
    for (int i = 0; i < 200; i++) x[dyn_rng_below(&r, (uint32_t)(len * ns))] = 0.5f; /* ties */
    dyn_sorted inc = {0}, full = {0};
    ck_assert_int_eq(dyn_sorted_update(&inc, x, ns, len, 0, NULL), 0);
    ck_assert_int_eq(inc.last_full, ns);
    for (int round = 0; round < 4; round++) {
        /* tiny moves: incremental; 1e-3 (~2 positions): either; 0.5: full sorts */
        float step = round == 3 ? 0.5f : round == 2 ? 1e-3f : 1e-5f;
        for (int i = 0; i < len * ns; i++) x[i] += step * (dyn_rng_uniform(&r) - 0.5f);
        ck_assert_int_eq(dyn_sorted_update(&inc, x, ns, len, 0, NULL), 0);
        ck_assert_int_eq(dyn_sorted_update(&full, x, ns, len, 1, NULL), 0);
        if (round < 2) ck_assert_int_eq(inc.last_full, 0);
        if (round == 3) ck_assert_int_eq(inc.last_full, ns);
        ck_assert_int_eq(full.last_full, ns);
        ck_assert_int_eq(memcmp(inc.perm, full.perm, (size_t)len * ns * sizeof(int32_t)), 0);
        ck_assert_int_eq(memcmp(inc.val, full.val, (size_t)len * ns * sizeof(float)), 0);
        for (int s = 0; s < ns; s++)
            for (int i = 1; i < len; i++) {
                float a = full.val[s * len + i - 1], b = full.val[s * len + i];
                ck_assert(a < b || (a == b && full.perm[s * len + i - 1] < full.perm[s * len + i]));
            }
    }
    /* −0 and +0 are one value: ordered by index in both paths. */
    float z[4] = {0.0f, -0.0f, 0.0f, -0.0f};
    dyn_sorted zs = {0};
    ck_assert_int_eq(dyn_sorted_update(&zs, z, 1, 4, 1, NULL), 0);
    for (int i = 0; i < 4; i++) ck_assert_int_eq(zs.perm[i], i);
    dyn_sorted_free(&zs);
    dyn_sorted_free(&inc);
    dyn_sorted_free(&full);
    free(x);
}
END_TEST

/* Ranks: lo = #{b < a}, hi = #{b <= a} by brute force. */
START_TEST(test_ranks) {
    dyn_rng r;
    dyn_rng_seed(&r, 5);
    const int m = 57, n = 43, ns = 3;
    float a[ns * m], b[ns * n];
    for (int i = 0; i < ns * m; i++) a[i] = (float)dyn_rng_below(&r, 10);
    for (int i = 0; i < ns * n; i++) b[i] = (float)dyn_rng_below(&r, 10);
    dyn_sorted sa = {0}, sb = {0};
    dyn_ranks rk = {0};
    ck_assert_int_eq(dyn_sorted_update(&sa, a, ns, m, 0, NULL), 0);
    ck_assert_int_eq(dyn_sorted_update(&sb, b, ns, n, 0, NULL), 0);
    ck_assert_int_eq(dyn_ranks_update(&rk, sa.val, sb.val, ns, m, n, NULL), 0);
    for (int s = 0; s < ns; s++)
        for (int rr = 0; rr < m; rr++) {
            float v = sa.val[s * m + rr];
            int lo = 0, hi = 0;
            for (int j = 0; j < n; j++) {
                lo += b[s * n + j] < v;
                hi += b[s * n + j] <= v;
            }
            ck_assert_int_eq(rk.a_lo[s * m + rr], lo);
            ck_assert_int_eq(rk.a_hi[s * m + rr], hi);
        }
    for (int s = 0; s < ns; s++)
        for (int rr = 0; rr < n; rr++) {
            float v = sb.val[s * n + rr];
            int lo = 0, hi = 0;
            for (int i = 0; i < m; i++) {
                lo += a[s * m + i] < v;
                hi += a[s * m + i] <= v;
            }
            ck_assert_int_eq(rk.b_lo[s * n + rr], lo);
            ck_assert_int_eq(rk.b_hi[s * n + rr], hi);
        }
    dyn_sorted_free(&sa);
    dyn_sorted_free(&sb);
    dyn_ranks_free(&rk);
}
END_TEST

START_TEST(test_entropy) {
    /* 8 equally likely grid cells: 3 bits. */
    float a[800];
    for (int i = 0; i < 800; i++) a[i] = (float)(i % 8) * 1e-3f + 2e-4f;
    const float *arr[1] = {a};
    int64_t len[1] = {800};
    ck_assert_double_eq_tol(dyn_entropy_bits(1, arr, len, 1e-3), 3.0, 1e-9);
    /* p = 1/2, 1/4, 1/4 over two arrays: 1.5 bits. Values within one cell share a symbol. */
    float b[4] = {0.0f, 0.0004f, 0.0101f, -0.0009f}, c[4] = {0.0002f, 0.0007f, 0.0105f, -0.0001f};
    const float *arr2[2] = {b, c};
    int64_t len2[2] = {4, 4};
    ck_assert_double_eq_tol(dyn_entropy_bits(2, arr2, len2, 1e-3), 1.5, 1e-9);
    /* A constant: 0 bits; nothing: 0 bits. */
    float k[5] = {0.25f, 0.25f, 0.25f, 0.25f, 0.25f};
    const float *arr3[1] = {k};
    int64_t len3[1] = {5};
    ck_assert_double_eq_tol(dyn_entropy_bits(1, arr3, len3, 1e-3), 0.0, 1e-12);
    len3[0] = 0;
    ck_assert_double_eq_tol(dyn_entropy_bits(1, arr3, len3, 1e-3), 0.0, 1e-12);
    /* U(0,1) on a 1e-3 grid: close to log2(1000). */
    dyn_rng r;
    dyn_rng_seed(&r, 1);
    float *u = malloc(400000 * sizeof(float));
    for (int i = 0; i < 400000; i++) u[i] = dyn_rng_uniform(&r);
    const float *arr4[1] = {u};
    int64_t len4[1] = {400000};
    ck_assert_double_eq_tol(dyn_entropy_bits(1, arr4, len4, 1e-3), log2(1000.0), 0.01);
    free(u);
}
END_TEST

/* ---- dyn_linear ---------------------------------------------------------------------------- */

static dyn_layer *make_linear(int in, int out, int H, int q, const char *kern, const char *exec,
                              int bias, uint64_t seed) {
    json_t *a = json_pack("{s:i, s:i, s:i, s:i, s:s, s:s, s:i}", "in", in, "out", out, "H", H,
                          "q", q, "kernel", kern, "exec", exec, "bias", bias);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create("dyn_linear", "fc", a, &err);
    json_decref(a);
    if (!l) fprintf(stderr, "create: %s\n", err.msg);
    ck_assert_ptr_nonnull(l);
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    l->ops->init(l, &r);
    for (int i = 0; i < l->nparams; i++)
        if (strcmp(l->params[i].name, "bias") == 0)
            tu_fill_uniform(l->params[i].value.data, dyn_tensor_numel(&l->params[i].value), &r,
                            -0.5f, 0.5f);
    ck_assert_int_eq(l->ops->prepare(l, &err), 0);
    return l;
}

/* Puts u and v on interleaved grids (per coordinate |u − v| >= 0.005 for l1: no kink within
 * ±h; >= 0.05 for l2/inv, whose norm is a cone at u = v and curves like 1/‖u − v‖). */
static void spread_states_style(dyn_layer *l, const char *un, const char *vn, uint64_t seed,
                                int style) {
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    dyn_param *u = dyn_layer_param(l, un), *v = dyn_layer_param(l, vn);
    for (int64_t i = 0; i < dyn_tensor_numel(&u->value); i++)
        u->value.data[i] = state_value(&r, style, 1);
    for (int64_t i = 0; i < dyn_tensor_numel(&v->value); i++)
        v->value.data[i] = state_value(&r, style, 0);
    ck_assert_int_eq(l->ops->prepare(l, NULL), 0);
}

static void spread_states(dyn_layer *l, const char *un, const char *vn, uint64_t seed) {
    spread_states_style(l, un, vn, seed, ST_SPREAD);
}

START_TEST(test_linear_gradcheck) {
    dyn_threads_set(2);
    static const char *kerns[] = {"l1", "l2", "inv"};
    static const char *execs[] = {"native", "materialized", "auto"};
    static const int batches[] = {1, 5};
    int total = 0;
    for (size_t k = 0; k < 3; k++)
        for (size_t e = 0; e < 3; e++) {
            if (k > 0 && e == 0) continue; /* native is l1 only */
            for (size_t b = 0; b < 2; b++) {
                dyn_layer *l = make_linear(13, 7, 2, 3, kerns[k], execs[e], 1, 10 + k * 3 + e);
                spread_states_style(l, "u", "v", 99 + e, k == 0 ? ST_SPREAD : ST_COARSE);
                dyn_shape in = {.ndim = 2, .d = {batches[b], 13}};
                int f = tu_gradcheck(l, &in, 1, 5 + b, 200, 1e-3f, 2e-3, 1e-2);
                if (f)
                    fprintf(stderr, "gradcheck dyn_linear %s %s batch %d: %d failures\n",
                            kerns[k], execs[e], batches[b], f);
                total += f;
                dyn_layer_free(l);
            }
        }
    /* auto on a system big and thin enough to run native (no W held); coarse states and a
     * larger step: float32 finite differences of a 300-input layer are noisy at h = 1e-3 */
    dyn_layer *l = make_linear(300, 200, 1, 2, "l1", "auto", 1, 31);
    spread_states_style(l, "u", "v", 5, ST_COARSE);
    dyn_shape in = {.ndim = 2, .d = {3, 300}};
    dyn_layer_stats st;
    dyn_layer_stats_get(l, &in, &st);
    ck_assert_int_eq(st.macs, 2 * (300 + 200)); /* native */
    total += tu_gradcheck(l, &in, 1, 8, 100, 1e-2f, 2e-3, 1e-2);
    dyn_layer_free(l);
    ck_assert_int_eq(total, 0);
}
END_TEST

/* Native and materialized layers with the same parameters agree (outputs and all grads). */
START_TEST(test_linear_native_vs_materialized) {
    dyn_threads_set(2);
    static const int batches[] = {1, 7, 64};
    for (size_t b = 0; b < DYN_ARRAY_LEN(batches); b++) {
        const int N = batches[b], in = 300, out = 170;
        dyn_layer *ln = make_linear(in, out, 4, 8, "l1", "native", 1, 3);
        dyn_layer *lm = make_linear(in, out, 4, 8, "l1", "materialized", 1, 3);
        dyn_shape s = {.ndim = 2, .d = {N, in}};
        size_t sn = ln->ops->scratch(ln, &s, 1), sm = lm->ops->scratch(lm, &s, 1);
        float *scn = dyn_alloc_zero(sn * sizeof(float)), *scm = dyn_alloc_zero(sm * sizeof(float));
        dyn_rng r;
        dyn_rng_seed(&r, 9);
        int64_t xs[2] = {N, in}, ys[2] = {N, out};
        dyn_tensor x, yn, ym, dy, dxn, dxm;
        dyn_tensor_init(&x, 2, xs, NULL);
        dyn_tensor_init(&dxn, 2, xs, NULL);
        dyn_tensor_init(&dxm, 2, xs, NULL);
        dyn_tensor_init(&yn, 2, ys, NULL);
        dyn_tensor_init(&ym, 2, ys, NULL);
        dyn_tensor_init(&dy, 2, ys, NULL);
        tu_fill_uniform(x.data, N * in, &r, -1, 1);
        tu_fill_uniform(dy.data, N * out, &r, -1, 1);
        dyn_layer_zero_grad(ln);
        dyn_layer_zero_grad(lm);
        ln->ops->forward(ln, &x, &yn, scn, 1);
        lm->ops->forward(lm, &x, &ym, scm, 1);
        ln->ops->backward(ln, &x, &yn, &dy, &dxn, scn);
        lm->ops->backward(lm, &x, &ym, &dy, &dxm, scm);
        ck_assert_double_le(tu_rel_err(yn.data, ym.data, N * out), 1e-4);
        ck_assert_double_le(tu_rel_err(dxn.data, dxm.data, N * in), 1e-4);
        for (int p = 0; p < ln->nparams; p++) {
            double e = tu_rel_err(ln->params[p].grad.data, lm->params[p].grad.data,
                                  dyn_tensor_numel(&ln->params[p].grad));
            if (e > 1e-4) fprintf(stderr, "batch %d param %s: %.3g\n", N, ln->params[p].name, e);
            ck_assert_double_le(e, 1e-4);
        }
        dyn_tensor_release(&x);
        dyn_tensor_release(&yn);
        dyn_tensor_release(&ym);
        dyn_tensor_release(&dy);
        dyn_tensor_release(&dxn);
        dyn_tensor_release(&dxm);
        dyn_free(scn);
        dyn_free(scm);
        dyn_layer_free(ln);
        dyn_layer_free(lm);
    }
}
END_TEST

START_TEST(test_linear_attrs_and_stats) {
    dyn_err err = {0};
    json_t *a = json_pack("{s:i, s:i, s:i, s:i, s:s, s:s}", "in", 20, "out", 10, "H", 3, "q", 4,
                          "kernel", "l2", "exec", "native");
    ck_assert_ptr_null(dyn_layer_create("dyn_linear", "fc", a, &err));
    ck_assert_int_eq(err.code, DYN_EUNSUP);
    json_decref(a);
    a = json_pack("{s:i, s:i, s:s}", "in", 20, "out", 10, "kernel", "cosine");
    ck_assert_ptr_null(dyn_layer_create("dyn_linear", "fc", a, &err));
    ck_assert_int_eq(err.code, DYN_EINVAL);
    json_decref(a);
    a = json_pack("{s:i}", "in", 20);
    ck_assert_ptr_null(dyn_layer_create("dyn_linear", "fc", a, &err));
    json_decref(a);

    dyn_layer *l = make_linear(20, 10, 3, 4, "l1", "native", 1, 1);
    dyn_shape in = {.ndim = 2, .d = {1, 20}};
    dyn_layer_stats st;
    dyn_layer_stats_get(l, &in, &st);
    ck_assert_int_eq(st.stored_floats, 3 * 4 * (20 + 10) + 3 + 1 + 10);
    ck_assert_int_eq(st.macs, 3 * 4 * (20 + 10));
    ck_assert_int_eq(st.is_dyn, 1);
    /* orders: 4 words per state coordinate, plus the batch-1 forward's layout: 2 words per
     * input in 16 runs padded to 16·ceil(20/16) = 32, 1 per output */
    ck_assert_int_eq(st.memory_floats, st.stored_floats + 3 * 4 * (4 * (20 + 10) + 2 * 32 + 10));
    ck_assert(st.entropy_bits > 5.0 && st.entropy_bits <= log2(1000.0) + 1e-9);
    ck_assert_ptr_nonnull(dyn_layer_param(l, "u"));
    ck_assert_int_eq(dyn_layer_param(l, "u")->value.shape[2], 10);
    ck_assert_int_eq(dyn_layer_param(l, "v")->value.shape[2], 20);
    json_t *at = l->ops->attrs(l);
    ck_assert_str_eq(json_string_value(json_object_get(at, "exec")), "native");
    ck_assert_int_eq(json_integer_value(json_object_get(at, "H")), 3);
    json_decref(at);
    dyn_layer_free(l);

    l = make_linear(20, 10, 3, 4, "inv", "materialized", 0, 1);
    dyn_layer_stats_get(l, &in, &st);
    ck_assert_int_eq(st.stored_floats, 3 * 4 * (20 + 10) + 3 + 1);
    ck_assert_int_eq(st.memory_floats, st.stored_floats + 200);
    ck_assert_int_eq(st.macs, 200);
    dyn_shape bad = {.ndim = 2, .d = {1, 21}}, o;
    ck_assert_int_eq(l->ops->infer(l, &bad, &o, &err), DYN_EINVAL);
    dyn_layer_free(l);

    /* auto: a big thin system never needs W (native at any batch); a small one holds W and
     * runs dense (its macs at batch 1 are m·n). */
    l = make_linear(2048, 2048, 1, 2, "l1", "auto", 1, 1);
    dyn_shape in2 = {.ndim = 2, .d = {1, 2048}};
    dyn_layer_stats_get(l, &in2, &st);
    ck_assert_int_eq(st.macs, 2 * (2048 + 2048));
    ck_assert_int_eq(st.memory_floats, st.stored_floats + 2 * (4 * (2048 + 2048) + 3 * 2048));
    dyn_layer_free(l);
    l = make_linear(16, 16, 4, 4, "l1", "auto", 1, 1);
    dyn_shape in3 = {.ndim = 2, .d = {1, 16}};
    dyn_layer_stats_get(l, &in3, &st);
    ck_assert_int_eq(st.macs, 256);
    ck_assert_int_eq(st.memory_floats, st.stored_floats + 256 + 16 * (4 * 32 + 3 * 16));
    dyn_layer_free(l);
}
END_TEST

/* A fresh layer's W is about zero-mean with at most the dense init's variance, and on
 * rectified inputs its outputs have the scale a dense Kaiming-uniform layer would give. */
START_TEST(test_linear_init_scale) {
    static const char *kerns[] = {"l1", "l2", "inv"};
    const int in = 400, out = 300, N = 64;
    for (int k = 0; k < 3; k++) {
        dyn_layer *l = make_linear(in, out, 4, 4, kerns[k], "materialized", 0, 21);
        dyn_param *u = dyn_layer_param(l, "u"), *v = dyn_layer_param(l, "v");
        dyn_kernel kk;
        dyn_kernel_parse(kerns[k], &kk);
        dyn_sys s = {.m = out, .n = in, .H = 4, .q = 4, .kernel = kk, .u = u->value.data,
                     .v = v->value.data, .lambda = dyn_layer_param(l, "lambda")->value.data,
                     .c = dyn_layer_param(l, "c")->value.data[0]};
        float *w = malloc((size_t)out * in * sizeof(float));
        dyn_sys_materialize(&s, w);
        double s1 = 0, s2 = 0;
        for (int i = 0; i < out * in; i++) {
            s1 += w[i];
            s2 += (double)w[i] * w[i];
        }
        double mean = s1 / (out * in), var = s2 / (out * in) - mean * mean;
        double target = 1.0 / (3 * in);
        /* outputs on rectified Gaussian inputs (E[x²] = 1/2) */
        dyn_rng r;
        dyn_rng_seed(&r, 5);
        float *x = malloc((size_t)N * in * sizeof(float)), *y = malloc((size_t)N * out * sizeof(float));
        for (int i = 0; i < N * in; i++) x[i] = fmaxf(dyn_rng_normal(&r), 0.0f);
        dyn_sys_ref_forward(&s, x, N, y);
        double ys = 0;
        for (int i = 0; i < N * out; i++) ys += (double)y[i] * y[i];
        double rms = sqrt(ys / (N * out)), dense_rms = sqrt(in * target * 0.5);
        fprintf(stderr, "init %s: mean %.3g var %.3g (dense %.3g), output rms %.3g (dense %.3g)\n",
                kerns[k], mean, var, target, rms, dense_rms);
        ck_assert_double_le(fabs(mean), 0.3 * sqrt(target));
        ck_assert(var > 0.02 * target && var < 1.5 * target);
        ck_assert(rms > 0.5 * dense_rms && rms < 2.0 * dense_rms);
        free(x);
        free(y);
        free(w);
        dyn_layer_free(l);
    }
}
END_TEST

/* Training a native DyN layer by gradient descent on a regression task lowers the loss;
 * prepare() (incremental re-sort) runs after every step. */
START_TEST(test_linear_trains) {
    dyn_threads_set(2);
    const int in = 32, out = 8, N = 64;
    dyn_layer *l = make_linear(in, out, 2, 4, "l1", "native", 1, 4);
    dyn_rng r;
    dyn_rng_seed(&r, 8);
    float *teacher = malloc(in * out * sizeof(float));
    tu_fill_uniform(teacher, in * out, &r, -0.3f, 0.3f);
    int64_t xs[2] = {N, in}, ys[2] = {N, out};
    dyn_tensor x, y, dy, dx = {0};
    dyn_tensor_init(&x, 2, xs, NULL);
    dyn_tensor_init(&y, 2, ys, NULL);
    dyn_tensor_init(&dy, 2, ys, NULL);
    dyn_shape s = {.ndim = 2, .d = {N, in}};
    float *sc = dyn_alloc_zero(l->ops->scratch(l, &s, 1) * sizeof(float));
    double first = 0, last = 0;
    for (int step = 0; step < 300; step++) {
        tu_fill_uniform(x.data, N * in, &r, -1, 1);
        l->ops->forward(l, &x, &y, sc, 1);
        double loss = 0;
        for (int b = 0; b < N; b++)
            for (int i = 0; i < out; i++) {
                double t = 0;
                for (int j = 0; j < in; j++) t += teacher[i * in + j] * x.data[b * in + j];
                double e = y.data[b * out + i] - t;
                loss += e * e / N;
                dy.data[b * out + i] = (float)(2 * e / N);
            }
        if (step < 10) first += loss / 10;
        if (step >= 290) last += loss / 10;
        dyn_layer_zero_grad(l);
        l->ops->backward(l, &x, &y, &dy, &dx, sc);
        for (int p = 0; p < l->nparams; p++) { /* sign-SGD: robust to scale differences */
            dyn_param *pp = &l->params[p];
            const int global = strcmp(pp->name, "lambda") == 0 || strcmp(pp->name, "c") == 0;
            const float lr = global ? 1e-3f : 3e-3f;
            for (int64_t i = 0; i < dyn_tensor_numel(&pp->value); i++) {
                float g = pp->grad.data[i];
                pp->value.data[i] -= lr * (float)((g > 0) - (g < 0));
            }
        }
        ck_assert_int_eq(l->ops->prepare(l, NULL), 0);
    }
    fprintf(stderr, "train: loss %.4f -> %.4f\n", first, last);
    ck_assert_double_lt(last, 0.5 * first);
    dyn_tensor_release(&x);
    dyn_tensor_release(&y);
    dyn_tensor_release(&dy);
    dyn_free(sc);
    free(teacher);
    dyn_layer_free(l);
}
END_TEST


/* ---- dyn_conv2d ---------------------------------------------------------------------------- */

typedef struct convcfg {
    int cin, cout, K, stride, pad, dil, H, q;
} convcfg;

static dyn_layer *make_conv(const convcfg *c, const char *kern, const char *exec, int bias,
                            uint64_t seed) {
    json_t *a = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:s, s:i}",
                          "in_channels", c->cin, "out_channels", c->cout, "kernel", c->K,
                          "stride", c->stride, "padding", c->pad, "dilation", c->dil, "H", c->H,
                          "q", c->q, "kernel_fn", kern, "exec", exec, "bias", bias);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create("dyn_conv2d", "conv", a, &err);
    json_decref(a);
    if (!l) fprintf(stderr, "create: %s\n", err.msg);
    ck_assert_ptr_nonnull(l);
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    l->ops->init(l, &r);
    dyn_param *b = dyn_layer_param(l, "bias");
    if (b) tu_fill_uniform(b->value.data, dyn_tensor_numel(&b->value), &r, -0.5f, 0.5f);
    /* a non-trivial λ spread (init gives similar values) */
    dyn_param *lam = dyn_layer_param(l, "lambda");
    for (int64_t i = 0; i < dyn_tensor_numel(&lam->value); i++)
        lam->value.data[i] *= 0.5f + dyn_rng_uniform(&r);
    ck_assert_int_eq(l->ops->prepare(l, &err), 0);
    return l;
}

/* The reference kernel [Cout][Cin][K][K] from the definition (double). */
static double *ref_conv_kernel(dyn_layer *l, const convcfg *c, dyn_kernel k) {
    const int K = c->K, hq = c->H * c->q;
    double *kern = malloc(sizeof(double) * (size_t)c->cout * c->cin * K * K);
    const float *a = dyn_layer_param(l, "a")->value.data, *b = dyn_layer_param(l, "b")->value.data;
    const float *lam = dyn_layer_param(l, "lambda")->value.data;
    for (int r = 0; r < K; r++)
        for (int t = 0; t < K; t++) {
            dyn_sys s = {.m = c->cout, .n = c->cin, .H = c->H, .q = c->q, .kernel = k,
                         .u = a + (int64_t)r * hq * c->cout, .v = b + (int64_t)t * hq * c->cin,
                         .lambda = lam + ((int64_t)r * K + t) * c->H,
                         .c = dyn_layer_param(l, "c")->value.data[0]};
            for (int o = 0; o < c->cout; o++)
                for (int ci = 0; ci < c->cin; ci++)
                    kern[(((int64_t)o * c->cin + ci) * K + r) * K + t] =
                        dyn_sys_ref_weight(&s, o, ci);
        }
    return kern;
}

/* Plain direct convolution and its adjoint (dx) with a given kernel. */
static void ref_conv(const convcfg *c, const double *kern, const float *bias, const float *x,
                     int N, int Hh, int Ww, int OH, int OW, float *y, const float *dy, float *dx) {
    const int K = c->K;
    if (dx) memset(dx, 0, sizeof(float) * (size_t)N * c->cin * Hh * Ww);
    double *dxa = dx ? calloc((size_t)N * c->cin * Hh * Ww, sizeof(double)) : NULL;
    for (int n = 0; n < N; n++)
        for (int o = 0; o < c->cout; o++)
            for (int oy = 0; oy < OH; oy++)
                for (int ox = 0; ox < OW; ox++) {
                    double acc = bias ? bias[o] : 0.0;
                    const int64_t yi = (((int64_t)n * c->cout + o) * OH + oy) * OW + ox;
                    for (int ci = 0; ci < c->cin; ci++)
                        for (int r = 0; r < K; r++)
                            for (int t = 0; t < K; t++) {
                                int iy = oy * c->stride - c->pad + r * c->dil;
                                int ix = ox * c->stride - c->pad + t * c->dil;
                                if (iy < 0 || iy >= Hh || ix < 0 || ix >= Ww) continue;
                                double kv = kern[(((int64_t)o * c->cin + ci) * K + r) * K + t];
                                int64_t xi = (((int64_t)n * c->cin + ci) * Hh + iy) * Ww + ix;
                                acc += kv * x[xi];
                                if (dxa) dxa[xi] += kv * dy[yi];
                            }
                    if (y) y[yi] = (float)acc;
                }
    if (dx)
        for (int64_t i = 0; i < (int64_t)N * c->cin * Hh * Ww; i++) dx[i] = (float)dxa[i];
    free(dxa);
}

typedef struct convrun {
    dyn_tensor x, y, dy, dx;
    float *scratch;
} convrun;

static void conv_run(dyn_layer *l, int N, int Hh, int Ww, uint64_t seed, convrun *cr) {
    dyn_param *pb = dyn_layer_param(l, "b"); /* DyN: b [K, H, q, Cin]; dense: weight [Co, Ci, ..] */
    int64_t cin = pb ? pb->value.shape[3] : dyn_layer_param(l, "weight")->value.shape[1];
    dyn_shape in = {.ndim = 4, .d = {N, cin, Hh, Ww}}, out;
    ck_assert_int_eq(l->ops->infer(l, &in, &out, NULL), 0);
    dyn_tensor_init_shape(&cr->x, &in, NULL);
    dyn_tensor_init_shape(&cr->dx, &in, NULL);
    dyn_tensor_init_shape(&cr->y, &out, NULL);
    dyn_tensor_init_shape(&cr->dy, &out, NULL);
    cr->scratch = dyn_alloc_zero(l->ops->scratch(l, &in, 1) * sizeof(float));
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    tu_fill_uniform(cr->x.data, dyn_tensor_numel(&cr->x), &r, -1, 1);
    tu_fill_uniform(cr->dy.data, dyn_tensor_numel(&cr->dy), &r, -1, 1);
    dyn_layer_zero_grad(l);
    l->ops->forward(l, &cr->x, &cr->y, cr->scratch, 1);
    l->ops->backward(l, &cr->x, &cr->y, &cr->dy, &cr->dx, cr->scratch);
}

static void conv_run_free(convrun *cr) {
    dyn_tensor_release(&cr->x);
    dyn_tensor_release(&cr->y);
    dyn_tensor_release(&cr->dy);
    dyn_tensor_release(&cr->dx);
    dyn_free(cr->scratch);
}

static const convcfg conv_cfgs[] = {
    {3, 5, 3, 1, 1, 1, 2, 2}, {4, 2, 3, 2, 0, 1, 1, 3}, {2, 6, 5, 1, 2, 1, 2, 1},
    {5, 4, 3, 2, 2, 2, 3, 2}, {1, 6, 5, 1, 0, 1, 2, 2}, {6, 3, 1, 1, 0, 1, 2, 2},
};

START_TEST(test_conv_materialized_vs_reference) {
    dyn_threads_set(2);
    static const char *kerns[] = {"l1", "l2", "inv"};
    double worst = 0;
    for (size_t ci = 0; ci < DYN_ARRAY_LEN(conv_cfgs); ci++)
        for (int k = 0; k < 3; k++) {
            const convcfg *c = &conv_cfgs[ci];
            dyn_layer *l = make_conv(c, kerns[k], "materialized", 1, 100 + ci * 3 + k);
            const int N = 2, Hh = 9, Ww = 11;
            convrun cr;
            conv_run(l, N, Hh, Ww, 7 + ci, &cr);
            dyn_kernel kk;
            dyn_kernel_parse(kerns[k], &kk);
            double *kern = ref_conv_kernel(l, c, kk);
            const int OH = (int)cr.y.shape[2], OW = (int)cr.y.shape[3];
            float *y = malloc(sizeof(float) * (size_t)dyn_tensor_numel(&cr.y));
            float *dx = malloc(sizeof(float) * (size_t)dyn_tensor_numel(&cr.x));
            ref_conv(c, kern, dyn_layer_param(l, "bias")->value.data, cr.x.data, N, Hh, Ww, OH, OW,
                     y, cr.dy.data, dx);
            double ey = tu_rel_err(cr.y.data, y, dyn_tensor_numel(&cr.y));
            double ex = tu_rel_err(cr.dx.data, dx, dyn_tensor_numel(&cr.x));
            if (fmax(ey, ex) > 1e-5)
                fprintf(stderr, "conv cfg %zu %s: y %.3g dx %.3g\n", ci, kerns[k], ey, ex);
            worst = fmax(worst, fmax(ey, ex));
            free(y);
            free(dx);
            free(kern);
            conv_run_free(&cr);
            dyn_layer_free(l);
        }
    fprintf(stderr, "conv materialized vs reference conv: worst %.3g\n", worst);
    ck_assert_double_le(worst, 1e-5);
}
END_TEST

/* The acceptance form: a DyN conv == the engine's dense conv2d layer given the DyN's
 * materialized kernel as its weight (forward and dx). */
START_TEST(test_conv_vs_dense_conv2d_layer) {
    double worst = 0;
    for (size_t ci = 0; ci < DYN_ARRAY_LEN(conv_cfgs); ci++) {
        const convcfg *c = &conv_cfgs[ci];
        dyn_layer *l = make_conv(c, "l1", "auto", 1, 300 + ci);
        const int N = 3, Hh = 8, Ww = 10;
        convrun cr;
        conv_run(l, N, Hh, Ww, 11 + ci, &cr);
        double *kern = ref_conv_kernel(l, c, DYN_KERNEL_L1);
        json_t *a = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i}", "in_channels", c->cin,
                              "out_channels", c->cout, "kernel", c->K, "stride", c->stride,
                              "padding", c->pad, "dilation", c->dil);
        dyn_err err = {0};
        dyn_layer *d = dyn_layer_create("conv2d", "dense", a, &err);
        json_decref(a);
        ck_assert_ptr_nonnull(d);
        dyn_param *w = dyn_layer_param(d, "weight"), *b = dyn_layer_param(d, "bias");
        for (int64_t i = 0; i < dyn_tensor_numel(&w->value); i++) w->value.data[i] = (float)kern[i];
        memcpy(b->value.data, dyn_layer_param(l, "bias")->value.data,
               sizeof(float) * (size_t)c->cout);
        convrun dr;
        conv_run(d, N, Hh, Ww, 11 + ci, &dr);
        double ey = tu_rel_err(cr.y.data, dr.y.data, dyn_tensor_numel(&cr.y));
        double ex = tu_rel_err(cr.dx.data, dr.dx.data, dyn_tensor_numel(&cr.x));
        worst = fmax(worst, fmax(ey, ex));
        free(kern);
        conv_run_free(&cr);
        conv_run_free(&dr);
        dyn_layer_free(l);
        dyn_layer_free(d);
    }
    fprintf(stderr, "DyN conv vs dense conv2d layer: worst %.3g\n", worst);
    ck_assert_double_le(worst, 1e-4);
}
END_TEST

/* Native == materialized: outputs, dx and every parameter gradient (batch 1 and 4). */
START_TEST(test_conv_native_vs_materialized) {
    dyn_threads_set(2);
    double worst = 0;
    static const int batches[] = {1, 4};
    for (size_t ci = 0; ci < DYN_ARRAY_LEN(conv_cfgs); ci++)
        for (int bi = 0; bi < 2; bi++) {
            const convcfg *c = &conv_cfgs[ci];
            dyn_layer *ln = make_conv(c, "l1", "native", 1, 40 + ci);
            dyn_layer *lm = make_conv(c, "l1", "materialized", 1, 40 + ci);
            convrun rn, rm;
            conv_run(ln, batches[bi], 10, 8, 3 + ci, &rn);
            conv_run(lm, batches[bi], 10, 8, 3 + ci, &rm);
            double e = tu_rel_err(rn.y.data, rm.y.data, dyn_tensor_numel(&rm.y));
            e = fmax(e, tu_rel_err(rn.dx.data, rm.dx.data, dyn_tensor_numel(&rm.dx)));
            for (int p = 0; p < ln->nparams; p++) {
                double ep = tu_rel_err(ln->params[p].grad.data, lm->params[p].grad.data,
                                       dyn_tensor_numel(&lm->params[p].grad));
                if (ep > 1e-4)
                    fprintf(stderr, "conv cfg %zu batch %d: grad %s %.3g\n", ci, batches[bi],
                            ln->params[p].name, ep);
                e = fmax(e, ep);
            }
            worst = fmax(worst, e);
            conv_run_free(&rn);
            conv_run_free(&rm);
            dyn_layer_free(ln);
            dyn_layer_free(lm);
        }
    /* A larger one: many columns (tile-parallel) and enough work for both threads. */
    convcfg big = {8, 16, 3, 1, 1, 1, 2, 4};
    dyn_layer *ln = make_conv(&big, "l1", "native", 1, 5);
    dyn_layer *lm = make_conv(&big, "l1", "materialized", 1, 5);
    convrun rn, rm;
    conv_run(ln, 3, 20, 20, 4, &rn);
    conv_run(lm, 3, 20, 20, 4, &rm);
    double e = fmax(tu_rel_err(rn.y.data, rm.y.data, dyn_tensor_numel(&rm.y)),
                    tu_rel_err(rn.dx.data, rm.dx.data, dyn_tensor_numel(&rm.dx)));
    for (int p = 0; p < ln->nparams; p++)
        e = fmax(e, tu_rel_err(ln->params[p].grad.data, lm->params[p].grad.data,
                               dyn_tensor_numel(&lm->params[p].grad)));
    worst = fmax(worst, e);
    conv_run_free(&rn);
    conv_run_free(&rm);
    dyn_layer_free(ln);
    dyn_layer_free(lm);
    fprintf(stderr, "conv native vs materialized: worst %.3g\n", worst);
    ck_assert_double_le(worst, 1e-4);
}
END_TEST

START_TEST(test_conv_gradcheck) {
    dyn_threads_set(2);
    static const char *kerns[] = {"l1", "l2", "inv"};
    static const char *execs[] = {"native", "materialized", "auto"};
    const convcfg c = {3, 4, 3, 2, 1, 1, 2, 2};
    int total = 0;
    for (int k = 0; k < 3; k++)
        for (int e = 0; e < 3; e++) {
            if (k > 0 && e == 0) continue;
            dyn_layer *l = make_conv(&c, kerns[k], execs[e], 1, 60 + k * 3 + e);
            spread_states_style(l, "a", "b", 17 + e, k == 0 ? ST_SPREAD : ST_COARSE);
            dyn_shape in = {.ndim = 4, .d = {2, 3, 7, 6}};
            int f = tu_gradcheck(l, &in, 1, 9 + e, 150, 1e-3f, 2e-3, 1e-2);
            if (f)
                fprintf(stderr, "gradcheck dyn_conv2d %s %s: %d failures\n", kerns[k], execs[e],
                        f);
            total += f;
            dyn_layer_free(l);
        }
    /* dilation 2, no bias, batch 1 */
    const convcfg c2 = {2, 3, 3, 1, 2, 2, 1, 3};
    dyn_layer *l = make_conv(&c2, "l1", "native", 0, 3);
    spread_states(l, "a", "b", 4);
    dyn_shape in = {.ndim = 4, .d = {1, 2, 6, 7}};
    total += tu_gradcheck(l, &in, 1, 2, 150, 1e-3f, 2e-3, 1e-2);
    dyn_layer_free(l);
    ck_assert_int_eq(total, 0);
}
END_TEST

START_TEST(test_conv_attrs_and_stats) {
    const convcfg c = {3, 8, 5, 1, 2, 1, 2, 3};
    dyn_layer *l = make_conv(&c, "l1", "native", 1, 1);
    dyn_layer_stats st;
    dyn_shape in = {.ndim = 4, .d = {1, 3, 28, 28}};
    dyn_layer_stats_get(l, &in, &st);
    const int K = 5, H = 2, q = 3;
    ck_assert_int_eq(st.stored_floats, K * H * q * (3 + 8) + K * K * H + 1 + 8);
    ck_assert_int_eq(st.is_dyn, 1);
    ck_assert_int_eq(st.macs, (int64_t)K * K * H * q * (3 + 8) * 28 * 28);
    ck_assert_int_eq(dyn_layer_param(l, "a")->value.shape[0], K);
    ck_assert_int_eq(dyn_layer_param(l, "a")->value.shape[3], 8);
    ck_assert_int_eq(dyn_layer_param(l, "b")->value.shape[3], 3);
    ck_assert_int_eq(dyn_layer_param(l, "lambda")->value.shape[2], H);
    dyn_shape out;
    ck_assert_int_eq(l->ops->infer(l, &in, &out, NULL), 0);
    ck_assert_int_eq(out.d[1], 8);
    ck_assert_int_eq(out.d[2], 28);
    json_t *at = l->ops->attrs(l);
    ck_assert_str_eq(json_string_value(json_object_get(at, "kernel_fn")), "l1");
    ck_assert_int_eq(json_integer_value(json_object_get(at, "kernel")), 5);
    json_decref(at);
    dyn_layer_free(l);

    l = make_conv(&c, "inv", "materialized", 0, 1);
    dyn_layer_stats_get(l, &in, &st);
    ck_assert_int_eq(st.stored_floats, K * H * q * (3 + 8) + K * K * H + 1);
    ck_assert_int_eq(st.memory_floats, st.stored_floats + 8 * 3 * K * K);
    ck_assert_int_eq(st.macs, (int64_t)8 * 3 * K * K * 28 * 28);
    dyn_layer_free(l);

    dyn_err err = {0};
    json_t *a = json_pack("{s:i, s:i, s:i, s:i}", "in_channels", 4, "out_channels", 4, "kernel", 3,
                          "groups", 2);
    ck_assert_ptr_null(dyn_layer_create("dyn_conv2d", "conv", a, &err));
    ck_assert_int_eq(err.code, DYN_EUNSUP);
    ck_assert_ptr_nonnull(strstr(err.msg, "grouped DyN conv not supported yet"));
    json_decref(a);
    a = json_pack("{s:i, s:i, s:i, s:s, s:s}", "in_channels", 4, "out_channels", 4, "kernel", 3,
                  "kernel_fn", "l2", "exec", "native");
    ck_assert_ptr_null(dyn_layer_create("dyn_conv2d", "conv", a, &err));
    ck_assert_int_eq(err.code, DYN_EUNSUP);
    json_decref(a);
    /* an input too small for the kernel is an error, not an abort */
    l = make_conv(&c, "l1", "auto", 1, 1);
    dyn_shape tiny = {.ndim = 4, .d = {1, 3, 0, 0}};
    ck_assert_int_eq(l->ops->infer(l, &tiny, &out, &err), DYN_EINVAL);
    dyn_shape wrongc = {.ndim = 4, .d = {1, 4, 8, 8}};
    ck_assert_int_eq(l->ops->infer(l, &wrongc, &out, &err), DYN_EINVAL);
    dyn_layer_free(l);
}
END_TEST

/* auto holding both paths at inference: the first forward of a shape measures native against
 * materialized and remembers the faster (per columns and threads); every forward, the measuring
 * one included, gives the materialized result (within rounding), and as_dense_conv follows
 * the choice. */
START_TEST(test_conv_auto_measures) {
    convcfg c = {16, 16, 3, 1, 1, 1, 4, 2};
    dyn_layer *la = make_conv(&c, "l1", "auto", 1, 9);
    dyn_layer *lm = make_conv(&c, "l1", "materialized", 1, 9);
    dyn_shape in = {.ndim = 4, .d = {2, 16, 9, 7}}, out;
    ck_assert_int_eq(la->ops->infer(la, &in, &out, NULL), 0);
    dyn_tensor x, ya, ym;
    dyn_tensor_init_shape(&x, &in, NULL);
    dyn_tensor_init_shape(&ya, &out, NULL);
    dyn_tensor_init_shape(&ym, &out, NULL);
    dyn_rng r;
    dyn_rng_seed(&r, 3);
    tu_fill_uniform(x.data, dyn_tensor_numel(&x), &r, -1, 1);
    float *sa = dyn_alloc_zero(la->ops->scratch(la, &in, 0) * sizeof(float));
    float *sm = dyn_alloc_zero(lm->ops->scratch(lm, &in, 0) * sizeof(float));
    lm->ops->forward(lm, &x, &ym, sm, 0);
    dyn_dense_conv v;
    for (int pass = 0; pass < 3; pass++) {
        la->ops->forward(la, &x, &ya, sa, 0);
        double e = tu_rel_err(ya.data, ym.data, dyn_tensor_numel(&ym));
        ck_assert_msg(e < 1e-5, "pass %d: relative error %g", pass, e);
    }
    /* the measured choice holds: as_dense_conv says materialized iff native lost */
    const int dense = la->ops->as_dense_conv(la, &in, 0, &v);
    ck_assert_int_eq(la->ops->as_dense_conv(la, &in, 1, &v), 1); /* it holds the kernel */
    dyn_layer_stats st;
    dyn_shape one = in;
    one.d[0] = 1;
    la->ops->stats(la, &one, &st);
    fprintf(stderr, "dyn_conv2d auto measured at 2x16x9x7: %s\n", dense ? "materialized" : "native");
    dyn_free(sa), dyn_free(sm);
    dyn_tensor_release(&x), dyn_tensor_release(&ya), dyn_tensor_release(&ym);
    dyn_layer_free(la);
    dyn_layer_free(lm);
}
END_TEST

/* The cost model's constants measured here: plausible values (within 16x of the built-in
 * ones, which the calibration enforces, and positive), the order every CPU shows (an FMA in a
 * GEMM costs less than a native element-column), decisions that follow them, and reset. */
START_TEST(test_cost_calibrate) {
    dyn_cost_consts b, c, now;
    dyn_cost_get(&b);
    dyn_err err = {0};
    ck_assert_int_eq(dyn_cost_calibrate(&c, &err), 0);
    const double *bv = &b.native_ns_per_elem_col, *cv = &c.native_ns_per_elem_col;
    for (int i = 0; i < 5; i++)
        ck_assert_msg(cv[i] > 0 && cv[i] >= bv[i] / 16 && cv[i] <= bv[i] * 16,
                      "constant %d: %g (built-in %g)", i, cv[i], bv[i]);
    ck_assert_msg(c.dense_ns_per_mac < c.native_ns_per_elem_col, "MAC %g, elem-col %g",
                  c.dense_ns_per_mac, c.native_ns_per_elem_col);
    dyn_cost_get(&now);
    ck_assert(memcmp(&now, &c, sizeof c) == 0);
    /* a 4096² layer at H·q = 16: native is 131072 elements a column against 16.8 M MACs */
    ck_assert_int_eq(dyn_cost_native_always(16 * 8192, 4096 * 4096),
                     c.native_ns_per_elem_col * 16 * 8192 < c.dense_ns_per_mac * 4096.0 * 4096);
    dyn_cost_reset();
    dyn_cost_get(&now);
    ck_assert(memcmp(&now, &b, sizeof b) == 0);
}
END_TEST

static Suite *dyn_suite(void) {
    Suite *s = suite_create("dyn");
    TCase *tc = tcase_create("systems");
    tcase_set_timeout(tc, 600);
    tcase_add_test(tc, test_native_grid);
    tcase_add_test(tc, test_native_threaded);
    tcase_add_test(tc, test_native_ties);
    tcase_add_test(tc, test_native_every_isa);
    tcase_add_test(tc, test_materialized_kernels);
    tcase_add_test(tc, test_ties_exact);
    tcase_add_test(tc, test_resort);
    tcase_add_test(tc, test_ranks);
    tcase_add_test(tc, test_entropy);
    tcase_add_test(tc, test_cost_calibrate);
    suite_add_tcase(s, tc);
    TCase *tl = tcase_create("dyn_linear");
    tcase_set_timeout(tl, 600);
    tcase_add_test(tl, test_linear_gradcheck);
    tcase_add_test(tl, test_linear_native_vs_materialized);
    tcase_add_test(tl, test_linear_attrs_and_stats);
    tcase_add_test(tl, test_linear_init_scale);
    tcase_add_test(tl, test_linear_trains);
    suite_add_tcase(s, tl);
    TCase *tcv = tcase_create("dyn_conv2d");
    tcase_set_timeout(tcv, 600);
    tcase_add_test(tcv, test_conv_materialized_vs_reference);
    tcase_add_test(tcv, test_conv_vs_dense_conv2d_layer);
    tcase_add_test(tcv, test_conv_native_vs_materialized);
    tcase_add_test(tcv, test_conv_gradcheck);
    tcase_add_test(tcv, test_conv_attrs_and_stats);
    tcase_add_test(tcv, test_conv_auto_measures);
    suite_add_tcase(s, tcv);
    return s;
}

TU_MAIN(dyn_suite)
