// Stub of <cuda_runtime.h> for the CPU emulation build of csrc/*.cu (tests only; see
// cuda_emu.h). Declares just what the kernels' launchers use.
#pragma once
#include <cstdint>

struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
using cudaError_t = int;
using cudaStream_t = void*;
constexpr cudaError_t cudaSuccess = 0;
constexpr cudaError_t cudaErrorInvalidValue = 1;

#include "cuda_emu.h"

inline cudaError_t cudaGetLastError() {
  const int e = emu::last_error;
  emu::last_error = 0;
  return e;
}
inline const char* cudaGetErrorString(cudaError_t e) {
  return e == 0 ? "no error" : "emulated launch error";
}
