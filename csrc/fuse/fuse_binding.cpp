// Torch binding of the fuse_views kernels (fuse.cu), registered with the dispatcher under the
// namespace `slifmr_cuda` (the Python op of the package is slifmr::fuse_views):
//
//   slifmr_cuda::fuse_forward(z, alpha, views, eps, stream) -> (out, den)
//   slifmr_cuda::fuse_backward(g, alpha, views, den, eps, need_alpha, need_views, stream)
//       -> (dalpha, dviews)   (empty [0] tensors for what is not requested)
//
// z / g (N, d), alpha (V,), views (N, V*d) with view k in columns k*d .. (k+1)*d-1, den (N, V)
// the clamped norms max(|v_k|, eps) the forward returned; one float dtype, contiguous.
//
// Includes only torch headers (no ATen/cuda, no CUDA runtime): the stream arrives as an int64
// from Python (torch.cuda.current_stream().cuda_stream) and travels as void*.
#include <ATen/ATen.h>
#include <c10/core/DeviceGuard.h>
#include <torch/library.h>

#include "../binding_common.h"

#include <cmath>
#include <cstdint>
#include <tuple>

extern "C" {
int slifmr_fuse_forward(int dtype, const void* z, const void* alpha, const void* views,
                        void* out, void* den, int64_t n, int64_t d, int64_t V, double eps,
                        void* stream);
int64_t slifmr_fuse_max_blocks(int64_t n);
int slifmr_fuse_backward(int dtype, const void* g, const void* alpha, const void* views,
                         const void* den, void* dviews, void* dalpha, double* part,
                         int64_t part_stride, int64_t n, int64_t d, int64_t V, double eps,
                         void* stream);
}

namespace slifmr_cuda {
namespace {

// x (N, d) as `x_name`, alpha (V,) and views (N, V*d): one float dtype, x's device, contiguous.
void check_fuse_args(const at::Tensor& x, const char* x_name, const at::Tensor& alpha,
                     const at::Tensor& views, double eps) {
  check_cuda(x, x, x_name);
  check_cuda(alpha, x, "alpha");
  check_cuda(views, x, "views");
  dtype_code(x, x_name);
  TORCH_CHECK(x.dim() == 2, x_name, " must be 2-D (N, d), got ", x.dim(), "-D");
  TORCH_CHECK(alpha.dim() == 1, "alpha must be 1-D (V,), got ", alpha.dim(), "-D");
  TORCH_CHECK(alpha.scalar_type() == x.scalar_type(), "alpha must have the dtype of ", x_name,
              " (", x.scalar_type(), "), got ", alpha.scalar_type());
  TORCH_CHECK(views.scalar_type() == x.scalar_type(), "views must have the dtype of ", x_name,
              " (", x.scalar_type(), "), got ", views.scalar_type());
  const int64_t n = x.size(0), d = x.size(1), V = alpha.size(0);
  TORCH_CHECK(views.dim() == 2 && views.size(0) == n && views.size(1) == V * d,
              "views must be (N, V*d) = (", n, ", ", V * d, ") for ", x_name, " of shape ",
              x.sizes(), " and ", V, " view weights, got ", views.sizes());
  TORCH_CHECK(std::isfinite(eps) && eps >= 0.0, "eps must be finite and >= 0, got ", eps);
}

std::tuple<at::Tensor, at::Tensor> fuse_forward(const at::Tensor& z, const at::Tensor& alpha,
                                                const at::Tensor& views, double eps,
                                                int64_t stream) {
  check_fuse_args(z, "z", alpha, views, eps);
  const int64_t n = z.size(0), d = z.size(1), V = alpha.size(0);
  c10::DeviceGuard guard(z.device());
  // Not zero-filled: the kernels write every entry of both.
  at::Tensor out = at::empty({n, d}, z.options());
  at::Tensor den = at::empty({n, V}, z.options());
  check_launch(slifmr_fuse_forward(dtype_code(z, "z"), z.data_ptr(), alpha.data_ptr(),
                                   views.data_ptr(), out.data_ptr(), den.data_ptr(), n, d, V,
                                   eps, as_stream(stream)),
               "fuse_forward");
  return {out, den};
}

std::tuple<at::Tensor, at::Tensor> fuse_backward(const at::Tensor& g, const at::Tensor& alpha,
                                                 const at::Tensor& views, const at::Tensor& den,
                                                 double eps, bool need_alpha, bool need_views,
                                                 int64_t stream) {
  check_fuse_args(g, "g", alpha, views, eps);
  const int64_t n = g.size(0), d = g.size(1), V = alpha.size(0);
  check_cuda(den, g, "den");
  TORCH_CHECK(den.scalar_type() == g.scalar_type(), "den must have the dtype of g (",
              g.scalar_type(), "), got ", den.scalar_type());
  TORCH_CHECK(den.dim() == 2 && den.size(0) == n && den.size(1) == V,
              "den must be (N, V) = (", n, ", ", V, "), got ", den.sizes());
  c10::DeviceGuard guard(g.device());
  at::Tensor dalpha = at::empty({need_alpha ? V : 0}, g.options());
  at::Tensor dviews = need_views ? at::empty({n, V * d}, g.options())
                                 : at::empty({0}, g.options());
  if (!need_alpha && !need_views) return {dalpha, dviews};
  // alpha's gradient: one float64 partial per (view, row block), reduced in a fixed order.
  const int64_t stride = need_alpha ? slifmr_fuse_max_blocks(n) : 0;
  at::Tensor part = at::empty({need_alpha ? V : 0, stride}, g.options().dtype(at::kDouble));
  check_launch(slifmr_fuse_backward(dtype_code(g, "g"), g.data_ptr(), alpha.data_ptr(),
                                    views.data_ptr(), den.data_ptr(),
                                    need_views ? dviews.data_ptr() : nullptr,
                                    need_alpha ? dalpha.data_ptr() : nullptr,
                                    need_alpha ? part.data_ptr<double>() : nullptr, stride, n,
                                    d, V, eps, as_stream(stream)),
               "fuse_backward");
  return {dalpha, dviews};
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(slifmr_cuda, m) {
  m.def("fuse_forward(Tensor z, Tensor alpha, Tensor views, float eps, int stream) "
        "-> (Tensor, Tensor)");
  m.def("fuse_backward(Tensor g, Tensor alpha, Tensor views, Tensor den, float eps, "
        "bool need_alpha, bool need_views, int stream) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(slifmr_cuda, SLIFMR_DISPATCH_KEY, m) {
  m.impl("fuse_forward", &fuse_forward);
  m.impl("fuse_backward", &fuse_backward);
}

}  // namespace slifmr_cuda
