// A small CPU emulation of the CUDA features fastwin's kernels use, so that csrc/cuda/*.cu compile
// as plain C++ (with FASTWIN_CPU_EMULATION, see csrc/cuda/device_compat.cuh) and their logic runs
// against the reference on machines without a GPU (tests/test_cuda_emulation.py).
//
// A block's threads are cooperative fibers (ucontext) run by one OS thread; __syncthreads and
// __syncwarp are barriers; warp-collective instructions (shfl, ldmatrix, mma.m16n8k16) exchange
// their operands through per-lane buffers between two warp barriers and are evaluated from their
// PTX ISA definitions (9.7.14.5.8, 9.7.14.5.15; written out here independently of
// fastwin/mma_frag.h). Misuse a real GPU would not forgive aborts with a message: a barrier not
// reached by every thread (deadlock), ldmatrix / cp.async addresses that are misaligned or outside
// the block's shared memory. Shared memory starts filled with NaN bit patterns so reads of
// never-written shared memory show up. What is not emulated: timing, memory ordering between
// blocks (blocks run one after another), cp.async asynchrony (copies complete immediately).
#pragma once

// CUDA's keywords as plain C++ (host_defines.h keeps definitions made before it).
#define __host__
#define __device__
#define __global__
#define __shared__

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <ucontext.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <tuple>
#include <type_traits>
#include <vector>

#undef __launch_bounds__
#define __launch_bounds__(...)
#undef __maxnreg__
#define __maxnreg__(...)

namespace fw_emu {

[[noreturn]] inline void fail(const char* what) {
  std::fprintf(stderr, "fw_cuda_emu: %s\n", what);
  std::fflush(stderr);
  std::abort();
}

struct Barrier {
  int n = 0, count = 0;
  uint64_t gen = 0;
};

struct Fiber {
  ucontext_t ctx;
  uint3 tid;
  bool done = false;
  uint64_t x[12];  // warp-collective operand exchange
};

struct State {
  ucontext_t main;
  std::vector<Fiber> fibers;
  std::vector<std::vector<char>> stacks;
  int cur = -1;
  uint3 block_idx{0, 0, 0};
  dim3 grid_dim, block_dim;
  std::vector<unsigned char> smem;
  std::function<void()> body;
  Barrier cta;
  std::vector<Barrier> warp;
  bool progress = false;
};

inline State& S() {
  static State s;
  return s;
}
inline Fiber& me() { return S().fibers[S().cur]; }
inline int lane() { return static_cast<int>(me().tid.x & 31); }
inline int warp_id() { return static_cast<int>(me().tid.x >> 5); }
inline uint64_t* xb_of(int l) { return S().fibers[(S().cur & ~31) + l].x; }

inline void yield() { swapcontext(&me().ctx, &S().main); }

inline void wait(Barrier& b) {
  const uint64_t g = b.gen;
  if (++b.count == b.n) {
    b.count = 0;
    ++b.gen;
  } else {
    while (b.gen == g) yield();
  }
  S().progress = true;
}

inline void syncthreads() { wait(S().cta); }
inline void syncwarp() { wait(S().warp[warp_id()]); }

inline void trampoline() {
  S().body();
  me().done = true;
  S().progress = true;
  swapcontext(&me().ctx, &S().main);
}

// Runs one block of `threads` fibers to completion.
inline void run_block(uint3 block, int threads, size_t smem_bytes, std::function<void()> body) {
  State& s = S();
  constexpr size_t kStack = 512 * 1024;
  if (static_cast<int>(s.stacks.size()) < threads) s.stacks.resize(threads, std::vector<char>(kStack));
  s.fibers.assign(threads, Fiber());
  s.block_idx = block;
  s.smem.assign(smem_bytes + 16, 0xff);  // NaN bit patterns in f16, bf16 and f32
  s.body = std::move(body);
  s.cta = Barrier{threads, 0, 0};
  s.warp.assign((threads + 31) / 32, Barrier());
  for (int w = 0; w * 32 < threads; ++w) s.warp[w].n = std::min(32, threads - w * 32);
  for (int t = 0; t < threads; ++t) {
    Fiber& f = s.fibers[t];
    f.tid = uint3{static_cast<unsigned>(t), 0, 0};
    getcontext(&f.ctx);
    f.ctx.uc_stack.ss_sp = s.stacks[t].data();
    f.ctx.uc_stack.ss_size = kStack;
    f.ctx.uc_link = nullptr;
    makecontext(&f.ctx, trampoline, 0);
  }
  for (;;) {
    bool live = false;
    s.progress = false;
    for (int t = 0; t < threads; ++t) {
      if (s.fibers[t].done) continue;
      live = true;
      s.cur = t;
      swapcontext(&s.main, &s.fibers[t].ctx);
    }
    s.cur = -1;
    if (!live) return;
    if (!s.progress) fail("deadlock: a barrier or warp-collective instruction is not reached by every thread");
  }
}

template <class K>
struct Launcher {
  K kernel;
  dim3 grid, block;
  size_t smem;
  template <class... A>
  void operator()(A&&... args) const {
    auto tup = std::make_tuple(args...);  // by value, as a kernel launch
    S().grid_dim = grid;
    S().block_dim = block;
    for (unsigned y = 0; y < grid.y; ++y)
      for (unsigned x = 0; x < grid.x; ++x)
        run_block(uint3{x, y, 0}, static_cast<int>(block.x), smem, [&] { std::apply(kernel, tup); });
  }
};

template <class K>
Launcher<K> launcher(K kernel, dim3 grid, dim3 block, size_t smem) {
  if (block.y != 1 || block.z != 1 || grid.z != 1) fail("only 1-D blocks and 2-D grids are emulated");
  return Launcher<K>{kernel, grid, block, smem};
}

// ---- shared memory ---------------------------------------------------------------------------------

inline uint32_t smem_u32(const void* p) {
  const auto* c = static_cast<const unsigned char*>(p);
  if (c < S().smem.data() || c >= S().smem.data() + S().smem.size()) fail("shared address outside the block's smem");
  return static_cast<uint32_t>(c - S().smem.data());
}

inline uint16_t ld16(uint32_t addr) {
  if (addr + 2 > S().smem.size()) fail("ldmatrix reads beyond the block's shared memory");
  uint16_t v;
  std::memcpy(&v, S().smem.data() + addr, 2);
  return v;
}

inline void cp_async16(void* dst, const void* src, int bytes) {
  const uint32_t d = smem_u32(dst);
  if (d % 16 || d + 16 > S().smem.size()) fail("cp.async destination misaligned or out of range");
  if (bytes == 16) {
    if (reinterpret_cast<uintptr_t>(src) % 16) fail("cp.async source not 16-byte aligned");
    std::memcpy(dst, src, 16);
  } else if (bytes == 0) {
    std::memset(dst, 0, 16);
  } else {
    fail("cp.async with a partial size");
  }
}

// ---- warp collectives --------------------------------------------------------------------------------

template <class T>
T shfl(T v, int src_lane_of_me, bool xor_mode) {
  static_assert(sizeof(T) <= 8, "shfl of a value wider than 8 bytes");
  std::memcpy(me().x, &v, sizeof(T));
  syncwarp();
  const int src = xor_mode ? (lane() ^ src_lane_of_me) : (src_lane_of_me & 31);
  T r;
  std::memcpy(&r, xb_of(src), sizeof(T));
  syncwarp();
  return r;
}

// ldmatrix.sync.aligned.m8n8.x4{.trans}.shared.b16: lanes 8m..8m+7 address rows 0..7 of matrix m;
// register m of lane l gets row l/4, elements 2(l%4), 2(l%4)+1 (.trans: column l/4, rows 2(l%4),
// 2(l%4)+1).
inline void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr, bool trans) {
  if (addr % 16) fail("ldmatrix row address not 16-byte aligned");
  me().x[0] = addr;
  syncwarp();
  const int l = lane();
  for (int m = 0; m < 4; ++m) {
    uint16_t e0, e1;
    if (!trans) {
      const uint32_t row = static_cast<uint32_t>(xb_of(8 * m + l / 4)[0]);
      e0 = ld16(row + 4 * (l % 4));
      e1 = ld16(row + 4 * (l % 4) + 2);
    } else {
      e0 = ld16(static_cast<uint32_t>(xb_of(8 * m + 2 * (l % 4))[0]) + 2 * (l / 4));
      e1 = ld16(static_cast<uint32_t>(xb_of(8 * m + 2 * (l % 4) + 1)[0]) + 2 * (l / 4));
    }
    r[m] = uint32_t(e0) | (uint32_t(e1) << 16);
  }
  syncwarp();
}

template <class T>
float decode(uint16_t bits) {
  if constexpr (std::is_same_v<T, __nv_bfloat16>) {
    const uint32_t u = uint32_t(bits) << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
  } else {
    __half_raw raw;
    raw.x = bits;
    return __half2float(__half(raw));
  }
}

// mma.sync.aligned.m16n8k16.row.col.f32.{f16,bf16}.f32 (groupID = lane / 4, t = lane % 4):
// A a_i: row groupID (+8 for i in {2,3,6,7}), col 2t + i%2 (+8 for i >= 4); B b_i: row 2t + i%2
// (+8 for i >= 2), col groupID; C c_i: row groupID (+8 for i >= 2), col 2t + i%2.
template <class T>
void mma_m16n8k16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  uint64_t* x = me().x;
  for (int i = 0; i < 4; ++i) x[i] = a[i];
  x[4] = b0;
  x[5] = b1;
  std::memcpy(&x[6], c, 16);
  syncwarp();
  float A[16][16], B[16][8], C[16][8];
  for (int l = 0; l < 32; ++l) {
    const uint64_t* y = xb_of(l);
    const int g = l / 4, t = l % 4;
    for (int i = 0; i < 8; ++i) {
      const uint16_t bits = static_cast<uint16_t>(y[i / 2] >> (16 * (i % 2)));
      const int row = g + (((i / 2) % 2) ? 8 : 0), col = 2 * t + i % 2 + (i >= 4 ? 8 : 0);
      A[row][col] = decode<T>(bits);
    }
    for (int i = 0; i < 4; ++i) {
      const uint16_t bits = static_cast<uint16_t>(y[4 + i / 2] >> (16 * (i % 2)));
      B[2 * t + i % 2 + (i >= 2 ? 8 : 0)][g] = decode<T>(bits);
    }
    float cc[4];
    std::memcpy(cc, &y[6], 16);
    for (int i = 0; i < 4; ++i) C[g + (i >= 2 ? 8 : 0)][2 * t + i % 2] = cc[i];
  }
  const int g = lane() / 4, t = lane() % 4;
  for (int i = 0; i < 4; ++i) {
    const int row = g + (i >= 2 ? 8 : 0), col = 2 * t + i % 2;
    float v = C[row][col];
    for (int k = 0; k < 16; ++k) v += A[row][k] * B[k][col];
    c[i] = v;
  }
  syncwarp();
}

inline float ex2(float x) { return std::exp2(x); }

}  // namespace fw_emu

// ---- the CUDA names the kernels use ------------------------------------------------------------------

#define threadIdx (fw_emu::me().tid)
#define blockIdx (fw_emu::S().block_idx)
#define gridDim (fw_emu::S().grid_dim)
#define blockDim (fw_emu::S().block_dim)

#define FW_DYNAMIC_SMEM(name) unsigned char* name = fw_emu::S().smem.data()
#define FW_LAUNCH(kernel, grid, block, smem, stream) fw_emu::launcher(kernel, dim3(grid), dim3(block), smem)

inline void __syncthreads() { fw_emu::syncthreads(); }
inline void __syncwarp(unsigned = 0xffffffffu) { fw_emu::syncwarp(); }
template <class T>
T __shfl_xor_sync(unsigned, T v, int mask) {
  return fw_emu::shfl(v, mask, true);
}
template <class T>
T __shfl_sync(unsigned, T v, int src) {
  return fw_emu::shfl(v, src, false);
}
inline float atomicAdd(float* p, float v) {  // fibers never interleave inside a call
  const float old = *p;
  *p = old + v;
  return old;
}
inline float __expf(float x) { return std::exp(x); }
inline float __log2f(float x) { return std::log2(x); }
template <class A, class B>
std::common_type_t<A, B> min(A a, B b) {
  return a < b ? a : b;
}
template <class A, class B>
std::common_type_t<A, B> max(A a, B b) {
  return a < b ? b : a;
}

// The CUDA runtime calls of the launchers, answered without a device. They are C++ functions of
// fw_emu and the cudart names are macros for them (cuda_runtime.h is already included above), so
// the module defines and imports no cudart symbol: a CUDA build of torch loads the real libcudart
// into the process, and same-named exported functions here would be bound to it by the dynamic
// linker (no driver there: "CUDA driver version is insufficient", compute capability 0).
namespace fw_emu {
inline cudaError_t get_device(int* device) {
  *device = 0;
  return cudaSuccess;
}
inline cudaError_t device_get_attribute(int* value, enum cudaDeviceAttr attr, int) {
  *value = attr == cudaDevAttrMultiProcessorCount ? 132 : attr == cudaDevAttrComputeCapabilityMajor ? 9 : 0;
  return cudaSuccess;
}
template <class T>  // a kernel, or the `const void*` of cudart's C API
cudaError_t func_set_attribute(T*, enum cudaFuncAttribute, int) {
  return cudaSuccess;
}
inline cudaError_t get_last_error() { return cudaSuccess; }
inline const char* get_error_string(cudaError_t) { return "fw_cuda_emu"; }
}  // namespace fw_emu

#define cudaGetDevice fw_emu::get_device
#define cudaDeviceGetAttribute fw_emu::device_get_attribute
#define cudaFuncSetAttribute fw_emu::func_set_attribute
#define cudaGetLastError fw_emu::get_last_error
#define cudaGetErrorString fw_emu::get_error_string
