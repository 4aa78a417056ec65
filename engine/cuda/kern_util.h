/* kern_util.h — bodies of the backend's buffer kernels (fill, axpy) and the optimizer update
 * (kern.h explains bodies; engine/backend.h's dyn_optim_update the formulas). */
#ifndef DYN_CUDA_KERN_UTIL_H
#define DYN_CUDA_KERN_UTIL_H

#include "kern.h"

DYN_KERN void kb_fill(int64_t i, float *p, float v) { p[i] = v; }

DYN_KERN void kb_axpy(int64_t i, float *y, const float *x, float a) { y[i] += a * x[i]; }

/* One element of train.c's dyn_optim_step: Adam (adam != 0) or SGD with momentum. */
DYN_KERN void kb_optim(int64_t i, int adam, float lr, float mu, float b1, float b2, float bc1,
                       float bc2, float eps, float wd, float *w, const float *g, float *m,
                       float *v) {
    if (adam) {
        m[i] = b1 * m[i] + (1 - b1) * g[i];
        v[i] = b2 * v[i] + (1 - b2) * g[i] * g[i];
        w[i] -= lr * ((m[i] / bc1) / (sqrtf(v[i] / bc2) + eps) + wd * w[i]);
    } else {
        m[i] = mu * m[i] + g[i] + wd * w[i];
        w[i] -= lr * m[i];
    }
}

#endif
