/* reduce.c — mean over one axis (ONNX ReduceMean: token pooling, the decomposed LayerNorm).
 *
 * Attributes: "axis" (1..3, an axis after the batch), "keepdims" (0/1, default 0). No
 * parameters. Output: the input's shape without that axis (or with it set to 1). Backward
 * spreads dy / n over the reduced axis.
 */
#include <string.h>

#include "../layer.h"
#include "reduce_impl.h"
#include "../cpu/par.h"

static int rm_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    int64_t axis, keep;
    int rc;
    if ((rc = dyn_attr_int(l, attrs, "axis", -1, 1, DYN_MAX_DIMS - 1, &axis, err)) ||
        (rc = dyn_attr_int(l, attrs, "keepdims", 0, 0, 1, &keep, err)))
        return rc;
    rm_impl *p = malloc(sizeof *p);
    if (!p) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    p->axis = (int)axis;
    p->keep = (int)keep;
    l->impl = p;
    return 0;
}

static void rm_destroy(dyn_layer *l) {
    free(l->impl);
    l->impl = NULL;
}

static json_t *rm_attrs(const dyn_layer *l) {
    const rm_impl *p = l->impl;
    return json_pack("{s:i, s:i}", "axis", p->axis, "keepdims", p->keep);
}

static int rm_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    const rm_impl *p = l->impl;
    char b[64];
    if (p->axis >= in[0].ndim || (!p->keep && in[0].ndim < 3))
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': cannot reduce axis %d of %s%s", l->name,
                           p->axis, dyn_shape_str(&in[0], b, sizeof b),
                           p->keep ? "" : " (and keep a feature axis)");
    *out = in[0];
    if (p->keep) {
        out->d[p->axis] = 1;
    } else {
        for (int i = p->axis; i + 1 < in[0].ndim; i++) out->d[i] = in[0].d[i + 1];
        out->d[--out->ndim] = 0;
    }
    return 0;
}

static void rm_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                       int training) {
    (void)scratch;
    (void)training;
    int64_t outer, n, inner;
    rm_geom(l->impl, &x[0], &outer, &n, &inner);
    DYN_PAR_FOR(outer * n * inner > 65536,
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < inner; i++) {
            double s = 0;
            for (int64_t k = 0; k < n; k++) s += x[0].data[(o * n + k) * inner + i];
            y->data[o * inner + i] = (float)(s / (double)n);
        });
}

static void rm_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                        const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)y;
    (void)scratch;
    if (!dx[0].data) return;
    int64_t outer, n, inner;
    rm_geom(l->impl, &x[0], &outer, &n, &inner);
    const float inv = 1.0f / (float)n;
    DYN_PAR_FOR(outer * n * inner > 65536,
    for (int64_t o = 0; o < outer; o++)
        for (int64_t k = 0; k < n; k++)
            for (int64_t i = 0; i < inner; i++)
                dx[0].data[(o * n + k) * inner + i] = dy->data[o * inner + i] * inv;);
}

const dyn_layer_ops dyn_op_reduce_mean = {
    .op = DYN_OP_REDUCE_MEAN,
    .name = "reduce_mean",
    .ninputs = 1,
    .create = rm_create,
    .destroy = rm_destroy,
    .attrs = rm_attrs,
    .infer = rm_infer,
    .forward = rm_forward,
    .backward = rm_backward,
};
