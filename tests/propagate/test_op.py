"""propagate on every backend this machine runs, against dense float64 math and the reference."""

import pytest
import torch

import slifmr_kernels as sk
from slifmr_kernels.testing import random_graph

OP = "propagate"

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float64: dict(rtol=1e-10, atol=1e-10)}


def dense_propagate(g, x, emb=None, w=None):
    """Y = sum_r w_r A_r (X * E_r) with dense float64 matrices: the definition."""
    x = x.double()
    if g.relation is None:
        return g.to(dtype=torch.float64).to_dense().to(x.device) @ x
    y = torch.zeros(g.shape[0], x.shape[1], dtype=torch.float64, device=x.device)
    rows = g.row_ids()
    for r in range(g.num_relations):
        m = g.relation == r
        a = torch.zeros(g.shape, dtype=torch.float64, device=x.device)
        a.index_put_((rows[m], g.indices[m].long()), g.values[m].double(), accumulate=True)
        xr = x if emb is None else x * emb[r].double()
        y += (1.0 if w is None else float(w[r])) * (a @ xr)
    return y


CASES = [
    # n_rows, n_cols, nnz, relations, extra
    (1, 1, 1, None, {}),
    (37, 29, 300, None, {}),
    (64, 64, 900, None, dict(empty_rows=0.3)),
    (50, 41, 500, None, dict(heavy_row=0.5)),
    (33, 33, 400, 1, {}),
    (45, 38, 600, 30, dict(empty_rows=0.2)),
    (20, 70, 0, None, {}),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}x{c[1]}-nnz{c[2]}-R{c[3]}")
@pytest.mark.parametrize("d", [1, 7, 64])
def test_forward_matches_dense(device, backend, gen, case, dtype, d):
    n_rows, n_cols, nnz, rel, extra = case
    g = random_graph(n_rows, n_cols, nnz, num_relations=rel, generator=gen, dtype=dtype, **extra).to(device)
    x = torch.randn(n_cols, d, generator=gen, dtype=dtype).to(device)
    y = sk.propagate(g, x, backend=backend)
    assert sk.last_backend("propagate") == backend
    assert y.shape == (n_rows, d) and y.dtype == dtype
    torch.testing.assert_close(y.double(), dense_propagate(g, x), **TOL[dtype])
    if rel:
        emb = torch.randn(rel, d, generator=gen, dtype=dtype).to(device)
        w = torch.rand(rel, generator=gen, dtype=dtype).to(device)
        y = sk.propagate(g, x, relation_emb=emb, relation_weight=w, backend=backend)
        torch.testing.assert_close(y.double(), dense_propagate(g, x, emb, w), **TOL[dtype])
        y = sk.propagate(g, x, relation_weight=w, backend=backend)
        torch.testing.assert_close(y.double(), dense_propagate(g, x, None, w), **TOL[dtype])


@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_index_widths(device, backend, gen, index_dtype):
    g = random_graph(40, 30, 300, num_relations=4, index_dtype=index_dtype, generator=gen)
    g = g.to(device)
    assert g.indices.dtype == index_dtype
    x = torch.randn(30, 16, generator=gen).to(device)
    emb = torch.randn(4, 16, generator=gen).to(device)
    y = sk.propagate(g, x, relation_emb=emb, backend=backend)
    torch.testing.assert_close(y.double(), dense_propagate(g, x, emb), **TOL[torch.float32])


@pytest.mark.parametrize("rel", [None, 3, 30])
def test_gradients_match_reference(device, backend, gen, rel):
    g = random_graph(31, 27, 250, num_relations=rel, generator=gen, heavy_row=0.3).to(device)
    x = torch.randn(27, 9, generator=gen).to(device)
    emb = torch.randn(rel or 1, 9, generator=gen).to(device)
    w = torch.rand(rel or 1, generator=gen).to(device)
    dy = torch.randn(31, 9, generator=gen).to(device)

    def grads(name):
        xs = x.clone().requires_grad_()
        if rel:
            es, ws = emb.clone().requires_grad_(), w.clone().requires_grad_()
            y = sk.propagate(g, xs, relation_emb=es, relation_weight=ws, backend=name)
            y.backward(dy)
            return xs.grad, es.grad, ws.grad
        sk.propagate(g, xs, backend=name).backward(dy)
        return (xs.grad,)

    for got, want in zip(grads(backend), grads("torch")):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("rel", [None, 4])
def test_gradcheck_float64(device, backend, gen, rel):
    g = random_graph(7, 6, 20, num_relations=rel, generator=gen, dtype=torch.float64, empty_rows=0.2).to(
        device
    )
    x = torch.randn(6, 3, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    if rel:
        emb = torch.randn(rel, 3, generator=gen, dtype=torch.float64).to(device).requires_grad_()
        w = torch.rand(rel, dtype=torch.float64, device=device, requires_grad=True)
        fn = lambda x, e, w: sk.propagate(g, x, relation_emb=e, relation_weight=w, backend=backend)
        assert torch.autograd.gradcheck(fn, (x, emb, w))
        # relation weights alone (no embeddings) are differentiable too
        assert torch.autograd.gradcheck(
            lambda x, w: sk.propagate(g, x, relation_weight=w, backend=backend), (x, w)
        )
    else:
        assert torch.autograd.gradcheck(lambda x: sk.propagate(g, x, backend=backend), (x,))


def test_backward_is_deterministic(device, backend, gen):
    if device == "cuda" and backend == "torch":
        pytest.skip(
            "the torch reference sums with index_add_, whose CUDA kernel uses atomics "
            "(seen differing between runs on an H200); determinism is the kernels' "
            "promise, not the reference's"
        )
    g = random_graph(200, 150, 3000, num_relations=5, generator=gen, heavy_row=0.4).to(device)
    x = torch.randn(150, 32, generator=gen).to(device)
    emb = torch.randn(5, 32, generator=gen).to(device)
    dy = torch.randn(200, 32, generator=gen).to(device)

    def run():
        xs, es = x.clone().requires_grad_(), emb.clone().requires_grad_()
        sk.propagate(g, xs, relation_emb=es, backend=backend).backward(dy)
        return xs.grad, es.grad

    a, b = run(), run()
    assert all(torch.equal(u, v) for u, v in zip(a, b))


def test_propagate_layers_is_lightgcn_mean(device, backend, gen):
    g = random_graph(30, 30, 200, generator=gen, dtype=torch.float64).normalize("sym").to(device)
    x = torch.randn(30, 5, generator=gen, dtype=torch.float64).to(device)
    a = g.to_dense()
    want = (x + a @ x + a @ a @ x + a @ a @ a @ x) / 4
    got = sk.propagate_layers(g, x, 3, backend=backend)
    torch.testing.assert_close(got, want)
    torch.testing.assert_close(sk.propagate_layers(g, x, 3, combine="last", backend=backend), a @ a @ a @ x)
    assert torch.equal(sk.propagate_layers(g, x, 0, backend=backend), x)
    small = random_graph(7, 7, 20, generator=gen, dtype=torch.float64).normalize("sym").to(device)
    xs = torch.randn(7, 2, generator=gen, dtype=torch.float64).to(device).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: sk.propagate_layers(small, t, 2, backend=backend), (xs,))


def test_stacked_relation_weights_from_graph(device, backend, gen):
    a = random_graph(20, 20, 80, generator=gen, dtype=torch.float64)
    b = random_graph(20, 20, 80, generator=gen, dtype=torch.float64)
    h = sk.stack_relations({"a": a, "b": b}, weights=[0.25, 2.0]).to(device, torch.float64)
    x = torch.randn(20, 6, generator=gen, dtype=torch.float64).to(device)
    want = 0.25 * (a.to_dense() @ x.cpu()) + 2.0 * (b.to_dense() @ x.cpu())
    torch.testing.assert_close(sk.propagate(h, x, backend=backend).cpu(), want)


def test_bad_inputs_raise_clear_errors(device, gen):
    g = random_graph(5, 4, 10, num_relations=2, generator=gen).to(device)
    x = torch.randn(4, 3, device=device)
    with pytest.raises(ValueError, match="x must have g.shape"):
        sk.propagate(g, torch.randn(5, 3, device=device))
    with pytest.raises(TypeError, match="x must have dtype"):
        sk.propagate(g, torch.ones(4, 3, dtype=torch.int64, device=device))
    with pytest.raises(ValueError, match="relation_emb must have shape"):
        sk.propagate(g, x, relation_emb=torch.randn(3, 3, device=device))
    with pytest.raises(ValueError, match="relation_weight must have"):
        sk.propagate(g, x, relation_weight=torch.ones(5, device=device))
    with pytest.raises(ValueError, match="relation_emb"):
        sk.propagate(g, x, relation_emb=torch.full((2, 3), float("nan"), device=device))
    with pytest.raises(TypeError, match="g must be a CSRGraph"):
        sk.propagate(g.to_dense(), x)
    plain = random_graph(5, 4, 10, generator=gen).to(device)
    with pytest.raises(ValueError, match="needs a graph with relation ids"):
        sk.propagate(plain, x, relation_emb=torch.randn(1, 3, device=device))
    with pytest.raises(ValueError, match="backend must be one of"):
        sk.propagate(g, x, backend="fortran")
    if device == "cpu":
        with pytest.raises(ValueError, match="one device"):
            sk.propagate(g, x.to("meta"))


def test_out_of_range_index_never_reaches_a_kernel(gen):
    g = random_graph(5, 4, 10, generator=gen)
    g.indices[3] = 99  # corrupt after construction
    with pytest.raises(IndexError, match="indices"):
        g.validate()
    bad = sk.CSRGraph(g.indptr, g.indices, g.values, shape=(5, 4), validate=False)
    with pytest.raises(IndexError, match="indices"):
        sk.propagate(bad, torch.randn(4, 3), backend="auto")


def test_opcheck(gen):
    from slifmr_kernels.propagate.op import _propagate_op

    g = random_graph(12, 10, 40, num_relations=3, generator=gen)
    t = g.transpose()
    x = torch.randn(10, 4, generator=gen, requires_grad=True)
    table = torch.randn(3, 4, generator=gen, requires_grad=True)
    args = (
        g.indptr,
        g.indices,
        g.values,
        g.relation,
        table,
        x,
        t.indptr,
        t.indices,
        t.values,
        t.relation,
        12,
        "torch",
    )
    torch.library.opcheck(_propagate_op, args)


def test_torch_compile_smoke(gen):
    g = random_graph(16, 16, 60, generator=gen).normalize("sym")
    x = torch.randn(16, 8, generator=gen)

    @torch.compile(backend="eager", fullgraph=True)
    def two_layers(x):
        return sk.propagate_layers(g, x, 2)

    torch.testing.assert_close(two_layers(x), sk.propagate_layers(g, x, 2))


def test_folded_relation_weights_follow_changes(device, backend, gen):
    a = random_graph(15, 15, 60, generator=gen, dtype=torch.float64)
    b = random_graph(15, 15, 60, generator=gen, dtype=torch.float64)
    h = sk.stack_relations({"a": a, "b": b}).to(device, torch.float64)
    x = torch.randn(15, 4, generator=gen, dtype=torch.float64).to(device)
    da, db = a.to_dense().to(device), b.to_dense().to(device)
    for wa, wb in [(1.0, 2.0), (3.0, -1.0)]:  # fresh weight tensors, possibly at one address
        w = torch.tensor([wa, wb], dtype=torch.float64, device=device)
        torch.testing.assert_close(
            sk.propagate(h, x, relation_weight=w, backend=backend), wa * da @ x + wb * db @ x
        )
        del w
    w = torch.tensor([1.0, 1.0], dtype=torch.float64, device=device)
    sk.propagate(h, x, relation_weight=w, backend=backend)
    w[1] = 5.0  # in place: the cached product must not be reused
    xs = x.clone().requires_grad_()
    y = sk.propagate(h, xs, relation_weight=w, backend=backend)
    torch.testing.assert_close(y, da @ x + 5.0 * db @ x)
    y.sum().backward()  # the transposed folded values follow too
    torch.testing.assert_close(xs.grad, (da + 5.0 * db).T @ torch.ones_like(y))
