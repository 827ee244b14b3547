"""Propagation on CPU: the Numba backend against its peers, measured in one run.

Prints (and writes, ``--output``) a table of median times, the ratio of every peer's time to
ours, and GB/s from the byte model below. Run the numbers you report under the exclusive CPU
lock::

    flock -x /tmp/slifmr-cpu.lock python bench/compare_propagate.py

Tasks (float32, d = 64 by default):

* ``lightgcn``: the symmetric-normalised bipartite adjacency of a power-law user-item graph
  (50k users, 20k items, 1M interactions -> 2M nnz over 70k nodes). Forward: our kernel
  (int32 and int64 indices, and through ``sk.propagate``) against ``torch.sparse.mm`` on a CSR
  tensor and scipy ``csr @ dense``. Forward+backward: ``sk.propagate`` with autograd against
  autograd through ``torch.sparse.mm``.
* ``hetero``: three relation graphs on one node space (users + items + entities): the
  interaction adjacency, an item-item kNN graph (k = 20) and item-entity KG edges (both
  directions), with relation weights. Ours: one fused call over the stacked CSR. Peers: three
  ``torch.sparse.mm`` calls plus the weighted additions; the same with scipy.
* ``kg``: a knowledge graph with 20 relations and 1M triples over 100k entities, aggregated
  with relation embeddings (``e_h = sum w_hrt * (e_r * e_t)``). Forward and forward+backward
  (gradients for entity and relation embeddings): ``sk.propagate(..., relation_emb=E)``
  against the gather-multiply-``index_add_`` formulation (KGIN style) with autograd. Peak
  extra memory of each is measured in a fresh child process (``ru_maxrss`` growth).

Byte model (what one call must stream; every X row is re-read once per edge that gathers it,
from cache or DRAM): ``indptr 8·(n_rows+1) + indices (4|8)·nnz + values 4·nnz
(+ relation 4·nnz) + gathered rows 4·d·nnz (+ 4·d·nnz for the relation-table row, read from
L1) + y 4·n_rows·d``. The backward adds the same over the transpose plus x read once for g.
GB/s = model bytes / median time. The copy bandwidth (``dst.copy_(src)`` of 256 MiB, counted
as read + write) is measured in the same run as the ceiling to compare with.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
for _p in (str(ROOT), str(ROOT / "bench")):  # a checkout without an install; harness.py
    if _p not in sys.path:
        sys.path.insert(0, _p)

from harness import environment, markdown_table, time_call, write_report  # noqa: E402

from slifmr_kernels.testing import power_law_ids, power_law_pairs, sym_normalize  # noqa: E402

# ---------------------------------------------------------------------------
# graphs
# ---------------------------------------------------------------------------


def _pairs(gen, n_a, n_b, count, alpha_a, alpha_b):
    """``count`` distinct power-law (a, b) pairs as numpy int64 arrays (for scipy)."""
    a, b = power_law_pairs(n_a, n_b, count, (alpha_a, alpha_b), distinct=True, generator=gen)
    return a.numpy(), b.numpy()


def lightgcn_adjacency(seed, n_users=50_000, n_items=20_000, n_inter=1_000_000):
    """[[0, R], [R^T, 0]] of ``n_inter`` distinct power-law interactions, sym-normalised."""
    u, i = _pairs(torch.Generator().manual_seed(seed), n_users, n_items, n_inter, 0.6, 0.9)
    r = sp.csr_matrix((np.ones(u.size, np.float32), (u, i)), shape=(n_users, n_items))
    return sym_normalize(sp.bmat([[None, r], [r.T, None]]).tocsr())


def hetero_graphs(
    seed, n_users=50_000, n_items=20_000, n_entities=30_000, n_inter=1_000_000, knn_k=20, n_kg=500_000
):
    """Three relation graphs over one node space [users | items | entities] (N = 100k)."""
    gen = torch.Generator().manual_seed(seed)
    n = n_users + n_items + n_entities
    u, i = _pairs(gen, n_users, n_items, n_inter, 0.6, 0.9)
    r = sp.csr_matrix((np.ones(u.size, np.float32), (u, i + n_users)), shape=(n, n))
    inter = sym_normalize((r + r.T).tocsr())
    # kNN over items: k neighbours per item row (never itself), similarity-like weights.
    rows = np.repeat(np.arange(n_items), knn_k) + n_users
    offset = torch.randint(0, n_items - 1, (rows.size,), generator=gen).numpy()
    cols = (offset + (rows - n_users) + 1) % n_items + n_users
    weight = torch.rand(rows.size, generator=gen).numpy() + np.float32(0.1)
    knn = sym_normalize(sp.csr_matrix((weight, (rows, cols)), shape=(n, n)))
    h, t = _pairs(gen, n_items, n_entities, n_kg, 0.3, 0.8)
    kg = sp.csr_matrix((np.ones(h.size, np.float32), (h + n_users, t + n_users + n_items)), shape=(n, n))
    kg = sym_normalize((kg + kg.T).tocsr())
    return {"interaction": inter, "knn": knn, "kg": kg}


def kg_triples(seed, n_entities=100_000, n_relations=20, n_triples=1_000_000):
    """(head, relation, tail) numpy arrays with power-law entity degrees and relation
    frequencies (P(relation) ∝ rank^-1)."""
    gen = torch.Generator().manual_seed(seed)
    h, t = _pairs(gen, n_entities, n_entities, n_triples, 0.7, 0.7)
    rel = power_law_ids(n_relations, h.size, alpha=1.0, generator=gen).numpy().astype(np.int32)
    return h, rel, t


# ---------------------------------------------------------------------------
# timing and byte model
# ---------------------------------------------------------------------------

# Wall clock by default; ``--clock thread`` (with ``--threads 1``) times the CPU time of the
# calling thread instead, which a busy shared machine disturbs far less (time slices lost to
# other processes are not counted; cache and memory-bus sharing still are).
CLOCK = time.perf_counter


def median_time(fn, repeats):
    """Median seconds of ``repeats`` calls after 2 warm-up calls, on this script's clock."""
    return time_call(fn, repeats=repeats, warmup=2, clock=CLOCK).seconds


def spmm_bytes(n_rows, nnz, d, index_bytes=4, relation=False, elem=4):
    """Bytes one forward call streams (see the module docstring)."""
    b = 8 * (n_rows + 1) + index_bytes * nnz + elem * nnz + elem * d * nnz + elem * n_rows * d
    if relation:
        b += 4 * nnz
    return b


def gather_ceiling_kernel():
    """A bare gather of the same rows in the same order: sum x[indices[e]] over all edges into
    one accumulator per task, no values, no output rows. What is left of our kernel's time
    above this is arithmetic and output; what is below it is the memory system."""
    import numba

    @numba.njit(parallel=True, cache=False)
    def bare_gather(indptr, indices, x, n_tasks):
        nnz = indices.shape[0]
        d = x.shape[1]
        out = np.zeros((n_tasks, d), dtype=x.dtype)
        for t in numba.prange(n_tasks):
            e0 = nnz * t // n_tasks
            e1 = nnz * (t + 1) // n_tasks
            for e in range(e0, e1):
                c = indices[e]
                for k in range(d):
                    out[t, k] += x[c, k]
        return out

    return bare_gather


def copy_bandwidth(repeats):
    src = torch.rand(64 * 1024 * 1024)  # 256 MiB of fp32
    dst = torch.empty_like(src)
    t = median_time(lambda: dst.copy_(src), repeats)
    return 2 * src.numel() * 4 / t / 1e9


# ---------------------------------------------------------------------------
# tasks
# ---------------------------------------------------------------------------


def _csr_tensor(a: sp.csr_matrix) -> torch.Tensor:
    return torch.sparse_csr_tensor(
        torch.from_numpy(a.indptr.astype(np.int64)),
        torch.from_numpy(a.indices.astype(np.int64)),
        torch.from_numpy(a.data.astype(np.float32)),
        a.shape,
    )


def _kernel_args(a: sp.csr_matrix, index_dtype):
    return (
        torch.from_numpy(a.indptr.astype(np.int64)),
        torch.from_numpy(a.indices.astype(np.int64)).to(index_dtype),
        torch.from_numpy(a.data.astype(np.float32)),
    )


def task_lightgcn(args, rows, nbk, sk):
    a = lightgcn_adjacency(args.seed, n_inter=args.inter)
    n, nnz, d = a.shape[0], a.nnz, args.dim
    x = torch.randn(n, d)
    xn = x.numpy()
    t_csr = _csr_tensor(a)
    ip, ix32, v = _kernel_args(a, torch.int32)
    ix64 = ix32.long()
    group = f"lightgcn fwd (N={n}, nnz={nnz}, d={d})"
    fwd = spmm_bytes(n, nnz, d)
    rows.append(
        (
            group,
            "numba kernel, int32 idx",
            median_time(lambda: nbk.spmm(ip, ix32, v, x, n), args.repeats),
            fwd,
            True,
        )
    )
    bare = gather_ceiling_kernel()
    ixn = ix32.numpy()
    rows.append(
        (
            group,
            "ceiling: bare gather of the same rows",
            median_time(lambda: bare(a.indptr, ixn, xn, 512), args.repeats),
            4 * nnz * (d + 1),
            False,
        )
    )
    rows.append(
        (
            group,
            "numba kernel, int64 idx",
            median_time(lambda: nbk.spmm(ip, ix64, v, x, n), args.repeats),
            spmm_bytes(n, nnz, d, 8),
            False,
        )
    )
    if sk is not None:
        g = sk.CSRGraph.from_scipy(a)
        rows.append(
            (
                group,
                "sk.propagate(numba)",
                median_time(lambda: sk.propagate(g, x, backend="numba"), args.repeats),
                fwd,
                False,
            )
        )
    rows.append(
        (
            group,
            "torch.sparse.mm (CSR)",
            median_time(lambda: torch.sparse.mm(t_csr, x), args.repeats),
            spmm_bytes(n, nnz, d, 8),
            False,
        )
    )
    rows.append((group, "scipy csr @ dense", median_time(lambda: a @ xn, args.repeats), fwd, False))

    group = f"lightgcn fwd+bwd (N={n}, nnz={nnz}, d={d})"
    dy = torch.randn(n, d)
    both = 2 * fwd

    def torch_fb():
        xr = x.detach().requires_grad_()
        torch.sparse.mm(t_csr, xr).backward(dy)

    if sk is not None:

        def ours_fb():
            xr = x.detach().requires_grad_()
            sk.propagate(g, xr, backend="numba").backward(dy)

        g.transpose()  # built once per graph and cached: not part of a training step
        rows.append((group, "sk.propagate(numba) + autograd", median_time(ours_fb, args.repeats), both, True))
    rows.append(
        (
            group,
            "torch.sparse.mm + autograd",
            median_time(torch_fb, args.repeats),
            2 * spmm_bytes(n, nnz, d, 8),
            False,
        )
    )


def task_hetero(args, rows, nbk, sk):
    graphs = hetero_graphs(args.seed + 1, n_inter=args.inter)
    weights = {"interaction": 1.0, "knn": 0.5, "kg": 0.25}
    names = list(graphs)
    n = graphs[names[0]].shape[0]
    d = args.dim
    x = torch.randn(n, d)
    xn = x.numpy()
    # The stacked CSR: rows merged, relation id per edge (what sk.stack_relations builds).
    coo = [graphs[k].tocoo() for k in names]
    r_all = np.concatenate([c.row for c in coo])
    c_all = np.concatenate([c.col for c in coo])
    v_all = np.concatenate([c.data for c in coo]).astype(np.float32)
    rel_all = np.concatenate([np.full(c.nnz, r, np.int32) for r, c in enumerate(coo)])
    order = np.lexsort((c_all, r_all))
    r_all, c_all, v_all, rel_all = r_all[order], c_all[order], v_all[order], rel_all[order]
    nnz = r_all.size
    indptr = np.zeros(n + 1, np.int64)
    np.add.at(indptr, r_all + 1, 1)
    ip = torch.from_numpy(np.cumsum(indptr))
    ix = torch.from_numpy(c_all.astype(np.int32))
    v = torch.from_numpy(v_all)
    rel = torch.from_numpy(rel_all)
    w = torch.tensor([weights[k] for k in names])
    table = w[:, None].expand(len(names), d).contiguous()
    v_folded = v * w[rel.long()]
    group = f"hetero 3 relations fwd (N={n}, nnz={nnz}, d={d})"
    fwd = spmm_bytes(n, nnz, d)
    rows.append(
        (
            group,
            "numba spmm, weights folded",
            median_time(lambda: nbk.spmm(ip, ix, v_folded, x, n), args.repeats),
            fwd,
            True,
        )
    )
    rows.append(
        (
            group,
            "numba spmm_rel, weight table",
            median_time(lambda: nbk.spmm_rel(ip, ix, v, rel, table, x, n), args.repeats),
            spmm_bytes(n, nnz, d, relation=True),
            False,
        )
    )
    if sk is not None:
        stacked = sk.stack_relations(
            {k: sk.CSRGraph.from_scipy(graphs[k]) for k in names}, weights=[weights[k] for k in names]
        )
        rows.append(
            (
                group,
                "sk.propagate(numba) stacked",
                median_time(lambda: sk.propagate(stacked, x, backend="numba"), args.repeats),
                fwd,
                False,
            )
        )
    tensors = [_csr_tensor(graphs[k]) for k in names]
    sep_bytes = sum(spmm_bytes(n, graphs[k].nnz, d, 8) for k in names) + 2 * 3 * n * d * 4

    def torch_three():
        y = torch.sparse.mm(tensors[0], x)
        for k, t in zip(names[1:], tensors[1:]):
            y.add_(torch.sparse.mm(t, x), alpha=weights[k])
        return y

    def scipy_three():
        y = graphs[names[0]] @ xn
        for k in names[1:]:
            y += weights[k] * (graphs[k] @ xn)
        return y

    rows.append(
        (group, "3x torch.sparse.mm + adds", median_time(torch_three, args.repeats), sep_bytes, False)
    )
    rows.append(
        (group, "3x scipy csr @ dense + adds", median_time(scipy_three, args.repeats), sep_bytes, False)
    )


def _kg_setup(args):
    h, rel, t = kg_triples(args.seed + 2, args.entities, args.relations, args.triples)
    n = args.entities
    deg = np.bincount(h, minlength=n).astype(np.float32)
    w = (1.0 / np.maximum(deg, 1))[h]  # w_hrt = 1 / |N(h)| (mean aggregation)
    return h, rel, t, w, n


def kg_peer_fb(h, rel, t, w, x, e, dy):
    """KGIN-style: gather tails, multiply by relation embeddings, index_add_ into heads."""
    msg = x[t] * e[rel] * w[:, None]
    y = torch.zeros(x.shape[0], x.shape[1], dtype=x.dtype).index_add_(0, h, msg)
    if dy is not None:
        y.backward(dy)
    return y


def task_kg(args, rows, nbk, sk):
    hn, reln, tn, wn, n = _kg_setup(args)
    d, R, nnz = args.dim, args.relations, hn.size
    h, rel, t, w = (
        torch.from_numpy(hn),
        torch.from_numpy(reln).long(),
        torch.from_numpy(tn),
        torch.from_numpy(wn),
    )
    x0 = torch.randn(n, d) * 0.1
    e0 = torch.randn(R, d)
    dy = torch.randn(n, d)
    fwd = spmm_bytes(n, nnz, d, relation=True) + 4 * d * nnz
    # backward: dx over A^T (same bytes) + x read once for g
    both = 2 * fwd + 4 * n * d
    group = f"kg R={R} fwd (N={n}, triples={nnz}, d={d})"
    g = None
    if sk is not None:
        g = sk.CSRGraph.from_edges(
            h, t, weight=w, relation=torch.from_numpy(reln), shape=(n, n), num_relations=R
        )
        rows.append(
            (
                group,
                "sk.propagate(numba, relation_emb)",
                median_time(lambda: sk.propagate(g, x0, relation_emb=e0, backend="numba"), args.repeats),
                fwd,
                True,
            )
        )
    else:
        a = sp.csr_matrix((wn, (hn, tn)), shape=(n, n))  # relation ids follow via a permutation
        order = np.lexsort((tn, hn))
        ip = np.zeros(n + 1, np.int64)
        np.add.at(ip, hn + 1, 1)
        args_k = (
            torch.from_numpy(np.cumsum(ip)),
            torch.from_numpy(tn[order].astype(np.int32)),
            torch.from_numpy(wn[order]),
            torch.from_numpy(reln[order]),
        )
        del a
        rows.append(
            (
                group,
                "numba spmm_rel kernel",
                median_time(lambda: nbk.spmm_rel(*args_k, e0, x0, n), args.repeats),
                fwd,
                True,
            )
        )
    rows.append(
        (
            group,
            "gather * E[r] + index_add_",
            median_time(lambda: kg_peer_fb(h, rel, t, w, x0, e0, None), args.repeats),
            fwd,
            False,
        )
    )
    if sk is None:
        return
    group = f"kg R={R} fwd+bwd (N={n}, triples={nnz}, d={d})"
    g.transpose()

    def ours():
        x = x0.detach().requires_grad_()
        e = e0.detach().requires_grad_()
        sk.propagate(g, x, relation_emb=e, backend="numba").backward(dy)

    def peer():
        x = x0.detach().requires_grad_()
        e = e0.detach().requires_grad_()
        kg_peer_fb(h, rel, t, w, x, e, dy)

    mem = {m: child_peak_memory(args, m) for m in ("ours", "peer")}
    rows.append(
        (
            group,
            f"sk.propagate(numba) + autograd [peak +{mem['ours']:.0f} MiB]",
            median_time(ours, args.repeats),
            both,
            True,
        )
    )
    rows.append(
        (
            group,
            f"gather/index_add_ + autograd [peak +{mem['peer']:.0f} MiB]",
            median_time(peer, args.repeats),
            both,
            False,
        )
    )


def child_peak_memory(args, which):
    """Peak RSS growth (MiB) of one KG forward+backward, in a fresh process.

    The child lowers glibc's mmap threshold so every large block is returned to the OS when
    freed; a thread samples the resident set every 0.2 ms during the call, so the number is
    the high-water mark of that call alone (outputs and gradients included), not of setup.
    """
    cmd = [
        sys.executable,
        __file__,
        "--child-kg-memory",
        which,
        "--entities",
        str(args.entities),
        "--relations",
        str(args.relations),
        "--triples",
        str(args.triples),
        "--dim",
        str(args.dim),
        "--seed",
        str(args.seed),
    ]
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072")
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout
    return float(out.strip().splitlines()[-1])


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child_kg_memory(args):
    import threading

    import slifmr_kernels as sk

    hn, reln, tn, wn, n = _kg_setup(args)
    d, R = args.dim, args.relations
    h, rel, t, w = (
        torch.from_numpy(hn),
        torch.from_numpy(reln).long(),
        torch.from_numpy(tn),
        torch.from_numpy(wn),
    )
    x = (torch.randn(n, d) * 0.1).requires_grad_()
    e = torch.randn(R, d).requires_grad_()
    dy = torch.randn(n, d)
    g = sk.CSRGraph.from_edges(h, t, weight=w, relation=torch.from_numpy(reln), shape=(n, n), num_relations=R)
    g.transpose()
    # Warm the JIT on a tiny graph so compilation memory is not counted.
    tiny = sk.CSRGraph.from_edges(
        h[:10] % 5, t[:10] % 5, relation=torch.from_numpy(reln[:10]), shape=(5, 5), num_relations=R
    )
    xt = torch.randn(5, d, requires_grad=True)
    sk.propagate(tiny, xt, relation_emb=e, backend="numba").sum().backward()
    kg_peer_fb(h[:10] % 5, rel[:10], t[:10] % 5, w[:10], xt, e, torch.randn(5, d))
    del xt
    e.grad = None
    base = _rss_bytes()
    peak = [base]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0002)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    if args.child_kg_memory == "ours":
        sk.propagate(g, x, relation_emb=e, backend="numba").backward(dy)
    else:
        kg_peer_fb(h, rel, t, w, x, e, dy)
    done.set()
    th.join()
    peak[0] = max(peak[0], _rss_bytes())
    print((peak[0] - base) / 2**20)


TASKS = {"lightgcn": task_lightgcn, "hetero": task_hetero, "kg": task_kg}


# ---------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------


def format_table(rows, copy_gbs):
    """Markdown table of ``rows`` (task, implementation, median s, model bytes, is ours):
    each group's times against its ``ours`` row, GB/s and its share of the copy bandwidth."""
    cells = []
    for grp in dict.fromkeys(r[0] for r in rows):
        members = [r for r in rows if r[0] == grp]
        ours = next((r for r in members if r[4]), members[0])
        for _, name, t, nbytes, is_ours in members:
            gbs = nbytes / t / 1e9
            cells.append(
                {
                    "task": grp,
                    "implementation": f"**{name}**" if is_ours else name,
                    "median ms": f"{t * 1e3:.2f}",
                    "ours is × faster": "—" if is_ours else f"{t / ours[2]:.2f}",
                    "GB/s (model)": f"{gbs:.1f}",
                    "% of copy": f"{100 * gbs / copy_gbs:.0f} %",
                }
            )
    cols = ["task", "implementation", "median ms", "ours is × faster", "GB/s (model)", "% of copy"]
    return markdown_table(cells, cols, right=cols[2:])


def describe(info, copy_gbs, clock):
    """The one-line description of the machine above the table."""
    return (
        f"{info['cpu']}, {info['cores']} cores, torch {info['torch']} ({info['threads']} "
        f"threads), numba {info['numba']} ({info['numba_threads']} threads), scipy "
        f"{info['scipy']}; copy bandwidth {copy_gbs:.1f} GB/s; clock: {clock}"
    )


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", default="lightgcn,hetero,kg")
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--inter", type=int, default=1_000_000, help="user-item interactions")
    p.add_argument("--entities", type=int, default=100_000)
    p.add_argument("--relations", type=int, default=20)
    p.add_argument("--triples", type=int, default=1_000_000)
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--threads", type=int, default=None, help="threads for torch and numba (default: all cores)"
    )
    p.add_argument(
        "--clock",
        choices=["wall", "thread"],
        default="wall",
        help="wall clock, or CPU time of the calling thread (use with --threads 1)",
    )
    p.add_argument("--output", default=str(ROOT / "runs" / "compare_propagate.md"))
    p.add_argument("--child-kg-memory", choices=["ours", "peer"], help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.child_kg_memory:
        _child_kg_memory(args)
        return
    global CLOCK
    if args.clock == "thread":
        if args.threads != 1:
            p.error("--clock thread measures one thread: pass --threads 1")
        CLOCK = time.thread_time
    import numba

    if args.threads:
        numba.set_num_threads(args.threads)
    # (slifmr_kernels.propagate is also the name of the public function: import by module path)
    nbk = importlib.import_module("slifmr_kernels.propagate.numba")
    try:
        import slifmr_kernels as sk
    except ImportError:  # the public op is optional for kernel-only runs
        sk = None
    rows = []
    copy_gbs = copy_bandwidth(args.repeats)
    for name in args.tasks.split(","):
        TASKS[name](args, rows, nbk, sk)
    info = environment()
    env = describe(info, copy_gbs, args.clock)
    text = f"{env}\n\n{format_table(rows, copy_gbs)}\n"
    print(text)
    out = write_report(
        args.output,
        text,
        {
            "env": env,
            "environment": info,
            "copy_gbs": copy_gbs,
            "rows": [dict(task=r[0], impl=r[1], median_s=r[2], bytes=r[3], ours=r[4]) for r in rows],
        },
    )
    print(f"written to {out}")


if __name__ == "__main__":
    main()
