"""The self-loop's state, in one owner: H(t-1) and the kNN graph behind S(t-1).

After every epoch the trainer hands the item representations H(t) to :meth:`SelfLoop.observe`;
before the next one :meth:`SelfLoop.graphs` turns them into the feedback graph S(t+1) (an exact
kNN graph, or ``sk.knn_refine`` of the previous one when ``refine``) and asks the
:class:`~slifmr.graphs.GraphBuilder` for the epoch's graphs. Before the first epoch S(0) comes
from the modality features (``initial="features"``), or there is none.

Everything a resumed run needs to continue the same run is in :meth:`state_dict` (plain
tensors, loadable with ``torch.load(weights_only=True)``): H(t-1), the previous directed kNN
graph that seeds ``knn_refine``, and the not yet used seed graph of a large catalogue.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F

import slifmr_kernels as sk

from .graphs import GraphBuilder, Graphs

__all__ = ["SelfLoop", "graph_state", "graph_from_state", "changed_edge_share"]


def graph_state(g: sk.CSRGraph | None) -> dict | None:
    """A CSRGraph without relations as a dict of CPU tensors (None stays None)."""
    if g is None:
        return None
    if g.relation is not None:
        raise ValueError("graph_state: graphs with relation ids are not supported")
    return {
        "indptr": g.indptr.cpu(),
        "indices": g.indices.cpu(),
        "values": g.values.cpu(),
        "shape": torch.tensor(g.shape, dtype=torch.int64),
    }


def graph_from_state(st: Mapping | None, name: str, device) -> sk.CSRGraph | None:
    """The inverse of :func:`graph_state`, validated (a checkpoint is input like any other)."""
    if st is None:
        return None
    try:
        shape = tuple(int(s) for s in st["shape"].tolist())
        g = sk.CSRGraph(st["indptr"], st["indices"], st["values"], shape=shape)
    except (KeyError, AttributeError, TypeError, ValueError) as exc:
        raise ValueError(f"self-loop state: {name} is not a valid graph ({exc})") from None
    return g.to(device) if str(device) != "cpu" else g


def changed_edge_share(old: sk.CSRGraph | None, new: sk.CSRGraph | None) -> float | None:
    """The share of ``new``'s edges (row, column) that ``old`` does not have: how much of the
    kNN graph behind S(t) changed since S(t-1). None when there is no previous graph to compare.
    O(E log E) on the graphs' device (an ``isin`` of the edge keys)."""
    if old is None or new is None or tuple(old.shape) != tuple(new.shape):
        return None

    def keys(g: sk.CSRGraph) -> torch.Tensor:
        rows = torch.repeat_interleave(
            torch.arange(g.shape[0], device=g.indices.device), torch.diff(g.indptr.long())
        )
        return rows * g.shape[1] + g.indices.long()

    k_new = keys(new)
    if k_new.numel() == 0:
        return 0.0
    kept = torch.isin(k_new, keys(old).to(k_new.device))
    return float(1.0 - kept.double().mean())


class SelfLoop:
    """H(t-1), the previous kNN graph and the S(0) source of one run.

    Args:
        builder: the dataset's graph builder; the self-loop takes over its ``seed_graph``
            (the first modality's directed kNN graph), which seeds the first refresh of a
            catalogue above the builder's exact-kNN limit.
        features: the modality features, name -> float32 (I, d_m) array, for S(0).
        enabled: False: no feedback, every epoch gets the builder's static graphs.
        k: neighbours per item in S(t).
        refine: refresh S(t) from the previous graph with ``sk.knn_refine`` (O(I k^2 d))
            instead of an exact kNN (O(I^2 d)).
        initial: "features" (S(0) from the mean of the L2-normalised modality features) or
            "none" (no S(0): the first epoch uses the static graphs).
        device: where H and the graphs live.
    """

    def __init__(
        self,
        builder: GraphBuilder,
        features: Mapping[str, np.ndarray],
        *,
        enabled: bool,
        k: int,
        refine: bool,
        initial: str = "features",
        modalities: Sequence[str] = (),
        device="cpu",
    ):
        self.builder = builder
        self.features = {m: features[m] for m in modalities}
        self.enabled, self.k, self.refine, self.initial = bool(enabled), int(k), bool(refine), initial
        self.device = torch.device(device)
        self.h_prev: torch.Tensor | None = None  # H(t-1), (I, d) float
        self.raw_prev: sk.CSRGraph | None = None  # directed kNN graph behind S(t-1)
        self.seed: sk.CSRGraph | None = builder.seed_graph if self.enabled else None
        builder.seed_graph = None  # one owner
        # share of the kNN edges behind the last S(t) not in S(t-1) (None: nothing to compare)
        self.changed_share: float | None = None

    # ------------------------------------------------------------------ per epoch
    def initial_source(self) -> torch.Tensor | None:
        """S(0) source: the mean of the L2-normalised modality features (concatenated / sqrt(M)
        gives cosine = mean of per-modality cosines), or None."""
        if self.initial != "features" or not self.features:
            return None
        feats = [F.normalize(torch.from_numpy(f), dim=1) for f in self.features.values()]
        return torch.cat(feats, 1) / math.sqrt(len(feats))

    def graphs(self, rng: np.random.Generator | None = None) -> tuple[Graphs, float]:
        """The graphs of the next epoch and the seconds spent on the feedback graph. ``rng``
        draws the training graph's edges when the builder drops some (``edge_dropout``)."""
        if not self.enabled:
            return self.builder.build(None, rng=rng), 0.0
        t0 = time.perf_counter()
        src = self.h_prev if self.h_prev is not None else self.initial_source()
        if src is None:
            return self.builder.build(None, rng=rng), time.perf_counter() - t0
        previous = self.raw_prev if (self.refine and self.h_prev is not None) else None
        if self.h_prev is None and not self.builder.knn_exact:
            # S(0) over the concatenated features of a catalogue too large for exact kNN
            # (O(I^2 D), hours at a million items): refine the first modality's kNN graph
            # instead, which is O(I k^2 D).
            previous = self.seed
        # The seed serves S(0) only.
        self.seed = None
        S, raw, raw_graph, _ = self.builder.feedback(src.to(self.device), self.k, previous)
        del src, previous
        # a statistic for the logs, not part of the refresh: its time is not counted in it
        t_share = time.perf_counter()
        self.changed_share = changed_edge_share(self.raw_prev, raw_graph)
        t_share = time.perf_counter() - t_share
        self.raw_prev = raw_graph
        return self.builder.build(S, raw, rng=rng), time.perf_counter() - t0 - t_share

    def observe(self, item_repr: torch.Tensor) -> None:
        """Record H(t) (I, d), the item representations after an epoch."""
        self.h_prev = item_repr.detach()

    def prime(self, item_repr: torch.Tensor, previous: sk.CSRGraph | None) -> None:
        """Start in the steady state: H(t-1) = ``item_repr`` and the previous kNN graph
        ``previous`` (benchmarks that time the per-epoch refresh from the first epoch)."""
        self.observe(item_repr)
        self.raw_prev, self.seed = previous, None

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict:
        return {
            "h_prev": None if self.h_prev is None else self.h_prev.cpu(),
            "raw_prev": graph_state(self.raw_prev),
            "seed": graph_state(self.seed),
        }

    def load_state_dict(self, st: Mapping) -> None:
        h = st.get("h_prev")
        if h is not None:
            if not isinstance(h, torch.Tensor) or h.dim() != 2 or h.shape[0] != self.builder.num_items:
                raise ValueError(
                    f"self-loop state: h_prev must be ({self.builder.num_items}, d), got "
                    f"{getattr(h, 'shape', type(h).__name__)}"
                )
            h = h.to(self.device)
        self.h_prev = h
        self.raw_prev = graph_from_state(st.get("raw_prev"), "raw_prev", self.device)
        self.seed = graph_from_state(st.get("seed"), "seed", self.device)
        for name, g in (("raw_prev", self.raw_prev), ("seed", self.seed)):
            if g is not None and g.shape != (self.builder.num_items,) * 2:
                raise ValueError(
                    f"self-loop state: {name} is {g.shape}, expected {(self.builder.num_items,) * 2}"
                )
