/* im2col.h — batched im2col / col2im for convolutions (CPU).
 *
 * Layout: x is [N][C][H][W]; cols is [C*KH*KW][N*OH*OW]: row (c, r, t) = c*KH*KW + r*KW + t,
 * column (n, oy, ox) = n*OH*OW + oy*OW + ox. Rows of one channel group are contiguous, so a
 * grouped convolution uses the row block of its channels. Out-of-image taps read 0.
 */
#ifndef DYN_IM2COL_H
#define DYN_IM2COL_H

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
/* Adjoint of im2col: dx (overwritten, [N][C][H][W]) = sum of cols over the taps reading it. */
void dyn_col2im(const dyn_conv_geom *g, const float *cols, float *dx);

/* [K][N*P] <-> [N][K][P] (channel-major columns to NCHW and back). */
void dyn_knp_to_nkp(const float *src, float *dst, int N, int K, int64_t P);
void dyn_nkp_to_knp(const float *src, float *dst, int N, int K, int64_t P);

#endif
