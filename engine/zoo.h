/* zoo.h — built-in architectures (the paper's MNIST models), dense or DyN.
 *
 * "mlp":    784 → hidden → hidden → classes, ReLU between (the paper's 3-layer NN).
 * "lenet5": conv 1→6 k5 pad 2, ReLU, max 2; conv 6→16 k5, ReLU, max 2; fc 400→120, ReLU,
 *           fc 120→84, ReLU, fc 84→classes (61,706 dense parameters for 10 classes).
 * With dyn = 1 every linear becomes dyn_linear (fc_H copies, fc_q dims) and every conv
 * dyn_conv2d (conv_H, conv_q); H = 0 keeps that kind dense; "dense_last" keeps the classifier layer dense; "bn" adds
 * BatchNorm after every conv and hidden fc (a choice: DyN layers train far better with it).
 */
#ifndef DYN_ZOO_H
#define DYN_ZOO_H

#include "model.h"

typedef struct dyn_zoo_opts {
    const char *arch;     /* "mlp" | "lenet5" */
    int dyn;              /* 0 dense, 1 DyN */
    int fc_H, fc_q;       /* DyN linear copies / dims */
    int conv_H, conv_q;   /* DyN conv copies / dims */
    const char *kernel;   /* "l1" | "l2" | "inv" */
    const char *exec;     /* "auto" | "native" | "materialized" */
    int hidden;           /* mlp width */
    int classes;
    int channels, height, width; /* input */
    int dense_last;
    int bn;               /* BatchNorm after every conv / hidden fc (before the ReLU) */
} dyn_zoo_opts;

dyn_zoo_opts dyn_zoo_opts_default(void);

/* Builds an uninitialized model (call dyn_model_init). NULL with err on a bad option.
 * The caller frees with dyn_model_free. */
dyn_model *dyn_zoo_build(const dyn_zoo_opts *o, dyn_err *err);

#endif
