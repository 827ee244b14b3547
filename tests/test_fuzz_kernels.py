"""Generated-case fuzzing of every public op and constructor of ``slifmr_kernels``.

Each case is drawn from one integer (``<seed>:<index>``): a family (a constructor, an op, or a
differential check of every CPU backend against the reference) and its arguments, valid or
broken on purpose (corrupted CSR arrays, out-of-range / negative / huge ids, every dtype,
non-contiguous and zero-stride tensors, NaN / inf, empty graphs, odd k, wrong exclusion
graphs, unknown backends, the meta device, requires_grad combinations). A case fails when

* the worker process dies (a signal: SIGSEGV, SIGABRT, ...) or hangs (per-case timeout),
* it raises MemoryError or any exception that is not the project's own
  (``slifmr_kernels.KernelError``: ``InputError`` / ``GraphError`` / ``BackendUnavailable``),
* an invalid input is accepted, a valid one refused, or a result differs from an independent
  oracle (dense NumPy/float64 computations) or from the torch reference backend.

Cases run in batches in worker subprocesses (imports paid once per batch) under an address
space cap (``RLIMIT_AS``, 4 GiB) and a per-case timeout; the parent restarts a worker after a
crash or hang, so one run reports every failing case with its reproducer.

    python -m pytest -q tests/test_fuzz_kernels.py              # the CI budget, fixed seed
    python -m tests.test_fuzz_kernels --cases 100000 --seed 1   # long (also: python tests/...)
    python -m tests.test_fuzz_kernels --replay 1:4242           # one case, in process, traceback
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import resource
import select
import signal
import subprocess
import sys
import tempfile
import time
import traceback

# Before torch starts its OpenMP pool (see slifmr_kernels/__init__.py): with the active wait
# policy, torch's and Numba's idle pools starve each other and a case runs 100x slower.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import scipy.sparse as sp  # noqa: E402

import slifmr_kernels as sk  # noqa: E402
from slifmr_kernels import graph as _graph  # noqa: E402
from slifmr_kernels.backends import available_backends  # noqa: E402
from slifmr_kernels.testing import fuse_views_formula  # noqa: E402
from slifmr_kernels.topk.op import MAX_PAD  # noqa: E402

#: The seed and case count of the CI run (``python -m pytest``): >= 10,000 cases.
CI_SEED = 20260
CI_CASES = int(os.environ.get("SLIFMR_FUZZ_CASES", "10000"))
MEM_LIMIT = 4 << 30
CASE_TIMEOUT = 60.0
FIRST_CASE_TIMEOUT = 300.0  # imports and (first time only) Numba's compilation of the kernels

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

I32 = 2**31 - 1
F32 = torch.float32
F64 = torch.float64


class Failure(AssertionError):
    """A case found a bug: the message says what was expected and what happened."""


# ====================================================================== randomness


class Rand:
    """Every random choice of one case, from its id."""

    def __init__(self, case_id: int):
        self.py = random.Random(case_id)
        self.gen = torch.Generator().manual_seed(case_id & (2**63 - 1))

    def chance(self, p: float) -> bool:
        return self.py.random() < p

    def choice(self, seq):
        return seq[self.py.randrange(len(seq))]

    def int(self, lo: int, hi: int) -> int:
        return self.py.randint(lo, hi)

    def size(self, hi: int = 12) -> int:
        """A small size, 0 and 1 often."""
        return self.choice([0, 1, 1, 2, 3, 4, 5, 7, 8] + [self.int(0, hi)] * 3)

    def floats(self, *shape, dtype=F32, signed=True) -> torch.Tensor:
        t = torch.randn(*shape, generator=self.gen, dtype=F64)
        if not signed:
            t = t.abs() + 0.25
        return t.to(dtype)

    def ints(self, lo: int, hi: int, n: int) -> torch.Tensor:
        """(n,) int64 in [lo, hi)."""
        if n == 0 or hi <= lo:
            return torch.zeros(n, dtype=torch.int64) + lo
        return torch.randint(lo, hi, (n,), generator=self.gen)


def case_id_of(seed: int, index: int) -> int:
    return (seed << 32) + index


# ====================================================================== outcome helpers


def attempt(fn, *args, **kwargs):
    """(result, None) or (None, the project's own error); anything else propagates."""
    try:
        return fn(*args, **kwargs), None
    except sk.KernelError as exc:
        return None, exc


def brief(x) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor{tuple(x.shape)} {x.dtype}"
    if isinstance(x, tuple):
        return "(" + ", ".join(brief(v) for v in x) + ")"
    return repr(x)[:120]


def must_fail(what: str, fn, *args, names=(), **kwargs) -> Exception:
    res, err = attempt(fn, *args, **kwargs)
    if err is None:
        raise Failure(f"{what}: an invalid input was accepted (returned {brief(res)})")
    if names and not any(n in str(err) for n in names):
        raise Failure(f"{what}: the error names none of {list(names)}: {type(err).__name__}: {err}")
    return err


def must_pass(what: str, fn, *args, **kwargs):
    res, err = attempt(fn, *args, **kwargs)
    if err is not None:
        raise Failure(f"{what}: a valid input was refused: {type(err).__name__}: {err}")
    return res


def expect(what: str, ok: bool, fn, *args, names=(), **kwargs):
    """must_pass when ``ok`` else must_fail; returns (result or None)."""
    if ok:
        return must_pass(what, fn, *args, **kwargs)
    must_fail(what, fn, *args, names=names, **kwargs)
    return None


def close(what: str, got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> None:
    got = got.detach().to(F64).cpu()
    want = want.detach().to(F64).cpu()
    if got.shape != want.shape:
        raise Failure(f"{what}: shape {tuple(got.shape)}, expected {tuple(want.shape)}")
    if not torch.allclose(got, want, rtol=rtol, atol=atol, equal_nan=True):
        diff = (got - want).abs().nan_to_num(nan=float("inf"))
        at = np.unravel_index(int(diff.argmax()), tuple(got.shape)) if diff.numel() else ()
        raise Failure(
            f"{what}: differs from the oracle by {float(diff.max()):.3g} at "
            f"{tuple(int(i) for i in at)} (got {float(got[at])}, expected "
            f"{float(want[at])})"
        )


def tol(dtype) -> tuple[float, float]:
    return (1e-4, 1e-4) if dtype == F32 else (1e-9, 1e-9)


def cpu_backends(op: str, small: bool) -> list[str]:
    """The CPU backends to compare: torch, numba, and triton (interpreted) on small inputs."""
    names = available_backends("cpu", op=op)
    return [b for b in names if b != "triton" or small]


# ====================================================================== independent oracles


def coo_sum(src, dst, w, rel=None) -> dict:
    """{(row, col, rel): summed weight} of an edge list (Python ints, float64 sums)."""
    out: dict = {}
    src, dst, w = (np.asarray(a) for a in (src, dst, w))
    r = np.zeros(len(src), dtype=np.int64) if rel is None else np.asarray(rel)
    for a, b, c, v in zip(src.tolist(), dst.tolist(), r.tolist(), w.tolist()):
        out[(a, b, c)] = out.get((a, b, c), 0.0) + float(v)
    return out


def graph_coo(g: sk.CSRGraph, sorted_rows: bool = True) -> dict:
    """The graph's edges, after checking the CSR invariants independently (NumPy)."""
    indptr = g.indptr.cpu().numpy()
    indices = g.indices.cpu().numpy().astype(np.int64)
    values = g.values.detach().cpu().to(F64).numpy()
    n_rows, n_cols = g.shape
    if g.indptr.dtype != torch.int64 or g.indices.dtype not in (torch.int32, torch.int64):
        raise Failure(f"graph arrays have dtypes {g.indptr.dtype}, {g.indices.dtype}")
    if g.values.dtype not in (F32, F64):
        raise Failure(f"graph values have dtype {g.values.dtype}")
    if not (g.indptr.is_contiguous() and g.indices.is_contiguous() and g.values.is_contiguous()):
        raise Failure("graph arrays are not contiguous")
    if (
        len(indptr) != n_rows + 1
        or indptr[0] != 0
        or (np.diff(indptr) < 0).any()
        or indptr[-1] != len(indices)
        or len(values) != len(indices)
    ):
        raise Failure(f"graph {g} breaks the indptr invariants: {indptr[:8]}...")
    if len(indices) and (indices.min() < 0 or indices.max() >= n_cols):
        raise Failure(f"graph {g} has a column outside [0, {n_cols})")
    if not np.isfinite(values).all():
        raise Failure(f"graph {g} holds non-finite values")
    rel = (
        np.zeros(len(indices), dtype=np.int64)
        if g.relation is None
        else g.relation.cpu().numpy().astype(np.int64)
    )
    if g.relation is not None and len(rel) and (rel.min() < 0 or rel.max() >= g.num_relations):
        raise Failure(f"graph {g} has a relation id outside [0, {g.num_relations})")
    rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    if sorted_rows and len(indices) > 1:
        same = rows[1:] == rows[:-1]
        key_next = indices[1:] * (g.num_relations + 1) + rel[1:]
        key_prev = indices[:-1] * (g.num_relations + 1) + rel[:-1]
        if n_cols < 2**40 and (same & (key_next <= key_prev)).any():
            raise Failure(f"graph {g}: a row is not sorted by (column, relation) or has duplicates")
    out: dict = {}
    for a, b, c, v in zip(rows.tolist(), indices.tolist(), rel.tolist(), values.tolist()):
        out[(a, b, c)] = out.get((a, b, c), 0.0) + v
    return out


def same_coo(what: str, got: dict, want: dict, rtol: float = 1e-5) -> None:
    if set(got) != set(want):
        extra = sorted(set(got) - set(want))[:3]
        missing = sorted(set(want) - set(got))[:3]
        raise Failure(f"{what}: edges differ (extra {extra}, missing {missing})")
    for key, v in want.items():
        if not math.isclose(got[key], v, rel_tol=rtol, abs_tol=rtol):
            raise Failure(f"{what}: edge {key} has value {got[key]}, expected {v}")


def dense_of(coo: dict, shape, rel_scale=None) -> torch.Tensor:
    """Dense float64 matrix (relation scales applied when given: rel_scale[r] * value)."""
    out = torch.zeros(shape, dtype=F64)
    for (a, b, c), v in coo.items():
        out[a, b] += v * (1.0 if rel_scale is None else float(rel_scale[c]))
    return out


def rand_csr_arrays(r: Rand, n_rows: int, n_cols: int, max_nnz: int = 40):
    """Raw valid CSR arrays (unsorted rows and duplicates allowed, as the constructor does)."""
    deg = [r.int(0, 4) if n_cols else 0 for _ in range(n_rows)]
    total = sum(deg)
    while total > max_nnz:
        i = deg.index(max(deg))
        deg[i] -= 1
        total -= 1
    indptr = torch.tensor([0] + list(np.cumsum(deg)), dtype=torch.int64)
    indices = r.ints(0, n_cols, total)
    values = r.floats(total)
    return indptr, indices, values


def rand_edges(r: Rand, n_rows: int, n_cols: int, n_edges: int, n_rel=None):
    if n_rows == 0 or n_cols == 0:
        n_edges = 0
    src = r.ints(0, n_rows, n_edges)
    dst = r.ints(0, n_cols, n_edges)
    w = r.floats(n_edges, dtype=F64) if r.chance(0.3) else r.floats(n_edges, dtype=F64, signed=False)
    rel = None if n_rel is None else r.ints(0, n_rel, n_edges)
    return src, dst, w, rel


def rand_graph(r: Rand, n_rows=None, n_cols=None, n_rel=None, dtype=F32, max_edges=60):
    """(graph, coo oracle) of a random valid graph built by from_edges."""
    n_rows = r.size() if n_rows is None else n_rows
    n_cols = r.size() if n_cols is None else n_cols
    src, dst, w, rel = rand_edges(r, n_rows, n_cols, r.int(0, max_edges), n_rel)
    g = sk.CSRGraph.from_edges(
        src,
        dst,
        w,
        relation=rel,
        shape=(n_rows, n_cols),
        num_relations=n_rel,
        dtype=dtype,
        index_dtype=r.choice([None, torch.int32, torch.int64]),
    )
    want = coo_sum(src, dst, w.to(dtype).to(F64), rel)
    return g, want


# ====================================================================== tensor variants


def variant(r: Rand, t: torch.Tensor, layouts=True) -> torch.Tensor:
    """The same values with other strides: a transposed copy, a strided slice, or (for a
    tensor whose rows are all equal) a zero-stride expand."""
    if not layouts or t.dim() == 0:
        return t
    k = r.int(0, 3)
    if k == 1 and t.dim() == 2:
        return t.t().contiguous().t()  # column-major
    if k == 2:
        wide = torch.stack([t, torch.zeros_like(t)], -1)
        return wide[..., 0]  # every other element
    return t


def bad_dtype(r: Rand, t: torch.Tensor) -> torch.Tensor:
    dt = r.choice(
        [torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.bool, torch.complex64, torch.uint8]
    )
    if dt.is_complex:
        return t.to(torch.complex64)
    return t.to(dt)


def poison(r: Rand, t: torch.Tensor) -> torch.Tensor:
    """A copy with one NaN or +-inf (t must be non-empty and float)."""
    t = t.detach().clone()
    flat = t.view(-1)
    flat[r.int(0, flat.numel() - 1)] = r.choice([float("nan"), float("inf"), float("-inf")])
    return t


BAD_BACKENDS = ["fortran", "", "AUTO", " torch", None, 3, "cuda"]


def backend_arg(r: Rand, op: str, small: bool):
    """(backend, ok, names): a valid name for the inputs, or one that must be refused."""
    if r.chance(0.85):
        return r.choice(["auto"] + cpu_backends(op, small)), True, ()
    b = r.choice(BAD_BACKENDS)
    if op == "refine" and r.chance(0.3):
        b = "triton"  # not implemented for refine
    return b, False, ("backend", "cuda", "triton")


# ====================================================================== families: graphs


GRAPH_NAMES = (
    "indptr",
    "indices",
    "values",
    "shape",
    "relation",
    "num_relations",
    "relation_names",
    "relation_weight",
    "device",
    "meta",
    "n_cols",
    "n_rows",
)


def _ctor_oracle(indptr, indices, values, shape, relation, num_relations, names, weight):
    """None when the constructor's arguments are valid, else a reason (NumPy-free rules of the
    documented contract, on the tensors the case built)."""
    ints = (torch.int32, torch.int64)
    for nm, t in (("indptr", indptr), ("indices", indices)):
        if t.dtype not in ints or t.dim() != 1 or t.device.type != "cpu":
            return f"{nm} dtype/rank/device"
    if values is not None and (
        values.dtype not in (F32, F64) or values.dim() != 1 or values.device.type != "cpu"
    ):
        return "values dtype/rank/device"
    nnz = indices.numel()
    if shape is None:
        if indptr.numel() == 0:
            return "empty indptr"
        n_rows = indptr.numel() - 1
        if nnz and int(indices.min()) < 0:
            return "negative index"
        n_cols = int(indices.max()) + 1 if nnz else 0
        if n_cols - 1 >= max(_graph._INFER_MIN, _graph._INFER_FACTOR * nnz):
            return "n_cols not inferable"
    else:
        if (
            isinstance(shape, (str, bytes))
            or len(shape) != 2
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in shape)
        ):
            return "shape type"
        n_rows, n_cols = int(shape[0]), int(shape[1])
        if n_rows < 0 or n_cols < 0:
            return "negative shape"
    if indptr.numel() != n_rows + 1 or int(indptr[0]) != 0:
        return "indptr length / start"
    if n_rows and bool((indptr[1:] < indptr[:-1]).any()):
        return "indptr decreasing"
    if int(indptr[-1]) != nnz:
        return "indptr end"
    if values is not None and (values.numel() != nnz or not bool(torch.isfinite(values).all())):
        return "values length / finite"
    if nnz and (int(indices.min()) < 0 or int(indices.max()) >= n_cols):
        return "index range"
    R = 1
    if relation is not None:
        if relation.dtype not in ints or relation.dim() != 1 or relation.device.type != "cpu":
            return "relation dtype"
        if num_relations is None:
            R = int(relation.max()) + 1 if relation.numel() else 1
        else:
            R = num_relations
        if relation.numel() != nnz:
            return "relation length"
    elif num_relations is not None:
        R = num_relations
    if isinstance(R, bool) or not isinstance(R, int) or not 1 <= R <= I32:
        return "num_relations"
    if relation is not None and relation.numel() and (int(relation.min()) < 0 or int(relation.max()) >= R):
        return "relation range"
    if names is not None and (isinstance(names, str) or len(names) != R):
        return "relation_names"
    if weight is not None:
        if relation is None:
            return "relation_weight without relation"
        if (
            weight.dtype not in (F32, F64)
            or weight.dim() != 1
            or weight.numel() != R
            or not bool(torch.isfinite(weight).all())
            or weight.device.type != "cpu"
        ):
            return "relation_weight"
    return None


def fam_ctor(r: Rand) -> None:
    """CSRGraph(indptr, indices, values, ...) with corrupted arrays; validate=True or lazy."""
    n_rows, n_cols = r.size(), r.size()
    indptr, indices, values = rand_csr_arrays(r, n_rows, n_cols)
    nnz = indices.numel()
    shape = (n_rows, n_cols) if r.chance(0.8) else None
    relation = num_relations = names = weight = None
    if r.chance(0.35):
        R = r.int(1, 4)
        relation = r.ints(0, R, nnz).to(r.choice([torch.int32, torch.int64]))
        num_relations = R if r.chance(0.7) else None
        if r.chance(0.3):
            names = [f"r{i}" for i in range(R)]
        if r.chance(0.3):
            weight = r.floats(R)
    if r.chance(0.2):
        values = None

    def plain(t, floating=False):
        """A 1-D CPU tensor of the dtype the corruption below writes into."""
        if t is None or t.dim() != 1 or t.device.type != "cpu":
            return False
        return t.dtype in ((F32, F64) if floating else (torch.int32, torch.int64))

    for _ in range(r.choice([0, 1, 1, 1, 2])):
        c = r.int(0, 24)
        if c == 0 and plain(indptr):
            indptr = indptr.to(torch.int64).clone()
            indptr[-1] += r.choice([1, -1, 500, 2**40, -(2**40)])
        elif c == 1 and plain(indptr):
            indptr = indptr.to(torch.int64).clone()
            indptr[0] = r.choice([1, -1, 5, 2**40])
        elif c == 2 and n_rows >= 2 and plain(indptr) and indptr.numel() == n_rows + 1:
            indptr = indptr.to(torch.int64).clone()
            i = r.int(1, n_rows - 1)
            indptr[i] = indptr[i + 1] + r.int(1, 600)
        elif c == 3:
            indptr = indptr[:-1] if r.chance(0.5) else torch.cat([indptr, indptr[-1:]])
        elif c == 4 and nnz and plain(indices) and indices.numel() == nnz:
            indices = indices.to(torch.int64).clone()
            indices[r.int(0, nnz - 1)] = r.choice([n_cols, n_cols + 7, -1, 2**31, 2**40, -(2**40), 2**62])
        elif c == 5 and nnz and (values is None or plain(values, True)):
            values = (r.floats(nnz) if values is None else values).clone()
            if values.numel():
                values[r.int(0, values.numel() - 1)] = r.choice([float("nan"), float("inf"), -float("inf")])
        elif c == 6 and (values is None or values.dim() == 1):
            values = r.floats(nnz) if values is None else values
            values = values[:-1] if nnz and r.chance(0.5) else torch.cat([values, values[:1] + 1])
        elif c == 7:
            values = bad_dtype(r, r.floats(nnz) if values is None else values)
        elif c == 8:
            indptr = r.choice(
                [
                    indptr.to(F32),
                    indptr.to(torch.int16),
                    indptr.to(torch.bool),
                    indptr.to(torch.int32),
                    indptr[None, :],
                ]
            )
        elif c == 9:
            indices = r.choice(
                [
                    indices.to(F32),
                    indices.to(torch.int16),
                    indices.to(torch.int32),
                    indices.to(torch.int32),
                    indices[None, :],
                ]
            )
        elif c == 10:
            shape = r.choice(
                [
                    (-1, n_cols),
                    (n_rows, -3),
                    (float(n_rows), n_cols),
                    (True, n_cols),
                    (n_rows, n_cols, 1),
                    (n_rows,),
                    "ab",
                    (n_rows, 2**62),
                    (n_rows + 1, n_cols),
                    (n_rows, max(n_cols - 1, 0)),
                    None,
                    (np.int64(n_rows), np.int32(n_cols)),
                ]
            )
        elif c == 11 and plain(relation):
            relation = relation.clone()
            if relation.numel():
                relation[r.int(0, relation.numel() - 1)] = r.choice([-1, 4, 7, 2**31 - 1])
                if relation.dtype == torch.int64 and r.chance(0.5):
                    relation[r.int(0, relation.numel() - 1)] = r.choice([2**32, 2**40, -(2**32)])
        elif c == 12 and relation is not None:
            relation = relation[:-1] if nnz and r.chance(0.5) else torch.cat([relation, relation[:1]])
        elif c == 13:
            num_relations = r.choice([0, -1, 2**31, 2**40, 2.0, True, 3, None])
        elif c == 14:
            names = r.choice([["a"], ["a", "b", "c", "d", "e"], "ab", ("x",) * 4, None])
        elif c == 15:
            weight = r.choice(
                [
                    r.floats(2),
                    r.floats(4),
                    torch.ones(3, dtype=torch.int64),
                    torch.full((2,), float("nan")),
                    r.floats(2, 2),
                    None,
                ]
            )
        elif c == 16:
            which = r.int(0, 2)
            if which == 0 and values is not None:
                values = values.to("meta")
            elif which == 1:
                indices = indices.to("meta")
            else:
                indptr, indices = indptr.to("meta"), indices.to("meta")
        elif c == 17 and indices.dim() == 1:  # non-contiguous, valid
            indices = torch.stack([indices, indices], 1)[:, 0]
            if values is not None and values.dim() == 1:
                values = torch.stack([values, values], 1)[:, 0]
        elif c == 18 and nnz and values is not None and values.numel() == nnz:
            values = torch.full((1,), 0.5).expand(nnz)  # zero-stride values, valid
        elif c == 19 and plain(indptr) and indptr.numel() == n_rows + 1:
            indptr = indptr.to(torch.int64).clone()
            if n_rows:
                indptr[1:] = indptr[-1]  # everything in row 0: still valid
        elif c == 20 and relation is None and nnz:
            relation = r.ints(0, 2, nnz)
        elif c == 21:
            shape = None
    lazy = r.chance(0.3)
    reason = _ctor_oracle(indptr, indices, values, shape, relation, num_relations, names, weight)
    what = f"CSRGraph(validate={not lazy}) [{reason or 'valid'}]"
    g, err = attempt(
        sk.CSRGraph, indptr, indices, values, shape, relation, num_relations, names, weight, validate=not lazy
    )
    if reason is None:
        if err is not None:
            raise Failure(f"{what}: a valid input was refused: {type(err).__name__}: {err}")
    elif err is not None:
        if not any(n in str(err) for n in GRAPH_NAMES):
            raise Failure(f"{what}: the error names no argument: {err}")
        return
    elif not lazy:
        raise Failure(f"{what}: an invalid input was accepted")
    # The graph exists; a lazy invalid one must be refused by whatever reads it first.
    consumer = r.int(0, 7)
    small = (
        isinstance(g.shape, tuple)
        and len(g.shape) == 2
        and all(isinstance(v, int) and 0 <= v < 10**5 for v in g.shape)
    )
    if not small:
        consumer = r.choice([0, 4, 7])  # the others allocate O(shape) or take (shape) inputs
    x = r.floats(g.shape[1] if small else 1, 2)

    def consume():
        if consumer == 0:
            return g.ensure_valid()
        if consumer == 1:
            return sk.propagate(g, x, backend=r.choice(cpu_backends("propagate", True)))
        if consumer == 2:
            return g.transpose()
        if consumer == 3:
            return g.normalize(r.choice(["sym", "row"]))
        if consumer == 4:
            return g.degrees()
        if consumer == 5:
            return g.to_dense()
        if consumer == 6:
            n, m = g.shape
            return sk.topk_scores(
                r.floats(n, 3), r.floats(m, 3), 2, exclude=g, backend=r.choice(cpu_backends("topk", True))
            )
        return g.to(dtype=F64)

    if reason is not None:
        must_fail(f"{what} then consumer {consumer}", consume, names=GRAPH_NAMES)
        return
    must_pass(f"{what} then consumer {consumer}", consume)
    # Valid: the stored matrix is the input matrix.
    want = coo_sum(
        torch.repeat_interleave(torch.arange(g.shape[0]), indptr[1:] - indptr[:-1]),
        indices.to(torch.int64),
        torch.ones(indices.numel()) if values is None else values.to(F64),
        None if relation is None else relation.to(torch.int64),
    )
    same_coo(what, graph_coo(g, sorted_rows=False), want)


def _edges_oracle(src, dst, weight, relation, shape, num_relations, names, rweight, index_dtype, dtype):
    """(reason or None, may_fail_alloc) for from_edges' arguments."""
    if dtype not in (F32, F64):
        return "dtype", False
    for nm, t in (("src", src), ("dst", dst), ("relation", relation)):
        if t is None:
            continue
        if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool or t.dim() != 1:
            return f"{nm} dtype", False
    if src.numel() != dst.numel():
        return "length", False
    E = src.numel()
    lim = max(_graph._INFER_MIN, _graph._INFER_FACTOR * E)
    if shape is None:
        dims = []
        for t in (src, dst):
            if E and int(t.min()) < 0:
                return "negative id", False
            hi = int(t.max()) if E else -1
            if hi >= lim:
                return "not inferable", False
            dims.append(hi + 1)
        n_rows, n_cols = dims
    else:
        if (
            isinstance(shape, (str, bytes))
            or len(shape) != 2
            or any(isinstance(s, bool) or not isinstance(s, (int, np.integer)) for s in shape)
        ):
            return "shape", False
        n_rows, n_cols = int(shape[0]), int(shape[1])
        if n_rows < 0 or n_cols < 0:
            return "negative shape", False
    if index_dtype not in (None, torch.int32, torch.int64):
        return "index_dtype", False
    if index_dtype == torch.int32 and n_cols > I32:
        return "index_dtype range", False
    for t, n in ((src, n_rows), (dst, n_cols)):
        if E and (int(t.min()) < 0 or int(t.max()) >= n):
            return "id range", False
    if weight is not None:
        if weight.is_complex() or weight.dim() != 1 or weight.numel() != E:
            return "weight", False
        if not bool(torch.isfinite(weight.to(dtype)).all()):
            return "weight finite", False
    R = num_relations
    if relation is not None:
        if relation.numel() != E:
            return "relation length", False
        if R is None:
            R = int(relation.max()) + 1 if E else 1
    if R is not None:
        if isinstance(R, bool) or not isinstance(R, int) or not 1 <= R <= I32:
            return "num_relations", False
        if relation is not None and E and (int(relation.min()) < 0 or int(relation.max()) >= R):
            return "relation range", False
    R1 = 1 if R is None else R
    if names is not None and (isinstance(names, str) or len(names) != R1):
        return "relation_names", False
    if rweight is not None:
        if (
            relation is None
            or rweight.dtype not in (F32, F64)
            or rweight.numel() != R1
            or rweight.dim() != 1
            or not bool(torch.isfinite(rweight).all())
        ):
            return "relation_weight", False
    return None, n_rows > 2**24


def fam_from_edges(r: Rand) -> None:
    n_rows, n_cols = r.size(), r.size()
    E = r.int(0, 30)
    R = r.int(1, 4) if r.chance(0.3) else None
    src, dst, w, rel = rand_edges(r, n_rows, n_cols, E, R)
    E = src.numel()
    shape = (n_rows, n_cols) if r.chance(0.75) else None
    weight = w if r.chance(0.7) else None
    num_relations = R if (R is not None and r.chance(0.7)) else None
    names = [f"n{i}" for i in range(R)] if R is not None and r.chance(0.3) else None
    rweight = r.floats(R) if R is not None and r.chance(0.3) else None
    index_dtype = r.choice([None, None, torch.int32, torch.int64])
    dtype = r.choice([F32, F64])
    for _ in range(r.choice([0, 1, 1, 2])):
        c = r.int(0, 17)
        if c == 0 and src.numel() and src.dtype == torch.int64 and src.dim() == 1:
            src = src.clone()
            src[r.int(0, src.numel() - 1)] = r.choice([-1, n_rows, 2**31, 2**40, 2**62, 2**63 - 1])
        elif c == 1 and dst.numel() and dst.dtype == torch.int64 and dst.dim() == 1:
            dst = dst.clone()
            dst[r.int(0, dst.numel() - 1)] = r.choice([-1, n_cols, 2**31, 2**40, 2**62, -(2**62)])
        elif c == 2:
            dst = dst[:-1] if E else torch.zeros(1, dtype=torch.int64)
        elif c == 3:
            dt = r.choice([torch.int8, torch.int16, torch.int32, torch.uint8, F32, torch.bool, torch.float64])
            if dt in (torch.int8, torch.uint8) and E and max(n_rows, n_cols) > 100:
                dt = torch.int32
            src, dst = src.to(dt), dst.to(dt)
        elif c == 4:
            shape = r.choice(
                [
                    (-1, n_cols),
                    (n_rows, -5),
                    (2**10, 2**62),
                    (2**62, 2**62),
                    (2**40, 2),
                    (n_rows + 3, 2**40),
                    (float(n_rows), n_cols),
                    (n_rows, n_cols, 1),
                    (max(n_rows - 1, 0), n_cols),
                    None,
                    (np.int64(n_rows), n_cols),
                    (2**20, 2**20),
                ]
            )
        elif c == 5:
            weight = r.choice(
                [
                    w[:-1] if E else torch.ones(1),
                    bad_dtype(r, w),
                    w[:, None],
                    poison(r, w) if E else w,
                    torch.full((E,), 1e300, dtype=F64),
                ]
            )
        elif c == 6 and rel is not None:
            rel = rel.clone()
            if rel.numel():
                rel[r.int(0, rel.numel() - 1)] = r.choice([-1, R or 1, 2**31, 2**32, 2**40])
        elif c == 7:
            num_relations = r.choice([0, -2, 2**31, 2**30, 2.5, True, 1, 7])
        elif c == 8:
            names = r.choice([["a"], "abc", ["a", "b", "c", "d", "e", "f"], None])
        elif c == 9:
            rweight = r.choice(
                [
                    r.floats(1),
                    r.floats(9),
                    torch.ones(R or 1, dtype=torch.int64),
                    torch.full((R or 1,), float("nan")),
                    None,
                ]
            )
        elif c == 10:
            index_dtype = r.choice([torch.float32, torch.int16, "int32"])
        elif c == 11:
            dtype = r.choice([torch.float16, torch.int64, torch.bfloat16, "float32"])
        elif c == 12:
            src = src.to("meta")
        elif c == 13 and E:  # huge ids with a huge explicit shape: valid
            shape = (2**40, 2**62)
            src, dst = src * 2**30, dst * 2**55
        elif c == 14 and R is None and E:
            rel, R = r.ints(0, 2**30, E), None
            num_relations = 2**30
        elif c == 15:
            src, dst = variant(r, src), variant(r, dst)
    if src.device.type == "meta":
        must_fail(
            "from_edges(src on meta)",
            sk.CSRGraph.from_edges,
            src,
            dst,
            weight,
            rel,
            shape,
            num_relations,
            names,
            rweight,
            index_dtype,
            dtype,
            names=GRAPH_NAMES + ("src", "dst", "weight", "dtype", "index_dtype"),
        )
        return
    reason, may_alloc = _edges_oracle(
        src, dst, weight, rel, shape, num_relations, names, rweight, index_dtype, dtype
    )
    what = f"from_edges [{reason or 'valid'}] shape={shape}"
    g, err = attempt(
        sk.CSRGraph.from_edges,
        src,
        dst,
        weight,
        relation=rel,
        shape=shape,
        num_relations=num_relations,
        relation_names=names,
        relation_weight=rweight,
        index_dtype=index_dtype,
        dtype=dtype,
    )
    if reason is not None:
        if err is None:
            raise Failure(f"{what}: an invalid input was accepted ({g})")
        if not any(n in str(err) for n in GRAPH_NAMES + ("src", "dst", "weight", "dtype", "index_dtype")):
            raise Failure(f"{what}: the error names no argument: {err}")
        return
    if err is not None:
        if may_alloc and "cannot allocate" in str(err):
            return  # an explicit shape whose indptr does not fit under the fuzz memory cap
        raise Failure(f"{what}: a valid input was refused: {type(err).__name__}: {err}")
    want = coo_sum(
        src.to(torch.int64),
        dst.to(torch.int64),
        (torch.ones(E) if weight is None else weight.to(dtype)).to(F64),
        None if rel is None else rel.to(torch.int64),
    )
    same_coo(what, graph_coo(g), want, rtol=1e-5 if dtype == F32 else 1e-9)
    if g.values.dtype != dtype:
        raise Failure(f"{what}: values have dtype {g.values.dtype}, asked for {dtype}")


def _scipy_matrix(r: Rand, n_rows: int, n_cols: int):
    fmt = r.choice(["csr", "csc", "coo", "bsr", "lil", "dok", "dia", "csr", "csc", "coo"])
    dense = np.zeros((n_rows, n_cols))
    nnz = r.int(0, 20) if n_rows and n_cols else 0
    for _ in range(nnz):
        dense[r.int(0, n_rows - 1), r.int(0, n_cols - 1)] = r.py.uniform(-2, 2) or 1.0
    dt = r.choice([np.float64, np.float32, np.int64, np.bool_, np.float64])
    m = sp.csr_matrix(dense.astype(dt)) if dt != np.bool_ else sp.csr_matrix(dense != 0)
    if r.chance(0.3):
        m = sp.csr_array(m)
    if fmt == "bsr":
        bs = r.choice(
            [(1, 1)] + [(a, b) for a in (1, 2) for b in (1, 2) if n_rows % a == 0 and n_cols % b == 0]
        )
        m = m.tobsr(blocksize=bs)
    else:
        m = m.asformat(fmt)
    return m, dense.astype(dt).astype(np.float64) if dt != np.bool_ else (dense != 0) * 1.0


def fam_from_scipy(r: Rand) -> None:
    """from_scipy on every format, with the compressed arrays corrupted."""
    n_rows, n_cols = r.size(), r.size()
    m, dense = _scipy_matrix(r, n_rows, n_cols)
    fmt = m.format
    corrupt = None
    if r.chance(0.6) and fmt in ("csr", "csc", "bsr"):
        c = r.int(0, 9)
        ip = m.indptr
        if c == 0:
            ip[-1] += r.choice([500, 1, 2**20])
            corrupt = "indptr[-1]"
        elif c == 1 and len(ip) >= 3:
            i = r.int(1, len(ip) - 2)
            ip[i] = ip[i + 1] + r.int(1, 50)
            corrupt = "non-monotone"
        elif c == 2:
            m.indptr = ip[:-1] if r.chance(0.5) else np.concatenate([ip, ip[-1:]])
            corrupt = "indptr length"
        elif c == 3 and len(m.indices):
            m.indices[r.int(0, len(m.indices) - 1)] = r.choice([-1, 10**6, 2**31 - 1])
            corrupt = "index"
        elif c == 4:
            m.data = m.data[:-1] if len(m.data) else np.ones(1)
            corrupt = "data length"
        elif c == 5 and len(m.data) and m.data.dtype.kind == "f":
            m.data.reshape(-1)[0] = r.choice([np.nan, np.inf])
            corrupt = "data finite"
        elif c == 6:
            m.indptr = m.indptr.astype(np.float64)
            corrupt = "indptr dtype"
        elif c == 7:
            ip[0] = r.choice([1, -3])
            corrupt = "indptr[0]"
        elif c == 8:
            m.data = m.data.astype(np.complex128)
            corrupt = "complex"
        elif c == 9:
            m.indices = m.indices.astype(np.uint64)
            corrupt = None  # valid ids in another integer dtype
    elif r.chance(0.4) and fmt == "coo":
        c = r.int(0, 3)
        if c == 0 and m.nnz:
            m.row[r.int(0, m.nnz - 1)] = r.choice([-1, n_rows, 2**31 - 1])
            corrupt = "row"
        elif c == 1 and m.nnz:
            m.col[r.int(0, m.nnz - 1)] = r.choice([-5, n_cols + 2])
            corrupt = "col"
        elif c == 2:
            m.data = np.concatenate([m.data, m.data[:1] if m.nnz else np.ones(1)])
            corrupt = "data length"
        elif c == 3 and m.nnz:  # duplicates: valid, summed
            m = sp.coo_matrix(
                (
                    np.concatenate([m.data, m.data]),
                    (np.concatenate([m.row, m.row]), np.concatenate([m.col, m.col])),
                ),
                shape=m.shape,
            )
            dense = dense * 2
    elif r.chance(0.1):
        try:
            m._shape = r.choice([(-1, n_cols), (n_rows, -2)])
            corrupt = "shape"
        except Exception:  # noqa: BLE001 - a scipy version without a settable shape
            pass
    elif r.chance(0.1) and fmt == "csr" and m.nnz > 1:
        # unsorted indices and duplicates: valid (scipy's has_canonical_format is False)
        m.indices[:] = m.indices[::-1]
        dense = None  # the matrix changed: the oracle rebuilds it from the arrays
    dtype = r.choice([F32, F64])
    what = f"from_scipy({fmt}, corrupt={corrupt})"
    if corrupt is not None:
        must_fail(
            what,
            sk.CSRGraph.from_scipy,
            m,
            dtype=dtype,
            names=("m.", "m ", "shape", "indptr", "indices", "data", "row", "col", "src", "dst", "weight"),
        )
        return
    g = must_pass(what, sk.CSRGraph.from_scipy, m, dtype=dtype)
    if dense is None:
        ip, ix = m.indptr.astype(np.int64), m.indices.astype(np.int64)
        dense = np.zeros((n_rows, n_cols))
        np.add.at(dense, (np.repeat(np.arange(n_rows), np.diff(ip)), ix), m.data)
    graph_coo(g)
    close(what, g.to_dense(), torch.from_numpy(dense).to(dtype), 1e-6, 1e-6)


def fam_from_other(r: Rand) -> None:
    """from_edge_index and from_torch_sparse."""
    n = r.size()
    E = r.int(0, 20) if n else 0
    src, dst = r.ints(0, n, E), r.ints(0, n, E)
    w = r.floats(E)
    if r.chance(0.5):
        ei = torch.stack([src, dst])
        num_nodes = n if r.chance(0.6) else None
        ok = True
        c = r.int(0, 6)
        if c == 0 and E:
            ei = ei.clone()
            ei[r.int(0, 1), r.int(0, E - 1)] = r.choice([-1, n, 2**40])
            ok = num_nodes is None and int(ei.min()) >= 0 and int(ei.max()) < 2**22
        elif c == 1:
            ei = r.choice([ei.t(), ei[None], ei.to(F32), ei[0]])
            ok = ei.dim() == 2 and ei.shape[0] == 2 and not ei.dtype.is_floating_point
        elif c == 2:
            num_nodes = r.choice([-1, 2.0, True, 2**40])
            ok = False
        weight = w if r.chance(0.6) else None
        if c == 3:
            weight = r.choice([w[:-1] if E else torch.ones(1), poison(r, w) if E else torch.ones(1)])
            ok = False
        if ok:
            g = must_pass("from_edge_index", sk.CSRGraph.from_edge_index, ei, weight, num_nodes=num_nodes)
            want = coo_sum(ei[1], ei[0], torch.ones(E) if weight is None else weight)
            same_coo("from_edge_index", graph_coo(g), want)
        else:
            must_fail(
                "from_edge_index",
                sk.CSRGraph.from_edge_index,
                ei,
                weight,
                num_nodes=num_nodes,
                names=GRAPH_NAMES + ("edge_index", "num_nodes", "weight", "src", "dst"),
            )
        return
    t = torch.sparse_coo_tensor(torch.stack([src, dst]), w, (n, n), check_invariants=False)
    ok = True
    c = r.int(0, 5)
    if c == 0 and E:
        idx = torch.stack([src, dst]).clone()
        idx[r.int(0, 1), r.int(0, E - 1)] = r.choice([-1, n, n + 10])
        t = torch.sparse_coo_tensor(idx, w, (n, n), check_invariants=False)
        ok = False
    elif c == 1:
        t = t.coalesce().to_sparse_csr()
        if r.chance(0.5) and n >= 1:
            crow = t.crow_indices().clone()
            crow[-1] += r.choice([1, 500])
            t = torch.sparse_csr_tensor(crow, t.col_indices(), t.values(), (n, n), check_invariants=False)
            ok = False
    elif c == 2:
        t = r.choice([w, torch.zeros(2, 2).to_sparse_csc() if n else w])
        ok = False
    if ok:
        g = must_pass("from_torch_sparse", sk.CSRGraph.from_torch_sparse, t)
        same_coo("from_torch_sparse", graph_coo(g), coo_sum(src, dst, w))
    else:
        must_fail(
            "from_torch_sparse", sk.CSRGraph.from_torch_sparse, t, names=GRAPH_NAMES + ("t", "src", "dst")
        )


def fam_graph_methods(r: Rand) -> None:
    """transpose / normalize / symmetrize / mark_symmetric / with_values / to / conversions,
    on valid graphs and on graphs corrupted in place after construction."""
    n = r.size()
    square = r.chance(0.6)
    R = r.int(1, 3) if r.chance(0.3) else None
    g, coo = rand_graph(r, n, n if square else r.size(), R, dtype=r.choice([F32, F64]))
    shape = g.shape
    if r.chance(0.25):  # corrupt after construction: every method must notice
        c = r.int(0, 6)
        if c == 0 and g.nnz:
            g.indices[r.int(0, g.nnz - 1)] = r.choice([shape[1], -1, 2**30])
        elif c == 1 and g.nnz:
            g.values[r.int(0, g.nnz - 1)] = float("nan")
        elif c == 2 and shape[0] >= 1:
            g.indptr[r.int(0, shape[0])] += r.choice([1, 500, -1])
            if (
                int(g.indptr[-1]) == g.nnz
                and bool((g.indptr[1:] >= g.indptr[:-1]).all())
                and int(g.indptr[0]) == 0
            ):
                return  # the change happened to keep it valid
        elif c == 3:
            g.shape = r.choice([(shape[0] + 1, shape[1]), (-1, shape[1]), (shape[0],)])
        elif c == 4:
            g.indices = g.indices[:-1] if g.nnz else torch.zeros(1, dtype=g.indices.dtype)
        elif c == 5 and g.relation is not None and g.nnz:
            g.relation[0] = g.num_relations
        elif c == 6:
            g.values = g.values.to(torch.float16)
        else:
            return
        method = r.choice(
            [
                "transpose",
                "normalize",
                "symmetrize",
                "to_dense",
                "with_values",
                "to",
                "degrees",
                "row_ids",
                "propagate",
                "to_scipy",
                "mark_symmetric",
            ]
        )

        def call():
            if method == "with_values":
                return g.with_values(torch.ones(max(g.nnz, 0)))
            if method == "to":
                return g.to(dtype=F64)
            if method == "propagate":
                return sk.propagate(g, r.floats(shape[1], 2))
            return getattr(g, method)()

        must_fail(f"corrupted graph .{method}", call, names=GRAPH_NAMES)
        return
    dense = dense_of(coo, shape)
    rt, at = tol(g.dtype)
    m = r.int(0, 8)
    if m == 0:
        t = must_pass("transpose", g.transpose)
        close("transpose", t.to_dense(), dense.t(), rt, at)
        if R is not None:
            close(
                "transpose relations", t.values[t.edge_perm.argsort()] if t.nnz else t.values, g.values, 0, 0
            )
    elif m == 1:
        kind = r.choice(["sym", "row", "none", "Sym", 3, None])
        eps = r.choice([0.0, 0.0, 1e-3, -1.0, float("nan"), float("inf"), True, "0"])
        ok = kind in ("sym", "row", "none") and isinstance(eps, float) and eps >= 0 and math.isfinite(eps)
        h = expect(f"normalize({kind!r}, eps={eps!r})", ok, g.normalize, kind, eps, names=("kind", "eps"))
        if h is not None and kind != "none":
            rows = dense.sum(1)
            if kind == "row":
                inv = torch.where(rows.abs() > eps, 1 / rows, torch.zeros_like(rows))
                want = dense * inv[:, None]
            else:
                cols = dense.sum(0)
                ir = torch.where(rows > eps, rows.clamp_min(1e-30).rsqrt(), torch.zeros_like(rows))
                ic = torch.where(cols > eps, cols.clamp_min(1e-30).rsqrt(), torch.zeros_like(cols))
                want = dense * ir[:, None] * ic[None, :]
            # Near-zero sums (signed weights cancelling) make the oracle ill-conditioned.
            sums = torch.cat([rows, dense.sum(0)]).abs()
            if not bool(((sums > 0) & (sums < 1e-3)).any()):
                close(f"normalize({kind})", h.to_dense(), want, 1e-3, 1e-3)
    elif m == 2:
        ok = shape[0] == shape[1]
        h = expect("symmetrize", ok, g.symmetrize, names=("square",))
        if h is not None:
            want = dense_of(coo_sum(*_sym_edges(coo)), shape)
            close("symmetrize", h.to_dense(), want, rt, at)
    elif m == 3:
        if shape[0] != shape[1] or g.relation is not None:
            must_fail("mark_symmetric", g.mark_symmetric, names=("square", "relation"))
        else:
            # Checked: structure and values (to rounding), not only the degrees;
            # check=False keeps the degree check alone.
            in_deg = torch.bincount(g.indices.long(), minlength=shape[1])
            deg_ok = torch.equal(in_deg, g.degrees())
            dd = dense.to(F64)
            ok = deg_ok and bool(torch.allclose(dd, dd.T, rtol=1e-5, atol=0))
            if r.chance(0.3):
                expect(
                    "mark_symmetric(check=False)",
                    deg_ok,
                    lambda: g.mark_symmetric(check=False),
                    names=("symmetric",),
                )
            else:
                expect("mark_symmetric", ok, g.mark_symmetric, names=("symmetric",))
    elif m == 4:
        c = r.int(0, 5)
        vals = r.floats(g.nnz, dtype=g.dtype)
        ok = True
        if c == 0:
            vals, ok = r.floats(g.nnz + 1), False
        elif c == 1 and g.nnz:
            vals, ok = poison(r, vals), False
        elif c == 2:
            vals, ok = vals.to(torch.int64), False
        elif c == 3:
            vals, ok = vals[None], False
        elif c == 4:
            vals = variant(r, vals)
        h = expect("with_values", ok, g.with_values, vals, names=("values",))
        if h is not None:
            close("with_values", h.values, vals, 0, 0)
    elif m == 5:
        dev = r.choice(["cpu", None, "meta", "cuda", "gpu", 7])
        dt = r.choice([None, F32, F64, torch.float16, torch.int64])
        ok = dev in ("cpu", None) and dt in (None, F32, F64)
        h = expect(f"to({dev!r}, {dt})", ok, g.to, dev, dt, names=("device", "dtype", "meta"))
        if h is not None:
            close("to", h.to_dense(), dense, *tol(h.dtype if h.dtype == F32 else g.dtype))
    elif m == 6:
        s = must_pass("to_scipy", g.to_scipy)
        close("to_scipy", torch.from_numpy(s.toarray()), dense, rt, at)
        back = must_pass("from_scipy(to_scipy)", sk.CSRGraph.from_scipy, s, dtype=g.dtype)
        close("from_scipy(to_scipy)", back.to_dense(), dense, rt, at)
    elif m == 7:
        t = must_pass("to_torch_sparse_csr", g.to_torch_sparse_csr)
        close("to_torch_sparse_csr", t.to_dense(), dense, rt, at)
    else:
        graphs = {"a": g}
        if r.chance(0.5):
            g2, coo2 = rand_graph(r, *shape)
            graphs["b"] = g2
        wts = r.choice(
            [
                None,
                [2.0] * len(graphs),
                {"a": 0.5},
                {"zz": 1.0},
                [float("nan")] * len(graphs),
                [1.0] * (len(graphs) + 1),
                "ab",
                ["x"] * len(graphs),
            ]
        )
        ok = (
            wts is None
            or (isinstance(wts, dict) and set(wts) <= set(graphs))
            or (
                isinstance(wts, list)
                and len(wts) == len(graphs)
                and all(isinstance(v, float) and math.isfinite(v) for v in wts)
            )
        )
        bad_graphs = r.chance(0.1)
        if bad_graphs:
            graphs = r.choice(
                [
                    {},
                    [g],
                    {"a": g, "b": g.to_dense()},
                    {"a": g, "b": rand_graph(r, shape[0] + 1, shape[1])[0]},
                ]
            )
            ok = False
        h = expect("stack_relations", ok, sk.stack_relations, graphs, wts, names=("graphs", "weights"))
        if h is not None:
            total = h.to_dense()
            if h.relation_weight is None or h.relation_weight.numel() != h.num_relations:
                raise Failure("stack_relations: relation_weight does not match num_relations")
            want = torch.zeros(shape, dtype=F64)
            for gi in graphs.values():
                want += gi.to_dense().to(F64)
            close("stack_relations (unweighted sum)", total, want, 1e-5, 1e-5)


def _sym_edges(coo: dict):
    src, dst, w = [], [], []
    for (a, b, _), v in coo.items():
        src += [a, b]
        dst += [b, a]
        w += [v, v]
    return src, dst, w


# ====================================================================== families: ops


def _dense_propagate(coo: dict, shape, x, emb=None, wts=None):
    """Y = sum_e v_e * w[r_e] * E[r_e] * x[c_e], float64."""
    y = torch.zeros(shape[0], x.shape[1], dtype=F64)
    x = x.detach().to(F64)
    for (a, b, c), v in coo.items():
        s = v * (1.0 if wts is None else float(wts[c]))
        row = x[b] * s
        if emb is not None:
            row = row * emb[c].detach().to(F64)
        y[a] += row
    return y


def fam_propagate(r: Rand) -> None:
    """propagate / propagate_layers with every kind of bad argument, and valid calls checked
    against a dense oracle (gradients too)."""
    R = r.int(1, 4) if r.chance(0.4) else None
    layers = r.chance(0.2)
    n = r.size()
    g, coo = rand_graph(r, n, n if layers else r.size(), R, dtype=r.choice([F32, F64]))
    n_rows, n_cols = g.shape
    d = r.choice([0, 1, 2, 3, 5, 8])
    dtype = r.choice([F32, F64])
    x = r.floats(n_cols, d, dtype=dtype)
    emb = r.floats(R, d, dtype=dtype) if R is not None and r.chance(0.5) else None
    wts = None
    if R is not None and r.chance(0.5):
        wts = r.floats(R, dtype=r.choice([F32, dtype]))
    ok, names = True, ()
    backend, b_ok, b_names = backend_arg(r, "propagate", small=g.nnz <= 300)
    if not b_ok:
        ok, names = False, b_names
    c = r.int(0, 16)
    if c == 0:
        x, ok, names = bad_dtype(r, x), False, names + ("x",)
    elif c == 1:
        x = r.choice([x[:, None], x.reshape(-1), r.floats(n_cols + 1, d)])
        ok, names = False, names + ("x",)
    elif c == 2:
        x, ok, names = x.to("meta"), False, names + ("meta", "device")
    elif c == 3 and x.numel():
        x = poison(r, x)  # allowed: NaN/inf propagate (documented)
    elif c == 4:
        x = variant(r, x)
    elif c == 5 and n_cols and d:
        x = r.floats(1, d, dtype=dtype).expand(n_cols, d)  # zero-stride rows
    elif c == 6:
        if R is None:
            emb, ok, names = r.floats(1, d, dtype=dtype), False, names + ("relation_emb",)
        else:
            emb = r.choice(
                [
                    r.floats(R + 1, d, dtype=dtype),
                    r.floats(R, d + 1, dtype=dtype),
                    bad_dtype(r, r.floats(R, d)),
                    poison(r, r.floats(R, d, dtype=dtype)) if d else r.floats(R + 1, d),
                ]
            )
            ok, names = False, names + ("relation_emb",)
    elif c == 7:
        if R is None:
            wts, ok, names = r.floats(1), False, names + ("relation_weight",)
        else:
            wts = r.choice(
                [r.floats(R + 1), r.floats(R, 1), torch.ones(R, dtype=torch.int64), poison(r, r.floats(R))]
            )
            ok, names = False, names + ("relation_weight",)
    elif c == 8:
        g.values.requires_grad_(True)  # edge-value gradients are supported
    elif c == 9 and g.nnz:
        g.indices[r.int(0, g.nnz - 1)] = r.choice([n_cols, -1])
        ok, names = False, names + ("indices",)
    elif c == 10:
        x.requires_grad_(True)
        if emb is not None:
            emb.requires_grad_(r.chance(0.5))
        if wts is not None:
            wts.requires_grad_(r.chance(0.5))
    elif c == 11:
        ok, names = False, names + ("g ",)
    elif c == 12 and wts is not None:
        wts = wts.to("meta")
        ok, names = False, names + ("device", "meta")
    if layers:
        L = r.choice([0, 1, 2, 3, -1, True, 2.0, 2**40, 1025, 1024])
        combine = r.choice(["mean", "sum", "last", "max", None])
        if not (isinstance(L, int) and not isinstance(L, bool) and 0 <= L <= 1024):
            ok, names = False, names + ("num_layers",)
        if combine not in ("mean", "sum", "last"):
            ok, names = False, names + ("combine",)
        if ok and L > 3:
            L = 3  # the cost of a valid large L is not the question here
        gg = g if c != 11 else g.to_dense()
        y = expect(
            f"propagate_layers(L={L}, {combine}) c={c}",
            ok,
            sk.propagate_layers,
            gg,
            x,
            L,
            emb,
            wts,
            combine,
            backend=backend,
            names=names,
        )
        if y is None:
            return
        h, hs = x.detach().to(F64), [x.detach().to(F64)]
        for _ in range(L):
            h = _dense_propagate(coo, g.shape, h, emb, wts)
            hs.append(h)
        want = {"last": h, "sum": sum(hs), "mean": sum(hs) / (L + 1)}[combine]
        close("propagate_layers", y, want, 1e-3, 1e-3)
        return
    gg = g if c != 11 else r.choice([g.to_dense(), None, (g.indptr, g.indices)])
    y = expect(
        f"propagate c={c} backend={backend!r}",
        ok,
        sk.propagate,
        gg,
        x,
        emb,
        wts,
        backend=backend,
        names=names,
    )
    if y is None:
        return
    if y.dtype != x.dtype or tuple(y.shape) != (n_rows, d):
        raise Failure(f"propagate: output {brief(y)}, expected ({n_rows}, {d}) {x.dtype}")
    want = _dense_propagate(coo, g.shape, x, emb, g.relation_weight if wts is None else wts)
    close(f"propagate c={c} backend={backend}", y, want, 1e-3, 1e-3)
    if y.requires_grad and y.numel():
        gy = r.floats(*y.shape, dtype=y.dtype)
        leaves = [t for t in (x, emb, wts) if t is not None and t.requires_grad]
        vals_grad = g.values.requires_grad
        grads = torch.autograd.grad(y, leaves + ([g.values] if vals_grad else []), gy, allow_unused=True)
        if vals_grad:  # dv[e] = sum_d gy[row_e] * x[col_e] (* w_r * E_r), the edge-value grad
            gv, grads = grads[-1], grads[:-1]
            prod = gy.to(F64)[g.row_ids()] * x.detach().to(F64)[g.indices.long()]
            if g.relation is not None:
                rel = g.relation.long()
                if emb is not None:
                    prod = prod * emb.detach().to(F64)[rel]
                w_used = g.relation_weight if wts is None else wts
                if w_used is not None:
                    prod = prod * w_used.detach().to(F64)[rel][:, None]
            close(
                f"propagate grad values backend={backend}",
                torch.zeros_like(g.values) if gv is None else gv,
                prod.sum(1),
                1e-3,
                1e-3,
            )
        if not leaves:
            return
        x64 = x.detach().to(F64).requires_grad_(x.requires_grad)
        e64 = None if emb is None else emb.detach().to(F64).requires_grad_(emb.requires_grad)
        w64 = None if wts is None else wts.detach().to(F64).requires_grad_(wts.requires_grad)
        dense = dense_of(coo, g.shape)
        if R is None:
            y64 = dense @ x64
        else:
            y64 = torch.zeros(n_rows, d, dtype=F64)
            for rel in range(R):
                part = dense_of({k: v for k, v in coo.items() if k[2] == rel}, g.shape)
                scale = x64 if e64 is None else x64 * e64[rel]
                wr = 1.0 if w64 is None else w64[rel]
                y64 = y64 + wr * (part @ scale)
        leaves64 = [t for t in (x64, e64, w64) if t is not None and t.requires_grad]
        want_g = torch.autograd.grad(y64, leaves64, gy.to(F64), allow_unused=True)
        for i, (a, b) in enumerate(zip(grads, want_g)):
            ref = leaves[i]
            a = torch.zeros_like(ref) if a is None else a
            b = torch.zeros_like(ref, dtype=F64) if b is None else b
            close(f"propagate grad {i} backend={backend}", a, b, 1e-3, 1e-3)


def topk_oracle(what, x, y, k, exclude_self, excl, metric, idx, val) -> None:
    """The op contract on a float64 dense score matrix: allowed, distinct, sorted, padded,
    scores right, no better allowed candidate left out (within a tolerance)."""
    x64, y64 = x.detach().to(F64), y.detach().to(F64)
    if metric == "cosine":
        x64 = x64 / x64.norm(dim=1, keepdim=True).clamp_min(1e-12)
        y64 = y64 / y64.norm(dim=1, keepdim=True).clamp_min(1e-12)
    s = x64 @ y64.T
    n, m = s.shape
    if tuple(idx.shape) != (n, k) or tuple(val.shape) != (n, k):
        raise Failure(f"{what}: output shapes {tuple(idx.shape)}, {tuple(val.shape)}, expected ({n}, {k})")
    if idx.dtype != torch.int64 or val.dtype != x.dtype:
        raise Failure(f"{what}: dtypes {idx.dtype}, {val.dtype}")
    ok = torch.ones(n, m, dtype=torch.bool)
    if exclude_self:
        d = torch.arange(min(n, m))
        ok[d, d] = False
    if excl is not None:
        for a, b, _ in graph_coo(excl, sorted_rows=False):
            ok[a, b] = False
    scale = (
        float(x64.abs().max()) * float(y64.abs().max()) * max(x.shape[1], 1)
        if x.numel() and y.numel()
        else 1.0
    )
    eps = (3e-5 if x.dtype == F32 else 1e-10) * max(scale, 1.0)
    val64 = val.to(F64)
    for i in range(n):
        kk = min(k, int(ok[i].sum()))
        row = idx[i].tolist()
        if any(j != -1 for j in row[kk:]) or not bool(torch.isneginf(val64[i, kk:]).all()):
            raise Failure(f"{what}: row {i} padding wrong: {row} / {val[i].tolist()}")
        top = row[:kk]
        if len(set(top)) != kk or any(not (0 <= j < m) or not bool(ok[i, j]) for j in top):
            raise Failure(f"{what}: row {i} returns a disallowed or repeated column: {top}")
        for t, j in enumerate(top):
            if abs(float(val64[i, t]) - float(s[i, j])) > eps:
                raise Failure(
                    f"{what}: row {i} score of column {j} is {float(val64[i, t])}, expected {float(s[i, j])}"
                )
            if t and float(val64[i, t]) > float(val64[i, t - 1]):
                raise Failure(f"{what}: row {i} not sorted: {val[i].tolist()}")
            if (
                t
                and float(val64[i, t]) == float(val64[i, t - 1])
                and j < top[t - 1]
                and abs(float(s[i, j]) - float(s[i, top[t - 1]])) == 0
            ):
                raise Failure(f"{what}: row {i} breaks an exact tie by the higher index")
        if kk:
            kth = float(val64[i, kk - 1])
            rest = ok[i].clone()
            rest[top] = False
            if bool((s[i][rest] > kth + eps).any()):
                j = int(torch.nonzero(rest & (s[i] > kth + eps))[0])
                raise Failure(
                    f"{what}: row {i} left out column {j} (score {float(s[i, j])}) better than its k-th {kth}"
                )


def fam_topk(r: Rand) -> None:
    """topk_similarity / topk_scores / knn_graph: bad k, dtypes, shapes, exclusion graphs,
    devices, NaN; valid calls checked against the dense oracle."""
    op = r.choice(["sim", "sim", "scores", "knn"])
    n = r.size(20)
    d = r.choice([0, 1, 2, 3, 4, 8])
    dtype = r.choice([F32, F64])
    x = r.floats(n, d, dtype=dtype)
    if n > 2 and r.chance(0.2):
        x[1] = x[0]  # an exact tie
    m = r.size(20)
    y = None if op == "knn" or (op == "sim" and r.chance(0.5)) else r.floats(m, d, dtype=dtype)
    if y is None:
        m = n
    k = r.choice(
        [
            0,
            1,
            2,
            3,
            5,
            m,
            m + 1,
            m + max(m, MAX_PAD),
            m + max(m, MAX_PAD) + 1,
            2**31,
            2**62,
            -1,
            True,
            2.0,
            np.int64(2),
            None,
        ]
    )
    metric = "ip" if op == "scores" else r.choice(["cosine", "ip", "ip", "dot", None])
    excl_self = None if op != "sim" else r.choice([None, None, True, False, 1, "yes"])
    exclude = None
    small = n * m * max(d, 1) <= 4000
    backend, ok, names = backend_arg(r, "topk", small)
    if r.chance(0.3):
        exclude, _ = rand_graph(r, n, m, max_edges=3 * n + 1)
    c = r.int(0, 14)
    if c == 0:
        x, ok, names = bad_dtype(r, x), False, names + ("x",)
    elif c == 1 and y is not None:
        y = r.choice(
            [
                bad_dtype(r, y),
                r.floats(m, d + 1, dtype=dtype),
                y.to(F64 if dtype == F32 else F32),
                y.to("meta"),
                y[None],
            ]
        )
        ok, names = False, names + ("y", "meta", "device", "item_emb")
    elif c == 2 and x.numel():
        x, ok, names = poison(r, x), False, names + ("x", "NaN")
    elif c == 3:
        x, y = variant(r, x), None if y is None else variant(r, y)
    elif c == 4 and n and d:
        x = r.floats(1, d, dtype=dtype).expand(n, d)  # every row equal: ties everywhere
    elif c == 5:
        exclude = r.choice(
            [rand_graph(r, n + 1, m)[0], rand_graph(r, n, m + 1)[0], torch.zeros(n, m), "graph"]
        )
        ok, names = False, names + ("exclude",)
    elif c == 6 and exclude is not None and exclude.nnz:
        exclude.indices[0] = m + r.int(0, 3)
        ok, names = False, names + ("indices",)
    elif c == 7:
        x.requires_grad_(True)
    elif c == 8:
        x, ok, names = x.to("meta"), False, names + ("meta", "device")
    elif c == 9:
        x, ok, names = (
            r.choice([x.reshape(-1), x[None], r.floats(n, d).to(torch.int64)]),
            False,
            names + ("x",),
        )
    k_ok = isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 0
    if op != "knn" and k_ok and k > m + max(m, MAX_PAD):
        k_ok = False
    if not k_ok:
        ok, names = False, names + ("k",)
    if metric not in ("cosine", "ip"):
        ok, names = False, names + ("metric",)
    if not (excl_self is None or type(excl_self) is bool):
        ok, names = False, names + ("exclude_self",)
    what = f"{op}(n={n}, m={m}, d={d}, k={k!r}, metric={metric!r}, c={c}, backend={backend!r})"
    if op == "sim":
        out = expect(what, ok, sk.topk_similarity, x, k, y, metric, excl_self, exclude, backend, names=names)
    elif op == "scores":
        out = expect(what, ok, sk.topk_scores, x, y, k, exclude, backend, names=names)
    else:
        out = expect(what, ok, sk.knn_graph, x, k, metric, exclude, backend, names=names)
    if out is None:
        return
    yy = x if y is None else y
    if op == "knn":
        kk = min(int(k), max(n - 1, 0))
        got = graph_coo(out)
        idx = torch.full((n, kk), -1, dtype=torch.int64)
        val = torch.full((n, kk), float("-inf"), dtype=F64)
        per_row: dict = {}
        for (a, b, _), v in got.items():
            per_row.setdefault(a, []).append((v, b))
        for a, lst in per_row.items():
            lst.sort(key=lambda t: (-t[0], t[1]))
            for t, (v, b) in enumerate(lst):
                if t >= kk:
                    raise Failure(f"{what}: row {a} has more than k = {kk} edges")
                idx[a, t], val[a, t] = b, v
        # knn_graph's values are float32: compare in float32's precision.
        topk_oracle(what, x.to(F32), yy.to(F32), kk, True, exclude, metric, idx, val.to(F32))
        return
    idx, val = out
    topk_oracle(
        what,
        x,
        yy,
        int(k),
        op == "sim" and (excl_self if excl_self is not None else y is None),
        exclude,
        metric,
        idx,
        val,
    )


def fam_refine(r: Rand) -> None:
    """knn_refine: bad arguments, huge loop counts (clamped), results checked for validity."""
    n = r.size(24)
    d = r.choice([1, 2, 4, 8])
    dtype = r.choice([F32, F64])
    x = r.floats(n, d, dtype=dtype)
    prev, _ = rand_graph(r, n, n, max_edges=3 * n + 1)
    k = r.choice([1, 2, 3, 5, n - 1, n, 2**40, 0, -1, True, 2.5])
    kw = dict(
        metric=r.choice(["cosine", "ip", "ip", "l2"]),
        max_iters=r.choice([0, 1, 3, 10, 2**40, -1, 1.5]),
        sample_random=r.choice([0, 2, 5, 2**40, -2]),
        max_candidates=r.choice([None, 0, 3, 2**40, -1]),
        delta=r.choice([0.001, 0.0, 0.5, float("inf"), float("nan"), -1.0, True]),
        seed=r.choice([None, 0, 7, -5, 2**63, 2**64, 1.5, np.int64(3)]),
        return_stats=r.choice([False, True, 1]),
    )
    backend, ok, names = backend_arg(r, "refine", small=True)
    kw["backend"] = backend
    c = r.int(0, 8)
    if c == 0:
        prev, ok, names = (
            r.choice([rand_graph(r, n + 1, n)[0], prev.to_dense(), None]),
            False,
            ("previous_graph",),
        )
    elif c == 1 and prev.nnz:
        prev.indices[0] = n
        ok, names = False, names + ("indices",)
    elif c == 2 and x.numel():
        x, ok, names = poison(r, x), False, names + ("x",)
    elif c == 3:
        x, ok, names = bad_dtype(r, x), False, names + ("x",)
    elif c == 4:
        x = variant(r, x)
    elif c == 5:
        x.requires_grad_(True)

    def bad_int(v, lo):
        return not (isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= lo)

    if bad_int(k, 1):
        ok, names = False, names + ("k",)
    for nm, lo in (("max_iters", 0), ("sample_random", 0)):
        if bad_int(kw[nm], lo):
            ok, names = False, names + (nm,)
    if kw["max_candidates"] is not None and bad_int(kw["max_candidates"], 0):
        ok, names = False, names + ("max_candidates",)
    dl = kw["delta"]
    if isinstance(dl, bool) or not dl >= 0:
        ok, names = False, names + ("delta",)
    s = kw["seed"]
    if s is not None and (bad_int(s, -(2**63)) or s >= 2**64):
        ok, names = False, names + ("seed",)
    if kw["metric"] not in ("cosine", "ip"):
        ok, names = False, names + ("metric",)
    if not isinstance(kw["return_stats"], bool):
        ok, names = False, names + ("return_stats",)
    if ok and kw["max_iters"] > 50 and kw["delta"] < 0.2:
        kw["delta"] = 0.2  # convergence to an exact zero may take a while: not the question
    what = f"knn_refine(n={n}, k={k!r}, {kw}, c={c})"
    out = expect(what, ok, sk.knn_refine, x, prev, k, names=names, **kw)
    if out is None:
        return
    g = out[0] if kw["return_stats"] else out
    kk = min(int(k), max(n - 1, 0))
    coo = graph_coo(g)
    rows: dict = {}
    for (a, b, _), v in coo.items():
        rows.setdefault(a, []).append((b, v))
    xs = x.detach().to(F64)
    if kw["metric"] == "cosine":
        xs = xs / xs.norm(dim=1, keepdim=True).clamp_min(1e-12)
    for i in range(n):
        lst = rows.get(i, [])
        if len(lst) != kk:
            raise Failure(f"{what}: row {i} has {len(lst)} neighbours, expected {kk}")
        for b, v in lst:
            if b == i:
                raise Failure(f"{what}: row {i} lists itself")
            if abs(v - float(xs[i] @ xs[b])) > 1e-4 * max(1.0, float(xs.abs().max()) ** 2 * d):
                raise Failure(f"{what}: edge ({i}, {b}) value {v}, similarity {float(xs[i] @ xs[b])}")


def fam_fuse(r: Rand) -> None:
    """fuse_views: bad shapes and dtypes; valid calls (gradients too) against the formula."""
    n, d, V = r.size(), r.choice([0, 1, 2, 3, 8]), r.choice([0, 1, 2, 3])
    dtype = r.choice([F32, F64])
    z, alpha, views = r.floats(n, d, dtype=dtype), r.floats(V, dtype=dtype), r.floats(n, V * d, dtype=dtype)
    if n and V and d and r.chance(0.2):
        views[0, :d] = 0  # a zero view row: the clamped norm
    backend, ok, names = backend_arg(r, "fuse", small=n * V * d <= 2000)
    c = r.int(0, 12)
    if c == 0:
        z, ok, names = bad_dtype(r, z), False, names + ("z",)
    elif c == 1:
        views, ok, names = (
            r.choice(
                [
                    r.floats(n, V * d + 1, dtype=dtype),
                    r.floats(n + 1, V * d, dtype=dtype),
                    views.to(F64 if dtype == F32 else F32),
                    bad_dtype(r, views),
                ]
            ),
            False,
            names + ("views",),
        )
    elif c == 2:
        alpha, ok, names = (
            r.choice([alpha[None], torch.ones(V, dtype=torch.int64), alpha.to("meta")]),
            False,
            names + ("alpha", "meta"),
        )
    elif c == 3:
        z, alpha, views = variant(r, z), variant(r, alpha), variant(r, views)
    elif c == 4 and n and d:
        z = r.floats(1, d, dtype=dtype).expand(n, d)
    elif c == 5 and z.numel():
        z = poison(r, z)  # allowed, documented: NaN/inf reach the rows that read them
    elif c == 6:
        alpha = alpha.to(F64 if dtype == F32 else F32)  # cast to z's dtype: valid
    grad = r.chance(0.5)
    leaves = []
    if grad:
        for t in (z, alpha, views):
            if t.is_floating_point() and t.device.type != "meta" and r.chance(0.7):
                t.requires_grad_(True)
                leaves.append(t)
    out = expect(
        f"fuse_views c={c} backend={backend!r}", ok, sk.fuse_views, z, alpha, views, backend, names=names
    )
    if out is None:
        return
    z64 = z.detach().to(F64).requires_grad_(z.requires_grad)
    a64 = alpha.detach().to(F64).requires_grad_(alpha.requires_grad)
    v64 = views.detach().to(F64).requires_grad_(views.requires_grad)
    want = fuse_views_formula(z64, a64, v64) if V else z64 + 0
    close(f"fuse_views c={c} backend={backend}", out, want, 1e-4, 1e-4)
    if leaves and out.numel() and out.requires_grad:
        go = r.floats(*out.shape, dtype=out.dtype)
        got = torch.autograd.grad(out, leaves, go, allow_unused=True)
        leaves64 = [{id(z): z64, id(alpha): a64, id(views): v64}[id(t)] for t in leaves]
        if not want.requires_grad:
            return
        ref = torch.autograd.grad(want, leaves64, go.to(F64), allow_unused=True)
        for i, (a, b) in enumerate(zip(got, ref)):
            if a is None or b is None:
                continue
            close(f"fuse_views grad {i} backend={backend}", a, b, 1e-3, 1e-3)


def fam_misc(r: Rand) -> None:
    """normalize_rows, available_backends, last_backend."""
    c = r.int(0, 2)
    if c == 0:
        x = r.floats(r.size(), r.choice([0, 1, 3]), dtype=r.choice([F32, F64]))
        if x.numel() and r.chance(0.3):
            x[0] = x[0] * 1e30 if x.dtype == F32 else x[0] * 1e300  # a norm that overflows
        ok = True
        if r.chance(0.3):
            x, ok = r.choice([bad_dtype(r, x), x.reshape(-1), "x"]), False
        y = expect("normalize_rows", ok, sk.normalize_rows, x, names=("x",))
        if y is not None and y.numel():
            x64 = x.to(F64)
            x64 = x64 / x64.abs().amax(1, keepdim=True).clamp_min(1e-300)
            want = x64 / x64.norm(dim=1, keepdim=True).clamp_min(1e-300)
            want = torch.where(x.to(F64).norm(dim=1, keepdim=True) > 1e-12, want, x.to(F64) / 1e-12)
            close("normalize_rows", y, want, 1e-5, 1e-5)
    elif c == 1:
        dev = r.choice(["cpu", torch.device("cpu"), "meta", "gpu", 3.5])
        op = r.choice([None, "propagate", "topk", "refine", "fuse", "sort"])
        ok = dev in ("cpu", torch.device("cpu"), "meta") and op != "sort"
        res = expect(
            f"available_backends({dev!r}, {op!r})", ok, sk.available_backends, dev, op, names=("device", "op")
        )
        if res is not None and dev != "meta" and "torch" not in res:
            raise Failure(f"available_backends({dev!r}, {op!r}) = {res} lacks torch")
    else:
        g, _ = rand_graph(r, 3, 3)
        b = r.choice(cpu_backends("propagate", False))
        sk.propagate(g, r.floats(3, 2), backend=b)
        if sk.last_backend("propagate") != b or sk.last_backend() != b:
            raise Failure(f"last_backend() = {sk.last_backend()!r} after a call on {b!r}")


# ====================================================================== differential families


def fam_diff_propagate(r: Rand) -> None:
    """Every CPU backend against the torch reference on random valid inputs (bigger graphs
    than the argument families), forward and gradients."""
    big = r.chance(0.15)
    n_rows = r.int(0, 300 if big else 40)
    n_cols = r.int(0, 300 if big else 40)
    R = r.int(1, 5) if r.chance(0.5) else None
    dtype = r.choice([F32, F64])
    g, _ = rand_graph(r, n_rows, n_cols, R, dtype=dtype, max_edges=3000 if big else 200)
    d = r.choice([1, 2, 3, 4, 7, 16, 33] if not big else [8, 32, 64])
    x = variant(r, r.floats(n_cols, d, dtype=dtype))
    emb = r.floats(R, d, dtype=dtype) if R is not None and r.chance(0.6) else None
    wts = r.floats(R, dtype=dtype) if R is not None and r.chance(0.6) else None
    need = r.chance(0.6)
    small = g.nnz <= 300 and d <= 16 and r.chance(0.12)  # the interpreter is slow
    outs = {}
    for b in cpu_backends("propagate", small):
        xs = x.detach().clone().requires_grad_(need)
        es = None if emb is None else emb.detach().clone().requires_grad_(need and r.chance(0.7))
        ws = None if wts is None else wts.detach().clone().requires_grad_(need and r.chance(0.5))
        if b != "torch":
            # the same requires_grad pattern as the reference run
            ref_x, ref_e, ref_w = outs["torch"][1]
            xs.requires_grad_(ref_x)
            if es is not None:
                es.requires_grad_(ref_e)
            if ws is not None:
                ws.requires_grad_(ref_w)
        y = sk.propagate(g, xs, es, ws, backend=b)
        leaves = [t for t in (xs, es, ws) if t is not None and t.requires_grad]
        grads = ()
        if leaves and y.numel():
            grads = torch.autograd.grad(y, leaves, torch.ones_like(y) * 0.5, allow_unused=True)
        outs[b] = (
            y.detach(),
            (xs.requires_grad, es is not None and es.requires_grad, ws is not None and ws.requires_grad),
            grads,
        )
    ref_y, _, ref_g = outs["torch"]
    rt, at = tol(dtype)
    for b, (y, _, grads) in outs.items():
        close(f"propagate backend={b} vs torch (nnz={g.nnz}, d={d}, R={R})", y, ref_y, rt, at)
        for i, (a, c) in enumerate(zip(grads, ref_g)):
            if (a is None) != (c is None):
                raise Failure(f"propagate backend={b} grad {i}: None mismatch")
            if a is not None:
                close(f"propagate backend={b} grad {i} vs torch", a, c, 10 * rt, 10 * at)


def fam_diff_topk(r: Rand) -> None:
    """Every CPU backend's top-k against the contract (dense float64 oracle) and against the
    reference's indices where no near-tie makes the order ambiguous."""
    big = r.chance(0.1)
    n = r.int(0, 200 if big else 30)
    m = r.int(0, 200 if big else 30)
    d = r.choice([1, 2, 3, 4, 8, 16, 33])
    dtype = r.choice([F32, F64])
    x = r.floats(n, d, dtype=dtype)
    self_join = r.chance(0.4)
    y = x if self_join else r.floats(m, d, dtype=dtype)
    if self_join:
        m = n
    if r.chance(0.2) and n > 3:  # ties
        x[2] = x[1]
        if not self_join and m > 3:
            y[3] = y[2]
    k = r.choice([0, 1, 2, 5, 10, m, m + 3])
    metric = r.choice(["cosine", "ip"])
    excl = rand_graph(r, n, m, max_edges=4 * n + 1)[0] if r.chance(0.4) else None
    exclude_self = self_join if r.chance(0.7) else r.choice([True, False])
    small = n <= 32 and m <= 32 and k <= 16 and r.chance(0.25)  # the interpreter is slow
    results = {}
    for b in cpu_backends("topk", small):
        idx, val = sk.topk_similarity(x, k, None if self_join else y, metric, exclude_self, excl, backend=b)
        topk_oracle(
            f"topk backend={b} (n={n}, m={m}, d={d}, k={k}, {metric})",
            x,
            y,
            k,
            exclude_self,
            excl,
            metric,
            idx,
            val,
        )
        results[b] = (idx, val)
    ref_i, ref_v = results["torch"]
    for b, (idx, val) in results.items():
        rt, at = tol(dtype)
        close(
            f"topk backend={b} scores vs torch",
            val.masked_fill(idx < 0, 0),
            ref_v.masked_fill(ref_i < 0, 0),
            rt,
            at,
        )


def fam_diff_fuse(r: Rand) -> None:
    n = r.int(0, 60)
    d = r.choice([1, 2, 3, 8, 17, 64])
    V = r.int(1, 4)
    dtype = r.choice([F32, F64])
    z, alpha, views = r.floats(n, d, dtype=dtype), r.floats(V, dtype=dtype), r.floats(n, V * d, dtype=dtype)
    if n and r.chance(0.3):
        views[r.int(0, n - 1), :d] = 0
    small = n * V * d <= 2000 and r.chance(0.3)
    outs = {}
    for b in cpu_backends("fuse", small):
        zz, aa, vv = (t.detach().clone().requires_grad_(True) for t in (z, alpha, views))
        out = sk.fuse_views(zz, aa, vv, backend=b)
        gz, ga, gv = torch.autograd.grad(out, (zz, aa, vv), torch.ones_like(out))
        outs[b] = (out.detach(), ga, gv)
    rt, at = tol(dtype)
    for b, (out, ga, gv) in outs.items():
        close(f"fuse backend={b} vs torch", out, outs["torch"][0], rt, at)
        close(f"fuse backend={b} dalpha vs torch", ga, outs["torch"][1], 10 * rt, 10 * at)
        close(f"fuse backend={b} dviews vs torch", gv, outs["torch"][2], 10 * rt, 10 * at)


# ====================================================================== the case table

FAMILIES = {
    "ctor": (fam_ctor, 14),
    "from_edges": (fam_from_edges, 14),
    "from_scipy": (fam_from_scipy, 12),
    "from_other": (fam_from_other, 5),
    "graph_methods": (fam_graph_methods, 10),
    "propagate": (fam_propagate, 12),
    "topk": (fam_topk, 12),
    "refine": (fam_refine, 5),
    "fuse": (fam_fuse, 6),
    "misc": (fam_misc, 2),
    "diff_propagate": (fam_diff_propagate, 5),
    "diff_topk": (fam_diff_topk, 4),
    "diff_fuse": (fam_diff_fuse, 2),
}


def _selftest_family(name: str):
    """Cases that misbehave on purpose: the harness must report each (test_harness_*)."""

    def crash(r):
        os.kill(os.getpid(), signal.SIGSEGV)

    def hang(r):
        time.sleep(3600)

    def blowup(r):
        torch.empty(8 << 30, dtype=torch.uint8)  # 8 GiB under the 4 GiB cap

    def foreign(r):
        raise KeyError("not the project's error")

    def silent(r):
        raise Failure("a wrong result")

    def ok(r):
        pass

    return {
        "__crash": crash,
        "__hang": hang,
        "__blowup": blowup,
        "__foreign": foreign,
        "__silent": silent,
        "__ok": ok,
    }[name]


def family_of(case_id: int, only=None) -> str:
    rnd = random.Random(case_id ^ 0x5F3759DF)
    names = list(only) if only else list(FAMILIES)
    if len(names) == 1:
        return names[0]
    weights = [FAMILIES[n][1] if n in FAMILIES else 1 for n in names]
    return rnd.choices(names, weights)[0]


def run_case(case_id: int, family: str) -> str | None:
    """None when the case passed, else the failure's description."""
    fn = _selftest_family(family) if family.startswith("__") else FAMILIES[family][0]
    r = Rand(case_id)
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(case_id & 0xFFFFFFFF)
            fn(r)
        return None
    except Failure as exc:
        return f"{exc}"
    except MemoryError as exc:
        return f"MemoryError (allocation blow-up): {exc}"
    except Exception as exc:  # noqa: BLE001 - the point: anything else is a finding
        tb = traceback.format_exc(limit=-4)
        return f"unexpected {type(exc).__name__} (not the project's error): {exc}\n{tb}"


# ====================================================================== worker and driver


def worker_main(seed: int, start: int, stop: int, only, sequence=None) -> None:
    """Run cases [start, stop), one line per case on stdout: ``<index> ok`` or
    ``<index> FAIL <json>``. ``sequence``: the family of case i is sequence[i]."""
    out = sys.stdout
    for i in range(start, stop):
        cid = case_id_of(seed, i)
        fam = sequence[i] if sequence else family_of(cid, only)
        msg = run_case(cid, fam)
        if msg is None:
            out.write(f"{i} ok\n")
        else:
            out.write(f"{i} FAIL {json.dumps({'family': fam, 'msg': msg[:4000]})}\n")
        out.flush()


def _limit_memory(limit: int):
    def apply():
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        os.setsid()

    return apply


class _Slot:
    """One worker process running the cases of a chunk, restarted after a crash or hang."""

    def __init__(self, driver, start, stop):
        self.driver, self.next, self.stop = driver, start, stop
        self.proc = None
        self.buf = b""
        self.spawn()

    def spawn(self):
        d = self.driver
        cmd = [
            sys.executable,
            os.path.abspath(__file__),
            "--worker",
            "--seed",
            str(d.seed),
            "--start",
            str(self.next),
            "--stop",
            str(self.stop),
        ]
        if d.only:
            cmd += ["--only", ",".join(d.only)]
        if d.sequence:
            cmd += ["--sequence", ",".join(d.sequence)]
        self.err = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=self.err,
            cwd=ROOT,
            env=d.env,
            preexec_fn=_limit_memory(d.mem_limit),
        )
        self.deadline = time.monotonic() + d.first_timeout
        self.started = True

    def kill(self):
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    def stderr_tail(self) -> str:
        self.err.seek(0)
        return self.err.read()[-1500:].decode("utf-8", "replace")

    def fd(self):
        return self.proc.stdout.fileno()

    def on_readable(self) -> bool:
        """Consume output; False when the worker is finished (or dead and restarted later)."""
        chunk = os.read(self.fd(), 1 << 16)
        if chunk:
            self.buf += chunk
            while b"\n" in self.buf:
                line, self.buf = self.buf.split(b"\n", 1)
                self.driver.record_line(line.decode())
                self.next = int(line.split(b" ", 1)[0]) + 1
                self.deadline = time.monotonic() + self.driver.timeout
            return True
        rc = self.proc.wait()
        if self.next < self.stop:
            how = f"killed by signal {signal.Signals(-rc).name}" if rc < 0 else f"exited with status {rc}"
            self.driver.record_crash(self.next, f"worker process {how} (crash)\n{self.stderr_tail()}")
            self.next += 1
            if self.next < self.stop:
                self.spawn()
                return True
        return False

    def on_timeout(self):
        self.kill()
        self.driver.record_crash(
            self.next, f"hang: no result within {self.driver.timeout:.0f} s (worker killed)"
        )
        self.next += 1
        if self.next < self.stop:
            self.spawn()
            return True
        return False


class Driver:
    def __init__(
        self,
        seed,
        cases,
        workers,
        threads,
        chunk,
        only=None,
        start=0,
        timeout=CASE_TIMEOUT,
        first_timeout=FIRST_CASE_TIMEOUT,
        mem_limit=MEM_LIMIT,
        log=None,
        sequence=None,
    ):
        self.seed, self.cases, self.workers, self.only = seed, cases, workers, only
        self.sequence = sequence
        self.start = start
        self.timeout, self.first_timeout, self.mem_limit = timeout, first_timeout, mem_limit
        self.chunk = chunk
        self.failures: list[dict] = []
        self.done = 0
        self.by_family: dict = {}
        self.log = log
        env = dict(os.environ)
        # CPU tensors only: the workers never touch a GPU (a CUDA context would also reserve
        # more address space than the cap), and Triton runs interpreted.
        env["CUDA_VISIBLE_DEVICES"] = ""
        env["TRITON_INTERPRET"] = "1"
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        for var in ("OMP_NUM_THREADS", "NUMBA_NUM_THREADS", "MKL_NUM_THREADS"):
            env[var] = str(threads)
        env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
        env["PYTHONFAULTHANDLER"] = "1"
        self.env = env

    def family(self, index: int) -> str:
        if self.sequence:
            return self.sequence[index]
        return family_of(case_id_of(self.seed, index), self.only)

    def record_line(self, line: str):
        i, status, *rest = line.split(" ", 2)
        self.done += 1
        fam = self.family(int(i))
        self.by_family[fam] = self.by_family.get(fam, 0) + 1
        if status != "ok":
            info = json.loads(rest[0])
            self.failures.append({"case": f"{self.seed}:{i}", **info})
        if self.log and self.done % 5000 == 0:
            self.log(f"{self.done} cases, {len(self.failures)} failures")

    def record_crash(self, index: int, msg: str):
        self.done += 1
        fam = self.family(index)
        self.by_family[fam] = self.by_family.get(fam, 0) + 1
        self.failures.append({"case": f"{self.seed}:{index}", "family": fam, "msg": msg})

    def run(self) -> Driver:
        chunks = [
            (a, min(a + self.chunk, self.start + self.cases))
            for a in range(self.start, self.start + self.cases, self.chunk)
        ]
        active: list[_Slot] = []
        t0 = time.monotonic()
        while chunks or active:
            while chunks and len(active) < self.workers:
                active.append(_Slot(self, *chunks.pop(0)))
            now = time.monotonic()
            wait = max(0.0, min(s.deadline for s in active) - now)
            ready, _, _ = select.select([s.fd() for s in active], [], [], wait)
            for s in list(active):
                if s.fd() in ready:
                    alive = s.on_readable()
                elif time.monotonic() >= s.deadline:
                    alive = s.on_timeout()
                else:
                    continue
                if not alive:
                    s.proc.stdout.close()
                    s.err.close()
                    active.remove(s)
        self.seconds = time.monotonic() - t0
        return self

    def report(self) -> str:
        lines = [
            f"{self.done} cases (seed {self.seed}) in {self.seconds:.1f} s: {len(self.failures)} failure(s)",
            "per family: " + ", ".join(f"{k} {v}" for k, v in sorted(self.by_family.items())),
        ]
        for f in self.failures[:50]:
            lines.append(
                f"--- case {f['case']} ({f['family']}); replay: python -m "
                f"tests.test_fuzz_kernels --replay {f['case']}\n{f['msg']}"
            )
        return "\n".join(lines)


def replay(case: str, only=None) -> int:
    seed, index = (int(v) for v in case.split(":"))
    cid = case_id_of(seed, index)
    fam = family_of(cid, only)
    fn = _selftest_family(fam) if fam.startswith("__") else FAMILIES[fam][0]
    print(f"case {case}: family {fam}")
    resource.setrlimit(resource.RLIMIT_AS, (MEM_LIMIT, MEM_LIMIT))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cid & 0xFFFFFFFF)
        fn(Rand(cid))  # a failure raises with its traceback
    print("passed")
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=CI_CASES)
    p.add_argument("--seed", type=int, default=CI_SEED)
    p.add_argument("--start", type=int, default=0, help="first case index")
    p.add_argument("--stop", type=int, default=None)
    p.add_argument("--workers", type=int, default=max(1, min(4, os.cpu_count() or 1)))
    p.add_argument("--threads", type=int, default=None, help="per worker (default cores/workers)")
    p.add_argument("--chunk", type=int, default=5000, help="cases per worker process")
    p.add_argument("--only", default=None, help="comma-separated families")
    p.add_argument("--timeout", type=float, default=CASE_TIMEOUT)
    p.add_argument("--replay", default=None, help="SEED:INDEX: run one case in this process")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sequence", default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    only = a.only.split(",") if a.only else None
    if a.worker:
        worker_main(a.seed, a.start, a.stop, only, a.sequence.split(",") if a.sequence else None)
        return 0
    if a.replay:
        return replay(a.replay, only)
    threads = a.threads or max(1, (os.cpu_count() or 1) // a.workers)
    d = Driver(
        a.seed,
        a.cases,
        a.workers,
        threads,
        a.chunk,
        only,
        start=a.start,
        timeout=a.timeout,
        log=lambda s: print(s, flush=True),
    ).run()
    print(d.report())
    return 1 if d.failures else 0


# ====================================================================== pytest entry points


def test_fuzz_kernels_ci_budget():
    """CI_CASES generated cases (fixed seed) in worker subprocesses: no crash, hang,
    allocation blow-up, foreign exception, accepted corrupt input or wrong result."""
    workers = max(1, min(4, os.cpu_count() or 1))
    d = Driver(
        CI_SEED,
        CI_CASES,
        workers,
        threads=max(1, (os.cpu_count() or 1) // workers),
        chunk=-(-CI_CASES // workers),
    ).run()
    print(d.report())
    assert d.done == CI_CASES
    assert not d.failures, d.report()


def test_harness_reports_crash_hang_blowup_and_foreign_errors():
    """The harness itself: a segfault, a hang, an 8 GiB allocation, a KeyError and a wrong
    result each fail their case (named by its id), and the cases after them still run."""
    fams = ["__ok", "__crash", "__ok", "__hang", "__blowup", "__foreign", "__silent", "__ok"]
    d = Driver(0, len(fams), 1, 1, len(fams), timeout=5.0, first_timeout=120.0, sequence=fams).run()
    assert d.done == len(fams), d.report()
    got = {f["case"]: f["msg"] for f in d.failures}
    assert sorted(got) == ["0:1", "0:3", "0:4", "0:5", "0:6"], d.report()
    assert "SIGSEGV" in got["0:1"]
    assert "hang" in got["0:3"]
    assert "allocat" in got["0:4"]
    assert "unexpected KeyError" in got["0:5"]
    assert "a wrong result" in got["0:6"]


if __name__ == "__main__":
    sys.exit(main())
