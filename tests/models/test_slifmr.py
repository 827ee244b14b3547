"""SLIF-MR (slifmr/models/slifmr.py): the forward pass against dense formulas, any subset of
views, gradients of every parameter, the view fusion, the modality features it projects."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slifmr.config import Config
from slifmr.models import SLIFMR, build_model
from tests.models.common import view_graphs


def test_forward_matches_dense_definition(ds):
    torch.manual_seed(0)
    cfg = Config(embed_dim=8, num_layers=2, kg_layers=2, modality_layers=1, view_weight=0.3)
    b, g = view_graphs(ds)
    model = SLIFMR(
        ds.num_users,
        ds.num_items,
        cfg,
        num_entities=ds.num_entities,
        num_view_relations=b.num_view_relations,
        features=ds.features,
    )
    out = model(g)
    U, I = ds.num_users, ds.num_items
    A = g.adj.to_dense().double()
    x = torch.cat([model.user_emb, model.item_emb]).double()
    layers = [x, A @ x, A @ (A @ x)]
    z = sum(layers) / 3
    torch.testing.assert_close(out.cf[0].double(), z[:U], rtol=1e-4, atol=1e-5)
    # KG: e_h <- sum_e w_e * (E_r[e] * x_t[e]) per edge, mean over layers
    kg = g.kg
    rows, cols, rel, w = kg.row_ids(), kg.indices.long(), kg.relation.long(), kg.values.double()
    e = model.entities().double()
    assert torch.equal(e[:I], model.item_emb.double())  # items are entities 0..I-1 (shared rows)
    E = model.relation_emb.double()
    acc, h = e, e
    for _ in range(2):
        msg = w[:, None] * E[rel] * h[cols]
        h = torch.zeros_like(h).index_add_(0, rows, msg)
        acc = acc + h
    zkg = (acc / 3)[:I]
    torch.testing.assert_close(out.views["kg"][1].double(), zkg, rtol=1e-4, atol=1e-5)
    Rt = g.user_item.to_dense().double()
    torch.testing.assert_close(out.views["kg"][0].double(), Rt @ zkg, rtol=1e-4, atol=1e-5)
    for m in ("image", "text"):
        f = F.normalize(torch.as_tensor(ds.features[m]), dim=1)
        hm = model.proj[m].linear(f).double()
        Am = g.modality[m].to_dense().double()
        torch.testing.assert_close(out.views[m][1].double(), (hm + Am @ hm) / 2, rtol=1e-4, atol=1e-5)
    fused = out.cf[1] + sum(
        model.alpha[k] * F.normalize(out.views[n][1], dim=1) for k, n in enumerate(model.view_names)
    )
    torch.testing.assert_close(out.item, fused)
    assert model.view_names == ["kg", "image", "text"]


@pytest.mark.parametrize("shared", [True, False])
def test_every_parameter_gets_a_gradient(ds, shared):
    cfg = Config(embed_dim=8, share_item_entity=shared)
    b, g = view_graphs(ds)
    model = build_model(cfg, ds, b.num_view_relations)
    out = model(g)
    loss = (out.user[:5] @ out.item[:7].t()).sum()
    for _, (vu, vi) in out.views.items():
        loss = loss + vi.pow(2).sum() + vu.pow(2).sum()
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


@pytest.mark.parametrize(
    "use_kg, mods",
    [(True, []), (False, ["image"]), (False, ["text", "image"]), (False, []), (True, ["text"])],
)
def test_any_subset_of_views(ds, use_kg, mods):
    cfg = Config(embed_dim=4, use_kg=use_kg, modalities=mods)
    b, g = view_graphs(ds, mods=mods, use_kg=use_kg)
    model = build_model(cfg, ds, b.num_view_relations)
    out = model(g)
    assert set(out.views) == ({"kg"} if use_kg else set()) | set(mods)
    assert out.user.shape == (ds.num_users, 4) and out.item.shape == (ds.num_items, 4)
    assert torch.isfinite(out.item).all()


def test_features_must_match_items(ds):
    with pytest.raises(ValueError, match="features"):
        SLIFMR(
            ds.num_users,
            ds.num_items,
            Config(modalities=["image"]),
            features={"image": np.zeros((3, 2), np.float32)},
        )


@pytest.mark.parametrize("stacked", [False, True])
def test_fuse_views_matches_the_plain_formula(stacked):
    """The fusion: same forward bits (torch backend) and gradients (z, alpha, views; every
    backend) as z + sum alpha_k * F.normalize(v_k), including a zero row (norm clamped at eps)."""
    g = torch.Generator().manual_seed(0)
    z = torch.randn(7, 4, generator=g, dtype=torch.float64, requires_grad=True)
    alpha = torch.tensor([0.3, -0.7, 1.1], dtype=torch.float64, requires_grad=True)
    vs = [torch.randn(7, 4, generator=g, dtype=torch.float64) for _ in range(3)]
    vs[1][2] = 0.0  # a zero row: F.normalize divides by eps there
    vs = [v.requires_grad_() for v in vs]
    from slifmr.models import fuse_views

    def ours(z, alpha, *vs, backend="auto"):
        return fuse_views(z, alpha, torch.cat(vs, 1) if stacked else list(vs), backend)

    def plain(z, alpha, *vs):  # the model's former fuse, term by term in view order
        for k, v in enumerate(vs):
            z = z + alpha[k] * F.normalize(v, dim=1)
        return z

    assert torch.equal(ours(z, alpha, *vs, backend="torch"), plain(z, alpha, *vs))
    w = torch.randn(7, 4, generator=g, dtype=torch.float64)
    got = torch.autograd.grad((ours(z, alpha, *vs) * w).sum(), [z, alpha, *vs])
    ref = torch.autograd.grad((plain(z, alpha, *vs) * w).sum(), [z, alpha, *vs])
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b)
    ok = [v.detach().clone().requires_grad_() for v in vs]
    ok[1].data[2] += 0.5  # gradcheck's finite differences need a point away from the kink
    assert torch.autograd.gradcheck(ours, (z, alpha, *ok))
    with pytest.raises(ValueError):
        fuse_views(z, alpha, vs[:2])
    with pytest.raises(ValueError):
        fuse_views(z, alpha, torch.cat(vs[:2], 1))


def test_feature_rows_are_normalised_without_a_copy(ds):
    """project(m) == proj_m(F.normalize(F_m)); the model shares the dataset's feature array."""
    cfg = Config(embed_dim=8)
    b, _ = view_graphs(ds)
    model = build_model(cfg, ds, b.num_view_relations)
    for m in ("image", "text"):
        f = torch.as_tensor(ds.features[m])
        torch.testing.assert_close(model.project(m), model.proj[m].linear(F.normalize(f, dim=1)))
        assert model.feature(m).data_ptr() == f.data_ptr()
