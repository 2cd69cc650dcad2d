// A caching CPU allocator for inference forwards: freed activation buffers are kept and handed out
// again, so a repeated forward reuses warm pages instead of faulting fresh ones.
//
// Why: glibc serves every allocation above its (dynamic) mmap threshold with a fresh mapping and
// trims freed heap tops back to the OS, so each large activation of a CPU inference is new memory
// whose 4 KB pages fault on first touch. On this project's 2-core AMD EPYC VM a fault costs about
// 2.8 us of process CPU time (zeroing plus the hypervisor's page walk), and UniFormer-S at batch 1
// takes ~1,600 of them per forward (~4.5 ms of ~95); Swin-T at batch 8, ~48,000. ONNX Runtime and
// OpenVINO keep freed buffers in arenas of their own; this is fastwin's.
//
// How it stays out of everyone else's way:
// - It is installed as torch's CPU allocator on first use, only over torch's default allocator, and
//   outside a scope (`depth_ == 0`) every allocation goes to that default allocator unchanged.
// - Inside a scope (fastwin's model forwards under no_grad / inference_mode, opened from Python by
//   fastwin/backend/cpu_arena.py) allocations come from size-class free lists (8 classes per power of
//   two, at most 12.5 % rounding).
// - Every block is a plain posix_memalign pointer with data == context, and the one deleter either
//   keeps a block (inside a scope) or free()s it. So the raw interface works whichever allocator was installed when a
//   block was made: ideep allocates through `raw_allocate` on the current allocator and frees through
//   the current `raw_deleter`, possibly across a scope boundary, and a default-allocator block freed
//   here is simply binned by its usable size.
// - Kept memory is bounded (FASTWIN_CPU_ARENA_MB, default 1024); beyond it a freed block is freed.
//   `release()` frees everything kept. The profiler's CPU memory reporter sees every block handed out
//   and given back, as it does for the default allocator.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <torch/extension.h>

#include "activation_arena.h"

#include <atomic>
#include <cstdlib>
#include <mutex>
#include <unordered_map>
#include <vector>

#if defined(__GLIBC__)
#include <malloc.h>
#define FASTWIN_ARENA_SUPPORTED 1
#else
#define FASTWIN_ARENA_SUPPORTED 0
#endif

namespace fastwin {
namespace {

constexpr size_t kAlignment = 64;  // c10's gAlignment on x86 / arm64 servers
constexpr size_t kSmallest = 64;   // blocks below this are not worth keeping

// Smallest class >= n: multiples of 64 up to 1 KB, then 8 classes per power of two.
size_t class_at_least(size_t n) {
  if (n <= 1024) return (n + 63) & ~size_t(63);
  const int e = 63 - __builtin_clzll(n);
  const size_t step = size_t(1) << (e - 3);
  return (n + step - 1) & ~(step - 1);
}

// Largest class <= u (u >= kSmallest): a block of usable size u can serve any request of that class.
size_t class_at_most(size_t u) {
  if (u <= 1024) return u & ~size_t(63);
  const int e = 63 - __builtin_clzll(u);
  const size_t step = size_t(1) << (e - 3);
  return u & ~(step - 1);
}

void give_back(void* ptr);

class ActivationArena final : public c10::Allocator {
 public:
  ActivationArena() {
    const char* mb = std::getenv("FASTWIN_CPU_ARENA_MB");
    limit_ = (mb && *mb ? size_t(std::strtoull(mb, nullptr, 10)) : size_t(1024)) << 20;
  }

  c10::DataPtr allocate(size_t n) override {
    if (depth_.load(std::memory_order_relaxed) == 0 || n == 0) return fallback_->allocate(n);
    const size_t cls = class_at_least(n);
    void* p = take(cls);
    if (p == nullptr && posix_memalign(&p, kAlignment, cls) != 0) p = nullptr;
    TORCH_CHECK_WITH(OutOfMemoryError, p != nullptr, "fastwin's CPU arena: out of memory allocating ", cls, " bytes");
    c10::profiledCPUMemoryReporter().New(p, n);
    return {p, p, &give_back, c10::Device(c10::DeviceType::CPU)};
  }

  c10::DeleterFnPtr raw_deleter() const override { return &give_back; }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  // Inside a scope, keep `ptr` (any posix_memalign / malloc block) for reuse unless the arena is full;
  // outside, free it: what a scope made and something frees later (a forward's output, a packed weight)
  // is simply freed, so between scopes the arena keeps only what the scopes themselves gave back.
  void keep(void* ptr) {
    c10::profiledCPUMemoryReporter().Delete(ptr);
#if FASTWIN_ARENA_SUPPORTED
    const size_t usable = malloc_usable_size(ptr);
#else
    const size_t usable = 0;  // never installed there; a block that still gets here is freed
#endif
    if (usable >= kSmallest && depth_.load(std::memory_order_relaxed) > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (kept_ + usable <= limit_) {
        free_[class_at_most(usable)].push_back({ptr, usable});
        kept_ += usable;
        return;
      }
    }
    std::free(ptr);
  }

  // Install over torch's default CPU allocator (once); then open a scope. False: someone else's
  // allocator is installed, and the scope does nothing.
  bool enter() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (fallback_ == nullptr) {
      c10::Allocator* current = c10::GetCPUAllocator();
      if (current != c10::GetDefaultCPUAllocator()) return false;
      fallback_ = current;
      c10::SetCPUAllocator(this, /*priority=*/0);
    }
    if (c10::GetCPUAllocator() != this) return false;
    depth_.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  void exit() {
    TORCH_CHECK(depth_.load(std::memory_order_relaxed) > 0, "fastwin's CPU arena: exit without enter");
    depth_.fetch_sub(1, std::memory_order_relaxed);
  }

  int64_t release() {
    std::unordered_map<size_t, std::vector<Block>> blocks;
    size_t freed;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      freed = kept_;
      kept_ = 0;
    }
    for (auto& bin : blocks)
      for (const Block& b : bin.second) std::free(b.ptr);
    return int64_t(freed);
  }

  std::unordered_map<std::string, int64_t> stats() {
    std::lock_guard<std::mutex> lock(mutex_);
    return {{"kept_bytes", int64_t(kept_)}, {"limit_bytes", int64_t(limit_)}, {"hits", hits_},
            {"misses", misses_}, {"depth", depth_.load()}, {"installed", c10::GetCPUAllocator() == this}};
  }

 private:
  struct Block {
    void* ptr;
    size_t usable;
  };

  // A kept block of class `cls`, or nullptr (a miss: the caller allocates one).
  void* take(size_t cls) {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = free_.find(cls);
    if (it == free_.end() || it->second.empty()) {
      ++misses_;
      return nullptr;
    }
    const Block b = it->second.back();
    it->second.pop_back();
    kept_ -= b.usable;
    ++hits_;
    return b.ptr;
  }

  std::mutex mutex_;
  std::unordered_map<size_t, std::vector<Block>> free_;  // class -> kept blocks of at least that size
  size_t kept_ = 0, limit_ = 0;
  int64_t hits_ = 0, misses_ = 0;
  std::atomic<int64_t> depth_{0};
  c10::Allocator* fallback_ = nullptr;
};

// Never destroyed: tensors made in a scope may be freed at any time, up to interpreter exit.
ActivationArena& arena() {
  static ActivationArena* instance = new ActivationArena();
  return *instance;
}

void give_back(void* ptr) {
  if (ptr != nullptr) arena().keep(ptr);
}

}  // namespace

void bind_activation_arena(pybind11::module_& m) {
  m.def("arena_supported", [] { return bool(FASTWIN_ARENA_SUPPORTED); });
  m.def("arena_enter", [] { return FASTWIN_ARENA_SUPPORTED && arena().enter(); },
        "Open an arena scope (installing the arena over torch's default CPU allocator on first use); "
        "False when it cannot be installed (then nothing changes and arena_exit must not be called).");
  m.def("arena_exit", [] { arena().exit(); }, "Close the innermost arena scope.");
  m.def("arena_release", [] { return arena().release(); }, "Free every kept block; returns the bytes freed.");
  m.def("arena_stats", [] { return arena().stats(); });
}

}  // namespace fastwin
