"""Random inputs with the shapes that break kernels, and what checks and times the results:
for tests and benchmarks.

Power-law degrees, empty rows, one heavy row, isolated columns, duplicate edges, self-loops,
many relations — all from one seeded generator so that a failing case can be replayed. Then
recall against a reference (ties allowed) and :func:`time_call`, the timer of ``python -m
slifmr_kernels`` and of the scripts in ``bench/`` (through ``bench/harness.py``).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass, field

import torch

from .graph import CSRGraph
from .refine.op import knn_recall

__all__ = [
    "power_law_ids",
    "power_law_pairs",
    "power_law_csr",
    "random_graph",
    "bipartite_adjacency",
    "sym_normalize",
    "allowed_mask",
    "round_tf32",
    "fuse_views_formula",
    "neighbour_lists",
    "recall_with_ties",
    "Timing",
    "time_call",
]


def power_law_ids(n_ids: int, count: int, alpha: float = 1.2, generator=None) -> torch.Tensor:
    """(count,) int64 ids in [0, n_ids) drawn with P(id) ∝ (id + 1)^-alpha, then shuffled so
    that popular ids are scattered over the id range (as in real catalogs). On the
    generator's device (CPU without one)."""
    device = generator.device if generator is not None else torch.device("cpu")
    if n_ids <= 0 or count <= 0:
        return torch.empty(0, dtype=torch.int64, device=device)
    p = torch.arange(1, n_ids + 1, dtype=torch.float64, device=device) ** -alpha
    ids = torch.multinomial(p, count, replacement=True, generator=generator)
    perm = torch.randperm(n_ids, generator=generator, device=device)
    return perm[ids]


def power_law_pairs(
    n_a: int, n_b: int, count: int, alpha=(1.2, 1.2), *, distinct: bool = False, generator=None
) -> tuple:
    """``count`` (a, b) pairs with independent power-law marginals: a in [0, n_a) drawn by
    :func:`power_law_ids` with exponent ``alpha[0]``, b in [0, n_b) with ``alpha[1]`` (one
    number: both sides).

    ``distinct=True`` returns ``count`` different pairs (repeats dropped, as in implicit
    feedback, where a user-item pair is one interaction): pairs are drawn in rounds until
    enough distinct ones exist, then a random subset of ``count`` is kept, so the hot pairs are
    not favoured by the order of drawing. Raises ValueError when ``count`` exceeds ``n_a * n_b``.

    Returns (a, b): two (count,) int64 tensors on the generator's device (CPU by default);
    with ``distinct`` they come in a random order.
    """
    alpha_a, alpha_b = (alpha, alpha) if isinstance(alpha, (int, float)) else alpha
    device = generator.device if generator is not None else torch.device("cpu")
    if not distinct:
        return (power_law_ids(n_a, count, alpha_a, generator), power_law_ids(n_b, count, alpha_b, generator))
    if count > n_a * n_b:
        raise ValueError(f"power_law_pairs: {count} distinct pairs asked of {n_a} x {n_b} ids")
    keys = torch.empty(0, dtype=torch.int64, device=device)
    while keys.numel() < count:
        # Hot pairs repeat: draw with some slack, more in later rounds if still short.
        more = int(1.4 * (count - keys.numel())) + 1000
        a = power_law_ids(n_a, more, alpha_a, generator)
        b = power_law_ids(n_b, more, alpha_b, generator)
        keys = torch.unique(torch.cat([keys, a * n_b + b]))
    pick = torch.randperm(keys.numel(), generator=generator, device=device)[:count]
    keys = keys[pick]
    return keys // n_b, keys % n_b


def power_law_csr(
    n_rows: int,
    n_cols: int,
    nnz: int,
    num_relations: int = 1,
    *,
    alpha=(1.2, 0.6),
    dtype=torch.float32,
    generator=None,
) -> tuple:
    """The raw CSR arrays of an ``n_rows x n_cols`` graph with exactly ``nnz`` edges, power-law
    row and column popularity (:func:`power_law_pairs`, exponents ``alpha``): a few very heavy
    rows and many empty ones, as in interaction graphs. Duplicate edges are kept (kernels must
    sum them); columns are in drawing order within a row.

    Returns (indptr (n_rows + 1,) int64, indices (nnz,) int32, values (nnz,) ``dtype`` uniform
    in [0.5, 1.5), relation (nnz,) int32 uniform in [0, num_relations)), on the generator's
    device: the arrays a backend kernel takes, without :class:`CSRGraph`'s checks.
    """
    device = generator.device if generator is not None else torch.device("cpu")
    rows, cols = power_law_pairs(n_rows, n_cols, nnz, alpha, generator=generator)
    rows, order = torch.sort(rows, stable=True)
    indptr = torch.zeros(n_rows + 1, dtype=torch.int64, device=device)
    indptr[1:] = torch.cumsum(torch.bincount(rows, minlength=n_rows), 0)
    values = torch.rand(nnz, generator=generator, device=device, dtype=dtype) + 0.5
    relation = torch.randint(0, num_relations, (nnz,), generator=generator, device=device, dtype=torch.int32)
    return indptr, cols[order].to(torch.int32), values, relation


def random_graph(
    n_rows: int,
    n_cols: int,
    nnz: int,
    *,
    num_relations: int | None = None,
    power_law: bool = True,
    empty_rows: float = 0.0,
    heavy_row: float = 0.0,
    index_dtype=None,
    dtype=torch.float32,
    generator=None,
) -> CSRGraph:
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
    return CSRGraph.from_edges(
        src,
        dst,
        weight,
        relation=relation,
        shape=(n_rows, n_cols),
        num_relations=num_relations,
        index_dtype=index_dtype,
        dtype=dtype,
    )


def bipartite_adjacency(
    n_users: int, n_items: int, n_interactions: int, generator=None, dtype=torch.float32
) -> CSRGraph:
    """LightGCN's symmetric-normalised adjacency [[0, R], [R^T, 0]] of a power-law user-item
    graph, over n_users + n_items nodes (about 2 * n_interactions edges)."""
    users, items = power_law_pairs(n_users, n_items, n_interactions, 1.0, generator=generator)
    n = n_users + n_items
    src = torch.cat([users, items + n_users])
    dst = torch.cat([items + n_users, users])
    adj = CSRGraph.from_edges(src, dst, shape=(n, n), dtype=dtype)
    # Repeated interactions count once, as in implicit-feedback data.
    return adj.with_values(torch.ones_like(adj.values)).normalize("sym")


def sym_normalize(m, kind: str = "sym_row"):
    """A ``scipy.sparse`` matrix normalised by :meth:`CSRGraph.normalize` (``kind`` as there;
    the default ``"sym_row"`` is D^-1/2 M D^-1/2 with the row sums on both sides, which for a
    symmetric M is ``"sym"``), for benchmarks whose peers take scipy matrices. Computed in
    float64 and returned as a float32 ``csr_matrix`` with sorted indices, duplicates summed;
    zero-sum rows stay zero."""
    g = CSRGraph.from_scipy(m, dtype=torch.float64).normalize(kind)
    out = g.to_scipy().astype("float32")
    out.sort_indices()
    return out


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
    return z + sum(
        alpha[k] * torch.nn.functional.normalize(views[:, k * d : (k + 1) * d], dim=1)
        for k in range(alpha.numel())
    )


def neighbour_lists(g: CSRGraph, rows: torch.Tensor | None = None) -> torch.Tensor:
    """(R, w) int64 column ids of the given rows of ``g`` (all rows when ``rows`` is None), in
    the graph's order, padded with -1 to ``w`` = the largest degree among them: the padded
    form of a graph's rows that :func:`~slifmr_kernels.refine.op.knn_recall` compares."""
    g = g.to("cpu")
    rows = torch.arange(g.shape[0]) if rows is None else rows.cpu().long()
    start = g.indptr[rows]
    deg = g.indptr[rows + 1] - start
    w = int(deg.max()) if deg.numel() else 0
    pos = start[:, None] + torch.arange(w)
    present = torch.arange(w) < deg[:, None]
    ids = g.indices.long()[pos.clamp_max(max(g.nnz - 1, 0))] if g.nnz else pos
    return torch.where(present, ids, torch.full_like(pos, -1))


def recall_with_ties(
    idx: torch.Tensor, val: torch.Tensor, ref_idx: torch.Tensor, ref_val: torch.Tensor, rtol: float = 1e-5
) -> tuple:
    """(tie-aware recall, exact-id recall) of a top-k result (``idx`` (N, k) ids, ``val``
    (N, k) scores, -1 / -inf padding) against a reference (``ref_idx``, ``ref_val``, (N, k),
    scores sorted descending).

    Tie-aware: the share of returned entries that are real neighbours (id >= 0) scoring at
    least the reference's k-th score minus ``rtol * (1 + |k-th score|)``. Kernels that sum the
    dot products in another order differ in the last bits, and ids with equal scores may come
    in any order, so a result is right when its scores reach the k-th, whatever its ids.
    Exact: :func:`~slifmr_kernels.refine.op.knn_recall`, the share of the reference's ids
    (padding excluded) returned.
    """
    exact = knn_recall(idx.cpu(), ref_idx.cpu())
    if idx.numel() == 0:
        return 1.0, exact
    kth = ref_val[:, -1:].to(val.device)
    tol = rtol * (1 + kth.abs())
    tie = ((val >= kth - tol) & (idx >= 0)).double().mean().item()
    return tie, exact


@dataclass
class Timing:
    """What :func:`time_call` measured. ``seconds``: the statistic asked for over ``samples``
    (the seconds of each timed call, in order); ``cpu_seconds``: the process CPU seconds of the
    same statistic (for ``"min"``, of the fastest call: on a loaded machine CPU time counts
    the work done where wall time also counts the waits for a core); ``result``: what the last
    call returned; ``peak_extra_bytes``: with ``track_memory``, the growth of the peak
    resident set over the resident set before the calls (NaN without, or off Linux)."""

    seconds: float
    samples: list = field(default_factory=list)
    cpu_seconds: float = float("nan")
    result: object = None
    peak_extra_bytes: float = float("nan")


def _proc_status() -> dict:
    """VmRSS and VmHWM (peak) of this process in bytes, from /proc/self/status."""
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "VmHWM")):
                key, val = line.split(":")
                out[key] = int(val.split()[0]) * 1024
    return out


def time_call(
    fn,
    *,
    repeats: int = 1,
    warmup: int = 0,
    stat: str = "median",
    max_seconds: float | None = None,
    device=None,
    clock=time.perf_counter,
    track_memory: bool = False,
) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` timed ones; returns a
    :class:`Timing` whose ``seconds`` is the ``"median"`` or the ``"min"`` of them.

    ``device``: a CUDA device (or its name) makes the timing GPU-side: CUDA events around each
    call, read after synchronising, so that asynchronous launches are not timed as free (the
    warm-up is synchronised too); ``clock`` is then ignored. Else ``clock`` (wall clock by
    default; ``time.thread_time`` counts only this thread's CPU time). ``max_seconds``: stop
    repeating once this much time has passed since the first call (warm-up included); at
    least one call is timed. ``track_memory``: reset the kernel's peak-RSS counter first
    (Linux ``/proc/self/clear_refs``) and report the peak's growth over all calls.
    """
    if stat not in ("median", "min"):
        raise ValueError(f"stat must be 'median' or 'min', got {stat!r}")
    cuda = device is not None and torch.device(device).type == "cuda"
    base = None
    if track_memory:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # 5: reset the peak resident set (VmHWM) to the current one
            base = _proc_status()["VmRSS"]
        except OSError:
            pass
    start = time.perf_counter()
    for _ in range(warmup):
        fn()
    if cuda:
        torch.cuda.synchronize(device)
    wall, cpu, out = [], [], None
    for _ in range(max(1, repeats)):
        c0 = time.process_time()
        if cuda:
            a = torch.cuda.Event(enable_timing=True)
            b = torch.cuda.Event(enable_timing=True)
            a.record()
            out = fn()
            b.record()
            b.synchronize()
            wall.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = clock()
            out = fn()
            wall.append(clock() - t0)
        cpu.append(time.process_time() - c0)
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            break
    if stat == "min":
        best = min(range(len(wall)), key=wall.__getitem__)
        seconds, cpu_seconds = wall[best], cpu[best]
    else:
        seconds, cpu_seconds = statistics.median(wall), statistics.median(cpu)
    extra = float("nan") if base is None else float(_proc_status()["VmHWM"] - base)
    return Timing(seconds, wall, cpu_seconds, out, extra)
