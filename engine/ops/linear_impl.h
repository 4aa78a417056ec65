/* linear_impl.h — linear's attributes (linear.c). Internal to engine/ops and the CUDA glue
 * (engine/cuda/op_cnn.c), which reads the layer's attributes; not a public header. */
#ifndef DYN_OPS_LINEAR_IMPL_H
#define DYN_OPS_LINEAR_IMPL_H

#include "../cpu/dnnl_conv.h"

typedef struct linear_impl {
    int in, out;
    int has_bias;
    dyn_dnnl_cache *dnnl; /* oneDNN inner products and AUTO's choices (owned) */
} linear_impl;

#endif
