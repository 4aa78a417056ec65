/* op_tf.h — the CUDA backend's op tables of the element-wise and transformer ops
 * (engine/cuda/op_tf.c), for engine/cuda/backend.c's dyn_backend_cuda.ops[]. Each is named
 * dyn_cuda_op_<name> after its dyn_layer_ops.name; static data, nothing to free. */
#ifndef DYN_CUDA_OP_TF_H
#define DYN_CUDA_OP_TF_H

#include "../backend.h"

extern const dyn_backend_op dyn_cuda_op_mul, dyn_cuda_op_sub, dyn_cuda_op_div,
    dyn_cuda_op_sigmoid, dyn_cuda_op_clip, dyn_cuda_op_erf, dyn_cuda_op_sqrt, dyn_cuda_op_pow,
    dyn_cuda_op_scale, dyn_cuda_op_softmax, dyn_cuda_op_layernorm, dyn_cuda_op_matmul,
    dyn_cuda_op_permute, dyn_cuda_op_concat, dyn_cuda_op_reduce_mean, dyn_cuda_op_affine,
    dyn_cuda_op_cat_param;

#endif
