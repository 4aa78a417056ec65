/* isa.h — the vector extensions the engine's own kernels use, chosen at run time.
 *
 * The library may be built for a baseline ISA (`make ARCH=x86-64`: the Docker images, which
 * must run on any x86-64 host) or for the build host (`ARCH=native`, the default). Either way
 * the kernels that gain from wider vectors (cpu/conv_direct.c, ops/pool.c's 2x2 max pool,
 * dyn/native.c's l1 kernels) are also compiled for AVX2 + FMA and for AVX-512 with function
 * attributes (DYN_TARGET_*), and each call picks the best version the CPU runs: dyn_isa().
 * OpenBLAS picks its own kernels the same way.
 *
 * The level is detected once (cpuid, through __builtin_cpu_supports) and may be capped by the
 * environment variable DYN_ISA (base | avx2 | avx512; read at the first call) or by
 * dyn_isa_set_cap (tests compare every level the machine has against the baseline code).
 * On other architectures every kernel runs its portable code (DYN_ISA_BASE).
 */
#ifndef DYN_ISA_H
#define DYN_ISA_H

typedef enum { DYN_ISA_BASE = 0, DYN_ISA_AVX2 = 1, DYN_ISA_AVX512 = 2, DYN_ISA_COUNT } dyn_isa_level;

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DYN_ISA_X86 1
/* AVX2 + FMA (Haswell, Zen 1 and later); AVX-512 Foundation (Skylake-SP, Zen 4 and later). */
#define DYN_TARGET_AVX2 __attribute__((target("avx2,fma")))
#define DYN_TARGET_AVX512 __attribute__((target("avx512f,avx2,fma")))
#else
#define DYN_ISA_X86 0
#define DYN_TARGET_AVX2
#define DYN_TARGET_AVX512
#endif

/* The level kernels use now: min(what the CPU supports, the cap). Thread-safe, cheap (an
 * atomic load after the first call). */
dyn_isa_level dyn_isa(void);

/* What the CPU supports, ignoring the cap. */
dyn_isa_level dyn_isa_detected(void);

/* Caps the level (DYN_ISA_COUNT: no cap) and returns the previous cap. Meant for tests and
 * benchmarks: set it while no kernel runs. */
dyn_isa_level dyn_isa_set_cap(dyn_isa_level cap);

/* "base", "avx2", "avx512" (static strings); NULL for an invalid level. */
const char *dyn_isa_name(dyn_isa_level level);

/* Parses a level name (the DYN_ISA values); returns 0 and sets *level, or -1. */
int dyn_isa_parse(const char *s, dyn_isa_level *level);

#endif
