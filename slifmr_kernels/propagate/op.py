"""The propagate op: Y = sum_r w_r * A_r (X * E_r) over one CSR with per-edge relation ids.

Defined once with ``torch.library`` (``_library.define_op``: fake kernels for tracing, autograd
registered at the op) and served by whichever backend ``backends.resolve`` picks.

Backward (derivation, with v_e the edge value, r_e its relation, T = w[:, None] * E):
    Y[i]  = sum_{e=(i,j)} v_e T[r_e] * X[j]
    dX[j] = sum_{e=(i,j)} v_e T[r_e] * dY[i]          -> the forward kernel on A^T
    dT[r] = sum_{e: r_e=r} v_e X[j] * dY[i]           -> folded into the A^T pass as g
    dE = w[:, None] * dT,  dw = sum_d E * dT            (torch autograd through T = w * E)
    dv[e] = sum_d dY[i] * T[r_e] * X[j]                 -> an SDDMM over A's pattern
                                                           (only when the values need grad)
No float atomics anywhere: the backward is as deterministic as the backend's forward.
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor

from .._checks import check_choice, check_finite, check_float, check_int, check_same_device
from .._library import define_op
from ..backends import _set_last, load, resolve
from ..errors import InputError, InputTypeError
from ..graph import CSRGraph

__all__ = ["propagate", "propagate_layers", "MAX_LAYERS"]

#: propagate_layers refuses more rounds than this: past a few dozen, the layers of any graph
#: have converged (over-smoothed), and an id passed by mistake would run for hours.
MAX_LAYERS = 1024


def _propagate_kernel(
    indptr: Tensor,
    indices: Tensor,
    values: Tensor,
    relation: Tensor | None,
    table: Tensor | None,
    x: Tensor,
    t_indptr: Tensor,
    t_indices: Tensor,
    t_values: Tensor,
    t_relation: Tensor | None,
    n_rows: int,
    backend: str,
) -> Tensor:
    mod = load("propagate", backend)
    if table is None:
        return mod.spmm(indptr, indices, values, x, n_rows)
    return mod.spmm_rel(indptr, indices, values, relation, table, x, n_rows)


def _propagate_fake(
    indptr, indices, values, relation, table, x, t_indptr, t_indices, t_values, t_relation, n_rows, backend
):
    return x.new_empty(n_rows, x.shape[1])


#: Where the backend of a propagate call has no SDDMM kernel (the edge-value gradient: a CUDA
#: extension built before ``propagate_sddmm`` existed), these run it instead on the same
#: tensors, first available wins; ``last_backend("propagate_sddmm")`` says which ran.
_SDDMM_FALLBACK = {"cuda": ("triton", "torch")}


def _sddmm_backend(backend: str) -> str:
    if hasattr(load("propagate", backend), "sddmm"):
        return backend
    for name in _SDDMM_FALLBACK.get(backend, ("torch",)):
        try:
            if hasattr(load("propagate", name), "sddmm"):
                return name
        except Exception:  # noqa: BLE001 - unavailable: try the next one
            continue
    return "torch"


def _propagate_sddmm_kernel(
    indptr: Tensor,
    indices: Tensor,
    relation: Tensor | None,
    table: Tensor | None,
    dy: Tensor,
    x: Tensor,
    n_rows: int,
    backend: str,
) -> Tensor:
    return load("propagate", backend).sddmm(indptr, indices, relation, table, dy, x, n_rows)


def _propagate_sddmm_fake(indptr, indices, relation, table, dy, x, n_rows, backend):
    return x.new_empty(indices.shape[0])


_propagate_sddmm_op = define_op("propagate_sddmm", _propagate_sddmm_kernel, _propagate_sddmm_fake)


def _propagate_backward_kernel(
    t_indptr: Tensor,
    t_indices: Tensor,
    t_values: Tensor,
    t_relation: Tensor | None,
    table: Tensor | None,
    dy: Tensor,
    x: Tensor,
    num_relations: int,
    need_dx: bool,
    need_g: bool,
    backend: str,
) -> tuple[Tensor, Tensor]:
    mod = load("propagate", backend)
    n_cols = t_indptr.numel() - 1
    if table is None:
        dx = mod.spmm(t_indptr, t_indices, t_values, dy, n_cols) if need_dx else None
        g = None
    elif not need_g:
        # dx alone is the forward kernel on A^T. x is not kept for this case (an empty
        # placeholder arrives), and some backends size dx by x (the cuda binding by its shape).
        dx = mod.spmm_rel(t_indptr, t_indices, t_values, t_relation, table, dy, n_cols)
        g = None
    else:
        dx, g = mod.spmm_rel_backward(
            t_indptr, t_indices, t_values, t_relation, table, dy, x, num_relations, need_dx, need_g
        )
    empty = dy.new_empty(0)
    return (dx if dx is not None else empty), (g if g is not None else empty.clone())


def _propagate_backward_fake(
    t_indptr, t_indices, t_values, t_relation, table, dy, x, num_relations, need_dx, need_g, backend
):
    d = dy.shape[1]
    dx = dy.new_empty(t_indptr.shape[0] - 1, d) if need_dx else dy.new_empty(0)
    g = dy.new_empty(num_relations, d) if (need_g and table is not None) else dy.new_empty(0)
    return dx, g


_propagate_backward_op = define_op("propagate_backward", _propagate_backward_kernel, _propagate_backward_fake)


def _setup_context(ctx, inputs, output):
    (
        indptr,
        indices,
        values,
        relation,
        table,
        x,
        t_indptr,
        t_indices,
        t_values,
        t_relation,
        n_rows,
        backend,
    ) = inputs
    ctx.backend = backend
    ctx.has_table = table is not None
    ctx.n_rows = n_rows
    # x is needed only for the table and edge-value gradients; the plain SpMM backward keeps no
    # activations, so stacked layers hold nothing but the graph between forward and backward.
    need_v = values.requires_grad
    keep_x = (table is not None and table.requires_grad) or need_v
    ctx.keep_x = keep_x
    ctx.num_relations = 0 if table is None else table.shape[0]
    ctx.save_for_backward(
        t_indptr,
        t_indices,
        t_values,
        t_relation,
        table,
        x if keep_x else None,
        indptr if need_v else None,
        indices if need_v else None,
        relation if need_v else None,
    )


def _backward(ctx, dy):
    (t_indptr, t_indices, t_values, t_relation, table, x, indptr, indices, relation) = ctx.saved_tensors
    if dy.layout != torch.strided:  # a sparse gradient (a row gather with sparse=True) only
        dy = dy.to_dense()
    dy = dy.contiguous()
    need_v = ctx.needs_input_grad[2]
    need_dx = ctx.needs_input_grad[5]
    need_g = ctx.has_table and ctx.needs_input_grad[4]
    dv = dx = g = None
    if need_v:
        name = _sddmm_backend(ctx.backend)
        _set_last("propagate_sddmm", name)
        dv = _propagate_sddmm_op(indptr, indices, relation, table, dy, x, ctx.n_rows, name)
    if need_dx or need_g:
        if t_indptr.numel() == 0:
            raise RuntimeError(
                "propagate: the transposed graph was not passed to the op "
                "although a gradient is needed; call slifmr_kernels.propagate, "
                "not the raw op"
            )
        dx, g = _propagate_backward_op(
            t_indptr,
            t_indices,
            t_values,
            t_relation,
            table,
            dy,
            x if (x is not None and need_g) else dy.new_empty(0, 0),
            ctx.num_relations,
            need_dx,
            need_g,
            ctx.backend,
        )
    return (
        None,
        None,
        dv,
        None,
        g if need_g else None,
        dx if need_dx else None,
        None,
        None,
        None,
        None,
        None,
        None,
    )


_propagate_op = define_op("propagate", _propagate_kernel, _propagate_fake, _backward, _setup_context)


def _folded_values(g: CSRGraph, w: Tensor, dtype: torch.dtype, transposed: bool = False) -> Tensor:
    """values[e] * w[relation[e]] (of ``g``, or aligned with its transpose), cached on the graph
    until w or the values change: an nnz-long gather-multiply per call would cost up to a
    quarter of the kernel time."""
    if torch.compiler.is_compiling():
        folded = g.values.to(dtype) * w.detach().to(dtype)[g.relation.long()]
        return folded[g.transpose().edge_perm] if transposed else folded
    cache = getattr(g, "_folded", None)
    # Identity (a weak reference, so a new tensor at a recycled address never matches) plus the
    # in-place version counters decide whether the cached product still holds.
    if (
        cache is None
        or cache["w"]() is not w
        or cache["w_version"] != w._version
        or cache["v"] is not g.values
        or cache["v_version"] != g.values._version
        or cache["dtype"] != dtype
    ):
        folded = g.values.to(dtype) * w.detach().to(dtype)[g.relation.long()]
        g._folded = cache = {  # type: ignore[attr-defined]  # a cache carried by the graph
            "w": weakref.ref(w),
            "w_version": w._version,
            "v": g.values,
            "v_version": g.values._version,
            "dtype": dtype,
            "values": folded,
        }
    if transposed and "t_values" not in cache:
        cache["t_values"] = cache["values"][g.transpose().edge_perm]
    return cache["t_values" if transposed else "values"]


def _check_args(g, x, relation_emb, relation_weight, backend):
    """Every check of propagate's arguments, before any kernel: (backend name, relation
    weights in use, num_relations, n_rows)."""
    if not isinstance(g, CSRGraph):
        raise InputTypeError(f"g must be a CSRGraph, got {type(g).__name__}")
    if not torch.compiler.is_compiling():
        # Traced code keeps the graph as a constant checked when built; eager calls recheck it
        # whenever its arrays changed since the last check.
        g.ensure_valid()
    check_float("x", x, ndim=2)
    n_rows, n_cols = g.shape
    if x.shape[0] != n_cols:
        raise InputError(f"x must have g.shape[1] = {n_cols} rows, got {x.shape[0]}")
    w = g.relation_weight if relation_weight is None else relation_weight
    check_same_device(graph=g.indptr, x=x, relation_emb=relation_emb, relation_weight=w)
    R = g.num_relations
    if relation_emb is not None:
        if g.relation is None:
            raise InputError("relation_emb needs a graph with relation ids (g.relation is None)")
        check_float("relation_emb", relation_emb, ndim=2)
        if tuple(relation_emb.shape) != (R, x.shape[1]):
            raise InputError(
                f"relation_emb must have shape (num_relations, d) = "
                f"({R}, {x.shape[1]}), got {tuple(relation_emb.shape)}"
            )
        check_finite("relation_emb", relation_emb.detach())
    if w is not None:
        check_float("relation_weight", w, ndim=1)
        if g.relation is None and relation_weight is not None:
            raise InputError("relation_weight needs a graph with relation ids (g.relation is None)")
        if g.relation is not None and w.numel() != R:
            raise InputError(f"relation_weight must have num_relations = {R} entries, got {w.numel()}")
        if relation_weight is not None:
            check_finite("relation_weight", w.detach())
    return resolve("propagate", backend, x.device), w, R, n_rows


def propagate(
    g: CSRGraph,
    x: Tensor,
    relation_emb: Tensor | None = None,
    relation_weight: Tensor | None = None,
    backend: str = "auto",
) -> Tensor:
    """Fused heterogeneous propagation ``Y = sum_r w_r * A_r (X * E_r)`` in one CSR pass.

    Args:
        g: CSRGraph of shape (n_rows, n_cols); with ``g.relation`` its edges carry relation ids
            (e.g. from :func:`stack_relations`).
        x: (n_cols, d) float32/float64 node features (any strides); differentiable. Not
            checked for NaN / inf (a pass over x per layer): they reach the rows that read
            them, as in ``torch.sparse.mm``.
        relation_emb: optional (num_relations, d) finite relation embeddings E (needs
            ``g.relation``); differentiable.
        relation_weight: optional (num_relations,) finite relation weights w; differentiable.
            Defaults to ``g.relation_weight`` (may be None: all ones).
        backend: "auto", "torch", "numba", "triton" or "cuda" (see ``backends``).

    Returns:
        (n_rows, d) tensor of x's dtype. Deterministic on every backend (no float atomics).
        Differentiable in the edge values too: when ``g.values`` requires grad (a graph
        built by ``CSRGraph.from_edges(src, dst, weight)`` from a ``weight`` that requires
        grad, by ``normalize``, graph arithmetic or ``with_values``), backward computes
        ``dvalues[e] = sum_d dY[row_e, d] * T[r_e, d] * X[col_e, d]`` (``T = w * E``, ones
        without relation embeddings) with an SDDMM kernel over the graph's pattern (every
        backend has one: deterministic, no atomics) and autograd carries it back through the
        graph's construction. A CUDA extension built before that kernel existed falls back to
        the triton kernel (else the torch reference) on the same CUDA tensors;
        ``last_backend("propagate_sddmm")`` names the backend that ran. x is then kept for the
        backward (as for relation embeddings).

    Raises:
        InputError (or its TypeError / IndexError variants, GraphError for a graph whose
        arrays are invalid) naming the argument; BackendUnavailable for a named backend that
        cannot run here.

    >>> import torch, slifmr_kernels as sk
    >>> g = sk.CSRGraph.from_edges([0, 0, 1], [0, 1, 1], [1.0, 2.0, 3.0], shape=(2, 2))
    >>> sk.propagate(g, torch.tensor([[1.0], [10.0]]), backend="torch")
    tensor([[21.],
            [30.]])
    """
    name, w, R, n_rows = _check_args(g, x, relation_emb, relation_weight, backend)
    x = x.contiguous()
    values = g.values.to(x.dtype)
    values_grad = values.requires_grad and torch.is_grad_enabled()
    relation, table, folded = None, None, False
    if g.relation is not None:
        if relation_emb is not None or (w is not None and w.requires_grad):
            # Relation table T = w[:, None] * E: the kernel multiplies it in per edge, and
            # autograd carries dT back to w and E.
            e = relation_emb if relation_emb is not None else x.new_ones(1, x.shape[1])
            table = (e if w is None else w.to(x.dtype)[:, None] * e).expand(R, x.shape[1])
            table = table.to(x.dtype).contiguous()
            relation = g.relation
        elif w is not None and values_grad:
            # Folded as below, but through autograd (and not cached: the values change).
            values = values * w.detach().to(x.dtype)[g.relation.long()]
        elif w is not None:
            # Constant relation weights fold into the edge values: plain SpMM.
            values, folded = _folded_values(g, w, x.dtype), True
    needs_grad = torch.is_grad_enabled() and (x.requires_grad or (table is not None and table.requires_grad))
    if needs_grad:
        t = g.transpose()
        t_indptr, t_indices = t.indptr, t.indices
        if values_grad:
            # The backward reads the transposed values as numbers only.
            t_values = values.detach()[t.edge_perm] if t is not g else values.detach()
        else:
            t_values = _folded_values(g, w, x.dtype, transposed=True) if folded else t.values.to(x.dtype)
        t_relation = t.relation if table is not None else None
    else:
        t_indptr = t_indices = torch.empty(0, dtype=torch.int64, device=x.device)
        t_values, t_relation = x.new_empty(0), None
    return _propagate_op(
        g.indptr,
        g.indices,
        values,
        relation,
        table,
        x,
        t_indptr,
        t_indices,
        t_values,
        t_relation,
        n_rows,
        name,
    )


def propagate_layers(
    g: CSRGraph,
    x: Tensor,
    num_layers: int,
    relation_emb: Tensor | None = None,
    relation_weight: Tensor | None = None,
    combine: str = "mean",
    backend: str = "auto",
) -> Tensor:
    """``num_layers`` rounds of :func:`propagate`, combined LightGCN-style.

    Args:
        g: square CSRGraph (n, n) (typically symmetric-normalised).
        x: (n, d) layer-0 embeddings.
        num_layers: 0 <= L <= 1024 (``MAX_LAYERS``).
        combine: "mean" (LightGCN: mean of x, Ax, ..., A^L x), "sum", or "last" (A^L x).

    Returns:
        (n, d). Only what autograd needs is kept between forward and backward: the plain
        SpMM backward stores no activations, so memory does not grow with L beyond the output.
    """
    if not isinstance(g, CSRGraph):
        raise InputTypeError(f"g must be a CSRGraph, got {type(g).__name__}")
    check_choice("combine", combine, ("mean", "sum", "last"))
    num_layers = check_int("num_layers", num_layers, 0, MAX_LAYERS)
    if g.shape[0] != g.shape[1]:
        raise InputError(f"propagate_layers needs a square graph, got shape {g.shape}")
    # Checked here too, so that num_layers = 0 refuses what L >= 1 would.
    _check_args(g, x, relation_emb, relation_weight, backend)
    if combine == "last" or num_layers == 0:
        h = x
        for _ in range(num_layers):
            h = propagate(g, h, relation_emb, relation_weight, backend=backend)
        if combine == "last":
            return h
        return x / 1 if combine == "mean" else x + 0  # a new tensor, as for L > 0
    # The sum is accumulated in place in a buffer that no autograd node saves (propagate saves
    # its input x, never acc; add_ and div_ by a constant keep nothing), so at most three
    # (n, d) tensors are alive at once (acc, the previous layer, the new one) instead of five
    # with ``acc = acc + h``: at n = 3M rows and d = 64 that is 1.5 GiB less at the peak.
    h = propagate(g, x, relation_emb, relation_weight, backend=backend)
    acc = x + h
    for _ in range(num_layers - 1):
        h = propagate(g, h, relation_emb, relation_weight, backend=backend)
        acc.add_(h)
    del h
    return acc.div_(num_layers + 1) if combine == "mean" else acc
