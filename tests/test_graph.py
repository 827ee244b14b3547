"""CSRGraph: constructors agree with dense math, transposes carry permutations, bad input fails
with a message naming the argument."""

import numpy as np
import pytest
import scipy.sparse as sp
import torch

import slifmr_kernels as sk
from slifmr_kernels.testing import random_graph


def dense_from_edges(src, dst, w, shape):
    d = torch.zeros(shape, dtype=torch.float64)
    for s, t, v in zip(src.tolist(), dst.tolist(), w.tolist()):
        d[s, t] += v
    return d


def test_from_edges_sums_duplicates_and_sorts(gen):
    src = torch.randint(0, 7, (200,), generator=gen)
    dst = torch.randint(0, 5, (200,), generator=gen)
    w = torch.rand(200, generator=gen, dtype=torch.float64)
    g = sk.CSRGraph.from_edges(src, dst, w, shape=(9, 5), dtype=torch.float64)
    assert g.shape == (9, 5) and g.indices.dtype == torch.int32
    torch.testing.assert_close(g.to_dense(), dense_from_edges(src, dst, w, (9, 5)))
    for r in range(9):  # rows sorted by column, no duplicate columns
        cols = g.indices[g.indptr[r] : g.indptr[r + 1]]
        assert bool((cols[1:] > cols[:-1]).all())
    assert g.degrees()[7:].sum() == 0  # rows 7, 8 never appear: empty


def test_relations_keep_parallel_edges_apart():
    g = sk.CSRGraph.from_edges([0, 0, 0], [1, 1, 1], [1.0, 2.0, 4.0], relation=[0, 1, 0], shape=(2, 2))
    assert g.nnz == 2 and g.num_relations == 2
    assert g.values.tolist() == [5.0, 2.0] and g.relation.tolist() == [0, 1]


def test_scipy_and_torch_sparse_round_trip(gen):
    g = random_graph(13, 11, 60, generator=gen, dtype=torch.float64)
    m = g.to_scipy()
    assert isinstance(m, sp.csr_matrix)
    np.testing.assert_allclose(m.toarray(), g.to_dense().numpy())
    g2 = sk.CSRGraph.from_scipy(sp.coo_matrix(m), dtype=torch.float64)
    assert torch.equal(g2.indptr, g.indptr) and torch.equal(g2.indices, g.indices)
    t = g.to_torch_sparse_csr()
    for layout_t in (t, t.to_sparse_coo()):
        g3 = sk.CSRGraph.from_torch_sparse(layout_t)
        torch.testing.assert_close(g3.to_dense(), g.to_dense())


def test_from_edge_index_aggregates_at_target():
    ei = torch.tensor([[0, 1, 2], [1, 2, 2]])  # 0->1, 1->2, 2->2
    g = sk.CSRGraph.from_edge_index(ei, num_nodes=3)
    dense = g.to_dense()
    assert dense[1, 0] == 1 and dense[2, 1] == 1 and dense[2, 2] == 1 and dense.sum() == 3


@pytest.mark.parametrize("rel", [None, 5])
def test_transpose_carries_edge_permutation(gen, rel):
    g = random_graph(17, 23, 150, num_relations=rel, generator=gen, dtype=torch.float64)
    t = g.transpose()
    assert t is g.transpose() and t.transpose() is g  # cached both ways
    assert t.shape == (23, 17)
    torch.testing.assert_close(t.to_dense(), g.to_dense().T)
    assert torch.equal(t.values, g.values[t.edge_perm])
    if rel:
        assert torch.equal(t.relation, g.relation[t.edge_perm])
    t.validate()


def test_normalize_sym_and_row(gen):
    g = random_graph(12, 12, 40, generator=gen, dtype=torch.float64, empty_rows=0.3)
    a = g.to_dense()
    r, c = a.sum(1), a.sum(0)
    inv = lambda v, p: torch.where(v > 0, v.clamp_min(1e-30) ** p, torch.zeros_like(v))
    torch.testing.assert_close(
        g.normalize("sym").to_dense(), inv(r, -0.5)[:, None] * a * inv(c, -0.5)[None, :]
    )
    torch.testing.assert_close(g.normalize("row").to_dense(), inv(r, -1.0)[:, None] * a)
    assert g.normalize("none") is g
    assert torch.isfinite(g.normalize("sym").values).all()  # isolated nodes: zeros, not NaN
    with pytest.raises(ValueError, match="kind"):
        g.normalize("col")


def test_stack_relations_offsets_ids_and_weights(gen):
    a = random_graph(6, 6, 20, generator=gen)
    kg = random_graph(6, 6, 20, num_relations=3, generator=gen)
    h = sk.stack_relations({"ui": a, "kg": kg}, weights={"ui": 2.0})
    assert h.num_relations == 4
    assert h.relation_names == ("ui", "kg:0", "kg:1", "kg:2")
    assert h.relation_weight.tolist() == [2.0, 1.0, 1.0, 1.0]
    torch.testing.assert_close(h.to_dense(), a.to_dense() + kg.to_dense())
    with pytest.raises(ValueError, match="shape"):
        sk.stack_relations({"a": a, "b": random_graph(6, 7, 5, generator=gen)})


def test_to_moves_graph_and_cached_transpose(device):
    g = sk.CSRGraph.from_edges([0, 1], [1, 0], shape=(2, 2))
    g.transpose()
    h = g.to(device, dtype=torch.float64)
    assert h.device.type == device and h.dtype == torch.float64
    assert h._transpose is not None and h.transpose().indptr.device.type == device


def test_mark_symmetric(device):
    """A symmetric graph serves as its own transpose, through to() and with_values(); the
    backward pass over it equals the dense A^T one; wrong shapes and degrees are refused."""
    g = sk.CSRGraph.from_edges([0, 1, 1, 2, 2], [1, 0, 2, 1, 2], [1.0, 1.0, 0.5, 0.5, 2.0], shape=(3, 3)).to(
        device, torch.float64
    )
    assert g.mark_symmetric() is g and g.transpose() is g
    h = g.to(device, torch.float32).with_values(g.values.float() * 2)
    assert h.transpose() is h
    x = torch.randn(3, 4, dtype=torch.float64, device=device, requires_grad=True)
    w = torch.randn(3, 4, dtype=torch.float64, device=device)
    (sk.propagate(g, x) * w).sum().backward()
    torch.testing.assert_close(x.grad, g.to_dense().T @ w)
    with pytest.raises(ValueError, match="square"):
        sk.CSRGraph.from_edges([0], [1], shape=(2, 3)).mark_symmetric()
    with pytest.raises(ValueError, match="node 0 has 2 edges in its row and 0 in its column"):
        sk.CSRGraph.from_edges([0, 0], [1, 2], shape=(3, 3)).mark_symmetric()
    rel = sk.CSRGraph.from_edges([0, 1], [1, 0], relation=[0, 1], shape=(2, 2))
    with pytest.raises(ValueError, match="relation ids"):
        rel.mark_symmetric()


def test_symmetrize():
    g = sk.CSRGraph.from_edges([0, 1], [1, 2], [1.0, 2.0], shape=(3, 3)).symmetrize()
    torch.testing.assert_close(g.to_dense(), g.to_dense().T)


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        (dict(indptr=[0, 2, 1], indices=[0, 1], shape=(2, 2)), ValueError, "non-decreasing"),
        (dict(indptr=[1, 2], indices=[0], shape=(1, 2)), ValueError, r"indptr\[0\]"),
        (dict(indptr=[0, 1], indices=[5], shape=(1, 2)), IndexError, "indices"),
        (dict(indptr=[0, 1], indices=[-1], shape=(1, 2)), IndexError, "indices"),
        (dict(indptr=[0, 1, 2], indices=[0, 1], shape=(3, 2)), ValueError, "n_rows"),
        (dict(indptr=[0, 2], indices=[0, 1], values=[1.0], shape=(1, 2)), ValueError, "values"),
        (dict(indptr=[0, 1], indices=[0], values=[float("nan")], shape=(1, 1)), ValueError, "NaN"),
        (dict(indptr=[0, 1], indices=[0], values=[float("inf")], shape=(1, 1)), ValueError, "NaN"),
        (dict(indptr=[0, 1], indices=[0.5], shape=(1, 1)), TypeError, "indices"),
        (dict(indptr=[0, 1], indices=[0], values=[1], shape=(1, 1)), TypeError, "values"),
        (
            dict(indptr=[0, 1], indices=[0], relation=[3], num_relations=2, shape=(1, 1)),
            IndexError,
            "relation",
        ),
    ],
)
def test_validation_errors_name_the_argument(kwargs, exc, msg):
    with pytest.raises(exc, match=msg):
        sk.CSRGraph(**kwargs)


def test_from_edges_rejects_out_of_range_and_mismatch():
    with pytest.raises(IndexError, match="dst"):
        sk.CSRGraph.from_edges([0], [3], shape=(1, 3))
    with pytest.raises(ValueError, match="same length"):
        sk.CSRGraph.from_edges([0, 1], [0], shape=(2, 2))
    with pytest.raises(ValueError, match="weight"):
        sk.CSRGraph.from_edges([0], [0], [float("nan")], shape=(1, 1))


def test_empty_graph():
    g = sk.CSRGraph.from_edges([], [], shape=(0, 0))
    assert g.nnz == 0 and g.transpose().shape == (0, 0)
    g = sk.CSRGraph.from_edges(
        torch.empty(0, dtype=torch.int64), torch.empty(0, dtype=torch.int64), shape=(4, 3)
    )
    assert g.indptr.tolist() == [0, 0, 0, 0, 0]


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_check_finite_finds_one_bad_entry_anywhere(gen, bad, dtype):
    from slifmr_kernels._checks import check_finite

    t = torch.randn(301, 17, generator=gen, dtype=dtype)
    check_finite("x", t)
    i, j = int(torch.randint(0, 301, (1,), generator=gen)), int(torch.randint(0, 17, (1,), generator=gen))
    t[i, j] = bad
    with pytest.raises(ValueError, match="x contains 1 NaN or infinite"):
        check_finite("x", t)
    check_finite("idx", torch.arange(5))  # integers are always finite
    check_finite("x", torch.empty(0, 3))


def test_from_topk_is_the_topk_result_as_a_graph():
    """CSRGraph.from_topk: one edge per valid entry, columns sorted, padding (-1) dropped;
    malformed input is refused with the project's errors."""
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
