// CPU kernels of the fused Linear + bias + GELU op (the first half of every transformer MLP).
//
// Unfused, `gelu(linear(x))` on CPU writes the bias broadcast into the output (addmm's beta = 1
// path), runs the GEMM over it, then reads the whole pre-activation back and writes a second tensor
// for the GELU (torch's erf GELU: ~2.5 ns per element on one Zen 4 core): at Swin-T stage 1, batch 8,
// each of those tensors is 38.5 MB, and each fresh one is a new mmap whose pages fault on first touch.
// Here the GEMM (ATen's at::mm_out: the same MKL/oneDNN sgemm as the reference) writes the output once
// and a vectorized bias + GELU pass rewrites it in place. The pre-activation (x W^T + b) is written
// only when the backward will need it.
//
// float runs the fused path; double, half and bfloat16 run the same maths as ATen ops (the
// reference's numerics), so every dtype is accepted.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <string>

#include "cpu_kernels.h"
#include "cpu_math.h"

namespace fastwin {
namespace {

bool tanh_form(const std::string& approximate) {
  TORCH_CHECK(approximate == "none" || approximate == "tanh", "approximate must be 'none' or 'tanh', got '",
              approximate, "'");
  return approximate == "tanh";
}

void check_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() >= 1, "x must have at least 1 dim [..., in_features], got shape ", x.sizes());
  TORCH_CHECK(weight.dim() == 2 && weight.size(1) == x.size(-1), "weight must have shape [out_features, ",
              x.size(-1), "], got ", weight.sizes());
  TORCH_CHECK(weight.scalar_type() == x.scalar_type() && weight.device() == x.device(),
              "weight must match x's dtype and device, got ", weight.scalar_type(), " vs ", x.scalar_type());
  TORCH_CHECK(at::isFloatingType(x.scalar_type()), "x must be floating point, got ", x.scalar_type());
  if (bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == weight.size(0), "bias must have shape [", weight.size(0),
                "], got ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == x.scalar_type() && bias->device() == x.device(),
                "bias must match x's dtype and device");
  }
}

std::vector<int64_t> out_sizes(const at::Tensor& x, int64_t n) {
  auto s = x.sizes().vec();
  s.back() = n;
  return s;
}

// Rows per parallel work item of the elementwise pass (about 64K elements).
int64_t block_rows(int64_t M, int64_t n) {
  return std::min(std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(n, 1)), std::max<int64_t>(M, 1));
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> linear_gelu_fwd_cpu(const at::Tensor& x, const at::Tensor& weight,
                                                       const std::optional<at::Tensor>& bias,
                                                       std::string approximate, bool save_preact) {
  check_linear(x, weight, bias);
  const bool tanh_approx = tanh_form(approximate);
  const int64_t K = x.size(-1), N = weight.size(0);
  const at::Tensor x2 = x.reshape({-1, K}).contiguous();
  const int64_t M = x2.size(0);
  if (x.scalar_type() != at::kFloat || M == 0) {
    at::Tensor h = at::linear(x2, weight, bias ? *bias : at::Tensor());
    at::Tensor out = at::gelu(h, approximate).view(out_sizes(x, N));
    return {out, save_preact ? h.view(out_sizes(x, N)) : at::empty({0}, x.options())};
  }
  at::Tensor out = at::empty({M, N}, x.options());
  at::Tensor pre = save_preact ? at::empty({M, N}, x.options()) : at::empty({0}, x.options());
  const at::Tensor wt = weight.t();  // [K, N] view: the GEMM reads weight transposed, no copy
  const at::Tensor b = bias ? bias->contiguous() : at::Tensor();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  float* op = out.data_ptr<float>();
  float* pp = save_preact ? pre.data_ptr<float>() : nullptr;
  // One GEMM over all rows (ATen's, multi-threaded), then bias + GELU in place in row blocks. Blocked
  // GEMMs that keep each output block in L2 measured no faster: each block re-packs the weight.
  at::mm_out(out, x2, wt);
  const int64_t RB = block_rows(M, N), blocks = (M + RB - 1) / RB;
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    const int64_t r0 = b0 * RB, rows = std::min(b1 * RB, M) - r0;
    cpu::bias_gelu_rows(op + r0 * N, N, bp, op + r0 * N, N, pp ? pp + r0 * N : nullptr, N, rows, N, tanh_approx);
  });
  return {out.view(out_sizes(x, N)), save_preact ? pre.view(out_sizes(x, N)) : pre};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_gelu_bwd_cpu(const at::Tensor& grad_out, const at::Tensor& preact,
                                                                   const at::Tensor& x, const at::Tensor& weight,
                                                                   const std::optional<at::Tensor>& bias,
                                                                   std::string approximate, bool /*save_preact*/,
                                                                   std::array<bool, 3> needs) {
  check_linear(x, weight, bias);
  const bool tanh_approx = tanh_form(approximate);
  const int64_t K = x.size(-1), N = weight.size(0);
  const at::Tensor x2 = x.reshape({-1, K});
  const int64_t M = x2.size(0);
  TORCH_CHECK(preact.numel() == M * N, "preact must hold the ", M, " x ", N,
              " pre-activation saved by linear_gelu_fwd(save_preact=True), got shape ", preact.sizes());
  TORCH_CHECK(grad_out.numel() == M * N, "grad_out must have shape ", at::IntArrayRef(out_sizes(x, N)), ", got ",
              grad_out.sizes());
  const at::Tensor dy = grad_out.to(x.scalar_type()).reshape({M, N}).contiguous();
  const at::Tensor pre = preact.reshape({M, N}).contiguous();
  at::Tensor dh;
  if (x.scalar_type() == at::kFloat) {
    dh = at::empty({M, N}, x.options());
    const float* dyp = dy.data_ptr<float>();
    const float* pp = pre.data_ptr<float>();
    float* dhp = dh.data_ptr<float>();
    at::parallel_for(0, M * N, 1 << 14, [&](int64_t i0, int64_t i1) {
      cpu::gelu_backward(dyp + i0, pp + i0, dhp + i0, i1 - i0, tanh_approx);
    });
  } else {
    dh = at::gelu_backward(dy, pre, approximate);
  }
  auto empty = [&] { return at::empty({0}, x.options()); };
  at::Tensor dx = needs[0] ? at::mm(dh, weight).view(x.sizes()) : empty();
  at::Tensor dw = needs[1] ? at::mm(dh.t(), x2) : empty();
  at::Tensor db = needs[2] && bias ? dh.sum(0) : empty();
  return {dx, dw, db};
}

}  // namespace fastwin

// The op has CPU kernels only, so its schema lives here with them (a fragment of csrc/ops.cpp's library).
// x [..., K], weight [N, K], bias [N] -> out [..., N] = gelu(x @ weight^T + bias) ("none": erf form,
// "tanh": tanh approximation), and the saved pre-activation x @ weight^T + bias [..., N] when
// save_preact (else [0]).
TORCH_LIBRARY_FRAGMENT(fastwin_C, m) {
  m.def("linear_gelu_fwd(Tensor x, Tensor weight, Tensor? bias, str approximate, bool save_preact) "
        "-> (Tensor, Tensor)");
  m.def("linear_gelu_bwd(Tensor grad_out, Tensor preact, Tensor x, Tensor weight, Tensor? bias, str approximate, "
        "bool save_preact, bool[3] needs_grad) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(fastwin_C, CPU, m) {
  m.impl("linear_gelu_fwd", &fastwin::linear_gelu_fwd_cpu);
  m.impl("linear_gelu_bwd", &fastwin::linear_gelu_bwd_cpu);
}
