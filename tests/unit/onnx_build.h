/* onnx_build.h — a small ONNX model builder for the unit tests (header-only; every function is
 * static inline so each test uses what it needs). Models are built with the protobuf-c structs
 * generated from onnx.proto and packed to bytes; every allocation is recorded and freed by
 * ob_free. */
#ifndef DYN_TEST_ONNX_BUILD_H
#define DYN_TEST_ONNX_BUILD_H

#include <string.h>

#include "io/onnx.h"
#include "onnx.pb-c.h"
#include "testutil.h"

/* ---- a small ONNX builder (every allocation is recorded and freed by ob_free) ---- */

#define OB_MAX 64

typedef struct ob {
    Onnx__ModelProto model;
    Onnx__GraphProto graph;
    Onnx__OperatorSetIdProto opset;
    Onnx__OperatorSetIdProto *opsets[1];
    Onnx__NodeProto *nodes[OB_MAX];
    Onnx__TensorProto *inits[OB_MAX];
    Onnx__ValueInfoProto *ins[2], *outs[2];
    void *mem[1024];
    int nmem;
} ob;

static inline void *ob_mem(ob *b, size_t n) {
    ck_assert_int_lt(b->nmem, (int)DYN_ARRAY_LEN(b->mem));
    void *p = calloc(1, n ? n : 1);
    ck_assert_ptr_nonnull(p);
    b->mem[b->nmem++] = p;
    return p;
}

static inline char *ob_str(ob *b, const char *s) {
    char *p = ob_mem(b, strlen(s) + 1);
    memcpy(p, s, strlen(s) + 1);
    return p;
}

static inline void ob_free(ob *b) {
    for (int i = 0; i < b->nmem; i++) free(b->mem[i]);
    b->nmem = 0;
}

static inline void ob_init(ob *b, int64_t opset) {
    memset(b, 0, sizeof *b);
    Onnx__ModelProto m = ONNX__MODEL_PROTO__INIT;
    Onnx__GraphProto g = ONNX__GRAPH_PROTO__INIT;
    Onnx__OperatorSetIdProto o = ONNX__OPERATOR_SET_ID_PROTO__INIT;
    b->model = m;
    b->graph = g;
    b->opset = o;
    b->opset.domain = ob_str(b, "");
    b->opset.has_version = 1;
    b->opset.version = opset;
    b->opsets[0] = &b->opset;
    b->model.has_ir_version = 1;
    b->model.ir_version = 8;
    b->model.producer_name = ob_str(b, "test_onnx");
    b->model.graph = &b->graph;
    b->model.n_opset_import = 1;
    b->model.opset_import = b->opsets;
    b->graph.name = ob_str(b, "g");
    b->graph.node = b->nodes;
    b->graph.initializer = b->inits;
    b->graph.input = b->ins;
    b->graph.output = b->outs;
}

static inline Onnx__ValueInfoProto *ob_value(ob *b, const char *name, int ndim, const int64_t *dims,
                                      int symbolic_batch) {
    Onnx__ValueInfoProto *v = ob_mem(b, sizeof *v);
    Onnx__ValueInfoProto vi = ONNX__VALUE_INFO_PROTO__INIT;
    *v = vi;
    v->name = ob_str(b, name);
    if (ndim < 0) return v;
    Onnx__TypeProto *t = ob_mem(b, sizeof *t);
    Onnx__TypeProto ti = ONNX__TYPE_PROTO__INIT;
    *t = ti;
    Onnx__TypeProto__Tensor *tt = ob_mem(b, sizeof *tt);
    Onnx__TypeProto__Tensor tti = ONNX__TYPE_PROTO__TENSOR__INIT;
    *tt = tti;
    tt->has_elem_type = 1;
    tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
    Onnx__TensorShapeProto *s = ob_mem(b, sizeof *s);
    Onnx__TensorShapeProto si = ONNX__TENSOR_SHAPE_PROTO__INIT;
    *s = si;
    s->n_dim = (size_t)ndim;
    s->dim = ob_mem(b, (size_t)ndim * sizeof *s->dim);
    for (int i = 0; i < ndim; i++) {
        Onnx__TensorShapeProto__Dimension *d = ob_mem(b, sizeof *d);
        Onnx__TensorShapeProto__Dimension di = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__INIT;
        *d = di;
        if (i == 0 && symbolic_batch) {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
            d->dim_param = ob_str(b, "N");
        } else {
            d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
            d->dim_value = dims[i];
        }
        s->dim[i] = d;
    }
    tt->shape = s;
    t->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
    t->tensor_type = tt;
    v->type = t;
    return v;
}

/* Graph input with a symbolic batch: dims[0] is ignored. */
static inline void ob_input(ob *b, const char *name, int ndim, const int64_t *dims) {
    b->ins[b->graph.n_input++] = ob_value(b, name, ndim, dims, 1);
}

static inline void ob_output(ob *b, const char *name) {
    b->outs[b->graph.n_output++] = ob_value(b, name, -1, NULL, 0);
}

/* A TensorProto; raw = 1 stores raw_data (little-endian, the host's order here), else the
 * typed field. */
static inline Onnx__TensorProto *ob_tensor(ob *b, const char *name, int dtype, int ndim,
                                    const int64_t *dims, const void *data, int raw) {
    Onnx__TensorProto *t = ob_mem(b, sizeof *t);
    Onnx__TensorProto ti = ONNX__TENSOR_PROTO__INIT;
    *t = ti;
    t->name = ob_str(b, name);
    t->has_data_type = 1;
    t->data_type = dtype;
    t->n_dims = (size_t)ndim;
    t->dims = ob_mem(b, (size_t)ndim * sizeof(int64_t));
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        t->dims[i] = dims[i];
        n *= dims[i];
    }
    size_t es = dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT ? 4 : 8;
    if (raw) {
        t->has_raw_data = 1;
        t->raw_data.len = (size_t)n * es;
        t->raw_data.data = ob_mem(b, (size_t)n * es);
        memcpy(t->raw_data.data, data, (size_t)n * es);
    } else if (dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT) {
        t->n_float_data = (size_t)n;
        t->float_data = ob_mem(b, (size_t)n * sizeof(float));
        memcpy(t->float_data, data, (size_t)n * sizeof(float));
    } else if (dtype == ONNX__TENSOR_PROTO__DATA_TYPE__INT64) {
        t->n_int64_data = (size_t)n;
        t->int64_data = ob_mem(b, (size_t)n * sizeof(int64_t));
        memcpy(t->int64_data, data, (size_t)n * sizeof(int64_t));
    } else if (dtype == ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE) {
        t->n_double_data = (size_t)n;
        t->double_data = ob_mem(b, (size_t)n * sizeof(double));
        memcpy(t->double_data, data, (size_t)n * sizeof(double));
    }
    return t;
}

static inline Onnx__TensorProto *ob_init_f(ob *b, const char *name, int ndim, const int64_t *dims,
                                    const float *data, int raw) {
    Onnx__TensorProto *t =
        ob_tensor(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, ndim, dims, data, raw);
    b->inits[b->graph.n_initializer++] = t;
    return t;
}

static inline void ob_init_i64(ob *b, const char *name, int ndim, const int64_t *dims,
                        const int64_t *data) {
    b->inits[b->graph.n_initializer++] =
        ob_tensor(b, name, ONNX__TENSOR_PROTO__DATA_TYPE__INT64, ndim, dims, data, 0);
}

/* Comma-separated names into a string array ("" entries allowed: "x,,b"). */
static inline size_t ob_names(ob *b, const char *list, char ***out) {
    size_t n = 1;
    for (const char *p = list; *p; p++) n += *p == ',';
    if (!*list) n = 0;
    *out = ob_mem(b, n * sizeof(char *));
    const char *p = list;
    for (size_t i = 0; i < n; i++) {
        const char *e = strchr(p, ',');
        size_t len = e ? (size_t)(e - p) : strlen(p);
        char *s = ob_mem(b, len + 1);
        memcpy(s, p, len);
        (*out)[i] = s;
        p = e ? e + 1 : p + len;
    }
    return n;
}

static inline Onnx__NodeProto *ob_node(ob *b, const char *op, const char *name, const char *ins,
                                const char *outs) {
    Onnx__NodeProto *n = ob_mem(b, sizeof *n);
    Onnx__NodeProto ni = ONNX__NODE_PROTO__INIT;
    *n = ni;
    n->op_type = ob_str(b, op);
    n->name = ob_str(b, name);
    n->n_input = ob_names(b, ins, &n->input);
    n->n_output = ob_names(b, outs, &n->output);
    n->attribute = ob_mem(b, 8 * sizeof *n->attribute);
    ck_assert_int_lt((int)b->graph.n_node, OB_MAX);
    b->nodes[b->graph.n_node++] = n;
    return n;
}

static inline Onnx__AttributeProto *ob_attr(ob *b, Onnx__NodeProto *n, const char *name,
                                     Onnx__AttributeProto__AttributeType type) {
    Onnx__AttributeProto *a = ob_mem(b, sizeof *a);
    Onnx__AttributeProto ai = ONNX__ATTRIBUTE_PROTO__INIT;
    *a = ai;
    a->name = ob_str(b, name);
    a->has_type = 1;
    a->type = type;
    ck_assert_int_lt((int)n->n_attribute, 8);
    n->attribute[n->n_attribute++] = a;
    return a;
}

static inline void ob_attr_i(ob *b, Onnx__NodeProto *n, const char *name, int64_t v) {
    Onnx__AttributeProto *a = ob_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
    a->has_i = 1;
    a->i = v;
}

static inline void ob_attr_f(ob *b, Onnx__NodeProto *n, const char *name, float v) {
    Onnx__AttributeProto *a = ob_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
    a->has_f = 1;
    a->f = v;
}

static inline void ob_attr_list(ob *b, Onnx__NodeProto *n, const char *name, int cnt,
                                const int64_t *v) {
    Onnx__AttributeProto *a = ob_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    a->n_ints = (size_t)cnt;
    a->ints = ob_mem(b, (size_t)(cnt ? cnt : 1) * sizeof(int64_t));
    memcpy(a->ints, v, (size_t)cnt * sizeof(int64_t));
}

static inline void ob_attr_tensor(ob *b, Onnx__NodeProto *n, const char *name, Onnx__TensorProto *t) {
    Onnx__AttributeProto *a = ob_attr(b, n, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__TENSOR);
    a->t = t;
}

static inline uint8_t *ob_pack(ob *b, size_t *n) {
    *n = onnx__model_proto__get_packed_size(&b->model);
    uint8_t *buf = malloc(*n + 1);
    ck_assert_ptr_nonnull(buf);
    ck_assert_uint_eq(onnx__model_proto__pack(&b->model, buf), *n);
    return buf;
}

/* Packs and imports; NULL with err set on failure. */
static inline dyn_model *ob_load(ob *b, dyn_err *err) {
    size_t n;
    uint8_t *buf = ob_pack(b, &n);
    dyn_model *m = dyn_onnx_load_bytes(buf, n, "test.onnx", err);
    free(buf);
    return m;
}

/* Expects the import to fail with a message containing `want`. */
static inline void expect_reject(ob *b, const char *want) {
    dyn_err err = {0};
    dyn_model *m = ob_load(b, &err);
    ck_assert_msg(m == NULL, "model accepted, expected an error with '%s'", want);
    ck_assert_int_lt(err.code, 0);
    ck_assert_msg(strstr(err.msg, want) != NULL, "message '%s' lacks '%s'", err.msg, want);
    ck_assert_msg(strncmp(err.msg, "test.onnx: ", 11) == 0, "message '%s' lacks the name", err.msg);
}

static inline float *rnd(dyn_rng *r, int64_t n, float lo, float hi) {
    float *p = malloc((size_t)n * sizeof(float));
    ck_assert_ptr_nonnull(p);
    tu_fill_uniform(p, n, r, lo, hi);
    return p;
}

#endif
