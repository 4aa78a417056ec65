/* model.h — a model is a DAG of layers in topological order; an exec runs it.
 *
 * dyn_model holds the layers (parameters, attributes) and the metadata a served model needs
 * (labels, input preprocessing). It is read-only during inference, so many dyn_exec may run one
 * model at once. A dyn_exec owns every buffer one run needs (activations, gradients, scratch)
 * for up to max_batch samples, allocated once: no allocation on the forward path.
 *
 * Node k reads its inputs from earlier nodes (index < k) or from the model input (-1). The
 * model's output is the last node. A sequential model is the special case inputs = {k-1}.
 */
#ifndef DYN_MODEL_H
#define DYN_MODEL_H

#include "layer.h"

typedef struct dyn_node {
    dyn_layer *layer; /* owned by the model */
    int ninputs;
    int inputs[DYN_LAYER_MAX_INPUTS]; /* -1 = model input */
} dyn_node;

typedef struct dyn_model {
    int nnodes, cap;
    dyn_node *nodes;
    dyn_shape input;  /* per-sample input shape, without the batch: (C, H, W) or (F) */
    int nlabels;
    char **labels;    /* owned; may be NULL */
    json_t *preprocess; /* owned JSON object (resize, channels, mean/std, ...); may be NULL */
    json_t *info;       /* owned JSON object: free-form provenance (training command, ...) */
    struct dyn_place *place; /* the device backend it is placed on (backend.h); NULL: CPU */
} dyn_model;

/* New empty model taking per-sample input shape `input` (ndim 1..3). Free with
 * dyn_model_free. NULL on ENOMEM. */
dyn_model *dyn_model_new(const dyn_shape *input);
void dyn_model_free(dyn_model *m);

/* Appends layer l (ownership moves to the model, also on failure) reading from `inputs`.
 * Returns the node index, or a negative DYN_E* code with err set (bad input index, arity, or
 * shapes that do not fit). */
int dyn_model_add(dyn_model *m, dyn_layer *l, const int *inputs, int ninputs, dyn_err *err);
/* Appends reading from the previous node (or the input for the first). */
int dyn_model_add_seq(dyn_model *m, dyn_layer *l, dyn_err *err);

/* Output shape of every node for batch `batch`; shapes must hold nnodes entries. */
int dyn_model_shapes(const dyn_model *m, int batch, dyn_shape *shapes, dyn_err *err);
/* Randomly initializes all layers then prepares them. */
void dyn_model_init(dyn_model *m, uint64_t seed);
/* Calls prepare on every layer (after parameters change; on a placed model, the device
 * prepare of placed layers: backend.h). */
int dyn_model_prepare(dyn_model *m, dyn_err *err);
void dyn_model_zero_grad(dyn_model *m);
/* Sets labels (copied). */
int dyn_model_labels_set(dyn_model *m, const char *const *labels, int n);
/* Number of classes = numel of the last node's output per sample. */
int64_t dyn_model_outputs(const dyn_model *m);
dyn_layer *dyn_model_layer_find(dyn_model *m, const char *name);

/* Model totals of the per-layer stats. */
void dyn_model_stats(const dyn_model *m, dyn_layer_stats *per_layer /* nnodes, may be NULL */,
                     dyn_layer_stats *total);

typedef struct dyn_exec {
    dyn_model *model;
    int max_batch, training, batch;
    dyn_tensor input;   /* [max_batch, ...input] */
    dyn_tensor *act;    /* per node output, [max_batch, ...] */
    dyn_tensor *grad;   /* per node output gradient (training only) */
    dyn_tensor gtmp;    /* largest activation, for summing gradients of shared inputs */
    dyn_tensor out;     /* view of the last forward's output (batch rows) */
    float *scratch;     /* one block shared in turn by the nodes' scratch areas */
    size_t *scratch_off;
    unsigned char *written; /* backward: which node gradients hold a contribution */
    struct dyn_exec_graphs *graphs; /* inference: fused oneDNN graphs by batch size (model.c) */
    /* A placed model's exec (backend.h): device buffers. Then `act` / `grad` hold host
     * copies only where the CPU needs them (layers left on the CPU, their inputs, the output):
     * other entries are empty. */
    struct dyn_exec_dev *dev;
} dyn_exec;

/* Allocates buffers for running `m` on up to max_batch samples. training = 1 also allocates
 * gradients and keeps what backward needs. m must outlive the exec. Free with dyn_exec_free.
 * NULL with err on failure. */
dyn_exec *dyn_exec_new(dyn_model *m, int max_batch, int training, dyn_err *err);
void dyn_exec_free(dyn_exec *e);

/* Runs the model on `batch` samples at x (batch * numel(input) floats, copied in).
 * Returns the output node's activation (a host view owned by e, valid until the next call).
 * On a model placed on a device (backend.h) it returns NULL when the device fails (a kernel's
 * error, device memory): dyn_exec_error says why; on the CPU it never fails.
 * Inference execs may run the model through a fused oneDNN graph (cpu/graph.h: under the
 * conv setting `graph`, or `auto` where it measured faster for this batch size on the first
 * forward of that size); the other nodes' activations (e->act) then hold nothing meaningful:
 * callers that read them set the conv setting im2col or dnnl(-nchw) for the thread. */
const dyn_tensor *dyn_exec_forward(dyn_exec *e, const float *x, int batch);
/* Back-propagates dout (the gradient of the loss w.r.t. the output, batch * outputs floats)
 * through the last forward, accumulating parameter gradients. Training execs only. Returns 0,
 * or (placed models only) a DYN_E* code: dyn_exec_error says why. */
int dyn_exec_backward(dyn_exec *e, const float *dout);
/* The message of the last failed forward / backward of e ("" when none). */
const char *dyn_exec_error(const dyn_exec *e);

#endif
