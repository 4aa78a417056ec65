/* softmax.c — softmax over the last axis (ONNX Softmax inside a graph: attention weights).
 *
 * No attributes, no parameters; any rank >= 2, output shape = input shape. Rows of the last
 * axis are normalized independently: y = exp(x - max) / sum(exp(x - max)), sums in double.
 * Backward: dx = y * (dy - sum(dy * y)) per row.
 */
#include <math.h>

#include "../layer.h"
#include "../cpu/par.h"

static int sm_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    char b[64];
    if (in[0].ndim < 2)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': softmax input %s has no feature axis",
                           l->name, dyn_shape_str(&in[0], b, sizeof b));
    *out = in[0];
    return 0;
}

static void sm_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                       int training) {
    (void)l;
    (void)scratch;
    (void)training;
    const int64_t n = x[0].shape[x[0].ndim - 1], rows = dyn_tensor_numel(&x[0]) / n;
    DYN_PAR_FOR(rows * n > 65536,
    for (int64_t r = 0; r < rows; r++) {
        const float *xr = x[0].data + r * n;
        float *yr = y->data + r * n;
        float mx = xr[0];
        for (int64_t i = 1; i < n; i++) mx = xr[i] > mx ? xr[i] : mx;
        double s = 0;
        for (int64_t i = 0; i < n; i++) {
            yr[i] = expf(xr[i] - mx);
            s += yr[i];
        }
        const float inv = (float)(1.0 / s);
        for (int64_t i = 0; i < n; i++) yr[i] *= inv;
    });
}

static void sm_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                        const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)l;
    (void)x;
    (void)scratch;
    if (!dx[0].data) return;
    const int64_t n = y->shape[y->ndim - 1], rows = dyn_tensor_numel(y) / n;
    DYN_PAR_FOR(rows * n > 65536,
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = y->data + r * n, *g = dy->data + r * n;
        float *d = dx[0].data + r * n;
        double s = 0;
        for (int64_t i = 0; i < n; i++) s += (double)g[i] * yr[i];
        for (int64_t i = 0; i < n; i++) d[i] = yr[i] * (g[i] - (float)s);
    });
}

const dyn_layer_ops dyn_op_softmax = {
    .op = DYN_OP_SOFTMAX,
    .name = "softmax",
    .ninputs = 1,
    .create = dyn_op_create_no_attrs,
    .attrs = dyn_op_attrs_none,
    .infer = sm_infer,
    .forward = sm_forward,
    .backward = sm_backward,
};
