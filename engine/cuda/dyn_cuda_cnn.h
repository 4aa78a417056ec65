/* dyn_cuda_cnn.h — the CNN ops' device launchers (engine/cuda/cnn.cu): conv2d (im2col + cuBLAS),
 * relu, a device copy (flatten), the broadcasting add, max / average / global average pooling,
 * the dense linear's backward, batchnorm, the permutes of the DyN convolution's kernel and its
 * native (l1) execution.
 * The glue from layers to these is engine/cuda/op_cnn.c; the kernel bodies are kern_cnn.h.
 *
 * Callable from C17 in every build: without CUDA (the default build) engine/cuda/stub_cnn.c
 * defines each function to fail with DYN_EUNSUP, like dyn_cuda.h's stubs.
 *
 * Every pointer is device memory (never dereferenced on the host); the work is queued on the
 * context's stream (asynchronous: dyn_cuda_sync / dyn_cuda_download wait for it). Nothing is
 * allocated: scratch is the caller's. Error convention (dyn_cuda.h): 0, or DYN_EINVAL (a bad
 * size), DYN_EUNSUP (no CUDA), DYN_EIO (a CUDA / cuBLAS failure) with err naming the call,
 * file and line. GEMMs run in FP32 (CUBLAS_DEFAULT_MATH, no TF32).
 */
#ifndef DYN_CUDA_CNN_H
#define DYN_CUDA_CNN_H

#include "dyn_cuda.h"
#include "kern_cnn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- conv2d (engine/ops/conv.c's layout) ----
 * Geometry g (OH, OW filled by dyn_conv_geom_out), `groups` channel groups, w [cout][C/groups]
 * [KH][KW], b [cout] or NULL. Scratch: dyn_cuda_conv2d_scratch(g, cout) floats — the columns
 * cols [C·KH·KW][N·OH·OW], then a [cout][N·OH·OW] buffer. */
static inline size_t dyn_cuda_conv2d_scratch(const dyn_conv_geom *g, int cout) {
    return (size_t)(((int64_t)g->C * g->KH * g->KW + cout) * g->N * g->OH * g->OW);
}
/* y [N][cout][OH][OW] = conv(x [N][C][H][W], w) + b; leaves x's columns in scratch (what
 * backward needs). */
int dyn_cuda_conv2d_forward(dyn_cuda_ctx *ctx, const dyn_conv_geom *g, int groups, int cout,
                            const float *x, const float *w, const float *b, float *y,
                            float *scratch, dyn_err *err);
/* Backward from the columns a forward left in scratch: dw (+= when accumulate, else =) the
 * weight gradient, db += the bias gradient (NULL: skipped), dx = the input gradient (NULL:
 * skipped; the columns are overwritten). */
int dyn_cuda_conv2d_backward(dyn_cuda_ctx *ctx, const dyn_conv_geom *g, int groups, int cout,
                             const float *w, const float *dy, float *dw, int accumulate,
                             float *db, float *dx, float *scratch, dyn_err *err);

/* ---- element-wise ---- */
/* y[0..n) = max(x, 0); dx[0..n) = dy where y > 0, else 0. */
int dyn_cuda_relu_forward(dyn_cuda_ctx *ctx, const float *x, float *y, int64_t n, dyn_err *err);
int dyn_cuda_relu_backward(dyn_cuda_ctx *ctx, const float *y, const float *dy, float *dx,
                           int64_t n, dyn_err *err);
/* dst[0..n) = src[0..n) (device to device; no-op when dst == src). */
int dyn_cuda_cnn_copy(dyn_cuda_ctx *ctx, float *dst, const float *src, int64_t n, dyn_err *err);
/* y = a + b with broadcasting s (sizes right-aligned into 4 dims); backward: da, db (each may
 * be NULL) = dy summed over their broadcast dimensions. */
int dyn_cuda_add_forward(dyn_cuda_ctx *ctx, const dyn_kbcast *s, const float *a, const float *b,
                         float *y, dyn_err *err);
int dyn_cuda_add_backward(dyn_cuda_ctx *ctx, const dyn_kbcast *s, const float *dy, float *da,
                          float *db, dyn_err *err);

/* ---- pooling (engine/ops/pool.c) over `planes` = N·C planes ---- */
/* y = the window maxima, am (int32, one per output) = their plane indices; backward: dx = dy
 * routed through am. */
int dyn_cuda_maxpool2d_forward(dyn_cuda_ctx *ctx, const dyn_kpool *p, int64_t planes,
                               const float *x, float *y, int32_t *am, dyn_err *err);
int dyn_cuda_maxpool2d_backward(dyn_cuda_ctx *ctx, const dyn_kpool *p, int64_t planes,
                                const int32_t *am, const float *dy, float *dx, dyn_err *err);
int dyn_cuda_avgpool2d_forward(dyn_cuda_ctx *ctx, const dyn_kpool *p, int64_t planes,
                               const float *x, float *y, dyn_err *err);
int dyn_cuda_avgpool2d_backward(dyn_cuda_ctx *ctx, const dyn_kpool *p, int64_t planes,
                                const float *dy, float *dx, dyn_err *err);
/* y[planes] = the means of the planes of x [planes][HW]; dx = dy / HW broadcast. */
int dyn_cuda_gap_forward(dyn_cuda_ctx *ctx, int64_t planes, int64_t HW, const float *x,
                         float *y, dyn_err *err);
int dyn_cuda_gap_backward(dyn_cuda_ctx *ctx, int64_t planes, int64_t HW, const float *dy,
                          float *dx, dyn_err *err);

/* ---- linear backward (the forward is dyn_cuda_linear_forward) ----
 * x [N][in], dy [N][out], w [out][in]: dw += dyᵀ x, db += Σ_rows dy (NULL: skipped),
 * dx = dy w (NULL: skipped). */
int dyn_cuda_linear_backward(dyn_cuda_ctx *ctx, const float *x, const float *dy, int N, int in,
                             int out, const float *w, float *dw, float *db, float *dx,
                             dyn_err *err);

/* ---- batchnorm (engine/ops/norm.c); scratch: DYN_KBN_SCRATCH(C, N) floats (kern_cnn.h) ----
 * Forward: the statistics (b->training: the batch's, rmean / rvar updated; else the running
 * ones) into scratch, y = γ x̂ + β. Backward (after a forward with the same scratch):
 * dγ += Σ dy x̂, dβ += Σ dy, dx (NULL: skipped) = the gradient through whichever statistics the
 * forward used. */
int dyn_cuda_batchnorm_forward(dyn_cuda_ctx *ctx, const dyn_kbn *b, const float *x,
                               const float *gamma, const float *beta, float *rmean, float *rvar,
                               float *scratch, float *y, dyn_err *err);
int dyn_cuda_batchnorm_backward(dyn_cuda_ctx *ctx, const dyn_kbn *b, const float *x,
                                const float *dy, const float *gamma, float *scratch,
                                float *dgamma, float *dbeta, float *dx, dyn_err *err);

/* ---- dyn_conv2d: w [cout][cin·KK] = the KK system slices sl [KK][cout][cin] (materialized
 * with offset 0) + off[0] (the offset c, device memory); sl = the slices of a kernel gradient
 * g [cout][cin·KK] ---- */
int dyn_cuda_dc_kernel(dyn_cuda_ctx *ctx, int cout, int cin, int KK, const float *sl,
                       const float *off, float *w, dyn_err *err);
int dyn_cuda_dc_slices(dyn_cuda_ctx *ctx, int cout, int cin, int KK, const float *g, float *sl,
                       dyn_err *err);

/* ---- dyn_conv2d, native l1 execution (dyn_conv.c's native path; the kernel is never formed) ----
 * The layer's device parameters: a [K][H][q][cout] (A_r = rows r), b [K][H][q][cin] (B_t),
 * lambda [K][K][H], c [1], bias [cout] or NULL; g the geometry (KH = KW = K, g->C = cin).
 * Forward: tap-major columns X [K²][cin][N·OH·OW] of x, then per tap (r, t) the system
 * (A_r, B_t, λ_rt) without its offset through dyn_cuda_native_forward into Y [cout][N·OH·OW],
 * which starts from c's share (c·Σ_rows X); y = Y to NCHW + bias. Backward (after a forward
 * with the same scratch): δ = dy channel-major, per tap dyn_cuda_native_backward (da, db,
 * dlambda +=; the tap's rows of dX +=), c's shares into dc and dX, dbias, dx = col2im(dX).
 * The native calls take their own scratch from the context's pool. Scratch (floats): */
typedef struct dyn_cuda_dcn_scr {
    /* offsets of X, Y (backward: δ), Σ_rows X, Σ_o δ, partial sums, dX; total: floats needed */
    size_t cols, y, s, e, part, dcols, total;
} dyn_cuda_dcn_scr;

#define DYN_CUDA_DCN_DOT_CHUNK 1024 /* columns per partial sum of dc */

static inline dyn_cuda_dcn_scr dyn_cuda_dcn_scratch(const dyn_conv_geom *g, int cout,
                                                    int training) {
    const size_t NP = (size_t)g->N * g->OH * g->OW, ckk = (size_t)g->C * g->KH * g->KW;
    const size_t parts = (NP + DYN_CUDA_DCN_DOT_CHUNK - 1) / DYN_CUDA_DCN_DOT_CHUNK;
    const size_t bparts = (size_t)cout * g->N;
    dyn_cuda_dcn_scr s;
    s.cols = 0;
    s.y = ckk * NP;
    s.s = s.y + (size_t)cout * NP;
    s.e = s.s + NP;
    s.part = s.e + NP;
    s.dcols = s.part + (parts > bparts ? parts : bparts);
    s.total = training ? s.dcols + ckk * NP : s.e;
    return s;
}

typedef struct dyn_cuda_dcn {
    dyn_conv_geom g;
    int cout, H, q;
    const float *a, *b, *lambda, *c, *bias; /* device parameters (bias may be NULL) */
} dyn_cuda_dcn;

/* y [N][cout][OH][OW] = the DyN convolution of x [N][cin][H][W]; scratch as above (the forward
 * leaves X and Σ_rows X there for backward). */
int dyn_cuda_dc_native_forward(dyn_cuda_ctx *ctx, const dyn_cuda_dcn *p, const float *x,
                               float *y, float *scratch, dyn_err *err);
/* Gradients (+=) of the states (gr: du = da, dv = db, dlambda, dc; each may be NULL), dbias
 * (+=; NULL: skipped), dx (=; NULL: skipped) for dy [N][cout][OH][OW]. */
int dyn_cuda_dc_native_backward(dyn_cuda_ctx *ctx, const dyn_cuda_dcn *p, const float *dy,
                                const dyn_sys_grad *gr, float *dbias, float *dx,
                                float *scratch, dyn_err *err);

#ifdef __cplusplus
}
#endif

#endif
