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

import numpy as np

from ._io import (
    DataFormatError,
    check_id_bound,
    nonblank_line_numbers,
    parse_int_tokens,
    read_delimited,
    read_int_columns,
    require_rows,
)
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
    if kg_ent.size == 0:
        return kg_ent.astype(np.int64), num_items
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


def _build(
    name, pairs, num_users, num_items, kg_raw, item_entity, map_path, rel_names, test_fraction, seed
) -> Dataset:
    ent, num_entities = _entities_to_ids(kg_raw[:, [0, 2]].reshape(-1), item_entity, map_path)
    ent = ent.reshape(-1, 2)
    kg = np.stack([ent[:, 0], kg_raw[:, 1], ent[:, 1]], axis=1)
    train, test = split_per_user(pairs, test_fraction, seed)
    return Dataset(
        name=name,
        num_users=num_users,
        num_items=num_items,
        train=train,
        test=test,
        kg=kg,
        num_entities=max(num_entities, num_items),
        num_relations=int(kg[:, 1].max()) + 1 if kg.size else 0,
        relation_names=rel_names,
    )


def _first_line(path: str, rows: np.ndarray, header_lines: int = 0) -> int:
    """Line of the first of ``rows`` (indices of :func:`read_int_columns` rows) in ``path``."""
    return int(nonblank_line_numbers(path, header_lines)[int(rows[0])])


def load_lastfm(path: str, test_fraction: float = 0.2, seed: int = 0, name: str | None = None) -> Dataset:
    """Load the Last.FM KG dataset (see module docstring)."""
    ua_path = os.path.join(path, "user_artists.dat")
    ua = read_int_columns(ua_path, 3, header_lines=1, names=("userID", "artistID", "weight"))
    require_rows(ua_path, ua.shape[0], hint=" after its header")
    map_path = os.path.join(path, "item_index2entity_id.txt")
    mp = read_int_columns(map_path, 2, names=("artistID", "entity"))
    require_rows(map_path, mp.shape[0], what="artists")
    if np.unique(mp[:, 0]).size != mp.shape[0]:
        _, first = np.unique(mp[:, 0], return_index=True)
        dup = np.setdiff1d(np.arange(mp.shape[0]), first)
        raise DataFormatError(
            f"{map_path}:{_first_line(map_path, dup)}: artist id {int(mp[dup[0], 0])} occurs twice"
        )
    artist_sorted = np.argsort(mp[:, 0])
    pos = np.minimum(np.searchsorted(mp[artist_sorted, 0], ua[:, 1]), mp.shape[0] - 1)
    known = mp[artist_sorted, 0][pos] == ua[:, 1]
    if not known.any():
        raise DataFormatError(f"{ua_path}: no interactions with an artist listed in {map_path}")
    items = artist_sorted[pos[known]]  # item k = line k of the mapping file
    users, _ = remap_ids(ua[known, 0])
    pairs = np.stack([users, items], axis=1)
    kg_path = os.path.join(path, "kg.txt")
    _, rows, lines = read_delimited(kg_path, header=False, with_lines=True)
    if rows and len(rows[0]) != 3:
        raise DataFormatError(
            f"{kg_path}:{lines[0]}: expected head, relation, tail separated "
            f"by tabs, got {len(rows[0])} fields"
        )
    hv = parse_int_tokens(kg_path, [r[0] for r in rows], lines, "head entity id")
    tv = parse_int_tokens(kg_path, [r[2] for r in rows], lines, "tail entity id")
    rel, rel_names = remap_ids(np.array([r[1] for r in rows], dtype=str))
    kg_raw = np.stack([hv, rel, tv], axis=1) if rows else np.zeros((0, 3), np.int64)
    return _build(
        name or "lastfm-kg",
        pairs,
        int(users.max()) + 1,
        mp.shape[0],
        kg_raw,
        mp[:, 1],
        map_path,
        [str(r) for r in rel_names],
        test_fraction,
        seed,
    )


def load_book_crossing(
    path: str, test_fraction: float = 0.2, seed: int = 0, name: str | None = None
) -> Dataset:
    """Load the Book-Crossing KG dataset (see module docstring)."""
    r_path = os.path.join(path, "ratings_final.txt")
    r = read_int_columns(r_path, 3, names=("user", "item", "label"))
    require_rows(r_path, r.shape[0])
    bad = np.nonzero(~np.isin(r[:, 2], (0, 1)))[0]
    if bad.size:
        raise DataFormatError(
            f"{r_path}:{_first_line(r_path, bad)}: label must be 0 or 1, got {r[bad[0], 2]}"
        )
    bad = np.nonzero((r[:, :2] < 0).any(1))[0]
    if bad.size:
        raise DataFormatError(
            f"{r_path}:{_first_line(r_path, bad)}: negative id in {r[bad[0]].tolist()} (user item label)"
        )
    map_path = os.path.join(path, "item_index2entity_id_rehashed.txt")
    _, mrows, mlines = read_delimited(map_path, header=False, with_lines=True)
    require_rows(map_path, len(mrows), what="items")
    if len(mrows[0]) != 2:
        raise DataFormatError(
            f"{map_path}:{mlines[0]}: expected 'isbn <tab> entity id', got {len(mrows[0])} fields"
        )
    item_entity = parse_int_tokens(map_path, [m[1] for m in mrows], mlines, "entity id")
    num_items = item_entity.size
    pos = r[r[:, 2] == 1]
    if not pos.size:
        raise DataFormatError(f"{r_path}: no interactions (no row with label 1)")
    if pos[:, 1].max() >= num_items:
        bad = np.nonzero((r[:, 2] == 1) & (r[:, 1] >= num_items))[0]
        raise DataFormatError(
            f"{r_path}:{_first_line(r_path, bad)}: item {r[bad[0], 1]} has no "
            f"line in {map_path} ({num_items} items)"
        )
    users, _ = remap_ids(pos[:, 0])
    pairs = np.stack([users, pos[:, 1]], axis=1)
    kg_path = os.path.join(path, "kg_final.txt")
    kg_raw = read_int_columns(kg_path, 3, names=("head", "relation", "tail"))
    if kg_raw.size:
        bad = np.nonzero((kg_raw < 0).any(1))[0]
        if bad.size:
            raise DataFormatError(
                f"{kg_path}:{_first_line(kg_path, bad)}: negative id in the "
                f"triple {kg_raw[bad[0]].tolist()} (head relation tail)"
            )
        # entities are renumbered (dense) below; relation ids are kept, so they size a table
        check_id_bound(
            kg_path,
            kg_raw[:, 1],
            lambda: nonblank_line_numbers(kg_path),
            kg_raw.shape[0],
            "relation",
            "one per triple",
        )
    return _build(
        name or "book-crossing-kg",
        pairs,
        int(users.max()) + 1,
        num_items,
        kg_raw,
        item_entity,
        map_path,
        None,
        test_fraction,
        seed,
    )
