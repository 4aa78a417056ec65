/* test_onnx_ops.c — the element-wise, clip, sigmoid, concat and scale ops (engine/ops/eltwise.c,
 * unary.c, concat.c, scale.c) and their ONNX import (Sub, Mul, Div, Clip, Sigmoid, Concat, and
 * Add / Mul / Sub / Div with a per-channel constant).
 *
 * ONNX graphs are built with the protobuf-c structs (tests/unit/onnx_build.h), imported,
 * run, and compared with a hand computation. Every new layer's backward is checked against
 * central finite differences. Unsupported forms (Concat on axis 2, broadcasting that is not
 * per channel) must be rejected with a message naming the node, the op and the shapes.
 */
#include <math.h>
#include <string.h>

#include "io/onnx.h"
#include "model.h"
#include "onnx.pb-c.h"
#include "testutil.h"

#include "onnx_build.h"

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

/* Imports b (must succeed), runs it on x (batch rows) and returns a copy of the output. */
static float *run_onnx(ob *b, const float *x, int batch, int64_t *nout, dyn_model **keep) {
    dyn_err err = {0};
    dyn_model *m = ob_load(b, &err);
    ck_assert_msg(m != NULL, "%s", err.msg);
    dyn_exec *e = dyn_exec_new(m, batch, 0, &err);
    ck_assert_msg(e != NULL, "%s", err.msg);
    const dyn_tensor *y = dyn_exec_forward(e, x, batch);
    *nout = dyn_tensor_numel(y);
    float *out = malloc((size_t)*nout * sizeof(float));
    ck_assert_ptr_nonnull(out);
    memcpy(out, y->data, (size_t)*nout * sizeof(float));
    dyn_exec_free(e);
    if (keep)
        *keep = m;
    else
        dyn_model_free(m);
    return out;
}

static double sigm(double v) { return 1.0 / (1.0 + exp(-v)); }

/* ---- two-activation ops, Sigmoid, Clip (opset 13 inputs), Concat ---- */

/* x [N, 2, 2, 2]:  sg = Sigmoid(x); m = Mul(x, sg); c2 = Clip(x, 1, 3); s = Sub(m, x);
 * d = Div(s, c2); y = Concat(d, m, axis 1) -> [N, 4, 2, 2]. */
START_TEST(activation_ops_import) {
    ob b;
    ob_init(&b, 13);
    static const int64_t xin[4] = {1, 2, 2, 2}, scalar[1] = {1};
    static const float one[1] = {1.0f}, three = 3.0f;
    ob_input(&b, "x", 4, xin);
    ob_init_f(&b, "lo", 0, scalar, one, 1);
    Onnx__NodeProto *n = ob_node(&b, "Constant", "hi_c", "", "hi");
    ob_attr_tensor(&b, n, "value",
                   ob_tensor(&b, "hi_t", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 0, scalar, &three,
                             0));
    ob_node(&b, "Sigmoid", "sg", "x", "sg");
    ob_node(&b, "Mul", "mul", "x,sg", "m");
    ob_node(&b, "Clip", "clip", "x,lo,hi", "c2");
    ob_node(&b, "Sub", "sub", "m,x", "s");
    ob_node(&b, "Div", "div", "s,c2", "d");
    n = ob_node(&b, "Concat", "cat", "d,m", "y");
    ob_attr_i(&b, n, "axis", 1);
    ob_output(&b, "y");

    dyn_rng r;
    dyn_rng_seed(&r, 11);
    const int batch = 2;
    float *x = rnd(&r, batch * 8, -2.0f, 4.0f);
    int64_t nout;
    dyn_model *m;
    float *y = run_onnx(&b, x, batch, &nout, &m);
    ck_assert_int_eq(nout, batch * 16);
    static const char *const ops[] = {"sigmoid", "mul", "clip", "sub", "div", "concat"};
    ck_assert_int_eq(m->nnodes, 6);
    for (int k = 0; k < 6; k++) ck_assert_str_eq(m->nodes[k].layer->ops->name, ops[k]);
    ck_assert_int_eq(m->nodes[5].layer->ninputs, 2);
    for (int s = 0; s < batch; s++)
        for (int i = 0; i < 8; i++) {
            double v = x[s * 8 + i], mm = v * sigm(v), cl = v < 1 ? 1 : (v > 3 ? 3 : v);
            ck_assert_double_eq_tol(y[s * 16 + i], (mm - v) / cl, 1e-5);
            ck_assert_double_eq_tol(y[s * 16 + 8 + i], mm, 1e-5);
        }
    free(y);
    free(x);
    dyn_model_free(m);
    ob_free(&b);
}
END_TEST

/* Clip with attributes (opset < 11; Relu6) and with only a max input (opset 11). */
START_TEST(clip_forms) {
    static const int64_t xin[2] = {1, 6}, scalar[1] = {1};
    const float x[6] = {-3.0f, -0.5f, 0.0f, 2.5f, 6.0f, 9.0f};
    for (int form = 0; form < 2; form++) {
        ob b;
        ob_init(&b, form == 0 ? 10 : 11);
        ob_input(&b, "x", 2, xin);
        if (form == 0) {
            Onnx__NodeProto *n = ob_node(&b, "Clip", "relu6", "x", "y");
            ob_attr_f(&b, n, "min", 0.0f);
            ob_attr_f(&b, n, "max", 6.0f);
        } else {
            static const float mx[1] = {2.0f};
            ob_init_f(&b, "mx", 0, scalar, mx, 0);
            ob_node(&b, "Clip", "cmax", "x,,mx", "y");
        }
        ob_output(&b, "y");
        int64_t nout;
        float *y = run_onnx(&b, x, 1, &nout, NULL);
        ck_assert_int_eq(nout, 6);
        for (int i = 0; i < 6; i++) {
            double want = form == 0 ? fmin(fmax(x[i], 0.0), 6.0) : fmin(x[i], 2.0);
            ck_assert_double_eq_tol(y[i], want, 1e-7);
        }
        free(y);
        ob_free(&b);
    }
}
END_TEST

/* Concat of 6 inputs becomes a chain of engine concats (at most 4 inputs each). */
START_TEST(concat_chain) {
    ob b;
    ob_init(&b, 13);
    static const int64_t xin[3] = {1, 1, 3};
    ob_input(&b, "x", 3, xin);
    ob_node(&b, "Relu", "r", "x", "r");
    ob_node(&b, "Sigmoid", "sg", "x", "sg");
    Onnx__NodeProto *n = ob_node(&b, "Concat", "cat", "x,r,sg,x,r,sg", "y");
    ob_attr_i(&b, n, "axis", -2); /* = 1 for rank 3 */
    ob_output(&b, "y");
    const float x[6] = {-1.0f, 0.5f, 2.0f, 3.0f, -0.25f, 0.0f};
    int64_t nout;
    dyn_model *m;
    float *y = run_onnx(&b, x, 2, &nout, &m);
    ck_assert_int_eq(nout, 2 * 18);
    ck_assert_int_eq(m->nnodes, 4);
    ck_assert_int_eq(m->nodes[2].layer->ninputs, 4);
    ck_assert_int_eq(m->nodes[3].layer->ninputs, 3);
    ck_assert_str_eq(m->nodes[3].layer->ops->name, "concat");
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 6; k++)
            for (int i = 0; i < 3; i++) {
                double v = x[s * 3 + i], want = k % 3 == 0 ? v : k % 3 == 1 ? fmax(v, 0) : sigm(v);
                ck_assert_double_eq_tol(y[s * 18 + k * 3 + i], want, 1e-6);
            }
    free(y);
    dyn_model_free(m);
    ob_free(&b);
}
END_TEST

/* ---- activation (op) constant: the scale op ---- */

/* x [N, 3, 2, 2]: a = Mul(x, k[3,1,1]); s = Sub(0.5, a); d = Div(s, q[1,3,1,1]);
 * y = Add(d, k[3,1,1]) (not after a linear / conv: a scale too). */
START_TEST(constant_broadcast_import) {
    ob b;
    ob_init(&b, 13);
    static const int64_t xin[4] = {1, 3, 2, 2}, k3[3] = {3, 1, 1}, q4[4] = {1, 3, 1, 1},
                         sc[1] = {1};
    static const float k[3] = {2.0f, -1.0f, 0.5f}, q[3] = {4.0f, -2.0f, 0.25f}, half[1] = {0.5f};
    ob_input(&b, "x", 4, xin);
    ob_init_f(&b, "k", 3, k3, k, 1);
    ob_init_f(&b, "q", 4, q4, q, 0);
    ob_init_f(&b, "half", 0, sc, half, 0);
    ob_node(&b, "Mul", "mul", "x,k", "a");
    ob_node(&b, "Sub", "sub", "half,a", "s");
    ob_node(&b, "Div", "div", "s,q", "d");
    ob_node(&b, "Add", "add", "d,k", "y");
    ob_output(&b, "y");
    dyn_rng r;
    dyn_rng_seed(&r, 12);
    float *x = rnd(&r, 2 * 12, -1.0f, 1.0f);
    int64_t nout;
    dyn_model *m;
    float *y = run_onnx(&b, x, 2, &nout, &m);
    ck_assert_int_eq(nout, 24);
    ck_assert_int_eq(m->nnodes, 4);
    for (int i = 0; i < 4; i++) {
        ck_assert_str_eq(m->nodes[i].layer->ops->name, "scale");
        ck_assert_int_eq(m->nodes[i].layer->params[0].trainable, 0);
    }
    for (int s = 0; s < 2; s++)
        for (int ch = 0; ch < 3; ch++)
            for (int i = 0; i < 4; i++) {
                int at = s * 12 + ch * 4 + i;
                double want = (0.5 - (double)x[at] * k[ch]) / q[ch] + k[ch];
                ck_assert_double_eq_tol(y[at], want, 1e-5);
            }
    free(y);
    free(x);
    dyn_model_free(m);
    ob_free(&b);

    /* [N, 3] with a [3] constant and a scalar: per feature. */
    ob_init(&b, 13);
    static const int64_t xin2[2] = {1, 3}, c3[1] = {3};
    ob_input(&b, "x", 2, xin2);
    ob_init_f(&b, "k", 1, c3, k, 0);
    ob_init_f(&b, "half", 0, sc, half, 0);
    ob_node(&b, "Sub", "sub", "x,k", "s");
    ob_node(&b, "Mul", "mul", "half,s", "y");
    ob_output(&b, "y");
    const float x2[3] = {1.0f, 2.0f, 3.0f};
    y = run_onnx(&b, x2, 1, &nout, NULL);
    for (int i = 0; i < 3; i++) ck_assert_double_eq_tol(y[i], 0.5 * (x2[i] - k[i]), 1e-6);
    free(y);
    ob_free(&b);
}
END_TEST

/* ---- rejections ---- */

START_TEST(rejects_unsupported) {
    static const int64_t xin[4] = {1, 3, 2, 2}, w2[1] = {2}, k3[3] = {3, 1, 1}, sc[1] = {1};
    static const float two[2] = {1.0f, 2.0f}, z3[3] = {1.0f, 0.0f, 1.0f}, one[1] = {1.0f};
    ob b;
    ob_init(&b, 13);
    ob_input(&b, "x", 4, xin);
    ob_node(&b, "Relu", "r", "x", "r");
    Onnx__NodeProto *n = ob_node(&b, "Concat", "cat", "x,r", "y");
    ob_attr_i(&b, n, "axis", 2);
    ob_output(&b, "y");
    expect_reject(&b, "node 'cat' (Concat): axis 2 of [1, 3, 2, 2]: only axis 1");
    ob_free(&b);

    /* A [2] constant aligns with W, not with the channels. */
    ob_init(&b, 13);
    ob_input(&b, "x", 4, xin);
    ob_init_f(&b, "w", 1, w2, two, 0);
    ob_node(&b, "Mul", "mul", "x,w", "y");
    ob_output(&b, "y");
    expect_reject(&b, "node 'mul' (Mul): constant 'w' of shape [2] does not broadcast per "
                      "channel over the activation of shape [1, 3, 2, 2]");
    ob_free(&b);

    /* Two activations of different shapes (an SE-style gate). */
    ob_init(&b, 13);
    ob_input(&b, "x", 4, xin);
    ob_node(&b, "GlobalAveragePool", "gap", "x", "g");
    ob_node(&b, "Mul", "gate", "x,g", "y");
    ob_output(&b, "y");
    expect_reject(&b, "node 'gate' (Mul): inputs of shapes [1, 3, 2, 2] and [1, 3, 1, 1]: "
                      "broadcasting between two activations is not supported");
    ob_free(&b);

    ob_init(&b, 13);
    ob_input(&b, "x", 4, xin);
    ob_node(&b, "GlobalAveragePool", "gap", "x", "g");
    n = ob_node(&b, "Concat", "cat", "x,g", "y");
    ob_attr_i(&b, n, "axis", 1);
    ob_output(&b, "y");
    expect_reject(&b, "node 'cat' (Concat): input 1 of shape [1, 3, 1, 1] does not match input 0 "
                      "of shape [1, 3, 2, 2]");
    ob_free(&b);

    /* constant / activation; division by a zero constant. */
    ob_init(&b, 13);
    ob_input(&b, "x", 4, xin);
    ob_init_f(&b, "one", 0, sc, one, 0);
    ob_node(&b, "Div", "recip", "one,x", "y");
    ob_output(&b, "y");
    expect_reject(&b, "node 'recip' (Div): dividing a constant by an activation");
    ob_free(&b);
    ob_init(&b, 13);
    ob_input(&b, "x", 4, xin);
    ob_init_f(&b, "z", 3, k3, z3, 0);
    ob_node(&b, "Div", "dz", "x,z", "y");
    ob_output(&b, "y");
    expect_reject(&b, "node 'dz' (Div): divides by a constant holding 0 (channel 1)");
    ob_free(&b);

    /* Clip bound from an activation; Clip attributes at opset 11; min > max. */
    ob_init(&b, 13);
    ob_input(&b, "x", 4, xin);
    ob_node(&b, "Relu", "r", "x", "r");
    ob_node(&b, "Clip", "clip", "x,r", "y");
    ob_output(&b, "y");
    expect_reject(&b, "node 'clip' (Clip): min (input 1) must be a constant FLOAT scalar");
    ob_free(&b);
    ob_init(&b, 13);
    ob_input(&b, "x", 4, xin);
    n = ob_node(&b, "Clip", "clip", "x", "y");
    ob_attr_f(&b, n, "max", 6.0f);
    ob_output(&b, "y");
    expect_reject(&b, "node 'clip' (Clip): attribute 'max' is not supported");
    ob_free(&b);
    ob_init(&b, 10);
    ob_input(&b, "x", 4, xin);
    n = ob_node(&b, "Clip", "clip", "x", "y");
    ob_attr_f(&b, n, "min", 2.0f);
    ob_attr_f(&b, n, "max", 1.0f);
    ob_output(&b, "y");
    expect_reject(&b, "node 'clip' (Clip): min 2 is greater than max 1");
    ob_free(&b);
}
END_TEST

/* ---- the layers: attributes, shapes, finite-difference gradients ---- */

/* FD check of an n-input layer (loss = sum(y * R)) for inputs of shapes sh[0..nin-1]; inputs
 * of index >= pos_from are drawn from [0.5, 2] (divisors), others from [-1, 1]. */
static void gradcheck_multi(dyn_layer *l, const dyn_shape *sh, int nin, int pos_from,
                            uint64_t seed) {
    dyn_err err = {0};
    dyn_shape out;
    ck_assert_msg(l->ops->infer(l, sh, &out, &err) == 0, "%s", err.msg);
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    dyn_tensor xs[DYN_LAYER_MAX_INPUTS], dxs[DYN_LAYER_MAX_INPUTS], y, dy;
    for (int k = 0; k < nin; k++) {
        ck_assert_int_eq(dyn_tensor_init_shape(&xs[k], &sh[k], NULL), 0);
        ck_assert_int_eq(dyn_tensor_init_shape(&dxs[k], &sh[k], NULL), 0);
        tu_fill_uniform(xs[k].data, dyn_tensor_numel(&xs[k]), &r, k >= pos_from ? 0.5f : -1.0f,
                        k >= pos_from ? 2.0f : 1.0f);
    }
    ck_assert_int_eq(dyn_tensor_init_shape(&y, &out, NULL), 0);
    ck_assert_int_eq(dyn_tensor_init_shape(&dy, &out, NULL), 0);
    int64_t ny = dyn_tensor_numel(&y);
    tu_fill_uniform(dy.data, ny, &r, -1.0f, 1.0f);
    l->ops->forward(l, xs, &y, NULL, 1);
    l->ops->backward(l, xs, &y, &dy, dxs, NULL);
    const float h = 1e-2f;
    for (int k = 0; k < nin; k++)
        for (int64_t i = 0; i < dyn_tensor_numel(&xs[k]); i++) {
            float keep = xs[k].data[i];
            double lp = 0, lm = 0;
            xs[k].data[i] = keep + h;
            l->ops->forward(l, xs, &y, NULL, 0);
            for (int64_t j = 0; j < ny; j++) lp += (double)y.data[j] * dy.data[j];
            xs[k].data[i] = keep - h;
            l->ops->forward(l, xs, &y, NULL, 0);
            for (int64_t j = 0; j < ny; j++) lm += (double)y.data[j] * dy.data[j];
            xs[k].data[i] = keep;
            double fd = (lp - lm) / (2.0 * h);
            ck_assert_msg(fabs(fd - dxs[k].data[i]) <= 2e-3 + 1e-2 * fabs(fd),
                          "%s: input %d [%lld]: analytic %g, numeric %g", l->ops->name, k,
                          (long long)i, (double)dxs[k].data[i], fd);
        }
    /* Only requested input gradients are written. */
    for (int k = 0; k < nin; k++) {
        for (int j = 0; j < nin; j++) dyn_tensor_zero(&dxs[j]);
        dyn_tensor d2[DYN_LAYER_MAX_INPUTS];
        for (int j = 0; j < nin; j++) d2[j] = dxs[j];
        for (int j = 0; j < nin; j++)
            if (j != k) d2[j].data = NULL;
        l->ops->backward(l, xs, &y, &dy, d2, NULL);
        for (int j = 0; j < nin; j++)
            if (j != k)
                for (int64_t i = 0; i < dyn_tensor_numel(&dxs[j]); i++)
                    ck_assert_float_eq(dxs[j].data[i], 0.0f);
    }
    for (int k = 0; k < nin; k++) {
        dyn_tensor_release(&xs[k]);
        dyn_tensor_release(&dxs[k]);
    }
    dyn_tensor_release(&y);
    dyn_tensor_release(&dy);
}

START_TEST(binary_layers_gradcheck) {
    static const char *const ops[] = {"mul", "sub", "div"};
    dyn_shape s[2] = {{4, {2, 3, 2, 2}}, {4, {2, 3, 2, 2}}}, o;
    for (size_t i = 0; i < DYN_ARRAY_LEN(ops); i++) {
        dyn_layer *l = mk(ops[i], "b", "{}");
        ck_assert_int_eq(l->ninputs, 2);
        gradcheck_multi(l, s, 2, 1, 20 + i);
        dyn_err err = {0};
        dyn_shape bad[2] = {s[0], {4, {2, 3, 1, 1}}};
        ck_assert_int_eq(l->ops->infer(l, bad, &o, &err), DYN_EINVAL);
        ck_assert_ptr_nonnull(strstr(err.msg, "same shape"));
        dyn_layer_free(l);
    }
}
END_TEST

START_TEST(concat_layer) {
    dyn_err err = {0};
    for (int nin = 2; nin <= 4; nin++) {
        char a[64];
        snprintf(a, sizeof a, "{\"axis\":1,\"inputs\":%d}", nin);
        dyn_layer *l = mk("concat", "cat", a);
        ck_assert_int_eq(l->ninputs, nin);
        json_t *at = l->ops->attrs(l);
        ck_assert_int_eq(json_integer_value(json_object_get(at, "inputs")), nin);
        json_decref(at);
        dyn_shape s[4] = {{4, {2, 1, 2, 3}}, {4, {2, 2, 2, 3}}, {4, {2, 3, 2, 3}},
                          {4, {2, 1, 2, 3}}},
                  o;
        ck_assert_int_eq(l->ops->infer(l, s, &o, &err), 0);
        ck_assert_int_eq(o.d[1], nin == 2 ? 3 : nin == 3 ? 6 : 7);
        gradcheck_multi(l, s, nin, nin, 30 + (uint64_t)nin);
        s[1].d[3] = 4;
        ck_assert_int_eq(l->ops->infer(l, s, &o, &err), DYN_EINVAL);
        ck_assert_ptr_nonnull(strstr(err.msg, "must match outside axis 1"));
        dyn_layer_free(l);
    }
    /* Forward by hand: [1,1,2] ++ [1,2,2]. */
    dyn_layer *l = mk("concat", "cat", "{}");
    float a[2] = {1, 2}, b[4] = {3, 4, 5, 6}, y[6];
    const int64_t sa[3] = {1, 1, 2}, sb[3] = {1, 2, 2}, sy[3] = {1, 3, 2};
    dyn_tensor xs[2] = {dyn_tensor_view(a, 3, sa), dyn_tensor_view(b, 3, sb)};
    dyn_tensor yt = dyn_tensor_view(y, 3, sy);
    l->ops->forward(l, xs, &yt, NULL, 0);
    for (int i = 0; i < 6; i++) ck_assert_float_eq(y[i], (float)(i + 1));
    dyn_layer_free(l);
    /* Model: a 3-input concat through dyn_model_add. */
    dyn_shape in = {1, {2}};
    dyn_model *m = dyn_model_new(&in);
    int ins[3] = {-1, -1, -1};
    ck_assert_int_eq(dyn_model_add(m, mk("concat", "c3", "{\"inputs\":3}"), ins, 3, &err), 0);
    ck_assert_int_lt(dyn_model_add(m, mk("concat", "c2", "{}"), ins, 3, &err), 0);
    ck_assert_int_eq(dyn_model_outputs(m), 6);
    dyn_model_free(m);

    json_t *bad = json_pack("{s:i}", "axis", 2);
    ck_assert_ptr_null(dyn_layer_create("concat", "c", bad, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "axis 2 is not supported"));
    json_decref(bad);
    bad = json_pack("{s:i}", "inputs", 5);
    ck_assert_ptr_null(dyn_layer_create("concat", "c", bad, &err));
    json_decref(bad);
}
END_TEST

START_TEST(unary_layers_gradcheck) {
    dyn_shape s = {4, {2, 3, 2, 2}};
    dyn_layer *l = mk("sigmoid", "sg", "{}");
    ck_assert_int_eq(tu_gradcheck(l, &s, 1, 40, 48, 1e-2f, 1e-3, 1e-2), 0);
    float x[3] = {-100.0f, 0.0f, 100.0f}, y[3];
    const int64_t s3[2] = {1, 3};
    dyn_tensor xt = dyn_tensor_view(x, 2, s3), yt = dyn_tensor_view(y, 2, s3);
    l->ops->forward(l, &xt, &yt, NULL, 0);
    ck_assert_float_eq_tol(y[0], 0.0f, 1e-30f);
    ck_assert_float_eq(y[1], 0.5f);
    ck_assert_float_eq(y[2], 1.0f);
    dyn_layer_free(l);

    l = mk("clip", "c", "{\"min\":-0.5,\"max\":0.25}");
    ck_assert_int_eq(tu_gradcheck(l, &s, 1, 41, 48, 1e-3f, 1e-3, 1e-2), 0);
    json_t *a = l->ops->attrs(l);
    ck_assert_double_eq(json_number_value(json_object_get(a, "min")), -0.5);
    ck_assert_double_eq(json_number_value(json_object_get(a, "max")), 0.25);
    json_decref(a);
    l->ops->forward(l, &xt, &yt, NULL, 0);
    ck_assert_float_eq(y[0], -0.5f);
    ck_assert_float_eq(y[1], 0.0f);
    ck_assert_float_eq(y[2], 0.25f);
    dyn_layer_free(l);

    l = mk("clip", "c", "{\"max\":1}"); /* only an upper bound */
    a = l->ops->attrs(l);
    ck_assert_ptr_null(json_object_get(a, "min"));
    json_decref(a);
    l->ops->forward(l, &xt, &yt, NULL, 0);
    ck_assert_float_eq(y[0], -100.0f);
    ck_assert_float_eq(y[2], 1.0f);
    dyn_layer_free(l);

    dyn_err err = {0};
    json_t *bad = json_pack("{s:f, s:f}", "min", 1.0, "max", 0.0);
    ck_assert_ptr_null(dyn_layer_create("clip", "c", bad, &err));
    ck_assert_ptr_nonnull(strstr(err.msg, "greater than max"));
    json_decref(bad);
}
END_TEST

START_TEST(scale_layer) {
    for (int tr = 0; tr < 2; tr++) {
        dyn_layer *l = mk("scale", "s", tr ? "{\"channels\":3}" : "{\"channels\":3,\"trainable\":0}");
        ck_assert_int_eq(l->params[0].trainable, tr);
        dyn_rng r;
        dyn_rng_seed(&r, 50);
        tu_fill_uniform(l->params[0].value.data, 3, &r, -2.0f, 2.0f);
        tu_fill_uniform(l->params[1].value.data, 3, &r, -1.0f, 1.0f);
        dyn_shape s4 = {4, {2, 3, 2, 2}}, s2 = {2, {2, 3}};
        ck_assert_int_eq(tu_gradcheck(l, &s4, 1, 51, 48, 1e-2f, 1e-3, 1e-2), 0);
        ck_assert_int_eq(tu_gradcheck(l, &s2, 1, 52, 48, 1e-2f, 1e-3, 1e-2), 0);
        /* y = x * w[c] + b[c] by hand, and inference leaves the layer unchanged. */
        float x[6] = {1, 2, 3, 4, 5, 6}, y[6], w0[3], b0[3];
        memcpy(w0, l->params[0].value.data, sizeof w0);
        memcpy(b0, l->params[1].value.data, sizeof b0);
        const int64_t sh[3] = {1, 3, 2};
        dyn_tensor xt = dyn_tensor_view(x, 3, sh), yt = dyn_tensor_view(y, 3, sh);
        l->ops->forward(l, &xt, &yt, NULL, 0);
        for (int i = 0; i < 6; i++) ck_assert_float_eq_tol(y[i], x[i] * w0[i / 2] + b0[i / 2], 1e-6);
        ck_assert_int_eq(memcmp(w0, l->params[0].value.data, sizeof w0), 0);
        dyn_err err = {0};
        dyn_shape bad = {4, {1, 4, 2, 2}}, o;
        ck_assert_int_eq(l->ops->infer(l, &bad, &o, &err), DYN_EINVAL);
        ck_assert_ptr_nonnull(strstr(err.msg, "3 channels does not fit input shape [1, 4, 2, 2]"));
        /* init: the identity. */
        l->ops->init(l, &r);
        ck_assert_float_eq(l->params[0].value.data[2], 1.0f);
        ck_assert_float_eq(l->params[1].value.data[2], 0.0f);
        dyn_layer_free(l);
    }
}
END_TEST

static Suite *onnx_ops_suite(void) {
    Suite *s = suite_create("onnx_ops");
    TCase *tc = tcase_create("import");
    tcase_add_test(tc, activation_ops_import);
    tcase_add_test(tc, clip_forms);
    tcase_add_test(tc, concat_chain);
    tcase_add_test(tc, constant_broadcast_import);
    tcase_add_test(tc, rejects_unsupported);
    suite_add_tcase(s, tc);
    tc = tcase_create("layers");
    tcase_add_test(tc, binary_layers_gradcheck);
    tcase_add_test(tc, concat_layer);
    tcase_add_test(tc, unary_layers_gradcheck);
    tcase_add_test(tc, scale_layer);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(onnx_ops_suite)
