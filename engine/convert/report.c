/* report.c — the conversion report as JSON and as a table (convert.h). */
#include <stdio.h>
#include <string.h>

#include "convert.h"
#include "../io/model_file.h"

void dyn_convert_report_set_storage(dyn_convert_report *r, const dyn_model *m) {
    dyn_model_storage s;
    dyn_model_storage_get(m, &s);
    r->bytes_stored = s.data_bytes;
    r->coded_floats = s.coded_floats;
}

/* A measured value, or null when it was not measured (< 0). */
static json_t *num_or_null(double v) { return v < 0 ? json_null() : json_real(v); }

json_t *dyn_convert_report_json(const dyn_convert_report *r) {
    json_t *layers = json_array();
    if (!layers) return NULL;
    for (int k = 0; k < r->nlayers; k++) {
        const dyn_convert_layer *L = &r->layers[k];
        if (!L->converted && !L->reason[0] && L->m == 0) continue; /* not a weight layer */
        json_t *o = json_pack("{s:s, s:s, s:s, s:b, s:I, s:I, s:I, s:I}", "name", L->name,
                              "op_before", L->op_before, "op_after", L->op_after, "converted",
                              L->converted, "floats_before", (json_int_t)L->floats_before,
                              "floats_after", (json_int_t)L->floats_after, "macs_before",
                              (json_int_t)L->macs_before, "macs_after", (json_int_t)L->macs_after);
        if (!o) goto fail;
        json_object_set_new(o, "shape", json_pack("[i, i, i]", L->m, L->n, L->K));
        if (L->reason[0]) json_object_set_new(o, "reason", json_string(L->reason));
        if (L->converted) {
            json_object_set_new(o, "H", json_integer(L->H));
            json_object_set_new(o, "q", json_integer(L->q));
            json_object_set_new(o, "rel_err", num_or_null(L->rel_err));
            json_object_set_new(o, "init_rel_err", num_or_null(L->init_rel_err));
            json_object_set_new(o, "svd_rank", json_integer(L->svd_rank));
            json_object_set_new(o, "svd_rel_err", num_or_null(L->svd_rel_err));
            json_object_set_new(o, "out_rel_err", num_or_null(L->out_rel_err));
            json_object_set_new(o, "holdout_out_rel_err", num_or_null(L->hold_rel_err));
            json_object_set_new(o, "entropy_bits", json_real(L->entropy_bits));
            json_object_set_new(o, "seconds", json_real(L->seconds));
            if (L->fit_device[0]) json_object_set_new(o, "fit_device", json_string(L->fit_device));
            json_object_set_new(o, "bytes_dyn", json_integer(L->bytes_dyn));
            json_object_set_new(o, "bytes_int8", json_integer(L->bytes_int8));
            json_object_set_new(o, "bytes_int4", json_integer(L->bytes_int4));
            json_object_set_new(o, "int8_rel_err", num_or_null(L->int8_rel_err));
            json_object_set_new(o, "int4_rel_err", num_or_null(L->int4_rel_err));
        }
        json_array_append_new(layers, o);
    }
    json_t *j = json_pack("{s:s, s:s, s:i, s:i, s:f, s:I, s:I, s:I, s:I, s:f, s:f}", "fit", r->fit,
                          "kernel", r->kernel, "q", r->q, "steps", r->steps, "quant", r->quant,
                          "floats_before", (json_int_t)r->floats_before, "floats_after",
                          (json_int_t)r->floats_after, "macs_before", (json_int_t)r->macs_before,
                          "macs_after", (json_int_t)r->macs_after, "entropy_bits",
                          r->entropy_bits, "seconds", r->seconds);
    if (!j) goto fail;
    json_object_set_new(j, "ratio", r->ratio > 0 ? json_real(r->ratio) : json_null());
    json_object_set_new(j, "target_rel_err",
                        r->target_rel_err > 0 ? json_real(r->target_rel_err) : json_null());
    json_object_set_new(j, "macs_native", json_integer(r->macs_native));
    json_object_set_new(j, "compression",
                        r->floats_after > 0 ? json_real((double)r->floats_before / r->floats_after)
                                            : json_null());
    json_object_set_new(j, "layers_converted", json_integer(r->nconverted));
    if (r->bytes_stored > 0) { /* the input counted as F32 */
        json_object_set_new(j, "bytes_before", json_integer((json_int_t)(4 * r->floats_before)));
        json_object_set_new(j, "bytes_stored", json_integer((json_int_t)r->bytes_stored));
        json_object_set_new(j, "coded_floats", json_integer((json_int_t)r->coded_floats));
    }
    json_object_set_new(j, "acc_before", num_or_null(r->acc_before));
    json_object_set_new(j, "acc_after", num_or_null(r->acc_after));
    json_object_set_new(j, "logit_rel_err", num_or_null(r->logit_rel_err));
    json_t *fid = json_pack("{s:o, s:o, s:o, s:o, s:o, s:i, s:s, s:f, s:b, s:b}", "agree_top1",
                            num_or_null(r->agree_top1), "agree_top5", num_or_null(r->agree_top5),
                            "logit_rel_err", num_or_null(r->logit_rel_err), "acc_before",
                            num_or_null(r->holdout_acc_before), "acc_after",
                            num_or_null(r->holdout_acc_after), "images", r->fidelity_n, "on",
                            r->fidelity_on, "min_agreement", r->min_agreement, "verified",
                            r->verified, "forced", r->forced);
    json_object_set_new(j, "fidelity", fid ? fid : json_null());
    json_object_set_new(j, "target_agreement",
                        r->target_agreement > 0 ? json_real(r->target_agreement) : json_null());
    if (r->explored) json_object_set(j, "explored", r->explored);
    if (r->finetune) json_object_set(j, "finetune", r->finetune);
    json_object_set_new(j, "layers", layers);
    return j;
fail:
    json_decref(layers);
    return NULL;
}

static void fmt_err(char *b, size_t n, double v) {
    if (v < 0) snprintf(b, n, "-");
    else snprintf(b, n, "%.4f", v);
}

char *dyn_convert_report_table(const dyn_convert_report *r) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return NULL;
    fprintf(f, "%-24s %-11s %4s %3s %10s %10s %8s %8s %8s %8s %8s %11s %11s %11s %7s %6s %10s %8s %8s\n",
            "layer", "op", "H", "q", "floats", "-> floats", "rel_err", "svd_err", "out_err",
            "hold_err", "init_err", "MACs", "-> MACs", "native", "entropy", "time_s", "DyN bytes",
            "int8_err", "int4_err");
    for (int k = 0; k < r->nlayers; k++) {
        const dyn_convert_layer *L = &r->layers[k];
        if (!L->converted && !L->reason[0] && L->m == 0) continue;
        char e1[16], e2[16], e3[16], e4[16], e5[16], e6[16], e7[16];
        fmt_err(e1, sizeof e1, L->rel_err);
        fmt_err(e2, sizeof e2, L->svd_rel_err);
        fmt_err(e3, sizeof e3, L->out_rel_err);
        fmt_err(e7, sizeof e7, L->hold_rel_err);
        fmt_err(e4, sizeof e4, L->init_rel_err);
        fmt_err(e5, sizeof e5, L->converted ? L->int8_rel_err : -1);
        fmt_err(e6, sizeof e6, L->converted ? L->int4_rel_err : -1);
        const size_t nl = strlen(L->name);
        const char *nm = nl > 24 ? L->name + nl - 24 : L->name; /* the informative end */
        if (L->converted)
            fprintf(f, "%-24s %-11.11s %4d %3d %10lld %10lld %8s %8s %8s %8s %8s %11lld %11lld %11lld %7.3f %6.1f %10lld %8s %8s\n",
                    nm, L->op_after, L->H, L->q, (long long)L->floats_before,
                    (long long)L->floats_after, e1, e2, e3, e7, e4, (long long)L->macs_before,
                    (long long)L->macs_after, (long long)L->macs_native, L->entropy_bits,
                    L->seconds, (long long)L->bytes_dyn, e5, e6);
        else
            fprintf(f, "%-24s %-11.11s %4s %3s %10lld %10lld  %s\n", nm, L->op_after, "-", "-",
                    (long long)L->floats_before, (long long)L->floats_after, L->reason);
    }
    fprintf(f, "total: %lld -> %lld stored floats (%.2fx), %lld -> %lld MACs/sample (%.2fx; "
               "%lld = %.2fx if every DyN layer ran natively), %d layers converted, %.1f s\n",
            (long long)r->floats_before, (long long)r->floats_after,
            r->floats_after ? (double)r->floats_before / r->floats_after : 0.0,
            (long long)r->macs_before, (long long)r->macs_after,
            r->macs_after ? (double)r->macs_before / r->macs_after : 0.0,
            (long long)r->macs_native,
            r->macs_native ? (double)r->macs_before / r->macs_native : 0.0, r->nconverted,
            r->seconds);
    if (r->bytes_stored > 0) {
        fprintf(f, "stored bytes: %lld (F32) -> %lld (%.2fx)", 4 * (long long)r->floats_before,
                (long long)r->bytes_stored, 4.0 * (double)r->floats_before / (double)r->bytes_stored);
        if (r->coded_floats > 0)
            fprintf(f, "; %lld DyN state floats stored as I16 / I8 codes of the %g grid",
                    (long long)r->coded_floats, r->quant);
        fprintf(f, "\n");
    }
    long long bd = 0, b8 = 0, b4 = 0;
    for (int k = 0; k < r->nlayers; k++)
        if (r->layers[k].converted) {
            bd += r->layers[k].bytes_dyn;
            b8 += r->layers[k].bytes_int8;
            b4 += r->layers[k].bytes_int4;
        }
    if (bd > 0)
        fprintf(f, "converted layers' weight bytes: DyN (fp32) %lld, per-row int8 %lld, int4 %lld "
                   "(fp16 row scales); svd_err: truncated SVD at equal floats\n", bd, b8, b4);
    if (r->agree_top1 >= 0)
        fprintf(f, "fidelity on %d %s images held out of the fit: top-1 agreement %.2f%%, top-5 "
                   "%.2f%%, logits' relative error %.4f\n", r->fidelity_n, r->fidelity_on,
                100 * r->agree_top1, 100 * r->agree_top5, r->logit_rel_err);
    if (r->holdout_acc_before >= 0)
        fprintf(f, "accuracy on the held-out calibration images: dense %.2f%% -> DyN %.2f%%\n",
                100 * r->holdout_acc_before, 100 * r->holdout_acc_after);
    if (r->min_agreement > 0)
        fprintf(f, "floor: top-1 agreement >= %.2f%%: %s\n", 100 * r->min_agreement,
                r->verified ? "met" : r->forced ? "NOT met, published anyway (force)" : "NOT met");
    for (size_t i = 0; i < json_array_size(r->explored); i++) {
        const json_t *e = json_array_get(r->explored, i);
        if (json_object_get(e, "layer_floats")) /* one layer alone at one budget */
            fprintf(f, "explored: %-28s %10lld layer floats   top-1 agreement %.2f%%\n",
                    json_string_value(json_object_get(e, "stage")),
                    (long long)json_integer_value(json_object_get(e, "layer_floats")),
                    100 * json_number_value(json_object_get(e, "agree_top1")));
        else {
            const double pr = json_number_value(json_object_get(e, "predicted"));
            fprintf(f, "explored: %-28s %10lld floats (%.2fx) top-1 agreement %.2f%% (95%% lower "
                       "bound %.2f%%)", json_string_value(json_object_get(e, "stage")),
                    (long long)json_integer_value(json_object_get(e, "floats")),
                    json_number_value(json_object_get(e, "compression")),
                    100 * json_number_value(json_object_get(e, "agree_top1")),
                    100 * json_number_value(json_object_get(e, "agree_lower_bound")));
            if (pr >= 0) fprintf(f, " (predicted %.2f%%)", 100 * pr);
            fprintf(f, "\n");
        }
    }
    if (r->finetune) {
        const json_t *ft = r->finetune, *ab = json_object_get(ft, "agree_top1_before"),
                     *cb = json_object_get(ft, "acc_before");
        fprintf(f, "fine-tuned on the labels: %lld epochs on %lld images, best epoch %lld "
                   "(validation accuracy %.2f%% -> %.2f%% on %lld images, %.0f s)",
                (long long)json_integer_value(json_object_get(ft, "epochs")),
                (long long)json_integer_value(json_object_get(ft, "train_images")),
                (long long)json_integer_value(json_object_get(ft, "best_epoch")),
                100 * json_number_value(json_object_get(ft, "start_val_acc")),
                100 * json_number_value(json_object_get(ft, "best_val_acc")),
                (long long)json_integer_value(json_object_get(ft, "val_images")),
                json_number_value(json_object_get(ft, "seconds")));
        if (json_is_number(ab)) fprintf(f, "; top-1 agreement before it %.2f%%", 100 * json_number_value(ab));
        if (json_is_number(cb)) fprintf(f, "; accuracy before it %.2f%%", 100 * json_number_value(cb));
        fprintf(f, "\n");
    }
    if (r->acc_before >= 0)
        fprintf(f, "accuracy: dense %.2f%% -> DyN %.2f%%\n", 100 * r->acc_before,
                100 * r->acc_after);
    if (r->entropy_bits > 0)
        fprintf(f, "mean structural entropy of DyN layers: %.3f bits/coordinate\n",
                r->entropy_bits);
    fclose(f);
    return buf;
}
