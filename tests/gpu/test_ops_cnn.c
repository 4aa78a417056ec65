/* test_ops_cnn.c — the CNN ops on the CUDA backend (engine/cuda/op_cnn.c: dyn_cuda_op_conv2d,
 * _relu, _flatten, _add, _maxpool2d, _avgpool2d, _globalavgpool, _linear, _batchnorm,
 * _dyn_conv2d) through a real context, against the CPU layers on the same random inputs and
 * parameters: a training forward (y; batchnorm: also the running statistics it updates), then
 * backward (dx of every input, every parameter gradient; a few cases without dx, as for a first
 * layer). The layers' parameters are uploaded into dyn_param.dval, their gradients zeroed in
 * .dgrad, as placement does (backend.h); the DyN conv's prepare() builds its kernel on the
 * device first (materialized; native: nothing to build).
 *
 * Measure: ||gpu − cpu||₂ / ||cpu||₂ per tensor. Tolerances: 1e-6 for the ops that move or
 * compare values or sum few terms in the CPU's order (relu, flatten, add, pooling: the bodies
 * are bit-identical to the CPU on the host, tests/unit/test_cuda_kern_cnn.c; the device may
 * contract a multiply-add); 1e-5 for batchnorm (sums in double over float partials per
 * (channel, image): 1e-6 on the host; its y and dx are a few float operations); 1e-4 for the
 * cuBLAS ones (conv2d, linear, dyn_conv2d: float32 sums of up to 64·24·24 terms — LeNet conv1's
 * weight gradient — in another order than OpenBLAS's, and for the DyN states' gradients, dλ
 * and dc summed per block and added atomically); 1e-4 for dyn_conv2d's native path too (CUB
 * prefix sums against the CPU's native kernel, the bound tests/gpu/test_native.c holds them to;
 * its c gradient is one sum of N·OH·OW products in double over float partials). */
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/op_cnn.h"
#include "gpu_util.h"
#include "layer.h"

typedef struct ocase {
    const char *op, *attrs;
    int nin;
    dyn_shape in[2];
    int training;
    double tol;
    int no_dx; /* backward without dx (a first layer): only the parameter gradients */
} ocase;

#define S4(a, b, c, d) {4, {a, b, c, d}}
#define S2(a, b) {2, {a, b}}

static const ocase cases[] = {
    {"conv2d", "{\"in_channels\": 1, \"out_channels\": 6, \"kernel\": 5}", 1, {S4(64, 1, 28, 28)},
     1, 1e-4, 1},
    {"conv2d", "{\"in_channels\": 1, \"out_channels\": 6, \"kernel\": 5}", 1, {S4(64, 1, 28, 28)},
     1, 1e-4, 0},
    {"conv2d", "{\"in_channels\": 6, \"out_channels\": 16, \"kernel\": 5, \"bias\": 0}", 1,
     {S4(64, 6, 14, 14)}, 1, 1e-4, 0},
    {"conv2d", "{\"in_channels\": 64, \"out_channels\": 64, \"kernel\": 3, \"padding\": 1}", 1,
     {S4(8, 64, 14, 14)}, 1, 1e-4, 0},
    {"conv2d", "{\"in_channels\": 64, \"out_channels\": 128, \"kernel\": 1, \"stride\": 2, "
     "\"bias\": 0}", 1, {S4(4, 64, 14, 14)}, 1, 1e-4, 0},
    {"conv2d", "{\"in_channels\": 8, \"out_channels\": 12, \"kernel_h\": 3, \"kernel_w\": 2, "
     "\"stride_h\": 2, \"padding_w\": 1, \"dilation\": 2, \"groups\": 4}", 1, {S4(3, 8, 17, 13)},
     1, 1e-4, 0},
    {"conv2d", "{\"in_channels\": 32, \"out_channels\": 32, \"kernel\": 3, \"padding\": 1, "
     "\"groups\": 32}", 1, {S4(2, 32, 9, 9)}, 1, 1e-4, 0},
    {"relu", "{}", 1, {S4(16, 16, 10, 10)}, 1, 1e-6, 0},
    {"flatten", "{}", 1, {S4(16, 16, 5, 5)}, 1, 1e-6, 0},
    {"add", "{}", 2, {S4(8, 32, 7, 7), S4(8, 32, 7, 7)}, 1, 1e-6, 0},
    {"add", "{}", 2, {S4(8, 32, 7, 7), S4(8, 32, 1, 1)}, 1, 1e-6, 0},
    {"add", "{}", 2, {S2(10, 1), S2(10, 33)}, 1, 1e-6, 0},
    {"maxpool2d", "{\"kernel\": 2}", 1, {S4(64, 6, 24, 24)}, 1, 1e-6, 0},
    {"maxpool2d", "{\"kernel\": 3, \"stride\": 2, \"padding\": 1}", 1, {S4(4, 64, 28, 28)}, 1,
     1e-6, 0},
    {"maxpool2d", "{\"kernel\": 3, \"stride\": 2, \"ceil_mode\": 1}", 1, {S4(2, 8, 14, 15)}, 1,
     1e-6, 0},
    {"avgpool2d", "{\"kernel\": 2}", 1, {S4(16, 6, 24, 24)}, 1, 1e-6, 0},
    {"avgpool2d", "{\"kernel\": 3, \"stride\": 2, \"padding\": 1, \"ceil_mode\": 1, "
     "\"count_include_pad\": 0}", 1, {S4(4, 16, 15, 14)}, 1, 1e-6, 0},
    {"globalavgpool", "{}", 1, {S4(8, 512, 7, 7)}, 1, 1e-6, 0},
    {"linear", "{\"in\": 400, \"out\": 120}", 1, {S2(64, 400)}, 1, 1e-4, 0},
    {"linear", "{\"in\": 64, \"out\": 10, \"bias\": 0}", 1, {{3, {5, 7, 64}}}, 1, 1e-4, 0},
    {"batchnorm", "{\"channels\": 64}", 1, {S4(8, 64, 14, 14)}, 1, 1e-5, 0},
    {"batchnorm", "{\"channels\": 64, \"momentum\": 0.2}", 1, {S4(8, 64, 14, 14)}, 0, 1e-5, 0},
    {"batchnorm", "{\"channels\": 120}", 1, {S2(32, 120)}, 1, 1e-5, 0},
    {"dyn_conv2d", "{\"in_channels\": 6, \"out_channels\": 16, \"kernel\": 5, \"H\": 2, \"q\": 2, "
     "\"kernel_fn\": \"l1\", \"exec\": \"materialized\"}", 1, {S4(32, 6, 14, 14)}, 1, 1e-4, 0},
    {"dyn_conv2d", "{\"in_channels\": 1, \"out_channels\": 6, \"kernel\": 5, \"H\": 2, \"q\": 2, "
     "\"kernel_fn\": \"l1\", \"exec\": \"materialized\"}", 1, {S4(32, 1, 28, 28)}, 1, 1e-4, 1},
    {"batchnorm", "{\"channels\": 6}", 1, {S4(16, 6, 10, 10)}, 1, 1e-5, 1},
    {"dyn_conv2d", "{\"in_channels\": 16, \"out_channels\": 32, \"kernel\": 3, \"padding\": 1, "
     "\"stride\": 2, \"H\": 3, \"q\": 2, \"kernel_fn\": \"l2\", \"exec\": \"auto\"}", 1,
     {S4(4, 16, 12, 12)}, 1, 1e-4, 0},
    {"dyn_conv2d", "{\"in_channels\": 3, \"out_channels\": 8, \"kernel\": 3, \"H\": 2, \"q\": 3, "
     "\"kernel_fn\": \"inv\", \"bias\": 0, \"exec\": \"materialized\"}", 1, {S4(4, 3, 10, 10)}, 1,
     1e-4, 0},
    /* native l1 (no kernel formed): the CPU layer runs its native path too */
    {"dyn_conv2d", "{\"in_channels\": 6, \"out_channels\": 16, \"kernel\": 5, \"H\": 2, \"q\": 2, "
     "\"kernel_fn\": \"l1\", \"exec\": \"native\"}", 1, {S4(16, 6, 14, 14)}, 1, 1e-4, 0},
    {"dyn_conv2d", "{\"in_channels\": 1, \"out_channels\": 6, \"kernel\": 5, \"H\": 2, \"q\": 2, "
     "\"kernel_fn\": \"l1\", \"exec\": \"native\"}", 1, {S4(16, 1, 28, 28)}, 1, 1e-4, 1},
    {"dyn_conv2d", "{\"in_channels\": 8, \"out_channels\": 12, \"kernel\": 3, \"stride\": 2, "
     "\"padding\": 1, \"dilation\": 2, \"H\": 3, \"q\": 2, \"bias\": 0, \"exec\": \"native\"}", 1,
     {S4(4, 8, 13, 11)}, 1, 1e-4, 0},
    /* auto where the CPU op holds no kernel (native at every batch under the built-in costs):
     * native on both */
    {"dyn_conv2d", "{\"in_channels\": 64, \"out_channels\": 65, \"kernel\": 3, \"padding\": 1, "
     "\"H\": 1, \"q\": 2, \"exec\": \"auto\"}", 1, {S4(2, 64, 8, 8)}, 1, 1e-4, 0},
};

static const dyn_backend_op *op_for(const char *name) {
    static const struct {
        const char *name;
        const dyn_backend_op *op;
    } t[] = {{"conv2d", &dyn_cuda_op_conv2d},       {"relu", &dyn_cuda_op_relu},
             {"flatten", &dyn_cuda_op_flatten},     {"add", &dyn_cuda_op_add},
             {"maxpool2d", &dyn_cuda_op_maxpool2d}, {"avgpool2d", &dyn_cuda_op_avgpool2d},
             {"globalavgpool", &dyn_cuda_op_globalavgpool},
             {"linear", &dyn_cuda_op_linear},       {"batchnorm", &dyn_cuda_op_batchnorm},
             {"dyn_conv2d", &dyn_cuda_op_dyn_conv2d}};
    for (size_t i = 0; i < DYN_ARRAY_LEN(t); i++)
        if (!strcmp(t[i].name, name)) return t[i].op;
    return NULL;
}

static float *dev_zeros(dyn_cuda_ctx *ctx, int64_t n) {
    float *h = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    float *d = gt_upload(ctx, h, n > 0 ? n : 1);
    free(h);
    return d;
}

static dyn_tensor dev_tensor(float *d, const dyn_shape *s) {
    dyn_tensor t = dyn_tensor_view(d, s->ndim, s->d);
    t.device = DYN_DEV_CUDA;
    return t;
}

/* Compares the device array d with the host array h (n floats). */
static void cmp(dyn_cuda_ctx *ctx, const char *what, const float *d, const float *h, int64_t n,
                double tol) {
    float *g = malloc((size_t)n * sizeof(float));
    if (!g) exit(1);
    gt_download(ctx, g, d, n);
    gt_check(what, "relative L2 error", gt_rel_err(g, h, n), tol);
    free(g);
}

static void run_case(dyn_cuda_ctx *ctx, const ocase *oc, dyn_rng *r) {
    dyn_err err = {0};
    json_t *aj = json_loads(oc->attrs, 0, NULL);
    dyn_layer *l = dyn_layer_create(oc->op, "t", aj, &err);
    json_decref(aj);
    gt_ok(l ? 0 : err.code, &err, oc->op);
    if (l->ops->init) l->ops->init(l, r);
    for (int p = 0; p < l->nparams; p++) { /* non-trivial biases, BN affine and statistics */
        dyn_param *pp = &l->params[p];
        if (!strcmp(pp->name, "bias") || !strncmp(pp->name, "running", 7) ||
            (!strcmp(oc->op, "batchnorm") && !strcmp(pp->name, "weight"))) {
            const int64_t n = dyn_tensor_numel(&pp->value);
            for (int64_t i = 0; i < n; i++) pp->value.data[i] = 0.5f + dyn_rng_uniform(r);
        }
    }
    if (l->ops->prepare) gt_ok(l->ops->prepare(l, &err), &err, "CPU prepare");
    char what[512];
    dyn_shape out;
    gt_ok(l->ops->infer(l, oc->in, &out, &err), &err, "infer");
    const dyn_backend_op *op = op_for(oc->op);
    if (op->supports && !op->supports(l, oc->in, oc->training)) {
        snprintf(what, sizeof what, "%s %s: supports()", oc->op, oc->attrs);
        gt_check(what, "unsupported", 1.0, 0.0);
        dyn_layer_free(l);
        return;
    }
    /* device parameters, as placement makes them (before the CPU forward updates BN's) */
    for (int p = 0; p < l->nparams; p++) {
        const int64_t n = dyn_tensor_numel(&l->params[p].value);
        l->params[p].dval = gt_upload(ctx, l->params[p].value.data, n);
        l->params[p].dgrad = l->params[p].trainable ? dev_zeros(ctx, n) : NULL;
    }

    /* the CPU */
    dyn_tensor x[2], xd[2], dx[2], dxd[2];
    float *xh[2] = {0}, *dxh[2] = {0}, *dxbuf[2] = {0};
    for (int k = 0; k < oc->nin; k++) {
        const int64_t n = dyn_shape_numel(&oc->in[k]);
        xh[k] = gt_rand(r, n, -1.0f, 1.0f);
        dxh[k] = gt_rand(r, n, 0, 0);
        x[k] = dyn_tensor_view(xh[k], oc->in[k].ndim, oc->in[k].d);
        dx[k] = dyn_tensor_view(dxh[k], oc->in[k].ndim, oc->in[k].d);
        xd[k] = dev_tensor(gt_upload(ctx, xh[k], n), &oc->in[k]);
        dxd[k] = dev_tensor(dxbuf[k] = dev_zeros(ctx, n), &oc->in[k]);
    }
    const int64_t ny = dyn_shape_numel(&out);
    float *yh = gt_rand(r, ny, 0, 0), *dyh = gt_rand(r, ny, -1.0f, 1.0f);
    const size_t sc = l->ops->scratch ? l->ops->scratch(l, oc->in, oc->training) : 0;
    float *sh = calloc(sc + 1, sizeof(float));
    dyn_tensor y = dyn_tensor_view(yh, out.ndim, out.d), dy = dyn_tensor_view(dyh, out.ndim, out.d);
    l->ops->forward(l, x, &y, sh, oc->training);
    l->ops->backward(l, x, &y, &dy, dx, sh);

    /* the device */
    const size_t sd = op->scratch ? op->scratch(l, oc->in, oc->training) : 0;
    float *scr = dev_zeros(ctx, (int64_t)sd);
    dyn_tensor yd = dev_tensor(dev_zeros(ctx, ny), &out);
    dyn_tensor dyd = dev_tensor(gt_upload(ctx, dyh, ny), &out);
    if (op->prepare) gt_ok(op->prepare(ctx, l, &err), &err, "device prepare");
    gt_ok(op->forward(ctx, l, xd, &yd, scr, oc->training, &err), &err, "device forward");
    if (oc->no_dx)
        for (int k = 0; k < oc->nin; k++) dxd[k].data = NULL; /* kept in dxbuf, freed below */
    gt_ok(op->backward(ctx, l, xd, &yd, &dyd, dxd, scr, &err), &err, "device backward");
    gt_ok(dyn_cuda_sync(ctx, &err), &err, "sync");

    char shp[64];
    dyn_shape_str(&oc->in[0], shp, sizeof shp);
    snprintf(what, sizeof what, "%s %s on %s (%s%s): y", oc->op, oc->attrs, shp,
             oc->training ? "training" : "inference", oc->no_dx ? ", backward without dx" : "");
    cmp(ctx, what, yd.data, yh, ny, oc->tol);
    for (int k = 0; k < oc->nin && !oc->no_dx; k++) {
        snprintf(what, sizeof what, "%s on %s: dx[%d]", oc->op, shp, k);
        cmp(ctx, what, dxd[k].data, dxh[k], dyn_shape_numel(&oc->in[k]), oc->tol);
    }
    for (int p = 0; p < l->nparams; p++) {
        dyn_param *pp = &l->params[p];
        const int64_t n = dyn_tensor_numel(&pp->value);
        snprintf(what, sizeof what, "%s on %s: %s %s", oc->op, shp, pp->name,
                 pp->trainable ? "gradient" : "(updated buffer)");
        if (pp->trainable) cmp(ctx, what, pp->dgrad, pp->grad.data, n, oc->tol);
        else cmp(ctx, what, pp->dval, pp->value.data, n, oc->tol);
    }

    if (op->release) op->release(ctx, l);
    for (int p = 0; p < l->nparams; p++) {
        dyn_cuda_free(ctx, l->params[p].dval), dyn_cuda_free(ctx, l->params[p].dgrad);
        l->params[p].dval = l->params[p].dgrad = NULL;
    }
    for (int k = 0; k < oc->nin; k++) {
        dyn_cuda_free(ctx, xd[k].data), dyn_cuda_free(ctx, dxbuf[k]);
        free(xh[k]), free(dxh[k]);
    }
    dyn_cuda_free(ctx, scr), dyn_cuda_free(ctx, yd.data), dyn_cuda_free(ctx, dyd.data);
    free(yh), free(dyh), free(sh);
    dyn_layer_free(l);
}

int main(void) {
    dyn_cuda_ctx *ctx = gt_ctx("test_ops_cnn");
    dyn_rng r;
    dyn_rng_seed(&r, 13);
    for (size_t i = 0; i < DYN_ARRAY_LEN(cases); i++) run_case(ctx, &cases[i], &r);
    dyn_cuda_ctx_free(ctx);
    return gt_finish("test_ops_cnn");
}
