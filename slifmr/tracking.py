"""TensorBoard event files of a run (``OUTPUT/tb``), beside the JSON-lines log.

``Config.tensorboard``: ``"auto"`` writes them when ``tensorboard`` is installed, ``true``
requires it (a :class:`~slifmr.config.ConfigError` says what to install), ``false`` never.
Per epoch (the step is the epoch number): every loss term (``loss/...``), the validation
metrics (``valid/recall@20`` ...), the view weights alpha (``alpha/<view>``), the feedback
graph's size and the share of its edges that changed since the previous epoch
(``feedback/...``), and the seconds (``time/...``).

Read them with ``tensorboard --logdir OUTPUT`` (a tuning study: ``--logdir STUDY/trials``).
"""

from __future__ import annotations

import json
import math

from .config import ConfigError

__all__ = ["open_writer", "log_epoch", "MISSING_TENSORBOARD"]

MISSING_TENSORBOARD = (
    "config key 'tensorboard' is true, but tensorboard is not installed: "
    "pip install tensorboard (or pip install 'slifmr[track]')"
)


def open_writer(setting, logdir: str, config: dict | None = None):
    """A ``torch.utils.tensorboard.SummaryWriter`` into ``logdir``, or None (``setting`` false,
    or ``"auto"`` without tensorboard installed). ``config`` is logged once as text."""
    if setting is False:
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch raises ImportError naming tensorboard when it is missing
        if setting is True:
            raise ConfigError(MISSING_TENSORBOARD) from None
        return None
    writer = SummaryWriter(log_dir=logdir)
    if config is not None:
        writer.add_text("config", "```\n" + json.dumps(config, indent=2, sort_keys=True) + "\n```", 0)
    return writer


# per-epoch record key -> TensorBoard tag (loss terms and valid metrics are matched by prefix)
_TAGS = {
    "feedback_edges": "feedback/edges",
    "feedback_changed": "feedback/changed_share",
    "epoch_s": "time/epoch_s",
    "train_s": "time/train_s",
    "rebuild_s": "time/rebuild_s",
}


def log_epoch(writer, rec: dict, loss_keys, alpha: dict | None = None) -> None:
    """One epoch's record (a line of ``metrics.jsonl``) as scalars at step ``rec["epoch"]``."""
    step = int(rec["epoch"])
    scalars = {}
    for k in loss_keys:
        if k in rec:
            scalars[f"loss/{k}"] = rec[k]
    for k, v in rec.items():
        if k.startswith("valid_"):
            scalars[f"valid/{k[len('valid_') :]}"] = v
        elif k in _TAGS:
            scalars[_TAGS[k]] = v
    for name, v in (alpha or {}).items():
        scalars[f"alpha/{name}"] = v
    for tag, v in scalars.items():
        if isinstance(v, (int, float)) and math.isfinite(v):
            writer.add_scalar(tag, float(v), step)
    writer.flush()
