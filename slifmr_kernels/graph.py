"""CSR graphs for propagation and top-k exclusion lists.

A :class:`CSRGraph` is the one graph container of the library: ``indptr`` (int64, n_rows + 1),
``indices`` (int32 when the column count allows, else int64), ``values`` (float, one per edge)
and, for heterogeneous graphs, ``relation`` (int32 relation id per edge). Rows are sorted by
column (then relation) and duplicate (row, column, relation) edges are summed, so two graphs
built from the same edges in any order are identical.

Every constructor checks its input before anything reads it as CSR (O(nnz), one pass of torch
reductions) and raises :class:`~slifmr_kernels.errors.GraphError` (a ``ValueError``; its
``GraphTypeError`` / ``GraphIndexError`` variants are also ``TypeError`` / ``IndexError``)
naming the argument. A graph remembers the version counters of its arrays when it was last
checked; every op calls :meth:`CSRGraph.ensure_valid`, which costs nothing for an unchanged
graph and re-checks one whose arrays were replaced or modified in place.

The transpose needed by backward passes is built once, lazily, by a stable counting sort that
carries the edge permutation (``edge_perm``) so relation ids and values stay aligned.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Mapping, Sequence

import torch

from ._checks import (
    GRAPH,
    alloc_error,
    check_choice,
    check_finite,
    check_float,
    check_index,
    check_int,
    check_range,
    check_same_device,
    check_shape,
    check_tensor,
    is_alloc_failure,
)
from .errors import GraphError, GraphIndexError, GraphTypeError, InputError, InputTypeError

__all__ = ["CSRGraph", "stack_relations"]

_INT32_MAX = 2**31 - 1
_INT64_MAX = 2**63 - 1

#: A shape is inferred from the ids only while it stays O(input): the largest id may be at most
#: max(_INFER_MIN, _INFER_FACTOR * number of edges). Beyond that (``from_edges([0, 2**40],
#: [0, 1])``) the caller must pass ``shape=``: the indptr alone would need 8 bytes per row.
_INFER_MIN = 1 << 22
_INFER_FACTOR = 64

_ID_DTYPES = (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8)


def _index_dtype(n_cols: int, index_dtype) -> torch.dtype:
    if index_dtype is None:
        # int32 halves the index bytes every kernel streams; int64 only when it must.
        return torch.int32 if n_cols <= _INT32_MAX else torch.int64
    if index_dtype not in (torch.int32, torch.int64):
        raise GraphTypeError(f"index_dtype must be torch.int32 or torch.int64, got {index_dtype}")
    if index_dtype == torch.int32 and n_cols > _INT32_MAX:
        raise GraphError(f"index_dtype int32 cannot address {n_cols} columns")
    return index_dtype


def _value_dtype(name: str, dtype) -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise GraphTypeError(f"{name} must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def _as_tensor(name: str, a, dtype=None) -> torch.Tensor:
    """A tensor from a tensor, NumPy array or (nested) list; a GraphTypeError otherwise."""
    if isinstance(a, torch.Tensor):
        return a if dtype is None else a.to(dtype)
    if a is None or isinstance(a, (str, bytes, dict, set)):
        raise GraphTypeError(f"{name} must be array-like, got {type(a).__name__}")
    try:
        t = torch.as_tensor(a, dtype=dtype)
    except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
        raise GraphTypeError(
            f"{name} must be array-like of numbers, got {type(a).__name__}: {str(exc).splitlines()[0][:200]}"
        ) from None
    return t


def _as_index(name: str, a) -> torch.Tensor:
    """Index arrays from Python: an empty list means an empty int64 tensor, not a float one."""
    t = _as_tensor(name, a)
    if t.numel() == 0 and not isinstance(a, torch.Tensor) and t.dtype.is_floating_point:
        t = t.to(torch.int64)
    return t


def _as_ids(name: str, a, ndim: int = 1) -> torch.Tensor:
    """Ids of an edge list as int64: any integer dtype (not bool, not float)."""
    t = _as_index(name, a)
    check_tensor(name, t, ndim=ndim, kind=GRAPH)
    if t.dtype not in _ID_DTYPES and t.dtype not in (torch.uint16, torch.uint32, torch.uint64):
        raise GraphTypeError(f"{name} must hold integer ids, got dtype {str(t.dtype).replace('torch.', '')}")
    if t.dtype == torch.uint64:
        # Ids >= 2**63 would wrap to negative ids: the range check then names them.
        return t.view(torch.int64) if t.is_contiguous() else t.contiguous().view(torch.int64)
    return t.to(torch.int64)


def _as_weights(name: str, a, n: int, dtype: torch.dtype, device) -> torch.Tensor:
    """(n,) edge weights of ``dtype`` from any real array (bool and integers allowed)."""
    w = _as_tensor(name, a)
    check_tensor(name, w, ndim=1, kind=GRAPH)
    if w.is_complex() or w.dtype in (torch.uint16, torch.uint32, torch.uint64):
        raise GraphTypeError(f"{name} must be real numbers, got dtype {str(w.dtype).replace('torch.', '')}")
    if w.numel() != n:
        raise GraphError(f"{name} must have one entry per edge ({n}), got {w.numel()}")
    check_same_device(GRAPH, **{name: w, "edges": torch.empty(0, device=device)})
    w = w.to(dtype)
    check_finite(name, w, kind=GRAPH)
    return w


def _infer_dim(name: str, ids: torch.Tensor, n_edges: int, what: str) -> int:
    """max(ids) + 1 when that is O(input); negative ids are named here already."""
    if ids.numel() == 0:
        return 0
    lo, hi = (int(v) for v in torch.aminmax(ids))
    if lo < 0:
        raise GraphIndexError(f"{name} has a negative entry {lo}")
    limit = max(_INFER_MIN, _INFER_FACTOR * n_edges)
    if hi >= limit:
        raise GraphError(
            f"{name} has id {hi}: inferring {what} = {hi + 1} from {n_edges} "
            f"edge(s) would allocate O({what}) memory; pass shape=(n_rows, n_cols) "
            f"explicitly (ids are inferred only up to max(2**22, 64 * edges))"
        )
    return hi + 1


@contextlib.contextmanager
def _alloc_guard(what: str):
    """Turn the allocator's failure for a caller-sized buffer (an explicit shape) into a
    GraphError that names it."""
    try:
        yield
    except (RuntimeError, MemoryError) as exc:
        if isinstance(exc, InputError) or not is_alloc_failure(exc):
            raise
        raise alloc_error(what, exc, GRAPH) from None


def _indptr_from_rows(rows: torch.Tensor, n_rows: int, device) -> torch.Tensor:
    """indptr of sorted (or any) row ids: a counting pass, O(n_rows + nnz)."""
    with _alloc_guard(f"shape[0] = {n_rows} rows need an indptr of {n_rows + 1} int64 entries"):
        counts = torch.bincount(rows, minlength=n_rows) if n_rows else rows.new_zeros(0)
        indptr = torch.zeros(n_rows + 1, dtype=torch.int64, device=device)
    torch.cumsum(counts, 0, out=indptr[1:])
    return indptr


def _merge_edges(src, dst, rel, weight, n_rows: int, n_cols: int, n_rel: int):
    """Sort edges by (row, column, relation) and sum duplicates: (rows, cols, rel, values).

    One int64 key per edge while n_rows * n_cols * n_rel fits in 63 bits (one sort); past that
    (``shape=(2**10, 2**62)``) a key would overflow, so the edges are ordered by stable sorts,
    least significant field first, and duplicates found by comparing neighbours."""
    device, dtype = src.device, weight.dtype
    if n_rows * n_cols * max(n_rel, 1) <= _INT64_MAX:
        key = src * n_cols + dst
        if rel is not None:
            key = key * n_rel + rel
        if key.numel() < 2 or bool((key[1:] > key[:-1]).all()):
            # Already in CSR order without duplicates (an edge list from a CSR graph, pruned
            # by a mask): one O(E) comparison instead of a sort. Copies, so that the graph
            # never aliases the caller's arrays (the weights' autograd history is kept).
            return src, dst.clone(), rel, weight.clone()
        uniq, inverse = torch.unique(key, sorted=True, return_inverse=True)
        values = torch.zeros(uniq.numel(), dtype=dtype, device=device).index_add_(0, inverse, weight)
        if rel is not None:
            r = uniq % n_rel
            cell = uniq // n_rel
        else:
            r, cell = None, uniq
        rows = cell // n_cols if n_cols else cell
        cols = cell - rows * n_cols
        return rows, cols, r, values
    perm = torch.arange(src.numel(), device=device)
    for field in [dst, src] if rel is None else [rel, dst, src]:
        perm = perm[torch.sort(field[perm], stable=True).indices]
    s, d = src[perm], dst[perm]
    r = rel[perm] if rel is not None else None
    new = torch.ones(s.numel(), dtype=torch.bool, device=device)
    new[1:] = (s[1:] != s[:-1]) | (d[1:] != d[:-1])
    if r is not None:
        new[1:] |= r[1:] != r[:-1]
    group = torch.cumsum(new, 0) - 1
    values = torch.zeros(int(new.sum()), dtype=dtype, device=device).index_add_(0, group, weight[perm])
    return s[new], d[new], (r[new] if r is not None else None), values


def _check_relation_meta(num_relations: int, relation_names, relation_weight, device, has_relation: bool):
    """relation_names (a sequence of num_relations names) and relation_weight (a finite float
    (num_relations,) tensor); returns them normalised (a tuple, a tensor)."""
    if relation_names is not None:
        if isinstance(relation_names, (str, bytes)) or not hasattr(relation_names, "__iter__"):
            raise GraphTypeError(
                f"relation_names must be a sequence of names, got {type(relation_names).__name__}"
            )
        relation_names = tuple(relation_names)
        if len(relation_names) != num_relations:
            raise GraphError(f"relation_names has {len(relation_names)} names for {num_relations} relations")
    if relation_weight is not None:
        if not has_relation:
            raise GraphError(
                "relation_weight needs relation ids (relation is None): a graph without them would ignore it"
            )
        relation_weight = _as_tensor("relation_weight", relation_weight)
        check_float("relation_weight", relation_weight, ndim=1, kind=GRAPH)
        if relation_weight.numel() != num_relations:
            raise GraphError(
                f"relation_weight must have num_relations = {num_relations} "
                f"entries, got {relation_weight.numel()}"
            )
        check_same_device(GRAPH, relation_weight=relation_weight, graph=torch.empty(0, device=device))
        check_finite("relation_weight", relation_weight, kind=GRAPH)
    return relation_names, relation_weight


def _versions_of(t):
    if t is None:
        return None
    return (t.data_ptr(), t._version, t.dtype, t.device, tuple(t.shape), t.stride())


class CSRGraph:
    """A sparse n_rows x n_cols matrix in CSR form, optionally with a relation id per edge.

    Args:
        indptr: (n_rows + 1,) int64 (int32 accepted), non-decreasing, indptr[0] = 0,
            indptr[-1] = nnz.
        indices: (nnz,) int32/int64 column of each edge, in [0, n_cols).
        values: (nnz,) float32/float64 finite edge weights; ones when None.
        shape: (n_rows, n_cols) non-negative ints; default (len(indptr) - 1, max(indices) + 1)
            (inferred only up to max(2**22, 64 * nnz) columns: pass it for sparser ids).
        relation: (nnz,) int relation id per edge, in [0, num_relations), or None.
        num_relations: number of relations, 1 <= R < 2**31 (default max(relation) + 1, or 1).
        relation_names: optional names of the relations (exactly num_relations of them).
        relation_weight: optional (num_relations,) finite default per-relation weights used by
            :func:`slifmr_kernels.propagate` when the call gives none.
        validate: check all of the above now (O(nnz)). With False the O(nnz) checks are
            deferred: the first op that reads the graph (or :meth:`ensure_valid`) runs them.

    Arrays are stored contiguous. The constructor does not sort or merge duplicates; use
    :meth:`from_edges` for raw edges. Invalid input raises
    :class:`~slifmr_kernels.errors.GraphError` (or its TypeError / IndexError variants).
    """

    def __init__(
        self,
        indptr,
        indices,
        values=None,
        shape=None,
        relation=None,
        num_relations=None,
        relation_names=None,
        relation_weight=None,
        validate=True,
    ):
        indptr = check_index("indptr", _as_index("indptr", indptr), kind=GRAPH)
        indices = check_index("indices", _as_index("indices", indices), kind=GRAPH)
        check_same_device(GRAPH, indptr=indptr, indices=indices)
        indptr = indptr.to(torch.int64).contiguous()
        indices = indices.contiguous()
        nnz = indices.numel()
        if values is None:
            values = torch.ones(nnz, dtype=torch.float32, device=indices.device)
        values = check_float("values", _as_tensor("values", values), ndim=1, kind=GRAPH).contiguous()
        if shape is None:
            if indptr.numel() == 0:
                raise GraphError("indptr must have n_rows + 1 >= 1 entries, got 0")
            shape = (indptr.numel() - 1, _infer_dim("indices", indices, nnz, "n_cols"))
        self.shape = check_shape("shape", shape)
        self.indptr, self.indices, self.values = indptr, indices, values
        if relation is not None:
            relation = check_index("relation", _as_index("relation", relation), kind=GRAPH)
            check_same_device(GRAPH, relation=relation, indices=indices)
            if num_relations is None:
                num_relations = int(relation.max()) + 1 if relation.numel() else 1
                if num_relations < 1 or num_relations > _INT32_MAX:
                    raise GraphIndexError(f"relation has an entry {num_relations - 1} outside [0, 2**31 - 1)")
            num_relations = check_int("num_relations", num_relations, 1, _INT32_MAX, kind=GRAPH)
            if relation.dtype != torch.int32:
                # Checked before the cast: an id >= 2**31 would wrap into range.
                check_range("relation", relation, min(int(num_relations), _INT32_MAX), kind=GRAPH)
            relation = relation.to(torch.int32).contiguous()
        self.relation = relation
        self.num_relations = check_int(
            "num_relations", 1 if num_relations is None else num_relations, 1, _INT32_MAX, kind=GRAPH
        )
        self.relation_names = relation_names
        self.relation_weight = (
            None if relation_weight is None else _as_tensor("relation_weight", relation_weight)
        )
        if self.relation_weight is not None:
            self.relation_weight = check_float(
                "relation_weight", self.relation_weight, ndim=1, kind=GRAPH
            ).contiguous()
        if relation_names is not None:
            if isinstance(relation_names, (str, bytes)) or not hasattr(relation_names, "__iter__"):
                raise GraphTypeError(
                    f"relation_names must be a sequence of names, got {type(relation_names).__name__}"
                )
            self.relation_names = tuple(relation_names)
        self._transpose: CSRGraph | None = None
        self.edge_perm: torch.Tensor | None = None
        self._valid_at = None
        if validate:
            self.validate()

    @classmethod
    def _trusted(
        cls,
        indptr,
        indices,
        values,
        shape,
        relation=None,
        num_relations=None,
        relation_names=None,
        relation_weight=None,
    ) -> CSRGraph:
        """A graph from arrays the library built valid itself: no O(nnz) check, marked valid."""
        g = cls(
            indptr,
            indices,
            values,
            shape,
            relation,
            num_relations,
            relation_names,
            relation_weight,
            validate=False,
        )
        g._valid_at = g._versions()
        return g

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
        self.ensure_valid()
        return self.indptr[1:] - self.indptr[:-1]

    def row_ids(self) -> torch.Tensor:
        """(nnz,) int64 row of each edge (the COO view)."""
        deg = self.degrees()  # validates first
        return torch.repeat_interleave(
            torch.arange(self.shape[0], device=self.device), deg, output_size=self.nnz
        )

    def __repr__(self) -> str:
        rel = f", num_relations={self.num_relations}" if self.relation is not None else ""
        return f"CSRGraph(shape={self.shape}, nnz={self.nnz}, dtype={self.dtype}{rel}, device={self.device})"

    # ------------------------------------------------------------------ validation
    def _versions(self):
        rn = self.relation_names
        return (
            tuple(
                _versions_of(t)
                for t in (self.indptr, self.indices, self.values, self.relation, self.relation_weight)
            ),
            self.shape,
            self.num_relations,
            None if rn is None else len(rn),
        )

    def ensure_valid(self) -> CSRGraph:
        """:meth:`validate` unless nothing changed since the last successful check.

        Kernels call this before every launch: a graph built without validation, or whose
        arrays were replaced or modified in place (through torch operations, which bump the
        tensors' version counters), is checked (O(nnz)) before any index is dereferenced; an
        unchanged graph costs a comparison of a few small tuples. Writes that bypass the
        version counters (``t.data[...] = ...``, a NumPy view of the array) are not seen:
        call :meth:`validate` after such edits.
        """
        if self._valid_at is None or self._valid_at != self._versions():
            self.validate()
        return self

    def validate(self) -> CSRGraph:
        """Check every invariant; raise GraphError (or GraphTypeError / GraphIndexError)
        naming the field. Non-contiguous arrays assigned after construction are made
        contiguous and an int32 indptr widened to int64 (the kernels' contract)."""
        self._valid_at = None
        n_rows, n_cols = self.shape = check_shape("shape", self.shape)
        check_index("indptr", self.indptr, kind=GRAPH)
        check_index("indices", self.indices, kind=GRAPH)
        check_float("values", self.values, ndim=1, kind=GRAPH)
        if self.relation is not None:
            check_index("relation", self.relation, kind=GRAPH)
        if self.relation_weight is not None:
            check_float("relation_weight", self.relation_weight, ndim=1, kind=GRAPH)
        check_same_device(
            GRAPH,
            indptr=self.indptr,
            indices=self.indices,
            values=self.values,
            relation=self.relation,
            relation_weight=self.relation_weight,
        )
        R = self.num_relations = check_int("num_relations", self.num_relations, 1, _INT32_MAX, kind=GRAPH)
        if self.indptr.dtype != torch.int64:
            self.indptr = self.indptr.to(torch.int64)
        for field in ("indptr", "indices", "values", "relation", "relation_weight"):
            t = getattr(self, field)
            if t is not None and not t.is_contiguous():
                setattr(self, field, t.contiguous())
        indptr = self.indptr
        if indptr.numel() != n_rows + 1:
            raise GraphError(f"indptr must have n_rows + 1 = {n_rows + 1} entries, got {indptr.numel()}")
        if int(indptr[0]) != 0:
            raise GraphError(f"indptr[0] must be 0, got {int(indptr[0])}")
        if n_rows and bool((indptr[1:] < indptr[:-1]).any()):
            row = int(torch.nonzero(indptr[1:] < indptr[:-1])[0])
            raise GraphError(f"indptr must be non-decreasing; it decreases after row {row}")
        if int(indptr[-1]) != self.nnz:
            raise GraphError(f"indptr[-1] = {int(indptr[-1])} must equal the number of indices ({self.nnz})")
        if self.values.numel() != self.nnz:
            raise GraphError(f"values must have one entry per edge ({self.nnz}), got {self.values.numel()}")
        check_range("indices", self.indices, n_cols, kind=GRAPH)
        check_finite("values", self.values, kind=GRAPH)
        if self.relation is not None:
            if self.relation.numel() != self.nnz:
                raise GraphError(
                    f"relation must have one entry per edge ({self.nnz}), got {self.relation.numel()}"
                )
            check_range("relation", self.relation, R, kind=GRAPH)
            if self.relation.dtype != torch.int32:
                self.relation = self.relation.to(torch.int32)
        self.relation_names, self.relation_weight = _check_relation_meta(
            R, self.relation_names, self.relation_weight, self.device, self.relation is not None
        )
        self._valid_at = self._versions()
        return self

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_edges(
        cls,
        src,
        dst,
        weight=None,
        relation=None,
        shape=None,
        num_relations=None,
        relation_names=None,
        relation_weight=None,
        index_dtype=None,
        dtype=None,
    ) -> CSRGraph:
        """Build from an edge list: edge e goes row ``src[e]`` -> column ``dst[e]``.

        Duplicate (row, column, relation) edges are summed; rows come out sorted by column.
        Edges already in that order without duplicates (``src`` non-decreasing, ``dst``
        increasing within a row: the edges of a CSR graph, pruned by a mask every epoch) are
        recognised by one O(E) comparison and not sorted. For arrays already in CSR form,
        ``CSRGraph.from_csr(indptr, indices, values)`` skips the edge list altogether.

        Differentiable in ``weight``: when it requires grad, the graph's ``values`` are a
        function of it (a gather and a duplicate sum, through torch autograd) and
        :func:`slifmr_kernels.propagate` returns gradients for them.

        Args:
            src, dst: (E,) integer row / column ids (tensors, numpy arrays or lists; any
                integer dtype).
            weight: (E,) finite real edge weights, default 1.
            relation: (E,) relation id per edge, or None.
            shape: (n_rows, n_cols); default (max(src) + 1, max(dst) + 1), inferred only while
                the largest id is below max(2**22, 64 * E): sparser ids need an explicit shape.
            num_relations: 1 <= R < 2**31, default max(relation) + 1.
            relation_names, relation_weight: as for the constructor (num_relations of each).
            index_dtype: torch.int32 / torch.int64 for ``indices``; default int32 when it fits.
            dtype: torch.float32 or torch.float64, the dtype of the values. Default: float64
                when ``weight`` is a float64 tensor or NumPy array (the kernels run both), else
                float32 (Python lists, integer and float32/float16 weights, no weight).
        """
        if dtype is None:
            wd = getattr(weight, "dtype", None)
            dtype = (
                torch.float64 if wd is not None and str(wd) in ("torch.float64", "float64") else torch.float32
            )
        dtype = _value_dtype("dtype", dtype)
        src = _as_ids("src", src)
        dst = _as_ids("dst", dst)
        if src.numel() != dst.numel():
            raise GraphError(f"src and dst must have the same length, got {src.numel()} and {dst.numel()}")
        check_same_device(GRAPH, src=src, dst=dst)
        device = src.device
        E = src.numel()
        if shape is None:
            shape = (_infer_dim("src", src, E, "n_rows"), _infer_dim("dst", dst, E, "n_cols"))
        n_rows, n_cols = check_shape("shape", shape)
        index_dtype = _index_dtype(n_cols, index_dtype)
        check_range("src", src, n_rows, kind=GRAPH)
        check_range("dst", dst, n_cols, kind=GRAPH)
        if weight is None:
            weight = torch.ones(E, dtype=dtype, device=device)
        else:
            weight = _as_weights("weight", weight, E, dtype, device)
        if relation is not None:
            relation = _as_ids("relation", relation)
            if relation.numel() != E:
                raise GraphError(f"relation must have one entry per edge ({E}), got {relation.numel()}")
            check_same_device(GRAPH, relation=relation, src=src)
            if num_relations is None:
                num_relations = int(relation.max()) + 1 if E else 1
                if num_relations > _INT32_MAX:
                    raise GraphIndexError(f"relation has an entry {num_relations - 1} outside [0, 2**31 - 1)")
            num_relations = check_int("num_relations", num_relations, 1, _INT32_MAX, kind=GRAPH)
            check_range("relation", relation, num_relations, kind=GRAPH)
        elif num_relations is not None:
            num_relations = check_int("num_relations", num_relations, 1, _INT32_MAX, kind=GRAPH)
        relation_names, relation_weight = _check_relation_meta(
            1 if num_relations is None else num_relations,
            relation_names,
            relation_weight,
            device,
            relation is not None,
        )
        rows, cols, rel, values = _merge_edges(src, dst, relation, weight, n_rows, n_cols, num_relations or 1)
        indptr = _indptr_from_rows(rows, n_rows, device)
        return cls._trusted(
            indptr,
            cols.to(index_dtype),
            values,
            (n_rows, n_cols),
            relation=None if rel is None else rel.to(torch.int32),
            num_relations=num_relations,
            relation_names=relation_names,
            relation_weight=relation_weight,
        )

    @classmethod
    def from_topk(cls, idx, val, n_cols: int) -> CSRGraph:
        """The graph of a top-k result: one edge i -> idx[i, t] of weight val[i, t] for every
        valid entry (``idx >= 0``; -1 marks the padding of rows with fewer than k candidates).

        Args:
            idx: (N, k) integer tensor of column ids in [-1, n_cols).
            val: (N, k) floating tensor of the same shape (the scores become float32 weights).
            n_cols: the number of columns (items) of the graph.
        Returns an (N, n_cols) CSRGraph, columns sorted within each row (what
        ``topk_similarity`` / ``topk_scores`` return, as a graph; ``knn_graph`` builds it for you).
        """
        from .topk.op import topk_as_graph

        if not isinstance(idx, torch.Tensor) or not isinstance(val, torch.Tensor):
            raise InputTypeError(
                f"idx and val must be tensors, got {type(idx).__name__} and {type(val).__name__}"
            )
        if idx.dim() != 2 or idx.shape != val.shape:
            raise InputError(
                f"idx and val must be (N, k) of the same shape, got {tuple(idx.shape)} and {tuple(val.shape)}"
            )
        if idx.dtype.is_floating_point or idx.dtype.is_complex or idx.dtype == torch.bool:
            raise InputTypeError(f"idx must be an integer tensor, got {idx.dtype}")
        if not val.dtype.is_floating_point:
            raise InputTypeError(f"val must be a floating tensor, got {val.dtype}")
        if isinstance(n_cols, bool) or not isinstance(n_cols, int) or n_cols < 0:
            raise InputError(f"n_cols must be an integer >= 0, got {n_cols!r}")
        if idx.device != val.device:
            raise InputError(f"idx and val must be on one device, got {idx.device} and {val.device}")
        if idx.numel() and (int(idx.min()) < -1 or int(idx.max()) >= n_cols):
            raise GraphIndexError(
                f"idx must lie in [-1, n_cols={n_cols}), got values in [{int(idx.min())}, {int(idx.max())}]"
            )
        return topk_as_graph(idx.to(torch.int64), val, n_cols)

    @classmethod
    def from_csr(
        cls,
        indptr,
        indices,
        values=None,
        shape=None,
        relation=None,
        num_relations=None,
        relation_names=None,
        relation_weight=None,
    ) -> CSRGraph:
        """Build from arrays already in CSR form (no sort, no merge): the per-epoch rebuild of
        a pruned graph. Every invariant is checked in O(nnz) (indptr from 0, non-decreasing,
        ending at nnz; indices in range); columns within a row must be increasing (the
        library's canonical order, which equal graphs rely on), else GraphError: use
        :meth:`from_edges` for unsorted or duplicate edges. ``values`` keeps its autograd
        history."""
        g = cls(indptr, indices, values, shape, relation, num_relations, relation_names, relation_weight)
        if g.nnz > 1:
            rows = g.row_ids()
            key = rows * g.shape[1] + g.indices.to(torch.int64)
            if g.relation is not None:
                key = key * g.num_relations + g.relation.to(torch.int64)
            if not bool((key[1:] > key[:-1]).all()):
                at = int(torch.nonzero(key[1:] <= key[:-1])[0])
                raise GraphError(
                    f"from_csr: edge {at + 1} (row {int(rows[at + 1])}) is not "
                    f"after edge {at}: columns within a row must be increasing "
                    f"and unique; use CSRGraph.from_edges to sort and merge"
                )
        return g

    # ------------------------------------------------------------------ persistence
    _STATE_FORMAT = "slifmr_kernels.CSRGraph"

    def state_dict(self) -> dict:
        """The graph as plain tensors, ints and strings (values detached), loadable with
        ``torch.load(..., weights_only=True)``; :meth:`from_state_dict` rebuilds it (checked).
        A :meth:`mark_symmetric` mark is kept (re-checked on load)."""
        self.ensure_valid()
        return {
            "format": self._STATE_FORMAT,
            "version": 1,
            "shape": [int(self.shape[0]), int(self.shape[1])],
            "indptr": self.indptr,
            "indices": self.indices,
            "values": self.values.detach(),
            "relation": self.relation,
            "num_relations": int(self.num_relations),
            "relation_names": (
                None if self.relation_names is None else [str(n) for n in self.relation_names]
            ),
            "relation_weight": (None if self.relation_weight is None else self.relation_weight.detach()),
            "symmetric": self._transpose is self,
        }

    @classmethod
    def from_state_dict(cls, state: Mapping) -> CSRGraph:
        """The graph of :meth:`state_dict` (every invariant checked, as for the constructor)."""
        if not isinstance(state, Mapping) or state.get("format") != cls._STATE_FORMAT:
            raise GraphError(
                f"state must be a dict from CSRGraph.state_dict() (format "
                f"{cls._STATE_FORMAT!r}), got {type(state).__name__}"
            )
        if state.get("version") != 1:
            raise GraphError(f"unknown CSRGraph state version {state.get('version')!r}")
        g = cls(
            state["indptr"],
            state["indices"],
            state["values"],
            tuple(state["shape"]),
            state.get("relation"),
            state.get("num_relations"),
            state.get("relation_names"),
            state.get("relation_weight"),
        )
        if state.get("symmetric"):
            g.mark_symmetric()
        return g

    def save(self, path) -> None:
        """``torch.save(self.state_dict(), path)``: plain tensors, safe to load with
        ``weights_only=True`` (see :meth:`load`)."""
        torch.save(self.state_dict(), path)

    @classmethod
    def load(cls, path, map_location=None) -> CSRGraph:
        """A graph written by :meth:`save`, read with ``torch.load(weights_only=True)``."""
        return cls.from_state_dict(torch.load(path, map_location=map_location, weights_only=True))

    @classmethod
    def from_scipy(cls, m, index_dtype=None, dtype=torch.float32) -> CSRGraph:
        """Build from any ``scipy.sparse`` matrix or array (duplicates summed).

        The matrix's own arrays are checked first (a CSR/CSC ``indptr`` of length
        n_major + 1, starting at 0, non-decreasing, ending at len(indices) == len(data);
        indices in range; finite real data), so a corrupted matrix raises GraphError naming
        ``m.indptr`` / ``m.indices`` / ``m.data`` instead of reaching scipy's C++ code.
        """
        import scipy.sparse as sp

        if not sp.issparse(m):
            raise GraphTypeError(f"m must be a scipy.sparse matrix, got {type(m).__name__}")
        shape = check_shape("m.shape", m.shape)
        src, dst, data = _scipy_edges(m, shape)
        return cls.from_edges(src, dst, data, shape=shape, index_dtype=index_dtype, dtype=dtype)

    @classmethod
    def from_torch_sparse(cls, t: torch.Tensor, index_dtype=None) -> CSRGraph:
        """Build from a 2-D torch sparse tensor in COO or CSR layout (duplicates summed)."""
        if not isinstance(t, torch.Tensor) or t.dim() != 2:
            raise GraphTypeError("t must be a 2-D torch sparse tensor")
        shape = check_shape("t.shape", tuple(t.shape))
        if t.layout == torch.sparse_csr:
            indptr = _as_ids("t.crow_indices()", t.crow_indices())
            indices = _as_ids("t.col_indices()", t.col_indices())
            values = t.values()
            _check_compressed(
                "t",
                indptr,
                indices,
                values.numel(),
                shape[0],
                shape[1],
                ("t.crow_indices()", "t.col_indices()", "t.values()"),
            )
            src = torch.repeat_interleave(
                torch.arange(shape[0], device=indptr.device),
                indptr[1:] - indptr[:-1],
                output_size=indices.numel(),
            )
            dst = indices
        elif t.layout == torch.sparse_coo:
            idx = t._indices()
            values = t._values()
            src, dst = idx[0], idx[1]
        else:
            raise GraphTypeError(f"t must be a sparse COO or CSR tensor, got layout {t.layout}")
        if values.dim() != 1:
            raise GraphError(
                f"t must have one value per stored entry (no dense dimensions), "
                f"got values of shape {tuple(values.shape)}"
            )
        dtype = values.dtype if values.dtype in (torch.float32, torch.float64) else torch.float32
        return cls.from_edges(src, dst, values, shape=shape, index_dtype=index_dtype, dtype=dtype)

    @classmethod
    def from_edge_index(
        cls, edge_index, edge_weight=None, num_nodes=None, index_dtype=None, dtype=torch.float32
    ) -> CSRGraph:
        """Build from a PyG-style ``edge_index`` (2, E) with messages flowing source -> target.

        Row = target (``edge_index[1]``), column = source (``edge_index[0]``), so that
        ``propagate`` aggregates at the target as PyG's message passing does. ``num_nodes``
        defaults to max(edge_index) + 1 (inferred only up to max(2**22, 64 * E)).
        """
        edge_index = _as_ids("edge_index", edge_index, ndim=2)
        if edge_index.shape[0] != 2:
            raise GraphError(f"edge_index must have shape (2, E), got {tuple(edge_index.shape)}")
        if num_nodes is None:
            num_nodes = _infer_dim("edge_index", edge_index.reshape(-1), edge_index.shape[1], "num_nodes")
        num_nodes = check_int("num_nodes", num_nodes, 0, kind=GRAPH)
        return cls.from_edges(
            edge_index[1],
            edge_index[0],
            edge_weight,
            shape=(num_nodes, num_nodes),
            index_dtype=index_dtype,
            dtype=dtype,
        )

    # ------------------------------------------------------------------ conversions
    def to_scipy(self):
        """The matrix as ``scipy.sparse.csr_matrix`` (relation ids are dropped, values kept)."""
        import scipy.sparse as sp

        g = self.ensure_valid().to("cpu")
        return sp.csr_matrix((g.values.numpy(), g.indices.numpy(), g.indptr.numpy()), shape=self.shape)

    def to_torch_sparse_csr(self) -> torch.Tensor:
        """The matrix as a torch sparse CSR tensor (int64 indices, relation ids dropped)."""
        self.ensure_valid()
        return torch.sparse_csr_tensor(
            self.indptr, self.indices.to(torch.int64), self.values, size=self.shape, check_invariants=False
        )

    def to_torch_sparse_coo(self) -> torch.Tensor:
        """The matrix as a coalesced torch sparse COO tensor (int64 indices, relation ids
        dropped); the values keep their autograd history (``torch.sparse.mm`` then
        differentiates them too)."""
        self.ensure_valid()
        idx = torch.stack([self.row_ids(), self.indices.to(torch.int64)])
        return torch.sparse_coo_tensor(
            idx, self.values, size=self.shape, is_coalesced=True, check_invariants=False
        )

    def to_dense(self) -> torch.Tensor:
        """Dense (n_rows, n_cols) matrix; for tests and small graphs only."""
        self.ensure_valid()
        with _alloc_guard(f"to_dense of a {self.shape} graph"):
            out = torch.zeros(self.shape, dtype=self.values.dtype, device=self.device)
        out.index_put_((self.row_ids(), self.indices.to(torch.int64)), self.values, accumulate=True)
        return out

    def to(self, device=None, dtype=None) -> CSRGraph:
        """Copy to ``device`` and/or cast the values to ``dtype`` (torch.float32 / float64);
        the cached transpose follows."""
        self.ensure_valid()
        if dtype is not None:
            _value_dtype("dtype", dtype)
        if device is not None:
            try:
                device = torch.device(device)
            except (RuntimeError, TypeError, ValueError) as exc:
                raise InputError(
                    f"device must name a torch device, got {device!r}: {str(exc).splitlines()[0]}"
                ) from None
            if device.type == "meta":
                raise InputError("device meta: a CSRGraph needs arrays with data")
            if device.type == "cuda" and not torch.cuda.is_available():
                raise InputError(f"device {device} is not available here (no CUDA device)")

        def move(t):
            return None if t is None else t.to(device)

        values = self.values.to(device=device, dtype=dtype)
        g = CSRGraph._trusted(
            move(self.indptr),
            move(self.indices),
            values,
            self.shape,
            move(self.relation),
            self.num_relations,
            self.relation_names,
            None if self.relation_weight is None else self.relation_weight.to(device=device, dtype=dtype),
        )
        if self._transpose is self:
            g._transpose = g
        elif self._transpose is not None:
            t = self._transpose
            tg = CSRGraph._trusted(
                move(t.indptr),
                move(t.indices),
                t.values.to(device=device, dtype=dtype),
                t.shape,
                move(t.relation),
                t.num_relations,
                t.relation_names,
                g.relation_weight,
            )
            tg.edge_perm = move(t.edge_perm)
            tg._transpose, g._transpose = g, tg
            g.edge_perm = move(self.edge_perm)
        return g

    def with_values(self, values) -> CSRGraph:
        """Same structure (and cached transpose structure), new per-edge values: a (nnz,)
        finite float32/float64 tensor on the graph's device."""
        self.ensure_valid()
        values = check_float("values", _as_tensor("values", values), ndim=1, kind=GRAPH).contiguous()
        if values.numel() != self.nnz:
            raise GraphError(f"values must have one entry per edge ({self.nnz}), got {values.numel()}")
        check_same_device(GRAPH, values=values, graph=self.indptr)
        check_finite("values", values, kind=GRAPH)
        return self._with_values(values)

    def _with_values(self, values: torch.Tensor) -> CSRGraph:
        """with_values for values already checked (a finite (nnz,) float tensor here)."""
        g = CSRGraph._trusted(
            self.indptr,
            self.indices,
            values,
            self.shape,
            self.relation,
            self.num_relations,
            self.relation_names,
            self.relation_weight,
        )
        if self._transpose is self:
            # Symmetric values stay the caller's promise, as for the graph it came from.
            g._transpose = g
        elif self._transpose is not None:
            t = self._transpose
            tg = CSRGraph._trusted(
                t.indptr,
                t.indices,
                values[t.edge_perm],
                t.shape,
                t.relation,
                t.num_relations,
                t.relation_names,
                self.relation_weight,
            )
            tg.edge_perm = t.edge_perm
            tg._transpose, g._transpose = g, tg
        return g

    # ------------------------------------------------------------------ transformations
    def transpose(self) -> CSRGraph:
        """The transposed graph (n_cols x n_rows), built once and cached.

        ``t.edge_perm[e]`` is the edge of ``self`` that became edge ``e`` of ``t``, so
        ``t.values == self.values[t.edge_perm]``. Rows of ``t`` stay sorted by column.
        """
        self.ensure_valid()
        if self._transpose is None:
            cols = self.indices.to(torch.int64)
            # A stable sort by column keeps the (already ascending) source rows in order:
            # exactly a counting sort, carrying the permutation.
            perm = torch.sort(cols, stable=True).indices
            n_rows, n_cols = self.shape
            indptr = _indptr_from_rows(cols, n_cols, self.device)
            t_indices = self.row_ids()[perm].to(_index_dtype(n_rows, None))
            t = CSRGraph._trusted(
                indptr,
                t_indices,
                self.values[perm],
                (n_cols, n_rows),
                None if self.relation is None else self.relation[perm],
                self.num_relations,
                self.relation_names,
                self.relation_weight,
            )
            t.edge_perm = perm
            t._transpose = self
            self._transpose = t
        return self._transpose

    def mark_symmetric(self, check: bool = True) -> CSRGraph:
        """Declare A == A^T: :meth:`transpose` then returns this graph itself, so a backward
        pass over it needs no transposed copy (16 B per edge). Returns ``self``.

        For square graphs without relation ids (a symmetrised, sym-normalised adjacency).
        ``check=True`` (default) verifies it: every node's row and column hold the same edges
        (structure, one sort of the column ids) and A[i, j] equals A[j, i] up to rounding
        (relative 1e-5 in float32, 1e-12 in float64: ``normalize('sym')`` of a symmetric graph
        rounds the two products differently); GraphError names the first offending edge.
        ``check=False`` keeps only the O(n) degree check and trusts the caller (a graph
        symmetric by construction, e.g. from :meth:`symmetrize`). :meth:`to` and
        :meth:`with_values` keep the mark (new values are then the caller's promise).
        """
        self.ensure_valid()
        n_rows, n_cols = self.shape
        if n_rows != n_cols:
            raise GraphError(f"a symmetric graph must be square, got shape {self.shape}")
        if self.relation is not None:
            raise GraphError(
                "mark_symmetric is for graphs without relation ids: a relation "
                "graph's transpose carries its own edge order (edge_perm)"
            )
        in_deg = torch.bincount(self.indices, minlength=n_cols)  # int32 too: no copy
        out_deg = self.degrees()
        if not torch.equal(in_deg, out_deg):
            bad = int((in_deg != out_deg).nonzero()[0, 0])
            raise GraphError(
                f"the graph is not symmetric: node {bad} has {int(out_deg[bad])} "
                f"edges in its row and {int(in_deg[bad])} in its column"
            )
        if check and self.nnz:
            cols = self.indices.to(torch.int64)
            perm = torch.sort(cols, stable=True).indices
            rows = self.row_ids()
            # With equal degrees A^T has A's indptr; its column ids are the rows, sorted by column.
            t_cols = rows[perm]
            if not torch.equal(t_cols, cols):
                at = int(torch.nonzero(t_cols != cols)[0])
                raise GraphError(
                    f"the graph is not symmetric: edge ({int(rows[at])}, "
                    f"{int(cols[at])}) has no mirror edge ({int(cols[at])}, "
                    f"{int(rows[at])})"
                )
            v = self.values.detach()
            vt = v[perm]
            rtol = 1e-5 if v.dtype == torch.float32 else 1e-12
            scale = torch.maximum(v.abs(), vt.abs())
            bad_v = (v - vt).abs() > rtol * scale + 1e-30
            if bool(bad_v.any()):
                at = int(torch.nonzero(bad_v)[0])
                raise GraphError(
                    f"the graph is not symmetric: A[{int(rows[at])}, "
                    f"{int(cols[at])}] = {float(v[at])!r} but A[{int(cols[at])}, "
                    f"{int(rows[at])}] = {float(vt[at])!r}; pass check=False "
                    f"only for a graph symmetric by construction"
                )
        self._transpose = self
        return self

    def normalize(self, kind: str = "sym", eps: float = 0.0) -> CSRGraph:
        """Rescale the values; returns a new graph with the same structure.

        * ``"sym"``: D_r^{-1/2} A D_c^{-1/2} with D_r / D_c the row / column sums of the values
          (the LightGCN normalisation for a symmetric adjacency).
        * ``"sym_row"``: D_r^{-1/2} A D_r^{-1/2}, the row sums on both sides (square graphs):
          FREEDOM and LATTICE normalise their item-item kNN graphs this way (the kNN graph
          S is not symmetric: its row sums are k-neighbour sums, its column sums are not), and
          so do :func:`slifmr.models` ``row_sum_normalized`` and the peers' dense
          ``compute_normalized_laplacian``. For a symmetric A it equals ``"sym"``.
        * ``"row"``: D_r^{-1} A (mean aggregation).
        * ``"none"``: unchanged.
        Rows or columns whose sum is zero (isolated nodes) keep zero weights, never NaN (the
        peers add 1e-7 to every sum instead: a relative difference below 1e-7 / degree).
        ``eps`` (a finite number >= 0): sums at most ``eps`` count as zero.
        Differentiable: values that require grad give normalised values that do (torch ops).

        Which peer uses which: LightGCN (and NGCF, KGAT's Laplacian variant) build the
        bipartite user-item adjacency symmetric and use ``"sym"``; FREEDOM and LATTICE use
        ``"sym"`` for their user-item graph and ``"sym_row"`` for the kNN item graphs; KGAT's
        random-walk variant and mean aggregators use ``"row"``.
        """
        check_choice("kind", kind, ("sym", "sym_row", "row", "none"))
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps < 0:
            raise InputError(f"eps must be a finite number >= 0, got {eps!r}")
        self.ensure_valid()
        if kind == "none":
            return self
        rows = self.row_ids()
        cols = self.indices.to(torch.int64)
        vals = self.values
        if kind == "sym_row" and self.shape[0] != self.shape[1]:
            raise GraphError(f"normalize('sym_row') needs a square graph, got shape {self.shape}")
        with _alloc_guard(f"normalize of a {self.shape} graph needs its row and column sums"):
            row_sum = torch.zeros(self.shape[0], dtype=vals.dtype, device=self.device)
            col_sum = (
                torch.zeros(self.shape[1], dtype=vals.dtype, device=self.device) if kind == "sym" else None
            )
        row_sum = row_sum.index_add(0, rows, vals)
        if kind == "sym_row":
            inv_r = torch.where(row_sum > eps, row_sum.clamp_min(1e-30).rsqrt(), torch.zeros_like(row_sum))
            return self._with_values(_normalized(vals * inv_r[rows] * inv_r[cols], kind))
        if kind == "row":
            inv = torch.where(row_sum.abs() > eps, 1.0 / row_sum, torch.zeros_like(row_sum))
            return self._with_values(_normalized(vals * inv[rows], kind))
        assert col_sum is not None  # allocated for kind == "sym", the one left
        col_sum = col_sum.index_add(0, cols, vals)
        inv_r = torch.where(row_sum > eps, row_sum.clamp_min(1e-30).rsqrt(), torch.zeros_like(row_sum))
        inv_c = torch.where(col_sum > eps, col_sum.clamp_min(1e-30).rsqrt(), torch.zeros_like(col_sum))
        return self._with_values(_normalized(vals * inv_r[rows] * inv_c[cols], kind))

    def symmetrize(self) -> CSRGraph:
        """A + A^T (duplicates summed) for a square graph without relation ids."""
        self.ensure_valid()
        if self.shape[0] != self.shape[1]:
            raise GraphError(f"symmetrize needs a square graph, got shape {self.shape}")
        rows, cols = self.row_ids(), self.indices.to(torch.int64)
        return CSRGraph.from_edges(
            torch.cat([rows, cols]),
            torch.cat([cols, rows]),
            torch.cat([self.values, self.values]),
            shape=self.shape,
            index_dtype=self.indices.dtype,
            dtype=self.values.dtype,
        )

    # ------------------------------------------------------------------ arithmetic
    # ``w * A + (1 - w) * B``: graphs of one shape add by the union of their patterns (edges
    # in both are summed); a scalar (a number or a 0-d tensor, which may require grad) scales
    # the values. Graphs with relation ids are refused: whether an edge of relation r in A and
    # one of relation s in B are "the same edge" has no single answer (use stack_relations).
    def _scalar(self, s, op: str) -> torch.Tensor | float:
        if isinstance(s, torch.Tensor):
            if s.numel() != 1 or s.is_complex() or s.dtype == torch.bool:
                raise InputTypeError(
                    f"CSRGraph {op} needs a real scalar, got a tensor of "
                    f"shape {tuple(s.shape)} and dtype {s.dtype}"
                )
            check_same_device(scalar=s.reshape(()), graph=self.indptr)
            check_finite("scalar", s.detach().reshape(1))
            return s.reshape(()).to(self.values.dtype)
        if isinstance(s, bool) or not isinstance(s, (int, float)):
            raise InputTypeError(
                f"CSRGraph {op} needs a number, a 0-d tensor or (for + and -) "
                f"a CSRGraph, got {type(s).__name__}"
            )
        if not math.isfinite(s):
            raise InputError(f"CSRGraph {op}: the scalar must be finite, got {s!r}")
        return float(s)

    def _no_relations(self, op: str) -> None:
        if self.relation is not None:
            raise GraphError(
                f"CSRGraph {op} is defined for graphs without relation ids; "
                f"combine relation graphs with stack_relations"
            )

    def __mul__(self, s) -> CSRGraph:
        if isinstance(s, CSRGraph):
            return NotImplemented
        s = self._scalar(s, "*")
        self._no_relations("*")
        self.ensure_valid()
        return self._with_values(self.values * s)

    __rmul__ = __mul__

    def __truediv__(self, s) -> CSRGraph:
        if isinstance(s, CSRGraph):
            return NotImplemented
        s = self._scalar(s, "/")
        if (float(s) if not isinstance(s, torch.Tensor) else float(s.detach())) == 0.0:
            raise InputError("CSRGraph / 0")
        return self * (1.0 / s)

    def __neg__(self) -> CSRGraph:
        return self * -1.0

    def __add__(self, other) -> CSRGraph:
        if isinstance(other, (int, float)) and not isinstance(other, bool) and other == 0:
            return self  # sum([A, B]) starts from 0
        if not isinstance(other, CSRGraph):
            return NotImplemented
        self._no_relations("+")
        other._no_relations("+")
        self.ensure_valid()
        other.ensure_valid()
        if self.shape != other.shape:
            raise InputError(f"CSRGraph +: shapes differ, {self.shape} and {other.shape}")
        if self.device != other.device:
            raise InputError(f"CSRGraph +: devices differ, {self.device} and {other.device}")
        dtype = torch.promote_types(self.values.dtype, other.values.dtype)
        index_dtype = torch.promote_types(self.indices.dtype, other.indices.dtype)
        return CSRGraph.from_edges(
            torch.cat([self.row_ids(), other.row_ids()]),
            torch.cat([self.indices.to(torch.int64), other.indices.to(torch.int64)]),
            torch.cat([self.values.to(dtype), other.values.to(dtype)]),
            shape=self.shape,
            index_dtype=index_dtype,
            dtype=dtype,
        )

    __radd__ = __add__

    def __sub__(self, other) -> CSRGraph:
        if not isinstance(other, CSRGraph):
            return NotImplemented
        return self + (-other)


def _normalized(v: torch.Tensor, kind: str) -> torch.Tensor:
    """Normalised values, refused when they overflowed: a row or column sum that is not zero
    but too close to it gives an infinite weight."""
    if v.numel():
        lo, hi = torch.aminmax(v)
        if not bool(torch.isfinite(lo) & torch.isfinite(hi)):
            bad = int((~torch.isfinite(v)).sum())
            raise GraphError(
                f"normalize({kind!r}): {bad} normalised value(s) overflow (row or "
                f"column sums too close to 0); pass eps > 0 to treat such sums "
                f"as zero"
            )
    return v


def _check_compressed(
    owner: str, indptr: torch.Tensor, indices: torch.Tensor, n_data: int, n_major: int, n_minor: int, names
) -> None:
    """The CSR/CSC invariants of another library's arrays, before anything expands them:
    indptr of n_major + 1 entries from 0, non-decreasing, ending at len(indices) == len(data);
    indices in [0, n_minor)."""
    p_name, i_name, d_name = names
    if indptr.numel() != n_major + 1:
        raise GraphError(
            f"{p_name} must have {n_major + 1} entries for {owner}'s "
            f"{n_major} rows/columns, got {indptr.numel()}"
        )
    if int(indptr[0]) != 0:
        raise GraphError(f"{p_name}[0] must be 0, got {int(indptr[0])}")
    if n_major and bool((indptr[1:] < indptr[:-1]).any()):
        at = int(torch.nonzero(indptr[1:] < indptr[:-1])[0])
        raise GraphError(f"{p_name} must be non-decreasing; it decreases after entry {at}")
    if int(indptr[-1]) != indices.numel():
        raise GraphError(f"{p_name}[-1] = {int(indptr[-1])} must equal len({i_name}) = {indices.numel()}")
    if n_data != indices.numel():
        raise GraphError(f"{d_name} must have one entry per stored element ({indices.numel()}), got {n_data}")
    check_range(i_name, indices, n_minor, kind=GRAPH)


def _np_ids(name: str, a, ndim: int = 1) -> torch.Tensor:
    """An integer NumPy array of ids as an int64 tensor (no copy when it already is one)."""
    import numpy as np

    if not isinstance(a, np.ndarray):
        raise GraphTypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    if a.dtype.kind not in "iu":
        raise GraphTypeError(f"{name} must hold integers, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise GraphError(f"{name} must be {ndim}-D, got shape {a.shape}")
    if a.dtype == np.uint64:
        a = a.view(np.int64)  # ids >= 2**63 become negative: the range check names them
    return torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))


def _np_data(name: str, a, ndim: int = 1) -> torch.Tensor:
    """Real (bool, integer or float) NumPy data as a tensor: float64 unless float32."""
    import numpy as np

    if not isinstance(a, np.ndarray):
        raise GraphTypeError(f"{name} must be a NumPy array, got {type(a).__name__}")
    if a.dtype.kind not in "biuf":
        raise GraphTypeError(f"{name} must hold real numbers, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise GraphError(f"{name} must be {ndim}-D, got shape {a.shape}")
    out = np.float32 if a.dtype == np.float32 else np.float64
    t = torch.from_numpy(np.ascontiguousarray(a, dtype=out))
    check_finite(name, t, kind=GRAPH)
    return t


def _scipy_edges(m, shape):
    """(src, dst, data) of a scipy.sparse matrix, its arrays checked before any use."""
    fmt = getattr(m, "format", None)
    n_rows, n_cols = shape
    if fmt in ("csr", "csc"):
        indptr = _np_ids("m.indptr", m.indptr)
        indices = _np_ids("m.indices", m.indices)
        data = _np_data("m.data", m.data)
        n_major, n_minor = (n_rows, n_cols) if fmt == "csr" else (n_cols, n_rows)
        _check_compressed(
            "m", indptr, indices, data.numel(), n_major, n_minor, ("m.indptr", "m.indices", "m.data")
        )
        major = torch.repeat_interleave(
            torch.arange(n_major), indptr[1:] - indptr[:-1], output_size=indices.numel()
        )
        return (major, indices, data) if fmt == "csr" else (indices, major, data)
    if fmt == "coo":
        try:
            row, col = m.row, m.col
        except (AttributeError, ValueError, IndexError, TypeError) as exc:
            raise GraphError(f"m.coords must be (row, col) for a 2-D COO matrix: {exc}") from None
        row, col = _np_ids("m.row", row), _np_ids("m.col", col)
        data = _np_data("m.data", m.data)
        if not (row.numel() == col.numel() == data.numel()):
            raise GraphError(
                f"m.row, m.col and m.data must have one entry per stored element, "
                f"got {row.numel()}, {col.numel()} and {data.numel()}"
            )
        return row, col, data
    if fmt == "bsr":
        bs = m.blocksize
        R, C = check_shape("m.blocksize", bs)
        if R < 1 or C < 1 or n_rows % R or n_cols % C:
            raise GraphError(f"m.blocksize {bs} must be positive and divide the shape {shape}")
        indptr = _np_ids("m.indptr", m.indptr)
        indices = _np_ids("m.indices", m.indices)
        data = _np_data("m.data", m.data, ndim=3)
        if tuple(data.shape[1:]) != (R, C):
            raise GraphError(f"m.data must have shape (nnz_blocks, {R}, {C}), got {tuple(data.shape)}")
        _check_compressed(
            "m", indptr, indices, data.shape[0], n_rows // R, n_cols // C, ("m.indptr", "m.indices", "m.data")
        )
        brow = torch.repeat_interleave(
            torch.arange(n_rows // R), indptr[1:] - indptr[:-1], output_size=indices.numel()
        )
        nb = indices.numel()
        rows = (brow[:, None, None] * R + torch.arange(R)[None, :, None]).expand(nb, R, C)
        cols = (indices[:, None, None] * C + torch.arange(C)[None, None, :]).expand(nb, R, C)
        return rows.reshape(-1), cols.reshape(-1), data.reshape(-1)
    # lil, dok, dia: scipy's own Python code turns them into COO; its failures are named.
    try:
        coo = m.tocoo()
    except Exception as exc:  # noqa: BLE001 - any failure of a corrupted matrix is the input's
        raise GraphError(
            f"m ({fmt} format) could not be converted to COO: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
        ) from None
    if check_shape("m.tocoo().shape", coo.shape) != shape:
        raise GraphError(f"m.tocoo() has shape {coo.shape}, m has {shape}")
    return _scipy_edges(coo, shape)


def stack_relations(
    graphs: Mapping[str, CSRGraph],
    weights: Mapping[str, float] | Sequence[float] | torch.Tensor | None = None,
) -> CSRGraph:
    """Stack named relation graphs over one node space into one CSR with relation ids.

    A part that already carries relation ids (a KG with R relations) keeps them, offset so that
    every relation of the stack has its own id; its relations are named ``"name:r"``.

    Args:
        graphs: ordered mapping name -> CSRGraph, all of the same shape and device.
        weights: per-part weights (mapping by name or sequence in order), or a tensor with one
            weight per stacked relation; default 1. Stored as ``relation_weight``; finite.

    Returns:
        CSRGraph with ``relation`` (int32), ``num_relations``, ``relation_names`` and
        ``relation_weight`` (float32, one per relation).
    """
    if not isinstance(graphs, Mapping):
        raise InputTypeError(f"graphs must be a mapping name -> CSRGraph, got {type(graphs).__name__}")
    if not graphs:
        raise InputError("graphs must name at least one relation graph")
    items = list(graphs.items())
    for name, g in items:
        if not isinstance(g, CSRGraph):
            raise InputTypeError(f"graphs[{name!r}] must be a CSRGraph, got {type(g).__name__}")
        g.ensure_valid()
    shape, device = items[0][1].shape, items[0][1].device
    src, dst, val, rel, names, part_of = [], [], [], [], [], []
    offset = 0
    for name, g in items:
        if g.shape != shape:
            raise InputError(f"graphs[{name!r}] has shape {g.shape}, expected {shape} like {items[0][0]!r}")
        if g.device != device:
            raise InputError(f"graphs[{name!r}] is on {g.device}, expected {device} like {items[0][0]!r}")
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
    if offset > _INT32_MAX:
        raise InputError(f"the stack would have {offset} relations, more than 2**31 - 1")
    if weights is None:
        w = torch.ones(offset, dtype=torch.float32, device=device)
    elif isinstance(weights, torch.Tensor):
        check_tensor("weights", weights, ndim=1)
        if weights.is_complex() or weights.dtype == torch.bool:
            raise InputTypeError(f"weights must be real numbers, got dtype {weights.dtype}")
        w = weights.detach().to(device=device, dtype=torch.float32)
        if w.numel() != offset:
            raise InputError(f"weights tensor must have one entry per relation ({offset}), got {w.numel()}")
    else:

        def number(key, v):
            if isinstance(v, (bool, str, bytes)):
                raise InputTypeError(f"weights[{key!r}] must be a number, got {type(v).__name__}")
            try:
                return float(v)
            except (TypeError, ValueError, RuntimeError) as exc:
                raise InputTypeError(
                    f"weights[{key!r}] must be a number, got {type(v).__name__}: {exc}"
                ) from None

        if isinstance(weights, Mapping):
            unknown = set(weights) - set(graphs)
            if unknown:
                raise InputError(f"weights names unknown graphs: {sorted(map(str, unknown))}")
            per_part = {n: number(n, weights.get(n, 1.0)) for n in graphs}
        else:
            if isinstance(weights, (str, bytes)) or not hasattr(weights, "__iter__"):
                raise InputTypeError(
                    f"weights must be a mapping, a sequence or a tensor, got {type(weights).__name__}"
                )
            weights = list(weights)
            if len(weights) != len(items):
                raise InputError(f"weights must have one entry per graph ({len(items)}), got {len(weights)}")
            per_part = {n: number(i, wt) for i, ((n, _), wt) in enumerate(zip(items, weights))}
        w = torch.tensor([per_part[p] for p in part_of], dtype=torch.float32, device=device)
    check_finite("weights", w)
    dtype = functools.reduce(torch.promote_types, (v.dtype for v in val))
    return CSRGraph.from_edges(
        torch.cat(src),
        torch.cat(dst),
        torch.cat(val).to(dtype),
        relation=torch.cat(rel),
        shape=shape,
        num_relations=offset,
        relation_names=names,
        relation_weight=w.to(dtype),
        dtype=dtype,
    )
