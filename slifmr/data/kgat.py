"""KGAT layout plus item features.

``train.txt`` / ``test.txt`` (optional ``valid.txt``): one line per user, ``user item item ...``
(space separated, a line with only the user id is a user without interactions).
``kg_final.txt`` (optional): ``head relation tail`` per line; items are entities 0..n_items-1.
``<modality>_feat.npy`` (optional, e.g. ``image_feat.npy``, ``text_feat.npy``): float
(n_items, d), row i = item i. ``user_list.txt`` / ``item_list.txt`` (optional): KGAT id tables,
used only to size the id spaces (so that users/items that appear in no split still exist).
Ids are kept as they are (they already index the KG and the feature rows) and checked.
"""

from __future__ import annotations

import os

import numpy as np

from ._io import (
    DataFormatError,
    check_id_bound,
    feature_files,
    nonblank_line_numbers,
    npy_rows,
    read_int_columns,
    read_npy_features,
    read_ragged_lines,
    require_rows,
)
from .dataset import Dataset

__all__ = ["load_kgat", "is_kgat_dir"]


def is_kgat_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "train.txt")) and os.path.isfile(os.path.join(path, "test.txt"))


class _Split:
    """One split file: its (user, item) pairs, the line of each pair, its non-blank lines."""

    def __init__(self, path: str):
        users, items, lines = read_ragged_lines(path)
        for arr, what in ((users, "user"), (items, "item")):
            if arr.size and arr.min() < 0:
                i = int(np.argmin(arr))
                raise DataFormatError(f"{path}:{int(lines[i])}: negative {what} id {int(arr[i])}")
        require_rows(
            path, items.size, hint=" or no line has an item (expected 'user item item ...' per line)"
        )
        self.path = path
        self.pairs = np.stack([users, items], axis=1)
        self.lines = lines
        # lines with at least one item (``lines`` is non-decreasing): each names one user
        self.user_lines = 1 + int(np.count_nonzero(np.diff(lines)))


def _table_size(path: str) -> tuple:
    """``(ids, rows)`` of a KGAT ``*_list.txt`` table (``org_id remap_id`` with a header):
    max remap id + 1 and the number of rows, or ``(0, 0)`` when the file is absent. Remap ids
    are dense, so each must be below the number of rows (``path:line`` otherwise)."""
    if not os.path.isfile(path):
        return 0, 0
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")[1:]
    parsed = []
    for lineno, line in enumerate(lines, start=2):
        parts = line.split()
        if not parts:
            continue
        tok = parts[-1]
        if not tok.isdigit():
            raise DataFormatError(
                f"{path}:{lineno}: last field must be the non-negative integer "
                f"remap id, got {tok[:40].decode(errors='replace')!r}"
            )
        parsed.append((lineno, int(tok)))
    rows = len(parsed)
    for lineno, rid in parsed:
        if rid >= rows:
            raise DataFormatError(
                f"{path}:{lineno}: remap id {rid} is too large: ids are dense "
                f"(0..n-1) and the table has {rows} rows"
            )
    return (max(r for _, r in parsed) + 1 if parsed else 0), rows


def load_kgat(path: str, modalities: list | None = None, name: str | None = None) -> Dataset:
    """Load a KGAT(+features) directory.

    Every id that sizes a table is bounded by what the files can define (ids are dense, 0..n-1):
    users by the lines of the split files plus the rows of ``user_list.txt``; items by the item
    values of the split files plus the rows of ``item_list.txt`` and of the largest feature
    file; KG entities by the items plus two per triple; relations by the number of triples. An
    id past its bound is a corrupt file (``DataFormatError("path:line: ...")``), not a table of
    that size.

    Args:
        path: directory with ``train.txt`` and ``test.txt``.
        modalities: names of the feature files to load (``<name>_feat.npy``, or
            ``<m>_feat_<v>.npy`` for the name ``<m>_<v>``); ``None`` loads every one present.
    Returns:
        :class:`Dataset` with ``valid`` set only when ``valid.txt`` exists.
    """
    if not is_kgat_dir(path):
        raise FileNotFoundError(f"{path}: not a KGAT directory (needs train.txt and test.txt)")
    names = ["train.txt", "test.txt"] + (
        ["valid.txt"] if os.path.isfile(os.path.join(path, "valid.txt")) else []
    )
    splits = {n: _Split(os.path.join(path, n)) for n in names}
    user_ids, user_rows = _table_size(os.path.join(path, "user_list.txt"))
    item_ids, item_rows = _table_size(os.path.join(path, "item_list.txt"))

    files = feature_files(path)
    wanted = list(files) if modalities is None else [m for m in modalities if m in files]
    feat_rows = max([npy_rows(files[m]) for m in wanted], default=0)

    user_bound = sum(s.user_lines for s in splits.values()) + user_rows
    item_bound = sum(s.pairs.shape[0] for s in splits.values()) + item_rows + feat_rows
    for s in splits.values():
        check_id_bound(
            s.path,
            s.pairs[:, 0],
            s.lines,
            user_bound,
            "user",
            "one per line of the split files and row of user_list.txt",
        )
        check_id_bound(
            s.path,
            s.pairs[:, 1],
            s.lines,
            item_bound,
            "item",
            "one per item value of the split files, row of item_list.txt and row of the largest *_feat.npy",
        )
    num_users = max([int(s.pairs[:, 0].max()) + 1 for s in splits.values()] + [user_ids])
    num_items = max([int(s.pairs[:, 1].max()) + 1 for s in splits.values()] + [item_ids])

    features = {}
    for m in wanted:
        feat = read_npy_features(files[m], num_items)
        features[m] = feat
    num_items = max([num_items] + [f.shape[0] for f in features.values()])
    # All features must agree on the item count (a feature file may have enlarged it).
    for m in list(features):
        if features[m].shape[0] != num_items:
            raise DataFormatError(
                f"{files[m]}: {features[m].shape[0]} rows, but another feature file has {num_items}"
            )

    kg, num_entities, num_relations, rel_names = None, num_items, 0, None
    kpath = os.path.join(path, "kg_final.txt")
    if os.path.isfile(kpath):
        kg = read_int_columns(kpath, 3, names=("head", "relation", "tail"))
        if kg.size:
            lines = lambda: nonblank_line_numbers(kpath)  # line numbers: only for a message
            if kg.min() < 0:
                row = int(np.nonzero((kg < 0).any(1))[0][0])
                raise DataFormatError(
                    f"{kpath}:{int(lines()[row])}: negative id in the triple "
                    f"{kg[row].tolist()} (head relation tail)"
                )
            n = kg.shape[0]
            ends = kg[:, [0, 2]]
            check_id_bound(
                kpath, ends.max(1), lines, num_items + 2 * n, "entity", "the items plus two per triple"
            )
            check_id_bound(kpath, kg[:, 1], lines, n, "relation", "one per triple")
            num_entities = max(num_items, int(ends.max()) + 1)
            num_relations = int(kg[:, 1].max()) + 1
        rpath = os.path.join(path, "relation_list.txt")
        if os.path.isfile(rpath):
            with open(rpath, encoding="utf-8", errors="replace") as f:
                rows = [ln.split() for ln in f.read().splitlines()[1:] if ln.strip()]
            if len(rows) == num_relations:
                rel_names = [r[0] for r in rows]

    return Dataset(
        name=name or os.path.basename(os.path.normpath(path)),
        num_users=num_users,
        num_items=num_items,
        train=splits["train.txt"].pairs,
        valid=splits["valid.txt"].pairs if "valid.txt" in splits else None,
        test=splits["test.txt"].pairs,
        kg=kg,
        num_entities=num_entities,
        num_relations=num_relations,
        features=features,
        relation_names=rel_names,
    )
