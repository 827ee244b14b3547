"""Incremental kNN refresh: update a kNN graph after the vectors moved.

Exact kNN costs 2·N²·d FLOP; after one training epoch the item vectors have moved a little,
and the previous graph is an excellent seed. :func:`knn_refine` rescores the old neighbours
with the new vectors and then runs NN-descent rounds (neighbour-of-neighbour candidates, a
few random ones) until few lists change: roughly N·k·(2k)·d FLOP per round instead of N²·d.
:func:`knn_recall` measures the result against an exact graph.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .._checks import (
    check_bool,
    check_choice,
    check_finite,
    check_float,
    check_int,
    check_same_device,
    is_int,
)
from ..backends import load, resolve
from ..errors import InputError, InputTypeError
from ..graph import CSRGraph
from ..topk.op import normalize_rows, topk_as_graph

__all__ = ["knn_refine", "knn_recall"]

_METRICS = ("cosine", "ip")


def _int_arg(name: str, value, minimum: int) -> int:
    return check_int(name, value, minimum)


def knn_refine(
    x: Tensor,
    previous_graph: CSRGraph,
    k: int,
    metric: str = "cosine",
    max_iters: int = 10,
    sample_random: int = 2,
    max_candidates: int | None = None,
    delta: float = 0.001,
    seed: int | None = None,
    backend: str = "auto",
    return_stats: bool = False,
):
    """Refresh a kNN graph of the rows of ``x``, seeded by ``previous_graph``.

    Args:
        x: (N, d) float32/float64, the new vectors (finite).
        previous_graph: CSRGraph (N, N); row i's columns are the seeds of row i's list (any
            count per row, e.g. the kNN graph of the previous epoch, symmetrised or not; the
            values are ignored, self loops and duplicates are skipped).
        k: neighbours per row, 1 <= k; clamped to N - 1 (self is never a neighbour).
        metric: "cosine" (rows L2-normalised first) or "ip".
        max_iters: NN-descent rounds at most (0: only rescore the seeds).
        sample_random: random candidates per row and round (escape from stale regions);
            clamped to N.
        max_candidates: reverse neighbours joined per row and round (default k); caps the
            cost of hubs; clamped to N - 1.
        delta: stop when fewer than ``delta * N * k`` list entries changed in a round.
        seed: int seed of all sampling in [-2**63, 2**64) (default 0). Same inputs + seed ->
            same graph, on any thread count.
        backend: "auto", "numba" or "torch".
        return_stats: also return a dict (backend, iterations, updates per round).

    Returns:
        CSRGraph (N, N): k edges per row (N - 1 when N <= k), values = similarity (float32),
        columns sorted — the layout of :func:`slifmr_kernels.knn_graph`. With
        ``return_stats``: ``(graph, stats)``.

    >>> import torch, slifmr_kernels as sk
    >>> x = torch.randn(200, 8, generator=torch.Generator().manual_seed(0))
    >>> g0 = sk.knn_graph(x, 5, backend="torch")
    >>> g1 = knn_refine(x + 0.01 * torch.randn(200, 8), g0, 5, seed=1)
    >>> g1.shape, g1.nnz
    ((200, 200), 1000)
    """
    check_float("x", x, ndim=2)
    if not isinstance(previous_graph, CSRGraph):
        raise InputTypeError(f"previous_graph must be a CSRGraph, got {type(previous_graph).__name__}")
    previous_graph.ensure_valid()
    n = x.shape[0]
    if previous_graph.shape != (n, n):
        raise InputError(
            f"previous_graph must have shape (N, N) = ({n}, {n}) to match x, got {previous_graph.shape}"
        )
    if previous_graph.device != x.device:
        raise InputError(f"previous_graph is on {previous_graph.device} but x is on {x.device}")
    k = _int_arg("k", k, 1)
    check_choice("metric", metric, _METRICS)
    max_iters = _int_arg("max_iters", max_iters, 0)
    sample_random = _int_arg("sample_random", sample_random, 0)
    max_candidates = k if max_candidates is None else _int_arg("max_candidates", max_candidates, 0)
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not delta >= 0:
        raise InputError(f"delta must be a number >= 0, got {delta!r}")
    seed = 0 if seed is None else seed
    if not is_int(seed):
        raise InputTypeError(f"seed must be an int or None, got {type(seed).__name__}")
    seed = int(seed)
    if not -(2**63) <= seed < 2**64:
        raise InputError(f"seed must lie in [-2**63, 2**64), got {seed}")
    return_stats = check_bool("return_stats", return_stats)
    # A node has at most N - 1 reverse neighbours and N candidates: larger values only cost
    # (a (N, max_candidates) buffer in the torch backend, a loop per row in numba).
    max_candidates = min(max_candidates, max(n - 1, 0))
    sample_random = min(sample_random, n)
    check_same_device(x=x, previous_graph=previous_graph.indptr)
    x = x.detach()
    check_finite("x", x)
    name = resolve("refine", backend, x.device)
    kk = min(k, n - 1)
    stats = {"backend": name, "iterations": 0, "updates": []}
    if kk < 1:  # zero or one node: no neighbours at all
        g = topk_as_graph(torch.empty(n, 0, dtype=torch.int64), x.new_empty(n, 0), n)
        return (g, stats) if return_stats else g
    if metric == "cosine":
        x = normalize_rows(x)
    idx, val, updates = load("refine", name).refine(
        x.contiguous(),
        previous_graph.indptr,
        previous_graph.indices,
        kk,
        max_iters,
        sample_random,
        max_candidates,
        float(delta),
        seed,
    )
    graph = topk_as_graph(idx.to(x.device), val.to(x.device), n)
    stats.update(iterations=len(updates), updates=list(updates))
    return (graph, stats) if return_stats else graph


def _as_padded(name: str, a: CSRGraph | Tensor) -> Tensor:
    """(N, w) int64 neighbour ids with -1 padding, from a CSRGraph or an index tensor."""
    if isinstance(a, CSRGraph):
        deg = a.degrees()
        n = a.shape[0]
        w = int(deg.max()) if n and a.nnz else 0
        out = torch.full((n, w), -1, dtype=torch.int64, device=a.device)
        rows = a.row_ids()
        pos = torch.arange(a.nnz, device=a.device) - a.indptr[:-1].repeat_interleave(deg)
        out[rows, pos] = a.indices.long()
        return out
    if isinstance(a, Tensor) and a.dim() == 2 and not a.dtype.is_floating_point:
        return a.long()
    raise InputTypeError(f"{name} must be a CSRGraph or an (N, k) integer tensor of neighbour ids")


def knn_recall(approx_graph_or_idx: CSRGraph | Tensor, exact_idx: CSRGraph | Tensor) -> float:
    """Fraction of the exact neighbours that the approximate graph found.

    Args:
        approx_graph_or_idx: CSRGraph (N, N) or (N, k') int tensor of neighbour ids (-1 =
            none).
        exact_idx: (N, k) int tensor of the exact neighbours (-1 = none), e.g. the first
            output of :func:`slifmr_kernels.topk_similarity`, or a CSRGraph.

    Returns:
        sum over rows of |approx(i) ∩ exact(i)| / number of valid exact entries (1.0 when
        there are none). Neighbours tied with the k-th exact score may legitimately differ,
        so exact methods can score a hair under 1 on data with ties.
    """
    a = _as_padded("approx_graph_or_idx", approx_graph_or_idx)
    e = _as_padded("exact_idx", exact_idx).to(a.device)
    if a.shape[0] != e.shape[0]:
        raise InputError(f"approx_graph_or_idx has {a.shape[0]} rows but exact_idx has {e.shape[0]}")
    total = int((e >= 0).sum())
    if total == 0:
        return 1.0
    hits = 0
    rows = max(1, (1 << 24) // max(1, a.shape[1] * e.shape[1]))
    for r0 in range(0, e.shape[0], rows):
        ea, aa = e[r0 : r0 + rows], a[r0 : r0 + rows]
        match = (ea[:, :, None] == aa[:, None, :]) & (ea[:, :, None] >= 0)
        hits += int(match.any(2).sum())
    return hits / total
