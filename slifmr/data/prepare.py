"""The dataset of a training run, from a configuration: loaded or generated, a validation split
carved, relabelled for locality."""

from __future__ import annotations

from ..config import Config, ConfigError
from . import Dataset, load_dataset, make_synthetic
from .reorder import apply_reorder

__all__ = ["prepare_data"]


def prepare_data(cfg: Config, data: str | None = None) -> Dataset:
    """The dataset of a run: ``data`` (a directory or a name under $SLIFMR_DATA) or the
    synthetic generator with ``cfg.synthetic``; validation carved from train (seeded) if absent;
    then relabelled for locality as ``cfg.reorder`` says (``slifmr.data.reorder``: the split is
    the same either way, ``ds.orig_users`` / ``ds.orig_items`` give the original ids)."""
    if data:
        ds = load_dataset(data, modalities=None, seed=cfg.seed)
    else:
        params = dict(cfg.synthetic or {})
        params.setdefault("seed", cfg.seed)
        try:
            ds = make_synthetic(**params)
        except TypeError as exc:
            raise ConfigError(f"config key 'synthetic': {exc}") from None
    return apply_reorder(ds.with_validation(cfg.valid_fraction, cfg.seed), cfg.reorder)
