/* model_file.h — dynd model files: a dyn_model stored as safetensors.
 *
 * Tensors: every layer parameter, buffers included (BatchNorm running statistics), as
 * "<layer name>.<param name>", F32, in graph order.
 * "__metadata__" (all values are strings; structured ones hold JSON text):
 *   "format":         "dynd-model"
 *   "format_version": "1"
 *   "graph":          [{"name": "fc1", "op": "linear", "inputs": [-1], "attrs": {...}}, ...]
 *                     in topological order; input -1 is the model input, k >= 0 node k (< self)
 *   "input":          per-sample input shape, e.g. [1, 28, 28]
 *   "labels":         ["0", "1", ...] — empty, or exactly one per model output
 *   "preprocess":     JSON object (absent when the model has none)
 *   "info":           JSON object, free-form provenance (absent when none)
 *   "dynd_version":   the writer's DYN_VERSION (informative only)
 * Unknown metadata keys are ignored on load, so later writers may add informative keys
 * without a version bump; anything a reader must understand bumps "format_version".
 *
 * Loading validates everything and rebuilds the model through the same path as code does
 * (dyn_layer_create, dyn_model_add — which checks arity and shapes — then dyn_model_prepare):
 * every parameter must be present with exactly its shape, no tensor may be left over, every
 * value must be finite. A save / load round trip is bit-exact.
 */
#ifndef DYN_IO_MODEL_FILE_H
#define DYN_IO_MODEL_FILE_H

#include "../model.h"
#include "safetensors.h"

#define DYN_MODEL_FORMAT "dynd-model"
#define DYN_MODEL_FORMAT_VERSION 1

/* Writes m to `path` atomically (see dyn_st_write): the old file, if any, stays intact until the
 * new one is complete. m is only read. Returns 0, or DYN_EINVAL (a parameter holds NaN/Inf, two
 * tensor names collide, a layer cannot report its attributes), DYN_EIO or DYN_ENOMEM with err
 * naming the problem. */
int dyn_model_save(const dyn_model *m, const char *path, dyn_err *err);

/* Reads, validates and prepares the model in `path`. Returns a new model (the caller frees it
 * with dyn_model_free) or NULL with err set: DYN_EIO (cannot read), DYN_EFORMAT (damaged or not a
 * dynd model), DYN_EUNSUP (newer format version, unknown op, unsupported dtype), DYN_EINVAL
 * (attributes or shapes that do not fit), DYN_ENOMEM. Messages start with the path. */
dyn_model *dyn_model_load(const char *path, dyn_err *err);

/* Same as dyn_model_load for a file held in memory (`size` bytes at `data`, borrowed); `name`
 * prefixes messages ("upload"). */
dyn_model *dyn_model_load_bytes(const void *data, size_t size, const char *name, dyn_err *err);

/* Builds the model from an already parsed safetensors file (borrowed; the model copies what it
 * needs, so f may be freed afterwards). Messages start with f->name. */
dyn_model *dyn_model_from_st(const dyn_st_file *f, dyn_err *err);

#endif
