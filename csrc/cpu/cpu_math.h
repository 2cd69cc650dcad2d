// Small dense kernels for the CPU attention/conv paths: register-tiled matmul, softmax rows.
//
// torch's CPU BLAS entry points are not exported to extensions, and a BLAS call per 49x49 window
// would cost more than the maths, so the kernels are plain C++ written to auto-vectorize: all
// buffers are padded (rows to 4, columns to 16) so the 4x16 micro-tile never needs an edge case.
// On x86-64 with GCC, hot functions are cloned for AVX-512 / AVX2 and picked at load time
// (ifunc), keeping the binary portable.
#pragma once

#include <cstdint>

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && !defined(FASTWIN_NO_CLONES)
// Feature-based clones: "arch=" clones dispatch on the CPU *model*, which fails on virtualized CPUs.
#define FW_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define FW_CLONES
#endif

namespace fastwin {
namespace cpu {

constexpr int kTileM = 4;
constexpr int kTileN = 16;

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// C[M, N] (=|+=) alpha * A[M, K] @ B[K, N], A read as A[i * sAm + k * sAk] (so A^T is free).
// M % kTileM == 0 and N % kTileN == 0 (callers pad their buffers).
void mm(int64_t M, int64_t N, int64_t K, const float* A, int64_t sAm, int64_t sAk, const float* B, int64_t ldb,
        float* C, int64_t ldc, float alpha, bool accumulate);
void mm(int64_t M, int64_t N, int64_t K, const double* A, int64_t sAm, int64_t sAk, const double* B, int64_t ldb,
        double* C, int64_t ldc, double alpha, bool accumulate);

// Row-wise softmax of S[rows, n] (row stride ld) in place; lse[r] = logsumexp of row r.
// Columns n..ld are zeroed so that a padded P can feed `mm` directly.
void softmax_rows(float* S, int64_t rows, int64_t n, int64_t ld, float* lse);
void softmax_rows(double* S, int64_t rows, int64_t n, int64_t ld, double* lse);

// Backward recomputation: P = exp(S - lse) in place of S (padded columns zeroed).
void exp_rows(float* S, int64_t rows, int64_t n, int64_t ld, const float* lse);
void exp_rows(double* S, int64_t rows, int64_t n, int64_t ld, const double* lse);

}  // namespace cpu
}  // namespace fastwin
