"""Full-ranking evaluation: Recall / NDCG / Precision / Hit @ K over all items.

Ranking goes through ``slifmr_kernels.topk_scores`` with each user's known items (train, and at
test time validation) excluded, so no U x I score matrix is ever built. Metrics are averaged
over the users that have at least one held-out item; users without interactions in the
evaluated split are skipped, users without training interactions are ranked like any other.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import scipy.sparse as sp
import torch

import slifmr_kernels as sk

from .graphs import to_csr_graph

__all__ = ["rank_metrics", "metrics_from_topk", "recommend"]


def metrics_from_topk(
    top_items: np.ndarray, users: np.ndarray, truth: sp.csr_matrix, ks: Iterable[int]
) -> dict:
    """Metrics from ranked lists.

    Args:
        top_items: int64 (n, K_max) ranked item ids per evaluated user, -1 = no item.
        users: int64 (n,) the user of each row.
        truth: CSR (num_users, num_items) of held-out items (any nonzero = relevant).
        ks: cut-offs (each <= K_max).
    Returns:
        ``{"recall@K", "ndcg@K", "precision@K", "hit@K"}`` averaged over the n users, plus
        ``"num_users"``.
    """
    n, kmax = top_items.shape
    out: dict[str, float] = {"num_users": int(n)}
    n_rel = np.diff(truth.indptr)[users]
    if n == 0:
        for k in ks:
            for name in ("recall", "ndcg", "precision", "hit"):
                out[f"{name}@{k}"] = 0.0
        return out
    # Membership test by sorted (user, item) keys: vectorised, no per-user loop.
    num_items = truth.shape[1]
    coo = truth.tocoo()
    truth_keys = np.sort(coo.row.astype(np.int64) * num_items + coo.col)
    valid = top_items >= 0
    keys = users[:, None].astype(np.int64) * num_items + np.where(valid, top_items, 0)
    pos = np.minimum(np.searchsorted(truth_keys, keys), max(truth_keys.size - 1, 0))
    hits = (
        valid & (truth_keys.size > 0) & (truth_keys[pos] == keys) if truth_keys.size else np.zeros_like(valid)
    )
    discount = 1.0 / np.log2(np.arange(2, kmax + 2))
    ideal_cum = np.cumsum(discount)
    for k in ks:
        if k > kmax:
            raise ValueError(f"cut-off {k} exceeds the ranked list length {kmax}")
        h = hits[:, :k]
        nh = h.sum(1)
        dcg = (h * discount[:k]).sum(1)
        idcg = ideal_cum[np.minimum(n_rel, k) - 1]
        out[f"recall@{k}"] = float(np.mean(nh / n_rel))
        out[f"ndcg@{k}"] = float(np.mean(dcg / idcg))
        out[f"precision@{k}"] = float(np.mean(nh / k))
        out[f"hit@{k}"] = float(np.mean(nh > 0))
    return out


@torch.no_grad()
def recommend(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    users: np.ndarray,
    k: int,
    exclude: sp.csr_matrix | None = None,
    backend: str = "auto",
    chunk: int = 65536,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items for ``users`` (int64 (n,)) by inner product, ``exclude`` rows masked.

    ``exclude``: CSR (num_users, num_items) of known items, or None. Users are processed in
    chunks so the exclusion slices stay small. Returns (items int64 (n, k), scores float32
    (n, k)), -1 / -inf padding where fewer than k items are allowed.
    """
    users = np.asarray(users, dtype=np.int64)
    n = users.size
    k = int(k)
    items_out = np.full((n, k), -1, np.int64)
    scores_out = np.full((n, k), -np.inf, np.float32)
    item_emb = item_emb.detach().contiguous()
    for s in range(0, n, chunk):
        uc = users[s : s + chunk]
        ue = user_emb.detach()[torch.from_numpy(uc).to(user_emb.device)].contiguous()
        excl = None
        if exclude is not None:
            excl = to_csr_graph(exclude[uc], device=item_emb.device)
        idx, val = sk.topk_scores(ue, item_emb, k, exclude=excl, backend=backend)
        items_out[s : s + len(uc)] = idx.cpu().numpy()
        scores_out[s : s + len(uc)] = val.float().cpu().numpy()
    return items_out, scores_out


def rank_metrics(
    user_emb: torch.Tensor,
    item_emb: torch.Tensor,
    truth: sp.csr_matrix,
    exclude: sp.csr_matrix | None,
    ks: Iterable[int] = (10, 20),
    backend: str = "auto",
) -> dict:
    """Full-ranking metrics of embeddings against held-out interactions.

    Args:
        user_emb: (num_users, d); item_emb: (num_items, d) — same dtype.
        truth: CSR (num_users, num_items) held-out items (valid or test).
        exclude: CSR (num_users, num_items) items never ranked (train, + valid at test time).
        ks: cut-offs.
    """
    ks = sorted({int(k) for k in ks})
    users = np.nonzero(np.diff(truth.indptr) > 0)[0].astype(np.int64)
    top, _ = recommend(user_emb, item_emb, users, max(ks), exclude, backend=backend)
    return metrics_from_topk(top, users, truth, ks)
