/* pool_impl.h — maxpool2d / avgpool2d's attributes (pool.c). Internal to engine/ops and the CUDA
 * glue (engine/cuda/op_cnn.c), which reads the layer's attributes; not a public header. */
#ifndef DYN_OPS_POOL_IMPL_H
#define DYN_OPS_POOL_IMPL_H

typedef struct pool_impl {
    int kh, kw, sh, sw, ph, pw;
    int ceil_mode;
    int count_include_pad; /* avgpool2d only */
} pool_impl;

#endif
