/* test_cuda_kern_tf.c — the CUDA kernel bodies of the element-wise and transformer ops
 * (engine/cuda/kern_tf.h) run on the host, each over all its indices as engine/cuda/tf.cu
 * launches it, against the CPU ops of engine/ops/ on random inputs and random parameters
 * (forward, dx of every input, and parameter gradients accumulated onto random starting
 * values). Runs in CI, where no GPU is: it tests the kernels' index arithmetic and formulas;
 * tests/gpu/test_ops_tf.c tests the launches, the glue and cuBLAS (matmul has no body). The
 * last test checks the glue's op tables where no device runs (their error path).
 *
 * Outputs of the bodies start as NaN, so an element no index writes fails. Tolerance: relative
 * L2 error 1e-6 (the bodies evaluate the CPU's formulas in its order; only the rounding of
 * contracted multiply-adds may differ), 1e-5 for layernorm's backward (its bodies keep the row
 * statistics in float between the two passes, the CPU in double).
 */
#include <math.h>
#include <string.h>

#include "cuda/dyn_cuda.h"
#include "cuda/kern_tf.h"
#include "cuda/op_tf.h"
#include "ops/affine_impl.h"
#include "ops/cat_param_impl.h"
#include "ops/layernorm_impl.h"
#include "ops/permute_impl.h"
#include "ops/reduce_impl.h"
#include "ops/unary_impl.h"
#include "testutil.h"

#define TOL 1e-6
#define TOL_LN 1e-5

/* One op on one set of shapes: the CPU's results and the bodies' (suffix k). */
typedef struct tc {
    dyn_layer *l;
    int n; /* inputs */
    dyn_tensor x[DYN_LAYER_MAX_INPUTS], y, dy, dx[DYN_LAYER_MAX_INPUTS];
    dyn_tensor yk, dxk[DYN_LAYER_MAX_INPUTS];
    float *gk[DYN_LAYER_MAX_PARAMS]; /* parameter gradients of the bodies (trainable ones) */
    int64_t batch;
} tc;

static void nan_fill(dyn_tensor *t) {
    for (int64_t i = 0; i < dyn_tensor_numel(t); i++) t->data[i] = NAN;
}

/* Creates op(attrs), fills inputs U(lo, hi), parameters U(-1, 1) (positive for none: the ops
 * here take any), dy U(-1, 1) and parameter gradients U(-1, 1) (copied to gk), then runs the
 * CPU forward (training) and backward. */
static void tc_init(tc *t, const char *op, const char *attrs, int n, const dyn_shape *in,
                    float lo, float hi, uint64_t seed) {
    memset(t, 0, sizeof *t);
    json_error_t jerr;
    json_t *a = json_loads(attrs, 0, &jerr);
    ck_assert_msg(a != NULL, "bad test JSON %s: %s", attrs, jerr.text);
    dyn_err err = {0};
    t->l = dyn_layer_create(op, "t", a, &err);
    json_decref(a);
    ck_assert_msg(t->l != NULL, "%s %s: %s", op, attrs, err.msg);
    t->n = n;
    t->batch = in[0].d[0];
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    dyn_shape out;
    ck_assert_msg(t->l->ops->infer(t->l, in, &out, &err) == 0, "%s infer: %s", op, err.msg);
    for (int k = 0; k < n; k++) {
        ck_assert_int_eq(dyn_tensor_init_shape(&t->x[k], &in[k], NULL), 0);
        ck_assert_int_eq(dyn_tensor_init_shape(&t->dx[k], &in[k], NULL), 0);
        ck_assert_int_eq(dyn_tensor_init_shape(&t->dxk[k], &in[k], NULL), 0);
        tu_fill_uniform(t->x[k].data, dyn_tensor_numel(&t->x[k]), &r, lo, hi);
        nan_fill(&t->dxk[k]);
    }
    ck_assert_int_eq(dyn_tensor_init_shape(&t->y, &out, NULL), 0);
    ck_assert_int_eq(dyn_tensor_init_shape(&t->dy, &out, NULL), 0);
    ck_assert_int_eq(dyn_tensor_init_shape(&t->yk, &out, NULL), 0);
    tu_fill_uniform(t->dy.data, dyn_tensor_numel(&t->dy), &r, -1.0f, 1.0f);
    nan_fill(&t->yk);
    for (int i = 0; i < t->l->nparams; i++) {
        dyn_param *p = &t->l->params[i];
        const int64_t m = dyn_tensor_numel(&p->value);
        tu_fill_uniform(p->value.data, m, &r, -1.0f, 1.0f);
        if (!p->trainable) continue;
        tu_fill_uniform(p->grad.data, m, &r, -1.0f, 1.0f);
        t->gk[i] = malloc((size_t)m * sizeof(float));
        memcpy(t->gk[i], p->grad.data, (size_t)m * sizeof(float));
    }
    size_t ns = t->l->ops->scratch ? t->l->ops->scratch(t->l, in, 1) : 0;
    float *s = ns ? dyn_alloc_zero(ns * sizeof(float)) : NULL;
    t->l->ops->forward(t->l, t->x, &t->y, s, 1);
    t->l->ops->backward(t->l, t->x, &t->y, &t->dy, t->dx, s);
    dyn_free(s);
}

static void cmp(const char *what, const tc *t, const float *got, const float *want, int64_t n,
                double tol) {
    const double e = tu_rel_err(got, want, n);
    ck_assert_msg(e <= tol, "%s %s: %s relative error %g (tolerance %g)", t->l->ops->name,
                  t->l->name, what, e, tol);
}

/* Compares the bodies' forward, dx (inputs 0..nd-1) and parameter gradients with the CPU's. */
static void tc_check(tc *t, int nd, double tol_bwd) {
    cmp("y", t, t->yk.data, t->y.data, dyn_tensor_numel(&t->y), TOL);
    for (int k = 0; k < nd; k++)
        cmp("dx", t, t->dxk[k].data, t->dx[k].data, dyn_tensor_numel(&t->dx[k]), tol_bwd);
    for (int i = 0; i < t->l->nparams; i++)
        if (t->gk[i])
            cmp(t->l->params[i].name, t, t->gk[i], t->l->params[i].grad.data,
                dyn_tensor_numel(&t->l->params[i].grad), tol_bwd);
}

static void tc_free(tc *t) {
    for (int k = 0; k < t->n; k++) {
        dyn_tensor_release(&t->x[k]);
        dyn_tensor_release(&t->dx[k]);
        dyn_tensor_release(&t->dxk[k]);
    }
    dyn_tensor_release(&t->y);
    dyn_tensor_release(&t->dy);
    dyn_tensor_release(&t->yk);
    for (int i = 0; i < DYN_LAYER_MAX_PARAMS; i++) free(t->gk[i]);
    dyn_layer_free(t->l);
}

static dyn_shape shp(int ndim, int64_t a, int64_t b, int64_t c, int64_t d) {
    dyn_shape s = {.ndim = ndim, .d = {a, b, c, d}};
    for (int i = ndim; i < DYN_MAX_DIMS; i++) s.d[i] = 0;
    return s;
}

#define NUMEL(t) dyn_tensor_numel(&(t))

/* One layer's attributes and input shape. */
typedef struct acase {
    const char *attrs;
    dyn_shape in;
} acase;

/* ---- mul, sub, div ---- */

static void bin_case(const char *op, int kind, dyn_shape a, dyn_shape b, uint64_t seed) {
    const dyn_shape in[2] = {a, b};
    tc t;
    /* positive inputs keep div away from 0 */
    tc_init(&t, op, "{}", 2, in, kind == DYN_KBIN_DIV ? 0.5f : -1.0f, 2.0f, seed);
    dyn_kbin g;
    dyn_kbin_geom(&g, kind, a.ndim, t.x[0].shape, t.x[1].shape);
    for (int64_t i = 0; i < NUMEL(t.y); i++)
        dyn_kbin_fwd(&g, t.x[0].data, t.x[1].data, t.yk.data, i);
    for (int w = 0; w < 2; w++)
        for (int64_t j = 0; j < NUMEL(t.x[w]); j++)
            dyn_kbin_bwd(&g, w, t.x[0].data, t.x[1].data, t.y.data, t.dy.data, t.dxk[w].data, j);
    tc_check(&t, 2, TOL);
    tc_free(&t);
}

START_TEST(binary_broadcast) {
    static const struct {
        const char *op;
        int kind;
    } ops[] = {{"mul", DYN_KBIN_MUL}, {"sub", DYN_KBIN_SUB}, {"div", DYN_KBIN_DIV}};
    const dyn_shape sh[][2] = {
        {shp(4, 2, 3, 4, 5), shp(4, 2, 3, 4, 5)}, /* same shape */
        {shp(4, 2, 3, 4, 5), shp(4, 2, 3, 1, 1)}, /* SE gate: x * s[N, C, 1, 1] */
        {shp(4, 2, 1, 4, 5), shp(4, 2, 3, 4, 1)}, /* both broadcast */
        {shp(3, 2, 5, 8, 0), shp(3, 2, 5, 1, 0)},       /* (x - mean[N, T, 1]) */
        {shp(3, 2, 1, 8, 0), shp(3, 2, 5, 8, 0)},       /* a broadcast */
        {shp(2, 3, 4, 0, 0), shp(2, 3, 1, 0, 0)},
    };
    for (size_t o = 0; o < DYN_ARRAY_LEN(ops); o++)
        for (size_t s = 0; s < DYN_ARRAY_LEN(sh); s++)
            bin_case(ops[o].op, ops[o].kind, sh[s][0], sh[s][1], 100 + 10 * o + s);
}
END_TEST

/* ---- sigmoid, clip, erf, sqrt, pow ---- */

static void un_case(const char *op, const char *attrs, int kind, float lo, float hi) {
    const dyn_shape in = shp(3, 2, 5, 7, 0);
    tc t;
    tc_init(&t, op, attrs, 1, &in, lo, hi, 7);
    float p0 = 0.0f, p1 = 0.0f;
    if (kind == DYN_KUN_CLIP) {
        const clip_impl *c = t.l->impl;
        p0 = c->lo;
        p1 = c->hi;
    } else if (kind == DYN_KUN_POW) {
        p0 = ((const pow_impl *)t.l->impl)->p;
    }
    for (int64_t i = 0; i < NUMEL(t.y); i++) dyn_kun_fwd(kind, p0, p1, t.x[0].data, t.yk.data, i);
    for (int64_t i = 0; i < NUMEL(t.y); i++)
        dyn_kun_bwd(kind, p0, p1, t.x[0].data, t.y.data, t.dy.data, t.dxk[0].data, i);
    tc_check(&t, 1, TOL);
    tc_free(&t);
}

START_TEST(unary) {
    un_case("sigmoid", "{}", DYN_KUN_SIGMOID, -8.0f, 8.0f);
    un_case("clip", "{\"min\": -0.5, \"max\": 0.7}", DYN_KUN_CLIP, -1.0f, 1.0f);
    un_case("clip", "{\"max\": 0.25}", DYN_KUN_CLIP, -1.0f, 1.0f);
    un_case("clip", "{\"min\": 0}", DYN_KUN_CLIP, -1.0f, 1.0f);
    un_case("erf", "{}", DYN_KUN_ERF, -2.5f, 2.5f);
    un_case("sqrt", "{}", DYN_KUN_SQRT, 0.05f, 4.0f);
    un_case("pow", "{\"exponent\": 2}", DYN_KUN_POW, -2.0f, 2.0f);
    un_case("pow", "{\"exponent\": 3}", DYN_KUN_POW, -2.0f, 2.0f);
    un_case("pow", "{\"exponent\": 0.5}", DYN_KUN_POW, 0.1f, 3.0f);
    un_case("pow", "{\"exponent\": 0}", DYN_KUN_POW, 0.1f, 3.0f);
}
END_TEST

/* ---- scale ---- */

static void scale_case(const char *attrs, dyn_shape in) {
    tc t;
    tc_init(&t, "scale", attrs, 1, &in, -1.0f, 1.0f, 11);
    dyn_layer *l = t.l;
    const int64_t ch = in.d[1], inner = NUMEL(t.x[0]) / (t.batch * ch);
    const float *w = l->params[0].value.data, *b = l->params[1].value.data;
    for (int64_t i = 0; i < NUMEL(t.y); i++)
        dyn_kscale_fwd(ch, inner, w, b, t.x[0].data, t.yk.data, i);
    for (int64_t i = 0; i < NUMEL(t.y); i++)
        dyn_kscale_dx(ch, inner, w, t.dy.data, t.dxk[0].data, i);
    if (t.gk[0])
        for (int64_t c = 0; c < ch; c++)
            dyn_kscale_dwb(t.batch, ch, inner, t.x[0].data, t.dy.data, t.gk[0], t.gk[1], c);
    tc_check(&t, 1, TOL);
    tc_free(&t);
}

START_TEST(scale) {
    scale_case("{\"channels\": 3}", shp(4, 2, 3, 4, 5));
    scale_case("{\"channels\": 4}", shp(2, 5, 4, 0, 0));
    scale_case("{\"channels\": 3, \"trainable\": 0}", shp(3, 2, 3, 6, 0));
}
END_TEST

/* ---- softmax, layernorm ---- */

START_TEST(softmax) {
    const dyn_shape sh[] = {shp(2, 3, 7, 0, 0), shp(4, 2, 3, 5, 6), shp(3, 2, 4, 1, 0)};
    for (size_t s = 0; s < DYN_ARRAY_LEN(sh); s++) {
        tc t;
        tc_init(&t, "softmax", "{}", 1, &sh[s], -4.0f, 4.0f, 20 + s);
        const int64_t n = sh[s].d[sh[s].ndim - 1], rows = NUMEL(t.y) / n;
        for (int64_t r = 0; r < rows; r++) dyn_ksoftmax_fwd(n, t.x[0].data, t.yk.data, r);
        for (int64_t r = 0; r < rows; r++)
            dyn_ksoftmax_bwd(n, t.y.data, t.dy.data, t.dxk[0].data, r);
        tc_check(&t, 1, TOL);
        tc_free(&t);
    }
}
END_TEST

START_TEST(layernorm) {
    const acase cs[] = {{"{\"dim\": 8}", shp(2, 4, 8, 0, 0)},
                        {"{\"dim\": 16, \"eps\": 0.001}", shp(3, 2, 5, 16, 0)},
                        {"{\"dim\": 5}", shp(4, 2, 3, 2, 5)}};
    for (size_t c = 0; c < DYN_ARRAY_LEN(cs); c++) {
        tc t;
        /* an offset mean, as activations have */
        tc_init(&t, "layernorm", cs[c].attrs, 1, &cs[c].in, -1.0f, 3.0f, 30 + c);
        const ln_impl *p = t.l->impl;
        const int64_t n = p->dim, rows = NUMEL(t.y) / n;
        const float *w = t.l->params[0].value.data, *b = t.l->params[1].value.data;
        float *st = malloc((size_t)(2 * rows) * sizeof(float));
        for (int64_t r = 0; r < rows; r++) dyn_kln_fwd(n, p->eps, w, b, t.x[0].data, t.yk.data, r);
        for (int64_t r = 0; r < rows; r++)
            dyn_kln_bwd_row(n, p->eps, w, t.x[0].data, t.dy.data, t.dxk[0].data, st, r);
        for (int64_t i = 0; i < n; i++)
            dyn_kln_dwb(rows, n, t.x[0].data, t.dy.data, st, t.gk[0], t.gk[1], i);
        tc_check(&t, 1, TOL_LN);
        free(st);
        tc_free(&t);
    }
}
END_TEST

/* ---- permute ---- */

START_TEST(permute) {
    const acase cs[] = {
        {"{\"dims\": [4, 6], \"perm\": [1, 0], \"shape\": [6, 4]}", shp(3, 2, 4, 6, 0)},
        /* ViT heads: [T, H, d] -> [H, T, d] */
        {"{\"dims\": [5, 2, 3], \"perm\": [1, 0, 2], \"shape\": [2, 5, 3]}", shp(3, 2, 5, 6, 0)},
        /* a strided slice of a permuted atom */
        {"{\"dims\": [3, 4, 5], \"perm\": [2, 0, 1], \"axis\": 1, \"start\": 1, \"len\": 2, "
         "\"step\": 2, \"shape\": [5, 3, 2]}",
         shp(2, 3, 60, 0, 0)},
        /* the class token: token 0 of [T, D] */
        {"{\"dims\": [10, 4], \"axis\": 0, \"start\": 0, \"len\": 1, \"shape\": [4]}",
         shp(3, 2, 10, 4, 0)},
        /* reshape only */
        {"{\"dims\": [24], \"shape\": [2, 3, 4]}", shp(2, 3, 24, 0, 0)},
        /* a slice of the last atom, kept in place */
        {"{\"dims\": [3, 8], \"axis\": 1, \"start\": 2, \"len\": 3, \"shape\": [3, 3]}",
         shp(3, 2, 3, 8, 0)},
    };
    for (size_t c = 0; c < DYN_ARRAY_LEN(cs); c++) {
        tc t;
        tc_init(&t, "permute", cs[c].attrs, 1, &cs[c].in, -1.0f, 1.0f, 40 + c);
        const perm_impl *p = t.l->impl;
        dyn_kperm g;
        dyn_kperm_geom(&g, p->k, p->dims, p->perm, p->axis, p->start, p->len, p->step, p->nrun,
                       p->osz, p->ist, p->base, p->in_numel, p->out_numel);
        for (int64_t i = 0; i < NUMEL(t.y); i++) dyn_kperm_fwd(&g, t.x[0].data, t.yk.data, i);
        for (int64_t j = 0; j < NUMEL(t.x[0]); j++) dyn_kperm_bwd(&g, t.dy.data, t.dxk[0].data, j);
        tc_check(&t, 1, TOL);
        tc_free(&t);
    }
}
END_TEST

/* ---- concat ---- */

START_TEST(concat) {
    const dyn_shape a[] = {shp(3, 2, 3, 4, 0), shp(3, 2, 5, 4, 0)};
    const dyn_shape b[] = {shp(4, 2, 1, 3, 3), shp(4, 2, 2, 3, 3), shp(4, 2, 4, 3, 3),
                           shp(4, 2, 3, 3, 3)};
    for (int c = 0; c < 3; c++) {
        const dyn_shape *in = c == 0 ? a : b;
        const int n = c == 0 ? 2 : c == 1 ? 3 : 4;
        char attrs[64];
        snprintf(attrs, sizeof attrs, "{\"inputs\": %d}", n);
        tc t;
        tc_init(&t, "concat", attrs, n, in, -1.0f, 1.0f, 50 + c);
        dyn_kcat g = {.n = n};
        int64_t off = 0;
        for (int k = 0; k < n; k++) {
            g.xs[k] = NUMEL(t.x[k]) / t.batch;
            g.off[k] = off;
            off += g.xs[k];
        }
        g.ys = off;
        const float *x3 = n > 3 ? t.x[3].data : NULL, *x2 = n > 2 ? t.x[2].data : NULL;
        for (int64_t i = 0; i < NUMEL(t.y); i++)
            dyn_kcat_fwd(&g, t.x[0].data, t.x[1].data, x2, x3, t.yk.data, i);
        for (int k = 0; k < n; k++)
            for (int64_t j = 0; j < NUMEL(t.x[k]); j++)
                dyn_kcat_bwd(&g, k, t.dy.data, t.dxk[k].data, j);
        tc_check(&t, n, TOL);
        tc_free(&t);
    }
}
END_TEST

/* ---- reduce_mean ---- */

START_TEST(reduce_mean) {
    const acase cs[] = {{"{\"axis\": 1}", shp(3, 2, 5, 6, 0)},
                        {"{\"axis\": 2, \"keepdims\": 1}", shp(4, 2, 3, 4, 5)},
                        {"{\"axis\": 3}", shp(4, 2, 3, 4, 5)},
                        {"{\"axis\": 1, \"keepdims\": 1}", shp(2, 3, 7, 0, 0)}};
    for (size_t c = 0; c < DYN_ARRAY_LEN(cs); c++) {
        tc t;
        tc_init(&t, "reduce_mean", cs[c].attrs, 1, &cs[c].in, -1.0f, 1.0f, 60 + c);
        const rm_impl *p = t.l->impl;
        int64_t outer, n, inner;
        rm_geom(p, &t.x[0], &outer, &n, &inner);
        for (int64_t i = 0; i < outer * inner; i++)
            dyn_kmean_fwd(n, inner, t.x[0].data, t.yk.data, i);
        for (int64_t j = 0; j < NUMEL(t.x[0]); j++)
            dyn_kmean_bwd(n, inner, t.dy.data, t.dxk[0].data, j);
        tc_check(&t, 1, TOL);
        tc_free(&t);
    }
}
END_TEST

/* ---- affine ---- */

static int pidx(const dyn_layer *l, const char *name) {
    for (int i = 0; i < l->nparams; i++)
        if (strcmp(l->params[i].name, name) == 0) return i;
    return -1;
}

START_TEST(affine) {
    const acase cs[] = {{"{\"shape\": [6]}", shp(3, 2, 5, 6, 0)},
                        {"{\"shape\": [1], \"bias\": 0}", shp(2, 3, 4, 0, 0)},
                        {"{\"shape\": [5, 6], \"weight\": 0}", shp(3, 2, 5, 6, 0)},
                        {"{\"shape\": [3, 2, 2], \"trainable\": 0}", shp(4, 2, 3, 2, 2)}};
    for (size_t c = 0; c < DYN_ARRAY_LEN(cs); c++) {
        tc t;
        tc_init(&t, "affine", cs[c].attrs, 1, &cs[c].in, -1.0f, 1.0f, 70 + c);
        const af_impl *p = t.l->impl;
        const int iw = pidx(t.l, "weight"), ib = pidx(t.l, "bias");
        const float *w = iw >= 0 ? t.l->params[iw].value.data : NULL;
        const float *b = ib >= 0 ? t.l->params[ib].value.data : NULL;
        float *dw = iw >= 0 ? t.gk[iw] : NULL, *db = ib >= 0 ? t.gk[ib] : NULL;
        const int64_t P = p->period, rows = NUMEL(t.x[0]) / P;
        for (int64_t i = 0; i < NUMEL(t.y); i++)
            dyn_kaffine_fwd(P, w, b, t.x[0].data, t.yk.data, i);
        for (int64_t i = 0; i < NUMEL(t.y); i++) dyn_kaffine_dx(P, w, t.dy.data, t.dxk[0].data, i);
        if (dw || db)
            for (int64_t i = 0; i < P; i++)
                dyn_kaffine_dwb(rows, P, t.x[0].data, t.dy.data, dw, db, i);
        tc_check(&t, 1, TOL);
        tc_free(&t);
    }
}
END_TEST

/* ---- cat_param ---- */

START_TEST(cat_param) {
    const acase cs[] = {/* ViT's class token before the patches */
                        {"{\"axis\": 1, \"shape\": [1, 6]}", shp(3, 2, 4, 6, 0)},
                        {"{\"axis\": 2, \"shape\": [3, 2], \"at\": 1}", shp(3, 2, 3, 5, 0)},
                        {"{\"axis\": 2, \"shape\": [2, 3, 2]}", shp(4, 3, 2, 4, 2)},
                        {"{\"axis\": 1, \"shape\": [2, 3], \"at\": 1, \"trainable\": 0}",
                         shp(3, 2, 4, 3, 0)}};
    for (size_t c = 0; c < DYN_ARRAY_LEN(cs); c++) {
        tc t;
        tc_init(&t, "cat_param", cs[c].attrs, 1, &cs[c].in, -1.0f, 1.0f, 80 + c);
        const cp_impl *p = t.l->impl;
        dyn_kcp g = {.at = p->at};
        cp_geom(p, &t.x[0], &g.outer, &g.xs, &g.ps);
        const float *w = t.l->params[0].value.data;
        for (int64_t i = 0; i < NUMEL(t.y); i++) dyn_kcp_fwd(&g, w, t.x[0].data, t.yk.data, i);
        for (int64_t j = 0; j < NUMEL(t.x[0]); j++) dyn_kcp_dx(&g, t.dy.data, t.dxk[0].data, j);
        if (t.gk[0])
            for (int64_t i = 0; i < g.outer * g.ps; i++)
                dyn_kcp_dw(&g, t.batch, t.dy.data, t.gk[0], i);
        tc_check(&t, 1, TOL);
        tc_free(&t);
    }
}
END_TEST

/* ---- the glue (op_tf.c) where no device runs ---- */

/* Every op table has its kernels, and a failing launcher's message (no CUDA in this build, or
 * no context in a CUDA build) comes back prefixed with the layer and op. Nothing is launched:
 * the host buffers below are never read. */
START_TEST(glue_without_context) {
    static const struct {
        const char *op, *attrs;
        const dyn_backend_op *be;
        int n;
        int64_t in[2][4];
    } cs[] = {
        {"mul", "{}", &dyn_cuda_op_mul, 2, {{2, 3}, {2, 3}}},
        {"sub", "{}", &dyn_cuda_op_sub, 2, {{2, 3}, {2, 1}}},
        {"div", "{}", &dyn_cuda_op_div, 2, {{2, 3}, {2, 3}}},
        {"sigmoid", "{}", &dyn_cuda_op_sigmoid, 1, {{2, 3}}},
        {"clip", "{\"max\": 1}", &dyn_cuda_op_clip, 1, {{2, 3}}},
        {"erf", "{}", &dyn_cuda_op_erf, 1, {{2, 3}}},
        {"sqrt", "{}", &dyn_cuda_op_sqrt, 1, {{2, 3}}},
        {"pow", "{\"exponent\": 3}", &dyn_cuda_op_pow, 1, {{2, 3}}},
        {"scale", "{\"channels\": 3}", &dyn_cuda_op_scale, 1, {{2, 3}}},
        {"softmax", "{}", &dyn_cuda_op_softmax, 1, {{2, 3}}},
        {"layernorm", "{\"dim\": 3}", &dyn_cuda_op_layernorm, 1, {{2, 3}}},
        {"matmul", "{}", &dyn_cuda_op_matmul, 2, {{2, 3, 4}, {2, 4, 5}}},
        {"permute", "{\"dims\": [3], \"shape\": [3]}", &dyn_cuda_op_permute, 1, {{2, 3}}},
        {"concat", "{}", &dyn_cuda_op_concat, 2, {{2, 3}, {2, 1}}},
        {"reduce_mean", "{\"axis\": 1}", &dyn_cuda_op_reduce_mean, 1, {{2, 3, 4}}},
        {"affine", "{\"shape\": [3]}", &dyn_cuda_op_affine, 1, {{2, 3}}},
        {"cat_param", "{\"axis\": 1, \"shape\": [1]}", &dyn_cuda_op_cat_param, 1, {{2, 3}}},
    };
    float buf[64] = {0};
    for (size_t c = 0; c < DYN_ARRAY_LEN(cs); c++) {
        json_t *a = json_loads(cs[c].attrs, 0, NULL);
        dyn_err err = {0};
        dyn_layer *l = dyn_layer_create(cs[c].op, "t", a, &err);
        json_decref(a);
        ck_assert_msg(l != NULL, "%s: %s", cs[c].op, err.msg);
        const dyn_backend_op *be = cs[c].be;
        ck_assert_msg(be->forward && be->backward, "%s: no kernels", cs[c].op);
        dyn_shape in[2];
        dyn_tensor x[2], dx[2], y, dy;
        for (int k = 0; k < cs[c].n; k++) {
            in[k] = (dyn_shape){.ndim = cs[c].in[k][2] ? 3 : 2};
            for (int d = 0; d < in[k].ndim; d++) in[k].d[d] = cs[c].in[k][d];
            x[k] = dx[k] = dyn_tensor_view(buf, in[k].ndim, in[k].d);
        }
        dyn_shape out;
        ck_assert_int_eq(l->ops->infer(l, in, &out, &err), 0);
        y = dy = dyn_tensor_view(buf, out.ndim, out.d);
        ck_assert(!be->supports || be->supports(l, in, 1));
        char want[64];
        snprintf(want, sizeof want, "layer 't' (%s) on cuda: ", cs[c].op);
        const int code = dyn_cuda_built() ? DYN_EINVAL : DYN_EUNSUP;
        ck_assert_int_eq(be->forward(NULL, l, x, &y, buf, 1, &err), code);
        ck_assert_msg(strncmp(err.msg, want, strlen(want)) == 0, "message: %s", err.msg);
        err = (dyn_err){0};
        ck_assert_int_eq(be->backward(NULL, l, x, &y, &dy, dx, buf, &err), code);
        ck_assert_msg(strncmp(err.msg, want, strlen(want)) == 0, "message: %s", err.msg);
        dyn_layer_free(l);
    }
    /* layernorm keeps 2 floats per row for its backward, nothing at inference */
    json_t *a = json_loads("{\"dim\": 4}", 0, NULL);
    dyn_layer *l = dyn_layer_create("layernorm", "t", a, NULL);
    json_decref(a);
    const dyn_shape in = {.ndim = 3, .d = {2, 5, 4}};
    ck_assert_uint_eq(dyn_cuda_op_layernorm.scratch(l, &in, 1), 20);
    ck_assert_uint_eq(dyn_cuda_op_layernorm.scratch(l, &in, 0), 0);
    dyn_layer_free(l);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("cuda_kern_tf");
    TCase *tc = tcase_create("bodies");
    tcase_add_test(tc, binary_broadcast);
    tcase_add_test(tc, unary);
    tcase_add_test(tc, scale);
    tcase_add_test(tc, softmax);
    tcase_add_test(tc, layernorm);
    tcase_add_test(tc, permute);
    tcase_add_test(tc, concat);
    tcase_add_test(tc, reduce_mean);
    tcase_add_test(tc, affine);
    tcase_add_test(tc, cat_param);
    tcase_add_test(tc, glue_without_context);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(suite)
