/* data.h — turning a labeled image data set into batches for training and evaluation.
 *
 * A dyn_data_view selects samples of a dyn_dataset (by index list), normalizes pixels as
 * (x/255 − mean) / std and, for training, augments with a random translation of up to
 * `shift` pixels (zero fill). dyn_data_view_source exposes it as a dyn_batch_source.
 */
#ifndef DYN_DATA_H
#define DYN_DATA_H

#include "io/idx.h"
#include "train.h"

typedef struct dyn_data_view {
    const dyn_dataset *ds; /* borrowed */
    int *idx;              /* owned: the samples of this view */
    int n;
    float mean, std;
    int shift;             /* max translation in pixels when augmenting */
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
 * calibrates. Both views are new (dyn_data_view_free). DYN_EINVAL (empty set, calib_n < 1),
 * DYN_ENOMEM; on failure both are zeroed. */
int dyn_data_calib_split(const dyn_dataset *ds, int calib_n, int holdout_n, uint64_t seed,
                         float mean, float std, dyn_data_view *calib, dyn_data_view *holdout,
                         dyn_err *err);
/* The batch source over v (borrows v). */
dyn_batch_source dyn_data_view_source(dyn_data_view *v);

#endif
