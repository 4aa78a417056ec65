/* dyn — the engine's offline command line: train, eval, inspect, bench.
 *
 *   dyn train --arch lenet5 [--dyn --fc H,q --conv H,q] --data mnist --epochs 10 --out m.dyn
 *   dyn eval m.dyn --data mnist [--noise 1e-3 --trials 5]
 *   dyn inspect m.dyn            (per layer floats and MACs; file and tensor-data bytes)
 *   dyn bench m.dyn [--batch 1,64]
 *
 * Data sets: "mnist" and "fashion" name data/<name>/ (fetched by `make data`); any other value
 * is a directory holding the four IDX files (train-images-idx3-ubyte, ...; .gz also read).
 * Results go to stdout (a final JSON line with --json); progress to stderr.
 */
#include <getopt.h>
#include <math.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "backend.h"
#include "cli.h"
#include "convert/options.h"
#include "data.h"
#include "io/model_file.h"
#include "zoo.h"

static void usage_train(void) {
    fprintf(stderr,
            "usage: dyn train [options]\n"
            "  --arch lenet5|mlp        architecture (default lenet5)\n"
            "  --dyn                    DyN layers instead of dense\n"
            "  --fc H,q  --conv H,q     DyN copies and dims (default 4,4)\n"
            "  --kernel l1|l2|inv       DyN interaction kernel (default l1)\n"
            "  --exec auto|native|materialized\n"
            "  --dense-last             keep the classifier dense\n"
            "  --bn                     BatchNorm after every conv and hidden fc\n"
            "  --hidden N               MLP width (default 1024)\n"
            "  --data mnist|fashion|DIR (default mnist)\n"
            "  --epochs N --batch N --lr X --wd X --sgd\n"
            "  --lr-final F             cosine decay to lr*F (default 0.01)\n"
            "  --val N                  validation samples held out of train (default 5000)\n"
            "  --limit N                use only N training samples\n"
            "  --no-augment             no random shifts\n"
            "  --device cpu|cuda|cuda:N|auto  where to train (default cpu; layers without a GPU\n"
            "                           kernel train on the CPU)\n"
            "  --seed N --threads N --out FILE --json\n");
}

static int cmd_train(int argc, char **argv) {
    dyn_zoo_opts zo = dyn_zoo_opts_default();
    dyn_train_cfg cfg = dyn_train_cfg_default();
    cfg.epochs = 10;
    cfg.lr_final_frac = 0.01f;
    cfg.augment = 1;
    const char *data = "mnist", *out = NULL, *device = "cpu";
    int nval = 5000, limit = 0, json = 0, sgd = 0;
    float lr = 1e-3f, wd = 0;
    static struct option opts[] = {
        {"arch", 1, 0, 'a'},   {"dyn", 0, 0, 'D'},     {"fc", 1, 0, 'f'},
        {"conv", 1, 0, 'c'},   {"kernel", 1, 0, 'k'},  {"exec", 1, 0, 'x'},
        {"hidden", 1, 0, 'h'}, {"data", 1, 0, 'd'},    {"epochs", 1, 0, 'e'},
        {"batch", 1, 0, 'b'},  {"lr", 1, 0, 'l'},      {"wd", 1, 0, 'w'},
        {"val", 1, 0, 'v'},    {"limit", 1, 0, 'L'},   {"seed", 1, 0, 's'},
        {"out", 1, 0, 'o'},    {"json", 0, 0, 'j'},    {"threads", 1, 0, 't'},
        {"no-augment", 0, 0, 'N'}, {"lr-final", 1, 0, 'F'}, {"dense-last", 0, 0, 'E'},
        {"sgd", 0, 0, 'S'},    {"bn", 0, 0, 'B'},    {"device", 1, 0, 'G'},
        {"help", 0, 0, '?'},    {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'a': zo.arch = optarg; break;
        case 'G': device = optarg; break;
        case 'D': zo.dyn = 1; break;
        case 'f': if (cli_parse_hq(optarg, &zo.fc_H, &zo.fc_q)) goto bad; break;
        case 'c': if (cli_parse_hq(optarg, &zo.conv_H, &zo.conv_q)) goto bad; break;
        case 'k': zo.kernel = optarg; break;
        case 'x': zo.exec = optarg; break;
        case 'h': zo.hidden = atoi(optarg); break;
        case 'd': data = optarg; break;
        case 'e': cfg.epochs = atoi(optarg); break;
        case 'b': cfg.batch = atoi(optarg); break;
        case 'l': lr = strtof(optarg, NULL); break;
        case 'w': wd = strtof(optarg, NULL); break;
        case 'v': nval = atoi(optarg); break;
        case 'L': limit = atoi(optarg); break;
        case 's': cfg.seed = strtoull(optarg, NULL, 10); break;
        case 'o': out = optarg; break;
        case 'j': json = 1; break;
        case 't': dyn_threads_set(atoi(optarg)); break;
        case 'N': cfg.augment = 0; break;
        case 'F': cfg.lr_final_frac = strtof(optarg, NULL); break;
        case 'E': zo.dense_last = 1; break;
        case 'S': sgd = 1; break;
        case 'B': zo.bn = 1; break;
        default: goto bad;
        }
    }
    cfg.optim = dyn_optim_default(sgd ? DYN_OPT_SGD : DYN_OPT_ADAM, lr);
    cfg.optim.weight_decay = wd;
    cfg.progress = cli_progress_line;

    dyn_err err = {0};
    dyn_dataset_spec d;
    dyn_dataset tr, te;
    if (dyn_dataset_resolve(cli_data_root(), data, 0, &d, &err) ||
        dyn_dataset_load_idx(&d, "train", &tr, &err) ||
        dyn_dataset_load_idx(&d, "test", &te, &err))
        cli_die("train", &err);
    zo.channels = tr.c;
    zo.height = tr.h;
    zo.width = tr.w;
    zo.classes = 10;
    dyn_model *m = dyn_zoo_build(&zo, &err);
    if (!m) cli_die("train", &err);
    dyn_model_init(m, cfg.seed);
    /* The device: the model placed for the whole run (training and the test evaluation). */
    const dyn_backend *be = NULL;
    int dev = 0, on_cpu = 0;
    char why[320];
    if (dyn_backend_select(device, &be, &dev, why, sizeof why, &err) ||
        (be && dyn_model_place(m, be, dev, &on_cpu, &err)))
        cli_die("train", &err);
    fprintf(stderr, "dyn train: device %s%s\n", why, on_cpu ? " (some layers on the CPU: above)" : "");
    dyn_data_view vtr, vva, vte;
    if (dyn_data_split(&tr, nval, limit, cfg.seed, d.mean, d.std, &vtr, &vva, &err) ||
        dyn_data_all(&te, d.mean, d.std, &vte, &err))
        cli_die("train", &err);
    dyn_batch_source str = dyn_data_view_source(&vtr), sva = dyn_data_view_source(&vva),
                     ste = dyn_data_view_source(&vte);
    dyn_layer_stats tot;
    dyn_model_stats(m, NULL, &tot);
    fprintf(stderr, "dyn train: %s %s, %lld stored floats, %lld MACs/image, %d train / %d val "
                    "images, seed %llu\n",
            zo.dyn ? "DyN" : "dense", zo.arch, (long long)tot.stored_floats, (long long)tot.macs,
            vtr.n, vva.n, (unsigned long long)cfg.seed);
    dyn_train_result res;
    if (dyn_train(m, &str, nval ? &sva : NULL, &cfg, &res, &err)) cli_die("train", &err);
    double test_loss = 0, test_acc = dyn_evaluate(m, &ste, 256, &test_loss, &err);
    if (test_acc < 0) cli_die("train", &err);
    dyn_model_labels_set(m, d.labels, d.nlabels);
    m->preprocess = dyn_dataset_preprocess_json(&d, &m->input);
    m->info = json_pack("{s:s, s:s, s:b, s:I, s:i, s:f, s:f}", "trained_on", data, "arch", zo.arch, "bn", zo.bn,
                        "seed", (json_int_t)cfg.seed, "epochs", cfg.epochs, "val_acc",
                        (double)res.best_val_acc, "test_acc", test_acc);
    if (out && dyn_model_save(m, out, &err)) cli_die("train", &err);
    dyn_model_stats(m, NULL, &tot);
    printf("test accuracy %.2f%% (loss %.4f), best val %.2f%% at epoch %d, %.1f s, %lld stored "
           "floats, %lld MACs/image\n",
           100 * test_acc, test_loss, 100.0 * res.best_val_acc, res.best_epoch, res.seconds,
           (long long)tot.stored_floats, (long long)tot.macs);
    if (json) {
        json_t *j = json_pack("{s:f, s:f, s:i, s:f, s:I, s:I, s:I, s:f, s:s, s:i}", "test_acc",
                              test_acc,
                              "val_acc", (double)res.best_val_acc, "best_epoch", res.best_epoch,
                              "seconds", res.seconds, "stored_floats",
                              (json_int_t)tot.stored_floats, "memory_floats",
                              (json_int_t)tot.memory_floats, "macs", (json_int_t)tot.macs,
                              "entropy_bits", tot.entropy_bits, "device",
                              dyn_model_device_name(m), "layers_on_cpu", on_cpu);
        char *s = json_dumps(j, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(j);
    }
    dyn_data_view_free(&vtr);
    dyn_data_view_free(&vva);
    dyn_data_view_free(&vte);
    dyn_dataset_free(&tr);
    dyn_dataset_free(&te);
    dyn_model_free(m);
    return 0;
bad:
    usage_train();
    return 2;
}

static int cmd_eval(int argc, char **argv) {
    const char *data = "mnist";
    float noise = 0;
    int trials = 1, json = 0;
    uint64_t seed = 1;
    static struct option opts[] = {{"data", 1, 0, 'd'},   {"noise", 1, 0, 'n'},
                                   {"trials", 1, 0, 'T'}, {"seed", 1, 0, 's'},
                                   {"json", 0, 0, 'j'},   {"threads", 1, 0, 't'},
                                   {0, 0, 0, 0}};
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'd': data = optarg; break;
        case 'n': noise = strtof(optarg, NULL); break;
        case 'T': trials = atoi(optarg); break;
        case 's': seed = strtoull(optarg, NULL, 10); break;
        case 'j': json = 1; break;
        case 't': dyn_threads_set(atoi(optarg)); break;
        default: goto bad;
        }
    }
    if (optind >= argc) goto bad;
    dyn_err err = {0};
    const char *path = argv[optind];
    dyn_dataset_spec d;
    dyn_dataset te;
    dyn_data_norm nm;
    dyn_model *m0 = dyn_model_load(path, &err);
    if (!m0) cli_die("eval", &err);
    /* the test split through the model's input pipeline and normalization (io/dataset.h) */
    if (cli_data_for_model(data, "test", m0, &d, &te, &nm, &err)) cli_die("eval", &err);
    dyn_data_view vte;
    if (dyn_data_all(&te, nm.mean[0], nm.std[0], &vte, &err) ||
        dyn_data_view_set_norm(&vte, &nm, &err))
        cli_die("eval", &err);
    dyn_batch_source ste = dyn_data_view_source(&vte);
    double clean = dyn_evaluate(m0, &ste, 256, NULL, &err);
    if (clean < 0) cli_die("eval", &err);
    printf("%s: test accuracy %.2f%% on %d images\n", path, 100 * clean, te.n);
    double mean = 0, sd = 0;
    if (noise > 0) {
        double accs[256];
        trials = DYN_MAX(1, DYN_MIN(trials, 256));
        for (int t = 0; t < trials; t++) {
            dyn_model *m = dyn_model_load(path, &err);
            if (!m) cli_die("eval", &err);
            dyn_model_perturb(m, noise, seed + (uint64_t)t);
            accs[t] = dyn_evaluate(m, &ste, 256, NULL, &err);
            mean += accs[t] / trials;
            dyn_model_free(m);
        }
        for (int t = 0; t < trials; t++) sd += (accs[t] - mean) * (accs[t] - mean);
        sd = trials > 1 ? sqrt(sd / (trials - 1)) : 0;
        printf("with uniform noise delta=%g on every parameter: %.2f%% +- %.2f (%d trials)\n",
               (double)noise, 100 * mean, 100 * sd, trials);
    }
    if (json) {
        json_t *j = json_pack("{s:f, s:f, s:f, s:f, s:i}", "test_acc", clean, "noise",
                              (double)noise, "noisy_acc", mean, "noisy_std", sd, "trials", trials);
        char *s = json_dumps(j, JSON_COMPACT);
        printf("%s\n", s);
        free(s);
        json_decref(j);
    }
    dyn_data_view_free(&vte);
    dyn_dataset_free(&te);
    dyn_model_free(m0);
    return 0;
bad:
    fprintf(stderr, "usage: dyn eval MODEL [--data mnist|fashion|DIR] [--noise DELTA --trials N "
                    "--seed N] [--json]\n");
    return 2;
}

static int cmd_inspect(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: dyn inspect MODEL\n");
        return 2;
    }
    dyn_err err = {0};
    dyn_model *m = dyn_model_load(argv[1], &err);
    if (!m) cli_die("inspect", &err);
    dyn_layer_stats *st = calloc((size_t)m->nnodes, sizeof *st), tot;
    dyn_model_stats(m, st, &tot);
    printf("%-10s %-12s %-34s %12s %12s %12s %9s\n", "layer", "op", "config", "stored", "memory",
           "MACs", "entropy");
    for (int k = 0; k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer;
        json_t *a = l->ops->attrs(l);
        char *cfgs = json_dumps(a, JSON_COMPACT);
        char ent[16] = "-";
        if (st[k].is_dyn) snprintf(ent, sizeof ent, "%.3f", st[k].entropy_bits);
        printf("%-10s %-12s %-34.34s %12lld %12lld %12lld %9s\n", l->name, l->ops->name,
               cfgs ? cfgs : "", (long long)st[k].stored_floats, (long long)st[k].memory_floats,
               (long long)st[k].macs, ent);
        free(cfgs);
        json_decref(a);
    }
    printf("%-10s %-12s %-34s %12lld %12lld %12lld %9s\n", "total", "", "",
           (long long)tot.stored_floats, (long long)tot.memory_floats, (long long)tot.macs, "");
    if (tot.is_dyn) printf("mean structural entropy of DyN layers: %.3f bits/coordinate\n",
                           tot.entropy_bits);
    dyn_st_file *sf; /* what the file holds (model_file.h: DyN states may be I16 / I8 codes) */
    if (dyn_st_read(argv[1], &sf, &err) == 0) {
        int64_t bytes[DYN_ST_DTYPE_COUNT] = {0}, numel[DYN_ST_DTYPE_COUNT] = {0};
        for (int i = 0; i < sf->ntensors; i++) {
            bytes[sf->tensors[i].dtype] += (int64_t)(sf->tensors[i].end - sf->tensors[i].begin);
            numel[sf->tensors[i].dtype] += sf->tensors[i].numel;
        }
        int64_t total = 0;
        for (int d = 0; d < DYN_ST_DTYPE_COUNT; d++) total += bytes[d];
        printf("file: %zu bytes, tensor data %lld bytes:", sf->size, (long long)total);
        const char *sep = " ";
        for (int d = 0; d < DYN_ST_DTYPE_COUNT; d++)
            if (numel[d]) {
                printf("%s%lld values %s (%lld bytes%s)", sep, (long long)numel[d],
                       dyn_st_dtype_name((dyn_st_dtype)d), (long long)bytes[d],
                       d == DYN_ST_I8 || d == DYN_ST_I16 ? ", DyN state codes" : "");
                sep = ", ";
            }
        printf("\n");
        dyn_st_free(sf);
    }
    printf("labels: %d, input: %lldx%lldx%lld\n", m->nlabels, (long long)m->input.d[0],
           (long long)(m->input.ndim > 1 ? m->input.d[1] : 1),
           (long long)(m->input.ndim > 2 ? m->input.d[2] : 1));
    free(st);
    dyn_model_free(m);
    return 0;
}

static int cmd_bench(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: dyn bench MODEL [BATCH...] [--threads N]\n");
        return 2;
    }
    dyn_err err = {0};
    /* as dynd: DYN_COST=calibrate measures the cost model's constants on this machine before
     * the model's layers decide whether to hold W (engine/dyn/README.md) */
    const char *cm = getenv("DYN_COST");
    dyn_cost_consts cc;
    if (cm && !strcmp(cm, "calibrate") && dyn_cost_calibrate(&cc, &err)) cli_die("bench", &err);
    dyn_cost_get(&cc);
    fprintf(stderr, "cost model (ns, one thread): native %.3g per element-column + %.3g per element; "
            "dense %.3g per MAC, %.3g per weight streamed, %.3g per convolution MAC\n",
            cc.native_ns_per_elem_col, cc.native_ns_per_elem, cc.dense_ns_per_mac,
            cc.dense_ns_per_wfloat, cc.dense_conv_ns_per_mac);
    dyn_model *m = dyn_model_load(argv[1], &err);
    if (!m) cli_die("bench", &err);
    int batches[8] = {1, 64}, nb = 0;
    for (int i = 2; i < argc; i++) {
        char *end;
        if (strcmp(argv[i], "--threads") == 0 && i + 1 < argc) {
            long t = strtol(argv[++i], &end, 10);
            if (*end || t < 1 || t > 1024) {
                fprintf(stderr, "dyn bench: --threads takes a count 1..1024, not '%s'\n", argv[i]);
                return 2;
            }
            dyn_threads_set((int)t);
            continue;
        }
        long b = strtol(argv[i], &end, 10);
        if (*end || b < 1 || b > 65536 || nb == 8) {
            fprintf(stderr, "dyn bench: '%s' is not a batch size 1..65536 (at most 8 of them)\n",
                    argv[i]);
            return 2;
        }
        batches[nb++] = (int)b;
    }
    if (nb == 0) nb = 2;
    printf("%8s %12s %12s\n", "batch", "ms/batch", "images/s");
    for (int i = 0; i < nb; i++) {
        int B = batches[i];
        dyn_exec *e = dyn_exec_new(m, B, 0, &err);
        if (!e) cli_die("bench", &err);
        dyn_rng r;
        dyn_rng_seed(&r, 1);
        for (int64_t j = 0; j < dyn_tensor_numel(&e->input); j++)
            e->input.data[j] = dyn_rng_normal(&r);
        dyn_exec_forward(e, e->input.data, B);
        int reps = 0;
        double t0 = dyn_now(), t;
        do {
            dyn_exec_forward(e, e->input.data, B);
            reps++;
        } while ((t = dyn_now() - t0) < 1.0);
        printf("%8d %12.3f %12.0f\n", B, 1e3 * t / reps, (double)reps * B / t);
        dyn_exec_free(e);
    }
    dyn_model_free(m);
    return 0;
}

/* dyn options [--openapi] [convert|finetune]: the option table (engine/convert/options.h) as
 * help text, or as the properties of api/openapi.yaml's job option schemas. */
static int cmd_options(int argc, char **argv) {
    int openapi = 0, kind = DYN_OPT_CONVERT;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--openapi")) openapi = 1;
        else if (!strcmp(argv[i], "convert")) kind = DYN_OPT_CONVERT;
        else if (!strcmp(argv[i], "finetune")) kind = DYN_OPT_FINETUNE;
        else {
            fprintf(stderr, "usage: dyn options [--openapi] [convert|finetune]\n");
            return 2;
        }
    }
    char *t = openapi ? dyn_opts_openapi(kind) : dyn_opts_help(kind, 0);
    if (!t) return 1;
    fputs(t, stdout);
    free(t);
    return 0;
}

int main(int argc, char **argv) {
    dyn_threads_policy_init(argv); /* engine threads sleep, not spin, while they wait */
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        fprintf(stderr, "usage: dyn <train|eval|inspect|bench|convert|finetune|options> ...   (dyn <cmd> --help)\n"
                        "dyn %s — DyN models: train, evaluate, inspect, benchmark\n",
                DYN_VERSION);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("dyn %s\n", DYN_VERSION);
        return 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "train") == 0) return cmd_train(argc - 1, argv + 1);
    if (strcmp(cmd, "eval") == 0) return cmd_eval(argc - 1, argv + 1);
    if (strcmp(cmd, "inspect") == 0) return cmd_inspect(argc - 1, argv + 1);
    if (strcmp(cmd, "bench") == 0) return cmd_bench(argc - 1, argv + 1);
    if (strcmp(cmd, "convert") == 0) return cmd_convert(argc - 1, argv + 1);
    if (strcmp(cmd, "finetune") == 0) return cmd_finetune(argc - 1, argv + 1);
    if (strcmp(cmd, "options") == 0) return cmd_options(argc - 1, argv + 1);
    fprintf(stderr, "dyn: unknown command '%s' (train, eval, inspect, bench, convert, finetune, options)\n", cmd);
    return 2;
}
