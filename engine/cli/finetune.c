/* finetune.c — `dyn finetune`: native state training or the paper's Algorithm 1 on a DyN model
 * (engine/convert/finetune.h).
 *
 *   dyn finetune in.dyn --data mnist|fashion|DIR --mode native|unfixed --out out.dyn
 *       [--epochs 5] [--lr 1e-3] [--val 5000] [--ckpt DIR [--resume]] [--fit-steps 300]
 *       [--quant 1e-3] [--no-augment] [--batch 64] [--seed 1] [--threads N] [--json]
 *
 * The validation split is held out of the training split (seeded); the epoch with the best
 * validation accuracy is kept; the test split is evaluated once, at the end (image folders
 * without a test split: no test accuracy).
 */
#include <getopt.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "convert/finetune.h"
#include "convert/options.h"
#include "data.h"
#include "io/model_file.h"

static void usage(void) {
    char *h = dyn_opts_help(DYN_OPT_FINETUNE, 1);
    fprintf(stderr,
            "usage: dyn finetune IN.dyn --data mnist|fashion|DIR --out OUT.dyn [options]\n%s",
            h ? h : "");
    free(h);
}

static void progress(void *ctx, const dyn_ft_progress *p) {
    (void)ctx;
    if (strcmp(p->phase, "train") == 0) {
        cli_progress_line(NULL, &p->train);
    } else if (strcmp(p->phase, "evaluate") == 0) {
        fprintf(stderr, "%sepoch %d/%d  train loss %.4f acc %.2f%%  val %.2f%%  best %.2f%%\n",
                isatty(2) ? "\r" : "", p->epoch, p->epochs, (double)p->train.loss,
                100.0 * p->train.acc, 100.0 * p->train.val_acc, 100.0 * p->best_val_acc);
    } else if (isatty(2)) {
        fprintf(stderr, "\rrefit %d/%d: %.0f%%   ", p->epoch, p->epochs, 100 * p->fit_frac);
    }
    fflush(stderr);
}

int cmd_finetune(int argc, char **argv) {
    dyn_err err = {0};
    json_t *spec = NULL;
    const char *pos[1];
    int npos = 0, help = 0;
    if (dyn_opts_parse_argv(DYN_OPT_FINETUNE, argc, argv, &spec, pos, 1, &npos, &help, &err)) {
        fprintf(stderr, "dyn finetune: %s\n", err.msg);
        usage();
        return 2;
    }
    const char *data = json_string_value(json_object_get(spec, "data"));
    const char *out = json_string_value(json_object_get(spec, "out"));
    if (help || npos != 1 || !data || !out) {
        usage();
        json_decref(spec);
        return help ? 0 : 2;
    }
    dyn_ft_opts o;
    if (dyn_ft_opts_from_spec(spec, &o, &err)) cli_die("finetune", &err);
    o.ckpt_dir = json_string_value(json_object_get(spec, "ckpt"));
    o.resume = json_is_true(json_object_get(spec, "resume"));
    const int nval = (int)json_integer_value(json_object_get(spec, "val"));
    const int limit = (int)json_integer_value(json_object_get(spec, "limit"));
    const int json = json_is_true(json_object_get(spec, "json"));
    if (json_is_integer(json_object_get(spec, "threads")))
        dyn_threads_set((int)json_integer_value(json_object_get(spec, "threads")));
    const char *in_path = pos[0];
    dyn_model *m = dyn_model_load(in_path, &err);
    if (!m) cli_die("finetune", &err);
    dyn_dataset_spec d;
    dyn_dataset tr = {0}, te = {0};
    dyn_data_norm nm; /* the data go through the model's input pipeline (io/dataset.h) */
    if (cli_data_for_model(data, "train", m, &d, &tr, &nm, &err)) cli_die("finetune", &err);
    dyn_err terr = {0};
    const int have_test = dyn_dataset_load_for_model(&d, "test", m, &te, &terr) == 0;
    if (!have_test) fprintf(stderr, "dyn finetune: no test split (%s)\n", terr.msg);
    const float mean = nm.mean[0], sd = nm.std[0];
    dyn_data_view vtr, vva, vte = {0};
    if (dyn_data_split(&tr, DYN_MIN(nval, tr.n - 1), limit, o.seed, mean, sd, &vtr, &vva, &err) ||
        dyn_data_view_set_norm(&vtr, &nm, &err) || dyn_data_view_set_norm(&vva, &nm, &err))
        cli_die("finetune", &err);
    if (have_test && (dyn_data_all(&te, mean, sd, &vte, &err) ||
                      dyn_data_view_set_norm(&vte, &nm, &err)))
        cli_die("finetune", &err);
    dyn_batch_source str = dyn_data_view_source(&vtr), sva = dyn_data_view_source(&vva),
                     ste = dyn_data_view_source(&vte);
    o.progress = progress;
    fprintf(stderr, "dyn finetune: %s, %s, %d epochs, %d train / %d val images, seed %llu%s\n",
            in_path, dyn_ft_mode_name(o.mode), o.epochs, vtr.n, vva.n,
            (unsigned long long)o.seed, o.resume ? " (resuming)" : "");
    dyn_ft_result res;
    int rc = dyn_finetune(m, &str, &sva, &o, &res, &err);
    if (rc && rc != DYN_ECANCEL) cli_die("finetune", &err);
    double test_acc = -1;
    if (have_test && (test_acc = dyn_evaluate(m, &ste, 256, NULL, &err)) < 0)
        cli_die("finetune", &err);
    if (m->info) {
        json_object_set_new(m->info, "finetune",
                            json_pack("{s:s, s:i, s:f, s:i}", "mode", dyn_ft_mode_name(o.mode),
                                      "epochs", o.epochs, "best_val_acc",
                                      (double)res.best_val_acc, "best_epoch", res.best_epoch));
        if (test_acc >= 0) json_object_set_new(m->info, "test_acc", json_real(test_acc));
    }
    if (dyn_model_save(m, out, &err)) cli_die("finetune", &err);
    dyn_layer_stats tot;
    dyn_model_stats(m, NULL, &tot);
    printf("validation: start %.2f%%, best %.2f%% at epoch %d; ", 100.0 * res.start_val_acc,
           100.0 * res.best_val_acc, res.best_epoch);
    if (test_acc >= 0) printf("test accuracy %.2f%% (evaluated once); ", 100 * test_acc);
    printf("%lld stored floats; %.1f s; wrote %s\n", (long long)tot.stored_floats, res.seconds, out);
    if (json) {
        json_t *j = dyn_ft_result_json(&res);
        json_object_set_new(j, "test_acc", test_acc >= 0 ? json_real(test_acc) : json_null());
        json_object_set_new(j, "stored_floats", json_integer(tot.stored_floats));
        json_object_set_new(j, "mode", json_string(dyn_ft_mode_name(o.mode)));
        char *s = json_dumps(j, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(j);
    }
    dyn_ft_result_free(&res);
    dyn_data_view_free(&vtr);
    dyn_data_view_free(&vva);
    dyn_data_view_free(&vte);
    dyn_dataset_free(&tr);
    dyn_dataset_free(&te);
    dyn_model_free(m);
    json_decref(spec);
    if (rc == DYN_ECANCEL) {
        fprintf(stderr, "dyn finetune: %s\n", err.msg);
        return 1;
    }
    return 0;
}
