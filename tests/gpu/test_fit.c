/* test_fit.c — the conversion fit with its Adam steps on the GPU (dyn_fit_opts.device = cuda,
 * engine/convert/fit_cuda.c) against the same fit on the CPU, from the same initialization (same
 * seed): a dyn_linear layer fitted to a random 256×512 weight and a dyn_conv2d layer (K = 3) to
 * a random 64×(64·3·3) one, H from the default ratio 4, the default options with 400 steps. The
 * CPU's fast path sees half the rows per step (sample 0.5; the GPU every row), so the runs
 * differ; the check: the GPU's final relative error (after rounding to the default grid) is at
 * most 2 % above the CPU's, plus 0.002. Also: the fit says it ran on the GPU, and a fit the GPU
 * does not cover (kernel l2) runs on the CPU and says why. Prints both times (not judged). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/convert.h"
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
    fit_pair(ctx, 256, 512, 1, &r);
    fit_pair(ctx, 64, 64, 3, &r);
    fallback(ctx, &r);
    dyn_cuda_ctx_free(ctx);
    return gt_finish("test_fit");
}
