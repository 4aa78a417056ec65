#include "data.h"

#include <math.h>
#include <string.h>

static void view_fill(void *ctx, const int *idx, int count, float *x, int *y, dyn_rng *aug) {
    const dyn_data_view *v = ctx;
    const dyn_dataset *ds = v->ds;
    const int H = ds->h, W = ds->w, C = ds->c, hwc = v->norm.hwc;
    const int64_t per = (int64_t)C * H * W;
    float mul[4] = {0}, off[4] = {0};
    for (int c = 0; c < C && c < 4; c++) {
        if (!(v->norm.scale > 0)) { /* a view made by hand (no view_init): its scalar */
            mul[c] = 1.0f / (255.0f * v->std);
            off[c] = v->mean / v->std;
            continue;
        }
        int k = v->norm.c == 1 ? 0 : c;
        mul[c] = 1.0f / (v->norm.scale * v->norm.std[k]);
        off[c] = v->norm.mean[k] / v->norm.std[k];
    }
    for (int b = 0; b < count; b++) {
        int s = v->idx[idx[b]];
        const uint8_t *px = ds->pixels + (int64_t)s * per;
        float *dst = x + (int64_t)b * per;
        y[b] = ds->labels[s];
        int dy = 0, dx = 0;
        if (aug && v->shift > 0) {
            dy = (int)dyn_rng_below(aug, (uint32_t)(2 * v->shift + 1)) - v->shift;
            dx = (int)dyn_rng_below(aug, (uint32_t)(2 * v->shift + 1)) - v->shift;
        }
        for (int c = 0; c < C; c++)
            for (int i = 0; i < H; i++) {
                int si = i - dy;
                for (int j = 0; j < W; j++) {
                    int sj = j - dx;
                    float p = (si >= 0 && si < H && sj >= 0 && sj < W)
                                  ? (float)px[((int64_t)c * H + si) * W + sj]
                                  : 0.0f;
                    int64_t o = hwc ? ((int64_t)i * W + j) * C + c : ((int64_t)c * H + i) * W + j;
                    dst[o] = p * mul[c < 4 ? c : 3] - off[c < 4 ? c : 3];
                }
            }
    }
}

dyn_batch_source dyn_data_view_source(dyn_data_view *v) {
    dyn_batch_source s = {.n = v->n, .fill = view_fill, .ctx = v};
    return s;
}

static int view_init(dyn_data_view *v, const dyn_dataset *ds, int n, float mean, float std,
                     dyn_err *err) {
    memset(v, 0, sizeof *v);
    v->ds = ds;
    v->mean = mean;
    v->std = std;
    v->norm = (dyn_data_norm){.c = 1, .scale = 255.0f, .mean = {mean}, .std = {std}};
    v->shift = 2;
    v->idx = malloc((size_t)(n > 0 ? n : 1) * sizeof(int));
    if (!v->idx) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    v->n = n;
    return 0;
}

int dyn_data_all(const dyn_dataset *ds, float mean, float std, dyn_data_view *v, dyn_err *err) {
    if (view_init(v, ds, ds->n, mean, std, err)) return DYN_ENOMEM;
    for (int i = 0; i < ds->n; i++) v->idx[i] = i;
    return 0;
}

int dyn_data_split(const dyn_dataset *ds, int nval, int limit, uint64_t seed, float mean,
                   float std, dyn_data_view *train, dyn_data_view *val, dyn_err *err) {
    if (nval < 0 || nval >= ds->n)
        return dyn_err_set(err, DYN_EINVAL, "validation size %d must be in 0..%d", nval, ds->n - 1);
    int *perm = malloc((size_t)ds->n * sizeof(int));
    if (!perm) return dyn_err_set(err, DYN_ENOMEM, "out of memory");
    for (int i = 0; i < ds->n; i++) perm[i] = i;
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    for (int i = ds->n - 1; i > 0; i--) {
        int j = (int)dyn_rng_below(&r, (uint32_t)(i + 1)), t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    int ntrain = ds->n - nval;
    if (limit > 0 && limit < ntrain) ntrain = limit;
    if (view_init(val, ds, nval, mean, std, err) || view_init(train, ds, ntrain, mean, std, err)) {
        free(perm);
        dyn_data_view_free(val);
        return DYN_ENOMEM;
    }
    memcpy(val->idx, perm, (size_t)nval * sizeof(int));
    memcpy(train->idx, perm + nval, (size_t)ntrain * sizeof(int));
    free(perm);
    return 0;
}

void dyn_data_view_free(dyn_data_view *v) {
    free(v->idx);
    memset(v, 0, sizeof *v);
}

int dyn_data_view_slice(const dyn_data_view *v, int off, int n, dyn_data_view *out,
                        dyn_err *err) {
    if (off < 0 || n < 0 || off + n > v->n)
        return dyn_err_set(err, DYN_EINVAL, "slice %d+%d of a view of %d samples", off, n, v->n);
    if (view_init(out, v->ds, n, v->mean, v->std, err)) return DYN_ENOMEM;
    out->shift = v->shift;
    out->norm = v->norm;
    memcpy(out->idx, v->idx + off, (size_t)n * sizeof(int));
    return 0;
}

int dyn_data_calib_split(const dyn_dataset *ds, int calib_n, int holdout_n, uint64_t seed,
                         float mean, float std, dyn_data_view *calib, dyn_data_view *holdout,
                         dyn_data_view *pool, dyn_err *err) {
    memset(calib, 0, sizeof *calib);
    memset(holdout, 0, sizeof *holdout);
    if (pool) memset(pool, 0, sizeof *pool);
    if (ds->n < 1 || calib_n < 1 || holdout_n < 0)
        return dyn_err_set(err, DYN_EINVAL, "no calibration images");
    if (calib_n + holdout_n > ds->n) { /* a small set: a quarter (at most) is held out */
        holdout_n = DYN_MIN(holdout_n, ds->n / 4);
        calib_n = ds->n - holdout_n;
    }
    dyn_data_view all = {0};
    int rc = view_init(&all, ds, ds->n, mean, std, err);
    if (rc) return rc;
    for (int i = 0; i < ds->n; i++) all.idx[i] = i;
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    for (int i = ds->n - 1; i > 0; i--) {
        int j = (int)dyn_rng_below(&r, (uint32_t)(i + 1)), t = all.idx[i];
        all.idx[i] = all.idx[j];
        all.idx[j] = t;
    }
    rc = dyn_data_view_slice(&all, 0, calib_n, calib, err);
    if (!rc) rc = dyn_data_view_slice(&all, calib_n, holdout_n, holdout, err);
    if (!rc && pool) { /* all but the held-out slice */
        const int rest = ds->n - calib_n - holdout_n;
        rc = dyn_data_view_slice(&all, 0, calib_n + rest, pool, err);
        if (!rc) memcpy(pool->idx + calib_n, all.idx + calib_n + holdout_n, (size_t)rest * sizeof(int));
    }
    if (rc) {
        dyn_data_view_free(calib);
        dyn_data_view_free(holdout);
        if (pool) dyn_data_view_free(pool);
    }
    dyn_data_view_free(&all);
    return rc;
}

int dyn_data_view_set_norm(dyn_data_view *v, const dyn_data_norm *n, dyn_err *err) {
    const int C = v->ds ? v->ds->c : n->c;
    if (n->c != 1 && n->c != C)
        return dyn_err_set(err, DYN_EINVAL, "normalization for %d channels; the data set has %d",
                           n->c, C);
    if (C > 4) return dyn_err_set(err, DYN_EINVAL, "normalization: at most 4 channels");
    if (!(n->scale > 0) || !isfinite(n->scale))
        return dyn_err_set(err, DYN_EINVAL, "normalization: scale must be > 0");
    for (int k = 0; k < n->c; k++)
        if (!(n->std[k] > 0) || !isfinite(n->std[k]) || !isfinite(n->mean[k]))
            return dyn_err_set(err, DYN_EINVAL, "normalization: std must be > 0, values finite");
    v->norm = *n;
    return 0;
}
