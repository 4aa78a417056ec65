/* backend_impl.h — what model.c and train.c call in backend.c for placed models (internal). */
#ifndef DYN_BACKEND_IMPL_H
#define DYN_BACKEND_IMPL_H

#include "backend.h"

/* The model input's shape with batch `batch` (model.c). */
dyn_shape dyn__model_input_shape(const dyn_model *m, int batch);

/* prepare() of every layer: the device prepare of placed layers, the CPU one of the others. */
int dyn__place_prepare(dyn_model *m, dyn_err *err);
/* Zeroes every gradient, on the device for placed layers. */
int dyn__place_zero_grad(dyn_model *m, dyn_err *err);
/* One optimizer update of the placed parameter p on the model context. */
int dyn__place_optim(dyn_model *m, dyn_param *p, const dyn_optim_update *u, dyn_err *err);
/* Waits for the model context. */
int dyn__place_sync(dyn_model *m, dyn_err *err);

/* The device half of an exec of a placed model: buffers (shapes: node outputs at max_batch);
 * sets need[k] = 1 for the nodes whose host copies (e->act, e->grad) the CPU needs. Returns 0
 * or a DYN_E* code (e->dev may be partly built: dyn__exec_dev_free frees it). */
int dyn__exec_dev_new(dyn_exec *e, const dyn_shape *shapes, unsigned char *need, dyn_err *err);
void dyn__exec_dev_free(dyn_exec *e);
/* Moves the host input (e->input) and output (the last node's e->act) into the backend's
 * page-locked memory, when it has some (after model.c allocated them). Returns 0 or a DYN_E*
 * code (then they stay where they were). */
int dyn__exec_dev_pin(dyn_exec *e, dyn_err *err);
/* Forward / backward on the device (NULL / a DYN_E* code on failure, message in
 * dyn__exec_dev_error). */
const dyn_tensor *dyn__exec_dev_forward(dyn_exec *e, const float *x, int batch);
int dyn__exec_dev_backward(dyn_exec *e, const float *dout);
const dyn_err *dyn__exec_dev_error(const dyn_exec *e);

#endif
