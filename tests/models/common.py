"""Graphs, batches and dense references that the model tests share."""

import numpy as np
import torch
import torch.nn.functional as F

from slifmr.graphs import GraphBuilder
from slifmr.models import Batch


def view_graphs(ds, mods=("image", "text"), use_kg=True, feedback=True):
    """The GraphBuilder and the graphs of ``ds`` with the given views (and a feedback graph S
    from random item vectors unless ``feedback`` is False)."""
    b = GraphBuilder(ds, modalities=list(mods), use_kg=use_kg, knn_k=4)
    if not feedback:
        return b, b.build(None)
    S, raw, _, _ = b.feedback(torch.randn(ds.num_items, 5, generator=torch.Generator().manual_seed(1)), 3)
    return b, b.build(S, raw)


def dense_knn_graph(f: torch.Tensor, k: int) -> torch.Tensor:
    """The peers' construction: cosine matrix, top-k per row (the item itself included),
    kept values scattered back, D_r^-1/2 S D_r^-1/2 with the row sums on both sides."""
    fn = F.normalize(f, dim=1)
    sim = fn @ fn.t()
    val, idx = torch.topk(sim, k, dim=1)
    s = torch.zeros_like(sim).scatter_(1, idx, val.clamp_min(0))
    d = s.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0
    return d[:, None] * s * d[None, :]


def dense_sym(u: np.ndarray, i: np.ndarray, U: int, I: int) -> torch.Tensor:
    """D^-1/2 [[0, R], [R^T, 0]] D^-1/2 of the (user, item) edges, dense float64."""
    a = torch.zeros(U + I, U + I, dtype=torch.float64)
    a[u, U + i] = 1
    a[U + i, u] = 1
    d = a.sum(1).pow(-0.5)
    d[torch.isinf(d)] = 0
    return d[:, None] * a * d[None, :]


def batch_of(ds, n=16, seed=0):
    """A training batch of ``n`` random training pairs with random negatives."""
    rng = np.random.default_rng(seed)
    rows = rng.choice(ds.train.shape[0], n, replace=False)
    u, p = ds.train[rows, 0], ds.train[rows, 1]
    neg = rng.integers(0, ds.num_items, n)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
    return Batch(t(u), t(p), t(neg), u, p, rng)


def interaction_graphs(ds):
    """The graphs of ``ds`` without KG, modalities or feedback (what the peers train on)."""
    return GraphBuilder(ds, modalities=[], use_kg=False, knn_k=4).build(None)
