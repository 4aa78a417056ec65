/* cat_param.c — concatenation of a learned tensor with an activation along one axis (ONNX
 * Concat of a batch-expanded constant and an activation: ViT's class token,
 * Concat([cls.expand(N, -1, -1), x], axis 1)).
 *
 * Attributes: "axis" (1..3), "shape" (the parameter's per-sample shape: the input's shape
 * after the batch with `axis` replaced by the parameter's length), "at" (0: before the input,
 * 1: after), "trainable" (0/1, default 1). Parameter "weight" of that shape (init 0), shared
 * by every sample. Backward slices dy into dx and sums the parameter's part over the batch.
 */
#include <string.h>

#include "../layer.h"
#include "cat_param_impl.h"

static int cp_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    cp_impl p;
    memset(&p, 0, sizeof p);
    int64_t axis, at, tr;
    int rc;
    if ((rc = dyn_attr_ints(l, attrs, "shape", 1, DYN_MAX_DIMS - 1, 1, DYN_TENSOR_MAX_NUMEL,
                            p.shape, &p.nshape, err)))
        return rc;
    int64_t total;
    char what[96];
    snprintf(what, sizeof what, "layer '%s': 'shape'", l->name);
    if ((rc = dyn_numel_checked(p.nshape, p.shape, DYN_TENSOR_MAX_NUMEL, &total, err, what)))
        return rc;
    if ((rc = dyn_attr_int(l, attrs, "axis", -1, 1, p.nshape, &axis, err)) ||
        (rc = dyn_attr_int(l, attrs, "at", 0, 0, 1, &at, err)) ||
        (rc = dyn_attr_int(l, attrs, "trainable", 1, 0, 1, &tr, err)))
        return rc;
    p.axis = (int)axis;
    p.at = (int)at;
    p.trainable = (int)tr;
    cp_impl *im = malloc(sizeof *im);
    if (!im) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    *im = p;
    l->impl = im;
    if (!dyn_layer_param_add(l, "weight", p.nshape, p.shape, (int)tr, err))
        return err ? err->code : DYN_EINVAL;
    return 0;
}

static void cp_destroy(dyn_layer *l) {
    free(l->impl);
    l->impl = NULL;
}

static json_t *cp_attrs(const dyn_layer *l) {
    const cp_impl *p = l->impl;
    json_t *s = json_array();
    for (int i = 0; s && i < p->nshape; i++) json_array_append_new(s, json_integer(p->shape[i]));
    return json_pack("{s:i, s:o, s:i, s:i}", "axis", p->axis, "shape", s, "at", p->at,
                     "trainable", p->trainable);
}

static int cp_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    const cp_impl *p = l->impl;
    int ok = in[0].ndim == p->nshape + 1;
    for (int i = 0; ok && i < p->nshape; i++) ok = i + 1 == p->axis || in[0].d[i + 1] == p->shape[i];
    if (!ok) {
        char a[64];
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': cat_param along axis %d: input %s does not match the "
                           "parameter outside that axis",
                           l->name, p->axis, dyn_shape_str(&in[0], a, sizeof a));
    }
    *out = in[0];
    out->d[p->axis] += p->shape[p->axis - 1];
    return 0;
}

static void cp_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                       int training) {
    (void)scratch;
    (void)training;
    const cp_impl *p = l->impl;
    int64_t outer, xs, ps;
    cp_geom(p, &x[0], &outer, &xs, &ps);
    const float *w = l->params[0].value.data;
    for (int64_t s = 0; s < x[0].shape[0]; s++)
        for (int64_t o = 0; o < outer; o++) {
            float *dst = y->data + (s * outer + o) * (xs + ps);
            const float *src = x[0].data + (s * outer + o) * xs;
            memcpy(dst + (p->at ? 0 : ps), src, (size_t)xs * sizeof(float));
            memcpy(dst + (p->at ? xs : 0), w + o * ps, (size_t)ps * sizeof(float));
        }
}

static void cp_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                        const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)y;
    (void)scratch;
    const cp_impl *p = l->impl;
    int64_t outer, xs, ps;
    cp_geom(p, &x[0], &outer, &xs, &ps);
    float *gw = p->trainable ? l->params[0].grad.data : NULL;
    for (int64_t s = 0; s < x[0].shape[0]; s++)
        for (int64_t o = 0; o < outer; o++) {
            const float *src = dy->data + (s * outer + o) * (xs + ps);
            if (dx[0].data)
                memcpy(dx[0].data + (s * outer + o) * xs, src + (p->at ? 0 : ps),
                       (size_t)xs * sizeof(float));
            if (gw)
                for (int64_t i = 0; i < ps; i++) gw[o * ps + i] += src[(p->at ? xs : 0) + i];
        }
}

const dyn_layer_ops dyn_op_cat_param = {
    .op = DYN_OP_CAT_PARAM,
    .name = "cat_param",
    .ninputs = 1,
    .create = cp_create,
    .destroy = cp_destroy,
    .attrs = cp_attrs,
    .infer = cp_infer,
    .forward = cp_forward,
    .backward = cp_backward,
};
