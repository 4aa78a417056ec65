/* materialize.c — W from the states, the state gradient from G = ∂L/∂W, and the plain
 * reference implementations every other path is tested against.
 *
 * Rows of W are independent, so materialization and the row-side gradient (du, dλ, dc) run
 * OpenMP over rows; the column-side gradient (dv) runs a second pass over column blocks so
 * that each thread owns its dv entries (no private copies, no allocation). Inner loops run
 * over a block of j with the state slice v[h][k][j..] contiguous: they vectorize.
 */
#include <math.h>
#include <string.h>

#include "dyn.h"

#define MAT_JB 256 /* column block of the row-parallel passes */
#define DV_JB 64   /* column block owned by one thread in the dv pass */

int dyn_kernel_parse(const char *s, dyn_kernel *k) {
    if (!s) return -1;
    if (strcmp(s, "l1") == 0) *k = DYN_KERNEL_L1;
    else if (strcmp(s, "l2") == 0) *k = DYN_KERNEL_L2;
    else if (strcmp(s, "inv") == 0) *k = DYN_KERNEL_INV;
    else return -1;
    return 0;
}

const char *dyn_exec_name(int e) {
    return e == DYN_EXEC_NATIVE ? "native" : e == DYN_EXEC_MATERIALIZED ? "materialized" : "auto";
}

int dyn_mode_parse(const char *lname, const char *kern_key, const char *kern, const char *exec,
                   dyn_kernel *k, int *ex, dyn_err *err) {
    if (dyn_kernel_parse(kern, k))
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': %s '%s' is not one of \"l1\", \"l2\", \"inv\"", lname,
                           kern_key, kern);
    if (strcmp(exec, "native") == 0) *ex = DYN_EXEC_NATIVE;
    else if (strcmp(exec, "materialized") == 0) *ex = DYN_EXEC_MATERIALIZED;
    else if (strcmp(exec, "auto") == 0) *ex = DYN_EXEC_AUTO;
    else
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': exec '%s' is not one of \"native\", \"materialized\", "
                           "\"auto\"",
                           lname, exec);
    if (*ex == DYN_EXEC_NATIVE && *k != DYN_KERNEL_L1)
        return dyn_err_set(err, DYN_EUNSUP,
                           "layer '%s': native execution needs %s \"l1\" (got \"%s\"); use "
                           "exec \"materialized\" or \"auto\"",
                           lname, kern_key, kern);
    return 0;
}

const char *dyn_kernel_name(dyn_kernel k) {
    switch (k) {
    case DYN_KERNEL_L1: return "l1";
    case DYN_KERNEL_L2: return "l2";
    case DYN_KERNEL_INV: return "inv";
    default: return "?";
    }
}

/* Squared distances of u_i^h to v_j^h for j in [j0, j0+nb). */
static inline void block_d2(const dyn_sys *s, int h, int i, int j0, int nb, float *d2) {
    for (int j = 0; j < nb; j++) d2[j] = 0.0f;
    for (int k = 0; k < s->q; k++) {
        int64_t hk = (int64_t)h * s->q + k;
        const float a = s->u[hk * s->m + i];
        const float *vb = s->v + hk * s->n + j0;
#pragma omp simd
        for (int j = 0; j < nb; j++) {
            float df = a - vb[j];
            d2[j] += df * df;
        }
    }
}

void dyn_sys_materialize(const dyn_sys *s, float *w) {
    const int m = s->m, n = s->n, H = s->H, q = s->q;
#pragma omp parallel for schedule(static) if ((int64_t)m * n * H * q > 65536)
    for (int i = 0; i < m; i++) {
        float acc[MAT_JB], d[MAT_JB];
        for (int j0 = 0; j0 < n; j0 += MAT_JB) {
            const int nb = DYN_MIN(MAT_JB, n - j0);
            for (int j = 0; j < nb; j++) acc[j] = s->c;
            for (int h = 0; h < H; h++) {
                const float lam = s->lambda[h];
                if (s->kernel == DYN_KERNEL_L1) {
                    for (int j = 0; j < nb; j++) d[j] = 0.0f;
                    for (int k = 0; k < q; k++) {
                        int64_t hk = (int64_t)h * q + k;
                        const float a = s->u[hk * m + i];
                        const float *vb = s->v + hk * n + j0;
#pragma omp simd
                        for (int j = 0; j < nb; j++) d[j] += fabsf(a - vb[j]);
                    }
#pragma omp simd
                    for (int j = 0; j < nb; j++) acc[j] += lam * d[j];
                } else {
                    block_d2(s, h, i, j0, nb, d);
                    if (s->kernel == DYN_KERNEL_L2) {
                        for (int j = 0; j < nb; j++) acc[j] += lam * sqrtf(d[j] + DYN_NORM_EPS2);
                    } else {
                        for (int j = 0; j < nb; j++)
                            acc[j] += lam / (sqrtf(d[j] + DYN_NORM_EPS2) + DYN_INV_EPS);
                    }
                }
            }
            memcpy(w + (int64_t)i * n + j0, acc, (size_t)nb * sizeof(float));
        }
    }
}

/* For l2/inv: from squared distances d2 and G entries g, fills phi[j] and coef[j] such that
 * ∂(g·λ·φ)/∂u_k = coef[j]·(u_k − v_jk). */
static inline void block_coef(dyn_kernel kern, float lam, const float *d2, const float *g, int nb,
                              float *phi, float *coef) {
    /* (no `omp simd` here: sqrtf with errno semantics does not vectorize under clang) */
    if (kern == DYN_KERNEL_L2) {
        for (int j = 0; j < nb; j++) {
            float r = sqrtf(d2[j] + DYN_NORM_EPS2);
            phi[j] = r;
            coef[j] = g[j] * lam / r;
        }
    } else {
        for (int j = 0; j < nb; j++) {
            float r = sqrtf(d2[j] + DYN_NORM_EPS2), re = r + DYN_INV_EPS;
            phi[j] = 1.0f / re;
            coef[j] = -g[j] * lam / (r * re * re);
        }
    }
}

void dyn_sys_grad_materialized(const dyn_sys *s, const float *g, const dyn_sys_grad *out) {
    const int m = s->m, n = s->n, H = s->H, q = s->q;
    const int par = (int64_t)m * n * H * q > 65536;
    const int need_rows = out->du || out->dlambda || out->dc;
    if (need_rows) {
        double dc = 0.0;
        double *dl = out->dlambda ? calloc((size_t)H, sizeof(double)) : NULL;
        DYN_ASSERT(!out->dlambda || dl);
#pragma omp parallel if (par) reduction(+ : dc)
        {
            double *dlp = out->dlambda ? calloc((size_t)H, sizeof(double)) : NULL;
            DYN_ASSERT(!out->dlambda || dlp);
            float d[MAT_JB], phi[MAT_JB], coef[MAT_JB];
#pragma omp for schedule(static)
            for (int i = 0; i < m; i++) {
                const float *grow = g + (int64_t)i * n;
                for (int j0 = 0; j0 < n; j0 += MAT_JB) {
                    const int nb = DYN_MIN(MAT_JB, n - j0);
                    const float *gb = grow + j0;
                    float gs = 0.0f;
#pragma omp simd reduction(+ : gs)
                    for (int j = 0; j < nb; j++) gs += gb[j];
                    dc += gs;
                    for (int h = 0; h < H; h++) {
                        const float lam = s->lambda[h];
                        if (s->kernel == DYN_KERNEL_L1) {
                            float lsum = 0.0f;
                            for (int k = 0; k < q; k++) {
                                int64_t hk = (int64_t)h * q + k;
                                const float a = s->u[hk * m + i];
                                const float *vb = s->v + hk * n + j0;
                                float sg = 0.0f, ph = 0.0f;
#pragma omp simd reduction(+ : sg, ph)
                                for (int j = 0; j < nb; j++) {
                                    float df = a - vb[j];
                                    float sgn = (float)(df > 0.0f) - (float)(df < 0.0f);
                                    sg += gb[j] * sgn;
                                    ph += gb[j] * fabsf(df);
                                }
                                if (out->du) out->du[hk * m + i] += lam * sg;
                                lsum += ph;
                            }
                            if (dlp) dlp[h] += lsum;
                        } else {
                            block_d2(s, h, i, j0, nb, d);
                            block_coef(s->kernel, lam, d, gb, nb, phi, coef);
                            if (dlp) {
                                float ph = 0.0f;
#pragma omp simd reduction(+ : ph)
                                for (int j = 0; j < nb; j++) ph += gb[j] * phi[j];
                                dlp[h] += ph;
                            }
                            if (out->du) {
                                for (int k = 0; k < q; k++) {
                                    int64_t hk = (int64_t)h * q + k;
                                    const float a = s->u[hk * m + i];
                                    const float *vb = s->v + hk * n + j0;
                                    float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
                                    for (int j = 0; j < nb; j++) acc += coef[j] * (a - vb[j]);
                                    out->du[hk * m + i] += acc;
                                }
                            }
                        }
                    }
                }
            }
            if (dlp) {
#pragma omp critical(dyn_grad_mat_dl)
                for (int h = 0; h < H; h++) dl[h] += dlp[h];
                free(dlp);
            }
        }
        if (out->dc) out->dc[0] += (float)dc;
        if (dl) {
            for (int h = 0; h < H; h++) out->dlambda[h] += (float)dl[h];
            free(dl);
        }
    }
    if (!out->dv) return;
    const int nblk = (n + DV_JB - 1) / DV_JB;
#pragma omp parallel for schedule(dynamic, 1) if (par)
    for (int b = 0; b < nblk; b++) {
        const int j0 = b * DV_JB, nb = DYN_MIN(DV_JB, n - j0);
        float d[DV_JB], phi[DV_JB], coef[DV_JB];
        for (int i = 0; i < m; i++) {
            const float *gb = g + (int64_t)i * n + j0;
            for (int h = 0; h < H; h++) {
                const float lam = s->lambda[h];
                if (s->kernel == DYN_KERNEL_L1) {
                    for (int k = 0; k < q; k++) {
                        int64_t hk = (int64_t)h * q + k;
                        const float a = s->u[hk * m + i];
                        const float *vb = s->v + hk * n + j0;
                        float *dvb = out->dv + hk * n + j0;
#pragma omp simd
                        for (int j = 0; j < nb; j++) {
                            float df = a - vb[j];
                            float sgn = (float)(df > 0.0f) - (float)(df < 0.0f);
                            dvb[j] -= lam * gb[j] * sgn;
                        }
                    }
                } else {
                    block_d2(s, h, i, j0, nb, d);
                    block_coef(s->kernel, lam, d, gb, nb, phi, coef);
                    for (int k = 0; k < q; k++) {
                        int64_t hk = (int64_t)h * q + k;
                        const float a = s->u[hk * m + i];
                        const float *vb = s->v + hk * n + j0;
                        float *dvb = out->dv + hk * n + j0;
#pragma omp simd
                        for (int j = 0; j < nb; j++) dvb[j] -= coef[j] * (a - vb[j]);
                    }
                }
            }
        }
    }
}

/* ---- reference implementations ------------------------------------------------------------ */

/* φ_h(i, j) and, when grad is not NULL, ∂φ/∂u_k for k < q (∂φ/∂v_k is its negative). */
static double ref_phi(const dyn_sys *s, int h, int i, int j, double *grad) {
    double d2 = 0.0, l1 = 0.0;
    for (int k = 0; k < s->q; k++) {
        int64_t hk = (int64_t)h * s->q + k;
        double df = (double)s->u[hk * s->m + i] - (double)s->v[hk * s->n + j];
        d2 += df * df;
        l1 += fabs(df);
    }
    double r = sqrt(d2 + (double)DYN_NORM_EPS2), e = (double)DYN_INV_EPS;
    for (int k = 0; grad && k < s->q; k++) {
        int64_t hk = (int64_t)h * s->q + k;
        double df = (double)s->u[hk * s->m + i] - (double)s->v[hk * s->n + j];
        switch (s->kernel) {
        case DYN_KERNEL_L1: grad[k] = (df > 0) - (df < 0); break;
        case DYN_KERNEL_L2: grad[k] = df / r; break;
        default: grad[k] = -df / (r * (r + e) * (r + e)); break;
        }
    }
    switch (s->kernel) {
    case DYN_KERNEL_L1: return l1;
    case DYN_KERNEL_L2: return r;
    default: return 1.0 / (r + e);
    }
}

double dyn_sys_ref_weight(const dyn_sys *s, int i, int j) {
    double w = s->c;
    for (int h = 0; h < s->H; h++) w += (double)s->lambda[h] * ref_phi(s, h, i, j, NULL);
    return w;
}

/* Each weight is computed once from the definition; products accumulate in double. */
void dyn_sys_ref_forward(const dyn_sys *s, const float *x, int N, float *y) {
    double *acc = calloc((size_t)N * s->m + 1, sizeof(double));
    DYN_ASSERT(acc);
    for (int i = 0; i < s->m; i++)
        for (int j = 0; j < s->n; j++) {
            double w = dyn_sys_ref_weight(s, i, j);
            for (int b = 0; b < N; b++)
                acc[(int64_t)b * s->m + i] += w * (double)x[(int64_t)b * s->n + j];
        }
    for (int64_t t = 0; t < (int64_t)N * s->m; t++) y[t] = (float)acc[t];
    free(acc);
}

void dyn_sys_ref_transpose(const dyn_sys *s, const float *d, int N, float *dx) {
    double *acc = calloc((size_t)N * s->n + 1, sizeof(double));
    DYN_ASSERT(acc);
    for (int i = 0; i < s->m; i++)
        for (int j = 0; j < s->n; j++) {
            double w = dyn_sys_ref_weight(s, i, j);
            for (int b = 0; b < N; b++)
                acc[(int64_t)b * s->n + j] += w * (double)d[(int64_t)b * s->m + i];
        }
    for (int64_t t = 0; t < (int64_t)N * s->n; t++) dx[t] = (float)acc[t];
    free(acc);
}

void dyn_sys_ref_grad(const dyn_sys *s, const float *x, const float *d, int N,
                      const dyn_sys_grad *out) {
    const int m = s->m, n = s->n, H = s->H, q = s->q;
    double *du = calloc((size_t)H * q * m, sizeof(double));
    double *dv = calloc((size_t)H * q * n, sizeof(double));
    double *dl = calloc((size_t)H, sizeof(double));
    double *gr = calloc((size_t)q, sizeof(double));
    DYN_ASSERT(du && dv && dl && gr);
    double dc = 0.0;
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double g = 0.0;
            for (int b = 0; b < N; b++)
                g += (double)d[(int64_t)b * m + i] * (double)x[(int64_t)b * n + j];
            dc += g;
            for (int h = 0; h < H; h++) {
                double ph = ref_phi(s, h, i, j, gr);
                dl[h] += g * ph;
                for (int k = 0; k < q; k++) {
                    int64_t hk = (int64_t)h * q + k;
                    du[hk * m + i] += g * (double)s->lambda[h] * gr[k];
                    dv[hk * n + j] -= g * (double)s->lambda[h] * gr[k];
                }
            }
        }
    if (out->du)
        for (int64_t t = 0; t < (int64_t)H * q * m; t++) out->du[t] += (float)du[t];
    if (out->dv)
        for (int64_t t = 0; t < (int64_t)H * q * n; t++) out->dv[t] += (float)dv[t];
    if (out->dlambda)
        for (int h = 0; h < H; h++) out->dlambda[h] += (float)dl[h];
    if (out->dc) out->dc[0] += (float)dc;
    free(du);
    free(dv);
    free(dl);
    free(gr);
}
