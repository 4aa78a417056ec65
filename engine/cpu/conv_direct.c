/* conv_direct.c — direct convolution for inference (stride 1, dilation 1, one group).
 *
 * For few input channels im2col is the expensive part of a convolution: it writes C·KH·KW
 * floats per output position (25 per input pixel for LeNet's 5×5 first conv) and sgemm with
 * 6–16 output rows is far from peak. Here each image is copied once into a zero-padded plane
 * (no bounds tests afterwards) and each vector of 8 output positions accumulates up to 8
 * output channels in registers: per tap, one load of the input and one broadcast weight per
 * channel. Rows are computed at the padded width (a "wide" output: the taps of consecutive
 * positions are then contiguous across rows, so a 10-wide row costs 14/8 vectors, not 2) into
 * a small buffer, and the OW valid columns are copied out. The last block is shifted left to
 * end at the last position (it recomputes a few outputs rather than masking).
 * The vector code is compiled for AVX2 + FMA whatever the build's ARCH (cpu/isa.h) and runs
 * where the CPU has them; elsewhere the caller keeps im2col + sgemm (dyn__conv_direct_ok says
 * which).
 */
#include "im2col.h"

#include <string.h>

#include <omp.h>

#include "../base.h"
#include "isa.h"

#if DYN_ISA_X86
#include <immintrin.h>
#define CONV_DIRECT_VEC 1
#else
#define CONV_DIRECT_VEC 0
#endif

static int direct_threads(const dyn_conv_geom *g) {
    return DYN_MAX(1, DYN_MIN(dyn_threads_get(), g->N));
}

/* Floats of one padded image plus the slack the last row's taps read past it, rounded. */
static int64_t direct_plane(const dyn_conv_geom *g) {
    return ((int64_t)g->C * (g->H + 2 * g->PH) * (g->W + 2 * g->PW) + g->KW + 16 + 15) / 16 * 16;
}

/* Positions of the "wide" output: OH rows of the padded width. */
static int64_t direct_wide(const dyn_conv_geom *g) {
    return (int64_t)g->OH * (g->W + 2 * g->PW);
}

/* Transposed weights, then per thread one padded plane and 8 wide output rows. */
static size_t direct_ws(const dyn_conv_geom *g, int cout) {
    const int64_t wtf = ((int64_t)g->C * g->KH * g->KW * cout + 15) / 16 * 16;
    const int64_t per = direct_plane(g) + (8 * direct_wide(g) + 15) / 16 * 16;
    return (size_t)(wtf + direct_threads(g) * per);
}

int dyn__conv_direct_ok(const dyn_conv_geom *g, int groups, int cout, size_t ws_floats) {
    return CONV_DIRECT_VEC && dyn_isa() >= DYN_ISA_AVX2 && groups == 1 && g->SH == 1 &&
           g->SW == 1 && g->DH == 1 && g->DW == 1 && direct_wide(g) >= 8 && cout >= 1 &&
           direct_ws(g, cout) <= ws_floats;
}

#if CONV_DIRECT_VEC
/* OB output channels × 8 wide positions [q0, q0 + 8): the input of tap (c, r, t) for wide
 * position q is xp[c][r·wp + q + t], contiguous across rows, so no row is split into blocks. */
static inline __attribute__((always_inline)) DYN_TARGET_AVX2 void direct_block(
    const float *xp, int C, int KH, int KW, int64_t cplane, int wp, const float *wt, int cout,
    int o0, const float *bias, int64_t q0, float *out, int64_t Q, const int OB) {
    __m256 acc[8];
    for (int j = 0; j < OB; j++) acc[j] = _mm256_set1_ps(bias ? bias[o0 + j] : 0.0f);
    for (int c = 0; c < C; c++)
        for (int r = 0; r < KH; r++) {
            const float *row = xp + c * cplane + (int64_t)r * wp + q0;
            const float *wr = wt + ((int64_t)(c * KH + r) * KW) * cout + o0;
            for (int t = 0; t < KW; t++) {
                const __m256 v = _mm256_loadu_ps(row + t);
                for (int j = 0; j < OB; j++)
                    acc[j] = _mm256_fmadd_ps(_mm256_broadcast_ss(wr + (int64_t)t * cout + j), v,
                                             acc[j]);
            }
        }
    for (int j = 0; j < OB; j++) _mm256_storeu_ps(out + j * Q + q0, acc[j]);
}

typedef struct direct_ctx {
    const dyn_conv_geom *g;
    int cout;
    const float *x, *bias, *wt;
    int64_t plane, cplane, Q;
    int hp, wp;
    int64_t P;
} direct_ctx;

/* Images [n0, n1) with the workspace ws: a padded plane, then the [8][Q] wide rows. */
static DYN_TARGET_AVX2 void direct_images(const direct_ctx *cx, float *ws, int n0, int n1,
                                          float *y) {
    const dyn_conv_geom *g = cx->g;
    const int C = g->C, KH = g->KH, KW = g->KW, OH = g->OH, OW = g->OW, cout = cx->cout;
    const int wp = cx->wp;
    const int64_t cplane = cx->cplane, Q = cx->Q, P = cx->P;
    const float *wt = cx->wt, *bias = cx->bias;
    float *xp = ws, *out = ws + cx->plane;
    memset(xp, 0, (size_t)cx->plane * sizeof(float));
    for (int n = n0; n < n1; n++) {
        const float *xn = cx->x + (int64_t)n * C * g->H * g->W;
        float *yn = y + (int64_t)n * cout * P;
        for (int c = 0; c < C; c++)
            for (int iy = 0; iy < g->H; iy++)
                memcpy(xp + c * cplane + (int64_t)(iy + g->PH) * wp + g->PW,
                       xn + ((int64_t)c * g->H + iy) * g->W, (size_t)g->W * sizeof(float));
        for (int o0 = 0; o0 < cout; o0 += 8) {
            const int ob = DYN_MIN(8, cout - o0);
            for (int64_t q = 0; q < Q; q += 8) {
                const int64_t q0 = DYN_MIN(q, Q - 8); /* the last block ends at Q */
#define DIRECT_CASE(k)                                                                    \
    case k:                                                                               \
        direct_block(xp, C, KH, KW, cplane, wp, wt, cout, o0, bias, q0, out, Q, k);    \
        break;
                switch (ob) {
                    DIRECT_CASE(1)
                    DIRECT_CASE(2)
                    DIRECT_CASE(3)
                    DIRECT_CASE(4)
                    DIRECT_CASE(5)
                    DIRECT_CASE(6)
                    DIRECT_CASE(7)
                    DIRECT_CASE(8)
                }
#undef DIRECT_CASE
            }
            for (int j = 0; j < ob; j++)
                for (int oy = 0; oy < OH; oy++) {
                    const float *src = out + j * Q + (int64_t)oy * wp;
                    float *dst = yn + (int64_t)(o0 + j) * P + (int64_t)oy * OW;
                    for (int ox = 0; ox < OW; ox++) dst[ox] = src[ox];
                }
        }
    }
}
#endif

void dyn__conv_direct_forward(const dyn_conv_geom *g, int cout, const float *x, const float *w,
                              const float *bias, float *ws, float *y) {
#if CONV_DIRECT_VEC
    const int C = g->C, KH = g->KH, KW = g->KW;
    const int hp = g->H + 2 * g->PH, wp = g->W + 2 * g->PW;
    const int64_t P = (int64_t)g->OH * g->OW, plane = direct_plane(g), cplane = (int64_t)hp * wp;
    const int64_t Q = direct_wide(g), per = plane + (8 * Q + 15) / 16 * 16;
    const int64_t ckk = (int64_t)C * KH * KW;
    float *wt = ws; /* [C·KH·KW][cout] */
    for (int64_t k = 0; k < ckk; k++)
        for (int o = 0; o < cout; o++) wt[k * cout + o] = w[o * ckk + k];
    float *thr = ws + (ckk * cout + 15) / 16 * 16;
    const direct_ctx cx = {g, cout, x, bias, wt, plane, cplane, Q, hp, wp, P};
    const int nt = direct_threads(g);
    if (nt > 1) {
#pragma omp parallel num_threads(nt)
        {
            const int tid = omp_get_thread_num(), team = omp_get_num_threads();
            const int n0 = (int)((int64_t)g->N * tid / team),
                      n1 = (int)((int64_t)g->N * (tid + 1) / team);
            direct_images(&cx, thr + tid * per, n0, n1, y);
        }
    } else {
        direct_images(&cx, thr, 0, g->N, y); /* no OpenMP region: see cpu/par.h */
    }
#else
    (void)g, (void)cout, (void)x, (void)w, (void)bias, (void)ws, (void)y;
    DYN_ASSERT(!"dyn__conv_direct_forward on a build without x86 vector code");
#endif
}
