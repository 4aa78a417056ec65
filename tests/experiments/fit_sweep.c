/* fit_sweep.c — measures one layer's fit under different options (CONVERT.md,
 * "Initialization"). Build: see convert.sh. Usage:
 *   fit_sweep MODEL LAYER RATIO STEPS INIT(random|lsq|svd) RESTARTS LR Q [KERNEL] [SEED]
 * Prints one line: layer, H, q, init, restarts, lr, steps, init error, float error, quantized
 * error, the SVD error at equal floats, seconds. */
#include <stdio.h>
#include <string.h>

#include "convert/convert.h"
#include "io/model_file.h"

int main(int argc, char **argv) {
    if (argc < 9) {
        fprintf(stderr, "usage: fit_sweep MODEL LAYER RATIO STEPS INIT RESTARTS LR Q [KERNEL] [SEED]\n");
        return 2;
    }
    dyn_err err = {0};
    dyn_model *m = dyn_model_load(argv[1], &err);
    if (!m) return fprintf(stderr, "%s\n", err.msg), 1;
    dyn_layer *l = dyn_model_layer_find(m, argv[2]);
    int M, N, K, q = atoi(argv[8]);
    if (!l || dyn_layer_fit_shape(l, &M, &N, &K, &err)) return fprintf(stderr, "bad layer\n"), 1;
    dyn_fit_opts o = dyn_fit_opts_default();
    o.steps = atoi(argv[4]);
    if (dyn_fit_init_parse(argv[5], &o.init)) return 2;
    o.restarts = atoi(argv[6]);
    o.lr = strtof(argv[7], NULL);
    o.seed = argc > 10 ? strtoull(argv[10], NULL, 10) : 1;
    const char *kern = argc > 9 ? argv[9] : "l1";
    int H = dyn_convert_budget_H(M, N, K, q, strtod(argv[3], NULL));
    json_t *a = K == 1 ? json_pack("{s:i,s:i,s:i,s:i,s:s,s:s}", "in", N, "out", M, "H", H, "q", q,
                                   "kernel", kern, "exec", "materialized")
                       : json_pack("{s:i,s:i,s:i,s:i,s:i,s:s,s:s}", "in_channels", N,
                                   "out_channels", M, "kernel", K, "H", H, "q", q, "kernel_fn",
                                   kern, "exec", "materialized");
    dyn_layer *d = dyn_layer_create(K == 1 ? "dyn_linear" : "dyn_conv2d", "fit", a, &err);
    if (!d) return fprintf(stderr, "%s\n", err.msg), 1;
    const float *w = dyn_layer_param(l, "weight")->value.data;
    dyn_fit_result r;
    if (dyn_fit_layer(d, w, NULL, DYN_FIT_FIXED, 0, &o, &r, &err)) return fprintf(stderr, "%s\n", err.msg), 1;
    const int nk = N * K * K, ns = M < nk ? M : nk;
    double *s = malloc(sizeof(double) * (size_t)ns);
    dyn_svd_values(w, M, nk, s, &err);
    int64_t fl = dyn_convert_floats(M, N, K, H, q);
    double svd = dyn_svd_tail_rel_err(s, ns, (int)(fl / (M + nk)));
    printf("%s H=%d q=%d %s init=%s restarts=%d lr=%g steps=%d  init_err=%.4f float_err=%.4f "
           "quant_err=%.4f svd_err=%.4f  %.1fs\n",
           argv[2], H, q, kern, argv[5], o.restarts, (double)o.lr, o.steps, r.init_rel_err,
           r.rel_err_float, r.rel_err, svd, r.seconds);
    free(s);
    json_decref(a);
    dyn_layer_free(d);
    dyn_model_free(m);
    return 0;
}
