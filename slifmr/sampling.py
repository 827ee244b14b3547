"""Negative sampling for pairwise and sampled losses: uniform among a user's unseen items."""

from __future__ import annotations

import numpy as np

__all__ = ["NegativeSampler", "sample_negatives"]


class NegativeSampler:
    """Uniform negatives among the items a user has *not* interacted with in train — exact and
    vectorised, no rejection loop.

    With the user's seen items sorted, s_0 < s_1 < ..., the r-th unseen item is r + j where j is
    the number of k with s_k - k <= r. ``s_k - k`` is non-decreasing within a user, so one
    global sorted key ``user * (I + 1) + s_k - k`` answers every draw with one searchsorted:
    O(B log n) per batch, memory linear in the training pairs.

    Args:
        train: int64 (n, 2) unique (user, item) pairs.
        num_users, num_items: id space sizes.
    """

    def __init__(self, train: np.ndarray, num_users: int, num_items: int):
        self.num_items = int(num_items)
        order = np.argsort(train[:, 0] * num_items + train[:, 1], kind="stable")
        u, i = train[order, 0], train[order, 1]
        self.deg = np.bincount(u, minlength=num_users).astype(np.int64)
        self.start = np.zeros(num_users + 1, np.int64)
        np.cumsum(self.deg, out=self.start[1:])
        rank = np.arange(u.size, dtype=np.int64) - self.start[u]
        self.key = u * (self.num_items + 1) + (i - rank)

    def __call__(self, users: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """int64 (B,) one negative item per entry of ``users``. A user who has seen every item
        gets a uniformly random item (there is no negative to give)."""
        users = np.asarray(users, dtype=np.int64)
        free = self.num_items - self.deg[users]
        r = np.floor(rng.random(users.size) * np.maximum(free, 1)).astype(np.int64)
        j = np.searchsorted(self.key, users * (self.num_items + 1) + r, side="right") - self.start[users]
        out = r + j
        full = free <= 0
        if full.any():
            out[full] = rng.integers(0, self.num_items, int(full.sum()))
        return out


def sample_negatives(
    users: np.ndarray, train: np.ndarray, num_users: int, num_items: int, rng: np.random.Generator
) -> np.ndarray:
    """One-off convenience wrapper around :class:`NegativeSampler`."""
    return NegativeSampler(train, num_users, num_items)(users, rng)
