"""sk.knn_graph(method="approx"): random-projection block seeds + NN-descent. Layout of the
exact op, determinism, high recall on clustered data, exclude_self=False, small-N exact path,
argument checks."""

import pytest
import torch

pytest.importorskip("numba")

import slifmr_kernels as sk  # noqa: E402
from slifmr_kernels.topk import approx  # noqa: E402


def clustered(n, d, seed=0, clusters=40, spread=0.4):
    g = torch.Generator().manual_seed(seed)
    c = torch.randn(clusters, d, generator=g)
    x = c[torch.randint(0, clusters, (n,), generator=g)] + spread * torch.randn(n, d, generator=g)
    return sk.normalize_rows(x)


def recall(ga, ge, n, k):
    a, e = ga.indices.view(n, k).tolist(), ge.indices.view(n, k).tolist()
    return sum(len(set(r) & set(s)) for r, s in zip(a, e)) / (n * k)


@pytest.fixture(scope="module")
def data():
    return clustered(3000, 24)


def test_layout_recall_and_determinism(data, monkeypatch):
    monkeypatch.setattr(approx, "knn_graph_approx", lambda *a, **kw: _orig(*a, **{**kw, "block": 256}))
    n, k = data.shape[0], 8
    ga = sk.knn_graph(data, k, method="approx", seed=3)
    ge = sk.knn_graph(data, k)
    assert ga.shape == (n, n) and ga.nnz == n * k and ga.values.dtype == torch.float32
    assert bool((ga.degrees() == k).all())
    rows = ga.row_ids()
    assert not bool((ga.indices.long() == rows).any())  # self excluded
    for i in range(0, n, 97):  # columns sorted per row
        c = ga.indices[ga.indptr[i] : ga.indptr[i + 1]]
        assert bool((c[1:] > c[:-1]).all())
    # values are the true similarities of the returned pairs
    s = (data[rows] * data[ga.indices.long()]).sum(1)
    assert torch.allclose(ga.values, s, atol=1e-5)
    assert recall(ga, ge, n, k) >= 0.9
    gb = sk.knn_graph(data, k, method="approx", seed=3)
    assert torch.equal(ga.indices, gb.indices) and torch.equal(ga.values, gb.values)


_orig = approx.knn_graph_approx


def test_keep_self(data, monkeypatch):
    monkeypatch.setattr(approx, "knn_graph_approx", lambda *a, **kw: _orig(*a, **{**kw, "block": 256}))
    n, k = data.shape[0], 6
    g = sk.knn_graph(data, k, method="approx", exclude_self=False)
    assert g.nnz == n * k
    assert all(i in g.indices[g.indptr[i] : g.indptr[i + 1]].tolist() for i in range(0, n, 50))


def test_small_n_is_exact():
    x = clustered(300, 8)
    ga = sk.knn_graph(x, 5, method="approx")
    ge = sk.knn_graph(x, 5)
    assert torch.equal(ga.indices, ge.indices)


def test_arguments():
    x = torch.randn(20, 4)
    with pytest.raises(sk.InputError):
        sk.knn_graph(x, 3, method="fast")
    with pytest.raises(sk.InputError):
        sk.knn_graph(x, 3, method="approx", exclude=sk.CSRGraph([0] * 21, [], shape=(20, 20)))
    with pytest.raises(sk.InputError):
        sk.knn_graph(x, 3, method="approx", metric="l2")
    with pytest.raises(sk.InputError):
        sk.knn_graph(torch.full((20, 4), float("nan")), 3, method="approx")
    assert sk.knn_graph(x, 0, method="approx").nnz == 0


def test_orders_by_size():
    assert approx.default_orders(100_000) == 2
    assert approx.default_orders(200_000) == 2
    assert approx.default_orders(1_000_000) == 2
