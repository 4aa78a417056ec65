/* fuzz_idx.c — engine/io/idx.c: an IDX image file and its label file (raw or gzip), as data
 * sets are loaded for fine-tuning and evaluation.
 * Input: a 2-byte little-endian length L, L bytes of the label file, then the image file. */
#include "fuzz.h"
#include "io/idx.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 2) return 0;
    size_t ln = (size_t)data[0] | (size_t)data[1] << 8;
    if (ln > size - 2) ln = size - 2;
    char lp[64], ip[64];
    int lfd = fuzz_memfile(data + 2, ln, lp, sizeof lp);
    int ifd = fuzz_memfile(data + 2 + ln, size - 2 - ln, ip, sizeof ip);
    if (lfd >= 0 && ifd >= 0) {
        dyn_dataset d;
        dyn_err err = {0};
        if (dyn_idx_load(ip, lp, &d, &err) == 0) {
            DYN_ASSERT(d.n >= 1 && d.c == 1 && d.h >= 1 && d.w >= 1 && d.pixels && d.labels);
            /* every pixel and label is readable (ASan checks the sizes) */
            unsigned sum = 0;
            size_t np = (size_t)d.n * (size_t)d.h * (size_t)d.w;
            for (size_t i = 0; i < np; i++) sum += d.pixels[i];
            for (int i = 0; i < d.n; i++) sum += d.labels[i];
            DYN_ASSERT(d.nclasses >= 1 && d.nclasses <= 256);
            (void)sum;
            fuzz_note("idx: %d samples of %dx%d, %d classes", d.n, d.h, d.w, d.nclasses);
            dyn_dataset_free(&d);
        } else {
            DYN_ASSERT(d.pixels == NULL && d.labels == NULL && err.msg[0]);
            fuzz_note("idx: %s", err.msg);
        }
    }
    if (lfd >= 0) close(lfd);
    if (ifd >= 0) close(ifd);
    return 0;
}
