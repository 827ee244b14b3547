"""Zero-copy interop with CuPy (and any DLPack producer).

Importable without CuPy: CuPy is imported only by :func:`to_cupy`.  Arrays cross by DLPack, so
dense arrays and the ``indices`` / ``data`` of a CSR matrix share memory with the CuPy object
(writes through one are seen by the other).  The one copy is ``indptr`` when CuPy stores it as
int32: the kernels' contract wants int64 row offsets (N + 1 entries, negligible next to nnz).

>>> import torch
>>> t = torch.arange(6.0).reshape(2, 3)
>>> to_torch(t).data_ptr() == t.data_ptr()     # any __dlpack__ producer, no copy
True
"""

from __future__ import annotations

import torch

from .errors import InputError, InputTypeError

__all__ = ["to_torch", "to_cupy", "csr_arrays_from_cupy", "csr_graph_from_cupy"]


def to_torch(a) -> torch.Tensor:
    """A tensor sharing memory with ``a`` (CuPy ndarray, NumPy array, or any object with
    ``__dlpack__``).  Same shape, dtype and device; no copy."""
    if isinstance(a, torch.Tensor):
        return a
    if not hasattr(a, "__dlpack__"):
        raise InputTypeError(f"expected an array with __dlpack__ (CuPy, NumPy, ...), got {type(a).__name__}")
    return torch.from_dlpack(a)


def to_cupy(t: torch.Tensor):
    """A CuPy array sharing memory with the CUDA tensor ``t`` (needs cupy)."""
    try:
        import cupy
    except ImportError as exc:
        raise ImportError("to_cupy needs CuPy: pip install cupy-cuda12x (or cupy-cuda13x)") from exc
    if not t.is_cuda:
        raise InputError("to_cupy needs a CUDA tensor")
    return cupy.from_dlpack(t.detach())


def _is_sparse_csr(m) -> bool:
    return (
        all(hasattr(m, a) for a in ("indptr", "indices", "data", "shape"))
        and getattr(m, "format", "csr") == "csr"
    )


def csr_arrays_from_cupy(m):
    """``(indptr int64, indices, values, shape)`` of a ``cupyx.scipy.sparse.csr_matrix`` (or
    any object with CSR ``indptr`` / ``indices`` / ``data`` arrays and ``shape``).

    indices (int32 stays int32, int64 stays int64) and values share memory with ``m``;
    indptr is widened to int64 when it is int32 (a copy of n_rows + 1 entries).
    """
    if not _is_sparse_csr(m):
        raise InputTypeError(f"expected a CSR matrix with indptr/indices/data, got {type(m).__name__}")
    indptr = to_torch(m.indptr)
    indices = to_torch(m.indices)
    values = to_torch(m.data)
    if indptr.dtype != torch.int64:
        indptr = indptr.to(torch.int64)
    if indices.dtype not in (torch.int32, torch.int64):
        indices = indices.to(torch.int64)
    shape = (int(m.shape[0]), int(m.shape[1]))
    return indptr, indices, values, shape


def csr_graph_from_cupy(m, validate: bool = True):
    """A :class:`slifmr_kernels.CSRGraph` over the arrays of a CuPy CSR matrix (no copy of
    indices / values; duplicates are kept as they are, which the kernels sum)."""
    from .graph import CSRGraph

    indptr, indices, values, shape = csr_arrays_from_cupy(m)
    return CSRGraph(indptr, indices, values, shape=shape, validate=validate)
