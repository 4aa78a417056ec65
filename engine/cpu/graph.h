/* graph.h — internal: the fused inference graph of a model at one batch size (oneDNN).
 *
 * The layer-by-layer executor (model.c) runs every node on NCHW tensors: a oneDNN convolution
 * there reorders its input into the layout it prefers and its output back (cpu/dnnl_conv.h),
 * and ReLU, residual adds and pooling are separate passes over memory. A graph runs the
 * convolutional part of a model the way ONNX Runtime's NCHWc path does:
 *   - nodes oneDNN can run — dense convolutions (conv2d; dyn_conv2d where it runs materialized,
 *     as_dense_conv), relu, add of two same-shape tensors, maxpool2d, globalavgpool — keep their
 *     activations in the layout oneDNN chose (nChw16c / nhwc ...), passed from node to node
 *     without reorders;
 *   - a convolution whose only consumer is a ReLU applies it as a post-op; one whose only
 *     consumer is an add (the residual connection) accumulates into the add's other operand
 *     (a `sum` post-op, the operand copied into its output first) and takes the add's ReLU too;
 *   - the other nodes run their own forward on NCHW tensors in the exec's buffers; a graph
 *     node read by one of them (or the model's output) is reordered to NCHW once, after it ran;
 *   - activations share one arena by liveness (a slot is reused once its last reader ran);
 *     weights are reordered once, when the graph is built.
 *   - built with DYN_GRAPH_WINO, its 3x3 stride-1 convolutions run oneDNN's Winograd kernels
 *     (F(2x2,3x3) or F(4x4,3x3): 2.25-4x fewer multiplications) where oneDNN has them for the
 *     shape, and
 *     every convolution keeps its activations blocked by 16 channels (nChw16c), their layout;
 *     model.c builds both kinds and keeps the faster by timing (dyn_conv_winograd).
 * A graph belongs to one dyn_exec and one batch size, built for the thread count of the
 * moment: it is stale when that changes or when a convolution's weights were prepared again
 * (dyn_layer.gen), and is then rebuilt.
 */
#ifndef DYN_GRAPH_H
#define DYN_GRAPH_H

#include "../model.h"

typedef struct dyn_graph dyn_graph;

/* dyn__graph_new flags. */
enum {
    /* 3x3 stride-1 convolutions run oneDNN's Winograd algorithm where oneDNN has it for the
     * shape (else the direct one); activations blocked by 16 channels. */
    DYN_GRAPH_WINO = 1,
    /* Every DyN convolution holding its dense kernel runs in the graph, materialized, also
     * where its own measurement chose the weight-free path (as_dense_conv's `held`). */
    DYN_GRAPH_HELD = 2,
};

/* The graph of exec e's model at `batch` rows (1..e->max_batch), built with flags (DYN_GRAPH_*).
 * Returns NULL with err set: DYN_EUNSUP when no node would run in it (nothing to gain), another
 * code when oneDNN failed. Free with dyn__graph_free. */
dyn_graph *dyn__graph_new(dyn_exec *e, int batch, int flags, dyn_err *err);
void dyn__graph_free(dyn_graph *g);
/* 1 when the thread count or a convolution's weights changed since g was built. */
int dyn__graph_stale(const dyn_graph *g);
/* Runs the forward of g's batch on e->input (already filled); the output is in e->act of the
 * last node, like dyn_exec_forward's. */
void dyn__graph_forward(dyn_graph *g, dyn_exec *e);
/* Nodes g runs in oneDNN (fused ones included) and convolutions with a fused post-op. */
void dyn__graph_counts(const dyn_graph *g, int *nodes, int *fused);
/* Convolutions of g that run Winograd; *eligible (may be NULL): those that could (3x3, stride
 * 1, undilated, ungrouped), whether g was built with DYN_GRAPH_WINO or not. */
int dyn__graph_winograd(const dyn_graph *g, int *eligible);

/* The layer-by-layer forward of `batch` rows on e->input (model.c). */
void dyn__exec_run_plain(dyn_exec *e, int batch);

#endif
