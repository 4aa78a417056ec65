/* test_materialize.c — dyn_cuda_materialize against dyn_sys_materialize (the CPU kernel) for
 * the l1, l2 and inv kernels on shapes from 1x1 to 1000x777, H and q from 1 to 8.
 *
 * Tolerance, per weight: |W_gpu − W_cpu| <= 2·K·2^-24·A_ij with K = H·(q + 4) + 1 and
 * A_ij = |c| + Σ_h |λ_h| φ_h(i, j) (every φ is >= 0: the same materialization with |λ| and
 * |c|). Each side's float error is at most about K roundings of A_ij: q terms and the kernel's
 * sqrt / division per copy, one addition per copy into the sum. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "dyn/dyn.h"
#include "gpu_util.h"

typedef struct mcase {
    int m, n, H, q;
} mcase;

static void run_case(dyn_cuda_ctx *ctx, const mcase *mc, dyn_kernel kern, dyn_rng *r) {
    const int m = mc->m, n = mc->n, H = mc->H, q = mc->q;
    const int64_t nu = (int64_t)H * q * m, nv = (int64_t)H * q * n, nw = (int64_t)m * n;
    float *u = gt_rand(r, nu, -1.0f, 1.0f), *v = gt_rand(r, nv, -1.0f, 1.0f);
    float *lam = gt_rand(r, H, -1.0f, 1.0f), *alam = gt_rand(r, H, 0, 0);
    for (int h = 0; h < H; h++) alam[h] = fabsf(lam[h]);
    const float c = 0.25f;
    dyn_sys s = {m, n, H, q, kern, u, v, lam, c};
    dyn_sys sa = {m, n, H, q, kern, u, v, alam, fabsf(c)};
    float *w = gt_rand(r, nw, 0, 0), *a = gt_rand(r, nw, 0, 0), *wg = gt_rand(r, nw, 0, 0);
    dyn_sys_materialize(&s, w);
    dyn_sys_materialize(&sa, a);

    dyn_sys sd = s;
    sd.u = gt_upload(ctx, u, nu);
    sd.v = gt_upload(ctx, v, nv);
    sd.lambda = gt_upload(ctx, lam, H);
    float *wd = gt_upload(ctx, wg, nw); /* contents overwritten */
    dyn_err err = {0};
    gt_ok(dyn_cuda_materialize(ctx, &sd, wd, &err), &err, "dyn_cuda_materialize");
    gt_download(ctx, wg, wd, nw);

    const double K = (double)H * (q + 4) + 1, eps = ldexp(1.0, -24);
    double worst = 0.0; /* largest |diff| / tolerance */
    for (int64_t t = 0; t < nw; t++) {
        double tol = 2.0 * K * eps * (double)a[t] + 1e-30;
        double ratio = fabs((double)wg[t] - (double)w[t]) / tol;
        if (!(ratio <= worst)) worst = isnan(ratio) ? INFINITY : ratio;
    }
    char what[160];
    snprintf(what, sizeof what, "materialize %s m=%d n=%d H=%d q=%d vs CPU", dyn_kernel_name(kern),
             m, n, H, q);
    gt_check(what, "max |diff| / per-weight tolerance", worst, 1.0);

    dyn_cuda_free(ctx, (void *)sd.u);
    dyn_cuda_free(ctx, (void *)sd.v);
    dyn_cuda_free(ctx, (void *)sd.lambda);
    dyn_cuda_free(ctx, wd);
    free(u), free(v), free(lam), free(alam), free(w), free(a), free(wg);
}

int main(void) {
    dyn_cuda_ctx *ctx = gt_ctx("test_materialize");
    static const mcase cases[] = {
        {1, 1, 1, 1}, {37, 53, 2, 3}, {8, 300, 1, 8}, {256, 300, 4, 4}, {1000, 777, 2, 8},
    };
    dyn_rng r;
    dyn_rng_seed(&r, 13);
    for (int k = 0; k < DYN_KERNEL_COUNT; k++)
        for (size_t i = 0; i < DYN_ARRAY_LEN(cases); i++)
            run_case(ctx, &cases[i], (dyn_kernel)k, &r);
    dyn_cuda_ctx_free(ctx);
    return gt_finish("test_materialize");
}
