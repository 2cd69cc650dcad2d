// Register-fragment maps of the warp-level tensor-core instructions the CUDA attention kernels use
// (csrc/cuda/attention_mma.cu): which matrix element each lane holds, and which shared-memory row
// each lane must point `ldmatrix` at. Plain integer maps, host- and device-callable, so the CPU
// tests (tests/test_cuda_fragments.py) check them by simulating the instructions from their PTX ISA
// definitions; the kernels compute every lane address through these functions.
//
// Sources (PTX ISA 9.0 section numbers; the titles are stable across versions, the numbers move):
//   * 9.7.14.5.8  "Matrix Fragments for mma.m16n8k16 with floating point type" (.f16 / .bf16 A, B;
//                 .f32 C/D), with groupID = lane >> 2 and threadID_in_group = lane % 4:
//       A (16x16, .row)  a_i, i = 0..7 (register i/2 holds a_{2r}, a_{2r+1}, low half first):
//                        row = groupID (+8 for i in {2,3,6,7}),  col = 2*tig + (i & 1) (+8 for i >= 4)
//       B (16x8,  .col)  b_i, i = 0..3 (register i/2):  row(k) = 2*tig + (i & 1) (+8 for i >= 2),
//                        col(n) = groupID
//       C/D (16x8, f32)  c_i, i = 0..3 (one register each): row = groupID (+8 for i >= 2),
//                        col = 2*tig + (i & 1)
//   * 9.7.14.5.15 "Warp-level matrix load instruction: ldmatrix" (.m8n8 .x4 .b16): lanes 8m..8m+7
//       supply the addresses of rows 0..7 of matrix m; register m of lane l receives row l>>2,
//       elements 2(l&3), 2(l&3)+1 of matrix m; with .trans it receives column l>>2, elements (rows)
//       2(l&3), 2(l&3)+1 instead, i.e. the same position of the transposed matrix.
//
// How the kernels use them (smem tiles are row-major [rows][LD] bf16/f16, LD = head_dim_padded + 8):
//   * A operands (Q, dO, K, V as the 16-row left factor): ldmatrix.x4 with ldsm_a_lane(); the four
//     8x8 matrices are (rows 0-7, cols 0-7), (8-15, 0-7), (0-7, 8-15), (8-15, 8-15), which are
//     registers a0..a3 of the A fragment exactly.
//   * B operands stored [n][k] (K for Q K^T, V for dO V^T, Q/dO for the transposed products):
//     ldmatrix.x4 (no .trans) with ldsm_b_lane(): matrices (n 0-7, k 0-7), (n 0-7, k 8-15),
//     (n 8-15, k 0-7), (n 8-15, k 8-15) = {b0, b1} of n-tile 0, then {b0, b1} of n-tile 1.
//   * B operands stored [k][n] (V for P V, K for dS K, Q/dO for P^T dO, dS^T Q): ldmatrix.x4.trans
//     with ldsm_a_lane(): matrices (k 0-7, n 0-7), (k 8-15, n 0-7), (k 0-7, n 8-15), (k 8-15, n 8-15)
//     = {b0, b1} of n-tile 0, then {b0, b1} of n-tile 1.
//   * A from accumulators: the C fragments of two adjacent n8 tiles (columns 0-7, 8-15) of a 16x16
//     f32 product, rounded pairwise, are an A fragment whose k = those columns (c_to_a below), so
//     P and dS feed the next product without a trip through shared memory.
#pragma once

#include "fastwin/window_index.h"  // FW_HD

namespace fastwin {
namespace frag {

struct RC {
  int row, col;
};

FW_HD int group_id(int lane) { return lane >> 2; }
FW_HD int tid_in_group(int lane) { return lane & 3; }

// mma.m16n8k16 A element i (0..7) of `lane`.
FW_HD RC mma_a(int lane, int i) {
  return {group_id(lane) + ((i >> 1) & 1) * 8, tid_in_group(lane) * 2 + (i & 1) + (i >= 4 ? 8 : 0)};
}

// mma.m16n8k16 B element i (0..3) of `lane`: {row = k, col = n}.
FW_HD RC mma_b(int lane, int i) { return {tid_in_group(lane) * 2 + (i & 1) + (i >= 2 ? 8 : 0), group_id(lane)}; }

// mma.m16n8k16 f32 C/D element i (0..3) of `lane`.
FW_HD RC mma_c(int lane, int i) { return {group_id(lane) + (i >= 2 ? 8 : 0), tid_in_group(lane) * 2 + (i & 1)}; }

// ldmatrix .m8n8: element `half` (0, 1) of the register that `lane` receives from one 8x8 matrix.
FW_HD RC ldsm_elem(int lane, int half, bool trans) {
  const RC direct{lane >> 2, 2 * (lane & 3) + half};
  return trans ? RC{direct.col, direct.row} : direct;
}

// Row / column (within a 16x16 tile) of the 16-byte row segment `lane` addresses in an ldmatrix.x4
// that yields an A fragment (or, with .trans, B fragments of two n-tiles from a [k][n] tile).
FW_HD RC ldsm_a_lane(int lane) { return {(lane & 7) + ((lane >> 3) & 1) * 8, (lane >> 4) * 8}; }

// Same for an ldmatrix.x4 (no .trans) that yields B fragments of two n-tiles from an [n][k] tile.
FW_HD RC ldsm_b_lane(int lane) { return {(lane & 7) + (lane >> 4) * 8, ((lane >> 3) & 1) * 8}; }

// A-fragment register r (0..3) built from accumulators: n-tile `c_to_a_tile(r)` (0 = columns 0-7,
// 1 = columns 8-15), elements c_to_a_first(r) and c_to_a_first(r) + 1.
FW_HD int c_to_a_tile(int r) { return r >> 1; }
FW_HD int c_to_a_first(int r) { return (r & 1) * 2; }

// The lanes holding the other columns of a C-fragment row are lane ^ 1 and lane ^ 2 (one quad),
// which is what the row max / row sum shuffles rely on.
FW_HD bool same_row_quad(int a, int b) { return group_id(a) == group_id(b); }

// Shared-memory row pitch (elements of 2 bytes) of a tile with `dp` columns: 16 bytes of padding
// per row makes the 8 row addresses of each ldmatrix phase fall in 8 distinct 16-byte bank groups
// whenever dp is a multiple of 16 (the pitch is then an odd number of 16-byte units).
FW_HD int smem_pitch(int dp) { return dp + 8; }

}  // namespace frag
}  // namespace fastwin
