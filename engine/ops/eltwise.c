/* eltwise.c — element-wise binary ops on two tensors of the same shape: mul, sub, div
 * (ONNX Mul, Sub, Div between two activations). add lives in add.c.
 *
 * No attributes, no parameters, no broadcasting (the importer maps an activation combined with
 * a per-channel or scalar constant to the `scale` op instead, see scale.c). Backward:
 *   mul: da = dy * b,  db = dy * a
 *   sub: da = dy,      db = -dy
 *   div: da = dy / b,  db = -dy * a / b^2 (= -dy * y / b)
 * Division by zero follows IEEE (inf / nan), as ONNX does.
 */
#include <string.h>

#include "../layer.h"

static int bin_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    if (!dyn_shape_eq(&in[0], &in[1])) {
        char a[64], b[64];
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': %s needs inputs of the same shape, got %s and %s", l->name,
                           l->ops->name, dyn_shape_str(&in[0], a, sizeof a),
                           dyn_shape_str(&in[1], b, sizeof b));
    }
    *out = in[0];
    return 0;
}

static void bin_stats(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    (void)l;
    (void)in;
    (void)st;
}

/* Checks the layout every kernel here relies on and returns the element count. */
static int64_t bin_numel(const dyn_tensor *x, const dyn_tensor *y) {
    int64_t n = dyn_tensor_numel(y);
    DYN_ASSERT(dyn_tensor_numel(&x[0]) == n && dyn_tensor_numel(&x[1]) == n);
    return n;
}

static void mul_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                        int training) {
    (void)l;
    (void)scratch;
    (void)training;
    int64_t n = bin_numel(x, y);
    const float *a = x[0].data, *b = x[1].data;
    float *yp = y->data;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) yp[i] = a[i] * b[i];
}

static void mul_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                         const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)l;
    (void)scratch;
    int64_t n = bin_numel(x, y);
    const float *a = x[0].data, *b = x[1].data, *g = dy->data;
    if (dx[0].data) {
        float *d = dx[0].data;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) d[i] = g[i] * b[i];
    }
    if (dx[1].data) {
        float *d = dx[1].data;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) d[i] = g[i] * a[i];
    }
}

static void sub_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                        int training) {
    (void)l;
    (void)scratch;
    (void)training;
    int64_t n = bin_numel(x, y);
    const float *a = x[0].data, *b = x[1].data;
    float *yp = y->data;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) yp[i] = a[i] - b[i];
}

static void sub_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                         const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)l;
    (void)scratch;
    int64_t n = bin_numel(x, y);
    const float *g = dy->data;
    if (dx[0].data) dyn_tensor_copy(&dx[0], dy);
    if (dx[1].data) {
        float *d = dx[1].data;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) d[i] = -g[i];
    }
}

static void div_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                        int training) {
    (void)l;
    (void)scratch;
    (void)training;
    int64_t n = bin_numel(x, y);
    const float *a = x[0].data, *b = x[1].data;
    float *yp = y->data;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) yp[i] = a[i] / b[i];
}

static void div_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                         const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)l;
    (void)scratch;
    int64_t n = bin_numel(x, y);
    const float *b = x[1].data, *yp = y->data, *g = dy->data;
    if (dx[0].data) {
        float *d = dx[0].data;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) d[i] = g[i] / b[i];
    }
    if (dx[1].data) {
        float *d = dx[1].data;
#pragma omp parallel for schedule(static) if (n > 65536)
        for (int64_t i = 0; i < n; i++) d[i] = -g[i] * yp[i] / b[i];
    }
}

#define BINARY_OP(ID, NAME, FWD, BWD)                                                            \
    {                                                                                            \
        .op = ID, .name = NAME, .ninputs = 2, .create = dyn_op_create_no_attrs, .attrs = dyn_op_attrs_none,          \
        .infer = bin_infer, .forward = FWD, .backward = BWD, .stats = bin_stats,                 \
    }

const dyn_layer_ops dyn_op_mul = BINARY_OP(DYN_OP_MUL, "mul", mul_forward, mul_backward);
const dyn_layer_ops dyn_op_sub = BINARY_OP(DYN_OP_SUB, "sub", sub_forward, sub_backward);
const dyn_layer_ops dyn_op_div = BINARY_OP(DYN_OP_DIV, "div", div_forward, div_backward);
