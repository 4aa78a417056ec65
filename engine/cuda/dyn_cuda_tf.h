/* dyn_cuda_tf.h — launchers of the element-wise and transformer kernels (engine/cuda/tf.cu,
 * bodies in kern_tf.h): the device side of the ops mul, sub, div, sigmoid, clip, erf, sqrt,
 * pow, scale, softmax, layernorm, matmul, permute, concat, reduce_mean, affine, cat_param.
 *
 * Callable from C in every build: without CUDA (the default `make`) engine/cuda/stub_tf.c
 * defines them and each fails with DYN_EUNSUP. Their caller is the glue engine/cuda/op_tf.c.
 *
 * Conventions, for every function: pointers are device pointers (contiguous float arrays of the
 * sizes stated, owned by the caller; none is kept after the call); the work is queued on ctx's
 * stream (asynchronous: errors inside a kernel surface at the next dyn_cuda_sync / download).
 * Returns 0, or a DYN_E* code with err naming the failing CUDA / cuBLAS call (dyn_cuda.h):
 * DYN_EINVAL for a bad size, DYN_EIO for a failed launch or cuBLAS call, DYN_EUNSUP without
 * CUDA. Gradients of inputs are written (=), gradients of parameters accumulated (+=), as the
 * CPU ops do; a NULL gradient pointer skips that gradient.
 */
#ifndef DYN_CUDA_TF_H
#define DYN_CUDA_TF_H

#include "dyn_cuda.h"
#include "kern_tf.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Binary op g->kind with broadcasting (geometry from dyn_kbin_geom): y = a (op) b. */
int dyn_cuda_tf_bin_forward(dyn_cuda_ctx *ctx, const dyn_kbin *g, const float *a, const float *b,
                            float *y, dyn_err *err);
/* da, db (each may be NULL) = the gradients, summed over the dims each input is broadcast
 * along. y: the forward's output (read by div). */
int dyn_cuda_tf_bin_backward(dyn_cuda_ctx *ctx, const dyn_kbin *g, const float *a, const float *b,
                             const float *y, const float *dy, float *da, float *db, dyn_err *err);

/* Unary op `kind` (DYN_KUN_*) over n elements; p0, p1: clip's bounds, pow's exponent (p0). */
int dyn_cuda_tf_unary_forward(dyn_cuda_ctx *ctx, int kind, float p0, float p1, const float *x,
                              float *y, int64_t n, dyn_err *err);
int dyn_cuda_tf_unary_backward(dyn_cuda_ctx *ctx, int kind, float p0, float p1, const float *x,
                               const float *y, const float *dy, float *dx, int64_t n,
                               dyn_err *err);

/* scale: x, y [batch][ch][inner]; w, b [ch]. Backward: dx (may be NULL) and dw, db [ch]
 * (both or neither). */
int dyn_cuda_tf_scale_forward(dyn_cuda_ctx *ctx, int64_t batch, int64_t ch, int64_t inner,
                              const float *w, const float *b, const float *x, float *y,
                              dyn_err *err);
int dyn_cuda_tf_scale_backward(dyn_cuda_ctx *ctx, int64_t batch, int64_t ch, int64_t inner,
                               const float *w, const float *x, const float *dy, float *dx,
                               float *dw, float *db, dyn_err *err);

/* softmax over rows of n: x, y, dy, dx [rows][n]. */
int dyn_cuda_tf_softmax_forward(dyn_cuda_ctx *ctx, int64_t rows, int64_t n, const float *x,
                                float *y, dyn_err *err);
int dyn_cuda_tf_softmax_backward(dyn_cuda_ctx *ctx, int64_t rows, int64_t n, const float *y,
                                 const float *dy, float *dx, dyn_err *err);

/* layernorm over rows of n: w, b, dw, db [n]. Backward: st is scratch of 2 rows floats (the
 * row statistics); dx may be NULL; dw, db (both or neither) are accumulated. */
int dyn_cuda_tf_layernorm_forward(dyn_cuda_ctx *ctx, int64_t rows, int64_t n, double eps,
                                  const float *w, const float *b, const float *x, float *y,
                                  dyn_err *err);
int dyn_cuda_tf_layernorm_backward(dyn_cuda_ctx *ctx, int64_t rows, int64_t n, double eps,
                                   const float *w, const float *x, const float *dy, float *dx,
                                   float *dw, float *db, float *st, dyn_err *err);

/* Batched matmul (row-major, `groups` products, cuBLAS strided-batched sgemm, FP32):
 * C[M][N] = op(A) op(B), A stored [M][K] ([K][M] when ta), B [K][N] ([N][K] when tb).
 * Backward: dA = dC op(B)ᵀ and dB = op(A)ᵀ dC in the stored layouts (each may be NULL). */
int dyn_cuda_tf_matmul_forward(dyn_cuda_ctx *ctx, int64_t groups, int M, int K, int N, int ta,
                               int tb, const float *A, const float *B, float *C, dyn_err *err);
int dyn_cuda_tf_matmul_backward(dyn_cuda_ctx *ctx, int64_t groups, int M, int K, int N, int ta,
                                int tb, const float *A, const float *B, const float *dC,
                                float *dA, float *dB, dyn_err *err);

/* permute (geometry from dyn_kperm_geom): x [batch][in_numel] -> y [batch][out_numel];
 * backward dx = dy scattered back, 0 where a slice dropped an element (as a gather). */
int dyn_cuda_tf_permute_forward(dyn_cuda_ctx *ctx, const dyn_kperm *g, int64_t batch,
                                const float *x, float *y, dyn_err *err);
int dyn_cuda_tf_permute_backward(dyn_cuda_ctx *ctx, const dyn_kperm *g, int64_t batch,
                                 const float *dy, float *dx, dyn_err *err);

/* concat along axis 1 of g->n (2..4) inputs x[k] [batch][xs[k]] into y [batch][ys]; backward
 * dx[k] (each may be NULL) = the slices of dy. */
int dyn_cuda_tf_concat_forward(dyn_cuda_ctx *ctx, const dyn_kcat *g, int64_t batch,
                               const float *const *x, float *y, dyn_err *err);
int dyn_cuda_tf_concat_backward(dyn_cuda_ctx *ctx, const dyn_kcat *g, int64_t batch,
                                const float *dy, float *const *dx, dyn_err *err);

/* reduce_mean: x [outer][n][inner] -> y [outer][inner]; backward dx = dy / n spread. */
int dyn_cuda_tf_mean_forward(dyn_cuda_ctx *ctx, int64_t outer, int64_t n, int64_t inner,
                             const float *x, float *y, dyn_err *err);
int dyn_cuda_tf_mean_backward(dyn_cuda_ctx *ctx, int64_t outer, int64_t n, int64_t inner,
                              const float *dy, float *dx, dyn_err *err);

/* affine: x, y [rows][P]; w, b [P] (each may be NULL: no weight / no bias). Backward: dx (may
 * be NULL), dw, db [P] (each may be NULL). */
int dyn_cuda_tf_affine_forward(dyn_cuda_ctx *ctx, int64_t rows, int64_t P, const float *w,
                               const float *b, const float *x, float *y, dyn_err *err);
int dyn_cuda_tf_affine_backward(dyn_cuda_ctx *ctx, int64_t rows, int64_t P, const float *w,
                                const float *x, const float *dy, float *dx, float *dw, float *db,
                                dyn_err *err);

/* cat_param (geometry dyn_kcp): x [batch][outer][xs], w [outer][ps] -> y [batch][outer][xs+ps];
 * backward dx (may be NULL) and dw (may be NULL, accumulated over the batch). */
int dyn_cuda_tf_cat_param_forward(dyn_cuda_ctx *ctx, const dyn_kcp *g, int64_t batch,
                                  const float *w, const float *x, float *y, dyn_err *err);
int dyn_cuda_tf_cat_param_backward(dyn_cuda_ctx *ctx, const dyn_kcp *g, int64_t batch,
                                   const float *dy, float *dx, float *dw, dyn_err *err);

#ifdef __cplusplus
}
#endif

#endif
