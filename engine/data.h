/* data.h — turning a labeled image data set into batches for training and evaluation.
 *
 * A dyn_data_view selects samples of a dyn_dataset (by index list), normalizes pixels as
 * (x/255 − mean) / std (or per channel: dyn_data_norm) and, for training, augments with a random translation of up to
 * `shift` pixels (zero fill). dyn_data_view_source exposes it as a dyn_batch_source.
 */
#ifndef DYN_DATA_H
#define DYN_DATA_H

#include "io/idx.h"
#include "train.h"

/* Per-channel normalization of a view: sample value p of channel k becomes
 * (p / scale - mean[k]) / std[k], computed as p * (1 / (scale * std[k])) - mean[k] / std[k]
 * (the arithmetic views always used); hwc = 1 writes samples interleaved [H][W][C] (a model
 * whose input is NHWC) instead of [C][H][W]. c = 1 applies mean[0] / std[0] to every channel.
 * io/dataset.h dyn_dataset_model_norm fills one from a model's pipeline. */
typedef struct dyn_data_norm {
    int c;
    float scale;
    float mean[4], std[4];
    int hwc;
} dyn_data_norm;

typedef struct dyn_data_view {
    const dyn_dataset *ds; /* borrowed */
    int *idx;              /* owned: the samples of this view */
    int n;
    float mean, std;       /* the scalar normalization the view was made with */
    int shift;             /* max translation in pixels when augmenting */
    dyn_data_norm norm;    /* in force: {1, 255, {mean}, {std}, 0} unless set_norm changed it */
} dyn_data_view;

/* Splits ds into a training view and a validation view of `nval` samples drawn at random
 * (seeded); nval = 0 gives an empty validation view. `limit` > 0 keeps only the first `limit`
 * samples of the training part. Views borrow ds. Free with dyn_data_view_free. */
int dyn_data_split(const dyn_dataset *ds, int nval, int limit, uint64_t seed, float mean,
                   float std, dyn_data_view *train, dyn_data_view *val, dyn_err *err);
/* A view of every sample, in order. */
int dyn_data_all(const dyn_dataset *ds, float mean, float std, dyn_data_view *v, dyn_err *err);
void dyn_data_view_free(dyn_data_view *v);
/* A new view of v's samples off..off+n-1 (same data set, normalization and shift; free with
 * dyn_data_view_free). DYN_EINVAL for a range outside v, DYN_ENOMEM. */
int dyn_data_view_slice(const dyn_data_view *v, int off, int n, dyn_data_view *out,
                        dyn_err *err);
/* Calibration images for a conversion: a seeded random draw of calib_n samples of ds for the
 * fit and holdout_n further ones held out of it to measure fidelity (disjoint). When ds has
 * fewer than calib_n + holdout_n samples, at most a quarter of them is held out and the rest
 * calibrates. pool (may be NULL) receives every sample not held out, the calib_n first (the
 * images a distillation may train on). The views are new (dyn_data_view_free). DYN_EINVAL
 * (empty set, calib_n < 1), DYN_ENOMEM; on failure all are zeroed. */
int dyn_data_calib_split(const dyn_dataset *ds, int calib_n, int holdout_n, uint64_t seed,
                         float mean, float std, dyn_data_view *calib, dyn_data_view *holdout,
                         dyn_data_view *pool, dyn_err *err);
/* Replaces v's normalization with n (copied): the per-channel form of a model's pipeline.
 * DYN_EINVAL (v unchanged) when n->c is neither 1 nor the data set's channel count, a scale or
 * std is not > 0, or a value is not finite. */
int dyn_data_view_set_norm(dyn_data_view *v, const dyn_data_norm *n, dyn_err *err);
/* The batch source over v (borrows v). */
dyn_batch_source dyn_data_view_source(dyn_data_view *v);

#endif
