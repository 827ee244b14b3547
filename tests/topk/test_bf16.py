"""Exact top-k through bf16 candidates (slifmr_kernels/topk/bf16.py): the error bound holds, the
certificate and its fallbacks make every result equal the fp32 reference, and the public ops
give the same answers with the path forced on (``SLIFMR_TOPK_BF16=1``)."""

import pytest
import torch

pytest.importorskip("numba")

import slifmr_kernels as sk  # noqa: E402
from slifmr_kernels.topk import bf16  # noqa: E402
from slifmr_kernels.topk import numba as nbk  # noqa: E402
from slifmr_kernels.topk import reference as ref  # noqa: E402


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(1234)


@pytest.fixture
def force_bf16(monkeypatch):
    monkeypatch.setenv("SLIFMR_TOPK_BF16", "1")


@pytest.fixture
def small_tiles(monkeypatch):
    """Tiles smaller than the inputs: rows and columns straddle several tiles."""
    monkeypatch.setattr(bf16, "TR", 96)
    monkeypatch.setattr(bf16, "TC", 80)


def clustered(n, d, gen, clusters=8, noise=0.3):
    c = torch.randn(clusters, d, generator=gen)
    x = c[torch.randint(0, clusters, (n,), generator=gen)] + noise * torch.randn(n, d, generator=gen)
    return sk.normalize_rows(x)


def assert_exact(idx, val, x, y, k, exclude_self=False, excl=None, tol=1e-5):
    """Against float64 arithmetic: same result as the reference up to float rounding — the
    reference's index set, except entries scoring within tol of the row's k-th score (an fp32
    rounding tie), values right, sorted, padding where candidates run out."""
    ri, rv = ref.topk(x, y, k, exclude_self, *(excl if excl is not None else (None, None)))
    assert idx.shape == ri.shape and idx.dtype == torch.int64 and val.dtype == x.dtype
    same = (idx == ri).all(1)
    s = x.double() @ y.double().T
    for i in torch.nonzero(~same).flatten().tolist():
        kk = int((ri[i] >= 0).sum())
        assert int((idx[i] >= 0).sum()) == kk
        got, want = set(idx[i, :kk].tolist()), set(ri[i, :kk].tolist())
        kth = float(rv[i, kk - 1])
        for j in got ^ want:
            assert abs(float(s[i, j]) - kth) <= tol, (i, j, float(s[i, j]), kth)
    ok = idx >= 0
    assert torch.allclose(val[ok].double(), s.gather(1, idx.clamp_min(0))[ok], atol=tol)
    assert bool(torch.isneginf(val[~ok]).all())
    assert bool((val[:, :-1] >= val[:, 1:]).all())


def test_error_bound_holds(gen):
    """eps_i + half a bf16 spacing of the score bounds |bf16 GEMM - exact| on every pair,
    with rows of very different norms."""
    for d in (16, 96, 384):
        x = torch.randn(300, d, generator=gen) * torch.logspace(-3, 3, 300)[:, None]
        y = torch.randn(500, d, generator=gen) * torch.logspace(2, -2, 500)[:, None]
        xb, yb = x.bfloat16(), y.bfloat16()
        s_t = torch.mm(xb, yb.T).double()
        exact = x.double() @ y.double().T
        eps = bf16.error_bound(x, y, xb, yb).double()
        assert bool(((s_t - exact).abs() <= eps[:, None] + s_t.abs() * 2.0**-8).all())


@pytest.mark.parametrize(
    "n,m,d,k", [(300, 300, 64, 10), (257, 411, 96, 7), (500, 500, 384, 20), (200, 350, 33, 1)]
)
def test_random_and_clustered_equal_reference(gen, small_tiles, n, m, d, k):
    x = torch.randn(n, d, generator=gen)
    y = torch.randn(m, d, generator=gen)
    idx, val = bf16.topk(x, y, k, False, None, None)
    assert_exact(idx, val, x, y, k)
    xc = clustered(n, d, gen, noise=0.15)  # dense near-ties around the k-th score
    idx, val = bf16.topk(xc, xc, k, True, None, None)
    assert_exact(idx, val, xc, xc, k, exclude_self=True)


def test_integer_data_bit_identical_with_exact_ties(gen, small_tiles):
    """Small integers: every dot product is exact in any order, so the result must equal the
    reference bit for bit, exact ties broken by the lower index (and most rows need the
    retry / fp32 fallback: the ties defeat the certificate)."""
    x = torch.randint(-3, 4, (400, 24), generator=gen).float()
    y = torch.randint(-3, 4, (333, 24), generator=gen).float()
    for k in (1, 5, 40):
        idx, val = bf16.topk(x, y, k, False, None, None)
        ri, rv = ref.topk(x, y, k, False, None, None)
        assert torch.equal(idx, ri) and torch.equal(val, rv)
    idx, val = bf16.topk(x, x, 12, True, None, None)
    ri, rv = ref.topk(x, x, 12, True, None, None)
    assert torch.equal(idx, ri) and torch.equal(val, rv)


def test_duplicate_rows_tie_by_lower_index(gen, small_tiles):
    base = torch.randn(50, 40, generator=gen)
    x = base[torch.randint(0, 50, (300,), generator=gen)]  # every row has exact duplicates
    idx, val = bf16.topk(x, x, 8, True, None, None)
    ri, rv = ref.topk(x, x, 8, True, None, None)
    assert torch.equal(idx, ri)
    assert torch.allclose(val, rv, rtol=1e-6)  # fp32 sums in another order


def test_adversarial_near_ties_force_fallback_and_stay_exact(gen, small_tiles):
    """Rows that differ by ~1e-4 relative: bf16 cannot separate them, every certificate fails,
    the 4x retry fails too, and the fp32 kernel answers — still exactly."""
    base = torch.randn(1, 64, generator=gen)
    x = base + 1e-4 * torch.randn(300, 64, generator=gen)
    idx, val = bf16.topk(x, x, 10, True, None, None)
    stats = bf16.last_fallback_rows()
    assert stats[0] == 300 and stats[-1] > 0
    ri, rv = nbk.topk_fp32(x, x, 10, True, None, None)
    assert torch.equal(idx, ri) and torch.equal(val, rv)


def test_certified_rows_skip_fallback(gen, small_tiles):
    x = torch.randn(400, 128, generator=gen)  # well-separated scores: every row certifies
    idx, val = bf16.topk(x, x, 10, True, None, None)
    assert bf16.last_fallback_rows() == []
    assert_exact(idx, val, x, x, 10, exclude_self=True)


def random_exclusions(n, m, gen, max_per_row=30):
    counts = torch.randint(0, max_per_row + 1, (n,), generator=gen)
    indptr = torch.zeros(n + 1, dtype=torch.int64)
    torch.cumsum(counts, 0, out=indptr[1:])
    return indptr, torch.randint(0, m, (int(indptr[-1]),), generator=gen)


def test_exclusions_self_and_padding(gen, small_tiles):
    x = clustered(240, 48, gen)
    y = clustered(150, 48, gen)
    ip, ind = random_exclusions(240, 150, gen)
    for k in (5, 149, 150, 300):  # k >= M: padding (-1, -inf)
        idx, val = bf16.topk(x, y, min(k, 150), True, ip, ind)
        assert_exact(idx, val, x, y, min(k, 150), exclude_self=True, excl=(ip, ind))
    # a row with every column excluded
    ip2 = torch.tensor([0, 150] + [150] * 239, dtype=torch.int64)
    idx, val = bf16.topk(x, y, 4, False, ip2, torch.arange(150))
    assert bool((idx[0] == -1).all()) and bool(torch.isneginf(val[0]).all())
    assert_exact(idx, val, x, y, 4, excl=(ip2, torch.arange(150)))


def test_empty_inputs():
    for n, m, k in ((0, 5, 3), (5, 0, 0), (4, 4, 0)):
        x, y = torch.randn(n, 8), torch.randn(m, 8)
        idx, val = bf16.topk(x, y, k, False, None, None)
        assert idx.shape == (n, k) and val.shape == (n, k)


def test_public_ops_with_bf16_forced(gen, force_bf16, small_tiles, monkeypatch):
    calls = []  # (rows, k) of every public call that the bf16 path served
    real = bf16.topk

    def counted(x, y, k, *args, _level=0, **kw):
        if _level == 0:
            calls.append((x.shape[0], int(k)))
        return real(x, y, k, *args, _level=_level, **kw)

    monkeypatch.setattr(bf16, "topk", counted)
    x = clustered(300, 64, gen)
    for metric in ("ip", "cosine"):
        i1, v1 = sk.topk_similarity(x * 3, 10, metric=metric, backend="numba")
        xs = x * 3 if metric == "ip" else x
        assert_exact(i1, v1, xs, xs, 10, exclude_self=True, tol=1e-4)
    g1 = sk.knn_graph(x, 10, backend="numba")
    g2 = sk.knn_graph(x, 10, backend="torch")
    assert torch.equal(g1.indptr, g2.indptr)
    u, it = torch.randn(120, 32, generator=gen), torch.randn(200, 32, generator=gen)
    src = torch.randint(0, 120, (900,), generator=gen)
    dst = torch.randint(0, 200, (900,), generator=gen)
    excl = sk.CSRGraph.from_edges(src, dst, shape=(120, 200))
    i1, v1 = sk.topk_scores(u, it, 20, exclude=excl, backend="numba")
    i2, v2 = sk.topk_scores(u, it, 20, exclude=excl, backend="torch")
    assert_exact(i1, v1, u, it, 20, excl=(excl.indptr, excl.indices))
    assert calls == [(300, 10), (300, 10), (300, 10), (120, 20)]
    assert all(0 <= rows <= 120 for rows in bf16.last_fallback_rows())


def test_switch_and_usable(monkeypatch):
    x = torch.randn(10, 64)
    monkeypatch.setenv("SLIFMR_TOPK_BF16", "0")
    assert not bf16.enabled(x, x, 5)
    monkeypatch.setenv("SLIFMR_TOPK_BF16", "1")
    assert bf16.enabled(x, x, 5)
    assert not bf16.enabled(x.double(), x.double(), 5)
    assert not bf16.usable(x * 1e15, x)  # norms beyond 2^40: bf16 products could overflow
    assert not bf16.usable(x * 1e-15, x)  # below 2^-40: denormals flushed
    monkeypatch.setenv("SLIFMR_TOPK_BF16", "")
    assert not bf16.enabled(x, x, 5)  # too small to pay off
    assert bf16.candidate_count(10, 1000) == 32 and bf16.candidate_count(10, 30) == 30


def test_auto_routes_large_high_d_calls_through_bf16(gen, monkeypatch):
    """backend="auto" on CPU takes the bf16 path for float32, d >= MIN_D, enough work (the
    thresholds lowered here), and gives the fp32 kernel's answer."""
    monkeypatch.delenv("SLIFMR_TOPK_BF16", raising=False)
    monkeypatch.setattr(bf16, "MIN_WORK", 1)
    monkeypatch.setattr(bf16, "_HAS_BF16", True)
    x = clustered(400, bf16.MIN_D, gen)
    calls = []
    real = bf16.topk
    monkeypatch.setattr(bf16, "topk", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    idx, val = sk.topk_similarity(x, 10, metric="ip")
    assert calls and sk.last_backend("topk") == "numba"
    assert_exact(idx, val, x, x, 10, exclude_self=True)
    calls.clear()
    sk.topk_similarity(x[:, : bf16.MIN_D - 1].contiguous(), 10, metric="ip")  # d too small
    sk.topk_similarity(x.double(), 10, metric="ip")  # float64: fp32 path never applies
    assert not calls
