"""Edge dropout of the interaction graph (``Config.edge_dropout``): GraphBuilder's ``train_adj``
and the models' use of it in training only."""

import numpy as np
import pytest
import torch

from slifmr.config import Config, ConfigError, load_config
from slifmr.data.synthetic import make_synthetic
from slifmr.graphs import GraphBuilder, feedback_knn
from slifmr.models import build_model

SMALL = {"num_users": 60, "num_items": 45, "num_clusters": 3, "mean_interactions": 8}


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(seed=5, **SMALL)


def _dense(g):
    return g.to_dense().numpy()


def _ui_edges(a: np.ndarray, U: int) -> set:
    r, c = np.nonzero(a[:U, U:])
    return set(zip(r.tolist(), c.tolist()))


@pytest.mark.parametrize("share", [0.3, 0.8])
def test_train_adj_keeps_a_sample_of_the_edges_renormalised(ds, share):
    b = GraphBuilder(ds, edge_dropout=share)
    g = b.build(None, rng=np.random.default_rng(0))
    U = ds.num_users
    full, drop = _dense(g.adj), _dense(g.train_adj)
    n = len(_ui_edges(full, U))
    kept = _ui_edges(drop, U)
    assert len(kept) == round(n * (1 - share)) and kept <= _ui_edges(full, U)
    assert np.allclose(drop, drop.T)
    # D^-1/2 A D^-1/2 by the kept degrees
    deg = (drop > 0).sum(1)
    r, c = np.nonzero(drop)
    assert np.allclose(drop[r, c], 1.0 / np.sqrt(deg[r] * deg[c]), rtol=1e-5)
    # the evaluation graph is the full one, unchanged
    assert np.allclose(full, _dense(b.build(None).adj))
    assert b.build(None).train_adj is None


def test_train_adj_is_seeded_and_varies_by_epoch(ds):
    b = GraphBuilder(ds, edge_dropout=0.5)
    a0 = _dense(b.build(None, rng=np.random.default_rng([3, 0, 1])).train_adj)
    a0b = _dense(b.build(None, rng=np.random.default_rng([3, 0, 1])).train_adj)
    a1 = _dense(b.build(None, rng=np.random.default_rng([3, 1, 1])).train_adj)
    assert np.array_equal(a0, a0b) and not np.array_equal(a0, a1)


def test_train_adj_carries_the_feedback_block(ds):
    b = GraphBuilder(ds, edge_dropout=0.5, gamma=0.5)
    h = torch.randn(ds.num_items, 8, generator=torch.Generator().manual_seed(1))
    S = feedback_knn(h, 4)[0]
    g = b.build(S, rng=np.random.default_rng(0))
    U = ds.num_users
    drop, full = _dense(g.train_adj), _dense(g.adj)
    assert np.array_equal(drop[U:, U:] > 0, full[U:, U:] > 0) and (drop[U:, U:] > 0).any()
    assert len(_ui_edges(drop, U)) < len(_ui_edges(full, U))


@pytest.mark.parametrize("model", ["lightgcn", "slifmr"])
def test_models_train_on_train_adj_and_evaluate_on_adj(ds, model):
    cfg = Config(
        model=model, embed_dim=8, edge_dropout=0.5, use_kg=False, modalities=[], feedback=False
    ).resolved()
    b = GraphBuilder(ds, edge_dropout=0.5)
    m = build_model(cfg, ds, b.num_view_relations)
    g = b.build(None, rng=np.random.default_rng(0))
    m.train()
    train_out = m(g).user.detach()
    m.eval()
    eval_out = m(g).user.detach()
    plain = m(b.build(None)).user.detach()
    assert not torch.allclose(train_out, eval_out) and torch.equal(eval_out, plain)


def test_edge_dropout_config_is_checked(tmp_path):
    assert Config(edge_dropout=0.2).edge_dropout == 0.2
    p = tmp_path / "c.yaml"
    p.write_text("edge_dropout: 1.0\n")
    with pytest.raises(ConfigError, match="edge_dropout"):
        load_config(str(p))
    with pytest.raises(ValueError, match="edge_dropout"):
        GraphBuilder(make_synthetic(seed=1, **SMALL), edge_dropout=-0.1)


def test_edge_dropout_auto_is_slifmr_only():
    from slifmr.config import SLIFMR_EDGE_DROPOUT

    assert Config().edge_dropout == "auto" and SLIFMR_EDGE_DROPOUT > 0
    assert Config(model="slifmr").resolved().edge_dropout == SLIFMR_EDGE_DROPOUT
    for model in ("lightgcn", "freedom", "lattice"):
        assert Config(model=model).resolved().edge_dropout == 0.0
    assert Config(model="lightgcn", edge_dropout=0.3).resolved().edge_dropout == 0.3
