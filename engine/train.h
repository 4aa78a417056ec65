/* train.h — loss, optimizers, the training loop and evaluation.
 *
 * The loop knows nothing of file formats: samples come from a dyn_batch_source, whose fill()
 * writes a batch of inputs (already normalized) and labels. Progress is reported through a
 * callback (the CLI prints a line; the daemon's jobs will publish it), and a cancel flag is
 * polled between steps.
 */
#ifndef DYN_TRAIN_H
#define DYN_TRAIN_H

#include "model.h"

/* Mean softmax cross-entropy over B rows of C logits with integer labels in [0, C).
 * When dlogits is not NULL it receives d(mean loss)/d(logits) (softmax − onehot) / B.
 * When correct is not NULL it receives the number of rows whose argmax equals the label. */
float dyn_softmax_xent(const float *logits, const int *labels, int B, int C, float *dlogits,
                       int *correct);

/* Knowledge distillation's loss: mean over B rows of T² · H(p, softmax(logits / T)), the
 * cross-entropy of the model's tempered softmax against target probabilities p (B × C rows
 * summing to 1, e.g. a teacher's softmax(teacher logits / T)). When dlogits is not NULL it
 * receives d(loss)/d(logits) = T · (softmax(logits / T) − p) / B. When correct is not NULL it
 * receives the number of rows whose argmax equals p's argmax. T > 0. */
float dyn_soft_xent(const float *logits, const float *p, int B, int C, float T, float *dlogits,
                    int *correct);

/* In-place softmax of B rows of C values. */
void dyn_softmax(float *x, int B, int C);

typedef enum { DYN_OPT_SGD, DYN_OPT_ADAM, DYN_OPT_COUNT } dyn_optim_kind;

typedef struct dyn_optim {
    dyn_optim_kind kind;
    float lr;
    float momentum;     /* SGD */
    float beta1, beta2, eps; /* Adam */
    float weight_decay; /* decoupled (AdamW-style; plain L2 for SGD); not applied to 1-D params */
    int64_t t;          /* steps taken */
} dyn_optim;

/* Sensible defaults: Adam(lr 1e-3, 0.9, 0.999, 1e-8), SGD(momentum 0.9). */
dyn_optim dyn_optim_default(dyn_optim_kind kind, float lr);
/* One update of every trainable parameter of m from its accumulated gradient, then
 * dyn_model_prepare (DyN layers re-sort / re-materialize). Allocates moment buffers on first
 * use (owned by the params). Returns 0 or DYN_ENOMEM. */
int dyn_optim_step(dyn_optim *o, dyn_model *m, dyn_err *err);

typedef struct dyn_batch_source {
    int n; /* samples */
    /* Writes count samples idx[0..count) into x (count * numel(model input) floats) and y.
     * aug: when not NULL, apply training-time augmentation drawn from it. */
    void (*fill)(void *ctx, const int *idx, int count, float *x, int *y, dyn_rng *aug);
    void *ctx;
} dyn_batch_source;

typedef struct dyn_progress {
    int epoch, epochs;        /* 1-based epoch */
    int64_t step, steps;      /* global step, total steps */
    float loss;               /* running mean training loss in this epoch */
    float acc;                /* running training accuracy in this epoch */
    float val_acc;            /* last validation accuracy (-1 before the first) */
    double images_per_s, eta_s, elapsed_s;
    int epoch_end;            /* 1 on the report at the end of an epoch */
} dyn_progress;

typedef struct dyn_train_cfg {
    int epochs, batch;
    dyn_optim optim;
    float lr_final_frac;  /* cosine decay from lr to lr * this over the run (1 = constant) */
    int warmup_steps;
    uint64_t seed;        /* shuffling and augmentation */
    int augment;          /* pass an augmentation rng to fill() */
    int keep_best;        /* restore the parameters of the best validation epoch at the end */
    double progress_every_s;
    void (*progress)(void *ctx, const dyn_progress *p);
    void *progress_ctx;
    volatile int *cancel; /* polled between steps; may be NULL */
    /* Distillation (NULL: learn the labels): after fill(), writes the target probabilities
     * (count × C) of the batch inputs x (as fill() wrote them, augmented or not); the loss is
     * then dyn_soft_xent at temperature kd_temp and the reported accuracy agreement with the
     * targets' argmax. Called on the training thread. */
    void (*targets)(void *ctx, const float *x, int count, float *probs);
    void *targets_ctx;
    float kd_temp; /* > 0; 1 when left 0 */
    /* Where to train (backend.h): NULL = where the model is (the CPU, or the device it is
     * placed on). Else dyn_train places the model on this backend's device `device` for the
     * run (optimizer moments included) and, at the end, copies the result to the host and
     * unplaces it; layers without a kernel there train on the CPU. */
    const struct dyn_backend *backend;
    int device;
} dyn_train_cfg;

typedef struct dyn_train_result {
    float best_val_acc;
    int best_epoch;
    float last_loss, last_train_acc;
    double seconds;
    int64_t steps;
} dyn_train_result;

dyn_train_cfg dyn_train_cfg_default(void);

/* Trains m on `train`, validating on `val` (may be NULL) after each epoch. Returns 0,
 * DYN_ECANCEL when the cancel flag was raised (m keeps its current parameters) or another
 * DYN_E* with err set. */
int dyn_train(dyn_model *m, const dyn_batch_source *train, const dyn_batch_source *val,
              const dyn_train_cfg *cfg, dyn_train_result *res, dyn_err *err);

/* Accuracy of m on src, in batches of `batch`. Returns -1 with err set on failure.
 * Fills loss (mean cross-entropy) when not NULL. */
double dyn_evaluate(dyn_model *m, const dyn_batch_source *src, int batch, double *loss,
                    dyn_err *err);

/* Adds uniform noise in [-delta, delta] to every trainable parameter (weights and biases of
 * dense layers; states, lambda, c and biases of DyN layers), then prepares the model. */
void dyn_model_perturb(dyn_model *m, float delta, uint64_t seed);

#endif
