"""Item-item graphs from features, as FREEDOM and LATTICE build them, on the kernels.

Their reference code keeps each item in its own neighbour list (the top-k of a similarity
matrix whose diagonal is 1) and normalises the non-symmetric kNN graph with its *row* sums on
both sides, D_r^-1/2 S D_r^-1/2 (not ``CSRGraph.normalize("sym")``, which uses row sums on the
left and column sums on the right). These helpers build exactly that, with ``sk`` top-k
instead of an I x I similarity matrix.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

import slifmr_kernels as sk

__all__ = [
    "knn_edges",
    "row_sum_normalized",
    "edge_cosine",
    "propagate_edges",
    "graph_from_edges",
    "mixed_feature_graph",
]


def knn_edges(x: torch.Tensor, k: int, backend: str = "auto") -> tuple:
    """The cosine kNN edges of the rows of ``x`` (N, d), each row's own item included.

    Returns (rows, cols) int64 (E,) with E = N * min(k, N): row i's k most similar rows by
    cosine, itself among them (ties by lower index). Zero rows are similar to nothing (score
    0) and keep their k lowest ids.
    """
    idx, val = sk.topk_similarity(
        x.detach().float(), min(k, x.shape[0]), metric="cosine", exclude_self=False, backend=backend
    )
    g = sk.CSRGraph.from_topk(idx, val, x.shape[0])
    return g.row_ids(), g.indices.to(torch.int64)


def edge_cosine(x: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """(E,) cosine similarity of x[rows] and x[cols], differentiable in ``x``; negative
    similarities are clipped to 0 (a row sum must stay positive for the normalisation)."""
    xn = F.normalize(x, dim=1)
    return (xn[rows] * xn[cols]).sum(1).clamp_min(0.0)


def row_sum_normalized(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> torch.Tensor:
    """(E,) values of D_r^-1/2 S D_r^-1/2 for the n x n graph S given as edges (duplicates
    count as their sum); rows with a zero sum get zero weights. Differentiable in ``values``."""
    deg = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values)
    inv = torch.where(deg > 0, deg.clamp_min(1e-30).rsqrt(), torch.zeros_like(deg))
    return values * inv[rows] * inv[cols]


def graph_from_edges(rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, n: int) -> sk.CSRGraph:
    """A constant n x n CSRGraph of the edges (duplicates summed), for ``sk.propagate``."""
    return sk.CSRGraph.from_edges(rows, cols, values.detach(), shape=(n, n))


def propagate_edges(
    rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor, h: torch.Tensor
) -> torch.Tensor:
    """y[r] = sum over edges (r, c, v) of v * h[c]: (n, d), differentiable in ``values`` and
    ``h``. For the few batches that train through a learned graph's edge values, which
    ``sk.propagate`` does not differentiate; every other propagation uses the kernels."""
    return torch.zeros_like(h).index_add(0, rows, values[:, None] * h[cols])


def mixed_feature_graph(
    features: Sequence[torch.Tensor], weights: Sequence[float], k: int, n: int, backend: str = "auto"
) -> sk.CSRGraph:
    """sum_m weights[m] * D_r^-1/2 S_m D_r^-1/2 over the modalities' kNN graphs S_m (values:
    cosine similarities of the raw features), as one constant CSRGraph."""
    rows, cols, vals = [], [], []
    for f, w in zip(features, weights):
        r, c = knn_edges(f, k, backend=backend)
        v = row_sum_normalized(r, c, edge_cosine(f.float(), r, c), n)
        rows.append(r)
        cols.append(c)
        vals.append(float(w) * v)
    return graph_from_edges(torch.cat(rows), torch.cat(cols), torch.cat(vals), n)
