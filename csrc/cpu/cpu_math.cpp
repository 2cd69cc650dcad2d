// Implementations of cpu_math.h (see there for why these exist).
#include "cpu_math.h"

#include <cmath>
#include <cstring>
#include <limits>

namespace fastwin {
namespace cpu {
namespace {

template <typename T>
__attribute__((always_inline)) inline void mm_impl(int64_t M, int64_t N, int64_t K, const T* A, int64_t sAm,
                                                   int64_t sAk, const T* B, int64_t ldb, T* C, int64_t ldc, T alpha,
                                                   bool accumulate) {
  for (int64_t i0 = 0; i0 < M; i0 += kTileM) {
    for (int64_t j0 = 0; j0 < N; j0 += kTileN) {
      // The 4x16 accumulator tile stays in vector registers across the whole K loop.
      T c[kTileM][kTileN] = {};
      for (int64_t k = 0; k < K; ++k) {
        const T* b = B + k * ldb + j0;
        for (int r = 0; r < kTileM; ++r) {
          const T a = A[(i0 + r) * sAm + k * sAk];
          for (int jj = 0; jj < kTileN; ++jj) c[r][jj] += a * b[jj];
        }
      }
      for (int r = 0; r < kTileM; ++r) {
        T* out = C + (i0 + r) * ldc + j0;
        if (accumulate) {
          for (int jj = 0; jj < kTileN; ++jj) out[jj] += alpha * c[r][jj];
        } else {
          for (int jj = 0; jj < kTileN; ++jj) out[jj] = alpha * c[r][jj];
        }
      }
    }
  }
}

// exp(x) for x <= 0-ish softmax arguments, branch-free so loops over it vectorize:
// x = n ln2 + r, |r| <= ln2/2, exp(r) by a degree-7 Taylor polynomial (rel. error < 1e-8),
// 2^n assembled in the exponent bits. Inputs are clamped to the normal range.
__attribute__((always_inline)) inline float fast_expf(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float n = std::floor(x * 1.44269504088896341f + 0.5f);  // 1/ln 2
  float r = x - n * 0.693145751953125f;                           // ln 2, high part (exact product)
  r = r - n * 1.428606765330187e-06f;                             // ln 2, low part
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float two_n;
  std::memcpy(&two_n, &bits, sizeof(two_n));
  return p * two_n;
}

__attribute__((always_inline)) inline float exp_of(float x) { return fast_expf(x); }
__attribute__((always_inline)) inline double exp_of(double x) { return std::exp(x); }

template <typename T>
__attribute__((always_inline)) inline void softmax_impl(T* S, int64_t rows, int64_t n, int64_t ld, T* lse) {
  for (int64_t r = 0; r < rows; ++r) {
    T* s = S + r * ld;
    T m = -std::numeric_limits<T>::infinity();
    for (int64_t j = 0; j < n; ++j) m = s[j] > m ? s[j] : m;
    for (int64_t j = 0; j < n; ++j) s[j] = exp_of(s[j] - m);  // kept apart from the sum: vectorizes
    T sum = 0;
    for (int64_t j = 0; j < n; ++j) sum += s[j];
    const T inv = T(1) / sum;
    for (int64_t j = 0; j < n; ++j) s[j] *= inv;
    for (int64_t j = n; j < ld; ++j) s[j] = 0;
    if (lse) lse[r] = m + std::log(sum);
  }
}

template <typename T>
__attribute__((always_inline)) inline void exp_rows_impl(T* S, int64_t rows, int64_t n, int64_t ld, const T* lse) {
  for (int64_t r = 0; r < rows; ++r) {
    T* s = S + r * ld;
    const T l = lse[r];
    for (int64_t j = 0; j < n; ++j) s[j] = exp_of(s[j] - l);
    for (int64_t j = n; j < ld; ++j) s[j] = 0;
  }
}

}  // namespace

FW_CLONES void mm(int64_t M, int64_t N, int64_t K, const float* A, int64_t sAm, int64_t sAk, const float* B,
                  int64_t ldb, float* C, int64_t ldc, float alpha, bool accumulate) {
  mm_impl<float>(M, N, K, A, sAm, sAk, B, ldb, C, ldc, alpha, accumulate);
}
FW_CLONES void mm(int64_t M, int64_t N, int64_t K, const double* A, int64_t sAm, int64_t sAk, const double* B,
                  int64_t ldb, double* C, int64_t ldc, double alpha, bool accumulate) {
  mm_impl<double>(M, N, K, A, sAm, sAk, B, ldb, C, ldc, alpha, accumulate);
}
FW_CLONES void softmax_rows(float* S, int64_t rows, int64_t n, int64_t ld, float* lse) {
  softmax_impl<float>(S, rows, n, ld, lse);
}
FW_CLONES void softmax_rows(double* S, int64_t rows, int64_t n, int64_t ld, double* lse) {
  softmax_impl<double>(S, rows, n, ld, lse);
}
FW_CLONES void exp_rows(float* S, int64_t rows, int64_t n, int64_t ld, const float* lse) {
  exp_rows_impl<float>(S, rows, n, ld, lse);
}
FW_CLONES void exp_rows(double* S, int64_t rows, int64_t n, int64_t ld, const double* lse) {
  exp_rows_impl<double>(S, rows, n, ld, lse);
}

}  // namespace cpu
}  // namespace fastwin
