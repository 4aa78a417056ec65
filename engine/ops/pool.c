/* pool.c — 2-D pooling: max, average (PyTorch's MaxPool2d / AvgPool2d) and global average.
 *
 * maxpool2d / avgpool2d attributes: {"kernel" (or "kernel_h" and "kernel_w"), "stride"
 *   (default = kernel), "padding" (0), "ceil_mode" (0/1, default 0)}, each spatial one an int or
 *   its _h/_w pair; avgpool2d adds "count_include_pad" (0/1, default 1, as in PyTorch).
 *   Padding may be at most half the kernel (PyTorch's rule), so every window holds at least one
 *   input element. Output size follows PyTorch:
 *     OH = floor_or_ceil((H + 2*PH - KH) / SH) + 1, and with ceil_mode a last window that
 *     would start in the bottom/right padding is dropped (OH reduced by one).
 * maxpool2d: padded taps never win; ties go to the first maximum in row-major window order;
 *   a NaN in the window propagates (output NaN, as in PyTorch; argmax = the first NaN).
 *   The forward writes the argmax (an int32 index within the H*W plane) of each output to
 *   scratch, in training and in inference alike, and backward scatters dy through it.
 * avgpool2d: divisor = window size clipped to the padded input (count_include_pad = 1) or to
 *   the input (count_include_pad = 0), exactly as PyTorch.
 * globalavgpool: [N, C, H, W] -> [N, C, 1, 1], no attributes.
 * Pooling does no multiply-accumulates: stats() is left at the default (macs = 0).
 */
#include <limits.h>
#include <math.h>
#include <string.h>

#include "../cpu/isa.h"
#if DYN_ISA_X86
#include <immintrin.h>
#endif
#include "../cpu/par.h"
#include "../layer.h"
#include "pool_impl.h"

_Static_assert(sizeof(float) == sizeof(int32_t), "argmax indices are stored in float scratch");

#define POOL_MAX_KERNEL ((int64_t)1 << 16)

static int pool_create(dyn_layer *l, const json_t *attrs, int is_avg, dyn_err *err) {
    pool_impl p = {0};
    int64_t ceil_mode, cip = 1;
    int rc;
    if ((rc = dyn_attr_int_hw(l, attrs, "kernel", -1, -1, 1, POOL_MAX_KERNEL, &p.kh, &p.kw, err)) ||
        (rc = dyn_attr_int_hw(l, attrs, "stride", p.kh, p.kw, 1, POOL_MAX_KERNEL, &p.sh, &p.sw, err)) ||
        (rc = dyn_attr_int_hw(l, attrs, "padding", 0, 0, 0, POOL_MAX_KERNEL, &p.ph, &p.pw, err)) ||
        (rc = dyn_attr_int(l, attrs, "ceil_mode", 0, 0, 1, &ceil_mode, err)))
        return rc;
    if (is_avg && (rc = dyn_attr_int(l, attrs, "count_include_pad", 1, 0, 1, &cip, err)))
        return rc;
    if (p.ph > p.kh / 2 || p.pw > p.kw / 2)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': padding %dx%d is more than half the kernel %dx%d",
                           l->name, p.ph, p.pw, p.kh, p.kw);
    p.ceil_mode = (int)ceil_mode;
    p.count_include_pad = (int)cip;
    pool_impl *im = malloc(sizeof *im);
    if (!im) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    *im = p;
    l->impl = im;
    return 0;
}

static int maxpool_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    return pool_create(l, attrs, 0, err);
}

static int avgpool_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    return pool_create(l, attrs, 1, err);
}

static void pool_destroy(dyn_layer *l) {
    free(l->impl);
    l->impl = NULL;
}

static json_t *pool_attrs_common(const dyn_layer *l) {
    const pool_impl *p = l->impl;
    json_t *o = json_object();
    if (!o) return NULL;
    dyn_attrs_put_hw(o, "kernel", p->kh, p->kw);
    dyn_attrs_put_hw(o, "stride", p->sh, p->sw);
    dyn_attrs_put_hw(o, "padding", p->ph, p->pw);
    json_object_set_new(o, "ceil_mode", json_integer(p->ceil_mode));
    return o;
}

static json_t *maxpool_attrs(const dyn_layer *l) { return pool_attrs_common(l); }

static json_t *avgpool_attrs(const dyn_layer *l) {
    json_t *o = pool_attrs_common(l);
    if (o) {
        const pool_impl *p = l->impl;
        json_object_set_new(o, "count_include_pad", json_integer(p->count_include_pad));
    }
    return o;
}

/* Output length of one spatial dimension (PyTorch's pooling_output_shape, dilation 1);
 * 0 when the output would be empty. */
static int64_t pool_out_len(int64_t in, int k, int s, int p, int ceil_mode) {
    int64_t num = in + 2 * (int64_t)p - k;
    if (num < 0) return 0;
    int64_t out = (ceil_mode ? (num + s - 1) / s : num / s) + 1;
    if (ceil_mode && (out - 1) * s >= in + p) out--;
    return out;
}

/* Window [*y0, *y1) of output index o, clipped to the input; returns the unclipped extent
 * clipped only to the padded input (what count_include_pad divides by). */
static int pool_window(int o, int k, int s, int p, int in, int *y0, int *y1) {
    int a = o * s - p;
    int b = DYN_MIN(a + k, in + p);
    int extent = b - a;
    *y0 = DYN_MAX(a, 0);
    *y1 = DYN_MIN(b, in);
    return extent;
}

static int pool_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    const pool_impl *p = l->impl;
    const dyn_shape *s = &in[0];
    char buf[64];
    if (s->ndim != 4)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': %s expects input [N, C, H, W] but got %s",
                           l->name, l->ops->name, dyn_shape_str(s, buf, sizeof buf));
    if (s->d[0] < 1 || s->d[1] < 1 || s->d[2] < 1 || s->d[3] < 1 || s->d[2] * s->d[3] > INT_MAX)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': %s input %s has an empty or oversized dimension", l->name,
                           l->ops->name, dyn_shape_str(s, buf, sizeof buf));
    int64_t oh = pool_out_len(s->d[2], p->kh, p->sh, p->ph, p->ceil_mode);
    int64_t ow = pool_out_len(s->d[3], p->kw, p->sw, p->pw, p->ceil_mode);
    if (oh < 1 || ow < 1)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': input %s is smaller than the %dx%d pooling window with "
                           "padding %dx%d (the output would be empty)",
                           l->name, dyn_shape_str(s, buf, sizeof buf), p->kh, p->kw, p->ph, p->pw);
    memset(out, 0, sizeof *out);
    out->ndim = 4;
    out->d[0] = s->d[0];
    out->d[1] = s->d[1];
    out->d[2] = oh;
    out->d[3] = ow;
    return 0;
}

static void pool_assert_shapes(const dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y) {
    const pool_impl *p = l->impl;
    DYN_ASSERT(x->ndim == 4 && y->ndim == 4 && dyn_tensor_is_contiguous(x));
    DYN_ASSERT(y->shape[0] == x->shape[0] && y->shape[1] == x->shape[1]);
    DYN_ASSERT(y->shape[2] == pool_out_len(x->shape[2], p->kh, p->sh, p->ph, p->ceil_mode));
    DYN_ASSERT(y->shape[3] == pool_out_len(x->shape[3], p->kw, p->sw, p->pw, p->ceil_mode));
}

/* One argmax (int32) per output element. */
static size_t maxpool_scratch(const dyn_layer *l, const dyn_shape *in, int training) {
    (void)training;
    dyn_shape out;
    if (pool_infer(l, in, &out, NULL)) return 0;
    return (size_t)dyn_shape_numel(&out);
}

/* Plane index of the first NaN in the window (one is known to be there). */
static int first_nan(const float *src, int W, int y0, int y1, int x0, int x1) {
    for (int iy = y0; iy < y1; iy++)
        for (int ix = x0; ix < x1; ix++)
            if (isnan(src[iy * W + ix])) return iy * W + ix;
    return y0 * W + x0;
}

/* One output row of the general kernel: outputs [ox0, OW) of row oy. */
static void maxpool_row_ref(const pool_impl *p, const float *src, int H, int W, int oy, int ox0,
                            int OW, float *dst, int32_t *am) {
    int y0, y1;
    pool_window(oy, p->kh, p->sh, p->ph, H, &y0, &y1);
    for (int ox = ox0; ox < OW; ox++) {
        int x0, x1;
        pool_window(ox, p->kw, p->sw, p->pw, W, &x0, &x1);
        /* Branch-free scan (random data mispredicts an if); NaN is rare, so it only
         * raises a flag here and the window is searched again for the first NaN. */
        int best_i = y0 * W + x0, nan = 0;
        float best = src[best_i];
        for (int iy = y0; iy < y1; iy++)
            for (int ix = x0; ix < x1; ix++) {
                float v = src[iy * W + ix];
                nan |= v != v;
                best_i = v > best ? iy * W + ix : best_i;
                best = v > best ? v : best;
            }
        if (nan) best_i = first_nan(src, W, y0, y1, x0, x1), best = src[best_i];
        dst[ox] = best;
        if (am) am[ox] = best_i;
    }
}

#if DYN_ISA_X86
/* maxpool_row_2x2's AVX2 part (n >= 8): 8 outputs at a time, the even/odd columns of two input
 * rows deinterleaved. Returns how many outputs it wrote (n); *nan set when a window held one. */
static DYN_TARGET_AVX2 int maxpool_2x2_avx2(const float *r0, const float *r1, int W, int32_t base,
                                            int n, float *dst, int32_t *am, int *nan) {
    int ox = 0;
    __m256 nanv = _mm256_setzero_ps();
    const __m256i one = _mm256_set1_epi32(1), wv = _mm256_set1_epi32(W),
                  w1 = _mm256_set1_epi32(W + 1),
                  step = _mm256_set_epi32(14, 12, 10, 8, 6, 4, 2, 0);
    for (int done = 0; done < n; done = ox) {
        ox = DYN_MIN(done, n - 8); /* the last block ends at n (recomputes a few outputs) */
        __m256 p0 = _mm256_loadu_ps(r0 + 2 * ox), p1 = _mm256_loadu_ps(r0 + 2 * ox + 8);
        __m256 q0 = _mm256_loadu_ps(r1 + 2 * ox), q1 = _mm256_loadu_ps(r1 + 2 * ox + 8);
        __m256 a = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(p0, p1, 0x88)), 0xD8));
        __m256 b = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(p0, p1, 0xDD)), 0xD8));
        __m256 c = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(q0, q1, 0x88)), 0xD8));
        __m256 d = _mm256_castpd_ps(_mm256_permute4x64_pd(
            _mm256_castps_pd(_mm256_shuffle_ps(q0, q1, 0xDD)), 0xD8));
        nanv = _mm256_or_ps(nanv, _mm256_or_ps(_mm256_cmp_ps(a, b, _CMP_UNORD_Q),
                                               _mm256_cmp_ps(c, d, _CMP_UNORD_Q)));
        __m256 m = a, gt;
        __m256i k = _mm256_setzero_si256();
        gt = _mm256_cmp_ps(b, m, _CMP_GT_OQ);
        m = _mm256_blendv_ps(m, b, gt);
        k = _mm256_blendv_epi8(k, one, _mm256_castps_si256(gt));
        gt = _mm256_cmp_ps(c, m, _CMP_GT_OQ);
        m = _mm256_blendv_ps(m, c, gt);
        k = _mm256_blendv_epi8(k, wv, _mm256_castps_si256(gt));
        gt = _mm256_cmp_ps(d, m, _CMP_GT_OQ);
        m = _mm256_blendv_ps(m, d, gt);
        k = _mm256_blendv_epi8(k, w1, _mm256_castps_si256(gt));
        _mm256_storeu_ps(dst + ox, m);
        if (am) {
            __m256i idx = _mm256_add_epi32(_mm256_set1_epi32(base + 2 * ox), step);
            _mm256_storeu_si256((__m256i *)(am + ox), _mm256_add_epi32(idx, k));
        }
        ox += 8;
    }
    *nan = _mm256_movemask_ps(nanv) != 0;
    return ox;
}
#endif

/* 2×2 windows at stride 2 with no padding (LeNet's pooling), the whole-window outputs of one
 * row: the same comparisons in the same order as maxpool_row_ref, written so the compiler
 * vectorizes them (the general loop does not: ~2 ns per input at batch 64). A row holding a
 * NaN is redone by the general code. Returns how many outputs it wrote (OW or W / 2). */
static int maxpool_row_2x2(const float *src, int W, int oy, int OW, float *dst, int32_t *am) {
    const int n = DYN_MIN(OW, W / 2);
    const float *r0 = src + (int64_t)2 * oy * W, *r1 = r0 + W;
    const int32_t base = 2 * oy * W;
    int nan = 0, ox = 0;
#if DYN_ISA_X86
    if (n >= 8 && dyn_isa() >= DYN_ISA_AVX2)
        ox = maxpool_2x2_avx2(r0, r1, W, base, n, dst, am, &nan);
#endif
    for (; ox < n; ox++) {
        const float a = r0[2 * ox], b = r0[2 * ox + 1], c = r1[2 * ox], d = r1[2 * ox + 1];
        nan |= (a != a) | (b != b) | (c != c) | (d != d);
        int32_t k = 0;
        float m = a;
        k = b > m ? 1 : k;
        m = b > m ? b : m;
        k = c > m ? W : k;
        m = c > m ? c : m;
        k = d > m ? W + 1 : k;
        m = d > m ? d : m;
        dst[ox] = m;
        if (am) am[ox] = base + 2 * ox + k;
    }
    return nan ? 0 : n;
}

static void maxpool_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                            int training) {
    (void)training;
    const pool_impl *p = l->impl;
    pool_assert_shapes(l, &x[0], y);
    const int H = (int)x[0].shape[2], W = (int)x[0].shape[3];
    const int OH = (int)y->shape[2], OW = (int)y->shape[3];
    const int64_t planes = x[0].shape[0] * x[0].shape[1];
    int32_t *arg = (int32_t *)scratch; /* may be NULL: then no argmax is kept */
    const int fast = p->kh == 2 && p->kw == 2 && p->sh == 2 && p->sw == 2 && p->ph == 0 &&
                     p->pw == 0;
    DYN_PAR_FOR(planes * OH * OW > 16384,
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *src = x[0].data + pl * H * W;
        float *dst = y->data + pl * OH * OW;
        int32_t *am = arg ? arg + pl * OH * OW : NULL;
        for (int oy = 0; oy < OH; oy++) {
            float *d = dst + oy * OW;
            int32_t *a = am ? am + oy * OW : NULL;
            int done = fast && 2 * oy + 2 <= H ? maxpool_row_2x2(src, W, oy, OW, d, a) : 0;
            if (done < OW) maxpool_row_ref(p, src, H, W, oy, done, OW, d, a);
        }
    });
}

static void maxpool_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                             const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    pool_assert_shapes(l, &x[0], y);
    if (!dx[0].data) return;
    DYN_ASSERT(scratch != NULL && dyn_tensor_numel(&dx[0]) == dyn_tensor_numel(&x[0]));
    const int64_t HW = x[0].shape[2] * x[0].shape[3], P = y->shape[2] * y->shape[3];
    const int64_t planes = x[0].shape[0] * x[0].shape[1];
    const int32_t *arg = (const int32_t *)scratch;
    DYN_PAR_FOR(planes * HW > 16384,
    for (int64_t pl = 0; pl < planes; pl++) {
        float *d = dx[0].data + pl * HW;
        const float *g = dy->data + pl * P;
        const int32_t *am = arg + pl * P;
        memset(d, 0, (size_t)HW * sizeof(float));
        for (int64_t i = 0; i < P; i++) d[am[i]] += g[i];
    });
}

static void avgpool_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                            int training) {
    (void)scratch;
    (void)training;
    const pool_impl *p = l->impl;
    pool_assert_shapes(l, &x[0], y);
    const int H = (int)x[0].shape[2], W = (int)x[0].shape[3];
    const int OH = (int)y->shape[2], OW = (int)y->shape[3];
    const int64_t planes = x[0].shape[0] * x[0].shape[1];
    DYN_PAR_FOR(planes * OH * OW > 16384,
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *src = x[0].data + pl * H * W;
        float *dst = y->data + pl * OH * OW;
        for (int oy = 0; oy < OH; oy++) {
            int y0, y1;
            int eh = pool_window(oy, p->kh, p->sh, p->ph, H, &y0, &y1);
            for (int ox = 0; ox < OW; ox++) {
                int x0, x1;
                int ew = pool_window(ox, p->kw, p->sw, p->pw, W, &x0, &x1);
                int div = p->count_include_pad ? eh * ew : (y1 - y0) * (x1 - x0);
                float s = 0.0f;
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++) s += src[iy * W + ix];
                dst[oy * OW + ox] = s / (float)div;
            }
        }
    });
}

static void avgpool_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                             const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)scratch;
    const pool_impl *p = l->impl;
    pool_assert_shapes(l, &x[0], y);
    if (!dx[0].data) return;
    DYN_ASSERT(dyn_tensor_numel(&dx[0]) == dyn_tensor_numel(&x[0]));
    const int H = (int)x[0].shape[2], W = (int)x[0].shape[3];
    const int OH = (int)y->shape[2], OW = (int)y->shape[3];
    const int64_t planes = x[0].shape[0] * x[0].shape[1];
    DYN_PAR_FOR(planes * H * W > 16384,
    for (int64_t pl = 0; pl < planes; pl++) {
        float *d = dx[0].data + pl * H * W;
        const float *g = dy->data + pl * OH * OW;
        memset(d, 0, (size_t)H * W * sizeof(float));
        for (int oy = 0; oy < OH; oy++) {
            int y0, y1;
            int eh = pool_window(oy, p->kh, p->sh, p->ph, H, &y0, &y1);
            for (int ox = 0; ox < OW; ox++) {
                int x0, x1;
                int ew = pool_window(ox, p->kw, p->sw, p->pw, W, &x0, &x1);
                int div = p->count_include_pad ? eh * ew : (y1 - y0) * (x1 - x0);
                float v = g[oy * OW + ox] / (float)div;
                for (int iy = y0; iy < y1; iy++)
                    for (int ix = x0; ix < x1; ix++) d[iy * W + ix] += v;
            }
        }
    });
}

const dyn_layer_ops dyn_op_maxpool2d = {
    .op = DYN_OP_MAXPOOL2D,
    .name = "maxpool2d",
    .ninputs = 1,
    .create = maxpool_create,
    .destroy = pool_destroy,
    .attrs = maxpool_attrs,
    .infer = pool_infer,
    .scratch = maxpool_scratch,
    .forward = maxpool_forward,
    .backward = maxpool_backward,
};

const dyn_layer_ops dyn_op_avgpool2d = {
    .op = DYN_OP_AVGPOOL2D,
    .name = "avgpool2d",
    .ninputs = 1,
    .create = avgpool_create,
    .destroy = pool_destroy,
    .attrs = avgpool_attrs,
    .infer = pool_infer,
    .forward = avgpool_forward,
    .backward = avgpool_backward,
};

/* ---- globalavgpool: mean over H*W per (n, c) ---- */

static int gap_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    const dyn_shape *s = &in[0];
    char buf[64];
    if (s->ndim != 4 || s->d[0] < 1 || s->d[1] < 1 || s->d[2] < 1 || s->d[3] < 1)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': globalavgpool expects a non-empty input [N, C, H, W] but "
                           "got %s",
                           l->name, dyn_shape_str(s, buf, sizeof buf));
    memset(out, 0, sizeof *out);
    out->ndim = 4;
    out->d[0] = s->d[0];
    out->d[1] = s->d[1];
    out->d[2] = 1;
    out->d[3] = 1;
    return 0;
}

static void gap_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                        int training) {
    (void)l;
    (void)scratch;
    (void)training;
    DYN_ASSERT(x[0].ndim == 4 && dyn_tensor_is_contiguous(&x[0]));
    const int64_t planes = x[0].shape[0] * x[0].shape[1], HW = x[0].shape[2] * x[0].shape[3];
    DYN_ASSERT(dyn_tensor_numel(y) == planes);
    DYN_PAR_FOR(planes * HW > 65536,
    for (int64_t pl = 0; pl < planes; pl++) {
        const float *src = x[0].data + pl * HW;
        double s = 0.0;
        for (int64_t i = 0; i < HW; i++) s += src[i];
        y->data[pl] = (float)(s / (double)HW);
    });
}

static void gap_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                         const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)l;
    (void)y;
    (void)scratch;
    if (!dx[0].data) return;
    const int64_t planes = x[0].shape[0] * x[0].shape[1], HW = x[0].shape[2] * x[0].shape[3];
    DYN_ASSERT(dyn_tensor_numel(dy) == planes && dyn_tensor_numel(&dx[0]) == planes * HW);
    const float inv = 1.0f / (float)HW;
    DYN_PAR_FOR(planes * HW > 65536,
    for (int64_t pl = 0; pl < planes; pl++) {
        float v = dy->data[pl] * inv;
        float *d = dx[0].data + pl * HW;
        for (int64_t i = 0; i < HW; i++) d[i] = v;
    });
}

const dyn_layer_ops dyn_op_globalavgpool = {
    .op = DYN_OP_GLOBALAVGPOOL,
    .name = "globalavgpool",
    .ninputs = 1,
    .create = dyn_op_create_no_attrs,
    .destroy = NULL,
    .attrs = dyn_op_attrs_none,
    .infer = gap_infer,
    .forward = gap_forward,
    .backward = gap_backward,
};
