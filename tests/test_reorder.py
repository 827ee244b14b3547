"""Relabelling users and items for locality (slifmr.data.reorder): the relabel itself, the
orders, invariance of the model and the metrics, and original ids in everything user-facing."""

import json

import numpy as np
import pytest
import torch

from slifmr.cli import main as cli_main
from slifmr.config import Config
from slifmr.data import DataFormatError, Dataset, make_synthetic
from slifmr.data.prepare import prepare_data
from slifmr.data.reorder import (
    AUTO_MIN_NODES,
    REORDER_METHODS,
    apply_reorder,
    locality_order,
    locality_share,
    permute_dataset,
    to_original_rows,
    user_order_by_items,
)
from slifmr.evaluate import rank_metrics
from slifmr.train import Trainer
from tests.helpers import SMALL_DATA as SMALL
from tests.helpers import small_train_config


@pytest.fixture(scope="module")
def ds():
    return make_synthetic(**SMALL, seed=3).with_validation(0.1, 0)


def _perms(ds, seed=0):
    rng = np.random.default_rng(seed)
    return rng.permutation(ds.num_users), rng.permutation(ds.num_items)


def _pairs(p):
    return set(map(tuple, p.tolist()))


def test_permute_relabels_every_part(ds):
    uo, io = _perms(ds)
    new = permute_dataset(ds, uo, io)
    assert np.array_equal(new.orig_users, uo) and np.array_equal(new.orig_items, io)
    for split in ("train", "valid", "test"):
        old, got = getattr(ds, split), getattr(new, split)
        # unique and sorted by (user, item), like every loader's output
        keys = got[:, 0] * ds.num_items + got[:, 1]
        assert np.all(np.diff(keys) > 0)
        assert _pairs(np.stack([uo[got[:, 0]], io[got[:, 1]]], 1)) == _pairs(old)
    assert set(new.features) == set(ds.features) == {"image", "text"}
    for m, f in ds.features.items():
        assert new.features[m].dtype == np.float32 and new.features[m].flags.c_contiguous
        assert np.array_equal(new.features[m], f[io])
    # KG: item entities renamed, attribute entities and relations kept, triple order kept
    ent = np.arange(ds.num_entities)
    ent[: ds.num_items] = io
    assert np.array_equal(ent[new.kg[:, 0]], ds.kg[:, 0])
    assert np.array_equal(ent[new.kg[:, 2]], ds.kg[:, 2])
    assert np.array_equal(new.kg[:, 1], ds.kg[:, 1])
    assert (new.num_entities, new.num_relations) == (ds.num_entities, ds.num_relations)
    assert ds.orig_users is None and ds.kg is not new.kg  # the input is not modified


def test_permute_round_trip_and_composition(ds):
    uo, io = _perms(ds)
    new = permute_dataset(ds, uo, io)
    back = permute_dataset(new, np.argsort(uo), np.argsort(io))
    assert np.array_equal(back.orig_users, np.arange(ds.num_users))
    assert np.array_equal(back.orig_items, np.arange(ds.num_items))
    for split in ("train", "valid", "test"):
        assert np.array_equal(getattr(back, split), getattr(ds, split))
    assert np.array_equal(back.kg, ds.kg)
    for m in ds.features:
        assert np.array_equal(back.features[m], ds.features[m])
    # twice: the original ids are composed, not the last step's
    uo2, io2 = _perms(ds, 1)
    twice = permute_dataset(new, uo2, io2)
    assert np.array_equal(twice.orig_users, uo[uo2]) and np.array_equal(twice.orig_items, io[io2])
    # embedding rows back to the original ids
    rows = torch.arange(ds.num_items)[torch.from_numpy(io)]  # row j holds original item io[j]
    assert torch.equal(to_original_rows(rows, io), torch.arange(ds.num_items))
    assert np.array_equal(to_original_rows(io, io), np.arange(ds.num_items))
    assert to_original_rows(rows, None) is rows


def test_permute_rejects_non_permutations(ds):
    uo, io = _perms(ds)
    with pytest.raises(ValueError, match="item_order"):
        permute_dataset(ds, uo, np.zeros(ds.num_items, np.int64))
    with pytest.raises(ValueError, match="user_order"):
        permute_dataset(ds, uo[:-1], io)
    with pytest.raises(DataFormatError, match="orig_items"):
        Dataset("x", 2, 3, np.zeros((0, 2), np.int64), np.zeros((0, 2), np.int64), orig_items=np.arange(2))


def test_users_by_median_item_position():
    train = np.array([[0, 5], [0, 1], [0, 3], [1, 0], [1, 4], [3, 2]])
    pos = np.array([4, 0, 1, 2, 3, 5])  # item -> position
    # medians (lower): user 0 {0, 2, 5} -> 2; user 1 {3, 4} -> 3; user 3 {1} -> 1; user 2 none
    assert user_order_by_items(train, 4, pos).tolist() == [3, 0, 1, 2]


@pytest.mark.parametrize("method", REORDER_METHODS)
def test_orders_are_deterministic_permutations(ds, method):
    uo, io = locality_order(ds, method, group=16)
    assert np.array_equal(np.sort(uo), np.arange(ds.num_users))
    assert np.array_equal(np.sort(io), np.arange(ds.num_items))
    uo2, io2 = locality_order(ds, method, group=16)
    assert np.array_equal(uo, uo2) and np.array_equal(io, io2)
    bare = make_synthetic(**dict(SMALL, modalities={}), seed=3)  # no features: the graph order
    assert np.array_equal(
        locality_order(bare, method, group=16)[1], locality_order(bare, "graph", group=16)[1]
    )


def test_orders_put_graph_neighbours_close():
    big = make_synthetic(
        num_users=4000,
        num_items=3000,
        num_clusters=12,
        mean_interactions=12,
        modalities={"image": 16},
        kg_relations=0,
        seed=1,
    )
    base = locality_share(big, window=256)
    for method in ("features", "graph"):
        new = permute_dataset(big, *locality_order(big, method, group=256))
        assert locality_share(new, window=256) > base + 0.3


def test_apply_reorder_modes(ds):
    assert apply_reorder(ds, "none") is ds
    assert ds.num_users + ds.num_items < AUTO_MIN_NODES and apply_reorder(ds, "auto") is ds
    new = apply_reorder(ds, "graph")
    assert new.orig_items is not None and new.train.shape == ds.train.shape
    with pytest.raises(ValueError, match="reorder"):
        apply_reorder(ds, "random")
    with pytest.raises(ValueError, match="reorder"):
        Config(reorder="random")
    small = prepare_data(Config(synthetic=SMALL, seed=3))  # the default leaves small data as is
    assert small.orig_items is None
    moved = prepare_data(Config(synthetic=SMALL, seed=3, reorder="features"))
    assert np.array_equal(moved.train, permute_dataset(small, moved.orig_users, moved.orig_items).train)


def _cfg(**kw):
    return small_train_config(**{"epochs": 2, **kw})


@pytest.mark.parametrize("share", [True, False])
def test_model_and_metrics_are_invariant_under_relabelling(tmp_path, ds, share):
    """The same parameters, moved to the new ids, give the same representations (moved) and
    the same recall / NDCG: graphs, feedback kNN, model and evaluation are equivariant."""
    uo, io = locality_order(ds, "features", group=16)
    new = permute_dataset(ds, uo, io)
    cfg = _cfg(share_item_entity=share)
    a = Trainer(cfg, ds, str(tmp_path / "a"), log=lambda s: None)
    b = Trainer(cfg, new, str(tmp_path / "b"), log=lambda s: None)
    sd = a.model.state_dict()
    moved = dict(sd, user_emb=sd["user_emb"][uo], item_emb=sd["item_emb"][io])
    if not share:
        ent = sd["entity_emb"].clone()
        ent[: ds.num_items] = ent[torch.from_numpy(io)]
        moved["entity_emb"] = ent
    b.model.load_state_dict(moved)
    assert b._original_ids(b.model.state_dict()).keys() == sd.keys()
    for k, v in b._original_ids(b.model.state_dict()).items():
        assert torch.equal(v, sd[k]), k
    outs = []
    for tr in (a, b):
        graphs, _ = tr.selfloop.graphs()
        tr.model.eval()
        with torch.no_grad():
            outs.append(tr.model(graphs))
    oa, ob = outs
    torch.testing.assert_close(ob.user, oa.user[uo], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ob.item, oa.item[io], rtol=1e-5, atol=1e-6)
    ma = rank_metrics(oa.user, oa.item, a.valid_csr, a.train_csr, [10, 20])
    mb = rank_metrics(ob.user, ob.item, b.valid_csr, b.train_csr, [10, 20])
    for k in ("recall@10", "recall@20", "ndcg@10", "ndcg@20"):
        assert mb[k] == pytest.approx(ma[k], abs=1e-9), k


def test_training_with_reorder_names_original_ids(tmp_path):
    cfg = _cfg(reorder="graph")
    data = prepare_data(cfg)
    assert np.array_equal(np.sort(data.orig_items), np.arange(data.num_items))  # a relabelling
    out = tmp_path / "run"
    tr = Trainer(cfg, data, str(out), log=lambda s: None)
    m = tr.fit()
    best = torch.load(out / "best.pt", weights_only=True)
    # best.pt's rows are in original ids: ranking them against the data as generated (no
    # relabelling) gives the metrics the trainer reported
    plain = prepare_data(cfg.updated(reorder="none"))
    exclude = (plain.interaction_matrix("train") + plain.interaction_matrix("valid")).tocsr()
    again = rank_metrics(best["user"], best["item"], plain.interaction_matrix("test"), exclude, cfg.eval_ks)
    assert again["recall@20"] == pytest.approx(m["recall@20"], abs=1e-9)
    if best["epoch"] == cfg.epochs:  # the model of the last epoch, its rows in original ids
        for k in ("user_emb", "item_emb"):
            orig = data.orig_users if k == "user_emb" else data.orig_items
            assert torch.equal(best["model"][k][torch.from_numpy(orig)], tr.model.state_dict()[k])
    # the command line: evaluate and recommend in original ids
    assert cli_main(["evaluate", "--output", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["recall@20"] == pytest.approx(m["recall@20"])


def test_resume_checks_the_order(tmp_path):
    cfg = _cfg(reorder="graph", epochs=1)
    data = prepare_data(cfg)
    Trainer(cfg, data, str(tmp_path / "r"), log=lambda s: None).fit()
    Trainer(cfg.updated(epochs=2), data, str(tmp_path / "r"), log=lambda s: None).fit(resume=True)
    other = permute_dataset(data, np.arange(data.num_users), np.roll(np.arange(data.num_items), 1))
    with pytest.raises(ValueError, match="items are not in the order"):
        Trainer(cfg.updated(epochs=3), other, str(tmp_path / "r"), log=lambda s: None).fit(resume=True)


def test_cli_recommend_in_original_ids(tmp_path, capsys):
    out = tmp_path / "run"
    syn = json.dumps(SMALL)
    assert (
        cli_main(
            [
                "train",
                "--output",
                str(out),
                "--epochs",
                "1",
                "--quiet",
                "--set",
                f"synthetic={syn}",
                "--set",
                "embed_dim=8",
                "--set",
                "reorder=features",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert cli_main(["recommend", "--output", str(out), "--users", "0", "7", "--k", "5"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    best = torch.load(out / "best.pt", weights_only=True)
    plain = prepare_data(Config(synthetic=SMALL, seed=Config().seed, reorder="none"))
    seen = (plain.interaction_matrix("train") + plain.interaction_matrix("valid")).tocsr()
    for r in lines:
        u = r["user"]
        scores = (best["item"] @ best["user"][u]).numpy()
        scores[seen[u].indices] = -np.inf
        expect = np.argsort(-scores, kind="stable")[:5]
        assert r["items"] == expect.tolist()
