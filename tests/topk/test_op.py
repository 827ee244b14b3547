"""topk_similarity / knn_graph / topk_scores on every backend, against dense float64 math."""

import pytest
import torch

import slifmr_kernels as sk
from slifmr_kernels.testing import random_graph
from slifmr_kernels.topk import op

OP = "topk"


def dense_scores(x, y, metric):
    x, y = x.double().cpu(), y.double().cpu()
    if metric == "cosine":
        x = x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)
        y = y / y.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return x @ y.T


def allowed_mask(n, m, exclude_self, exclude):
    ok = torch.ones(n, m, dtype=torch.bool)
    if exclude_self:
        r = torch.arange(min(n, m))
        ok[r, r] = False
    if exclude is not None:
        ok[exclude.to("cpu").to_dense() != 0] = False
    return ok


def check_topk(idx, val, scores, ok, k, tol):
    """Ties in mind: every returned id is allowed, distinct, scored right, and no better allowed
    candidate was left out (within ``tol`` of the k-th score); padding exactly where the
    candidates ran out."""
    idx, val = idx.cpu(), val.cpu().double()
    n = scores.shape[0]
    assert idx.shape == (n, k) and val.shape == (n, k) and idx.dtype == torch.int64
    n_ok = ok.sum(1)
    for i in range(n):
        kk = int(min(k, n_ok[i]))
        got = idx[i, :kk]
        assert bool((idx[i, kk:] == -1).all()) and bool(torch.isinf(val[i, kk:]).all())
        assert bool((got >= 0).all()) and got.unique().numel() == kk
        assert bool(ok[i, got].all()), f"row {i} returned an excluded candidate"
        torch.testing.assert_close(val[i, :kk], scores[i, got], rtol=tol, atol=tol)
        assert bool((val[i, :kk][1:] <= val[i, :kk][:-1] + tol).all()), "not sorted"
        if kk:
            s = scores[i].masked_fill(~ok[i], float("-inf"))
            kth = s.topk(kk).values[-1]
            assert bool((scores[i, got] >= kth - tol).all())


TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "n, m, d, k",
    [(1, 1, 1, 1), (37, 37, 5, 1), (61, 61, 17, 10), (50, 200, 33, 64), (13, 9, 4, 20), (300, 300, 8, 7)],
)
@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_self_join_matches_dense(device, backend, gen, n, m, d, k, dtype, metric):
    x = torch.randn(n, d, generator=gen, dtype=dtype).to(device)
    idx, val = sk.topk_similarity(x, k, metric=metric, backend=backend)
    assert sk.last_backend("topk") == backend
    check_topk(idx, val, dense_scores(x, x, metric), allowed_mask(n, n, True, None), k, TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("n, m, d, k", [(29, 83, 16, 5), (64, 130, 3, 20), (7, 5, 8, 9)])
def test_ranking_with_exclusions(device, backend, gen, n, m, d, k, dtype):
    u = torch.randn(n, d, generator=gen, dtype=dtype).to(device)
    v = torch.randn(m, d, generator=gen, dtype=dtype).to(device)
    excl = random_graph(n, m, n * 4, generator=gen, empty_rows=0.3).to(device)
    idx, val = sk.topk_scores(u, v, k, exclude=excl, backend=backend)
    check_topk(idx, val, dense_scores(u, v, "ip"), allowed_mask(n, m, False, excl), k, TOL[dtype])


def test_unsorted_duplicate_exclusion_lists(device, backend, gen):
    # A hand-built CSR whose rows are unsorted and repeat a column: still excluded.
    u = torch.randn(3, 4, generator=gen).to(device)
    v = torch.randn(6, 4, generator=gen).to(device)
    excl = sk.CSRGraph([0, 3, 3, 5], [5, 1, 5, 0, 2], shape=(3, 6)).to(device)
    idx, val = sk.topk_scores(u, v, 6, exclude=excl, backend=backend)
    check_topk(idx, val, dense_scores(u, v, "ip"), allowed_mask(3, 6, False, excl), 6, 1e-5)


def test_everything_excluded_gives_padding(device, backend):
    u = torch.ones(2, 3, device=device)
    v = torch.ones(2, 3, device=device)
    excl = sk.CSRGraph.from_edges([0, 0, 1], [0, 1, 1], shape=(2, 2)).to(device)
    idx, val = sk.topk_scores(u, v, 3, exclude=excl, backend=backend)
    assert idx.cpu().tolist() == [[-1, -1, -1], [0, -1, -1]]
    assert torch.isinf(val[0]).all() and val[1, 0] == 3.0


def test_ties_break_by_lower_index(device, backend, gen):
    # Integer-valued vectors with many duplicates: scores are exact, so tie order is exact.
    base = torch.randint(-2, 3, (6, 8), generator=gen).float()
    x = base[torch.randint(0, 6, (90,), generator=gen)].to(device)
    idx, val = sk.topk_similarity(x, 12, metric="ip", backend=backend)
    ref_idx, ref_val = sk.topk_similarity(x, 12, metric="ip", backend="torch")
    assert torch.equal(idx.cpu(), ref_idx.cpu())
    assert torch.equal(val.cpu(), ref_val.cpu())
    s = (x @ x.T).cpu()
    for i in range(x.shape[0]):  # within equal scores, ascending index
        for a in range(11):
            if val[i, a] == val[i, a + 1]:
                assert idx[i, a] < idx[i, a + 1]
            assert s[i, idx[i, a]] == val[i, a].cpu()


def test_zero_vectors_do_not_produce_nan(device, backend, gen):
    x = torch.randn(20, 6, generator=gen).to(device)
    x[3] = 0
    x[11] = 0
    idx, val = sk.topk_similarity(x, 5, backend=backend)
    assert not torch.isnan(val).any()
    check_topk(idx, val, dense_scores(x, x, "cosine"), allowed_mask(20, 20, True, None), 5, 1e-5)


def test_k_zero_and_k_at_least_candidates(device, backend, gen):
    x = torch.randn(5, 3, generator=gen).to(device)
    idx, val = sk.topk_similarity(x, 0, backend=backend)
    assert idx.shape == (5, 0) and val.shape == (5, 0)
    idx, val = sk.topk_similarity(x, 50, backend=backend)
    assert idx.shape == (5, 50)
    assert bool((idx[:, :4] >= 0).all()) and bool((idx[:, 4:] == -1).all())


def test_knn_graph(device, backend, gen):
    x = torch.randn(40, 8, generator=gen).to(device)
    g = sk.knn_graph(x, 6, backend=backend)
    assert isinstance(g, sk.CSRGraph) and g.shape == (40, 40) and g.nnz == 40 * 6
    g.validate()
    idx, val = sk.topk_similarity(x, 6, backend="torch")
    dense = g.to("cpu").to_dense()
    for i in range(40):
        assert set(torch.nonzero(dense[i]).flatten().tolist()) == set(idx[i].cpu().tolist())
        torch.testing.assert_close(dense[i, idx[i].cpu()], val[i].cpu().float())
    # a catalog smaller than k + 1: every other item
    small = sk.knn_graph(x[:4], 10, backend=backend)
    assert small.nnz == 12


def test_bad_inputs(device):
    x = torch.randn(5, 3, device=device)
    with pytest.raises(ValueError, match="k must be"):
        sk.topk_similarity(x, -1)
    with pytest.raises(ValueError, match="metric"):
        sk.topk_similarity(x, 2, metric="l1")
    with pytest.raises(ValueError, match="dimension"):
        sk.topk_similarity(x, 2, y=torch.randn(4, 2, device=device))
    with pytest.raises(TypeError, match="dtype"):
        sk.topk_similarity(x, 2, y=torch.randn(4, 3, dtype=torch.float64, device=device))
    with pytest.raises(ValueError, match="NaN"):
        sk.topk_similarity(torch.full((3, 2), float("nan"), device=device), 1)
    with pytest.raises(ValueError, match="exclude must have shape"):
        sk.topk_scores(x, x, 2, exclude=sk.CSRGraph.from_edges([0], [0], shape=(4, 5)))
    with pytest.raises(TypeError, match="exclude must be a CSRGraph"):
        sk.topk_scores(x, x, 2, exclude=torch.zeros(5, 5))
    bad = sk.CSRGraph([0, 1, 1, 1, 1, 1], [0], shape=(5, 5))
    bad.indices[0] = 7  # corrupted after validation: caught before the kernel runs
    with pytest.raises(IndexError, match="indices"):
        sk.topk_scores(x, x, 2, exclude=bad.to(device))


def test_opcheck_and_compile(gen):
    from slifmr_kernels.topk.op import _topk_op

    x = torch.randn(9, 4, generator=gen)
    excl = random_graph(9, 9, 20, generator=gen)
    torch.library.opcheck(_topk_op, (x, x, 3, True, excl.indptr, excl.indices, "torch"))

    @torch.compile(backend="eager", fullgraph=True)
    def rank(u, v):
        return sk.topk_scores(u, v, 3, backend="torch")

    got = rank(x, x)
    want = sk.topk_scores(x, x, 3, backend="torch")
    assert torch.equal(got[0], want[0])


# knn_graph with exclude_self=False, the public topk_as_graph, the float32 values of knn_graph
# for float64 input, and the tie rule documented where porters look
@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_knn_graph_keeps_self(backend):
    g = torch.Generator().manual_seed(3)
    x = torch.randn(60, 16, generator=g)
    gr = sk.knn_graph(x, 5, backend=backend, exclude_self=False)
    idx, val = sk.topk_similarity(x, 5, exclude_self=False, backend="torch")
    want = op.topk_as_graph(idx, val, 60)
    assert torch.equal(gr.indptr, want.indptr) and torch.equal(gr.indices, want.indices)
    assert torch.allclose(gr.values, want.values)
    # cosine: every (distinct) row is its own best neighbour, so it is in its list
    assert all(i in gr.indices[gr.indptr[i] : gr.indptr[i + 1]].tolist() for i in range(60))
    # the default still drops it
    gd = sk.knn_graph(x, 5, backend=backend)
    assert not any(i in gd.indices[gd.indptr[i] : gd.indptr[i + 1]].tolist() for i in range(60))


def test_knn_graph_k_clamp_with_self():
    x = torch.randn(4, 3)
    assert sk.knn_graph(x, 10, backend="torch", exclude_self=False).degrees().tolist() == [4] * 4
    assert sk.knn_graph(x, 10, backend="torch").degrees().tolist() == [3] * 4
    with pytest.raises(sk.InputError):
        sk.knn_graph(x, 2, exclude_self="yes")


def test_knn_graph_float64_values_are_float32():
    """Documented: the neighbour selection runs in float64, the stored weights are float32."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(50, 8, generator=g, dtype=torch.float64)
    gr = sk.knn_graph(x, 4, backend="torch")
    assert gr.values.dtype == torch.float32
    idx, val = sk.topk_similarity(x, 4, backend="torch")
    assert val.dtype == torch.float64
    assert torch.equal(op.topk_as_graph(idx, val, 50).indices, gr.indices)
    assert "float32" in sk.knn_graph.__doc__


def test_topk_as_graph_is_public():
    assert "topk_as_graph" in op.__all__
    idx = torch.tensor([[2, 0, -1], [1, -1, -1]])
    val = torch.tensor([[0.9, 0.5, float("-inf")], [0.3, float("-inf"), float("-inf")]])
    g = op.topk_as_graph(idx, val, 3)
    assert g.indptr.tolist() == [0, 2, 3] and g.indices.tolist() == [0, 2, 1]
    assert g.values.tolist() == pytest.approx([0.5, 0.9, 0.3])


def test_tie_rule_documented_for_porters():
    for fn in (sk.topk_similarity, sk.knn_graph, sk.topk_scores):
        assert "lower index" in fn.__doc__ or "lower item id" in fn.__doc__
    assert "torch.topk" in sk.knn_graph.__doc__ and "torch.topk" in sk.topk_scores.__doc__
