/* onnx.c — ONNX import (see onnx.h for what is supported).
 *
 * Design: one pass over the graph's nodes in file order. Every ONNX value name maps (hash
 * table) to either an activation — an engine node index (-1 = the model input) and its shape
 * with batch 1 — or a constant (an initializer or a Constant node's output, decoded to float or
 * int64). A node's inputs must already be in the table: that is the topological-order check,
 * and it also rejects cycles. Ops that compute nothing (Identity, Dropout, a final Softmax)
 * make their output name an alias of their input.
 *
 * Folding Add(activation, constant) into the producer's bias is only sound when nothing else
 * reads the producer's output. Readers are counted before the pass (node inputs + graph
 * outputs per name); aliases hand their own readers to the value they alias (its `root`), so
 * root->uses is the number of readers of that engine node still to come plus those already
 * seen.
 */
#include "onnx.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "io_impl.h"
#include "onnx.pb-c.h"

#define MAX_CONST_DIMS 8
/* Bound on kernel, stride, dilation and pad values (keeps the size arithmetic exact). */
#define SPATIAL_MAX (1 << 20)

/* Shape computations are folded with the batch size symbolic: every INT64 constant holds its
 * values for two batch sizes (SB1 in i, SB2 in i2); a size that differs between them is k times
 * the batch (k = i / SB1 = i2 / SB2), anything else that differs is not linear in the batch. */
#define SB1 3
#define SB2 5

typedef struct cst {
    int ndim;
    int64_t dims[MAX_CONST_DIMS];
    int64_t numel;
    int is_float; /* else int64 */
    float *f;     /* owned, numel floats (is_float) */
    int64_t *i;   /* owned, numel int64 (!is_float), evaluated at batch SB1 */
    int64_t *i2;  /* owned, the same at batch SB2 */
    int bexp;     /* FLOAT expanded along the batch (Expand to [N, ...]): the dim, else -1 */
} cst;

/* Where an activation's elements live. The tensor of an engine node is, per sample, a row-major
 * sequence of "atoms" (a[1..na-1], in memory order; atom 0 is the batch, size 1 here); the ONNX
 * value is those atoms in logical order lo[] (lo[j] = memory index), grouped into nd dims of
 * g[d] consecutive atoms each (a dim of size 1 has none). Transpose, Reshape, Squeeze and
 * Unsqueeze only rewrite this description; ops that need a layout (matmul, the row-wise ops)
 * ask for the "canonical" one: memory in logical order with the batch moved first (a permute
 * layer when it differs). A plain value (what the CNN ops see) has memory = logical order, the
 * batch alone in dim 0 and an engine shape equal to its logical shape. */
#define MAXA 8
typedef struct layout {
    int na, nd;
    int64_t a[MAXA];
    int lo[MAXA];
    int g[MAX_CONST_DIMS];
} layout;

typedef struct value {
    const char *name; /* borrowed from the parsed proto */
    int is_const;
    cst c;           /* is_const */
    int node;        /* activation: engine node, -1 = model input */
    dyn_shape shape; /* activation: the engine node's shape with batch 1 */
    layout lay;      /* activation: how the ONNX value maps onto it */
    int root;        /* activation: value index counting the node's readers */
    int uses;        /* readers (meaningful on roots) */
} value;

typedef struct strmap {
    size_t cap; /* power of two */
    const char **keys;
    int *vals;
} strmap;

typedef struct ctx {
    dyn_err *err;
    const Onnx__GraphProto *g;
    int64_t opset;
    dyn_model *m;
    value *vals;
    int nvals, capvals;
    strmap vmap;       /* name -> index in vals */
    strmap umap;       /* name -> number of readers */
    dyn_shape *nshape; /* per engine node: output shape with batch 1 */
    int softmax_dropped;
    int cur;             /* index of the node being converted (layer names) */
    unsigned char *skip; /* per ONNX node: already converted by a fused pattern */
} ctx;

/* ---- small helpers ---------------------------------------------------------------------- */

static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static int strmap_init(strmap *m, size_t n) {
    size_t cap = 16;
    while (cap < 2 * n + 16) cap *= 2;
    m->cap = cap;
    m->keys = calloc(cap, sizeof *m->keys);
    m->vals = calloc(cap, sizeof *m->vals);
    return m->keys && m->vals ? 0 : DYN_ENOMEM;
}

static void strmap_free(strmap *m) {
    free(m->keys);
    free(m->vals);
}

/* The value slot of `key`; with insert, a missing key is added with value 0 (the table was
 * sized for every key, so there is always room). NULL when absent and !insert. */
static int *strmap_slot(strmap *m, const char *key, int insert) {
    size_t i = hash_str(key) & (m->cap - 1);
    for (size_t probes = 0; probes < m->cap; probes++, i = (i + 1) & (m->cap - 1)) {
        if (!m->keys[i]) {
            if (!insert) return NULL;
            m->keys[i] = key;
            m->vals[i] = 0;
            return &m->vals[i];
        }
        if (strcmp(m->keys[i], key) == 0) return &m->vals[i];
    }
    return NULL;
}

static const char *str_or(const char *s, const char *def) { return s && *s ? s : def; }

static const char *pr(const char *s, char *buf, size_t n) {
    return dyn__printable(s ? s : "", buf, n);
}

/* "node 'name' (Op): <fmt>" with hostile-safe name and op. */
static int node_err(ctx *c, const Onnx__NodeProto *n, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static int node_err(ctx *c, const Onnx__NodeProto *n, int code, const char *fmt, ...) {
    char what[384], nb[96], ob[48];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return dyn_err_set(c->err, code, "node '%s' (%s): %s",
                       pr(str_or(n->name, "(unnamed)"), nb, sizeof nb),
                       pr(n->op_type, ob, sizeof ob), what);
}

static const char *shape_txt(const dyn_shape *s, char *buf, size_t n) {
    return dyn_shape_str(s, buf, n);
}

/* ---- constants ---------------------------------------------------------------------------- */

static void cst_free(cst *k) {
    free(k->f);
    free(k->i);
    free(k->i2);
    k->f = NULL;
    k->i = NULL;
    k->i2 = NULL;
}

/* Decodes an ONNX TensorProto (FLOAT or INT64) into *k. `what` names it in messages. */
static int cst_from_tensor(ctx *c, const Onnx__TensorProto *t, const char *what, cst *k) {
    memset(k, 0, sizeof *k);
    if ((t->has_data_location && t->data_location == ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL) ||
        t->n_external_data > 0)
        return dyn_err_set(c->err, DYN_EUNSUP,
                           "%s is stored as external data, which is not supported (re-export the "
                           "model with every tensor inside the .onnx file)",
                           what);
    if (t->segment)
        return dyn_err_set(c->err, DYN_EUNSUP, "%s is segmented, which is not supported", what);
    if (t->n_dims > MAX_CONST_DIMS)
        return dyn_err_set(c->err, DYN_EUNSUP, "%s has %zu dimensions (at most %d supported)", what,
                           t->n_dims, MAX_CONST_DIMS);
    int64_t numel = 1;
    for (size_t d = 0; d < t->n_dims; d++) {
        if (t->dims[d] < 0 || t->dims[d] > DYN_TENSOR_MAX_NUMEL)
            return dyn_err_set(c->err, DYN_EFORMAT, "%s has dimension %zu = %lld", what, d,
                               (long long)t->dims[d]);
        numel *= t->dims[d];
        if (numel > DYN_TENSOR_MAX_NUMEL)
            return dyn_err_set(c->err, DYN_EFORMAT, "%s has more than %lld elements", what,
                               (long long)DYN_TENSOR_MAX_NUMEL);
        k->dims[d] = t->dims[d];
    }
    k->ndim = (int)t->n_dims;
    k->numel = numel;
    k->bexp = -1;
    int dt = t->has_data_type ? t->data_type : 0;
    if (dt != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT && dt != ONNX__TENSOR_PROTO__DATA_TYPE__INT64)
        return dyn_err_set(c->err, DYN_EUNSUP,
                           "%s has data type %d; only FLOAT (1) and, for shapes, INT64 (7) are "
                           "supported",
                           what, dt);
    k->is_float = dt == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    size_t esz = k->is_float ? 4 : 8;
    size_t have =
        t->has_raw_data ? t->raw_data.len / esz : (k->is_float ? t->n_float_data : t->n_int64_data);
    if (t->has_raw_data && t->raw_data.len % esz)
        return dyn_err_set(c->err, DYN_EFORMAT,
                           "%s: raw_data holds %zu bytes, not a multiple of %zu", what,
                           t->raw_data.len, esz);
    if ((int64_t)have != numel)
        return dyn_err_set(c->err, DYN_EFORMAT, "%s has %lld elements by its shape but holds %zu",
                           what, (long long)numel, have);
    size_t bytes = (size_t)(numel ? numel : 1) * esz;
    if (k->is_float) {
        k->f = malloc(bytes);
        if (!k->f) return dyn_err_set(c->err, DYN_ENOMEM, "out of memory reading %s", what);
        for (int64_t e = 0; e < numel; e++) {
            if (t->has_raw_data) {
                const uint8_t *p = t->raw_data.data + 4 * e;
                uint32_t u = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                             (uint32_t)p[3] << 24;
                memcpy(&k->f[e], &u, 4);
            } else {
                k->f[e] = t->float_data[e];
            }
            if (!isfinite(k->f[e]))
                return dyn_err_set(c->err, DYN_EINVAL, "%s holds a NaN or Inf at element %lld",
                                   what, (long long)e);
        }
    } else {
        k->i = malloc(bytes);
        if (!k->i) return dyn_err_set(c->err, DYN_ENOMEM, "out of memory reading %s", what);
        for (int64_t e = 0; e < numel; e++) {
            if (t->has_raw_data) {
                const uint8_t *p = t->raw_data.data + 8 * e;
                uint64_t u = 0;
                for (int b = 7; b >= 0; b--) u = u << 8 | p[b];
                memcpy(&k->i[e], &u, 8);
            } else {
                k->i[e] = t->int64_data[e];
            }
        }
        k->i2 = malloc(bytes);
        if (!k->i2) return dyn_err_set(c->err, DYN_ENOMEM, "out of memory reading %s", what);
        memcpy(k->i2, k->i, bytes);
    }
    return 0;
}

/* ---- layouts ------------------------------------------------------------------------------ */

/* The plain layout of an engine shape (batch 1 in d[0]). */
static void lay_plain(layout *L, const dyn_shape *s) {
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
static int lay_first(const layout *L, int d) {
    int j = 0;
    for (int e = 0; e < d; e++) j += L->g[e];
    return j;
}

/* Size of dim d with batch 1. */
static int64_t lay_dim(const layout *L, int d) {
    int64_t s = 1;
    for (int j = lay_first(L, d), e = 0; e < L->g[d]; e++) s *= L->a[L->lo[j + e]];
    return s;
}

/* The dim holding the batch. */
static int lay_bdim(const layout *L) {
    for (int d = 0, j = 0; d < L->nd; j += L->g[d++])
        for (int e = 0; e < L->g[d]; e++)
            if (L->lo[j + e] == 0) return d;
    return -1;
}

static int lay_eq(const layout *A, const layout *B) {
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
static void lay_normalize(layout *L) {
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
static void lay_canon_order(const layout *L, int *order) {
    int k = 1;
    order[0] = 0;
    for (int j = 0; j < L->na; j++)
        if (L->lo[j] != 0) order[k++] = L->lo[j];
}

static int lay_is_canon(const layout *L) {
    int order[MAXA];
    lay_canon_order(L, order);
    for (int j = 0; j < L->na; j++)
        if (order[j] != j) return 0;
    return 1;
}

/* Engine shape of the canonical form: the batch, then per logical dim its size (a dim holding
 * the batch gives its other atoms, or nothing when it is the batch alone). emap[d] = the engine
 * axis of dim d (-1 for the batch alone). Fails (-1) past DYN_MAX_DIMS. */
static int lay_canon_shape(const layout *L, dyn_shape *s, int *emap) {
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
static void lay_engine_shape(const layout *L, dyn_shape *s) {
    if (lay_is_canon(L) && lay_canon_shape(L, s, NULL) == 0 && s->ndim >= 2) return;
    memset(s, 0, sizeof *s);
    s->ndim = 2;
    s->d[0] = 1;
    s->d[1] = 1;
    for (int m = 1; m < L->na; m++) s->d[1] *= L->a[m];
}

/* Logical shape with batch 1 into dims (nd values). */
static void lay_shape(const layout *L, int64_t *dims) {
    for (int d = 0; d < L->nd; d++) dims[d] = lay_dim(L, d);
}

/* "[N, 16, 3, 2, 8]"-style text of a value's logical shape (N marks the batch dim). */
static const char *lay_txt(const layout *L, char *buf, size_t n) {
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
static void lay_transpose(layout *L, const int64_t *perm) {
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
static int lay_reshape(layout *L, const int64_t *t, const int *tb, int nt) {
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
static void lay_logical_index(const layout *L, int64_t *out, int64_t numel) {
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

/* ---- the value table ---------------------------------------------------------------------- */

static int uses_of(ctx *c, const char *name) {
    int *u = strmap_slot(&c->umap, name, 0);
    return u ? *u : 0;
}

/* Adds a value named `name` (must be new). Returns its index or a negative code. */
static int val_add(ctx *c, const char *name) {
    char nb[96];
    if (!name || !*name) return dyn_err_set(c->err, DYN_EFORMAT, "a value has an empty name");
    int *slot = strmap_slot(&c->vmap, name, 1);
    if (!slot) return dyn_err_set(c->err, DYN_ENOMEM, "value table full");
    if (*slot)
        return dyn_err_set(c->err, DYN_EFORMAT, "value '%s' is defined twice",
                           pr(name, nb, sizeof nb));
    if (c->nvals == c->capvals) return dyn_err_set(c->err, DYN_EFORMAT, "too many values");
    int k = c->nvals++;
    memset(&c->vals[k], 0, sizeof c->vals[k]);
    c->vals[k].name = name;
    c->vals[k].root = k;
    c->vals[k].uses = uses_of(c, name);
    *slot = k + 1; /* 0 = empty */
    return k;
}

static value *val_find(ctx *c, const char *name) {
    int *slot = strmap_slot(&c->vmap, name, 0);
    return slot && *slot ? &c->vals[*slot - 1] : NULL;
}

/* Makes `name` an activation produced by engine node `node`. */
static int val_act(ctx *c, const char *name, int node, const dyn_shape *shape) {
    int k = val_add(c, name);
    if (k < 0) return k;
    c->vals[k].node = node;
    c->vals[k].shape = *shape;
    lay_plain(&c->vals[k].lay, shape);
    return 0;
}

/* Makes `name` another name for `src` (Identity and friends); src's root takes over its
 * readers. The alias itself was one reader of src. */
static int val_alias(ctx *c, const char *name, const value *src) {
    int si = (int)(src - c->vals);
    int k = val_add(c, name);
    if (k < 0) return k;
    value *v = &c->vals[k], *s = &c->vals[si];
    if (s->is_const) {
        /* A constant alias shares nothing: copy. */
        cst *d = &v->c;
        *d = s->c;
        d->f = NULL;
        d->i = NULL;
        d->i2 = NULL;
        size_t n = (size_t)(s->c.numel ? s->c.numel : 1);
        if (s->c.is_float) {
            d->f = malloc(n * sizeof(float));
        } else {
            d->i = malloc(n * sizeof(int64_t));
            d->i2 = malloc(n * sizeof(int64_t));
        }
        if (!d->f && (!d->i || !d->i2)) return dyn_err_set(c->err, DYN_ENOMEM, "out of memory");
        if (d->f) memcpy(d->f, s->c.f, (size_t)s->c.numel * sizeof(float));
        if (d->i) memcpy(d->i, s->c.i, (size_t)s->c.numel * sizeof(int64_t));
        if (d->i2) memcpy(d->i2, s->c.i2, (size_t)s->c.numel * sizeof(int64_t));
        v->is_const = 1;
        return 0;
    }
    v->node = s->node;
    v->shape = s->shape;
    v->lay = s->lay;
    v->root = s->root;
    c->vals[v->root].uses += v->uses - 1;
    return 0;
}

/* ---- attributes --------------------------------------------------------------------------- */

static const Onnx__AttributeProto *attr_get(const Onnx__NodeProto *n, const char *name) {
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && strcmp(n->attribute[i]->name, name) == 0)
            return n->attribute[i];
    return NULL;
}

/* Fails on any attribute not in `allowed` (NULL-terminated). */
static int attrs_check(ctx *c, const Onnx__NodeProto *n, const char *const *allowed) {
    for (size_t i = 0; i < n->n_attribute; i++) {
        const Onnx__AttributeProto *a = n->attribute[i];
        char ab[64];
        if (a->ref_attr_name && *a->ref_attr_name)
            return node_err(c, n, DYN_EUNSUP, "attribute '%s' refers to a function attribute",
                            pr(a->name, ab, sizeof ab));
        int ok = 0;
        for (int k = 0; allowed[k] && !ok; k++) ok = a->name && strcmp(a->name, allowed[k]) == 0;
        if (!ok)
            return node_err(c, n, DYN_EUNSUP, "attribute '%s' is not supported",
                            pr(a->name, ab, sizeof ab));
    }
    return 0;
}

static int attr_type_is(const Onnx__AttributeProto *a, Onnx__AttributeProto__AttributeType t) {
    return a->has_type ? a->type == t : 1;
}

static int attr_int(ctx *c, const Onnx__NodeProto *n, const char *name, int64_t def, int64_t *out) {
    const Onnx__AttributeProto *a = attr_get(n, name);
    if (!a) {
        *out = def;
        return 0;
    }
    if (!attr_type_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT) || (!a->has_type && !a->has_i))
        return node_err(c, n, DYN_EFORMAT, "attribute '%s' must be an integer", name);
    *out = a->i;
    return 0;
}

static int attr_float(ctx *c, const Onnx__NodeProto *n, const char *name, double def, double *out) {
    const Onnx__AttributeProto *a = attr_get(n, name);
    if (!a) {
        *out = def;
        return 0;
    }
    if (!attr_type_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT) ||
        (!a->has_type && !a->has_f))
        return node_err(c, n, DYN_EFORMAT, "attribute '%s' must be a float", name);
    *out = a->f;
    return 0;
}

/* Reads an INTS attribute of exactly `len` values into out; absent -> *present = 0. */
static int attr_ints(ctx *c, const Onnx__NodeProto *n, const char *name, size_t len, int64_t *out,
                     int *present) {
    const Onnx__AttributeProto *a = attr_get(n, name);
    *present = 0;
    if (!a) return 0;
    if (!attr_type_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS))
        return node_err(c, n, DYN_EFORMAT, "attribute '%s' must be a list of integers", name);
    if (a->n_ints != len)
        return node_err(c, n, DYN_EUNSUP, "attribute '%s' has %zu values; only %zu (2-D) supported",
                        name, a->n_ints, len);
    memcpy(out, a->ints, len * sizeof *out);
    *present = 1;
    return 0;
}

/* Empty when absent. */
static int attr_str(ctx *c, const Onnx__NodeProto *n, const char *name, char *out, size_t cap) {
    const Onnx__AttributeProto *a = attr_get(n, name);
    out[0] = '\0';
    if (!a) return 0;
    if (!attr_type_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING) ||
        (!a->has_type && !a->has_s))
        return node_err(c, n, DYN_EFORMAT, "attribute '%s' must be a string", name);
    size_t len = DYN_MIN(a->s.len, cap - 1);
    if (len) memcpy(out, a->s.data, len);
    out[len] = '\0';
    return 0;
}

/* ---- inputs ------------------------------------------------------------------------------- */

/* Input `i` of node n (NULL when absent or ""); a named input no earlier node produced is the
 * topological-order error. */
static int node_in(ctx *c, const Onnx__NodeProto *n, size_t i, value **out) {
    *out = NULL;
    if (i >= n->n_input || !n->input[i][0]) return 0;
    value *v = val_find(c, n->input[i]);
    char vb[96];
    if (!v)
        return node_err(c, n, DYN_EFORMAT,
                        "input '%s' is not produced by any earlier node (the graph is not in "
                        "topological order, has a cycle, or names a missing value)",
                        pr(n->input[i], vb, sizeof vb));
    *out = v;
    return 0;
}

static int need_any_act(ctx *c, const Onnx__NodeProto *n, const value *v, size_t i) {
    if (!v) return node_err(c, n, DYN_EFORMAT, "input %zu is missing", i);
    if (v->is_const)
        return node_err(c, n, DYN_EUNSUP,
                        "input %zu is a constant; constant folding is not supported for this "
                        "operator",
                        i);
    return 0;
}

static int make_plain(ctx *c, const Onnx__NodeProto *n, value *v);

/* An activation in plain layout (what the CNN operators read). */
static int need_act(ctx *c, const Onnx__NodeProto *n, value *v, size_t i) {
    int rc = need_any_act(c, n, v, i);
    return rc ? rc : make_plain(c, n, v);
}

static int need_float(ctx *c, const Onnx__NodeProto *n, const value *v, size_t i, int ndim) {
    char vb[96];
    if (!v) return node_err(c, n, DYN_EFORMAT, "input %zu is missing", i);
    if (!v->is_const)
        return node_err(c, n, DYN_EUNSUP,
                        "input %zu ('%s') must be a constant (initializer); computed weights are "
                        "not supported",
                        i, pr(v->name, vb, sizeof vb));
    if (!v->c.is_float)
        return node_err(c, n, DYN_EUNSUP, "input %zu ('%s') must be FLOAT", i,
                        pr(v->name, vb, sizeof vb));
    if (ndim >= 0 && v->c.ndim != ndim)
        return node_err(c, n, DYN_EUNSUP, "input %zu ('%s') has rank %d, expected %d", i,
                        pr(v->name, vb, sizeof vb), v->c.ndim, ndim);
    return 0;
}

/* ---- emitting engine layers ---------------------------------------------------------------- */

static int name_ok(const char *s) {
    size_t len = strlen(s);
    if (len == 0 || len >= sizeof(((dyn_layer *)0)->name)) return 0;
    for (; *s; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') ||
              strchr("_./:-", ch)))
            return 0;
    }
    return 1;
}

/* Creates the layer for node n (index idx) from attrs (stolen). NULL with err set. */
static dyn_layer *make_layer(ctx *c, const Onnx__NodeProto *n, int idx, const char *op,
                             json_t *attrs) {
    char name[64];
    if (n->name && name_ok(n->name) && !dyn_model_layer_find(c->m, n->name)) {
        snprintf(name, sizeof name, "%s", n->name);
    } else {
        for (int k = 0;; k++) {
            if (k == 0)
                snprintf(name, sizeof name, "%s_%d", op, idx);
            else
                snprintf(name, sizeof name, "%s_%d_%d", op, idx, k);
            if (!dyn_model_layer_find(c->m, name)) break;
        }
    }
    if (!attrs) {
        node_err(c, n, DYN_ENOMEM, "out of memory");
        return NULL;
    }
    dyn_layer *l = dyn_layer_create(op, name, attrs, c->err);
    json_decref(attrs);
    if (!l) node_err(c, n, c->err ? c->err->code : DYN_EINVAL, "%s", c->err ? c->err->msg : "");
    return l;
}

/* Appends l reading the activations ins[0..nin-1] and defines the node's first output, whose
 * layout is lay_out (NULL: plain). */
static int add_node_lay(ctx *c, const Onnx__NodeProto *n, dyn_layer *l, value *const *ins,
                        int nin, const layout *lay_out) {
    char ob[96];
    int idx[DYN_LAYER_MAX_INPUTS];
    dyn_shape sh[DYN_LAYER_MAX_INPUTS], out;
    for (int i = 0; i < nin; i++) {
        idx[i] = ins[i]->node;
        sh[i] = ins[i]->shape;
    }
    int k = dyn_model_add(c->m, l, idx, nin, c->err);
    if (k < 0) return node_err(c, n, k, "%s", c->err ? c->err->msg : "");
    if (l->ops->infer(l, sh, &out, c->err))
        return node_err(c, n, DYN_EINVAL, "%s", c->err ? c->err->msg : "");
    c->nshape[k] = out;
    if (lay_out) {
        dyn_shape want;
        lay_engine_shape(lay_out, &want);
        DYN_ASSERT(dyn_shape_numel(&want) == dyn_shape_numel(&out));
    }
    if (n->n_output < 1 || !n->output[0][0]) return node_err(c, n, DYN_EFORMAT, "has no output");
    for (size_t o = 1; o < n->n_output; o++)
        if (n->output[o][0])
            return node_err(c, n, DYN_EUNSUP, "output %zu ('%s') is not supported", o,
                            pr(n->output[o], ob, sizeof ob));
    int rc = val_act(c, n->output[0], k, &out);
    if (rc) return node_err(c, n, rc, "%s", c->err ? c->err->msg : "");
    if (lay_out) val_find(c, n->output[0])->lay = *lay_out;
    return 0;
}

static int add_node(ctx *c, const Onnx__NodeProto *n, dyn_layer *l, value *const *ins, int nin) {
    return add_node_lay(c, n, l, ins, nin, NULL);
}

static void param_set(dyn_layer *l, const char *name, const float *src, int64_t n) {
    dyn_param *p = dyn_layer_param(l, name);
    DYN_ASSERT(p && dyn_tensor_numel(&p->value) == n);
    memcpy(p->value.data, src, (size_t)n * sizeof(float));
}

/* Alias for nodes whose only output is their first input. */
static int node_alias(ctx *c, const Onnx__NodeProto *n, value *in) {
    char ob[96];
    if (n->n_output < 1 || !n->output[0][0]) return node_err(c, n, DYN_EFORMAT, "has no output");
    for (size_t o = 1; o < n->n_output; o++)
        if (n->output[o][0])
            return node_err(c, n, DYN_EUNSUP, "output %zu ('%s') is not supported", o,
                            pr(n->output[o], ob, sizeof ob));
    int rc = val_alias(c, n->output[0], in);
    return rc ? node_err(c, n, rc, "%s", c->err ? c->err->msg : "") : 0;
}

/* "[d0, d1, ...]" of a constant's shape. */
static const char *cst_shape_txt(const cst *k, char *buf, size_t n) {
    size_t off = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < k->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ", %lld" : "%lld", (long long)k->dims[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
    return buf;
}

/* ---- transformer operators: layouts, constant folding, views ------------------------------ */

/* Canonical layout of logical dims dims[0..nd-1] (batch 1) whose dim bd holds the batch, after
 * its other atom when bafter (the (T, N) of a [T*N, E] view). */
static void lay_build(layout *L, int nd, const int64_t *dims, int bd, int bafter) {
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

static int lay_bafter(const layout *L) {
    int bd = lay_bdim(L);
    return L->lo[lay_first(L, bd)] != 0;
}

/* Canonical layout of L's logical shape with dim d resized to size (remove: dropped). */
static void lay_redim(layout *L, int d, int64_t size, int remove) {
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

static int lay_plain_ok(const value *v) {
    dyn_shape s;
    return lay_is_canon(&v->lay) && lay_bdim(&v->lay) == 0 && v->lay.lo[0] == 0 &&
           lay_canon_shape(&v->lay, &s, NULL) == 0 && dyn_shape_eq(&s, &v->shape) &&
           s.ndim == v->lay.nd;
}

static json_t *jints(const int64_t *v, int n) {
    json_t *a = json_array();
    for (int i = 0; a && i < n; i++) json_array_append_new(a, json_integer(v[i]));
    return a;
}

/* Appends layer l reading activation x without defining an ONNX value: *out becomes the
 * anonymous result with layout lay. */
static int add_anon(ctx *c, const Onnx__NodeProto *n, dyn_layer *l, const value *x,
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
static int emit_permute(ctx *c, const Onnx__NodeProto *n, const value *x, const int *order, int sa,
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
static int need_canon(ctx *c, const Onnx__NodeProto *n, value *v) {
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

static int make_plain(ctx *c, const Onnx__NodeProto *n, value *v) {
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
static int def_view(ctx *c, const Onnx__NodeProto *n, size_t o, const value *x, int anon,
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

/* ---- constants: allocation and folding ---- */

static int cst_alloc(ctx *c, const Onnx__NodeProto *n, cst *k, int is_float, int ndim,
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
        k->numel *= dims[d];
        if (k->numel > ((int64_t)1 << 28))
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
static int def_const(ctx *c, const Onnx__NodeProto *n, size_t o, cst *k) {
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
static int cst_sym(const cst *t, int64_t e, int64_t *k) {
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
static int cst_fixed_ints(ctx *c, const Onnx__NodeProto *n, const value *v, const char *what,
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
static int read_axes(ctx *c, const Onnx__NodeProto *n, const char *name, int64_t from, size_t in,
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
        memcpy(axes, a->ints, a->n_ints * sizeof *axes);
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
static int norm_axis(ctx *c, const Onnx__NodeProto *n, int64_t *a, int r) {
    if (*a < -r || *a >= r)
        return node_err(c, n, DYN_EINVAL, "axis %lld is out of range for rank %d", (long long)*a,
                        r);
    if (*a < 0) *a += r;
    return 0;
}

typedef enum arith { AR_ADD, AR_SUB, AR_MUL, AR_DIV, AR_POW, AR_EQ } arith;

static int arith_of(const char *op) {
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

static int arith_i(arith k, int64_t a, int64_t b, int64_t *out) {
    switch (k) {
    case AR_ADD: *out = a + b; return 0;
    case AR_SUB: *out = a - b; return 0;
    case AR_MUL:
        if (a && (a > INT32_MAX || a < -INT32_MAX || b > INT32_MAX || b < -INT32_MAX)) return -1;
        *out = a * b;
        return 0;
    case AR_DIV:
        if (b == 0) return -1;
        *out = a / b;
        return 0;
    case AR_EQ: *out = a == b; return 0;
    default: return -1;
    }
}

/* Folds a binary op of two constants. */
static int fold_binary(ctx *c, const Onnx__NodeProto *n, arith k, const value *a, const value *b) {
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
            else r.i[e] = r.i2[e] = (int64_t)v;
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

static int op_shape(ctx *c, const Onnx__NodeProto *n) {
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
static int need_const(ctx *c, const Onnx__NodeProto *n, size_t i, value **v) {
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

static int cst_copy(ctx *c, const Onnx__NodeProto *n, const cst *s, cst *d) {
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

static int op_cast(ctx *c, const Onnx__NodeProto *n) {
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
            k.i[e] = k.i2[e] = (int64_t)x->c.f[e];
        }
    }
    return def_const(c, n, 0, &k);
}

static int op_constant_of_shape(ctx *c, const Onnx__NodeProto *n) {
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

static int op_where(ctx *c, const Onnx__NodeProto *n) {
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
static int op_expand(ctx *c, const Onnx__NodeProto *n) {
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

/* ---- views: Transpose, Reshape, Squeeze, Unsqueeze ---- */

static int op_transpose(ctx *c, const Onnx__NodeProto *n) {
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

static int op_unsqueeze(ctx *c, const Onnx__NodeProto *n, int squeeze) {
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
static int op_reshape_view(ctx *c, const Onnx__NodeProto *n, value *x, const value *s,
                           int64_t allowzero) {
    char buf[160], sb[96];
    int64_t cnt = s->c.numel, t[MAX_CONST_DIMS], shown[MAX_CONST_DIMS];
    int tb[MAX_CONST_DIMS] = {0}, neg = -1, bdt = -1;
    if (cnt > MAX_CONST_DIMS) return node_err(c, n, DYN_EUNSUP, "reshape to rank %lld",
                                              (long long)cnt);
    int64_t dims[MAX_CONST_DIMS], total = 1, known = 1;
    lay_shape(&x->lay, dims);
    for (int d = 0; d < x->lay.nd; d++) total *= dims[d];
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
        known *= t[d];
        if (known > DYN_TENSOR_MAX_NUMEL) break;
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

static int op_gather(ctx *c, const Onnx__NodeProto *n) {
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

static int op_slice(ctx *c, const Onnx__NodeProto *n) {
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

static int op_split(ctx *c, const Onnx__NodeProto *n) {
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
static int op_unary_any(ctx *c, const Onnx__NodeProto *n, const char *op, json_t *attrs) {
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
static int op_arith(ctx *c, const Onnx__NodeProto *n, arith k, value *a, value *b) {
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

static int op_softmax_tr(ctx *c, const Onnx__NodeProto *n, value *x, int64_t axis) {
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

static int op_reduce_mean(ctx *c, const Onnx__NodeProto *n) {
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

static int op_layernorm(ctx *c, const Onnx__NodeProto *n) {
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

static int op_matmul_acts(ctx *c, const Onnx__NodeProto *n, value *a, value *b) {
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

/* ---- spatial attributes (Conv, pools) ----------------------------------------------------- */

/* Reads kernel_shape (or uses kdef), strides, dilations, pads / auto_pad into symmetric pads.
 * hw: the input's spatial size. */
static int spatial(ctx *c, const Onnx__NodeProto *n, const int64_t *hw, const int64_t *kdef,
                   int64_t *k, int64_t *s, int64_t *d, int64_t *p) {
    int rc, have;
    int64_t pads[4] = {0, 0, 0, 0};
    if ((rc = attr_ints(c, n, "kernel_shape", 2, k, &have))) return rc;
    if (!have) {
        if (!kdef) return node_err(c, n, DYN_EFORMAT, "attribute 'kernel_shape' is required");
        k[0] = kdef[0];
        k[1] = kdef[1];
    } else if (kdef && (k[0] != kdef[0] || k[1] != kdef[1])) {
        return node_err(c, n, DYN_EFORMAT,
                        "kernel_shape [%lld, %lld] does not match the weight's "
                        "[%lld, %lld]",
                        (long long)k[0], (long long)k[1], (long long)kdef[0], (long long)kdef[1]);
    }
    s[0] = s[1] = d[0] = d[1] = 1;
    if ((rc = attr_ints(c, n, "strides", 2, s, &have))) return rc;
    if ((rc = attr_ints(c, n, "dilations", 2, d, &have))) return rc;
    if ((rc = attr_ints(c, n, "pads", 4, pads, &have))) return rc;
    for (int i = 0; i < 2; i++)
        if (k[i] < 1 || s[i] < 1 || d[i] < 1 || k[i] > SPATIAL_MAX || s[i] > SPATIAL_MAX ||
            d[i] > SPATIAL_MAX)
            return node_err(c, n, DYN_EUNSUP, "kernel, strides and dilations must be in 1..%d",
                            SPATIAL_MAX);
    for (int i = 0; i < 4; i++)
        if (pads[i] < 0 || pads[i] > SPATIAL_MAX)
            return node_err(c, n, DYN_EUNSUP, "pads must be in 0..%d", SPATIAL_MAX);
    char ap[32];
    if ((rc = attr_str(c, n, "auto_pad", ap, sizeof ap))) return rc;
    if (!*ap || strcmp(ap, "NOTSET") == 0) {
        /* explicit pads */
    } else if (strcmp(ap, "VALID") == 0) {
        pads[0] = pads[1] = pads[2] = pads[3] = 0;
    } else if (strcmp(ap, "SAME_UPPER") == 0 || strcmp(ap, "SAME_LOWER") == 0) {
        for (int i = 0; i < 2; i++) {
            int64_t out = (hw[i] + s[i] - 1) / s[i];
            int64_t total = (out - 1) * s[i] + (k[i] - 1) * d[i] + 1 - hw[i];
            if (total < 0) total = 0;
            if (total % 2)
                return node_err(c, n, DYN_EUNSUP,
                                "auto_pad %s needs asymmetric padding (%lld in total) here; only "
                                "symmetric pads are supported",
                                ap, (long long)total);
            pads[i] = pads[i + 2] = total / 2;
        }
    } else {
        return node_err(c, n, DYN_EUNSUP, "auto_pad '%s' is not supported", ap);
    }
    if (pads[0] != pads[2] || pads[1] != pads[3])
        return node_err(c, n, DYN_EUNSUP,
                        "asymmetric pads [%lld, %lld, %lld, %lld] are not supported (only begin "
                        "== end)",
                        (long long)pads[0], (long long)pads[1], (long long)pads[2],
                        (long long)pads[3]);
    p[0] = pads[0];
    p[1] = pads[1];
    return 0;
}

static int need_4d(ctx *c, const Onnx__NodeProto *n, const value *x) {
    char sb[64];
    if (x->shape.ndim != 4)
        return node_err(c, n, DYN_EUNSUP,
                        "input shape %s: only 2-D images [N, C, H, W] are supported",
                        shape_txt(&x->shape, sb, sizeof sb));
    return 0;
}

/* ---- operators ---------------------------------------------------------------------------- */

static int op_conv(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {"auto_pad", "dilations", "group", "kernel_shape",
                                     "pads",     "strides",   NULL};
    value *x, *w, *b;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = node_in(c, n, 1, &w)) || (rc = node_in(c, n, 2, &b)) || (rc = need_act(c, n, x, 0)) ||
        (rc = need_4d(c, n, x)) || (rc = need_float(c, n, w, 1, 4)) ||
        (b && (rc = need_float(c, n, b, 2, 1))))
        return rc;
    int64_t group, k[2], s[2], d[2], p[2];
    if ((rc = attr_int(c, n, "group", 1, &group))) return rc;
    if ((rc = spatial(c, n, &x->shape.d[2], &w->c.dims[2], k, s, d, p))) return rc;
    int64_t cout = w->c.dims[0], cin = x->shape.d[1];
    if (group < 1 || cin % group || w->c.dims[1] * group != cin)
        return node_err(c, n, DYN_EINVAL,
                        "weight [%lld, %lld, ...] with group %lld does not fit "
                        "%lld input channels",
                        (long long)cout, (long long)w->c.dims[1], (long long)group, (long long)cin);
    if (b && b->c.dims[0] != cout)
        return node_err(c, n, DYN_EINVAL, "bias has %lld values for %lld output channels",
                        (long long)b->c.dims[0], (long long)cout);
    json_t *a =
        json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "in_channels",
                  (json_int_t)cin, "out_channels", (json_int_t)cout, "kernel_h", (json_int_t)k[0],
                  "kernel_w", (json_int_t)k[1], "stride_h", (json_int_t)s[0], "stride_w",
                  (json_int_t)s[1], "padding_h", (json_int_t)p[0], "padding_w", (json_int_t)p[1],
                  "dilation_h", (json_int_t)d[0], "dilation_w", (json_int_t)d[1], "groups",
                  (json_int_t)group, "bias", (json_int_t)(b != NULL));
    dyn_layer *l = make_layer(c, n, idx, "conv2d", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    param_set(l, "weight", w->c.f, w->c.numel);
    if (b) param_set(l, "bias", b->c.f, b->c.numel);
    return add_node(c, n, l, &x, 1);
}

/* linear from a weight already laid out [out, in] (wt) and an optional bias. */
static int emit_linear(ctx *c, const Onnx__NodeProto *n, int idx, value *x, const float *wt,
                       int64_t in, int64_t out, const float *bias) {
    char sb[96];
    int r = x->lay.nd, rc;
    if (r < 2 || lay_dim(&x->lay, r - 1) != in || lay_bdim(&x->lay) == r - 1)
        return node_err(c, n, DYN_EUNSUP,
                        "input shape %s does not fit a [N, ..., %lld] matrix product",
                        lay_txt(&x->lay, sb, sizeof sb), (long long)in);
    if ((rc = need_canon(c, n, x))) return rc;
    json_t *a = json_pack("{s:I, s:I, s:I}", "in", (json_int_t)in, "out", (json_int_t)out, "bias",
                          (json_int_t)(bias != NULL));
    dyn_layer *l = make_layer(c, n, idx, "linear", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    param_set(l, "weight", wt, in * out);
    if (bias) param_set(l, "bias", bias, out);
    layout L = x->lay;
    lay_redim(&L, r - 1, out, 0);
    return add_node_lay(c, n, l, &x, 1, &L);
}

static float *transposed(const float *src, int64_t rows, int64_t cols) {
    int64_t cnt = rows * cols;
    float *t = malloc((size_t)(cnt > 0 ? cnt : 1) * sizeof(float));
    if (!t) return NULL;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t q = 0; q < cols; q++) t[q * rows + r] = src[r * cols + q];
    return t;
}

static int op_gemm(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {"alpha", "beta", "transA", "transB", NULL};
    value *x, *w, *b;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = node_in(c, n, 1, &w)) || (rc = node_in(c, n, 2, &b)) ||
        (rc = need_any_act(c, n, x, 0)) || (rc = need_float(c, n, w, 1, 2)) ||
        (b && (rc = need_float(c, n, b, 2, -1))))
        return rc;
    int64_t ta, tb;
    double alpha, beta;
    if ((rc = attr_int(c, n, "transA", 0, &ta)) || (rc = attr_int(c, n, "transB", 0, &tb)) ||
        (rc = attr_float(c, n, "alpha", 1.0, &alpha)) ||
        (rc = attr_float(c, n, "beta", 1.0, &beta)))
        return rc;
    if (ta) return node_err(c, n, DYN_EUNSUP, "transA = %lld is not supported", (long long)ta);
    if (alpha != 1.0 || (b && beta != 1.0))
        return node_err(c, n, DYN_EUNSUP, "alpha = %g, beta = %g: only 1 is supported", alpha,
                        beta);
    int64_t out = tb ? w->c.dims[0] : w->c.dims[1], in = tb ? w->c.dims[1] : w->c.dims[0];
    float *bias = NULL;
    if (b) {
        int64_t nonunit = 0;
        for (int i = 0; i < b->c.ndim; i++) nonunit += b->c.dims[i] != 1;
        if (!(b->c.numel == 1 ||
              (b->c.numel == out && nonunit <= 1 && b->c.dims[b->c.ndim - 1] == out)))
            return node_err(c, n, DYN_EUNSUP,
                            "bias C of %lld values does not broadcast as a "
                            "per-output bias of %lld",
                            (long long)b->c.numel, (long long)out);
        bias = malloc((size_t)(out ? out : 1) * sizeof(float));
        if (!bias) return node_err(c, n, DYN_ENOMEM, "out of memory");
        for (int64_t o = 0; o < out; o++) bias[o] = b->c.f[b->c.numel == 1 ? 0 : o];
    }
    float *wt = tb ? NULL : transposed(w->c.f, in, out);
    if (!tb && !wt) {
        free(bias);
        return node_err(c, n, DYN_ENOMEM, "out of memory");
    }
    rc = emit_linear(c, n, idx, x, tb ? w->c.f : wt, in, out, bias);
    free(wt);
    free(bias);
    return rc;
}

static int op_matmul(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {NULL};
    value *x, *w;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) || (rc = node_in(c, n, 1, &w)))
        return rc;
    if (!x || !w) return node_err(c, n, DYN_EFORMAT, "needs two inputs");
    if (!x->is_const && !w->is_const) return op_matmul_acts(c, n, x, w);
    if (x->is_const || w->c.bexp >= 0)
        return node_err(c, n, DYN_EUNSUP,
                        "only activation x activation and activation x constant 2-D weight are "
                        "supported (constant x activation is not)");
    if ((rc = need_float(c, n, w, 1, 2))) return rc;
    int64_t in = w->c.dims[0], out = w->c.dims[1];
    float *wt = transposed(w->c.f, in, out);
    if (!wt) return node_err(c, n, DYN_ENOMEM, "out of memory");
    rc = emit_linear(c, n, idx, x, wt, in, out, NULL);
    free(wt);
    return rc;
}

static int op_simple(ctx *c, const Onnx__NodeProto *n, int idx, const char *op, int need4) {
    static const char *const ok[] = {NULL};
    value *x;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = need_act(c, n, x, 0)) || (need4 && (rc = need_4d(c, n, x))))
        return rc;
    dyn_layer *l = make_layer(c, n, idx, op, json_object());
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    return add_node(c, n, l, &x, 1);
}

static int op_pool(ctx *c, const Onnx__NodeProto *n, int idx, int is_avg) {
    static const char *const okmax[] = {"auto_pad", "ceil_mode",     "dilations", "kernel_shape",
                                        "pads",     "storage_order", "strides",   NULL};
    static const char *const okavg[] = {
        "auto_pad",     "ceil_mode", "count_include_pad", "dilations",
        "kernel_shape", "pads",      "strides",           NULL};
    value *x;
    int rc;
    if ((rc = attrs_check(c, n, is_avg ? okavg : okmax)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = need_act(c, n, x, 0)) || (rc = need_4d(c, n, x)))
        return rc;
    int64_t k[2], s[2], d[2], p[2], ceil_mode, cip, so;
    if ((rc = spatial(c, n, &x->shape.d[2], NULL, k, s, d, p)) ||
        (rc = attr_int(c, n, "ceil_mode", 0, &ceil_mode)) ||
        (rc = attr_int(c, n, "count_include_pad", 0, &cip)) ||
        (rc = attr_int(c, n, "storage_order", 0, &so)))
        return rc;
    if (d[0] != 1 || d[1] != 1)
        return node_err(c, n, DYN_EUNSUP, "dilations other than 1 are not supported");
    if (so)
        return node_err(c, n, DYN_EUNSUP, "storage_order = %lld is not supported", (long long)so);
    if ((ceil_mode != 0 && ceil_mode != 1) || (cip != 0 && cip != 1))
        return node_err(c, n, DYN_EFORMAT, "ceil_mode and count_include_pad must be 0 or 1");
    json_t *a = json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:I}", "kernel_h", (json_int_t)k[0],
                          "kernel_w", (json_int_t)k[1], "stride_h", (json_int_t)s[0], "stride_w",
                          (json_int_t)s[1], "padding_h", (json_int_t)p[0], "padding_w",
                          (json_int_t)p[1], "ceil_mode", (json_int_t)ceil_mode);
    if (a && is_avg) json_object_set_new(a, "count_include_pad", json_integer(cip));
    dyn_layer *l = make_layer(c, n, idx, is_avg ? "avgpool2d" : "maxpool2d", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    return add_node(c, n, l, &x, 1);
}

static int op_batchnorm(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {"epsilon", "momentum", "training_mode", "spatial", NULL};
    value *x, *p[4];
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) || (rc = need_act(c, n, x, 0)))
        return rc;
    for (int i = 0; i < 4; i++)
        if ((rc = node_in(c, n, (size_t)i + 1, &p[i])) ||
            (rc = need_float(c, n, p[i], (size_t)i + 1, 1)))
            return rc;
    double eps, mom;
    int64_t tm, spatial_attr;
    if ((rc = attr_float(c, n, "epsilon", 1e-5, &eps)) ||
        (rc = attr_float(c, n, "momentum", 0.9, &mom)) ||
        (rc = attr_int(c, n, "training_mode", 0, &tm)) ||
        (rc = attr_int(c, n, "spatial", 1, &spatial_attr)))
        return rc;
    if (tm) return node_err(c, n, DYN_EUNSUP, "training_mode = 1 is not supported");
    if (spatial_attr != 1) return node_err(c, n, DYN_EUNSUP, "spatial = 0 is not supported");
    if (!(eps > 0)) return node_err(c, n, DYN_EUNSUP, "epsilon = %g must be > 0", eps);
    if (!(mom >= 0 && mom <= 1)) mom = 0.9;
    char sb[64];
    if (x->shape.ndim < 2)
        return node_err(c, n, DYN_EUNSUP, "input shape %s has no channel dimension",
                        shape_txt(&x->shape, sb, sizeof sb));
    int64_t ch = x->shape.d[1];
    for (int i = 0; i < 4; i++)
        if (p[i]->c.dims[0] != ch)
            return node_err(c, n, DYN_EINVAL, "parameter %d has %lld values for %lld channels",
                            i + 1, (long long)p[i]->c.dims[0], (long long)ch);
    for (int64_t i = 0; i < ch; i++)
        if (!(p[3]->c.f[i] >= 0))
            return node_err(c, n, DYN_EINVAL, "running variance %lld is negative", (long long)i);
    /* ONNX: running = running * momentum + batch * (1 - momentum); ours is the PyTorch form. */
    json_t *a =
        json_pack("{s:I, s:f, s:f}", "channels", (json_int_t)ch, "eps", eps, "momentum", 1.0 - mom);
    dyn_layer *l = make_layer(c, n, idx, "batchnorm", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    static const char *const names[] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++) param_set(l, names[i], p[i]->c.f, ch);
    return add_node(c, n, l, &x, 1);
}

static int op_flatten(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {"axis", NULL};
    value *x;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) || (rc = need_act(c, n, x, 0)))
        return rc;
    int64_t axis;
    if ((rc = attr_int(c, n, "axis", 1, &axis))) return rc;
    if (axis < 0) axis += x->shape.ndim;
    if (axis != 1)
        return node_err(c, n, DYN_EUNSUP, "axis = %lld: only axis 1 (keep the batch) is supported",
                        (long long)axis);
    dyn_layer *l = make_layer(c, n, idx, "flatten", json_object());
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    return add_node(c, n, l, &x, 1);
}

static int op_reshape(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {"allowzero", NULL};
    value *x, *s;
    int rc;
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) || (rc = node_in(c, n, 1, &s)))
        return rc;
    if (!x) return node_err(c, n, DYN_EFORMAT, "input 0 is missing");
    if (!s || !s->is_const || s->c.is_float || s->c.ndim != 1)
        return node_err(c, n, DYN_EUNSUP,
                        "the shape must be a 1-D INT64 tensor that is constant or computed from "
                        "shapes");
    int64_t allowzero;
    if ((rc = attr_int(c, n, "allowzero", 0, &allowzero))) return rc;
    if (x->is_const) {
        int64_t t[MAX_CONST_DIMS], cnt, known = 1, neg = -1;
        if ((rc = cst_fixed_ints(c, n, s, "the shape", t, MAX_CONST_DIMS, &cnt))) return rc;
        if (x->c.bexp >= 0) return node_err(c, n, DYN_EUNSUP, "reshaping a batch-expanded constant");
        for (int64_t d = 0; d < cnt; d++) {
            if (t[d] == 0 && !allowzero && d < x->c.ndim) t[d] = x->c.dims[d];
            if (t[d] == -1 && neg < 0) neg = d;
            else if (t[d] < 0) return node_err(c, n, DYN_EINVAL, "bad shape value %lld", (long long)t[d]);
            else known *= t[d];
        }
        if (neg >= 0 && known > 0) t[neg] = x->c.numel / known;
        cst k;
        if ((rc = cst_copy(c, n, &x->c, &k))) return rc;
        int64_t tot = 1;
        for (int64_t d = 0; d < cnt; d++) tot *= k.dims[d] = t[d];
        k.ndim = (int)cnt;
        if (tot != x->c.numel) {
            cst_free(&k);
            return node_err(c, n, DYN_EINVAL, "reshape of a constant of %lld values to %lld",
                            (long long)x->c.numel, (long long)tot);
        }
        return def_const(c, n, 0, &k);
    }
    if (!lay_plain_ok(x) || x->shape.ndim == 2 || s->c.numel != 2 || s->c.i[0] != s->c.i2[0])
        return op_reshape_view(c, n, x, s, allowzero);
    int64_t f = dyn_shape_numel(&x->shape); /* batch 1: the features per sample */
    const int64_t *t = s->c.i;
    int ok2 = s->c.numel == 2 && !(allowzero && (t[0] == 0 || t[1] == 0)) &&
              (t[1] == -1 || t[1] == f) && (t[0] == 0 || t[0] == 1 || (t[0] == -1 && t[1] == f));
    if (!ok2) return op_reshape_view(c, n, x, s, allowzero);
    if (0) {
        char buf[128] = "";
        size_t at = 0;
        for (int64_t i = 0; i < s->c.numel && at + 24 < sizeof buf; i++)
            at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%lld", i ? ", " : "",
                                   (long long)t[i]);
        return node_err(c, n, DYN_EUNSUP,
                        "reshape to [%s]: only [batch, features] (features = "
                        "%lld) is supported",
                        buf, (long long)f);
    }
    dyn_layer *l = make_layer(c, n, idx, "flatten", json_object());
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    return add_node(c, n, l, &x, 1);
}

/* Rebuilds linear/conv2d layer k with a (zero) bias. */
static int give_bias(ctx *c, const Onnx__NodeProto *n, int k) {
    dyn_layer *old = c->m->nodes[k].layer;
    json_t *a = old->ops->attrs(old);
    if (!a || json_object_set_new(a, "bias", json_integer(1))) {
        json_decref(a);
        return node_err(c, n, DYN_ENOMEM, "out of memory");
    }
    dyn_layer *l = dyn_layer_create(old->ops->name, old->name, a, c->err);
    json_decref(a);
    if (!l)
        return node_err(c, n, c->err ? c->err->code : DYN_EINVAL, "%s", c->err ? c->err->msg : "");
    dyn_param *w = dyn_layer_param(old, "weight");
    param_set(l, "weight", w->value.data, dyn_tensor_numel(&w->value));
    c->m->nodes[k].layer = l;
    dyn_layer_free(old);
    return 0;
}

/* ---- element-wise ops with constants: the per-channel `scale` op ------------------------- */

/* Whether FLOAT constant k is a scalar or per-channel (axis 1) constant for plain activation x:
 * the case cst_per_channel takes (and the `scale` layer). */
static int per_channel_fits(const value *x, const value *k) {
    if (x->is_const || !k->is_const || !k->c.is_float || k->c.bexp >= 0) return 0;
    int r = x->shape.ndim, kr = k->c.ndim, fits = kr <= r && r >= 2;
    for (int j = 0; fits && j < kr; j++) {
        int axis = r - kr + j;
        fits = k->c.dims[j] == 1 || (axis == 1 && k->c.dims[j] == x->shape.d[1]);
    }
    return fits && (k->c.numel == 1 || r <= 2 || r == 4);
}

/* Broadcasts the FLOAT constant k against activation x (ONNX rules: shapes aligned on the
 * right) and returns in *out a new array (caller frees) of x's C = shape[1] values, when k is a
 * scalar or varies only along x's axis 1 ([C], [C, 1, 1], [1, C, 1, 1] as x's rank asks) and
 * does not grow x's shape. Anything else is an error naming both shapes. */
static int cst_per_channel(ctx *c, const Onnx__NodeProto *n, const value *x, const value *k,
                           size_t ki, float **out) {
    char sx[64], sk[96], nb[96];
    int rc;
    *out = NULL;
    if ((rc = need_float(c, n, k, ki, -1))) return rc;
    int r = x->shape.ndim, kr = k->c.ndim, fits = kr <= r && r >= 2;
    for (int j = 0; fits && j < kr; j++) {
        int axis = r - kr + j;
        fits = k->c.dims[j] == 1 || (axis == 1 && k->c.dims[j] == x->shape.d[1]);
    }
    if (!fits)
        return node_err(c, n, DYN_EUNSUP,
                        "constant '%s' of shape %s does not broadcast per channel over the "
                        "activation of shape %s (supported: a scalar, or C values along axis 1 "
                        "such as [C, 1, 1] or [1, C, 1, 1] for [N, C, H, W], [C] for [N, C])",
                        pr(k->name, nb, sizeof nb), cst_shape_txt(&k->c, sk, sizeof sk),
                        shape_txt(&x->shape, sx, sizeof sx));
    int64_t ch = x->shape.d[1];
    float *v = malloc((size_t)ch * sizeof(float));
    if (!v) return node_err(c, n, DYN_ENOMEM, "out of memory");
    for (int64_t i = 0; i < ch; i++) v[i] = k->c.f[k->c.numel == 1 ? 0 : i];
    *out = v;
    return 0;
}

/* Appends a (non-trainable) scale layer y = x * w[c] + b[c] for node n. */
static int emit_scale(ctx *c, const Onnx__NodeProto *n, int idx, value *x, const float *w,
                      const float *b) {
    int64_t ch = x->shape.d[1];
    json_t *a = json_pack("{s:I, s:i}", "channels", (json_int_t)ch, "trainable", 0);
    dyn_layer *l = make_layer(c, n, idx, "scale", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    param_set(l, "weight", w, ch);
    param_set(l, "bias", b, ch);
    return add_node(c, n, l, &x, 1);
}

/* Sub, Mul, Div: two activations of one shape -> sub / mul / div; an activation and a scalar or
 * per-channel constant -> scale. `op` is the engine op name. */
static int op_binary(ctx *c, const Onnx__NodeProto *n, int idx, const char *op) {
    static const char *const ok[] = {NULL};
    value *a, *b;
    int rc;
    char sa[64], sb[64];
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &a)) || (rc = node_in(c, n, 1, &b)))
        return rc;
    if (!a || !b || n->n_input != 2) return node_err(c, n, DYN_EFORMAT, "needs two inputs");
    (void)sa;
    (void)sb;
    value *xa = a->is_const ? b : a, *ka = a->is_const ? a : b;
    if (a->is_const == b->is_const || !lay_plain_ok(xa) || !per_channel_fits(xa, ka))
        return op_arith(c, n, (arith)arith_of(n->op_type), a, b);
    int const_first = a->is_const;
    value *x = const_first ? b : a, *k = const_first ? a : b;
    float *v;
    if ((rc = cst_per_channel(c, n, x, k, const_first ? 0 : 1, &v))) return rc;
    int64_t ch = x->shape.d[1];
    float *w = malloc((size_t)ch * 2 * sizeof(float));
    if (!w) {
        free(v);
        return node_err(c, n, DYN_ENOMEM, "out of memory");
    }
    float *bias = w + ch;
    rc = 0;
    for (int64_t i = 0; i < ch && !rc; i++) {
        if (strcmp(op, "mul") == 0) {
            w[i] = v[i];
            bias[i] = 0.0f;
        } else if (strcmp(op, "sub") == 0) {
            w[i] = const_first ? -1.0f : 1.0f; /* k - x or x - k */
            bias[i] = const_first ? v[i] : -v[i];
        } else if (const_first) {
            rc = node_err(c, n, DYN_EUNSUP,
                          "dividing a constant by an activation is not supported (only "
                          "activation / constant)");
        } else if (v[i] == 0.0f) {
            rc = node_err(c, n, DYN_EINVAL, "divides by a constant holding 0 (channel %lld)",
                          (long long)i);
        } else {
            w[i] = 1.0f / v[i];
            bias[i] = 0.0f;
        }
    }
    if (!rc) rc = emit_scale(c, n, idx, x, w, bias);
    free(v);
    free(w);
    return rc;
}

/* Clip: min / max from inputs 1 and 2 (opset >= 11, optional constant scalars) or from the
 * attributes of the same names (opset < 11). Absent bounds are unbounded. */
static int op_clip(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok_old[] = {"min", "max", NULL};
    static const char *const ok_new[] = {NULL};
    value *x;
    int rc;
    if ((rc = attrs_check(c, n, c->opset >= 11 ? ok_new : ok_old)) ||
        (rc = node_in(c, n, 0, &x)) || (rc = need_act(c, n, x, 0)))
        return rc;
    static const char *const key[2] = {"min", "max"};
    int has[2] = {0, 0};
    double bound[2] = {0, 0};
    for (int i = 0; i < 2; i++) {
        if (c->opset >= 11) {
            value *v;
            if ((rc = node_in(c, n, (size_t)i + 1, &v))) return rc;
            if (!v) continue;
            if (!v->is_const || !v->c.is_float || v->c.numel != 1)
                return node_err(c, n, DYN_EUNSUP, "%s (input %d) must be a constant FLOAT scalar",
                                key[i], i + 1);
            bound[i] = v->c.f[0];
            has[i] = 1;
        } else {
            has[i] = attr_get(n, key[i]) != NULL;
            if (has[i] && (rc = attr_float(c, n, key[i], 0.0, &bound[i]))) return rc;
            if (has[i] && !isfinite(bound[i]))
                return node_err(c, n, DYN_EINVAL, "%s must be finite", key[i]);
        }
    }
    if (c->opset >= 11 && n->n_input > 3)
        return node_err(c, n, DYN_EFORMAT, "has %zu inputs; at most 3", n->n_input);
    if (has[0] && has[1] && bound[0] > bound[1])
        return node_err(c, n, DYN_EUNSUP, "min %g is greater than max %g", bound[0], bound[1]);
    json_t *a = json_object();
    for (int i = 0; i < 2 && a; i++)
        if (has[i]) json_object_set_new(a, key[i], json_real(bound[i]));
    dyn_layer *l = make_layer(c, n, idx, "clip", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    return add_node(c, n, l, &x, 1);
}

/* Appends an engine concat of ins[0..nin-1] (2..4) without defining an ONNX value; *out gets
 * the result as an anonymous activation. */
static int concat_part(ctx *c, const Onnx__NodeProto *n, int idx, value *const *ins, int nin,
                       value *out) {
    int ids[DYN_LAYER_MAX_INPUTS];
    dyn_shape sh[DYN_LAYER_MAX_INPUTS];
    json_t *a = json_pack("{s:i, s:i}", "axis", 1, "inputs", nin);
    dyn_layer *l = make_layer(c, n, idx, "concat", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    for (int i = 0; i < nin; i++) {
        ids[i] = ins[i]->node;
        sh[i] = ins[i]->shape;
    }
    int k = dyn_model_add(c->m, l, ids, nin, c->err);
    if (k < 0) return node_err(c, n, k, "%s", c->err ? c->err->msg : "");
    memset(out, 0, sizeof *out);
    if (l->ops->infer(l, sh, &out->shape, c->err))
        return node_err(c, n, DYN_EINVAL, "%s", c->err ? c->err->msg : "");
    c->nshape[k] = out->shape;
    out->node = k;
    return 0;
}

/* Concat with constants: of INT64 shape vectors (folded), or of one constant expanded along the
 * batch with one activation (ViT's class token) -> cat_param. */
static int op_concat_const(ctx *c, const Onnx__NodeProto *n, value **ins, int64_t axis) {
    char sb[96], sk[96];
    int rc;
    int all = 1;
    for (size_t i = 0; i < n->n_input; i++) all = all && ins[i]->is_const;
    if (all) {
        int r = ins[0]->c.ndim;
        if (r != 1 || (axis != 0 && axis != -1))
            return node_err(c, n, DYN_EUNSUP, "concatenating constants other than 1-D ones");
        int64_t len = 0;
        for (size_t i = 0; i < n->n_input; i++) {
            if (ins[i]->c.ndim != 1 || ins[i]->c.is_float != ins[0]->c.is_float ||
                ins[i]->c.bexp >= 0)
                return node_err(c, n, DYN_EUNSUP, "constant inputs of different kinds");
            len += ins[i]->c.numel;
        }
        if (len > 4096) return node_err(c, n, DYN_EUNSUP, "too large");
        cst k;
        if ((rc = cst_alloc(c, n, &k, ins[0]->c.is_float, 1, &len))) return rc;
        int64_t at = 0;
        for (size_t i = 0; i < n->n_input; i++)
            for (int64_t e = 0; e < ins[i]->c.numel; e++, at++) {
                if (k.is_float) k.f[at] = ins[i]->c.f[e];
                else {
                    k.i[at] = ins[i]->c.i[e];
                    k.i2[at] = ins[i]->c.i2[e];
                }
            }
        return def_const(c, n, 0, &k);
    }
    if (n->n_input != 2 || !ins[0]->is_const == !ins[1]->is_const)
        return node_err(c, n, DYN_EUNSUP, "concatenating constants with activations (only one "
                        "batch-expanded constant with one activation is supported)");
    int at = ins[1]->is_const;
    value *x = ins[at ? 0 : 1], *k = ins[at ? 1 : 0];
    int r = x->lay.nd, bd = lay_bdim(&x->lay);
    if ((rc = norm_axis(c, n, &axis, r))) return rc;
    int64_t dims[MAX_CONST_DIMS];
    lay_shape(&x->lay, dims);
    int ok = k->c.is_float && k->c.bexp == bd && k->c.ndim == r && axis != bd;
    for (int d = 0; ok && d < r; d++) ok = d == axis || k->c.dims[d] == dims[d];
    if (!ok)
        return node_err(c, n, DYN_EUNSUP, "constant %s does not concatenate with %s along axis "
                        "%lld (it must be expanded along the batch and match elsewhere)",
                        cst_shape_txt(&k->c, sk, sizeof sk), lay_txt(&x->lay, sb, sizeof sb),
                        (long long)axis);
    if ((rc = need_canon(c, n, x))) return rc;
    int emap[MAX_CONST_DIMS];
    dyn_shape cs;
    lay_canon_shape(&x->lay, &cs, emap);
    int64_t ps[DYN_MAX_DIMS];
    for (int e = 1; e < cs.ndim; e++) ps[e - 1] = cs.d[e];
    ps[emap[axis] - 1] = k->c.dims[axis];
    json_t *a = json_pack("{s:i, s:o, s:i, s:i}", "axis", emap[axis], "shape",
                          jints(ps, cs.ndim - 1), "at", at, "trainable", 1);
    dyn_layer *l = make_layer(c, n, c->cur, "cat_param", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    param_set(l, "weight", k->c.f, k->c.numel);
    layout L = x->lay;
    lay_redim(&L, (int)axis, dims[axis] + k->c.dims[axis], 0);
    return add_node_lay(c, n, l, &x, 1, &L);
}

/* Concat along axis 1 of activations that match elsewhere. More than 4 inputs (DenseNet) become
 * a chain of engine concats of at most 4 inputs each; one input is the identity. */
static int op_concat(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {"axis", NULL};
    int rc;
    char s0[64], sk[64];
    if ((rc = attrs_check(c, n, ok))) return rc;
    if (!attr_get(n, "axis")) return node_err(c, n, DYN_EFORMAT, "attribute 'axis' is required");
    int64_t axis;
    if ((rc = attr_int(c, n, "axis", 1, &axis))) return rc;
    if (n->n_input < 1) return node_err(c, n, DYN_EFORMAT, "needs at least one input");
    if (n->n_input > 4096) return node_err(c, n, DYN_EUNSUP, "has too many inputs");
    value **ins = malloc(n->n_input * sizeof *ins);
    if (!ins) return node_err(c, n, DYN_ENOMEM, "out of memory");
    int nconst = 0;
    for (size_t i = 0; i < n->n_input && !rc; i++)
        if (!(rc = node_in(c, n, i, &ins[i])) && !ins[i])
            rc = node_err(c, n, DYN_EFORMAT, "input %zu is missing", i);
        else if (!rc)
            nconst += ins[i]->is_const;
    if (!rc && nconst) {
        rc = op_concat_const(c, n, ins, axis);
        free(ins);
        return rc;
    }
    for (size_t i = 0; i < n->n_input && !rc; i++) rc = need_act(c, n, ins[i], i);
    int r = rc ? 0 : ins[0]->shape.ndim;
    if (!rc && axis < 0) axis += r;
    if (!rc && axis != 1)
        rc = node_err(c, n, DYN_EUNSUP,
                      "axis %lld of %s: only axis 1 (the channels) is supported", (long long)axis,
                      shape_txt(&ins[0]->shape, s0, sizeof s0));
    for (size_t i = 1; i < n->n_input && !rc; i++) {
        int fit = ins[i]->shape.ndim == r;
        for (int d = 0; fit && d < r; d++) fit = d == 1 || ins[i]->shape.d[d] == ins[0]->shape.d[d];
        if (!fit)
            rc = node_err(c, n, DYN_EINVAL,
                          "input %zu of shape %s does not match input 0 of shape %s outside "
                          "axis 1",
                          i, shape_txt(&ins[i]->shape, sk, sizeof sk),
                          shape_txt(&ins[0]->shape, s0, sizeof s0));
    }
    if (rc) {
        free(ins);
        return rc;
    }
    if (n->n_input == 1) {
        rc = node_alias(c, n, ins[0]);
        free(ins);
        return rc;
    }
    /* Chain: the first part takes up to 4 inputs, each later one the previous part and up to
     * 3 more; the last part defines the node's output. */
    size_t next = 0;
    value acc, *part[DYN_LAYER_MAX_INPUTS];
    int first = 1;
    for (;;) {
        int np = 0;
        if (!first) part[np++] = &acc;
        while (np < DYN_LAYER_MAX_INPUTS && next < n->n_input) part[np++] = ins[next++];
        if (next == n->n_input) {
            json_t *a = json_pack("{s:i, s:i}", "axis", 1, "inputs", np);
            dyn_layer *l = make_layer(c, n, idx, "concat", a);
            rc = l ? add_node(c, n, l, part, np) : (c->err ? c->err->code : DYN_EINVAL);
            break;
        }
        value tmp;
        if ((rc = concat_part(c, n, idx, part, np, &tmp))) break;
        acc = tmp;
        first = 0;
    }
    free(ins);
    return rc;
}

static int op_add(ctx *c, const Onnx__NodeProto *n, int idx) {
    static const char *const ok[] = {NULL};
    value *a, *b;
    int rc;
    char sa[64], sb[64];
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &a)) || (rc = node_in(c, n, 1, &b)))
        return rc;
    if (!a || !b) return node_err(c, n, DYN_EFORMAT, "needs two inputs");
    (void)sa;
    (void)sb;
    if (a->is_const == b->is_const) return op_arith(c, n, AR_ADD, a, b);
    /* activation + constant: fold into the producer's bias. */
    value *x = a->is_const ? b : a, *k = a->is_const ? a : b;
    if ((rc = need_float(c, n, k, a->is_const ? 0 : 1, -1))) return rc;
    dyn_layer *l = x->node < 0 ? NULL : c->m->nodes[x->node].layer;
    const char *op = l ? l->ops->name : "";
    int is_lin = strcmp(op, "linear") == 0, is_conv = strcmp(op, "conv2d") == 0;
    if (is_conv && !lay_plain_ok(x)) is_conv = 0;
    if (is_lin && !lay_is_canon(&x->lay)) is_lin = 0;
    if (!is_lin && !is_conv && (!lay_plain_ok(x) || !per_channel_fits(x, k)))
        return op_arith(c, n, AR_ADD, a, b);
    if (!is_lin && !is_conv) {
        /* Not after a linear / conv (or the model input): a scale layer with weight 1. */
        float *v;
        if ((rc = cst_per_channel(c, n, x, k, a->is_const ? 0 : 1, &v))) return rc;
        int64_t ch = x->shape.d[1];
        float *ones = malloc((size_t)ch * sizeof(float));
        if (!ones) rc = node_err(c, n, DYN_ENOMEM, "out of memory");
        for (int64_t i = 0; !rc && i < ch; i++) ones[i] = 1.0f;
        if (!rc) rc = emit_scale(c, n, idx, x, ones, v);
        free(ones);
        free(v);
        return rc;
    }
    if (c->vals[x->root].uses != 1)
        return node_err(c, n, DYN_EUNSUP,
                        "cannot fold the constant into '%s''s bias: its output "
                        "has other readers",
                        l->name);
    int64_t ch = x->shape.d[is_lin ? x->shape.ndim - 1 : 1];
    /* Shape without leading 1s must be [ch] (linear) or [ch, 1, 1] (conv), or a scalar. */
    int lead = 0;
    while (lead < k->c.ndim && k->c.dims[lead] == 1) lead++;
    int rest = k->c.ndim - lead, fits = k->c.numel == 1;
    if (!fits && is_lin) fits = rest == 1 && k->c.dims[lead] == ch;
    if (!fits && is_conv)
        fits = rest == 3 && k->c.dims[lead] == ch && k->c.dims[lead + 1] == 1 &&
               k->c.dims[lead + 2] == 1;
    if (is_lin && !fits) return op_arith(c, n, AR_ADD, a, b); /* e.g. a [T, D] embedding */
    if (!fits || (k->c.ndim > x->shape.ndim))
        return node_err(c, n, DYN_EUNSUP,
                        "constant of %lld values does not broadcast as a "
                        "per-channel bias of %lld channels",
                        (long long)k->c.numel, (long long)ch);
    if (!dyn_layer_param(l, "bias")) {
        if ((rc = give_bias(c, n, x->node))) return rc;
        l = c->m->nodes[x->node].layer;
    }
    float *bias = dyn_layer_param(l, "bias")->value.data;
    for (int64_t i = 0; i < ch; i++) bias[i] += k->c.f[k->c.numel == 1 ? 0 : i];
    return node_alias(c, n, x);
}

static int op_constant(ctx *c, const Onnx__NodeProto *n) {
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

static int op_dropout_identity(ctx *c, const Onnx__NodeProto *n) {
    static const char *const okd[] = {"ratio", "seed", "is_test", NULL};
    static const char *const oki[] = {NULL};
    int is_drop = strcmp(n->op_type, "Dropout") == 0;
    value *x, *tm = NULL;
    int rc;
    if ((rc = attrs_check(c, n, is_drop ? okd : oki)) || (rc = node_in(c, n, 0, &x))) return rc;
    if (!x) return node_err(c, n, DYN_EFORMAT, "input 0 is missing");
    if (is_drop && (rc = node_in(c, n, 2, &tm))) return rc;
    if (tm &&
        (!tm->is_const || tm->c.numel != 1 || (tm->c.is_float ? tm->c.f[0] != 0 : tm->c.i[0] != 0)))
        return node_err(c, n, DYN_EUNSUP, "training_mode must be a constant false");
    if (!is_drop && n->n_input != 1) return node_err(c, n, DYN_EFORMAT, "needs one input");
    return node_alias(c, n, x);
}

static int op_softmax(ctx *c, const Onnx__NodeProto *n) {
    static const char *const ok[] = {"axis", NULL};
    value *x;
    int rc;
    char sb[64];
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = need_any_act(c, n, x, 0)))
        return rc;
    int64_t axis;
    if ((rc = attr_int(c, n, "axis", c->opset >= 13 ? -1 : 1, &axis)) ||
        (rc = norm_axis(c, n, &axis, x->lay.nd)))
        return rc;
    int last = c->g->n_output == 1 && n->n_output >= 1 && c->g->output[0]->name &&
               strcmp(c->g->output[0]->name, n->output[0]) == 0 && uses_of(c, n->output[0]) == 1;
    if (!last || !lay_plain_ok(x) || x->shape.ndim != 2) return op_softmax_tr(c, n, x, axis);
    if (x->shape.ndim != 2 || axis != 1)
        return node_err(c, n, DYN_EUNSUP,
                        "Softmax over axis %lld of %s: only over the features "
                        "of [N, classes]",
                        (long long)axis, shape_txt(&x->shape, sb, sizeof sb));
    c->softmax_dropped = 1;
    return node_alias(c, n, x);
}

static int do_node(ctx *c, const Onnx__NodeProto *n, int idx) {
    const char *op = n->op_type ? n->op_type : "";
    char db[64];
    if (n->domain && *n->domain && strcmp(n->domain, "ai.onnx") != 0)
        return node_err(c, n, DYN_EUNSUP, "operator domain '%s' is not supported",
                        pr(n->domain, db, sizeof db));
    if (!strcmp(op, "Conv")) return op_conv(c, n, idx);
    if (!strcmp(op, "Gemm")) return op_gemm(c, n, idx);
    if (!strcmp(op, "MatMul")) return op_matmul(c, n, idx);
    if (!strcmp(op, "Relu")) return op_simple(c, n, idx, "relu", 0);
    if (!strcmp(op, "GlobalAveragePool")) return op_simple(c, n, idx, "globalavgpool", 1);
    if (!strcmp(op, "MaxPool")) return op_pool(c, n, idx, 0);
    if (!strcmp(op, "AveragePool")) return op_pool(c, n, idx, 1);
    if (!strcmp(op, "BatchNormalization")) return op_batchnorm(c, n, idx);
    if (!strcmp(op, "Flatten")) return op_flatten(c, n, idx);
    if (!strcmp(op, "Reshape")) return op_reshape(c, n, idx);
    if (!strcmp(op, "Add")) return op_add(c, n, idx);
    if (!strcmp(op, "Sub")) return op_binary(c, n, idx, "sub");
    if (!strcmp(op, "Mul")) return op_binary(c, n, idx, "mul");
    if (!strcmp(op, "Div")) return op_binary(c, n, idx, "div");
    if (!strcmp(op, "Sigmoid")) return op_simple(c, n, idx, "sigmoid", 0);
    if (!strcmp(op, "Clip")) return op_clip(c, n, idx);
    if (!strcmp(op, "Concat")) return op_concat(c, n, idx);
    if (!strcmp(op, "Constant")) return op_constant(c, n);
    if (!strcmp(op, "Identity") || !strcmp(op, "Dropout")) return op_dropout_identity(c, n);
    if (!strcmp(op, "Softmax")) return op_softmax(c, n);
    if (!strcmp(op, "Transpose")) return op_transpose(c, n);
    if (!strcmp(op, "Unsqueeze")) return op_unsqueeze(c, n, 0);
    if (!strcmp(op, "Squeeze")) return op_unsqueeze(c, n, 1);
    if (!strcmp(op, "Gather")) return op_gather(c, n);
    if (!strcmp(op, "Slice")) return op_slice(c, n);
    if (!strcmp(op, "Split")) return op_split(c, n);
    if (!strcmp(op, "Shape")) return op_shape(c, n);
    if (!strcmp(op, "Cast")) return op_cast(c, n);
    if (!strcmp(op, "ConstantOfShape")) return op_constant_of_shape(c, n);
    if (!strcmp(op, "Where")) return op_where(c, n);
    if (!strcmp(op, "Expand")) return op_expand(c, n);
    if (!strcmp(op, "ReduceMean")) return op_reduce_mean(c, n);
    if (!strcmp(op, "LayerNormalization")) return op_layernorm(c, n);
    if (!strcmp(op, "Erf")) return op_unary_any(c, n, "erf", NULL);
    if (!strcmp(op, "Sqrt")) return op_unary_any(c, n, "sqrt", NULL);
    if (!strcmp(op, "Pow") || !strcmp(op, "Equal")) {
        static const char *const ok[] = {NULL};
        value *a, *b;
        int rc;
        if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &a)) ||
            (rc = node_in(c, n, 1, &b)))
            return rc;
        if (!a || !b || n->n_input != 2) return node_err(c, n, DYN_EFORMAT, "needs two inputs");
        return op_arith(c, n, (arith)arith_of(op), a, b);
    }
    return node_err(c, n, DYN_EUNSUP, "operator not supported by the ONNX importer");
}

/* ---- the model ---------------------------------------------------------------------------- */

/* The graph input that is not an initializer gives the per-sample input shape. */
static int read_input(ctx *c, dyn_shape *per_sample, const char **name) {
    const Onnx__GraphProto *g = c->g;
    const Onnx__ValueInfoProto *in = NULL;
    char nb[96];
    for (size_t i = 0; i < g->n_input; i++) {
        const char *nm = g->input[i]->name;
        if (!nm || !*nm) return dyn_err_set(c->err, DYN_EFORMAT, "graph input %zu has no name", i);
        value *v = val_find(c, nm);
        if (v && v->is_const) continue; /* an initializer listed as input (IR < 4) */
        if (in)
            return dyn_err_set(c->err, DYN_EUNSUP,
                               "the graph has more than one input ('%s' and "
                               "'%s'); only one is supported",
                               pr(in->name, nb, sizeof nb), nm);
        in = g->input[i];
    }
    if (!in) return dyn_err_set(c->err, DYN_EFORMAT, "the graph has no input");
    pr(in->name, nb, sizeof nb);
    const Onnx__TypeProto *t = in->type;
    if (!t || t->value_case != ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE || !t->tensor_type)
        return dyn_err_set(c->err, DYN_EUNSUP, "graph input '%s' is not a tensor", nb);
    const Onnx__TypeProto__Tensor *tt = t->tensor_type;
    if (!tt->has_elem_type || tt->elem_type != ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT)
        return dyn_err_set(c->err, DYN_EUNSUP,
                           "graph input '%s' has element type %d; only FLOAT "
                           "is supported",
                           nb, tt->has_elem_type ? tt->elem_type : 0);
    const Onnx__TensorShapeProto *s = tt->shape;
    if (!s || s->n_dim < 2 || s->n_dim > DYN_MAX_DIMS)
        return dyn_err_set(c->err, DYN_EUNSUP,
                           "graph input '%s' must have a known rank of 2 to "
                           "%d (batch first)",
                           nb, DYN_MAX_DIMS);
    const Onnx__TensorShapeProto__Dimension *b = s->dim[0];
    if (b->value_case == ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE && b->dim_value != 1)
        return dyn_err_set(c->err, DYN_EUNSUP,
                           "graph input '%s' has a fixed batch of %lld; only "
                           "a symbolic batch or 1 is supported",
                           nb, (long long)b->dim_value);
    memset(per_sample, 0, sizeof *per_sample);
    per_sample->ndim = (int)s->n_dim - 1;
    for (size_t i = 1; i < s->n_dim; i++) {
        const Onnx__TensorShapeProto__Dimension *d = s->dim[i];
        if (d->value_case != ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE ||
            d->dim_value < 1 || d->dim_value > DYN_TENSOR_MAX_NUMEL)
            return dyn_err_set(c->err, DYN_EUNSUP,
                               "graph input '%s': dimension %zu must be a "
                               "fixed size >= 1",
                               nb, i);
        per_sample->d[i - 1] = d->dim_value;
    }
    if (dyn_shape_numel(per_sample) > DYN_TENSOR_MAX_NUMEL || dyn_shape_numel(per_sample) < 1)
        return dyn_err_set(c->err, DYN_EUNSUP, "graph input '%s' is too large", nb);
    *name = in->name;
    return 0;
}

static int build(ctx *c, const Onnx__ModelProto *mp) {
    const Onnx__GraphProto *g = mp->graph;
    int rc;
    char nb[96];
    if (!g) return dyn_err_set(c->err, DYN_EFORMAT, "not an ONNX model (no graph)");
    c->g = g;
    c->opset = -1;
    for (size_t i = 0; i < mp->n_opset_import; i++) {
        const Onnx__OperatorSetIdProto *o = mp->opset_import[i];
        if ((!o->domain || !*o->domain || strcmp(o->domain, "ai.onnx") == 0) && o->has_version)
            c->opset = o->version;
    }
    if (c->opset < 0)
        return dyn_err_set(c->err, DYN_EFORMAT,
                           "the model imports no version of the default "
                           "operator set (opset_import)");
    if (c->opset < 7)
        return dyn_err_set(c->err, DYN_EUNSUP, "opset %lld is too old (7 or later is supported)",
                           (long long)c->opset);
    if (g->n_sparse_initializer)
        return dyn_err_set(c->err, DYN_EUNSUP, "sparse initializers are not supported");
    if (g->n_output != 1)
        return dyn_err_set(c->err, DYN_EUNSUP,
                           "the graph has %zu outputs; exactly one is supported", g->n_output);
    if (!g->output[0]->name || !*g->output[0]->name)
        return dyn_err_set(c->err, DYN_EFORMAT, "the graph output has no name");

    /* Tables: every name is an initializer, a graph input or a node output. */
    size_t nv = g->n_initializer + g->n_input + 1;
    for (size_t i = 0; i < g->n_node; i++) nv += g->node[i]->n_output;
    if (nv > INT32_MAX / 4) return dyn_err_set(c->err, DYN_EUNSUP, "the graph is too large");
    c->capvals = (int)nv;
    c->vals = calloc(nv, sizeof *c->vals);
    c->nshape = calloc(g->n_node + 1, sizeof *c->nshape);
    size_t nu = g->n_output;
    for (size_t i = 0; i < g->n_node; i++) nu += g->node[i]->n_input;
    if (!c->vals || !c->nshape || strmap_init(&c->vmap, nv) || strmap_init(&c->umap, nu))
        return dyn_err_set(c->err, DYN_ENOMEM, "out of memory");
    for (size_t i = 0; i < g->n_node; i++)
        for (size_t j = 0; j < g->node[i]->n_input; j++)
            if (g->node[i]->input[j][0]) ++*strmap_slot(&c->umap, g->node[i]->input[j], 1);
    ++*strmap_slot(&c->umap, g->output[0]->name, 1);

    for (size_t i = 0; i < g->n_initializer; i++) {
        const Onnx__TensorProto *t = g->initializer[i];
        char what[160];
        snprintf(what, sizeof what, "initializer '%s'", pr(t->name, nb, sizeof nb));
        int k = val_add(c, t->name);
        if (k < 0) return k;
        c->vals[k].is_const = 1;
        if ((rc = cst_from_tensor(c, t, what, &c->vals[k].c))) return rc;
    }
    dyn_shape in;
    const char *in_name = NULL;
    if ((rc = read_input(c, &in, &in_name))) return rc;
    c->m = dyn_model_new(&in);
    if (!c->m) return dyn_err_set(c->err, DYN_ENOMEM, "out of memory");
    dyn_shape in1;
    memset(&in1, 0, sizeof in1);
    in1.ndim = in.ndim + 1;
    in1.d[0] = 1;
    for (int i = 0; i < in.ndim; i++) in1.d[i + 1] = in.d[i];
    if ((rc = val_act(c, in_name, -1, &in1))) return rc;

    c->skip = calloc(g->n_node + 1, 1);
    if (!c->skip) return dyn_err_set(c->err, DYN_ENOMEM, "out of memory");
    /* Constant nodes read nothing: define them first, so that fused patterns (LayerNorm) can
     * see the constants of nodes after the one they start at. */
    for (size_t i = 0; i < g->n_node; i++)
        if (g->node[i]->op_type && !strcmp(g->node[i]->op_type, "Constant") &&
            (!g->node[i]->domain || !*g->node[i]->domain)) {
            c->cur = (int)i;
            if ((rc = do_node(c, g->node[i], (int)i))) return rc;
            c->skip[i] = 1;
        }
    for (size_t i = 0; i < g->n_node; i++) {
        c->cur = (int)i;
        if (!c->skip[i] && (rc = do_node(c, g->node[i], (int)i))) return rc;
    }

    value *out = val_find(c, g->output[0]->name);
    if (out && !out->is_const && !lay_plain_ok(out)) {
        Onnx__NodeProto fake = ONNX__NODE_PROTO__INIT;
        fake.name = (char *)"output";
        fake.op_type = (char *)"(graph output)";
        int k0 = c->m->nnodes;
        if ((rc = make_plain(c, &fake, out))) return rc;
        (void)k0;
    }
    pr(g->output[0]->name, nb, sizeof nb);
    if (!out)
        return dyn_err_set(c->err, DYN_EFORMAT, "the graph output '%s' is never produced", nb);
    if (out->is_const || out->node < 0)
        return dyn_err_set(c->err, DYN_EUNSUP,
                           "the graph output '%s' is %s; a model must compute "
                           "something",
                           nb, out->is_const ? "a constant" : "the input");
    if (out->node != c->m->nnodes - 1)
        return dyn_err_set(c->err, DYN_EUNSUP,
                           "nodes after the one producing the graph output "
                           "'%s' compute values nothing reads; remove them",
                           nb);

    json_t *info = json_object();
    if (!info) return dyn_err_set(c->err, DYN_ENOMEM, "out of memory");
    c->m->info = info;
    char prod[160];
    snprintf(prod, sizeof prod, "%s%s%s", str_or(mp->producer_name, ""),
             mp->producer_version && *mp->producer_version ? " " : "",
             str_or(mp->producer_version, ""));
    char pb[160];
    json_object_set_new(info, "source", json_string("onnx"));
    json_object_set_new(info, "producer", json_string(pr(prod, pb, sizeof pb)));
    json_object_set_new(info, "opset", json_integer(c->opset));
    json_object_set_new(info, "output", json_string(c->softmax_dropped ? "softmax" : "logits"));
    return dyn_model_prepare(c->m, c->err);
}

dyn_model *dyn_onnx_load_bytes(const void *data, size_t size, const char *name, dyn_err *err) {
    if (err) {
        err->code = 0;
        err->msg[0] = '\0';
    }
    Onnx__ModelProto *mp = onnx__model_proto__unpack(NULL, size, data);
    if (!mp) {
        dyn_err_set(err, DYN_EFORMAT,
                    "%s: not an ONNX model, or the file is truncated or damaged "
                    "(protobuf parse failed)",
                    name);
        return NULL;
    }
    ctx c;
    memset(&c, 0, sizeof c);
    c.err = err;
    int rc = build(&c, mp);
    for (int i = 0; i < c.nvals; i++) cst_free(&c.vals[i].c);
    free(c.vals);
    free(c.nshape);
    free(c.skip);
    strmap_free(&c.vmap);
    strmap_free(&c.umap);
    onnx__model_proto__free_unpacked(mp, NULL);
    if (rc) {
        dyn_err_prefix(err, "%s", name);
        dyn_model_free(c.m);
        return NULL;
    }
    return c.m;
}

dyn_model *dyn_onnx_load(const char *path, dyn_err *err) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        dyn_err_set(err, DYN_EIO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    uint8_t *buf = NULL;
    size_t len = 0, cap = 0;
    for (;;) {
        if (len == cap) {
            size_t ncap = cap ? 2 * cap : (size_t)1 << 16;
            if (cap >= DYN_ONNX_MAX_BYTES) {
                free(buf);
                fclose(f);
                dyn_err_set(err, DYN_EUNSUP, "%s: larger than %zu bytes", path, DYN_ONNX_MAX_BYTES);
                return NULL;
            }
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                fclose(f);
                dyn_err_set(err, DYN_ENOMEM, "%s: out of memory reading the file", path);
                return NULL;
            }
            buf = nb;
            cap = ncap;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) break;
    }
    int bad = ferror(f);
    fclose(f);
    if (bad) {
        free(buf);
        dyn_err_set(err, DYN_EIO, "%s: read error", path);
        return NULL;
    }
    dyn_model *m = dyn_onnx_load_bytes(buf, len, path, err);
    free(buf);
    return m;
}
