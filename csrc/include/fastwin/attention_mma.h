// Plan of the tensor-core attention kernels (csrc/cuda/attention_mma.cu): the dense per-call
// bias+mask tile, the padded-token index of the qkv_bias gradient, the tile sizes, which kernels
// keep a whole window in shared memory, and the workspace layout. Plain C++ shared by the CUDA
// launcher, the torch bindings (workspace size) and the CPU tests (tests/test_cuda_fragments.py).
//
// Bias tile. Once per call the relative-position bias table and the masks are gathered into
//   tile[kind][th][i][j] = log2(e) * (table[rel(i, j), h] + mask_kind(i, j))     fp32, [n16 x n16]
// (th = heads with a table, else 1; zero outside i, j < N), the kernels' softmax being base 2.
// Kinds: for shifted windows only the windows of the last window row / column hold more than one
// shift-mask region, so there are (sh > 0 ? 2 : 1) * (sw > 0 ? 2 : 1) kinds (last row?, last
// column?); for given windows with a mask, one kind per mask window; else one kind. The backward
// also reads the transposed copy tileT[kind][th][j][i].
#pragma once

#include <stddef.h>
#include <stdint.h>

#include "fastwin/attention_params.h"

namespace fastwin {
namespace mma_plan {

constexpr int kWarps = 4;
constexpr int kThreads = kWarps * 32;
constexpr int kBlockRows = kWarps * 16;          // rows of a CTA block: one 16-row mma tile per warp
constexpr float kLog2e = 1.4426950408889634f;    // 1 / ln 2: logits are kept in base 2
constexpr int kMaxHeadDim = 128;

FW_HD int round16(int n) { return (n + 15) / 16 * 16; }

// Head dims are padded (with zeros in shared memory) to the next compiled tile width.
FW_HD int padded_head_dim(int d) {
  return d <= 0 ? -1 : d <= 32 ? 32 : d <= 64 ? 64 : d <= 96 ? 96 : d <= kMaxHeadDim ? 128 : -1;
}

FW_HD int tile_kinds_x(const AttnParams& p) { return p.kind == kShifted && p.geom.sw > 0 ? 2 : 1; }
FW_HD int tile_kinds_y(const AttnParams& p) { return p.kind == kShifted && p.geom.sh > 0 ? 2 : 1; }

// Number of bias-tile kinds; `has_mask` = given-window attention with a mask.
FW_HD int tile_kinds(const AttnParams& p, bool has_mask) {
  if (p.kind == kShifted) return tile_kinds_y(p) * tile_kinds_x(p);
  return has_mask ? p.mask_windows : 1;
}

// Whether the kernels read a bias tile at all.
FW_HD bool uses_tile(const AttnParams& p, bool has_mask) {
  if (p.kind == kGlobal) return false;
  if (p.kind == kShifted) return p.has_table || p.geom.sh > 0 || p.geom.sw > 0;
  return p.has_table || has_mask;
}

// Kind of group g's tile.
FW_HD int tile_kind(const AttnParams& p, int64_t g, bool has_mask) {
  if (p.kind == kShifted) {
    const int win = static_cast<int>(g % p.windows_per_image);
    const int wy = win / p.geom.nWw, wx = win % p.geom.nWw;
    const int ky = p.geom.sh > 0 && wy == p.geom.nWh - 1;
    const int kx = p.geom.sw > 0 && wx == p.geom.nWw - 1;
    return ky * tile_kinds_x(p) + kx;
  }
  return has_mask ? static_cast<int>(g % p.mask_windows) : 0;
}

// Shift-mask region of token n in a window of kind `kind` (kShifted): region_id() of window_index.h
// evaluated in a window of the last row / column when the kind says so, in the first otherwise.
FW_HD int kind_region(const AttnParams& p, int kind, int n) {
  const int ky = kind / tile_kinds_x(p), kx = kind % tile_kinds_x(p);
  const WindowGeom& g = p.geom;
  const int py = (ky ? g.nWh - 1 : 0) * g.wh + n / g.ww;
  const int px = (kx ? g.nWw - 1 : 0) * g.ww + n % g.ww;
  return region_id(py, g.Hp, g.wh, g.sh) * 3 + region_id(px, g.Wp, g.ww, g.sw);
}

// ---- token locations without 64-bit division in the kernels' inner loops ----------------------------

// Where group g lives: the one 64-bit division of token_offset() done once per group.
struct GroupLoc {
  int64_t base;      // element offset of the group's image (kShifted) or group (else) in qkv
  int64_t out_base;  // first output row of the image / group
  int64_t image;     // kShifted: image index b
  int win;           // kShifted: window index in the image
};

FW_HD GroupLoc group_loc(const AttnParams& p, int64_t g) {
  GroupLoc L;
  if (p.kind == kShifted) {
    L.image = g / p.windows_per_image;
    L.win = static_cast<int>(g - L.image * p.windows_per_image);
    L.base = L.image * p.s_group;
    L.out_base = L.image * p.geom.H * p.geom.W;
  } else {
    L.image = g;
    L.win = 0;
    L.base = g * p.s_group;
    L.out_base = g * p.N;
  }
  return L;
}

// Same result as token_offset(p, g, n, out_row, region) for the group of L: element offset of
// token n's channel 0 in qkv, or -1 for a padded token (then *out_row = -1).
FW_HD int64_t token_src(const AttnParams& p, const GroupLoc& L, int n, int64_t* out_row) {
  if (p.kind == kShifted) {
    int region;
    const int pix = window_token_source(p.geom, L.win, n, &region);
    if (pix < 0) {
      *out_row = -1;
      return -1;
    }
    const int y = pix / p.geom.W, x = pix - (pix / p.geom.W) * p.geom.W;
    *out_row = L.out_base + pix;
    return L.base + y * p.s_row + x * p.s_col;
  }
  *out_row = L.out_base + n;
  return L.base + n * p.s_col;
}

// ---- padded tokens (kShifted): their q/k/v are qkv_bias, so their gradients sum into dqkv_bias. ----

FW_HD int64_t padded_per_image(const WindowGeom& g) {
  return int64_t(g.Hp) * g.Wp - int64_t(g.H) * g.W;
}

// Index in [0, padded_per_image) of token n of window `win` if it is a padded token, else -1.
// Positions are taken in the un-rolled padded frame (roll_pad: the shifted frame itself, whose
// padding is the bottom/right band; pad_roll: shifted position + shift mod padded size), where the
// padding is rows >= H, then columns >= W of the remaining rows.
FW_HD int64_t padded_token_index(const WindowGeom& g, int win, int n) {
  int py = (win / g.nWw) * g.wh + n / g.ww;
  int px = (win % g.nWw) * g.ww + n % g.ww;
  if (g.pad_roll) {
    py = (py + g.sh) % g.Hp;
    px = (px + g.sw) % g.Wp;
  }
  if (py >= g.H) return int64_t(py - g.H) * g.Wp + px;
  if (px >= g.W) return int64_t(g.Hp - g.H) * g.Wp + int64_t(py) * (g.Wp - g.W) + (px - g.W);
  return -1;
}

// ---- bias-table gradient fold --------------------------------------------------------------------

// The (query i, key j) pairs with rel_pos_index(i, j) = t are i = (y, x), j = (y - dy, x - dx) for
// y in [y0, y1), x in [x0, x1); the fold kernel visits them in this (fixed) order.
struct RelPairs {
  int dy, dx, y0, y1, x0, x1;
};

FW_HD RelPairs rel_pairs(int t, int wh, int ww) {
  RelPairs r;
  r.dy = t / (2 * ww - 1) - (wh - 1);
  r.dx = t % (2 * ww - 1) - (ww - 1);
  r.y0 = r.dy > 0 ? r.dy : 0;
  r.y1 = r.dy < 0 ? wh + r.dy : wh;
  r.x0 = r.dx > 0 ? r.dx : 0;
  r.x1 = r.dx < 0 ? ww + r.dx : ww;
  return r;
}

// ---- sizes, modes and workspace ------------------------------------------------------------------

// Shared memory of a kernel in each mode. "Resident": the CTA keeps every row of its (group, head)
// it needs (the whole window) in shared memory, loaded once with cp.async; "streaming": 64-row
// blocks, the other operand double-buffered. Rows are `smem_pitch` = d_pad + 8 elements of 2 bytes.
constexpr size_t kRowInfoBytes = kWarps * 16 * 16;  // per-warp output-row table (2 x int64 per row)
constexpr size_t kResidentBudget = 48 * 1024;       // >= 3 CTAs per SM on sm_80, 4 on sm_90

FW_HD size_t tile_bytes(int rows, int dp) { return size_t(rows) * (dp + 8) * 2; }
FW_HD size_t fwd_smem(bool resident, int n16, int dp) {
  return kRowInfoBytes + (resident ? 3 * tile_bytes(n16, dp) : 5 * tile_bytes(kBlockRows, dp));
}
FW_HD size_t qo_smem(bool resident, int n16, int dp) {
  return kRowInfoBytes + (resident ? 4 * tile_bytes(n16, dp) : 6 * tile_bytes(kBlockRows, dp));
}
FW_HD size_t ko_smem(bool resident, int n16, int dp, bool acc_smem) {
  if (!resident) return kRowInfoBytes + 6 * tile_bytes(kBlockRows, dp) + 4 * kBlockRows * 4;
  return kRowInfoBytes + 4 * tile_bytes(n16, dp) + 2 * size_t(n16) * 4 + (acc_smem ? size_t(n16) * n16 * 4 : 0);
}

struct MmaPlan {
  int dp = 0;                 // padded head dim (template parameter of the kernels)
  int n16 = 0;                // tokens per group rounded up to 16
  int kinds = 0, tile_heads = 0;
  bool tile = false;
  bool fwd_resident = false, qo_resident = false, ko_resident = false, acc_smem = false;
  // Backward key-side CTAs run over "slots": slot s covers groups ((s / period) * per_slot + i) *
  // period + s % period, i < per_slot, and owns the dS accumulator accT[s] (bias / mask gradient).
  int64_t slots = 0, per_slot = 1, period = 1, per_period = 0;
  bool acc = false;           // bias-table or mask gradient wanted
  bool pad = false;           // qkv_bias gradient through padded tokens
  int64_t pad_rows = 0;       // B * padded_per_image
  // workspace byte offsets (each 256-aligned), total bytes
  size_t off_tile = 0, off_tileT = 0, off_delta = 0, off_acc = 0, off_sum = 0, off_pad = 0, off_pad_part = 0;
  size_t total = 0;
  int64_t pad_chunks = 0;     // row chunks of the first qkv_bias reduction level
  int64_t pad_chunk_rows = 0;
};

// Group of the i-th step of backward slot s (i < per_slot, group index < groups).
FW_HD int64_t slot_group(int64_t s, int64_t i, int64_t per_slot, int64_t period) {
  return ((s / period) * per_slot + i) * period + s % period;
}
FW_HD int64_t slot_steps(int64_t s, int64_t per_slot, int64_t period, int64_t per_period) {
  const int64_t first = (s / period) * per_slot;
  return per_slot < per_period - first ? per_slot : per_period - first;
}

constexpr int64_t kPadChunkRows = 1024;

inline size_t align256(size_t x) { return (x + 255) / 256 * 256; }

// Overrides for tests (the CUDA launcher reads them from FASTWIN_CUDA_ATTN_MODE = auto | resident |
// streaming and FASTWIN_CUDA_ATTN_SLOT = groups per backward slot), so that small test shapes reach
// every code path. Resident is still only taken where it fits the shared-memory budget.
struct PlanHints {
  int mode = 0;           // 0 auto, 1 resident where it fits, 2 streaming
  int64_t per_slot = 0;   // > 0: groups per backward slot when dS sums are accumulated
};

// The plan of a call. `bwd` adds the backward's workspaces; want_table / want_mask / want_bias say
// which parameter gradients are wanted; `sms` is the device's SM count (sizes the slot grid).
inline MmaPlan make_plan(const AttnParams& p, bool has_mask, bool bwd, bool want_table, bool want_mask,
                         bool want_bias, int sms, PlanHints hints = PlanHints()) {
  MmaPlan m;
  m.dp = padded_head_dim(p.d);
  m.n16 = round16(p.N);
  m.tile = uses_tile(p, has_mask);
  m.kinds = m.tile ? tile_kinds(p, has_mask) : 0;
  m.tile_heads = p.has_table ? p.heads : 1;
  if (m.dp < 0) return m;
  // Whole (group, head) per CTA when it fits the budget and, beyond one 64-row block, when there
  // are enough (group, head) pairs to fill the GPU without splitting them into blocks.
  const bool many = hints.mode == 2   ? false
                    : hints.mode == 1 ? true
                                      : m.n16 <= kBlockRows || p.groups * p.heads >= 4 * int64_t(sms > 0 ? sms : 132);
  m.fwd_resident = many && fwd_smem(true, m.n16, m.dp) <= kResidentBudget;
  m.qo_resident = many && qo_smem(true, m.n16, m.dp) <= kResidentBudget;
  m.acc = bwd && ((want_table && p.has_table) || (want_mask && has_mask));
  m.acc_smem = m.acc && size_t(m.n16) * m.n16 * 4 <= 16 * 1024;
  m.ko_resident = many && ko_smem(true, m.n16, m.dp, m.acc_smem) <= kResidentBudget;
  if (!m.ko_resident) {
    m.acc_smem = false;
    m.ko_resident = many && ko_smem(true, m.n16, m.dp, false) <= kResidentBudget;
  }
  m.pad = bwd && want_bias && p.kind == kShifted && p.has_qkv_bias && padded_per_image(p.geom) > 0;
  if (m.pad) m.pad_rows = (p.groups / p.windows_per_image) * padded_per_image(p.geom);

  // Backward slots: one group each unless an accumulated (deterministic, fixed-order) dS sum is
  // wanted; then about 8 CTAs per SM, and at most ~64 MiB of accumulators.
  m.period = (m.acc && want_mask && has_mask) ? p.mask_windows : 1;
  m.per_period = p.groups / m.period;
  if (!m.acc) {
    m.per_slot = 1;
  } else {
    const int64_t per_acc = int64_t(p.heads) * m.n16 * m.n16 * 4;
    const int64_t per_chunk = int64_t(m.period) * p.heads;
    int64_t chunks = (int64_t(sms > 0 ? sms : 132) * 8 + per_chunk - 1) / per_chunk;
    const int64_t cap = (int64_t(64) << 20) / (per_acc * m.period);
    if (chunks > cap) chunks = cap;
    if (chunks < 1) chunks = 1;
    if (chunks > m.per_period) chunks = m.per_period;
    m.per_slot = (m.per_period + chunks - 1) / chunks;
    if (hints.per_slot > 0) m.per_slot = hints.per_slot < m.per_period ? hints.per_slot : m.per_period;
  }
  m.slots = (m.per_period + m.per_slot - 1) / m.per_slot * m.period;

  size_t off = 0;
  const size_t tile = m.tile ? size_t(m.kinds) * m.tile_heads * m.n16 * m.n16 * 4 : 0;
  m.off_tile = off;
  off = align256(off + tile);
  m.off_tileT = off;
  if (bwd) off = align256(off + tile);
  m.off_delta = off;
  if (bwd) off = align256(off + size_t(p.groups) * p.heads * m.n16 * 4);
  m.off_acc = off;
  if (m.acc) off = align256(off + size_t(m.slots) * p.heads * m.n16 * m.n16 * 4);
  m.off_sum = off;
  if (m.acc && want_table && p.has_table) off = align256(off + size_t(p.heads) * m.n16 * m.n16 * 4);
  const int64_t C3 = int64_t(3) * p.heads * p.d;
  m.off_pad = off;
  if (m.pad) off = align256(off + size_t(m.pad_rows) * C3 * 4);
  m.pad_chunk_rows = kPadChunkRows;
  while (m.pad && (m.pad_rows + m.pad_chunk_rows - 1) / m.pad_chunk_rows > 65535) m.pad_chunk_rows *= 2;
  m.pad_chunks = m.pad ? (m.pad_rows + m.pad_chunk_rows - 1) / m.pad_chunk_rows : 0;
  m.off_pad_part = off;
  if (m.pad) off = align256(off + size_t(m.pad_chunks) * C3 * 4);
  m.total = off;
  return m;
}

}  // namespace mma_plan
}  // namespace fastwin
