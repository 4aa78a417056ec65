/* test_onnx.c — engine/io/onnx (ONNX import) and engine/ops/add.c.
 *
 * ONNX models are built here in C with the protobuf-c structs generated from onnx.proto and
 * packed to bytes, so no fixture files or Python are needed. Imported models are compared with
 * the same network built directly from engine layers (same weights) and, for the matrix
 * products, with a naive computation. Malformed models (every truncation, a cycle, unknown
 * ops and attributes, wrong data types, external data) must be rejected with a message.
 */
#include <math.h>
#include <string.h>
#include <unistd.h>

#include "io/model_file.h"
#include "io/onnx.h"
#include "model.h"
#include "onnx.pb-c.h"
#include "testutil.h"

#include "onnx_build.h"

/* Runs both models on the same random batch; returns the max abs difference. */
static double compare_models(dyn_model *a, dyn_model *b, int batch, uint64_t seed) {
    dyn_err err = {0};
    ck_assert(dyn_shape_eq(&a->input, &b->input));
    dyn_exec *ea = dyn_exec_new(a, batch, 0, &err);
    ck_assert_msg(ea != NULL, "%s", err.msg);
    dyn_exec *eb = dyn_exec_new(b, batch, 0, &err);
    ck_assert_msg(eb != NULL, "%s", err.msg);
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    int64_t n = dyn_shape_numel(&a->input) * batch;
    float *x = rnd(&r, n, -1.0f, 1.0f);
    const dyn_tensor *ya = dyn_exec_forward(ea, x, batch), *yb = dyn_exec_forward(eb, x, batch);
    ck_assert_int_eq(dyn_tensor_numel(ya), dyn_tensor_numel(yb));
    double d = tu_max_abs_diff(ya->data, yb->data, dyn_tensor_numel(ya));
    free(x);
    dyn_exec_free(ea);
    dyn_exec_free(eb);
    return d;
}

static dyn_layer *mk(const char *op, const char *name, const char *json) {
    dyn_err err = {0};
    json_error_t je;
    json_t *a = json_loads(json, 0, &je);
    ck_assert_ptr_nonnull(a);
    dyn_layer *l = dyn_layer_create(op, name, a, &err);
    json_decref(a);
    ck_assert_msg(l != NULL, "%s", err.msg);
    return l;
}

static void setp(dyn_layer *l, const char *name, const float *v) {
    dyn_param *p = dyn_layer_param(l, name);
    ck_assert_ptr_nonnull(p);
    memcpy(p->value.data, v, (size_t)dyn_tensor_numel(&p->value) * sizeof(float));
}

static void add_seq(dyn_model *m, dyn_layer *l) {
    dyn_err err = {0};
    ck_assert_msg(dyn_model_add_seq(m, l, &err) >= 0, "%s", err.msg);
}

/* ---- the tiny CNN: conv -> bn -> relu -> maxpool -> flatten -> gemm -> softmax ---- */

typedef struct cnn_w {
    float *cw, *cb, *g, *be, *mu, *var, *fw, *fb;
} cnn_w;

static cnn_w cnn_weights(uint64_t seed) {
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    cnn_w w = {rnd(&r, 3 * 2 * 9, -0.5f, 0.5f), rnd(&r, 3, -0.2f, 0.2f), rnd(&r, 3, 0.5f, 1.5f),
               rnd(&r, 3, -0.3f, 0.3f),         rnd(&r, 3, -0.2f, 0.2f), rnd(&r, 3, 0.5f, 2.0f),
               rnd(&r, 4 * 27, -0.3f, 0.3f),    rnd(&r, 4, -0.1f, 0.1f)};
    return w;
}

static void cnn_free(cnn_w *w) {
    float **p[] = {&w->cw, &w->cb, &w->g, &w->be, &w->mu, &w->var, &w->fw, &w->fb};
    for (size_t i = 0; i < DYN_ARRAY_LEN(p); i++) free(*p[i]);
}

static void cnn_onnx(ob *b, const cnn_w *w) {
    ob_init(b, 13);
    static const int64_t xin[4] = {1, 2, 6, 6}, cw[4] = {3, 2, 3, 3}, c3[1] = {3}, fw[2] = {4, 27},
                         fb[1] = {4};
    ob_input(b, "x", 4, xin);
    ob_init_f(b, "conv.w", 4, cw, w->cw, 1);
    ob_init_f(b, "conv.b", 1, c3, w->cb, 0);
    ob_init_f(b, "bn.g", 1, c3, w->g, 1);
    ob_init_f(b, "bn.b", 1, c3, w->be, 0);
    ob_init_f(b, "bn.m", 1, c3, w->mu, 1);
    ob_init_f(b, "bn.v", 1, c3, w->var, 0);
    ob_init_f(b, "fc.w", 2, fw, w->fw, 1);
    ob_init_f(b, "fc.b", 1, fb, w->fb, 0);
    static const int64_t k3[2] = {3, 3}, p1[4] = {1, 1, 1, 1}, one[2] = {1, 1}, k2[2] = {2, 2};
    Onnx__NodeProto *n = ob_node(b, "Conv", "conv", "x,conv.w,conv.b", "c");
    ob_attr_list(b, n, "kernel_shape", 2, k3);
    ob_attr_list(b, n, "pads", 4, p1);
    ob_attr_list(b, n, "strides", 2, one);
    ob_attr_list(b, n, "dilations", 2, one);
    ob_attr_i(b, n, "group", 1);
    n = ob_node(b, "BatchNormalization", "bn", "c,bn.g,bn.b,bn.m,bn.v", "bn_out");
    ob_attr_f(b, n, "epsilon", 1e-5f);
    ob_attr_f(b, n, "momentum", 0.9f);
    ob_node(b, "Relu", "relu", "bn_out", "r");
    n = ob_node(b, "MaxPool", "pool", "r", "p");
    ob_attr_list(b, n, "kernel_shape", 2, k2);
    ob_attr_list(b, n, "strides", 2, k2);
    n = ob_node(b, "Flatten", "flat", "p", "f");
    ob_attr_i(b, n, "axis", 1);
    n = ob_node(b, "Gemm", "fc", "f,fc.w,fc.b", "logits");
    ob_attr_i(b, n, "transB", 1);
    ob_attr_f(b, n, "alpha", 1.0f);
    ob_node(b, "Softmax", "softmax", "logits", "prob");
    ob_output(b, "prob");
}

static dyn_model *cnn_engine(const cnn_w *w) {
    dyn_shape in = {3, {2, 6, 6}};
    dyn_model *m = dyn_model_new(&in);
    dyn_layer *l = mk("conv2d", "conv",
                      "{\"in_channels\":2,\"out_channels\":3,\"kernel\":3,"
                      "\"padding\":1}");
    setp(l, "weight", w->cw);
    setp(l, "bias", w->cb);
    add_seq(m, l);
    l = mk("batchnorm", "bn", "{\"channels\":3,\"eps\":1e-5}");
    setp(l, "weight", w->g);
    setp(l, "bias", w->be);
    setp(l, "running_mean", w->mu);
    setp(l, "running_var", w->var);
    add_seq(m, l);
    add_seq(m, mk("relu", "relu", "{}"));
    add_seq(m, mk("maxpool2d", "pool", "{\"kernel\":2}"));
    add_seq(m, mk("flatten", "flat", "{}"));
    l = mk("linear", "fc", "{\"in\":27,\"out\":4}");
    setp(l, "weight", w->fw);
    setp(l, "bias", w->fb);
    add_seq(m, l);
    return m;
}

START_TEST(cnn_matches_engine) {
    cnn_w w = cnn_weights(1);
    ob b;
    cnn_onnx(&b, &w);
    dyn_err err = {0};
    dyn_model *m = ob_load(&b, &err);
    ck_assert_msg(m != NULL, "%s", err.msg);
    ck_assert_int_eq(m->nnodes, 6);
    ck_assert_int_eq(m->input.ndim, 3);
    ck_assert_int_eq(m->input.d[0], 2);
    ck_assert_int_eq(m->input.d[2], 6);
    ck_assert_str_eq(json_string_value(json_object_get(m->info, "output")), "softmax");
    ck_assert_str_eq(json_string_value(json_object_get(m->info, "source")), "onnx");
    ck_assert_str_eq(m->nodes[0].layer->name, "conv");
    ck_assert_str_eq(m->nodes[5].layer->ops->name, "linear");
    dyn_model *ref = cnn_engine(&w);
    ck_assert_double_le(compare_models(m, ref, 3, 7), 1e-6);
    dyn_model_free(ref);
    dyn_model_free(m);

    /* The same model read from a file. */
    char path[] = "/tmp/dynd_test_onnx_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    size_t n;
    uint8_t *buf = ob_pack(&b, &n);
    ck_assert_int_eq((long)write(fd, buf, n), (long)n);
    close(fd);
    m = dyn_onnx_load(path, &err);
    unlink(path);
    ck_assert_msg(m != NULL, "%s", err.msg);
    ck_assert_int_eq(m->nnodes, 6);
    dyn_model_free(m);
    free(buf);
    ck_assert_ptr_null(dyn_onnx_load("/nonexistent/x.onnx", &err));
    ck_assert_int_eq(err.code, DYN_EIO);
    ob_free(&b);
    cnn_free(&w);
}
END_TEST

/* ---- a residual block: conv -> relu -> conv, + x, relu -> gap -> flatten(Reshape) -> gemm --- */

START_TEST(residual_matches_engine) {
    dyn_rng r;
    dyn_rng_seed(&r, 2);
    float *w1 = rnd(&r, 3 * 3 * 9, -0.3f, 0.3f), *w2 = rnd(&r, 3 * 3 * 9, -0.3f, 0.3f),
          *b2 = rnd(&r, 3, -0.1f, 0.1f), *fw = rnd(&r, 3 * 5, -0.5f, 0.5f),
          *fb = rnd(&r, 5, -0.1f, 0.1f);
    ob b;
    ob_init(&b, 17);
    static const int64_t xin[4] = {1, 3, 4, 4}, cw[4] = {3, 3, 3, 3}, c3[1] = {3}, fws[2] = {3, 5},
                         fbs[1] = {5}, shp[1] = {2}, shape_v[2] = {0, -1}, p1[4] = {1, 1, 1, 1};
    ob_input(&b, "x", 4, xin);
    ob_init_f(&b, "w1", 4, cw, w1, 1);
    ob_init_f(&b, "w2", 4, cw, w2, 0);
    ob_init_f(&b, "b2", 1, c3, b2, 1);
    ob_init_f(&b, "fw", 2, fws, fw, 1);
    ob_init_f(&b, "fb", 1, fbs, fb, 1);
    Onnx__NodeProto *n = ob_node(&b, "Conv", "/block/conv1/Conv", "x,w1", "c1");
    ob_attr_list(&b, n, "pads", 4, p1);
    ob_node(&b, "Relu", "", "c1", "r1");
    n = ob_node(&b, "Conv", "/block/conv2/Conv", "r1,w2,b2", "c2");
    ob_attr_list(&b, n, "pads", 4, p1);
    ob_node(&b, "Identity", "id", "c2", "c2i");
    ob_node(&b, "Add", "/block/Add", "c2i,x", "s");
    ob_node(&b, "Relu", "relu2", "s", "r2");
    n = ob_node(&b, "Dropout", "drop", "r2", "d");
    ob_node(&b, "GlobalAveragePool", "gap", "d", "g");
    n = ob_node(&b, "Constant", "shape", "", "shape_out");
    ob_attr_tensor(&b, n, "value",
                   ob_tensor(&b, "", ONNX__TENSOR_PROTO__DATA_TYPE__INT64, 1, shp, shape_v, 1));
    ob_node(&b, "Reshape", "reshape", "g,shape_out", "flat");
    n = ob_node(&b, "Gemm", "fc", "flat,fw,fb", "y");
    ob_attr_i(&b, n, "transB", 0);
    ob_output(&b, "y");
    dyn_err err = {0};
    dyn_model *m = ob_load(&b, &err);
    ck_assert_msg(m != NULL, "%s", err.msg);
    ck_assert_int_eq(m->nnodes, 8); /* conv relu conv add relu gap flatten linear */
    ck_assert_str_eq(m->nodes[3].layer->ops->name, "add");
    ck_assert_int_eq(m->nodes[3].inputs[0], 2);
    ck_assert_int_eq(m->nodes[3].inputs[1], -1);
    ck_assert_str_eq(m->nodes[1].layer->name, "relu_1"); /* unnamed node */
    ck_assert_str_eq(json_string_value(json_object_get(m->info, "output")), "logits");

    dyn_shape in = {3, {3, 4, 4}};
    dyn_model *ref = dyn_model_new(&in);
    dyn_layer *l = mk("conv2d", "c1",
                      "{\"in_channels\":3,\"out_channels\":3,\"kernel\":3,"
                      "\"padding\":1,\"bias\":0}");
    setp(l, "weight", w1);
    add_seq(ref, l);
    add_seq(ref, mk("relu", "r1", "{}"));
    l = mk("conv2d", "c2", "{\"in_channels\":3,\"out_channels\":3,\"kernel\":3,\"padding\":1}");
    setp(l, "weight", w2);
    setp(l, "bias", b2);
    add_seq(ref, l);
    int ins[2] = {2, -1};
    ck_assert_int_eq(dyn_model_add(ref, mk("add", "add", "{}"), ins, 2, &err), 3);
    add_seq(ref, mk("relu", "r2", "{}"));
    add_seq(ref, mk("globalavgpool", "gap", "{}"));
    add_seq(ref, mk("flatten", "flat", "{}"));
    l = mk("linear", "fc", "{\"in\":3,\"out\":5}");
    float fwt[15];
    for (int i = 0; i < 3; i++)
        for (int o = 0; o < 5; o++) fwt[o * 3 + i] = fw[i * 5 + o];
    setp(l, "weight", fwt);
    setp(l, "bias", fb);
    add_seq(ref, l);
    ck_assert_double_le(compare_models(m, ref, 4, 11), 1e-6);

    /* Save / load keeps the 2-input node. */
    char path[] = "/tmp/dynd_test_onnx_XXXXXX";
    int fd = mkstemp(path);
    ck_assert_int_ge(fd, 0);
    close(fd);
    ck_assert_msg(dyn_model_save(m, path, &err) == 0, "%s", err.msg);
    dyn_model *back = dyn_model_load(path, &err);
    unlink(path);
    ck_assert_msg(back != NULL, "%s", err.msg);
    ck_assert_double_eq(compare_models(m, back, 2, 5), 0.0);
    dyn_model_free(back);
    dyn_model_free(ref);
    dyn_model_free(m);
    ob_free(&b);
    free(w1);
    free(w2);
    free(b2);
    free(fw);
    free(fb);
}
END_TEST

/* ---- MatMul + Add(constant) folded into a bias, Gemm with transB = 0; naive reference ---- */

static void mlp_onnx(ob *b, const float *w1, const float *c1, const float *w2, const float *c2) {
    ob_init(b, 13);
    static const int64_t xin[2] = {1, 5}, w1s[2] = {5, 4}, c1s[1] = {4}, w2s[2] = {4, 3},
                         c2s[2] = {1, 3};
    ob_input(b, "x", 2, xin);
    ob_init_f(b, "w1", 2, w1s, w1, 1);
    ob_init_f(b, "c1", 1, c1s, c1, 0);
    ob_init_f(b, "w2", 2, w2s, w2, 1);
    ob_init_f(b, "c2", 2, c2s, c2, 1);
    ob_node(b, "MatMul", "mm", "x,w1", "h0");
    ob_node(b, "Add", "addb", "c1,h0", "h");
    ob_node(b, "Relu", "relu", "h", "hr");
    Onnx__NodeProto *n = ob_node(b, "Gemm", "fc2", "hr,w2,c2", "y");
    ob_attr_f(b, n, "beta", 1.0f);
    ob_output(b, "y");
}

START_TEST(matmul_add_fold) {
    dyn_rng r;
    dyn_rng_seed(&r, 3);
    float *w1 = rnd(&r, 20, -1, 1), *c1 = rnd(&r, 4, -1, 1), *w2 = rnd(&r, 12, -1, 1),
          *c2 = rnd(&r, 3, -1, 1), *x = rnd(&r, 2 * 5, -1, 1);
    ob b;
    mlp_onnx(&b, w1, c1, w2, c2);
    dyn_err err = {0};
    dyn_model *m = ob_load(&b, &err);
    ck_assert_msg(m != NULL, "%s", err.msg);
    ck_assert_int_eq(m->nnodes, 3);
    ck_assert_ptr_nonnull(dyn_layer_param(m->nodes[0].layer, "bias"));
    dyn_exec *e = dyn_exec_new(m, 2, 0, &err);
    ck_assert_ptr_nonnull(e);
    const dyn_tensor *y = dyn_exec_forward(e, x, 2);
    for (int s = 0; s < 2; s++) {
        double h[4], want[3];
        for (int j = 0; j < 4; j++) {
            h[j] = c1[j];
            for (int i = 0; i < 5; i++) h[j] += (double)x[s * 5 + i] * w1[i * 4 + j];
            h[j] = h[j] > 0 ? h[j] : 0;
        }
        for (int o = 0; o < 3; o++) {
            want[o] = c2[o];
            for (int j = 0; j < 4; j++) want[o] += h[j] * w2[j * 3 + o];
            ck_assert_double_eq_tol(y->data[s * 3 + o], want[o], 1e-5);
        }
    }
    dyn_exec_free(e);
    dyn_model_free(m);
    ob_free(&b);

    /* The producer's output has a second reader: folding would change it. */
    mlp_onnx(&b, w1, c1, w2, c2);
    b.nodes[2]->input[0] = ob_str(&b, "h0"); /* relu reads h0 too; h is now a dead end */
    expect_reject(&b, "other readers");
    ob_free(&b);
    free(w1);
    free(c1);
    free(w2);
    free(c2);
    free(x);
}
END_TEST

/* AveragePool keeps count_include_pad; Conv auto_pad SAME_UPPER becomes symmetric padding. */
START_TEST(avgpool_and_same_pad) {
    static const int64_t xin[4] = {1, 1, 3, 3}, k3[2] = {3, 3}, one[2] = {1, 1},
                         p1[4] = {1, 1, 1, 1}, ws[4] = {1, 1, 3, 3};
    static const float w[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    const float x[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    for (int cip = 0; cip < 2; cip++) {
        ob b;
        ob_init(&b, 13);
        ob_input(&b, "x", 4, xin);
        ob_init_f(&b, "w", 4, ws, w, 1);
        Onnx__NodeProto *n = ob_node(&b, "Conv", "conv", "x,w", "c");
        Onnx__AttributeProto *a =
            ob_attr(&b, n, "auto_pad", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__STRING);
        a->has_s = 1;
        a->s.data = (uint8_t *)ob_str(&b, "SAME_UPPER");
        a->s.len = 10;
        n = ob_node(&b, "AveragePool", "pool", "c", "y");
        ob_attr_list(&b, n, "kernel_shape", 2, k3);
        ob_attr_list(&b, n, "strides", 2, one);
        ob_attr_list(&b, n, "pads", 4, p1);
        ob_attr_i(&b, n, "count_include_pad", cip);
        ob_output(&b, "y");
        dyn_err err = {0};
        dyn_model *m = ob_load(&b, &err);
        ck_assert_msg(m != NULL, "%s", err.msg);
        dyn_exec *e = dyn_exec_new(m, 1, 0, &err);
        ck_assert_ptr_nonnull(e);
        const dyn_tensor *y = dyn_exec_forward(e, x, 1);
        ck_assert_int_eq(dyn_tensor_numel(y), 9);
        /* conv of ones with a 3x3 box, padding 1: 4 6 4 / 6 9 6 / 4 6 4 */
        const double c[9] = {4, 6, 4, 6, 9, 6, 4, 6, 4};
        /* centre output: mean of all 9 conv values either way */
        ck_assert_double_eq_tol(y->data[4], 49.0 / 9.0, 1e-5);
        /* corner: 4 real values (4 + 6 + 6 + 9 = 25) over 4 or 9 */
        ck_assert_double_eq_tol(y->data[0], (c[0] + c[1] + c[3] + c[4]) / (cip ? 9.0 : 4.0), 1e-5);
        dyn_exec_free(e);
        dyn_model_free(m);
        ob_free(&b);
    }
}
END_TEST

/* ---- malformed models ---- */

START_TEST(truncated_every_prefix) {
    dyn_rng r;
    dyn_rng_seed(&r, 4);
    float *w1 = rnd(&r, 20, -1, 1), *c1 = rnd(&r, 4, -1, 1), *w2 = rnd(&r, 12, -1, 1),
          *c2 = rnd(&r, 3, -1, 1);
    ob b;
    mlp_onnx(&b, w1, c1, w2, c2);
    size_t n;
    uint8_t *buf = ob_pack(&b, &n);
    dyn_err err = {0};
    dyn_model *m = dyn_onnx_load_bytes(buf, n, "t", &err);
    ck_assert_msg(m != NULL, "%s", err.msg);
    dyn_model_free(m);
    for (size_t len = 0; len < n; len++) {
        uint8_t *p = malloc(len + 1); /* exact size, so ASan sees any over-read */
        memcpy(p, buf, len);
        err.msg[0] = '\0';
        m = dyn_onnx_load_bytes(p, len, "t", &err);
        ck_assert_msg(m == NULL, "prefix of %zu / %zu bytes accepted", len, n);
        ck_assert_msg(strlen(err.msg) > 3, "prefix %zu: empty message", len);
        free(p);
    }
    /* Random bytes and flipped bytes never crash. */
    for (int t = 0; t < 300; t++) {
        uint8_t *p = malloc(n);
        memcpy(p, buf, n);
        for (int k = 0; k < 3; k++) p[dyn_rng_below(&r, (uint32_t)n)] = (uint8_t)dyn_rng_u64(&r);
        m = dyn_onnx_load_bytes(p, n, "t", &err);
        dyn_model_free(m);
        free(p);
    }
    free(buf);
    ob_free(&b);
    free(w1);
    free(c1);
    free(w2);
    free(c2);
}
END_TEST

static const int64_t k_xin[2] = {1, 4};

START_TEST(rejects_cycle) {
    ob b;
    ob_init(&b, 13);
    ob_input(&b, "x", 2, k_xin);
    ob_node(&b, "Relu", "a", "b_out", "a_out");
    ob_node(&b, "Relu", "b", "a_out", "b_out");
    ob_output(&b, "b_out");
    expect_reject(&b, "node 'a' (Relu): input 'b_out' is not produced by any earlier node");
    ob_free(&b);
}
END_TEST

START_TEST(rejects_unknown_op) {
    ob b;
    ob_init(&b, 13);
    ob_input(&b, "x", 2, k_xin);
    ob_node(&b, "Relu", "r", "x", "r_out");
    ob_node(&b, "Frobnicate", "frob1", "r_out", "y");
    ob_output(&b, "y");
    expect_reject(&b, "node 'frob1' (Frobnicate): operator not supported");
    ob_free(&b);

    ob_init(&b, 13);
    ob_input(&b, "x", 2, k_xin);
    Onnx__NodeProto *n = ob_node(&b, "Relu", "r", "x", "y");
    n->domain = ob_str(&b, "com.microsoft");
    ob_output(&b, "y");
    expect_reject(&b, "domain 'com.microsoft'");
    ob_free(&b);

    ob_init(&b, 13);
    ob_input(&b, "x", 2, k_xin);
    /* Softmax inside the graph is supported, but not across the batch. */
    n = ob_node(&b, "Softmax", "sm", "x", "s");
    ob_attr_i(&b, n, "axis", 0);
    ob_node(&b, "Relu", "r", "s", "y");
    ob_output(&b, "y");
    expect_reject(&b, "node 'sm' (Softmax): Softmax over axis 0");
    ob_free(&b);
}
END_TEST

static void conv_model(ob *b, int dtype) {
    ob_init(b, 13);
    static const int64_t xin[4] = {1, 1, 5, 5}, ws[4] = {2, 1, 3, 3};
    static const float w[18] = {0};
    static const double wd[18] = {0};
    ob_input(b, "x", 4, xin);
    b->inits[b->graph.n_initializer++] = ob_tensor(
        b, "w", dtype, 4, ws,
        dtype == ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT ? (const void *)w : (const void *)wd, 0);
    ob_node(b, "Conv", "conv", "x,w", "y");
    ob_output(b, "y");
}

START_TEST(rejects_attributes) {
    ob b;
    conv_model(&b, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    dyn_err err = {0};
    dyn_model *m = ob_load(&b, &err);
    ck_assert_msg(m != NULL, "%s", err.msg);
    dyn_model_free(m);
    ob_attr_i(&b, b.nodes[0], "frobnication", 3);
    expect_reject(&b, "node 'conv' (Conv): attribute 'frobnication' is not supported");
    ob_free(&b);

    static const int64_t asym[4] = {0, 0, 1, 1}, pads3[4] = {1, 1, 1, 1};
    conv_model(&b, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    ob_attr_list(&b, b.nodes[0], "pads", 4, asym);
    expect_reject(&b, "node 'conv' (Conv): asymmetric pads [0, 0, 1, 1]");
    ob_free(&b);

    conv_model(&b, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    ob_attr_list(&b, b.nodes[0], "pads", 4, pads3);
    ob_attr_i(&b, b.nodes[0], "group", 2);
    expect_reject(&b, "node 'conv' (Conv): weight [2, 1, ...] with group 2");
    ob_free(&b);

    /* Gemm with transA. */
    ob_init(&b, 13);
    static const int64_t ws[2] = {4, 4};
    static const float w[16] = {0};
    ob_input(&b, "x", 2, k_xin);
    ob_init_f(&b, "w", 2, ws, w, 1);
    Onnx__NodeProto *n = ob_node(&b, "Gemm", "fc", "x,w", "y");
    ob_attr_i(&b, n, "transA", 1);
    ob_output(&b, "y");
    expect_reject(&b, "node 'fc' (Gemm): transA = 1 is not supported");
    ob_free(&b);
}
END_TEST

START_TEST(rejects_initializers) {
    ob b;
    conv_model(&b, ONNX__TENSOR_PROTO__DATA_TYPE__DOUBLE);
    expect_reject(&b, "initializer 'w' has data type 11");
    ob_free(&b);

    /* An INT64 weight is read (INT64 is allowed for shapes) but refused as a weight. */
    conv_model(&b, ONNX__TENSOR_PROTO__DATA_TYPE__INT64);
    expect_reject(&b, "node 'conv' (Conv): input 1 ('w') must be FLOAT");
    ob_free(&b);

    conv_model(&b, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    b.inits[0]->has_data_location = 1;
    b.inits[0]->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    expect_reject(&b, "external data");
    ob_free(&b);

    conv_model(&b, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    b.inits[0]->n_float_data = 17; /* shape says 18 */
    expect_reject(&b, "has 18 elements by its shape but holds 17");
    ob_free(&b);

    conv_model(&b, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    b.inits[0]->float_data[5] = NAN;
    expect_reject(&b, "NaN or Inf");
    ob_free(&b);

    /* Fixed batch of 4, no opset, two outputs. */
    conv_model(&b, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    b.ins[0]->type->tensor_type->shape->dim[0]->value_case =
        ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
    b.ins[0]->type->tensor_type->shape->dim[0]->dim_value = 4;
    expect_reject(&b, "fixed batch of 4");
    ob_free(&b);
    conv_model(&b, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    b.model.n_opset_import = 0;
    expect_reject(&b, "opset_import");
    ob_free(&b);
    conv_model(&b, ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT);
    ob_output(&b, "x");
    expect_reject(&b, "2 outputs");
    ob_free(&b);

    /* Reshape to anything but [batch, features]. */
    ob_init(&b, 13);
    static const int64_t one[1] = {2}, bad[2] = {2, 2};
    ob_input(&b, "x", 2, k_xin);
    ob_init_i64(&b, "s", 1, one, bad);
    ob_node(&b, "Reshape", "rs", "x,s", "y");
    ob_output(&b, "y");
    expect_reject(&b, "node 'rs' (Reshape): reshape to [2, 2]");
    ob_free(&b);
}
END_TEST

/* ---- the add op ---- */

START_TEST(add_op_forward_backward) {
    dyn_layer *l = mk("add", "a", "{}");
    ck_assert_int_eq(l->ninputs, 2);
    dyn_err err = {0};
    dyn_shape s[2] = {{2, {3, 4}}, {2, {3, 4}}}, o;
    ck_assert_int_eq(l->ops->infer(l, s, &o, &err), 0);
    ck_assert(dyn_shape_eq(&o, &s[0]));
    s[1].d[1] = 5;
    ck_assert_int_eq(l->ops->infer(l, s, &o, &err), DYN_EINVAL);
    ck_assert_ptr_nonnull(strstr(err.msg, "same shape"));

    /* Finite differences of loss = sum(y * R) with respect to both inputs. */
    dyn_rng r;
    dyn_rng_seed(&r, 5);
    const int64_t sh[2] = {3, 4};
    float *a = rnd(&r, 12, -1, 1), *b = rnd(&r, 12, -1, 1), *R = rnd(&r, 12, -1, 1);
    float y[12], da[12], db[12];
    dyn_tensor xs[2] = {dyn_tensor_view(a, 2, sh), dyn_tensor_view(b, 2, sh)};
    dyn_tensor yt = dyn_tensor_view(y, 2, sh), dy = dyn_tensor_view(R, 2, sh);
    dyn_tensor dxs[2] = {dyn_tensor_view(da, 2, sh), dyn_tensor_view(db, 2, sh)};
    l->ops->forward(l, xs, &yt, NULL, 1);
    for (int i = 0; i < 12; i++) ck_assert_float_eq(y[i], a[i] + b[i]);
    l->ops->backward(l, xs, &yt, &dy, dxs, NULL);
    const float h = 1e-2f;
    for (int k = 0; k < 2; k++) {
        float *x = k ? b : a, *an = k ? db : da;
        for (int i = 0; i < 12; i++) {
            float keep = x[i];
            double lp = 0, lm = 0;
            x[i] = keep + h;
            l->ops->forward(l, xs, &yt, NULL, 1);
            for (int j = 0; j < 12; j++) lp += (double)y[j] * R[j];
            x[i] = keep - h;
            l->ops->forward(l, xs, &yt, NULL, 1);
            for (int j = 0; j < 12; j++) lm += (double)y[j] * R[j];
            x[i] = keep;
            double fd = (lp - lm) / (2.0 * h);
            ck_assert_double_eq_tol(fd, an[i], 1e-3 + 1e-2 * fabs(fd));
        }
    }
    /* Only the requested input gradient is written. */
    dxs[0].data = NULL;
    memset(db, 0, sizeof db);
    l->ops->backward(l, xs, &yt, &dy, dxs, NULL);
    for (int i = 0; i < 12; i++) ck_assert_float_eq(db[i], R[i]);
    free(a);
    free(b);
    free(R);
    dyn_layer_free(l);
}
END_TEST

/* add(h, h) through an exec: the gradient reaching h is summed (2 * dout). */
START_TEST(add_op_in_model_training) {
    dyn_shape in = {1, {3}};
    dyn_model *m = dyn_model_new(&in), *m2 = dyn_model_new(&in);
    dyn_err err = {0};
    add_seq(m, mk("linear", "fc", "{\"in\":3,\"out\":2}"));
    int ins[2] = {0, 0};
    ck_assert_int_eq(dyn_model_add(m, mk("add", "twice", "{}"), ins, 2, &err), 1);
    add_seq(m2, mk("linear", "fc", "{\"in\":3,\"out\":2}"));
    dyn_model_init(m, 9);
    dyn_model_init(m2, 9);
    dyn_exec *e = dyn_exec_new(m, 2, 1, &err), *e2 = dyn_exec_new(m2, 2, 1, &err);
    ck_assert_ptr_nonnull(e);
    ck_assert_ptr_nonnull(e2);
    const float x[6] = {0.5f, -1, 2, 1, 0.25f, -0.5f}, dout[4] = {1, -2, 0.5f, 3};
    float dout2[4];
    for (int i = 0; i < 4; i++) dout2[i] = 2 * dout[i];
    const dyn_tensor *y = dyn_exec_forward(e, x, 2), *y2 = dyn_exec_forward(e2, x, 2);
    for (int i = 0; i < 4; i++) ck_assert_float_eq_tol(y->data[i], 2 * y2->data[i], 1e-6);
    dyn_model_zero_grad(m);
    dyn_model_zero_grad(m2);
    dyn_exec_backward(e, dout);
    dyn_exec_backward(e2, dout2);
    const dyn_param *g = &m->nodes[0].layer->params[0], *g2 = &m2->nodes[0].layer->params[0];
    for (int i = 0; i < 6; i++) ck_assert_float_eq_tol(g->grad.data[i], g2->grad.data[i], 1e-5);
    dyn_exec_free(e);
    dyn_exec_free(e2);
    dyn_model_free(m);
    dyn_model_free(m2);
}
END_TEST

/* ---- metadata_props: dynd.preprocess, dynd.labels ---- */

/* An image model [1, 4, 4] -> Flatten -> Gemm (16 -> 3) with the given metadata_props. */
static void meta_onnx(ob *b, const float *w, const char *const *kv, int nkv) {
    ob_init(b, 13);
    static const int64_t xin[4] = {1, 1, 4, 4}, ws[2] = {16, 3}, cs[1] = {3};
    static const float c0[3] = {0, 0, 0};
    ob_input(b, "x", 4, xin);
    ob_init_f(b, "w", 2, ws, w, 1);
    ob_init_f(b, "c", 1, cs, c0, 1);
    ob_node(b, "Flatten", "flat", "x", "f");
    ob_node(b, "Gemm", "fc", "f,w,c", "y");
    ob_output(b, "y");
    b->model.n_metadata_props = (size_t)nkv;
    b->model.metadata_props = ob_mem(b, (size_t)(nkv ? nkv : 1) * sizeof(void *));
    for (int i = 0; i < nkv; i++) {
        Onnx__StringStringEntryProto *e = ob_mem(b, sizeof *e), ei = ONNX__STRING_STRING_ENTRY_PROTO__INIT;
        *e = ei;
        e->key = ob_str(b, kv[2 * i]);
        e->value = ob_str(b, kv[2 * i + 1]);
        b->model.metadata_props[i] = e;
    }
}

START_TEST(metadata_props_read) {
    dyn_rng r;
    dyn_rng_seed(&r, 9);
    float *w = rnd(&r, 48, -1, 1);
    ob b;
    const char *good[] = {"dynd.preprocess", ("{\"color\": \"gray\", \"steps\": [{\"pad\": 1}], "
                                              "\"mean\": [0.5], \"std\": [0.25]}"),
                          "dynd.labels", "[\"cat\", \"dog\", \"emu\"]", "other", "ignored"};
    meta_onnx(&b, w, good, 3);
    dyn_err err = {0};
    dyn_model *m = ob_load(&b, &err);
    ck_assert_msg(m != NULL, "%s", err.msg);
    ck_assert_ptr_nonnull(m->preprocess);
    ck_assert_int_eq(json_array_size(json_object_get(m->preprocess, "steps")), 1);
    ck_assert_int_eq(m->nlabels, 3);
    ck_assert_str_eq(m->labels[2], "emu");
    dyn_model_free(m);
    ob_free(&b);
    /* none: no metadata */
    meta_onnx(&b, w, good, 0);
    m = ob_load(&b, &err);
    ck_assert_ptr_nonnull(m);
    ck_assert_ptr_null(m->preprocess);
    ck_assert_int_eq(m->nlabels, 0);
    dyn_model_free(m);
    ob_free(&b);
    /* bad values: import errors naming the key */
    static const char *const bad[][2] = {
        {"dynd.preprocess", "{not json"},
        {"dynd.preprocess", "{\"color\": \"rgb\"}"},                  /* 1-channel input */
        {"dynd.preprocess", "{\"steps\": [{\"resize\": [5, 5]}]}"},   /* ends at 5x5, not 4x4 */
        {"dynd.preprocess", "{\"stpes\": []}"},                         /* unknown key */
        {"dynd.labels", "[\"a\", \"b\"]"},                            /* 2 labels, 3 outputs */
        {"dynd.labels", "[1, 2, 3]"},
        {"dynd.labels", "{}"},
    };
    for (size_t i = 0; i < DYN_ARRAY_LEN(bad); i++) {
        const char *kv[2] = {bad[i][0], bad[i][1]};
        meta_onnx(&b, w, kv, 1);
        expect_reject(&b, bad[i][0]);
        ob_free(&b);
    }
    free(w);
}
END_TEST

static Suite *onnx_suite(void) {
    Suite *s = suite_create("onnx");
    TCase *tc = tcase_create("import");
    tcase_add_test(tc, cnn_matches_engine);
    tcase_add_test(tc, residual_matches_engine);
    tcase_add_test(tc, matmul_add_fold);
    tcase_add_test(tc, avgpool_and_same_pad);
    suite_add_tcase(s, tc);
    tc = tcase_create("malformed");
    tcase_add_test(tc, truncated_every_prefix);
    tcase_add_test(tc, rejects_cycle);
    tcase_add_test(tc, rejects_unknown_op);
    tcase_add_test(tc, rejects_attributes);
    tcase_add_test(tc, rejects_initializers);
    suite_add_tcase(s, tc);
    tc = tcase_create("add");
    tcase_add_test(tc, add_op_forward_backward);
    tcase_add_test(tc, add_op_in_model_training);
    tcase_add_test(tc, metadata_props_read);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(onnx_suite)
