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

#endif
