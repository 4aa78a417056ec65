/* test_ops_tf.c — the CUDA backend's element-wise and transformer ops (engine/cuda/op_tf.c:
 * dyn_cuda_op_mul ... dyn_cuda_op_cat_param, through a real context) against the CPU layers on
 * random inputs and parameters: the training forward, then the backward (dx of every input,
 * parameter gradients accumulated onto the same random starting values on both sides).
 * Shapes: small ones with every attribute combination, ViT-B-sized ones (197 tokens, 768
 * features, 12 heads), and one of more than 65535 x 256 elements (the grid-stride loops).
 *
 * Tolerance: relative L2 error 1e-5 for every output. The kernels evaluate the CPU op's
 * formulas in its order; what differs is the device's expf / erff / powf (within 2 to 4 ulp of
 * glibc's per the CUDA Programming Guide), contracted multiply-adds, and for matmul cuBLAS's
 * summation order over K <= 768 (about sqrt(K) 2^-24 relative, 1.7e-6 at K = 768).
 */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/op_tf.h"
#include "gpu_util.h"
#include "layer.h"

#define TOL 1e-5

typedef struct ocase {
    const char *op, *attrs;
    int n;                         /* inputs */
    int64_t in[DYN_LAYER_MAX_INPUTS][DYN_MAX_DIMS]; /* shapes, 0-terminated */
    float lo, hi;                  /* input range */
} ocase;

static const dyn_backend_op *op_of(const char *name) {
    static const struct {
        const char *name;
        const dyn_backend_op *op;
    } t[] = {{"mul", &dyn_cuda_op_mul},         {"sub", &dyn_cuda_op_sub},
             {"div", &dyn_cuda_op_div},         {"sigmoid", &dyn_cuda_op_sigmoid},
             {"clip", &dyn_cuda_op_clip},       {"erf", &dyn_cuda_op_erf},
             {"sqrt", &dyn_cuda_op_sqrt},       {"pow", &dyn_cuda_op_pow},
             {"scale", &dyn_cuda_op_scale},     {"softmax", &dyn_cuda_op_softmax},
             {"layernorm", &dyn_cuda_op_layernorm}, {"matmul", &dyn_cuda_op_matmul},
             {"permute", &dyn_cuda_op_permute}, {"concat", &dyn_cuda_op_concat},
             {"reduce_mean", &dyn_cuda_op_reduce_mean}, {"affine", &dyn_cuda_op_affine},
             {"cat_param", &dyn_cuda_op_cat_param}};
    for (size_t i = 0; i < DYN_ARRAY_LEN(t); i++)
        if (strcmp(t[i].name, name) == 0) return t[i].op;
    return NULL;
}

static dyn_shape shape_of(const int64_t *d) {
    dyn_shape s = {0};
    while (s.ndim < DYN_MAX_DIMS && d[s.ndim]) {
        s.d[s.ndim] = d[s.ndim];
        s.ndim++;
    }
    return s;
}

/* A device tensor of shape s over device memory p. */
static dyn_tensor dev_tensor(float *p, const dyn_shape *s) {
    dyn_tensor t = dyn_tensor_view(p, s->ndim, s->d);
    t.device = DYN_DEV_CUDA;
    return t;
}

/* n NaNs (malloc'ed; exits on failure): device outputs start as NaN, so an element no kernel
 * writes fails. */
static float *nan_buf(int64_t n) {
    float *p = malloc((size_t)(n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "FAIL out of memory (%lld floats)\n", (long long)n);
        exit(1);
    }
    for (int64_t i = 0; i < n; i++) p[i] = NAN;
    return p;
}

static void check(const ocase *c, const char *what, const float *got, const float *want,
                  int64_t n) {
    char buf[320];
    snprintf(buf, sizeof buf, "%s %s: %s", c->op, c->attrs, what);
    gt_check(buf, "relative L2 error", gt_rel_err(got, want, n), TOL);
}

static void run_case(dyn_cuda_ctx *ctx, const ocase *c, dyn_rng *r) {
    dyn_err err = {0};
    json_t *aj = json_loads(c->attrs, 0, NULL);
    dyn_layer *l = dyn_layer_create(c->op, "t", aj, &err);
    json_decref(aj);
    gt_ok(l ? 0 : err.code, &err, c->op);
    const dyn_backend_op *op = op_of(c->op);
    if (!op) gt_ok(dyn_err_set(&err, DYN_EINVAL, "no dyn_cuda_op_%s", c->op), &err, c->op);

    dyn_shape in[DYN_LAYER_MAX_INPUTS], out;
    for (int k = 0; k < c->n; k++) in[k] = shape_of(c->in[k]);
    gt_ok(l->ops->infer(l, in, &out, &err), &err, "infer");
    if (op->supports && !op->supports(l, in, 1)) {
        gt_check(c->op, "supports() refused the shape", 1.0, 0.0);
        dyn_layer_free(l);
        return;
    }
    const int64_t ny = dyn_shape_numel(&out);

    /* parameters (random values, random starting gradients) and their device copies */
    float *g0[DYN_LAYER_MAX_PARAMS] = {0};
    for (int i = 0; i < l->nparams; i++) {
        dyn_param *p = &l->params[i];
        const int64_t m = dyn_tensor_numel(&p->value);
        float *v = gt_rand(r, m, -1.0f, 1.0f);
        memcpy(p->value.data, v, (size_t)m * sizeof(float));
        p->dval = gt_upload(ctx, v, m);
        free(v);
        if (p->trainable) {
            g0[i] = gt_rand(r, m, -1.0f, 1.0f);
            memcpy(p->grad.data, g0[i], (size_t)m * sizeof(float));
            p->dgrad = gt_upload(ctx, g0[i], m);
        }
    }

    /* the CPU layer */
    dyn_tensor x[DYN_LAYER_MAX_INPUTS], dx[DYN_LAYER_MAX_INPUTS], y, dy;
    for (int k = 0; k < c->n; k++) {
        gt_ok(dyn_tensor_init_shape(&x[k], &in[k], &err), &err, "x");
        gt_ok(dyn_tensor_init_shape(&dx[k], &in[k], &err), &err, "dx");
        float *v = gt_rand(r, dyn_tensor_numel(&x[k]), c->lo, c->hi);
        memcpy(x[k].data, v, (size_t)dyn_tensor_numel(&x[k]) * sizeof(float));
        free(v);
    }
    gt_ok(dyn_tensor_init_shape(&y, &out, &err), &err, "y");
    gt_ok(dyn_tensor_init_shape(&dy, &out, &err), &err, "dy");
    float *v = gt_rand(r, ny, -1.0f, 1.0f);
    memcpy(dy.data, v, (size_t)ny * sizeof(float));
    free(v);
    size_t ns = l->ops->scratch ? l->ops->scratch(l, in, 1) : 0;
    float *s = ns ? dyn_alloc_zero(ns * sizeof(float)) : NULL;
    l->ops->forward(l, x, &y, s, 1);
    l->ops->backward(l, x, &y, &dy, dx, s);
    dyn_free(s);

    /* the device op */
    dyn_tensor xd[DYN_LAYER_MAX_INPUTS], dxd[DYN_LAYER_MAX_INPUTS];
    for (int k = 0; k < c->n; k++) {
        const int64_t m = dyn_tensor_numel(&x[k]);
        float *nan = nan_buf(m);
        xd[k] = dev_tensor(gt_upload(ctx, x[k].data, m), &in[k]);
        dxd[k] = dev_tensor(gt_upload(ctx, nan, m), &in[k]);
        free(nan);
    }
    float *nan = nan_buf(ny);
    dyn_tensor yd = dev_tensor(gt_upload(ctx, nan, ny), &out);
    dyn_tensor dyd = dev_tensor(gt_upload(ctx, dy.data, ny), &out);
    free(nan);
    size_t nsd = op->scratch ? op->scratch(l, in, 1) : 0;
    float *sd = NULL;
    if (nsd) gt_ok(dyn_cuda_alloc(ctx, nsd * sizeof(float), (void **)&sd, &err), &err, "scratch");
    gt_ok(op->forward(ctx, l, xd, &yd, sd, 1, &err), &err, "device forward");
    gt_ok(op->backward(ctx, l, xd, &yd, &dyd, dxd, sd, &err), &err, "device backward");
    gt_ok(dyn_cuda_sync(ctx, &err), &err, "sync");

    float *h = malloc((size_t)ny * sizeof(float));
    gt_download(ctx, h, yd.data, ny);
    check(c, "y", h, y.data, ny);
    free(h);
    for (int k = 0; k < c->n; k++) {
        const int64_t m = dyn_tensor_numel(&x[k]);
        h = malloc((size_t)m * sizeof(float));
        gt_download(ctx, h, dxd[k].data, m);
        char what[32];
        snprintf(what, sizeof what, "dx[%d]", k);
        check(c, what, h, dx[k].data, m);
        free(h);
        dyn_cuda_free(ctx, xd[k].data), dyn_cuda_free(ctx, dxd[k].data);
        dyn_tensor_release(&x[k]), dyn_tensor_release(&dx[k]);
    }
    for (int i = 0; i < l->nparams; i++) {
        dyn_param *p = &l->params[i];
        const int64_t m = dyn_tensor_numel(&p->value);
        if (p->dgrad) {
            h = malloc((size_t)m * sizeof(float));
            gt_download(ctx, h, p->dgrad, m);
            char what[48];
            snprintf(what, sizeof what, "d%s (accumulated)", p->name);
            check(c, what, h, p->grad.data, m);
            free(h);
        }
        dyn_cuda_free(ctx, p->dval), dyn_cuda_free(ctx, p->dgrad);
        p->dval = p->dgrad = NULL;
        free(g0[i]);
    }
    dyn_cuda_free(ctx, yd.data), dyn_cuda_free(ctx, dyd.data), dyn_cuda_free(ctx, sd);
    dyn_tensor_release(&y), dyn_tensor_release(&dy);
    dyn_layer_free(l);
}

int main(void) {
    dyn_cuda_ctx *ctx = gt_ctx("test_ops_tf");
    static const ocase cases[] = {
        {"mul", "{}", 2, {{2, 3, 4, 5}, {2, 3, 4, 5}}, -1, 1},
        {"mul", "{}", 2, {{2, 3, 4, 5}, {2, 3, 1, 1}}, -1, 1},
        {"mul", "{}", 2, {{64, 384, 768}, {64, 384, 1}}, -1, 1}, /* > 65535 x 256 elements */
        {"sub", "{}", 2, {{2, 1, 4, 5}, {2, 3, 4, 1}}, -1, 1},
        {"sub", "{}", 2, {{8, 197, 768}, {8, 197, 1}}, -1, 1},
        {"div", "{}", 2, {{8, 197, 768}, {8, 197, 1}}, 0.5f, 2},
        {"div", "{}", 2, {{2, 1, 8}, {2, 5, 8}}, 0.5f, 2},
        {"sigmoid", "{}", 1, {{8, 197, 768}}, -8, 8},
        {"clip", "{\"min\": 0, \"max\": 6}", 1, {{4, 32, 14, 14}}, -8, 8},
        {"clip", "{\"max\": 0.25}", 1, {{3, 50}}, -1, 1},
        {"erf", "{}", 1, {{8, 197, 3072}}, -3, 3},
        {"sqrt", "{}", 1, {{8, 197, 1}}, 0.01f, 4},
        {"pow", "{\"exponent\": 2}", 1, {{8, 197, 768}}, -2, 2},
        {"pow", "{\"exponent\": 3}", 1, {{2, 5, 7}}, 0.1f, 2},
        {"pow", "{\"exponent\": 0.5}", 1, {{2, 5, 7}}, 0.1f, 2},
        {"scale", "{\"channels\": 3}", 1, {{8, 3, 32, 32}}, -1, 1},
        {"scale", "{\"channels\": 16, \"trainable\": 0}", 1, {{5, 16}}, -1, 1},
        {"softmax", "{}", 1, {{8, 12, 197, 197}}, -6, 6},
        {"softmax", "{}", 1, {{3, 10}}, -6, 6},
        {"layernorm", "{\"dim\": 768, \"eps\": 1e-6}", 1, {{8, 197, 768}}, -1, 3},
        {"layernorm", "{\"dim\": 5}", 1, {{2, 3, 2, 5}}, -1, 3},
        {"matmul", "{}", 2, {{8, 12, 197, 64}, {8, 12, 64, 197}}, -1, 1},
        {"matmul", "{\"tb\": 1}", 2, {{8, 12, 197, 64}, {8, 12, 197, 64}}, -1, 1},
        {"matmul", "{\"ta\": 1}", 2, {{3, 7, 5}, {3, 7, 9}}, -1, 1},
        {"matmul", "{\"ta\": 1, \"tb\": 1}", 2, {{2, 3, 7, 5}, {2, 3, 9, 7}}, -1, 1},
        {"permute", "{\"dims\": [197, 3, 12, 64], \"perm\": [1, 2, 0, 3], \"axis\": 0, "
                    "\"start\": 0, \"len\": 197, \"shape\": [3, 12, 12608]}",
         1, {{8, 197, 2304}}, -1, 1},
        {"permute", "{\"dims\": [3, 4, 5], \"perm\": [2, 0, 1], \"axis\": 1, \"start\": 1, "
                    "\"len\": 2, \"step\": 2, \"shape\": [5, 3, 2]}",
         1, {{2, 60}}, -1, 1},
        {"permute", "{\"dims\": [197, 768], \"axis\": 0, \"start\": 0, \"len\": 1, "
                    "\"shape\": [768]}",
         1, {{8, 197, 768}}, -1, 1},
        {"concat", "{\"inputs\": 2}", 2, {{2, 3, 4}, {2, 5, 4}}, -1, 1},
        {"concat", "{\"inputs\": 4}", 4, {{4, 8, 7, 7}, {4, 16, 7, 7}, {4, 1, 7, 7}, {4, 3, 7, 7}},
         -1, 1},
        {"reduce_mean", "{\"axis\": 1}", 1, {{8, 197, 768}}, -1, 1},
        {"reduce_mean", "{\"axis\": 2, \"keepdims\": 1}", 1, {{8, 197, 768}}, -1, 1},
        {"reduce_mean", "{\"axis\": 3}", 1, {{2, 3, 4, 5}}, -1, 1},
        {"affine", "{\"shape\": [768]}", 1, {{8, 197, 768}}, -1, 1},
        {"affine", "{\"shape\": [197, 768], \"weight\": 0}", 1, {{8, 197, 768}}, -1, 1},
        {"affine", "{\"shape\": [1], \"bias\": 0, \"trainable\": 0}", 1, {{3, 4}}, -1, 1},
        {"cat_param", "{\"axis\": 1, \"shape\": [1, 768]}", 1, {{8, 196, 768}}, -1, 1},
        {"cat_param", "{\"axis\": 2, \"shape\": [3, 2], \"at\": 1}", 1, {{2, 3, 5}}, -1, 1},
    };
    dyn_rng r;
    dyn_rng_seed(&r, 13);
    for (size_t i = 0; i < DYN_ARRAY_LEN(cases); i++) run_case(ctx, &cases[i], &r);
    dyn_cuda_ctx_free(ctx);
    return gt_finish("test_ops_tf");
}
