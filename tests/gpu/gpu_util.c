/* gpu_util.c — helpers of the GPU test programs (gpu_util.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpu_util.h"

static int checks, failures;

void gt_ok(int rc, const dyn_err *err, const char *what) {
    if (rc == 0) return;
    fprintf(stderr, "FAIL %s: %s\n", what, err->msg);
    exit(1);
}

dyn_cuda_ctx *gt_ctx(const char *prog) {
    dyn_err err = {0};
    const char *e = getenv("DYN_CUDA_DEVICE");
    int dev = e ? atoi(e) : 0;
    dyn_cuda_info info;
    if (dyn_cuda_device_info(dev, &info, &err)) {
        fprintf(stderr, "%s: no usable CUDA device %d: %s\n", prog, dev, err.msg);
        exit(1);
    }
    printf("%s: device %d: %s (compute %d.%d, %.1f GiB)\n", prog, dev, info.name, info.major,
           info.minor, (double)info.total_bytes / (1 << 30));
    dyn_cuda_ctx *ctx = dyn_cuda_ctx_new(dev, &err);
    if (!ctx) {
        fprintf(stderr, "%s: %s\n", prog, err.msg);
        exit(1);
    }
    return ctx;
}

float *gt_upload(dyn_cuda_ctx *ctx, const float *h, int64_t n) {
    dyn_err err = {0};
    void *d = NULL;
    gt_ok(dyn_cuda_alloc(ctx, (size_t)n * sizeof(float), &d, &err), &err, "device allocation");
    gt_ok(dyn_cuda_upload(ctx, d, h, (size_t)n * sizeof(float), &err), &err, "upload");
    return d;
}

void gt_download(dyn_cuda_ctx *ctx, float *h, const float *d, int64_t n) {
    dyn_err err = {0};
    gt_ok(dyn_cuda_download(ctx, h, d, (size_t)n * sizeof(float), &err), &err, "download");
}

float *gt_rand(dyn_rng *r, int64_t n, float lo, float hi) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of host memory (%lld floats)\n", (long long)n);
        exit(1);
    }
    for (int64_t i = 0; i < n; i++) p[i] = lo + (hi - lo) * dyn_rng_uniform(r);
    return p;
}

int gt_check(const char *what, const char *measure, double value, double tol) {
    int ok = value <= tol;
    checks++;
    failures += !ok;
    printf("%s %s: %s %.3g (tolerance %.3g)\n", ok ? "PASS" : "FAIL", what, measure, value, tol);
    return ok;
}

int gt_finish(const char *prog) {
    printf("%s: %d of %d checks passed\n", prog, checks - failures, checks);
    return failures || !checks ? 1 : 0;
}

double gt_rel_err(const float *a, const float *b, int64_t n) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double d = (double)a[i] - (double)b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    return sqrt(num) / fmax(sqrt(den), 1e-30);
}

double gt_rel_delta(const float *a, const float *b, const float *a0, int64_t n, double floor) {
    double num = 0.0, den = 0.0;
    for (int64_t i = 0; i < n; i++) {
        double da = (double)a[i] - a0[i], db = (double)b[i] - a0[i];
        num += (da - db) * (da - db);
        den += db * db;
    }
    return sqrt(num) / fmax(fmax(sqrt(den), floor), 1e-30);
}

const char *gt_command(int argc, char **argv) {
    static char buf[1024];
    size_t n = 0;
    buf[0] = 0;
    for (int i = 0; i < argc && n + 1 < sizeof buf; i++) {
        if (i) buf[n++] = ' ';
        for (const char *c = argv[i]; *c && n + 1 < sizeof buf; c++)
            buf[n++] = *c == '"' || *c == '\\' || (unsigned char)*c < 0x20 ? '_' : *c;
        buf[n] = 0;
    }
    return buf;
}
