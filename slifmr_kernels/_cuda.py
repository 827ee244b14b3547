"""Loader of the compiled CUDA extension ``slifmr_kernels._C``.

The extension (built from ``csrc/`` by ``FORCE_CUDA=1 pip install --no-build-isolation -e .``
or by CMake) registers its ops with the torch dispatcher under ``torch.ops.slifmr_cuda``:

* ``propagate(indptr, indices, values?, relation?, table?, x, n_rows, stream) -> y``
* ``propagate_backward(indptr_t, indices_t, values_t?, relation_t, table, dy, x,
  num_relations, need_dx, need_g, stream) -> (dx, g)`` (empty tensors when not requested)
* ``topk(x, y, k, exclude_self, excl_indptr?, excl_indices?, tf32, stream) -> (idx, val)``
* ``fuse_forward(z, alpha, views, eps, stream) -> (out, den)`` and ``fuse_backward(g, alpha,
  views, den, eps, need_alpha, need_views, stream) -> (dalpha, dviews)``; ``OP_NAMES`` lists
  the ops every build has had, and ``fuse/cuda.py`` checks for its own (an older build lacks
  them, and then only that backend is unavailable)

``stream`` is the raw ``cudaStream_t`` of the caller's current stream, as an int (the binding
includes no ATen CUDA header, so it cannot ask torch for it).

``SLIFMR_CUDA_LIB=/path/to/_C.so`` loads a library built elsewhere (e.g. by CMake) instead of
importing the installed extension.
"""

from __future__ import annotations

import importlib
import os

import torch

__all__ = ["load_ops", "stream_of", "OP_NAMES", "BUILD_HINT"]

OP_NAMES = ("propagate", "propagate_backward", "topk")
BUILD_HINT = (
    "build it with `FORCE_CUDA=1 pip install --no-build-isolation -e .` on a machine "
    "with the CUDA toolkit and a CUDA build of torch (or point SLIFMR_CUDA_LIB at a "
    "_C.so built with CMake)"
)

_ops = None


def _has_ops() -> bool:
    try:
        ns = torch.ops.slifmr_cuda
        return all(hasattr(ns, name) for name in OP_NAMES)
    except (AttributeError, RuntimeError):
        return False


def load_ops():
    """Return ``torch.ops.slifmr_cuda`` once the extension is loaded.

    Raises ImportError, with what to do, when the extension is not built or lacks an op.
    """
    global _ops
    if _ops is not None:
        return _ops
    path = os.environ.get("SLIFMR_CUDA_LIB")
    try:
        if path:
            torch.ops.load_library(path)
        else:
            importlib.import_module("slifmr_kernels._C")
    except (ImportError, OSError) as exc:
        where = (
            f"SLIFMR_CUDA_LIB={path!r} could not be loaded ({exc})"
            if path
            else (f"the CUDA extension slifmr_kernels._C is not built ({exc})")
        )
        raise ImportError(f"{where}; {BUILD_HINT}") from exc
    if not _has_ops():
        raise ImportError(
            f"the CUDA extension loaded but does not register torch.ops.slifmr_cuda."
            f"{{{', '.join(OP_NAMES)}}}; rebuild it: {BUILD_HINT}"
        )
    _ops = torch.ops.slifmr_cuda
    return _ops


def stream_of(t: torch.Tensor) -> int:
    """Raw handle of the current CUDA stream of ``t``'s device (what the kernels launch on)."""
    return torch.cuda.current_stream(t.device).cuda_stream
