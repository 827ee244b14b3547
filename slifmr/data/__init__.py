"""Datasets: loaders for the supported layouts and a synthetic generator.

``load_dataset(path)`` detects the layout of a directory:

* KGAT + features (``train.txt``, ``test.txt``, optional ``valid.txt``, ``kg_final.txt``,
  ``<modality>_feat.npy``) — :func:`load_kgat`
* MMRec (``<name>.inter`` with ``x_label``, ``*_feat.npy``, optional RecBole ``.kg``/``.link``)
  — :func:`load_mmrec`
* RecBole atomic files (``<name>.inter`` with typed header, ``.kg``, ``.link``) — :func:`load_recbole`
* Last.FM KG (``user_artists.dat``) and Book-Crossing KG (``ratings_final.txt``) — :mod:`kg_only`

A bare name (``ml-1m-kg-mm``) is looked up under the data directory: ``$SLIFMR_DATA``, default
``../shared/data`` relative to the repository root.
"""

from __future__ import annotations

import os

from ._io import DataFormatError
from .dataset import Dataset, remap_ids, split_per_user, unique_pairs
from .kg_only import is_book_crossing_dir, is_lastfm_dir, load_book_crossing, load_lastfm
from .kgat import is_kgat_dir, load_kgat
from .mmrec import find_inter_file, load_mmrec
from .recbole import is_recbole_inter, load_recbole
from .synthetic import make_synthetic

__all__ = [
    "Dataset",
    "DataFormatError",
    "load_dataset",
    "data_root",
    "resolve_data_path",
    "load_kgat",
    "load_mmrec",
    "load_recbole",
    "load_lastfm",
    "load_book_crossing",
    "make_synthetic",
    "split_per_user",
    "remap_ids",
    "unique_pairs",
]

_REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def data_root() -> str:
    """The shared data directory: ``$SLIFMR_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("SLIFMR_DATA")
    return os.path.abspath(env) if env else os.path.abspath(os.path.join(_REPO_ROOT, "..", "shared", "data"))


def resolve_data_path(path: str) -> str:
    """An existing directory as given, else ``data_root()/path``; raises FileNotFoundError
    (``DataFormatError`` when ``path`` is a file: a dataset is a directory)."""
    if os.path.isdir(path):
        return path
    alt = os.path.join(data_root(), path)
    if os.path.isdir(alt):
        return alt
    if os.path.exists(path):
        raise DataFormatError(
            f"{path}: not a directory (a dataset is a directory of files; give the directory that holds it)"
        )
    also = "" if os.path.isabs(path) else f"also looked in {alt}; "
    raise FileNotFoundError(
        f"dataset directory not found: {path!r} ({also}set SLIFMR_DATA to the data directory)"
    )


def load_dataset(path: str, modalities: list | None = None, seed: int = 0) -> Dataset:
    """Load a dataset directory in any supported layout and clean it (see :meth:`Dataset.clean`).

    Args:
        path: a directory or a name under :func:`data_root`.
        modalities: feature names to load (``None``: all ``*_feat.npy`` present).
        seed: seed of the train/test split for layouts that have none.
    """
    path = resolve_data_path(path)
    if is_kgat_dir(path):
        ds = load_kgat(path, modalities)
    elif is_lastfm_dir(path):
        ds = load_lastfm(path, seed=seed)
    elif is_book_crossing_dir(path):
        ds = load_book_crossing(path, seed=seed)
    else:
        inter = find_inter_file(path)
        if inter is None:
            raise DataFormatError(
                f"{path}: unknown layout (expected train.txt+test.txt, *.inter, "
                f"user_artists.dat or ratings_final.txt)"
            )
        ds = load_recbole(path, seed=seed) if is_recbole_inter(inter) else load_mmrec(path, modalities)
    ds = ds.clean()
    # the loaders reject empty files; here what is left after cleaning
    if ds.test.shape[0] == 0:
        raise DataFormatError(
            f"{path}: no test interactions left, nothing to evaluate (test "
            f"pairs that also occur in train or valid are dropped; a random "
            f"split keeps a user's only interaction in train)"
        )
    return ds
