/* safetensors.h — reading and writing safetensors files.
 *
 * Layout: an 8-byte little-endian u64 N, then N bytes of JSON header
 *   {"<name>": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
 *    "__metadata__": {"key": "string value", ...}}
 * (optionally padded with trailing spaces), then the data buffer; offsets are relative to the
 * start of that buffer and data is little-endian.
 *
 * The reader treats every file as hostile: it checks sizes before reading, parses the header
 * with duplicate keys rejected, and validates every entry (dtype, shape, offsets, overlaps,
 * gaps) before handing out a single pointer, so no later access can go out of bounds. Like the
 * reference implementation it requires the tensors to cover the data buffer exactly (no holes,
 * no trailing bytes), which rules out polyglot files. It reads F32, and converts F16 / BF16 to
 * float on request; I8 and I16 (integer codes: what they stand for is the file format's
 * business, e.g. model_file.h's "quant") are read as their integer values; any other dtype is
 * rejected with a message naming the tensor.
 *
 * The writer writes F32, I8 and I16, atomically (temporary file, fsync, rename, fsync of the
 * directory). The header is padded with spaces so the data buffer starts at an 8-byte aligned
 * file offset; tensors follow one another without gaps (a gap would make the file invalid for
 * other readers), laid out by decreasing element size (every F32 tensor first, then I16, then
 * I8, each group in the caller's order), so every tensor is aligned to its element size.
 */
#ifndef DYN_IO_SAFETENSORS_H
#define DYN_IO_SAFETENSORS_H

#include <jansson.h>

#include "../base.h"

#define DYN_ST_MAX_DIMS 8
/* Largest header accepted (the reference implementation's limit). */
#define DYN_ST_MAX_HEADER ((uint64_t)100 << 20)

typedef enum dyn_st_dtype {
    DYN_ST_F32,
    DYN_ST_F16,
    DYN_ST_BF16,
    DYN_ST_I8,
    DYN_ST_I16,
    DYN_ST_DTYPE_COUNT
} dyn_st_dtype;

typedef struct dyn_st_tensor {
    const char *name; /* owned by the file */
    dyn_st_dtype dtype;
    int ndim;         /* 0 (a scalar, one element) .. DYN_ST_MAX_DIMS */
    int64_t shape[DYN_ST_MAX_DIMS];
    int64_t numel;
    uint64_t begin, end;  /* byte range within the data buffer (validated) */
    const uint8_t *bytes; /* end - begin bytes, little-endian, owned by the file; may be
                           * unaligned in foreign files: read it with dyn_st_tensor_read_f32 */
} dyn_st_tensor;

typedef struct dyn_st_file {
    char *name;               /* the path (or the name given to dyn_st_parse), for messages */
    int ntensors;
    dyn_st_tensor *tensors;   /* in data-offset order */
    json_t *metadata;         /* object whose values are all strings; never NULL (empty when
                               * the file has none); owned by the file */
    /* internals */
    uint8_t *buf;
    size_t size;
    int *by_name;             /* indices into tensors, sorted by name */
} dyn_st_file;

/* Reads and validates the safetensors file at `path`. On success returns 0 and *out is a new
 * file (free with dyn_st_free). On failure returns DYN_EIO (cannot open/read), DYN_EFORMAT
 * (damaged), DYN_EUNSUP (a dtype other than F32/F16/BF16/I8/I16) or DYN_ENOMEM; *out is NULL and
 * err->msg names the file and, where one is involved, the tensor and what is wrong. */
int dyn_st_read(const char *path, dyn_st_file **out, dyn_err *err);

/* Same as dyn_st_read for `size` bytes in memory (copied; the caller keeps `data`). `name` is
 * used in messages (e.g. "upload"). */
int dyn_st_parse(const void *data, size_t size, const char *name, dyn_st_file **out,
                 dyn_err *err);

/* Frees the file and everything it owns (names, bytes, metadata). NULL is fine. */
void dyn_st_free(dyn_st_file *f);

/* The tensor called `name`, or NULL. Borrowed from f. O(log n). */
const dyn_st_tensor *dyn_st_find(const dyn_st_file *f, const char *name);

/* The string value of metadata key `key`, or NULL when absent. Borrowed from f. */
const char *dyn_st_meta(const dyn_st_file *f, const char *key);

/* Converts tensor t (of file f) to host-order floats at dst, which holds n = t->numel floats
 * (n is checked: DYN_EINVAL when it differs). F16 and BF16 are widened exactly; I8 and I16
 * elements become their integer values (exact), with no scale applied. */
int dyn_st_tensor_read_f32(const dyn_st_file *f, const dyn_st_tensor *t, float *dst, int64_t n,
                           dyn_err *err);

/* "F32", "F16", "BF16", "I8", "I16". */
const char *dyn_st_dtype_name(dyn_st_dtype d);

/* One tensor to write: all borrowed for the duration of dyn_st_write. */
typedef struct dyn_st_entry {
    const char *name;     /* unique, non-empty, not "__metadata__" */
    int ndim;             /* 0..DYN_ST_MAX_DIMS */
    const int64_t *shape; /* ndim dimensions >= 0 */
    const float *data;    /* numel floats in host order (may be NULL when numel is 0); F32 only */
    dyn_st_dtype dtype;   /* DYN_ST_F32 (0, a zeroed entry's), DYN_ST_I8 or DYN_ST_I16 */
    const void *ints;     /* I8 / I16: numel int8_t / int16_t in host order (may be NULL when
                           * numel is 0); `data` is then not read */
} dyn_st_entry;

/* Writes n tensors (in this order in the header; in the data buffer F32 first, then I16, then
 * I8) and `metadata` (a JSON object whose values are all strings, borrowed; NULL for none) to
 * `path`, atomically (io/file.h): the data goes to
 * "<path>.tmp.<pid>.<seq>", is fsync'ed, renamed over `path`, and the directory is fsync'ed.
 * On failure the temporary file is removed, `path` is untouched and a DYN_E* code is returned
 * with err set (DYN_EINVAL for a bad entry, F16 / BF16 included: not written). */
int dyn_st_write(const char *path, const dyn_st_entry *tensors, int n, const json_t *metadata,
                 dyn_err *err);

#endif
