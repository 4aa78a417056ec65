/* concat_impl.h — internal to engine/ops and engine/cuda: the attributes of the `concat` op
 * family (concat.c), read by the op and by its CUDA glue (engine/cuda/op_tf.c). Not a public
 * header: the layer's impl pointer holds one of these, owned by the layer. */
#ifndef DYN_OPS_CONCAT_IMPL_H
#define DYN_OPS_CONCAT_IMPL_H

#include "../layer.h"

typedef struct concat_impl {
    int n;
} concat_impl;

#endif
