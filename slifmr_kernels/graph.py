"""CSR graphs for propagation and top-k exclusion lists.

A :class:`CSRGraph` is the one graph container of the library: ``indptr`` (int64, n_rows + 1),
``indices`` (int32 when the column count allows, else int64), ``values`` (float, one per edge)
and, for heterogeneous graphs, ``relation`` (int32 relation id per edge). Rows are sorted by
column (then relation) and duplicate (row, column, relation) edges are summed, so two graphs
built from the same edges in any order are identical.

The transpose needed by backward passes is built once, lazily, by a stable counting sort that
carries the edge permutation (``edge_perm``) so relation ids and values stay aligned.
"""
from __future__ import annotations

import functools
from typing import Mapping, Sequence

import torch

from ._checks import check_finite, check_float, check_index, check_range, check_same_device

__all__ = ["CSRGraph", "stack_relations"]

_INT32_MAX = 2**31 - 1


def _index_dtype(n_cols: int, index_dtype) -> torch.dtype:
    if index_dtype is None:
        # int32 halves the index bytes every kernel streams; int64 only when it must.
        return torch.int32 if n_cols <= _INT32_MAX else torch.int64
    if index_dtype not in (torch.int32, torch.int64):
        raise TypeError(f"index_dtype must be torch.int32 or torch.int64, got {index_dtype}")
    if index_dtype == torch.int32 and n_cols > _INT32_MAX:
        raise ValueError(f"index_dtype int32 cannot address {n_cols} columns")
    return index_dtype


def _as_tensor(name: str, a, dtype=None) -> torch.Tensor:
    if isinstance(a, torch.Tensor):
        return a if dtype is None else a.to(dtype)
    try:
        t = torch.as_tensor(a, dtype=dtype)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"{name} must be array-like, got {type(a).__name__}: {exc}") from None
    return t


def _as_index(name: str, a) -> torch.Tensor:
    """Index arrays from Python: an empty list means an empty int64 tensor, not a float one."""
    t = _as_tensor(name, a)
    if t.numel() == 0 and not isinstance(a, torch.Tensor):
        t = t.to(torch.int64)
    return t


class CSRGraph:
    """A sparse n_rows x n_cols matrix in CSR form, optionally with a relation id per edge.

    Args:
        indptr: (n_rows + 1,) int64, non-decreasing, indptr[0] = 0, indptr[-1] = nnz.
        indices: (nnz,) int32/int64 column of each edge, in [0, n_cols).
        values: (nnz,) float32/float64 edge weights; ones when None.
        shape: (n_rows, n_cols); n_cols defaults to max(indices) + 1.
        relation: (nnz,) int relation id per edge, in [0, num_relations), or None.
        num_relations: number of relations (default max(relation) + 1, or 1).
        relation_names: optional names of the relations (length num_relations).
        relation_weight: optional (num_relations,) default per-relation weights used by
            :func:`slifmr_kernels.propagate` when the call gives none.
        validate: check all of the above (O(nnz)); constructors that build valid arrays skip it.

    The constructor does not sort or merge duplicates; use :meth:`from_edges` for raw edges.
    """

    def __init__(self, indptr, indices, values=None, shape=None, relation=None,
                 num_relations=None, relation_names=None, relation_weight=None, validate=True):
        indptr = _as_index("indptr", indptr)
        indices = _as_index("indices", indices)
        if validate:
            check_index("indptr", indptr)
            check_index("indices", indices)
        indptr = indptr.to(torch.int64)
        nnz = indices.numel()
        if values is None:
            values = torch.ones(nnz, dtype=torch.float32, device=indices.device)
        values = _as_tensor("values", values)
        if shape is None:
            n_cols = int(indices.max()) + 1 if nnz else 0
            shape = (indptr.numel() - 1, n_cols)
        if len(shape) != 2:
            raise ValueError(f"shape must be (n_rows, n_cols), got {shape}")
        self.shape = (int(shape[0]), int(shape[1]))
        self.indptr, self.indices, self.values = indptr, indices, values
        if relation is not None:
            relation = _as_tensor("relation", relation)
            if validate:
                check_index("relation", relation)
            relation = relation.to(torch.int32)
            if num_relations is None:
                num_relations = int(relation.max()) + 1 if relation.numel() else 1
        self.relation = relation
        self.num_relations = int(num_relations) if num_relations is not None else 1
        self.relation_names = tuple(relation_names) if relation_names is not None else None
        self.relation_weight = (None if relation_weight is None
                                else _as_tensor("relation_weight", relation_weight))
        self._transpose: CSRGraph | None = None
        self.edge_perm: torch.Tensor | None = None
        self._valid_at = None
        if validate:
            self.validate()

    # ------------------------------------------------------------------ basic properties
    @property
    def nnz(self) -> int:
        return self.indices.numel()

    @property
    def device(self) -> torch.device:
        return self.indptr.device

    @property
    def dtype(self) -> torch.dtype:
        return self.values.dtype

    def degrees(self) -> torch.Tensor:
        """(n_rows,) int64 number of stored edges per row."""
        return self.indptr[1:] - self.indptr[:-1]

    def row_ids(self) -> torch.Tensor:
        """(nnz,) int64 row of each edge (the COO view)."""
        return torch.repeat_interleave(
            torch.arange(self.shape[0], device=self.device), self.degrees(), output_size=self.nnz)

    def __repr__(self) -> str:
        rel = f", num_relations={self.num_relations}" if self.relation is not None else ""
        return (f"CSRGraph(shape={self.shape}, nnz={self.nnz}, dtype={self.dtype}{rel}, "
                f"device={self.device})")

    # ------------------------------------------------------------------ validation
    def _versions(self):
        return tuple((t.data_ptr(), t._version) if t is not None else None
                     for t in (self.indptr, self.indices, self.values, self.relation))

    def ensure_valid(self) -> "CSRGraph":
        """:meth:`validate` unless nothing changed since the last successful check.

        Kernels call this before every launch: a graph built without validation, or whose
        arrays were modified in place, is checked (O(nnz)) before any index is dereferenced;
        an unchanged graph costs nothing.
        """
        if self._valid_at != self._versions():
            self.validate()
        return self

    def validate(self) -> "CSRGraph":
        """Check every invariant; raise ValueError/TypeError/IndexError naming the field."""
        n_rows, n_cols = self.shape
        if n_rows < 0 or n_cols < 0:
            raise ValueError(f"shape must be non-negative, got {self.shape}")
        check_index("indptr", self.indptr)
        check_index("indices", self.indices)
        check_float("values", self.values, ndim=1)
        check_same_device(indptr=self.indptr, indices=self.indices, values=self.values,
                          relation=self.relation, relation_weight=self.relation_weight)
        if self.indptr.numel() != n_rows + 1:
            raise ValueError(f"indptr must have n_rows + 1 = {n_rows + 1} entries, "
                             f"got {self.indptr.numel()}")
        if int(self.indptr[0]) != 0:
            raise ValueError(f"indptr[0] must be 0, got {int(self.indptr[0])}")
        if n_rows and bool((self.indptr[1:] < self.indptr[:-1]).any()):
            row = int(torch.nonzero(self.indptr[1:] < self.indptr[:-1])[0])
            raise ValueError(f"indptr must be non-decreasing; it decreases after row {row}")
        if int(self.indptr[-1]) != self.nnz:
            raise ValueError(f"indptr[-1] = {int(self.indptr[-1])} must equal the number of "
                             f"indices ({self.nnz})")
        if self.values.numel() != self.nnz:
            raise ValueError(f"values must have one entry per edge ({self.nnz}), "
                             f"got {self.values.numel()}")
        check_range("indices", self.indices, n_cols)
        check_finite("values", self.values)
        if self.relation is not None:
            if self.relation.numel() != self.nnz:
                raise ValueError(f"relation must have one entry per edge ({self.nnz}), "
                                 f"got {self.relation.numel()}")
            check_range("relation", self.relation, self.num_relations)
        if self.relation_names is not None and len(self.relation_names) != self.num_relations:
            raise ValueError(f"relation_names has {len(self.relation_names)} names for "
                             f"{self.num_relations} relations")
        if self.relation_weight is not None:
            check_float("relation_weight", self.relation_weight, ndim=1)
            if self.relation_weight.numel() != self.num_relations:
                raise ValueError(f"relation_weight must have num_relations = "
                                 f"{self.num_relations} entries, got {self.relation_weight.numel()}")
        self._valid_at = self._versions()
        return self

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_edges(cls, src, dst, weight=None, relation=None, shape=None, num_relations=None,
                   relation_names=None, relation_weight=None, index_dtype=None,
                   dtype=torch.float32) -> "CSRGraph":
        """Build from an edge list: edge e goes row ``src[e]`` -> column ``dst[e]``.

        Duplicate (row, column, relation) edges are summed; rows come out sorted by column.

        Args:
            src, dst: (E,) integer row / column ids (tensors, numpy arrays or lists).
            weight: (E,) edge weights, default 1.
            relation: (E,) relation id per edge, or None.
            shape: (n_rows, n_cols); default (max(src) + 1, max(dst) + 1).
            index_dtype: torch.int32 / torch.int64 for ``indices``; default int32 when it fits.
            dtype: float dtype of the values.
        """
        src = _as_index("src", src)
        dst = _as_index("dst", dst)
        check_index("src", src)
        check_index("dst", dst)
        src, dst = src.to(torch.int64), dst.to(torch.int64)
        if src.numel() != dst.numel():
            raise ValueError(f"src and dst must have the same length, got {src.numel()} "
                             f"and {dst.numel()}")
        device = src.device
        if shape is None:
            shape = (int(src.max()) + 1 if src.numel() else 0,
                     int(dst.max()) + 1 if dst.numel() else 0)
        n_rows, n_cols = int(shape[0]), int(shape[1])
        check_range("src", src, n_rows)
        check_range("dst", dst, n_cols)
        if weight is None:
            weight = torch.ones(src.numel(), dtype=dtype, device=device)
        else:
            weight = _as_tensor("weight", weight).to(dtype)
            if weight.numel() != src.numel():
                raise ValueError(f"weight must have one entry per edge ({src.numel()}), "
                                 f"got {weight.numel()}")
            check_finite("weight", weight)
        check_same_device(src=src, dst=dst, weight=weight)
        if relation is not None:
            relation = _as_index("relation", relation)
            check_index("relation", relation)
            relation = relation.to(torch.int64)
            if relation.numel() != src.numel():
                raise ValueError(f"relation must have one entry per edge ({src.numel()}), "
                                 f"got {relation.numel()}")
            if num_relations is None:
                num_relations = int(relation.max()) + 1 if relation.numel() else 1
            check_range("relation", relation, int(num_relations))
        # One sortable key per edge: sorting it orders rows, then columns, then relations,
        # and equal keys are exactly the duplicates to sum.
        key = src * n_cols + dst
        if relation is not None:
            key = key * int(num_relations) + relation
        uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
        values = torch.zeros(uniq.numel(), dtype=dtype, device=device).index_add_(0, inverse, weight)
        if relation is not None:
            rel = (uniq % int(num_relations)).to(torch.int32)
            cell = uniq // int(num_relations)
        else:
            rel, cell = None, uniq
        rows = cell // n_cols if n_cols else cell
        cols = cell - rows * n_cols
        counts = torch.bincount(rows, minlength=n_rows) if n_rows else rows.new_zeros(0)
        indptr = torch.zeros(n_rows + 1, dtype=torch.int64, device=device)
        torch.cumsum(counts, 0, out=indptr[1:])
        return cls(indptr, cols.to(_index_dtype(n_cols, index_dtype)), values, (n_rows, n_cols),
                   relation=rel, num_relations=num_relations, relation_names=relation_names,
                   relation_weight=relation_weight, validate=False)

    @classmethod
    def from_scipy(cls, m, index_dtype=None, dtype=torch.float32) -> "CSRGraph":
        """Build from any ``scipy.sparse`` matrix or array (duplicates summed)."""
        import scipy.sparse as sp

        if not sp.issparse(m):
            raise TypeError(f"m must be a scipy.sparse matrix, got {type(m).__name__}")
        coo = m.tocoo()
        return cls.from_edges(torch.from_numpy(coo.row.astype("int64")),
                              torch.from_numpy(coo.col.astype("int64")),
                              torch.from_numpy(coo.data).to(dtype), shape=m.shape,
                              index_dtype=index_dtype, dtype=dtype)

    @classmethod
    def from_torch_sparse(cls, t: torch.Tensor, index_dtype=None) -> "CSRGraph":
        """Build from a 2-D torch sparse tensor in COO or CSR layout (duplicates summed)."""
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise TypeError("t must be a 2-D torch sparse tensor")
        if t.layout == torch.sparse_csr:
            t = t.to_sparse_coo()
        if t.layout != torch.sparse_coo:
            raise TypeError(f"t must be a sparse COO or CSR tensor, got layout {t.layout}")
        t = t.coalesce()
        idx = t.indices()
        return cls.from_edges(idx[0], idx[1], t.values(), shape=tuple(t.shape),
                              index_dtype=index_dtype, dtype=t.values().dtype)

    @classmethod
    def from_edge_index(cls, edge_index, edge_weight=None, num_nodes=None, index_dtype=None,
                        dtype=torch.float32) -> "CSRGraph":
        """Build from a PyG-style ``edge_index`` (2, E) with messages flowing source -> target.

        Row = target (``edge_index[1]``), column = source (``edge_index[0]``), so that
        ``propagate`` aggregates at the target as PyG's message passing does.
        """
        edge_index = _as_tensor("edge_index", edge_index)
        check_index("edge_index", edge_index, ndim=2)
        if edge_index.shape[0] != 2:
            raise ValueError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
        if num_nodes is None:
            num_nodes = int(edge_index.max()) + 1 if edge_index.numel() else 0
        return cls.from_edges(edge_index[1], edge_index[0], edge_weight,
                              shape=(num_nodes, num_nodes), index_dtype=index_dtype, dtype=dtype)

    # ------------------------------------------------------------------ conversions
    def to_scipy(self):
        """The matrix as ``scipy.sparse.csr_matrix`` (relation ids are dropped, values kept)."""
        import scipy.sparse as sp

        g = self.to("cpu")
        return sp.csr_matrix((g.values.numpy(), g.indices.numpy(), g.indptr.numpy()),
                             shape=self.shape)

    def to_torch_sparse_csr(self) -> torch.Tensor:
        """The matrix as a torch sparse CSR tensor (int64 indices, relation ids dropped)."""
        return torch.sparse_csr_tensor(self.indptr, self.indices.to(torch.int64), self.values,
                                       size=self.shape, check_invariants=False)

    def to_dense(self) -> torch.Tensor:
        """Dense (n_rows, n_cols) matrix; for tests and small graphs only."""
        out = torch.zeros(self.shape, dtype=self.values.dtype, device=self.device)
        out.index_put_((self.row_ids(), self.indices.to(torch.int64)), self.values, accumulate=True)
        return out

    def to(self, device=None, dtype=None) -> "CSRGraph":
        """Copy to ``device`` and/or cast the values to ``dtype``; the cached transpose follows."""
        def move(t):
            return None if t is None else t.to(device)
        values = self.values.to(device=device, dtype=dtype)
        g = CSRGraph(move(self.indptr), move(self.indices), values, self.shape,
                     move(self.relation), self.num_relations, self.relation_names,
                     None if self.relation_weight is None
                     else self.relation_weight.to(device=device, dtype=dtype),
                     validate=False)
        if self._transpose is self:
            g._transpose = g
        elif self._transpose is not None:
            t = self._transpose
            tg = CSRGraph(move(t.indptr), move(t.indices), t.values.to(device=device, dtype=dtype),
                          t.shape, move(t.relation), t.num_relations, t.relation_names,
                          g.relation_weight, validate=False)
            tg.edge_perm = move(t.edge_perm)
            tg._transpose, g._transpose = g, tg
            g.edge_perm = move(self.edge_perm)
        return g

    def with_values(self, values) -> "CSRGraph":
        """Same structure (and cached transpose structure), new per-edge values."""
        values = _as_tensor("values", values)
        g = CSRGraph(self.indptr, self.indices, values, self.shape, self.relation,
                     self.num_relations, self.relation_names, self.relation_weight)
        if self._transpose is self:
            # Symmetric values stay the caller's promise, as for the graph it came from.
            g._transpose = g
        elif self._transpose is not None:
            t = self._transpose
            tg = CSRGraph(t.indptr, t.indices, values[t.edge_perm], t.shape, t.relation,
                          t.num_relations, t.relation_names, self.relation_weight, validate=False)
            tg.edge_perm = t.edge_perm
            tg._transpose, g._transpose = g, tg
        return g

    # ------------------------------------------------------------------ transformations
    def transpose(self) -> "CSRGraph":
        """The transposed graph (n_cols x n_rows), built once and cached.

        ``t.edge_perm[e]`` is the edge of ``self`` that became edge ``e`` of ``t``, so
        ``t.values == self.values[t.edge_perm]``. Rows of ``t`` stay sorted by column.
        """
        if self._transpose is None:
            cols = self.indices.to(torch.int64)
            # A stable sort by column keeps the (already ascending) source rows in order:
            # exactly a counting sort, carrying the permutation.
            perm = torch.sort(cols, stable=True).indices
            n_rows, n_cols = self.shape
            counts = torch.bincount(cols, minlength=n_cols) if n_cols else cols.new_zeros(0)
            indptr = torch.zeros(n_cols + 1, dtype=torch.int64, device=self.device)
            torch.cumsum(counts, 0, out=indptr[1:])
            t_indices = self.row_ids()[perm].to(_index_dtype(n_rows, None))
            t = CSRGraph(indptr, t_indices, self.values[perm], (n_cols, n_rows),
                         None if self.relation is None else self.relation[perm],
                         self.num_relations, self.relation_names, self.relation_weight,
                         validate=False)
            t.edge_perm = perm
            t._transpose = self
            self._transpose = t
        return self._transpose

    def mark_symmetric(self) -> "CSRGraph":
        """Declare A == A^T: :meth:`transpose` then returns this graph itself, so a backward
        pass over it needs no transposed copy (16 B per edge). Returns ``self``.

        For square graphs without relation ids (a symmetrised, sym-normalised adjacency). The
        values' symmetry is the caller's promise; what is checked in O(nnz) is that every
        node's row and column hold the same number of edges. :meth:`to` and
        :meth:`with_values` keep the mark.
        """
        n_rows, n_cols = self.shape
        if n_rows != n_cols:
            raise ValueError(f"a symmetric graph must be square, got shape {self.shape}")
        if self.relation is not None:
            raise ValueError("mark_symmetric is for graphs without relation ids: a relation "
                             "graph's transpose carries its own edge order (edge_perm)")
        in_deg = torch.bincount(self.indices, minlength=n_cols)  # int32 too: no copy
        out_deg = self.degrees()
        if not torch.equal(in_deg, out_deg):
            bad = int((in_deg != out_deg).nonzero()[0, 0])
            raise ValueError(f"the graph is not symmetric: node {bad} has {int(out_deg[bad])} "
                             f"edges in its row and {int(in_deg[bad])} in its column")
        self._transpose = self
        return self

    def normalize(self, kind: str = "sym", eps: float = 0.0) -> "CSRGraph":
        """Rescale the values; returns a new graph with the same structure.

        * ``"sym"``: D_r^{-1/2} A D_c^{-1/2} with D_r / D_c the row / column sums of the values
          (the LightGCN normalisation for a symmetric adjacency).
        * ``"row"``: D_r^{-1} A (mean aggregation).
        * ``"none"``: unchanged.
        Rows or columns whose sum is zero (isolated nodes) keep zero weights, never NaN.
        """
        if kind == "none":
            return self
        if kind not in ("sym", "row"):
            raise ValueError(f"kind must be 'sym', 'row' or 'none', got {kind!r}")
        rows = self.row_ids()
        cols = self.indices.to(torch.int64)
        vals = self.values
        row_sum = torch.zeros(self.shape[0], dtype=vals.dtype, device=self.device).index_add_(
            0, rows, vals)
        if kind == "row":
            inv = torch.where(row_sum.abs() > eps, 1.0 / row_sum, torch.zeros_like(row_sum))
            return self.with_values(vals * inv[rows])
        col_sum = torch.zeros(self.shape[1], dtype=vals.dtype, device=self.device).index_add_(
            0, cols, vals)
        inv_r = torch.where(row_sum > eps, row_sum.clamp_min(1e-30).rsqrt(),
                            torch.zeros_like(row_sum))
        inv_c = torch.where(col_sum > eps, col_sum.clamp_min(1e-30).rsqrt(),
                            torch.zeros_like(col_sum))
        return self.with_values(vals * inv_r[rows] * inv_c[cols])

    def symmetrize(self) -> "CSRGraph":
        """A + A^T (duplicates summed) for a square graph without relation ids."""
        if self.shape[0] != self.shape[1]:
            raise ValueError(f"symmetrize needs a square graph, got shape {self.shape}")
        rows, cols = self.row_ids(), self.indices.to(torch.int64)
        return CSRGraph.from_edges(torch.cat([rows, cols]), torch.cat([cols, rows]),
                                   torch.cat([self.values, self.values]), shape=self.shape,
                                   index_dtype=self.indices.dtype, dtype=self.values.dtype)


def stack_relations(graphs: Mapping[str, CSRGraph], weights: Mapping[str, float] | Sequence[float]
                    | torch.Tensor | None = None) -> CSRGraph:
    """Stack named relation graphs over one node space into one CSR with relation ids.

    A part that already carries relation ids (a KG with R relations) keeps them, offset so that
    every relation of the stack has its own id; its relations are named ``"name:r"``.

    Args:
        graphs: ordered mapping name -> CSRGraph, all of the same shape and device.
        weights: per-part weights (mapping by name or sequence in order), or a tensor with one
            weight per stacked relation; default 1. Stored as ``relation_weight``.

    Returns:
        CSRGraph with ``relation`` (int32), ``num_relations``, ``relation_names`` and
        ``relation_weight`` (float32, one per relation).
    """
    if not graphs:
        raise ValueError("graphs must name at least one relation graph")
    items = list(graphs.items())
    shape = items[0][1].shape
    src, dst, val, rel, names, part_of = [], [], [], [], [], []
    offset = 0
    for name, g in items:
        if not isinstance(g, CSRGraph):
            raise TypeError(f"graphs[{name!r}] must be a CSRGraph, got {type(g).__name__}")
        if g.shape != shape:
            raise ValueError(f"graphs[{name!r}] has shape {g.shape}, expected {shape} like "
                             f"{items[0][0]!r}")
        src.append(g.row_ids())
        dst.append(g.indices.to(torch.int64))
        val.append(g.values)
        if g.relation is None:
            rel.append(torch.full((g.nnz,), offset, dtype=torch.int64, device=g.device))
            names.append(name)
            n_rel = 1
        else:
            rel.append(g.relation.to(torch.int64) + offset)
            n_rel = g.num_relations
            inner = g.relation_names or [str(r) for r in range(n_rel)]
            names.extend(f"{name}:{r}" for r in inner)
        part_of.extend([name] * n_rel)
        offset += n_rel
    device = items[0][1].device
    if weights is None:
        w = torch.ones(offset, dtype=torch.float32, device=device)
    elif isinstance(weights, torch.Tensor):
        w = weights.to(device=device, dtype=torch.float32)
        if w.numel() != offset:
            raise ValueError(f"weights tensor must have one entry per relation ({offset}), "
                             f"got {w.numel()}")
    else:
        if isinstance(weights, Mapping):
            unknown = set(weights) - set(graphs)
            if unknown:
                raise ValueError(f"weights names unknown graphs: {sorted(unknown)}")
            per_part = {n: float(weights.get(n, 1.0)) for n in graphs}
        else:
            weights = list(weights)
            if len(weights) != len(items):
                raise ValueError(f"weights must have one entry per graph ({len(items)}), "
                                 f"got {len(weights)}")
            per_part = {n: float(wt) for (n, _), wt in zip(items, weights)}
        w = torch.tensor([per_part[p] for p in part_of], dtype=torch.float32, device=device)
    dtype = functools.reduce(torch.promote_types, (v.dtype for v in val))
    return CSRGraph.from_edges(torch.cat(src), torch.cat(dst), torch.cat(val).to(dtype),
                               relation=torch.cat(rel), shape=shape, num_relations=offset,
                               relation_names=names, relation_weight=w.to(dtype), dtype=dtype)
