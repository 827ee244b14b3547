"""Relabel users and items so that graph neighbours get nearby ids (cache locality).

Propagation gathers one embedding row per edge. When neighbours in the interaction, kNN and
KG graphs are scattered over the id space, as in generated data and in many real datasets,
each gather is a cache miss once the tables pass the last-level cache (about 130k users +
items at d = 64 and 32 MiB). :func:`locality_order` computes a cheap item order from data a
real user has, and users by the median new position of their training items;
:func:`permute_dataset` applies it to every part of a dataset and records the original ids,
so that user-facing output can name them (:func:`to_original_rows`). ``Config.reorder``
(:func:`apply_reorder`, called by ``slifmr.data.prepare.prepare_data``) chooses the order; its
default ``auto`` relabels large datasets with ``graph`` (docs/SCALE.md, "Found and left",
item 9: 1.17x per training step at a million items).

Orders (``method``):

* ``features``: k-means (about ``group`` items per cluster) on a random projection of the
  L2-normalised, concatenated modality features; clusters ordered by their first principal
  coordinate, items inside a cluster too.
* ``graph``: the same clustering on item vectors smoothed over the interaction graph (random
  vectors averaged over the users of each item and back, a few rounds): no features needed.
* ``pca``: the first principal coordinate of the features alone (a baseline).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import scipy.sparse as sp
import torch

from .dataset import Dataset

__all__ = [
    "locality_order",
    "permute_dataset",
    "reorder_dataset",
    "apply_reorder",
    "user_order_by_items",
    "locality_share",
    "to_original_rows",
    "REORDER_METHODS",
    "REORDER_MODES",
    "AUTO_METHOD",
    "AUTO_MIN_NODES",
]

REORDER_METHODS = ("features", "graph", "pca")
REORDER_MODES = ("none", "auto") + REORDER_METHODS
# ``auto``: this method, for datasets with at least this many users + items. Below it the
# embedding tables (256 B a row at d = 64) are a few MiB, and the dataset is left as loaded.
AUTO_METHOD = "graph"
AUTO_MIN_NODES = 100_000


# --------------------------------------------------------------------------- relabel
def _inverse(order: np.ndarray) -> np.ndarray:
    inv = np.empty_like(order)
    inv[order] = np.arange(order.size, dtype=order.dtype)
    return inv


def _check_order(order: np.ndarray, n: int, what: str) -> np.ndarray:
    order = np.asarray(order, dtype=np.int64)
    if order.shape != (n,) or (n and not np.array_equal(np.sort(order), np.arange(n))):
        raise ValueError(f"{what} must be a permutation of 0..{n - 1}")
    return order


def _sorted_pairs(p: np.ndarray, num_items: int) -> np.ndarray:
    return p[np.argsort(p[:, 0] * max(num_items, 1) + p[:, 1], kind="stable")]


def permute_dataset(ds: Dataset, user_order: np.ndarray, item_order: np.ndarray) -> Dataset:
    """The dataset with user ``user_order[j]`` renamed ``j`` and item ``item_order[j]`` renamed
    ``j``: every split (re-sorted by (user, item)), every modality's feature rows, and the KG's
    item entities (entities ``0..num_items-1``; the other entities keep their ids).

    The result's ``orig_users`` / ``orig_items`` give each new id's id in the dataset as it was
    loaded (composed with ``ds``'s own, so relabelling twice still points at the original).
    """
    U, I = ds.num_users, ds.num_items
    uo = _check_order(user_order, U, "user_order")
    io = _check_order(item_order, I, "item_order")
    u_new, i_new = _inverse(uo), _inverse(io)

    def pairs(p):
        if p is None:
            return None
        return _sorted_pairs(np.stack([u_new[p[:, 0]], i_new[p[:, 1]]], axis=1), I)

    kg = None
    if ds.kg is not None:
        kg = ds.kg.copy()
        for col in (0, 2):
            e = kg[:, col]
            is_item = e < I
            e[is_item] = i_new[e[is_item]]
    feats = {m: np.ascontiguousarray(f[io]) for m, f in ds.features.items()}
    orig_u = uo if ds.orig_users is None else ds.orig_users[uo]
    orig_i = io if ds.orig_items is None else ds.orig_items[io]
    return dataclasses.replace(
        ds,
        train=pairs(ds.train),
        valid=pairs(ds.valid),
        test=pairs(ds.test),
        kg=kg,
        features=feats,
        orig_users=orig_u,
        orig_items=orig_i,
    )


# --------------------------------------------------------------------------- orders
def _user_medians(train: np.ndarray, num_users: int, item_pos: np.ndarray) -> np.ndarray:
    """Each user's median (the lower one for an even count) of ``item_pos`` over its training
    items; ``item_pos.size`` for a user without any."""
    med = np.full(num_users, np.int64(item_pos.size), np.int64)
    if train.shape[0]:
        pos = item_pos[train[:, 1]].astype(np.int64)
        o = np.lexsort((pos, train[:, 0]))
        deg = np.bincount(train[:, 0], minlength=num_users)
        start = np.r_[0, np.cumsum(deg)[:-1]]
        has = deg > 0
        med[has] = pos[o][start[has] + (deg[has] - 1) // 2]
    return med


def user_order_by_items(train: np.ndarray, num_users: int, item_pos: np.ndarray) -> np.ndarray:
    """Users ordered by the median (the lower one for an even count) of ``item_pos`` over their
    training items, ties by user id; users without training items last, by id."""
    med = _user_medians(train, num_users, item_pos)
    return np.lexsort((np.arange(num_users), med)).astype(np.int64)


def locality_share(ds: Dataset, window: int = 2048) -> float:
    """Share of the training edges whose item id lies within ``window`` of its user's median
    item id (1.0: every user's items sit together)."""
    if ds.train.shape[0] == 0:
        return 1.0
    med = _user_medians(ds.train, ds.num_users, np.arange(ds.num_items))
    return float(np.mean(np.abs(ds.train[:, 1] - med[ds.train[:, 0]]) < window))


def _pc1(x: torch.Tensor) -> torch.Tensor:
    """First principal coordinate of the rows of ``x`` (n, d): power iteration on the d x d
    covariance; deterministic."""
    xc = x - x.mean(0, keepdim=True)
    cov = xc.T @ xc
    v = torch.ones(x.shape[1], dtype=x.dtype) / math.sqrt(x.shape[1])
    for _ in range(50):
        w = cov @ v
        nrm = w.norm()
        if nrm == 0:
            break
        v = w / nrm
    return xc @ v


def _assign(x: torch.Tensor, c: torch.Tensor, block: int = 1 << 16) -> torch.Tensor:
    """Index of the nearest centroid of every row, in row blocks (memory O(block * C))."""
    out = torch.empty(x.shape[0], dtype=torch.int64)
    cn = (c * c).sum(1)
    for s in range(0, x.shape[0], block):
        out[s : s + block] = (cn - 2.0 * (x[s : s + block] @ c.T)).argmin(1)
    return out


def _cluster_order(x: torch.Tensor, group: int, seed: int, iters: int = 8) -> np.ndarray:
    """Rows grouped by k-means (about ``group`` rows per cluster, Lloyd's iterations on a
    sample, then one assignment of every row); clusters ordered by their centroid's first
    principal coordinate, rows inside a cluster by their own."""
    n = x.shape[0]
    coord = _pc1(x)
    C = max(1, math.ceil(n / group))
    if C == 1:
        return np.argsort(coord.numpy(), kind="stable").astype(np.int64)
    rng = np.random.default_rng(seed)
    sample = x[torch.from_numpy(rng.choice(n, min(n, max(32 * C, 20000)), replace=False))]
    c = sample[torch.from_numpy(rng.choice(sample.shape[0], C, replace=False))].clone()
    for _ in range(iters):
        a = _assign(sample, c)
        sums = torch.zeros_like(c).index_add_(0, a, sample)
        cnt = torch.bincount(a, minlength=C).to(x.dtype)
        keep = cnt > 0  # an empty cluster keeps its centroid
        c[keep] = sums[keep] / cnt[keep, None]
    cluster = _assign(x, c).numpy()
    crank = _inverse(np.argsort(_pc1(c).numpy(), kind="stable"))
    return np.lexsort((coord.numpy(), crank[cluster])).astype(np.int64)


def _feature_matrix(ds: Dataset, dim: int, seed: int) -> torch.Tensor:
    """(I, dim) random projection of the L2-normalised, concatenated modality features."""
    gen = torch.Generator().manual_seed(seed)
    out = torch.zeros(ds.num_items, dim)
    for m in sorted(ds.features):
        f = torch.from_numpy(ds.features[m]).float()
        proj = torch.randn(f.shape[1], dim, generator=gen) / math.sqrt(dim)
        for s in range(0, f.shape[0], 1 << 16):
            blk = f[s : s + (1 << 16)]
            blk = blk / blk.norm(dim=1, keepdim=True).clamp_min(1e-12)
            out[s : s + blk.shape[0]] += blk @ proj
    return out


def _graph_matrix(ds: Dataset, dim: int, seed: int, rounds: int = 4) -> torch.Tensor:
    """(I, dim) item vectors smoothed over the training interactions: random vectors, then
    ``rounds`` times item -> mean over its users of (user = mean over its items), centred and
    rescaled each round (the constant direction would otherwise take over)."""
    R = ds.interaction_matrix("train")
    du = np.asarray(R.sum(1)).ravel()
    di = np.asarray(R.sum(0)).ravel()
    # users: the mean of their items; items: the mean of their users
    Ru = sp.diags((1.0 / np.maximum(du, 1)).astype(np.float32)) @ R
    Ri = (sp.diags((1.0 / np.maximum(di, 1)).astype(np.float32)) @ R.T).tocsr()
    x = np.random.default_rng(seed).standard_normal((ds.num_items, dim)).astype(np.float32)
    for _ in range(rounds):
        x = np.asarray(Ri @ (Ru @ x), dtype=np.float32)
        x -= x.mean(0, keepdims=True)
        x /= max(float(np.sqrt((x * x).sum(1)).mean()), 1e-30)
    return torch.from_numpy(np.ascontiguousarray(x))


def locality_order(
    ds: Dataset, method: str = "graph", group: int = 1024, dim: int = 32, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(user_order, item_order)`` for :func:`permute_dataset` (new id j = old id order[j]).

    ``method``: ``features``, ``graph`` or ``pca`` (module docstring). ``features`` and ``pca``
    fall back to ``graph`` for a dataset without features. Deterministic for a seed.
    """
    if method not in REORDER_METHODS:
        raise ValueError(f"reorder method must be one of {REORDER_METHODS}, got {method!r}")
    if method != "graph" and not ds.features:
        method = "graph"
    if method == "graph":
        item_order = _cluster_order(_graph_matrix(ds, dim, seed), group, seed)
    elif method == "features":
        item_order = _cluster_order(_feature_matrix(ds, dim, seed), group, seed)
    else:
        item_order = np.argsort(_pc1(_feature_matrix(ds, dim, seed)).numpy(), kind="stable").astype(np.int64)
    user_order = user_order_by_items(ds.train, ds.num_users, _inverse(item_order))
    return user_order, item_order


def reorder_dataset(ds: Dataset, method: str = "graph", seed: int = 0, **kw) -> Dataset:
    """:func:`permute_dataset` with :func:`locality_order`."""
    return permute_dataset(ds, *locality_order(ds, method, seed=seed, **kw))


def apply_reorder(ds: Dataset, mode: str = "auto", seed: int = 0) -> Dataset:
    """``Config.reorder``: ``none`` returns ``ds``; ``auto`` relabels with :data:`AUTO_METHOD`
    when the dataset has at least :data:`AUTO_MIN_NODES` users + items (else returns ``ds``);
    a method name always relabels with it."""
    if mode not in REORDER_MODES:
        raise ValueError(f"reorder must be one of {REORDER_MODES}, got {mode!r}")
    if mode == "none" or (mode == "auto" and ds.num_users + ds.num_items < AUTO_MIN_NODES):
        return ds
    return reorder_dataset(ds, AUTO_METHOD if mode == "auto" else mode, seed=seed)


def to_original_rows(rows, orig_ids: np.ndarray | None):
    """Rows indexed by the relabelled ids (a tensor or array, first dimension) put back in
    the original ids' order: ``out[orig_ids[j]] = rows[j]``. ``orig_ids`` None: ``rows``."""
    if orig_ids is None:
        return rows
    if isinstance(rows, torch.Tensor):
        return rows[torch.from_numpy(_inverse(np.asarray(orig_ids, np.int64))).to(rows.device)]
    return rows[_inverse(np.asarray(orig_ids, np.int64))]
