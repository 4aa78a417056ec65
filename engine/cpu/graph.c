/* graph.c — the fused inference graph (oneDNN); see graph.h. */
#include "graph.h"

#include <pthread.h>
#include <string.h>

#include <dnnl.h>
#include <dnnl_debug.h>
#include <omp.h>

#include "../layer.h"
#include "dnnl_conv.h"

enum { K_PLAIN, K_CONV, K_RELU, K_ADD, K_MAXPOOL, K_GAP };

/* ---- reordered weights, shared by every graph of the process ---- */

typedef struct gweights {
    const dyn_layer *layer;
    unsigned gen;
    dnnl_memory_desc_t md;
    float *buf;
    int refs;
    struct gweights *next;
} gweights;

static pthread_mutex_t g_wmu = PTHREAD_MUTEX_INITIALIZER;
static gweights *g_weights;

static void weights_put(gweights *w) {
    if (!w) return;
    pthread_mutex_lock(&g_wmu);
    if (--w->refs == 0) {
        for (gweights **p = &g_weights; *p; p = &(*p)->next)
            if (*p == w) {
                *p = w->next;
                break;
            }
        dyn_free(w->buf);
        free(w);
    }
    pthread_mutex_unlock(&g_wmu);
}

/* ---- the graph ---- */

typedef struct gval {
    dnnl_memory_desc_t md;
    int def, last; /* the node that writes it, the last node that reads it */
    size_t off;    /* in the arena */
    int slot;
    int share;     /* a value whose memory it takes over (in-place sum), else -1 */
    dnnl_memory_t mem;
} gval;

typedef struct gnode {
    int kind;
    int val;        /* its output's value (graph nodes), -1 for plain ones */
    int runs;       /* 0: fused into its producer's primitive */
    int relu;       /* conv: ReLU post-op */
    int sum_of;     /* conv: node (or -1 = the input) whose output it accumulates onto; -2 none */
    int exported;   /* its value is reordered into e->act[k] after it is complete */
    int from;       /* fused: the conv whose primitive computes its output */
    int inplace;    /* conv with sum: its output takes over the memory of sum_of's */
    int exp[3], nexp; /* runs: the exported nodes its primitive completes (itself, fused) */
    dnnl_primitive_t prim, rin, rsum, rexp;
    dnnl_memory_t m_in, m_w, m_b, m_exp;
    dnnl_memory_t m_src, m_sum; /* borrowed: rin's source, rsum's source */
    dnnl_exec_arg_t args[6];
    int nargs;
    gweights *w;
    unsigned gen;
} gnode;

struct dyn_graph {
    int n, batch, threads, nodes, fused;
    int flags;            /* DYN_GRAPH_* */
    int nwino, wino_ok;   /* convs that run Winograd; convs that could */
    const dyn_model *model;
    gnode *g;
    gval *vals;
    int nvals;
    dnnl_memory_t *nchw; /* [n + 1]: NCHW memories of plain values read by graph nodes (+1: input) */
    dnnl_memory_t m_sp;
    dnnl_stream_t stream;
    float *arena, *tmp, *sp;
};

#define DN(call)                                                                         \
    do {                                                                                 \
        dnnl_status_t st_ = (call);                                                      \
        if (st_ != dnnl_success) {                                                       \
            rc = dyn_err_set(err, st_ == dnnl_unimplemented ? DYN_EUNSUP : DYN_ENOMEM,   \
                             "oneDNN graph: %s: %s", #call, dnnl_status2str(st_));       \
            goto fail;                                                                   \
        }                                                                                \
    } while (0)

void dyn__graph_free(dyn_graph *gr) {
    if (!gr) return;
    for (int k = 0; gr->g && k < gr->n; k++) {
        gnode *nd = &gr->g[k];
        dnnl_primitive_t ps[] = {nd->prim, nd->rin, nd->rsum, nd->rexp};
        for (size_t i = 0; i < DYN_ARRAY_LEN(ps); i++)
            if (ps[i]) dnnl_primitive_destroy(ps[i]);
        dnnl_memory_t ms[] = {nd->m_in, nd->m_w, nd->m_b, nd->m_exp};
        for (size_t i = 0; i < DYN_ARRAY_LEN(ms); i++)
            if (ms[i]) dnnl_memory_destroy(ms[i]);
        weights_put(nd->w);
    }
    for (int v = 0; gr->vals && v < gr->nvals; v++)
        if (gr->vals[v].mem) dnnl_memory_destroy(gr->vals[v].mem);
    for (int k = 0; gr->nchw && k <= gr->n; k++)
        if (gr->nchw[k]) dnnl_memory_destroy(gr->nchw[k]);
    if (gr->m_sp) dnnl_memory_destroy(gr->m_sp);
    if (gr->stream) dnnl_stream_destroy(gr->stream);
    dyn_free(gr->arena);
    dyn_free(gr->tmp);
    dyn_free(gr->sp);
    free(gr->g);
    free(gr->vals);
    free(gr->nchw);
    free(gr);
}

static dnnl_engine_t eng(void) { return (dnnl_engine_t)dyn__dnnl_engine(); }

/* dims of a 4-D shape */
static void dims4(const dyn_shape *s, dnnl_dims_t d) {
    for (int i = 0; i < 4; i++) d[i] = s->d[i];
}

/* A primitive (and its scratchpad need) from an op descriptor with attr. */
static dnnl_status_t prim_make(const_dnnl_op_desc_t desc, const_dnnl_primitive_attr_t attr,
                               dnnl_primitive_desc_t *pd, dnnl_primitive_t *p, size_t *sp) {
    dnnl_status_t st = dnnl_primitive_desc_create(pd, desc, attr, eng(), NULL);
    if (st != dnnl_success) return st;
    *sp = DYN_MAX(*sp, dnnl_memory_desc_get_size(
                           dnnl_primitive_desc_query_md(*pd, dnnl_query_scratchpad_md, 0)));
    return dnnl_primitive_create(p, *pd);
}

static dnnl_status_t reorder_make(const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *b,
                                  const_dnnl_primitive_attr_t attr, dnnl_primitive_t *out,
                                  size_t *sp) {
    dnnl_primitive_desc_t pd;
    dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, a, eng(), b, eng(), attr);
    if (st != dnnl_success) return st;
    *sp = DYN_MAX(*sp, dnnl_memory_desc_get_size(
                           dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0)));
    st = dnnl_primitive_create(out, pd);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

/* The weights of conv node k in layout md: the layer's own array when md is its layout, else
 * a copy shared with every graph holding the same layer, generation and layout. */
static dnnl_status_t weights_get(gnode *nd, const dyn_layer *l, const float *w,
                                 const dnnl_memory_desc_t *user, const dnnl_memory_desc_t *md,
                                 float **out) {
    *out = (float *)w;
    if (dnnl_memory_desc_equal(user, md)) return dnnl_success;
    dnnl_status_t st = dnnl_success;
    pthread_mutex_lock(&g_wmu);
    gweights *s;
    for (s = g_weights; s; s = s->next)
        if (s->layer == l && s->gen == l->gen && dnnl_memory_desc_equal(&s->md, md)) break;
    if (s) {
        s->refs++;
    } else {
        dnnl_primitive_t r = NULL;
        dnnl_memory_t mu = NULL, mb = NULL;
        dnnl_stream_t strm = NULL;
        size_t sp = 0;
        s = calloc(1, sizeof *s);
        float *buf = dyn_alloc(dnnl_memory_desc_get_size(md));
        if (!s || !buf) st = dnnl_out_of_memory;
        if (!st) st = reorder_make(user, md, NULL, &r, &sp);
        if (!st) st = dnnl_memory_create(&mu, user, eng(), (void *)w);
        if (!st) st = dnnl_memory_create(&mb, md, eng(), buf);
        if (!st) st = dnnl_stream_create(&strm, eng(), dnnl_stream_default_flags);
        if (!st) {
            dnnl_exec_arg_t a[] = {{DNNL_ARG_FROM, mu}, {DNNL_ARG_TO, mb}};
            st = dnnl_primitive_execute(r, strm, 2, a);
            if (!st) st = dnnl_stream_wait(strm);
        }
        if (r) dnnl_primitive_destroy(r);
        if (mu) dnnl_memory_destroy(mu);
        if (mb) dnnl_memory_destroy(mb);
        if (strm) dnnl_stream_destroy(strm);
        if (st) {
            dyn_free(buf);
            free(s);
            s = NULL;
        } else {
            *s = (gweights){.layer = l, .gen = l->gen, .md = *md, .buf = buf, .refs = 1,
                            .next = g_weights};
            g_weights = s;
        }
    }
    pthread_mutex_unlock(&g_wmu);
    if (s) {
        nd->w = s;
        *out = s->buf;
    }
    return st;
}

typedef struct build {
    dyn_graph *gr;
    dyn_exec *e;
    dyn_shape *shapes; /* [n + 1]: shapes[k + 1] is node k's output, shapes[0] the input */
    int *ncons;        /* readers of each node (the model's output counts one) */
    int *cons1;        /* the reader when there is one */
    size_t sp, tmp;    /* largest scratchpad, largest reordered conv input */
    dnnl_memory_desc_t *nchw_md; /* [n + 1]: the layouts of gr->nchw */
} build;

static const dyn_shape *shape_of(const build *b, int k) { return &b->shapes[k + 1]; }

/* The layout graph nodes read node k's output in: its value's, or (plain nodes and the input,
 * k = -1) NCHW over the exec's buffer, whose memory is made here. NULL on failure. */
static const dnnl_memory_desc_t *src_md(build *b, int k) {
    dyn_graph *gr = b->gr;
    if (k >= 0 && gr->g[k].val >= 0) return &gr->vals[gr->g[k].val].md;
    if (!gr->nchw[k + 1]) {
        dnnl_dims_t dims;
        dims4(shape_of(b, k), dims);
        float *data = k < 0 ? b->e->input.data : b->e->act[k].data;
        if (dnnl_memory_desc_init_by_tag(&b->nchw_md[k + 1], 4, dims, dnnl_f32, dnnl_nchw) ||
            dnnl_memory_create(&gr->nchw[k + 1], &b->nchw_md[k + 1], eng(), data))
            return NULL;
    }
    return &b->nchw_md[k + 1];
}

/* The memory graph nodes read node k's output from (after src_md and the values' memories). */
static dnnl_memory_t src_mem(build *b, int k) {
    dyn_graph *gr = b->gr;
    if (k >= 0 && gr->g[k].val >= 0) return gr->vals[gr->g[k].val].mem;
    return gr->nchw[k + 1];
}

/* Which nodes run in the graph, and the fusions. */
static void plan(build *b) {
    dyn_graph *gr = b->gr;
    const dyn_model *m = gr->model;
    for (int k = 0; k < gr->n; k++) {
        const dyn_node *nd = &m->nodes[k];
        const dyn_layer *l = nd->layer;
        const dyn_shape *in = shape_of(b, nd->inputs[0]), *out = shape_of(b, k);
        int kind = K_PLAIN;
        const int in_graph = nd->inputs[0] >= 0 && gr->g[nd->inputs[0]].kind != K_PLAIN;
        dyn_dense_conv v;
        if (in->ndim == 4 && out->ndim == 4) {
            if (l->ops->as_dense_conv &&
                l->ops->as_dense_conv(l, in, (gr->flags & DYN_GRAPH_HELD) != 0, &v))
                kind = K_CONV;
            else if (l->ops->op == DYN_OP_RELU && in_graph) kind = K_RELU;
            else if (l->ops->op == DYN_OP_MAXPOOL2D && in_graph) kind = K_MAXPOOL;
            else if (l->ops->op == DYN_OP_GLOBALAVGPOOL && in_graph) kind = K_GAP;
            else if (l->ops->op == DYN_OP_ADD && nd->ninputs == 2 &&
                     dyn_shape_eq(in, out) && dyn_shape_eq(shape_of(b, nd->inputs[1]), out) &&
                     (in_graph || (nd->inputs[1] >= 0 && gr->g[nd->inputs[1]].kind != K_PLAIN)))
                kind = K_ADD;
        }
        gr->g[k] = (gnode){.kind = kind, .val = -1, .runs = kind != K_PLAIN, .sum_of = -2};
    }
    /* Fusions: conv -> relu, conv -> add (-> relu), the conv being the add's later operand. */
    for (int k = 0; k < gr->n; k++) {
        gnode *c = &gr->g[k];
        if (c->kind != K_CONV || b->ncons[k] != 1) continue;
        int j = b->cons1[k];
        gnode *nj = &gr->g[j];
        if (nj->kind == K_RELU && nj->runs) {
            c->relu = 1;
            nj->runs = 0;
            nj->from = k;
            continue;
        }
        if (nj->kind != K_ADD || !nj->runs) continue;
        const dyn_node *an = &m->nodes[j];
        const int o = an->inputs[0] == k ? an->inputs[1] : an->inputs[0];
        if (o >= k) continue; /* the other operand must be ready when k runs */
        c->sum_of = o;
        nj->runs = 0;
        nj->from = k;
        if (b->ncons[j] == 1) {
            gnode *r = &gr->g[b->cons1[j]];
            if (r->kind == K_RELU && r->runs) {
                c->relu = 1;
                r->runs = 0;
                r->from = k;
            }
        }
    }
}

static int make_conv(build *b, int k, dnnl_memory_desc_t *y, dyn_err *err) {
    dyn_graph *gr = b->gr;
    gnode *nd = &gr->g[k];
    const dyn_node *mn = &gr->model->nodes[k];
    const dyn_layer *l = mn->layer;
    const dyn_shape *is = shape_of(b, mn->inputs[0]), *os = shape_of(b, k);
    dyn_dense_conv v;
    const int wino = (gr->flags & DYN_GRAPH_WINO) != 0;
    DYN_ASSERT(l->ops->as_dense_conv(l, is, (gr->flags & DYN_GRAPH_HELD) != 0, &v));
    int rc = 0;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    dnnl_primitive_desc_t pd = NULL;
    const int G = v.groups;
    dnnl_dims_t xd, yd, wd = {v.cout, v.cin, v.kh, v.kw}, bd = {v.cout};
    dnnl_dims_t wgd = {G, v.cout / G, v.cin / G, v.kh, v.kw};
    dims4(is, xd);
    dims4(os, yd);
    const int pr = (int)((os->d[2] - 1) * v.sh + (v.kh - 1) * v.dh + 1 - is->d[2] - v.ph);
    const int pc = (int)((os->d[3] - 1) * v.sw + (v.kw - 1) * v.dw + 1 - is->d[3] - v.pw);
    dnnl_dims_t strides = {v.sh, v.sw}, dil = {v.dh - 1, v.dw - 1}, pl = {v.ph, v.pw},
                pr2 = {pr, pc};
    dnnl_memory_desc_t x_any, w_any, w_user, b_md, y_any;
    /* A Winograd graph keeps its activations blocked by 16 channels (nChw16c), the layout of
     * oneDNN's Winograd kernels, for every convolution: with the others in the layout they
     * would choose (channels-last), each Winograd one paid two reorders (ResNet-50: 26 more
     * primitives; the blocked graph was faster at 15 of 18 ResNet points, by up to 19 %). */
    const int bx = wino && v.cin % 16 == 0, by = wino && v.cout % 16 == 0;
    DN(dnnl_memory_desc_init_by_tag(&x_any, 4, xd, dnnl_f32,
                                    bx ? dnnl_aBcd16b : dnnl_format_tag_any));
    DN(dnnl_memory_desc_init_by_tag(&y_any, 4, yd, dnnl_f32,
                                    by ? dnnl_aBcd16b : dnnl_format_tag_any));
    if (G == 1) {
        DN(dnnl_memory_desc_init_by_tag(&w_user, 4, wd, dnnl_f32, dnnl_oihw));
        DN(dnnl_memory_desc_init_by_tag(&w_any, 4, wd, dnnl_f32, dnnl_format_tag_any));
    } else {
        DN(dnnl_memory_desc_init_by_tag(&w_user, 5, wgd, dnnl_f32, dnnl_goihw));
        DN(dnnl_memory_desc_init_by_tag(&w_any, 5, wgd, dnnl_f32, dnnl_format_tag_any));
    }
    DN(dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_a));
    DN(dnnl_primitive_attr_create(&attr));
    DN(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    DN(dnnl_post_ops_create(&po));
    if (nd->sum_of != -2) DN(dnnl_post_ops_append_sum(po, 1.0f));
    if (nd->relu) DN(dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0.0f, 0.0f));
    DN(dnnl_primitive_attr_set_post_ops(attr, po));
    const int wino_ok = G == 1 && v.kh == 3 && v.kw == 3 && v.sh == 1 && v.sw == 1 &&
                        v.dh == 1 && v.dw == 1;
    gr->wino_ok += wino_ok;
    /* Winograd where oneDNN has it for the shape (AVX-512), else (and otherwise) direct */
    static const dnnl_alg_kind_t algs[2] = {dnnl_convolution_winograd, dnnl_convolution_direct};
    for (int a = wino_ok && wino ? 0 : 1;; a++) {
        dnnl_convolution_desc_t cd;
        dnnl_status_t st = dnnl_dilated_convolution_forward_desc_init(
            &cd, dnnl_forward_inference, algs[a], &x_any, &w_any, v.b ? &b_md : NULL, &y_any,
            strides, dil, pl, pr2);
        if (st == dnnl_success)
            st = prim_make((const_dnnl_op_desc_t)&cd, attr, &pd, &nd->prim, &b->sp);
        if (st == dnnl_success) {
            gr->nwino += algs[a] == dnnl_convolution_winograd;
            break;
        }
        if (pd) dnnl_primitive_desc_destroy(pd);
        pd = NULL;
        if (a == 1) { /* the direct one failed too */
            rc = dyn_err_set(err, st == dnnl_unimplemented ? DYN_EUNSUP : DYN_ENOMEM,
                             "oneDNN graph: convolution of node %d: %s", k, dnnl_status2str(st));
            goto fail;
        }
    }
    const dnnl_memory_desc_t *xq = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *wq = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    *y = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    const dnnl_memory_desc_t *x_md = src_md(b, mn->inputs[0]);
    if (!x_md) DN(dnnl_out_of_memory);
    if (nd->sum_of != -2 && !src_md(b, nd->sum_of)) DN(dnnl_out_of_memory);
    if (!dnnl_memory_desc_equal(xq, x_md)) {
        DN(reorder_make(x_md, xq, NULL, &nd->rin, &b->sp));
        DN(dnnl_memory_create(&nd->m_in, xq, eng(), DNNL_MEMORY_NONE));
        b->tmp = DYN_MAX(b->tmp, dnnl_memory_desc_get_size(xq));
    }
    float *wbuf;
    DN(weights_get(nd, l, v.w, &w_user, wq, &wbuf));
    DN(dnnl_memory_create(&nd->m_w, wq, eng(), wbuf));
    if (v.b) DN(dnnl_memory_create(&nd->m_b, &b_md, eng(), (void *)v.b));
    nd->gen = l->gen;
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (po) dnnl_post_ops_destroy(po);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return rc;
}

/* The primitive of graph node k (it runs); *y: its output's layout. */
static int make_node(build *b, int k, dnnl_memory_desc_t *y, dyn_err *err) {
    dyn_graph *gr = b->gr;
    gnode *nd = &gr->g[k];
    const dyn_node *mn = &gr->model->nodes[k];
    int rc = 0;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    const dnnl_memory_desc_t *x_md, *x2_md = NULL;
    if (nd->kind == K_CONV) return make_conv(b, k, y, err);
    DN(dnnl_primitive_attr_create(&attr));
    DN(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    if (!(x_md = src_md(b, mn->inputs[0]))) DN(dnnl_out_of_memory);
    dnnl_dims_t od;
    dims4(shape_of(b, k), od);
    dnnl_memory_desc_t y_any;
    DN(dnnl_memory_desc_init_by_tag(&y_any, 4, od, dnnl_f32, dnnl_format_tag_any));
    if (nd->kind == K_RELU) {
        dnnl_eltwise_desc_t d;
        DN(dnnl_eltwise_forward_desc_init(&d, dnnl_forward_inference, dnnl_eltwise_relu, x_md,
                                          0.0f, 0.0f));
        DN(prim_make((const_dnnl_op_desc_t)&d, attr, &pd, &nd->prim, &b->sp));
    } else if (nd->kind == K_ADD) {
        if (!(x2_md = src_md(b, mn->inputs[1]))) DN(dnnl_out_of_memory);
        dnnl_binary_desc_t d;
        DN(dnnl_binary_desc_init(&d, dnnl_binary_add, x_md, x2_md, &y_any));
        DN(prim_make((const_dnnl_op_desc_t)&d, attr, &pd, &nd->prim, &b->sp));
    } else {
        const dyn_shape *is = shape_of(b, mn->inputs[0]), *os = shape_of(b, k);
        dnnl_dims_t ker, st, pl, pr;
        if (nd->kind == K_GAP) {
            ker[0] = is->d[2], ker[1] = is->d[3];
            st[0] = st[1] = 1;
            pl[0] = pl[1] = pr[0] = pr[1] = 0;
        } else {
            json_t *a = mn->layer->ops->attrs(mn->layer);
            int kh, kw, sh, sw, ph, pw;
            int bad = !a || dyn_attr_int_hw(mn->layer, a, "kernel", -1, -1, 1, 1 << 16, &kh, &kw, NULL) ||
                      dyn_attr_int_hw(mn->layer, a, "stride", kh, kw, 1, 1 << 16, &sh, &sw, NULL) ||
                      dyn_attr_int_hw(mn->layer, a, "padding", 0, 0, 0, 1 << 16, &ph, &pw, NULL);
            json_decref(a);
            if (bad) DN(dnnl_invalid_arguments);
            ker[0] = kh, ker[1] = kw, st[0] = sh, st[1] = sw, pl[0] = ph, pl[1] = pw;
            pr[0] = (os->d[2] - 1) * sh + kh - is->d[2] - ph;
            pr[1] = (os->d[3] - 1) * sw + kw - is->d[3] - pw;
            if (pr[0] < 0) pr[0] = 0;
            if (pr[1] < 0) pr[1] = 0;
        }
        dnnl_pooling_desc_t d;
        DN(dnnl_pooling_forward_desc_init(&d, dnnl_forward_inference,
                                          nd->kind == K_GAP ? dnnl_pooling_avg_exclude_padding
                                                            : dnnl_pooling_max,
                                          x_md, &y_any, st, ker, pl, pr));
        DN(prim_make((const_dnnl_op_desc_t)&d, attr, &pd, &nd->prim, &b->sp));
    }
    *y = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
fail:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return rc;
}

dyn_graph *dyn__graph_new(dyn_exec *e, int batch, int flags, dyn_err *err) {
    const dyn_model *m = e->model;
    const int n = m->nnodes;
    int rc = 0;
    build b = {.e = e};
    dyn_graph *gr = calloc(1, sizeof *gr);
    b.shapes = malloc((size_t)(n + 1) * sizeof *b.shapes);
    b.ncons = calloc((size_t)n, sizeof *b.ncons);
    b.cons1 = calloc((size_t)n, sizeof *b.cons1);
    b.nchw_md = calloc((size_t)n + 1, sizeof *b.nchw_md);
    if (!gr || !b.shapes || !b.ncons || !b.cons1 || !b.nchw_md) goto nomem;
    b.gr = gr;
    gr->n = n, gr->batch = batch, gr->model = m, gr->threads = dyn_threads_get();
    gr->flags = flags;
    gr->g = calloc((size_t)n, sizeof *gr->g);
    gr->vals = calloc((size_t)n, sizeof *gr->vals);
    gr->nchw = calloc((size_t)n + 1, sizeof *gr->nchw);
    if (!gr->g || !gr->vals || !gr->nchw) goto nomem;
    if (!eng()) {
        rc = dyn_err_set(err, DYN_EUNSUP, "oneDNN graph: no CPU engine");
        goto fail;
    }
    b.shapes[0] = dyn_tensor_shape(&e->input);
    b.shapes[0].d[0] = batch;
    if ((rc = dyn_model_shapes(m, batch, b.shapes + 1, err))) goto fail;
    for (int k = 0; k < n; k++)
        for (int i = 0; i < m->nodes[k].ninputs; i++) {
            int p = m->nodes[k].inputs[i];
            if (p >= 0 && b.ncons[p]++ == 0) b.cons1[p] = k;
        }
    b.ncons[n - 1]++;
    plan(&b);
    if (omp_get_max_threads() != gr->threads) omp_set_num_threads(gr->threads);

    /* primitives and values, in order */
    for (int k = 0; k < n; k++) {
        gnode *nd = &gr->g[k];
        if (nd->kind == K_PLAIN) continue;
        gr->nodes++;
        if (!nd->runs) {
            nd->val = gr->g[nd->from].val;
            continue;
        }
        gval *v = &gr->vals[gr->nvals];
        if ((rc = make_node(&b, k, &v->md, err))) goto fail;
        if (nd->kind == K_CONV && (nd->relu || nd->sum_of != -2)) gr->fused++;
        v->def = v->last = k;
        nd->val = gr->nvals++;
    }
    if (!gr->nodes) {
        rc = dyn_err_set(err, DYN_EUNSUP, "no node of this model runs in a oneDNN graph");
        goto fail;
    }
    /* Readers: graph readers extend a value's life; plain readers (and the model's output)
     * get it exported to NCHW. */
    for (int k = 0; k < n; k++) {
        const dyn_node *mn = &m->nodes[k];
        for (int i = 0; i < mn->ninputs; i++) {
            int p = mn->inputs[i];
            if (p < 0 || gr->g[p].val < 0) continue;
            if (gr->g[k].kind == K_PLAIN) gr->g[p].exported = 1;
            gval *v = &gr->vals[gr->g[p].val];
            v->last = DYN_MAX(v->last, k);
        }
        if (gr->g[k].sum_of >= 0 && gr->g[gr->g[k].sum_of].val >= 0) {
            gval *v = &gr->vals[gr->g[gr->g[k].sum_of].val];
            v->last = DYN_MAX(v->last, k);
        }
    }
    if (gr->g[n - 1].val >= 0) gr->g[n - 1].exported = 1;
    for (int j = 0; j < n; j++)
        if (gr->g[j].exported) {
            gnode *p = &gr->g[gr->g[j].runs ? j : gr->g[j].from];
            DYN_ASSERT(p->nexp < (int)DYN_ARRAY_LEN(p->exp)); /* a conv, its add, its ReLU */
            p->exp[p->nexp++] = j;
        }
    /* In-place sums: a conv accumulating onto a value nothing reads after it (but the add it
     * replaces) writes over that value instead of copying it first. */
    for (int k = 0; k < n; k++) {
        gnode *nd = &gr->g[k];
        if (nd->kind != K_CONV || !nd->runs || nd->sum_of < 0 || gr->g[nd->sum_of].val < 0)
            continue;
        const int V = gr->g[nd->sum_of].val, j = b.cons1[k];
        if (!dnnl_memory_desc_equal(&gr->vals[V].md, &gr->vals[nd->val].md)) continue;
        const int x = m->nodes[k].inputs[0];
        if (x >= 0 && gr->g[x].val == V) continue; /* it reads the memory it would write */
        int later = 0;
        for (int r = 0; r < n && !later; r++) {
            if (r == j || r == k) continue;
            for (int i = 0; i < m->nodes[r].ninputs; i++) {
                const int p = m->nodes[r].inputs[i];
                if (p >= 0 && gr->g[p].val == V && r > k) later = 1;
            }
            if (gr->g[r].sum_of >= 0 && gr->g[gr->g[r].sum_of].val == V && r > k) later = 1;
        }
        if (!later) nd->inplace = 1;
    }
    for (int v = 0; v < gr->nvals; v++) gr->vals[v].share = -1;
    for (int k = 0; k < n; k++)
        if (gr->g[k].inplace) gr->vals[gr->g[k].val].share = gr->g[gr->g[k].sum_of].val;
    /* The arena: equal slots, a value takes the first one whose last reader ran. */
    size_t slot = 0;
    for (int v = 0; v < gr->nvals; v++)
        slot = DYN_MAX(slot, dnnl_memory_desc_get_size(&gr->vals[v].md));
    slot = (slot + DYN_ALIGN - 1) / DYN_ALIGN * DYN_ALIGN;
    int *free_after = calloc((size_t)gr->nvals + 1, sizeof *free_after), nslots = 0;
    if (!free_after) goto nomem;
    for (int v = 0; v < gr->nvals; v++) {
        gval *val = &gr->vals[v];
        int s = 0;
        if (val->share >= 0) {
            s = gr->vals[val->share].slot;
            free_after[s] = DYN_MAX(free_after[s], val->last);
        } else {
            while (s < nslots && free_after[s] >= val->def) s++;
            if (s == nslots) nslots++;
            free_after[s] = val->last;
        }
        val->slot = s;
        val->off = (size_t)s * slot;
    }
    free(free_after);
    gr->arena = dyn_alloc(DYN_MAX((size_t)nslots * slot, 64));
    gr->tmp = dyn_alloc(DYN_MAX(b.tmp, 64));
    if (!gr->arena || !gr->tmp) goto nomem;
    for (int v = 0; v < gr->nvals; v++)
        DN(dnnl_memory_create(&gr->vals[v].mem, &gr->vals[v].md, eng(),
                              (char *)gr->arena + gr->vals[v].off));
    /* Bind every argument now: the buffers never move. */
    for (int k = 0; k < n; k++) {
        gnode *nd = &gr->g[k];
        const dyn_node *mn = &m->nodes[k];
        if (nd->kind == K_PLAIN) continue;
        if (nd->exported) { /* an NCHW copy for plain readers, made right after its producer */
            dnnl_memory_desc_t d;
            dnnl_dims_t dims;
            dims4(shape_of(&b, k), dims);
            DN(dnnl_memory_desc_init_by_tag(&d, 4, dims, dnnl_f32, dnnl_nchw));
            DN(dnnl_memory_create(&nd->m_exp, &d, eng(), e->act[k].data));
            DN(reorder_make(&gr->vals[nd->val].md, &d, NULL, &nd->rexp, &b.sp));
        }
        if (!nd->runs) continue;
        dnnl_memory_t dst = gr->vals[nd->val].mem, x = src_mem(&b, mn->inputs[0]);
        dnnl_exec_arg_t *a = nd->args;
        if (nd->kind == K_CONV) {
            if (nd->rin) {
                DN(dnnl_memory_set_data_handle(nd->m_in, gr->tmp));
                nd->m_src = x;
                x = nd->m_in;
            }
            if (nd->sum_of != -2 && !nd->inplace) {
                nd->m_sum = src_mem(&b, nd->sum_of);
                DN(reorder_make(src_md(&b, nd->sum_of), &gr->vals[nd->val].md, NULL, &nd->rsum,
                                &b.sp));
            }
            a[nd->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, x};
            a[nd->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, nd->m_w};
            if (nd->m_b) a[nd->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, nd->m_b};
        } else if (nd->kind == K_ADD) {
            dnnl_memory_t x2 = src_mem(&b, mn->inputs[1]);
            a[nd->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC_0, x};
            a[nd->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC_1, x2};
        } else {
            a[nd->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, x};
        }
        a[nd->nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, dst};
    }
    gr->sp = dyn_alloc(DYN_MAX(b.sp, 64));
    if (!gr->sp) goto nomem;
    {
        dnnl_memory_desc_t sp_md;
        dnnl_dims_t sd = {(dnnl_dim_t)DYN_MAX(b.sp, 64)};
        DN(dnnl_memory_desc_init_by_tag(&sp_md, 1, sd, dnnl_u8, dnnl_a));
        DN(dnnl_memory_create(&gr->m_sp, &sp_md, eng(), gr->sp));
    }
    for (int k = 0; k < n; k++)
        if (gr->g[k].runs && gr->g[k].kind != K_PLAIN)
            gr->g[k].args[gr->g[k].nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, gr->m_sp};
    DN(dnnl_stream_create(&gr->stream, eng(), dnnl_stream_default_flags));
    free(b.shapes);
    free(b.ncons);
    free(b.cons1);
    free(b.nchw_md);
    return gr;
nomem:
    rc = dyn_err_set(err, DYN_ENOMEM, "oneDNN graph: out of memory for batch %d", batch);
fail:
    (void)rc;
    free(b.shapes);
    free(b.ncons);
    free(b.cons1);
    free(b.nchw_md);
    dyn__graph_free(gr);
    return NULL;
}

int dyn__graph_stale(const dyn_graph *gr) {
    if (gr->threads != dyn_threads_get()) return 1;
    for (int k = 0; k < gr->n; k++)
        if (gr->g[k].kind == K_CONV && gr->g[k].gen != gr->model->nodes[k].layer->gen) return 1;
    return 0;
}

void dyn__graph_counts(const dyn_graph *gr, int *nodes, int *fused) {
    *nodes = gr->nodes;
    *fused = gr->fused;
}

int dyn__graph_winograd(const dyn_graph *gr, int *eligible) {
    if (eligible) *eligible = gr->wino_ok;
    return gr->nwino;
}

#define RUN(p, ...)                                                                          \
    do {                                                                                     \
        dnnl_exec_arg_t a_[] = {__VA_ARGS__};                                                \
        DYN_ASSERT(dnnl_primitive_execute(p, gr->stream, (int)DYN_ARRAY_LEN(a_), a_) ==      \
                   dnnl_success);                                                            \
    } while (0)

void dyn__graph_forward(dyn_graph *gr, dyn_exec *e) {
    const dyn_model *m = gr->model;
    DYN_ASSERT(e->batch == gr->batch);
    if (omp_get_max_threads() != gr->threads) omp_set_num_threads(gr->threads);
    for (int k = 0; k < gr->n; k++) {
        gnode *nd = &gr->g[k];
        const dyn_node *mn = &m->nodes[k];
        if (nd->kind == K_PLAIN) {
            dyn_tensor xs[DYN_LAYER_MAX_INPUTS], y;
            for (int i = 0; i < mn->ninputs; i++) {
                const dyn_tensor *t = mn->inputs[i] < 0 ? &e->input : &e->act[mn->inputs[i]];
                dyn_shape s = dyn_tensor_shape(t);
                s.d[0] = gr->batch;
                xs[i] = dyn_tensor_view(t->data, s.ndim, s.d);
            }
            dyn_shape s = dyn_tensor_shape(&e->act[k]);
            s.d[0] = gr->batch;
            y = dyn_tensor_view(e->act[k].data, s.ndim, s.d);
            mn->layer->ops->forward(mn->layer, xs, &y, e->scratch, 0);
            continue;
        }
        if (nd->runs) {
            if (nd->rin)
                RUN(nd->rin, {DNNL_ARG_FROM, nd->m_src}, {DNNL_ARG_TO, nd->m_in},
                    {DNNL_ARG_SCRATCHPAD, gr->m_sp});
            if (nd->rsum)
                RUN(nd->rsum, {DNNL_ARG_FROM, nd->m_sum}, {DNNL_ARG_TO, gr->vals[nd->val].mem},
                    {DNNL_ARG_SCRATCHPAD, gr->m_sp});
            DYN_ASSERT(dnnl_primitive_execute(nd->prim, gr->stream, nd->nargs, nd->args) ==
                       dnnl_success);
        }
        /* Exports of the nodes whose value this primitive completed (itself, fused readers). */
        for (int i = 0; i < nd->nexp; i++) {
            gnode *x = &gr->g[nd->exp[i]];
            RUN(x->rexp, {DNNL_ARG_FROM, gr->vals[x->val].mem}, {DNNL_ARG_TO, x->m_exp},
                {DNNL_ARG_SCRATCHPAD, gr->m_sp});
        }
    }
    DYN_ASSERT(dnnl_stream_wait(gr->stream) == dnnl_success);
}
