/* states.c — sort orders of state slices, ranks between two state sets, and initialization.
 *
 * The native kernel needs, per (h, k) slice, the ascending order of each state set and the
 * rank of every value of one set among the other. Orders are recomputed after every state
 * update; states move a little per optimizer step, so the previous permutation is almost
 * sorted: an insertion sort on it costs O(len + moves). Past a cap on moves (a big jump, or the
 * first update) the slice is radix-sorted instead (4 passes of 8 bits on order-preserving
 * integer keys, O(len)). Ties are ordered by index in both paths (the radix sort is stable and
 * starts from the identity), so the incremental and the full sort give the same permutation.
 */
#include <math.h>
#include <string.h>

#ifdef _OPENMP
#include <omp.h>
#endif

#include "dyn.h"

#define SMALL_SLICE 64 /* below this, sort from the identity by insertion */
#define MOVES_SLACK 256 /* incremental budget: this + 1/4 move per element (then radix sort) */

/* Order-preserving map float -> uint32 (−0 and +0 map to the same key). */
static inline uint32_t float_key(float x) {
    x += 0.0f; /* −0 -> +0 (not folded away without -ffast-math) */
    uint32_t b;
    memcpy(&b, &x, sizeof b);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

/* Insertion sort of (val, perm) pairs by (val, perm). Returns the number of element moves, or
 * -1 as soon as the moves exceed `cap` plus 1/4 of the elements seen so far (past that rate a
 * radix sort is cheaper; the arrays are then a permutation of the input, unsorted). */
static int64_t insertion_sort(float *val, int32_t *perm, int len, int64_t cap) {
    int64_t moves = 0;
    for (int r = 1; r < len; r++) {
        const float v = val[r];
        const int32_t p = perm[r];
        int k = r;
        while (k > 0 && (val[k - 1] > v || (val[k - 1] == v && perm[k - 1] > p))) {
            val[k] = val[k - 1];
            perm[k] = perm[k - 1];
            k--;
        }
        val[k] = v;
        perm[k] = p;
        moves += r - k;
        if (moves - (r >> 2) > cap) return -1;
    }
    return moves;
}

/* Full sort of one slice x[len] into perm/val: LSD radix sort, 3 passes of 11 bits (stable,
 * so ties stay in index order). tmp: 4·len words. */
static void full_sort(const float *x, int len, int32_t *perm, float *val, uint32_t *tmp) {
    if (len < SMALL_SLICE) {
        for (int r = 0; r < len; r++) {
            perm[r] = r;
            val[r] = x[r];
        }
        insertion_sort(val, perm, len, INT64_MAX);
        return;
    }
    uint32_t *ka = tmp, *kb = tmp + len;
    int32_t *ia = (int32_t *)(tmp + 2 * (int64_t)len), *ib = (int32_t *)(tmp + 3 * (int64_t)len);
    enum { BITS = 11, NB = 1 << BITS, PASSES = 3 };
    static _Thread_local int cnt[PASSES][NB];
    memset(cnt, 0, sizeof cnt);
    for (int r = 0; r < len; r++) {
        const uint32_t k = float_key(x[r]);
        ka[r] = k;
        ia[r] = r;
        cnt[0][k & (NB - 1)]++;
        cnt[1][(k >> BITS) & (NB - 1)]++;
        cnt[2][k >> (2 * BITS)]++;
    }
    for (int ps = 0; ps < PASSES; ps++) {
        const int shift = ps * BITS;
        int *c = cnt[ps];
        if (c[(ka[0] >> shift) & (NB - 1)] == len) continue; /* one bucket: nothing to do */
        int sum = 0;
        for (int b = 0; b < NB; b++) {
            const int t = c[b];
            c[b] = sum;
            sum += t;
        }
        for (int r = 0; r < len; r++) {
            const int at = c[(ka[r] >> shift) & (NB - 1)]++;
            kb[at] = ka[r];
            ib[at] = ia[r];
        }
        uint32_t *tk = ka;
        ka = kb;
        kb = tk;
        int32_t *ti = ia;
        ia = ib;
        ib = ti;
    }
    for (int r = 0; r < len; r++) {
        perm[r] = ia[r];
        val[r] = x[ia[r]];
    }
}

void dyn_sorted_free(dyn_sorted *s) {
    dyn_free(s->perm);
    dyn_free(s->val);
    memset(s, 0, sizeof *s);
}

int dyn_sorted_update(dyn_sorted *s, const float *x, int nslices, int len, int force_full,
                      dyn_err *err) {
    DYN_ASSERT(nslices >= 0 && len >= 0);
    const int64_t total = (int64_t)nslices * len;
    if (s->nslices != nslices || s->len != len || !s->perm) {
        dyn_free(s->perm);
        dyn_free(s->val);
        s->perm = dyn_alloc((size_t)(total ? total : 1) * sizeof(int32_t));
        s->val = dyn_alloc((size_t)(total ? total : 1) * sizeof(float));
        s->nslices = nslices;
        s->len = len;
        s->valid = 0;
        if (!s->perm || !s->val) {
            dyn_sorted_free(s);
            return dyn_err_set(err, DYN_ENOMEM, "out of memory for DyN sort orders (%lld values)",
                               (long long)total);
        }
    }
    const int full = force_full || !s->valid;
    const int nt = dyn_threads_get();
    uint32_t *tmp = dyn_alloc((size_t)nt * 4 * (size_t)(len ? len : 1) * sizeof(uint32_t));
    if (!tmp) return dyn_err_set(err, DYN_ENOMEM, "out of memory for DyN sort scratch");
    int64_t moves = 0;
    int nfull = 0;
    const int64_t cap = MOVES_SLACK;
#pragma omp parallel for schedule(dynamic, 1) num_threads(nt) reduction(+ : moves, nfull) \
    if (total > 4096 && nslices > 1)
    for (int sl = 0; sl < nslices; sl++) {
        int tid = 0;
#ifdef _OPENMP
        tid = omp_get_thread_num();
#endif
        const float *xs = x + (int64_t)sl * len;
        int32_t *perm = s->perm + (int64_t)sl * len;
        float *val = s->val + (int64_t)sl * len;
        if (!full) {
            for (int r = 0; r < len; r++) val[r] = xs[perm[r]];
            int64_t mv = insertion_sort(val, perm, len, cap);
            if (mv >= 0) {
                moves += mv;
                continue;
            }
        }
        full_sort(xs, len, perm, val, tmp + (int64_t)tid * 4 * len);
        nfull++;
    }
    dyn_free(tmp);
    s->valid = 1;
    s->last_moves = moves;
    s->last_full = nfull;
    return 0;
}

void dyn_ranks_free(dyn_ranks *r) {
    dyn_free(r->a_lo);
    dyn_free(r->a_hi);
    dyn_free(r->b_lo);
    dyn_free(r->b_hi);
    memset(r, 0, sizeof *r);
}

/* One branch-free merge of sorted a[m] and b[n], taking b first only when b < a. When a[i]
 * is taken, j = #{b < a[i]} (a_lo); when b[j] is taken, i = #{a <= b[j]} (b_hi). Each
 * output is rewritten while its index stays and holds the right value when the index moves
 * on. merge(b, a) gives the other two (#{a < b}, #{b <= a}). */
static void merge_ranks(const float *a, int m, const float *b, int n, int32_t *a_lo,
                        int32_t *b_hi) {
    int i = 0, j = 0;
    while (i < m && j < n) {
        const int tb = b[j] < a[i];
        a_lo[i] = j;
        b_hi[j] = i;
        j += tb;
        i += 1 - tb;
    }
    for (; i < m; i++) a_lo[i] = n;
    for (; j < n; j++) b_hi[j] = m;
}

int dyn_ranks_update(dyn_ranks *r, const float *aval, const float *bval, int nslices, int m,
                     int n, dyn_err *err) {
    const int64_t ta = (int64_t)nslices * m, tb = (int64_t)nslices * n;
    if (r->nslices != nslices || r->m != m || r->n != n || !r->a_lo) {
        dyn_ranks_free(r);
        r->a_lo = dyn_alloc((size_t)(ta ? ta : 1) * sizeof(int32_t));
        r->a_hi = dyn_alloc((size_t)(ta ? ta : 1) * sizeof(int32_t));
        r->b_lo = dyn_alloc((size_t)(tb ? tb : 1) * sizeof(int32_t));
        r->b_hi = dyn_alloc((size_t)(tb ? tb : 1) * sizeof(int32_t));
        if (!r->a_lo || !r->a_hi || !r->b_lo || !r->b_hi) {
            dyn_ranks_free(r);
            return dyn_err_set(err, DYN_ENOMEM, "out of memory for DyN ranks");
        }
        r->nslices = nslices;
        r->m = m;
        r->n = n;
    }
#pragma omp parallel for schedule(static) if (ta + tb > 8192 && nslices > 1)
    for (int sl = 0; sl < nslices; sl++) {
        const float *a = aval + (int64_t)sl * m, *b = bval + (int64_t)sl * n;
        merge_ranks(a, m, b, n, r->a_lo + (int64_t)sl * m, r->b_hi + (int64_t)sl * n);
        merge_ranks(b, n, a, m, r->b_lo + (int64_t)sl * n, r->a_hi + (int64_t)sl * m);
    }
    return 0;
}

/* ---- initialization ------------------------------------------------------------------------ */

static double sample_phi(const float *u, const float *v, int m, int n, int q, int h, int i, int j,
                         dyn_kernel k) {
    double d2 = 0.0, l1 = 0.0;
    for (int c = 0; c < q; c++) {
        int64_t hk = (int64_t)h * q + c;
        double df = (double)u[hk * m + i] - (double)v[hk * n + j];
        d2 += df * df;
        l1 += fabs(df);
    }
    if (k == DYN_KERNEL_L1) return l1;
    double r = sqrt(d2 + (double)DYN_NORM_EPS2);
    return k == DYN_KERNEL_L2 ? r : 1.0 / (r + (double)DYN_INV_EPS);
}

double dyn_sys_init_range(int H, int q, dyn_kernel k, double target_var, dyn_rng *rng) {
    /* l1 with states U(0, R): σ_φ = R·sqrt(q/18), so λ = sqrt(var/H)/σ_φ equals R when
     * R² = sqrt(var/H)/sqrt(q/18); l2 is homogeneous of degree 1 too and does best with the
     * same R. A step of λ by δ shifts every weight by δ·E[φ]: for inv, whose E[φ] grows as R
     * shrinks, R is chosen so that E[φ] equals l1's, q·R/3. */
    const double r1 = sqrt(sqrt(target_var / H) / sqrt(q / 18.0));
    if (k != DYN_KERNEL_INV) return r1;
    enum { S = 2048 };
    double d1[S]; /* ‖u − v‖₂ for u, v ~ U(0,1)^q */
    for (int t = 0; t < S; t++) {
        double d2 = 0.0;
        for (int c = 0; c < q; c++) {
            double df = (double)dyn_rng_uniform(rng) - (double)dyn_rng_uniform(rng);
            d2 += df * df;
        }
        d1[t] = sqrt(d2);
    }
    const double target = q * r1 / 3.0;
    /* E[1/(R·d + ε)] decreases with R; bisect on log R. */
    double lo = -10.0, hi = 15.0;
    for (int it = 0; it < 60; it++) {
        const double mid = 0.5 * (lo + hi), R = exp(mid);
        double mean = 0.0;
        for (int t = 0; t < S; t++) mean += 1.0 / (R * d1[t] + (double)DYN_INV_EPS) / S;
        if (mean > target) lo = mid;
        else hi = mid;
    }
    return exp(0.5 * (lo + hi));
}

/* Variance across rows of the row means of Σ_h λ_h φ_h, from up to 64 rows × 256 columns
 * (the sampling noise of each mean is subtracted). */
static double row_mean_var(const float *u, const float *v, const float *lambda, int m, int n,
                           int H, int q, dyn_kernel k, dyn_rng *rng) {
    const int rows = DYN_MIN(m, 64), cols = DYN_MIN(n, 256);
    if (rows < 2 || cols < 2) return 0.0;
    double sm = 0.0, sm2 = 0.0, noise = 0.0;
    for (int r = 0; r < rows; r++) {
        const int i = m <= 64 ? r : (int)dyn_rng_below(rng, (uint32_t)m);
        double s1 = 0.0, s2 = 0.0;
        for (int c = 0; c < cols; c++) {
            const int j = n <= 256 ? c : (int)dyn_rng_below(rng, (uint32_t)n);
            double w = 0.0;
            for (int h = 0; h < H; h++) w += (double)lambda[h] * sample_phi(u, v, m, n, q, h, i, j, k);
            s1 += w;
            s2 += w * w;
        }
        const double mean = s1 / cols, var = fmax(s2 / cols - mean * mean, 0.0);
        sm += mean;
        sm2 += mean * mean;
        noise += var / cols * (n > cols ? 1.0 : (double)(n - cols + 1) / n); /* finite n */
    }
    const double mm = sm / rows;
    return fmax(sm2 / rows - mm * mm - noise / rows, 0.0);
}

float dyn_sys_rescale(float *u, int64_t nu, float *v, int64_t nv, float *lambda, int64_t nl,
                      dyn_kernel k) {
    if (k == DYN_KERNEL_INV || nl <= 0) return 1.0f;
    double lm = 0.0;
    for (int64_t h = 0; h < nl; h++) lm += fabs((double)lambda[h]) / (double)nl;
    if (!(lm > 0.0)) return 1.0f;
    const double R = sqrt(lm);
    for (int64_t t = 0; t < nu; t++) u[t] = (float)(u[t] * R);
    for (int64_t t = 0; t < nv; t++) v[t] = (float)(v[t] * R);
    for (int64_t h = 0; h < nl; h++) lambda[h] = (float)(lambda[h] / R);
    return (float)R;
}

float dyn_sys_init(float *u, float *v, float *lambda, int m, int n, int H, int q, dyn_kernel k,
                   double target_var, double fan_in, int fill_states, dyn_rng *rng) {
    if (fill_states) {
        /* l1/l2: unit range now, rescaled at the end (dyn_sys_rescale); inv: its own range */
        const float R = k == DYN_KERNEL_INV
                            ? (float)dyn_sys_init_range(H, q, k, target_var, rng)
                            : 1.0f;
        for (int64_t t = 0; t < (int64_t)H * q * m; t++) u[t] = R * dyn_rng_uniform(rng);
        for (int64_t t = 0; t < (int64_t)H * q * n; t++) v[t] = R * dyn_rng_uniform(rng);
    }
    enum { SAMPLES = 1024 };
    double mean_h[64], *means = H <= 64 ? mean_h : malloc(sizeof(double) * (size_t)H);
    DYN_ASSERT(means);
    for (int h = 0; h < H; h++) {
        double s1 = 0.0, s2 = 0.0;
        for (int t = 0; t < SAMPLES; t++) {
            int i = (int)dyn_rng_below(rng, (uint32_t)m), j = (int)dyn_rng_below(rng, (uint32_t)n);
            double p = sample_phi(u, v, m, n, q, h, i, j, k);
            s1 += p;
            s2 += p * p;
        }
        double mean = s1 / SAMPLES, var = fmax(s2 / SAMPLES - mean * mean, 0.0);
        double sd = sqrt(var), lam = sqrt(target_var / H);
        if (sd > 1e-9) lam /= sd;
        lambda[h] = (float)lam;
        means[h] = mean;
    }
    /* Unlike i.i.d. dense weights, the rows of W have their own means (E_j φ(u_i, v_j) depends
     * on u_i); with non-negative inputs (ReLU outputs) they add fan_in·ρ²·x̄²/E[x²] to the
     * output variance, ρ² = var(row means)/var(W); through a deep net the logits of a fresh
     * model grew ~25× beyond the dense init's and training collapsed. Shrink λ by that factor
     * (x̄²/E[x²] = 1/π for rectified Gaussians). */
    if (fan_in > 0) {
        const double rv = row_mean_var(u, v, lambda, m, n, H, q, k, rng);
        const double s = 1.0 / sqrt(1.0 + fan_in * (rv / target_var) / 3.14159265358979);
        for (int h = 0; h < H; h++) lambda[h] = (float)(lambda[h] * s);
    }
    double offset = 0.0;
    for (int h = 0; h < H; h++) offset -= (double)lambda[h] * means[h];
    if (means != mean_h) free(means);
    if (fill_states)
        dyn_sys_rescale(u, (int64_t)H * q * m, v, (int64_t)H * q * n, lambda, H, k);
    return (float)offset;
}
