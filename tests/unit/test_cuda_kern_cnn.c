/* test_cuda_kern_cnn.c — the CNN kernel bodies of the CUDA backend (engine/cuda/kern_cnn.h) run
 * serially on the host over all their indices, against the CPU ops (no GPU needed: this is what
 * tests the CUDA kernels' index arithmetic in CI; the launch, cuBLAS and the glue are
 * tests/gpu/test_ops_cnn.c's).
 *
 * Tolerances. Bodies that compute each output as the CPU does, in the same order, are held to
 * bit equality: im2col, col2im (taps in (r, t) order, rows and columns ascending: the CPU's
 * accumulation order; also from the tap-major rows of the DyN conv's native path), the layout
 * moves, relu, add and its broadcast gradients, pooling
 * (forward, argmax, gathered backward: the same sums in the same order), global average
 * pooling, the one-pass bias gradient (double sums, same order), and the DyN kernel's slices.
 * The two-pass sums (the device's conv2d bias gradient, batchnorm's statistics and parameter
 * gradients: per (channel, image) in double, rounded to float once, then per channel) and what
 * follows from them (batchnorm's running statistics, y and dx) are held to 1e-6 relative, and so
 * is the DyN kernel (its offset is added after the sum here, first on the CPU). The composed
 * conv2d, linear and DyN conv forward / backward, whose sgemms here are OpenBLAS calls with the
 * launchers' arguments (row-major), are held to 1e-5 relative (float sums in another order), and
 * so is the DyN conv's native sequence (its per-tap native products computed here through the
 * materialized system: the same sums in another order; the offset's sums in double).
 */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "cuda/dyn_cuda_cnn.h"
#include "cuda/kern_cnn.h"
#include "cuda/op_cnn.h"
#include "dyn/dyn.h"
#include "ops/conv_impl.h"
#include "ops/dyn_conv_impl.h"
#include "ops/pool_impl.h"
#include "testutil.h"

static float *rnd(dyn_rng *r, int64_t n, float lo, float hi) {
    float *p = dyn_alloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    ck_assert_ptr_nonnull(p);
    tu_fill_uniform(p, n, r, lo, hi);
    return p;
}

static float *zeros(int64_t n) {
    float *p = dyn_alloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    ck_assert_ptr_nonnull(p);
    memset(p, 0, (size_t)(n > 0 ? n : 1) * sizeof(float));
    return p;
}

/* Bit equality (NaN equals NaN). */
static void same(const float *a, const float *b, int64_t n, const char *what) {
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(a[i] == b[i] || (isnan(a[i]) && isnan(b[i])), "%s[%lld]: %.9g vs %.9g",
                      what, (long long)i, a[i], b[i]);
}

static void close_rel(const float *a, const float *b, int64_t n, double tol, const char *what) {
    double e = tu_rel_err(a, b, n);
    ck_assert_msg(e <= tol, "%s: relative error %.3g > %.3g", what, e, tol);
}

/* Row-major sgemm with the arguments of cnn.cu's rm_sgemm (batch with strides). */
static void emu_sgemm(int ta, int tb, int M, int N, int K, float alpha, const float *A, int lda,
                      int64_t sa, const float *B, int ldb, int64_t sb, float beta, float *C,
                      int ldc, int64_t sc, int batch) {
    for (int i = 0; i < batch; i++)
        cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                    M, N, K, alpha, A + i * sa, lda, B + i * sb, ldb, beta, C + i * sc, ldc);
}

/* ---- conv2d ---------------------------------------------------------------------------------- */

static const tu_conv conv_cases[] = {
    /* n, cin, h, w, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups */
    {2, 3, 9, 8, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1},
    {3, 4, 11, 10, 6, 3, 2, 2, 3, 1, 0, 1, 1, 2},
    {2, 2, 12, 12, 4, 3, 3, 1, 2, 2, 1, 2, 2, 1},
    {1, 6, 7, 7, 6, 3, 3, 2, 2, 1, 1, 1, 1, 6},
    {2, 1, 28, 28, 6, 5, 5, 1, 1, 0, 0, 1, 1, 1},
    {4, 8, 5, 5, 16, 1, 1, 1, 1, 0, 0, 1, 1, 1},
};

/* The bodies against the CPU's im2col / col2im / layout moves, then the composed forward and
 * backward (cnn.cu's sequence, sgemms on the host) against the conv2d layer's. */
START_TEST(test_conv2d) {
    const tu_conv *tc = &conv_cases[_i];
    char attrs[256];
    const int bias = _i % 2 == 0;
    dyn_layer *l = tu_layer("conv2d", tu_conv_attrs(tc, bias, attrs, sizeof attrs));
    dyn_rng r;
    dyn_rng_seed(&r, 100 + (uint64_t)_i);
    l->ops->init(l, &r);
    if (bias) tu_fill_uniform(l->params[1].value.data, tc->cout, &r, -1, 1);
    dyn_shape in = {4, {tc->n, tc->cin, tc->h, tc->w}}, out;
    dyn_err err = {0};
    ck_assert_int_eq(l->ops->infer(l, &in, &out, &err), 0);
    dyn_conv_geom g = {.N = tc->n, .C = tc->cin, .H = tc->h, .W = tc->w, .KH = tc->kh,
                       .KW = tc->kw, .SH = tc->sh, .SW = tc->sw, .PH = tc->ph, .PW = tc->pw,
                       .DH = tc->dh, .DW = tc->dw};
    ck_assert_int_eq(dyn_conv_geom_out(&g), 0);
    const int64_t P = (int64_t)g.OH * g.OW, NP = g.N * P, ckk = (int64_t)g.C * g.KH * g.KW;
    const int64_t nx = dyn_shape_numel(&in), ny = dyn_shape_numel(&out);
    const int cout = tc->cout, G = tc->groups, cog = cout / G, K = (int)(ckk / G);

    /* im2col, col2im, layout moves: bit equality with the CPU functions */
    float *x = rnd(&r, nx, -1, 1), *cols = zeros(ckk * NP), *ref = zeros(ckk * NP);
    for (int64_t i = 0; i < ckk * NP; i++) dyn_k_im2col(i, g, 0, x, cols);
    dyn_im2col(&g, x, ref);
    same(cols, ref, ckk * NP, "im2col");
    float *cg = rnd(&r, ckk * NP, -1, 1), *dxk = zeros(nx), *dxr = zeros(nx);
    for (int64_t i = 0; i < nx; i++) dyn_k_col2im(i, g, 0, cg, dxk);
    dyn_col2im(&g, cg, dxr);
    same(dxk, dxr, nx, "col2im");
    /* tap-major rows ((r·KW + t)·C + c): the same columns, rows permuted; col2im from them */
    float *ct = zeros(ckk * NP), *cgt = zeros(ckk * NP);
    for (int64_t i = 0; i < ckk * NP; i++) dyn_k_im2col(i, g, 1, x, ct);
    for (int c = 0; c < g.C; c++)
        for (int rr = 0; rr < g.KH; rr++)
            for (int t = 0; t < g.KW; t++) {
                const int64_t cm = dyn_k_col_row(g, 0, c, rr, t);
                const int64_t tm = dyn_k_col_row(g, 1, c, rr, t);
                ck_assert_int_eq(cm, ((int64_t)c * g.KH + rr) * g.KW + t);
                ck_assert_int_eq(tm, ((int64_t)rr * g.KW + t) * g.C + c);
                same(ct + tm * NP, ref + cm * NP, NP, "im2col (tap-major)");
                memcpy(cgt + tm * NP, cg + cm * NP, (size_t)NP * sizeof(float));
            }
    for (int64_t i = 0; i < nx; i++) dyn_k_col2im(i, g, 1, cgt, dxk);
    same(dxk, dxr, nx, "col2im (tap-major)");
    dyn_free(ct), dyn_free(cgt);
    float *knp = rnd(&r, cout * NP, -1, 1), *a = zeros(cout * NP), *b = zeros(cout * NP);
    for (int64_t i = 0; i < cout * NP; i++) dyn_k_knp_to_nkp(i, g.N, cout, P, knp, NULL, a);
    dyn_knp_to_nkp(knp, b, g.N, cout, P);
    same(a, b, cout * NP, "knp_to_nkp");
    for (int64_t i = 0; i < cout * NP; i++) dyn_k_nkp_to_knp(i, g.N, cout, P, knp, a);
    dyn_nkp_to_knp(knp, b, g.N, cout, P);
    same(a, b, cout * NP, "nkp_to_knp");

    /* forward: CPU layer (training: keeps its columns) vs the device sequence */
    const size_t sf = l->ops->scratch(l, &in, 1);
    float *scr = zeros((int64_t)sf), *yc = zeros(ny), *yk = zeros(ny), *tmp = zeros(cout * NP);
    int64_t xs[4] = {tc->n, tc->cin, tc->h, tc->w};
    dyn_tensor xt = dyn_tensor_view(x, 4, xs);
    dyn_tensor yt = dyn_tensor_view(yc, 4, out.d);
    l->ops->forward(l, &xt, &yt, scr, 1);
    const float *w = l->params[0].value.data, *bv = bias ? l->params[1].value.data : NULL;
    emu_sgemm(0, 0, cog, (int)NP, K, 1.0f, w, K, (int64_t)cog * K, cols, (int)NP, K * NP, 0.0f,
              tmp, (int)NP, cog * NP, G);
    for (int64_t i = 0; i < ny; i++) dyn_k_knp_to_nkp(i, g.N, cout, P, tmp, bv, yk);
    close_rel(yk, yc, ny, 1e-5, "conv2d forward");

    /* backward */
    float *dy = rnd(&r, ny, -1, 1), *dxc = zeros(nx), *dwk = zeros(cout * K), *dbk = zeros(cout);
    dyn_tensor dyt = dyn_tensor_view(dy, 4, out.d), dxt = dyn_tensor_view(dxc, 4, xs);
    dyn_layer_zero_grad(l);
    l->ops->backward(l, &xt, &yt, &dyt, &dxt, scr);
    if (bias) {
        for (int k = 0; k < cout; k++) dyn_k_bias_grad(k, g.N, cout, P, dy, dbk);
        same(dbk, l->params[1].grad.data, cout, "conv2d bias gradient (one pass)");
        /* cnn.cu's two passes: partial sums per (channel, image), then the rows */
        float *part = zeros((int64_t)cout * g.N), *db2 = zeros(cout);
        for (int64_t i = 0; i < (int64_t)cout * g.N; i++)
            dyn_k_bias_part(i, g.N, cout, P, dy, part);
        for (int k = 0; k < cout; k++) dyn_k_bias_grad(k, 1, cout, g.N, part, db2);
        close_rel(db2, l->params[1].grad.data, cout, 1e-6, "conv2d bias gradient (two passes)");
        dyn_free(part), dyn_free(db2);
    }
    for (int64_t i = 0; i < ny; i++) dyn_k_nkp_to_knp(i, g.N, cout, P, dy, tmp);
    emu_sgemm(0, 1, cog, K, (int)NP, 1.0f, tmp, (int)NP, cog * NP, cols, (int)NP, K * NP, 1.0f,
              dwk, K, (int64_t)cog * K, G);
    close_rel(dwk, l->params[0].grad.data, cout * K, 1e-5, "conv2d weight gradient");
    emu_sgemm(1, 0, K, (int)NP, cog, 1.0f, w, K, (int64_t)cog * K, tmp, (int)NP, cog * NP, 0.0f,
              cols, (int)NP, K * NP, G);
    for (int64_t i = 0; i < nx; i++) dyn_k_col2im(i, g, 0, cols, dxk);
    close_rel(dxk, dxc, nx, 1e-5, "conv2d input gradient");

    dyn_free(x), dyn_free(cols), dyn_free(ref), dyn_free(cg), dyn_free(dxk), dyn_free(dxr);
    dyn_free(knp), dyn_free(a), dyn_free(b), dyn_free(scr), dyn_free(yc), dyn_free(yk);
    dyn_free(tmp), dyn_free(dy), dyn_free(dxc), dyn_free(dwk), dyn_free(dbk);
    dyn_layer_free(l);
}
END_TEST

/* ---- relu, add ------------------------------------------------------------------------------- */

START_TEST(test_relu) {
    dyn_layer *l = tu_layer("relu", "{}");
    dyn_rng r;
    dyn_rng_seed(&r, 7);
    const int64_t n = 1000, s[2] = {10, 100};
    float *x = rnd(&r, n, -1, 1), *yc = zeros(n), *yk = zeros(n), *dy = rnd(&r, n, -1, 1);
    float *dxc = zeros(n), *dxk = zeros(n);
    x[0] = 0.0f, x[1] = -0.0f;
    dyn_tensor xt = dyn_tensor_view(x, 2, s), yt = dyn_tensor_view(yc, 2, s);
    dyn_tensor dyt = dyn_tensor_view(dy, 2, s), dxt = dyn_tensor_view(dxc, 2, s);
    l->ops->forward(l, &xt, &yt, NULL, 1);
    l->ops->backward(l, &xt, &yt, &dyt, &dxt, NULL);
    for (int64_t i = 0; i < n; i++) dyn_k_relu_fwd(i, x, yk);
    for (int64_t i = 0; i < n; i++) dyn_k_relu_bwd(i, yc, dy, dxk);
    same(yk, yc, n, "relu forward");
    same(dxk, dxc, n, "relu backward");
    dyn_free(x), dyn_free(yc), dyn_free(yk), dyn_free(dy), dyn_free(dxc), dyn_free(dxk);
    dyn_layer_free(l);
}
END_TEST

static const struct add_case {
    int ndim;
    int64_t a[4], b[4];
} add_cases[] = {
    {4, {2, 3, 4, 5}, {2, 3, 4, 5}}, {4, {2, 3, 4, 5}, {2, 1, 4, 1}},
    {4, {2, 3, 1, 5}, {2, 1, 4, 5}}, {2, {4, 6}, {4, 1}},
    {3, {3, 1, 7}, {3, 5, 1}},       {4, {1, 8, 1, 1}, {1, 8, 3, 3}},
};

START_TEST(test_add) {
    const struct add_case *ac = &add_cases[_i];
    dyn_layer *l = tu_layer("add", "{}");
    dyn_rng r;
    dyn_rng_seed(&r, 11 + (uint64_t)_i);
    dyn_shape in[2] = {{ac->ndim, {0}}, {ac->ndim, {0}}}, out;
    for (int d = 0; d < ac->ndim; d++) in[0].d[d] = ac->a[d], in[1].d[d] = ac->b[d];
    dyn_err err = {0};
    ck_assert_int_eq(l->ops->infer(l, in, &out, &err), 0);
    const int64_t na = dyn_shape_numel(&in[0]), nb = dyn_shape_numel(&in[1]);
    const int64_t ny = dyn_shape_numel(&out);
    float *a = rnd(&r, na, -1, 1), *b = rnd(&r, nb, -1, 1), *yc = zeros(ny), *yk = zeros(ny);
    float *dy = rnd(&r, ny, -1, 1), *dac = zeros(na), *dbc = zeros(nb), *dak = zeros(na),
          *dbk = zeros(nb);
    dyn_tensor x[2] = {dyn_tensor_view(a, ac->ndim, in[0].d),
                       dyn_tensor_view(b, ac->ndim, in[1].d)};
    dyn_tensor yt = dyn_tensor_view(yc, out.ndim, out.d);
    dyn_tensor dyt = dyn_tensor_view(dy, out.ndim, out.d);
    dyn_tensor dx[2] = {dyn_tensor_view(dac, ac->ndim, in[0].d),
                        dyn_tensor_view(dbc, ac->ndim, in[1].d)};
    l->ops->forward(l, x, &yt, NULL, 1);
    l->ops->backward(l, x, &yt, &dyt, dx, NULL);
    dyn_kbcast s;
    for (int i = 0; i < 4; i++) {
        const int d = i - (4 - ac->ndim);
        s.a[i] = d >= 0 ? in[0].d[d] : 1;
        s.b[i] = d >= 0 ? in[1].d[d] : 1;
        s.y[i] = d >= 0 ? out.d[d] : 1;
    }
    for (int64_t i = 0; i < ny; i++) dyn_k_add_fwd(i, s, a, b, yk);
    for (int64_t j = 0; j < na; j++) dyn_k_add_bwd(j, s.y, s.a, dy, dak);
    for (int64_t j = 0; j < nb; j++) dyn_k_add_bwd(j, s.y, s.b, dy, dbk);
    same(yk, yc, ny, "add forward");
    same(dak, dac, na, "add gradient of a");
    same(dbk, dbc, nb, "add gradient of b");
    dyn_free(a), dyn_free(b), dyn_free(yc), dyn_free(yk), dyn_free(dy), dyn_free(dac);
    dyn_free(dbc), dyn_free(dak), dyn_free(dbk);
    dyn_layer_free(l);
}
END_TEST

/* ---- pooling --------------------------------------------------------------------------------- */

static const struct pool_case {
    const char *attrs;
    int n, c, h, w;
} pool_cases[] = {
    {"{\"kernel\": 2}", 2, 3, 8, 8},
    {"{\"kernel\": 2}", 1, 2, 7, 9},
    {"{\"kernel\": 3, \"stride\": 2, \"padding\": 1}", 2, 2, 9, 10},
    {"{\"kernel\": 3, \"stride\": 2, \"padding\": 1, \"ceil_mode\": 1}", 2, 2, 8, 11},
    {"{\"kernel_h\": 3, \"kernel_w\": 2, \"stride\": 1, \"padding_h\": 1}", 1, 3, 6, 5},
    {"{\"kernel\": 3, \"stride\": 2, \"ceil_mode\": 1, \"count_include_pad\": 0, "
     "\"padding\": 1}", 2, 1, 10, 7},
    {"{\"kernel\": 5, \"stride\": 3, \"padding\": 2, \"count_include_pad\": 0}", 1, 2, 13, 12},
};

static dyn_kpool kpool_of(const dyn_layer *l, const dyn_shape *in, const dyn_shape *out) {
    const pool_impl *p = l->impl;
    return (dyn_kpool){.H = (int)in->d[2], .W = (int)in->d[3], .OH = (int)out->d[2],
                       .OW = (int)out->d[3], .kh = p->kh, .kw = p->kw, .sh = p->sh, .sw = p->sw,
                       .ph = p->ph, .pw = p->pw, .count_include_pad = p->count_include_pad};
}

START_TEST(test_pool) {
    const struct pool_case *pc = &pool_cases[_i % DYN_ARRAY_LEN(pool_cases)];
    const int avg = _i >= (int)DYN_ARRAY_LEN(pool_cases);
    /* avgpool has count_include_pad; maxpool refuses it */
    char attrs[256];
    snprintf(attrs, sizeof attrs, "%s", pc->attrs);
    if (!avg) {
        static const char cip[] = ", \"count_include_pad\": 0";
        char *k = strstr(attrs, cip);
        if (k) memmove(k, k + strlen(cip), strlen(k + strlen(cip)) + 1);
    }
    dyn_layer *l = tu_layer(avg ? "avgpool2d" : "maxpool2d", attrs);
    dyn_rng r;
    dyn_rng_seed(&r, 31 + (uint64_t)_i);
    dyn_shape in = {4, {pc->n, pc->c, pc->h, pc->w}}, out;
    dyn_err err = {0};
    ck_assert_msg(l->ops->infer(l, &in, &out, &err) == 0, "%s", err.msg);
    const int64_t nx = dyn_shape_numel(&in), ny = dyn_shape_numel(&out);
    float *x = rnd(&r, nx, 0, 4);
    for (int64_t i = 0; i < nx; i++) x[i] = floorf(x[i]); /* ties */
    if (!avg && _i == 2) x[5] = NAN, x[17] = NAN;          /* NaN propagates */
    float *yc = zeros(ny), *yk = zeros(ny), *dy = rnd(&r, ny, -1, 1), *dxc = zeros(nx),
          *dxk = zeros(nx), *scr = zeros(ny), *am = zeros(ny);
    dyn_tensor xt = dyn_tensor_view(x, 4, in.d), yt = dyn_tensor_view(yc, 4, out.d);
    dyn_tensor dyt = dyn_tensor_view(dy, 4, out.d), dxt = dyn_tensor_view(dxc, 4, in.d);
    l->ops->forward(l, &xt, &yt, scr, 1);
    l->ops->backward(l, &xt, &yt, &dyt, &dxt, scr);
    dyn_kpool p = kpool_of(l, &in, &out);
    if (avg) {
        for (int64_t i = 0; i < ny; i++) dyn_k_avgpool_fwd(i, p, x, yk);
        for (int64_t i = 0; i < nx; i++) dyn_k_avgpool_bwd(i, p, dy, dxk);
    } else {
        for (int64_t i = 0; i < ny; i++) dyn_k_maxpool_fwd(i, p, x, yk, (int32_t *)am);
        ck_assert(memcmp(am, scr, (size_t)ny * sizeof(float)) == 0); /* the argmaxes */
        for (int64_t i = 0; i < nx; i++) dyn_k_maxpool_bwd(i, p, (const int32_t *)am, dy, dxk);
    }
    same(yk, yc, ny, avg ? "avgpool forward" : "maxpool forward");
    same(dxk, dxc, nx, avg ? "avgpool backward" : "maxpool backward");
    dyn_free(x), dyn_free(yc), dyn_free(yk), dyn_free(dy), dyn_free(dxc), dyn_free(dxk);
    dyn_free(scr), dyn_free(am);
    dyn_layer_free(l);
}
END_TEST

START_TEST(test_gap) {
    dyn_layer *l = tu_layer("globalavgpool", "{}");
    dyn_rng r;
    dyn_rng_seed(&r, 41);
    dyn_shape in = {4, {3, 5, 7, 6}}, out = {4, {3, 5, 1, 1}};
    const int64_t nx = dyn_shape_numel(&in), ny = 15, HW = 42;
    float *x = rnd(&r, nx, -1, 1), *yc = zeros(ny), *yk = zeros(ny), *dy = rnd(&r, ny, -1, 1);
    float *dxc = zeros(nx), *dxk = zeros(nx);
    dyn_tensor xt = dyn_tensor_view(x, 4, in.d), yt = dyn_tensor_view(yc, 4, out.d);
    dyn_tensor dyt = dyn_tensor_view(dy, 4, out.d), dxt = dyn_tensor_view(dxc, 4, in.d);
    l->ops->forward(l, &xt, &yt, NULL, 1);
    l->ops->backward(l, &xt, &yt, &dyt, &dxt, NULL);
    for (int64_t i = 0; i < ny; i++) dyn_k_gap_fwd(i, HW, x, yk);
    for (int64_t i = 0; i < nx; i++) dyn_k_gap_bwd(i, HW, dy, dxk);
    same(yk, yc, ny, "globalavgpool forward");
    same(dxk, dxc, nx, "globalavgpool backward");
    dyn_free(x), dyn_free(yc), dyn_free(yk), dyn_free(dy), dyn_free(dxc), dyn_free(dxk);
    dyn_layer_free(l);
}
END_TEST

/* ---- linear backward: the bias body and the launcher's sgemms ------------------------------- */

START_TEST(test_linear_backward) {
    const int N = 7, in = 13, out = 9;
    dyn_layer *l = tu_layer("linear", "{\"in\": 13, \"out\": 9}");
    dyn_rng r;
    dyn_rng_seed(&r, 51);
    l->ops->init(l, &r);
    const int64_t xs[2] = {N, in}, ys[2] = {N, out};
    float *x = rnd(&r, N * in, -1, 1), *y = zeros(N * out), *dy = rnd(&r, N * out, -1, 1);
    float *dxc = zeros(N * in), *dxk = zeros(N * in), *dwk = zeros(out * in), *dbk = zeros(out);
    dyn_tensor xt = dyn_tensor_view(x, 2, xs), yt = dyn_tensor_view(y, 2, ys);
    dyn_tensor dyt = dyn_tensor_view(dy, 2, ys), dxt = dyn_tensor_view(dxc, 2, xs);
    l->ops->forward(l, &xt, &yt, NULL, 1);
    l->ops->backward(l, &xt, &yt, &dyt, &dxt, NULL);
    for (int k = 0; k < out; k++) dyn_k_bias_grad(k, N, out, 1, dy, dbk);
    same(dbk, l->params[1].grad.data, out, "linear bias gradient");
    emu_sgemm(1, 0, out, in, N, 1.0f, dy, out, 0, x, in, 0, 1.0f, dwk, in, 0, 1);
    close_rel(dwk, l->params[0].grad.data, out * in, 1e-5, "linear weight gradient");
    emu_sgemm(0, 0, N, in, out, 1.0f, dy, out, 0, l->params[0].value.data, in, 0, 0.0f, dxk, in,
              0, 1);
    close_rel(dxk, dxc, N * in, 1e-5, "linear input gradient");
    dyn_free(x), dyn_free(y), dyn_free(dy), dyn_free(dxc), dyn_free(dxk), dyn_free(dwk);
    dyn_free(dbk);
    dyn_layer_free(l);
}
END_TEST

/* ---- batchnorm ------------------------------------------------------------------------------- */

static const struct bn_case {
    int ndim;
    int64_t s[4];
    int training;
} bn_cases[] = {
    {4, {3, 4, 5, 6}, 1}, {4, {3, 4, 5, 6}, 0}, {2, {8, 5}, 1},
    {2, {8, 5}, 0},       {3, {2, 3, 7}, 1},    {4, {1, 2, 1, 1}, 1},
};

START_TEST(test_batchnorm) {
    const struct bn_case *bc = &bn_cases[_i];
    const int C = (int)bc->s[1];
    char attrs[96];
    snprintf(attrs, sizeof attrs, "{\"channels\": %d, \"momentum\": 0.3, \"eps\": 0.001}", C);
    dyn_layer *l = tu_layer("batchnorm", attrs);
    dyn_rng r;
    dyn_rng_seed(&r, 61 + (uint64_t)_i);
    for (int p = 0; p < 4; p++) tu_fill_uniform(l->params[p].value.data, C, &r, 0.5f, 1.5f);
    int64_t n = 1;
    for (int d = 0; d < bc->ndim; d++) n *= bc->s[d];
    dyn_kbn b = {.N = bc->s[0], .S = n / (bc->s[0] * C), .C = C, .eps = 0.001, .momentum = 0.3f,
                 .training = bc->training};
    float *rm = zeros(C), *rv = zeros(C);
    memcpy(rm, l->params[2].value.data, (size_t)C * sizeof(float));
    memcpy(rv, l->params[3].value.data, (size_t)C * sizeof(float));
    float *x = rnd(&r, n, -2, 3), *yc = zeros(n), *yk = zeros(n), *dy = rnd(&r, n, -1, 1);
    float *dxc = zeros(n), *dxk = zeros(n), *scc = zeros(2 * C + 1);
    float *sck = zeros((int64_t)DYN_KBN_SCRATCH(C, b.N));
    float *dg = zeros(C), *db = zeros(C);
    dyn_tensor xt = dyn_tensor_view(x, bc->ndim, bc->s), yt = dyn_tensor_view(yc, bc->ndim, bc->s);
    dyn_tensor dyt = dyn_tensor_view(dy, bc->ndim, bc->s);
    dyn_tensor dxt = dyn_tensor_view(dxc, bc->ndim, bc->s);
    l->ops->forward(l, &xt, &yt, scc, bc->training);
    dyn_layer_zero_grad(l);
    l->ops->backward(l, &xt, &yt, &dyt, &dxt, scc);

    /* cnn.cu's sequence */
    const float *gamma = l->params[0].value.data, *beta = l->params[1].value.data;
    const int64_t cn = (int64_t)C * b.N;
    if (b.training) {
        for (int64_t i = 0; i < cn; i++) dyn_k_bn_part(i, b, DYN_KBN_SUM_X, x, NULL, sck);
        for (int c = 0; c < C; c++) dyn_k_bn_mean(c, b, sck);
        for (int64_t i = 0; i < cn; i++) dyn_k_bn_part(i, b, DYN_KBN_SUM_DEV2, x, NULL, sck);
    }
    for (int c = 0; c < C; c++) dyn_k_bn_stats(c, b, rm, rv, sck);
    close_rel(sck, scc, 2 * C, 1e-6, "batchnorm statistics");
    ck_assert(sck[2 * C] == scc[2 * C]);
    close_rel(rm, l->params[2].value.data, C, 1e-6, "running mean");
    close_rel(rv, l->params[3].value.data, C, 1e-6, "running variance");
    for (int64_t i = 0; i < n; i++) dyn_k_bn_apply(i, b, x, gamma, beta, sck, yk);
    close_rel(yk, yc, n, 1e-6, "batchnorm forward");
    for (int64_t i = 0; i < cn; i++) dyn_k_bn_part(i, b, DYN_KBN_SUM_DY, x, dy, sck);
    for (int c = 0; c < C; c++) dyn_k_bn_bwd_stats(c, b, sck, dg, db);
    close_rel(dg, l->params[0].grad.data, C, 1e-6, "batchnorm gamma gradient");
    close_rel(db, l->params[1].grad.data, C, 1e-6, "batchnorm beta gradient");
    for (int64_t i = 0; i < n; i++) dyn_k_bn_bwd_dx(i, b, x, dy, gamma, sck, dxk);
    close_rel(dxk, dxc, n, 1e-6, "batchnorm input gradient");
    dyn_free(rm), dyn_free(rv), dyn_free(x), dyn_free(yc), dyn_free(yk), dyn_free(dy);
    dyn_free(dxc), dyn_free(dxk), dyn_free(scc), dyn_free(sck), dyn_free(dg), dyn_free(db);
    dyn_layer_free(l);
}
END_TEST

/* ---- dyn_conv2d: the kernel from the system slices, and the slices of its gradient ----------- */

START_TEST(test_dyn_conv2d) {
    static const char *const kf[3] = {"l1", "l2", "inv"};
    char attrs[256];
    snprintf(attrs, sizeof attrs,
             "{\"in_channels\": 3, \"out_channels\": 5, \"kernel\": 3, \"padding\": 1, "
             "\"stride\": %d, \"H\": 2, \"q\": 2, \"kernel_fn\": \"%s\", \"exec\": "
             "\"materialized\"}",
             1 + _i % 2, kf[_i]);
    dyn_layer *l = tu_layer("dyn_conv2d", attrs);
    dyn_rng r;
    dyn_rng_seed(&r, 71 + (uint64_t)_i);
    l->ops->init(l, &r);
    dyn_err err = {0};
    ck_assert_int_eq(l->ops->prepare(l, &err), 0);
    const dc_impl *d = l->impl;
    const int KK = d->K * d->K, cout = d->cout, cin = d->cin;
    const int64_t kern = (int64_t)cout * cin * KK, hq = (int64_t)d->H * d->q;

    /* the kernel: the K² systems materialized into slices, then the permute body */
    float *sl = zeros(kern), *w = zeros(kern);
    for (int rr = 0; rr < d->K; rr++)
        for (int t = 0; t < d->K; t++) {
            dyn_sys s = {.m = cout, .n = cin, .H = d->H, .q = d->q, .kernel = d->kernel,
                         .u = l->params[P_A].value.data + rr * hq * cout,
                         .v = l->params[P_B].value.data + t * hq * cin,
                         .lambda = l->params[P_LAMBDA].value.data + (rr * d->K + t) * d->H,
                         .c = 0.0f};
            dyn_sys_materialize(&s, sl + (int64_t)(rr * d->K + t) * cout * cin);
        }
    for (int64_t i = 0; i < kern; i++)
        dyn_k_dc_kernel(i, cout, cin, KK, sl, l->params[P_C].value.data, w);
    close_rel(w, d->w, kern, 1e-6, "dyn_conv2d kernel");

    /* backward through the composed device sequence vs the layer's */
    dyn_shape in = {4, {2, 3, 6, 5}}, out;
    ck_assert_int_eq(l->ops->infer(l, &in, &out, &err), 0);
    dyn_conv_geom g = {.N = 2, .C = 3, .H = 6, .W = 5, .KH = 3, .KW = 3, .SH = d->stride,
                       .SW = d->stride, .PH = 1, .PW = 1, .DH = 1, .DW = 1};
    ck_assert_int_eq(dyn_conv_geom_out(&g), 0);
    const int64_t nx = dyn_shape_numel(&in), ny = dyn_shape_numel(&out);
    const int64_t P = (int64_t)g.OH * g.OW, NP = g.N * P, ckk = (int64_t)cin * KK;
    float *x = rnd(&r, nx, -1, 1), *y = zeros(ny), *dy = rnd(&r, ny, -1, 1), *dx = zeros(nx);
    float *scr = zeros((int64_t)l->ops->scratch(l, &in, 1));
    dyn_tensor xt = dyn_tensor_view(x, 4, in.d), yt = dyn_tensor_view(y, 4, out.d);
    dyn_tensor dyt = dyn_tensor_view(dy, 4, out.d), dxt = dyn_tensor_view(dx, 4, in.d);
    l->ops->forward(l, &xt, &yt, scr, 1);
    dyn_layer_zero_grad(l);
    l->ops->backward(l, &xt, &yt, &dyt, &dxt, scr);
    float *cols = zeros(ckk * NP), *gy = zeros(cout * NP), *G = zeros(kern), *sg = zeros(kern);
    for (int64_t i = 0; i < ckk * NP; i++) dyn_k_im2col(i, g, 0, x, cols);
    for (int64_t i = 0; i < ny; i++) dyn_k_nkp_to_knp(i, g.N, cout, P, dy, gy);
    emu_sgemm(0, 1, cout, (int)ckk, (int)NP, 1.0f, gy, (int)NP, 0, cols, (int)NP, 0, 0.0f, G,
              (int)ckk, 0, 1);
    for (int64_t i = 0; i < kern; i++) dyn_k_dc_slices(i, cout, cin, KK, G, sg);
    const float zero = 0.0f;
    for (int64_t i = 0; i < kern; i++) /* the slices body is dc_kernel's inverse */
        dyn_k_dc_kernel(i, cout, cin, KK, sg, &zero, sl);
    same(sl, G, kern, "dyn_conv2d slices of the kernel gradient");
    const int64_t na = dyn_tensor_numel(&l->params[P_A].value);
    const int64_t nb = dyn_tensor_numel(&l->params[P_B].value);
    float *ga = zeros(na), *gb = zeros(nb), *gl = zeros(KK * d->H), *gc = zeros(1);
    for (int rr = 0; rr < d->K; rr++)
        for (int t = 0; t < d->K; t++) {
            const int col = rr * d->K + t;
            dyn_sys s = {.m = cout, .n = cin, .H = d->H, .q = d->q, .kernel = d->kernel,
                         .u = l->params[P_A].value.data + rr * hq * cout,
                         .v = l->params[P_B].value.data + t * hq * cin,
                         .lambda = l->params[P_LAMBDA].value.data + col * d->H,
                         .c = l->params[P_C].value.data[0]};
            dyn_sys_grad gr = {.du = ga + rr * hq * cout, .dv = gb + t * hq * cin,
                               .dlambda = gl + col * d->H, .dc = gc};
            dyn_sys_grad_materialized(&s, sg + (int64_t)col * cout * cin, &gr);
        }
    close_rel(ga, l->params[P_A].grad.data, na, 1e-5, "dyn_conv2d a gradient");
    close_rel(gb, l->params[P_B].grad.data, nb, 1e-5, "dyn_conv2d b gradient");
    close_rel(gl, l->params[P_LAMBDA].grad.data, KK * d->H, 1e-5, "dyn_conv2d lambda gradient");
    close_rel(gc, l->params[P_C].grad.data, 1, 1e-5, "dyn_conv2d c gradient");
    dyn_free(sl), dyn_free(w), dyn_free(x), dyn_free(y), dyn_free(dy), dyn_free(dx);
    dyn_free(scr), dyn_free(cols), dyn_free(gy), dyn_free(G), dyn_free(sg), dyn_free(ga);
    dyn_free(gb), dyn_free(gl), dyn_free(gc);
    dyn_layer_free(l);
}
END_TEST

/* ---- dyn_conv2d native (l1): cnn.cu's sequence on the host ----------------------------------
 * dyn_cuda_dc_native_forward / _backward emulated with the bodies over all indices, in the
 * launchers' scratch layout (dyn_cuda_dcn_scratch: overlapping regions would corrupt a result),
 * and each tap's native product — dyn_cuda_native_*, tested on the GPU against the CPU's by
 * tests/gpu/test_native.c — as the same product through the materialized system (offset 0),
 * against the CPU layer with exec = "native". */

static const struct dcn_case {
    int cin, cout, K, stride, pad, dil, H, q, bias, n, h, w;
} dcn_cases[] = {
    {3, 5, 3, 1, 1, 1, 2, 2, 1, 2, 6, 5}, {4, 6, 3, 2, 0, 1, 3, 2, 0, 2, 9, 8},
    {2, 4, 2, 1, 2, 2, 1, 3, 1, 3, 7, 7}, {1, 3, 5, 1, 0, 1, 2, 1, 1, 2, 9, 9},
    {5, 2, 1, 1, 0, 1, 2, 2, 1, 2, 4, 3},
};

/* The (r, t) system of the layer, without its offset. */
static dyn_sys dcn_sys_host(const dyn_layer *l, int rr, int t) {
    const dc_impl *d = l->impl;
    const int64_t hq = (int64_t)d->H * d->q;
    return (dyn_sys){.m = d->cout, .n = d->cin, .H = d->H, .q = d->q, .kernel = d->kernel,
                     .u = l->params[P_A].value.data + rr * hq * d->cout,
                     .v = l->params[P_B].value.data + t * hq * d->cin,
                     .lambda = l->params[P_LAMBDA].value.data + (rr * d->K + t) * d->H,
                     .c = 0.0f};
}

START_TEST(test_dyn_conv2d_native) {
    const struct dcn_case *tc = &dcn_cases[_i];
    char attrs[320];
    snprintf(attrs, sizeof attrs,
             "{\"in_channels\": %d, \"out_channels\": %d, \"kernel\": %d, \"stride\": %d, "
             "\"padding\": %d, \"dilation\": %d, \"H\": %d, \"q\": %d, \"bias\": %d, "
             "\"kernel_fn\": \"l1\", \"exec\": \"native\"}",
             tc->cin, tc->cout, tc->K, tc->stride, tc->pad, tc->dil, tc->H, tc->q, tc->bias);
    dyn_layer *l = tu_layer("dyn_conv2d", attrs);
    dyn_rng r;
    dyn_rng_seed(&r, 81 + (uint64_t)_i);
    l->ops->init(l, &r);
    if (tc->bias) tu_fill_uniform(l->params[P_BIAS].value.data, tc->cout, &r, -1, 1);
    dyn_err err = {0};
    ck_assert_int_eq(l->ops->prepare(l, &err), 0);
    const dc_impl *d = l->impl;
    const int K = d->K, KK = K * K, cout = d->cout, cin = d->cin;
    const int64_t hq = (int64_t)d->H * d->q;
    dyn_shape in = {4, {tc->n, tc->cin, tc->h, tc->w}}, out;
    ck_assert_int_eq(l->ops->infer(l, &in, &out, &err), 0);
    dyn_conv_geom g = {.N = tc->n, .C = cin, .H = tc->h, .W = tc->w, .KH = K, .KW = K,
                       .SH = tc->stride, .SW = tc->stride, .PH = tc->pad, .PW = tc->pad,
                       .DH = tc->dil, .DW = tc->dil};
    ck_assert_int_eq(dyn_conv_geom_out(&g), 0);
    const int64_t nx = dyn_shape_numel(&in), ny = dyn_shape_numel(&out);
    const int64_t P = (int64_t)g.OH * g.OW, NP = g.N * P, ckk = (int64_t)cin * KK;

    /* the CPU layer: training forward, backward with dx */
    float *x = rnd(&r, nx, -1, 1), *yc = zeros(ny), *dy = rnd(&r, ny, -1, 1), *dxc = zeros(nx);
    float *sc = zeros((int64_t)l->ops->scratch(l, &in, 1));
    dyn_tensor xt = dyn_tensor_view(x, 4, in.d), yt = dyn_tensor_view(yc, 4, out.d);
    dyn_tensor dyt = dyn_tensor_view(dy, 4, out.d), dxt = dyn_tensor_view(dxc, 4, in.d);
    l->ops->forward(l, &xt, &yt, sc, 1);
    dyn_layer_zero_grad(l);
    l->ops->backward(l, &xt, &yt, &dyt, &dxt, sc);

    /* the launchers' sequence in their scratch layout */
    const dyn_cuda_dcn_scr o = dyn_cuda_dcn_scratch(&g, cout, 1);
    ck_assert_uint_le(dyn_cuda_dcn_scratch(&g, cout, 0).total, o.total);
    float *scr = zeros((int64_t)o.total);
    float *ct = scr + o.cols, *yk = scr + o.y, *cs = scr + o.s, *es = scr + o.e;
    float *part = scr + o.part, *dct = scr + o.dcols;
    const float *cv = l->params[P_C].value.data;
    const float *bv = tc->bias ? l->params[P_BIAS].value.data : NULL;
    float *W = zeros((int64_t)cout * cin), *G = zeros((int64_t)cout * cin), *y = zeros(ny);
    for (int64_t i = 0; i < ckk * NP; i++) dyn_k_im2col(i, g, 1, x, ct);
    for (int64_t c = 0; c < NP; c++) dyn_k_colsum(c, ckk, NP, ct, cs);
    for (int64_t i = 0; i < cout * NP; i++) dyn_k_dc_fill(i, NP, cs, cv, yk);
    for (int rr = 0; rr < K; rr++)
        for (int t = 0; t < K; t++) {
            const dyn_sys s = dcn_sys_host(l, rr, t);
            dyn_sys_materialize(&s, W);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cout, (int)NP, cin, 1.0f, W,
                        cin, ct + (int64_t)(rr * K + t) * cin * NP, (int)NP, 1.0f, yk, (int)NP);
        }
    for (int64_t i = 0; i < ny; i++) dyn_k_knp_to_nkp(i, g.N, cout, P, yk, bv, y);
    close_rel(y, yc, ny, 1e-5, "dyn_conv2d native forward");

    const int64_t na = dyn_tensor_numel(&l->params[P_A].value);
    const int64_t nb = dyn_tensor_numel(&l->params[P_B].value);
    float *ga = zeros(na), *gb = zeros(nb), *gl = zeros(KK * d->H), *gc = zeros(1);
    float *gbias = zeros(cout), *dxk = zeros(nx);
    if (bv) {
        for (int64_t i = 0; i < (int64_t)cout * g.N; i++)
            dyn_k_bias_part(i, g.N, cout, P, dy, part);
        for (int k = 0; k < cout; k++) dyn_k_bias_grad(k, 1, cout, g.N, part, gbias);
        close_rel(gbias, l->params[P_BIAS].grad.data, cout, 1e-6, "dyn_conv2d native dbias");
    }
    for (int64_t i = 0; i < ny; i++) dyn_k_nkp_to_knp(i, g.N, cout, P, dy, yk);
    for (int64_t c = 0; c < NP; c++) dyn_k_colsum(c, cout, NP, yk, es);
    const int64_t parts = (NP + DYN_CUDA_DCN_DOT_CHUNK - 1) / DYN_CUDA_DCN_DOT_CHUNK;
    for (int64_t i = 0; i < parts; i++)
        dyn_k_dot_part(i, NP, DYN_CUDA_DCN_DOT_CHUNK, cs, es, part);
    dyn_k_bias_grad(0, 1, 1, parts, part, gc);
    for (int64_t i = 0; i < ckk * NP; i++) dyn_k_dc_fill(i, NP, es, cv, dct);
    for (int rr = 0; rr < K; rr++)
        for (int t = 0; t < K; t++) {
            const int64_t rows = (int64_t)(rr * K + t) * cin * NP;
            const dyn_sys s = dcn_sys_host(l, rr, t);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cout, cin, (int)NP, 1.0f, yk,
                        (int)NP, ct + rows, (int)NP, 0.0f, G, cin);
            const dyn_sys_grad gr = {.du = ga + rr * hq * cout, .dv = gb + t * hq * cin,
                                     .dlambda = gl + (rr * K + t) * d->H};
            dyn_sys_grad_materialized(&s, G, &gr);
            dyn_sys_materialize(&s, W);
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, cin, (int)NP, cout, 1.0f, W, cin,
                        yk, (int)NP, 1.0f, dct + rows, (int)NP);
        }
    for (int64_t i = 0; i < nx; i++) dyn_k_col2im(i, g, 1, dct, dxk);
    close_rel(dxk, dxc, nx, 1e-5, "dyn_conv2d native dx");
    close_rel(ga, l->params[P_A].grad.data, na, 1e-5, "dyn_conv2d native a gradient");
    close_rel(gb, l->params[P_B].grad.data, nb, 1e-5, "dyn_conv2d native b gradient");
    close_rel(gl, l->params[P_LAMBDA].grad.data, KK * d->H, 1e-5,
              "dyn_conv2d native lambda gradient");
    close_rel(gc, l->params[P_C].grad.data, 1, 1e-5, "dyn_conv2d native c gradient");
    dyn_free(x), dyn_free(yc), dyn_free(dy), dyn_free(dxc), dyn_free(sc), dyn_free(scr);
    dyn_free(W), dyn_free(G), dyn_free(y), dyn_free(ga), dyn_free(gb), dyn_free(gl);
    dyn_free(gc), dyn_free(gbias), dyn_free(dxk);
    dyn_layer_free(l);
}
END_TEST

/* ---- the glue (op_cnn.c) where no device runs: what it asks for, and how it fails ------------ */

/* supports() and scratch() of the device tables, and each forward failing (no CUDA in this
 * build: DYN_EUNSUP; a CUDA build without a context: DYN_EINVAL) with the layer's name. */
START_TEST(test_glue) {
    dyn_err err = {0};
    dyn_layer *conv =
        tu_layer("conv2d", "{\"in_channels\": 3, \"out_channels\": 8, \"kernel\": 3}");
    dyn_shape in = {4, {2, 3, 10, 9}}, bad = {4, {2, 4, 10, 9}}, tiny = {4, {2, 3, 2, 2}};
    ck_assert_int_eq(dyn_cuda_op_conv2d.supports(conv, &in, 1), 1);
    ck_assert_int_eq(dyn_cuda_op_conv2d.supports(conv, &bad, 1), 0);
    ck_assert_int_eq(dyn_cuda_op_conv2d.supports(conv, &tiny, 0), 0);
    ck_assert_uint_eq(dyn_cuda_op_conv2d.scratch(conv, &in, 1), (3 * 9 + 8) * 2 * 8 * 7);

    dyn_layer *bn = tu_layer("batchnorm", "{\"channels\": 3}");
    ck_assert_uint_eq(dyn_cuda_op_batchnorm.scratch(bn, &in, 1), DYN_KBN_SCRATCH(3, 2));
    dyn_layer *mp = tu_layer("maxpool2d", "{\"kernel\": 2}");
    ck_assert_uint_eq(dyn_cuda_op_maxpool2d.scratch(mp, &in, 0), 2 * 3 * 5 * 4);

    /* dyn_conv2d: native runs natively (nothing prepared); materialized prepares a kernel;
     * auto is native exactly where the CPU op holds no kernel (the 64-channel case under the
     * built-in cost model) */
    static const struct {
        const char *exec;
        int ch, H;
    } dcs[] = {{"native", 3, 2}, {"materialized", 3, 2}, {"auto", 3, 2}, {"auto", 64, 1}};
    for (size_t e = 0; e < DYN_ARRAY_LEN(dcs); e++) {
        char a[256];
        snprintf(a, sizeof a, "{\"in_channels\": %d, \"out_channels\": %d, \"kernel\": 3, "
                 "\"H\": %d, \"q\": 2, \"exec\": \"%s\"}", dcs[e].ch, dcs[e].ch + 1, dcs[e].H,
                 dcs[e].exec);
        dyn_layer *dc = tu_layer("dyn_conv2d", a);
        const int ch = dcs[e].ch, co = ch + 1;
        const int native = e == 0 || (e == 3 && !((const dc_impl *)dc->impl)->hold_w);
        dyn_shape din = {4, {2, ch, 10, 9}};
        const dyn_conv_geom dg = {.N = 2, .C = ch, .H = 10, .W = 9, .KH = 3, .KW = 3, .SH = 1,
                                  .SW = 1, .DH = 1, .DW = 1, .OH = 8, .OW = 7};
        ck_assert_int_eq(dyn_cuda_op_dyn_conv2d.supports(dc, &din, 1), 1);
        ck_assert_uint_eq(dyn_cuda_op_dyn_conv2d.scratch(dc, &din, 1),
                          native ? dyn_cuda_dcn_scratch(&dg, co, 1).total
                                 : (size_t)(ch * 9 + co) * 2 * 8 * 7 + 2 * co * ch * 9);
        ck_assert_uint_eq(dyn_cuda_op_dyn_conv2d.scratch(dc, &din, 0),
                          native ? (size_t)(ch * 9 + co + 1) * 2 * 8 * 7
                                 : (size_t)(ch * 9 + co) * 2 * 8 * 7);
        int64_t xs[4] = {2, ch, 10, 9}, ys[4] = {2, co, 8, 7};
        dyn_tensor x = dyn_tensor_view(NULL, 4, xs), y = dyn_tensor_view(NULL, 4, ys);
        if (native) { /* prepare: nothing to derive; forward: the launcher's error */
            ck_assert_int_eq(dyn_cuda_op_dyn_conv2d.prepare(NULL, dc, &err), 0);
            ck_assert_ptr_null(dc->dev);
            ck_assert_int_eq(dyn_cuda_op_dyn_conv2d.forward(NULL, dc, &x, &y, NULL, 1, &err),
                             dyn_cuda_built() ? DYN_EINVAL : DYN_EUNSUP);
            ck_assert_msg(strstr(err.msg, "layer 't': "), "%s", err.msg);
            dyn_tensor dy = y, dx = x;
            ck_assert_int_eq(dyn_cuda_op_dyn_conv2d.backward(NULL, dc, &x, &y, &dy, &dx, NULL,
                                                             &err),
                             dyn_cuda_built() ? DYN_EINVAL : DYN_EUNSUP);
            ck_assert_msg(strstr(err.msg, "layer 't': "), "%s", err.msg);
        } else { /* no context: prepare fails and leaves nothing; forward: not prepared */
            ck_assert_int_ne(dyn_cuda_op_dyn_conv2d.prepare(NULL, dc, &err), 0);
            ck_assert_ptr_null(dc->dev);
            ck_assert_msg(strstr(err.msg, "layer 't'"), "%s", err.msg);
            ck_assert_int_eq(dyn_cuda_op_dyn_conv2d.forward(NULL, dc, &x, &y, NULL, 0, &err),
                             DYN_EINVAL);
            ck_assert_msg(strstr(err.msg, "not prepared"), "%s", err.msg);
        }
        dyn_layer_free(dc);
    }

    int64_t xs[4] = {2, 3, 10, 9}, ys[4] = {2, 8, 8, 7};
    dyn_tensor x = dyn_tensor_view(NULL, 4, xs), y = dyn_tensor_view(NULL, 4, ys);
    const int rc = dyn_cuda_op_conv2d.forward(NULL, conv, &x, &y, NULL, 1, &err);
    ck_assert_int_eq(rc, dyn_cuda_built() ? DYN_EINVAL : DYN_EUNSUP);
    ck_assert_msg(strstr(err.msg, "layer 't': "), "%s", err.msg);
    if (!dyn_cuda_built()) ck_assert_msg(strstr(err.msg, "make CUDA=1"), "%s", err.msg);
    dyn_layer_free(conv), dyn_layer_free(bn), dyn_layer_free(mp);
}
END_TEST

static Suite *kern_cnn_suite(void) {
    Suite *s = suite_create("cuda_kern_cnn");
    TCase *tc = tcase_create("bodies");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_conv2d, 0, (int)DYN_ARRAY_LEN(conv_cases));
    tcase_add_test(tc, test_relu);
    tcase_add_loop_test(tc, test_add, 0, (int)DYN_ARRAY_LEN(add_cases));
    tcase_add_loop_test(tc, test_pool, 0, 2 * (int)DYN_ARRAY_LEN(pool_cases));
    tcase_add_test(tc, test_gap);
    tcase_add_test(tc, test_linear_backward);
    tcase_add_loop_test(tc, test_batchnorm, 0, (int)DYN_ARRAY_LEN(bn_cases));
    tcase_add_loop_test(tc, test_dyn_conv2d, 0, 3);
    tcase_add_loop_test(tc, test_dyn_conv2d_native, 0, (int)DYN_ARRAY_LEN(dcn_cases));
    suite_add_tcase(s, tc);
    tc = tcase_create("glue");
    tcase_add_test(tc, test_glue);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(kern_cnn_suite)
