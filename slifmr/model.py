"""SLIF-MR and LightGCN on the kernels' ``propagate`` (SPEC §1).

Views (each computed over the whole graph on every forward, like LightGCN):

* interaction (cf): LightGCN, ``num_layers`` layers on A(t), mean over layers -> Z_u, Z_i^cf
* kg: relation-aware aggregation e_h <- sum w_hrt (e_r * e_t) over KG(t) (``kg_layers``
  layers, mean over layers incl. layer 0); Z_i^kg = rows 0..I-1 (items are entities 0..I-1)
* modality m: H_m = W_m F_m (rows of F_m L2-normalised), ``modality_layers`` layers on A_m(t)
* users read every item-side view through the row-normalised interactions: Z_u^v = R~ Z_i^v
* fusion: Z = Z^cf + sum_v alpha_v * normalize(Z^v); score(u, i) = <z_u, z_i>
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import slifmr_kernels as sk

from .config import Config
from .graphs import Graphs

__all__ = ["SLIFMR", "LightGCN", "build_model"]


class SLIFMR(nn.Module):
    """SLIF-MR with every component switchable (see :class:`slifmr.config.Config`).

    Args:
        num_users, num_items: id space sizes.
        cfg: configuration (``use_kg``, ``modalities``, ``embed_dim``, layer counts ...).
        num_entities: KG entity count (items are entities 0..num_items-1); 0 without KG.
        num_view_relations: relations of the KG view graph (2 R_kg + 1 with the feedback one).
        features: modality name -> float32 array/tensor (num_items, d_m); only the names in
            ``modalities`` are used. Stored as non-persistent buffers (they are data, not
            parameters, so checkpoints stay small).
    """

    def __init__(self, num_users: int, num_items: int, cfg: Config, *, num_entities: int = 0,
                 num_view_relations: int = 0, features: Optional[dict] = None):
        super().__init__()
        cfg = cfg.resolved()
        self.cfg = cfg
        self.num_users, self.num_items = int(num_users), int(num_items)
        d = cfg.embed_dim
        self.user_emb = nn.Parameter(torch.randn(self.num_users, d) * 0.1)
        self.item_emb = nn.Parameter(torch.randn(self.num_items, d) * 0.1)
        self.use_kg = bool(cfg.use_kg and num_entities > 0 and num_view_relations > 0)
        self.share_item_entity = bool(cfg.share_item_entity)
        if self.use_kg:
            # Items are entities 0..I-1. Shared: those rows ARE the item ID embeddings and only
            # the non-item entities get their own table (KGAT's reading; no second free vector
            # per item). Not shared: a separate (E, d) entity table.
            n_own = int(num_entities) - (self.num_items if self.share_item_entity else 0)
            self.entity_emb = nn.Parameter(torch.randn(max(n_own, 0), d) * 0.1)
            # Start near plain mean aggregation (e_r ~ 1); training specialises each relation.
            self.relation_emb = nn.Parameter(1.0 + 0.1 * torch.randn(int(num_view_relations), d))
        features = features or {}
        self.modalities = [m for m in (cfg.modalities or []) if m in features]
        self.proj = nn.ModuleDict()
        for m in self.modalities:
            f = torch.as_tensor(np.asarray(features[m]), dtype=torch.float32)
            if f.dim() != 2 or f.shape[0] != self.num_items:
                raise ValueError(f"features[{m!r}] must be (num_items={self.num_items}, d), got {tuple(f.shape)}")
            self.register_buffer(f"feat_{m}", F.normalize(f, dim=1), persistent=False)
            self.proj[m] = nn.Linear(f.shape[1], d)
        self.view_names = (["kg"] if self.use_kg else []) + list(self.modalities)
        alpha = torch.full((len(self.view_names),), float(cfg.view_weight))
        if cfg.learn_view_weight:
            self.alpha = nn.Parameter(alpha)
        else:
            self.register_buffer("alpha", alpha)

    def feature(self, m: str) -> torch.Tensor:
        return getattr(self, f"feat_{m}")

    # ------------------------------------------------------------------ views
    def cf_view(self, g: Graphs) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.user_emb, self.item_emb], 0)
        z = sk.propagate_layers(g.adj, x, self.cfg.num_layers, backend=self.cfg.backend)
        return z[: self.num_users], z[self.num_users:]

    def entities(self) -> torch.Tensor:
        """(E, d) layer-0 entity embeddings (item rows first)."""
        if self.share_item_entity:
            return torch.cat([self.item_emb, self.entity_emb], 0)
        return self.entity_emb

    def kg_view(self, g: Graphs) -> torch.Tensor:
        x = self.entities()
        acc = x
        for _ in range(self.cfg.kg_layers):
            x = sk.propagate(g.kg, x, relation_emb=self.relation_emb, backend=self.cfg.backend)
            acc = acc + x
        return (acc / (self.cfg.kg_layers + 1))[: self.num_items]

    def modality_view(self, g: Graphs, m: str) -> torch.Tensor:
        h = self.proj[m](self.feature(m))
        return sk.propagate_layers(g.modality[m], h, self.cfg.modality_layers, backend=self.cfg.backend)

    def forward(self, g: Graphs) -> dict:
        """All views and the fused representations.

        Returns a dict with ``user`` (U, d) and ``item`` (I, d) fused embeddings, ``cf`` =
        (Z_u^cf, Z_i^cf) and ``views`` = {name: (Z_u^v, Z_i^v)} for the auxiliary views.
        """
        zu_cf, zi_cf = self.cf_view(g)
        views = {}
        item_views = [self.kg_view(g) if name == "kg" else self.modality_view(g, name)
                      for name in self.view_names]
        if item_views:
            # Users read every item-side view through R~ in ONE pass over the interaction
            # edges (views side by side as one (I, V*d) matrix) instead of V passes.
            zu_all = sk.propagate(g.user_item, torch.cat(item_views, 1), backend=self.cfg.backend)
            for name, zi, zu in zip(self.view_names, item_views, zu_all.split(zi_cf.shape[1], dim=1)):
                views[name] = (zu, zi)
        return self.fuse(zu_cf, zi_cf, views)

    def fuse(self, zu_cf: torch.Tensor, zi_cf: torch.Tensor, views: dict) -> dict:
        """Z = Z^cf + sum_v alpha_v * normalize(Z^v) for users and items.

        Args:
            zu_cf, zi_cf: (U, d) / (I, d) interaction-view representations.
            views: view name -> ((U, d), (I, d)) for every name in ``view_names``.
        Returns the forward's dict: "user", "item", "cf" and "views".
        """
        zu, zi = zu_cf, zi_cf
        for k, name in enumerate(self.view_names):
            vu, vi = views[name]
            zu = zu + self.alpha[k] * F.normalize(vu, dim=1)
            zi = zi + self.alpha[k] * F.normalize(vi, dim=1)
        return {"user": zu, "item": zi, "cf": (zu_cf, zi_cf), "views": views}

    def ego(self, users: torch.Tensor, items: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer-0 ID embeddings of a batch (for the L2 term)."""
        return self.user_emb[users], self.item_emb[items]


class LightGCN(SLIFMR):
    """LightGCN (He et al., 2020): the interaction view alone, on the static graph."""

    def __init__(self, num_users: int, num_items: int, cfg: Config, **_ignored):
        super().__init__(num_users, num_items, cfg.updated(model="lightgcn"))


def build_model(cfg: Config, ds, num_view_relations: int) -> SLIFMR:
    """The model ``cfg.model`` names, sized for dataset ``ds``."""
    if cfg.model == "lightgcn":
        return LightGCN(ds.num_users, ds.num_items, cfg)
    return SLIFMR(ds.num_users, ds.num_items, cfg, num_entities=ds.num_entities if ds.has_kg else 0,
                  num_view_relations=num_view_relations, features=ds.features)
