"""Sharded propagate on one machine: halo size, bytes sent and time against the single process.

    python bench/distributed_propagate.py --ranks 2 --nodes 200000 --edges 1000000 --dim 64

Builds a graph with planted communities (``--community`` nodes each; a share ``--local`` of each
node's edges stays inside its community), with node ids shuffled, so that a contiguous
partition scatters every community over all ranks while the community order (standing in for a
locality order such as ``slifmr.data.reorder``'s) keeps most edges on one rank. Each rank
generates only its own edge shard (its seed); ``ShardedGraph.from_edges`` moves the edges to
their row owners. Times one forward and one forward + backward of propagate (median of
``--repeat``), each rank with one thread, against the single-process op on the whole graph
with 1 and with ``--ranks`` threads (built from the same shards, in the parent process).
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import socket
import sys
import time

import torch
import torch.multiprocessing as mp

BENCH = os.path.dirname(os.path.abspath(__file__))
for _p in (os.path.dirname(BENCH), BENCH):  # a checkout without an install; harness.py
    if _p not in sys.path:
        sys.path.insert(0, _p)

from harness import time_call  # noqa: E402


def shard(args, rank):
    """Rank ``rank``'s edges: (src, dst), from its own seed."""
    g = torch.Generator().manual_seed(1000 + rank)
    n, c = args.nodes, args.community
    e = args.edges // args.ranks + (rank < args.edges % args.ranks)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(0))  # shared relabelling
    a = torch.randint(0, n, (e,), generator=g)
    local = torch.rand(e, generator=g) < args.local
    b_local = (a // c) * c + torch.randint(0, c, (e,), generator=g)
    b = torch.where(local, b_local.clamp_max(n - 1), torch.randint(0, n, (e,), generator=g))
    src, dst = perm[a], perm[b]
    return torch.cat([src, dst]), torch.cat([dst, src])  # symmetric


def median_time(fn, repeat):
    """Median seconds of ``repeat`` calls after one warm-up (kernel load, caches)."""
    return time_call(fn, repeats=repeat, warmup=1).seconds


def worker(rank, args, port, q):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    import torch.distributed as dist

    import slifmr_kernels.distributed as skd

    dist.init_process_group("gloo", rank=rank, world_size=args.ranks, timeout=datetime.timedelta(seconds=300))
    src, dst = shard(args, rank)
    perm = torch.randperm(args.nodes, generator=torch.Generator().manual_seed(0))
    out = {}
    for name, order in (("contiguous", None), ("community_order", perm)):
        part = skd.partition_rows(args.nodes, args.ranks, order=order)
        dist.barrier()
        t0 = time.perf_counter()
        sg = skd.ShardedGraph.from_edges(src, dst, num_nodes=args.nodes, partition=part)
        build = time.perf_counter() - t0
        rep = sg.report(d=args.dim)
        x = torch.randn(sg.num_local, args.dim, generator=torch.Generator().manual_seed(rank))

        def fwd():
            dist.barrier()
            skd.propagate(sg, x)

        def fwd_bwd():
            dist.barrier()
            xl = x.clone().requires_grad_()
            skd.propagate(sg, xl).sum().backward()

        out[name] = {
            "build_s": build,
            "forward_s": median_time(fwd, args.repeat),
            "forward_backward_s": median_time(fwd_bwd, args.repeat),
            "halo_rows": rep["halo_rows"],
            "halo_fraction": rep["halo_fraction"],
            "bytes_per_forward": rep["bytes_per_forward"],
            "max_bytes_per_rank": rep["max_bytes_per_rank"],
            "rows_per_rank": [r["rows"] for r in rep["ranks"]],
            "nnz_per_rank": [r["nnz"] for r in rep["ranks"]],
        }
    if rank == 0:
        q.put(out)
    dist.barrier()
    dist.destroy_process_group()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--nodes", type=int, default=200_000)
    p.add_argument("--edges", type=int, default=1_000_000, help="before symmetrising")
    p.add_argument("--community", type=int, default=1000)
    p.add_argument("--local", type=float, default=0.9)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeat", type=int, default=5)
    args = p.parse_args()
    import slifmr_kernels as sk

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ctx = mp.get_context("spawn")
    q = ctx.SimpleQueue()
    procs = [ctx.Process(target=worker, args=(r, args, port, q)) for r in range(args.ranks)]
    for pr in procs:
        pr.start()
    res = q.get()
    for pr in procs:
        pr.join()
    # single process, same edges (the shards concatenated by rank)
    parts = [shard(args, r) for r in range(args.ranks)]
    g = sk.CSRGraph.from_edges(
        torch.cat([a for a, _ in parts]), torch.cat([b for _, b in parts]), shape=(args.nodes, args.nodes)
    )
    x = torch.randn(args.nodes, args.dim, generator=torch.Generator().manual_seed(0))
    single = {}
    for threads in sorted({1, args.ranks}):
        torch.set_num_threads(threads)

        def fwd_bwd():
            xl = x.clone().requires_grad_()
            sk.propagate(g, xl).sum().backward()

        single[f"{threads}_threads"] = {
            "forward_s": median_time(lambda: sk.propagate(g, x), args.repeat),
            "forward_backward_s": median_time(fwd_bwd, args.repeat),
        }
    print(
        json.dumps(
            {
                "args": vars(args),
                "nnz": g.nnz,
                "backend": sk.last_backend("propagate") if hasattr(sk, "last_backend") else None,
                "sharded": res,
                "single_process": single,
                "cpus": os.cpu_count(),
                "loadavg_at_end": os.getloadavg(),
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
