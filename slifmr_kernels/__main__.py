"""``python -m slifmr_kernels``: a one-minute tour of the ops on generated data.

Builds a power-law user-item graph, propagates LightGCN layers, fuses them with two other
views, builds a kNN graph and ranks items for users with their training items excluded, on
every backend available here, and checks each against the torch reference.
"""

import argparse

import torch

import slifmr_kernels as sk
from slifmr_kernels.testing import bipartite_adjacency, time_call


def _timed(fn):
    """(result, seconds) of one call: the tour shows first calls, JIT compilation included."""
    t = time_call(fn)
    return t.result, t.seconds


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--users", type=int, default=8_000)
    p.add_argument("--items", type=int, default=4_000)
    p.add_argument("--interactions", type=int, default=100_000)
    p.add_argument("--dim", type=int, default=64)
    args = p.parse_args(argv)
    gen = torch.Generator().manual_seed(0)
    adj = bipartite_adjacency(args.users, args.items, args.interactions, generator=gen)
    x = torch.randn(adj.shape[0], args.dim, generator=gen)
    print(f"graph: {adj}; backends here: {sk.available_backends()}")
    ref_layers = sk.propagate_layers(adj, x, 3, backend="torch")
    items = ref_layers[args.users :]
    ref_knn, _ = sk.topk_similarity(items, 10, backend="torch")
    train = sk.CSRGraph(
        adj.indptr[: args.users + 1],
        adj.indices[: adj.indptr[args.users]] - args.users,
        shape=(args.users, args.items),
    )
    ref_rank, _ = sk.topk_scores(ref_layers[: args.users], items, 20, exclude=train, backend="torch")
    # two more views of every node, side by side: its layer-0 embedding and one hop
    views = torch.cat([x, sk.propagate(adj, x, backend="torch")], 1)
    alpha = torch.tensor([0.5, 0.25])
    ref_fused = sk.fuse_views(ref_layers, alpha, views, backend="torch")
    for backend in sk.available_backends():
        if backend == "triton":
            continue  # interpreted on CPU: correct but far too slow for this size
        layers, t_prop = _timed(lambda: sk.propagate_layers(adj, x, 3, backend=backend))
        (knn, _), t_knn = _timed(lambda: sk.topk_similarity(items, 10, backend=backend))
        (rank, _), t_rank = _timed(
            lambda: sk.topk_scores(layers[: args.users], items, 20, exclude=train, backend=backend)
        )
        fused, t_fuse = _timed(lambda: sk.fuse_views(ref_layers, alpha, views, backend=backend))
        err = (layers - ref_layers).abs().max().item()
        fuse_err = (fused - ref_fused).abs().max().item()
        agree = (knn == ref_knn).float().mean().item()
        rank_agree = (rank == ref_rank).float().mean().item()
        print(
            f"[{backend:>6}] 3-layer propagate {t_prop * 1e3:8.1f} ms (max err {err:.1e}) | "
            f"kNN k=10 {t_knn * 1e3:8.1f} ms ({agree:.1%} same ids) | "
            f"top-20 ranking {t_rank * 1e3:8.1f} ms ({rank_agree:.1%} same ids) | "
            f"fuse 2 views {t_fuse * 1e3:6.1f} ms (max err {fuse_err:.1e})"
        )
    print("first calls include JIT compilation; see bench/ for measured comparisons")


if __name__ == "__main__":
    main()
