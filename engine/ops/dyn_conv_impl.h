/* dyn_conv_impl.h — dyn_conv2d's attributes, derived state and parameter order (dyn_conv.c).
 * Internal to engine/ops and the CUDA glue (engine/cuda/op_cnn.c), which reads the layer's
 * attributes; not a public header. */
#ifndef DYN_OPS_DYN_CONV_IMPL_H
#define DYN_OPS_DYN_CONV_IMPL_H

#include <pthread.h>

#include "../cpu/dnnl_conv.h"
#include "../dyn/dyn.h"

enum { P_A, P_B, P_LAMBDA, P_C, P_BIAS };

#define DC_CHOICES 16

typedef struct dc_impl {
    int cin, cout, K, stride, pad, dil, H, q, bias;
    dyn_kernel kernel;
    int exec;
    int hold_w, hold_orders, ready;
    float *w;        /* [Cout][Cin·K·K] when hold_w */
    dyn_sorted sa;   /* K·H·q slices of Cout (A_r = slices r·Hq ..) */
    dyn_sorted sb;   /* K·H·q slices of Cin */
    dyn_ranks *rk;   /* [K·K]: A_r among B_t */
    dyn_dnnl_cache *dnnl; /* materialized inference through oneDNN (when hold_w) */
    /* "auto" with both paths held: native or materialized as measured at the first inference
     * forward of each (columns, threads), at most DC_CHOICES remembered (oldest replaced) */
    pthread_mutex_t mu;
    struct dc_choice {
        int64_t cols;
        int threads, native;
    } ch[DC_CHOICES];
    int nch, next_ch;
} dc_impl;

#endif
