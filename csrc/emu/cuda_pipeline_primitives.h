// Stub of <cuda_pipeline_primitives.h> for the CPU emulation build (tests only; see
// cuda_emu.h): the asynchronous-copy primitives (cp.async on sm_80+).
//
// A copy is queued by the thread that issues it and lands when that thread's
// __pipeline_wait_prior lets it: the latest moment the CUDA contract allows. A kernel that
// reads a buffer before waiting for it, or waits for the wrong group, then reads the NaN fill
// of the dynamic shared memory (or an older tile) and fails its test; a copy is checked for
// the size (4, 8 or 16 bytes) and the alignment that cp.async requires, and a bad one is
// reported as cudaErrorMisalignedAddress by the launcher's cudaGetLastError.
#pragma once
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <deque>
#include <vector>

#include "cuda_emu.h"

namespace emu {

struct AsyncCopy {
  void* dst;
  const void* src;
  size_t bytes, zfill;
};
inline thread_local std::vector<AsyncCopy> tl_open_group;          // not committed yet
inline thread_local std::deque<std::vector<AsyncCopy>> tl_groups;  // committed, oldest first

}  // namespace emu

inline void __pipeline_memcpy_async(void* dst, const void* src, size_t size_and_align,
                                    size_t zfill = 0) {
  const size_t n = size_and_align;
  const bool ok = (n == 4 || n == 8 || n == 16) && zfill <= n &&
                  reinterpret_cast<uintptr_t>(dst) % n == 0 &&
                  reinterpret_cast<uintptr_t>(src) % n == 0;
  if (!ok) {
    emu::last_error = 716;  // cudaErrorMisalignedAddress
    return;
  }
  ++emu::async_copies[n];
  emu::tl_open_group.push_back({dst, src, n, zfill});
}

inline void __pipeline_commit() {
  emu::tl_groups.push_back(std::move(emu::tl_open_group));
  emu::tl_open_group.clear();
}

// Land every committed group but the newest `prior` ones.
inline void __pipeline_wait_prior(size_t prior) {
  while (emu::tl_groups.size() > prior) {
    for (const emu::AsyncCopy& c : emu::tl_groups.front()) {
      std::memcpy(c.dst, c.src, c.bytes - c.zfill);
      std::memset(static_cast<unsigned char*>(c.dst) + (c.bytes - c.zfill), 0, c.zfill);
    }
    emu::tl_groups.pop_front();
  }
}
