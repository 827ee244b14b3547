"""FREEDOM (slifmr/models/freedom.py) on the kernels against the dense model written the way its
reference code computes it (an I x I similarity matrix, torch.topk, dense normalisation): the
forward pass, the pruned training graph drawn per epoch, the loss and its gradients."""

import numpy as np
import torch

from slifmr.config import Config
from slifmr.models import FREEDOM, build_model
from tests.models.common import batch_of, dense_knn_graph, dense_sym, interaction_graphs


def test_freedom_forward_matches_the_dense_model(peer_ds):
    torch.manual_seed(0)
    cfg = Config(
        model="freedom",
        embed_dim=8,
        num_layers=2,
        modality_layers=1,
        knn_k=4,
        image_graph_weight=0.1,
        prune_ratio=0.5,
        backend="torch",
    ).resolved()
    model = build_model(cfg, peer_ds)
    assert isinstance(model, FREEDOM)
    g = interaction_graphs(peer_ds)
    U, I = peer_ds.num_users, peer_ds.num_items
    x = torch.cat([model.user_emb, model.item_emb]).double()
    item_graph = 0.1 * dense_knn_graph(
        torch.as_tensor(peer_ds.features["image"]).double(), 4
    ) + 0.9 * dense_knn_graph(torch.as_tensor(peer_ds.features["text"]).double(), 4)
    h = item_graph @ model.item_emb.double()

    def lightgcn(a):
        z = (x + a @ x + a @ (a @ x)) / 3
        return z[:U], z[U:]

    model.eval()
    with torch.no_grad():
        out = model(g)
    zu, zi = lightgcn(dense_sym(peer_ds.train[:, 0], peer_ds.train[:, 1], U, I))
    torch.testing.assert_close(out.user.double(), zu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out.item.double(), zi + h, rtol=1e-4, atol=1e-5)
    # training: a pruned graph, re-normalised by the kept edges' degrees, new every epoch
    model.train()
    model.begin_epoch(0, np.random.default_rng(3))
    kept = model._pruned.to_dense()
    assert int((kept[:U] > 0).sum()) == int(peer_ds.train.shape[0] * 0.5)
    ku, ki = np.nonzero(kept[:U, U:].numpy())
    with torch.no_grad():
        out = model(g)
    zu, zi = lightgcn(dense_sym(ku, ki, U, I))
    torch.testing.assert_close(out.item.double(), zi + h, rtol=1e-4, atol=1e-5)
    model.begin_epoch(1, np.random.default_rng(4))
    assert not torch.equal(model._pruned.to_dense(), kept)


def test_freedom_loss_and_gradients(peer_ds):
    cfg = Config(
        model="freedom", embed_dim=8, knn_k=4, modality_bpr_weight=0.1, reg_weight=1e-3, backend="torch"
    ).resolved()
    model = build_model(cfg, peer_ds)
    model.train()
    model.begin_epoch(0, np.random.default_rng(0))
    parts = model.calculate_loss(interaction_graphs(peer_ds), batch_of(peer_ds))
    assert set(parts) == {"loss", *model.loss_parts}
    expect = parts["bpr"] + 0.1 * parts["modality_bpr"] + 1e-3 * parts["reg"]
    torch.testing.assert_close(parts["loss"], expect)
    parts["loss"].backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


# ---------------------------------------------------------------- LATTICE
