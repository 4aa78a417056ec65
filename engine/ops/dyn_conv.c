/* dyn_conv.c — DyN convolution "dyn_conv2d" (DYN.md §1): a Cout×Cin×K×K kernel
 *
 *     Kern[:, :, r, t] = c + Σ_h λ_{r,t,h} φ(A_r^h, B_t^h)
 *
 * with one output-channel state set A_r (Cout × H × q) per kernel row r, one input-channel
 * state set B_t (Cin × H × q) per kernel column t, and λ per (r, t, h): K² systems sharing
 * 2K state sets and the offset c.
 *
 * Attributes: in_channels, out_channels, kernel (K), stride, padding, dilation, H, q,
 * kernel_fn ("l1" | "l2" | "inv"), exec ("native" | "materialized" | "auto"), bias (0/1),
 * groups (1 only). Parameters: a [K, H, q, Cout], b [K, H, q, Cin], lambda [K, K, H], c [1],
 * bias [Cout]: K·H·q·(Cin + Cout) + K²·H + 1 + Cout stored floats.
 *
 * Both modes start from the batched im2col, cols [Cin·K·K][N·OH·OW] (row cin·K·K + r·K + t):
 *   materialized — prepare() builds the kernel; forward is one sgemm; backward: G = δ colsᵀ and
 *                  dcols = Kernᵀ δ (sgemm), col2im, and the state gradient per (r, t) from
 *                  the (r, t) slice of G;
 *   native (l1)  — per (r, t), the prefix-sum kernel with T = A_r, S = B_t and the source rows
 *                  (cin, r, t) of cols (a strided row slice: offset r·K + t, stride K·K);
 *                  backward runs the transposed system into the same rows of dcols, then
 *                  col2im. The kernel is never formed.
 * Outputs go through [Cout][N·P] and dyn_knp_to_nkp to NCHW.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

#include <cblas.h>

#include "../cpu/dnnl_conv.h"
#include "../cpu/im2col.h"
#include "../cpu/par.h"
#include "../dyn/dyn.h"
#include "../layer.h"
#include "dyn_conv_impl.h"

/* The (r, t) system. */
static dyn_sys dc_sys(const dyn_layer *l, int r, int t) {
    const dc_impl *d = l->impl;
    const int64_t hq = (int64_t)d->H * d->q;
    dyn_sys s = {.m = d->cout, .n = d->cin, .H = d->H, .q = d->q, .kernel = d->kernel,
                 .u = l->params[P_A].value.data + r * hq * d->cout,
                 .v = l->params[P_B].value.data + t * hq * d->cin,
                 .lambda = l->params[P_LAMBDA].value.data + ((int64_t)r * d->K + t) * d->H,
                 .c = l->params[P_C].value.data[0]};
    return s;
}

static int64_t dc_slice_elems(const dc_impl *d) { /* per output position */
    return (int64_t)d->K * d->K * d->H * d->q * ((int64_t)d->cin + d->cout);
}

static int64_t dc_kernel_floats(const dc_impl *d) {
    return (int64_t)d->cout * d->cin * d->K * d->K;
}

static int dc_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    int64_t cin, cout, K, st, pad, dil, H, q, bias, groups;
    const char *kern, *exec;
    int rc;
    if ((rc = dyn_attr_int(l, attrs, "in_channels", -1, 1, 1 << 20, &cin, err)) ||
        (rc = dyn_attr_int(l, attrs, "out_channels", -1, 1, 1 << 20, &cout, err)) ||
        (rc = dyn_attr_int(l, attrs, "kernel", -1, 1, 64, &K, err)) ||
        (rc = dyn_attr_int(l, attrs, "stride", 1, 1, 64, &st, err)) ||
        (rc = dyn_attr_int(l, attrs, "padding", 0, 0, 64, &pad, err)) ||
        (rc = dyn_attr_int(l, attrs, "dilation", 1, 1, 64, &dil, err)) ||
        (rc = dyn_attr_int(l, attrs, "groups", 1, 1, 1 << 20, &groups, err)) ||
        (rc = dyn_attr_int(l, attrs, "H", 1, 1, 4096, &H, err)) ||
        (rc = dyn_attr_int(l, attrs, "q", 1, 1, 4096, &q, err)) ||
        (rc = dyn_attr_int(l, attrs, "bias", 1, 0, 1, &bias, err)) ||
        (rc = dyn_attr_str(l, attrs, "kernel_fn", "l1", &kern, err)) ||
        (rc = dyn_attr_str(l, attrs, "exec", "auto", &exec, err)))
        return rc;
    if (groups != 1)
        return dyn_err_set(err, DYN_EUNSUP,
                           "layer '%s': grouped DyN conv not supported yet (groups = %lld)",
                           l->name, (long long)groups);
    dyn_kernel k;
    int ex;
    if ((rc = dyn_mode_parse(l->name, "kernel_fn", kern, exec, &k, &ex, err))) return rc;
    if (K * H * q * DYN_MAX(cin, cout) > INT32_MAX || cin * K * K > INT32_MAX)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': the DyN conv is too large", l->name);
    dc_impl *d = calloc(1, sizeof *d);
    if (!d) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    if (pthread_mutex_init(&d->mu, NULL)) {
        free(d);
        return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    }
    l->impl = d;
    d->cin = (int)cin;
    d->cout = (int)cout;
    d->K = (int)K;
    d->stride = (int)st;
    d->pad = (int)pad;
    d->dil = (int)dil;
    d->H = (int)H;
    d->q = (int)q;
    d->bias = (int)bias;
    d->kernel = k;
    d->exec = ex;
    d->hold_orders = k == DYN_KERNEL_L1 && ex != DYN_EXEC_MATERIALIZED;
    d->hold_w = ex == DYN_EXEC_MATERIALIZED || k != DYN_KERNEL_L1 ||
                (ex == DYN_EXEC_AUTO &&
                 !dyn_cost_conv_native_always(dc_slice_elems(d), dc_kernel_floats(d)));
    if (dc_kernel_floats(d) > DYN_TENSOR_MAX_NUMEL)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': the kernel is too large", l->name);
    if (d->hold_w && !(d->dnnl = dyn__dnnl_cache_new(1, d->cout, d->bias)))
        return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    if (d->hold_orders) {
        d->rk = calloc((size_t)(K * K), sizeof(dyn_ranks));
        if (!d->rk) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    }
    int64_t sa[4] = {K, H, q, cout}, sb[4] = {K, H, q, cin}, sl[3] = {K, K, H}, sc[1] = {1},
            sbias[1] = {cout};
    if (!dyn_layer_param_add(l, "a", 4, sa, 1, err) ||
        !dyn_layer_param_add(l, "b", 4, sb, 1, err) ||
        !dyn_layer_param_add(l, "lambda", 3, sl, 1, err) ||
        !dyn_layer_param_add(l, "c", 1, sc, 1, err) ||
        (bias && !dyn_layer_param_add(l, "bias", 1, sbias, 1, err)))
        return err ? err->code : DYN_ENOMEM;
    return 0;
}

static void dc_destroy(dyn_layer *l) {
    dc_impl *d = l->impl;
    if (!d) return;
    dyn_free(d->w);
    dyn__dnnl_cache_free(d->dnnl);
    pthread_mutex_destroy(&d->mu);
    dyn_sorted_free(&d->sa);
    dyn_sorted_free(&d->sb);
    if (d->rk) {
        for (int i = 0; i < d->K * d->K; i++) dyn_ranks_free(&d->rk[i]);
        free(d->rk);
    }
    free(d);
    l->impl = NULL;
}

static json_t *dc_attrs(const dyn_layer *l) {
    const dc_impl *d = l->impl;
    return json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:s, s:i, s:i}",
                     "in_channels", d->cin, "out_channels", d->cout, "kernel", d->K, "stride",
                     d->stride, "padding", d->pad, "dilation", d->dil, "H", d->H, "q", d->q,
                     "kernel_fn", dyn_kernel_name(d->kernel), "exec", dyn_exec_name(d->exec), "bias",
                     d->bias, "groups", 1);
}

/* (choice, README.md) As dyn_linear: per (r, t), λ > 0 so the kernel has the variance
 * 1/(3·Cin·K²) of PyTorch's default conv init, shrunk for the spread of row means; states U(0,1)
 * then rescaled together (l1/l2; inv: U(0, R_inv)); c = −(mean of the K² offsets); bias 0. */
static void dc_init(dyn_layer *l, dyn_rng *rng) {
    dc_impl *d = l->impl;
    dyn_param *a = &l->params[P_A], *b = &l->params[P_B], *lam = &l->params[P_LAMBDA];
    const int64_t hq = (int64_t)d->H * d->q;
    const double var = 1.0 / (3.0 * d->cin * d->K * d->K);
    const float R = d->kernel == DYN_KERNEL_INV
                        ? (float)dyn_sys_init_range(d->H, d->q, d->kernel, var, rng)
                        : 1.0f;
    for (int64_t i = 0; i < dyn_tensor_numel(&a->value); i++)
        a->value.data[i] = R * dyn_rng_uniform(rng);
    for (int64_t i = 0; i < dyn_tensor_numel(&b->value); i++)
        b->value.data[i] = R * dyn_rng_uniform(rng);
    double off = 0.0;
    for (int r = 0; r < d->K; r++)
        for (int t = 0; t < d->K; t++)
            off += dyn_sys_init(a->value.data + r * hq * d->cout, b->value.data + t * hq * d->cin,
                                lam->value.data + ((int64_t)r * d->K + t) * d->H, d->cout, d->cin,
                                d->H, d->q, d->kernel, var, (double)d->cin * d->K * d->K, 0, rng);
    dyn_sys_rescale(a->value.data, dyn_tensor_numel(&a->value), b->value.data,
                    dyn_tensor_numel(&b->value), lam->value.data, dyn_tensor_numel(&lam->value),
                    d->kernel);
    l->params[P_C].value.data[0] = (float)(off / (d->K * d->K));
    if (d->bias) dyn_tensor_zero(&l->params[P_BIAS].value);
    d->ready = 0;
}

static int dc_geom(const dc_impl *d, const dyn_shape *in, dyn_conv_geom *g) {
    memset(g, 0, sizeof *g);
    g->N = (int)in->d[0];
    g->C = (int)in->d[1];
    g->H = (int)in->d[2];
    g->W = (int)in->d[3];
    g->KH = g->KW = d->K;
    g->SH = g->SW = d->stride;
    g->PH = g->PW = d->pad;
    g->DH = g->DW = d->dil;
    return dyn_conv_geom_out(g);
}

static int dc_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    const dc_impl *d = l->impl;
    char buf[64];
    if (in[0].ndim != 4 || in[0].d[1] != d->cin || in[0].d[0] < 1 || in[0].d[2] > INT32_MAX ||
        in[0].d[3] > INT32_MAX || in[0].d[0] > INT32_MAX)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': input %s is not [N, %d, H, W]", l->name,
                           dyn_shape_str(&in[0], buf, sizeof buf), d->cin);
    dyn_conv_geom g;
    if (dc_geom(d, &in[0], &g))
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': input %s gives an empty output (kernel %d, stride %d, "
                           "padding %d, dilation %d)",
                           l->name, dyn_shape_str(&in[0], buf, sizeof buf), d->K, d->stride,
                           d->pad, d->dil);
    memset(out, 0, sizeof *out);
    out->ndim = 4;
    out->d[0] = in[0].d[0];
    out->d[1] = d->cout;
    out->d[2] = g.OH;
    out->d[3] = g.OW;
    return 0;
}

/* The measured choice for cols columns at the current thread count: 1 native, 0
 * materialized, -1 none yet. */
static int dc_choice(const dc_impl *d, int64_t cols) {
    const int nt = dyn_threads_get();
    int r = -1;
    pthread_mutex_lock((pthread_mutex_t *)&d->mu);
    for (int i = 0; i < d->nch && r < 0; i++)
        if (d->ch[i].cols == cols && d->ch[i].threads == nt) r = d->ch[i].native;
    pthread_mutex_unlock((pthread_mutex_t *)&d->mu);
    return r;
}

static void dc_choice_set(dc_impl *d, int64_t cols, int native) {
    pthread_mutex_lock(&d->mu);
    int i = d->nch < DC_CHOICES ? d->nch++ : d->next_ch++ % DC_CHOICES;
    d->ch[i] = (struct dc_choice){cols, dyn_threads_get(), native};
    pthread_mutex_unlock(&d->mu);
}

/* Both paths held: "auto" decides by measurement (dc_forward), the cost model until then. */
static int dc_both(const dc_impl *d) {
    return d->kernel == DYN_KERNEL_L1 && d->exec == DYN_EXEC_AUTO && d->hold_w;
}

static int dc_native_for(const dc_impl *d, int64_t cols) {
    if (d->kernel != DYN_KERNEL_L1 || d->exec == DYN_EXEC_MATERIALIZED) return 0;
    if (d->exec == DYN_EXEC_NATIVE || !d->hold_w) return 1;
    const int c = dc_choice(d, cols);
    if (c >= 0) return c;
    return dyn_cost_conv_native_wins(dc_slice_elems(d), dc_kernel_floats(d), cols);
}

/* Workspace of the per-(r, t) native jobs: the largest of the three job shapes. */
static size_t dc_ws_floats(const dc_impl *d, int64_t cols) {
    size_t a = dyn_l1_ws_floats(d->H, d->q, d->cout, d->cin, cols, DYN_L1_OUT);
    size_t b = dyn_l1_ws_floats(d->H, d->q, d->cout, d->cin, cols,
                                DYN_L1_GRAD_T | DYN_L1_GRAD_LAMBDA);
    size_t c = dyn_l1_ws_floats(d->H, d->q, d->cin, d->cout, cols, DYN_L1_OUT | DYN_L1_GRAD_T);
    return DYN_MAX(a, DYN_MAX(b, c));
}

/* Scratch: cols [CinKK][NP] | Yk [Cout][NP] | (training) dYk [Cout][NP] | dcols [CinKK][NP] |
 * then native: job workspace; materialized: G [Cout][CinKK] + one (r, t) slice [Cout][Cin]. */
typedef struct dc_scr {
    float *cols, *yk, *dyk, *dcols, *ws, *g, *grt;
    size_t wsf;
} dc_scr;

static size_t up16(size_t n) { return (n + 15) / 16 * 16; }

/* Carves base (NULL: only measures); *total gets the floats used. */
static dc_scr dc_scratch_layout(const dc_impl *d, int64_t NP, int training, float *base,
                                size_t *total) {
    dc_scr s;
    memset(&s, 0, sizeof s);
    const size_t ckk = (size_t)d->cin * d->K * d->K;
    size_t at = 0;
#define PUT(f, n)                                   \
    do {                                            \
        s.f = base ? base + at : NULL;              \
        at += up16(n);                              \
    } while (0)
    PUT(cols, ckk * NP);
    PUT(yk, (size_t)d->cout * NP);
    if (training) {
        PUT(dyk, (size_t)d->cout * NP);
        PUT(dcols, ckk * NP);
    }
    size_t tail = 0;
    if (d->hold_orders) {
        s.wsf = dc_ws_floats(d, NP);
        tail = s.wsf;
    }
    if (d->hold_w && training) tail = DYN_MAX(tail, up16((size_t)d->cout * ckk) +
                                                        (size_t)d->cout * d->cin);
    s.ws = base ? base + at : NULL;
    s.g = s.ws;
    s.grt = base ? base + at + up16((size_t)d->cout * ckk) : NULL;
    at += up16(tail);
#undef PUT
    if (total) *total = at;
    return s;
}

static size_t dc_scratch(const dyn_layer *l, const dyn_shape *in, int training) {
    const dc_impl *d = l->impl;
    dyn_conv_geom g;
    if (dc_geom(d, &in[0], &g)) return 0;
    size_t total = 0;
    dc_scratch_layout(d, (int64_t)g.N * g.OH * g.OW, training, NULL, &total);
    if (!training && d->hold_w) total = DYN_MAX(total, dyn__conv_infer_floats(&g, d->cout));
    return total + 16; /* + alignment */
}

static float *align64(float *p) { return (float *)(((uintptr_t)p + 63) & ~(uintptr_t)63); }

/* The l1 job of system (r, t), direction T = A_r, S = B_t (ab = 1) or T = B_t, S = A_r. */
static dyn_l1_job dc_job(const dyn_layer *l, int r, int t, int ab, int64_t cols) {
    const dc_impl *d = l->impl;
    const dyn_sys s = dc_sys(l, r, t);
    const int64_t hq = (int64_t)d->H * d->q;
    const int32_t *pa = d->sa.perm + r * hq * d->cout, *pb = d->sb.perm + t * hq * d->cin;
    const float *va = d->sa.val + r * hq * d->cout, *vb = d->sb.val + t * hq * d->cin;
    const dyn_ranks *rk = &d->rk[r * d->K + t];
    dyn_l1_job jb = {.H = d->H, .q = d->q, .cols = cols, .lambda = s.lambda, .offset = s.c};
    if (ab) {
        jb.M = d->cout;
        jb.N = d->cin;
        jb.t_states = s.u;
        jb.t_perm = pa;
        jb.t_val = va;
        jb.t_lo = rk->a_lo;
        jb.t_hi = rk->a_hi;
        jb.s_perm = pb;
        jb.s_val = vb;
    } else {
        jb.M = d->cin;
        jb.N = d->cout;
        jb.t_states = s.v;
        jb.t_perm = pb;
        jb.t_val = vb;
        jb.t_lo = rk->b_lo;
        jb.t_hi = rk->b_hi;
        jb.s_perm = pa;
        jb.s_val = va;
    }
    return jb;
}

/* im2col into s->cols (training keeps them for backward), then the K² native (r, t) jobs or
 * one sgemm with the materialized kernel into [Cout][N·P], NCHW, bias. */
static void dc_forward_cols(dyn_layer *l, const dyn_conv_geom *g, const dc_scr *s,
                            const float *x, float *y, int native) {
    const dc_impl *d = l->impl;
    const int64_t P = (int64_t)g->OH * g->OW, NP = (int64_t)g->N * P, KK = (int64_t)d->K * d->K;
    dyn_im2col(g, x, s->cols);
    if (native) {
        memset(s->yk, 0, (size_t)d->cout * NP * sizeof(float));
        for (int r = 0; r < d->K; r++)
            for (int t = 0; t < d->K; t++) {
                dyn_l1_job jb = dc_job(l, r, t, 1, NP);
                jb.flags = DYN_L1_OUT;
                jb.xs = s->cols + (r * d->K + t) * NP;
                jb.xs_rs = KK * NP;
                jb.y = s->yk;
                jb.y_rs = NP;
                jb.ws = s->ws;
                jb.ws_floats = s->wsf;
                dyn_l1_run(&jb);
            }
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, d->cout, (int)NP,
                    (int)(d->cin * KK), 1.0f, d->w, (int)(d->cin * KK), s->cols, (int)NP, 0.0f,
                    s->yk, (int)NP);
    }
    dyn_knp_to_nkp(s->yk, y, g->N, d->cout, P);
    if (d->bias) {
        const float *b = l->params[P_BIAS].value.data;
        DYN_PAR_FOR2((int64_t)g->N * d->cout * P > 65536,
        for (int n = 0; n < g->N; n++)
            for (int o = 0; o < d->cout; o++) {
                float *yo = y + ((int64_t)n * d->cout + o) * P;
                for (int64_t p = 0; p < P; p++) yo[p] += b[o];
            });
    }
}

static void dc_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                       int training) {
    dc_impl *d = l->impl;
    DYN_ASSERT(d->ready);
    dyn_shape in = dyn_tensor_shape(&x[0]);
    dyn_conv_geom g;
    DYN_ASSERT(dc_geom(d, &in, &g) == 0);
    const int64_t NP = (int64_t)g.N * g.OH * g.OW;
    dc_scr s = dc_scratch_layout(d, NP, training, align64(scratch), NULL);
    const int native = dc_native_for(d, NP);
    if (!training) {
        const float *b = d->bias ? l->params[P_BIAS].value.data : NULL;
        /* auto holding both: the first forward of these columns times both (3 alternating
         * runs each, the best) and keeps the faster. Not under a fixed dense implementation
         * (conversions: the same conversion must decide the same way every time). */
        const dyn_conv_impl ci = dyn_conv_impl_get();
        if (dc_both(d) && (ci == DYN_CONV_AUTO || ci == DYN_CONV_GRAPH) &&
            dc_choice(d, NP) < 0) {
            double tn = 1e300, tm = 1e300;
            for (int r = 0; r < 3; r++) {
                const double t0 = dyn_now();
                dc_forward_cols(l, &g, &s, x[0].data, y->data, 1);
                const double t1 = dyn_now();
                dyn__conv_infer(d->dnnl, &g, 1, d->cout, x[0].data, d->w, b, y->data,
                                align64(scratch));
                tn = DYN_MIN(tn, t1 - t0);
                tm = DYN_MIN(tm, dyn_now() - t1);
            }
            dc_choice_set(d, NP, tn < tm);
            return; /* y: the last (materialized) run's */
        }
        if (native) dc_forward_cols(l, &g, &s, x[0].data, y->data, 1);
        else dyn__conv_infer(d->dnnl, &g, 1, d->cout, x[0].data, d->w, b, y->data,
                             align64(scratch));
        return;
    }
    dc_forward_cols(l, &g, &s, x[0].data, y->data, native);
}

static void dc_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                        const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)y;
    dc_impl *d = l->impl;
    DYN_ASSERT(d->ready);
    dyn_shape in = dyn_tensor_shape(&x[0]);
    dyn_conv_geom g;
    DYN_ASSERT(dc_geom(d, &in, &g) == 0);
    const int64_t P = (int64_t)g.OH * g.OW, NP = (int64_t)g.N * P, KK = (int64_t)d->K * d->K;
    const int64_t hq = (int64_t)d->H * d->q, ckk = (int64_t)d->cin * KK;
    dc_scr s = dc_scratch_layout(d, NP, 1, align64(scratch), NULL);
    dyn_nkp_to_knp(dy->data, s.dyk, g.N, d->cout, P);
    float *ga = l->params[P_A].grad.data, *gb = l->params[P_B].grad.data;
    float *gl = l->params[P_LAMBDA].grad.data, *gc = l->params[P_C].grad.data;
    const int want_dx = dx[0].data != NULL;
    if (dc_native_for(d, NP)) {
        if (want_dx) memset(s.dcols, 0, (size_t)ckk * NP * sizeof(float));
        for (int r = 0; r < d->K; r++)
            for (int t = 0; t < d->K; t++) {
                const int64_t row0 = (r * d->K + t) * NP;
                dyn_l1_job ja = dc_job(l, r, t, 1, NP);
                ja.flags = DYN_L1_GRAD_T | DYN_L1_GRAD_LAMBDA;
                ja.xs = s.cols + row0;
                ja.xs_rs = KK * NP;
                ja.dt = s.dyk;
                ja.dt_rs = NP;
                ja.dT = ga + r * hq * d->cout;
                ja.dlambda = gl + (r * d->K + t) * d->H;
                ja.doffset = gc;
                ja.ws = s.ws;
                ja.ws_floats = s.wsf;
                dyn_l1_run(&ja);
                dyn_l1_job jb = dc_job(l, r, t, 0, NP);
                jb.flags = DYN_L1_GRAD_T | (want_dx ? DYN_L1_OUT : 0);
                jb.xs = s.dyk;
                jb.xs_rs = NP;
                jb.y = want_dx ? s.dcols + row0 : NULL;
                jb.y_rs = KK * NP;
                jb.dt = s.cols + row0;
                jb.dt_rs = KK * NP;
                jb.dT = gb + t * hq * d->cin;
                jb.ws = s.ws;
                jb.ws_floats = s.wsf;
                dyn_l1_run(&jb);
            }
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, d->cout, (int)ckk, (int)NP, 1.0f,
                    s.dyk, (int)NP, s.cols, (int)NP, 0.0f, s.g, (int)ckk);
        if (want_dx)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)ckk, (int)NP, d->cout, 1.0f,
                        d->w, (int)ckk, s.dyk, (int)NP, 0.0f, s.dcols, (int)NP);
        for (int r = 0; r < d->K; r++)
            for (int t = 0; t < d->K; t++) {
                const int64_t col = r * d->K + t;
                for (int o = 0; o < d->cout; o++)
                    for (int c = 0; c < d->cin; c++)
                        s.grt[(int64_t)o * d->cin + c] = s.g[(int64_t)o * ckk + c * KK + col];
                const dyn_sys sys = dc_sys(l, r, t);
                dyn_sys_grad gr = {.du = ga + r * hq * d->cout, .dv = gb + t * hq * d->cin,
                                   .dlambda = gl + col * d->H, .dc = gc};
                dyn_sys_grad_materialized(&sys, s.grt, &gr);
            }
    }
    if (want_dx) dyn_col2im(&g, s.dcols, dx[0].data);
    if (d->bias) {
        float *db = l->params[P_BIAS].grad.data;
        for (int o = 0; o < d->cout; o++) {
            const float *row = s.dyk + (int64_t)o * NP;
            double acc = 0.0;
            for (int64_t p = 0; p < NP; p++) acc += row[p];
            db[o] += (float)acc;
        }
    }
}

static int dc_prepare(dyn_layer *l, dyn_err *err) {
    dc_impl *d = l->impl;
    const int K = d->K, Hq = d->H * d->q;
    d->ready = 0;
    if (d->hold_orders) {
        int rc = dyn_sorted_update(&d->sa, l->params[P_A].value.data, K * Hq, d->cout, 0, err);
        if (!rc) rc = dyn_sorted_update(&d->sb, l->params[P_B].value.data, K * Hq, d->cin, 0, err);
        for (int r = 0; r < K && !rc; r++)
            for (int t = 0; t < K && !rc; t++)
                rc = dyn_ranks_update(&d->rk[r * K + t], d->sa.val + (int64_t)r * Hq * d->cout,
                                      d->sb.val + (int64_t)t * Hq * d->cin, Hq, d->cout, d->cin,
                                      err);
        if (rc) return dyn_err_prefix(err, "layer '%s'", l->name);
    }
    if (d->hold_w) {
        const int64_t KK = (int64_t)K * K, ckk = (int64_t)d->cin * KK;
        if (!d->w) {
            d->w = dyn_alloc((size_t)dc_kernel_floats(d) * sizeof(float));
            if (!d->w)
                return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory for the kernel",
                                   l->name);
        }
        float *tmp = dyn_alloc((size_t)d->cout * d->cin * sizeof(float));
        if (!tmp)
            return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
        for (int r = 0; r < K; r++)
            for (int t = 0; t < K; t++) {
                const dyn_sys s = dc_sys(l, r, t);
                dyn_sys_materialize(&s, tmp);
                const int64_t col = (int64_t)r * K + t;
                for (int o = 0; o < d->cout; o++)
                    for (int c = 0; c < d->cin; c++)
                        d->w[(int64_t)o * ckk + c * KK + col] = tmp[(int64_t)o * d->cin + c];
            }
        dyn_free(tmp);
    }
    dyn__dnnl_cache_clear(d->dnnl); /* its reordered copies of the old kernel */
    d->ready = 1;
    l->gen++;
    return 0;
}

/* Materialized at this shape (held: or holding the kernel): the dense convolution with the
 * kernel prepare() built. */
static int dc_as_dense(const dyn_layer *l, const dyn_shape *in, int held, dyn_dense_conv *v) {
    const dc_impl *d = l->impl;
    dyn_conv_geom g;
    if (!d->ready || !d->hold_w || in->ndim != 4 || dc_geom(d, in, &g) ||
        (!held && dc_native_for(d, (int64_t)g.N * g.OH * g.OW)))
        return 0;
    *v = (dyn_dense_conv){.cin = d->cin, .cout = d->cout, .groups = 1, .kh = d->K, .kw = d->K,
                          .sh = d->stride, .sw = d->stride, .ph = d->pad, .pw = d->pad,
                          .dh = d->dil, .dw = d->dil, .w = d->w,
                          .b = d->bias ? l->params[P_BIAS].value.data : NULL};
    return 1;
}

static void dc_stats(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    const dc_impl *d = l->impl;
    dyn_layer *ml = (dyn_layer *)l;
    dyn_conv_geom g;
    dyn_shape one = in[0];
    one.d[0] = 1;
    int64_t P = dc_geom(d, &one, &g) ? 0 : (int64_t)g.OH * g.OW;
    st->is_dyn = 1;
    st->macs = (dc_native_for(d, P) ? dc_slice_elems(d) : dc_kernel_floats(d)) * P;
    const int64_t hqk = (int64_t)d->K * d->H * d->q;
    const int64_t orders = 2 * hqk * ((int64_t)d->cin + d->cout) +
                           (int64_t)d->K * 2 * hqk * ((int64_t)d->cin + d->cout);
    st->memory_floats = st->stored_floats + (d->hold_w ? dc_kernel_floats(d) : 0) +
                        (d->hold_orders ? orders : 0);
    const float *arr[2] = {ml->params[P_A].value.data, ml->params[P_B].value.data};
    const int64_t lens[2] = {dyn_tensor_numel(&ml->params[P_A].value),
                             dyn_tensor_numel(&ml->params[P_B].value)};
    st->entropy_bits = dyn_entropy_bits(2, arr, lens, DYN_ENTROPY_DELTA);
}

const dyn_layer_ops dyn_op_dyn_conv2d = {
    .op = DYN_OP_DYN_CONV2D,
    .name = "dyn_conv2d",
    .ninputs = 1,
    .create = dc_create,
    .destroy = dc_destroy,
    .attrs = dc_attrs,
    .init = dc_init,
    .infer = dc_infer,
    .scratch = dc_scratch,
    .forward = dc_forward,
    .backward = dc_backward,
    .prepare = dc_prepare,
    .stats = dc_stats,
    .as_dense_conv = dc_as_dense,
};
