/* model.c — the model DAG and its executor.
 *
 * Shapes are inferred once per exec (for max_batch) and narrowed to the live batch on each
 * forward: every op keeps the batch as dimension 0. In training, each node has its own scratch
 * area (a training forward leaves there what its backward needs); in inference all nodes share
 * one area, sized for the largest. Gradients of a node read by several consumers are summed:
 * the first consumer writes the node's gradient buffer, later ones write a temporary that is
 * then added.
 */
#include "model.h"
#include "backend_impl.h"
#include "cpu/dnnl_conv.h"
#include "cpu/graph.h"

#include <string.h>

dyn_model *dyn_model_new(const dyn_shape *input) {
    if (input->ndim < 1 || input->ndim > DYN_MAX_DIMS - 1) return NULL;
    dyn_model *m = calloc(1, sizeof *m);
    if (!m) return NULL;
    m->input = *input;
    return m;
}

void dyn_model_free(dyn_model *m) {
    if (!m) return;
    dyn_model_unplace(m);
    for (int i = 0; i < m->nnodes; i++) dyn_layer_free(m->nodes[i].layer);
    free(m->nodes);
    for (int i = 0; i < m->nlabels; i++) free(m->labels[i]);
    free(m->labels);
    json_decref(m->preprocess);
    json_decref(m->info);
    free(m);
}

/* Shape of the model input with batch `batch` (backend_impl.h). */
dyn_shape dyn__model_input_shape(const dyn_model *m, int batch) {
    dyn_shape s;
    memset(&s, 0, sizeof s);
    s.ndim = m->input.ndim + 1;
    s.d[0] = batch;
    for (int i = 0; i < m->input.ndim; i++) s.d[i + 1] = m->input.d[i];
    return s;
}

static int node_infer(const dyn_model *m, int k, const dyn_shape *shapes, const dyn_shape *in0,
                      dyn_shape *out, dyn_err *err) {
    const dyn_node *nd = &m->nodes[k];
    dyn_shape ins[DYN_LAYER_MAX_INPUTS];
    for (int i = 0; i < nd->ninputs; i++) ins[i] = nd->inputs[i] < 0 ? *in0 : shapes[nd->inputs[i]];
    if (nd->layer->ops->infer(nd->layer, ins, out, err))
        return dyn_err_prefix(err, "node %d ('%s', %s)", k, nd->layer->name, nd->layer->ops->name);
    if (out->ndim < 1 || out->d[0] != in0->d[0])
        return dyn_err_set(err, DYN_EINVAL, "node %d ('%s'): output does not keep the batch dimension",
                           k, nd->layer->name);
    /* Every shape a later node (or the exec) multiplies out is bounded here. */
    char what[96];
    snprintf(what, sizeof what, "node %d ('%s', %s): output", k, nd->layer->name, nd->layer->ops->name);
    int64_t numel;
    return dyn_numel_checked(out->ndim, out->d, DYN_TENSOR_MAX_NUMEL, &numel, err, what);
}

int dyn_model_shapes(const dyn_model *m, int batch, dyn_shape *shapes, dyn_err *err) {
    dyn_shape in0 = dyn__model_input_shape(m, batch);
    for (int k = 0; k < m->nnodes; k++) {
        int rc = node_infer(m, k, shapes, &in0, &shapes[k], err);
        if (rc) return rc;
    }
    return 0;
}

int dyn_model_add(dyn_model *m, dyn_layer *l, const int *inputs, int ninputs, dyn_err *err) {
    int rc = 0;
    if (ninputs != l->ninputs || ninputs < 1 || ninputs > DYN_LAYER_MAX_INPUTS) {
        rc = dyn_err_set(err, DYN_EINVAL, "layer '%s' (%s) takes %d input(s), got %d", l->name,
                         l->ops->name, l->ninputs, ninputs);
        goto fail;
    }
    for (int i = 0; i < ninputs; i++) {
        if (inputs[i] < -1 || inputs[i] >= m->nnodes) {
            rc = dyn_err_set(err, DYN_EINVAL,
                             "layer '%s': input %d refers to node %d, which is not an earlier node",
                             l->name, i, inputs[i]);
            goto fail;
        }
    }
    for (int i = 0; i < m->nnodes; i++) {
        if (strcmp(m->nodes[i].layer->name, l->name) == 0) {
            rc = dyn_err_set(err, DYN_EINVAL, "two layers are named '%s'", l->name);
            goto fail;
        }
    }
    if (m->nnodes == m->cap) {
        int cap = m->cap ? 2 * m->cap : 16;
        dyn_node *n = realloc(m->nodes, (size_t)cap * sizeof *n);
        if (!n) {
            rc = dyn_err_set(err, DYN_ENOMEM, "out of memory adding layer '%s'", l->name);
            goto fail;
        }
        m->nodes = n;
        m->cap = cap;
    }
    dyn_node *nd = &m->nodes[m->nnodes];
    memset(nd, 0, sizeof *nd);
    nd->layer = l;
    nd->ninputs = ninputs;
    memcpy(nd->inputs, inputs, (size_t)ninputs * sizeof(int));
    m->nnodes++;
    /* Check the new node's shapes fit (batch 1). */
    dyn_shape *shapes = malloc((size_t)m->nnodes * sizeof *shapes);
    if (!shapes) {
        m->nnodes--;
        rc = dyn_err_set(err, DYN_ENOMEM, "out of memory");
        goto fail;
    }
    rc = dyn_model_shapes(m, 1, shapes, err);
    free(shapes);
    if (rc) {
        m->nnodes--;
        goto fail;
    }
    return m->nnodes - 1;
fail:
    dyn_layer_free(l);
    return rc;
}

int dyn_model_add_seq(dyn_model *m, dyn_layer *l, dyn_err *err) {
    int in = m->nnodes - 1;
    return dyn_model_add(m, l, &in, 1, err);
}

void dyn_model_init(dyn_model *m, uint64_t seed) {
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    for (int k = 0; k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer;
        if (l->ops->init) l->ops->init(l, &r);
    }
    DYN_ASSERT(dyn_model_prepare(m, NULL) == 0);
}

int dyn_model_prepare(dyn_model *m, dyn_err *err) {
    if (m->place) return dyn__place_prepare(m, err);
    for (int k = 0; k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer;
        if (l->ops->prepare) {
            int rc = l->ops->prepare(l, err);
            if (rc) return dyn_err_prefix(err, "preparing layer '%s'", l->name);
        }
    }
    return 0;
}

void dyn_model_zero_grad(dyn_model *m) {
    /* On a device a failure here is the device's: it surfaces at the next forward. */
    if (m->place) {
        dyn__place_zero_grad(m, NULL);
        return;
    }
    for (int k = 0; k < m->nnodes; k++) dyn_layer_zero_grad(m->nodes[k].layer);
}

int dyn_model_labels_set(dyn_model *m, const char *const *labels, int n) {
    char **l = calloc((size_t)(n > 0 ? n : 1), sizeof *l);
    if (!l) return DYN_ENOMEM;
    for (int i = 0; i < n; i++) {
        l[i] = strdup(labels[i]);
        if (!l[i]) {
            for (int j = 0; j < i; j++) free(l[j]);
            free(l);
            return DYN_ENOMEM;
        }
    }
    for (int i = 0; i < m->nlabels; i++) free(m->labels[i]);
    free(m->labels);
    m->labels = l;
    m->nlabels = n;
    return 0;
}

int64_t dyn_model_outputs(const dyn_model *m) {
    if (m->nnodes == 0) return dyn_shape_numel(&m->input);
    dyn_shape *shapes = malloc((size_t)m->nnodes * sizeof *shapes);
    if (!shapes || dyn_model_shapes(m, 1, shapes, NULL)) {
        free(shapes);
        return -1;
    }
    int64_t n = dyn_shape_numel(&shapes[m->nnodes - 1]);
    free(shapes);
    return n;
}

dyn_layer *dyn_model_layer_find(dyn_model *m, const char *name) {
    for (int k = 0; k < m->nnodes; k++)
        if (strcmp(m->nodes[k].layer->name, name) == 0) return m->nodes[k].layer;
    return NULL;
}

void dyn_model_stats(const dyn_model *m, dyn_layer_stats *per_layer, dyn_layer_stats *total) {
    memset(total, 0, sizeof *total);
    dyn_shape *shapes = malloc((size_t)(m->nnodes + 1) * sizeof *shapes);
    if (!shapes) return;
    dyn_shape in0 = dyn__model_input_shape(m, 1);
    if (dyn_model_shapes(m, 1, shapes, NULL)) {
        free(shapes);
        return;
    }
    double ent = 0;
    int ndyn = 0;
    for (int k = 0; k < m->nnodes; k++) {
        const dyn_node *nd = &m->nodes[k];
        dyn_shape ins = nd->inputs[0] < 0 ? in0 : shapes[nd->inputs[0]];
        dyn_layer_stats st;
        dyn_layer_stats_get(nd->layer, &ins, &st);
        if (per_layer) per_layer[k] = st;
        total->stored_floats += st.stored_floats;
        total->memory_floats += st.memory_floats;
        total->macs += st.macs;
        if (st.is_dyn) {
            ent += st.entropy_bits;
            ndyn++;
        }
    }
    total->is_dyn = ndyn > 0;
    total->entropy_bits = ndyn ? ent / ndyn : 0;
    free(shapes);
}

/* ---- exec ---------------------------------------------------------------------------- */

static dyn_tensor view_batch(const dyn_tensor *t, int batch) {
    dyn_shape s = dyn_tensor_shape(t);
    s.d[0] = batch;
    return dyn_tensor_view(t->data, s.ndim, s.d);
}

/* ---- fused graphs (cpu/graph.h), at most EXEC_GRAPHS batch sizes per exec ---- */

#define EXEC_GRAPHS 4

typedef struct exec_graph {
    int batch, threads, use; /* batch 0: an empty slot; use: 1 the graph, 0 layer by layer */
    int flags;               /* the graph's DYN_GRAPH_* (a rebuild keeps them) */
    dyn_graph *g;
    unsigned long stamp;
} exec_graph;

struct dyn_exec_graphs {
    exec_graph slot[EXEC_GRAPHS];
    unsigned long clock;
};

static void graphs_free(struct dyn_exec_graphs *gs) {
    if (!gs) return;
    for (int i = 0; i < EXEC_GRAPHS; i++) dyn__graph_free(gs->slot[i].g);
    free(gs);
}

#define EXEC_CANDS 3

/* Whether a DyN convolution of e's model takes another path than materialized at `batch` while
 * holding its dense kernel: a graph built with DYN_GRAPH_HELD then differs from one without. */
static int exec_held_differs(const dyn_exec *e, int batch) {
    const dyn_model *m = e->model;
    dyn_shape *sh = malloc((size_t)m->nnodes * sizeof *sh);
    int r = 0;
    if (!sh || dyn_model_shapes(m, batch, sh, NULL)) {
        free(sh);
        return 1; /* cannot tell: build both */
    }
    for (int k = 0; k < m->nnodes && !r; k++) {
        const dyn_layer *l = m->nodes[k].layer;
        if (!l->ops->as_dense_conv || m->nodes[k].ninputs < 1) continue;
        const int p = m->nodes[k].inputs[0];
        const dyn_shape in = p < 0 ? dyn__model_input_shape(m, batch) : sh[p];
        dyn_dense_conv v;
        r = in.ndim == 4 && l->ops->as_dense_conv(l, &in, 1, &v) &&
            !l->ops->as_dense_conv(l, &in, 0, &v);
    }
    free(sh);
    return r;
}

/* Times the candidates of a new slot: the layer-by-layer forward (when plain) and the graphs
 * g[0..EXEC_CANDS) that are not NULL. Each runs once, then all twice, alternating (the first
 * run of a graph pays for its first touch of memory; the caller's own forward was the
 * layer-by-layer one's); the fastest by its best time wins. Returns the winner, -1 for layer
 * by layer, else its index in g; its output is in place. */
static int exec_graph_measure(dyn_exec *e, int batch, int plain, dyn_graph *const *g) {
    double best[EXEC_CANDS + 1];
    int last = -2, w = -2;
    for (int c = 0; c <= EXEC_CANDS; c++) best[c] = 1e300;
    for (int r = 0; r < 3; r++)
        for (int c = plain ? -1 : 0; c < EXEC_CANDS; c++) {
            if ((c >= 0 && !g[c]) || (r == 0 && c < 0)) continue;
            const double t0 = dyn_now();
            if (c < 0) dyn__exec_run_plain(e, batch);
            else dyn__graph_forward(g[c], e);
            if (r > 0) best[c + 1] = DYN_MIN(best[c + 1], dyn_now() - t0);
            last = c;
        }
    for (int c = plain ? -1 : 0; c < EXEC_CANDS; c++)
        if ((c < 0 || g[c]) && (w == -2 || best[c + 1] < best[w + 1])) w = c;
    if (w != last) {
        if (w < 0) dyn__exec_run_plain(e, batch);
        else dyn__graph_forward(g[w], e);
    }
    return w;
}

/* Runs the forward through a graph when the setting and (auto) the measurement say so: returns
 * 1 when it did, 0 for the layer-by-layer forward. */
static int exec_graph_forward(dyn_exec *e, int batch) {
    const dyn_conv_impl m = dyn_conv_impl_get();
    if (m != DYN_CONV_AUTO && m != DYN_CONV_GRAPH) return 0;
    if (!e->graphs && !(e->graphs = calloc(1, sizeof *e->graphs))) return 0;
    struct dyn_exec_graphs *gs = e->graphs;
    const int threads = dyn_threads_get();
    exec_graph *s = NULL;
    for (int i = 0; i < EXEC_GRAPHS && !s; i++)
        if (gs->slot[i].batch == batch) s = &gs->slot[i];
    if (s && s->threads != threads) { /* measured for another thread count: again */
        dyn__graph_free(s->g);
        *s = (exec_graph){0};
        s = NULL;
    } else if (s && s->g && dyn__graph_stale(s->g)) { /* new weights: the same choice */
        dyn__graph_free(s->g);
        if (!(s->g = dyn__graph_new(e, batch, s->flags, NULL))) s->use = 0;
    }
    if (!s) { /* an empty slot, else the least recently used */
        s = &gs->slot[0];
        for (int i = 0; i < EXEC_GRAPHS; i++)
            if (!gs->slot[i].batch || gs->slot[i].stamp < s->stamp) s = &gs->slot[i];
        dyn__graph_free(s->g);
        *s = (exec_graph){.batch = batch, .threads = threads};
        s->stamp = ++gs->clock;
        /* auto: a layer-by-layer forward first, where the layers settle their own choices
         * (dense implementations; DyN native or materialized, each measured against its own
         * layer-by-layer dense forward). Then the graphs: [0] every DyN convolution holding
         * its kernel in it, materialized (DYN_GRAPH_HELD: in a graph the dense convolution is
         * fused and may run Winograd, so a layer's own choice of native undervalues it);
         * [1] the same with Winograd convolutions, where the model has 3x3 stride-1 ones and
         * oneDNN runs them (winograd setting auto; on: [0] has them, off: none); [2] the
         * layers' own choices, when they differ from [0] (a DyN convolution kept native). The
         * fastest of all wins (exec_graph_measure). A forced graph measures its graphs only. */
        if (m == DYN_CONV_AUTO) dyn__exec_run_plain(e, batch);
        const dyn_conv_winograd ws = dyn_conv_winograd_get();
        const int f0 = DYN_GRAPH_HELD | (ws == DYN_WINO_ON ? DYN_GRAPH_WINO : 0);
        dyn_graph *g[EXEC_CANDS] = {dyn__graph_new(e, batch, f0, NULL), NULL, NULL};
        int flags[EXEC_CANDS] = {f0, f0 | DYN_GRAPH_WINO, f0 & ~DYN_GRAPH_HELD};
        int ok = 0, n0 = 0, n2 = 0, fu = 0;
        if (g[0] && ws == DYN_WINO_AUTO && dyn__graph_winograd(g[0], &ok) == 0 && ok > 0 &&
            (g[1] = dyn__graph_new(e, batch, flags[1], NULL)) &&
            dyn__graph_winograd(g[1], NULL) == 0) {
            dyn__graph_free(g[1]); /* oneDNN has no Winograd kernel for these shapes here */
            g[1] = NULL;
        }
        if ((!g[0] || exec_held_differs(e, batch)) &&
            (g[2] = dyn__graph_new(e, batch, flags[2], NULL)) && g[0]) {
            dyn__graph_counts(g[0], &n0, &fu);
            dyn__graph_counts(g[2], &n2, &fu);
            if (n2 == n0) { /* no layer left out after all: the same graph as [0] */
                dyn__graph_free(g[2]);
                g[2] = NULL;
            }
        }
        int w = -1, ng = 0;
        for (int c = 0; c < EXEC_CANDS; c++) ng += g[c] != NULL;
        if (ng == 0) return m == DYN_CONV_AUTO; /* auto: its forward's output is in place */
        if (m == DYN_CONV_AUTO || ng > 1) {
            w = exec_graph_measure(e, batch, m == DYN_CONV_AUTO, g);
        } else {
            for (int c = 0; c < EXEC_CANDS; c++)
                if (g[c]) w = c;
            dyn__graph_forward(g[w], e);
        }
        s->use = w >= 0;
        s->g = w >= 0 ? g[w] : NULL;
        s->flags = w >= 0 ? flags[w] : 0;
        for (int c = 0; c < EXEC_CANDS; c++)
            if (c != w) dyn__graph_free(g[c]);
        return 1; /* the output of the last run is in place */
    }
    s->stamp = ++gs->clock;
    if (!s->use) return 0;
    dyn__graph_forward(s->g, e);
    return 1;
}

void dyn_exec_free(dyn_exec *e) {
    if (!e) return;
    graphs_free(e->graphs);
    dyn__exec_dev_free(e);
    for (int k = 0; e->act && k < e->model->nnodes; k++) dyn_tensor_release(&e->act[k]);
    for (int k = 0; e->grad && k < e->model->nnodes; k++) dyn_tensor_release(&e->grad[k]);
    free(e->act);
    free(e->grad);
    dyn_tensor_release(&e->input);
    dyn_tensor_release(&e->gtmp);
    dyn_free(e->scratch);
    free(e->scratch_off);
    free(e->written);
    free(e);
}

dyn_exec *dyn_exec_new(dyn_model *m, int max_batch, int training, dyn_err *err) {
    if (max_batch < 1 || m->nnodes < 1) {
        dyn_err_set(err, DYN_EINVAL, "exec needs max_batch >= 1 and a non-empty model");
        return NULL;
    }
    dyn_exec *e = calloc(1, sizeof *e);
    dyn_shape *shapes = malloc((size_t)m->nnodes * sizeof *shapes);
    if (!e || !shapes) goto nomem;
    e->model = m;
    e->max_batch = max_batch;
    e->training = training;
    e->act = calloc((size_t)m->nnodes, sizeof *e->act);
    e->grad = calloc((size_t)m->nnodes, sizeof *e->grad);
    e->scratch_off = calloc((size_t)m->nnodes + 1, sizeof *e->scratch_off);
    e->written = calloc((size_t)m->nnodes, 1);
    if (!e->act || !e->grad || !e->scratch_off || !e->written) goto nomem;
    if (dyn_model_shapes(m, max_batch, shapes, err)) goto fail;
    /* A placed model: device buffers; host ones only where the CPU needs them (e->written,
     * unused until the first backward clears it, marks which). */
    if (m->place) {
        if (dyn__exec_dev_new(e, shapes, e->written, err)) goto fail;
    }
    dyn_shape in0 = dyn__model_input_shape(m, max_batch);
    if (dyn_tensor_init_shape(&e->input, &in0, err)) goto fail;
    int64_t largest = dyn_shape_numel(&in0);
    size_t total = 0, most = 0;
    for (int k = 0; k < m->nnodes; k++) {
        const dyn_node *nd = &m->nodes[k];
        if (m->place && !e->written[k]) continue; /* runs on the device, read there only */
        if (dyn_tensor_init_shape(&e->act[k], &shapes[k], err)) goto fail;
        if (training && dyn_tensor_init_shape(&e->grad[k], &shapes[k], err)) goto fail;
        largest = DYN_MAX(largest, dyn_shape_numel(&shapes[k]));
        dyn_shape ins[DYN_LAYER_MAX_INPUTS];
        for (int i = 0; i < nd->ninputs; i++)
            ins[i] = nd->inputs[i] < 0 ? in0 : shapes[nd->inputs[i]];
        size_t s = nd->layer->ops->scratch ? nd->layer->ops->scratch(nd->layer, ins, training) : 0;
        s = (s + 15) / 16 * 16; /* keep every area 64-byte aligned */
        e->scratch_off[k] = training ? total : 0;
        total += s;
        most = DYN_MAX(most, s);
    }
    if (training) {
        int64_t gshape[1] = {largest * DYN_LAYER_MAX_INPUTS};
        if (dyn_tensor_init(&e->gtmp, 1, gshape, err)) goto fail;
    }
    size_t need = training ? total : most;
    e->scratch = dyn_alloc_zero((need + 16) * sizeof(float));
    if (!e->scratch) goto nomem;
    if (e->dev && dyn__exec_dev_pin(e, err)) goto fail; /* batches staged in pinned memory */
    free(shapes);
    return e;
nomem:
    dyn_err_set(err, DYN_ENOMEM, "out of memory allocating buffers for batch %d", max_batch);
fail:
    free(shapes);
    dyn_exec_free(e);
    return NULL;
}

static void gather_inputs(dyn_exec *e, int k, dyn_tensor *xs) {
    const dyn_node *nd = &e->model->nodes[k];
    for (int i = 0; i < nd->ninputs; i++) {
        int p = nd->inputs[i];
        xs[i] = view_batch(p < 0 ? &e->input : &e->act[p], e->batch);
    }
}

const dyn_tensor *dyn_exec_forward(dyn_exec *e, const float *x, int batch) {
    DYN_ASSERT(batch >= 1 && batch <= e->max_batch);
    dyn_model *m = e->model;
    e->batch = batch;
    if (e->dev) return dyn__exec_dev_forward(e, x, batch);
    int64_t per = dyn_shape_numel(&m->input);
    if (x != e->input.data) memcpy(e->input.data, x, (size_t)(per * batch) * sizeof(float));
    if (e->training || !exec_graph_forward(e, batch)) dyn__exec_run_plain(e, batch);
    e->out = view_batch(&e->act[m->nnodes - 1], batch);
    return &e->out;
}

void dyn__exec_run_plain(dyn_exec *e, int batch) {
    dyn_model *m = e->model;
    e->batch = batch;
    for (int k = 0; k < m->nnodes; k++) {
        dyn_tensor xs[DYN_LAYER_MAX_INPUTS];
        gather_inputs(e, k, xs);
        dyn_tensor y = view_batch(&e->act[k], batch);
        dyn_layer *l = m->nodes[k].layer;
        l->ops->forward(l, xs, &y, e->scratch + e->scratch_off[k], e->training);
    }
}

const char *dyn_exec_error(const dyn_exec *e) {
    return e->dev ? dyn__exec_dev_error(e)->msg : "";
}

int dyn_exec_backward(dyn_exec *e, const float *dout) {
    DYN_ASSERT(e->training);
    if (e->dev) return dyn__exec_dev_backward(e, dout);
    dyn_model *m = e->model;
    int n = m->nnodes, batch = e->batch;
    unsigned char *written = e->written;
    memset(written, 0, (size_t)n);
    dyn_tensor g_last = view_batch(&e->grad[n - 1], batch);
    memcpy(g_last.data, dout, (size_t)dyn_tensor_numel(&g_last) * sizeof(float));
    written[n - 1] = 1;
    for (int k = n - 1; k >= 0; k--) {
        const dyn_node *nd = &m->nodes[k];
        if (!written[k]) continue; /* node does not reach the output */
        dyn_tensor xs[DYN_LAYER_MAX_INPUTS], dxs[DYN_LAYER_MAX_INPUTS];
        gather_inputs(e, k, xs);
        int via_tmp[DYN_LAYER_MAX_INPUTS] = {0};
        int64_t largest = dyn_tensor_numel(&e->gtmp) / DYN_LAYER_MAX_INPUTS;
        for (int i = 0; i < nd->ninputs; i++) {
            int p = nd->inputs[i];
            if (p < 0) {
                memset(&dxs[i], 0, sizeof dxs[i]);
            } else if (!written[p]) {
                dxs[i] = view_batch(&e->grad[p], batch);
                written[p] = 1;
            } else {
                dyn_shape s = dyn_tensor_shape(&e->grad[p]);
                s.d[0] = batch;
                dxs[i] = dyn_tensor_view(e->gtmp.data + i * largest, s.ndim, s.d);
                via_tmp[i] = 1;
            }
        }
        dyn_tensor y = view_batch(&e->act[k], batch), dy = view_batch(&e->grad[k], batch);
        dyn_layer *l = nd->layer;
        l->ops->backward(l, xs, &y, &dy, dxs, e->scratch + e->scratch_off[k]);
        for (int i = 0; i < nd->ninputs; i++) {
            if (!via_tmp[i]) continue;
            float *g = e->grad[nd->inputs[i]].data;
            int64_t cnt = dyn_tensor_numel(&dxs[i]);
            for (int64_t j = 0; j < cnt; j++) g[j] += dxs[i].data[j];
        }
    }
    return 0;
}
