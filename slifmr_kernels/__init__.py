"""slifmr_kernels — fast sparse and top-k kernels for graph recommenders.

Ops (each: pure-torch reference, Numba CPU kernel, Triton kernel, CUDA C++ kernel):

* :func:`propagate` / :func:`propagate_layers` — fused heterogeneous propagation
  ``Y = sum_r w_r * A_r (X * E_r)`` over one CSR with relation ids, with autograd.
* :func:`topk_similarity`, :func:`knn_graph`, :func:`topk_scores` — blocked top-k similarity
  (kNN graphs, masked full-ranking evaluation), memory O(N·k + block).
* :func:`knn_refine` — incremental refresh of a kNN graph after the vectors moved.
* :func:`fuse_views` — view-weighted fusion of L2-normalised rows, one pass each way.

``backend="auto"`` picks the fastest implementation installed for the inputs' device;
``SLIFMR_BACKEND`` overrides it; :func:`last_backend` says which one ran.

Bad input raises :class:`InputError` (a ``ValueError``; :class:`GraphError` for a graph's
arrays, with ``TypeError`` / ``IndexError`` variants) naming the argument, before any kernel
runs: see :mod:`slifmr_kernels.errors`.
"""

import os as _os

# torch and the Numba kernels each run an OpenMP thread pool. With the default (active) wait
# policy the idle pool spins after every parallel region and starves the other one: on 2 cores
# every small torch op after a Numba call became ~10x slower (a synthetic SLIF-MR epoch took
# 5.5 s instead of 1.4 s). The policy is read when a runtime starts, so it is set before torch
# is imported here (torch imported earlier keeps its own; Numba's pool still starts passive).
# An explicit OMP_WAIT_POLICY in the environment wins (it is never overridden), and
# SLIFMR_SET_OMP_WAIT_POLICY=0 leaves the variable alone altogether. Side effects of the import,
# all documented in docs/PORTING.md: this variable (inherited by child processes), and the
# Numba kernels' compile cache in ~/.cache/slifmr/numba (backends.numba_cache_dir).
if _os.environ.get("SLIFMR_SET_OMP_WAIT_POLICY", "1") != "0":
    _os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from ._version import __version__ as __version__  # noqa: E402
from .backends import available_backends, last_backend  # noqa: E402
from .errors import (  # noqa: E402
    BackendUnavailable,
    GraphError,
    GraphIndexError,
    GraphTypeError,
    InputError,
    InputIndexError,
    InputTypeError,
    KernelError,
)
from .fuse.op import fuse_views  # noqa: E402
from .graph import CSRGraph, stack_relations  # noqa: E402
from .propagate.op import propagate, propagate_layers  # noqa: E402
from .refine.op import knn_refine  # noqa: E402
from .topk.op import knn_graph, normalize_rows, topk_scores, topk_similarity  # noqa: E402

__all__ = [
    "CSRGraph",
    "stack_relations",
    "propagate",
    "propagate_layers",
    "topk_similarity",
    "knn_graph",
    "topk_scores",
    "normalize_rows",
    "available_backends",
    "last_backend",
    "BackendUnavailable",
    "knn_refine",
    "fuse_views",
    "KernelError",
    "InputError",
    "InputTypeError",
    "InputIndexError",
    "GraphError",
    "GraphTypeError",
    "GraphIndexError",
]
