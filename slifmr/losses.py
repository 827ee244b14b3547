"""Training losses: BPR, semantic-consistency InfoNCE, L2 on the batch embeddings."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["bpr_loss", "info_nce", "l2_reg", "consistency_loss"]


def bpr_loss(pos_scores: torch.Tensor, neg_scores: torch.Tensor) -> torch.Tensor:
    """Bayesian personalised ranking: mean of -log sigmoid(s+ - s-). Inputs (B,), output scalar."""
    if pos_scores.shape != neg_scores.shape:
        raise ValueError(f"pos_scores and neg_scores must have the same shape, got "
                         f"{tuple(pos_scores.shape)} and {tuple(neg_scores.shape)}")
    return -F.logsigmoid(pos_scores - neg_scores).mean()


def info_nce(a: torch.Tensor, b: torch.Tensor, temperature: float = 0.2) -> torch.Tensor:
    """Symmetric InfoNCE between two views of the same B objects (rows aligned).

    Row i of ``a`` and row i of ``b`` are the positive pair; the other rows of the batch are the
    negatives. Cosine similarity over ``temperature``. a, b: (B, d) -> scalar. B = 0 gives 0.
    """
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(f"a and b must be (B, d) of the same shape, got {tuple(a.shape)} and {tuple(b.shape)}")
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
    total = sum(t.pow(2).sum() for t in tensors)
    return 0.5 * total / max(tensors[0].shape[0], 1)


def consistency_loss(out: dict, users: np.ndarray, items: np.ndarray, *, max_batch: int,
                     temperature: float, rng: np.random.Generator) -> torch.Tensor:
    """Semantic consistency: InfoNCE between every auxiliary view and the interaction view (users
    and items), and between every pair of modality views (items), averaged.

    Args:
        out: the model's forward output: ``out["cf"] = (Z_u, Z_i)`` of the interaction view and
            ``out["views"][name] = (Z_u^v, Z_i^v)`` per auxiliary view ("kg" is not a modality).
        users, items: the batch's user / positive item ids (numpy int); distinct ids are used,
            at most ``max_batch`` of each (sampled with ``rng``) so the B×B logits stay small.
    """
    uu, ii = np.unique(users), np.unique(items)
    if uu.size > max_batch:
        uu = rng.choice(uu, max_batch, replace=False)
    if ii.size > max_batch:
        ii = rng.choice(ii, max_batch, replace=False)
    zu_cf, zi_cf = out["cf"]
    tu = torch.from_numpy(uu).to(zu_cf.device)
    ti = torch.from_numpy(ii).to(zi_cf.device)
    views = out["views"]
    terms = []
    for vu, vi in views.values():
        terms.append(info_nce(vi[ti], zi_cf[ti], temperature))
        terms.append(info_nce(vu[tu], zu_cf[tu], temperature))
    mods = [n for n in views if n != "kg"]
    for a in range(len(mods)):
        for b in range(a + 1, len(mods)):
            terms.append(info_nce(views[mods[a]][1][ti], views[mods[b]][1][ti], temperature))
    return torch.stack(terms).mean()
