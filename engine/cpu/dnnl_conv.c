/* dnnl_conv.c — convolution forward (inference) through oneDNN's C API; see dnnl_conv.h.
 *
 * One CPU engine for the process (created on first use). Each entry owns its primitives
 * (the convolution, and in the blocked variant the reorders of the input to the layout the
 * convolution chose and of its output back to NCHW), its stream and one user scratchpad sized
 * for the largest of the three; the blocked activations go to the caller's scratch (the
 * engine's inference scratch is one area shared by all nodes: per-entry buffers would hold
 * every layer's activations at every batch size); the reordered weights are kept per cache,
 * one copy per layout. oneDNN runs on OpenMP: its parallel regions take the calling
 * thread's OpenMP thread count, which acquire sets to dyn_threads_get() (the primitives are
 * also keyed by it: oneDNN fixes its work split when it creates them).
 */
#include "dnnl_conv.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <dnnl.h>
#include <dnnl_debug.h>
#include <omp.h>

/* ---- the setting ---- */

static const char *const impl_names[] = {"auto", "im2col", "dnnl", "dnnl-nchw", "graph"};
static atomic_int g_impl = -1; /* -1: not read yet */

const char *dyn_conv_impl_name(dyn_conv_impl m) {
    return (unsigned)m < DYN_ARRAY_LEN(impl_names) ? impl_names[m] : "?";
}

int dyn_conv_impl_parse(const char *s, dyn_conv_impl *out) {
    for (size_t i = 0; s && i < DYN_ARRAY_LEN(impl_names); i++)
        if (!strcmp(s, impl_names[i])) {
            *out = (dyn_conv_impl)i;
            return 0;
        }
    return DYN_EINVAL;
}

static _Thread_local int t_impl = -1;

int dyn_conv_impl_set_thread(int m) {
    const int old = t_impl;
    t_impl = m >= (int)DYN_CONV_AUTO && m <= (int)DYN_CONV_GRAPH ? m : -1;
    return old;
}

dyn_conv_impl dyn_conv_impl_get(void) {
    if (t_impl >= 0) return (dyn_conv_impl)t_impl;
    int m = atomic_load(&g_impl);
    if (m >= 0) return (dyn_conv_impl)m;
    dyn_conv_impl e = DYN_CONV_AUTO;
    if (dyn_conv_impl_parse(getenv("DYN_CONV_IMPL"), &e)) e = DYN_CONV_AUTO;
    int expect = -1;
    atomic_compare_exchange_strong(&g_impl, &expect, (int)e);
    return (dyn_conv_impl)atomic_load(&g_impl);
}

void dyn_conv_impl_set(dyn_conv_impl m) { atomic_store(&g_impl, (int)m); }

static atomic_int g_wino = -1; /* -1: not read yet */

dyn_conv_winograd dyn_conv_winograd_get(void) {
    int w = atomic_load(&g_wino);
    if (w >= 0) return (dyn_conv_winograd)w;
    const char *s = getenv("DYN_CONV_WINOGRAD");
    int v = s && !strcmp(s, "on") ? DYN_WINO_ON : s && !strcmp(s, "off") ? DYN_WINO_OFF
                                                                         : DYN_WINO_AUTO;
    int expect = -1;
    atomic_compare_exchange_strong(&g_wino, &expect, v);
    return (dyn_conv_winograd)atomic_load(&g_wino);
}

void dyn_conv_winograd_set(dyn_conv_winograd w) { atomic_store(&g_wino, (int)w); }

/* ---- the engine ---- */

static dnnl_engine_t g_engine;
static pthread_once_t g_engine_once = PTHREAD_ONCE_INIT;

static void engine_init(void) {
    if (dnnl_engine_create(&g_engine, dnnl_cpu, 0) != dnnl_success) g_engine = NULL;
}

static dnnl_engine_t engine_get(void) {
    pthread_once(&g_engine_once, engine_init);
    return g_engine;
}

void *dyn__dnnl_engine(void) { return engine_get(); }

/* ---- the cache ---- */

typedef struct wstore {
    const float *src; /* the user's weights it was reordered from */
    dnnl_memory_desc_t md;
    float *buf;
    int refs; /* entries using it: the last one to go frees it */
    struct wstore *next;
} wstore;

typedef struct choice_rec {
    int n, h, w, threads;
    dyn_conv_impl choice;
} choice_rec;

#define CHOICES_MAX 64

struct dyn_dnnl_conv {
    int n, h, w, threads;
    dyn_conv_impl v;
    const float *wsrc; /* the user's weights it was made with */
    int busy;
    int failed; /* a stub: oneDNN could not make this one */
    dnnl_primitive_t conv, rin, rout; /* rin / rout NULL when the layouts already agree */
    dnnl_memory_t m_x, m_xb, m_w, m_b, m_yb, m_y, m_sp;
    dnnl_stream_t stream;
    size_t xb_bytes;     /* offset of the blocked output in the caller's act area */
    float *sp;           /* owned */
    wstore *ws;          /* its reordered weights (one reference), NULL: the user's */
    char impl[64];
    struct dyn_dnnl_conv *next;
};

struct dyn_dnnl_cache {
    pthread_mutex_t mu;
    int groups, cout, has_bias;
    int linear; /* entries are inner products (dyn__dnnl_cache_new_linear) */
    dyn_dnnl_conv *entries;
    int nentries;
    wstore *weights;
    choice_rec choices[CHOICES_MAX];
    int nchoices, next_choice;
};

dyn_dnnl_cache *dyn__dnnl_cache_new(int groups, int cout, int has_bias) {
    dyn_dnnl_cache *c = calloc(1, sizeof *c);
    if (!c) return NULL;
    if (pthread_mutex_init(&c->mu, NULL)) {
        free(c);
        return NULL;
    }
    c->groups = groups;
    c->cout = cout;
    c->has_bias = has_bias;
    return c;
}

/* Frees e and drops its reference to its reordered weights (cache mutex held). */
static void entry_free(dyn_dnnl_cache *c, dyn_dnnl_conv *e) {
    if (!e) return;
    if (e->ws && --e->ws->refs == 0)
        for (wstore **p = &c->weights; *p; p = &(*p)->next)
            if (*p == e->ws) {
                *p = e->ws->next;
                dyn_free(e->ws->buf);
                free(e->ws);
                break;
            }
    dnnl_primitive_destroy(e->conv);
    dnnl_primitive_destroy(e->rin);
    dnnl_primitive_destroy(e->rout);
    dnnl_memory_t ms[] = {e->m_x, e->m_xb, e->m_w, e->m_b, e->m_yb, e->m_y, e->m_sp};
    for (size_t i = 0; i < DYN_ARRAY_LEN(ms); i++) dnnl_memory_destroy(ms[i]);
    if (e->stream) dnnl_stream_destroy(e->stream);
    dyn_free(e->sp);
    free(e);
}

void dyn__dnnl_cache_clear(dyn_dnnl_cache *c) {
    if (!c) return;
    pthread_mutex_lock(&c->mu);
    for (dyn_dnnl_conv *e = c->entries, *nx; e; e = nx) {
        nx = e->next;
        DYN_ASSERT(!e->busy);
        entry_free(c, e);
    }
    c->entries = NULL;
    c->nentries = 0;
    DYN_ASSERT(c->weights == NULL); /* the last entry using each copy freed it */
    pthread_mutex_unlock(&c->mu);
}

dyn_dnnl_cache *dyn__dnnl_cache_new_linear(int out, int has_bias) {
    dyn_dnnl_cache *c = dyn__dnnl_cache_new(1, out, has_bias);
    if (c) c->linear = 1;
    return c;
}

void dyn__dnnl_cache_free(dyn_dnnl_cache *c) {
    if (!c) return;
    dyn__dnnl_cache_clear(c);
    pthread_mutex_destroy(&c->mu);
    free(c);
}

/* ---- entries ---- */

#define DN(call)                                                                        \
    do {                                                                                \
        dnnl_status_t st_ = (call);                                                     \
        if (st_ != dnnl_success) {                                                      \
            rc = dyn_err_set(err, st_ == dnnl_unimplemented ? DYN_EUNSUP : DYN_ENOMEM,  \
                             "oneDNN: %s: %s", #call, dnnl_status2str(st_));            \
            goto done;                                                                  \
        }                                                                               \
    } while (0)

/* A reorder primitive from md a to md b (user scratchpad: sp_bytes grows to its need). */
static dnnl_status_t reorder_make(const dnnl_memory_desc_t *a, const dnnl_memory_desc_t *b,
                                  const_dnnl_primitive_attr_t attr, dnnl_primitive_t *out,
                                  size_t *sp_bytes) {
    dnnl_primitive_desc_t pd;
    dnnl_status_t st = dnnl_reorder_primitive_desc_create(&pd, a, engine_get(), b, engine_get(),
                                                          attr);
    if (st != dnnl_success) return st;
    size_t sp = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    *sp_bytes = DYN_MAX(*sp_bytes, sp);
    st = dnnl_primitive_create(out, pd);
    dnnl_primitive_desc_destroy(pd);
    return st;
}

/* The weights in layout md for entry e: the user's array when md is its own layout, else a
 * copy reordered once and kept in the cache while entries use it (mutex held). NULL with *st
 * set on failure. */
static float *weights_for(dyn_dnnl_cache *c, dyn_dnnl_conv *e, const float *w,
                          const dnnl_memory_desc_t *user, const dnnl_memory_desc_t *md,
                          dnnl_status_t *st) {
    *st = dnnl_success;
    if (dnnl_memory_desc_equal(user, md)) return (float *)w;
    for (wstore *s = c->weights; s; s = s->next)
        if (s->src == w && dnnl_memory_desc_equal(&s->md, md)) {
            s->refs++;
            e->ws = s;
            return s->buf;
        }
    wstore *s = calloc(1, sizeof *s);
    float *buf = dyn_alloc(dnnl_memory_desc_get_size(md));
    dnnl_primitive_t r = NULL;
    dnnl_memory_t mu = NULL, mb = NULL;
    dnnl_stream_t strm = NULL;
    size_t sp = 0;
    if (!s || !buf) {
        *st = dnnl_out_of_memory;
        goto fail;
    }
    if ((*st = reorder_make(user, md, NULL, &r, &sp)) ||
        (*st = dnnl_memory_create(&mu, user, engine_get(), (void *)w)) ||
        (*st = dnnl_memory_create(&mb, md, engine_get(), buf)) ||
        (*st = dnnl_stream_create(&strm, engine_get(), dnnl_stream_default_flags)))
        goto fail;
    dnnl_exec_arg_t args[] = {{DNNL_ARG_FROM, mu}, {DNNL_ARG_TO, mb}};
    if ((*st = dnnl_primitive_execute(r, strm, 2, args)) || (*st = dnnl_stream_wait(strm)))
        goto fail;
    dnnl_primitive_destroy(r);
    dnnl_memory_destroy(mu);
    dnnl_memory_destroy(mb);
    dnnl_stream_destroy(strm);
    s->src = w;
    s->md = *md;
    s->buf = buf;
    s->refs = 1;
    e->ws = s;
    s->next = c->weights;
    c->weights = s;
    return buf;
fail:
    if (r) dnnl_primitive_destroy(r);
    if (mu) dnnl_memory_destroy(mu);
    if (mb) dnnl_memory_destroy(mb);
    if (strm) dnnl_stream_destroy(strm);
    dyn_free(buf);
    free(s);
    return NULL;
}

/* The rest of an entry once its primitive descriptor pd exists: the primitive, the reorders
 * of the activations when pd chose other layouts than the user's (attr: user scratchpad), the
 * weights in pd's layout, the memories, the scratchpad, the stream. Returns 0 or DYN_E*. */
static int entry_finish(dyn_dnnl_cache *c, const dyn_conv_geom *g, dyn_dnnl_conv *e,
                        const_dnnl_primitive_desc_t pd, const_dnnl_primitive_attr_t attr,
                        const dnnl_memory_desc_t *x_user_p, const dnnl_memory_desc_t *y_user_p,
                        const dnnl_memory_desc_t *w_user_p, const dnnl_memory_desc_t *b_md_p,
                        const float *w, dyn_err *err) {
    int rc = 0;
    const dnnl_memory_desc_t x_user = *x_user_p, y_user = *y_user_p, w_user = *w_user_p,
                             b_md = *b_md_p;
    const char *impl = NULL;
    if (dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl)
        snprintf(e->impl, sizeof e->impl, "%s", impl);
    const dnnl_memory_desc_t *xq = dnnl_primitive_desc_query_md(pd, dnnl_query_src_md, 0);
    const dnnl_memory_desc_t *yq = dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    const dnnl_memory_desc_t *wq = dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    size_t sp = dnnl_memory_desc_get_size(dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0));
    DN(dnnl_primitive_create(&e->conv, pd));
    if (!dnnl_memory_desc_equal(xq, &x_user)) {
        DN(reorder_make(&x_user, xq, attr, &e->rin, &sp));
        e->xb_bytes = (dnnl_memory_desc_get_size(xq) + DYN_ALIGN - 1) / DYN_ALIGN * DYN_ALIGN;
        DN(dnnl_memory_create(&e->m_xb, xq, engine_get(), DNNL_MEMORY_NONE));
    }
    if (!dnnl_memory_desc_equal(yq, &y_user)) {
        DN(reorder_make(yq, &y_user, attr, &e->rout, &sp));
        DN(dnnl_memory_create(&e->m_yb, yq, engine_get(), DNNL_MEMORY_NONE));
    }
    /* The blocked activations live in the caller's scratch: they must fit its bound. */
    if (e->xb_bytes + (e->rout ? dnnl_memory_desc_get_size(yq) : 0) >
        dyn__dnnl_act_floats(g, c->cout) * sizeof(float)) {
        rc = dyn_err_set(err, DYN_EUNSUP, "oneDNN chose activation layouts larger than %zu floats",
                         dyn__dnnl_act_floats(g, c->cout));
        goto done;
    }
    dnnl_status_t wst;
    float *wbuf = weights_for(c, e, w, &w_user, wq, &wst);
    if (!wbuf) DN(wst);
    DN(dnnl_memory_create(&e->m_w, wq, engine_get(), wbuf));
    DN(dnnl_memory_create(&e->m_x, &x_user, engine_get(), DNNL_MEMORY_NONE));
    DN(dnnl_memory_create(&e->m_y, &y_user, engine_get(), DNNL_MEMORY_NONE));
    if (c->has_bias) DN(dnnl_memory_create(&e->m_b, &b_md, engine_get(), DNNL_MEMORY_NONE));
    if (sp) {
        dnnl_memory_desc_t sp_md;
        dnnl_dims_t sd = {(dnnl_dim_t)sp};
        DN(dnnl_memory_desc_init_by_tag(&sp_md, 1, sd, dnnl_u8, dnnl_a));
        e->sp = dyn_alloc(sp);
        if (!e->sp) DN(dnnl_out_of_memory);
        DN(dnnl_memory_create(&e->m_sp, &sp_md, engine_get(), e->sp));
    }
    DN(dnnl_stream_create(&e->stream, engine_get(), dnnl_stream_default_flags));
done:
    return rc;
}

/* A linear layer's inner product y [N][out] = x [N][in] Wᵀ + b: plain activations, the
 * weights in the layout oneDNN picks. */
static int ip_make(dyn_dnnl_cache *c, const dyn_conv_geom *g, dyn_dnnl_conv *e, dyn_err *err) {
    int rc = 0;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_dims_t xd = {g->N, g->C}, yd = {g->N, c->cout}, wd = {c->cout, g->C}, bd = {c->cout};
    dnnl_memory_desc_t x_user, y_user, w_user, w_any, b_md;
    DN(dnnl_memory_desc_init_by_tag(&x_user, 2, xd, dnnl_f32, dnnl_nc));
    DN(dnnl_memory_desc_init_by_tag(&y_user, 2, yd, dnnl_f32, dnnl_nc));
    DN(dnnl_memory_desc_init_by_tag(&w_user, 2, wd, dnnl_f32, dnnl_oi));
    DN(dnnl_memory_desc_init_by_tag(&w_any, 2, wd, dnnl_f32, dnnl_format_tag_any));
    DN(dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_a));
    dnnl_inner_product_desc_t ipd;
    DN(dnnl_inner_product_forward_desc_init(&ipd, dnnl_forward_inference, &x_user, &w_any,
                                            c->has_bias ? &b_md : NULL, &y_user));
    DN(dnnl_primitive_attr_create(&attr));
    DN(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    DN(dnnl_primitive_desc_create(&pd, &ipd, attr, engine_get(), NULL));
    rc = entry_finish(c, g, e, pd, attr, &x_user, &y_user, &w_user, &b_md, e->wsrc, err);
done:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    return rc;
}

/* Creates an entry (mutex held). Returns 0, DYN_EUNSUP (no oneDNN implementation) or another
 * DYN_E* code, with a message. */
static int entry_make(dyn_dnnl_cache *c, const dyn_conv_geom *g, dyn_conv_impl v, int threads,
                      const float *w, dyn_dnnl_conv **out, dyn_err *err) {
    int rc = 0;
    dnnl_primitive_attr_t attr = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dyn_dnnl_conv *e = calloc(1, sizeof *e);
    if (!e) return dyn_err_set(err, DYN_ENOMEM, "oneDNN convolution: out of memory");
    e->n = g->N, e->h = g->H, e->w = g->W, e->threads = threads, e->v = v, e->wsrc = w;
    if (!engine_get()) {
        rc = dyn_err_set(err, DYN_EUNSUP, "oneDNN: no CPU engine");
        goto done;
    }
    if (c->linear) {
        rc = ip_make(c, g, e, err);
        goto done;
    }
    const int G = c->groups;
    dnnl_dims_t xd = {g->N, g->C, g->H, g->W}, yd = {g->N, c->cout, g->OH, g->OW};
    dnnl_dims_t wd = {c->cout, g->C, g->KH, g->KW}, bd = {c->cout};
    dnnl_dims_t wgd = {G, c->cout / G, g->C / G, g->KH, g->KW};
    dnnl_dims_t strides = {g->SH, g->SW}, dil = {g->DH - 1, g->DW - 1}, pad = {g->PH, g->PW};
    dnnl_memory_desc_t x_user, y_user, w_user, b_md, x_md, y_md, w_any;
    const dnnl_format_tag_t act = v == DYN_CONV_DNNL ? dnnl_format_tag_any : dnnl_nchw;
    DN(dnnl_memory_desc_init_by_tag(&x_user, 4, xd, dnnl_f32, dnnl_nchw));
    DN(dnnl_memory_desc_init_by_tag(&y_user, 4, yd, dnnl_f32, dnnl_nchw));
    DN(dnnl_memory_desc_init_by_tag(&x_md, 4, xd, dnnl_f32, act));
    DN(dnnl_memory_desc_init_by_tag(&y_md, 4, yd, dnnl_f32, act));
    if (G == 1) {
        DN(dnnl_memory_desc_init_by_tag(&w_user, 4, wd, dnnl_f32, dnnl_oihw));
        DN(dnnl_memory_desc_init_by_tag(&w_any, 4, wd, dnnl_f32, dnnl_format_tag_any));
    } else {
        DN(dnnl_memory_desc_init_by_tag(&w_user, 5, wgd, dnnl_f32, dnnl_goihw));
        DN(dnnl_memory_desc_init_by_tag(&w_any, 5, wgd, dnnl_f32, dnnl_format_tag_any));
    }
    DN(dnnl_memory_desc_init_by_tag(&b_md, 1, bd, dnnl_f32, dnnl_a));
    dnnl_convolution_desc_t cd;
    DN(dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference,
                                                  dnnl_convolution_direct, &x_md, &w_any,
                                                  c->has_bias ? &b_md : NULL, &y_md, strides,
                                                  dil, pad, pad));
    DN(dnnl_primitive_attr_create(&attr));
    DN(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    DN(dnnl_primitive_desc_create(&pd, &cd, attr, engine_get(), NULL));
    rc = entry_finish(c, g, e, pd, attr, &x_user, &y_user, &w_user, &b_md, w, err);
done:
    if (pd) dnnl_primitive_desc_destroy(pd);
    if (attr) dnnl_primitive_attr_destroy(attr);
    if (rc) {
        entry_free(c, e);
        return rc;
    }
    *out = e;
    return 0;
}

dyn_dnnl_conv *dyn__dnnl_acquire(dyn_dnnl_cache *c, const dyn_conv_geom *g, dyn_conv_impl v,
                                 const float *w, dyn_err *err) {
    DYN_ASSERT(v == DYN_CONV_DNNL || v == DYN_CONV_DNNL_NCHW);
    const int threads = dyn_threads_get();
    /* oneDNN sizes its parallel regions from the calling thread's OpenMP setting. */
    if (omp_get_max_threads() != threads) omp_set_num_threads(threads);
    dyn_dnnl_conv *e;
    pthread_mutex_lock(&c->mu);
    for (e = c->entries; e; e = e->next)
        if (e->v == v && e->n == g->N && e->h == g->H && e->w == g->W &&
            e->threads == threads && e->wsrc == w && (e->failed || !e->busy))
            break;
    if (e && e->failed) {
        e = NULL; /* oneDNN could not make it: not tried again */
    } else if (!e && c->nentries < DYN_DNNL_CACHE_MAX) {
        if (entry_make(c, g, v, threads, w, &e, err)) {
            /* Remember the failure (a stub entry) rather than retry it on every call. */
            dyn_dnnl_conv *f = calloc(1, sizeof *f);
            if (f) *f = (dyn_dnnl_conv){.n = g->N, .h = g->H, .w = g->W, .threads = threads,
                                        .v = v, .wsrc = w, .failed = 1};
            e = f;
        }
        if (e) {
            e->next = c->entries;
            c->entries = e;
            c->nentries++;
            if (e->failed) e = NULL;
        }
    }
    if (e) e->busy = 1;
    pthread_mutex_unlock(&c->mu);
    return e;
}

void dyn__dnnl_release(dyn_dnnl_cache *c, dyn_dnnl_conv *e, int keep) {
    pthread_mutex_lock(&c->mu);
    e->busy = 0;
    if (!keep) {
        for (dyn_dnnl_conv **p = &c->entries; *p; p = &(*p)->next)
            if (*p == e) {
                *p = e->next;
                c->nentries--;
                entry_free(c, e);
                break;
            }
    }
    pthread_mutex_unlock(&c->mu);
}

#define EXEC(prim, ...)                                                                     \
    do {                                                                                    \
        dnnl_exec_arg_t a_[] = {__VA_ARGS__};                                               \
        DYN_ASSERT(dnnl_primitive_execute(prim, e->stream, (int)DYN_ARRAY_LEN(a_), a_) ==   \
                   dnnl_success);                                                           \
    } while (0)

size_t dyn__dnnl_act_floats(const dyn_conv_geom *g, int cout) {
    const int64_t cin16 = (g->C + 15) / 16 * 16, cout16 = ((int64_t)cout + 15) / 16 * 16;
    const int64_t xf = (int64_t)g->N * cin16 * g->H * g->W;
    return (size_t)((xf + 15) / 16 * 16 + (int64_t)g->N * cout16 * g->OH * g->OW);
}

void dyn__dnnl_forward(dyn_dnnl_conv *e, const float *x, const float *bias, float *y,
                       float *act) {
    DYN_ASSERT(e->busy && (bias != NULL) == (e->m_b != NULL));
    DYN_ASSERT(dnnl_memory_set_data_handle(e->m_x, (void *)x) == dnnl_success);
    DYN_ASSERT(dnnl_memory_set_data_handle(e->m_y, y) == dnnl_success);
    if (bias) DYN_ASSERT(dnnl_memory_set_data_handle(e->m_b, (void *)bias) == dnnl_success);
    if (e->rin) DYN_ASSERT(dnnl_memory_set_data_handle(e->m_xb, act) == dnnl_success);
    if (e->rout)
        DYN_ASSERT(dnnl_memory_set_data_handle(e->m_yb, (char *)act + e->xb_bytes) ==
                   dnnl_success);
    dnnl_memory_t src = e->rin ? e->m_xb : e->m_x, dst = e->rout ? e->m_yb : e->m_y;
    /* A NULL memory in an argument list means "none" (no bias, no scratchpad). */
    if (e->rin) EXEC(e->rin, {DNNL_ARG_FROM, e->m_x}, {DNNL_ARG_TO, e->m_xb},
                     {DNNL_ARG_SCRATCHPAD, e->m_sp});
    EXEC(e->conv, {DNNL_ARG_SRC, src}, {DNNL_ARG_WEIGHTS, e->m_w}, {DNNL_ARG_BIAS, e->m_b},
         {DNNL_ARG_DST, dst}, {DNNL_ARG_SCRATCHPAD, e->m_sp});
    if (e->rout) EXEC(e->rout, {DNNL_ARG_FROM, e->m_yb}, {DNNL_ARG_TO, e->m_y},
                      {DNNL_ARG_SCRATCHPAD, e->m_sp});
    DYN_ASSERT(dnnl_stream_wait(e->stream) == dnnl_success);
}

const char *dyn__dnnl_impl_str(const dyn_dnnl_conv *e) { return e->impl; }

size_t dyn__dnnl_weight_bytes(dyn_dnnl_cache *c) {
    size_t n = 0;
    pthread_mutex_lock(&c->mu);
    for (const wstore *s = c->weights; s; s = s->next) n += dnnl_memory_desc_get_size(&s->md);
    pthread_mutex_unlock(&c->mu);
    return n;
}

/* ---- AUTO's choices ---- */

dyn_conv_impl dyn__dnnl_choice_get(dyn_dnnl_cache *c, const dyn_conv_geom *g, int threads) {
    dyn_conv_impl r = DYN_CONV_AUTO;
    pthread_mutex_lock(&c->mu);
    for (int i = 0; i < c->nchoices; i++) {
        const choice_rec *k = &c->choices[i];
        if (k->n == g->N && k->h == g->H && k->w == g->W && k->threads == threads) {
            r = k->choice;
            break;
        }
    }
    pthread_mutex_unlock(&c->mu);
    return r;
}

void dyn__dnnl_choice_set(dyn_dnnl_cache *c, const dyn_conv_geom *g, int threads,
                          dyn_conv_impl choice) {
    pthread_mutex_lock(&c->mu);
    int i = c->nchoices < CHOICES_MAX ? c->nchoices++ : c->next_choice++ % CHOICES_MAX;
    c->choices[i] = (choice_rec){g->N, g->H, g->W, threads, choice};
    pthread_mutex_unlock(&c->mu);
}
