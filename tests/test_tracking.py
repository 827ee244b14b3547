"""TensorBoard events, the curves.png learning curves, the comparison figure of bench/, and the
core training without the optional tracking packages (the 'track' extra)."""

import json
import os
import sys

import pytest

from slifmr.cli import main
from slifmr.config import ConfigError
from slifmr.curves import MISSING_MATPLOTLIB
from slifmr.data.prepare import prepare_data
from slifmr.tracking import open_writer
from slifmr.train import Trainer
from tests.helpers import TINY_DATA, tiny_train_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _without(monkeypatch, *modules):
    """Make ``import`` of each module fail, as on a machine without it."""
    for name in list(sys.modules):
        if any(name == m or name.startswith(m + ".") for m in modules):
            monkeypatch.setitem(sys.modules, name, None)
    for m in modules:
        monkeypatch.setitem(sys.modules, m, None)


def test_tensorboard_events_hold_the_epoch_scalars(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_train_config()
    out = tmp_path / "run"
    Trainer(cfg, prepare_data(cfg), str(out), log=lambda s: None).fit()
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    ea = EventAccumulator(str(out / "tb"))
    ea.Reload()
    tags = set(ea.Tags()["scalars"])
    expected = {
        "loss/loss",
        "loss/bpr",
        "loss/reg",
        "loss/sc",
        "valid/recall@20",
        "valid/ndcg@20",
        "valid/recall@10",
        "alpha/kg",
        "alpha/text",
        "feedback/edges",
        "feedback/changed_share",
        "time/epoch_s",
        "time/rebuild_s",
    }
    assert expected <= tags, expected - tags
    rec = ea.Scalars("valid/recall@20")
    assert [e.step for e in rec] == [1, 2, 3]
    assert [e.value for e in rec] == pytest.approx([r["valid_recall@20"] for r in log], abs=1e-6)
    assert [e.value for e in ea.Scalars("alpha/kg")] == pytest.approx([r["alpha_kg"] for r in log], abs=1e-6)
    # the share of S(t)'s edges changed since S(t-1): from the second feedback graph on
    changed = ea.Scalars("feedback/changed_share")
    assert [e.step for e in changed] == [2, 3] and all(0.0 <= e.value <= 1.0 for e in changed)
    assert "feedback_changed" not in log[0] and 0.0 <= log[1]["feedback_changed"] <= 1.0
    assert "config/text_summary" in ea.Tags()["tensors"]  # the run's configuration, as text


def test_tensorboard_setting(tmp_path, monkeypatch, capsys):
    cfg = tiny_train_config(epochs=1, tensorboard=False)
    Trainer(cfg, prepare_data(cfg), str(tmp_path / "off"), log=lambda s: None).train()
    assert not (tmp_path / "off" / "tb").exists()
    _without(monkeypatch, "torch.utils.tensorboard", "tensorboard")
    assert open_writer("auto", str(tmp_path / "tb")) is None
    with pytest.raises(ConfigError, match=r"pip install tensorboard"):
        open_writer(True, str(tmp_path / "tb"))
    rc = main(
        [
            "train",
            "--output",
            str(tmp_path / "on"),
            "--epochs",
            "1",
            "--quiet",
            "--set",
            f"synthetic={json.dumps(TINY_DATA)}",
            "--set",
            "embed_dim=8",
            "--set",
            "tensorboard=true",
        ]
    )
    assert rc == 2 and "pip install tensorboard" in capsys.readouterr().err


def test_train_without_the_tracking_packages(tmp_path, monkeypatch, capsys):
    """slifmr train needs none of optuna, tensorboard, matplotlib: it trains, writes no tb/ and
    no curves.png, and says once what to install for the figure."""
    _without(monkeypatch, "torch.utils.tensorboard", "tensorboard", "matplotlib", "optuna")
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--output",
            str(out),
            "--epochs",
            "3",
            "--quiet",
            "--set",
            f"synthetic={json.dumps(TINY_DATA)}",
            "--set",
            "embed_dim=8",
        ]
    )
    printed = capsys.readouterr().out
    assert rc == 0 and (out / "metrics.json").is_file()
    assert not (out / "tb").exists() and not (out / "curves.png").exists()
    assert printed.count(MISSING_MATPLOTLIB) == 1
    rc = main(
        ["tune", "--space", str(out / "nothing.yaml"), "--trials", "1", "--output", str(tmp_path / "study")]
    )
    assert rc == 2 and "not found" in capsys.readouterr().err
    (tmp_path / "s.yaml").write_text("lr: {type: float, low: 0.001, high: 0.01}\n")
    rc = main(
        ["tune", "--space", str(tmp_path / "s.yaml"), "--trials", "1", "--output", str(tmp_path / "study")]
    )
    assert rc == 2 and "pip install optuna" in capsys.readouterr().err


def test_results_figure(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    try:
        import results_figure
    finally:
        sys.path.pop(0)
    root = tmp_path / "results"
    values = {
        ("ds-a", "lightgcn"): [0.10, 0.12, 0.11],
        ("ds-a", "slifmr"): [0.13, 0.15],
        ("ds-b", "lightgcn"): [0.20],
        ("ds-b", "slifmr"): [0.22, 0.24],
    }
    for (data, variant), xs in values.items():
        for s, x in enumerate(xs):
            # both layouts: <variant>-seed<N>/ for ds-a, <variant>/<seed>/ for ds-b
            d = (root / data / f"{variant}-seed{s}") if data == "ds-a" else (root / data / variant / str(s))
            d.mkdir(parents=True)
            (d / "metrics.json").write_text(json.dumps({"recall@20": x, "ndcg@20": x / 2}))
    got = results_figure.collect(str(root))
    assert {(d, v): sorted(xs) for d, runs in got.items() for v, xs in runs.items()} == {
        k: sorted(v) for k, v in values.items()
    }
    out = tmp_path / "fig.png"
    assert results_figure.main([str(root), "--output", str(out), "--variants", "lightgcn", "slifmr"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    printed = capsys.readouterr().out
    assert "ds-a  lightgcn: recall@20 0.1100 +- 0.0100 (3 seeds)" in printed
    assert results_figure.main([str(root), "--metric", "nope", "--output", str(out)]) == 1
