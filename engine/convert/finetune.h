/* finetune.h — fine-tuning a DyN model on labelled data (DYN.md §3, §4; issue 3 item 4).
 *
 * Two modes:
 *   native  — train the states, λ, c and biases directly (dyn_train on the DyN model), one
 *             epoch at a time, learning rate on a per-epoch cosine;
 *   unfixed — the paper's Algorithm 1: a dense copy of the model (every DyN layer materialized)
 *             is trained for one epoch, then every DyN layer's states are refitted to the
 *             dense weights warm-started from the previous states (dyn_fit_layer, warm = 1),
 *             rounded down to the δ grid, and the dense weights are replaced by the DyN
 *             reconstruction; the other layers (biases, BatchNorm) take the dense copy's
 *             values. One such round per "epoch".
 * Both evaluate the DyN model on the validation source after every epoch and keep the best
 * (on validation only: the caller evaluates the test set once, at the end).
 *
 * Checkpoints (when ckpt_dir is set): after every epoch the directory gets
 *   cur-<e>.dyn, cur-<e>.adam_m.dyn, cur-<e>.adam_v.dyn   the model and its Adam moments
 *   dense-<e>.dyn (+ moments)                             unfixed: the dense copy
 *   best.dyn                                              the best model so far
 *   state.json                                            written last: the epoch, the best
 *                                                         score, the optimizer step counts,
 *                                                         the seed, the options, the history
 * each written atomically (temp file, fsync, rename, directory fsync); files of the previous
 * epoch are removed after state.json names the new ones. With resume = 1 the run continues
 * from state.json: it gives the same result as an uninterrupted run with the same options
 * and thread count (data order and augmentation are seeded per epoch; the Adam moments and
 * step counts are restored).
 *
 * No globals, no printing; progress via callback, cancel flag polled between steps.
 */
#ifndef DYN_FINETUNE_H
#define DYN_FINETUNE_H

#include "convert.h"

typedef enum dyn_ft_mode { DYN_FT_NATIVE, DYN_FT_UNFIXED, DYN_FT_COUNT } dyn_ft_mode;
/* "native" | "unfixed" -> mode; 0 or -1. */
int dyn_ft_mode_parse(const char *s, dyn_ft_mode *m);
const char *dyn_ft_mode_name(dyn_ft_mode m);

typedef struct dyn_ft_progress {
    const char *phase;   /* "train", "fit" (unfixed refit), "evaluate" */
    int epoch, epochs;   /* 1-based */
    dyn_progress train;  /* the training loop's report (phase "train") */
    double fit_frac;     /* phase "fit": 0..1 over the layers */
    float best_val_acc;  /* -1 before the first */
} dyn_ft_progress;

typedef struct dyn_ft_opts {
    dyn_ft_mode mode;
    int epochs;          /* epochs (native) or rounds (unfixed); default 5 */
    int batch;           /* default 64 */
    float lr;            /* Adam; default 1e-3 (native) — set by the caller */
    float lr_final_frac; /* per-epoch cosine from lr to lr·this (default 0.05) */
    int augment;         /* random shifts (default 1) */
    uint64_t seed;
    dyn_fit_opts fit;    /* unfixed: the refit of each round (default 300 steps, δ = 1e-3) */
    const char *ckpt_dir; /* NULL: no checkpoints */
    int resume;          /* continue from ckpt_dir/state.json */
    void (*progress)(void *ctx, const dyn_ft_progress *p);
    void *progress_ctx;
    /* Called (when set, with ckpt_dir set) after each epoch's checkpoint is complete in
     * ckpt_dir: state.json written and the previous epoch's files removed, so the directory
     * holds exactly what state.json names. For copying it elsewhere (dynd: the model store);
     * the directory is not changed while the call runs. epoch: 1-based, the one just saved. */
    void (*checkpointed)(void *ctx, const char *ckpt_dir, int epoch);
    void *checkpointed_ctx;
    volatile int *cancel;
    /* native mode: distillation targets instead of the labels (dyn_train_cfg.targets) */
    void (*targets)(void *ctx, const float *x, int count, float *probs);
    void *targets_ctx;
    float kd_temp;
    /* Where the epochs train (dyn_train_cfg.backend, engine/backend.h): NULL = the CPU. */
    const struct dyn_backend *backend;
    int device;
} dyn_ft_opts;

dyn_ft_opts dyn_ft_opts_default(void);

typedef struct dyn_ft_epoch {
    int epoch;
    float train_loss, train_acc, val_acc;
    double fit_rel_err; /* unfixed: mean relative error of the refits (-1 for native) */
    double seconds;
} dyn_ft_epoch;

typedef struct dyn_ft_result {
    int nhist;
    dyn_ft_epoch *hist; /* owned: free with dyn_ft_result_free */
    float best_val_acc;
    int best_epoch;     /* 0 = the model as given was best (or no epoch ran) */
    float start_val_acc;
    int resumed_from;   /* epochs already done when the run resumed (0 = fresh) */
    double seconds;
} dyn_ft_result;

/* Fine-tunes m (a prepared DyN model; modified in place) on `train`, choosing on `val`
 * (required, n > 0). On success m holds the parameters of the best validation epoch.
 * Returns 0; DYN_ECANCEL (m holds the best parameters so far; the checkpoint of the last
 * finished epoch can be resumed); DYN_EINVAL (bad options, no DyN layer in unfixed mode, a
 * checkpoint that does not belong to this model or these options); DYN_EIO (checkpoint files);
 * DYN_ENOMEM. res is filled in every case (free with dyn_ft_result_free). */
int dyn_finetune(dyn_model *m, const dyn_batch_source *train, const dyn_batch_source *val,
                 const dyn_ft_opts *o, dyn_ft_result *res, dyn_err *err);
void dyn_ft_result_free(dyn_ft_result *r);
/* The result as JSON (new reference). */
json_t *dyn_ft_result_json(const dyn_ft_result *r);

/* A dense copy of m: every dyn_linear / dyn_conv2d becomes linear / conv2d with the
 * materialized weight and the same bias and name; other layers are copied. New model (free
 * with dyn_model_free) or NULL with err. */
dyn_model *dyn_model_densify(const dyn_model *m, dyn_err *err);

#endif
