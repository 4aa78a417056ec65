/* test_materialize.c — dyn_cuda_materialize against dyn_sys_materialize (the CPU kernel) for
 * the l1, l2 and inv kernels on shapes from 1x1 to 1000x777, H and q from 1 to 8.
 *
 * Tolerance, per weight: |W_gpu − W_cpu| <= 2·K·2^-24·A_ij with K = H·(q + 4) + 1 and
 * A_ij = |c| + Σ_h |λ_h| φ_h(i, j) (every φ is >= 0: the same materialization with |λ| and
 * |c|). Each side's float error is at most about K roundings of A_ij: q terms and the kernel's
 * sqrt / division per copy, one addition per copy into the sum.
 *
 * The state gradient (dyn_cuda_grad_materialized against dyn_sys_grad_materialized) for a random
 * G = ∂L/∂W, accumulated onto random starting values: ||Δ_gpu − Δ_cpu||_2 / ||Δ_cpu||_2 <= 1e-4
 * for du and dv (as tests/unit/test_dyn.c), and for dλ and dc with the denominator at least
 * 1e-3·Σ_ij |G_ij| (sums whose terms cancel: the scale of their float rounding). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dyn/dyn.h"
#include "gpu_util.h"

typedef struct mcase {
    int m, n, H, q;
} mcase;

/* dyn_cuda_grad_materialized vs dyn_sys_grad_materialized for system s (host) / sd (device). */
static void run_grad(dyn_cuda_ctx *ctx, const dyn_sys *s, const dyn_sys *sd, dyn_rng *r,
                     const char *what) {
    const int m = s->m, n = s->n, H = s->H, q = s->q;
    const int64_t nu = (int64_t)H * q * m, nv = (int64_t)H * q * n, nw = (int64_t)m * n;
    float *g = gt_rand(r, nw, -1.0f, 1.0f);
    float *du0 = gt_rand(r, nu, -1, 1), *dv0 = gt_rand(r, nv, -1, 1), *dl0 = gt_rand(r, H, -1, 1);
    float *dc0 = gt_rand(r, 1, -1, 1);
    float *du = gt_rand(r, nu, 0, 0), *dv = gt_rand(r, nv, 0, 0), *dl = gt_rand(r, H, 0, 0);
    float dc[1] = {dc0[0]};
    memcpy(du, du0, (size_t)nu * sizeof(float)), memcpy(dv, dv0, (size_t)nv * sizeof(float));
    memcpy(dl, dl0, (size_t)H * sizeof(float));
    dyn_sys_grad gc = {du, dv, dl, dc};
    dyn_sys_grad_materialized(s, g, &gc);

    float *gd = gt_upload(ctx, g, nw);
    dyn_sys_grad dd = {gt_upload(ctx, du0, nu), gt_upload(ctx, dv0, nv), gt_upload(ctx, dl0, H),
                       gt_upload(ctx, dc0, 1)};
    dyn_err err = {0};
    gt_ok(dyn_cuda_grad_materialized(ctx, sd, gd, &dd, &err), &err, "dyn_cuda_grad_materialized");
    float *hu = gt_rand(r, nu, 0, 0), *hv = gt_rand(r, nv, 0, 0), *hl = gt_rand(r, H, 0, 0);
    float hc[1];
    gt_download(ctx, hu, dd.du, nu), gt_download(ctx, hv, dd.dv, nv);
    gt_download(ctx, hl, dd.dlambda, H), gt_download(ctx, hc, dd.dc, 1);
    double gs = 0.0;
    for (int64_t t = 0; t < nw; t++) gs += fabs(g[t]);
    const char *names[] = {"du", "dv", "dlambda", "dc"};
    const double errs[] = {gt_rel_delta(hu, du, du0, nu, 0), gt_rel_delta(hv, dv, dv0, nv, 0),
                           gt_rel_delta(hl, dl, dl0, H, 1e-3 * gs),
                           gt_rel_delta(hc, dc, dc0, 1, 1e-3 * gs)};
    char line[240];
    for (int k = 0; k < 4; k++) {
        snprintf(line, sizeof line, "state gradient %s, %s, vs CPU", names[k], what);
        gt_check(line, "relative L2 error", errs[k], 1e-4);
    }
    dyn_cuda_free(ctx, gd), dyn_cuda_free(ctx, dd.du), dyn_cuda_free(ctx, dd.dv);
    dyn_cuda_free(ctx, dd.dlambda), dyn_cuda_free(ctx, dd.dc);
    free(g), free(du0), free(dv0), free(dl0), free(dc0), free(du), free(dv), free(dl);
    free(hu), free(hv), free(hl);
}

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
    char what[160], line[200];
    snprintf(what, sizeof what, "%s m=%d n=%d H=%d q=%d", dyn_kernel_name(kern), m, n, H, q);
    snprintf(line, sizeof line, "materialize %s vs CPU", what);
    gt_check(line, "max |diff| / per-weight tolerance", worst, 1.0);
    run_grad(ctx, &s, &sd, r, what);
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
