/* test_fit_riem.c — the RieM-style form (engine/convert/fit_riem.h): floats and budgets, the
 * fit's loss against the formula evaluated directly (materialize), its gradient against finite
 * differences, and the fit on a matrix the form can represent. */
#include <math.h>
#include <string.h>

#include "convert/baseline.h"
#include "convert/fit_riem.h"
#include "cpu/dnnl_conv.h"
#include "io/model_file.h"
#include "testutil.h"

#include <unistd.h>

START_TEST(riem_floats_and_budget) {
    /* q(m + nk) + 6Dq + 6D + D + 1 */
    ck_assert_int_eq(dyn_riem_floats(120, 400, 22, 4), 22 * 520 + 24 * 22 + 24 + 4 + 1);
    ck_assert_int_eq(dyn_riem_q_for_floats(120, 400, 4, 12104), 22);
    ck_assert_int_le(dyn_riem_floats(120, 400, 22, 4), 12104);
    ck_assert_int_gt(dyn_riem_floats(120, 400, 23, 4), 12104);
    ck_assert_int_eq(dyn_riem_q_for_floats(16, 150, 4, 100), 0);
}
END_TEST

/* A random form of the given size (θ drawn at a scale where the sigmoids are not saturated). */
static void random_form(dyn_riem *r, int m, int nk, int q, int D, uint64_t seed) {
    memset(r, 0, sizeof *r);
    r->m = m;
    r->nk = nk;
    r->q = q;
    r->D = D;
    r->scale = 0.7f;
    const int64_t n = dyn_riem_floats(m, nk, q, D);
    r->theta = malloc((size_t)n * sizeof(float));
    dyn_rng g;
    dyn_rng_seed(&g, seed);
    for (int64_t i = 0; i < n; i++) r->theta[i] = 0.8f * dyn_rng_normal(&g);
}

/* The fit's fast loss (polynomial exp, fused loop) equals mean((Ŵ − W)²)/s² with Ŵ from the
 * direct double-precision formula, and W = Ŵ gives 0. */
START_TEST(riem_loss_matches_formula) {
    const int m = 7, nk = 11, q = 3, D = 2;
    dyn_riem r;
    random_form(&r, m, nk, q, D, 4);
    float *w = malloc(sizeof(float) * m * nk), *wh = malloc(sizeof(float) * m * nk);
    dyn_riem_materialize(&r, wh);
    /* one entry by hand: Ŵ_00 = s(β₀ + Σ_d w_d Σ_c σ(A_c[d]·(x_0 + roll_c(y_0)) + b_c[d])) */
    const float *th = r.theta, *x = th, *y = th + m * q, *A = y + nk * q, *b = A + 6 * D * q,
                *wd = b + 6 * D, *b0 = wd + D;
    double acc = *b0;
    for (int c = 0; c < 6; c++)
        for (int d = 0; d < D; d++) {
            double z = b[c * D + d];
            for (int k = 0; k < q; k++) z += A[(c * D + d) * q + k] * (x[k] + y[(k + c) % q]);
            acc += wd[d] / (1 + exp(-z));
        }
    ck_assert_double_eq_tol(wh[0], 0.7 * acc, 1e-5);
    ck_assert_double_le(dyn_riem_loss(&r, wh, NULL), 1e-10);
    dyn_rng g;
    dyn_rng_seed(&g, 8);
    tu_fill_uniform(w, m * nk, &g, -1, 1);
    double ref = 0;
    for (int i = 0; i < m * nk; i++) ref += ((double)wh[i] - w[i]) * ((double)wh[i] - w[i]);
    ref /= (double)m * nk * 0.7 * 0.7;
    ck_assert_double_eq_tol(dyn_riem_loss(&r, w, NULL), ref, 1e-5 * ref);
    dyn_riem_free(&r);
    free(w);
    free(wh);
}
END_TEST

START_TEST(riem_gradient_matches_finite_differences) {
    const int m = 5, nk = 8, q = 3, D = 2;
    dyn_riem r;
    random_form(&r, m, nk, q, D, 11);
    float *w = malloc(sizeof(float) * m * nk);
    dyn_rng g;
    dyn_rng_seed(&g, 12);
    tu_fill_uniform(w, m * nk, &g, -1, 1);
    const int64_t n = dyn_riem_floats(m, nk, q, D);
    float *grad = malloc((size_t)n * sizeof(float));
    dyn_riem_loss(&r, w, grad);
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        const float h = 1e-2f, keep = r.theta[i];
        r.theta[i] = keep + h;
        const double lp = dyn_riem_loss(&r, w, NULL);
        r.theta[i] = keep - h;
        const double lm = dyn_riem_loss(&r, w, NULL);
        r.theta[i] = keep;
        const double fd = (lp - lm) / (2 * h);
        if (fabs(fd - grad[i]) > 1e-4 + 2e-2 * fmax(fabs(fd), fabs(grad[i]))) {
            printf("θ[%lld]: analytic %g, numeric %g\n", (long long)i, (double)grad[i], fd);
            bad++;
        }
    }
    ck_assert_int_eq(bad, 0);
    dyn_riem_free(&r);
    free(w);
    free(grad);
}
END_TEST

/* A matrix made by a form of the same size is fitted (from random states) to a small error; the
 * reported error is the materialized one; bad sizes and a raised cancel flag are refused. */
START_TEST(riem_fit_reduces_error) {
    const int m = 20, nk = 30, q = 2, D = 2;
    dyn_riem t;
    random_form(&t, m, nk, q, D, 21);
    float *w = malloc(sizeof(float) * m * nk), *wh = malloc(sizeof(float) * m * nk);
    dyn_riem_materialize(&t, w);
    dyn_riem_free(&t);
    dyn_riem_opts o = dyn_riem_opts_default();
    o.steps = 1500;
    o.restarts = 2;
    o.lr = 0.03f;
    dyn_riem r;
    double e = -1;
    dyn_err err = {0};
    ck_assert_int_eq(dyn_riem_fit(w, m, nk, q, D, &o, &r, &e, &err), 0);
    dyn_riem_materialize(&r, wh);
    ck_assert_double_eq_tol(e, dyn_rel_err(wh, w, m * nk), 1e-4);
    ck_assert_msg(e < 0.2, "relative error %g", e);
    dyn_riem_free(&r);
    ck_assert_int_eq(dyn_riem_fit(w, m, nk, 0, D, &o, &r, &e, &err), DYN_EINVAL);
    dyn_riem_free(&r);
    volatile int cancel = 1;
    o.cancel = &cancel;
    ck_assert_int_eq(dyn_riem_fit(w, m, nk, q, D, &o, &r, NULL, &err), DYN_ECANCEL);
    ck_assert_ptr_nonnull(r.theta);
    dyn_riem_free(&r);
    free(w);
    free(wh);
}
END_TEST

/* [Cout][Cin][K][K] -> [Cout·K][Cin·K]: element (o, i, r, t) at row o·K + r, column i·K + t;
 * the inverse undoes it. */
START_TEST(riem_conv_rows_layout) {
    const int m = 3, n = 2, K = 3, nk = n * K * K;
    float w[54], a[54], b[54];
    for (int i = 0; i < m * nk; i++) w[i] = (float)i;
    dyn_riem_conv_rows(w, m, n, K, 0, a);
    /* o = 2, i = 1, r = 0, t = 2 */
    ck_assert_float_eq(a[(2 * K + 0) * n * K + 1 * K + 2], w[2 * nk + 1 * K * K + 0 * K + 2]);
    ck_assert_float_eq(a[1], w[1]);
    ck_assert_float_eq(a[n * K], w[K]); /* row (0, 1) starts with (i 0, r 1, t 0) */
    dyn_riem_conv_rows(a, m, n, K, 1, b);
    ck_assert_int_eq(memcmp(b, w, sizeof w), 0);
}
END_TEST

/* A report marking the first of two linear layers converted: dyn_riem_model replaces that
 * weight by a fitted form (its error reported, below 1) and copies the rest. */
START_TEST(riem_model_replaces_converted_layers) {
    dyn_shape in = {.ndim = 1, .d = {12}};
    dyn_model *d = dyn_model_new(&in), *o = NULL;
    dyn_err err = {0};
    json_t *a = json_pack("{s:i, s:i}", "in", 12, "out", 10);
    ck_assert(dyn_model_add_seq(d, dyn_layer_create("linear", "a", a, &err), &err) >= 0);
    json_decref(a);
    a = json_pack("{s:i, s:i}", "in", 10, "out", 4);
    ck_assert(dyn_model_add_seq(d, dyn_layer_create("linear", "b", a, &err), &err) >= 0);
    json_decref(a);
    dyn_model_init(d, 5);
    dyn_convert_layer L[2];
    memset(L, 0, sizeof L);
    snprintf(L[0].name, sizeof L[0].name, "a");
    snprintf(L[1].name, sizeof L[1].name, "b");
    L[0].converted = 1;
    L[0].m = 10;
    L[0].n = 12;
    L[0].K = 1;
    L[0].H = 4;
    L[0].q = 1; /* 4·22 + 4 + 1 = 93 floats: q = (93 − 8) / (22 + 6) = 3 with D = 1 */
    dyn_convert_report rep = {.nlayers = 2, .layers = L};
    dyn_riem_opts ro = dyn_riem_opts_default();
    ro.steps = 300;
    ro.restarts = 1;
    double e[2];
    ck_assert_int_eq(dyn_riem_model(d, &rep, 1, &ro, e, &o, &err), 0);
    const float *w0 = dyn_layer_param(d->nodes[0].layer, "weight")->value.data;
    const float *w1 = dyn_layer_param(o->nodes[0].layer, "weight")->value.data;
    ck_assert_double_eq_tol(e[0], dyn_rel_err(w1, w0, 120), 1e-6);
    ck_assert(e[0] > 0 && e[0] < 1);
    ck_assert_double_eq(e[1], -1);
    ck_assert_int_eq(memcmp(dyn_layer_param(o->nodes[1].layer, "weight")->value.data,
                            dyn_layer_param(d->nodes[1].layer, "weight")->value.data,
                            40 * sizeof(float)), 0);
    dyn_model_free(o);
    /* as riem layers: the same error, fewer stored floats than the dense layer */
    double e2[2];
    ck_assert_int_eq(dyn_riem_convert(d, &rep, 1, &ro, e2, &o, &err), 0);
    ck_assert_str_eq(o->nodes[0].layer->ops->name, "riem");
    ck_assert_str_eq(o->nodes[1].layer->ops->name, "linear");
    ck_assert_double_eq_tol(e2[0], e[0], 1e-6);
    dyn_layer_stats st[2], tot;
    dyn_model_stats(o, st, &tot);
    ck_assert_int_eq(st[0].stored_floats, dyn_riem_floats(10, 12, 3, 1) + 10);
    dyn_model_free(o);
    L[0].m = 9;
    ck_assert_int_eq(dyn_riem_convert(d, &rep, 1, &ro, e2, &o, &err), DYN_EINVAL);
    ck_assert_ptr_null(o);
    ck_assert_int_eq(dyn_riem_model(d, &rep, 1, &ro, e, &o, &err), DYN_EINVAL);
    ck_assert_ptr_null(o);
    dyn_model_free(d);
}
END_TEST

/* One-layer model around l (ownership moves), input shape in. */
static dyn_model *one_layer(dyn_layer *l, dyn_shape in) {
    dyn_model *m = dyn_model_new(&in);
    dyn_err err = {0};
    ck_assert_msg(dyn_model_add_seq(m, l, &err) >= 0, "%s", err.msg);
    ck_assert_int_eq(dyn_model_prepare(m, &err), 0);
    return m;
}

static void forward_of(dyn_model *m, const float *x, int batch, float *y, int64_t ny) {
    dyn_err err = {0};
    dyn_exec *e = dyn_exec_new(m, batch, 0, &err);
    ck_assert_msg(e, "%s", err.msg);
    memcpy(y, dyn_exec_forward(e, x, batch)->data, (size_t)ny * sizeof(float));
    dyn_exec_free(e);
}

/* Layer "riem" from a fit (linear and conv2d): its forward equals the base op run with the
 * materialized weight (the formula), and it survives a model file round trip; bad attributes are
 * refused. */
START_TEST(riem_layer_matches_materialized_and_saves) {
    dyn_err err = {0};
    dyn_rng g;
    dyn_rng_seed(&g, 31);
    for (int conv = 0; conv <= 1; conv++) {
        json_t *a = conv ? json_pack("{s:i, s:i, s:i, s:i}", "in_channels", 3, "out_channels", 4,
                                     "kernel", 3, "padding", 1)
                         : json_pack("{s:i, s:i}", "in", 12, "out", 10);
        dyn_layer *d = dyn_layer_create(conv ? "conv2d" : "linear", "L", a, &err);
        json_decref(a);
        ck_assert_msg(d, "%s", err.msg);
        dyn_model *dm = one_layer(d, conv ? (dyn_shape){.ndim = 3, .d = {3, 5, 5}}
                                          : (dyn_shape){.ndim = 1, .d = {12}});
        dyn_model_init(dm, 7);
        const int m = conv ? 4 : 10, n = conv ? 3 : 12, K = conv ? 3 : 1, nk = n * K * K;
        float *w = dyn_layer_param(d, "weight")->value.data, wr[108], wh[120];
        if (conv) dyn_riem_conv_rows(w, m, n, K, 0, wr);
        dyn_riem_opts o = dyn_riem_opts_default();
        o.steps = 200;
        o.restarts = 1;
        dyn_riem r;
        ck_assert_int_eq(dyn_riem_fit(conv ? wr : w, m * K, n * K, 2, 2, &o, &r, NULL, &err), 0);
        dyn_layer *rl = NULL;
        ck_assert_msg(dyn_riem_layer_from_fit(d, &r, &rl, &err) == 0, "%s", err.msg);
        ck_assert_str_eq(rl->ops->name, "riem");
        /* the dense reference: the base op with Ŵ (un-permuted for the conv) */
        if (conv) {
            dyn_riem_materialize(&r, wr);
            dyn_riem_conv_rows(wr, m, n, K, 1, wh);
        } else {
            dyn_riem_materialize(&r, wh);
        }
        memcpy(w, wh, (size_t)m * nk * sizeof(float));
        ck_assert_int_eq(dyn_model_prepare(dm, &err), 0);
        dyn_riem_free(&r);
        dyn_model *rm = one_layer(rl, dm->input);
        dyn_layer_stats st, tot;
        dyn_model_stats(rm, &st, &tot);
        ck_assert_int_eq(st.stored_floats, dyn_riem_floats(m * K, n * K, 2, 2) + m);
        const int in = conv ? 75 : 12, out = conv ? 100 : 10, B = 3;
        float x[225], y0[300], y1[300], y2[300];
        tu_fill_uniform(x, in * B, &g, -1, 1);
        forward_of(dm, x, B, y0, out * B);
        forward_of(rm, x, B, y1, out * B);
        ck_assert_double_le(tu_rel_err(y1, y0, out * B), 1e-5);
        char path[] = "/tmp/test_fit_riem_XXXXXX";
        int fd = mkstemp(path);
        ck_assert_int_ge(fd, 0);
        close(fd);
        ck_assert_msg(dyn_model_save(rm, path, &err) == 0, "%s", err.msg);
        dyn_model *lm = dyn_model_load(path, &err);
        unlink(path);
        ck_assert_msg(lm, "%s", err.msg);
        /* Bit for bit with one implementation forced (auto may time the two models' layers
         * into different ones: results a rounding apart). */
        dyn_conv_impl_set(DYN_CONV_IM2COL);
        forward_of(rm, x, B, y1, out * B);
        forward_of(lm, x, B, y2, out * B);
        dyn_conv_impl_set(DYN_CONV_AUTO);
        ck_assert_int_eq(memcmp(y1, y2, sizeof(float) * out * B), 0);
        dyn_model_free(lm);
        dyn_model_free(rm);
        dyn_model_free(dm);
    }
    json_t *a = json_pack("{s:s, s:i, s:i}", "base", "relu", "in", 3, "out", 2);
    ck_assert_ptr_null(dyn_layer_create("riem", "bad", a, &err));
    ck_assert_int_eq(err.code, DYN_EINVAL);
    json_decref(a);
    a = json_pack("{s:s, s:i, s:i, s:i}", "base", "linear", "in", 3, "out", 2, "q", 0);
    ck_assert_ptr_null(dyn_layer_create("riem", "bad", a, &err));
    json_decref(a);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("fit_riem");
    TCase *t = tcase_create("riem");
    tcase_set_timeout(t, 60);
    tcase_add_test(t, riem_floats_and_budget);
    tcase_add_test(t, riem_loss_matches_formula);
    tcase_add_test(t, riem_gradient_matches_finite_differences);
    tcase_add_test(t, riem_fit_reduces_error);
    tcase_add_test(t, riem_conv_rows_layout);
    tcase_add_test(t, riem_model_replaces_converted_layers);
    tcase_add_test(t, riem_layer_matches_materialized_and_saves);
    suite_add_tcase(s, t);
    return s;
}

TU_MAIN(suite)
