/* unary_impl.h — internal to engine/ops and engine/cuda: the attributes of clip and pow
 * (unary.c), read by the op and by its CUDA glue (engine/cuda/op_tf.c). Not a public
 * header: the layer's impl pointer holds one of these, owned by the layer. */
#ifndef DYN_OPS_UNARY_IMPL_H
#define DYN_OPS_UNARY_IMPL_H

#include "../layer.h"

typedef struct clip_impl {
    int has_min, has_max;
    float lo, hi; /* -FLT_MAX / FLT_MAX when unbounded */
} clip_impl;

typedef struct pow_impl {
    float p;
} pow_impl;

#endif
