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
 *
 * The importer is five files (onnx_impl.h says what each holds): this one has the entry points,
 * the graph walk and operator dispatch, the value table, attributes, node inputs, errors and
 * layer emission; onnx_layout.c the layouts, onnx_shape.c constant folding, onnx_tr.c the
 * transformer operators and onnx_cnn.c the CNN ones.
 */
#include "onnx.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <string.h>

#include "image.h"
#include "onnx_impl.h"

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

const char *pr(const char *s, char *buf, size_t n) {
    return dyn__printable(s ? s : "", buf, n);
}

/* "node 'name' (Op): <fmt>" with hostile-safe name and op. */
int node_err(ctx *c, const Onnx__NodeProto *n, int code, const char *fmt, ...) {
    char what[384], nb[96], ob[48];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return dyn_err_set(c->err, code, "node '%s' (%s): %s",
                       pr(str_or(n->name, "(unnamed)"), nb, sizeof nb),
                       pr(n->op_type, ob, sizeof ob), what);
}

const char *shape_txt(const dyn_shape *s, char *buf, size_t n) {
    return dyn_shape_str(s, buf, n);
}

/* ---- constants ---------------------------------------------------------------------------- */

void cst_free(cst *k) {
    free(k->f);
    free(k->i);
    free(k->i2);
    k->f = NULL;
    k->i = NULL;
    k->i2 = NULL;
}

/* Decodes an ONNX TensorProto (FLOAT or INT64) into *k. `what` names it in messages. */
int cst_from_tensor(ctx *c, const Onnx__TensorProto *t, const char *what, cst *k) {
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
        k->dims[d] = t->dims[d];
    }
    int rc = dyn_numel_checked((int)t->n_dims, k->dims, DYN_TENSOR_MAX_NUMEL, &numel, c->err, what);
    if (rc) return rc;
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

/* ---- the value table ---------------------------------------------------------------------- */

int uses_of(ctx *c, const char *name) {
    int *u = strmap_slot(&c->umap, name, 0);
    return u ? *u : 0;
}

/* Adds a value named `name` (must be new). Returns its index or a negative code. */
int val_add(ctx *c, const char *name) {
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

value *val_find(ctx *c, const char *name) {
    int *slot = strmap_slot(&c->vmap, name, 0);
    return slot && *slot ? &c->vals[*slot - 1] : NULL;
}

/* Makes `name` an activation produced by engine node `node`. */
int val_act(ctx *c, const char *name, int node, const dyn_shape *shape) {
    int k = val_add(c, name);
    if (k < 0) return k;
    c->vals[k].node = node;
    c->vals[k].shape = *shape;
    lay_plain(&c->vals[k].lay, shape);
    return 0;
}

/* Makes `name` another name for `src` (Identity and friends); src's root takes over its
 * readers. The alias itself was one reader of src. */
int val_alias(ctx *c, const char *name, const value *src) {
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

const Onnx__AttributeProto *attr_get(const Onnx__NodeProto *n, const char *name) {
    for (size_t i = 0; i < n->n_attribute; i++)
        if (n->attribute[i]->name && strcmp(n->attribute[i]->name, name) == 0)
            return n->attribute[i];
    return NULL;
}

/* Fails on any attribute not in `allowed` (NULL-terminated). */
int attrs_check(ctx *c, const Onnx__NodeProto *n, const char *const *allowed) {
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

int attr_type_is(const Onnx__AttributeProto *a, Onnx__AttributeProto__AttributeType t) {
    return a->has_type ? a->type == t : 1;
}

int attr_int(ctx *c, const Onnx__NodeProto *n, const char *name, int64_t def, int64_t *out) {
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

int attr_float(ctx *c, const Onnx__NodeProto *n, const char *name, double def, double *out) {
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
int attr_ints(ctx *c, const Onnx__NodeProto *n, const char *name, size_t len, int64_t *out,
              int *present) {
    const Onnx__AttributeProto *a = attr_get(n, name);
    *present = 0;
    if (!a) return 0;
    if (!attr_type_is(a, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS))
        return node_err(c, n, DYN_EFORMAT, "attribute '%s' must be a list of integers", name);
    if (a->n_ints != len)
        return node_err(c, n, DYN_EUNSUP, "attribute '%s' has %zu values; only %zu (2-D) supported",
                        name, a->n_ints, len);
    if (len) memcpy(out, a->ints, len * sizeof *out); /* ints is NULL when empty */
    *present = 1;
    return 0;
}

/* Empty when absent. */
int attr_str(ctx *c, const Onnx__NodeProto *n, const char *name, char *out, size_t cap) {
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
int node_in(ctx *c, const Onnx__NodeProto *n, size_t i, value **out) {
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

int need_any_act(ctx *c, const Onnx__NodeProto *n, const value *v, size_t i) {
    if (!v) return node_err(c, n, DYN_EFORMAT, "input %zu is missing", i);
    if (v->is_const)
        return node_err(c, n, DYN_EUNSUP,
                        "input %zu is a constant; constant folding is not supported for this "
                        "operator",
                        i);
    return 0;
}

/* An activation in plain layout (what the CNN operators read). */
int need_act(ctx *c, const Onnx__NodeProto *n, value *v, size_t i) {
    int rc = need_any_act(c, n, v, i);
    return rc ? rc : make_plain(c, n, v);
}

int need_float(ctx *c, const Onnx__NodeProto *n, const value *v, size_t i, int ndim) {
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
dyn_layer *make_layer(ctx *c, const Onnx__NodeProto *n, int idx, const char *op,
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
int add_node_lay(ctx *c, const Onnx__NodeProto *n, dyn_layer *l, value *const *ins,
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

int add_node(ctx *c, const Onnx__NodeProto *n, dyn_layer *l, value *const *ins, int nin) {
    return add_node_lay(c, n, l, ins, nin, NULL);
}

void param_set(dyn_layer *l, const char *name, const float *src, int64_t n) {
    dyn_param *p = dyn_layer_param(l, name);
    DYN_ASSERT(p && dyn_tensor_numel(&p->value) == n);
    memcpy(p->value.data, src, (size_t)n * sizeof(float));
}

/* Alias for nodes whose only output is their first input. */
int node_alias(ctx *c, const Onnx__NodeProto *n, value *in) {
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
const char *cst_shape_txt(const cst *k, char *buf, size_t n) {
    size_t off = (size_t)snprintf(buf, n, "[");
    for (int i = 0; i < k->ndim && off < n; i++)
        off += (size_t)snprintf(buf + off, n - off, i ? ", %lld" : "%lld", (long long)k->dims[i]);
    if (off < n) snprintf(buf + off, n - off, "]");
    return buf;
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
    char what[160];
    snprintf(what, sizeof what, "graph input '%s' (per sample)", nb);
    int64_t numel;
    int rc = dyn_numel_checked(per_sample->ndim, per_sample->d, DYN_TENSOR_MAX_NUMEL, &numel, c->err,
                               what);
    if (rc) return rc;
    *name = in->name;
    return 0;
}

/* metadata_props "dynd.preprocess" and "dynd.labels" (onnx.h) into the built model c->m. */
static int read_metadata(ctx *c, const Onnx__ModelProto *mp) {
    for (size_t i = 0; i < mp->n_metadata_props; i++) {
        const Onnx__StringStringEntryProto *e = mp->metadata_props[i];
        const char *k = e && e->key ? e->key : "";
        const int is_pp = !strcmp(k, "dynd.preprocess"), is_lab = !strcmp(k, "dynd.labels");
        if (!is_pp && !is_lab) continue;
        json_error_t je;
        json_t *v = json_loads(e->value ? e->value : "", JSON_REJECT_DUPLICATES, &je);
        if (!v)
            return dyn_err_set(c->err, DYN_EFORMAT, "metadata_props \"%s\" is not JSON: %s", k,
                               je.text);
        int rc = 0;
        if (is_pp) {
            dyn_preprocess pp;
            rc = dyn_preprocess_check(v, c->err);
            if (!rc) rc = dyn_preprocess_parse(v, &c->m->input, &pp, c->err);
            if (rc) dyn_err_prefix(c->err, "metadata_props \"%s\"", k);
            else {
                json_decref(c->m->preprocess);
                c->m->preprocess = json_incref(v);
            }
        } else {
            size_t n = json_is_array(v) ? json_array_size(v) : 0;
            int64_t outs = dyn_model_outputs(c->m);
            const char **lab = n ? calloc(n, sizeof *lab) : NULL;
            if (!json_is_array(v) || n == 0 || (int64_t)n != outs)
                rc = dyn_err_set(c->err, DYN_EFORMAT, "metadata_props \"%s\" must be a JSON array "
                                 "of %lld class names (one per output)", k, (long long)outs);
            else if (!lab)
                rc = dyn_err_set(c->err, DYN_ENOMEM, "out of memory");
            for (size_t j = 0; !rc && j < n; j++) {
                const json_t *s = json_array_get(v, j);
                if (!json_is_string(s) || strlen(json_string_value(s)) != json_string_length(s))
                    rc = dyn_err_set(c->err, DYN_EFORMAT, "metadata_props \"%s\": entry %zu is "
                                     "not a string", k, j);
                else lab[j] = json_string_value(s);
            }
            if (!rc && dyn_model_labels_set(c->m, lab, (int)n))
                rc = dyn_err_set(c->err, DYN_ENOMEM, "out of memory");
            free(lab);
        }
        json_decref(v);
        if (rc) return rc;
    }
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
    if ((rc = dyn_model_prepare(c->m, c->err))) return rc;
    return read_metadata(c, mp);
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
