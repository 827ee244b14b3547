"""The models, one module each, and the registry the trainer and the CLI build them from.

| name | module | what |
|---|---|---|
| ``lightgcn`` | :mod:`.lightgcn` | LightGCN: the interaction graph alone |
| ``slifmr`` | :mod:`.slifmr` | SLIF-MR: KG, modality and interaction views, self-loop feedback |
| ``freedom`` | :mod:`.freedom` | FREEDOM: frozen feature kNN item graph, pruned user-item graph |
| ``lattice`` | :mod:`.lattice` | LATTICE: learned + frozen feature kNN item graphs |
"""

from __future__ import annotations

from .base import Batch, ModelOutput, Recommender
from .freedom import FREEDOM
from .lattice import LATTICE
from .lightgcn import LightGCN
from .slifmr import SLIFMR, fuse_views

__all__ = [
    "MODELS",
    "build_model",
    "Batch",
    "ModelOutput",
    "Recommender",
    "LightGCN",
    "SLIFMR",
    "FREEDOM",
    "LATTICE",
    "fuse_views",
]

#: model name -> class; every name is a valid ``Config.model``
MODELS = {"lightgcn": LightGCN, "slifmr": SLIFMR, "freedom": FREEDOM, "lattice": LATTICE}


def build_model(cfg, ds, num_view_relations: int = 0) -> Recommender:
    """The model ``cfg.model`` names, sized for dataset ``ds`` (``num_view_relations``: the KG
    view's relation count, SLIF-MR only)."""
    if cfg.model == "lightgcn":
        return LightGCN(ds.num_users, ds.num_items, cfg)
    if cfg.model == "freedom":
        return FREEDOM(ds.num_users, ds.num_items, cfg, train=ds.train, features=ds.features)
    if cfg.model == "lattice":
        return LATTICE(ds.num_users, ds.num_items, cfg, features=ds.features)
    if cfg.model == "slifmr":
        return SLIFMR(
            ds.num_users,
            ds.num_items,
            cfg,
            num_entities=ds.num_entities if ds.has_kg else 0,
            num_view_relations=num_view_relations,
            features=ds.features,
        )
    raise ValueError(f"model must be one of {sorted(MODELS)}, got {cfg.model!r}")
