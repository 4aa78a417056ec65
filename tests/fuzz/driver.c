/* driver.c — main() for the fuzz harnesses outside libFuzzer: replays files through
 * LLVMFuzzerTestOneInput. `make fuzz-regress` builds each harness with it (the sanitizer build,
 * gcc or clang) and replays the committed corpora; AFL++ runs the same binary
 * (`afl-fuzz -i corpus -o out -- ./fuzz_x @@`), or reads one input from stdin without arguments.
 *
 * Usage: fuzz_x [FILE|DIR]...   (a directory: every regular file in it, in name order)
 * Exit status 0 when every input ran (a sanitizer report aborts the process instead), 2 when a
 * path cannot be read.
 */
#include <dirent.h>
#include <stdlib.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Reads a whole stream into a malloc'd buffer (*n bytes). NULL on a read error / ENOMEM. */
static uint8_t *slurp(FILE *f, size_t *n) {
    size_t cap = 4096, len = 0;
    uint8_t *b = malloc(cap);
    while (b) {
        size_t r = fread(b + len, 1, cap - len, f);
        len += r;
        if (len < cap) break;
        uint8_t *nb = realloc(b, cap *= 2);
        if (!nb) free(b);
        b = nb;
    }
    if (b && ferror(f)) {
        free(b);
        return NULL;
    }
    *n = len;
    return b;
}

static int run_file(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return 2;
    }
    size_t n = 0;
    uint8_t *b = slurp(f, &n);
    fclose(f);
    if (!b) {
        fprintf(stderr, "%s: cannot read\n", path);
        return 2;
    }
    LLVMFuzzerTestOneInput(b, n);
    free(b);
    return 0;
}

static int by_name(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int run_dir(const char *dir, int *count) {
    DIR *d = opendir(dir);
    if (!d) {
        perror(dir);
        return 2;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.') continue;
        if (n == cap) {
            char **nn = realloc(names, (cap = cap ? 2 * cap : 64) * sizeof *names);
            if (!nn) break;
            names = nn;
        }
        names[n] = malloc(strlen(dir) + strlen(e->d_name) + 2);
        if (!names[n]) break;
        sprintf(names[n], "%s/%s", dir, e->d_name);
        n++;
    }
    closedir(d);
    if (n) qsort(names, n, sizeof *names, by_name);
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        struct stat st;
        if (stat(names[i], &st) == 0 && S_ISREG(st.st_mode)) {
            rc |= run_file(names[i]);
            (*count)++;
        }
        free(names[i]);
    }
    free(names);
    return rc;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        size_t n = 0;
        uint8_t *b = slurp(stdin, &n);
        if (!b) return 2;
        LLVMFuzzerTestOneInput(b, n);
        free(b);
        return 0;
    }
    int rc = 0, count = 0;
    for (int i = 1; i < argc; i++) {
        struct stat st;
        if (stat(argv[i], &st) == 0 && S_ISDIR(st.st_mode)) {
            rc |= run_dir(argv[i], &count);
        } else {
            rc |= run_file(argv[i]);
            count++;
        }
    }
    fprintf(stderr, "%s: %d inputs replayed\n", argv[0], count);
    return rc;
}
