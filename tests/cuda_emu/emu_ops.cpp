// csrc/cuda's kernels and torch bindings compiled as C++ on the CPU emulator (fw_cuda_emu.h) and
// registered as `torch.ops.fastwin_emu.*` CPU ops with the fastwin_C attention schemas, for
// tests/test_cuda_emulation.py. Built by that test with torch.utils.cpp_extension.load.
#include "fw_cuda_emu.h"  // first: CUDA keywords and built-ins for plain C++

#include "attention.cu"
#include "attention_mma.cu"
#include "attention_mma_bwd.cu"
#include "attention_mma_fwd.cu"
#include "bindings_cuda.cpp"

namespace fastwin {
// The depthwise-conv kernels are not part of the emulated set.
cudaError_t dwconv_fwd_cuda(const DwconvLaunch&, cudaStream_t) { return cudaErrorNotSupported; }
cudaError_t dwconv_wgrad_cuda(const DwconvLaunch&, cudaStream_t) { return cudaErrorNotSupported; }
}  // namespace fastwin

// Same schemas as csrc/ops.cpp (the test checks they match).
TORCH_LIBRARY(fastwin_emu, m) {
  m.def("shifted_window_attention_fwd(Tensor qkv, Tensor? rel_pos_bias_table, Tensor? qkv_bias, int num_heads, "
        "int[2] window_size, int[2] shift_size, float scale, bool pad_roll) -> (Tensor, Tensor)");
  m.def("shifted_window_attention_bwd(Tensor grad_out, Tensor out, Tensor lse, Tensor qkv, Tensor? rel_pos_bias_table, "
        "Tensor? qkv_bias, int num_heads, int[2] window_size, int[2] shift_size, float scale, bool pad_roll, "
        "bool[3] needs_grad) -> (Tensor, Tensor, Tensor)");
  m.def("window_attention_fwd(Tensor qkv, Tensor? rel_pos_bias_table, Tensor? mask, int num_heads, "
        "int[2] window_size, float scale) -> (Tensor, Tensor)");
  m.def("window_attention_bwd(Tensor grad_out, Tensor out, Tensor lse, Tensor qkv, Tensor? rel_pos_bias_table, "
        "Tensor? mask, int num_heads, int[2] window_size, float scale, bool[3] needs_grad) -> (Tensor, Tensor, Tensor)");
  m.def("attention_fwd(Tensor qkv, int num_heads, float scale) -> (Tensor, Tensor)");
  m.def("attention_bwd(Tensor grad_out, Tensor out, Tensor lse, Tensor qkv, int num_heads, float scale, "
        "bool[1] needs_grad) -> Tensor");
}

TORCH_LIBRARY_IMPL(fastwin_emu, CPU, m) {
  using E = fastwin::OpEntry<fastwin::CudaKernels>;
  m.impl("shifted_window_attention_fwd", &E::shifted_fwd);
  m.impl("shifted_window_attention_bwd", &E::shifted_bwd);
  m.impl("window_attention_fwd", &E::window_fwd);
  m.impl("window_attention_bwd", &E::window_bwd);
  m.impl("attention_fwd", &E::attention_fwd);
  m.impl("attention_bwd", &E::attention_bwd);
}
