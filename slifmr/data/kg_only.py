"""The two KG-only datasets: Last.FM (hetrec-2011, KGCN release) and Book-Crossing (MCCLK).

Neither has a train/test split or item features: a seeded per-user split makes the test set.

Last.FM: ``user_artists.dat`` (``userID \\t artistID \\t weight`` with a header; every listened
artist is a positive), ``item_index2entity_id.txt`` (``artistID \\t entity``), ``kg.txt``
(``head \\t relation-name \\t tail`` over entity ids). Artists without an entity are dropped.

Book-Crossing: ``ratings_final.txt`` (``user \\t item \\t label``; label 1 rows are the positives,
label 0 rows are sampled negatives and are dropped), ``item_index2entity_id_rehashed.txt``
(``isbn \\t entity``; line k is item k), ``kg_final.txt`` (``head \\t relation \\t tail`` ints).

Items become entities 0..n_items-1 (item k = the entity its mapping line names); the other
entities follow in id order.
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np

from ._io import DataFormatError, read_delimited, read_int_columns
from .dataset import Dataset, remap_ids, split_per_user

__all__ = ["load_lastfm", "load_book_crossing", "is_lastfm_dir", "is_book_crossing_dir"]


def is_lastfm_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "user_artists.dat"))


def is_book_crossing_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "ratings_final.txt"))


def _entities_to_ids(kg_ent: np.ndarray, item_entity: np.ndarray, path: str) -> tuple:
    """Renumber entities so that item k's entity becomes k; others follow (sorted)."""
    num_items = item_entity.size
    if np.unique(item_entity).size != num_items:
        raise DataFormatError(f"{path}: two items map to the same KG entity")
    order = np.argsort(item_entity)
    pos = np.searchsorted(item_entity[order], kg_ent)
    pos = np.minimum(pos, num_items - 1)
    is_item = item_entity[order][pos] == kg_ent
    out = np.empty(kg_ent.shape, np.int64)
    out[is_item] = order[pos[is_item]]
    if (~is_item).any():
        other, _ = remap_ids(kg_ent[~is_item])
        out[~is_item] = num_items + other
    return out, int(out.max()) + 1 if out.size else num_items


def _build(name, pairs, num_users, num_items, kg_raw, item_entity, kg_path, rel_names,
           test_fraction, seed) -> Dataset:
    ent, num_entities = _entities_to_ids(kg_raw[:, [0, 2]].reshape(-1), item_entity, kg_path)
    ent = ent.reshape(-1, 2)
    kg = np.stack([ent[:, 0], kg_raw[:, 1], ent[:, 1]], axis=1)
    train, test = split_per_user(pairs, test_fraction, seed)
    return Dataset(name=name, num_users=num_users, num_items=num_items, train=train, test=test,
                   kg=kg, num_entities=max(num_entities, num_items),
                   num_relations=int(kg[:, 1].max()) + 1 if kg.size else 0, relation_names=rel_names)


def load_lastfm(path: str, test_fraction: float = 0.2, seed: int = 0, name: Optional[str] = None) -> Dataset:
    """Load the Last.FM KG dataset (see module docstring)."""
    ua_path = os.path.join(path, "user_artists.dat")
    ua = read_int_columns(ua_path, 3, header_lines=1, names=("userID", "artistID", "weight"))
    map_path = os.path.join(path, "item_index2entity_id.txt")
    mp = read_int_columns(map_path, 2, names=("artistID", "entity"))
    if np.unique(mp[:, 0]).size != mp.shape[0]:
        raise DataFormatError(f"{map_path}: an artist id occurs twice")
    artist_sorted = np.argsort(mp[:, 0])
    pos = np.minimum(np.searchsorted(mp[artist_sorted, 0], ua[:, 1]), mp.shape[0] - 1)
    known = mp[artist_sorted, 0][pos] == ua[:, 1]
    items = artist_sorted[pos[known]]  # item k = line k of the mapping file
    users, _ = remap_ids(ua[known, 0])
    pairs = np.stack([users, items], axis=1)
    kg_path = os.path.join(path, "kg.txt")
    _, rows = read_delimited(kg_path, header=False)
    if rows and len(rows[0]) != 3:
        raise DataFormatError(f"{kg_path}:1: expected head, relation, tail")
    try:
        hv = np.array([int(r[0]) for r in rows], np.int64)
        tv = np.array([int(r[2]) for r in rows], np.int64)
    except ValueError:
        for lineno, r in enumerate(rows, start=1):
            for tok in (r[0], r[2]):
                if not tok.strip().lstrip("-").isdigit():
                    raise DataFormatError(f"{kg_path}:{lineno}: entity id must be an integer, got {tok!r}") from None
        raise
    rel, rel_names = remap_ids(np.array([r[1] for r in rows]))
    kg_raw = np.stack([hv, rel, tv], axis=1)
    return _build(name or "lastfm-kg", pairs, int(users.max()) + 1, mp.shape[0], kg_raw, mp[:, 1],
                  kg_path, [str(r) for r in rel_names], test_fraction, seed)


def load_book_crossing(path: str, test_fraction: float = 0.2, seed: int = 0,
                       name: Optional[str] = None) -> Dataset:
    """Load the Book-Crossing KG dataset (see module docstring)."""
    r_path = os.path.join(path, "ratings_final.txt")
    r = read_int_columns(r_path, 3, names=("user", "item", "label"))
    bad = np.nonzero(~np.isin(r[:, 2], (0, 1)))[0]
    if bad.size:
        raise DataFormatError(f"{r_path}:{int(bad[0]) + 1}: label must be 0 or 1, got {r[bad[0], 2]}")
    if r.size and r[:, :2].min() < 0:
        raise DataFormatError(f"{r_path}:{int(np.nonzero((r[:, :2] < 0).any(1))[0][0]) + 1}: negative id")
    map_path = os.path.join(path, "item_index2entity_id_rehashed.txt")
    _, mrows = read_delimited(map_path, header=False)
    try:
        item_entity = np.array([int(m[1]) for m in mrows], np.int64)
    except (ValueError, IndexError):
        for lineno, m in enumerate(mrows, start=1):
            if len(m) != 2 or not m[1].strip().isdigit():
                raise DataFormatError(f"{map_path}:{lineno}: expected 'isbn <tab> entity id'") from None
        raise
    num_items = item_entity.size
    pos = r[r[:, 2] == 1]
    if pos.size and pos[:, 1].max() >= num_items:
        line = int(np.nonzero((r[:, 2] == 1) & (r[:, 1] >= num_items))[0][0]) + 1
        raise DataFormatError(f"{r_path}:{line}: item {r[line - 1, 1]} has no line in {map_path}")
    users, _ = remap_ids(pos[:, 0])
    pairs = np.stack([users, pos[:, 1]], axis=1)
    kg_path = os.path.join(path, "kg_final.txt")
    kg_raw = read_int_columns(kg_path, 3, names=("head", "relation", "tail"))
    return _build(name or "book-crossing-kg", pairs, int(users.max()) + 1, num_items, kg_raw,
                  item_entity, kg_path, None, test_fraction, seed)
