// The CPU kernels behind the fastwin_C ops, in the shape csrc/common/op_entry.h expects of a device.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <optional>
#include <string>
#include <tuple>
#include <vector>

#include "../common/op_entry.h"

namespace fastwin {

struct CpuKernels {
  // attention_cpu.cpp
  static std::tuple<at::Tensor, at::Tensor> attn_forward(const AttnParams& p, const at::Tensor& qkv,
                                                         const at::Tensor& table, const at::Tensor& qkv_bias,
                                                         const at::Tensor& mask);
  static std::vector<at::Tensor> attn_backward(const AttnParams& p, const at::Tensor& grad_out, const at::Tensor& qkv,
                                               const at::Tensor& out, const at::Tensor& lse, const at::Tensor& table,
                                               const at::Tensor& qkv_bias, const at::Tensor& mask, AttnGrads want);
  // dwconv_cpu.cpp
  static at::Tensor dwconv_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                   bool residual);
  static std::tuple<at::Tensor, at::Tensor, at::Tensor> dwconv_backward(const at::Tensor& grad_out,
                                                                        const at::Tensor& x, const at::Tensor& weight,
                                                                        bool residual, bool need_weight,
                                                                        bool need_bias);
};

}  // namespace fastwin
