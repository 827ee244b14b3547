"""Row partitions: which rank owns which row of a sharded graph or embedding table.

A :class:`RowPartition` is replicated: every rank builds the same one (it is a pure function
of its arguments) and keeps O(N) integers (owner, rows by owner, position in the owner's block),
never the graph's O(nnz). Every rank holds the rows it owns in ascending global id.
"""

from __future__ import annotations

import torch

from ..errors import InputError, InputTypeError

__all__ = ["RowPartition", "partition_rows", "halo_sizes", "bipartite_order"]


class RowPartition:
    """Owner of every row. Attributes (all int64, CPU):

    * ``owner`` (N,): the rank holding row i;
    * ``rows`` (N,): the rows of rank 0, then rank 1, ..., each block in ascending id;
    * ``offsets`` (P + 1,): rank r owns ``rows[offsets[r]:offsets[r + 1]]``;
    * ``local_index`` (N,): row i's position in its owner's block.
    """

    def __init__(self, owner, world_size: int):
        owner = torch.as_tensor(owner)
        if owner.dtype.is_floating_point or owner.dtype == torch.bool or owner.ndim != 1:
            raise InputTypeError(
                f"owner must be a 1-D integer tensor, got {owner.dtype} with shape {tuple(owner.shape)}"
            )
        if not isinstance(world_size, int) or world_size < 1:
            raise InputError(f"world_size must be an int >= 1, got {world_size!r}")
        owner = owner.to("cpu", torch.int64)
        if owner.numel() and (int(owner.min()) < 0 or int(owner.max()) >= world_size):
            raise InputError(
                f"owner entries must lie in [0, {world_size}), got [{int(owner.min())}, {int(owner.max())}]"
            )
        n = owner.numel()
        self.world_size = world_size
        self.num_rows = n
        self.owner = owner
        self.rows = torch.sort(owner, stable=True).indices
        counts = torch.bincount(owner, minlength=world_size)
        self.offsets = torch.zeros(world_size + 1, dtype=torch.int64)
        torch.cumsum(counts, 0, out=self.offsets[1:])
        self.local_index = torch.empty(n, dtype=torch.int64)
        self.local_index[self.rows] = torch.arange(n) - self.offsets[owner[self.rows]]

    @property
    def counts(self) -> torch.Tensor:
        """(P,) rows per rank."""
        return self.offsets[1:] - self.offsets[:-1]

    def rows_of(self, rank: int) -> torch.Tensor:
        """The global ids rank ``rank`` owns, ascending."""
        return self.rows[int(self.offsets[rank]) : int(self.offsets[rank + 1])]

    def fingerprint(self) -> int:
        """An integer that differs, with high probability, between different partitions
        (compared across ranks before a sharded structure is built)."""
        if self.num_rows == 0:
            return self.world_size
        w = (torch.arange(self.num_rows, dtype=torch.int64) * 1_000_003 + 7) % 2_147_483_647
        h = int(((self.owner + 1) * w).sum() % (1 << 61))
        return h ^ (self.num_rows << 3) ^ self.world_size

    def __eq__(self, other) -> bool:
        return (
            isinstance(other, RowPartition)
            and other.world_size == self.world_size
            and torch.equal(other.owner, self.owner)
        )

    def __repr__(self) -> str:
        return (
            f"RowPartition(num_rows={self.num_rows}, world_size={self.world_size}, "
            f"counts={self.counts.tolist()})"
        )


def partition_rows(num_rows: int, world_size: int, order=None, weights=None) -> RowPartition:
    """Split ``num_rows`` rows over ``world_size`` ranks in contiguous runs of an order.

    Args:
        num_rows: N >= 0.
        world_size: P >= 1.
        order: optional permutation of range(N) (e.g. ``slifmr.data.reorder.locality_order``):
            rank r gets the r-th run of rows in this order, so rows that are neighbours in the
            order (and, for a locality order, in the graph) land on the same rank and the halo
            stays small. Default: the identity (rank r gets a contiguous id range).
        weights: optional (N,) non-negative cost per row (e.g. degree + 1): the runs are cut so
            each rank gets about the same total weight instead of the same row count.

    Returns:
        RowPartition. Deterministic: every rank computes the same one from the same arguments.
    """
    if not isinstance(num_rows, int) or num_rows < 0:
        raise InputError(f"num_rows must be an int >= 0, got {num_rows!r}")
    if not isinstance(world_size, int) or world_size < 1:
        raise InputError(f"world_size must be an int >= 1, got {world_size!r}")
    if order is None:
        order_t = torch.arange(num_rows)
    else:
        order_t = torch.as_tensor(order).to("cpu", torch.int64).reshape(-1)
        if order_t.numel() != num_rows or not torch.equal(torch.sort(order_t).values, torch.arange(num_rows)):
            raise InputError(f"order must be a permutation of range({num_rows})")
    if weights is None:
        # Balanced counts: the first N % P ranks get one row more.
        base, extra = divmod(num_rows, world_size)
        sizes = torch.tensor([base + (r < extra) for r in range(world_size)], dtype=torch.int64)
        cuts = torch.zeros(world_size + 1, dtype=torch.int64)
        torch.cumsum(sizes, 0, out=cuts[1:])
    else:
        w = torch.as_tensor(weights, dtype=torch.float64).reshape(-1)
        if w.numel() != num_rows or bool((w < 0).any()) or not bool(torch.isfinite(w).all()):
            raise InputError(f"weights must be {num_rows} finite non-negative numbers")
        cum = torch.cumsum(w[order_t], 0)
        total = float(cum[-1]) if num_rows else 0.0
        targets = torch.tensor([total * r / world_size for r in range(1, world_size)], dtype=torch.float64)
        inner = torch.searchsorted(cum, targets, right=True)
        cuts = torch.cat(
            [torch.zeros(1, dtype=torch.int64), inner, torch.full((1,), num_rows, dtype=torch.int64)]
        )
    owner = torch.empty(num_rows, dtype=torch.int64)
    pos_rank = torch.repeat_interleave(torch.arange(world_size), cuts[1:] - cuts[:-1])
    owner[order_t] = pos_rank
    return RowPartition(owner, world_size)


def halo_sizes(src, dst, partition: RowPartition) -> dict:
    """Plan a partition on one machine, before launching: the halo each rank would receive.

    ``src``, ``dst``: the whole graph's edges (row src[e] reads column dst[e]); ``partition``:
    a candidate RowPartition. Returns ``{"halo_rows": [per rank], "total": sum,
    "fraction": total / N, "cut_edges": edges whose row and column live on different ranks}``;
    ``halo_rows`` equals what :meth:`ShardedGraph.report` measures for the built graph."""
    src = torch.as_tensor(src).to("cpu", torch.int64).reshape(-1)
    dst = torch.as_tensor(dst).to("cpu", torch.int64).reshape(-1)
    if src.numel() != dst.numel():
        raise InputError(f"src and dst must have the same length, got {src.numel()} and {dst.numel()}")
    n, p = partition.num_rows, partition.world_size
    for name, t in (("src", src), ("dst", dst)):
        if t.numel() and (int(t.min()) < 0 or int(t.max()) >= n):
            raise InputError(f"{name} ids must lie in [0, {n})")
    ro, co = partition.owner[src], partition.owner[dst]
    cut = ro != co
    pairs = torch.unique(ro[cut] * max(n, 1) + dst[cut])  # (reading rank, foreign column)
    per_rank = torch.bincount(pairs // max(n, 1), minlength=p)
    total = int(per_rank.sum())
    return {
        "halo_rows": per_rank.tolist(),
        "total": total,
        "fraction": total / max(n, 1),
        "cut_edges": int(cut.sum()),
    }


def bipartite_order(user_order, item_order) -> torch.Tensor:
    """One node order of the (U + I) user-item graph (users 0..U-1, item i at node U + i) from
    a user order and an item order (e.g. ``slifmr.data.reorder.locality_order``'s pair).

    The two orders are interleaved by relative position (the user at position p of U and the
    item at position q of I meet at p / U vs q / I; ties: the user first), so that a contiguous
    run of the result holds the users and the items of the same stretch of both orders, which
    is where the locality order puts a user's items. Concatenating the two orders instead would
    put all users on the first ranks and all items on the last: every edge cut."""
    uo = torch.as_tensor(user_order).to("cpu", torch.int64).reshape(-1)
    io = torch.as_tensor(item_order).to("cpu", torch.int64).reshape(-1)
    U, I = uo.numel(), io.numel()
    for name, o, n in (("user_order", uo, U), ("item_order", io, I)):
        if not torch.equal(torch.sort(o).values, torch.arange(n)):
            raise InputError(f"{name} must be a permutation of range({n})")
    # position keys as exact fractions p / U and q / I compared by cross-multiplication
    ku = torch.arange(U, dtype=torch.int64) * max(I, 1)
    ki = torch.arange(I, dtype=torch.int64) * max(U, 1)
    key = torch.cat([ku * 2, ki * 2 + 1])  # users before items at equal positions
    nodes = torch.cat([uo, U + io])
    return nodes[torch.sort(key, stable=True).indices]
