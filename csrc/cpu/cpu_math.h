// Small dense kernels for the CPU attention/conv paths: register-tiled matmul, softmax rows.
//
// torch's CPU BLAS entry points are not exported to extensions, and a BLAS call per 49x49 window
// would cost more than the maths, so the kernels are plain C++ on 64-byte GCC vector types: all
// buffers are padded (rows to 4, columns to 16) so the 4x(16..64) micro-tiles never need an edge
// case. On x86-64 with GCC each entry point is compiled for AVX-512+FMA, AVX2+FMA and the baseline
// and picked once at run time from CPUID feature bits (cpu_math.cpp), keeping the binary portable.
#pragma once

#include <cstdint>

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
