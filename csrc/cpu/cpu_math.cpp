// Implementations of cpu_math.h (see there for why these exist).
#include "cpu_math.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>

// The vector helpers below are always_inline, so the ABI note about passing 64-byte vectors by
// value never applies across a real call.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace fastwin {
namespace cpu {
namespace {

// 64-byte GCC vector types: one zmm under AVX-512, two ymm under AVX2, lowered further by default.
// Written explicitly because the auto-vectorizer turned the old scalar 4x16 tile into 128-bit
// shuffles with accumulators spilled to the stack (perf showed ~10x below the reference).
typedef float vf __attribute__((vector_size(64)));
typedef double vd __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
template <typename T> struct Vec;
template <> struct Vec<float> { using type = vf; static constexpr int L = 16; };
template <> struct Vec<double> { using type = vd; static constexpr int L = 8; };

template <typename V>
__attribute__((always_inline)) inline V loadu(const void* p) {
  V v;
  std::memcpy(&v, p, sizeof(V));
  return v;
}
template <typename V>
__attribute__((always_inline)) inline void storeu(void* p, V v) {
  std::memcpy(p, &v, sizeof(V));
}

// C[4, NV*L] tile over the whole K: 4*NV vector accumulators stay in registers (16 zmm for NV=4).
template <typename T, int NV>
__attribute__((always_inline)) inline void mm_tile(int64_t K, const T* A, int64_t sAm, int64_t sAk, const T* B,
                                                   int64_t ldb, T* C, int64_t ldc, T alpha, bool accumulate) {
  using V = typename Vec<T>::type;
  constexpr int L = Vec<T>::L;
  V c[kTileM][NV];
  for (int r = 0; r < kTileM; ++r)
    for (int v = 0; v < NV; ++v) c[r][v] = V{};
  for (int64_t k = 0; k < K; ++k) {
    V b[NV];
    for (int v = 0; v < NV; ++v) b[v] = loadu<V>(B + k * ldb + v * L);
    for (int r = 0; r < kTileM; ++r) {
      const T a = A[r * sAm + k * sAk];
      for (int v = 0; v < NV; ++v) c[r][v] += a * b[v];  // FMA: built with -ffp-contract=fast
    }
  }
  for (int r = 0; r < kTileM; ++r)
    for (int v = 0; v < NV; ++v) {
      T* out = C + r * ldc + v * L;
      storeu(out, accumulate ? loadu<V>(out) + alpha * c[r][v] : alpha * c[r][v]);
    }
}

template <typename T>
__attribute__((always_inline)) inline void mm_impl(int64_t M, int64_t N, int64_t K, const T* A, int64_t sAm,
                                                   int64_t sAk, const T* B, int64_t ldb, T* C, int64_t ldc, T alpha,
                                                   bool accumulate) {
  constexpr int L = Vec<T>::L;  // N is a multiple of kTileN (16), hence of L
  for (int64_t i0 = 0; i0 < M; i0 += kTileM) {
    const T* Ai = A + i0 * sAm;
    T* Ci = C + i0 * ldc;
    int64_t j0 = 0;
    for (; j0 + 4 * L <= N; j0 += 4 * L) mm_tile<T, 4>(K, Ai, sAm, sAk, B + j0, ldb, Ci + j0, ldc, alpha, accumulate);
    if (j0 + 2 * L <= N) {
      mm_tile<T, 2>(K, Ai, sAm, sAk, B + j0, ldb, Ci + j0, ldc, alpha, accumulate);
      j0 += 2 * L;
    }
    if (j0 < N) mm_tile<T, 1>(K, Ai, sAm, sAk, B + j0, ldb, Ci + j0, ldc, alpha, accumulate);
  }
}

// The same exp on 16 lanes: round-to-nearest by the 1.5 * 2^23 trick instead of floor, so it
// needs no per-ISA intrinsics.
__attribute__((always_inline)) inline vf fast_expf(vf x) {
  x = x < -87.0f ? vf{} - 87.0f : x;  // keeps the exponent arithmetic in range
  x = x > 88.0f ? vf{} + 88.0f : x;
  const vf n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  vf r = x - n * 0.693145751953125f;
  r = r - n * 1.428606765330187e-06f;
  vf p = vf{} + 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const vi bits = (__builtin_convertvector(n, vi) + 127) << 23;
  // Below -87 the true value is (nearly) denormal: return 0 rather than a clamped e^-87, so masked
  // logits contribute nothing and never feed denormals into the following matmul.
  return x <= -87.0f ? vf{} : p * (vf)bits;  // a vector cast reinterprets the bits (no aliasing UB)
}

__attribute__((always_inline)) inline double exp_of(double x) { return std::exp(x); }

// The larger of a and b, or NaN if either is NaN (the double rows' scalar max): a NaN logit must make its
// row NaN (SPEC §6), not be skipped by the row max (a plain `a > b ? a : b` drops it, and a row of NaN
// logits would then look fully masked and give zeros).
__attribute__((always_inline)) inline float max_nan(float a, float b) { return (a > b || a != a) ? a : b; }
__attribute__((always_inline)) inline double max_nan(double a, double b) { return (a > b || a != a) ? a : b; }

// The plain larger of a and b per lane. The float rows use it, not a NaN-propagating vector max: GCC 12
// lowered `((a > b) | (a != a)) ? a : b` on 16 lanes to per-lane extracts and branches, which made the
// softmax ~4x slower than the maths (62 % of Swin's attention op). NaN is handled by `row_max`.
__attribute__((always_inline)) inline vf vmax(vf a, vf b) { return a > b ? a : b; }

// Horizontal max / sum of 16 lanes by a shuffle tree (GCC 12 has no generic reduce builtin).
__attribute__((always_inline)) inline float hmax(vf v) {
  v = vmax(v, __builtin_shuffle(v, vi{8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7}));
  v = vmax(v, __builtin_shuffle(v, vi{4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11}));
  v = vmax(v, __builtin_shuffle(v, vi{2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13}));
  return v[0] > v[1] ? v[0] : v[1];
}
__attribute__((always_inline)) inline float hsum(vf v) {
  v += __builtin_shuffle(v, vi{8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7});
  v += __builtin_shuffle(v, vi{4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11});
  v += __builtin_shuffle(v, vi{2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13});
  return v[0] + v[1];
}

// Lanes of the last 16-wide vector of an n-column row that are real columns (all-ones) or padding.
__attribute__((always_inline)) inline vi tail_mask(int64_t n) {
  const vi lane = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};
  return lane < static_cast<int32_t>(n - ((n + 15) / 16 - 1) * 16);
}

// Max of the n real columns of a float row (padded to 16-lane vectors). The plain lane max skips NaN, but
// a NaN among finite logits still makes the row NaN through exp and the sum; only a row whose non-NaN
// logits are all -inf (or that has none) would pass for fully masked, so that case scans for NaN and
// returns NaN if there is one.
__attribute__((always_inline)) inline float row_max(const float* s, int64_t n, int64_t nv, vi tail) {
  const vf ninf = vf{} - std::numeric_limits<float>::infinity();
  vf mv = ninf;
  for (int64_t v = 0; v < nv; ++v) {
    vf x = loadu<vf>(s + 16 * v);
    if (v == nv - 1) x = tail ? x : ninf;
    mv = vmax(x, mv);
  }
  const float m = hmax(mv);
  if (m == -std::numeric_limits<float>::infinity())
    for (int64_t j = 0; j < n; ++j)
      if (s[j] != s[j]) return s[j];
  return m;
}

// float rows: whole 16-lane vectors over the padded row (ld % 16 == 0); padding lanes are masked
// to -inf for the max and to 0 after the exp.
__attribute__((always_inline)) inline void softmax_impl(float* S, int64_t rows, int64_t n, int64_t ld, float* lse) {
  const int64_t nv = (n + 15) / 16;
  const vi tail = tail_mask(n);
  for (int64_t r = 0; r < rows; ++r) {
    float* s = S + r * ld;
    const float m = row_max(s, n, nv, tail);
    if (m == -std::numeric_limits<float>::infinity()) {  // every logit -inf: P = 0 (see cpu_math.h)
      for (int64_t j = 0; j < ld; ++j) s[j] = 0;
      if (lse) lse[r] = std::numeric_limits<float>::infinity();
      continue;
    }
    vf sv{};
    for (int64_t v = 0; v < nv; ++v) {
      vf e = fast_expf(loadu<vf>(s + 16 * v) - m);
      if (v == nv - 1) e = tail ? e : vf{};
      sv += e;
      storeu(s + 16 * v, e);
    }
    const float sum = hsum(sv);
    const float inv = 1.0f / sum;
    for (int64_t v = 0; v < nv; ++v) storeu(s + 16 * v, loadu<vf>(s + 16 * v) * inv);
    for (int64_t j = nv * 16; j < ld; ++j) s[j] = 0;
    if (lse) lse[r] = std::log(sum);  // relative to the row max (see cpu_math.h)
  }
}

__attribute__((always_inline)) inline void exp_rows_impl(float* S, int64_t rows, int64_t n, int64_t ld, const float* lse) {
  const int64_t nv = (n + 15) / 16;
  const vi tail = tail_mask(n);
  for (int64_t r = 0; r < rows; ++r) {
    float* s = S + r * ld;
    const float m = row_max(s, n, nv, tail);
    if (lse[r] == std::numeric_limits<float>::infinity() || m == -std::numeric_limits<float>::infinity()) {
      for (int64_t j = 0; j < ld; ++j) s[j] = 0;  // a fully masked row: P = 0
      continue;
    }
    for (int64_t v = 0; v < nv; ++v) {
      vf e = fast_expf((loadu<vf>(s + 16 * v) - m) - lse[r]);
      if (v == nv - 1) e = tail ? e : vf{};
      storeu(s + 16 * v, e);
    }
    for (int64_t j = nv * 16; j < ld; ++j) s[j] = 0;
  }
}

__attribute__((always_inline)) inline void softmax_impl(double* S, int64_t rows, int64_t n, int64_t ld, double* lse) {
  for (int64_t r = 0; r < rows; ++r) {
    double* s = S + r * ld;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < n; ++j) m = max_nan(s[j], m);
    if (m == -std::numeric_limits<double>::infinity()) {
      for (int64_t j = 0; j < ld; ++j) s[j] = 0;
      if (lse) lse[r] = std::numeric_limits<double>::infinity();
      continue;
    }
    double sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += (s[j] = exp_of(s[j] - m));
    const double inv = 1.0 / sum;
    for (int64_t j = 0; j < n; ++j) s[j] *= inv;
    for (int64_t j = n; j < ld; ++j) s[j] = 0;
    if (lse) lse[r] = std::log(sum);  // relative to the row max (see cpu_math.h)
  }
}

__attribute__((always_inline)) inline void exp_rows_impl(double* S, int64_t rows, int64_t n, int64_t ld, const double* lse) {
  for (int64_t r = 0; r < rows; ++r) {
    double* s = S + r * ld;
    double m = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < n; ++j) m = max_nan(s[j], m);
    const bool masked = lse[r] == std::numeric_limits<double>::infinity() || m == -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < n; ++j) s[j] = masked ? 0.0 : exp_of((s[j] - m) - lse[r]);
    for (int64_t j = n; j < ld; ++j) s[j] = 0;
  }
}

// erf on 16 lanes: Abramowitz & Stegun 7.1.26 (|error| <= 1.5e-7, below fp32 GELU rounding), odd.
__attribute__((always_inline)) inline vf fast_erff(vf x) {
  const vf ax = x < 0.0f ? -x : x;
  const vf t = 1.0f / (1.0f + 0.3275911f * ax);
  vf p = vf{} + 1.061405429f;
  p = p * t - 1.453152027f;
  p = p * t + 1.421413741f;
  p = p * t - 0.284496736f;
  p = p * t + 0.254829592f;
  const vf e = 1.0f - p * t * fast_expf(-ax * ax);
  return x < 0.0f ? -e : e;
}

// tanh(u) = 1 - 2 / (1 + e^{2u}), saturating cleanly through fast_expf's clamps.
__attribute__((always_inline)) inline vf fast_tanhf(vf u) { return 1.0f - 2.0f / (1.0f + fast_expf(2.0f * u)); }

constexpr float kSqrtHalf = 0.70710678118654752f;   // 1/sqrt(2)
constexpr float kInvSqrt2Pi = 0.39894228040143268f;  // 1/sqrt(2 pi)
constexpr float kSqrt2OverPi = 0.79788456080286536f; // sqrt(2/pi), tanh approximation
constexpr float kTanhCubic = 0.044715f;

__attribute__((always_inline)) inline vf gelu_v(vf v, bool tanh_approx) {
  if (tanh_approx) return 0.5f * v * (1.0f + fast_tanhf(kSqrt2OverPi * (v + kTanhCubic * v * v * v)));
  return 0.5f * v * (1.0f + fast_erff(v * kSqrtHalf));
}

// d gelu(v) / dv.
__attribute__((always_inline)) inline vf gelu_grad_v(vf v, bool tanh_approx) {
  if (tanh_approx) {
    const vf th = fast_tanhf(kSqrt2OverPi * (v + kTanhCubic * v * v * v));
    return 0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * kSqrt2OverPi * (1.0f + 3.0f * kTanhCubic * v * v);
  }
  return 0.5f * (1.0f + fast_erff(v * kSqrtHalf)) + v * kInvSqrt2Pi * fast_expf(-0.5f * v * v);
}

// y[r, :] = gelu(h[r, :] + bias) for rows of n floats (row strides ldh / ldy, y may alias h);
// pre[r, :] = h[r, :] + bias when pre is given (the backward's input).
__attribute__((always_inline)) inline void bias_gelu_impl(const float* h, int64_t ldh, const float* bias, float* y,
                                                          int64_t ldy, float* pre, int64_t ldp, int64_t rows,
                                                          int64_t n, bool tanh_approx) {
  const int64_t nv = n / 16 * 16;
  for (int64_t r = 0; r < rows; ++r) {
    const float* hr = h + r * ldh;
    float* yr = y + r * ldy;
    float* pr = pre ? pre + r * ldp : nullptr;
    for (int64_t j = 0; j < nv; j += 16) {
      vf v = loadu<vf>(hr + j);
      if (bias) v += loadu<vf>(bias + j);
      if (pr) storeu(pr + j, v);
      storeu(yr + j, gelu_v(v, tanh_approx));
    }
    if (nv < n) {  // the tail through a zero-padded vector
      float buf[16] = {0};
      for (int64_t j = nv; j < n; ++j) buf[j - nv] = hr[j] + (bias ? bias[j] : 0.0f);
      const vf v = loadu<vf>(buf);
      float g[16];
      storeu(g, gelu_v(v, tanh_approx));
      for (int64_t j = nv; j < n; ++j) {
        if (pr) pr[j] = buf[j - nv];
        yr[j] = g[j - nv];
      }
    }
  }
}

// dh = dy * gelu'(pre), contiguous, n elements.
__attribute__((always_inline)) inline void gelu_bwd_impl(const float* dy, const float* pre, float* dh, int64_t n,
                                                         bool tanh_approx) {
  const int64_t nv = n / 16 * 16;
  for (int64_t j = 0; j < nv; j += 16)
    storeu(dh + j, loadu<vf>(dy + j) * gelu_grad_v(loadu<vf>(pre + j), tanh_approx));
  if (nv < n) {
    float a[16] = {0}, b[16] = {0}, g[16];
    for (int64_t j = nv; j < n; ++j) a[j - nv] = pre[j], b[j - nv] = dy[j];
    storeu(g, loadu<vf>(b) * gelu_grad_v(loadu<vf>(a), tanh_approx));
    for (int64_t j = nv; j < n; ++j) dh[j] = g[j - nv];
  }
}

// Depthwise "same" conv (stride 1, odd k) on one channels-last image, output rows [y0, y1):
// out[y, x, c] = bias[c] (+ in[y, x, c]) + sum_{ky, kx} wt[ky * k + kx, c] * in[y + ky - r, x + kx - r, c].
// Per 16-channel slice the k*k weight vectors stay in registers (KC = k known at compile time) and
// four pixels accumulate at once, so the FMAs are four independent chains instead of one chain of
// k*k dependent FMAs per pixel (4-cycle latency each).
template <int KC>
__attribute__((always_inline)) inline void dw_rows_k(const float* in, const float* wt, const float* bias, float* out,
                                                     int64_t H, int64_t W, int64_t C, int k_runtime, int64_t y0,
                                                     int64_t y1, bool residual) {
  constexpr int XB = 4;
  const int K = KC ? KC : k_runtime, R = K / 2;
  const int64_t CV = C / 16 * 16;
  const auto px = [&](int64_t y, int64_t x) { return in + (y * W + x) * C; };
  for (int64_t y = y0; y < y1; ++y) {
    const int ky0 = static_cast<int>(std::max<int64_t>(0, R - y)), ky1 = static_cast<int>(std::min<int64_t>(K, H + R - y));
    for (int64_t c = 0; c < CV; c += 16) {
      vf w[KC ? KC * KC : 1];
      if (KC)
        for (int t = 0; t < K * K; ++t) w[t] = loadu<vf>(wt + t * C + c);
      const auto tap = [&](int t) { return KC ? w[t] : loadu<vf>(wt + t * C + c); };
      const vf b = bias ? loadu<vf>(bias + c) : vf{};
      const auto edge_pixel = [&](int64_t x) {  // any x, taps clipped to the image
        vf acc = residual ? b + loadu<vf>(px(y, x) + c) : b;
        for (int ky = ky0; ky < ky1; ++ky)
          for (int kx = 0; kx < K; ++kx) {
            const int64_t ix = x + kx - R;
            if (ix >= 0 && ix < W) acc += tap(ky * K + kx) * loadu<vf>(px(y + ky - R, ix) + c);
          }
        storeu(out + (y * W + x) * C + c, acc);
      };
      int64_t x = 0;
      for (; x < std::min<int64_t>(R, W); ++x) edge_pixel(x);
      for (; x + XB + R <= W; x += XB) {  // every tap of these XB pixels is inside the row
        vf acc[XB];
        for (int i = 0; i < XB; ++i) acc[i] = residual ? b + loadu<vf>(px(y, x + i) + c) : b;
        for (int ky = ky0; ky < ky1; ++ky) {
          const float* row = px(y + ky - R, x - R) + c;
          for (int kx = 0; kx < K; ++kx) {
            const vf wv = tap(ky * K + kx);
            for (int i = 0; i < XB; ++i) acc[i] += wv * loadu<vf>(row + (kx + i) * C);
          }
        }
        for (int i = 0; i < XB; ++i) storeu(out + (y * W + x + i) * C + c, acc[i]);
      }
      for (; x < W; ++x) edge_pixel(x);
    }
    for (int64_t c = CV; c < C; ++c)  // channels past the last full slice
      for (int64_t x = 0; x < W; ++x) {
        float acc = (bias ? bias[c] : 0.f) + (residual ? px(y, x)[c] : 0.f);
        for (int ky = ky0; ky < ky1; ++ky)
          for (int kx = 0; kx < K; ++kx) {
            const int64_t ix = x + kx - R;
            if (ix >= 0 && ix < W) acc += wt[(ky * K + kx) * C + c] * px(y + ky - R, ix)[c];
          }
        out[(y * W + x) * C + c] = acc;
      }
  }
}

__attribute__((always_inline)) inline void dw_rows_impl(const float* in, const float* wt, const float* bias, float* out,
                                                        int64_t H, int64_t W, int64_t C, int k, int64_t y0, int64_t y1,
                                                        bool residual) {
  switch (k) {
    case 3: return dw_rows_k<3>(in, wt, bias, out, H, W, C, k, y0, y1, residual);
    case 5: return dw_rows_k<5>(in, wt, bias, out, H, W, C, k, y0, y1, residual);
    case 7: return dw_rows_k<7>(in, wt, bias, out, H, W, C, k, y0, y1, residual);
    default: return dw_rows_k<0>(in, wt, bias, out, H, W, C, k, y0, y1, residual);
  }
}

}  // namespace

// ISA variants. Each wrapper compiles the same always_inline body for its target; FMA must be
// named explicitly (target_clones("avx512f") does not imply it, and -std=c++20 is ISO mode, where
// GCC does not contract a * b + c unless -ffp-contract=fast). Picked once per process by CPUID
// feature bits, not CPU model, so virtualized CPUs get the right one.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(FASTWIN_NO_CLONES)
#define FW_ISA_DISPATCH 1
#define FW_T512 __attribute__((target("avx512f,avx512vl,avx512dq,avx2,fma")))
#define FW_T256 __attribute__((target("avx2,fma")))
namespace {
int isa_level() {
  static const int level = [] {
    __builtin_cpu_init();
    const bool fma = __builtin_cpu_supports("fma");
    if (fma && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq"))
      return 2;
    return fma && __builtin_cpu_supports("avx2") ? 1 : 0;
  }();
  return level;
}
}  // namespace
#endif

#define MM_PARAMS(T)                                                                                       \
  (int64_t M, int64_t N, int64_t K, const T* A, int64_t sAm, int64_t sAk, const T* B, int64_t ldb, T* C, \
   int64_t ldc, T alpha, bool accumulate)
#define MM_ARGS (M, N, K, A, sAm, sAk, B, ldb, C, ldc, alpha, accumulate)
#define SM_PARAMS(T) (T* S, int64_t rows, int64_t n, int64_t ld, T* lse)
#define EX_PARAMS(T) (T* S, int64_t rows, int64_t n, int64_t ld, const T* lse)
#define ROW_ARGS (S, rows, n, ld, lse)

#if defined(FW_ISA_DISPATCH)
#define VARIANTS(name, params, args, body)                  \
  namespace {                                               \
  FW_T512 void name##_512 params { body args; }             \
  FW_T256 void name##_256 params { body args; }             \
  void name##_def params { body args; }                     \
  }                                                         \
  static void name params {                                 \
    const int l = isa_level();                              \
    if (l == 2) name##_512 args;                            \
    else if (l == 1) name##_256 args;                       \
    else name##_def args;                                   \
  }
#else
#define VARIANTS(name, params, args, body) \
  static void name params { body args; }
#endif

// Distinct names per overload for the variants; the public overloads forward to them.
VARIANTS(mm_f32, MM_PARAMS(float), MM_ARGS, mm_impl<float>)
VARIANTS(mm_f64, MM_PARAMS(double), MM_ARGS, mm_impl<double>)
VARIANTS(softmax_f32, SM_PARAMS(float), ROW_ARGS, softmax_impl)
VARIANTS(softmax_f64, SM_PARAMS(double), ROW_ARGS, softmax_impl)
VARIANTS(exp_f32, EX_PARAMS(float), ROW_ARGS, exp_rows_impl)
VARIANTS(exp_f64, EX_PARAMS(double), ROW_ARGS, exp_rows_impl)

#define BG_PARAMS                                                                                       \
  (const float* h, int64_t ldh, const float* bias, float* y, int64_t ldy, float* pre, int64_t ldp, int64_t rows, \
   int64_t n, bool tanh_approx)
#define BG_ARGS (h, ldh, bias, y, ldy, pre, ldp, rows, n, tanh_approx)
#define GB_PARAMS (const float* dy, const float* pre, float* dh, int64_t n, bool tanh_approx)
#define GB_ARGS (dy, pre, dh, n, tanh_approx)
VARIANTS(bias_gelu_f32, BG_PARAMS, BG_ARGS, bias_gelu_impl)
VARIANTS(gelu_bwd_f32, GB_PARAMS, GB_ARGS, gelu_bwd_impl)

#define DW_PARAMS                                                                                     \
  (const float* in, const float* wt, const float* bias, float* out, int64_t H, int64_t W, int64_t C, int k, \
   int64_t y0, int64_t y1, bool residual)
#define DW_ARGS (in, wt, bias, out, H, W, C, k, y0, y1, residual)
VARIANTS(dw_rows_f32, DW_PARAMS, DW_ARGS, dw_rows_impl)

void dwconv_nhwc_rows DW_PARAMS { dw_rows_f32 DW_ARGS; }
void bias_gelu_rows BG_PARAMS { bias_gelu_f32 BG_ARGS; }
void gelu_backward GB_PARAMS { gelu_bwd_f32 GB_ARGS; }

void mm MM_PARAMS(float) { mm_f32 MM_ARGS; }
void mm MM_PARAMS(double) { mm_f64 MM_ARGS; }
void softmax_rows SM_PARAMS(float) { softmax_f32 ROW_ARGS; }
void softmax_rows SM_PARAMS(double) { softmax_f64 ROW_ARGS; }
void exp_rows EX_PARAMS(float) { exp_f32 ROW_ARGS; }
void exp_rows EX_PARAMS(double) { exp_f64 ROW_ARGS; }

}  // namespace cpu
}  // namespace fastwin
