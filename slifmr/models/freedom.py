"""FREEDOM (Zhou and Shen, ACM MM 2023: "A Tale of Two Graphs: Freezing and Denoising Graph
Structures for Multimodal Recommendation") on the kernels.

* Item-item graph, frozen: per modality the cosine kNN graph of the raw features (each item
  among its own k neighbours), normalised with row sums on both sides, mixed as
  ``image_graph_weight`` * image + (1 - that) * text; built once with ``sk`` top-k. The item
  ID embeddings are propagated over it ``modality_layers`` times: H.
* User-item graph, denoised: before every epoch, (1 - ``prune_ratio``) of the training
  interactions are kept, sampled without replacement with probability proportional to
  1 / sqrt(d_u d_i) (degree-sensitive pruning), and re-normalised; LightGCN over ``num_layers``
  layers runs on that graph in training and on the full graph for evaluation.
* Items: Z_i = LightGCN item + H; users: LightGCN user. BPR, plus ``modality_bpr_weight`` times
  a BPR of the users against each modality's projected raw features (the reference code's
  auxiliary term), plus ``reg_weight`` * L2 on the batch's ID embeddings (0 by default: the
  reference uses none).
"""

from __future__ import annotations

import numpy as np
import torch

import slifmr_kernels as sk

from ..config import Config
from ..graphs import Graphs, degree_sensitive_sample, degree_weights
from ..losses import bpr_loss
from .base import Batch, ModelOutput, Recommender
from .features import raw_feature_projections
from .item_graphs import mixed_feature_graph
from .lightgcn import interaction_view

__all__ = ["FREEDOM", "modality_weights", "degree_sensitive_sample"]


def modality_weights(names, image_weight: float) -> list:
    """The mixing weights of the modality graphs: ``image_weight`` for "image" and the rest
    shared equally by the others; one modality alone gets 1."""
    if len(names) == 1:
        return [1.0]
    others = [n for n in names if n != "image"]
    if len(others) == len(names):
        return [1.0 / len(names)] * len(names)
    return [image_weight if n == "image" else (1.0 - image_weight) / len(others) for n in names]


class FREEDOM(Recommender):
    """FREEDOM (see the module docstring).

    Args:
        num_users, num_items: id space sizes.
        cfg: ``embed_dim``, ``num_layers`` (user-item layers), ``modality_layers`` (item-item
            layers), ``knn_k``, ``image_graph_weight``, ``prune_ratio``, ``modality_bpr_weight``,
            ``reg_weight``, ``init``, ``backend``.
        train: int64 (n, 2) training (user, item) pairs (the graph that is pruned).
        features: modality name -> (I, d_m) float array; the names in ``cfg.modalities`` present
            here are used.
    """

    extra_parts = ("modality_bpr", "reg")

    def __init__(
        self, num_users: int, num_items: int, cfg: Config, *, train: np.ndarray, features: dict | None = None
    ):
        super().__init__(num_users, num_items, cfg)
        self.modalities, self.proj = raw_feature_projections(features, cfg)
        self.item_graph = None
        if self.modalities:
            self.item_graph = mixed_feature_graph(
                [self.proj[m].feature for m in self.modalities],
                modality_weights(self.modalities, cfg.image_graph_weight),
                cfg.knn_k,
                self.num_items,
                backend=cfg.backend,
            )
        u, i = train[:, 0].astype(np.int64), train[:, 1].astype(np.int64)
        self._edges = (u, i)
        self._edge_weight = degree_weights(u, i, self.num_users, self.num_items)
        self._pruned: sk.CSRGraph | None = None

    def begin_epoch(self, epoch: int, rng: np.random.Generator) -> None:
        """Prune the user-item graph for this epoch (degree-sensitive, seeded by ``rng``)."""
        if self.cfg.prune_ratio <= 0:
            self._pruned = None
            return
        u, i = self._edges
        keep = degree_sensitive_sample(self._edge_weight, int(u.size * (1.0 - self.cfg.prune_ratio)), rng)
        self._pruned = self._bipartite(u[keep], i[keep])

    def _bipartite(self, u: np.ndarray, i: np.ndarray) -> sk.CSRGraph:
        """The (U+I) x (U+I) graph [[0, R], [R^T, 0]] of the edges, D^-1/2 A D^-1/2 by the
        kept edges' degrees."""
        U, n = self.num_users, self.num_users + self.num_items
        du = np.bincount(u, minlength=self.num_users)
        di = np.bincount(i, minlength=self.num_items)
        v = (1.0 / np.sqrt(du[u] * di[i])).astype(np.float32)
        src = torch.from_numpy(np.concatenate([u, i + U]))
        dst = torch.from_numpy(np.concatenate([i + U, u]))
        g = sk.CSRGraph.from_edges(src, dst, torch.from_numpy(np.concatenate([v, v])), shape=(n, n))
        return g.to(self.user_emb.device) if self.user_emb.device.type != "cpu" else g

    def item_view(self) -> torch.Tensor:
        """H: the item ID embeddings over the frozen item-item graph, (I, d)."""
        h: torch.Tensor = self.item_emb
        if self.item_graph is None:
            return torch.zeros_like(h)
        for _ in range(self.cfg.modality_layers):
            h = sk.propagate(self.item_graph, h, backend=self.cfg.backend)
        return h

    def forward(self, g: Graphs) -> ModelOutput:
        adj = self._pruned if (self.training and self._pruned is not None) else g.adj
        zu, zi = interaction_view(self, adj, self.cfg.num_layers)
        return self.finish(ModelOutput(zu, zi + self.item_view(), cf=(zu, zi)))

    def calculate_loss(self, g: Graphs, batch: Batch) -> dict:
        out = self.forward(g)
        parts = self.ranking_terms(out, batch)
        eu = out.user[batch.users]
        aux = torch.zeros((), device=eu.device)
        for m in self.modalities:
            f = self.proj[m]()
            aux = aux + bpr_loss((eu * f[batch.pos]).sum(1), (eu * f[batch.neg]).sum(1))
        parts["modality_bpr"] = aux
        parts["loss"] = parts["loss"] + self.cfg.modality_bpr_weight * aux
        return parts
