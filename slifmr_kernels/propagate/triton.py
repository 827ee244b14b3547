"""Triton backend of the fused heterogeneous propagation (docs/GPU.md).

Contract: docs/ARCHITECTURE.md, "propagate".  The op layer has validated the arguments, made
every tensor contiguous and cast ``values`` / ``table`` to the dtype of ``x``; ``indptr`` is
int64, ``indices`` int32 or int64, ``relation`` int32.  float32 and float64 both work.

Runs on CUDA tensors, and on CPU tensors when ``TRITON_INTERPRET=1`` (how CI tests it).

Design
------
*Segments.*  Every output row is cut into segments of at most ``CHUNK`` edges.  A light row
(degree <= CHUNK, including empty rows) is one segment and its program writes the output row
directly.  A heavy row is split into several fixed-size chunks; each chunk writes a partial row
into a scratch buffer and a second kernel sums a heavy row's chunks in chunk order (level by
level in groups of ``FAN_IN`` for hubs: a fixed tree).  The
split depends on the degrees only, so power-law rows are balanced and the result is
deterministic (no atomics anywhere).

*Programs.*  The segments are dealt to a fixed number of programs ``P`` by a nnz-balanced
partition (``searchsorted`` on the cumulative segment cost); each program walks its contiguous
range of segments in order, so "several light rows per program" falls out and one program never
holds more than ~``TARGET_WORK`` edges of work plus one chunk.  ``P`` is a function of the
problem size only (never of the device), so the bits do not depend on the GPU model.

*Backward.*  ``spmm_rel_backward`` runs the same kernel over the transposed graph.  With
``need_g`` every program also owns a private slice ``gpart[p, R, d]`` of per-relation partial
sums of ``v * x[j] * dy[i]`` (read-modify-write without races because nobody else touches it);
the same fixed-tree reduction
sums the slices over ``p`` in program order.  ``P`` is capped so the slices stay within
``G_BUDGET_BYTES``.
"""

from __future__ import annotations

import weakref

import torch

from .._triton import check_launchable, tl, triton

__all__ = ["spmm", "spmm_rel", "spmm_rel_backward", "sddmm"]

#: Edges per segment; rows with more edges are split into chunks of exactly this many edges.
CHUNK = 256
#: Edges (plus per-segment overhead) one program aims to process: more, smaller programs keep
#: more row gathers in flight (1024 with 2 warps was the fastest of the 12 partitions and
#: tiles bench/gpu_check.py tried on an H200: 3.37 ms against 4.74 ms for 4096 with 4 warps).
TARGET_WORK = 1024
#: Fixed per-segment cost in the partition, in edge equivalents (row set-up and write).
SEG_COST = 8
#: Edges a program loads per step (rows of its [BLOCK_E, BLOCK_D] gather tile).
BLOCK_E = 32
#: Warps per program.
NUM_WARPS = 2
#: Cap on the size of the per-program g partials ``[P, R, d]``.
G_BUDGET_BYTES = 64 << 20


# ---------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------
@triton.jit
def _seg_kernel(
    INDPTR,
    INDICES,
    VALUES,
    RELATION,
    TABLE,
    X,  # graph and dense input (X = x or dy)
    XG,  # backward only: the x whose rows are fixed per transposed row (g = v * XG[j] * X[i])
    SEG_ROW,
    SEG_START,
    SEG_END,
    SEG_SLOT,  # segment table
    PROG_PTR,  # [P + 1] segment range of each program
    Y,  # [n_rows, d] output (light rows)
    HPART,  # [n_heavy_chunks, d] partial rows of heavy rows
    GPART,  # [P, R, d] private per-program partials of g
    D,
    R,
    HAS_VALUES: tl.constexpr,
    HAS_TABLE: tl.constexpr,
    WRITE_Y: tl.constexpr,
    NEED_G: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    pid_d = tl.program_id(1)
    cols = pid_d * BLOCK_D + tl.arange(0, BLOCK_D)
    cmask = cols < D
    lane_e = tl.arange(0, BLOCK_E)
    s_begin = tl.load(PROG_PTR + pid)
    s_end = tl.load(PROG_PTR + pid + 1)
    for s in range(s_begin, s_end):
        row = tl.load(SEG_ROW + s)
        e_begin = tl.load(SEG_START + s)
        e_end = tl.load(SEG_END + s)
        slot = tl.load(SEG_SLOT + s)
        acc = tl.zeros([BLOCK_D], dtype=X.dtype.element_ty)
        if NEED_G:
            # x[j] is fixed for the whole transposed row j = row.
            xg = tl.load(XG + row * D + cols, mask=cmask, other=0.0)
        for e0 in range(e_begin, e_end, BLOCK_E):
            eidx = e0 + lane_e
            emask = eidx < e_end
            nbr = tl.load(INDICES + eidx, mask=emask, other=0).to(tl.int64)
            m2 = emask[:, None] & cmask[None, :]
            xv = tl.load(X + nbr[:, None] * D + cols[None, :], mask=m2, other=0.0)
            if HAS_VALUES:
                v = tl.load(VALUES + eidx, mask=emask, other=0.0)
                xv = xv * v[:, None]
            if HAS_TABLE or NEED_G:
                rel = tl.load(RELATION + eidx, mask=emask, other=0)
            if HAS_TABLE:
                tv = tl.load(TABLE + rel[:, None].to(tl.int64) * D + cols[None, :], mask=m2, other=0.0)
                acc += tl.sum(xv * tv, axis=0)
            else:
                acc += tl.sum(xv, axis=0)
            if NEED_G:
                # Per-relation sums of v * dy[i] over this edge block, only for the relations
                # present in it (rows usually carry few relations), folded into the program's
                # private slice: no other program writes it, so no atomics are needed.
                r_lo = tl.min(tl.where(emask, rel, R), axis=0)
                r_hi = tl.max(tl.where(emask, rel, -1), axis=0)
                for r in range(r_lo, r_hi + 1):
                    sel = (rel == r) & emask
                    part = tl.sum(tl.where(sel[:, None], xv, 0.0), axis=0)
                    gp = GPART + (pid * R + r) * D + cols
                    gold = tl.load(gp, mask=cmask, other=0.0)
                    tl.store(gp, gold + part * xg, mask=cmask)
        if WRITE_Y:
            if slot < 0:
                tl.store(Y + row * D + cols, acc, mask=cmask)
            else:
                tl.store(HPART + slot * D + cols, acc, mask=cmask)


@triton.jit
def _segment_sum_kernel(PART, PTR, OUT_ROW, OUT, W, HAS_OUT_ROW: tl.constexpr, BLOCK: tl.constexpr):
    """OUT[OUT_ROW[s] or s] = sum of the rows PTR[s] .. PTR[s + 1] - 1 of PART [C, W], in
    increasing row order (fixed order: deterministic)."""
    s = tl.program_id(0)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    cmask = cols < W
    p0 = tl.load(PTR + s)
    p1 = tl.load(PTR + s + 1)
    acc = tl.zeros([BLOCK], dtype=OUT.dtype.element_ty)
    for p in range(p0, p1):
        acc += tl.load(PART + p * W + cols, mask=cmask, other=0.0)
    if HAS_OUT_ROW:
        row = tl.load(OUT_ROW + s)
    else:
        row = s
    tl.store(OUT + row * W + cols, acc, mask=cmask)


#: Rows one program sums in one go; longer segments are reduced level by level in groups of
#: this many (a fixed tree: no long serial loop on the GPU, still deterministic).
FAN_IN = 64


def _ordered_segment_sum(part, ptr, out, out_row=None):
    """``out[out_row[s] or s] = sum(part[ptr[s]:ptr[s + 1]])`` for every segment s, in a fixed
    order. part [C, W]; ptr int64 [S + 1] (non-decreasing, ptr[0] = 0); out [*, W]."""
    n_seg = ptr.numel() - 1
    w = part.shape[1]
    if n_seg == 0 or w == 0:
        return
    block = max(16, min(256, triton.next_power_of_2(w)))
    dev = part.device
    while True:
        lens = ptr[1:] - ptr[:-1]
        if int(lens.max()) <= FAN_IN:
            break
        n_sub = (lens + FAN_IN - 1) // FAN_IN
        sub_ptr = torch.zeros(n_seg + 1, dtype=torch.int64, device=dev)
        torch.cumsum(n_sub, 0, out=sub_ptr[1:])
        total = int(sub_ptr[-1])
        owner = torch.repeat_interleave(torch.arange(n_seg, device=dev), n_sub, output_size=total)
        k = torch.arange(total, device=dev) - sub_ptr[:-1][owner]
        # the groups tile [ptr[0], ptr[-1]) in order: their starts plus the end form a ptr
        group_ptr = torch.cat([ptr[:-1][owner] + k * FAN_IN, ptr[-1:]])
        nxt = torch.empty((total, w), dtype=part.dtype, device=dev)
        _segment_sum_kernel[(total, triton.cdiv(w, block))](
            part, group_ptr, group_ptr, nxt, w, HAS_OUT_ROW=False, BLOCK=block
        )
        part, ptr = nxt, sub_ptr
    _segment_sum_kernel[(n_seg, triton.cdiv(w, block))](
        part,
        ptr,
        out_row if out_row is not None else ptr,
        out,
        w,
        HAS_OUT_ROW=out_row is not None,
        BLOCK=block,
    )


# ---------------------------------------------------------------------------------------------
# planning (degrees only; device-side torch ops plus a few host reads of sizes)
# ---------------------------------------------------------------------------------------------
class _Plan:
    """Segments of a CSR and their partition over programs.

    Attributes (all on the device of ``indptr``): ``seg_row/start/end`` int64 [S];
    ``seg_slot`` int64 [S] (-1 for a whole row, else its chunk's row in the heavy scratch);
    ``prog_ptr`` int64 [P + 1]; ``heavy_row`` int64 [H]; ``heavy_ptr`` int64 [H + 1];
    ``n_chunks`` (python int) heavy chunks in total; ``n_progs`` = P.
    """

    def __init__(self, indptr: torch.Tensor, n_rows: int, max_progs: int | None = None):
        dev = indptr.device
        deg = indptr[1:] - indptr[:-1]
        nseg = torch.clamp((deg + CHUNK - 1) // CHUNK, min=1)  # empty rows: one empty segment
        seg_ptr = torch.zeros(n_rows + 1, dtype=torch.int64, device=dev)
        torch.cumsum(nseg, 0, out=seg_ptr[1:])
        n_seg = int(seg_ptr[-1]) if n_rows else 0
        row_of = torch.repeat_interleave(torch.arange(n_rows, device=dev), nseg, output_size=n_seg)
        k_in_row = torch.arange(n_seg, device=dev) - seg_ptr[:-1][row_of]
        self.seg_row = row_of
        self.seg_start = indptr[:-1][row_of] + k_in_row * CHUNK
        self.seg_end = torch.minimum(self.seg_start + CHUNK, indptr[1:][row_of])
        heavy = nseg[row_of] > 1
        # scratch row of each heavy chunk, in segment order (= row order, then chunk order)
        slot = torch.cumsum(heavy.to(torch.int64), 0) - 1
        self.seg_slot = torch.where(heavy, slot, torch.full_like(slot, -1))
        self.n_chunks = int(heavy.sum()) if n_seg else 0
        heavy_rows = torch.nonzero(nseg > 1).flatten()
        self.heavy_row = heavy_rows
        self.heavy_ptr = torch.zeros(heavy_rows.numel() + 1, dtype=torch.int64, device=dev)
        torch.cumsum(nseg[heavy_rows], 0, out=self.heavy_ptr[1:])
        # nnz-balanced partition of segments over programs (a function of the sizes only)
        cost = (self.seg_end - self.seg_start) + SEG_COST
        cum = torch.cumsum(cost, 0)
        total = int(cum[-1]) if n_seg else 0
        p = max(1, -(-total // TARGET_WORK)) if n_seg else 0
        if max_progs is not None:
            p = min(p, max(1, max_progs))
        self.n_progs = p
        if p:
            cuts = torch.arange(1, p, device=dev, dtype=torch.int64) * total // p
            inner = torch.searchsorted(cum, cuts, right=True)
            self.prog_ptr = torch.cat(
                [
                    torch.zeros(1, dtype=torch.int64, device=dev),
                    inner,
                    torch.full((1,), n_seg, dtype=torch.int64, device=dev),
                ]
            )
        else:
            self.prog_ptr = torch.zeros(1, dtype=torch.int64, device=dev)


#: Plans of the most recently used graphs, newest last: (weak reference to indptr, its
#: version, n_rows, max_progs, plan). A model propagates over the same few graphs at every
#: step, and a plan (several small kernels plus host reads of sizes, which also synchronise)
#: depends on the degrees only.
_PLANS: list = []
PLAN_CACHE_SIZE = 8


def _plan_for(indptr: torch.Tensor, n_rows: int, max_progs: int | None) -> _Plan:
    """The plan of ``indptr``, reused while the same tensor object is unchanged in place."""
    # forget graphs that died and stale versions of this one
    _PLANS[:] = [
        e for e in _PLANS if e[0]() is not None and (e[0]() is not indptr or e[1] == indptr._version)
    ]
    for i, (ref, version, nr, mp, plan) in enumerate(_PLANS):
        if ref() is indptr and version == indptr._version and nr == n_rows and mp == max_progs:
            _PLANS.append(_PLANS.pop(i))
            return plan
    plan = _Plan(indptr, n_rows, max_progs)
    _PLANS.append((weakref.ref(indptr), indptr._version, n_rows, max_progs, plan))
    del _PLANS[:-PLAN_CACHE_SIZE]
    return plan


def _block_d(d: int) -> int:
    return max(16, min(128, triton.next_power_of_2(max(d, 1))))


def _run(
    indptr,
    indices,
    values,
    relation,
    table,
    x,
    n_rows,
    *,
    xg=None,
    num_relations=0,
    write_y=True,
    need_g=False,
):
    """Shared driver: returns (y or None, g or None)."""
    check_launchable(x)
    d = x.shape[1]
    dev, dt = x.device, x.dtype
    y = torch.empty((n_rows, d), dtype=dt, device=dev) if write_y else None
    g = torch.zeros((num_relations, d), dtype=dt, device=dev) if need_g else None
    if n_rows == 0 or d == 0:
        if y is not None:
            y.zero_()
        return y, g
    max_progs = None
    if need_g:
        max_progs = max(1, G_BUDGET_BYTES // max(1, num_relations * d * x.element_size()))
    plan = _plan_for(indptr, n_rows, max_progs)
    bd = _block_d(d)
    grid = (plan.n_progs, triton.cdiv(d, bd))
    hpart = torch.empty((max(plan.n_chunks, 1), d), dtype=dt, device=dev)
    gpart = torch.zeros((plan.n_progs, num_relations, d), dtype=dt, device=dev) if need_g else x.new_empty(1)
    has_values = values is not None
    has_table = table is not None
    dummy = x.new_empty(1)
    _seg_kernel[grid](
        indptr,
        indices,
        values if has_values else dummy,
        relation if relation is not None else indices,
        table if has_table else dummy,
        x,
        xg if need_g else dummy,
        plan.seg_row,
        plan.seg_start,
        plan.seg_end,
        plan.seg_slot,
        plan.prog_ptr,
        y if write_y else dummy,
        hpart,
        gpart,
        d,
        max(num_relations, 1),
        HAS_VALUES=has_values,
        HAS_TABLE=has_table,
        WRITE_Y=write_y,
        NEED_G=need_g,
        BLOCK_E=BLOCK_E,
        BLOCK_D=bd,
        num_warps=NUM_WARPS,
    )
    if write_y and plan.heavy_row.numel():
        _ordered_segment_sum(hpart, plan.heavy_ptr, y, plan.heavy_row)
    if need_g and num_relations:
        # one segment: the P program slices, summed in program order
        whole = torch.tensor([0, plan.n_progs], dtype=torch.int64, device=dev)
        _ordered_segment_sum(gpart.view(plan.n_progs, num_relations * d), whole, g.view(1, num_relations * d))
    return y, g


# ---------------------------------------------------------------------------------------------
# backend contract
# ---------------------------------------------------------------------------------------------
def spmm(indptr, indices, values, x, n_rows):
    """y[i] = sum_{e in row i} values[e] * x[indices[e]].

    indptr int64 [n_rows + 1]; indices int32/int64 [nnz]; values [nnz] (dtype of x, or None for
    all ones); x [n_cols, d] float32/float64.  Returns y [n_rows, d], dtype of x.
    Deterministic (fixed segmentation, fixed-order reductions, no atomics).
    """
    y, _ = _run(indptr, indices, values, None, None, x, int(n_rows))
    return y


def spmm_rel(indptr, indices, values, relation, table, x, n_rows):
    """y[i] = sum_e values[e] * table[relation[e]] * x[indices[e]] (elementwise in d).

    relation int32 [nnz]; table [R, d] dtype of x; otherwise as :func:`spmm`.
    Returns y [n_rows, d], dtype of x.  Deterministic.
    """
    y, _ = _run(indptr, indices, values, relation, table, x, int(n_rows))
    return y


def spmm_rel_backward(
    indptr_t, indices_t, values_t, relation_t, table, dy, x, num_relations, need_dx, need_g
):
    """Gradients of :func:`spmm_rel`, computed over the transposed graph A^T.

    indptr_t int64 [n_x + 1] (n_x = x.shape[0]); indices_t [nnz] = forward output row of each
    edge; values_t [nnz]; relation_t int32 [nnz]; table [R, d]; dy [n_rows, d]; x [n_x, d].
    Returns ``(dx, g)``: dx [n_x, d] (or None unless need_dx), g [R, d] (or None unless
    need_g), both dtype of x, with
    ``dx[j] = sum_e values_t[e] * table[relation_t[e]] * dy[indices_t[e]]`` and
    ``g[r] = sum_{e: relation_t[e] = r} values_t[e] * x[j(e)] * dy[indices_t[e]]``.
    Deterministic: g is summed from per-program partials in program order.
    """
    num_relations = int(num_relations)
    if not need_dx and not need_g:
        return None, None
    dx, g = _run(
        indptr_t,
        indices_t,
        values_t,
        relation_t,
        table,
        dy,
        int(x.shape[0]),
        xg=x,
        num_relations=num_relations,
        write_y=bool(need_dx),
        need_g=bool(need_g),
    )
    return (dx if need_dx else None), (g if need_g else None)


@triton.jit
def _sddmm_kernel(
    ROWS,
    COLS,
    RELATION,
    TABLE,
    DY,
    X,
    OUT,
    NNZ,
    D,
    HAS_TABLE: tl.constexpr,
    BLOCK_E: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    pid = tl.program_id(0)
    eidx = pid * BLOCK_E + tl.arange(0, BLOCK_E)
    emask = eidx < NNZ
    row = tl.load(ROWS + eidx, mask=emask, other=0).to(tl.int64)
    col = tl.load(COLS + eidx, mask=emask, other=0).to(tl.int64)
    if HAS_TABLE:
        rel = tl.load(RELATION + eidx, mask=emask, other=0).to(tl.int64)
    acc = tl.zeros([BLOCK_E], dtype=OUT.dtype.element_ty)
    for d0 in range(0, D, BLOCK_D):
        cols = d0 + tl.arange(0, BLOCK_D)
        m2 = emask[:, None] & (cols < D)[None, :]
        p = tl.load(DY + row[:, None] * D + cols[None, :], mask=m2, other=0.0) * tl.load(
            X + col[:, None] * D + cols[None, :], mask=m2, other=0.0
        )
        if HAS_TABLE:
            p = p * tl.load(TABLE + rel[:, None] * D + cols[None, :], mask=m2, other=0.0)
        acc += tl.sum(p, axis=1)
    tl.store(OUT + eidx, acc, mask=emask)


#: Edges per program of the SDDMM (edge-value gradient).
SDDMM_BLOCK_E = 64


def sddmm(indptr, indices, relation, table, dy, x, n_rows):
    """Gradient of the edge values: ``dv[e] = sum_d dy[row_e, d] * x[col_e, d]`` (times
    ``table[relation[e], d]`` when ``table`` is given). One program per ``SDDMM_BLOCK_E``
    edges, each edge summed over d in a fixed order: deterministic, no atomics.
    Returns (nnz,) of x's dtype."""
    check_launchable(x)
    nnz = indices.numel()
    out = torch.empty(nnz, dtype=x.dtype, device=x.device)
    d = x.shape[1]
    if nnz == 0:
        return out
    if d == 0:
        return out.zero_()
    n_rows = int(n_rows)
    rows = torch.repeat_interleave(
        torch.arange(n_rows, device=x.device), indptr[1:] - indptr[:-1], output_size=nnz
    )
    has_table = table is not None
    _sddmm_kernel[(triton.cdiv(nnz, SDDMM_BLOCK_E),)](
        rows,
        indices,
        relation if has_table else indices,
        table if has_table else x,
        dy,
        x,
        out,
        nnz,
        d,
        HAS_TABLE=has_table,
        BLOCK_E=SDDMM_BLOCK_E,
        BLOCK_D=min(64, _block_d(d)),
        num_warps=NUM_WARPS,
    )
    return out
