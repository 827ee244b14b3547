"""The in-memory dataset every loader returns, and the id/split utilities they share."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from ._io import DataFormatError

__all__ = ["Dataset", "split_per_user", "remap_ids", "unique_pairs"]


def unique_pairs(pairs: np.ndarray, num_items: int) -> np.ndarray:
    """Drop duplicate (user, item) rows; result sorted by (user, item). int64 (n, 2)."""
    if pairs.shape[0] == 0:
        return pairs.reshape(0, 2).astype(np.int64)
    # sort + adjacent compare: much faster than np.unique's hashing on tens of millions of keys
    keys = np.sort(pairs[:, 0].astype(np.int64) * num_items + pairs[:, 1])
    keys = keys[np.r_[True, keys[1:] != keys[:-1]]]
    return np.stack([keys // num_items, keys % num_items], axis=1)


def _pair_keys(pairs: np.ndarray, num_items: int) -> np.ndarray:
    return pairs[:, 0].astype(np.int64) * num_items + pairs[:, 1]


def remap_ids(raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map arbitrary ids (ints or strings) to 0..n-1 in sorted order.

    Returns ``(new_ids int64 like raw, originals (n,))`` with ``originals[new_ids] == raw``.
    """
    originals, inverse = np.unique(raw, return_inverse=True)
    return inverse.astype(np.int64).reshape(raw.shape), originals


def split_per_user(pairs: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Hold out about ``fraction`` of every user's interactions, at random (seeded).

    ``pairs``: int64 (n, 2) of (user, item). Each user with at least two interactions keeps at
    least one in the first part; a user with one interaction keeps it. The number held out is
    ``round(fraction * count)`` clipped to ``count - 1``. Vectorised: one permutation, one stable
    sort by user, ranks within each user's run.

    Returns ``(kept, held_out)``, each int64 (·, 2) sorted by (user, item).
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    n = pairs.shape[0]
    if n == 0:
        return pairs.copy(), pairs.copy()
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n)
    order = perm[np.argsort(pairs[perm, 0], kind="stable")]
    users = pairs[order, 0]
    starts = np.r_[0, np.nonzero(np.diff(users))[0] + 1]
    counts = np.diff(np.r_[starts, n])
    rank = np.arange(n) - np.repeat(starts, counts)
    n_hold = np.minimum(np.floor(fraction * counts + 0.5).astype(np.int64), counts - 1)
    hold = rank < np.repeat(n_hold, counts)
    held, kept = pairs[order[hold]], pairs[order[~hold]]

    width = int(pairs[:, 1].max()) + 1

    def _sorted(p):
        return p[np.argsort(p[:, 0] * width + p[:, 1])]

    return _sorted(kept), _sorted(held)


@dataclass
class Dataset:
    """Implicit-feedback data with optional knowledge graph and item features.

    Attributes:
        name: a label for logs.
        num_users, num_items: sizes of the id spaces (users/items without interactions allowed).
        train, valid, test: int64 (n, 2) arrays of (user, item), unique, sorted. ``valid`` may
            be ``None`` (see :meth:`with_validation`).
        kg: int64 (m, 3) of (head, relation, tail) over entities, or ``None``. Items are entities
            ``0..num_items-1``; other entities follow.
        num_entities: size of the entity space (``>= num_items``; equals ``num_items`` without KG).
        num_relations: number of KG relation ids (0 without KG).
        features: modality name -> float32 (num_items, d_m); row i describes item i.
        relation_names: optional names of the KG relations.
        orig_users, orig_items: int64 (num_users,) / (num_items,): the id each user / item had
            before :func:`slifmr.data.reorder.permute_dataset` relabelled the dataset, or
            ``None`` (ids as loaded).
    """

    name: str
    num_users: int
    num_items: int
    train: np.ndarray
    test: np.ndarray
    valid: np.ndarray | None = None
    kg: np.ndarray | None = None
    num_entities: int = 0
    num_relations: int = 0
    features: dict = field(default_factory=dict)
    relation_names: list | None = None
    orig_users: np.ndarray | None = None
    orig_items: np.ndarray | None = None

    def __post_init__(self):
        self.num_entities = max(int(self.num_entities), int(self.num_items))
        self.validate()

    # ------------------------------------------------------------------ checks
    def validate(self) -> None:
        """Check ids, shapes and dtypes; raise ``DataFormatError`` naming what is wrong."""
        if self.num_users < 0 or self.num_items < 0:
            raise DataFormatError(f"{self.name}: num_users/num_items must be >= 0")
        for split in ("train", "valid", "test"):
            p = getattr(self, split)
            if p is None:
                continue
            p = np.asarray(p)
            if p.ndim != 2 or p.shape[1] != 2 or not np.issubdtype(p.dtype, np.integer):
                raise DataFormatError(
                    f"{self.name}: {split} must be an integer (n, 2) array of "
                    f"(user, item), got {p.dtype} {p.shape}"
                )
            if p.size and (p.min(0) < 0).any():
                raise DataFormatError(f"{self.name}: {split} has negative ids")
            if p.size and (p[:, 0].max() >= self.num_users or p[:, 1].max() >= self.num_items):
                raise DataFormatError(
                    f"{self.name}: {split} ids exceed num_users={self.num_users} / num_items={self.num_items}"
                )
            setattr(self, split, p.astype(np.int64, copy=False))
        if self.kg is not None:
            kg = np.asarray(self.kg)
            if kg.ndim != 2 or kg.shape[1] != 3 or not np.issubdtype(kg.dtype, np.integer):
                raise DataFormatError(f"{self.name}: kg must be an integer (m, 3) array")
            if kg.size:
                if kg.min() < 0:
                    raise DataFormatError(f"{self.name}: kg has negative ids")
                if max(kg[:, 0].max(), kg[:, 2].max()) >= self.num_entities:
                    raise DataFormatError(f"{self.name}: kg entity id >= num_entities={self.num_entities}")
                if kg[:, 1].max() >= self.num_relations:
                    raise DataFormatError(
                        f"{self.name}: kg relation id >= num_relations={self.num_relations}"
                    )
            self.kg = kg.astype(np.int64, copy=False)
        for name, n in (("orig_users", self.num_users), ("orig_items", self.num_items)):
            ids = getattr(self, name)
            if ids is not None and np.shape(ids) != (n,):
                raise DataFormatError(f"{self.name}: {name} must have shape ({n},), got {np.shape(ids)}")
        for m, f in self.features.items():
            if f.ndim != 2 or f.shape[0] != self.num_items:
                raise DataFormatError(
                    f"{self.name}: feature {m!r} must have shape (num_items="
                    f"{self.num_items}, d), got {f.shape}"
                )

    # --------------------------------------------------------------- utilities
    @property
    def has_kg(self) -> bool:
        return self.kg is not None and self.kg.shape[0] > 0

    def interaction_matrix(self, split: str = "train") -> sp.csr_matrix:
        """Binary float32 CSR (num_users, num_items) of one split ("train", "valid", "test")."""
        p = getattr(self, split)
        if p is None:
            p = np.zeros((0, 2), np.int64)
        return sp.csr_matrix(
            (np.ones(p.shape[0], np.float32), (p[:, 0], p[:, 1])), shape=(self.num_users, self.num_items)
        )

    def with_validation(self, fraction: float = 0.1, seed: int = 0) -> Dataset:
        """A copy with ``valid`` carved from ``train`` (per user, seeded) when it has none."""
        if self.valid is not None:
            return self
        train, valid = split_per_user(self.train, fraction, seed)
        return dataclasses.replace(self, train=train, valid=valid)

    def clean(self) -> Dataset:
        """Deduplicate each split and drop valid/test pairs that also occur in train (they are
        masked at evaluation time and could never count as hits)."""
        n_i = max(self.num_items, 1)
        train = unique_pairs(self.train, n_i)
        tk = _pair_keys(train, n_i)

        def _minus_train(p):
            if p is None:
                return None
            p = unique_pairs(p, n_i)
            return p[~np.isin(_pair_keys(p, n_i), tk)]

        valid = _minus_train(self.valid)
        test = _minus_train(self.test)
        if valid is not None and test is not None:
            test = test[~np.isin(_pair_keys(test, n_i), _pair_keys(valid, n_i))]
        return dataclasses.replace(self, train=train, valid=valid, test=test)

    def summary(self) -> str:
        """One line: sizes of every part (for logs)."""
        parts = [
            f"{self.name}: {self.num_users} users, {self.num_items} items",
            f"train {self.train.shape[0]}",
            f"valid {0 if self.valid is None else self.valid.shape[0]}",
            f"test {self.test.shape[0]}",
        ]
        if self.has_kg and self.kg is not None:
            parts.append(
                f"kg {self.kg.shape[0]} triples / {self.num_entities} entities / "
                f"{self.num_relations} relations"
            )
        for m, f in self.features.items():
            parts.append(f"{m} {f.shape[1]}-d")
        cold = self.num_items - np.unique(self.train[:, 1]).size
        parts.append(f"{cold} items without training interactions")
        return ", ".join(parts)
