/* test_cuda_kern_util.c — the bodies of engine/cuda/kern_util.h (the CUDA backend's fill, axpy
 * and optimizer update; the CPU optimizer runs the same update body) over all their indices on
 * the host, against the formulas computed here in double: Adam with bias correction and decoupled
 * weight decay, SGD with momentum and weight decay, over several steps. Tolerance: 1e-6 relative
 * (float arithmetic against double over five steps). */
#include <math.h>

#include "cuda/kern_util.h"
#include "testutil.h"

enum { N = 1000 };

START_TEST(test_kern_fill_axpy) {
    float p[N], x[N], y[N], want[N];
    dyn_rng r;
    dyn_rng_seed(&r, 3);
    tu_fill_uniform(x, N, &r, -1, 1);
    tu_fill_uniform(y, N, &r, -1, 1);
    for (int64_t i = 0; i < N; i++) kb_fill(i, p, 2.5f);
    for (int i = 0; i < N; i++) ck_assert_float_eq(p[i], 2.5f);
    for (int i = 0; i < N; i++) want[i] = y[i] + 0.75f * x[i];
    for (int64_t i = 0; i < N; i++) kb_axpy(i, y, x, 0.75f);
    ck_assert_double_eq(tu_max_abs_diff(y, want, N), 0.0);
}
END_TEST

static void optim_case(int adam, float wd) {
    float w[N], g[N], m[N] = {0}, v[N] = {0};
    double W[N], M[N] = {0}, V[N] = {0};
    dyn_rng r;
    dyn_rng_seed(&r, 5);
    tu_fill_uniform(w, N, &r, -1, 1);
    for (int i = 0; i < N; i++) W[i] = w[i];
    const double lr = 1e-2, mu = 0.9, b1 = 0.9, b2 = 0.999, eps = 1e-8;
    for (int t = 1; t <= 5; t++) {
        tu_fill_uniform(g, N, &r, -1, 1);
        const double bc1 = 1 - pow(b1, t), bc2 = 1 - pow(b2, t);
        for (int64_t i = 0; i < N; i++)
            kb_optim(i, adam, (float)lr, (float)mu, (float)b1, (float)b2, (float)bc1, (float)bc2,
                     (float)eps, wd, w, g, m, v);
        for (int i = 0; i < N; i++) {
            if (adam) {
                M[i] = b1 * M[i] + (1 - b1) * g[i];
                V[i] = b2 * V[i] + (1 - b2) * (double)g[i] * g[i];
                W[i] -= lr * ((M[i] / bc1) / (sqrt(V[i] / bc2) + eps) + wd * W[i]);
            } else {
                M[i] = mu * M[i] + g[i] + wd * W[i];
                W[i] -= lr * M[i];
            }
        }
    }
    float want[N];
    for (int i = 0; i < N; i++) want[i] = (float)W[i];
    double e = tu_rel_err(w, want, N);
    ck_assert_msg(e <= 1e-6, "%s wd %g: relative error %g (tolerance 1e-6)", adam ? "adam" : "sgd",
                  (double)wd, e);
}

START_TEST(test_kern_optim) {
    optim_case(1, 0.0f);
    optim_case(1, 1e-2f);
    optim_case(0, 0.0f);
    optim_case(0, 1e-2f);
}
END_TEST

int main(void) {
    Suite *s = suite_create("cuda_kern_util");
    TCase *tc = tcase_create("cuda_kern_util");
    tcase_add_test(tc, test_kern_fill_axpy);
    tcase_add_test(tc, test_kern_optim);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
