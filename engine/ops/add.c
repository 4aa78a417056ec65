/* add.c — element-wise sum of two tensors of the same shape (residual connections, ONNX Add).
 *
 * No attributes, no parameters. Inputs a, b of equal shape (batch included); output a + b.
 * No broadcasting: an ONNX Add with a constant operand is folded into the producer's bias by
 * the importer (engine/io/onnx.c) instead. Backward copies dy into both input gradients.
 */
#include <string.h>

#include "../layer.h"

static int add_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    if (!dyn_shape_eq(&in[0], &in[1])) {
        char a[64], b[64];
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': add needs inputs of the same shape, got %s and %s", l->name,
                           dyn_shape_str(&in[0], a, sizeof a), dyn_shape_str(&in[1], b, sizeof b));
    }
    *out = in[0];
    return 0;
}

static void add_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                        int training) {
    (void)l;
    (void)scratch;
    (void)training;
    int64_t n = dyn_tensor_numel(y);
    DYN_ASSERT(dyn_tensor_numel(&x[0]) == n && dyn_tensor_numel(&x[1]) == n);
    const float *a = x[0].data, *b = x[1].data;
    float *yp = y->data;
#pragma omp parallel for schedule(static) if (n > 65536)
    for (int64_t i = 0; i < n; i++) yp[i] = a[i] + b[i];
}

static void add_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                         const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)l;
    (void)x;
    (void)y;
    (void)scratch;
    for (int k = 0; k < 2; k++)
        if (dx[k].data && dx[k].data != dy->data) dyn_tensor_copy(&dx[k], dy);
}

static void add_stats(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    (void)l;
    (void)in;
    (void)st;
}

const dyn_layer_ops dyn_op_add = {
    .op = DYN_OP_ADD,
    .name = "add",
    .ninputs = 2,
    .create = dyn_op_create_no_attrs,
    .attrs = dyn_op_attrs_none,
    .infer = add_infer,
    .forward = add_forward,
    .backward = add_backward,
    .stats = add_stats,
};
