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

/* ---- the gradient of the states given G = ∂L/∂W (the counterpart of
 * dyn_sys_grad_materialized) ----------------------------------------------------------------
 *
 * φ's derivative: ∂φ/∂u_k = sign(u_k − v_k) (l1), (u_k − v_k)/r (l2),
 * −(u_k − v_k)/(r (r + ε)²) (inv), r = sqrt(Σ_k (u_k − v_k)² + ε₀); ∂φ/∂v_k is its negative.
 * du: one thread per (h, k, i) sums over j; dv: one thread per (h, k, j) sums over i (a warp
 * reads 32 consecutive G entries of a row); for l2 / inv each recomputes r over the q
 * coordinates (O(H·q²·m·n): a first version). dλ and dc: one thread per (i, j), summed per
 * block and added atomically (their rounding varies from run to run). */

/* ∂φ/∂u_k for one pair (i, j) of copy h, and φ itself into *phi when not NULL. */
__device__ static float dphi(const dyn_sys s, int h, int k, int i, int j, float *phi) {
    const int64_t hk = (int64_t)h * s.q + k;
    const float dk = s.u[hk * s.m + i] - s.v[hk * s.n + j];
    if (s.kernel == DYN_KERNEL_L1) {
        if (phi) {
            float a = 0.0f;
            for (int k2 = 0; k2 < s.q; k2++) {
                const int64_t h2 = (int64_t)h * s.q + k2;
                a += fabsf(s.u[h2 * s.m + i] - s.v[h2 * s.n + j]);
            }
            *phi = a;
        }
        return (float)(dk > 0.0f) - (float)(dk < 0.0f);
    }
    float d2 = 0.0f;
    for (int k2 = 0; k2 < s.q; k2++) {
        const int64_t h2 = (int64_t)h * s.q + k2;
        const float df = s.u[h2 * s.m + i] - s.v[h2 * s.n + j];
        d2 += df * df;
    }
    const float r = sqrtf(d2 + DYN_NORM_EPS2);
    if (s.kernel == DYN_KERNEL_L2) {
        if (phi) *phi = r;
        return dk / r;
    }
    const float re = r + DYN_INV_EPS;
    if (phi) *phi = 1.0f / re;
    return -dk / (r * re * re);
}

__global__ void grad_du_kernel(const dyn_sys s, const float *__restrict__ g, float *du) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (int64_t)s.H * s.q * s.m) return;
    const int i = (int)(t % s.m), hk = (int)(t / s.m), h = hk / s.q, k = hk % s.q;
    float acc = 0.0f;
    for (int j = 0; j < s.n; j++) acc += g[(int64_t)i * s.n + j] * dphi(s, h, k, i, j, NULL);
    du[t] += s.lambda[h] * acc;
}

__global__ void grad_dv_kernel(const dyn_sys s, const float *__restrict__ g, float *dv) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= (int64_t)s.H * s.q * s.n) return;
    const int j = (int)(t % s.n), hk = (int)(t / s.n), h = hk / s.q, k = hk % s.q;
    float acc = 0.0f;
    for (int i = 0; i < s.m; i++) acc += g[(int64_t)i * s.n + j] * dphi(s, h, k, i, j, NULL);
    dv[t] -= s.lambda[h] * acc;
}

#define GR_THREADS 256

/* One thread per (i, j); per copy h the block's Σ G_ij φ_h is added to dλ_h, and Σ G_ij to dc. */
__global__ void grad_lc_kernel(const dyn_sys s, const float *__restrict__ g, float *dl,
                               float *dc) {
    __shared__ float red[GR_THREADS];
    const int64_t t = (int64_t)blockIdx.x * GR_THREADS + threadIdx.x;
    const int in = t < (int64_t)s.m * s.n;
    const int i = in ? (int)(t / s.n) : 0, j = in ? (int)(t % s.n) : 0;
    const float gij = in ? g[t] : 0.0f;
    for (int h = -1; h < s.H; h++) { /* h = -1: dc */
        if ((h < 0 && !dc) || (h >= 0 && !dl)) continue; /* uniform across the block */
        float v = gij;
        if (h >= 0 && in) {
            float phi = 0.0f;
            (void)dphi(s, h, 0, i, j, &phi);
            v = gij * phi;
        }
        red[threadIdx.x] = v;
        __syncthreads();
        for (int w = GR_THREADS / 2; w > 0; w >>= 1) {
            if ((int)threadIdx.x < w) red[threadIdx.x] += red[threadIdx.x + w];
            __syncthreads();
        }
        if (threadIdx.x == 0) atomicAdd(h < 0 ? dc : dl + h, red[0]);
        __syncthreads();
    }
}

extern "C" int dyn_cuda_grad_materialized(dyn_cuda_ctx *ctx, const dyn_sys *s, const float *g_dev,
                                          const dyn_sys_grad *out, dyn_err *err) {
    int rc = dyn_cuda__enter(ctx, err);
    if (rc) return rc;
    if (s->m < 1 || s->n < 1 || s->H < 1 || s->q < 1 || s->kernel < 0 ||
        s->kernel >= DYN_KERNEL_COUNT)
        return dyn_err_set(err, DYN_EINVAL, "state gradient: bad system m=%d n=%d H=%d q=%d",
                           s->m, s->n, s->H, s->q);
    const int64_t hq = (int64_t)s->H * s->q;
    if (out->du) {
        grad_du_kernel<<<dyn_cuda__blocks(hq * s->m, 128), 128, 0, ctx->stream>>>(*s, g_dev,
                                                                                 out->du);
        CUDA_CHECK_LAUNCH();
    }
    if (out->dv) {
        grad_dv_kernel<<<dyn_cuda__blocks(hq * s->n, 128), 128, 0, ctx->stream>>>(*s, g_dev,
                                                                                 out->dv);
        CUDA_CHECK_LAUNCH();
    }
    if (out->dlambda || out->dc) {
        grad_lc_kernel<<<dyn_cuda__blocks((int64_t)s->m * s->n, GR_THREADS), GR_THREADS, 0,
                         ctx->stream>>>(*s, g_dev, out->dlambda, out->dc);
        CUDA_CHECK_LAUNCH();
    }
    return 0;
}
