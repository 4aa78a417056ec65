/* reduce_impl.h — internal to engine/ops and engine/cuda: the attributes of the `reduce` op
 * family (reduce.c), read by the op and by its CUDA glue (engine/cuda/op_tf.c). Not a public
 * header: the layer's impl pointer holds one of these, owned by the layer; the geometry helper
 * below is shared by both. */
#ifndef DYN_OPS_REDUCE_IMPL_H
#define DYN_OPS_REDUCE_IMPL_H

#include "../layer.h"

typedef struct rm_impl {
    int axis, keep;
} rm_impl;

/* outer x n x inner view of the input around the axis. */
static inline void rm_geom(const rm_impl *p, const dyn_tensor *x, int64_t *outer, int64_t *n,
                           int64_t *inner) {
    *outer = 1;
    *inner = 1;
    for (int i = 0; i < p->axis; i++) *outer *= x->shape[i];
    *n = x->shape[p->axis];
    for (int i = p->axis + 1; i < x->ndim; i++) *inner *= x->shape[i];
}

#endif
