"""Run configuration: one dataclass, loadable from YAML or JSON, every component a switch.

Ablations are one key each: ``feedback: false`` (static graphs), ``use_kg: false``,
``modalities: []`` (or a subset), ``sc_weight: 0`` (no semantic-consistency loss).
``model: lightgcn`` switches every auxiliary view off.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from slifmr_kernels.backends import BACKENDS

from .data.reorder import REORDER_MODES
from .data.synthetic import check_synthetic_params

__all__ = ["Config", "ConfigError", "load_config", "check_value", "parse_override", "check_runtime"]

# Integer keys are counts, sizes and thresholds that numpy and torch take as C ints.
_INT_MAX = 2**31 - 1
# torch.manual_seed and numpy's generators take any seed in [0, 2^63).
_SEED_MAX = 2**63 - 1
# Keys that size memory or threads per node get a ceiling far above any useful value, so that a
# typo (embed_dim=64000000, num_threads=10**8) is an error naming the key, not a failed
# allocation of hundreds of GB or a crash while torch starts 10^8 threads.
_DIM_MAX = 4096  # embed_dim: the embedding tables are (users + entities) x embed_dim
_LAYERS_MAX = 64  # propagation layers: every layer's output is kept for the layer mean
_THREADS_MAX = 1024  # num_threads: passed to torch.set_num_threads


# SLIF-MR's share of dropped user-item edges per training epoch (``edge_dropout: auto``),
# chosen on validation (docs/RESULTS.md); LightGCN's validation recall fell with it.
SLIFMR_EDGE_DROPOUT = 0.5
# SLIF-MR's uniform candidates per BPR negative, the hardest kept (``neg_candidates: auto``),
# chosen on validation (docs/RESULTS.md); 1 (plain uniform sampling) for the other models, as
# they are published.
SLIFMR_NEG_CANDIDATES = 4


class ConfigError(ValueError):
    """A configuration key or value is not valid. The message names the key and the bad value,
    prefixed by where the value came from (``file:line``, ``--set KEY=VALUE`` or the option)."""


@dataclass
class Config:
    # --- model
    model: str = "slifmr"  # "slifmr" | "lightgcn" | "freedom" | "lattice"
    embed_dim: int = 64
    init: str = "normal"  # ID embeddings: "normal" (std 0.1) | "xavier" (uniform)
    num_layers: int = 3  # LightGCN layers on A(t)
    kg_layers: int = 2  # relation-aware layers on KG(t)
    modality_layers: int = 1  # layers on A_m(t)
    use_kg: bool = True
    share_item_entity: bool = True  # item rows of the entity table = item ID embeddings
    modalities: list | None = field(default_factory=lambda: ["image", "text"])  # None: all present
    modality_input: str = "features"  # SLIF-MR modality views propagate: "features" (W_m F_m)
    # | "ids" (item ID embeddings) | "both" (their sum)
    view_weight: float = 0.05  # alpha_v (initial value when learned)
    # Fixed by default: learned on the training loss the weights grow (0.2 -> 0.8 in 20 epochs)
    # and the model overfits (docs/RESULTS.md, "View weights and edge dropout")
    learn_view_weight: bool = False
    # --- FREEDOM / LATTICE (their feature kNN item graphs use knn_k and modality_layers)
    image_graph_weight: float = 0.1  # FREEDOM: weight of the image kNN graph (text: the rest)
    prune_ratio: float = 0.8  # FREEDOM: share of user-item edges dropped per epoch
    edge_dropout: Any = "auto"  # LightGCN / SLIF-MR: share of A(t)'s user-item edges dropped
    # per training epoch, degree-sensitively (FREEDOM's pruning);
    # "auto": SLIFMR_EDGE_DROPOUT for slifmr, 0 for the others
    modality_bpr_weight: float = 0.0  # FREEDOM: BPR of users against projected features
    frozen_graph_weight: float = 0.9  # LATTICE: lambda, frozen vs learned item graph
    # --- graphs and the self-loop feedback
    knn_k: int = 10  # modality kNN graphs
    feedback: bool = True
    feedback_k: int = 10
    feedback_beta: float = 0.3  # weight of S(t) in A_m(t)
    feedback_gamma: float = 0.1  # weight of S(t) in A(t)
    feedback_in: list = field(default_factory=lambda: ["interaction", "kg", "modality"])
    feedback_init: str = "features"  # S(0): "features" (mean of modality features) | "none"
    feedback_refine: bool = False  # incremental refresh (sk.knn_refine) instead of exact kNN
    knn_exact_max: int = 20000  # kNN graphs of features over more items: bucketed kNN +
    # knn_refine (modality graphs and S(0)), not exact O(I^2 d)
    # --- losses
    sc_weight: float = 0.05  # lambda_sc, semantic consistency (InfoNCE)
    sc_temperature: float = 0.2
    sc_max_batch: int = 256  # InfoNCE on at most this many batch users/items
    reg_weight: float = 1e-4
    loss: str = "bpr"  # ranking loss: "bpr" | "softmax" (sampled, cosine scores)
    num_negatives: int = 256  # softmax: uniform negatives shared by a batch's rows
    neg_candidates: Any = "auto"  # bpr: uniform candidates per triple, the hardest kept
    # (1: uniform); "auto": SLIFMR_NEG_CANDIDATES for slifmr, 1 for the others
    softmax_temperature: float = 0.1  # softmax: temperature of the cosine scores
    # --- optimisation
    lr: float = 5e-3  # chosen on validation (docs/RESULTS.md, "Defaults")
    batch_size: int = 8192
    epochs: int = 1000  # a cap: runs are meant to stop early, on validation
    patience: int = 10  # evaluations without a better valid recall@20 (0: off)
    eval_every: int = 1
    valid_fraction: float = 0.1  # carved from train when there is no valid split
    reorder: str = "auto"  # relabel users/items for cache locality (data.reorder):
    # "none" | "auto" (large datasets) | "features" | "graph" | "pca"
    seed: int = 2025
    eval_ks: list = field(default_factory=lambda: [10, 20])
    # --- runtime
    device: str = "cpu"
    backend: str = "auto"
    num_threads: int = 0  # 0: leave torch's default
    progress: bool = True
    tensorboard: Any = "auto"  # TensorBoard events in OUTPUT/tb: "auto" (if installed)
    # | true (error if not installed) | false
    # --- synthetic data (when no --data)
    synthetic: dict = field(default_factory=lambda: {"num_users": 2000, "num_items": 1500})

    def __post_init__(self):
        self.validate()

    def validate(self) -> Config:
        """Check every key against its declared type and range (``_RULES`` below); values are
        normalised in place (an integer given for a float key becomes a float). Raises
        :class:`ConfigError` naming the first bad key and its value."""
        for f in dataclasses.fields(self):
            setattr(self, f.name, check_value(f.name, getattr(self, f.name)))
        return self

    def resolved(self) -> Config:
        """The effective configuration: ``model: lightgcn`` turns every auxiliary view off;
        FREEDOM and LATTICE keep the modalities but have no KG view, feedback or consistency
        (FREEDOM prunes its graph by ``prune_ratio`` instead); ``edge_dropout: auto`` becomes
        :data:`SLIFMR_EDGE_DROPOUT` for SLIF-MR and 0 for the others, ``neg_candidates: auto``
        :data:`SLIFMR_NEG_CANDIDATES` for SLIF-MR and 1 for the others."""
        cfg = self
        slif = cfg.model == "slifmr"
        if cfg.edge_dropout == "auto":
            cfg = dataclasses.replace(cfg, edge_dropout=SLIFMR_EDGE_DROPOUT if slif else 0.0)
        if cfg.neg_candidates == "auto":
            cfg = dataclasses.replace(cfg, neg_candidates=SLIFMR_NEG_CANDIDATES if slif else 1)
        if cfg.model == "lightgcn":
            return dataclasses.replace(cfg, use_kg=False, modalities=[], feedback=False, sc_weight=0.0)
        if cfg.model in ("freedom", "lattice"):
            return dataclasses.replace(cfg, use_kg=False, feedback=False, sc_weight=0.0)
        return cfg

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def updated(self, **overrides: Any) -> Config:
        """A copy with ``overrides`` applied (unknown keys raise, naming the key)."""
        known = {f.name for f in dataclasses.fields(self)}
        for k in overrides:
            if k not in known:
                raise ConfigError(_unknown_key(k))
        return dataclasses.replace(self, **overrides)


# --------------------------------------------------------------------------- key rules
def _show(value: Any) -> str:
    """A value as a message shows it: repr (strings quoted, ``nan`` bare), at most 60 chars.
    Containers are shown through :mod:`reprlib` (a few levels and items), so a value built from
    YAML aliases that nest a list in itself a million-fold is never expanded."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxlist, short.maxdict, short.maxstring, short.maxother = 3, 8, 8, 60, 60
    short.maxlong = 40
    text = short.repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_real(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


@dataclass(frozen=True)
class _Rule:
    """The declared type of one key: how ``--set`` text is parsed and how a value is checked.

    ``kind`` picks the parser (``int``, ``float``, ``bool``, ``str``, ``list``, ``dict``);
    ``problem(value)`` returns None for a valid value, else what is wrong ("expected ..., got ...").
    """

    kind: str
    problem: Callable[[Any], str | None]
    item: str = "str"  # list keys: the kind of each element
    nullable: bool = False  # list keys: ``null`` / ``none`` allowed (modalities: all present)


def _int(lo: int, hi: int = _INT_MAX) -> _Rule:
    span = {_INT_MAX: "2^31-1", _SEED_MAX: "2^63-1"}.get(hi, str(hi))
    return _Rule(
        "int",
        lambda v: (
            None if _is_int(v) and lo <= v <= hi else f"expected an integer in [{lo}, {span}], got {_show(v)}"
        ),
    )


def _float(lo: float, hi: float | None = None, lo_open: bool = False, hi_open: bool = False) -> _Rule:
    if hi is None:
        what = f"{'>' if lo_open else '>='} {lo:g}"
    else:
        what = f"in {'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def problem(v):
        ok = (
            _is_real(v)
            and math.isfinite(v)
            and (v > lo if lo_open else v >= lo)
            and (hi is None or (v < hi if hi_open else v <= hi))
        )
        return None if ok else f"expected a finite number {what}, got {_show(v)}"

    return _Rule("float", problem)


def _bool() -> _Rule:
    return _Rule("bool", lambda v: None if isinstance(v, bool) else f"expected true or false, got {_show(v)}")


def _auto_bool() -> _Rule:
    # parsed as a bool key: --set tensorboard=true gives True, --set tensorboard=auto "auto"
    return _Rule(
        "bool",
        lambda v: (
            None if isinstance(v, bool) or v == "auto" else f"expected 'auto', true or false, got {_show(v)}"
        ),
    )


def _auto_float(lo: float, hi: float, hi_open: bool = False) -> _Rule:
    """A float in [lo, hi] (or [lo, hi)) or "auto": the model's own value (Config.resolved)."""
    base = _float(lo, hi, hi_open=hi_open)

    def problem(v):
        if v == "auto":
            return None
        p = base.problem(v)
        return None if p is None else "expected 'auto' or" + p[len("expected") :]

    return _Rule("float", problem)


def _auto_int(lo: int, hi: int) -> _Rule:
    """An int in [lo, hi] or "auto": the model's own value (Config.resolved)."""
    base = _int(lo, hi)

    def problem(v):
        if v == "auto":
            return None
        p = base.problem(v)
        return None if p is None else "expected 'auto' or" + p[len("expected") :]

    return _Rule("int", problem)


def _choice(options: tuple) -> _Rule:
    listed = ", ".join(repr(o) for o in options)
    return _Rule(
        "str",
        lambda v: (
            None if isinstance(v, str) and v in options else f"expected one of {listed}, got {_show(v)}"
        ),
    )


def _device() -> _Rule:
    # the syntax only; whether this machine has the device is check_runtime's question
    pattern = re.compile(r"^(cpu|cuda(:\d+)?)$")
    return _Rule(
        "str",
        lambda v: (
            None
            if isinstance(v, str) and pattern.match(v)
            else f"expected 'cpu', 'cuda' or 'cuda:N', got {_show(v)}"
        ),
    )


def _names(options: tuple | None = None, nullable: bool = False) -> _Rule:
    what = (
        "a list of names" if options is None else "a list drawn from " + ", ".join(repr(o) for o in options)
    )
    what += " or null" if nullable else ""

    def problem(v):
        if v is None and nullable:
            return None
        if isinstance(v, list) and all(isinstance(x, str) for x in v):
            bad = [x for x in v if options is not None and x not in options]
            if not bad:
                return None
            return f"expected {what}, got unknown {_show(bad)}"
        return f"expected {what}, got {_show(v)}"

    return _Rule("list", problem, nullable=nullable)


def _ks() -> _Rule:
    def problem(v):
        if isinstance(v, list) and v and all(_is_int(k) and 1 <= k <= _INT_MAX for k in v):
            return None
        return f"expected a non-empty list of integers >= 1, got {_show(v)}"

    return _Rule("list", problem, item="int")


def _synthetic() -> _Rule:
    def problem(v):
        if not isinstance(v, dict):
            return f"expected a mapping of make_synthetic parameters, got {_show(v)}"
        try:
            check_synthetic_params(v)
        except ValueError as exc:
            return str(exc)
        return None

    return _Rule("dict", problem)


_RULES: dict = {
    "model": _choice(("slifmr", "lightgcn", "freedom", "lattice")),
    "embed_dim": _int(1, _DIM_MAX),
    "init": _choice(("normal", "xavier")),
    "num_layers": _int(0, _LAYERS_MAX),
    "kg_layers": _int(0, _LAYERS_MAX),
    "modality_layers": _int(0, _LAYERS_MAX),
    "use_kg": _bool(),
    "share_item_entity": _bool(),
    "modalities": _names(nullable=True),
    "view_weight": _float(0),
    "modality_input": _choice(("features", "ids", "both")),
    "learn_view_weight": _bool(),
    "image_graph_weight": _float(0, 1),
    "prune_ratio": _float(0, 1, hi_open=True),
    "edge_dropout": _auto_float(0, 1, hi_open=True),
    "modality_bpr_weight": _float(0),
    "frozen_graph_weight": _float(0, 1),
    "knn_k": _int(1),
    "feedback": _bool(),
    "feedback_k": _int(1),
    "feedback_beta": _float(0, 1),
    "feedback_gamma": _float(0),
    "feedback_in": _names(("interaction", "kg", "modality")),
    "feedback_init": _choice(("features", "none")),
    "feedback_refine": _bool(),
    "knn_exact_max": _int(0),
    "sc_weight": _float(0),
    "sc_temperature": _float(0, lo_open=True),
    "sc_max_batch": _int(1),
    "reg_weight": _float(0),
    "loss": _choice(("bpr", "softmax")),
    "num_negatives": _int(1),
    "neg_candidates": _auto_int(1, 1024),
    "softmax_temperature": _float(0, lo_open=True),
    "lr": _float(0, lo_open=True),
    "batch_size": _int(1),
    "epochs": _int(1),
    "patience": _int(0),
    "eval_every": _int(1),
    "valid_fraction": _float(0, 1, hi_open=True),
    "reorder": _choice(REORDER_MODES),
    "seed": _int(0, _SEED_MAX),
    "eval_ks": _ks(),
    "device": _device(),
    "backend": _choice(("auto",) + BACKENDS),
    "num_threads": _int(0, _THREADS_MAX),
    "progress": _bool(),
    "synthetic": _synthetic(),
    "tensorboard": _auto_bool(),
}


def _normalise(rule: _Rule, value: Any) -> Any:
    """The value in its key's Python type where that loses nothing: an integer (or numpy
    scalar) for a float key becomes a float, a tuple for a list key a list. A string for a float
    key is read as a number because YAML 1.1 (PyYAML) loads ``1e-3`` (no dot) as a string."""
    if rule.kind == "float":
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                return value
        return float(value) if _is_real(value) else value
    if rule.kind == "int" and _is_int(value):
        return int(value)
    if rule.kind == "list" and isinstance(value, tuple):
        return list(value)
    return value


def _unknown_key(key: Any) -> str:
    import difflib

    near = difflib.get_close_matches(str(key), list(_RULES), n=1)
    return f"unknown configuration key {key!r}" + (f" (did you mean {near[0]!r}?)" if near else "")


def check_value(key: str, value: Any, where: str | None = None) -> Any:
    """``value`` checked against the declared type and range of ``key`` and normalised
    (see ``_normalise``). Raises :class:`ConfigError` ``"[where: ]config key 'lr': expected a
    finite number > 0, got nan"`` (or naming an unknown key)."""
    prefix = f"{where}: " if where else ""
    rule = _RULES.get(key) if isinstance(key, str) else None
    if rule is None:
        raise ConfigError(prefix + _unknown_key(key))
    value = _normalise(rule, value)
    problem = rule.problem(value)
    if problem is not None:
        raise ConfigError(f"{prefix}config key {key!r}: {problem}")
    return value


# --------------------------------------------------------------------------- --set parsing
_INT_TEXT = re.compile(r"^[+-]?\d+$")
_BOOL_TEXT = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def _parse_scalar(kind: str, text: str) -> Any:
    """Text of an ``int``/``float``/``bool``/``str`` value; text that does not parse is returned
    as it is, so that the check names it (``expected an integer ..., got 'abc'``)."""
    if kind == "int":
        if _INT_TEXT.match(text) and len(text) <= 40:  # longer: far out of any range
            return int(text)
        return text
    if kind == "float":
        try:
            return float(text)  # nan and inf parse here; the check rejects them by name
        except ValueError:
            return text
    if kind == "bool":
        return _BOOL_TEXT.get(text.lower(), text)
    if len(text) >= 2 and text[0] == text[-1] == '"':
        try:
            return json.loads(text)  # a JSON string literal, as the old JSON-first parser took
        except json.JSONDecodeError:
            pass
    return text


def _parse_structured(text: str) -> Any:
    """A JSON (or YAML flow) list or mapping; the text itself when it parses as neither."""
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # JSONDecodeError is a ValueError; so is int overflow
        pass
    import yaml

    try:
        return yaml.safe_load(text)
    except (yaml.YAMLError, ValueError, RecursionError):
        return text


def _parse_text(rule: _Rule, text: str) -> Any:
    """A ``--set`` value, read by the declared type of its key (never by guessing: ``none``
    is the string "none" for ``reorder``, null only where a key accepts null)."""
    text = text.strip()
    if rule.kind != "list" and rule.kind != "dict":
        return _parse_scalar(rule.kind, text)
    if rule.nullable and text.lower() in ("none", "null"):
        return None
    if rule.kind == "dict" or text.startswith("["):
        return _parse_structured(text)
    # a list written as comma-separated items: --set modalities=image,text, eval_ks=10,20
    return [_parse_scalar(rule.item, x.strip()) for x in text.split(",") if x.strip()]


def parse_override(item: str) -> tuple:
    """One ``--set KEY=VALUE`` argument as ``(key, checked value)``; raises :class:`ConfigError`
    naming the argument."""
    where = f"--set {item if len(item) <= 60 else item[:57] + '...'}"
    if "=" not in item:
        raise ConfigError(f"{where}: expected KEY=VALUE")
    key, text = (part.strip() for part in item.split("=", 1))
    rule = _RULES.get(key)
    if rule is None:
        raise ConfigError(f"{where}: {_unknown_key(key)}")
    return key, check_value(key, _parse_text(rule, text), where)


# --------------------------------------------------------------------------- files
def _read_json(path: str, text: str) -> tuple:
    """(value, {}) of a JSON file: JSON gives no key positions. A key given twice is an error
    (the json module would keep the last one silently)."""

    def no_duplicates(pairs):
        seen = {}
        for k, v in pairs:
            if k in seen:
                raise ConfigError(f"{path}: key {k!r} given twice")
            seen[k] = v
        return seen

    try:
        return json.loads(text, object_pairs_hook=no_duplicates), {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except ConfigError:
        raise
    except (ValueError, RecursionError) as exc:  # an integer of 5000 digits, nesting too deep
        raise ConfigError(f"{path}: invalid JSON: {type(exc).__name__}: {exc}") from None


def _yaml_duplicates(path: str, root) -> None:
    """Raise ConfigError for a key given twice in any mapping of the YAML node graph (PyYAML
    keeps the last one silently). Each node is visited once: aliases are not expanded."""
    import yaml

    seen, stack = set(), [root]
    while stack:
        node = stack.pop()
        if id(node) in seen or not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
            continue
        first: dict = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if isinstance(key_node, yaml.ScalarNode):
                if key_node.value in first:
                    raise ConfigError(
                        f"{path}:{line}: key {key_node.value!r} given twice "
                        f"(first on line {first[key_node.value]})"
                    )
                first[key_node.value] = line
            stack.append(value_node)


def _read_yaml(path: str, text: str) -> tuple:
    """(value, line of each top-level key) of a YAML file; a key given twice, at any level, is
    an error."""
    import yaml

    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        _yaml_duplicates(path, node)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else path
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', None) or exc}") from None
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, ConfigError):
            raise
        # PyYAML's int() of a 5000-digit number, or nesting deeper than Python's stack
        raise ConfigError(f"{path}: invalid YAML: {type(exc).__name__}: {exc}") from None
    lines: dict = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            lines[key_node.value] = key_node.start_mark.line + 1
    return data, lines


def _read_file(path: str) -> dict:
    """The checked values of a YAML or JSON configuration file (a mapping of keys to values);
    an error names the file and, for YAML, the line of the key."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the configuration file ({exc.strerror or exc})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    data, lines = (_read_json if path.endswith(".json") else _read_yaml)(path, text)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the configuration must be a mapping of keys to values")
    values = {}
    for key, value in data.items():
        where = f"{path}:{lines[key]}" if key in lines else path
        values[key] = check_value(key, value, where)
    return values


def load_config(path: str | None = None, overrides: dict | None = None) -> Config:
    """Defaults, then the file (YAML or JSON mapping), then ``overrides``.

    Every value is checked against its key's declared type and range: a bad key or value
    raises :class:`ConfigError` (a ``ValueError``) naming the file and line (or "overrides"),
    the key and the value.
    """
    values: dict = _read_file(path) if path else {}
    for key, value in (overrides or {}).items():
        values[key] = check_value(key, value, "overrides")
    return Config(**values)


def check_runtime(cfg: Config) -> None:
    """Check the keys whose validity depends on this machine: ``device`` exists here and an
    explicitly named ``backend`` can run on it. Raises :class:`ConfigError` naming the key."""
    import torch

    from slifmr_kernels.backends import available_backends

    dev = torch.device(cfg.device)
    if dev.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if (dev.index or 0) >= count:
            raise ConfigError(
                f"config key 'device': {cfg.device!r} is not available here ({count} CUDA device(s))"
            )
    if cfg.backend != "auto":
        usable = available_backends(cfg.device)
        if cfg.backend not in usable:
            raise ConfigError(
                f"config key 'backend': {cfg.backend!r} cannot run on device "
                f"{cfg.device!r} here (usable: {', '.join(usable)})"
            )
