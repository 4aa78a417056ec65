/* tensor.h — float32 tensors: shape, strides, 64-byte aligned storage.
 *
 * A dyn_tensor is a small value type (copy it freely); it either owns its storage
 * (`owner` = 1, released by dyn_tensor_release) or is a view into storage owned elsewhere.
 * Activations are NCHW (batch first); a linear layer's activations are [N, features].
 * Kernels that need a layout assert it (contiguous) rather than guess.
 */
#ifndef DYN_TENSOR_H
#define DYN_TENSOR_H

#include "base.h"

#define DYN_MAX_DIMS 4

typedef struct dyn_tensor {
    int ndim;
    int64_t shape[DYN_MAX_DIMS];
    int64_t stride[DYN_MAX_DIMS]; /* in elements */
    float *data;
    int owner;
    int device; /* DYN_DEV_CPU (0): data is host memory; else a backend's device memory
                 * (backend.h), never dereferenced on the host */
} dyn_tensor;

#define DYN_DEV_CPU 0
#define DYN_DEV_CUDA 1

/* A shape without storage, used for shape inference. */
typedef struct dyn_shape {
    int ndim;
    int64_t d[DYN_MAX_DIMS];
} dyn_shape;

/* Largest element count a tensor may hold (guards size arithmetic against hostile input). */
#define DYN_TENSOR_MAX_NUMEL ((int64_t)1 << 34)

/* Allocates zeroed, aligned storage for `shape`; t owns it. Returns 0, or DYN_EINVAL for a bad
 * shape (ndim outside 1..4, a dimension < 0, too many elements) / DYN_ENOMEM. On failure *t is
 * left empty (data NULL) and safe to release. */
int dyn_tensor_init(dyn_tensor *t, int ndim, const int64_t *shape, dyn_err *err);
int dyn_tensor_init_shape(dyn_tensor *t, const dyn_shape *s, dyn_err *err);

/* Releases storage when t owns it and zeroes *t. Safe on a zeroed or already released tensor. */
void dyn_tensor_release(dyn_tensor *t);

/* A contiguous view over `data` (not owned). */
dyn_tensor dyn_tensor_view(float *data, int ndim, const int64_t *shape);

/* The element count of dims[0..ndim), checked: 0 with *out set when every dimension is >= 0
 * and the product is at most `max` (DYN_TENSOR_MAX_NUMEL, or a tighter bound), else DYN_EINVAL
 * with err saying "<what>: shape [a, b, c] has more than <max> elements" (or names the negative
 * dimension). The product is never formed past `max`, so no input can overflow it. */
int dyn_numel_checked(int ndim, const int64_t *dims, int64_t max, int64_t *out, dyn_err *err,
                      const char *what);

/* Element counts of shapes the engine already checked. They saturate: a product that would
 * overflow int64_t comes back as INT64_MAX (so `numel > DYN_TENSOR_MAX_NUMEL` stays a valid
 * test on any shape), never as a wrapped value. */
int64_t dyn_tensor_numel(const dyn_tensor *t);
int64_t dyn_shape_numel(const dyn_shape *s);
int dyn_tensor_is_contiguous(const dyn_tensor *t);
void dyn_tensor_zero(dyn_tensor *t);
/* Copies src's elements into dst; both contiguous with equal numel (asserted). */
void dyn_tensor_copy(dyn_tensor *dst, const dyn_tensor *src);
dyn_shape dyn_tensor_shape(const dyn_tensor *t);
int dyn_shape_eq(const dyn_shape *a, const dyn_shape *b);
/* "[64, 1, 28, 28]" into buf; returns buf. */
const char *dyn_shape_str(const dyn_shape *s, char *buf, size_t n);

#endif
