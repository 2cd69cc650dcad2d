// Torch-facing CUDA bindings: argument checks, device guard, current stream, fp32 workspaces, and
// the CUDA registrations of the fastwin_C ops (schemas in csrc/ops.cpp). Compiled only where torch
// has CUDA; the kernels themselves are in the .cu files next to this one.
#include <ATen/ATen.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../common/op_entry.h"
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
  TORCH_CHECK(err != cudaErrorNotSupported, "fastwin ", what, ": the float16 / bfloat16 CUDA kernels need a GPU of "
              "compute capability 8.0 or newer (tensor-core mma.sync, cp.async)");
  TORCH_CHECK(err == cudaSuccess, "fastwin ", what, " kernel launch failed: ", cudaGetErrorString(err));
}

void check_cuda(const at::Tensor& t, const char* name) {
#if !defined(FASTWIN_CPU_EMULATION)  // tests/cuda_emu runs the kernels on CPU tensors
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor, got ", t.device());
#endif
}

const void* ptr_or_null(const at::Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

at::Tensor contig(const at::Tensor& t) { return t.defined() ? t.contiguous() : t; }

// The tensor-core kernels' per-call workspace (bias tile, backward reductions), from torch's
// caching allocator; undefined when the call needs none.
at::Tensor workspace(AttnLaunch& a, bool bwd, const at::Tensor& like) {
  const size_t bytes = attn_workspace_bytes(a, bwd);
  if (bytes == 0) return at::Tensor();
  at::Tensor ws = at::empty({static_cast<int64_t>(bytes)}, like.options().dtype(at::kByte));
  a.workspace = ws.data_ptr();
  return ws;
}

}  // namespace

// The CUDA kernels behind the fastwin_C ops, in the shape op_entry.h expects of a device.
struct CudaKernels {
  static std::tuple<at::Tensor, at::Tensor> attn_forward(const AttnParams& p, const at::Tensor& qkv,
                                                         const at::Tensor& table_in, const at::Tensor& qkv_bias_in,
                                                         const at::Tensor& mask_in);
  static std::vector<at::Tensor> attn_backward(const AttnParams& p, const at::Tensor& grad_out, const at::Tensor& qkv,
                                               const at::Tensor& out, const at::Tensor& lse,
                                               const at::Tensor& table_in, const at::Tensor& qkv_bias_in,
                                               const at::Tensor& mask_in, AttnGrads want);
  static at::Tensor dwconv_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                   bool residual);
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> dwconv_backward(const at::Tensor& grad_out,
                                                                        const at::Tensor& x, const at::Tensor& weight,
                                                                        bool residual, bool need_weight,
                                                                        bool need_bias);
};

std::tuple<at::Tensor, at::Tensor> CudaKernels::attn_forward(const AttnParams& p, const at::Tensor& qkv,
                                                             const at::Tensor& table_in,
                                                             const at::Tensor& qkv_bias_in, const at::Tensor& mask_in) {
  check_cuda(qkv, "qkv");
  const at::Tensor table = contig(table_in), qkv_bias = contig(qkv_bias_in), mask = contig(mask_in);
  TORCH_CHECK(p.d <= 128, "head_dim must be <= 128 on CUDA, got ", p.d);
  TORCH_CHECK(p.N <= 65536, "at most 65536 tokens per window / sequence on CUDA, got ", p.N);
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
  const at::Tensor ws = workspace(a, false, qkv);
  check_launch(attn_fwd_cuda(a, at::cuda::getCurrentCUDAStream()), "attention forward");
  return {out, lse};
}

std::vector<at::Tensor> CudaKernels::attn_backward(const AttnParams& p, const at::Tensor& grad_out,
                                                   const at::Tensor& qkv, const at::Tensor& out,
                                                   const at::Tensor& lse, const at::Tensor& table_in,
                                                   const at::Tensor& qkv_bias_in, const at::Tensor& mask_in,
                                                   AttnGrads want) {
  check_cuda(qkv, "qkv");
  const at::Tensor table = contig(table_in), qkv_bias = contig(qkv_bias_in), mask = contig(mask_in);
  TORCH_CHECK(grad_out.sizes() == out.sizes(), "grad_out has shape ", grad_out.sizes(), " but the output has shape ",
              out.sizes());
  TORCH_CHECK(p.d <= 128, "head_dim must be <= 128 on CUDA, got ", p.d);
  TORCH_CHECK(lse.numel() == p.groups * p.heads * p.N && lse.scalar_type() == at::kFloat,
              "lse must be float32 with ", p.groups * p.heads * p.N, " elements, got ", lse.sizes());
  const c10::cuda::CUDAGuard guard(qkv.device());
  // f16 / bf16 (tensor cores): every dqkv element is written once, in qkv's dtype, and the saved
  // output is not read (delta comes from P and dP in fp32). fp32: the kernels accumulate into a
  // zeroed fp32 buffer and use the output.
  const bool lowp = qkv.scalar_type() != at::kFloat;
  at::Tensor go = grad_out.to(qkv.scalar_type()).contiguous(), l = lse.contiguous();
  at::Tensor o = lowp ? out : out.contiguous();
  const auto f32 = qkv.options().dtype(at::kFloat);
  at::Tensor dqkv = lowp ? at::empty(qkv.sizes(), qkv.options()) : at::zeros(qkv.sizes(), f32);
  at::Tensor dtable = table.defined() && want.table ? at::zeros(table.sizes(), f32) : at::Tensor();
  at::Tensor dmask = mask.defined() && want.mask ? at::zeros(mask.sizes(), f32) : at::Tensor();
  at::Tensor dqb = qkv_bias.defined() && want.qkv_bias ? at::zeros(qkv_bias.sizes(), f32) : at::Tensor();
  AttnLaunch a{};
  a.p = p;
  a.dtype = dtype_code(qkv);
  a.qkv = qkv.data_ptr();
  a.qkv_bias = ptr_or_null(qkv_bias);
  a.table = ptr_or_null(table);
  a.mask = ptr_or_null(mask);
  a.lse = l.data_ptr<float>();
  a.grad_out = go.data_ptr();
  a.out_saved = lowp ? nullptr : o.data_ptr();
  a.dqkv = lowp ? nullptr : dqkv.data_ptr<float>();
  a.dqkv_out = lowp ? dqkv.data_ptr() : nullptr;
  a.dtable = dtable.defined() ? dtable.data_ptr<float>() : nullptr;
  a.dmask = dmask.defined() ? dmask.data_ptr<float>() : nullptr;
  a.dqkv_bias = dqb.defined() ? dqb.data_ptr<float>() : nullptr;
  const at::Tensor ws = workspace(a, true, qkv);
  check_launch(attn_bwd_cuda(a, at::cuda::getCurrentCUDAStream()), "attention backward");
  auto cast = [&](const at::Tensor& t) { return t.defined() ? t.to(qkv.scalar_type()) : at::empty({0}, qkv.options()); };
  return {cast(dqkv), cast(dtable), cast(dmask), cast(dqb)};
}

namespace {

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

}  // namespace

at::Tensor CudaKernels::dwconv_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                       bool residual) {
  check_cuda(x, "x");
  const c10::cuda::CUDAGuard guard(x.device());
  return conv_forward(x, weight, contig(bias), residual);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> CudaKernels::dwconv_backward(const at::Tensor& grad_out,
                                                                            const at::Tensor& x_in,
                                                                            const at::Tensor& weight, bool residual,
                                                                            bool need_weight, bool need_bias) {
  check_cuda(x_in, "x");
  const c10::cuda::CUDAGuard guard(x_in.device());
  at::Tensor g0 = grad_out.to(x_in.scalar_type());
  at::Tensor dx = conv_forward(g0, weight.flip({2, 3}), at::Tensor(), residual);
  const at::Tensor none = at::empty({0}, x_in.options());
  if (!need_weight && !need_bias) return {dx, none, none};
  const bool cl = x_in.is_contiguous(at::MemoryFormat::ChannelsLast) && !x_in.is_contiguous();
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  at::Tensor x = x_in.contiguous(fmt), g = g0.contiguous(fmt), w = weight.contiguous();
  const auto f32 = x.options().dtype(at::kFloat);
  at::Tensor dw = at::empty({x.size(1), 1, w.size(2), w.size(3)}, f32);
  at::Tensor db = need_bias ? at::empty({x.size(1)}, f32) : at::Tensor();
  DwconvLaunch a = conv_launch(x, w);
  a.x = x.data_ptr();
  a.weight = w.data_ptr();
  a.grad_out = g.data_ptr();
  a.dweight = dw.data_ptr<float>();
  a.dbias = need_bias ? db.data_ptr<float>() : nullptr;
  check_launch(dwconv_wgrad_cuda(a, at::cuda::getCurrentCUDAStream()), "dwconv weight gradient");
  return {dx, need_weight ? dw.to(weight.scalar_type()) : none, need_bias ? db.to(x.scalar_type()) : none};
}

}  // namespace fastwin

#if !defined(FASTWIN_CPU_EMULATION)
TORCH_LIBRARY_IMPL(fastwin_C, CUDA, m) { fastwin::OpEntry<fastwin::CudaKernels>::register_all(m); }
#endif
