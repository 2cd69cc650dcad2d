// Building blocks of the tensor-core kernels (mma.sync.m16n8k16: f16 / bf16 operands, f32
// accumulation; sm_80+) of the fused attention ops: shifted-window, given-window and global
// attention, forward and backward.
//
// Tiling. A CTA is 4 warps; each warp owns one 16-row mma tile of a 64-row block. The rows of a
// (group, head) -- a window, or a whole sequence -- are gathered straight from the un-partitioned
// qkv map (shift, padding, partition: window_index.h, attention_params.h, attention_mma.h) into
// shared memory with 16-byte cp.async (element-wise loads for strided or misaligned qkv), head dim
// zero-padded to the compiled width D (32 / 64 / 96 / 128), rows to a multiple of 16, row pitch
// D + 8 elements so every ldmatrix phase is bank-conflict free. Two modes, chosen per call by the
// plan (attention_mma.h):
//   resident   one CTA per (group, head) holds all its rows (Swin windows up to 12x12 at d = 32,
//              7x7 / 8x8 up to d = 64, short sequences), copied once; no barrier after the copy;
//   streaming  one CTA per (group, head, 64-row block); the other side's 64-row tiles are
//              double-buffered (cp.async groups; the copy of tile j + 1 overlaps the math on j).
// The three kernels share this loop shape ("own" rows vs swept "other" tiles).
//
// Forward. Online softmax in base 2, state in registers (row max and sum for the two rows a thread
// holds, D / 2 output accumulators); S = Q K^T and O += P V on tensor cores, P fed back as the A
// operand straight from the accumulators. The relative-position bias, the shift mask (or the given
// mask) arrive as one dense fp32 tile per window kind built once per call (log2(e)-scaled), read
// with 8-byte loads in the accumulator layout. Keys >= N are masked; a row whose logits are all
// -inf gets output 0 and lse = +inf, so zero gradients (never NaN). lse is stored in base 2.
//
// Backward, deterministic (no atomics): delta_i = sum_j P_ij dP_ij in fp32 from the recomputed P
// and dP (not from the rounded output), then
//   query side (attn_bwd_q_kernel): per query tile, sweep 1 -> delta, sweep 2 -> dS = P (dP -
//       delta), dQ = scale dS K; writes dQ and delta (fp32 workspace);
//   key side (attn_bwd_kv_kernel): per key tile over all query tiles, the transposed products
//       S^T = K Q^T and dP^T = V dO^T (so no fragment transposes), dV = P^T dO, dK = scale dS^T Q
//       (D = 128: a dV sweep, then a dK sweep, to stay within 255 registers).
// Every dQ / dK / dV row has one writer. Bias / mask gradients: each key-side CTA walks a fixed
// list of groups (a "slot") and adds dS^T into its own accumulator, each element owned by one
// thread; small kernels sum the slots in order and fold the sum into the table / mask. Padded
// tokens write their fp32 q/k/v gradients to a workspace row of their own, summed into dqkv_bias by
// a two-level fixed-order column sum.
//
// Registers: __launch_bounds__ per kernel and D (min_ctas) at the smallest budget ptxas meets
// without spills (benchmarks/cuda_resources.py reports registers, spills, smem, HMMA counts).
// Fragment layouts and ldmatrix lane maps: fastwin/mma_frag.h (PTX ISA sections cited there).
//
// Files: attention_mma.cuh (this: PTX wrappers, arguments, loads, fragment helpers),
// attention_mma_fwd.cu (forward kernel), attention_mma_bwd.cu (backward kernels),
// attention_mma.cu (per-call tile, reductions, plan and dispatch, the attn_mma_* entry points).
// CUDA headers and fastwin's own headers only (SPEC section 5); device_compat.cuh is the seam of the
// CPU emulation the tests run these sources on (tests/cuda_emu).
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>
#include <string.h>

#include "device_compat.cuh"
#include "fastwin/attention_mma.h"
#include "fastwin/cuda_launch.h"
#include "fastwin/mma_frag.h"

namespace fastwin {
namespace mma_detail {

using mma_plan::GroupLoc;
using mma_plan::kBlockRows;
using mma_plan::kLog2e;
using mma_plan::kThreads;
using mma_plan::kWarps;
using mma_plan::MmaPlan;

// ---- PTX wrappers -------------------------------------------------------------------------------
// mma.sync bf16 and cp.async need sm_80. Built for an older target (TORCH_CUDA_ARCH_LIST with 7.x)
// the wrappers compile to a trap so the rest of the extension still builds; the launcher refuses
// such devices before any launch (attn_mma_*_cuda return cudaErrorNotSupported).
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800 && !defined(FASTWIN_CPU_EMULATION)
#define FW_MMA_UNSUPPORTED_ARCH 1
#endif

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
#if defined(FASTWIN_CPU_EMULATION)
  return fw_emu::smem_u32(p);
#else
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
#endif
}

// ldmatrix from a shared-window address (frag::ldsm_* give the per-lane row).
__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
#if defined(FASTWIN_CPU_EMULATION)
  fw_emu::ldmatrix_x4(r, addr, false);
#elif defined(FW_MMA_UNSUPPORTED_ARCH)
  __trap();
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
#if defined(FASTWIN_CPU_EMULATION)
  fw_emu::ldmatrix_x4(r, addr, true);
#elif defined(FW_MMA_UNSUPPORTED_ARCH)
  __trap();
#else
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
#endif
}

// 16-byte global -> shared copy; `bytes` = 0 zero-fills the destination without reading `src`.
__device__ __forceinline__ void cp_async16(void* dst, const void* src, int bytes) {
#if defined(FASTWIN_CPU_EMULATION)
  fw_emu::cp_async16(dst, src, bytes);
#elif defined(FW_MMA_UNSUPPORTED_ARCH)
  __trap();
#else
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_u32(dst)), "l"(src), "r"(bytes));
#endif
}
__device__ __forceinline__ void cp_async_commit() {
#if !defined(FASTWIN_CPU_EMULATION) && !defined(FW_MMA_UNSUPPORTED_ARCH)
  asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#if !defined(FASTWIN_CPU_EMULATION) && !defined(FW_MMA_UNSUPPORTED_ARCH)
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}

// 2^x; ex2.approx.ftz maps -inf to +0, which is what masked logits need.
__device__ __forceinline__ float ex2(float x) {
#if defined(FASTWIN_CPU_EMULATION)
  return fw_emu::ex2(x);
#else
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
#endif
}

template <typename T>
struct Mma;

template <>
struct Mma<__half> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __half2 v = __floats2half2_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
  }
  static __device__ __forceinline__ float to_float(__half x) { return __half2float(x); }
  static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(FASTWIN_CPU_EMULATION)
    fw_emu::mma_m16n8k16<__half>(c, a, b0, b1);
#elif defined(FW_MMA_UNSUPPORTED_ARCH)
    __trap();
#else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
  }
};

template <>
struct Mma<__nv_bfloat16> {
  static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
    const __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
    uint32_t u;
    memcpy(&u, &v, 4);
    return u;
  }
  static __device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
  static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
#if defined(FASTWIN_CPU_EMULATION)
    fw_emu::mma_m16n8k16<__nv_bfloat16>(c, a, b0, b1);
#elif defined(FW_MMA_UNSUPPORTED_ARCH)
    __trap();
#else
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%0, %1, %2, %3};\n"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#endif
  }
};

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// ---- kernel arguments ---------------------------------------------------------------------------

struct KArgs {
  AttnParams p;
  const void* qkv;
  const void* qkv_bias;
  const void* table;       // tile builder only
  const void* mask;        // tile builder only
  const float* tile;       // [kinds][tile_heads][n16][n16], log2(e)-scaled, or null
  const float* tileT;      // transposed copy (backward)
  void* out;               // fwd: [rows, C]
  float* lse;              // fwd: written; bwd: read. [groups, heads, N], base 2
  const void* dout;        // bwd: [rows, C] contiguous
  float* delta;            // bwd: [groups, heads, n16]
  void* dqkv;              // bwd: [rows, 3C], qkv's dtype
  float* acc;              // bwd: [slots][heads][n16 keys][n16 queries] or null
  float* pad_ws;           // bwd: [pad_rows][3C] or null
  int64_t C;               // heads * d
  int64_t slots, per_slot, period, per_period;
  int64_t npad_image;      // padded tokens per image (kShifted)
  float scale, scale_log2;
  int n16, kinds_x, tile_heads;
  bool vec;                // qkv / qkv_bias / grad_out rows can be copied in 16-byte pieces
  bool out_vec;            // output rows can be written in 16-byte pieces
  bool has_mask;
  bool resident;
  bool acc_smem;
};

// Output-row table of a warp's 16-row tile: destination row (-1 padded token, -2 beyond N) and
// the padded-token workspace row.
struct RowInfo {
  long long out, pad;
};

enum Part : int { kQ = 0, kK = 1, kV = 2, kDO = 3 };

__device__ __forceinline__ int tile_kind_of(const KArgs& a, int64_t g) {
  return mma_plan::tile_kind(a.p, g, a.has_mask);
}

__device__ __forceinline__ const float* tile_of(const KArgs& a, const float* base, int64_t g, int h) {
  if (!base) return nullptr;
  const int64_t k = int64_t(tile_kind_of(a, g)) * a.tile_heads + (a.tile_heads > 1 ? h : 0);
  return base + k * a.n16 * a.n16;
}

__device__ __forceinline__ RowInfo row_info(const KArgs& a, const GroupLoc& L, int n) {
  RowInfo r{-2, -1};
  if (n >= a.p.N) return r;
  int64_t row;
  mma_plan::token_src(a.p, L, n, &row);
  r.out = row;
  if (row < 0 && a.pad_ws) r.pad = L.image * a.npad_image + mma_plan::padded_token_index(a.p.geom, L.win, n);
  return r;
}

// Fills the warp's 16-entry RowInfo table for rows row0 .. row0 + 15.
__device__ __forceinline__ void fill_row_info(const KArgs& a, RowInfo* ri, const GroupLoc& L, int row0) {
  const int lane = threadIdx.x & 31;
  if (lane < 16) ri[lane] = row_info(a, L, row0 + lane);
  __syncwarp();
}

// ---- loads: gather rows of one (group, head) into shared memory -----------------------------------

// Copies rows [n0, n0 + rows) of the given parts into dst[i] (pitch D + 8). Two threads per row;
// each computes its token's location once. Channels d..D-1 and rows >= N are zero; a padded token
// reads qkv_bias (zeros without one); dO rows of padded tokens are zero (their output is cropped).
template <typename T, int D, int NP>
__device__ void load_rows(const KArgs& a, const GroupLoc& L, int h, int n0, int rows, const int (&parts)[NP],
                          T* const (&dst)[NP]) {
  constexpr int LD = D + 8, CH = D / 8;
  const AttnParams& p = a.p;
  for (int r = threadIdx.x >> 1; r < rows; r += kThreads / 2) {
    const int n = n0 + r;
    int64_t off = -2, out_row = -1;
    if (n < p.N) off = mma_plan::token_src(p, L, n, &out_row);
#pragma unroll
    for (int pi = 0; pi < NP; ++pi) {
      const int part = parts[pi];
      T* drow = dst[pi] + r * LD;
      const T* src = nullptr;
      int64_t cs = 1;
      if (part == kDO) {
        if (out_row >= 0) src = static_cast<const T*>(a.dout) + out_row * a.C + int64_t(h) * p.d;
      } else if (off >= 0) {
        src = static_cast<const T*>(a.qkv) + off + (part * a.C + int64_t(h) * p.d) * p.s_chan;
        cs = p.s_chan;
      } else if (off == -1 && a.qkv_bias) {
        src = static_cast<const T*>(a.qkv_bias) + part * a.C + int64_t(h) * p.d;
      }
      for (int c = threadIdx.x & 1; c < CH; c += 2) {
        const bool any = src && c * 8 < p.d;
        if (a.vec) {
          cp_async16(drow + c * 8, any ? static_cast<const void*>(src + c * 8) : a.qkv, any ? 16 : 0);
        } else {  // element by element (strided channels, d % 8 != 0, misaligned rows)
          uint32_t w[4];
#pragma unroll
          for (int e = 0; e < 4; ++e) {
            const int ch = c * 8 + 2 * e;
            const float lo = any && ch < p.d ? Mma<T>::to_float(src[ch * cs]) : 0.f;
            const float hi = any && ch + 1 < p.d ? Mma<T>::to_float(src[(ch + 1) * cs]) : 0.f;
            w[e] = Mma<T>::pack(lo, hi);  // exact: T -> float -> T
          }
          *reinterpret_cast<uint4*>(drow + c * 8) = make_uint4(w[0], w[1], w[2], w[3]);
        }
      }
    }
  }
}

// Per-row fp32 statistics of query rows [n0, n0 + rows) for the key-side kernel: lse (+inf beyond
// N, so those rows get P = 0) and delta.
__device__ inline void load_row_stats(const KArgs& a, int64_t g, int h, int n0, int rows, float* s_lse,
                                      float* s_delta) {
  const int64_t gh = g * a.p.heads + h;
  for (int r = threadIdx.x; r < rows; r += kThreads) {
    const int n = n0 + r;
    s_lse[r] = n < a.p.N ? a.lse[gh * a.p.N + n] : INFINITY;
    s_delta[r] = n < a.p.N ? a.delta[gh * a.n16 + n] : 0.f;
  }
}

// Resident CTAs per SM each kernel is compiled for (__launch_bounds__), i.e. a register budget of
// 65536 / (128 * n): the smallest budget at which ptxas keeps every value in registers (no
// spills) on sm_80 and sm_90a (benchmarks/cuda_resources.py reports the result).
enum KernelId : int { kFwd = 0, kBwdQ = 1, kBwdKV = 2 };
__host__ __device__ constexpr int min_ctas(int kernel, int D) {
  return D <= 32 ? 4 : D <= 64 ? 3 : D <= 96 ? (kernel == kBwdQ ? 4 : 3) : 2;
}

// ---- fragment helpers ---------------------------------------------------------------------------
// Tiles are addressed through 32-bit shared-window addresses (one register each); a tile row is
// D + 8 elements (frag::smem_pitch), 2 bytes each.

// A fragments of the 16 x D tile at `tile`, one per 16-column step.
template <int D>
__device__ __forceinline__ void load_a_frags(uint32_t (&f)[D / 16][4], uint32_t tile, int lane) {
  const frag::RC rc = frag::ldsm_a_lane(lane);
  const uint32_t base = tile + (rc.row * (D + 8) + rc.col) * 2;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) ldsm_x4(f[kk], base + kk * 32);
}

// c0 / c1 (n-tiles 0 / 1) += A B^T, A = 16 x D given as fragments, B = the 16 rows at `b` ([n][k]).
template <typename T, int D>
__device__ __forceinline__ void mma_abt(float (&c0)[4], float (&c1)[4], const uint32_t (&af)[D / 16][4], uint32_t b,
                                        int lane) {
  const frag::RC rc = frag::ldsm_b_lane(lane);
  const uint32_t base = b + (rc.row * (D + 8) + rc.col) * 2;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t f[4];
    ldsm_x4(f, base + kk * 32);
    Mma<T>::run(c0, af[kk], f[0], f[1]);
    Mma<T>::run(c1, af[kk], f[2], f[3]);
  }
}

// Same with A read from shared memory step by step (large D: A fragments not held in registers).
template <typename T, int D>
__device__ __forceinline__ void mma_abt_s(float (&c0)[4], float (&c1)[4], uint32_t a, uint32_t b, int lane) {
  const frag::RC ra = frag::ldsm_a_lane(lane), rb = frag::ldsm_b_lane(lane);
  const uint32_t abase = a + (ra.row * (D + 8) + ra.col) * 2, bbase = b + (rb.row * (D + 8) + rb.col) * 2;
#pragma unroll
  for (int kk = 0; kk < D / 16; ++kk) {
    uint32_t af[4], f[4];
    ldsm_x4(af, abase + kk * 32);
    ldsm_x4(f, bbase + kk * 32);
    Mma<T>::run(c0, af, f[0], f[1]);
    Mma<T>::run(c1, af, f[2], f[3]);
  }
}

// acc[j] += A B for all D / 8 n-tiles; A = one 16 x 16 fragment (k = the 16 rows at `b`), B = the
// 16 rows at `b` stored [k][n] (read transposed).
template <typename T, int D>
__device__ __forceinline__ void mma_ab(float (&acc)[D / 8][4], const uint32_t (&af)[4], uint32_t b, int lane) {
  const frag::RC rc = frag::ldsm_a_lane(lane);
  const uint32_t base = b + (rc.row * (D + 8) + rc.col) * 2;
#pragma unroll
  for (int j = 0; j < D / 16; ++j) {
    uint32_t f[4];
    ldsm_x4_t(f, base + j * 32);
    Mma<T>::run(acc[2 * j], af, f[0], f[1]);
    Mma<T>::run(acc[2 * j + 1], af, f[2], f[3]);
  }
}

// The A fragment formed by accumulator tiles c0 (k 0-7) and c1 (k 8-15) (frag::c_to_a_*).
template <typename T>
__device__ __forceinline__ void c_to_a(uint32_t (&a)[4], const float (&c0)[4], const float (&c1)[4]) {
  a[0] = Mma<T>::pack(c0[0], c0[1]);
  a[1] = Mma<T>::pack(c0[2], c0[3]);
  a[2] = Mma<T>::pack(c1[0], c1[1]);
  a[3] = Mma<T>::pack(c1[2], c1[3]);
}

template <int D>
__device__ __forceinline__ void zero_acc(float (&acc)[D / 8][4]) {
#pragma unroll
  for (int j = 0; j < D / 8; ++j) acc[j][0] = acc[j][1] = acc[j][2] = acc[j][3] = 0.f;
}

// Writes a warp's 16 x D fp32 accumulator tile, times `mul`: real rows as T through the 16-row
// shared staging tile `stage` (16-byte stores; with a null stage, straight from the fragments),
// padded rows as fp32 into the padded-token workspace.
template <typename T, int D>
__device__ void write_tile(const KArgs& a, const float (&acc)[D / 8][4], float mul, T* stage, const RowInfo* ri,
                           T* dst, int64_t pitch, int64_t col0, int64_t pad_col0, int lane) {
  constexpr int LD = D + 8, CH = D / 8;
  const int d = a.p.d;
#pragma unroll
  for (int j = 0; j < D / 8; ++j) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const frag::RC rc = frag::mma_c(lane, 2 * r);
      const float v0 = acc[j][2 * r] * mul, v1 = acc[j][2 * r + 1] * mul;
      const int col = j * 8 + rc.col;
      const long long out = ri[rc.row].out;
      if (stage) {
        *reinterpret_cast<uint32_t*>(stage + rc.row * LD + col) = Mma<T>::pack(v0, v1);
      } else if (out >= 0 && col < d) {
        T* o = dst + out * pitch + col0 + col;
        if (a.out_vec) {
          *reinterpret_cast<uint32_t*>(o) = Mma<T>::pack(v0, v1);  // col and d even: 4-byte aligned
        } else {
          uint32_t pk = Mma<T>::pack(v0, v1);
          T two[2];
          memcpy(two, &pk, 4);
          o[0] = two[0];
          if (col + 1 < d) o[1] = two[1];
        }
      }
      if (a.pad_ws && out == -1 && col < d) {
        float* w = a.pad_ws + ri[rc.row].pad * 3 * a.C + pad_col0 + col;
        w[0] = v0;
        if (col + 1 < d) w[1] = v1;
      }
    }
  }
  if (!stage) return;
  __syncwarp();
  for (int idx = lane; idx < 16 * CH; idx += 32) {
    const int row = idx / CH, c = idx % CH;
    const long long out = ri[row].out;
    if (out < 0 || c * 8 >= d) continue;
    T* o = dst + out * pitch + col0 + c * 8;
    const T* s = stage + row * LD + c * 8;
    if (a.out_vec) {
      *reinterpret_cast<uint4*>(o) = *reinterpret_cast<const uint4*>(s);
    } else {
      for (int e = 0; e < 8 && c * 8 + e < d; ++e) o[e] = s[e];
    }
  }
  __syncwarp();
}

// Base-2 logits of a 16 x 16 block (n-tiles c0, c1) in place: s * scale_log2 + bias, -inf for keys
// >= N. `bias` points at the block's (row 0, column 0) in its tile (pitch n16), or is null.
__device__ __forceinline__ void logits(float (&c0)[4], float (&c1)[4], const float* bias, int n16, int col0, int N,
                                       float sl2, int lane) {
#pragma unroll
  for (int t = 0; t < 2; ++t) {
    float(&c)[4] = t ? c1 : c0;
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const frag::RC rc = frag::mma_c(lane, 2 * r);
      const int col = col0 + t * 8 + rc.col;
      float2 b = make_float2(0.f, 0.f);
      if (bias) b = *reinterpret_cast<const float2*>(bias + rc.row * n16 + t * 8 + rc.col);
      c[2 * r] = col < N ? c[2 * r] * sl2 + b.x : -INFINITY;
      c[2 * r + 1] = col + 1 < N ? c[2 * r + 1] * sl2 + b.y : -INFINITY;
    }
  }
}

// The three kernels share one loop shape. A CTA owns 64-row blocks of one side ("own": queries in
// the forward and the query-side backward, keys in the key-side backward; warp w works on rows
// 16 w..16 w+15 of a block) and sweeps 64-row tiles of the other side. Resident mode: all rows
// of both sides were copied once up front, the CTA walks all own blocks, and tile t is rows 64 t
// of the other side's array. Streaming mode: one own block per CTA (blockIdx.y), other tiles
// double-buffered in slots 0 / 1; step j prefetches step j + 1's tile while computing on its own.

// Waits for step j's tile and issues step j + 1's (streaming); issue(j + 1) is a no-op resident.
template <class Issue>
__device__ __forceinline__ void step_begin(bool resident, bool first, int j, int steps, Issue&& issue) {
  if (resident) {
    if (first) {
      cp_async_wait<0>();
      __syncthreads();
    }
    return;
  }
  if (j + 1 < steps) {
    issue(j + 1);
    cp_async_commit();
    cp_async_wait<1>();
  } else {
    cp_async_wait<0>();
  }
  __syncthreads();
}

// ---- launch helpers -------------------------------------------------------------------------------

template <typename K>
inline cudaError_t launch_kernel(K kernel, dim3 grid, size_t smem, cudaStream_t stream, const KArgs& k) {
  cudaError_t err = cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem));
  if (err != cudaSuccess) return err;
  FW_LAUNCH(kernel, grid, kThreads, smem, stream)(k);
  return cudaGetLastError();
}

inline unsigned grid_x(int64_t n) { return static_cast<unsigned>(n < 0x7fffffff ? n : 0x7fffffff); }
inline unsigned blocks_of(int64_t n, int per) { return static_cast<unsigned>((n + per - 1) / per); }

// Kernel launches of one (dtype, padded head dim), instantiated in attention_mma_fwd.cu /
// attention_mma_bwd.cu; `k` is complete (tile built, workspaces set, `resident` per the plan).
template <typename T, int D>
cudaError_t launch_fwd(const KArgs& k, const MmaPlan& m, cudaStream_t stream);
template <typename T, int D>
cudaError_t launch_bwd_q(const KArgs& k, const MmaPlan& m, cudaStream_t stream);
template <typename T, int D>
cudaError_t launch_bwd_kv(const KArgs& k, const MmaPlan& m, cudaStream_t stream);

}  // namespace mma_detail
}  // namespace fastwin
