"""The gaps a port of another graph recommender hit: numba by default, edge-value
gradients, checked symmetry, graph arithmetic, named normalisations, persistence, side effects
of the import, float64 kept, sorted edge lists without a sort."""

import os
import subprocess
import sys
import warnings

import pytest
import torch

import slifmr_kernels as sk
from slifmr_kernels import backends

F64 = torch.float64


def _graph_edges(n_rows=7, n_cols=6, E=40, R=None, seed=0):
    gen = torch.Generator().manual_seed(seed)
    src = torch.randint(0, n_rows, (E,), generator=gen)
    dst = torch.randint(0, n_cols, (E,), generator=gen)
    rel = None if R is None else torch.randint(0, R, (E,), generator=gen)
    w = torch.rand(E, generator=gen, dtype=F64) + 0.1
    return src, dst, rel, w


def _cpu_backends():
    return backends.available_backends("cpu", op="propagate")


# ----------------------------------------------------------------------------- item 1
def test_numba_is_a_core_dependency():
    tomllib = pytest.importorskip("tomllib")

    with open(os.path.join(os.path.dirname(__file__), "..", "pyproject.toml"), "rb") as f:
        core = tomllib.load(f)["project"]["dependencies"]
    assert any(d.startswith("numba>=") for d in core), "numba must be in [project] dependencies"


def test_auto_warns_once_when_numba_is_missing(monkeypatch):
    key = ("propagate", "numba")
    monkeypatch.setattr(backends, "_cache", {k: v for k, v in backends._cache.items() if k != key})
    monkeypatch.setattr(backends, "_errors", {**backends._errors, key: "No module named 'numba'; install it"})
    monkeypatch.setattr(backends, "_warned_missing", set())
    monkeypatch.delenv("SLIFMR_BACKEND", raising=False)
    g = sk.CSRGraph.from_edges([0, 1], [1, 0], shape=(2, 2))
    with pytest.warns(RuntimeWarning, match="numba is not installed.*pip install numba"):
        sk.propagate(g, torch.ones(2, 3))
    assert sk.last_backend("propagate") == "torch"
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a second call is quiet
        sk.propagate(g, torch.ones(2, 3))


def test_no_warning_when_numba_serves(monkeypatch):
    if "numba" not in _cpu_backends():
        pytest.skip("numba not installed")
    monkeypatch.delenv("SLIFMR_BACKEND", raising=False)
    monkeypatch.setattr(backends, "_warned_missing", set())
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sk.propagate(sk.CSRGraph.from_edges([0], [0]), torch.ones(1, 2))
    assert sk.last_backend("propagate") == "numba"


# ----------------------------------------------------------------------------- item 2
@pytest.mark.parametrize("mode", ["plain", "rel_emb", "rel_weight_grad", "rel_weight_const"])
def test_edge_value_gradcheck_every_cpu_backend(mode):
    R = None if mode == "plain" else 3
    src, dst, rel, w0 = _graph_edges(R=R)
    x0 = torch.randn(6, 5, dtype=F64, generator=torch.Generator().manual_seed(3))
    e0 = torch.randn(3, 5, dtype=F64, generator=torch.Generator().manual_seed(4))
    rw0 = torch.rand(3, dtype=F64, generator=torch.Generator().manual_seed(5)) + 0.5
    for backend in _cpu_backends():
        w = w0.clone().requires_grad_(True)
        x = x0.clone().requires_grad_(True)
        e = e0.clone().requires_grad_(mode == "rel_emb")
        rw = rw0.clone().requires_grad_(mode == "rel_weight_grad")

        def f(w, x, *extra):
            g = sk.CSRGraph.from_edges(src, dst, w, relation=rel, shape=(7, 6), num_relations=R)
            if mode == "plain":
                return sk.propagate(g, x, backend=backend)
            if mode == "rel_emb":
                return sk.propagate(g, x, relation_emb=extra[0], relation_weight=rw0, backend=backend)
            return sk.propagate(g, x, relation_weight=extra[0], backend=backend)

        extra = () if mode == "plain" else ((e,) if mode == "rel_emb" else (rw,))
        assert torch.autograd.gradcheck(f, (w, x) + extra), backend


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_edge_value_grad_matches_torch_sparse_mm(dtype):
    src, dst, _, w0 = _graph_edges(n_rows=30, n_cols=25, E=200, seed=7)
    w0 = w0.to(dtype)
    x0 = torch.randn(25, 8, dtype=dtype, generator=torch.Generator().manual_seed(1))
    dy = torch.randn(30, 8, dtype=dtype, generator=torch.Generator().manual_seed(2))
    # torch.sparse.mm's value gradient, on the coalesced pattern
    g_ref = sk.CSRGraph.from_edges(src, dst, w0, shape=(30, 25))
    vals = g_ref.values.clone().requires_grad_(True)
    coo = torch.sparse_coo_tensor(
        torch.stack([g_ref.row_ids(), g_ref.indices.long()]),
        vals,
        (30, 25),
        is_coalesced=True,
        check_invariants=False,
    )
    xr = x0.clone().requires_grad_(True)
    (torch.sparse.mm(coo, xr) * dy).sum().backward()
    tol = dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else {}
    for backend in _cpu_backends():
        v = g_ref.values.clone().requires_grad_(True)
        x = x0.clone().requires_grad_(True)
        g = g_ref.with_values(v)
        (sk.propagate(g, x, backend=backend) * dy).sum().backward()
        torch.testing.assert_close(v.grad, vals.grad, **tol)
        torch.testing.assert_close(x.grad, xr.grad, **tol)
        assert sk.last_backend("propagate_sddmm") == backend


def test_edge_value_grad_through_from_edges_and_normalize():
    """Duplicates summed and the sort permutation, then sym normalisation: the gradient of the
    raw weights equals a dense torch computation's."""
    n = 6
    gen = torch.Generator().manual_seed(11)
    src = torch.randint(0, n, (30,), generator=gen)
    dst = torch.randint(0, n, (30,), generator=gen)
    w0 = torch.rand(30, dtype=F64, generator=gen) + 0.1
    x0 = torch.randn(n, 4, dtype=F64, generator=gen)
    for backend in _cpu_backends():
        w = w0.clone().requires_grad_(True)
        g = sk.CSRGraph.from_edges(src, dst, w, shape=(n, n)).normalize("sym_row")
        sk.propagate(g, x0, backend=backend).pow(2).sum().backward()
        wd = w0.clone().requires_grad_(True)
        A = torch.zeros(n, n, dtype=F64).index_put((src, dst), wd, accumulate=True)
        d = A.sum(1)
        inv = torch.where(d > 0, d.clamp_min(1e-30).rsqrt(), torch.zeros_like(d))
        (inv[:, None] * A * inv[None, :] @ x0).pow(2).sum().backward()
        torch.testing.assert_close(w.grad, wd.grad)


def test_edge_value_grad_symmetric_and_layers():
    n = 8
    src, dst, _, w0 = _graph_edges(n, n, 30, seed=2)
    base = sk.CSRGraph.from_edges(src, dst, w0, shape=(n, n)).symmetrize()
    for backend in _cpu_backends():
        v = base.values.clone().requires_grad_(True)
        g = base.with_values(v).normalize("sym").mark_symmetric()
        x = torch.randn(n, 3, dtype=F64, requires_grad=True, generator=torch.Generator().manual_seed(0))
        assert torch.autograd.gradcheck(
            lambda v, x: sk.propagate_layers(base.with_values(v).normalize("sym"), x, 2, backend=backend),
            (v, x),
        )
        sk.propagate_layers(g, x, 3, backend=backend).sum().backward()
        assert v.grad is not None and bool(torch.isfinite(v.grad).all())


def test_edge_value_grad_only_values_need_grad():
    """x constant: no transposed pass is needed, only the SDDMM."""
    src, dst, _, w0 = _graph_edges()
    for backend in _cpu_backends():
        w = w0.clone().requires_grad_(True)
        g = sk.CSRGraph.from_edges(src, dst, w, shape=(7, 6))
        x = torch.randn(6, 4, dtype=F64)
        sk.propagate(g, x, backend=backend).sum().backward()
        dense = torch.zeros(7, 6, dtype=F64).index_put((src, dst), w0, accumulate=True)
        wd = w0.clone().requires_grad_(True)
        torch.zeros(7, 6, dtype=F64).index_put((src, dst), wd, accumulate=True).matmul(x).sum().backward()
        torch.testing.assert_close(w.grad, wd.grad)
        del dense


def test_sddmm_fallback_for_a_backend_without_the_kernel(monkeypatch):
    """A backend module without sddmm (the cuda one) hands the edge-value gradient to the
    next one that has it, observably."""
    from slifmr_kernels.propagate import op

    assert op._SDDMM_FALLBACK["cuda"] == ("triton", "torch")

    class NoSddmm:
        pass

    real_load = op.load
    monkeypatch.setattr(op, "load", lambda o, n: NoSddmm() if n == "fake" else real_load(o, n))
    monkeypatch.setitem(op._SDDMM_FALLBACK, "fake", ("torch",))
    assert op._sddmm_backend("fake") == "torch"


# ----------------------------------------------------------------------------- item 3
def test_mark_symmetric_checks_values_and_structure():
    with pytest.raises(sk.GraphError, match=r"A\[0, 1\] = 1.0 but A\[1, 0\] = 5.0"):
        sk.CSRGraph.from_edges([0, 1], [1, 0], [1.0, 5.0]).mark_symmetric()
    # same degrees, different structure
    with pytest.raises(sk.GraphError, match="no mirror edge"):
        sk.CSRGraph.from_edges([0, 1, 2], [1, 2, 0], shape=(3, 3)).mark_symmetric()
    g = sk.CSRGraph.from_edges([0, 1], [1, 0], [1.0, 5.0])
    assert g.mark_symmetric(check=False).transpose() is g  # the explicit opt-out
    ok = sk.CSRGraph.from_edges([0, 1, 1, 2], [1, 0, 2, 1], [2.0, 2.0, 3.0, 3.0])
    assert ok.mark_symmetric().transpose() is ok
    # a sym-normalised symmetric graph passes despite rounding
    n = 50
    src, dst, _, w = _graph_edges(n, n, 400, seed=5)
    s = sk.CSRGraph.from_edges(src, dst, w.float(), shape=(n, n)).symmetrize().normalize("sym")
    s.mark_symmetric()


# ----------------------------------------------------------------------------- item 4
def test_graph_arithmetic_against_dense():
    n = 9
    sa, da, _, wa = _graph_edges(n, n, 30, seed=1)
    sb, db, _, wb = _graph_edges(n, n, 25, seed=2)
    A = sk.CSRGraph.from_edges(sa, da, wa, shape=(n, n))
    B = sk.CSRGraph.from_edges(sb, db, wb.float(), shape=(n, n))
    w = 0.3
    C = w * A + (1 - w) * B
    torch.testing.assert_close(C.to_dense(), w * A.to_dense() + (1 - w) * B.to_dense().double())
    assert C.dtype == F64
    torch.testing.assert_close((A - B).to_dense(), A.to_dense() - B.to_dense().double())
    torch.testing.assert_close((A / 4).to_dense(), A.to_dense() / 4)
    torch.testing.assert_close((-A).to_dense(), -A.to_dense())
    torch.testing.assert_close(sum([A, A]).to_dense(), 2 * A.to_dense())
    C.validate()
    # a learnable mixing weight gets its gradient through propagate
    wt = torch.tensor(0.3, dtype=F64, requires_grad=True)
    x = torch.randn(n, 4, dtype=F64)
    sk.propagate(wt * A + (1 - wt) * B, x).sum().backward()
    torch.testing.assert_close(
        wt.grad, ((A.to_dense() - B.to_dense().double()) @ x).sum(), rtol=1e-5, atol=1e-6
    )  # B's values are float32
    rel = sk.CSRGraph.from_edges([0], [0], relation=[0])
    with pytest.raises(sk.GraphError, match="without relation ids"):
        rel + rel
    with pytest.raises(sk.GraphError, match="without relation ids"):
        2 * rel
    with pytest.raises(sk.InputError, match="shapes differ"):
        A + sk.CSRGraph.from_edges([0], [0], shape=(n, n + 1))
    with pytest.raises(TypeError):
        A * "x"
    with pytest.raises(sk.InputError, match="finite"):
        A * float("inf")


# ----------------------------------------------------------------------------- item 5
def test_normalize_sym_row_against_dense_and_models():
    from slifmr.models.item_graphs import row_sum_normalized

    n = 12
    src, dst, _, w = _graph_edges(n, n, 50, seed=4)
    g = sk.CSRGraph.from_edges(src, dst, w, shape=(n, n))
    S = g.to_dense()
    d = S.sum(1)
    inv = torch.where(d > 0, d.rsqrt(), torch.zeros_like(d))
    torch.testing.assert_close(g.normalize("sym_row").to_dense(), inv[:, None] * S * inv[None, :])
    rows, cols = g.row_ids(), g.indices.long()
    torch.testing.assert_close(g.normalize("sym_row").values, row_sum_normalized(rows, cols, g.values, n))
    # differs from "sym" on a non-symmetric graph, equals it on a symmetric one
    assert not torch.allclose(g.normalize("sym").values, g.normalize("sym_row").values)
    s = g.symmetrize()
    torch.testing.assert_close(s.normalize("sym").values, s.normalize("sym_row").values)
    with pytest.raises(sk.GraphError, match="square"):
        sk.CSRGraph.from_edges([0], [1], shape=(1, 2)).normalize("sym_row")


# ----------------------------------------------------------------------------- item 6
def test_state_dict_save_load_round_trip(tmp_path):
    src, dst, rel, w = _graph_edges(R=3)
    g = sk.CSRGraph.from_edges(
        src,
        dst,
        w,
        relation=rel,
        relation_names=["a", "b", "c"],
        relation_weight=torch.tensor([1.0, 2.0, 0.5], dtype=F64),
    )
    path = tmp_path / "g.pt"
    g.save(path)
    state = torch.load(path, weights_only=True)  # plain tensors, ints and strings
    h = sk.CSRGraph.load(path)
    for f in ("indptr", "indices", "values", "relation", "relation_weight"):
        assert torch.equal(getattr(g, f), getattr(h, f)), f
    assert (h.shape, h.num_relations, h.relation_names) == (g.shape, 3, ("a", "b", "c"))
    assert sk.CSRGraph.from_state_dict(state).nnz == g.nnz
    s = sk.CSRGraph.from_edges([0, 1], [1, 0], [2.0, 2.0]).mark_symmetric()
    s.save(path)
    t = sk.CSRGraph.load(path)
    assert torch.equal(t.transpose().to_dense(), s.to_dense().T)
    assert t.transpose() is t  # the mark survives
    bad = dict(state, indices=state["indices"] + 100)
    with pytest.raises(sk.GraphError):
        sk.CSRGraph.from_state_dict(bad)
    with pytest.raises(sk.GraphError, match="state_dict"):
        sk.CSRGraph.from_state_dict({"indptr": 1})
    # values that require grad are saved detached
    wv = w.clone().requires_grad_(True)
    sk.CSRGraph.from_edges(src, dst, wv).save(path)
    assert not sk.CSRGraph.load(path).values.requires_grad


def test_torch_sparse_round_trips():
    src, dst, _, w = _graph_edges()
    g = sk.CSRGraph.from_edges(src, dst, w, shape=(7, 6))
    coo = g.to_torch_sparse_coo()
    assert coo.is_coalesced() and coo.shape == (7, 6)
    torch.testing.assert_close(coo.to_dense(), g.to_dense())
    csr = g.to_torch_sparse_csr()
    torch.testing.assert_close(csr.to_dense(), g.to_dense())
    for t in (coo, csr):
        h = sk.CSRGraph.from_torch_sparse(t)
        assert torch.equal(h.indptr, g.indptr) and torch.equal(h.values, g.values)
    # the COO view differentiates the values like propagate does
    v = g.values.clone().requires_grad_(True)
    x = torch.randn(6, 3, dtype=F64)
    torch.sparse.mm(g.with_values(v).to_torch_sparse_coo(), x).sum().backward()
    v2 = g.values.clone().requires_grad_(True)
    sk.propagate(g.with_values(v2), x).sum().backward()
    torch.testing.assert_close(v.grad, v2.grad)


# ----------------------------------------------------------------------------- item 7
def _run(code, env):
    full = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "NUMBA_CACHE_DIR")}
    full.update(env)
    return subprocess.run(
        [sys.executable, "-c", code], env=full, capture_output=True, text=True, timeout=300, check=True
    ).stdout.strip()


def test_omp_wait_policy_user_value_wins():
    code = "import os, slifmr_kernels; print(os.environ.get('OMP_WAIT_POLICY'))"
    assert _run(code, {}) == "PASSIVE"
    assert _run(code, {"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
    assert _run(code, {"SLIFMR_SET_OMP_WAIT_POLICY": "0"}) == "None"


def test_numba_cache_goes_to_the_user_cache_dir(tmp_path, monkeypatch):
    if "numba" not in _cpu_backends():
        pytest.skip("numba not installed")
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("SLIFMR_CACHE_DIR", str(tmp_path / "c"))
    assert backends.numba_cache_dir() == str(tmp_path / "c" / "numba")
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "n"))
    assert backends.numba_cache_dir() == str(tmp_path / "n")
    code = (
        "import torch, slifmr_kernels as sk, numba.core.config as c; "
        "sk.propagate(sk.CSRGraph.from_edges([0], [0]), torch.ones(1, 2), backend='numba');"
        "print(repr(c.CACHE_DIR))"
    )
    out = _run(code, {"SLIFMR_CACHE_DIR": str(tmp_path / "c")})
    assert out == "''"  # Numba's own setting is restored for other users
    files = list((tmp_path / "c" / "numba").rglob("*.nbi"))
    assert files, "the kernels' cache index must be written under SLIFMR_CACHE_DIR"


# ----------------------------------------------------------------------------- item 8
def test_from_edges_keeps_float64():
    import numpy as np

    w64 = torch.tensor([1.0, 2.0], dtype=F64)
    assert sk.CSRGraph.from_edges([0, 1], [1, 0], w64).dtype == F64
    assert sk.CSRGraph.from_edges([0, 1], [1, 0], np.array([1.0, 2.0])).dtype == F64
    assert sk.CSRGraph.from_edges([0, 1], [1, 0], [1.0, 2.0]).dtype == torch.float32
    assert sk.CSRGraph.from_edges([0, 1], [1, 0]).dtype == torch.float32
    assert sk.CSRGraph.from_edges([0, 1], [1, 0], w64, dtype=torch.float32).dtype == torch.float32
    g = sk.CSRGraph.from_edges([0, 1], [1, 0], torch.tensor([1 + 1e-12, 2.0], dtype=F64))
    assert float(g.values[0]) == 1 + 1e-12
    x = torch.randn(2, 3, dtype=F64)
    for backend in _cpu_backends():
        torch.testing.assert_close(sk.propagate(g, x, backend=backend), g.to_dense() @ x)


# ----------------------------------------------------------------------------- item 9
def test_sorted_edges_skip_the_sort(monkeypatch):
    src, dst, _, w = _graph_edges(20, 20, 200, seed=9)
    g = sk.CSRGraph.from_edges(src, dst, w, shape=(20, 20))
    keep = torch.rand(g.nnz, generator=torch.Generator().manual_seed(0)) < 0.6
    rows, cols = g.row_ids()[keep], g.indices.long()[keep]
    calls = []
    real_unique = torch.unique
    monkeypatch.setattr(torch, "unique", lambda *a, **k: calls.append(1) or real_unique(*a, **k))
    pruned = sk.CSRGraph.from_edges(rows, cols, g.values[keep], shape=(20, 20))
    assert not calls  # no sort for an already sorted, duplicate-free edge list
    ref = sk.CSRGraph.from_edges(rows.flip(0), cols.flip(0), g.values[keep].flip(0), shape=(20, 20))
    assert calls
    for f in ("indptr", "indices", "values"):
        assert torch.equal(getattr(pruned, f), getattr(ref, f))
    # the graph does not alias the caller's arrays
    w_in, d_in = g.values[keep].clone(), cols.clone()
    h = sk.CSRGraph.from_edges(rows, d_in, w_in, shape=(20, 20), index_dtype=torch.int64)
    w_in.add_(1.0)
    d_in.zero_()
    assert torch.equal(h.values, pruned.values) and torch.equal(h.indices, cols)
    # duplicates still merge
    d = sk.CSRGraph.from_edges([0, 0, 1], [1, 1, 0], [1.0, 2.0, 3.0])
    assert d.nnz == 2 and d.values.tolist() == [3.0, 3.0]


def test_from_csr():
    src, dst, _, w = _graph_edges()
    g = sk.CSRGraph.from_edges(src, dst, w, shape=(7, 6))
    h = sk.CSRGraph.from_csr(g.indptr, g.indices, g.values, shape=g.shape)
    assert torch.equal(h.to_dense(), g.to_dense())
    with pytest.raises(sk.GraphError, match="increasing"):
        sk.CSRGraph.from_csr([0, 2], [1, 0], [1.0, 1.0], shape=(1, 2))
    with pytest.raises(sk.GraphError, match="increasing"):
        sk.CSRGraph.from_csr([0, 2], [1, 1], [1.0, 1.0], shape=(1, 2))
    with pytest.raises(sk.GraphError):
        sk.CSRGraph.from_csr([0, 3], [1, 0], [1.0, 1.0], shape=(1, 2))
