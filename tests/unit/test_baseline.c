/* test_baseline.c — the baselines DyN is compared with (engine/convert/baseline.h): fp16
 * rounding, per-row int8 / int4 quantization (exactness on the grid, code range, the error
 * formula and its bound), bytes, truncated SVD on a matrix with known singular vectors, and
 * whole models with weights replaced. */
#include <math.h>
#include <string.h>

#include "convert/baseline.h"
#include "testutil.h"

START_TEST(fp16_rounding) {
    ck_assert_float_eq(dyn_round_fp16(1.0f), 1.0f);
    ck_assert_float_eq(dyn_round_fp16(-2.5f), -2.5f);
    ck_assert_float_eq(dyn_round_fp16(0.0f), 0.0f);
    /* step 2^-10 at 1: ties go to even */
    ck_assert_float_eq(dyn_round_fp16(1.0f + ldexpf(1, -11)), 1.0f);
    ck_assert_float_eq(dyn_round_fp16(1.0f + 3 * ldexpf(1, -11)), 1.0f + ldexpf(1, -9));
    ck_assert_float_eq(dyn_round_fp16(1.0f + ldexpf(1, -10)), 1.0f + ldexpf(1, -10));
    ck_assert_float_eq(dyn_round_fp16(0.1f), 0.0999755859375f); /* fp16(0.1) = 0x2E66 */
    ck_assert_float_eq(dyn_round_fp16(1e6f), 65504.0f);
    ck_assert_float_eq(dyn_round_fp16(ldexpf(3, -22)), ldexpf(3, -22)); /* subnormal, exact */
    ck_assert_float_eq(dyn_round_fp16(ldexpf(1, -26)), 0.0f);           /* below half the step */
}
END_TEST

/* Rows that are integer multiples (|k| ≤ 127) of an fp16-exact scale with the maximum code
 * reached: int8 reproduces them exactly. */
START_TEST(int8_exact_on_its_grid) {
    const int m = 4, nk = 255;
    float *w = malloc(sizeof(float) * m * nk), *o = malloc(sizeof(float) * m * nk);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < nk; j++) w[i * nk + j] = (float)(j - 127) * ldexpf(1, -i - 3);
    double e = -1;
    dyn_err err = {0};
    ck_assert_int_eq(dyn_quant_rows(w, m, nk, 8, o, &e, &err), 0);
    ck_assert_double_eq(e, 0.0);
    for (int i = 0; i < m * nk; i++) ck_assert_float_eq(o[i], w[i]);
    free(w);
    free(o);
}
END_TEST

/* int4 on random rows: codes are integers in [-7, 7], the max of each row is kept (up to the
 * fp16 scale), every element is within half a step, and rel_err is ‖Ŵ − W‖/‖W‖. */
START_TEST(int4_range_and_error) {
    const int m = 9, nk = 37;
    dyn_rng r;
    dyn_rng_seed(&r, 5);
    float *w = malloc(sizeof(float) * m * nk), *o = malloc(sizeof(float) * m * nk);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < nk; j++) w[i * nk + j] = (float)dyn_rng_normal(&r) * (float)(i + 1);
    double e = -1, e8 = -1;
    dyn_err err = {0};
    ck_assert_int_eq(dyn_quant_rows(w, m, nk, 4, o, &e, &err), 0);
    for (int i = 0; i < m; i++) {
        float mx = 0;
        for (int j = 0; j < nk; j++) mx = fmaxf(mx, fabsf(w[i * nk + j]));
        const float s = dyn_round_fp16(mx / 7);
        int hit = 0;
        for (int j = 0; j < nk; j++) {
            const float c = o[i * nk + j] / s;
            ck_assert_float_eq_tol(c, rintf(c), 1e-4);
            ck_assert(c >= -7.0001f && c <= 7.0001f);
            hit |= fabsf(c) > 6.999f;
            ck_assert_float_le(fabsf(o[i * nk + j] - w[i * nk + j]),
                               0.5f * s * 1.0001f + fmaxf(0, mx - 7 * s));
        }
        ck_assert_msg(hit, "row %d never uses code ±7", i);
    }
    ck_assert_double_eq_tol(e, dyn_rel_err(o, w, (int64_t)m * nk), 1e-9);
    ck_assert(e > 0.01 && e < 0.3);
    ck_assert_int_eq(dyn_quant_rows(w, m, nk, 8, o, &e8, &err), 0);
    ck_assert(e8 < e / 8); /* 16× finer steps */
    ck_assert_int_eq(dyn_quant_rows(w, m, nk, 9, o, &e, &err), DYN_EINVAL);
    ck_assert_int_eq(dyn_quant_rows(w, m, nk, 1, o, &e, &err), DYN_EINVAL);
    /* a zero row stays zero */
    memset(w, 0, sizeof(float) * nk);
    ck_assert_int_eq(dyn_quant_rows(w, 1, nk, 4, o, &e, &err), 0);
    ck_assert_double_eq(e, 0.0);
    ck_assert_float_eq(o[0], 0.0f);
    free(w);
    free(o);
}
END_TEST

START_TEST(bytes_and_equal_budgets) {
    ck_assert_int_eq(dyn_quant_bytes(120, 400, 8), 48000 + 240);
    ck_assert_int_eq(dyn_quant_bytes(120, 400, 4), 24000 + 240);
    ck_assert_int_eq(dyn_quant_bytes(3, 3, 4), 5 + 6); /* 36 bits -> 5 bytes */
    ck_assert_int_eq(dyn_float_bytes(12104), 48416);
    /* fc1 at 4x floats (12,104 floats = 48,416 bytes): int8 (48,240) fits, at 8x int4 */
    ck_assert_int_eq(dyn_quant_bits_for_bytes(120, 400, 48416), 8);
    ck_assert_int_eq(dyn_quant_bits_for_bytes(120, 400, 48239), 7);
    ck_assert_int_eq(dyn_quant_bits_for_bytes(120, 400, 24240), 4);
    ck_assert_int_eq(dyn_quant_bits_for_bytes(120, 400, 100), 0);
    ck_assert_int_eq(dyn_svd_rank_for_floats(120, 400, 12104), 23);
    ck_assert_int_eq(dyn_svd_rank_for_floats(120, 400, 519), 0);
    ck_assert_int_eq(dyn_svd_rank_for_floats(10, 20, 1000000), 10);
}
END_TEST

/* DCT-II basis vectors: orthonormal, so W = Σ s_t u_t v_tᵀ has known singular triplets. */
static double dct(int t, int i, int n) {
    return (t == 0 ? sqrt(1.0 / n) : sqrt(2.0 / n)) * cos(M_PI * (i + 0.5) * t / n);
}

START_TEST(svd_reconstruct_known_matrix) {
    const int m = 12, nk = 20, k = 12;
    double s[12];
    for (int t = 0; t < k; t++) s[t] = 5.0 * pow(0.6, t);
    float *w = malloc(sizeof(float) * m * nk), *o = malloc(sizeof(float) * m * nk);
    /* singular vector t: u_t = dct(t+1, ·, m) on rows, v_t = dct(t, ·, nk) on columns */
    for (int i = 0; i < m; i++)
        for (int j = 0; j < nk; j++) {
            double v = 0;
            for (int t = 0; t < k; t++) v += s[t] * dct((t + 1) % m, i, m) * dct(t, j, nk);
            w[i * nk + j] = (float)v;
        }
    dyn_err err = {0};
    for (int r = 0; r <= k; r += 3) {
        double e = -1, tail = 0, tot = 0;
        ck_assert_int_eq(dyn_svd_reconstruct(w, m, nk, r, o, &e, &err), 0);
        for (int t = 0; t < k; t++) {
            tot += s[t] * s[t];
            if (t >= r) tail += s[t] * s[t];
        }
        ck_assert_double_eq_tol(e, sqrt(tail / tot), 1e-5);
        for (int i = 0; i < m; i++)
            for (int j = 0; j < nk; j++) {
                double v = 0;
                for (int t = 0; t < r; t++)
                    v += s[t] * dct((t + 1) % m, i, m) * dct(t, j, nk);
                ck_assert_double_eq_tol(o[i * nk + j], v, 1e-5);
            }
    }
    /* transposed: same error; rank beyond min(m, nk) is clamped (exact) */
    float *wt = malloc(sizeof(float) * m * nk), *ot = malloc(sizeof(float) * m * nk);
    for (int i = 0; i < m; i++)
        for (int j = 0; j < nk; j++) wt[j * m + i] = w[i * nk + j];
    double e1, e2;
    ck_assert_int_eq(dyn_svd_reconstruct(w, m, nk, 2, o, &e1, &err), 0);
    ck_assert_int_eq(dyn_svd_reconstruct(wt, nk, m, 2, ot, &e2, &err), 0);
    ck_assert_double_eq_tol(e1, e2, 1e-6);
    ck_assert_int_eq(dyn_svd_reconstruct(w, m, nk, 999, o, &e1, &err), 0);
    ck_assert_double_eq_tol(e1, 0.0, 1e-6);
    /* in place */
    ck_assert_int_eq(dyn_svd_reconstruct(w, m, nk, 1, w, &e1, &err), 0);
    for (int j = 0; j < nk; j++)
        ck_assert_double_eq_tol(w[j], s[0] * dct(1, 0, m) * dct(0, j, nk), 1e-5);
    free(w);
    free(o);
    free(wt);
    free(ot);
}
END_TEST

/* linear 6->5, relu, linear 5->3 */
static dyn_model *small_mlp(void) {
    dyn_shape in = {.ndim = 1, .d = {6}};
    dyn_model *m = dyn_model_new(&in);
    dyn_err err = {0};
    json_t *a = json_pack("{s:i, s:i}", "in", 6, "out", 5);
    ck_assert(dyn_model_add_seq(m, dyn_layer_create("linear", "fc1", a, &err), &err) >= 0);
    json_decref(a);
    a = json_object();
    ck_assert(dyn_model_add_seq(m, dyn_layer_create("relu", "r1", a, &err), &err) >= 0);
    json_decref(a);
    a = json_pack("{s:i, s:i}", "in", 5, "out", 3);
    ck_assert(dyn_model_add_seq(m, dyn_layer_create("linear", "fc2", a, &err), &err) >= 0);
    json_decref(a);
    dyn_model_init(m, 3);
    const char *labels[] = {"x", "y", "z"};
    dyn_model_labels_set(m, labels, 3);
    return m;
}

static const float *weight_of(dyn_model *m, const char *name) {
    return dyn_layer_param(dyn_model_layer_find(m, name), "weight")->value.data;
}

START_TEST(model_with_weights_replaced) {
    dyn_model *d = small_mlp(), *o = NULL;
    dyn_err err = {0};
    float w1[30];
    for (int i = 0; i < 30; i++) w1[i] = (float)i / 7;
    const char *names[] = {"fc1"};
    const float *ws[] = {w1};
    ck_assert_int_eq(dyn_model_replace_weights(d, names, ws, 1, &o, &err), 0);
    ck_assert_int_eq(o->nnodes, 3);
    ck_assert_int_eq(o->nlabels, 3);
    ck_assert_str_eq(o->labels[2], "z");
    ck_assert_int_eq(memcmp(weight_of(o, "fc1"), w1, sizeof w1), 0);
    ck_assert_int_eq(memcmp(weight_of(o, "fc2"), weight_of(d, "fc2"), 15 * sizeof(float)), 0);
    ck_assert_int_eq(memcmp(dyn_layer_param(dyn_model_layer_find(o, "fc1"), "bias")->value.data,
                            dyn_layer_param(dyn_model_layer_find(d, "fc1"), "bias")->value.data,
                            5 * sizeof(float)), 0);
    dyn_model_free(o);
    const char *bad[] = {"nope"}, *relu[] = {"r1"};
    ck_assert_int_eq(dyn_model_replace_weights(d, bad, ws, 1, &o, &err), DYN_EINVAL);
    ck_assert_ptr_null(o);
    ck_assert_int_eq(dyn_model_replace_weights(d, relu, ws, 1, &o, &err), DYN_EINVAL);

    /* a report marking fc1 converted: each baseline replaces fc1 only */
    dyn_convert_layer L[3];
    memset(L, 0, sizeof L);
    for (int k = 0; k < 3; k++) snprintf(L[k].name, sizeof L[k].name, "%s", d->nodes[k].layer->name);
    L[0].converted = 1;
    L[0].m = 5;
    L[0].n = 6;
    L[0].K = 1;
    L[0].svd_rank = 1;
    dyn_convert_report rep = {.nlayers = 3, .layers = L};
    float ref[30];
    double e;
    for (int kind = 0; kind < DYN_BASELINE_COUNT; kind++) {
        ck_assert_int_eq(dyn_baseline_model(d, &rep, (dyn_baseline_kind)kind, &o, &err), 0);
        if (kind == DYN_BASELINE_SVD)
            ck_assert_int_eq(dyn_svd_reconstruct(weight_of(d, "fc1"), 5, 6, 1, ref, &e, &err), 0);
        else
            ck_assert_int_eq(dyn_quant_rows(weight_of(d, "fc1"), 5, 6,
                                            kind == DYN_BASELINE_INT8 ? 8 : 4, ref, &e, &err), 0);
        ck_assert(e > 0);
        ck_assert_int_eq(memcmp(weight_of(o, "fc1"), ref, sizeof ref), 0);
        ck_assert_int_eq(memcmp(weight_of(o, "fc2"), weight_of(d, "fc2"), 15 * sizeof(float)), 0);
        dyn_model_free(o);
    }
    dyn_baseline_kind k;
    ck_assert_int_eq(dyn_baseline_kind_parse("int4", &k), 0);
    ck_assert_int_eq(k, DYN_BASELINE_INT4);
    ck_assert_int_eq(dyn_baseline_kind_parse("int3", &k), -1);
    /* a report of another model */
    L[0].m = 4;
    ck_assert_int_eq(dyn_baseline_model(d, &rep, DYN_BASELINE_INT8, &o, &err), DYN_EINVAL);
    ck_assert_ptr_null(o);
    dyn_model_free(d);
}
END_TEST

START_TEST(layer_report_fields) {
    const int m = 8, nk = 16;
    float w[128];
    dyn_rng r;
    dyn_rng_seed(&r, 9);
    tu_fill_uniform(w, m * nk, &r, -1, 1);
    dyn_convert_layer L;
    memset(&L, 0, sizeof L);
    dyn_err err = {0};
    ck_assert_int_eq(dyn_baseline_layer(w, m, nk, 50, &L, &err), 0);
    ck_assert_int_eq(L.bytes_dyn, 200);
    ck_assert_int_eq(L.bytes_int8, 128 + 16);
    ck_assert_int_eq(L.bytes_int4, 64 + 16);
    ck_assert(L.int8_rel_err > 0 && L.int8_rel_err < L.int4_rel_err && L.int4_rel_err < 0.5);
}
END_TEST

static Suite *suite(void) {
    Suite *s = suite_create("baseline");
    TCase *t = tcase_create("baseline");
    tcase_add_test(t, fp16_rounding);
    tcase_add_test(t, int8_exact_on_its_grid);
    tcase_add_test(t, int4_range_and_error);
    tcase_add_test(t, bytes_and_equal_budgets);
    tcase_add_test(t, svd_reconstruct_known_matrix);
    tcase_add_test(t, model_with_weights_replaced);
    tcase_add_test(t, layer_report_fields);
    suite_add_tcase(s, t);
    return s;
}

TU_MAIN(suite)
