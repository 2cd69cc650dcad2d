// Plain description of one attention problem, shared by the CPU kernels and the CUDA launchers.
//
// Three problem kinds use the same kernels and differ only in how (group, token) maps to memory:
//   kShifted  qkv [B, H, W, 3C]: group = (image, window), tokens found via window_index.h;
//   kWindows  qkv [B_, N, 3C]:   group = given window, optional additive mask [nW, N, N];
//   kGlobal   qkv [B, N, 3C]:    group = sequence, no bias, no mask.
// C = heads * d; channel order of the packed qkv is (3, heads, d). Outputs are contiguous.
#pragma once

#include <stdint.h>

#include "fastwin/window_index.h"

namespace fastwin {

enum AttnKind : int { kShifted = 0, kWindows = 1, kGlobal = 2 };

struct AttnParams {
  int kind;
  int64_t groups;            // B * nW (kShifted, kWindows) or B (kGlobal)
  int heads, d, N;           // N tokens per group
  int64_t s_group, s_row, s_col, s_chan;  // qkv strides in elements (s_row unused unless kShifted)
  WindowGeom geom;           // kShifted only
  int windows_per_image;     // kShifted: nWh * nWw
  int wh, ww;                // window (relative-position index); 0 for kGlobal
  int mask_windows;          // kWindows with a mask: its leading dim nW; else 0
  bool has_table, has_qkv_bias;
  double scale;              // kept in double so the fp64 path (gradcheck) is exact
};

// Where token n of group g lives. Returns the element offset of its channel 0 in qkv, or -1 when
// it is a padded token (q/k/v = qkv_bias). `out_row` gets its row in the contiguous output
// ([B*H*W] or [groups*N]), -1 if padded; `region` the shift-mask region id.
FW_HD int64_t token_offset(const AttnParams& p, int64_t g, int n, int64_t* out_row, int* region) {
  if (p.kind == kShifted) {
    const int64_t b = g / p.windows_per_image;
    const int win = static_cast<int>(g - b * p.windows_per_image);
    const int pix = window_token_source(p.geom, win, n, region);
    if (pix < 0) {
      *out_row = -1;
      return -1;
    }
    const int y = pix / p.geom.W, x = pix - (pix / p.geom.W) * p.geom.W;
    *out_row = b * p.geom.H * p.geom.W + pix;
    return b * p.s_group + y * p.s_row + x * p.s_col;
  }
  *region = 0;
  *out_row = g * p.N + n;
  return g * p.s_group + n * p.s_col;
}

}  // namespace fastwin
