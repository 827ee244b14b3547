"""knn_refine (incremental kNN refresh) and knn_recall, on every backend this machine runs."""

import pytest
import torch

import slifmr_kernels as sk
from slifmr_kernels.refine.op import knn_recall, knn_refine

OP = "refine"


def clustered(n, d, gen, clusters=40, spread=0.5, dtype=torch.float32):
    centers = torch.randn(clusters, d, generator=gen, dtype=torch.float64)
    x = centers[torch.randint(0, clusters, (n,), generator=gen)]
    return (x + spread * torch.randn(n, d, generator=gen, dtype=torch.float64)).to(dtype)


def perturb(x, gen, scale=0.1):
    """x + scale * noise * |x|, noise ~ N(0, I/d): every row moves by about scale * |x|."""
    d = x.shape[1]
    noise = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.dtype) / d**0.5
    return x + scale * noise * x.norm(dim=1, keepdim=True)


def check_graph(g, x, k, tol):
    """k edges per row, sorted columns, no self loops, values = cosine similarity."""
    n = x.shape[0]
    assert g.shape == (n, n) and g.nnz == n * k
    assert bool((g.degrees() == k).all())
    rows = g.row_ids()
    assert not bool((rows == g.indices.long()).any())
    for i in range(0, n, max(1, n // 50)):
        cols = g.indices[g.indptr[i] : g.indptr[i + 1]]
        assert bool((cols[1:] > cols[:-1]).all())
    xn = x.double() / x.double().norm(dim=1, keepdim=True).clamp_min(1e-12)
    want = (xn[rows] * xn[g.indices.long()]).sum(1)
    torch.testing.assert_close(g.values.double(), want, rtol=tol, atol=tol)


@pytest.mark.parametrize("n, d, k", [(2500, 32, 10), (1201, 17, 5)])
def test_recall_after_perturbation(device, backend, gen, n, d, k):
    x0 = clustered(n, d, gen).to(device)
    g0 = sk.knn_graph(x0, k, backend="torch")
    x1 = perturb(x0, gen)
    exact, _ = sk.topk_similarity(x1, k, backend="torch")
    g1, stats = knn_refine(x1, g0, k, seed=7, backend=backend, return_stats=True)
    recall = knn_recall(g1, exact)
    assert recall >= 0.95, (recall, stats)
    assert stats["backend"] == backend and stats["iterations"] >= 1
    # The seeds alone (no rounds) are clearly worse: the rounds do the work.
    g_seed = knn_refine(x1, g0, k, max_iters=0, seed=7, backend=backend)
    assert knn_recall(g_seed, exact) < recall
    check_graph(g1, x1.cpu(), k, 1e-5)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_deterministic_for_a_seed(device, backend, gen, dtype):
    x0 = clustered(700, 12, gen, dtype=dtype).to(device)
    g0 = sk.knn_graph(x0, 6, backend="torch")
    x1 = perturb(x0, gen, 0.3)
    a = knn_refine(x1, g0, 6, seed=11, backend=backend)
    b = knn_refine(x1, g0, 6, seed=11, backend=backend)
    assert torch.equal(a.indptr, b.indptr) and torch.equal(a.indices, b.indices)
    assert torch.equal(a.values, b.values)


def test_numba_same_bits_on_any_thread_count(gen):
    numba = pytest.importorskip("numba")
    x0 = clustered(3000, 16, gen)
    g0 = sk.knn_graph(x0, 8, backend="torch")
    x1 = perturb(x0, gen, 0.3)
    before = numba.get_num_threads()
    out = []
    try:
        for threads in sorted({1, numba.config.NUMBA_NUM_THREADS}):
            numba.set_num_threads(threads)
            out.append(knn_refine(x1, g0, 8, seed=5, backend="numba", return_stats=True))
    finally:
        numba.set_num_threads(before)
    for g, st in out[1:]:
        assert torch.equal(g.indices, out[0][0].indices)
        assert torch.equal(g.values, out[0][0].values)
        assert st["updates"] == out[0][1]["updates"]


def test_max_iters_zero_is_the_rescored_seeds(device, backend, gen):
    """With no rounds, each row is the top-k of its previous neighbours under the new x."""
    n, k = 300, 4
    x0 = torch.randn(n, 8, generator=gen).to(device)
    g0 = sk.knn_graph(x0, 9, backend="torch")  # 9 seeds per row, keep 4
    x1 = torch.randn(n, 8, generator=gen).to(device)
    g = knn_refine(x1, g0, k, max_iters=0, backend=backend)
    xn = sk.normalize_rows(x1.double().cpu())
    for i in range(0, n, 7):
        seeds = g0.indices[g0.indptr[i] : g0.indptr[i + 1]].long().cpu()
        s = xn[i] @ xn[seeds].T
        want = set(seeds[s.topk(k).indices].tolist())
        assert set(g.indices[g.indptr[i] : g.indptr[i + 1]].tolist()) == want


def test_isolated_rows_self_loops_and_duplicates(device, backend, gen):
    """Seeds with empty rows, self loops and duplicate edges: every row still gets k distinct
    non-self neighbours, and the refresh still finds the true ones."""
    n, k = 800, 6
    x = clustered(n, 10, gen).to(device)
    exact, _ = sk.topk_similarity(x, k, backend="torch")
    src = torch.arange(n).repeat_interleave(3)
    dst = torch.stack([torch.arange(n), exact[:, 0].cpu(), exact[:, 0].cpu()], 1).reshape(-1)
    keep = src % 5 != 0  # every fifth row has no seeds at all
    g0 = sk.CSRGraph.from_edges(src[keep], dst[keep], shape=(n, n)).to(device)
    g = knn_refine(x, g0, k, seed=3, backend=backend)
    check_graph(g, x.cpu(), k, 1e-5)
    assert knn_recall(g, exact) >= 0.95


def test_small_catalogs(device, backend):
    x = torch.randn(4, 3).to(device)
    empty = sk.CSRGraph.from_edges([], [], shape=(4, 4)).to(device)
    g = knn_refine(x, empty, 10, backend=backend)  # k clamped to N - 1
    assert g.nnz == 12 and bool((g.degrees() == 3).all())
    one = knn_refine(x[:1], sk.CSRGraph.from_edges([], [], shape=(1, 1)).to(device), 3, backend=backend)
    assert one.shape == (1, 1) and one.nnz == 0


def test_inner_product_metric(device, backend, gen):
    x = clustered(500, 8, gen).to(device)
    g0 = sk.knn_graph(x, 5, metric="ip", backend="torch")
    x1 = perturb(x, gen)
    exact, _ = sk.topk_similarity(x1, 5, metric="ip", backend="torch")
    g = knn_refine(x1, g0, 5, metric="ip", seed=1, backend=backend)
    assert knn_recall(g, exact) >= 0.9
    rows = g.row_ids()
    want = (x1.double()[rows] * x1.double()[g.indices.long()]).sum(1).float()
    torch.testing.assert_close(g.values.cpu(), want.cpu(), rtol=1e-5, atol=1e-4)


def test_bad_inputs_name_the_argument():
    x = torch.randn(10, 4)
    g = sk.knn_graph(x, 3, backend="torch")
    with pytest.raises(ValueError, match="previous_graph"):
        knn_refine(torch.randn(11, 4), g, 3)
    with pytest.raises(TypeError, match="previous_graph"):
        knn_refine(x, g.to_scipy(), 3)
    with pytest.raises(ValueError, match="k must"):
        knn_refine(x, g, 0)
    with pytest.raises(ValueError, match="metric"):
        knn_refine(x, g, 3, metric="l2")
    with pytest.raises(ValueError, match="max_iters"):
        knn_refine(x, g, 3, max_iters=-1)
    with pytest.raises(ValueError, match="sample_random"):
        knn_refine(x, g, 3, sample_random=1.5)
    with pytest.raises(ValueError, match="delta"):
        knn_refine(x, g, 3, delta=-0.1)
    with pytest.raises(TypeError, match="seed"):
        knn_refine(x, g, 3, seed="a")
    with pytest.raises(ValueError, match="x contains"):
        knn_refine(x.masked_fill(torch.eye(10, 4, dtype=torch.bool), float("nan")), g, 3)
    with pytest.raises(TypeError, match="x must"):
        knn_refine(x.long(), g, 3)
    with pytest.raises(ValueError, match="backend"):
        knn_refine(x, g, 3, backend="nope")


def test_knn_recall_values():
    exact = torch.tensor([[1, 2, 3], [0, 2, -1], [4, 0, 1]])
    assert knn_recall(exact, exact) == 1.0
    approx = torch.tensor([[3, 9, 1], [2, 5, 6], [7, 8, 6]])
    assert knn_recall(approx, exact) == pytest.approx(3 / 8)  # 2 + 1 + 0 of 8 valid
    g = sk.CSRGraph.from_edges([0, 0, 1, 2, 2], [1, 3, 2, 4, 0], shape=(3, 5))
    assert knn_recall(g, exact[:, :2]) == pytest.approx((1 + 1 + 2) / 6)
    padded = torch.tensor([[1, -1, -1], [-1, -1, -1], [4, 0, 1]])
    assert knn_recall(padded, exact) == pytest.approx(4 / 8)
    assert knn_recall(exact, torch.full((3, 2), -1)) == 1.0
    with pytest.raises(ValueError, match="rows"):
        knn_recall(exact[:2], exact)
    with pytest.raises(TypeError, match="approx_graph_or_idx"):
        knn_recall(exact.float(), exact)


def test_exported_from_package():
    assert sk.knn_refine is knn_refine
