/* fuzz_model_file.c — engine/io/safetensors.c and model_file.c: a .dyn model file (safetensors:
 * header length, JSON header with offsets / dtypes / shapes, the graph metadata, the tensors) as
 * the daemon loads it from model_dir or an upload; a model that loads is then sized and run.
 * Input: the file's bytes. */
#include "fuzz_model.h"
#include "io/model_file.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    dyn_err err = {0};
    fuzz_model_check(dyn_model_load_bytes(data, size, "fuzz.dyn", &err), &err);
    return 0;
}
