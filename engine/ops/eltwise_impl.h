/* eltwise_impl.h — internal to engine/ops: the broadcasting binary kernels shared by add.c and
 * eltwise.c. Not a public header. */
#ifndef DYN_OPS_ELTWISE_IMPL_H
#define DYN_OPS_ELTWISE_IMPL_H

#include "../layer.h"

typedef enum dyn__bin_kind { DYN__BIN_ADD, DYN__BIN_SUB, DYN__BIN_MUL, DYN__BIN_DIV } dyn__bin_kind;

/* infer() of every binary op: equal ranks, each dim equal or 1 on one side (ONNX
 * broadcasting); the output takes the larger. */
int dyn__bin_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err);
/* y = a (op) b with broadcasting. */
void dyn__bin_forward(dyn__bin_kind k, const dyn_tensor *x, dyn_tensor *y);
/* dx[0], dx[1] (each when its data is not NULL) = the gradients, summed over broadcast dims. */
void dyn__bin_backward(dyn__bin_kind k, const dyn_tensor *x, const dyn_tensor *y,
                       const dyn_tensor *dy, dyn_tensor *dx);

#endif
