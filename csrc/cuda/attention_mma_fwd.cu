// Forward kernel of the tensor-core attention (design: attention_mma.cuh): per query tile, online
// base-2 softmax over 64-key chunks, S = Q K^T and O += P V on mma.m16n8k16, P reused from the
// accumulators as the A operand; writes O and the base-2 log-sum-exp.
#include "attention_mma.cuh"

namespace fastwin {
namespace mma_detail {

// ---- forward ------------------------------------------------------------------------------------

template <int D>
struct FwdState {
  float o[D / 8][4];
  float m[2], l[2];  // rows groupID and groupID + 8
};

__host__ __device__ constexpr int fwd_chunk(int D) { return D <= 64 ? 64 : 32; }

// Keys [k0, k0 + 16 units) (rows at sK / sV) for a warp's query tile; online softmax update.
template <typename T, int D>
__device__ __forceinline__ void fwd_step(FwdState<D>& st, const uint32_t (&qf)[D / 16][4], uint32_t sK, uint32_t sV,
                                         int k0, int units, const float* bias, const KArgs& a, int lane) {
  constexpr int KC = fwd_chunk(D), NT = KC / 8, LB = (D + 8) * 2;
  float s[NT][4];
#pragma unroll
  for (int u = 0; u < KC / 16; ++u) {
#pragma unroll
    for (int i = 0; i < 4; ++i) s[2 * u][i] = s[2 * u + 1][i] = 0.f;
    if (u < units) {
      mma_abt<T, D>(s[2 * u], s[2 * u + 1], qf, sK + u * 16 * LB, lane);
      logits(s[2 * u], s[2 * u + 1], bias ? bias + k0 + u * 16 : nullptr, a.n16, k0 + u * 16, a.p.N, a.scale_log2,
             lane);
    } else {
#pragma unroll
      for (int i = 0; i < 4; ++i) s[2 * u][i] = s[2 * u + 1][i] = -INFINITY;
    }
  }
  float mu[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float mx = -INFINITY;
#pragma unroll
    for (int n = 0; n < NT; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * r], s[n][2 * r + 1]));
    const float m_new = fmaxf(st.m[r], quad_max(mx));
    mu[r] = m_new == -INFINITY ? 0.f : m_new;  // an all -inf row so far: keep p = 0, no NaN
    const float alpha = ex2(st.m[r] - mu[r]);
    st.m[r] = m_new;
    st.l[r] *= alpha;
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      st.o[j][2 * r] *= alpha;
      st.o[j][2 * r + 1] *= alpha;
    }
  }
#pragma unroll
  for (int n = 0; n < NT; ++n) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      s[n][i] = ex2(s[n][i] - mu[i >> 1]);
      st.l[i >> 1] += s[n][i];
    }
  }
#pragma unroll
  for (int u = 0; u < KC / 16; ++u) {
    if (u < units) {
      uint32_t pa[4];
      c_to_a<T>(pa, s[2 * u], s[2 * u + 1]);
      mma_ab<T, D>(st.o, pa, sV + u * 16 * LB, lane);
    }
  }
}

template <typename T, int D>
__device__ __forceinline__ void fwd_finish(const KArgs& a, FwdState<D>& st, int64_t g, int h, int q0, T* stage,
                                           const RowInfo* ri, int lane) {
  const int64_t gh = g * a.p.heads + h;
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const float l = quad_sum(st.l[r]);
    const float inv = l == 0.f ? 0.f : 1.f / l;  // only an all -inf row has l = 0; a NaN l stays NaN
#pragma unroll
    for (int j = 0; j < D / 8; ++j) {
      st.o[j][2 * r] *= inv;
      st.o[j][2 * r + 1] *= inv;
    }
    const int n = q0 + frag::mma_c(lane, 2 * r).row;
    if (frag::tid_in_group(lane) == 0 && n < a.p.N) a.lse[gh * a.p.N + n] = l == 0.f ? INFINITY : st.m[r] + __log2f(l);
  }
  write_tile<T, D>(a, st.o, 1.f, stage, ri, static_cast<T*>(a.out), a.C, int64_t(h) * a.p.d, 0, lane);
}

template <typename T, int D>
__global__ void __launch_bounds__(kThreads, min_ctas(kFwd, D)) attn_fwd_mma_kernel(const KArgs a) {
  FW_DYNAMIC_SMEM(smem);
  constexpr int LD = D + 8, KC = fwd_chunk(D);
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  RowInfo* ri = reinterpret_cast<RowInfo*>(smem) + warp * 16;
  const bool res = a.resident;
  const int n16 = a.n16, nt = (n16 + kBlockRows - 1) / kBlockRows;
  T* sQ = reinterpret_cast<T*>(smem + mma_plan::kRowInfoBytes);
  T* sK = sQ + (res ? n16 : kBlockRows) * LD;
  T* sV = sK + (res ? n16 : 2 * kBlockRows) * LD;
  const int64_t total = a.p.groups * a.p.heads;
  for (int64_t gh = blockIdx.x; gh < total; gh += gridDim.x) {
    const int64_t g = gh / a.p.heads;
    const int h = static_cast<int>(gh - g * a.p.heads);
    const float* bias = tile_of(a, a.tile, g, h);
    const GroupLoc L = mma_plan::group_loc(a.p, g);
    const int ob0 = res ? 0 : static_cast<int>(blockIdx.y), ob1 = res ? nt : ob0 + 1;
    load_rows<T, D, 1>(a, L, h, ob0 * kBlockRows, res ? n16 : min(kBlockRows, n16 - ob0 * kBlockRows), {kQ}, {sQ});
    load_rows<T, D, 2>(a, L, h, 0, res ? n16 : min(kBlockRows, n16), {kK, kV}, {sK, sV});
    cp_async_commit();
    auto issue = [&](int j) {
      const int slot = (j & 1) * kBlockRows;
      load_rows<T, D, 2>(a, L, h, j * kBlockRows, min(kBlockRows, n16 - j * kBlockRows), {kK, kV},
                         {sK + slot * LD, sV + slot * LD});
    };
    for (int ob = ob0; ob < ob1; ++ob) {
      const int q0 = ob * kBlockRows + warp * 16;
      const bool active = q0 < n16;
      T* sQt = sQ + ((res ? ob * kBlockRows : 0) + warp * 16) * LD;
      const float* brow = bias ? bias + int64_t(q0) * n16 : nullptr;
      FwdState<D> st;
      zero_acc<D>(st.o);
      st.m[0] = st.m[1] = -INFINITY;
      st.l[0] = st.l[1] = 0.f;
      uint32_t qf[D / 16][4];
      for (int j = 0; j < nt; ++j) {
        step_begin(res, ob == ob0 && j == 0, j, nt, issue);
        const int row = (res ? j : j & 1) * kBlockRows;
        if (active) {
          if (j == 0) load_a_frags<D>(qf, smem_u32(sQt), lane);
          const int rows = min(kBlockRows, n16 - j * kBlockRows);
          for (int k = 0; k < rows; k += KC)
            fwd_step<T, D>(st, qf, smem_u32(sK + (row + k) * LD), smem_u32(sV + (row + k) * LD), j * kBlockRows + k,
                           min(KC, rows - k) / 16, brow, a, lane);
        }
        if (!res) __syncthreads();  // the next step refills this slot
      }
      if (active) {
        fill_row_info(a, ri, L, q0);
        fwd_finish<T, D>(a, st, g, h, q0, sQt, ri, lane);
      }
    }
    __syncthreads();  // shared memory is refilled for the next (group, head)
  }
}

template <typename T, int D>
cudaError_t launch_fwd(const KArgs& k, const MmaPlan& m, cudaStream_t stream) {
  const dim3 grid(grid_x(k.p.groups * k.p.heads), k.resident ? 1 : blocks_of(m.n16, kBlockRows));
  return launch_kernel(attn_fwd_mma_kernel<T, D>, grid, mma_plan::fwd_smem(k.resident, m.n16, D), stream, k);
}

template cudaError_t launch_fwd<__half, 32>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_fwd<__half, 64>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_fwd<__half, 96>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_fwd<__half, 128>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_fwd<__nv_bfloat16, 32>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_fwd<__nv_bfloat16, 64>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_fwd<__nv_bfloat16, 96>(const KArgs&, const MmaPlan&, cudaStream_t);
template cudaError_t launch_fwd<__nv_bfloat16, 128>(const KArgs&, const MmaPlan&, cudaStream_t);

}  // namespace mma_detail
}  // namespace fastwin
