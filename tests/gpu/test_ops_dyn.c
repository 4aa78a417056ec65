/* test_ops_dyn.c — the dyn_linear layer's device op (dyn_cuda_op_dyn_linear, engine/cuda/op_dyn.c)
 * through a real context against the CPU layer: parameters uploaded into dval (gradients into
 * dgrad, zeroed), prepare, forward, backward, then y, dx and the gradients of u, v, λ, c and the
 * bias downloaded and compared. Cases: the native path (exec native: batch 1 without transposes,
 * batch 33 with them; exec auto at batch 4), the materialized path (exec materialized, l1 at
 * batch 64 and l2 at batch 8), and a layer applied to [N, T, in] rows.
 *
 * Tolerances: y, dx, du, dv, db: relative L2 error <= 1e-4 (float sums in another order:
 * cuBLAS, CUB scans, per-thread sums); dλ and dc (sums of terms that cancel; atomically added on
 * the device) with the denominator at least 1e-3·Σ_ij |G_ij|, G = δᵀ x = ∂L/∂W (as
 * test_native.c). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda/op_dyn.h"
#include "gpu_util.h"
#include "layer.h"

typedef struct dcase {
    int in, out, H, q, N, T; /* T > 0: input [N, T, in] */
    const char *kernel, *exec;
} dcase;

/* Σ_ij |(δᵀ x)_ij| over rows R. */
static double g_abs_sum(const float *x, const float *d, int64_t R, int in, int out) {
    double s = 0;
    for (int i = 0; i < out; i++)
        for (int j = 0; j < in; j++) {
            double g = 0;
            for (int64_t r = 0; r < R; r++) g += (double)d[r * out + i] * x[r * in + j];
            s += fabs(g);
        }
    return s;
}

static dyn_tensor dev_view(float *p, int ndim, const int64_t *shape) {
    dyn_tensor t = dyn_tensor_view(p, ndim, shape);
    t.device = DYN_DEV_CUDA;
    return t;
}

static void run_case(dyn_cuda_ctx *ctx, const dcase *c, dyn_rng *r) {
    char what[200];
    snprintf(what, sizeof what, "dyn_linear %s exec=%s in=%d out=%d H=%d q=%d N=%d%s", c->kernel,
             c->exec, c->in, c->out, c->H, c->q, c->N, c->T ? " (3-D input)" : "");
    json_t *a = json_pack("{s:i, s:i, s:i, s:i, s:s, s:s, s:i}", "in", c->in, "out", c->out, "H",
                          c->H, "q", c->q, "kernel", c->kernel, "exec", c->exec, "bias", 1);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create("dyn_linear", "fc", a, &err);
    json_decref(a);
    gt_ok(!l, &err, "dyn_layer_create");
    l->ops->init(l, r);
    dyn_param *bias = dyn_layer_param(l, "bias");
    for (int64_t i = 0; i < c->out; i++) bias->value.data[i] = dyn_rng_uniform(r) - 0.5f;
    gt_ok(l->ops->prepare(l, &err), &err, "prepare (CPU)");

    const int64_t R = (int64_t)c->N * (c->T ? c->T : 1);
    const int nd = c->T ? 3 : 2;
    int64_t xsh[3] = {c->N, c->in, 0}, ysh[3] = {c->N, c->out, 0};
    if (c->T) {
        xsh[1] = ysh[1] = c->T;
        xsh[2] = c->in;
        ysh[2] = c->out;
    }
    dyn_shape in_shape = {nd, {0}};
    for (int k = 0; k < nd; k++) in_shape.d[k] = xsh[k];
    float *x = gt_rand(r, R * c->in, -1, 1), *dy = gt_rand(r, R * c->out, -1, 1);

    /* CPU */
    float *y = gt_rand(r, R * c->out, 0, 0), *dx = gt_rand(r, R * c->in, 0, 0);
    size_t sf = l->ops->scratch(l, &in_shape, 1);
    float *scr = dyn_alloc_zero((sf + 1) * sizeof(float));
    dyn_tensor tx = dyn_tensor_view(x, nd, xsh), ty = dyn_tensor_view(y, nd, ysh);
    dyn_tensor tdy = dyn_tensor_view(dy, nd, ysh), tdx = dyn_tensor_view(dx, nd, xsh);
    l->ops->forward(l, &tx, &ty, scr, 1);
    l->ops->backward(l, &tx, &ty, &tdy, &tdx, scr);
    dyn_free(scr);

    /* GPU: parameters into dval, zeroed dgrad */
    const dyn_backend_op *op = &dyn_cuda_op_dyn_linear;
    if (!op->supports(l, &in_shape, 1)) {
        gt_check(what, "supported (1 = no)", 1, 0);
        dyn_layer_free(l);
        free(x), free(dy), free(y), free(dx);
        return;
    }
    for (int i = 0; i < l->nparams; i++) {
        dyn_param *p = &l->params[i];
        const int64_t n = dyn_tensor_numel(&p->value);
        float *zero = calloc((size_t)n, sizeof(float));
        p->dval = gt_upload(ctx, p->value.data, n);
        p->dgrad = gt_upload(ctx, zero, n);
        free(zero);
    }
    gt_ok(op->prepare(ctx, l, &err), &err, "prepare (GPU)");
    const size_t dsf = op->scratch(l, &in_shape, 1);
    float *dscr = NULL;
    if (dsf) gt_ok(dyn_cuda_alloc(ctx, dsf * sizeof(float), (void **)&dscr, &err), &err, "scratch");
    float *xd = gt_upload(ctx, x, R * c->in), *dyd = gt_upload(ctx, dy, R * c->out);
    float *yd = gt_upload(ctx, y, R * c->out), *dxd = gt_upload(ctx, dx, R * c->in);
    dyn_tensor gx = dev_view(xd, nd, xsh), gy = dev_view(yd, nd, ysh);
    dyn_tensor gdy = dev_view(dyd, nd, ysh), gdx = dev_view(dxd, nd, xsh);
    gt_ok(op->forward(ctx, l, &gx, &gy, dscr, 1, &err), &err, "forward (GPU)");
    gt_ok(op->backward(ctx, l, &gx, &gy, &gdy, &gdx, dscr, &err), &err, "backward (GPU)");
    float *yg = gt_rand(r, R * c->out, 0, 0), *dxg = gt_rand(r, R * c->in, 0, 0);
    gt_download(ctx, yg, yd, R * c->out);
    gt_download(ctx, dxg, dxd, R * c->in);

    char line[300];
    snprintf(line, sizeof line, "%s: forward y", what);
    gt_check(line, "relative L2 error", gt_rel_err(yg, y, R * c->out), 1e-4);
    snprintf(line, sizeof line, "%s: backward dx", what);
    gt_check(line, "relative L2 error", gt_rel_err(dxg, dx, R * c->in), 1e-4);
    const double gs = g_abs_sum(x, dy, R, c->in, c->out);
    for (int i = 0; i < l->nparams; i++) {
        dyn_param *p = &l->params[i];
        const int64_t n = dyn_tensor_numel(&p->value);
        float *hg = gt_rand(r, n, 0, 0), *z = calloc((size_t)n, sizeof(float));
        gt_download(ctx, hg, p->dgrad, n);
        const int cancel = !strcmp(p->name, "lambda") || !strcmp(p->name, "c");
        snprintf(line, sizeof line, "%s: gradient %s", what, p->name);
        gt_check(line, "relative L2 error",
                 gt_rel_delta(hg, p->grad.data, z, n, cancel ? 1e-3 * gs : 0), 1e-4);
        free(hg), free(z);
        dyn_cuda_free(ctx, p->dval), dyn_cuda_free(ctx, p->dgrad);
        p->dval = p->dgrad = NULL;
    }
    op->release(ctx, l);
    dyn_cuda_free(ctx, dscr), dyn_cuda_free(ctx, xd), dyn_cuda_free(ctx, dyd);
    dyn_cuda_free(ctx, yd), dyn_cuda_free(ctx, dxd);
    free(x), free(dy), free(y), free(dx), free(yg), free(dxg);
    dyn_layer_free(l);
}

int main(void) {
    dyn_cuda_ctx *ctx = gt_ctx("test_ops_dyn");
    static const dcase cases[] = {
        {300, 200, 4, 2, 1, 0, "l1", "native"},      {300, 200, 4, 2, 33, 0, "l1", "native"},
        {257, 129, 3, 1, 4, 0, "l1", "auto"},        {300, 200, 4, 2, 64, 0, "l1", "materialized"},
        {96, 80, 2, 2, 8, 0, "l2", "materialized"},  {64, 48, 2, 1, 3, 5, "l1", "native"},
        {64, 48, 2, 1, 3, 5, "l1", "materialized"},
    };
    dyn_rng r;
    dyn_rng_seed(&r, 13);
    for (size_t k = 0; k < DYN_ARRAY_LEN(cases); k++) run_case(ctx, &cases[k], &r);
    dyn_cuda_ctx_free(ctx);
    return gt_finish("test_ops_dyn");
}
