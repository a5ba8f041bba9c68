// Prelude of every kernel source (diff-core/src/cuda.rs pastes it in front under NVRTC;
// the host build includes it). Kernel sources are written in the common subset of CUDA C++
// and C, so the same file also compiles as plain C on the host, where the simulators' CPU
// parity tests run it without a GPU:
// - MBMIX_KERNEL marks an entry point (`extern "C" __global__` under CUDA);
// - MBMIX_DEVICE marks a helper (`__device__` under CUDA, `static inline` in C);
// - MBMIX_FOR_EACH(i, n) runs its body for i in [0, n): a grid-stride loop under CUDA (each
//   thread takes i = its global index, then strides by the grid size), a plain loop on the
//   host;
// - MBMIX_ATOMIC_ADD(p, v) is `atomicAdd` under CUDA, `*p += v` on the (sequential) host.
#ifdef __CUDACC__
#define MBMIX_KERNEL extern "C" __global__
#define MBMIX_DEVICE __device__ __forceinline__ static
#define MBMIX_FOR_EACH(i, n)                                                      \
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += blockDim.x * gridDim.x)
#define MBMIX_ATOMIC_ADD(p, v) atomicAdd((p), (v))
#else
#include <math.h>
#define MBMIX_KERNEL
#define MBMIX_DEVICE static inline
#define MBMIX_FOR_EACH(i, n) for (int i = 0; i < (n); ++i)
#define MBMIX_ATOMIC_ADD(p, v) (*(p) += (v))
#endif
