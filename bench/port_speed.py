"""What a port onto slifmr_kernels buys, measured small (docs/PORTING.md's table).

    python bench/port_speed.py                # ~1 minute on 2 cores
    python bench/port_speed.py --inter 50000 --items 2000 --repeats 5

Rows (float32, d = 64, median of ``--repeats`` after one warm-up, CPU):

* LightGCN, 3 layers, forward + backward of the layer mean: ``sk.propagate_layers`` on a
  sym-normalised bipartite graph (2 x ``--inter`` nnz) against the LightGCN reference loop of
  ``torch.sparse.mm`` with autograd.
* LATTICE-style learned item graph (``--items`` items, k = 10, gradients into the edge values
  and from there into the features): ours (kNN pattern from ``sk.topk_similarity``, values as
  torch ops, ``normalize('sym_row')``, ``sk.propagate``) against the peer's dense build
  (I x I similarity, ``torch.topk``, dense Laplacian, ``torch.mm``). Memory: the bytes of the
  largest graph-sized tensor each holds (dense I x I float32 vs the CSR arrays).
"""

from __future__ import annotations

import argparse
import os
import sys

import torch
import torch.nn.functional as F

BENCH = os.path.dirname(os.path.abspath(__file__))
if BENCH not in sys.path:  # harness.py
    sys.path.insert(0, BENCH)

from harness import time_call  # noqa: E402

import slifmr_kernels as sk  # noqa: E402


def _median_time(fn, repeats):
    """Median seconds of ``repeats`` calls after one warm-up."""
    return time_call(fn, repeats=repeats, warmup=1).seconds


def lightgcn(inter, users, items, d, repeats):
    gen = torch.Generator().manual_seed(0)
    u = torch.randint(0, users, (inter,), generator=gen)
    i = torch.randint(0, items, (inter,), generator=gen)
    n = users + items
    g = (
        sk.CSRGraph.from_edges(torch.cat([u, users + i]), torch.cat([users + i, u]), shape=(n, n))
        .normalize("sym")
        .mark_symmetric()
    )
    G = g.to_torch_sparse_coo()
    x0 = torch.randn(n, d, generator=gen)

    def ours():
        x = x0.clone().requires_grad_(True)
        sk.propagate_layers(g, x, 3).sum().backward()

    def peer():
        x = x0.clone().requires_grad_(True)
        embs, h = [x], x
        for _ in range(3):
            h = torch.sparse.mm(G, h)
            embs.append(h)
        torch.stack(embs, 1).mean(1).sum().backward()

    return g.nnz, _median_time(ours, repeats), _median_time(peer, repeats)


def lattice(items, k, d, repeats):
    gen = torch.Generator().manual_seed(1)
    f0 = torch.rand(items, 32, generator=gen)
    h0 = torch.randn(items, d, generator=gen)
    held = {}

    def ours():
        f = f0.clone().requires_grad_(True)
        idx, _ = sk.topk_similarity(f.detach(), k, exclude_self=False)
        rows = torch.arange(items).repeat_interleave(k)
        cols = idx.reshape(-1)
        fn = F.normalize(f, dim=1)
        g = sk.CSRGraph.from_edges(rows, cols, (fn[rows] * fn[cols]).sum(1), shape=(items, items)).normalize(
            "sym_row"
        )
        held["ours"] = g.indptr.nbytes + g.indices.nbytes + g.values.nbytes
        sk.propagate(g, h0).pow(2).sum().backward()

    def peer():
        f = f0.clone().requires_grad_(True)
        fn = f.div(torch.norm(f, p=2, dim=-1, keepdim=True))
        sim = fn @ fn.t()
        val, ind = torch.topk(sim, k, dim=-1)
        adj = torch.zeros_like(sim).scatter_(-1, ind, val)
        d_inv = adj.sum(-1).pow(-0.5)
        d_inv[torch.isinf(d_inv)] = 0
        lap = d_inv[:, None] * adj * d_inv[None, :]
        held["peer"] = sim.nbytes
        torch.mm(lap, h0).pow(2).sum().backward()

    t_ours, t_peer = _median_time(ours, repeats), _median_time(peer, repeats)
    return t_ours, t_peer, held["ours"], held["peer"]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--inter", type=int, default=50_000, help="user-item interactions")
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--items", type=int, default=4_000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()
    nnz, t_o, t_p = lightgcn(a.inter, a.users, a.items, a.dim, a.repeats)
    print(
        f"LightGCN 3 layers fwd+bwd, {a.users + a.items} nodes, {nnz} nnz, d={a.dim}: "
        f"sk.propagate_layers {t_o * 1e3:.1f} ms [{sk.last_backend('propagate')}], "
        f"torch.sparse.mm {t_p * 1e3:.1f} ms, {t_p / t_o:.2f}x"
    )
    t_o, t_p, b_o, b_p = lattice(a.items, a.k, a.dim, a.repeats)
    print(
        f"LATTICE learned graph build + propagate fwd+bwd, {a.items} items, k={a.k}: "
        f"ours {t_o * 1e3:.1f} ms, dense peer {t_p * 1e3:.1f} ms, {t_p / t_o:.2f}x; "
        f"graph bytes ours {b_o / 2**20:.2f} MiB, peer's I x I matrix {b_p / 2**20:.1f} MiB "
        f"({b_p / b_o:.0f}x)"
    )
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}")


if __name__ == "__main__":
    main()
