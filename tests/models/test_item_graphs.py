"""slifmr/models/item_graphs.py: the item-item feature graphs of FREEDOM and LATTICE against the
dense construction of their reference code (I x I cosine matrix, torch.topk, row sums on both
sides), modality weights, zero rows, edge-value gradients."""

import pytest
import torch

from slifmr.models.freedom import modality_weights
from slifmr.models.item_graphs import (
    edge_cosine,
    knn_edges,
    mixed_feature_graph,
    propagate_edges,
    row_sum_normalized,
)
from tests.models.common import dense_knn_graph


@pytest.mark.parametrize("n, d, k", [(1, 3, 4), (9, 4, 3), (17, 5, 17), (23, 6, 40)])
def test_knn_feature_graph_matches_the_dense_construction(n, d, k):
    g = torch.Generator().manual_seed(n)
    f = torch.randn(n, d, generator=g, dtype=torch.float64).float()
    got = mixed_feature_graph([f], [1.0], k, n, backend="torch").to_dense().double()
    ref = dense_knn_graph(f.double(), min(k, n))
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    rows, cols = knn_edges(f, k, backend="torch")
    assert rows.numel() == n * min(k, n)
    assert bool((rows == cols).reshape(n, -1).any(1).all())  # every item among its own neighbours


def test_mixed_graph_weights_the_modalities():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(12, 4, generator=g), torch.randn(12, 7, generator=g)
    got = mixed_feature_graph([a, b], [0.1, 0.9], 3, 12, backend="torch").to_dense().double()
    ref = 0.1 * dense_knn_graph(a.double(), 3) + 0.9 * dense_knn_graph(b.double(), 3)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-6)
    assert modality_weights(["image", "text"], 0.1) == [0.1, 0.9]
    assert modality_weights(["text"], 0.1) == [1.0]
    assert modality_weights(["text", "audio"], 0.1) == [0.5, 0.5]


def test_zero_feature_rows_and_edge_gradients():
    """A zero row gets zero weights (no NaN); the edge values are differentiable (gradcheck)."""
    f = torch.randn(8, 3, dtype=torch.float64)
    f[2] = 0
    rows, cols = knn_edges(f.float(), 3, backend="torch")
    v = row_sum_normalized(rows, cols, edge_cosine(f, rows, cols), 8)
    assert torch.isfinite(v).all() and float(v[rows == 2].abs().sum()) == 0.0
    f[2] = torch.randn(3, dtype=torch.float64)
    h = torch.randn(8, 4, dtype=torch.float64, requires_grad=True)
    ff = f.clone().requires_grad_()

    def fn(ff, h):
        return propagate_edges(rows, cols, row_sum_normalized(rows, cols, edge_cosine(ff, rows, cols), 8), h)

    assert torch.autograd.gradcheck(fn, (ff, h))
