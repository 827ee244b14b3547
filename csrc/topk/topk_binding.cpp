// Torch binding of the fused top-k similarity kernel (topk.cu), registered with the
// dispatcher under the namespace `slifmr_cuda`:
//
//   slifmr_cuda::topk(x, y, k, exclude_self, excl_indptr?, excl_indices?, tf32, stream)
//       -> (idx, val)   (tf32: approximate TF32 tensor-core scores, float32 only; see topk.cu)
//
// Includes only torch headers; the stream arrives as an int64 from Python
// (torch.cuda.current_stream().cuda_stream).
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "../binding_common.h"

#include <cstdint>
#include <limits>
#include <optional>

extern "C" {
int slifmr_topk(int dtype, const void* x, const void* y, int64_t n, int64_t m, int64_t d, int k,
                int exclude_self, const int64_t* ex_ptr, const void* ex_idx, int ex_idx64,
                int tf32, int64_t* out_i, void* out_v, void* stream);
}

namespace slifmr_cuda {
namespace {

std::tuple<at::Tensor, at::Tensor> topk(const at::Tensor& x, const at::Tensor& y, int64_t k,
                                        bool exclude_self,
                                        const std::optional<at::Tensor>& excl_indptr,
                                        const std::optional<at::Tensor>& excl_indices,
                                        bool tf32, int64_t stream) {
  check_cuda(x, x, "x");
  check_cuda(y, x, "y");
  TORCH_CHECK(x.dim() == 2 && y.dim() == 2 && x.size(1) == y.size(1),
              "x (N, d) and y (M, d) must share d");
  TORCH_CHECK(x.scalar_type() == y.scalar_type(), "x and y must share a dtype");
  const int dt = dtype_code(x, "x");
  TORCH_CHECK(!tf32 || x.scalar_type() == at::kFloat,
              "tf32 scoring needs float32 inputs, got ", x.scalar_type());
  const int64_t n = x.size(0), m = y.size(0), d = x.size(1);
  TORCH_CHECK(k >= 0 && k <= m, "k must be in [0, M = ", m, "], got ", k);
  TORCH_CHECK(k <= std::numeric_limits<int>::max(), "k too large");
  const bool has_ex = excl_indptr.has_value() && excl_indptr->defined();
  if (has_ex) {
    TORCH_CHECK(excl_indices.has_value() && excl_indices->defined(),
                "excl_indices is required with excl_indptr");
    check_cuda(*excl_indptr, x, "excl_indptr");
    check_cuda(*excl_indices, x, "excl_indices");
    TORCH_CHECK(excl_indptr->scalar_type() == at::kLong && excl_indptr->numel() == n + 1,
                "excl_indptr must be int64 with N + 1 entries");
    TORCH_CHECK(excl_indices->scalar_type() == at::kLong ||
                    excl_indices->scalar_type() == at::kInt,
                "excl_indices must be int32 or int64");
  }
  c10::DeviceGuard guard(x.device());
  at::Tensor idx = at::empty({n, k}, x.options().dtype(at::kLong));
  at::Tensor val = at::empty({n, k}, x.options());
  if (n == 0 || k == 0) return {idx, val};
  const int code = slifmr_topk(
      dt, x.data_ptr(), y.data_ptr(), n, m, d,
      static_cast<int>(k), exclude_self ? 1 : 0,
      has_ex ? excl_indptr->data_ptr<int64_t>() : nullptr,
      has_ex ? excl_indices->data_ptr() : nullptr,
      has_ex && excl_indices->scalar_type() == at::kLong ? 1 : 0, tf32 ? 1 : 0,
      idx.data_ptr<int64_t>(),
      val.data_ptr(), as_stream(stream));
  check_launch(code, "topk");
  return {idx, val};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(slifmr_cuda, m) {
  m.def("topk(Tensor x, Tensor y, int k, bool exclude_self, Tensor? excl_indptr, "
        "Tensor? excl_indices, bool tf32, int stream) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(slifmr_cuda, SLIFMR_DISPATCH_KEY, m) {
  m.impl("topk", &topk);
}

}  // namespace slifmr_cuda
