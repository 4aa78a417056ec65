/* onnx_cnn.c — ONNX import: the CNN operators, on values in plain layout (batch first). Conv,
 * Gemm and MatMul by a constant weight (linear over the last dim), pools, BatchNormalization,
 * Flatten, Reshape to [N, features], Add / Sub / Mul / Div (bias folding into the producer,
 * per-channel scale, else the transformer paths), Clip, Concat (chains, cat_param), Identity /
 * Dropout and the final Softmax.
 */
#include <math.h>
#include <string.h>

#include "onnx_impl.h"

/* Bound on kernel, stride, dilation and pad values (keeps the size arithmetic exact). */
#define SPATIAL_MAX (1 << 20)

/* ---- spatial attributes (Conv, pools) ----------------------------------------------------- */

/* Reads kernel_shape (or uses kdef), strides, dilations, pads / auto_pad into symmetric pads.
 * hw: the input's spatial size. */
static int spatial(ctx *c, const Onnx__NodeProto *n, const int64_t *hw, const int64_t *kdef,
                   int64_t *k, int64_t *s, int64_t *d, int64_t *p) {
    int rc, have;
    int64_t pads[4] = {0, 0, 0, 0};
    if ((rc = attr_ints(c, n, "kernel_shape", 2, k, &have))) return rc;
    if (!have) {
        if (!kdef) return node_err(c, n, DYN_EFORMAT, "attribute 'kernel_shape' is required");
        k[0] = kdef[0];
        k[1] = kdef[1];
    } else if (kdef && (k[0] != kdef[0] || k[1] != kdef[1])) {
        return node_err(c, n, DYN_EFORMAT,
                        "kernel_shape [%lld, %lld] does not match the weight's "
                        "[%lld, %lld]",
                        (long long)k[0], (long long)k[1], (long long)kdef[0], (long long)kdef[1]);
    }
    s[0] = s[1] = d[0] = d[1] = 1;
    if ((rc = attr_ints(c, n, "strides", 2, s, &have))) return rc;
    if ((rc = attr_ints(c, n, "dilations", 2, d, &have))) return rc;
    if ((rc = attr_ints(c, n, "pads", 4, pads, &have))) return rc;
    for (int i = 0; i < 2; i++)
        if (k[i] < 1 || s[i] < 1 || d[i] < 1 || k[i] > SPATIAL_MAX || s[i] > SPATIAL_MAX ||
            d[i] > SPATIAL_MAX)
            return node_err(c, n, DYN_EUNSUP, "kernel, strides and dilations must be in 1..%d",
                            SPATIAL_MAX);
    for (int i = 0; i < 4; i++)
        if (pads[i] < 0 || pads[i] > SPATIAL_MAX)
            return node_err(c, n, DYN_EUNSUP, "pads must be in 0..%d", SPATIAL_MAX);
    char ap[32];
    if ((rc = attr_str(c, n, "auto_pad", ap, sizeof ap))) return rc;
    if (!*ap || strcmp(ap, "NOTSET") == 0) {
        /* explicit pads */
    } else if (strcmp(ap, "VALID") == 0) {
        pads[0] = pads[1] = pads[2] = pads[3] = 0;
    } else if (strcmp(ap, "SAME_UPPER") == 0 || strcmp(ap, "SAME_LOWER") == 0) {
        for (int i = 0; i < 2; i++) {
            int64_t out = (hw[i] + s[i] - 1) / s[i];
            int64_t total = (out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - hw[i];
            if (total < 0) total = 0;
            if (total % 2)
                return node_err(c, n, DYN_EUNSUP,
                                "auto_pad %s needs asymmetric padding (%lld in total) here; only "
                                "symmetric pads are supported",
                                ap, (long long)total);
            pads[i] = pads[i + 2] = total / 2;
        }
    } else {
        return node_err(c, n, DYN_EUNSUP, "auto_pad '%s' is not supported", ap);
    }
    if (pads[0] != pads[2] || pads[1] != pads[3])
        return node_err(c, n, DYN_EUNSUP,
                        "asymmetric pads [%lld, %lld, %lld, %lld] are not supported (only begin "
                        "== end)",
                        (long long)pads[0], (long long)pads[1], (long long)pads[2],
                        (long long)pads[3]);
    p[0] = pads[0];
    p[1] = pads[1];
    return 0;
}

static int need_4d(ctx *c, const Onnx__NodeProto *n, const value *x) {
    char sb[64];
    if (x->shape.ndim != 4)
        return node_err(c, n, DYN_EUNSUP,
                        "input shape %s: only 2-D images [N, C, H, W] are supported",
                        shape_txt(&x->shape, sb, sizeof sb));
    return 0;
}

/* ---- operators ---------------------------------------------------------------------------- */

int op_conv(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {"auto_pad", "dilations", "group", "kernel_shape",
                                     "pads",     "strides",   NULL};
    value *x, *w, *b;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = node_in(c, n, 1, &w)) || (rc = node_in(c, n, 2, &b)) || (rc = need_act(c, n, x, 0)) ||
        (rc = need_4d(c, n, x)) || (rc = need_float(c, n, w, 1, 4)) ||
        (b && (rc = need_float(c, n, b, 2, 1))))
        return rc;
    int64_t group, k[2], s[2], d[2], p[2];
    if ((rc = attr_int(c, n, "group", 1, &group))) return rc;
    if ((rc = spatial(c, n, &x->shape.d[2], &w->c.dims[2], k, s, d, p))) return rc;
    int64_t cout = w->c.dims[0], cin = x->shape.d[1];
    if (group < 1 || cin % group || w->c.dims[1] * group != cin)
        return node_err(c, n, DYN_EINVAL,
                        "weight [%lld, %lld, ...] with group %lld does not fit "
                        "%lld input channels",
                        (long long)cout, (long long)w->c.dims[1], (long long)group, (long long)cin);
    if (b && b->c.dims[0] != cout)
        return node_err(c, n, DYN_EINVAL, "bias has %lld values for %lld output channels",
                        (long long)b->c.dims[0], (long long)cout);
    json_t *a =
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "in_channels",
                  (json_int_t)cin, "out_channels", (json_int_t)cout, "kernel_h", (json_int_t)k[0],
                  "kernel_w", (json_int_t)k[1], "stride_h", (json_int_t)s[0], "stride_w",
                  (json_int_t)s[1], "padding_h", (json_int_t)p[0], "padding_w", (json_int_t)p[1],
                  "dilation_h", (json_int_t)d[0], "dilation_w", (json_int_t)d[1], "groups",
                  (json_int_t)group, "bias", (json_int_t)(b != NULL));
    dyn_layer *l = make_layer(c, n, idx, "conv2d", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    param_set(l, "weight", w->c.f, w->c.numel);
    if (b) param_set(l, "bias", b->c.f, b->c.numel);
    return add_node(c, n, l, &x, 1);
}

/* linear from a weight already laid out [out, in] (wt) and an optional bias. */
static int emit_linear(ctx *c, const Onnx__NodeProto *n, int idx, value *x, const float *wt,
                       int64_t in, int64_t out, const float *bias) {
    char sb[96];
    int r = x->lay.nd, rc;
    if (r < 2 || lay_dim(&x->lay, r - 1) != in || lay_bdim(&x->lay) == r - 1)
        return node_err(c, n, DYN_EUNSUP,
                        "input shape %s does not fit a [N, ..., %lld] matrix product",
                        lay_txt(&x->lay, sb, sizeof sb), (long long)in);
    if ((rc = need_canon(c, n, x))) return rc;
    json_t *a = json_pack("{s:I, s:I, s:I}", "in", (json_int_t)in, "out", (json_int_t)out, "bias",
                          (json_int_t)(bias != NULL));
    dyn_layer *l = make_layer(c, n, idx, "linear", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    param_set(l, "weight", wt, in * out);
    if (bias) param_set(l, "bias", bias, out);
    layout L = x->lay;
    lay_redim(&L, r - 1, out, 0);
    return add_node_lay(c, n, l, &x, 1, &L);
}

static float *transposed(const float *src, int64_t rows, int64_t cols) {
    int64_t cnt = rows * cols;
    float *t = malloc((size_t)(cnt > 0 ? cnt : 1) * sizeof(float));
    if (!t) return NULL;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t q = 0; q < cols; q++) t[q * rows + r] = src[r * cols + q];
    return t;
}

int op_gemm(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {"alpha", "beta", "transA", "transB", NULL};
    value *x, *w, *b;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = node_in(c, n, 1, &w)) || (rc = node_in(c, n, 2, &b)) ||
        (rc = need_any_act(c, n, x, 0)) || (rc = need_float(c, n, w, 1, 2)) ||
        (b && (rc = need_float(c, n, b, 2, -1))))
        return rc;
    int64_t ta, tb;
    double alpha, beta;
    if ((rc = attr_int(c, n, "transA", 0, &ta)) || (rc = attr_int(c, n, "transB", 0, &tb)) ||
        (rc = attr_float(c, n, "alpha", 1.0, &alpha)) ||
        (rc = attr_float(c, n, "beta", 1.0, &beta)))
        return rc;
    if (ta) return node_err(c, n, DYN_EUNSUP, "transA = %lld is not supported", (long long)ta);
    if (alpha != 1.0 || (b && beta != 1.0))
        return node_err(c, n, DYN_EUNSUP, "alpha = %g, beta = %g: only 1 is supported", alpha,
                        beta);
    int64_t out = tb ? w->c.dims[0] : w->c.dims[1], in = tb ? w->c.dims[1] : w->c.dims[0];
    float *bias = NULL;
    if (b) {
        int64_t nonunit = 0;
        for (int i = 0; i < b->c.ndim; i++) nonunit += b->c.dims[i] != 1;
        if (!(b->c.numel == 1 ||
              (b->c.numel == out && nonunit <= 1 && b->c.dims[b->c.ndim - 1] == out)))
            return node_err(c, n, DYN_EUNSUP,
                            "bias C of %lld values does not broadcast as a "
                            "per-output bias of %lld",
                            (long long)b->c.numel, (long long)out);
        bias = malloc((size_t)(out ? out : 1) * sizeof(float));
        if (!bias) return node_err(c, n, DYN_ENOMEM, "out of memory");
        for (int64_t o = 0; o < out; o++) bias[o] = b->c.f[b->c.numel == 1 ? 0 : o];
    }
    float *wt = tb ? NULL : transposed(w->c.f, in, out);
    if (!tb && !wt) {
        free(bias);
        return node_err(c, n, DYN_ENOMEM, "out of memory");
    }
    rc = emit_linear(c, n, idx, x, tb ? w->c.f : wt, in, out, bias);
    free(wt);
    free(bias);
    return rc;
}

int op_matmul(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {NULL};
    value *x, *w;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) || (rc = node_in(c, n, 1, &w)))
        return rc;
    if (!x || !w) return node_err(c, n, DYN_EFORMAT, "needs two inputs");
    if (!x->is_const && !w->is_const) return op_matmul_acts(c, n, x, w);
    if (x->is_const || w->c.bexp >= 0)
        return node_err(c, n, DYN_EUNSUP,
                        "only activation x activation and activation x constant 2-D weight are "
                        "supported (constant x activation is not)");
    if ((rc = need_float(c, n, w, 1, 2))) return rc;
    int64_t in = w->c.dims[0], out = w->c.dims[1];
    float *wt = transposed(w->c.f, in, out);
    if (!wt) return node_err(c, n, DYN_ENOMEM, "out of memory");
    rc = emit_linear(c, n, idx, x, wt, in, out, NULL);
    free(wt);
    return rc;
}

int op_simple(ctx *c, const Onnx__NodeProto *n, int idx, const char *op, int need4) {
    static const char *const ok[] = {NULL};
    value *x;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = need_act(c, n, x, 0)) || (need4 && (rc = need_4d(c, n, x))))
        return rc;
    dyn_layer *l = make_layer(c, n, idx, op, json_object());
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    return add_node(c, n, l, &x, 1);
}

int op_pool(ctx *c, const Onnx__NodeProto *n, int idx, int is_avg) {
    static const char *const okmax[] = {"auto_pad", "ceil_mode",     "dilations", "kernel_shape",
                                        "pads",     "storage_order", "strides",   NULL};
    static const char *const okavg[] = {
        "auto_pad",     "ceil_mode", "count_include_pad", "dilations",
        "kernel_shape", "pads",      "strides",           NULL};
    value *x;
    int rc;
    if ((rc = attrs_check(c, n, is_avg ? okavg : okmax)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = need_act(c, n, x, 0)) || (rc = need_4d(c, n, x)))
        return rc;
    int64_t k[2], s[2], d[2], p[2], ceil_mode, cip, so;
    if ((rc = spatial(c, n, &x->shape.d[2], NULL, k, s, d, p)) ||
        (rc = attr_int(c, n, "ceil_mode", 0, &ceil_mode)) ||
        (rc = attr_int(c, n, "count_include_pad", 0, &cip)) ||
        (rc = attr_int(c, n, "storage_order", 0, &so)))
        return rc;
    if (d[0] != 1 || d[1] != 1)
        return node_err(c, n, DYN_EUNSUP, "dilations other than 1 are not supported");
    if (so)
        return node_err(c, n, DYN_EUNSUP, "storage_order = %lld is not supported", (long long)so);
    if ((ceil_mode != 0 && ceil_mode != 1) || (cip != 0 && cip != 1))
        return node_err(c, n, DYN_EFORMAT, "ceil_mode and count_include_pad must be 0 or 1");
    json_t *a = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "kernel_h", (json_int_t)k[0],
                          "kernel_w", (json_int_t)k[1], "stride_h", (json_int_t)s[0], "stride_w",
                          (json_int_t)s[1], "padding_h", (json_int_t)p[0], "padding_w",
                          (json_int_t)p[1], "ceil_mode", (json_int_t)ceil_mode);
    if (a && is_avg) json_object_set_new(a, "count_include_pad", json_integer(cip));
    dyn_layer *l = make_layer(c, n, idx, is_avg ? "avgpool2d" : "maxpool2d", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    return add_node(c, n, l, &x, 1);
}

int op_batchnorm(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {"epsilon", "momentum", "training_mode", "spatial", NULL};
    value *x, *p[4];
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) || (rc = need_act(c, n, x, 0)))
        return rc;
    for (int i = 0; i < 4; i++)
        if ((rc = node_in(c, n, (size_t)i + 1, &p[i])) ||
            (rc = need_float(c, n, p[i], (size_t)i + 1, 1)))
            return rc;
    double eps, mom;
    int64_t tm, spatial_attr;
    if ((rc = attr_float(c, n, "epsilon", 1e-5, &eps)) ||
        (rc = attr_float(c, n, "momentum", 0.9, &mom)) ||
        (rc = attr_int(c, n, "training_mode", 0, &tm)) ||
        (rc = attr_int(c, n, "spatial", 1, &spatial_attr)))
        return rc;
    if (tm) return node_err(c, n, DYN_EUNSUP, "training_mode = 1 is not supported");
    if (spatial_attr != 1) return node_err(c, n, DYN_EUNSUP, "spatial = 0 is not supported");
    if (!(eps > 0)) return node_err(c, n, DYN_EUNSUP, "epsilon = %g must be > 0", eps);
    if (!(mom >= 0 && mom <= 1)) mom = 0.9;
    char sb[64];
    if (x->shape.ndim < 2)
        return node_err(c, n, DYN_EUNSUP, "input shape %s has no channel dimension",
                        shape_txt(&x->shape, sb, sizeof sb));
    int64_t ch = x->shape.d[1];
    for (int i = 0; i < 4; i++)
        if (p[i]->c.dims[0] != ch)
            return node_err(c, n, DYN_EINVAL, "parameter %d has %lld values for %lld channels",
                            i + 1, (long long)p[i]->c.dims[0], (long long)ch);
    for (int64_t i = 0; i < ch; i++)
        if (!(p[3]->c.f[i] >= 0))
            return node_err(c, n, DYN_EINVAL, "running variance %lld is negative", (long long)i);
    /* ONNX: running = running * momentum + batch * (1 - momentum); ours is the PyTorch form. */
    json_t *a =
        json_pack("{s:I, s:f, s:f}", "channels", (json_int_t)ch, "eps", eps, "momentum", 1.0 - mom);
    dyn_layer *l = make_layer(c, n, idx, "batchnorm", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    static const char *const names[] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++) param_set(l, names[i], p[i]->c.f, ch);
    return add_node(c, n, l, &x, 1);
}

int op_flatten(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {"axis", NULL};
    value *x;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) || (rc = need_act(c, n, x, 0)))
        return rc;
    int64_t axis;
    if ((rc = attr_int(c, n, "axis", 1, &axis))) return rc;
    if (axis < 0) axis += x->shape.ndim;
    if (axis != 1)
        return node_err(c, n, DYN_EUNSUP, "axis = %lld: only axis 1 (keep the batch) is supported",
                        (long long)axis);
    dyn_layer *l = make_layer(c, n, idx, "flatten", json_object());
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    return add_node(c, n, l, &x, 1);
}

int op_reshape(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {"allowzero", NULL};
    value *x, *s;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) || (rc = node_in(c, n, 1, &s)))
        return rc;
    if (!x) return node_err(c, n, DYN_EFORMAT, "input 0 is missing");
    if (!s || !s->is_const || s->c.is_float || s->c.ndim != 1)
        return node_err(c, n, DYN_EUNSUP,
                        "the shape must be a 1-D INT64 tensor that is constant or computed from "
                        "shapes");
    int64_t allowzero;
    if ((rc = attr_int(c, n, "allowzero", 0, &allowzero))) return rc;
    if (x->is_const) {
        int64_t t[MAX_CONST_DIMS], cnt, known = 1, neg = -1;
        if ((rc = cst_fixed_ints(c, n, s, "the shape", t, MAX_CONST_DIMS, &cnt))) return rc;
        if (x->c.bexp >= 0) return node_err(c, n, DYN_EUNSUP, "reshaping a batch-expanded constant");
        for (int64_t d = 0; d < cnt; d++) {
            if (t[d] == 0 && !allowzero && d < x->c.ndim) t[d] = x->c.dims[d];
            if (t[d] == -1 && neg < 0) neg = d;
            else if (t[d] < 0) return node_err(c, n, DYN_EINVAL, "bad shape value %lld", (long long)t[d]);
            else if (!dyn_mul_ok(known, t[d], &known) || known > DYN_TENSOR_MAX_NUMEL)
                return node_err(c, n, DYN_EINVAL,
                                "reshape of a constant of %lld values to more than %lld",
                                (long long)x->c.numel, (long long)DYN_TENSOR_MAX_NUMEL);
        }
        if (neg >= 0 && known > 0) t[neg] = x->c.numel / known;
        cst k;
        if ((rc = cst_copy(c, n, &x->c, &k))) return rc;
        int64_t tot = 1; /* known times t[neg] <= x->c.numel: no overflow */
        for (int64_t d = 0; d < cnt; d++) tot *= k.dims[d] = t[d];
        k.ndim = (int)cnt;
        if (tot != x->c.numel) {
            cst_free(&k);
            return node_err(c, n, DYN_EINVAL, "reshape of a constant of %lld values to %lld",
                            (long long)x->c.numel, (long long)tot);
        }
        return def_const(c, n, 0, &k);
    }
    if (!lay_plain_ok(x) || x->shape.ndim == 2 || s->c.numel != 2 || s->c.i[0] != s->c.i2[0])
        return op_reshape_view(c, n, x, s, allowzero);
    int64_t f = dyn_shape_numel(&x->shape); /* batch 1: the features per sample */
    const int64_t *t = s->c.i;
    int ok2 = s->c.numel == 2 && !(allowzero && (t[0] == 0 || t[1] == 0)) &&
              (t[1] == -1 || t[1] == f) && (t[0] == 0 || t[0] == 1 || (t[0] == -1 && t[1] == f));
    if (!ok2) return op_reshape_view(c, n, x, s, allowzero);
    if (0) {
        char buf[128] = "";
        size_t at = 0;
        for (int64_t i = 0; i < s->c.numel && at + 24 < sizeof buf; i++)
            at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%lld", i ? ", " : "",
                                   (long long)t[i]);
        return node_err(c, n, DYN_EUNSUP,
                        "reshape to [%s]: only [batch, features] (features = "
                        "%lld) is supported",
                        buf, (long long)f);
    }
    dyn_layer *l = make_layer(c, n, idx, "flatten", json_object());
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    return add_node(c, n, l, &x, 1);
}

/* Rebuilds linear/conv2d layer k with a (zero) bias. */
static int give_bias(ctx *c, const Onnx__NodeProto *n, int k) {
    dyn_layer *old = c->m->nodes[k].layer;
    json_t *a = old->ops->attrs(old);
    if (!a || json_object_set_new(a, "bias", json_integer(1))) {
        json_decref(a);
        return node_err(c, n, DYN_ENOMEM, "out of memory");
    }
    dyn_layer *l = dyn_layer_create(old->ops->name, old->name, a, c->err);
    json_decref(a);
    if (!l)
        return node_err(c, n, c->err ? c->err->code : DYN_EINVAL, "%s", c->err ? c->err->msg : "");
    dyn_param *w = dyn_layer_param(old, "weight");
    param_set(l, "weight", w->value.data, dyn_tensor_numel(&w->value));
    c->m->nodes[k].layer = l;
    dyn_layer_free(old);
    return 0;
}

/* ---- element-wise ops with constants: the per-channel `scale` op ------------------------- */

/* Whether FLOAT constant k is a scalar or per-channel (axis 1) constant for plain activation x:
 * the case cst_per_channel takes (and the `scale` layer). */
static int per_channel_fits(const value *x, const value *k) {
    if (x->is_const || !k->is_const || !k->c.is_float || k->c.bexp >= 0) return 0;
    int r = x->shape.ndim, kr = k->c.ndim, fits = kr <= r && r >= 2;
    for (int j = 0; fits && j < kr; j++) {
        int axis = r - kr + j;
        fits = k->c.dims[j] == 1 || (axis == 1 && k->c.dims[j] == x->shape.d[1]);
    }
    return fits && (k->c.numel == 1 || r <= 2 || r == 4);
}

/* Broadcasts the FLOAT constant k against activation x (ONNX rules: shapes aligned on the
 * right) and returns in *out a new array (caller frees) of x's C = shape[1] values, when k is a
 * scalar or varies only along x's axis 1 ([C], [C, 1, 1], [1, C, 1, 1] as x's rank asks) and
 * does not grow x's shape. Anything else is an error naming both shapes. */
static int cst_per_channel(ctx *c, const Onnx__NodeProto *n, const value *x, const value *k,
                           size_t ki, float **out) {
    char sx[64], sk[96], nb[96];
    int rc;
    *out = NULL;
    if ((rc = need_float(c, n, k, ki, -1))) return rc;
    int r = x->shape.ndim, kr = k->c.ndim, fits = kr <= r && r >= 2;
    for (int j = 0; fits && j < kr; j++) {
        int axis = r - kr + j;
        fits = k->c.dims[j] == 1 || (axis == 1 && k->c.dims[j] == x->shape.d[1]);
    }
    if (!fits)
        return node_err(c, n, DYN_EUNSUP,
                        "constant '%s' of shape %s does not broadcast per channel over the "
                        "activation of shape %s (supported: a scalar, or C values along axis 1 "
                        "such as [C, 1, 1] or [1, C, 1, 1] for [N, C, H, W], [C] for [N, C])",
                        pr(k->name, nb, sizeof nb), cst_shape_txt(&k->c, sk, sizeof sk),
                        shape_txt(&x->shape, sx, sizeof sx));
    int64_t ch = x->shape.d[1];
    float *v = malloc((size_t)ch * sizeof(float));
    if (!v) return node_err(c, n, DYN_ENOMEM, "out of memory");
    for (int64_t i = 0; i < ch; i++) v[i] = k->c.f[k->c.numel == 1 ? 0 : i];
    *out = v;
    return 0;
}

/* Appends a (non-trainable) scale layer y = x * w[c] + b[c] for node n. */
static int emit_scale(ctx *c, const Onnx__NodeProto *n, int idx, value *x, const float *w,
                      const float *b) {
    int64_t ch = x->shape.d[1];
    json_t *a = json_pack("{s:I, s:i}", "channels", (json_int_t)ch, "trainable", 0);
    dyn_layer *l = make_layer(c, n, idx, "scale", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    param_set(l, "weight", w, ch);
    param_set(l, "bias", b, ch);
    return add_node(c, n, l, &x, 1);
}

/* Sub, Mul, Div: two activations of one shape -> sub / mul / div; an activation and a scalar or
 * per-channel constant -> scale. `op` is the engine op name. */
int op_binary(ctx *c, const Onnx__NodeProto *n, int idx, const char *op) {
    static const char *const ok[] = {NULL};
    value *a, *b;
    int rc;
    char sa[64], sb[64];
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &a)) || (rc = node_in(c, n, 1, &b)))
        return rc;
    if (!a || !b || n->n_input != 2) return node_err(c, n, DYN_EFORMAT, "needs two inputs");
    (void)sa;
    (void)sb;
    value *xa = a->is_const ? b : a, *ka = a->is_const ? a : b;
    if (a->is_const == b->is_const || !lay_plain_ok(xa) || !per_channel_fits(xa, ka))
        return op_arith(c, n, (arith)arith_of(n->op_type), a, b);
    int const_first = a->is_const;
    value *x = const_first ? b : a, *k = const_first ? a : b;
    float *v;
    if ((rc = cst_per_channel(c, n, x, k, const_first ? 0 : 1, &v))) return rc;
    int64_t ch = x->shape.d[1];
    float *w = malloc((size_t)ch * 2 * sizeof(float));
    if (!w) {
        free(v);
        return node_err(c, n, DYN_ENOMEM, "out of memory");
    }
    float *bias = w + ch;
    rc = 0;
    for (int64_t i = 0; i < ch && !rc; i++) {
        if (strcmp(op, "mul") == 0) {
            w[i] = v[i];
            bias[i] = 0.0f;
        } else if (strcmp(op, "sub") == 0) {
            w[i] = const_first ? -1.0f : 1.0f; /* k - x or x - k */
            bias[i] = const_first ? v[i] : -v[i];
        } else if (const_first) {
            rc = node_err(c, n, DYN_EUNSUP,
                          "dividing a constant by an activation is not supported (only "
                          "activation / constant)");
        } else if (v[i] == 0.0f) {
            rc = node_err(c, n, DYN_EINVAL, "divides by a constant holding 0 (channel %lld)",
                          (long long)i);
        } else {
            w[i] = 1.0f / v[i];
            bias[i] = 0.0f;
        }
    }
    if (!rc) rc = emit_scale(c, n, idx, x, w, bias);
    free(v);
    free(w);
    return rc;
}

/* Clip: min / max from inputs 1 and 2 (opset >= 11, optional constant scalars) or from the
 * attributes of the same names (opset < 11). Absent bounds are unbounded. */
int op_clip(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok_old[] = {"min", "max", NULL};
    static const char *const ok_new[] = {NULL};
    value *x;
    int rc;
    if ((rc = attrs_check(c, n, c->opset >= 11 ? ok_new : ok_old)) ||
        (rc = node_in(c, n, 0, &x)) || (rc = need_act(c, n, x, 0)))
        return rc;
    static const char *const key[2] = {"min", "max"};
    int has[2] = {0, 0};
    double bound[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        if (c->opset >= 11) {
            value *v;
            if ((rc = node_in(c, n, (size_t)i + 1, &v))) return rc;
            if (!v) continue;
            if (!v->is_const || !v->c.is_float || v->c.numel != 1)
                return node_err(c, n, DYN_EUNSUP, "%s (input %d) must be a constant FLOAT scalar",
                                key[i], i + 1);
            bound[i] = v->c.f[0];
            has[i] = 1;
        } else {
            has[i] = attr_get(n, key[i]) != NULL;
            if (has[i] && (rc = attr_float(c, n, key[i], 0.0, &bound[i]))) return rc;
            if (has[i] && !isfinite(bound[i]))
                return node_err(c, n, DYN_EINVAL, "%s must be finite", key[i]);
        }
    }
    if (c->opset >= 11 && n->n_input > 3)
        return node_err(c, n, DYN_EFORMAT, "has %zu inputs; at most 3", n->n_input);
    if (has[0] && has[1] && bound[0] > bound[1])
        return node_err(c, n, DYN_EUNSUP, "min %g is greater than max %g", bound[0], bound[1]);
    json_t *a = json_object();
    for (int i = 0; i < 2 && a; i++)
        if (has[i]) json_object_set_new(a, key[i], json_real(bound[i]));
    dyn_layer *l = make_layer(c, n, idx, "clip", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    return add_node(c, n, l, &x, 1);
}

/* Appends an engine concat of ins[0..nin-1] (2..4) without defining an ONNX value; *out gets
 * the result as an anonymous activation. */
static int concat_part(ctx *c, const Onnx__NodeProto *n, int idx, value *const *ins, int nin,
                       value *out) {
    int ids[DYN_LAYER_MAX_INPUTS];
    dyn_shape sh[DYN_LAYER_MAX_INPUTS];
    json_t *a = json_pack("{s:i, s:i}", "axis", 1, "inputs", nin);
    dyn_layer *l = make_layer(c, n, idx, "concat", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    for (int i = 0; i < nin; i++) {
        ids[i] = ins[i]->node;
        sh[i] = ins[i]->shape;
    }
    int k = dyn_model_add(c->m, l, ids, nin, c->err);
    if (k < 0) return node_err(c, n, k, "%s", c->err ? c->err->msg : "");
    memset(out, 0, sizeof *out);
    if (l->ops->infer(l, sh, &out->shape, c->err))
        return node_err(c, n, DYN_EINVAL, "%s", c->err ? c->err->msg : "");
    c->nshape[k] = out->shape;
    out->node = k;
    return 0;
}

/* Concat with constants: of INT64 shape vectors (folded), or of one constant expanded along the
 * batch with one activation (ViT's class token) -> cat_param. */
static int op_concat_const(ctx *c, const Onnx__NodeProto *n, value **ins, int64_t axis) {
    char sb[96], sk[96];
    int rc;
    int all = 1;
    for (size_t i = 0; i < n->n_input; i++) all = all && ins[i]->is_const;
    if (all) {
        int r = ins[0]->c.ndim;
        if (r != 1 || (axis != 0 && axis != -1))
            return node_err(c, n, DYN_EUNSUP, "concatenating constants other than 1-D ones");
        int64_t len = 0;
        for (size_t i = 0; i < n->n_input; i++) {
            if (ins[i]->c.ndim != 1 || ins[i]->c.is_float != ins[0]->c.is_float ||
                ins[i]->c.bexp >= 0)
                return node_err(c, n, DYN_EUNSUP, "constant inputs of different kinds");
            len += ins[i]->c.numel;
        }
        if (len > 4096) return node_err(c, n, DYN_EUNSUP, "too large");
        cst k;
        if ((rc = cst_alloc(c, n, &k, ins[0]->c.is_float, 1, &len))) return rc;
        int64_t at = 0;
        for (size_t i = 0; i < n->n_input; i++)
            for (int64_t e = 0; e < ins[i]->c.numel; e++, at++) {
                if (k.is_float) k.f[at] = ins[i]->c.f[e];
                else {
                    k.i[at] = ins[i]->c.i[e];
                    k.i2[at] = ins[i]->c.i2[e];
                }
            }
        return def_const(c, n, 0, &k);
    }
    if (n->n_input != 2 || !ins[0]->is_const == !ins[1]->is_const)
        return node_err(c, n, DYN_EUNSUP, "concatenating constants with activations (only one "
                        "batch-expanded constant with one activation is supported)");
    int at = ins[1]->is_const;
    value *x = ins[at ? 0 : 1], *k = ins[at ? 1 : 0];
    int r = x->lay.nd, bd = lay_bdim(&x->lay);
    if ((rc = norm_axis(c, n, &axis, r))) return rc;
    int64_t dims[MAX_CONST_DIMS];
    lay_shape(&x->lay, dims);
    int ok = k->c.is_float && k->c.bexp == bd && k->c.ndim == r && axis != bd;
    for (int d = 0; ok && d < r; d++) ok = d == axis || k->c.dims[d] == dims[d];
    if (!ok)
        return node_err(c, n, DYN_EUNSUP, "constant %s does not concatenate with %s along axis "
                        "%lld (it must be expanded along the batch and match elsewhere)",
                        cst_shape_txt(&k->c, sk, sizeof sk), lay_txt(&x->lay, sb, sizeof sb),
                        (long long)axis);
    if ((rc = need_canon(c, n, x))) return rc;
    int emap[MAX_CONST_DIMS];
    dyn_shape cs;
    lay_canon_shape(&x->lay, &cs, emap);
    int64_t ps[DYN_MAX_DIMS];
    for (int e = 1; e < cs.ndim; e++) ps[e - 1] = cs.d[e];
    ps[emap[axis] - 1] = k->c.dims[axis];
    json_t *a = json_pack("{s:i, s:o, s:i, s:i}", "axis", emap[axis], "shape",
                          jints(ps, cs.ndim - 1), "at", at, "trainable", 1);
    dyn_layer *l = make_layer(c, n, c->cur, "cat_param", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    param_set(l, "weight", k->c.f, k->c.numel);
    layout L = x->lay;
    lay_redim(&L, (int)axis, dims[axis] + k->c.dims[axis], 0);
    return add_node_lay(c, n, l, &x, 1, &L);
}

/* Concat along axis 1 of activations that match elsewhere. More than 4 inputs (DenseNet) become
 * a chain of engine concats of at most 4 inputs each; one input is the identity. */
int op_concat(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {"axis", NULL};
    int rc;
    char s0[64], sk[64];
    if ((rc = attrs_check(c, n, ok))) return rc;
    if (!attr_get(n, "axis")) return node_err(c, n, DYN_EFORMAT, "attribute 'axis' is required");
    int64_t axis;
    if ((rc = attr_int(c, n, "axis", 1, &axis))) return rc;
    if (n->n_input < 1) return node_err(c, n, DYN_EFORMAT, "needs at least one input");
    if (n->n_input > 4096) return node_err(c, n, DYN_EUNSUP, "has too many inputs");
    value **ins = malloc(n->n_input * sizeof *ins);
    if (!ins) return node_err(c, n, DYN_ENOMEM, "out of memory");
    int nconst = 0;
    for (size_t i = 0; i < n->n_input && !rc; i++)
        if (!(rc = node_in(c, n, i, &ins[i])) && !ins[i])
            rc = node_err(c, n, DYN_EFORMAT, "input %zu is missing", i);
        else if (!rc)
            nconst += ins[i]->is_const;
    if (!rc && nconst) {
        rc = op_concat_const(c, n, ins, axis);
        free(ins);
        return rc;
    }
    for (size_t i = 0; i < n->n_input && !rc; i++) rc = need_act(c, n, ins[i], i);
    int r = rc ? 0 : ins[0]->shape.ndim;
    if (!rc && axis < 0) axis += r;
    if (!rc && axis != 1)
        rc = node_err(c, n, DYN_EUNSUP,
                      "axis %lld of %s: only axis 1 (the channels) is supported", (long long)axis,
                      shape_txt(&ins[0]->shape, s0, sizeof s0));
    for (size_t i = 1; i < n->n_input && !rc; i++) {
        int fit = ins[i]->shape.ndim == r;
        for (int d = 0; fit && d < r; d++) fit = d == 1 || ins[i]->shape.d[d] == ins[0]->shape.d[d];
        if (!fit)
            rc = node_err(c, n, DYN_EINVAL,
                          "input %zu of shape %s does not match input 0 of shape %s outside "
                          "axis 1",
                          i, shape_txt(&ins[i]->shape, sk, sizeof sk),
                          shape_txt(&ins[0]->shape, s0, sizeof s0));
    }
    if (rc) {
        free(ins);
        return rc;
    }
    if (n->n_input == 1) {
        rc = node_alias(c, n, ins[0]);
        free(ins);
        return rc;
    }
    /* Chain: the first part takes up to 4 inputs, each later one the previous part and up to
     * 3 more; the last part defines the node's output. */
    size_t next = 0;
    value acc, *part[DYN_LAYER_MAX_INPUTS];
    int first = 1;
    for (;;) {
        int np = 0;
        if (!first) part[np++] = &acc;
        while (np < DYN_LAYER_MAX_INPUTS && next < n->n_input) part[np++] = ins[next++];
        if (next == n->n_input) {
            json_t *a = json_pack("{s:i, s:i}", "axis", 1, "inputs", np);
            dyn_layer *l = make_layer(c, n, idx, "concat", a);
            rc = l ? add_node(c, n, l, part, np) : (c->err ? c->err->code : DYN_EINVAL);
            break;
        }
        value tmp;
        if ((rc = concat_part(c, n, idx, part, np, &tmp))) break;
        acc = tmp;
        first = 0;
    }
    free(ins);
    return rc;
}

int op_add(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {NULL};
    value *a, *b;
    int rc;
    char sa[64], sb[64];
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &a)) || (rc = node_in(c, n, 1, &b)))
        return rc;
    if (!a || !b) return node_err(c, n, DYN_EFORMAT, "needs two inputs");
    (void)sa;
    (void)sb;
    if (a->is_const == b->is_const) return op_arith(c, n, AR_ADD, a, b);
    /* activation + constant: fold into the producer's bias. */
    value *x = a->is_const ? b : a, *k = a->is_const ? a : b;
    if ((rc = need_float(c, n, k, a->is_const ? 0 : 1, -1))) return rc;
    dyn_layer *l = x->node < 0 ? NULL : c->m->nodes[x->node].layer;
    const char *op = l ? l->ops->name : "";
    int is_lin = strcmp(op, "linear") == 0, is_conv = strcmp(op, "conv2d") == 0;
    if (is_conv && !lay_plain_ok(x)) is_conv = 0;
    if (is_lin && !lay_is_canon(&x->lay)) is_lin = 0;
    if (!is_lin && !is_conv && (!lay_plain_ok(x) || !per_channel_fits(x, k)))
        return op_arith(c, n, AR_ADD, a, b);
    if (!is_lin && !is_conv) {
        /* Not after a linear / conv (or the model input): a scale layer with weight 1. */
        float *v;
        if ((rc = cst_per_channel(c, n, x, k, a->is_const ? 0 : 1, &v))) return rc;
        int64_t ch = x->shape.d[1];
        float *ones = malloc((size_t)ch * sizeof(float));
        if (!ones) rc = node_err(c, n, DYN_ENOMEM, "out of memory");
        for (int64_t i = 0; !rc && i < ch; i++) ones[i] = 1.0f;
        if (!rc) rc = emit_scale(c, n, idx, x, ones, v);
        free(ones);
        free(v);
        return rc;
    }
    if (c->vals[x->root].uses != 1)
        return node_err(c, n, DYN_EUNSUP,
                        "cannot fold the constant into '%s''s bias: its output "
                        "has other readers",
                        l->name);
    int64_t ch = x->shape.d[is_lin ? x->shape.ndim - 1 : 1];
    /* Shape without leading 1s must be [ch] (linear) or [ch, 1, 1] (conv), or a scalar. */
    int lead = 0;
    while (lead < k->c.ndim && k->c.dims[lead] == 1) lead++;
    int rest = k->c.ndim - lead, fits = k->c.numel == 1;
    if (!fits && is_lin) fits = rest == 1 && k->c.dims[lead] == ch;
    if (!fits && is_conv)
        fits = rest == 3 && k->c.dims[lead] == ch && k->c.dims[lead + 1] == 1 &&
               k->c.dims[lead + 2] == 1;
    if (is_lin && !fits) return op_arith(c, n, AR_ADD, a, b); /* e.g. a [T, D] embedding */
    if (!fits || (k->c.ndim > x->shape.ndim))
        return node_err(c, n, DYN_EUNSUP,
                        "constant of %lld values does not broadcast as a "
                        "per-channel bias of %lld channels",
                        (long long)k->c.numel, (long long)ch);
    if (!dyn_layer_param(l, "bias")) {
        if ((rc = give_bias(c, n, x->node))) return rc;
        l = c->m->nodes[x->node].layer;
    }
    float *bias = dyn_layer_param(l, "bias")->value.data;
    for (int64_t i = 0; i < ch; i++) bias[i] += k->c.f[k->c.numel == 1 ? 0 : i];
    return node_alias(c, n, x);
}

int op_dropout_identity(ctx *c, const Onnx__NodeProto *n) {
    static const char *const okd[] = {"ratio", "seed", "is_test", NULL};
    static const char *const oki[] = {NULL};
    int is_drop = strcmp(n->op_type, "Dropout") == 0;
    value *x, *tm = NULL;
    int rc;
    if ((rc = attrs_check(c, n, is_drop ? okd : oki)) || (rc = node_in(c, n, 0, &x))) return rc;
    if (!x) return node_err(c, n, DYN_EFORMAT, "input 0 is missing");
    if (is_drop && (rc = node_in(c, n, 2, &tm))) return rc;
    if (tm &&
        (!tm->is_const || tm->c.numel != 1 || (tm->c.is_float ? tm->c.f[0] != 0 : tm->c.i[0] != 0)))
        return node_err(c, n, DYN_EUNSUP, "training_mode must be a constant false");
    if (!is_drop && n->n_input != 1) return node_err(c, n, DYN_EFORMAT, "needs one input");
    return node_alias(c, n, x);
}

int op_softmax(ctx *c, const Onnx__NodeProto *n) {
    static const char *const ok[] = {"axis", NULL};
    value *x;
    int rc;
    char sb[64];
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = need_any_act(c, n, x, 0)))
        return rc;
    int64_t axis;
    if ((rc = attr_int(c, n, "axis", c->opset >= 13 ? -1 : 1, &axis)) ||
        (rc = norm_axis(c, n, &axis, x->lay.nd)))
        return rc;
    int last = c->g->n_output == 1 && n->n_output >= 1 && c->g->output[0]->name &&
               strcmp(c->g->output[0]->name, n->output[0]) == 0 && uses_of(c, n->output[0]) == 1;
    if (!last || !lay_plain_ok(x) || x->shape.ndim != 2) return op_softmax_tr(c, n, x, axis);
    if (x->shape.ndim != 2 || axis != 1)
        return node_err(c, n, DYN_EUNSUP,
                        "Softmax over axis %lld of %s: only over the features "
                        "of [N, classes]",
                        (long long)axis, shape_txt(&x->shape, sb, sizeof sb));
    c->softmax_dropped = 1;
    return node_alias(c, n, x);
}
