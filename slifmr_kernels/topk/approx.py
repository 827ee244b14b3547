"""Approximate kNN graph from features alone: random-projection block candidates + NN-descent.

``sk.knn_graph(x, k, method="approx")``. For graphs with no previous graph to refine (item
graphs of a new catalog, 1M-item modality graphs), where the exact O(N² d) join is too slow:

1. **Seeds.** ``orders`` times (:data:`ORDERS`: 2): rows sorted by a random-hyperplane hash
   (``bits`` sign bits, then the first projection), the order cut into blocks of ``block`` rows, an exact kNN
   (``topk_similarity``, the fast CPU kernel) inside every block. Rows with a small angle tend
   to share a block in at least one order; the union of the per-block lists is the seed graph.
   Cost ``orders · N · block · d`` multiply-adds.
2. **NN-descent.** :func:`slifmr_kernels.knn_refine` (local joins: neighbours of neighbours,
   reverse neighbours, a few random samples) from the seed graph until fewer than
   ``delta · N · k`` entries change.

Deterministic for a given ``seed``. Recall against the exact graph is measured by
``bench/compare_topk.py approx`` (docs/PERFORMANCE.md); it is not guaranteed.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["knn_graph_approx", "ORDERS"]

#: Hash orders (seed block graphs) by catalog size: (max N, orders). Measured recall@10 on
#: clustered d = 64 data: 0.988 at 100k with 2; at 1M 0.866 with 2 (250.7 s) and 0.879 with
#: 4 (345.1 s, docs/PERFORMANCE.md): more seeds barely help there (NN-descent's convergence
#: limits it), so 2 everywhere.
ORDERS = [(None, 2)]


def default_orders(n: int) -> int:
    for limit, orders in ORDERS:
        if limit is None or n <= limit:
            return orders
    return ORDERS[-1][1]


def _block_edges(x, k, block, bits, gen):
    """(src, dst) of the exact kNN inside the blocks of one random-hyperplane order."""
    from .op import topk_similarity

    n, d = x.shape
    planes = torch.randn(d, bits, generator=gen, dtype=x.dtype)
    proj = x @ planes
    code = ((proj > 0).to(torch.int64) << torch.arange(bits, dtype=torch.int64)).sum(1)
    rank0 = torch.empty(n, dtype=torch.int64)
    rank0[torch.argsort(proj[:, 0])] = torch.arange(n)
    order = torch.argsort(code * n + rank0)
    nblocks = max(1, -(-n // block))
    bounds = np.linspace(0, n, nblocks + 1).astype(np.int64)
    src, dst = [], []
    for b in range(nblocks):
        ids = order[bounds[b] : bounds[b + 1]]
        kk = min(k, ids.numel() - 1)
        if kk <= 0:
            continue
        idx, _ = topk_similarity(x[ids], kk, metric="ip")
        ok = idx >= 0
        src.append(ids[:, None].expand_as(idx)[ok])
        dst.append(ids[idx.clamp_min(0)][ok])
    return torch.cat(src), torch.cat(dst)


def knn_graph_approx(
    x,
    k,
    metric="cosine",
    exclude_self=True,
    orders=None,
    block=1024,
    bits=16,
    max_iters=10,
    delta=0.001,
    seed=0,
    backend="auto",
):
    """Approximate kNN graph (see module doc). ``x`` (N, d) float32/float64 CPU or CUDA,
    validated by the caller (:func:`slifmr_kernels.knn_graph`). Returns the CSRGraph layout of
    the exact op (k edges per row, columns sorted, float32 values)."""
    from ..graph import CSRGraph
    from ..refine.op import knn_refine
    from .op import normalize_rows, topk_as_graph

    n = x.shape[0]
    xs = normalize_rows(x) if metric == "cosine" else x
    kk = min(k, max(n - 1, 0))
    if kk == 0 or n <= max(block, 2 * kk + 2):  # small: the exact op is as cheap
        from .op import topk_similarity

        idx, val = topk_similarity(
            xs, min(k, n - int(exclude_self)), metric="ip", exclude_self=exclude_self, backend=backend
        )
        return topk_as_graph(idx, val, n)
    gen = torch.Generator().manual_seed(int(seed))
    orders = default_orders(n) if orders is None else orders
    src, dst = [], []
    for _ in range(max(1, int(orders))):
        s, t = _block_edges(xs.cpu(), kk, block, bits, gen)
        src.append(s)
        dst.append(t)
    src, dst = torch.cat(src), torch.cat(dst)
    seedg = CSRGraph.from_edges(src, dst, shape=(n, n))
    g = knn_refine(
        xs,
        seedg.to(x.device),
        kk,
        metric="ip",
        max_iters=max_iters,
        delta=delta,
        seed=int(seed),
        backend=backend,
    )
    if exclude_self:
        return g
    # keep each row among its neighbours: the row itself first, then its k - 1 best others
    # (for "ip" the row may not be its own best; the list is still sorted by score)
    rows = torch.arange(n, device=x.device)
    selfv = (xs * xs).sum(1)
    deg = g.degrees()
    nbr_i = g.indices.to(torch.int64).view(n, -1) if bool((deg == kk).all()) else None
    if nbr_i is None:  # pragma: no cover - knn_refine returns k per row
        raise RuntimeError("knn_refine returned ragged rows")
    nbr_v = g.values.view(n, -1).to(xs.dtype)
    all_i = torch.cat([rows[:, None], nbr_i], 1)
    all_v = torch.cat([selfv[:, None], nbr_v], 1)
    key_i = torch.argsort(all_i, dim=1, stable=True)
    all_i, all_v = all_i.gather(1, key_i), all_v.gather(1, key_i)
    all_v, o = torch.sort(all_v, dim=1, descending=True, stable=True)
    all_i = all_i.gather(1, o)
    kt = min(k, n)
    return topk_as_graph(all_i[:, :kt], all_v[:, :kt], n)
