/* test_cuda_kern_dyn.c — the kernel bodies of engine/cuda/kern_dyn.h run on the host (every
 * index, serially), composed as the device code composes them, against the CPU code:
 *   - dyn_k_transpose against dyn_transpose (equal bits);
 *   - the dyn_linear device op's native path (op_dyn.c: transpose x and δ, the native kernels,
 *     transpose back, bias and its gradient) with the CPU's native kernels standing in for the
 *     CUDA ones, against the dyn_linear layer's forward and backward; its materialized path's
 *     bias (the product by cblas standing in for cuBLAS); its path and scratch choices;
 *   - the GPU fit's step (fit_cuda.c: per-system Ŵ with c = 0, dyn_k_fit_residual, the state
 *     gradient per system into θ's layout by fit.cu's dyn_cuda_fit_grad_l1 sequence: Gᵀ,
 *     dyn_k_fit_du, dyn_k_fit_dv, dyn_k_fit_lc) against the fit's reference loss and gradient
 *     (dyn__fit_loss), linear (q = 1) and conv (K = 3, q = 2); dyn_k_adam against the formula
 *     in double;
 *   - a fit asked to run on cuda without a GPU: on the CPU, saying why, with the CPU's result;
 *     through dyn_convert, the report's fit_device says so.
 * What this cannot test (launch geometry, CUB, cuBLAS): tests/gpu/test_ops_dyn.c, test_fit.c.
 *
 * Tolerances: the native path uses the same CPU kernels on the same values, in the same order
 * (transposes move bits): 1e-6 relative (the bias gradient sums in the same row order too). The
 * fit's gradient: the reference sums the same terms per system in another order: 1e-5 relative
 * for the loss, 1e-4 for the gradient. Adam: float against double, 1e-6 relative.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>

#include "convert/convert_impl.h"
#include "cuda/dyn_cuda.h"
#include "cuda/kern_dyn.h"
#include "cuda/op_dyn.h"
#include "dyn/dyn.h"
#include "testutil.h"

static float *rnd(dyn_rng *r, int64_t n, float lo, float hi) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    ck_assert_ptr_nonnull(p);
    tu_fill_uniform(p, n, r, lo, hi);
    return p;
}

/* The body over every output index: dst [cols][rows] = srcᵀ. */
static void run_transpose(const float *src, int64_t rows, int64_t cols, float *dst) {
    for (int64_t t = 0; t < rows * cols; t++) dyn_k_transpose(t, rows, cols, src, dst);
}

START_TEST(transpose_body) {
    static const int shapes[][2] = {{1, 1}, {1, 9}, {3, 5}, {17, 4}, {64, 33}};
    dyn_rng r;
    dyn_rng_seed(&r, 3);
    for (size_t k = 0; k < DYN_ARRAY_LEN(shapes); k++) {
        const int R = shapes[k][0], C = shapes[k][1];
        float *a = rnd(&r, (int64_t)R * C, -1, 1), *b = rnd(&r, (int64_t)R * C, 0, 0);
        float *c = rnd(&r, (int64_t)R * C, 0, 0);
        run_transpose(a, R, C, b);
        dyn_transpose(a, R, C, c);
        ck_assert_msg(!memcmp(b, c, (size_t)R * C * sizeof(float)), "transpose %dx%d", R, C);
        free(a), free(b), free(c);
    }
}
END_TEST

static dyn_layer *make_linear(int in, int out, int H, int q, const char *exec, uint64_t seed) {
    json_t *a = json_pack("{s:i, s:i, s:i, s:i, s:s, s:s, s:i}", "in", in, "out", out, "H", H,
                          "q", q, "kernel", "l1", "exec", exec, "bias", 1);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create("dyn_linear", "fc", a, &err);
    json_decref(a);
    ck_assert_msg(l != NULL, "create: %s", err.msg);
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    l->ops->init(l, &r);
    dyn_param *b = dyn_layer_param(l, "bias");
    tu_fill_uniform(b->value.data, dyn_tensor_numel(&b->value), &r, -0.5f, 0.5f);
    ck_assert_int_eq(l->ops->prepare(l, &err), 0);
    return l;
}

static dyn_sys layer_sys(dyn_layer *l, int in, int out, int H, int q) {
    dyn_sys s = {.m = out, .n = in, .H = H, .q = q, .kernel = DYN_KERNEL_L1,
                 .u = dyn_layer_param(l, "u")->value.data, .v = dyn_layer_param(l, "v")->value.data,
                 .lambda = dyn_layer_param(l, "lambda")->value.data,
                 .c = dyn_layer_param(l, "c")->value.data[0]};
    return s;
}

/* Runs the CPU layer's forward + backward (grads zeroed first); y, dx are the caller's. */
static void layer_fwd_bwd(dyn_layer *l, const float *x, const float *dy, int N, int in, int out,
                          float *y, float *dx) {
    dyn_shape sh = {2, {N, in}};
    const size_t sf = l->ops->scratch(l, &sh, 1);
    float *scr = dyn_alloc_zero((sf + 1) * sizeof(float));
    int64_t xs[2] = {N, in}, ys[2] = {N, out};
    dyn_tensor tx = dyn_tensor_view((float *)x, 2, xs), ty = dyn_tensor_view(y, 2, ys);
    dyn_tensor tdy = dyn_tensor_view((float *)dy, 2, ys), tdx = dyn_tensor_view(dx, 2, xs);
    for (int i = 0; i < l->nparams; i++) dyn_tensor_zero(&l->params[i].grad);
    l->ops->forward(l, &tx, &ty, scr, 1);
    l->ops->backward(l, &tx, &ty, &tdy, &tdx, scr);
    dyn_free(scr);
}

/* op_dyn.c's native forward and backward with the CPU's native kernels. */
START_TEST(linear_native_path) {
    const int in = 13, out = 7, H = 3, q = 2;
    static const int batches[] = {1, 5};
    for (size_t bi = 0; bi < DYN_ARRAY_LEN(batches); bi++) {
        const int N = batches[bi];
        dyn_layer *l = make_linear(in, out, H, q, "native", 10 + bi);
        dyn_rng r;
        dyn_rng_seed(&r, 20 + bi);
        float *x = rnd(&r, (int64_t)N * in, -1, 1), *dy = rnd(&r, (int64_t)N * out, -1, 1);
        float *y = rnd(&r, (int64_t)N * out, 0, 0), *dx = rnd(&r, (int64_t)N * in, 0, 0);
        layer_fwd_bwd(l, x, dy, N, in, out, y, dx);

        const dyn_sys s = layer_sys(l, in, out, H, q);
        const float *b = dyn_layer_param(l, "bias")->value.data;
        dyn_native nat = {0};
        dyn_err err = {0};
        ck_assert_int_eq(dyn_native_prepare(&nat, &s, &err), 0);
        /* forward: xt = xᵀ, yt = W xt, y = ytᵀ + b */
        float *xt = rnd(&r, (int64_t)N * in, 0, 0), *yt = rnd(&r, (int64_t)N * out, 0, 0);
        float *ye = rnd(&r, (int64_t)N * out, 0, 0);
        run_transpose(x, N, in, xt);
        memset(yt, 0, (size_t)N * out * sizeof(float));
        dyn_native_forward(&s, &nat, xt, N, yt, N, N, NULL, 0);
        run_transpose(yt, out, N, ye);
        for (int64_t t = 0; t < (int64_t)N * out; t++) dyn_k_add_bias_rows(t, out, b, ye);
        ck_assert_double_le(tu_rel_err(ye, y, (int64_t)N * out), 1e-6);
        /* backward: dt = δᵀ, dxt = Wᵀ dt, dx = dxtᵀ; the states' gradients; db */
        float *dt = rnd(&r, (int64_t)N * out, 0, 0), *dxt = rnd(&r, (int64_t)N * in, 0, 0);
        float *dxe = rnd(&r, (int64_t)N * in, 0, 0);
        const int64_t nu = (int64_t)H * q * out, nv = (int64_t)H * q * in;
        float *gu = calloc(nu, sizeof(float)), *gv = calloc(nv, sizeof(float));
        float *gl = calloc(H, sizeof(float)), gc = 0.0f, *gb = calloc(out, sizeof(float));
        run_transpose(dy, N, out, dt);
        memset(dxt, 0, (size_t)N * in * sizeof(float));
        const dyn_sys_grad g = {gu, gv, gl, &gc};
        dyn_native_backward(&s, &nat, xt, N, dt, N, dxt, N, N, &g, NULL, 0);
        run_transpose(dxt, in, N, dxe);
        for (int i = 0; i < out; i++) dyn_k_bias_grad(i, N, out, dy, gb);
        ck_assert_double_le(tu_rel_err(dxe, dx, (int64_t)N * in), 1e-6);
        ck_assert_double_le(tu_rel_err(gu, dyn_layer_param(l, "u")->grad.data, nu), 1e-6);
        ck_assert_double_le(tu_rel_err(gv, dyn_layer_param(l, "v")->grad.data, nv), 1e-6);
        ck_assert_double_le(tu_rel_err(gl, dyn_layer_param(l, "lambda")->grad.data, H), 1e-6);
        ck_assert_double_le(tu_rel_err(&gc, dyn_layer_param(l, "c")->grad.data, 1), 1e-6);
        ck_assert_double_le(tu_rel_err(gb, dyn_layer_param(l, "bias")->grad.data, out), 1e-6);
        dyn_native_free(&nat);
        free(x), free(dy), free(y), free(dx), free(xt), free(yt), free(ye), free(dt), free(dxt);
        free(dxe), free(gu), free(gv), free(gl), free(gb);
        dyn_layer_free(l);
    }
}
END_TEST

/* op_dyn.c's materialized path: y = x Wᵀ (cblas for cuBLAS) + the bias body; db by its body. */
START_TEST(linear_materialized_bias) {
    const int in = 9, out = 11, H = 2, q = 1, N = 6;
    dyn_layer *l = make_linear(in, out, H, q, "materialized", 31);
    dyn_rng r;
    dyn_rng_seed(&r, 32);
    float *x = rnd(&r, (int64_t)N * in, -1, 1), *dy = rnd(&r, (int64_t)N * out, -1, 1);
    float *y = rnd(&r, (int64_t)N * out, 0, 0), *dx = rnd(&r, (int64_t)N * in, 0, 0);
    layer_fwd_bwd(l, x, dy, N, in, out, y, dx);
    const dyn_sys s = layer_sys(l, in, out, H, q);
    float *w = rnd(&r, (int64_t)in * out, 0, 0), *ye = rnd(&r, (int64_t)N * out, 0, 0);
    float *gb = calloc(out, sizeof(float));
    const float *b = dyn_layer_param(l, "bias")->value.data;
    dyn_sys_materialize(&s, w);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, out, in, 1.0f, x, in, w, in, 0.0f,
                ye, out);
    for (int64_t t = 0; t < (int64_t)N * out; t++) dyn_k_add_bias_rows(t, out, b, ye);
    for (int i = 0; i < out; i++) dyn_k_bias_grad(i, N, out, dy, gb);
    ck_assert_double_le(tu_rel_err(ye, y, (int64_t)N * out), 1e-6);
    ck_assert_double_le(tu_rel_err(gb, dyn_layer_param(l, "bias")->grad.data, out), 1e-6);
    free(x), free(dy), free(y), free(dx), free(w), free(ye), free(gb);
    dyn_layer_free(l);
}
END_TEST

/* The device op's host-side choices (op_dyn.c): which path at which batch, and the scratch it
 * asks for (native: xᵀ, δᵀ and dxᵀ at 64-float offsets, none at batch 1; materialized: G for
 * training only). */
START_TEST(device_op_choices) {
    const dyn_backend_op *op = &dyn_cuda_op_dyn_linear;
    dyn_layer *nat = make_linear(13, 7, 2, 1, "native", 81);
    dyn_layer *mat = make_linear(13, 7, 2, 1, "materialized", 82);
    const dyn_shape n5 = {2, {5, 13}}, n1 = {2, {1, 13}}, n3d = {3, {2, 3, 13}};
    const dyn_shape bad = {2, {5, 12}};
    ck_assert_int_eq(op->supports(nat, &n5, 1), 1);
    ck_assert_int_eq(op->supports(nat, &bad, 1), 0);
    ck_assert_uint_eq(op->scratch(nat, &n5, 1), 2 * 128 + 64); /* 65 → 128, 35 → 64 */
    ck_assert_uint_eq(op->scratch(nat, &n3d, 0), 2 * 128 + 64); /* 6 rows: 78 → 128, 42 → 64 */
    ck_assert_uint_eq(op->scratch(nat, &n1, 1), 0);
    ck_assert_int_eq(op->supports(mat, &n5, 1), 1);
    ck_assert_uint_eq(op->scratch(mat, &n5, 1), 13 * 7);
    ck_assert_uint_eq(op->scratch(mat, &n5, 0), 0);
    dyn_layer_free(nat);
    dyn_layer_free(mat);
}
END_TEST

/* θ = [u | v | λ | c] of a DyN layer (convert.h's layout: its parameters in that order). */
static float *theta_of(dyn_layer *l, int conv, int64_t *np) {
    const dyn_param *ps[4] = {dyn_layer_param(l, conv ? "a" : "u"),
                              dyn_layer_param(l, conv ? "b" : "v"), dyn_layer_param(l, "lambda"),
                              dyn_layer_param(l, "c")};
    *np = 0;
    for (int k = 0; k < 4; k++) *np += dyn_tensor_numel(&ps[k]->value);
    float *th = malloc((size_t)*np * sizeof(float)), *p = th;
    for (int k = 0; k < 4; k++) {
        const int64_t n = dyn_tensor_numel(&ps[k]->value);
        memcpy(p, ps[k]->value.data, (size_t)n * sizeof(float));
        p += n;
    }
    return th;
}

/* fit_cuda.c's dyn__fit_gpu_grad on the host: Ŵ per system (c = 0), the residual body over the
 * K² blocks, the state gradient per system into θ's layout; against dyn__fit_loss. */
static void check_fit_step(dyn_layer *l, int conv, int m, int n, int K, int H, int q) {
    dyn_rng r;
    dyn_rng_seed(&r, 41 + K);
    const int K2 = K * K, nk = n * K2;
    const int64_t blk = (int64_t)m * n, tot = K2 * blk;
    float *w = rnd(&r, tot, -0.3f, 0.3f);
    int64_t np;
    float *th = theta_of(l, conv, &np);
    float *gref = malloc((size_t)np * sizeof(float)), *g = calloc(np, sizeof(float));
    dyn_err err = {0};
    const double lref = dyn__fit_loss(l, w, NULL, 0, gref, &err);
    ck_assert_msg(isfinite(lref), "%s", err.msg);
    /* wp: the dense weight as K² per-system blocks (fit.c fitp_fast_init) */
    float *wp = malloc((size_t)tot * sizeof(float)), *what = malloc((size_t)tot * sizeof(float));
    for (int x = 0; x < K2; x++)
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                wp[(x * m + i) * (int64_t)n + j] = w[(int64_t)i * nk + (int64_t)j * K2 + x];
    for (int x = 0; x < K2; x++) {
        const dyn_sys s = dyn__fit_sys(m, n, K, H, q, DYN_KERNEL_L1, th, x / K, x % K, 0.0f);
        dyn_sys_materialize(&s, what + x * blk);
    }
    const float gs = (float)(2.0 / (double)tot);
    for (int64_t t = 0; t < tot; t++) dyn_k_fit_residual(t, what, th + np - 1, wp, gs, what);
    double ss = 0;
    for (int64_t t = 0; t < tot; t++) ss += (double)what[t] * what[t];
    const double loss = ss / ((double)gs * gs) / (double)tot;
    /* dyn_cuda_fit_grad_l1 per system: Gᵀ, then the du, dv and dλ / dc bodies */
    float *gt = malloc((size_t)blk * sizeof(float));
    float *part = malloc((size_t)(H + 1) * n * sizeof(float));
    for (int x = 0; x < K2; x++) {
        const dyn_sys s = dyn__fit_sys(m, n, K, H, q, DYN_KERNEL_L1, th, x / K, x % K, 0.0f);
        const dyn_sys sg = dyn__fit_sys(m, n, K, H, q, DYN_KERNEL_L1, g, x / K, x % K, 0.0f);
        const float *gx = what + x * blk;
        run_transpose(gx, m, n, gt);
        for (int64_t t = 0; t < (int64_t)H * q * m; t++)
            dyn_k_fit_du(t, m, n, q, s.u, s.v, s.lambda, gt, (float *)sg.u);
        for (int64_t t = 0; t < (int64_t)H * n; t++)
            dyn_k_fit_dv(t, m, n, q, s.u, s.v, s.lambda, gx, (float *)sg.v, part,
                         part + (int64_t)H * n);
        for (int64_t h = 0; h <= H; h++)
            dyn_k_fit_lc(h, n, H, part, part + (int64_t)H * n, (float *)sg.lambda, g + np - 1);
    }
    free(gt), free(part);
    ck_assert_msg(fabs(loss - lref) <= 1e-5 * lref, "K=%d loss %g, reference %g", K, loss, lref);
    const double ge = tu_rel_err(g, gref, np);
    ck_assert_msg(ge <= 1e-4, "K=%d gradient relative error %g", K, ge);
    free(w), free(th), free(gref), free(g), free(wp), free(what);
}

START_TEST(fit_step_linear) {
    dyn_layer *l = make_linear(24, 17, 3, 1, "auto", 51);
    check_fit_step(l, 0, 17, 24, 1, 3, 1);
    dyn_layer_free(l);
}
END_TEST

START_TEST(fit_step_conv) {
    const int cin = 4, cout = 5, K = 3, H = 2, q = 2;
    json_t *a = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:i}", "in_channels", cin,
                          "out_channels", cout, "kernel", K, "padding", 1, "H", H, "q", q,
                          "kernel_fn", "l1", "bias", 0);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create("dyn_conv2d", "conv", a, &err);
    json_decref(a);
    ck_assert_msg(l != NULL, "create: %s", err.msg);
    dyn_rng r;
    dyn_rng_seed(&r, 52);
    l->ops->init(l, &r);
    ck_assert_int_eq(l->ops->prepare(l, &err), 0);
    check_fit_step(l, 1, cout, cin, K, H, q);
    dyn_layer_free(l);
}
END_TEST

START_TEST(adam_body) {
    const int n = 257;
    dyn_rng r;
    dyn_rng_seed(&r, 61);
    float *g = rnd(&r, n, -1, 1), *m1 = rnd(&r, n, -0.1f, 0.1f), *m2 = rnd(&r, n, 0, 0.01f);
    float *th = rnd(&r, n, -1, 1);
    double *e = malloc(n * sizeof(double));
    const float lr = 0.01f, b1 = 0.9f, b2 = 0.999f, bc1 = 0.19f, bc2 = 0.002f, eps = 1e-12f;
    for (int i = 0; i < n; i++) {
        const double a1 = b1 * (double)m1[i] + (1 - (double)b1) * g[i];
        const double a2 = b2 * (double)m2[i] + (1 - (double)b2) * (double)g[i] * g[i];
        e[i] = th[i] - lr * (a1 / bc1) / (sqrt(a2 / bc2) + eps);
    }
    for (int i = 0; i < n; i++) dyn_k_adam(i, lr, b1, b2, bc1, bc2, eps, g, m1, m2, th);
    double num = 0, den = 0;
    for (int i = 0; i < n; i++) {
        num += (th[i] - e[i]) * (th[i] - e[i]);
        den += e[i] * e[i];
    }
    ck_assert_double_le(sqrt(num / den), 1e-6);
    free(g), free(m1), free(m2), free(th), free(e);
}
END_TEST

/* A fit asked to run on cuda where no GPU answers (this build's stubs, or a CUDA build on a
 * machine without one) runs on the CPU, says why in its note, and gives the CPU's result. */
START_TEST(fit_device_fallback) {
    int ndev = 0;
    dyn_err err = {0};
    if (dyn_cuda_device_count(&ndev, &err) == 0 && ndev > 0) return; /* tests/gpu/test_fit.c */
    dyn_rng r;
    dyn_rng_seed(&r, 71);
    float *w = rnd(&r, 20 * 30, -0.2f, 0.2f);
    dyn_fit_opts o = dyn_fit_opts_default();
    o.steps = 30;
    dyn_fit_result res[2];
    for (int k = 0; k < 2; k++) {
        dyn_layer *l = make_linear(30, 20, 3, 1, "auto", 72);
        o.device = k ? DYN_DEV_CUDA : DYN_DEV_CPU;
        ck_assert_int_eq(dyn_fit_layer(l, w, NULL, DYN_FIT_FIXED, 0, &o, &res[k], &err), 0);
        dyn_layer_free(l);
    }
    ck_assert_int_eq(res[1].device, DYN_DEV_CPU);
    ck_assert_msg(strstr(res[1].note, "cpu (no GPU for the fit: ") == res[1].note, "note: %s",
                  res[1].note);
    ck_assert_str_eq(res[0].note, "");
    ck_assert_double_eq(res[0].rel_err, res[1].rel_err);
    free(w);
}
END_TEST

/* The same through dyn_convert: the report's line of the converted layer says where its fit
 * ran (and the JSON carries it). */
START_TEST(convert_reports_fit_device) {
    int ndev = 0;
    dyn_err err = {0};
    if (dyn_cuda_device_count(&ndev, &err) == 0 && ndev > 0) return;
    const dyn_shape in = {.ndim = 1, .d = {48}};
    dyn_model *dense = dyn_model_new(&in);
    const char *names[2] = {"fc1", "fc2"};
    const int dims[3] = {48, 40, 10};
    for (int k = 0; k < 2; k++) {
        json_t *a = json_pack("{s:i, s:i}", "in", dims[k], "out", dims[k + 1]);
        dyn_layer *l = dyn_layer_create("linear", names[k], a, &err);
        json_decref(a);
        ck_assert_ptr_nonnull(l);
        ck_assert_int_ge(dyn_model_add_seq(dense, l, &err), 0);
    }
    dyn_model_init(dense, 3);
    dyn_convert_opts o = dyn_convert_opts_default();
    o.fitopt.steps = 10;
    o.fitopt.device = DYN_DEV_CUDA;
    o.min_agreement = 0;
    o.force = 1;
    dyn_model *out = NULL;
    dyn_convert_report rep;
    ck_assert_msg(dyn_convert(dense, &o, &out, &rep, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(rep.layers[0].converted, 1);
    ck_assert_msg(strstr(rep.layers[0].fit_device, "cpu (no GPU for the fit: ") ==
                      rep.layers[0].fit_device,
                  "fit_device: %s", rep.layers[0].fit_device);
    json_t *j = dyn_convert_report_json(&rep);
    char *txt = json_dumps(j, 0);
    ck_assert_ptr_nonnull(strstr(txt, "\"fit_device\": \"cpu (no GPU"));
    free(txt);
    json_decref(j);
    dyn_convert_report_free(&rep);
    dyn_model_free(out);
    dyn_model_free(dense);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("cuda_kern_dyn");
    TCase *tc = tcase_create("bodies");
    tcase_add_test(tc, transpose_body);
    tcase_add_test(tc, linear_native_path);
    tcase_add_test(tc, linear_materialized_bias);
    tcase_add_test(tc, device_op_choices);
    tcase_add_test(tc, fit_step_linear);
    tcase_add_test(tc, fit_step_conv);
    tcase_add_test(tc, adam_body);
    tcase_add_test(tc, fit_device_fallback);
    tcase_add_test(tc, convert_reports_fit_device);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(suite)
