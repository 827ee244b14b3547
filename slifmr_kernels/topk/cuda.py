"""CUDA C++ backend of the batched top-k similarity (``csrc/topk``).

Contract: docs/ARCHITECTURE.md, "topk"; the kernel is described in ``csrc/topk/topk.cu`` and
docs/GPU.md.  Importing this module raises ImportError with build instructions when the
extension ``slifmr_kernels._C`` is not built.
"""

from __future__ import annotations

from .._cuda import load_ops, stream_of
from .rerank import tf32_enabled, topk_from_candidates

__all__ = ["topk", "topk_exact", "topk_candidates", "topk_tf32"]

_ops = load_ops()


def topk_exact(x, y, k, exclude_self, excl_indptr, excl_indices):
    """The exact kernel: CUDA-core FMA scores in the input precision (float32/float64)."""
    return _ops.topk(x, y, int(k), bool(exclude_self), excl_indptr, excl_indices, False, stream_of(x))


def topk_candidates(x, y, c, exclude_self, excl_indptr, excl_indices):
    """The c best columns per row by TF32 tensor-core score (float32 only): candidates for
    :func:`slifmr_kernels.topk.rerank.topk_from_candidates`, not an exact answer."""
    return _ops.topk(x, y, int(c), bool(exclude_self), excl_indptr, excl_indices, True, stream_of(x))


def topk_tf32(x, y, k, exclude_self, excl_indptr, excl_indices):
    """Exact top-k through TF32 candidates + fp32 re-rank + per-row certificate (rerank.py)."""
    return topk_from_candidates(topk_candidates, topk_exact, x, y, k, exclude_self, excl_indptr, excl_indices)


def topk(x, y, k, exclude_self, excl_indptr, excl_indices):
    """k largest <x[i], y[j]> per row, sorted (score desc, index asc).

    x [N, d], y [M, d] CUDA float32/float64; excl_indptr int64 [N + 1] and excl_indices
    int32/int64 (or None).  Returns idx int64 [N, k] (-1 padding) and val [N, k] (-inf
    padding), dtype of x.  Exact and deterministic.  The exact FMA kernel by default: on an
    H200 its TF32 path was no faster (docs/GPU.md); ``SLIFMR_TOPK_TF32=1`` selects it.
    """
    if tf32_enabled(x, default=False):
        return topk_tf32(x, y, k, exclude_self, excl_indptr, excl_indices)
    return topk_exact(x, y, k, exclude_self, excl_indptr, excl_indices)
