/* test_graph.c — the fused inference graph (cpu/graph.c) against the layer-by-layer forward
 * with im2col + sgemm, on small ResNet-shaped models: a stem (conv, ReLU, max pool), basic
 * blocks with identity and downsampling (1x1 stride 2) shortcuts, adds whose later operand is
 * the block's conv or the shortcut's, a DyN convolution run materialized, a plain node (scale)
 * between graph nodes, global average pooling, flatten and a linear head; batch 1, 3 and 8, at
 * 1 and 2 threads. Also: which nodes ran fused, the graph rebuilt after the weights changed
 * (prepare), auto's choice giving the same outputs, and a model with nothing to fuse.
 *
 * Tolerance: max |graph - im2col| <= 1e-4 * (1 + max |im2col|): both sum the same products in
 * float32 in another order (the deepest sum here has 3·3·32 = 288 terms). */
#include <math.h>
#include <string.h>

#include "cpu/dnnl_conv.h"
#include "cpu/graph.h"
#include "cpu/isa.h"
#include "testutil.h"

static int add(dyn_model *m, const char *op, const char *name, const char *attrs, int in0,
               int in1) {
    json_error_t jerr;
    json_t *a = json_loads(attrs, 0, &jerr);
    ck_assert_msg(a != NULL, "bad JSON %s: %s", attrs, jerr.text);
    dyn_err err = {0};
    dyn_layer *l = dyn_layer_create(op, name, a, &err);
    json_decref(a);
    ck_assert_msg(l != NULL, "%s: %s", name, err.msg);
    int ins[2] = {in0, in1};
    int k = dyn_model_add(m, l, ins, in1 == -2 ? 1 : 2, &err);
    ck_assert_msg(k >= 0, "%s: %s", name, err.msg);
    return k;
}

#define CONV(cin, cout, k, s, p)                                                              \
    "{\"in_channels\":" #cin ",\"out_channels\":" #cout ",\"kernel\":" #k ",\"stride\":" #s  \
    ",\"padding\":" #p "}"

/* A small ResNet on 3x20x18 inputs (odd sizes: the max pool and strides round). with_dyn: the
 * second block's first conv is a dyn_conv2d run materialized; with_plain: a scale node sits
 * between two blocks (a plain reader of a graph value, and a plain producer for one). */
static dyn_model *resnet(int with_dyn, int with_plain) {
    dyn_shape in = {.ndim = 3, .d = {3, 20, 18}};
    dyn_model *m = dyn_model_new(&in);
    int x = add(m, "conv2d", "stem", CONV(3, 16, 3, 1, 1), -1, -2);
    x = add(m, "relu", "stem_relu", "{}", x, -2);
    x = add(m, "maxpool2d", "pool", "{\"kernel\":3,\"stride\":2,\"padding\":1}", x, -2);
    /* block 1: identity shortcut; the add's later operand is the block's conv */
    int a = add(m, "conv2d", "b1c1", CONV(16, 16, 3, 1, 1), x, -2);
    a = add(m, "relu", "b1r1", "{}", a, -2);
    a = add(m, "conv2d", "b1c2", CONV(16, 16, 3, 1, 1), a, -2);
    x = add(m, "add", "b1add", "{}", a, x);
    x = add(m, "relu", "b1out", "{}", x, -2);
    if (with_plain)
        x = add(m, "scale", "mid", "{\"channels\":16}", x, -2);
    /* block 2: downsample; the shortcut conv comes after the block's second conv */
    if (with_dyn)
        a = add(m, "dyn_conv2d", "b2c1",
                "{\"in_channels\":16,\"out_channels\":32,\"kernel\":3,\"stride\":2,"
                "\"padding\":1,\"H\":2,\"q\":2,\"exec\":\"materialized\"}",
                x, -2);
    else
        a = add(m, "conv2d", "b2c1", CONV(16, 32, 3, 2, 1), x, -2);
    a = add(m, "relu", "b2r1", "{}", a, -2);
    a = add(m, "conv2d", "b2c2", CONV(32, 32, 3, 1, 1), a, -2);
    int d = add(m, "conv2d", "b2down", CONV(16, 32, 1, 2, 0), x, -2);
    x = add(m, "add", "b2add", "{}", a, d);
    x = add(m, "relu", "b2out", "{}", x, -2);
    x = add(m, "globalavgpool", "gap", "{}", x, -2);
    x = add(m, "flatten", "flat", "{}", x, -2);
    add(m, "linear", "fc", "{\"in\":32,\"out\":10}", x, -2);
    dyn_model_init(m, 7);
    dyn_rng rng;
    dyn_rng_seed(&rng, 8);
    /* non-zero scale shifts and biases everywhere, so a dropped bias or post-op shows */
    for (int k = 0; k < m->nnodes; k++)
        for (int p = 0; p < m->nodes[k].layer->nparams; p++) {
            dyn_tensor *t = &m->nodes[k].layer->params[p].value;
            if (!strcmp(m->nodes[k].layer->params[p].name, "bias") ||
                !strcmp(m->nodes[k].layer->name, "mid"))
                tu_fill_uniform(t->data, dyn_tensor_numel(t), &rng, -0.5f, 1.0f);
        }
    ck_assert_int_eq(dyn_model_prepare(m, NULL), 0);
    return m;
}

/* The model's output for x at `batch` under conv setting impl (a new exec each time). */
static float *run_w(dyn_model *m, const float *x, int batch, dyn_conv_impl impl, int *nodes,
                    int *fused, int *nwino) {
    dyn_conv_impl_set(impl);
    dyn_err err = {0};
    dyn_exec *e = dyn_exec_new(m, 8, 0, &err);
    ck_assert_msg(e != NULL, "%s", err.msg);
    const dyn_tensor *y = dyn_exec_forward(e, x, batch);
    int64_t n = dyn_tensor_numel(y);
    float *out = malloc((size_t)n * sizeof(float));
    memcpy(out, y->data, (size_t)n * sizeof(float));
    if (nodes) {
        e->batch = batch;
        const int flags = dyn_conv_winograd_get() == DYN_WINO_ON ? DYN_GRAPH_WINO : 0;
        dyn_graph *g = dyn__graph_new(e, batch, flags, &err);
        ck_assert_msg(g != NULL, "%s", err.msg);
        dyn__graph_counts(g, nodes, fused);
        if (nwino) *nwino = dyn__graph_winograd(g, NULL);
        dyn__graph_free(g);
    }
    dyn_exec_free(e);
    dyn_conv_impl_set(DYN_CONV_AUTO);
    return out;
}

static float *run(dyn_model *m, const float *x, int batch, dyn_conv_impl impl, int *nodes,
                  int *fused) {
    return run_w(m, x, batch, impl, nodes, fused, NULL);
}

static void expect_close(const float *want, const float *got, int64_t n, const char *what) {
    double mx = 0, d = 0;
    for (int64_t i = 0; i < n; i++) {
        mx = fmax(mx, fabs(want[i]));
        d = fmax(d, fabs((double)want[i] - got[i]));
    }
    ck_assert_msg(d <= 1e-4 * (1 + mx), "%s: max |diff| %g (max |y| %g)", what, d, mx);
}

static float *input(int batch, uint64_t seed) {
    dyn_rng rng;
    dyn_rng_seed(&rng, seed);
    float *x = malloc((size_t)batch * 3 * 20 * 18 * sizeof(float));
    tu_fill_uniform(x, (int64_t)batch * 3 * 20 * 18, &rng, -1.0f, 1.0f);
    return x;
}

START_TEST(test_graph_matches_layer_by_layer) {
    static const int batches[] = {1, 3, 8};
    for (int variant = 0; variant < 3; variant++) {
        dyn_model *m = resnet(variant == 1, variant == 2);
        for (int th = 1; th <= 2; th++) {
            dyn_threads_set(th);
            for (size_t bi = 0; bi < DYN_ARRAY_LEN(batches); bi++) {
                const int b = batches[bi];
                float *x = input(b, 100 + b);
                int nodes = 0, fused = 0;
                float *want = run(m, x, b, DYN_CONV_IM2COL, NULL, NULL);
                float *got = run(m, x, b, DYN_CONV_GRAPH, &nodes, &fused);
                char what[96];
                snprintf(what, sizeof what, "variant %d, batch %d, %d threads", variant, b, th);
                expect_close(want, got, 10 * b, what);
                /* 6 convs, 5 relus, the max pool, 2 adds, gap: 15 graph nodes (flatten, fc
                 * and the scale run plain); 5 convs carry post-ops: the stem, b1c1 and b2c1
                 * a ReLU, b1c2 and b2down (the later operands of the adds) sum and ReLU;
                 * b2c2 runs before its add's other operand, so it cannot */
                ck_assert_int_eq(nodes, 15);
                ck_assert_int_eq(fused, 5);
                float *again = run(m, x, b, DYN_CONV_AUTO, NULL, NULL);
                expect_close(want, again, 10 * b, what);
                free(x), free(want), free(got), free(again);
            }
        }
        dyn_threads_set(1);
        dyn_model_free(m);
    }
}
END_TEST

/* Winograd convolutions (setting on): the 3x3 stride-1 convolutions with 16 or 32 channels
 * (b1c1, b1c2, b2c2, and b2c1 where it is a DyN conv run materialized: stride 2, no) run
 * oneDNN's Winograd kernels where it has them (AVX-512), the stem's (3 input channels) may fall
 * back to the direct one; the outputs stay within the tolerance of the im2col forward, and
 * auto's choice among the layer-by-layer forward and both graphs gives them too. */
START_TEST(test_graph_winograd) {
    static const int batches[] = {1, 3, 8};
    for (int variant = 0; variant < 2; variant++) {
        dyn_model *m = resnet(variant == 1, 0);
        for (int th = 1; th <= 2; th++) {
            dyn_threads_set(th);
            for (size_t bi = 0; bi < DYN_ARRAY_LEN(batches); bi++) {
                const int b = batches[bi];
                float *x = input(b, 300 + b);
                int nodes = 0, fused = 0, nwino = -1;
                float *want = run(m, x, b, DYN_CONV_IM2COL, NULL, NULL);
                dyn_conv_winograd_set(DYN_WINO_ON);
                float *got = run_w(m, x, b, DYN_CONV_GRAPH, &nodes, &fused, &nwino);
                char what[96];
                snprintf(what, sizeof what, "winograd: variant %d, batch %d, %d threads",
                         variant, b, th);
                expect_close(want, got, 10 * b, what);
                ck_assert_int_eq(nodes, 15);
                ck_assert_int_eq(fused, 5); /* the post-ops stay fused */
                if (dyn_isa_detected() == DYN_ISA_AVX512)
                    ck_assert_msg(nwino >= 3, "%s: %d Winograd convolutions", what, nwino);
                ck_assert_int_le(nwino, 4);
                dyn_conv_winograd_set(DYN_WINO_AUTO);
                float *again = run(m, x, b, DYN_CONV_AUTO, NULL, NULL);
                expect_close(want, again, 10 * b, what);
                float *forced = run(m, x, b, DYN_CONV_GRAPH, NULL, NULL);
                expect_close(want, forced, 10 * b, what);
                free(x), free(want), free(got), free(again), free(forced);
            }
        }
        dyn_threads_set(1);
        dyn_model_free(m);
    }
}
END_TEST

/* DYN_GRAPH_HELD: a DyN convolution in `auto` holding its kernel runs in the graph whatever
 * its own measurement chose (the layer-by-layer forward settles it first); without the flag
 * it is in the graph only where it chose materialized. Both graphs give the im2col outputs,
 * and so does auto's choice among them. The DyN conv (64 -> 64, 3x3, H = q = 2: 8x fewer
 * element-columns than MACs) is one the cost model cannot settle: it holds both paths and
 * measures (with 32x fewer it would keep only the native one, and no graph could take it). */
START_TEST(test_graph_held) {
    dyn_shape in = {.ndim = 3, .d = {3, 20, 18}};
    dyn_model *m = dyn_model_new(&in);
    int x = add(m, "conv2d", "stem", CONV(3, 64, 3, 1, 1), -1, -2);
    x = add(m, "relu", "r1", "{}", x, -2);
    x = add(m, "dyn_conv2d", "d",
            "{\"in_channels\":64,\"out_channels\":64,\"kernel\":3,\"stride\":1,"
            "\"padding\":1,\"H\":2,\"q\":2,\"exec\":\"auto\"}",
            x, -2);
    x = add(m, "relu", "r2", "{}", x, -2);
    add(m, "globalavgpool", "gap", "{}", x, -2);
    dyn_model_init(m, 13);
    ck_assert_int_eq(dyn_model_prepare(m, NULL), 0);
    for (int th = 1; th <= 2; th++) {
        dyn_threads_set(th);
        for (int b = 1; b <= 8; b += 7) {
            float *xin = input(b, 500 + b);
            float *want = run(m, xin, b, DYN_CONV_IM2COL, NULL, NULL);
            dyn_conv_impl_set(DYN_CONV_IM2COL);
            dyn_err err = {0};
            dyn_exec *e = dyn_exec_new(m, 8, 0, &err);
            ck_assert_ptr_nonnull(e);
            dyn_exec_forward(e, xin, b); /* the layer measures its path, e->input holds x */
            dyn_conv_impl_set(DYN_CONV_AUTO);
            int nodes[2] = {0, 0}, fused = 0;
            for (int held = 0; held <= 1; held++) {
                dyn_graph *g = dyn__graph_new(e, b, held ? DYN_GRAPH_HELD : 0, &err);
                ck_assert_msg(g != NULL, "%s", err.msg);
                dyn__graph_counts(g, &nodes[held], &fused);
                dyn__graph_forward(g, e);
                char what[64];
                snprintf(what, sizeof what, "held %d, batch %d, %d threads", held, b, th);
                expect_close(want, e->act[m->nnodes - 1].data, 64 * b, what);
                dyn__graph_free(g);
            }
            /* held: stem, r1, d, r2, gap; not: stem and r1 only when d runs native (r2 and
             * gap then read a plain node) */
            ck_assert_int_eq(nodes[1], 5);
            ck_assert_msg(nodes[0] == 5 || nodes[0] == 2, "%d graph nodes", nodes[0]);
            fprintf(stderr, "graph held: the DyN conv chose %s at batch %d, %d threads\n",
                    nodes[0] < 5 ? "native" : "materialized", b, th);
            dyn_exec_free(e);
            float *again = run(m, xin, b, DYN_CONV_AUTO, NULL, NULL);
            expect_close(want, again, 64 * b, "auto");
            free(xin), free(want), free(again);
        }
    }
    dyn_threads_set(1);
    dyn_model_free(m);
}
END_TEST

/* A graph built with wino on a model without 3x3 stride-1 convolutions has none to run. */
START_TEST(test_graph_winograd_none_eligible) {
    dyn_shape in = {.ndim = 3, .d = {3, 20, 18}};
    dyn_model *m = dyn_model_new(&in);
    int x = add(m, "conv2d", "c1", CONV(3, 16, 3, 2, 1), -1, -2);
    x = add(m, "relu", "r", "{}", x, -2);
    x = add(m, "conv2d", "c2", CONV(16, 16, 1, 1, 0), x, -2);
    add(m, "globalavgpool", "gap", "{}", x, -2);
    dyn_model_init(m, 12);
    ck_assert_int_eq(dyn_model_prepare(m, NULL), 0);
    dyn_err err = {0};
    dyn_exec *e = dyn_exec_new(m, 1, 0, &err);
    ck_assert_ptr_nonnull(e);
    e->batch = 1;
    dyn_graph *g = dyn__graph_new(e, 1, DYN_GRAPH_WINO, &err);
    ck_assert_msg(g != NULL, "%s", err.msg);
    int ok = -1;
    ck_assert_int_eq(dyn__graph_winograd(g, &ok), 0);
    ck_assert_int_eq(ok, 0);
    dyn__graph_free(g);
    dyn_exec_free(e);
    dyn_model_free(m);
}
END_TEST

/* One exec kept across a weight change: the graph sees the new generation and is rebuilt. */
START_TEST(test_graph_rebuilt_after_prepare) {
    dyn_model *m = resnet(1, 0);
    float *x = input(2, 5);
    dyn_conv_impl_set(DYN_CONV_GRAPH);
    dyn_err err = {0};
    dyn_exec *e = dyn_exec_new(m, 4, 0, &err);
    ck_assert_ptr_nonnull(e);
    float before[20], after[20];
    memcpy(before, dyn_exec_forward(e, x, 2)->data, sizeof before);
    for (int k = 0; k < m->nnodes; k++) { /* scale every conv weight (and the DyN states) */
        dyn_layer *l = m->nodes[k].layer;
        if (l->ops->as_dense_conv)
            for (int p = 0; p < l->nparams; p++) {
                dyn_tensor *t = &l->params[p].value;
                for (int64_t i = 0; i < dyn_tensor_numel(t); i++) t->data[i] *= 0.5f;
            }
    }
    ck_assert_int_eq(dyn_model_prepare(m, NULL), 0);
    memcpy(after, dyn_exec_forward(e, x, 2)->data, sizeof after);
    dyn_exec_free(e);
    float *want = run(m, x, 2, DYN_CONV_IM2COL, NULL, NULL);
    expect_close(want, after, 20, "after prepare");
    double moved = 0;
    for (int i = 0; i < 20; i++) moved = fmax(moved, fabs(before[i] - after[i]));
    ck_assert_msg(moved > 1e-3, "the output did not change with the weights (%g)", moved);
    free(want);
    free(x);
    dyn_model_free(m);
}
END_TEST

/* y = relu(conv(x) + x) after a stem: the conv sums onto the value it reads, so it must not
 * take that memory over (in place); and y = conv2(x) + conv1(x) after it, where it may. */
START_TEST(test_graph_sum_onto_own_input) {
    dyn_shape in = {.ndim = 3, .d = {3, 20, 18}};
    dyn_model *m = dyn_model_new(&in);
    int x = add(m, "conv2d", "stem", CONV(3, 16, 3, 1, 1), -1, -2);
    int c = add(m, "conv2d", "c", CONV(16, 16, 3, 1, 1), x, -2);
    x = add(m, "add", "a", "{}", c, x);
    x = add(m, "relu", "r", "{}", x, -2);
    int c1 = add(m, "conv2d", "c1", CONV(16, 16, 1, 1, 0), x, -2);
    int c2 = add(m, "conv2d", "c2", CONV(16, 16, 3, 1, 1), x, -2);
    x = add(m, "add", "a2", "{}", c1, c2);
    x = add(m, "globalavgpool", "gap", "{}", x, -2);
    dyn_model_init(m, 11);
    ck_assert_int_eq(dyn_model_prepare(m, NULL), 0);
    for (int b = 1; b <= 3; b += 2) {
        float *xin = input(b, 40 + b);
        float *want = run(m, xin, b, DYN_CONV_IM2COL, NULL, NULL);
        int nodes = 0, fused = 0;
        float *got = run(m, xin, b, DYN_CONV_GRAPH, &nodes, &fused);
        expect_close(want, got, 16 * b, "sum onto own input");
        ck_assert_int_eq(nodes, 8);
        ck_assert_int_eq(fused, 2); /* c (sum + relu), c2 (sum) */
        free(xin), free(want), free(got);
    }
    dyn_model_free(m);
}
END_TEST

/* An MLP has no node a graph runs: no graph is made, and the forward still works. */
START_TEST(test_graph_nothing_to_fuse) {
    dyn_shape in = {.ndim = 1, .d = {12}};
    dyn_model *m = dyn_model_new(&in);
    int x = add(m, "linear", "fc1", "{\"in\":12,\"out\":8}", -1, -2);
    x = add(m, "relu", "r", "{}", x, -2);
    add(m, "linear", "fc2", "{\"in\":8,\"out\":3}", x, -2);
    dyn_model_init(m, 3);
    dyn_rng rng;
    dyn_rng_seed(&rng, 4);
    dyn_err err = {0};
    dyn_exec *e = dyn_exec_new(m, 2, 0, &err);
    e->batch = 2;
    dyn_graph *g = dyn__graph_new(e, 2, DYN_GRAPH_WINO | DYN_GRAPH_HELD, &err);
    ck_assert_ptr_null(g);
    ck_assert_int_eq(err.code, DYN_EUNSUP);
    float xin[24];
    tu_fill_uniform(xin, 24, &rng, -1, 1);
    dyn_conv_impl_set(DYN_CONV_GRAPH);
    float got[6], want[6];
    memcpy(got, dyn_exec_forward(e, xin, 2)->data, sizeof got);
    dyn_exec_free(e);
    float *w = run(m, xin, 2, DYN_CONV_IM2COL, NULL, NULL);
    memcpy(want, w, sizeof want);
    free(w);
    expect_close(want, got, 6, "mlp");
    dyn_model_free(m);
}
END_TEST

int main(void) {
    Suite *s = suite_create("graph");
    TCase *tc = tcase_create("graph");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_graph_matches_layer_by_layer);
    tcase_add_test(tc, test_graph_winograd);
    tcase_add_test(tc, test_graph_winograd_none_eligible);
    tcase_add_test(tc, test_graph_held);
    tcase_add_test(tc, test_graph_rebuilt_after_prepare);
    tcase_add_test(tc, test_graph_sum_onto_own_input);
    tcase_add_test(tc, test_graph_nothing_to_fuse);
    suite_add_tcase(s, tc);
    return tu_run(s);
}
