/* bench_train.c — DyN LeNet-5 training epoch time on the GPU against the CPU (issue 13's
 * acceptance: ≥ 10× faster than the 2-core CPU). Not a check: it prints. The model is the zoo's
 * DyN LeNet-5 (`dyn train --arch lenet5 --dyn`'s defaults: l1, H = 4, q = 4, exec auto), one
 * epoch of MNIST's training split (55,000 images after 5,000 held out; Adam 1e-3, batch 64, no
 * augmentation), trained by dyn_train: once on the CPU with --cpu-threads threads (default 2:
 * the 2-core CPU the target names, emulated on this machine's cores), once placed on the GPU
 * (backend.h dyn_model_place, then dyn_train as usual). Both start from the same
 * initialization; the validation accuracy after the epoch is printed next to each time.
 *   bench_train [--cpu-threads N] [--epochs E] [--images N]
 * (data from $DYN_DATA_DIR, default data/; --images: the first N training images, default all)
 * One JSON line per run (device, command) at the end.
 *
 * Needs the device executor (engine/backend.c: dyn_model_place): the Makefile leaves this
 * program out of the GPU benches until it links. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "data.h"
#include "gpu_util.h"
#include "io/dataset.h"
#include "zoo.h"

/* One training run of a fresh DyN LeNet-5 (seed 1); placed on the GPU when gpu. Returns the
 * seconds of dyn_train and the validation accuracy in *acc. */
static double run(int gpu, int epochs, const dyn_batch_source *tr, const dyn_batch_source *va,
                  double *acc) {
    dyn_err err = {0};
    dyn_zoo_opts zo = dyn_zoo_opts_default();
    zo.dyn = 1;
    dyn_model *m = dyn_zoo_build(&zo, &err);
    gt_ok(!m, &err, "dyn_zoo_build");
    dyn_model_init(m, 1);
    gt_ok(dyn_model_prepare(m, &err), &err, "dyn_model_prepare");
    if (gpu) {
        int on_cpu = 0;
        gt_ok(dyn_model_place(m, &dyn_backend_cuda, 0, &on_cpu, &err), &err, "dyn_model_place");
        printf("placed on %s (%d layers left on the CPU)\n", dyn_model_device_name(m), on_cpu);
    }
    dyn_train_cfg cfg = dyn_train_cfg_default();
    cfg.epochs = epochs;
    cfg.batch = 64;
    cfg.optim = dyn_optim_default(DYN_OPT_ADAM, 1e-3f);
    cfg.augment = 0;
    dyn_train_result res;
    gt_ok(dyn_train(m, tr, va, &cfg, &res, &err), &err, "dyn_train");
    *acc = res.best_val_acc;
    dyn_model_free(m);
    return res.seconds;
}

int main(int argc, char **argv) {
    int threads = 2, epochs = 1, limit = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--cpu-threads") && i + 1 < argc) threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--epochs") && i + 1 < argc) epochs = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--images") && i + 1 < argc) limit = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--cpu-threads N] [--epochs E] [--images N]\n", argv[0]);
            return 2;
        }
    }
    dyn_cuda_ctx *probe = gt_ctx("bench_train"); /* exits without a GPU */
    dyn_cuda_ctx_free(probe);
    dyn_cuda_info info = {0};
    dyn_err err = {0};
    gt_ok(dyn_cuda_device_info(0, &info, &err), &err, "device info");
    const char *root = getenv("DYN_DATA_DIR") ? getenv("DYN_DATA_DIR") : "data";
    dyn_dataset_spec d;
    dyn_dataset tr;
    gt_ok(dyn_dataset_resolve(root, "mnist", 0, &d, &err), &err, "MNIST (make data)");
    gt_ok(dyn_dataset_load_idx(&d, "train", &tr, &err), &err, "MNIST train split");
    dyn_data_view vtr, vva;
    gt_ok(dyn_data_split(&tr, 5000, limit, 1, d.mean, d.std, &vtr, &vva, &err), &err, "split");
    dyn_batch_source str = dyn_data_view_source(&vtr), sva = dyn_data_view_source(&vva);

    double acc_c = 0, acc_g = 0;
    dyn_threads_set(threads);
    const double tc = run(0, epochs, &str, &sva, &acc_c);
    dyn_threads_set(0);
    const double tg = run(1, epochs, &str, &sva, &acc_g);
    printf("DyN LeNet-5, %d epoch(s) of %d MNIST images, batch 64:\n", epochs, vtr.n);
    printf("  CPU (%d threads): %8.2f s  val acc %.4f\n", threads, tc, acc_c);
    printf("  GPU (%s): %8.2f s  val acc %.4f   speedup %.1fx\n", info.name, tg, acc_g, tc / tg);
    for (int k = 0; k < 2; k++)
        printf("{\"bench\": \"train_lenet5_dyn\", \"device\": \"%s\", \"command\": \"%s\", "
               "\"cpu_threads\": %d, \"epochs\": %d, \"images\": %d, \"seconds\": %.3f, "
               "\"val_acc\": %.4f}\n",
               k ? info.name : "cpu", gt_command(argc, argv), k ? 0 : threads, epochs, vtr.n,
               k ? tg : tc, k ? acc_g : acc_c);
    dyn_data_view_free(&vtr), dyn_data_view_free(&vva);
    dyn_dataset_free(&tr);
    return 0;
}
