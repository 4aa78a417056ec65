/* unary.c — element-wise activations beyond ReLU: sigmoid, clip, erf, sqrt, pow (ONNX Sigmoid,
 * Clip, Erf, Sqrt, Pow with a constant scalar exponent; ReLU6 is clip 0..6, GELU is exported as
 * x * 0.5 * (1 + erf(x / sqrt 2))).
 *
 * sigmoid: no attributes; y = 1 / (1 + exp(-x)), computed without overflow for large |x|;
 *   backward dx = dy * y * (1 - y).
 * clip: attributes "min" and "max" (numbers, each optional: absent = unbounded; min <= max);
 *   y = min(max(x, min), max); backward passes dy where min <= x <= max (PyTorch's clamp
 *   convention at the bounds), else 0.
 * erf: dx = dy * 2/sqrt(pi) * exp(-x^2).   sqrt: dx = dy / (2 y) (IEEE at 0 and below).
 * pow: attribute "exponent" (a finite number); y = x^p (powf; x^2 as x*x);
 *   dx = dy * p * x^(p-1).
 */
#include <float.h>
#include <math.h>
#include <string.h>

#include "../layer.h"
#include "unary_impl.h"
#include "../cpu/par.h"

static void no_stats(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    (void)l;
    (void)in;
    (void)st;
}

/* ---- sigmoid ---- */

static void sigmoid_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                            int training) {
    (void)l;
    (void)scratch;
    (void)training;
    int64_t n = dyn_tensor_numel(y);
    DYN_ASSERT(dyn_tensor_numel(&x[0]) == n);
    const float *xp = x[0].data;
    float *yp = y->data;
    DYN_PAR_FOR(n > 65536,
    for (int64_t i = 0; i < n; i++) {
        float v = xp[i];
        if (v >= 0.0f) {
            yp[i] = 1.0f / (1.0f + expf(-v));
        } else {
            float e = expf(v);
            yp[i] = e / (1.0f + e);
        }
    });
}

static void sigmoid_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                             const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)l;
    (void)x;
    (void)scratch;
    if (!dx[0].data) return;
    int64_t n = dyn_tensor_numel(y);
    const float *yp = y->data, *g = dy->data;
    float *d = dx[0].data;
    DYN_PAR_FOR(n > 65536,
    for (int64_t i = 0; i < n; i++) d[i] = g[i] * yp[i] * (1.0f - yp[i]););
}

const dyn_layer_ops dyn_op_sigmoid = {
    .op = DYN_OP_SIGMOID,
    .name = "sigmoid",
    .ninputs = 1,
    .create = dyn_op_create_no_attrs,
    .attrs = dyn_op_attrs_none,
    .infer = dyn_op_infer_same,
    .forward = sigmoid_forward,
    .backward = sigmoid_backward,
    .stats = no_stats,
};

/* ---- clip ---- */

static int clip_bound(dyn_layer *l, const json_t *attrs, const char *key, int *has, float *v,
                      dyn_err *err) {
    json_t *j = json_object_get(attrs, key);
    *has = j != NULL;
    if (!j) return 0;
    double d;
    int rc = dyn_attr_num(l, attrs, key, 0.0, &d, err);
    if (rc) return rc;
    if (!isfinite(d) || fabs(d) > FLT_MAX)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': attribute '%s' = %g is not a finite float",
                           l->name, key, d);
    *v = (float)d;
    return 0;
}

static int clip_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    clip_impl c = {0, 0, -FLT_MAX, FLT_MAX};
    int rc;
    if ((rc = clip_bound(l, attrs, "min", &c.has_min, &c.lo, err)) ||
        (rc = clip_bound(l, attrs, "max", &c.has_max, &c.hi, err)))
        return rc;
    if (c.lo > c.hi)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': clip min %g is greater than max %g",
                           l->name, (double)c.lo, (double)c.hi);
    clip_impl *p = malloc(sizeof *p);
    if (!p) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    *p = c;
    l->impl = p;
    return 0;
}

static void clip_destroy(dyn_layer *l) {
    free(l->impl);
    l->impl = NULL;
}

static json_t *clip_attrs(const dyn_layer *l) {
    const clip_impl *c = l->impl;
    json_t *a = json_object();
    if (a && c->has_min) json_object_set_new(a, "min", json_real(c->lo));
    if (a && c->has_max) json_object_set_new(a, "max", json_real(c->hi));
    return a;
}

static void clip_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                         int training) {
    (void)scratch;
    (void)training;
    const clip_impl *c = l->impl;
    int64_t n = dyn_tensor_numel(y);
    DYN_ASSERT(dyn_tensor_numel(&x[0]) == n);
    const float *xp = x[0].data;
    float *yp = y->data;
    const float lo = c->lo, hi = c->hi;
    DYN_PAR_FOR(n > 65536,
    for (int64_t i = 0; i < n; i++) {
        float v = xp[i];
        yp[i] = v < lo ? lo : (v > hi ? hi : v);
    });
}

static void clip_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                          const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)y;
    (void)scratch;
    if (!dx[0].data) return;
    const clip_impl *c = l->impl;
    int64_t n = dyn_tensor_numel(&x[0]);
    const float *xp = x[0].data, *g = dy->data;
    float *d = dx[0].data;
    const float lo = c->lo, hi = c->hi;
    DYN_PAR_FOR(n > 65536,
    for (int64_t i = 0; i < n; i++) d[i] = xp[i] >= lo && xp[i] <= hi ? g[i] : 0.0f;);
}

const dyn_layer_ops dyn_op_clip = {
    .op = DYN_OP_CLIP,
    .name = "clip",
    .ninputs = 1,
    .create = clip_create,
    .destroy = clip_destroy,
    .attrs = clip_attrs,
    .infer = dyn_op_infer_same,
    .forward = clip_forward,
    .backward = clip_backward,
    .stats = no_stats,
};

/* ---- erf, sqrt, pow: y = f(x), dx = dy * f'(x) ---- */

static float pow_f(float x, float p) { return p == 2.0f ? x * x : powf(x, p); }

/* Forward y = FWD(x) and backward dx = dy * BWD (reading x, y and g = dy at index i). */
#define UNARY_KERNELS(NAME, FWD, BWD)                                                          \
    static void NAME##_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *s,     \
                               int training) {                                                 \
        (void)l;                                                                                \
        (void)s;                                                                                \
        (void)training;                                                                         \
        const int64_t n = dyn_tensor_numel(y);                                                  \
        const float *xp = x[0].data;                                                            \
        float *yp = y->data;                                                                    \
        _Pragma("omp parallel for schedule(static) if (n > 65536)")                            \
        for (int64_t i = 0; i < n; i++) yp[i] = FWD;                                            \
    }                                                                                           \
    static void NAME##_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,        \
                                const dyn_tensor *dy, dyn_tensor *dx, float *s) {              \
        (void)l;                                                                                \
        (void)s;                                                                                \
        if (!dx[0].data) return;                                                                \
        const int64_t n = dyn_tensor_numel(y);                                                  \
        const float *xp = x[0].data, *yp = y->data, *g = dy->data;                              \
        float *d = dx[0].data;                                                                  \
        (void)xp;                                                                               \
        (void)yp;                                                                               \
        _Pragma("omp parallel for schedule(static) if (n > 65536)")                            \
        for (int64_t i = 0; i < n; i++) d[i] = g[i] * (BWD);                                    \
    }

/* 2 / sqrt(pi) exp(-x^2) */
UNARY_KERNELS(erf, erff(xp[i]), 1.12837916709551257f * expf(-xp[i] * xp[i]))
UNARY_KERNELS(sqrt, sqrtf(xp[i]), 0.5f / yp[i])

static int pow_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    double p;
    int rc = dyn_attr_num(l, attrs, "exponent", 2.0, &p, err);
    if (rc) return rc;
    if (!isfinite(p) || fabs(p) > 1e6)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': exponent %g is not a usable number",
                           l->name, p);
    pow_impl *q = malloc(sizeof *q);
    if (!q) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    q->p = (float)p;
    l->impl = q;
    return 0;
}

static void pow_destroy(dyn_layer *l) {
    free(l->impl);
    l->impl = NULL;
}

static json_t *pow_attrs(const dyn_layer *l) {
    const pow_impl *q = l->impl;
    return json_pack("{s:f}", "exponent", (double)q->p);
}

static void pow_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                        int training) {
    (void)scratch;
    (void)training;
    const float p = ((const pow_impl *)l->impl)->p;
    int64_t n = dyn_tensor_numel(y);
    const float *xp = x[0].data;
    float *yp = y->data;
    DYN_PAR_FOR(n > 65536,
    for (int64_t i = 0; i < n; i++) yp[i] = pow_f(xp[i], p););
}

static void pow_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                         const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)y;
    (void)scratch;
    if (!dx[0].data) return;
    const float p = ((const pow_impl *)l->impl)->p;
    int64_t n = dyn_tensor_numel(&x[0]);
    const float *xp = x[0].data, *g = dy->data;
    float *d = dx[0].data;
    DYN_PAR_FOR(n > 65536,
    for (int64_t i = 0; i < n; i++)
        d[i] = p == 0.0f ? 0.0f : g[i] * p * (p == 2.0f ? xp[i] : powf(xp[i], p - 1.0f)););
}

#define UNARY_OP(ID, NAME, FWD, BWD)                                                          \
    {                                                                                         \
        .op = ID, .name = NAME, .ninputs = 1, .create = dyn_op_create_no_attrs,               \
        .attrs = dyn_op_attrs_none, .infer = dyn_op_infer_same, .forward = FWD,               \
        .backward = BWD, .stats = no_stats,                                                   \
    }

const dyn_layer_ops dyn_op_erf = UNARY_OP(DYN_OP_ERF, "erf", erf_forward, erf_backward);
const dyn_layer_ops dyn_op_sqrt = UNARY_OP(DYN_OP_SQRT, "sqrt", sqrt_forward, sqrt_backward);

const dyn_layer_ops dyn_op_pow = {
    .op = DYN_OP_POW,
    .name = "pow",
    .ninputs = 1,
    .create = pow_create,
    .destroy = pow_destroy,
    .attrs = pow_attrs,
    .infer = dyn_op_infer_same,
    .forward = pow_forward,
    .backward = pow_backward,
    .stats = no_stats,
};
