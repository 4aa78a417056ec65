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
/* The batch source over v (borrows v). */
dyn_batch_source dyn_data_view_source(dyn_data_view *v);

#endif
