/* test_perf_paths.c — the fast inference paths against plain references: im2col (per-row
 * ranges) against the tap-by-tap definition, the direct convolution and the chunked
 * im2col + sgemm convolution (dense conv2d and materialized dyn_conv2d) against naive loops and
 * against the training forward, and the vectorized 2×2 max pooling (values and argmax, ties,
 * NaN, odd sizes) against a naive scan. */
#include <math.h>
#include <string.h>

#include "cpu/im2col.h"
#include "testutil.h"

static dyn_layer *mk(const char *op, const char *attrs_json) { return tu_layer(op, attrs_json); }

/* Forward of l on x [n, c, h, w] (fresh scratch of the mode's size); returns y (malloc). */
static float *fwd(dyn_layer *l, const dyn_tensor *x, int training, dyn_shape *out) {
    dyn_shape in = dyn_tensor_shape(x);
    ck_assert_int_eq(l->ops->infer(l, &in, out, NULL), 0);
    dyn_tensor y;
    ck_assert_int_eq(dyn_tensor_init_shape(&y, out, NULL), 0);
    size_t ns = l->ops->scratch ? l->ops->scratch(l, &in, training) : 0;
    float *scr = ns ? dyn_alloc_zero(ns * sizeof(float)) : NULL;
    /* Poison the scratch: the fast paths must not read what they did not write. */
    for (size_t i = 0; i < ns; i++) scr[i] = NAN;
    l->ops->forward(l, x, &y, scr, training);
    int64_t n = dyn_tensor_numel(&y);
    float *r = malloc((size_t)n * sizeof(float));
    memcpy(r, y.data, (size_t)n * sizeof(float));
    dyn_free(scr);
    dyn_tensor_release(&y);
    return r;
}

/* ---- im2col ---- */

START_TEST(test_im2col_vs_ref) {
    /* N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW */
    static const int cases[][12] = {
        {2, 1, 28, 28, 5, 5, 1, 1, 2, 2, 1, 1}, {3, 6, 14, 14, 5, 5, 1, 1, 0, 0, 1, 1},
        {2, 3, 9, 7, 3, 3, 2, 2, 1, 1, 1, 1},   {1, 2, 5, 6, 3, 2, 1, 3, 2, 1, 2, 1},
        {2, 2, 4, 4, 5, 5, 1, 1, 2, 2, 1, 1},   {1, 1, 3, 3, 3, 3, 1, 1, 4, 4, 1, 1},
        {2, 2, 8, 11, 3, 3, 3, 2, 3, 5, 2, 3},  {1, 4, 1, 9, 1, 3, 1, 2, 0, 1, 1, 1},
    };
    dyn_rng r;
    dyn_rng_seed(&r, 7);
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const int *c = cases[i];
        dyn_conv_geom g = {.N = c[0], .C = c[1], .H = c[2], .W = c[3], .KH = c[4], .KW = c[5],
                           .SH = c[6], .SW = c[7], .PH = c[8], .PW = c[9], .DH = c[10],
                           .DW = c[11]};
        ck_assert_int_eq(dyn_conv_geom_out(&g), 0);
        int64_t nx = (int64_t)g.N * g.C * g.H * g.W;
        int64_t nc = (int64_t)g.C * g.KH * g.KW * g.N * g.OH * g.OW;
        float *x = malloc((size_t)nx * sizeof(float));
        float *a = malloc((size_t)nc * sizeof(float)), *b = malloc((size_t)nc * sizeof(float));
        tu_fill_uniform(x, nx, &r, -1.0f, 1.0f);
        for (int64_t k = 0; k < nc; k++) a[k] = b[k] = NAN;
        dyn_im2col(&g, x, a);
        dyn__im2col_ref(&g, x, b);
        ck_assert_msg(memcmp(a, b, (size_t)nc * sizeof(float)) == 0, "im2col case %zu differs",
                      i);
        free(x);
        free(a);
        free(b);
    }
}
END_TEST

/* ---- convolution ---- */

typedef struct cv {
    int n, cin, h, w, cout, k, s, p, d, groups, bias;
} cv;

/* Cases for the direct path (stride 1, few channels, OW >= 8: tails 0–7, cout 1–17), the
 * chunked sgemm path (more channels; batches that split into several chunks, one of one
 * image) and the im2col path of the rest (stride 2, dilation, groups, OW < 8). */
static const cv cv_cases[] = {
    {5, 1, 28, 28, 6, 5, 1, 2, 1, 1, 1},  {7, 6, 14, 14, 16, 5, 1, 0, 1, 1, 1},
    {3, 3, 9, 13, 17, 3, 1, 1, 1, 1, 0},  {2, 8, 8, 8, 1, 1, 1, 0, 1, 1, 1},
    {1, 2, 12, 15, 9, 3, 1, 2, 1, 1, 1},  {5, 16, 16, 16, 12, 3, 1, 0, 1, 1, 1},
    {3, 32, 20, 20, 8, 3, 1, 1, 1, 1, 0}, {4, 4, 11, 11, 6, 3, 2, 1, 1, 1, 1},
    {2, 3, 10, 12, 5, 3, 1, 2, 2, 1, 1},  {3, 4, 10, 10, 6, 3, 1, 1, 1, 2, 1},
    {2, 2, 6, 7, 3, 3, 1, 1, 1, 1, 1},
};

static void conv_naive(const cv *c, const float *x, const float *w, const float *b, double *y,
                       int oh, int ow) {
    tu_conv t = {c->n, c->cin, c->h, c->w, c->cout, c->k, c->k,
                 c->s, c->s,   c->p, c->p, c->d, c->d, c->groups};
    tu_conv2d_ref(&t, x, w, b, y, oh, ow);
}

static void check_close(const float *got, const double *want, int64_t n, double tol,
                        const char *what, int i) {
    for (int64_t k = 0; k < n; k++)
        ck_assert_msg(fabs((double)got[k] - want[k]) <= tol * (1.0 + fabs(want[k])),
                      "%s case %d [%lld]: got %.7g want %.7g", what, i, (long long)k,
                      (double)got[k], want[k]);
}

START_TEST(test_conv2d_inference_paths) {
    const cv *c = &cv_cases[_i];
    char a[512];
    snprintf(a, sizeof a,
             "{\"in_channels\": %d, \"out_channels\": %d, \"kernel\": %d, \"stride\": %d, "
             "\"padding\": %d, \"dilation\": %d, \"groups\": %d, \"bias\": %d}",
             c->cin, c->cout, c->k, c->s, c->p, c->d, c->groups, c->bias);
    dyn_layer *l = mk("conv2d", a);
    dyn_rng r;
    dyn_rng_seed(&r, 11 + (uint64_t)_i);
    l->ops->init(l, &r);
    if (c->bias) tu_fill_uniform(l->params[1].value.data, c->cout, &r, -1.0f, 1.0f);
    int64_t xs[4] = {c->n, c->cin, c->h, c->w};
    dyn_tensor x;
    ck_assert_int_eq(dyn_tensor_init(&x, 4, xs, NULL), 0);
    tu_fill_uniform(x.data, dyn_tensor_numel(&x), &r, -1.0f, 1.0f);
    dyn_shape out;
    float *yi = fwd(l, &x, 0, &out), *yt = fwd(l, &x, 1, &out);
    int64_t ny = dyn_shape_numel(&out);
    double *want = malloc((size_t)ny * sizeof(double));
    conv_naive(c, x.data, l->params[0].value.data, c->bias ? l->params[1].value.data : NULL, want,
               (int)out.d[2], (int)out.d[3]);
    check_close(yi, want, ny, 1e-5, "conv2d inference", _i);
    check_close(yt, want, ny, 1e-5, "conv2d training", _i);
    /* Batch 1 of the same input gives the batch's first image. */
    dyn_tensor x1 = dyn_tensor_view(x.data, 4, (int64_t[]){1, c->cin, c->h, c->w});
    dyn_shape out1;
    float *y1 = fwd(l, &x1, 0, &out1);
    check_close(y1, want, dyn_shape_numel(&out1), 1e-5, "conv2d batch 1", _i);
    free(y1);
    free(yi);
    free(yt);
    free(want);
    dyn_tensor_release(&x);
    dyn_layer_free(l);
}
END_TEST

/* dyn_conv2d, materialized: the inference forward (direct or chunked sgemm) equals the
 * training forward (one im2col + one sgemm over the batch) and the naive conv of its kernel. */
START_TEST(test_dyn_conv2d_inference_paths) {
    const cv *c = &cv_cases[_i];
    if (c->groups != 1) return;
    char a[512];
    snprintf(a, sizeof a,
             "{\"in_channels\": %d, \"out_channels\": %d, \"kernel\": %d, \"stride\": %d, "
             "\"padding\": %d, \"dilation\": %d, \"H\": 2, \"q\": 3, \"exec\": \"materialized\", "
             "\"bias\": %d}",
             c->cin, c->cout, c->k, c->s, c->p, c->d, c->bias);
    dyn_layer *l = mk("dyn_conv2d", a);
    dyn_rng r;
    dyn_rng_seed(&r, 21 + (uint64_t)_i);
    l->ops->init(l, &r);
    if (c->bias) tu_fill_uniform(l->params[4].value.data, c->cout, &r, -1.0f, 1.0f);
    ck_assert_int_eq(l->ops->prepare(l, NULL), 0);
    int64_t xs[4] = {c->n, c->cin, c->h, c->w};
    dyn_tensor x;
    ck_assert_int_eq(dyn_tensor_init(&x, 4, xs, NULL), 0);
    tu_fill_uniform(x.data, dyn_tensor_numel(&x), &r, -1.0f, 1.0f);
    dyn_shape out;
    float *yi = fwd(l, &x, 0, &out), *yt = fwd(l, &x, 1, &out);
    int64_t ny = dyn_shape_numel(&out);
    double *want = malloc((size_t)ny * sizeof(double));
    for (int64_t k = 0; k < ny; k++) want[k] = yt[k];
    check_close(yi, want, ny, 1e-5, "dyn_conv2d inference vs training", _i);
    free(yi);
    free(yt);
    free(want);
    dyn_tensor_release(&x);
    dyn_layer_free(l);
}
END_TEST

/* ---- 2×2 max pooling ---- */

/* First maximum in row-major window order; a NaN wins (the first NaN). */
static void maxpool_naive(const float *x, int planes, int h, int w, int k, int s, int p, int oh,
                          int ow, float *y, int32_t *arg) {
    for (int pl = 0; pl < planes; pl++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                int bi = -1;
                for (int r = 0; r < k; r++)
                    for (int t = 0; t < k; t++) {
                        int iy = oy * s - p + r, ix = ox * s - p + t;
                        if (iy < 0 || iy >= h || ix < 0 || ix >= w) continue;
                        int i = iy * w + ix;
                        float v = x[pl * h * w + i];
                        if (bi >= 0 && isnan(x[pl * h * w + bi])) continue;
                        if (bi < 0 || isnan(v) || v > x[pl * h * w + bi]) bi = i;
                    }
                y[(pl * oh + oy) * ow + ox] = x[pl * h * w + bi];
                arg[(pl * oh + oy) * ow + ox] = bi;
            }
}

START_TEST(test_maxpool_2x2_vs_naive) {
    /* n, c, h, w, ceil_mode */
    static const int cases[][5] = {{3, 6, 28, 28, 0}, {2, 16, 10, 10, 0}, {1, 2, 9, 37, 1},
                                   {2, 3, 7, 35, 0},  {1, 1, 2, 2, 0},    {2, 2, 5, 17, 1},
                                   {1, 4, 40, 66, 0}};
    dyn_rng r;
    dyn_rng_seed(&r, 5);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int *c = cases[ci];
        char a[128];
        snprintf(a, sizeof a, "{\"kernel\": 2, \"ceil_mode\": %d}", c[4]);
        dyn_layer *l = mk("maxpool2d", a);
        for (int style = 0; style < 3; style++) { /* random; coarse values (ties); NaNs */
            int64_t xs[4] = {c[0], c[1], c[2], c[3]};
            dyn_tensor x;
            ck_assert_int_eq(dyn_tensor_init(&x, 4, xs, NULL), 0);
            int64_t nx = dyn_tensor_numel(&x);
            tu_fill_uniform(x.data, nx, &r, -1.0f, 1.0f);
            if (style >= 1)
                for (int64_t i = 0; i < nx; i++) x.data[i] = floorf(x.data[i] * 2.0f);
            if (style == 2)
                for (int64_t i = 0; i < nx; i += 29) x.data[i] = NAN;
            dyn_shape in = dyn_tensor_shape(&x), out;
            ck_assert_int_eq(l->ops->infer(l, &in, &out, NULL), 0);
            dyn_tensor y;
            ck_assert_int_eq(dyn_tensor_init_shape(&y, &out, NULL), 0);
            int64_t ny = dyn_tensor_numel(&y);
            size_t ns = l->ops->scratch(l, &in, 0);
            ck_assert_uint_eq(ns, (size_t)ny);
            float *scr = dyn_alloc_zero(ns * sizeof(float));
            l->ops->forward(l, &x, &y, scr, 0);
            float *wy = malloc((size_t)ny * sizeof(float));
            int32_t *wa = malloc((size_t)ny * sizeof(int32_t));
            maxpool_naive(x.data, c[0] * c[1], c[2], c[3], 2, 2, 0, (int)out.d[2],
                          (int)out.d[3], wy, wa);
            const int32_t *ga = (const int32_t *)scr;
            for (int64_t i = 0; i < ny; i++) {
                ck_assert_msg(memcmp(&wy[i], &y.data[i], sizeof(float)) == 0 ||
                                  (isnan(wy[i]) && isnan(y.data[i])),
                              "case %zu style %d y[%lld]: got %g want %g", ci, style,
                              (long long)i, (double)y.data[i], (double)wy[i]);
                ck_assert_msg(ga[i] == wa[i], "case %zu style %d argmax[%lld]: got %d want %d",
                              ci, style, (long long)i, ga[i], wa[i]);
            }
            free(wy);
            free(wa);
            dyn_free(scr);
            dyn_tensor_release(&y);
            dyn_tensor_release(&x);
        }
        dyn_layer_free(l);
    }
}
END_TEST

static Suite *perf_paths_suite(void) {
    Suite *s = suite_create("perf_paths");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_im2col_vs_ref);
    tcase_add_loop_test(tc, test_conv2d_inference_paths, 0,
                        (int)(sizeof cv_cases / sizeof cv_cases[0]));
    tcase_add_loop_test(tc, test_dyn_conv2d_inference_paths, 0,
                        (int)(sizeof cv_cases / sizeof cv_cases[0]));
    tcase_add_test(tc, test_maxpool_2x2_vs_naive);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(perf_paths_suite)
