/* baseline.c — truncated SVD and per-row quantization baselines (baseline.h). */
#include <math.h>
#include <string.h>

#include <cblas.h>

#include "baseline.h"

/* LAPACK (OpenBLAS exports it; Fortran calling convention). */
extern void dgesdd_(const char *jobz, const int *m, const int *n, double *a, const int *lda,
                    double *s, double *u, const int *ldu, double *vt, const int *ldvt,
                    double *work, const int *lwork, int *iwork, int *info);

int dyn_baseline_kind_parse(const char *s, dyn_baseline_kind *k) {
    for (int i = 0; i < DYN_BASELINE_COUNT; i++)
        if (strcmp(s, dyn_baseline_kind_name((dyn_baseline_kind)i)) == 0) {
            *k = (dyn_baseline_kind)i;
            return 0;
        }
    return -1;
}

const char *dyn_baseline_kind_name(dyn_baseline_kind k) {
    return k == DYN_BASELINE_INT8 ? "int8" : k == DYN_BASELINE_INT4 ? "int4" : "svd";
}

float dyn_round_fp16(float x) {
    const double a = fabs((double)x);
    double r;
    if (!(a > 0)) return isnan(x) ? x : 0.0f;
    if (a >= 65504.0) r = 65504.0;
    else if (a < ldexp(1.0, -14)) r = rint(a * ldexp(1.0, 24)) * ldexp(1.0, -24); /* subnormal */
    else {
        int e;
        frexp(a, &e);                     /* a = f·2^e, f in [0.5, 1): 10 bits below 2^(e−1) */
        const double step = ldexp(1.0, e - 11);
        r = rint(a / step) * step;
        if (r > 65504.0) r = 65504.0;
    }
    return (float)(x < 0 ? -r : r);
}

double dyn_rel_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        const double d = (double)a[i] - b[i];
        num += d * d;
        den += (double)b[i] * b[i];
    }
    if (den > 0) return sqrt(num / den);
    return num > 0 ? 1.0 : 0.0;
}

int dyn_quant_rows(const float *w, int m, int nk, int bits, float *out, double *rel_err,
                   dyn_err *err) {
    if (bits < 2 || bits > 8)
        return dyn_err_set(err, DYN_EINVAL, "quantization to %d bits: give 2..8 bits", bits);
    if (m < 1 || nk < 1)
        return dyn_err_set(err, DYN_EINVAL, "quantization of a %d×%d matrix: empty", m, nk);
    const int qmax = (1 << (bits - 1)) - 1;
    double num = 0, den = 0;
    for (int i = 0; i < m; i++) {
        const float *wr = w + (int64_t)i * nk;
        float *o = out + (int64_t)i * nk;
        float mx = 0;
        for (int j = 0; j < nk; j++) mx = fmaxf(mx, fabsf(wr[j]));
        const float scale = dyn_round_fp16(mx / (float)qmax);
        for (int j = 0; j < nk; j++) {
            const double v = wr[j];
            float r = 0;
            if (scale > 0) {
                const float c = rintf(wr[j] / scale);
                r = fminf(fmaxf(c, (float)-qmax), (float)qmax) * scale;
            }
            num += (r - v) * (r - v);
            den += v * v;
            o[j] = r;
        }
    }
    if (rel_err) *rel_err = den > 0 ? sqrt(num / den) : (num > 0 ? 1.0 : 0.0);
    return 0;
}

int64_t dyn_quant_bytes(int m, int nk, int bits) {
    return ((int64_t)m * nk * bits + 7) / 8 + (int64_t)m * DYN_BASELINE_SCALE_BYTES;
}

int64_t dyn_float_bytes(int64_t floats) { return 4 * floats; }

int dyn_quant_bits_for_bytes(int m, int nk, int64_t bytes) {
    for (int b = 8; b >= 2; b--)
        if (dyn_quant_bytes(m, nk, b) <= bytes) return b;
    return 0;
}

int dyn_svd_rank_for_floats(int m, int nk, int64_t floats) {
    if (m < 1 || nk < 1 || floats < 0) return 0;
    const int64_t r = floats / ((int64_t)m + nk);
    return (int)DYN_MIN(r, (int64_t)DYN_MIN(m, nk));
}

int dyn_svd_reconstruct(const float *w, int m, int nk, int r, float *out, double *rel_err,
                        dyn_err *err) {
    if (m < 1 || nk < 1)
        return dyn_err_set(err, DYN_EINVAL, "SVD of a %d×%d matrix: empty", m, nk);
    const int k = DYN_MIN(m, nk);
    r = DYN_MAX(0, DYN_MIN(r, k));
    /* Row-major w is the column-major nk×m matrix wᵀ = U S Vᵀ (U: nk×k, Vᵀ: k×m), so
     * w[i][j] = Σ_c Vᵀ[c][i] s_c U[j][c]: out = (Vᵀ)ᵀ (S Uᵀ) with one GEMM of inner size r. */
    const int M = nk, N = m;
    double *A = malloc((size_t)m * nk * sizeof(double));
    double *U = malloc((size_t)nk * k * sizeof(double)), *Vt = malloc((size_t)k * m * sizeof(double));
    double *s = malloc((size_t)k * sizeof(double));
    int *iw = malloc((size_t)8 * k * sizeof(int));
    double *work = NULL, wq = 0;
    int lwork = -1, info = -1, rc = 0;
    if (!A || !U || !Vt || !s || !iw) {
        rc = dyn_err_set(err, DYN_ENOMEM, "SVD of a %d×%d matrix: out of memory", m, nk);
        goto done;
    }
    for (int64_t i = 0; i < (int64_t)m * nk; i++) A[i] = w[i];
    dgesdd_("S", &M, &N, A, &M, s, U, &M, Vt, &k, &wq, &lwork, iw, &info);
    lwork = info == 0 ? (int)wq + 1 : 0;
    if (lwork > 0 && !(work = malloc((size_t)lwork * sizeof(double)))) {
        rc = dyn_err_set(err, DYN_ENOMEM, "SVD of a %d×%d matrix: out of memory", m, nk);
        goto done;
    }
    info = -1;
    if (work) dgesdd_("S", &M, &N, A, &M, s, U, &M, Vt, &k, work, &lwork, iw, &info);
    if (info != 0) {
        rc = dyn_err_set(err, DYN_EINVAL, "SVD of a %d×%d matrix failed (LAPACK info %d)", m, nk,
                         info);
        goto done;
    }
    for (int c = 0; c < r; c++) cblas_dscal(nk, s[c], U + (int64_t)c * nk, 1); /* S Uᵀ rows */
    /* A (now free) holds the double result [m][nk]. */
    if (r > 0)
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, nk, r, 1.0, Vt, k, U, nk, 0.0,
                    A, nk);
    else
        memset(A, 0, (size_t)m * nk * sizeof(double));
    double num = 0, den = 0;
    for (int64_t i = 0; i < (int64_t)m * nk; i++) {
        const double v = w[i], d = A[i] - v;
        num += d * d;
        den += v * v;
        out[i] = (float)A[i];
    }
    if (rel_err) *rel_err = den > 0 ? sqrt(num / den) : 0.0;
done:
    free(A);
    free(U);
    free(Vt);
    free(s);
    free(iw);
    free(work);
    return rc;
}

int dyn_baseline_layer(const float *w, int m, int nk, int64_t weight_floats,
                       dyn_convert_layer *L, dyn_err *err) {
    float *tmp = malloc((size_t)m * nk * sizeof(float));
    if (!tmp) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    int rc = dyn_quant_rows(w, m, nk, 8, tmp, &L->int8_rel_err, err);
    if (!rc) rc = dyn_quant_rows(w, m, nk, 4, tmp, &L->int4_rel_err, err);
    free(tmp);
    L->bytes_dyn = dyn_float_bytes(weight_floats);
    L->bytes_int8 = dyn_quant_bytes(m, nk, 8);
    L->bytes_int4 = dyn_quant_bytes(m, nk, 4);
    return rc;
}

/* ---- whole models -------------------------------------------------------------------------- */

int dyn_model_replace_weights(const dyn_model *in, const char *const *names,
                              const float *const *weights, int n, dyn_model **out,
                              dyn_err *err) {
    *out = NULL;
    for (int i = 0; i < n; i++) {
        int found = 0;
        for (int k = 0; k < in->nnodes && !found; k++) {
            dyn_layer *l = in->nodes[k].layer;
            if (strcmp(l->name, names[i]) != 0) continue;
            if (!dyn_layer_param(l, "weight"))
                return dyn_err_set(err, DYN_EINVAL, "layer '%s' has no weight", names[i]);
            found = 1;
        }
        if (!found) return dyn_err_set(err, DYN_EINVAL, "no layer named '%s'", names[i]);
    }
    dyn_model *m = dyn_model_new(&in->input);
    int rc = 0;
    if (!m) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    if ((in->nlabels && dyn_model_labels_set(m, (const char *const *)in->labels, in->nlabels)) ||
        (in->preprocess && !(m->preprocess = json_deep_copy(in->preprocess))) ||
        (in->info && !(m->info = json_deep_copy(in->info)))) {
        rc = dyn_err_set(err, DYN_ENOMEM, "out of memory");
        goto fail;
    }
    for (int k = 0; k < in->nnodes; k++) {
        const dyn_node *nd = &in->nodes[k];
        dyn_layer *c = dyn_layer_clone(nd->layer, err);
        if (!c) {
            rc = err && err->code ? err->code : DYN_ENOMEM;
            goto fail;
        }
        for (int i = 0; i < n; i++)
            if (strcmp(c->name, names[i]) == 0) {
                dyn_param *p = dyn_layer_param(c, "weight");
                memcpy(p->value.data, weights[i],
                       (size_t)dyn_tensor_numel(&p->value) * sizeof(float));
            }
        if ((rc = dyn_model_add(m, c, nd->inputs, nd->ninputs, err)) < 0) goto fail;
        rc = 0;
    }
    if ((rc = dyn_model_prepare(m, err))) goto fail;
    *out = m;
    return 0;
fail:
    dyn_model_free(m);
    return rc;
}

int dyn_model_from_report(const dyn_model *dense, const dyn_convert_report *rep,
                          dyn_reconstruct_fn fn, void *ctx, dyn_model **out, dyn_err *err) {
    *out = NULL;
    if (rep->nlayers != dense->nnodes)
        return dyn_err_set(err, DYN_EINVAL, "the report has %d layers, the model %d",
                           rep->nlayers, dense->nnodes);
    const char **names = calloc((size_t)DYN_MAX(1, rep->nlayers), sizeof *names);
    float **ws = calloc((size_t)DYN_MAX(1, rep->nlayers), sizeof *ws);
    int n = 0, rc = 0;
    if (!names || !ws) {
        rc = dyn_err_set(err, DYN_ENOMEM, "out of memory");
        goto done;
    }
    for (int k = 0; k < rep->nlayers; k++) {
        const dyn_convert_layer *L = &rep->layers[k];
        if (!L->converted) continue;
        const dyn_layer *l = dense->nodes[k].layer;
        dyn_param *p = dyn_layer_param((dyn_layer *)l, "weight");
        const int64_t size = (int64_t)L->m * L->n * L->K * L->K;
        if (strcmp(l->name, L->name) != 0 || !p || dyn_tensor_numel(&p->value) != size) {
            rc = dyn_err_set(err, DYN_EINVAL, "layer %d ('%s') does not match the report", k,
                             l->name);
            goto done;
        }
        if (!(ws[n] = malloc((size_t)size * sizeof(float)))) {
            rc = dyn_err_set(err, DYN_ENOMEM, "out of memory");
            goto done;
        }
        names[n] = l->name;
        rc = fn(ctx, k, L, p->value.data, ws[n], err);
        if (rc < 0) {
            n++;
            goto done;
        }
        if (rc == 1) free(ws[n]);
        else n++;
        rc = 0;
    }
    rc = dyn_model_replace_weights(dense, names, (const float *const *)ws, n, out, err);
done:
    for (int i = 0; i < n; i++) free(ws[i]);
    free(ws);
    free(names);
    return rc;
}

static int baseline_fn(void *ctx, int k, const dyn_convert_layer *L, const float *w, float *out,
                       dyn_err *err) {
    (void)k;
    const dyn_baseline_kind kind = *(const dyn_baseline_kind *)ctx;
    const int nk = L->n * L->K * L->K;
    if (kind == DYN_BASELINE_SVD)
        return dyn_svd_reconstruct(w, L->m, nk, (int)DYN_MAX(0, L->svd_rank), out, NULL, err);
    return dyn_quant_rows(w, L->m, nk, kind == DYN_BASELINE_INT8 ? 8 : 4, out, NULL, err);
}

int dyn_baseline_model(const dyn_model *dense, const dyn_convert_report *rep,
                       dyn_baseline_kind kind, dyn_model **out, dyn_err *err) {
    *out = NULL;
    if (kind < 0 || kind >= DYN_BASELINE_COUNT)
        return dyn_err_set(err, DYN_EINVAL, "unknown baseline kind");
    return dyn_model_from_report(dense, rep, baseline_fn, &kind, out, err);
}
