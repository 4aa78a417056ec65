/* model_file.h — dynd model files: a dyn_model stored as safetensors.
 *
 * Tensors: every layer parameter, buffers included (BatchNorm running statistics), as
 * "<layer name>.<param name>", F32, in graph order — except DyN states stored as codes (below).
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
 *   "quant":          {"<tensor name>": {"delta": 0.001}, ...} — absent when no tensor is coded
 * Unknown metadata keys are ignored on load, so later writers may add informative keys
 * without a version bump; anything a reader must understand bumps "format_version" (unless, as
 * with "quant", old readers refuse such files anyway).
 *
 * State codes. A DyN layer's states (dyn_linear "u", "v"; dyn_conv2d "a", "b") that sit on the
 * grid the conversion rounded them to (info.convert.quant = δ, convert.h dyn_quantize_layer)
 * are stored as integer codes k: dtype I8 when every |k| <= 127, else I16 when every
 * |k| <= 32767, else the tensor stays F32. The value of code k is (float)((double)k * δ) — a
 * double multiply rounded once to float — and the writer codes a tensor only when that gives
 * back every stored float bit for bit (so -0.0, NaN, or values off the grid keep it F32), so
 * the round trip stays bit-exact. "quant" names every coded tensor with its δ, a JSON number
 * with 1e-30 <= δ <= 1e30 (so k·δ is a finite float); the entry holds "delta" alone. On load
 * an I8 / I16 tensor is accepted only where "quant" names it, "quant" may name only I8 / I16
 * tensors of the file, and anything else (a missing or extra entry, δ 0, negative, not a
 * number, out of range, an unknown key) is refused with a message naming the tensor.
 * "format_version" stays 1: a reader from before codes refuses such a file in the safetensors
 * layer ("tensor 'fc1.u' has dtype I16; only F32, F16 and BF16 are supported") instead of
 * misreading it; files without coded states are unchanged. Other safetensors readers see the
 * codes as int8 / int16 arrays: multiply by δ.
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
 * new one is complete. m is only read. DyN states on the grid of m->info.convert.quant are
 * stored as codes (above). Returns 0, or DYN_EINVAL (a parameter holds NaN/Inf, two
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

/* Bounds of a "quant" delta (both included). */
#define DYN_MODEL_QUANT_DELTA_MIN 1e-30
#define DYN_MODEL_QUANT_DELTA_MAX 1e30

/* What dyn_model_save would store for m (the same choice of codes, without writing). */
typedef struct dyn_model_storage {
    int64_t data_bytes;   /* the tensors' bytes: the file's data buffer */
    int64_t floats;       /* parameter values, coded or not */
    int64_t coded_floats; /* those stored as I8 / I16 codes */
} dyn_model_storage;

/* Fills *s for m (only read). Never fails. */
void dyn_model_storage_get(const dyn_model *m, dyn_model_storage *s);

#endif
