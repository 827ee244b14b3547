"""Exact sharded top-k over row-sharded candidates: a ring.

Every rank keeps its query rows; the candidate blocks (one per rank) travel round the ring,
P - 1 hops, each rank sending the block it holds to rank + 1 and receiving from rank - 1 while it
scores the current block (the next block's transfer overlaps the local top-k). Each block's
top-k (:func:`slifmr_kernels.topk_similarity`, ids mapped to global) is merged into the running
(n_local, k) result by (score descending, global id ascending): the total order the single
process op uses, so the results are the single-process rows of this rank wherever the local op
scores a pair the same in a block as in the whole table (BLAS tiles of other shapes may round a
score differently in the last bit, which can reorder candidates whose scores tie to rounding;
docs/DISTRIBUTED.md, "Determinism"). Memory per rank:
O(n_local * k) for the result plus two candidate blocks (the one scored, the one arriving) and the
local op's own O(block) workspace: never N x M, never the whole candidate table.

Exclusions (``exclude``): a local CSRGraph (n_local, M) whose columns are global candidate ids;
it is split once per candidate block. Self-exclusion (j == i by global id) joins that list.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import Tensor

from .. import topk_similarity as _local_topk
from .._checks import check_bool, check_choice, check_finite, check_float, check_int
from ..errors import InputError, InputTypeError
from ..graph import CSRGraph
from ..topk.op import normalize_rows, topk_as_graph
from . import _comm
from ._comm import guard
from .partition import RowPartition

__all__ = ["topk_similarity", "knn_graph", "topk_scores"]

_MAX_PAD = 1024
_METRICS = {"cosine": 0, "ip": 1}


def _merge(idx: Tensor, val: Tensor, cidx: Tensor, cval: Tensor, k: int, big: int):
    """Top k of the union by (val desc, idx asc); padding (idx -1) last."""
    i = torch.cat([idx, cidx], 1)
    v = torch.cat([val, cval], 1)
    key = torch.where(i < 0, torch.full_like(i, big), i)
    o = torch.sort(key, dim=1, stable=True).indices
    i, v = torch.gather(i, 1, o), torch.gather(v, 1, o)
    o = torch.sort(v, dim=1, descending=True, stable=True).indices[:, :k]
    return torch.gather(i, 1, o), torch.gather(v, 1, o)


def _split_exclusions(excl_rows: Tensor, excl_cols: Tensor, n_q: int, part: RowPartition):
    """Per candidate rank s: a CSRGraph (n_q, n_s) of the pairs whose column s owns, in s's
    local numbering (None where there are none)."""
    out: list[CSRGraph | None] = [None] * part.world_size
    if excl_cols.numel() == 0:
        return out
    owner = part.owner[excl_cols]
    for s in torch.unique(owner).tolist():
        m = owner == s
        out[s] = CSRGraph.from_edges(
            excl_rows[m], part.local_index[excl_cols[m]], shape=(n_q, int(part.counts[s]))
        )
    return out


def topk_similarity(
    x_local: Tensor,
    k: int,
    partition: RowPartition | None = None,
    y_local: Tensor | None = None,
    y_partition: RowPartition | None = None,
    metric: str = "cosine",
    exclude_self: bool | None = None,
    exclude: CSRGraph | None = None,
    backend: str = "auto",
    group=None,
) -> tuple[Tensor, Tensor]:
    """Collective: the k most similar candidates (global ids) for each of this rank's rows.

    Args:
        x_local: (n_local, d) this rank's query rows: ``partition.rows_of(rank)``.
        k: int >= 0, the same on every rank; k beyond the M candidates pads (idx -1, -inf),
            at most max(M, 1024) padding columns, as in the single-process op.
        partition: RowPartition of the queries; needed for a self-join or exclude_self (the
            queries' global ids), optional otherwise.
        y_local: (m_local, d) this rank's candidate rows, ``y_partition.rows_of(rank)``; None
            means a self-join (y = x, y_partition = partition).
        y_partition: RowPartition of the M candidates (required when y_local is given).
        metric: "cosine" or "ip".
        exclude_self: skip candidate j == query i (global ids); default True for a self-join.
        exclude: optional CSRGraph (n_local, M): this rank's rows' excluded global ids.
        backend: the local top-k backend.

    Returns:
        (idx, val): (n_local, k) int64 global candidate ids and scores, best first, ties by
        lower global id: the single-process ``slifmr_kernels.topk_similarity`` rows of this
        rank (equal ids; the scores equal where the local op scores a pair the same way in a
        block as in the whole table, which its BLAS tiles do to rounding).
    """
    op = "distributed.topk_similarity"
    rank, p = _comm.world(group)
    check_float("x_local", x_local, ndim=2)
    check_choice("metric", metric, tuple(_METRICS))
    k = check_int("k", k, 0)
    self_join = y_local is None
    if exclude_self is not None:
        exclude_self = check_bool("exclude_self", exclude_self)
    else:
        exclude_self = self_join
    if self_join:
        if partition is None:
            raise InputError(f"{op}: a self-join (y_local=None) needs the queries' partition")
        y_local, y_partition = x_local, partition
    else:
        check_float("y_local", y_local, ndim=2)
        assert y_local is not None  # check_float rejects anything but a tensor
        if not isinstance(y_partition, RowPartition):
            raise InputTypeError(
                f"{op}: y_local needs y_partition, a RowPartition of the "
                f"candidates, got {type(y_partition).__name__}"
            )
        if y_local.dtype != x_local.dtype or y_local.shape[1] != x_local.shape[1]:
            raise InputError(
                f"{op}: y_local must have x_local's dtype and d, got "
                f"{y_local.dtype}, {y_local.shape[1]} vs {x_local.dtype}, "
                f"{x_local.shape[1]}"
            )
    assert y_partition is not None  # set or checked above
    for name, part in (("partition", partition), ("y_partition", y_partition)):
        if part is not None and (not isinstance(part, RowPartition) or part.world_size != p):
            raise InputError(f"{op}: {name} must be a RowPartition over the group's {p} ranks")
    if partition is not None and x_local.shape[0] != int(partition.counts[rank]):
        raise InputError(
            f"{op}: x_local must have this rank's {int(partition.counts[rank])} rows, got {x_local.shape[0]}"
        )
    if y_local.shape[0] != int(y_partition.counts[rank]):
        raise InputError(
            f"{op}: y_local must have this rank's {int(y_partition.counts[rank])} "
            f"candidate rows, got {y_local.shape[0]}"
        )
    if exclude_self and partition is None:
        raise InputError(f"{op}: exclude_self needs the queries' partition (their global ids)")
    M, n_q, d = y_partition.num_rows, x_local.shape[0], x_local.shape[1]
    if k > M + max(M, _MAX_PAD):
        raise InputError(f"{op}: k = {k} exceeds the M = {M} candidates by more than max(M, {_MAX_PAD})")
    if exclude is not None:
        if not isinstance(exclude, CSRGraph):
            raise InputTypeError(f"{op}: exclude must be a CSRGraph, got {type(exclude).__name__}")
        if exclude.shape != (n_q, M):
            raise InputError(
                f"{op}: exclude must have shape (n_local, M) = ({n_q}, {M}), got {exclude.shape}"
            )
        exclude.ensure_valid()
    x_local, y_local = x_local.detach(), y_local.detach()
    check_finite("x_local", x_local)
    if not self_join:
        check_finite("y_local", y_local)
    with guard(op, "agreeing on the arguments", group):
        _comm.check_same(
            op,
            group,
            k=k,
            d=d,
            metric=_METRICS[metric],
            exclude_self=int(exclude_self),
            num_candidates=M,
            dtype=int(x_local.dtype == torch.float64),
            candidates=y_partition.fingerprint() % (1 << 62),
        )
    if metric == "cosine":
        x_local = normalize_rows(x_local)
        y_local = x_local if self_join else normalize_rows(y_local)
    x_local, y_local = x_local.contiguous(), y_local.contiguous()

    # Exclusion pairs (local query row, global candidate id), split by candidate owner.
    rows_l, cols_g = [], []
    if exclude is not None:
        rows_l.append(exclude.row_ids().cpu().to(torch.int64))
        cols_g.append(exclude.indices.cpu().to(torch.int64))
    if exclude_self:
        assert partition is not None  # checked above
        q = partition.rows_of(rank)
        keep = q < M
        rows_l.append(torch.arange(n_q)[keep])
        cols_g.append(q[keep])
    excl = _split_exclusions(
        torch.cat(rows_l) if rows_l else torch.empty(0, dtype=torch.int64),
        torch.cat(cols_g) if cols_g else torch.empty(0, dtype=torch.int64),
        n_q,
        y_partition,
    )
    excl = [None if e is None else e.to(x_local.device) for e in excl]

    kk = min(k, M)
    idx = torch.full((n_q, kk), -1, dtype=torch.int64, device=x_local.device)
    val = torch.full((n_q, kk), float("-inf"), dtype=x_local.dtype, device=x_local.device)
    counts = y_partition.counts.tolist()
    block = y_local
    for t in range(p):
        s = (rank - t) % p  # the rank whose candidates ``block`` holds
        reqs, nxt = [], None
        if t < p - 1:  # start the next hop before scoring this block
            nxt_src = (rank - t - 1) % p
            nxt = block.new_empty(counts[nxt_src], d)
            with guard(op, f"ring hop {t + 1} of {p - 1}", group):
                if block.shape[0]:
                    reqs.append(dist.isend(block, (rank + 1) % p, group=group))
                if nxt.shape[0]:
                    reqs.append(dist.irecv(nxt, (rank - 1) % p, group=group))
        n_s = block.shape[0]
        if n_s and n_q and kk:
            kb = min(kk, n_s)
            bi, bv = _local_topk(
                x_local, kb, y=block, metric="ip", exclude_self=False, exclude=excl[s], backend=backend
            )
            gids = y_partition.rows_of(s).to(bi.device)
            bi = torch.where(bi >= 0, gids[bi.clamp_min(0)], bi)
            idx, val = _merge(idx, val, bi, bv, kk, M)
        with guard(op, f"ring hop {t + 1} of {p - 1}", group):
            for r in reqs:
                if r is not None:  # None only for a rank outside the group
                    r.wait()
        if nxt is not None:
            block = nxt
    if kk < k:
        idx = torch.cat([idx, idx.new_full((n_q, k - kk), -1)], 1)
        val = torch.cat([val, val.new_full((n_q, k - kk), float("-inf"))], 1)
    return idx, val


def knn_graph(
    x_local: Tensor,
    k: int,
    partition: RowPartition,
    metric: str = "cosine",
    exclude: CSRGraph | None = None,
    backend: str = "auto",
    group=None,
) -> CSRGraph:
    """Collective: this rank's rows of the exact kNN graph (self excluded) of the row-sharded
    ``x``: a local CSRGraph (n_local, N) with global column ids, up to k edges per row, values
    = similarity (float32): ``slifmr_kernels.knn_graph(x)``'s rows ``partition.rows_of(rank)``.
    k is clamped to N - 1 as there."""
    if not isinstance(partition, RowPartition):
        raise InputTypeError(f"partition must be a RowPartition, got {type(partition).__name__}")
    n = partition.num_rows
    k = min(check_int("k", k, 0), max(n - 1, 0))
    idx, val = topk_similarity(
        x_local, k, partition, metric=metric, exclude=exclude, backend=backend, group=group
    )
    return topk_as_graph(idx, val, n)


def topk_scores(
    user_local: Tensor,
    item_local: Tensor,
    k: int,
    item_partition: RowPartition,
    exclude: CSRGraph | None = None,
    backend: str = "auto",
    group=None,
) -> tuple[Tensor, Tensor]:
    """Collective: sharded full-ranking evaluation. Users and items are both row-sharded
    (users any way: only this rank's user rows are ranked; items by ``item_partition``, passed
    round the ring). ``exclude``: CSRGraph (n_local_users, I) of each local user's excluded
    items (global item ids). Returns (n_local_users, k) global item ids and scores, best first,
    ties by lower item id: ``slifmr_kernels.topk_scores``' rows for these users."""
    return topk_similarity(
        user_local,
        k,
        y_local=item_local,
        y_partition=item_partition,
        metric="ip",
        exclude_self=False,
        exclude=exclude,
        backend=backend,
        group=group,
    )
