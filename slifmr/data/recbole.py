"""RecBole atomic files: ``<name>.inter``, ``<name>.kg``, ``<name>.link``.

``.inter``: tab separated, header of typed fields (``user_id:token  item_id:token  ...``).
``.kg``: ``head_id:token  relation_id:token  tail_id:token``; ``.link``: ``item_id:token
entity_id:token`` (which KG entity an item is). Tokens are arbitrary strings; they are remapped
to dense ids (users and items sorted by token; an entity linked to item k becomes entity k, the
other entities follow in token order). RecBole ``.inter`` files carry no split: a seeded
per-user split makes the test set.
"""

from __future__ import annotations

import os

import numpy as np

from ._io import DataFormatError, data_files, read_delimited, require_rows
from .dataset import Dataset, remap_ids, split_per_user

__all__ = ["load_recbole", "read_kg_link", "find_kg_files", "is_recbole_inter"]


def find_kg_files(path: str) -> tuple:
    kg = data_files(os.path.join(path, "*.kg"))
    link = data_files(os.path.join(path, "*.link"))
    return (kg[0] if kg else None), (link[0] if link else None)


def is_recbole_inter(inter_path: str) -> bool:
    with open(inter_path, encoding="utf-8", errors="replace") as f:
        head = f.readline()
    return "user_id:" in head and "item_id:" in head


def _column(path: str, header: list, name: str) -> int:
    for i, h in enumerate(header):
        if h.split(":")[0] == name:
            return i
    raise DataFormatError(f"{path}:1: header must contain a {name!r} field, got {header}")


def read_kg_link(
    kg_path: str, link_path: str | None, num_items: int, item_token_to_id: dict | None = None
) -> tuple:
    """Read a RecBole ``.kg`` (and ``.link``) into (head, relation, tail) int64 triples.

    Args:
        kg_path, link_path: the files; without ``.link`` entity tokens equal to an item id
            (as decimal text) are taken to be that item.
        num_items: size of the item id space; items are entities 0..num_items-1.
        item_token_to_id: item token -> item id (from the ``.inter`` remapping); ``None`` means
            item tokens are the decimal item ids.
    Returns:
        ``(kg int64 (m, 3), num_entities, relation_names)``.
    """
    khead, krows = read_delimited(kg_path)
    ch, cr, ct = (_column(kg_path, khead, c) for c in ("head_id", "relation_id", "tail_id"))
    ent_to_item: dict = {}
    if link_path is not None:
        lhead, lrows = read_delimited(link_path)
        ci, ce = _column(link_path, lhead, "item_id"), _column(link_path, lhead, "entity_id")
        for lineno, row in enumerate(lrows, start=2):
            tok = row[ci]
            if item_token_to_id is not None:
                item = item_token_to_id.get(tok)
            else:
                try:
                    item = int(tok)
                except ValueError:
                    raise DataFormatError(
                        f"{link_path}:{lineno}: item id must be an integer, got {tok!r}"
                    ) from None
                if not 0 <= item < num_items:
                    item = None
            if item is not None:
                ent_to_item[row[ce]] = item
    elif item_token_to_id is None:
        ent_to_item = {str(i): i for i in range(num_items)}
    else:
        ent_to_item = dict(item_token_to_id)
    if not krows:
        return np.zeros((0, 3), np.int64), num_items, []
    heads = np.array([r[ch] for r in krows], dtype=object)
    tails = np.array([r[ct] for r in krows], dtype=object)
    rels, rel_names = remap_ids(np.array([r[cr] for r in krows]))
    ents = np.concatenate([heads, tails]).astype(str)
    is_item = np.array([e in ent_to_item for e in ents], dtype=bool)
    ids = np.empty(ents.size, np.int64)
    ids[is_item] = [ent_to_item[e] for e in ents[is_item]]
    other, _ = remap_ids(ents[~is_item]) if (~is_item).any() else (np.zeros(0, np.int64), None)
    ids[~is_item] = num_items + other
    num_entities = int(ids.max()) + 1 if ids.size else num_items
    m = len(krows)
    kg = np.stack([ids[:m], rels, ids[m:]], axis=1)
    return kg, max(num_entities, num_items), [str(r) for r in rel_names]


def load_recbole(path: str, test_fraction: float = 0.2, seed: int = 0, name: str | None = None) -> Dataset:
    """Load a RecBole directory (``.inter`` plus optional ``.kg`` / ``.link``)."""
    inters = data_files(os.path.join(path, "*.inter"))
    if not inters:
        raise FileNotFoundError(f"{path}: no *.inter file")
    inter = inters[0]
    head, rows = read_delimited(inter)
    cu, ci = _column(inter, head, "user_id"), _column(inter, head, "item_id")
    require_rows(inter, len(rows), hint=" after its header")
    users, _ = remap_ids(np.array([r[cu] for r in rows]))
    items, item_tokens = remap_ids(np.array([r[ci] for r in rows]))
    num_items = len(item_tokens)
    num_users = int(users.max()) + 1
    pairs = np.stack([users, items], axis=1)
    train, test = split_per_user(pairs, test_fraction, seed)
    kg, num_entities, rel_names = None, num_items, None
    kg_file, link_file = find_kg_files(path)
    if kg_file is not None:
        tok2id = {str(t): k for k, t in enumerate(item_tokens)}
        kg, num_entities, rel_names = read_kg_link(kg_file, link_file, num_items, tok2id)
    return Dataset(
        name=name or os.path.basename(os.path.normpath(path)),
        num_users=num_users,
        num_items=num_items,
        train=train,
        test=test,
        kg=kg,
        num_entities=num_entities,
        num_relations=len(rel_names) if rel_names else 0,
        features={},
        relation_names=rel_names,
    )
