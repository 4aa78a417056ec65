/* fit_riem.c — the RieM-style form and its data-free fit (fit_riem.h).
 *
 * One step, U = 6·D units, u = c·D + d:
 *   P [m][U]  = x Aᵀ + b                  (one GEMM)
 *   Q [nk][U] = y Ãᵀ, Ã_u[k] = A_u[(k − c) mod q]   (roll_c moved from y onto A: one GEMM)
 *   per (i, j): s_u = σ(P_iu + Q_ju), Ŵ_ij = β₀ + Σ_u w_{u mod D} s_u, e = Ŵ_ij − T_ij
 *               (T = W / scale), g = 2e / (m·nk); then ∂/∂z_u = g·w·s(1 − s) into dP_i, dQ_j
 *   dx = dP A, dA = dPᵀ x + unroll(dQᵀ y), dy = dQ Ã, db = Σ_i dP_i.
 * The fused (i, j) loop keeps nothing per entry, so memory is O((m + nk)·U). It runs on one
 * thread (the conversion runs layers one after another; the engine's other loops are where
 * the threads go).
 */
#include <math.h>
#include <string.h>

#include <cblas.h>

#include "baseline.h"
#include "fit_riem.h"

#define G DYN_RIEM_GROUPS

dyn_riem_opts dyn_riem_opts_default(void) {
    dyn_riem_opts o = {.steps = 3000, .restarts = 4, .lr = 0.02f, .seed = 1};
    return o;
}

int64_t dyn_riem_floats(int m, int nk, int q, int D) {
    return (int64_t)q * ((int64_t)m + nk) + (int64_t)G * D * q + (int64_t)G * D + D + 1;
}

int dyn_riem_q_for_floats(int m, int nk, int D, int64_t floats) {
    const int64_t fixed = (int64_t)G * D + D + 1, per_q = (int64_t)m + nk + (int64_t)G * D;
    if (floats < fixed + per_q) return 0;
    return (int)DYN_MIN((floats - fixed) / per_q, (int64_t)4096);
}

/* θ offsets */
typedef struct riem_off {
    int64_t x, y, A, b, w, b0, n;
} riem_off;

static riem_off offs(const dyn_riem *r) {
    riem_off o;
    const int64_t U = (int64_t)G * r->D;
    o.x = 0;
    o.y = o.x + (int64_t)r->m * r->q;
    o.A = o.y + (int64_t)r->nk * r->q;
    o.b = o.A + U * r->q;
    o.w = o.b + U;
    o.b0 = o.w + r->D;
    o.n = o.b0 + 1;
    return o;
}

/* exp(x) for x in [−88, 88] by 2^n · p(r) (|r| ≤ ln2/2, degree 6: relative error ~2e-7),
 * written so the compiler vectorizes the loops that call it. */
static inline float exp_poly(float x) {
    const float n = rintf(x * 1.44269504f);
    const float r = (x - n * 0.693145752f) - n * 1.42860677e-6f;
    float p = 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    union {
        int32_t i;
        float f;
    } two = {.i = ((int32_t)n + 127) << 23};
    return p * two.f;
}

static inline float sigm(float z) {
    z = fminf(fmaxf(z, -30.0f), 30.0f);
    return 1.0f / (1.0f + exp_poly(-z));
}

typedef struct riem_work {
    float *P, *Q, *dP, *dQ, *At, *dAt, *wv, *gw, *sv;
} riem_work;

static void work_free(riem_work *k) {
    free(k->P);
    free(k->Q);
    free(k->dP);
    free(k->dQ);
    free(k->At);
    free(k->dAt);
    free(k->wv);
    free(k->gw);
    free(k->sv);
}

static int work_alloc(const dyn_riem *r, riem_work *k) {
    const size_t U = (size_t)G * r->D;
    memset(k, 0, sizeof *k);
    k->P = malloc((size_t)r->m * U * sizeof(float));
    k->dP = malloc((size_t)r->m * U * sizeof(float));
    k->Q = malloc((size_t)r->nk * U * sizeof(float));
    k->dQ = malloc((size_t)r->nk * U * sizeof(float));
    k->At = malloc(U * r->q * sizeof(float));
    k->dAt = malloc(U * r->q * sizeof(float));
    k->wv = malloc(U * sizeof(float));
    k->gw = malloc(U * sizeof(float));
    k->sv = malloc(U * sizeof(float));
    if (!k->P || !k->dP || !k->Q || !k->dQ || !k->At || !k->dAt || !k->wv || !k->gw || !k->sv) {
        work_free(k);
        return -1;
    }
    return 0;
}

/* P, Q and the per-unit read-out weights from θ. */
static void riem_pre(const dyn_riem *r, const float *th, riem_work *k) {
    const riem_off o = offs(r);
    const int D = r->D, q = r->q, U = G * D;
    const float *A = th + o.A;
    for (int u = 0; u < U; u++) {
        const int c = u / D;
        for (int kk = 0; kk < q; kk++) k->At[u * q + kk] = A[u * q + ((kk - c) % q + q) % q];
        k->wv[u] = th[o.w + u % D];
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r->m, U, q, 1.0f, th + o.x, q, A, q,
                0.0f, k->P, U);
    for (int i = 0; i < r->m; i++)
        for (int u = 0; u < U; u++) k->P[(int64_t)i * U + u] += th[o.b + u];
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, r->nk, U, q, 1.0f, th + o.y, q, k->At,
                q, 0.0f, k->Q, U);
}

/* Loss mean((Ŵ/s − W/s)²) at θ = th and, when grad is not NULL, its gradient. */
static double riem_eval(const dyn_riem *r, const float *th, const float *w, float *grad,
                        riem_work *k) {
    const riem_off o = offs(r);
    const int D = r->D, q = r->q, U = G * D, m = r->m, nk = r->nk;
    const float inv_s = 1.0f / r->scale, b0 = th[o.b0];
    const double N = (double)m * nk;
    const float g2 = (float)(2.0 / N);
    riem_pre(r, th, k);
    if (grad) {
        memset(k->dQ, 0, (size_t)nk * U * sizeof(float));
        memset(k->gw, 0, (size_t)U * sizeof(float));
    }
    double loss = 0, gb0 = 0;
    float *sv = k->sv;
    const float *wv = k->wv;
    for (int i = 0; i < m; i++) {
        const float *Pi = k->P + (int64_t)i * U;
        float *dPi = k->dP + (int64_t)i * U;
        if (grad) memset(dPi, 0, (size_t)U * sizeof(float));
        for (int j = 0; j < nk; j++) {
            const float *Qj = k->Q + (int64_t)j * U;
            float acc = 0;
#pragma omp simd reduction(+ : acc)
            for (int u = 0; u < U; u++) {
                sv[u] = sigm(Pi[u] + Qj[u]);
                acc += wv[u] * sv[u];
            }
            const float e = b0 + acc - w[(int64_t)i * nk + j] * inv_s;
            loss += (double)e * e;
            if (!grad) continue;
            const float g = g2 * e;
            gb0 += g;
            float *dQj = k->dQ + (int64_t)j * U, *gw = k->gw;
#pragma omp simd
            for (int u = 0; u < U; u++) {
                const float s = sv[u], gz = g * wv[u] * s * (1 - s);
                gw[u] += g * s;
                dPi[u] += gz;
                dQj[u] += gz;
            }
        }
    }
    if (!grad) return loss / N;
    /* back through P = x Aᵀ + b and Q = y Ãᵀ */
    float *gx = grad + o.x, *gy = grad + o.y, *gA = grad + o.A;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, q, U, 1.0f, k->dP, U, th + o.A, q,
                0.0f, gx, q);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nk, q, U, 1.0f, k->dQ, U, k->At, q,
                0.0f, gy, q);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, U, q, m, 1.0f, k->dP, U, th + o.x, q,
                0.0f, gA, q);
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, U, q, nk, 1.0f, k->dQ, U, th + o.y, q,
                0.0f, k->dAt, q);
    for (int u = 0; u < U; u++) {
        const int c = u / D;
        for (int kk = 0; kk < q; kk++) gA[u * q + ((kk - c) % q + q) % q] += k->dAt[u * q + kk];
        double sb = 0;
        for (int i = 0; i < m; i++) sb += k->dP[(int64_t)i * U + u];
        grad[o.b + u] = (float)sb;
    }
    for (int d = 0; d < D; d++) {
        float s = 0;
        for (int c = 0; c < G; c++) s += k->gw[c * D + d];
        grad[o.w + d] = s;
    }
    grad[o.b0] = (float)gb0;
    return loss / N;
}

double dyn_riem_loss(const dyn_riem *r, const float *w, float *grad) {
    riem_work k;
    if (work_alloc(r, &k)) return -1;
    const double l = riem_eval(r, r->theta, w, grad, &k);
    work_free(&k);
    return l;
}

void dyn_riem_free(dyn_riem *r) {
    free(r->theta);
    r->theta = NULL;
}

/* Random θ (header comment), β₀ set so the mean matches. */
static void riem_init(const dyn_riem *r, float *th, const float *w, dyn_rng *rng,
                      riem_work *k) {
    const riem_off o = offs(r);
    const int U = G * r->D;
    for (int64_t i = o.x; i < o.A; i++) th[i] = dyn_rng_normal(rng);
    const float sa = 1.0f / sqrtf(2.0f * (float)r->q);
    for (int64_t i = o.A; i < o.b; i++) th[i] = sa * dyn_rng_normal(rng);
    for (int64_t i = o.b; i < o.w; i++) th[i] = 0;
    for (int64_t i = o.w; i < o.b0; i++) th[i] = dyn_rng_normal(rng) / sqrtf((float)r->D);
    th[o.b0] = 0;
    riem_pre(r, th, k);
    double mean_hat = 0, mean_t = 0;
    for (int i = 0; i < r->m; i++)
        for (int j = 0; j < r->nk; j++) {
            float acc = 0;
            for (int u = 0; u < U; u++)
                acc += k->wv[u] * sigm(k->P[(int64_t)i * U + u] + k->Q[(int64_t)j * U + u]);
            mean_hat += acc;
            mean_t += w[(int64_t)i * r->nk + j] / r->scale;
        }
    th[o.b0] = (float)((mean_t - mean_hat) / ((double)r->m * r->nk));
}

/* `steps` Adam steps on th from fresh moments, cosine decay to 1 %; returns the loss after
 * them, -1 when cancelled. */
static double riem_adam(const dyn_riem *r, float *th, const float *w, int steps, float lr0,
                        const volatile int *cancel, riem_work *k, float *g, float *m1, float *m2) {
    const int64_t n = offs(r).n;
    memset(m1, 0, (size_t)n * sizeof(float));
    memset(m2, 0, (size_t)n * sizeof(float));
    const float b1 = 0.9f, b2 = 0.999f;
    for (int s = 0; s < steps; s++) {
        if (cancel && *cancel) return -1;
        riem_eval(r, th, w, g, k);
        const float frac = steps > 1 ? (float)s / (float)(steps - 1) : 1.0f;
        const float lr = lr0 * (0.01f + 0.99f * 0.5f * (1.0f + cosf(3.14159265f * frac)));
        const float bc1 = 1.0f - powf(b1, (float)(s + 1)), bc2 = 1.0f - powf(b2, (float)(s + 1));
        for (int64_t i = 0; i < n; i++) {
            m1[i] = b1 * m1[i] + (1 - b1) * g[i];
            m2[i] = b2 * m2[i] + (1 - b2) * g[i] * g[i];
            th[i] -= lr * (m1[i] / bc1) / (sqrtf(m2[i] / bc2) + 1e-12f);
        }
    }
    return riem_eval(r, th, w, NULL, k);
}

int dyn_riem_fit(const float *w, int m, int nk, int q, int D, const dyn_riem_opts *o,
                 dyn_riem *r, double *rel_err, dyn_err *err) {
    memset(r, 0, sizeof *r);
    if (m < 1 || nk < 1 || q < 1 || D < 1 || o->steps < 0)
        return dyn_err_set(err, DYN_EINVAL, "RieM fit: bad sizes (m %d, nk %d, q %d, D %d)", m,
                           nk, q, D);
    r->m = m;
    r->nk = nk;
    r->q = q;
    r->D = D;
    double s2 = 0;
    for (int64_t i = 0; i < (int64_t)m * nk; i++) s2 += (double)w[i] * w[i];
    r->scale = s2 > 0 ? (float)sqrt(s2 / ((double)m * nk)) : 1.0f;
    const int64_t n = offs(r).n;
    riem_work k;
    float *best = malloc((size_t)n * sizeof(float)), *cur = malloc((size_t)n * sizeof(float));
    float *g = malloc((size_t)n * sizeof(float)), *m1 = malloc((size_t)n * sizeof(float));
    float *m2 = malloc((size_t)n * sizeof(float));
    int rc = 0;
    if (!best || !cur || !g || !m1 || !m2 || work_alloc(r, &k)) {
        free(best);
        free(cur);
        free(g);
        free(m1);
        free(m2);
        return dyn_err_set(err, DYN_ENOMEM, "RieM fit of a %d×%d matrix: out of memory", m, nk);
    }
    dyn_rng rng;
    dyn_rng_seed(&rng, o->seed);
    const int R = DYN_MAX(1, o->restarts), short_steps = R > 1 ? DYN_MAX(1, o->steps / 10) : 0;
    double best_loss = INFINITY;
    for (int c = 0; c < R; c++) {
        riem_init(r, cur, w, &rng, &k);
        const double l = short_steps ? riem_adam(r, cur, w, short_steps, o->lr, o->cancel, &k, g,
                                                 m1, m2)
                                     : riem_eval(r, cur, w, NULL, &k);
        if (l < 0) {
            rc = dyn_err_set(err, DYN_ECANCEL, "cancelled");
            memcpy(best, cur, (size_t)n * sizeof(float));
            break;
        }
        if (l < best_loss) {
            best_loss = l;
            memcpy(best, cur, (size_t)n * sizeof(float));
        }
    }
    if (!rc && riem_adam(r, best, w, o->steps, o->lr, o->cancel, &k, g, m1, m2) < 0)
        rc = dyn_err_set(err, DYN_ECANCEL, "cancelled");
    r->theta = best;
    if (rel_err) {
        double tot = 0;
        for (int64_t i = 0; i < (int64_t)m * nk; i++) tot += (double)w[i] * w[i] / ((double)r->scale * r->scale);
        const double l = riem_eval(r, best, w, NULL, &k) * (double)m * nk;
        *rel_err = tot > 0 ? sqrt(l / tot) : 0.0;
    }
    work_free(&k);
    free(cur);
    free(g);
    free(m1);
    free(m2);
    return rc;
}

void dyn_riem_materialize(const dyn_riem *r, float *out) {
    const riem_off o = offs(r);
    const int D = r->D, q = r->q, U = G * D;
    const float *th = r->theta;
    for (int i = 0; i < r->m; i++)
        for (int j = 0; j < r->nk; j++) {
            double acc = th[o.b0];
            for (int u = 0; u < U; u++) {
                const int c = u / D;
                double z = th[o.b + u];
                for (int kk = 0; kk < q; kk++)
                    z += (double)th[o.A + (int64_t)u * q + kk] *
                         ((double)th[o.x + (int64_t)i * q + kk] +
                          th[o.y + (int64_t)j * q + (kk + c) % q]);
                acc += (double)th[o.w + u % D] / (1.0 + exp(-z));
            }
            out[(int64_t)i * r->nk + j] = (float)(acc * r->scale);
        }
}

void dyn_riem_conv_rows(const float *w, int m, int n, int K, int inverse, float *out) {
    const int64_t nk = (int64_t)n * K * K;
    for (int o = 0; o < m; o++)
        for (int i = 0; i < n; i++)
            for (int r = 0; r < K; r++)
                for (int t = 0; t < K; t++) {
                    const int64_t a = o * nk + (int64_t)i * K * K + r * K + t;
                    const int64_t b = ((int64_t)o * K + r) * n * K + (int64_t)i * K + t;
                    if (inverse) out[a] = w[b];
                    else out[b] = w[a];
                }
}

typedef struct riem_ctx {
    int D;
    const dyn_riem_opts *o;
    double *rel_err;
} riem_ctx;

static int riem_fn(void *ctx, int k, const dyn_convert_layer *L, const float *w, float *out,
                   dyn_err *err) {
    const riem_ctx *c = ctx;
    const int K = L->K, rows = L->m * K, cols = L->n * K;
    const int64_t size = (int64_t)L->m * L->n * K * K;
    const int q = dyn_riem_q_for_floats(rows, cols, c->D,
                                        dyn_convert_floats(L->m, L->n, K, L->H, L->q));
    if (q < 1) return 1;
    float *tmp = K > 1 ? malloc((size_t)size * sizeof(float)) : NULL;
    if (K > 1 && !tmp) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    if (K > 1) dyn_riem_conv_rows(w, L->m, L->n, K, 0, tmp);
    dyn_riem r;
    dyn_riem_opts lo = *c->o;
    lo.seed = c->o->seed + (uint64_t)k * 7919;
    int rc = dyn_riem_fit(K > 1 ? tmp : w, rows, cols, q, c->D, &lo, &r, NULL, err);
    if (!rc) {
        dyn_riem_materialize(&r, K > 1 ? tmp : out);
        if (K > 1) dyn_riem_conv_rows(tmp, L->m, L->n, K, 1, out);
        if (c->rel_err) c->rel_err[k] = dyn_rel_err(out, w, size);
    } else if (rc != DYN_ECANCEL) {
        dyn_err_prefix(err, "layer '%s'", L->name);
    }
    dyn_riem_free(&r);
    free(tmp);
    return rc;
}

int dyn_riem_model(const dyn_model *dense, const dyn_convert_report *rep, int D,
                   const dyn_riem_opts *o, double *rel_err, dyn_model **out, dyn_err *err) {
    if (rel_err)
        for (int k = 0; k < rep->nlayers; k++) rel_err[k] = -1;
    riem_ctx c = {.D = D, .o = o, .rel_err = rel_err};
    return dyn_model_from_report(dense, rep, riem_fn, &c, out, err);
}

int dyn_riem_convert(const dyn_model *dense, const dyn_convert_report *rep, int D,
                     const dyn_riem_opts *o, double *rel_err, dyn_model **out, dyn_err *err) {
    *out = NULL;
    if (rep->nlayers != dense->nnodes)
        return dyn_err_set(err, DYN_EINVAL, "the report has %d layers, the model %d",
                           rep->nlayers, dense->nnodes);
    dyn_model *m = dyn_model_new(&dense->input);
    float *wr = NULL, *wh = NULL;
    int rc = 0;
    if (!m) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    if ((dense->nlabels &&
         dyn_model_labels_set(m, (const char *const *)dense->labels, dense->nlabels)) ||
        (dense->preprocess && !(m->preprocess = json_deep_copy(dense->preprocess))) ||
        (dense->info && !(m->info = json_deep_copy(dense->info)))) {
        rc = dyn_err_set(err, DYN_ENOMEM, "out of memory");
        goto fail;
    }
    for (int k = 0; k < dense->nnodes; k++) {
        const dyn_node *nd = &dense->nodes[k];
        const dyn_convert_layer *L = &rep->layers[k];
        dyn_layer *nl = NULL;
        if (rel_err) rel_err[k] = -1;
        if (L->converted) {
            const dyn_layer *l = nd->layer;
            dyn_param *p = dyn_layer_param((dyn_layer *)l, "weight");
            const int K = L->K, rows = L->m * K, cols = L->n * K;
            const int64_t size = (int64_t)L->m * L->n * K * K;
            if (strcmp(l->name, L->name) != 0 || !p || dyn_tensor_numel(&p->value) != size) {
                rc = dyn_err_set(err, DYN_EINVAL, "layer %d ('%s') does not match the report",
                                 k, l->name);
                goto fail;
            }
            const int q = dyn_riem_q_for_floats(rows, cols, D,
                                                dyn_convert_floats(L->m, L->n, K, L->H, L->q));
            if (q >= 1) {
                free(wr);
                free(wh);
                wr = malloc((size_t)size * sizeof(float));
                wh = malloc((size_t)size * sizeof(float));
                if (!wr || !wh) {
                    rc = dyn_err_set(err, DYN_ENOMEM, "out of memory");
                    goto fail;
                }
                if (K > 1) dyn_riem_conv_rows(p->value.data, L->m, L->n, K, 0, wr);
                else memcpy(wr, p->value.data, (size_t)size * sizeof(float));
                dyn_riem r;
                dyn_riem_opts lo = *o;
                lo.seed = o->seed + (uint64_t)k * 7919;
                rc = dyn_riem_fit(wr, rows, cols, q, D, &lo, &r, NULL, err);
                if (!rc) rc = dyn_riem_layer_from_fit(l, &r, &nl, err);
                if (!rc && rel_err) {
                    dyn_riem_materialize(&r, wh);
                    rel_err[k] = dyn_rel_err(wh, wr, size);
                }
                dyn_riem_free(&r);
                if (rc) {
                    if (rc != DYN_ECANCEL) dyn_err_prefix(err, "layer '%s'", l->name);
                    goto fail;
                }
            }
        }
        if (!nl && !(nl = dyn_layer_clone(nd->layer, err))) {
            rc = err && err->code ? err->code : DYN_ENOMEM;
            goto fail;
        }
        if ((rc = dyn_model_add(m, nl, nd->inputs, nd->ninputs, err)) < 0) goto fail;
        rc = 0;
    }
    if ((rc = dyn_model_prepare(m, err))) goto fail;
    free(wr);
    free(wh);
    *out = m;
    return 0;
fail:
    free(wr);
    free(wh);
    dyn_model_free(m);
    return rc;
}
