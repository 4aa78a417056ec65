/* stub.h — what the stub files of a build without CUDA share (engine/cuda/stub*.c). */
#ifndef DYN_CUDA_STUB_H
#define DYN_CUDA_STUB_H

#include "../base.h"

/* Fills err with "this build has no CUDA backend: rebuild with `make CUDA=1` ..." and returns
 * DYN_EUNSUP: every stub's answer. */
int dyn_cuda__no_cuda(dyn_err *err);

#endif
