"""slifmr tune (Optuna): the search space, a pruned search, best.yaml reproducing its trial,
resume after a kill and after SIGTERM, and the trainer's on_evaluation hook it is built on."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from slifmr.cli import main
from slifmr.config import Config, ConfigError, load_config
from slifmr.data.prepare import prepare_data
from slifmr.train import Trainer
from slifmr.tune import load_space

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = {
    "num_users": 60,
    "num_items": 40,
    "num_clusters": 3,
    "mean_interactions": 8,
    "modalities": {"text": 6},
    "kg_relations": 1,
}
SPACE = """\
lr: {type: categorical, choices: [0.05, 1.0e-5]}
reg_weight: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
"""


def _base_args(tmp_path, epochs):
    return [
        "--model",
        "lightgcn",
        "--space",
        str(tmp_path / "space.yaml"),
        "--set",
        f"synthetic={json.dumps(TINY)}",
        "--set",
        "embed_dim=8",
        "--set",
        "batch_size=128",
        "--set",
        f"epochs={epochs}",
        "--set",
        "patience=0",
    ]


def _study(out):
    return optuna.load_study(study_name="slifmr", storage=f"sqlite:///{out}/study.db")


def test_on_evaluation_stops_training(tmp_path):
    cfg = Config(
        model="lightgcn", embed_dim=8, batch_size=128, epochs=5, patience=0, progress=False, synthetic=TINY
    )
    seen = []

    def hook(epoch, rec):
        seen.append((epoch, rec["valid_recall@20"]))
        return epoch == 2

    t = Trainer(cfg, prepare_data(cfg), str(tmp_path / "run"), log=lambda s: None, on_evaluation=hook)
    m = t.fit()
    assert [e for e, _ in seen] == [1, 2] and t.epoch == 2
    assert m["stopped"] == "callback" and m["epochs_run"] == 2


def test_search_space(tmp_path):
    p = tmp_path / "s.yaml"
    p.write_text(
        "lr: {type: float, low: 1e-4, high: 1.0e-2, log: true}\n"
        "embed_dim: {type: int, low: 16, high: 64, step: 16}\n"
        "modalities: {type: categorical, choices: [[image, text], [text]]}\n"
    )
    space = load_space(str(p))
    assert space["lr"] == {"type": "float", "low": 1e-4, "high": 1e-2, "log": True, "step": None}
    assert space["embed_dim"]["step"] == 16 and space["modalities"]["choices"][1] == ["text"]
    for text, match in [
        ("lrr: {type: float, low: 0.1, high: 1}\n", "unknown configuration key 'lrr'"),
        ("lr: {type: float, low: 0.1, high: 0.01}\n", "low <= high"),
        ("lr: {type: float, low: 0, high: 0.1, log: true}\n", "low > 0"),
        ("lr: {type: categorical, choices: [0.1, -1]}\n", "config key 'lr'"),
        ("lr: 0.1\n", "expected a mapping with type"),
        ("lr: {type: float, high: 0.1}\n", "needs 'low'"),
        ("lr: {type: float, low: 0.1, high: 1, lg: true}\n", "unknown field"),
    ]:
        p.write_text(text)
        with pytest.raises(ConfigError, match=match):
            load_space(str(p))


def test_repository_spaces_load():
    import glob

    files = glob.glob(os.path.join(ROOT, "configs", "spaces", "*.yaml"))
    assert files
    for f in files:
        assert load_space(f)


def test_pruned_search_and_best_yaml_reproduces_its_trial(tmp_path, capsys):
    (tmp_path / "space.yaml").write_text(SPACE)
    out = tmp_path / "study"
    out.mkdir()
    # the first two trials fixed (Optuna's enqueue_trial on the study the command will load):
    # a good learning rate, then one too small to learn, which falls below the first trial's
    # validation Recall@20 at epoch 1 and is pruned; the third is sampled
    study = optuna.create_study(
        study_name="slifmr", storage=f"sqlite:///{out}/study.db", direction="maximize"
    )
    study.enqueue_trial({"lr": 0.05})
    study.enqueue_trial({"lr": 1e-5})
    args = [
        "tune",
        "--output",
        str(out),
        "--trials",
        "3",
        "--prune-startup",
        "1",
        "--prune-warmup",
        "0",
    ] + _base_args(tmp_path, epochs=5)
    assert main(args) == 0
    printed = capsys.readouterr().out
    trials = _study(out).trials
    assert len(trials) == 3 and trials[0].state == TrialState.COMPLETE
    assert trials[1].state == TrialState.PRUNED and "trial 1 pruned after epoch 1" in printed
    pruned_log = (out / "trials" / "0001" / "metrics.jsonl").read_text().splitlines()
    assert len(pruned_log) == 1
    for t in trials:
        assert t.user_attrs["seed"] == 2025
        run = json.loads((out / "trials" / f"{t.number:04d}" / "config.json").read_text())
        assert run["config"]["seed"] == 2025 and run["config"]["lr"] == t.params["lr"]
        assert any(
            f.startswith("events.out.tfevents") for f in os.listdir(out / "trials" / f"{t.number:04d}" / "tb")
        )
    best = json.loads((out / "best.json").read_text())
    study = _study(out)
    assert best["best"]["trial"] == study.best_trial.number
    counts = best["trials"]
    assert counts["fail"] == 0 and counts["complete"] + counts["pruned"] == 3 and counts["pruned"] >= 1
    # test metrics of the best trial only
    assert "recall@20" in best["best"]["test"]
    tested = [t.number for t in trials if (out / "trials" / f"{t.number:04d}" / "metrics.json").exists()]
    assert tested == [study.best_trial.number]
    # best.yaml is a configuration file; training it again gives the trial's validation score
    cfg = load_config(str(out / "best.yaml"))
    assert cfg.lr == study.best_trial.params["lr"] and cfg.model == "lightgcn"
    assert (
        main(["train", "--config", str(out / "best.yaml"), "--output", str(tmp_path / "again"), "--quiet"])
        == 0
    )
    again = [json.loads(x) for x in (tmp_path / "again" / "metrics.jsonl").read_text().splitlines()]
    trial = [
        json.loads(x)
        for x in (out / "trials" / f"{study.best_trial.number:04d}" / "metrics.jsonl")
        .read_text()
        .splitlines()
    ]
    assert [r["valid_recall@20"] for r in again] == [r["valid_recall@20"] for r in trial]
    assert max(r["valid_recall@20"] for r in again) == pytest.approx(study.best_value, abs=1e-6)
    # the same command again: nothing left to run; another space: refused
    capsys.readouterr()
    assert main(args) == 0
    assert "3 of 3 trials finished" in capsys.readouterr().out and len(_study(out).trials) == 3
    (tmp_path / "space.yaml").write_text("lr: {type: float, low: 0.001, high: 0.1}\n")
    assert main(args) == 2
    assert "different space" in capsys.readouterr().err


def test_a_study_resumes_when_a_newer_version_added_a_config_key():
    """A base config stored without a key that slifmr has since added is the same config when
    this run leaves the key at its default; any real difference is named."""
    from slifmr.tune import _base_differences, _comparable

    current = _comparable(Config(model="lightgcn", lr=0.01))
    stored = {k: v for k, v in current.items() if k != "neg_candidates"}
    assert _base_differences(stored, current) == []
    moved = _comparable(Config(model="lightgcn", lr=0.01, neg_candidates=4))
    assert _base_differences(stored, moved) == ["neg_candidates"]
    assert _base_differences(stored, _comparable(Config(model="lightgcn", lr=0.02))) == ["lr"]
    assert _base_differences({**current, "gone": 1}, current) == ["gone"]


def _wait_for(path, proc, timeout=120.0):
    t0 = time.time()
    while not os.path.exists(path):
        assert proc.poll() is None, proc.communicate()
        assert time.time() - t0 < timeout, f"{path} did not appear"
        time.sleep(0.05)


@pytest.mark.slow
def test_resume_after_kill_and_sigterm(tmp_path, capsys):
    """A search killed (SIGKILL) mid-trial, then stopped by SIGTERM mid-trial, continues when
    the same command is rerun: the cut trials are failed, the finished ones count."""
    (tmp_path / "space.yaml").write_text(SPACE)
    out = tmp_path / "study"
    args = ["tune", "--output", str(out), "--trials", "3", "--pruner", "none"] + _base_args(
        tmp_path, epochs=40
    )
    cmd = [sys.executable, "-m", "slifmr"] + args
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_for(out / "trials" / "0001" / "metrics.jsonl", proc)  # trial 0 done, trial 1 training
    proc.kill()
    proc.wait()
    states = [t.state for t in _study(out).trials]
    assert states == [TrialState.COMPLETE, TrialState.RUNNING]

    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    _wait_for(out / "trials" / "0002" / "metrics.jsonl", proc)
    proc.send_signal(signal.SIGTERM)
    printed = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 128 + signal.SIGTERM, printed
    assert "trial 1 was interrupted in an earlier run: marked failed" in printed
    assert "trial 2 interrupted: marked failed" in printed
    states = [t.state for t in _study(out).trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL]

    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "1 of 3 trials finished; running 2 more" in printed
    trials = _study(out).trials
    assert [t.state for t in trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.FAIL,
        TrialState.COMPLETE,
        TrialState.COMPLETE,
    ]
    best = json.loads((out / "best.json").read_text())
    assert best["trials"] == {"complete": 3, "pruned": 0, "fail": 2}
    assert (out / "best.yaml").is_file()
