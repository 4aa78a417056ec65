/* test_linear.c — dyn_cuda_linear_forward (cuBLAS) against the CPU `linear` layer
 * (engine/ops/linear.c, inference forward) and a double-precision reference, with and without
 * bias, from 1x1 to 4096x4096 and batches 1 to 256.
 *
 * Tolerance (as tests/unit/test_dnnl.c): |y − ref| <= 1e-5·(1 + A) per output, with
 * A = Σ_k |w_k x_k| + |b|: float32 sums of K terms in any order stay within about
 * sqrt(K)·2^-24·A of the exact value, 1e-5·A for K up to ~10^4 with room. Both the GPU and the
 * CPU layer are held to it. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "gpu_util.h"
#include "layer.h"

typedef struct lcase {
    int N, in, out, bias;
} lcase;

static void run_case(dyn_cuda_ctx *ctx, const lcase *lc, dyn_rng *r) {
    const int N = lc->N, in = lc->in, out = lc->out;
    char attrs[128];
    snprintf(attrs, sizeof attrs, "{\"in\": %d, \"out\": %d, \"bias\": %d}", in, out, lc->bias);
    json_t *aj = json_loads(attrs, 0, NULL);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create("linear", "fc", aj, &err);
    json_decref(aj);
    gt_ok(l ? 0 : err.code, &err, "linear layer");
    l->ops->init(l, r);
    if (lc->bias) /* Kaiming init leaves small biases; make them matter */
        for (int o = 0; o < out; o++) l->params[1].value.data[o] = dyn_rng_uniform(r) - 0.5f;
    const float *w = l->params[0].value.data, *b = lc->bias ? l->params[1].value.data : NULL;

    float *x = gt_rand(r, (int64_t)N * in, -1.0f, 1.0f);
    float *yc = gt_rand(r, (int64_t)N * out, 0, 0), *yg = gt_rand(r, (int64_t)N * out, 0, 0);
    int64_t xs[2] = {N, in}, ys[2] = {N, out};
    dyn_tensor xt = dyn_tensor_view(x, 2, xs), yt = dyn_tensor_view(yc, 2, ys);
    l->ops->forward(l, &xt, &yt, NULL, 0);

    float *xd = gt_upload(ctx, x, (int64_t)N * in), *wd = gt_upload(ctx, w, (int64_t)out * in);
    float *bd = b ? gt_upload(ctx, b, out) : NULL, *yd = gt_upload(ctx, yg, (int64_t)N * out);
    gt_ok(dyn_cuda_linear_forward(ctx, xd, N, in, wd, bd, out, yd, &err), &err,
          "dyn_cuda_linear_forward");
    gt_download(ctx, yg, yd, (int64_t)N * out);

    double worst_g = 0.0, worst_c = 0.0, maxdiff = 0.0;
    for (int i = 0; i < N; i++)
        for (int o = 0; o < out; o++) {
            double ref = b ? b[o] : 0.0, A = b ? fabs(b[o]) : 0.0;
            for (int k = 0; k < in; k++) {
                double p = (double)w[(int64_t)o * in + k] * x[(int64_t)i * in + k];
                ref += p;
                A += fabs(p);
            }
            const int64_t t = (int64_t)i * out + o;
            const double tol = 1e-5 * (1.0 + A);
            double eg = fabs(yg[t] - ref) / tol, ec = fabs(yc[t] - ref) / tol;
            worst_g = eg <= worst_g ? worst_g : isnan(eg) ? INFINITY : eg;
            worst_c = ec <= worst_c ? worst_c : isnan(ec) ? INFINITY : ec;
            maxdiff = fmax(maxdiff, fabs((double)yg[t] - yc[t]));
        }
    char what[160];
    snprintf(what, sizeof what, "linear N=%d in=%d out=%d bias=%d: GPU vs reference", N, in, out,
             lc->bias);
    gt_check(what, "max |diff| / tolerance", worst_g, 1.0);
    snprintf(what, sizeof what, "linear N=%d in=%d out=%d bias=%d: CPU layer vs reference (max "
             "|GPU - CPU| %.3g)", N, in, out, lc->bias, maxdiff);
    gt_check(what, "max |diff| / tolerance", worst_c, 1.0);

    dyn_cuda_free(ctx, xd), dyn_cuda_free(ctx, wd), dyn_cuda_free(ctx, bd), dyn_cuda_free(ctx, yd);
    free(x), free(yc), free(yg);
    dyn_layer_free(l);
}

int main(void) {
    dyn_cuda_ctx *ctx = gt_ctx("test_linear");
    static const lcase cases[] = {
        {1, 1, 1, 1}, {1, 784, 300, 1}, {7, 33, 65, 0}, {64, 512, 1000, 1}, {3, 4096, 4096, 1},
        {256, 1024, 256, 0},
    };
    dyn_rng r;
    dyn_rng_seed(&r, 5);
    for (size_t i = 0; i < DYN_ARRAY_LEN(cases); i++) run_case(ctx, &cases[i], &r);
    dyn_cuda_ctx_free(ctx);
    return gt_finish("test_linear");
}
