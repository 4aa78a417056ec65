/* layernorm.c — layer normalization over the last axis (ONNX LayerNormalization, opset 17,
 * and the ReduceMean/Sub/Pow/Sqrt/Div form older exports emit, which the importer fuses).
 *
 * Attributes: "dim" (D, the last axis), "eps" (> 0, default 1e-5). Parameters "weight" [D]
 * (init 1) and "bias" [D] (init 0), trainable. Any rank >= 2; rows of the last axis:
 *   y = (x - mean) / sqrt(var + eps) * weight + bias      (biased variance, as PyTorch)
 * Backward recomputes the row statistics from x (no scratch):
 *   dx = rstd * (g - mean(g) - xhat * mean(g * xhat)),  g = dy * weight.
 */
#include <math.h>
#include <string.h>

#include "../layer.h"
#include "layernorm_impl.h"
#include "../cpu/par.h"

static void ln_identity(dyn_layer *l) {
    for (int64_t i = 0; i < dyn_tensor_numel(&l->params[0].value); i++) {
        l->params[0].value.data[i] = 1.0f;
        l->params[1].value.data[i] = 0.0f;
    }
}

static int ln_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    int64_t d;
    double eps;
    int rc;
    if ((rc = dyn_attr_int(l, attrs, "dim", -1, 1, (int64_t)1 << 30, &d, err)) ||
        (rc = dyn_attr_num(l, attrs, "eps", 1e-5, &eps, err)))
        return rc;
    if (!(eps > 0 && eps < 1))
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': eps = %g must be in (0, 1)", l->name,
                           eps);
    ln_impl *p = malloc(sizeof *p);
    if (!p) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    p->dim = d;
    p->eps = eps;
    l->impl = p;
    if (!dyn_layer_param_add(l, "weight", 1, &d, 1, err) ||
        !dyn_layer_param_add(l, "bias", 1, &d, 1, err))
        return err ? err->code : DYN_EINVAL;
    ln_identity(l);
    return 0;
}

static void ln_destroy(dyn_layer *l) {
    free(l->impl);
    l->impl = NULL;
}

static json_t *ln_attrs(const dyn_layer *l) {
    const ln_impl *p = l->impl;
    return json_pack("{s:I, s:f}", "dim", (json_int_t)p->dim, "eps", p->eps);
}

static void ln_init(dyn_layer *l, dyn_rng *rng) {
    (void)rng;
    ln_identity(l);
}

static int ln_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    const ln_impl *p = l->impl;
    char b[64];
    if (in[0].ndim < 2 || in[0].d[in[0].ndim - 1] != p->dim)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': layernorm over %lld features got %s",
                           l->name, (long long)p->dim, dyn_shape_str(&in[0], b, sizeof b));
    *out = in[0];
    return 0;
}

/* Mean and 1/sqrt(var + eps) of one row, in double. */
static void ln_stats_row(const float *x, int64_t n, double eps, double *mean, double *rstd) {
    double s = 0, q = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    double m = s / (double)n;
    for (int64_t i = 0; i < n; i++) q += (x[i] - m) * (x[i] - m);
    *mean = m;
    *rstd = 1.0 / sqrt(q / (double)n + eps);
}

static void ln_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                       int training) {
    (void)scratch;
    (void)training;
    const ln_impl *p = l->impl;
    const int64_t n = p->dim, rows = dyn_tensor_numel(&x[0]) / n;
    const float *w = l->params[0].value.data, *b = l->params[1].value.data;
    DYN_PAR_FOR(rows * n > 65536,
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x[0].data + r * n;
        float *yr = y->data + r * n;
        double m, rs;
        ln_stats_row(xr, n, p->eps, &m, &rs);
        for (int64_t i = 0; i < n; i++) yr[i] = (float)((xr[i] - m) * rs) * w[i] + b[i];
    });
}

static void ln_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                        const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)y;
    (void)scratch;
    const ln_impl *p = l->impl;
    const int64_t n = p->dim, rows = dyn_tensor_numel(&x[0]) / n;
    const float *w = l->params[0].value.data;
    float *dw = l->params[0].grad.data, *db = l->params[1].grad.data;
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x[0].data + r * n, *g = dy->data + r * n;
        double m, rs, sg = 0, sgx = 0;
        ln_stats_row(xr, n, p->eps, &m, &rs);
        for (int64_t i = 0; i < n; i++) {
            double xh = (xr[i] - m) * rs, gi = (double)g[i] * w[i];
            sg += gi;
            sgx += gi * xh;
            dw[i] += (float)(g[i] * xh);
            db[i] += g[i];
        }
        if (!dx[0].data) continue;
        float *d = dx[0].data + r * n;
        sg /= (double)n;
        sgx /= (double)n;
        for (int64_t i = 0; i < n; i++) {
            double xh = (xr[i] - m) * rs;
            d[i] = (float)(rs * ((double)g[i] * w[i] - sg - xh * sgx));
        }
    }
}

static void ln_stats(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    (void)l;
    st->macs = 2 * dyn_shape_numel(in);
}

const dyn_layer_ops dyn_op_layernorm = {
    .op = DYN_OP_LAYERNORM,
    .name = "layernorm",
    .ninputs = 1,
    .create = ln_create,
    .destroy = ln_destroy,
    .attrs = ln_attrs,
    .init = ln_init,
    .infer = ln_infer,
    .forward = ln_forward,
    .backward = ln_backward,
    .stats = ln_stats,
};
