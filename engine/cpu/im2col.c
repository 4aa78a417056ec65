#include "im2col.h"

#include <string.h>

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

void dyn_im2col(const dyn_conv_geom *g, const float *x, float *cols) {
    const int64_t P = (int64_t)g->OH * g->OW, NP = (int64_t)g->N * P;
    const int rows = g->C * g->KH * g->KW;
#pragma omp parallel for schedule(static) if ((int64_t)rows * NP > 32768)
    for (int row = 0; row < rows; row++) {
        int c = row / (g->KH * g->KW), r = (row / g->KW) % g->KH, t = row % g->KW;
        float *dst = cols + (int64_t)row * NP;
        for (int n = 0; n < g->N; n++) {
            const float *src = x + ((int64_t)n * g->C + c) * g->H * g->W;
            for (int oy = 0; oy < g->OH; oy++) {
                int iy = oy * g->SH - g->PH + r * g->DH;
                float *d = dst + (int64_t)n * P + (int64_t)oy * g->OW;
                if (iy < 0 || iy >= g->H) {
                    memset(d, 0, (size_t)g->OW * sizeof(float));
                    continue;
                }
                const float *s = src + (int64_t)iy * g->W;
                int ix0 = -g->PW + t * g->DW;
                if (g->SW == 1 && ix0 >= 0 && ix0 + g->OW <= g->W) {
                    memcpy(d, s + ix0, (size_t)g->OW * sizeof(float));
                    continue;
                }
                for (int ox = 0; ox < g->OW; ox++) {
                    int ix = ix0 + ox * g->SW;
                    d[ox] = (ix >= 0 && ix < g->W) ? s[ix] : 0.0f;
                }
            }
        }
    }
}

void dyn_col2im(const dyn_conv_geom *g, const float *cols, float *dx) {
    const int64_t P = (int64_t)g->OH * g->OW, NP = (int64_t)g->N * P;
    const int KK = g->KH * g->KW;
    /* Parallel over (n, c): each output plane is written by one thread only. */
#pragma omp parallel for schedule(static) if ((int64_t)g->N * g->C * KK * P > 32768)
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
    }
}

void dyn_knp_to_nkp(const float *src, float *dst, int N, int K, int64_t P) {
#pragma omp parallel for collapse(2) schedule(static) if ((int64_t)N * K * P > 65536)
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k++)
            memcpy(dst + ((int64_t)n * K + k) * P, src + ((int64_t)k * N + n) * P,
                   (size_t)P * sizeof(float));
}

void dyn_nkp_to_knp(const float *src, float *dst, int N, int K, int64_t P) {
#pragma omp parallel for collapse(2) schedule(static) if ((int64_t)N * K * P > 65536)
    for (int k = 0; k < K; k++)
        for (int n = 0; n < N; n++)
            memcpy(dst + ((int64_t)k * N + n) * P, src + ((int64_t)n * K + k) * P,
                   (size_t)P * sizeof(float));
}
