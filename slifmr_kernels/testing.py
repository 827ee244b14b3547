"""Random inputs with the shapes that break kernels: for tests and benchmarks.

Power-law degrees, empty rows, one heavy row, isolated columns, duplicate edges, self-loops,
many relations — all from one seeded generator so that a failing case can be replayed.
"""
from __future__ import annotations

import torch

from .graph import CSRGraph

__all__ = ["power_law_ids", "random_graph", "bipartite_adjacency", "allowed_mask",
           "round_tf32", "fuse_views_formula"]


def power_law_ids(n_ids: int, count: int, alpha: float = 1.2, generator=None) -> torch.Tensor:
    """(count,) int64 ids in [0, n_ids) drawn with P(id) ∝ (id + 1)^-alpha, then shuffled so
    that popular ids are scattered over the id range (as in real catalogs)."""
    if n_ids <= 0 or count <= 0:
        return torch.empty(0, dtype=torch.int64)
    p = (torch.arange(1, n_ids + 1, dtype=torch.float64) ** -alpha)
    ids = torch.multinomial(p, count, replacement=True, generator=generator)
    perm = torch.randperm(n_ids, generator=generator)
    return perm[ids]


def random_graph(n_rows: int, n_cols: int, nnz: int, *, num_relations: int | None = None,
                 power_law: bool = True, empty_rows: float = 0.0, heavy_row: float = 0.0,
                 index_dtype=None, dtype=torch.float32, generator=None) -> CSRGraph:
    """A random CSRGraph of about ``nnz`` edges (duplicates are summed, so a few fewer).

    Args:
        power_law: power-law row and column degrees (else uniform).
        empty_rows: fraction of rows forced empty.
        heavy_row: fraction of the edges put into one row (row 0).
        num_relations: attach uniformly random relation ids in [0, num_relations).
        Values are uniform in [0.5, 1.5) so that no edge cancels another.
    """
    g = generator
    n_heavy = int(nnz * heavy_row) if n_rows else 0
    n_rest = nnz - n_heavy
    if n_rows == 0 or n_cols == 0:
        src = dst = torch.empty(0, dtype=torch.int64)
    else:
        if power_law:
            src = power_law_ids(n_rows, n_rest, generator=g)
            dst = power_law_ids(n_cols, nnz, generator=g)
        else:
            src = torch.randint(0, n_rows, (n_rest,), generator=g)
            dst = torch.randint(0, n_cols, (nnz,), generator=g)
        src = torch.cat([torch.zeros(n_heavy, dtype=torch.int64), src])
        if empty_rows > 0:
            empty = torch.rand(n_rows, generator=g) < empty_rows
            if heavy_row > 0:
                empty[0] = False  # the heavy row stays
            keep = ~empty[src]
            src, dst = src[keep], dst[keep]
    weight = torch.rand(src.numel(), generator=g, dtype=torch.float64) + 0.5
    relation = None
    if num_relations is not None:
        relation = torch.randint(0, num_relations, (src.numel(),), generator=g)
    return CSRGraph.from_edges(src, dst, weight, relation=relation, shape=(n_rows, n_cols),
                               num_relations=num_relations, index_dtype=index_dtype, dtype=dtype)


def bipartite_adjacency(n_users: int, n_items: int, n_interactions: int, generator=None,
                        dtype=torch.float32) -> CSRGraph:
    """LightGCN's symmetric-normalised adjacency [[0, R], [R^T, 0]] of a power-law user-item
    graph, over n_users + n_items nodes (about 2 * n_interactions edges)."""
    users = power_law_ids(n_users, n_interactions, alpha=1.0, generator=generator)
    items = power_law_ids(n_items, n_interactions, alpha=1.0, generator=generator)
    n = n_users + n_items
    src = torch.cat([users, items + n_users])
    dst = torch.cat([items + n_users, users])
    adj = CSRGraph.from_edges(src, dst, shape=(n, n), dtype=dtype)
    # Repeated interactions count once, as in implicit-feedback data.
    return adj.with_values(torch.ones_like(adj.values)).normalize("sym")


def allowed_mask(n: int, m: int, exclude_self: bool, indptr=None, indices=None) -> torch.Tensor:
    """(n, m) bool: which columns a top-k row may return under the op contract (not j == i when
    ``exclude_self``; not the columns of row i's exclusion list ``indices[indptr[i]:
    indptr[i + 1]]``). The dense counterpart that top-k tests check results against."""
    ok = torch.ones(n, m, dtype=torch.bool)
    if exclude_self:
        r = torch.arange(min(n, m))
        ok[r, r] = False
    if indptr is not None:
        indptr = indptr.cpu()
        rows = torch.repeat_interleave(torch.arange(n), indptr[1:] - indptr[:-1])
        ok[rows, indices.cpu().long()] = False
    return ok


def round_tf32(t: torch.Tensor) -> torch.Tensor:
    """float32 rounded to TF32 (10 mantissa bits, to nearest, ties away from zero, as
    ``cvt.rna.tf32.f32`` does): what tensor cores see of a float32 operand."""
    b = t.contiguous().view(torch.int32)
    return ((b + 0x1000) & ~0x1FFF).view(torch.float32)


def fuse_views_formula(z: torch.Tensor, alpha: torch.Tensor, views: torch.Tensor) -> torch.Tensor:
    """``z + sum_k alpha[k] * F.normalize(v_k)`` written as model code writes it, with torch's
    own autograd: the definition :func:`slifmr_kernels.fuse_views` is checked and timed against.

    z (N, d), alpha (V,), views (N, V*d) with view k in columns k*d .. (k+1)*d - 1.
    """
    d = z.shape[1]
    return z + sum(alpha[k] * torch.nn.functional.normalize(views[:, k * d:(k + 1) * d], dim=1)
                   for k in range(alpha.numel()))
