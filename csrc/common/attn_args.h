// Torch-side argument checks shared by the CPU and CUDA bindings: they validate what the Python
// layer already validated (a direct torch.ops call must not read out of bounds either) and turn
// the tensors into an AttnParams.
#pragma once

#include <ATen/ATen.h>

#include <optional>

#include "fastwin/attention_params.h"

namespace fastwin {

inline void check_same(const at::Tensor& t, const char* name, const at::Tensor& ref) {
  TORCH_CHECK(t.device() == ref.device(), name, " is on ", t.device(), " but qkv is on ", ref.device());
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), name, " has dtype ", t.scalar_type(), " but qkv has dtype ",
              ref.scalar_type());
}

inline void check_qkv(const at::Tensor& qkv, int64_t ndim, int64_t heads, const char* layout) {
  TORCH_CHECK(qkv.dim() == ndim, "qkv must have ", ndim, " dims ", layout, ", got shape ", qkv.sizes());
  TORCH_CHECK(heads > 0 && qkv.size(-1) % (3 * heads) == 0, "qkv last dim must be 3 * num_heads * head_dim with num_heads = ",
              heads, ", got shape ", qkv.sizes());
  TORCH_CHECK(at::isFloatingType(qkv.scalar_type()), "qkv must be floating point, got ", qkv.scalar_type());
}

inline void check_table(const std::optional<at::Tensor>& table, const at::Tensor& qkv, int wh, int ww, int64_t heads) {
  if (!table) return;
  check_same(*table, "rel_pos_bias_table", qkv);
  TORCH_CHECK(table->dim() == 2 && table->size(0) == rel_pos_table_size(wh, ww) && table->size(1) == heads,
              "rel_pos_bias_table must have shape [", rel_pos_table_size(wh, ww), ", ", heads, "], got ",
              table->sizes());
}

inline AttnParams base_params(const at::Tensor& qkv, int64_t heads, double scale) {
  AttnParams p{};
  p.heads = static_cast<int>(heads);
  p.d = static_cast<int>(qkv.size(-1) / (3 * heads));
  p.s_chan = qkv.stride(-1);
  p.scale = scale;
  return p;
}

inline AttnParams swin_params(const at::Tensor& qkv, int64_t heads, at::IntArrayRef window, at::IntArrayRef shift,
                              const std::optional<at::Tensor>& table, const std::optional<at::Tensor>& qkv_bias,
                              double scale, bool pad_roll) {
  check_qkv(qkv, 4, heads, "[B, H, W, 3 * heads * d]");
  TORCH_CHECK(window.size() == 2 && shift.size() == 2, "window_size and shift_size must have 2 entries, got ",
              window, " and ", shift);
  TORCH_CHECK(window[0] > 0 && window[1] > 0 && shift[0] >= 0 && shift[1] >= 0 && shift[0] < window[0] &&
                  shift[1] < window[1],
              "need 0 <= shift_size < window_size, got window ", window, ", shift ", shift);
  const int wh = static_cast<int>(window[0]), ww = static_cast<int>(window[1]);
  check_table(table, qkv, wh, ww, heads);
  if (qkv_bias) {
    check_same(*qkv_bias, "qkv_bias", qkv);
    TORCH_CHECK(qkv_bias->dim() == 1 && qkv_bias->size(0) == qkv.size(3), "qkv_bias must have shape [",
                qkv.size(3), "], got ", qkv_bias->sizes());
  }
  AttnParams p = base_params(qkv, heads, scale);
  p.kind = kShifted;
  p.geom = make_window_geom(static_cast<int>(qkv.size(1)), static_cast<int>(qkv.size(2)), wh, ww,
                            static_cast<int>(shift[0]), static_cast<int>(shift[1]), pad_roll);
  p.windows_per_image = p.geom.nWh * p.geom.nWw;
  p.groups = qkv.size(0) * p.windows_per_image;
  p.N = wh * ww;
  p.wh = wh;
  p.ww = ww;
  p.s_group = qkv.stride(0);
  p.s_row = qkv.stride(1);
  p.s_col = qkv.stride(2);
  p.has_table = table.has_value();
  p.has_qkv_bias = qkv_bias.has_value();
  return p;
}

inline AttnParams windows_params(const at::Tensor& qkv, int64_t heads, at::IntArrayRef window,
                                 const std::optional<at::Tensor>& table, const std::optional<at::Tensor>& mask,
                                 double scale) {
  check_qkv(qkv, 3, heads, "[B*nW, N, 3 * heads * d]");
  TORCH_CHECK(window.size() == 2 && window[0] > 0 && window[1] > 0, "window_size must be 2 positive ints, got ", window);
  const int wh = static_cast<int>(window[0]), ww = static_cast<int>(window[1]);
  TORCH_CHECK(qkv.size(1) == wh * ww, "qkv has ", qkv.size(1), " tokens per window but window_size ", window, " has ",
              wh * ww, " (shape ", qkv.sizes(), ")");
  check_table(table, qkv, wh, ww, heads);
  AttnParams p = base_params(qkv, heads, scale);
  if (mask) {
    check_same(*mask, "mask", qkv);
    TORCH_CHECK(mask->dim() == 3 && mask->size(0) > 0 && mask->size(1) == wh * ww && mask->size(2) == wh * ww &&
                    qkv.size(0) % mask->size(0) == 0,
                "mask must have shape [nW, ", wh * ww, ", ", wh * ww, "] with nW dividing ", qkv.size(0), ", got ",
                mask->sizes());
    p.mask_windows = static_cast<int>(mask->size(0));
  }
  p.kind = kWindows;
  p.groups = qkv.size(0);
  p.N = wh * ww;
  p.wh = wh;
  p.ww = ww;
  p.s_group = qkv.stride(0);
  p.s_col = qkv.stride(1);
  p.has_table = table.has_value();
  return p;
}

inline AttnParams global_params(const at::Tensor& qkv, int64_t heads, double scale) {
  check_qkv(qkv, 3, heads, "[B, N, 3 * heads * d]");
  AttnParams p = base_params(qkv, heads, scale);
  p.kind = kGlobal;
  p.groups = qkv.size(0);
  p.N = static_cast<int>(qkv.size(1));
  p.s_group = qkv.stride(0);
  p.s_col = qkv.stride(1);
  return p;
}

// Shape of the attention output: [B, H, W, C] for kShifted, [groups, N, C] otherwise.
inline std::vector<int64_t> out_shape(const at::Tensor& qkv) {
  auto s = qkv.sizes().vec();
  s.back() /= 3;
  return s;
}

// The row-statistics (logsumexp) dtype: fp32, fp64 for fp64 inputs.
inline at::ScalarType stat_dtype(const at::Tensor& qkv) {
  return qkv.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
}

}  // namespace fastwin
