/* backend.h — where a model's layers run: the CPU (always), or a device backend (CUDA).
 *
 * Design: engine/README.md "Backends (CPU, CUDA)". The graph and the ops (layer.h, model.h)
 * say what to compute; a backend says where tensors live and how one op runs there. A backend
 * is a table (dyn_backend): buffer functions (alloc, free, copies, fill, axpy), the optimizer
 * update, and one dyn_backend_op per dyn_op (NULL: that op has no kernel there and runs on the
 * CPU). The executor (model.c / backend.c) is the only caller.
 *
 * Placing a model (dyn_model_place) gives every layer the backend supports device copies of
 * its parameters (dyn_param.dval, .dgrad, .dm, .dv) and lets the op derive its device state
 * (layer->dev, e.g. a DyN layer's materialized W) in prepare(). Layers the backend does not
 * support stay on the host and run through the CPU kernels, their inputs and outputs copied
 * across (logged once per model, so a missing kernel is visible). While a model is placed, the
 * device copies are the truth: dyn_model_to_host copies them back into the host values
 * (saving a model, a snapshot), dyn_model_to_device the other way (after host code changed
 * parameters).
 *
 * Device pointers are never dereferenced on the host. A tensor on a device has
 * dyn_tensor.device != DYN_DEV_CPU.
 *
 * Threading: one backend context (`ctx`, opaque) is used by one thread at a time; each
 * inference exec has its own (its own CUDA stream), a training exec shares the model's.
 */
#ifndef DYN_BACKEND_H
#define DYN_BACKEND_H

#include "model.h"

/* One op's kernels on a backend. Tensors are device tensors (contiguous, batch first, the
 * shapes of the CPU op); parameters are read from dyn_param.dval (gradients accumulate (+=)
 * into dyn_param.dgrad, as on the CPU), derived device state from l->dev. Every function
 * returns 0 or a DYN_E* code with err naming the layer and the failing call. */
typedef struct dyn_backend_op {
    /* 1 when this backend runs layer l on input shapes `in` (batch included; training: also its
     * backward), else 0 (the layer then stays on the CPU). NULL: every shape. */
    int (*supports)(const dyn_layer *l, const dyn_shape *in, int training);
    /* Device scratch floats forward / backward need (kept between a training forward and its
     * backward, as on the CPU). NULL: none. */
    size_t (*scratch)(const dyn_layer *l, const dyn_shape *in, int training);
    /* Derives l->dev from the device parameters: after placement and after every optimizer
     * step. Must free what a previous prepare made. NULL: nothing derived. */
    int (*prepare)(void *ctx, dyn_layer *l, dyn_err *err);
    /* Frees l->dev (and sets it NULL). NULL when prepare is NULL. */
    void (*release)(void *ctx, dyn_layer *l);
    int (*forward)(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                   int training, dyn_err *err);
    /* Accumulates parameter gradients into dgrad (+=) and writes (=) dx[k] for each input k
     * whose dx[k].data is not NULL. */
    int (*backward)(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                    const dyn_tensor *dy, dyn_tensor *dx, float *scratch, dyn_err *err);
} dyn_backend_op;

/* One optimizer update of one parameter tensor (the formulas of dyn_optim_step, train.c):
 * adam: m = b1 m + (1-b1) g; v = b2 v + (1-b2) g²; w -= lr ((m/bc1) / (sqrt(v/bc2) + eps) + wd w)
 * sgd:  m = mu m + g + wd w; w -= lr m                                  (v unused, may be NULL) */
typedef struct dyn_optim_update {
    int adam;
    float lr, mu, b1, b2, bc1, bc2, eps, wd;
} dyn_optim_update;

typedef struct dyn_backend {
    const char *name; /* "cuda" */
    int device;       /* the dyn_tensor.device value of its tensors (DYN_DEV_*) */
    /* A context on device `dev`: *ctx set (free with ctx_free), or a DYN_E* code. */
    int (*ctx_new)(int dev, void **ctx, dyn_err *err);
    void (*ctx_free)(void *ctx);
    /* Device memory (contents undefined), from the context's pool; free with free(). */
    int (*alloc)(void *ctx, size_t bytes, void **p, dyn_err *err);
    void (*free)(void *ctx, void *p);
    /* Copies, ordered with the context's kernels; download waits until dst holds the data. */
    int (*upload)(void *ctx, void *dst_dev, const void *src, size_t bytes, dyn_err *err);
    int (*download)(void *ctx, void *dst, const void *src_dev, size_t bytes, dyn_err *err);
    int (*copy)(void *ctx, void *dst_dev, const void *src_dev, size_t bytes, dyn_err *err);
    /* p[0..n) = v. */
    int (*fill)(void *ctx, float *p, float v, int64_t n, dyn_err *err);
    /* y[0..n) += a x[0..n). */
    int (*axpy)(void *ctx, float *y, const float *x, float a, int64_t n, dyn_err *err);
    /* One optimizer update of w[0..n) (m, v: the moments: the host's at placement, else zeros). */
    int (*optim)(void *ctx, const dyn_optim_update *u, float *w, const float *g, float *m,
                 float *v, int64_t n, dyn_err *err);
    /* Waits for the context's queued work; reports a failure of any of it. */
    int (*sync)(void *ctx, dyn_err *err);
    /* Page-locked host memory for staging a batch's input and output (fast, asynchronous
     * copies); both NULL: plain host memory is used. */
    int (*host_alloc)(size_t bytes, void **p, dyn_err *err);
    void (*host_free)(void *p);
    /* Bytes of device memory the context's pool holds (reserved, in use), for /metrics. */
    void (*mem)(void *ctx, size_t *reserved, size_t *in_use);
    /* The op kernels, indexed by dyn_op; NULL: the op runs on the CPU. */
    const dyn_backend_op *ops[DYN_OP_COUNT];
} dyn_backend;

/* The CUDA backend (engine/cuda/backend.c). In a build without CUDA its ctx_new fails with
 * DYN_EUNSUP ("this build has no CUDA backend ..."). */
extern const dyn_backend dyn_backend_cuda;

/* Resolves a device setting: "cpu", "cuda", "cuda:N" or "auto". Returns 0 with *be (NULL for
 * the CPU) and *dev set, and `why` (n bytes; may be NULL) saying what was chosen and why
 * ("cuda:0 (NVIDIA H200, 139 GiB)", "auto: this build has no CUDA backend ...; running on the
 * CPU"). "cuda" / "cuda:N" without a usable device: DYN_EUNSUP with err saying why; anything
 * else: DYN_EINVAL. */
int dyn_backend_select(const char *setting, const dyn_backend **be, int *dev, char *why,
                       size_t n, dyn_err *err);
/* 1 when this build has CUDA and device 0 answers. */
int dyn_cuda_backend_usable(void);

/* Places m on backend `be`, device `dev`: a model context, device copies of the parameters
 * (values and optimizer moments uploaded (moments zero when the host has none), gradients
 * zeroed) of every layer whose op the backend supports
 * at batch 1, then their prepare(). Layers left on the CPU are counted in *on_cpu (may be NULL)
 * and named in one log line. Returns 0, or a DYN_E* code with err set and m left on the CPU
 * (nothing placed). A placed model is unplaced with dyn_model_unplace (dyn_model_free does it).
 */
int dyn_model_place(dyn_model *m, const dyn_backend *be, int dev, int *on_cpu, dyn_err *err);
/* Frees every device copy and the model context; the host values stay as they were (call
 * dyn_model_to_host first to keep device-side training). No-op on an unplaced model. */
void dyn_model_unplace(dyn_model *m);
/* Copies the device parameter values (and optimizer moments) into the host values and
 * prepares the host layers.
 * Returns 0 or a DYN_E* code. No-op (0) on an unplaced model. */
int dyn_model_to_host(dyn_model *m, dyn_err *err);
/* Copies the host parameter values to the device and prepares the device layers. */
int dyn_model_to_device(dyn_model *m, dyn_err *err);
/* The backend m is placed on (NULL: the CPU) and the name of the device ("cpu", "cuda:0"). */
const dyn_backend *dyn_model_backend(const dyn_model *m);
const char *dyn_model_device_name(const dyn_model *m);
/* Device memory held by the model context (parameters, derived state), in bytes; 0 on CPU. */
size_t dyn_model_device_bytes(const dyn_model *m);

#endif
