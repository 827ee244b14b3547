"""FREEDOM and LATTICE on the kernels against dense formulas written the way their reference
code computes them (an I x I similarity matrix, torch.topk, dense normalisation)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slifmr.config import Config
from slifmr.data import make_synthetic
from slifmr.graphs import GraphBuilder
from slifmr.models import FREEDOM, LATTICE, Batch, build_model
from slifmr.models.freedom import degree_sensitive_sample, modality_weights
from slifmr.models.item_graphs import (edge_cosine, knn_edges, mixed_feature_graph, propagate_edges,
                                       row_sum_normalized)


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(30, 26, num_clusters=3, mean_interactions=6, min_interactions=2,
                          modalities={"image": 6, "text": 5}, kg_relations=0, seed=5)


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


def _batch(ds, n=16, seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.choice(ds.train.shape[0], n, replace=False)
    u, p = ds.train[rows, 0], ds.train[rows, 1]
    neg = rng.integers(0, ds.num_items, n)
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64))  # noqa: E731
    return Batch(t(u), t(p), t(neg), u, p, rng)


def _graphs(ds):
    return GraphBuilder(ds, modalities=[], use_kg=False, knn_k=4).build(None)


# ---------------------------------------------------------------- item graphs
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


# ---------------------------------------------------------------- FREEDOM
def test_degree_sensitive_sample():
    rng = np.random.default_rng(0)
    w = np.array([10.0, 1.0, 1.0, 1.0, 0.1])
    keep = degree_sensitive_sample(w, 2, rng)
    assert keep.size == 2 and np.all(np.diff(keep) > 0)
    counts = np.zeros(5)
    for _ in range(2000):
        counts[degree_sensitive_sample(w, 2, rng)] += 1
    assert counts[0] > 1900 and counts[4] < counts[1]  # kept in proportion to the weights
    assert np.array_equal(degree_sensitive_sample(w, 9, rng), np.arange(5))


def test_freedom_forward_matches_the_dense_model(ds):
    torch.manual_seed(0)
    cfg = Config(model="freedom", embed_dim=8, num_layers=2, modality_layers=1, knn_k=4,
                 image_graph_weight=0.1, prune_ratio=0.5, backend="torch").resolved()
    model = build_model(cfg, ds)
    assert isinstance(model, FREEDOM)
    g = _graphs(ds)
    U, I = ds.num_users, ds.num_items
    x = torch.cat([model.user_emb, model.item_emb]).double()
    item_graph = 0.1 * dense_knn_graph(torch.as_tensor(ds.features["image"]).double(), 4) \
        + 0.9 * dense_knn_graph(torch.as_tensor(ds.features["text"]).double(), 4)
    h = item_graph @ model.item_emb.double()

    def lightgcn(a):
        z = (x + a @ x + a @ (a @ x)) / 3
        return z[:U], z[U:]

    model.eval()
    with torch.no_grad():
        out = model(g)
    zu, zi = lightgcn(dense_sym(ds.train[:, 0], ds.train[:, 1], U, I))
    torch.testing.assert_close(out.user.double(), zu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.item.double(), zi + h, rtol=1e-4, atol=1e-5)
    # training: a pruned graph, re-normalised by the kept edges' degrees, new every epoch
    model.train()
    model.begin_epoch(0, np.random.default_rng(3))
    kept = model._pruned.to_dense()
    assert int((kept[:U] > 0).sum()) == int(ds.train.shape[0] * 0.5)
    ku, ki = np.nonzero(kept[:U, U:].numpy())
    with torch.no_grad():
        out = model(g)
    zu, zi = lightgcn(dense_sym(ku, ki, U, I))
    torch.testing.assert_close(out.item.double(), zi + h, rtol=1e-4, atol=1e-5)
    model.begin_epoch(1, np.random.default_rng(4))
    assert not torch.equal(model._pruned.to_dense(), kept)


def test_freedom_loss_and_gradients(ds):
    cfg = Config(model="freedom", embed_dim=8, knn_k=4, modality_bpr_weight=0.1, reg_weight=1e-3,
                 backend="torch").resolved()
    model = build_model(cfg, ds)
    model.train()
    model.begin_epoch(0, np.random.default_rng(0))
    parts = model.calculate_loss(_graphs(ds), _batch(ds))
    assert set(parts) == {"loss", *model.loss_parts}
    expect = parts["bpr"] + 0.1 * parts["modality_bpr"] + 1e-3 * parts["reg"]
    torch.testing.assert_close(parts["loss"], expect)
    parts["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- LATTICE
def _lattice(ds, lam=0.7):
    torch.manual_seed(1)
    cfg = Config(model="lattice", embed_dim=8, num_layers=1, modality_layers=2, knn_k=4,
                 frozen_graph_weight=lam, reg_weight=1e-3, backend="torch").resolved()
    model = build_model(cfg, ds)
    assert isinstance(model, LATTICE)
    with torch.no_grad():
        model.modal_logits.copy_(torch.tensor([0.3, -0.2]))
    return model


def _dense_lattice_item_view(model, ds, lam):
    """LATTICE's item graph as its reference code builds it, and H over it (float64)."""
    w = torch.softmax(model.modal_logits.double(), 0)
    learned, frozen = 0, 0
    for k, m in enumerate(("image", "text")):
        f = model.proj[m]().double()
        fn = F.normalize(f, dim=1)
        sim = fn @ fn.t()
        val, idx = torch.topk(sim.detach(), 4, dim=1)
        learned = learned + w[k] * torch.zeros_like(sim).scatter(1, idx, sim.gather(1, idx).clamp_min(0))
        frozen = frozen + w[k] * dense_knn_graph(torch.as_tensor(ds.features[m]).double(), 4)
    d = learned.sum(1).pow(-0.5)
    learned = d[:, None] * learned * d[None, :]
    a = (1 - lam) * learned + lam * frozen
    h = model.item_emb.double()
    for _ in range(2):
        h = a @ h
    return h


def test_lattice_item_view_and_gradients_match_the_dense_model(ds):
    model = _lattice(ds)
    model.train()
    model.begin_epoch(0, None)
    got = model.item_view()  # first batch of the epoch: the graph is re-learned
    ref = _dense_lattice_item_view(model, ds, 0.7)
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5)
    w = torch.randn_like(ref)
    params = [model.item_emb, model.modal_logits, model.proj["image"].linear.weight,
              model.proj["text"].linear.bias]
    g_got = torch.autograd.grad((got.double() * w).sum(), params)
    g_ref = torch.autograd.grad((ref * w).sum(), params)
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-3, atol=1e-5)
    # later batches: the same graph, held constant (no gradient to the projections)
    again = model.item_view()
    torch.testing.assert_close(again, got)
    assert not again.requires_grad or torch.autograd.grad(
        again.sum(), model.modal_logits, allow_unused=True)[0] is None


def test_lattice_forward_and_loss(ds):
    model = _lattice(ds, lam=0.9)
    g = _graphs(ds)
    model.eval()
    with torch.no_grad():
        out = model(g)
        h = _dense_lattice_item_view(model, ds, 0.9)
    U = ds.num_users
    a = g.adj.to_dense().double()
    x = torch.cat([model.user_emb, model.item_emb]).double()
    z = (x + a @ x) / 2
    torch.testing.assert_close(out.user.double(), z[:U], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.item.double(), z[U:] + F.normalize(h, dim=1), rtol=1e-4, atol=1e-5)
    model.train()
    model.begin_epoch(0, None)
    parts = model.calculate_loss(g, _batch(ds))
    torch.testing.assert_close(parts["loss"], parts["bpr"] + 1e-3 * parts["reg"])
    parts["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", ["freedom", "lattice"])
def test_without_modalities_the_peers_are_lightgcn(ds, name):
    cfg = Config(model=name, embed_dim=4, modalities=[], backend="torch").resolved()
    model = build_model(cfg, ds)
    model.eval()
    with torch.no_grad():
        out = model(_graphs(ds))
    zu, zi = out.cf
    torch.testing.assert_close(out.user, zu)
    if name == "freedom":
        torch.testing.assert_close(out.item, zi)
