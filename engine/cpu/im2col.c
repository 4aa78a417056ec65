#include "im2col.h"

#include <string.h>

#include <cblas.h>

#include "../base.h"
#include "par.h"

int dyn_conv_geom_out(dyn_conv_geom *g) {
    if (g->N < 1 || g->C < 1 || g->H < 1 || g->W < 1 || g->KH < 1 || g->KW < 1 || g->SH < 1 ||
        g->SW < 1 || g->PH < 0 || g->PW < 0 || g->DH < 1 || g->DW < 1)
        return -1;
    int64_t eh = (int64_t)g->DH * (g->KH - 1) + 1, ew = (int64_t)g->DW * (g->KW - 1) + 1;
    int64_t oh = ((int64_t)g->H + 2 * g->PH - eh) / g->SH + 1;
    int64_t ow = ((int64_t)g->W + 2 * g->PW - ew) / g->SW + 1;
    if ((int64_t)g->H + 2 * g->PH < eh || (int64_t)g->W + 2 * g->PW < ew || oh < 1 || ow < 1 ||
        oh > (1 << 20) || ow > (1 << 20))
        return -1;
    g->OH = (int)oh;
    g->OW = (int)ow;
    return 0;
}

/* Reference: the definition, one tap at a time (tests compare dyn_im2col against it). */
void dyn__im2col_ref(const dyn_conv_geom *g, const float *x, float *cols) {
    const int64_t P = (int64_t)g->OH * g->OW, NP = (int64_t)g->N * P;
    const int rows = g->C * g->KH * g->KW;
    for (int row = 0; row < rows; row++) {
        int c = row / (g->KH * g->KW), r = (row / g->KW) % g->KH, t = row % g->KW;
        for (int n = 0; n < g->N; n++)
            for (int oy = 0; oy < g->OH; oy++)
                for (int ox = 0; ox < g->OW; ox++) {
                    int iy = oy * g->SH - g->PH + r * g->DH, ix = ox * g->SW - g->PW + t * g->DW;
                    cols[(int64_t)row * NP + (int64_t)n * P + (int64_t)oy * g->OW + ox] =
                        iy >= 0 && iy < g->H && ix >= 0 && ix < g->W
                            ? x[(((int64_t)n * g->C + c) * g->H + iy) * g->W + ix]
                            : 0.0f;
                }
    }
}

/* Per row (c, r, t) the in-image output columns [lo, hi) are the same for every output row, so
 * the padding is written as two zero runs and the middle is a plain copy (stride 1) — no test
 * per element, no memcpy call per output row (rows are 10–30 floats in LeNet). */
void dyn_im2col(const dyn_conv_geom *g, const float *x, float *cols) {
    const int64_t P = (int64_t)g->OH * g->OW, NP = (int64_t)g->N * P;
    const int rows = g->C * g->KH * g->KW, OW = g->OW;
    DYN_PAR_FOR((int64_t)rows * NP > 32768,
    for (int row = 0; row < rows; row++) {
        int c = row / (g->KH * g->KW), r = (row / g->KW) % g->KH, t = row % g->KW;
        const int ix0 = -g->PW + t * g->DW;
        /* ox in [lo, hi) <=> 0 <= ix0 + ox*SW < W */
        int lo = ix0 >= 0 ? 0 : (-ix0 + g->SW - 1) / g->SW;
        int hi = ix0 >= g->W ? 0 : (g->W - ix0 + g->SW - 1) / g->SW;
        lo = DYN_MIN(lo, OW);
        hi = DYN_MAX(lo, DYN_MIN(hi, OW));
        float *dst = cols + (int64_t)row * NP;
        for (int n = 0; n < g->N; n++) {
            const float *src = x + ((int64_t)n * g->C + c) * g->H * g->W;
            for (int oy = 0; oy < g->OH; oy++) {
                int iy = oy * g->SH - g->PH + r * g->DH;
                float *d = dst + (int64_t)n * P + (int64_t)oy * OW;
                if (iy < 0 || iy >= g->H) {
                    for (int ox = 0; ox < OW; ox++) d[ox] = 0.0f;
                    continue;
                }
                const float *s = src + (int64_t)iy * g->W;
                for (int ox = 0; ox < lo; ox++) d[ox] = 0.0f;
                if (g->SW == 1)
                    for (int ox = lo; ox < hi; ox++) d[ox] = s[ix0 + ox];
                else
                    for (int ox = lo; ox < hi; ox++) d[ox] = s[ix0 + ox * g->SW];
                for (int ox = hi; ox < OW; ox++) d[ox] = 0.0f;
            }
        }
    });
}

void dyn_col2im(const dyn_conv_geom *g, const float *cols, float *dx) {
    const int64_t P = (int64_t)g->OH * g->OW, NP = (int64_t)g->N * P;
    const int KK = g->KH * g->KW;
    /* Parallel over (n, c): each output plane is written by one thread only. */
    DYN_PAR_FOR((int64_t)g->N * g->C * KK * P > 32768,
    for (int64_t nc = 0; nc < (int64_t)g->N * g->C; nc++) {
        int n = (int)(nc / g->C), c = (int)(nc % g->C);
        float *plane = dx + nc * g->H * g->W;
        memset(plane, 0, (size_t)g->H * g->W * sizeof(float));
        for (int k = 0; k < KK; k++) {
            int r = k / g->KW, t = k % g->KW;
            const float *src = cols + ((int64_t)c * KK + k) * NP + (int64_t)n * P;
            for (int oy = 0; oy < g->OH; oy++) {
                int iy = oy * g->SH - g->PH + r * g->DH;
                if (iy < 0 || iy >= g->H) continue;
                float *d = plane + (int64_t)iy * g->W;
                const float *s = src + (int64_t)oy * g->OW;
                for (int ox = 0; ox < g->OW; ox++) {
                    int ix = ox * g->SW - g->PW + t * g->DW;
                    if (ix >= 0 && ix < g->W) d[ix] += s[ox];
                }
            }
        }
    });
}

void dyn_knp_to_nkp(const float *src, float *dst, int N, int K, int64_t P) {
    DYN_PAR_FOR2((int64_t)N * K * P > 65536,
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            memcpy(dst + ((int64_t)n * K + k) * P, src + ((int64_t)k * N + n) * P,
                   (size_t)P * sizeof(float)););
}

void dyn_nkp_to_knp(const float *src, float *dst, int N, int K, int64_t P) {
    DYN_PAR_FOR2((int64_t)N * K * P > 65536,
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++)
            memcpy(dst + ((int64_t)k * N + n) * P, src + ((int64_t)n * K + k) * P,
                   (size_t)P * sizeof(float)););
}

/* Inference convolution, im2col + sgemm over chunks of images. One im2col over the whole batch
 * writes C·KH·KW floats per output position (25× the input for LeNet's first conv: 5 MB at
 * batch 64), which then streams through memory twice; a chunk of images whose columns fit in
 * L2 keeps that traffic in cache, and the chunk's [Cout][n·P] result is moved to NCHW with the
 * bias added in the same pass. */
void dyn__conv_gemm_forward(const dyn_conv_geom *g, int groups, int cout, const float *x,
                            const float *w, const float *bias, float *cols, float *tmp,
                            float *y) {
    const int64_t P = (int64_t)g->OH * g->OW, ckk = (int64_t)g->C * g->KH * g->KW;
    if (g->C <= DYN_CONV_DIRECT_MAX_C &&
        dyn__conv_direct_ok(g, groups, cout, (size_t)(ckk * g->N * P))) {
        dyn__conv_direct_forward(g, cout, x, w, bias, cols, y);
        return;
    }
    const int64_t K = ckk / groups, cog = cout / groups;
    const int64_t budget = (int64_t)DYN_CONV_CHUNK_FLOATS * DYN_MAX(1, dyn_threads_get());
    int nc = (int)DYN_MAX(1, DYN_MIN((int64_t)g->N, budget / ((ckk + cout) * P)));
    for (int n0 = 0; n0 < g->N; n0 += nc) {
        dyn_conv_geom gc = *g;
        gc.N = DYN_MIN(nc, g->N - n0);
        const int64_t NP = (int64_t)gc.N * P;
        float *yc = y + (int64_t)n0 * cout * P;
        float *out = gc.N == 1 ? yc : tmp; /* [Cout][P] already is NCHW */
        dyn_im2col(&gc, x + (int64_t)n0 * g->C * g->H * g->W, cols);
        for (int gi = 0; gi < groups; gi++)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)cog, (int)NP, (int)K, 1.0f,
                        w + gi * cog * K, (int)K, cols + gi * K * NP, (int)NP, 0.0f,
                        out + gi * cog * NP, (int)NP);
    DYN_PAR_FOR2(cout * NP > 65536,
        for (int n = 0; n < gc.N; n++)
            for (int o = 0; o < cout; o++) {
                const float *s = out + ((int64_t)o * gc.N + n) * P;
                float *d = yc + ((int64_t)n * cout + o) * P;
                const float b = bias ? bias[o] : 0.0f;
                if (s == d) {
                    if (bias)
                        for (int64_t p = 0; p < P; p++) d[p] += b;
                } else {
                    for (int64_t p = 0; p < P; p++) d[p] = s[p] + b;
                }
            });
    }
}
