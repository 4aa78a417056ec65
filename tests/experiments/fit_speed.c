/* fit_speed.c — one layer's data-free fit, timed, with its error-vs-time curve
 * (CONVERT.md, "Conversion speed"). Build: tests/bench/bench_convert.sh builds it. Usage:
 *   fit_speed MODEL --list                  the linear / conv2d layers with their shapes
 *   fit_speed MODEL LAYER [--ratio 4] [--steps 2000] [--algo 0|1] [--sample F] [--plateau T]
 *             [--powerlaw A] [--threads N] [--trace FILE] [--label NAME]
 * MODEL: .onnx or .dyn. --powerlaw A replaces W by U·diag(s₀·(i+1)^−A)·Vᵀ (W's own singular
 * vectors, the first singular value kept): a decaying spectrum like a trained layer's, on the
 * random-weight layers torchvision gives here. --trace appends "label step seconds rel_err"
 * lines (the fit's relative weight error before each Adam step). Prints one line: layer,
 * shape, H, options, init / float / quantized errors, the SVD error at equal floats, Adam
 * steps taken, seconds. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "base.h"
#include "convert/convert.h"
#include "io/model_file.h"
#include "io/onnx.h"

extern void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda,
                    double *s, double *u, const int *ldu, double *vt, const int *ldvt,
                    double *work, const int *lwork, int *iwork, int *info);

typedef struct trace_ctx {
    FILE *f;
    const char *label;
    int every;
} trace_ctx;

static void trace_cb(void *ctx, int step, double sec, double rel) {
    trace_ctx *t = ctx;
    if (step % t->every == 0) fprintf(t->f, "%s %d %.3f %.5f\n", t->label, step, sec, rel);
}

/* W (row-major m×n) := U diag(s0·(i+1)^-alpha) Vᵀ. Returns 0 or -1. */
static int powerlaw(float *w, int m, int n, double alpha) {
    /* row-major m×n = column-major n×m (Wᵀ): Wᵀ = U' S V'ᵀ, so W = V' S U'ᵀ */
    const int M = n, N = m, k = m < n ? m : n;
    double *A = malloc(sizeof(double) * (size_t)m * n), *U = malloc(sizeof(double) * (size_t)M * k),
           *VT = malloc(sizeof(double) * (size_t)k * N), *s = malloc(sizeof(double) * (size_t)k);
    int *iw = malloc(sizeof(int) * 8 * (size_t)k), lwork = -1, info = 0;
    double wq = 0;
    if (!A || !U || !VT || !s || !iw) return -1;
    for (int64_t i = 0; i < (int64_t)m * n; i++) A[i] = w[i];
    dgesdd_("S", &M, &N, A, &M, s, U, &M, VT, &k, &wq, &lwork, iw, &info);
    lwork = (int)wq + 1;
    double *work = malloc(sizeof(double) * (size_t)lwork);
    dgesdd_("S", &M, &N, A, &M, s, U, &M, VT, &k, work, &lwork, iw, &info);
    if (info != 0) return -1;
    /* w[i][j] (column-major Wᵀ element (j, i)) = Σ_c U[j + c·M] s'_c VT[c + i·k] */
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            double acc = 0;
            for (int c = 0; c < k; c++)
                acc += U[j + (int64_t)c * M] * s[0] * pow(c + 1.0, -alpha) * VT[c + (int64_t)i * k];
            w[(int64_t)i * n + j] = (float)acc;
        }
    free(A);
    free(U);
    free(VT);
    free(s);
    free(iw);
    free(work);
    return 0;
}

/* The truncated SVD's relative error at the floats of H copies (q = 1); -1 on failure. */
static double svd_equal_floats(const float *w, int M, int N, int K, int H) {
    dyn_err e = {0};
    const int cols = N * K * K, nsv = M < cols ? M : cols;
    double *sv = malloc(sizeof(double) * (size_t)nsv), out = -1;
    if (sv && dyn_svd_values(w, M, cols, sv, &e) == 0)
        out = dyn_svd_tail_rel_err(sv, nsv, (int)(dyn_convert_floats(M, N, K, H, 1) / (M + cols)));
    free(sv);
    return out;
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: fit_speed MODEL --list | LAYER [options] (see the source)\n");
        return 2;
    }
    dyn_err err = {0};
    const char *path = argv[1];
    size_t pl = strlen(path);
    dyn_model *m = pl > 5 && strcmp(path + pl - 5, ".onnx") == 0 ? dyn_onnx_load(path, &err)
                                                                  : dyn_model_load(path, &err);
    if (!m) return fprintf(stderr, "%s\n", err.msg), 1;
    if (strcmp(argv[2], "--list") == 0) {
        for (int k = 0; k < m->nnodes; k++) {
            int M, N, K;
            dyn_err e2 = {0};
            if (dyn_layer_fit_shape(m->nodes[k].layer, &M, &N, &K, &e2) == 0)
                printf("%s %d %d %d\n", m->nodes[k].layer->name, M, N, K);
        }
        dyn_model_free(m);
        return 0;
    }
    const char *lname = argv[2], *trace = NULL, *label = "fit";
    double ratio = 4, alpha = 0;
    dyn_fit_opts o = dyn_fit_opts_default();
    static const struct option lo[] = {
        {"ratio", 1, 0, 'r'},   {"steps", 1, 0, 's'}, {"algo", 1, 0, 'a'},
        {"sample", 1, 0, 'f'},  {"plateau", 1, 0, 'p'}, {"powerlaw", 1, 0, 'w'},
        {"threads", 1, 0, 't'}, {"trace", 1, 0, 'T'}, {"label", 1, 0, 'l'},
        {0, 0, 0, 0}};
    optind = 3;
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'r': ratio = atof(optarg); break;
        case 's': o.steps = atoi(optarg); break;
        case 'a': o.algo = atoi(optarg); break;
        case 'f': o.sample = atof(optarg); break;
        case 'p': o.plateau = atof(optarg); break;
        case 'w': alpha = atof(optarg); break;
        case 't': dyn_threads_set(atoi(optarg)); break;
        case 'T': trace = optarg; break;
        case 'l': label = optarg; break;
        default: return 2;
        }
    }
    dyn_layer *l = dyn_model_layer_find(m, lname);
    int M, N, K;
    if (!l || dyn_layer_fit_shape(l, &M, &N, &K, &err)) return fprintf(stderr, "bad layer\n"), 1;
    const int nk = N * K * K, q = 1;
    float *w = malloc(sizeof(float) * (size_t)M * nk);
    memcpy(w, dyn_layer_param(l, "weight")->value.data, sizeof(float) * (size_t)M * nk);
    if (alpha > 0 && powerlaw(w, M, nk, alpha)) return fprintf(stderr, "SVD failed\n"), 1;
    int H = dyn_convert_budget_H(M, N, K, q, ratio);
    json_t *a = K == 1 ? json_pack("{s:i,s:i,s:i,s:i,s:s,s:s}", "in", N, "out", M, "H", H, "q", q,
                                   "kernel", "l1", "exec", "materialized")
                       : json_pack("{s:i,s:i,s:i,s:i,s:i,s:s,s:s}", "in_channels", N,
                                   "out_channels", M, "kernel", K, "H", H, "q", q, "kernel_fn",
                                   "l1", "exec", "materialized");
    dyn_layer *d = dyn_layer_create(K == 1 ? "dyn_linear" : "dyn_conv2d", "fit", a, &err);
    if (!d) return fprintf(stderr, "%s\n", err.msg), 1;
    trace_ctx tc = {.label = label, .every = o.steps >= 1000 ? 10 : 1};
    if (trace) {
        tc.f = fopen(trace, "a");
        if (!tc.f) return fprintf(stderr, "cannot open %s\n", trace), 1;
        o.trace = trace_cb;
        o.trace_ctx = &tc;
    }
    dyn_fit_result r;
    if (dyn_fit_layer(d, w, NULL, DYN_FIT_FIXED, 0, &o, &r, &err))
        return fprintf(stderr, "%s\n", err.msg), 1;
    if (tc.f) fclose(tc.f);
    const double svd = svd_equal_floats(w, M, N, K, H);
    printf("%-8s %s %dx%dx%d H=%d algo=%d sample=%g plateau=%g powerlaw=%g steps=%d/%d "
           "init=%.4f float=%.4f quant=%.4f svd=%.4f  %.1fs\n",
           label, lname, M, N, K, H, o.algo, o.sample, o.plateau, alpha, r.steps, o.steps,
           r.init_rel_err, r.rel_err_float, r.rel_err, svd, r.seconds);
    free(w);
    json_decref(a);
    dyn_layer_free(d);
    dyn_model_free(m);
    return 0;
}
