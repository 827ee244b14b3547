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

import glob
import os
from typing import Optional

import numpy as np

from ._io import DataFormatError, read_int_columns, read_ragged_lines, read_npy_features
from .dataset import Dataset

__all__ = ["load_kgat", "is_kgat_dir"]


def is_kgat_dir(path: str) -> bool:
    return os.path.isfile(os.path.join(path, "train.txt")) and os.path.isfile(os.path.join(path, "test.txt"))


def _read_split(path: str) -> np.ndarray:
    users, items, lines = read_ragged_lines(path)
    for arr, what in ((users, "user"), (items, "item")):
        if arr.size and arr.min() < 0:
            i = int(np.argmin(arr))
            raise DataFormatError(f"{path}:{int(lines[i])}: negative {what} id {int(arr[i])}")
    return np.stack([users, items], axis=1) if users.size else np.zeros((0, 2), np.int64)


def _table_size(path: str) -> int:
    """Number of ids in a KGAT ``*_list.txt`` table (``org_id remap_id`` with a header): max
    remap id + 1, or 0 when the file is absent."""
    if not os.path.isfile(path):
        return 0
    with open(path, "rb") as f:
        lines = f.read().split(b"\n")[1:]
    best = -1
    for lineno, line in enumerate(lines, start=2):
        parts = line.split()
        if not parts:
            continue
        try:
            best = max(best, int(parts[-1]))
        except ValueError:
            raise DataFormatError(f"{path}:{lineno}: last field must be the integer remap id, "
                                  f"got {parts[-1][:40].decode(errors='replace')!r}") from None
    return best + 1


def load_kgat(path: str, modalities: Optional[list] = None, name: Optional[str] = None) -> Dataset:
    """Load a KGAT(+features) directory.

    Args:
        path: directory with ``train.txt`` and ``test.txt``.
        modalities: names of the ``<name>_feat.npy`` files to load; ``None`` loads every
            ``*_feat.npy`` present.
    Returns:
        :class:`Dataset` with ``valid`` set only when ``valid.txt`` exists.
    """
    if not is_kgat_dir(path):
        raise FileNotFoundError(f"{path}: not a KGAT directory (needs train.txt and test.txt)")
    train = _read_split(os.path.join(path, "train.txt"))
    test = _read_split(os.path.join(path, "test.txt"))
    vpath = os.path.join(path, "valid.txt")
    valid = _read_split(vpath) if os.path.isfile(vpath) else None
    splits = [p for p in (train, valid, test) if p is not None and p.size]
    num_users = max([int(p[:, 0].max()) + 1 for p in splits] + [_table_size(os.path.join(path, "user_list.txt"))])
    num_items = max([int(p[:, 1].max()) + 1 for p in splits] + [_table_size(os.path.join(path, "item_list.txt"))])

    kg, num_entities, num_relations, rel_names = None, num_items, 0, None
    kpath = os.path.join(path, "kg_final.txt")
    if os.path.isfile(kpath):
        kg = read_int_columns(kpath, 3, names=("head", "relation", "tail"))
        if kg.size:
            if kg.min() < 0:
                row = int(np.nonzero((kg < 0).any(1))[0][0])
                raise DataFormatError(f"{kpath}: triple {row + 1} has a negative id: {kg[row].tolist()}")
            num_entities = max(num_items, int(max(kg[:, 0].max(), kg[:, 2].max())) + 1)
            num_relations = int(kg[:, 1].max()) + 1
        rpath = os.path.join(path, "relation_list.txt")
        if os.path.isfile(rpath):
            with open(rpath, encoding="utf-8", errors="replace") as f:
                rows = [ln.split() for ln in f.read().splitlines()[1:] if ln.strip()]
            if len(rows) == num_relations:
                rel_names = [r[0] for r in rows]

    features = {}
    if modalities is None:
        files = sorted(glob.glob(os.path.join(path, "*_feat.npy")))
        wanted = [os.path.basename(f)[: -len("_feat.npy")] for f in files]
    else:
        wanted = [m for m in modalities if os.path.isfile(os.path.join(path, f"{m}_feat.npy"))]
    for m in wanted:
        feat = read_npy_features(os.path.join(path, f"{m}_feat.npy"), num_items)
        if feat.shape[0] > num_items:  # items that occur in no split still have a feature row
            num_items = feat.shape[0]
        features[m] = feat
    # All features must agree on the item count (a feature file may have enlarged it).
    for m in list(features):
        if features[m].shape[0] != num_items:
            raise DataFormatError(f"{os.path.join(path, m + '_feat.npy')}: {features[m].shape[0]} rows, "
                                  f"but another feature file has {num_items}")
    num_entities = max(num_entities, num_items)
    return Dataset(name=name or os.path.basename(os.path.normpath(path)), num_users=num_users,
                   num_items=num_items, train=train, valid=valid, test=test, kg=kg,
                   num_entities=num_entities, num_relations=num_relations, features=features,
                   relation_names=rel_names)
