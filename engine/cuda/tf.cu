/* tf.cu — the element-wise and transformer kernels (dyn_cuda_tf.h): one __global__ kernel per
 * body of kern_tf.h, each a grid-stride loop over the body's indices, and the batched matmul
 * on cuBLAS.
 *
 * Launch geometry: 256 threads a block, at most 65535 blocks (the grid-stride loop covers the
 * rest). The bodies that loop over a row or a column (softmax, layernorm, the parameter
 * gradients) run one thread per row / column: correct and deterministic, not yet fast.
 *
 * The matmul: cuBLAS is column-major, and a row-major [r][c] array is its c×r matrix, so the
 * row-major product Z = op(X) op(Y) is computed as Zᵀ = op(Y)ᵀ op(X)ᵀ: cuBLAS is called with
 * the operands swapped and the same transpose flags (rm_gemm below).
 */
#include <limits.h>

#include "cuda_impl.h"
#include "dyn_cuda_tf.h"

#define TF_THREADS 256

static unsigned tf_grid(int64_t n) {
    const unsigned b = dyn_cuda__blocks(n, TF_THREADS);
    return b > 65535u ? 65535u : b;
}

/* Queues kernel K over n indices (nothing when n is 0) and checks the launch. */
#define TF_LAUNCH(K, n, ...)                                                                \
    do {                                                                                    \
        if ((n) > 0) {                                                                      \
            K<<<tf_grid(n), TF_THREADS, 0, ctx->stream>>>((n), __VA_ARGS__);                \
            CUDA_CHECK_LAUNCH();                                                            \
        }                                                                                   \
    } while (0)

/* Enters ctx and rejects bad sizes (a caller's bug: the glue passes the CPU op's shapes). */
#define TF_ENTER(what, ok)                                                                  \
    do {                                                                                    \
        int rc_ = dyn_cuda__enter(ctx, err);                                                \
        if (rc_) return rc_;                                                                \
        if (!(ok)) return dyn_err_set(err, DYN_EINVAL, "%s: bad size or buffer", what);     \
    } while (0)

/* ---- kernels ---- */

__global__ void bin_fwd_k(int64_t n, dyn_kbin g, const float *a, const float *b, float *y) {
    DYN_GRID_LOOP(i, n) dyn_kbin_fwd(&g, a, b, y, i);
}
__global__ void bin_bwd_k(int64_t n, dyn_kbin g, int which, const float *a, const float *b,
                          const float *y, const float *dy, float *dx) {
    DYN_GRID_LOOP(j, n) dyn_kbin_bwd(&g, which, a, b, y, dy, dx, j);
}
__global__ void un_fwd_k(int64_t n, int kind, float p0, float p1, const float *x, float *y) {
    DYN_GRID_LOOP(i, n) dyn_kun_fwd(kind, p0, p1, x, y, i);
}
__global__ void un_bwd_k(int64_t n, int kind, float p0, float p1, const float *x, const float *y,
                         const float *dy, float *dx) {
    DYN_GRID_LOOP(i, n) dyn_kun_bwd(kind, p0, p1, x, y, dy, dx, i);
}
__global__ void scale_fwd_k(int64_t n, int64_t ch, int64_t inner, const float *w, const float *b,
                            const float *x, float *y) {
    DYN_GRID_LOOP(i, n) dyn_kscale_fwd(ch, inner, w, b, x, y, i);
}
__global__ void scale_dx_k(int64_t n, int64_t ch, int64_t inner, const float *w, const float *dy,
                           float *dx) {
    DYN_GRID_LOOP(i, n) dyn_kscale_dx(ch, inner, w, dy, dx, i);
}
__global__ void scale_dwb_k(int64_t n, int64_t batch, int64_t inner, const float *x,
                            const float *dy, float *dw, float *db) {
    DYN_GRID_LOOP(c, n) dyn_kscale_dwb(batch, n, inner, x, dy, dw, db, c);
}
__global__ void sm_fwd_k(int64_t rows, int64_t n, const float *x, float *y) {
    DYN_GRID_LOOP(r, rows) dyn_ksoftmax_fwd(n, x, y, r);
}
__global__ void sm_bwd_k(int64_t rows, int64_t n, const float *y, const float *dy, float *dx) {
    DYN_GRID_LOOP(r, rows) dyn_ksoftmax_bwd(n, y, dy, dx, r);
}
__global__ void ln_fwd_k(int64_t rows, int64_t n, double eps, const float *w, const float *b,
                         const float *x, float *y) {
    DYN_GRID_LOOP(r, rows) dyn_kln_fwd(n, eps, w, b, x, y, r);
}
__global__ void ln_row_k(int64_t rows, int64_t n, double eps, const float *w, const float *x,
                         const float *dy, float *dx, float *st) {
    DYN_GRID_LOOP(r, rows) dyn_kln_bwd_row(n, eps, w, x, dy, dx, st, r);
}
__global__ void ln_dwb_k(int64_t n, int64_t rows, const float *x, const float *dy,
                         const float *st, float *dw, float *db) {
    DYN_GRID_LOOP(i, n) dyn_kln_dwb(rows, n, x, dy, st, dw, db, i);
}
__global__ void perm_fwd_k(int64_t n, dyn_kperm g, const float *x, float *y) {
    DYN_GRID_LOOP(i, n) dyn_kperm_fwd(&g, x, y, i);
}
__global__ void perm_bwd_k(int64_t n, dyn_kperm g, const float *dy, float *dx) {
    DYN_GRID_LOOP(j, n) dyn_kperm_bwd(&g, dy, dx, j);
}
__global__ void cat_fwd_k(int64_t n, dyn_kcat g, const float *x0, const float *x1,
                          const float *x2, const float *x3, float *y) {
    DYN_GRID_LOOP(i, n) dyn_kcat_fwd(&g, x0, x1, x2, x3, y, i);
}
__global__ void cat_bwd_k(int64_t n, dyn_kcat g, int k, const float *dy, float *dxk) {
    DYN_GRID_LOOP(j, n) dyn_kcat_bwd(&g, k, dy, dxk, j);
}
__global__ void mean_fwd_k(int64_t m, int64_t n, int64_t inner, const float *x, float *y) {
    DYN_GRID_LOOP(i, m) dyn_kmean_fwd(n, inner, x, y, i);
}
__global__ void mean_bwd_k(int64_t m, int64_t n, int64_t inner, const float *dy, float *dx) {
    DYN_GRID_LOOP(j, m) dyn_kmean_bwd(n, inner, dy, dx, j);
}
__global__ void af_fwd_k(int64_t n, int64_t P, const float *w, const float *b, const float *x,
                         float *y) {
    DYN_GRID_LOOP(i, n) dyn_kaffine_fwd(P, w, b, x, y, i);
}
__global__ void af_dx_k(int64_t n, int64_t P, const float *w, const float *dy, float *dx) {
    DYN_GRID_LOOP(i, n) dyn_kaffine_dx(P, w, dy, dx, i);
}
__global__ void af_dwb_k(int64_t P, int64_t rows, const float *x, const float *dy, float *dw,
                         float *db) {
    DYN_GRID_LOOP(i, P) dyn_kaffine_dwb(rows, P, x, dy, dw, db, i);
}
__global__ void cp_fwd_k(int64_t n, dyn_kcp g, const float *w, const float *x, float *y) {
    DYN_GRID_LOOP(i, n) dyn_kcp_fwd(&g, w, x, y, i);
}
__global__ void cp_dx_k(int64_t n, dyn_kcp g, const float *dy, float *dx) {
    DYN_GRID_LOOP(j, n) dyn_kcp_dx(&g, dy, dx, j);
}
__global__ void cp_dw_k(int64_t n, dyn_kcp g, int64_t batch, const float *dy, float *dw) {
    DYN_GRID_LOOP(i, n) dyn_kcp_dw(&g, batch, dy, dw, i);
}

static int64_t bin_numel(const int64_t *sz) { return sz[0] * sz[1] * sz[2] * sz[3]; }

/* ---- launchers ---- */

extern "C" int dyn_cuda_tf_bin_forward(dyn_cuda_ctx *ctx, const dyn_kbin *g, const float *a,
                                       const float *b, float *y, dyn_err *err) {
    TF_ENTER("binary op forward", bin_numel(g->ysz) >= 0);
    TF_LAUNCH(bin_fwd_k, bin_numel(g->ysz), *g, a, b, y);
    return 0;
}

extern "C" int dyn_cuda_tf_bin_backward(dyn_cuda_ctx *ctx, const dyn_kbin *g, const float *a,
                                        const float *b, const float *y, const float *dy,
                                        float *da, float *db, dyn_err *err) {
    TF_ENTER("binary op backward", bin_numel(g->ysz) >= 0);
    if (da) TF_LAUNCH(bin_bwd_k, bin_numel(g->asz), *g, 0, a, b, y, dy, da);
    if (db) TF_LAUNCH(bin_bwd_k, bin_numel(g->bsz), *g, 1, a, b, y, dy, db);
    return 0;
}

extern "C" int dyn_cuda_tf_unary_forward(dyn_cuda_ctx *ctx, int kind, float p0, float p1,
                                         const float *x, float *y, int64_t n, dyn_err *err) {
    TF_ENTER("unary op forward", n >= 0);
    TF_LAUNCH(un_fwd_k, n, kind, p0, p1, x, y);
    return 0;
}

extern "C" int dyn_cuda_tf_unary_backward(dyn_cuda_ctx *ctx, int kind, float p0, float p1,
                                          const float *x, const float *y, const float *dy,
                                          float *dx, int64_t n, dyn_err *err) {
    TF_ENTER("unary op backward", n >= 0);
    TF_LAUNCH(un_bwd_k, n, kind, p0, p1, x, y, dy, dx);
    return 0;
}

extern "C" int dyn_cuda_tf_scale_forward(dyn_cuda_ctx *ctx, int64_t batch, int64_t ch,
                                         int64_t inner, const float *w, const float *b,
                                         const float *x, float *y, dyn_err *err) {
    TF_ENTER("scale forward", batch >= 0 && ch > 0 && inner > 0);
    TF_LAUNCH(scale_fwd_k, batch * ch * inner, ch, inner, w, b, x, y);
    return 0;
}

extern "C" int dyn_cuda_tf_scale_backward(dyn_cuda_ctx *ctx, int64_t batch, int64_t ch,
                                          int64_t inner, const float *w, const float *x,
                                          const float *dy, float *dx, float *dw, float *db,
                                          dyn_err *err) {
    TF_ENTER("scale backward", batch >= 0 && ch > 0 && inner > 0);
    if (dx) TF_LAUNCH(scale_dx_k, batch * ch * inner, ch, inner, w, dy, dx);
    if (dw && db) TF_LAUNCH(scale_dwb_k, ch, batch, inner, x, dy, dw, db);
    return 0;
}

extern "C" int dyn_cuda_tf_softmax_forward(dyn_cuda_ctx *ctx, int64_t rows, int64_t n,
                                           const float *x, float *y, dyn_err *err) {
    TF_ENTER("softmax forward", rows >= 0 && n > 0);
    TF_LAUNCH(sm_fwd_k, rows, n, x, y);
    return 0;
}

extern "C" int dyn_cuda_tf_softmax_backward(dyn_cuda_ctx *ctx, int64_t rows, int64_t n,
                                            const float *y, const float *dy, float *dx,
                                            dyn_err *err) {
    TF_ENTER("softmax backward", rows >= 0 && n > 0);
    TF_LAUNCH(sm_bwd_k, rows, n, y, dy, dx);
    return 0;
}

extern "C" int dyn_cuda_tf_layernorm_forward(dyn_cuda_ctx *ctx, int64_t rows, int64_t n,
                                             double eps, const float *w, const float *b,
                                             const float *x, float *y, dyn_err *err) {
    TF_ENTER("layernorm forward", rows >= 0 && n > 0);
    TF_LAUNCH(ln_fwd_k, rows, n, eps, w, b, x, y);
    return 0;
}

extern "C" int dyn_cuda_tf_layernorm_backward(dyn_cuda_ctx *ctx, int64_t rows, int64_t n,
                                              double eps, const float *w, const float *x,
                                              const float *dy, float *dx, float *dw, float *db,
                                              float *st, dyn_err *err) {
    TF_ENTER("layernorm backward", rows >= 0 && n > 0 && (st || rows == 0));
    TF_LAUNCH(ln_row_k, rows, n, eps, w, x, dy, dx, st);
    if (dw && db) TF_LAUNCH(ln_dwb_k, n, rows, x, dy, st, dw, db);
    return 0;
}

/* Row-major Z[m][n] = op(X) op(Y) (op(X) [m][k], op(Y) [k][n]; tx, ty: X, Y stored transposed;
 * ldx, ldy: their stored row lengths), `batch` times with the given strides. */
static int rm_gemm(dyn_cuda_ctx *ctx, int tx, int ty, int m, int n, int k, const float *X,
                   int ldx, int64_t sx, const float *Y, int ldy, int64_t sy, float *Z, int64_t sz,
                   int64_t batch, dyn_err *err) {
    const float one = 1.0f, zero = 0.0f;
    if (batch > INT_MAX)
        return dyn_err_set(err, DYN_EINVAL, "matmul: %lld products exceed cuBLAS's batch count",
                           (long long)batch);
    CUBLAS_CHECK(cublasSgemmStridedBatched(ctx->blas, ty ? CUBLAS_OP_T : CUBLAS_OP_N,
                                           tx ? CUBLAS_OP_T : CUBLAS_OP_N, n, m, k, &one, Y, ldy,
                                           sy, X, ldx, sx, &zero, Z, n, sz, (int)batch));
    return 0;
}

extern "C" int dyn_cuda_tf_matmul_forward(dyn_cuda_ctx *ctx, int64_t groups, int M, int K, int N,
                                          int ta, int tb, const float *A, const float *B,
                                          float *C, dyn_err *err) {
    TF_ENTER("matmul forward", groups >= 0 && M > 0 && K > 0 && N > 0);
    if (groups == 0) return 0;
    const int64_t sa = (int64_t)M * K, sb = (int64_t)K * N, sc = (int64_t)M * N;
    return rm_gemm(ctx, ta, tb, M, N, K, A, ta ? M : K, sa, B, tb ? K : N, sb, C, sc, groups,
                   err);
}

extern "C" int dyn_cuda_tf_matmul_backward(dyn_cuda_ctx *ctx, int64_t groups, int M, int K,
                                           int N, int ta, int tb, const float *A, const float *B,
                                           const float *dC, float *dA, float *dB, dyn_err *err) {
    TF_ENTER("matmul backward", groups >= 0 && M > 0 && K > 0 && N > 0);
    if (groups == 0) return 0;
    const int64_t sa = (int64_t)M * K, sb = (int64_t)K * N, sc = (int64_t)M * N;
    const int lda = ta ? M : K, ldb = tb ? K : N;
    int rc = 0;
    if (dA) {
        if (!ta) /* dA[M][K] = dC[M][N] op(B)ᵀ */
            rc = rm_gemm(ctx, 0, !tb, M, K, N, dC, N, sc, B, ldb, sb, dA, sa, groups, err);
        else /* dA[K][M] = op(B)[K][N] dCᵀ */
            rc = rm_gemm(ctx, tb, 1, K, M, N, B, ldb, sb, dC, N, sc, dA, sa, groups, err);
        if (rc) return rc;
    }
    if (dB) {
        if (!tb) /* dB[K][N] = op(A)ᵀ dC */
            rc = rm_gemm(ctx, !ta, 0, K, N, M, A, lda, sa, dC, N, sc, dB, sb, groups, err);
        else /* dB[N][K] = dCᵀ op(A) */
            rc = rm_gemm(ctx, 1, ta, N, K, M, dC, N, sc, A, lda, sa, dB, sb, groups, err);
    }
    return rc;
}

extern "C" int dyn_cuda_tf_permute_forward(dyn_cuda_ctx *ctx, const dyn_kperm *g, int64_t batch,
                                           const float *x, float *y, dyn_err *err) {
    TF_ENTER("permute forward", batch >= 0 && g->out_numel > 0);
    TF_LAUNCH(perm_fwd_k, batch * g->out_numel, *g, x, y);
    return 0;
}

extern "C" int dyn_cuda_tf_permute_backward(dyn_cuda_ctx *ctx, const dyn_kperm *g, int64_t batch,
                                            const float *dy, float *dx, dyn_err *err) {
    TF_ENTER("permute backward", batch >= 0 && g->in_numel > 0);
    TF_LAUNCH(perm_bwd_k, batch * g->in_numel, *g, dy, dx);
    return 0;
}

extern "C" int dyn_cuda_tf_concat_forward(dyn_cuda_ctx *ctx, const dyn_kcat *g, int64_t batch,
                                          const float *const *x, float *y, dyn_err *err) {
    TF_ENTER("concat forward", batch >= 0 && g->n >= 2 && g->n <= 4);
    TF_LAUNCH(cat_fwd_k, batch * g->ys, *g, x[0], x[1], g->n > 2 ? x[2] : NULL,
              g->n > 3 ? x[3] : NULL, y);
    return 0;
}

extern "C" int dyn_cuda_tf_concat_backward(dyn_cuda_ctx *ctx, const dyn_kcat *g, int64_t batch,
                                           const float *dy, float *const *dx, dyn_err *err) {
    TF_ENTER("concat backward", batch >= 0 && g->n >= 2 && g->n <= 4);
    for (int k = 0; k < g->n; k++)
        if (dx[k]) TF_LAUNCH(cat_bwd_k, batch * g->xs[k], *g, k, dy, dx[k]);
    return 0;
}

extern "C" int dyn_cuda_tf_mean_forward(dyn_cuda_ctx *ctx, int64_t outer, int64_t n,
                                        int64_t inner, const float *x, float *y, dyn_err *err) {
    TF_ENTER("reduce_mean forward", outer >= 0 && n > 0 && inner > 0);
    TF_LAUNCH(mean_fwd_k, outer * inner, n, inner, x, y);
    return 0;
}

extern "C" int dyn_cuda_tf_mean_backward(dyn_cuda_ctx *ctx, int64_t outer, int64_t n,
                                         int64_t inner, const float *dy, float *dx,
                                         dyn_err *err) {
    TF_ENTER("reduce_mean backward", outer >= 0 && n > 0 && inner > 0);
    TF_LAUNCH(mean_bwd_k, outer * n * inner, n, inner, dy, dx);
    return 0;
}

extern "C" int dyn_cuda_tf_affine_forward(dyn_cuda_ctx *ctx, int64_t rows, int64_t P,
                                          const float *w, const float *b, const float *x,
                                          float *y, dyn_err *err) {
    TF_ENTER("affine forward", rows >= 0 && P > 0);
    TF_LAUNCH(af_fwd_k, rows * P, P, w, b, x, y);
    return 0;
}

extern "C" int dyn_cuda_tf_affine_backward(dyn_cuda_ctx *ctx, int64_t rows, int64_t P,
                                           const float *w, const float *x, const float *dy,
                                           float *dx, float *dw, float *db, dyn_err *err) {
    TF_ENTER("affine backward", rows >= 0 && P > 0);
    if (dx) TF_LAUNCH(af_dx_k, rows * P, P, w, dy, dx);
    if (dw || db) TF_LAUNCH(af_dwb_k, P, rows, x, dy, dw, db);
    return 0;
}

extern "C" int dyn_cuda_tf_cat_param_forward(dyn_cuda_ctx *ctx, const dyn_kcp *g, int64_t batch,
                                             const float *w, const float *x, float *y,
                                             dyn_err *err) {
    TF_ENTER("cat_param forward", batch >= 0 && g->outer > 0 && g->xs > 0 && g->ps > 0);
    TF_LAUNCH(cp_fwd_k, batch * g->outer * (g->xs + g->ps), *g, w, x, y);
    return 0;
}

extern "C" int dyn_cuda_tf_cat_param_backward(dyn_cuda_ctx *ctx, const dyn_kcp *g,
                                              int64_t batch, const float *dy, float *dx,
                                              float *dw, dyn_err *err) {
    TF_ENTER("cat_param backward", batch >= 0 && g->outer > 0 && g->xs > 0 && g->ps > 0);
    if (dx) TF_LAUNCH(cp_dx_k, batch * g->outer * g->xs, *g, dy, dx);
    if (dw) TF_LAUNCH(cp_dw_k, g->outer * g->ps, *g, batch, dy, dw);
    return 0;
}
