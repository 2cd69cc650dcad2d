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

// Row-wise softmax of S[rows, n] (row stride ld) in place; lse[r] = log(sum_j exp(S[r, j] - max_j S[r, j])),
// the log-normalizer relative to the row max. Keeping the max out of the saved statistic is what
// makes the backward's recomputed P as accurate as the forward's: with logits near 100 (Swin V2's
// clamped logit scale), m + log(sum) rounded to fp32 alone would put ~4e-6 relative error on P.
// Columns n..ld are zeroed so that a padded P can feed `mm` directly. A row whose logits are all
// -inf (an additive mask that masks every key) gets P = 0, hence output 0 and zero gradients, as
// torch's SDPA gives; its lse is +inf (flash-attention's convention), so exp_rows recomputes P = 0.
// A NaN logit makes the row max, P, the output row and lse NaN (NaN propagates; it is never taken
// for a masked row).
void softmax_rows(float* S, int64_t rows, int64_t n, int64_t ld, float* lse);
void softmax_rows(double* S, int64_t rows, int64_t n, int64_t ld, double* lse);

// Backward recomputation from the same logits: P = exp((S - max) - lse) in place of S (padded
// columns zeroed; rows with lse = +inf are fully masked and get P = 0).
void exp_rows(float* S, int64_t rows, int64_t n, int64_t ld, const float* lse);
void exp_rows(double* S, int64_t rows, int64_t n, int64_t ld, const double* lse);

// GELU (exact erf form, or tanh_approx) of h + bias over `rows` rows of n floats with row strides
// ldh / ldy / ldp: y[r, j] = gelu(h[r, j] + bias[j]); y may alias h (in place). When pre is not null
// it receives h + bias, the pre-activation the backward needs. bias may be null. |error| <= 2e-7 |y|.
void bias_gelu_rows(const float* h, int64_t ldh, const float* bias, float* y, int64_t ldy, float* pre, int64_t ldp,
                    int64_t rows, int64_t n, bool tanh_approx);
// Depthwise "same" conv (stride 1, odd k) of one channels-last image in [H, W, C], output rows [y0, y1) of
// out [H, W, C]: out = bias (+ in, when residual) + sum over taps of wt[ky * k + kx, c] * in[y + ky - k/2,
// x + kx - k/2, c] (zero padding). wt is [k * k, C]; bias may be null.
void dwconv_nhwc_rows(const float* in, const float* wt, const float* bias, float* out, int64_t H, int64_t W, int64_t C,
                      int k, int64_t y0, int64_t y1, bool residual);
// dh[j] = dy[j] * gelu'(pre[j]) for n contiguous floats.
void gelu_backward(const float* dy, const float* pre, float* dh, int64_t n, bool tanh_approx);

}  // namespace cpu
}  // namespace fastwin
