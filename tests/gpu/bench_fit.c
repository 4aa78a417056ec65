/* bench_fit.c — conversion time of a ResNet-50-shaped model on the GPU (issue 13's acceptance:
 * ≤ 2 minutes): the data-free l1 fit (dyn_fit_layer, the conversion's defaults: ratio 4, q = 1,
 * SVD + least-squares initialization, 2000 Adam steps, rounding to 1e-3 and the closed-form
 * λ, c) of every convolution of torchvision's ResNet-50 (53 layers; the classifier is kept dense
 * by the conversion's default keep_last), with its Adam steps on the GPU (dyn_fit_opts.device =
 * cuda, one shared context). The weights are random (Kaiming-uniform): the time does not depend
 * on their values, the errors do (printed, not judged). Not a check: it prints one line per
 * layer, the total, and one JSON line per run (device, command) for tests/experiments/RESULTS.md.
 *   bench_fit            every layer
 *   bench_fit --unique   each distinct shape once (the total then counts each shape's time
 *                        as many times as it occurs: an estimate, said so in the JSON)
 *   bench_fit --cpu      the same fits on the CPU (for the ratio; slow on few cores) */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convert/convert.h"
#include "gpu_util.h"

/* out channels, in channels, kernel, how many such layers (torchvision resnet50, stride
 * ignored: it does not change the weight). */
static const int RESNET50_CONVS[][4] = {
    {64, 3, 7, 1},                                                     /* stem */
    {64, 64, 1, 1},   {64, 64, 3, 3},   {256, 64, 1, 4},  {64, 256, 1, 2},   /* layer1 */
    {128, 256, 1, 1}, {128, 128, 3, 4}, {512, 128, 1, 4}, {512, 256, 1, 1},  /* layer2 */
    {128, 512, 1, 3},
    {256, 512, 1, 1}, {256, 256, 3, 6}, {1024, 256, 1, 6}, {1024, 512, 1, 1}, /* layer3 */
    {256, 1024, 1, 5},
    {512, 1024, 1, 1}, {512, 512, 3, 3}, {2048, 512, 1, 3}, {2048, 1024, 1, 1}, /* layer4 */
    {512, 2048, 1, 2},
};

static dyn_layer *make_conv(int m, int n, int K, int H) {
    json_t *a = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:i}", "in_channels", n,
                          "out_channels", m, "kernel", K, "padding", K / 2, "H", H, "q", 1,
                          "kernel_fn", "l1", "bias", 0);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create("dyn_conv2d", "conv", a, &err);
    json_decref(a);
    gt_ok(!l, &err, "dyn_layer_create");
    return l;
}

int main(int argc, char **argv) {
    int unique = 0, cpu = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--unique")) unique = 1;
        else if (!strcmp(argv[i], "--cpu")) cpu = 1;
        else {
            fprintf(stderr, "usage: %s [--unique] [--cpu]\n", argv[0]);
            return 2;
        }
    }
    dyn_cuda_ctx *ctx = cpu ? NULL : gt_ctx("bench_fit");
    dyn_rng rng;
    dyn_rng_seed(&rng, 5);
    dyn_fit_opts o = dyn_fit_opts_default();
    o.device = cpu ? DYN_DEV_CPU : DYN_DEV_CUDA;
    o.cuda = ctx;
    double total = 0, t_all = dyn_now();
    int layers = 0, on_gpu = 0;
    printf("%6s %6s %3s %5s %5s %10s %9s  %s\n", "m", "n", "K", "H", "count", "seconds",
           "rel_err", "where");
    for (size_t k = 0; k < DYN_ARRAY_LEN(RESNET50_CONVS); k++) {
        const int m = RESNET50_CONVS[k][0], n = RESNET50_CONVS[k][1], K = RESNET50_CONVS[k][2];
        const int count = RESNET50_CONVS[k][3], H = dyn_convert_budget_H(m, n, K, 1, 4.0);
        const int64_t tot = (int64_t)m * n * K * K;
        const float lim = 1.0f / sqrtf((float)n * K * K); /* PyTorch's default init bound */
        for (int c = 0; c < (unique ? 1 : count); c++) {
            float *w = gt_rand(&rng, tot, -lim, lim);
            dyn_layer *l = make_conv(m, n, K, H);
            dyn_fit_result res;
            dyn_err err = {0};
            gt_ok(dyn_fit_layer(l, w, NULL, DYN_FIT_FIXED, 0, &o, &res, &err), &err, "fit");
            const double s = res.seconds * (unique ? count : 1);
            total += s;
            layers += unique ? count : 1;
            on_gpu += res.device == DYN_DEV_CUDA;
            printf("%6d %6d %3d %5d %5d %10.2f %9.4f  %s\n", m, n, K, H, unique ? count : 1,
                   res.seconds, res.rel_err, cpu ? "cpu" : res.note);
            fflush(stdout);
            dyn_layer_free(l);
            free(w);
        }
    }
    dyn_cuda_info info = {0};
    dyn_err err = {0};
    if (!cpu) dyn_cuda_device_info(0, &info, &err);
    printf("ResNet-50-shaped conversion (%d conv layers%s): %.1f s of fitting on %s (%.1f s "
           "wall)\n",
           layers, unique ? ", each shape fitted once" : "", total, cpu ? "the CPU" : info.name,
           dyn_now() - t_all);
    printf("{\"bench\": \"fit_resnet50\", \"device\": \"%s\", \"command\": \"%s\", "
           "\"layers\": %d, \"fits_on_gpu\": %d, \"estimate\": %s, \"seconds\": %.2f, "
           "\"steps\": %d, \"ratio\": 4}\n",
           cpu ? "cpu" : info.name, gt_command(argc, argv), layers, on_gpu,
           unique ? "true" : "false", total, o.steps);
    dyn_cuda_ctx_free(ctx);
    return 0;
}
