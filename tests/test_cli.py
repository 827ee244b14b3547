"""The slifmr command: train / evaluate / recommend, configuration files and flags."""

import json
import subprocess
import sys

import pytest

from slifmr.cli import _overrides, build_parser, main

TINY = (
    '{"num_users": 80, "num_items": 60, "num_clusters": 3, "mean_interactions": 8, '
    '"modalities": {"text": 6}, "kg_relations": 1}'
)


def test_train_evaluate_recommend(tmp_path, capsys):
    out = tmp_path / "run"
    rc = main(
        [
            "train",
            "--output",
            str(out),
            "--epochs",
            "2",
            "--quiet",
            "--set",
            f"synthetic={TINY}",
            "--set",
            "embed_dim=8",
            "--set",
            "batch_size=128",
        ]
    )
    assert rc == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert {"recall@20", "ndcg@20", "recall@10", "ndcg@10"} <= set(metrics)
    assert metrics["epochs_run"] == 2
    capsys.readouterr()
    assert main(["evaluate", "--output", str(out)]) == 0
    again = json.loads((out / "metrics.json").read_text())
    assert again["recall@20"] == pytest.approx(metrics["recall@20"])
    assert main(["evaluate", "--output", str(out), "--split", "valid"]) == 0
    assert (out / "metrics_valid.json").is_file()
    capsys.readouterr()
    assert main(["recommend", "--output", str(out), "--users", "0", "5", "--k", "4"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert [r["user"] for r in lines] == [0, 5] and all(len(r["items"]) == 4 for r in lines)
    assert all(r["scores"] == sorted(r["scores"], reverse=True) for r in lines)
    assert main(["recommend", "--output", str(out), "--users", "100000"]) == 2
    assert "out of range" in capsys.readouterr().err


def test_evaluate_without_run_fails_clearly(tmp_path):
    with pytest.raises(SystemExit, match="train a model"):
        main(["evaluate", "--output", str(tmp_path / "none")])


def test_flags_map_to_config_switches():
    p = build_parser()
    a = p.parse_args(
        [
            "train",
            "--output",
            "x",
            "--no-feedback",
            "--no-kg",
            "--no-consistency",
            "--modalities",
            "image",
            "--model",
            "slifmr",
            "--epochs",
            "3",
            "--set",
            "lr=0.01",
            "--set",
            'feedback_in=["kg"]',
        ]
    )
    ov = _overrides(a)
    assert ov == {
        "feedback": False,
        "use_kg": False,
        "sc_weight": 0.0,
        "modalities": ["image"],
        "model": "slifmr",
        "epochs": 3,
        "lr": 0.01,
        "feedback_in": ["kg"],
    }
    assert _overrides(p.parse_args(["train", "--output", "x", "--no-modalities"]))["modalities"] == []


def test_bad_data_dir_is_a_clear_error(tmp_path, capsys):
    assert main(["train", "--output", str(tmp_path / "o"), "--data", str(tmp_path / "missing")]) == 2
    assert "not found" in capsys.readouterr().err


def test_python_dash_m_help():
    r = subprocess.run(
        [sys.executable, "-m", "slifmr", "--help"], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0 and "train" in r.stdout and "recommend" in r.stdout
