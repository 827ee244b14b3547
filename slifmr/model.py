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

import slifmr_kernels as sk
from slifmr_kernels.fuse.op import NORM_EPS

from .config import Config
from .graphs import Graphs

__all__ = ["SLIFMR", "LightGCN", "build_model", "fuse_views"]


def fuse_views(z: torch.Tensor, alpha: torch.Tensor, views, backend: str = "auto") -> torch.Tensor:
    """The fusion Z = z + sum_k alpha[k] * normalize(v_k) (rows L2-normalised, eps 1e-12).

    Args:
        z: (N, d) float base representations (the interaction view).
        alpha: (V,) view weights (a parameter or a buffer).
        views: V tensors (N, d), or one (N, V*d) tensor holding them side by side (no copy).
        backend: the kernels' backend (:func:`slifmr_kernels.fuse_views`).
    Returns (N, d): one kernel pass each way; autograd keeps the views (which the caller holds
    anyway) and their (N, V) norms, not V normalised (N, d) copies.
    """
    if not isinstance(views, torch.Tensor):
        views = list(views)
        if len(views) != alpha.numel():
            raise ValueError(f"{alpha.numel()} view weights for {len(views)} views")
        for v in views:
            if v.shape != z.shape:
                raise ValueError(f"every view must have z's shape {tuple(z.shape)}, got {tuple(v.shape)}")
        views = torch.cat(views, 1) if views else z.new_empty(z.shape[0], 0)
    return sk.fuse_views(z, alpha, views, backend=backend)


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
            # Zero-copy for a float32 C-contiguous array: the model shares the dataset's matrix.
            f = torch.as_tensor(np.asarray(features[m]), dtype=torch.float32)
            if f.dim() != 2 or f.shape[0] != self.num_items:
                raise ValueError(f"features[{m!r}] must be (num_items={self.num_items}, d), got {tuple(f.shape)}")
            # The rows are L2-normalised through (I,) inverse norms applied after the projection
            # (W (f / |f|) = (W f) / |f|), not a normalised (I, d_m) copy of the matrix: at a
            # million items and d_m = 448 the copy alone would be 1.7 GiB.
            inv = 1.0 / f.norm(dim=1).clamp_min(NORM_EPS)
            self.register_buffer(f"feat_{m}", f.contiguous(), persistent=False)
            self.register_buffer(f"feat_inv_norm_{m}", inv, persistent=False)
            self.proj[m] = nn.Linear(f.shape[1], d)
        self.view_names = (["kg"] if self.use_kg else []) + list(self.modalities)
        alpha = torch.full((len(self.view_names),), float(cfg.view_weight))
        if cfg.learn_view_weight:
            self.alpha = nn.Parameter(alpha)
        else:
            self.register_buffer("alpha", alpha)

    def feature(self, m: str) -> torch.Tensor:
        """The raw (I, d_m) float32 feature matrix of modality ``m`` (rows not normalised)."""
        return getattr(self, f"feat_{m}")

    def project(self, m: str) -> torch.Tensor:
        """H_m = proj_m(F_m with L2-normalised rows), (I, d) float32.

        Computed as (F_m W^T) * inv_norm[:, None] + b: the same value as
        ``proj_m(F.normalize(F_m))`` up to rounding, without a normalised copy of F_m. Autograd
        keeps F_m (the buffer itself) and the (I,) inverse norms, nothing of size I x d_m.
        """
        lin = self.proj[m]
        h = torch.mm(self.feature(m), lin.weight.t())
        h = h * getattr(self, f"feat_inv_norm_{m}")[:, None]
        return h + lin.bias if lin.bias is not None else h

    # ------------------------------------------------------------------ views
    def cf_view(self, g: Graphs) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([self.user_emb, self.item_emb], 0)
        z = sk.propagate_layers(g.adj, x, self.cfg.num_layers, backend=self.cfg.backend)
        # split, not two slices: one backward node assembles one (U+I, d) gradient instead of
        # two zero-padded ones and their sum.
        zu, zi = z.split([self.num_users, self.num_items])
        return zu, zi

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
        h = self.project(m)
        return sk.propagate_layers(g.modality[m], h, self.cfg.modality_layers, backend=self.cfg.backend)

    def forward(self, g: Graphs) -> dict:
        """All views and the fused representations.

        Returns a dict with ``user`` (U, d) and ``item`` (I, d) fused embeddings, ``cf`` =
        (Z_u^cf, Z_i^cf), ``views`` = {name: (Z_u^v, Z_i^v)} for the auxiliary views and, when
        there are any, ``stacked`` = ((U, V*d), (I, V*d)): the same views side by side (the
        ``views`` entries are column slices of these).
        """
        zu_cf, zi_cf = self.cf_view(g)
        if not self.view_names:
            return {"user": zu_cf, "item": zi_cf, "cf": (zu_cf, zi_cf), "views": {}}
        item_views = [self.kg_view(g) if name == "kg" else self.modality_view(g, name)
                      for name in self.view_names]
        # The item-side views side by side, (I, V*d): users read them through R~ in ONE pass
        # over the interaction edges instead of V passes, and the fusion takes the same
        # stacked tensors on both sides, so its gradient is one (rows, V*d) tensor (no
        # split/cat copies of it).
        zi_all = torch.cat(item_views, 1)
        del item_views
        zu_all = sk.propagate(g.user_item, zi_all, backend=self.cfg.backend)
        d = zi_cf.shape[1]
        views = {name: (zu, zi) for name, zu, zi in
                 zip(self.view_names, zu_all.split(d, dim=1), zi_all.split(d, dim=1))}
        b = self.cfg.backend
        return {"user": fuse_views(zu_cf, self.alpha, zu_all, b), "item": fuse_views(zi_cf, self.alpha, zi_all, b),
                "cf": (zu_cf, zi_cf), "views": views, "stacked": (zu_all, zi_all)}

    def fuse(self, zu_cf: torch.Tensor, zi_cf: torch.Tensor, views: dict) -> dict:
        """Z = Z^cf + sum_v alpha_v * normalize(Z^v) for users and items.

        Args:
            zu_cf, zi_cf: (U, d) / (I, d) interaction-view representations.
            views: view name -> ((U, d), (I, d)) for every name in ``view_names``.
        Returns the forward's dict: "user", "item", "cf" and "views".
        """
        vs = [views[name] for name in self.view_names]
        b = self.cfg.backend
        return {"user": fuse_views(zu_cf, self.alpha, [v[0] for v in vs], b),
                "item": fuse_views(zi_cf, self.alpha, [v[1] for v in vs], b),
                "cf": (zu_cf, zi_cf), "views": views}

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
