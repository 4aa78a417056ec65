/* test_backend.c — the executor's device path (engine/backend.c) against the CPU path, through
 * a backend written here: "hostdev", whose "device" memory is host memory it hands out and
 * counts, with its own naive kernels for `linear` and `add` and none for `relu` (so ReLU layers
 * stay on the CPU and run between device layers: the fallback, both ways).
 *
 * The model: x[8] -> linear a (8->16) -> relu r1 -> linear b (16->16) -> add s (r1 + b) -> relu
 * r2 -> linear c (16->4): r1 feeds two consumers (gradient sum on the device, one of the two
 * written from a CPU node's host gradient). A copy of it on the CPU and one placed on hostdev
 * train side by side (Adam, then SGD); outputs and parameters must agree to float rounding
 * (the kernels sum in another order: tolerance 1e-5 relative). Also: what stays on the CPU,
 * host buffers only where the CPU needs them, a failing kernel reported by forward (NULL and a
 * message) and backward, and every device allocation returned by dyn_model_unplace /
 * dyn_exec_free. */
#include <math.h>
#include <string.h>

#include "backend.h"
#include "testutil.h"
#include "train.h"

/* ---- the hostdev backend ---- */

static int64_t live_allocs; /* blocks handed out and not freed */
static int fail_forward;    /* makes linear's forward fail (a device error) */

static int hd_ctx_new(int dev, void **ctx, dyn_err *err) {
    if (dev != 0) return dyn_err_set(err, DYN_EUNSUP, "hostdev has one device, 0");
    static int token;
    *ctx = &token;
    return 0;
}
static void hd_ctx_free(void *ctx) { (void)ctx; }
static int hd_alloc(void *ctx, size_t bytes, void **p, dyn_err *err) {
    (void)ctx;
    *p = dyn_alloc(bytes);
    if (!*p) return dyn_err_set(err, DYN_ENOMEM, "hostdev: out of memory");
    memset(*p, 0xff, bytes); /* undefined contents: NaNs */
    live_allocs++;
    return 0;
}
static void hd_free(void *ctx, void *p) {
    (void)ctx;
    if (!p) return;
    live_allocs--;
    dyn_free(p);
}
static int hd_copy(void *ctx, void *dst, const void *src, size_t bytes, dyn_err *err) {
    (void)ctx, (void)err;
    memcpy(dst, src, bytes);
    return 0;
}
static int hd_fill(void *ctx, float *p, float v, int64_t n, dyn_err *err) {
    (void)ctx, (void)err;
    for (int64_t i = 0; i < n; i++) p[i] = v;
    return 0;
}
static int hd_axpy(void *ctx, float *y, const float *x, float a, int64_t n, dyn_err *err) {
    (void)ctx, (void)err;
    for (int64_t i = 0; i < n; i++) y[i] += a * x[i];
    return 0;
}
static int hd_optim(void *ctx, const dyn_optim_update *u, float *w, const float *g, float *m,
                    float *v, int64_t n, dyn_err *err) {
    (void)ctx, (void)err;
    for (int64_t i = 0; i < n; i++) {
        if (u->adam) {
            m[i] = u->b1 * m[i] + (1 - u->b1) * g[i];
            v[i] = u->b2 * v[i] + (1 - u->b2) * g[i] * g[i];
            w[i] -= u->lr * ((m[i] / u->bc1) / (sqrtf(v[i] / u->bc2) + u->eps) + u->wd * w[i]);
        } else {
            m[i] = u->mu * m[i] + g[i] + u->wd * w[i];
            w[i] -= u->lr * m[i];
        }
    }
    return 0;
}
static int64_t live_pinned;
static int hd_host_alloc(size_t bytes, void **p, dyn_err *err) {
    *p = dyn_alloc(bytes);
    if (!*p) return dyn_err_set(err, DYN_ENOMEM, "hostdev: out of memory");
    live_pinned++;
    return 0;
}
static void hd_host_free(void *p) {
    live_pinned--;
    dyn_free(p);
}
static int hd_sync(void *ctx, dyn_err *err) {
    (void)ctx, (void)err;
    return 0;
}

/* linear: y = x Wᵀ + b (naive, in double). */
static int hd_linear_fwd(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y,
                         float *scratch, int training, dyn_err *err) {
    (void)ctx, (void)scratch, (void)training;
    ck_assert_int_ne(x[0].device, DYN_DEV_CPU);
    ck_assert_int_ne(y->device, DYN_DEV_CPU);
    if (fail_forward) return dyn_err_set(err, DYN_EIO, "hostdev: simulated kernel failure");
    const int64_t N = x[0].shape[0], in = x[0].shape[1], out = y->shape[1];
    const float *w = l->params[0].dval, *b = l->nparams > 1 ? l->params[1].dval : NULL;
    for (int64_t n = 0; n < N; n++)
        for (int64_t o = 0; o < out; o++) {
            double s = b ? b[o] : 0;
            for (int64_t i = 0; i < in; i++) s += (double)x[0].data[n * in + i] * w[o * in + i];
            y->data[n * out + o] = (float)s;
        }
    return 0;
}
static int hd_linear_bwd(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                         const dyn_tensor *dy, dyn_tensor *dx, float *scratch, dyn_err *err) {
    (void)ctx, (void)y, (void)scratch, (void)err;
    const int64_t N = x[0].shape[0], in = x[0].shape[1], out = dy->shape[1];
    const float *w = l->params[0].dval;
    float *dw = l->params[0].dgrad, *db = l->nparams > 1 ? l->params[1].dgrad : NULL;
    for (int64_t o = 0; o < out; o++) {
        double sb = 0;
        for (int64_t n = 0; n < N; n++) sb += dy->data[n * out + o];
        if (db) db[o] += (float)sb;
        for (int64_t i = 0; i < in; i++) {
            double s = 0;
            for (int64_t n = 0; n < N; n++) s += (double)dy->data[n * out + o] * x[0].data[n * in + i];
            dw[o * in + i] += (float)s;
        }
    }
    if (dx[0].data)
        for (int64_t n = 0; n < N; n++)
            for (int64_t i = 0; i < in; i++) {
                double s = 0;
                for (int64_t o = 0; o < out; o++) s += (double)dy->data[n * out + o] * w[o * in + i];
                dx[0].data[n * in + i] = (float)s;
            }
    return 0;
}
static int hd_add_fwd(void *ctx, dyn_layer *l, const dyn_tensor *x, dyn_tensor *y,
                      float *scratch, int training, dyn_err *err) {
    (void)ctx, (void)l, (void)scratch, (void)training, (void)err;
    int64_t n = dyn_tensor_numel(y);
    for (int64_t i = 0; i < n; i++) y->data[i] = x[0].data[i] + x[1].data[i];
    return 0;
}
static int hd_add_bwd(void *ctx, dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                      const dyn_tensor *dy, dyn_tensor *dx, float *scratch, dyn_err *err) {
    (void)ctx, (void)l, (void)x, (void)y, (void)scratch, (void)err;
    int64_t n = dyn_tensor_numel(dy);
    for (int k = 0; k < 2; k++)
        if (dx[k].data) memcpy(dx[k].data, dy->data, (size_t)n * sizeof(float));
    return 0;
}
/* Same shapes only (no broadcasting in this backend). */
static int hd_add_supports(const dyn_layer *l, const dyn_shape *in, int training) {
    (void)l, (void)training;
    return dyn_shape_eq(&in[0], &in[1]);
}

static const dyn_backend_op hd_linear = {.forward = hd_linear_fwd, .backward = hd_linear_bwd};
static const dyn_backend_op hd_add = {
    .supports = hd_add_supports, .forward = hd_add_fwd, .backward = hd_add_bwd};

static const dyn_backend hostdev = {
    .name = "hostdev",
    .device = 7,
    .ctx_new = hd_ctx_new,
    .ctx_free = hd_ctx_free,
    .alloc = hd_alloc,
    .free = hd_free,
    .upload = hd_copy,
    .download = hd_copy,
    .copy = hd_copy,
    .fill = hd_fill,
    .axpy = hd_axpy,
    .optim = hd_optim,
    .sync = hd_sync,
    .host_alloc = hd_host_alloc,
    .host_free = hd_host_free,
    .ops = {[DYN_OP_LINEAR] = &hd_linear, [DYN_OP_ADD] = &hd_add},
};

/* ---- the model ---- */

static void add(dyn_model *m, const char *op, const char *name, const char *attrs, int in0,
                int in1) {
    json_t *a = json_loads(attrs, 0, NULL);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create(op, name, a, &err);
    json_decref(a);
    ck_assert_msg(l != NULL, "%s: %s", name, err.msg);
    int ins[2] = {in0, in1};
    ck_assert_msg(dyn_model_add(m, l, ins, in1 == -2 ? 1 : 2, &err) >= 0, "%s: %s", name,
                  err.msg);
}

static dyn_model *model(void) {
    dyn_shape in = {.ndim = 1, .d = {8}};
    dyn_model *m = dyn_model_new(&in);
    add(m, "linear", "a", "{\"in\":8,\"out\":16}", -1, -2);
    add(m, "relu", "r1", "{}", 0, -2);
    add(m, "linear", "b", "{\"in\":16,\"out\":16}", 1, -2);
    add(m, "add", "s", "{}", 1, 2);
    add(m, "relu", "r2", "{}", 3, -2);
    add(m, "linear", "c", "{\"in\":16,\"out\":4}", 4, -2);
    dyn_model_init(m, 42);
    return m;
}

static void expect_close(const float *want, const float *got, int64_t n, const char *what) {
    double e = tu_rel_err(got, want, n);
    ck_assert_msg(e <= 1e-5, "%s: relative error %g (tolerance 1e-5)", what, e);
}

static void expect_params_close(dyn_model *a, dyn_model *b, const char *when) {
    for (int k = 0; k < a->nnodes; k++) {
        dyn_layer *la = a->nodes[k].layer, *lb = b->nodes[k].layer;
        for (int i = 0; i < la->nparams; i++) {
            char what[96];
            snprintf(what, sizeof what, "%s: %s.%s", when, la->name, la->params[i].name);
            expect_close(la->params[i].value.data, lb->params[i].value.data,
                         dyn_tensor_numel(&la->params[i].value), what);
        }
    }
}

/* One training step on both models with the same batch; compares the outputs. */
static void step_both(dyn_exec *ec, dyn_exec *ed, dyn_optim *oc, dyn_optim *od, dyn_rng *r) {
    enum { B = 5 };
    float x[B * 8], dout[B * 4];
    tu_fill_uniform(x, B * 8, r, -1, 1);
    tu_fill_uniform(dout, B * 4, r, -1, 1);
    const dyn_tensor *yc = dyn_exec_forward(ec, x, B);
    const dyn_tensor *yd = dyn_exec_forward(ed, x, B);
    ck_assert_msg(yd != NULL, "device forward: %s", dyn_exec_error(ed));
    ck_assert_int_eq(yd->device, DYN_DEV_CPU); /* the output comes back to the host */
    expect_close(yc->data, yd->data, B * 4, "outputs");
    dyn_model_zero_grad(ec->model);
    dyn_model_zero_grad(ed->model);
    ck_assert_int_eq(dyn_exec_backward(ec, dout), 0);
    ck_assert_msg(dyn_exec_backward(ed, dout) == 0, "device backward: %s", dyn_exec_error(ed));
    dyn_err err = {0};
    ck_assert_int_eq(dyn_optim_step(oc, ec->model, &err), 0);
    ck_assert_msg(dyn_optim_step(od, ed->model, &err) == 0, "%s", err.msg);
}

START_TEST(test_backend_trains_like_the_cpu) {
    dyn_model *mc = model(), *md = model();
    dyn_err err = {0};
    int on_cpu = -1;
    ck_assert_msg(dyn_model_place(md, &hostdev, 0, &on_cpu, &err) == 0, "%s", err.msg);
    ck_assert_int_eq(on_cpu, 2); /* the two ReLUs */
    ck_assert_str_eq(dyn_model_device_name(md), "hostdev:0");
    ck_assert_ptr_eq(dyn_model_backend(md), &hostdev);
    ck_assert_int_eq(md->nodes[1].layer->placed, 0);
    ck_assert_int_eq(md->nodes[0].layer->placed, 1);
    ck_assert_ptr_nonnull(md->nodes[0].layer->params[0].dval);
    const int64_t placed_allocs = live_allocs;
    ck_assert_int_gt(placed_allocs, 0);

    dyn_exec *ec = dyn_exec_new(mc, 8, 1, &err), *ed = dyn_exec_new(md, 8, 1, &err);
    ck_assert_msg(ec && ed, "%s", err.msg);
    /* Host copies only for the CPU nodes (1, 4), their inputs (0, 3) and the output (5). */
    ck_assert_ptr_null(ed->act[2].data);
    ck_assert_ptr_nonnull(ed->act[0].data);
    ck_assert_ptr_nonnull(ed->act[1].data);
    ck_assert_ptr_nonnull(ed->act[3].data);
    ck_assert_ptr_nonnull(ed->act[5].data);
    ck_assert_int_eq(live_pinned, 2); /* the input and the output, staged in pinned memory */
    dyn_optim oc = dyn_optim_default(DYN_OPT_ADAM, 1e-2f), od = oc;
    oc.weight_decay = od.weight_decay = 1e-3f;
    dyn_rng r;
    dyn_rng_seed(&r, 7);
    for (int s = 0; s < 4; s++) step_both(ec, ed, &oc, &od, &r);
    oc = dyn_optim_default(DYN_OPT_SGD, 5e-2f);
    od = oc;
    for (int s = 0; s < 3; s++) step_both(ec, ed, &oc, &od, &r);
    /* The device values are the truth until copied back. */
    ck_assert_int_eq(dyn_model_to_host(md, &err), 0);
    expect_params_close(mc, md, "after 7 steps");

    /* An inference exec on the placed model: its own context, the same outputs. */
    dyn_exec *ic = dyn_exec_new(mc, 3, 0, &err), *id = dyn_exec_new(md, 3, 0, &err);
    ck_assert_msg(ic && id, "%s", err.msg);
    float x[3 * 8];
    tu_fill_uniform(x, 3 * 8, &r, -2, 2);
    float want[12];
    memcpy(want, dyn_exec_forward(ic, x, 3)->data, sizeof want);
    const dyn_tensor *got = dyn_exec_forward(id, x, 3);
    ck_assert_ptr_nonnull(got);
    expect_close(want, got->data, 12, "inference");

    dyn_exec_free(ec);
    dyn_exec_free(ed);
    dyn_exec_free(ic);
    dyn_exec_free(id);
    ck_assert_int_eq(live_allocs, placed_allocs); /* execs returned theirs */
    ck_assert_int_eq(live_pinned, 0);
    dyn_model_unplace(md);
    ck_assert_int_eq(live_allocs, 0);
    ck_assert_ptr_null(md->nodes[0].layer->params[0].dval);
    ck_assert_str_eq(dyn_model_device_name(md), "cpu");
    dyn_model_free(mc);
    dyn_model_free(md);
}
END_TEST

/* dyn_train on a placed model gives the trained values back on the host. */
static void fill_fixed(void *ctx, const int *idx, int n, float *x, int *y, dyn_rng *aug) {
    (void)ctx, (void)aug;
    for (int i = 0; i < n; i++) {
        dyn_rng r;
        dyn_rng_seed(&r, (uint64_t)idx[i] + 1);
        tu_fill_uniform(x + i * 8, 8, &r, -1, 1);
        y[i] = x[i * 8] > 0 ? 1 : (x[i * 8 + 1] > 0 ? 2 : 0);
    }
}

START_TEST(test_backend_dyn_train) {
    dyn_model *mc = model(), *md = model();
    dyn_err err = {0};
    ck_assert_msg(dyn_model_place(md, &hostdev, 0, NULL, &err) == 0, "%s", err.msg);
    dyn_batch_source src = {.n = 40, .fill = fill_fixed};
    dyn_train_cfg cfg = dyn_train_cfg_default();
    cfg.epochs = 2;
    cfg.batch = 8;
    cfg.keep_best = 0;
    dyn_train_result rc_, rd_;
    ck_assert_int_eq(dyn_train(mc, &src, &src, &cfg, &rc_, &err), 0);
    ck_assert_msg(dyn_train(md, &src, &src, &cfg, &rd_, &err) == 0, "%s", err.msg);
    ck_assert_float_eq_tol(rc_.last_loss, rd_.last_loss, 1e-4);
    ck_assert_float_eq_tol(rc_.best_val_acc, rd_.best_val_acc, 1e-6);
    expect_params_close(mc, md, "dyn_train"); /* without a to_host by the caller */
    dyn_model_free(mc);
    dyn_model_free(md);
    ck_assert_int_eq(live_allocs, 0);
}
END_TEST

/* cfg.backend: dyn_train places the model for the run and unplaces it after; two one-epoch
 * runs on the device (placed twice: the Adam moments go and come back) match two on the CPU. */
START_TEST(test_backend_train_cfg_places) {
    dyn_model *mc = model(), *md = model();
    dyn_err err = {0};
    dyn_batch_source src = {.n = 24, .fill = fill_fixed};
    dyn_train_cfg cfg = dyn_train_cfg_default();
    cfg.batch = 8;
    cfg.keep_best = 0;
    dyn_train_result r;
    for (int run = 0; run < 2; run++) {
        cfg.seed = (uint64_t)run + 1;
        cfg.backend = NULL;
        ck_assert_int_eq(dyn_train(mc, &src, NULL, &cfg, &r, &err), 0);
        cfg.backend = &hostdev;
        ck_assert_msg(dyn_train(md, &src, NULL, &cfg, &r, &err) == 0, "%s", err.msg);
        ck_assert_ptr_null(md->place);
        ck_assert_int_eq(live_allocs, 0);
    }
    expect_params_close(mc, md, "two placed runs");
    dyn_model_free(mc);
    dyn_model_free(md);
}
END_TEST

START_TEST(test_backend_reports_device_failures) {
    dyn_model *m = model();
    dyn_err err = {0};
    ck_assert_int_eq(dyn_model_place(m, &hostdev, 0, NULL, &err), 0);
    ck_assert_int_ne(dyn_model_place(m, &hostdev, 0, NULL, &err), 0); /* twice */
    ck_assert_ptr_nonnull(strstr(err.msg, "already placed"));
    dyn_exec *e = dyn_exec_new(m, 2, 0, &err);
    ck_assert_ptr_nonnull(e);
    float x[16] = {0};
    fail_forward = 1;
    ck_assert_ptr_null(dyn_exec_forward(e, x, 2));
    fail_forward = 0;
    const char *msg = dyn_exec_error(e);
    ck_assert_msg(strstr(msg, "simulated kernel failure") && strstr(msg, "layer 'a'"),
                  "message: %s", msg);
    ck_assert_ptr_nonnull(dyn_exec_forward(e, x, 2)); /* and it recovers */
    dyn_exec_free(e);
    dyn_model_free(m);
    ck_assert_int_eq(live_allocs, 0);
    /* A device the backend lacks: nothing placed. */
    m = model();
    ck_assert_int_ne(dyn_model_place(m, &hostdev, 3, NULL, &err), 0);
    ck_assert_ptr_nonnull(strstr(err.msg, "one device"));
    ck_assert_ptr_null(m->place);
    /* The CUDA backend in a build without CUDA (or without a GPU): a clear refusal. */
    if (!dyn_cuda_backend_usable()) {
        ck_assert_int_ne(dyn_model_place(m, &dyn_backend_cuda, 0, NULL, &err), 0);
        ck_assert_ptr_null(m->place);
    }
    dyn_model_free(m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("backend");
    TCase *tc = tcase_create("backend");
    tcase_add_test(tc, test_backend_trains_like_the_cpu);
    tcase_add_test(tc, test_backend_dyn_train);
    tcase_add_test(tc, test_backend_train_cfg_places);
    tcase_add_test(tc, test_backend_reports_device_failures);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
