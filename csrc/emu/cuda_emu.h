// CPU emulation of the small CUDA subset used by csrc/*.cu -- for tests only.
//
// tests/test_csrc.py compiles propagate.cu and topk.cu as C++ with this header force-included
// (and the stub cuda_runtime.h / math_constants.h beside it first on the include path), after
// rewriting each `kernel<<<grid, block, smem, stream>>>(args)` launch into
// `emu::launch(grid, block, smem, stream, [&] { kernel(args); })` and each dynamic shared
// memory declaration `extern __shared__ [__align__(n)] T name[];` into
// `T* name = reinterpret_cast<T*>(emu::dynamic_smem());`. The kernels then run on the
// CPU with their real control flow: every CUDA thread is an OS thread, the blocks of a launch
// run one after another (so `__shared__` can be a function-local static), __syncthreads is a
// block-wide std::barrier, and the warp collectives (__ballot_sync, __shfl_sync, __any_sync,
// __syncwarp) meet at a per-warp barrier. Threads that return leave every barrier (as exited
// threads do on the GPU), so early exits cannot deadlock.
//
// Dynamic shared memory is a fresh buffer per block of the launch's size, filled with 0xff
// bytes (NaN as float or double) so that reading what no thread wrote shows. As on the GPU, a
// launch with more than 48 KB of it fails unless cudaFuncSetAttribute allowed that much; the
// emulator keeps one allowance, not one per kernel, and a launch uses it up, so a launcher
// must set it right before each launch that needs it. The device's opt-in limit is 227 KB
// (sm_90) unless a test lowers it. Asynchronous copies: cuda_pipeline_primitives.h.
//
// It checks logic (indexing, masking, ordering, the warp protocols), not the memory model or
// speed; never part of the extension build (setup.py and CMake compile only *.cu / *.cpp, and
// this directory is not on their include path).
#pragma once

#include <algorithm>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ static
#ifndef __restrict__
#define __restrict__ __restrict
#endif

struct uint3 { unsigned x, y, z; };
struct dim3 {
  unsigned x, y, z;
  dim3(unsigned a = 1, unsigned b = 1, unsigned c = 1) : x(a), y(b), z(c) {}
};

namespace emu {

struct Warp {
  explicit Warp(int n) : bar(n) {}
  std::barrier<> bar;
  uint64_t slot[32] = {};
};

inline thread_local std::barrier<>* tl_block = nullptr;
inline thread_local Warp* tl_warp = nullptr;
inline thread_local int tl_lane = 0;

inline void syncthreads() { tl_block->arrive_and_wait(); }
inline void syncwarp() { tl_warp->bar.arrive_and_wait(); }

inline unsigned ballot(bool p) {
  Warp& w = *tl_warp;
  w.slot[tl_lane] = p ? 1 : 0;
  w.bar.arrive_and_wait();
  unsigned m = 0;
  for (int i = 0; i < 32; ++i)
    if (w.slot[i]) m |= 1u << i;
  w.bar.arrive_and_wait();  // nobody overwrites a slot before everyone has read
  return m;
}

template <typename T>
inline T shfl(T v, int src) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shfl of at most 8 bytes");
  Warp& w = *tl_warp;
  std::memcpy(&w.slot[tl_lane], &v, sizeof(T));
  w.bar.arrive_and_wait();
  T r;
  std::memcpy(&r, &w.slot[src & 31], sizeof(T));
  w.bar.arrive_and_wait();
  return r;
}

inline std::atomic<int> last_error{0};

// dynamic shared memory: the running block's buffer, the allowance, the device limit
inline unsigned char* dyn_smem = nullptr;
inline size_t dyn_smem_allowed = 48 * 1024;
inline int smem_optin = 227 * 1024;
inline unsigned char* dynamic_smem() { return dyn_smem; }

// what the last launch did, for the tests: its dynamic shared memory, and its asynchronous
// copies by size in bytes (4, 8, 16)
inline size_t last_dynamic_smem = 0;
inline std::atomic<long> async_copies[17];

template <typename F>
void launch(dim3 grid, dim3 block, size_t smem, void* /*stream*/, F&& body);

}  // namespace emu

inline thread_local uint3 threadIdx{0, 0, 0};
inline thread_local uint3 blockIdx{0, 0, 0};
inline dim3 blockDim;
inline dim3 gridDim;

namespace emu {
template <typename F>
void launch(dim3 grid, dim3 block, size_t smem, void*, F&& body) {
  const unsigned nt = block.x * block.y * block.z;
  if (nt == 0 || nt > 1024) { last_error = 9; return; }  // cudaErrorInvalidConfiguration
  const size_t allowed = dyn_smem_allowed;
  dyn_smem_allowed = 48 * 1024;
  if (smem > std::max<size_t>(allowed, 48 * 1024) || smem > static_cast<size_t>(smem_optin)) {
    last_error = 1;  // cudaErrorInvalidValue
    return;
  }
  last_dynamic_smem = smem;
  for (auto& c : async_copies) c = 0;
  // 128-byte aligned (more than any __align__ the kernels ask for), NaN-filled per block
  std::vector<unsigned char> smem_buf(smem + 128);
  unsigned char* smem_base = smem_buf.data() + (128 - reinterpret_cast<uintptr_t>(
                                 smem_buf.data()) % 128) % 128;
  blockDim = block;
  gridDim = grid;
  for (unsigned bz = 0; bz < grid.z; ++bz)
    for (unsigned by = 0; by < grid.y; ++by)
      for (unsigned bx = 0; bx < grid.x; ++bx) {
        std::memset(smem_base, 0xff, smem);
        dyn_smem = smem_base;
        std::barrier<> bar(nt);
        std::vector<std::unique_ptr<Warp>> warps;
        for (unsigned w = 0; w * 32 < nt; ++w)
          warps.emplace_back(new Warp(static_cast<int>(std::min(32u, nt - 32 * w))));
        std::vector<std::thread> threads;
        threads.reserve(nt);
        for (unsigned t = 0; t < nt; ++t)
          threads.emplace_back([&, t] {
            threadIdx = {t % block.x, (t / block.x) % block.y, t / (block.x * block.y)};
            blockIdx = {bx, by, bz};
            tl_block = &bar;
            tl_warp = warps[t / 32].get();
            tl_lane = static_cast<int>(t % 32);
            body();
            tl_warp->bar.arrive_and_drop();
            bar.arrive_and_drop();
          });
        for (auto& th : threads) th.join();
      }
  dyn_smem = nullptr;
}
}  // namespace emu

#define __syncthreads() emu::syncthreads()
#define __syncwarp(...) emu::syncwarp()
#define __ballot_sync(mask, p) emu::ballot(p)
#define __any_sync(mask, p) (emu::ballot(p) != 0u)
#define __shfl_sync(mask, v, src) emu::shfl((v), (src))

inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __ffs(unsigned x) { return __builtin_ffs(static_cast<int>(x)); }
template <typename T>
inline T __ldg(const T* p) { return *p; }
using std::max;
using std::min;

// Probes for the tests (tests/test_csrc.py, through ctypes on the emulation build).
extern "C" {
[[gnu::used]] inline long slifmr_emu_async_copies(int bytes) {
  return bytes >= 0 && bytes <= 16 ? emu::async_copies[bytes].load() : -1;
}
[[gnu::used]] inline long slifmr_emu_last_dynamic_smem() {
  return static_cast<long>(emu::last_dynamic_smem);
}
[[gnu::used]] inline int slifmr_emu_set_smem_optin(int bytes) {  // returns the old limit
  const int old = emu::smem_optin;
  emu::smem_optin = bytes;
  return old;
}
}
