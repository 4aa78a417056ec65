/* kern_dyn.h — kernel bodies of the DyN layers' device op (engine/cuda/op_dyn.c, launched by
 * dyn_lin.cu) and of the conversion fit on the GPU (engine/convert/fit_cuda.c, launched by
 * fit.cu). Rules and testing: kern.h; every body here is run over all its indices on the host
 * by tests/unit/test_cuda_kern_dyn.c and compared with the CPU code it stands in for.
 *
 * Layouts: row-major, batch first ([N][features]) as the engine's activations, except the
 * native kernels' feature-major [features][N] (engine/dyn/native.c). */
#ifndef DYN_CUDA_KERN_DYN_H
#define DYN_CUDA_KERN_DYN_H

#include "kern.h"

/* Transpose: one index t in [0, rows·cols) = one element of dst [cols][rows]:
 * dst[c][r] = src[r][c] (reads of a warp are strided, its writes consecutive). */
DYN_KERN void dyn_k_transpose(int64_t t, int64_t rows, int64_t cols, const float *src,
                              float *dst) {
    const int64_t c = t / rows, r = t % rows;
    dst[t] = src[r * cols + c];
}

/* Bias over rows: one index t in [0, N·out) = one element of y [N][out]: y[t] += b[t % out]. */
DYN_KERN void dyn_k_add_bias_rows(int64_t t, int out, const float *b, float *y) {
    y[t] += b[t % out];
}

/* Bias gradient: one index i in [0, out) = one bias entry, summing its column of dy [N][out]
 * in row order (the CPU layer's order): db[i] += Σ_r dy[r][i]. A warp reads consecutive
 * entries of one row. */
DYN_KERN void dyn_k_bias_grad(int64_t i, int64_t N, int out, const float *dy, float *db) {
    float s = 0.0f;
    for (int64_t r = 0; r < N; r++) s += dy[r * out + i];
    db[i] += s;
}

/* ---- the conversion fit (fit_cuda.c) -------------------------------------------------------- */

/* Residual of the data-free fit: one index t over the K² blocks of Ŵ (materialized with c = 0)
 * and of the permuted dense weight wp (same layout): g[t] = gs·(ŵ[t] + c − wp[t]), in place
 * (g may be ŵ). c is read from device memory (θ's last entry): it changes every step. */
DYN_KERN void dyn_k_fit_residual(int64_t t, const float *what, const float *c, const float *wp,
                                 float gs, float *g) {
    g[t] = gs * (what[t] + c[0] - wp[t]);
}

/* The state gradient of one l1 system (m, n, H, q; states u [H·q][m], v [H·q][n], λ [H]) from
 * G = ∂loss/∂Ŵ [m][n] — what dyn_sys_grad_materialized computes — in three gathers whose
 * reads are coalesced on the device and whose sums have a fixed order (no atomics):
 *   du: one index t = (hk, i) over H·q·m, reading Gt = Gᵀ [n][m] (a warp: 32 consecutive i):
 *       du[hk][i] += λ_h Σ_j G[i][j] sign(u[hk][i] − v[hk][j]);
 *   dv: one index t = (h, j) over H·n, reading G (a warp: 32 consecutive j):
 *       dv[hk][j] −= λ_h Σ_i G[i][j] sign(u[hk][i] − v[hk][j]) for each k, and the column
 *       partials lpart[h][j] = Σ_i G[i][j] φ_h(i, j) (φ_h = Σ_k |u − v|), and for h = 0
 *       cpart[j] = Σ_i G[i][j];
 *   lc: one index h in [0, H]: dλ[h] += Σ_j lpart[h][j] (h < H), dc += Σ_j cpart[j] (h = H). */
DYN_KERN float dyn_k_sign(float d) { return (float)(d > 0.0f) - (float)(d < 0.0f); }

DYN_KERN void dyn_k_fit_du(int64_t t, int m, int n, int q, const float *u, const float *v,
                           const float *lambda, const float *gt, float *du) {
    const int64_t hk = t / m, i = t % m;
    const float a = u[t], *vb = v + hk * n;
    float s = 0.0f;
    for (int j = 0; j < n; j++) s += gt[(int64_t)j * m + i] * dyn_k_sign(a - vb[j]);
    du[t] += lambda[hk / q] * s;
}

DYN_KERN void dyn_k_fit_dv(int64_t t, int m, int n, int q, const float *u, const float *v,
                           const float *lambda, const float *g, float *dv, float *lpart,
                           float *cpart) {
    const int64_t h = t / n, j = t % n;
    const float lam = lambda[h];
    float pl = 0.0f, pc = 0.0f;
    if (q == 1) {
        const float b = v[h * n + j], *uh = u + h * m;
        float s = 0.0f;
        for (int i = 0; i < m; i++) {
            const float gij = g[(int64_t)i * n + j], d = uh[i] - b;
            s += gij * dyn_k_sign(d);
            pl += gij * fabsf(d);
            pc += gij;
        }
        dv[t] -= lam * s;
    } else { /* each k's sum goes straight to its dv entry (owned by this index) */
        for (int i = 0; i < m; i++) {
            const float gij = g[(int64_t)i * n + j];
            float phi = 0.0f;
            for (int k = 0; k < q; k++) {
                const int64_t hk = h * q + k;
                const float d = u[hk * m + i] - v[hk * n + j];
                phi += fabsf(d);
                dv[hk * n + j] -= lam * gij * dyn_k_sign(d);
            }
            pl += gij * phi;
            pc += gij;
        }
    }
    lpart[t] = pl;
    if (h == 0) cpart[j] = pc;
}

DYN_KERN void dyn_k_fit_lc(int64_t h, int n, int H, const float *lpart, const float *cpart,
                           float *dlambda, float *dc) {
    const float *p = h < H ? lpart + h * n : cpart;
    float s = 0.0f;
    for (int j = 0; j < n; j++) s += p[j];
    if (h < H) dlambda[h] += s;
    else dc[0] += s;
}

/* One Adam step of coordinate i (fit.c's adam_run, float): m1 = b1 m1 + (1 − b1) g,
 * m2 = b2 m2 + (1 − b2) g², θ −= lr (m1 / bc1) / (sqrt(m2 / bc2) + eps). */
DYN_KERN void dyn_k_adam(int64_t i, float lr, float b1, float b2, float bc1, float bc2, float eps,
                         const float *g, float *m1, float *m2, float *th) {
    m1[i] = b1 * m1[i] + (1 - b1) * g[i];
    m2[i] = b2 * m2[i] + (1 - b2) * g[i] * g[i];
    th[i] -= lr * (m1[i] / bc1) / (sqrtf(m2[i] / bc2) + eps);
}

#endif
