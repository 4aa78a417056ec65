/* layernorm_impl.h — internal to engine/ops and engine/cuda: the attributes of the `layernorm` op
 * family (layernorm.c), read by the op and by its CUDA glue (engine/cuda/op_tf.c). Not a public
 * header: the layer's impl pointer holds one of these, owned by the layer. */
#ifndef DYN_OPS_LAYERNORM_IMPL_H
#define DYN_OPS_LAYERNORM_IMPL_H

#include "../layer.h"

typedef struct ln_impl {
    int64_t dim;
    double eps;
} ln_impl;

#endif
