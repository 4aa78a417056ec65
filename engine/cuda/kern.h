/* kern.h — kernel bodies shared by the CUDA kernels and the host tests.
 *
 * A kernel body is a function of one index (an output element, a row, an input element) that
 * a __global__ kernel calls from a grid-stride loop. Written in the C subset nvcc and the C
 * compiler both accept and marked DYN_KERN, the same body compiles for the device (nvcc) and
 * the host (gcc / clang): tests/unit/test_cuda_kern*.c run every body over all indices on the
 * CPU and compare with the CPU op, so the index arithmetic of each CUDA kernel is tested in CI
 * where no GPU is (what that cannot test: launch geometry, CUB and cuBLAS calls — those are
 * tests/gpu/'s).
 *
 * Rules: no shared memory, no __syncthreads, no atomics in a body (write each output from one
 * index: gather, not scatter, which also keeps results deterministic); only math functions C
 * and CUDA both have (expf, erff, sqrtf, fmaxf, ...).
 */
#ifndef DYN_CUDA_KERN_H
#define DYN_CUDA_KERN_H

#include <math.h>
#include <stdint.h>

#ifdef __CUDACC__
#define DYN_KERN __host__ __device__ static inline
#else
#define DYN_KERN static inline
#endif

/* A grid-stride loop over [0, n): the form every 1-D kernel of engine/cuda/ takes. */
#ifdef __CUDACC__
#define DYN_GRID_LOOP(i, n)                                                                 \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);               \
         i += (int64_t)blockDim.x * gridDim.x)
#endif

#endif
