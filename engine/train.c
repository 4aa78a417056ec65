#include "train.h"
#include "backend_impl.h"
#include "cuda/kern_util.h"

#include <math.h>
#include <string.h>

#include "cpu/dnnl_conv.h"
#include "cpu/par.h"

void dyn_softmax(float *x, int B, int C) {
    for (int b = 0; b < B; b++) {
        float *r = x + (int64_t)b * C, mx = r[0], s = 0;
        for (int c = 1; c < C; c++) mx = r[c] > mx ? r[c] : mx;
        for (int c = 0; c < C; c++) s += (r[c] = expf(r[c] - mx));
        for (int c = 0; c < C; c++) r[c] /= s;
    }
}

float dyn_softmax_xent(const float *logits, const int *labels, int B, int C, float *dlogits,
                       int *correct) {
    double loss = 0;
    int ok = 0;
    for (int b = 0; b < B; b++) {
        const float *r = logits + (int64_t)b * C;
        int arg = 0;
        float mx = r[0];
        for (int c = 1; c < C; c++)
            if (r[c] > mx) mx = r[c], arg = c;
        double s = 0;
        for (int c = 0; c < C; c++) s += exp((double)(r[c] - mx));
        int y = labels[b];
        DYN_ASSERT(y >= 0 && y < C);
        loss += log(s) - (double)(r[y] - mx);
        ok += arg == y;
        if (dlogits) {
            float *d = dlogits + (int64_t)b * C;
            for (int c = 0; c < C; c++)
                d[c] = (float)(exp((double)(r[c] - mx)) / s - (c == y)) / (float)B;
        }
    }
    if (correct) *correct = ok;
    return (float)(loss / B);
}

float dyn_soft_xent(const float *logits, const float *p, int B, int C, float T, float *dlogits,
                    int *correct) {
    DYN_ASSERT(T > 0);
    double loss = 0;
    int ok = 0;
    for (int b = 0; b < B; b++) {
        const float *r = logits + (int64_t)b * C, *pb = p + (int64_t)b * C;
        int arg = 0, parg = 0;
        float mx = r[0];
        for (int c = 1; c < C; c++) {
            if (r[c] > mx) mx = r[c], arg = c;
            if (pb[c] > pb[parg]) parg = c;
        }
        double s = 0;
        for (int c = 0; c < C; c++) s += exp((double)(r[c] - mx) / T);
        const double ls = log(s);
        for (int c = 0; c < C; c++) /* -sum p log q, log q = (r - mx) / T - log s */
            loss -= (double)pb[c] * ((double)(r[c] - mx) / T - ls);
        ok += arg == parg;
        if (dlogits) {
            float *d = dlogits + (int64_t)b * C;
            for (int c = 0; c < C; c++)
                d[c] = (float)(T * (exp((double)(r[c] - mx) / T) / s - (double)pb[c]) / B);
        }
    }
    if (correct) *correct = ok;
    return (float)(loss * T * T / B);
}

dyn_optim dyn_optim_default(dyn_optim_kind kind, float lr) {
    dyn_optim o = {.kind = kind, .lr = lr, .momentum = 0.9f, .beta1 = 0.9f, .beta2 = 0.999f,
                   .eps = 1e-8f};
    return o;
}

static int ensure_moments(dyn_param *p, int both, dyn_err *err) {
    if (!p->m.data && dyn_tensor_init(&p->m, p->value.ndim, p->value.shape, err)) return DYN_ENOMEM;
    if (both && !p->v.data && dyn_tensor_init(&p->v, p->value.ndim, p->value.shape, err))
        return DYN_ENOMEM;
    return 0;
}

int dyn_optim_step(dyn_optim *o, dyn_model *m, dyn_err *err) {
    o->t++;
    const float b1 = o->beta1, b2 = o->beta2;
    const float bc1 = 1.0f - powf(b1, (float)o->t), bc2 = 1.0f - powf(b2, (float)o->t);
    for (int k = 0; k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer;
        for (int i = 0; i < l->nparams; i++) {
            dyn_param *p = &l->params[i];
            if (!p->trainable) continue;
            int64_t n = dyn_tensor_numel(&p->value);
            float *w = p->value.data, *g = p->grad.data;
            float wd = p->value.ndim > 1 ? o->weight_decay : 0.0f;
            if (l->placed) { /* the same update on the device (backend.h) */
                const dyn_optim_update u = {
                    .adam = o->kind == DYN_OPT_ADAM, .lr = o->lr, .mu = o->momentum,
                    .b1 = b1, .b2 = b2, .bc1 = bc1, .bc2 = bc2, .eps = o->eps, .wd = wd};
                int rc = dyn__place_optim(m, p, &u, err);
                if (rc) return dyn_err_prefix(err, "optimizer step of '%s.%s'", l->name, p->name);
                continue;
            }
            if (ensure_moments(p, o->kind == DYN_OPT_ADAM, err)) return DYN_ENOMEM;
            float *mm = p->m.data, *vv = p->v.data;
            /* The update body the CUDA backend runs too (engine/cuda/kern_util.h). */
            const int adam = o->kind == DYN_OPT_ADAM;
            const float lr = o->lr, mu = o->momentum, eps = o->eps;
            DYN_PAR_FOR(n > 65536,
            for (int64_t j = 0; j < n; j++)
                kb_optim(j, adam, lr, mu, b1, b2, bc1, bc2, eps, wd, w, g, mm, vv););
        }
    }
    return dyn_model_prepare(m, err);
}

dyn_train_cfg dyn_train_cfg_default(void) {
    dyn_train_cfg c = {.epochs = 1, .batch = 64, .optim = dyn_optim_default(DYN_OPT_ADAM, 1e-3f),
                       .lr_final_frac = 1.0f, .seed = 1, .keep_best = 1, .progress_every_s = 1.0};
    return c;
}

/* Parameter snapshots for keeping the best epoch. */
static float *snapshot_save(dyn_model *m, float *buf) {
    if (m->place && dyn_model_to_host(m, NULL)) return buf; /* the device failed: keep the last */
    int64_t total = 0;
    for (int k = 0; k < m->nnodes; k++) total += dyn_layer_param_floats(m->nodes[k].layer);
    if (!buf) buf = malloc((size_t)(total ? total : 1) * sizeof(float));
    if (!buf) return NULL;
    float *p = buf;
    for (int k = 0; k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer;
        for (int i = 0; i < l->nparams; i++) {
            int64_t n = dyn_tensor_numel(&l->params[i].value);
            memcpy(p, l->params[i].value.data, (size_t)n * sizeof(float));
            p += n;
        }
    }
    return buf;
}

static void snapshot_restore(dyn_model *m, const float *buf) {
    const float *p = buf;
    for (int k = 0; k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer;
        for (int i = 0; i < l->nparams; i++) {
            int64_t n = dyn_tensor_numel(&l->params[i].value);
            memcpy(l->params[i].value.data, p, (size_t)n * sizeof(float));
            p += n;
        }
    }
    if (m->place) { /* a device failure surfaces at the next forward */
        dyn_model_to_device(m, NULL);
        return;
    }
    DYN_ASSERT(dyn_model_prepare(m, NULL) == 0);
}

double dyn_evaluate(dyn_model *m, const dyn_batch_source *src, int batch, double *loss,
                    dyn_err *err) {
    if (src->n <= 0) {
        dyn_err_set(err, DYN_EINVAL, "evaluation set is empty");
        return -1;
    }
    batch = DYN_MIN(batch, src->n);
    dyn_exec *e = dyn_exec_new(m, batch, 0, err);
    if (!e) return -1;
    int64_t C = dyn_model_outputs(m);
    int *idx = malloc((size_t)batch * sizeof(int)), *y = malloc((size_t)batch * sizeof(int));
    DYN_ASSERT(idx && y);
    int64_t correct = 0;
    double lsum = 0;
    for (int s = 0; s < src->n; s += batch) {
        int cnt = DYN_MIN(batch, src->n - s);
        for (int i = 0; i < cnt; i++) idx[i] = s + i;
        src->fill(src->ctx, idx, cnt, e->input.data, y, NULL);
        const dyn_tensor *out = dyn_exec_forward(e, e->input.data, cnt);
        if (!out) {
            dyn_err_set(err, DYN_EIO, "evaluating on %s: %s", dyn_model_device_name(m),
                        dyn_exec_error(e));
            correct = -1;
            break;
        }
        int ok = 0;
        lsum += (double)dyn_softmax_xent(out->data, y, cnt, (int)C, NULL, &ok) * cnt;
        correct += ok;
    }
    free(idx);
    free(y);
    dyn_exec_free(e);
    if (correct < 0) return -1;
    if (loss) *loss = lsum / src->n;
    return (double)correct / src->n;
}

static void shuffle(int *a, int n, dyn_rng *r) {
    for (int i = n - 1; i > 0; i--) {
        int j = (int)dyn_rng_below(r, (uint32_t)(i + 1)), t = a[i];
        a[i] = a[j];
        a[j] = t;
    }
}

static int dyn_train_impl(dyn_model *m, const dyn_batch_source *train, const dyn_batch_source *val,
              const dyn_train_cfg *cfg, dyn_train_result *res, dyn_err *err) {
    memset(res, 0, sizeof *res);
    res->best_val_acc = -1;
    if (train->n < 1 || cfg->batch < 1 || cfg->epochs < 1)
        return dyn_err_set(err, DYN_EINVAL, "training needs samples, batch >= 1 and epochs >= 1");
    int B = DYN_MIN(cfg->batch, train->n);
    int64_t C = dyn_model_outputs(m);
    dyn_exec *e = dyn_exec_new(m, B, 1, err);
    if (!e) return err ? err->code : DYN_ENOMEM;
    int *order = malloc((size_t)train->n * sizeof(int)), *y = malloc((size_t)B * sizeof(int));
    float *dout = malloc((size_t)(B * C) * sizeof(float)), *best = NULL;
    float *probs = cfg->targets ? malloc((size_t)(B * C) * sizeof(float)) : NULL;
    const float T = cfg->kd_temp > 0 ? cfg->kd_temp : 1.0f;
    DYN_ASSERT(order && y && dout && (probs || !cfg->targets));
    for (int i = 0; i < train->n; i++) order[i] = i;
    dyn_rng r, aug;
    dyn_rng_seed(&r, cfg->seed);
    dyn_rng_seed(&aug, cfg->seed ^ 0xa5a5a5a5ULL);
    dyn_optim opt = cfg->optim;
    const float lr0 = opt.lr;
    int64_t steps_per_epoch = (train->n + B - 1) / B, total = steps_per_epoch * cfg->epochs, step = 0;
    double t0 = dyn_now(), last_report = 0;
    int rc = 0;
    dyn_progress pr = {.epochs = cfg->epochs, .steps = total, .val_acc = -1};
    for (int ep = 1; ep <= cfg->epochs && !rc; ep++) {
        shuffle(order, train->n, &r);
        double lsum = 0;
        int64_t seen = 0, ok_sum = 0;
        for (int s = 0; s < train->n; s += B, step++) {
            if (cfg->cancel && *cfg->cancel) {
                rc = DYN_ECANCEL;
                dyn_err_set(err, DYN_ECANCEL, "training cancelled at epoch %d step %lld", ep,
                            (long long)step);
                break;
            }
            int cnt = DYN_MIN(B, train->n - s);
            train->fill(train->ctx, order + s, cnt, e->input.data, y, cfg->augment ? &aug : NULL);
            /* learning-rate schedule: linear warmup then cosine to lr * lr_final_frac */
            float frac = total > 1 ? (float)step / (float)(total - 1) : 1.0f;
            float cosw = 0.5f * (1.0f + cosf(3.14159265f * frac));
            opt.lr = lr0 * (cfg->lr_final_frac + (1.0f - cfg->lr_final_frac) * cosw);
            if (cfg->warmup_steps > 0 && step < cfg->warmup_steps)
                opt.lr *= (float)(step + 1) / (float)cfg->warmup_steps;
            const dyn_tensor *out = dyn_exec_forward(e, e->input.data, cnt);
            if (!out) {
                rc = dyn_err_set(err, DYN_EIO, "training on %s: %s", dyn_model_device_name(m),
                                 dyn_exec_error(e));
                break;
            }
            int ok = 0;
            float loss;
            if (cfg->targets) {
                cfg->targets(cfg->targets_ctx, e->input.data, cnt, probs);
                loss = dyn_soft_xent(out->data, probs, cnt, (int)C, T, dout, &ok);
            } else {
                loss = dyn_softmax_xent(out->data, y, cnt, (int)C, dout, &ok);
            }
            if (!isfinite(loss)) {
                rc = dyn_err_set(err, DYN_EINVAL,
                                 "training diverged (loss %g) at epoch %d step %lld; lower the "
                                 "learning rate",
                                 (double)loss, ep, (long long)step);
                break;
            }
            dyn_model_zero_grad(m);
            if (dyn_exec_backward(e, dout)) {
                rc = dyn_err_set(err, DYN_EIO, "training on %s: %s", dyn_model_device_name(m),
                                 dyn_exec_error(e));
                break;
            }
            if ((rc = dyn_optim_step(&opt, m, err))) break;
            lsum += (double)loss * cnt;
            ok_sum += ok;
            seen += cnt;
            double now = dyn_now() - t0;
            if (cfg->progress && now - last_report >= cfg->progress_every_s) {
                last_report = now;
                pr.epoch = ep;
                pr.step = step + 1;
                pr.loss = (float)(lsum / seen);
                pr.acc = (float)ok_sum / (float)seen;
                pr.elapsed_s = now;
                pr.images_per_s = (double)(step + 1) * B / now;
                pr.eta_s = now / (double)(step + 1) * (double)(total - step - 1);
                pr.epoch_end = 0;
                cfg->progress(cfg->progress_ctx, &pr);
            }
        }
        if (rc) break;
        res->last_loss = (float)(lsum / (seen ? seen : 1));
        res->last_train_acc = (float)ok_sum / (float)(seen ? seen : 1);
        if (val && val->n > 0) {
            double acc = dyn_evaluate(m, val, 256, NULL, err);
            if (acc < 0) {
                rc = err ? err->code : DYN_EINVAL;
                break;
            }
            pr.val_acc = (float)acc;
            if (acc > res->best_val_acc) {
                res->best_val_acc = (float)acc;
                res->best_epoch = ep;
                if (cfg->keep_best) best = snapshot_save(m, best);
            }
        }
        if (cfg->progress) {
            double now = dyn_now() - t0;
            pr.epoch = ep;
            pr.step = step;
            pr.loss = res->last_loss;
            pr.acc = res->last_train_acc;
            pr.elapsed_s = now;
            pr.images_per_s = (double)step * B / now;
            pr.eta_s = now / (double)step * (double)(total - step);
            pr.epoch_end = 1;
            cfg->progress(cfg->progress_ctx, &pr);
        }
    }
    if (!rc && best && cfg->keep_best && res->best_epoch != cfg->epochs) snapshot_restore(m, best);
    /* A placed model trained on its device: the host values become the trained ones (what
     * saving a model reads). */
    if (!rc && m->place) rc = dyn_model_to_host(m, err);
    res->seconds = dyn_now() - t0;
    res->steps = step;
    free(best);
    free(order);
    free(y);
    free(dout);
    free(probs);
    dyn_exec_free(e);
    return rc;
}

void dyn_model_perturb(dyn_model *m, float delta, uint64_t seed) {
    dyn_rng r;
    dyn_rng_seed(&r, seed);
    for (int k = 0; k < m->nnodes; k++) {
        dyn_layer *l = m->nodes[k].layer;
        for (int i = 0; i < l->nparams; i++) {
            dyn_param *p = &l->params[i];
            if (!p->trainable) continue;
            int64_t n = dyn_tensor_numel(&p->value);
            for (int64_t j = 0; j < n; j++)
                p->value.data[j] += delta * (2.0f * dyn_rng_uniform(&r) - 1.0f);
        }
    }
    if (m->place) {
        dyn_model_to_device(m, NULL);
        return;
    }
    DYN_ASSERT(dyn_model_prepare(m, NULL) == 0);
}

/* Reproducible: one dense implementation, and DyN layers deciding by the cost model alone,
 * for every forward of the run (cpu/dnnl_conv.h; `auto` would choose by timing, so validation
 * accuracies could differ by rounding between two runs, or a run and its resume). */
int dyn_train(dyn_model *m, const dyn_batch_source *train, const dyn_batch_source *val,
              const dyn_train_cfg *cfg, dyn_train_result *res, dyn_err *err) {
    const int place = cfg->backend && !m->place;
    if (place) {
        int rc = dyn_model_place(m, cfg->backend, cfg->device, NULL, err);
        if (rc) {
            memset(res, 0, sizeof *res);
            return dyn_err_prefix(err, "training on %s:%d", cfg->backend->name, cfg->device);
        }
    }
    const int saved = dyn_conv_impl_set_thread(DYN_CONV_IM2COL);
    int rc = dyn_train_impl(m, train, val, cfg, res, err);
    dyn_conv_impl_set_thread(saved);
    if (place) { /* the trained values are on the host (dyn_train_impl's end) */
        if (rc) dyn_model_to_host(m, NULL); /* keep what the failed run reached, if it can */
        dyn_model_unplace(m);
    }
    return rc;
}
