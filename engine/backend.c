/* backend.c — placing a model on a device backend, and the executor's device path.
 *
 * A placed model (dyn_model_place) has a model context (its parameters, derived state, and the
 * stream training runs on). An exec of a placed model keeps its activations, gradients and
 * scratch on the device; a node whose layer stayed on the CPU runs its CPU kernels on host
 * copies: its inputs are downloaded (into e->act, allocated on the host only for such nodes,
 * their inputs and the output), its output uploaded; in backward its output gradient is
 * downloaded (into e->grad) and its input gradients uploaded (added on the device when another
 * consumer already wrote one). Gradient sums of shared inputs use the backend's axpy, as the
 * CPU path adds its temporary. The output comes back to the host once per forward.
 */
#include "backend_impl.h"

#include <stdio.h>
#include <string.h>

struct dyn_place {
    const dyn_backend *be;
    int dev;
    void *ctx;  /* the model context */
    char name[32];
    int on_cpu; /* layers left on the CPU */
};

/* The device half of a dyn_exec (model.c holds a pointer to it). */
typedef struct dyn_exec_dev {
    const dyn_backend *be;
    void *ctx;
    int own_ctx;       /* 0: a training exec on the model context */
    dyn_tensor in;     /* device input [max_batch, ...] */
    dyn_tensor *act;   /* device activations per node */
    dyn_tensor *grad;  /* device gradients per node (training) */
    dyn_tensor gtmp;   /* device temporary for gradient sums (training) */
    float *scratch;    /* device scratch */
    size_t *scratch_off;
    unsigned char *cpu;     /* per node: runs on the CPU */
    unsigned char *staged;  /* per node: its host copy (e->act) holds this forward's output */
    float *pinned[2];       /* page-locked storage of e->input and the output's e->act */
    dyn_err err;
} dyn_exec_dev;

const dyn_backend *dyn_model_backend(const dyn_model *m) { return m->place ? m->place->be : NULL; }

const char *dyn_model_device_name(const dyn_model *m) {
    return m->place ? m->place->name : "cpu";
}

size_t dyn_model_device_bytes(const dyn_model *m) {
    if (!m->place || !m->place->be->mem) return 0;
    size_t reserved = 0, in_use = 0;
    m->place->be->mem(m->place->ctx, &reserved, &in_use);
    return reserved;
}

static const dyn_backend_op *op_of(const dyn_backend *be, const dyn_layer *l) {
    return be->ops[l->ops->op];
}

/* Input shapes of node k for batch `batch` (shapes: the nodes' output shapes for it). */
static void node_in_shapes(const dyn_model *m, int k, const dyn_shape *shapes, int batch,
                           dyn_shape *ins) {
    const dyn_node *nd = &m->nodes[k];
    for (int i = 0; i < nd->ninputs; i++) {
        int p = nd->inputs[i];
        ins[i] = p >= 0 ? shapes[p] : dyn__model_input_shape(m, batch);
    }
}

static int supported(const dyn_backend *be, const dyn_layer *l, const dyn_shape *ins,
                     int training) {
    const dyn_backend_op *op = op_of(be, l);
    if (!op || !op->forward || (training && !op->backward)) return 0;
    return !op->supports || op->supports(l, ins, training);
}

static void layer_unplace(struct dyn_place *pl, dyn_layer *l) {
    const dyn_backend *be = pl->be;
    const dyn_backend_op *op = op_of(be, l);
    if (l->dev && op && op->release) op->release(pl->ctx, l);
    l->dev = NULL;
    for (int i = 0; i < l->nparams; i++) {
        dyn_param *p = &l->params[i];
        be->free(pl->ctx, p->dval);
        be->free(pl->ctx, p->dgrad);
        be->free(pl->ctx, p->dm);
        be->free(pl->ctx, p->dv);
        p->dval = p->dgrad = p->dm = p->dv = NULL;
    }
    l->placed = 0;
}

void dyn_model_unplace(dyn_model *m) {
    struct dyn_place *pl = m->place;
    if (!pl) return;
    for (int k = 0; k < m->nnodes; k++)
        if (m->nodes[k].layer->placed) layer_unplace(pl, m->nodes[k].layer);
    pl->be->ctx_free(pl->ctx);
    free(pl);
    m->place = NULL;
}

static int dalloc(struct dyn_place *pl, int64_t n, float **p, dyn_err *err) {
    void *v = NULL;
    int rc = pl->be->alloc(pl->ctx, (size_t)(n ? n : 1) * sizeof(float), &v, err);
    *p = v;
    return rc;
}

/* Device copies of l's parameters: values uploaded, gradients and moments zeroed. */
static int layer_place(struct dyn_place *pl, dyn_layer *l, dyn_err *err) {
    const dyn_backend *be = pl->be;
    l->placed = 1;
    for (int i = 0; i < l->nparams; i++) {
        dyn_param *p = &l->params[i];
        int64_t n = dyn_tensor_numel(&p->value);
        int rc = dalloc(pl, n, &p->dval, err);
        if (!rc) rc = be->upload(pl->ctx, p->dval, p->value.data, (size_t)n * sizeof(float), err);
        if (!rc && p->trainable) {
            rc = dalloc(pl, n, &p->dgrad, err);
            if (!rc) rc = dalloc(pl, n, &p->dm, err);
            if (!rc) rc = dalloc(pl, n, &p->dv, err);
            if (!rc) rc = be->fill(pl->ctx, p->dgrad, 0.0f, n, err);
            /* The optimizer's moments travel with the parameters (a run continued on the
             * device after one on the CPU, or placed epoch by epoch). */
            const size_t bytes = (size_t)n * sizeof(float);
            if (!rc) rc = p->m.data ? be->upload(pl->ctx, p->dm, p->m.data, bytes, err)
                                    : be->fill(pl->ctx, p->dm, 0.0f, n, err);
            if (!rc) rc = p->v.data ? be->upload(pl->ctx, p->dv, p->v.data, bytes, err)
                                    : be->fill(pl->ctx, p->dv, 0.0f, n, err);
        }
        if (rc) return dyn_err_prefix(err, "placing parameter '%s'", p->name);
    }
    return 0;
}

static int layer_dev_prepare(struct dyn_place *pl, dyn_layer *l, dyn_err *err) {
    const dyn_backend_op *op = op_of(pl->be, l);
    if (!op->prepare) return 0;
    if (l->dev && op->release) op->release(pl->ctx, l);
    l->dev = NULL;
    return op->prepare(pl->ctx, l, err);
}

int dyn_model_place(dyn_model *m, const dyn_backend *be, int dev, int *on_cpu, dyn_err *err) {
    if (on_cpu) *on_cpu = 0;
    if (m->place) return dyn_err_set(err, DYN_EINVAL, "the model is already placed on %s",
                                     m->place->name);
    struct dyn_place *pl = calloc(1, sizeof *pl);
    dyn_shape *shapes = malloc((size_t)m->nnodes * sizeof *shapes);
    if (!pl || !shapes) {
        free(pl);
        free(shapes);
        return dyn_err_set(err, DYN_ENOMEM, "out of memory placing the model");
    }
    pl->be = be;
    pl->dev = dev;
    snprintf(pl->name, sizeof pl->name, "%s:%d", be->name, dev);
    int rc = be->ctx_new(dev, &pl->ctx, err);
    if (rc) {
        free(pl);
        free(shapes);
        return dyn_err_prefix(err, "placing the model on %s:%d", be->name, dev);
    }
    m->place = pl;
    rc = dyn_model_shapes(m, 1, shapes, err);
    char names[256] = "";
    size_t used = 0;
    for (int k = 0; !rc && k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer;
        dyn_shape ins[DYN_LAYER_MAX_INPUTS];
        node_in_shapes(m, k, shapes, 1, ins);
        if (!supported(be, l, ins, 0) || !supported(be, l, ins, 1)) {
            pl->on_cpu++;
            if (used + strlen(l->name) + 16 < sizeof names)
                used += (size_t)snprintf(names + used, sizeof names - used, "%s%s (%s)",
                                         used ? ", " : "", l->name, l->ops->name);
            continue;
        }
        rc = layer_place(pl, l, err);
        if (!rc) rc = layer_dev_prepare(pl, l, err);
        if (rc) dyn_err_prefix(err, "layer '%s' (%s)", l->name, l->ops->name);
    }
    free(shapes);
    if (!rc) rc = be->sync(pl->ctx, err);
    if (rc) {
        dyn_model_unplace(m);
        return dyn_err_prefix(err, "placing the model on %s:%d", be->name, dev);
    }
    if (pl->on_cpu)
        fprintf(stderr, "dyn: %d of %d layers have no %s kernel and run on the CPU: %s%s\n",
                pl->on_cpu, m->nnodes, be->name, names, used + 40 >= sizeof names ? ", ..." : "");
    if (on_cpu) *on_cpu = pl->on_cpu;
    return 0;
}

int dyn_model_to_host(dyn_model *m, dyn_err *err) {
    struct dyn_place *pl = m->place;
    if (!pl) return 0;
    for (int k = 0; k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer;
        if (!l->placed) continue;
        for (int i = 0; i < l->nparams; i++) {
            dyn_param *p = &l->params[i];
            size_t bytes = (size_t)dyn_tensor_numel(&p->value) * sizeof(float);
            int rc = pl->be->download(pl->ctx, p->value.data, p->dval, bytes, err);
            /* The moments too (allocated on the host on first use, as the CPU optimizer does). */
            for (int j = 0; !rc && p->trainable && j < 2; j++) {
                dyn_tensor *h = j ? &p->v : &p->m;
                if (!h->data && (rc = dyn_tensor_init(h, p->value.ndim, p->value.shape, err)))
                    break;
                rc = pl->be->download(pl->ctx, h->data, j ? p->dv : p->dm, bytes, err);
            }
            if (rc) return dyn_err_prefix(err, "copying '%s.%s' to the host", l->name, p->name);
        }
        if (l->ops->prepare && l->ops->prepare(l, err))
            return dyn_err_prefix(err, "preparing layer '%s'", l->name);
    }
    return 0;
}

int dyn_model_to_device(dyn_model *m, dyn_err *err) {
    struct dyn_place *pl = m->place;
    if (!pl) return 0;
    for (int k = 0; k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer;
        if (!l->placed) continue;
        for (int i = 0; i < l->nparams; i++) {
            dyn_param *p = &l->params[i];
            size_t bytes = (size_t)dyn_tensor_numel(&p->value) * sizeof(float);
            int rc = pl->be->upload(pl->ctx, p->dval, p->value.data, bytes, err);
            if (rc) return dyn_err_prefix(err, "copying '%s.%s' to the device", l->name, p->name);
        }
        if (layer_dev_prepare(pl, l, err)) return dyn_err_prefix(err, "layer '%s'", l->name);
    }
    return pl->be->sync(pl->ctx, err);
}

/* ---- model-level hooks called by model.c and train.c ---------------------------------- */

int dyn__place_prepare(dyn_model *m, dyn_err *err) {
    struct dyn_place *pl = m->place;
    for (int k = 0; k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer;
        int rc = 0;
        if (l->placed) rc = layer_dev_prepare(pl, l, err);
        else if (l->ops->prepare) rc = l->ops->prepare(l, err);
        if (rc) return dyn_err_prefix(err, "preparing layer '%s'", l->name);
    }
    return 0;
}

int dyn__place_zero_grad(dyn_model *m, dyn_err *err) {
    struct dyn_place *pl = m->place;
    for (int k = 0; k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer;
        if (!l->placed) {
            dyn_layer_zero_grad(l);
            continue;
        }
        for (int i = 0; i < l->nparams; i++) {
            dyn_param *p = &l->params[i];
            if (!p->dgrad) continue;
            int rc = pl->be->fill(pl->ctx, p->dgrad, 0.0f, dyn_tensor_numel(&p->value), err);
            if (rc) return rc;
        }
    }
    return 0;
}

int dyn__place_optim(dyn_model *m, dyn_param *p, const dyn_optim_update *u, dyn_err *err) {
    struct dyn_place *pl = m->place;
    return pl->be->optim(pl->ctx, u, p->dval, p->dgrad, p->dm, p->dv,
                         dyn_tensor_numel(&p->value), err);
}

int dyn__place_sync(dyn_model *m, dyn_err *err) { return m->place->be->sync(m->place->ctx, err); }

/* ---- the exec's device path -------------------------------------------------------------- */

void dyn__exec_dev_free(dyn_exec *e) {
    dyn_exec_dev *d = e->dev;
    if (!d) return;
    const dyn_backend *be = d->be;
    if (d->ctx) {
        be->free(d->ctx, d->in.data);
        for (int k = 0; d->act && k < e->model->nnodes; k++) be->free(d->ctx, d->act[k].data);
        for (int k = 0; d->grad && k < e->model->nnodes; k++) be->free(d->ctx, d->grad[k].data);
        be->free(d->ctx, d->gtmp.data);
        be->free(d->ctx, d->scratch);
        if (d->own_ctx) be->ctx_free(d->ctx);
    }
    for (int i = 0; i < 2; i++)
        if (d->pinned[i]) be->host_free(d->pinned[i]);
    free(d->act);
    free(d->grad);
    free(d->scratch_off);
    free(d->cpu);
    free(d->staged);
    free(d);
    e->dev = NULL;
}

static int dtensor(dyn_exec_dev *d, dyn_tensor *t, const dyn_shape *s, dyn_err *err) {
    void *p = NULL;
    int64_t n = dyn_shape_numel(s);
    int rc = d->be->alloc(d->ctx, (size_t)(n ? n : 1) * sizeof(float), &p, err);
    if (rc) return rc;
    *t = dyn_tensor_view(p, s->ndim, s->d);
    t->device = d->be->device;
    return 0;
}

/* Host tensors (e->act / e->grad) exist only where the CPU needs them: nodes that run on the
 * CPU, their inputs, and the output. `need[k]` says which. */
int dyn__exec_dev_new(dyn_exec *e, const dyn_shape *shapes, unsigned char *need, dyn_err *err) {
    dyn_model *m = e->model;
    struct dyn_place *pl = m->place;
    const int n = m->nnodes, training = e->training;
    dyn_exec_dev *d = calloc(1, sizeof *d);
    if (!d) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    e->dev = d;
    d->be = pl->be;
    d->act = calloc((size_t)n, sizeof *d->act);
    d->grad = calloc((size_t)n, sizeof *d->grad);
    d->scratch_off = calloc((size_t)n + 1, sizeof *d->scratch_off);
    d->cpu = calloc((size_t)n, 1);
    d->staged = calloc((size_t)n, 1);
    if (!d->act || !d->grad || !d->scratch_off || !d->cpu || !d->staged)
        return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    if (training) {
        d->ctx = pl->ctx;
    } else {
        /* Its own stream: what the model context queued (uploads, an optimizer step, a
         * prepare) must be complete before this stream reads the parameters. */
        int rc = d->be->sync(pl->ctx, err);
        if (rc) return rc;
        rc = d->be->ctx_new(pl->dev, &d->ctx, err);
        if (rc) return dyn_err_prefix(err, "a context on %s", pl->name);
        d->own_ctx = 1;
    }
    const dyn_shape in0 = dyn__model_input_shape(m, e->max_batch);
    int rc = dtensor(d, &d->in, &in0, err);
    if (rc) return rc;
    int64_t largest = dyn_shape_numel(&in0);
    size_t total = 0, most = 0;
    for (int k = 0; k < n; k++) {
        dyn_layer *l = m->nodes[k].layer;
        dyn_shape ins[DYN_LAYER_MAX_INPUTS];
        node_in_shapes(m, k, shapes, e->max_batch, ins);
        if (!l->placed) {
            d->cpu[k] = 1;
            need[k] = 1;
            for (int i = 0; i < m->nodes[k].ninputs; i++)
                if (m->nodes[k].inputs[i] >= 0) need[m->nodes[k].inputs[i]] = 1;
        } else if (!supported(d->be, l, ins, training)) {
            return dyn_err_set(err, DYN_EUNSUP,
                               "layer '%s' (%s) is placed on %s but its kernel there does not "
                               "take this shape at batch %d%s",
                               l->name, l->ops->name, pl->name, e->max_batch,
                               training ? " in training" : "");
        }
        if ((rc = dtensor(d, &d->act[k], &shapes[k], err))) return rc;
        if (training && (rc = dtensor(d, &d->grad[k], &shapes[k], err))) return rc;
        largest = DYN_MAX(largest, dyn_shape_numel(&shapes[k]));
        const dyn_backend_op *op = l->placed ? op_of(d->be, l) : NULL;
        size_t s = op && op->scratch ? op->scratch(l, ins, training) : 0;
        s = (s + 63) / 64 * 64; /* 256-byte aligned areas */
        d->scratch_off[k] = training ? total : 0;
        total += s;
        most = DYN_MAX(most, s);
    }
    need[n - 1] = 1;
    if (training) {
        dyn_shape g = {.ndim = 1, .d = {largest * DYN_LAYER_MAX_INPUTS}};
        if ((rc = dtensor(d, &d->gtmp, &g, err))) return rc;
    }
    size_t sc = (training ? total : most) + 64;
    void *p = NULL;
    if ((rc = d->be->alloc(d->ctx, sc * sizeof(float), &p, err))) return rc;
    d->scratch = p;
    return 0;
}

static size_t tbytes(const dyn_tensor *t) { return (size_t)dyn_tensor_numel(t) * sizeof(float); }

int dyn__exec_dev_pin(dyn_exec *e, dyn_err *err) {
    dyn_exec_dev *d = e->dev;
    if (!d->be->host_alloc) return 0;
    dyn_tensor *t[2] = {&e->input, &e->act[e->model->nnodes - 1]};
    for (int i = 0; i < 2; i++) {
        void *p = NULL;
        int rc = d->be->host_alloc(tbytes(t[i]), &p, err);
        if (rc) return rc;
        memcpy(p, t[i]->data, tbytes(t[i]));
        dyn_free(t[i]->data);
        t[i]->data = d->pinned[i] = p;
        t[i]->owner = 0; /* freed by dyn__exec_dev_free */
    }
    return 0;
}

static dyn_tensor narrow(const dyn_tensor *t, int batch) {
    dyn_shape s = dyn_tensor_shape(t);
    s.d[0] = batch;
    dyn_tensor v = dyn_tensor_view(t->data, s.ndim, s.d);
    v.device = t->device;
    return v;
}


/* Host copy of node p's output (p >= 0) for a CPU node, downloaded once per forward. */
static int stage_down(dyn_exec *e, int p, int batch, dyn_err *err) {
    dyn_exec_dev *d = e->dev;
    if (p < 0 || d->staged[p]) return 0;
    dyn_tensor h = narrow(&e->act[p], batch);
    int rc = d->be->download(d->ctx, h.data, d->act[p].data, tbytes(&h), err);
    d->staged[p] = rc == 0;
    return rc;
}

const dyn_tensor *dyn__exec_dev_forward(dyn_exec *e, const float *x, int batch) {
    dyn_exec_dev *d = e->dev;
    dyn_model *m = e->model;
    const dyn_backend *be = d->be;
    dyn_err *err = &d->err;
    const int n = m->nnodes;
    memset(d->staged, 0, (size_t)n);
    /* The batch goes up from e->input (pinned memory; CPU nodes reading the model input
     * read it there too). */
    dyn_tensor in = narrow(&d->in, batch), hin = narrow(&e->input, batch);
    if (x != hin.data) memcpy(hin.data, x, tbytes(&hin));
    int rc = be->upload(d->ctx, in.data, hin.data, tbytes(&in), err);
    for (int k = 0; !rc && k < n; k++) {
        const dyn_node *nd = &m->nodes[k];
        dyn_layer *l = nd->layer;
        dyn_tensor xs[DYN_LAYER_MAX_INPUTS];
        if (!d->cpu[k]) {
            for (int i = 0; i < nd->ninputs; i++)
                xs[i] = narrow(nd->inputs[i] < 0 ? &d->in : &d->act[nd->inputs[i]], batch);
            dyn_tensor y = narrow(&d->act[k], batch);
            rc = op_of(be, l)->forward(d->ctx, l, xs, &y, d->scratch + d->scratch_off[k],
                                       e->training, err);
            if (rc) dyn_err_prefix(err, "layer '%s' (%s) on %s", l->name, l->ops->name,
                                   m->place->name);
            continue;
        }
        for (int i = 0; !rc && i < nd->ninputs; i++) {
            rc = stage_down(e, nd->inputs[i], batch, err);
            xs[i] = narrow(nd->inputs[i] < 0 ? &e->input : &e->act[nd->inputs[i]], batch);
        }
        if (rc) break;
        dyn_tensor y = narrow(&e->act[k], batch);
        l->ops->forward(l, xs, &y, e->scratch + e->scratch_off[k], e->training);
        d->staged[k] = 1;
        rc = be->upload(d->ctx, d->act[k].data, y.data, tbytes(&y), err);
    }
    if (!rc) rc = stage_down(e, n - 1, batch, err);
    if (rc) return NULL;
    e->out = narrow(&e->act[n - 1], batch);
    return &e->out;
}

/* dx of input i of a node: into the input's gradient when nothing wrote it yet, else into the
 * temporary (added after the backward). */
static dyn_tensor dx_target(dyn_exec *e, int p, int i, int batch, int *via_tmp) {
    dyn_exec_dev *d = e->dev;
    int64_t largest = dyn_tensor_numel(&d->gtmp) / DYN_LAYER_MAX_INPUTS;
    *via_tmp = 0;
    if (!e->written[p]) {
        e->written[p] = 1;
        return narrow(&d->grad[p], batch);
    }
    *via_tmp = 1;
    dyn_shape s = dyn_tensor_shape(&d->grad[p]);
    s.d[0] = batch;
    dyn_tensor t = dyn_tensor_view(d->gtmp.data + i * largest, s.ndim, s.d);
    t.device = d->gtmp.device;
    return t;
}

int dyn__exec_dev_backward(dyn_exec *e, const float *dout) {
    dyn_exec_dev *d = e->dev;
    dyn_model *m = e->model;
    const dyn_backend *be = d->be;
    dyn_err *err = &d->err;
    const int n = m->nnodes, batch = e->batch;
    memset(e->written, 0, (size_t)n);
    dyn_tensor g_last = narrow(&d->grad[n - 1], batch);
    int rc = be->upload(d->ctx, g_last.data, dout, tbytes(&g_last), err);
    e->written[n - 1] = 1;
    for (int k = n - 1; !rc && k >= 0; k--) {
        const dyn_node *nd = &m->nodes[k];
        dyn_layer *l = nd->layer;
        if (!e->written[k]) continue;
        dyn_tensor xs[DYN_LAYER_MAX_INPUTS], dxs[DYN_LAYER_MAX_INPUTS];
        int via_tmp[DYN_LAYER_MAX_INPUTS] = {0};
        if (!d->cpu[k]) {
            for (int i = 0; i < nd->ninputs; i++) {
                int p = nd->inputs[i];
                xs[i] = narrow(p < 0 ? &d->in : &d->act[p], batch);
                if (p < 0) memset(&dxs[i], 0, sizeof dxs[i]);
                else dxs[i] = dx_target(e, p, i, batch, &via_tmp[i]);
            }
            dyn_tensor y = narrow(&d->act[k], batch), dy = narrow(&d->grad[k], batch);
            rc = op_of(be, l)->backward(d->ctx, l, xs, &y, &dy, dxs,
                                        d->scratch + d->scratch_off[k], err);
            if (rc) dyn_err_prefix(err, "backward of layer '%s' (%s)", l->name, l->ops->name);
        } else {
            /* The CPU node: its inputs and output are on the host from the forward. */
            dyn_tensor y = narrow(&e->act[k], batch), dy = narrow(&e->grad[k], batch);
            rc = be->download(d->ctx, dy.data, d->grad[k].data, tbytes(&dy), err);
            dyn_tensor hdx[DYN_LAYER_MAX_INPUTS];
            for (int i = 0; i < nd->ninputs; i++) {
                int p = nd->inputs[i];
                xs[i] = narrow(p < 0 ? &e->input : &e->act[p], batch);
                if (p < 0) memset(&hdx[i], 0, sizeof hdx[i]);
                else hdx[i] = narrow(&e->grad[p], batch);
            }
            if (rc) break;
            l->ops->backward(l, xs, &y, &dy, hdx, e->scratch + e->scratch_off[k]);
            for (int i = 0; !rc && i < nd->ninputs; i++) {
                int p = nd->inputs[i];
                if (p < 0) continue;
                dxs[i] = dx_target(e, p, i, batch, &via_tmp[i]);
                rc = be->upload(d->ctx, dxs[i].data, hdx[i].data, tbytes(&hdx[i]), err);
            }
        }
        for (int i = 0; !rc && i < nd->ninputs; i++) {
            if (!via_tmp[i]) continue;
            rc = be->axpy(d->ctx, d->grad[nd->inputs[i]].data, dxs[i].data, 1.0f,
                          dyn_tensor_numel(&dxs[i]), err);
        }
    }
    if (!rc) rc = be->sync(d->ctx, err);
    return rc;
}

const dyn_err *dyn__exec_dev_error(const dyn_exec *e) { return &e->dev->err; }
