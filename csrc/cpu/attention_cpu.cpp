// CPU kernels of the fused attention ops (shifted-window, given-window, global), fwd and bwd.
//
// Work is split into (group, head) units with at::parallel_for. A unit gathers its q/k/v straight
// from the strided qkv tensor (shift, padding and partition are only index arithmetic, see
// window_index.h) into padded fp32 (fp64 for double) buffers, computes attention in query-row
// blocks with the register-tiled kernels of cpu_math.h, and scatters the result to un-shifted
// positions. The backward pass recomputes P from the saved logsumexp (and the softmax correction
// rowsum(dO * O) as rowsum(P * dP) in the accumulation type); bias-table, mask and
// qkv_bias gradients are reduced per static chunk of units and summed in chunk order, so results
// are deterministic for a given thread count.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <array>
#include <memory>
#include <vector>

#include "../common/attn_args.h"
#include "cpu_kernels.h"
#include "cpu_math.h"

#if defined(__x86_64__) || defined(_M_X64)
#include <xmmintrin.h>
#endif

namespace fastwin {
namespace {

// Flush-to-zero / denormals-are-zero for the duration of one worker's chunk, restored after.
// The shift mask's -100 logits give probabilities around e^-100 ~ 1e-44, i.e. fp32 denormals, and
// every FMA touching one takes a microcode assist: shifted blocks ran ~3x slower than unshifted ones.
// Treating them as 0 changes results by < 1e-37 relative.
struct DenormalsAreZero {
#if defined(__x86_64__) || defined(_M_X64)
  unsigned saved;
  DenormalsAreZero() : saved(_mm_getcsr()) { _mm_setcsr(saved | 0x8040u); }  // FTZ (bit 15) | DAZ (bit 6)
  ~DenormalsAreZero() { _mm_setcsr(saved); }
#endif
};

using cpu::round_up;

// Everything a unit needs, shared read-only across threads.
template <typename scalar_t, typename acc_t>
struct Ctx {
  AttnParams p;
  const scalar_t* qkv;
  const scalar_t* qkv_bias;  // [3C] contiguous or null
  const acc_t* bias;         // [heads, N, N] gathered table, or null
  const acc_t* mask;         // [mask_windows, N, N], or null
  int64_t Np, dp, BM;        // padded tokens / head dim, query-row block
  int64_t C() const { return int64_t(p.heads) * p.d; }
};

template <typename scalar_t, typename acc_t>
Ctx<scalar_t, acc_t> make_ctx(const AttnParams& p, const at::Tensor& qkv, const at::Tensor& qkv_bias,
                              const at::Tensor& bias, const at::Tensor& mask) {
  Ctx<scalar_t, acc_t> c;
  c.p = p;
  c.qkv = qkv.data_ptr<scalar_t>();
  c.qkv_bias = qkv_bias.defined() ? qkv_bias.data_ptr<scalar_t>() : nullptr;
  c.bias = bias.defined() ? bias.data_ptr<acc_t>() : nullptr;
  c.mask = mask.defined() ? mask.data_ptr<acc_t>() : nullptr;
  c.Np = round_up(p.N, cpu::kTileN);
  c.dp = round_up(p.d, cpu::kTileN);
  // Windows fit whole; long sequences are processed 64 query rows at a time to bound memory.
  c.BM = c.Np <= 256 ? c.Np : 64;
  return c;
}

// Per-thread scratch, zero-initialized once so the padding of every buffer stays zero.
template <typename acc_t>
struct Scratch {
  std::vector<acc_t> Q, K, Kt, V, Vt, S, O, dO, dP, dK, dV, lse;
  std::vector<int64_t> in_off, out_row;
  std::vector<int> region;
  bool one_region = true;  // every token of the group in the same shift region: no shift mask
  int64_t tokens_of = -1;  // the group whose token table (in_off, out_row, region) is loaded
  Scratch(int64_t Np, int64_t dp, int64_t BM, int64_t d, bool bwd)
      : Q(Np * dp), K(Np * dp), Kt(d * Np), V(Np * dp), Vt(d * Np), S(BM * Np), O(BM * dp), lse(Np),
        in_off(Np), out_row(Np), region(Np) {
    if (bwd) {
      dO.assign(Np * dp, 0);
      dP.assign(BM * Np, 0);
      dK.assign(Np * dp, 0);
      dV.assign(Np * dp, 0);
    }
  }
};

// This thread's scratch for a call with these sizes, kept for the next call with the same ones. A fresh
// one per call was ~0.5 MB of zeroed vectors at UniFormer-S's 196 tokens: each call re-faulted or at least
// re-zeroed cold memory, and the attention took 4.6 ms per forward in the model against 3.3 ms alone.
// Reuse keeps the invariant the buffers rely on: with the same N, Np, d, dp and BM every call writes the
// same entries (rows < N of Q/K/V, columns < N of Kt), so the padding is still the zeros of the first one.
template <typename acc_t>
Scratch<acc_t>& thread_scratch(int64_t Np, int64_t dp, int64_t BM, int64_t d, int64_t N, bool bwd) {
  thread_local std::unique_ptr<Scratch<acc_t>> kept;
  thread_local std::array<int64_t, 6> sizes{};
  const std::array<int64_t, 6> want{Np, dp, BM, d, N, int64_t(bwd)};
  if (!kept || sizes != want) {
    kept.reset();  // first: never two at once
    kept = std::make_unique<Scratch<acc_t>>(Np, dp, BM, d, bwd);
    sizes = want;
  }
  kept->tokens_of = -1;  // the token table belongs to the last call's qkv
  return *kept;
}

// Locate the tokens of group g and load head h's q (pre-scaled), k, v and k^T (and v^T, which
// only the backward pass uses).
template <typename scalar_t, typename acc_t>
void gather(const Ctx<scalar_t, acc_t>& c, Scratch<acc_t>& s, int64_t g, int h, bool want_vt) {
  const AttnParams& p = c.p;
  const int64_t C = c.C(), Np = c.Np, dp = c.dp;
  const acc_t scale = static_cast<acc_t>(p.scale);
  const int64_t sc = p.s_chan;
  if (s.tokens_of != g) {
    // Units are (group, head) with the head fastest, so a worker meets each group heads times in a
    // row: the integer divisions of token_offset are paid once per group, not once per unit.
    for (int n = 0; n < p.N; ++n) s.in_off[n] = token_offset(p, g, n, &s.out_row[n], &s.region[n]);
    s.one_region = std::all_of(s.region.begin(), s.region.begin() + p.N, [&](int r) { return r == s.region[0]; });
    s.tokens_of = g;
  }
  for (int n = 0; n < p.N; ++n) {
    const int64_t off = s.in_off[n];
    for (int t = 0; t < 3; ++t) {
      const int64_t ch0 = t * C + int64_t(h) * p.d;
      // The forward pass only needs k^T: k goes straight into its column of Kt (L1-resident).
      if (t == 1 && !want_vt) {
        acc_t* col = &s.Kt[n];
        if (off >= 0) {
          const scalar_t* src = c.qkv + off + ch0 * sc;
          for (int e = 0; e < p.d; ++e) col[e * Np] = static_cast<acc_t>(src[e * sc]);
        } else {
          for (int e = 0; e < p.d; ++e) col[e * Np] = c.qkv_bias ? static_cast<acc_t>(c.qkv_bias[ch0 + e]) : acc_t(0);
        }
        continue;
      }
      acc_t* dst = t == 0 ? &s.Q[n * dp] : (t == 1 ? &s.K[n * dp] : &s.V[n * dp]);
      const acc_t mul = t == 0 ? scale : acc_t(1);
      if (off >= 0) {
        const scalar_t* src = c.qkv + off + ch0 * sc;
        if (sc == 1) {  // the usual Linear output: unit stride, so the conversion loop vectorizes
          for (int e = 0; e < p.d; ++e) dst[e] = static_cast<acc_t>(src[e]) * mul;
        } else {
          for (int e = 0; e < p.d; ++e) dst[e] = static_cast<acc_t>(src[e * sc]) * mul;
        }
      } else {
        for (int e = 0; e < p.d; ++e) dst[e] = (c.qkv_bias ? static_cast<acc_t>(c.qkv_bias[ch0 + e]) : acc_t(0)) * mul;
      }
    }
  }
  if (want_vt) {
    for (int e = 0; e < p.d; ++e) {
      for (int n = 0; n < p.N; ++n) s.Kt[e * Np + n] = s.K[n * dp + e];
      for (int n = 0; n < p.N; ++n) s.Vt[e * Np + n] = s.V[n * dp + e];
    }
  }
}

// Logits of query rows [r0, r0 + rows) into s.S: (scale q) k^T + bias + mask.
template <typename scalar_t, typename acc_t>
void logits(const Ctx<scalar_t, acc_t>& c, Scratch<acc_t>& s, int64_t g, int h, int64_t r0, int64_t rows) {
  const AttnParams& p = c.p;
  const int64_t Np = c.Np, N = p.N;
  cpu::mm(round_up(rows, cpu::kTileM), Np, p.d, &s.Q[r0 * c.dp], c.dp, 1, s.Kt.data(), Np, s.S.data(), Np, acc_t(1),
          false);
  const acc_t* bias = c.bias ? c.bias + int64_t(h) * N * N : nullptr;
  const acc_t* mask = c.mask ? c.mask + (g % p.mask_windows) * N * N : nullptr;
  // Only windows on the last row / column of the shifted grid straddle regions (15 of 64 at 56x56).
  const bool shifted = p.kind == kShifted && (p.geom.sh > 0 || p.geom.sw > 0) && !s.one_region;
  for (int64_t i = 0; i < rows; ++i) {
    acc_t* row = &s.S[i * Np];
    const int64_t qi = r0 + i;
    if (bias)
      for (int64_t j = 0; j < N; ++j) row[j] += bias[qi * N + j];
    if (mask)
      for (int64_t j = 0; j < N; ++j) row[j] += mask[qi * N + j];
    if (shifted) {
      const int rq = s.region[qi];
      for (int64_t j = 0; j < N; ++j) row[j] += s.region[j] != rq ? acc_t(kShiftMaskValue) : acc_t(0);
    }
  }
}

template <typename scalar_t, typename acc_t>
void forward_unit(const Ctx<scalar_t, acc_t>& c, Scratch<acc_t>& s, int64_t u, scalar_t* out, acc_t* lse) {
  const AttnParams& p = c.p;
  const int64_t g = u / p.heads;
  const int h = static_cast<int>(u % p.heads);
  const int64_t C = c.C(), Np = c.Np, dp = c.dp;
  gather(c, s, g, h, false);
  for (int64_t r0 = 0; r0 < p.N; r0 += c.BM) {
    const int64_t rows = std::min<int64_t>(c.BM, p.N - r0);
    logits(c, s, g, h, r0, rows);
    acc_t* l = lse + u * p.N + r0;
    cpu::softmax_rows(s.S.data(), rows, p.N, Np, l);
    cpu::mm(round_up(rows, cpu::kTileM), dp, p.N, s.S.data(), Np, 1, s.V.data(), dp, s.O.data(), dp, acc_t(1), false);
    for (int64_t i = 0; i < rows; ++i) {
      const int64_t orow = s.out_row[r0 + i];
      if (orow < 0) continue;  // padded token: output is cropped away
      scalar_t* dst = out + orow * C + int64_t(h) * p.d;
      for (int e = 0; e < p.d; ++e) dst[e] = static_cast<scalar_t>(s.O[i * dp + e]);
    }
  }
}

// Gradient accumulators of one static chunk of units.
template <typename acc_t>
struct Partial {
  std::vector<acc_t> dbias, dmask, dqkv_bias;
};

template <typename scalar_t, typename acc_t>
void backward_unit(const Ctx<scalar_t, acc_t>& c, Scratch<acc_t>& s, Partial<acc_t>& part, int64_t u,
                   const scalar_t* grad_out, const acc_t* lse, scalar_t* dqkv) {
  const AttnParams& p = c.p;
  const int64_t g = u / p.heads;
  const int h = static_cast<int>(u % p.heads);
  const int64_t C = c.C(), Np = c.Np, dp = c.dp, N = p.N;
  gather(c, s, g, h, true);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t orow = s.out_row[n];
    acc_t* dst = &s.dO[n * dp];
    if (orow < 0) {
      std::fill(dst, dst + p.d, acc_t(0));
      continue;
    }
    const scalar_t* src = grad_out + orow * C + int64_t(h) * p.d;
    for (int e = 0; e < p.d; ++e) dst[e] = static_cast<acc_t>(src[e]);
  }
  std::fill(s.dK.begin(), s.dK.end(), acc_t(0));
  std::fill(s.dV.begin(), s.dV.end(), acc_t(0));
  const int64_t ld = 3 * C;
  auto emit = [&](int t, int64_t n, const acc_t* grad) {  // one token's dq/dk/dv row
    const int64_t orow = s.out_row[n];
    const int64_t ch0 = t * C + int64_t(h) * p.d;
    if (orow >= 0) {
      scalar_t* dst = dqkv + orow * ld + ch0;
      for (int e = 0; e < p.d; ++e) dst[e] = static_cast<scalar_t>(grad[e]);
    } else if (!part.dqkv_bias.empty()) {
      for (int e = 0; e < p.d; ++e) part.dqkv_bias[ch0 + e] += grad[e];
    }
  };
  for (int64_t r0 = 0; r0 < N; r0 += c.BM) {
    const int64_t rows = std::min<int64_t>(c.BM, N - r0), rows_p = round_up(rows, cpu::kTileM);
    logits(c, s, g, h, r0, rows);
    cpu::exp_rows(s.S.data(), rows, N, Np, lse + u * N + r0);  // S := P
    std::fill(s.S.begin() + rows * Np, s.S.begin() + rows_p * Np, acc_t(0));
    const acc_t* dO = &s.dO[r0 * dp];
    cpu::mm(Np, dp, rows_p, s.S.data(), 1, Np, dO, dp, s.dV.data(), dp, acc_t(1), true);   // dV += P^T dO
    cpu::mm(rows_p, Np, p.d, dO, dp, 1, s.Vt.data(), Np, s.dP.data(), Np, acc_t(1), false);  // dP = dO V^T
    // dS = P * (dP - D) with D_i = sum_j P_ij dP_ij, which equals rowsum(dO * O) but is formed here in
    // acc_t: the saved O is rounded to the input dtype, and with a saturated fp16/bf16 softmax that
    // rounding dominated dS (issue #12 item 8). P is zero on padded columns and rows, so is dS.
    for (int64_t i = 0; i < rows_p; ++i) {
      acc_t* dp_row = &s.dP[i * Np];
      const acc_t* p_row = &s.S[i * Np];
      acc_t Di = 0;
      for (int64_t j = 0; j < Np; ++j) Di += p_row[j] * dp_row[j];
      for (int64_t j = 0; j < Np; ++j) dp_row[j] = p_row[j] * (dp_row[j] - Di);
    }
    if (!part.dbias.empty() || !part.dmask.empty()) {
      for (int64_t i = 0; i < rows; ++i) {
        const acc_t* ds = &s.dP[i * Np];
        if (!part.dbias.empty()) {
          acc_t* db = &part.dbias[(int64_t(h) * N + r0 + i) * N];
          for (int64_t j = 0; j < N; ++j) db[j] += ds[j];
        }
        if (!part.dmask.empty()) {
          acc_t* dm = &part.dmask[((g % p.mask_windows) * N + r0 + i) * N];
          for (int64_t j = 0; j < N; ++j) dm[j] += ds[j];
        }
      }
    }
    // dQ = scale * dS K (reuses s.O as the block's dQ); dK += dS^T (scale Q).
    cpu::mm(rows_p, dp, N, s.dP.data(), Np, 1, s.K.data(), dp, s.O.data(), dp, static_cast<acc_t>(p.scale), false);
    for (int64_t i = 0; i < rows; ++i) emit(0, r0 + i, &s.O[i * dp]);
    cpu::mm(Np, dp, rows_p, s.dP.data(), 1, Np, &s.Q[r0 * dp], dp, s.dK.data(), dp, acc_t(1), true);
  }
  for (int64_t n = 0; n < N; ++n) {
    emit(1, n, &s.dK[n * dp]);
    emit(2, n, &s.dV[n * dp]);
  }
}

// The bias table gathered to [heads, N, N] once per call (never per window), in one pass over the
// output: an index tensor, index_select and a permuted copy cost ~0.1 ms a call, as much as a small
// Swin stage-4 attention.
at::Tensor dense_bias(const AttnParams& p, const at::Tensor& table, at::ScalarType acc) {
  if (!p.has_table) return at::Tensor();
  const int64_t N = p.N, heads = p.heads;
  at::Tensor t = table.to(acc).contiguous();  // [T, heads]
  at::Tensor out = at::empty({heads, N, N}, t.options());
  AT_DISPATCH_FLOATING_TYPES(acc, "fastwin_dense_bias_cpu", [&] {
    const scalar_t* src = t.data_ptr<scalar_t>();
    scalar_t* dst = out.data_ptr<scalar_t>();
    for (int64_t i = 0; i < N; ++i)
      for (int64_t j = 0; j < N; ++j) {
        const scalar_t* row = src + int64_t(rel_pos_index(int(i), int(j), p.wh, p.ww)) * heads;
        for (int64_t h = 0; h < heads; ++h) dst[(h * N + i) * N + j] = row[h];
      }
  });
  return out;
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> CpuKernels::attn_forward(const AttnParams& p, const at::Tensor& qkv,
                                                            const at::Tensor& table, const at::Tensor& qkv_bias,
                                                            const at::Tensor& mask) {
  const auto acc = stat_dtype(qkv);
  at::Tensor out = at::empty(out_shape(qkv), qkv.options());
  at::Tensor lse = at::empty({p.groups, p.heads, p.N}, qkv.options().dtype(acc));
  if (p.groups == 0 || p.N == 0) return {out, lse};
  at::Tensor bias = dense_bias(p, table, acc);
  at::Tensor mask_acc = mask.defined() ? mask.to(acc).contiguous() : at::Tensor();
  at::Tensor qb = qkv_bias.defined() ? qkv_bias.contiguous() : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, qkv.scalar_type(), "fastwin_attn_fwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto c = make_ctx<scalar_t, acc_t>(p, qkv, qb, bias, mask_acc);
    scalar_t* o = out.data_ptr<scalar_t>();
    acc_t* l = lse.data_ptr<acc_t>();
    at::parallel_for(0, p.groups * p.heads, 1, [&](int64_t begin, int64_t end) {
      DenormalsAreZero daz;
      Scratch<acc_t>& s = thread_scratch<acc_t>(c.Np, c.dp, c.BM, p.d, p.N, false);
      for (int64_t u = begin; u < end; ++u) forward_unit(c, s, u, o, l);
    });
  });
  return {out, lse};
}

// Returns dqkv (shape of qkv, contiguous) and, when requested, dtable [T, heads], dmask [nW, N, N]
// and dqkv_bias [3C]; gradients not requested come back as empty tensors.
std::vector<at::Tensor> CpuKernels::attn_backward(const AttnParams& p, const at::Tensor& grad_out_in,
                                                  const at::Tensor& qkv, const at::Tensor& out_in,
                                                  const at::Tensor& lse_in, const at::Tensor& table,
                                                  const at::Tensor& qkv_bias, const at::Tensor& mask, AttnGrads want) {
  const auto acc = stat_dtype(qkv);
  TORCH_CHECK(grad_out_in.sizes() == out_in.sizes(), "grad_out has shape ", grad_out_in.sizes(),
              " but the output has shape ", out_in.sizes());
  TORCH_CHECK(lse_in.numel() == p.groups * p.heads * p.N && lse_in.scalar_type() == acc,
              "lse must be a ", acc, " tensor with ", p.groups * p.heads * p.N, " elements, got ", lse_in.sizes(), " ",
              lse_in.scalar_type());
  // out_in is not read: the softmax correction term is recomputed from P and dP (see backward_unit).
  at::Tensor grad_out = grad_out_in.to(qkv.scalar_type()).contiguous();
  at::Tensor lse = lse_in.contiguous();
  at::Tensor dqkv = at::empty(qkv.sizes(), qkv.options());
  const int64_t N = p.N, C3 = 3 * int64_t(p.heads) * p.d;
  const int64_t units = p.groups * p.heads;
  const int64_t chunks = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), units));
  const bool want_bias = want.table && p.has_table, want_qb = want.qkv_bias && qkv_bias.defined();
  const bool want_mask = want.mask && mask.defined();
  at::Tensor bias = dense_bias(p, table, acc);
  at::Tensor mask_acc = mask.defined() ? mask.to(acc).contiguous() : at::Tensor();
  at::Tensor qb = qkv_bias.defined() ? qkv_bias.contiguous() : at::Tensor();
  at::Tensor dtable, dmask, dqb;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, qkv.scalar_type(), "fastwin_attn_bwd_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto c = make_ctx<scalar_t, acc_t>(p, qkv, qb, bias, mask_acc);
    std::vector<Partial<acc_t>> parts(chunks);
    at::parallel_for(0, chunks, 1, [&](int64_t c0, int64_t c1) {
      DenormalsAreZero daz;
      Scratch<acc_t>& s = thread_scratch<acc_t>(c.Np, c.dp, c.BM, p.d, p.N, true);
      for (int64_t ci = c0; ci < c1; ++ci) {
        Partial<acc_t>& part = parts[ci];
        if (want_bias) part.dbias.assign(p.heads * N * N, 0);
        if (want_mask) part.dmask.assign(int64_t(p.mask_windows) * N * N, 0);
        if (want_qb) part.dqkv_bias.assign(C3, 0);
        for (int64_t u = ci * units / chunks; u < (ci + 1) * units / chunks; ++u)
          backward_unit(c, s, part, u, grad_out.data_ptr<scalar_t>(), lse.data_ptr<acc_t>(), dqkv.data_ptr<scalar_t>());
      }
    });
    auto reduce = [&](std::vector<acc_t> Partial<acc_t>::*field, int64_t n) {  // chunk order: deterministic
      at::Tensor r = at::zeros({n}, qkv.options().dtype(acc));
      acc_t* d = r.data_ptr<acc_t>();
      for (auto& part : parts)
        for (int64_t i = 0; i < n; ++i) d[i] += (part.*field)[i];
      return r;
    };
    if (want_bias) {
      at::Tensor dense = reduce(&Partial<acc_t>::dbias, int64_t(p.heads) * N * N);
      at::Tensor t = at::zeros({rel_pos_table_size(p.wh, p.ww), p.heads}, qkv.options().dtype(acc));
      const acc_t* dd = dense.data_ptr<acc_t>();
      acc_t* td = t.data_ptr<acc_t>();
      for (int h = 0; h < p.heads; ++h)
        for (int64_t i = 0; i < N; ++i)
          for (int64_t j = 0; j < N; ++j) td[rel_pos_index(int(i), int(j), p.wh, p.ww) * p.heads + h] += dd[(h * N + i) * N + j];
      dtable = t.to(qkv.scalar_type());
    }
    if (want_mask) dmask = reduce(&Partial<acc_t>::dmask, int64_t(p.mask_windows) * N * N).view({p.mask_windows, N, N}).to(mask.scalar_type());
    if (want_qb) dqb = reduce(&Partial<acc_t>::dqkv_bias, C3).to(qkv.scalar_type());
  });
  auto or_empty = [&](const at::Tensor& t) { return t.defined() ? t : at::empty({0}, qkv.options()); };
  return {dqkv, or_empty(dtable), or_empty(dmask), or_empty(dqb)};
}

}  // namespace fastwin
