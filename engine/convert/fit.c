/* fit.c — fitting the states of one DyN layer to a dense weight (convert.h).
 *
 * The problem. A layer is K² systems (r, t) sharing the state sets A_r (u) and B_t (v) and
 * the offset c; θ = [u | v | λ | c] is one contiguous vector here. Each step reconstructs
 * Ŵ (dyn_sys_materialize per system, scattered into the [m][n·K²] layout), forms the error
 * E = Ŵ − W and the gradient G = ∂loss/∂Ŵ:
 *   fixed:       loss = ‖E‖²_F / (m·n·K²),            G = 2E / (m·n·K²)
 *   activation:  loss = tr(E C Eᵀ) / (m·n·K²),        G = 2 E C / (m·n·K²)
 * then dyn_sys_grad_materialized per system turns G into the gradient of θ, and Adam moves θ
 * (learning rate `lr` × the state range, cosine decay to 1 % — choice). Cost per step:
 * O(K²·H·q·m·n), plus one m×(nK²)² GEMM for the activation-aware loss.
 *
 * The fast path (algo 0, data-free l1 — the default; issue 9): fp_loss_l1 does the same in one
 * pass per row (Ŵ's row, E, loss, du, dλ, dc, and per-thread dv sums), W pre-permuted into
 * per-system blocks, optionally on a random subset of the rows per step (sample); the main
 * Adam may stop on a plateau; after rounding, λ and c are re-solved by least squares (kept
 * when better) instead of refitted by Adam. Same cost order, less CPU per step (CONVERT.md).
 *
 * Initialization (choice; measurements in tests/experiments/CONVERT.md): states U(0,1)
 * (inv: dyn_sys_init_range), then either λ from φ statistics (RANDOM) or λ and c in closed
 * form (LSQ: per system the least-squares [λ_rt, c_rt], then one shared c = mean c_rt and λ
 * re-solved with c fixed), then the balanced rescale (dyn_sys_rescale). With restarts > 1
 * several candidates run a short Adam and the best continues.
 *
 * Quantization: states rescaled to unit standard deviation (l1/l2 are homogeneous, so W does
 * not change), floor(x/δ)·δ, then λ and c refit with the states frozen: by Adam (algo 1) or
 * in closed form (algo 0).
 */
#include <math.h>
#include <string.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#include "../cpu/par.h"
#include "../cuda/kern_dyn.h"
#include "convert_impl.h"

/* LAPACK (OpenBLAS exports it; Fortran calling convention). */
extern void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda,
                    double *s, double *u, const int *ldu, double *vt, const int *ldvt,
                    double *work, const int *lwork, int *iwork, int *info);

int dyn_fit_mode_parse(const char *s, dyn_fit_mode *f) {
    if (strcmp(s, "fixed") == 0) *f = DYN_FIT_FIXED;
    else if (strcmp(s, "activation") == 0) *f = DYN_FIT_ACTIVATION;
    else return -1;
    return 0;
}

const char *dyn_fit_mode_name(dyn_fit_mode f) {
    return f == DYN_FIT_ACTIVATION ? "activation" : "fixed";
}

int dyn_fit_init_parse(const char *s, dyn_fit_init *i) {
    static const char *names[] = {"random", "lsq", "svd"};
    for (int k = 0; k < DYN_INIT_COUNT; k++)
        if (strcmp(s, names[k]) == 0) {
            *i = (dyn_fit_init)k;
            return 0;
        }
    return -1;
}

const char *dyn_fit_init_name(dyn_fit_init i) {
    return i == DYN_INIT_SVD ? "svd" : i == DYN_INIT_LSQ ? "lsq" : "random";
}

dyn_fit_opts dyn_fit_opts_default(void) {
    dyn_fit_opts o = {.steps = 2000, .lr = 0.1f, .init = DYN_INIT_SVD, .restarts = 1,
                      .quant = 1e-3, .quant_steps = -1, .seed = 1, .algo = 0,
                      .sample = 0.5, .sample_min_rows = 256, .plateau = 0};
    return o;
}

/* ---- shapes and budgets --------------------------------------------------------------------- */

static int attr_i(const json_t *a, const char *k, int def) {
    const json_t *v = json_object_get(a, k);
    return json_is_integer(v) ? (int)json_integer_value(v) : def;
}

/* A square attribute: `key`, or equal `key_h` and `key_w`; -1 when they differ. */
static int attr_sq(const json_t *a, const char *key, int def) {
    char kh[32], kw[32];
    snprintf(kh, sizeof kh, "%s_h", key);
    snprintf(kw, sizeof kw, "%s_w", key);
    if (json_object_get(a, key)) return attr_i(a, key, def);
    int h = attr_i(a, kh, def), w = attr_i(a, kw, def);
    return h == w ? h : -1;
}

int dyn_layer_fit_shape(const dyn_layer *l, int *m, int *n, int *K, dyn_err *err) {
    const char *op = l->ops->name;
    int lin = strcmp(op, "linear") == 0 || strcmp(op, "dyn_linear") == 0;
    int conv = strcmp(op, "conv2d") == 0 || strcmp(op, "dyn_conv2d") == 0;
    if (!lin && !conv)
        return dyn_err_set(err, DYN_EUNSUP, "layer '%s' (%s) is not a linear or conv2d layer",
                           l->name, op);
    json_t *a = l->ops->attrs(l);
    if (!a) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    int rc = 0;
    if (lin) {
        *m = attr_i(a, "out", 0);
        *n = attr_i(a, "in", 0);
        *K = 1;
    } else {
        *m = attr_i(a, "out_channels", 0);
        *n = attr_i(a, "in_channels", 0);
        *K = attr_sq(a, "kernel", -1);
        if (*K < 1 || attr_sq(a, "stride", 1) < 1 || attr_sq(a, "padding", 0) < 0 ||
            attr_sq(a, "dilation", 1) < 1)
            rc = dyn_err_set(err, DYN_EUNSUP,
                             "layer '%s': non-square kernel, stride, padding or dilation "
                             "(dyn_conv2d takes one value each)",
                             l->name);
        else if (attr_i(a, "groups", 1) != 1)
            rc = dyn_err_set(err, DYN_EUNSUP,
                             "layer '%s': grouped convolution (groups = %d); DyN conv supports "
                             "groups = 1",
                             l->name, attr_i(a, "groups", 1));
    }
    json_decref(a);
    if (!rc && (*m < 1 || *n < 1))
        rc = dyn_err_set(err, DYN_EINVAL, "layer '%s': missing in/out attributes", l->name);
    return rc;
}

int64_t dyn_convert_floats(int m, int n, int K, int H, int q) {
    return (int64_t)K * H * q * ((int64_t)m + n) + (int64_t)K * K * H + 1;
}

int dyn_convert_budget_H(int m, int n, int K, int q, double ratio) {
    if (!(ratio > 0) || q < 1) return 0;
    const double budget = (double)m * n * K * K / ratio;
    const double per_h = (double)K * q * ((double)m + n) + (double)K * K;
    double h = floor((budget - 1) / per_h);
    return h < 1 ? 0 : (int)DYN_MIN(h, 4096.0);
}

/* ---- SVD baseline ---------------------------------------------------------------------------- */

int dyn_svd_values(const float *a, int m, int n, double *s, dyn_err *err) {
    /* The row-major m×n matrix is the column-major n×m matrix aᵀ: same singular values. */
    const int M = n, N = m, lda = n, mn = DYN_MIN(m, n), one = 1;
    double *A = malloc((size_t)m * n * sizeof(double));
    int *iw = malloc((size_t)8 * mn * sizeof(int));
    if (!A || !iw) {
        free(A);
        free(iw);
        return dyn_err_set(err, DYN_ENOMEM, "SVD of a %d×%d matrix: out of memory", m, n);
    }
    for (int64_t i = 0; i < (int64_t)m * n; i++) A[i] = a[i];
    double wq = 0, du = 0;
    int lwork = -1, info = 0;
    dgesdd_("N", &M, &N, A, &lda, s, &du, &one, &du, &one, &wq, &lwork, iw, &info);
    lwork = info == 0 ? (int)wq + 1 : 0;
    double *work = lwork > 0 ? malloc((size_t)lwork * sizeof(double)) : NULL;
    if (work) dgesdd_("N", &M, &N, A, &lda, s, &du, &one, &du, &one, work, &lwork, iw, &info);
    free(work);
    free(A);
    free(iw);
    if (lwork <= 0 || !work)
        return dyn_err_set(err, lwork > 0 ? DYN_ENOMEM : DYN_EINVAL,
                           "SVD of a %d×%d matrix failed (workspace)", m, n);
    if (info != 0)
        return dyn_err_set(err, DYN_EINVAL, "SVD of a %d×%d matrix failed (LAPACK info %d)", m,
                           n, info);
    return 0;
}

double dyn_svd_tail_rel_err(const double *s, int ns, int r) {
    double tot = 0, tail = 0;
    for (int i = 0; i < ns; i++) {
        tot += s[i] * s[i];
        if (i >= r) tail += s[i] * s[i];
    }
    return tot > 0 ? sqrt(tail / tot) : 0.0;
}

/* Thin SVD of the row-major m×n matrix a: left vectors L (column c of a's left singular
 * vectors at L[c + i·k], k = min(m, n)), right vectors R (R[j + c·n]), values s. The three
 * arrays are new (free each); returns 0 or -1 on failure. */
static int svd_vectors(const float *a, int m, int n, double **L, double **R, double **s) {
    const int M = n, N = m, k = DYN_MIN(m, n);
    double *A = malloc((size_t)m * n * sizeof(double));
    int *iw = malloc((size_t)8 * k * sizeof(int));
    *R = malloc((size_t)n * k * sizeof(double)); /* U' of aᵀ: n × k */
    *L = malloc((size_t)k * m * sizeof(double)); /* V'ᵀ of aᵀ: k × m */
    *s = malloc((size_t)k * sizeof(double));
    double *work = NULL, wq = 0;
    int lwork = -1, info = -1;
    if (A && iw && *R && *L && *s) {
        for (int64_t i = 0; i < (int64_t)m * n; i++) A[i] = a[i];
        dgesdd_("S", &M, &N, A, &M, *s, *R, &M, *L, &k, &wq, &lwork, iw, &info);
        lwork = info == 0 ? (int)wq + 1 : 0;
        work = lwork > 0 ? malloc((size_t)lwork * sizeof(double)) : NULL;
        info = -1;
        if (work) dgesdd_("S", &M, &N, A, &M, *s, *R, &M, *L, &k, work, &lwork, iw, &info);
    }
    free(A);
    free(iw);
    free(work);
    if (info != 0) {
        free(*R);
        free(*L);
        free(*s);
        *R = *L = *s = NULL;
        return -1;
    }
    return 0;
}

/* ---- the fitting problem ------------------------------------------------------------------- */

typedef struct fitp {
    int m, n, K, H, q, nk; /* nk = n·K² (columns of the dense weight) */
    dyn_kernel kern;
    int64_t nu, nv, nl, np; /* sizes of u, v, λ; np = total (+1 for c) */
    const float *w, *cov; /* cov may be given for the output error only (act = 0) */
    int act;              /* activation-aware loss */
    float *dlin;          /* sequential: D = W C̃ − W Cx ([m][nk], owned), else NULL */
    double k0;            /* sequential: the constant of the output error */
    double wnorm2, wcw;   /* ‖W‖², tr(W Cxx Wᵀ) (the dense output energy) */
    float *e, *g;       /* [m][nk] */
    float *tmp;         /* [m][n] per-system W or G */
    /* the fused data-free l1 path (algo 0; fp_loss_l1) */
    int fast;           /* use it */
    int nthr;           /* threads (buffers below are per thread) */
    float *wp;          /* W as K² blocks [r·K+t][m][n] */
    float *rowbuf;      /* [nthr][2][n]: a row of E (then of G), and of φ for q > 1 */
    float *rowbuf4;     /* [nthr][FIT_R][n]: the rows of a tile (q = 1) */
    float *dvbuf;       /* [nthr][K][H·q·n] column-side gradient (per B_t) */
    double *dlbuf;      /* [nthr][K²][H] */
    int *rows;          /* [m]: the rows of this step (a permutation's prefix, sorted) */
    int nrows;          /* rows used by the next fp_loss_l1 (m = all) */
    dyn_fit_gpu *gpu;   /* the Adam steps on the GPU (fit_cuda.c), else NULL */
    char *note;         /* where a GPU failure is explained (dyn_fit_result.note) */
} fitp;

dyn_sys dyn__fit_sys(int m, int n, int K, int H, int q, dyn_kernel kern, const float *th, int r,
                     int t, float c) {
    const int64_t hq = (int64_t)H * q, nu = K * hq * m, nv = K * hq * n;
    dyn_sys s = {.m = m, .n = n, .H = H, .q = q, .kernel = kern, .u = th + r * hq * m,
                 .v = th + nu + t * hq * n, .lambda = th + nu + nv + ((int64_t)r * K + t) * H,
                 .c = c};
    return s;
}

static dyn_sys fp_sys(const fitp *p, const float *th, int r, int t) {
    return dyn__fit_sys(p->m, p->n, p->K, p->H, p->q, p->kern, th, r, t, th[p->np - 1]);
}

/* out [m][nk] = Ŵ of θ. */
static void fp_reconstruct(const fitp *p, const float *th, float *out) {
    const int K = p->K, K2 = K * K;
    if (K == 1) {
        dyn_sys s = fp_sys(p, th, 0, 0);
        dyn_sys_materialize(&s, out);
        return;
    }
    for (int r = 0; r < K; r++)
        for (int t = 0; t < K; t++) {
            dyn_sys s = fp_sys(p, th, r, t);
            dyn_sys_materialize(&s, p->tmp);
            const int off = r * K + t;
#pragma omp parallel for schedule(static) if ((int64_t)p->m * p->n > 65536)
            for (int i = 0; i < p->m; i++)
                for (int j = 0; j < p->n; j++)
                    out[(int64_t)i * p->nk + (int64_t)j * K2 + off] = p->tmp[(int64_t)i * p->n + j];
        }
}

/* Loss of θ; with grad != NULL also its gradient (overwritten). Leaves E in p->e. */
static double fp_loss(fitp *p, const float *th, float *grad) {
    const int64_t tot = (int64_t)p->m * p->nk;
    fp_reconstruct(p, th, p->e);
    double loss = 0;
#pragma omp parallel for reduction(+ : loss) schedule(static) if (tot > 65536)
    for (int64_t i = 0; i < tot; i++) {
        p->e[i] -= p->w[i];
        loss += (double)p->e[i] * p->e[i];
    }
    const double scale = 1.0 / (double)tot;
    if (p->act) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p->m, p->nk, p->nk, 1.0f, p->e,
                    p->nk, p->cov, p->nk, 0.0f, p->g, p->nk);
        loss = 0;
        float *g = p->g, *e = p->e;
        const float *D = p->dlin;
        if (D) {
            /* ‖Ŵ X̃ − W X‖² − const = tr(E C̃ Eᵀ) + 2⟨D, E⟩, gradient 2(E C̃ + D) */
#pragma omp parallel for reduction(+ : loss) schedule(static) if (tot > 65536)
            for (int64_t i = 0; i < tot; i++) {
                loss += (double)e[i] * g[i] + 2.0 * D[i] * e[i];
                g[i] += D[i];
            }
        } else {
#pragma omp parallel for reduction(+ : loss) schedule(static) if (tot > 65536)
            for (int64_t i = 0; i < tot; i++) loss += (double)e[i] * g[i];
        }
    } else {
        memcpy(p->g, p->e, (size_t)tot * sizeof(float));
    }
    if (!grad) return loss * scale;
    const float gs = (float)(2.0 * scale);
#pragma omp parallel for schedule(static) if (tot > 65536)
    for (int64_t i = 0; i < tot; i++) p->g[i] *= gs;
    memset(grad, 0, (size_t)p->np * sizeof(float));
    const int K = p->K, K2 = K * K;
    for (int r = 0; r < K; r++)
        for (int t = 0; t < K; t++) {
            dyn_sys s = fp_sys(p, th, r, t);
            const float *G = p->g;
            if (K > 1) {
                const int off = r * K + t;
#pragma omp parallel for schedule(static) if ((int64_t)p->m * p->n > 65536)
                for (int i = 0; i < p->m; i++)
                    for (int j = 0; j < p->n; j++)
                        p->tmp[(int64_t)i * p->n + j] = p->g[(int64_t)i * p->nk + (int64_t)j * K2 + off];
                G = p->tmp;
            }
            const int64_t hq = (int64_t)p->H * p->q;
            dyn_sys_grad g = {.du = grad + r * hq * p->m, .dv = grad + p->nu + t * hq * p->n,
                              .dlambda = grad + p->nu + p->nv + ((int64_t)r * K + t) * p->H,
                              .dc = grad + p->np - 1};
            dyn_sys_grad_materialized(&s, G, &g);
        }
    return loss * scale;
}

/* Relative errors of the last fp_loss call's E: weight and (with cov) output. Uses p->g as
 * scratch when the loss is not the activation-aware one. */
static void fp_rel_errs(fitp *p, double *wrel, double *orel) {
    const int64_t tot = (int64_t)p->m * p->nk;
    double s = 0;
    for (int64_t i = 0; i < tot; i++) s += (double)p->e[i] * p->e[i];
    *wrel = p->wnorm2 > 0 ? sqrt(s / p->wnorm2) : sqrt(s);
    *orel = -1;
    if (p->cov) {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, p->m, p->nk, p->nk, 1.0f, p->e,
                    p->nk, p->cov, p->nk, 0.0f, p->g, p->nk);
        double o = p->dlin ? p->k0 : 0.0;
        for (int64_t i = 0; i < tot; i++)
            o += (double)p->e[i] * p->g[i] + (p->dlin ? 2.0 * p->dlin[i] * p->e[i] : 0.0);
        *orel = p->wcw > 0 ? sqrt(fmax(o, 0) / p->wcw) : -1;
    }
}

/* ---- the fused data-free l1 pass (algo 0) ---------------------------------------------------- */

/* One row i of one system: e[j] = c + Σ_h λ_h φ_h(i, j) − w[j] over n columns; returns Σ e²
 * and adds Σ e to *es. d: scratch [n] for q > 1. */
static inline double l1_row_err(const float *U, const float *V, const float *L, float c,
                                const float *w, int m, int n, int H, int q, int i, float *e,
                                float *d, double *es) {
    for (int j = 0; j < n; j++) e[j] = c - w[j];
    for (int h = 0; h < H; h++) {
        const float lam = L[h];
        if (q == 1) {
            const float a = U[(int64_t)h * m + i];
            const float *vb = V + (int64_t)h * n;
#pragma omp simd
            for (int j = 0; j < n; j++) e[j] += lam * fabsf(a - vb[j]);
        } else {
            for (int j = 0; j < n; j++) d[j] = 0.0f;
            for (int k = 0; k < q; k++) {
                const int64_t hk = (int64_t)h * q + k;
                const float a = U[hk * m + i];
                const float *vb = V + hk * n;
#pragma omp simd
                for (int j = 0; j < n; j++) d[j] += fabsf(a - vb[j]);
            }
#pragma omp simd
            for (int j = 0; j < n; j++) e[j] += lam * d[j];
        }
    }
    float ls = 0.0f, s1 = 0.0f;
#pragma omp simd reduction(+ : ls, s1)
    for (int j = 0; j < n; j++) {
        ls += e[j] * e[j];
        s1 += e[j];
    }
    *es += s1;
    return ls;
}

/* q = 1, four rows at once (FIT_R): each state slice v_h and each column-gradient slice dv_h
 * is read once per four rows instead of once per row (the per-row pass is bound by those
 * loads). rows: the four row indices; e: [FIT_R][n] scratch. Adds to *ls (Σ e²), *es (Σ e);
 * with dU != NULL also the gradient (gs: the scale of G = gs·E). */
#define FIT_R 4
static void l1_rows4(const float *U, const float *V, const float *L, float c, const float *Wx,
                     int m, int n, int H, const int *rows, float *e, float gs, float *dU,
                     float *dv, double *dl, double *ls, double *es) {
    float *e0 = e, *e1 = e + n, *e2 = e + 2 * n, *e3 = e + 3 * n;
    const float *w0 = Wx + (int64_t)rows[0] * n, *w1 = Wx + (int64_t)rows[1] * n,
                *w2 = Wx + (int64_t)rows[2] * n, *w3 = Wx + (int64_t)rows[3] * n;
#pragma omp simd
    for (int j = 0; j < n; j++) {
        e0[j] = c - w0[j];
        e1[j] = c - w1[j];
        e2[j] = c - w2[j];
        e3[j] = c - w3[j];
    }
    for (int h = 0; h < H; h++) {
        const float lam = L[h], *vb = V + (int64_t)h * n, *uh = U + (int64_t)h * m;
        const float a0 = uh[rows[0]], a1 = uh[rows[1]], a2 = uh[rows[2]], a3 = uh[rows[3]];
#pragma omp simd
        for (int j = 0; j < n; j++) {
            const float v = vb[j];
            e0[j] += lam * fabsf(a0 - v);
            e1[j] += lam * fabsf(a1 - v);
            e2[j] += lam * fabsf(a2 - v);
            e3[j] += lam * fabsf(a3 - v);
        }
    }
    float l2 = 0.0f, s1 = 0.0f;
#pragma omp simd reduction(+ : l2, s1)
    for (int j = 0; j < n; j++) {
        l2 += e0[j] * e0[j] + e1[j] * e1[j] + e2[j] * e2[j] + e3[j] * e3[j];
        s1 += e0[j] + e1[j] + e2[j] + e3[j];
    }
    *ls += l2;
    *es += s1;
    if (!dU) return;
#pragma omp simd
    for (int j = 0; j < n; j++) {
        e0[j] *= gs;
        e1[j] *= gs;
        e2[j] *= gs;
        e3[j] *= gs;
    }
    for (int h = 0; h < H; h++) {
        const float lam = L[h], *vb = V + (int64_t)h * n;
        float *uh = dU + (int64_t)h * m, *dvb = dv + (int64_t)h * n;
        const float *us = U + (int64_t)h * m;
        const float a0 = us[rows[0]], a1 = us[rows[1]], a2 = us[rows[2]], a3 = us[rows[3]];
        float g0 = 0.0f, g1 = 0.0f, g2 = 0.0f, g3 = 0.0f, ph = 0.0f;
#pragma omp simd reduction(+ : g0, g1, g2, g3, ph)
        for (int j = 0; j < n; j++) {
            const float v = vb[j];
            const float d0 = a0 - v, d1 = a1 - v, d2 = a2 - v, d3 = a3 - v;
            const float s0 = e0[j] * ((float)(d0 > 0.0f) - (float)(d0 < 0.0f));
            const float s1_ = e1[j] * ((float)(d1 > 0.0f) - (float)(d1 < 0.0f));
            const float s2 = e2[j] * ((float)(d2 > 0.0f) - (float)(d2 < 0.0f));
            const float s3 = e3[j] * ((float)(d3 > 0.0f) - (float)(d3 < 0.0f));
            g0 += s0;
            g1 += s1_;
            g2 += s2;
            g3 += s3;
            ph += e0[j] * fabsf(d0) + e1[j] * fabsf(d1) + e2[j] * fabsf(d2) + e3[j] * fabsf(d3);
            dvb[j] -= lam * (s0 + s1_ + s2 + s3);
        }
        uh[rows[0]] += lam * g0;
        uh[rows[1]] += lam * g1;
        uh[rows[2]] += lam * g2;
        uh[rows[3]] += lam * g3;
        dl[h] += ph;
    }
}

/* The data-free l1 loss ‖Ŵ − W‖² / (m·n·K²) and (grad != NULL) its gradient in one fused
 * pass per row: the row of E stays in cache while it is formed and then turned into the
 * row-side gradient (du, dλ) and per-thread column sums (dv), reduced once per system. With
 * p->nrows < m only the rows p->rows[0 .. nrows) are visited and the loss and the shared
 * gradients (dv, dλ, dc) are scaled by m / nrows (unbiased estimates; du of the other rows is
 * 0). Same value and gradient as fp_loss for l1 (tested). */
static double fp_loss_l1(fitp *p, const float *th, float *grad) {
    const int m = p->m, n = p->n, H = p->H, q = p->q, K = p->K, K2 = K * K;
    const int64_t hq = (int64_t)H * q, tot = (int64_t)m * p->nk, nvk = (int64_t)K * hq * n;
    const int nr = p->nrows > 0 && p->nrows < m ? p->nrows : m;
    const int *rows = nr < m ? p->rows : NULL;
    const double rs = (double)m / nr;
    const float gs = (float)(2.0 * rs / (double)tot), c = th[p->np - 1];
    /* one parallel region per step (a region per system made 2·K² barriers a step, which cost
     * much when the machine is oversubscribed); the static schedules give every thread the same
     * rows in every system, so du needs no reduction, and dv (per B_t) and dλ are per thread */
    const int nt = dyn__par((int64_t)K2 * nr * n * hq > 65536) ? p->nthr : 1;
    const int ntile = q == 1 ? nr / FIT_R : 0;
    double loss = 0.0, dc = 0.0;
    if (grad) memset(grad, 0, (size_t)p->np * sizeof(float));
#pragma omp parallel num_threads(nt) if (nt > 1) reduction(+ : loss, dc)
    {
#ifdef _OPENMP
        const int tid = omp_get_thread_num();
#else
        const int tid = 0;
#endif
        float *e = p->rowbuf + (int64_t)tid * 2 * n, *d = e + n;
        float *dvt = p->dvbuf + (int64_t)tid * nvk;
        double *dlt = p->dlbuf + (int64_t)tid * K2 * H;
        if (grad) {
            memset(dvt, 0, (size_t)nvk * sizeof(float));
            memset(dlt, 0, (size_t)K2 * H * sizeof(double));
        }
        for (int x = 0; x < K2; x++) {
            const int r = x / K, t = x % K;
            const float *U = th + r * hq * m, *V = th + p->nu + t * hq * n,
                        *L = th + p->nu + p->nv + (int64_t)x * H, *Wx = p->wp + (int64_t)x * m * n;
            float *dU = grad ? grad + r * hq * m : NULL, *dv = dvt + t * hq * n;
            double *dl = dlt + (int64_t)x * H;
            /* q = 1: tiles of FIT_R rows (l1_rows4), the remainder row by row */
#pragma omp for schedule(static) nowait
            for (int b = 0; b < ntile; b++) {
                int rr[FIT_R];
                for (int k = 0; k < FIT_R; k++) rr[k] = rows ? rows[b * FIT_R + k] : b * FIT_R + k;
                l1_rows4(U, V, L, c, Wx, m, n, H, rr, p->rowbuf4 + (int64_t)tid * FIT_R * n, gs,
                         dU, dv, dl, &loss, &dc);
            }
#pragma omp for schedule(static) nowait
            for (int ii = ntile * FIT_R; ii < nr; ii++) {
                const int i = rows ? rows[ii] : ii;
                loss += l1_row_err(U, V, L, c, Wx + (int64_t)i * n, m, n, H, q, i, e, d, &dc);
                if (!grad) continue;
#pragma omp simd
                for (int j = 0; j < n; j++) e[j] *= gs;
                for (int h = 0; h < H; h++) {
                    const float lam = L[h];
                    float ph = 0.0f;
                    for (int k = 0; k < q; k++) {
                        const int64_t hk = (int64_t)h * q + k;
                        const float a = U[hk * m + i];
                        const float *vb = V + hk * n;
                        float *dvb = dv + hk * n;
                        float sg = 0.0f;
#pragma omp simd reduction(+ : sg, ph)
                        for (int j = 0; j < n; j++) {
                            const float df = a - vb[j];
                            const float ge = e[j] * ((float)(df > 0.0f) - (float)(df < 0.0f));
                            sg += ge;
                            ph += e[j] * fabsf(df);
                            dvb[j] -= lam * ge;
                        }
                        dU[hk * m + i] += lam * sg;
                    }
                    dl[h] += ph;
                }
            }
        }
        if (grad) {
            /* the column-side sums of all threads into grad: a barrier, then split over k */
#pragma omp barrier
            float *dV = grad + p->nu;
#pragma omp for schedule(static)
            for (int64_t k = 0; k < nvk; k++) {
                float sum = 0.0f;
                for (int u = 0; u < nt; u++) sum += p->dvbuf[(int64_t)u * nvk + k];
                dV[k] = sum;
            }
#pragma omp single
            for (int64_t k = 0; k < (int64_t)K2 * H; k++) {
                double sum = 0.0;
                for (int u = 0; u < nt; u++) sum += p->dlbuf[(int64_t)u * K2 * H + k];
                grad[p->nu + p->nv + k] = (float)sum;
            }
        }
    }
    if (grad) grad[p->np - 1] = (float)(2.0 * rs / (double)tot * dc);
    return loss * rs / (double)tot;
}

/* Draws the rows of the next sampled step: nrows distinct rows, sorted (partial Fisher–Yates
 * over p->rows, which always holds a permutation of 0..m-1). */
static int int_cmp(const void *a, const void *b) {
    return (*(const int *)a > *(const int *)b) - (*(const int *)a < *(const int *)b);
}
static void fp_sample_rows(fitp *p, dyn_rng *rng) {
    for (int k = 0; k < p->nrows; k++) {
        int j = k + (int)(dyn_rng_uniform(rng) * (p->m - k));
        if (j >= p->m) j = p->m - 1;
        int tmp = p->rows[k];
        p->rows[k] = p->rows[j];
        p->rows[j] = tmp;
    }
    qsort(p->rows, (size_t)p->nrows, sizeof(int), int_cmp);
}

/* The loss for Adam: the fused pass when enabled, else the reference passes. */
static double fp_loss_step(fitp *p, const float *th, float *grad) {
    return p->fast ? fp_loss_l1(p, th, grad) : fp_loss(p, th, grad);
}

/* ---- initialization ------------------------------------------------------------------------- */

/* Solves the symmetric positive (semi)definite system A x = b (n×n, double, destroyed) by
 * Cholesky with a small ridge; returns 0 or -1 when it is not positive. */
static int spd_solve(double *A, double *b, int n) {
    double tr = 0;
    for (int i = 0; i < n; i++) tr += A[i * n + i];
    const double ridge = 1e-9 * (tr > 0 ? tr / n : 1.0);
    for (int i = 0; i < n; i++) A[i * n + i] += ridge;
    for (int j = 0; j < n; j++) {
        double d = A[j * n + j];
        for (int k = 0; k < j; k++) d -= A[j * n + k] * A[j * n + k];
        if (!(d > 0)) return -1;
        d = sqrt(d);
        A[j * n + j] = d;
        for (int i = j + 1; i < n; i++) {
            double s = A[i * n + j];
            for (int k = 0; k < j; k++) s -= A[i * n + k] * A[j * n + k];
            A[i * n + j] = s / d;
        }
    }
    for (int i = 0; i < n; i++) { /* L y = b */
        double s = b[i];
        for (int k = 0; k < i; k++) s -= A[i * n + k] * b[k];
        b[i] = s / A[i * n + i];
    }
    for (int i = n - 1; i >= 0; i--) { /* Lᵀ x = y */
        double s = b[i];
        for (int k = i + 1; k < n; k++) s -= A[k * n + i] * b[k];
        b[i] = s / A[i * n + i];
    }
    return 0;
}

#define FIT_LSQ_ENTRIES (1 << 17)

/* LSQ: λ and c in closed form for the current states. Per system, the Gram matrix of
 * [φ_0 .. φ_{H-1}, 1] and its right-hand side against W_rt, computed over blocks of rows
 * (φ_h of a block by dyn_sys_materialize with one copy). Returns 0 or DYN_ENOMEM; leaves λ
 * unchanged for a system whose Gram matrix is singular. */
/* s[0] = Σ φ, s[1] = Σ φ·w over one copy's len entries (the least squares' right-hand side). */
static void phi_sums(const float *ph, const float *wb, int64_t len, double *s) {
    double s1 = 0, sw = 0;
    for (int64_t x = 0; x < len; x++) {
        s1 += ph[x];
        sw += (double)ph[x] * wb[x];
    }
    s[0] = s1;
    s[1] = sw;
}

static int fp_init_lsq(fitp *p, float *th, dyn_err *err) {
    const int H = p->H, q = p->q, m = p->m, n = p->n, K = p->K, H1 = H + 1;
    /* fast path: every rstep-th row, so a system contributes about FIT_LSQ_ENTRIES entries
     * (≥ 680 per unknown at H = 191; the Gram matrix was most of a big layer's fixed cost) */
    const int rstep = p->fast ? (int)DYN_MAX(1, (int64_t)m * n / FIT_LSQ_ENTRIES) : 1;
    const int mr = (m + rstep - 1) / rstep;
    const int blk = (int)DYN_MAX(1, DYN_MIN((int64_t)mr, ((int64_t)1 << 22) / ((int64_t)H * n)));
    float *phi = malloc((size_t)H * blk * n * sizeof(float));
    float *ub = malloc((size_t)q * blk * sizeof(float)), *wb = malloc((size_t)blk * n * sizeof(float));
    float *gram = malloc((size_t)H * H * sizeof(float));
    double *A = malloc((size_t)H1 * H1 * sizeof(double)), *b = malloc((size_t)H1 * sizeof(double));
    double *A2 = malloc((size_t)H1 * H1 * sizeof(double)), *b2 = malloc((size_t)H1 * sizeof(double));
    double *crt = malloc((size_t)K * K * sizeof(double));
    double *sums = malloc((size_t)2 * H * sizeof(double)); /* per copy: Σ φ, Σ φ·w */
    /* stats per system kept for the second solve: Gram [H1][H1] and rhs [H1] */
    double *S = malloc((size_t)K * K * H1 * (H1 + 1) * sizeof(double));
    int rc = 0;
    if (!phi || !ub || !wb || !gram || !A || !b || !A2 || !b2 || !crt || !S || !sums) {
        rc = dyn_err_set(err, DYN_ENOMEM, "least-squares initialization: out of memory");
        goto done;
    }
    const float one = 1.0f;
    for (int r = 0; r < K; r++)
        for (int t = 0; t < K; t++) {
            dyn_sys s = fp_sys(p, th, r, t);
            double *G = S + (int64_t)(r * K + t) * H1 * (H1 + 1), *rhs = G + H1 * H1;
            memset(G, 0, (size_t)H1 * (H1 + 1) * sizeof(double));
            for (int i0 = 0; i0 < mr; i0 += blk) {
                const int bm = DYN_MIN(blk, mr - i0);
                for (int i = 0; i < bm; i++)
                    for (int j = 0; j < n; j++)
                        wb[(int64_t)i * n + j] = p->w[(int64_t)(i0 + i) * rstep * p->nk +
                                                      (int64_t)j * K * K + r * K + t];
                const int len = bm * n;
                if (p->kern == DYN_KERNEL_L1) {
                    /* φ_h of the block and its sums against 1 and W, the copies in parallel
                     * (one region per block: issue 9 measured the per-copy regions) */
                    DYN_PAR_FOR((int64_t)H * len > 65536, for (int h = 0; h < H; h++) {
                        float *ph = phi + (int64_t)h * len;
                        for (int i = 0; i < bm; i++) {
                            float *row = ph + (int64_t)i * n;
                            for (int j = 0; j < n; j++) row[j] = 0.0f;
                            for (int k = 0; k < q; k++) {
                                const float a = s.u[((int64_t)h * q + k) * m + (i0 + i) * rstep];
                                const float *vb = s.v + ((int64_t)h * q + k) * n;
                                for (int j = 0; j < n; j++) row[j] += fabsf(a - vb[j]);
                            }
                        }
                        phi_sums(ph, wb, len, sums + 2 * h);
                    });
                } else {
                    for (int h = 0; h < H; h++) {
                        for (int k = 0; k < q; k++)
                            memcpy(ub + (int64_t)k * bm, s.u + ((int64_t)h * q + k) * m + i0,
                                   (size_t)bm * sizeof(float));
                        dyn_sys one_copy = {.m = bm, .n = n, .H = 1, .q = q, .kernel = p->kern,
                                            .u = ub, .v = s.v + (int64_t)h * q * n,
                                            .lambda = &one, .c = 0};
                        float *ph = phi + (int64_t)h * len;
                        dyn_sys_materialize(&one_copy, ph);
                        phi_sums(ph, wb, len, sums + 2 * h);
                    }
                }
                cblas_ssyrk(CblasRowMajor, CblasUpper, CblasNoTrans, H, len, 1.0f, phi, len, 0.0f,
                            gram, H);
                for (int h = 0; h < H; h++) {
                    for (int h2 = h; h2 < H; h2++) G[h * H1 + h2] += gram[h * H + h2];
                    G[h * H1 + H] += sums[2 * h];
                    rhs[h] += sums[2 * h + 1];
                }
                double sw = 0;
                for (int x = 0; x < len; x++) sw += wb[x];
                G[H * H1 + H] += len;
                rhs[H] += sw;
            }
            for (int i = 0; i < H1; i++)
                for (int j = 0; j < i; j++) G[i * H1 + j] = G[j * H1 + i];
            memcpy(A, G, (size_t)H1 * H1 * sizeof(double));
            memcpy(b, rhs, (size_t)H1 * sizeof(double));
            crt[r * K + t] = spd_solve(A, b, H1) == 0 ? b[H] : 0.0;
        }
    double c = 0;
    for (int x = 0; x < K * K; x++) c += crt[x] / (K * K);
    th[p->np - 1] = (float)c;
    for (int x = 0; x < K * K; x++) { /* λ with the shared c fixed */
        const double *G = S + (int64_t)x * H1 * (H1 + 1), *rhs = G + H1 * H1;
        for (int i = 0; i < H; i++) {
            for (int j = 0; j < H; j++) A2[i * H + j] = G[i * H1 + j];
            b2[i] = rhs[i] - c * G[i * H1 + H];
        }
        if (spd_solve(A2, b2, H) == 0)
            for (int h = 0; h < H; h++) th[p->nu + p->nv + (int64_t)x * H + h] = (float)b2[h];
    }
done:
    free(phi);
    free(ub);
    free(wb);
    free(gram);
    free(A);
    free(b);
    free(A2);
    free(b2);
    free(crt);
    free(S);
    free(sums);
    return rc;
}

/* SVD initialization (choice, measured in CONVERT.md). For scalars a, b:
 * |a + b| − |a − b| = 2·sign(ab)·min(|a|, |b|), a "min-product". So a pair of copies
 * (2p, 2p+1) with u = a (left singular vector) and v = ∓b (right singular vector) represents
 * one rank-1 term σ a bᵀ approximately once λ_{2p} ≈ −λ_{2p+1}; least squares then sets λ
 * and c. Vectors are scaled to unit rms (min() needs comparable scales); with q > 1 the copy's
 * q coordinates take q consecutive components, weighted by σ relative to the first. Conv:
 * A_r from the left vectors of [W_r0 … W_r,K−1] (m × nK), B_t from the right vectors of
 * [W_0t; …; W_K−1,t] (mK × n). A copy without a component (H odd, rank exhausted) keeps its
 * random states. */
static int fp_init_svd(fitp *p, float *th, dyn_err *err) {
    const int m = p->m, n = p->n, K = p->K, H = p->H, q = p->q;
    const int64_t hq = (int64_t)H * q;
    float *M = malloc((size_t)m * n * K * sizeof(float));
    if (!M) return dyn_err_set(err, DYN_ENOMEM, "SVD initialization: out of memory");
    for (int side = 0; side < 2; side++)
        for (int r = 0; r < K; r++) {
            /* side 0: A_r from M = [W_r0 | … ] (m × nK); side 1: B_r from [W_0r; …] (mK × n) */
            const int rows = side ? m * K : m, cols = side ? n : n * K;
            for (int i = 0; i < m; i++)
                for (int t = 0; t < K; t++)
                    for (int j = 0; j < n; j++) {
                        const float w = p->w[(int64_t)i * p->nk + (int64_t)j * K * K +
                                             (side ? t * K + r : r * K + t)];
                        if (side) M[((int64_t)t * m + i) * n + j] = w;
                        else M[(int64_t)i * n * K + (int64_t)t * n + j] = w;
                    }
            double *L, *R, *sv;
            if (svd_vectors(M, rows, cols, &L, &R, &sv)) {
                free(M);
                return dyn_err_set(err, DYN_EINVAL, "SVD initialization: LAPACK failed");
            }
            const int k = DYN_MIN(rows, cols);
            float *base = side ? th + p->nu + (int64_t)r * hq * n : th + (int64_t)r * hq * m;
            const int len = side ? n : m;
            const double sc = sqrt((double)len);
            for (int h = 0; h + 1 < H; h += 2)
                for (int d = 0; d < q; d++) {
                    const int c = (h / 2) * q + d, c0 = (h / 2) * q;
                    if (c >= k || !(sv[c0] > 0)) continue;
                    const double wgt = sv[c] / sv[c0];
                    for (int x = 0; x < len; x++) {
                        /* A: rows of the left vectors; B: the right vectors (first block) */
                        const double val = side ? R[x + (int64_t)c * n] : L[c + (int64_t)x * k];
                        const float f = (float)(val * sc * wgt);
                        base[((int64_t)h * q + d) * len + x] = side ? -f : f;
                        base[((int64_t)(h + 1) * q + d) * len + x] = f;
                    }
                }
            free(L);
            free(R);
            free(sv);
        }
    free(M);
    return 0;
}

/* A fresh candidate θ: states, then λ and c, then the balanced rescale. */
static int fp_init(fitp *p, float *th, dyn_fit_init init, dyn_rng *rng, dyn_err *err) {
    double mean = 0, var = 0;
    const int64_t tot = (int64_t)p->m * p->nk;
    for (int64_t i = 0; i < tot; i++) mean += p->w[i];
    mean /= (double)tot;
    for (int64_t i = 0; i < tot; i++) var += (p->w[i] - mean) * (p->w[i] - mean);
    var = fmax(var / (double)tot, 1e-12);
    const float R = p->kern == DYN_KERNEL_INV ? (float)dyn_sys_init_range(p->H, p->q, p->kern, var, rng)
                                              : 1.0f;
    for (int64_t i = 0; i < p->nu + p->nv; i++) th[i] = R * dyn_rng_uniform(rng);
    /* λ from φ statistics (per system; states already drawn) and c from the mean */
    double cs = 0;
    for (int r = 0; r < p->K; r++)
        for (int t = 0; t < p->K; t++) {
            dyn_sys s = fp_sys(p, th, r, t);
            cs += dyn_sys_init((float *)s.u, (float *)s.v, (float *)s.lambda, p->m, p->n, p->H,
                               p->q, p->kern, var, 0, 0, rng);
        }
    th[p->np - 1] = (float)(mean + cs / (p->K * p->K));
    if (init == DYN_INIT_SVD) {
        int rc = fp_init_svd(p, th, err);
        if (rc) return rc;
    }
    if (init == DYN_INIT_LSQ || init == DYN_INIT_SVD) {
        int rc = fp_init_lsq(p, th, err);
        if (rc) return rc;
    }
    dyn_sys_rescale(th, p->nu, th + p->nu, p->nv, th + p->nu + p->nv, p->nl, p->kern);
    return 0;
}

/* Range of the states (their standard deviation; 1 when degenerate). */
static double states_sd(const float *x, int64_t n) {
    double s = 0, s2 = 0;
    for (int64_t i = 0; i < n; i++) {
        s += x[i];
        s2 += (double)x[i] * x[i];
    }
    double v = n > 0 ? s2 / n - (s / n) * (s / n) : 0;
    return v > 1e-20 ? sqrt(v) : 1.0;
}

/* ---- Adam ----------------------------------------------------------------------------------- */

typedef struct fit_run {
    fitp *p;
    float *th, *grad, *m1, *m2;
    int64_t from; /* first coordinate of θ that moves (nu + nv: λ and c only) */
    const dyn_fit_opts *o;
    int *steps_done;
    double frac0, frac1; /* progress range of this run */
    double *last_report;
    /* the main run only (algo 0 options, trace) */
    int main_run;
    dyn_rng *rng;        /* row sampling */
    double t0;           /* the fit's start (trace) */
    int stopped_at;      /* plateau: the step it stopped before; -1 when it ran to the end */
} fit_run;

/* The GPU failed during an Adam run: back to the CPU for the rest of the fit, the reason in
 * the fit's note. */
static void fit_gpu_drop(fitp *p, const dyn_err *gerr) {
    if (p->note)
        snprintf(p->note, sizeof ((dyn_fit_result *)0)->note,
                 "cpu (the GPU failed, the fit went on on the CPU: %s)", gerr->msg);
    dyn__fit_gpu_free(p->gpu);
    p->gpu = NULL;
}

/* `steps` Adam steps from the current θ (fresh moments), cosine lr decay to 1 %. Returns the
 * final loss, or -1 when cancelled (θ keeps the last step). lr is relative to the state
 * range (states_sd at the start). With p->gpu the gradient and the update run on the GPU
 * (θ uploaded at the start, downloaded at the end or when cancelled); the loss is then only
 * computed when the trace or the plateau need it (else 0 is returned). If the GPU fails, the
 * run starts over on the CPU from the same θ. */
static double adam_run(fit_run *f, int steps, int *cancelled) {
    fitp *p = f->p;
    const int64_t n = p->np;
    const int steps0 = *f->steps_done;
    dyn_err gerr = {0};
    if (p->gpu && dyn__fit_gpu_begin(p->gpu, f->th, &gerr)) fit_gpu_drop(p, &gerr);
    dyn_fit_gpu *gpu = p->gpu;
    memset(f->m1, 0, (size_t)n * sizeof(float));
    memset(f->m2, 0, (size_t)n * sizeof(float));
    /* the scale of what moves: the states' spread, or λ's when only λ and c move */
    double sd = states_sd(f->th, p->nu + p->nv);
    if (f->from > 0) {
        double s2 = 0;
        for (int64_t i = 0; i < p->nl; i++) s2 += (double)f->th[p->nu + p->nv + i] * f->th[p->nu + p->nv + i];
        sd = p->nl > 0 && s2 > 0 ? sqrt(s2 / p->nl) : 1.0;
    }
    const float lr0 = (float)(f->o->lr * sd), b1 = 0.9f, b2 = 0.999f;
    double loss = 0;
    *cancelled = 0;
    f->stopped_at = -1;
    const int sampled = !gpu && f->main_run && p->fast && f->o->sample > 0 && f->o->sample < 1 &&
                        p->m >= f->o->sample_min_rows;
    const int plateau = f->main_run && p->fast && f->o->plateau > 0;
    const int want_loss = plateau || (f->main_run && f->o->trace);
    const int win = DYN_MAX(20, steps / 10);
    double best_prev = INFINITY, best_win = INFINITY; /* plateau: the window's best loss */
    if (sampled) p->nrows = DYN_MAX(1, (int)ceil(f->o->sample * p->m));
    for (int s = 0; s < steps; s++) {
        if (f->o->cancel && *f->o->cancel) {
            *cancelled = 1;
            p->nrows = p->m;
            if (gpu && dyn__fit_gpu_end(gpu, f->th, &gerr)) fit_gpu_drop(p, &gerr);
            return -1;
        }
        if (sampled) fp_sample_rows(p, f->rng);
        if (gpu) {
            if (dyn__fit_gpu_grad(gpu, want_loss ? &loss : NULL, &gerr)) goto gpu_failed;
        } else {
            loss = fp_loss_step(p, f->th, f->grad);
        }
        if (f->main_run && f->o->trace)
            f->o->trace(f->o->trace_ctx, s, dyn_now() - f->t0,
                        p->wnorm2 > 0 ? sqrt(fmax(loss, 0) * (double)p->m * p->nk / p->wnorm2)
                                      : 0.0);
        if (plateau) {
            best_win = fmin(best_win, loss);
            if ((s + 1) % win == 0) {
                /* relative error ∝ sqrt(loss): compare the windows' best errors */
                if (s + 1 >= steps / 2 && isfinite(best_prev) &&
                    sqrt(best_win / best_prev) > 1.0 - f->o->plateau) {
                    f->stopped_at = s + 1;
                    break;
                }
                best_prev = fmin(best_prev, best_win);
                best_win = INFINITY;
            }
        }
        const float frac = steps > 1 ? (float)s / (float)(steps - 1) : 1.0f;
        const float lr = lr0 * (0.01f + 0.99f * 0.5f * (1.0f + cosf(3.14159265f * frac)));
        const float bc1 = 1.0f - powf(b1, (float)(s + 1)), bc2 = 1.0f - powf(b2, (float)(s + 1));
        if (gpu) {
            if (dyn__fit_gpu_adam(gpu, f->from, lr, bc1, bc2, &gerr)) goto gpu_failed;
        } else {
            float *th = f->th, *g = f->grad, *m1 = f->m1, *m2 = f->m2;
#pragma omp parallel for schedule(static) if (n > 65536)
            for (int64_t i = f->from; i < n; i++)
                dyn_k_adam(i, lr, b1, b2, bc1, bc2, 1e-12f, g, m1, m2, th);
        }
        (*f->steps_done)++;
        if (f->o->progress) {
            double now = dyn_now();
            if (now - *f->last_report >= 0.2) {
                *f->last_report = now;
                f->o->progress(f->o->progress_ctx,
                               f->frac0 + (f->frac1 - f->frac0) * (s + 1) / (double)steps);
            }
        }
    }
    p->nrows = p->m;
    if (gpu && dyn__fit_gpu_end(gpu, f->th, &gerr)) goto gpu_failed;
    return loss;
gpu_failed: /* f->th still holds the run's start: run it again on the CPU */
    fit_gpu_drop(p, &gerr);
    *f->steps_done = steps0;
    return adam_run(f, steps, cancelled);
}

/* ---- the layer's parameters ------------------------------------------------------------------ */

typedef struct dyn_view {
    int m, n, K, H, q;
    dyn_kernel kern;
    dyn_param *u, *v, *lam, *c;
} dyn_view;

static int dyn_view_get(dyn_layer *l, dyn_view *d, dyn_err *err) {
    int conv = strcmp(l->ops->name, "dyn_conv2d") == 0;
    if (!conv && strcmp(l->ops->name, "dyn_linear") != 0)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s' (%s) is not a DyN layer", l->name,
                           l->ops->name);
    int rc = dyn_layer_fit_shape(l, &d->m, &d->n, &d->K, err);
    if (rc) return rc;
    json_t *a = l->ops->attrs(l);
    if (!a) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    d->H = attr_i(a, "H", 1);
    d->q = attr_i(a, "q", 1);
    const char *kn = json_string_value(json_object_get(a, conv ? "kernel_fn" : "kernel"));
    if (!kn || dyn_kernel_parse(kn, &d->kern)) d->kern = DYN_KERNEL_L1;
    json_decref(a);
    d->u = dyn_layer_param(l, conv ? "a" : "u");
    d->v = dyn_layer_param(l, conv ? "b" : "v");
    d->lam = dyn_layer_param(l, "lambda");
    d->c = dyn_layer_param(l, "c");
    DYN_ASSERT(d->u && d->v && d->lam && d->c);
    return 0;
}

static void theta_get(const dyn_view *d, float *th) {
    int64_t nu = dyn_tensor_numel(&d->u->value), nv = dyn_tensor_numel(&d->v->value),
            nl = dyn_tensor_numel(&d->lam->value);
    memcpy(th, d->u->value.data, (size_t)nu * sizeof(float));
    memcpy(th + nu, d->v->value.data, (size_t)nv * sizeof(float));
    memcpy(th + nu + nv, d->lam->value.data, (size_t)nl * sizeof(float));
    th[nu + nv + nl] = d->c->value.data[0];
}

static void theta_put(const dyn_view *d, const float *th) {
    int64_t nu = dyn_tensor_numel(&d->u->value), nv = dyn_tensor_numel(&d->v->value),
            nl = dyn_tensor_numel(&d->lam->value);
    memcpy(d->u->value.data, th, (size_t)nu * sizeof(float));
    memcpy(d->v->value.data, th + nu, (size_t)nv * sizeof(float));
    memcpy(d->lam->value.data, th + nu + nv, (size_t)nl * sizeof(float));
    d->c->value.data[0] = th[nu + nv + nl];
}

/* Σ a∘b over n floats, in double. */
static double dotf(const float *a, const float *b, int64_t n) {
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)a[i] * b[i];
    return s;
}

static int fitp_make(fitp *p, const dyn_view *d, const float *w, const dyn_fit_data *fd, int act,
                     dyn_err *err) {
    const float *cov = fd ? fd->cov : NULL;
    memset(p, 0, sizeof *p);
    p->m = d->m;
    p->n = d->n;
    p->K = d->K;
    p->H = d->H;
    p->q = d->q;
    p->nk = d->n * d->K * d->K;
    p->kern = d->kern;
    p->nu = dyn_tensor_numel(&d->u->value);
    p->nv = dyn_tensor_numel(&d->v->value);
    p->nl = dyn_tensor_numel(&d->lam->value);
    p->np = p->nu + p->nv + p->nl + 1;
    p->w = w;
    p->cov = cov;
    p->act = act;
    const int64_t tot = (int64_t)p->m * p->nk;
    p->e = dyn_alloc((size_t)tot * sizeof(float));
    p->g = dyn_alloc((size_t)tot * sizeof(float));
    p->tmp = dyn_alloc((size_t)p->m * p->n * sizeof(float));
    if (!p->e || !p->g || !p->tmp)
        return dyn_err_set(err, DYN_ENOMEM, "fitting a %d×%d weight: out of memory", p->m, p->nk);
    p->wnorm2 = dotf(w, w, tot);
    if (!cov) return 0;
    const int nk = p->nk, m = p->m;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, nk, nk, 1.0f, w, nk, cov, nk, 0.0f,
                p->g, nk);
    p->wcw = dotf(w, p->g, tot); /* tr(W C̃ Wᵀ) */
    if (fd->cross && fd->cov_dense) {
        p->dlin = dyn_alloc((size_t)tot * sizeof(float));
        if (!p->dlin) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, nk, nk, 1.0f, w, nk, fd->cross,
                    nk, 0.0f, p->dlin, nk);
        const double wcxw = dotf(w, p->dlin, tot);
        for (int64_t i = 0; i < tot; i++) p->dlin[i] = p->g[i] - p->dlin[i];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, nk, nk, 1.0f, w, nk,
                    fd->cov_dense, nk, 0.0f, p->g, nk);
        const double wcdw = dotf(w, p->g, tot);
        p->k0 = p->wcw - 2 * wcxw + wcdw;
        p->wcw = wcdw;
    }
    return 0;
}

/* Enables the fused data-free l1 pass (algo 0): W permuted into per-system blocks, the
 * per-thread buffers, the row permutation. Returns 0 or DYN_ENOMEM. */
static int fitp_fast_init(fitp *p, dyn_err *err) {
    const int m = p->m, n = p->n, K = p->K, K2 = K * K;
    p->fast = 1;
    p->nthr = DYN_MAX(1, dyn_threads_get());
    p->nrows = m;
    p->wp = dyn_alloc((size_t)m * p->nk * sizeof(float));
    p->rowbuf = dyn_alloc((size_t)p->nthr * 2 * n * sizeof(float));
    p->rowbuf4 = dyn_alloc((size_t)p->nthr * FIT_R * n * sizeof(float));
    p->dvbuf = dyn_alloc((size_t)p->nthr * K * p->H * p->q * n * sizeof(float));
    p->dlbuf = dyn_alloc((size_t)p->nthr * K2 * p->H * sizeof(double));
    p->rows = malloc((size_t)m * sizeof(int));
    if (!p->wp || !p->rowbuf || !p->rowbuf4 || !p->dvbuf || !p->dlbuf || !p->rows)
        return dyn_err_set(err, DYN_ENOMEM, "fitting a %d×%d weight: out of memory", m, p->nk);
    for (int i = 0; i < m; i++) p->rows[i] = i;
    for (int x = 0; x < K2; x++)
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++)
                p->wp[((int64_t)x * m + i) * n + j] = p->w[(int64_t)i * p->nk + (int64_t)j * K2 + x];
    return 0;
}

static void fitp_free(fitp *p) {
    dyn_free(p->wp);
    dyn_free(p->rowbuf);
    dyn_free(p->rowbuf4);
    dyn_free(p->dvbuf);
    dyn_free(p->dlbuf);
    free(p->rows);
    dyn__fit_gpu_free(p->gpu);
    dyn_free(p->dlin);
    dyn_free(p->e);
    dyn_free(p->g);
    dyn_free(p->tmp);
}

int dyn_layer_reconstruct(const dyn_layer *dl, float *w, dyn_err *err) {
    dyn_view d;
    int rc = dyn_view_get((dyn_layer *)dl, &d, err);
    if (rc) return rc;
    fitp p;
    memset(&p, 0, sizeof p);
    p.m = d.m;
    p.n = d.n;
    p.K = d.K;
    p.H = d.H;
    p.q = d.q;
    p.nk = d.n * d.K * d.K;
    p.kern = d.kern;
    p.nu = dyn_tensor_numel(&d.u->value);
    p.nv = dyn_tensor_numel(&d.v->value);
    p.nl = dyn_tensor_numel(&d.lam->value);
    p.np = p.nu + p.nv + p.nl + 1;
    float *th = malloc((size_t)p.np * sizeof(float));
    p.tmp = d.K > 1 ? dyn_alloc((size_t)p.m * p.n * sizeof(float)) : NULL;
    if (!th || (d.K > 1 && !p.tmp)) {
        free(th);
        dyn_free(p.tmp);
        return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", dl->name);
    }
    theta_get(&d, th);
    fp_reconstruct(&p, th, w);
    free(th);
    dyn_free(p.tmp);
    return 0;
}

/* Rescales θ's states to unit standard deviation (l1/l2) and rounds them down to δ. */
static void theta_quantize(const fitp *p, float *th, double delta) {
    if (p->kern != DYN_KERNEL_INV) {
        const double sd = states_sd(th, p->nu + p->nv);
        for (int64_t i = 0; i < p->nu + p->nv; i++) th[i] = (float)(th[i] / sd);
        for (int64_t i = 0; i < p->nl; i++) th[p->nu + p->nv + i] = (float)(th[p->nu + p->nv + i] * sd);
    }
    for (int64_t i = 0; i < p->nu + p->nv; i++) th[i] = (float)(floor(th[i] / delta) * delta);
}

int dyn_layer_rescale(dyn_layer *dl, dyn_err *err) {
    dyn_view d;
    int rc = dyn_view_get(dl, &d, err);
    if (rc) return rc;
    dyn_sys_rescale(d.u->value.data, dyn_tensor_numel(&d.u->value), d.v->value.data,
                    dyn_tensor_numel(&d.v->value), d.lam->value.data,
                    dyn_tensor_numel(&d.lam->value), d.kern);
    return dl->ops->prepare ? dl->ops->prepare(dl, err) : 0;
}

int dyn_quantize_layer(dyn_layer *dl, double delta, dyn_err *err) {
    if (!(delta > 0)) return dyn_err_set(err, DYN_EINVAL, "quantization grid must be > 0");
    dyn_view d;
    int rc = dyn_view_get(dl, &d, err);
    if (rc) return rc;
    fitp p = {.kern = d.kern, .nu = dyn_tensor_numel(&d.u->value),
              .nv = dyn_tensor_numel(&d.v->value), .nl = dyn_tensor_numel(&d.lam->value)};
    p.np = p.nu + p.nv + p.nl + 1;
    float *th = malloc((size_t)p.np * sizeof(float));
    if (!th) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    theta_get(&d, th);
    theta_quantize(&p, th, delta);
    theta_put(&d, th);
    free(th);
    return dl->ops->prepare ? dl->ops->prepare(dl, err) : 0;
}

/* Re-solves λ and c in closed form (fp_init_lsq: least squares for the current states) and
 * keeps the result when it lowers the data-free loss (fast path only). scratch: np floats.
 * Returns 0 or DYN_ENOMEM. */
static int fp_refit_lc(fitp *p, float *th, float *scratch, dyn_err *err) {
    p->nrows = p->m;
    const double l0 = fp_loss_step(p, th, NULL);
    memcpy(scratch, th, (size_t)p->np * sizeof(float));
    int rc = fp_init_lsq(p, scratch, err);
    if (rc) return rc;
    if (fp_loss_step(p, scratch, NULL) < l0) memcpy(th, scratch, (size_t)p->np * sizeof(float));
    return 0;
}

/* Puts the fit's Adam steps on the GPU when it can run them (fit_cuda.c: the fast data-free
 * l1 path); res->note names the device, or says why the fit stays on the CPU. */
static void fit_gpu_setup(fitp *p, const dyn_fit_opts *o, dyn_fit_result *res) {
    const size_t nn = sizeof res->note;
    p->note = res->note;
    if (!p->fast) {
        snprintf(res->note, nn,
                 "cpu (the GPU runs the data-free l1 fit with fit_algo fast; this fit is %s%s)",
                 p->act ? "activation-aware" : p->kern != DYN_KERNEL_L1 ? "of kernel " : "",
                 p->act                       ? ""
                 : p->kern != DYN_KERNEL_L1   ? dyn_kernel_name(p->kern)
                                              : "fit_algo reference");
        return;
    }
    dyn_err gerr = {0};
    if (dyn__fit_gpu_new(o->cuda, p->m, p->n, p->K, p->H, p->q, p->wp, &p->gpu, &gerr))
        snprintf(res->note, nn, "cpu (no GPU for the fit: %s)", gerr.msg);
    else
        snprintf(res->note, nn, "%s", dyn__fit_gpu_name(p->gpu));
}

int dyn_fit_layer(dyn_layer *dl, const float *w, const float *cov, dyn_fit_mode mode, int warm,
                  const dyn_fit_opts *o, dyn_fit_result *res, dyn_err *err) {
    dyn_fit_data fd = {.cov = cov};
    return dyn_fit_layer_data(dl, w, cov ? &fd : NULL, mode, warm, o, res, err);
}

int dyn_fit_layer_data(dyn_layer *dl, const float *w, const dyn_fit_data *fd, dyn_fit_mode mode,
                       int warm, const dyn_fit_opts *o, dyn_fit_result *res, dyn_err *err) {
    const float *cov = fd ? fd->cov : NULL;
    memset(res, 0, sizeof *res);
    res->out_rel_err = -1;
    const double t0 = dyn_now();
    if (mode == DYN_FIT_ACTIVATION && !cov)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': the activation-aware fit needs the input covariance "
                           "(calibration data)",
                           dl->name);
    if (o->steps < 0 || !(o->lr > 0) || o->restarts < 1 || o->quant < 0)
        return dyn_err_set(err, DYN_EINVAL, "fit options: steps >= 0, lr > 0, restarts >= 1, "
                                            "quant >= 0");
    if (o->algo < 0 || o->algo > 1 || !(o->sample > 0 && o->sample <= 1) ||
        !(o->plateau >= 0 && o->plateau < 1))
        return dyn_err_set(err, DYN_EINVAL, "fit options: algo 0 or 1, sample in (0, 1], "
                                            "plateau in [0, 1)");
    dyn_view d;
    int rc = dyn_view_get(dl, &d, err);
    if (rc) return rc;
    fitp p;
    if ((rc = fitp_make(&p, &d, w, fd, mode == DYN_FIT_ACTIVATION, err)) ||
        (o->algo == 0 && p.kern == DYN_KERNEL_L1 && !p.act && (rc = fitp_fast_init(&p, err)))) {
        fitp_free(&p);
        return rc;
    }
    if (o->device == DYN_DEV_CUDA) fit_gpu_setup(&p, o, res);
    float *th = malloc((size_t)p.np * sizeof(float)), *best = malloc((size_t)p.np * sizeof(float));
    float *grad = malloc((size_t)p.np * sizeof(float)), *m1 = malloc((size_t)p.np * sizeof(float)),
          *m2 = malloc((size_t)p.np * sizeof(float));
    if (!th || !best || !grad || !m1 || !m2) {
        rc = dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", dl->name);
        goto done;
    }
    dyn_rng rng;
    dyn_rng_seed(&rng, o->seed);
    double last_report = 0;
    fit_run f = {.p = &p, .th = th, .grad = grad, .m1 = m1, .m2 = m2, .o = o,
                 .steps_done = &res->steps, .last_report = &last_report, .rng = &rng, .t0 = t0};
    /* algo 0: λ and c after rounding come from least squares, not from Adam */
    const int qsteps = o->quant > 0 && !p.fast
                           ? (o->quant_steps >= 0 ? o->quant_steps : o->steps / 10) : 0;
    const int short_steps = o->restarts > 1 ? DYN_MAX(10, o->steps / 10) : 0;
    const double total = (double)o->restarts * short_steps + o->steps + qsteps + 1;
    int cancelled = 0;
    double best_loss = INFINITY;
    if (warm) {
        theta_get(&d, best); /* balanced range for Adam (W unchanged) */
        dyn_sys_rescale(best, p.nu, best + p.nu, p.nv, best + p.nu + p.nv, p.nl, p.kern);
    } else {
        for (int c = 0; c < o->restarts && !cancelled; c++) {
            if ((rc = fp_init(&p, th, o->init, &rng, err))) goto done;
            double l = fp_loss(&p, th, NULL), wr, orl;
            fp_rel_errs(&p, &wr, &orl);
            if (c == 0 || wr < res->init_rel_err) res->init_rel_err = wr;
            if (short_steps) {
                f.frac0 = (double)c * short_steps / total;
                f.frac1 = (double)(c + 1) * short_steps / total;
                l = adam_run(&f, short_steps, &cancelled);
                if (!cancelled) l = fp_loss(&p, th, NULL);
            }
            if (!cancelled && (c == 0 || l < best_loss)) {
                best_loss = l;
                memcpy(best, th, (size_t)p.np * sizeof(float));
            }
        }
        if (cancelled && !isfinite(best_loss)) memcpy(best, th, (size_t)p.np * sizeof(float));
    }
    if (warm) {
        fp_loss(&p, best, NULL);
        double orl;
        fp_rel_errs(&p, &res->init_rel_err, &orl);
    }
    memcpy(th, best, (size_t)p.np * sizeof(float));
    if (!cancelled && o->steps > 0) {
        f.frac0 = (double)o->restarts * short_steps / total;
        f.frac1 = f.frac0 + o->steps / total;
        f.main_run = 1;
        double l = adam_run(&f, o->steps, &cancelled);
        (void)l;
        f.main_run = 0;
    }
    fp_loss(&p, th, NULL);
    fp_rel_errs(&p, &res->rel_err_float, &res->out_rel_err);
    if (!cancelled && o->quant > 0) {
        theta_quantize(&p, th, o->quant);
        if (p.fast && (rc = fp_refit_lc(&p, th, grad, err))) goto done;
        f.from = p.nu + p.nv; /* states frozen on the grid: λ and c only */
        f.frac0 = f.frac1;
        f.frac1 = 1.0;
        if (qsteps > 0) adam_run(&f, qsteps, &cancelled);
    }
    fp_loss(&p, th, NULL);
    fp_rel_errs(&p, &res->rel_err, &res->out_rel_err);
    if (!o->quant) res->rel_err_float = res->rel_err;
    theta_put(&d, th);
    if (dl->ops->prepare && (rc = dl->ops->prepare(dl, err))) goto done;
    /* a cancelled fit has not done its share: reporting 1.0 made the job's progress jump */
    if (o->progress && !cancelled) o->progress(o->progress_ctx, 1.0);
    if (cancelled) rc = dyn_err_set(err, DYN_ECANCEL, "layer '%s': fitting cancelled", dl->name);
done:
    res->seconds = dyn_now() - t0;
    res->device = p.gpu ? DYN_DEV_CUDA : DYN_DEV_CPU;
    free(th);
    free(best);
    free(grad);
    free(m1);
    free(m2);
    fitp_free(&p);
    return rc;
}

/* The loss at dl's θ: fused (rows / nrows as dyn__fit_loss_l1) or the reference passes. */
static double fit_loss_at(dyn_layer *dl, const float *w, const dyn_fit_data *fd, int act,
                          int fused, const int *rows, int nrows, float *grad, dyn_err *err) {
    dyn_view d;
    if (dyn_view_get(dl, &d, err)) return NAN;
    if (fused && d.kern != DYN_KERNEL_L1) {
        dyn_err_set(err, DYN_EINVAL, "layer '%s': the fused pass is for the l1 kernel", dl->name);
        return NAN;
    }
    fitp p;
    if (fitp_make(&p, &d, w, fd, act, err) || (fused && fitp_fast_init(&p, err))) {
        fitp_free(&p);
        return NAN;
    }
    float *th = malloc((size_t)p.np * sizeof(float));
    double loss = NAN;
    if (th) {
        theta_get(&d, th);
        if (rows) {
            memcpy(p.rows, rows, (size_t)nrows * sizeof(int));
            p.nrows = nrows;
        }
        loss = fused ? fp_loss_l1(&p, th, grad) : fp_loss(&p, th, grad);
    } else {
        dyn_err_set(err, DYN_ENOMEM, "out of memory");
    }
    free(th);
    fitp_free(&p);
    return loss;
}

double dyn__fit_loss(dyn_layer *dl, const float *w, const dyn_fit_data *fd, int act, float *grad,
                     dyn_err *err) {
    return fit_loss_at(dl, w, fd, act, 0, NULL, 0, grad, err);
}

double dyn__fit_loss_l1(dyn_layer *dl, const float *w, const int *rows, int nrows, float *grad,
                        dyn_err *err) {
    return fit_loss_at(dl, w, NULL, 0, 1, rows, nrows, grad, err);
}
