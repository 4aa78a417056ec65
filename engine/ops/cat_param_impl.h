/* cat_param_impl.h — internal to engine/ops and engine/cuda: the attributes of the `cat_param` op
 * family (cat_param.c), read by the op and by its CUDA glue (engine/cuda/op_tf.c). Not a public
 * header: the layer's impl pointer holds one of these, owned by the layer; the geometry helper
 * below is shared by both. */
#ifndef DYN_OPS_CAT_PARAM_IMPL_H
#define DYN_OPS_CAT_PARAM_IMPL_H

#include "../layer.h"

typedef struct cp_impl {
    int axis, at, trainable, nshape;
    int64_t shape[DYN_MAX_DIMS - 1];
} cp_impl;

/* Per sample: `outer` blocks, each of the input's `xs` floats and the parameter's `ps`. */
static inline void cp_geom(const cp_impl *p, const dyn_tensor *x, int64_t *outer, int64_t *xs,
                           int64_t *ps) {
    int64_t inner = 1;
    *outer = 1;
    for (int i = 1; i < p->axis; i++) *outer *= x->shape[i];
    for (int i = p->axis + 1; i < x->ndim; i++) inner *= x->shape[i];
    *xs = x->shape[p->axis] * inner;
    *ps = p->shape[p->axis - 1] * inner;
}

#endif
