#include "tensor.h"

#include <string.h>

static void set_contiguous_strides(dyn_tensor *t) {
    int64_t s = 1;
    for (int i = t->ndim - 1; i >= 0; i--) {
        t->stride[i] = s;
        s *= t->shape[i];
    }
}

int dyn_numel_checked(int ndim, const int64_t *dims, int64_t max, int64_t *out, dyn_err *err,
                      const char *what) {
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        if (dims[i] < 0)
            return dyn_err_set(err, DYN_EINVAL, "%s: dimension %d is negative (%lld)", what, i,
                               (long long)dims[i]);
    for (int i = 0; i < ndim; i++) {
        if (!dyn_mul_ok(n, dims[i], &n) || n > max) {
            char buf[160];
            dyn_shape s = {.ndim = DYN_MIN(ndim, DYN_MAX_DIMS)};
            memcpy(s.d, dims, (size_t)s.ndim * sizeof *dims);
            return dyn_err_set(err, DYN_EINVAL, "%s: shape %s%s has more than %lld elements", what,
                               dyn_shape_str(&s, buf, sizeof buf), ndim > DYN_MAX_DIMS ? "..." : "",
                               (long long)max);
        }
    }
    *out = n;
    return 0;
}

int dyn_tensor_init(dyn_tensor *t, int ndim, const int64_t *shape, dyn_err *err) {
    memset(t, 0, sizeof *t);
    if (ndim < 1 || ndim > DYN_MAX_DIMS)
        return dyn_err_set(err, DYN_EINVAL, "tensor rank %d is outside 1..%d", ndim, DYN_MAX_DIMS);
    int64_t n;
    int rc = dyn_numel_checked(ndim, shape, DYN_TENSOR_MAX_NUMEL, &n, err, "tensor");
    if (rc) return rc;
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

static int64_t numel_sat(int ndim, const int64_t *d) {
    if (ndim == 0) return 0;
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        if (!dyn_mul_ok(n, d[i], &n)) return INT64_MAX;
    return n;
}

int64_t dyn_tensor_numel(const dyn_tensor *t) { return numel_sat(t->ndim, t->shape); }

int64_t dyn_shape_numel(const dyn_shape *s) { return numel_sat(s->ndim, s->d); }

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
