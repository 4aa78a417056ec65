/* test_fit.c — the conversion fit with its Adam steps on the GPU (dyn_fit_opts.device = cuda,
 * engine/convert/fit_cuda.c) against the same fit on the CPU, from the same initialization (same
 * seed): a dyn_linear layer fitted to a random 256×512 weight and a dyn_conv2d layer (K = 3) to
 * a random 64×(64·3·3) one, H from the default ratio 4, the default options with 400 steps. The
 * CPU's fast path sees half the rows per step (sample 0.5; the GPU every row), so the runs
 * differ; the check: the GPU's final relative error (after rounding to the default grid) is at
 * most 2 % above the CPU's, plus 0.002. Also: the fit says it ran on the GPU, and a fit the GPU
 * does not cover (kernel l2) runs on the CPU and says why. Prints both times (not judged).
 * First, one step's loss and gradient on the device (dyn__fit_gpu_grad) against the reference
 * (dyn__fit_loss): linear q = 1 and conv K = 3, q = 2 (tolerance 1e-4 relative). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/convert_impl.h"
#include "gpu_util.h"

/* A new DyN layer for an m×n(×K×K) weight with H copies (kernel l1 or l2). */
static dyn_layer *make_dyn(int m, int n, int K, int H, const char *kern) {
    json_t *a = K == 1 ? json_pack("{s:i, s:i, s:i, s:i, s:s, s:i}", "in", n, "out", m, "H", H,
                                   "q", 1, "kernel", kern, "bias", 0)
                       : json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:i}", "in_channels", n,
                                   "out_channels", m, "kernel", K, "padding", K / 2, "H", H, "q",
                                   1, "kernel_fn", kern, "bias", 0);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create(K == 1 ? "dyn_linear" : "dyn_conv2d", "layer", a, &err);
    json_decref(a);
    gt_ok(!l, &err, "dyn_layer_create");
    return l;
}

static void fit_pair(dyn_cuda_ctx *ctx, int m, int n, int K, dyn_rng *r) {
    const int H = dyn_convert_budget_H(m, n, K, 1, 4.0);
    const int64_t tot = (int64_t)m * n * K * K;
    const float lim = 1.0f / sqrtf((float)n * K * K);
    float *w = gt_rand(r, tot, -lim, lim);
    dyn_fit_opts o = dyn_fit_opts_default();
    o.steps = 400;
    dyn_fit_result rcpu, rg;
    dyn_err err = {0};
    dyn_layer *lc = make_dyn(m, n, K, H, "l1"), *lg = make_dyn(m, n, K, H, "l1");
    gt_ok(dyn_fit_layer(lc, w, NULL, DYN_FIT_FIXED, 0, &o, &rcpu, &err), &err, "CPU fit");
    o.device = DYN_DEV_CUDA;
    o.cuda = ctx;
    gt_ok(dyn_fit_layer(lg, w, NULL, DYN_FIT_FIXED, 0, &o, &rg, &err), &err, "GPU fit");
    char what[800];
    snprintf(what, sizeof what, "fit %d×%d K=%d H=%d on the GPU (%s)", m, n, K, H, rg.note);
    gt_check(what, "ran on the CPU (1 = yes)", rg.device != DYN_DEV_CUDA, 0);
    printf("     relative error: CPU %.4f in %.2f s, GPU %.4f in %.2f s (%d steps each)\n",
           rcpu.rel_err, rcpu.seconds, rg.rel_err, rg.seconds, rg.steps);
    snprintf(what, sizeof what, "fit %d×%d K=%d: GPU final relative error vs the CPU's", m, n, K);
    gt_check(what, "excess over 1.02·CPU + 0.002", rg.rel_err - (1.02 * rcpu.rel_err + 0.002), 0);
    dyn_layer_free(lc), dyn_layer_free(lg);
    free(w);
}

/* One gradient step on the device (dyn__fit_gpu_grad: materialize, residual,
 * dyn_cuda_fit_grad_l1) against the reference loss and gradient (dyn__fit_loss) at the layer's
 * initial θ; q = qd. Tolerance: loss 1e-4, gradient 1e-4 relative (float sums in other orders). */
static void grad_check(dyn_cuda_ctx *ctx, int m, int n, int K, int H, int qd, dyn_rng *r) {
    json_t *a = K == 1 ? json_pack("{s:i, s:i, s:i, s:i, s:i}", "in", n, "out", m, "H", H, "q",
                                   qd, "bias", 0)
                       : json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i}", "in_channels", n,
                                   "out_channels", m, "kernel", K, "padding", K / 2, "H", H, "q",
                                   qd, "bias", 0);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create(K == 1 ? "dyn_linear" : "dyn_conv2d", "layer", a, &err);
    json_decref(a);
    gt_ok(!l, &err, "dyn_layer_create");
    l->ops->init(l, r);
    gt_ok(l->ops->prepare(l, &err), &err, "prepare");
    const int K2 = K * K, nk = n * K2;
    const int64_t blk = (int64_t)m * n, tot = K2 * blk;
    float *w = gt_rand(r, tot, -0.3f, 0.3f), *wp = gt_rand(r, tot, 0, 0);
    for (int x = 0; x < K2; x++)
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                wp[(x * m + i) * (int64_t)n + j] = w[(int64_t)i * nk + (int64_t)j * K2 + x];
    /* θ = [u | v | λ | c]: the layer's parameters in that order */
    const char *pn[4] = {K == 1 ? "u" : "a", K == 1 ? "v" : "b", "lambda", "c"};
    int64_t np = 0;
    for (int k = 0; k < 4; k++) np += dyn_tensor_numel(&dyn_layer_param(l, pn[k])->value);
    float *th = gt_rand(r, np, 0, 0), *gref = gt_rand(r, np, 0, 0), *gg = gt_rand(r, np, 0, 0);
    for (int k = 0, off = 0; k < 4; k++) {
        const dyn_param *p = dyn_layer_param(l, pn[k]);
        const int64_t c = dyn_tensor_numel(&p->value);
        memcpy(th + off, p->value.data, (size_t)c * sizeof(float));
        off += (int)c;
    }
    const double lref = dyn__fit_loss(l, w, NULL, 0, gref, &err);
    dyn_fit_gpu *g = NULL;
    double loss = 0;
    gt_ok(dyn__fit_gpu_new(ctx, m, n, K, H, qd, wp, &g, &err), &err, "dyn__fit_gpu_new");
    gt_ok(dyn__fit_gpu_begin(g, th, &err), &err, "dyn__fit_gpu_begin");
    gt_ok(dyn__fit_gpu_grad(g, &loss, &err), &err, "dyn__fit_gpu_grad");
    gt_ok(dyn__fit_gpu_grad_get(g, gg, &err), &err, "dyn__fit_gpu_grad_get");
    char what[200];
    snprintf(what, sizeof what, "fit step on the GPU %d×%d K=%d H=%d q=%d: loss", m, n, K, H, qd);
    gt_check(what, "relative error", fabs(loss - lref) / lref, 1e-4);
    snprintf(what, sizeof what, "fit step on the GPU %d×%d K=%d H=%d q=%d: gradient", m, n, K, H,
             qd);
    gt_check(what, "relative L2 error", gt_rel_err(gg, gref, np), 1e-4);
    dyn__fit_gpu_free(g);
    dyn_layer_free(l);
    free(w), free(wp), free(th), free(gref), free(gg);
}

/* kernel l2: the GPU does not cover it; the fit runs on the CPU and its note says why. */
static void fallback(dyn_cuda_ctx *ctx, dyn_rng *r) {
    dyn_layer *l = make_dyn(32, 48, 1, 4, "l2");
    float *w = gt_rand(r, 32 * 48, -0.2f, 0.2f);
    dyn_fit_opts o = dyn_fit_opts_default();
    o.steps = 20;
    o.device = DYN_DEV_CUDA;
    o.cuda = ctx;
    dyn_fit_result res;
    dyn_err err = {0};
    gt_ok(dyn_fit_layer(l, w, NULL, DYN_FIT_FIXED, 0, &o, &res, &err), &err, "l2 fit");
    char what[700];
    snprintf(what, sizeof what, "an l2 fit asked for cuda runs on the CPU, saying why (%s)",
             res.note);
    gt_check(what, "wrong (1 = yes)",
             res.device != DYN_DEV_CPU || !strstr(res.note, "cpu") || !strstr(res.note, "l2"), 0);
    dyn_layer_free(l);
    free(w);
}

int main(void) {
    dyn_cuda_ctx *ctx = gt_ctx("test_fit");
    dyn_rng r;
    dyn_rng_seed(&r, 17);
    grad_check(ctx, 200, 300, 1, 8, 1, &r);
    grad_check(ctx, 24, 40, 3, 3, 2, &r);
    fit_pair(ctx, 256, 512, 1, &r);
    fit_pair(ctx, 64, 64, 3, &r);
    fallback(ctx, &r);
    dyn_cuda_ctx_free(ctx);
    return gt_finish("test_fit");
}
