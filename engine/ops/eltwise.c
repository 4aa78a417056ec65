/* eltwise.c — element-wise binary ops on two activations: mul, sub, div (ONNX Mul, Sub, Div;
 * add.c holds add), and the broadcasting kernels the four share (eltwise_impl.h).
 *
 * No attributes, no parameters. Inputs of equal rank; each dimension equal, or 1 on one side
 * (ONNX broadcasting: the SE gate x * s[N, C, 1, 1], the decomposed LayerNorm's
 * (x - mean[N, T, 1]) / std[N, T, 1]). The batch must match. Backward, summed over the
 * dimensions an input was broadcast along:
 *   add: da = dy,      db = dy
 *   sub: da = dy,      db = -dy
 *   mul: da = dy * b,  db = dy * a
 *   div: da = dy / b,  db = -dy * a / b^2 (= -dy * y / b)
 * Division by zero follows IEEE (inf / nan), as ONNX does. Same shapes take a flat loop.
 */
#include <string.h>

#include "eltwise_impl.h"
#include "../cpu/par.h"

int dyn__bin_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    int ok = in[0].ndim == in[1].ndim && in[0].d[0] == in[1].d[0];
    for (int i = 1; ok && i < in[0].ndim; i++)
        ok = in[0].d[i] == in[1].d[i] || in[0].d[i] == 1 || in[1].d[i] == 1;
    if (!ok) {
        char a[64], b[64];
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': %s needs inputs of the same shape (or shapes that "
                           "broadcast: equal rank, each size equal or 1), got %s and %s",
                           l->name, l->ops->name, dyn_shape_str(&in[0], a, sizeof a),
                           dyn_shape_str(&in[1], b, sizeof b));
    }
    *out = in[0];
    for (int i = 1; i < in[0].ndim; i++) out->d[i] = DYN_MAX(in[0].d[i], in[1].d[i]);
    return 0;
}

static float bin_f(dyn__bin_kind k, float a, float b) {
    switch (k) {
    case DYN__BIN_ADD: return a + b;
    case DYN__BIN_SUB: return a - b;
    case DYN__BIN_MUL: return a * b;
    default: return a / b;
    }
}

/* Strides of t over y's dims (0 where t is broadcast), padded to DYN_MAX_DIMS. */
static void bcast_strides(const dyn_tensor *t, const dyn_tensor *y, int64_t *st, int64_t *sz) {
    int64_t s = 1;
    for (int i = DYN_MAX_DIMS - 1; i >= 0; i--) {
        int d = i - (DYN_MAX_DIMS - y->ndim);
        sz[i] = d >= 0 ? y->shape[d] : 1;
        int64_t td = d >= 0 ? t->shape[d] : 1;
        st[i] = td == 1 ? 0 : s;
        s *= td;
    }
}

static int same_shape(const dyn_tensor *x, const dyn_tensor *y) {
    dyn_shape a = dyn_tensor_shape(&x[0]), b = dyn_tensor_shape(&x[1]), c = dyn_tensor_shape(y);
    return dyn_shape_eq(&a, &c) && dyn_shape_eq(&b, &c);
}

/* Calls body(i, ia, ib) for every output element i with the input offsets. */
#define BCAST_LOOP(x, y, BODY)                                                              \
    do {                                                                                    \
        int64_t sa[DYN_MAX_DIMS], sb[DYN_MAX_DIMS], sz[DYN_MAX_DIMS];                       \
        bcast_strides(&(x)[0], (y), sa, sz);                                                \
        bcast_strides(&(x)[1], (y), sb, sz);                                                \
        int64_t i = 0;                                                                      \
        for (int64_t i0 = 0; i0 < sz[0]; i0++)                                              \
            for (int64_t i1 = 0; i1 < sz[1]; i1++)                                          \
                for (int64_t i2 = 0; i2 < sz[2]; i2++)                                      \
                    for (int64_t i3 = 0; i3 < sz[3]; i3++, i++) {                           \
                        const int64_t ia = i0 * sa[0] + i1 * sa[1] + i2 * sa[2] + i3 * sa[3]; \
                        const int64_t ib = i0 * sb[0] + i1 * sb[1] + i2 * sb[2] + i3 * sb[3]; \
                        BODY;                                                               \
                    }                                                                       \
    } while (0)

void dyn__bin_forward(dyn__bin_kind k, const dyn_tensor *x, dyn_tensor *y) {
    const float *a = x[0].data, *b = x[1].data;
    float *yp = y->data;
    if (same_shape(x, y)) {
        int64_t n = dyn_tensor_numel(y);
        DYN_PAR_FOR(n > 65536,
        for (int64_t i = 0; i < n; i++) yp[i] = bin_f(k, a[i], b[i]););
        return;
    }
    BCAST_LOOP(x, y, yp[i] = bin_f(k, a[ia], b[ib]));
}

void dyn__bin_backward(dyn__bin_kind k, const dyn_tensor *x, const dyn_tensor *y,
                       const dyn_tensor *dy, dyn_tensor *dx) {
    const float *a = x[0].data, *b = x[1].data, *yp = y->data, *g = dy->data;
    float *da = dx[0].data, *db = dx[1].data;
    if (same_shape(x, y)) {
        int64_t n = dyn_tensor_numel(y);
        if (da && da != g) {
            DYN_PAR_FOR(n > 65536,
            for (int64_t i = 0; i < n; i++)
                da[i] = k == DYN__BIN_MUL ? g[i] * b[i] : k == DYN__BIN_DIV ? g[i] / b[i] : g[i];);
        }
        if (db && db != g) {
            DYN_PAR_FOR(n > 65536,
            for (int64_t i = 0; i < n; i++)
                db[i] = k == DYN__BIN_ADD   ? g[i]
                        : k == DYN__BIN_SUB ? -g[i]
                        : k == DYN__BIN_MUL ? g[i] * a[i]
                                            : -g[i] * yp[i] / b[i];);
        }
        return;
    }
    if (da) dyn_tensor_zero(&dx[0]);
    if (db) dyn_tensor_zero(&dx[1]);
    BCAST_LOOP(x, y, {
        const float gi = g[i];
        if (da) da[ia] += k == DYN__BIN_MUL ? gi * b[ib] : k == DYN__BIN_DIV ? gi / b[ib] : gi;
        if (db)
            db[ib] += k == DYN__BIN_ADD   ? gi
                      : k == DYN__BIN_SUB ? -gi
                      : k == DYN__BIN_MUL ? gi * a[ia]
                                          : -gi * yp[i] / b[ib];
    });
}

static void bin_stats(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    (void)l;
    (void)in;
    (void)st;
}

#define BIN_KERNELS(NAME, KIND)                                                              \
    static void NAME##_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *s,  \
                               int training) {                                              \
        (void)l;                                                                             \
        (void)s;                                                                             \
        (void)training;                                                                      \
        dyn__bin_forward(KIND, x, y);                                                        \
    }                                                                                        \
    static void NAME##_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,     \
                                const dyn_tensor *dy, dyn_tensor *dx, float *s) {           \
        (void)l;                                                                             \
        (void)s;                                                                             \
        dyn__bin_backward(KIND, x, y, dy, dx);                                               \
    }

BIN_KERNELS(mul, DYN__BIN_MUL)
BIN_KERNELS(sub, DYN__BIN_SUB)
BIN_KERNELS(div, DYN__BIN_DIV)

#define BINARY_OP(ID, NAME, FWD, BWD)                                                        \
    {                                                                                        \
        .op = ID, .name = NAME, .ninputs = 2, .create = dyn_op_create_no_attrs,              \
        .attrs = dyn_op_attrs_none, .infer = dyn__bin_infer, .forward = FWD, .backward = BWD, \
        .stats = bin_stats,                                                                  \
    }

const dyn_layer_ops dyn_op_mul = BINARY_OP(DYN_OP_MUL, "mul", mul_forward, mul_backward);
const dyn_layer_ops dyn_op_sub = BINARY_OP(DYN_OP_SUB, "sub", sub_forward, sub_backward);
const dyn_layer_ops dyn_op_div = BINARY_OP(DYN_OP_DIV, "div", div_forward, div_backward);
