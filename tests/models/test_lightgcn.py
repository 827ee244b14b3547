"""LightGCN (slifmr/models/lightgcn.py): the interaction view alone, and what FREEDOM and
LATTICE reduce to without modalities."""

import numpy as np
import pytest
import torch

from slifmr.config import Config
from slifmr.losses import bpr_loss
from slifmr.models import LightGCN, build_model
from tests.models.common import batch_of, interaction_graphs, view_graphs


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


def test_hard_negatives_keep_the_highest_scored_candidate(ds):
    """neg_candidates > 1: of each row's M candidates the ranking loss keeps the one the model
    scores highest for the row's user, and the loss equals BPR on those negatives."""
    cfg = Config(embed_dim=4, num_layers=2, backend="torch", neg_candidates=5)
    _, g = view_graphs(ds, feedback=False)
    model = LightGCN(ds.num_users, ds.num_items, cfg)
    batch = batch_of(ds, n=12, seed=1)
    cands = torch.from_numpy(np.random.default_rng(2).integers(0, ds.num_items, (12, 5)))
    batch.neg = cands.clone()
    out = model(g)
    scores = (out.user[batch.users][:, None, :] * out.item[cands]).sum(-1)
    want = cands[torch.arange(12), scores.argmax(1)]
    rank = model.ranking_loss(out, batch)
    assert batch.neg.shape == (12,)
    assert torch.equal(batch.neg, want)
    # the hardest candidate is not always the first: the choice does something
    assert not torch.equal(want, cands[:, 0])
    eu = out.user[batch.users]
    torch.testing.assert_close(
        rank, bpr_loss((eu * out.item[batch.pos]).sum(1), (eu * out.item[want]).sum(1))
    )


def test_trainer_draws_neg_candidates_per_triple(tmp_path, monkeypatch):
    """The trainer hands the model (B, M) candidates, each an item the row's user has not
    seen in train, and the model trains on one of them per triple."""
    from slifmr.data.prepare import prepare_data
    from slifmr.train import Trainer
    from tests.helpers import tiny_train_config

    seen = []
    orig = LightGCN.hard_negatives

    def spy(self, out, batch):
        seen.append((batch.users.clone(), batch.neg.clone()))
        orig(self, out, batch)
        assert batch.neg.shape == batch.users.shape

    monkeypatch.setattr(LightGCN, "hard_negatives", spy)
    cfg = tiny_train_config(model="lightgcn", neg_candidates=3, epochs=1)
    data = prepare_data(cfg)
    Trainer(cfg, data, str(tmp_path), log=lambda s: None).fit()
    train = {(int(u), int(i)) for u, i in data.train}
    assert seen
    for users, neg in seen:
        assert neg.shape == (users.shape[0], 3)
        assert not any((int(u), int(i)) in train for u, row in zip(users, neg) for i in row)


def test_neg_candidates_auto_is_slifmr_only():
    """``neg_candidates: auto`` is SLIF-MR's chosen value; the peers keep uniform sampling, as
    they are published; a value out of range is refused naming the key."""
    from slifmr.config import SLIFMR_NEG_CANDIDATES, ConfigError

    assert Config().neg_candidates == "auto" and SLIFMR_NEG_CANDIDATES > 1
    assert Config(model="slifmr").resolved().neg_candidates == SLIFMR_NEG_CANDIDATES
    for name in ("lightgcn", "freedom", "lattice"):
        assert Config(model=name).resolved().neg_candidates == 1
    assert Config(model="lightgcn", neg_candidates=3).resolved().neg_candidates == 3
    for bad in (0, 2.5, "x"):
        with pytest.raises(ConfigError, match="neg_candidates"):
            Config(neg_candidates=bad).validate()
