// The fastwin_C op entry points (schemas in csrc/ops.cpp), shared by the CPU and CUDA registrations:
// unpack the schema's arguments, check them (attn_args.h / dwconv_args.h), and call the device's
// kernels. A device supplies a struct with
//   attn_forward(p, qkv, table, qkv_bias, mask) -> (out, lse)
//   attn_backward(p, grad_out, qkv, out, lse, table, qkv_bias, mask, AttnGrads) -> {dqkv, dtable, dmask, dqkv_bias}
//   dwconv_forward(x, weight, bias, residual) -> y                 (x logical NCHW, any memory format)
//   dwconv_backward(grad_out, x, weight, residual, need_weight, need_bias) -> (dx, dweight, dbias)
// where absent tensors are undefined and gradients not asked for come back as [0]-sized tensors. A
// [0]-sized gradient of a non-empty input means "does not affect the outputs" (Python maps it to None).
#pragma once

#include <torch/library.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>

#include "attn_args.h"
#include "dwconv_args.h"

namespace fastwin {

// Which attention gradients the caller wants (already false for absent inputs).
struct AttnGrads {
  bool qkv, table, qkv_bias, mask;
};

inline at::Tensor opt_tensor(const std::optional<at::Tensor>& t) { return t ? *t : at::Tensor(); }

// NHWC inputs are [B, H, W, C]; the kernels take the logical NCHW view (channels-last in memory).
inline at::Tensor to_logical_nchw(const at::Tensor& t, const std::string& layout) {
  TORCH_CHECK(layout == "NCHW" || layout == "NHWC", "layout must be 'NCHW' or 'NHWC', got '", layout, "'");
  if (layout == "NCHW") return t;
  TORCH_CHECK(t.dim() == 4, "x must be [B, H, W, C] for layout 'NHWC', got shape ", t.sizes());
  return t.permute({0, 3, 1, 2});
}

inline at::Tensor from_logical_nchw(const at::Tensor& t, const std::string& layout) {
  return layout == "NHWC" && t.dim() == 4 ? t.permute({0, 2, 3, 1}) : t;
}

template <class Device>
struct OpEntry {
  using T = at::Tensor;
  using OptT = std::optional<at::Tensor>;

  static std::tuple<T, T> shifted_fwd(const T& qkv, const OptT& table, const OptT& qkv_bias, int64_t heads,
                                      at::IntArrayRef window, at::IntArrayRef shift, double scale, bool pad_roll) {
    const AttnParams p = swin_params(qkv, heads, window, shift, table, qkv_bias, scale, pad_roll);
    return Device::attn_forward(p, qkv, opt_tensor(table), opt_tensor(qkv_bias), T());
  }

  static std::tuple<T, T, T> shifted_bwd(const T& grad_out, const T& out, const T& lse, const T& qkv,
                                         const OptT& table, const OptT& qkv_bias, int64_t heads,
                                         at::IntArrayRef window, at::IntArrayRef shift, double scale, bool pad_roll,
                                         std::array<bool, 3> needs) {
    const AttnParams p = swin_params(qkv, heads, window, shift, table, qkv_bias, scale, pad_roll);
    // Without padding no token carries qkv_bias: like the reference, it gets no gradient at all.
    const bool padded = p.geom.Hp != p.geom.H || p.geom.Wp != p.geom.W;
    const AttnGrads want{needs[0], needs[1] && table.has_value(), needs[2] && qkv_bias.has_value() && padded, false};
    auto g = Device::attn_backward(p, grad_out, qkv, out, lse, opt_tensor(table), opt_tensor(qkv_bias), T(), want);
    return {g[0], g[1], g[3]};
  }

  static std::tuple<T, T> window_fwd(const T& qkv, const OptT& table, const OptT& mask, int64_t heads,
                                     at::IntArrayRef window, double scale) {
    const AttnParams p = windows_params(qkv, heads, window, table, mask, scale);
    return Device::attn_forward(p, qkv, opt_tensor(table), T(), opt_tensor(mask));
  }

  static std::tuple<T, T, T> window_bwd(const T& grad_out, const T& out, const T& lse, const T& qkv,
                                        const OptT& table, const OptT& mask, int64_t heads, at::IntArrayRef window,
                                        double scale, std::array<bool, 3> needs) {
    const AttnParams p = windows_params(qkv, heads, window, table, mask, scale);
    const AttnGrads want{needs[0], needs[1] && table.has_value(), false, needs[2] && mask.has_value()};
    auto g = Device::attn_backward(p, grad_out, qkv, out, lse, opt_tensor(table), T(), opt_tensor(mask), want);
    return {g[0], g[1], g[2]};
  }

  static std::tuple<T, T> attention_fwd(const T& qkv, int64_t heads, double scale) {
    return Device::attn_forward(global_params(qkv, heads, scale), qkv, T(), T(), T());
  }

  static T attention_bwd(const T& grad_out, const T& out, const T& lse, const T& qkv, int64_t heads, double scale,
                         std::array<bool, 1> needs) {
    const AttnGrads want{needs[0], false, false, false};
    return Device::attn_backward(global_params(qkv, heads, scale), grad_out, qkv, out, lse, T(), T(), T(), want)[0];
  }

  static T dwconv_fwd(const T& x_in, const T& weight, const OptT& bias, bool residual, std::string layout) {
    const T x = to_logical_nchw(x_in, layout);
    check_dwconv(x, weight, bias);
    return from_logical_nchw(Device::dwconv_forward(x, weight, opt_tensor(bias), residual), layout);
  }

  static std::tuple<T, T, T> dwconv_bwd(const T& grad_in, const T& x_in, const T& weight, const OptT& bias,
                                        bool residual, std::string layout, std::array<bool, 3> needs) {
    const T x = to_logical_nchw(x_in, layout), grad_out = to_logical_nchw(grad_in, layout);
    check_dwconv(x, weight, bias);
    TORCH_CHECK(grad_out.sizes() == x.sizes(), "grad_out has shape ", grad_in.sizes(), " but x has shape ",
                x_in.sizes());
    auto [dx, dw, db] = Device::dwconv_backward(grad_out, x, weight, residual, needs[1], needs[2] && bias.has_value());
    return {from_logical_nchw(dx, layout), dw, db};
  }

  static void register_all(torch::Library& m) {
    m.impl("shifted_window_attention_fwd", &shifted_fwd);
    m.impl("shifted_window_attention_bwd", &shifted_bwd);
    m.impl("window_attention_fwd", &window_fwd);
    m.impl("window_attention_bwd", &window_bwd);
    m.impl("attention_fwd", &attention_fwd);
    m.impl("attention_bwd", &attention_bwd);
    m.impl("dwconv2d_fwd", &dwconv_fwd);
    m.impl("dwconv2d_bwd", &dwconv_bwd);
  }
};

}  // namespace fastwin
