"""slifmr/selfloop.py: the share of a graph's edges that changed between refreshes."""

import pytest
import torch

import slifmr_kernels as sk
from slifmr.selfloop import changed_edge_share


def test_changed_edge_share():
    a = sk.CSRGraph.from_edges(
        torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([1, 2, 0, 2, 0, 1]), shape=(3, 3)
    )
    b = sk.CSRGraph.from_edges(
        torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([1, 2, 0, 2, 1, 0]), shape=(3, 3)
    )
    c = sk.CSRGraph.from_edges(
        torch.tensor([0, 0, 1, 1, 2, 2]), torch.tensor([2, 1, 2, 0, 0, 1]), shape=(3, 3)
    )
    d = sk.CSRGraph.from_edges(torch.tensor([0, 1, 2]), torch.tensor([1, 0, 0]), shape=(3, 3))
    assert changed_edge_share(a, b) == 0.0 and changed_edge_share(a, c) == 0.0
    assert changed_edge_share(d, a) == pytest.approx(0.5)  # 3 of a's 6 edges are not in d
    assert changed_edge_share(None, a) is None
