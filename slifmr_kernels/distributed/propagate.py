"""Sharded propagate: halo exchange (all-to-all of exactly the rows each rank reads), then the
local fused kernel (:func:`slifmr_kernels.propagate`) on the local CSRGraph.

Forward: bit-identical to ``slifmr_kernels.propagate`` on the global graph (same backend): each
local row lists its edges in the global order and reads the same x rows.

Backward (the gradient of x): the single-process op runs the forward kernel on the transposed
graph, ``dX = A^T dY``. Here too: :meth:`ShardedGraph.transposed` holds, on the owner of each
row j, the in-edges of j (A^T's row j, sources in ascending id, the merged values); a halo
exchange on that plan brings the dY rows it reads, and the local kernel computes dX's rows.
Each gradient row is the same running sum in the same order as in the single process: bit
identical (tests/test_distributed_ops.py), and so deterministic run to run. The relation
parameters' gradients are this rank's contributions (see :func:`propagate`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import propagate as _local_propagate
from .._checks import check_choice, check_float, check_int
from ..errors import InputError, InputTypeError
from . import _comm
from ._comm import guard
from .sharded_graph import ShardedGraph

__all__ = ["propagate", "propagate_layers", "halo_exchange"]


def _gather_halo(sg: ShardedGraph, x: Tensor) -> Tensor:
    """(n_local, d) -> (n_ext, d): own rows and the halo rows received from their owners."""
    d = x.shape[1]
    if sg.world_size == 1:
        return _own_only(sg, x)
    send = x.index_select(0, sg.send_idx.to(x.device))
    with guard("distributed.propagate", "forward halo exchange", sg.group):
        recv = _comm.all_to_all_v(send, sg.send_counts, sg.recv_counts, sg.group)
    out = x.new_empty(sg.ext_ids.numel(), d)
    out[sg.own_pos.to(x.device)] = x
    out[sg.recv_pos.to(x.device)] = recv
    return out


def _own_only(sg: ShardedGraph, x: Tensor) -> Tensor:
    if sg.ext_ids.numel() == x.shape[0]:  # one rank: every column is an own row
        return x.view_as(x)
    out = x.new_zeros(sg.ext_ids.numel(), x.shape[1])
    out[sg.own_pos.to(x.device)] = x
    return out


def _scatter_halo_grad(sg: ShardedGraph, g_ext: Tensor) -> Tensor:
    """(n_ext, d) partial gradients -> (n_local, d): each row's partials summed in rank order
    (the backward of :func:`halo_exchange`)."""
    g_ext = g_ext.contiguous()
    own = g_ext.index_select(0, sg.own_pos.to(g_ext.device))
    if sg.world_size == 1:
        return own
    send = g_ext.index_select(0, sg.recv_pos.to(g_ext.device))
    with guard("distributed.halo_exchange", "backward (gradients to row owners)", sg.group):
        recv = _comm.all_to_all_v(send, sg.recv_counts, sg.send_counts, sg.group)
    out = torch.zeros_like(own)
    idx = sg.send_idx.to(g_ext.device)
    start = 0
    for r in range(sg.world_size):
        if r == sg.rank:
            out.add_(own)
            continue
        n = sg.send_counts[r]
        if n:
            out.index_add_(0, idx[start : start + n], recv[start : start + n])
        start += n
    return out


class _HaloExchange(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, sg):
        ctx.sg = sg
        return _gather_halo(sg, x)

    @staticmethod
    def backward(ctx, g):
        return _scatter_halo_grad(ctx.sg, g), None


class _XGrad(torch.autograd.Function):
    """Identity on y; its backward adds x's gradient ``A^T dY`` computed on the transposed
    sharded graph, with the arithmetic of the single-process backward."""

    @staticmethod
    def forward(ctx, y, x_local, sg, rel_emb, rel_weight, backend):
        ctx.sg, ctx.rel_emb, ctx.rel_weight, ctx.backend = sg, rel_emb, rel_weight, backend
        return y.view_as(y)

    @staticmethod
    def backward(ctx, gy):
        dx = None
        if ctx.needs_input_grad[1]:
            if gy.layout != torch.strided:
                gy = gy.to_dense()
            t = ctx.sg.transposed()
            with torch.no_grad():
                dy_ext = _gather_halo(t, gy.contiguous())
                dx = _local_propagate(t.graph, dy_ext, ctx.rel_emb, ctx.rel_weight, backend=ctx.backend)
        return gy, dx, None, None, None, None


def _check(sg, x_local):
    if not isinstance(sg, ShardedGraph):
        raise InputTypeError(f"sharded_graph must be a ShardedGraph, got {type(sg).__name__}")
    check_float("x_local", x_local, ndim=2)
    if x_local.shape[0] != sg.num_local:
        raise InputError(
            f"x_local must have this rank's {sg.num_local} rows (sharded_graph.rows), got {x_local.shape[0]}"
        )


def halo_exchange(sharded_graph: ShardedGraph, x_local: Tensor) -> Tensor:
    """Collective, differentiable: (n_local, d) -> (n_ext, d), the rows the local graph's
    columns name (own rows and halo), in ``sharded_graph.ext_ids`` order."""
    _check(sharded_graph, x_local)
    return _HaloExchange.apply(x_local, sharded_graph)


def propagate(
    sharded_graph: ShardedGraph,
    x_local: Tensor,
    relation_emb: Tensor | None = None,
    relation_weight: Tensor | None = None,
    backend: str = "auto",
) -> Tensor:
    """Collective: this rank's rows of ``Y = sum_r w_r A_r (X * E_r)`` (see
    :func:`slifmr_kernels.propagate`), with autograd.

    Args:
        sharded_graph: this rank's ShardedGraph.
        x_local: (n_local, d) rows of X this rank owns (``sharded_graph.rows``), float32/64; d
            and dtype must be the same on every rank (not compared per call, which would cost
            a collective per layer: a mismatch fails inside the exchange, at worst after the
            process group's timeout).
        relation_emb, relation_weight: replicated relation parameters, as for the local op.
            Their gradient here is this rank's contribution only: sum it over ranks (as
            DistributedDataParallel does for replicated parameters).
        backend: the local kernel's backend.

    Returns:
        (n_local, d): this rank's rows of Y. Forward and x's gradient bit-identical to the
        single-process op's rows (same backend).

    Raises:
        InputError for bad arguments; DistributedError when a peer died or timed out.
    """
    _check(sharded_graph, x_local)
    g = sharded_graph.graph
    x_ext = _gather_halo(sharded_graph, x_local.detach())
    # Autograd through the local op reaches only the relation parameters (x_ext is detached);
    # x's gradient comes from _XGrad on the transposed graph.
    y = _local_propagate(g, x_ext, relation_emb, relation_weight, backend=backend)
    if not (torch.is_grad_enabled() and x_local.requires_grad):
        return y
    # The backward's relation arguments: the same arithmetic as the single-process backward,
    # which multiplies a relation table into every edge when the forward used one (relation
    # embeddings, or relation weights that need a gradient) and folds constant weights into
    # the edge values otherwise.
    w = g.relation_weight if relation_weight is None else relation_weight
    emb_b, w_b = None, relation_weight
    if g.relation is not None and (relation_emb is not None or (w is not None and w.requires_grad)):
        emb_b = (
            relation_emb.detach()
            if relation_emb is not None
            else x_local.new_ones(g.num_relations, x_local.shape[1])
        )
        w_b = None if w is None else w.detach()
    elif relation_weight is not None:
        w_b = relation_weight.detach()
    return _XGrad.apply(y, x_local, sharded_graph, emb_b, w_b, backend)


def propagate_layers(
    sharded_graph: ShardedGraph,
    x_local: Tensor,
    num_layers: int,
    relation_emb: Tensor | None = None,
    relation_weight: Tensor | None = None,
    combine: str = "mean",
    backend: str = "auto",
) -> Tensor:
    """Collective: ``num_layers`` rounds of :func:`propagate`, combined as
    :func:`slifmr_kernels.propagate_layers` does ("mean", "sum" or "last"), with the same
    arithmetic in the same order (forward bit-identical to it)."""
    check_choice("combine", combine, ("mean", "sum", "last"))
    num_layers = check_int("num_layers", num_layers, 0, 1024)
    _check(sharded_graph, x_local)
    if combine == "last" or num_layers == 0:
        h = x_local
        for _ in range(num_layers):
            h = propagate(sharded_graph, h, relation_emb, relation_weight, backend)
        if combine == "last":
            return h
        return x_local / 1 if combine == "mean" else x_local + 0
    h = propagate(sharded_graph, x_local, relation_emb, relation_weight, backend)
    acc = x_local + h
    for _ in range(num_layers - 1):
        h = propagate(sharded_graph, h, relation_emb, relation_weight, backend)
        acc = acc + h
    return acc / (num_layers + 1) if combine == "mean" else acc
