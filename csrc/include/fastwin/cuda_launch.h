// Plain launch interface of the CUDA kernels (the flash-attn / FasterTransformer split): the .cu
// files include only CUDA headers and this, so `nvcc -c` works without torch's CUDA headers; the
// torch-facing checks, allocation and op registration live in csrc/cuda/bindings_cuda.cpp.
#pragma once

#include <cuda_runtime.h>

#include "fastwin/attention_params.h"

namespace fastwin {

enum DType : int { kF32 = 0, kF16 = 1, kBF16 = 2 };

struct AttnLaunch {
  AttnParams p;
  int dtype;                 // DType of qkv, qkv_bias, table, mask, out, grad_out
  const void* qkv;
  const void* qkv_bias;      // [3C] contiguous or null
  const void* table;         // [(2Wh-1)(2Ww-1), heads] contiguous or null
  const void* mask;          // [mask_windows, N, N] contiguous or null
  void* out;                 // fwd: [rows, C] contiguous
  float* lse;                // fwd output / bwd input: [groups, heads, N]
  const void* grad_out;      // bwd: [rows, C] contiguous
  const void* out_saved;     // bwd: forward output, [rows, C] contiguous
  float* dqkv;               // bwd, fp32 path: [rows, 3C] fp32, zero-initialized
  void* dqkv_out;            // bwd, f16/bf16 path: [rows, 3C] in qkv's dtype, every element written
  float* dtable;             // bwd: [(2Wh-1)(2Ww-1), heads] fp32 zeroed, or null
  float* dmask;              // bwd: [mask_windows, N, N] fp32 zeroed, or null
  float* dqkv_bias;          // bwd: [3C] fp32 zeroed, or null
  void* workspace;           // f16/bf16 path: attn_workspace_bytes() bytes, 256-byte aligned
};

// f16 / bf16 run on tensor cores (attention_mma.cu), fp32 on CUDA cores (attention.cu). The
// tensor-core path needs a workspace (per-call bias tile, backward reductions) the caller
// allocates; attn_workspace_bytes is 0 for fp32. Fields a call leaves unset must be null.
size_t attn_workspace_bytes(const AttnLaunch& a, bool bwd);
cudaError_t attn_fwd_cuda(const AttnLaunch& a, cudaStream_t stream);
cudaError_t attn_bwd_cuda(const AttnLaunch& a, cudaStream_t stream);

// The tensor-core implementation behind attn_*_cuda for f16 / bf16.
size_t attn_mma_workspace_bytes(const AttnLaunch& a, bool bwd);
cudaError_t attn_mma_fwd_cuda(const AttnLaunch& a, cudaStream_t stream);
cudaError_t attn_mma_bwd_cuda(const AttnLaunch& a, cudaStream_t stream);

struct DwconvLaunch {
  int dtype;
  const void* x;             // logical [B, C, H, W]
  const void* weight;        // [C, k, k] contiguous (already flipped for the input gradient)
  const void* bias;          // [C] or null
  void* out;                 // same memory format as x
  const void* grad_out;      // weight-grad: same format as x
  float* dweight;            // [C, k, k] fp32
  float* dbias;              // [C] fp32 or null
  int64_t B, C, H, W;
  int k;
  bool channels_last, residual;
};

cudaError_t dwconv_fwd_cuda(const DwconvLaunch& a, cudaStream_t stream);
cudaError_t dwconv_wgrad_cuda(const DwconvLaunch& a, cudaStream_t stream);

}  // namespace fastwin
