"""Run-directory files: checkpoints never execute code, atomic writes survive kills and full
disks, Ctrl-C stops cleanly, and --resume continues the self-loop exactly (refine on)."""

import ast
import errno
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest
import torch

import slifmr.graphs
from slifmr.checkpoint import (
    CheckpointError,
    TrainingInterrupted,
    atomic_save,
    deferred_interrupts,
    load_checkpoint,
    remove_stale_temporaries,
)
from slifmr.cli import main
from slifmr.config import Config
from slifmr.data.prepare import prepare_data
from slifmr.train import Trainer
from tests.helpers import SMALL_DATA as SMALL
from tests.helpers import small_train_config as _cfg

REPO = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def small_ds():
    return prepare_data(Config(synthetic=SMALL, seed=3))


class _RunsCode:
    """Unpickling this object runs ``touch <marker>``: what a crafted checkpoint does."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _craft(path, marker, **extra):
    torch.save(
        {
            "user": torch.zeros(2, 2),
            "item": torch.zeros(2, 2),
            "epoch": 1,
            "payload": _RunsCode(marker),
            **extra,
        },
        path,
    )


# --------------------------------------------------------------------------- loading
def test_crafted_checkpoint_is_refused_not_run(tmp_path):
    marker = tmp_path / "pwned"
    _craft(tmp_path / "evil.pt", marker)
    with pytest.raises(CheckpointError, match="refused to load"):
        load_checkpoint(str(tmp_path / "evil.pt"))
    assert not marker.exists()
    # the same file does run code through a plain unpickler: the test's payload is real
    torch.load(tmp_path / "evil.pt", weights_only=False)
    assert marker.exists()


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04 truncated"])
def test_unreadable_checkpoint_is_a_clear_error(tmp_path, content):
    p = tmp_path / "bad.pt"
    p.write_bytes(content)
    with pytest.raises(CheckpointError, match="bad.pt: not a readable checkpoint"):
        load_checkpoint(str(p))
    torch.save([1, 2], p)
    with pytest.raises(CheckpointError, match="expected a checkpoint dict"):
        load_checkpoint(str(p))


def test_evaluate_recommend_and_resume_refuse_a_crafted_checkpoint(tmp_path, small_ds, capsys):
    out = tmp_path / "run"
    Trainer(_cfg(epochs=1), small_ds, str(out), log=lambda s: None).fit()
    marker = tmp_path / "pwned"
    _craft(out / "best.pt", marker)
    assert main(["evaluate", "--output", str(out)]) == 2
    assert main(["recommend", "--output", str(out), "--users", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("best.pt: refused to load") == 2
    _craft(out / "last.pt", marker)
    with pytest.raises(CheckpointError, match="last.pt: refused to load"):
        Trainer(_cfg(epochs=2), small_ds, str(out), log=lambda s: None).fit(resume=True)
    tr = Trainer(_cfg(epochs=1), small_ds, str(out), log=lambda s: None)
    with pytest.raises(CheckpointError, match="best.pt: refused to load"):
        tr.test()
    assert not marker.exists()


def test_no_torch_load_in_the_project_can_execute_code():
    """Every torch.load call in the repository passes weights_only=True (literally)."""
    offenders = []
    for path in REPO.rglob("*.py"):
        if any(part.startswith(".") or part in ("build",) for part in path.relative_to(REPO).parts):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "load"
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "torch"
            ):
                safe = any(
                    k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                    for k in node.keywords
                )
                if not safe and path.name != "test_checkpoint.py":
                    offenders.append(f"{path.relative_to(REPO)}:{node.lineno}")
    assert not offenders, offenders


def test_run_checkpoints_load_with_weights_only(tmp_path, small_ds):
    out = tmp_path / "run"
    Trainer(_cfg(epochs=1, feedback_refine=True), small_ds, str(out), log=lambda s: None).fit()
    for name in ("best.pt", "last.pt"):
        st = torch.load(out / name, weights_only=True)
        assert st["epoch"] == 1
    assert torch.load(out / "last.pt", weights_only=True)["selfloop"]["raw_prev"]["indptr"].numel() == 91


# --------------------------------------------------------------------------- writing
def test_atomic_save_on_a_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    atomic_save({"epoch": 1}, str(path))

    def full_disk(obj, f):
        with open(f, "wb") as fh:
            fh.write(b"partial")
        raise RuntimeError(
            "[enforce fail at inline_container.cc] . PytorchStreamWriter failed "
            "writing file data/0: file write failed"
        )

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(CheckpointError, match=r"could not write .*last.pt: .*file write failed"):
        atomic_save({"epoch": 2}, str(path))
    monkeypatch.undo()
    assert load_checkpoint(str(path))["epoch"] == 1
    assert os.listdir(tmp_path) == ["last.pt"]


def test_atomic_write_on_enospc(tmp_path, monkeypatch):
    """An OSError from the file system itself (ENOSPC while renaming) names the path."""
    from slifmr import checkpoint

    path = tmp_path / "metrics.json"
    checkpoint.write_json_atomic({"a": 1}, str(path))

    def no_space(src, dst):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(checkpoint.os, "replace", no_space)
    with pytest.raises(CheckpointError, match="No space left on device"):
        checkpoint.write_json_atomic({"a": 2}, str(path))
    monkeypatch.undo()
    assert json.loads(path.read_text()) == {"a": 1} and os.listdir(tmp_path) == ["metrics.json"]


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path, small_ds):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out = tmp_path / "run"
    out.mkdir()
    (out / f"last.pt.tmp.{dead.pid}").write_bytes(b"torn")
    (out / f"best.pt.tmp.{os.getpid()}").write_bytes(b"ours")  # a live writer's file stays
    assert remove_stale_temporaries(str(out)) == [f"last.pt.tmp.{dead.pid}"]
    (out / f"last.pt.tmp.{dead.pid}").write_bytes(b"torn")
    lines = []
    Trainer(_cfg(epochs=1), small_ds, str(out), log=lines.append).fit()
    assert not (out / f"last.pt.tmp.{dead.pid}").exists()
    assert any("removed 1 temporary file" in x for x in lines)


# --------------------------------------------------------------------------- interrupts
def test_interrupt_during_a_write_is_delivered_after_it():
    done = []
    with pytest.raises(TrainingInterrupted) as exc:
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(0.05)
            done.append(1)
    assert done == [1] and exc.value.signum == signal.SIGINT


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_signal_during_tensorboard_logging_waits_for_it(tmp_path, small_ds, monkeypatch, sig):
    """A signal that arrives while an epoch's TensorBoard scalars are written is delivered after
    them: raised inside the writer, it could leave the writer's queue so that closing it hangs."""
    pytest.importorskip("torch.utils.tensorboard")
    import slifmr.train as train_mod

    real, seen = train_mod.log_epoch, []

    def log_then_finish(writer, rec, *a, **kw):
        if rec["epoch"] == 2:
            os.kill(os.getpid(), sig)
            time.sleep(0.05)  # the handler runs here, inside the logging
        real(writer, rec, *a, **kw)
        seen.append(rec["epoch"])

    monkeypatch.setattr(train_mod, "log_epoch", log_then_finish)
    tr = Trainer(_cfg(epochs=5, tensorboard=True), small_ds, str(tmp_path / "run"), log=lambda s: None)
    with pytest.raises(TrainingInterrupted) as exc:
        tr.fit()
    assert exc.value.signum == sig and seen == [1, 2] and tr._tb is None
    assert load_checkpoint(str(tmp_path / "run" / "last.pt"))["epoch"] == 2


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_stops_cleanly_and_resume_matches_an_uninterrupted_run(tmp_path, sig):
    """A training process stopped by SIGINT / SIGTERM after its second epoch exits 128 + sig
    with last.pt written, and --resume then gives the uninterrupted run's losses."""
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "embed_dim: 16\nbatch_size: 256\nlr: 0.01\nprogress: false\nseed: 3\n"
        "knn_k: 5\nfeedback_k: 5\npatience: 0\nfeedback_refine: true\n"
        f"synthetic: {json.dumps(SMALL)}\n"
    )
    run = tmp_path / "run"
    args = ["train", "--output", str(run), "--config", str(cfg), "--quiet"]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    p = subprocess.Popen(
        [sys.executable, "-m", "slifmr", *args, "--epochs", "200"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    for line in p.stdout:
        if line.startswith("epoch   2"):
            p.send_signal(sig)
            break
    _, err = p.communicate(timeout=120)
    assert p.returncode == 128 + sig, err
    assert "Traceback" not in err and "stopped by" in err
    epochs = load_checkpoint(str(run / "last.pt"))["epoch"]
    assert 2 <= epochs < 200
    assert len((run / "metrics.jsonl").read_text().splitlines()) == epochs
    assert not [f for f in os.listdir(run) if ".tmp." in f]
    # resumed to epochs + 2, against a straight run of as many epochs
    total = str(epochs + 2)
    assert main([*args, "--epochs", total, "--resume"]) == 0
    straight = tmp_path / "straight"
    assert main(["train", "--output", str(straight), "--config", str(cfg), "--quiet", "--epochs", total]) == 0
    la = [json.loads(x) for x in (straight / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    assert [r.get("valid_recall@20") for r in la] == [r.get("valid_recall@20") for r in lb]


# --------------------------------------------------------------------------- self-loop state
def test_resume_with_refine_continues_the_same_run(tmp_path, small_ds, monkeypatch):
    """With feedback_refine the resumed epoch refreshes S(t) from the checkpointed kNN graph
    (knn_refine), exactly as the uninterrupted run did, instead of an exact kNN."""
    calls = {"refine": 0, "exact": 0}
    real_refine, real_knn = slifmr.graphs.sk.knn_refine, slifmr.graphs.sk.knn_graph

    def refine(*a, **kw):
        calls["refine"] += 1
        return real_refine(*a, **kw)

    def exact(*a, **kw):
        calls["exact"] += 1
        return real_knn(*a, **kw)

    monkeypatch.setattr(slifmr.graphs.sk, "knn_refine", refine)
    monkeypatch.setattr(slifmr.graphs.sk, "knn_graph", exact)
    cfg = dict(feedback_refine=True, modalities=[])  # no modality kNN graphs: only S(t) counts
    straight = Trainer(_cfg(epochs=4, **cfg), small_ds, str(tmp_path / "a"), log=lambda s: None)
    ma = straight.fit()
    # epoch 1: no S(0) (no features); epoch 2: the first S(t), exact; epochs 3-4: refined
    assert calls == {"refine": 2, "exact": 1}
    Trainer(_cfg(epochs=2, **cfg), small_ds, str(tmp_path / "b"), log=lambda s: None).fit()
    calls.update(refine=0, exact=0)
    again = Trainer(_cfg(epochs=4, **cfg), small_ds, str(tmp_path / "b"), log=lambda s: None)
    mb = again.fit(resume=True)
    assert calls == {"refine": 2, "exact": 0}
    la = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    assert ma["recall@20"] == mb["recall@20"]


def test_resume_with_refine_and_features(tmp_path, small_ds):
    """The same with S(0) from the features (exact at epoch 1, refined after)."""
    cfg = dict(feedback_refine=True)
    ma = Trainer(_cfg(epochs=3, **cfg), small_ds, str(tmp_path / "a"), log=lambda s: None).fit()
    Trainer(_cfg(epochs=1, **cfg), small_ds, str(tmp_path / "b"), log=lambda s: None).fit()
    mb = Trainer(_cfg(epochs=3, **cfg), small_ds, str(tmp_path / "b"), log=lambda s: None).fit(resume=True)
    la = [json.loads(x) for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x) for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    assert ma["recall@20"] == mb["recall@20"]


def test_corrupted_selfloop_state_is_rejected(tmp_path, small_ds):
    out = tmp_path / "run"
    Trainer(_cfg(epochs=1, feedback_refine=True), small_ds, str(out), log=lambda s: None).fit()
    st = torch.load(out / "last.pt", weights_only=True)
    st["selfloop"]["raw_prev"]["indptr"][-1] += 500
    torch.save(st, out / "last.pt")
    with pytest.raises(ValueError, match="raw_prev"):
        Trainer(_cfg(epochs=2, feedback_refine=True), small_ds, str(out), log=lambda s: None).fit(resume=True)


def test_metrics_say_how_the_run_stopped(tmp_path, small_ds):
    m = Trainer(_cfg(epochs=2), small_ds, str(tmp_path / "cap"), log=lambda s: None).fit()
    assert m["stopped"] == "epoch_cap"
    m = Trainer(
        _cfg(epochs=10, lr=1e-12, patience=2, feedback=False),
        small_ds,
        str(tmp_path / "es"),
        log=lambda s: None,
    ).fit()
    assert m["stopped"] == "early_stop" and m["epochs_run"] < 10
