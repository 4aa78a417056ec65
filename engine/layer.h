/* layer.h — the layer (op) interface: shape inference, forward, backward, parameters.
 *
 * A layer records its attributes and parameters; the kernels live in engine/ops/ (dense) and
 * engine/dyn/ (DyN systems), one file per op family. Every op is described by a
 * dyn_layer_ops table (the dispatch on op), registered in layer.c by name; model files
 * store the name and the attributes (JSON), so construction has one path:
 * dyn_layer_create(op_name, attrs).
 *
 * Tensors passed to forward/backward are contiguous, batch first (NCHW or [N, F]).
 * Threading: forward with training == 0 never mutates the layer, so several inference
 * workers may run one model at once; training runs single-threaded at the model level (kernels
 * themselves use OpenMP and OpenBLAS threads inside).
 */
#ifndef DYN_LAYER_H
#define DYN_LAYER_H

#include <jansson.h>

#include "tensor.h"

typedef enum dyn_op {
    DYN_OP_LINEAR,
    DYN_OP_CONV2D,
    DYN_OP_MAXPOOL2D,
    DYN_OP_AVGPOOL2D,
    DYN_OP_GLOBALAVGPOOL,
    DYN_OP_RELU,
    DYN_OP_BATCHNORM,
    DYN_OP_FLATTEN,
    DYN_OP_DYN_LINEAR,
    DYN_OP_DYN_CONV2D,
    DYN_OP_ADD,
    DYN_OP_MUL,
    DYN_OP_SUB,
    DYN_OP_DIV,
    DYN_OP_SIGMOID,
    DYN_OP_CLIP,
    DYN_OP_CONCAT,
    DYN_OP_SCALE,
    DYN_OP_PERMUTE,
    DYN_OP_MATMUL,
    DYN_OP_SOFTMAX,
    DYN_OP_LAYERNORM,
    DYN_OP_REDUCE_MEAN,
    DYN_OP_AFFINE,
    DYN_OP_CAT_PARAM,
    DYN_OP_ERF,
    DYN_OP_SQRT,
    DYN_OP_POW,
    DYN_OP_RIEM, /* engine/convert/riem_layer.c */
    DYN_OP_COUNT
} dyn_op;

#define DYN_LAYER_MAX_PARAMS 8
#define DYN_LAYER_MAX_INPUTS 4

typedef struct dyn_param {
    char name[32];    /* within the layer: "weight", "bias", "u", "v", "lambda", "c", ... */
    dyn_tensor value; /* owned by the layer */
    dyn_tensor grad;  /* same shape; allocated only when trainable */
    int trainable;    /* 0 for buffers (BatchNorm running statistics) */
    dyn_tensor m, v;  /* optimizer moments, allocated lazily by the optimizer */
    /* Device copies while the layer is placed on a backend (backend.h), else NULL: the value,
     * its gradient and the optimizer moments (trainable params), each numel(value) floats. */
    float *dval, *dgrad, *dm, *dv;
} dyn_param;

/* What `dyn inspect` prints per layer. */
typedef struct dyn_layer_stats {
    int64_t stored_floats; /* floats in the model file (all params, buffers included) */
    int64_t memory_floats; /* floats held in memory to run it (stored + materialized W, ...) */
    int64_t macs;          /* multiply-accumulates per sample in the current execution mode */
    double entropy_bits;   /* structural entropy (DyN layers; 0 for dense) */
    int is_dyn;
} dyn_layer_stats;

typedef struct dyn_layer dyn_layer;

/* A layer that runs, at inference on a given input shape, as a plain dense convolution:
 * y = conv(x, w) + b (what the fused inference graph, cpu/graph.h, hands to oneDNN). w and b
 * are borrowed from the layer ([cout][cin/groups][kh][kw] and [cout], b NULL when none) and
 * stay valid until its next prepare(). */
typedef struct dyn_dense_conv {
    int cin, cout, groups;
    int kh, kw, sh, sw, ph, pw, dh, dw;
    const float *w, *b;
} dyn_dense_conv;

typedef struct dyn_layer_ops {
    dyn_op op;
    const char *name; /* as written in model files: "linear", "dyn_conv2d", ... */
    int ninputs; /* inputs every layer of this op reads; 0 = variadic: create() sets l->ninputs */

    /* Reads attrs (borrowed) and sets up l->impl and l->params (zeroed values with their final
     * shapes). Returns 0 or a DYN_E* code with a message naming the bad attribute. */
    int (*create)(dyn_layer *l, const json_t *attrs, dyn_err *err);
    /* Frees l->impl (parameters are freed by dyn_layer_free). May be NULL. */
    void (*destroy)(dyn_layer *l);
    /* New JSON object with the attributes create() accepts (caller owns the reference). */
    json_t *(*attrs)(const dyn_layer *l);
    /* Random initialization of trainable parameters (Kaiming-uniform for dense weights). */
    void (*init)(dyn_layer *l, dyn_rng *rng);

    /* Output shape for input shapes (batch included). Returns 0 or DYN_EINVAL + message. */
    int (*infer)(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err);
    /* Floats of scratch forward/backward need for these input shapes. May be NULL (= 0). */
    size_t (*scratch)(const dyn_layer *l, const dyn_shape *in, int training);
    /* y = f(x[0..ninputs-1]). scratch: the floats asked for by scratch(), kept unchanged
     * between a training forward and its backward. */
    void (*forward)(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                    int training);
    /* Accumulates (+=) parameter gradients and writes (=) dx[k] for each input k whose
     * dx[k].data is not NULL. x, y: the forward's inputs and output. */
    void (*backward)(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                     const dyn_tensor *dy, dyn_tensor *dx, float *scratch);
    /* Rebuilds derived state after parameters change (DyN: orders, ranks, materialized W).
     * May be NULL. Returns 0 or DYN_ENOMEM. */
    int (*prepare)(dyn_layer *l, dyn_err *err);
    /* Fills stats for one sample of shape `in` (with batch 1). May be NULL: then stored =
     * memory = parameter floats and macs = 0. */
    void (*stats)(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st);
    /* Fills *v and returns 1 when an inference forward on input shape `in` (batch included)
     * computes exactly a dense convolution (conv2d always; dyn_conv2d when it runs
     * materialized at that shape); else 0. held: 1 also when the layer would take another path
     * at that shape but holds the dense kernel (a dyn_conv2d whose `auto` chose native: the
     * caller runs the convolution itself, materialized). May be NULL (= 0). */
    int (*as_dense_conv)(const dyn_layer *l, const dyn_shape *in, int held, dyn_dense_conv *v);
} dyn_layer_ops;

struct dyn_layer {
    const dyn_layer_ops *ops;
    char name[64];
    int ninputs; /* inputs this layer reads (ops->ninputs unless the op is variadic) */
    int nparams;
    dyn_param params[DYN_LAYER_MAX_PARAMS];
    void *impl;
    /* Bumped by the prepare() of layers with an as_dense_conv: a fused inference graph holding
     * a copy of their weights sees that it must be rebuilt. */
    unsigned gen;
    /* Placement (backend.h): 1 when the layer runs on its model's device backend; dev: the
     * state the backend op derived there (owned by the op: its release() frees it). */
    int placed;
    void *dev;
};

/* Looks up an op by its file name ("conv2d"); NULL when unknown. */
const dyn_layer_ops *dyn_layer_ops_find(const char *op_name);
/* Number of registered ops and the i-th one (for listing). */
int dyn_layer_ops_count(void);
const dyn_layer_ops *dyn_layer_ops_at(int i);

/* Creates a layer of op `op_name` named `name` from attrs (borrowed). Returns a new layer (free
 * with dyn_layer_free) or NULL with err set. Trainable params get zeroed grads. */
dyn_layer *dyn_layer_create(const char *op_name, const char *name, const json_t *attrs,
                            dyn_err *err);
/* Frees the layer, its params and impl. NULL is fine. */
void dyn_layer_free(dyn_layer *l);

/* Helpers for op implementations. dyn_layer_param_add allocates value (and grad when
 * trainable) with the given shape and returns the param, or NULL on ENOMEM / bad shape. */
dyn_param *dyn_layer_param_add(dyn_layer *l, const char *name, int ndim, const int64_t *shape,
                               int trainable, dyn_err *err);
dyn_param *dyn_layer_param(dyn_layer *l, const char *name); /* NULL when absent */
void dyn_layer_zero_grad(dyn_layer *l);
int64_t dyn_layer_param_floats(const dyn_layer *l);
/* stats() with the default filled in for ops without one. */
void dyn_layer_stats_get(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st);

/* Reads an integer / number / string attribute with a default; on a wrong type returns
 * DYN_EINVAL with a message naming the layer and key. */
int dyn_attr_int(const dyn_layer *l, const json_t *attrs, const char *key, int64_t def,
                 int64_t lo, int64_t hi, int64_t *out, dyn_err *err);
int dyn_attr_num(const dyn_layer *l, const json_t *attrs, const char *key, double def,
                 double *out, dyn_err *err);
int dyn_attr_str(const dyn_layer *l, const json_t *attrs, const char *key, const char *def,
                 const char **out, dyn_err *err);

/* Reads `key`, a JSON list of lo_n..hi_n integers each in lo..hi, into out[] and its length into
 * *n. Returns 0 or DYN_EINVAL with a message naming the layer and key. */
int dyn_attr_ints(const dyn_layer *l, const json_t *attrs, const char *key, int lo_n, int hi_n,
                  int64_t lo, int64_t hi, int64_t *out, int *n, dyn_err *err);

/* Shared op-table entries: create() for ops without attributes, attrs() returning {}, and
 * infer() for ops whose output has the shape of their first input. */
int dyn_op_create_no_attrs(dyn_layer *l, const json_t *attrs, dyn_err *err);
json_t *dyn_op_attrs_none(const dyn_layer *l);
int dyn_op_infer_same(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err);

/* Reads `key` or its `key_h` / `key_w` pair (2-D kernels, strides, paddings) into *h, *w with
 * bounds lo..hi; def_h < 0 makes it required. Returns 0 or DYN_EINVAL with a message. */
int dyn_attr_int_hw(const dyn_layer *l, const json_t *attrs, const char *key, int64_t def_h,
                    int64_t def_w, int64_t lo, int64_t hi, int *h, int *w, dyn_err *err);
/* Writes `key` when h == w, else `key_h` and `key_w`, into the JSON object o. */
void dyn_attrs_put_hw(json_t *o, const char *key, int h, int w);

/* The registered op tables (defined in their op files). */
extern const dyn_layer_ops dyn_op_linear, dyn_op_conv2d, dyn_op_maxpool2d, dyn_op_avgpool2d,
    dyn_op_globalavgpool, dyn_op_relu, dyn_op_batchnorm, dyn_op_flatten, dyn_op_dyn_linear,
    dyn_op_dyn_conv2d, dyn_op_add, dyn_op_mul, dyn_op_sub, dyn_op_div, dyn_op_sigmoid,
    dyn_op_clip, dyn_op_concat, dyn_op_scale;
/* Transformer ops (ONNX import of ViTs): data movement, batched matmul, softmax, layernorm,
 * mean over an axis, trailing-shape affine constants, learned-token concat, erf / sqrt / pow. */
extern const dyn_layer_ops dyn_op_permute, dyn_op_matmul, dyn_op_softmax, dyn_op_layernorm,
    dyn_op_reduce_mean, dyn_op_affine, dyn_op_cat_param, dyn_op_erf, dyn_op_sqrt, dyn_op_pow;
/* A linear / conv2d whose weight is a fitted RieM-style form (engine/convert/riem_layer.c). */
extern const dyn_layer_ops dyn_op_riem;

#endif
