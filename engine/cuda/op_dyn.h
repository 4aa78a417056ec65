/* op_dyn.h — the DyN linear layer's device op (op_dyn.c) for the CUDA backend's op table
 * (engine/cuda/backend.c: ops[DYN_OP_DYN_LINEAR]). C only. */
#ifndef DYN_CUDA_OP_DYN_H
#define DYN_CUDA_OP_DYN_H

#include "../backend.h"

/* "dyn_linear" on the device (both execution paths; op_dyn.c says which runs when). The
 * backend's `ctx` is a dyn_cuda_ctx *; l->dev is the op's (a malloc'ed struct holding the
 * device W, freed by release). */
extern const dyn_backend_op dyn_cuda_op_dyn_linear;

/* Batch rows up to which a dyn_linear layer that holds W on the device (exec "auto", l1) runs
 * natively there; above it, one cuBLAS sgemm on the materialized W (a choice, not measured yet:
 * `make bench-gpu` prints native against cuBLAS per batch). */
#define DYN_CUDA_DL_NATIVE_MAX_ROWS 16

#endif
