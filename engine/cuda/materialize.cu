/* materialize.cu — W from DyN states on the device (the counterpart of dyn_sys_materialize,
 * engine/dyn/materialize.c): W_ij = c + Σ_h λ_h φ(u_i^h, v_j^h) for φ = l1, l2 or inv.
 *
 * One thread per weight; a block covers 32 columns × 8 rows, so a warp reads 32 consecutive
 * v[hk][j] (coalesced) and one u[hk][i] (broadcast), and writes 32 consecutive W entries. The
 * sums run in the CPU kernel's order (over k inside each h, then λ_h·φ_h added to c), in
 * float; W is written once. The states are read from global memory through the L1/L2 caches:
 * a tile of W reads 8·H·q u values and 32·H·q v values.
 */
#include "cuda_impl.h"

#define MT_X 32
#define MT_Y 8

__global__ void materialize_kernel(int m, int n, int H, int q, int kernel,
                                   const float *__restrict__ u, const float *__restrict__ v,
                                   const float *__restrict__ lambda, float c,
                                   float *__restrict__ w) {
    const int j = blockIdx.x * MT_X + threadIdx.x;
    const int i = blockIdx.y * MT_Y + threadIdx.y;
    if (i >= m || j >= n) return;
    float acc = c;
    for (int h = 0; h < H; h++) {
        float d = 0.0f;
        for (int k = 0; k < q; k++) {
            const int64_t hk = (int64_t)h * q + k;
            const float df = u[hk * m + i] - v[hk * n + j];
            d += kernel == DYN_KERNEL_L1 ? fabsf(df) : df * df;
        }
        if (kernel == DYN_KERNEL_L2) d = sqrtf(d + DYN_NORM_EPS2);
        else if (kernel == DYN_KERNEL_INV) d = 1.0f / (sqrtf(d + DYN_NORM_EPS2) + DYN_INV_EPS);
        acc += lambda[h] * d;
    }
    w[(int64_t)i * n + j] = acc;
}

extern "C" int dyn_cuda_materialize(dyn_cuda_ctx *ctx, const dyn_sys *s, float *w_dev,
                                    dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    if (s->m < 1 || s->n < 1 || s->H < 1 || s->q < 1 || s->kernel < 0 ||
        s->kernel >= DYN_KERNEL_COUNT)
        return dyn_err_set(err, DYN_EINVAL, "materialize: bad system m=%d n=%d H=%d q=%d", s->m,
                           s->n, s->H, s->q);
    if ((s->m + MT_Y - 1) / MT_Y > 65535)
        return dyn_err_set(err, DYN_EUNSUP, "materialize: %d rows exceed the grid (%d max)",
                           s->m, 65535 * MT_Y);
    dim3 block(MT_X, MT_Y), grid(dyn_cuda__blocks(s->n, MT_X), dyn_cuda__blocks(s->m, MT_Y));
    materialize_kernel<<<grid, block, 0, ctx->stream>>>(s->m, s->n, s->H, s->q, (int)s->kernel,
                                                       s->u, s->v, s->lambda, s->c, w_dev);
    CUDA_CHECK_LAUNCH();
    return 0;
}
