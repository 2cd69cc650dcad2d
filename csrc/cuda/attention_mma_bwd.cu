// Backward kernels of the tensor-core attention (design: attention_mma.cuh): the query side forms
// delta = rowsum(P * dP) in fp32 and dQ; the key side forms dK, dV and the slot-owned dS sums of
// the bias / mask gradient. No atomics: every output element has one writer.
#include "attention_mma.cuh"

namespace fastwin {
namespace mma_detail {

// ---- backward, query side: delta and dQ -------------------------------------------------------------

__host__ __device__ constexpr bool hold_frags(int D) { return D <= 64; }

template <int D>
struct QoState {
  uint32_t qf[hold_frags(D) ? D / 16 : 1][4];
  uint32_t of[hold_frags(D) ? D / 16 : 1][4];  // dO
  float dq[D / 8][4];
  float lse[2], delta[2];
};

// 16 keys at sK / sV (key index k0) for a warp's query tile (rows at sQt / sOt). kDq = false:
// accumulate delta = sum_j P dP; true: dS = P (dP - delta), dQ += dS K.
template <typename T, int D, bool kDq>
__device__ __forceinline__ void qo_unit(QoState<D>& st, uint32_t sQt, uint32_t sOt, uint32_t sK, uint32_t sV, int k0,
                                        const float* bias, const KArgs& a, int lane) {
  float s[2][4], dp[2][4];
#pragma unroll
  for (int i = 0; i < 4; ++i) s[0][i] = s[1][i] = dp[0][i] = dp[1][i] = 0.f;
  if constexpr (hold_frags(D)) {
    mma_abt<T, D>(s[0], s[1], st.qf, sK, lane);
    mma_abt<T, D>(dp[0], dp[1], st.of, sV, lane);
  } else {
    mma_abt_s<T, D>(s[0], s[1], sQt, sK, lane);
    mma_abt_s<T, D>(dp[0], dp[1], sOt, sV, lane);
  }
  logits(s[0], s[1], bias ? bias + k0 : nullptr, a.n16, k0, a.p.N, a.scale_log2, lane);
#pragma unroll
  for (int n = 0; n < 2; ++n) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int r = i >> 1;
      const float p = ex2(s[n][i] - st.lse[r]);
      if constexpr (kDq) {
        s[n][i] = p * (dp[n][i] - st.delta[r]);
      } else {
        st.delta[r] += p * dp[n][i];
      }
    }
  }
  if constexpr (kDq) {
    uint32_t da[4];
    c_to_a<T>(da, s[0], s[1]);
    mma_ab<T, D>(st.dq, da, sK, lane);
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, min_ctas(kBwdQ, D)) attn_bwd_q_kernel(const KArgs a) {
  FW_DYNAMIC_SMEM(smem);
  constexpr int LD = D + 8, LB = LD * 2;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  RowInfo* ri = reinterpret_cast<RowInfo*>(smem) + warp * 16;
  const bool res = a.resident;
  const int n16 = a.n16, nt = (n16 + kBlockRows - 1) / kBlockRows;
  const int own = res ? n16 : kBlockRows, oth = res ? n16 : 2 * kBlockRows;
  T* sQ = reinterpret_cast<T*>(smem + mma_plan::kRowInfoBytes);
  T* sO = sQ + own * LD;
  T* sK = sO + own * LD;
  T* sV = sK + oth * LD;
  T* dqkv = static_cast<T*>(a.dqkv);
  const int64_t total = a.p.groups * a.p.heads;
  for (int64_t gh = blockIdx.x; gh < total; gh += gridDim.x) {
    const int64_t g = gh / a.p.heads;
    const int h = static_cast<int>(gh - g * a.p.heads);
    const float* bias = tile_of(a, a.tile, g, h);
    const GroupLoc L = mma_plan::group_loc(a.p, g);
    const int ob0 = res ? 0 : static_cast<int>(blockIdx.y), ob1 = res ? nt : ob0 + 1;
    load_rows<T, D, 2>(a, L, h, ob0 * kBlockRows, res ? n16 : min(kBlockRows, n16 - ob0 * kBlockRows), {kQ, kDO},
                       {sQ, sO});
    load_rows<T, D, 2>(a, L, h, 0, res ? n16 : min(kBlockRows, n16), {kK, kV}, {sK, sV});
    cp_async_commit();
    auto issue = [&](int j) {  // steps 0..nt-1: delta sweep, nt..2nt-1: dQ sweep, same tiles
      const int t = j < nt ? j : j - nt, slot = (j & 1) * kBlockRows;
      load_rows<T, D, 2>(a, L, h, t * kBlockRows, min(kBlockRows, n16 - t * kBlockRows), {kK, kV},
                         {sK + slot * LD, sV + slot * LD});
    };
    for (int ob = ob0; ob < ob1; ++ob) {
      const int q0 = ob * kBlockRows + warp * 16;
      const bool active = q0 < n16;
      const int trow = (res ? ob * kBlockRows : 0) + warp * 16;
      const uint32_t sQt = smem_u32(sQ + trow * LD), sOt = smem_u32(sO + trow * LD);
      const float* brow = bias ? bias + int64_t(q0) * n16 : nullptr;
      QoState<D> st;
      for (int j = 0; j < 2 * nt; ++j) {
        step_begin(res, ob == ob0 && j == 0, j, 2 * nt, issue);
        const int t = j < nt ? j : j - nt;
        const uint32_t kbase = smem_u32(sK + (res ? t : j & 1) * kBlockRows * LD);
        const uint32_t vbase = smem_u32(sV + (res ? t : j & 1) * kBlockRows * LD);
        if (active) {
          if (j == 0) {
            if constexpr (hold_frags(D)) {
              load_a_frags<D>(st.qf, sQt, lane);
              load_a_frags<D>(st.of, sOt, lane);
            }
            const int64_t ghl = (g * a.p.heads + h) * a.p.N;
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              const int n = q0 + frag::mma_c(lane, 2 * r).row;
              st.lse[r] = n < a.p.N ? a.lse[ghl + n] : INFINITY;
              st.delta[r] = 0.f;
            }
            zero_acc<D>(st.dq);
          }
          const int rows = min(kBlockRows, n16 - t * kBlockRows);
          for (int k = 0; k < rows; k += 16) {
            if (j < nt)
              qo_unit<T, D, false>(st, sQt, sOt, kbase + k * LB, vbase + k * LB, t * kBlockRows + k, brow, a, lane);
            else
              qo_unit<T, D, true>(st, sQt, sOt, kbase + k * LB, vbase + k * LB, t * kBlockRows + k, brow, a, lane);
          }
          if (j == nt - 1) {  // delta complete: reduce over the quad, publish for the key side
#pragma unroll
            for (int r = 0; r < 2; ++r) {
              st.delta[r] = quad_sum(st.delta[r]);
              const int n = q0 + frag::mma_c(lane, 2 * r).row;
              if (frag::tid_in_group(lane) == 0) a.delta[(g * a.p.heads + h) * n16 + n] = st.delta[r];
            }
          }
        }
        if (!res) __syncthreads();
      }
      if (active) {
        fill_row_info(a, ri, L, q0);
        write_tile<T, D>(a, st.dq, a.scale, sQ + trow * LD, ri, dqkv, 3 * a.C, int64_t(h) * a.p.d,
                         int64_t(h) * a.p.d, lane);
      }
    }
    __syncthreads();
  }
}

// ---- backward, key side: dK, dV, bias / mask gradient accumulation ---------------------------------

template <int D>
struct KoState {
  uint32_t kf[hold_frags(D) ? D / 16 : 1][4];
  uint32_t vf[hold_frags(D) ? D / 16 : 1][4];
  float dk[D / 8][4], dv[D / 8][4];
};

// 16 queries at sQu / sOu (query index q, row stats at lse / dl) for a warp's key tile (rows at
// sKt / sVt, key index k0): S^T = K Q^T, dP^T = V dO^T, P^T, dS^T, then dV += P^T dO and
// dK += dS^T Q. `biasT` / `acc` point at the key tile's row 0, column 0 (pitch n16) or are null;
// `first` stores into acc instead of adding. kMode: kBoth, or (D = 128, where dK and dV
// together do not fit the register file) kOnlyDv in a first sweep and kOnlyDk in a second.
enum KoMode : int { kBoth = 0, kOnlyDv = 1, kOnlyDk = 2 };
__host__ __device__ constexpr bool split_kv(int D) { return D > 96; }

template <typename T, int D, int kMode>
__device__ __forceinline__ void ko_unit(KoState<D>& st, uint32_t sKt, uint32_t sVt, uint32_t sQu, uint32_t sOu,
                                        const float* lse, const float* dl, int q, int k0, const float* biasT,
                                        float* acc, bool first, const KArgs& a, int lane) {
  float s[2][4], dp[2][4];
#pragma unroll
  for (int i = 0; i < 4; ++i) s[0][i] = s[1][i] = dp[0][i] = dp[1][i] = 0.f;
  if constexpr (hold_frags(D)) {
    mma_abt<T, D>(s[0], s[1], st.kf, sQu, lane);
    mma_abt<T, D>(dp[0], dp[1], st.vf, sOu, lane);
  } else {
    mma_abt_s<T, D>(s[0], s[1], sKt, sQu, lane);
    if (kMode != kOnlyDv) mma_abt_s<T, D>(dp[0], dp[1], sVt, sOu, lane);
  }
#pragma unroll
  for (int n = 0; n < 2; ++n) {
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      const frag::RC rc = frag::mma_c(lane, 2 * r);  // row = key, col = query
      const int qc = n * 8 + rc.col;
      const bool key_ok = k0 + rc.row < a.p.N;  // keys >= N: P = 0 (their rows are never written)
      float2 b = make_float2(0.f, 0.f);
      if (biasT) b = *reinterpret_cast<const float2*>(biasT + rc.row * a.n16 + q + qc);
      const float2 l2 = *reinterpret_cast<const float2*>(lse + qc);
      const float2 d2 = *reinterpret_cast<const float2*>(dl + qc);
      const float p0 = key_ok ? ex2(s[n][2 * r] * a.scale_log2 + b.x - l2.x) : 0.f;
      const float p1 = key_ok ? ex2(s[n][2 * r + 1] * a.scale_log2 + b.y - l2.y) : 0.f;
      s[n][2 * r] = p0;
      s[n][2 * r + 1] = p1;
      dp[n][2 * r] = p0 * (dp[n][2 * r] - d2.x);
      dp[n][2 * r + 1] = p1 * (dp[n][2 * r + 1] - d2.y);
      if (kMode != kOnlyDv && acc) {  // this thread owns these two elements in every group of the slot
        float2* w = reinterpret_cast<float2*>(acc + rc.row * a.n16 + q + qc);
        float2 v = make_float2(dp[n][2 * r], dp[n][2 * r + 1]);
        if (!first) {
          const float2 old = *w;
          v.x += old.x;
          v.y += old.y;
        }
        *w = v;
      }
    }
  }
  if (kMode != kOnlyDk) {
    uint32_t pa[4];
    c_to_a<T>(pa, s[0], s[1]);
    mma_ab<T, D>(st.dv, pa, sOu, lane);  // dV += P^T dO
  }
  if (kMode != kOnlyDv) {
    uint32_t da[4];
    c_to_a<T>(da, dp[0], dp[1]);
    mma_ab<T, D>(st.dk, da, sQu, lane);  // dK += dS^T Q
  }
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, min_ctas(kBwdKV, D)) attn_bwd_kv_kernel(const KArgs a) {
  FW_DYNAMIC_SMEM(smem);
  constexpr int LD = D + 8, LB = LD * 2;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  RowInfo* ri = reinterpret_cast<RowInfo*>(smem) + warp * 16;
  const bool res = a.resident;
  const int n16 = a.n16, nt = (n16 + kBlockRows - 1) / kBlockRows;
  const int own = res ? n16 : kBlockRows, oth = res ? n16 : 2 * kBlockRows;
  T* sK = reinterpret_cast<T*>(smem + mma_plan::kRowInfoBytes);
  T* sV = sK + own * LD;
  T* sQ = sV + own * LD;
  T* sO = sQ + oth * LD;
  float* s_lse = reinterpret_cast<float*>(sO + oth * LD);
  float* s_delta = s_lse + oth;
  float* acc_s = s_delta + oth;  // resident with acc_smem: [n16][n16]
  T* dqkv = static_cast<T*>(a.dqkv);
  const int64_t total = a.slots * a.p.heads;
  const size_t acc_elems = size_t(n16) * n16;
  for (int64_t sh = blockIdx.x; sh < total; sh += gridDim.x) {
    const int64_t slot = sh / a.p.heads;
    const int h = static_cast<int>(sh - slot * a.p.heads);
    float* acc_g = a.acc ? a.acc + (slot * a.p.heads + h) * acc_elems : nullptr;
    float* acc = a.acc_smem ? acc_s : acc_g;
    const int64_t n_i = mma_plan::slot_steps(slot, a.per_slot, a.period, a.per_period);
    const int ob0 = res ? 0 : static_cast<int>(blockIdx.y), ob1 = res ? nt : ob0 + 1;
    for (int64_t i = 0; i < n_i; ++i) {
      const int64_t g = mma_plan::slot_group(slot, i, a.per_slot, a.period);
      const float* biasT = tile_of(a, a.tileT, g, h);
      const GroupLoc L = mma_plan::group_loc(a.p, g);
      load_rows<T, D, 2>(a, L, h, ob0 * kBlockRows, res ? n16 : min(kBlockRows, n16 - ob0 * kBlockRows), {kK, kV},
                         {sK, sV});
      load_rows<T, D, 2>(a, L, h, 0, res ? n16 : min(kBlockRows, n16), {kQ, kDO}, {sQ, sO});
      cp_async_commit();
      load_row_stats(a, g, h, 0, res ? n16 : min(kBlockRows, n16), s_lse, s_delta);
      auto issue = [&](int j) {  // split: steps nt..2nt-1 sweep the same tiles again
        const int t = j < nt ? j : j - nt, slot_ = (j & 1) * kBlockRows;
        const int rows = min(kBlockRows, n16 - t * kBlockRows);
        load_rows<T, D, 2>(a, L, h, t * kBlockRows, rows, {kQ, kDO}, {sQ + slot_ * LD, sO + slot_ * LD});
        load_row_stats(a, g, h, t * kBlockRows, rows, s_lse + slot_, s_delta + slot_);
      };
      for (int ob = ob0; ob < ob1; ++ob) {
        const int k0 = ob * kBlockRows + warp * 16;
        const bool active = k0 < n16;
        const int trow = (res ? ob * kBlockRows : 0) + warp * 16;
        const uint32_t sKt = smem_u32(sK + trow * LD), sVt = smem_u32(sV + trow * LD);
        const float* brow = biasT ? biasT + int64_t(k0) * n16 : nullptr;
        float* arow = acc ? acc + int64_t(k0) * n16 : nullptr;
        KoState<D> st;
        const int steps = split_kv(D) ? 2 * nt : nt;  // split: steps 0..nt-1 dV, nt..2nt-1 dK
        const int64_t hd = int64_t(h) * a.p.d;
        for (int j = 0; j < steps; ++j) {
          step_begin(res, ob == ob0 && j == 0, j, steps, issue);
          const int t = j < nt ? j : j - nt;
          const int row = (res ? t : j & 1) * kBlockRows;
          if (active) {
            if (j == 0) {
              if constexpr (hold_frags(D)) {
                load_a_frags<D>(st.kf, sKt, lane);
                load_a_frags<D>(st.vf, sVt, lane);
              }
              fill_row_info(a, ri, L, k0);
              zero_acc<D>(st.dv);
              if constexpr (!split_kv(D)) zero_acc<D>(st.dk);
            }
            if (split_kv(D) && j == nt) zero_acc<D>(st.dk);
            const int rows = min(kBlockRows, n16 - t * kBlockRows);
            const uint32_t qbase = smem_u32(sQ + row * LD), obase = smem_u32(sO + row * LD);
            for (int q = 0; q < rows; q += 16) {
              const uint32_t qu = qbase + q * LB, ou = obase + q * LB;
              const float *lu = s_lse + row + q, *du = s_delta + row + q;
              const int qi = t * kBlockRows + q;
              if constexpr (!split_kv(D))
                ko_unit<T, D, kBoth>(st, sKt, sVt, qu, ou, lu, du, qi, k0, brow, arow, i == 0, a, lane);
              else if (j < nt)
                ko_unit<T, D, kOnlyDv>(st, sKt, sVt, qu, ou, lu, du, qi, k0, brow, arow, i == 0, a, lane);
              else
                ko_unit<T, D, kOnlyDk>(st, sKt, sVt, qu, ou, lu, du, qi, k0, brow, arow, i == 0, a, lane);
            }
            // split: dV is final after the first sweep; K and V rows are still in use, no staging
            if (split_kv(D) && j == nt - 1)
              write_tile<T, D>(a, st.dv, 1.f, nullptr, ri, dqkv, 3 * a.C, 2 * a.C + hd, 2 * a.C + hd, lane);
          }
          if (!res) __syncthreads();
        }
        if (active) {
          write_tile<T, D>(a, st.dk, a.scale, sK + trow * LD, ri, dqkv, 3 * a.C, a.C + hd, a.C + hd, lane);
          if constexpr (!split_kv(D))
            write_tile<T, D>(a, st.dv, 1.f, sV + trow * LD, ri, dqkv, 3 * a.C, 2 * a.C + hd, 2 * a.C + hd, lane);
        }
      }
      __syncthreads();  // shared memory is refilled for the next group
    }
    if (a.acc_smem && acc_g) {  // each element was owned by one thread; copy the sums out
      for (size_t e = threadIdx.x; e < acc_elems; e += kThreads) acc_g[e] = acc_s[e];
      __syncthreads();
    }
  }
}

template <typename T, int D>
cudaError_t launch_bwd_q(const KArgs& k, const MmaPlan& m, cudaStream_t stream) {
  const dim3 grid(grid_x(k.p.groups * k.p.heads), k.resident ? 1 : blocks_of(m.n16, kBlockRows));
  return launch_kernel(attn_bwd_q_kernel<T, D>, grid, mma_plan::qo_smem(k.resident, m.n16, D), stream, k);
}

template <typename T, int D>
cudaError_t launch_bwd_kv(const KArgs& k, const MmaPlan& m, cudaStream_t stream) {
  const dim3 grid(grid_x(m.slots * k.p.heads), k.resident ? 1 : blocks_of(m.n16, kBlockRows));
  return launch_kernel(attn_bwd_kv_kernel<T, D>, grid, mma_plan::ko_smem(k.resident, m.n16, D, k.acc_smem), stream,
                       k);
}

template cudaError_t launch_bwd_q<__half, 32>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_bwd_q<__half, 64>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_bwd_q<__half, 96>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_bwd_q<__half, 128>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_bwd_q<__nv_bfloat16, 32>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_bwd_q<__nv_bfloat16, 64>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_bwd_q<__nv_bfloat16, 96>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_bwd_q<__nv_bfloat16, 128>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_bwd_kv<__half, 32>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_bwd_kv<__half, 64>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_bwd_kv<__half, 96>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_bwd_kv<__half, 128>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_bwd_kv<__nv_bfloat16, 32>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_bwd_kv<__nv_bfloat16, 64>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_bwd_kv<__nv_bfloat16, 96>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_bwd_kv<__nv_bfloat16, 128>(const KArgs&, const MmaPlan&, cudaStream_t);

}  // namespace mma_detail
}  // namespace fastwin
