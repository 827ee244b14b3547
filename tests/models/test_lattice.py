"""LATTICE (slifmr/models/lattice.py) on the kernels against the dense model of its reference
code: the learned item graph mixed with the frozen feature graph, its gradients, the loss."""

import torch
import torch.nn.functional as F

from slifmr.config import Config
from slifmr.models import LATTICE, build_model
from tests.models.common import batch_of, dense_knn_graph, interaction_graphs


def _lattice(peer_ds, lam=0.7):
    torch.manual_seed(1)
    cfg = Config(
        model="lattice",
        embed_dim=8,
        num_layers=1,
        modality_layers=2,
        knn_k=4,
        frozen_graph_weight=lam,
        reg_weight=1e-3,
        backend="torch",
    ).resolved()
    model = build_model(cfg, peer_ds)
    assert isinstance(model, LATTICE)
    with torch.no_grad():
        model.modal_logits.copy_(torch.tensor([0.3, -0.2]))
    return model


def _dense_lattice_item_view(model, peer_ds, lam):
    """LATTICE's item graph as its reference code builds it, and H over it (float64)."""
    w = torch.softmax(model.modal_logits.double(), 0)
    learned, frozen = 0, 0
    for k, m in enumerate(("image", "text")):
        f = model.proj[m]().double()
        fn = F.normalize(f, dim=1)
        sim = fn @ fn.t()
        val, idx = torch.topk(sim.detach(), 4, dim=1)
        learned = learned + w[k] * torch.zeros_like(sim).scatter(1, idx, sim.gather(1, idx).clamp_min(0))
        frozen = frozen + w[k] * dense_knn_graph(torch.as_tensor(peer_ds.features[m]).double(), 4)
    d = learned.sum(1).pow(-0.5)
    learned = d[:, None] * learned * d[None, :]
    a = (1 - lam) * learned + lam * frozen
    h = model.item_emb.double()
    for _ in range(2):
        h = a @ h
    return h


def test_lattice_item_view_and_gradients_match_the_dense_model(peer_ds):
    model = _lattice(peer_ds)
    model.train()
    model.begin_epoch(0, None)
    got = model.item_view()  # first batch of the epoch: the graph is re-learned
    ref = _dense_lattice_item_view(model, peer_ds, 0.7)
    torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5)
    w = torch.randn_like(ref)
    params = [
        model.item_emb,
        model.modal_logits,
        model.proj["image"].linear.weight,
        model.proj["text"].linear.bias,
    ]
    g_got = torch.autograd.grad((got.double() * w).sum(), params)
    g_ref = torch.autograd.grad((ref * w).sum(), params)
    for a, b in zip(g_got, g_ref):
        torch.testing.assert_close(a.double(), b.double(), rtol=1e-3, atol=1e-5)
    # later batches: the same graph, held constant (no gradient to the projections)
    again = model.item_view()
    torch.testing.assert_close(again, got)
    assert (
        not again.requires_grad
        or torch.autograd.grad(again.sum(), model.modal_logits, allow_unused=True)[0] is None
    )


def test_lattice_forward_and_loss(peer_ds):
    model = _lattice(peer_ds, lam=0.9)
    g = interaction_graphs(peer_ds)
    model.eval()
    with torch.no_grad():
        out = model(g)
        h = _dense_lattice_item_view(model, peer_ds, 0.9)
    U = peer_ds.num_users
    a = g.adj.to_dense().double()
    x = torch.cat([model.user_emb, model.item_emb]).double()
    z = (x + a @ x) / 2
    torch.testing.assert_close(out.user.double(), z[:U], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.item.double(), z[U:] + F.normalize(h, dim=1), rtol=1e-4, atol=1e-5)
    model.train()
    model.begin_epoch(0, None)
    parts = model.calculate_loss(g, batch_of(peer_ds))
    torch.testing.assert_close(parts["loss"], parts["bpr"] + 1e-3 * parts["reg"])
    parts["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
