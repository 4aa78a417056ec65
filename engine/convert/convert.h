/* convert.h — converting a dense model into DyN (DYN.md §4; issue 3).
 *
 * Every `linear` and (square, ungrouped) `conv2d` layer of a dense model becomes `dyn_linear` /
 * `dyn_conv2d` whose states are *fitted* to the dense weights; all other layers are copied.
 * Two levels:
 *   - one layer (fit.c): dyn_fit_layer fits the states of a DyN layer to a dense weight,
 *     data-free ("fixed", the paper's stress ‖Ŵ − W‖²_F / (m·n)) or activation-aware
 *     (‖(Ŵ − W) X‖² on recorded inputs, through G = (Ŵ − W)·C with C = X Xᵀ / N), then
 *     optionally rounds the states down to a δ grid and refits λ and c;
 *   - one model (convert.c): per-layer budget (ratio or target error), calibration statistics,
 *     the fits, accuracy before / after, and a report (JSON and a table).
 *
 * Layout: a layer is K² systems (K = 1 for linear) sharing 2K state sets, as dyn_conv2d
 * stores them: u [K][H][q][m], v [K][H][q][n], λ [K][K][H], c. The dense weight is
 * [m][n·K·K] with column cin·K² + r·K + t (conv2d's [Cout][Cin][K][K]; linear's [out][in]).
 *
 * Threads: the library keeps no globals and never prints; progress goes through callbacks and
 * a cancel flag is polled between fitting steps. Everything measured comes back in the
 * result structs. Kernels use the engine's OpenMP / OpenBLAS threads (dyn_threads_set).
 * Errors follow base.h: 0 or a DYN_E* code with err set; DYN_ECANCEL when the flag was raised.
 */
#ifndef DYN_CONVERT_H
#define DYN_CONVERT_H

#include <jansson.h>

#include "../dyn/dyn.h"
#include "../model.h"
#include "../train.h"

typedef enum dyn_fit_mode {
    DYN_FIT_FIXED,      /* data-free: minimize ‖Ŵ − W‖²_F / (m·n) (the paper's Eq. 6 column) */
    DYN_FIT_ACTIVATION, /* minimize tr((Ŵ − W) C (Ŵ − W)ᵀ), C = input covariance */
    DYN_FIT_COUNT
} dyn_fit_mode;

/* "fixed" | "activation" -> mode. Returns 0 or -1. */
int dyn_fit_mode_parse(const char *s, dyn_fit_mode *f);
const char *dyn_fit_mode_name(dyn_fit_mode f);

/* How the states are initialized before Adam (choice; CONVERT.md "Initialization" has the
 * measurements). RANDOM: states U(0,1) (inv: its range), λ from φ statistics, c from the
 * mean. LSQ: the same states, then λ and c solved in closed form (least squares on ‖Ŵ − W‖).
 * Both rescale the states to the balanced range afterwards (dyn_sys_rescale). */
typedef enum dyn_fit_init {
    DYN_INIT_RANDOM,
    DYN_INIT_LSQ,
    DYN_INIT_SVD, /* states from singular vectors in pairs (fit.c), then LSQ */
    DYN_INIT_COUNT
} dyn_fit_init;
/* "random" | "lsq" | "svd" -> init; 0 or -1. */
int dyn_fit_init_parse(const char *s, dyn_fit_init *i);
const char *dyn_fit_init_name(dyn_fit_init i);

struct dyn_cuda_ctx; /* engine/cuda/dyn_cuda.h */

typedef struct dyn_fit_opts {
    int steps;          /* Adam steps of the main fit (default 2000) */
    float lr;           /* Adam learning rate relative to the state range (default 0.1) */
    dyn_fit_init init;  /* default SVD */
    int restarts;       /* initial candidates, each run for `steps / 10` steps; the best goes on
                           (default 1) */
    double quant;       /* > 0: round the states down to this grid afterwards (default 1e-3) */
    int quant_steps;    /* Adam steps refitting λ and c after rounding (default steps / 10) */
    uint64_t seed;
    /* Algorithm (issue 9; CONVERT.md "Conversion speed"). 0 (default): for the data-free l1
     * fit, one fused pass per row computes Ŵ's row, the loss and all gradients (per-thread
     * column sums, W pre-permuted into per-system blocks), after rounding λ and c are re-solved
     * in closed form (least squares) instead of refitted by Adam, and `sample` /
     * `plateau` apply. 1: the reference path as before issue 9 (full-batch Adam, materialize +
     * gradient passes, Adam refit of λ and c after rounding), kept to measure against. Other
     * kernels and the activation-aware fit use the reference passes either way. */
    int algo;
    double sample;      /* fraction of the rows (output channels) each Adam step sees, a fresh
                           random subset per step (default 0.5, measured in CONVERT.md "Conversion
                           speed"; 1 = full batch; algo 0 only) */
    int sample_min_rows; /* layers with fewer rows always run full batch (default 256: they are
                            cheap, and a 24-row layer fitted 6 % worse at sample 0.5) */
    double plateau;     /* > 0: stop the main Adam early when the relative weight error has not
                           improved by this fraction over the last `steps / 10` steps (checked
                           from half the steps on; default 0 = off; algo 0 only) */
    /* Error-vs-time trace: called after every Adam step of the main fit with the step (from
     * 0), the seconds since the fit started and the relative weight error ‖Ŵ − W‖/‖W‖ of the
     * states before that step (data-free fit; with sample < 1 an estimate from the sampled
     * rows; activation-aware: sqrt(loss / (‖W‖² / (m·n·K²)))); may be NULL. */
    void (*trace)(void *ctx, int step, double seconds, double rel_err);
    void *trace_ctx;
    /* Progress (fraction 0..1 of this fit) about every 0.2 s; may be NULL. */
    void (*progress)(void *ctx, double frac);
    void *progress_ctx;
    const volatile int *cancel; /* polled every step; may be NULL */
    /* Where the Adam steps run (issue 13): DYN_DEV_CPU (0, default) or DYN_DEV_CUDA: the GPU
     * for the data-free l1 fit with algo 0 (fit_cuda.c: every row every step, `sample` does not
     * apply), the CPU for the others and when no GPU answers (dyn_fit_result.device and .note
     * say which and why). Initialization, rounding and the closed-form λ, c stay on the CPU. */
    int device;
    /* With device = DYN_DEV_CUDA: the context to use (borrowed; several fits can share one),
     * or NULL: each fit makes one on device 0 for its duration. */
    struct dyn_cuda_ctx *cuda;
} dyn_fit_opts;

dyn_fit_opts dyn_fit_opts_default(void);

typedef struct dyn_fit_result {
    double rel_err;        /* ‖Ŵ − W‖_F / ‖W‖_F of the final (quantized) states */
    double rel_err_float;  /* the same before rounding (equal when quant = 0) */
    double out_rel_err;    /* ‖(Ŵ − W) X‖ / ‖W X‖ (sqrt of tr(E C Eᵀ) / tr(W C Wᵀ)); -1 without C */
    double init_rel_err;   /* after the initialization (best candidate), before Adam */
    int steps;             /* Adam steps taken (all phases) */
    double seconds;
    int device;            /* where the Adam steps ran: DYN_DEV_CPU or DYN_DEV_CUDA */
    char note[600];        /* with dyn_fit_opts.device = cuda: the device ("cuda:0 NVIDIA H200"),
                              or why the fit ran on the CPU; else "" */
} dyn_fit_result;

/* Fits the DyN layer `dl` (a created "dyn_linear" or "dyn_conv2d") to the dense weight w
 * ([m][n·K·K], borrowed). cov: NULL, or the input covariance [n·K·K][n·K·K] (row-major,
 * symmetric; borrowed): required by the activation-aware fit; with the fixed fit it is only
 * used to report the output error. warm = 1 starts from dl's current states (the
 * paper's Algorithm 1 refits warm), warm = 0 initializes them. The bias is not touched. On
 * success dl holds the fitted (and, with quant > 0, rounded) states and is prepared.
 * Returns 0, DYN_ECANCEL (dl holds the best states so far, prepared), DYN_EINVAL (bad layer or
 * options), DYN_ENOMEM. */
int dyn_fit_layer(dyn_layer *dl, const float *w, const float *cov, dyn_fit_mode mode, int warm,
                  const dyn_fit_opts *o, dyn_fit_result *res, dyn_err *err);

/* Calibration statistics of one layer's inputs (all [n·K·K][n·K·K], row-major, borrowed):
 *   cov        C̃ = X̃ X̃ᵀ / N of the inputs the converted layer will see;
 *   cross      Cx = X X̃ᵀ / N with X the dense model's inputs (sequential fitting), or NULL;
 *   cov_dense  Cxx = X Xᵀ / N (needed with cross).
 * With cross, the activation-aware loss is ‖Ŵ X̃ − W X‖² (the layer also corrects the errors
 * of the layers converted before it); without, ‖(Ŵ − W) X̃‖². */
typedef struct dyn_fit_data {
    const float *cov, *cross, *cov_dense;
} dyn_fit_data;

/* dyn_fit_layer with the calibration statistics in fd (NULL: data-free). out_rel_err is then
 * ‖Ŵ X̃ − W X‖ / ‖W X‖. Same errors as dyn_fit_layer. */
int dyn_fit_layer_data(dyn_layer *dl, const float *w, const dyn_fit_data *fd, dyn_fit_mode mode,
                       int warm, const dyn_fit_opts *o, dyn_fit_result *res, dyn_err *err);

/* Rounds the states of a DyN layer down to the grid `delta` (floor(x/δ)·δ) after rescaling
 * them (l1/l2 only, W unchanged) so their standard deviation is 1 — the grid is then a fixed
 * fraction of the states' spread (choice). λ and c are kept; dl is prepared. Returns 0 or
 * DYN_EINVAL / DYN_ENOMEM. dyn_fit_layer does this and then refits λ and c. */
int dyn_quantize_layer(dyn_layer *dl, double delta, dyn_err *err);

/* Rescales the states of a DyN layer to the balanced range (dyn_sys_rescale: states × R,
 * λ / R with R = sqrt(mean |λ|); W unchanged; l1/l2 only, inv is left as it is), so that one
 * Adam step moves states and λ by similar fractions — done before native training. Not
 * idempotent (apply once). dl is prepared. Returns 0 or DYN_EINVAL for a non-DyN layer. */
int dyn_layer_rescale(dyn_layer *dl, dyn_err *err);

/* Writes the dense weight a DyN layer represents into w ([m][n·K·K], the layout above).
 * Returns 0 or DYN_EINVAL for a layer that is not DyN. */
int dyn_layer_reconstruct(const dyn_layer *dl, float *w, dyn_err *err);

/* Shape of a (dense or DyN) linear / conv2d layer as a fitting problem: m outputs, n inputs,
 * K (1 for linear). Returns 0, or DYN_EUNSUP with a reason (not linear/conv, non-square
 * kernel, stride or padding pairs, groups != 1). */
int dyn_layer_fit_shape(const dyn_layer *l, int *m, int *n, int *K, dyn_err *err);

/* Stored floats of the weight part of a DyN layer: K·H·q·(m+n) + K²·H + 1 (bias excluded). */
int64_t dyn_convert_floats(int m, int n, int K, int H, int q);
/* The largest H (with q fixed) whose weight floats are at most m·n·K²/ratio; 0 when even H = 1
 * does not fit. */
int dyn_convert_budget_H(int m, int n, int K, int q, double ratio);

/* Singular values of the row-major m×n matrix a (LAPACK dgesdd, double precision) into s
 * (min(m, n) values, descending). Returns 0, DYN_ENOMEM, or DYN_EINVAL when LAPACK fails. */
int dyn_svd_values(const float *a, int m, int n, double *s, dyn_err *err);
/* Relative Frobenius error of the best rank-r approximation from the singular values:
 * sqrt(Σ_{i ≥ r} s_i² / Σ s_i²) (0 for a zero matrix). */
double dyn_svd_tail_rel_err(const double *s, int ns, int r);

/* ---- model conversion (convert.c) ----------------------------------------------------------- */

typedef struct dyn_convert_progress {
    const char *phase;  /* "calibrate", "fit", "evaluate", "finetune" */
    int layer, nlayers; /* 1-based index among the layers to convert (fit phase); the epoch
                           and the epochs (finetune phase) */
    const char *layer_name;
    double frac;        /* 0..1 over the whole conversion */
    double elapsed_s;
} dyn_convert_progress;

typedef struct dyn_convert_opts {
    double ratio;           /* per-layer target: weight floats ≤ dense / ratio (default 4) */
    double rel_err;         /* > 0: instead, the smallest H whose fit reaches this error */
    int q;                  /* state dimensions (default 1; measured in CONVERT.md) */
    dyn_kernel kernel;      /* default l1 */
    const char *exec;       /* exec attribute of the new layers (default "auto") */
    dyn_fit_mode fit;
    dyn_fit_opts fitopt;
    const char *const *keep_dense; /* layer names kept dense (borrowed); may be NULL */
    int nkeep;
    int keep_first_conv;    /* keep the first conv2d dense */
    int keep_last;          /* keep the last linear / conv2d (the classifier) dense */
    double min_saving;      /* keep a layer dense unless DyN stores ≤ (1 - this) of its floats
                               (default 0.25) */
    /* Calibration inputs (already normalized), e.g. 512 training images; needed for
     * fit = activation and for the output errors. Labels are ignored. May be NULL. */
    const dyn_batch_source *calib;
    int calib_n;            /* samples of calib used (default all, at most calib->n) */
    const dyn_batch_source *eval; /* labelled data for accuracy before / after; may be NULL */
    int eval_n;             /* samples of eval used (default all) */
    /* Fidelity (issue 9): images held out of the fitting, labels optional (holdout_labeled).
     * Both models run on them: top-1 / top-5 agreement, the logits' relative error, and with
     * labels the accuracy before / after. Without holdout, eval serves. May be NULL. */
    const dyn_batch_source *holdout;
    int holdout_n;          /* default all of holdout */
    int holdout_labeled;
    double min_agreement;   /* floor on top-1 agreement (0 = none): below it, or without images to
                               measure it, dyn_convert fails with DYN_EFIDELITY unless force */
    int force;              /* publish anyway: the report and metadata say it is unverified */
    double target_agreement; /* > 0: instead of ratio, the smallest allocation of floats across
                               layers (by measured sensitivity) whose top-1 agreement reaches it */
    int fit_auto;           /* fit = activation when calib is given, else fixed */
    int H_linear, H_conv;   /* > 0: every converted linear / conv2d gets this many copies
                               (the paper's "No. copies FC / CONV"), instead of the ratio */
    int light;              /* internal (the target search's per-layer probes): skip the
                               calibration logits and the accuracy passes; 0 */
    int form_riem;          /* 1: every converted layer then becomes a RieM-style form
                               (fit_riem.h) at no more floats, fitted data-free; 0: l1 DyN */
    int riem_steps;         /* Adam steps of each RieM fit (default 3000) */
    int distill_epochs;     /* > 0 (with calib): after fitting, native fine-tuning of the
                               converted model on the original's tempered softmax (default 0) */
    float distill_lr;       /* its Adam learning rate (default 2e-3) */
    float distill_temp;     /* the softmax temperature of that distillation (default 4) */
    int distill_augment;    /* random shifts of the distillation images (default 0) */
    /* Images for the distillation, labels unused (e.g. every calibration image not held out);
     * NULL: the calib_n calibration images. */
    const dyn_batch_source *distill;
    int distill_n;          /* samples of distill used (default all) */
    /* > 0: last (after the search of target_agreement, which does not include it), native
     * training of the chosen model on the labels of the images not held out (distill, else
     * calib; calib_labeled must be set; finetune_n of them), the best epoch kept by accuracy on
     * the last of those images (a fifth, at most 2,000). Fidelity and accuracy are measured after it. */
    int finetune_epochs;
    float finetune_lr;      /* its Adam learning rate (default 5e-4) */
    int finetune_augment;   /* random shifts of its images (default 0) */
    int finetune_n;         /* images of distill (else calib) it uses (default all) */
    int calib_labeled;      /* calib / distill carry the user's labels */
    int batch;              /* batch for calibration / evaluation passes (default 64) */
    int sequential;         /* activation fit: each layer sees the inputs of the model converted
                               so far and fits ‖Ŵ X̃ − W X‖ (default 1) */
    int bias_correct;       /* activation fit: b −= Ŵ x̃̄ − W x̄ afterwards (default 1) */
    void (*progress)(void *ctx, const dyn_convert_progress *p);
    void *progress_ctx;
    const volatile int *cancel;
} dyn_convert_opts;

dyn_convert_opts dyn_convert_opts_default(void);

typedef struct dyn_convert_layer {
    char name[64];
    char op_before[24], op_after[24];
    int converted;          /* 0: copied (reason says why when it was a candidate) */
    char reason[96];
    int m, n, K, H, q;
    int64_t floats_before, floats_after; /* stored floats of the layer (bias included) */
    int64_t svd_rank;       /* rank of the SVD with the same weight floats */
    double rel_err, svd_rel_err, out_rel_err, init_rel_err; /* -1 when not measured */
    double hold_rel_err;    /* ‖y' − y‖ / ‖y‖ of the layer's output in the converted vs the
                               original model on the held-out images (errors of the layers
                               before it included); -1 when not measured */
    int64_t macs_before, macs_after; /* per sample, in the layer's execution mode */
    int64_t macs_native;    /* per sample if the layer ran natively (DyN: K²·H·q·(m+n) per
                               output position, as the paper counts); = macs_after if dense */
    double entropy_bits, seconds;
    /* With fit_device = cuda: where the fit's Adam steps ran ("cuda:0 NVIDIA H200"), or why on
     * the CPU (dyn_fit_result.note); else "". */
    char fit_device[600];
    /* Baselines (baseline.h; converted layers only): bytes of the weight as DyN (fp32 floats),
     * as per-row int8 / int4 with fp16 scales, and the quantized weights' relative errors. */
    int64_t bytes_dyn, bytes_int8, bytes_int4;
    double int8_rel_err, int4_rel_err;
} dyn_convert_layer;

typedef struct dyn_convert_report {
    int nlayers;              /* every node of the model */
    dyn_convert_layer *layers;
    int nconverted;
    int64_t floats_before, floats_after, macs_before, macs_after, macs_native;
    double acc_before, acc_after;     /* -1 without eval data */
    double logit_rel_err;             /* ‖logits' − logits‖ / ‖logits‖ on the fidelity images
                                         (holdout, else eval, else calib); -1 without */
    /* Fidelity on held-out images (holdout, else eval); -1 when not measured. */
    double agree_top1;                /* converted top-1 == original top-1 */
    double agree_top5;                /* original top-1 within the converted model's top 5 */
    double holdout_acc_before, holdout_acc_after; /* labelled holdout only */
    int fidelity_n;                   /* images measured */
    char fidelity_on[16];             /* "holdout", "eval" or "" */
    double min_agreement;             /* the floor applied (0: none) */
    int verified;                     /* agreement measured and at least the floor */
    int forced;                       /* published although not verified (force) */
    /* target_agreement: the points explored (stored floats, top-1 agreement), one JSON array of
     * objects; NULL otherwise. Owned (dyn_convert_report_free). */
    json_t *explored;
    /* finetune_epochs: the training's history (dyn_ft_result_json) with the images it used and
     * the top-1 agreement / accuracy before it; NULL otherwise. Owned. */
    json_t *finetune;
    double entropy_bits;              /* mean over DyN layers */
    double seconds;
    char fit[16], kernel[8];
    double ratio, target_rel_err, target_agreement, quant;
    int steps, q;
    /* The converted model's tensor bytes as dyn_model_save stores them (4 per float, 2 / 1 per
     * DyN state value stored as an I16 / I8 code: io/model_file.h), and how many of its floats
     * are coded; dyn_convert fills them (dyn_convert_report_set_storage). */
    int64_t bytes_stored, coded_floats;
} dyn_convert_report;

/* Converts `in` (read only, must be prepared) into a new model *out (free with
 * dyn_model_free): input shape, labels, preprocess and info carry over (info gains a
 * "convert" object). rep is filled (free with dyn_convert_report_free, also after a failure).
 * Returns 0, DYN_ECANCEL, DYN_EINVAL (bad options: fit = activation without calib, ...),
 * DYN_ENOMEM; *out is NULL on failure. */
int dyn_convert(dyn_model *in, const dyn_convert_opts *o, dyn_model **out,
                dyn_convert_report *rep, dyn_err *err);
void dyn_convert_report_free(dyn_convert_report *r);
/* Fills r->bytes_stored and r->coded_floats for the converted model m (only read), so that the
 * JSON and the table show the stored bytes. */
void dyn_convert_report_set_storage(dyn_convert_report *r, const dyn_model *m);
/* The report as JSON (new reference; NULL on ENOMEM). */
json_t *dyn_convert_report_json(const dyn_convert_report *r);
/* The report as a readable table (malloc'd string, caller frees; NULL on ENOMEM). */
char *dyn_convert_report_table(const dyn_convert_report *r);

/* Logits of a model on n samples of src, in batches (a new malloc'd [n][outputs] array, caller
 * frees; NULL with err on failure). */
float *dyn_model_logits(dyn_model *m, const dyn_batch_source *src, int n, int batch,
                        dyn_err *err);
/* The same, also writing the n samples' labels into labels (n ints, caller's) when not NULL. */
float *dyn_model_logits_labels(dyn_model *m, const dyn_batch_source *src, int n, int batch,
                               int *labels, dyn_err *err);

/* A copy of layer l (same op, name, attributes, parameter values), prepared. NULL with err. */
dyn_layer *dyn_layer_clone(const dyn_layer *l, dyn_err *err);

#endif
