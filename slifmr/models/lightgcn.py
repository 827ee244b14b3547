"""LightGCN (He et al., SIGIR 2020): ID embeddings averaged over ``num_layers`` propagations on
the symmetric-normalised user-item graph, scored by inner product, trained with BPR + L2."""

from __future__ import annotations

import torch

import slifmr_kernels as sk

from ..config import Config
from ..graphs import Graphs
from .base import ModelOutput, Recommender

__all__ = ["LightGCN", "interaction_view", "training_graph"]


def training_graph(model: Recommender, g: Graphs) -> sk.CSRGraph:
    """A(t) of the interaction view: ``g.train_adj`` (some user-item edges dropped) while the
    model trains, when the epoch has one; else ``g.adj``."""
    return g.train_adj if (model.training and g.train_adj is not None) else g.adj


def interaction_view(model: Recommender, adj: sk.CSRGraph, num_layers: int) -> tuple:
    """(Z_u (U, d), Z_i (I, d)): the mean of layers 0..num_layers of the ID embeddings
    propagated over ``adj`` ((U+I) x (U+I), users first)."""
    x = torch.cat([model.user_emb, model.item_emb], 0)
    z = sk.propagate_layers(adj, x, num_layers, backend=model.cfg.backend)
    # split, not two slices: one backward node assembles one (U+I, d) gradient instead of
    # two zero-padded ones and their sum.
    zu, zi = z.split([model.num_users, model.num_items])
    return zu, zi


class LightGCN(Recommender):
    """LightGCN on ``graphs.adj`` (the static graph: the trainer gives this model no feedback).

    Args:
        num_users, num_items: id space sizes.
        cfg: ``embed_dim``, ``num_layers``, ``init``, ``reg_weight``, ``backend``.
    """

    def __init__(self, num_users: int, num_items: int, cfg: Config):
        super().__init__(num_users, num_items, cfg)

    def forward(self, g: Graphs) -> ModelOutput:
        zu, zi = interaction_view(self, training_graph(self, g), self.cfg.num_layers)
        return self.finish(ModelOutput(zu, zi, cf=(zu, zi)))
