/* convert_impl.h — internal to engine/convert (and its tests): not a public API. */
#ifndef DYN_CONVERT_IMPL_H
#define DYN_CONVERT_IMPL_H

#include "convert.h"

/* The fitting loss at dl's current parameters θ = [u|v|λ|c] (layout of convert.h) against the
 * dense weight w, activation-aware (act = 1, fd->cov required; sequential with fd->cross) or
 * data-free (fd may be NULL); when grad is not
 * NULL it receives ∂loss/∂θ (np floats: numel(u) + numel(v) + numel(λ) + 1). Returns the
 * loss (the sequential one may be negative: it omits a constant), or NaN with err set. For gradient checks. */
double dyn__fit_loss(dyn_layer *dl, const float *w, const dyn_fit_data *fd, int act, float *grad,
                     dyn_err *err);

/* The fused data-free l1 loss (fit.c's algo 0 pass, q any, linear or conv) at dl's current θ,
 * with its gradient when grad is not NULL. rows: NULL for all rows, else nrows distinct
 * ascending row indices: the sampled estimate (loss and the shared gradients scaled by
 * m / nrows, du of the other rows 0). Returns the loss, or NaN with err set (not l1, ENOMEM).
 * For the tests against dyn__fit_loss. */
double dyn__fit_loss_l1(dyn_layer *dl, const float *w, const int *rows, int nrows, float *grad,
                        dyn_err *err);

/* System (r, t) of a fit's θ = [u | v | λ | c] (the layout of convert.h) for a layer of shape
 * m, n, K, H, q: its pointers point into th (host or device memory: nothing is read) and its
 * offset is c. fit.c and the GPU fit (fit_cuda.c) share it. */
dyn_sys dyn__fit_sys(int m, int n, int K, int H, int q, dyn_kernel kern, const float *th, int r,
                     int t, float c);

/* ---- the fitting steps on the GPU (fit_cuda.c) ----------------------------------------------
 * The data-free l1 fit's Adam loop (fit.c adam_run, fast path) with θ, its gradient and the
 * moments on the device: per step, per system Ŵ_rt by dyn_cuda_materialize (c = 0), the
 * residual G = gs·(Ŵ + c − W) over all K² blocks (c read on the device), the gradient by
 * dyn_cuda_fit_grad_l1 per system, then the Adam update. Every row every step (no row
 * sampling: the GPU is not short of throughput). Functions return 0 or a DYN_E* code with err
 * set (DYN_EUNSUP without CUDA or GPU). */
typedef struct dyn_fit_gpu dyn_fit_gpu;

/* A GPU fit for the problem m, n, K, H, q (l1) with the dense weight permuted into the K²
 * per-system blocks wp [K²][m][n] (fit.c's fitp.wp; uploaded here, not kept). ctx: the context
 * to use (borrowed), or NULL: one on device 0 owned by the fit. *out: free with
 * dyn__fit_gpu_free. */
int dyn__fit_gpu_new(struct dyn_cuda_ctx *ctx, int m, int n, int K, int H, int q,
                     const float *wp, dyn_fit_gpu **out, dyn_err *err);
void dyn__fit_gpu_free(dyn_fit_gpu *g);
/* The device's name ("cuda:0 NVIDIA H200") for reports; never fails. */
const char *dyn__fit_gpu_name(const dyn_fit_gpu *g);
/* Uploads θ (np floats) and zeroes the moments: the start of an Adam run. */
int dyn__fit_gpu_begin(dyn_fit_gpu *g, const float *th, dyn_err *err);
/* The gradient at the device θ; with loss != NULL also the loss ‖Ŵ − W‖² / (m·n·K²) (waits
 * for the device). */
int dyn__fit_gpu_grad(dyn_fit_gpu *g, double *loss, dyn_err *err);
/* One Adam step of the coordinates [from, np) (fit.c's formula, eps 1e-12). */
int dyn__fit_gpu_adam(dyn_fit_gpu *g, int64_t from, float lr, float bc1, float bc2,
                      dyn_err *err);
/* Downloads θ into th (np floats; waits for the device). */
int dyn__fit_gpu_end(dyn_fit_gpu *g, float *th, dyn_err *err);
/* Downloads the last dyn__fit_gpu_grad's gradient into grad (np floats; for the GPU tests). */
int dyn__fit_gpu_grad_get(dyn_fit_gpu *g, float *grad, dyn_err *err);

#endif
