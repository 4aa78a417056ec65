/* norm.c — batch normalization over the channel dimension (PyTorch's BatchNorm1d/2d).
 *
 * Attributes: {"channels": int, "eps": number (1e-5), "momentum": number in [0, 1] (0.1)}.
 * Parameters: "weight" (gamma, init 1), "bias" (beta, init 0), both trainable; buffers
 * "running_mean" (init 0) and "running_var" (init 1), trainable = 0.
 * Input [N, C], [N, C, L] or [N, C, H, W]; statistics are per channel over the M = N * (L or
 * H*W) values of that channel.
 *
 * Training forward: normalizes with the batch mean and the biased batch variance, then updates
 *   running = (1 - momentum) * running + momentum * batch, with the unbiased variance
 *   (var * M / (M - 1)) for running_var, as PyTorch does. (PyTorch refuses M = 1 in training;
 *   here the running variance is then updated with the biased variance, 0.)
 * Inference forward: normalizes with the running statistics and does not touch the layer.
 * Scratch (both modes, 2*C + 1 floats): the mean and 1/sqrt(var + eps) the forward used per
 * channel, then a flag (1 = batch statistics). Backward reads the flag, so it differentiates
 * whichever forward ran: through the batch statistics after a training forward, or the
 * per-channel affine map after an inference forward.
 * stats(): macs = C * (H*W): one multiply-add per element (y = x * scale + shift) at inference.
 */
#include <math.h>
#include <string.h>

#include "../cpu/par.h"
#include "../layer.h"
#include "norm_impl.h"

#define BN_MAX_CHANNELS ((int64_t)1 << 24)

static int bn_create(dyn_layer *l, const json_t *attrs, dyn_err *err) {
    int64_t c;
    double eps, momentum;
    int rc;
    if (!json_object_get(attrs, "channels"))
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': batchnorm needs integer attribute "
                           "'channels'", l->name);
    if ((rc = dyn_attr_int(l, attrs, "channels", 0, 1, BN_MAX_CHANNELS, &c, err)) ||
        (rc = dyn_attr_num(l, attrs, "eps", 1e-5, &eps, err)) ||
        (rc = dyn_attr_num(l, attrs, "momentum", 0.1, &momentum, err)))
        return rc;
    if (!(eps > 0.0) || !isfinite(eps))
        return dyn_err_set(err, DYN_EINVAL, "layer '%s': attribute 'eps' = %g must be > 0",
                           l->name, eps);
    if (!(momentum >= 0.0 && momentum <= 1.0))
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': attribute 'momentum' = %g is outside 0..1", l->name,
                           momentum);
    bn_impl *im = malloc(sizeof *im);
    if (!im) return dyn_err_set(err, DYN_ENOMEM, "layer '%s': out of memory", l->name);
    im->channels = (int)c;
    im->eps = eps;
    im->momentum = momentum;
    l->impl = im;
    static const char *const names[] = {"weight", "bias", "running_mean", "running_var"};
    for (int i = 0; i < 4; i++) {
        dyn_param *p = dyn_layer_param_add(l, names[i], 1, &c, i == BN_WEIGHT || i == BN_BIAS, err);
        if (!p) return err ? err->code : DYN_ENOMEM;
        if (i == BN_WEIGHT || i == BN_RVAR)
            for (int64_t k = 0; k < c; k++) p->value.data[k] = 1.0f;
    }
    return 0;
}

static void bn_destroy(dyn_layer *l) {
    free(l->impl);
    l->impl = NULL;
}

static json_t *bn_attrs(const dyn_layer *l) {
    const bn_impl *im = l->impl;
    return json_pack("{s:I, s:f, s:f}", "channels", (json_int_t)im->channels, "eps", im->eps,
                     "momentum", im->momentum);
}

/* Resets to PyTorch's initial state: gamma 1, beta 0, running mean 0, running var 1. */
static void bn_init(dyn_layer *l, dyn_rng *rng) {
    (void)rng;
    const bn_impl *im = l->impl;
    for (int k = 0; k < im->channels; k++) {
        l->params[BN_WEIGHT].value.data[k] = 1.0f;
        l->params[BN_BIAS].value.data[k] = 0.0f;
        l->params[BN_RMEAN].value.data[k] = 0.0f;
        l->params[BN_RVAR].value.data[k] = 1.0f;
    }
}

static int bn_infer(const dyn_layer *l, const dyn_shape *in, dyn_shape *out, dyn_err *err) {
    const bn_impl *im = l->impl;
    const dyn_shape *s = &in[0];
    char buf[64];
    if (s->ndim < 2 || s->d[1] != im->channels)
        return dyn_err_set(err, DYN_EINVAL,
                           "layer '%s': batchnorm expects input [N, %d] or [N, %d, H, W] but got "
                           "%s",
                           l->name, im->channels, im->channels, dyn_shape_str(s, buf, sizeof buf));
    for (int i = 0; i < s->ndim; i++)
        if (s->d[i] < 1)
            return dyn_err_set(err, DYN_EINVAL, "layer '%s': batchnorm input %s is empty",
                               l->name, dyn_shape_str(s, buf, sizeof buf));
    *out = *s;
    return 0;
}

static size_t bn_scratch(const dyn_layer *l, const dyn_shape *in, int training) {
    (void)in;
    (void)training;
    const bn_impl *im = l->impl;
    return (size_t)im->channels * 2 + 1;
}

/* N and the per-channel inner size (product of dims after the channel). */
static void bn_dims(const bn_impl *im, const dyn_tensor *x, int64_t *n, int64_t *inner) {
    DYN_ASSERT(x->ndim >= 2 && x->shape[1] == im->channels && dyn_tensor_is_contiguous(x));
    *n = x->shape[0];
    *inner = 1;
    for (int i = 2; i < x->ndim; i++) *inner *= x->shape[i];
}

static void bn_forward(dyn_layer *l, const dyn_tensor *x, dyn_tensor *y, float *scratch,
                       int training) {
    const bn_impl *im = l->impl;
    int64_t N, S;
    bn_dims(im, &x[0], &N, &S);
    DYN_ASSERT(dyn_tensor_numel(y) == dyn_tensor_numel(&x[0]));
    const int C = im->channels;
    const int64_t M = N * S;
    const float *gamma = l->params[BN_WEIGHT].value.data, *beta = l->params[BN_BIAS].value.data;
    float *rmean = l->params[BN_RMEAN].value.data, *rvar = l->params[BN_RVAR].value.data;
    const float *xp = x[0].data;
    float *yp = y->data;
    const float mom = (float)im->momentum;
    DYN_PAR_FOR(M * C > 16384,
    for (int c = 0; c < C; c++) {
        float mean, invstd;
        if (training) {
            double s = 0.0;
            for (int64_t n = 0; n < N; n++) {
                const float *p = xp + (n * C + c) * S;
                for (int64_t i = 0; i < S; i++) s += p[i];
            }
            double mu = s / (double)M, ss = 0.0;
            for (int64_t n = 0; n < N; n++) {
                const float *p = xp + (n * C + c) * S;
                for (int64_t i = 0; i < S; i++) {
                    double d = p[i] - mu;
                    ss += d * d;
                }
            }
            double var = ss / (double)M;
            double uvar = M > 1 ? ss / (double)(M - 1) : var;
            mean = (float)mu;
            invstd = (float)(1.0 / sqrt(var + im->eps));
            rmean[c] = (1.0f - mom) * rmean[c] + mom * (float)mu;
            rvar[c] = (1.0f - mom) * rvar[c] + mom * (float)uvar;
        } else {
            mean = rmean[c];
            invstd = (float)(1.0 / sqrt((double)rvar[c] + im->eps));
        }
        if (scratch) {
            scratch[c] = mean;
            scratch[C + c] = invstd;
        }
        const float scale = gamma[c] * invstd, shift = beta[c] - mean * scale;
        for (int64_t n = 0; n < N; n++) {
            const float *p = xp + (n * C + c) * S;
            float *q = yp + (n * C + c) * S;
            for (int64_t i = 0; i < S; i++) q[i] = p[i] * scale + shift;
        }
    });
    if (scratch) scratch[2 * C] = training ? 1.0f : 0.0f;
}

static void bn_backward(dyn_layer *l, const dyn_tensor *x, const dyn_tensor *y,
                        const dyn_tensor *dy, dyn_tensor *dx, float *scratch) {
    (void)y;
    const bn_impl *im = l->impl;
    int64_t N, S;
    bn_dims(im, &x[0], &N, &S);
    DYN_ASSERT(scratch != NULL && dyn_tensor_numel(dy) == dyn_tensor_numel(&x[0]));
    const int C = im->channels;
    const int64_t M = N * S;
    const int batch_stats = scratch[2 * C] != 0.0f;
    const float *gamma = l->params[BN_WEIGHT].value.data;
    float *dgamma = l->params[BN_WEIGHT].grad.data, *dbeta = l->params[BN_BIAS].grad.data;
    const float *xp = x[0].data, *g = dy->data;
    float *d = dx[0].data;
    DYN_PAR_FOR(M * C > 16384,
    for (int c = 0; c < C; c++) {
        const float mean = scratch[c], invstd = scratch[C + c];
        double sdy = 0.0, sdyx = 0.0; /* sum(dy), sum(dy * xhat) */
        for (int64_t n = 0; n < N; n++) {
            const float *p = xp + (n * C + c) * S, *q = g + (n * C + c) * S;
            for (int64_t i = 0; i < S; i++) {
                sdy += q[i];
                sdyx += (double)q[i] * ((p[i] - mean) * invstd);
            }
        }
        dgamma[c] += (float)sdyx;
        dbeta[c] += (float)sdy;
        if (!d) continue;
        const float k = gamma[c] * invstd;
        /* training: dx = gamma * invstd * (dy - mean(dy) - xhat * mean(dy * xhat)) */
        const float mdy = batch_stats ? (float)(sdy / (double)M) : 0.0f;
        const float mdyx = batch_stats ? (float)(sdyx / (double)M) : 0.0f;
        for (int64_t n = 0; n < N; n++) {
            const float *p = xp + (n * C + c) * S, *q = g + (n * C + c) * S;
            float *r = d + (n * C + c) * S;
            for (int64_t i = 0; i < S; i++) {
                float xhat = (p[i] - mean) * invstd;
                r[i] = k * (q[i] - mdy - xhat * mdyx);
            }
        }
    });
}

/* macs per sample: one multiply-add per element at inference. */
static void bn_stats(const dyn_layer *l, const dyn_shape *in, dyn_layer_stats *st) {
    const bn_impl *im = l->impl;
    int64_t inner = 1;
    for (int i = 2; i < in[0].ndim; i++) inner *= in[0].d[i];
    st->macs = (int64_t)im->channels * inner;
}

const dyn_layer_ops dyn_op_batchnorm = {
    .op = DYN_OP_BATCHNORM,
    .name = "batchnorm",
    .ninputs = 1,
    .create = bn_create,
    .destroy = bn_destroy,
    .attrs = bn_attrs,
    .init = bn_init,
    .infer = bn_infer,
    .scratch = bn_scratch,
    .forward = bn_forward,
    .backward = bn_backward,
    .stats = bn_stats,
};
