/* entropy.c — structural entropy of a DyN layer (DYN.md §5, a choice of this project): the
 * Shannon entropy, in bits, of the state coordinates quantized to the grid δ (symbol =
 * floor(x / δ)). It is the information a coordinate carries on the grid, and bounds the
 * compressed size of the states on disk. O(S log S) for S values (one sort). */
#include <math.h>
#include <string.h>

#include "dyn.h"

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return (x > y) - (x < y);
}

static int64_t quantize(float x, double delta) {
    if (isnan(x)) return INT64_MIN + 2;
    double t = floor((double)x / delta);
    if (!(t > -9.0e18)) return INT64_MIN + 1; /* -inf or huge */
    if (!(t < 9.0e18)) return INT64_MAX;      /* +inf or huge */
    return (int64_t)t;
}

double dyn_entropy_bits(int narrays, const float *const *arrays, const int64_t *lens,
                        double delta) {
    int64_t total = 0;
    for (int a = 0; a < narrays; a++) total += lens[a];
    if (total <= 0) return 0.0;
    if (!(delta > 0.0)) return -1.0;
    int64_t *keys = malloc((size_t)total * sizeof(int64_t));
    if (!keys) return -1.0;
    int64_t at = 0;
    for (int a = 0; a < narrays; a++)
        for (int64_t i = 0; i < lens[a]; i++) keys[at++] = quantize(arrays[a][i], delta);
    qsort(keys, (size_t)total, sizeof(int64_t), cmp_i64);
    double h = 0.0;
    for (int64_t i = 0; i < total;) {
        int64_t j = i + 1;
        while (j < total && keys[j] == keys[i]) j++;
        double p = (double)(j - i) / (double)total;
        h -= p * log2(p);
        i = j;
    }
    free(keys);
    return h;
}
