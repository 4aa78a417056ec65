/* test_ops.c — dense ops (linear, conv2d, pooling, batchnorm, relu, flatten): forward against
 * naive reference loops, backward against finite differences, attribute round trips and the
 * messages for bad attributes and input shapes. */
#include <math.h>
#include <string.h>

#include "cpu/im2col.h"
#include "testutil.h"
#include "train.h"

/* ---- helpers ---- */

static dyn_layer *mk(const char *op, const char *attrs_json) { return tu_layer(op, attrs_json); }

/* Creation must fail with a message containing `want`. */
static void mk_fails(const char *op, const char *attrs_json, const char *want) {
    json_t *a = json_loads(attrs_json, 0, NULL);
    ck_assert_ptr_nonnull(a);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create(op, "bad", a, &err);
    json_decref(a);
    ck_assert_msg(l == NULL, "%s %s was accepted", op, attrs_json);
    ck_assert_int_lt(err.code, 0);
    ck_assert_msg(strstr(err.msg, want) != NULL, "%s %s: message '%s' lacks '%s'", op, attrs_json,
                  err.msg, want);
    ck_assert_msg(strstr(err.msg, "'bad'") != NULL, "message '%s' does not name the layer",
                  err.msg);
}

static dyn_shape shp(int ndim, int64_t a, int64_t b, int64_t c, int64_t d) {
    dyn_shape s = {.ndim = ndim, .d = {a, b, c, d}};
    for (int i = ndim; i < DYN_MAX_DIMS; i++) s.d[i] = 0;
    return s;
}

/* infer() must fail with a message containing `want`. */
static void infer_fails(dyn_layer *l, dyn_shape in, const char *want) {
    dyn_shape out;
    dyn_err err = {0};
    int rc = l->ops->infer(l, &in, &out, &err);
    ck_assert_int_eq(rc, DYN_EINVAL);
    ck_assert_msg(strstr(err.msg, want) != NULL, "%s: message '%s' lacks '%s'", l->ops->name,
                  err.msg, want);
}

static void init_params(dyn_layer *l, uint64_t seed) {
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    if (l->ops->init) l->ops->init(l, &r);
}

/* One forward run: x (random U(-1, 1)), y and scratch sized by infer() / scratch(). */
typedef struct run {
    dyn_layer *l;
    dyn_shape in, out;
    dyn_tensor x, y;
    float *scratch;
    size_t nscratch;
} run;

static void run_init(run *r, dyn_layer *l, dyn_shape in, int training, uint64_t seed) {
    memset(r, 0, sizeof *r);
    r->l = l;
    r->in = in;
    dyn_err err = {0};
    ck_assert_msg(l->ops->infer(l, &in, &r->out, &err) == 0, "infer: %s", err.msg);
    ck_assert_int_eq(dyn_tensor_init_shape(&r->x, &in, NULL), 0);
    ck_assert_int_eq(dyn_tensor_init_shape(&r->y, &r->out, NULL), 0);
    r->nscratch = l->ops->scratch ? l->ops->scratch(l, &in, training) : 0;
    r->scratch = r->nscratch ? dyn_alloc_zero(r->nscratch * sizeof(float)) : NULL;
    dyn_rng rng;
    dyn_rng_seed(&rng, seed);
    tu_fill_uniform(r->x.data, dyn_tensor_numel(&r->x), &rng, -1.0f, 1.0f);
}

static void run_fwd(run *r, int training) {
    r->l->ops->forward(r->l, &r->x, &r->y, r->scratch, training);
}

static void run_free(run *r) {
    dyn_tensor_release(&r->x);
    dyn_tensor_release(&r->y);
    dyn_free(r->scratch);
}

static void check_close(const float *got, const double *want, int64_t n, double tol,
                        const char *what) {
    for (int64_t i = 0; i < n; i++)
        ck_assert_msg(fabs((double)got[i] - want[i]) <= tol * (1.0 + fabs(want[i])),
                      "%s[%lld]: got %.7g want %.7g", what, (long long)i, (double)got[i], want[i]);
}

/* Copies all parameter values into one new buffer (for "did forward mutate the layer"). */
static float *params_snapshot(const dyn_layer *l, int64_t *n) {
    *n = dyn_layer_param_floats(l);
    float *s = malloc((size_t)(*n + 1) * sizeof(float)), *p = s;
    for (int i = 0; i < l->nparams; i++) {
        int64_t k = dyn_tensor_numel(&l->params[i].value);
        memcpy(p, l->params[i].value.data, (size_t)k * sizeof(float));
        p += k;
    }
    return s;
}

static void assert_params_equal(const dyn_layer *l, const float *snap) {
    const float *p = snap;
    for (int i = 0; i < l->nparams; i++) {
        int64_t k = dyn_tensor_numel(&l->params[i].value);
        ck_assert_msg(memcmp(p, l->params[i].value.data, (size_t)k * sizeof(float)) == 0,
                      "param '%s' changed", l->params[i].name);
        p += k;
    }
}

#define GC_ATOL 2e-3
#define GC_RTOL 2e-2

static void gradcheck(dyn_layer *l, dyn_shape in, int training, float h, uint64_t seed) {
    int fails = tu_gradcheck(l, &in, training, seed, 40, h, GC_ATOL, GC_RTOL);
    ck_assert_msg(fails == 0, "%s: %d gradient coordinates fail", l->ops->name, fails);
}

/* ---- linear ---- */

static void linear_ref(const float *x, const float *w, const float *b, int n, int in, int out,
                       double *y) {
    for (int i = 0; i < n; i++)
        for (int o = 0; o < out; o++) {
            double s = b ? b[o] : 0.0;
            for (int k = 0; k < in; k++) s += (double)x[i * in + k] * w[o * in + k];
            y[i * out + o] = s;
        }
}

START_TEST(test_linear_forward) {
    for (int bias = 0; bias <= 1; bias++) {
        char a[128];
        snprintf(a, sizeof a, "{\"in\": 37, \"out\": 11, \"bias\": %d}", bias);
        dyn_layer *l = mk("linear", a);
        ck_assert_int_eq(l->nparams, bias ? 2 : 1);
        ck_assert_int_eq(l->params[0].value.shape[0], 11);
        ck_assert_int_eq(l->params[0].value.shape[1], 37);
        init_params(l, 7);
        /* Kaiming-uniform bound 1/sqrt(in). */
        float bound = 1.0f / sqrtf(37.0f);
        for (int p = 0; p < l->nparams; p++)
            for (int64_t i = 0; i < dyn_tensor_numel(&l->params[p].value); i++)
                ck_assert(fabsf(l->params[p].value.data[i]) <= bound);
        run r;
        run_init(&r, l, shp(2, 5, 37, 0, 0), 0, 3);
        ck_assert_int_eq(r.out.ndim, 2);
        ck_assert_int_eq(r.out.d[0], 5);
        ck_assert_int_eq(r.out.d[1], 11);
        run_fwd(&r, 0);
        double want[5 * 11];
        linear_ref(r.x.data, l->params[0].value.data, bias ? l->params[1].value.data : NULL, 5, 37,
                   11, want);
        check_close(r.y.data, want, 5 * 11, 1e-5, "linear y");
        dyn_layer_stats st;
        dyn_shape one = shp(2, 1, 37, 0, 0);
        dyn_layer_stats_get(l, &one, &st);
        ck_assert_int_eq(st.macs, 37 * 11);
        ck_assert_int_eq(st.stored_floats, 37 * 11 + bias * 11);
        run_free(&r);
        dyn_layer_free(l);
    }
}
END_TEST

START_TEST(test_linear_grad) {
    dyn_layer *l = mk("linear", "{\"in\": 13, \"out\": 7}");
    init_params(l, 1);
    gradcheck(l, shp(2, 4, 13, 0, 0), 1, 1e-2f, 11);
    dyn_layer_free(l);
    l = mk("linear", "{\"in\": 6, \"out\": 9, \"bias\": 0}");
    init_params(l, 2);
    gradcheck(l, shp(2, 1, 6, 0, 0), 1, 1e-2f, 12);
    dyn_layer_free(l);
}
END_TEST

/* Backward accumulates parameter gradients and leaves dx alone when its data is NULL. */
START_TEST(test_linear_accumulates) {
    dyn_layer *l = mk("linear", "{\"in\": 5, \"out\": 4}");
    init_params(l, 3);
    run r;
    run_init(&r, l, shp(2, 3, 5, 0, 0), 1, 4);
    run_fwd(&r, 1);
    dyn_tensor dy, dx = {0};
    ck_assert_int_eq(dyn_tensor_init_shape(&dy, &r.out, NULL), 0);
    for (int i = 0; i < 12; i++) dy.data[i] = (float)(i % 5) - 2.0f;
    dyn_layer_zero_grad(l);
    l->ops->backward(l, &r.x, &r.y, &dy, &dx, r.scratch);
    float g1[20], b1[4];
    memcpy(g1, l->params[0].grad.data, sizeof g1);
    memcpy(b1, l->params[1].grad.data, sizeof b1);
    l->ops->backward(l, &r.x, &r.y, &dy, &dx, r.scratch);
    for (int i = 0; i < 20; i++) ck_assert_float_eq_tol(l->params[0].grad.data[i], 2 * g1[i], 1e-6);
    for (int i = 0; i < 4; i++) ck_assert_float_eq_tol(l->params[1].grad.data[i], 2 * b1[i], 1e-6);
    dyn_tensor_release(&dy);
    run_free(&r);
    dyn_layer_free(l);
}
END_TEST

/* ---- conv2d ---- */

typedef struct conv_case {
    int n, cin, h, w, cout, kh, kw, sh, sw, ph, pw, dh, dw, groups, bias;
} conv_case;

static const conv_case conv_cases[] = {
    /* n cin  h  w cout kh kw sh sw ph pw dh dw  g bias */
    {2, 3, 7, 6, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},    /* 3x3 same */
    {2, 3, 9, 8, 5, 5, 5, 2, 2, 0, 0, 1, 1, 1, 1},    /* stride 2, no padding */
    {1, 2, 9, 9, 3, 3, 3, 1, 1, 2, 2, 2, 2, 1, 0},    /* dilation 2, N = 1 */
    {2, 3, 8, 7, 2, 3, 1, 2, 1, 1, 0, 1, 1, 1, 1},    /* 3x1 kernel, stride (2, 1) */
    {2, 4, 6, 6, 6, 3, 3, 1, 1, 1, 1, 1, 1, 2, 1},    /* groups 2 */
    {3, 5, 6, 7, 5, 3, 3, 1, 1, 1, 1, 1, 1, 5, 1},    /* depthwise */
    {2, 3, 5, 5, 6, 3, 3, 2, 2, 1, 1, 1, 1, 3, 0},    /* depthwise, multiplier 2, stride 2 */
    {1, 6, 5, 4, 4, 1, 1, 1, 1, 0, 0, 1, 1, 2, 1},    /* 1x1 grouped, N = 1 */
    {2, 4, 7, 9, 4, 2, 3, 2, 3, 1, 1, 2, 1, 4, 1},    /* depthwise, asymmetric everything */
    {1, 3, 4, 4, 2, 5, 5, 1, 1, 2, 2, 1, 1, 1, 1},    /* kernel larger than the input */
    {4, 8, 16, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1}, /* large enough for the threaded paths */
};

static tu_conv conv_tu(const conv_case *c) {
    return (tu_conv){c->n,  c->cin, c->h,  c->w,  c->cout, c->kh, c->kw,
                     c->sh, c->sw,  c->ph, c->pw, c->dh,   c->dw, c->groups};
}

static const char *conv_case_attrs(const conv_case *c, char *buf, size_t n) {
    tu_conv t = conv_tu(c);
    return tu_conv_attrs(&t, c->bias, buf, n);
}

static void conv_ref(const conv_case *c, const float *x, const float *w, const float *b,
                     double *y, int oh, int ow) {
    tu_conv t = conv_tu(c);
    tu_conv2d_ref(&t, x, w, b, y, oh, ow);
}

START_TEST(test_conv_forward) {
    const conv_case *c = &conv_cases[_i];
    char a[512];
    dyn_layer *l = mk("conv2d", conv_case_attrs(c, a, sizeof a));
    init_params(l, 100 + (uint64_t)_i);
    dyn_tensor *wt = &l->params[0].value;
    ck_assert_int_eq(wt->shape[0], c->cout);
    ck_assert_int_eq(wt->shape[1], c->cin / c->groups);
    ck_assert_int_eq(wt->shape[2], c->kh);
    ck_assert_int_eq(wt->shape[3], c->kw);
    int oh = (c->h + 2 * c->ph - c->dh * (c->kh - 1) - 1) / c->sh + 1;
    int ow = (c->w + 2 * c->pw - c->dw * (c->kw - 1) - 1) / c->sw + 1;
    /* every kernel version this CPU runs (the direct kernel at inference needs AVX2) */
    TU_FOR_EACH_ISA(lv) for (int training = 0; training <= 1; training++) {
        run r;
        run_init(&r, l, shp(4, c->n, c->cin, c->h, c->w), training, 200 + (uint64_t)_i);
        ck_assert_int_eq(r.out.d[0], c->n);
        ck_assert_int_eq(r.out.d[1], c->cout);
        ck_assert_int_eq(r.out.d[2], oh);
        ck_assert_int_eq(r.out.d[3], ow);
        int64_t np = (int64_t)c->n * oh * ow;
        /* im2col's cols and output; inference adds oneDNN's activations (test_dnnl) */
        const size_t gemm = (size_t)(((int64_t)c->cin * c->kh * c->kw + c->cout) * np);
        if (training) ck_assert_uint_eq(r.nscratch, gemm);
        else ck_assert_uint_gt(r.nscratch, gemm);
        int64_t ny = dyn_tensor_numel(&r.y);
        double *want = malloc((size_t)ny * sizeof(double));
        conv_ref(c, r.x.data, wt->data, c->bias ? l->params[1].value.data : NULL, want, oh, ow);
        run_fwd(&r, training);
        char what[64];
        snprintf(what, sizeof what, "conv y (%s, training %d)", dyn_isa_name(lv), training);
        check_close(r.y.data, want, ny, 1e-5, what);
        free(want);
        run_free(&r);
    }
    dyn_layer_stats st;
    dyn_shape one = shp(4, 1, c->cin, c->h, c->w);
    dyn_layer_stats_get(l, &one, &st);
    ck_assert_int_eq(st.macs,
                     (int64_t)c->cout * (c->cin / c->groups) * c->kh * c->kw * oh * ow);
    ck_assert_int_eq(st.stored_floats, dyn_layer_param_floats(l));
    dyn_layer_free(l);
}
END_TEST

START_TEST(test_conv_grad) {
    const conv_case *c = &conv_cases[_i];
    char a[512];
    dyn_layer *l = mk("conv2d", conv_case_attrs(c, a, sizeof a));
    init_params(l, 300 + (uint64_t)_i);
    gradcheck(l, shp(4, c->n, c->cin, c->h, c->w), 1, 1e-2f, 400 + (uint64_t)_i);
    dyn_layer_free(l);
}
END_TEST

/* With dx.data == NULL backward computes the same parameter gradients. */
START_TEST(test_conv_no_dx) {
    const conv_case *c = &conv_cases[4];
    char a[512];
    dyn_layer *l = mk("conv2d", conv_case_attrs(c, a, sizeof a));
    init_params(l, 5);
    run r;
    run_init(&r, l, shp(4, c->n, c->cin, c->h, c->w), 1, 6);
    dyn_tensor dy, dx, none = {0};
    ck_assert_int_eq(dyn_tensor_init_shape(&dy, &r.out, NULL), 0);
    ck_assert_int_eq(dyn_tensor_init_shape(&dx, &r.in, NULL), 0);
    dyn_rng rng;
    dyn_rng_seed(&rng, 9);
    tu_fill_uniform(dy.data, dyn_tensor_numel(&dy), &rng, -1, 1);
    int64_t nw = dyn_tensor_numel(&l->params[0].grad);
    float *g1 = malloc((size_t)nw * sizeof(float));
    run_fwd(&r, 1);
    dyn_layer_zero_grad(l);
    l->ops->backward(l, &r.x, &r.y, &dy, &dx, r.scratch);
    memcpy(g1, l->params[0].grad.data, (size_t)nw * sizeof(float));
    run_fwd(&r, 1);
    dyn_layer_zero_grad(l);
    l->ops->backward(l, &r.x, &r.y, &dy, &none, r.scratch);
    ck_assert_double_le(tu_max_abs_diff(l->params[0].grad.data, g1, nw), 1e-6);
    free(g1);
    dyn_tensor_release(&dy);
    dyn_tensor_release(&dx);
    run_free(&r);
    dyn_layer_free(l);
}
END_TEST

/* ---- pooling ---- */

typedef struct pool_case {
    int n, c, h, w, kh, kw, sh, sw, ph, pw, ceil_mode;
} pool_case;

static const pool_case pool_cases[] = {
    /* n  c  h  w kh kw sh sw ph pw ceil */
    {2, 3, 8, 8, 2, 2, 2, 2, 0, 0, 0},
    {2, 3, 7, 7, 3, 3, 2, 2, 1, 1, 0},
    {1, 2, 5, 5, 2, 2, 2, 2, 0, 0, 1},
    {1, 2, 6, 7, 3, 3, 2, 2, 1, 1, 1},
    {2, 2, 9, 6, 3, 2, 2, 1, 1, 0, 1},
    {1, 1, 5, 5, 2, 2, 2, 2, 1, 1, 1}, /* ceil_mode drops the window starting in the padding */
    {1, 2, 4, 5, 3, 3, 1, 1, 0, 0, 0}, /* overlapping windows */
    {2, 2, 10, 11, 4, 3, 3, 2, 2, 1, 1},
    {4, 16, 34, 34, 2, 2, 2, 2, 0, 0, 0}, /* threaded path */
};

/* PyTorch's output length, written independently of the engine. */
static int ref_out_len(int in, int k, int s, int p, int ceil_mode) {
    double v = (double)(in + 2 * p - k) / s;
    int o = (int)(ceil_mode ? ceil(v) : floor(v)) + 1;
    if (ceil_mode && (o - 1) * s >= in + p) o--;
    return o;
}

/* kind: 0 max, 1 avg counting padding, 2 avg not counting padding. */
static void pool_ref(const pool_case *c, int kind, const float *x, double *y, int oh, int ow) {
    for (int pl = 0; pl < c->n * c->c; pl++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                double best = -INFINITY, sum = 0.0;
                int all = 0, valid = 0;
                for (int r = 0; r < c->kh; r++)
                    for (int t = 0; t < c->kw; t++) {
                        int iy = oy * c->sh - c->ph + r, ix = ox * c->sw - c->pw + t;
                        if (iy < c->h + c->ph && ix < c->w + c->pw) all++;
                        if (iy < 0 || iy >= c->h || ix < 0 || ix >= c->w) continue;
                        double v = x[(pl * c->h + iy) * c->w + ix];
                        valid++;
                        sum += v;
                        if (v > best) best = v;
                    }
                ck_assert_int_gt(valid, 0);
                y[(pl * oh + oy) * ow + ox] = kind == 0 ? best : sum / (kind == 1 ? all : valid);
            }
}

static const char *pool_case_attrs(const pool_case *c, int kind, char *buf, size_t n) {
    snprintf(buf, n,
             "{\"kernel_h\": %d, \"kernel_w\": %d, \"stride_h\": %d, \"stride_w\": %d, "
             "\"padding_h\": %d, \"padding_w\": %d, \"ceil_mode\": %d%s}",
             c->kh, c->kw, c->sh, c->sw, c->ph, c->pw, c->ceil_mode,
             kind == 2 ? ", \"count_include_pad\": 0" : "");
    return buf;
}

START_TEST(test_pool_forward) {
    const pool_case *c = &pool_cases[_i];
    int oh = ref_out_len(c->h, c->kh, c->sh, c->ph, c->ceil_mode);
    int ow = ref_out_len(c->w, c->kw, c->sw, c->pw, c->ceil_mode);
    TU_FOR_EACH_ISA(lv) for (int kind = 0; kind < 3; kind++) {
        char a[256];
        dyn_layer *l = mk(kind == 0 ? "maxpool2d" : "avgpool2d", pool_case_attrs(c, kind, a,
                                                                                   sizeof a));
        run r;
        run_init(&r, l, shp(4, c->n, c->c, c->h, c->w), 0, 500 + (uint64_t)_i);
        ck_assert_int_eq(r.out.d[0], c->n);
        ck_assert_int_eq(r.out.d[1], c->c);
        ck_assert_int_eq(r.out.d[2], oh);
        ck_assert_int_eq(r.out.d[3], ow);
        int64_t ny = dyn_tensor_numel(&r.y);
        double *want = malloc((size_t)ny * sizeof(double));
        pool_ref(c, kind, r.x.data, want, oh, ow);
        run_fwd(&r, 0);
        char what[64];
        snprintf(what, sizeof what, "%s (%s)", l->ops->name, dyn_isa_name(lv));
        check_close(r.y.data, want, ny, 1e-6, what);
        free(want);
        dyn_layer_stats st;
        dyn_shape one = shp(4, 1, c->c, c->h, c->w);
        dyn_layer_stats_get(l, &one, &st);
        ck_assert_int_eq(st.macs, 0);
        run_free(&r);
        dyn_layer_free(l);
    }
}
END_TEST

/* Values PyTorch gives for x = arange(25).view(1, 1, 5, 5). */
START_TEST(test_pool_known_values) {
    static const struct {
        const char *op, *attrs;
        int oh, ow;
        float y[9];
    } cases[] = {
        {"maxpool2d", "{\"kernel\": 2, \"ceil_mode\": 1}", 3, 3, {6, 8, 9, 16, 18, 19, 21, 23, 24}},
        {"avgpool2d", "{\"kernel\": 2, \"ceil_mode\": 1}", 3, 3,
         {3, 5, 6.5f, 13, 15, 16.5f, 20.5f, 22.5f, 24}},
        {"avgpool2d", "{\"kernel\": 3, \"stride\": 2, \"padding\": 1}", 3, 3,
         {12 / 9.f, 27 / 9.f, 24 / 9.f, 63 / 9.f, 108 / 9.f, 81 / 9.f, 72 / 9.f, 117 / 9.f,
          84 / 9.f}},
        {"avgpool2d", "{\"kernel\": 3, \"stride\": 2, \"padding\": 1, \"count_include_pad\": 0}",
         3, 3, {3, 4.5f, 6, 10.5f, 12, 13.5f, 18, 19.5f, 21}},
        {"maxpool2d", "{\"kernel\": 3, \"stride\": 2, \"padding\": 1}", 3, 3,
         {6, 8, 9, 16, 18, 19, 21, 23, 24}},
        {"maxpool2d", "{\"kernel\": 2, \"padding\": 1, \"ceil_mode\": 1}", 3, 3,
         {0, 2, 4, 10, 12, 14, 20, 22, 24}},
    };
    for (size_t k = 0; k < DYN_ARRAY_LEN(cases); k++) {
        dyn_layer *l = mk(cases[k].op, cases[k].attrs);
        run r;
        run_init(&r, l, shp(4, 1, 1, 5, 5), 0, 1);
        for (int i = 0; i < 25; i++) r.x.data[i] = (float)i;
        ck_assert_int_eq(r.out.d[2], cases[k].oh);
        ck_assert_int_eq(r.out.d[3], cases[k].ow);
        run_fwd(&r, 0);
        for (int i = 0; i < 9; i++)
            ck_assert_msg(fabsf(r.y.data[i] - cases[k].y[i]) < 1e-5f, "%s %s: y[%d] = %g, want %g",
                          cases[k].op, cases[k].attrs, i, (double)r.y.data[i],
                          (double)cases[k].y[i]);
        run_free(&r);
        dyn_layer_free(l);
    }
}
END_TEST

/* Ties: the first maximum in row-major window order receives the gradient. */
START_TEST(test_maxpool_ties) {
    dyn_layer *l = mk("maxpool2d", "{\"kernel\": 2}");
    run r;
    run_init(&r, l, shp(4, 1, 1, 2, 4), 1, 1);
    const float x[8] = {1, 3, 5, 5, 3, 2, 5, 5};
    memcpy(r.x.data, x, sizeof x);
    run_fwd(&r, 1);
    ck_assert_float_eq(r.y.data[0], 3);
    ck_assert_float_eq(r.y.data[1], 5);
    dyn_tensor dy, dx;
    ck_assert_int_eq(dyn_tensor_init_shape(&dy, &r.out, NULL), 0);
    ck_assert_int_eq(dyn_tensor_init_shape(&dx, &r.in, NULL), 0);
    dy.data[0] = 1;
    dy.data[1] = 2;
    l->ops->backward(l, &r.x, &r.y, &dy, &dx, r.scratch);
    const float want[8] = {0, 1, 2, 0, 0, 0, 0, 0};
    for (int i = 0; i < 8; i++) ck_assert_float_eq(dx.data[i], want[i]);
    /* A NaN in a window propagates and takes the gradient (the first NaN when several). */
    const float xn[8] = {1, NAN, 5, 5, NAN, 2, 5, 7};
    memcpy(r.x.data, xn, sizeof xn);
    run_fwd(&r, 1);
    ck_assert(isnan(r.y.data[0]));
    ck_assert_float_eq(r.y.data[1], 7);
    l->ops->backward(l, &r.x, &r.y, &dy, &dx, r.scratch);
    const float wantn[8] = {0, 1, 0, 0, 0, 0, 0, 2};
    for (int i = 0; i < 8; i++) ck_assert_float_eq(dx.data[i], wantn[i]);
    dyn_tensor_release(&dy);
    dyn_tensor_release(&dx);
    run_free(&r);
    dyn_layer_free(l);
}
END_TEST

/* Run-time kernel choice (cpu/isa.h): the direct convolution is taken exactly where the CPU
 * level allows it, whatever ARCH the library was built for; the 2x2 max pool's vector rows
 * (16+ inputs wide) give the reference's values and argmax, NaN included, at every level. */
START_TEST(test_isa_dispatch) {
    fprintf(stderr, "isa: this CPU runs %s (built for %s)\n", dyn_isa_name(dyn_isa_detected()),
#if defined(__AVX512F__)
            "avx512"
#elif defined(__AVX2__)
            "avx2"
#else
            "a baseline without AVX2"
#endif
    );
    dyn_conv_geom g = {.N = 2, .C = 1, .H = 28, .W = 28, .KH = 5, .KW = 5, .SH = 1, .SW = 1,
                       .PH = 2, .PW = 2, .DH = 1, .DW = 1};
    ck_assert_int_eq(dyn_conv_geom_out(&g), 0);
    dyn_layer *l = mk("maxpool2d", "{\"kernel\": 2}");
    run r;
    run_init(&r, l, shp(4, 1, 2, 4, 40), 1, 9);
    r.x.data[2 * 40 + 17] = NAN; /* channel 0, row 2: output row 1, window 8 */
    const int64_t ny = dyn_tensor_numel(&r.y);
    double *want = malloc((size_t)ny * sizeof(double));
    pool_case pc = {1, 2, 4, 40, 2, 2, 2, 2, 0, 0, 0};
    pool_ref(&pc, 0, r.x.data, want, 2, 20);
    int levels = 0;
    TU_FOR_EACH_ISA(lv) {
        levels++;
        ck_assert_int_eq(dyn__conv_direct_ok(&g, 1, 6, (size_t)1 << 20), lv >= DYN_ISA_AVX2);
        run_fwd(&r, 1);
        for (int64_t i = 0; i < ny; i++) {
            if (i == 20 + 8) {
                ck_assert_msg(isnan(r.y.data[i]), "%s: the NaN window gave %g", dyn_isa_name(lv),
                              (double)r.y.data[i]);
                continue;
            }
            ck_assert_msg(r.y.data[i] == (float)want[i], "%s: y[%lld] = %g, want %g",
                          dyn_isa_name(lv), (long long)i, (double)r.y.data[i], want[i]);
        }
        /* the argmax the backward routes through: a gradient of 1 lands on each maximum */
        dyn_tensor dy, dx;
        ck_assert_int_eq(dyn_tensor_init_shape(&dy, &r.out, NULL), 0);
        ck_assert_int_eq(dyn_tensor_init_shape(&dx, &r.in, NULL), 0);
        for (int64_t i = 0; i < ny; i++) dy.data[i] = 1;
        l->ops->backward(l, &r.x, &r.y, &dy, &dx, r.scratch);
        ck_assert_float_eq(dx.data[2 * 40 + 17], 1); /* the NaN takes its window's gradient */
        for (int64_t i = 0; i < ny; i++) {
            if (i == 20 + 8) continue;
            const int pl = (int)(i / 40), oy = (int)(i % 40) / 20, ox = (int)(i % 20);
            int hit = 0;
            for (int t = 0; t < 4; t++) {
                const int64_t k = ((int64_t)pl * 4 + 2 * oy + t / 2) * 40 + 2 * ox + t % 2;
                if (dx.data[k] == 1) {
                    hit++;
                    ck_assert_float_eq(r.x.data[k], r.y.data[i]);
                }
            }
            ck_assert_msg(hit == 1, "%s: window %lld routed %d gradients", dyn_isa_name(lv),
                          (long long)i, hit);
        }
        dyn_tensor_release(&dy);
        dyn_tensor_release(&dx);
    }
    ck_assert_int_eq(levels, (int)dyn_isa_detected() + 1);
    free(want);
    run_free(&r);
    dyn_layer_free(l);
}
END_TEST

START_TEST(test_pool_grad) {
    const pool_case *c = &pool_cases[_i];
    if (c->n * c->c * c->h * c->w > 4096) return; /* the threaded case is for forward only */
    dyn_shape in = shp(4, c->n, c->c, c->h, c->w);
    for (int kind = 0; kind < 3; kind++) {
        char a[256];
        dyn_layer *l = mk(kind == 0 ? "maxpool2d" : "avgpool2d", pool_case_attrs(c, kind, a,
                                                                                   sizeof a));
        /* Max pooling is piecewise linear: a small step keeps the argmax fixed. */
        gradcheck(l, in, 1, kind == 0 ? 1e-4f : 1e-2f, 600 + (uint64_t)_i);
        dyn_layer_free(l);
    }
}
END_TEST

START_TEST(test_globalavgpool) {
    dyn_layer *l = mk("globalavgpool", "{}");
    run r;
    run_init(&r, l, shp(4, 3, 4, 5, 6), 0, 8);
    ck_assert_int_eq(r.out.ndim, 4);
    ck_assert_int_eq(r.out.d[0], 3);
    ck_assert_int_eq(r.out.d[1], 4);
    ck_assert_int_eq(r.out.d[2], 1);
    ck_assert_int_eq(r.out.d[3], 1);
    run_fwd(&r, 0);
    double want[12];
    for (int pl = 0; pl < 12; pl++) {
        double s = 0;
        for (int i = 0; i < 30; i++) s += r.x.data[pl * 30 + i];
        want[pl] = s / 30;
    }
    check_close(r.y.data, want, 12, 1e-6, "globalavgpool y");
    run_free(&r);
    gradcheck(l, shp(4, 2, 3, 4, 5), 1, 1e-2f, 9);
    gradcheck(l, shp(4, 2, 3, 1, 1), 1, 1e-2f, 10);
    dyn_layer_free(l);
}
END_TEST

/* ---- batchnorm ---- */

static void bn_randomize(dyn_layer *l, uint64_t seed) {
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    int64_t c = l->params[0].value.shape[0];
    tu_fill_uniform(dyn_layer_param(l, "weight")->value.data, c, &r, 0.5f, 1.5f);
    tu_fill_uniform(dyn_layer_param(l, "bias")->value.data, c, &r, -0.5f, 0.5f);
    tu_fill_uniform(dyn_layer_param(l, "running_mean")->value.data, c, &r, -0.5f, 0.5f);
    tu_fill_uniform(dyn_layer_param(l, "running_var")->value.data, c, &r, 0.5f, 2.0f);
}

START_TEST(test_bn_params) {
    dyn_layer *l = mk("batchnorm", "{\"channels\": 3}");
    ck_assert_int_eq(l->nparams, 4);
    const char *names[4] = {"weight", "bias", "running_mean", "running_var"};
    const int trainable[4] = {1, 1, 0, 0};
    const float init[4] = {1, 0, 0, 1};
    bn_randomize(l, 1);
    init_params(l, 1);
    for (int p = 0; p < 4; p++) {
        ck_assert_str_eq(l->params[p].name, names[p]);
        ck_assert_int_eq(l->params[p].trainable, trainable[p]);
        ck_assert_int_eq(l->params[p].value.ndim, 1);
        ck_assert_int_eq(l->params[p].value.shape[0], 3);
        ck_assert(trainable[p] ? l->params[p].grad.data != NULL : l->params[p].grad.data == NULL);
        for (int c = 0; c < 3; c++) ck_assert_float_eq(l->params[p].value.data[c], init[p]);
    }
    dyn_layer_stats st;
    dyn_shape one = shp(4, 1, 3, 5, 7);
    dyn_layer_stats_get(l, &one, &st);
    ck_assert_int_eq(st.macs, 3 * 35);
    ck_assert_int_eq(st.stored_floats, 12);
    dyn_layer_free(l);
}
END_TEST

START_TEST(test_bn_forward) {
    static const dyn_shape shapes[] = {
        {4, {3, 4, 5, 6}}, {2, {10, 4, 0, 0}}, {3, {2, 4, 7, 0}}, {4, {64, 4, 16, 16}}};
    for (size_t k = 0; k < DYN_ARRAY_LEN(shapes); k++) {
        dyn_layer *l = mk("batchnorm", "{\"channels\": 4, \"eps\": 0.001, \"momentum\": 0.2}");
        bn_randomize(l, 20 + k);
        const dyn_shape in = shapes[k];
        int64_t n = in.d[0], s = 1;
        for (int i = 2; i < in.ndim; i++) s *= in.d[i];
        const float *gamma = l->params[0].value.data, *beta = l->params[1].value.data;
        float *rm = l->params[2].value.data, *rv = l->params[3].value.data;
        run r;
        run_init(&r, l, in, 1, 30 + k);
        for (int64_t i = 0; i < dyn_tensor_numel(&r.x); i++) r.x.data[i] = 2 * r.x.data[i] + 0.7f;
        int64_t ny = dyn_tensor_numel(&r.y);
        double *want = malloc((size_t)ny * sizeof(double));

        /* Inference: running statistics, the layer unchanged. */
        for (int64_t i = 0; i < ny; i++) {
            int64_t c = (i / s) % 4;
            want[i] = (r.x.data[i] - rm[c]) / sqrt(rv[c] + 0.001) * gamma[c] + beta[c];
        }
        int64_t np;
        float *snap = params_snapshot(l, &np);
        run_fwd(&r, 0);
        check_close(r.y.data, want, ny, 1e-5, "bn eval y");
        assert_params_equal(l, snap);

        /* Training: batch statistics; running stats move with the unbiased variance. */
        double mean[4] = {0}, var[4] = {0};
        for (int64_t i = 0; i < ny; i++) mean[(i / s) % 4] += r.x.data[i];
        for (int c = 0; c < 4; c++) mean[c] /= (double)(n * s);
        for (int64_t i = 0; i < ny; i++) {
            double d = r.x.data[i] - mean[(i / s) % 4];
            var[(i / s) % 4] += d * d;
        }
        for (int c = 0; c < 4; c++) var[c] /= (double)(n * s);
        for (int64_t i = 0; i < ny; i++) {
            int64_t c = (i / s) % 4;
            want[i] = (r.x.data[i] - mean[c]) / sqrt(var[c] + 0.001) * gamma[c] + beta[c];
        }
        run_fwd(&r, 1);
        check_close(r.y.data, want, ny, 1e-4, "bn train y");
        double m = (double)(n * s);
        for (int c = 0; c < 4; c++) {
            double wm = 0.8 * snap[8 + c] + 0.2 * mean[c];
            double wv = 0.8 * snap[12 + c] + 0.2 * var[c] * m / (m - 1);
            ck_assert_double_eq_tol(rm[c], wm, 1e-5);
            ck_assert_double_eq_tol(rv[c], wv, 1e-5 * (1 + wv));
        }
        free(snap);
        free(want);
        run_free(&r);
        dyn_layer_free(l);
    }
}
END_TEST

START_TEST(test_bn_grad) {
    static const dyn_shape shapes[] = {{4, {4, 3, 3, 3}}, {2, {8, 5, 0, 0}}, {3, {3, 2, 4, 0}}};
    for (size_t k = 0; k < DYN_ARRAY_LEN(shapes); k++)
        for (int training = 0; training <= 1; training++) {
            char a[64];
            snprintf(a, sizeof a, "{\"channels\": %lld}", (long long)shapes[k].d[1]);
            dyn_layer *l = mk("batchnorm", a);
            bn_randomize(l, 40 + k);
            gradcheck(l, shapes[k], training, 1e-2f, 50 + k);
            dyn_layer_free(l);
        }
}
END_TEST

/* ---- relu, flatten ---- */

START_TEST(test_relu_flatten) {
    dyn_layer *l = mk("relu", "{}");
    run r;
    run_init(&r, l, shp(4, 2, 3, 4, 5), 0, 70);
    run_fwd(&r, 0);
    for (int64_t i = 0; i < dyn_tensor_numel(&r.x); i++)
        ck_assert_float_eq(r.y.data[i], r.x.data[i] > 0 ? r.x.data[i] : 0.0f);
    run_free(&r);
    gradcheck(l, shp(4, 2, 3, 4, 5), 1, 1e-4f, 71);
    gradcheck(l, shp(2, 7, 9, 0, 0), 1, 1e-4f, 72);
    dyn_layer_free(l);

    l = mk("flatten", "{}");
    run_init(&r, l, shp(4, 2, 3, 4, 5), 0, 73);
    ck_assert_int_eq(r.out.ndim, 2);
    ck_assert_int_eq(r.out.d[0], 2);
    ck_assert_int_eq(r.out.d[1], 60);
    run_fwd(&r, 0);
    ck_assert_int_eq(memcmp(r.y.data, r.x.data, 120 * sizeof(float)), 0);
    run_free(&r);
    gradcheck(l, shp(4, 2, 3, 4, 5), 1, 1e-2f, 74);
    dyn_layer_free(l);
}
END_TEST

/* ---- attributes ---- */

static const struct {
    const char *op, *attrs;
    dyn_shape in;
} roundtrip_cases[] = {
    {"linear", "{\"in\": 5, \"out\": 3}", {2, {2, 5}}},
    {"linear", "{\"in\": 5, \"out\": 3, \"bias\": 0}", {2, {2, 5}}},
    {"linear", "{\"in\": 5, \"out\": 3, \"bias\": true}", {2, {2, 5}}},
    {"conv2d", "{\"in_channels\": 4, \"out_channels\": 6, \"kernel\": 3}", {4, {1, 4, 9, 9}}},
    {"conv2d",
     "{\"in_channels\": 4, \"out_channels\": 6, \"kernel_h\": 3, \"kernel_w\": 1, \"stride_h\": "
     "2, \"stride_w\": 1, \"padding\": 1, \"dilation_w\": 2, \"groups\": 2, \"bias\": 0}",
     {4, {2, 4, 9, 8}}},
    {"conv2d",
     "{\"in_channels\": 3, \"out_channels\": 3, \"kernel_h\": 5, \"kernel_w\": 5, \"stride\": 2, "
     "\"groups\": 3}",
     {4, {1, 3, 11, 11}}},
    {"conv2d", "{\"in_channels\": 2, \"out_channels\": 2, \"kernel\": 3, \"kernel_w\": 1}",
     {4, {1, 2, 5, 5}}},
    {"maxpool2d", "{\"kernel\": 2}", {4, {1, 2, 8, 8}}},
    {"maxpool2d", "{\"kernel\": 3, \"stride\": 2, \"padding\": 1, \"ceil_mode\": 1}",
     {4, {1, 2, 8, 8}}},
    {"maxpool2d", "{\"kernel_h\": 3, \"kernel_w\": 2}", {4, {1, 2, 8, 8}}},
    {"avgpool2d", "{\"kernel\": 3, \"stride\": 1, \"padding\": 1, \"count_include_pad\": 0}",
     {4, {1, 2, 8, 8}}},
    {"avgpool2d", "{\"kernel\": 2, \"ceil_mode\": true}", {4, {1, 2, 7, 7}}},
    {"globalavgpool", "{}", {4, {1, 2, 8, 8}}},
    {"batchnorm", "{\"channels\": 8}", {4, {1, 8, 3, 3}}},
    {"batchnorm", "{\"channels\": 8, \"eps\": 1e-3, \"momentum\": 0.01}", {2, {4, 8}}},
    {"relu", "{}", {2, {4, 8}}},
    {"flatten", "{}", {4, {2, 3, 4, 5}}},
};

START_TEST(test_attrs_roundtrip) {
    const char *op = roundtrip_cases[_i].op;
    dyn_layer *l1 = mk(op, roundtrip_cases[_i].attrs);
    json_t *a1 = l1->ops->attrs(l1);
    ck_assert_ptr_nonnull(a1);
    char *text = json_dumps(a1, JSON_SORT_KEYS);
    dyn_layer *l2 = mk(op, text);
    json_t *a2 = l2->ops->attrs(l2);
    char *text2 = json_dumps(a2, JSON_SORT_KEYS);
    ck_assert_msg(json_equal(a1, a2), "%s: %s != %s", op, text, text2);
    ck_assert_str_eq(text, text2);
    ck_assert_int_eq(l1->nparams, l2->nparams);
    for (int p = 0; p < l1->nparams; p++) {
        ck_assert_str_eq(l1->params[p].name, l2->params[p].name);
        ck_assert_int_eq(l1->params[p].trainable, l2->params[p].trainable);
        dyn_shape s1 = dyn_tensor_shape(&l1->params[p].value);
        dyn_shape s2 = dyn_tensor_shape(&l2->params[p].value);
        ck_assert(dyn_shape_eq(&s1, &s2));
    }
    dyn_shape o1, o2;
    dyn_err err = {0};
    ck_assert_msg(l1->ops->infer(l1, &roundtrip_cases[_i].in, &o1, &err) == 0, "%s", err.msg);
    ck_assert_msg(l2->ops->infer(l2, &roundtrip_cases[_i].in, &o2, &err) == 0, "%s", err.msg);
    ck_assert(dyn_shape_eq(&o1, &o2));
    /* The same layer again from the original attributes gives the same attributes. */
    dyn_layer *l3 = mk(op, roundtrip_cases[_i].attrs);
    json_t *a3 = l3->ops->attrs(l3);
    ck_assert(json_equal(a1, a3));
    free(text);
    free(text2);
    json_decref(a1);
    json_decref(a2);
    json_decref(a3);
    dyn_layer_free(l1);
    dyn_layer_free(l2);
    dyn_layer_free(l3);
}
END_TEST

/* Defaults are written out explicitly. */
START_TEST(test_attrs_defaults) {
    dyn_layer *l = mk("conv2d", "{\"in_channels\": 2, \"out_channels\": 4, \"kernel\": 3}");
    json_t *a = l->ops->attrs(l);
    char *t = json_dumps(a, JSON_SORT_KEYS | JSON_COMPACT);
    ck_assert_str_eq(t, "{\"bias\":1,\"dilation\":1,\"groups\":1,\"in_channels\":2,\"kernel\":3,"
                        "\"out_channels\":4,\"padding\":0,\"stride\":1}");
    free(t);
    json_decref(a);
    dyn_layer_free(l);

    l = mk("maxpool2d", "{\"kernel_h\": 3, \"kernel_w\": 2}");
    a = l->ops->attrs(l);
    t = json_dumps(a, JSON_SORT_KEYS | JSON_COMPACT);
    ck_assert_str_eq(t, "{\"ceil_mode\":0,\"kernel_h\":3,\"kernel_w\":2,\"padding\":0,"
                        "\"stride_h\":3,\"stride_w\":2}");
    free(t);
    json_decref(a);
    dyn_layer_free(l);

    l = mk("batchnorm", "{\"channels\": 2}");
    a = l->ops->attrs(l);
    ck_assert_double_eq(json_real_value(json_object_get(a, "eps")), 1e-5);
    ck_assert_double_eq(json_real_value(json_object_get(a, "momentum")), 0.1);
    json_decref(a);
    dyn_layer_free(l);
}
END_TEST

START_TEST(test_bad_attrs) {
    mk_fails("linear", "{\"out\": 3}", "'in'");
    mk_fails("linear", "{\"in\": 0, \"out\": 3}", "'in'");
    mk_fails("linear", "{\"in\": 4, \"out\": 3, \"bias\": 2}", "'bias'");
    mk_fails("linear", "{\"in\": \"4\", \"out\": 3}", "must be an integer");
    mk_fails("conv2d", "{\"in_channels\": 4, \"out_channels\": 6, \"kernel\": 3, \"groups\": 3}",
             "in_channels = 4 is not divisible by groups = 3");
    mk_fails("conv2d", "{\"in_channels\": 4, \"out_channels\": 6, \"kernel\": 3, \"groups\": 4}",
             "out_channels = 6 is not divisible by groups = 4");
    mk_fails("conv2d", "{\"in_channels\": 4, \"out_channels\": 6, \"kernel\": 0}", "'kernel'");
    mk_fails("conv2d", "{\"in_channels\": 4, \"out_channels\": 6}", "'kernel'");
    mk_fails("conv2d", "{\"in_channels\": 4, \"out_channels\": 6, \"kernel_h\": 3}", "required");
    mk_fails("conv2d", "{\"in_channels\": 4, \"out_channels\": 6, \"kernel\": 3, \"stride\": 0}",
             "'stride'");
    mk_fails("conv2d",
             "{\"in_channels\": 4, \"out_channels\": 6, \"kernel\": 3, \"padding_w\": -1}",
             "'padding_w'");
    mk_fails("conv2d", "{\"in_channels\": 4, \"out_channels\": 6, \"kernel\": 3, \"dilation\": 0}",
             "'dilation'");
    mk_fails("conv2d", "{\"in_channels\": 4, \"out_channels\": 6, \"kernel\": 3, \"groups\": 0}",
             "'groups'");
    mk_fails("conv2d", "{\"out_channels\": 6, \"kernel\": 3}", "'in_channels'");
    mk_fails("conv2d", "{\"in_channels\": 4, \"out_channels\": 6, \"kernel\": [3, 3]}",
             "must be an integer");
    mk_fails("maxpool2d", "{}", "'kernel'");
    mk_fails("maxpool2d", "{\"kernel\": 2, \"padding\": 2}", "more than half the kernel");
    mk_fails("avgpool2d", "{\"kernel\": 0}", "'kernel'");
    mk_fails("avgpool2d", "{\"kernel\": 2, \"count_include_pad\": 3}", "'count_include_pad'");
    mk_fails("avgpool2d", "{\"kernel\": 2, \"ceil_mode\": 2}", "'ceil_mode'");
    mk_fails("batchnorm", "{}", "'channels'");
    mk_fails("batchnorm", "{\"channels\": 0}", "'channels'");
    mk_fails("batchnorm", "{\"channels\": 4, \"eps\": 0}", "'eps'");
    mk_fails("batchnorm", "{\"channels\": 4, \"eps\": \"small\"}", "'eps'");
    mk_fails("batchnorm", "{\"channels\": 4, \"momentum\": 1.5}", "'momentum'");
}
END_TEST

START_TEST(test_bad_input_shapes) {
    dyn_layer *l = mk("linear", "{\"in\": 8, \"out\": 3}");
    infer_fails(l, shp(2, 4, 7, 0, 0), "expects input [N, 8]");
    infer_fails(l, shp(4, 4, 2, 2, 2), "flatten");
    dyn_layer_free(l);

    l = mk("conv2d", "{\"in_channels\": 3, \"out_channels\": 4, \"kernel\": 5, \"dilation\": 2}");
    infer_fails(l, shp(4, 2, 4, 16, 16), "expects 3 input channels");
    infer_fails(l, shp(4, 2, 3, 8, 16), "output would be empty");
    infer_fails(l, shp(2, 2, 3, 0, 0), "expects input [N, 3, H, W]");
    infer_fails(l, shp(4, 0, 3, 16, 16), "empty");
    dyn_layer_free(l);

    l = mk("maxpool2d", "{\"kernel\": 3}");
    infer_fails(l, shp(4, 1, 1, 2, 8), "output would be empty");
    infer_fails(l, shp(3, 1, 8, 8, 0), "expects input [N, C, H, W]");
    dyn_layer_free(l);

    l = mk("globalavgpool", "{}");
    infer_fails(l, shp(2, 4, 8, 0, 0), "[N, C, H, W]");
    dyn_layer_free(l);

    l = mk("batchnorm", "{\"channels\": 6}");
    infer_fails(l, shp(4, 2, 5, 3, 3), "expects input [N, 6]");
    infer_fails(l, shp(1, 6, 0, 0, 0), "expects input");
    dyn_layer_free(l);
}
END_TEST

/* Forward in inference leaves every op's parameters untouched. */
START_TEST(test_eval_does_not_mutate) {
    const char *op = roundtrip_cases[_i].op;
    dyn_layer *l = mk(op, roundtrip_cases[_i].attrs);
    init_params(l, 90);
    if (!strcmp(op, "batchnorm")) bn_randomize(l, 91);
    int64_t n;
    float *snap = params_snapshot(l, &n);
    run r;
    run_init(&r, l, roundtrip_cases[_i].in, 0, 92);
    run_fwd(&r, 0);
    assert_params_equal(l, snap);
    run_free(&r);
    free(snap);
    dyn_layer_free(l);
}
END_TEST

/* ---- losses ---- */

/* The distillation loss: with one-hot targets at T = 1 it is the cross-entropy; its gradient
 * matches central differences at T = 2.5 with soft targets; it counts argmax agreement. */
START_TEST(test_soft_xent) {
    enum { B = 3, C = 5 };
    float z[B * C], p[B * C], d[B * C], d1[B * C];
    dyn_rng r;
    dyn_rng_seed(&r, 7);
    for (int i = 0; i < B * C; i++) z[i] = 3.0f * (dyn_rng_uniform(&r) - 0.5f);
    int y[B] = {1, 4, 0}, ok1 = -1, ok2 = -1;
    memset(p, 0, sizeof p);
    for (int b = 0; b < B; b++) p[b * C + y[b]] = 1;
    float l1 = dyn_softmax_xent(z, y, B, C, d1, &ok1);
    float l2 = dyn_soft_xent(z, p, B, C, 1.0f, d, &ok2);
    ck_assert_float_eq_tol(l1, l2, 1e-5f);
    ck_assert_int_eq(ok1, ok2);
    for (int i = 0; i < B * C; i++) ck_assert_float_eq_tol(d[i], d1[i], 1e-6f);
    for (int i = 0; i < B * C; i++) p[i] = dyn_rng_uniform(&r) + 0.05f;
    dyn_softmax(p, B, C);
    const float T = 2.5f;
    dyn_soft_xent(z, p, B, C, T, d, NULL);
    for (int i = 0; i < B * C; i++) {
        const float h = 1e-2f, z0 = z[i];
        z[i] = z0 + h;
        double lp = dyn_soft_xent(z, p, B, C, T, NULL, NULL);
        z[i] = z0 - h;
        double lm = dyn_soft_xent(z, p, B, C, T, NULL, NULL);
        z[i] = z0;
        ck_assert_msg(fabs((lp - lm) / (2 * h) - d[i]) < 2e-3, "d[%d] %g vs %g", i, (double)d[i],
                      (lp - lm) / (2 * h));
    }
    /* targets equal to the model's own tempered softmax: zero gradient, loss = T² · entropy */
    memcpy(p, z, sizeof z);
    for (int i = 0; i < B * C; i++) p[i] /= T;
    dyn_softmax(p, B, C);
    int ok = 0;
    dyn_soft_xent(z, p, B, C, T, d, &ok);
    ck_assert_int_eq(ok, B);
    for (int i = 0; i < B * C; i++) ck_assert_float_eq_tol(d[i], 0.0f, 1e-6f);
}
END_TEST

static Suite *ops_suite(void) {
    Suite *s = suite_create("ops");
    TCase *tc = tcase_create("loss");
    tcase_add_test(tc, test_soft_xent);
    suite_add_tcase(s, tc);

    tc = tcase_create("linear");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_linear_forward);
    tcase_add_test(tc, test_linear_grad);
    tcase_add_test(tc, test_linear_accumulates);
    suite_add_tcase(s, tc);

    tc = tcase_create("conv2d");
    tcase_set_timeout(tc, 300);
    tcase_add_loop_test(tc, test_conv_forward, 0, (int)DYN_ARRAY_LEN(conv_cases));
    /* The last (large) case is for the forward only. */
    tcase_add_loop_test(tc, test_conv_grad, 0, (int)DYN_ARRAY_LEN(conv_cases) - 1);
    tcase_add_test(tc, test_conv_no_dx);
    suite_add_tcase(s, tc);

    tc = tcase_create("pool");
    tcase_set_timeout(tc, 120);
    tcase_add_loop_test(tc, test_pool_forward, 0, (int)DYN_ARRAY_LEN(pool_cases));
    tcase_add_test(tc, test_pool_known_values);
    tcase_add_test(tc, test_maxpool_ties);
    tcase_add_test(tc, test_isa_dispatch);
    tcase_add_loop_test(tc, test_pool_grad, 0, (int)DYN_ARRAY_LEN(pool_cases));
    tcase_add_test(tc, test_globalavgpool);
    suite_add_tcase(s, tc);

    tc = tcase_create("batchnorm");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_bn_params);
    tcase_add_test(tc, test_bn_forward);
    tcase_add_test(tc, test_bn_grad);
    suite_add_tcase(s, tc);

    tc = tcase_create("act");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_relu_flatten);
    suite_add_tcase(s, tc);

    tc = tcase_create("attrs");
    tcase_set_timeout(tc, 60);
    tcase_add_loop_test(tc, test_attrs_roundtrip, 0, (int)DYN_ARRAY_LEN(roundtrip_cases));
    tcase_add_test(tc, test_attrs_defaults);
    tcase_add_test(tc, test_bad_attrs);
    tcase_add_test(tc, test_bad_input_shapes);
    tcase_add_loop_test(tc, test_eval_does_not_mutate, 0, (int)DYN_ARRAY_LEN(roundtrip_cases));
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(ops_suite)
