/* test_dnnl.c — the oneDNN paths (cpu/dnnl_conv.c; ops/conv.c, ops/linear.c) against plain
 * double-precision references: convolutions with every implementation (im2col + sgemm, oneDNN
 * blocked, oneDNN NCHW, auto) on strides, paddings, dilations, groups (depthwise included),
 * 1x1, odd sizes, batch 1 and 8, at 1 and 2 threads; linear layers (sgemm vs oneDNN's inner
 * product); that the oneDNN variants really ran oneDNN; the cache
 * (two entries for one shape held at once, its bound, prepare() after the weights change).
 *
 * Tolerance: |y - ref| <= 1e-5 * (1 + A) per output, A = sum over its taps of |w·x| + |b| (the
 * same convolution on absolute values): float32 sums of K terms in any order stay within
 * about sqrt(K)·2^-24·A of the exact value, 1e-5·A for K up to ~10^4 with room. */
#include <math.h>
#include <string.h>

#include "cpu/dnnl_conv.h"
#include "cpu/im2col.h"
#include "testutil.h"

static dyn_layer *mk(const char *attrs_json) {
    json_error_t jerr;
    json_t *a = json_loads(attrs_json, 0, &jerr);
    ck_assert_msg(a != NULL, "bad test JSON %s: %s", attrs_json, jerr.text);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create("conv2d", "t", a, &err);
    json_decref(a);
    ck_assert_msg(l != NULL, "%s: %s", attrs_json, err.msg);
    return l;
}

typedef struct dcase {
    int n, cin, h, w, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias;
} dcase;

static const dcase cases[] = {
    /* n cin  h   w cout kh kw sh sw ph pw dh dw   g bias */
    {1, 64, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},    /* ResNet 3x3, batch 1 */
    {8, 64, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},    /* the same, batch 8 */
    {1, 3, 33, 31, 16, 7, 7, 2, 2, 3, 3, 1, 1, 1, 1},     /* stem: 7x7 stride 2, odd sizes */
    {8, 32, 15, 15, 64, 1, 1, 2, 2, 0, 0, 1, 1, 1, 0},    /* 1x1 stride 2 downsample */
    {1, 48, 13, 11, 96, 1, 1, 1, 1, 0, 0, 1, 1, 1, 1},    /* 1x1 bottleneck, odd sizes */
    {8, 32, 15, 13, 32, 3, 3, 1, 1, 1, 1, 1, 1, 32, 1},   /* depthwise */
    {1, 16, 12, 12, 32, 3, 3, 2, 2, 1, 1, 1, 1, 16, 1},   /* depthwise x2, stride 2 */
    {2, 24, 11, 9, 40, 3, 3, 1, 1, 1, 1, 1, 1, 4, 1},     /* 4 groups */
    {1, 20, 17, 17, 24, 3, 3, 1, 1, 2, 2, 2, 2, 1, 1},    /* dilation 2 */
    {3, 5, 9, 10, 7, 3, 2, 2, 1, 1, 0, 1, 2, 1, 1},       /* asymmetric kernel, stride, dilation */
    {1, 3, 4, 4, 2, 5, 5, 1, 1, 2, 2, 1, 1, 1, 1},        /* kernel larger than the input */
    {8, 17, 7, 7, 33, 3, 3, 1, 1, 1, 1, 1, 1, 1, 0},      /* channels no multiple of 8 or 16 */
    {1, 256, 7, 7, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},    /* deep, small image */
};

static tu_conv tu_of(const dcase *c) {
    return (tu_conv){c->n,  c->cin, c->h,  c->w,  c->cout, c->kh, c->kw,
                     c->sh, c->sw,  c->ph, c->pw, c->dh,   c->dw, c->groups};
}

static dyn_conv_geom geom(const dcase *c) {
    dyn_conv_geom g = {.N = c->n, .C = c->cin, .H = c->h, .W = c->w, .KH = c->kh, .KW = c->kw,
                       .SH = c->sh, .SW = c->sw, .PH = c->ph, .PW = c->pw, .DH = c->dh,
                       .DW = c->dw};
    ck_assert_int_eq(dyn_conv_geom_out(&g), 0);
    return g;
}

/* A layer of case c with random weights, its input, and the reference output and bound. */
typedef struct fixture {
    dyn_layer *l;
    dyn_conv_geom g;
    dyn_tensor x;
    int64_t ny;
    double *want, *absum;
} fixture;

static void ref_fill(fixture *f, const dcase *c) {
    const dyn_layer *l = f->l;
    const float *w = l->params[0].value.data, *b = c->bias ? l->params[1].value.data : NULL;
    tu_conv t = tu_of(c);
    tu_conv2d_ref(&t, f->x.data, w, b, f->want, f->g.OH, f->g.OW);
    int64_t nx = dyn_tensor_numel(&f->x), nw = dyn_tensor_numel(&l->params[0].value);
    float *ax = malloc((size_t)nx * sizeof(float)), *aw = malloc((size_t)nw * sizeof(float));
    float *ab = b ? malloc((size_t)c->cout * sizeof(float)) : NULL;
    for (int64_t i = 0; i < nx; i++) ax[i] = fabsf(f->x.data[i]);
    for (int64_t i = 0; i < nw; i++) aw[i] = fabsf(w[i]);
    for (int i = 0; b && i < c->cout; i++) ab[i] = fabsf(b[i]);
    tu_conv2d_ref(&t, ax, aw, ab, f->absum, f->g.OH, f->g.OW);
    free(ax);
    free(aw);
    free(ab);
}

static void fixture_init(fixture *f, const dcase *c, uint64_t seed) {
    char a[512];
    tu_conv t = tu_of(c);
    f->l = mk(tu_conv_attrs(&t, c->bias, a, sizeof a));
    f->g = geom(c);
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    f->l->ops->init(f->l, &r);
    ck_assert_int_eq(f->l->ops->prepare(f->l, NULL), 0);
    int64_t xs[4] = {c->n, c->cin, c->h, c->w};
    ck_assert_int_eq(dyn_tensor_init(&f->x, 4, xs, NULL), 0);
    tu_fill_uniform(f->x.data, dyn_tensor_numel(&f->x), &r, -1.0f, 1.0f);
    f->ny = (int64_t)c->n * c->cout * f->g.OH * f->g.OW;
    f->want = malloc((size_t)f->ny * sizeof(double));
    f->absum = malloc((size_t)f->ny * sizeof(double));
    ref_fill(f, c);
}

static void fixture_free(fixture *f) {
    dyn_layer_free(f->l);
    dyn_tensor_release(&f->x);
    free(f->want);
    free(f->absum);
}

/* Inference forward of f's layer (fresh NaN-poisoned scratch), checked against the reference
 * within the stated bound. */
static void check_forward(fixture *f, const char *what) {
    dyn_shape in = dyn_tensor_shape(&f->x), out;
    ck_assert_int_eq(f->l->ops->infer(f->l, &in, &out, NULL), 0);
    dyn_tensor y;
    ck_assert_int_eq(dyn_tensor_init_shape(&y, &out, NULL), 0);
    ck_assert_int_eq(dyn_tensor_numel(&y), f->ny);
    /* The scratch scratch() asks for, then a guard band oneDNN's code (not instrumented by the
     * sanitizers) must leave alone. */
    size_t ns = f->l->ops->scratch(f->l, &in, 0);
    float *scr = dyn_alloc((ns + 256) * sizeof(float));
    for (size_t i = 0; i < ns; i++) scr[i] = NAN;
    for (size_t i = ns; i < ns + 256; i++) scr[i] = 12345.0f;
    for (int64_t i = 0; i < f->ny; i++) y.data[i] = NAN;
    f->l->ops->forward(f->l, &f->x, &y, scr, 0);
    for (size_t i = ns; i < ns + 256; i++)
        ck_assert_msg(scr[i] == 12345.0f, "%s: wrote past its scratch (float %zu of %zu)", what, i,
                      ns);
    double worst = 0;
    int64_t at = -1;
    for (int64_t i = 0; i < f->ny; i++) {
        double e = fabs((double)y.data[i] - f->want[i]) / (1.0 + f->absum[i]);
        if (!(e <= worst)) worst = e, at = i; /* NaN counts as the worst */
    }
    ck_assert_msg(worst <= 1e-5, "%s: output %lld is %g, want %g (error %g of 1 + A)", what,
                  (long long)at, at >= 0 ? y.data[at] : 0.0, at >= 0 ? f->want[at] : 0.0, worst);
    dyn_free(scr);
    dyn_tensor_release(&y);
}

static const dyn_conv_impl impls[] = {DYN_CONV_IM2COL, DYN_CONV_DNNL, DYN_CONV_DNNL_NCHW,
                                      DYN_CONV_AUTO};

START_TEST(test_dnnl_vs_ref) {
    const dcase *c = &cases[_i];
    fixture f;
    fixture_init(&f, c, 500 + (uint64_t)_i);
    dyn_conv_impl_set(DYN_CONV_AUTO);
    for (int th = 1; th <= 2; th++) {
        dyn_threads_set(th);
        for (size_t k = 0; k < DYN_ARRAY_LEN(impls); k++) {
            dyn_conv_impl_set(impls[k]);
            char what[96];
            snprintf(what, sizeof what, "case %d, %s, %d thread(s)", _i,
                     dyn_conv_impl_name(impls[k]), th);
            check_forward(&f, what);
            check_forward(&f, what); /* again: the cached primitive */
        }
    }
    dyn_conv_impl_set(DYN_CONV_AUTO);
    fixture_free(&f);
}
END_TEST

/* The oneDNN variants run oneDNN (not a silent fallback to im2col): the cache hands out an
 * entry for each case, and oneDNN names its implementation. The blocked variant takes a direct
 * JIT kernel (jit:* or brgconv:*, not gemm:* or ref:*) for the ResNet-style 3x3 on CPUs with
 * AVX2 at least. */
START_TEST(test_dnnl_really_runs) {
    for (size_t i = 0; i < DYN_ARRAY_LEN(cases); i++) {
        fixture f;
        fixture_init(&f, &cases[i], 700 + i);
        dyn_dnnl_cache *c = dyn__dnnl_cache_new(cases[i].groups, cases[i].cout, cases[i].bias);
        ck_assert_ptr_nonnull(c);
        for (int v = DYN_CONV_DNNL; v <= DYN_CONV_DNNL_NCHW; v++) {
            dyn_err err = {0};
            dyn_dnnl_conv *e = dyn__dnnl_acquire(c, &f.g, (dyn_conv_impl)v,
                                                 f.l->params[0].value.data, &err);
            ck_assert_msg(e != NULL, "case %zu, %s: %s", i, dyn_conv_impl_name(v), err.msg);
            ck_assert_msg(strlen(dyn__dnnl_impl_str(e)) > 0, "case %zu: no impl name", i);
            if (i == 0 && v == DYN_CONV_DNNL && dyn_isa() >= DYN_ISA_AVX2)
                ck_assert_msg(strncmp(dyn__dnnl_impl_str(e), "ref", 3) &&
                                  strncmp(dyn__dnnl_impl_str(e), "gemm", 4),
                              "blocked 3x3 ran %s, not a direct JIT kernel",
                              dyn__dnnl_impl_str(e));
            dyn__dnnl_release(c, e, 1);
        }
        dyn__dnnl_cache_free(c);
        fixture_free(&f);
    }
}
END_TEST

/* Two callers of one shape at once get two entries, each correct; past DYN_DNNL_CACHE_MAX
 * entries acquire says no and the layer still computes (im2col). */
START_TEST(test_dnnl_cache_entries) {
    const dcase *dc = &cases[0];
    fixture f;
    fixture_init(&f, dc, 900);
    const float *w = f.l->params[0].value.data, *b = f.l->params[1].value.data;
    dyn_dnnl_cache *c = dyn__dnnl_cache_new(dc->groups, dc->cout, dc->bias);
    dyn_dnnl_conv *e1 = dyn__dnnl_acquire(c, &f.g, DYN_CONV_DNNL, w, NULL);
    dyn_dnnl_conv *e2 = dyn__dnnl_acquire(c, &f.g, DYN_CONV_DNNL, w, NULL);
    ck_assert_ptr_nonnull(e1);
    ck_assert_ptr_nonnull(e2);
    ck_assert_ptr_ne(e1, e2);
    /* One reordered copy of the weights serves both (blocked weights: not the user's layout). */
    const size_t wbytes = dyn__dnnl_weight_bytes(c);
    ck_assert_uint_eq(wbytes, (size_t)dyn_tensor_numel(&f.l->params[0].value) * sizeof(float));
    float *y1 = malloc((size_t)f.ny * sizeof(float)), *y2 = malloc((size_t)f.ny * sizeof(float));
    float *act = dyn_alloc(dyn__dnnl_act_floats(&f.g, dc->cout) * sizeof(float));
    dyn__dnnl_forward(e1, f.x.data, b, y1, act);
    dyn__dnnl_forward(e2, f.x.data, b, y2, act);
    dyn_free(act);
    ck_assert_int_eq(memcmp(y1, y2, (size_t)f.ny * sizeof(float)), 0);
    for (int64_t i = 0; i < f.ny; i++)
        ck_assert_double_le(fabs(y1[i] - f.want[i]), 1e-5 * (1 + f.absum[i]));
    free(y1);
    free(y2);
    dyn__dnnl_release(c, e1, 1);
    dyn__dnnl_release(c, e2, 1);
    /* Released: the next acquire reuses one of them. */
    dyn_dnnl_conv *e3 = dyn__dnnl_acquire(c, &f.g, DYN_CONV_DNNL, w, NULL);
    ck_assert(e3 == e1 || e3 == e2);
    dyn__dnnl_release(c, e3, 1);
    /* Fill the cache: held entries of one shape until acquire refuses. */
    dyn_dnnl_conv *held[DYN_DNNL_CACHE_MAX + 1];
    int nheld = 0;
    while (nheld <= DYN_DNNL_CACHE_MAX &&
           (held[nheld] = dyn__dnnl_acquire(c, &f.g, DYN_CONV_DNNL, w, NULL)))
        nheld++;
    ck_assert_int_eq(nheld, DYN_DNNL_CACHE_MAX);
    ck_assert_uint_eq(dyn__dnnl_weight_bytes(c), wbytes);
    /* Entries dropped (keep = 0, what AUTO does with the variants it did not choose): the
     * last one frees the copy. */
    for (int i = 0; i < nheld; i++) {
        ck_assert_uint_eq(dyn__dnnl_weight_bytes(c), wbytes);
        dyn__dnnl_release(c, held[i], 0);
    }
    ck_assert_uint_eq(dyn__dnnl_weight_bytes(c), 0);
    dyn__dnnl_cache_free(c);
    /* A layer whose cache is full of other batch sizes still answers right. */
    dyn_conv_impl_set(DYN_CONV_DNNL);
    for (int n = 2; n < 2 + DYN_DNNL_CACHE_MAX; n++) {
        dyn_conv_geom g = f.g;
        g.N = n;
        dyn_tensor xx;
        int64_t xs[4] = {n, dc->cin, dc->h, dc->w};
        ck_assert_int_eq(dyn_tensor_init(&xx, 4, xs, NULL), 0);
        int64_t ys[4] = {n, dc->cout, g.OH, g.OW};
        dyn_tensor yy;
        ck_assert_int_eq(dyn_tensor_init(&yy, 4, ys, NULL), 0);
        dyn_shape in = dyn_tensor_shape(&xx);
        float *scr = dyn_alloc_zero(f.l->ops->scratch(f.l, &in, 0) * sizeof(float));
        f.l->ops->forward(f.l, &xx, &yy, scr, 0);
        dyn_free(scr);
        dyn_tensor_release(&xx);
        dyn_tensor_release(&yy);
    }
    check_forward(&f, "batch 1 after the cache filled with other batches");
    dyn_conv_impl_set(DYN_CONV_AUTO);
    fixture_free(&f);
}
END_TEST

/* New weights + prepare(): the next forward of every oneDNN variant uses them (the reordered
 * copy of the old ones is dropped). */
START_TEST(test_dnnl_prepare_after_update) {
    for (size_t k = 1; k < DYN_ARRAY_LEN(impls); k++) {
        const dcase *dc = &cases[3];
        fixture f;
        fixture_init(&f, dc, 1100 + k);
        dyn_conv_impl_set(impls[k]);
        check_forward(&f, "before the update");
        dyn_tensor *w = &f.l->params[0].value;
        for (int64_t i = 0; i < dyn_tensor_numel(w); i++) w->data[i] = -0.5f * w->data[i] + 0.01f;
        ck_assert_int_eq(f.l->ops->prepare(f.l, NULL), 0);
        ref_fill(&f, dc);
        check_forward(&f, "after the update and prepare");
        fixture_free(&f);
    }
    dyn_conv_impl_set(DYN_CONV_AUTO);
}
END_TEST

/* Linear layers: oneDNN's inner product against the double reference (same bound as the
 * convolutions, A = sum |w x| + |b|), every implementation, rows 1, 8 and 197 (a ViT's tokens),
 * 1 and 2 threads; it really runs oneDNN; new weights + prepare() are used. */
static void linear_ref(const dyn_layer *l, const float *x, int rows, int in, int out,
                       double *want, double *absum) {
    const float *w = l->params[0].value.data, *b = l->params[1].value.data;
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double s = b[o], a = fabs(b[o]);
            for (int i = 0; i < in; i++) {
                const double t = (double)w[(int64_t)o * in + i] * x[(int64_t)r * in + i];
                s += t;
                a += fabs(t);
            }
            want[(int64_t)r * out + o] = s;
            absum[(int64_t)r * out + o] = a;
        }
}

static void linear_check(dyn_layer *l, const float *x, int rows, int in, int out,
                         const double *want, const double *absum, const char *what) {
    int64_t ys[2] = {rows, out}, xs[2] = {rows, in};
    dyn_tensor xt = dyn_tensor_view((float *)x, 2, xs), y;
    ck_assert_int_eq(dyn_tensor_init(&y, 2, ys, NULL), 0);
    for (int64_t i = 0; i < (int64_t)rows * out; i++) y.data[i] = NAN;
    l->ops->forward(l, &xt, &y, NULL, 0);
    for (int64_t i = 0; i < (int64_t)rows * out; i++)
        ck_assert_msg(fabs(y.data[i] - want[i]) <= 1e-5 * (1 + absum[i]),
                      "%s: y[%lld] = %g, want %g", what, (long long)i, y.data[i], want[i]);
    dyn_tensor_release(&y);
}

static const int linear_shapes[][2] = {{512, 1000}, {384, 1536}, {37, 11}, {1, 5}};

START_TEST(test_dnnl_linear) {
    static const int rows[] = {1, 8, 197};
    {
        const int (*shapes)[2] = linear_shapes;
        const size_t s = (size_t)_i;
        const int in = shapes[s][0], out = shapes[s][1];
        char a[128];
        snprintf(a, sizeof a, "{\"in\": %d, \"out\": %d}", in, out);
        json_t *j = json_loads(a, 0, NULL);
        dyn_layer *l = dyn_layer_create("linear", "t", j, NULL);
        json_decref(j);
        ck_assert_ptr_nonnull(l);
        dyn_rng r;
        dyn_rng_seed(&r, 40 + s);
        l->ops->init(l, &r);
        ck_assert_int_eq(l->ops->prepare(l, NULL), 0);
        float *x = malloc((size_t)197 * in * sizeof(float));
        tu_fill_uniform(x, (int64_t)197 * in, &r, -1, 1);
        double *want = malloc((size_t)197 * out * sizeof(double));
        double *absum = malloc((size_t)197 * out * sizeof(double));
        for (size_t ri = 0; ri < DYN_ARRAY_LEN(rows); ri++) {
            linear_ref(l, x, rows[ri], in, out, want, absum);
            for (int th = 1; th <= 2; th++) {
                dyn_threads_set(th);
                for (size_t k = 0; k < DYN_ARRAY_LEN(impls); k++) {
                    char what[96];
                    snprintf(what, sizeof what, "linear %dx%d, %d rows, %s, %d thread(s)", in,
                             out, rows[ri], dyn_conv_impl_name(impls[k]), th);
                    dyn_conv_impl_set(impls[k]);
                    linear_check(l, x, rows[ri], in, out, want, absum, what);
                    linear_check(l, x, rows[ri], in, out, want, absum, what);
                }
            }
        }
        /* oneDNN really makes an inner product for it */
        dyn_dnnl_cache *c = dyn__dnnl_cache_new_linear(out, 1);
        const dyn_conv_geom g = {.N = 8, .C = in, .H = 1, .W = 1, .KH = 1, .KW = 1, .SH = 1,
                                 .SW = 1, .DH = 1, .DW = 1, .OH = 1, .OW = 1};
        dyn_err err = {0};
        dyn_dnnl_conv *e = dyn__dnnl_acquire(c, &g, DYN_CONV_DNNL, l->params[0].value.data, &err);
        ck_assert_msg(e != NULL, "linear %dx%d: %s", in, out, err.msg);
        ck_assert(strlen(dyn__dnnl_impl_str(e)) > 0);
        dyn__dnnl_release(c, e, 1);
        dyn__dnnl_cache_free(c);
        /* new weights, prepare(), and oneDNN uses them */
        dyn_conv_impl_set(DYN_CONV_DNNL);
        float *w = l->params[0].value.data;
        for (int64_t i = 0; i < (int64_t)in * out; i++) w[i] = 0.5f - w[i];
        ck_assert_int_eq(l->ops->prepare(l, NULL), 0);
        linear_ref(l, x, 8, in, out, want, absum);
        linear_check(l, x, 8, in, out, want, absum, "linear after an update and prepare");
        dyn_conv_impl_set(DYN_CONV_AUTO);
        free(want);
        free(absum);
        free(x);
        dyn_layer_free(l);
    }
}
END_TEST

START_TEST(test_dnnl_impl_names) {
    for (int m = DYN_CONV_AUTO; m <= DYN_CONV_DNNL_NCHW; m++) {
        dyn_conv_impl back;
        ck_assert_int_eq(dyn_conv_impl_parse(dyn_conv_impl_name(m), &back), 0);
        ck_assert_int_eq(back, m);
    }
    dyn_conv_impl x;
    ck_assert_int_eq(dyn_conv_impl_parse("onednn", &x), DYN_EINVAL);
    ck_assert_int_eq(dyn_conv_impl_parse(NULL, &x), DYN_EINVAL);
}
END_TEST

static Suite *dnnl_suite(void) {
    Suite *s = suite_create("dnnl");
    TCase *tc = tcase_create("core");
    /* Two-thread runs on a busy shared machine can take seconds (OpenMP waits at barriers). */
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_dnnl_vs_ref, 0, (int)DYN_ARRAY_LEN(cases));
    tcase_add_test(tc, test_dnnl_really_runs);
    tcase_add_test(tc, test_dnnl_cache_entries);
    tcase_add_test(tc, test_dnnl_prepare_after_update);
    tcase_add_loop_test(tc, test_dnnl_linear, 0, (int)DYN_ARRAY_LEN(linear_shapes));
    tcase_add_test(tc, test_dnnl_impl_names);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(dnnl_suite)
