/* gpu_util.h — helpers of the GPU test programs (tests/gpu/test_*.c): a context on the device,
 * copies that exit on failure, random fills, and one result line per check.
 *
 * The programs are plain C (no Check: its fork mode would fork a process that has initialized
 * CUDA). Each prints one line per check — "PASS <what>: <measure> <value> (tolerance <tol>)" or
 * "FAIL ..." — and exits 0 when every check passed, 1 otherwise or when no device answers. */
#ifndef DYN_GPU_UTIL_H
#define DYN_GPU_UTIL_H

#include "base.h"
#include "cuda/dyn_cuda.h"

/* A context on device $DYN_CUDA_DEVICE (default 0); prints the device's name. Exits 1 with
 * CUDA's message when there is none. Free with dyn_cuda_ctx_free. */
dyn_cuda_ctx *gt_ctx(const char *prog);

/* Device copy of n floats of h (from the context's pool; exits 1 on failure). */
float *gt_upload(dyn_cuda_ctx *ctx, const float *h, int64_t n);
/* h[0..n) = the device array d (waits for the stream; exits 1 on failure). */
void gt_download(dyn_cuda_ctx *ctx, float *h, const float *d, int64_t n);
/* Exits 1 with the message when rc != 0. */
void gt_ok(int rc, const dyn_err *err, const char *what);

/* n floats uniform in [lo, hi) (malloc'ed; exits on failure; caller frees). */
float *gt_rand(dyn_rng *r, int64_t n, float lo, float hi);

/* Records one check: passes when value <= tol (NaN fails). Prints the line; returns 1 on pass. */
int gt_check(const char *what, const char *measure, double value, double tol);
/* Prints the summary; returns the exit status (0 when every check passed). */
int gt_finish(const char *prog);

/* The command line argv[0..argc) joined by spaces, for the benches' JSON lines (a static
 * buffer, cut at 1023 characters; characters JSON would have to escape become '_'). */
const char *gt_command(int argc, char **argv);

/* ||a - b||_2 / max(||b||_2, 1e-30), accumulated in double. */
double gt_rel_err(const float *a, const float *b, int64_t n);
/* The same for the changes from a common start a0 (a − a0 against b − a0), the denominator at
 * least `floor` (for sums whose terms cancel: the scale of their float rounding). */
double gt_rel_delta(const float *a, const float *b, const float *a0, int64_t n, double floor);

#endif
