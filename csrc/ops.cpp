// fastwin._C: operator schemas (namespace `fastwin_C`) and the Python module stub.
//
// The schemas live in their own namespace so they cannot clash with the Triton ops, which Python
// registers as `fastwin::<op>_fwd/_bwd` via torch.library.triton_op. CPU kernels register in
// csrc/cpu/, CUDA kernels in csrc/cuda/bindings_cuda.cpp; Python adds fake (meta) kernels and
// autograd in fastwin/backend/cpp_backend.py.
//
// Attention ops return (out, lse): lse [groups, heads, N] (fp32; fp64 for fp64 inputs) is the
// softmax log-normalizer the backward pass recomputes probabilities from. Gradients of optional
// inputs come back as empty tensors when the input is absent (or, for the mask, not requested).
#include <torch/extension.h>
#include <torch/library.h>

TORCH_LIBRARY(fastwin_C, m) {
  // Shifted-window attention on the un-partitioned qkv map [B, H, W, 3C] -> out [B, H, W, C].
  m.def("swin_attn_fwd(Tensor qkv, int num_heads, int[] window_size, int[] shift_size, Tensor? table, "
        "Tensor? qkv_bias, float scale, bool pad_roll) -> (Tensor, Tensor)");
  m.def("swin_attn_bwd(Tensor grad_out, Tensor qkv, Tensor out, Tensor lse, int num_heads, int[] window_size, "
        "int[] shift_size, Tensor? table, Tensor? qkv_bias, float scale, bool pad_roll) -> (Tensor, Tensor, Tensor)");
  // Attention on given windows qkv [B_, N, 3C] with optional mask [nW, N, N] -> out [B_, N, C].
  m.def("win_attn_fwd(Tensor qkv, int num_heads, int[] window_size, Tensor? table, Tensor? mask, float scale) "
        "-> (Tensor, Tensor)");
  m.def("win_attn_bwd(Tensor grad_out, Tensor qkv, Tensor out, Tensor lse, int num_heads, int[] window_size, "
        "Tensor? table, Tensor? mask, float scale, bool mask_grad) -> (Tensor, Tensor, Tensor)");
  // Global attention qkv [B, N, 3C] -> out [B, N, C].
  m.def("attn_fwd(Tensor qkv, int num_heads, float scale) -> (Tensor, Tensor)");
  m.def("attn_bwd(Tensor grad_out, Tensor qkv, Tensor out, Tensor lse, int num_heads, float scale) -> Tensor");
  // Depthwise conv on logical [B, C, H, W] (any memory format; output keeps it).
  m.def("dwconv2d_fwd(Tensor x, Tensor weight, Tensor? bias, bool residual) -> Tensor");
  m.def("dwconv2d_bwd(Tensor grad_out, Tensor x, Tensor weight, bool residual, bool bias_grad) "
        "-> (Tensor, Tensor, Tensor)");
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "fastwin C++/CUDA kernels; the ops are torch.ops.fastwin_C.*";
#ifdef FASTWIN_WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
}
