/* test_native.c — dyn_cuda_native_forward (CUB sort + scans) against dyn_native_forward (the
 * CPU's native l1 kernel) on shapes from 1x1 to 2000x1500 with 1 to 64 columns, states with
 * many ties (a coarse grid: lo < hi in the ranks), and states far from 0 (the median shift).
 * y starts from random values: both add W x to them.
 *
 * The backward (dyn_cuda_native_backward against dyn_native_backward) on the same cases: the
 * transposed product dx and the gradients du, dv (forces), dλ, dc, all accumulated onto random
 * starting values as on the CPU.
 *
 * Tolerance (as tests/unit/test_dyn.c holds the CPU native path to its reference):
 * ||Δ_gpu − Δ_cpu||_2 / ||Δ_cpu||_2 <= 1e-4, Δ = value after − value before, for y, dx, du and
 * dv; for dλ and dc (sums of terms that cancel) the denominator is at least 1e-3·Σ_ij |G_ij|
 * (and 1e-3·Σ_ij |G_ij| / q for dc), G = δ xᵀ = ∂L/∂W: their float rounding scale. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dyn/dyn.h"
#include "gpu_util.h"

typedef struct ncase {
    int m, n, H, q;
    int64_t cols;
    float grid;  /* > 0: states rounded to multiples of grid (ties) */
    float shift; /* added to every state */
} ncase;

/* Σ_ij |G_ij|, G = Σ_c d[i][c] x[j][c] (feature-major d [m][cols], x [n][cols]). */
static double g_abs_sum(const float *x, const float *d, int m, int n, int64_t cols) {
    double s = 0.0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double g = 0.0;
            for (int64_t c = 0; c < cols; c++) g += (double)d[i * cols + c] * x[j * cols + c];
            s += fabs(g);
        }
    return s;
}

/* Backward of system s (host) / sd (the same states on the device) for input x [n][cols]. */
static void run_backward(dyn_cuda_ctx *ctx, const dyn_sys *s, const dyn_sys *sd, const float *x,
                         int64_t cols, dyn_rng *r, const char *what) {
    const int m = s->m, n = s->n, H = s->H, q = s->q;
    const int64_t nu = (int64_t)H * q * m, nv = (int64_t)H * q * n;
    const int64_t nx = (int64_t)n * cols, nd = (int64_t)m * cols;
    float *d = gt_rand(r, nd, -1.0f, 1.0f);
    /* starting values (the products accumulate), the CPU's and the GPU's results */
    float *dx0 = gt_rand(r, nx, -1, 1), *du0 = gt_rand(r, nu, -1, 1), *dv0 = gt_rand(r, nv, -1, 1);
    float *dl0 = gt_rand(r, H, -1, 1), *dc0 = gt_rand(r, 1, -1, 1);
    float *dx = gt_rand(r, nx, 0, 0), *du = gt_rand(r, nu, 0, 0), *dv = gt_rand(r, nv, 0, 0);
    float *dl = gt_rand(r, H, 0, 0), dc[1];
    memcpy(dx, dx0, (size_t)nx * sizeof(float)), memcpy(du, du0, (size_t)nu * sizeof(float));
    memcpy(dv, dv0, (size_t)nv * sizeof(float)), memcpy(dl, dl0, (size_t)H * sizeof(float));
    dc[0] = dc0[0];

    dyn_err err = {0};
    dyn_native nat = {0};
    gt_ok(dyn_native_prepare(&nat, s, &err), &err, "dyn_native_prepare");
    dyn_sys_grad g = {du, dv, dl, dc};
    dyn_native_backward(s, &nat, x, cols, d, cols, dx, cols, cols, &g, NULL, 0);
    dyn_native_free(&nat);

    float *xd = gt_upload(ctx, x, nx), *dd = gt_upload(ctx, d, nd), *dxd = gt_upload(ctx, dx0, nx);
    dyn_sys_grad gd = {gt_upload(ctx, du0, nu), gt_upload(ctx, dv0, nv), gt_upload(ctx, dl0, H),
                       gt_upload(ctx, dc0, 1)};
    gt_ok(dyn_cuda_native_backward(ctx, sd, xd, dd, dxd, cols, &gd, &err), &err,
          "dyn_cuda_native_backward");
    float *hx = gt_rand(r, nx, 0, 0), *hu = gt_rand(r, nu, 0, 0), *hv = gt_rand(r, nv, 0, 0);
    float *hl = gt_rand(r, H, 0, 0), hc[1];
    gt_download(ctx, hx, dxd, nx), gt_download(ctx, hu, gd.du, nu), gt_download(ctx, hv, gd.dv, nv);
    gt_download(ctx, hl, gd.dlambda, H), gt_download(ctx, hc, gd.dc, 1);

    const double gs = g_abs_sum(x, d, m, n, cols);
    char line[300];
    const char *names[] = {"dx (transpose)", "du", "dv", "dlambda", "dc"};
    const double errs[] = {gt_rel_delta(hx, dx, dx0, nx, 0), gt_rel_delta(hu, du, du0, nu, 0),
                           gt_rel_delta(hv, dv, dv0, nv, 0), gt_rel_delta(hl, dl, dl0, H, 1e-3 * gs),
                           gt_rel_delta(hc, dc, dc0, 1, 1e-3 * gs / q)};
    for (int k = 0; k < 5; k++) {
        snprintf(line, sizeof line, "%s: backward %s", what, names[k]);
        gt_check(line, "relative L2 error", errs[k], 1e-4);
    }
    dyn_cuda_free(ctx, xd), dyn_cuda_free(ctx, dd), dyn_cuda_free(ctx, dxd);
    dyn_cuda_free(ctx, gd.du), dyn_cuda_free(ctx, gd.dv), dyn_cuda_free(ctx, gd.dlambda);
    dyn_cuda_free(ctx, gd.dc);
    free(d), free(dx0), free(du0), free(dv0), free(dl0), free(dc0), free(dx), free(du), free(dv);
    free(dl), free(hx), free(hu), free(hv), free(hl);
}

static void run_case(dyn_cuda_ctx *ctx, const ncase *nc, dyn_rng *r) {
    const int m = nc->m, n = nc->n, H = nc->H, q = nc->q;
    const int64_t cols = nc->cols, nu = (int64_t)H * q * m, nv = (int64_t)H * q * n;
    float *u = gt_rand(r, nu, 0.0f, 1.0f), *v = gt_rand(r, nv, 0.0f, 1.0f);
    for (int64_t t = 0; nc->grid > 0 && t < nu; t++) u[t] = roundf(u[t] / nc->grid) * nc->grid;
    for (int64_t t = 0; nc->grid > 0 && t < nv; t++) v[t] = roundf(v[t] / nc->grid) * nc->grid;
    for (int64_t t = 0; t < nu; t++) u[t] += nc->shift;
    for (int64_t t = 0; t < nv; t++) v[t] += nc->shift;
    float *lam = gt_rand(r, H, -1.0f, 1.0f);
    dyn_sys s = {m, n, H, q, DYN_KERNEL_L1, u, v, lam, -0.5f};
    float *x = gt_rand(r, (int64_t)n * cols, -1.0f, 1.0f);
    float *y0 = gt_rand(r, (int64_t)m * cols, -1.0f, 1.0f);
    float *yc = gt_rand(r, (int64_t)m * cols, 0, 0), *yg = gt_rand(r, (int64_t)m * cols, 0, 0);
    for (int64_t t = 0; t < (int64_t)m * cols; t++) yc[t] = y0[t];

    dyn_err err = {0};
    dyn_native nat = {0};
    gt_ok(dyn_native_prepare(&nat, &s, &err), &err, "dyn_native_prepare");
    dyn_native_forward(&s, &nat, x, cols, yc, cols, cols, NULL, 0);
    dyn_native_free(&nat);

    dyn_sys sd = s;
    sd.u = gt_upload(ctx, u, nu);
    sd.v = gt_upload(ctx, v, nv);
    sd.lambda = gt_upload(ctx, lam, H);
    float *xd = gt_upload(ctx, x, (int64_t)n * cols), *yd = gt_upload(ctx, y0, (int64_t)m * cols);
    gt_ok(dyn_cuda_native_forward(ctx, &sd, xd, yd, cols, &err), &err, "dyn_cuda_native_forward");
    gt_download(ctx, yg, yd, (int64_t)m * cols);
    for (int64_t t = 0; t < (int64_t)m * cols; t++) {
        yc[t] -= y0[t];
        yg[t] -= y0[t];
    }
    char what[200];
    snprintf(what, sizeof what, "native l1 forward m=%d n=%d H=%d q=%d cols=%lld grid=%g "
             "shift=%g vs CPU native", m, n, H, q, (long long)cols, nc->grid, nc->shift);
    gt_check(what, "relative L2 error", gt_rel_err(yg, yc, (int64_t)m * cols), 1e-4);

    run_backward(ctx, &s, &sd, x, cols, r, what);
    dyn_cuda_free(ctx, (void *)sd.u), dyn_cuda_free(ctx, (void *)sd.v);
    dyn_cuda_free(ctx, (void *)sd.lambda), dyn_cuda_free(ctx, xd), dyn_cuda_free(ctx, yd);
    free(u), free(v), free(lam), free(x), free(y0), free(yc), free(yg);
}

int main(void) {
    dyn_cuda_ctx *ctx = gt_ctx("test_native");
    static const ncase cases[] = {
        {1, 1, 1, 1, 1, 0, 0},        {40, 50, 2, 2, 1, 0, 0},     {300, 200, 2, 4, 7, 0, 0},
        {128, 1000, 4, 4, 64, 0, 0},  {2000, 1500, 1, 16, 3, 0, 0}, {500, 400, 2, 2, 5, 0.05f, 0},
        {300, 301, 2, 3, 9, 0, 100.0f}, {64, 64, 1, 1, 1, 0.25f, 0},
    };
    dyn_rng r;
    dyn_rng_seed(&r, 21);
    for (size_t i = 0; i < DYN_ARRAY_LEN(cases); i++) run_case(ctx, &cases[i], &r);
    dyn_cuda_ctx_free(ctx);
    return gt_finish("test_native");
}
