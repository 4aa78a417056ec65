/* kern_tf.h — kernel bodies of the element-wise and transformer ops on the CUDA backend (the
 * "tf" family: mul, sub, div, sigmoid, clip, erf, sqrt, pow, scale, softmax, layernorm,
 * permute, concat, reduce_mean, affine, cat_param; matmul is cuBLAS, no body).
 *
 * Each body computes one output element (or one row / one parameter element, looping over what
 * it reduces) from index i, following the CPU op of engine/ops/ formula for formula (sums in
 * double where the CPU sums in double, in float in the CPU's order where it sums in float).
 * Backward bodies gather: one index per element of the gradient they write. The rules of
 * kern.h hold (no shared memory, no atomics). engine/cuda/tf.cu launches them over a grid;
 * tests/unit/test_cuda_kern_tf.c runs them over all indices on the host against the CPU ops.
 *
 * The geometry structs are plain values filled on the host (engine/cuda/op_tf.c, the helpers
 * at the end of each section) and passed to the kernels by value.
 */
#ifndef DYN_CUDA_KERN_TF_H
#define DYN_CUDA_KERN_TF_H

#include "kern.h"

/* ---- binary element-wise ops with broadcasting (eltwise.c) -------------------------------- */

/* As eltwise_impl.h's dyn__bin_kind (add is helper A's, kept so the bodies match the CPU). */
enum { DYN_KBIN_ADD, DYN_KBIN_SUB, DYN_KBIN_MUL, DYN_KBIN_DIV };

/* Shapes padded to 4 dims (leading 1s): y's sizes, a's and b's sizes, and the strides of a
 * and b over y's dims (0 along a dimension where the input has size 1). */
typedef struct dyn_kbin {
    int kind;
    int64_t ysz[4], asz[4], bsz[4], sa[4], sb[4];
} dyn_kbin;

DYN_KERN float dyn_kbin_f(int k, float a, float b) {
    return k == DYN_KBIN_ADD   ? a + b
           : k == DYN_KBIN_SUB ? a - b
           : k == DYN_KBIN_MUL ? a * b
                               : a / b;
}

/* Fills g from the shapes of a, b (each ndim dims, 1..4; y's shape is their broadcast). */
DYN_KERN void dyn_kbin_geom(dyn_kbin *g, int kind, int ndim, const int64_t *a, const int64_t *b) {
    g->kind = kind;
    int64_t s_a = 1, s_b = 1;
    for (int i = 3; i >= 0; i--) {
        const int d = i - (4 - ndim);
        g->asz[i] = d >= 0 ? a[d] : 1;
        g->bsz[i] = d >= 0 ? b[d] : 1;
        g->ysz[i] = g->asz[i] > g->bsz[i] ? g->asz[i] : g->bsz[i];
        g->sa[i] = g->asz[i] == 1 ? 0 : s_a;
        g->sb[i] = g->bsz[i] == 1 ? 0 : s_b;
        s_a *= g->asz[i];
        s_b *= g->bsz[i];
    }
}

/* Offsets in a and b of output element i. */
DYN_KERN void dyn_kbin_off(const dyn_kbin *g, int64_t i, int64_t *ia, int64_t *ib) {
    int64_t oa = 0, ob = 0;
    for (int d = 3; d >= 0; d--) {
        const int64_t c = i % g->ysz[d];
        i /= g->ysz[d];
        oa += c * g->sa[d];
        ob += c * g->sb[d];
    }
    *ia = oa;
    *ib = ob;
}

/* y[i] = a (op) b, i over y's elements. */
DYN_KERN void dyn_kbin_fwd(const dyn_kbin *g, const float *a, const float *b, float *y,
                           int64_t i) {
    int64_t ia, ib;
    dyn_kbin_off(g, i, &ia, &ib);
    y[i] = dyn_kbin_f(g->kind, a[ia], b[ib]);
}

/* The gradient of one input (which = 0: a, 1: b) at its element j: the sum, in y's row-major
 * order (the CPU's), of the terms of every output element that read it. */
DYN_KERN void dyn_kbin_bwd(const dyn_kbin *g, int which, const float *a, const float *b,
                           const float *y, const float *dy, float *dx, int64_t j) {
    const int64_t *tsz = which ? g->bsz : g->asz;
    int64_t c[4], n[4], r = j;
    for (int d = 3; d >= 0; d--) { /* j's coordinates; dims it is broadcast along loop */
        c[d] = r % tsz[d];
        r /= tsz[d];
        n[d] = tsz[d] == 1 ? g->ysz[d] : 1;
    }
    float acc = 0.0f;
    for (int64_t k0 = 0; k0 < n[0]; k0++)
        for (int64_t k1 = 0; k1 < n[1]; k1++)
            for (int64_t k2 = 0; k2 < n[2]; k2++)
                for (int64_t k3 = 0; k3 < n[3]; k3++) {
                    const int64_t y0 = n[0] > 1 ? k0 : c[0], y1 = n[1] > 1 ? k1 : c[1];
                    const int64_t y2 = n[2] > 1 ? k2 : c[2], y3 = n[3] > 1 ? k3 : c[3];
                    const int64_t i = ((y0 * g->ysz[1] + y1) * g->ysz[2] + y2) * g->ysz[3] + y3;
                    const int64_t ia =
                        y0 * g->sa[0] + y1 * g->sa[1] + y2 * g->sa[2] + y3 * g->sa[3];
                    const int64_t ib =
                        y0 * g->sb[0] + y1 * g->sb[1] + y2 * g->sb[2] + y3 * g->sb[3];
                    const float gi = dy[i];
                    const int k = g->kind;
                    if (!which)
                        acc += k == DYN_KBIN_MUL ? gi * b[ib] : k == DYN_KBIN_DIV ? gi / b[ib] : gi;
                    else
                        acc += k == DYN_KBIN_ADD   ? gi
                               : k == DYN_KBIN_SUB ? -gi
                               : k == DYN_KBIN_MUL ? gi * a[ia]
                                                   : -gi * y[i] / b[ib];
                }
    dx[j] = acc;
}

/* ---- unary activations (unary.c) ----------------------------------------------------------- */

enum { DYN_KUN_SIGMOID, DYN_KUN_CLIP, DYN_KUN_ERF, DYN_KUN_SQRT, DYN_KUN_POW };

/* y[i] = f(x[i]); p0, p1: clip's lo and hi, pow's exponent (p0). */
DYN_KERN void dyn_kun_fwd(int kind, float p0, float p1, const float *x, float *y, int64_t i) {
    const float v = x[i];
    float r;
    switch (kind) {
    case DYN_KUN_SIGMOID:
        if (v >= 0.0f) {
            r = 1.0f / (1.0f + expf(-v));
        } else {
            const float e = expf(v);
            r = e / (1.0f + e);
        }
        break;
    case DYN_KUN_CLIP: r = v < p0 ? p0 : (v > p1 ? p1 : v); break;
    case DYN_KUN_ERF: r = erff(v); break;
    case DYN_KUN_SQRT: r = sqrtf(v); break;
    default: r = p0 == 2.0f ? v * v : powf(v, p0); break;
    }
    y[i] = r;
}

/* dx[i] = dy[i] f'(x[i]) (sigmoid and sqrt from y). */
DYN_KERN void dyn_kun_bwd(int kind, float p0, float p1, const float *x, const float *y,
                          const float *dy, float *dx, int64_t i) {
    const float g = dy[i];
    float r;
    switch (kind) {
    case DYN_KUN_SIGMOID: r = g * y[i] * (1.0f - y[i]); break;
    case DYN_KUN_CLIP: r = x[i] >= p0 && x[i] <= p1 ? g : 0.0f; break;
    case DYN_KUN_ERF: r = g * (1.12837916709551257f * expf(-x[i] * x[i])); break;
    case DYN_KUN_SQRT: r = g * (0.5f / y[i]); break;
    default: r = p0 == 0.0f ? 0.0f : g * p0 * (p0 == 2.0f ? x[i] : powf(x[i], p0 - 1.0f)); break;
    }
    dx[i] = r;
}

/* ---- scale (scale.c): y[n, c, ...] = x w[c] + b[c] ------------------------------------------ */

/* i over x's elements; ch channels of `inner` elements each per sample. */
DYN_KERN void dyn_kscale_fwd(int64_t ch, int64_t inner, const float *w, const float *b,
                             const float *x, float *y, int64_t i) {
    const int64_t c = (i / inner) % ch;
    y[i] = x[i] * w[c] + b[c];
}

DYN_KERN void dyn_kscale_dx(int64_t ch, int64_t inner, const float *w, const float *dy,
                            float *dx, int64_t i) {
    dx[i] = dy[i] * w[(i / inner) % ch];
}

/* dw[c] += sum dy x, db[c] += sum dy over the batch and inner positions (in double); c = i. */
DYN_KERN void dyn_kscale_dwb(int64_t batch, int64_t ch, int64_t inner, const float *x,
                             const float *dy, float *dw, float *db, int64_t c) {
    double sw = 0, sb = 0;
    for (int64_t s = 0; s < batch; s++) {
        const int64_t base = (s * ch + c) * inner;
        for (int64_t k = 0; k < inner; k++) {
            sw += (double)dy[base + k] * x[base + k];
            sb += dy[base + k];
        }
    }
    dw[c] += (float)sw;
    db[c] += (float)sb;
}

/* ---- softmax over the last axis (softmax.c): one index per row of n ------------------------ */

DYN_KERN void dyn_ksoftmax_fwd(int64_t n, const float *x, float *y, int64_t r) {
    const float *xr = x + r * n;
    float *yr = y + r * n;
    float mx = xr[0];
    for (int64_t i = 1; i < n; i++) mx = xr[i] > mx ? xr[i] : mx;
    double s = 0;
    for (int64_t i = 0; i < n; i++) {
        yr[i] = expf(xr[i] - mx);
        s += yr[i];
    }
    const float inv = (float)(1.0 / s);
    for (int64_t i = 0; i < n; i++) yr[i] *= inv;
}

DYN_KERN void dyn_ksoftmax_bwd(int64_t n, const float *y, const float *dy, float *dx, int64_t r) {
    const float *yr = y + r * n, *g = dy + r * n;
    float *d = dx + r * n;
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += (double)g[i] * yr[i];
    for (int64_t i = 0; i < n; i++) d[i] = yr[i] * (g[i] - (float)s);
}

/* ---- layernorm over the last axis (layernorm.c) -------------------------------------------- */

/* Mean and 1/sqrt(var + eps) of row x[0..n), in double (the CPU's ln_stats_row). */
DYN_KERN void dyn_kln_stats(const float *x, int64_t n, double eps, double *mean, double *rstd) {
    double s = 0, q = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    const double m = s / (double)n;
    for (int64_t i = 0; i < n; i++) q += (x[i] - m) * (x[i] - m);
    *mean = m;
    *rstd = 1.0 / sqrt(q / (double)n + eps);
}

/* Row r of y. */
DYN_KERN void dyn_kln_fwd(int64_t n, double eps, const float *w, const float *b, const float *x,
                          float *y, int64_t r) {
    const float *xr = x + r * n;
    float *yr = y + r * n;
    double m, rs;
    dyn_kln_stats(xr, n, eps, &m, &rs);
    for (int64_t i = 0; i < n; i++) yr[i] = (float)((xr[i] - m) * rs) * w[i] + b[i];
}

/* Row r: its statistics into st[2r], st[2r + 1] (for dyn_kln_dwb) and, when dx is not NULL,
 * dx = rstd (g - mean(g) - xhat mean(g xhat)), g = dy w. */
DYN_KERN void dyn_kln_bwd_row(int64_t n, double eps, const float *w, const float *x,
                              const float *dy, float *dx, float *st, int64_t r) {
    const float *xr = x + r * n, *g = dy + r * n;
    double m, rs, sg = 0, sgx = 0;
    dyn_kln_stats(xr, n, eps, &m, &rs);
    st[2 * r] = (float)m;
    st[2 * r + 1] = (float)rs;
    if (!dx) return;
    for (int64_t i = 0; i < n; i++) {
        const double xh = (xr[i] - m) * rs, gi = (double)g[i] * w[i];
        sg += gi;
        sgx += gi * xh;
    }
    sg /= (double)n;
    sgx /= (double)n;
    float *d = dx + r * n;
    for (int64_t i = 0; i < n; i++) {
        const double xh = (xr[i] - m) * rs;
        d[i] = (float)(rs * ((double)g[i] * w[i] - sg - xh * sgx));
    }
}

/* Column i: dw[i] += sum_r dy xhat, db[i] += sum_r dy (float, in row order, as the CPU), with
 * the row statistics st of dyn_kln_bwd_row. */
DYN_KERN void dyn_kln_dwb(int64_t rows, int64_t n, const float *x, const float *dy,
                          const float *st, float *dw, float *db, int64_t i) {
    float aw = dw[i], ab = db[i];
    for (int64_t r = 0; r < rows; r++) {
        const double xh = (x[r * n + i] - (double)st[2 * r]) * (double)st[2 * r + 1];
        aw += (float)(dy[r * n + i] * xh);
        ab += dy[r * n + i];
    }
    dw[i] = aw;
    db[i] = ab;
}

/* ---- permute (permute.c): reshape / transpose / slice of atoms ----------------------------- */

#define DYN_KPERM_MAX 8

/* Forward: the output's (merged) atoms osz[0..nrun) with their input strides ist and the
 * offset `base` of the slice start. Backward (gather over dx): the input atoms dims[0..k),
 * each one's stride in the output (ost), and the slice of atom `axis` (-1: none). */
typedef struct dyn_kperm {
    int nrun, k, axis;
    int64_t osz[DYN_KPERM_MAX], ist[DYN_KPERM_MAX];
    int64_t dims[DYN_KPERM_MAX], ost[DYN_KPERM_MAX];
    int64_t base, start, len, step, in_numel, out_numel;
} dyn_kperm;

/* Fills g from the op's attributes (dims[k], perm[k], slice axis/start/len/step) and its
 * merged runs (nrun, osz, ist, base): the fields of permute_impl.h's perm_impl. */
DYN_KERN void dyn_kperm_geom(dyn_kperm *g, int k, const int64_t *dims, const int *perm, int axis,
                             int64_t start, int64_t len, int64_t step, int nrun,
                             const int64_t *osz, const int64_t *ist, int64_t base,
                             int64_t in_numel, int64_t out_numel) {
    g->nrun = nrun;
    g->k = k;
    g->axis = axis;
    g->base = base;
    g->start = start;
    g->len = len;
    g->step = step;
    g->in_numel = in_numel;
    g->out_numel = out_numel;
    for (int j = 0; j < nrun; j++) {
        g->osz[j] = osz[j];
        g->ist[j] = ist[j];
    }
    int64_t s = 1; /* output strides of the output atoms, last first */
    for (int j = k - 1; j >= 0; j--) {
        const int a = perm[j];
        g->dims[a] = dims[a];
        g->ost[a] = s;
        s *= a == axis ? len : dims[a];
    }
}

/* y[i], i over the whole output (batch included). */
DYN_KERN void dyn_kperm_fwd(const dyn_kperm *g, const float *x, float *y, int64_t i) {
    const int64_t smp = i / g->out_numel;
    int64_t o = i % g->out_numel, off = g->base;
    for (int j = g->nrun - 1; j >= 0; j--) {
        off += (o % g->osz[j]) * g->ist[j];
        o /= g->osz[j];
    }
    y[i] = x[smp * g->in_numel + off];
}

/* dx[j], j over the whole input: the dy element it was copied to, or 0 when a slice drops it. */
DYN_KERN void dyn_kperm_bwd(const dyn_kperm *g, const float *dy, float *dx, int64_t j) {
    const int64_t smp = j / g->in_numel;
    int64_t r = j % g->in_numel, o = 0;
    for (int a = g->k - 1; a >= 0; a--) {
        int64_t c = r % g->dims[a];
        r /= g->dims[a];
        if (a == g->axis) {
            if (c < g->start || (c - g->start) % g->step != 0 ||
                (c - g->start) / g->step >= g->len) {
                dx[j] = 0.0f;
                return;
            }
            c = (c - g->start) / g->step;
        }
        o += c * g->ost[a];
    }
    dx[j] = dy[smp * g->out_numel + o];
}

/* ---- concat along axis 1 (concat.c): up to 4 inputs --------------------------------------- */

typedef struct dyn_kcat {
    int n;
    int64_t xs[4], off[4], ys; /* floats per sample of each input, their offsets in y's */
} dyn_kcat;

/* y[i]; x0..x3: the inputs (unused ones NULL). */
DYN_KERN void dyn_kcat_fwd(const dyn_kcat *g, const float *x0, const float *x1, const float *x2,
                           const float *x3, float *y, int64_t i) {
    const int64_t s = i / g->ys, r = i % g->ys;
    int k = 0;
    while (k + 1 < g->n && r >= g->off[k + 1]) k++;
    const float *x = k == 0 ? x0 : k == 1 ? x1 : k == 2 ? x2 : x3;
    y[i] = x[s * g->xs[k] + r - g->off[k]];
}

/* dx_k[j] for input k. */
DYN_KERN void dyn_kcat_bwd(const dyn_kcat *g, int k, const float *dy, float *dxk, int64_t j) {
    dxk[j] = dy[(j / g->xs[k]) * g->ys + g->off[k] + j % g->xs[k]];
}

/* ---- reduce_mean over one axis (reduce.c): x seen as [outer][n][inner] --------------------- */

/* y[i], i = o * inner + k, in double. */
DYN_KERN void dyn_kmean_fwd(int64_t n, int64_t inner, const float *x, float *y, int64_t i) {
    const int64_t o = i / inner, k = i % inner;
    double s = 0;
    for (int64_t t = 0; t < n; t++) s += x[(o * n + t) * inner + k];
    y[i] = (float)(s / (double)n);
}

DYN_KERN void dyn_kmean_bwd(int64_t n, int64_t inner, const float *dy, float *dx, int64_t j) {
    const float inv = 1.0f / (float)n;
    dx[j] = dy[(j / (n * inner)) * inner + j % inner] * inv;
}

/* ---- affine over trailing dims (affine.c): period P, w / b each may be NULL ---------------- */

DYN_KERN void dyn_kaffine_fwd(int64_t P, const float *w, const float *b, const float *x, float *y,
                              int64_t i) {
    float v = x[i];
    if (w) v *= w[i % P];
    if (b) v += b[i % P];
    y[i] = v;
}

DYN_KERN void dyn_kaffine_dx(int64_t P, const float *w, const float *dy, float *dx, int64_t i) {
    dx[i] = w ? dy[i] * w[i % P] : dy[i];
}

/* Parameter element i: dw[i] += sum_r dy x, db[i] += sum_r dy (float, row order as the CPU);
 * dw / db each may be NULL. */
DYN_KERN void dyn_kaffine_dwb(int64_t rows, int64_t P, const float *x, const float *dy, float *dw,
                              float *db, int64_t i) {
    float aw = dw ? dw[i] : 0.0f, ab = db ? db[i] : 0.0f;
    for (int64_t r = 0; r < rows; r++) {
        aw += dy[r * P + i] * x[r * P + i];
        ab += dy[r * P + i];
    }
    if (dw) dw[i] = aw;
    if (db) db[i] = ab;
}

/* ---- cat_param (cat_param.c): per sample, `outer` blocks of the input's xs floats and the
 * parameter's ps floats, the parameter first (at = 0) or last (at = 1) ----------------------- */

typedef struct dyn_kcp {
    int at;
    int64_t outer, xs, ps;
} dyn_kcp;

/* y[i], i over the output. */
DYN_KERN void dyn_kcp_fwd(const dyn_kcp *g, const float *w, const float *x, float *y, int64_t i) {
    const int64_t blk = g->xs + g->ps, so = i / blk, o = so % g->outer;
    int64_t p = i % blk;
    const int64_t xstart = g->at ? 0 : g->ps;
    if (p >= xstart && p < xstart + g->xs)
        y[i] = x[so * g->xs + p - xstart];
    else
        y[i] = w[o * g->ps + (g->at ? p - g->xs : p)];
}

/* dx[j], j over the input. */
DYN_KERN void dyn_kcp_dx(const dyn_kcp *g, const float *dy, float *dx, int64_t j) {
    const int64_t so = j / g->xs;
    dx[j] = dy[so * (g->xs + g->ps) + (g->at ? 0 : g->ps) + j % g->xs];
}

/* Parameter element i (= o * ps + t): dw[i] += the sum over the batch of its dy (float, in the
 * CPU's order). */
DYN_KERN void dyn_kcp_dw(const dyn_kcp *g, int64_t batch, const float *dy, float *dw, int64_t i) {
    const int64_t o = i / g->ps, t = i % g->ps, blk = g->xs + g->ps;
    float acc = dw[i];
    const int64_t col = (g->at ? g->xs : 0) + t;
    for (int64_t s = 0; s < batch; s++) acc += dy[(s * g->outer + o) * blk + col];
    dw[i] = acc;
}

#endif
