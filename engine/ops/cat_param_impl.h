/* cat_param_impl.h — internal to engine/ops and engine/cuda: the attributes of the `cat_param` op
 * family (cat_param.c), read by the op and by its CUDA glue (engine/cuda/op_tf.c). Not a public
 * header: the layer's impl pointer holds one of these, owned by the layer. */
#ifndef DYN_OPS_CAT_PARAM_IMPL_H
#define DYN_OPS_CAT_PARAM_IMPL_H

#include "../layer.h"

typedef struct cp_impl {
    int axis, at, trainable, nshape;
    int64_t shape[DYN_MAX_DIMS - 1];
} cp_impl;

#endif
