/* riem_convert.c — a conversion's layers as "riem" layers, saved and reloaded (CONVERT.md (d)).
 * Build: `make build/riem_convert`. Usage:
 *   riem_convert MODEL(.dyn|.onnx) DATA(mnist|fashion) RATIO RIEM_STEPS D OUT.dyn
 * dyn_convert (data-free, keep the classifier dense, 10 l1 steps: only its plan and report are
 * used), then dyn_riem_convert at each converted layer's DyN floats; prints per-layer errors,
 * stored floats, the file size and the test accuracy before saving and after reloading. Run
 * with OMP_NUM_THREADS=1. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "convert/fit_riem.h"
#include "data.h"
#include "io/dataset.h"
#include "io/model_file.h"
#include "io/onnx.h"

static void die(const char *what, const dyn_err *e) {
    fprintf(stderr, "riem_convert: %s: %s\n", what, e->msg);
    exit(1);
}

int main(int argc, char **argv) {
    if (argc < 7) {
        fprintf(stderr, "usage: riem_convert MODEL DATA RATIO RIEM_STEPS D OUT.dyn\n");
        return 2;
    }
    dyn_err err = {0};
    const size_t pl = strlen(argv[1]);
    dyn_model *dense = pl > 5 && strcmp(argv[1] + pl - 5, ".onnx") == 0
                           ? dyn_onnx_load(argv[1], &err)
                           : dyn_model_load(argv[1], &err);
    if (!dense || dyn_model_prepare(dense, &err)) die("model", &err);
    dyn_dataset_spec ds;
    dyn_dataset te;
    const char *root = getenv("DYN_DATA_DIR") ? getenv("DYN_DATA_DIR") : "data";
    if (dyn_dataset_resolve(root, argv[2], 0, &ds, &err) ||
        dyn_dataset_load_idx(&ds, "test", &te, &err))
        die("data", &err);
    dyn_data_view vte;
    if (dyn_data_all(&te, ds.mean, ds.std, &vte, &err)) die("data", &err);
    dyn_batch_source src = dyn_data_view_source(&vte);
    dyn_convert_opts co = dyn_convert_opts_default();
    co.ratio = atof(argv[3]);
    co.keep_last = 1;
    co.fitopt.steps = 10;
    dyn_model *l1 = NULL;
    dyn_convert_report rep;
    if (dyn_convert(dense, &co, &l1, &rep, &err)) die("convert", &err);
    dyn_model_free(l1);
    dyn_riem_opts ro = dyn_riem_opts_default();
    ro.steps = atoi(argv[4]);
    ro.restarts = 1;
    ro.lr = 0.03f;
    const int D = atoi(argv[5]);
    double *e = calloc((size_t)rep.nlayers, sizeof(double));
    dyn_model *rm = NULL;
    const double t0 = dyn_now();
    if (dyn_riem_convert(dense, &rep, D, &ro, e, &rm, &err)) die("riem", &err);
    const double secs = dyn_now() - t0;
    dyn_layer_stats *st = calloc((size_t)rm->nnodes, sizeof *st), tot, tot0;
    dyn_model_stats(rm, st, &tot);
    dyn_model_stats(dense, NULL, &tot0);
    for (int k = 0; k < rep.nlayers; k++)
        if (rep.layers[k].converted)
            printf("%-10s -> %-6s rel_err %.4f  (SVD at equal floats %.4f)  %lld -> %lld stored floats\n",
                   rep.layers[k].name, rm->nodes[k].layer->ops->name, e[k],
                   rep.layers[k].svd_rel_err, (long long)rep.layers[k].floats_before,
                   (long long)st[k].stored_floats);
    const double acc0 = dyn_evaluate(dense, &src, 256, NULL, &err);
    const double acc1 = dyn_evaluate(rm, &src, 256, NULL, &err);
    if (dyn_model_save(rm, argv[6], &err)) die("save", &err);
    dyn_model *lm = dyn_model_load(argv[6], &err);
    if (!lm) die("load", &err);
    const double acc2 = dyn_evaluate(lm, &src, 256, NULL, &err);
    struct stat sb;
    stat(argv[6], &sb);
    printf("model: %lld -> %lld stored floats (%.2fx), %s %lld bytes; fits %.0f s\n"
           "test accuracy: dense %.2f%%, riem %.2f%%, riem reloaded %.2f%%\n",
           (long long)tot0.stored_floats, (long long)tot.stored_floats,
           (double)tot0.stored_floats / tot.stored_floats, argv[6], (long long)sb.st_size, secs,
           100 * acc0, 100 * acc1, 100 * acc2);
    free(e);
    free(st);
    dyn_model_free(lm);
    dyn_model_free(rm);
    dyn_convert_report_free(&rep);
    dyn_data_view_free(&vte);
    dyn_dataset_free(&te);
    dyn_model_free(dense);
    return 0;
}
