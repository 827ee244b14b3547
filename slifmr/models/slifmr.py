"""SLIF-MR (Self-loop Iterative Fusion, arXiv 2507.09998) on the kernels' ``propagate``.

Views (each computed over the whole graph on every forward, like LightGCN):

* interaction (cf): LightGCN, ``num_layers`` layers on A(t), mean over layers -> Z_u, Z_i^cf
* kg: relation-aware aggregation e_h <- sum w_hrt (e_r * e_t) over KG(t) (``kg_layers``
  layers, mean over layers incl. layer 0); Z_i^kg = rows 0..I-1 (items are entities 0..I-1)
* modality m: H_m = W_m F_m (rows of F_m L2-normalised; or the item ID embeddings, or both:
  ``modality_input``), ``modality_layers`` layers on A_m(t)
* users read every item-side view through the row-normalised interactions: Z_u^v = R~ Z_i^v
* fusion: Z = Z^cf + sum_v alpha_v * normalize(Z^v); score(u, i) = <z_u, z_i>

The loss: BPR on the fused representations, L2 on the batch's ID embeddings, and the
semantic-consistency InfoNCE between the views (``sc_weight``). The graphs of each epoch,
with the feedback graph S(t) inserted, come from :class:`slifmr.selfloop.SelfLoop`.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn as nn

import slifmr_kernels as sk

from ..config import Config
from ..graphs import Graphs
from ..losses import consistency_loss
from .base import Batch, ModelOutput, Recommender, init_embedding
from .features import ModalityProjection
from .lightgcn import interaction_view, training_graph

__all__ = ["SLIFMR", "fuse_views"]


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


class SLIFMR(Recommender):
    """SLIF-MR with every component switchable (see :class:`slifmr.config.Config`).

    Args:
        num_users, num_items: id space sizes.
        cfg: configuration (``use_kg``, ``modalities``, ``embed_dim``, layer counts ...).
        num_entities: KG entity count (items are entities 0..num_items-1); 0 without KG.
        num_view_relations: relations of the KG view graph (2 R_kg + 1 with the feedback one).
        features: modality name -> float32 array/tensor (num_items, d_m); only the names in
            ``modalities`` are used.
    """

    extra_parts = ("sc", "reg")

    def __init__(
        self,
        num_users: int,
        num_items: int,
        cfg: Config,
        *,
        num_entities: int = 0,
        num_view_relations: int = 0,
        features: dict | None = None,
    ):
        super().__init__(num_users, num_items, cfg)
        d = cfg.embed_dim
        self.use_kg = bool(cfg.use_kg and num_entities > 0 and num_view_relations > 0)
        self.share_item_entity = bool(cfg.share_item_entity)
        if self.use_kg:
            # Items are entities 0..I-1. Shared: those rows ARE the item ID embeddings and only
            # the non-item entities get their own table (KGAT's reading; no second free vector
            # per item). Not shared: a separate (E, d) entity table.
            n_own = int(num_entities) - (self.num_items if self.share_item_entity else 0)
            self.entity_emb = init_embedding(max(n_own, 0), d, cfg.init)
            # Start near plain mean aggregation (e_r ~ 1); training specialises each relation.
            self.relation_emb = nn.Parameter(1.0 + 0.1 * torch.randn(int(num_view_relations), d))
        features = features or {}
        self.modalities = [m for m in (cfg.modalities or []) if m in features]
        self.proj = nn.ModuleDict()
        for m in self.modalities:
            shape = tuple(getattr(features[m], "shape", ()))
            if len(shape) != 2 or shape[0] != self.num_items:
                raise ValueError(f"features[{m!r}] must be (num_items={self.num_items}, d), got {shape}")
            if cfg.modality_input != "ids":  # the ID-embedding views use no projection
                self.proj[m] = ModalityProjection(features[m], d, normalize_rows=True)
        self._view_names = (["kg"] if self.use_kg else []) + list(self.modalities)
        alpha = torch.full((len(self._view_names),), float(cfg.view_weight))
        if cfg.learn_view_weight:
            self.alpha = nn.Parameter(alpha)
        else:
            self.register_buffer("alpha", alpha)

    @property
    def view_names(self) -> list:
        return self._view_names

    def feature(self, m: str) -> torch.Tensor:
        """The raw (I, d_m) float32 feature matrix of modality ``m`` (rows not normalised)."""
        return cast(ModalityProjection, self.proj[m]).feature

    def project(self, m: str) -> torch.Tensor:
        """H_m = proj_m(F_m with L2-normalised rows), (I, d) float32."""
        return self.proj[m]()

    # ------------------------------------------------------------------ views
    def entities(self) -> torch.Tensor:
        """(E, d) layer-0 entity embeddings (item rows first)."""
        if self.share_item_entity:
            return torch.cat([self.item_emb, self.entity_emb], 0)
        return self.entity_emb

    def kg_view(self, g: Graphs) -> torch.Tensor:
        assert g.kg is not None  # the KG view exists only with a KG
        x = self.entities()
        acc = x
        for _ in range(self.cfg.kg_layers):
            x = sk.propagate(g.kg, x, relation_emb=self.relation_emb, backend=self.cfg.backend)
            acc = acc + x
        return (acc / (self.cfg.kg_layers + 1))[: self.num_items]

    def modality_view(self, g: Graphs, m: str) -> torch.Tensor:
        """(I, d): the modality's input (``cfg.modality_input``: its projected features H_m,
        the item ID embeddings, or their sum) over A_m(t), mean over ``modality_layers``."""
        src = self.cfg.modality_input
        h = self.item_emb if src == "ids" else self.project(m)
        if src == "both":
            h = h + self.item_emb
        return sk.propagate_layers(g.modality[m], h, self.cfg.modality_layers, backend=self.cfg.backend)

    def forward(self, g: Graphs) -> ModelOutput:
        """All views and the fused representations (see :class:`ModelOutput`)."""
        zu_cf, zi_cf = interaction_view(self, training_graph(self, g), self.cfg.num_layers)
        if not self.view_names:
            return self.finish(ModelOutput(zu_cf, zi_cf, cf=(zu_cf, zi_cf)))
        item_views = [
            self.kg_view(g) if name == "kg" else self.modality_view(g, name) for name in self.view_names
        ]
        # The item-side views side by side, (I, V*d): users read them through R~ in ONE pass
        # over the interaction edges instead of V passes, and the fusion takes the same
        # stacked tensors on both sides, so its gradient is one (rows, V*d) tensor (no
        # split/cat copies of it).
        zi_all = torch.cat(item_views, 1)
        del item_views
        zu_all = sk.propagate(g.user_item, zi_all, backend=self.cfg.backend)
        d = zi_cf.shape[1]
        views = {
            name: (zu, zi)
            for name, zu, zi in zip(self.view_names, zu_all.split(d, dim=1), zi_all.split(d, dim=1))
        }
        b = self.cfg.backend
        return self.finish(
            ModelOutput(
                fuse_views(zu_cf, self.alpha, zu_all, b),
                fuse_views(zi_cf, self.alpha, zi_all, b),
                cf=(zu_cf, zi_cf),
                views=views,
                stacked=(zu_all, zi_all),
            )
        )

    def calculate_loss(self, g: Graphs, batch: Batch) -> dict:
        """Ranking loss + reg_weight * L2 + sc_weight * consistency."""
        out = self.forward(g)
        parts = self.ranking_terms(out, batch)
        parts["sc"] = torch.zeros((), device=parts["loss"].device)
        if self.cfg.sc_weight > 0 and out.views:
            parts["sc"] = consistency_loss(
                out,
                batch.users_np,
                batch.pos_np,
                max_batch=self.cfg.sc_max_batch,
                temperature=self.cfg.sc_temperature,
                rng=batch.rng,
            )
            parts["loss"] = parts["loss"] + self.cfg.sc_weight * parts["sc"]
        return parts
