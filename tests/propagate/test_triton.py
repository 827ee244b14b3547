"""The Triton propagate kernels (slifmr_kernels/propagate/triton.py) under TRITON_INTERPRET=1
(set by conftest) against dense float64 math.

The interpreter runs every program in Python, so the shapes here are small; they still hit
every code path: empty rows, isolated nodes, one heavy row split into several chunks, rows
spread over several programs, d not a power of two and wider than one d-block, float32 and
float64, int32 and int64 indices; and every kernel lowers to sm_90 code.
"""

import pytest
import torch

from tests.helpers import (
    KERNEL_TOL,
    cast,
    compile_triton_for_sm90,
    csr_with_degrees,
    dense_relations,
    poison,
    seed_of,
    transpose_csr,
)

pytest.importorskip("triton")
from slifmr_kernels.propagate import triton as tprop  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _close(got, ref, dtype):
    """Elementwise check with the absolute tolerance scaled by the reference's magnitude:
    sums over hundreds of edges cancel, so a pure relative test is unfair to float32; the
    norm-wise relative error must also be far under 1e-3."""
    got = got.cpu().double()
    scale = max(1.0, float(ref.abs().max())) if ref.numel() else 1.0
    tol = KERNEL_TOL[dtype]
    torch.testing.assert_close(got, ref, rtol=tol["rtol"], atol=tol["atol"] * scale)
    if ref.numel() and float(ref.norm()) > 0:
        assert float((got - ref).norm() / ref.norm()) < 10 * tol["rtol"]


CASES = {
    # name: (n_rows, n_cols, degrees, d)
    "empty_rows_isolated_cols": (7, 9, [0, 3, 0, 1, 2, 0, 4], 5),
    "one_heavy_row": (5, 40, [1, 700, 0, 3, 2], 8),  # 700 > CHUNK: three chunks
    # power-law degrees plus a heavy row, dealt to ~10 programs (TARGET_WORK lowered), odd d
    "many_programs": (120, 100, None, 19),
    "wide_d": (6, 6, [2, 1, 0, 3, 1, 2], 130),  # two d-blocks
    "no_edges": (4, 3, [0, 0, 0, 0], 4),
}


def _case(name, gen, monkeypatch=None):
    n_rows, n_cols, deg, d = CASES[name]
    if name == "many_programs" and monkeypatch is not None:
        monkeypatch.setattr(tprop, "TARGET_WORK", 256)
    if deg is None:  # power-law degrees plus one heavy row
        deg = (torch.rand(n_rows, generator=gen) ** 4 * 30).long().tolist()
        deg[17] = 600
    return n_rows, n_cols, deg, d


def _backward_problem(gen, case, R, monkeypatch):
    """The case's graph with R relations and int64 indices, and x, dy and the relation table
    in float64."""
    n_rows, n_cols, deg, d = _case(case, gen, monkeypatch)
    csr = csr_with_degrees(gen, n_rows, n_cols, deg, torch.int64, R)
    x = torch.randn(n_cols, d, generator=gen, dtype=torch.float64)
    dy = torch.randn(n_rows, d, generator=gen, dtype=torch.float64)
    table = torch.randn(R, d, generator=gen, dtype=torch.float64)
    return n_rows, n_cols, d, csr, x, dy, table


def test_many_programs_case_really_uses_many_programs(monkeypatch):
    gen = torch.Generator().manual_seed(1)
    n_rows, _, deg, _ = _case("many_programs", gen, monkeypatch)
    indptr = torch.zeros(n_rows + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(torch.tensor(deg), 0)
    plan = tprop._Plan(indptr, n_rows)
    assert plan.n_progs >= 8 and plan.heavy_row.numel() == 1 and plan.n_chunks == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("idx_dtype", [torch.int32, torch.int64])
def test_propagate_forward(case, dtype, idx_dtype, monkeypatch):
    gen = torch.Generator().manual_seed(seed_of(case, dtype, idx_dtype))
    n_rows, n_cols, deg, d = _case(case, gen, monkeypatch)
    R = 3
    indptr, indices, values, relation = csr_with_degrees(gen, n_rows, n_cols, deg, idx_dtype, R)
    x = torch.randn(n_cols, d, generator=gen, dtype=torch.float64)
    table = torch.randn(R, d, generator=gen, dtype=torch.float64)
    a = dense_relations(indptr, indices, values, relation, n_rows, n_cols, R)
    ref_plain = a.sum(0) @ x
    ref_rel = torch.einsum("rij,jd,rd->id", a, x, table)
    ip, ix, v, rel, xx, tb = cast(DEVICE, dtype, indptr, indices, values, relation, x, table)
    poison((n_rows, d), dtype=dtype, device=DEVICE)
    y = tprop.spmm(ip, ix, v, xx, n_rows)
    assert y.shape == (n_rows, d) and y.dtype == dtype
    _close(y, ref_plain, dtype)
    poison((n_rows, d), dtype=dtype, device=DEVICE)
    y = tprop.spmm_rel(ip, ix, v, rel, tb, xx, n_rows)
    assert y.shape == (n_rows, d) and y.dtype == dtype
    _close(y, ref_rel, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["empty_rows_isolated_cols", "one_heavy_row", "many_programs", "wide_d"])
def test_propagate_backward(case, dtype, monkeypatch):
    gen = torch.Generator().manual_seed(seed_of(case, dtype, "bwd"))
    R = 4
    n_rows, n_cols, d, (indptr, indices, values, relation), x, dy, table = _backward_problem(
        gen, case, R, monkeypatch
    )
    a = dense_relations(indptr, indices, values, relation, n_rows, n_cols, R)
    # y = sum_r A_r (x * table_r)  =>  dx = sum_r (A_r^T dy) * table_r,
    # g_r = sum_i sum_j A_r[i, j] x[j] * dy[i]
    ref_dx = torch.einsum("rij,id,rd->jd", a, dy, table)
    ref_g = torch.einsum("rij,jd,id->rd", a, x, dy)
    t = transpose_csr(indptr, indices, values, relation, n_rows, n_cols)
    ip, ix, v, rel, tb, dyy, xx = cast(DEVICE, dtype, *t, table, dy, x)
    poison((n_cols, d), dtype=dtype, device=DEVICE)
    dx, g = tprop.spmm_rel_backward(ip, ix, v, rel, tb, dyy, xx, R, True, True)
    _close(dx, ref_dx, dtype)
    _close(g, ref_g, dtype)
    assert dx.dtype == dtype and g.dtype == dtype and g.shape == (R, d)
    if case == "one_heavy_row":  # (interpreter time: once is enough)
        dx2, g2 = tprop.spmm_rel_backward(ip, ix, v, rel, tb, dyy, xx, R, False, True)
        assert dx2 is None and torch.equal(g2, g)  # deterministic, independent of need_dx
        dx3, g3 = tprop.spmm_rel_backward(ip, ix, v, rel, tb, dyy, xx, R, True, False)
        assert g3 is None and torch.equal(dx3, dx)


def test_propagate_g_program_cap(monkeypatch):
    """A small g budget forces fewer, fatter programs: same math (within rounding)."""
    gen = torch.Generator().manual_seed(5)
    R = 2
    n_rows, n_cols, d, (indptr, indices, values, relation), x, dy, table = _backward_problem(
        gen, "many_programs", R, monkeypatch
    )
    t = transpose_csr(indptr, indices, values, relation, n_rows, n_cols)
    args = cast(DEVICE, torch.float64, *t, table, dy, x)
    assert tprop._Plan(args[0], n_cols).n_progs >= 8
    _, g_ref = tprop.spmm_rel_backward(*args, R, False, True)
    monkeypatch.setattr(tprop, "G_BUDGET_BYTES", R * d * 8 * 2)  # at most 2 programs
    plan = tprop._Plan(args[0], n_cols, 2)
    assert plan.n_progs <= 2
    _, g = tprop.spmm_rel_backward(*args, R, False, True)
    torch.testing.assert_close(g, g_ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_propagate_multilevel_reductions(dtype, monkeypatch):
    """FAN_IN = 2 sends the heavy row's 3 chunks and the g slices of ~10 programs through
    several reduction levels: same results as the dense math."""
    monkeypatch.setattr(tprop, "FAN_IN", 2)
    gen = torch.Generator().manual_seed(seed_of("multilevel", dtype))
    R = 3
    n_rows, n_cols, d, (indptr, indices, values, relation), x, dy, table = _backward_problem(
        gen, "many_programs", R, monkeypatch
    )
    a = dense_relations(indptr, indices, values, relation, n_rows, n_cols, R)
    ip, ix, v, rel, tb, xx = cast(DEVICE, dtype, indptr, indices, values, relation, table, x)
    poison((n_rows, d), dtype=dtype, device=DEVICE)
    y = tprop.spmm_rel(ip, ix, v, rel, tb, xx, n_rows)
    _close(y, torch.einsum("rij,jd,rd->id", a, x, table), dtype)
    t = transpose_csr(indptr, indices, values, relation, n_rows, n_cols)
    ip, ix, v, rel, tb, dyy, xx = cast(DEVICE, dtype, *t, table, dy, x)
    _, g = tprop.spmm_rel_backward(ip, ix, v, rel, tb, dyy, xx, R, False, True)
    _close(g, torch.einsum("rij,jd,id->rd", a, x, dy), dtype)


def test_plan_partition_covers_every_segment_once():
    gen = torch.Generator().manual_seed(11)
    deg = (torch.rand(500, generator=gen) ** 6 * 2000).long()
    indptr = torch.zeros(501, dtype=torch.int64)
    indptr[1:] = torch.cumsum(deg, 0)
    plan = tprop._Plan(indptr, 500)
    ptr = plan.prog_ptr
    assert int(ptr[0]) == 0 and int(ptr[-1]) == plan.seg_row.numel()
    assert bool((ptr[1:] >= ptr[:-1]).all())
    seg_len = plan.seg_end - plan.seg_start
    assert int(seg_len.max()) <= tprop.CHUNK and int(seg_len.sum()) == int(deg.sum())
    # per-row segments tile the row exactly, in order
    per_row = torch.zeros(500, dtype=torch.int64).index_add_(0, plan.seg_row, seg_len)
    assert torch.equal(per_row, deg)
    heavy = deg > tprop.CHUNK
    assert torch.equal(plan.heavy_row, torch.nonzero(heavy).flatten())
    assert plan.n_chunks == int(((deg[heavy] + tprop.CHUNK - 1) // tprop.CHUNK).sum())


def test_plan_is_reused_per_graph_and_follows_changes(monkeypatch):
    """The plan cache: one plan per live, unchanged indptr object, also through the public op;
    an in-place change or another n_rows plans again; dead graphs leave the cache."""
    import slifmr_kernels as sk
    from slifmr_kernels.testing import random_graph

    built = []
    real = tprop._Plan
    monkeypatch.setattr(tprop, "_Plan", lambda *a: built.append(1) or real(*a))
    monkeypatch.setattr(tprop, "_PLANS", [])
    gen = torch.Generator().manual_seed(5)
    g = random_graph(40, 30, 300, generator=gen, heavy_row=0.5)
    x = torch.randn(30, 8, generator=gen)
    y1 = sk.propagate(g, x, backend="triton")
    y2 = sk.propagate(g, x, backend="triton")
    assert len(built) == 1 and torch.equal(y1, y2)
    torch.testing.assert_close(y1, g.to_dense() @ x)
    tprop.spmm(g.indptr, g.indices, g.values, x, 40)
    assert len(built) == 1
    other = random_graph(40, 30, 200, generator=gen)
    tprop.spmm(other.indptr, other.indices, other.values, x, 40)
    assert len(built) == 2
    # move an edge from row 0's neighbour to row 0 in place: same object, new version
    indptr = g.indptr.clone()
    tprop.spmm(indptr, g.indices, g.values, x, 40)
    n_before = len(built)
    row = int(torch.nonzero(indptr[1:] > indptr[:-1])[1])  # a second non-empty row
    indptr[1 : row + 1] += 1
    got = tprop.spmm(indptr, g.indices, g.values, x, 40)
    assert len(built) == n_before + 1
    want = sk.CSRGraph(indptr, g.indices, g.values, shape=(40, 30)).to_dense() @ x
    torch.testing.assert_close(got, want)
    del indptr, other
    tprop.spmm(g.indptr, g.indices, g.values, x, 40)
    assert all(e[0]() is not None for e in tprop._PLANS) and len(tprop._PLANS) <= 2


def test_kernels_compile_for_sm90_ahead_of_time():
    builds = """
from slifmr_kernels.propagate import triton as tp
for fdt in ("fp32", "fp64"):
    P = "*" + fdt
    build(tp._seg_kernel,
          dict(INDPTR="*i64", INDICES="*i32", VALUES=P, RELATION="*i32", TABLE=P, X=P, XG=P,
               SEG_ROW="*i64", SEG_START="*i64", SEG_END="*i64", SEG_SLOT="*i64",
               PROG_PTR="*i64", Y=P, HPART=P, GPART=P, D="i32", R="i32"),
          dict(HAS_VALUES=True, HAS_TABLE=True, WRITE_Y=True, NEED_G=True, BLOCK_E=32,
               BLOCK_D=64))
    for has_row in (True, False):
        build(tp._segment_sum_kernel,
              dict(PART=P, PTR="*i64", OUT_ROW="*i64", OUT=P, W="i32"),
              dict(HAS_OUT_ROW=has_row, BLOCK=64))
"""
    assert compile_triton_for_sm90(builds) == 6
