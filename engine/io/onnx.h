/* onnx.h — ONNX import: an .onnx file (ModelProto) into a dense dyn_model.
 *
 * Implementation: onnx.c (entry points, graph walk, value table), onnx_layout.c (how values
 * map onto engine tensors), onnx_shape.c (constant folding), onnx_tr.c (transformer
 * operators), onnx_cnn.c (CNN operators); onnx_impl.h holds what they share.
 *
 * Parsing uses protobuf-c code generated at build time from Debian's onnx.proto (libonnx-dev).
 * The graph's nodes are read in file order, which ONNX requires to be topological; a node
 * reading a value no earlier node produced is an error naming both (this also rejects cycles).
 *
 * Supported operators (default domain, CNN subset of issue 3) and what they become:
 *   Conv (2-D; group, strides, symmetric pads, dilations)      -> conv2d
 *   Gemm (transA = 0, transB = 0/1, alpha = beta = 1)          -> linear
 *   MatMul [N, in] x constant [in, out]                        -> linear (bias 0, W transposed)
 *   Relu -> relu; MaxPool -> maxpool2d; AveragePool -> avgpool2d (count_include_pad kept);
 *   GlobalAveragePool -> globalavgpool; BatchNormalization (inference) -> batchnorm;
 *   Flatten (axis 1) and Reshape to [batch, features] (constant shape) -> flatten;
 *   Add of two activations of one shape -> add; Add of an activation and a constant folds
 *     into the bias of the producing linear / conv2d (which must have no other reader);
 *   Add / Sub / Mul / Div of an activation and a scalar or per-channel constant -> scale;
 *   Sub, Mul, Div of two activations of one shape -> sub, mul, div;
 *   Sigmoid -> sigmoid; Clip (constant bounds; attributes before opset 11) -> clip;
 *   Concat (axis 1) -> concat (chains of up to 4 inputs each);
 *   Identity, Dropout (inference) -> nothing (the output is the input);
 *   Constant -> a constant (for Reshape shapes, Add biases);
 *   Softmax as the last node -> dropped; model->info gets "output": "softmax" (classification
 *     applies softmax to the logits itself, so the model outputs logits).
 * Transformers (ViT exports of torch.onnx, opsets 11-17):
 *   Shape, Gather / Slice / Concat / Unsqueeze / Squeeze / Cast / Add / Sub / Mul / Div / Equal /
 *     Where / ConstantOfShape on shapes -> folded at import with the batch symbolic (sizes k*N
 *     are tracked; a size not linear in N is rejected), Expand of a constant along the batch;
 *   Transpose, Reshape (to any rank, shapes constant or computed), Unsqueeze, Squeeze -> no
 *     layer: the importer tracks how each value's dims map onto the engine tensor (which keeps
 *     the batch first, at most 4 dims) and emits one `permute` layer only where an operator
 *     needs another order; Slice (steps > 0), Gather (one constant index), Split -> permute
 *     with a slice;
 *   MatMul activation [N, ..., D] x constant [D, E] (and Gemm) -> linear over the last dim;
 *     MatMul of two activations [N, (H,) T, K] x [.., K, S] -> matmul (transposes folded in);
 *   Softmax on any axis but the batch -> softmax; ReduceMean over one axis -> reduce_mean;
 *   LayerNormalization (opset 17, last axis) and the ReduceMean/Sub/Pow 2/ReduceMean/Add eps/
 *     Sqrt/Div[/Mul w/Add b] chain older opsets emit -> layernorm;
 *   Erf, Sqrt, Pow (constant scalar exponent) -> erf, sqrt, pow (GELU stays x*0.5*(1+erf));
 *   Add / Sub / Mul / Div of an activation and a constant of any shape that broadcasts without
 *     growing it or varying along the batch -> affine (or bias folding / scale as above); of two
 *     activations with broadcasting (equal rank, sizes equal or 1) -> add / sub / mul / div;
 *   Concat of a batch-expanded constant and an activation (the class token) -> cat_param.
 * Anything else fails with "node '<name>' (<op>): <what is missing>".
 * Initializers: FLOAT (raw_data little-endian, or float_data) and INT64 (shapes only); other
 * data types, external data and non-finite values are rejected.
 * The single graph input (dtype float, rank 2..4, batch dimension symbolic or 1) gives
 * model->input (the per-sample shape). model->info records {"source": "onnx", "producer",
 * "opset", "output"}. Layer names are the ONNX node names when they fit (63 characters,
 * unique), else "<op>_<index>".
 * ModelProto metadata_props read when present (other keys are ignored):
 *   "dynd.preprocess"  JSON text of the model's input pipeline (io/image.h, e.g.
 *                      {"color": "gray", "steps": [{"pad": 2}], "mean": [0], "std": [1]}),
 *                      checked with dyn_preprocess_check and against the graph input's shape
 *                      -> model->preprocess;
 *   "dynd.labels"      JSON array of class names, one string per output -> model->labels.
 *   A value that is not such JSON is an import error naming the key (DYN_EFORMAT, or the
 *   parser's DYN_EINVAL / DYN_EUNSUP). From PyTorch: after torch.onnx.export, m =
 *   onnx.load(p); onnx.helper.set_model_props(m, {"dynd.preprocess": json.dumps(pp)});
 *   onnx.save(m, p).
 */
#ifndef DYN_IO_ONNX_H
#define DYN_IO_ONNX_H

#include "../model.h"

/* Largest .onnx file dyn_onnx_load reads (protobuf messages are limited to 2 GiB). */
#define DYN_ONNX_MAX_BYTES ((size_t)2 << 30)

/* Reads and converts the ONNX model in `path`. Returns a new, prepared model (free with
 * dyn_model_free) or NULL with err set: DYN_EIO (cannot read), DYN_EFORMAT (not a valid ONNX
 * model: protobuf damaged, graph not topological, missing fields), DYN_EUNSUP (an operator,
 * attribute or data type the importer does not handle), DYN_EINVAL (shapes that do not fit),
 * DYN_ENOMEM. Messages start with the path. */
dyn_model *dyn_onnx_load(const char *path, dyn_err *err);

/* Same for `size` bytes at `data` (borrowed); `name` prefixes messages ("upload"). */
dyn_model *dyn_onnx_load_bytes(const void *data, size_t size, const char *name, dyn_err *err);

#endif
