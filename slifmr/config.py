"""Run configuration: one dataclass, loadable from YAML or JSON, every component a switch.

Ablations are one key each: ``feedback: false`` (static graphs), ``use_kg: false``,
``modalities: []`` (or a subset), ``sc_weight: 0`` (no semantic-consistency loss).
``model: lightgcn`` switches every auxiliary view off.
"""
from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Optional

from .data.reorder import REORDER_MODES

__all__ = ["Config", "load_config"]


@dataclass
class Config:
    # --- model
    model: str = "slifmr"                 # "slifmr" | "lightgcn"
    embed_dim: int = 64
    num_layers: int = 3                   # LightGCN layers on A(t)
    kg_layers: int = 2                    # relation-aware layers on KG(t)
    modality_layers: int = 1              # layers on A_m(t)
    use_kg: bool = True
    share_item_entity: bool = True        # item rows of the entity table = item ID embeddings
    modalities: Optional[list] = field(default_factory=lambda: ["image", "text"])  # None: all present
    view_weight: float = 0.2              # alpha_v (initial value when learned)
    learn_view_weight: bool = True
    # --- graphs and the self-loop feedback
    knn_k: int = 10                       # modality kNN graphs
    feedback: bool = True
    feedback_k: int = 10
    feedback_beta: float = 0.3            # weight of S(t) in A_m(t)
    feedback_gamma: float = 0.1           # weight of S(t) in A(t)
    feedback_in: list = field(default_factory=lambda: ["interaction", "kg", "modality"])
    feedback_init: str = "features"       # S(0): "features" (mean of modality features) | "none"
    feedback_refine: bool = False         # incremental refresh (sk.knn_refine) instead of exact kNN
    knn_exact_max: int = 20000            # kNN graphs of features over more items: bucketed kNN +
                                          # knn_refine (modality graphs and S(0)), not exact O(I^2 d)
    # --- losses
    sc_weight: float = 0.05               # lambda_sc, semantic consistency (InfoNCE)
    sc_temperature: float = 0.2
    sc_max_batch: int = 256               # InfoNCE on at most this many batch users/items
    reg_weight: float = 1e-4
    # --- optimisation
    lr: float = 1e-3
    batch_size: int = 4096
    epochs: int = 30
    patience: int = 5                     # epochs without a better valid recall@20 (0: off)
    eval_every: int = 1
    valid_fraction: float = 0.1           # carved from train when there is no valid split
    reorder: str = "auto"                 # relabel users/items for cache locality (data.reorder):
                                          # "none" | "auto" (large datasets) | "features" | "graph" | "pca"
    seed: int = 2025
    eval_ks: list = field(default_factory=lambda: [10, 20])
    # --- runtime
    device: str = "cpu"
    backend: str = "auto"
    num_threads: int = 0                  # 0: leave torch's default
    progress: bool = True
    # --- synthetic data (when no --data)
    synthetic: dict = field(default_factory=lambda: {"num_users": 2000, "num_items": 1500})

    def __post_init__(self):
        self.validate()

    def validate(self) -> "Config":
        if self.model not in ("slifmr", "lightgcn"):
            raise ValueError(f"model must be 'slifmr' or 'lightgcn', got {self.model!r}")
        for name in ("embed_dim", "batch_size", "epochs", "eval_every", "knn_k", "feedback_k"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("num_layers", "kg_layers", "modality_layers", "patience", "num_threads",
                     "knn_exact_max"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        for name in ("lr", "sc_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)!r}")
        for name in ("sc_weight", "reg_weight", "view_weight", "feedback_gamma"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)!r}")
        if not 0.0 <= self.feedback_beta <= 1.0:
            raise ValueError(f"feedback_beta must be in [0, 1], got {self.feedback_beta!r}")
        if not 0.0 <= self.valid_fraction < 1.0:
            raise ValueError(f"valid_fraction must be in [0, 1), got {self.valid_fraction!r}")
        if self.reorder not in REORDER_MODES:
            raise ValueError(f"reorder must be one of {list(REORDER_MODES)}, got {self.reorder!r}")
        if self.feedback_init not in ("features", "none"):
            raise ValueError(f"feedback_init must be 'features' or 'none', got {self.feedback_init!r}")
        bad = set(self.feedback_in) - {"interaction", "kg", "modality"}
        if bad:
            raise ValueError(f"feedback_in: unknown targets {sorted(bad)} "
                             f"(choose from interaction, kg, modality)")
        if not self.eval_ks or any(int(k) < 1 for k in self.eval_ks):
            raise ValueError(f"eval_ks must be positive integers, got {self.eval_ks!r}")
        if self.modalities is not None and not isinstance(self.modalities, list):
            raise ValueError(f"modalities must be a list of names or null, got {self.modalities!r}")
        return self

    def resolved(self) -> "Config":
        """The effective configuration: ``model: lightgcn`` turns every auxiliary view off."""
        if self.model == "lightgcn":
            return dataclasses.replace(self, use_kg=False, modalities=[], feedback=False, sc_weight=0.0)
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def updated(self, **overrides: Any) -> "Config":
        """A copy with ``overrides`` applied (unknown keys raise, naming the key)."""
        known = {f.name for f in dataclasses.fields(self)}
        for k in overrides:
            if k not in known:
                raise KeyError(f"unknown configuration key {k!r}")
        return dataclasses.replace(self, **overrides)


def _parse_value(text: str) -> Any:
    """A ``--set key=value`` value: JSON when it parses (numbers, booleans, lists), else a string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        low = text.lower()
        if low in ("true", "false"):
            return low == "true"
        if low in ("none", "null"):
            return None
        return text


def load_config(path: Optional[str] = None, overrides: Optional[dict] = None) -> Config:
    """Defaults, then the file (YAML or JSON mapping), then ``overrides``.

    An unknown key in the file raises ``ValueError`` naming the file and the key.
    """
    values: dict = {}
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file not found: {path}")
        with open(path, encoding="utf-8") as f:
            text = f.read()
        if path.endswith(".json"):
            try:
                data = json.loads(text)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{exc.lineno}: invalid JSON: {exc.msg}") from None
        else:
            import yaml
            try:
                data = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f"{path}:{mark.line + 1}" if mark is not None else path
                raise ValueError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise ValueError(f"{path}: the configuration must be a mapping of keys to values")
        known = {f.name for f in dataclasses.fields(Config)}
        for k in data:
            if k not in known:
                raise ValueError(f"{path}: unknown configuration key {k!r}")
        values.update(data)
    if overrides:
        values.update(overrides)
    try:
        return Config(**values)
    except TypeError as exc:
        raise ValueError(f"{path or 'overrides'}: {exc}") from None
