"""Training losses: BPR, semantic-consistency InfoNCE, L2 on the batch embeddings."""

from __future__ import annotations

from typing import cast

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["bpr_loss", "info_nce", "l2_reg", "consistency_loss", "rows"]


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: mean of -log sigmoid(s+ - s-). Inputs (B,), output scalar."""
    if pos_scores.shape != neg_scores.shape:
        raise ValueError(
            f"pos_scores and neg_scores must have the same shape, got "
            f"{tuple(pos_scores.shape)} and {tuple(neg_scores.shape)}"
        )
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Symmetric InfoNCE between two views of the same B objects (rows aligned).

    Row i of ``a`` and row i of ``b`` are the positive pair; the other rows of the batch are the
    negatives. Cosine similarity over ``temperature``. a, b: (B, d) -> scalar. B = 0 gives 0.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"a and b must be (B, d) of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )
    if a.shape[0] == 0:
        return a.sum() * 0.0
    a = F.normalize(a, dim=1)
    b = F.normalize(b, dim=1)
    logits = a @ b.t() / temperature
    target = torch.arange(a.shape[0], device=a.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))


def l2_reg(*tensors: torch.Tensor) -> torch.Tensor:
    """Sum of squared entries / 2, divided by the batch size (rows of the first tensor)."""
    if not tensors:
        raise ValueError("l2_reg needs at least one tensor")
    total = cast(torch.Tensor, sum(t.pow(2).sum() for t in tensors))
    return 0.5 * total / max(tensors[0].shape[0], 1)


def consistency_loss(
    out, users: np.ndarray, items: np.ndarray, *, max_batch: int, temperature: float, rng: np.random.Generator
) -> torch.Tensor:
    """Semantic consistency: InfoNCE between every auxiliary view and the interaction view (users
    and items), and between every pair of modality views (items), averaged.

    Args:
        out: the model's forward output (:class:`slifmr.models.ModelOutput`): ``out.cf =
            (Z_u, Z_i)`` of the interaction view and ``out.views[name] = (Z_u^v, Z_i^v)`` per
            auxiliary view ("kg" is not a modality); optionally ``out.stacked = (users (U,
            V*d), items (I, V*d))``, the same views side by side in the order of ``out.views``
            (gathered from there when given).
        users, items: the batch's user / positive item ids (numpy int); distinct ids are used,
            at most ``max_batch`` of each (sampled with ``rng``) so the B×B logits stay small.
    """
    uu, ii = np.unique(users), np.unique(items)
    if uu.size > max_batch:
        uu = rng.choice(uu, max_batch, replace=False)
    if ii.size > max_batch:
        ii = rng.choice(ii, max_batch, replace=False)
    zu_cf, zi_cf = out.cf
    tu = torch.from_numpy(uu).to(zu_cf.device)
    ti = torch.from_numpy(ii).to(zi_cf.device)
    names = list(out.views)
    stacked = out.stacked
    if stacked is not None:
        # The views side by side (N, V*d): one gather per side, its sparse gradient goes
        # straight into the stacked tensor's (no per-view split/cat of full-size gradients).
        d = zu_cf.shape[1]
        rows_u = dict(zip(names, rows(stacked[0], tu).split(d, dim=1)))
        rows_i = dict(zip(names, rows(stacked[1], ti).split(d, dim=1)))
    else:
        rows_u = {n: rows(v[0], tu) for n, v in out.views.items()}
        rows_i = {n: rows(v[1], ti) for n, v in out.views.items()}
    cu, ci = rows(zu_cf, tu), rows(zi_cf, ti)
    terms = []
    for n in names:
        terms.append(info_nce(rows_i[n], ci, temperature))
        terms.append(info_nce(rows_u[n], cu, temperature))
    mods = [n for n in names if n != "kg"]
    for a in range(len(mods)):
        for b in range(a + 1, len(mods)):
            terms.append(info_nce(rows_i[mods[a]], rows_i[mods[b]], temperature))
    return torch.stack(terms).mean()


def rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x[idx]`` for a (N, d) tensor and a few int64 row ids, with a sparse gradient.

    ``x[idx]`` would give x a dense (N, d) gradient, mostly zeros: for the consistency loss's
    256 rows of each view that is several full-size tensors per step (GiBs at a million
    users). The sparse gradient (``F.embedding(sparse=True)``) is added into the dense one
    that x receives from the fused representations.
    """
    return F.embedding(idx, x, sparse=True)
