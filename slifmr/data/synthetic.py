"""A synthetic dataset whose interactions, item features and KG all reflect the same clusters.

Items belong to one of ``num_clusters`` planted clusters; each user prefers one cluster.
Item popularity and user activity follow power laws. Every structure is generated with
vectorised numpy (no Python loop over users, items or interactions), so millions of items are
fine; memory is linear in users + items + interactions (+ items x feature dims).
"""

from __future__ import annotations

import inspect
import math
import numbers

import numpy as np

from .dataset import Dataset, split_per_user, unique_pairs

__all__ = ["make_synthetic", "check_synthetic_params"]

# Counts stay below 2^31: numpy and torch take them as C ints, and the arrays they size must fit.
_MAX_COUNT = 2**31 - 1


def make_synthetic(
    num_users: int = 2000,
    num_items: int = 1500,
    *,
    num_clusters: int = 20,
    mean_interactions: float = 25.0,
    min_interactions: int = 5,
    user_exponent: float = 2.5,
    item_exponent: float = 0.8,
    in_cluster: float = 0.8,
    modalities: dict | None = None,
    feature_noise: float = 0.6,
    kg_relations: int = 3,
    kg_entities_per_cluster: int = 3,
    kg_noise: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    name: str = "synthetic",
) -> Dataset:
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
    check_synthetic_params(dict(locals()))  # first statement: locals() = the arguments
    if modalities is None:
        modalities = {"image": 64, "text": 96}
    rng = np.random.default_rng(seed)

    # Balanced random cluster assignment, so that every cluster has items.
    item_cluster = rng.permutation(np.arange(num_items) % num_clusters)
    user_cluster = rng.integers(0, num_clusters, size=num_users)

    # Item popularity: Zipf over a random within-cluster rank.
    order = np.argsort(item_cluster, kind="stable")  # items grouped by cluster
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
    cluster = np.where(rng.random(n) < in_cluster, user_cluster[users], rng.integers(0, num_clusters, size=n))
    r = lo[cluster] + rng.random(n) * (hi[cluster] - lo[cluster])
    pos = np.clip(
        np.searchsorted(cum, r, side="right"), starts[cluster], starts[cluster] + counts[cluster] - 1
    )
    items = order[pos]
    pairs = unique_pairs(np.stack([users, items], axis=1), num_items)
    train, test = split_per_user(pairs, test_fraction, seed + 1)

    # Features: a latent cluster centroid plus noise, seen through a random projection per modality.
    latent_dim = 16
    centroids = rng.standard_normal((num_clusters, latent_dim))
    features = {}
    block = 1 << 16  # rows per block: float64 temporaries stay O(block * dim), not O(items * dim)
    for m, dim in sorted(modalities.items()):
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
        own = item_cluster[heads] * kg_entities_per_cluster + rng.integers(
            0, kg_entities_per_cluster, heads.size
        )
        noisy = rng.random(heads.size) < kg_noise
        attr = np.where(noisy, rng.integers(0, per_rel, heads.size), own)
        tails = num_items + rel * per_rel + attr
        kg = np.stack([heads, rel, tails], axis=1)
        num_entities = num_items + kg_relations * per_rel
    return Dataset(
        name=name,
        num_users=num_users,
        num_items=num_items,
        train=train,
        test=test,
        kg=kg,
        num_entities=num_entities,
        num_relations=max(kg_relations, 0),
        features=features,
    )


# ------------------------------------------------------------------ parameter checks
def _count(lo: int, hi: int = _MAX_COUNT):
    """An integer in [lo, hi] (a count, a size or a seed)."""

    def check(v):
        ok = isinstance(v, numbers.Integral) and not isinstance(v, bool) and lo <= v <= hi
        return None if ok else f"an integer in [{lo}, {hi}]"

    return check


def _real(lo: float, hi: float = math.inf, hi_open: bool = False, lo_open: bool = False):
    """A finite real number between lo and hi (each bound open or closed)."""

    def check(v):
        ok = (
            isinstance(v, numbers.Real)
            and not isinstance(v, bool)
            and math.isfinite(v)
            and (lo < v if lo_open else lo <= v)
            and (v < hi if hi_open else v <= hi)
        )
        if ok:
            return None
        left, right = "(" if lo_open else "[", ")" if hi_open or hi == math.inf else "]"
        return f"a finite number in {left}{lo}, {'inf' if hi == math.inf else hi}{right}"

    return check


def _modalities(v):
    """None, or {name: feature dimension >= 1}."""
    if v is None:
        return None
    if isinstance(v, dict) and all(isinstance(k, str) and _count(1)(d) is None for k, d in v.items()):
        return None
    return "a mapping of modality names to dimensions >= 1"


# One check per parameter of make_synthetic; each returns None (fine) or what was expected.
_CHECKS = {
    "num_users": _count(1),
    "num_items": _count(1),
    "num_clusters": _count(1),
    "mean_interactions": _real(0, lo_open=True),
    "min_interactions": _count(0),
    "user_exponent": _real(0, lo_open=True),
    "item_exponent": _real(0),
    "in_cluster": _real(0, 1),
    "modalities": _modalities,
    "feature_noise": _real(0),
    "kg_relations": _count(0),
    "kg_entities_per_cluster": _count(1),
    "kg_noise": _real(0, 1),
    "test_fraction": _real(0, 1, hi_open=True),
    "seed": _count(0, 2**63 - 1),
    "name": lambda v: None if isinstance(v, str) else "a string",
}


def _short_repr(value) -> str:
    """repr bounded in depth and items (a value read from YAML may nest itself via aliases)."""
    import reprlib

    short = reprlib.Repr()
    short.maxlevel, short.maxdict, short.maxlist, short.maxstring, short.maxlong = 3, 8, 8, 60, 40
    return short.repr(value)


def check_synthetic_params(params: dict) -> None:
    """Check keyword arguments of :func:`make_synthetic` (names, types, ranges) before anything
    is generated; raise ``ValueError`` naming the first bad parameter and its value."""
    known = list(inspect.signature(make_synthetic).parameters)
    for name, value in params.items():
        if name not in known:
            raise ValueError(f"unknown parameter {_short_repr(name)} (known: {', '.join(known)})")
        expected = _CHECKS[name](value)
        if expected is not None:
            shown = _short_repr(value)
            raise ValueError(
                f"{name}: expected {expected}, got {shown if len(shown) <= 60 else shown[:57] + '...'}"
            )
    users, items = params.get("num_users", 2000), params.get("num_items", 1500)
    clusters = params.get("num_clusters", 20)
    if clusters > items:
        raise ValueError(f"num_clusters: expected at most num_items={items}, got {clusters}")
    # The generator's arrays hold about users x mean_interactions pairs: past 2^31 that is tens
    # of GiB of intermediates, which no test or benchmark of this project asks for.
    pairs = users * float(params.get("mean_interactions", 25.0))
    if pairs > _MAX_COUNT:
        raise ValueError(
            f"num_users x mean_interactions = {pairs:.3g} interactions: expected at most {_MAX_COUNT}"
        )
