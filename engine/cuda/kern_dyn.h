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

/* One Adam step of coordinate i (fit.c's adam_run, float): m1 = b1 m1 + (1 − b1) g,
 * m2 = b2 m2 + (1 − b2) g², θ −= lr (m1 / bc1) / (sqrt(m2 / bc2) + eps). */
DYN_KERN void dyn_k_adam(int64_t i, float lr, float b1, float b2, float bc1, float bc2, float eps,
                         const float *g, float *m1, float *m2, float *th) {
    m1[i] = b1 * m1[i] + (1 - b1) * g[i];
    m2[i] = b2 * m2[i] + (1 - b2) * g[i] * g[i];
    th[i] -= lr * (m1[i] / bc1) / (sqrtf(m2[i] / bc2) + eps);
}

#endif
