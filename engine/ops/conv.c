/* conv.c — 2-D convolution (PyTorch's nn.Conv2d): im2col + OpenBLAS sgemm, grouped.
 *
 * Attributes: {"in_channels", "out_channels", "kernel" (or "kernel_h" and "kernel_w"),
 *   "stride" (1), "padding" (0), "dilation" (1) — each int or its _h/_w pair —, "groups" (1),
 *   "bias" (0/1, default 1)}.
 * Parameters: "weight" [Cout, Cin/groups, KH, KW], "bias" [Cout] (when bias = 1).
 * Input [N, Cin, H, W] -> output [N, Cout, OH, OW]; OH = (H + 2*PH - DH*(KH-1) - 1) / SH + 1.
 *
 * The whole batch goes through one im2col: cols [Cin*KH*KW][N*OH*OW]. Group g's rows are the
 * contiguous block of its Cin/groups channels, so its output rows [Cout/groups][N*P] are one
 * sgemm with its weight block. The output in [Cout][N*P] order is then permuted to NCHW.
 *
 * Inference runs one of three implementations per layer and input shape (cpu/dnnl_conv.h):
 * im2col + sgemm (below), or oneDNN with blocked or NCHW activations. DYN_CONV_IMPL
 * (dyn_conv_impl_set) forces one; by default (auto) the first inference forward of each (batch,
 * H, W, thread count) times the three side by side, 3 calls each alternating, keeps the fastest
 * (the minimum of each) for that shape and frees the other oneDNN primitive. The oneDNN
 * primitives and reordered weights live in the layer's cache (internally locked, so concurrent
 * inference workers stay safe); prepare() empties it after the weights change. Training
 * forward keeps im2col: backward needs its columns.
 *
 * Scratch: cols (Cin*KH*KW*N*P floats) followed by the [Cout][N*P] output buffer (Cout*N*P
 * floats); in inference then, 64-byte aligned, oneDNN's blocked input and output
 * (dyn__dnnl_act_floats). Backward relies on the forward's cols still
 * being in scratch (dW needs them), reuses the output buffer for dy in [Cout][N*P] order, and
 * then overwrites cols with dcols before col2im.
 */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <string.h>

#include "../cpu/dnnl_conv.h"
#include "../cpu/im2col.h"
#include "../cpu/par.h"
#include "../layer.h"
#include "conv_impl.h"

#define CONV_MAX_CHANNELS ((int64_t)1 << 20)
#define CONV_MAX_KERNEL ((int64_t)1 << 12)
#define CONV_MAX_STRIDE ((int64_t)1 << 12)

static int conv_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    conv_impl c = {0};
    int64_t cin, cout, groups, bias;
    int rc;
    if (!json_object_get(attrs, "in_channels") || !json_object_get(attrs, "out_channels"))
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': conv2d needs integer attributes 'in_channels' and "
                           "'out_channels'",
                           l->name);
    if ((rc = dyn_attr_int(l, attrs, "in_channels", 0, 1, CONV_MAX_CHANNELS, &cin, err)) ||
        (rc = dyn_attr_int(l, attrs, "out_channels", 0, 1, CONV_MAX_CHANNELS, &cout, err)) ||
        (rc = dyn_attr_int(l, attrs, "groups", 1, 1, CONV_MAX_CHANNELS, &groups, err)) ||
        (rc = dyn_attr_int(l, attrs, "bias", 1, 0, 1, &bias, err)))
        return rc;
    if ((rc = dyn_attr_int_hw(l, attrs, "kernel", -1, -1, 1, CONV_MAX_KERNEL, &c.kh, &c.kw, err)) ||
        (rc = dyn_attr_int_hw(l, attrs, "stride", 1, 1, 1, CONV_MAX_STRIDE, &c.sh, &c.sw, err)) ||
        (rc = dyn_attr_int_hw(l, attrs, "padding", 0, 0, 0, CONV_MAX_KERNEL, &c.ph, &c.pw, err)) ||
        (rc = dyn_attr_int_hw(l, attrs, "dilation", 1, 1, 1, CONV_MAX_KERNEL, &c.dh, &c.dw, err)))
        return rc;
    if (cin % groups != 0)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': in_channels = %lld is not divisible by groups = %lld",
                           l->name, (long long)cin, (long long)groups);
    if (cout % groups != 0)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': out_channels = %lld is not divisible by groups = %lld",
                           l->name, (long long)cout, (long long)groups);
    /* im2col rows (Cin*KH*KW) and sgemm dimensions are ints. */
    if (cin * c.kh * c.kw > INT_MAX)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': in_channels * kernel_h * kernel_w = %lld is too large",
                           l->name, (long long)(cin * c.kh * c.kw));
    c.cin = (int)cin;
    c.cout = (int)cout;
    c.groups = (int)groups;
    c.has_bias = (int)bias;

    c.dnnl = dyn__dnnl_cache_new(c.groups, c.cout, c.has_bias);
    conv_impl *im = c.dnnl ? malloc(sizeof *im) : NULL;
    if (!im) {
        dyn__dnnl_cache_free(c.dnnl);
        return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    }
    *im = c;
    l->impl = im;
    int64_t wshape[4] = {cout, cin / groups, c.kh, c.kw};
    if (!dyn_layer_param_add(l, "weight", 4, wshape, 1, err)) return err ? err->code : DYN_ENOMEM;
    if (bias && !dyn_layer_param_add(l, "bias", 1, &cout, 1, err))
        return err ? err->code : DYN_ENOMEM;
    return 0;
}

static void conv_destroy(dyn_layer *l) {
    conv_impl *c = l->impl;
    if (c) dyn__dnnl_cache_free(c->dnnl);
    free(l->impl);
    l->impl = NULL;
}

static json_t *conv_attrs(const dyn_layer *l) {
    const conv_impl *c = l->impl;
    json_t *o = json_object();
    if (!o) return NULL;
    json_object_set_new(o, "in_channels", json_integer(c->cin));
    json_object_set_new(o, "out_channels", json_integer(c->cout));
    dyn_attrs_put_hw(o, "kernel", c->kh, c->kw);
    dyn_attrs_put_hw(o, "stride", c->sh, c->sw);
    dyn_attrs_put_hw(o, "padding", c->ph, c->pw);
    dyn_attrs_put_hw(o, "dilation", c->dh, c->dw);
    json_object_set_new(o, "groups", json_integer(c->groups));
    json_object_set_new(o, "bias", json_integer(c->has_bias));
    return o;
}

/* PyTorch's default: weight kaiming_uniform_(a = sqrt(5)) = U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
 * bias U(-1/sqrt(fan_in), 1/sqrt(fan_in)); fan_in = Cin/groups * KH * KW. */
static void conv_init(dyn_layer *l, dyn_rng *rng) {
    const conv_impl *c = l->impl;
    float bound = 1.0f / sqrtf((float)(c->cin / c->groups) * (float)c->kh * (float)c->kw);
    for (int p = 0; p < l->nparams; p++) {
        dyn_tensor *t = &l->params[p].value;
        int64_t n = dyn_tensor_numel(t);
        for (int64_t i = 0; i < n; i++) t->data[i] = bound * (2.0f * dyn_rng_uniform(rng) - 1.0f);
    }
}

/* Geometry for input shape s (already validated by conv_check). */
static dyn_conv_geom conv_geom(const conv_impl *c, const dyn_shape *s) {
    dyn_conv_geom g = {
        .N = (int)s->d[0], .C = (int)s->d[1], .H = (int)s->d[2], .W = (int)s->d[3],
        .KH = c->kh, .KW = c->kw, .SH = c->sh, .SW = c->sw,
        .PH = c->ph, .PW = c->pw, .DH = c->dh, .DW = c->dw,
    };
    return g;
}

/* Validates input shape s and fills the geometry; 0 or DYN_EINVAL with a message. */
static int conv_check(const dyn_layer *l, const dyn_shape *s, dyn_conv_geom *g, dyn_err *err) {
    const conv_impl *c = l->impl;
    char buf[64];
    if (s->ndim != 4)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': conv2d expects input [N, %d, H, W] but "
                           "got %s", l->name, c->cin, dyn_shape_str(s, buf, sizeof buf));
    if (s->d[1] != c->cin)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': conv2d expects %d input channels but the input %s has "
                           "%lld",
                           l->name, c->cin, dyn_shape_str(s, buf, sizeof buf),
                           (long long)s->d[1]);
    if (s->d[0] < 1 || s->d[0] > INT_MAX || s->d[2] < 1 || s->d[2] > INT_MAX || s->d[3] < 1 ||
        s->d[3] > INT_MAX)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': conv2d input %s has an empty or "
                           "oversized dimension", l->name, dyn_shape_str(s, buf, sizeof buf));
    *g = conv_geom(c, s);
    if (dyn_conv_geom_out(g))
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': input %s is too small for kernel %dx%d with padding "
                           "%dx%d and dilation %dx%d (the output would be empty)",
                           l->name, dyn_shape_str(s, buf, sizeof buf), c->kh, c->kw, c->ph, c->pw,
                           c->dh, c->dw);
    int64_t np = (int64_t)g->N * g->OH * g->OW;
    int64_t rows = (int64_t)c->cin * c->kh * c->kw;
    if (np > INT_MAX || rows * np > DYN_TENSOR_MAX_NUMEL ||
        (int64_t)c->cout * np > DYN_TENSOR_MAX_NUMEL)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': input %s needs too large an im2col buffer (%lld x %lld); "
                           "use a smaller batch",
                           l->name, dyn_shape_str(s, buf, sizeof buf), (long long)rows,
                           (long long)np);
    return 0;
}

static int conv_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    const conv_impl *c = l->impl;
    dyn_conv_geom g;
    int rc = conv_check(l, &in[0], &g, err);
    if (rc) return rc;
    memset(out, 0, sizeof *out);
    out->ndim = 4;
    out->d[0] = g.N;
    out->d[1] = c->cout;
    out->d[2] = g.OH;
    out->d[3] = g.OW;
    return 0;
}

/* Floats of the im2col scratch (cols, then the [Cout][N*P] output) of geometry g. */
static int64_t conv_gemm_floats(const conv_impl *c, const dyn_conv_geom *g) {
    return ((int64_t)c->cin * c->kh * c->kw + c->cout) * g->N * g->OH * g->OW;
}

/* Inference adds, 64-byte aligned after the im2col part, oneDNN's blocked activations. */
static size_t conv_scratch(const dyn_layer *l, const dyn_shape *in, int training) {
    const conv_impl *c = l->impl;
    dyn_conv_geom g;
    if (conv_check(l, &in[0], &g, NULL)) return 0;
    if (training) return (size_t)conv_gemm_floats(c, &g);
    return dyn__conv_infer_floats(&g, c->cout);
}

/* Geometry of a forward/backward call; asserts the shapes agree with infer(). */
static dyn_conv_geom conv_geom_run(const dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y) {
    const conv_impl *c = l->impl;
    dyn_shape s = dyn_tensor_shape(x);
    DYN_ASSERT(x->ndim == 4 && x->shape[1] == c->cin && dyn_tensor_is_contiguous(x));
    dyn_conv_geom g = conv_geom(c, &s);
    DYN_ASSERT(dyn_conv_geom_out(&g) == 0);
    DYN_ASSERT(y->ndim == 4 && y->shape[0] == g.N && y->shape[1] == c->cout &&
               y->shape[2] == g.OH && y->shape[3] == g.OW);
    return g;
}

size_t dyn__conv_infer_floats(const dyn_conv_geom *g, int cout) {
    const int64_t gemm = ((int64_t)g->C * g->KH * g->KW + cout) * g->N * g->OH * g->OW;
    return (size_t)((gemm + 15) / 16 * 16) + dyn__dnnl_act_floats(g, cout);
}

void dyn__conv_infer(dyn_dnnl_cache *c, const dyn_conv_geom *g, int groups, int cout,
                     const float *x, const float *w, const float *b, float *y, float *scratch) {
    const int64_t ncols = (int64_t)g->C * g->KH * g->KW * g->N * g->OH * g->OW;
    const int64_t gemm = ncols + (int64_t)cout * g->N * g->OH * g->OW;
    float *cols = scratch, *tmp = scratch + ncols, *act = scratch + (gemm + 15) / 16 * 16;
    dyn_conv_impl m = dyn_conv_impl_get();
    if (m == DYN_CONV_GRAPH) m = DYN_CONV_AUTO; /* a node the graph does not run */
    const int nt = dyn_threads_get();
    if (m == DYN_CONV_AUTO && (m = dyn__dnnl_choice_get(c, g, nt)) == DYN_CONV_AUTO) {
        dyn_dnnl_conv *e[3] = {NULL, dyn__dnnl_acquire(c, g, DYN_CONV_DNNL, w, NULL),
                               dyn__dnnl_acquire(c, g, DYN_CONV_DNNL_NCHW, w, NULL)};
        const dyn_conv_impl which[3] = {DYN_CONV_IM2COL, DYN_CONV_DNNL, DYN_CONV_DNNL_NCHW};
        double best[3] = {1e300, 1e300, 1e300};
        for (int r = 0; r < 3; r++)
            for (int k = 0; k < 3; k++) {
                if (k && !e[k]) continue;
                double t0 = dyn_now();
                if (k) dyn__dnnl_forward(e[k], x, b, y, act);
                else dyn__conv_gemm_forward(g, groups, cout, x, w, b, cols, tmp, y);
                best[k] = DYN_MIN(best[k], dyn_now() - t0);
            }
        int k = best[1] < best[0] ? 1 : 0;
        if (best[2] < best[k]) k = 2;
        for (int j = 1; j < 3; j++)
            if (e[j]) dyn__dnnl_release(c, e[j], j == k);
        dyn__dnnl_choice_set(c, g, nt, which[k]);
        return; /* y holds the last run's output (every implementation wrote the same) */
    }
    dyn_dnnl_conv *e = m == DYN_CONV_IM2COL ? NULL : dyn__dnnl_acquire(c, g, m, w, NULL);
    if (!e) {
        dyn__conv_gemm_forward(g, groups, cout, x, w, b, cols, tmp, y);
        return;
    }
    dyn__dnnl_forward(e, x, b, y, act);
    dyn__dnnl_release(c, e, 1);
}

static void conv_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                         int training) {
    const conv_impl *c = l->impl;
    dyn_conv_geom g = conv_geom_run(l, &x[0], y);
    DYN_ASSERT(scratch != NULL);
    const int64_t P = (int64_t)g.OH * g.OW;
    const int NP = (int)(g.N * P);
    const int G = c->groups, cog = c->cout / G;
    const int K = c->cin / G * c->kh * c->kw; /* columns of one group's weight block */
    float *cols = scratch;
    /* With N = 1, [Cout][N*P] already is NCHW: write the output in place. */
    float *out = g.N == 1 ? y->data : scratch + (int64_t)c->cin * c->kh * c->kw * NP;
    const float *w = l->params[0].value.data;
    if (!training) { /* nothing kept for backward: chunks of images, cached columns */
        dyn__conv_infer(c->dnnl, &g, G, c->cout, x[0].data, w,
                        c->has_bias ? l->params[1].value.data : NULL, y->data, scratch);
        return;
    }

    dyn_im2col(&g, x[0].data, cols);
    for (int gi = 0; gi < G; gi++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cog, NP, K, 1.0f,
                    w + (int64_t)gi * cog * K, K, cols + (int64_t)gi * K * NP, NP, 0.0f,
                    out + (int64_t)gi * cog * NP, NP);
    if (c->has_bias) {
        const float *b = l->params[1].value.data;
        DYN_PAR_FOR((int64_t)c->cout * NP > 65536,
        for (int co = 0; co < c->cout; co++) {
            float *row = out + (int64_t)co * NP;
            for (int i = 0; i < NP; i++) row[i] += b[co];
        });
    }
    if (g.N > 1) dyn_knp_to_nkp(out, y->data, g.N, c->cout, P);
}

static void conv_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                          const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    const conv_impl *c = l->impl;
    dyn_conv_geom g = conv_geom_run(l, &x[0], y);
    DYN_ASSERT(scratch != NULL && dyn_tensor_numel(dy) == dyn_tensor_numel(y));
    const int64_t P = (int64_t)g.OH * g.OW;
    const int NP = (int)(g.N * P);
    const int G = c->groups, cog = c->cout / G;
    const int K = c->cin / G * c->kh * c->kw;
    float *cols = scratch; /* the forward's im2col of x */
    float *gbuf = scratch + (int64_t)c->cin * c->kh * c->kw * NP;
    const float *gy = dy->data;
    if (g.N > 1) {
        dyn_nkp_to_knp(dy->data, gbuf, g.N, c->cout, P);
        gy = gbuf;
    }
    const float *w = l->params[0].value.data;
    float *dw = l->params[0].grad.data;

    if (c->has_bias) {
        float *db = l->params[1].grad.data;
        DYN_PAR_FOR((int64_t)c->cout * NP > 65536,
        for (int co = 0; co < c->cout; co++) {
            const float *row = gy + (int64_t)co * NP;
            double s = 0.0;
            for (int i = 0; i < NP; i++) s += row[i];
            db[co] += (float)s;
        });
    }
    /* dW_g[cog][K] += dy_g[cog][NP] cols_g[K][NP]^T */
    for (int gi = 0; gi < G; gi++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cog, K, NP, 1.0f,
                    gy + (int64_t)gi * cog * NP, NP, cols + (int64_t)gi * K * NP, NP, 1.0f,
                    dw + (int64_t)gi * cog * K, K);
    if (!dx[0].data) return;
    DYN_ASSERT(dyn_tensor_numel(&dx[0]) == dyn_tensor_numel(&x[0]));
    /* dcols_g[K][NP] = W_g[cog][K]^T dy_g[cog][NP], overwriting cols (no longer needed). */
    for (int gi = 0; gi < G; gi++)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, K, NP, cog, 1.0f,
                    w + (int64_t)gi * cog * K, K, gy + (int64_t)gi * cog * NP, NP, 0.0f,
                    cols + (int64_t)gi * K * NP, NP);
    dyn_col2im(&g, cols, dx[0].data);
}

/* The weights may have changed: the oneDNN primitives' reordered copies are dropped (AUTO's
 * choices, which depend on the shapes alone, are kept). */
static int conv_prepare(dyn_layer *l, dyn_err *err) {
    (void)err;
    dyn__dnnl_cache_clear(((conv_impl *)l->impl)->dnnl);
    l->gen++;
    return 0;
}

static int conv_as_dense(const dyn_layer *l, const dyn_shape *in, int held, dyn_dense_conv *v) {
    (void)in, (void)held;
    const conv_impl *c = l->impl;
    *v = (dyn_dense_conv){.cin = c->cin, .cout = c->cout, .groups = c->groups, .kh = c->kh,
                          .kw = c->kw, .sh = c->sh, .sw = c->sw, .ph = c->ph, .pw = c->pw,
                          .dh = c->dh, .dw = c->dw, .w = l->params[0].value.data,
                          .b = c->has_bias ? l->params[1].value.data : NULL};
    return 1;
}

/* macs per sample: Cout * (Cin/groups) * KH * KW * OH * OW. */
static void conv_stats(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    const conv_impl *c = l->impl;
    dyn_shape one = in[0];
    one.d[0] = 1;
    dyn_conv_geom g;
    if (conv_check(l, &one, &g, NULL)) return;
    st->macs = (int64_t)c->cout * (c->cin / c->groups) * c->kh * c->kw * g.OH * g.OW;
}

const dyn_layer_ops dyn_op_conv2d = {
    .op = DYN_OP_CONV2D,
    .name = "conv2d",
    .ninputs = 1,
    .create = conv_create,
    .destroy = conv_destroy,
    .attrs = conv_attrs,
    .init = conv_init,
    .infer = conv_infer,
    .scratch = conv_scratch,
    .forward = conv_forward,
    .backward = conv_backward,
    .prepare = conv_prepare,
    .stats = conv_stats,
    .as_dense_conv = conv_as_dense,
};
