/* op_cnn.h — the CNN ops' tables on the CUDA backend (op_cnn.c), for the backend's op table
 * (engine/cuda/backend.c): conv2d, relu, flatten, add, maxpool2d, avgpool2d, globalavgpool,
 * linear, batchnorm, dyn_conv2d (materialized, or native l1: op_cnn.c says which).
 * Static tables: nothing to free. */
#ifndef DYN_CUDA_OP_CNN_H
#define DYN_CUDA_OP_CNN_H

#include "../backend.h"

extern const dyn_backend_op dyn_cuda_op_conv2d, dyn_cuda_op_relu, dyn_cuda_op_flatten,
    dyn_cuda_op_add, dyn_cuda_op_maxpool2d, dyn_cuda_op_avgpool2d, dyn_cuda_op_globalavgpool,
    dyn_cuda_op_linear, dyn_cuda_op_batchnorm, dyn_cuda_op_dyn_conv2d;

#endif
