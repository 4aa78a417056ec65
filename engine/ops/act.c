/* act.c — element-wise activations (ReLU) and shape-only ops (flatten). */
#include <string.h>

#include "../cpu/par.h"
#include "../layer.h"

static void relu_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                         int training) {
    (void)l;
    (void)scratch;
    (void)training;
    int64_t n = dyn_tensor_numel(&x[0]);
    const float *xp = x[0].data;
    float *yp = y->data;
    DYN_PAR_FOR(n > 65536,
    for (int64_t i = 0; i < n; i++) yp[i] = xp[i] > 0.0f ? xp[i] : 0.0f;);
}

static void relu_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                          const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)l;
    (void)x;
    (void)scratch;
    if (!dx[0].data) return;
    int64_t n = dyn_tensor_numel(y);
    const float *yp = y->data, *g = dy->data;
    float *d = dx[0].data;
    DYN_PAR_FOR(n > 65536,
    for (int64_t i = 0; i < n; i++) d[i] = yp[i] > 0.0f ? g[i] : 0.0f;);
}

static void relu_stats(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    (void)l;
    (void)in;
    (void)st;
}

const dyn_layer_ops dyn_op_relu = {
    .op = DYN_OP_RELU,
    .name = "relu",
    .ninputs = 1,
    .create = dyn_op_create_no_attrs,
    .attrs = dyn_op_attrs_none,
    .infer = dyn_op_infer_same,
    .forward = relu_forward,
    .backward = relu_backward,
    .stats = relu_stats,
};

/* flatten: [N, ...] -> [N, prod(...)] */
static int flatten_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    (void)l;
    (void)err;
    memset(out, 0, sizeof *out);
    out->ndim = 2;
    out->d[0] = in[0].d[0];
    out->d[1] = 1;
    for (int i = 1; i < in[0].ndim; i++) out->d[1] *= in[0].d[i];
    return 0;
}

static void flatten_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                            int training) {
    (void)l;
    (void)scratch;
    (void)training;
    if (y->data != x[0].data) dyn_tensor_copy(y, &x[0]);
}

static void flatten_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                             const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)l;
    (void)x;
    (void)y;
    (void)scratch;
    if (dx[0].data && dx[0].data != dy->data) dyn_tensor_copy(&dx[0], dy);
}

const dyn_layer_ops dyn_op_flatten = {
    .op = DYN_OP_FLATTEN,
    .name = "flatten",
    .ninputs = 1,
    .create = dyn_op_create_no_attrs,
    .attrs = dyn_op_attrs_none,
    .infer = flatten_infer,
    .forward = flatten_forward,
    .backward = flatten_backward,
};
