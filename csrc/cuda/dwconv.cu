// CUDA kernels of the depthwise conv op (stride 1, same padding, odd k), NCHW or channels-last.
//
// Forward: one thread per output element; in channels-last, consecutive threads take consecutive
// channels so loads coalesce. The input gradient reuses the forward kernel with the flipped kernel
// (done by the caller). Weight/bias gradients: one block per channel, a fixed-order block reduction
// per tap, so they are deterministic.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "fastwin/cuda_launch.h"

namespace fastwin {
namespace {

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16(x); }

// Element offset of (b, c, y, x) in either memory format.
__device__ __forceinline__ int64_t offset(const DwconvLaunch& a, int64_t b, int64_t c, int64_t y, int64_t x) {
  return a.channels_last ? ((b * a.H + y) * a.W + x) * a.C + c : ((b * a.C + c) * a.H + y) * a.W + x;
}

template <typename T>
__global__ void dwconv_fwd_kernel(const DwconvLaunch a) {
  const int64_t total = a.B * a.C * a.H * a.W;
  const int r = a.k / 2;
  for (int64_t idx = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x) {
    int64_t b, c, y, x;  // decode in memory order so neighbouring threads touch neighbouring addresses
    if (a.channels_last) {
      c = idx % a.C; x = (idx / a.C) % a.W; y = (idx / (a.C * a.W)) % a.H; b = idx / (a.C * a.W * a.H);
    } else {
      x = idx % a.W; y = (idx / a.W) % a.H; c = (idx / (a.W * a.H)) % a.C; b = idx / (a.W * a.H * a.C);
    }
    const T* in = static_cast<const T*>(a.x);
    const T* w = static_cast<const T*>(a.weight) + c * a.k * a.k;
    float acc = a.bias ? to_f(static_cast<const T*>(a.bias)[c]) : 0.f;
    if (a.residual) acc += to_f(in[idx]);
    for (int ky = 0; ky < a.k; ++ky) {
      const int64_t iy = y + ky - r;
      if (iy < 0 || iy >= a.H) continue;
      for (int kx = 0; kx < a.k; ++kx) {
        const int64_t ix = x + kx - r;
        if (ix < 0 || ix >= a.W) continue;
        acc += to_f(w[ky * a.k + kx]) * to_f(in[offset(a, b, c, iy, ix)]);
      }
    }
    static_cast<T*>(a.out)[idx] = from_f<T>(acc);
  }
}

constexpr int kWgradThreads = 256;

template <typename T>
__global__ void dwconv_wgrad_kernel(const DwconvLaunch a) {
  __shared__ float red[kWgradThreads];
  const int64_t c = blockIdx.x;
  const int r = a.k / 2;
  const T* g = static_cast<const T*>(a.grad_out);
  const T* in = static_cast<const T*>(a.x);
  const int64_t plane = a.B * a.H * a.W;
  for (int t = -1; t < a.k * a.k; ++t) {  // t = -1: the bias gradient
    if (t < 0 && !a.dbias) continue;
    const int dy = t < 0 ? 0 : t / a.k - r, dx = t < 0 ? 0 : t % a.k - r;
    float acc = 0.f;
    for (int64_t i = threadIdx.x; i < plane; i += kWgradThreads) {
      const int64_t x = i % a.W, y = (i / a.W) % a.H, b = i / (a.W * a.H);
      const float gv = to_f(g[offset(a, b, c, y, x)]);
      if (t < 0) {
        acc += gv;
      } else {
        const int64_t iy = y + dy, ix = x + dx;
        if (iy >= 0 && iy < a.H && ix >= 0 && ix < a.W) acc += gv * to_f(in[offset(a, b, c, iy, ix)]);
      }
    }
    red[threadIdx.x] = acc;
    __syncthreads();
    for (int s = kWgradThreads / 2; s > 0; s >>= 1) {
      if (threadIdx.x < s) red[threadIdx.x] += red[threadIdx.x + s];
      __syncthreads();
    }
    if (threadIdx.x == 0) {
      if (t < 0) a.dbias[c] = red[0];
      else a.dweight[c * a.k * a.k + t] = red[0];
    }
    __syncthreads();
  }
}

template <typename T>
cudaError_t fwd(const DwconvLaunch& a, cudaStream_t stream) {
  const int64_t total = a.B * a.C * a.H * a.W;
  if (total == 0) return cudaSuccess;
  const int threads = 256;
  const int64_t blocks = (total + threads - 1) / threads;
  dwconv_fwd_kernel<T><<<static_cast<unsigned>(blocks < 65535 * 16 ? blocks : 65535 * 16), threads, 0, stream>>>(a);
  return cudaGetLastError();
}

template <typename T>
cudaError_t wgrad(const DwconvLaunch& a, cudaStream_t stream) {
  if (a.C == 0) return cudaSuccess;
  dwconv_wgrad_kernel<T><<<static_cast<unsigned>(a.C), kWgradThreads, 0, stream>>>(a);
  return cudaGetLastError();
}

}  // namespace

cudaError_t dwconv_fwd_cuda(const DwconvLaunch& a, cudaStream_t stream) {
  switch (a.dtype) {
    case kF32: return fwd<float>(a, stream);
    case kF16: return fwd<__half>(a, stream);
    case kBF16: return fwd<__nv_bfloat16>(a, stream);
    default: return cudaErrorInvalidValue;
  }
}

cudaError_t dwconv_wgrad_cuda(const DwconvLaunch& a, cudaStream_t stream) {
  switch (a.dtype) {
    case kF32: return wgrad<float>(a, stream);
    case kF16: return wgrad<__half>(a, stream);
    case kBF16: return wgrad<__nv_bfloat16>(a, stream);
    default: return cudaErrorInvalidValue;
  }
}

}  // namespace fastwin
