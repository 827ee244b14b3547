"""LightGCN (slifmr/models/lightgcn.py): the interaction view alone, and what FREEDOM and
LATTICE reduce to without modalities."""

import pytest
import torch

from slifmr.config import Config
from slifmr.models import LightGCN, build_model
from tests.models.common import interaction_graphs, view_graphs


def test_lightgcn_is_the_interaction_view_only(ds):
    cfg = Config(embed_dim=4, num_layers=3)
    b, g = view_graphs(ds, feedback=False)
    lg = LightGCN(ds.num_users, ds.num_items, cfg)
    assert lg.view_names == []
    out = lg(g)
    torch.testing.assert_close(out.user, out.cf[0])
    assert build_model(cfg.updated(model="lightgcn"), ds, b.num_view_relations).view_names == []
    assert cfg.updated(model="lightgcn").resolved().feedback is False


@pytest.mark.parametrize("name", ["freedom", "lattice"])
def test_without_modalities_the_peers_are_lightgcn(peer_ds, name):
    cfg = Config(model=name, embed_dim=4, modalities=[], backend="torch").resolved()
    model = build_model(cfg, peer_ds)
    model.eval()
    with torch.no_grad():
        out = model(interaction_graphs(peer_ds))
    zu, zi = out.cf
    torch.testing.assert_close(out.user, zu)
    if name == "freedom":
        torch.testing.assert_close(out.item, zi)
