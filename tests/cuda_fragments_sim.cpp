// CPU checks of the integer maps the tensor-core attention kernels rely on (driven by
// tests/test_cuda_fragments.py; built with g++ against csrc/include, no CUDA needed).
//
//   sim        simulate ldmatrix and mma.m16n8k16 from their PTX ISA definitions (written out
//              again below, independently of fastwin/mma_frag.h) and run the kernels' fragment
//              helpers (same lane maps, same address arithmetic) through them: Q K^T, P V, the
//              transposed products of the backward, accumulator -> A-operand reuse, bank groups;
//              plus the geometry / plan invariants. Prints "ok <check>" or "FAIL ..." lines.
//   maps       the fragment maps as JSON, for an independent transcription of the PTX text in Python
//   geom H W wh ww sh sw pad_roll B
//              per window and token: source pixel (-1 padded), padded-token index, shift-mask region
//              of the window's tile kind, as JSON, for comparison with fastwin.reference.window
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "fastwin/attention_mma.h"
#include "fastwin/mma_frag.h"

using namespace fastwin;

static int g_fail = 0;
#define CHECK(cond, ...)                                    \
  do {                                                      \
    if (!(cond)) {                                          \
      if (++g_fail <= 30) {                                 \
        std::printf("FAIL line %d: ", __LINE__);            \
        std::printf(__VA_ARGS__);                           \
        std::printf("\n");                                  \
      }                                                     \
    }                                                       \
  } while (0)

// ---- PTX semantics, transcribed from the ISA text (not from mma_frag.h) ---------------------------

struct Pair {
  float lo, hi;
};

// ldmatrix.sync.aligned.m8n8.x4{.trans}.b16 (9.7.14.5.15): lanes 8m..8m+7 give the addresses of
// rows 0..7 of matrix m; shared memory is modelled as an array of elements, an address = index.
static void ldmatrix_x4(const std::vector<float>& smem, const int addr[32], bool trans, Pair out[32][4]) {
  for (int l = 0; l < 32; ++l) {
    for (int m = 0; m < 4; ++m) {
      if (!trans) {
        const int row = addr[8 * m + l / 4];
        out[l][m] = {smem[row + 2 * (l % 4)], smem[row + 2 * (l % 4) + 1]};
      } else {
        out[l][m] = {smem[addr[8 * m + 2 * (l % 4)] + l / 4], smem[addr[8 * m + 2 * (l % 4) + 1] + l / 4]};
      }
    }
  }
}

// mma.m16n8k16 .f16/.bf16 -> .f32 (9.7.14.5.8): D = A B + C.
static void ptx_a(int l, int i, int* row, int* col) {
  const int g = l >> 2, t = l % 4;
  *row = (i < 2 || (i >= 4 && i < 6)) ? g : g + 8;
  *col = i < 4 ? t * 2 + (i & 1) : t * 2 + (i & 1) + 8;
}
static void ptx_b(int l, int i, int* row, int* col) {
  const int g = l >> 2, t = l % 4;
  *row = i < 2 ? t * 2 + (i & 1) : t * 2 + (i & 1) + 8;
  *col = g;
}
static void ptx_c(int l, int i, int* row, int* col) {
  const int g = l >> 2, t = l % 4;
  *row = i < 2 ? g : g + 8;
  *col = t * 2 + (i & 1);
}

// One warp's mma: a[l][r] = A register r (two elements), b[l][r] = B register r, c/d[l][i].
static void mma_sim(float d[32][4], const Pair a[32][4], const Pair b[32][2]) {
  double A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    for (int i = 0; i < 8; ++i) {
      int r, c;
      ptx_a(l, i, &r, &c);
      A[r][c] = (i & 1) ? a[l][i / 2].hi : a[l][i / 2].lo;
    }
    for (int i = 0; i < 4; ++i) {
      int r, c;
      ptx_b(l, i, &r, &c);
      B[r][c] = (i & 1) ? b[l][i / 2].hi : b[l][i / 2].lo;
    }
    for (int i = 0; i < 4; ++i) {
      int r, c;
      ptx_c(l, i, &r, &c);
      C[r][c] = d[l][i];
    }
  }
  for (int l = 0; l < 32; ++l) {
    for (int i = 0; i < 4; ++i) {
      int r, c;
      ptx_c(l, i, &r, &c);
      double v = C[r][c];
      for (int k = 0; k < 16; ++k) v += A[r][k] * B[k][c];
      d[l][i] = static_cast<float>(v);
    }
  }
}

// ---- the kernels' helpers, replayed on the simulator (same maps, same address arithmetic) ---------

// A shared tile: `rows` x D elements at pitch frag::smem_pitch(D), filled with small integers so
// every product and sum below is exact in float.
struct Tile {
  int rows, D, pitch;
  std::vector<float> m;  // logical rows x D
  std::vector<float> smem;
  Tile(int rows_, int D_, std::mt19937& rng) : rows(rows_), D(D_), pitch(frag::smem_pitch(D_)) {
    m.resize(size_t(rows) * D);
    smem.assign(size_t(rows) * pitch, 1e30f);  // padding columns must never be read
    std::uniform_int_distribution<int> u(-3, 3);
    for (int r = 0; r < rows; ++r)
      for (int c = 0; c < D; ++c) smem[size_t(r) * pitch + c] = m[size_t(r) * D + c] = float(u(rng));
  }
  float at(int r, int c) const { return m[size_t(r) * D + c]; }
};

// load_a_frags: A fragments of rows r0..r0+15 (one per 16-column step kk).
static void load_a_frags(const Tile& t, int r0, int kk, Pair f[32][4]) {
  int addr[32];
  for (int l = 0; l < 32; ++l) {
    const frag::RC rc = frag::ldsm_a_lane(l);
    addr[l] = (r0 + rc.row) * t.pitch + rc.col + kk * 16;
  }
  ldmatrix_x4(t.smem, addr, false, f);
}

// mma_abt: c0 / c1 += A B^T with B = rows b0..b0+15 of `b` stored [n][k].
static void mma_abt(float c0[32][4], float c1[32][4], const Tile& a, int a0, const Tile& b, int b0) {
  for (int kk = 0; kk < a.D / 16; ++kk) {
    Pair af[32][4], f[32][4];
    load_a_frags(a, a0, kk, af);
    int addr[32];
    for (int l = 0; l < 32; ++l) {
      const frag::RC rc = frag::ldsm_b_lane(l);
      addr[l] = (b0 + rc.row) * b.pitch + rc.col + kk * 16;
    }
    ldmatrix_x4(b.smem, addr, false, f);
    Pair bb0[32][2], bb1[32][2];
    for (int l = 0; l < 32; ++l) {
      bb0[l][0] = f[l][0];
      bb0[l][1] = f[l][1];
      bb1[l][0] = f[l][2];
      bb1[l][1] = f[l][3];
    }
    mma_sim(c0, af, bb0);
    mma_sim(c1, af, bb1);
  }
}

// c_to_a: accumulator n-tiles (k 0-7, 8-15) -> A fragment (values kept exact: no rounding here).
static void c_to_a(Pair a[32][4], const float c0[32][4], const float c1[32][4]) {
  for (int l = 0; l < 32; ++l) {
    for (int r = 0; r < 4; ++r) {
      const float(*c)[4] = frag::c_to_a_tile(r) ? c1 : c0;
      const int e = frag::c_to_a_first(r);
      a[l][r] = {c[l][e], c[l][e + 1]};
    }
  }
}

struct Acc {
  float v[32][4] = {};
};

// mma_ab: acc[j] += A B for all D / 8 n-tiles, B = rows b0..b0+15 of `b` stored [k][n] (.trans).
static void mma_ab(std::vector<Acc>& acc, const Pair af[32][4], const Tile& b, int b0) {
  for (int j = 0; j < b.D / 16; ++j) {
    int addr[32];
    for (int l = 0; l < 32; ++l) {
      const frag::RC rc = frag::ldsm_a_lane(l);
      addr[l] = (b0 + rc.row) * b.pitch + rc.col + j * 16;
    }
    Pair f[32][4];
    ldmatrix_x4(b.smem, addr, true, f);
    Pair bb0[32][2], bb1[32][2];
    for (int l = 0; l < 32; ++l) {
      bb0[l][0] = f[l][0];
      bb0[l][1] = f[l][1];
      bb1[l][0] = f[l][2];
      bb1[l][1] = f[l][3];
    }
    mma_sim(acc[2 * j].v, af, bb0);
    mma_sim(acc[2 * j + 1].v, af, bb1);
  }
}

static float c_value(const float c[32][4], int row, int col) {
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const frag::RC rc = frag::mma_c(l, i);
      if (rc.row == row && rc.col == col) return c[l][i];
    }
  return NAN;
}

// The forward's and the backward's products on one 16-row tile against 32 rows of the other side:
// S = Q K^T, O = f(S) V (queries own), S^T = K Q^T, dV = f(S^T) dO (keys own).
static void check_products(int D, std::mt19937& rng) {
  Tile Q(32, D, rng), K(48, D, rng), V(48, D, rng);
  const int q0 = 16, k0 = 16;  // a tile that does not start at row 0
  for (int u = 0; u < 2; ++u) {
    float s0[32][4] = {}, s1[32][4] = {};
    mma_abt(s0, s1, Q, q0, K, k0 + 16 * u);
    bool ok = true;
    for (int r = 0; r < 16; ++r)
      for (int c = 0; c < 16; ++c) {
        double ref = 0;
        for (int e = 0; e < D; ++e) ref += double(Q.at(q0 + r, e)) * K.at(k0 + 16 * u + c, e);
        const float got = c_value(c < 8 ? s0 : s1, r, c % 8);
        ok &= got == float(ref);
      }
    CHECK(ok, "S = Q K^T mismatch (D=%d, unit %d)", D, u);

    // P = a small exact function of S, fed back as the A operand of P V.
    float p0[32][4], p1[32][4];
    for (int l = 0; l < 32; ++l)
      for (int i = 0; i < 4; ++i) {
        p0[l][i] = std::fmod(s0[l][i], 5.f);
        p1[l][i] = std::fmod(s1[l][i], 5.f);
      }
    Pair pa[32][4];
    c_to_a(pa, p0, p1);
    std::vector<Acc> o(D / 8);
    mma_ab(o, pa, V, k0 + 16 * u);
    ok = true;
    for (int r = 0; r < 16; ++r)
      for (int c = 0; c < D; ++c) {
        double ref = 0;
        for (int k = 0; k < 16; ++k) ref += double(c_value(k < 8 ? p0 : p1, r, k % 8)) * V.at(k0 + 16 * u + k, c);
        ok &= c_value(o[c / 8].v, r, c % 8) == float(ref);
      }
    CHECK(ok, "O = P V mismatch (D=%d, unit %d)", D, u);
  }
  // Key side: S^T = K Q^T (A = K rows), then dV = P^T dO with dO read transposed.
  Tile dO(32, D, rng);
  float t0[32][4] = {}, t1[32][4] = {};
  mma_abt(t0, t1, K, k0, Q, q0);
  bool ok = true;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) {
      double ref = 0;
      for (int e = 0; e < D; ++e) ref += double(K.at(k0 + r, e)) * Q.at(q0 + c, e);
      ok &= c_value(c < 8 ? t0 : t1, r, c % 8) == float(ref);
    }
  CHECK(ok, "S^T = K Q^T mismatch (D=%d)", D);
  Pair pa[32][4];
  c_to_a(pa, t0, t1);
  std::vector<Acc> dv(D / 8);
  mma_ab(dv, pa, dO, q0);
  ok = true;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < D; ++c) {
      double ref = 0;
      for (int q = 0; q < 16; ++q) ref += double(c_value(q < 8 ? t0 : t1, r, q % 8)) * dO.at(q0 + q, c);
      ok &= c_value(dv[c / 8].v, r, c % 8) == float(ref);
    }
  CHECK(ok, "dV = P^T dO mismatch (D=%d)", D);
}

// Every 8-lane phase of every ldmatrix the kernels issue hits 8 distinct 16-byte bank groups.
static void check_banks(int D) {
  const int pitch_bytes = frag::smem_pitch(D) * 2;
  for (int map = 0; map < 2; ++map)
    for (int r0 = 0; r0 < 64; r0 += 16)
      for (int kk = 0; kk < D / 16; ++kk)
        for (int m = 0; m < 4; ++m) {
          std::set<int> groups;
          for (int l = 8 * m; l < 8 * m + 8; ++l) {
            const frag::RC rc = map ? frag::ldsm_b_lane(l) : frag::ldsm_a_lane(l);
            const int byte = (r0 + rc.row) * pitch_bytes + (rc.col + kk * 16) * 2;
            CHECK(byte % 16 == 0, "ldmatrix row address not 16-byte aligned");
            groups.insert((byte / 16) % 8);
          }
          CHECK(groups.size() == 8, "bank conflict: D=%d map=%d r0=%d kk=%d matrix=%d", D, map, r0, kk, m);
        }
}

static void check_quads() {
  for (int l = 0; l < 32; ++l)
    for (int x : {1, 2, 3}) CHECK(frag::same_row_quad(l, l ^ x), "quad %d^%d", l, x);
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const frag::RC c = frag::mma_c(l, i);
      for (int x : {1, 2, 3}) CHECK(frag::mma_c(l ^ x, i).row == c.row, "C row not shared by the quad");
    }
}

// ---- geometry ------------------------------------------------------------------------------------

static AttnParams shifted_params(int B, int H, int W, int wh, int ww, int sh, int sw, bool pad_roll, int64_t sg,
                                 int64_t sr, int64_t sc) {
  AttnParams p{};
  p.kind = kShifted;
  p.heads = 2;
  p.d = 8;
  p.geom = make_window_geom(H, W, wh, ww, sh, sw, pad_roll);
  p.windows_per_image = p.geom.nWh * p.geom.nWw;
  p.groups = int64_t(B) * p.windows_per_image;
  p.N = wh * ww;
  p.wh = wh;
  p.ww = ww;
  p.s_group = sg;
  p.s_row = sr;
  p.s_col = sc;
  p.s_chan = 1;
  p.has_table = true;
  p.has_qkv_bias = true;
  return p;
}

static void check_geometry(int H, int W, int wh, int ww, int sh, int sw, bool pad_roll) {
  const int B = 2;
  const AttnParams p = shifted_params(B, H, W, wh, ww, sh, sw, pad_roll, 100003, 977, 13);
  const int64_t npad = mma_plan::padded_per_image(p.geom);
  std::vector<int> seen_pad(size_t(B * npad), 0), seen_pix(size_t(B) * H * W, 0);
  for (int64_t g = 0; g < p.groups; ++g) {
    const mma_plan::GroupLoc L = mma_plan::group_loc(p, g);
    const int kind = mma_plan::tile_kind(p, g, false);
    CHECK(kind >= 0 && kind < mma_plan::tile_kinds(p, false), "kind out of range");
    for (int n = 0; n < p.N; ++n) {
      int64_t row_ref, row;
      int region;
      const int64_t off_ref = token_offset(p, g, n, &row_ref, &region);
      const int64_t off = mma_plan::token_src(p, L, n, &row);
      CHECK(off == off_ref && row == row_ref, "token_src != token_offset (g=%lld n=%d)", (long long)g, n);
      CHECK(mma_plan::kind_region(p, kind, n) == region, "kind region != window region (g=%lld n=%d)",
            (long long)g, n);
      const int64_t pi = mma_plan::padded_token_index(p.geom, L.win, n);
      CHECK((pi >= 0) == (off_ref == -1), "padded index / token_offset disagree");
      if (pi >= 0) {
        CHECK(pi < npad, "padded index out of range");
        if (pi < npad) seen_pad[size_t(L.image * npad + pi)]++;
      } else {
        seen_pix[size_t(row_ref)]++;
      }
    }
  }
  for (int v : seen_pad)
    CHECK(v == 1, "padded index not a bijection (H=%d W=%d w=%d,%d s=%d,%d)", H, W, wh, ww, sh, sw);
  for (int v : seen_pix) CHECK(v == 1, "pixel not covered exactly once");
  // Given / global attention: token_src == token_offset as well.
  for (int kind : {kWindows, kGlobal}) {
    AttnParams q{};
    q.kind = kind;
    q.groups = 5;
    q.heads = 3;
    q.d = 8;
    q.N = 37;
    q.s_group = 9001;
    q.s_col = 77;
    q.s_chan = 1;
    for (int64_t g = 0; g < q.groups; ++g) {
      const mma_plan::GroupLoc L = mma_plan::group_loc(q, g);
      for (int n = 0; n < q.N; ++n) {
        int64_t r0, r1;
        int reg;
        CHECK(token_offset(q, g, n, &r0, &reg) == mma_plan::token_src(q, L, n, &r1) && r0 == r1, "token_src");
      }
    }
  }
}

static void check_rel_pairs(int wh, int ww) {
  const int N = wh * ww, T = rel_pos_table_size(wh, ww);
  std::vector<int> seen(size_t(N) * N, 0);
  for (int t = 0; t < T; ++t) {
    const mma_plan::RelPairs r = mma_plan::rel_pairs(t, wh, ww);
    for (int y = r.y0; y < r.y1; ++y)
      for (int x = r.x0; x < r.x1; ++x) {
        const int i = y * ww + x, j = (y - r.dy) * ww + (x - r.dx);
        CHECK(j >= 0 && j < N && rel_pos_index(i, j, wh, ww) == t, "rel pair (t=%d)", t);
        if (j >= 0 && j < N) seen[size_t(i) * N + j]++;
      }
  }
  for (int v : seen) CHECK(v == 1, "rel pairs not a partition (w=%d,%d)", wh, ww);
}

static void check_plan(const AttnParams& p, bool has_mask, bool want_mask) {
  for (int hint = 0; hint < 4; ++hint)
  for (int sms : {1, 108, 132}) {
    mma_plan::PlanHints hints;
    hints.mode = hint % 3;
    hints.per_slot = hint == 3 ? 3 : 0;
    const mma_plan::MmaPlan m = mma_plan::make_plan(p, has_mask, true, true, want_mask, true, sms, hints);
    if (hints.mode == 2) CHECK(!m.fwd_resident && !m.qo_resident && !m.ko_resident, "streaming hint");
    CHECK(m.dp >= p.d && m.dp % 32 == 0, "padded head dim");
    // resident modes fit their budget, streaming fits sm_80's 163 KiB
    CHECK(mma_plan::fwd_smem(m.fwd_resident, m.n16, m.dp) <= (m.fwd_resident ? mma_plan::kResidentBudget : 163 * 1024),
          "fwd smem");
    CHECK(mma_plan::qo_smem(m.qo_resident, m.n16, m.dp) <= (m.qo_resident ? mma_plan::kResidentBudget : 163 * 1024),
          "qo smem");
    CHECK(mma_plan::ko_smem(m.ko_resident, m.n16, m.dp, m.acc_smem) <=
              (m.ko_resident ? mma_plan::kResidentBudget : 163 * 1024),
          "ko smem");
    // workspace regions in order, 256-aligned
    const size_t offs[] = {m.off_tile, m.off_tileT, m.off_delta,    m.off_acc,
                           m.off_sum,  m.off_pad,   m.off_pad_part, m.total};
    for (size_t k = 0; k + 1 < sizeof(offs) / sizeof(offs[0]); ++k)
      CHECK(offs[k] % 256 == 0 && offs[k] <= offs[k + 1], "workspace layout");
    // every group is visited by exactly one backward slot step; slots of one period index share
    // the mask window g % period
    std::vector<int> seen(size_t(p.groups), 0);
    for (int64_t s = 0; s < m.slots; ++s) {
      const int64_t n = mma_plan::slot_steps(s, m.per_slot, m.period, m.per_period);
      CHECK(n >= 1 && n <= m.per_slot, "slot without groups");
      for (int64_t i = 0; i < n; ++i) {
        const int64_t g = mma_plan::slot_group(s, i, m.per_slot, m.period);
        CHECK(g >= 0 && g < p.groups, "slot group out of range");
        CHECK(g % m.period == s % m.period, "slot mixes mask windows");
        if (g >= 0 && g < p.groups) seen[size_t(g)]++;
      }
    }
    for (int v : seen) CHECK(v == 1, "slots do not partition the groups");
    if (m.pad) CHECK(m.pad_chunks <= 65535 && m.pad_chunks * m.pad_chunk_rows >= m.pad_rows, "pad chunks");
  }
}

static int run_sim() {
  std::mt19937 rng(1234);
  for (int D : {32, 64, 96, 128}) {
    check_products(D, rng);
    check_banks(D);
  }
  std::printf("ok products\nok banks\n");
  check_quads();
  std::printf("ok quads\n");
  const int geoms[][7] = {{14, 14, 7, 7, 3, 3, 0}, {10, 13, 7, 7, 3, 3, 0}, {10, 13, 7, 7, 3, 3, 1},
                          {9, 9, 12, 12, 6, 6, 1}, {5, 5, 12, 12, 6, 6, 0}, {17, 11, 8, 8, 4, 4, 1},
                          {16, 16, 16, 16, 8, 8, 0}, {12, 20, 6, 10, 3, 5, 1}, {7, 7, 7, 7, 0, 0, 0},
                          {9, 15, 7, 7, 3, 0, 1}};
  for (const auto& gm : geoms) check_geometry(gm[0], gm[1], gm[2], gm[3], gm[4], gm[5], gm[6] != 0);
  std::printf("ok geometry\n");
  for (int w : {1, 2, 7, 12, 16}) check_rel_pairs(w, w);
  check_rel_pairs(6, 10);
  std::printf("ok rel_pairs\n");
  check_plan(shifted_params(128, 56, 56, 7, 7, 3, 3, false, 1, 1, 1), false, false);    // Swin-T stage 1
  check_plan(shifted_params(3, 29, 31, 12, 12, 6, 6, true, 1, 1, 1), false, false);     // padded, w12
  check_plan(shifted_params(2, 64, 64, 16, 16, 8, 8, false, 1, 1, 1), false, false);    // w16
  AttnParams win = shifted_params(1, 1, 1, 7, 7, 0, 0, false, 1, 1, 1);
  win.kind = kWindows;
  win.groups = 8 * 64;
  win.mask_windows = 64;
  check_plan(win, true, true);
  AttnParams glob = win;
  glob.kind = kGlobal;
  glob.groups = 4;
  glob.heads = 12;
  glob.N = 3137;
  glob.d = 64;
  glob.has_table = false;
  check_plan(glob, false, false);
  glob.d = 128;
  glob.N = 197;
  check_plan(glob, false, false);
  std::printf("ok plan\n");
  return g_fail ? 1 : 0;
}

static int run_maps() {
  std::printf("{\"a\": [");
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 8; ++i) {
      const frag::RC rc = frag::mma_a(l, i);
      std::printf("%s[%d, %d]", l || i ? ", " : "", rc.row, rc.col);
    }
  std::printf("], \"b\": [");
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const frag::RC rc = frag::mma_b(l, i);
      std::printf("%s[%d, %d]", l || i ? ", " : "", rc.row, rc.col);
    }
  std::printf("], \"c\": [");
  for (int l = 0; l < 32; ++l)
    for (int i = 0; i < 4; ++i) {
      const frag::RC rc = frag::mma_c(l, i);
      std::printf("%s[%d, %d]", l || i ? ", " : "", rc.row, rc.col);
    }
  std::printf("], \"ldsm_a\": [");
  for (int l = 0; l < 32; ++l)
    std::printf("%s[%d, %d]", l ? ", " : "", frag::ldsm_a_lane(l).row, frag::ldsm_a_lane(l).col);
  std::printf("], \"ldsm_b\": [");
  for (int l = 0; l < 32; ++l)
    std::printf("%s[%d, %d]", l ? ", " : "", frag::ldsm_b_lane(l).row, frag::ldsm_b_lane(l).col);
  std::printf("]}\n");
  return 0;
}

static int run_geom(int argc, char** argv) {
  if (argc < 10) return 2;
  const int H = std::atoi(argv[2]), W = std::atoi(argv[3]), wh = std::atoi(argv[4]), ww = std::atoi(argv[5]);
  const int sh = std::atoi(argv[6]), sw = std::atoi(argv[7]), pr = std::atoi(argv[8]), B = std::atoi(argv[9]);
  const AttnParams p = shifted_params(B, H, W, wh, ww, sh, sw, pr != 0, int64_t(H) * W, W, 1);
  std::printf("{\"kinds\": %d, \"npad\": %lld, \"windows\": [", mma_plan::tile_kinds(p, false),
              (long long)mma_plan::padded_per_image(p.geom));
  for (int64_t g = 0; g < p.groups; ++g) {
    const mma_plan::GroupLoc L = mma_plan::group_loc(p, g);
    const int kind = mma_plan::tile_kind(p, g, false);
    std::printf("%s{\"kind\": %d, \"src\": [", g ? ", " : "", kind);
    for (int n = 0; n < p.N; ++n) {
      int64_t row;
      mma_plan::token_src(p, L, n, &row);
      std::printf("%s%lld", n ? ", " : "", (long long)row);
    }
    std::printf("], \"pad\": [");
    for (int n = 0; n < p.N; ++n)
      std::printf("%s%lld", n ? ", " : "", (long long)mma_plan::padded_token_index(p.geom, L.win, n));
    std::printf("], \"region\": [");
    for (int n = 0; n < p.N; ++n) std::printf("%s%d", n ? ", " : "", mma_plan::kind_region(p, kind, n));
    std::printf("]}");
  }
  std::printf("]}\n");
  return 0;
}

int main(int argc, char** argv) {
  const std::string cmd = argc > 1 ? argv[1] : "sim";
  if (cmd == "sim") return run_sim();
  if (cmd == "maps") return run_maps();
  if (cmd == "geom") return run_geom(argc, argv);
  std::fprintf(stderr, "usage: %s sim | maps | geom H W wh ww sh sw pad_roll B\n", argv[0]);
  return 2;
}
