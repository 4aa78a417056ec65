/* linear.c — fully connected layer: y[N, out] = x[N, in] W^T + b (PyTorch's nn.Linear).
 *
 * Attributes: {"in": int, "out": int, "bias": 0/1 (default 1)}.
 * Parameters: "weight" [out, in] (row-major), "bias" [out] (only when bias = 1).
 * Input [N, in], output [N, out]; an input with extra leading dims ([N, T, in], [N, H, T, in])
 * is applied to every row of the last axis (N·T rows) and keeps them ([N, T, out]): a
 * transformer's projections. Forward and backward are single OpenBLAS sgemm calls; the layer
 * needs no scratch and keeps no state between forward and backward. Inference may run oneDNN's
 * inner product instead (weights reordered once into its layout, cached per row count and
 * thread count in the layer, dropped by prepare()): DYN_CONV_IMPL (cpu/dnnl_conv.h) decides,
 * by default the faster of the two timed side by side on the first forward of each row count.
 */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "../cpu/dnnl_conv.h"
#include "../cpu/par.h"
#include "../layer.h"
#include "linear_impl.h"

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
    if (!(im->dnnl = dyn__dnnl_cache_new_linear(im->out, im->has_bias)))
        return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);

    int64_t wshape[2] = {out, in};
    if (!dyn_layer_param_add(l, "weight", 2, wshape, 1, err)) return err ? err->code : DYN_EINVAL;
    if (bias && !dyn_layer_param_add(l, "bias", 1, &out, 1, err))
        return err ? err->code : DYN_EINVAL;
    return 0;
}

static void linear_destroy(dyn_layer *l) {
    linear_impl *im = l->impl;
    if (im) dyn__dnnl_cache_free(im->dnnl);
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

/* y [nb][out] = x [nb][in] Wᵀ + b with OpenBLAS. */
static void linear_gemm(const dyn_layer *l, const float *x, float *y, int nb) {
    const linear_impl *im = l->impl;
    const int ni = im->in, no = im->out;
    const float *w = l->params[0].value.data;
    float beta = 0.0f;
    if (im->has_bias) {
        const float *b = l->params[1].value.data;
        DYN_PAR_FOR((int64_t)nb * no > 65536,
        for (int n = 0; n < nb; n++)
            memcpy(y + (int64_t)n * no, b, (size_t)no * sizeof(float)););
        beta = 1.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nb, no, ni, 1.0f, x, ni, w, ni, beta, y,
                no);
}

/* Inference through oneDNN's inner product when the setting (or AUTO's measured choice for nb
 * rows) says so: returns 1 with y written, or 0 for the caller to run linear_gemm. */
static int linear_dnnl_forward(dyn_layer *l, const float *x, float *y, int nb) {
    const linear_impl *im = l->impl;
    dyn_conv_impl m = dyn_conv_impl_get();
    if (m == DYN_CONV_GRAPH) m = DYN_CONV_AUTO; /* a node the graph does not run */
    if (m == DYN_CONV_IM2COL) return 0;
    const dyn_conv_geom g = {.N = nb, .C = im->in, .H = 1, .W = 1, .KH = 1, .KW = 1, .SH = 1,
                             .SW = 1, .DH = 1, .DW = 1, .OH = 1, .OW = 1};
    const float *w = l->params[0].value.data;
    const float *b = im->has_bias ? l->params[1].value.data : NULL;
    const int nt = dyn_threads_get();
    dyn_dnnl_conv *e = NULL;
    if (m == DYN_CONV_AUTO && (m = dyn__dnnl_choice_get(im->dnnl, &g, nt)) == DYN_CONV_AUTO) {
        double best[2] = {1e300, 1e300};
        if ((e = dyn__dnnl_acquire(im->dnnl, &g, DYN_CONV_DNNL, w, NULL)))
            for (int r = 0; r < 3; r++) /* side by side; each keeps its minimum */
                for (int k = 0; k < 2; k++) {
                    double t0 = dyn_now();
                    if (k) dyn__dnnl_forward(e, x, b, y, NULL);
                    else linear_gemm(l, x, y, nb);
                    best[k] = DYN_MIN(best[k], dyn_now() - t0);
                }
        m = best[1] < best[0] ? DYN_CONV_DNNL : DYN_CONV_IM2COL;
        if (e) dyn__dnnl_release(im->dnnl, e, m == DYN_CONV_DNNL);
        dyn__dnnl_choice_set(im->dnnl, &g, nt, m);
        if (e) return 1; /* y holds the last run's output (the two agree) */
    }
    if (m == DYN_CONV_IM2COL) return 0;
    if (!(e = dyn__dnnl_acquire(im->dnnl, &g, DYN_CONV_DNNL, w, NULL))) return 0;
    dyn__dnnl_forward(e, x, b, y, NULL);
    dyn__dnnl_release(im->dnnl, e, 1);
    return 1;
}

static void linear_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                           int training) {
    (void)scratch;
    const linear_impl *im = l->impl;
    DYN_ASSERT(x[0].shape[x[0].ndim - 1] == im->in && dyn_tensor_is_contiguous(&x[0]));
    const int64_t rows = dyn_tensor_numel(&x[0]) / im->in;
    DYN_ASSERT(y->shape[y->ndim - 1] == im->out && dyn_tensor_numel(y) == rows * im->out);
    DYN_ASSERT(rows <= INT_MAX);
    if (!training && linear_dnnl_forward(l, x[0].data, y->data, (int)rows)) return;
    linear_gemm(l, x[0].data, y->data, (int)rows);
}

/* The weights may have changed: oneDNN's reordered copies are dropped. */
static int linear_prepare(dyn_layer *l, dyn_err *err) {
    (void)err;
    dyn__dnnl_cache_clear(((linear_impl *)l->impl)->dnnl);
    return 0;
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
    .prepare = linear_prepare,
    .attrs = linear_attrs,
    .init = linear_init,
    .infer = linear_infer,
    .forward = linear_forward,
    .backward = linear_backward,
    .stats = linear_stats,
};
