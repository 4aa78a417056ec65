/* conv_impl.h — conv2d's attributes (conv.c). Internal to engine/ops and the CUDA glue
 * (engine/cuda/op_cnn.c), which reads the layer's attributes; not a public header. */
#ifndef DYN_OPS_CONV_IMPL_H
#define DYN_OPS_CONV_IMPL_H

#include "../cpu/dnnl_conv.h"

typedef struct conv_impl {
    int cin, cout, groups, has_bias;
    int kh, kw, sh, sw, ph, pw, dh, dw;
    dyn_dnnl_cache *dnnl; /* oneDNN primitives and AUTO's choices (owned) */
} conv_impl;

#endif
