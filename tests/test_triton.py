"""Triton kernels (propagate, topk) under TRITON_INTERPRET=1 against dense float64 math.

The interpreter runs every program in Python, so the shapes here are small; they still hit
every code path: empty rows, isolated nodes, one heavy row split into several chunks, rows
spread over several programs, d not a power of two and wider than one d-block, ties, k larger
than the candidates, exclusion lists, float32 and float64.
"""
import os
import zlib

# Before triton is imported: the kernels must run on CPU tensors through the interpreter.
if not os.environ.get("TRITON_INTERPRET") and not (
        __import__("torch").cuda.is_available()):
    os.environ["TRITON_INTERPRET"] = "1"

import pytest
import torch

triton = pytest.importorskip("triton")
tl = triton.language

from slifmr_kernels.propagate import triton as tprop  # noqa: E402
from slifmr_kernels.topk import triton as ttopk  # noqa: E402
from slifmr_kernels.testing import allowed_mask  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float32: dict(rtol=1e-5, atol=1e-5), torch.float64: dict(rtol=1e-12, atol=1e-12)}


# ---------------------------------------------------------------------------------------------
# helpers: random CSR graphs with the awkward structures, and dense float64 references
# ---------------------------------------------------------------------------------------------
def _seed(*parts) -> int:
    """A seed fixed by the test's parameters (str hashes are salted per process; crc32 is not),
    so a failure replays exactly."""
    return zlib.crc32(repr(parts).encode())


def _graph(gen, n_rows, n_cols, degrees, idx_dtype=torch.int64, num_relations=3):
    """CSR with the given per-row degrees (duplicates allowed: they must be summed)."""
    deg = torch.as_tensor(degrees, dtype=torch.int64)
    assert deg.numel() == n_rows
    indptr = torch.zeros(n_rows + 1, dtype=torch.int64)
    indptr[1:] = torch.cumsum(deg, 0)
    nnz = int(indptr[-1])
    indices = torch.randint(0, max(n_cols, 1), (nnz,), generator=gen).to(idx_dtype)
    relation = torch.randint(0, num_relations, (nnz,), generator=gen).to(torch.int32)
    values = torch.rand(nnz, generator=gen, dtype=torch.float64) + 0.1
    return indptr, indices, values, relation


def _dense(indptr, indices, values, relation, n_rows, n_cols, num_relations):
    """Per-relation dense matrices A_r in float64, shape [R, n_rows, n_cols]."""
    a = torch.zeros(num_relations, n_rows, n_cols, dtype=torch.float64)
    rows = torch.repeat_interleave(torch.arange(n_rows), indptr[1:] - indptr[:-1])
    a.index_put_((relation.long(), rows, indices.long()), values.double(), accumulate=True)
    return a


def _transpose(indptr, indices, values, relation, n_rows, n_cols):
    rows = torch.repeat_interleave(torch.arange(n_rows), indptr[1:] - indptr[:-1])
    perm = torch.argsort(indices.long() * max(n_rows, 1) + rows, stable=True)
    indptr_t = torch.zeros(n_cols + 1, dtype=torch.int64)
    indptr_t[1:] = torch.cumsum(torch.bincount(indices.long(), minlength=n_cols), 0)
    return indptr_t, rows[perm].to(indices.dtype), values[perm], relation[perm]


def _close(got, ref, dtype):
    """Elementwise check with the absolute tolerance scaled by the reference's magnitude:
    sums over hundreds of edges cancel, so a pure relative test is unfair to float32; the
    norm-wise relative error must also be far under 1e-3 (METHOD.md)."""
    got = got.cpu().double()
    scale = max(1.0, float(ref.abs().max())) if ref.numel() else 1.0
    tol = TOL[dtype]
    torch.testing.assert_close(got, ref, rtol=tol["rtol"], atol=tol["atol"] * scale)
    if ref.numel() and float(ref.norm()) > 0:
        assert float((got - ref).norm() / ref.norm()) < 10 * tol["rtol"]


def _poison(*shapes, dtype):
    """Allocate and free NaN-filled blocks of the outputs' sizes right before a call: an output
    row the kernels forget to write then reads as NaN (the allocator hands the block back)
    instead of a lucky zero."""
    for shape in shapes:
        torch.full(shape, float("nan"), dtype=dtype, device=DEVICE)


def _to(dev, dt, *ts):
    out = []
    for t in ts:
        if t is None:
            out.append(None)
        elif t.is_floating_point():
            out.append(t.to(dev, dt).contiguous())
        else:
            out.append(t.to(dev).contiguous())
    return out


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
    gen = torch.Generator().manual_seed(_seed(case, dtype, idx_dtype))
    n_rows, n_cols, deg, d = _case(case, gen, monkeypatch)
    R = 3
    indptr, indices, values, relation = _graph(gen, n_rows, n_cols, deg, idx_dtype, R)
    x = torch.randn(n_cols, d, generator=gen, dtype=torch.float64)
    table = torch.randn(R, d, generator=gen, dtype=torch.float64)
    a = _dense(indptr, indices, values, relation, n_rows, n_cols, R)
    ref_plain = a.sum(0) @ x
    ref_rel = torch.einsum("rij,jd,rd->id", a, x, table)
    ip, ix, v, rel, xx, tb = _to(DEVICE, dtype, indptr, indices, values, relation, x, table)
    _poison((n_rows, d), dtype=dtype)
    y = tprop.spmm(ip, ix, v, xx, n_rows)
    assert y.shape == (n_rows, d) and y.dtype == dtype
    _close(y, ref_plain, dtype)
    _poison((n_rows, d), dtype=dtype)
    y = tprop.spmm_rel(ip, ix, v, rel, tb, xx, n_rows)
    assert y.shape == (n_rows, d) and y.dtype == dtype
    _close(y, ref_rel, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", ["empty_rows_isolated_cols", "one_heavy_row", "many_programs",
                                  "wide_d"])
def test_propagate_backward(case, dtype, monkeypatch):
    gen = torch.Generator().manual_seed(_seed(case, dtype, "bwd"))
    n_rows, n_cols, deg, d = _case(case, gen, monkeypatch)
    R = 4
    indptr, indices, values, relation = _graph(gen, n_rows, n_cols, deg, torch.int64, R)
    x = torch.randn(n_cols, d, generator=gen, dtype=torch.float64)
    dy = torch.randn(n_rows, d, generator=gen, dtype=torch.float64)
    table = torch.randn(R, d, generator=gen, dtype=torch.float64)
    a = _dense(indptr, indices, values, relation, n_rows, n_cols, R)
    # y = sum_r A_r (x * table_r)  =>  dx = sum_r (A_r^T dy) * table_r,
    # g_r = sum_i sum_j A_r[i, j] x[j] * dy[i]
    ref_dx = torch.einsum("rij,id,rd->jd", a, dy, table)
    ref_g = torch.einsum("rij,jd,id->rd", a, x, dy)
    t = _transpose(indptr, indices, values, relation, n_rows, n_cols)
    ip, ix, v, rel, tb, dyy, xx = _to(DEVICE, dtype, *t, table, dy, x)
    _poison((n_cols, d), dtype=dtype)
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
    n_rows, n_cols, deg, d = _case("many_programs", gen, monkeypatch)
    R = 2
    indptr, indices, values, relation = _graph(gen, n_rows, n_cols, deg, torch.int64, R)
    x = torch.randn(n_cols, d, generator=gen, dtype=torch.float64)
    dy = torch.randn(n_rows, d, generator=gen, dtype=torch.float64)
    table = torch.randn(R, d, generator=gen, dtype=torch.float64)
    t = _transpose(indptr, indices, values, relation, n_rows, n_cols)
    args = _to(DEVICE, torch.float64, *t, table, dy, x)
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
    gen = torch.Generator().manual_seed(_seed("multilevel", dtype))
    n_rows, n_cols, deg, d = _case("many_programs", gen, monkeypatch)
    R = 3
    indptr, indices, values, relation = _graph(gen, n_rows, n_cols, deg, torch.int64, R)
    x = torch.randn(n_cols, d, generator=gen, dtype=torch.float64)
    dy = torch.randn(n_rows, d, generator=gen, dtype=torch.float64)
    table = torch.randn(R, d, generator=gen, dtype=torch.float64)
    a = _dense(indptr, indices, values, relation, n_rows, n_cols, R)
    ip, ix, v, rel, tb, xx = _to(DEVICE, dtype, indptr, indices, values, relation, table, x)
    _poison((n_rows, d), dtype=dtype)
    y = tprop.spmm_rel(ip, ix, v, rel, tb, xx, n_rows)
    _close(y, torch.einsum("rij,jd,rd->id", a, x, table), dtype)
    t = _transpose(indptr, indices, values, relation, n_rows, n_cols)
    ip, ix, v, rel, tb, dyy, xx = _to(DEVICE, dtype, *t, table, dy, x)
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
    indptr[1:row + 1] += 1
    got = tprop.spmm(indptr, g.indices, g.values, x, 40)
    assert len(built) == n_before + 1
    want = sk.CSRGraph(indptr, g.indices, g.values, shape=(40, 30)).to_dense() @ x
    torch.testing.assert_close(got, want)
    del indptr, other
    tprop.spmm(g.indptr, g.indices, g.values, x, 40)
    assert all(e[0]() is not None for e in tprop._PLANS) and len(tprop._PLANS) <= 2


# ---------------------------------------------------------------------------------------------
# topk
# ---------------------------------------------------------------------------------------------
def _topk_ref(x, y, k, exclude_self, excl_indptr, excl_indices):
    """Dense float64 reference with the contract's tie rule and padding."""
    s = x.double() @ y.double().T
    n, m = s.shape
    allowed = allowed_mask(n, m, exclude_self, excl_indptr, excl_indices)
    idx = torch.full((n, k), -1, dtype=torch.int64)
    val = torch.full((n, k), float("-inf"), dtype=torch.float64)
    for i in range(n):
        cand = [(-float(s[i, j]), j) for j in range(m) if allowed[i, j]]
        cand.sort()
        for p, (ns, j) in enumerate(cand[:k]):
            idx[i, p] = j
            val[i, p] = -ns
    return idx, val


def _check_topk(x, y, k, exclude_self=False, excl=None, dtype=torch.float64, exact_idx=True):
    ep, ei = excl if excl is not None else (None, None)
    ref_i, ref_v = _topk_ref(x, y, k, exclude_self, ep, ei)
    xx, yy = _to(DEVICE, dtype, x, y)
    epd, eid = _to(DEVICE, dtype, ep, ei) if excl is not None else (None, None)
    idx, val = ttopk.topk(xx, yy, k, exclude_self, epd, eid)
    assert idx.shape == (x.shape[0], k) and idx.dtype == torch.int64 and val.dtype == dtype
    idx, val = idx.cpu(), val.cpu().double()
    pad = ref_i == -1
    assert torch.equal(idx == -1, pad)
    assert torch.isneginf(val[pad]).all()
    tol = TOL[dtype]
    torch.testing.assert_close(val[~pad], ref_v[~pad], **tol)
    if exact_idx:
        assert torch.equal(idx, ref_i)
    else:  # float32 scores may reorder near-ties: the returned ids must score like the ref's
        s = x.double() @ y.double().T
        got = torch.gather(s, 1, idx.clamp(min=0))
        torch.testing.assert_close(got[~pad], ref_v[~pad], rtol=1e-5, atol=1e-5)
    # sorted: score descending, ties by index ascending
    v = val
    for p in range(k - 1):
        a, b = v[:, p], v[:, p + 1]
        live = idx[:, p + 1] >= 0
        assert bool((a[live] >= b[live]).all())
        tie = live & (a == b)
        assert bool((idx[tie, p] < idx[tie, p + 1]).all())
    return idx, val


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n,m,d,k", [(37, 150, 7, 5), (20, 70, 33, 10), (65, 65, 16, 3),
                                     (70, 200, 130, 4)])  # d > BLOCK_K: the k-sliced path
def test_topk_random(n, m, d, k, dtype):
    gen = torch.Generator().manual_seed(n * 1000 + m + d + k)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(m, d, generator=gen, dtype=torch.float64)
    _check_topk(x, y, k, dtype=dtype, exact_idx=dtype == torch.float64)


def test_topk_float32_pair_lists(monkeypatch):
    """float32 with the (score, index) pair lists, which serve joins with more than 2^31
    columns: forced through the config on a small join with ties, exclusions and self."""
    base = ttopk._config
    monkeypatch.setattr(ttopk, "_config", lambda d, k: dict(base(d, k), PACKED=False))
    gen = torch.Generator().manual_seed(12)
    x = torch.randint(-2, 3, (70, 5), generator=gen).double()
    x[60:] = x[:10]  # exact duplicates: ties broken by the lower index
    ep = torch.arange(0, 3 * 70 + 1, 3, dtype=torch.int64)
    ei = torch.randint(0, 70, (3 * 70,), generator=gen, dtype=torch.int64)
    _check_topk(x, x, 7, exclude_self=True, excl=(ep, ei), dtype=torch.float32)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_knn_self_excluded_with_duplicates(dtype):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(90, 12, generator=gen, dtype=torch.float64)
    x[40] = x[3]  # a duplicate item is a valid neighbour; only the row itself is excluded
    x = x / x.norm(dim=1, keepdim=True)
    idx, _ = _check_topk(x, x, 6, exclude_self=True, dtype=dtype,
                         exact_idx=dtype == torch.float64)
    assert not bool((idx == torch.arange(90)[:, None]).any())
    assert int(idx[3, 0]) == 40 and int(idx[40, 0]) == 3


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_ties_break_by_lower_index(dtype):
    # integer-valued vectors: many exactly equal scores, exact in both dtypes
    gen = torch.Generator().manual_seed(4)
    x = torch.randint(-2, 3, (130, 5), generator=gen).double()
    y = torch.randint(-2, 3, (140, 5), generator=gen).double()
    # exact duplicate columns in another tile; row blocks >= 2 visit their diagonal tile
    # (columns 64..127) first, so the duplicates are seen before the lower-indexed originals
    y[100:] = y[:40]
    _check_topk(x, y, 9, dtype=dtype, exact_idx=True)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_k_at_least_candidates_and_exclusions(dtype):
    gen = torch.Generator().manual_seed(6)
    n, m = 18, 11
    x = torch.randn(n, 4, generator=gen, dtype=torch.float64)
    y = torch.randn(m, 4, generator=gen, dtype=torch.float64)
    # per-row exclusion lists of varying length (row 0 excludes every column; row 5 none;
    # the list is unsorted and has a duplicate)
    lists = [list(range(m))] + [
        torch.randperm(m, generator=gen)[: int(torch.randint(0, 8, (1,), generator=gen))]
        .tolist() for _ in range(n - 1)]
    lists[5] = []
    lists[7] = [3, 3, 9, 0]
    ep = torch.zeros(n + 1, dtype=torch.int64)
    ep[1:] = torch.cumsum(torch.tensor([len(a) for a in lists]), 0)
    ei = torch.tensor([j for a in lists for j in a], dtype=torch.int32)
    idx, val = _check_topk(x, y, m, exclude_self=True, excl=(ep, ei), dtype=dtype,
                           exact_idx=dtype == torch.float64)
    assert bool((idx[0] == -1).all()) and bool(torch.isneginf(val[0]).all())
    for i, a in enumerate(lists):
        got = set(idx[i][idx[i] >= 0].tolist())
        assert got == set(range(m)) - set(a) - {i}


def test_topk_long_exclusion_list_int64():
    gen = torch.Generator().manual_seed(8)
    n, m = 16, 200
    x = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    y = torch.randn(m, 6, generator=gen, dtype=torch.float64)
    # exclude each row's 70 best columns: longer than one exclusion block, and exactly the
    # candidates that would otherwise win
    best = torch.topk(x @ y.T, 70, dim=1).indices
    ep = torch.arange(0, n * 70 + 1, 70, dtype=torch.int64)
    _check_topk(x, y, 4, excl=(ep, best.flatten().to(torch.int64)))


@triton.jit
def _key_roundtrip_kernel(S, J, KEY, S_OUT, J_OUT, BLOCK: tl.constexpr):
    o = tl.arange(0, BLOCK)
    key = ttopk._key(tl.load(S + o), tl.load(J + o))
    tl.store(KEY + o, key)
    tl.store(S_OUT + o, ttopk._key_score(key))
    tl.store(J_OUT + o, ttopk._key_index(key))


def test_packed_keys_order_like_score_then_lower_index():
    """The float32 lists' int64 keys: key order = (score desc, index asc) over edge values
    (signed zeros, denormals, infinities, ties), exact round trip, NaN below everything."""
    tiny = float(torch.finfo(torch.float32).tiny)
    vals = [float("-inf"), -3e38, -1.5, -1.0, -tiny, -tiny / 4, -0.0, 0.0, tiny / 4, tiny,
            1e-30, 1.0, 1.0, 1.0, 2.5, 3e38, float("inf"), float("nan")]
    n = 32
    gen = torch.Generator().manual_seed(11)
    s = torch.tensor(vals + [0.0] * (n - len(vals)), dtype=torch.float32)
    j = torch.randint(0, 2 ** 31 - 1, (n,), generator=gen, dtype=torch.int64)
    j[-3:] = torch.tensor([0, 2 ** 31 - 1, 5])  # the extreme column ids
    key = torch.empty(n, dtype=torch.int64)
    s_out, j_out = torch.empty_like(s), torch.empty_like(j)
    _key_roundtrip_kernel[(1,)](s, j, key, s_out, j_out, BLOCK=n)
    nan = torch.isnan(s)
    assert bool((key[nan] == -(2 ** 63)).all()) and bool((key[~nan] > -(2 ** 63)).all())
    live = (~nan).nonzero().flatten().tolist()
    assert torch.equal(s_out[~nan], s[~nan])  # -0.0 comes back as +0.0: equal as floats
    assert torch.equal(j_out[~nan], j[~nan])
    for a in live:
        for b in live:
            better = s[a] > s[b] or (s[a] == s[b] and j[a] < j[b])
            assert bool(key[a] > key[b]) == bool(better), (s[a], j[a], s[b], j[b])


def test_topk_k_zero_and_empty():
    x = torch.randn(5, 3, dtype=torch.float64)
    idx, val = ttopk.topk(*_to(DEVICE, torch.float64, x, x), 0, False, None, None)
    assert idx.shape == (5, 0) and val.shape == (5, 0)
    idx, val = ttopk.topk(*_to(DEVICE, torch.float64, x[:0], x), 2, False, None, None)
    assert idx.shape == (0, 2)


# ---------------------------------------------------------------------------------------------
# the compiled path: every kernel must also lower to GPU code (the interpreter accepts Python
# that the Triton compiler rejects), checked ahead of time for sm_90 without a GPU
# ---------------------------------------------------------------------------------------------
_AOT = r'''
import os, sys
os.environ.pop("TRITON_INTERPRET", None)
import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource
from slifmr_kernels.topk import triton as tt
from slifmr_kernels.propagate import triton as tp

target = GPUTarget("cuda", 90, 32)

def build(fn, types, consts):
    names = fn.arg_names
    sig = {n: types.get(n, "constexpr") for n in names}
    cx = {(names.index(k),): v for k, v in consts.items()}
    triton.compile(ASTSource(fn=fn, signature=sig, constexprs=cx), target=target)
    print("compiled", fn.__name__)

for fdt in ("fp32", "fp64"):
    P = "*" + fdt
    # fp32: the packed-key lists (and the pair lists kept for > 2^31 columns); fp64: pairs
    variants = (((False, False, True), (True, True, True), (True, True, False))
                if fdt == "fp32" else ((False, True, False),))
    for tf32, single, packed in variants:
        build(tt._topk_kernel,
              dict(X=P, Y=P, OUT_I="*i64", OUT_V=P, EXP="*i64", EXI="*i32", N="i32", M="i32",
                   D="i32", K="i32"),
              dict(EXCL_SELF=True, HAS_EXCL=True, DIAG_FIRST=True, TF32=tf32, BLOCK_M=32,
                   BLOCK_N=64, BLOCK_K=64, KP=16, BLOCK_X=32, SINGLE_K=single,
                   PACKED=packed))
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
'''


def test_kernels_compile_for_sm90_ahead_of_time():
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        from triton.backends.compiler import GPUTarget  # noqa: F401
        from triton.compiler import ASTSource  # noqa: F401
    except ImportError:
        pytest.skip("this triton has no ahead-of-time compile API")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
    r = subprocess.run([sys.executable, "-c", _AOT], capture_output=True, text=True,
                       timeout=600, env=env, cwd=root)
    if r.returncode != 0 and "ptxas" in r.stderr and "not found" in r.stderr:
        pytest.skip("triton's bundled ptxas is missing")
    assert r.returncode == 0, r.stderr[-4000:]
    assert r.stdout.count("compiled") == 10
