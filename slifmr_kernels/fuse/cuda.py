"""CUDA C++ backend of fuse_views (``csrc/fuse``).

Contract: docs/ARCHITECTURE.md, "fuse"; the kernels are described in ``csrc/fuse/fuse.cu``.
One group of threads per row reads z (or g) and every view once, with the row norms and dot
products reduced by warp shuffles; alpha's gradient comes from per-block partials added in a
fixed order (no atomics), so every result has the same bits on every run. Importing this
module raises ImportError with build instructions when the extension ``slifmr_kernels._C`` is
not built, or was built before the fuse kernels existed.
"""

from __future__ import annotations

from .._cuda import BUILD_HINT, load_ops, stream_of

__all__ = ["fuse_forward", "fuse_backward"]

_ops = load_ops()
if not all(hasattr(_ops, name) for name in ("fuse_forward", "fuse_backward")):
    raise ImportError(
        "the CUDA extension has no torch.ops.slifmr_cuda.fuse_forward / "
        f"fuse_backward (built before the fuse kernels); rebuild it: {BUILD_HINT}"
    )


def fuse_forward(z, alpha, views, eps):
    """(out (N, d), den (N, V)) for z (N, d), alpha (V,), views (N, V*d); one dtype, contiguous."""
    return _ops.fuse_forward(z, alpha, views, float(eps), stream_of(z))


def fuse_backward(g, alpha, views, den, eps, need_alpha, need_views):
    """(dalpha (V,), dviews (N, V*d)) for the output gradient g (N, d); empty when not needed."""
    return _ops.fuse_backward(
        g, alpha, views, den, float(eps), bool(need_alpha), bool(need_views), stream_of(g)
    )
