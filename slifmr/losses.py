"""Training losses: BPR, semantic-consistency InfoNCE, L2 on the batch embeddings."""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["bpr_loss", "info_nce", "l2_reg"]


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
