"""Top-k API items of issue #18: knn_graph(exclude_self=False), the public topk_as_graph, the
float32 values of knn_graph for float64 input, and the tie rule documented where porters
look."""
import pytest
import torch

import slifmr_kernels as sk
from slifmr_kernels.topk import op


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
    assert all(i in gr.indices[gr.indptr[i]:gr.indptr[i + 1]].tolist() for i in range(60))
    # the default still drops it
    gd = sk.knn_graph(x, 5, backend=backend)
    assert not any(i in gd.indices[gd.indptr[i]:gd.indptr[i + 1]].tolist() for i in range(60))


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


def test_from_topk_is_the_topk_result_as_a_graph():
    """CSRGraph.from_topk: one edge per valid entry, columns sorted, padding (-1) dropped;
    malformed input is refused with the project's errors."""
    import pytest
    import torch

    import slifmr_kernels as sk
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(0))
    idx, val = sk.topk_similarity(x, 3, backend="torch")
    g = sk.CSRGraph.from_topk(idx, val, 9)
    dense = torch.zeros(9, 9).scatter_(1, idx, val)
    assert torch.equal(g.to_dense(), dense)
    assert torch.equal(g.to_dense(), sk.knn_graph(x, 3, backend="torch").to_dense())
    pad = torch.tensor([[2, -1], [0, 1]])
    g = sk.CSRGraph.from_topk(pad, torch.tensor([[0.5, 0.0], [1.0, 2.0]]), 3)
    assert g.indptr.tolist() == [0, 1, 3] and g.indices.tolist() == [2, 0, 1]
    with pytest.raises(IndexError, match="idx must lie in"):
        sk.CSRGraph.from_topk(torch.tensor([[3]]), torch.tensor([[1.0]]), 3)
    with pytest.raises(ValueError, match="same shape"):
        sk.CSRGraph.from_topk(torch.tensor([[0, 1]]), torch.tensor([[1.0]]), 3)
    with pytest.raises(TypeError, match="integer"):
        sk.CSRGraph.from_topk(torch.tensor([[0.0]]), torch.tensor([[1.0]]), 3)
