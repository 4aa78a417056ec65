/* onnx_impl.h — internal to engine/io/onnx*.c: the ONNX importer's shared types and helpers.
 * Not a public API (that is onnx.h).
 *
 * The importer, by concern:
 *   onnx.c         entry points (dyn_onnx_load*), the model and graph walk, operator dispatch
 *                  (do_node), the value table, attributes, node inputs, errors, layer emission;
 *   onnx_layout.c  layouts: how a value's logical dims map onto its engine tensor, and the
 *                  permute layers that change them;
 *   onnx_shape.c   constants: allocation and folding with the batch symbolic (Shape, Cast,
 *                  ConstantOfShape, Where, Expand, arithmetic on constants), Constant nodes;
 *   onnx_tr.c      transformer operators: Transpose / Unsqueeze / Squeeze / Reshape views,
 *                  Gather, Slice, Split, broadcasting arithmetic, unary ops, Softmax, ReduceMean
 *                  (LayerNorm fusion), LayerNormalization, MatMul of two activations;
 *   onnx_cnn.c     CNN operators: Conv, Gemm, MatMul by a weight, pools, BatchNormalization,
 *                  Flatten, Reshape, Add / Sub / Mul / Div (bias folding, scale), Clip, Concat,
 *                  Identity / Dropout, Softmax.
 *
 * Conventions. `c` is the import context and `n` the ONNX node being converted. Functions that
 * return int return 0 or a negative DYN_E* code with c->err set; errors about a node go through
 * node_err, so every message starts "node '<name>' (<op>): ". Values returned as value * point
 * into c->vals (valid until the import ends; the table never moves).
 *
 * Names: the helpers keep the short names the importer was written with. Shared between files,
 * they are external symbols, so the macros below give each the dyn__onnx_ prefix (the symbol in
 * libdyn.a and a debugger is dyn__onnx_node_err); helpers used by one file stay static there.
 * Include this header last, after system headers.
 */
#ifndef DYN_IO_ONNX_IMPL_H
#define DYN_IO_ONNX_IMPL_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io_impl.h"
#include "onnx.h"
#include "onnx.pb-c.h"

/* ---- types ----------------------------------------------------------------------------------- */

/* Most dims of a constant or of a value's logical shape. */
#define MAX_CONST_DIMS 8

/* Shape computations are folded with the batch size symbolic: every INT64 constant holds its
 * values for two batch sizes (SB1 in i, SB2 in i2); a size that differs between them is k times
 * the batch (k = i / SB1 = i2 / SB2), anything else that differs is not linear in the batch. */
#define SB1 3
#define SB2 5

/* A constant: an initializer, a Constant node's output or a folded value, FLOAT or INT64. */
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

/* An entry of the value table: an ONNX value name bound to a constant or to an activation (an
 * engine node's output seen through a layout). */
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

/* Open-addressing hash table from names (borrowed) to ints, sized once for every key (onnx.c). */
typedef struct strmap {
    size_t cap; /* power of two */
    const char **keys;
    int *vals;
} strmap;

/* The import context, one per dyn_onnx_load_bytes call; onnx.c sets it up and frees it. */
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

/* Binary arithmetic the importer folds or emits; indexes arith_of's names. */
typedef enum arith { AR_ADD, AR_SUB, AR_MUL, AR_DIV, AR_POW, AR_EQ } arith;

/* ---- external names -------------------------------------------------------------------------- */

/* Every function shared between the onnx*.c files, by defining file (see "Names" above). */
/* onnx.c */
#define pr                   dyn__onnx_pr
#define node_err             dyn__onnx_node_err
#define shape_txt            dyn__onnx_shape_txt
#define cst_free             dyn__onnx_cst_free
#define cst_from_tensor      dyn__onnx_cst_from_tensor
#define uses_of              dyn__onnx_uses_of
#define val_add              dyn__onnx_val_add
#define val_find             dyn__onnx_val_find
#define val_act              dyn__onnx_val_act
#define val_alias            dyn__onnx_val_alias
#define attr_get             dyn__onnx_attr_get
#define attrs_check          dyn__onnx_attrs_check
#define attr_type_is         dyn__onnx_attr_type_is
#define attr_int             dyn__onnx_attr_int
#define attr_float           dyn__onnx_attr_float
#define attr_ints            dyn__onnx_attr_ints
#define attr_str             dyn__onnx_attr_str
#define node_in              dyn__onnx_node_in
#define need_any_act         dyn__onnx_need_any_act
#define need_act             dyn__onnx_need_act
#define need_float           dyn__onnx_need_float
#define make_layer           dyn__onnx_make_layer
#define add_node_lay         dyn__onnx_add_node_lay
#define add_node             dyn__onnx_add_node
#define param_set            dyn__onnx_param_set
#define node_alias           dyn__onnx_node_alias
#define cst_shape_txt        dyn__onnx_cst_shape_txt
/* onnx_layout.c */
#define lay_plain            dyn__onnx_lay_plain
#define lay_first            dyn__onnx_lay_first
#define lay_dim              dyn__onnx_lay_dim
#define lay_bdim             dyn__onnx_lay_bdim
#define lay_eq               dyn__onnx_lay_eq
#define lay_normalize        dyn__onnx_lay_normalize
#define lay_canon_order      dyn__onnx_lay_canon_order
#define lay_is_canon         dyn__onnx_lay_is_canon
#define lay_canon_shape      dyn__onnx_lay_canon_shape
#define lay_engine_shape     dyn__onnx_lay_engine_shape
#define lay_shape            dyn__onnx_lay_shape
#define lay_txt              dyn__onnx_lay_txt
#define lay_transpose        dyn__onnx_lay_transpose
#define lay_reshape          dyn__onnx_lay_reshape
#define lay_logical_index    dyn__onnx_lay_logical_index
#define lay_build            dyn__onnx_lay_build
#define lay_bafter           dyn__onnx_lay_bafter
#define lay_redim            dyn__onnx_lay_redim
#define lay_plain_ok         dyn__onnx_lay_plain_ok
#define jints                dyn__onnx_jints
#define add_anon             dyn__onnx_add_anon
#define emit_permute         dyn__onnx_emit_permute
#define need_canon           dyn__onnx_need_canon
#define make_plain           dyn__onnx_make_plain
#define def_view             dyn__onnx_def_view
/* onnx_shape.c */
#define cst_alloc            dyn__onnx_cst_alloc
#define def_const            dyn__onnx_def_const
#define cst_sym              dyn__onnx_cst_sym
#define cst_fixed_ints       dyn__onnx_cst_fixed_ints
#define read_axes            dyn__onnx_read_axes
#define norm_axis            dyn__onnx_norm_axis
#define arith_of             dyn__onnx_arith_of
#define fold_binary          dyn__onnx_fold_binary
#define op_shape             dyn__onnx_op_shape
#define need_const           dyn__onnx_need_const
#define cst_copy             dyn__onnx_cst_copy
#define op_cast              dyn__onnx_op_cast
#define op_constant_of_shape dyn__onnx_op_constant_of_shape
#define op_where             dyn__onnx_op_where
#define op_expand            dyn__onnx_op_expand
#define op_constant          dyn__onnx_op_constant
/* onnx_tr.c */
#define op_transpose         dyn__onnx_op_transpose
#define op_unsqueeze         dyn__onnx_op_unsqueeze
#define op_reshape_view      dyn__onnx_op_reshape_view
#define op_gather            dyn__onnx_op_gather
#define op_slice             dyn__onnx_op_slice
#define op_split             dyn__onnx_op_split
#define op_unary_any         dyn__onnx_op_unary_any
#define op_arith             dyn__onnx_op_arith
#define op_softmax_tr        dyn__onnx_op_softmax_tr
#define op_reduce_mean       dyn__onnx_op_reduce_mean
#define op_layernorm         dyn__onnx_op_layernorm
#define op_matmul_acts       dyn__onnx_op_matmul_acts
/* onnx_cnn.c */
#define op_conv              dyn__onnx_op_conv
#define op_gemm              dyn__onnx_op_gemm
#define op_matmul            dyn__onnx_op_matmul
#define op_simple            dyn__onnx_op_simple
#define op_pool              dyn__onnx_op_pool
#define op_batchnorm         dyn__onnx_op_batchnorm
#define op_flatten           dyn__onnx_op_flatten
#define op_reshape           dyn__onnx_op_reshape
#define op_binary            dyn__onnx_op_binary
#define op_clip              dyn__onnx_op_clip
#define op_concat            dyn__onnx_op_concat
#define op_add               dyn__onnx_op_add
#define op_dropout_identity  dyn__onnx_op_dropout_identity
#define op_softmax           dyn__onnx_op_softmax

/* ---- onnx.c: errors, constants, value table, attributes, inputs, layer emission -------------- */

/* Hostile-safe copy of s (NULL: "") into buf for a message (dyn__printable). Returns buf. */
const char *pr(const char *s, char *buf, size_t n);
/* Sets c->err to "node '<name>' (<op>): <fmt ...>" and returns code. */
int node_err(ctx *c, const Onnx__NodeProto *n, int code, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* "[1, 3, 224, 224]"-style text of an engine shape into buf. */
const char *shape_txt(const dyn_shape *s, char *buf, size_t n);
/* "[d0, d1, ...]" text of a constant's shape into buf. */
const char *cst_shape_txt(const cst *k, char *buf, size_t n);
/* Frees k's arrays (k stays usable: the pointers become NULL). */
void cst_free(cst *k);
/* Decodes a TensorProto (FLOAT or INT64) into *k (caller frees with cst_free, also on error);
 * `what` names it in messages. Errors are set with dyn_err_set, without a node prefix. */
int cst_from_tensor(ctx *c, const Onnx__TensorProto *t, const char *what, cst *k);

/* Readers of value `name` counted before the pass (node inputs and the graph output). */
int uses_of(ctx *c, const char *name);
/* Adds the new value `name` (defined twice is an error): its index in c->vals, or a negative
 * code with c->err set (no node prefix). */
int val_add(ctx *c, const char *name);
/* The value named `name`, or NULL. */
value *val_find(ctx *c, const char *name);
/* Defines `name` as the activation of engine node `node` (shape with batch 1), plain layout. */
int val_act(ctx *c, const char *name, int node, const dyn_shape *shape);
/* Defines `name` as another name for src (a constant is copied); src's root takes its readers. */
int val_alias(ctx *c, const char *name, const value *src);

/* Attribute `name` of n, or NULL. */
const Onnx__AttributeProto *attr_get(const Onnx__NodeProto *n, const char *name);
/* Fails on any attribute of n not in `allowed` (NULL-terminated) or referring to a function's. */
int attrs_check(ctx *c, const Onnx__NodeProto *n, const char *const *allowed);
/* Whether a has type t (an attribute without a type passes). */
int attr_type_is(const Onnx__AttributeProto *a, Onnx__AttributeProto__AttributeType t);
/* INT / FLOAT attribute `name` into *out, def when absent. */
int attr_int(ctx *c, const Onnx__NodeProto *n, const char *name, int64_t def, int64_t *out);
int attr_float(ctx *c, const Onnx__NodeProto *n, const char *name, double def, double *out);
/* INTS attribute of exactly len values into out; *present = 0 when absent. */
int attr_ints(ctx *c, const Onnx__NodeProto *n, const char *name, size_t len, int64_t *out,
              int *present);
/* STRING attribute into out (cap bytes, cut to fit), "" when absent. */
int attr_str(ctx *c, const Onnx__NodeProto *n, const char *name, char *out, size_t cap);

/* Input i of n into *out (NULL when absent or ""); a name no earlier node produced is the
 * topological-order error. */
int node_in(ctx *c, const Onnx__NodeProto *n, size_t i, value **out);
/* Input i (v) must be present and an activation, in any layout. */
int need_any_act(ctx *c, const Onnx__NodeProto *n, const value *v, size_t i);
/* Same, then moved into plain layout (what the CNN operators read); may emit a permute. */
int need_act(ctx *c, const Onnx__NodeProto *n, value *v, size_t i);
/* Input i (v) must be a FLOAT constant, of rank ndim unless ndim < 0. */
int need_float(ctx *c, const Onnx__NodeProto *n, const value *v, size_t i, int ndim);

/* Creates layer `op` for node n from attrs (stolen, may be NULL: out of memory), named after the
 * node when the name fits and is unused, else "<op>_<idx>". NULL with c->err set. */
dyn_layer *make_layer(ctx *c, const Onnx__NodeProto *n, int idx, const char *op,
                      json_t *attrs);
/* Appends l reading activations ins[0..nin-1] and defines n's (only) output as its result, with
 * layout lay_out (NULL: plain). */
int add_node_lay(ctx *c, const Onnx__NodeProto *n, dyn_layer *l, value *const *ins,
                 int nin, const layout *lay_out);
/* add_node_lay with the plain layout. */
int add_node(ctx *c, const Onnx__NodeProto *n, dyn_layer *l, value *const *ins, int nin);
/* Copies n floats into parameter `name` of l (which must hold exactly n). */
void param_set(dyn_layer *l, const char *name, const float *src, int64_t n);
/* Defines n's (only) output as an alias of `in` (no layer). */
int node_alias(ctx *c, const Onnx__NodeProto *n, value *in);

/* ---- onnx_layout.c: layout algebra (pure) ---------------------------------------------------- */

/* The plain layout of an engine shape (batch 1 in d[0]). */
void lay_plain(layout *L, const dyn_shape *s);
/* Index in L->lo of the first atom of dim d; dim d's size with batch 1; the dim holding the
 * batch. */
int lay_first(const layout *L, int d);
int64_t lay_dim(const layout *L, int d);
int lay_bdim(const layout *L);
/* Whether the batch comes after the other atom of its dim (a [T*N, E] view). */
int lay_bafter(const layout *L);
int lay_eq(const layout *A, const layout *B);
/* Drops size-1 atoms, merges atoms adjacent in memory and within one dim. */
void lay_normalize(layout *L);
/* Canonical memory order: the batch, then the other atoms in logical order. */
void lay_canon_order(const layout *L, int *order);
int lay_is_canon(const layout *L);
/* Engine shape of the canonical form; emap[d] = the engine axis of dim d (-1: the batch alone).
 * -1 past DYN_MAX_DIMS. */
int lay_canon_shape(const layout *L, dyn_shape *s, int *emap);
/* Engine shape of a node producing L: canonical when L is, else [1, numel]. */
void lay_engine_shape(const layout *L, dyn_shape *s);
/* Logical shape with batch 1 into dims[0..L->nd-1]. */
void lay_shape(const layout *L, int64_t *dims);
/* "[N, 16, 3]"-style text of the logical shape (N marks the batch). */
const char *lay_txt(const layout *L, char *buf, size_t n);
/* Transpose by perm (a permutation, checked by the caller). */
void lay_transpose(layout *L, const int64_t *perm);
/* Regroups the atoms into nt dims of sizes t (tb marks the batch dim); -1 when the memory order
 * does not allow it (L then unspecified). */
int lay_reshape(layout *L, const int64_t *t, const int *tb, int nt);
/* out[f] = the flat logical index of per-sample memory element f (numel of them). */
void lay_logical_index(const layout *L, int64_t *out, int64_t numel);
/* Canonical layout of dims[0..nd-1] with the batch in dim bd (after its other atom: bafter). */
void lay_build(layout *L, int nd, const int64_t *dims, int bd, int bafter);
/* Canonical layout of L's shape with dim d resized to size (remove: dropped). */
void lay_redim(layout *L, int d, int64_t size, int remove);
/* Whether activation v is plain: batch alone in dim 0, engine shape = logical shape. */
int lay_plain_ok(const value *v);

/* ---- onnx_layout.c: emitting layout changes -------------------------------------------------- */

/* A new JSON array of v[0..n-1] (NULL: out of memory). */
json_t *jints(const int64_t *v, int n);
/* Appends l reading x without defining an ONNX value; *out = the result, with layout lay. */
int add_anon(ctx *c, const Onnx__NodeProto *n, dyn_layer *l, const value *x,
             const layout *lay, value *out);
/* A permute layer: x's atoms into memory order `order`, memory atom sa (-1: none) sliced to len
 * elements from start by step, logical dim drop (-1: none) removed; the result in *out. */
int emit_permute(ctx *c, const Onnx__NodeProto *n, const value *x, const int *order, int sa,
                 int64_t start, int64_t len, int64_t step, int drop, value *out);
/* Rewrites v in place (later readers share it) into its canonical layout. */
int need_canon(ctx *c, const Onnx__NodeProto *n, value *v);
/* Rewrites v in place into plain layout, or fails when the batch cannot lead alone. */
int make_plain(ctx *c, const Onnx__NodeProto *n, value *v);
/* Defines output o of n as x with layout lay: a view of table value x (anon = 0, no layer) or
 * the anonymous result of a layer just added (anon = 1). */
int def_view(ctx *c, const Onnx__NodeProto *n, size_t o, const value *x, int anon,
             const layout *lay);

/* ---- onnx_shape.c: constants ----------------------------------------------------------------- */

/* A zeroed constant of shape dims[0..ndim-1] (bounded size) into *k. */
int cst_alloc(ctx *c, const Onnx__NodeProto *n, cst *k, int is_float, int ndim,
              const int64_t *dims);
/* A copy of s (with its bexp) into *d. */
int cst_copy(ctx *c, const Onnx__NodeProto *n, const cst *s, cst *d);
/* Defines output o of n as constant *k; k's arrays move to the table (freed on error too). */
int def_const(ctx *c, const Onnx__NodeProto *n, size_t o, cst *k);
/* Element e of an INT64 constant: 1 with *k = the factor when it is k * N, 0 with *k = the
 * value when fixed, -1 when not linear in the batch. */
int cst_sym(const cst *t, int64_t e, int64_t *k);
/* v must be a constant scalar or 1-D INT64 of at most maxn values not depending on the batch:
 * its values into out, their count into *cnt. `what` names it in messages. */
int cst_fixed_ints(ctx *c, const Onnx__NodeProto *n, const value *v, const char *what,
                   int64_t *out, int64_t maxn, int64_t *cnt);
/* Input i of n, which must be a constant (or folded from shapes). */
int need_const(ctx *c, const Onnx__NodeProto *n, size_t i, value **v);
/* An operator's axes: attribute `name` before opset `from`, else input `in`; *present = 0 when
 * absent. */
int read_axes(ctx *c, const Onnx__NodeProto *n, const char *name, int64_t from, size_t in,
              int64_t *axes, int64_t *cnt, int *present);
/* Normalizes axis *a of a rank-r tensor into 0..r-1 (out of range is an error). */
int norm_axis(ctx *c, const Onnx__NodeProto *n, int64_t *a, int r);
/* The arith of ONNX op name "Add" .. "Equal", -1 for others. */
int arith_of(const char *op);
/* Defines n's output as a (op) b of two constants, with ONNX broadcasting. */
int fold_binary(ctx *c, const Onnx__NodeProto *n, arith k, const value *a, const value *b);

/* ---- operators: called by do_node (and by one another where noted) --------------------------- */

/* onnx_shape.c */
int op_shape(ctx *c, const Onnx__NodeProto *n);
int op_cast(ctx *c, const Onnx__NodeProto *n);
int op_constant_of_shape(ctx *c, const Onnx__NodeProto *n);
int op_where(ctx *c, const Onnx__NodeProto *n);
int op_expand(ctx *c, const Onnx__NodeProto *n);
int op_constant(ctx *c, const Onnx__NodeProto *n);

/* onnx_tr.c */
int op_transpose(ctx *c, const Onnx__NodeProto *n);
/* Unsqueeze, or Squeeze when squeeze. */
int op_unsqueeze(ctx *c, const Onnx__NodeProto *n, int squeeze);
/* Reshape of activation x to the INT64 shape s (from op_reshape when no flatten fits). */
int op_reshape_view(ctx *c, const Onnx__NodeProto *n, value *x, const value *s,
                    int64_t allowzero);
int op_gather(ctx *c, const Onnx__NodeProto *n);
int op_slice(ctx *c, const Onnx__NodeProto *n);
int op_split(ctx *c, const Onnx__NodeProto *n);
/* Element-wise layer `op` (erf, sqrt, pow with attrs, stolen) on an activation in any layout;
 * a constant input is folded. */
int op_unary_any(ctx *c, const Onnx__NodeProto *n, const char *op, json_t *attrs);
/* Add / Sub / Mul / Div / Pow / Equal the CNN paths do not take: folded, affine or binary. */
int op_arith(ctx *c, const Onnx__NodeProto *n, arith k, value *a, value *b);
/* Softmax of x over axis (normalized) as a layer (op_softmax when it is not the dropped one). */
int op_softmax_tr(ctx *c, const Onnx__NodeProto *n, value *x, int64_t axis);
int op_reduce_mean(ctx *c, const Onnx__NodeProto *n);
int op_layernorm(ctx *c, const Onnx__NodeProto *n);
/* MatMul of two activations a x b (from op_matmul). */
int op_matmul_acts(ctx *c, const Onnx__NodeProto *n, value *a, value *b);

/* onnx_cnn.c; idx is the node's index in the graph (layer names). */
int op_conv(ctx *c, const Onnx__NodeProto *n, int idx);
int op_gemm(ctx *c, const Onnx__NodeProto *n, int idx);
int op_matmul(ctx *c, const Onnx__NodeProto *n, int idx);
/* Layer `op` without attributes on a plain activation (4-D when need4). */
int op_simple(ctx *c, const Onnx__NodeProto *n, int idx, const char *op, int need4);
/* MaxPool, or AveragePool when is_avg. */
int op_pool(ctx *c, const Onnx__NodeProto *n, int idx, int is_avg);
int op_batchnorm(ctx *c, const Onnx__NodeProto *n, int idx);
int op_flatten(ctx *c, const Onnx__NodeProto *n, int idx);
int op_reshape(ctx *c, const Onnx__NodeProto *n, int idx);
/* Sub / Mul / Div (`op`: the engine op name). */
int op_binary(ctx *c, const Onnx__NodeProto *n, int idx, const char *op);
int op_clip(ctx *c, const Onnx__NodeProto *n, int idx);
int op_concat(ctx *c, const Onnx__NodeProto *n, int idx);
int op_add(ctx *c, const Onnx__NodeProto *n, int idx);
/* Identity and Dropout (inference): aliases. */
int op_dropout_identity(ctx *c, const Onnx__NodeProto *n);
int op_softmax(ctx *c, const Onnx__NodeProto *n);

#endif
