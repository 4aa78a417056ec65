/* concat.c — concatenation of 2 to 4 tensors along the channel axis (ONNX Concat, axis 1;
 * DenseNet blocks).
 *
 * Attributes: "axis" (only 1 for now), "inputs" (2..4, default 2). Inputs share every
 * dimension but axis 1 and have rank >= 2; the output's axis 1 is the sum of theirs.
 * No parameters. Backward slices dy back into each requested input gradient.
 *
 * Arity: the op is variadic (ops->ninputs = 0); create() sets l->ninputs from "inputs".
 */
#include <string.h>

#include "../layer.h"
#include "concat_impl.h"

static int concat_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    int64_t axis, n;
    int rc;
    if ((rc = dyn_attr_int(l, attrs, "inputs", 2, 2, DYN_LAYER_MAX_INPUTS, &n, err))) return rc;
    if ((rc = dyn_attr_int(l, attrs, "axis", 1, INT64_MIN, INT64_MAX, &axis, err))) return rc;
    if (axis != 1)
        return dyn_err_set(err, DYN_EUNSUP,
                           "layer '%s': concat along axis %lld is not supported (only axis 1, the "
                           "channels)",
                           l->name, (long long)axis);
    concat_impl *p = malloc(sizeof *p);
    if (!p) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    p->n = (int)n;
    l->impl = p;
    l->ninputs = (int)n;
    return 0;
}

static void concat_destroy(dyn_layer *l) {
    free(l->impl);
    l->impl = NULL;
}

static json_t *concat_attrs(const dyn_layer *l) {
    const concat_impl *p = l->impl;
    return json_pack("{s:i, s:i}", "axis", 1, "inputs", p->n);
}

static int concat_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    const concat_impl *p = l->impl;
    char a[64], b[64];
    if (in[0].ndim < 2)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': concat input 0 of shape %s has no axis 1",
                           l->name, dyn_shape_str(&in[0], a, sizeof a));
    *out = in[0];
    for (int k = 1; k < p->n; k++) {
        int ok = in[k].ndim == in[0].ndim;
        for (int d = 0; ok && d < in[0].ndim; d++) ok = d == 1 || in[k].d[d] == in[0].d[d];
        if (!ok)
            return dyn_err_set(err, DYN_EINVAL,
                               "layer '%s': concat inputs must match outside axis 1, got %s and %s",
                               l->name, dyn_shape_str(&in[0], a, sizeof a),
                               dyn_shape_str(&in[k], b, sizeof b));
        out->d[1] += in[k].d[1];
    }
    return 0;
}

/* Floats per sample of input k, and per sample in all. */
static int64_t per_sample(const dyn_tensor *t) { return dyn_tensor_numel(t) / t->shape[0]; }

static void concat_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                           int training) {
    (void)scratch;
    (void)training;
    const concat_impl *p = l->impl;
    int64_t batch = y->shape[0], ys = per_sample(y), off = 0;
    for (int k = 0; k < p->n; k++) {
        DYN_ASSERT(x[k].shape[0] == batch);
        int64_t xs = per_sample(&x[k]);
        for (int64_t s = 0; s < batch; s++)
            memcpy(y->data + s * ys + off, x[k].data + s * xs, (size_t)xs * sizeof(float));
        off += xs;
    }
    DYN_ASSERT(off == ys);
}

static void concat_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                            const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)scratch;
    const concat_impl *p = l->impl;
    int64_t batch = y->shape[0], ys = per_sample(y), off = 0;
    for (int k = 0; k < p->n; k++) {
        int64_t xs = per_sample(&x[k]);
        if (dx[k].data)
            for (int64_t s = 0; s < batch; s++)
                memcpy(dx[k].data + s * xs, dy->data + s * ys + off, (size_t)xs * sizeof(float));
        off += xs;
    }
}

static void concat_stats(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    (void)l;
    (void)in;
    (void)st;
}

const dyn_layer_ops dyn_op_concat = {
    .op = DYN_OP_CONCAT,
    .name = "concat",
    .ninputs = 0,
    .create = concat_create,
    .destroy = concat_destroy,
    .attrs = concat_attrs,
    .infer = concat_infer,
    .forward = concat_forward,
    .backward = concat_backward,
    .stats = concat_stats,
};
