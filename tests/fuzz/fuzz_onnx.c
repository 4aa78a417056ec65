/* fuzz_onnx.c — engine/io/onnx*.c: the ONNX importer as POST /v1/conversions runs it: protobuf
 * parsing, the graph walk, constant folding and shape inference, lowering to engine layers,
 * metadata; a model that imports is then sized and run.
 * Input: the .onnx file's bytes. */
#include "fuzz_model.h"
#include "io/onnx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dyn_err err = {0};
    fuzz_model_check(dyn_onnx_load_bytes(data, size, "fuzz.onnx", &err), &err);
    return 0;
}
