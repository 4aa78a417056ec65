/* fit_cuda.c — the data-free l1 fit's Adam steps on the GPU (convert_impl.h "the fitting steps
 * on the GPU"; issue 13). fit.c keeps the fit's logic (initialization, schedule, plateau,
 * trace, rounding and the closed-form λ, c) and hands each step's gradient and update here when
 * the fit runs on cuda (dyn_fit_opts.device).
 *
 * Device memory (from the context's pool, all freed by dyn__fit_gpu_free): θ, its gradient and
 * the two moments (np floats each), the permuted dense weight and Ŵ / G (K²·m·n floats each),
 * the gradient's scratch (Gᵀ of one system, (H + 1)·n partial sums). The state gradient is
 * dyn_cuda_fit_grad_l1's (reads coalesced, sums in a fixed order: a GPU fit is reproducible).
 * Plain C: the kernels are dyn_cuda.h's and dyn_cuda_dyn.h's (stubs without CUDA=1, where
 * dyn__fit_gpu_new fails with DYN_EUNSUP and the fit stays on the CPU).
 */
#include <stdio.h>
#include <stdlib.h>

#include "../cuda/dyn_cuda_dyn.h"
#include "convert_impl.h"

struct dyn_fit_gpu {
    dyn_cuda_ctx *ctx;
    int own_ctx;
    int m, n, K, H, q;
    int64_t np, blk; /* θ's floats; m·n (one system's block) */
    float *th, *grad, *m1, *m2; /* [np] */
    float *wp, *what;           /* [K²][m][n]: the dense weight; Ŵ, then G in place */
    float *gt, *part;           /* scratch of the gradient: Gᵀ [n][m], partials [H + 1][n] */
    char name[280];
};

void dyn__fit_gpu_free(dyn_fit_gpu *g) {
    if (!g) return;
    float *ps[] = {g->th, g->grad, g->m1, g->m2, g->wp, g->what, g->gt, g->part};
    for (size_t i = 0; i < DYN_ARRAY_LEN(ps); i++) dyn_cuda_free(g->ctx, ps[i]);
    if (g->own_ctx) dyn_cuda_ctx_free(g->ctx);
    free(g);
}

int dyn__fit_gpu_new(struct dyn_cuda_ctx *ctx, int m, int n, int K, int H, int q,
                     const float *wp, dyn_fit_gpu **out, dyn_err *err) {
    *out = NULL;
    dyn_fit_gpu *g = calloc(1, sizeof *g);
    if (!g) return dyn_err_set(err, DYN_ENOMEM, "GPU fit: out of memory");
    g->m = m, g->n = n, g->K = K, g->H = H, g->q = q;
    const int64_t hq = (int64_t)H * q, K2 = (int64_t)K * K;
    g->np = K * hq * ((int64_t)m + n) + K2 * H + 1;
    g->blk = (int64_t)m * n;
    g->ctx = ctx;
    int dev = 0;
    if (!g->ctx) {
        g->ctx = dyn_cuda_ctx_new(dev, err);
        if (!g->ctx) {
            free(g);
            return err ? err->code : DYN_EUNSUP;
        }
        g->own_ctx = 1;
    }
    dyn_cuda_info info;
    snprintf(g->name, sizeof g->name, "cuda");
    dyn_err ierr = {0};
    if (g->own_ctx && !dyn_cuda_device_info(dev, &info, &ierr))
        snprintf(g->name, sizeof g->name, "cuda:%d %s", dev, info.name);
    int rc = 0;
    float **arrs[] = {&g->th, &g->grad, &g->m1, &g->m2, &g->wp, &g->what, &g->gt, &g->part};
    const int64_t sizes[] = {g->np, g->np, g->np, g->np, K2 * g->blk, K2 * g->blk, g->blk,
                             ((int64_t)H + 1) * n};
    for (size_t i = 0; !rc && i < DYN_ARRAY_LEN(arrs); i++)
        rc = dyn_cuda_alloc(g->ctx, (size_t)sizes[i] * sizeof(float), (void **)arrs[i], err);
    if (!rc)
        rc = dyn_cuda_upload(g->ctx, g->wp, wp, (size_t)(K2 * g->blk) * sizeof(float), err);
    if (rc) {
        dyn__fit_gpu_free(g);
        return dyn_err_prefix(err, "GPU fit of a %d×%d×%d² weight", m, n, K);
    }
    *out = g;
    return 0;
}

const char *dyn__fit_gpu_name(const dyn_fit_gpu *g) { return g->name; }

int dyn__fit_gpu_begin(dyn_fit_gpu *g, const float *th, dyn_err *err) {
    int rc;
    if ((rc = dyn_cuda_upload(g->ctx, g->th, th, (size_t)g->np * sizeof(float), err)) ||
        (rc = dyn_cuda_dyn_zero(g->ctx, g->m1, g->np, err)) ||
        (rc = dyn_cuda_dyn_zero(g->ctx, g->m2, g->np, err)))
        return rc;
    return 0;
}

int dyn__fit_gpu_grad(dyn_fit_gpu *g, double *loss, dyn_err *err) {
    const int K = g->K;
    const int64_t tot = (int64_t)K * K * g->blk;
    /* the loss ‖E‖² / tot and G = ∂loss/∂Ŵ = gs·E, gs = 2 / tot (fit.c fp_loss) */
    const float gs = (float)(2.0 / (double)tot);
    int rc = 0;
    for (int x = 0; !rc && x < K * K; x++) {
        const dyn_sys s = dyn__fit_sys(g->m, g->n, K, g->H, g->q, DYN_KERNEL_L1, g->th, x / K,
                                       x % K, 0.0f);
        rc = dyn_cuda_materialize(g->ctx, &s, g->what + x * g->blk, err);
    }
    if (rc || (rc = dyn_cuda_fit_residual(g->ctx, g->what, g->th + g->np - 1, g->wp, gs, tot,
                                          g->what, err)))
        return rc;
    if (loss) {
        double ss = 0;
        if ((rc = dyn_cuda_fit_sumsq(g->ctx, g->what, tot, &ss, err))) return rc;
        *loss = ss / ((double)gs * gs) / (double)tot;
    }
    if ((rc = dyn_cuda_dyn_zero(g->ctx, g->grad, g->np, err))) return rc;
    for (int x = 0; !rc && x < K * K; x++) {
        /* the gradient has θ's layout: system (r, t)'s pointers into it are its du, dv, dλ */
        const dyn_sys s = dyn__fit_sys(g->m, g->n, K, g->H, g->q, DYN_KERNEL_L1, g->th, x / K,
                                       x % K, 0.0f);
        const dyn_sys sg = dyn__fit_sys(g->m, g->n, K, g->H, g->q, DYN_KERNEL_L1, g->grad, x / K,
                                        x % K, 0.0f);
        const dyn_sys_grad d = {.du = (float *)sg.u, .dv = (float *)sg.v,
                                .dlambda = (float *)sg.lambda, .dc = g->grad + g->np - 1};
        rc = dyn_cuda_fit_grad_l1(g->ctx, &s, g->what + x * g->blk, g->gt, g->part, &d, err);
    }
    return rc;
}

int dyn__fit_gpu_adam(dyn_fit_gpu *g, int64_t from, float lr, float bc1, float bc2,
                      dyn_err *err) {
    return dyn_cuda_fit_adam(g->ctx, lr, 0.9f, 0.999f, bc1, bc2, 1e-12f, g->grad + from,
                             g->m1 + from, g->m2 + from, g->th + from, g->np - from, err);
}

int dyn__fit_gpu_end(dyn_fit_gpu *g, float *th, dyn_err *err) {
    return dyn_cuda_download(g->ctx, th, g->th, (size_t)g->np * sizeof(float), err);
}

int dyn__fit_gpu_grad_get(dyn_fit_gpu *g, float *grad, dyn_err *err) {
    return dyn_cuda_download(g->ctx, grad, g->grad, (size_t)g->np * sizeof(float), err);
}
