/* permute_impl.h — internal to engine/ops and engine/cuda: the attributes of the `permute` op
 * family (permute.c), read by the op and by its CUDA glue (engine/cuda/op_tf.c). Not a public
 * header: the layer's impl pointer holds one of these, owned by the layer. */
#ifndef DYN_OPS_PERMUTE_IMPL_H
#define DYN_OPS_PERMUTE_IMPL_H

#include "../layer.h"

#define PERM_MAX_ATOMS 8

typedef struct perm_impl {
    int k;
    int64_t dims[PERM_MAX_ATOMS];
    int perm[PERM_MAX_ATOMS];
    int axis; /* -1: no slice */
    int64_t start, len, step;
    int nshape;
    int64_t shape[DYN_MAX_DIMS - 1];
    /* derived: output atoms (merged where contiguous) and their input strides */
    int nrun;
    int64_t osz[PERM_MAX_ATOMS], ist[PERM_MAX_ATOMS];
    int64_t base, in_numel, out_numel;
} perm_impl;

#endif
