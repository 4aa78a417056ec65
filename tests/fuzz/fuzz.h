/* fuzz.h — helpers shared by the fuzz harnesses (tests/fuzz/fuzz_*.c; see README.md).
 *
 * Each harness defines LLVMFuzzerTestOneInput(data, size) and returns 0 for every input: a
 * harness never judges an input, the sanitizers (ASan + UBSan, aborting) and libFuzzer's leak
 * check do. Built with clang -fsanitize=fuzzer (`make fuzz`) or with driver.c's main for a plain
 * build (`make fuzz-regress`, AFL++).
 */
#ifndef DYN_FUZZ_H
#define DYN_FUZZ_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Writes data[0..size) to a new anonymous in-memory file and puts a path that opens it
 * ("/proc/self/fd/N") in path. Returns the descriptor (the caller closes it), or -1 (the input
 * is then skipped: memfd_create failing is the machine's problem, not the input's). */
static inline int fuzz_memfile(const uint8_t *data, size_t size, char *path, size_t n) {
    int fd = memfd_create("fuzz", 0);
    if (fd < 0) return -1;
    size_t off = 0;
    while (off < size) {
        ssize_t w = write(fd, data + off, size - off);
        if (w <= 0) {
            close(fd);
            return -1;
        }
        off += (size_t)w;
    }
    snprintf(path, n, "/proc/self/fd/%d", fd);
    return fd;
}

/* A NUL-terminated copy of data[0..size) (malloc'd; the caller frees it), as request bodies and
 * file contents are in the daemon. NULL on ENOMEM. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size) {
    char *s = malloc(size + 1);
    if (!s) return NULL;
    if (size) memcpy(s, data, size);
    s[size] = 0;
    return s;
}

/* With FUZZ_VERBOSE set in the environment: one line per input saying what became of it (to
 * check that seeds reach the code they are meant for). */
static inline int fuzz_verbose(void) {
    static int verbose = -1;
    if (verbose < 0) verbose = getenv("FUZZ_VERBOSE") != NULL;
    return verbose;
}

static inline void fuzz_note(const char *fmt, ...) {
    if (!fuzz_verbose()) return;
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
}

#endif
