/* forms_table.c — data-free forms of trained layers against truncated SVD at equal stored floats
 * and per-row int8 / int4 quantization (CONVERT.md, "Data-free forms vs SVD vs int8/int4";
 * issue 9 item 5). Build: `make build/forms_table` (Makefile rule next to the unit tests) or
 * the cc line in that section. Usage:
 *   forms_table MODEL(.dyn|.onnx) DATA(mnist|fashion|DIR) [RATIOS=4,8] [L1_STEPS=2000]
 *               [RIEM_STEPS=3000] [RIEM_RESTARTS=4] [RIEM_D=4] [RIEM_LR=0.02] [LAYERS=a,b]
 * For each ratio, every selected layer (default: every linear / conv2d but the first conv2d and
 * the last weight layer) gets the l1 DyN budget of `dyn convert --ratio R` (H with q = 1, F
 * floats); then, on F floats: the l1 DyN fit (dyn_fit_layer, defaults: SVD-pair init, Adam,
 * δ = 1e-3), truncated SVD at rank F / (m + nk), the RieM-style form (fit_riem.h) at the largest
 * q that fits (a conv: fitted on [Cout][Cin·K²] and on [Cout·K][Cin·K], the smaller weight error
 * kept); per-row int8 / int4 (their own bytes) and intB, the most bits whose bytes fit in the
 * DyN layer's (4·F). One line per layer and form, then the
 * test accuracy and top-1 agreement with the dense model of the model with all selected layers
 * replaced by each form. Run with OMP_NUM_THREADS=1. */
#include <stdio.h>
#include <string.h>

#include "convert/baseline.h"
#include "convert/fit_riem.h"
#include "data.h"
#include "io/dataset.h"
#include "io/model_file.h"
#include "io/onnx.h"

#define NFORMS 6
static const char *form_names[NFORMS] = {"l1", "svd", "riem", "int8", "int4", "intB"};

static int argmax(const float *x, int n) {
    int b = 0;
    for (int i = 1; i < n; i++)
        if (x[i] > x[b]) b = i;
    return b;
}

static void die(const char *what, const dyn_err *e) {
    fprintf(stderr, "forms_table: %s: %s\n", what, e->msg);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: forms_table MODEL DATA [RATIOS] [L1_STEPS] [RIEM_STEPS] "
                        "[RIEM_RESTARTS] [RIEM_D] [RIEM_LR] [LAYERS]\n");
        return 2;
    }
    dyn_err err = {0};
    const char *path = argv[1];
    const size_t pl = strlen(path);
    dyn_model *dense = pl > 5 && strcmp(path + pl - 5, ".onnx") == 0 ? dyn_onnx_load(path, &err)
                                                                     : dyn_model_load(path, &err);
    if (!dense || dyn_model_prepare(dense, &err)) die("model", &err);
    double ratios[8];
    int nr = 0;
    char rbuf[128];
    snprintf(rbuf, sizeof rbuf, "%s", argc > 3 ? argv[3] : "4,8");
    for (char *t = strtok(rbuf, ","); t && nr < 8; t = strtok(NULL, ",")) ratios[nr++] = atof(t);
    const int l1_steps = argc > 4 ? atoi(argv[4]) : 2000;
    dyn_riem_opts ro = dyn_riem_opts_default();
    if (argc > 5) ro.steps = atoi(argv[5]);
    if (argc > 6) ro.restarts = atoi(argv[6]);
    const int D = argc > 7 ? atoi(argv[7]) : 4;
    if (argc > 8) ro.lr = strtof(argv[8], NULL);

    /* layers */
    int sel[64], ns = 0, first_conv = -1, last_w = -1;
    for (int k = 0; k < dense->nnodes; k++) {
        const char *op = dense->nodes[k].layer->ops->name;
        if (strcmp(op, "linear") == 0 || strcmp(op, "conv2d") == 0) last_w = k;
        if (first_conv < 0 && strcmp(op, "conv2d") == 0) first_conv = k;
    }
    for (int k = 0; k < dense->nnodes && ns < 64; k++) {
        const dyn_layer *l = dense->nodes[k].layer;
        const char *op = l->ops->name;
        if (strcmp(op, "linear") != 0 && strcmp(op, "conv2d") != 0) continue;
        if (argc > 9) {
            char lb[512];
            snprintf(lb, sizeof lb, ",%s,", argv[9]);
            char nm[80];
            snprintf(nm, sizeof nm, ",%s,", l->name);
            if (!strstr(lb, nm)) continue;
        } else if (k == first_conv || k == last_w) {
            continue;
        }
        sel[ns++] = k;
    }

    /* test data, the dense model's logits */
    dyn_dataset_spec ds;
    dyn_dataset te;
    const char *root = getenv("DYN_DATA_DIR") ? getenv("DYN_DATA_DIR") : "data";
    if (dyn_dataset_resolve(root, argv[2], 0, &ds, &err) ||
        dyn_dataset_load_idx(&ds, "test", &te, &err))
        die("data", &err);
    dyn_data_view vte;
    if (dyn_data_all(&te, ds.mean, ds.std, &vte, &err)) die("data", &err);
    dyn_batch_source src = dyn_data_view_source(&vte);
    const int C = (int)dyn_model_outputs(dense);
    float *lg0 = dyn_model_logits(dense, &src, src.n, 256, &err);
    if (!lg0) die("logits", &err);
    const double acc0 = dyn_evaluate(dense, &src, 256, NULL, &err);
    printf("model %s  data %s  dense test accuracy %.2f%% (%d images)  l1 steps %d  riem: D %d, "
           "steps %d, restarts %d, lr %g\n",
           path, argv[2], 100 * acc0, src.n, l1_steps, D, ro.steps, ro.restarts, (double)ro.lr);

    for (int ri = 0; ri < nr; ri++) {
        const double ratio = ratios[ri];
        float *rec[NFORMS][64];
        const char *names[64];
        double sum_err[NFORMS] = {0};
        printf("\nratio %g\n%-10s %5s %5s %7s | %-6s %8s %9s | %-6s %8s %9s | %8s %9s | %8s %9s\n",
               ratio, "layer", "m", "nk", "floats", "form", "rel_err", "bytes", "form",
               "rel_err", "bytes", "int8", "bytes", "int4", "bytes");
        for (int s = 0; s < ns; s++) {
            dyn_layer *l = dense->nodes[sel[s]].layer;
            names[s] = l->name;
            int m, n, K;
            if (dyn_layer_fit_shape(l, &m, &n, &K, &err)) die(l->name, &err);
            const int nk = n * K * K;
            const float *w = dyn_layer_param(l, "weight")->value.data;
            const int H = dyn_convert_budget_H(m, n, K, 1, ratio);
            const int64_t F = dyn_convert_floats(m, n, K, H, 1);
            for (int f = 0; f < NFORMS; f++) rec[f][s] = calloc((size_t)m * nk, sizeof(float));
            double e[NFORMS];
            int64_t fl[NFORMS];
            double secs[NFORMS] = {0};
            /* l1 */
            double t0 = dyn_now();
            json_t *a = K == 1 ? json_pack("{s:i,s:i,s:i,s:i,s:s,s:s}", "in", n, "out", m, "H",
                                           H, "q", 1, "kernel", "l1", "exec", "materialized")
                               : json_pack("{s:i,s:i,s:i,s:i,s:i,s:s,s:s}", "in_channels", n,
                                           "out_channels", m, "kernel", K, "H", H, "q", 1,
                                           "kernel_fn", "l1", "exec", "materialized");
            dyn_layer *dl = dyn_layer_create(K == 1 ? "dyn_linear" : "dyn_conv2d", "fit", a, &err);
            json_decref(a);
            dyn_fit_opts fo = dyn_fit_opts_default();
            fo.steps = l1_steps;
            dyn_fit_result fr;
            if (!dl || dyn_fit_layer(dl, w, NULL, DYN_FIT_FIXED, 0, &fo, &fr, &err) ||
                dyn_layer_reconstruct(dl, rec[0][s], &err))
                die("l1 fit", &err);
            dyn_layer_free(dl);
            e[0] = dyn_rel_err(rec[0][s], w, (int64_t)m * nk);
            fl[0] = F;
            secs[0] = dyn_now() - t0;
            /* svd */
            const int rank = dyn_svd_rank_for_floats(m, nk, F);
            if (dyn_svd_reconstruct(w, m, nk, rank, rec[1][s], &e[1], &err)) die("svd", &err);
            fl[1] = (int64_t)rank * (m + nk);
            /* riem: on [m][nk]; a conv also on [Cout·K][Cin·K] (rows (o, r), columns (i, t)),
             * the better of the two by weight error (data-free choice) */
            t0 = dyn_now();
            int q = dyn_riem_q_for_floats(m, nk, D, F), q_rk = 0;
            fl[2] = q > 0 ? dyn_riem_floats(m, nk, q, D) : 0;
            e[2] = -1;
            double e_flat = -1, e_rk = -1;
            ro.seed = 1 + (uint64_t)sel[s];
            if (q > 0) {
                dyn_riem rf;
                if (dyn_riem_fit(w, m, nk, q, D, &ro, &rf, NULL, &err)) die("riem", &err);
                dyn_riem_materialize(&rf, rec[2][s]);
                e[2] = e_flat = dyn_rel_err(rec[2][s], w, (int64_t)m * nk);
                dyn_riem_free(&rf);
            } else {
                memcpy(rec[2][s], rec[1][s], (size_t)m * nk * sizeof(float)); /* unused */
            }
            if (K > 1 && (q_rk = dyn_riem_q_for_floats(m * K, n * K, D, F)) > 0) {
                float *wr = malloc(sizeof(float) * (size_t)m * nk), *hr = malloc(sizeof(float) * (size_t)m * nk);
                dyn_riem_conv_rows(w, m, n, K, 0, wr);
                dyn_riem rf;
                if (dyn_riem_fit(wr, m * K, n * K, q_rk, D, &ro, &rf, NULL, &err)) die("riem", &err);
                dyn_riem_materialize(&rf, hr);
                dyn_riem_free(&rf);
                e_rk = dyn_rel_err(hr, wr, (int64_t)m * nk);
                if (e[2] < 0 || e_rk < e[2]) {
                    dyn_riem_conv_rows(hr, m, n, K, 1, rec[2][s]);
                    e[2] = e_rk;
                    q = q_rk;
                    fl[2] = dyn_riem_floats(m * K, n * K, q_rk, D);
                }
                free(wr);
                free(hr);
            }
            secs[2] = dyn_now() - t0;
            /* int8 / int4 */
            if (dyn_quant_rows(w, m, nk, 8, rec[3][s], &e[3], &err) ||
                dyn_quant_rows(w, m, nk, 4, rec[4][s], &e[4], &err))
                die("quant", &err);
            /* intB: the most bits whose bytes fit in the DyN layer's fp32 bytes */
            const int bits = dyn_quant_bits_for_bytes(m, nk, dyn_float_bytes(F));
            e[5] = -1;
            if (bits > 0 && dyn_quant_rows(w, m, nk, bits, rec[5][s], &e[5], &err)) die("quant", &err);
            if (bits == 0) memcpy(rec[5][s], w, (size_t)m * nk * sizeof(float)); /* none fits */
            sum_err[5] += e[5];
            for (int f = 0; f < 3; f++) sum_err[f] += e[f];
            sum_err[3] += e[3];
            sum_err[4] += e[4];
            printf("%-10s %5d %5d %7lld | %-6s %8.4f %9lld | %-6s %8.4f %9lld | %8.4f %9lld | "
                   "%8.4f %9lld\n",
                   l->name, m, nk, (long long)F, "l1", e[0], (long long)dyn_float_bytes(fl[0]),
                   "svd", e[1], (long long)dyn_float_bytes(fl[1]), e[3],
                   (long long)dyn_quant_bytes(m, nk, 8), e[4], (long long)dyn_quant_bytes(m, nk, 4));
            printf("%-10s %5s %5s %7s | H=%-4d l1 %.0fs  svd rank %d | riem q=%d  %8.4f %9lld  "
                   "(%lld floats, %.0fs)  riem/svd %.3f\n",
                   "", "", "", "", H, secs[0], rank, q, e[2], (long long)dyn_float_bytes(fl[2]),
                   (long long)fl[2], secs[2], e[2] >= 0 && e[1] > 0 ? e[2] / e[1] : -1.0);
            printf("%-10s equal bytes: int%d %8.4f %9lld (DyN %lld)\n", "", bits, e[5],
                   (long long)(bits ? dyn_quant_bytes(m, nk, bits) : 0),
                   (long long)dyn_float_bytes(F));
            if (K > 1)
                printf("%-10s conv layouts: [Cout][Cin·K²] q=%d err %.4f, [Cout·K][Cin·K] q=%d "
                       "err %.4f\n", "", dyn_riem_q_for_floats(m, nk, D, F), e_flat, q_rk, e_rk);
            fflush(stdout);
        }
        printf("mean rel_err over %d layers: l1 %.4f  svd %.4f  riem %.4f  int8 %.4f  int4 %.4f  "
               "intB %.4f  (l1/svd %.3f, riem/svd %.3f)\n",
               ns, sum_err[0] / ns, sum_err[1] / ns, sum_err[2] / ns, sum_err[3] / ns,
               sum_err[4] / ns, sum_err[5] / ns, sum_err[0] / sum_err[1], sum_err[2] / sum_err[1]);
        for (int f = 0; f < NFORMS; f++) {
            dyn_model *mm = NULL;
            if (dyn_model_replace_weights(dense, names, (const float *const *)rec[f], ns, &mm, &err))
                die("replace", &err);
            const double acc = dyn_evaluate(mm, &src, 256, NULL, &err);
            float *lg = dyn_model_logits(mm, &src, src.n, 256, &err);
            if (acc < 0 || !lg) die("evaluate", &err);
            int agree = 0;
            for (int i = 0; i < src.n; i++)
                agree += argmax(lg + (int64_t)i * C, C) == argmax(lg0 + (int64_t)i * C, C);
            printf("model with %d layers as %-5s (ratio %g): test accuracy %.2f%%, top-1 agreement "
                   "with dense %.2f%%\n",
                   ns, form_names[f], ratio, 100 * acc, 100.0 * agree / src.n);
            free(lg);
            dyn_model_free(mm);
            for (int s = 0; s < ns; s++) free(rec[f][s]);
        }
        fflush(stdout);
    }
    free(lg0);
    dyn_data_view_free(&vte);
    dyn_dataset_free(&te);
    dyn_model_free(dense);
    return 0;
}
