// Torch-side checks of the depthwise conv ops, shared by the CPU and CUDA bindings.
#pragma once

#include <ATen/ATen.h>

#include <optional>

namespace fastwin {

inline void check_dwconv(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  TORCH_CHECK(x.dim() == 4, "x must be [B, C, H, W], got shape ", x.sizes());
  const int64_t C = x.size(1);
  TORCH_CHECK(weight.dim() == 4 && weight.size(0) == C && weight.size(1) == 1 && weight.size(2) == weight.size(3) &&
                  weight.size(3) % 2 == 1,
              "weight must have shape [", C, ", 1, k, k] with k odd, got ", weight.sizes());
  TORCH_CHECK(weight.device() == x.device() && weight.scalar_type() == x.scalar_type(),
              "weight must match x's device and dtype, got ", weight.device(), " ", weight.scalar_type(), " vs ",
              x.device(), " ", x.scalar_type());
  if (bias) {
    TORCH_CHECK(bias->dim() == 1 && bias->size(0) == C, "bias must have shape [", C, "], got ", bias->sizes());
    TORCH_CHECK(bias->device() == x.device() && bias->scalar_type() == x.scalar_type(),
                "bias must match x's device and dtype");
  }
}

}  // namespace fastwin
