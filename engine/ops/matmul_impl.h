/* matmul_impl.h — internal to engine/ops and engine/cuda: the attributes of the `matmul` op
 * family (matmul.c), read by the op and by its CUDA glue (engine/cuda/op_tf.c). Not a public
 * header: the layer's impl pointer holds one of these, owned by the layer; the geometry helper
 * below is shared by both. */
#ifndef DYN_OPS_MATMUL_IMPL_H
#define DYN_OPS_MATMUL_IMPL_H

#include "../layer.h"

typedef struct mm_impl {
    int ta, tb;
} mm_impl;

/* M, K of A and K, N of B from the stored shapes. */
static inline void mm_dims(const mm_impl *m, const dyn_shape *a, const dyn_shape *b, int64_t *M,
                           int64_t *K, int64_t *Kb, int64_t *N) {
    int r = a->ndim;
    *M = m->ta ? a->d[r - 1] : a->d[r - 2];
    *K = m->ta ? a->d[r - 2] : a->d[r - 1];
    *Kb = m->tb ? b->d[r - 1] : b->d[r - 2];
    *N = m->tb ? b->d[r - 2] : b->d[r - 1];
}

#endif
