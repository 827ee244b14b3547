"""A synthetic dataset whose interactions, item features and KG all reflect the same clusters.

Items belong to one of ``num_clusters`` planted clusters; each user prefers one cluster.
Item popularity and user activity follow power laws. Every structure is generated with
vectorised numpy (no Python loop over users, items or interactions), so millions of items are
fine; memory is linear in users + items + interactions (+ items x feature dims).
"""
from __future__ import annotations

from typing import Optional

import numpy as np

from .dataset import Dataset, split_per_user, unique_pairs

__all__ = ["make_synthetic"]


def make_synthetic(num_users: int = 2000, num_items: int = 1500, *, num_clusters: int = 20,
                   mean_interactions: float = 25.0, min_interactions: int = 5,
                   user_exponent: float = 2.5, item_exponent: float = 0.8,
                   in_cluster: float = 0.8, modalities: Optional[dict] = None,
                   feature_noise: float = 0.6, kg_relations: int = 3, kg_entities_per_cluster: int = 3,
                   kg_noise: float = 0.2, test_fraction: float = 0.2, seed: int = 0,
                   name: str = "synthetic") -> Dataset:
    """Generate a :class:`Dataset` (train/test split, KG, features; no validation split).

    Args:
        num_users, num_items: sizes (>= 1).
        num_clusters: planted clusters shared by interactions, features and KG.
        mean_interactions: target mean number of interactions per user before deduplication.
        min_interactions: lower bound on a user's sampled activity.
        user_exponent: Pareto shape of user activity (smaller = heavier tail).
        item_exponent: Zipf exponent of item popularity inside a cluster.
        in_cluster: probability that an interaction falls in the user's preferred cluster.
        modalities: ``{name: dim}`` of item features to generate; default
            ``{"image": 64, "text": 96}``; ``{}`` for none.
        feature_noise: noise scale of features around the cluster centroid (latent unit scale).
        kg_relations: number of KG relations (0 for no KG). Relation r links each item to one of
            ``kg_entities_per_cluster`` attribute entities of its cluster (with probability
            ``1 - kg_noise``) or to a random attribute entity of relation r.
        test_fraction: per-user share of interactions held out as test.
        seed: everything is a function of the seed.
    """
    if num_users < 1 or num_items < 1:
        raise ValueError(f"num_users and num_items must be >= 1, got {num_users}, {num_items}")
    if not 1 <= num_clusters <= num_items:
        raise ValueError(f"num_clusters must be in [1, num_items], got {num_clusters}")
    if not 0.0 <= in_cluster <= 1.0 or not 0.0 <= kg_noise <= 1.0:
        raise ValueError("in_cluster and kg_noise must be probabilities")
    if modalities is None:
        modalities = {"image": 64, "text": 96}
    rng = np.random.default_rng(seed)

    # Balanced random cluster assignment, so that every cluster has items.
    item_cluster = rng.permutation(np.arange(num_items) % num_clusters)
    user_cluster = rng.integers(0, num_clusters, size=num_users)

    # Item popularity: Zipf over a random within-cluster rank.
    order = np.argsort(item_cluster, kind="stable")           # items grouped by cluster
    counts = np.bincount(item_cluster, minlength=num_clusters)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    rank_in_cluster = np.arange(num_items) - np.repeat(starts, counts)
    rank_in_cluster = rng.permuted(rank_in_cluster.reshape(1, -1), axis=1).ravel()  # shuffled ranks
    weight_sorted = (1.0 + rank_in_cluster) ** (-item_exponent)
    cum = np.cumsum(weight_sorted)
    lo = np.r_[0.0, cum][starts]
    hi = cum[starts + counts - 1]

    # User activity: Pareto tail scaled to the requested mean, at least min_interactions.
    raw = rng.pareto(user_exponent, size=num_users) + 1.0
    activity = np.maximum(min_interactions, np.round(raw * mean_interactions / raw.mean())).astype(np.int64)
    activity = np.minimum(activity, max(1, num_items // 2))
    users = np.repeat(np.arange(num_users, dtype=np.int64), activity)
    n = users.size
    cluster = np.where(rng.random(n) < in_cluster, user_cluster[users],
                       rng.integers(0, num_clusters, size=n))
    r = lo[cluster] + rng.random(n) * (hi[cluster] - lo[cluster])
    pos = np.clip(np.searchsorted(cum, r, side="right"), starts[cluster], starts[cluster] + counts[cluster] - 1)
    items = order[pos]
    pairs = unique_pairs(np.stack([users, items], axis=1), num_items)
    train, test = split_per_user(pairs, test_fraction, seed + 1)

    # Features: a latent cluster centroid plus noise, seen through a random projection per modality.
    latent_dim = 16
    centroids = rng.standard_normal((num_clusters, latent_dim))
    features = {}
    block = 1 << 16  # rows per block: float64 temporaries stay O(block * dim), not O(items * dim)
    for k, (m, dim) in enumerate(sorted(modalities.items())):
        latent = centroids[item_cluster] + feature_noise * rng.standard_normal((num_items, latent_dim))
        proj = rng.standard_normal((latent_dim, int(dim))) / np.sqrt(latent_dim)
        # Row blocks draw the same stream as one (num_items, dim) draw, so the values do not
        # depend on the block size; only the float32 result is allocated at full size.
        out = np.empty((num_items, int(dim)), np.float32)
        for s in range(0, num_items, block):
            e = min(num_items, s + block)
            out[s:e] = latent[s:e] @ proj + 0.1 * rng.standard_normal((e - s, int(dim)))
        features[m] = out

    kg, num_entities = None, num_items
    if kg_relations > 0:
        per_rel = num_clusters * kg_entities_per_cluster
        rel = np.repeat(np.arange(kg_relations, dtype=np.int64), num_items)
        heads = np.tile(np.arange(num_items, dtype=np.int64), kg_relations)
        own = item_cluster[heads] * kg_entities_per_cluster + rng.integers(0, kg_entities_per_cluster, heads.size)
        noisy = rng.random(heads.size) < kg_noise
        attr = np.where(noisy, rng.integers(0, per_rel, heads.size), own)
        tails = num_items + rel * per_rel + attr
        kg = np.stack([heads, rel, tails], axis=1)
        num_entities = num_items + kg_relations * per_rel
    return Dataset(name=name, num_users=num_users, num_items=num_items, train=train, test=test,
                   kg=kg, num_entities=num_entities, num_relations=max(kg_relations, 0),
                   features=features)
