// CUDA kernels of the fused attention ops for fp32 inputs (CUDA cores), and the entry points that
// send f16 / bf16 to the tensor-core kernels of attention_mma.cu.
//
// fp32: one block per (group, head); 4 warps. Queries are processed in chunks of kRowsPerWarp rows
// per warp with their softmax state (running max, sum, output) in registers; keys stream through
// shared memory in tiles of 32, one key per lane, so any window size and sequence length works with
// online softmax (no N x N matrix anywhere). Token locations (shift, padding, partition) come from
// window_index.h, the same arithmetic as the CPU kernels. A row whose logits are all -inf gets
// output 0 and lse = +inf (zero gradients). The backward pass recomputes probabilities from the
// saved logsumexp; dK/dV of a key tile are accumulated in shared memory and flushed with one
// atomicAdd per element into an fp32 workspace; bias-table, mask and qkv_bias gradients use fp32
// atomics (not bit-deterministic; the tensor-core path is).
#include <cuda_runtime.h>

#include "device_compat.cuh"
#include "fastwin/cuda_launch.h"

namespace fastwin {
namespace {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kKeyTile = 32;
constexpr int kRowsPerWarp = 4;
constexpr int kChunk = kWarps * kRowsPerWarp;

// The kernels below are templates over the element type but only instantiated for float.
__device__ __forceinline__ float to_f(float x) { return x; }
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }

__device__ __forceinline__ float warp_max(float v) {
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}
__device__ __forceinline__ float warp_sum(float v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// Shared-memory layout of one block: key tile K/V [32][d+1] (the +1 avoids bank conflicts when a
// lane reads its own key's row), query chunk Q [kChunk][d], token metadata.
struct Smem {
  float* K;
  float* V;
  float* Q;
  float* dO;     // bwd only: [kChunk][d]
  float* dK;     // bwd only: [32][d+1]
  float* dV;     // bwd only: [32][d+1]
  int64_t* key_off;
  int64_t* key_row;
  int* key_region;
  int* q_region;
  int64_t* q_row;
};

__device__ Smem carve(char* base, int d, bool bwd) {
  Smem s;
  const int dp = d + 1;
  float* f = reinterpret_cast<float*>(base);
  s.K = f; f += kKeyTile * dp;
  s.V = f; f += kKeyTile * dp;
  s.Q = f; f += kChunk * d;
  s.dO = f; if (bwd) f += kChunk * d;
  s.dK = f; if (bwd) f += kKeyTile * dp;
  s.dV = f; if (bwd) f += kKeyTile * dp;
  size_t nf = f - reinterpret_cast<float*>(base);
  nf += nf & 1;  // keep the int64 block 8-byte aligned (mirrors smem_bytes)
  int64_t* l = reinterpret_cast<int64_t*>(reinterpret_cast<float*>(base) + nf);
  s.key_off = l; l += kKeyTile;
  s.key_row = l; l += kKeyTile;
  s.q_row = l; l += kChunk;
  int* i = reinterpret_cast<int*>(l);
  s.key_region = i; i += kKeyTile;
  s.q_region = i;
  return s;
}

size_t smem_bytes(int d, bool bwd) {
  const int dp = d + 1;
  size_t floats = 2 * kKeyTile * dp + kChunk * d + (bwd ? kChunk * d + 2 * kKeyTile * dp : 0);
  floats += floats & 1;  // keep the int64 block 8-byte aligned
  return floats * 4 + (2 * kKeyTile + kChunk) * 8 + (kKeyTile + kChunk) * 4;
}

// Load q/k/v channel vector t of token (g, n) for head h into dst (scaled), padding -> qkv_bias.
template <typename T>
__device__ __forceinline__ float load_qkv(const AttnLaunch& a, int64_t off, int t, int h, int c) {
  const AttnParams& p = a.p;
  const int64_t ch = int64_t(t) * p.heads * p.d + int64_t(h) * p.d + c;
  if (off >= 0) return to_f(static_cast<const T*>(a.qkv)[off + ch * p.s_chan]);
  return a.qkv_bias ? to_f(static_cast<const T*>(a.qkv_bias)[ch]) : 0.f;
}

// Additive logit term (bias + mask + shift mask) for query qi, key kj; -inf for keys beyond N.
template <typename T>
__device__ __forceinline__ float logit_bias(const AttnLaunch& a, int64_t g, int h, int qi, int kj, int q_region,
                                            int k_region) {
  const AttnParams& p = a.p;
  float b = 0.f;
  if (a.table) b += to_f(static_cast<const T*>(a.table)[int64_t(rel_pos_index(qi, kj, p.wh, p.ww)) * p.heads + h]);
  if (a.mask) b += to_f(static_cast<const T*>(a.mask)[((g % p.mask_windows) * p.N + qi) * int64_t(p.N) + kj]);
  if (q_region != k_region) b += kShiftMaskValue;
  return b;
}

template <typename T>
__device__ void load_key_tile(const AttnLaunch& a, const Smem& s, int64_t g, int h, int k0) {
  const AttnParams& p = a.p;
  const int dp = p.d + 1;
  if (threadIdx.x < kKeyTile) {
    const int n = k0 + threadIdx.x;
    int64_t row = -1;
    int region = 0;
    s.key_off[threadIdx.x] = n < p.N ? token_offset(p, g, n, &row, &region) : -1;
    s.key_row[threadIdx.x] = n < p.N ? row : -2;  // -2: beyond N (masked out entirely)
    s.key_region[threadIdx.x] = region;
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kKeyTile * p.d; idx += kThreads) {
    const int j = idx / p.d, c = idx - (idx / p.d) * p.d;
    const bool valid = s.key_row[j] != -2;
    s.K[j * dp + c] = valid ? load_qkv<T>(a, s.key_off[j], 1, h, c) : 0.f;
    s.V[j * dp + c] = valid ? load_qkv<T>(a, s.key_off[j], 2, h, c) : 0.f;
  }
  __syncthreads();
}

template <typename T>
__device__ void load_query_chunk(const AttnLaunch& a, const Smem& s, int64_t g, int h, int q0, bool bwd) {
  const AttnParams& p = a.p;
  const int64_t C = int64_t(p.heads) * p.d;
  if (threadIdx.x < kChunk) {
    const int n = q0 + threadIdx.x;
    int64_t row = -1;
    int region = 0;
    const int64_t off = n < p.N ? token_offset(p, g, n, &row, &region) : -1;
    s.key_off[threadIdx.x] = off;  // borrowed as scratch until the first key tile
    s.q_row[threadIdx.x] = n < p.N ? row : -2;
    s.q_region[threadIdx.x] = region;
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kChunk * p.d; idx += kThreads) {
    const int i = idx / p.d, c = idx - (idx / p.d) * p.d;
    const bool valid = s.q_row[i] != -2;
    s.Q[idx] = valid ? load_qkv<T>(a, s.key_off[i], 0, h, c) * static_cast<float>(p.scale) : 0.f;
    if (bwd) {
      const int64_t row = s.q_row[i];
      s.dO[idx] = row >= 0 ? to_f(static_cast<const T*>(a.grad_out)[row * C + int64_t(h) * p.d + c]) : 0.f;
    }
  }
  __syncthreads();
}

template <typename T, int DPL>
__global__ void __launch_bounds__(kThreads, 2) attn_fwd_kernel(const AttnLaunch a) {
  FW_DYNAMIC_SMEM(smem_raw);
  const AttnParams& p = a.p;
  const Smem s = carve(reinterpret_cast<char*>(smem_raw), p.d, false);
  const int64_t g = blockIdx.x / p.heads;
  const int h = blockIdx.x % p.heads;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, dp = p.d + 1;
  const int64_t C = int64_t(p.heads) * p.d;
  for (int q0 = 0; q0 < p.N; q0 += kChunk) {
    load_query_chunk<T>(a, s, g, h, q0, false);
    float m[kRowsPerWarp], l[kRowsPerWarp], acc[kRowsPerWarp][DPL];
    #pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      m[r] = -INFINITY;
      l[r] = 0.f;
      #pragma unroll
      for (int e = 0; e < DPL; ++e) acc[r][e] = 0.f;
    }
    for (int k0 = 0; k0 < p.N; k0 += kKeyTile) {
      load_key_tile<T>(a, s, g, h, k0);
      const bool key_valid = s.key_row[lane] != -2;
      #pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const int qi_local = warp * kRowsPerWarp + r, qi = q0 + qi_local;
        if (qi >= p.N) continue;  // warp-uniform; `continue` keeps the loop unrollable (state in registers)
        const float* q = s.Q + qi_local * p.d;
        float sc = 0.f;
        for (int c = 0; c < p.d; ++c) sc += q[c] * s.K[lane * dp + c];
        sc = key_valid ? sc + logit_bias<T>(a, g, h, qi, k0 + lane, s.q_region[qi_local], s.key_region[lane])
                       : -INFINITY;
        const float m_new = fmaxf(m[r], warp_max(sc));
        const float m_use = m_new == -INFINITY ? 0.f : m_new;  // all -inf so far: p = 0, not NaN
        const float pj = key_valid ? __expf(sc - m_use) : 0.f;
        const float alpha = __expf(m[r] - m_use);  // m starts at -inf: alpha = 0
        l[r] = l[r] * alpha + warp_sum(pj);
        m[r] = m_new;
        #pragma unroll
        for (int e = 0; e < DPL; ++e) acc[r][e] *= alpha;
        for (int j = 0; j < kKeyTile; ++j) {
          const float pb = __shfl_sync(0xffffffffu, pj, j);
          #pragma unroll
          for (int e = 0; e < DPL; ++e) {
            const int c = lane + 32 * e;
            if (c < p.d) acc[r][e] += pb * s.V[j * dp + c];
          }
        }
      }
      __syncthreads();  // the next tile overwrites K/V
    }
    #pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int qi_local = warp * kRowsPerWarp + r, qi = q0 + qi_local;
      if (qi >= p.N) continue;
      if (lane == 0) a.lse[(g * p.heads + h) * int64_t(p.N) + qi] = l[r] == 0.f ? INFINITY : m[r] + logf(l[r]);
      const int64_t row = s.q_row[qi_local];
      if (row < 0) continue;  // padded token: cropped away
      const float inv = l[r] == 0.f ? 0.f : 1.f / l[r];  // a NaN sum (NaN logit) stays NaN
      #pragma unroll
      for (int e = 0; e < DPL; ++e) {
        const int c = lane + 32 * e;
        if (c < p.d) static_cast<T*>(a.out)[row * C + int64_t(h) * p.d + c] = from_f<T>(acc[r][e] * inv);
      }
    }
    __syncthreads();
  }
}

template <typename T, int DPL>
__global__ void __launch_bounds__(kThreads, 2) attn_bwd_kernel(const AttnLaunch a) {
  FW_DYNAMIC_SMEM(smem_raw);
  const AttnParams& p = a.p;
  const Smem s = carve(reinterpret_cast<char*>(smem_raw), p.d, true);
  const int64_t g = blockIdx.x / p.heads;
  const int h = blockIdx.x % p.heads;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, dp = p.d + 1;
  const int64_t C = int64_t(p.heads) * p.d, C3 = 3 * C;
  const float scale = static_cast<float>(p.scale);
  for (int q0 = 0; q0 < p.N; q0 += kChunk) {
    load_query_chunk<T>(a, s, g, h, q0, true);
    float Drow[kRowsPerWarp], lse[kRowsPerWarp], dq[kRowsPerWarp][DPL];
    #pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {  // D = rowsum(dO * O)
      const int qi_local = warp * kRowsPerWarp + r, qi = q0 + qi_local;
      const int64_t row = qi < p.N ? s.q_row[qi_local] : -1;
      float v = 0.f;
      for (int c = lane; c < p.d && row >= 0; c += 32)
        v += s.dO[qi_local * p.d + c] * to_f(static_cast<const T*>(a.out_saved)[row * C + int64_t(h) * p.d + c]);
      Drow[r] = warp_sum(v);
      lse[r] = qi < p.N ? a.lse[(g * p.heads + h) * int64_t(p.N) + qi] : 0.f;
      #pragma unroll
      for (int e = 0; e < DPL; ++e) dq[r][e] = 0.f;
    }
    for (int k0 = 0; k0 < p.N; k0 += kKeyTile) {
      load_key_tile<T>(a, s, g, h, k0);
      for (int idx = threadIdx.x; idx < kKeyTile * dp; idx += kThreads) s.dK[idx] = s.dV[idx] = 0.f;
      __syncthreads();
      const bool key_valid = s.key_row[lane] != -2;
      #pragma unroll
      for (int r = 0; r < kRowsPerWarp; ++r) {
        const int qi_local = warp * kRowsPerWarp + r, qi = q0 + qi_local;
        if (qi >= p.N) continue;
        const float* q = s.Q + qi_local * p.d;
        const float* dO = s.dO + qi_local * p.d;
        float sc = 0.f, dpj = 0.f;
        for (int c = 0; c < p.d; ++c) {
          sc += q[c] * s.K[lane * dp + c];
          dpj += dO[c] * s.V[lane * dp + c];
        }
        float pj = 0.f, ds = 0.f;
        if (key_valid) {
          sc += logit_bias<T>(a, g, h, qi, k0 + lane, s.q_region[qi_local], s.key_region[lane]);
          pj = __expf(sc - lse[r]);
          ds = pj * (dpj - Drow[r]);
          if (a.dtable) atomicAdd(&a.dtable[int64_t(rel_pos_index(qi, k0 + lane, p.wh, p.ww)) * p.heads + h], ds);
          if (a.dmask) atomicAdd(&a.dmask[((g % p.mask_windows) * p.N + qi) * int64_t(p.N) + k0 + lane], ds);
        }
        for (int c = 0; c < p.d; ++c) {  // this lane's key: dK += ds * (scale q), dV += p * dO
          atomicAdd(&s.dK[lane * dp + c], ds * q[c]);
          atomicAdd(&s.dV[lane * dp + c], pj * dO[c]);
        }
        for (int j = 0; j < kKeyTile; ++j) {
          const float dsb = __shfl_sync(0xffffffffu, ds, j);
          #pragma unroll
          for (int e = 0; e < DPL; ++e) {
            const int c = lane + 32 * e;
            if (c < p.d) dq[r][e] += dsb * s.K[j * dp + c];
          }
        }
      }
      __syncthreads();
      for (int idx = threadIdx.x; idx < kKeyTile * p.d; idx += kThreads) {  // flush the tile's dK/dV
        const int j = idx / p.d, c = idx - (idx / p.d) * p.d;
        const int64_t row = s.key_row[j];
        if (row == -2) continue;
        const int64_t ch = int64_t(h) * p.d + c;
        if (row >= 0) {
          atomicAdd(&a.dqkv[row * C3 + C + ch], s.dK[j * dp + c]);
          atomicAdd(&a.dqkv[row * C3 + 2 * C + ch], s.dV[j * dp + c]);
        } else if (a.dqkv_bias) {
          atomicAdd(&a.dqkv_bias[C + ch], s.dK[j * dp + c]);
          atomicAdd(&a.dqkv_bias[2 * C + ch], s.dV[j * dp + c]);
        }
      }
      __syncthreads();
    }
    #pragma unroll
    for (int r = 0; r < kRowsPerWarp; ++r) {
      const int qi_local = warp * kRowsPerWarp + r, qi = q0 + qi_local;
      if (qi >= p.N) continue;
      const int64_t row = s.q_row[qi_local];
      #pragma unroll
      for (int e = 0; e < DPL; ++e) {
        const int c = lane + 32 * e;
        if (c >= p.d) continue;
        const float v = dq[r][e] * scale;
        if (row >= 0) a.dqkv[row * C3 + int64_t(h) * p.d + c] = v;  // each query row has one owner
        else if (a.dqkv_bias) atomicAdd(&a.dqkv_bias[int64_t(h) * p.d + c], v);
      }
    }
    __syncthreads();
  }
}

template <template <typename, int> class Kernel, typename T>
cudaError_t launch_dpl(const AttnLaunch& a, bool bwd, cudaStream_t stream) {
  const size_t smem = smem_bytes(a.p.d, bwd);
  const dim3 grid(static_cast<unsigned>(a.p.groups * a.p.heads));
  auto go = [&](auto kernel) {
    cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem));
    if (err != cudaSuccess) return err;
    FW_LAUNCH(kernel, grid, kThreads, smem, stream)(a);
    return cudaGetLastError();
  };
  if (a.p.d <= 32) return go(Kernel<T, 1>::fn());
  if (a.p.d <= 64) return go(Kernel<T, 2>::fn());
  if (a.p.d <= 128) return go(Kernel<T, 4>::fn());
  return cudaErrorInvalidValue;
}

template <typename T, int DPL>
struct FwdK {
  static auto fn() { return attn_fwd_kernel<T, DPL>; }
};
template <typename T, int DPL>
struct BwdK {
  static auto fn() { return attn_bwd_kernel<T, DPL>; }
};

template <template <typename, int> class Kernel>
cudaError_t launch_f32(const AttnLaunch& a, bool bwd, cudaStream_t stream) {
  if (a.p.groups == 0 || a.p.N == 0) return cudaSuccess;
  return launch_dpl<Kernel, float>(a, bwd, stream);
}

}  // namespace

size_t attn_workspace_bytes(const AttnLaunch& a, bool bwd) {
  return a.dtype == kF32 ? 0 : attn_mma_workspace_bytes(a, bwd);
}

cudaError_t attn_fwd_cuda(const AttnLaunch& a, cudaStream_t stream) {
  if (a.dtype == kF16 || a.dtype == kBF16) return attn_mma_fwd_cuda(a, stream);
  return a.dtype == kF32 ? launch_f32<FwdK>(a, false, stream) : cudaErrorInvalidValue;
}

cudaError_t attn_bwd_cuda(const AttnLaunch& a, cudaStream_t stream) {
  if (a.dtype == kF16 || a.dtype == kBF16) return attn_mma_bwd_cuda(a, stream);
  return a.dtype == kF32 ? launch_f32<BwdK>(a, true, stream) : cudaErrorInvalidValue;
}

}  // namespace fastwin
