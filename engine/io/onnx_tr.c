/* onnx_tr.c — ONNX import: the transformer operators. Views that only rewrite a layout
 * (Transpose, Unsqueeze / Squeeze, Reshape), Gather / Slice / Split (a permute with a slice),
 * arithmetic with broadcasting (affine, binary layers), unary ops, Softmax on any axis,
 * ReduceMean with the LayerNorm-chain fusion, LayerNormalization, MatMul of two activations.
 */
#include <math.h>
#include <string.h>

#include "onnx_impl.h"

/* ---- views: Transpose, Reshape, Squeeze, Unsqueeze ---- */

int op_transpose(ctx *c, const Onnx__NodeProto *n) {
    static const char *const ok[] = {"perm", NULL};
    value *x;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = need_any_act(c, n, x, 0)))
        return rc;
    int r = x->lay.nd;
    int64_t perm[MAX_CONST_DIMS];
    const Onnx__AttributeProto *a = attr_get(n, "perm");
    if (a) {
        if (!attr_type_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS) || (int)a->n_ints != r)
            return node_err(c, n, DYN_EINVAL, "perm must list %d axes (the input's rank)", r);
        unsigned seen = 0;
        for (int d = 0; d < r; d++) {
            perm[d] = a->ints[d];
            if (perm[d] < 0 || perm[d] >= r || (seen & (1u << perm[d])))
                return node_err(c, n, DYN_EINVAL, "perm is not a permutation of 0..%d", r - 1);
            seen |= 1u << perm[d];
        }
    } else {
        for (int d = 0; d < r; d++) perm[d] = r - 1 - d;
    }
    layout L = x->lay;
    lay_transpose(&L, perm);
    return def_view(c, n, 0, x, 0, &L);
}

int op_unsqueeze(ctx *c, const Onnx__NodeProto *n, int squeeze) {
    static const char *const ok[] = {"axes", NULL};
    value *x;
    int rc, present;
    int64_t axes[MAX_CONST_DIMS], na;
    char sb[96];
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = read_axes(c, n, "axes", 13, 1, axes, &na, &present)))
        return rc;
    if (!x) return node_err(c, n, DYN_EFORMAT, "input 0 is missing");
    if (!present && !squeeze) return node_err(c, n, DYN_EFORMAT, "needs axes");
    int r = x->is_const ? x->c.ndim : x->lay.nd, outr = squeeze ? r : r + (int)na;
    int64_t dims[MAX_CONST_DIMS];
    if (x->is_const) memcpy(dims, x->c.dims, sizeof dims);
    else lay_shape(&x->lay, dims);
    int bd = x->is_const ? x->c.bexp : lay_bdim(&x->lay);
    unsigned mark = 0;
    if (outr > MAX_CONST_DIMS) return node_err(c, n, DYN_EUNSUP, "rank above %d", MAX_CONST_DIMS);
    for (int64_t i = 0; i < na; i++) {
        if ((rc = norm_axis(c, n, &axes[i], outr))) return rc;
        if (mark & (1u << axes[i])) return node_err(c, n, DYN_EINVAL, "axis %lld repeats",
                                                   (long long)axes[i]);
        mark |= 1u << axes[i];
    }
    if (squeeze && !present)
        for (int d = 0; d < r; d++)
            if (dims[d] == 1 && d != bd) mark |= 1u << d;
    /* new dims: g per dim for activations, dims for constants */
    int64_t nd_[MAX_CONST_DIMS];
    int g[MAX_CONST_DIMS], k = 0, src = 0, newbd = -1;
    layout L = x->is_const ? (layout){0} : x->lay;
    for (int d = 0; d < outr; d++) {
        if (squeeze) {
            if (!(mark & (1u << d))) {
                if (d == bd) newbd = k;
                nd_[k] = dims[d];
                g[k++] = x->is_const ? 0 : L.g[d];
                continue;
            }
            if (dims[d] != 1 || d == bd)
                return node_err(c, n, DYN_EINVAL, "cannot squeeze axis %d of shape %s", d,
                                x->is_const ? cst_shape_txt(&x->c, sb, sizeof sb)
                                            : lay_txt(&x->lay, sb, sizeof sb));
        } else if (mark & (1u << d)) {
            nd_[k] = 1;
            g[k++] = 0;
        } else {
            if (src == bd) newbd = k;
            nd_[k] = dims[src];
            g[k++] = x->is_const ? 0 : L.g[src];
            src++;
        }
    }
    if (x->is_const) {
        cst t;
        if ((rc = cst_copy(c, n, &x->c, &t))) return rc;
        t.ndim = k;
        memcpy(t.dims, nd_, sizeof nd_);
        t.bexp = newbd;
        return def_const(c, n, 0, &t);
    }
    L.nd = k;
    memcpy(L.g, g, sizeof g);
    return def_view(c, n, 0, x, 0, &L);
}

/* Text of a reshape target for messages. */
static const char *ints_txt(const int64_t *t, int64_t cnt, char *buf, size_t n) {
    size_t at = 0;
    buf[0] = '\0';
    for (int64_t i = 0; i < cnt && at + 24 < n; i++)
        at += (size_t)snprintf(buf + at, n - at, "%s%lld", i ? ", " : "", (long long)t[i]);
    return buf;
}

/* Reshape of an activation to a constant or shape-computed target: a view whenever the atoms
 * allow it, else after one permute into canonical order. */
int op_reshape_view(ctx *c, const Onnx__NodeProto *n, value *x, const value *s,
                    int64_t allowzero) {
    char buf[160], sb[96];
    int64_t cnt = s->c.numel, t[MAX_CONST_DIMS], shown[MAX_CONST_DIMS];
    int tb[MAX_CONST_DIMS] = {0}, neg = -1, bdt = -1;
    if (cnt > MAX_CONST_DIMS) return node_err(c, n, DYN_EUNSUP, "reshape to rank %lld",
                                              (long long)cnt);
    int64_t dims[MAX_CONST_DIMS], total = 1, known = 1;
    lay_shape(&x->lay, dims);
    for (int d = 0; d < x->lay.nd; d++)
        if (!dyn_mul_ok(total, dims[d], &total) || total > DYN_TENSOR_MAX_NUMEL)
            return node_err(c, n, DYN_EINVAL, "input %s has more than %lld elements",
                            lay_txt(&x->lay, sb, sizeof sb), (long long)DYN_TENSOR_MAX_NUMEL);
    int xbd = lay_bdim(&x->lay);
    for (int d = 0; d < cnt; d++) {
        shown[d] = s->c.i[d];
        int sym = cst_sym(&s->c, d, &t[d]);
        if (sym < 0 || (sym == 1 && bdt >= 0))
            return node_err(c, n, DYN_EUNSUP, "reshape to [%s]: a size is not linear in the batch",
                            ints_txt(shown, cnt, buf, sizeof buf));
        if (sym == 1) {
            bdt = d;
            tb[d] = 1;
        } else if (t[d] == 0 && !allowzero) {
            if (d >= x->lay.nd)
                return node_err(c, n, DYN_EINVAL, "reshape to [%s]: 0 copies a missing dim",
                                ints_txt(shown, cnt, buf, sizeof buf));
            t[d] = dims[d];
            if (d == xbd) {
                bdt = d;
                tb[d] = 1;
            }
        } else if (t[d] == -1) {
            if (neg >= 0)
                return node_err(c, n, DYN_EINVAL, "reshape to [%s]: two -1",
                                ints_txt(shown, cnt, buf, sizeof buf));
            neg = d;
            continue;
        } else if (t[d] < 1) {
            return node_err(c, n, DYN_EUNSUP, "reshape to [%s]: size %lld",
                            ints_txt(shown, cnt, buf, sizeof buf), (long long)t[d]);
        }
        if (!dyn_mul_ok(known, t[d], &known) || known > DYN_TENSOR_MAX_NUMEL)
            return node_err(c, n, DYN_EINVAL, "reshape to [%s] does not fit %s: more than %lld "
                            "elements", ints_txt(shown, cnt, buf, sizeof buf),
                            lay_txt(&x->lay, sb, sizeof sb), (long long)DYN_TENSOR_MAX_NUMEL);
    }
    if (bdt < 0 && neg >= 0) {
        bdt = neg;
        tb[neg] = 1;
    }
    if (bdt < 0)
        return node_err(c, n, DYN_EUNSUP,
                        "reshape to [%s]: only shapes that keep the batch are supported (a "
                        "symbolic batch, 0 or -1 in one dim; input %s)",
                        ints_txt(shown, cnt, buf, sizeof buf), lay_txt(&x->lay, sb, sizeof sb));
    if (neg >= 0) {
        if (known < 1 || total % known)
            return node_err(c, n, DYN_EINVAL, "reshape to [%s] does not fit %s",
                            ints_txt(shown, cnt, buf, sizeof buf), lay_txt(&x->lay, sb, sizeof sb));
        t[neg] = total / known;
    } else if (known != total) {
        return node_err(c, n, DYN_EINVAL, "reshape to [%s] does not fit %s",
                        ints_txt(shown, cnt, buf, sizeof buf), lay_txt(&x->lay, sb, sizeof sb));
    }
    layout L = x->lay;
    lay_normalize(&L);
    if (lay_reshape(&L, t, tb, (int)cnt)) {
        int rc = need_canon(c, n, x);
        if (rc) return rc;
        L = x->lay;
        lay_normalize(&L);
        if (lay_reshape(&L, t, tb, (int)cnt))
            return node_err(c, n, DYN_EUNSUP, "reshape to [%s] moves the batch within %s",
                            ints_txt(shown, cnt, buf, sizeof buf), lay_txt(&x->lay, sb, sizeof sb));
    }
    return def_view(c, n, 0, x, 0, &L);
}

/* The memory atom that alone makes up logical dim d of x (canonicalizing x when the dim spans
 * several), for slicing. -1 after an error. */
static int dim_atom(ctx *c, const Onnx__NodeProto *n, value *x, int d) {
    char sb[96];
    if (d == lay_bdim(&x->lay)) {
        node_err(c, n, DYN_EUNSUP, "slicing or gathering along the batch dim of %s",
                 lay_txt(&x->lay, sb, sizeof sb));
        return -1;
    }
    if (x->lay.g[d] > 1) {
        if (need_canon(c, n, x)) return -1;
        lay_normalize(&x->lay);
    }
    if (x->lay.g[d] != 1) {
        node_err(c, n, DYN_EUNSUP, "cannot slice dim %d of %s", d, lay_txt(&x->lay, sb, sizeof sb));
        return -1;
    }
    return x->lay.lo[lay_first(&x->lay, d)];
}

/* Output o of n = elements start, start+step, ... (len of them) of x along dim d; drop removes
 * the dim (Gather with a scalar index). The result is written in canonical order. */
static int emit_slice(ctx *c, const Onnx__NodeProto *n, size_t o, value *x, int d, int64_t start,
                      int64_t len, int64_t step, int drop) {
    int64_t size = lay_dim(&x->lay, d);
    if (start == 0 && len == size && step == 1 && !drop) return def_view(c, n, o, x, 0, &x->lay);
    int m = size == 1 ? 0 : dim_atom(c, n, x, d);
    if (m < 0) return c->err ? c->err->code : DYN_EINVAL;
    int order[MAXA];
    lay_canon_order(&x->lay, order);
    value out;
    int rc = emit_permute(c, n, x, order, m > 0 ? m : -1, start, len, step, drop ? d : -1, &out);
    if (rc) return rc;
    return def_view(c, n, o, &out, 1, &out.lay);
}

int op_gather(ctx *c, const Onnx__NodeProto *n) {
    static const char *const ok[] = {"axis", NULL};
    value *x, *ix;
    int rc;
    int64_t axis;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = need_const(c, n, 1, &ix)) || (rc = attr_int(c, n, "axis", 0, &axis)))
        return rc;
    if (!x) return node_err(c, n, DYN_EFORMAT, "input 0 is missing");
    if (ix->c.is_float) return node_err(c, n, DYN_EFORMAT, "indices must be integers");
    int r = x->is_const ? x->c.ndim : x->lay.nd;
    if ((rc = norm_axis(c, n, &axis, r))) return rc;
    int64_t size = x->is_const ? x->c.dims[axis] : lay_dim(&x->lay, (int)axis);
    int64_t idx[64];
    if (ix->c.numel > 64 || ix->c.ndim + r - 1 > MAX_CONST_DIMS)
        return node_err(c, n, DYN_EUNSUP, "too many indices");
    for (int64_t e = 0; e < ix->c.numel; e++) {
        if (ix->c.i[e] != ix->c.i2[e])
            return node_err(c, n, DYN_EUNSUP, "an index depends on the batch size");
        idx[e] = ix->c.i[e] < 0 ? ix->c.i[e] + size : ix->c.i[e];
        if (idx[e] < 0 || idx[e] >= size)
            return node_err(c, n, DYN_EINVAL, "index %lld is out of range for size %lld",
                            (long long)ix->c.i[e], (long long)size);
    }
    if (!x->is_const) {
        if (ix->c.numel != 1 || ix->c.ndim > 1)
            return node_err(c, n, DYN_EUNSUP, "gathering an activation needs one index");
        return emit_slice(c, n, 0, x, (int)axis, idx[0], 1, 1, ix->c.ndim == 0);
    }
    if (x->c.bexp >= 0) return node_err(c, n, DYN_EUNSUP, "Gather of a batch-expanded constant");
    /* constant: out shape = dims[:axis] + idx dims + dims[axis+1:] */
    int64_t od[MAX_CONST_DIMS], outer = 1, inner = 1;
    int k = 0;
    for (int d = 0; d < axis; d++) outer *= od[k++] = x->c.dims[d];
    for (int d = 0; d < ix->c.ndim; d++) od[k++] = ix->c.dims[d];
    for (int d = (int)axis + 1; d < r; d++) inner *= od[k++] = x->c.dims[d];
    cst t;
    if ((rc = cst_alloc(c, n, &t, x->c.is_float, k, od))) return rc;
    int64_t e = 0;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < ix->c.numel; j++)
            for (int64_t i = 0; i < inner; i++, e++) {
                int64_t from = (o * size + idx[j]) * inner + i;
                if (t.is_float) t.f[e] = x->c.f[from];
                else {
                    t.i[e] = x->c.i[from];
                    t.i2[e] = x->c.i2[from];
                }
            }
    return def_const(c, n, 0, &t);
}

/* Clamps ONNX slice bounds for a dim of `size` (step > 0); the count into *len. */
static void slice_bounds(int64_t size, int64_t *st, int64_t en, int64_t step, int64_t *len) {
    if (*st < 0) *st += size;
    if (en < 0) en += size;
    *st = DYN_MAX(0, DYN_MIN(*st, size));
    en = DYN_MAX(0, DYN_MIN(en, size));
    *len = en > *st ? (en - *st + step - 1) / step : 0;
}

int op_slice(ctx *c, const Onnx__NodeProto *n) {
    static const char *const ok10[] = {NULL};
    static const char *const ok1[] = {"starts", "ends", "axes", NULL};
    value *x;
    int rc, p;
    int64_t st[MAX_CONST_DIMS], en[MAX_CONST_DIMS], ax[MAX_CONST_DIMS], sp[MAX_CONST_DIMS];
    int64_t ns, ne, na = 0, nsp = 0;
    if ((rc = attrs_check(c, n, c->opset >= 10 ? ok10 : ok1)) || (rc = node_in(c, n, 0, &x)))
        return rc;
    if (!x) return node_err(c, n, DYN_EFORMAT, "input 0 is missing");
    if ((rc = read_axes(c, n, "starts", 10, 1, st, &ns, &p)) ||
        (rc = read_axes(c, n, "ends", 10, 2, en, &ne, &p)) ||
        (rc = read_axes(c, n, "axes", 10, 3, ax, &na, &p)))
        return rc;
    if (c->opset >= 10) {
        value *v;
        if ((rc = node_in(c, n, 4, &v))) return rc;
        if (v && (rc = cst_fixed_ints(c, n, v, "steps", sp, MAX_CONST_DIMS, &nsp))) return rc;
    }
    int r = x->is_const ? x->c.ndim : x->lay.nd;
    if (ns != ne || ns < 1 || (na && na != ns) || (nsp && nsp != ns))
        return node_err(c, n, DYN_EINVAL, "starts, ends, axes and steps differ in length");
    if (!na)
        for (int i = 0; i < ns; i++) ax[na++] = i;
    for (int i = 0; i < ns; i++) {
        if (!nsp) sp[i] = 1;
        if (sp[i] < 1)
            return node_err(c, n, DYN_EUNSUP, "step %lld: only positive steps are supported",
                            (long long)sp[i]);
        if ((rc = norm_axis(c, n, &ax[i], r))) return rc;
    }
    if (x->is_const) {
        if (x->c.ndim != 1 || ns != 1)
            return node_err(c, n, DYN_EUNSUP, "slicing constants other than 1-D ones");
        int64_t len;
        slice_bounds(x->c.dims[0], &st[0], en[0], sp[0], &len);
        cst t;
        if ((rc = cst_alloc(c, n, &t, x->c.is_float, 1, &len))) return rc;
        for (int64_t e = 0; e < len; e++) {
            int64_t from = st[0] + e * sp[0];
            if (t.is_float) t.f[e] = x->c.f[from];
            else {
                t.i[e] = x->c.i[from];
                t.i2[e] = x->c.i2[from];
            }
        }
        return def_const(c, n, 0, &t);
    }
    if (ns != 1)
        return node_err(c, n, DYN_EUNSUP, "slicing an activation along %lld axes at once",
                        (long long)ns);
    int64_t len, size = lay_dim(&x->lay, (int)ax[0]);
    slice_bounds(size, &st[0], en[0], sp[0], &len);
    if (len < 1) return node_err(c, n, DYN_EUNSUP, "the slice is empty");
    return emit_slice(c, n, 0, x, (int)ax[0], st[0], len, sp[0], 0);
}

int op_split(ctx *c, const Onnx__NodeProto *n) {
    static const char *const ok[] = {"axis", "split", "num_outputs", NULL};
    value *x;
    int rc;
    int64_t axis, sz[64], cnt = 0;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = need_any_act(c, n, x, 0)) || (rc = attr_int(c, n, "axis", 0, &axis)) ||
        (rc = norm_axis(c, n, &axis, x->lay.nd)))
        return rc;
    if (n->n_output < 1 || n->n_output > 64)
        return node_err(c, n, DYN_EUNSUP, "has %zu outputs (1..64 supported)", n->n_output);
    int64_t size = lay_dim(&x->lay, (int)axis);
    if (c->opset >= 13) {
        value *v;
        if ((rc = node_in(c, n, 1, &v))) return rc;
        if (v && (rc = cst_fixed_ints(c, n, v, "split", sz, 64, &cnt))) return rc;
    } else {
        const Onnx__AttributeProto *a = attr_get(n, "split");
        if (a) {
            if (a->n_ints > 64) return node_err(c, n, DYN_EUNSUP, "too many parts");
            for (size_t i = 0; i < a->n_ints; i++) sz[cnt++] = a->ints[i];
        }
    }
    if (!cnt) {
        cnt = (int64_t)n->n_output;
        int64_t part = (size + cnt - 1) / cnt;
        for (int64_t i = 0; i < cnt; i++) sz[i] = DYN_MIN(part, size - i * part);
    }
    int64_t sum = 0;
    for (int64_t i = 0; i < cnt; i++) {
        if (sz[i] < 1) return node_err(c, n, DYN_EUNSUP, "part %lld has size %lld",
                                       (long long)i, (long long)sz[i]);
        sum += sz[i];
    }
    if (cnt != (int64_t)n->n_output || sum != size)
        return node_err(c, n, DYN_EINVAL, "%lld parts summing to %lld for %zu outputs and a dim "
                        "of %lld", (long long)cnt, (long long)sum, n->n_output, (long long)size);
    int64_t at = 0;
    for (int64_t i = 0; i < cnt; i++) {
        if (!n->output[i][0]) {
            at += sz[i];
            continue;
        }
        if ((rc = emit_slice(c, n, (size_t)i, x, (int)axis, at, sz[i], 1, 0))) return rc;
        at += sz[i];
    }
    return 0;
}

/* ---- arithmetic with layouts ---- */

/* The constant k (FLOAT) broadcast over activation x, laid out in x's memory order for one
 * sample; then the shortest trailing part of x's engine shape it repeats with. Returns a new
 * array (caller frees) of *period values and the engine dims they span in *pshape / *np. */
static int cst_on_layout(ctx *c, const Onnx__NodeProto *n, const value *x, const value *k,
                         float **out, int64_t *period, int64_t *pshape, int *np) {
    char sx[96], sk[96], nb[96];
    const layout *L = &x->lay;
    int r = L->nd, bd = lay_bdim(L), fits = k->c.ndim <= r || 1;
    int64_t dims[MAX_CONST_DIMS], kst[MAX_CONST_DIMS];
    lay_shape(L, dims);
    int64_t s = 1;
    for (int d = k->c.ndim - 1; d >= 0; d--) {
        int xd = d + r - k->c.ndim;
        int64_t kd = k->c.dims[d];
        if (xd < 0) fits = fits && kd == 1;
        else fits = fits && (kd == 1 || (kd == dims[xd] && xd != bd));
        s *= kd;
    }
    if (!fits)
        return node_err(c, n, DYN_EUNSUP,
                        "constant '%s' of shape %s does not broadcast over the activation of "
                        "shape %s without growing it or varying along the batch",
                        pr(k->name, nb, sizeof nb), cst_shape_txt(&k->c, sk, sizeof sk),
                        lay_txt(L, sx, sizeof sx));
    /* logical strides of k over x's dims */
    s = 1;
    for (int d = r - 1; d >= 0; d--) {
        int kd = d - (r - k->c.ndim);
        kst[d] = kd >= 0 && k->c.dims[kd] != 1 ? s : 0;
        if (kd >= 0) s *= k->c.dims[kd];
    }
    int64_t numel = 1;
    for (int m = 1; m < L->na; m++) numel *= L->a[m];
    float *p = malloc((size_t)numel * sizeof(float));
    int64_t *li = malloc((size_t)numel * sizeof(int64_t));
    if (!p || !li) {
        free(p);
        free(li);
        return node_err(c, n, DYN_ENOMEM, "out of memory");
    }
    lay_logical_index(L, li, numel);
    for (int64_t f = 0; f < numel; f++) {
        int64_t rem = li[f], ki = 0;
        for (int d = r - 1; d >= 0; d--) {
            ki += (rem % dims[d]) * kst[d];
            rem /= dims[d];
        }
        p[f] = k->c.f[ki];
    }
    free(li);
    const dyn_shape *es = &x->shape;
    int best = es->ndim - 1;
    int64_t per = numel;
    for (int sfx = 0; sfx < es->ndim - 1; sfx++) {
        int64_t q = 1;
        for (int e = es->ndim - sfx; e < es->ndim; e++) q *= es->d[e];
        int ok = 1;
        for (int64_t f = q; ok && f < numel; f++) ok = p[f] == p[f % q];
        if (ok) {
            best = sfx;
            per = q;
            break;
        }
    }
    *np = best ? best : 1;
    if (best)
        for (int e = 0; e < best; e++) pshape[e] = es->d[es->ndim - best + e];
    else
        pshape[0] = 1;
    *period = per;
    *out = p;
    return 0;
}

/* x (op) k or k (op) x with a constant of any broadcastable shape -> an affine layer. */
static int emit_affine(ctx *c, const Onnx__NodeProto *n, value *x, const value *k, arith op,
                       int const_first) {
    float *p = NULL;
    int64_t per = 1, ps[DYN_MAX_DIMS] = {1};
    int np = 1, rc;
    if ((rc = need_float(c, n, k, const_first ? 0 : 1, -1))) return rc;
    if (op == AR_DIV && const_first)
        return node_err(c, n, DYN_EUNSUP,
                        "dividing a constant by an activation is not supported (only "
                        "activation / constant)");
    if ((rc = cst_on_layout(c, n, x, k, &p, &per, ps, &np))) return rc;
    int has_w = op == AR_MUL || op == AR_DIV || (op == AR_SUB && const_first);
    int has_b = op == AR_ADD || op == AR_SUB;
    for (int64_t i = 0; i < per && op == AR_DIV; i++)
        if (p[i] == 0.0f) {
            free(p);
            return node_err(c, n, DYN_EINVAL, "divides by a constant holding 0");
        }
    json_t *a = json_pack("{s:o, s:i, s:i, s:i}", "shape", jints(ps, np), "weight", has_w, "bias",
                          has_b, "trainable", has_b && per > 1);
    dyn_layer *l = make_layer(c, n, c->cur, "affine", a);
    if (!l) {
        free(p);
        return c->err ? c->err->code : DYN_EINVAL;
    }
    dyn_param *w = dyn_layer_param(l, "weight"), *b = dyn_layer_param(l, "bias");
    for (int64_t i = 0; i < per; i++) {
        if (w) w->value.data[i] = op == AR_MUL ? p[i] : op == AR_DIV ? 1.0f / p[i] : -1.0f;
        if (b) b->value.data[i] = op == AR_SUB && !const_first ? -p[i] : p[i];
    }
    free(p);
    layout L = x->lay;
    return add_node_lay(c, n, l, &x, 1, &L);
}

/* Two activations with broadcasting: both in canonical layout, dims aligned on the right. */
static int emit_binary_acts(ctx *c, const Onnx__NodeProto *n, value *a, value *b,
                            const char *op) {
    char sa[96], sb[96];
    if (lay_eq(&a->lay, &b->lay) && dyn_shape_eq(&a->shape, &b->shape)) {
        dyn_layer *l = make_layer(c, n, c->cur, op, json_object());
        if (!l) return c->err ? c->err->code : DYN_EINVAL;
        value *ins[2] = {a, b};
        layout L = a->lay;
        return add_node_lay(c, n, l, ins, 2, &L);
    }
    int r = DYN_MAX(a->lay.nd, b->lay.nd);
    int64_t da[MAX_CONST_DIMS], db[MAX_CONST_DIMS], dout[MAX_CONST_DIMS];
    int bda = lay_bdim(&a->lay) + r - a->lay.nd, bdb = lay_bdim(&b->lay) + r - b->lay.nd;
    lay_shape(&a->lay, da + r - a->lay.nd);
    lay_shape(&b->lay, db + r - b->lay.nd);
    int ok = bda == bdb;
    for (int d = 0; d < r; d++) {
        if (d < r - a->lay.nd) da[d] = 1;
        if (d < r - b->lay.nd) db[d] = 1;
        ok = ok && (da[d] == db[d] || da[d] == 1 || db[d] == 1);
        dout[d] = DYN_MAX(da[d], db[d]);
    }
    if (!ok)
        return node_err(c, n, DYN_EUNSUP, "inputs of shapes %s and %s do not broadcast (or hold "
                        "the batch in different dims)", lay_txt(&a->lay, sa, sizeof sa),
                        lay_txt(&b->lay, sb, sizeof sb));
    /* bring both to the common rank as canonical layouts with the same dims order */
    value *v[2] = {a, b};
    const int64_t *dv[2] = {da, db};
    value tmp[2];
    for (int i = 0; i < 2; i++) {
        int rc = need_canon(c, n, v[i]);
        if (rc) return rc;
        tmp[i] = *v[i];
        layout L;
        lay_build(&L, r, dv[i], bda, lay_bafter(&v[i]->lay));
        dyn_shape want;
        if (lay_canon_shape(&L, &want, NULL))
            return node_err(c, n, DYN_EUNSUP, "broadcast needs more than %d dims", DYN_MAX_DIMS);
        if (!dyn_shape_eq(&want, &tmp[i].shape)) {
            json_t *at = json_object();
            int64_t nf = dyn_shape_numel(&tmp[i].shape);
            if (at) {
                json_object_set_new(at, "dims", jints(&nf, 1));
                json_object_set_new(at, "shape", jints(want.d + 1, want.ndim - 1));
            }
            dyn_layer *l = make_layer(c, n, c->cur, "permute", at);
            if (!l) return c->err ? c->err->code : DYN_EINVAL;
            if ((rc = add_anon(c, n, l, &tmp[i], &L, &tmp[i]))) return rc;
        }
        tmp[i].lay = L;
    }
    if (lay_bafter(&tmp[0].lay) != lay_bafter(&tmp[1].lay))
        return node_err(c, n, DYN_EUNSUP, "inputs hold the batch differently");
    dyn_layer *l = make_layer(c, n, c->cur, op, json_object());
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    value *ins[2] = {&tmp[0], &tmp[1]};
    layout L;
    lay_build(&L, r, dout, bda, lay_bafter(&tmp[0].lay));
    return add_node_lay(c, n, l, ins, 2, &L);
}

/* Elementwise unary layer in any layout. */
int op_unary_any(ctx *c, const Onnx__NodeProto *n, const char *op, json_t *attrs) {
    static const char *const ok[] = {NULL};
    value *x;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x))) {
        json_decref(attrs);
        return rc;
    }
    if (!x) {
        json_decref(attrs);
        return node_err(c, n, DYN_EFORMAT, "input 0 is missing");
    }
    if (x->is_const) {
        json_decref(attrs);
        if (!x->c.is_float || x->c.bexp >= 0)
            return node_err(c, n, DYN_EUNSUP, "needs a FLOAT input");
        cst k;
        if ((rc = cst_copy(c, n, &x->c, &k))) return rc;
        for (int64_t e = 0; e < k.numel; e++) k.f[e] = !strcmp(op, "erf") ? erff(k.f[e]) : sqrtf(k.f[e]);
        return def_const(c, n, 0, &k);
    }
    dyn_layer *l = make_layer(c, n, c->cur, op, attrs ? attrs : json_object());
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    layout L = x->lay;
    return add_node_lay(c, n, l, &x, 1, &L);
}

/* Add / Sub / Mul / Div / Pow / Equal that the CNN paths do not take. */
int op_arith(ctx *c, const Onnx__NodeProto *n, arith k, value *a, value *b) {
    static const char *const names[] = {"add", "sub", "mul", "div"};
    if (a->is_const && b->is_const) return fold_binary(c, n, k, a, b);
    if (k == AR_EQ) return node_err(c, n, DYN_EUNSUP, "comparing activations");
    if (k == AR_POW) {
        if (a->is_const || !b->is_const || !b->c.is_float || b->c.numel != 1)
            return node_err(c, n, DYN_EUNSUP, "only activation ^ constant scalar is supported");
        return op_unary_any(c, n, "pow", json_pack("{s:f}", "exponent", (double)b->c.f[0]));
    }
    if (!a->is_const && !b->is_const) return emit_binary_acts(c, n, a, b, names[k]);
    value *x = a->is_const ? b : a, *kk = a->is_const ? a : b;
    if (kk->c.bexp >= 0)
        return node_err(c, n, DYN_EUNSUP, "arithmetic with a constant expanded along the batch");
    return emit_affine(c, n, x, kk, k, a->is_const);
}

/* ---- row-wise ops: Softmax, ReduceMean (with LayerNorm fusion), LayerNormalization ---- */

/* Moves logical dim d of x last (a view), canonicalizes; returns the view's perm in perm. */
static int dim_last(ctx *c, const Onnx__NodeProto *n, value *x, int d, int64_t *perm) {
    int r = x->lay.nd;
    for (int e = 0, k = 0; e < r; e++)
        if (e != d) perm[k++] = e;
    perm[r - 1] = d;
    lay_transpose(&x->lay, perm);
    return need_canon(c, n, x);
}

int op_softmax_tr(ctx *c, const Onnx__NodeProto *n, value *x, int64_t axis) {
    char sb[96];
    value v = *x;
    int64_t perm[MAX_CONST_DIMS], inv[MAX_CONST_DIMS];
    int r = v.lay.nd, rc;
    if (axis == lay_bdim(&v.lay) || (c->opset < 13 && axis != r - 1))
        return node_err(c, n, DYN_EUNSUP, "Softmax over axis %lld of %s", (long long)axis,
                        lay_txt(&v.lay, sb, sizeof sb));
    if (axis != r - 1) {
        if ((rc = dim_last(c, n, &v, (int)axis, perm))) return rc;
    } else if ((rc = need_canon(c, n, x))) {
        return rc;
    } else {
        v = *x;
    }
    dyn_layer *l = make_layer(c, n, c->cur, "softmax", json_object());
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    value *in = &v;
    layout L = v.lay;
    if (axis == r - 1) return add_node_lay(c, n, l, &in, 1, &L);
    value out;
    if ((rc = add_anon(c, n, l, &v, &L, &out))) return rc;
    for (int e = 0; e < r; e++) inv[perm[e]] = e;
    lay_transpose(&out.lay, inv);
    return def_view(c, n, 0, &out, 1, &out.lay);
}

static int emit_layernorm(ctx *c, const Onnx__NodeProto *n, value *x, double eps, const float *w,
                          const float *b, const char *outname);

/* The single node reading value `name` after node `from`, or NULL (none, several, or a graph
 * output reads it). */
static const Onnx__NodeProto *only_reader(ctx *c, const char *name, size_t from, size_t *at) {
    if (uses_of(c, name) != 1) return NULL;
    for (size_t i = from + 1; i < c->g->n_node; i++)
        for (size_t j = 0; j < c->g->node[i]->n_input; j++)
            if (!strcmp(c->g->node[i]->input[j], name)) {
                *at = i;
                return c->g->node[i];
            }
    return NULL;
}

static int is_op(const Onnx__NodeProto *n, const char *op) {
    return n && n->op_type && !strcmp(n->op_type, op) && n->n_output == 1 && n->n_input >= 1;
}

/* A FLOAT constant input other than `not` (the other operand): its value or NULL. */
static const value *const_operand(ctx *c, const Onnx__NodeProto *n, const char *other) {
    if (n->n_input != 2) return NULL;
    int k = !strcmp(n->input[0], other) ? 1 : !strcmp(n->input[1], other) ? 0 : -1;
    if (k < 0) return NULL;
    value *v = val_find(c, n->input[k]);
    return v && v->is_const && v->c.is_float && v->c.bexp < 0 ? v : NULL;
}

/* Recognizes mean -> x - mean -> pow 2 -> mean -> + eps -> sqrt -> divide [-> * w] [-> + b]
 * from ReduceMean node i over the last axis of x (keepdims); on a match emits one layernorm
 * layer defining the chain's last value, marks the chain's nodes done and returns 1. */
static int try_layernorm(ctx *c, const Onnx__NodeProto *n, size_t i, value *x) {
    size_t js = 0, jp = 0, jr = 0, ja = 0, jq = 0, jd = 0, jdd = 0, jm = 0, jb = 0;
    if (n->n_output != 1) return 0; /* no chain; the caller reports a missing output */
    const Onnx__NodeProto *sub = only_reader(c, n->output[0], i, &js);
    if (!is_op(sub, "Sub") || sub->n_input != 2 || strcmp(sub->input[0], n->input[0]) ||
        strcmp(sub->input[1], n->output[0]) || uses_of(c, sub->output[0]) != 2)
        return 0;
    const Onnx__NodeProto *pw = NULL, *dv = NULL;
    for (size_t k = js + 1; k < c->g->n_node; k++) {
        const Onnx__NodeProto *m = c->g->node[k];
        for (size_t j = 0; j < m->n_input; j++)
            if (!strcmp(m->input[j], sub->output[0])) {
                if (is_op(m, "Pow") && j == 0 && !pw) {
                    pw = m;
                    jp = k;
                } else if (is_op(m, "Div") && j == 0 && !dv) {
                    dv = m;
                    jd = k;
                } else {
                    return 0;
                }
            }
    }
    if (!pw || !dv) return 0;
    const value *two = const_operand(c, pw, sub->output[0]);
    if (!two || two->c.numel != 1 || two->c.f[0] != 2.0f) return 0;
    const Onnx__NodeProto *rm = only_reader(c, pw->output[0], jp, &jr);
    if (!is_op(rm, "ReduceMean")) return 0;
    int64_t ax1[MAX_CONST_DIMS], ax2[MAX_CONST_DIMS], k1, k2, keep2;
    int p1, p2;
    static const char *const okr[] = {"axes", "keepdims", NULL};
    if (attrs_check(c, rm, okr) || attr_int(c, rm, "keepdims", 1, &keep2) || keep2 != 1 ||
        read_axes(c, n, "axes", 18, 1, ax1, &k1, &p1) ||
        read_axes(c, rm, "axes", 18, 1, ax2, &k2, &p2) || k1 != 1 || k2 != 1 ||
        (ax1[0] < 0 ? ax1[0] + x->lay.nd : ax1[0]) != (ax2[0] < 0 ? ax2[0] + x->lay.nd : ax2[0]))
        return 0;
    const Onnx__NodeProto *ad = only_reader(c, rm->output[0], jr, &ja);
    const value *eps = is_op(ad, "Add") ? const_operand(c, ad, rm->output[0]) : NULL;
    if (!eps || eps->c.numel != 1 || !(eps->c.f[0] > 0)) return 0;
    const Onnx__NodeProto *sq = only_reader(c, ad->output[0], ja, &jq);
    if (!is_op(sq, "Sqrt")) return 0;
    const Onnx__NodeProto *dv2 = only_reader(c, sq->output[0], jq, &jdd);
    if (dv2 != dv || dv->n_input != 2 || strcmp(dv->input[1], sq->output[0])) return 0;
    int64_t D = lay_dim(&x->lay, x->lay.nd - 1);
    const char *last = dv->output[0];
    const value *w = NULL, *b = NULL;
    const Onnx__NodeProto *mu = only_reader(c, last, jd, &jm);
    if (is_op(mu, "Mul") && (w = const_operand(c, mu, last)) && w->c.numel == D &&
        w->c.dims[w->c.ndim - 1] == D) {
        last = mu->output[0];
        const Onnx__NodeProto *ab = only_reader(c, last, jm, &jb);
        if (is_op(ab, "Add") && (b = const_operand(c, ab, last)) && b->c.numel == D &&
            b->c.dims[b->c.ndim - 1] == D)
            last = ab->output[0];
        else
            b = NULL, jb = 0;
    } else {
        w = NULL;
        jm = 0;
    }
    int rc = emit_layernorm(c, n, x, eps->c.f[0], w ? w->c.f : NULL, b ? b->c.f : NULL, last);
    if (rc) return rc;
    size_t done[] = {js, jp, jr, ja, jq, jd, jm, jb};
    for (size_t k = 0; k < DYN_ARRAY_LEN(done); k++)
        if (done[k]) c->skip[done[k]] = 1;
    return 1;
}

int op_reduce_mean(ctx *c, const Onnx__NodeProto *n) {
    static const char *const ok[] = {"axes", "keepdims", "noop_with_empty_axes", NULL};
    value *x;
    int rc, present;
    int64_t axes[MAX_CONST_DIMS], na, keep, noop;
    char sb[96];
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = need_any_act(c, n, x, 0)) ||
        (rc = read_axes(c, n, "axes", 18, 1, axes, &na, &present)) ||
        (rc = attr_int(c, n, "keepdims", 1, &keep)) ||
        (rc = attr_int(c, n, "noop_with_empty_axes", 0, &noop)))
        return rc;
    int r = x->lay.nd;
    if (na != 1 || noop)
        return node_err(c, n, DYN_EUNSUP, "only a mean over one axis is supported (%lld axes)",
                        (long long)na);
    if ((rc = norm_axis(c, n, &axes[0], r))) return rc;
    int d = (int)axes[0];
    if (d == lay_bdim(&x->lay))
        return node_err(c, n, DYN_EUNSUP, "a mean over the batch dim of %s",
                        lay_txt(&x->lay, sb, sizeof sb));
    if (keep && d == r - 1) {
        rc = try_layernorm(c, n, (size_t)c->cur, x);
        if (rc) return rc < 0 ? rc : 0;
    }
    if ((rc = need_canon(c, n, x))) return rc;
    int emap[MAX_CONST_DIMS];
    dyn_shape cs;
    lay_canon_shape(&x->lay, &cs, emap);
    layout L = x->lay;
    lay_redim(&L, d, 1, !keep);
    dyn_shape os;
    if (lay_canon_shape(&L, &os, NULL) || os.ndim < 2)
        return node_err(c, n, DYN_EUNSUP, "the mean of %s leaves no dim besides the batch",
                        lay_txt(&x->lay, sb, sizeof sb));
    int ekeep = os.ndim == cs.ndim;
    json_t *a = json_pack("{s:i, s:i}", "axis", emap[d], "keepdims", ekeep);
    dyn_layer *l = make_layer(c, n, c->cur, "reduce_mean", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    return add_node_lay(c, n, l, &x, 1, &L);
}

static int emit_layernorm(ctx *c, const Onnx__NodeProto *n, value *x, double eps, const float *w,
                          const float *b, const char *outname) {
    char sb[96];
    int r = x->lay.nd, rc;
    if (r - 1 == lay_bdim(&x->lay))
        return node_err(c, n, DYN_EUNSUP, "normalizing over the batch dim of %s",
                        lay_txt(&x->lay, sb, sizeof sb));
    if ((rc = need_canon(c, n, x))) return rc;
    int64_t D = lay_dim(&x->lay, r - 1);
    json_t *a = json_pack("{s:I, s:f}", "dim", (json_int_t)D, "eps", eps);
    dyn_layer *l = make_layer(c, n, c->cur, "layernorm", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    if (w) param_set(l, "weight", w, D);
    if (b) param_set(l, "bias", b, D);
    value out;
    layout L = x->lay;
    if ((rc = add_anon(c, n, l, x, &L, &out))) return rc;
    int k = val_act(c, outname, out.node, &out.shape);
    if (k) return node_err(c, n, k, "%s", c->err ? c->err->msg : "");
    val_find(c, outname)->lay = L;
    return 0;
}

int op_layernorm(ctx *c, const Onnx__NodeProto *n) {
    static const char *const ok[] = {"axis", "epsilon", "stash_type", NULL};
    value *x, *w, *b;
    int rc;
    int64_t axis;
    double eps;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = need_any_act(c, n, x, 0)) || (rc = node_in(c, n, 1, &w)) ||
        (rc = node_in(c, n, 2, &b)) || (rc = need_float(c, n, w, 1, -1)) ||
        (b && (rc = need_float(c, n, b, 2, -1))) || (rc = attr_int(c, n, "axis", -1, &axis)) ||
        (rc = attr_float(c, n, "epsilon", 1e-5, &eps)) || (rc = norm_axis(c, n, &axis, x->lay.nd)))
        return rc;
    int64_t D = lay_dim(&x->lay, x->lay.nd - 1);
    if (axis != x->lay.nd - 1)
        return node_err(c, n, DYN_EUNSUP, "axis %lld: only the last axis is supported",
                        (long long)axis);
    if (w->c.numel != D || (b && b->c.numel != D))
        return node_err(c, n, DYN_EINVAL, "scale / bias do not hold %lld values", (long long)D);
    if (!(eps > 0 && eps < 1)) return node_err(c, n, DYN_EUNSUP, "epsilon %g", eps);
    for (size_t o = 1; o < n->n_output; o++)
        if (n->output[o][0])
            return node_err(c, n, DYN_EUNSUP, "output %zu (mean / inverse std) is not supported", o);
    if (n->n_output < 1 || !n->output[0][0]) return node_err(c, n, DYN_EFORMAT, "has no output");
    return emit_layernorm(c, n, x, eps, w->c.f, b ? b->c.f : NULL, n->output[0]);
}

/* ---- MatMul of two activations ---- */

/* Chooses how x enters a matmul: as stored (0) or with its last two dims swapped (1, when that
 * avoids a copy); canonicalizes when neither fits. */
static int mm_operand(ctx *c, const Onnx__NodeProto *n, value *x, value *out, int *trans) {
    int64_t perm[MAX_CONST_DIMS];
    int r = x->lay.nd;
    dyn_shape s;
    for (int d = 0; d < r; d++) perm[d] = d;
    perm[r - 1] = r - 2;
    perm[r - 2] = r - 1;
    layout T = x->lay;
    lay_transpose(&T, perm);
    *trans = 0;
    if (!lay_is_canon(&x->lay) && lay_is_canon(&T) && lay_canon_shape(&T, &s, NULL) == 0 &&
        dyn_shape_eq(&s, &x->shape)) {
        *trans = 1;
        *out = *x;
        out->lay = T;
        return 0;
    }
    int rc = need_canon(c, n, x);
    *out = *x;
    return rc;
}

int op_matmul_acts(ctx *c, const Onnx__NodeProto *n, value *a, value *b) {
    char sa[96], sb[96];
    int r = a->lay.nd, bd = lay_bdim(&a->lay);
    int64_t da[MAX_CONST_DIMS], db[MAX_CONST_DIMS];
    lay_shape(&a->lay, da);
    lay_shape(&b->lay, db);
    int ok = r >= 3 && b->lay.nd == r && bd == lay_bdim(&b->lay) && bd < r - 2 &&
             da[r - 1] == db[r - 2];
    for (int d = 0; ok && d < r - 2; d++) ok = da[d] == db[d];
    if (!ok)
        return node_err(c, n, DYN_EUNSUP,
                        "MatMul of activations %s and %s: needs equal leading dims holding the "
                        "batch and matching inner sizes",
                        lay_txt(&a->lay, sa, sizeof sa), lay_txt(&b->lay, sb, sizeof sb));
    value va, vb;
    int ta, tb, rc;
    if ((rc = mm_operand(c, n, a, &va, &ta)) || (rc = mm_operand(c, n, b, &vb, &tb))) return rc;
    /* the stored operands' engine shapes: leading dims must agree */
    dyn_layer *l = make_layer(c, n, c->cur, "matmul", json_pack("{s:i, s:i}", "ta", ta, "tb", tb));
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    layout L = a->lay; /* a's logical view (va's may be the transposed one) */
    lay_redim(&L, r - 1, db[r - 1], 0);
    value *ins[2] = {&va, &vb};
    return add_node_lay(c, n, l, ins, 2, &L);
}
