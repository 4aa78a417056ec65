/* dyn.h — DyN systems: weights as interactions of sub-model states (docs: DYN.md §1–3, 5;
 * design note: engine/dyn/README.md).
 *
 * A *system* couples an output state set A (m sub-models, states u) with an input state set B
 * (n sub-models, states v): H copies, q dimensions, one kernel φ, a strength λ_h per copy and
 * an offset c:
 *
 *     W_ij = c + Σ_h λ_h φ(u_i^h, v_j^h)
 *
 * States are stored [H][q][len] (coordinate-major) so each (h, k) slice — "slice hk = h*q + k"
 * — is contiguous. Three execution paths share this header:
 *   - materialize.c: W from the states (any φ) and the gradient of the states given
 *     G = ∂L/∂W; plain double-precision reference implementations (dyn_sys_ref_*) for tests;
 *   - states.c / native.c: the weight-free (native) path for φ = l1: per-slice sort orders and
 *     ranks, and one generic prefix-sum kernel (dyn_l1_run) that serves the forward, the
 *     transposed product and the forces;
 *   - entropy.c: the structural entropy of the states (DYN.md §5).
 * None of these functions keeps a pointer to its arguments after returning.
 */
#ifndef DYN_DYN_H
#define DYN_DYN_H

#include "../base.h"

typedef enum dyn_kernel {
    DYN_KERNEL_L1,  /* Σ_k |u_k − v_k| */
    DYN_KERNEL_L2,  /* sqrt(Σ_k (u_k − v_k)² + DYN_NORM_EPS2) */
    DYN_KERNEL_INV, /* 1 / (sqrt(Σ_k (u_k − v_k)² + DYN_NORM_EPS2) + DYN_INV_EPS) */
    DYN_KERNEL_COUNT
} dyn_kernel;

/* (choice) ε of the inverse-distance kernel, and the guard inside the Euclidean norm that
 * keeps its gradient finite at u = v. */
#define DYN_INV_EPS 0.1f
#define DYN_NORM_EPS2 1e-12f
/* The grid of the structural entropy and of the paper's robustness noise. */
#define DYN_ENTROPY_DELTA 1e-3

/* "l1" | "l2" | "inv" -> kernel. Returns 0, or -1 for an unknown name. */
int dyn_kernel_parse(const char *s, dyn_kernel *k);
const char *dyn_kernel_name(dyn_kernel k);

/* How a DyN layer executes: natively from the states (l1 only), from a materialized W, or
 * chosen per call by the cost model. */
enum { DYN_EXEC_NATIVE, DYN_EXEC_MATERIALIZED, DYN_EXEC_AUTO, DYN_EXEC_COUNT };
const char *dyn_exec_name(int e);
/* Parses a DyN layer's kernel and exec attribute values (kern_key names the kernel attribute
 * in messages). Returns 0, or DYN_EINVAL / DYN_EUNSUP with a message naming layer `lname`. */
int dyn_mode_parse(const char *lname, const char *kern_key, const char *kern, const char *exec,
                   dyn_kernel *k, int *ex, dyn_err *err);

/* A view of one system's parameters (nothing owned). */
typedef struct dyn_sys {
    int m, n, H, q;
    dyn_kernel kernel;
    const float *u;      /* [H][q][m] output-side states */
    const float *v;      /* [H][q][n] input-side states */
    const float *lambda; /* [H] */
    float c;
} dyn_sys;

/* Gradient outputs of a system; every pointer may be NULL (that gradient is skipped). All are
 * accumulated (+=). */
typedef struct dyn_sys_grad {
    float *du;      /* [H][q][m] */
    float *dv;      /* [H][q][n] */
    float *dlambda; /* [H] */
    float *dc;      /* [1] */
} dyn_sys_grad;

/* ---- materialized execution (materialize.c) ---------------------------------------------- */

/* W[m][n] (row stride n, overwritten) from the states. OpenMP over rows. O(H·q·m·n). */
void dyn_sys_materialize(const dyn_sys *s, float *w);

/* Given G = ∂L/∂W ([m][n], row stride n), accumulates the gradients of the states, λ and c.
 * O(H·q·m·n): one pass over rows (du, dλ, dc), one over column blocks (dv). Allocates only
 * H doubles per thread (aborts if even that fails). */
void dyn_sys_grad_materialized(const dyn_sys *s, const float *g, const dyn_sys_grad *out);

/* ---- reference implementations (materialize.c): plain loops from the definition, double
 * accumulation; slow, for tests. Batch-first layouts. -------------------------------------- */

double dyn_sys_ref_weight(const dyn_sys *s, int i, int j);
/* y[N][m] = x[N][n] Wᵀ (overwritten). */
void dyn_sys_ref_forward(const dyn_sys *s, const float *x, int N, float *y);
/* dx[N][n] = d[N][m] W (overwritten). */
void dyn_sys_ref_transpose(const dyn_sys *s, const float *d, int N, float *dx);
/* Gradients (+=) of L with ∂L/∂y = d[N][m] for y = x Wᵀ, x[N][n]. */
void dyn_sys_ref_grad(const dyn_sys *s, const float *x, const float *d, int N,
                      const dyn_sys_grad *out);

/* ---- sort orders and ranks (states.c) ------------------------------------------------------ */

/* The ascending order of every slice of a state set. Ties are broken by index, so the order
 * is unique and an incremental update equals a full sort exactly. Zero-initialize, then
 * update; release with dyn_sorted_free. */
typedef struct dyn_sorted {
    int nslices, len;
    int32_t *perm;      /* [nslices][len]: perm[s][r] = index of the r-th smallest */
    float *val;         /* [nslices][len]: val[s][r] = x[s][perm[s][r]] */
    int valid;          /* perm holds the order of a previous update (incremental next time) */
    int64_t last_moves; /* element moves made by insertion sorts in the last update */
    int last_full;      /* slices that fell back to a full sort in the last update */
} dyn_sorted;

/* Recomputes the order of x ([nslices][len]). When the previous order is valid and of the
 * same shape, an insertion sort starting from it (abandoned for a radix sort of that slice
 * once the moves exceed about 1/4 per element); otherwise a full sort. `force_full` skips
 * the incremental path. Returns 0 or DYN_ENOMEM (then *s is still valid to free). OpenMP
 * over slices. */
int dyn_sorted_update(dyn_sorted *s, const float *x, int nslices, int len, int force_full,
                      dyn_err *err);
void dyn_sorted_free(dyn_sorted *s);

/* Ranks between two sorted state sets with the same slice count: for the r-th smallest a of
 * slice s, a_lo = #{b < a}, a_hi = #{b <= a} (indexed by sorted position), and the same for
 * each b among the a's. */
typedef struct dyn_ranks {
    int nslices, m, n;
    int32_t *a_lo, *a_hi; /* [nslices][m] */
    int32_t *b_lo, *b_hi; /* [nslices][n] */
} dyn_ranks;

/* aval: [nslices][m] sorted, bval: [nslices][n] sorted (slice by slice). Allocates on first
 * use or shape change. Returns 0 or DYN_ENOMEM. O(nslices·(m+n)), OpenMP over slices. */
int dyn_ranks_update(dyn_ranks *r, const float *aval, const float *bval, int nslices, int m,
                     int n, dyn_err *err);
void dyn_ranks_free(dyn_ranks *r);

/* Random initialization (choice, README "Initialization"): λ_h > 0 from sampled φ statistics
 * so that W has variance `target_var`, shrunk (when fan_in > 0) so that the spread of W's row
 * means does not blow up the outputs for non-negative inputs of that fan-in; returns the
 * offset −E[Σ_h λ_h φ_h] (callers set c to it, or average it over several systems).
 * u: [H][q][m], v: [H][q][n]. With fill_states, the states are drawn here: for l1/l2
 * U(0,1) and then rescaled by dyn_sys_rescale (W unchanged); for inv U(0, R) with R from
 * dyn_sys_init_range. Without, the given states are used as they are. */
float dyn_sys_init(float *u, float *v, float *lambda, int m, int n, int H, int q, dyn_kernel k,
                   double target_var, double fan_in, int fill_states, dyn_rng *rng);

/* l1/l2 are homogeneous of degree 1: scaling the states by R and λ by 1/R leaves W unchanged.
 * Picks R = sqrt(mean |λ|), so that afterwards λ ≈ R: one Adam step of a given size then moves
 * states and λ by the same fraction. (With λ ~50× smaller than the states' range, the coherent
 * drift of λ under Adam collapsed a fresh MLP; README.) Returns R (1 for inv: not homogeneous). */
float dyn_sys_rescale(float *u, int64_t nu, float *v, int64_t nv, float *lambda, int64_t nl,
                      dyn_kernel k);

/* The state range for the inv kernel: the R at which E[φ] equals l1's at its balanced range
 * (E[φ] of inv grows as states get closer, and a step of λ by δ shifts every weight by
 * δ·E[φ]). For l1/l2 it returns that balanced range, R² = sqrt(var/H)/sqrt(q/18). Uses rng. */
double dyn_sys_init_range(int H, int q, dyn_kernel k, double target_var, dyn_rng *rng);

/* ---- native l1 execution (native.c) -------------------------------------------------------- */

/* One generic prefix-sum kernel serves every direction. A "target" set T (M values per slice)
 * meets a "source" set S (N values per slice, sorted); per column c of the source data Xs
 * (row j of length `cols` at xs + j·xs_rs):
 *   OUT:          Y[i][c]  += Σ_hk λ_h Σ_j |t_i − s_j| Xs[j][c]   + offset·Σ_j Xs[j][c]
 *   GRAD_T:       dT[hk][i] += λ_h Σ_c Dt[i][c] Σ_j sign(t_i − s_j) Xs[j][c]   (sign(0) = 0)
 *   GRAD_LAMBDA:  dλ_h     += Σ_k Σ_c Σ_i Dt[i][c] Σ_j |t_i − s_j| Xs[j][c]
 *   doffset (when not NULL, needs dt): += Σ_c (Σ_j Xs[j][c]) (Σ_i Dt[i][c])
 * Forward:  T = A, S = B, Xs = x, OUT (offset = c).
 * Backward: T = A, S = B, Xs = x, Dt = δ: GRAD_T (dA), GRAD_LAMBDA, doffset (dc);
 *           T = B, S = A, Xs = δ, Dt = x: OUT (dX, offset = c), GRAD_T (dB). */
enum { DYN_L1_OUT = 1, DYN_L1_GRAD_T = 2, DYN_L1_GRAD_LAMBDA = 4 };

typedef struct dyn_l1_job {
    int H, q, M, N;
    int64_t cols;
    int flags;
    const float *lambda;   /* [H] */
    const float *t_states; /* [H·q][M] raw target states */
    const int32_t *t_perm; /* [H·q][M] target sort order */
    const float *t_val;    /* [H·q][M] sorted target values */
    const int32_t *t_lo;   /* [H·q][M] #sources <  target (target-sorted order) */
    const int32_t *t_hi;   /* [H·q][M] #sources <= target */
    /* Optional, for the batch-1 forward (OUT, one column), from dyn_native_prepare: the sources
     * of each slice cut into 16 runs of L = ceil(N/16) sorted sources, run k = ranks k·L.., laid
     * out step-major (entry 16·t + k = rank k·L + t; past N: index 0, value 0), so that one
     * vector step advances 16 running sums with no shuffles; and each target's #sources-below
     * in that layout. All three or none. */
    const int32_t *s_perm16; /* [H·q][16·L] source index */
    const float *s_val16;    /* [H·q][16·L] s − μ, μ = s_val[N/2] of the slice */
    const int32_t *t_pos16;  /* [H·q][M] by original target index: 16·t + k where t_lo = k·L + t
                                (t_lo = N = 16·L maps to k = 15, t = L) */
    const int32_t *s_perm; /* [H·q][N] */
    const float *s_val;    /* [H·q][N] */
    const float *xs;       /* source data, row j at xs + j·xs_rs */
    int64_t xs_rs;
    float *y; /* OUT rows, row i at y + i·y_rs (+=) */
    int64_t y_rs;
    float offset;
    const float *dt; /* target-side data for the gradients, row i at dt + i·dt_rs */
    int64_t dt_rs;
    float *dT;      /* GRAD_T: [H·q][M] (+=) */
    float *dlambda; /* GRAD_LAMBDA: [H] (+=) */
    float *doffset; /* [1] (+=) or NULL */
    float *ws;      /* workspace of ws_floats floats (64-byte aligned); allocated when short */
    size_t ws_floats;
} dyn_l1_job;

/* Floats of workspace dyn_l1_run needs (for the current thread count). */
size_t dyn_l1_ws_floats(int H, int q, int M, int N, int64_t cols, int flags);
/* Runs a job; OpenMP inside (over column tiles, or over slices when there are few columns). */
void dyn_l1_run(const dyn_l1_job *job);

/* The orders of one linear system (u vs v). Zero-initialize; free with dyn_native_free. */
typedef struct dyn_native {
    dyn_sorted su, sv;
    dyn_ranks r;
    /* The batch-1 forward's layout of the v side and u's positions in it (dyn_l1_job's
     * s_perm16, s_val16, t_pos16) */
    int32_t *perm16, *pos16;
    float *val16;
    int64_t len16, lenpos;
} dyn_native;

/* Recomputes orders and ranks after the states changed (kernel must be l1). */
int dyn_native_prepare(dyn_native *nat, const dyn_sys *s, dyn_err *err);
void dyn_native_free(dyn_native *nat);
/* Integer/float words the orders hold: 4·H·q·(m+n), plus H·q·(m + 2·16·ceil(n/16)) for the
 * batch-1 forward's layout. */
int64_t dyn_native_aux_words(const dyn_sys *s);

/* Feature-major (column = sample) native products; ws may be NULL.
 * y[m][cols] += W x (x [n][cols]; row strides ldx, ldy). */
void dyn_native_forward(const dyn_sys *s, const dyn_native *nat, const float *x, int64_t ldx,
                        float *y, int64_t ldy, int64_t cols, float *ws, size_t ws_floats);
/* With d = ∂L/∂y [m][cols]: dx[n][cols] += Wᵀ d when dx is not NULL, and the gradients in g
 * (+=). */
void dyn_native_backward(const dyn_sys *s, const dyn_native *nat, const float *x, int64_t ldx,
                         const float *d, int64_t ldd, float *dx, int64_t lddx, int64_t cols,
                         const dyn_sys_grad *g, float *ws, size_t ws_floats);
/* Workspace that makes forward and backward allocation-free. */
size_t dyn_native_ws_floats(const dyn_sys *s, int64_t cols);

/* dst[cols][rows] = transpose of src[rows][cols] (both contiguous). Blocked, OpenMP. */
void dyn_transpose(const float *src, int64_t rows, int64_t cols, float *dst);

/* ---- choosing the execution (native.c; constants measured by tests/bench/bench_dyn.c and
 * documented in README.md) ------------------------------------------------------------------ */

/* Estimated seconds for one product of `cols` columns:
 *   native: slice_elems = H·q·(m+n) summed over the systems of the layer;
 *   dense:  macs_per_col = m·n (per column), w_floats = floats of W streamed once per call. */
double dyn_cost_native_s(int64_t slice_elems, int64_t cols);
double dyn_cost_dense_s(int64_t macs_per_col, int64_t w_floats, int64_t cols);
/* 1 when native is estimated faster at this batch. */
int dyn_cost_native_wins(int64_t slice_elems, int64_t macs_per_col, int64_t w_floats,
                         int64_t cols);
/* 1 when native is estimated faster at every batch (then "auto" never needs W). */
int dyn_cost_native_always(int64_t slice_elems, int64_t macs_per_col);

/* The model's constants (nanoseconds, one thread). */
typedef struct dyn_cost_consts {
    double native_ns_per_elem_col, native_ns_per_elem, dense_ns_per_mac, dense_ns_per_wfloat;
    double dense_conv_ns_per_mac; /* a dense convolution at inference (oneDNN) */
} dyn_cost_consts;
/* The same decisions for a convolution (dyn_conv2d): its dense side is oneDNN's convolution,
 * compute-bound at every batch (N·OH·OW columns). */
int dyn_cost_conv_native_wins(int64_t slice_elems, int64_t macs_per_col, int64_t cols);
int dyn_cost_conv_native_always(int64_t slice_elems, int64_t macs_per_col);
/* Measures the constants on this machine (about 50 ms, one thread: a native product at 1 and
 * 64 columns, an sgemm and a GEMV) and uses them from then on for every decision made after
 * it (layers decide when created and loaded: call it before loading models). A measured value
 * more than 16x off the built-in one keeps the built-in one. Not thread-safe against
 * concurrent decisions: call it at start. Fills *out (may be NULL); 0 or DYN_ENOMEM. */
int dyn_cost_calibrate(dyn_cost_consts *out, dyn_err *err);
/* The constants in use; back to the built-in ones (what the library starts with). */
void dyn_cost_get(dyn_cost_consts *out);
void dyn_cost_reset(void);

/* ---- structural entropy (entropy.c) -------------------------------------------------------- */

/* Shannon entropy in bits of the values of `narrays` arrays taken together, each value
 * quantized to floor(x / delta). Non-finite values count as one symbol each of ±inf / nan.
 * Returns the entropy (0 for no values) or a negative number when allocation fails. */
double dyn_entropy_bits(int narrays, const float *const *arrays, const int64_t *lens,
                        double delta);

#endif
