"""The training loop: files, resume, early stopping, the model variants."""

import importlib.util
import json
import math
import os

import pytest

import slifmr_kernels as sk
from slifmr.config import Config
from slifmr.data.prepare import prepare_data
from slifmr.train import Trainer
from tests.helpers import SMALL_DATA as SMALL
from tests.helpers import small_train_config as _cfg


@pytest.fixture(scope="module")
def small_ds():
    cfg = Config(synthetic=SMALL, seed=3)
    return prepare_data(cfg)


def test_fit_writes_outputs_and_learns(tmp_path, small_ds):
    out = tmp_path / "run"
    lines = []
    m = Trainer(_cfg(), small_ds, str(out), log=lines.append).fit()
    for f in ("config.json", "metrics.jsonl", "best.pt", "last.pt", "metrics.json"):
        assert (out / f).is_file(), f
    saved = json.loads((out / "metrics.json").read_text())
    assert saved["recall@20"] == pytest.approx(m["recall@20"])
    for key in ("recall@10", "ndcg@10", "precision@20", "hit@20", "seconds_per_epoch", "rebuild_share"):
        assert key in saved
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert all(r["feedback_edges"] > 0 for r in log)
    assert all(0 <= r["rebuild_s"] <= r["epoch_s"] for r in log)
    if importlib.util.find_spec("matplotlib") is not None:
        assert (out / "curves.png").read_bytes().startswith(b"\x89PNG")
    else:
        assert any("pip install matplotlib" in x for x in lines)
    assert not [f for f in os.listdir(out) if ".tmp" in f]  # atomic writes leave no temp files
    # well above a random ranking (expected recall@20 = 20 / 90)
    assert m["recall@20"] > 1.5 * 20 / 90
    assert any("test (" in x for x in lines)


def test_resume_continues_bit_identically(tmp_path, small_ds):
    straight = Trainer(_cfg(epochs=3), small_ds, str(tmp_path / "a"), log=lambda s: None)
    ma = straight.fit()
    part = Trainer(_cfg(epochs=2), small_ds, str(tmp_path / "b"), log=lambda s: None)
    part.fit()
    again = Trainer(_cfg(epochs=3), small_ds, str(tmp_path / "b"), log=lambda s: None)
    mb = again.fit(resume=True)
    la = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    assert ma["recall@20"] == mb["recall@20"]
    with pytest.raises(ValueError, match="different configuration"):
        Trainer(_cfg(epochs=4, lr=0.5), small_ds, str(tmp_path / "b"), log=lambda s: None).fit(resume=True)


def test_early_stopping(tmp_path, small_ds):
    # lr ~ 0 and static graphs: validation never improves after the first evaluation
    m = Trainer(
        _cfg(epochs=10, lr=1e-12, patience=2, feedback=False),
        small_ds,
        str(tmp_path / "es"),
        log=lambda s: None,
    ).fit()
    assert m["epochs_run"] == 3 and m["best_epoch"] == 1


# (overrides, what the trained model reports): the settings reach the model, not only the config
@pytest.mark.parametrize(
    "overrides, expect",
    [
        (dict(model="lightgcn"), dict(model="lightgcn", use_kg=False, modalities=[])),
        (
            dict(feedback=False),
            dict(model="slifmr", feedback=False, use_kg=True, modalities=["image", "text"]),
        ),
        (
            dict(use_kg=False, modalities=["text"], sc_weight=0.0),
            dict(model="slifmr", feedback=True, use_kg=False, modalities=["text"], sc_weight=0.0),
        ),
    ],
    ids=["lightgcn", "no-feedback", "no-kg-text-only"],
)
def test_baselines_and_ablations_train(tmp_path, small_ds, overrides, expect):
    m = Trainer(_cfg(epochs=1, **overrides), small_ds, str(tmp_path / "x"), log=lambda s: None).fit()
    assert {key: m[key] for key in expect} == expect
    log = json.loads((tmp_path / "x" / "metrics.jsonl").read_text().splitlines()[0])
    assert math.isfinite(log["loss"])
    feedback = overrides.get("model") != "lightgcn" and overrides.get("feedback", True)
    assert (log["feedback_edges"] > 0) == feedback


def test_dataset_without_kg_or_features(tmp_path):
    cfg = _cfg(epochs=1, synthetic={**SMALL, "modalities": {}, "kg_relations": 0})
    ds = prepare_data(cfg)
    m = Trainer(cfg, ds, str(tmp_path / "bare"), log=lambda s: None).fit()
    assert m["modalities"] == [] and m["use_kg"] is False


def test_trainer_needs_validation(tmp_path, small_ds):
    import dataclasses

    with pytest.raises(ValueError, match="validation"):
        Trainer(_cfg(), dataclasses.replace(small_ds, valid=None), str(tmp_path / "v"))


def test_incremental_feedback_refresh_trains(tmp_path, small_ds, monkeypatch):
    """S(1) is refreshed from S(0) by knn_refine (S(0) itself is an exact kNN graph)."""
    refined = []
    real = sk.knn_refine

    def counted(x, previous, k, **kw):
        refined.append((x.shape[0], previous.shape, k))
        return real(x, previous, k, **kw)

    monkeypatch.setattr(sk, "knn_refine", counted)
    Trainer(_cfg(epochs=2, feedback_refine=True), small_ds, str(tmp_path / "r"), log=lambda s: None).fit()
    log = [json.loads(x) for x in (tmp_path / "r" / "metrics.jsonl").read_text().splitlines()]
    assert len(log) == 2 and all(r["feedback_edges"] > 0 for r in log)
    n = small_ds.num_items
    assert refined == [(n, (n, n), 5)]


def test_large_catalogue_path_trains(tmp_path, small_ds):
    """Above knn_exact_max: approximate modality graphs, S(0) refined from the first modality's
    graph (the seed is then dropped), no cached no-feedback graphs; it still learns."""
    tr = Trainer(
        _cfg(epochs=2, feedback_refine=True, knn_exact_max=10),
        small_ds,
        str(tmp_path / "big"),
        log=lambda s: None,
    )
    assert not tr.builder.knn_exact and tr.selfloop.seed is not None and tr.builder.seed_graph is None
    m = tr.fit()
    assert tr.selfloop.seed is None and not tr.builder._static_cache
    assert m["recall@20"] > 1.5 * 20 / 90
