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

    /* A [2, 1] constant would grow the W axis of 2 x 2 images to... it does not broadcast: 3
     * values along H (size 2). */
    static const int64_t w31[2] = {3, 1};
    static const float three[3] = {1.0f, 2.0f, 3.0f};
    (void)w2;
    (void)two;
    ob_init(&b, 13);
    ob_input(&b, "x", 4, xin);
    ob_init_f(&b, "w", 2, w31, three, 0);
    ob_node(&b, "Mul", "mul", "x,w", "y");
    ob_output(&b, "y");
    expect_reject(&b, "node 'mul' (Mul): constant 'w' of shape [3, 1] does not broadcast over "
                      "the activation of shape [N, 3, 2, 2]");
    ob_free(&b);

    /* Two activations whose shapes do not broadcast. */
    ob_init(&b, 13);
    ob_input(&b, "x", 4, xin);
    n = ob_node(&b, "Transpose", "t", "x", "xt");
    static const int64_t pv[4] = {0, 2, 1, 3};
    ob_attr_list(&b, n, "perm", 4, pv);
    ob_node(&b, "Mul", "gate", "x,xt", "y");
    ob_output(&b, "y");
    expect_reject(&b, "node 'gate' (Mul): inputs of shapes [N, 3, 2, 2] and [N, 2, 3, 2] do not "
                      "broadcast");
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
        dyn_shape bad[2] = {s[0], {4, {2, 2, 2, 2}}};
        ck_assert_int_eq(l->ops->infer(l, bad, &o, &err), DYN_EINVAL);
        ck_assert_ptr_nonnull(strstr(err.msg, "same shape"));
        /* broadcasting along size-1 dims of either input */
        dyn_shape bc[2] = {{4, {2, 3, 2, 2}}, {4, {2, 3, 1, 2}}};
        gradcheck_multi(l, bc, 2, 1, 30 + i);
        dyn_shape bc2[2] = {{3, {2, 1, 4}}, {3, {2, 3, 1}}};
        ck_assert_int_eq(l->ops->infer(l, bc2, &o, &err), 0);
        ck_assert_int_eq(o.d[1], 3);
        ck_assert_int_eq(o.d[2], 4);
        gradcheck_multi(l, bc2, 2, 1, 35 + i);
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

/* ---- transformer layers: finite differences and plain references ---- */

/* One-input FD check with inputs drawn from [0.5, 2] (sqrt, pow). */
static void gradcheck_pos(dyn_layer *l, dyn_shape s, uint64_t seed) {
    gradcheck_multi(l, &s, 1, 0, seed);
}

START_TEST(tr_layers_gradcheck) {
    dyn_shape s3 = {3, {2, 3, 5}};
    const char *specs[][2] = {
        {"permute", "{\"dims\":[3,5],\"perm\":[1,0],\"shape\":[5,3]}"},
        {"permute", "{\"dims\":[3,5],\"perm\":[1,0],\"axis\":1,\"start\":1,\"len\":2,\"step\":2,"
                    "\"shape\":[2,3]}"},
        {"permute", "{\"dims\":[15],\"shape\":[5,3]}"},
        {"softmax", "{}"},
        {"layernorm", "{\"dim\":5,\"eps\":1e-5}"},
        {"reduce_mean", "{\"axis\":1}"},
        {"reduce_mean", "{\"axis\":2,\"keepdims\":1}"},
        {"affine", "{\"shape\":[3,5]}"},
        {"affine", "{\"shape\":[5],\"bias\":0,\"trainable\":0}"},
        {"affine", "{\"shape\":[1],\"weight\":0}"},
        {"cat_param", "{\"axis\":1,\"shape\":[2,5],\"at\":0}"},
        {"cat_param", "{\"axis\":2,\"shape\":[3,1],\"at\":1}"},
        {"erf", "{}"},
        {"linear", "{\"in\":5,\"out\":4}"},
        {"dyn_linear", "{\"in\":5,\"out\":4,\"H\":2,\"q\":2,\"exec\":\"materialized\"}"},
        {"dyn_linear", "{\"in\":5,\"out\":4,\"H\":2,\"q\":2,\"exec\":\"native\"}"},
    };
    dyn_rng r;
    dyn_rng_seed(&r, 70);
    for (size_t i = 0; i < DYN_ARRAY_LEN(specs); i++) {
        dyn_layer *l = mk(specs[i][0], "t", specs[i][1]);
        if (l->ops->init) l->ops->init(l, &r);
        for (int p = 0; p < l->nparams; p++) /* not the identity: random parameters */
            if (strcmp(specs[i][0], "dyn_linear"))
                tu_fill_uniform(l->params[p].value.data, dyn_tensor_numel(&l->params[p].value),
                                &r, -1.0f, 1.0f);
        if (!strcmp(specs[i][0], "dyn_linear")) {
            /* l1 has kinks where u = v: states on two interleaved grids (u on k/10 + 1/20, v on
             * k/10) keep every |u - v| >= 0.05, far from the finite-difference step. */
            float *u = dyn_layer_param(l, "u")->value.data, *v = dyn_layer_param(l, "v")->value.data;
            for (int64_t t = 0; t < dyn_tensor_numel(&dyn_layer_param(l, "u")->value); t++)
                u[t] = 0.1f * (float)dyn_rng_below(&r, 10) + 0.05f;
            for (int64_t t = 0; t < dyn_tensor_numel(&dyn_layer_param(l, "v")->value); t++)
                v[t] = 0.1f * (float)dyn_rng_below(&r, 10);
        }
        dyn_err err = {0};
        ck_assert_msg(!l->ops->prepare || l->ops->prepare(l, &err) == 0, "%s", err.msg);
        float h = strcmp(specs[i][0], "dyn_linear") ? 1e-2f : 1e-3f; /* l1: kinks */
        ck_assert_msg(tu_gradcheck(l, &s3, 1, 71 + i, 60, h, 2e-3, 1e-2) == 0, "%s %s",
                      specs[i][0], specs[i][1]);
        /* attrs() round trip */
        json_t *a = l->ops->attrs(l);
        dyn_layer *l2 = dyn_layer_create(specs[i][0], "t2", a, &err);
        ck_assert_msg(l2 != NULL, "%s", err.msg);
        dyn_shape o1, o2;
        ck_assert_int_eq(l->ops->infer(l, &s3, &o1, &err), 0);
        ck_assert_int_eq(l2->ops->infer(l2, &s3, &o2, &err), 0);
        ck_assert(dyn_shape_eq(&o1, &o2));
        json_decref(a);
        dyn_layer_free(l2);
        dyn_layer_free(l);
    }
    dyn_layer *l = mk("sqrt", "s", "{}");
    gradcheck_pos(l, s3, 90);
    dyn_layer_free(l);
    l = mk("pow", "p", "{\"exponent\":3}");
    gradcheck_pos(l, s3, 91);
    dyn_layer_free(l);
    l = mk("pow", "p", "{}"); /* 2 */
    gradcheck_pos(l, s3, 92);
    dyn_layer_free(l);
}
END_TEST

/* Plain references: permute with a slice, matmul in its four forms, softmax, layernorm. */
START_TEST(tr_layers_reference) {
    dyn_rng r;
    dyn_rng_seed(&r, 80);
    /* permute: x [2][3][4] per sample -> transpose to [4][3] of slice 1..2 on atom 0 */
    dyn_layer *l = mk("permute", "p",
                      "{\"dims\":[2,3,4],\"perm\":[2,1,0],\"axis\":0,\"start\":1,\"len\":1,"
                      "\"shape\":[4,3]}");
    float x[2 * 24], y[2 * 12];
    tu_fill_uniform(x, 48, &r, -1, 1);
    const int64_t sx[4] = {2, 2, 3, 4}, sy[3] = {2, 4, 3};
    dyn_tensor xt = dyn_tensor_view(x, 4, sx), yt = dyn_tensor_view(y, 3, sy);
    l->ops->forward(l, &xt, &yt, NULL, 0);
    for (int s = 0; s < 2; s++)
        for (int k = 0; k < 4; k++)
            for (int j = 0; j < 3; j++)
                ck_assert_float_eq(y[s * 12 + k * 3 + j], x[s * 24 + 12 + j * 4 + k]);
    dyn_layer_free(l);

    /* matmul against a triple loop: A [2, 2, 3, 4] x B [2, 2, 4, 5] stored per ta / tb */
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            char a[64];
            snprintf(a, sizeof a, "{\"ta\":%d,\"tb\":%d}", ta, tb);
            l = mk("matmul", "m", a);
            dyn_shape sh[2] = {{4, {2, 2, ta ? 4 : 3, ta ? 3 : 4}},
                               {4, {2, 2, tb ? 5 : 4, tb ? 4 : 5}}},
                      o;
            dyn_err err = {0};
            ck_assert_int_eq(l->ops->infer(l, sh, &o, &err), 0);
            ck_assert_int_eq(o.d[2], 3);
            ck_assert_int_eq(o.d[3], 5);
            float A[48], B[80], C[60];
            tu_fill_uniform(A, 48, &r, -1, 1);
            tu_fill_uniform(B, 80, &r, -1, 1);
            dyn_tensor in[2] = {dyn_tensor_view(A, 4, sh[0].d), dyn_tensor_view(B, 4, sh[1].d)};
            dyn_tensor ct = dyn_tensor_view(C, 4, o.d);
            l->ops->forward(l, in, &ct, NULL, 0);
            for (int g = 0; g < 4; g++)
                for (int i = 0; i < 3; i++)
                    for (int j = 0; j < 5; j++) {
                        double acc = 0;
                        for (int k = 0; k < 4; k++)
                            acc += (double)A[g * 12 + (ta ? k * 3 + i : i * 4 + k)] *
                                   B[g * 20 + (tb ? j * 4 + k : k * 5 + j)];
                        ck_assert_double_eq_tol(C[g * 15 + i * 5 + j], acc, 1e-5);
                    }
            gradcheck_multi(l, sh, 2, 2, 81 + ta * 2 + tb);
            dyn_shape bad[2] = {sh[0], {4, {2, 2, 6, 6}}};
            ck_assert_int_eq(l->ops->infer(l, bad, &o, &err), DYN_EINVAL);
            ck_assert_ptr_nonnull(strstr(err.msg, "matching inner sizes"));
            dyn_layer_free(l);
        }

    /* softmax and layernorm rows */
    float v[10], w[10];
    tu_fill_uniform(v, 10, &r, -3, 3);
    const int64_t s2[2] = {2, 5};
    dyn_tensor vt = dyn_tensor_view(v, 2, s2), wt = dyn_tensor_view(w, 2, s2);
    l = mk("softmax", "s", "{}");
    l->ops->forward(l, &vt, &wt, NULL, 0);
    for (int row = 0; row < 2; row++) {
        double z = 0;
        for (int i = 0; i < 5; i++) z += exp(v[row * 5 + i]);
        for (int i = 0; i < 5; i++) ck_assert_double_eq_tol(w[row * 5 + i], exp(v[row * 5 + i]) / z, 1e-6);
    }
    dyn_layer_free(l);
    l = mk("layernorm", "ln", "{\"dim\":5,\"eps\":0.001}");
    for (int i = 0; i < 5; i++) {
        l->params[0].value.data[i] = 0.5f + (float)i;
        l->params[1].value.data[i] = (float)i - 2.0f;
    }
    l->ops->forward(l, &vt, &wt, NULL, 0);
    for (int row = 0; row < 2; row++) {
        double m = 0, q = 0;
        for (int i = 0; i < 5; i++) m += v[row * 5 + i] / 5.0;
        for (int i = 0; i < 5; i++) q += (v[row * 5 + i] - m) * (v[row * 5 + i] - m) / 5.0;
        for (int i = 0; i < 5; i++)
            ck_assert_double_eq_tol(w[row * 5 + i],
                                    (v[row * 5 + i] - m) / sqrt(q + 0.001) * (0.5 + i) + i - 2.0,
                                    1e-5);
    }
    dyn_layer_free(l);

    /* bad attributes */
    static const char *bad[][2] = {
        {"permute", "{\"dims\":[3,5],\"perm\":[0,0],\"shape\":[15]}"},
        {"permute", "{\"dims\":[3,5],\"shape\":[16]}"},
        {"permute", "{\"dims\":[3,5],\"axis\":1,\"start\":4,\"len\":2,\"shape\":[6]}"},
        {"layernorm", "{\"dim\":5,\"eps\":0}"},
        {"reduce_mean", "{\"axis\":0}"},
        {"affine", "{\"shape\":[]}"},
        {"cat_param", "{\"axis\":3,\"shape\":[2,5]}"},
        {"pow", "{\"exponent\":1e300}"},
    };
    for (size_t i = 0; i < DYN_ARRAY_LEN(bad); i++) {
        dyn_err err = {0};
        json_t *a = json_loads(bad[i][1], 0, NULL);
        ck_assert_ptr_null(dyn_layer_create(bad[i][0], "b", a, &err));
        ck_assert_int_lt(err.code, 0);
        ck_assert_ptr_nonnull(strstr(err.msg, "layer 'b'"));
        json_decref(a);
    }
}
END_TEST

/* ---- transformer operators in graphs ---- */

static const int64_t k_x34[3] = {1, 3, 4}, k_one[1] = {1}, k_four[1] = {4};

static void ob_scalar_f(ob *b, const char *name, float v) {
    ob_init_f(b, name, 0, k_one, &v, 0);
}

static void ob_ints(ob *b, const char *name, int cnt, const int64_t *v) {
    int64_t d = cnt;
    ob_init_i64(b, name, cnt < 0 ? 0 : 1, &d, v);
}

/* Attention with shape-computed reshapes, then residual, LayerNormalization (opset 17) and a
 * mean over tokens:  x [N, 3, 4], 2 heads of 2. */
START_TEST(attention_import) {
    dyn_rng r;
    dyn_rng_seed(&r, 100);
    const int64_t w44[2] = {4, 4};
    float *wq = rnd(&r, 16, -1, 1), *wk = rnd(&r, 16, -1, 1), *wv = rnd(&r, 16, -1, 1);
    float *g = rnd(&r, 4, 0.5f, 1.5f), *bb = rnd(&r, 4, -0.5f, 0.5f), *x = rnd(&r, 2 * 12, -1, 1);
    ob b;
    ob_init(&b, 17);
    ob_input(&b, "x", 3, k_x34);
    ob_init_f(&b, "wq", 2, w44, wq, 0);
    ob_init_f(&b, "wk", 2, w44, wk, 1);
    ob_init_f(&b, "wv", 2, w44, wv, 0);
    ob_init_f(&b, "g", 1, k_four, g, 0);
    ob_init_f(&b, "bb", 1, k_four, bb, 0);
    static const int64_t zero = 0, c322[3] = {3, 2, 2}, r034[3] = {0, 3, 4};
    ob_ints(&b, "i0", -1, &zero);
    ob_ints(&b, "ax0", 1, &zero);
    ob_ints(&b, "c322", 3, c322);
    ob_ints(&b, "r034", 3, r034);
    ob_scalar_f(&b, "scale", 0.7071f);
    ob_node(&b, "MatMul", "mq", "x,wq", "q0");
    ob_node(&b, "MatMul", "mk", "x,wk", "k0");
    ob_node(&b, "MatMul", "mv", "x,wv", "v0");
    ob_node(&b, "Shape", "shape", "x", "sh");
    ob_node(&b, "Gather", "gb", "sh,i0", "bsz");
    ob_node(&b, "Unsqueeze", "ub", "bsz,ax0", "bu");
    Onnx__NodeProto *n = ob_node(&b, "Concat", "tgt", "bu,c322", "tgt");
    ob_attr_i(&b, n, "axis", 0);
    static const int64_t p0213[4] = {0, 2, 1, 3}, p0132[4] = {0, 1, 3, 2};
    const char *nm[3] = {"q", "k", "v"};
    for (int i = 0; i < 3; i++) {
        char in[16], r1[16], t1[16], o1[16];
        snprintf(in, sizeof in, "%s0,tgt", nm[i]);
        snprintf(r1, sizeof r1, "%s1", nm[i]);
        snprintf(t1, sizeof t1, "rs_%s", nm[i]);
        ob_node(&b, "Reshape", t1, in, r1);
        snprintf(in, sizeof in, "%s1", nm[i]);
        snprintf(t1, sizeof t1, "tr_%s", nm[i]);
        snprintf(o1, sizeof o1, "%s", nm[i]);
        n = ob_node(&b, "Transpose", t1, in, o1);
        ob_attr_list(&b, n, "perm", 4, p0213);
    }
    n = ob_node(&b, "Transpose", "kt", "k", "kt");
    ob_attr_list(&b, n, "perm", 4, p0132);
    ob_node(&b, "MatMul", "scores", "q,kt", "s");
    ob_node(&b, "Mul", "scaled", "s,scale", "s2");
    n = ob_node(&b, "Softmax", "sm", "s2", "a");
    ob_attr_i(&b, n, "axis", -1);
    ob_node(&b, "MatMul", "av", "a,v", "o");
    n = ob_node(&b, "Transpose", "tr_o", "o", "o2");
    ob_attr_list(&b, n, "perm", 4, p0213);
    ob_node(&b, "Reshape", "merge", "o2,r034", "o3");
    ob_node(&b, "Add", "res", "o3,x", "res");
    ob_node(&b, "LayerNormalization", "ln", "res,g,bb", "ln");
    n = ob_node(&b, "ReduceMean", "pool", "ln", "y");
    static const int64_t ax1[1] = {1};
    ob_attr_list(&b, n, "axes", 1, ax1);
    ob_attr_i(&b, n, "keepdims", 0);
    ob_output(&b, "y");
    int64_t ny;
    dyn_model *m;
    float *y = run_onnx(&b, x, 2, &ny, &m);
    ck_assert_int_eq(ny, 8);
    int have_ln = 0;
    for (int k = 0; k < m->nnodes; k++) have_ln += !strcmp(m->nodes[k].layer->ops->name, "layernorm");
    ck_assert_int_eq(have_ln, 1);
    for (int s = 0; s < 2; s++) {
        const float *xs = x + s * 12;
        double q[3][4], kk[3][4], v[3][4], o[3][4], res[3][4], want[4] = {0};
        for (int t = 0; t < 3; t++)
            for (int e = 0; e < 4; e++) {
                q[t][e] = kk[t][e] = v[t][e] = 0;
                for (int d = 0; d < 4; d++) {
                    q[t][e] += xs[t * 4 + d] * wq[d * 4 + e];
                    kk[t][e] += xs[t * 4 + d] * wk[d * 4 + e];
                    v[t][e] += xs[t * 4 + d] * wv[d * 4 + e];
                }
            }
        for (int h = 0; h < 2; h++)
            for (int t = 0; t < 3; t++) {
                double sc[3], z = 0;
                for (int u = 0; u < 3; u++) {
                    sc[u] = 0;
                    for (int d = 0; d < 2; d++) sc[u] += q[t][h * 2 + d] * kk[u][h * 2 + d];
                    sc[u] = exp(sc[u] * 0.7071);
                    z += sc[u];
                }
                for (int d = 0; d < 2; d++) {
                    o[t][h * 2 + d] = 0;
                    for (int u = 0; u < 3; u++) o[t][h * 2 + d] += sc[u] / z * v[u][h * 2 + d];
                }
            }
        for (int t = 0; t < 3; t++) {
            double mu = 0, var = 0;
            for (int e = 0; e < 4; e++) mu += (res[t][e] = o[t][e] + xs[t * 4 + e]) / 4;
            for (int e = 0; e < 4; e++) var += (res[t][e] - mu) * (res[t][e] - mu) / 4;
            for (int e = 0; e < 4; e++)
                want[e] += ((res[t][e] - mu) / sqrt(var + 1e-5) * g[e] + bb[e]) / 3;
        }
        for (int e = 0; e < 4; e++) ck_assert_double_eq_tol(y[s * 4 + e], want[e], 1e-4);
    }
    /* the model trains: backward through every layer */
    dyn_err err = {0};
    dyn_exec *e = dyn_exec_new(m, 2, 1, &err);
    ck_assert_msg(e != NULL, "%s", err.msg);
    dyn_exec_forward(e, x, 2);
    float dout[8] = {1, 0, 0, 0, 0, 0, 0, 1};
    dyn_exec_backward(e, dout);
    dyn_exec_free(e);
    dyn_model_free(m);
    free(y);
    ob_free(&b);
    free(wq);
    free(wk);
    free(wv);
    free(g);
    free(bb);
    free(x);
}
END_TEST

/* The decomposed LayerNorm older opsets emit (fused into one layernorm layer; with Pow 4 it is
 * no LayerNorm and runs op by op: ReduceMean keepdims, broadcasting Sub / Div, Pow, Sqrt), the
 * GELU of Erf, and a [1, T, D] positional constant. */
START_TEST(layernorm_gelu_decomposed) {
    for (int p = 2; p <= 4; p += 2) {
        dyn_rng r;
        dyn_rng_seed(&r, 110 + p);
        float *g = rnd(&r, 4, 0.5f, 1.5f), *bb = rnd(&r, 4, -0.5f, 0.5f);
        float *pos = rnd(&r, 12, -0.2f, 0.2f), *x = rnd(&r, 2 * 12, -1, 1);
        ob b;
        ob_init(&b, 13);
        ob_input(&b, "x", 3, k_x34);
        static const int64_t m1[1] = {-1};
        ob_init_f(&b, "g", 1, k_four, g, 0);
        ob_init_f(&b, "bb", 1, k_four, bb, 1);
        ob_init_f(&b, "pos", 3, k_x34, pos, 0);
        ob_scalar_f(&b, "pw", (float)p);
        ob_scalar_f(&b, "eps", 1e-5f);
        ob_scalar_f(&b, "sqrt2", 1.4142135f);
        ob_scalar_f(&b, "one", 1.0f);
        ob_scalar_f(&b, "half", 0.5f);
        Onnx__NodeProto *n = ob_node(&b, "ReduceMean", "mean", "x", "m");
        ob_attr_list(&b, n, "axes", 1, m1);
        ob_node(&b, "Sub", "center", "x,m", "d");
        ob_node(&b, "Pow", "sq", "d,pw", "p");
        n = ob_node(&b, "ReduceMean", "var", "p", "v");
        ob_attr_list(&b, n, "axes", 1, m1);
        ob_node(&b, "Add", "veps", "v,eps", "ve");
        ob_node(&b, "Sqrt", "std", "ve", "sd");
        ob_node(&b, "Div", "norm", "d,sd", "nrm");
        ob_node(&b, "Mul", "lnw", "nrm,g", "nw");
        ob_node(&b, "Add", "lnb", "nw,bb", "ln");
        ob_node(&b, "Div", "gd", "ln,sqrt2", "t");
        ob_node(&b, "Erf", "erf", "t", "e");
        ob_node(&b, "Add", "ge1", "e,one", "e1");
        ob_node(&b, "Mul", "gx", "ln,e1", "g1");
        ob_node(&b, "Mul", "gh", "g1,half", "ge");
        ob_node(&b, "Add", "pos_add", "ge,pos", "y");
        ob_output(&b, "y");
        int64_t ny;
        dyn_model *m;
        float *y = run_onnx(&b, x, 2, &ny, &m);
        ck_assert_int_eq(ny, 24);
        int have_ln = 0;
        for (int k = 0; k < m->nnodes; k++)
            have_ln += !strcmp(m->nodes[k].layer->ops->name, "layernorm");
        ck_assert_int_eq(have_ln, p == 2);
        for (int s = 0; s < 2; s++)
            for (int t = 0; t < 3; t++) {
                const float *row = x + s * 12 + t * 4;
                double mu = 0, var = 0;
                for (int e = 0; e < 4; e++) mu += row[e] / 4.0;
                for (int e = 0; e < 4; e++) var += pow(row[e] - mu, p) / 4.0;
                for (int e = 0; e < 4; e++) {
                    double l = (row[e] - mu) / sqrt(var + 1e-5) * g[e] + bb[e];
                    double want = 0.5 * l * (1 + erf(l / sqrt(2.0))) + pos[t * 4 + e];
                    ck_assert_double_eq_tol(y[s * 12 + t * 4 + e], want, 1e-4);
                }
            }
        dyn_model_free(m);
        free(y);
        ob_free(&b);
        free(g);
        free(bb);
        free(pos);
        free(x);
    }
}
END_TEST

/* Split (sizes as input), Slice with a step, Unsqueeze / Squeeze, Gather, SE-style broadcast. */
START_TEST(slice_split_gather_import) {
    static const int64_t xin[3] = {1, 6, 4}, sp[2] = {2, 4}, one = 1, big = INT64_MAX, two = 2,
                         three = 3;
    dyn_rng r;
    dyn_rng_seed(&r, 120);
    float *x = rnd(&r, 2 * 24, -1, 1);
    ob b;
    ob_init(&b, 13);
    ob_input(&b, "x", 3, xin);
    ob_ints(&b, "sp", 2, sp);
    ob_ints(&b, "st", 1, &one);
    ob_ints(&b, "en", 1, &big);
    ob_ints(&b, "ax", 1, &one);
    ob_ints(&b, "step", 1, &two);
    ob_ints(&b, "i3", -1, &three);
    Onnx__NodeProto *n = ob_node(&b, "Split", "split", "x,sp", "a,bt");
    ob_attr_i(&b, n, "axis", 1);
    ob_node(&b, "Slice", "slice", "bt,st,en,ax,step", "s");
    ob_node(&b, "Add", "sum", "a,s", "t");
    ob_node(&b, "Unsqueeze", "unsq", "t,ax", "u");
    ob_node(&b, "Squeeze", "sq", "u,ax", "w");
    n = ob_node(&b, "Gather", "pick", "w,i3", "y");
    ob_attr_i(&b, n, "axis", 2);
    ob_output(&b, "y");
    int64_t ny;
    float *y = run_onnx(&b, x, 2, &ny, NULL);
    ck_assert_int_eq(ny, 4);
    for (int s = 0; s < 2; s++)
        for (int j = 0; j < 2; j++)
            ck_assert_float_eq_tol(y[s * 2 + j], x[s * 24 + j * 4 + 3] + x[s * 24 + (3 + 2 * j) * 4 + 3],
                                   1e-6);
    free(y);
    ob_free(&b);

    /* x * mean over tokens (broadcast of [N, 1, 4] against [N, 6, 4]) */
    ob_init(&b, 13);
    ob_input(&b, "x", 3, xin);
    n = ob_node(&b, "ReduceMean", "mean", "x", "mu");
    ob_attr_list(&b, n, "axes", 1, &one);
    ob_node(&b, "Mul", "gate", "x,mu", "y");
    ob_output(&b, "y");
    y = run_onnx(&b, x, 2, &ny, NULL);
    ck_assert_int_eq(ny, 48);
    for (int s = 0; s < 2; s++)
        for (int e = 0; e < 4; e++) {
            double mu = 0;
            for (int t = 0; t < 6; t++) mu += x[s * 24 + t * 4 + e] / 6.0;
            for (int t = 0; t < 6; t++)
                ck_assert_double_eq_tol(y[s * 24 + t * 4 + e], x[s * 24 + t * 4 + e] * mu, 1e-5);
        }
    free(y);
    ob_free(&b);
    free(x);
}
END_TEST

/* ViT's class token: Expand(cls, [N, 1, 1]) with N from Shape, Where / Equal / ConstantOfShape
 * as torch emits them, Concat along the tokens, a [1, 4, 4] position embedding, Gather. */
START_TEST(class_token_import) {
    static const int64_t cls_d[3] = {1, 1, 4}, pos_d[3] = {1, 4, 4}, zero = 0, m11[2] = {-1, -1},
                         m1 = -1, three[1] = {3};
    dyn_rng r;
    dyn_rng_seed(&r, 130);
    float *x = rnd(&r, 2 * 12, -1, 1), *cls = rnd(&r, 4, -1, 1), *pos = rnd(&r, 16, -1, 1);
    ob b;
    ob_init(&b, 14);
    ob_input(&b, "x", 3, k_x34);
    ob_init_f(&b, "cls", 3, cls_d, cls, 0);
    ob_init_f(&b, "pos", 3, pos_d, pos, 0);
    ob_ints(&b, "i0", -1, &zero);
    ob_ints(&b, "ax0", 1, &zero);
    ob_ints(&b, "m11", 2, m11);
    ob_ints(&b, "m1", -1, &m1);
    ob_ints(&b, "three", 1, three);
    ob_ints(&b, "i2", -1, (const int64_t[]){2});
    ob_node(&b, "Shape", "shape", "x", "sh");
    ob_node(&b, "Gather", "gb", "sh,i0", "bsz");
    ob_node(&b, "Unsqueeze", "ub", "bsz,ax0", "bu");
    Onnx__NodeProto *n = ob_node(&b, "Concat", "tgt", "bu,m11", "tgt");
    ob_attr_i(&b, n, "axis", 0);
    n = ob_node(&b, "ConstantOfShape", "ones", "three", "ones");
    ob_attr_tensor(&b, n, "value",
                   ob_tensor(&b, "v", ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT, 1, k_one,
                             (const float[]){1.0f}, 0));
    n = ob_node(&b, "Cast", "ones_i", "ones", "ones_i");
    ob_attr_i(&b, n, "to", ONNX__TENSOR_PROTO__DATA_TYPE__INT64);
    ob_node(&b, "Equal", "isneg", "tgt,m1", "neg");
    ob_node(&b, "Where", "fix", "neg,ones_i,tgt", "shape_e");
    ob_node(&b, "Expand", "expand", "cls,shape_e", "ce");
    n = ob_node(&b, "Concat", "cat", "ce,x", "z");
    ob_attr_i(&b, n, "axis", 1);
    ob_node(&b, "Add", "pos_add", "z,pos", "zp");
    n = ob_node(&b, "Gather", "g0", "zp,i0", "y0");
    ob_attr_i(&b, n, "axis", 1);
    n = ob_node(&b, "Gather", "g2", "zp,i2", "y2");
    ob_attr_i(&b, n, "axis", 1);
    ob_node(&b, "Add", "y", "y0,y2", "y");
    ob_output(&b, "y");
    int64_t ny;
    float *y = run_onnx(&b, x, 2, &ny, NULL);
    ck_assert_int_eq(ny, 8);
    for (int s = 0; s < 2; s++)
        for (int e = 0; e < 4; e++)
            ck_assert_double_eq_tol(y[s * 4 + e],
                                    (double)cls[e] + pos[e] + x[s * 12 + 4 + e] + pos[8 + e], 1e-5);
    free(y);
    ob_free(&b);
    free(x);
    free(cls);
    free(pos);
}
END_TEST

/* Shapes whose element count overflows int64_t: refused with a message, never multiplied out
 * (issue 11: before the checked products, each of these was signed overflow, which the
 * sanitizer build aborts on). */
static void one_node_graph(ob *b, int ndim, const int64_t *in, const char *op, const char *ins) {
    ob_init(b, 13);
    ob_input(b, "x", ndim, in);
    ob_node(b, op, "bad", ins, "y");
    ob_output(b, "y");
}

START_TEST(rejects_overflowing_shapes) {
    /* Reshape to ~7.8e18 in one dim: 2 * 7.8e18 overflows */
    static const int64_t huge[3] = {0, 2, 7800000000000000000LL};
    ob b;
    one_node_graph(&b, 3, k_x34, "Reshape", "x,huge");
    ob_ints(&b, "huge", 3, huge);
    expect_reject(&b, "node 'bad' (Reshape): reshape to [0, 2, 7800000000000000000] does not "
                      "fit [N, 3, 4]: more than 17179869184 elements");
    ob_free(&b);

    /* an input of [1, 2^31, 2^31, 2^31]: every dim is plausible, their product is 2^93 */
    static const int64_t big_in[4] = {1, (int64_t)1 << 31, (int64_t)1 << 31, (int64_t)1 << 31};
    one_node_graph(&b, 4, big_in, "Relu", "x");
    expect_reject(&b, "graph input 'x' (per sample): shape [2147483648, 2147483648, 2147483648] "
                      "has more than 17179869184 elements");
    ob_free(&b);

    /* an initializer of [2^34, 2^34] (no data needed: the shape is refused first) */
    static const int64_t d11[2] = {1, 1};
    static const float one = 1;
    one_node_graph(&b, 3, k_x34, "Add", "x,w");
    Onnx__TensorProto *w = ob_init_f(&b, "w", 2, d11, &one, 0);
    w->dims[0] = w->dims[1] = (int64_t)1 << 34;
    expect_reject(&b, "shape [17179869184, 17179869184] has more than 17179869184 elements");
    ob_free(&b);

    /* constant folding: INT64_MAX + 1 and INT64_MIN / -1 overflow */
    static const int64_t max1[1] = {INT64_MAX}, one1[1] = {1}, min1[1] = {INT64_MIN},
                         neg1[1] = {-1};
    const char *ops[2][2] = {{"Add", "max1,one1"}, {"Div", "min1,neg1"}};
    for (int i = 0; i < 2; i++) {
        ob_init(&b, 13);
        ob_input(&b, "x", 3, k_x34);
        ob_ints(&b, "max1", 1, max1);
        ob_ints(&b, "one1", 1, one1);
        ob_ints(&b, "min1", 1, min1);
        ob_ints(&b, "neg1", 1, neg1);
        ob_node(&b, ops[i][0], "fold", ops[i][1], "s");
        ob_node(&b, "Reshape", "rs", "x,s", "y");
        ob_output(&b, "y");
        expect_reject(&b, "node 'fold' (");
        ob_free(&b);
    }
}
END_TEST

/* An empty INTS attribute, which protobuf-c unpacks as a NULL array (found by tests/fuzz
 * fuzz_onnx: memcpy from NULL, undefined even for 0 bytes, aborted the sanitizer build). */
START_TEST(rejects_empty_axes) {
    ob b;
    one_node_graph(&b, 3, k_x34, "ReduceMean", "x");
    ob_attr(&b, b.nodes[0], "axes", ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
    expect_reject(&b, "node 'bad' (ReduceMean): only a mean over one axis is supported (0 axes)");
    ob_free(&b);
    /* a mean over the last axis (a LayerNorm chain's start) with no output at all (also found
     * by fuzz_onnx: the chain matcher read output[0] of an empty list) */
    static const int64_t last = -1;
    ob_init(&b, 13);
    ob_input(&b, "x", 3, k_x34);
    ob_attr_list(&b, ob_node(&b, "ReduceMean", "bad", "x", ""), "axes", 1, &last);
    ob_output(&b, "x");
    expect_reject(&b, "node 'bad' (ReduceMean): has no output");
    ob_free(&b);
}
END_TEST

/* Malformed transformer graphs: each rejected with the node, the op and what is wrong. */
START_TEST(rejects_transformer) {
    static const int64_t p001[3] = {0, 0, 1}, zero = 0, seven = 7, m15[2] = {-1, 5},
                         huge[2] = {0, (int64_t)1 << 40}, fixed[2] = {2, 6}, s22[2] = {2, 2},
                         neg = -1, one = 1, big = INT64_MAX, five[1] = {5};
    static const float f5[5] = {1, 2, 3, 4, 5};
    struct {
        const char *op, *ins, *want;
    } cases[] = {
        {"Transpose", "x", "node 'bad' (Transpose): perm is not a permutation of 0..2"},
        {"Softmax", "x", "node 'bad' (Softmax): axis 5 is out of range for rank 3"},
        {"ReduceMean", "x", "node 'bad' (ReduceMean): a mean over the batch dim of [N, 3, 4]"},
        {"MatMul", "x,x", "node 'bad' (MatMul): MatMul of activations [N, 3, 4] and [N, 3, 4]"},
        {"Reshape", "x,m15", "node 'bad' (Reshape): reshape to [-1, 5] does not fit [N, 3, 4]"},
        {"Reshape", "x,huge", "node 'bad' (Reshape): reshape to [0, 1099511627776] does not fit"},
        {"Reshape", "x,fixed", "node 'bad' (Reshape): reshape to [2, 6]: only shapes that keep "
                               "the batch"},
        {"Gather", "x,seven", "node 'bad' (Gather): index 7 is out of range for size 4"},
        {"Split", "x,s22", "node 'bad' (Split): 2 parts summing to 4 for 1 outputs"},
        {"Slice", "x,one,big,one,neg", "node 'bad' (Slice): step -1: only positive steps"},
        {"Pow", "x,x", "node 'bad' (Pow): only activation ^ constant scalar"},
        {"LayerNormalization", "x,f5", "node 'bad' (LayerNormalization): axis 1: only the last"},
        {"Add", "x,f5", "node 'bad' (Add): constant 'f5' of shape [5] does not broadcast"},
        {"Expand", "x,five", "node 'bad' (Expand): expanding an activation to a larger shape"},
    };
    for (size_t i = 0; i < DYN_ARRAY_LEN(cases); i++) {
        ob b;
        ob_init(&b, 13);
        ob_input(&b, "x", 3, k_x34);
        ob_ints(&b, "zero", -1, &zero);
        ob_ints(&b, "seven", -1, &seven);
        ob_ints(&b, "m15", 2, m15);
        ob_ints(&b, "huge", 2, huge);
        ob_ints(&b, "fixed", 2, fixed);
        ob_ints(&b, "s22", 2, s22);
        ob_ints(&b, "neg", 1, &neg);
        ob_ints(&b, "one", 1, &one);
        ob_ints(&b, "big", 1, &big);
        ob_ints(&b, "five", 1, five);
        ob_init_f(&b, "f5", 1, five, f5, 0);
        Onnx__NodeProto *n = ob_node(&b, cases[i].op, "bad", cases[i].ins, "y");
        if (!strcmp(cases[i].op, "Transpose")) ob_attr_list(&b, n, "perm", 3, p001);
        if (!strcmp(cases[i].op, "Softmax")) ob_attr_i(&b, n, "axis", 5);
        if (!strcmp(cases[i].op, "ReduceMean")) ob_attr_list(&b, n, "axes", 1, &zero);
        if (!strcmp(cases[i].op, "Gather")) ob_attr_i(&b, n, "axis", 2);
        if (!strcmp(cases[i].op, "Split")) ob_attr_i(&b, n, "axis", 2);
        if (!strcmp(cases[i].op, "LayerNormalization")) ob_attr_i(&b, n, "axis", 1);
        ob_output(&b, "y");
        expect_reject(&b, cases[i].want);
        ob_free(&b);
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
    tcase_add_test(tc, attention_import);
    tcase_add_test(tc, layernorm_gelu_decomposed);
    tcase_add_test(tc, slice_split_gather_import);
    tcase_add_test(tc, class_token_import);
    tcase_add_test(tc, rejects_transformer);
    tcase_add_test(tc, rejects_overflowing_shapes);
    tcase_add_test(tc, rejects_empty_axes);
    suite_add_tcase(s, tc);
    tc = tcase_create("layers");
    tcase_add_test(tc, binary_layers_gradcheck);
    tcase_add_test(tc, concat_layer);
    tcase_add_test(tc, unary_layers_gradcheck);
    tcase_add_test(tc, scale_layer);
    tcase_add_test(tc, tr_layers_gradcheck);
    tcase_add_test(tc, tr_layers_reference);
    suite_add_tcase(s, tc);
    return s;
}

TU_MAIN(onnx_ops_suite)
