"""What every model shares: the typed forward output, the training batch, the base class the
trainer drives, and the layer-0 initialisation.

A model (one module each under ``slifmr/models/``) is a :class:`Recommender`:

* ``forward(graphs) -> ModelOutput``: full-graph user and item representations for ranking
  (scores are inner products ``<user[u], item[i]>``), plus what its losses need;
* ``calculate_loss(graphs, batch) -> dict``: the training objective of one batch, ``"loss"``
  (the scalar to minimise) and its named parts (logged per epoch);
* ``begin_epoch(epoch, rng)``: per-epoch work before the first batch (FREEDOM prunes its
  user-item graph, LATTICE re-learns its item graph).

The trainer (``slifmr.train``) knows nothing else about a model.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import Config
from ..graphs import Graphs
from ..losses import bpr_loss, l2_reg

__all__ = ["ModelOutput", "Batch", "Recommender", "init_embedding"]


@dataclasses.dataclass
class ModelOutput:
    """A forward pass over the whole graph.

    Attributes:
        user: (U, d) float user representations used for ranking.
        item: (I, d) float item representations used for ranking.
        cf: (Z_u, Z_i) of the interaction view, when the model has one apart from its fusion.
        views: auxiliary view name -> ((U, d), (I, d)) (SLIF-MR; empty elsewhere).
        stacked: ((U, V*d), (I, V*d)): the ``views`` side by side (their entries are column
            slices of these), or None.
    """

    user: torch.Tensor
    item: torch.Tensor
    cf: tuple | None = None
    views: dict = dataclasses.field(default_factory=dict)
    stacked: tuple | None = None


@dataclasses.dataclass
class Batch:
    """One training batch of (user, positive item, negative item) triples.

    ``users`` / ``pos`` / ``neg``: int64 (B,) tensors on the model's device; ``neg`` is (B, M)
    with ``cfg.neg_candidates = M > 1`` until the ranking loss keeps the hardest of each row's
    M candidates (:meth:`Recommender.hard_negatives`) and sets it to that (B,); ``users_np`` /
    ``pos_np``: the same ids as numpy arrays; ``rng``: the epoch's generator (losses that
    subsample the batch draw from it, so a resumed run draws the same).
    """

    users: torch.Tensor
    pos: torch.Tensor
    neg: torch.Tensor
    users_np: np.ndarray
    pos_np: np.ndarray
    rng: np.random.Generator


def init_embedding(rows: int, dim: int, scheme: str) -> nn.Parameter:
    """A (rows, dim) float32 embedding table: ``"normal"`` (std 0.1) or ``"xavier"`` (Xavier
    uniform, the initialisation of LightGCN's, FREEDOM's and LATTICE's reference code)."""
    if scheme == "xavier":
        w = torch.empty(rows, dim)
        if rows:
            nn.init.xavier_uniform_(w)
        return nn.Parameter(w)
    if scheme == "normal":
        return nn.Parameter(torch.randn(rows, dim) * 0.1)
    raise ValueError(f"init must be 'normal' or 'xavier', got {scheme!r}")


class Recommender(nn.Module):
    """Base class: user and item ID embeddings, a ranking loss + L2 on the batch's layer-0 rows.

    Subclasses implement :meth:`forward` (ending in :meth:`finish`); the default
    :meth:`calculate_loss` is the ranking loss on the forward's representations plus
    ``cfg.reg_weight`` times L2 on the batch's ID embeddings, which subclasses extend.

    The ranking loss (``cfg.loss``):

    * ``"bpr"``: -log sigmoid(<u, i+> - <u, i->) with the batch's one sampled negative per
      triple; scores are inner products (LightGCN's, FREEDOM's and LATTICE's objective).
    * ``"softmax"``: sampled softmax over cosine scores with temperature ``softmax_temperature``:
      the positive against ``num_negatives`` items drawn uniformly once per batch and shared by
      its rows, -log(e^{s+/t} / (e^{s+/t} + sum_j e^{s_j/t})). The forward's representations
      are then L2-normalised (:meth:`finish`), so ranking uses the same cosine score.
    """

    #: names of the parts :meth:`calculate_loss` returns after the ranking loss, in log order
    extra_parts: tuple = ("reg",)

    def __init__(self, num_users: int, num_items: int, cfg: Config):
        super().__init__()
        self.cfg = cfg
        self.num_users, self.num_items = int(num_users), int(num_items)
        self.user_emb = init_embedding(self.num_users, cfg.embed_dim, cfg.init)
        self.item_emb = init_embedding(self.num_items, cfg.embed_dim, cfg.init)

    @property
    def loss_parts(self) -> tuple:
        """Names of the parts :meth:`calculate_loss` returns besides "loss", in log order."""
        return (self.cfg.loss,) + tuple(self.extra_parts)

    @property
    def view_names(self) -> list:
        """Auxiliary views whose weights the trainer logs (none by default)."""
        return []

    def begin_epoch(self, epoch: int, rng: np.random.Generator) -> None:
        """Per-epoch work before the first batch (nothing by default)."""

    def forward(self, g: Graphs) -> ModelOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def finish(self, out: ModelOutput) -> ModelOutput:
        """The ranking representations of a forward: L2-normalised rows when the model is
        trained on cosine scores (``loss: softmax``), as they are otherwise."""
        if self.cfg.loss == "softmax":
            out.user = F.normalize(out.user, dim=1)
            out.item = F.normalize(out.item, dim=1)
        return out

    def calculate_loss(self, g: Graphs, batch: Batch) -> dict:
        """{"loss": scalar to minimise, <ranking loss>: ..., "reg": ...} for one batch."""
        out = self.forward(g)
        return self.ranking_terms(out, batch)

    def hard_negatives(self, out: ModelOutput, batch: Batch) -> None:
        """Dynamic negative sampling: where ``batch.neg`` holds M > 1 uniform candidates per
        triple, (B, M), keep the one the model scores highest for the row's user (the hardest,
        under the current representations; no gradient flows through the choice) and make
        ``batch.neg`` that (B,). Uniform negatives become easy as training goes on (most
        unseen items already score far below the positive, their BPR gradient vanishes); the
        hardest of a few keeps the gradient informative."""
        if batch.neg.dim() != 2:
            return
        with torch.no_grad():
            eu = out.user[batch.users]
            scores = torch.einsum("bd,bmd->bm", eu, out.item[batch.neg])
            pick = scores.argmax(1, keepdim=True)
        batch.neg = batch.neg.gather(1, pick)[:, 0]

    def ranking_loss(self, out: ModelOutput, batch: Batch) -> torch.Tensor:
        """The batch's ranking loss (``cfg.loss``, see the class docstring), a scalar. Resolves
        ``batch.neg`` to one negative per triple first (:meth:`hard_negatives`)."""
        self.hard_negatives(out, batch)
        eu = out.user[batch.users]
        if self.cfg.loss == "bpr":
            return bpr_loss((eu * out.item[batch.pos]).sum(1), (eu * out.item[batch.neg]).sum(1))
        shared = torch.from_numpy(batch.rng.integers(0, self.num_items, self.cfg.num_negatives))
        t = self.cfg.softmax_temperature
        pos = (eu * out.item[batch.pos]).sum(1, keepdim=True) / t
        neg = eu @ out.item[shared.to(eu.device)].t() / t
        return (torch.logsumexp(torch.cat([pos, neg], 1), 1) - pos[:, 0]).mean()

    def ranking_terms(self, out: ModelOutput, batch: Batch) -> dict:
        """The ranking loss on ``out``'s representations and L2 on the batch's layer-0
        embeddings: {"loss", cfg.loss, "reg"}."""
        rank = self.ranking_loss(out, batch)
        reg = l2_reg(self.user_emb[batch.users], self.item_emb[batch.pos], self.item_emb[batch.neg])
        return {"loss": rank + self.cfg.reg_weight * reg, self.cfg.loss: rank, "reg": reg}
