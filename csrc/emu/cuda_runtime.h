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
constexpr cudaError_t cudaErrorMisalignedAddress = 716;
enum cudaFuncAttribute { cudaFuncAttributeMaxDynamicSharedMemorySize = 8 };
enum cudaDeviceAttr { cudaDevAttrMaxSharedMemoryPerBlockOptin = 97 };

#include "cuda_emu.h"

inline cudaError_t cudaGetDevice(int* dev) {
  *dev = 0;
  return cudaSuccess;
}
inline cudaError_t cudaDeviceGetAttribute(int* value, cudaDeviceAttr attr, int dev) {
  if (attr != cudaDevAttrMaxSharedMemoryPerBlockOptin || dev != 0) return cudaErrorInvalidValue;
  *value = emu::smem_optin;
  return cudaSuccess;
}
// One allowance for whichever kernel launches next (see cuda_emu.h).
template <typename F>
inline cudaError_t cudaFuncSetAttribute(F* /*kernel*/, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize || value < 0 ||
      value > emu::smem_optin)
    return cudaErrorInvalidValue;
  emu::dyn_smem_allowed = static_cast<size_t>(value);
  return cudaSuccess;
}

inline cudaError_t cudaGetLastError() {
  const int e = emu::last_error;
  emu::last_error = 0;
  return e;
}
inline const char* cudaGetErrorString(cudaError_t e) {
  return e == 0 ? "no error" : "emulated launch error";
}
