/* idx.h — IDX data sets (the MNIST / Fashion-MNIST format) and in-memory image data sets.
 *
 * IDX: a big-endian u32 magic 0x000008DD (0x08 = unsigned bytes, DD = number of dimensions),
 * DD big-endian u32 dimensions, then the bytes. Images are 0x00000803 [N, H, W]; labels are
 * 0x00000801 [N]. Files are read through zlib, so raw and gzip-compressed (.gz) files both work.
 *
 * Every size is validated before it is trusted: dimensions 1..65536 (N may be up to 2^31 - 1 but
 * the pixel total is at most 2^31 bytes), the payload must be exactly the product of the
 * dimensions (a short file is reported with the expected and actual sizes, trailing bytes are
 * rejected), and memory grows with the bytes actually read, so a lying header cannot make the
 * loader allocate gigabytes.
 */
#ifndef DYN_IO_IDX_H
#define DYN_IO_IDX_H

#include "../base.h"

#define DYN_IDX_MAX_DIM 65536
#define DYN_IDX_MAX_BYTES ((uint64_t)1 << 31)

/* n samples of c x h x w bytes (c = 1 for IDX), labels in 0..nclasses-1. */
typedef struct dyn_dataset {
    int n, c, h, w;
    uint8_t *pixels; /* n * c * h * w bytes, sample-major; owned (free with dyn_dataset_free) */
    uint8_t *labels; /* n bytes; owned */
    int nclasses;    /* max label + 1 for a loaded set; inherited by subsets and splits */
} dyn_dataset;

/* Loads an image file and its label file. On success fills *out (the caller frees it with
 * dyn_dataset_free) and returns 0; on failure *out is zeroed and a DYN_E* code is returned with
 * err naming the file and the problem: DYN_EIO (cannot open / read / decompress), DYN_EFORMAT
 * (wrong magic, absurd dimensions, truncated, trailing bytes, image and label counts differ),
 * DYN_ENOMEM. */
int dyn_idx_load(const char *images_path, const char *labels_path, dyn_dataset *out,
                 dyn_err *err);

/* Frees pixels and labels and zeroes *d. Safe on a zeroed or already freed data set. */
void dyn_dataset_free(dyn_dataset *d);

/* Copies samples into a new data set *out (free with dyn_dataset_free): idx[0..k) when idx is
 * not NULL (repeats allowed), else the first k. Returns DYN_EINVAL for k < 0, k > n (idx NULL) or
 * an index outside 0..n-1, DYN_ENOMEM; on failure *out is zeroed. */
int dyn_dataset_subset(const dyn_dataset *src, const int *idx, int k, dyn_dataset *out,
                       dyn_err *err);

/* Fills x with b samples idx[0..b) as floats [b][c][h][w]: (pixel / 255 - mean) / std, and
 * y[0..b) with their labels when y is not NULL. Returns DYN_EINVAL for std <= 0 (or not finite)
 * or an index outside 0..n-1 (x is then partly written). */
int dyn_dataset_batch(const dyn_dataset *d, const int *idx, int b, float mean, float std,
                      float *x, int *y, dyn_err *err);

/* Randomly splits src into *train (n - nval samples) and *val (nval samples), deterministic for
 * a given seed; both keep src's sample order and nclasses. Both are new (free each with
 * dyn_dataset_free). Returns DYN_EINVAL when nval is outside 0..n, DYN_ENOMEM; on failure both
 * are zeroed. */
int dyn_dataset_split(const dyn_dataset *src, int nval, uint64_t seed, dyn_dataset *train,
                      dyn_dataset *val, dyn_err *err);

#endif
