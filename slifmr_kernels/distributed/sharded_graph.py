"""ShardedGraph: a square graph split by rows over the ranks of a process group.

Rank r holds the rows it owns (``partition.rows_of(r)``, ascending) as a local
:class:`~slifmr_kernels.CSRGraph` of shape (n_local, n_ext) whose columns are the ``n_ext`` global
ids its rows read (its own rows plus a halo of rows other ranks own), numbered in ascending
global id, so every local row lists its edges in the same order as the global graph's row.
The exchange plan says which of its rows each other rank needs (``send_idx`` / ``send_counts``)
and where the rows it receives go (``recv_pos`` / ``recv_counts``).
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from ..errors import InputError, InputTypeError
from ..graph import CSRGraph
from . import _comm
from ._comm import guard
from .partition import RowPartition, partition_rows

__all__ = ["ShardedGraph"]

_OP = "ShardedGraph.from_edges"


def _ids(name, a) -> torch.Tensor:
    t = torch.as_tensor(a)
    if t.dtype.is_floating_point or t.dtype == torch.bool or t.ndim != 1:
        raise InputTypeError(f"{name} must be a 1-D integer array, got {t.dtype} with shape {tuple(t.shape)}")
    return t.to("cpu", torch.int64)


class ShardedGraph:
    """One rank's share of a row-partitioned square graph (see the module docstring).

    Attributes: ``graph`` (local CSRGraph, (n_local, n_ext)), ``partition``, ``rank``,
    ``world_size``, ``group``, ``num_nodes`` (N), ``rows`` (the n_local global ids held here),
    ``ext_ids`` (the n_ext global ids of the local columns, ascending), ``own_pos`` (column of
    each local row), ``recv_pos`` / ``recv_counts`` (halo columns, grouped by owner rank, and
    how many come from each rank), ``send_idx`` / ``send_counts`` (local rows to send, grouped
    by destination rank, and how many go to each).

    Build it with :meth:`from_edges` (a collective).
    """

    graph: CSRGraph
    partition: RowPartition
    rank: int
    world_size: int
    group: dist.ProcessGroup | None
    num_nodes: int
    rows: torch.Tensor
    ext_ids: torch.Tensor
    own_pos: torch.Tensor
    recv_pos: torch.Tensor
    recv_counts: list[int]
    send_idx: torch.Tensor
    send_counts: list[int]
    _transpose: ShardedGraph | None

    def __init__(self, **kw):
        self.__dict__.update(kw)

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_edges(
        cls,
        src,
        dst,
        weight=None,
        relation=None,
        *,
        num_nodes: int,
        partition: RowPartition | None = None,
        num_relations: int | None = None,
        relation_weight=None,
        dtype=torch.float32,
        group=None,
    ) -> ShardedGraph:
        """Collective: build the sharded graph from the edges each rank happens to hold.

        Every rank passes its own edge shard (any rows, any order, possibly empty): edge e goes
        row ``src[e]`` -> column ``dst[e]`` (global ids < ``num_nodes``). Edges travel to the
        owner of their row with one all-to-all; no rank ever holds more than its rows' edges
        plus its own input shard. Duplicate (row, column, relation) edges are summed in the order
        of (sending rank, position in its shard), the order ``CSRGraph.from_edges`` sums them
        for the shards concatenated by rank, so the local rows equal the global graph's rows
        bit for bit.

        Args:
            src, dst, weight, relation: this rank's edges (as for ``CSRGraph.from_edges``).
            num_nodes: N, the same on every rank (the graph is N x N).
            partition: a RowPartition of N rows over the group (the same on every rank);
                default ``partition_rows(N, world_size)`` (contiguous blocks).
            num_relations: R; default 1 + the largest relation id on any rank.
            relation_weight, dtype: as for ``CSRGraph.from_edges``.
            group: process group (default: the default group).
        """
        rank, p = _comm.world(group)
        if not isinstance(num_nodes, int) or num_nodes < 0:
            raise InputError(f"num_nodes must be an int >= 0, got {num_nodes!r}")
        if partition is None:
            partition = partition_rows(num_nodes, p)
        if not isinstance(partition, RowPartition):
            raise InputTypeError(f"partition must be a RowPartition, got {type(partition).__name__}")
        if partition.world_size != p or partition.num_rows != num_nodes:
            raise InputError(
                f"partition covers {partition.num_rows} rows over "
                f"{partition.world_size} ranks, but num_nodes = {num_nodes} and the "
                f"group has {p} ranks"
            )
        src, dst = _ids("src", src), _ids("dst", dst)
        E = src.numel()
        if dst.numel() != E:
            raise InputError(f"src and dst must have the same length, got {E} and {dst.numel()}")
        for name, t in (("src", src), ("dst", dst)):
            if E and (int(t.min()) < 0 or int(t.max()) >= num_nodes):
                raise InputError(
                    f"{name} ids must lie in [0, num_nodes = {num_nodes}), got "
                    f"[{int(t.min())}, {int(t.max())}] on rank {rank}"
                )
        if weight is None:
            weight = torch.ones(E, dtype=dtype)
        else:
            weight = torch.as_tensor(weight).to("cpu", dtype).reshape(-1)
            if weight.numel() != E:
                raise InputError(f"weight must have one entry per edge ({E}), got {weight.numel()}")
        has_rel = relation is not None
        if has_rel:
            relation = _ids("relation", relation)
            if relation.numel() != E:
                raise InputError(f"relation must have one entry per edge ({E}), got {relation.numel()}")
        local_r = int(relation.max()) + 1 if has_rel and E else 1
        with guard(_OP, "agreeing on num_nodes, the partition and the relations", group):
            _comm.check_same(
                _OP,
                group,
                num_nodes=num_nodes,
                partition=partition.fingerprint() % (1 << 62),
                has_relation=int(has_rel),
                num_relations=-1 if num_relations is None else num_relations,
            )
            if has_rel and num_relations is None:
                num_relations = int(_comm.all_gather_ints([local_r], group)[:, 0].max())

        # 1. Edges to the owners of their rows, in (source rank, shard position) order.
        dest = partition.owner[src]
        perm = torch.sort(dest, stable=True).indices
        send_counts = torch.bincount(dest, minlength=p)
        with guard(_OP, "redistributing edges to their row owners", group):
            recv_counts = _comm.exchange_counts(send_counts, group)
            sc, rc = send_counts.tolist(), recv_counts.tolist()
            e_src = _comm.all_to_all_v(src[perm], sc, rc, group)
            e_dst = _comm.all_to_all_v(dst[perm], sc, rc, group)
            e_w = _comm.all_to_all_v(weight[perm].contiguous(), sc, rc, group)
            e_rel = _comm.all_to_all_v(relation[perm], sc, rc, group) if has_rel else None

        # 2. Local numbering: rows by position in my block, columns by ascending global id.
        rows = partition.rows_of(rank)
        ext_ids = torch.unique(torch.cat([rows, e_dst]), sorted=True)
        own_pos = torch.searchsorted(ext_ids, rows)
        graph = CSRGraph.from_edges(
            partition.local_index[e_src],
            torch.searchsorted(ext_ids, e_dst),
            e_w,
            relation=e_rel,
            shape=(rows.numel(), ext_ids.numel()),
            num_relations=num_relations,
            relation_weight=relation_weight,
            dtype=dtype,
        )

        return cls(
            graph=graph,
            partition=partition,
            rank=rank,
            world_size=p,
            group=group,
            num_nodes=num_nodes,
            rows=rows,
            ext_ids=ext_ids,
            own_pos=own_pos,
            _transpose=None,
            **_plan(partition, rank, p, ext_ids, group, _OP),
        )

    def transposed(self) -> ShardedGraph:
        """Collective (once; cached): the transposed graph sharded the same way: rank r holds
        the in-edges of its rows (A^T's rows), with its own halo plan. The backward of
        :func:`~slifmr_kernels.distributed.propagate` runs the forward kernel on it, as the
        single-process op runs it on ``CSRGraph.transpose()``: the edges of a transposed row
        come in ascending source id with the merged values of the global graph, so the gradient
        is the single-process one bit for bit."""
        if self._transpose is not None:
            return self._transpose
        op = "ShardedGraph.transposed"
        g, part = self.graph, self.partition
        src = self.rows[g.row_ids().cpu()]  # global ids of every local edge
        dst = self.ext_ids[g.indices.cpu().long()]
        rel = g.relation.cpu().long() if g.relation is not None else None
        dest = part.owner[dst]
        perm = torch.sort(dest, stable=True).indices
        with guard(op, "sending in-edges to their column owners", self.group):
            send_counts = torch.bincount(dest, minlength=self.world_size)
            recv_counts = _comm.exchange_counts(send_counts, self.group)
            sc, rc = send_counts.tolist(), recv_counts.tolist()
            t_src = _comm.all_to_all_v(dst[perm], sc, rc, self.group)  # A^T row = A column
            t_dst = _comm.all_to_all_v(src[perm], sc, rc, self.group)
            t_val = _comm.all_to_all_v(g.values.cpu()[perm].contiguous(), sc, rc, self.group)
            t_rel = _comm.all_to_all_v(rel[perm], sc, rc, self.group) if rel is not None else None
        ext_ids = torch.unique(torch.cat([self.rows, t_dst]), sorted=True)
        gt = CSRGraph.from_edges(
            part.local_index[t_src],
            torch.searchsorted(ext_ids, t_dst),
            t_val,
            relation=t_rel,
            shape=(self.num_local, ext_ids.numel()),
            num_relations=g.num_relations if t_rel is not None else None,
            relation_weight=g.relation_weight,
            dtype=g.values.dtype,
        )
        gt = gt.to(g.device) if g.device.type != "cpu" else gt
        self._transpose = ShardedGraph(
            graph=gt,
            partition=part,
            rank=self.rank,
            world_size=self.world_size,
            group=self.group,
            num_nodes=self.num_nodes,
            rows=self.rows,
            ext_ids=ext_ids,
            own_pos=torch.searchsorted(ext_ids, self.rows),
            _transpose=self,
            **_plan(part, self.rank, self.world_size, ext_ids, self.group, op),
        )
        return self._transpose

    # ------------------------------------------------------------------ properties
    @property
    def num_local(self) -> int:
        """Rows held here."""
        return int(self.rows.numel())

    @property
    def num_halo(self) -> int:
        """Rows received from other ranks per exchange."""
        return int(self.recv_pos.numel())

    def __repr__(self) -> str:
        return (
            f"ShardedGraph(rank={self.rank}/{self.world_size}, rows={self.num_local}, "
            f"halo={self.num_halo}, sent={int(self.send_idx.numel())}, "
            f"nnz={self.graph.nnz}, N={self.num_nodes})"
        )

    # ------------------------------------------------------------------ helpers
    def local_rows(self, x_global: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a full (N, ...) tensor (tests, or a replicated initialisation)."""
        return x_global[self.rows.to(x_global.device)]

    def gather(self, x_local: torch.Tensor) -> torch.Tensor:
        """Collective: the full (N, ...) tensor from every rank's rows (tests, evaluation).
        Holds N rows on every rank: not for the large tables this package exists for."""
        counts = self.partition.counts.tolist()
        m = max(counts) if counts else 0
        pad = x_local.new_zeros((m,) + tuple(x_local.shape[1:]))
        pad[: x_local.shape[0]] = x_local.detach()
        out = x_local.new_empty((self.num_nodes,) + tuple(x_local.shape[1:]))
        if self.world_size == 1:
            out[self.rows] = x_local.detach()
            return out
        parts = [torch.empty_like(pad) for _ in range(self.world_size)]
        with guard("ShardedGraph.gather", "all_gather of the rows", self.group):
            dist.all_gather(parts, pad, group=self.group)
        for r in range(self.world_size):
            out[self.partition.rows_of(r).to(out.device)] = parts[r][: counts[r]]
        return out

    def report(self, d: int = 64, dtype: torch.dtype = torch.float32) -> dict:
        """Collective: halo sizes and bytes moved per :func:`propagate` of (N, d) ``dtype`` rows.

        Returns a dict with ``ranks`` (one dict per rank: rows, nnz, halo_rows received,
        sent_rows, ext_cols) and totals: ``halo_rows`` (sum over ranks), ``halo_fraction``
        (halo_rows / N), ``max_halo_rows``, ``bytes_per_forward`` (row payload all ranks send
        in one forward exchange: sum of halo rows * d * itemsize; the backward sends the same
        amount back), ``max_bytes_per_rank`` (the most one rank sends), plus d and dtype."""
        item = torch.empty(0, dtype=dtype).element_size()
        mine = [
            self.num_local,
            self.graph.nnz,
            self.num_halo,
            int(self.send_idx.numel()),
            int(self.ext_ids.numel()),
        ]
        with guard("ShardedGraph.report", "all_gather of the counts", self.group):
            g = _comm.all_gather_ints(mine, self.group)
        keys = ["rows", "nnz", "halo_rows", "sent_rows", "ext_cols"]
        ranks = [dict(zip(keys, row)) for row in g.tolist()]
        halo = int(g[:, 2].sum())
        return {
            "world_size": self.world_size,
            "num_nodes": self.num_nodes,
            "nnz": int(g[:, 1].sum()),
            "halo_rows": halo,
            "halo_fraction": halo / max(self.num_nodes, 1),
            "max_halo_rows": int(g[:, 2].max()),
            "bytes_per_forward": halo * d * item,
            "max_bytes_per_rank": int(g[:, 3].max()) * d * item,
            "d": d,
            "dtype": str(dtype).replace("torch.", ""),
            "ranks": ranks,
        }


def _plan(partition, rank, p, ext_ids, group, op) -> dict:
    """Collective: the halo plan for local columns ``ext_ids``: ask each owner for the rows
    read here, learn what the others ask of this rank."""
    halo_pos = torch.nonzero(partition.owner[ext_ids] != rank).reshape(-1)
    halo_owner = partition.owner[ext_ids[halo_pos]]
    order = torch.sort(halo_owner, stable=True).indices
    recv_pos = halo_pos[order]
    need_counts = torch.bincount(halo_owner, minlength=p)
    with guard(op, "exchanging the halo plan", group):
        ask_counts = _comm.exchange_counts(need_counts, group)
        asked = _comm.all_to_all_v(ext_ids[recv_pos], need_counts.tolist(), ask_counts.tolist(), group)
    if asked.numel() and bool((partition.owner[asked] != rank).any()):
        raise InputError(
            f"{op}: rank {rank} was asked for rows it does not own: the partitions differ across ranks"
        )
    return dict(
        recv_pos=recv_pos,
        recv_counts=need_counts.tolist(),
        send_idx=partition.local_index[asked],
        send_counts=ask_counts.tolist(),
    )
