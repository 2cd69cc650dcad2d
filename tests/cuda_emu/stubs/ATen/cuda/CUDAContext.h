// Stand-in for torch's CUDA header where torch has no CUDA (CPU wheels): only what
// csrc/cuda/bindings_cuda.cpp uses. For the bindings' compile test and the CPU emulation.
#pragma once
#include <cuda_runtime.h>
namespace at {
namespace cuda {
struct CUDAStream {
  operator cudaStream_t() const { return nullptr; }
};
inline CUDAStream getCurrentCUDAStream() { return {}; }
}  // namespace cuda
}  // namespace at
