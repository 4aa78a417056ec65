/* dyn_linear.c — DyN linear layer "dyn_linear" (DYN.md §1–3): y = W x + b with
 * W_ij = c + Σ_h λ_h φ(u_i^h, v_j^h), x [N, in] -> y [N, out]; an input with extra leading
 * dims ([N, T, in]) is applied to each of its N·T rows and keeps them ([N, T, out]).
 *
 * Attributes: in, out, H, q, kernel ("l1" | "l2" | "inv"), exec ("native" | "materialized" |
 * "auto"), bias (0/1). Parameters (model files store `<layer>.<name>`): u [H, q, out],
 * v [H, q, in], lambda [H], c [1], bias [out].
 *
 * Execution:
 *   materialized — prepare() builds W [out][in]; forward is one sgemm (sgemv at batch 1);
 *                  backward: dx = δ W (sgemm), G = δᵀ x (sgemm), then the state gradient
 *                  from G (O(H·q·out·in)).
 *   native (l1)  — prepare() sorts the state slices; forward and backward run the prefix-sum
 *                  kernel on feature-major copies of x and δ ([in][N], in scratch) and never
 *                  form W (engine/dyn/native.c).
 *   auto         — l2/inv: materialized. l1: native, unless the cost model says dense can be
 *                  faster at some batch; then W is also held and each call picks the mode
 *                  for its batch (the backward recomputes the same choice).
 * prepare() must run after every change of the parameters and before the first forward.
 */
#include <math.h>
#include <string.h>

#include <cblas.h>

#include "../cpu/par.h"
#include "../dyn/dyn.h"
#include "../layer.h"

#include "dyn_linear_impl.h"

enum { P_U = DYN_LINEAR_P_U, P_V = DYN_LINEAR_P_V, P_LAMBDA = DYN_LINEAR_P_LAMBDA,
       P_C = DYN_LINEAR_P_C, P_BIAS = DYN_LINEAR_P_BIAS };
#define HDR 16 /* scratch header floats (reserved) */

typedef dyn_linear_impl dl_impl;

static dyn_sys dl_sys(const dyn_layer *l) {
    const dl_impl *d = l->impl;
    dyn_sys s = {.m = d->out, .n = d->in, .H = d->H, .q = d->q, .kernel = d->kernel,
                 .u = l->params[P_U].value.data, .v = l->params[P_V].value.data,
                 .lambda = l->params[P_LAMBDA].value.data, .c = l->params[P_C].value.data[0]};
    return s;
}

static int64_t dl_slice_elems(const dl_impl *d) {
    return (int64_t)d->H * d->q * ((int64_t)d->in + d->out);
}

static int dl_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    int64_t in, out, H, q, bias;
    const char *kern, *exec;
    int rc;
    if ((rc = dyn_attr_int(l, attrs, "in", -1, 1, (int64_t)1 << 24, &in, err)) ||
        (rc = dyn_attr_int(l, attrs, "out", -1, 1, (int64_t)1 << 24, &out, err)) ||
        (rc = dyn_attr_int(l, attrs, "H", 1, 1, 4096, &H, err)) ||
        (rc = dyn_attr_int(l, attrs, "q", 1, 1, 4096, &q, err)) ||
        (rc = dyn_attr_int(l, attrs, "bias", 1, 0, 1, &bias, err)) ||
        (rc = dyn_attr_str(l, attrs, "kernel", "l1", &kern, err)) ||
        (rc = dyn_attr_str(l, attrs, "exec", "auto", &exec, err)))
        return rc;
    dyn_kernel k;
    int ex;
    if ((rc = dyn_mode_parse(l->name, "kernel", kern, exec, &k, &ex, err))) return rc;
    if (H * q * DYN_MAX(in, out) > INT32_MAX)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': H·q·max(in, out) = %lld is too large",
                           l->name, (long long)(H * q * DYN_MAX(in, out)));
    dl_impl *d = calloc(1, sizeof *d);
    if (!d) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    l->impl = d;
    d->in = (int)in;
    d->out = (int)out;
    d->H = (int)H;
    d->q = (int)q;
    d->bias = (int)bias;
    d->kernel = k;
    d->exec = ex;
    d->hold_orders = k == DYN_KERNEL_L1 && ex != DYN_EXEC_MATERIALIZED;
    d->hold_w = ex == DYN_EXEC_MATERIALIZED || k != DYN_KERNEL_L1 ||
                (ex == DYN_EXEC_AUTO && !dyn_cost_native_always(dl_slice_elems(d), in * out));
    if (d->hold_w && in * out > DYN_TENSOR_MAX_NUMEL)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': a materialized %lld×%lld W is too large; use exec "
                           "\"native\"",
                           l->name, (long long)out, (long long)in);
    int64_t su[3] = {H, q, out}, sv[3] = {H, q, in}, sl[1] = {H}, sc[1] = {1}, sb[1] = {out};
    if (!dyn_layer_param_add(l, "u", 3, su, 1, err) ||
        !dyn_layer_param_add(l, "v", 3, sv, 1, err) ||
        !dyn_layer_param_add(l, "lambda", 1, sl, 1, err) ||
        !dyn_layer_param_add(l, "c", 1, sc, 1, err) ||
        (bias && !dyn_layer_param_add(l, "bias", 1, sb, 1, err)))
        return err ? err->code : DYN_ENOMEM;
    return 0;
}

static void dl_destroy(dyn_layer *l) {
    dl_impl *d = l->impl;
    if (!d) return;
    dyn_free(d->w);
    dyn_native_free(&d->nat);
    free(d);
    l->impl = NULL;
}

static json_t *dl_attrs(const dyn_layer *l) {
    const dl_impl *d = l->impl;
    return json_pack("{s:i, s:i, s:i, s:i, s:s, s:s, s:i}", "in", d->in, "out", d->out, "H",
                     d->H, "q", d->q, "kernel", dyn_kernel_name(d->kernel), "exec",
                     dyn_exec_name(d->exec), "bias", d->bias);
}

/* (choice, README.md) States U(0, R) with R from dyn_sys_init_range (about 0.1–0.2); λ_h > 0
 * so that W has the variance of PyTorch's default (Kaiming-uniform, a = √5) dense init,
 * 1/(3·in); c = −E[W − c] so W is about zero-mean; bias 0. */
static void dl_init(dyn_layer *l, dyn_rng *rng) {
    dl_impl *d = l->impl;
    float c = dyn_sys_init(l->params[P_U].value.data, l->params[P_V].value.data,
                           l->params[P_LAMBDA].value.data, d->out, d->in, d->H, d->q, d->kernel,
                           1.0 / (3.0 * d->in), d->in, 1, rng);
    l->params[P_C].value.data[0] = c;
    if (d->bias) dyn_tensor_zero(&l->params[P_BIAS].value);
    d->ready = 0;
}

static int dl_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    const dl_impl *d = l->impl;
    char buf[64];
    if (in[0].ndim < 2 || in[0].d[in[0].ndim - 1] != d->in)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': input %s is not [N, %d] (or [N, ..., %d])",
                           l->name, dyn_shape_str(&in[0], buf, sizeof buf), d->in, d->in);
    if (dyn_shape_numel(&in[0]) / d->in > INT32_MAX)
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': input %s has too many rows", l->name,
                           dyn_shape_str(&in[0], buf, sizeof buf));
    *out = in[0];
    out->d[out->ndim - 1] = d->out;
    return 0;
}

static int dl_native_for(const dl_impl *d, int64_t N) {
    if (d->kernel != DYN_KERNEL_L1 || d->exec == DYN_EXEC_MATERIALIZED) return 0;
    if (d->exec == DYN_EXEC_NATIVE || !d->hold_w) return 1;
    int64_t mn = (int64_t)d->in * d->out;
    return dyn_cost_native_wins(dl_slice_elems(d), mn, mn, N);
}

/* Scratch (floats, after the header): native: Xt [in][N], Yt [out][N], and for training
 * Dt [out][N], DXt [in][N], then the kernel workspace; materialized training: G [out][in]. */
static size_t dl_native_floats(const dl_impl *d, int64_t N, int training) {
    dyn_sys s = {.m = d->out, .n = d->in, .H = d->H, .q = d->q};
    size_t io = (size_t)(d->in + d->out) * (size_t)N;
    return (training ? 2 * io : io) + dyn_native_ws_floats(&s, N) + 32;
}

static size_t dl_scratch(const dyn_layer *l, const dyn_shape *in, int training) {
    const dl_impl *d = l->impl;
    int64_t N = dyn_shape_numel(&in[0]) / d->in; /* rows */
    size_t nat = d->hold_orders ? dl_native_floats(d, N, training) : 0;
    size_t mat = d->hold_w && training ? (size_t)d->in * d->out : 0;
    return HDR + DYN_MAX(nat, mat);
}

static float *align16(float *p) {
    uintptr_t a = (uintptr_t)p;
    return (float *)((a + 63) & ~(uintptr_t)63);
}

static void add_bias_rows(float *y, const float *b, int64_t N, int out) {
    DYN_PAR_FOR(N * out > 65536,
        for (int64_t r = 0; r < N; r++)
            for (int i = 0; i < out; i++) y[r * out + i] += b[i];);
}

static void dl_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                       int training) {
    dl_impl *d = l->impl;
    DYN_ASSERT(d->ready);
    const int64_t N = dyn_tensor_numel(&x[0]) / d->in; /* rows */
    const dyn_sys s = dl_sys(l);
    const int native = dl_native_for(d, N); /* a function of N only: backward agrees */
    if (native) {
        float *base = align16(scratch + HDR);
        float *xt = base, *yt = base + (size_t)d->in * N;
        const size_t keep = training ? (size_t)(d->in + d->out) * N : 0; /* Dt, DXt */
        float *ws = align16(yt + (size_t)d->out * N + keep);
        size_t wsf = dyn_native_ws_floats(&s, N);
        if (N == 1) { /* [1][F] is already feature-major */
            xt = x[0].data;
            yt = y->data;
        } else {
            dyn_transpose(x[0].data, N, d->in, xt);
        }
        memset(yt, 0, (size_t)d->out * N * sizeof(float));
        dyn_native_forward(&s, &d->nat, xt, N, yt, N, N, ws, wsf);
        if (N != 1) dyn_transpose(yt, d->out, N, y->data);
    } else if (N == 1) {
        cblas_sgemv(CblasRowMajor, CblasNoTrans, d->out, d->in, 1.0f, d->w, d->in, x[0].data, 1,
                    0.0f, y->data, 1);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)N, d->out, d->in, 1.0f,
                    x[0].data, d->in, d->w, d->in, 0.0f, y->data, d->out);
    }
    if (d->bias) add_bias_rows(y->data, l->params[P_BIAS].value.data, N, d->out);
}

static void dl_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                        const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)y;
    dl_impl *d = l->impl;
    DYN_ASSERT(d->ready);
    const int64_t N = dyn_tensor_numel(&x[0]) / d->in; /* rows */
    const dyn_sys s = dl_sys(l);
    const int native = dl_native_for(d, N);
    dyn_sys_grad g = {.du = l->params[P_U].grad.data, .dv = l->params[P_V].grad.data,
                      .dlambda = l->params[P_LAMBDA].grad.data, .dc = l->params[P_C].grad.data};
    if (native) {
        float *base = align16(scratch + HDR);
        const float *xt = base;
        float *dt = base + (size_t)(d->in + d->out) * N, *dxt = dt + (size_t)d->out * N;
        float *ws = align16(dxt + (size_t)d->in * N);
        size_t wsf = dyn_native_ws_floats(&s, N);
        float *dxo = dx[0].data;
        if (N == 1) {
            xt = x[0].data;
            dt = dy->data;
            dxt = dxo;
        } else {
            dyn_transpose(dy->data, N, d->out, dt);
        }
        if (dxt) memset(dxt, 0, (size_t)d->in * N * sizeof(float));
        dyn_native_backward(&s, &d->nat, xt, N, dt, N, dxo ? dxt : NULL, N, N, &g, ws, wsf);
        if (dxo && N != 1) dyn_transpose(dxt, d->in, N, dxo);
    } else {
        if (dx[0].data)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)N, d->in, d->out, 1.0f,
                        dy->data, d->out, d->w, d->in, 0.0f, dx[0].data, d->in);
        float *G = align16(scratch + HDR);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, d->out, d->in, (int)N, 1.0f,
                    dy->data, d->out, x[0].data, d->in, 0.0f, G, d->in);
        dyn_sys_grad_materialized(&s, G, &g);
    }
    if (d->bias) {
        float *db = l->params[P_BIAS].grad.data;
        const float *g0 = dy->data;
        for (int64_t r = 0; r < N; r++)
            for (int i = 0; i < d->out; i++) db[i] += g0[r * d->out + i];
    }
}

static int dl_prepare(dyn_layer *l, dyn_err *err) {
    dl_impl *d = l->impl;
    const dyn_sys s = dl_sys(l);
    d->ready = 0;
    if (d->hold_orders) {
        int rc = dyn_native_prepare(&d->nat, &s, err);
        if (rc) return dyn_err_prefix(err, "layer '%s'", l->name);
    }
    if (d->hold_w) {
        if (!d->w) {
            d->w = dyn_alloc((size_t)d->in * d->out * sizeof(float));
            if (!d->w)
                return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory for W (%d×%d)",
                                   l->name, d->out, d->in);
        }
        dyn_sys_materialize(&s, d->w);
    }
    d->ready = 1;
    return 0;
}

static void dl_stats(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    const dl_impl *d = l->impl;
    const int64_t rows = DYN_MAX(dyn_shape_numel(in) / DYN_MAX(in->d[0], 1) / d->in, 1);
    dyn_layer *ml = (dyn_layer *)l;
    const dyn_sys s = dl_sys(l);
    st->is_dyn = 1;
    const int64_t mn = (int64_t)d->in * d->out;
    st->macs = rows * (dl_native_for(d, rows) ? dl_slice_elems(d) : mn);
    st->memory_floats = st->stored_floats + (d->hold_w ? mn : 0) +
                        (d->hold_orders ? dyn_native_aux_words(&s) : 0);
    const float *arr[2] = {ml->params[P_U].value.data, ml->params[P_V].value.data};
    const int64_t lens[2] = {dyn_tensor_numel(&ml->params[P_U].value),
                             dyn_tensor_numel(&ml->params[P_V].value)};
    st->entropy_bits = dyn_entropy_bits(2, arr, lens, DYN_ENTROPY_DELTA);
}

const dyn_layer_ops dyn_op_dyn_linear = {
    .op = DYN_OP_DYN_LINEAR,
    .name = "dyn_linear",
    .ninputs = 1,
    .create = dl_create,
    .destroy = dl_destroy,
    .attrs = dl_attrs,
    .init = dl_init,
    .infer = dl_infer,
    .scratch = dl_scratch,
    .forward = dl_forward,
    .backward = dl_backward,
    .prepare = dl_prepare,
    .stats = dl_stats,
};
