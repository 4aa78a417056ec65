/* add.c — element-wise sum of two activations (residual connections, ONNX Add of two
 * activations).
 *
 * No attributes, no parameters. Inputs of the same shape, or shapes that broadcast (equal rank,
 * each size equal or 1; kernels in eltwise.c). An ONNX Add with a constant operand is folded
 * into the producer's bias or becomes an `affine` / `scale` layer (engine/io/onnx_cnn.c). Backward
 * copies dy into both input gradients (summed over broadcast dimensions).
 */
#include "eltwise_impl.h"

static void add_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                        int training) {
    (void)l;
    (void)scratch;
    (void)training;
    dyn__bin_forward(DYN__BIN_ADD, x, y);
}

static void add_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                         const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)l;
    (void)scratch;
    dyn__bin_backward(DYN__BIN_ADD, x, y, dy, dx);
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
    .infer = dyn__bin_infer,
    .forward = add_forward,
    .backward = add_backward,
    .stats = add_stats,
};
