/* kern_cnn.h — kernel bodies of the CNN ops on the CUDA backend (engine/cuda/cnn.cu): conv2d's
 * im2col / col2im and layout moves, the bias gradient, relu, the broadcasting add, pooling
 * (max, average, global average), batchnorm, the DyN conv kernel permutes and the offset's
 * share in its native path.
 *
 * Each body computes one output element (or one row / channel) from its index, gathering what
 * it reads (kern.h's rules); tests/unit/test_cuda_kern_cnn.c runs every body over all indices
 * on the host against the CPU op. Layouts are the CPU ops' (engine/cpu/im2col.h for columns:
 * cols [C·KH·KW][N·OH·OW]). Sums that the CPU op accumulates in double are accumulated in
 * double here too, in the same order where the CPU's order is fixed.
 */
#ifndef DYN_CUDA_KERN_CNN_H
#define DYN_CUDA_KERN_CNN_H

#include "../cpu/im2col.h" /* dyn_conv_geom (a plain struct) */
#include "kern.h"

/* ---- conv2d -------------------------------------------------------------------------------- */

/* Row of tap (c, r, t) in the columns: channel-major (taps = 0: row c·KH·KW + r·KW + t, the
 * CPU's im2col) or tap-major (taps = 1: row (r·KW + t)·C + c, so each tap's C rows are one
 * contiguous [C][N·OH·OW] block — the DyN convolution's native path runs one system per tap). */
DYN_KERN int64_t dyn_k_col_row(dyn_conv_geom g, int taps, int c, int r, int t) {
    return taps ? ((int64_t)r * g.KW + t) * g.C + c : ((int64_t)c * g.KH + r) * g.KW + t;
}

/* cols element i of [C·KH·KW][N·OH·OW] (rows ordered as dyn_k_col_row(taps)): the tap
 * (c, r, t) of output position (n, oy, ox), 0 outside the image. */
DYN_KERN void dyn_k_im2col(int64_t i, dyn_conv_geom g, int taps, const float *x, float *cols) {
    const int64_t P = (int64_t)g.OH * g.OW, NP = (int64_t)g.N * P;
    const int64_t row = i / NP, col = i % NP;
    const int64_t tap = taps ? row / g.C : row % ((int64_t)g.KH * g.KW);
    const int c = (int)(taps ? row % g.C : row / ((int64_t)g.KH * g.KW));
    const int r = (int)(tap / g.KW), t = (int)(tap % g.KW);
    const int n = (int)(col / P), oy = (int)(col % P / g.OW), ox = (int)(col % g.OW);
    const int iy = oy * g.SH - g.PH + r * g.DH, ix = ox * g.SW - g.PW + t * g.DW;
    cols[i] = iy >= 0 && iy < g.H && ix >= 0 && ix < g.W
                  ? x[(((int64_t)n * g.C + c) * g.H + iy) * g.W + ix]
                  : 0.0f;
}

/* dx element i of [N][C][H][W] (overwritten): the sum of the columns (rows ordered as
 * dyn_k_col_row(taps)) of every tap that reads it, taps in (r, t) order, output rows and
 * columns ascending (col2im's adjoint, gathered). */
DYN_KERN void dyn_k_col2im(int64_t i, dyn_conv_geom g, int taps, const float *cols, float *dx) {
    const int64_t P = (int64_t)g.OH * g.OW, NP = (int64_t)g.N * P;
    const int ix = (int)(i % g.W), iy = (int)(i / g.W % g.H);
    const int c = (int)(i / ((int64_t)g.W * g.H) % g.C), n = (int)(i / ((int64_t)g.W * g.H * g.C));
    float s = 0.0f;
    for (int r = 0; r < g.KH; r++) {
        const int ty = iy + g.PH - r * g.DH; /* = oy * SH */
        if (ty < 0 || ty % g.SH) continue;
        const int oy = ty / g.SH;
        if (oy >= g.OH) continue;
        for (int t = 0; t < g.KW; t++) {
            const int tx = ix + g.PW - t * g.DW;
            if (tx < 0 || tx % g.SW) continue;
            const int ox = tx / g.SW;
            if (ox >= g.OW) continue;
            const int64_t row = dyn_k_col_row(g, taps, c, r, t);
            s += cols[row * NP + (int64_t)n * P + (int64_t)oy * g.OW + ox];
        }
    }
    dx[i] = s;
}

/* dst element i of [N][K][P] = src [K][N][P] (+ b[k] when b is not NULL): the sgemm's
 * channel-major output to NCHW, with the bias. */
DYN_KERN void dyn_k_knp_to_nkp(int64_t i, int N, int K, int64_t P, const float *src,
                               const float *b, float *dst) {
    const int64_t p = i % P, k = i / P % K, n = i / (P * K);
    dst[i] = src[(k * N + n) * P + p] + (b ? b[k] : 0.0f);
}

/* dst element i of [K][N][P] = src [N][K][P] (dy to the channel-major order of the sgemms). */
DYN_KERN void dyn_k_nkp_to_knp(int64_t i, int N, int K, int64_t P, const float *src,
                               float *dst) {
    const int64_t p = i % P, n = i / P % N, k = i / (P * N);
    dst[i] = src[(n * K + k) * P + p];
}

/* The bias gradient of channel k (one index per channel): db[k] += Σ_{n, p} dy[n][k][p] of
 * dy [N][K][P], summed in double in (n, p) order. Serves conv2d (P = OH·OW) and linear (P = 1,
 * K = out features, N = rows). */
DYN_KERN void dyn_k_bias_grad(int64_t k, int64_t N, int K, int64_t P, const float *dy,
                              float *db) {
    double s = 0.0;
    for (int64_t n = 0; n < N; n++) {
        const float *row = dy + (n * K + k) * P;
        for (int64_t p = 0; p < P; p++) s += row[p];
    }
    db[k] += (float)s;
}

/* Partial bias gradients for a large P (a convolution's OH·OW): part[k][n] = Σ_p dy[n][k][p]
 * (one index per (k, n), summed in double); dyn_k_bias_grad over part as [1][K][N] then adds
 * the rows. Two gathers instead of one thread per channel reading N·P values. */
DYN_KERN void dyn_k_bias_part(int64_t i, int64_t N, int K, int64_t P, const float *dy,
                              float *part) {
    const int64_t k = i / N, n = i % N;
    const float *row = dy + (n * K + k) * P;
    double s = 0.0;
    for (int64_t p = 0; p < P; p++) s += row[p];
    part[i] = (float)s;
}

/* ---- relu, add ----------------------------------------------------------------------------- */

DYN_KERN void dyn_k_relu_fwd(int64_t i, const float *x, float *y) {
    y[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

/* dx = dy where the output is positive (the CPU op's rule: it reads y). */
DYN_KERN void dyn_k_relu_bwd(int64_t i, const float *y, const float *dy, float *dx) {
    dx[i] = y[i] > 0.0f ? dy[i] : 0.0f;
}

/* Broadcasting of a binary op (add.c / eltwise.c's rule: equal rank, each size equal or 1),
 * shapes right-aligned into 4 dimensions (leading 1s). */
typedef struct dyn_kbcast {
    int64_t y[4], a[4], b[4]; /* sizes of the output and of the two inputs */
} dyn_kbcast;

/* Offset in t (sizes ts) of the output element with coordinates i0..i3. */
DYN_KERN int64_t dyn_k_bcast_off(const int64_t *ts, int64_t i0, int64_t i1, int64_t i2,
                                 int64_t i3) {
    const int64_t c0 = ts[0] == 1 ? 0 : i0, c1 = ts[1] == 1 ? 0 : i1;
    const int64_t c2 = ts[2] == 1 ? 0 : i2, c3 = ts[3] == 1 ? 0 : i3;
    return ((c0 * ts[1] + c1) * ts[2] + c2) * ts[3] + c3;
}

/* y[i] = a[ia] + b[ib]. */
DYN_KERN void dyn_k_add_fwd(int64_t i, dyn_kbcast s, const float *a, const float *b, float *y) {
    const int64_t i3 = i % s.y[3], i2 = i / s.y[3] % s.y[2], i1 = i / (s.y[3] * s.y[2]) % s.y[1];
    const int64_t i0 = i / (s.y[3] * s.y[2] * s.y[1]);
    y[i] = a[dyn_k_bcast_off(s.a, i0, i1, i2, i3)] + b[dyn_k_bcast_off(s.b, i0, i1, i2, i3)];
}

/* The gradient of input t (sizes ts) at its element j: the sum of dy over the output elements
 * that read it (every coordinate of a broadcast dimension), in the output's row-major order
 * (the CPU's accumulation order). */
DYN_KERN void dyn_k_add_bwd(int64_t j, const int64_t *ys, const int64_t *ts, const float *dy,
                            float *dt) {
    int64_t lo[4], hi[4], rest = j;
    for (int d = 3; d >= 0; d--) {
        const int64_t c = rest % ts[d];
        rest /= ts[d];
        lo[d] = ts[d] == 1 && ys[d] != 1 ? 0 : c;
        hi[d] = ts[d] == 1 && ys[d] != 1 ? ys[d] : c + 1;
    }
    float s = 0.0f;
    for (int64_t i0 = lo[0]; i0 < hi[0]; i0++)
        for (int64_t i1 = lo[1]; i1 < hi[1]; i1++)
            for (int64_t i2 = lo[2]; i2 < hi[2]; i2++)
                for (int64_t i3 = lo[3]; i3 < hi[3]; i3++)
                    s += dy[((i0 * ys[1] + i1) * ys[2] + i2) * ys[3] + i3];
    dt[j] = s;
}

/* ---- pooling (pool.c) ---------------------------------------------------------------------- */

typedef struct dyn_kpool {
    int H, W, OH, OW;
    int kh, kw, sh, sw, ph, pw;
    int count_include_pad;
} dyn_kpool;

/* Window [*a0, *a1) of output index o clipped to the input; returns its extent clipped to the
 * padded input only (pool.c's pool_window). */
DYN_KERN int dyn_k_pool_window(int o, int k, int s, int p, int in, int *a0, int *a1) {
    const int a = o * s - p;
    const int b = a + k < in + p ? a + k : in + p;
    *a0 = a > 0 ? a : 0;
    *a1 = b < in ? b : in;
    return b - a;
}

/* Output element i of [planes][OH][OW]: its row and column and its window (clipped to the
 * input); returns its plane. */
DYN_KERN int64_t dyn_k_pool_out(int64_t i, dyn_kpool p, int *oy, int *ox, int *y0, int *y1,
                                int *x0, int *x1) {
    *oy = (int)(i / p.OW % p.OH), *ox = (int)(i % p.OW);
    dyn_k_pool_window(*oy, p.kh, p.sh, p.ph, p.H, y0, y1);
    dyn_k_pool_window(*ox, p.kw, p.sw, p.pw, p.W, x0, x1);
    return i / ((int64_t)p.OH * p.OW);
}

/* Output windows of dimension length `in` containing input index a: [*o0, *o1). */
DYN_KERN void dyn_k_pool_span(int a, int k, int s, int p, int out, int *o0, int *o1) {
    const int lo = a + p - k + 1; /* o·s − p + k > a  <=>  o·s >= lo */
    const int last = (a + p) / s + 1; /* o·s − p <= a */
    *o0 = lo <= 0 ? 0 : (lo + s - 1) / s;
    *o1 = last < out ? last : out;
}

/* Input element i of [planes][H][W]: its index in the plane and the output windows holding it,
 * rows [*oy0, *oy1) and columns [*ox0, *ox1); returns its plane. */
DYN_KERN int64_t dyn_k_pool_in(int64_t i, dyn_kpool p, int *at, int *oy0, int *oy1, int *ox0,
                               int *ox1) {
    const int iy = (int)(i / p.W % p.H), ix = (int)(i % p.W);
    *at = iy * p.W + ix;
    dyn_k_pool_span(iy, p.kh, p.sh, p.ph, p.OH, oy0, oy1);
    dyn_k_pool_span(ix, p.kw, p.sw, p.pw, p.OW, ox0, ox1);
    return i / ((int64_t)p.H * p.W);
}

/* Output element i of [planes][OH][OW]: the window's maximum (padded taps never win, ties to
 * the first in row-major window order, NaN propagates: the first NaN) and its plane index into
 * am[i] (int32). */
DYN_KERN void dyn_k_maxpool_fwd(int64_t i, dyn_kpool p, const float *x, float *y, int32_t *am) {
    int oy, ox, y0, y1, x0, x1;
    const float *src = x + dyn_k_pool_out(i, p, &oy, &ox, &y0, &y1, &x0, &x1) * p.H * p.W;
    int best_i = y0 * p.W + x0;
    float best = src[best_i];
    for (int iy = y0; iy < y1; iy++)
        for (int ix = x0; ix < x1; ix++) {
            const float v = src[iy * p.W + ix];
            if (v != v) { /* the first NaN wins */
                best = v, best_i = iy * p.W + ix;
                iy = y1;
                break;
            }
            if (v > best) best = v, best_i = iy * p.W + ix;
        }
    y[i] = best;
    am[i] = best_i;
}

/* dx element i of [planes][H][W]: the sum of dy over the outputs whose argmax is i's plane
 * index (outputs in row-major order, the CPU's scatter order). */
DYN_KERN void dyn_k_maxpool_bwd(int64_t i, dyn_kpool p, const int32_t *am, const float *dy,
                                float *dx) {
    int at, oy0, oy1, ox0, ox1;
    const int64_t base = dyn_k_pool_in(i, p, &at, &oy0, &oy1, &ox0, &ox1) * p.OH * p.OW;
    float s = 0.0f;
    for (int oy = oy0; oy < oy1; oy++)
        for (int ox = ox0; ox < ox1; ox++) {
            const int64_t o = base + (int64_t)oy * p.OW + ox;
            if (am[o] == at) s += dy[o];
        }
    dx[i] = s;
}

/* Divisor of output window (oy, ox) (count_include_pad as in PyTorch). */
DYN_KERN int dyn_k_avgpool_div(dyn_kpool p, int oy, int ox) {
    int y0, y1, x0, x1;
    const int eh = dyn_k_pool_window(oy, p.kh, p.sh, p.ph, p.H, &y0, &y1);
    const int ew = dyn_k_pool_window(ox, p.kw, p.sw, p.pw, p.W, &x0, &x1);
    return p.count_include_pad ? eh * ew : (y1 - y0) * (x1 - x0);
}

DYN_KERN void dyn_k_avgpool_fwd(int64_t i, dyn_kpool p, const float *x, float *y) {
    int oy, ox, y0, y1, x0, x1;
    const float *src = x + dyn_k_pool_out(i, p, &oy, &ox, &y0, &y1, &x0, &x1) * p.H * p.W;
    float s = 0.0f;
    for (int iy = y0; iy < y1; iy++)
        for (int ix = x0; ix < x1; ix++) s += src[iy * p.W + ix];
    y[i] = s / (float)dyn_k_avgpool_div(p, oy, ox);
}

/* dx element i: Σ dy / divisor over the windows containing it (row-major window order). */
DYN_KERN void dyn_k_avgpool_bwd(int64_t i, dyn_kpool p, const float *dy, float *dx) {
    int at, oy0, oy1, ox0, ox1;
    const float *g = dy + dyn_k_pool_in(i, p, &at, &oy0, &oy1, &ox0, &ox1) * p.OH * p.OW;
    float s = 0.0f;
    for (int oy = oy0; oy < oy1; oy++)
        for (int ox = ox0; ox < ox1; ox++)
            s += g[oy * p.OW + ox] / (float)dyn_k_avgpool_div(p, oy, ox);
    dx[i] = s;
}

/* Global average of plane pl (one index per plane), in double. */
DYN_KERN void dyn_k_gap_fwd(int64_t pl, int64_t HW, const float *x, float *y) {
    const float *src = x + pl * HW;
    double s = 0.0;
    for (int64_t k = 0; k < HW; k++) s += src[k];
    y[pl] = (float)(s / (double)HW);
}

DYN_KERN void dyn_k_gap_bwd(int64_t i, int64_t HW, const float *dy, float *dx) {
    dx[i] = dy[i / HW] * (1.0f / (float)HW);
}

/* ---- batchnorm (norm.c) -------------------------------------------------------------------- */

/* Input [N][C][S]. Scratch (the CPU op's layout, then two rows for backward, then partial
 * sums): scr[c] = mean, scr[C + c] = 1/sqrt(var + eps), scr[2C] = 1 after batch statistics,
 * scr[2C + 1 + c] = mean(dy), scr[3C + 1 + c] = mean(dy·x̂), part = scr + 4C + 1: [2][C][N].
 * A channel's sums over its N·S values are taken in two gathers: per (channel, image) in
 * double (dyn_k_bn_part), then per channel over the N partials, in double. */
typedef struct dyn_kbn {
    int64_t N, S;
    int C;
    double eps;
    float momentum;
    int training;
} dyn_kbn;

/* Floats of scratch batchnorm needs on the device. */
#define DYN_KBN_SCRATCH(C, N) ((size_t)(C) * 4 + 1 + 2 * (size_t)(C) * (size_t)(N))

/* What dyn_k_bn_part sums over one (channel, image). */
enum { DYN_KBN_SUM_X, DYN_KBN_SUM_DEV2, DYN_KBN_SUM_DY };

/* Partial sums of channel c over image n, index i = c·N + n: Σ x (DYN_KBN_SUM_X), Σ (x − mean)²
 * (DYN_KBN_SUM_DEV2, mean = scr[c]), or Σ dy and Σ dy·x̂ (DYN_KBN_SUM_DY, into part[i] and
 * part[C·N + i]). */
DYN_KERN void dyn_k_bn_part(int64_t i, dyn_kbn b, int what, const float *x, const float *dy,
                            float *scr) {
    const int64_t c = i / b.N, n = i % b.N, at = (n * b.C + c) * b.S;
    const float *p = x + at;
    const float mean = what == DYN_KBN_SUM_X ? 0.0f : scr[c];
    const float invstd = what == DYN_KBN_SUM_DY ? scr[b.C + c] : 0.0f;
    float *part = scr + 4 * (int64_t)b.C + 1;
    double s = 0.0, t = 0.0;
    for (int64_t k = 0; k < b.S; k++) {
        if (what == DYN_KBN_SUM_X) {
            s += p[k];
        } else if (what == DYN_KBN_SUM_DEV2) {
            const double d = p[k] - (double)mean;
            s += d * d;
        } else {
            const float q = dy[at + k];
            s += q;
            t += (double)q * ((p[k] - mean) * invstd);
        }
    }
    part[i] = (float)s;
    if (what == DYN_KBN_SUM_DY) part[(int64_t)b.C * b.N + i] = (float)t;
}

/* Σ over the N partials of channel c in row `row` of part, in double. */
DYN_KERN double dyn_k_bn_total(dyn_kbn b, const float *scr, int row, int64_t c) {
    const float *part = scr + 4 * (int64_t)b.C + 1 + ((int64_t)row * b.C + c) * b.N;
    double s = 0.0;
    for (int64_t n = 0; n < b.N; n++) s += part[n];
    return s;
}

/* Training, after DYN_KBN_SUM_X: the batch mean of channel c. */
DYN_KERN void dyn_k_bn_mean(int64_t c, dyn_kbn b, float *scr) {
    scr[c] = (float)(dyn_k_bn_total(b, scr, 0, c) / (double)(b.N * b.S));
}

/* Channel c's 1/sqrt(var + eps) and flag: training (after DYN_KBN_SUM_DEV2), the biased batch
 * variance, the running statistics updated (unbiased variance, PyTorch's rule); inference, the
 * running statistics (scr[c] = the running mean). */
DYN_KERN void dyn_k_bn_stats(int64_t c, dyn_kbn b, float *rmean, float *rvar, float *scr) {
    const int64_t M = b.N * b.S;
    if (b.training) {
        const double ss = dyn_k_bn_total(b, scr, 0, c);
        const double var = ss / (double)M, uvar = M > 1 ? ss / (double)(M - 1) : var;
        scr[b.C + c] = (float)(1.0 / sqrt(var + b.eps));
        rmean[c] = (1.0f - b.momentum) * rmean[c] + b.momentum * scr[c];
        rvar[c] = (1.0f - b.momentum) * rvar[c] + b.momentum * (float)uvar;
    } else {
        scr[c] = rmean[c];
        scr[b.C + c] = (float)(1.0 / sqrt((double)rvar[c] + b.eps));
    }
    if (c == 0) scr[2 * b.C] = b.training ? 1.0f : 0.0f;
}

/* y element i = x·scale + shift of its channel. */
DYN_KERN void dyn_k_bn_apply(int64_t i, dyn_kbn b, const float *x, const float *gamma,
                             const float *beta, const float *scr, float *y) {
    const int c = (int)(i / b.S % b.C);
    const float scale = gamma[c] * scr[b.C + c], shift = beta[c] - scr[c] * scale;
    y[i] = x[i] * scale + shift;
}

/* Channel c of backward (after DYN_KBN_SUM_DY): dγ += Σ dy·x̂, dβ += Σ dy, and the means dx
 * needs into scr (0 after an inference forward: dx is then the affine map's). */
DYN_KERN void dyn_k_bn_bwd_stats(int64_t c, dyn_kbn b, float *scr, float *dgamma,
                                 float *dbeta) {
    const int64_t M = b.N * b.S;
    const double sdy = dyn_k_bn_total(b, scr, 0, c), sdyx = dyn_k_bn_total(b, scr, 1, c);
    dgamma[c] += (float)sdyx;
    dbeta[c] += (float)sdy;
    const int batch = scr[2 * b.C] != 0.0f;
    scr[2 * b.C + 1 + c] = batch ? (float)(sdy / (double)M) : 0.0f;
    scr[3 * b.C + 1 + c] = batch ? (float)(sdyx / (double)M) : 0.0f;
}

/* dx element i = γ·invstd·(dy − mean(dy) − x̂·mean(dy·x̂)). */
DYN_KERN void dyn_k_bn_bwd_dx(int64_t i, dyn_kbn b, const float *x, const float *dy,
                              const float *gamma, const float *scr, float *dx) {
    const int c = (int)(i / b.S % b.C);
    const float mean = scr[c], invstd = scr[b.C + c];
    const float mdy = scr[2 * b.C + 1 + c], mdyx = scr[3 * b.C + 1 + c];
    const float xhat = (x[i] - mean) * invstd;
    dx[i] = gamma[c] * invstd * (dy[i] - mdy - xhat * mdyx);
}

/* ---- dyn_conv2d (dyn_conv.c): the K² system slices <-> the kernel ------------------------- */

/* Kernel element i of w [Cout][Cin·KK] (column c·KK + (r·K + t)) from the K² systems
 * materialized without their offset, sl [KK][Cout][Cin] (system r·K + t), plus the offset
 * off[0] (device memory: read there, no copy to the host). */
DYN_KERN void dyn_k_dc_kernel(int64_t i, int cout, int cin, int KK, const float *sl,
                              const float *off, float *w) {
    const int64_t col = i % KK, c = i / KK % cin, o = i / ((int64_t)KK * cin);
    w[i] = sl[(col * cout + o) * cin + c] + off[0];
}

/* Slice element i of sl [KK][Cout][Cin] from the kernel gradient g [Cout][Cin·KK] (the
 * transpose of dyn_k_dc_kernel). */
DYN_KERN void dyn_k_dc_slices(int64_t i, int cout, int cin, int KK, const float *g, float *sl) {
    const int64_t c = i % cin, o = i / cin % cout, col = i / ((int64_t)cin * cout);
    sl[i] = g[(o * cin + c) * KK + col];
}

/* ---- dyn_conv2d native (l1): the offset c's share, on the device --------------------------
 * The native path (cnn.cu's dyn_cuda_dc_native_*) runs the K² systems without their offset c
 * (in device memory, read there: no copy to the host); c's share is added by these bodies.
 * With the tap-major columns X [Cin·K²][N·P] and δ [Cout][N·P] (channel-major dy):
 *   y[o][p] += c·Σ_row X[row][p],  dX[row][p] += c·Σ_o δ[o][p],  dc += Σ_p (Σ_row X)(Σ_o δ). */

/* s[col] = Σ_row a[row][col] of a [rows][ncols] (one index per column), in double, rows
 * ascending. */
DYN_KERN void dyn_k_colsum(int64_t col, int64_t rows, int64_t ncols, const float *a, float *s) {
    double acc = 0.0;
    for (int64_t row = 0; row < rows; row++) acc += a[row * ncols + col];
    s[col] = (float)acc;
}

/* y element i of [rows][ncols] = off[0]·s[i mod ncols] (off: device memory). */
DYN_KERN void dyn_k_dc_fill(int64_t i, int64_t ncols, const float *s, const float *off,
                            float *y) {
    y[i] = off[0] * s[i % ncols];
}

/* part[i] = Σ a[k]·b[k] over chunk i, k in [i·chunk, min(n, (i + 1)·chunk)), in double; the
 * parts' total (dyn_k_bias_grad over part as [1][1][parts]) is the dot product. */
DYN_KERN void dyn_k_dot_part(int64_t i, int64_t n, int64_t chunk, const float *a,
                             const float *b, float *part) {
    const int64_t k1 = (i + 1) * chunk < n ? (i + 1) * chunk : n;
    double acc = 0.0;
    for (int64_t k = i * chunk; k < k1; k++) acc += (double)a[k] * b[k];
    part[i] = (float)acc;
}

#endif
