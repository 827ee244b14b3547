"""Numba CPU backend of the fused heterogeneous propagation op.

Implements the three kernel functions of the propagate backend contract
(docs/ARCHITECTURE.md):

* ``spmm(indptr, indices, values, x, n_rows)``  ->  ``y = A @ x``
* ``spmm_rel(indptr, indices, values, relation, table, x, n_rows)``
  ->  ``y[i] = sum_e values[e] * table[relation[e]] * x[indices[e]]``
* ``spmm_rel_backward(indptr_t, indices_t, values_t, relation_t, table, dy, x,
  num_relations, need_dx, need_g)``  ->  ``(dx, g)`` over the transposed graph.

How the work is cut:

* The rows are cut into *tasks* by a sequential scan over ``indptr`` whose
  result depends on ``nnz`` and the row count only, never on the number of
  threads: a task is either a run of consecutive light rows whose cost
  (``degree + ROW_COST`` per row) adds up to about ``target`` or one fixed-size
  segment of a heavy row (degree > ``2 * target``).  ``prange`` runs over the
  tasks, so a row with half of all edges is still shared by every thread.
* A light task accumulates each output row in a small task-local buffer
  (fp32 for fp32 inputs, fp64 for fp64) and writes the row once.  A heavy-row
  segment writes its partial row into a private slot of a segment buffer;
  after the parallel loop the segments of each heavy row are added in segment
  order.  Nothing inside ``prange`` ever scatters into memory another task
  writes, and tasks are handed out dynamically (``SCHED_CHUNK`` at a time).
* The edge loop handles four neighbours per pass of the feature loop (four
  independent gathers in flight, one load/store of the accumulator instead of
  four) with the additions kept in edge order, so the unrolled and the plain
  loop give the same bits.  The gathered rows of the next group are
  software-prefetched.
* The backward pass runs over the transpose with the same tasks.  ``dx`` alone
  is the forward row kernel; with ``g`` one loop gathers ``dy[i]`` once per
  edge for both ``dx[j]`` and the task's partial ``g_part[t, r] += v * x[j] *
  dy[i]`` (``[tasks, R, d]``, at most ~``MAX_TASKS`` tasks), and the partials
  are summed in task order in float64: same bits with any thread count.

Every function takes and returns torch CPU tensors (zero-copy ``.numpy()``
views in, a fresh tensor out).  Importing this module raises ``ImportError``
when numba is missing; the backend registry turns that into a message that
says what to install.
"""

from __future__ import annotations

import numpy as np
import torch

try:
    import numba
    from llvmlite import ir
    from numba import njit, prange, types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError as exc:  # pragma: no cover - exercised only without numba
    raise ImportError("the numba propagate backend needs numba (pip install numba)") from exc

__all__ = ["spmm", "spmm_rel", "spmm_rel_backward", "sddmm", "make_tasks"]

# Per-row cost added to the degree when balancing tasks: a row costs a zeroed
# accumulator and one written output row even when it has no edges.
ROW_COST = 2
# Smallest task: enough edges that the per-task overhead (a prange iteration,
# and for the backward an R x d partial) is negligible.
MIN_TARGET = 4096
# At most about this many tasks (plus heavy-row segments), so the [tasks, R, d]
# partials of the backward stay small: O(MAX_TASKS * R * d).
MAX_TASKS = 512
# Tasks a thread takes from the shared queue at a time. Dynamic scheduling keeps
# both cores busy when tasks differ in cache behaviour or a core is shared with
# another process; which thread runs a task never changes its result.
SCHED_CHUNK = 4
# How many edges ahead of the current one the gathered rows are prefetched.
PREFETCH_DISTANCE = 8


# ---------------------------------------------------------------------------
# software prefetch of a gathered row
# ---------------------------------------------------------------------------


@intrinsic
def _prefetch(typingctx, arr, row, col):
    """Issue ``llvm.prefetch`` (read, keep in all cache levels) for ``&arr[row, col]``.

    Numba exposes no prefetch; the hardware prefetcher cannot predict the
    gathered rows of a sparse matrix, so the edge loop asks for the rows a few
    edges ahead itself.  A prefetch never faults, but callers still only pass
    in-range addresses.
    """
    if not (
        isinstance(arr, types.Array)
        and arr.ndim == 2
        and isinstance(row, types.Integer)
        and isinstance(col, types.Integer)
    ):
        return None
    sig = types.void(arr, row, col)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        i = context.cast(builder, args[1], signature.args[1], types.intp)
        k = context.cast(builder, args[2], signature.args[2], types.intp)
        ptr = cgutils.get_item_pointer2(
            context,
            builder,
            data=ary.data,
            shape=cgutils.unpack_tuple(builder, ary.shape),
            strides=cgutils.unpack_tuple(builder, ary.strides),
            layout=aryty.layout,
            inds=[i, k],
            wraparound=False,
            boundscheck=False,
        )
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        # LLVM >= 15 uses opaque pointers: the overload is named ".p0".
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(
            fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)]
        )
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, inline="always")
def _prefetch_row(x, row):
    """Prefetch every cache line of row ``row`` of the C-contiguous 2-D array ``x``."""
    step = max(1, 64 // x.itemsize)
    for k in range(0, x.shape[1], step):
        _prefetch(x, row, k)


# ---------------------------------------------------------------------------
# task partition (a function of indptr only)
# ---------------------------------------------------------------------------


@njit(cache=True)
def _make_tasks(indptr, target):
    """Cut the rows of a CSR matrix into tasks.

    Returns ``tasks`` (T, 4) int64 with columns ``row_begin, row_end,
    edge_begin, edge_end`` and ``seg_slot`` (T,) int64: -1 for a task of whole
    rows, else the slot of the task's partial row in the segment buffer (the
    task then covers a single heavy row, ``row_end = row_begin + 1``).
    Also returns ``heavy`` (H, 3) int64: ``row, first_slot, n_slots`` for every
    heavy row, slots in edge order.
    """
    n_rows = indptr.shape[0] - 1
    heavy_limit = 2 * target
    # First pass: count, so the outputs are allocated once.
    n_tasks = 0
    n_heavy = 0
    cost = 0
    for i in range(n_rows):
        deg = indptr[i + 1] - indptr[i]
        if deg > heavy_limit:
            if cost > 0:
                n_tasks += 1
                cost = 0
            n_heavy += 1
            n_tasks += (deg + target - 1) // target
        else:
            cost += deg + ROW_COST
            if cost >= target:
                n_tasks += 1
                cost = 0
    if cost > 0:
        n_tasks += 1

    tasks = np.empty((n_tasks, 4), dtype=np.int64)
    seg_slot = np.full(n_tasks, -1, dtype=np.int64)
    heavy = np.empty((n_heavy, 3), dtype=np.int64)
    t = 0
    h = 0
    slot = 0
    start = 0
    cost = 0
    for i in range(n_rows):
        deg = indptr[i + 1] - indptr[i]
        if deg > heavy_limit:
            if cost > 0:
                tasks[t, 0] = start
                tasks[t, 1] = i
                tasks[t, 2] = indptr[start]
                tasks[t, 3] = indptr[i]
                t += 1
                cost = 0
            nseg = (deg + target - 1) // target
            heavy[h, 0] = i
            heavy[h, 1] = slot
            heavy[h, 2] = nseg
            h += 1
            for s in range(nseg):
                tasks[t, 0] = i
                tasks[t, 1] = i + 1
                tasks[t, 2] = indptr[i] + s * target
                tasks[t, 3] = min(indptr[i] + (s + 1) * target, indptr[i + 1])
                seg_slot[t] = slot
                slot += 1
                t += 1
            start = i + 1
        else:
            cost += deg + ROW_COST
            if cost >= target:
                tasks[t, 0] = start
                tasks[t, 1] = i + 1
                tasks[t, 2] = indptr[start]
                tasks[t, 3] = indptr[i + 1]
                t += 1
                cost = 0
                start = i + 1
    if cost > 0:
        tasks[t, 0] = start
        tasks[t, 1] = n_rows
        tasks[t, 2] = indptr[start]
        tasks[t, 3] = indptr[n_rows]
        t += 1
    return tasks, seg_slot, heavy, slot


def task_target(n_rows: int, nnz: int) -> int:
    """Edges-plus-row-cost per task: a function of the problem size only."""
    total = nnz + ROW_COST * n_rows
    return max(MIN_TARGET, -(-total // MAX_TASKS))


def make_tasks(indptr: np.ndarray):
    """Task partition of a CSR matrix given its int64 ``indptr`` (numpy).

    Returns ``(tasks, seg_slot, heavy, n_slots)``, see ``_make_tasks``.
    Exposed for tests (the partition must not depend on the thread count).
    """
    n_rows = indptr.shape[0] - 1
    nnz = int(indptr[-1]) if n_rows >= 0 and indptr.shape[0] else 0
    return _make_tasks(indptr, task_target(n_rows, nnz))


# ---------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------


@njit(cache=True, inline="always")
def _row_plain(indices, values, x, e0, e1, acc):
    """acc[:] = sum_{e in [e0, e1)} values[e] * x[indices[e]], additions in edge order."""
    d = acc.shape[0]
    for k in range(d):
        acc[k] = 0
    e = e0
    while e + 4 <= e1:
        c0 = indices[e]
        c1 = indices[e + 1]
        c2 = indices[e + 2]
        c3 = indices[e + 3]
        # Prefetch the rows of the group PREFETCH_DISTANCE edges ahead; the
        # clamp keeps the address inside x for the last groups of the row.
        p = e + PREFETCH_DISTANCE
        if p + 4 <= e1:
            _prefetch_row(x, indices[p])
            _prefetch_row(x, indices[p + 1])
            _prefetch_row(x, indices[p + 2])
            _prefetch_row(x, indices[p + 3])
        v0 = values[e]
        v1 = values[e + 1]
        v2 = values[e + 2]
        v3 = values[e + 3]
        for k in range(d):
            acc[k] = acc[k] + v0 * x[c0, k] + v1 * x[c1, k] + v2 * x[c2, k] + v3 * x[c3, k]
        e += 4
    while e < e1:
        c0 = indices[e]
        v0 = values[e]
        for k in range(d):
            acc[k] = acc[k] + v0 * x[c0, k]
        e += 1


@njit(cache=True, inline="always")
def _row_rel(indices, values, relation, table, x, e0, e1, acc):
    """acc[:] = sum_e values[e] * table[relation[e]] * x[indices[e]], in edge order."""
    d = acc.shape[0]
    for k in range(d):
        acc[k] = 0
    e = e0
    while e + 4 <= e1:
        c0 = indices[e]
        c1 = indices[e + 1]
        c2 = indices[e + 2]
        c3 = indices[e + 3]
        p = e + PREFETCH_DISTANCE
        if p + 4 <= e1:
            _prefetch_row(x, indices[p])
            _prefetch_row(x, indices[p + 1])
            _prefetch_row(x, indices[p + 2])
            _prefetch_row(x, indices[p + 3])
        r0 = relation[e]
        r1 = relation[e + 1]
        r2 = relation[e + 2]
        r3 = relation[e + 3]
        v0 = values[e]
        v1 = values[e + 1]
        v2 = values[e + 2]
        v3 = values[e + 3]
        for k in range(d):
            acc[k] = (
                acc[k]
                + v0 * table[r0, k] * x[c0, k]
                + v1 * table[r1, k] * x[c1, k]
                + v2 * table[r2, k] * x[c2, k]
                + v3 * table[r3, k] * x[c3, k]
            )
        e += 4
    while e < e1:
        c0 = indices[e]
        r0 = relation[e]
        v0 = values[e]
        for k in range(d):
            acc[k] = acc[k] + v0 * table[r0, k] * x[c0, k]
        e += 1


@njit(parallel=True, fastmath=False, cache=True)
def _spmm_kernel(indptr, indices, values, x, out, tasks, seg_slot, heavy, seg_buf):
    d = x.shape[1]
    n_tasks = tasks.shape[0]
    for t in prange(n_tasks):
        acc = np.empty(d, dtype=out.dtype)
        s = seg_slot[t]
        if s >= 0:
            _row_plain(indices, values, x, tasks[t, 2], tasks[t, 3], acc)
            for k in range(d):
                seg_buf[s, k] = acc[k]
        else:
            for i in range(tasks[t, 0], tasks[t, 1]):
                _row_plain(indices, values, x, indptr[i], indptr[i + 1], acc)
                for k in range(d):
                    out[i, k] = acc[k]
    _reduce_heavy(heavy, seg_buf, out)


@njit(parallel=True, fastmath=False, cache=True)
def _spmm_rel_kernel(indptr, indices, values, relation, table, x, out, tasks, seg_slot, heavy, seg_buf):
    d = x.shape[1]
    n_tasks = tasks.shape[0]
    for t in prange(n_tasks):
        acc = np.empty(d, dtype=out.dtype)
        s = seg_slot[t]
        if s >= 0:
            _row_rel(indices, values, relation, table, x, tasks[t, 2], tasks[t, 3], acc)
            for k in range(d):
                seg_buf[s, k] = acc[k]
        else:
            for i in range(tasks[t, 0], tasks[t, 1]):
                _row_rel(indices, values, relation, table, x, indptr[i], indptr[i + 1], acc)
                for k in range(d):
                    out[i, k] = acc[k]
    _reduce_heavy(heavy, seg_buf, out)


@njit(fastmath=False, cache=True)
def _reduce_heavy(heavy, seg_buf, out):
    """out[row] = sum of the row's segment partials, in segment order.

    Sequential: there are few heavy rows and few segments per row.
    """
    d = out.shape[1]
    for h in range(heavy.shape[0]):
        row = heavy[h, 0]
        first = heavy[h, 1]
        n = heavy[h, 2]
        for k in range(d):
            out[row, k] = seg_buf[first, k]
        for s in range(first + 1, first + n):
            for k in range(d):
                out[row, k] = out[row, k] + seg_buf[s, k]


@njit(cache=True, inline="always")
def _row_dx_g(indices_t, values_t, relation_t, table, dy, x, j, e0, e1, acc, gp, need_dx):
    """One row j of A^T: acc = sum_e v_e table[r_e] dy[i_e] (if need_dx) and
    gp[r_e] += v_e * x[j] * dy[i_e] for every edge, in edge order.

    dy[i_e] is gathered once for both results.
    """
    d = dy.shape[1]
    if need_dx:
        for k in range(d):
            acc[k] = 0
    for e in range(e0, e1):
        i = indices_t[e]
        r = relation_t[e]
        v = values_t[e]
        p = e + PREFETCH_DISTANCE
        if p < e1:
            _prefetch_row(dy, indices_t[p])
        if need_dx:
            for k in range(d):
                acc[k] = acc[k] + v * table[r, k] * dy[i, k]
        for k in range(d):
            gp[r, k] = gp[r, k] + v * x[j, k] * dy[i, k]


@njit(parallel=True, fastmath=False, cache=True)
def _backward_kernel(
    indptr_t,
    indices_t,
    values_t,
    relation_t,
    table,
    dy,
    x,
    dx,
    g_part,
    need_dx,
    need_g,
    tasks,
    seg_slot,
    heavy,
    seg_buf,
):
    """dx (if need_dx) and per-task g partials (if need_g) over the transposed graph.

    Row j of A^T: dx[j] = sum_e v_e * table[r_e] * dy[i_e];
    g_part[t, r] = sum_{e in task t, r_e = r} v_e * x[j] * dy[i_e].
    """
    d = dy.shape[1]
    n_tasks = tasks.shape[0]
    for t in prange(n_tasks):
        acc = np.empty(d, dtype=dy.dtype)
        gp = g_part[t]
        s = seg_slot[t]
        if need_g:
            for r in range(gp.shape[0]):
                for k in range(d):
                    gp[r, k] = 0
        for j in range(tasks[t, 0], tasks[t, 1]):
            if s >= 0:
                e0 = tasks[t, 2]
                e1 = tasks[t, 3]
            else:
                e0 = indptr_t[j]
                e1 = indptr_t[j + 1]
            if need_g:
                _row_dx_g(indices_t, values_t, relation_t, table, dy, x, j, e0, e1, acc, gp, need_dx)
            else:
                # dx alone is the forward kernel on the transpose.
                _row_rel(indices_t, values_t, relation_t, table, dy, e0, e1, acc)
            if need_dx:
                if s >= 0:
                    for k in range(d):
                        seg_buf[s, k] = acc[k]
                else:
                    for k in range(d):
                        dx[j, k] = acc[k]
    if need_dx:
        _reduce_heavy(heavy, seg_buf, dx)


@njit(cache=True)
def _sum_partials(g_part, g):
    """g = sum_t g_part[t] in task order, accumulated in float64."""
    R = g.shape[0]
    d = g.shape[1]
    acc = np.zeros((R, d), dtype=np.float64)
    for t in range(g_part.shape[0]):
        for r in range(R):
            for k in range(d):
                acc[r, k] += g_part[t, r, k]
    for r in range(R):
        for k in range(d):
            g[r, k] = acc[r, k]


# ---------------------------------------------------------------------------
# torch wrappers (the backend contract)
# ---------------------------------------------------------------------------


class _chunked_schedule:
    """Dynamic prange scheduling, SCHED_CHUNK tasks per grab, for the calls in its block.

    Set from Python around the call: a ``with numba.parallel_chunksize`` block inside the
    jitted function would make it uncachable.
    """

    def __enter__(self):
        self.old = numba.set_parallel_chunksize(SCHED_CHUNK)

    def __exit__(self, *exc):
        numba.set_parallel_chunksize(self.old)


def _np(t: torch.Tensor) -> np.ndarray:
    """Zero-copy numpy view of a contiguous CPU tensor."""
    return t.detach().numpy()


def _values_np(values, nnz: int, dtype) -> np.ndarray:
    # The op layer always passes values cast to x's dtype; None (unit weights)
    # is accepted so the kernels are usable on their own.
    if values is None:
        return np.ones(nnz, dtype=dtype)
    return _np(values)


def _partition(indptr_np: np.ndarray, d: int, dtype):
    tasks, seg_slot, heavy, n_slots = make_tasks(indptr_np)
    seg_buf = np.empty((max(n_slots, 1), d), dtype=dtype)
    return tasks, seg_slot, heavy, seg_buf


def spmm(indptr, indices, values, x, n_rows):
    """Sparse-dense product ``y = A @ x`` of a CSR matrix A and a dense x.

    Args:
        indptr: (n_rows + 1,) int64.
        indices: (nnz,) int32 or int64 column ids in ``[0, x.shape[0])``.
        values: (nnz,) same dtype as x (or None for unit weights).
        x: (n_cols, d) float32 or float64, contiguous.
        n_rows: number of output rows.

    Returns:
        (n_rows, d) tensor of x's dtype: ``y[i] = sum_{e in row i} values[e] * x[indices[e]]``.
        Deterministic: the same bits for any number of threads.
    """
    d = x.shape[1]
    out = torch.empty((n_rows, d), dtype=x.dtype)
    if n_rows == 0 or d == 0:
        return out
    ip = _np(indptr)
    xn = _np(x)
    tasks, seg_slot, heavy, seg_buf = _partition(ip, d, xn.dtype)
    with _chunked_schedule():
        _spmm_kernel(
            ip,
            _np(indices),
            _values_np(values, indices.shape[0], xn.dtype),
            xn,
            _np(out),
            tasks,
            seg_slot,
            heavy,
            seg_buf,
        )
    return out


def spmm_rel(indptr, indices, values, relation, table, x, n_rows):
    """Fused heterogeneous product ``y[i] = sum_e values[e] * table[relation[e]] * x[indices[e]]``.

    Args:
        indptr: (n_rows + 1,) int64.
        indices: (nnz,) int32 or int64.
        values: (nnz,) dtype of x (or None for unit weights).
        relation: (nnz,) int32 relation id of each edge, in ``[0, R)``.
        table: (R, d) dtype of x: per-relation elementwise scale (``w_r * E_r``).
        x: (n_cols, d) float32 or float64.
        n_rows: number of output rows.

    Returns:
        (n_rows, d) tensor of x's dtype; deterministic across thread counts.
    """
    d = x.shape[1]
    out = torch.empty((n_rows, d), dtype=x.dtype)
    if n_rows == 0 or d == 0:
        return out
    ip = _np(indptr)
    xn = _np(x)
    tasks, seg_slot, heavy, seg_buf = _partition(ip, d, xn.dtype)
    with _chunked_schedule():
        _spmm_rel_kernel(
            ip,
            _np(indices),
            _values_np(values, indices.shape[0], xn.dtype),
            _np(relation),
            _np(table),
            xn,
            _np(out),
            tasks,
            seg_slot,
            heavy,
            seg_buf,
        )
    return out


def spmm_rel_backward(
    indptr_t, indices_t, values_t, relation_t, table, dy, x, num_relations, need_dx, need_g
):
    """Backward of ``spmm_rel`` over the transposed graph A^T.

    Args:
        indptr_t: (n_cols + 1,) int64, row j of A^T = column j of A.
        indices_t: (nnz,) int32/int64: the forward output row i of each edge.
        values_t: (nnz,) dtype of x, aligned with indices_t (None: unit weights).
        relation_t: (nnz,) int32, aligned with indices_t.
        table: (R, d) dtype of x.
        dy: (n_rows, d) gradient of the forward output.
        x: (n_cols, d) forward input (read only when need_g).
        num_relations: R.
        need_dx, need_g: which results to compute.

    Returns:
        ``(dx, g)``: dx (n_cols, d) with
        ``dx[j] = sum_{e in row j of A^T} values_t[e] * table[relation_t[e]] * dy[indices_t[e]]``
        or None; g (R, d) with
        ``g[r] = sum_{e: relation_t[e] = r} values_t[e] * x[j(e)] * dy[indices_t[e]]`` or None.
        Deterministic: g is reduced from per-task partials in task order (float64).
    """
    need_dx = bool(need_dx)
    need_g = bool(need_g)
    n_cols = indptr_t.shape[0] - 1
    d = dy.shape[1]
    R = int(num_relations)
    dx = torch.empty((n_cols, d), dtype=dy.dtype) if need_dx else None
    g = torch.zeros((R, d), dtype=dy.dtype) if need_g else None
    if not (need_dx or need_g) or n_cols == 0 or d == 0:
        if dx is not None:
            dx.zero_()
        return dx, g
    ip = _np(indptr_t)
    dyn = _np(dy)
    tasks, seg_slot, heavy, seg_buf = _partition(ip, d, dyn.dtype)
    if need_g:
        g_part = np.empty((tasks.shape[0], R, d), dtype=dyn.dtype)
    else:
        g_part = np.empty((tasks.shape[0], 0, d), dtype=dyn.dtype)
    dx_np = _np(dx) if need_dx else np.empty((0, d), dtype=dyn.dtype)
    xn = _np(x) if need_g else dyn[:0]
    rel = _np(relation_t)
    tab = _np(table)
    with _chunked_schedule():
        _backward_kernel(
            ip,
            _np(indices_t),
            _values_np(values_t, indices_t.shape[0], dyn.dtype),
            rel,
            tab,
            dyn,
            xn,
            dx_np,
            g_part,
            need_dx,
            need_g,
            tasks,
            seg_slot,
            heavy,
            seg_buf,
        )
    if need_g:
        _sum_partials(g_part, _np(g))
    return dx, g


# ---------------------------------------------------------------------------
# edge-value gradient (SDDMM)
# ---------------------------------------------------------------------------
#: Edges per parallel chunk of the SDDMM: fixed, so hubs are shared by every thread and each
#: edge's sum is computed by one thread in feature order (same bits for any thread count).
SDDMM_CHUNK = 2048


@njit(parallel=True, fastmath=False, cache=True)
def _sddmm_kernel(indptr, indices, relation, table, dy, x, out, has_rel):
    nnz = indices.shape[0]
    d = x.shape[1]
    n_chunks = (nnz + SDDMM_CHUNK - 1) // SDDMM_CHUNK
    for c in prange(n_chunks):
        e0 = c * SDDMM_CHUNK
        e1 = min(nnz, e0 + SDDMM_CHUNK)
        i = np.searchsorted(indptr, e0, side="right") - 1
        for e in range(e0, e1):
            while indptr[i + 1] <= e:
                i += 1
            j = indices[e]
            acc = 0.0
            if has_rel:
                r = relation[e]
                for k in range(d):
                    acc += dy[i, k] * x[j, k] * table[r, k]
            else:
                for k in range(d):
                    acc += dy[i, k] * x[j, k]
            out[e] = acc


def sddmm(indptr, indices, relation, table, dy, x, n_rows):
    """Gradient of the edge values: ``dv[e] = sum_d dy[row_e, d] * x[col_e, d]`` (times
    ``table[relation[e], d]`` when ``table`` is given), accumulated in float64 per edge.

    Args: indptr (n_rows + 1,) int64; indices (nnz,) int32/int64; relation (nnz,) int32 or
    None; table (R, d) or None; dy (n_rows, d); x (n_cols, d), one float dtype.
    Returns (nnz,) of x's dtype; deterministic.
    """
    nnz = indices.shape[0]
    out = torch.empty(nnz, dtype=x.dtype)
    if nnz == 0:
        return out
    d = x.shape[1]
    has_rel = table is not None
    rel = _np(relation) if has_rel else np.zeros(1, dtype=np.int32)
    tab = _np(table) if has_rel else np.zeros((1, max(d, 1)), dtype=_np(x).dtype)
    _sddmm_kernel(_np(indptr), _np(indices), rel, tab, _np(dy), _np(x), _np(out), has_rel)
    return out
