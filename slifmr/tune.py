"""Hyperparameter search with Optuna: ``slifmr tune`` (``pip install optuna``).

Every trial is a full training run (:class:`slifmr.train.Trainer`) into its own directory,
``STUDY/trials/NNNN`` (config.json, metrics.jsonl, best.pt, last.pt, tb/, curves.png). A trial
reports its validation Recall@20 after every evaluation, and Optuna's pruner (MedianPruner by
default) ends the ones that fall behind the median of the earlier trials at the same epoch. The
objective is the trial's best validation Recall@20, the score the trainer selects its best
epoch by; test metrics are computed for the best trial only, from its best.pt.

The study is stored in SQLite, ``STUDY/study.db``: a search stopped by Ctrl-C, SIGTERM or a
kill resumes when the same command is run again. ``--trials N`` is the number of finished
(completed or pruned) trials the study should hold; trials that were running when the process
died are marked failed and do not count. One process per study directory (a lock file).

Outputs beside study.db: ``best.yaml``, the best trial's whole configuration, ready for
``slifmr train --config STUDY/best.yaml``, and ``best.json`` (its trial number, seed,
parameters, validation score and test metrics, and the counts of trials by state).

The search space is a YAML mapping of configuration keys to distributions::

    lr: {type: float, low: 1.0e-4, high: 1.0e-2, log: true}
    embed_dim: {type: int, low: 32, high: 128, step: 32}
    batch_size: {type: categorical, choices: [2048, 8192]}
    modalities: {type: categorical, choices: [[image, text], [text]]}

Every trial trains with the base configuration's ``seed`` (so trials differ only in their
hyperparameters and share one validation split); it is recorded in the trial's config.json,
in best.yaml and as the trial's user attribute ``seed``. ``seed`` may be searched like any key.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
from collections.abc import Callable

import yaml

from .checkpoint import TrainingInterrupted, interrupts_as_exceptions, write_json_atomic, write_text_atomic
from .config import Config, ConfigError, check_value

__all__ = ["tune", "load_space", "TuneError", "MISSING_OPTUNA"]

MISSING_OPTUNA = (
    "slifmr tune needs optuna, which is not installed: pip install optuna (or pip install 'slifmr[track]')"
)
STUDY_NAME = "slifmr"
# configuration keys that decide the dataset of a run (slifmr.data.prepare.prepare_data)
_DATA_KEYS = ("seed", "valid_fraction", "reorder", "synthetic")
# keys that do not change what a run computes; not compared when a study is resumed
_FREE_KEYS = ("progress", "tensorboard")


class TuneError(RuntimeError):
    """The study cannot run (locked by another process, or made with other settings)."""


# --------------------------------------------------------------------------- search space
def _scalar(v) -> bool:
    return v is None or isinstance(v, (bool, int, float, str))


def load_space(path: str) -> dict:
    """The search space of a YAML file, checked: ``{key: {"type": ..., ...}}`` with
    ``float`` / ``int`` (``low``, ``high``, optional ``log``, ``step``) and ``categorical``
    (``choices``). Bounds and choices are checked against the key's rules in
    :mod:`slifmr.config`. Raises :class:`ConfigError` naming the file and key."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"search space file not found: {path}")
    with open(path, encoding="utf-8") as f:
        try:
            raw = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if not isinstance(raw, dict) or not raw:
        raise ConfigError(
            f"{path}: expected a mapping of configuration keys to distributions, "
            f"e.g. 'lr: {{type: float, low: 1.0e-4, high: 1.0e-2, log: true}}'"
        )
    space = {}
    for key, spec in raw.items():
        where = f"{path}: {key}"
        if key in _FREE_KEYS:
            raise ConfigError(f"{where}: not a hyperparameter")
        if not isinstance(spec, dict) or spec.get("type") not in ("float", "int", "categorical"):
            raise ConfigError(
                f"{where}: expected a mapping with type: float | int | categorical, got {spec!r}"
            )
        kind = spec["type"]
        allowed = {
            "float": {"type", "low", "high", "log", "step"},
            "int": {"type", "low", "high", "log", "step"},
            "categorical": {"type", "choices"},
        }[kind]
        extra = sorted(set(spec) - allowed)
        if extra:
            raise ConfigError(
                f"{where}: unknown field(s) {extra} for type {kind} (allowed: {sorted(allowed)})"
            )
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{where}: categorical needs a non-empty list 'choices'")
            space[key] = {"type": kind, "choices": [check_value(key, c, where) for c in choices]}
            continue
        num = float if kind == "float" else int
        try:
            low, high = num(spec["low"]), num(spec["high"])
            step = None if spec.get("step") is None else num(spec["step"])
        except KeyError as exc:
            raise ConfigError(f"{where}: {kind} needs '{exc.args[0]}'") from None
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: low, high and step must be numbers of type {kind}") from None
        if kind == "int" and any(float(spec[b]) != int(spec[b]) for b in ("low", "high")):
            raise ConfigError(f"{where}: int bounds must be integers")
        log = spec.get("log", False)
        if not isinstance(log, bool):
            raise ConfigError(f"{where}: log must be true or false")
        if not (low <= high) or (log and low <= 0) or (step is not None and step <= 0):
            raise ConfigError(
                f"{where}: need low <= high (and low > 0 with log, step > 0), got "
                f"low {low}, high {high}, step {step}"
            )
        if log and step not in (None, 1):
            raise ConfigError(f"{where}: step cannot be combined with log")
        for bound in (low, high):
            check_value(key, bound, where)
        space[key] = {"type": kind, "low": low, "high": high, "log": log, "step": step}
    return space


def _suggest(trial, space: dict) -> dict:
    """The configuration values of one trial."""
    params = {}
    for key, s in space.items():
        if s["type"] == "float":
            params[key] = trial.suggest_float(key, s["low"], s["high"], log=s["log"], step=s["step"])
        elif s["type"] == "int":
            params[key] = trial.suggest_int(key, s["low"], s["high"], log=s["log"], step=s["step"] or 1)
        else:
            # Optuna's choices are scalars: lists and mappings (modalities) go as their JSON
            labels = [c if _scalar(c) else json.dumps(c, sort_keys=True) for c in s["choices"]]
            picked = trial.suggest_categorical(key, labels)
            params[key] = s["choices"][labels.index(picked)]
    return params


# --------------------------------------------------------------------------- the study
def _score(rec: dict) -> float | None:
    """The validation score of an epoch record: Recall@20 (the trainer's selection)."""
    v = rec.get("valid_recall@20")
    if v is None:
        ks = [int(k.split("@")[1]) for k in rec if k.startswith("valid_recall@")]
        v = rec.get(f"valid_recall@{max(ks)}") if ks else None
    return v


@contextlib.contextmanager
def _study_lock(output: str):
    import fcntl

    path = os.path.join(output, "tune.lock")
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise TuneError(f"another slifmr tune is running on {output} (lock {path})") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _comparable(cfg: Config) -> dict:
    return {k: v for k, v in cfg.to_dict().items() if k not in _FREE_KEYS}


def _base_differences(stored: dict, current: dict) -> list:
    """Keys whose values differ between a study's stored base config and this run's. A key the
    stored one lacks counts only when this run moves it off its default: a newer slifmr may
    have added the key (its default behaving as before), and the study then resumes."""
    current = json.loads(json.dumps(current))
    defaults = json.loads(json.dumps(_comparable(Config())))
    keys = sorted(set(stored) | set(current))
    return [
        k
        for k in keys
        if stored.get(k, defaults.get(k)) != current.get(k, defaults.get(k))
        or (k in stored and k not in current)
    ]


def tune(
    base: Config,
    space: dict,
    trials: int,
    output: str,
    data: str | None = None,
    *,
    pruner: str = "median",
    prune_startup: int = 5,
    prune_warmup: int = 5,
    log: Callable[[str], None] = print,
) -> dict:
    """Run (or resume) the study in ``output`` until it holds ``trials`` finished trials; write
    best.yaml and best.json. Returns best.json's content (``{"best": None, ...}`` while no trial
    has completed).

    Args:
        base: the configuration every trial starts from (the searched keys replace its values).
        space: a search space (:func:`load_space`).
        trials: finished (completed + pruned) trials the study should hold.
        output: the study directory.
        data: the dataset (as ``slifmr train --data``); None: synthetic data from ``base``.
        pruner: "median" (``optuna.pruners.MedianPruner``) or "none".
        prune_startup: trials that must complete before any is pruned.
        prune_warmup: epochs every trial runs before it can be pruned.
    """
    try:
        import optuna
        from optuna.trial import TrialState
    except ImportError:
        raise ConfigError(MISSING_OPTUNA) from None
    from .data.prepare import prepare_data
    from .train import Trainer

    if trials < 1:
        raise ConfigError(f"--trials: expected an integer >= 1, got {trials}")
    os.makedirs(output, exist_ok=True)
    with _study_lock(output):
        storage = "sqlite:///" + os.path.abspath(os.path.join(output, "study.db"))
        study = optuna.create_study(
            study_name=STUDY_NAME, storage=storage, direction="maximize", load_if_exists=True
        )
        base_config = _comparable(base)
        settings = {"space": space, "base_config": base_config, "data": data}
        if study.user_attrs:
            diff = [
                k
                for k, v in settings.items()
                if k != "base_config" and study.user_attrs.get(k) != json.loads(json.dumps(v))
            ]
            keys = _base_differences(study.user_attrs.get("base_config") or {}, base_config)
            if keys:
                diff.append(f"base config ({', '.join(keys)})")
            if diff:
                raise TuneError(
                    f"the study in {output} was started with a different "
                    f"{' and '.join(d.replace('_', ' ') for d in diff)}; rerun the "
                    f"command that started it, or use another --output"
                )
        else:
            for k, v in settings.items():
                study.set_user_attr(k, v)
        # one process per study (the lock): a trial still RUNNING was cut short by a kill
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)
            log(f"trial {t.number} was interrupted in an earlier run: marked failed")
        # a fresh sampler seed per session: a resumed search does not repeat the random start
        study.sampler = optuna.samplers.TPESampler(seed=(base.seed + len(study.trials)) % 2**32)
        study.pruner = (
            optuna.pruners.MedianPruner(n_startup_trials=prune_startup, n_warmup_steps=prune_warmup)
            if pruner == "median"
            else optuna.pruners.NopPruner()
        )

        def finished() -> int:
            return len(study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED)))

        cache: dict = {}

        def dataset(cfg: Config):
            key = json.dumps({k: getattr(cfg, k) for k in _DATA_KEYS}, sort_keys=True)
            if key not in cache:
                cache.clear()
                cache[key] = prepare_data(cfg, data)
            return cache[key]

        done = finished()
        log(
            f"study {os.path.join(output, 'study.db')}: {done} of {trials} trials finished"
            + (f"; running {trials - done} more" if done < trials else "")
        )
        with interrupts_as_exceptions():  # SIGTERM between trials: the same clean stop
            while finished() < trials:
                trial = study.ask()
                n = trial.number
                trial_dir = os.path.join(output, "trials", f"{n:04d}")
                try:
                    params = _suggest(trial, space)
                    cfg = base.updated(progress=False, **params)
                    trial.set_user_attr("seed", cfg.seed)
                    trial.set_user_attr("config", cfg.to_dict())
                    trial.set_user_attr("output", trial_dir)
                    log(f"trial {n}: {json.dumps(params, sort_keys=True)} (seed {cfg.seed})")
                    shutil.rmtree(trial_dir, ignore_errors=True)

                    def report(epoch: int, rec: dict, trial=trial) -> bool:
                        score = _score(rec)
                        if score is None or not math.isfinite(score):
                            return False
                        trial.report(score, epoch)
                        return trial.should_prune()

                    trainer = Trainer(
                        cfg,
                        dataset(cfg),
                        trial_dir,
                        data_source=data,
                        # mypy cannot type a lambda whose default binds the trial number
                        log=lambda s, n=n: log(f"  [trial {n}] {s}"),  # type: ignore[misc]
                        on_evaluation=report,
                    )
                    best = trainer.train()
                except BaseException as exc:
                    study.tell(trial, state=TrialState.FAIL)
                    if isinstance(exc, (KeyboardInterrupt, TrainingInterrupted)):
                        log(
                            f"trial {n} interrupted: marked failed; rerun the same command to "
                            f"continue the search"
                        )
                    else:
                        log(f"trial {n} failed: {type(exc).__name__}: {exc}")
                    raise
                if trainer.stopped_by_callback:
                    study.tell(trial, state=TrialState.PRUNED)
                    log(
                        f"trial {n} pruned after epoch {trainer.epoch} (best valid recall@20 "
                        f"{best['recall@20']:.4f})"
                    )
                else:
                    study.tell(trial, best["recall@20"])
                    log(
                        f"trial {n} complete: valid recall@20 {best['recall@20']:.4f} at epoch "
                        f"{best['epoch']} (best so far: trial {study.best_trial.number}, "
                        f"{study.best_value:.4f})"
                    )
        return _finish(study, output, data, dataset, log)


def _finish(study, output: str, data: str | None, dataset, log) -> dict:
    """best.yaml, the best trial's test metrics (from its best.pt) and best.json."""
    from optuna.trial import TrialState

    from .train import Trainer

    counts = {
        s.name.lower(): len(study.get_trials(deepcopy=False, states=(s,)))
        for s in (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    }
    summary: dict[str, object] = {"study": os.path.join(output, "study.db"), "trials": counts, "best": None}
    if not counts["complete"]:
        log("no trial has completed yet: no best.yaml")
        write_json_atomic(summary, os.path.join(output, "best.json"))
        return summary
    best = study.best_trial
    cfg = Config(**best.user_attrs["config"])
    values = {k: v for k, v in cfg.to_dict().items() if k != "progress"}
    header = (
        f"# slifmr tune: best of {counts['complete']} completed trials in "
        f"{summary['study']}\n# trial {best.number}, validation recall@20 {best.value:.6f}, "
        f"seed {cfg.seed}; train it with: slifmr train --config <this file>"
        + (f" --data {data}" if data else "")
        + "\n"
    )
    write_text_atomic(
        header + yaml.safe_dump(values, sort_keys=False, default_flow_style=None),
        os.path.join(output, "best.yaml"),
    )
    # test metrics of the best trial only: its best.pt, on the test split
    trial_dir = best.user_attrs["output"]
    trainer = Trainer(
        cfg, dataset(cfg), trial_dir, data_source=data, log=lambda s: log(f"  [trial {best.number}] {s}")
    )
    if not trainer.restore():
        raise TuneError(f"{trial_dir}/last.pt is missing: cannot evaluate the best trial")
    test = trainer.test()
    summary["best"] = {
        "trial": best.number,
        "output": trial_dir,
        "seed": cfg.seed,
        "params": {k: getattr(cfg, k) for k in study.user_attrs["space"]},
        "valid_recall@20": best.value,
        "test": {k: v for k, v in test.items() if "@" in k},
        "best_epoch": test["best_epoch"],
        "epochs_run": test["epochs_run"],
    }
    write_json_atomic(summary, os.path.join(output, "best.json"))
    log(
        f"best: trial {best.number}, valid recall@20 {best.value:.4f}, test recall@20 "
        f"{test['recall@20']:.4f}; wrote {os.path.join(output, 'best.yaml')} and best.json "
        f"({counts['complete']} complete, {counts['pruned']} pruned, {counts['fail']} failed)"
    )
    return summary
