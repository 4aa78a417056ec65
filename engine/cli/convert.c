/* convert.c — `dyn convert`: a dense model (ONNX or model file) into DyN (engine/convert/).
 *
 *   dyn convert in.onnx|in.dyn out.dyn [--ratio 4 | --rel-err 0.3] [--fit fixed|activation]
 *       [--calib mnist --calib-n 512] [--steps 2000] [--kernel l1] [--q 1] [--quant 1e-3]
 *       [--data mnist] [--report r.json] [--json] [--keep-dense NAME,...] [--keep-first-conv]
 *       [--preprocess-from mnist] [--threads N] [--seed N]
 *
 * Preprocessing: a model file carries its own (preprocess metadata). An ONNX file does not:
 * `--preprocess-from NAME` gives it the normalization of data set NAME ("mnist": (x/255 −
 * 0.1307)/0.3081); without it, the --calib (else --data) set's is used and a note says so.
 * The output model stores it, with the data set's labels when the model has none.
 * Calibration images are a seeded random subset of the *training* split; accuracy (--data) is
 * measured on the test split, before and after.
 */
#include <getopt.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "convert/convert.h"
#include "data.h"
#include "io/model_file.h"
#include "io/onnx.h"

static void usage(void) {
    fprintf(stderr,
            "usage: dyn convert IN.onnx|IN.dyn OUT.dyn [options]\n"
            "  --ratio R              per-layer compression of the weight floats (default 4)\n"
            "  --rel-err E            instead: smallest H whose fit reaches relative error E\n"
            "  --fit fixed|activation data-free, or on calibration inputs (default fixed)\n"
            "  --calib NAME           calibration images (train split): mnist|fashion|DIR\n"
            "  --calib-n N            calibration images (default 512)\n"
            "  --steps N              Adam steps per layer (default 2000)\n"
            "  --lr X                 fitting lr, relative to the state range (default 0.1)\n"
            "  --init svd|lsq|random  initialization (default svd)   --restarts N (default 1)\n"
            "  --fit-algo fast|reference  data-free l1 fit: fused pass and closed-form lambda, c\n"
            "                         (default fast), or the path before issue 9 (to compare)\n"
            "  --sample F             fraction of the rows each fitting step sees (default 0.5;\n"
            "                         layers under 256 rows: all)\n"
            "  --plateau T            stop a fit when its error improved < T in a tenth of the\n"
            "                         steps (from half the steps on; default 0 = off)\n"
            "  --kernel l1|l2|inv     (default l1)   --q Q  state dimensions (default 1)\n"
            "  --exec auto|native|materialized  (default auto)\n"
            "  --quant D              round states down to a D grid (default 1e-3; 0 = off)\n"
            "  --keep-dense A,B       keep these layers dense   --keep-first-conv\n"
            "  --keep-last            keep the last linear/conv (the classifier) dense\n"
            "  --min-saving F         keep a layer dense unless DyN saves F of it (default 0.25)\n"
            "  --data NAME            accuracy before/after on the test split\n"
            "  --eval-split test|val  ... or on a validation split of N training images held out\n"
            "                         (--val N, default 5000; seeded as in `dyn finetune`; the\n"
            "                         calibration images then come from the rest)\n"
            "  --preprocess-from NAME normalization for models without preprocess metadata\n"
            "  --report FILE.json --json --threads N --seed N\n");
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
    dyn_convert_opts o = dyn_convert_opts_default();
    const char *calib = NULL, *data = NULL, *report = NULL, *pp_from = NULL, *fit = "fixed";
    const char *kernel = "l1", *init = "svd";
    char *keep = NULL;
    int calib_n = 512, json = 0, nval = 5000;
    const char *eval_split = "test";
    uint64_t seed = 1;
    static struct option opts[] = {
        {"ratio", 1, 0, 'r'},   {"rel-err", 1, 0, 'e'},  {"fit", 1, 0, 'f'},
        {"calib", 1, 0, 'c'},   {"calib-n", 1, 0, 'n'},  {"steps", 1, 0, 'S'},
        {"lr", 1, 0, 'l'},      {"init", 1, 0, 'i'},     {"restarts", 1, 0, 'R'},
        {"kernel", 1, 0, 'k'},  {"q", 1, 0, 'q'},        {"exec", 1, 0, 'x'},
        {"quant", 1, 0, 'Q'},   {"keep-dense", 1, 0, 'K'}, {"keep-first-conv", 0, 0, 'F'}, {"keep-last", 0, 0, 'T'},
        {"min-saving", 1, 0, 'm'}, {"data", 1, 0, 'd'},  {"preprocess-from", 1, 0, 'p'},
        {"report", 1, 0, 'o'},  {"json", 0, 0, 'j'},     {"threads", 1, 0, 't'},
        {"seed", 1, 0, 's'},    {"help", 0, 0, 'h'},     {"eval-split", 1, 0, 'E'},
        {"val", 1, 0, 'v'},     {"fit-algo", 1, 0, 'A'}, {"sample", 1, 0, 'P'},
        {"plateau", 1, 0, 'L'}, {0, 0, 0, 0}};
    int ch;
    optind = 1;
    while ((ch = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (ch) {
        case 'r': o.ratio = strtod(optarg, NULL); break;
        case 'e': o.rel_err = strtod(optarg, NULL); break;
        case 'f': fit = optarg; break;
        case 'c': calib = optarg; break;
        case 'n': calib_n = atoi(optarg); break;
        case 'S': o.fitopt.steps = atoi(optarg); break;
        case 'l': o.fitopt.lr = strtof(optarg, NULL); break;
        case 'i': init = optarg; break;
        case 'R': o.fitopt.restarts = atoi(optarg); break;
        case 'k': kernel = optarg; break;
        case 'q': o.q = atoi(optarg); break;
        case 'x': o.exec = optarg; break;
        case 'Q': o.fitopt.quant = strtod(optarg, NULL); break;
        case 'K': keep = optarg; break;
        case 'F': o.keep_first_conv = 1; break;
        case 'T': o.keep_last = 1; break;
        case 'm': o.min_saving = strtod(optarg, NULL); break;
        case 'd': data = optarg; break;
        case 'p': pp_from = optarg; break;
        case 'o': report = optarg; break;
        case 'j': json = 1; break;
        case 't': dyn_threads_set(atoi(optarg)); break;
        case 's': seed = strtoull(optarg, NULL, 10); break;
        case 'E': eval_split = optarg; break;
        case 'v': nval = atoi(optarg); break;
        case 'A':
            if (strcmp(optarg, "fast") && strcmp(optarg, "reference")) {
                fprintf(stderr, "dyn convert: --fit-algo fast|reference\n");
                return 2;
            }
            o.fitopt.algo = strcmp(optarg, "reference") == 0;
            break;
        case 'P': o.fitopt.sample = strtod(optarg, NULL); break;
        case 'L': o.fitopt.plateau = strtod(optarg, NULL); break;
        case 'h': usage(); return 0;
        default: usage(); return 2;
        }
    }
    const int on_val = strcmp(eval_split, "val") == 0;
    if (argc - optind != 2 || (!on_val && strcmp(eval_split, "test") != 0) || nval < 1) {
        usage();
        return 2;
    }
    const char *in_path = argv[optind], *out_path = argv[optind + 1];
    dyn_err err = {0};
    if (dyn_fit_mode_parse(fit, &o.fit) || dyn_kernel_parse(kernel, &o.kernel) ||
        dyn_fit_init_parse(init, &o.fitopt.init)) {
        fprintf(stderr, "dyn convert: --fit fixed|activation, --kernel l1|l2|inv, "
                        "--init svd|lsq|random\n");
        return 2;
    }
    o.fitopt.seed = seed;
    if (o.rel_err > 0) o.ratio = 0;
    if (o.fit == DYN_FIT_ACTIVATION && !calib)
        calib = data ? data : NULL;
    if (o.fit == DYN_FIT_ACTIVATION && !calib) {
        fprintf(stderr, "dyn convert: --fit activation needs --calib NAME\n");
        return 2;
    }
    const char *keep_list[64];
    if (keep) {
        for (char *t = strtok(keep, ","); t && o.nkeep < 64; t = strtok(NULL, ","))
            keep_list[o.nkeep++] = t;
        o.keep_dense = keep_list;
    }

    dyn_model *m = ends_with(in_path, ".onnx") ? dyn_onnx_load(in_path, &err)
                                                : dyn_model_load(in_path, &err);
    if (!m) cli_die("convert", &err);

    /* preprocessing and labels */
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
    dyn_data_view vcal = {0}, vrest = {0}, vte = {0}, vtr = {0};
    dyn_batch_source scal, ste;
    dyn_dataset_spec dsp;
    float mean, sd;
    if (data) {
        if (dyn_dataset_resolve(cli_data_root(), data, 0, &dsp, &err) ||
            dyn_dataset_load(&dsp, on_val ? "train" : "test", &m->input, on_val ? &tr_ds : &te_ds,
                             &err))
            cli_die("convert", &err);
        dyn_dataset_norm(&dsp, m, &mean, &sd);
        if (on_val ? dyn_data_split(&tr_ds, DYN_MIN(nval, tr_ds.n - 1), 0, seed, mean, sd, &vtr,
                                    &vte, &err)
                   : dyn_data_all(&te_ds, mean, sd, &vte, &err))
            cli_die("convert", &err);
        ste = dyn_data_view_source(&vte);
        o.eval = &ste;
    }
    if (calib) {
        if (on_val && strcmp(calib, data) == 0) { /* calibrate on the training part only */
            calib_n = DYN_MAX(1, DYN_MIN(calib_n, vtr.n));
            vcal.ds = vtr.ds;
            vcal.idx = malloc((size_t)calib_n * sizeof(int));
            if (!vcal.idx) cli_die("convert", &(dyn_err){DYN_ENOMEM, "out of memory"});
            memcpy(vcal.idx, vtr.idx, (size_t)calib_n * sizeof(int)); /* vtr is shuffled */
            vcal.n = calib_n;
            vcal.mean = vtr.mean;
            vcal.std = vtr.std;
        } else {
            if (dyn_dataset_resolve(cli_data_root(), calib, 0, &dsp, &err) ||
                dyn_dataset_load(&dsp, "train", &m->input, &cal_ds, &err))
                cli_die("convert", &err);
            dyn_dataset_norm(&dsp, m, &mean, &sd);
            calib_n = DYN_MAX(1, DYN_MIN(calib_n, cal_ds.n));
            if (dyn_data_split(&cal_ds, calib_n, 0, seed, mean, sd, &vrest, &vcal, &err))
                cli_die("convert", &err);
        }
        scal = dyn_data_view_source(&vcal);
        o.calib = &scal;
        o.calib_n = calib_n;
    }
    conv_line line = {.tty = isatty(2), .last = -1e9};
    o.progress = progress;
    o.progress_ctx = &line;
    dyn_model *out = NULL;
    dyn_convert_report rep;
    int rc = dyn_convert(m, &o, &out, &rep, &err);
    if (line.tty) fprintf(stderr, "\n");
    if (rc) cli_die("convert", &err);
    if (dyn_model_save(out, out_path, &err)) cli_die("convert", &err);
    char *table = dyn_convert_report_table(&rep);
    json_t *j = dyn_convert_report_json(&rep);
    if (j) {
        json_object_set_new(j, "input", json_string(in_path));
        json_object_set_new(j, "output", json_string(out_path));
    }
    if (table) printf("%s", table);
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
    dyn_convert_report_free(&rep);
    dyn_model_free(out);
    dyn_model_free(m);
    dyn_data_view_free(&vcal);
    dyn_data_view_free(&vrest);
    dyn_data_view_free(&vte);
    dyn_data_view_free(&vtr);
    dyn_dataset_free(&tr_ds);
    dyn_dataset_free(&cal_ds);
    dyn_dataset_free(&te_ds);
    return rc ? 1 : 0;
}
