/* dnnl_conv.h — internal: convolution forward (inference) through oneDNN (Debian's libdnnl 2.6,
 * built on OpenMP like OpenBLAS and the engine's kernels, so all three share one libgomp pool).
 *
 * A conv2d layer keeps a dyn_dnnl_cache: oneDNN primitives created once per (batch, H, W,
 * thread count, variant) and reused, weights reordered once into the layout the primitive
 * chose (shared by the entries that chose the same one, freed with the last) and a user
 * scratchpad allocated with each primitive; the blocked activations use the caller's scratch
 * (dyn__dnnl_act_floats): nothing is allocated per call.
 * Variants:
 *   DYN_CONV_DNNL       — oneDNN picks every layout (blocked weights; channels-last or
 *                         nChw16c / nChw8c activations): its direct JIT kernels (brgconv,
 *                         jit:avx2 ...); the engine's NCHW input and output are reordered in
 *                         and out around the convolution;
 *   DYN_CONV_DNNL_NCHW  — activations stay NCHW, oneDNN picks the weights' layout alone (on
 *                         these shapes it takes its own im2col + JIT sgemm).
 * An entry is used by one caller at a time (acquire / release); two workers running one shape
 * at once get two entries. The cache holds at most DYN_DNNL_CACHE_MAX entries per layer; past
 * that, acquire returns NULL and the caller runs im2col + sgemm.
 * The cache reads the weights when it creates an entry: after the weights change (the layer's
 * prepare()), dyn__dnnl_cache_clear must run before the next forward.
 */
#ifndef DYN_DNNL_CONV_H
#define DYN_DNNL_CONV_H

#include "../base.h"
#include "im2col.h"

/* The implementation a conv2d inference forward runs (process-wide setting). AUTO times
 * im2col + sgemm and the two oneDNN variants side by side on the first forward of each (batch,
 * H, W, threads) of each layer and keeps the fastest for that layer and shape. Linear layers
 * follow it too: IM2COL means their OpenBLAS sgemm, DNNL and DNNL_NCHW oneDNN's inner
 * product, AUTO the faster of the two per row count. */
typedef enum dyn_conv_impl {
    DYN_CONV_AUTO = 0,
    DYN_CONV_IM2COL,
    DYN_CONV_DNNL,
    DYN_CONV_DNNL_NCHW,
    /* The fused inference graph (cpu/graph.h) for the nodes oneDNN runs, the others as AUTO;
     * AUTO itself times the graph against the layer-by-layer forward on the first inference
     * forward of each batch size of each exec, and keeps the faster. */
    DYN_CONV_GRAPH,
} dyn_conv_impl;

/* The setting: dyn_conv_impl_set, else the environment variable DYN_CONV_IMPL
 * (im2col | dnnl | dnnl-nchw | auto, read once; an unknown value means auto), else auto. */
dyn_conv_impl dyn_conv_impl_get(void);
void dyn_conv_impl_set(dyn_conv_impl m);
/* A setting for the calling thread only, before the one above (-1 clears it); returns the
 * previous one (-1: none). Conversions use it: `auto` chooses by timing, so two runs of the same
 * conversion could measure their activations with different implementations (rounding
 * differences) and fit different models; a conversion fixes im2col for itself instead. */
int dyn_conv_impl_set_thread(int m);
/* "auto", "im2col", "dnnl", "dnnl-nchw", "graph"; parse returns 0, or DYN_EINVAL for another name. */
const char *dyn_conv_impl_name(dyn_conv_impl m);
int dyn_conv_impl_parse(const char *s, dyn_conv_impl *out);

/* Winograd convolutions in the fused graph (cpu/graph.h): oneDNN's f32 Winograd kernels
 * (F(2x2,3x3) and F(4x4,3x3), AVX-512 only) compute a 3x3, stride-1, undilated, ungrouped
 * convolution with 2-4x fewer multiplications than the direct one, at a slightly larger rounding
 * error. AUTO builds a graph with them (where oneDNN has them) beside the direct one and keeps
 * the faster by timing (see dyn_conv_impl); ON uses them wherever oneDNN has them; OFF never. */
typedef enum dyn_conv_winograd {
    DYN_WINO_AUTO = 0,
    DYN_WINO_ON,
    DYN_WINO_OFF,
} dyn_conv_winograd;

/* The setting: dyn_conv_winograd_set, else the environment variable DYN_CONV_WINOGRAD
 * (auto | on | off, read once; an unknown value means auto), else auto. */
dyn_conv_winograd dyn_conv_winograd_get(void);
void dyn_conv_winograd_set(dyn_conv_winograd w);

/* The process's oneDNN CPU engine (a dnnl_engine_t), created on first use; NULL when oneDNN
 * has none. Borrowed. */
void *dyn__dnnl_engine(void);

#define DYN_DNNL_CACHE_MAX 16

typedef struct dyn_dnnl_cache dyn_dnnl_cache;

/* A dense convolution's inference forward (ops/conv.c), the implementation chosen by the
 * setting (AUTO: measured per shape, remembered in c): y [N][cout][OH][OW] = conv(x, w
 * [cout][C/groups][KH][KW]) + b (b may be NULL). scratch: dyn__conv_infer_floats(g, cout)
 * floats, 64-byte aligned. conv2d runs it, and dyn_conv2d materialized. */
size_t dyn__conv_infer_floats(const dyn_conv_geom *g, int cout);
void dyn__conv_infer(dyn_dnnl_cache *c, const dyn_conv_geom *g, int groups, int cout,
                     const float *x, const float *w, const float *b, float *y, float *scratch);

typedef struct dyn_dnnl_conv dyn_dnnl_conv;

/* A cache for a convolution of `cout` output channels in `groups` groups, with a bias when
 * has_bias. Returns NULL when out of memory. Free with dyn__dnnl_cache_free. */
dyn_dnnl_cache *dyn__dnnl_cache_new(int groups, int cout, int has_bias);
/* A linear layer's cache (ops/linear.c): its entries are oneDNN inner products
 * y [N][out] = x [N][in] Wᵀ + b with plain activations and the weights ([out][in]) in oneDNN's
 * layout; geometry {N = rows, C = in, H = W = KH = KW = 1, strides and dilations 1}, variant
 * DYN_CONV_DNNL. */
dyn_dnnl_cache *dyn__dnnl_cache_new_linear(int out, int has_bias);
void dyn__dnnl_cache_free(dyn_dnnl_cache *c);
/* Drops every entry and reordered weight (after the weights changed; none may be acquired). */
void dyn__dnnl_cache_clear(dyn_dnnl_cache *c);

/* An entry of variant v (DYN_CONV_DNNL or DYN_CONV_DNNL_NCHW) for geometry g at the current
 * thread count and weights w ([cout][C/groups][KH][KW], borrowed: read when an entry is made,
 * and used in place when oneDNN keeps their layout, so they must stay until the next clear),
 * held for the caller alone until dyn__dnnl_release; created when missing.
 * Returns NULL when oneDNN has no implementation for it, creation failed (err says why when
 * not NULL) or the cache is full. */
dyn_dnnl_conv *dyn__dnnl_acquire(dyn_dnnl_cache *c, const dyn_conv_geom *g, dyn_conv_impl v,
                                 const float *w, dyn_err *err);
/* Gives the entry back; with keep == 0 it is freed (a variant AUTO did not choose). */
void dyn__dnnl_release(dyn_dnnl_cache *c, dyn_dnnl_conv *e, int keep);
/* Floats of caller scratch a forward of geometry g needs for the blocked input and output
 * (a bound for any layout with channel blocks of up to 16; an entry whose layouts would not
 * fit is not made). */
size_t dyn__dnnl_act_floats(const dyn_conv_geom *g, int cout);
/* y [N][cout][OH][OW] = conv(x [N][C][H][W]) + bias (bias NULL when the cache has none);
 * act: dyn__dnnl_act_floats(g, cout) floats of the caller's scratch, 64-byte aligned. */
void dyn__dnnl_forward(dyn_dnnl_conv *e, const float *x, const float *bias, float *y,
                       float *act);
/* oneDNN's name for the implementation it chose ("jit:avx512_core", "gemm:jit", ...). */
const char *dyn__dnnl_impl_str(const dyn_dnnl_conv *e);

/* Bytes of reordered weight copies the cache holds (each shared by the entries of one layout,
 * freed with the last of them). */
size_t dyn__dnnl_weight_bytes(dyn_dnnl_cache *c);

/* AUTO's choice for (g->N, g->H, g->W, threads): DYN_CONV_AUTO while not yet measured. */
dyn_conv_impl dyn__dnnl_choice_get(dyn_dnnl_cache *c, const dyn_conv_geom *g, int threads);
void dyn__dnnl_choice_set(dyn_dnnl_cache *c, const dyn_conv_geom *g, int threads,
                          dyn_conv_impl choice);

#endif
