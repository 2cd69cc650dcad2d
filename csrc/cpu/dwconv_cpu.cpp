// CPU kernels of the depthwise conv op (stride 1, "same" padding, odd k), fwd and bwd.
//
// x is the logical [B, C, H, W] tensor (the Python layer permutes NHWC inputs into this view), in
// either memory format; the output keeps the input's format. Channels-last runs vectorize over C
// (a pixel's channels are contiguous); NCHW runs vectorize along a row of one channel plane.
// Half/bfloat16 are computed in fp32. The input gradient is the same conv with the kernel
// flipped, so it reuses the forward kernel.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "cpu_kernels.h"
#include "cpu_math.h"

namespace fastwin {
namespace {

// out[b, c, y, x] = bias[c] + sum w[c, ky, kx] * in[b, c, y + ky - r, x + kx - r] (+ in[b, c, y, x]).
template <typename T>
void conv_nchw(const T* in, const T* w, const T* bias, T* out, int64_t B, int64_t C, int64_t H, int64_t W, int k,
               bool residual) {
  const int r = k / 2;
  at::parallel_for(0, B * C, 1, [&](int64_t p0, int64_t p1) {
    for (int64_t pc = p0; pc < p1; ++pc) {
      const int64_t c = pc % C;
      const T* src = in + pc * H * W;
      T* dst = out + pc * H * W;
      const T* wc = w + c * k * k;
      for (int64_t y = 0; y < H; ++y) {
        T* o = dst + y * W;
        const T b0 = bias ? bias[c] : T(0);
        for (int64_t x = 0; x < W; ++x) o[x] = residual ? b0 + src[y * W + x] : b0;
        for (int ky = 0; ky < k; ++ky) {
          const int64_t iy = y + ky - r;
          if (iy < 0 || iy >= H) continue;
          const T* row = src + iy * W;
          for (int kx = 0; kx < k; ++kx) {
            const T wv = wc[ky * k + kx];
            const int64_t dx = kx - r;
            const int64_t x0 = std::max<int64_t>(0, -dx), x1 = std::min<int64_t>(W, W - dx);
            for (int64_t x = x0; x < x1; ++x) o[x] += wv * row[x + dx];  // contiguous: vectorizes
          }
        }
      }
    }
  });
}

template <typename T>
void conv_nhwc(const T* in, const T* w, const T* bias, T* out, int64_t B, int64_t C, int64_t H, int64_t W, int k,
               bool residual) {
  const int r = k / 2;
  std::vector<T> wt(int64_t(k) * k * C);  // [k*k, C]: per-tap weights contiguous over channels
  for (int64_t c = 0; c < C; ++c)
    for (int t = 0; t < k * k; ++t) wt[t * C + c] = w[c * k * k + t];
  at::parallel_for(0, B * H, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t by = r0; by < r1; ++by) {
      const int64_t b = by / H, y = by % H;
      for (int64_t x = 0; x < W; ++x) {
        T* o = out + ((b * H + y) * W + x) * C;
        const T* self = in + ((b * H + y) * W + x) * C;
        for (int64_t c = 0; c < C; ++c) o[c] = (bias ? bias[c] : T(0)) + (residual ? self[c] : T(0));
        for (int ky = 0; ky < k; ++ky) {
          const int64_t iy = y + ky - r;
          if (iy < 0 || iy >= H) continue;
          for (int kx = 0; kx < k; ++kx) {
            const int64_t ix = x + kx - r;
            if (ix < 0 || ix >= W) continue;
            const T* src = in + ((b * H + iy) * W + ix) * C;
            const T* wv = &wt[(ky * k + kx) * C];
            for (int64_t c = 0; c < C; ++c) o[c] += wv[c] * src[c];
          }
        }
      }
    }
  });
}

// fp32 channels-last: the register-blocked, ISA-dispatched row kernel of cpu_math (2-6x the loop above
// and 1.1-2.3x oneDNN's depthwise conv at UniFormer-S's shapes, 1 thread).
template <>
void conv_nhwc<float>(const float* in, const float* w, const float* bias, float* out, int64_t B, int64_t C, int64_t H,
                      int64_t W, int k, bool residual) {
  std::vector<float> wt(int64_t(k) * k * C);
  for (int64_t c = 0; c < C; ++c)
    for (int t = 0; t < k * k; ++t) wt[t * C + c] = w[c * k * k + t];
  const int64_t image = H * W * C;
  at::parallel_for(0, B * H, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t by = r0; by < r1;) {  // runs of rows within one image
      const int64_t b = by / H, y0 = by % H, y1 = std::min(H, y0 + (r1 - by));
      cpu::dwconv_nhwc_rows(in + b * image, wt.data(), bias, out + b * image, H, W, C, k, y0, y1, residual);
      by += y1 - y0;
    }
  });
}

// dw[c, ky, kx] = sum g[b, c, y, x] * in[b, c, y + ky - r, x + kx - r]; db[c] = sum g.
// Parallel over channels, so each weight is reduced by one thread in a fixed order.
template <typename T>
void weight_grad(const T* g, const T* in, T* dw, T* db, int64_t B, int64_t C, int64_t H, int64_t W, int k,
                 bool channels_last) {
  const int r = k / 2;
  const int64_t sc = channels_last ? 1 : H * W, sp = channels_last ? C : 1, sb = C * H * W;
  at::parallel_for(0, C, 1, [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      T bsum = 0;
      for (int t = 0; t < k * k; ++t) dw[c * k * k + t] = 0;
      for (int64_t b = 0; b < B; ++b) {
        const T* gp = g + b * sb + c * sc;
        const T* ip = in + b * sb + c * sc;
        for (int64_t y = 0; y < H; ++y)
          for (int64_t x = 0; x < W; ++x) bsum += gp[(y * W + x) * sp];
        for (int ky = 0; ky < k; ++ky) {
          const int64_t dy = ky - r, y0 = std::max<int64_t>(0, -dy), y1 = std::min<int64_t>(H, H - dy);
          for (int kx = 0; kx < k; ++kx) {
            const int64_t dx = kx - r, x0 = std::max<int64_t>(0, -dx), x1 = std::min<int64_t>(W, W - dx);
            T acc = 0;
            for (int64_t y = y0; y < y1; ++y)
              for (int64_t x = x0; x < x1; ++x) acc += gp[(y * W + x) * sp] * ip[((y + dy) * W + x + dx) * sp];
            dw[c * k * k + ky * k + kx] += acc;
          }
        }
      }
      if (db) db[c] = bsum;
    }
  });
}

// Runs `fn(x_acc, is_channels_last)` on an fp32/fp64 copy laid out in the best supported format.
bool use_channels_last(const at::Tensor& x) {
  return x.is_contiguous(at::MemoryFormat::ChannelsLast) && !x.is_contiguous();
}

at::Tensor conv_forward(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& b_in, bool residual) {
  const bool cl = use_channels_last(x_in);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const auto acc = x_in.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor x = x_in.to(acc).contiguous(fmt), w = w_in.to(acc).contiguous();
  at::Tensor b = b_in.defined() ? b_in.to(acc).contiguous() : at::Tensor();
  at::Tensor out = at::empty_like(x, x.options(), fmt);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int k = static_cast<int>(w.size(-1));
  if (x.numel() == 0) return out.to(x_in.scalar_type());
  AT_DISPATCH_FLOATING_TYPES(acc, "fastwin_dwconv_cpu", [&] {
    const scalar_t* bp = b.defined() ? b.data_ptr<scalar_t>() : nullptr;
    (cl ? conv_nhwc<scalar_t> : conv_nchw<scalar_t>)(x.data_ptr<scalar_t>(), w.data_ptr<scalar_t>(), bp,
                                                     out.data_ptr<scalar_t>(), B, C, H, W, k, residual);
  });
  return out.to(x_in.scalar_type());
}

}  // namespace

at::Tensor CpuKernels::dwconv_forward(const at::Tensor& x, const at::Tensor& weight, const at::Tensor& bias,
                                      bool residual) {
  return conv_forward(x, weight, bias, residual);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> CpuKernels::dwconv_backward(const at::Tensor& grad_out,
                                                                           const at::Tensor& x,
                                                                           const at::Tensor& weight, bool residual,
                                                                           bool need_weight, bool need_bias) {
  // Same padding and odd k: the input gradient is the conv of grad_out with the flipped kernel.
  at::Tensor dx = conv_forward(grad_out.to(x.scalar_type()), weight.flip({2, 3}), at::Tensor(), residual);
  const at::Tensor none = at::empty({0}, x.options());
  if (!need_weight && !need_bias) return {dx, none, none};
  const bool cl = use_channels_last(x);
  const auto fmt = cl ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  const auto acc = x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
  at::Tensor g = grad_out.to(acc).contiguous(fmt), xi = x.to(acc).contiguous(fmt);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const int k = static_cast<int>(weight.size(-1));
  at::Tensor dw = at::zeros({C, 1, k, k}, x.options().dtype(acc));
  at::Tensor db = need_bias ? at::zeros({C}, x.options().dtype(acc)) : at::Tensor();
  if (x.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES(acc, "fastwin_dwconv_wgrad_cpu", [&] {
      weight_grad<scalar_t>(g.data_ptr<scalar_t>(), xi.data_ptr<scalar_t>(), dw.data_ptr<scalar_t>(),
                            need_bias ? db.data_ptr<scalar_t>() : nullptr, B, C, H, W, k, cl);
    });
  }
  return {dx, need_weight ? dw.to(weight.scalar_type()) : none, need_bias ? db.to(x.scalar_type()) : none};
}

}  // namespace fastwin
