/* base.h — error reporting, aligned allocation and assertions shared by the whole engine.
 *
 * Error convention (every engine function that can fail on *input*):
 *   returns 0 on success, a negative DYN_E* code on failure, and when `err` is not NULL
 *   fills err->msg with a sentence a person can act on ("model.safetensors: tensor 'fc1.u'
 *   ends at byte 9120 but the file has 8000 bytes").
 * Broken internal contracts (a caller passing a tensor of the wrong shape from our own code)
 * abort with DYN_ASSERT: they are bugs, not bad input.
 */
#ifndef DYN_BASE_H
#define DYN_BASE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define DYN_VERSION "0.1.0"

enum {
    DYN_OK = 0,
    DYN_EINVAL = -1,   /* bad argument or malformed input */
    DYN_ENOMEM = -2,   /* allocation failed or a size is absurd */
    DYN_EIO = -3,      /* read/write/open failed */
    DYN_EFORMAT = -4,  /* a file is damaged or not what it claims */
    DYN_EUNSUP = -5,   /* valid but not supported (op, dtype, attribute) */
    DYN_ECANCEL = -6,  /* a cancel flag was raised */
    DYN_EFIDELITY = -7, /* a conversion does not agree with its original as well as required */
};

typedef struct dyn_err {
    int code;
    char msg[512];
} dyn_err;

/* Formats a message into err (when not NULL) and returns `code`, so callers can write
 * `return dyn_err_set(err, DYN_EINVAL, "bad %s", what);`. */
int dyn_err_set(dyn_err *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prefixes an existing message with context ("loading x.safetensors: ..."). Returns err->code
 * (or DYN_EINVAL when err is NULL). */
int dyn_err_prefix(dyn_err *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define DYN_ALIGN 64

/* 64-byte aligned allocation. Returns NULL on failure or when bytes overflows.
 * Free with dyn_free. dyn_alloc_zero zeroes the memory. */
void *dyn_alloc(size_t bytes);
void *dyn_alloc_zero(size_t bytes);
void dyn_free(void *p);

/* Aborts with file/line and the expression: for broken internal contracts only. */
#define DYN_ASSERT(x)                                                                      \
    do {                                                                                   \
        if (!(x)) {                                                                        \
            fprintf(stderr, "%s:%d: DYN_ASSERT(%s) failed\n", __FILE__, __LINE__, #x);    \
            abort();                                                                       \
        }                                                                                  \
    } while (0)

/* Checked multiplication for sizes: *out = a * b and 1 when the product fits in int64_t, else
 * 0 with *out untouched. Every product of dimensions formed from input (shapes in files, ONNX
 * graphs, attributes) goes through this or dyn_numel_checked (tensor.h) before it is used:
 * signed overflow is undefined behaviour, not a big number. */
static inline int dyn_mul_ok(int64_t a, int64_t b, int64_t *out) {
    int64_t r;
    if (__builtin_mul_overflow(a, b, &r)) return 0;
    *out = r;
    return 1;
}

#define DYN_MIN(a, b) ((a) < (b) ? (a) : (b))
#define DYN_MAX(a, b) ((a) > (b) ? (a) : (b))
#define DYN_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Number of worker threads the engine's own kernels use (OpenMP); 0 = all cores.
 * Also sets OpenBLAS's thread count so the two do not oversubscribe. */
void dyn_threads_set(int n);
int dyn_threads_get(void);

/* Makes the engine's OpenMP threads (and OpenBLAS's, which share them) sleep while they wait
 * instead of spinning. libgomp spins ~300,000 iterations at every barrier by default; when
 * another process takes a core, a team of 2 then spends its time spinning for a descheduled
 * member (ResNet-18, batch 1, 2 threads, on a busy 2-core machine: 1,006-1,412 ms per image
 * spinning, 76 ms sleeping, 187-250 ms on one thread). libgomp reads OMP_WAIT_POLICY once, as
 * it loads, so when the variable is unset this sets it to PASSIVE and re-executes the program
 * (execv of /proc/self/exe: same pid, same argv, same environment otherwise). A value set by
 * the user is kept (OMP_WAIT_POLICY=ACTIVE restores spinning). Call first in main(), before
 * any thread exists; argv is main's. Returns when there was nothing to do or the exec failed
 * (then the program runs with libgomp's default). */
void dyn_threads_policy_init(char **argv);

/* Monotonic wall clock in seconds. */
double dyn_now(void);

/* Deterministic RNG (xoshiro128+ style, splitmix-seeded). State is owned by the caller. */
typedef struct dyn_rng {
    uint64_t s[2];
} dyn_rng;
void dyn_rng_seed(dyn_rng *r, uint64_t seed);
uint64_t dyn_rng_u64(dyn_rng *r);
float dyn_rng_uniform(dyn_rng *r);               /* [0, 1) */
float dyn_rng_normal(dyn_rng *r);                /* N(0, 1) */
uint32_t dyn_rng_below(dyn_rng *r, uint32_t n);  /* [0, n) */

#endif
