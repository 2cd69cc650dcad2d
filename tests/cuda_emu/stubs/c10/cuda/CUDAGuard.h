// Stand-in for torch's CUDA header where torch has no CUDA (CPU wheels); see ATen/cuda/CUDAContext.h.
#pragma once
#include <c10/core/Device.h>
namespace c10 {
namespace cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};
}  // namespace cuda
}  // namespace c10
