/* onnx_shape.c — ONNX import: constants. Allocation, and folding at import of the shape
 * computations exports contain (Shape, Cast, ConstantOfShape, Where, Expand, arithmetic on
 * constants), with the batch size symbolic: INT64 constants hold their values for two batch
 * sizes (SB1, SB2 in onnx_impl.h), so a size k*N is tracked and one not linear in N rejected.
 * Also Constant nodes.
 */
#include <math.h>
#include <string.h>

#include "onnx_impl.h"

/* ---- constants: allocation and folding ---- */

int cst_alloc(ctx *c, const Onnx__NodeProto *n, cst *k, int is_float, int ndim,
              const int64_t *dims) {
    memset(k, 0, sizeof *k);
    k->bexp = -1;
    k->is_float = is_float;
    k->ndim = ndim;
    k->numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (dims[d] < 0 || dims[d] > DYN_TENSOR_MAX_NUMEL)
            return node_err(c, n, DYN_EUNSUP, "a constant of dimension %lld", (long long)dims[d]);
        k->dims[d] = dims[d];
        if (!dyn_mul_ok(k->numel, dims[d], &k->numel) || k->numel > ((int64_t)1 << 28))
            return node_err(c, n, DYN_EUNSUP, "a folded constant would be too large");
    }
    size_t cnt = (size_t)(k->numel ? k->numel : 1);
    if (is_float) {
        k->f = calloc(cnt, sizeof(float));
    } else {
        k->i = calloc(cnt, sizeof(int64_t));
        k->i2 = calloc(cnt, sizeof(int64_t));
    }
    if (is_float ? !k->f : (!k->i || !k->i2)) {
        cst_free(k);
        return node_err(c, n, DYN_ENOMEM, "out of memory");
    }
    return 0;
}

/* Defines output o of n as the constant *k (ownership moves to the table). */
int def_const(ctx *c, const Onnx__NodeProto *n, size_t o, cst *k) {
    if (o >= n->n_output || !n->output[o][0]) {
        cst_free(k);
        return node_err(c, n, DYN_EFORMAT, "has no output");
    }
    int v = val_add(c, n->output[o]);
    if (v < 0) {
        cst_free(k);
        return node_err(c, n, v, "%s", c->err ? c->err->msg : "");
    }
    c->vals[v].is_const = 1;
    c->vals[v].c = *k;
    memset(k, 0, sizeof *k);
    return 0;
}

/* Element e of an INT64 constant as a batch-aware size: *k = the batch factor when the value
 * is k * N (returns 1), or the fixed value in *k (returns 0); -1 when not linear in N. */
int cst_sym(const cst *t, int64_t e, int64_t *k) {
    int64_t a = t->i[e], b = t->i2[e];
    if (a == b) {
        *k = a;
        return 0;
    }
    if (a % SB1 == 0 && b % SB2 == 0 && a / SB1 == b / SB2 && a / SB1 > 0) {
        *k = a / SB1;
        return 1;
    }
    return -1;
}

/* A constant that must not depend on the batch: its values into out (INT64 or FLOAT). */
int cst_fixed_ints(ctx *c, const Onnx__NodeProto *n, const value *v, const char *what,
                   int64_t *out, int64_t maxn, int64_t *cnt) {
    char vb[96];
    if (!v || !v->is_const)
        return node_err(c, n, DYN_EUNSUP, "%s must be a constant (or computed from shapes)", what);
    if (v->c.is_float || v->c.ndim > 1 || v->c.numel > maxn)
        return node_err(c, n, DYN_EUNSUP, "%s ('%s') must be a scalar or 1-D INT64 of at most "
                        "%lld values", what, pr(v->name, vb, sizeof vb), (long long)maxn);
    for (int64_t e = 0; e < v->c.numel; e++) {
        if (v->c.i[e] != v->c.i2[e])
            return node_err(c, n, DYN_EUNSUP, "%s depends on the batch size", what);
        out[e] = v->c.i[e];
    }
    *cnt = v->c.numel;
    return 0;
}

/* Axes of an operator: attribute `name` (before opset `from`) or input `in`. */
int read_axes(ctx *c, const Onnx__NodeProto *n, const char *name, int64_t from, size_t in,
              int64_t *axes, int64_t *cnt, int *present) {
    *cnt = 0;
    *present = 0;
    if (c->opset < from) {
        const Onnx__AttributeProto *a = attr_get(n, name);
        if (!a) return 0;
        if (!attr_type_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS) ||
            a->n_ints > MAX_CONST_DIMS)
            return node_err(c, n, DYN_EFORMAT, "attribute '%s' must be a list of at most %d "
                            "integers", name, MAX_CONST_DIMS);
        if (a->n_ints) memcpy(axes, a->ints, a->n_ints * sizeof *axes); /* ints NULL when empty */
        *cnt = (int64_t)a->n_ints;
        *present = 1;
        return 0;
    }
    value *v;
    int rc = node_in(c, n, in, &v);
    if (rc || !v) return rc;
    *present = 1;
    return cst_fixed_ints(c, n, v, name, axes, MAX_CONST_DIMS, cnt);
}

/* Normalizes axis a of a rank-r tensor into 0..r-1. */
int norm_axis(ctx *c, const Onnx__NodeProto *n, int64_t *a, int r) {
    if (*a < -r || *a >= r)
        return node_err(c, n, DYN_EINVAL, "axis %lld is out of range for rank %d", (long long)*a,
                        r);
    if (*a < 0) *a += r;
    return 0;
}

int arith_of(const char *op) {
    static const char *const names[] = {"Add", "Sub", "Mul", "Div", "Pow", "Equal"};
    for (int i = 0; i < 6; i++)
        if (!strcmp(op, names[i])) return i;
    return -1;
}

/* ONNX (numpy) broadcast of two constant shapes into out; -1 when they do not broadcast. */
static int bcast_dims(const cst *a, const cst *b, int *nd, int64_t *out) {
    int r = DYN_MAX(a->ndim, b->ndim);
    for (int d = 0; d < r; d++) {
        int da = d - (r - a->ndim), db = d - (r - b->ndim);
        int64_t x = da >= 0 ? a->dims[da] : 1, y = db >= 0 ? b->dims[db] : 1;
        if (x != y && x != 1 && y != 1) return -1;
        out[d] = x == 1 ? y : x;
    }
    *nd = r;
    return 0;
}

/* Flat index into t of output element e (shape dims/nd) under broadcasting. */
static int64_t bcast_index(const cst *t, int nd, const int64_t *dims, int64_t e) {
    int64_t idx = 0, st = 1;
    for (int d = nd - 1; d >= 0; d--) {
        int64_t i = e % dims[d];
        e /= dims[d];
        int td = d - (nd - t->ndim);
        if (td >= 0) {
            if (t->dims[td] != 1) idx += i * st;
            st *= t->dims[td];
        }
    }
    return idx;
}

static double arith_f(arith k, double a, double b) {
    switch (k) {
    case AR_ADD: return a + b;
    case AR_SUB: return a - b;
    case AR_MUL: return a * b;
    case AR_DIV: return a / b;
    case AR_POW: return pow(a, b);
    default: return a == b;
    }
}

/* Integer arithmetic on constants (sizes, mostly): -1 when the result overflows int64_t. */
static int arith_i(arith k, int64_t a, int64_t b, int64_t *out) {
    switch (k) {
    case AR_ADD: return __builtin_add_overflow(a, b, out) ? -1 : 0;
    case AR_SUB: return __builtin_sub_overflow(a, b, out) ? -1 : 0;
    case AR_MUL: return dyn_mul_ok(a, b, out) ? 0 : -1;
    case AR_DIV:
        if (b == 0 || (a == INT64_MIN && b == -1)) return -1;
        *out = a / b;
        return 0;
    case AR_EQ: *out = a == b; return 0;
    default: return -1;
    }
}

/* Folds a binary op of two constants. */
int fold_binary(ctx *c, const Onnx__NodeProto *n, arith k, const value *a, const value *b) {
    char sa[96], sb[96];
    int nd;
    int64_t dims[MAX_CONST_DIMS];
    if (a->c.bexp >= 0 || b->c.bexp >= 0)
        return node_err(c, n, DYN_EUNSUP, "arithmetic on a constant expanded along the batch");
    if (a->c.is_float != b->c.is_float)
        return node_err(c, n, DYN_EUNSUP, "inputs of different data types (FLOAT and INT64)");
    if (bcast_dims(&a->c, &b->c, &nd, dims))
        return node_err(c, n, DYN_EINVAL, "constant shapes %s and %s do not broadcast",
                        cst_shape_txt(&a->c, sa, sizeof sa), cst_shape_txt(&b->c, sb, sizeof sb));
    int flt = a->c.is_float && k != AR_EQ;
    cst r;
    int rc = cst_alloc(c, n, &r, flt, nd, dims);
    if (rc) return rc;
    for (int64_t e = 0; e < r.numel; e++) {
        int64_t ia = bcast_index(&a->c, nd, dims, e), ib = bcast_index(&b->c, nd, dims, e);
        if (a->c.is_float) {
            double v = arith_f(k, a->c.f[ia], b->c.f[ib]);
            if (flt) r.f[e] = (float)v;
            else r.i[e] = r.i2[e] = (int64_t)v; /* AR_EQ: 0 or 1 */
        } else if (k == AR_POW || arith_i(k, a->c.i[ia], b->c.i[ib], &r.i[e]) ||
                   arith_i(k, a->c.i2[ia], b->c.i2[ib], &r.i2[e])) {
            cst_free(&r);
            return node_err(c, n, DYN_EUNSUP, "integer %s overflows, divides by 0 or is not "
                            "supported", n->op_type);
        }
    }
    return def_const(c, n, 0, &r);
}

/* ---- shape computations ---- */

int op_shape(ctx *c, const Onnx__NodeProto *n) {
    static const char *const ok[] = {"start", "end", NULL};
    value *x;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x))) return rc;
    if (!x) return node_err(c, n, DYN_EFORMAT, "input 0 is missing");
    int64_t d1[MAX_CONST_DIMS], d2[MAX_CONST_DIMS], r, st, en;
    if (x->is_const) {
        if (x->c.bexp >= 0)
            return node_err(c, n, DYN_EUNSUP, "Shape of a constant expanded along the batch");
        r = x->c.ndim;
        for (int d = 0; d < r; d++) d1[d] = d2[d] = x->c.dims[d];
    } else {
        r = x->lay.nd;
        int bd = lay_bdim(&x->lay);
        for (int d = 0; d < r; d++) {
            d1[d] = d2[d] = lay_dim(&x->lay, d);
            if (d == bd) {
                d1[d] *= SB1;
                d2[d] *= SB2;
            }
        }
    }
    if ((rc = attr_int(c, n, "start", 0, &st)) || (rc = attr_int(c, n, "end", r, &en))) return rc;
    if (st < 0) st += r;
    if (en < 0) en += r;
    st = DYN_MAX(0, DYN_MIN(st, r));
    en = DYN_MAX(st, DYN_MIN(en, r));
    cst k;
    int64_t len = en - st;
    if ((rc = cst_alloc(c, n, &k, 0, 1, &len))) return rc;
    for (int64_t i = 0; i < len; i++) {
        k.i[i] = d1[st + i];
        k.i2[i] = d2[st + i];
    }
    return def_const(c, n, 0, &k);
}

/* A constant input that must be there. */
int need_const(ctx *c, const Onnx__NodeProto *n, size_t i, value **v) {
    int rc = node_in(c, n, i, v);
    if (rc) return rc;
    if (!*v) return node_err(c, n, DYN_EFORMAT, "input %zu is missing", i);
    if (!(*v)->is_const)
        return node_err(c, n, DYN_EUNSUP,
                        "input %zu must be a constant or computed from shapes only (a value "
                        "computed from the data is not supported here)",
                        i);
    return 0;
}

int cst_copy(ctx *c, const Onnx__NodeProto *n, const cst *s, cst *d) {
    int rc = cst_alloc(c, n, d, s->is_float, s->ndim, s->dims);
    if (rc) return rc;
    size_t cnt = (size_t)s->numel;
    if (s->is_float) memcpy(d->f, s->f, cnt * sizeof(float));
    else {
        memcpy(d->i, s->i, cnt * sizeof(int64_t));
        memcpy(d->i2, s->i2, cnt * sizeof(int64_t));
    }
    d->bexp = s->bexp;
    return 0;
}

int op_cast(ctx *c, const Onnx__NodeProto *n) {
    static const char *const ok[] = {"to", "saturate", NULL};
    value *x;
    int rc;
    int64_t to;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = attr_int(c, n, "to", 0, &to)))
        return rc;
    if (!x) return node_err(c, n, DYN_EFORMAT, "input 0 is missing");
    int want_f = to == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    if (!want_f && to != ONNX__TENSOR_PROTO__DATA_TYPE__INT64 &&
        to != ONNX__TENSOR_PROTO__DATA_TYPE__INT32 && to != ONNX__TENSOR_PROTO__DATA_TYPE__BOOL)
        return node_err(c, n, DYN_EUNSUP, "cast to data type %lld is not supported", (long long)to);
    if (!x->is_const) {
        if (!want_f) return node_err(c, n, DYN_EUNSUP, "casting an activation to integers");
        return node_alias(c, n, x);
    }
    cst k;
    if (x->c.is_float == want_f) {
        if ((rc = cst_copy(c, n, &x->c, &k))) return rc;
        return def_const(c, n, 0, &k);
    }
    if ((rc = cst_alloc(c, n, &k, want_f, x->c.ndim, x->c.dims))) return rc;
    for (int64_t e = 0; e < k.numel; e++) {
        if (want_f) {
            if (x->c.i[e] != x->c.i2[e]) {
                cst_free(&k);
                return node_err(c, n, DYN_EUNSUP, "casting a batch-dependent size to FLOAT");
            }
            k.f[e] = (float)x->c.i[e];
        } else {
            /* floats are finite (checked when read); beyond int64_t a cast is undefined */
            if (!(x->c.f[e] > -0x1p63f && x->c.f[e] < 0x1p63f)) {
                cst_free(&k);
                return node_err(c, n, DYN_EINVAL, "casting %g to INT64 overflows",
                                (double)x->c.f[e]);
            }
            k.i[e] = k.i2[e] = (int64_t)x->c.f[e];
        }
    }
    return def_const(c, n, 0, &k);
}

int op_constant_of_shape(ctx *c, const Onnx__NodeProto *n) {
    static const char *const ok[] = {"value", NULL};
    value *s;
    int rc;
    int64_t dims[MAX_CONST_DIMS], nd;
    if ((rc = attrs_check(c, n, ok)) || (rc = need_const(c, n, 0, &s)) ||
        (rc = cst_fixed_ints(c, n, s, "the shape", dims, MAX_CONST_DIMS, &nd)))
        return rc;
    cst v = {0};
    const Onnx__AttributeProto *a = attr_get(n, "value");
    if (a) {
        if (!a->t) return node_err(c, n, DYN_EFORMAT, "attribute 'value' must be a tensor");
        if ((rc = cst_from_tensor(c, a->t, "its value", &v)))
            return node_err(c, n, rc, "%s", c->err ? c->err->msg : "");
        if (v.numel != 1) {
            cst_free(&v);
            return node_err(c, n, DYN_EFORMAT, "attribute 'value' must hold one element");
        }
    }
    cst k;
    if ((rc = cst_alloc(c, n, &k, a ? v.is_float : 1, (int)nd, dims))) {
        cst_free(&v);
        return rc;
    }
    for (int64_t e = 0; e < k.numel; e++) {
        if (k.is_float) k.f[e] = a ? v.f[0] : 0.0f;
        else k.i[e] = k.i2[e] = v.i[0];
    }
    cst_free(&v);
    return def_const(c, n, 0, &k);
}

int op_where(ctx *c, const Onnx__NodeProto *n) {
    static const char *const ok[] = {NULL};
    value *v[3];
    int rc;
    char sb[96];
    if ((rc = attrs_check(c, n, ok))) return rc;
    for (size_t i = 0; i < 3; i++)
        if ((rc = need_const(c, n, i, &v[i]))) return rc;
    if (v[0]->c.is_float || v[1]->c.is_float != v[2]->c.is_float)
        return node_err(c, n, DYN_EUNSUP, "needs a boolean condition and inputs of one type");
    int nd, nd2;
    int64_t d1[MAX_CONST_DIMS], d2[MAX_CONST_DIMS];
    cst tmp;
    if (bcast_dims(&v[1]->c, &v[2]->c, &nd, d1)) goto bad;
    memset(&tmp, 0, sizeof tmp);
    tmp.ndim = nd;
    memcpy(tmp.dims, d1, (size_t)nd * sizeof *d1);
    if (bcast_dims(&v[0]->c, &tmp, &nd2, d2)) goto bad;
    cst k;
    if ((rc = cst_alloc(c, n, &k, v[1]->c.is_float, nd2, d2))) return rc;
    for (int64_t e = 0; e < k.numel; e++) {
        int64_t ic = bcast_index(&v[0]->c, nd2, d2, e);
        const value *src = v[0]->c.i[ic] ? v[1] : v[2];
        if (v[0]->c.i[ic] != v[0]->c.i2[ic]) {
            cst_free(&k);
            return node_err(c, n, DYN_EUNSUP, "the condition depends on the batch size");
        }
        int64_t is = bcast_index(&src->c, nd2, d2, e);
        if (k.is_float) k.f[e] = src->c.f[is];
        else {
            k.i[e] = src->c.i[is];
            k.i2[e] = src->c.i2[is];
        }
    }
    return def_const(c, n, 0, &k);
bad:
    return node_err(c, n, DYN_EINVAL, "input shapes do not broadcast (%s)",
                    cst_shape_txt(&v[0]->c, sb, sizeof sb));
}

/* Expand: of a constant to a shape that grows it along the batch (ViT's class token, to be
 * concatenated with the tokens), or a real broadcast of a constant; of an activation only when
 * it changes nothing. */
int op_expand(ctx *c, const Onnx__NodeProto *n) {
    static const char *const ok[] = {NULL};
    value *x, *s;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = need_const(c, n, 1, &s)))
        return rc;
    if (!x) return node_err(c, n, DYN_EFORMAT, "input 0 is missing");
    if (s->c.is_float || s->c.ndim != 1 || s->c.numel > MAX_CONST_DIMS)
        return node_err(c, n, DYN_EUNSUP, "the shape must be 1-D INT64 of at most %d values",
                        MAX_CONST_DIMS);
    int64_t t[MAX_CONST_DIMS];
    int bdim = -1, nt = (int)s->c.numel;
    for (int d = 0; d < nt; d++) {
        int sym = cst_sym(&s->c, d, &t[d]);
        if (sym < 0 || (sym == 1 && (t[d] != 1 || bdim >= 0)))
            return node_err(c, n, DYN_EUNSUP, "expands to a size that is not a batch or fixed");
        if (sym == 1) {
            bdim = d;
            t[d] = 1;
        }
        if (t[d] < 0) return node_err(c, n, DYN_EINVAL, "expands to a negative size");
    }
    if (!x->is_const) {
        int64_t dims[MAX_CONST_DIMS];
        lay_shape(&x->lay, dims);
        int grows = nt > x->lay.nd;
        for (int d = 0; !grows && d < nt; d++) {
            int xd = d + x->lay.nd - nt;
            grows = t[d] != 1 && dims[xd] != t[d];
        }
        if (grows)
            return node_err(c, n, DYN_EUNSUP, "expanding an activation to a larger shape");
        return def_view(c, n, 0, x, 0, &x->lay);
    }
    cst shp;
    memset(&shp, 0, sizeof shp);
    shp.ndim = nt;
    memcpy(shp.dims, t, (size_t)nt * sizeof *t);
    int nd;
    int64_t dims[MAX_CONST_DIMS];
    char sb[96];
    if (bcast_dims(&x->c, &shp, &nd, dims))
        return node_err(c, n, DYN_EINVAL, "constant of shape %s does not expand to the shape",
                        cst_shape_txt(&x->c, sb, sizeof sb));
    cst k;
    if ((rc = cst_alloc(c, n, &k, x->c.is_float, nd, dims))) return rc;
    for (int64_t e = 0; e < k.numel; e++) {
        int64_t i = bcast_index(&x->c, nd, dims, e);
        if (k.is_float) k.f[e] = x->c.f[i];
        else {
            k.i[e] = x->c.i[i];
            k.i2[e] = x->c.i2[i];
        }
    }
    if (bdim >= 0) {
        if (!k.is_float) {
            cst_free(&k);
            return node_err(c, n, DYN_EUNSUP, "expanding an INT64 constant along the batch");
        }
        k.bexp = bdim + (nd - nt);
    }
    return def_const(c, n, 0, &k);
}

/* ---- Constant nodes ---- */

int op_constant(ctx *c, const Onnx__NodeProto *n) {
    if (n->n_attribute != 1)
        return node_err(c, n, DYN_EFORMAT, "needs exactly one attribute, has %zu", n->n_attribute);
    const Onnx__AttributeProto *a = n->attribute[0];
    char ab[64];
    if (n->n_output < 1 || !n->output[0][0]) return node_err(c, n, DYN_EFORMAT, "has no output");
    int k = val_add(c, n->output[0]);
    if (k < 0) return node_err(c, n, k, "%s", c->err ? c->err->msg : "");
    value *v = &c->vals[k];
    v->is_const = 1;
    cst *t = &v->c;
    const char *an = a->name ? a->name : "";
    t->bexp = -1;
    if (strcmp(an, "value") == 0 && a->t) {
        int rc = cst_from_tensor(c, a->t, "its value", t);
        return rc ? node_err(c, n, rc, "%s", c->err ? c->err->msg : "") : 0;
    }
    int is_f = strcmp(an, "value_float") == 0 || strcmp(an, "value_floats") == 0;
    int is_i = strcmp(an, "value_int") == 0 || strcmp(an, "value_ints") == 0;
    if (!is_f && !is_i)
        return node_err(c, n, DYN_EUNSUP, "attribute '%s' is not supported", pr(an, ab, sizeof ab));
    int list = an[strlen(an) - 1] == 's';
    size_t cnt = list ? (is_f ? a->n_floats : a->n_ints) : 1;
    t->is_float = is_f;
    t->ndim = list ? 1 : 0;
    t->dims[0] = (int64_t)cnt;
    t->numel = (int64_t)cnt;
    if (is_f) {
        t->f = malloc((cnt ? cnt : 1) * sizeof(float));
    } else {
        t->i = malloc((cnt ? cnt : 1) * sizeof(int64_t));
        t->i2 = malloc((cnt ? cnt : 1) * sizeof(int64_t));
    }
    if (!t->f && (!t->i || !t->i2)) return node_err(c, n, DYN_ENOMEM, "out of memory");
    for (size_t i = 0; i < cnt; i++) {
        if (is_f)
            t->f[i] = list ? a->floats[i] : a->f;
        else
            t->i[i] = t->i2[i] = list ? a->ints[i] : a->i;
        if (is_f && !isfinite(t->f[i]))
            return node_err(c, n, DYN_EINVAL, "value holds a NaN or Inf");
    }
    return 0;
}
