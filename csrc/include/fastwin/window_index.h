// Index arithmetic of Swin's shift / pad / partition / reverse, shared by the CPU and CUDA kernels.
//
// Everything a fused kernel needs to map "token n of window w" to a pixel of the un-partitioned
// map lives here, so the CPU and CUDA paths cannot drift apart. Conventions (SPEC §2, reference
// fastwin/reference/window.py):
//   * the map is H x W, padded bottom/right to Hp x Wp (multiples of the window);
//   * "roll_pad" (timm) rolls the H x W map by -shift, then pads; "pad_roll" pads, then rolls the
//     padded Hp x Wp map; in both, the shift mask comes from region ids over the padded grid;
//   * a padded token reads q/k/v = qkv_bias and its output is discarded;
//   * relative_position_index(i, j) = (dy + Wh - 1) * (2 Ww - 1) + (dx + Ww - 1), (dy, dx) = pos(i) - pos(j).
// Header-only and free of torch / CUDA runtime includes so `nvcc -c` works on any machine.
#pragma once

#include <stdint.h>

#if defined(__CUDACC__)
#define FW_HD __host__ __device__ __forceinline__
#else
#define FW_HD inline
#endif

namespace fastwin {

// The -100.0 of the official shift mask (not -inf: masked logits keep a tiny weight).
constexpr float kShiftMaskValue = -100.0f;

FW_HD int ceil_to(int x, int m) { return (x + m - 1) / m * m; }

// Geometry of shifted-window attention over one image.
struct WindowGeom {
  int H, W;        // map
  int Hp, Wp;      // padded map
  int wh, ww;      // window
  int sh, sw;      // shift (0 <= s < window; may exceed H / W, see shifted_source)
  int nWh, nWw;    // windows per column / row of the padded map
  bool pad_roll;   // true: pad then roll (detection code); false: roll then pad (timm)
};

FW_HD WindowGeom make_window_geom(int H, int W, int wh, int ww, int sh, int sw, bool pad_roll) {
  WindowGeom g;
  g.H = H; g.W = W; g.wh = wh; g.ww = ww; g.sh = sh; g.sw = sw; g.pad_roll = pad_roll;
  g.Hp = ceil_to(H, wh); g.Wp = ceil_to(W, ww);
  g.nWh = g.Hp / wh; g.nWw = g.Wp / ww;
  return g;
}

// Source coordinate, along one axis, of position p of the shifted padded axis; -1 for padding.
// roll_pad: shifted[p] = x[(p + s) mod size] for p < size, padding beyond.
// pad_roll: shifted[p] = padded[(p + s) mod padded], padding where that lands at >= size.
// torch.roll wraps any shift, and the shift is only bounded by the window, which may exceed the map
// (e.g. a 5x5 map with window 12, shift 6): a single conditional subtraction is not enough, so the
// wrap is a true modulo. The common case (p + s < size) skips the division.
FW_HD int shifted_source(int p, int size, int padded, int shift, bool pad_roll) {
  if (pad_roll) {
    int q = p + shift;
    if (q >= padded) q %= padded;
    return q < size ? q : -1;
  }
  if (p >= size) return -1;
  int q = p + shift;
  if (q >= size) q %= size;
  return q;
}

// Region id (0, 1, 2) of position p of a padded, shifted axis: the official slices
// (0, -window), (-window, -shift), (-shift, None); a single region without shift.
FW_HD int region_id(int p, int padded, int window, int shift) {
  return shift > 0 ? (p >= padded - window) + (p >= padded - shift) : 0;
}

// Token n (row-major inside the window) of window `win` (row-major over the padded map of one
// image): its source pixel y * W + x, or -1 for a padded token; `region` gets the shift-mask id.
FW_HD int window_token_source(const WindowGeom& g, int win, int n, int* region) {
  const int py = (win / g.nWw) * g.wh + n / g.ww;
  const int px = (win % g.nWw) * g.ww + n % g.ww;
  *region = region_id(py, g.Hp, g.wh, g.sh) * 3 + region_id(px, g.Wp, g.ww, g.sw);
  const int y = shifted_source(py, g.H, g.Hp, g.sh, g.pad_roll);
  const int x = shifted_source(px, g.W, g.Wp, g.sw, g.pad_roll);
  return (y < 0 || x < 0) ? -1 : y * g.W + x;
}

// Index into the [(2Wh-1)(2Ww-1), heads] bias table for query i and key j of a window.
FW_HD int rel_pos_index(int i, int j, int wh, int ww) {
  const int dy = i / ww - j / ww;
  const int dx = i % ww - j % ww;
  return (dy + wh - 1) * (2 * ww - 1) + (dx + ww - 1);
}

FW_HD int rel_pos_table_size(int wh, int ww) { return (2 * wh - 1) * (2 * ww - 1); }

}  // namespace fastwin
