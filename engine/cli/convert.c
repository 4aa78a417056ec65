/* convert.c — `dyn convert`: a dense model (ONNX or model file) into DyN (engine/convert/).
 *
 *   dyn convert in.onnx|in.dyn out.dyn [--ratio 4 | --rel-err 0.3] [--fit fixed|activation]
 *       [--calib mnist --calib-n 512] [--steps 2000] [--kernel l1] [--q 1] [--quant 1e-3]
 *       [--data mnist] [--report r.json] [--json] [--keep-dense NAME,...] [--keep-first-conv]
 *       [--preprocess-from mnist] [--threads N] [--seed N]
 *
 * Preprocessing: a model file carries its own (preprocess metadata), and so may an ONNX file
 * (metadata_props "dynd.preprocess", io/onnx.h). `--preprocess JSON` sets the model's whole
 * input pipeline (io/image.h: colour, steps, scale, per-channel mean / std, layout), checked
 * against its input shape, replacing what it had. Otherwise, for a model without one,
 * `--preprocess-from NAME` gives it the normalization of data set NAME ("mnist": (x/255 −
 * 0.1307)/0.3081); without it, the --calib (else --data) set's is used and a note says so.
 * The output model stores it, with the data set's labels when the model has none.
 * Calibration and evaluation images go through that pipeline (io/dataset.h
 * dyn_dataset_load_for_model): e.g. 28x28 MNIST digits are padded to 32x32 for a model whose
 * pipeline is {"steps": [{"pad": 2}]}.
 * Calibration images are a seeded random subset of the *training* split; accuracy (--data) is
 * measured on the test split, before and after.
 */
#include <getopt.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cli.h"
#include "convert/convert.h"
#include "convert/options.h"
#include "io/image.h"
#include "data.h"
#include "io/model_file.h"
#include "io/onnx.h"

static void usage(void) {
    char *h = dyn_opts_help(DYN_OPT_CONVERT, 1);
    fprintf(stderr,
            "usage: dyn convert IN.onnx|IN.dyn OUT.dyn [options]\n"
            "Data sets (calib, eval, preprocess_from): mnist, fashion, or a directory (IDX files,\n"
            "or images in one folder per class). Calibration images come from the training\n"
            "split; holdout_n more are held out of the fit to measure agreement.\n%s",
            h ? h : "");
    free(h);
}

typedef struct conv_line {
    int tty;
    double last;
} conv_line;

static void progress(void *ctx, const dyn_convert_progress *p) {
    conv_line *c = ctx;
    if (!c->tty && p->elapsed_s - c->last < 15.0) return;
    if (c->tty && p->elapsed_s - c->last < 0.25 && p->frac < 1) return;
    c->last = p->elapsed_s;
    char el[32], eta[32];
    cli_fmt_time(p->elapsed_s, el, sizeof el);
    cli_fmt_time(p->frac > 0.01 ? p->elapsed_s * (1 - p->frac) / p->frac : 0, eta, sizeof eta);
    fprintf(stderr, "%s%-9s layer %d/%d %-14.14s %5.1f%%  elapsed %s  ETA %s%s",
            c->tty ? "\r" : "", p->phase, p->layer, p->nlayers,
            p->layer_name ? p->layer_name : "", 100 * p->frac, el, eta, c->tty ? "  " : "\n");
    fflush(stderr);
}

static int ends_with(const char *s, const char *suf) {
    size_t a = strlen(s), b = strlen(suf);
    return a >= b && strcmp(s + a - b, suf) == 0;
}

int cmd_convert(int argc, char **argv) {
    dyn_err err = {0};
    json_t *spec = NULL;
    const char *pos[2];
    int npos = 0, help = 0;
    if (dyn_opts_parse_argv(DYN_OPT_CONVERT, argc, argv, &spec, pos, 2, &npos, &help, &err)) {
        fprintf(stderr, "dyn convert: %s\n", err.msg);
        usage();
        return 2;
    }
    if (help) {
        usage();
        json_decref(spec);
        return 0;
    }
    if (npos != 2) {
        usage();
        json_decref(spec);
        return 2;
    }
    dyn_convert_opts o;
    const char *keep_list[64];
    if (dyn_convert_opts_from_spec(spec, &o, keep_list, 64, &err)) cli_die("convert", &err);
    const char *calib = json_string_value(json_object_get(spec, "calib"));
    const char *data = json_string_value(json_object_get(spec, "eval"));
    const char *report = json_string_value(json_object_get(spec, "report"));
    const char *pp_from = json_string_value(json_object_get(spec, "preprocess_from"));
    const json_t *pp_obj = json_object_get(spec, "preprocess");
    const int json = json_is_true(json_object_get(spec, "json"));
    int calib_n = (int)json_integer_value(json_object_get(spec, "calib_n"));
    const int holdout_n = (int)json_integer_value(json_object_get(spec, "holdout_n"));
    const int nval = (int)json_integer_value(json_object_get(spec, "val"));
    const int on_val = !strcmp(json_string_value(json_object_get(spec, "eval_split")), "val");
    const uint64_t seed = o.fitopt.seed;
    if (json_is_integer(json_object_get(spec, "threads")))
        dyn_threads_set((int)json_integer_value(json_object_get(spec, "threads")));
    if (json_is_integer(json_object_get(spec, "eval_n")))
        o.eval_n = (int)json_integer_value(json_object_get(spec, "eval_n"));
    const char *in_path = pos[0], *out_path = pos[1];
    if (o.fit == DYN_FIT_ACTIVATION && !o.fit_auto && !calib) calib = data;
    if (o.fit == DYN_FIT_ACTIVATION && !o.fit_auto && !calib) {
        fprintf(stderr, "dyn convert: --fit activation needs --calib NAME\n");
        return 2;
    }

    dyn_model *m = ends_with(in_path, ".onnx") ? dyn_onnx_load(in_path, &err)
                                                : dyn_model_load(in_path, &err);
    if (!m) cli_die("convert", &err);

    /* preprocessing and labels: --preprocess (the model's whole pipeline; replaces its own),
     * else a data set's for a model without one */
    if (pp_obj) {
        dyn_preprocess chk;
        if (dyn_preprocess_check(pp_obj, &err) || dyn_preprocess_parse(pp_obj, &m->input, &chk, &err))
            cli_die("convert --preprocess", &err);
        json_decref(m->preprocess);
        m->preprocess = json_deep_copy(pp_obj);
    }
    dyn_dataset_spec ds_pp;
    const char *pp_name = pp_from ? pp_from : calib ? calib : data;
    if (!m->preprocess && pp_name) {
        if (dyn_dataset_resolve(cli_data_root(), pp_name, 0, &ds_pp, &err))
            cli_die("convert", &err);
        m->preprocess = dyn_dataset_preprocess_json(&ds_pp, &m->input);
        if (!pp_from)
            fprintf(stderr, "dyn convert: %s has no preprocess metadata; using %s's normalization "
                            "(mean %.4f, std %.4f) — pass --preprocess-from to choose\n",
                    in_path, pp_name, (double)ds_pp.mean, (double)ds_pp.std);
        if (!m->nlabels && dyn_model_outputs(m) == ds_pp.nlabels)
            dyn_model_labels_set(m, ds_pp.labels, ds_pp.nlabels);
    }

    /* evaluation: the test split, or a validation split held out of train (then the
     * calibration images come from the rest of train: both views index one data set) */
    dyn_dataset cal_ds = {0}, te_ds = {0}, tr_ds = {0};
    dyn_data_view vcal = {0}, vhold = {0}, vte = {0}, vtr = {0}, vpool = {0};
    dyn_batch_source scal, ste, shold, spool;
    dyn_dataset_spec dsp;
    dyn_data_norm nm; /* data go through the model's input pipeline (io/dataset.h) */
    if (data) {
        if (cli_data_for_model(data, on_val ? "train" : "test", m, &dsp, on_val ? &tr_ds : &te_ds,
                               &nm, &err))
            cli_die("convert", &err);
        if (on_val ? dyn_data_split(&tr_ds, DYN_MIN(nval, tr_ds.n - 1), 0, seed, nm.mean[0],
                                    nm.std[0], &vtr, &vte, &err) ||
                         dyn_data_view_set_norm(&vtr, &nm, &err)
                   : dyn_data_all(&te_ds, nm.mean[0], nm.std[0], &vte, &err))
            cli_die("convert", &err);
        if (dyn_data_view_set_norm(&vte, &nm, &err)) cli_die("convert", &err);
        ste = dyn_data_view_source(&vte);
        o.eval = &ste;
    }
    if (calib) {
        if (on_val && data && strcmp(calib, data) == 0) { /* the training part only */
            const int hn = DYN_MIN(holdout_n, vtr.n / 4);
            calib_n = DYN_MAX(1, DYN_MIN(calib_n, vtr.n - hn));
            if (dyn_data_view_slice(&vtr, 0, calib_n, &vcal, &err) || /* vtr is shuffled */
                dyn_data_view_slice(&vtr, calib_n, hn, &vhold, &err))
                cli_die("convert", &err);
        } else {
            if (cli_data_for_model(calib, "train", m, &dsp, &cal_ds, &nm, &err) ||
                dyn_data_calib_split(&cal_ds, calib_n, holdout_n, seed, nm.mean[0], nm.std[0],
                                     &vcal, &vhold, &vpool, &err) ||
                dyn_data_view_set_norm(&vcal, &nm, &err) ||
                dyn_data_view_set_norm(&vpool, &nm, &err) ||
                dyn_data_view_set_norm(&vhold, &nm, &err))
                cli_die("convert", &err);
            o.holdout_labeled = dyn_dataset_labeled(&dsp);
        }
        if (on_val && data && strcmp(calib, data) == 0) o.holdout_labeled = 1;
        o.calib_labeled = o.holdout_labeled;
        scal = dyn_data_view_source(&vcal);
        o.calib = &scal;
        o.calib_n = vcal.n;
        if (vpool.n > 0) {
            spool = dyn_data_view_source(&vpool);
            o.distill = &spool;
        }
        if (vhold.n > 0) {
            shold = dyn_data_view_source(&vhold);
            o.holdout = &shold;
            o.holdout_n = vhold.n;
        }
    }
    conv_line line = {.tty = isatty(2), .last = -1e9};
    o.progress = progress;
    o.progress_ctx = &line;
    dyn_model *out = NULL;
    dyn_convert_report rep;
    int rc = dyn_convert(m, &o, &out, &rep, &err);
    if (line.tty) fprintf(stderr, "\n");
    if (rc) {
        char *t = rep.layers ? dyn_convert_report_table(&rep) : NULL;
        if (t) fprintf(stderr, "%s", t);
        free(t);
        cli_die("convert", &err);
    }
    if (dyn_model_save(out, out_path, &err)) cli_die("convert", &err);
    struct stat fst;
    const long long file_bytes = stat(out_path, &fst) == 0 ? (long long)fst.st_size : -1;
    char *table = dyn_convert_report_table(&rep);
    json_t *j = dyn_convert_report_json(&rep);
    if (j) {
        json_object_set_new(j, "input", json_string(in_path));
        json_object_set_new(j, "output", json_string(out_path));
        if (file_bytes >= 0) json_object_set_new(j, "file_bytes", json_integer(file_bytes));
    }
    if (table) printf("%s", table);
    if (file_bytes >= 0)
        printf("wrote %s (%lld bytes)\n", out_path, file_bytes);
    else
        printf("wrote %s\n", out_path);
    if (report && j && json_dump_file(j, report, JSON_INDENT(1)) != 0) {
        fprintf(stderr, "dyn convert: cannot write %s\n", report);
        rc = 1;
    }
    if (json && j) {
        char *s = json_dumps(j, JSON_COMPACT);
        if (s) printf("%s\n", s);
        free(s);
    }
    free(table);
    json_decref(j);
    json_decref(spec);
    dyn_convert_report_free(&rep);
    dyn_model_free(out);
    dyn_model_free(m);
    dyn_data_view_free(&vcal);
    dyn_data_view_free(&vhold);
    dyn_data_view_free(&vpool);
    dyn_data_view_free(&vte);
    dyn_data_view_free(&vtr);
    dyn_dataset_free(&tr_ds);
    dyn_dataset_free(&cal_ds);
    dyn_dataset_free(&te_ds);
    return rc ? 1 : 0;
}
