/* onnx_layout.c — ONNX import: layouts, how an ONNX value's logical dims map onto the memory of
 * the engine tensor holding it (the `layout` type in onnx_impl.h), and the permute layers that
 * move a value into the layout an operator needs. Views (Transpose, Reshape, Squeeze, Unsqueeze)
 * only rewrite the description; need_canon / make_plain emit the copies.
 */
#include <string.h>

#include "onnx_impl.h"

/* ---- layouts ------------------------------------------------------------------------------ */

/* The plain layout of an engine shape (batch 1 in d[0]). */
void lay_plain(layout *L, const dyn_shape *s) {
    memset(L, 0, sizeof *L);
    L->na = 1;
    L->a[0] = 1;
    L->nd = s->ndim;
    L->g[0] = 1;
    for (int d = 1; d < s->ndim; d++)
        if (s->d[d] != 1 && L->na < MAXA) {
            L->lo[L->na] = L->na;
            L->a[L->na++] = s->d[d];
            L->g[d] = 1;
        }
}

/* Index in lo[] of the first atom of dim d. */
int lay_first(const layout *L, int d) {
    int j = 0;
    for (int e = 0; e < d; e++) j += L->g[e];
    return j;
}

/* Size of dim d with batch 1. */
int64_t lay_dim(const layout *L, int d) {
    int64_t s = 1;
    for (int j = lay_first(L, d), e = 0; e < L->g[d]; e++) s *= L->a[L->lo[j + e]];
    return s;
}

/* The dim holding the batch. */
int lay_bdim(const layout *L) {
    for (int d = 0, j = 0; d < L->nd; j += L->g[d++])
        for (int e = 0; e < L->g[d]; e++)
            if (L->lo[j + e] == 0) return d;
    return -1;
}

int lay_eq(const layout *A, const layout *B) {
    if (A->na != B->na || A->nd != B->nd) return 0;
    for (int i = 0; i < A->na; i++)
        if (A->a[i] != B->a[i] || A->lo[i] != B->lo[i]) return 0;
    for (int d = 0; d < A->nd; d++)
        if (A->g[d] != B->g[d]) return 0;
    return 1;
}

/* Removes memory atom m (size 1, not the batch) from the description. */
static void lay_drop_atom(layout *L, int m) {
    int j = 0, d = 0;
    while (L->lo[j] != m) j++;
    for (int acc = 0; acc + L->g[d] <= j; acc += L->g[d]) d++;
    L->g[d]--;
    for (int k = j; k + 1 < L->na; k++) L->lo[k] = L->lo[k + 1];
    for (int k = m; k + 1 < L->na; k++) L->a[k] = L->a[k + 1];
    L->na--;
    for (int k = 0; k < L->na; k++)
        if (L->lo[k] > m) L->lo[k]--;
}

/* Drops size-1 atoms and merges atoms adjacent both in memory and within one logical dim. */
void lay_normalize(layout *L) {
    for (int m = L->na - 1; m >= 1; m--)
        if (L->a[m] == 1) lay_drop_atom(L, m);
    for (int d = 0, j = 0; d < L->nd; j += L->g[d++])
        for (int e = 0; e + 1 < L->g[d];) {
            int m = L->lo[j + e];
            if (m != 0 && L->lo[j + e + 1] == m + 1) {
                L->a[m] *= L->a[m + 1];
                L->a[m + 1] = 1;
                lay_drop_atom(L, m + 1);
            } else {
                e++;
            }
        }
}

/* Memory order with the batch first and the other atoms in logical order. */
void lay_canon_order(const layout *L, int *order) {
    int k = 1;
    order[0] = 0;
    for (int j = 0; j < L->na; j++)
        if (L->lo[j] != 0) order[k++] = L->lo[j];
}

int lay_is_canon(const layout *L) {
    int order[MAXA];
    lay_canon_order(L, order);
    for (int j = 0; j < L->na; j++)
        if (order[j] != j) return 0;
    return 1;
}

/* Engine shape of the canonical form: the batch, then per logical dim its size (a dim holding
 * the batch gives its other atoms, or nothing when it is the batch alone). emap[d] = the engine
 * axis of dim d (-1 for the batch alone). Fails (-1) past DYN_MAX_DIMS. */
int lay_canon_shape(const layout *L, dyn_shape *s, int *emap) {
    int bd = lay_bdim(L);
    memset(s, 0, sizeof *s);
    s->ndim = 1;
    s->d[0] = 1;
    for (int d = 0; d < L->nd; d++) {
        if (d == bd && L->g[d] == 1) {
            if (emap) emap[d] = -1;
            continue;
        }
        if (s->ndim == DYN_MAX_DIMS) return -1;
        if (emap) emap[d] = s->ndim;
        s->d[s->ndim++] = lay_dim(L, d);
    }
    return 0;
}

/* The engine shape a node producing layout L gets: canonical when L is, else flat. */
void lay_engine_shape(const layout *L, dyn_shape *s) {
    if (lay_is_canon(L) && lay_canon_shape(L, s, NULL) == 0 && s->ndim >= 2) return;
    memset(s, 0, sizeof *s);
    s->ndim = 2;
    s->d[0] = 1;
    s->d[1] = 1;
    for (int m = 1; m < L->na; m++) s->d[1] *= L->a[m];
}

/* Logical shape with batch 1 into dims (nd values). */
void lay_shape(const layout *L, int64_t *dims) {
    for (int d = 0; d < L->nd; d++) dims[d] = lay_dim(L, d);
}

/* "[N, 16, 3, 2, 8]"-style text of a value's logical shape (N marks the batch dim). */
const char *lay_txt(const layout *L, char *buf, size_t n) {
    size_t off = (size_t)snprintf(buf, n, "[");
    int bd = lay_bdim(L);
    for (int d = 0; d < L->nd && off < n; d++) {
        int64_t s = lay_dim(L, d);
        if (d == bd)
            off += s == 1 ? (size_t)snprintf(buf + off, n - off, "%sN", d ? ", " : "")
                          : (size_t)snprintf(buf + off, n - off, "%sN*%lld", d ? ", " : "",
                                             (long long)s);
        else
            off += (size_t)snprintf(buf + off, n - off, "%s%lld", d ? ", " : "", (long long)s);
    }
    if (off < n) snprintf(buf + off, n - off, "]");
    return buf;
}

/* Transpose by perm (validated by the caller). */
void lay_transpose(layout *L, const int64_t *perm) {
    layout o = *L;
    int k = 0;
    for (int d = 0; d < L->nd; d++) {
        int s = (int)perm[d], j = lay_first(L, s);
        o.g[d] = L->g[s];
        for (int e = 0; e < L->g[s]; e++) o.lo[k++] = L->lo[j + e];
    }
    *L = o;
}

/* Splits memory atom m into (first, a[m] / first). */
static int lay_split_atom(layout *L, int m, int64_t first) {
    if (L->na == MAXA) return -1;
    for (int k = L->na; k > m + 1; k--) L->a[k] = L->a[k - 1];
    L->a[m + 1] = L->a[m] / first;
    L->a[m] = first;
    int j = 0;
    while (L->lo[j] != m) j++;
    for (int k = 0; k < L->na; k++)
        if (L->lo[k] > m) L->lo[k]++;
    for (int k = L->na; k > j + 1; k--) L->lo[k] = L->lo[k - 1];
    L->lo[j + 1] = m + 1;
    L->na++;
    for (int d = 0, acc = 0; d < L->nd; acc += L->g[d++])
        if (j < acc + L->g[d]) {
            L->g[d]++;
            break;
        }
    return 0;
}

/* Regroups the atoms into nt dims of sizes t[] (batch 1); tb[d] marks the dim that holds the
 * batch. Splits atoms where a dim ends inside one. Returns 0, or -1 when the atoms' order does
 * not allow it (L is then unspecified). */
int lay_reshape(layout *L, const int64_t *t, const int *tb, int nt) {
    int j = 0, batch_done = 0;
    int g[MAX_CONST_DIMS];
    for (int d = 0; d < nt; d++) {
        int64_t need = t[d];
        g[d] = 0;
        for (;;) {
            int want_batch = tb[d] && !batch_done;
            if (need == 1 && !want_batch) break;
            if (j >= L->na) return -1;
            int m = L->lo[j];
            if (m == 0) {
                if (!tb[d]) return -1;
                batch_done = 1;
            } else if (need == 1) {
                return -1; /* the batch must come next in this dim */
            } else if (need % L->a[m] == 0) {
                need /= L->a[m];
            } else if (L->a[m] % need == 0) {
                if (lay_split_atom(L, m, need)) return -1;
                need = 1;
            } else {
                return -1;
            }
            g[d]++;
            j++;
        }
    }
    if (j != L->na || !batch_done) return -1;
    L->nd = nt;
    memcpy(L->g, g, (size_t)nt * sizeof *g);
    return 0;
}

/* Maps each per-sample element in memory order to its flat logical index (row-major over the
 * logical dims, batch dim counted without the batch): out[f] for f < per-sample numel. */
void lay_logical_index(const layout *L, int64_t *out, int64_t numel) {
    /* logical stride of each memory atom */
    int64_t lst[MAXA] = {0};
    int64_t s = 1;
    for (int j = L->na - 1; j >= 0; j--) {
        lst[L->lo[j]] = s;
        s *= L->a[L->lo[j]];
    }
    int64_t idx[MAXA] = {0};
    for (int64_t f = 0; f < numel; f++) {
        int64_t li = 0;
        for (int m = 1; m < L->na; m++) li += idx[m] * lst[m];
        out[f] = li;
        for (int m = L->na - 1; m >= 1; m--) {
            if (++idx[m] < L->a[m]) break;
            idx[m] = 0;
        }
    }
}

/* ---- building layouts, and the layers that change them --------------------------------------- */

/* Canonical layout of logical dims dims[0..nd-1] (batch 1) whose dim bd holds the batch, after
 * its other atom when bafter (the (T, N) of a [T*N, E] view). */
void lay_build(layout *L, int nd, const int64_t *dims, int bd, int bafter) {
    memset(L, 0, sizeof *L);
    L->na = 1;
    L->a[0] = 1;
    L->nd = nd;
    int j = 0;
    for (int d = 0; d < nd; d++) {
        int has = dims[d] != 1;
        if (d == bd && !bafter) L->lo[j++] = 0;
        if (has) {
            L->a[L->na] = dims[d];
            L->lo[j++] = L->na++;
        }
        if (d == bd && bafter) L->lo[j++] = 0;
        L->g[d] = has + (d == bd);
    }
}

int lay_bafter(const layout *L) {
    int bd = lay_bdim(L);
    return L->lo[lay_first(L, bd)] != 0;
}

/* Canonical layout of L's logical shape with dim d resized to size (remove: dropped). */
void lay_redim(layout *L, int d, int64_t size, int remove) {
    int64_t dims[MAX_CONST_DIMS];
    int bd = lay_bdim(L), ba = lay_bafter(L), nd = L->nd;
    lay_shape(L, dims);
    dims[d] = size;
    if (remove) {
        for (int e = d; e + 1 < nd; e++) dims[e] = dims[e + 1];
        nd--;
        if (bd > d) bd--;
    }
    lay_build(L, nd, dims, bd, ba);
}

int lay_plain_ok(const value *v) {
    dyn_shape s;
    return lay_is_canon(&v->lay) && lay_bdim(&v->lay) == 0 && v->lay.lo[0] == 0 &&
           lay_canon_shape(&v->lay, &s, NULL) == 0 && dyn_shape_eq(&s, &v->shape) &&
           s.ndim == v->lay.nd;
}

json_t *jints(const int64_t *v, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

/* Appends layer l reading activation x without defining an ONNX value: *out becomes the
 * anonymous result with layout lay. */
int add_anon(ctx *c, const Onnx__NodeProto *n, dyn_layer *l, const value *x,
             const layout *lay, value *out) {
    int in = x->node;
    int k = dyn_model_add(c->m, l, &in, 1, c->err);
    if (k < 0) return node_err(c, n, k, "%s", c->err ? c->err->msg : "");
    dyn_shape sh;
    if (l->ops->infer(l, &x->shape, &sh, c->err))
        return node_err(c, n, DYN_EINVAL, "%s", c->err ? c->err->msg : "");
    c->nshape[k] = sh;
    *out = *x;
    out->node = k;
    out->shape = sh;
    out->lay = *lay;
    return 0;
}

/* A permute layer moving x's atoms into memory order `order` (order[0] = 0), slicing memory
 * atom sa (-1: none) to len elements start, start+step, ...; drop >= 0 removes that logical
 * dim (sliced to one element) from the result's layout. The result (in *out) gets the engine
 * shape its layout calls for. */
int emit_permute(ctx *c, const Onnx__NodeProto *n, const value *x, const int *order, int sa,
                 int64_t start, int64_t len, int64_t step, int drop, value *out) {
    const layout *L = &x->lay;
    layout NL = *L;
    int inv[MAXA];
    for (int j = 0; j < L->na; j++) {
        inv[order[j]] = j;
        NL.a[j] = order[j] == sa ? len : L->a[order[j]];
    }
    for (int j = 0; j < L->na; j++) NL.lo[j] = inv[L->lo[j]];
    lay_normalize(&NL);
    if (drop >= 0) {
        DYN_ASSERT(NL.g[drop] == 0);
        for (int e = drop; e + 1 < NL.nd; e++) NL.g[e] = NL.g[e + 1];
        NL.nd--;
    }
    dyn_shape eng;
    lay_engine_shape(&NL, &eng);
    int64_t dims[MAXA], perm[MAXA];
    for (int j = 1; j < L->na; j++) {
        dims[j - 1] = L->a[j];
        perm[j - 1] = order[j] - 1;
    }
    int k = L->na - 1;
    if (k == 0) { /* a sample of one element */
        dims[0] = 1;
        perm[0] = 0;
        k = 1;
    }
    json_t *a = json_object();
    if (a) {
        json_object_set_new(a, "dims", jints(dims, k));
        json_object_set_new(a, "perm", jints(perm, k));
        json_object_set_new(a, "shape", jints(eng.d + 1, eng.ndim - 1));
        if (sa > 0) {
            json_object_set_new(a, "axis", json_integer(sa - 1));
            json_object_set_new(a, "start", json_integer(start));
            json_object_set_new(a, "len", json_integer(len));
            json_object_set_new(a, "step", json_integer(step));
        }
    }
    dyn_layer *l = make_layer(c, n, c->cur, "permute", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    return add_anon(c, n, l, x, &NL, out);
}

/* Rewrites activation v (in place: later readers share it) into its canonical layout. */
int need_canon(ctx *c, const Onnx__NodeProto *n, value *v) {
    char sb[96];
    dyn_shape want;
    if (lay_canon_shape(&v->lay, &want, NULL))
        return node_err(c, n, DYN_EUNSUP,
                        "the value of shape %s needs more than %d dimensions with the batch "
                        "first",
                        lay_txt(&v->lay, sb, sizeof sb), DYN_MAX_DIMS);
    if (lay_is_canon(&v->lay) && dyn_shape_eq(&want, &v->shape)) return 0;
    int order[MAXA];
    lay_canon_order(&v->lay, order);
    value out;
    int rc = emit_permute(c, n, v, order, -1, 0, 1, 1, -1, &out);
    if (rc) return rc;
    if (!dyn_shape_eq(&out.shape, &want)) { /* e.g. a rank-1 canonical shape: reshape once more */
        layout keep = out.lay;
        json_t *a = json_object();
        int64_t nf = dyn_shape_numel(&out.shape);
        if (a) {
            json_object_set_new(a, "dims", jints(&nf, 1));
            json_object_set_new(a, "shape", jints(want.d + 1, want.ndim - 1));
        }
        if (want.ndim < 2) {
            json_decref(a);
            return node_err(c, n, DYN_EUNSUP, "a value of shape %s has no dimension besides the "
                            "batch", lay_txt(&v->lay, sb, sizeof sb));
        }
        dyn_layer *l = make_layer(c, n, c->cur, "permute", a);
        if (!l) return c->err ? c->err->code : DYN_EINVAL;
        if ((rc = add_anon(c, n, l, &out, &keep, &out))) return rc;
    }
    v->node = out.node;
    v->shape = out.shape;
    v->lay = out.lay;
    return 0;
}

int make_plain(ctx *c, const Onnx__NodeProto *n, value *v) {
    char sb[96];
    if (lay_plain_ok(v)) return 0;
    int rc = need_canon(c, n, v);
    if (rc) return rc;
    if (!lay_plain_ok(v))
        return node_err(c, n, DYN_EUNSUP,
                        "input of shape %s: this operator needs the batch as the leading "
                        "dimension on its own",
                        lay_txt(&v->lay, sb, sizeof sb));
    return 0;
}

/* Defines output o of node n as activation x with layout lay: a view of table value x (no
 * layer), or, with anon, the anonymous result of a layer just added. */
int def_view(ctx *c, const Onnx__NodeProto *n, size_t o, const value *x, int anon,
             const layout *lay) {
    char ob[96];
    if (o >= n->n_output || !n->output[o][0]) return node_err(c, n, DYN_EFORMAT, "has no output");
    if (o == 0 && strcmp(n->op_type, "Split"))
        for (size_t k = 1; k < n->n_output; k++)
            if (n->output[k][0])
                return node_err(c, n, DYN_EUNSUP, "output %zu ('%s') is not supported", k,
                                pr(n->output[k], ob, sizeof ob));
    int rc;
    if (anon) {
        rc = val_act(c, n->output[o], x->node, &x->shape);
    } else {
        rc = val_alias(c, n->output[o], x);
    }
    if (rc) return node_err(c, n, rc, "%s", c->err ? c->err->msg : "");
    val_find(c, n->output[o])->lay = *lay;
    return 0;
}
