/* backend.c — the CUDA backend's table (engine/backend.h): buffers from the context's pool,
 * copies and kernels on its stream, and the op kernels of engine/cuda/op_*.c. Compiled in every
 * build: without CUDA the dyn_cuda_* functions are the stubs, so ctx_new fails with DYN_EUNSUP
 * and nothing else is reached. */
#include "../backend.h"
#include "dyn_cuda.h"
#include "dyn_cuda_util.h"
#include "op_cnn.h"
#include "op_dyn.h"
#include "op_tf.h"

#include <stdio.h>
#include <string.h>

static int be_ctx_new(int dev, void **ctx, dyn_err *err) {
    dyn_cuda_ctx *c = dyn_cuda_ctx_new(dev, err);
    *ctx = c;
    return c ? 0 : (err && err->code ? err->code : DYN_EIO);
}

static void be_ctx_free(void *ctx) { dyn_cuda_ctx_free(ctx); }

static int be_alloc(void *ctx, size_t bytes, void **p, dyn_err *err) {
    return dyn_cuda_alloc(ctx, bytes, p, err);
}

static void be_free(void *ctx, void *p) { dyn_cuda_free(ctx, p); }

static int be_upload(void *ctx, void *dst, const void *src, size_t bytes, dyn_err *err) {
    return dyn_cuda_upload(ctx, dst, src, bytes, err);
}

static int be_download(void *ctx, void *dst, const void *src, size_t bytes, dyn_err *err) {
    return dyn_cuda_download(ctx, dst, src, bytes, err);
}

static int be_copy(void *ctx, void *dst, const void *src, size_t bytes, dyn_err *err) {
    return dyn_cuda_copy(ctx, dst, src, bytes, err);
}

static int be_fill(void *ctx, float *p, float v, int64_t n, dyn_err *err) {
    return dyn_cuda_fill(ctx, p, v, n, err);
}

static int be_axpy(void *ctx, float *y, const float *x, float a, int64_t n, dyn_err *err) {
    return dyn_cuda_axpy(ctx, y, x, a, n, err);
}

static int be_optim(void *ctx, const dyn_optim_update *u, float *w, const float *g, float *m,
                    float *v, int64_t n, dyn_err *err) {
    return dyn_cuda_optim(ctx, u, w, g, m, v, n, err);
}

static int be_host_alloc(size_t bytes, void **p, dyn_err *err) {
    return dyn_cuda_host_alloc(bytes, p, err);
}

static void be_host_free(void *p) { dyn_cuda_host_free(p); }

static int be_sync(void *ctx, dyn_err *err) { return dyn_cuda_sync(ctx, err); }

static void be_mem(void *ctx, size_t *reserved, size_t *in_use) {
    dyn_cuda_pool_stats st;
    dyn_cuda_pool_get(ctx, &st);
    *reserved = st.reserved;
    *in_use = st.in_use;
}

const dyn_backend dyn_backend_cuda = {
    .name = "cuda",
    .device = DYN_DEV_CUDA,
    .ctx_new = be_ctx_new,
    .ctx_free = be_ctx_free,
    .alloc = be_alloc,
    .free = be_free,
    .upload = be_upload,
    .download = be_download,
    .copy = be_copy,
    .fill = be_fill,
    .axpy = be_axpy,
    .optim = be_optim,
    .sync = be_sync,
    .host_alloc = be_host_alloc,
    .host_free = be_host_free,
    .mem = be_mem,
    /* The op kernels of engine/cuda/op_*.c, by dyn_op; an op missing here runs on the CPU. */
    .ops =
        {
            /* convolutional networks (op_cnn.c) */
            [DYN_OP_CONV2D] = &dyn_cuda_op_conv2d,
            [DYN_OP_RELU] = &dyn_cuda_op_relu,
            [DYN_OP_FLATTEN] = &dyn_cuda_op_flatten,
            [DYN_OP_ADD] = &dyn_cuda_op_add,
            [DYN_OP_MAXPOOL2D] = &dyn_cuda_op_maxpool2d,
            [DYN_OP_AVGPOOL2D] = &dyn_cuda_op_avgpool2d,
            [DYN_OP_GLOBALAVGPOOL] = &dyn_cuda_op_globalavgpool,
            [DYN_OP_LINEAR] = &dyn_cuda_op_linear,
            [DYN_OP_BATCHNORM] = &dyn_cuda_op_batchnorm,
            [DYN_OP_DYN_CONV2D] = &dyn_cuda_op_dyn_conv2d,
            /* DyN linear (op_dyn.c) */
            [DYN_OP_DYN_LINEAR] = &dyn_cuda_op_dyn_linear,
            /* elementwise and transformer ops (op_tf.c) */
            [DYN_OP_MUL] = &dyn_cuda_op_mul,
            [DYN_OP_SUB] = &dyn_cuda_op_sub,
            [DYN_OP_DIV] = &dyn_cuda_op_div,
            [DYN_OP_SIGMOID] = &dyn_cuda_op_sigmoid,
            [DYN_OP_CLIP] = &dyn_cuda_op_clip,
            [DYN_OP_ERF] = &dyn_cuda_op_erf,
            [DYN_OP_SQRT] = &dyn_cuda_op_sqrt,
            [DYN_OP_POW] = &dyn_cuda_op_pow,
            [DYN_OP_SCALE] = &dyn_cuda_op_scale,
            [DYN_OP_SOFTMAX] = &dyn_cuda_op_softmax,
            [DYN_OP_LAYERNORM] = &dyn_cuda_op_layernorm,
            [DYN_OP_MATMUL] = &dyn_cuda_op_matmul,
            [DYN_OP_PERMUTE] = &dyn_cuda_op_permute,
            [DYN_OP_CONCAT] = &dyn_cuda_op_concat,
            [DYN_OP_REDUCE_MEAN] = &dyn_cuda_op_reduce_mean,
            [DYN_OP_AFFINE] = &dyn_cuda_op_affine,
            [DYN_OP_CAT_PARAM] = &dyn_cuda_op_cat_param,
        },
};

int dyn_cuda_backend_usable(void) {
    int count = 0;
    return dyn_cuda_device_count(&count, NULL) == 0 && count > 0;
}

/* "cuda:0 (NVIDIA H200, 139 GiB)" into why. */
static int describe(int dev, char *why, size_t n, dyn_err *err) {
    dyn_cuda_info info;
    int rc = dyn_cuda_device_info(dev, &info, err);
    if (rc) return rc;
    if (why)
        snprintf(why, n, "cuda:%d (%s, %.0f GiB, compute capability %d.%d)", dev, info.name,
                 (double)info.total_bytes / (1024.0 * 1024 * 1024), info.major, info.minor);
    return 0;
}

int dyn_backend_select(const char *setting, const dyn_backend **be, int *dev, char *why,
                       size_t n, dyn_err *err) {
    *be = NULL;
    *dev = 0;
    if (why && n) why[0] = 0;
    if (!setting || !strcmp(setting, "cpu")) {
        if (why) snprintf(why, n, "cpu");
        return 0;
    }
    if (!strcmp(setting, "auto")) {
        dyn_err e = {0};
        int count = 0;
        if (dyn_cuda_device_count(&count, &e) == 0 && count > 0 && describe(0, why, n, &e) == 0) {
            *be = &dyn_backend_cuda;
            return 0;
        }
        if (why) snprintf(why, n, "cpu (device auto: %s; running on the CPU)",
                          e.msg[0] ? e.msg : "no CUDA device");
        return 0;
    }
    int d = 0;
    if (strncmp(setting, "cuda", 4) != 0 ||
        (setting[4] && (setting[4] != ':' || sscanf(setting + 5, "%d", &d) != 1 || d < 0)))
        return dyn_err_set(err, DYN_EINVAL,
                           "device '%s': expected cpu, cuda, cuda:N (a GPU number) or auto",
                           setting);
    int count = 0;
    int rc = dyn_cuda_device_count(&count, err);
    if (rc) return dyn_err_prefix(err, "device %s", setting);
    if (d >= count)
        return dyn_err_set(err, DYN_EUNSUP, "device %s: this machine has %d CUDA device%s",
                           setting, count, count == 1 ? "" : "s");
    if ((rc = describe(d, why, n, err))) return rc;
    *be = &dyn_backend_cuda;
    *dev = d;
    return 0;
}
