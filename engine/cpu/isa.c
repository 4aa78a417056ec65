/* isa.c — run-time choice of the kernels' vector extensions (isa.h). */
#include "isa.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const NAMES[DYN_ISA_COUNT] = {"base", "avx2", "avx512"};

/* -1 until detected; then the detected level and the cap. */
static atomic_int g_detected = -1, g_cap = -1, g_level = -1;

const char *dyn_isa_name(dyn_isa_level level) {
    return (int)level >= 0 && level < DYN_ISA_COUNT ? NAMES[level] : NULL;
}

int dyn_isa_parse(const char *s, dyn_isa_level *level) {
    for (int i = 0; s && i < DYN_ISA_COUNT; i++)
        if (!strcmp(s, NAMES[i])) {
            *level = (dyn_isa_level)i;
            return 0;
        }
    return -1;
}

dyn_isa_level dyn_isa_detected(void) {
    int d = atomic_load_explicit(&g_detected, memory_order_acquire);
    if (d >= 0) return (dyn_isa_level)d;
    d = DYN_ISA_BASE;
#if DYN_ISA_X86
    /* libgcc / compiler-rt check the OS saves the vector state too (XGETBV). */
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
        d = DYN_ISA_AVX2;
        if (__builtin_cpu_supports("avx512f")) d = DYN_ISA_AVX512;
    }
#endif
    atomic_store_explicit(&g_detected, d, memory_order_release);
    return (dyn_isa_level)d;
}

/* The cap from $DYN_ISA (read once; an unknown value is reported and ignored). */
static int env_cap(void) {
    int c = atomic_load_explicit(&g_cap, memory_order_acquire);
    if (c >= 0) return c;
    c = DYN_ISA_COUNT;
    const char *s = getenv("DYN_ISA");
    dyn_isa_level lv;
    if (s && *s) {
        if (!dyn_isa_parse(s, &lv)) c = (int)lv;
        else fprintf(stderr, "dyn: DYN_ISA=%s is not base, avx2 or avx512: ignored\n", s);
    }
    int expected = -1; /* a concurrent dyn_isa_set_cap wins */
    atomic_compare_exchange_strong(&g_cap, &expected, c);
    return atomic_load(&g_cap);
}

dyn_isa_level dyn_isa(void) {
    int lv = atomic_load_explicit(&g_level, memory_order_relaxed);
    if (lv >= 0) return (dyn_isa_level)lv;
    const int d = (int)dyn_isa_detected(), c = env_cap();
    lv = d < c ? d : c;
    atomic_store_explicit(&g_level, lv, memory_order_relaxed);
    return (dyn_isa_level)lv;
}

dyn_isa_level dyn_isa_set_cap(dyn_isa_level cap) {
    const int prev = env_cap();
    const int c = (int)cap < 0 || cap > DYN_ISA_COUNT ? DYN_ISA_COUNT : (int)cap;
    atomic_store(&g_cap, c);
    const int d = (int)dyn_isa_detected();
    atomic_store(&g_level, d < c ? d : c);
    return (dyn_isa_level)prev;
}
