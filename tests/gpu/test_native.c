/* test_native.c — dyn_cuda_native_forward (CUB sort + scans) against dyn_native_forward (the
 * CPU's native l1 kernel) on shapes from 1x1 to 2000x1500 with 1 to 64 columns, states with
 * many ties (a coarse grid: lo < hi in the ranks), and states far from 0 (the median shift).
 * y starts from random values: both add W x to them.
 *
 * Tolerance (as tests/unit/test_dyn.c holds the CPU native path to its reference):
 * ||Δ_gpu − Δ_cpu||_2 / ||Δ_cpu||_2 <= 1e-4, Δ = y after − y before. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "dyn/dyn.h"
#include "gpu_util.h"

typedef struct ncase {
    int m, n, H, q;
    int64_t cols;
    float grid;  /* > 0: states rounded to multiples of grid (ties) */
    float shift; /* added to every state */
} ncase;

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
