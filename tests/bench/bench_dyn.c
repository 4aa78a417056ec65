/* bench_dyn.c — native DyN linear (l1) against the same-shape dense linear (OpenBLAS), side by
 * side in one run: forward, and a training step (forward + backward with dX and all forces;
 * dense: forward + dX + dW gemms). The dense W is the DyN system's own materialized W, so the
 * two outputs are also compared. Prints a table, the constants of the cost model and a
 * PASS/MISS line per target:
 *   T1: native >= 40x faster than dense at batch 1, 8192x8192, H·q = 16 (forward; issue 12,
 *       first 10x);
 *   T2: native >= 2x faster than dense at batch 64, 4096x4096, H·q = 8 (forward; first 1x).
 * Environment: DYN_BENCH_QUICK=1 runs fewer repetitions; DYN_THREADS=n sets the thread count
 * (default: all cores). */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include <cblas.h>

#include "dyn/dyn.h"
#include "layer.h"

typedef struct cfg {
    int n, H, q;
} cfg;

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp_d);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static dyn_layer *make_layer(int n, int H, int q) {
    json_t *a = json_pack("{s:i, s:i, s:i, s:i, s:s, s:s, s:i}", "in", n, "out", n, "H", H, "q",
                          q, "kernel", "l1", "exec", "native", "bias", 1);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create("dyn_linear", "bench", a, &err);
    json_decref(a);
    if (!l) {
        fprintf(stderr, "bench_dyn: %s\n", err.msg);
        exit(1);
    }
    dyn_rng r;
    dyn_rng_seed(&r, 42);
    l->ops->init(l, &r);
    if (l->ops->prepare(l, &err)) {
        fprintf(stderr, "bench_dyn: %s\n", err.msg);
        exit(1);
    }
    return l;
}

typedef struct row {
    cfg c;
    int N;
    double fn, fd, fd_gemv, tn, td, prep, err;
} row;

static double rel_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num) / fmax(sqrt(den), 1e-30);
}

/* Measures one (config, batch) pair; w is the materialized W of l. */
static row measure(dyn_layer *l, const float *w, cfg c, int N, int reps) {
    const int n = c.n;
    row rw = {.c = c, .N = N};
    int64_t xs[2] = {N, n};
    dyn_tensor x, y, dy, dx, yd, dxd;
    dyn_tensor_init(&x, 2, xs, NULL);
    dyn_tensor_init(&y, 2, xs, NULL);
    dyn_tensor_init(&dy, 2, xs, NULL);
    dyn_tensor_init(&dx, 2, xs, NULL);
    dyn_tensor_init(&yd, 2, xs, NULL);
    dyn_tensor_init(&dxd, 2, xs, NULL);
    float *gw = dyn_alloc((size_t)n * n * sizeof(float));
    dyn_shape s = {.ndim = 2, .d = {N, n}};
    float *sc = dyn_alloc_zero(l->ops->scratch(l, &s, 1) * sizeof(float));
    if (!gw || !sc) {
        fprintf(stderr, "bench_dyn: out of memory\n");
        exit(1);
    }
    dyn_rng r;
    dyn_rng_seed(&r, 7);
    for (int64_t i = 0; i < (int64_t)N * n; i++) {
        x.data[i] = 2 * dyn_rng_uniform(&r) - 1;
        dy.data[i] = 2 * dyn_rng_uniform(&r) - 1;
    }
    dyn_param *u = dyn_layer_param(l, "u"), *v = dyn_layer_param(l, "v");
    const int64_t nu = dyn_tensor_numel(&u->value), nv = dyn_tensor_numel(&v->value);
    double *tf = malloc(sizeof(double) * (size_t)reps * 6);
    double *tfn = tf, *tfd = tf + reps, *tfg = tf + 2 * reps, *ttn = tf + 3 * reps,
           *ttd = tf + 4 * reps, *tpr = tf + 5 * reps;
    /* Native and dense run in separate phases with a pause between them: OpenBLAS's worker
     * threads spin for a while after each call (and OpenMP's after each region), and on two
     * cores a spinning pool slows the other one down. Rep -1 of each phase is a warm-up. */
    for (int rep = -1; rep < reps; rep++) {
        double t0 = dyn_now();
        l->ops->forward(l, &x, &y, sc, 0);
        double t1 = dyn_now();
        l->ops->forward(l, &x, &y, sc, 1);
        dyn_layer_zero_grad(l);
        l->ops->backward(l, &x, &y, &dy, &dx, sc);
        double t2 = dyn_now();
        /* An Adam-sized move of every state (±1e-3), then the re-sort. */
        for (int64_t i = 0; i < nu; i++) u->value.data[i] += 2e-3f * (dyn_rng_uniform(&r) - 0.5f);
        for (int64_t i = 0; i < nv; i++) v->value.data[i] += 2e-3f * (dyn_rng_uniform(&r) - 0.5f);
        double t3 = dyn_now();
        l->ops->prepare(l, NULL);
        double t4 = dyn_now();
        if (rep >= 0) {
            tfn[rep] = t1 - t0;
            ttn[rep] = t2 - t1;
            tpr[rep] = t4 - t3;
        }
    }
    usleep(50000);
    for (int rep = -1; rep < reps; rep++) {
        double t0 = dyn_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, n, n, 1.0f, x.data, n, w, n,
                    0.0f, yd.data, n);
        double t1 = dyn_now();
        if (N == 1)
            cblas_sgemv(CblasRowMajor, CblasNoTrans, n, n, 1.0f, w, n, x.data, 1, 0.0f, yd.data,
                        1);
        double t2 = dyn_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, n, n, 1.0f, x.data, n, w, n,
                    0.0f, yd.data, n);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, N, n, n, 1.0f, dy.data, n, w, n,
                    0.0f, dxd.data, n);
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, n, n, N, 1.0f, dy.data, n, x.data,
                    n, 0.0f, gw, n);
        double t3 = dyn_now();
        if (rep >= 0) {
            tfd[rep] = t1 - t0;
            tfg[rep] = t2 - t1;
            ttd[rep] = t3 - t2;
        }
    }
    usleep(50000);
    rw.fn = median(tfn, reps);
    rw.fd = median(tfd, reps);
    rw.fd_gemv = N == 1 ? median(tfg, reps) : 0;
    rw.tn = median(ttn, reps);
    rw.td = median(ttd, reps);
    rw.prep = median(tpr, reps);
    rw.err = -1; /* filled by the caller (agreement) */
    free(tf);
    dyn_free(sc);
    dyn_free(gw);
    dyn_tensor_release(&x);
    dyn_tensor_release(&y);
    dyn_tensor_release(&dy);
    dyn_tensor_release(&dx);
    dyn_tensor_release(&yd);
    dyn_tensor_release(&dxd);
    return rw;
}

/* Native vs dense output with the current states (W materialized now). */
static double agreement(dyn_layer *l, float *w, int n, int N) {
    dyn_param *u = dyn_layer_param(l, "u"), *v = dyn_layer_param(l, "v");
    dyn_param *lam = dyn_layer_param(l, "lambda"), *c = dyn_layer_param(l, "c");
    dyn_param *b = dyn_layer_param(l, "bias");
    dyn_sys s = {.m = n, .n = n, .H = (int)u->value.shape[0], .q = (int)u->value.shape[1],
                 .kernel = DYN_KERNEL_L1, .u = u->value.data, .v = v->value.data,
                 .lambda = lam->value.data, .c = c->value.data[0]};
    dyn_sys_materialize(&s, w);
    int64_t xs[2] = {N, n};
    dyn_tensor x, y;
    dyn_tensor_init(&x, 2, xs, NULL);
    dyn_tensor_init(&y, 2, xs, NULL);
    float *yd = malloc((size_t)N * n * sizeof(float));
    dyn_rng r;
    dyn_rng_seed(&r, 3);
    for (int64_t i = 0; i < (int64_t)N * n; i++) x.data[i] = 2 * dyn_rng_uniform(&r) - 1;
    dyn_shape sh = {.ndim = 2, .d = {N, n}};
    float *sc = dyn_alloc_zero(l->ops->scratch(l, &sh, 0) * sizeof(float));
    l->ops->forward(l, &x, &y, sc, 0);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, n, n, 1.0f, x.data, n, w, n, 0.0f, yd,
                n);
    for (int64_t i = 0; i < (int64_t)N * n; i++) yd[i] += b->value.data[i % n];
    double e = rel_err(y.data, yd, (int64_t)N * n);
    free(yd);
    dyn_free(sc);
    dyn_tensor_release(&x);
    dyn_tensor_release(&y);
    return e;
}

int main(int argc, char **argv) {
    (void)argc;
    dyn_threads_policy_init(argv); /* threads sleep while they wait, as in dynd and dyn */
    dyn_threads_set(getenv("DYN_THREADS") ? atoi(getenv("DYN_THREADS")) : 0);
    const int quick = getenv("DYN_BENCH_QUICK") != NULL;
    static const cfg cfgs[] = {{1024, 2, 4}, {1024, 4, 8}, {4096, 2, 4}, {4096, 4, 8},
                               {8192, 2, 4}, {8192, 4, 8}, {8192, 4, 4}};
    static const int batches[] = {1, 64};
    row rows[16];
    int nr = 0;
    double t_start = dyn_now();
    printf("bench_dyn: native DyN linear (l1) vs dense OpenBLAS linear, %d threads, medians\n",
           dyn_threads_get());
    /* Other processes make multi-threaded timings meaningless (a parallel region waits for
     * its slowest thread; with autogroup scheduling `nice` does not protect us). */
    FILE *la = fopen("/proc/loadavg", "r");
    double load = 0;
    if (la) {
        if (fscanf(la, "%lf", &load) != 1) load = 0;
        fclose(la);
    }
    if (load > 0.5)
        printf("WARNING: load average %.2f before the run: other processes are using the CPU; "
               "timings with more than one thread will be unreliable (try DYN_THREADS=1)\n",
               load);
    printf("%6s %3s %3s %4s %5s | %9s %9s %9s %7s | %9s %9s %7s | %8s %8s\n", "m=n", "H", "q",
           "H*q", "batch", "fwd nat", "fwd dense", "(gemv)", "d/n", "step nat", "step dns",
           "d/n", "prepare", "rel.err");
    for (size_t ci = 0; ci < DYN_ARRAY_LEN(cfgs); ci++) {
        cfg c = cfgs[ci];
        dyn_layer *l = make_layer(c.n, c.H, c.q);
        float *w = dyn_alloc((size_t)c.n * c.n * sizeof(float));
        if (!w) {
            fprintf(stderr, "bench_dyn: out of memory\n");
            return 1;
        }
        for (size_t bi = 0; bi < DYN_ARRAY_LEN(batches); bi++) {
            int N = batches[bi];
            double err = agreement(l, w, c.n, N);
            int reps = quick ? 3 : (c.n >= 8192 && N == 64 ? 5 : c.n >= 4096 ? 7 : 11);
            row rw = measure(l, w, c, N, reps);
            rw.err = err;
            rows[nr++] = rw;
            double fdense = N == 1 ? fmin(rw.fd, rw.fd_gemv) : rw.fd;
            char gemv[16] = "-";
            if (N == 1) snprintf(gemv, sizeof gemv, "%.3f", 1e3 * rw.fd_gemv);
            printf("%6d %3d %3d %4d %5d | %9.3f %9.3f %9s %6.1fx | %9.3f %9.3f %6.1fx | %8.3f "
                   "%8.1e\n",
                   c.n, c.H, c.q, c.H * c.q, N, 1e3 * rw.fn, 1e3 * rw.fd, gemv, fdense / rw.fn,
                   1e3 * rw.tn, 1e3 * rw.td, rw.td / rw.tn, 1e3 * rw.prep, rw.err);
            fflush(stdout);
        }
        dyn_free(w);
        dyn_layer_free(l);
    }
    printf("times in ms; dense fwd = sgemm (at batch 1 the ratio uses the faster of sgemm and "
           "sgemv); step = forward + backward (dX, dW or all forces); prepare = re-sort after "
           "an Adam-sized (±1e-3) move of every state\n");

    /* Cost-model constants (README "Choosing the execution"). */
    double ns_col = 0, ns_elem = 0, ns_mac = 0, ns_wf = 0;
    int k1 = 0, k2 = 0;
    for (int i = 0; i < nr; i++) {
        const row *rw = &rows[i];
        double elems = (double)rw->c.H * rw->c.q * 2.0 * rw->c.n;
        if (rw->N == 64 && rw->c.n >= 4096) {
            ns_col += 1e9 * rw->fn / (elems * 64);
            ns_mac += 1e9 * rw->fd / ((double)rw->c.n * rw->c.n * 64);
            k1++;
        }
        if (rw->N == 1 && rw->c.n >= 4096) {
            ns_elem += 1e9 * rw->fn / elems;
            ns_wf += 1e9 * fmin(rw->fd, rw->fd_gemv) / ((double)rw->c.n * rw->c.n);
            k2++;
        }
    }
    printf("cost model (n >= 4096): native %.3f ns per slice-element·column at batch 64, %.2f ns "
           "per slice-element at batch 1; dense %.4f ns per MAC at batch 64, %.3f ns per W float "
           "at batch 1\n",
           ns_col / k1, ns_elem / k2, ns_mac / k1, ns_wf / k2);

    int pass1 = 0, pass2 = 0;
    double r1 = 0, r2 = 0;
    for (int i = 0; i < nr; i++) {
        const row *rw = &rows[i];
        if (rw->c.n == 8192 && rw->c.H * rw->c.q == 16 && rw->N == 1) {
            r1 = fmin(rw->fd, rw->fd_gemv) / rw->fn;
            pass1 = r1 >= 40.0;
        }
        if (rw->c.n == 4096 && rw->c.H * rw->c.q == 8 && rw->N == 64) {
            r2 = rw->fd / rw->fn;
            pass2 = r2 >= 2.0;
        }
    }
    printf("%s target 1: batch 1, 8192x8192, H*q=16: native %.1fx faster than dense "
           "(need >= 40x)\n",
           pass1 ? "PASS" : "MISS", r1);
    printf("%s target 2: batch 64, 4096x4096, H*q=8: native %.1fx faster than dense (need >= 2x)\n",
           pass2 ? "PASS" : "MISS", r2);
    printf("bench_dyn: %.1f s\n", dyn_now() - t_start);
    return 0;
}
