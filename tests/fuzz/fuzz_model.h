/* fuzz_model.h — what the model harnesses do with a model that loaded: everything the daemon
 * does at load (output count, per-node shapes for a batch, an inference exec) and one forward
 * pass when the input is small enough to keep executions fast. */
#ifndef DYN_FUZZ_MODEL_H
#define DYN_FUZZ_MODEL_H

#include "fuzz.h"
#include "model.h"

static inline void fuzz_run_model(dyn_model *m);

/* What a model harness does with a loader's result: a failure must come with a code and a
 * message; a model is sized, run and freed. */
static inline void fuzz_model_check(dyn_model *m, const dyn_err *err) {
    if (!m) {
        DYN_ASSERT(err->code < 0 && err->msg[0]);
        fuzz_note("%s", err->msg);
        return;
    }
    fuzz_note("loaded: %d nodes, %lld outputs", m->nnodes, (long long)dyn_model_outputs(m));
    fuzz_run_model(m);
    dyn_model_free(m);
}

static inline void fuzz_run_model(dyn_model *m) {
    dyn_err err = {0};
    int64_t in = dyn_shape_numel(&m->input);
    DYN_ASSERT(m->nnodes >= 1 && in >= 1 && in <= DYN_TENSOR_MAX_NUMEL);
    DYN_ASSERT(dyn_model_outputs(m) >= 1);
    dyn_shape *shapes = calloc((size_t)m->nnodes, sizeof *shapes);
    if (shapes && dyn_model_shapes(m, 2, shapes, &err) == 0)
        for (int i = 0; i < m->nnodes; i++) DYN_ASSERT(shapes[i].ndim >= 1 && shapes[i].d[0] == 2);
    free(shapes);
    if (in > (1 << 16)) return;
    dyn_exec *e = dyn_exec_new(m, 1, 0, &err);
    if (!e) return; /* an absurd activation size is refused, with err set */
    float *x = calloc((size_t)in, sizeof *x);
    if (x) {
        for (int64_t i = 0; i < in; i++) x[i] = (float)(i % 7) * 0.25f;
        const dyn_tensor *y = dyn_exec_forward(e, x, 1);
        DYN_ASSERT(y && dyn_tensor_numel(y) == dyn_model_outputs(m));
    }
    free(x);
    dyn_exec_free(e);
}

#endif
