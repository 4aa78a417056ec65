/* norm_impl.h — batchnorm's attributes and parameter order (norm.c). Internal to engine/ops and
 * the CUDA glue (engine/cuda/op_cnn.c), which reads the layer's attributes; not a public header. */
#ifndef DYN_OPS_NORM_IMPL_H
#define DYN_OPS_NORM_IMPL_H

typedef struct bn_impl {
    int channels;
    double eps, momentum;
} bn_impl;

enum { BN_WEIGHT, BN_BIAS, BN_RMEAN, BN_RVAR };

#endif
