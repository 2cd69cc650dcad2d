// fastwin._C: operator schemas (namespace `fastwin_C`) and the Python module stub.
//
// The schemas live in their own namespace so they cannot clash with the Triton ops of the same
// names, which Python registers as `fastwin::<op>_fwd/_bwd` (both would claim the CUDA key). CPU
// kernels register in csrc/cpu/, CUDA kernels in csrc/cuda/bindings_cuda.cpp; Python adds the fake
// (meta) kernels and the one autograd definition per op at `import fastwin` (fastwin/backend/library.py).
//
// Attention ops return (out, lse): lse [groups, heads, N] (fp32; fp64 for fp64 inputs) is the
// per-row softmax statistic each device's backward recomputes probabilities from; its exact meaning
// is the device's own (CPU: log-normalizer relative to the row max; CUDA f16/bf16: base-2
// logsumexp). Gradients come back as empty tensors when the input is absent or `needs_grad` does
// not ask for them.
#include <torch/extension.h>
#include <torch/library.h>

#include "cpu/activation_arena.h"

TORCH_LIBRARY(fastwin_C, m) {
  // Same op names and argument order as the Triton ops (`fastwin::<op>_fwd/_bwd`, registered in
  // fastwin/backend/triton_ops.py), so one Python autograd definition serves both (fastwin/library.py).
  //   <op>_fwd(inputs..., attributes...) -> (outputs..., saved statistics...)
  //   <op>_bwd(grads of the differentiable outputs..., saved outputs..., inputs..., attributes...,
  //            bool[] needs_grad) -> one gradient per differentiable input ([0]-sized when not needed)
  //
  // Shifted-window attention on the un-partitioned qkv map [B, H, W, 3C] -> out [B, H, W, C].
  m.def("shifted_window_attention_fwd(Tensor qkv, Tensor? rel_pos_bias_table, Tensor? qkv_bias, int num_heads, "
        "int[2] window_size, int[2] shift_size, float scale, bool pad_roll) -> (Tensor, Tensor)");
  m.def("shifted_window_attention_bwd(Tensor grad_out, Tensor out, Tensor lse, Tensor qkv, Tensor? rel_pos_bias_table, "
        "Tensor? qkv_bias, int num_heads, int[2] window_size, int[2] shift_size, float scale, bool pad_roll, "
        "bool[3] needs_grad) -> (Tensor, Tensor, Tensor)");
  // Attention on given windows qkv [B_, N, 3C] with optional mask [nW, N, N] -> out [B_, N, C].
  m.def("window_attention_fwd(Tensor qkv, Tensor? rel_pos_bias_table, Tensor? mask, int num_heads, "
        "int[2] window_size, float scale) -> (Tensor, Tensor)");
  m.def("window_attention_bwd(Tensor grad_out, Tensor out, Tensor lse, Tensor qkv, Tensor? rel_pos_bias_table, "
        "Tensor? mask, int num_heads, int[2] window_size, float scale, bool[3] needs_grad) -> (Tensor, Tensor, Tensor)");
  // Global attention qkv [B, N, 3C] -> out [B, N, C].
  m.def("attention_fwd(Tensor qkv, int num_heads, float scale) -> (Tensor, Tensor)");
  m.def("attention_bwd(Tensor grad_out, Tensor out, Tensor lse, Tensor qkv, int num_heads, float scale, "
        "bool[1] needs_grad) -> Tensor");
  // Depthwise conv; layout "NCHW" (x [B, C, H, W], any memory format, kept) or "NHWC" (x [B, H, W, C]).
  m.def("dwconv2d_fwd(Tensor x, Tensor weight, Tensor? bias, bool residual, str layout) -> Tensor");
  m.def("dwconv2d_bwd(Tensor grad_out, Tensor x, Tensor weight, Tensor? bias, bool residual, str layout, "
        "bool[3] needs_grad) -> (Tensor, Tensor, Tensor)");
  //
  // An op whose only kernels are CPU ones declares its schema beside them, in a TORCH_LIBRARY_FRAGMENT of
  // its kernel file (the MLP's Linear + GELU: csrc/cpu/linear_act_cpu.cpp). Every schema equals its row
  // in fastwin/contract.py (tests/test_op_contract.py checks).
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastwin C++/CUDA kernels; the ops are torch.ops.fastwin_C.*";
#ifdef FASTWIN_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  fastwin::bind_activation_arena(m);
}
