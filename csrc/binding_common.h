// Shared by the torch bindings of the CUDA kernels (csrc/<op>/<op>_binding.cpp): argument checks,
// launch-error reporting and the dispatch key. Torch headers only (no ATen/cuda).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

extern "C" const char* slifmr_cuda_error_string(int code);

// SLIFMR_CUDA_EMULATION is defined only by the test build that runs the kernels on the CPU
// through csrc/emu/cuda_emu.h (tests/test_csrc.py): the ops are then registered for CPU
// tensors. Extension builds register them for CUDA.
#ifdef SLIFMR_CUDA_EMULATION
#define SLIFMR_DISPATCH_KEY CPU
#else
#define SLIFMR_DISPATCH_KEY CUDA
#endif

namespace slifmr_cuda {

// A non-zero launcher return code becomes an error naming the op and the CUDA error.
inline void check_launch(int code, const char* what) {
  TORCH_CHECK(code == 0, "slifmr_cuda::", what, ": CUDA error ", code, " (",
              slifmr_cuda_error_string(code), ")");
}

// The launchers' dtype code: 0 = float32, 1 = float64.
inline int dtype_code(const at::Tensor& x, const char* name) {
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, name,
              " must be float32 or float64, got ", x.scalar_type());
  return x.scalar_type() == at::kFloat ? 0 : 1;
}

// `t` must be a contiguous CUDA tensor on the device of `like`.
inline void check_cuda(const at::Tensor& t, const at::Tensor& like, const char* name) {
#ifndef SLIFMR_CUDA_EMULATION
  TORCH_CHECK(t.is_cuda(), name, " must be a CUDA tensor");
#endif
  TORCH_CHECK(t.device() == like.device(), name, " must be on ", like.device(), ", got ",
              t.device());
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous");
}

// The stream arrives from Python as an int64 (torch.cuda.current_stream().cuda_stream).
inline void* as_stream(int64_t s) { return reinterpret_cast<void*>(static_cast<intptr_t>(s)); }

}  // namespace slifmr_cuda
