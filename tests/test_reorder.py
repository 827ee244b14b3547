"""The node orders of bench/reorder.py (docs/SCALE.md, "Found and left", item 9): the relabel
itself (every split, modality and the KG), the orders, and that the model and the metrics are
the same under the relabelling, so that the benchmark times the same work in every order."""
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, ROOT)

from reorder import (REORDER_METHODS, locality_order, near_share, permute_dataset,  # noqa: E402
                     user_order_by_items)
from slifmr.config import Config  # noqa: E402
from slifmr.data import make_synthetic  # noqa: E402
from slifmr.evaluate import rank_metrics  # noqa: E402
from slifmr.train import Trainer  # noqa: E402

SMALL = {"num_users": 120, "num_items": 90, "num_clusters": 4, "mean_interactions": 10,
         "modalities": {"image": 8, "text": 6}, "kg_relations": 2}


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
    assert ds.kg is not new.kg and not np.array_equal(ds.train, new.train)  # a new dataset


def test_permute_round_trip(ds):
    uo, io = _perms(ds)
    back = permute_dataset(permute_dataset(ds, uo, io), np.argsort(uo), np.argsort(io))
    for split in ("train", "valid", "test"):
        assert np.array_equal(getattr(back, split), getattr(ds, split))
    assert np.array_equal(back.kg, ds.kg)
    for m in ds.features:
        assert np.array_equal(back.features[m], ds.features[m])


def test_permute_rejects_non_permutations(ds):
    uo, io = _perms(ds)
    with pytest.raises(ValueError, match="item_order"):
        permute_dataset(ds, uo, np.zeros(ds.num_items, np.int64))
    with pytest.raises(ValueError, match="user_order"):
        permute_dataset(ds, uo[:-1], io)


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
    assert np.array_equal(locality_order(bare, method, group=16)[1],
                          locality_order(bare, "graph", group=16)[1])


def test_orders_put_graph_neighbours_close():
    big = make_synthetic(num_users=4000, num_items=3000, num_clusters=12, mean_interactions=12,
                         modalities={"image": 16}, kg_relations=0, seed=1)
    base = near_share(big, window=256)
    for method in ("features", "graph"):
        new = permute_dataset(big, *locality_order(big, method, group=256))
        assert near_share(new, window=256) > base + 0.3


@pytest.mark.parametrize("share", [True, False])
def test_model_and_metrics_are_invariant_under_relabelling(tmp_path, ds, share):
    """The same parameters, moved to the new ids, give the same representations (moved) and
    the same recall / NDCG: graphs, feedback kNN, model and evaluation are equivariant."""
    uo, io = locality_order(ds, "features", group=16)
    new = permute_dataset(ds, uo, io)
    cfg = Config(embed_dim=16, knn_k=5, feedback_k=5, progress=False, share_item_entity=share)
    a = Trainer(cfg, ds, str(tmp_path / "a"), log=lambda s: None)
    b = Trainer(cfg, new, str(tmp_path / "b"), log=lambda s: None)
    sd = a.model.state_dict()
    moved = dict(sd, user_emb=sd["user_emb"][uo], item_emb=sd["item_emb"][io])
    if not share:
        ent = sd["entity_emb"].clone()
        ent[: ds.num_items] = ent[torch.from_numpy(io)]
        moved["entity_emb"] = ent
    b.model.load_state_dict(moved)
    outs = []
    for tr in (a, b):
        graphs, _ = tr._graphs_for_epoch()
        tr.model.eval()
        with torch.no_grad():
            outs.append(tr.model(graphs))
    oa, ob = outs
    torch.testing.assert_close(ob["user"], oa["user"][uo], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ob["item"], oa["item"][io], rtol=1e-5, atol=1e-6)
    ma = rank_metrics(oa["user"], oa["item"], a.valid_csr, a.train_csr, [10, 20])
    mb = rank_metrics(ob["user"], ob["item"], b.valid_csr, b.train_csr, [10, 20])
    for k in ("recall@10", "recall@20", "ndcg@10", "ndcg@20"):
        assert mb[k] == pytest.approx(ma[k], abs=1e-9), k
