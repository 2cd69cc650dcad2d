// CPU registrations of the fastwin_C ops of csrc/ops.cpp (entry points in op_entry.h); CPU-only ops
// register beside their kernels.
#include <torch/library.h>

#include "cpu_kernels.h"

TORCH_LIBRARY_IMPL(fastwin_C, CPU, m) { fastwin::OpEntry<fastwin::CpuKernels>::register_all(m); }
