/* test_train.c — whole models on the GPU against the CPU, through the executor's device path
 * (engine/backend.c): a DyN LeNet-5 (l1, materialized and native) and a dense LeNet-5 with
 * BatchNorm, each built twice from one seed, one copy placed on CUDA. Checked:
 *   - every layer placed (none left on the CPU: a missing kernel shows here);
 *   - the inference forward of a batch of 37 (an odd size) matches the CPU;
 *   - three training steps (forward, backward, Adam) match: outputs at each step and the
 *     parameters after them, copied back with dyn_model_to_host.
 * Tolerances: forward relative error 1e-4 (float32 sums in another order: cuBLAS, the CUB
 * scans); after three Adam steps the parameter changes (not the parameters) within 2e-2
 * relative: Adam divides by sqrt(v), which turns rounding of tiny gradients into visible
 * update differences, so the changes are compared with gt_rel_delta. */
#include <stdio.h>
#include <string.h>

#include "backend.h"
#include "gpu_util.h"
#include "train.h"
#include "zoo.h"

static const char *PROG = "test_train";

static dyn_model *lenet(int dyn, const char *exec, int bn) {
    dyn_zoo_opts o = dyn_zoo_opts_default();
    o.arch = "lenet5";
    o.dyn = dyn;
    o.exec = exec;
    o.bn = bn;
    o.channels = 1;
    o.height = o.width = 28;
    o.classes = 10;
    dyn_err err = {0};
    dyn_model *m = dyn_zoo_build(&o, &err);
    gt_ok(m == NULL, &err, "building LeNet-5");
    dyn_model_init(m, 5);
    return m;
}

/* All parameter values of m, concatenated (malloc'ed). */
static float *params(const dyn_model *m, int64_t *n) {
    int64_t total = 0;
    for (int k = 0; k < m->nnodes; k++) total += dyn_layer_param_floats(m->nodes[k].layer);
    float *p = malloc((size_t)(total ? total : 1) * sizeof(float)), *q = p;
    for (int k = 0; k < m->nnodes; k++) {
        const dyn_layer *l = m->nodes[k].layer;
        for (int i = 0; i < l->nparams; i++) {
            int64_t c = dyn_tensor_numel(&l->params[i].value);
            memcpy(q, l->params[i].value.data, (size_t)c * sizeof(float));
            q += c;
        }
    }
    *n = total;
    return p;
}

static void run(const char *name, int dyn, const char *exec, int bn) {
    char what[160];
    dyn_err err = {0};
    dyn_model *mc = lenet(dyn, exec, bn), *mg = lenet(dyn, exec, bn);
    int on_cpu = -1;
    gt_ok(dyn_model_place(mg, &dyn_backend_cuda, 0, &on_cpu, &err), &err, "placing the model");
    snprintf(what, sizeof what, "%s: layers left on the CPU", name);
    gt_check(what, "count", on_cpu, 0);

    dyn_rng r;
    dyn_rng_seed(&r, 11);
    enum { B = 37 };
    float *x = gt_rand(&r, B * 784, -1, 1);
    dyn_exec *ic = dyn_exec_new(mc, B, 0, &err), *ig = dyn_exec_new(mg, B, 0, &err);
    gt_ok(!ic || !ig, &err, "inference execs");
    float want[B * 10];
    memcpy(want, dyn_exec_forward(ic, x, B)->data, sizeof want);
    const dyn_tensor *got = dyn_exec_forward(ig, x, B);
    if (!got) {
        fprintf(stderr, "FAIL %s: forward: %s\n", name, dyn_exec_error(ig));
        exit(1);
    }
    snprintf(what, sizeof what, "%s: inference forward, batch %d", name, B);
    gt_check(what, "relative error", gt_rel_err(got->data, want, B * 10), 1e-4);
    dyn_exec_free(ic);
    dyn_exec_free(ig);

    int64_t np = 0;
    float *p0 = params(mc, &np);
    dyn_exec *ec = dyn_exec_new(mc, 16, 1, &err), *eg = dyn_exec_new(mg, 16, 1, &err);
    gt_ok(!ec || !eg, &err, "training execs");
    dyn_optim oc = dyn_optim_default(DYN_OPT_ADAM, 1e-3f), og = oc;
    int labels[16];
    float dout[16 * 10];
    for (int s = 0; s < 3; s++) {
        for (int i = 0; i < 16; i++) labels[i] = (int)dyn_rng_below(&r, 10);
        const dyn_tensor *yc = dyn_exec_forward(ec, x + s * 16 * 784, 16);
        float yc_copy[160];
        memcpy(yc_copy, yc->data, sizeof yc_copy);
        dyn_softmax_xent(yc->data, labels, 16, 10, dout, NULL);
        dyn_model_zero_grad(mc);
        dyn_exec_backward(ec, dout);
        gt_ok(dyn_optim_step(&oc, mc, &err), &err, "CPU step");
        const dyn_tensor *yg = dyn_exec_forward(eg, x + s * 16 * 784, 16);
        if (!yg) {
            fprintf(stderr, "FAIL %s: training forward: %s\n", name, dyn_exec_error(eg));
            exit(1);
        }
        snprintf(what, sizeof what, "%s: training forward, step %d", name, s + 1);
        gt_check(what, "relative error", gt_rel_err(yg->data, yc_copy, 160), 1e-4);
        dyn_softmax_xent(yg->data, labels, 16, 10, dout, NULL);
        dyn_model_zero_grad(mg);
        if (dyn_exec_backward(eg, dout)) {
            fprintf(stderr, "FAIL %s: backward: %s\n", name, dyn_exec_error(eg));
            exit(1);
        }
        gt_ok(dyn_optim_step(&og, mg, &err), &err, "GPU step");
    }
    gt_ok(dyn_model_to_host(mg, &err), &err, "copying back");
    int64_t n1 = 0, n2 = 0;
    float *pc = params(mc, &n1), *pg = params(mg, &n2);
    snprintf(what, sizeof what, "%s: parameter changes after 3 Adam steps", name);
    gt_check(what, "relative error", gt_rel_delta(pg, pc, p0, np, 1e-6), 2e-2);
    free(p0);
    free(pc);
    free(pg);
    free(x);
    dyn_exec_free(ec);
    dyn_exec_free(eg);
    dyn_model_free(mc);
    dyn_model_free(mg);
}

int main(void) {
    dyn_cuda_ctx *ctx = gt_ctx(PROG); /* prints the device; exits without one */
    dyn_cuda_ctx_free(ctx);
    run("DyN LeNet-5 (materialized)", 1, "materialized", 0);
    run("DyN LeNet-5 (native)", 1, "native", 0);
    run("DyN LeNet-5 (auto) + BatchNorm", 1, "auto", 1);
    run("dense LeNet-5 + BatchNorm", 0, "auto", 1);
    return gt_finish(PROG);
}
