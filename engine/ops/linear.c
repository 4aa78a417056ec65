/* linear.c — fully connected layer: y[N, out] = x[N, in] W^T + b (PyTorch's nn.Linear).
 *
 * Attributes: {"in": int, "out": int, "bias": 0/1 (default 1)}.
 * Parameters: "weight" [out, in] (row-major), "bias" [out] (only when bias = 1).
 * Input [N, in], output [N, out]; an input with extra leading dims ([N, T, in], [N, H, T, in])
 * is applied to every row of the last axis (N·T rows) and keeps them ([N, T, out]): a
 * transformer's projections. Forward and backward are single OpenBLAS sgemm calls; the layer
 * needs no scratch and keeps no state between forward and backward.
 */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "../layer.h"
#include "../cpu/par.h"

typedef struct linear_impl {
    int in, out;
    int has_bias;
} linear_impl;

/* Largest feature count: keeps every sgemm dimension inside a BLAS int. */
#define LINEAR_MAX_FEATURES ((int64_t)1 << 30)

static int linear_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    int64_t in, out, bias;
    int rc;
    if (!json_object_get(attrs, "in") || !json_object_get(attrs, "out"))
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': linear needs integer attributes 'in' and 'out'", l->name);
    if ((rc = dyn_attr_int(l, attrs, "in", 0, 1, LINEAR_MAX_FEATURES, &in, err))) return rc;
    if ((rc = dyn_attr_int(l, attrs, "out", 0, 1, LINEAR_MAX_FEATURES, &out, err))) return rc;
    if ((rc = dyn_attr_int(l, attrs, "bias", 1, 0, 1, &bias, err))) return rc;

    linear_impl *im = calloc(1, sizeof *im);
    if (!im) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    im->in = (int)in;
    im->out = (int)out;
    im->has_bias = (int)bias;
    l->impl = im;

    int64_t wshape[2] = {out, in};
    if (!dyn_layer_param_add(l, "weight", 2, wshape, 1, err)) return err ? err->code : DYN_EINVAL;
    if (bias && !dyn_layer_param_add(l, "bias", 1, &out, 1, err))
        return err ? err->code : DYN_EINVAL;
    return 0;
}

static void linear_destroy(dyn_layer *l) {
    free(l->impl);
    l->impl = NULL;
}

static json_t *linear_attrs(const dyn_layer *l) {
    const linear_impl *im = l->impl;
    return json_pack("{s:I, s:I, s:I}", "in", (json_int_t)im->in, "out", (json_int_t)im->out,
                     "bias", (json_int_t)im->has_bias);
}

/* PyTorch's default: kaiming_uniform_(a = sqrt(5)) gives bound = 1/sqrt(fan_in) for the weight,
 * and the bias is U(-1/sqrt(fan_in), 1/sqrt(fan_in)). */
static void linear_init(dyn_layer *l, dyn_rng *rng) {
    const linear_impl *im = l->impl;
    float bound = 1.0f / sqrtf((float)im->in);
    for (int p = 0; p < l->nparams; p++) {
        dyn_tensor *t = &l->params[p].value;
        int64_t n = dyn_tensor_numel(t);
        for (int64_t i = 0; i < n; i++) t->data[i] = bound * (2.0f * dyn_rng_uniform(rng) - 1.0f);
    }
}

static int linear_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    const linear_impl *im = l->impl;
    char buf[64];
    if (in[0].ndim < 2 || in[0].d[in[0].ndim - 1] != im->in)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': linear expects input [N, %d] (or [N, ..., %d]) but got %s "
                           "(add a flatten layer before it if the input is an image)",
                           l->name, im->in, im->in, dyn_shape_str(&in[0], buf, sizeof buf));
    int64_t rows = dyn_shape_numel(&in[0]) / im->in;
    if (in[0].d[0] < 1 || rows > INT_MAX)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': %lld rows are outside 1..%d", l->name,
                           (long long)rows, INT_MAX);
    *out = in[0];
    out->d[out->ndim - 1] = im->out;
    return 0;
}

static void linear_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                           int training) {
    (void)scratch;
    (void)training;
    const linear_impl *im = l->impl;
    DYN_ASSERT(x[0].shape[x[0].ndim - 1] == im->in && dyn_tensor_is_contiguous(&x[0]));
    const int64_t rows = dyn_tensor_numel(&x[0]) / im->in;
    DYN_ASSERT(y->shape[y->ndim - 1] == im->out && dyn_tensor_numel(y) == rows * im->out);
    DYN_ASSERT(rows <= INT_MAX);
    const int nb = (int)rows, ni = im->in, no = im->out;
    const float *w = l->params[0].value.data;
    float beta = 0.0f;
    if (im->has_bias) {
        const float *b = l->params[1].value.data;
        DYN_PAR_FOR((int64_t)nb * no > 65536,
        for (int n = 0; n < nb; n++)
            memcpy(y->data + (int64_t)n * no, b, (size_t)no * sizeof(float)););
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, no, ni, 1.0f, x[0].data, ni, w, ni,
                beta, y->data, no);
}

static void linear_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                            const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)y;
    (void)scratch;
    const linear_impl *im = l->impl;
    const int64_t rows = dyn_tensor_numel(&x[0]) / im->in;
    DYN_ASSERT(dyn_tensor_numel(dy) == rows * im->out);
    const int nb = (int)rows, ni = im->in, no = im->out;
    const float *w = l->params[0].value.data;
    /* dW[out, in] += dy^T[out, N] x[N, in] */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, no, ni, nb, 1.0f, dy->data, no,
                x[0].data, ni, 1.0f, l->params[0].grad.data, ni);
    if (im->has_bias) {
        float *db = l->params[1].grad.data;
        const float *g = dy->data;
        DYN_PAR_FOR((int64_t)nb * no > 65536,
        for (int o = 0; o < no; o++) {
            double s = 0.0;
            for (int n = 0; n < nb; n++) s += g[(int64_t)n * no + o];
            db[o] += (float)s;
        });
    }
    /* dx[N, in] = dy[N, out] W[out, in] */
    if (dx[0].data) {
        DYN_ASSERT(dyn_tensor_numel(&dx[0]) == (int64_t)nb * ni);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nb, ni, no, 1.0f, dy->data, no, w,
                    ni, 0.0f, dx[0].data, ni);
    }
}

static void linear_stats(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    const linear_impl *im = l->impl;
    const int64_t rows = dyn_shape_numel(in) / DYN_MAX(in->d[0], 1) / im->in; /* per sample */
    st->macs = rows * im->in * im->out;
}

const dyn_layer_ops dyn_op_linear = {
    .op = DYN_OP_LINEAR,
    .name = "linear",
    .ninputs = 1,
    .create = linear_create,
    .destroy = linear_destroy,
    .attrs = linear_attrs,
    .init = linear_init,
    .infer = linear_infer,
    .forward = linear_forward,
    .backward = linear_backward,
    .stats = linear_stats,
};
