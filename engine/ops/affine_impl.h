/* affine_impl.h — internal to engine/ops and engine/cuda: the attributes of the `affine` op
 * family (affine.c), read by the op and by its CUDA glue (engine/cuda/op_tf.c). Not a public
 * header: the layer's impl pointer holds one of these, owned by the layer. */
#ifndef DYN_OPS_AFFINE_IMPL_H
#define DYN_OPS_AFFINE_IMPL_H

#include "../layer.h"

typedef struct af_impl {
    int nshape, has_w, has_b, trainable;
    int64_t shape[DYN_MAX_DIMS - 1], period;
    float *w, *b; /* parameter data or NULL */
} af_impl;

#endif
