/* baseline.h — what a DyN layer is compared with (DYN.md §4 "The authors' follow-up"; issue 9
 * item 5): truncated SVD at equal stored floats and per-row int8 / int4 quantization at (about)
 * equal bytes, per layer and for a whole model.
 *
 * A weight is the row-major matrix [m][nk] of convert.h (linear [out][in]; conv2d
 * [Cout][Cin·K·K]). Errors are relative Frobenius errors ‖Ŵ − W‖_F / ‖W‖_F (0 for W = 0).
 *
 * Bytes (weight part only, bias excluded, as the floats in convert.h):
 *   DyN / SVD, fp32 factors:  4 · floats
 *   per-row intB:             ceil(m · nk · B / 8) + m · DYN_BASELINE_SCALE_BYTES
 * Per-row symmetric quantization (choice): scale_i = max_j |W_ij| / (2^(B−1) − 1) stored as
 * fp16 (the value is rounded to fp16 *before* quantizing, so the reconstruction is the one the
 * counted bytes give), codes round(W_ij / scale_i) clamped to ±(2^(B−1) − 1): int8 ±127, int4
 * ±7 (symmetric: −8 is not used).
 *
 * Errors follow base.h: 0 or a negative DYN_E* code with err set.
 */
#ifndef DYN_BASELINE_H
#define DYN_BASELINE_H

#include "convert.h"

#define DYN_BASELINE_SCALE_BYTES 2 /* one fp16 scale per row */

typedef enum dyn_baseline_kind {
    DYN_BASELINE_SVD,  /* truncated SVD at the rank of the report's svd_rank (equal floats) */
    DYN_BASELINE_INT8, /* per-row symmetric int8 */
    DYN_BASELINE_INT4, /* per-row symmetric int4 */
    DYN_BASELINE_COUNT
} dyn_baseline_kind;

/* "svd" | "int8" | "int4" (and back); parse returns 0 or -1. */
int dyn_baseline_kind_parse(const char *s, dyn_baseline_kind *k);
const char *dyn_baseline_kind_name(dyn_baseline_kind k);

/* x rounded to the nearest fp16 value (round to nearest even; ±65504 at most; subnormals
 * kept), returned as a float. */
float dyn_round_fp16(float x);

/* Per-row symmetric quantization of w [m][nk] with `bits` in 2..8: writes the reconstruction
 * (codes × fp16 scale) into out [m][nk] (may be w itself) and, when rel_err is not NULL, the
 * relative error. Returns 0 or DYN_EINVAL (bits or shape out of range). */
int dyn_quant_rows(const float *w, int m, int nk, int bits, float *out, double *rel_err,
                   dyn_err *err);

/* Bytes of a per-row intB weight [m][nk]: ceil(m·nk·bits/8) + m·DYN_BASELINE_SCALE_BYTES. */
int64_t dyn_quant_bytes(int m, int nk, int bits);
/* Bytes of `floats` fp32 values (a DyN layer's or SVD factors' weight floats): 4·floats. */
int64_t dyn_float_bytes(int64_t floats);

/* The largest bits in 2..8 whose per-row quantization fits in `bytes` (equal or fewer bytes);
 * 0 when not even 2 bits fit. */
int dyn_quant_bits_for_bytes(int m, int nk, int64_t bytes);
/* The rank of a truncated SVD (fp32 factors, r·(m + nk) floats) with at most `floats` floats,
 * capped at min(m, nk). */
int dyn_svd_rank_for_floats(int m, int nk, int64_t floats);

/* Best rank-r approximation of w [m][nk] (LAPACK dgesdd in double precision through OpenBLAS)
 * into out [m][nk] (may be w itself); r is clamped to 0..min(m, nk). rel_err may be NULL.
 * Returns 0, DYN_ENOMEM, or DYN_EINVAL when LAPACK fails. */
int dyn_svd_reconstruct(const float *w, int m, int nk, int r, float *out, double *rel_err,
                        dyn_err *err);

/* Relative Frobenius error ‖a − b‖ / ‖b‖ of two [n] arrays (0 when b = 0 and a = b, else 1
 * when b = 0). */
double dyn_rel_err(const float *a, const float *b, int64_t n);

/* Fills the baseline fields of a converted layer's report L (bytes_dyn, bytes_int8,
 * bytes_int4, int8_rel_err, int4_rel_err) for the dense weight w [m][nk] and the DyN layer's
 * `weight_floats`. Returns 0 or DYN_ENOMEM / DYN_EINVAL. */
int dyn_baseline_layer(const float *w, int m, int nk, int64_t weight_floats,
                       dyn_convert_layer *L, dyn_err *err);

/* A copy of `in` (layers cloned; labels, preprocess, info copied) in which the "weight" of
 * each layer named in names[0..n) is replaced by weights[i] (borrowed; as many floats as that
 * layer's weight). *out is new and prepared (free with dyn_model_free), NULL on failure.
 * Returns 0, DYN_EINVAL (a name not found, or a layer without "weight"), DYN_ENOMEM. */
int dyn_model_replace_weights(const dyn_model *in, const char *const *names,
                              const float *const *weights, int n, dyn_model **out,
                              dyn_err *err);

/* Reconstruction callback of dyn_model_from_report: writes the replacement of the converted
 * layer k (report entry L, dense weight w [m][n·K²], borrowed) into out (same size). Returns
 * 0 (replaced), 1 (keep the layer as it is) or a negative DYN_E* code with err set. */
typedef int (*dyn_reconstruct_fn)(void *ctx, int k, const dyn_convert_layer *L, const float *w,
                                  float *out, dyn_err *err);

/* The dense model `dense` with the weight of every layer that `rep` (dyn_convert's report for
 * a conversion of that model) marks converted replaced by what fn writes. *out new
 * (dyn_model_free), NULL on failure. Returns 0, DYN_EINVAL (report and model do not match),
 * DYN_ENOMEM, or fn's error. */
int dyn_model_from_report(const dyn_model *dense, const dyn_convert_report *rep,
                          dyn_reconstruct_fn fn, void *ctx, dyn_model **out, dyn_err *err);

/* The dense model `dense` with every layer that `rep` (dyn_convert's report for a conversion of
 * that model) marks converted replaced by its `kind` reconstruction: truncated SVD at the
 * layer's svd_rank (equal floats), or per-row int8 / int4 (bytes in the report). Measure it
 * like any model (dyn_evaluate, dyn_model_logits) to report baseline accuracy / agreement.
 * *out new (dyn_model_free), NULL on failure. Returns 0, DYN_EINVAL (report and model do not
 * match), DYN_ENOMEM. */
int dyn_baseline_model(const dyn_model *dense, const dyn_convert_report *rep,
                       dyn_baseline_kind kind, dyn_model **out, dyn_err *err);

#endif
