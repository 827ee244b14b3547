"""The Numba top-k kernel (slifmr_kernels/topk/numba.py) against the torch reference.

Focus on what is specific to the blocked kernel: tile boundaries (tiny forced tiles so that
rows and columns straddle several tiles and CHUNK remainders), exclusion lists that are
unsorted / duplicated / empty, exact ties, bitwise determinism across thread counts, and the
alternative "GEMM outside, selection inside" structure. Integer-valued inputs make every dot
product exact in any summation order, so there the result must equal the reference bit for
bit, ties included.
"""

import numpy as np
import pytest
import torch

pytest.importorskip("numba")

import numba  # noqa: E402

import slifmr_kernels as sk  # noqa: E402
from slifmr_kernels.testing import allowed_mask  # noqa: E402
from slifmr_kernels.topk import numba as nbk  # noqa: E402
from slifmr_kernels.topk import reference as ref  # noqa: E402

DTYPES = [torch.float32, torch.float64]


def random_exclusions(n, m, gen, max_per_row=6, empty_frac=0.4):
    """CSR exclusion arrays with empty rows, unsorted rows and duplicate entries."""
    counts = torch.randint(0, max_per_row + 1, (n,), generator=gen)
    counts[torch.rand(n, generator=gen) < empty_frac] = 0
    indptr = torch.zeros(n + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=indptr[1:])
    indices = torch.randint(0, m, (int(indptr[-1]),), generator=gen)  # random order, dups
    return indptr, indices


def int_data(n, d, gen, dtype, lo=-3, hi=4):
    return torch.randint(lo, hi, (n, d), generator=gen).to(dtype)


@pytest.fixture
def tiny_tiles(monkeypatch):
    """Force small tiles so that every boundary case is hit on small inputs."""

    def use(tr, tc):
        monkeypatch.setattr(nbk, "tile_shape", lambda n, m, d, itemsize: (tr, tc))

    return use


def check_against_dense(idx, val, x, y, k, allowed, tol):
    """Tie-aware check against float64 math: allowed, distinct, right scores, sorted, no
    better allowed candidate left out, padding exactly when candidates run out."""
    s = x.double() @ y.double().T
    n = x.shape[0]
    assert idx.shape == (n, k) and val.shape == (n, k)
    assert idx.dtype == torch.int64 and val.dtype == x.dtype
    for i in range(n):
        kk = int(min(k, int(allowed[i].sum())))
        got = idx[i, :kk]
        assert bool((idx[i, kk:] == -1).all()) and bool(torch.isneginf(val[i, kk:]).all())
        assert got.unique().numel() == kk and bool((got >= 0).all())
        assert bool(allowed[i, got].all()), f"row {i} returned a masked candidate"
        torch.testing.assert_close(val[i, :kk].double(), s[i, got], rtol=tol, atol=tol)
        assert bool((val[i, 1:kk] <= val[i, : kk - 1]).all())
        if kk:
            kth = s[i].masked_fill(~allowed[i], float("-inf")).topk(kk).values[-1]
            assert bool((s[i, got] >= kth - tol).all())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tr, tc", [(8, 16), (5, 37), (16, 48), (256, 512), (512, 256)])
@pytest.mark.parametrize(
    "n, m, d, k", [(1, 1, 1, 1), (41, 97, 5, 1), (67, 130, 17, 64), (23, 19, 3, 19), (90, 90, 33, 10)]
)
def test_exact_ties_equal_reference(gen, tiny_tiles, dtype, tr, tc, n, m, d, k):
    """Integer inputs: many exact ties; the kernel must agree with the reference exactly."""
    tiny_tiles(tr, tc)
    x, y = int_data(n, d, gen, dtype), int_data(m, d, gen, dtype)
    indptr, indices = random_exclusions(n, m, gen)
    for es in (False, True):
        for excl in ((None, None), (indptr, indices), (indptr, indices.int())):
            got = nbk.topk(x, y, k, es, *excl)
            want = ref.topk(x, y, k, es, *excl)
            assert torch.equal(got[0], want[0]), (es, excl[0] is not None)
            assert torch.equal(got[1], want[1])


@pytest.mark.parametrize("dtype", DTYPES)
def test_full_512x256_tiles_equal_reference(gen, tiny_tiles, dtype):
    """The large-problem tile (512 x 256) with full and partial row and column tiles, ties,
    exclusions and k beyond the candidate count of some rows."""
    tiny_tiles(512, 256)
    n, m, d = 1100, 700, 6
    x, y = int_data(n, d, gen, dtype), int_data(m, d, gen, dtype)
    indptr, indices = random_exclusions(n, m, gen, max_per_row=60)
    for es, k in ((True, 10), (False, 1), (True, m)):
        got = nbk.topk(x, y, k, es, indptr, indices)
        want = ref.topk(x, y, k, es, indptr, indices)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1]), (es, k)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, m, d, k", [(77, 301, 13, 7), (129, 129, 64, 64), (31, 500, 3, 1)])
def test_random_floats_against_dense(gen, tiny_tiles, dtype, n, m, d, k):
    tiny_tiles(16, 64)
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    y = torch.randn(m, d, generator=gen, dtype=dtype)
    indptr, indices = random_exclusions(n, m, gen, max_per_row=40)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for es in (False, True):
        idx, val = nbk.topk(x, y, k, es, indptr, indices)
        check_against_dense(idx, val, x, y, k, allowed_mask(n, m, es, indptr, indices), tol)


def test_duplicate_and_zero_rows_tie_by_lower_index(tiny_tiles):
    """Duplicate candidates tie exactly: the lower index must come first; zero vectors score
    0 against everything (and through the cosine op, stay finite)."""
    tiny_tiles(4, 16)
    base = torch.tensor([[1.0, 2.0, 0.5]])
    y = torch.cat([torch.zeros(3, 3), base.repeat(5, 1), -base, base.repeat(40, 1)])
    x = torch.cat([base, torch.zeros(1, 3)])
    idx, val = nbk.topk(x, y, 6, False, None, None)
    assert idx[0].tolist() == [3, 4, 5, 6, 7, 9]
    assert idx[1].tolist() == list(range(6))  # all scores 0: lowest indices win
    assert bool((val[1] == 0).all())
    zx = torch.cat([torch.zeros(2, 4), torch.randn(7, 4)])
    i2, v2 = sk.topk_similarity(zx, 3, backend="numba")
    assert bool(torch.isfinite(v2).all())
    i3, v3 = sk.topk_similarity(zx, 3, backend="torch")
    assert torch.equal(i2[:2], i3[:2])


def test_everything_excluded_and_k_at_least_m(gen):
    n, m = 9, 6
    x, y = torch.randn(n, 4, generator=gen), torch.randn(m, 4, generator=gen)
    # Row 0 loses every candidate, row 1 all but one, the rest nothing.
    indptr = torch.tensor([0, m, 2 * m - 1] + [2 * m - 1] * (n - 2))
    indices = torch.cat([torch.arange(m).flip(0), torch.arange(1, m)])
    idx, val = nbk.topk(x, y, m, False, indptr, indices)
    assert bool((idx[0] == -1).all()) and bool(torch.isneginf(val[0]).all())
    assert idx[1, 0] == 0 and bool((idx[1, 1:] == -1).all())
    assert sorted(idx[2].tolist()) == list(range(m))
    # Through the op: k > M pads with -1 / -inf.
    i2, v2 = sk.topk_similarity(x, 10, y=y, backend="numba")
    assert i2.shape == (n, 10) and bool((i2[:, m:] == -1).all())
    assert bool(torch.isneginf(v2[:, m:]).all())


def test_empty_inputs():
    x = torch.zeros(0, 5)
    y = torch.randn(4, 5)
    idx, val = nbk.topk(x, y, 2, False, None, None)
    assert idx.shape == (0, 2) and val.shape == (0, 2)
    idx, val = nbk.topk(y, y, 0, True, None, None)
    assert idx.shape == (4, 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_deterministic_across_thread_counts(gen, dtype):
    """Same bits with 1 and 2 Numba threads, random floats (no exact ties to hide behind),
    on a problem large enough for several row and column tiles with the default tiling."""
    n, m, d, k = 1500, 5000, 24, 16
    x = torch.randn(n, d, generator=gen, dtype=dtype)
    y = torch.randn(m, d, generator=gen, dtype=dtype)
    indptr, indices = random_exclusions(n, m, gen, max_per_row=30)
    before = numba.get_num_threads()
    try:
        results = []
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            results.append(nbk.topk(x, y, k, True, indptr, indices))
    finally:
        numba.set_num_threads(before)
    for other in results[1:]:
        assert torch.equal(results[0][0], other[0]) and torch.equal(results[0][1], other[1])
    check_against_dense(
        results[0][0][:50],
        results[0][1][:50],
        x[:50],
        y,
        k,
        allowed_mask(n, m, True, indptr, indices)[:50],
        1e-5 if dtype == torch.float32 else 1e-12,
    )


@pytest.mark.parametrize("dtype", DTYPES)
def test_outer_structure_matches_fused(gen, dtype):
    """The 'GEMM outside' variant (kept for the benchmark) returns the same lists."""
    n, m, d, k = 203, 611, 9, 12
    x, y = int_data(n, d, gen, dtype), int_data(m, d, gen, dtype)
    indptr, indices = random_exclusions(n, m, gen, max_per_row=50)
    want = ref.topk(x, y, k, True, indptr, indices)
    got = nbk.topk_outer(x, y, k, True, indptr, indices, rows=64, cols=100)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_tile_shape_depends_on_problem_only():
    for n, m, d, item in [
        (10, 10, 4, 4),
        (10**6, 10**6, 64, 4),
        (3000, 50, 384, 8),
        (200_000, 200_000, 2048, 4),
    ]:
        tr, tc = nbk.tile_shape(n, m, d, item)
        assert tr >= 1 and tc >= nbk.CHUNK and tr * tc * item <= 1 << 20
    # Large problems: the measured 512 x 256 float32 tile (512 KiB) at d = 64 and d = 384.
    assert nbk.tile_shape(200_000, 200_000, 64, 4) == (512, 256)
    assert nbk.tile_shape(200_000, 200_000, 384, 4) == (512, 256)
    assert nbk.tile_shape(200_000, 200_000, 384, 8) == (512, 128)
    # Small N: shorter row tiles, so that both cores get row tiles.
    assert nbk.tile_shape(3000, 3000, 64, 4)[0] < 512


def test_blas_threads_restored():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    before = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    with nbk._blas_single_thread():
        inside = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
        assert all(t == 1 for t in inside)
    after = [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]
    assert after == before


def test_ctypes_blas_fallback_finds_openblas():
    """Without threadpoolctl the kernel pins BLAS through ctypes: the setters must be found
    (numpy/scipy wheels ship OpenBLAS) and must round-trip a thread count."""
    setters = nbk._find_openblas_setters()
    if not setters:
        pytest.skip("no OpenBLAS shipped with numpy/scipy here")
    for set_fn, get_fn in setters:
        n = get_fn()
        set_fn(1)
        assert get_fn() == 1
        set_fn(n)
        assert get_fn() == n


def test_op_selects_numba_and_matches_reference(gen):
    x = torch.randn(120, 16, generator=gen)
    items = torch.randn(300, 16, generator=gen)
    indptr, indices = random_exclusions(120, 300, gen, max_per_row=20)
    excl = sk.CSRGraph.from_edges(
        torch.repeat_interleave(torch.arange(120), indptr[1:] - indptr[:-1]), indices, shape=(120, 300)
    )
    got = sk.topk_scores(x, items, 20, exclude=excl, backend="auto")
    assert sk.last_backend("topk") == "numba"
    idx, val = got
    check_against_dense(idx, val, x, items, 20, allowed_mask(120, 300, False, indptr, indices), 1e-4)
    g = sk.knn_graph(x, 5, backend="numba")
    assert g.shape == (120, 120) and g.nnz == 600
    assert not bool((g.row_ids() == g.indices.long()).any())


@pytest.mark.parametrize("dtype", DTYPES)
def test_cosine_scales_the_scores_instead_of_copying_the_rows(gen, tiny_tiles, monkeypatch, dtype):
    """metric="cosine" on numba: the kernel divides the scores by the row norms (no normalised
    copy: normalize_rows is never called) and returns the normalised rows' top-k, for row
    norms from 1e-3 to 1e3 and a zero row, self-join and cross join."""
    from slifmr_kernels.topk import op

    tiny_tiles(16, 48)
    x = torch.randn(70, 9, generator=gen, dtype=dtype)
    x = x * torch.logspace(-3, 3, 70, dtype=dtype)[:, None]
    x[5] = 0
    y = torch.randn(110, 9, generator=gen, dtype=dtype) * 100
    monkeypatch.setattr(op, "normalize_rows", lambda *a, **kw: pytest.fail("rows copied"))
    unit = [r / r.norm(dim=1, keepdim=True).clamp_min(1e-12) for r in (x, y)]
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    for other, cand, es in ((None, unit[0], True), (y, unit[1], False)):
        idx, val = sk.topk_similarity(x, 8, y=other, backend="numba")
        check_against_dense(idx, val, unit[0], cand, 8, allowed_mask(70, cand.shape[0], es), tol)


def test_numpy_scan_handles_nonmultiple_chunks():
    """A row shorter than one chunk and a row with a remainder, straight into _scan_row."""
    for nc in (1, nbk.CHUNK - 1, nbk.CHUNK + 3, 3 * nbk.CHUNK):
        row = np.random.default_rng(nc).standard_normal(nc).astype(np.float32)
        vals = np.full(4, -np.inf, np.float32)
        idxs = np.full(4, -1, np.int64)
        nbk._scan_row(row, nc, 100, vals, idxs, 4)
        order = np.argsort(-row, kind="stable")[:4]
        kk = min(4, nc)
        assert idxs[:kk].tolist() == (order + 100).tolist()[:kk]
        assert np.array_equal(vals[:kk], row[order][:kk])
