/* scale.c — per-channel affine map y[n, c, ...] = x[n, c, ...] * weight[c] + bias[c] (ONNX
 * Mul / Add / Sub / Div of an activation and a scalar or per-channel constant: [C], [C, 1, 1],
 * [1, C, 1, 1], ...; input normalization such as (x - mean) / std).
 *
 * Attributes: "channels" (C >= 1, the size of axis 1 of the input), "trainable" (0/1, default
 * 1; the importer writes 0, since ONNX constants are fixed). Parameters "weight" [C] (init 1)
 * and "bias" [C] (init 0); a freshly created layer is the identity. Input rank >= 2.
 */
#include <string.h>

#include "../layer.h"
#include "../cpu/par.h"

static void scale_identity(dyn_layer *l) {
    dyn_param *w = dyn_layer_param(l, "weight"), *b = dyn_layer_param(l, "bias");
    int64_t c = dyn_tensor_numel(&w->value);
    for (int64_t i = 0; i < c; i++) {
        w->value.data[i] = 1.0f;
        b->value.data[i] = 0.0f;
    }
}

static int scale_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    int64_t ch, tr;
    int rc;
    if ((rc = dyn_attr_int(l, attrs, "channels", -1, 1, DYN_TENSOR_MAX_NUMEL, &ch, err)) ||
        (rc = dyn_attr_int(l, attrs, "trainable", 1, 0, 1, &tr, err)))
        return rc;
    if (!dyn_layer_param_add(l, "weight", 1, &ch, (int)tr, err) ||
        !dyn_layer_param_add(l, "bias", 1, &ch, (int)tr, err))
        return err ? err->code : DYN_EINVAL;
    scale_identity(l);
    return 0;
}

static json_t *scale_attrs(const dyn_layer *l) {
    const dyn_param *w = &l->params[0];
    return json_pack("{s:I, s:i}", "channels", (json_int_t)w->value.shape[0], "trainable",
                     w->trainable);
}

static void scale_init(dyn_layer *l, dyn_rng *rng) {
    (void)rng;
    scale_identity(l);
}

static int scale_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    int64_t ch = l->params[0].value.shape[0];
    if (in[0].ndim < 2 || in[0].d[1] != ch) {
        char a[64];
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': scale of %lld channels does not fit input shape %s "
                           "(axis 1 must be the channels)",
                           l->name, (long long)ch, dyn_shape_str(&in[0], a, sizeof a));
    }
    *out = in[0];
    return 0;
}

static void scale_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                          int training) {
    (void)scratch;
    (void)training;
    const float *w = l->params[0].value.data, *b = l->params[1].value.data;
    int64_t ch = l->params[0].value.shape[0], batch = x[0].shape[0];
    int64_t n = dyn_tensor_numel(&x[0]), inner = n / (batch * ch);
    DYN_ASSERT(x[0].shape[1] == ch && dyn_tensor_numel(y) == n);
    const float *xp = x[0].data;
    float *yp = y->data;
    DYN_PAR_FOR(n > 65536,
    for (int64_t r = 0; r < batch * ch; r++) {
        const float wc = w[r % ch], bc = b[r % ch];
        for (int64_t i = 0; i < inner; i++) yp[r * inner + i] = xp[r * inner + i] * wc + bc;
    });
}

static void scale_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                           const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)y;
    (void)scratch;
    dyn_param *pw = &l->params[0], *pb = &l->params[1];
    const float *w = pw->value.data;
    int64_t ch = pw->value.shape[0], batch = x[0].shape[0];
    int64_t inner = dyn_tensor_numel(&x[0]) / (batch * ch);
    const float *xp = x[0].data, *g = dy->data;
    if (dx[0].data) {
        float *d = dx[0].data;
        for (int64_t r = 0; r < batch * ch; r++)
            for (int64_t i = 0; i < inner; i++) d[r * inner + i] = g[r * inner + i] * w[r % ch];
    }
    if (!pw->trainable) return;
    for (int64_t c = 0; c < ch; c++) {
        double sw = 0, sb = 0;
        for (int64_t s = 0; s < batch; s++) {
            int64_t base = (s * ch + c) * inner;
            for (int64_t i = 0; i < inner; i++) {
                sw += (double)g[base + i] * xp[base + i];
                sb += g[base + i];
            }
        }
        pw->grad.data[c] += (float)sw;
        pb->grad.data[c] += (float)sb;
    }
}

static void scale_stats(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    (void)l;
    st->macs = dyn_shape_numel(in);
}

const dyn_layer_ops dyn_op_scale = {
    .op = DYN_OP_SCALE,
    .name = "scale",
    .ninputs = 1,
    .create = scale_create,
    .attrs = scale_attrs,
    .init = scale_init,
    .infer = scale_infer,
    .forward = scale_forward,
    .backward = scale_backward,
    .stats = scale_stats,
};
