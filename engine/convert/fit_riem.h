/* fit_riem.h — a RieM-style form of a weight matrix, fitted data-free (DYN.md §4 "The authors'
 * follow-up"; issue 9 item 5). The fit has its own gradient; layer "riem" (riem_layer.c) stores
 * a fitted form and runs it materialized, frozen (no gradient for the form's parameters).
 *
 * The form (what this file implements; a simplification of Pei & Wang's RieM, ICML 2024): a
 * weight W [m][nk] (convert.h's layout; a conv2d flattened to [Cout][Cin·K·K]) is
 *
 *     Ŵ_ij = s · ( β₀ + Σ_{d<D} w_d Σ_{c<6} σ( A_c[d] · (x_i + roll_c(y_j)) + b_c[d] ) )
 *
 * with row states x_i ∈ R^q, column states y_j ∈ R^q, roll_c(y)[k] = y[(k + c) mod q] (the
 * "shift" of the c-th unit group: a cyclic shift of the coordinates, so that the six groups
 * pair different coordinates of x and y), a shared "metric" of 6·D sigmoid units (A_c[d] ∈ R^q,
 * b_c[d]) read out by D weights w_d, an offset β₀, and s = the rms of W, a constant that keeps
 * every parameter O(1) for Adam (folded into w and β₀ when stored, so it is not counted).
 * Stored floats: q·(m + nk) + 6·D·q + 6·D + D + 1.
 *
 * The fit: full-batch Adam on mean (Ŵ − W)² from random states (x, y ~ N(0, 1), A ~
 * N(0, 1/(2q)), b = 0, w ~ N(0, 1/D), β₀ = mean W / s), with restarts (each candidate runs a
 * tenth of the steps; the best continues), cosine learning-rate decay to 1 %. One step costs
 * about m·nk·6·D sigmoid evaluations (z_ijcd = P_icd + Q_jcd with P = x Aᵀ + b, Q = roll(y) Aᵀ).
 *
 * Errors follow base.h: 0 or a negative DYN_E* code with err set.
 */
#ifndef DYN_FIT_RIEM_H
#define DYN_FIT_RIEM_H

#include "convert.h"

#define DYN_RIEM_GROUPS 6

typedef struct dyn_riem {
    int m, nk, q, D;
    /* θ, one contiguous array (owned): x [m][q] | y [nk][q] | A [6][D][q] | b [6][D] | w [D] |
     * β₀; then the constant scale s (not fitted) */
    float *theta;
    float scale;
} dyn_riem;

typedef struct dyn_riem_opts {
    int steps;      /* Adam steps of the main run (default 3000) */
    int restarts;   /* candidates, each run for steps / 10 (default 4) */
    float lr;       /* Adam learning rate (default 0.02) */
    uint64_t seed;
    const volatile int *cancel; /* polled every step; may be NULL */
} dyn_riem_opts;

dyn_riem_opts dyn_riem_opts_default(void);

/* Stored floats of the form: q·(m + nk) + 6·D·q + 6·D + D + 1. */
int64_t dyn_riem_floats(int m, int nk, int q, int D);
/* The largest q ≥ 1 whose form has at most `floats` floats; 0 when even q = 1 does not fit. */
int dyn_riem_q_for_floats(int m, int nk, int D, int64_t floats);

/* Fits the form of width q with D metric units per group to W [m][nk] (borrowed). r is
 * initialized here (free with dyn_riem_free, also after a failure). rel_err: ‖Ŵ − W‖/‖W‖ of
 * the result (may be NULL). Returns 0, DYN_ECANCEL (r holds the last states), DYN_EINVAL (bad
 * sizes), DYN_ENOMEM. */
int dyn_riem_fit(const float *w, int m, int nk, int q, int D, const dyn_riem_opts *o,
                 dyn_riem *r, double *rel_err, dyn_err *err);

/* Ŵ of the form into out [m][nk] (the formula above, evaluated in float with the exact
 * sigmoid 1 / (1 + exp(−z))). */
void dyn_riem_materialize(const dyn_riem *r, float *out);

/* Mean squared error (Ŵ − W)² / (m·nk) of the form in the fit's units (W / s) and its
 * gradient with respect to θ into grad (as many floats as θ; may be NULL) — for the tests'
 * finite-difference check. */
double dyn_riem_loss(const dyn_riem *r, const float *w, float *grad);

void dyn_riem_free(dyn_riem *r);

/* A conv2d weight [Cout = m][Cin = n][K][K] as the matrix [m·K][n·K] with rows (o, r) and
 * columns (i, t) (inverse = 0), or back (inverse = 1); w and out do not overlap. On LeNet's
 * conv2 the form fits this layout better than [m][n·K²] (CONVERT.md): more q for the floats,
 * and rows / columns that share kernel rows and columns. */
void dyn_riem_conv_rows(const float *w, int m, int n, int K, int inverse, float *out);

/* The dense model `dense` with every layer that `rep` (dyn_convert's report for that model)
 * marks converted replaced by a RieM form fitted data-free with at most that layer's DyN
 * weight floats (K·H·q·(m + n) + K²·H + 1; a conv in the [Cout·K][Cin·K] layout), D metric
 * units per group, options o — the form at equal floats, materialized into dense weights (for
 * accuracy; dyn_riem_convert stores the form itself). rel_err: NULL or
 * rep->nlayers values (−1 where not converted or no q fits, then the layer stays as it is).
 * *out new (dyn_model_free), NULL on failure. Returns 0, DYN_EINVAL (report and model differ),
 * DYN_ECANCEL, DYN_ENOMEM. About m·nk·6·D sigmoid evaluations per step and layer. */
int dyn_riem_model(const dyn_model *dense, const dyn_convert_report *rep, int D,
                   const dyn_riem_opts *o, double *rel_err, dyn_model **out, dyn_err *err);

/* Like dyn_riem_model, but each converted layer becomes a "riem" layer (the form stored as its
 * parameters: the saved model file holds the form's floats, not the dense weight); layers
 * where no q fits stay as they are. *out new and prepared (dyn_model_free). Same errors. */
int dyn_riem_convert(const dyn_model *dense, const dyn_convert_report *rep, int D,
                     const dyn_riem_opts *o, double *rel_err, dyn_model **out, dyn_err *err);

/* A new layer "riem" (riem_layer.c: the form stored as its parameters, materialized at
 * prepare, frozen) replacing the dense linear / conv2d `dense` (borrowed; its attributes and
 * bias are copied) with the fitted form r (r->m × r->nk must be out × in, or Cout·K × Cin·K
 * for a conv, the layout of dyn_riem_conv_rows; r's scale is folded into w and β₀). *out is
 * prepared (dyn_layer_free). Returns 0, DYN_EINVAL (shapes differ), DYN_EUNSUP (not a linear /
 * square conv), DYN_ENOMEM. */
int dyn_riem_layer_from_fit(const dyn_layer *dense, const dyn_riem *r, dyn_layer **out,
                            dyn_err *err);

#endif
