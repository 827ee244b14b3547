"""Modality features inside a model: the (I, d_m) matrices as buffers and their projections."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

__all__ = ["ModalityProjection", "raw_feature_projections", "NORM_EPS"]

#: rows with a smaller L2 norm count as zero rows when normalised (F.normalize's eps)
NORM_EPS = 1e-12


class ModalityProjection(nn.Module):
    feature: torch.Tensor
    inv_norm: torch.Tensor | None

    """H_m = W_m F_m + b_m for one modality, (I, d) float32.

    Args:
        features: (I, d_m) float array or tensor; a float32 C-contiguous array is shared with
            the dataset (zero copy). Stored as a non-persistent buffer: it is data, not a
            parameter, so checkpoints stay small.
        dim: output width d.
        normalize_rows: project L2-normalised feature rows (SLIF-MR) instead of raw ones
            (FREEDOM and LATTICE project the raw features).

    Rows are normalised through (I,) inverse norms applied after the projection
    (W (f / |f|) = (W f) / |f|), never through a normalised (I, d_m) copy: at a million items
    and d_m = 448 the copy alone would be 1.7 GiB.
    """

    def __init__(self, features, dim: int, normalize_rows: bool = True):
        super().__init__()
        f = torch.as_tensor(np.asarray(features), dtype=torch.float32)
        if f.dim() != 2:
            raise ValueError(f"features must be (num_items, d), got {tuple(f.shape)}")
        self.register_buffer("feature", f.contiguous(), persistent=False)
        inv = 1.0 / f.norm(dim=1).clamp_min(NORM_EPS) if normalize_rows else None
        self.register_buffer("inv_norm", inv, persistent=False)
        self.linear = nn.Linear(f.shape[1], dim)

    def forward(self) -> torch.Tensor:
        """(I, d) float32 projected features. Autograd keeps F_m (the buffer itself) and the
        (I,) inverse norms, nothing of size I x d_m."""
        h = torch.mm(self.feature, self.linear.weight.t())
        if self.inv_norm is not None:
            h = h * self.inv_norm[:, None]
        return h + self.linear.bias


def raw_feature_projections(features, cfg) -> tuple:
    """``(modalities, ModuleDict)``: the names of ``cfg.modalities`` present in ``features``
    and a :class:`ModalityProjection` of each one's raw (not row-normalised) features, as
    FREEDOM and LATTICE project them. ``proj[m].feature`` is the (I, d_m) float32 tensor their
    feature graphs are built from."""
    features = features or {}
    modalities = [m for m in (cfg.modalities or []) if m in features]
    proj = nn.ModuleDict(
        {m: ModalityProjection(features[m], cfg.embed_dim, normalize_rows=False) for m in modalities}
    )
    return modalities, proj
