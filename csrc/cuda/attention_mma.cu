// Tensor-core attention (f16 / bf16) entry points: the launch plan (attention_mma.h), the per-call
// dense bias+mask tile, the kernel launches (attention_mma_fwd.cu / attention_mma_bwd.cu; design in
// attention_mma.cuh) and the fixed-order reductions of the parameter gradients.
#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "attention_mma.cuh"

namespace fastwin {
namespace mma_detail {

// ---- per-call tile, and the fixed-order reductions -------------------------------------------------

// tile[kind][th][i][j] = log2(e) * (table[rel(i, j), h] + mask), zero outside i, j < N; tileT its
// transpose (or null).
template <typename T>
__global__ void build_tile_kernel(const KArgs a, float* tile, float* tileT, int kinds) {
  const AttnParams& p = a.p;
  const int n16 = a.n16, N = p.N;
  const int64_t total = int64_t(kinds) * a.tile_heads * n16 * n16;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int j = static_cast<int>(e % n16);
    const int i = static_cast<int>((e / n16) % n16);
    const int64_t kh = e / (int64_t(n16) * n16);
    const int h = static_cast<int>(kh % a.tile_heads);
    const int kind = static_cast<int>(kh / a.tile_heads);
    float v = 0.f;
    if (i < N && j < N) {
      if (p.has_table)
        v += Mma<T>::to_float(static_cast<const T*>(a.table)[int64_t(rel_pos_index(i, j, p.wh, p.ww)) * p.heads + h]);
      if (p.kind == kShifted) {
        if (mma_plan::kind_region(p, kind, i) != mma_plan::kind_region(p, kind, j)) v += kShiftMaskValue;
      } else if (a.mask) {
        v += Mma<T>::to_float(static_cast<const T*>(a.mask)[(int64_t(kind) * N + i) * N + j]);
      }
      v *= kLog2e;
    }
    tile[e] = v;
    if (tileT) tileT[(kh * n16 + j) * n16 + i] = v;
  }
}

// sum[e] = sum over slots s (in order) of acc[s][e], e < per.
__global__ void sum_slots_kernel(const float* acc, float* sum, int64_t slots, int64_t per) {
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < per; e += int64_t(gridDim.x) * blockDim.x) {
    float v = 0.f;
    for (int64_t s = 0; s < slots; ++s) v += acc[s * per + e];
    sum[e] = v;
  }
}

// dtable[t, h] = sum over the (query i, key j) pairs of relative offset t, in a fixed order, of
// sumT[h][j][i] (key-major accumulators).
__global__ void fold_table_kernel(const float* sumT, float* dtable, int wh, int ww, int heads, int n16) {
  const int tsize = rel_pos_table_size(wh, ww);
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < tsize * heads; e += gridDim.x * blockDim.x) {
    const int t = e / heads, h = e % heads;
    const mma_plan::RelPairs r = mma_plan::rel_pairs(t, wh, ww);
    const float* s = sumT + int64_t(h) * n16 * n16;
    float v = 0.f;
    for (int y = r.y0; y < r.y1; ++y) {
      for (int x = r.x0; x < r.x1; ++x) {
        const int i = y * ww + x, j = (y - r.dy) * ww + (x - r.dx);
        v += s[int64_t(j) * n16 + i];
      }
    }
    dtable[e] = v;
  }
}

// dmask[w][i][j] = sum over batch chunks, then heads (fixed order), of accT[slot(chunk, w)][h][j][i].
__global__ void reduce_mask_kernel(const float* acc, float* dmask, int64_t chunks, int period, int heads, int n16,
                                   int N) {
  const int64_t total = int64_t(period) * N * N;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < total; e += int64_t(gridDim.x) * blockDim.x) {
    const int j = static_cast<int>(e % N), i = static_cast<int>((e / N) % N);
    const int64_t w = e / (int64_t(N) * N);
    float v = 0.f;
    for (int64_t c = 0; c < chunks; ++c)
      for (int h = 0; h < heads; ++h) v += acc[(((c * period + w) * heads + h) * n16 + j) * n16 + i];
    dmask[e] = v;
  }
}

// out[chunk][c] = sum of in[r][c] over rows r of the chunk, in order.
__global__ void colsum_kernel(const float* in, float* out, int64_t rows, int64_t cols, int64_t chunk_rows) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= cols) return;
  const int64_t r0 = int64_t(blockIdx.y) * chunk_rows, r1 = min(rows, r0 + chunk_rows);
  float v = 0.f;
  for (int64_t r = r0; r < r1; ++r) v += in[r * cols + c];
  out[blockIdx.y * cols + c] = v;
}

// ---- launchers ----------------------------------------------------------------------------------------

inline int device_sms() {
  int dev = 0, sms = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return 132;
  if (cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) return 132;
  return sms;
}

mma_plan::PlanHints plan_hints() {
  mma_plan::PlanHints h;
  if (const char* mode = std::getenv("FASTWIN_CUDA_ATTN_MODE")) {
    h.mode = std::strcmp(mode, "resident") == 0 ? 1 : std::strcmp(mode, "streaming") == 0 ? 2 : 0;
  }
  if (const char* slot = std::getenv("FASTWIN_CUDA_ATTN_SLOT")) h.per_slot = std::atoll(slot);
  return h;
}

MmaPlan plan_of(const AttnLaunch& a, bool bwd) {
  return mma_plan::make_plan(a.p, a.mask != nullptr, bwd, a.dtable != nullptr, a.dmask != nullptr,
                             a.dqkv_bias != nullptr, device_sms(), plan_hints());
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

KArgs make_args(const AttnLaunch& a, const MmaPlan& m, bool bwd) {
  const AttnParams& p = a.p;
  KArgs k{};
  k.p = p;
  k.qkv = a.qkv;
  k.qkv_bias = a.qkv_bias;
  k.table = a.table;
  k.mask = a.mask;
  char* ws = static_cast<char*>(a.workspace);
  k.tile = m.tile ? reinterpret_cast<float*>(ws + m.off_tile) : nullptr;
  k.tileT = m.tile && bwd ? reinterpret_cast<float*>(ws + m.off_tileT) : nullptr;
  k.C = int64_t(p.heads) * p.d;
  k.n16 = m.n16;
  k.kinds_x = mma_plan::tile_kinds_x(p);
  k.tile_heads = m.tile_heads;
  k.scale = static_cast<float>(p.scale);
  k.scale_log2 = static_cast<float>(p.scale * kLog2e);
  k.vec = p.s_chan == 1 && p.d % 8 == 0 && p.s_group % 8 == 0 && p.s_row % 8 == 0 && p.s_col % 8 == 0 &&
          aligned16(a.qkv) && aligned16(a.qkv_bias) && aligned16(a.grad_out);
  k.out_vec = p.d % 8 == 0;
  k.has_mask = a.mask != nullptr;
  k.slots = m.slots;
  k.per_slot = m.per_slot;
  k.period = m.period;
  k.per_period = m.per_period;
  k.npad_image = p.kind == kShifted ? mma_plan::padded_per_image(p.geom) : 0;
  return k;
}

template <typename T>
cudaError_t build_tile(const KArgs& k, const MmaPlan& m, cudaStream_t stream) {
  if (!m.tile) return cudaSuccess;
  const int64_t total = int64_t(m.kinds) * m.tile_heads * m.n16 * m.n16;
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((total + 255) / 256, 65535));
  FW_LAUNCH(build_tile_kernel<T>, blocks, 256, 0, stream)(k, const_cast<float*>(k.tile), const_cast<float*>(k.tileT),
                                                   m.kinds);
  return cudaGetLastError();
}

template <typename T, int D>
cudaError_t fwd_impl(const AttnLaunch& a, const MmaPlan& m, cudaStream_t stream) {
  KArgs k = make_args(a, m, false);
  k.out = a.out;
  k.lse = a.lse;
  k.resident = m.fwd_resident;
  cudaError_t err = build_tile<T>(k, m, stream);
  if (err != cudaSuccess) return err;
  return launch_fwd<T, D>(k, m, stream);
}

template <typename T, int D>
cudaError_t bwd_impl(const AttnLaunch& a, const MmaPlan& m, cudaStream_t stream) {
  const AttnParams& p = a.p;
  char* ws = static_cast<char*>(a.workspace);
  KArgs k = make_args(a, m, true);
  k.lse = a.lse;
  k.dout = a.grad_out;
  k.delta = reinterpret_cast<float*>(ws + m.off_delta);
  k.dqkv = a.dqkv_out;
  k.acc = m.acc ? reinterpret_cast<float*>(ws + m.off_acc) : nullptr;
  k.pad_ws = m.pad ? reinterpret_cast<float*>(ws + m.off_pad) : nullptr;
  cudaError_t err = build_tile<T>(k, m, stream);
  if (err != cudaSuccess) return err;
  k.resident = m.qo_resident;  // query side first: it publishes delta for the key side
  err = launch_bwd_q<T, D>(k, m, stream);
  if (err != cudaSuccess) return err;
  k.resident = m.ko_resident;
  k.acc_smem = m.acc_smem;
  err = launch_bwd_kv<T, D>(k, m, stream);
  if (err != cudaSuccess) return err;

  const int64_t per = int64_t(p.heads) * m.n16 * m.n16;
  if (a.dtable && m.acc && p.has_table) {
    float* sum = reinterpret_cast<float*>(ws + m.off_sum);
    FW_LAUNCH(sum_slots_kernel, blocks_of(per, 256), 256, 0, stream)(k.acc, sum, m.slots, per);
    FW_LAUNCH(fold_table_kernel, blocks_of(int64_t(rel_pos_table_size(p.wh, p.ww)) * p.heads, 128), 128, 0, stream)(
        sum, a.dtable, p.wh, p.ww, p.heads, m.n16);
  }
  if (a.dmask && m.acc && a.mask) {
    const int64_t total = int64_t(p.mask_windows) * p.N * p.N;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>(blocks_of(total, 256), 65535));
    FW_LAUNCH(reduce_mask_kernel, blocks, 256, 0, stream)(
        k.acc, a.dmask, m.slots / m.period, static_cast<int>(m.period), p.heads, m.n16, p.N);
  }
  if (m.pad && a.dqkv_bias) {
    const int64_t cols = 3 * k.C;
    float* part = reinterpret_cast<float*>(ws + m.off_pad_part);
    FW_LAUNCH(colsum_kernel, dim3(blocks_of(cols, 128), static_cast<unsigned>(m.pad_chunks)), 128, 0, stream)(
        k.pad_ws, part, m.pad_rows, cols, m.pad_chunk_rows);
    FW_LAUNCH(colsum_kernel, dim3(blocks_of(cols, 128), 1), 128, 0, stream)(part, a.dqkv_bias, m.pad_chunks, cols,
                                                                     m.pad_chunks);
  }
  return cudaGetLastError();
}

bool device_has_sm80() {
  int dev = 0, major = 0;
  if (cudaGetDevice(&dev) != cudaSuccess) return false;
  return cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) == cudaSuccess && major >= 8;
}

template <template <typename, int> class Impl>
cudaError_t dispatch(const AttnLaunch& a, const MmaPlan& m, cudaStream_t stream) {
  if (a.p.groups == 0 || a.p.N == 0 || a.p.heads == 0) return cudaSuccess;
  if (!device_has_sm80()) return cudaErrorNotSupported;  // mma.sync bf16 / cp.async
  if (a.dtype == kF16) {
    switch (m.dp) {
      case 32: return Impl<__half, 32>::run(a, m, stream);
      case 64: return Impl<__half, 64>::run(a, m, stream);
      case 96: return Impl<__half, 96>::run(a, m, stream);
      case 128: return Impl<__half, 128>::run(a, m, stream);
      default: return cudaErrorInvalidValue;
    }
  }
  if (a.dtype == kBF16) {
    switch (m.dp) {
      case 32: return Impl<__nv_bfloat16, 32>::run(a, m, stream);
      case 64: return Impl<__nv_bfloat16, 64>::run(a, m, stream);
      case 96: return Impl<__nv_bfloat16, 96>::run(a, m, stream);
      case 128: return Impl<__nv_bfloat16, 128>::run(a, m, stream);
      default: return cudaErrorInvalidValue;
    }
  }
  return cudaErrorInvalidValue;
}

template <typename T, int D>
struct FwdImpl {
  static cudaError_t run(const AttnLaunch& a, const MmaPlan& m, cudaStream_t s) { return fwd_impl<T, D>(a, m, s); }
};
template <typename T, int D>
struct BwdImpl {
  static cudaError_t run(const AttnLaunch& a, const MmaPlan& m, cudaStream_t s) { return bwd_impl<T, D>(a, m, s); }
};

}  // namespace mma_detail

using mma_detail::BwdImpl;
using mma_detail::dispatch;
using mma_detail::FwdImpl;
using mma_detail::plan_of;

size_t attn_mma_workspace_bytes(const AttnLaunch& a, bool bwd) { return plan_of(a, bwd).total; }

cudaError_t attn_mma_fwd_cuda(const AttnLaunch& a, cudaStream_t stream) {
  return dispatch<FwdImpl>(a, plan_of(a, false), stream);
}

cudaError_t attn_mma_bwd_cuda(const AttnLaunch& a, cudaStream_t stream) {
  return dispatch<BwdImpl>(a, plan_of(a, true), stream);
}

}  // namespace fastwin

