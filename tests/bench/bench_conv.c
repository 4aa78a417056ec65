/* bench_conv.c — every convolution shape of torchvision's ResNet-18 and ResNet-50 (224x224
 * input) through the conv2d layer's inference forward with each implementation forced
 * (cpu/dnnl_conv.h): im2col + OpenBLAS sgemm, oneDNN with blocked activations (reorders in and
 * out included), oneDNN with NCHW activations. Side by side in one run: per repetition the
 * three run in turn on the same input, and each keeps its median, so a busy machine slows all
 * three alike. Per network, batch (1, 8) and thread count (1, 2): one row per shape (time of
 * each, im2col / best oneDNN, the fastest), then the network's total over its layers (each
 * shape times its count) for each implementation and for the per-shape fastest — what
 * DYN_CONV_IMPL=auto aims at. Then the linear layers of the same networks and of a ViT-S/16
 * (OpenBLAS sgemm vs oneDNN's inner product, which DYN_CONV_IMPL also chooses between) at 1,
 * 8 and 197 rows.
 * Environment: DYN_BENCH_QUICK=1 fewer repetitions; DYN_BENCH_NETS=resnet18|resnet50|linear
 * one part; DYN_BENCH_THREADS=1|2 one thread count; DYN_BENCH_BATCHES=1|8 one batch. */
#include <math.h>
#include <string.h>

#include "cpu/dnnl_conv.h"
#include "layer.h"

typedef struct shape {
    int cin, hw, cout, k, s, count;
} shape;

/* (in channels, input size, out channels, kernel, stride, layers of this shape); padding k/2. */
static const shape resnet18[] = {
    {3, 224, 64, 7, 2, 1},    {64, 56, 64, 3, 1, 4},    {64, 56, 128, 3, 2, 1},
    {128, 28, 128, 3, 1, 3},  {64, 56, 128, 1, 2, 1},   {128, 28, 256, 3, 2, 1},
    {256, 14, 256, 3, 1, 3},  {128, 28, 256, 1, 2, 1},  {256, 14, 512, 3, 2, 1},
    {512, 7, 512, 3, 1, 3},   {256, 14, 512, 1, 2, 1},
};
static const shape resnet50[] = {
    {3, 224, 64, 7, 2, 1},     {64, 56, 64, 1, 1, 1},     {64, 56, 64, 3, 1, 3},
    {64, 56, 256, 1, 1, 4},    {256, 56, 64, 1, 1, 2},    {256, 56, 128, 1, 1, 1},
    {128, 56, 128, 3, 2, 1},   {128, 28, 512, 1, 1, 4},   {256, 56, 512, 1, 2, 1},
    {512, 28, 128, 1, 1, 3},   {128, 28, 128, 3, 1, 3},   {512, 28, 256, 1, 1, 1},
    {256, 28, 256, 3, 2, 1},   {256, 14, 1024, 1, 1, 6},  {512, 28, 1024, 1, 2, 1},
    {1024, 14, 256, 1, 1, 5},  {256, 14, 256, 3, 1, 5},   {1024, 14, 512, 1, 1, 1},
    {512, 14, 512, 3, 2, 1},   {512, 7, 2048, 1, 1, 3},   {1024, 14, 2048, 1, 2, 1},
    {2048, 7, 512, 1, 1, 2},   {512, 7, 512, 3, 1, 2},
};

static const dyn_conv_impl impls[3] = {DYN_CONV_IM2COL, DYN_CONV_DNNL, DYN_CONV_DNNL_NCHW};

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void die(const char *what, const char *msg) {
    fprintf(stderr, "bench_conv: %s: %s\n", what, msg);
    exit(1);
}

/* A layer of op with attributes attrs (JSON), randomly initialized (seed) and prepared; the
 * random stream continues in *r for the input. Exits on failure. */
static dyn_layer *bench_layer(const char *op, const char *attrs, uint64_t seed, dyn_rng *r) {
    json_t *j = json_loads(attrs, 0, NULL);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create(op, "bench", j, &err);
    json_decref(j);
    if (!l) die("create", err.msg);
    dyn_rng_seed(r, seed);
    l->ops->init(l, r);
    if (l->ops->prepare(l, &err)) die("prepare", err.msg);
    return l;
}

/* Median ms of each implementation on shape s at batch n: t[3]. */
static void time_shape(const shape *s, int n, int reps, double t[3]) {
    char a[256];
    snprintf(a, sizeof a,
             "{\"in_channels\": %d, \"out_channels\": %d, \"kernel\": %d, \"stride\": %d, "
             "\"padding\": %d}",
             s->cin, s->cout, s->k, s->s, s->k / 2);
    dyn_rng r;
    dyn_layer *l = bench_layer("conv2d", a, 1, &r);
    dyn_err err = {0};
    int64_t xs[4] = {n, s->cin, s->hw, s->hw};
    dyn_tensor x, y;
    if (dyn_tensor_init(&x, 4, xs, &err)) die("input", err.msg);
    for (int64_t i = 0; i < dyn_tensor_numel(&x); i++) x.data[i] = 2.0f * dyn_rng_uniform(&r) - 1;
    dyn_shape in = dyn_tensor_shape(&x), out;
    if (l->ops->infer(l, &in, &out, &err)) die("infer", err.msg);
    if (dyn_tensor_init_shape(&y, &out, &err)) die("output", err.msg);
    float *scr = dyn_alloc_zero(l->ops->scratch(l, &in, 0) * sizeof(float));
    float *ref = malloc((size_t)dyn_tensor_numel(&y) * sizeof(float));
    if (!scr || !ref) die("scratch", "out of memory");
    double *v = malloc((size_t)3 * reps * sizeof(double));
    for (int k = 0; k < 3; k++) { /* warm-up: primitives made, pages touched */
        dyn_conv_impl_set(impls[k]);
        l->ops->forward(l, &x, &y, scr, 0);
        if (k == 0) memcpy(ref, y.data, (size_t)dyn_tensor_numel(&y) * sizeof(float));
        else /* the three agree (a broken path would time nonsense) */
            for (int64_t i = 0; i < dyn_tensor_numel(&y); i++)
                if (!(fabsf(y.data[i] - ref[i]) <= 1e-3f * (1 + fabsf(ref[i]))))
                    die(dyn_conv_impl_name(impls[k]), "disagrees with im2col");
    }
    for (int rep = 0; rep < reps; rep++)
        for (int k = 0; k < 3; k++) {
            dyn_conv_impl_set(impls[k]);
            double t0 = dyn_now();
            l->ops->forward(l, &x, &y, scr, 0);
            v[k * reps + rep] = 1e3 * (dyn_now() - t0);
        }
    for (int k = 0; k < 3; k++) {
        qsort(v + k * reps, (size_t)reps, sizeof(double), cmp_d);
        t[k] = v[k * reps + reps / 2];
    }
    free(v);
    free(ref);
    dyn_free(scr);
    dyn_tensor_release(&x);
    dyn_tensor_release(&y);
    dyn_layer_free(l);
}

/* Median ms of a linear in -> out on `rows` rows: t[0] sgemm, t[1] oneDNN. */
static void time_linear(int in, int out, int rows, int reps, double t[2]) {
    char a[96];
    snprintf(a, sizeof a, "{\"in\": %d, \"out\": %d}", in, out);
    dyn_rng r;
    dyn_layer *l = bench_layer("linear", a, 2, &r);
    dyn_err err = {0};
    int64_t xs[2] = {rows, in}, ys[2] = {rows, out};
    dyn_tensor x, y;
    if (dyn_tensor_init(&x, 2, xs, &err) || dyn_tensor_init(&y, 2, ys, &err)) die("tensor", err.msg);
    for (int64_t i = 0; i < dyn_tensor_numel(&x); i++) x.data[i] = 2.0f * dyn_rng_uniform(&r) - 1;
    double *v = malloc((size_t)2 * reps * sizeof(double));
    for (int rep = -1; rep < reps; rep++) /* rep -1: warm-up */
        for (int k = 0; k < 2; k++) {
            dyn_conv_impl_set(impls[k]);
            double t0 = dyn_now();
            l->ops->forward(l, &x, &y, NULL, 0);
            if (rep >= 0) v[k * reps + rep] = 1e3 * (dyn_now() - t0);
        }
    for (int k = 0; k < 2; k++) {
        qsort(v + k * reps, (size_t)reps, sizeof(double), cmp_d);
        t[k] = v[k * reps + reps / 2];
    }
    free(v);
    dyn_tensor_release(&x);
    dyn_tensor_release(&y);
    dyn_layer_free(l);
}

static void run_linear(int threads, int reps) {
    /* ResNet-18 / -50 classifiers; ViT-S/16: qkv, projection, MLP up and down, classifier. */
    static const int shapes[][2] = {{512, 1000}, {2048, 1000}, {384, 1152},
                                    {384, 384},  {384, 1536},  {1536, 384}};
    static const int rows[] = {1, 8, 197};
    dyn_threads_set(threads);
    printf("\nlinear, %d thread(s): ms per call (median of %d, side by side)\n", threads, reps);
    printf("%-14s %5s %9s %9s %10s\n", "in->out", "rows", "sgemm", "dnnl", "sgemm/dnnl");
    for (size_t i = 0; i < DYN_ARRAY_LEN(shapes); i++)
        for (size_t k = 0; k < DYN_ARRAY_LEN(rows); k++) {
            double t[2];
            time_linear(shapes[i][0], shapes[i][1], rows[k], reps, t);
            char lab[32];
            snprintf(lab, sizeof lab, "%d->%d", shapes[i][0], shapes[i][1]);
            printf("%-14s %5d %9.4f %9.4f %9.2fx\n", lab, rows[k], t[0], t[1], t[0] / t[1]);
        }
    fflush(stdout);
}

static void run_net(const char *name, const shape *sh, int nsh, int n, int threads, int reps) {
    dyn_threads_set(threads);
    printf("\n%s, batch %d, %d thread(s): ms per call (median of %d, side by side)\n", name, n,
           threads, reps);
    printf("%-26s %5s %9s %9s %9s %9s  %s\n", "shape (cin,hw->cout,k,s)", "count", "im2col",
           "dnnl", "dnnl-nchw", "im2col/dn", "fastest");
    double tot[4] = {0, 0, 0, 0};
    for (int i = 0; i < nsh; i++) {
        const shape *s = &sh[i];
        double t[3];
        time_shape(s, n, reps, t);
        int best = 0;
        for (int k = 1; k < 3; k++)
            if (t[k] < t[best]) best = k;
        char lab[32];
        snprintf(lab, sizeof lab, "%d,%d->%d,k%d,s%d", s->cin, s->hw, s->cout, s->k, s->s);
        printf("%-26s %5d %9.3f %9.3f %9.3f %8.2fx  %s\n", lab, s->count, t[0], t[1], t[2],
               t[0] / DYN_MIN(t[1], t[2]), dyn_conv_impl_name(impls[best]));
        for (int k = 0; k < 3; k++) tot[k] += s->count * t[k];
        tot[3] += s->count * t[best];
    }
    printf("%-26s %5s %9.2f %9.2f %9.2f %8.2fx  per-shape fastest: %.2f ms (%.2fx of im2col)\n",
           "total (x count)", "", tot[0], tot[1], tot[2], tot[0] / DYN_MIN(tot[1], tot[2]),
           tot[3], tot[0] / tot[3]);
    fflush(stdout);
}

static int want(const char *env, const char *v) {
    const char *e = getenv(env);
    return !e || !strcmp(e, v);
}

int main(void) {
    const int reps = getenv("DYN_BENCH_QUICK") ? 3 : 7;
    printf("bench_conv: conv2d inference forward, im2col + sgemm vs oneDNN (blocked and NCHW "
           "activations)\n");
    for (int n = 1; n <= 8; n += 7)
        for (int th = 1; th <= 2; th++) {
            char nb[8], tb[8];
            snprintf(nb, sizeof nb, "%d", n);
            snprintf(tb, sizeof tb, "%d", th);
            if (!want("DYN_BENCH_BATCHES", nb) || !want("DYN_BENCH_THREADS", tb)) continue;
            if (want("DYN_BENCH_NETS", "resnet18"))
                run_net("ResNet-18", resnet18, (int)DYN_ARRAY_LEN(resnet18), n, th, reps);
            if (want("DYN_BENCH_NETS", "resnet50"))
                run_net("ResNet-50", resnet50, (int)DYN_ARRAY_LEN(resnet50), n, th, reps);
        }
    for (int th = 1; th <= 2; th++) {
        char tb[8];
        snprintf(tb, sizeof tb, "%d", th);
        if (want("DYN_BENCH_THREADS", tb) && want("DYN_BENCH_NETS", "linear"))
            run_linear(th, 3 * reps);
    }
    dyn_conv_impl_set(DYN_CONV_AUTO);
    return 0;
}
