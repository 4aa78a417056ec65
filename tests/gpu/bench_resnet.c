/* bench_resnet.c — inference images/s of a ResNet-50-shaped model on the GPU (issue 13's
 * acceptance): torchvision's ResNet-50 layout (224×224×3 input, bottleneck blocks 3-4-6-3,
 * BatchNorm, 1000 classes) built three ways — dense (conv2d: cuBLAS / the CUDA backend's conv),
 * DyN materialized and DyN native (every convolution a dyn_conv2d with H from the conversion's
 * default ratio 4, q = 1, l1; the classifier dense, as the conversion keeps it) — each placed on
 * the GPU (backend.h dyn_model_place) and run by an inference exec on random images. Random
 * parameters: the time does not depend on their values. Not a check: it prints images/s (the
 * median of 5 timed runs of `--iters` forwards after one warm-up, input upload and output
 * included) and one JSON line per model (device, command).
 *   bench_resnet [--batch B] [--iters N]     (defaults 64, 10)
 *
 * Needs the device executor (engine/backend.c): the Makefile leaves this program out of the GPU
 * benches until it links. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "convert/convert.h"
#include "gpu_util.h"

enum { DENSE, DYN_MAT, DYN_NAT };
static const char *KIND_NAME[] = {"dense", "dyn materialized", "dyn native"};

/* Appends layer `op` named name (attrs: a new JSON reference, consumed) reading node `in` (-1:
 * the model's input); returns its node (exits on failure). */
static int add(dyn_model *m, const char *op, const char *name, json_t *attrs, int in) {
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create(op, name, attrs, &err);
    json_decref(attrs);
    gt_ok(!l, &err, name);
    const int ins[1] = {in};
    const int node = dyn_model_add(m, l, ins, 1, &err);
    gt_ok(node < 0, &err, name);
    return node;
}

/* conv (k×k, stride s, padding k/2, no bias) + BatchNorm (+ ReLU when relu); returns the node. */
static int conv_bn(dyn_model *m, int kind, const char *name, int cin, int cout, int k, int s,
                   int in, int relu) {
    char nm[96];
    json_t *a;
    if (kind == DENSE) {
        a = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i}", "in_channels", cin, "out_channels", cout,
                      "kernel", k, "stride", s, "padding", k / 2, "bias", 0);
    } else {
        const int H = DYN_MAX(1, dyn_convert_budget_H(cout, cin, k, 1, 4.0));
        a = json_pack("{s:i, s:i, s:i, s:i, s:i, s:i, s:i, s:s, s:s, s:i}", "in_channels", cin,
                      "out_channels", cout, "kernel", k, "stride", s, "padding", k / 2, "H", H,
                      "q", 1, "kernel_fn", "l1", "exec",
                      kind == DYN_NAT ? "native" : "materialized", "bias", 0);
    }
    int x = add(m, kind == DENSE ? "conv2d" : "dyn_conv2d", name, a, in);
    snprintf(nm, sizeof nm, "%s_bn", name);
    x = add(m, "batchnorm", nm, json_pack("{s:i}", "channels", cout), x);
    if (!relu) return x;
    snprintf(nm, sizeof nm, "%s_relu", name);
    return add(m, "relu", nm, json_object(), x);
}

static dyn_model *resnet50(int kind) {
    const dyn_shape in = {.ndim = 3, .d = {3, 224, 224}};
    dyn_model *m = dyn_model_new(&in);
    if (!m) exit(1);
    int x = conv_bn(m, kind, "conv1", 3, 64, 7, 2, -1, 1);
    x = add(m, "maxpool2d", "pool1", json_pack("{s:i, s:i, s:i}", "kernel", 3, "stride", 2,
                                               "padding", 1), x);
    static const int blocks[4] = {3, 4, 6, 3};
    int cin = 64;
    for (int st = 0; st < 4; st++) {
        const int w = 64 << st, cout = 4 * w;
        for (int b = 0; b < blocks[st]; b++) {
            const int s = b == 0 && st > 0 ? 2 : 1;
            char nm[64];
            snprintf(nm, sizeof nm, "l%d_%d_c1", st + 1, b);
            int y = conv_bn(m, kind, nm, cin, w, 1, 1, x, 1);
            snprintf(nm, sizeof nm, "l%d_%d_c2", st + 1, b);
            y = conv_bn(m, kind, nm, w, w, 3, s, y, 1);
            snprintf(nm, sizeof nm, "l%d_%d_c3", st + 1, b);
            y = conv_bn(m, kind, nm, w, cout, 1, 1, y, 0);
            int sc = x;
            if (b == 0) {
                snprintf(nm, sizeof nm, "l%d_%d_down", st + 1, b);
                sc = conv_bn(m, kind, nm, cin, cout, 1, s, x, 0);
            }
            dyn_err err = {0};
            snprintf(nm, sizeof nm, "l%d_%d_add", st + 1, b);
            json_t *none = json_object();
            dyn_layer *l = dyn_layer_create("add", nm, none, &err);
            json_decref(none);
            gt_ok(!l, &err, nm);
            const int ins[2] = {y, sc};
            x = dyn_model_add(m, l, ins, 2, &err);
            gt_ok(x < 0, &err, nm);
            snprintf(nm, sizeof nm, "l%d_%d_relu", st + 1, b);
            x = add(m, "relu", nm, json_object(), x);
            cin = cout;
        }
    }
    x = add(m, "globalavgpool", "gap", json_object(), x);
    x = add(m, "flatten", "flatten", json_object(), x);
    add(m, "linear", "fc", json_pack("{s:i, s:i}", "in", 2048, "out", 1000), x);
    return m;
}

static int cmp_double(const void *a, const void *b) {
    const double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    int batch = 64, iters = 10;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--iters") && i + 1 < argc) iters = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [--batch B] [--iters N]\n", argv[0]);
            return 2;
        }
    }
    if (batch < 1 || iters < 1) return 2;
    dyn_cuda_ctx *probe = gt_ctx("bench_resnet"); /* exits without a GPU */
    dyn_cuda_ctx_free(probe);
    dyn_cuda_info info = {0};
    dyn_err err = {0};
    gt_ok(dyn_cuda_device_info(0, &info, &err), &err, "device info");
    dyn_rng rng;
    dyn_rng_seed(&rng, 9);
    float *x = gt_rand(&rng, (int64_t)batch * 3 * 224 * 224, -1, 1);
    for (int kind = DENSE; kind <= DYN_NAT; kind++) {
        dyn_model *m = resnet50(kind);
        dyn_model_init(m, 1);
        int on_cpu = 0;
        gt_ok(dyn_model_place(m, &dyn_backend_cuda, 0, &on_cpu, &err), &err, "dyn_model_place");
        dyn_exec *e = dyn_exec_new(m, batch, 0, &err);
        gt_ok(!e, &err, "dyn_exec_new");
        double ts[5];
        for (int r = -1; r < 5; r++) {
            const double t0 = dyn_now();
            for (int it = 0; it < (r < 0 ? 1 : iters); it++) dyn_exec_forward(e, x, batch);
            if (r >= 0) ts[r] = dyn_now() - t0;
        }
        qsort(ts, 5, sizeof ts[0], cmp_double);
        const double ips = (double)batch * iters / ts[2];
        printf("ResNet-50-shaped, %-16s batch %4d on %s: %9.1f images/s (%d layers on the CPU)\n",
               KIND_NAME[kind], batch, dyn_model_device_name(m), ips, on_cpu);
        printf("{\"bench\": \"resnet50_infer\", \"model\": \"%s\", \"device\": \"%s\", "
               "\"command\": \"%s\", \"batch\": %d, \"images_per_s\": %.1f, \"layers_on_cpu\": "
               "%d}\n",
               KIND_NAME[kind], info.name, gt_command(argc, argv), batch, ips, on_cpu);
        dyn_exec_free(e);
        dyn_model_free(m);
    }
    free(x);
    return 0;
}
