"""MMRec layout: ``<name>.inter`` plus ``image_feat.npy`` / ``text_feat.npy``.

``<name>.inter`` is tab separated with a header naming at least ``userID``, ``itemID`` and
``x_label`` (0 = train, 1 = valid, 2 = test); other columns (rating, timestamp) are ignored.
Ids are 0-based and index the feature rows (row i = item i), so they are kept and checked.
RecBole ``<name>.kg`` / ``<name>.link`` files next to it, when present, supply the KG.
"""

from __future__ import annotations

import os

import numpy as np

from ._io import (
    DataFormatError,
    check_id_bound,
    data_files,
    nonblank_line_numbers,
    npy_rows,
    read_int_columns,
    read_npy_features,
    require_rows,
)
from .dataset import Dataset

__all__ = ["load_mmrec", "find_inter_file"]


def find_inter_file(path: str) -> str | None:
    files = data_files(os.path.join(path, "*.inter"))
    return files[0] if files else None


def _header(path: str) -> list:
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.readline().rstrip("\r\n").split("\t")


def load_mmrec(path: str, modalities: list | None = None, name: str | None = None) -> Dataset:
    """Load an MMRec directory (see module docstring). Returns a :class:`Dataset`.

    ``userID`` / ``itemID`` must be non-negative integers below what the directory can define
    (ids are dense: users at most one per row; items one per row plus the rows of the largest
    feature file); the split must have train (``x_label`` 0) and test (2) rows. Errors name
    ``file:line``.
    """
    inter = find_inter_file(path)
    if inter is None:
        raise FileNotFoundError(f"{path}: no *.inter file")
    head = _header(inter)
    cols = {c.split(":")[0]: i for i, c in enumerate(head)}
    for need in ("userID", "itemID", "x_label"):
        if need not in cols:
            raise DataFormatError(
                f"{inter}:1: header must name userID, itemID and x_label (tab separated), got {head}"
            )
    table = read_int_columns(inter, len(head), header_lines=1, dtype=np.float64)
    require_rows(inter, table.shape[0], hint=" after its header")
    u, i, lab = (table[:, cols[c]] for c in ("userID", "itemID", "x_label"))
    lines = lambda: nonblank_line_numbers(inter, 1)  # line numbers: only for a message

    names = (
        modalities
        if modalities is not None
        else [os.path.basename(f)[: -len("_feat.npy")] for f in data_files(os.path.join(path, "*_feat.npy"))]
    )
    feat_files = {m: os.path.join(path, f"{m}_feat.npy") for m in names}
    feat_files = {m: fp for m, fp in feat_files.items() if os.path.isfile(fp)}
    feat_rows = max([npy_rows(fp) for fp in feat_files.values()], default=0)

    for arr, col, what, bound, rule in (
        (u, "userID", "user", table.shape[0], "one per row"),
        (
            i,
            "itemID",
            "item",
            table.shape[0] + feat_rows,
            "one per row plus the rows of the largest *_feat.npy",
        ),
    ):
        bad = np.nonzero((arr < 0) | (arr != np.floor(arr)))[0]
        if bad.size:
            raise DataFormatError(
                f"{inter}:{int(lines()[bad[0]])}: {col} must be a non-negative integer, got {arr[bad[0]]:g}"
            )
        check_id_bound(inter, arr, lines, bound, what, rule)
    bad = np.nonzero(~np.isin(lab, (0, 1, 2)))[0]
    if bad.size:
        raise DataFormatError(
            f"{inter}:{int(lines()[bad[0]])}: x_label must be 0, 1 or 2, got {lab[bad[0]]:g}"
        )
    for label, what in ((0, "train"), (2, "test")):
        if not (lab == label).any():
            raise DataFormatError(f"{inter}: no {what} interactions (no row with x_label {label})")
    pairs = np.stack([u, i], axis=1).astype(np.int64)
    num_users = int(u.max()) + 1
    num_items = int(i.max()) + 1

    features = {}
    for m, fp in feat_files.items():
        feat = read_npy_features(fp, num_items)
        num_items = max(num_items, feat.shape[0])
        features[m] = feat
    for m, f in features.items():
        if f.shape[0] != num_items:
            raise DataFormatError(f"{feat_files[m]}: {f.shape[0]} rows, expected {num_items}")

    kg, num_entities, num_relations, rel_names = None, num_items, 0, None
    from .recbole import find_kg_files, read_kg_link

    kg_file, link_file = find_kg_files(path)
    if kg_file is not None:
        kg, num_entities, rel_names = read_kg_link(kg_file, link_file, num_items)
        num_relations = len(rel_names)
    return Dataset(
        name=name or os.path.basename(os.path.normpath(path)),
        num_users=num_users,
        num_items=num_items,
        train=pairs[lab == 0],
        valid=pairs[lab == 1] if (lab == 1).any() else None,
        test=pairs[lab == 2],
        kg=kg,
        num_entities=num_entities,
        num_relations=num_relations,
        features=features,
        relation_names=rel_names,
    )
