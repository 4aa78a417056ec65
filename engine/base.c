#include "base.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

int dyn_err_set(dyn_err *err, int code, const char *fmt, ...) {
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
        err->code = code;
    }
    return code;
}

int dyn_err_prefix(dyn_err *err, const char *fmt, ...) {
    if (!err) return DYN_EINVAL;
    char pre[256], old[sizeof err->msg];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(pre, sizeof pre, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    /* Built by hand: a long message is meant to be cut, not warned about. */
    size_t lp = strnlen(pre, sizeof pre), lo = strnlen(old, sizeof old - 1), cap = sizeof err->msg - 1;
    size_t at = 0;
    memcpy(err->msg, pre, DYN_MIN(lp, cap));
    at = DYN_MIN(lp, cap);
    if (at + 2 <= cap) {
        memcpy(err->msg + at, ": ", 2);
        at += 2;
    }
    memcpy(err->msg + at, old, DYN_MIN(lo, cap - at));
    at += DYN_MIN(lo, cap - at);
    err->msg[at] = '\0';
    return err->code ? err->code : DYN_EINVAL;
}

void *dyn_alloc(size_t bytes) {
    if (bytes == 0) bytes = DYN_ALIGN;
    if (bytes > SIZE_MAX - DYN_ALIGN) return NULL;
    size_t rounded = (bytes + DYN_ALIGN - 1) / DYN_ALIGN * DYN_ALIGN;
    return aligned_alloc(DYN_ALIGN, rounded);
}

void *dyn_alloc_zero(size_t bytes) {
    void *p = dyn_alloc(bytes);
    if (p) memset(p, 0, bytes ? bytes : DYN_ALIGN);
    return p;
}

void dyn_free(void *p) { free(p); }

static int g_threads = 0;

void dyn_threads_set(int n) {
    g_threads = n;
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#endif
    openblas_set_num_threads(n > 0 ? n : openblas_get_num_procs());
}

void dyn_threads_policy_init(char **argv) {
#ifdef _OPENMP
    if (getenv("OMP_WAIT_POLICY") || !argv || !argv[0]) return;
    if (setenv("OMP_WAIT_POLICY", "PASSIVE", 1) != 0) return;
    execv("/proc/self/exe", argv);
    /* no /proc (or no exec): libgomp keeps its default; the variable set stays harmless */
#else
    (void)argv;
#endif
}

int dyn_threads_get(void) {
#ifdef _OPENMP
    return g_threads > 0 ? g_threads : omp_get_max_threads();
#else
    return 1;
#endif
}

double dyn_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

void dyn_rng_seed(dyn_rng *r, uint64_t seed) {
    r->s[0] = splitmix64(&seed);
    r->s[1] = splitmix64(&seed);
}

uint64_t dyn_rng_u64(dyn_rng *r) {
    /* xoroshiro128+ */
    uint64_t s0 = r->s[0], s1 = r->s[1];
    uint64_t res = s0 + s1;
    s1 ^= s0;
    r->s[0] = ((s0 << 24) | (s0 >> 40)) ^ s1 ^ (s1 << 16);
    r->s[1] = (s1 << 37) | (s1 >> 27);
    return res;
}

float dyn_rng_uniform(dyn_rng *r) { return (float)(dyn_rng_u64(r) >> 40) * (1.0f / 16777216.0f); }

float dyn_rng_normal(dyn_rng *r) {
    float u1 = dyn_rng_uniform(r), u2 = dyn_rng_uniform(r);
    if (u1 < 1e-12f) u1 = 1e-12f;
    return sqrtf(-2.0f * logf(u1)) * cosf(6.28318530718f * u2);
}

uint32_t dyn_rng_below(dyn_rng *r, uint32_t n) {
    return n ? (uint32_t)((dyn_rng_u64(r) >> 32) % n) : 0;
}
