// Torch-facing CUDA bindings: argument checks, device guard, current stream, fp32 workspaces, and
// the CUDA registrations of the fastwin_C ops (schemas in csrc/ops.cpp). Compiled only where torch
// has CUDA; the kernels themselves are in the .cu files next to this one.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/attn_args.h"
#include "../common/dwconv_args.h"
#include "fastwin/cuda_launch.h"

namespace fastwin {
namespace {

int dtype_code(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kFloat: return kF32;
    case at::kHalf: return kF16;
    case at::kBFloat16: return kBF16;
    default: TORCH_CHECK(false, "fastwin CUDA kernels support float32, float16 and bfloat16, got ", t.scalar_type());
  }
  return -1;
}

void check_launch(cudaError_t err, const char* what) {
  TORCH_CHECK(err == cudaSuccess, "fastwin ", what, " kernel launch failed: ", cudaGetErrorString(err));
}

void check_cuda(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor, got ", t.device());
}

const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

at::Tensor contig(const std::optional<at::Tensor>& t) { return t ? t->contiguous() : at::Tensor(); }

std::tuple<at::Tensor, at::Tensor> forward(const AttnParams& p, const at::Tensor& qkv, const at::Tensor& table,
                                           const at::Tensor& qkv_bias, const at::Tensor& mask) {
  check_cuda(qkv, "qkv");
  TORCH_CHECK(p.d <= 128, "head_dim must be <= 128 on CUDA, got ", p.d);
  const c10::cuda::CUDAGuard guard(qkv.device());
  at::Tensor out = at::empty(out_shape(qkv), qkv.options());
  at::Tensor lse = at::empty({p.groups, p.heads, p.N}, qkv.options().dtype(at::kFloat));
  AttnLaunch a{};
  a.p = p;
  a.dtype = dtype_code(qkv);
  a.qkv = qkv.data_ptr();
  a.qkv_bias = ptr_or_null(qkv_bias);
  a.table = ptr_or_null(table);
  a.mask = ptr_or_null(mask);
  a.out = out.data_ptr();
  a.lse = lse.data_ptr<float>();
  check_launch(attn_fwd_cuda(a, at::cuda::getCurrentCUDAStream()), "attention forward");
  return {out, lse};
}

std::vector<at::Tensor> backward(const AttnParams& p, const at::Tensor& grad_out, const at::Tensor& qkv,
                                 const at::Tensor& out, const at::Tensor& lse, const at::Tensor& table,
                                 const at::Tensor& qkv_bias, const at::Tensor& mask, bool mask_grad) {
  check_cuda(qkv, "qkv");
  TORCH_CHECK(grad_out.sizes() == out.sizes(), "grad_out has shape ", grad_out.sizes(), " but the output has shape ",
              out.sizes());
  TORCH_CHECK(lse.numel() == p.groups * p.heads * p.N && lse.scalar_type() == at::kFloat,
              "lse must be float32 with ", p.groups * p.heads * p.N, " elements, got ", lse.sizes());
  const c10::cuda::CUDAGuard guard(qkv.device());
  at::Tensor go = grad_out.to(qkv.scalar_type()).contiguous(), o = out.contiguous(), l = lse.contiguous();
  const auto f32 = qkv.options().dtype(at::kFloat);
  at::Tensor dqkv = at::zeros(qkv.sizes(), f32);
  at::Tensor dtable = table.defined() ? at::zeros(table.sizes(), f32) : at::Tensor();
  at::Tensor dmask = mask.defined() && mask_grad ? at::zeros(mask.sizes(), f32) : at::Tensor();
  at::Tensor dqb = qkv_bias.defined() ? at::zeros(qkv_bias.sizes(), f32) : at::Tensor();
  AttnLaunch a{};
  a.p = p;
  a.dtype = dtype_code(qkv);
  a.qkv = qkv.data_ptr();
  a.qkv_bias = ptr_or_null(qkv_bias);
  a.table = ptr_or_null(table);
  a.mask = ptr_or_null(mask);
  a.lse = l.data_ptr<float>();
  a.grad_out = go.data_ptr();
  a.out_saved = o.data_ptr();
  a.dqkv = dqkv.data_ptr<float>();
  a.dtable = dtable.defined() ? dtable.data_ptr<float>() : nullptr;
  a.dmask = dmask.defined() ? dmask.data_ptr<float>() : nullptr;
  a.dqkv_bias = dqb.defined() ? dqb.data_ptr<float>() : nullptr;
  check_launch(attn_bwd_cuda(a, at::cuda::getCurrentCUDAStream()), "attention backward");
  auto cast = [&](const at::Tensor& t) { return t.defined() ? t.to(qkv.scalar_type()) : at::empty({0}, qkv.options()); };
  return {cast(dqkv), cast(dtable), cast(dmask), cast(dqb)};
}

std::tuple<at::Tensor, at::Tensor> swin_attn_fwd_cuda(const at::Tensor& qkv, int64_t heads, at::IntArrayRef window,
                                                      at::IntArrayRef shift, const std::optional<at::Tensor>& table,
                                                      const std::optional<at::Tensor>& qkv_bias, double scale,
                                                      bool pad_roll) {
  const AttnParams p = swin_params(qkv, heads, window, shift, table, qkv_bias, scale, pad_roll);
  return forward(p, qkv, contig(table), contig(qkv_bias), at::Tensor());
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> swin_attn_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& qkv, const at::Tensor& out, const at::Tensor& lse, int64_t heads,
    at::IntArrayRef window, at::IntArrayRef shift, const std::optional<at::Tensor>& table,
    const std::optional<at::Tensor>& qkv_bias, double scale, bool pad_roll) {
  const AttnParams p = swin_params(qkv, heads, window, shift, table, qkv_bias, scale, pad_roll);
  auto g = backward(p, grad_out, qkv, out, lse, contig(table), contig(qkv_bias), at::Tensor(), false);
  return {g[0], g[1], g[3]};
}

std::tuple<at::Tensor, at::Tensor> win_attn_fwd_cuda(const at::Tensor& qkv, int64_t heads, at::IntArrayRef window,
                                                     const std::optional<at::Tensor>& table,
                                                     const std::optional<at::Tensor>& mask, double scale) {
  const AttnParams p = windows_params(qkv, heads, window, table, mask, scale);
  return forward(p, qkv, contig(table), at::Tensor(), contig(mask));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> win_attn_bwd_cuda(
    const at::Tensor& grad_out, const at::Tensor& qkv, const at::Tensor& out, const at::Tensor& lse, int64_t heads,
    at::IntArrayRef window, const std::optional<at::Tensor>& table, const std::optional<at::Tensor>& mask,
    double scale, bool mask_grad) {
  const AttnParams p = windows_params(qkv, heads, window, table, mask, scale);
  auto g = backward(p, grad_out, qkv, out, lse, contig(table), at::Tensor(), contig(mask), mask_grad);
  return {g[0], g[1], g[2]};
}

std::tuple<at::Tensor, at::Tensor> attn_fwd_cuda(const at::Tensor& qkv, int64_t heads, double scale) {
  return forward(global_params(qkv, heads, scale), qkv, at::Tensor(), at::Tensor(), at::Tensor());
}

at::Tensor attn_bwd_cuda(const at::Tensor& grad_out, const at::Tensor& qkv, const at::Tensor& out,
                         const at::Tensor& lse, int64_t heads, double scale) {
  return backward(global_params(qkv, heads, scale), grad_out, qkv, out, lse, at::Tensor(), at::Tensor(), at::Tensor(),
                  false)[0];
}

DwconvLaunch conv_launch(const at::Tensor& x, const at::Tensor& w) {
  DwconvLaunch a{};
  a.dtype = dtype_code(x);
  a.B = x.size(0); a.C = x.size(1); a.H = x.size(2); a.W = x.size(3);
  a.k = static_cast<int>(w.size(-1));
  a.channels_last = x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
  return a;
}

at::Tensor conv_forward(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& bias, bool residual) {
  const bool cl = x_in.is_contiguous(at::MemoryFormat::ChannelsLast) && !x_in.is_contiguous();
  at::Tensor x = x_in.contiguous(cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous);
  at::Tensor w = w_in.contiguous();
  at::Tensor out = at::empty_like(x);
  DwconvLaunch a = conv_launch(x, w);
  a.x = x.data_ptr();
  a.weight = w.data_ptr();
  a.bias = ptr_or_null(bias);
  a.out = out.data_ptr();
  a.residual = residual;
  check_launch(dwconv_fwd_cuda(a, at::cuda::getCurrentCUDAStream()), "dwconv forward");
  return out;
}

at::Tensor dwconv2d_fwd_cuda(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                             bool residual) {
  check_dwconv(x, weight, bias);
  check_cuda(x, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  return conv_forward(x, weight, contig(bias), residual);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> dwconv2d_bwd_cuda(const at::Tensor& grad_out, const at::Tensor& x_in,
                                                                 const at::Tensor& weight, bool residual,
                                                                 bool bias_grad) {
  check_dwconv(x_in, weight, std::nullopt);
  check_cuda(x_in, "x");
  TORCH_CHECK(grad_out.sizes() == x_in.sizes(), "grad_out has shape ", grad_out.sizes(), " but x has shape ",
              x_in.sizes());
  const c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor g0 = grad_out.to(x_in.scalar_type());
  at::Tensor dx = conv_forward(g0, weight.flip({2, 3}), at::Tensor(), residual);
  const bool cl = x_in.is_contiguous(at::MemoryFormat::ChannelsLast) && !x_in.is_contiguous();
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor x = x_in.contiguous(fmt), g = g0.contiguous(fmt), w = weight.contiguous();
  const auto f32 = x.options().dtype(at::kFloat);
  at::Tensor dw = at::empty({x.size(1), 1, w.size(2), w.size(3)}, f32);
  at::Tensor db = bias_grad ? at::empty({x.size(1)}, f32) : at::Tensor();
  DwconvLaunch a = conv_launch(x, w);
  a.x = x.data_ptr();
  a.weight = w.data_ptr();
  a.grad_out = g.data_ptr();
  a.dweight = dw.data_ptr<float>();
  a.dbias = bias_grad ? db.data_ptr<float>() : nullptr;
  check_launch(dwconv_wgrad_cuda(a, at::cuda::getCurrentCUDAStream()), "dwconv weight gradient");
  return {dx, dw.to(weight.scalar_type()), bias_grad ? db.to(x.scalar_type()) : at::empty({0}, x.options())};
}

}  // namespace
}  // namespace fastwin

TORCH_LIBRARY_IMPL(fastwin_C, CUDA, m) {
  m.impl("swin_attn_fwd", &fastwin::swin_attn_fwd_cuda);
  m.impl("swin_attn_bwd", &fastwin::swin_attn_bwd_cuda);
  m.impl("win_attn_fwd", &fastwin::win_attn_fwd_cuda);
  m.impl("win_attn_bwd", &fastwin::win_attn_bwd_cuda);
  m.impl("attn_fwd", &fastwin::attn_fwd_cuda);
  m.impl("attn_bwd", &fastwin::attn_bwd_cuda);
  m.impl("dwconv2d_fwd", &fastwin::dwconv2d_fwd_cuda);
  m.impl("dwconv2d_bwd", &fastwin::dwconv2d_bwd_cuda);
}
