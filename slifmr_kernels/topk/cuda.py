"""CUDA C++ backend of the batched top-k similarity (``csrc/topk``).

Contract: docs/ARCHITECTURE.md, "topk"; the kernel is described in ``csrc/topk/topk.cu`` and
docs/GPU.md.  Importing this module raises ImportError with build instructions when the
extension ``slifmr_kernels._C`` is not built.
"""
from __future__ import annotations

from .._cuda import load_ops, stream_of

__all__ = ["topk"]

_ops = load_ops()


def topk(x, y, k, exclude_self, excl_indptr, excl_indices):
    """k largest <x[i], y[j]> per row, sorted (score desc, index asc).

    x [N, d], y [M, d] CUDA float32/float64; excl_indptr int64 [N + 1] and excl_indices
    int32/int64 (or None).  Returns idx int64 [N, k] (-1 padding) and val [N, k] (-inf
    padding), dtype of x.  Exact (full-precision FMA scores), deterministic.
    """
    return _ops.topk(x, y, int(k), bool(exclude_self), excl_indptr, excl_indices, stream_of(x))
