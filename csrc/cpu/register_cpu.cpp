// CPU registrations of every fastwin_C op (schemas in csrc/ops.cpp, entry points in op_entry.h).
#include <torch/library.h>

#include "cpu_kernels.h"

TORCH_LIBRARY_IMPL(fastwin_C, CPU, m) { fastwin::OpEntry<fastwin::CpuKernels>::register_all(m); }

// Fused ops that exist on CPU only (no CUDA kernel yet: route them to this device only).
TORCH_LIBRARY_IMPL(fastwin_C, CPU, m) {
  m.impl("linear_gelu_fwd", &fastwin::linear_gelu_fwd_cpu);
  m.impl("linear_gelu_bwd", &fastwin::linear_gelu_bwd_cpu);
}
