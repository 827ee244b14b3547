"""pytest-benchmark suite for propagation on CPU: the Numba backend and its peers.

One benchmark group per task (the graphs are those of ``bench/compare_propagate.py``)::

    flock -x /tmp/slifmr-cpu.lock python -m pytest bench/bench_propagate.py --benchmark-only \
        --benchmark-group-by=group --benchmark-columns=median,iqr,rounds

``SLIFMR_BENCH_SCALE`` (default 1.0) scales the edge counts, e.g. 0.1 for a quick smoke run.
Every benchmarked function is checked once against a peer, so a fast wrong kernel fails.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path

import pytest
import torch

pytest.importorskip("pytest_benchmark")
pytest.importorskip("numba", reason="the numba backend is optional (pip install numba)")
sk = pytest.importorskip("slifmr_kernels")
nbk = importlib.import_module("slifmr_kernels.propagate.numba")

_spec = importlib.util.spec_from_file_location(
    "compare_propagate", Path(__file__).with_name("compare_propagate.py")
)
cp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cp)

SCALE = float(os.environ.get("SLIFMR_BENCH_SCALE", "1.0"))
D = 64
ROUNDS = dict(rounds=7, warmup_rounds=2, iterations=1)


def _n(x):
    return max(1000, int(x * SCALE))


# ---------------------------------------------------------------------------
# LightGCN adjacency
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lightgcn():
    a = cp.lightgcn_adjacency(0, n_inter=_n(1_000_000))
    x = torch.randn(a.shape[0], D)
    return dict(
        a=a,
        x=x,
        dy=torch.randn(a.shape[0], D),
        t=cp._csr_tensor(a),
        g=sk.CSRGraph.from_scipy(a),
        args32=cp._kernel_args(a, torch.int32),
    )


LIGHTGCN_FWD = ["numba_kernel", "sk_propagate_numba", "torch_sparse_mm", "scipy"]


@pytest.mark.parametrize("impl", LIGHTGCN_FWD)
def test_lightgcn_forward(benchmark, lightgcn, impl):
    benchmark.group = "lightgcn forward"
    a, x = lightgcn["a"], lightgcn["x"]
    n = a.shape[0]
    fn = {
        "numba_kernel": lambda: nbk.spmm(*lightgcn["args32"], x, n),
        "sk_propagate_numba": lambda: sk.propagate(lightgcn["g"], x, backend="numba"),
        "torch_sparse_mm": lambda: torch.sparse.mm(lightgcn["t"], x),
        "scipy": lambda: torch.from_numpy(a @ x.numpy()),
    }[impl]
    torch.testing.assert_close(fn(), torch.sparse.mm(lightgcn["t"], x), rtol=1e-4, atol=1e-5)
    benchmark.pedantic(fn, **ROUNDS)


@pytest.mark.parametrize("impl", ["sk_propagate_numba", "torch_sparse_mm"])
def test_lightgcn_forward_backward(benchmark, lightgcn, impl):
    benchmark.group = "lightgcn forward+backward"
    x0, dy, g, t = lightgcn["x"], lightgcn["dy"], lightgcn["g"], lightgcn["t"]
    g.transpose()

    def fn():
        x = x0.detach().requires_grad_()
        y = sk.propagate(g, x, backend="numba") if impl == "sk_propagate_numba" else torch.sparse.mm(t, x)
        y.backward(dy)
        return x.grad

    torch.testing.assert_close(fn(), torch.sparse.mm(t.t().to_sparse_csr(), dy), rtol=1e-4, atol=1e-5)
    benchmark.pedantic(fn, **ROUNDS)


# ---------------------------------------------------------------------------
# three relation graphs on one node space
# ---------------------------------------------------------------------------

WEIGHTS = {"interaction": 1.0, "knn": 0.5, "kg": 0.25}


@pytest.fixture(scope="module")
def hetero():
    graphs = cp.hetero_graphs(1, n_inter=_n(1_000_000), n_kg=_n(500_000))
    stacked = sk.stack_relations(
        {k: sk.CSRGraph.from_scipy(m) for k, m in graphs.items()}, weights=[WEIGHTS[k] for k in graphs]
    )
    n = stacked.shape[0]
    return dict(
        graphs=graphs,
        stacked=stacked,
        x=torch.randn(n, D),
        tensors={k: cp._csr_tensor(m) for k, m in graphs.items()},
    )


@pytest.mark.parametrize("impl", ["sk_propagate_numba_fused", "torch_sparse_mm_x3", "scipy_x3"])
def test_hetero_forward(benchmark, hetero, impl):
    benchmark.group = "hetero (3 relations) forward"
    x, graphs, tensors = hetero["x"], hetero["graphs"], hetero["tensors"]

    def torch3():
        y = torch.sparse.mm(tensors["interaction"], x)
        for k in ("knn", "kg"):
            y.add_(torch.sparse.mm(tensors[k], x), alpha=WEIGHTS[k])
        return y

    def scipy3():
        xn = x.numpy()
        y = graphs["interaction"] @ xn
        for k in ("knn", "kg"):
            y += WEIGHTS[k] * (graphs[k] @ xn)
        return torch.from_numpy(y)

    fn = {
        "sk_propagate_numba_fused": lambda: sk.propagate(hetero["stacked"], x, backend="numba"),
        "torch_sparse_mm_x3": torch3,
        "scipy_x3": scipy3,
    }[impl]
    torch.testing.assert_close(fn(), torch3(), rtol=1e-4, atol=1e-5)
    benchmark.pedantic(fn, **ROUNDS)


# ---------------------------------------------------------------------------
# knowledge graph with relation embeddings
# ---------------------------------------------------------------------------


class _KGArgs:
    entities = _n(100_000)
    relations = 20
    triples = _n(1_000_000)
    seed = 0


@pytest.fixture(scope="module")
def kg():
    h, rel, t, w, n = cp._kg_setup(_KGArgs)
    g = sk.CSRGraph.from_edges(
        torch.from_numpy(h),
        torch.from_numpy(t),
        weight=torch.from_numpy(w),
        relation=torch.from_numpy(rel),
        shape=(n, n),
        num_relations=_KGArgs.relations,
    )
    g.transpose()
    return dict(
        g=g,
        h=torch.from_numpy(h),
        rel=torch.from_numpy(rel).long(),
        t=torch.from_numpy(t),
        w=torch.from_numpy(w),
        x=torch.randn(n, D) * 0.1,
        e=torch.randn(_KGArgs.relations, D),
        dy=torch.randn(n, D),
    )


@pytest.mark.parametrize("impl", ["sk_propagate_numba", "gather_index_add"])
@pytest.mark.parametrize("backward", [False, True], ids=["fwd", "fwd+bwd"])
def test_kg_relation_embeddings(benchmark, kg, impl, backward):
    benchmark.group = f"kg relation_emb {'forward+backward' if backward else 'forward'}"

    def fn():
        x = kg["x"].detach().requires_grad_(backward)
        e = kg["e"].detach().requires_grad_(backward)
        if impl == "sk_propagate_numba":
            y = sk.propagate(kg["g"], x, relation_emb=e, backend="numba")
            if backward:
                y.backward(kg["dy"])
        else:
            y = cp.kg_peer_fb(kg["h"], kg["rel"], kg["t"], kg["w"], x, e, kg["dy"] if backward else None)
        return (y.detach(), x.grad, e.grad) if backward else (y.detach(),)

    got = fn()
    if impl == "sk_propagate_numba":
        x = kg["x"].detach().requires_grad_(backward)
        e = kg["e"].detach().requires_grad_(backward)
        y = cp.kg_peer_fb(kg["h"], kg["rel"], kg["t"], kg["w"], x, e, kg["dy"] if backward else None)
        ref = (y.detach(), x.grad, e.grad) if backward else (y.detach(),)
        for a, b in zip(got, ref):
            torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)
    benchmark.pedantic(fn, **ROUNDS)
