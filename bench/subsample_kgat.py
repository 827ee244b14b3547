"""A smaller dataset cut out of a KGAT(+features) directory, in the same layout.

Used to check defaults on data of another size than the full datasets: a random set of users,
their interactions with the most popular items among them, the KG triples and feature rows of
those items, ids renumbered densely (items first in the entity space, as the layout requires).

    python bench/subsample_kgat.py ../shared/data/ml-1m-kg-mm runs/data/ml-1m-sub1k \\
        --users 1000 --items 1400 --seed 0

The output holds ``train.txt``, ``test.txt``, ``kg_final.txt``, ``relation_list.txt`` (when the
source has one) and every ``*_feat*.npy`` of the source, restricted to the kept items.
"""

from __future__ import annotations

import argparse
import glob
import os
import shutil

import numpy as np


def _read_split(path: str) -> dict:
    """user -> list of items, from a KGAT split file."""
    rows = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            ids = line.split()
            if ids:
                rows[int(ids[0])] = [int(x) for x in ids[1:]]
    return rows


def subsample(src: str, dst: str, users: int, items: int, seed: int) -> dict:
    """Write the cut-out dataset to ``dst``; returns its sizes."""
    rng = np.random.default_rng(seed)
    train, test = _read_split(os.path.join(src, "train.txt")), _read_split(os.path.join(src, "test.txt"))
    pool = sorted(u for u in train if train[u])
    chosen = sorted(rng.choice(pool, size=min(users, len(pool)), replace=False).tolist())
    counts: dict = {}
    for u in chosen:
        for i in train[u]:
            counts[i] = counts.get(i, 0) + 1
    popular = sorted(counts, key=lambda i: (-counts[i], i))[:items]
    item_map = {old: new for new, old in enumerate(sorted(popular))}

    os.makedirs(dst, exist_ok=True)
    kept_users, n_train, n_test = 0, 0, 0
    with open(os.path.join(dst, "train.txt"), "w") as ftr, open(os.path.join(dst, "test.txt"), "w") as fte:
        for u in chosen:
            tr = [item_map[i] for i in train[u] if i in item_map]
            te = [item_map[i] for i in test.get(u, []) if i in item_map]
            if not tr or not te:  # a user needs a training and a test item
                continue
            ftr.write(" ".join(map(str, [kept_users] + tr)) + "\n")
            fte.write(" ".join(map(str, [kept_users] + te)) + "\n")
            kept_users, n_train, n_test = kept_users + 1, n_train + len(tr), n_test + len(te)

    n_src_items = (
        max(
            max((max(v) for v in train.values() if v), default=-1),
            max((max(v) for v in test.values() if v), default=-1),
        )
        + 1
    )
    triples = 0
    kpath = os.path.join(src, "kg_final.txt")
    if os.path.isfile(kpath):
        kg = np.loadtxt(kpath, dtype=np.int64, ndmin=2)
        ends = kg[:, [0, 2]]
        is_item = ends < n_src_items
        kept_item = np.vectorize(lambda e: e in item_map)(ends) & is_item
        keep = (kept_item | ~is_item).all(1)  # no triple that touches a dropped item
        kg = kg[keep]
        entity_map = dict(item_map)
        others = np.unique(kg[:, [0, 2]][kg[:, [0, 2]] >= n_src_items])
        entity_map.update({int(e): len(item_map) + k for k, e in enumerate(others)})
        remap = np.vectorize(entity_map.__getitem__)
        kg[:, 0], kg[:, 2] = remap(kg[:, 0]), remap(kg[:, 2])
        np.savetxt(os.path.join(dst, "kg_final.txt"), kg, fmt="%d")
        triples = int(kg.shape[0])
        rel = os.path.join(src, "relation_list.txt")
        if os.path.isfile(rel):
            shutil.copyfile(rel, os.path.join(dst, "relation_list.txt"))
    rows = np.array(sorted(item_map), dtype=np.int64)
    for feat in glob.glob(os.path.join(src, "*_feat*.npy")):
        np.save(os.path.join(dst, os.path.basename(feat)), np.load(feat)[rows])
    return {
        "users": kept_users,
        "items": len(item_map),
        "train": n_train,
        "test": n_test,
        "kg_triples": triples,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src")
    ap.add_argument("dst")
    ap.add_argument("--users", type=int, default=1000)
    ap.add_argument("--items", type=int, default=1400)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(subsample(args.src, args.dst, args.users, args.items, args.seed))


if __name__ == "__main__":
    main()
