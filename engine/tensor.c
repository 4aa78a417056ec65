#include "tensor.h"

#include <string.h>

static void set_contiguous_strides(dyn_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->stride[i] = s;
        s *= t->shape[i];
    }
}

int dyn_tensor_init(dyn_tensor *t, int ndim, const int64_t *shape, dyn_err *err) {
    memset(t, 0, sizeof *t);
    if (ndim < 1 || ndim > DYN_MAX_DIMS)
        return dyn_err_set(err, DYN_EINVAL, "tensor rank %d is outside 1..%d", ndim, DYN_MAX_DIMS);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (shape[i] > 0 && n > DYN_TENSOR_MAX_NUMEL / shape[i]))
            return dyn_err_set(err, DYN_EINVAL, "tensor dimension %d (%lld) is negative or too large",
                               i, (long long)shape[i]);
        n *= shape[i];
    }
    float *p = dyn_alloc_zero((size_t)n * sizeof(float));
    if (!p) return dyn_err_set(err, DYN_ENOMEM, "out of memory allocating %lld floats", (long long)n);
    t->ndim = ndim;
    memcpy(t->shape, shape, (size_t)ndim * sizeof(int64_t));
    set_contiguous_strides(t);
    t->data = p;
    t->owner = 1;
    return 0;
}

int dyn_tensor_init_shape(dyn_tensor *t, const dyn_shape *s, dyn_err *err) {
    return dyn_tensor_init(t, s->ndim, s->d, err);
}

void dyn_tensor_release(dyn_tensor *t) {
    if (t->owner) dyn_free(t->data);
    memset(t, 0, sizeof *t);
}

dyn_tensor dyn_tensor_view(float *data, int ndim, const int64_t *shape) {
    dyn_tensor t;
    memset(&t, 0, sizeof t);
    DYN_ASSERT(ndim >= 1 && ndim <= DYN_MAX_DIMS);
    t.ndim = ndim;
    memcpy(t.shape, shape, (size_t)ndim * sizeof(int64_t));
    set_contiguous_strides(&t);
    t.data = data;
    return t;
}

int64_t dyn_tensor_numel(const dyn_tensor *t) {
    if (t->ndim == 0) return 0;
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

int64_t dyn_shape_numel(const dyn_shape *s) {
    if (s->ndim == 0) return 0;
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->d[i];
    return n;
}

int dyn_tensor_is_contiguous(const dyn_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        if (t->shape[i] != 1 && t->stride[i] != s) return 0;
        s *= t->shape[i];
    }
    return 1;
}

void dyn_tensor_zero(dyn_tensor *t) {
    DYN_ASSERT(dyn_tensor_is_contiguous(t));
    if (t->data) memset(t->data, 0, (size_t)dyn_tensor_numel(t) * sizeof(float));
}

void dyn_tensor_copy(dyn_tensor *dst, const dyn_tensor *src) {
    DYN_ASSERT(dyn_tensor_is_contiguous(dst) && dyn_tensor_is_contiguous(src));
    DYN_ASSERT(dyn_tensor_numel(dst) == dyn_tensor_numel(src));
    memmove(dst->data, src->data, (size_t)dyn_tensor_numel(src) * sizeof(float));
}

dyn_shape dyn_tensor_shape(const dyn_tensor *t) {
    dyn_shape s;
    memset(&s, 0, sizeof s);
    s.ndim = t->ndim;
    for (int i = 0; i < t->ndim; i++) s.d[i] = t->shape[i];
    return s;
}

int dyn_shape_eq(const dyn_shape *a, const dyn_shape *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->d[i] != b->d[i]) return 0;
    return 1;
}

const char *dyn_shape_str(const dyn_shape *s, char *buf, size_t n) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, n - off, "[");
    for (int i = 0; i < s->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ", %lld" : "%lld", (long long)s->d[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
    return buf;
}
