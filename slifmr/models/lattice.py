"""LATTICE (Zhang et al., ACM MM 2021: "Mining Latent Structures for Multimedia
Recommendation") on the kernels.

* Frozen item-item graphs: per modality the cosine kNN graph of the raw features (each item
  among its own k neighbours), normalised with row sums on both sides.
* Learned item-item graph: the same construction over the *projected* features W_m F_m, the
  modalities mixed with softmax weights before normalising; item graph =
  (1 - ``frozen_graph_weight``) * learned + ``frozen_graph_weight`` * sum_m w_m * frozen_m.
  The kNN structure comes from ``sk`` top-k (no I x I similarity matrix); as in the reference
  code the graph is re-learned at the first batch of every epoch (whose gradient reaches the
  projections and the modality weights through the edge values) and for evaluation, and held
  constant for the other batches.
* H = the item ID embeddings over the item graph (``modality_layers`` times); items:
  Z_i = LightGCN item + normalize(H); users: LightGCN user. BPR plus ``reg_weight`` * L2 of
  the batch's *propagated* representations (the reference code's regulariser).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

import slifmr_kernels as sk

from ..config import Config
from ..graphs import Graphs
from ..losses import l2_reg
from .base import Batch, ModelOutput, Recommender
from .features import raw_feature_projections
from .item_graphs import (
    edge_cosine,
    graph_from_edges,
    knn_edges,
    mixed_feature_graph,
    propagate_edges,
    row_sum_normalized,
)
from .lightgcn import interaction_view

__all__ = ["LATTICE"]


class LATTICE(Recommender):
    """LATTICE (see the module docstring).

    Args:
        num_users, num_items: id space sizes.
        cfg: ``embed_dim``, ``num_layers`` (user-item layers), ``modality_layers``, ``knn_k``,
            ``frozen_graph_weight``, ``reg_weight``, ``init``, ``backend``.
        features: modality name -> (I, d_m) float array; the names in ``cfg.modalities`` present
            here are used.
    """

    def __init__(self, num_users: int, num_items: int, cfg: Config, *, features: dict | None = None):
        super().__init__(num_users, num_items, cfg)
        self.modalities, self.proj = raw_feature_projections(features, cfg)
        self.frozen = [
            mixed_feature_graph([self.proj[m].feature], [1.0], cfg.knn_k, self.num_items, backend=cfg.backend)
            for m in self.modalities
        ]
        self.modal_logits = nn.Parameter(torch.zeros(len(self.modalities)))  # softmax: equal weights
        self._learned: sk.CSRGraph | None = None
        self._relearn = True

    def begin_epoch(self, epoch: int, rng: np.random.Generator) -> None:
        self._relearn = True

    def _learned_edges(self, weights: torch.Tensor) -> tuple:
        """(rows, cols, values) of the normalised learned graph, values differentiable in the
        projections and ``weights``."""
        row_parts, col_parts, vals = [], [], []
        for w, m in zip(weights, self.modalities):
            f = self.proj[m]()
            r, c = knn_edges(f, self.cfg.knn_k, backend=self.cfg.backend)
            row_parts.append(r)
            col_parts.append(c)
            vals.append(w * edge_cosine(f, r, c))
        rows, cols = torch.cat(row_parts), torch.cat(col_parts)
        return rows, cols, row_sum_normalized(rows, cols, torch.cat(vals), self.num_items)

    def item_view(self) -> torch.Tensor:
        """H over the item graph, (I, d)."""
        h = self.item_emb
        if not self.modalities:
            return torch.zeros_like(h)
        lam, b = self.cfg.frozen_graph_weight, self.cfg.backend
        weights = torch.softmax(self.modal_logits, 0)
        relearn = self._relearn or not self.training
        if relearn:
            rows, cols, vals = self._learned_edges(weights)
            self._learned = graph_from_edges(rows, cols, vals, self.num_items)
            self._relearn = False
        else:
            weights = weights.detach()
        for _ in range(self.cfg.modality_layers):
            frozen = sum(w * sk.propagate(gm, h, backend=b) for w, gm in zip(weights, self.frozen))
            if relearn and torch.is_grad_enabled():
                learned = propagate_edges(rows, cols, vals, h)
            else:
                assert self._learned is not None  # built by the first training step or here
                learned = sk.propagate(self._learned, h, backend=b)
            h = (1.0 - lam) * learned + lam * frozen
        return h

    def forward(self, g: Graphs) -> ModelOutput:
        zu, zi = interaction_view(self, g.adj, self.cfg.num_layers)
        return self.finish(ModelOutput(zu, zi + F.normalize(self.item_view(), dim=1), cf=(zu, zi)))

    def calculate_loss(self, g: Graphs, batch: Batch) -> dict:
        out = self.forward(g)
        rank = self.ranking_loss(out, batch)
        reg = l2_reg(out.user[batch.users], out.item[batch.pos], out.item[batch.neg])
        return {"loss": rank + self.cfg.reg_weight * reg, self.cfg.loss: rank, "reg": reg}
