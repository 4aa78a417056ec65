/* cnn.cu — launchers of the CNN ops on the device (dyn_cuda_cnn.h): each body of kern_cnn.h
 * runs in a grid-stride kernel over its indices; the GEMMs of conv2d and linear's backward are
 * cuBLAS sgemm calls (FP32).
 *
 * cuBLAS is column-major: a row-major [r][c] array is its c×r matrix, so the row-major product
 * C[M][N] = op(A) op(B) is the column-major Cᵀ = op(B)ᵀ op(A)ᵀ: rm_sgemm swaps the operands and
 * the dimensions M, N (the usual transpose trick). A convolution's groups are one strided
 * batched call.
 */
#include "cuda_impl.h"
#include "dyn_cuda_cnn.h"

#define THREADS 256

/* Blocks for n indices, capped (the grid-stride loop covers the rest). */
static unsigned grid_for(int64_t n) {
    const int64_t b = (n + THREADS - 1) / THREADS;
    return (unsigned)(b < 65535 * 16 ? (b > 0 ? b : 1) : 65535 * 16);
}

/* A __global__ kernel `name` running body(i, args...) for i in [0, n). */
#define KERNEL(name, body, PARAMS, ARGS)                                                   \
    __global__ void name(int64_t n, PARAMS) {                                               \
        DYN_GRID_LOOP(i, n) body(i, ARGS);                                                  \
    }
#define P(...) __VA_ARGS__

KERNEL(im2col_k, dyn_k_im2col, P(dyn_conv_geom g, int taps, const float *x, float *c),
       P(g, taps, x, c))
KERNEL(col2im_k, dyn_k_col2im, P(dyn_conv_geom g, int taps, const float *c, float *dx),
       P(g, taps, c, dx))
KERNEL(knp_to_nkp_k, dyn_k_knp_to_nkp, P(int N, int K, int64_t Pn, const float *s, const float *b,
       float *d), P(N, K, Pn, s, b, d))
KERNEL(nkp_to_knp_k, dyn_k_nkp_to_knp, P(int N, int K, int64_t Pn, const float *s, float *d),
       P(N, K, Pn, s, d))
KERNEL(bias_grad_k, dyn_k_bias_grad, P(int64_t N, int K, int64_t Pn, const float *dy, float *db),
       P(N, K, Pn, dy, db))
KERNEL(bias_part_k, dyn_k_bias_part, P(int64_t N, int K, int64_t Pn, const float *dy,
       float *part), P(N, K, Pn, dy, part))
KERNEL(relu_fwd_k, dyn_k_relu_fwd, P(const float *x, float *y), P(x, y))
KERNEL(relu_bwd_k, dyn_k_relu_bwd, P(const float *y, const float *dy, float *dx), P(y, dy, dx))
KERNEL(add_fwd_k, dyn_k_add_fwd, P(dyn_kbcast s, const float *a, const float *b, float *y),
       P(s, a, b, y))
KERNEL(maxpool_fwd_k, dyn_k_maxpool_fwd, P(dyn_kpool p, const float *x, float *y, int32_t *am),
       P(p, x, y, am))
KERNEL(maxpool_bwd_k, dyn_k_maxpool_bwd, P(dyn_kpool p, const int32_t *am, const float *dy,
       float *dx), P(p, am, dy, dx))
KERNEL(avgpool_fwd_k, dyn_k_avgpool_fwd, P(dyn_kpool p, const float *x, float *y), P(p, x, y))
KERNEL(avgpool_bwd_k, dyn_k_avgpool_bwd, P(dyn_kpool p, const float *dy, float *dx),
       P(p, dy, dx))
KERNEL(gap_fwd_k, dyn_k_gap_fwd, P(int64_t HW, const float *x, float *y), P(HW, x, y))
KERNEL(gap_bwd_k, dyn_k_gap_bwd, P(int64_t HW, const float *dy, float *dx), P(HW, dy, dx))
KERNEL(bn_part_k, dyn_k_bn_part, P(dyn_kbn b, int what, const float *x, const float *dy,
       float *s), P(b, what, x, dy, s))
KERNEL(bn_mean_k, dyn_k_bn_mean, P(dyn_kbn b, float *s), P(b, s))
KERNEL(bn_stats_k, dyn_k_bn_stats, P(dyn_kbn b, float *rm, float *rv, float *s), P(b, rm, rv, s))
KERNEL(bn_apply_k, dyn_k_bn_apply, P(dyn_kbn b, const float *x, const float *g, const float *be,
       const float *s, float *y), P(b, x, g, be, s, y))
KERNEL(bn_bwd_stats_k, dyn_k_bn_bwd_stats, P(dyn_kbn b, float *s, float *dg, float *db),
       P(b, s, dg, db))
KERNEL(bn_bwd_dx_k, dyn_k_bn_bwd_dx, P(dyn_kbn b, const float *x, const float *dy,
       const float *g, const float *s, float *dx), P(b, x, dy, g, s, dx))
KERNEL(dc_kernel_k, dyn_k_dc_kernel, P(int co, int ci, int KK, const float *sl,
       const float *off, float *w), P(co, ci, KK, sl, off, w))
KERNEL(dc_slices_k, dyn_k_dc_slices, P(int co, int ci, int KK, const float *g, float *sl),
       P(co, ci, KK, g, sl))
KERNEL(colsum_k, dyn_k_colsum, P(int64_t rows, int64_t nc, const float *a, float *s),
       P(rows, nc, a, s))
KERNEL(dc_fill_k, dyn_k_dc_fill, P(int64_t nc, const float *s, const float *off, float *y),
       P(nc, s, off, y))
KERNEL(dot_part_k, dyn_k_dot_part, P(int64_t nn, int64_t chunk, const float *a, const float *b,
       float *part), P(nn, chunk, a, b, part))

/* The gradient of one input of add: its own sizes (an array member cannot be a plain pointer
 * parameter of a kernel, so the struct travels by value). */
__global__ void add_bwd_k(int64_t n, dyn_kbcast s, int which, const float *dy, float *dt) {
    DYN_GRID_LOOP(i, n) dyn_k_add_bwd(i, s.y, which ? s.b : s.a, dy, dt);
}

/* Launches kernel k over n indices on ctx's stream, then checks the launch. */
#define LAUNCH(k, n, ...)                                                                  \
    do {                                                                                    \
        if ((n) > 0) {                                                                      \
            k<<<grid_for(n), THREADS, 0, ctx->stream>>>((int64_t)(n), __VA_ARGS__);          \
            CUDA_CHECK_LAUNCH();                                                            \
        }                                                                                   \
    } while (0)

/* The start of every launcher: makes ctx's device current, or returns its error. Declares rc. */
#define ENTER()                                                                             \
    int rc = dyn_cuda__enter(ctx, err);                                                     \
    if (rc) return rc

/* Row-major C[M][N] = alpha op(A) op(B) + beta C, `batch` times with the given strides. */
static int rm_sgemm(dyn_cuda_ctx *ctx, int ta, int tb, int M, int N, int K, float alpha,
                    const float *A, int lda, long long sa, const float *B, int ldb, long long sb,
                    float beta, float *C, int ldc, long long sc, int batch, dyn_err *err) {
    const cublasOperation_t oa = ta ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t ob = tb ? CUBLAS_OP_T : CUBLAS_OP_N;
    if (batch == 1)
        CUBLAS_CHECK(cublasSgemm(ctx->blas, ob, oa, N, M, K, &alpha, B, ldb, A, lda, &beta, C,
                                 ldc));
    else
        CUBLAS_CHECK(cublasSgemmStridedBatched(ctx->blas, ob, oa, N, M, K, &alpha, B, ldb, sb, A,
                                               lda, sa, &beta, C, ldc, sc, batch));
    return 0;
}

static int conv_args(const dyn_conv_geom *g, int groups, int cout, dyn_err *err) {
    if (g->N < 1 || g->C < 1 || g->OH < 1 || g->OW < 1 || groups < 1 || cout < 1 ||
        g->C % groups || cout % groups ||
        (int64_t)g->N * g->OH * g->OW > 0x7fffffff)
        return dyn_err_set(err, DYN_EINVAL,
                           "conv2d: bad geometry N=%d C=%d OH=%d OW=%d groups=%d cout=%d", g->N,
                           g->C, g->OH, g->OW, groups, cout);
    return 0;
}

extern "C" int dyn_cuda_conv2d_forward(dyn_cuda_ctx *ctx, const dyn_conv_geom *g, int groups,
                                       int cout, const float *x, const float *w, const float *b,
                                       float *y, float *scratch, dyn_err *err) {
    ENTER();
    if ((rc = conv_args(g, groups, cout, err))) return rc;
    const int64_t P = (int64_t)g->OH * g->OW, NP = g->N * P;
    const int64_t ckk = (int64_t)g->C * g->KH * g->KW;
    const int K = (int)(ckk / groups), cog = cout / groups;
    float *cols = scratch, *out = scratch + ckk * NP;
    LAUNCH(im2col_k, ckk * NP, *g, 0, x, cols);
    /* out_g [cog][NP] = w_g [cog][K] cols_g [K][NP] */
    if ((rc = rm_sgemm(ctx, 0, 0, cog, (int)NP, K, 1.0f, w, K, (long long)cog * K, cols, (int)NP,
                       (long long)K * NP, 0.0f, out, (int)NP, (long long)cog * NP, groups, err)))
        return rc;
    LAUNCH(knp_to_nkp_k, (int64_t)cout * NP, g->N, cout, P, out, b, y);
    return 0;
}

extern "C" int dyn_cuda_conv2d_backward(dyn_cuda_ctx *ctx, const dyn_conv_geom *g, int groups,
                                        int cout, const float *w, const float *dy, float *dw,
                                        int accumulate, float *db, float *dx, float *scratch,
                                        dyn_err *err) {
    ENTER();
    if ((rc = conv_args(g, groups, cout, err))) return rc;
    const int64_t P = (int64_t)g->OH * g->OW, NP = g->N * P;
    const int64_t ckk = (int64_t)g->C * g->KH * g->KW;
    const int K = (int)(ckk / groups), cog = cout / groups;
    float *cols = scratch, *gy = scratch + ckk * NP;
    if (db) { /* partial sums per (channel, image) in gy's space, before gy is written */
        LAUNCH(bias_part_k, (int64_t)cout * g->N, (int64_t)g->N, cout, P, dy, gy);
        LAUNCH(bias_grad_k, cout, (int64_t)1, cout, (int64_t)g->N, gy, db);
    }
    LAUNCH(nkp_to_knp_k, (int64_t)cout * NP, g->N, cout, P, dy, gy);
    /* dw_g [cog][K] (+)= gy_g [cog][NP] cols_g [K][NP]ᵀ */
    if ((rc = rm_sgemm(ctx, 0, 1, cog, K, (int)NP, 1.0f, gy, (int)NP, (long long)cog * NP, cols,
                       (int)NP, (long long)K * NP, accumulate ? 1.0f : 0.0f, dw, K,
                       (long long)cog * K, groups, err)))
        return rc;
    if (!dx) return 0;
    /* dcols_g [K][NP] = w_g [cog][K]ᵀ gy_g [cog][NP], over the columns */
    if ((rc = rm_sgemm(ctx, 1, 0, K, (int)NP, cog, 1.0f, w, K, (long long)cog * K, gy, (int)NP,
                       (long long)cog * NP, 0.0f, cols, (int)NP, (long long)K * NP, groups, err)))
        return rc;
    LAUNCH(col2im_k, (int64_t)g->N * g->C * g->H * g->W, *g, 0, cols, dx);
    return 0;
}

extern "C" int dyn_cuda_relu_forward(dyn_cuda_ctx *ctx, const float *x, float *y, int64_t n,
                                     dyn_err *err) {
    ENTER();
    LAUNCH(relu_fwd_k, n, x, y);
    return 0;
}

extern "C" int dyn_cuda_relu_backward(dyn_cuda_ctx *ctx, const float *y, const float *dy,
                                      float *dx, int64_t n, dyn_err *err) {
    ENTER();
    LAUNCH(relu_bwd_k, n, y, dy, dx);
    return 0;
}

extern "C" int dyn_cuda_cnn_copy(dyn_cuda_ctx *ctx, float *dst, const float *src, int64_t n,
                                 dyn_err *err) {
    ENTER();
    if (n < 0) return dyn_err_set(err, DYN_EINVAL, "device copy: negative size %lld", (long long)n);
    if (dst != src && n > 0)
        CUDA_CHECK(cudaMemcpyAsync(dst, src, (size_t)n * sizeof(float), cudaMemcpyDeviceToDevice,
                                   ctx->stream));
    return 0;
}

static int64_t numel4(const int64_t *s) { return s[0] * s[1] * s[2] * s[3]; }

extern "C" int dyn_cuda_add_forward(dyn_cuda_ctx *ctx, const dyn_kbcast *s, const float *a,
                                    const float *b, float *y, dyn_err *err) {
    ENTER();
    LAUNCH(add_fwd_k, numel4(s->y), *s, a, b, y);
    return 0;
}

extern "C" int dyn_cuda_add_backward(dyn_cuda_ctx *ctx, const dyn_kbcast *s, const float *dy,
                                     float *da, float *db, dyn_err *err) {
    ENTER();
    if (da) LAUNCH(add_bwd_k, numel4(s->a), *s, 0, dy, da);
    if (db) LAUNCH(add_bwd_k, numel4(s->b), *s, 1, dy, db);
    return 0;
}

extern "C" int dyn_cuda_maxpool2d_forward(dyn_cuda_ctx *ctx, const dyn_kpool *p, int64_t planes,
                                          const float *x, float *y, int32_t *am, dyn_err *err) {
    ENTER();
    LAUNCH(maxpool_fwd_k, planes * p->OH * p->OW, *p, x, y, am);
    return 0;
}

extern "C" int dyn_cuda_maxpool2d_backward(dyn_cuda_ctx *ctx, const dyn_kpool *p, int64_t planes,
                                           const int32_t *am, const float *dy, float *dx,
                                           dyn_err *err) {
    ENTER();
    LAUNCH(maxpool_bwd_k, planes * p->H * p->W, *p, am, dy, dx);
    return 0;
}

extern "C" int dyn_cuda_avgpool2d_forward(dyn_cuda_ctx *ctx, const dyn_kpool *p, int64_t planes,
                                          const float *x, float *y, dyn_err *err) {
    ENTER();
    LAUNCH(avgpool_fwd_k, planes * p->OH * p->OW, *p, x, y);
    return 0;
}

extern "C" int dyn_cuda_avgpool2d_backward(dyn_cuda_ctx *ctx, const dyn_kpool *p, int64_t planes,
                                           const float *dy, float *dx, dyn_err *err) {
    ENTER();
    LAUNCH(avgpool_bwd_k, planes * p->H * p->W, *p, dy, dx);
    return 0;
}

extern "C" int dyn_cuda_gap_forward(dyn_cuda_ctx *ctx, int64_t planes, int64_t HW,
                                    const float *x, float *y, dyn_err *err) {
    ENTER();
    LAUNCH(gap_fwd_k, planes, HW, x, y);
    return 0;
}

extern "C" int dyn_cuda_gap_backward(dyn_cuda_ctx *ctx, int64_t planes, int64_t HW,
                                     const float *dy, float *dx, dyn_err *err) {
    ENTER();
    LAUNCH(gap_bwd_k, planes * HW, HW, dy, dx);
    return 0;
}

extern "C" int dyn_cuda_linear_backward(dyn_cuda_ctx *ctx, const float *x, const float *dy,
                                        int N, int in, int out, const float *w, float *dw,
                                        float *db, float *dx, dyn_err *err) {
    ENTER();
    if (N < 1 || in < 1 || out < 1)
        return dyn_err_set(err, DYN_EINVAL, "linear backward: bad shape N=%d in=%d out=%d", N,
                           in, out);
    /* dw [out][in] += dyᵀ [out][N] x [N][in] */
    if ((rc = rm_sgemm(ctx, 1, 0, out, in, N, 1.0f, dy, out, 0, x, in, 0, 1.0f, dw, in, 0, 1,
                       err)))
        return rc;
    if (db) LAUNCH(bias_grad_k, out, (int64_t)N, out, (int64_t)1, dy, db);
    /* dx [N][in] = dy [N][out] w [out][in] */
    if (dx &&
        (rc = rm_sgemm(ctx, 0, 0, N, in, out, 1.0f, dy, out, 0, w, in, 0, 0.0f, dx, in, 0, 1,
                       err)))
        return rc;
    return 0;
}

extern "C" int dyn_cuda_batchnorm_forward(dyn_cuda_ctx *ctx, const dyn_kbn *b, const float *x,
                                          const float *gamma, const float *beta, float *rmean,
                                          float *rvar, float *scratch, float *y, dyn_err *err) {
    ENTER();
    const int64_t cn = b->C * b->N;
    if (b->training) {
        LAUNCH(bn_part_k, cn, *b, (int)DYN_KBN_SUM_X, x, (const float *)NULL, scratch);
        LAUNCH(bn_mean_k, b->C, *b, scratch);
        LAUNCH(bn_part_k, cn, *b, (int)DYN_KBN_SUM_DEV2, x, (const float *)NULL, scratch);
    }
    LAUNCH(bn_stats_k, b->C, *b, rmean, rvar, scratch);
    LAUNCH(bn_apply_k, b->N * b->C * b->S, *b, x, gamma, beta, scratch, y);
    return 0;
}

extern "C" int dyn_cuda_batchnorm_backward(dyn_cuda_ctx *ctx, const dyn_kbn *b, const float *x,
                                           const float *dy, const float *gamma, float *scratch,
                                           float *dgamma, float *dbeta, float *dx, dyn_err *err) {
    ENTER();
    LAUNCH(bn_part_k, b->C * b->N, *b, (int)DYN_KBN_SUM_DY, x, dy, scratch);
    LAUNCH(bn_bwd_stats_k, b->C, *b, scratch, dgamma, dbeta);
    if (dx) LAUNCH(bn_bwd_dx_k, b->N * b->C * b->S, *b, x, dy, gamma, scratch, dx);
    return 0;
}

extern "C" int dyn_cuda_dc_kernel(dyn_cuda_ctx *ctx, int cout, int cin, int KK, const float *sl,
                                  const float *off, float *w, dyn_err *err) {
    ENTER();
    LAUNCH(dc_kernel_k, (int64_t)cout * cin * KK, cout, cin, KK, sl, off, w);
    return 0;
}

extern "C" int dyn_cuda_dc_slices(dyn_cuda_ctx *ctx, int cout, int cin, int KK, const float *g,
                                  float *sl, dyn_err *err) {
    ENTER();
    LAUNCH(dc_slices_k, (int64_t)cout * cin * KK, cout, cin, KK, g, sl);
    return 0;
}

/* ---- dyn_conv2d native ------------------------------------------------------------------- */

static int dcn_args(const dyn_cuda_dcn *p, dyn_err *err) {
    const dyn_conv_geom *g = &p->g;
    if (g->N < 1 || g->C < 1 || g->OH < 1 || g->OW < 1 || g->KH < 1 || g->KH != g->KW ||
        p->cout < 1 || p->H < 1 || p->q < 1 || (int64_t)g->N * g->OH * g->OW > 0x7fffffff)
        return dyn_err_set(err, DYN_EINVAL,
                           "dyn_conv2d native: bad geometry N=%d C=%d OH=%d OW=%d K=%dx%d "
                           "cout=%d H=%d q=%d",
                           g->N, g->C, g->OH, g->OW, g->KH, g->KW, p->cout, p->H, p->q);
    return 0;
}

/* System (r, t) on the device parameters, without its offset (c's share is added apart). */
static dyn_sys dcn_sys(const dyn_cuda_dcn *p, int r, int t) {
    const int K = p->g.KH;
    const int64_t hq = (int64_t)p->H * p->q;
    dyn_sys s = {};
    s.m = p->cout, s.n = p->g.C, s.H = p->H, s.q = p->q, s.kernel = DYN_KERNEL_L1;
    s.u = p->a + r * hq * p->cout;
    s.v = p->b + t * hq * p->g.C;
    s.lambda = p->lambda + ((int64_t)r * K + t) * p->H;
    s.c = 0.0f;
    return s;
}

extern "C" int dyn_cuda_dc_native_forward(dyn_cuda_ctx *ctx, const dyn_cuda_dcn *p,
                                          const float *x, float *y, float *scratch,
                                          dyn_err *err) {
    ENTER();
    if ((rc = dcn_args(p, err))) return rc;
    const dyn_conv_geom *g = &p->g;
    const int K = g->KH;
    const int64_t P = (int64_t)g->OH * g->OW, NP = g->N * P, ckk = (int64_t)g->C * K * K;
    const dyn_cuda_dcn_scr o = dyn_cuda_dcn_scratch(g, p->cout, 0);
    float *cols = scratch + o.cols, *yk = scratch + o.y, *cs = scratch + o.s;
    LAUNCH(im2col_k, ckk * NP, *g, 1, x, cols);
    LAUNCH(colsum_k, NP, ckk, NP, cols, cs);
    LAUNCH(dc_fill_k, (int64_t)p->cout * NP, NP, cs, p->c, yk); /* Y = c·Σ_rows X */
    for (int r = 0; r < K && !rc; r++)
        for (int t = 0; t < K && !rc; t++) {
            const dyn_sys s = dcn_sys(p, r, t);
            rc = dyn_cuda_native_forward(ctx, &s, cols + ((int64_t)r * K + t) * g->C * NP, yk,
                                         NP, err);
        }
    if (rc) return rc;
    LAUNCH(knp_to_nkp_k, (int64_t)p->cout * NP, g->N, p->cout, P, yk, p->bias, y);
    return 0;
}

extern "C" int dyn_cuda_dc_native_backward(dyn_cuda_ctx *ctx, const dyn_cuda_dcn *p,
                                           const float *dy, const dyn_sys_grad *gr,
                                           float *dbias, float *dx, float *scratch,
                                           dyn_err *err) {
    ENTER();
    if ((rc = dcn_args(p, err))) return rc;
    const dyn_conv_geom *g = &p->g;
    const int K = g->KH, cout = p->cout;
    const int64_t P = (int64_t)g->OH * g->OW, NP = g->N * P, ckk = (int64_t)g->C * K * K;
    const int64_t hq = (int64_t)p->H * p->q;
    const dyn_cuda_dcn_scr o = dyn_cuda_dcn_scratch(g, cout, 1);
    float *cols = scratch + o.cols, *dk = scratch + o.y, *cs = scratch + o.s;
    float *es = scratch + o.e, *part = scratch + o.part, *dcols = scratch + o.dcols;
    if (dbias) { /* as conv2d: partial sums per (channel, image), then per channel */
        LAUNCH(bias_part_k, (int64_t)cout * g->N, (int64_t)g->N, cout, P, dy, part);
        LAUNCH(bias_grad_k, cout, (int64_t)1, cout, (int64_t)g->N, part, dbias);
    }
    LAUNCH(nkp_to_knp_k, (int64_t)cout * NP, g->N, cout, P, dy, dk);
    if (gr->dc || dx) LAUNCH(colsum_k, NP, (int64_t)cout, NP, dk, es); /* Σ_o δ */
    if (gr->dc) { /* dc += Σ_p (Σ_rows X)(Σ_o δ) */
        const int64_t parts = (NP + DYN_CUDA_DCN_DOT_CHUNK - 1) / DYN_CUDA_DCN_DOT_CHUNK;
        LAUNCH(dot_part_k, parts, NP, (int64_t)DYN_CUDA_DCN_DOT_CHUNK, cs, es, part);
        LAUNCH(bias_grad_k, 1, (int64_t)1, 1, parts, part, gr->dc);
    }
    if (dx) LAUNCH(dc_fill_k, ckk * NP, NP, es, p->c, dcols); /* dX = c·Σ_o δ */
    for (int r = 0; r < K && !rc; r++)
        for (int t = 0; t < K && !rc; t++) {
            const dyn_sys s = dcn_sys(p, r, t);
            const int64_t rows = ((int64_t)r * K + t) * g->C * NP;
            dyn_sys_grad gt = {};
            gt.du = gr->du ? gr->du + r * hq * cout : NULL;
            gt.dv = gr->dv ? gr->dv + t * hq * g->C : NULL;
            gt.dlambda = gr->dlambda ? gr->dlambda + ((int64_t)r * K + t) * p->H : NULL;
            rc = dyn_cuda_native_backward(ctx, &s, cols + rows, dk, dx ? dcols + rows : NULL,
                                          NP, &gt, err);
        }
    if (rc) return rc;
    if (dx) LAUNCH(col2im_k, (int64_t)g->N * g->C * g->H * g->W, *g, 1, dcols, dx);
    return 0;
}
