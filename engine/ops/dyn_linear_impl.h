/* dyn_linear_impl.h — internal to the engine: the private state of a "dyn_linear" layer
 * (engine/ops/dyn_linear.c), shared with its device op (engine/cuda/op_dyn.c), which reads the
 * layer's shape, kernel and execution mode from it. Not a public header. */
#ifndef DYN_OPS_DYN_LINEAR_IMPL_H
#define DYN_OPS_DYN_LINEAR_IMPL_H

#include "../dyn/dyn.h"

/* The parameters' order in l->params. */
enum { DYN_LINEAR_P_U, DYN_LINEAR_P_V, DYN_LINEAR_P_LAMBDA, DYN_LINEAR_P_C, DYN_LINEAR_P_BIAS };

typedef struct dyn_linear_impl {
    int in, out, H, q, bias;
    dyn_kernel kernel;
    int exec;        /* DYN_EXEC_* */
    int hold_w;      /* W is materialized by prepare() */
    int hold_orders; /* native orders are kept by prepare() */
    int ready;       /* prepare() succeeded since create */
    float *w;        /* [out][in] when hold_w */
    dyn_native nat;
} dyn_linear_impl;

#endif
