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

typedef struct cst {
    int ndim;
    int64_t dims[MAX_CONST_DIMS];
    int64_t numel;
    int is_float; /* else int64 */
    float *f;     /* owned, numel floats (is_float) */
    int64_t *i;   /* owned, numel int64 (!is_float) */
} cst;

typedef struct value {
    const char *name; /* borrowed from the parsed proto */
    int is_const;
    cst c;           /* is_const */
    int node;        /* activation: engine node, -1 = model input */
    dyn_shape shape; /* activation: shape with batch 1 */
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
    k->f = NULL;
    k->i = NULL;
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
    }
    return 0;
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
        size_t n = (size_t)(s->c.numel ? s->c.numel : 1);
        if (s->c.is_float)
            d->f = malloc(n * sizeof(float));
        else
            d->i = malloc(n * sizeof(int64_t));
        if (!d->f && !d->i) return dyn_err_set(c->err, DYN_ENOMEM, "out of memory");
        if (d->f) memcpy(d->f, s->c.f, (size_t)s->c.numel * sizeof(float));
        if (d->i) memcpy(d->i, s->c.i, (size_t)s->c.numel * sizeof(int64_t));
        v->is_const = 1;
        return 0;
    }
    v->node = s->node;
    v->shape = s->shape;
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

static int need_act(ctx *c, const Onnx__NodeProto *n, const value *v, size_t i) {
    if (!v) return node_err(c, n, DYN_EFORMAT, "input %zu is missing", i);
    if (v->is_const)
        return node_err(c, n, DYN_EUNSUP,
                        "input %zu is a constant; constant folding is not supported", i);
    return 0;
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

/* Appends l reading the activations ins[0..nin-1] and defines the node's first output. */
static int add_node(ctx *c, const Onnx__NodeProto *n, dyn_layer *l, value *const *ins, int nin) {
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
    if (n->n_output < 1 || !n->output[0][0]) return node_err(c, n, DYN_EFORMAT, "has no output");
    for (size_t o = 1; o < n->n_output; o++)
        if (n->output[o][0])
            return node_err(c, n, DYN_EUNSUP, "output %zu ('%s') is not supported", o,
                            pr(n->output[o], ob, sizeof ob));
    int rc = val_act(c, n->output[0], k, &out);
    return rc ? node_err(c, n, rc, "%s", c->err ? c->err->msg : "") : 0;
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
    char sb[64];
    if (x->shape.ndim != 2 || x->shape.d[1] != in)
        return node_err(c, n, DYN_EUNSUP,
                        "input shape %s does not fit a [N, %lld] matrix product "
                        "(only 2-D inputs are supported)",
                        shape_txt(&x->shape, sb, sizeof sb), (long long)in);
    json_t *a = json_pack("{s:I, s:I, s:I}", "in", (json_int_t)in, "out", (json_int_t)out, "bias",
                          (json_int_t)(bias != NULL));
    dyn_layer *l = make_layer(c, n, idx, "linear", a);
    if (!l) return c->err ? c->err->code : DYN_EINVAL;
    param_set(l, "weight", wt, in * out);
    if (bias) param_set(l, "bias", bias, out);
    return add_node(c, n, l, &x, 1);
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
        (rc = node_in(c, n, 1, &w)) || (rc = node_in(c, n, 2, &b)) || (rc = need_act(c, n, x, 0)) ||
        (rc = need_float(c, n, w, 1, 2)) || (b && (rc = need_float(c, n, b, 2, -1))))
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
    if (x->is_const || !w->is_const)
        return node_err(c, n, DYN_EUNSUP,
                        "only activation x constant 2-D weight is supported "
                        "(MatMul of two activations / batched MatMul is not supported yet)");
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
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) ||
        (rc = need_act(c, n, x, 0)) || (rc = node_in(c, n, 1, &s)))
        return rc;
    if (!s || !s->is_const || s->c.is_float || s->c.ndim != 1)
        return node_err(c, n, DYN_EUNSUP,
                        "the shape must be a constant 1-D INT64 tensor "
                        "(shape computations are not supported yet)");
    int64_t allowzero;
    if ((rc = attr_int(c, n, "allowzero", 0, &allowzero))) return rc;
    int64_t f = dyn_shape_numel(&x->shape); /* batch 1: the features per sample */
    const int64_t *t = s->c.i;
    int ok2 = s->c.numel == 2 && !(allowzero && (t[0] == 0 || t[1] == 0)) &&
              (t[1] == -1 || t[1] == f) && (t[0] == 0 || t[0] == 1 || (t[0] == -1 && t[1] == f));
    if (!ok2) {
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

/* "[d0, d1, ...]" of a constant's shape. */
static const char *cst_shape_txt(const cst *k, char *buf, size_t n) {
    size_t off = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < k->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ", %lld" : "%lld", (long long)k->dims[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
    return buf;
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
    if (a->is_const && b->is_const)
        return node_err(c, n, DYN_EUNSUP,
                        "both inputs are constants; constant folding is not supported");
    if (!a->is_const && !b->is_const) {
        if (!dyn_shape_eq(&a->shape, &b->shape))
            return node_err(c, n, DYN_EUNSUP,
                            "inputs of shapes %s and %s: broadcasting between two activations is "
                            "not supported",
                            shape_txt(&a->shape, sa, sizeof sa),
                            shape_txt(&b->shape, sb, sizeof sb));
        dyn_layer *l = make_layer(c, n, idx, op, json_object());
        if (!l) return c->err ? c->err->code : DYN_EINVAL;
        value *ins[2] = {a, b};
        return add_node(c, n, l, ins, 2);
    }
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
    for (size_t i = 0; i < n->n_input && !rc; i++)
        if (!(rc = node_in(c, n, i, &ins[i]))) rc = need_act(c, n, ins[i], i);
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
    if (a->is_const && b->is_const)
        return node_err(c, n, DYN_EUNSUP,
                        "both inputs are constants; constant folding is not supported");
    if (!a->is_const && !b->is_const) {
        if (!dyn_shape_eq(&a->shape, &b->shape))
            return node_err(c, n, DYN_EUNSUP,
                            "inputs of shapes %s and %s: broadcasting is not "
                            "supported",
                            shape_txt(&a->shape, sa, sizeof sa),
                            shape_txt(&b->shape, sb, sizeof sb));
        dyn_layer *l = make_layer(c, n, idx, "add", json_object());
        if (!l) return c->err ? c->err->code : DYN_EINVAL;
        value *ins[2] = {a, b};
        return add_node(c, n, l, ins, 2);
    }
    /* activation + constant: fold into the producer's bias. */
    value *x = a->is_const ? b : a, *k = a->is_const ? a : b;
    if ((rc = need_float(c, n, k, a->is_const ? 0 : 1, -1))) return rc;
    dyn_layer *l = x->node < 0 ? NULL : c->m->nodes[x->node].layer;
    const char *op = l ? l->ops->name : "";
    int is_lin = strcmp(op, "linear") == 0, is_conv = strcmp(op, "conv2d") == 0;
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
    int64_t ch = x->shape.d[1];
    /* Shape without leading 1s must be [ch] (linear) or [ch, 1, 1] (conv), or a scalar. */
    int lead = 0;
    while (lead < k->c.ndim && k->c.dims[lead] == 1) lead++;
    int rest = k->c.ndim - lead, fits = k->c.numel == 1;
    if (!fits && is_lin) fits = rest == 1 && k->c.dims[lead] == ch;
    if (!fits && is_conv)
        fits = rest == 3 && k->c.dims[lead] == ch && k->c.dims[lead + 1] == 1 &&
               k->c.dims[lead + 2] == 1;
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
    if (is_f)
        t->f = malloc((cnt ? cnt : 1) * sizeof(float));
    else
        t->i = malloc((cnt ? cnt : 1) * sizeof(int64_t));
    if (!t->f && !t->i) return node_err(c, n, DYN_ENOMEM, "out of memory");
    for (size_t i = 0; i < cnt; i++) {
        if (is_f)
            t->f[i] = list ? a->floats[i] : a->f;
        else
            t->i[i] = list ? a->ints[i] : a->i;
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
    if ((rc = attrs_check(c, n, ok)) || (rc = node_in(c, n, 0, &x)) || (rc = need_act(c, n, x, 0)))
        return rc;
    int64_t axis;
    if ((rc = attr_int(c, n, "axis", c->opset >= 13 ? -1 : 1, &axis))) return rc;
    if (axis < 0) axis += x->shape.ndim;
    int last = c->g->n_output == 1 && n->n_output >= 1 && c->g->output[0]->name &&
               strcmp(c->g->output[0]->name, n->output[0]) == 0 && uses_of(c, n->output[0]) == 1;
    if (!last)
        return node_err(c, n, DYN_EUNSUP, "Softmax is supported only as the model's final node");
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

    for (size_t i = 0; i < g->n_node; i++)
        if ((rc = do_node(c, g->node[i], (int)i))) return rc;

    value *out = val_find(c, g->output[0]->name);
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
