"""slifmr_kernels — fast sparse and top-k kernels for graph recommenders.

Ops (each: pure-torch reference, Numba CPU kernel, Triton kernel, CUDA C++ kernel):

* :func:`propagate` / :func:`propagate_layers` — fused heterogeneous propagation
  ``Y = sum_r w_r * A_r (X * E_r)`` over one CSR with relation ids, with autograd.
* :func:`topk_similarity`, :func:`knn_graph`, :func:`topk_scores` — blocked top-k similarity
  (kNN graphs, masked full-ranking evaluation), memory O(N·k + block).
* :func:`knn_refine` — incremental refresh of a kNN graph after the vectors moved.

``backend="auto"`` picks the fastest implementation installed for the inputs' device;
``SLIFMR_BACKEND`` overrides it; :func:`last_backend` says which one ran.
"""
from .backends import BackendUnavailable, available_backends, last_backend
from .graph import CSRGraph, stack_relations
from .propagate.op import propagate, propagate_layers
from .topk.op import knn_graph, normalize_rows, topk_scores, topk_similarity
from .refine.op import knn_refine

__version__ = "0.1.0"

__all__ = [
    "CSRGraph", "stack_relations", "propagate", "propagate_layers", "topk_similarity",
    "knn_graph", "topk_scores", "normalize_rows", "available_backends", "last_backend",
    "BackendUnavailable", "knn_refine",
]
