"""The learning curves of a run, ``curves.png``, drawn with matplotlib (optional dependency).

Two panels against the epoch: the training loss, and validation Recall@20 / NDCG@20. The best
epoch (highest validation Recall@20, the trainer's selection) is marked in both. Without
matplotlib no figure is written: :func:`write_curves` returns False and the trainer says once
what to install.
"""

from __future__ import annotations

import math

from .checkpoint import _atomic_write

__all__ = ["write_curves", "matplotlib_available", "MISSING_MATPLOTLIB"]

MISSING_MATPLOTLIB = (
    "no curves.png: matplotlib is not installed (pip install matplotlib, or pip install 'slifmr[track]')"
)


def matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _series(history: list, key: str) -> tuple:
    pts = [
        (r["epoch"], float(r[key]))
        for r in history
        if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])
    ]
    return [x for x, _ in pts], [y for _, y in pts]


def write_curves(history: list, path: str, best_epoch: int | None = None) -> bool:
    """Draw the learning curves of ``history`` (the records of ``metrics.jsonl``) into ``path``
    (PNG, written atomically). ``best_epoch``: the epoch to mark (default: the epoch of the
    highest validation Recall@20). Returns False, writing nothing, without matplotlib."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.ticker import MaxNLocator
    except ImportError:
        return False
    # Figure directly, not pyplot: no global state, no GUI backend, safe in any thread.
    fig = Figure(figsize=(10, 4.2), dpi=110, layout="constrained")
    ax_loss, ax_val = fig.subplots(1, 2, sharex=True)
    marker = {"marker": "o", "markersize": 3} if len(history) <= 40 else {}
    x, y = _series(history, "loss")
    ax_loss.plot(x, y, color="C0", label="training loss", **marker)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="Training loss")
    rx, ry = _series(history, "valid_recall@20")
    nx, ny = _series(history, "valid_ndcg@20")
    if rx:
        ax_val.plot(rx, ry, color="C3", label="validation Recall@20", **marker)
    if nx:
        ax_val.plot(nx, ny, color="C2", label="validation NDCG@20", **marker)
    if not (rx or nx):
        ax_val.text(
            0.5, 0.5, "no validation yet", transform=ax_val.transAxes, ha="center", va="center", color="0.4"
        )
    ax_val.set(xlabel="epoch", ylabel="metric", title="Validation")
    if best_epoch is None and ry:
        best_epoch = rx[max(range(len(ry)), key=lambda i: (ry[i], -rx[i]))]
    if best_epoch is not None:
        label = f"best epoch {best_epoch}"
        if best_epoch in rx:
            best = ry[rx.index(best_epoch)]
            label += f" (Recall@20 {best:.4f})"
            ax_val.plot(
                [best_epoch], [best], linestyle="none", marker="*", markersize=12, color="C3", zorder=3
            )
        for ax in (ax_loss, ax_val):
            ax.axvline(best_epoch, color="0.35", linestyle="--", linewidth=1, label=label)
    for ax in (ax_loss, ax_val):
        ax.grid(True, alpha=0.35)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    epochs = sorted({r["epoch"] for r in history if "epoch" in r})
    if len(epochs) == 1:  # one epoch: one tick (the axes are shared), not fractions around it
        ax_loss.set_xlim(epochs[0] - 0.5, epochs[0] + 0.5)
        ax_loss.set_xticks(epochs)
    # one legend for both panels, below them (never over a curve); the best-epoch line once
    handles, labels = [], []
    for ax in (ax_loss, ax_val):
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    if best_epoch is not None:  # the best-epoch line last
        i = labels.index(label)
        handles.append(handles.pop(i))
        labels.append(labels.pop(i))
    if handles:
        fig.legend(handles, labels, loc="outside lower center", ncol=len(handles), frameon=False)
    _atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    return True
