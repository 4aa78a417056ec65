/* par.h — internal: OpenMP loops that open no region when they would run serially.
 *
 * Entering an OpenMP parallel region costs about 2 µs even when its `if` clause is false or the
 * team has one thread (libgomp's team barrier makes a futex system call, and system calls are
 * slow in a VM: measured 2.0 µs per empty region on the 2-vCPU development machine). A batch-1
 * forward of LeNet-5 opens ~20 of them, about a third of its time, so the kernels' small loops
 * go through these macros: with one thread, or below the work threshold, the loop runs as plain
 * code and libgomp is never called.
 */
#ifndef DYN_PAR_H
#define DYN_PAR_H

#include "../base.h"

/* Whether a loop should open a parallel region: more than one thread and enough work. */
static inline int dyn__par(int cond) { return cond && dyn_threads_get() > 1; }

/* DYN_PAR_FOR(cond, for (...) body): `omp parallel for schedule(static)` when dyn__par(cond),
 * else the plain loop. DYN_PAR_FOR2 the same with collapse(2). */
#define DYN_PAR_FOR(cond, ...)                                         \
    do {                                                               \
        if (dyn__par(cond)) {                                          \
            _Pragma("omp parallel for schedule(static)") __VA_ARGS__   \
        } else {                                                       \
            __VA_ARGS__                                                \
        }                                                              \
    } while (0)
#define DYN_PAR_FOR2(cond, ...)                                                   \
    do {                                                                          \
        if (dyn__par(cond)) {                                                     \
            _Pragma("omp parallel for collapse(2) schedule(static)") __VA_ARGS__ \
        } else {                                                                  \
            __VA_ARGS__                                                           \
        }                                                                         \
    } while (0)

#endif
