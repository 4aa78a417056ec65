/* matmul.c — batched product of two activations (ONNX MatMul of activation x activation:
 * attention scores q kᵀ and values a v).
 *
 * Attributes: "ta", "tb" (0/1): the stored A is [.., K, M] / B is [.., N, K] (used transposed).
 * Inputs of equal rank 3 or 4 with equal leading dims (the batch and at most one group dim):
 * A [N, G, M, K], B [N, G, K, N'] -> C [N, G, M, N']. No parameters. One sgemm per batch and
 * group, forward and backward:  dA = dC Bᵀ,  dB = Aᵀ dC  (with the stored layouts).
 */
#include <cblas.h>
#include <limits.h>
#include <string.h>

#include "../layer.h"
#include "matmul_impl.h"

static int mm_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    int64_t ta, tb;
    int rc;
    if ((rc = dyn_attr_int(l, attrs, "ta", 0, 0, 1, &ta, err)) ||
        (rc = dyn_attr_int(l, attrs, "tb", 0, 0, 1, &tb, err)))
        return rc;
    mm_impl *m = malloc(sizeof *m);
    if (!m) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    m->ta = (int)ta;
    m->tb = (int)tb;
    l->impl = m;
    return 0;
}

static void mm_destroy(dyn_layer *l) {
    free(l->impl);
    l->impl = NULL;
}

static json_t *mm_attrs(const dyn_layer *l) {
    const mm_impl *m = l->impl;
    return json_pack("{s:i, s:i}", "ta", m->ta, "tb", m->tb);
}

static int mm_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    const mm_impl *m = l->impl;
    char a[64], b[64];
    int ok = in[0].ndim == in[1].ndim && in[0].ndim >= 3;
    for (int i = 0; ok && i < in[0].ndim - 2; i++) ok = in[0].d[i] == in[1].d[i];
    int64_t M = 0, K = 0, Kb = 0, N = 0;
    if (ok) mm_dims(m, &in[0], &in[1], &M, &K, &Kb, &N);
    if (!ok || K != Kb || M > INT_MAX || N > INT_MAX || K > INT_MAX)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': matmul%s%s of %s and %s: needs rank 3 or 4, equal leading "
                           "dims and matching inner sizes",
                           l->name, m->ta ? " (A transposed)" : "", m->tb ? " (B transposed)" : "",
                           dyn_shape_str(&in[0], a, sizeof a), dyn_shape_str(&in[1], b, sizeof b));
    *out = in[0];
    out->d[out->ndim - 2] = M;
    out->d[out->ndim - 1] = N;
    return 0;
}

typedef struct mm_geo {
    int64_t groups, M, K, N, sa, sb, sc;
} mm_geo;

static mm_geo mm_geom(const mm_impl *m, const dyn_tensor *a, const dyn_tensor *b) {
    dyn_shape sa = dyn_tensor_shape(a), sb = dyn_tensor_shape(b);
    mm_geo g;
    int64_t Kb;
    mm_dims(m, &sa, &sb, &g.M, &g.K, &Kb, &g.N);
    DYN_ASSERT(Kb == g.K);
    g.groups = 1;
    for (int i = 0; i < sa.ndim - 2; i++) g.groups *= sa.d[i];
    g.sa = g.M * g.K;
    g.sb = g.K * g.N;
    g.sc = g.M * g.N;
    return g;
}

static void mm_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                       int training) {
    (void)scratch;
    (void)training;
    const mm_impl *m = l->impl;
    mm_geo g = mm_geom(m, &x[0], &x[1]);
    DYN_ASSERT(dyn_tensor_numel(y) == g.groups * g.sc);
    const int M = (int)g.M, K = (int)g.K, N = (int)g.N;
    for (int64_t i = 0; i < g.groups; i++)
        cblas_sgemm(CblasRowMajor, m->ta ? CblasTrans : CblasNoTrans,
                    m->tb ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, x[0].data + i * g.sa,
                    m->ta ? M : K, x[1].data + i * g.sb, m->tb ? K : N, 0.0f, y->data + i * g.sc,
                    N);
}

static void mm_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                        const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)y;
    (void)scratch;
    const mm_impl *m = l->impl;
    mm_geo g = mm_geom(m, &x[0], &x[1]);
    const int M = (int)g.M, K = (int)g.K, N = (int)g.N, lda = m->ta ? M : K, ldb = m->tb ? K : N;
    for (int64_t i = 0; i < g.groups; i++) {
        const float *A = x[0].data + i * g.sa, *B = x[1].data + i * g.sb, *C = dy->data + i * g.sc;
        if (dx[0].data) {
            float *dA = dx[0].data + i * g.sa;
            if (!m->ta) /* dA[M,K] = dC[M,N] op(B)ᵀ */
                cblas_sgemm(CblasRowMajor, CblasNoTrans, m->tb ? CblasNoTrans : CblasTrans, M, K,
                            N, 1.0f, C, N, B, ldb, 0.0f, dA, K);
            else /* dA[K,M] = op(B)[K,N] dCᵀ */
                cblas_sgemm(CblasRowMajor, m->tb ? CblasTrans : CblasNoTrans, CblasTrans, K, M, N,
                            1.0f, B, ldb, C, N, 0.0f, dA, M);
        }
        if (dx[1].data) {
            float *dB = dx[1].data + i * g.sb;
            if (!m->tb) /* dB[K,N] = op(A)ᵀ dC */
                cblas_sgemm(CblasRowMajor, m->ta ? CblasNoTrans : CblasTrans, CblasNoTrans, K, N,
                            M, 1.0f, A, lda, C, N, 0.0f, dB, N);
            else /* dB[N,K] = dCᵀ op(A) */
                cblas_sgemm(CblasRowMajor, CblasTrans, m->ta ? CblasTrans : CblasNoTrans, N, K, M,
                            1.0f, C, N, A, lda, 0.0f, dB, K);
        }
    }
}

const dyn_layer_ops dyn_op_matmul = {
    .op = DYN_OP_MATMUL,
    .name = "matmul",
    .ninputs = 2,
    .create = mm_create,
    .destroy = mm_destroy,
    .attrs = mm_attrs,
    .infer = mm_infer,
    .forward = mm_forward,
    .backward = mm_backward,
};
