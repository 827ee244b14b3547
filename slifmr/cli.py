"""The ``slifmr`` command: ``train``, ``evaluate``, ``recommend``, ``tune``.

Examples::

    slifmr train --output runs/quickstart                      # synthetic data
    slifmr train --data ml-1m-kg-mm --output runs/ml1m --epochs 40
    slifmr train --data ml-1m-kg-mm --output runs/ml1m-static --no-feedback
    slifmr train --data ml-1m-kg-mm --output runs/lgcn --model lightgcn
    slifmr evaluate --output runs/ml1m                          # test metrics of best.pt
    slifmr recommend --output runs/ml1m --users 0 1 2 --k 10
    slifmr tune --data ml-1m-kg-mm --model lightgcn --space space.yaml --trials 20
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

from slifmr_kernels.backends import BackendUnavailable

from .checkpoint import CheckpointError, TrainingInterrupted, load_checkpoint, require_keys, write_json_atomic
from .config import Config, ConfigError, check_runtime, check_value, load_config, parse_override
from .data import DataFormatError

__all__ = ["main", "build_parser"]


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--data", default=None, help="dataset directory or name under $SLIFMR_DATA (default: synthetic data)"
    )
    p.add_argument("--output", required=True, help="run directory (checkpoints, logs, metrics.json)")
    p.add_argument("--config", default=None, help="YAML or JSON configuration file")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one configuration key (repeatable), e.g. --set lr=0.002",
    )


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="slifmr", description="SLIF-MR multimodal graph recommender")
    sub = ap.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a model, evaluate it on test, write OUTPUT/metrics.json")
    _add_common(t)
    t.add_argument("--model", choices=["slifmr", "lightgcn", "freedom", "lattice"], default=None)
    t.add_argument("--epochs", type=int, default=None)
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--resume", action="store_true", help="continue from OUTPUT/last.pt")
    t.add_argument("--no-feedback", action="store_true", help="static graphs (no self-loop)")
    t.add_argument("--no-kg", action="store_true", help="drop the knowledge-graph view")
    t.add_argument("--no-modalities", action="store_true", help="drop every modality view")
    t.add_argument(
        "--modalities", default=None, help="comma-separated modality names to use (e.g. image,text)"
    )
    t.add_argument("--no-consistency", action="store_true", help="drop the semantic-consistency loss")
    t.add_argument("--quiet", action="store_true", help="no progress bars")

    e = sub.add_parser("evaluate", help="test metrics of OUTPUT/best.pt")
    e.add_argument("--output", required=True)
    e.add_argument("--data", default=None, help="dataset (default: the one the run was trained on)")
    e.add_argument("--split", choices=["test", "valid"], default="test")

    r = sub.add_parser("recommend", help="top-k items for some users from OUTPUT/best.pt")
    r.add_argument("--output", required=True)
    r.add_argument("--data", default=None, help="dataset (default: the one the run was trained on)")
    r.add_argument("--users", type=int, nargs="+", required=True)
    r.add_argument("--k", type=int, default=10)
    r.add_argument("--include-seen", action="store_true", help="do not exclude known items")

    u = sub.add_parser(
        "tune",
        help="hyperparameter search with Optuna (pip install optuna): "
        "every trial a training run, pruned on validation Recall@20; resumable",
    )
    u.add_argument(
        "--data", default=None, help="dataset directory or name under $SLIFMR_DATA (default: synthetic data)"
    )
    u.add_argument("--model", choices=["slifmr", "lightgcn", "freedom", "lattice"], default=None)
    u.add_argument(
        "--space",
        required=True,
        help="YAML search space: KEY: {type: float|int|categorical, low, high, log, step | choices}",
    )
    u.add_argument(
        "--trials",
        type=int,
        required=True,
        help="finished (completed or pruned) trials the study should hold",
    )
    u.add_argument(
        "--output",
        default=None,
        help="study directory (default runs/tune/<data>-<model>): study.db, trials/, "
        "best.yaml, best.json; rerun the same command to resume",
    )
    u.add_argument("--config", default=None, help="base configuration file (YAML or JSON)")
    u.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one base configuration key (repeatable)",
    )
    u.add_argument("--pruner", choices=["median", "none"], default="median")
    u.add_argument(
        "--prune-startup", type=int, default=5, help="trials that complete before any is pruned (default 5)"
    )
    u.add_argument(
        "--prune-warmup",
        type=int,
        default=5,
        help="epochs every trial runs before it can be pruned (default 5)",
    )
    return ap


def _overrides(args) -> dict:
    """The configuration keys the command line sets, each checked against its declared type
    (``--set`` values are parsed by that type); a bad one raises ConfigError naming the option."""
    ov = {}
    for item in args.set:
        k, v = parse_override(item)
        ov[k] = v
    for key in ("model", "epochs", "seed"):
        if getattr(args, key, None) is not None:
            ov[key] = check_value(key, getattr(args, key), f"--{key}")
    if getattr(args, "no_feedback", False):
        ov["feedback"] = False
    if getattr(args, "no_kg", False):
        ov["use_kg"] = False
    if getattr(args, "no_modalities", False):
        ov["modalities"] = []
    if getattr(args, "modalities", None) is not None:
        ov["modalities"] = [m for m in args.modalities.split(",") if m]
    if getattr(args, "no_consistency", False):
        ov["sc_weight"] = 0.0
    if getattr(args, "quiet", False):
        ov["progress"] = False
    return ov


def _load_run(output: str, data: str | None):
    """Config, dataset and best checkpoint of a finished run."""
    from .data.prepare import prepare_data

    cpath = os.path.join(output, "config.json")
    bpath = os.path.join(output, "best.pt")
    for p in (cpath, bpath):
        if not os.path.isfile(p):
            raise SystemExit(f"{p} not found: train a model into {output} first")
    cfg, saved = _saved_config(cpath)
    # best.pt's rows are in the dataset's original ids: no relabelling (Config.reorder) here
    ds = prepare_data(cfg.updated(reorder="none"), data if data is not None else saved.get("data"))
    best = load_checkpoint(bpath)  # tensors and plain containers only: never runs code
    require_keys(best, bpath, ("user", "item", "epoch"))
    if best["user"].shape[0] != ds.num_users or best["item"].shape[0] != ds.num_items:
        raise SystemExit(
            f"{bpath}: embeddings for {best['user'].shape[0]} users / "
            f"{best['item'].shape[0]} items do not match the dataset "
            f"({ds.num_users} / {ds.num_items})"
        )
    return cfg, ds, best


def _saved_config(cpath: str):
    """``(Config, the whole file)`` of a run's ``config.json``, every key checked as a
    configuration file's are; a damaged file raises ConfigError naming it."""
    try:
        with open(cpath, encoding="utf-8") as f:
            saved = json.load(f)
    except (OSError, ValueError, RecursionError) as exc:  # JSONDecodeError, bad UTF-8
        raise ConfigError(f"{cpath}: not a readable run configuration ({exc})") from None
    if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
        raise ConfigError(f"{cpath}: expected a JSON object with a 'config' mapping")
    if not isinstance(saved.get("data"), (str, type(None))):
        raise ConfigError(f"{cpath}: 'data' must be a dataset path or null")
    values = {k: check_value(k, v, cpath) for k, v in saved["config"].items()}
    return Config(**values), saved


def _cmd_train(args) -> int:
    from .data.prepare import prepare_data
    from .train import Trainer

    cfg = load_config(args.config, _overrides(args))
    check_runtime(cfg)  # the device exists and the backend runs on it, before any data is read
    ds = prepare_data(cfg, args.data)
    trainer = Trainer(cfg, ds, args.output, data_source=args.data)
    m = trainer.fit(resume=args.resume)
    print(
        json.dumps(
            {
                k: m[k]
                for k in m
                if "@" in k or k in ("best_epoch", "epochs_run", "seconds_per_epoch", "rebuild_share")
            },
            indent=2,
            sort_keys=True,
        )
    )
    print(f"wrote {os.path.join(args.output, 'metrics.json')}")
    return 0


def _cmd_tune(args) -> int:
    from .tune import TuneError, load_space, tune

    cfg = load_config(args.config, _overrides(args))
    check_runtime(cfg)
    space = load_space(args.space)
    output = args.output or os.path.join(
        "runs",
        "tune",
        f"{os.path.basename(os.path.normpath(args.data)) if args.data else 'synthetic'}-{cfg.model}",
    )
    try:
        tune(
            cfg,
            space,
            args.trials,
            output,
            args.data,
            pruner=args.pruner,
            prune_startup=args.prune_startup,
            prune_warmup=args.prune_warmup,
        )
    except TuneError as exc:
        return _fail(str(exc))
    except KeyboardInterrupt as exc:  # SIGINT between two trials' epochs
        raise TrainingInterrupted(getattr(exc, "signum", 2)) from None
    return 0


def _cmd_evaluate(args) -> int:
    from .evaluate import rank_metrics

    cfg, ds, best = _load_run(args.output, args.data)
    train = ds.interaction_matrix("train")
    if args.split == "test":
        truth, exclude = ds.interaction_matrix("test"), (train + ds.interaction_matrix("valid")).tocsr()
    else:
        truth, exclude = ds.interaction_matrix("valid"), train
    m = rank_metrics(best["user"], best["item"], truth, exclude, cfg.eval_ks, backend=cfg.backend)
    m.update({"model": cfg.model, "best_epoch": int(best["epoch"]), "split": args.split})
    out = os.path.join(args.output, "metrics.json" if args.split == "test" else "metrics_valid.json")
    if args.split == "test" and os.path.isfile(out):
        # keep the run statistics that training wrote next to the metrics
        with open(out, encoding="utf-8") as f:
            old = json.load(f)
        old.update(m)
        m = old
    write_json_atomic(m, out)
    print(json.dumps({k: v for k, v in m.items() if "@" in k}, indent=2, sort_keys=True))
    print(f"wrote {out}")
    return 0


def _cmd_recommend(args) -> int:
    from .evaluate import recommend

    cfg, ds, best = _load_run(args.output, args.data)
    users = np.asarray(args.users, dtype=np.int64)
    bad = users[(users < 0) | (users >= ds.num_users)]
    if bad.size:
        return _fail(f"--users: ids out of range [0, {ds.num_users}): {bad.tolist()}")
    if args.k < 1:
        return _fail(f"--k: expected an integer >= 1, got {args.k}")
    exclude = (
        None
        if args.include_seen
        else (ds.interaction_matrix("train") + ds.interaction_matrix("valid")).tocsr()
    )
    items, scores = recommend(best["user"], best["item"], users, args.k, exclude, backend=cfg.backend)
    for u, it, sc in zip(users.tolist(), items, scores):
        keep = it >= 0
        print(
            json.dumps(
                {"user": u, "items": it[keep].tolist(), "scores": [round(float(s), 5) for s in sc[keep]]}
            )
        )
    return 0


def _fail(message: str) -> int:
    """Report a rejected input as argparse reports a bad option: one line, exit status 2."""
    print(f"slifmr: error: {' '.join(str(message).splitlines())}", file=sys.stderr)
    return 2


def main(argv: list | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {
            "train": _cmd_train,
            "evaluate": _cmd_evaluate,
            "recommend": _cmd_recommend,
            "tune": _cmd_tune,
        }[args.command](args)
    except (FileNotFoundError, DataFormatError, CheckpointError, ConfigError) as exc:
        return _fail(str(exc))
    except BackendUnavailable as exc:
        # a backend named in the configuration that cannot serve one of the ops it is asked for
        return _fail(f"config key 'backend': {exc}")
    except TrainingInterrupted as exc:
        # the trainer has said what is on disk; 128 + the signal, as a shell reports it
        print(f"slifmr: stopped by {exc}", file=sys.stderr)
        return 128 + exc.signum


if __name__ == "__main__":
    sys.exit(main())
