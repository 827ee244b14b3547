"""pytest-benchmark suite for top-k similarity and the kNN refresh on CPU: ours and peers.

Sizes are a fraction of bench/compare_topk.py's (that script makes the reported tables)::

    flock -x /tmp/slifmr-cpu.lock python -m pytest bench/bench_topk.py --benchmark-only \\
        --benchmark-group-by=group --benchmark-columns=median,iqr,rounds

``SLIFMR_BENCH_SCALE`` (default 1.0) scales N, e.g. 0.2 for a quick smoke run. Every
benchmarked function is checked once against a peer, so a fast wrong kernel fails.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("pytest_benchmark")
pytest.importorskip("numba", reason="the numba backend is optional (pip install numba)")
sk = pytest.importorskip("slifmr_kernels")
from slifmr_kernels.testing import power_law_pairs  # noqa: E402

_spec = importlib.util.spec_from_file_location("compare_topk", Path(__file__).with_name("compare_topk.py"))
ct = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ct)

SCALE = float(os.environ.get("SLIFMR_BENCH_SCALE", "1.0"))
ROUNDS = dict(rounds=5, warmup_rounds=1, iterations=1)


def _n(x):
    return max(2000, int(x * SCALE))


@pytest.fixture(scope="module")
def knn_data():
    return ct.clustered(_n(30_000), 64)


@pytest.fixture(scope="module")
def ranking_data():
    g = torch.Generator().manual_seed(0)
    n_users, n_items = _n(10_000), _n(20_000)
    users = torch.randn(n_users, 64, generator=g) * 0.3
    items = torch.randn(n_items, 64, generator=g) * 0.3
    pairs = 20 * n_users
    src, dst = power_law_pairs(n_users, n_items, pairs, 1.0, generator=g)
    return users, items, sk.CSRGraph.from_edges(src, dst, shape=(n_users, n_items))


def _check_same(a, b, x, y):
    diff, bad = ct.agreement(a, b, x, y)
    assert bad == 0, f"{bad} rows differ beyond ties"


@pytest.mark.benchmark(group="knn graph N x 64, k = 10")
@pytest.mark.parametrize("method", ["numba", "faiss", "torch-chunks"])
def test_knn(benchmark, knn_data, method):
    x, k = knn_data, 10
    ours = sk.topk_similarity(x, k, metric="ip", backend="numba")[0]
    if method == "numba":
        fn = lambda: sk.topk_similarity(x, k, metric="ip", backend="numba")  # noqa: E731
    elif method == "faiss":
        pytest.importorskip("faiss")
        fn = lambda: ct.faiss_knn(x, k)  # noqa: E731
    else:
        fn = lambda: ct.chunked_torch_knn(x, k)  # noqa: E731
    _check_same(fn()[0], ours, x, x)
    benchmark.pedantic(fn, **ROUNDS)


@pytest.mark.benchmark(group="full ranking, training items masked, k = 20")
@pytest.mark.parametrize("method", ["numba", "dense-torch"])
def test_ranking(benchmark, ranking_data, method):
    users, items, excl = ranking_data
    k = 20

    def dense(batch=2048):
        rows, cols = excl.row_ids(), excl.indices.long()
        out = []
        for r0 in range(0, users.shape[0], batch):
            r1 = min(users.shape[0], r0 + batch)
            s = users[r0:r1] @ items.T
            a, b = int(excl.indptr[r0]), int(excl.indptr[r1])
            s[rows[a:b] - r0, cols[a:b]] = float("-inf")
            out.append(torch.topk(s, k, dim=1).indices)
        return torch.cat(out), None

    if method == "numba":
        fn = lambda: sk.topk_scores(users, items, k, exclude=excl, backend="numba")  # noqa
    else:
        fn = dense
    _check_same(fn()[0], sk.topk_scores(users, items, k, exclude=excl, backend="torch")[0], users, items)
    benchmark.pedantic(fn, **ROUNDS)


@pytest.mark.benchmark(group="kNN refresh N x 64, k = 10, rows moved 10 %")
@pytest.mark.parametrize("method", ["knn_refine", "exact"])
def test_refresh(benchmark, knn_data, method):
    x0, k = knn_data, 10
    g0 = sk.knn_graph(x0, k, backend="numba")
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1)) / 8.0
    x1 = x0 + 0.1 * noise * x0.norm(dim=1, keepdim=True)
    exact = sk.topk_similarity(x1, k, backend="numba")[0]
    if method == "knn_refine":
        fn = lambda: sk.knn_refine(x1, g0, k, seed=0)  # noqa: E731
        from slifmr_kernels.refine.op import knn_recall

        assert knn_recall(fn(), exact) >= 0.95
    else:
        fn = lambda: sk.knn_graph(x1, k, backend="numba")  # noqa: E731
    benchmark.pedantic(fn, **ROUNDS)
