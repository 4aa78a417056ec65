/* im2col.h — batched im2col / col2im for convolutions (CPU).
 *
 * Layout: x is [N][C][H][W]; cols is [C*KH*KW][N*OH*OW]: row (c, r, t) = c*KH*KW + r*KW + t,
 * column (n, oy, ox) = n*OH*OW + oy*OW + ox. Rows of one channel group are contiguous, so a
 * grouped convolution uses the row block of its channels. Out-of-image taps read 0.
 */
#ifndef DYN_IM2COL_H
#define DYN_IM2COL_H

#include <stddef.h>
#include <stdint.h>

typedef struct dyn_conv_geom {
    int N, C, H, W;  /* input */
    int KH, KW;      /* kernel */
    int SH, SW;      /* stride */
    int PH, PW;      /* padding (top/left = bottom/right) */
    int DH, DW;      /* dilation */
    int OH, OW;      /* output, filled by dyn_conv_geom_out */
} dyn_conv_geom;

/* Computes g->OH, g->OW; returns 0, or -1 when the output would be empty or a field is < 1. */
int dyn_conv_geom_out(dyn_conv_geom *g);

/* cols[C*KH*KW][N*OH*OW] = patches of x. */
void dyn_im2col(const dyn_conv_geom *g, const float *x, float *cols);
/* The same as dyn_im2col written as the definition, one tap at a time: the reference the tests
 * hold dyn_im2col to. */
void dyn__im2col_ref(const dyn_conv_geom *g, const float *x, float *cols);
/* Adjoint of im2col: dx (overwritten, [N][C][H][W]) = sum of cols over the taps reading it. */
void dyn_col2im(const dyn_conv_geom *g, const float *cols, float *dx);

/* Floats of columns (per thread) an inference conv keeps in cache per chunk of images. */
#define DYN_CONV_CHUNK_FLOATS 131072
/* Input channels up to which the direct convolution beats im2col + sgemm. */
#ifndef DYN_CONV_DIRECT_MAX_C
#define DYN_CONV_DIRECT_MAX_C 8
#endif

/* Inference forward of a convolution with weight w [cout][C/groups·KH·KW] (groups blocks of
 * cout/groups rows) and optional bias [cout]: y [N][cout][OH][OW] = conv(x) + bias. Runs
 * im2col + sgemm over chunks of images; cols (C·KH·KW × N·OH·OW floats) and tmp
 * (cout × N·OH·OW) are the caller's scratch, sized for the whole batch. With at most
 * DYN_CONV_DIRECT_MAX_C input channels the direct convolution runs instead (cols is its
 * workspace). */
void dyn__conv_gemm_forward(const dyn_conv_geom *g, int groups, int cout, const float *x,
                            const float *w, const float *bias, float *cols, float *tmp,
                            float *y);

/* Direct convolution (conv_direct.c), inference only: whether it applies (stride 1, dilation
 * 1, one group, OW >= 8, a CPU with AVX2 + FMA: cpu/isa.h) with ws_floats of workspace, and the forward:
 * y [N][cout][OH][OW] = conv(x, w [cout][C·KH·KW]) + bias (bias may be NULL). */
int dyn__conv_direct_ok(const dyn_conv_geom *g, int groups, int cout, size_t ws_floats);
void dyn__conv_direct_forward(const dyn_conv_geom *g, int cout, const float *x, const float *w,
                              const float *bias, float *ws, float *y);

/* [K][N*P] <-> [N][K][P] (channel-major columns to NCHW and back). */
void dyn_knp_to_nkp(const float *src, float *dst, int N, int K, int64_t P);
void dyn_nkp_to_knp(const float *src, float *dst, int N, int K, int64_t P);

#endif
