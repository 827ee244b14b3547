"""slifmr_kernels.distributed — the sparse graph ops sharded over torch.distributed ranks.

Imported on its own (``import slifmr_kernels.distributed as skd``), never by
``import slifmr_kernels``. Every op is a collective: all ranks of the process group call it, in
the same order, with arguments that agree where they must (checked: a clear InputError on every
rank, not a hang). A peer that dies or falls silent makes the others raise
:class:`DistributedError` within the process group's timeout.

* :func:`partition_rows` / :class:`RowPartition` — which rank owns which row (contiguous blocks,
  or runs of a locality order; optionally balanced by a per-row weight); :func:`halo_sizes`
  plans one on a single machine.
* :class:`ShardedGraph` — a square graph split by rows, built from per-rank edge shards with
  all-to-all (never whole on one rank), with its halo exchange plan and ``report()``.
* :func:`propagate` / :func:`propagate_layers` — halo exchange + the local fused kernel, with
  autograd; forward bit-identical to the single-process op.
* :func:`topk_similarity`, :func:`knn_graph`, :func:`topk_scores` — exact top-k with the
  candidate blocks passed round a ring.

See docs/DISTRIBUTED.md.
"""

from ._comm import DistributedError
from .partition import RowPartition, bipartite_order, halo_sizes, partition_rows
from .propagate import halo_exchange, propagate, propagate_layers
from .sharded_graph import ShardedGraph
from .topk import knn_graph, topk_scores, topk_similarity

__all__ = [
    "DistributedError",
    "RowPartition",
    "partition_rows",
    "halo_sizes",
    "bipartite_order",
    "ShardedGraph",
    "propagate",
    "propagate_layers",
    "halo_exchange",
    "topk_similarity",
    "knn_graph",
    "topk_scores",
]
