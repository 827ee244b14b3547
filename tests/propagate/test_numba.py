"""Numba CPU propagate kernels against dense float64 math and the torch reference backend.

Covers the three kernel functions of the backend contract (spmm, spmm_rel, spmm_rel_backward)
on power-law graphs with empty rows, one huge row, isolated columns, 1 and 30 relations,
int32/int64 indices, float32/float64, odd and wide d, a zero-nnz graph, bit-identical results
across thread counts, and (through the public op) gradients against the reference's autograd.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
import torch

numba = pytest.importorskip(
    "numba", reason="numba is not installed: the numba backend is optional (pip install numba)"
)
nbk = pytest.importorskip(
    "slifmr_kernels.propagate.numba", reason="slifmr_kernels.propagate.numba could not be imported"
)

DTYPES = [torch.float32, torch.float64]
INDEX_DTYPES = [torch.int32, torch.int64]


def seed_of(*key):
    """A reproducible per-test seed (Python's hash() of strings changes between runs)."""
    return zlib.crc32(repr(key).encode())


# ---------------------------------------------------------------------------
# graph generation and dense float64 reference math
# ---------------------------------------------------------------------------


def random_graph(
    rng, n_rows, n_cols, nnz, num_relations=1, *, huge_row=None, empty_frac=0.2, isolated_frac=0.2
):
    """A CSR graph with power-law row degrees, empty rows and isolated columns.

    ``huge_row``: fraction of all edges put into one row (e.g. 0.5).
    Returns numpy (indptr int64, indices int64, values float64, relation int32); edges sorted
    by row (columns within a row in random order, duplicates allowed: kernels must not care).
    """
    if n_rows == 0 or n_cols == 0 or nnz == 0:
        return (np.zeros(n_rows + 1, np.int64), np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int32))
    # Power-law row weights over the non-empty rows.
    live_rows = rng.permutation(n_rows)[: max(1, int(round(n_rows * (1 - empty_frac))))]
    w = rng.pareto(1.2, live_rows.size) + 1e-3
    rows = rng.choice(live_rows, size=nnz, p=w / w.sum())
    if huge_row is not None:
        n_huge = int(nnz * huge_row)
        rows[:n_huge] = live_rows[0]
    live_cols = rng.permutation(n_cols)[: max(1, int(round(n_cols * (1 - isolated_frac))))]
    wc = rng.pareto(1.5, live_cols.size) + 1e-3
    cols = rng.choice(live_cols, size=nnz, p=wc / wc.sum())
    order = np.argsort(rows, kind="stable")
    rows, cols = rows[order], cols[order]
    indptr = np.zeros(n_rows + 1, np.int64)
    np.add.at(indptr, rows + 1, 1)
    indptr = np.cumsum(indptr)
    values = rng.standard_normal(nnz)
    relation = rng.integers(0, num_relations, nnz).astype(np.int32)
    return indptr, cols.astype(np.int64), values, relation


def transpose(indptr, indices, values, relation, n_cols):
    """CSR of A^T with values/relations carried along (stable counting sort by column)."""
    n_rows = indptr.shape[0] - 1
    rows = np.repeat(np.arange(n_rows, dtype=np.int64), np.diff(indptr))
    perm = np.argsort(indices, kind="stable")
    t_indptr = np.zeros(n_cols + 1, np.int64)
    np.add.at(t_indptr, indices + 1, 1)
    return np.cumsum(t_indptr), rows[perm], values[perm], relation[perm]


def dense_forward(indptr, indices, values, relation, table, x):
    """float64 y[i] = sum_e v_e * table[r_e] * x[c_e] (table None: plain SpMM) and |.| bound."""
    n_rows = indptr.shape[0] - 1
    rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    x = x.astype(np.float64)
    scale = np.ones((values.size, x.shape[1])) if table is None else table.astype(np.float64)[relation]
    terms = values[:, None] * scale * x[indices]
    y = np.zeros((n_rows, x.shape[1]))
    bound = np.zeros_like(y)
    np.add.at(y, rows, terms)
    np.add.at(bound, rows, np.abs(terms))
    return y, bound


def dense_backward(indptr, indices, values, relation, table, x, dy, num_relations):
    """float64 dx = A^T-weighted dy, g[r] = sum_{e: r_e = r} v_e x[c_e] dy[i_e]."""
    n_rows = indptr.shape[0] - 1
    rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    x = x.astype(np.float64)
    dy = dy.astype(np.float64)
    t = table.astype(np.float64)[relation]
    dx = np.zeros_like(x)
    np.add.at(dx, indices, values[:, None] * t * dy[rows])
    g = np.zeros((num_relations, x.shape[1]))
    np.add.at(g, relation, values[:, None] * x[indices] * dy[rows])
    gb = np.zeros_like(g)
    np.add.at(gb, relation, np.abs(values[:, None] * x[indices] * dy[rows]))
    dxb = np.zeros_like(x)
    np.add.at(dxb, indices, np.abs(values[:, None] * t * dy[rows]))
    return dx, dxb, g, gb


def assert_close(got, ref, bound, dtype):
    """|got - ref| <= rtol * (sum of |terms|) + atol: the error of any summation order."""
    got = got.double().numpy()
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    err = np.abs(got - ref)
    tol = rtol * bound + rtol
    assert got.shape == ref.shape
    assert np.all(err <= tol), f"max error {err.max():.3g}, worst excess {(err - tol).max():.3g}"


def as_torch(indptr, indices, values, relation, dtype, index_dtype):
    return (
        torch.from_numpy(indptr),
        torch.from_numpy(indices).to(index_dtype),
        torch.from_numpy(values).to(dtype),
        torch.from_numpy(relation),
    )


# ---------------------------------------------------------------------------
# the task partition
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("huge", [None, 0.5])
def test_partition_covers_every_edge_once(huge):
    rng = np.random.default_rng(1)
    indptr, *_ = random_graph(rng, 3000, 500, 200_000, huge_row=huge)
    tasks, seg_slot, heavy, n_slots = nbk.make_tasks(indptr)
    covered = np.zeros(indptr[-1], np.int64)
    rows_whole = np.zeros(3000, np.int64)
    for (r0, r1, e0, e1), s in zip(tasks, seg_slot):
        covered[e0:e1] += 1
        if s < 0:
            assert e0 == indptr[r0] and e1 == indptr[r1]
            rows_whole[r0:r1] += 1
        else:
            assert r1 == r0 + 1
    assert np.all(covered == 1)
    heavy_rows = set(heavy[:, 0].tolist())
    for i in range(3000):
        assert rows_whole[i] == (0 if i in heavy_rows else 1)
    assert n_slots == (heavy[:, 2].sum() if heavy.size else 0)
    if huge:
        assert heavy.shape[0] >= 1, "a row with half the edges must be split"
        assert len(tasks) > 8


# ---------------------------------------------------------------------------
# forward kernels
# ---------------------------------------------------------------------------

CASES = [
    # n_rows, n_cols, nnz, R, d, huge
    (300, 200, 5_000, 1, 7, None),
    (1000, 700, 60_000, 30, 64, 0.5),
    (257, 1, 3_000, 3, 1, None),  # a single column
    (1, 400, 9_000, 2, 33, None),  # a single (huge) row
    (2000, 1500, 150_000, 4, 5, 0.3),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_spmm_matches_dense(case, index_dtype, dtype):
    n_rows, n_cols, nnz, R, d, huge = case
    rng = np.random.default_rng(seed_of(case, str(dtype), str(index_dtype)))
    indptr, indices, values, relation = random_graph(rng, n_rows, n_cols, nnz, R, huge_row=huge)
    x = torch.randn(n_cols, d, dtype=dtype)
    ip, ix, v, _ = as_torch(indptr, indices, values, relation, dtype, index_dtype)
    y = nbk.spmm(ip, ix, v, x, n_rows)
    assert y.dtype == dtype and y.shape == (n_rows, d)
    ref, bound = dense_forward(indptr, indices, v.double().numpy(), relation, None, x.numpy())
    assert_close(y, ref, bound, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("case", CASES)
def test_spmm_rel_matches_dense(case, index_dtype, dtype):
    n_rows, n_cols, nnz, R, d, huge = case
    rng = np.random.default_rng(seed_of(case, "rel", str(dtype), str(index_dtype)))
    indptr, indices, values, relation = random_graph(rng, n_rows, n_cols, nnz, R, huge_row=huge)
    x = torch.randn(n_cols, d, dtype=dtype)
    table = torch.randn(R, d, dtype=dtype)
    ip, ix, v, rel = as_torch(indptr, indices, values, relation, dtype, index_dtype)
    y = nbk.spmm_rel(ip, ix, v, rel, table, x, n_rows)
    ref, bound = dense_forward(indptr, indices, v.double().numpy(), relation, table.numpy(), x.numpy())
    assert_close(y, ref, bound, dtype)


def test_empty_rows_are_zero_and_unit_values():
    rng = np.random.default_rng(5)
    indptr, indices, values, relation = random_graph(rng, 500, 80, 4000, empty_frac=0.5)
    x = torch.randn(80, 9, dtype=torch.float64)
    ip, ix, _, _ = as_torch(indptr, indices, values, relation, torch.float64, torch.int64)
    y = nbk.spmm(ip, ix, None, x, 500)  # None: unit edge weights
    empty = np.diff(indptr) == 0
    assert empty.sum() > 100
    assert torch.all(y[torch.from_numpy(empty)] == 0)
    ref, bound = dense_forward(indptr, indices, np.ones(indices.size), relation, None, x.numpy())
    assert_close(y, ref, bound, torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
def test_zero_nnz_and_zero_rows(dtype):
    x = torch.randn(6, 4, dtype=dtype)
    ip = torch.zeros(4, dtype=torch.int64)
    ix = torch.zeros(0, dtype=torch.int32)
    v = torch.zeros(0, dtype=dtype)
    rel = torch.zeros(0, dtype=torch.int32)
    table = torch.randn(2, 4, dtype=dtype)
    assert torch.equal(nbk.spmm(ip, ix, v, x, 3), torch.zeros(3, 4, dtype=dtype))
    assert torch.equal(nbk.spmm_rel(ip, ix, v, rel, table, x, 3), torch.zeros(3, 4, dtype=dtype))
    # Backward over a zero-nnz transpose (6 columns): dx = 0, g = 0.
    ipt = torch.zeros(7, dtype=torch.int64)
    dx, g = nbk.spmm_rel_backward(ipt, ix, v, rel, table, torch.randn(3, 4, dtype=dtype), x, 2, True, True)
    assert torch.equal(dx, torch.zeros(6, 4, dtype=dtype))
    assert torch.equal(g, torch.zeros(2, 4, dtype=dtype))
    # No output rows at all.
    y = nbk.spmm(torch.zeros(1, dtype=torch.int64), ix, v, x, 0)
    assert y.shape == (0, 4)


# ---------------------------------------------------------------------------
# backward kernel
# ---------------------------------------------------------------------------

BACKWARD_CASES = [
    (400, 300, 8_000, 1, 7, None),
    (900, 1200, 80_000, 30, 64, 0.5),  # the huge row becomes a huge column of A^T
    (3000, 50, 60_000, 5, 3, None),  # few columns: long rows of A^T
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("case", BACKWARD_CASES)
def test_backward_matches_dense(case, index_dtype, dtype):
    n_rows, n_cols, nnz, R, d, huge = case
    rng = np.random.default_rng(seed_of(case, "bwd", str(dtype), str(index_dtype)))
    indptr, indices, values, relation = random_graph(rng, n_rows, n_cols, nnz, R, huge_row=huge)
    # A huge *column* too, so the transpose has a heavy row to split.
    if huge:
        indices[: int(nnz * huge)] = indices[0]
    ipt, ixt, vt, relt = transpose(indptr, indices, values, relation, n_cols)
    x = torch.randn(n_cols, d, dtype=dtype)
    dy = torch.randn(n_rows, d, dtype=dtype)
    table = torch.randn(R, d, dtype=dtype)
    t_ip, t_ix, t_v, t_rel = as_torch(ipt, ixt, vt, relt, dtype, index_dtype)
    vq = torch.from_numpy(values).to(dtype).double().numpy()  # the values the kernel saw
    dx_ref, dxb, g_ref, gb = dense_backward(
        indptr, indices, vq, relation, table.numpy(), x.numpy(), dy.numpy(), R
    )
    dx, g = nbk.spmm_rel_backward(t_ip, t_ix, t_v, t_rel, table, dy, x, R, True, True)
    assert dx.dtype == dtype and g.dtype == dtype
    assert_close(dx, dx_ref, dxb, dtype)
    assert_close(g, g_ref, gb, dtype)
    dx_only, none_g = nbk.spmm_rel_backward(t_ip, t_ix, t_v, t_rel, table, dy, x, R, True, False)
    assert none_g is None and torch.equal(dx_only, dx)
    none_dx, g_only = nbk.spmm_rel_backward(t_ip, t_ix, t_v, t_rel, table, dy, x, R, False, True)
    assert none_dx is None and torch.equal(g_only, g)


# ---------------------------------------------------------------------------
# determinism across thread counts
# ---------------------------------------------------------------------------


def test_same_bits_with_one_and_two_threads():
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("needs NUMBA_NUM_THREADS >= 2 to compare thread counts")
    rng = np.random.default_rng(11)
    n, d, R = 3000, 16, 7
    indptr, indices, values, relation = random_graph(rng, n, n, 300_000, R, huge_row=0.5)
    indices[:100_000] = 17  # a heavy column: a split row of A^T as well
    ipt, ixt, vt, relt = transpose(indptr, indices, values, relation, n)
    ip, ix, v, rel = as_torch(indptr, indices, values, relation, torch.float32, torch.int32)
    t_ip, t_ix, t_v, t_rel = as_torch(ipt, ixt, vt, relt, torch.float32, torch.int32)
    x = torch.randn(n, d)
    dy = torch.randn(n, d)
    table = torch.randn(R, d)

    def run():
        return (
            nbk.spmm(ip, ix, v, x, n),
            nbk.spmm_rel(ip, ix, v, rel, table, x, n),
            *nbk.spmm_rel_backward(t_ip, t_ix, t_v, t_rel, table, dy, x, R, True, True),
        )

    old = numba.get_num_threads()
    try:
        numba.set_num_threads(1)
        one = run()
        numba.set_num_threads(2)
        two = run()
        again = run()
    finally:
        numba.set_num_threads(old)
    for a, b, c in zip(one, two, again):
        assert torch.equal(a, b) and torch.equal(b, c)


# ---------------------------------------------------------------------------
# through the public op: forward and gradients against the torch reference backend
# ---------------------------------------------------------------------------


def _public_api():
    try:
        import slifmr_kernels as sk
    except ImportError as exc:  # pragma: no cover - only while the package is incomplete
        pytest.skip(f"slifmr_kernels is not importable: {exc}")
    return sk


def _csr_graph(sk, rng, n_rows, n_cols, nnz, R, index_dtype, huge=None):
    indptr, indices, values, relation = random_graph(rng, n_rows, n_cols, nnz, R, huge_row=huge)
    rows = np.repeat(np.arange(n_rows), np.diff(indptr))
    return sk.CSRGraph.from_edges(
        torch.from_numpy(rows),
        torch.from_numpy(indices).to(index_dtype),
        torch.from_numpy(values).float(),
        relation=torch.from_numpy(relation) if R > 1 else None,
        shape=(n_rows, n_cols),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_emb", [False, True])
def test_op_gradients_match_reference(dtype, with_emb):
    sk = _public_api()
    rng = np.random.default_rng(21)
    R, d = 6, 7
    g = _csr_graph(sk, rng, 700, 500, 30_000, R, torch.int32, huge=0.4)
    x0 = torch.randn(500, d, dtype=dtype)
    e0 = torch.randn(R, d, dtype=dtype) if with_emb else None
    w0 = torch.rand(R, dtype=dtype) + 0.5
    dy = torch.randn(700, d, dtype=dtype)
    results = {}
    for backend in ("torch", "numba"):
        x = x0.clone().requires_grad_()
        e = e0.clone().requires_grad_() if with_emb else None
        w = w0.clone().requires_grad_()
        y = sk.propagate(g, x, relation_emb=e, relation_weight=w, backend=backend)
        assert sk.last_backend() == backend
        (y * dy).sum().backward()
        results[backend] = (y.detach(), x.grad, w.grad) + ((e.grad,) if with_emb else ())
    tol = dict(rtol=1e-4, atol=1e-4) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)
    for ref, got in zip(results["torch"], results["numba"]):
        torch.testing.assert_close(got, ref, **tol)


def test_op_plain_and_layers_match_reference():
    sk = _public_api()
    rng = np.random.default_rng(22)
    g = _csr_graph(sk, rng, 900, 900, 40_000, 1, torch.int64).normalize("sym")
    x0 = torch.randn(900, 64, dtype=torch.float64)
    dy = torch.randn(900, 64, dtype=torch.float64)
    out = {}
    for backend in ("torch", "numba"):
        x = x0.clone().requires_grad_()
        y = sk.propagate_layers(g, x, 3, backend=backend)
        (y * dy).sum().backward()
        out[backend] = (y.detach(), x.grad)
    for ref, got in zip(out["torch"], out["numba"]):
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)


def test_op_gradcheck_float64():
    sk = _public_api()
    rng = np.random.default_rng(23)
    R, d = 3, 3
    g = _csr_graph(sk, rng, 12, 9, 60, R, torch.int32)
    x = torch.randn(9, d, dtype=torch.float64, requires_grad=True)
    e = torch.randn(R, d, dtype=torch.float64, requires_grad=True)
    w = torch.rand(R, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, e, w: sk.propagate(g, x, relation_emb=e, relation_weight=w, backend="numba"), (x, e, w)
    )
