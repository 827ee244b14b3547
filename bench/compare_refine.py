"""Incremental kNN refresh on CPU: ``sk.knn_refine`` against exact recomputation and
pynndescent, measured in one run.

Run the numbers you report under the exclusive CPU lock::

    flock -x /tmp/slifmr-cpu.lock python bench/compare_refine.py --n 200000
    flock -x /tmp/slifmr-cpu.lock python bench/compare_refine.py --n 1000000 --no-exact \\
        --no-pynndescent

Setting (float32, cosine, k = 10, d = 64): N clustered vectors x0 (1000 centres, the
data of bench/compare_topk.py) and their kNN graph g0; then every row moves by about 10 % of
its norm, ``x1 = x0 + 0.1 · noise · |x0|`` with ``noise ~ N(0, I/d)`` — the drift of item
vectors between two epochs. Methods, each producing the kNN graph of x1:

* ours: ``sk.knn_refine(x1, g0, k, seed=0)`` (defaults), seeded by g0; and with an earlier
  stop (``--deltas``, e.g. delta = 0.01) to compare with pynndescent at equal recall;
* exact recomputation: ``sk.knn_graph(x1, k, backend="numba")`` (our exact kernel, the
  fastest exact method here — see compare_topk.py);
* pynndescent ``NNDescent(x1, metric="cosine", n_neighbors=k+1, init_graph=g0 + self)``
  with its defaults plus ``init_graph`` (the same seeds), and unseeded with its defaults; its
  self match is dropped.
  Its JIT compilation is excluded by a warm-up on 5,000 rows.

Recall = |found ∩ exact| / (N·k) against the exact kNN of x1, on all rows, or on
``--recall-rows`` rows drawn at random (default 5,000 with ``--no-exact``): their exact lists
come from the library's own exact top-k, ``sk.topk_similarity(x[rows], k, y=x)`` with each
row's self excluded, i.e. rows·N·d work instead of N²·d. Sampled recalls are printed with
their standard error over rows (per-row recall std / sqrt(rows)).

g0 comes from the exact kernel, or with ``--no-exact`` (N = 1M: exact is ~15 min here) from
``knn_refine`` started from an empty graph (plain NN-descent); then g0 gets its own row:
its time, and its recall against the exact kNN of x0 on the same sampled rows — the refreshed
graph cannot be expected to beat the quality of its seed. The time of each sampled exact
computation is in the notes (it is not part of any method's time).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import slifmr_kernels as sk  # noqa: E402
from slifmr_kernels.refine.op import knn_recall  # noqa: E402
from slifmr_kernels.testing import neighbour_lists  # noqa: E402

sys.path.insert(0, str(ROOT / "bench"))
from compare_topk import LAST_CPU, clustered, measure, self_match_dropped  # noqa: E402
from harness import append_jsonl, environment, markdown_table  # noqa: E402


def perturb(x, seed, scale=0.1):
    g = torch.Generator().manual_seed(seed + 1)
    noise = torch.randn(x.shape, generator=g) / x.shape[1] ** 0.5
    return (x + scale * noise * x.norm(dim=1, keepdim=True)).contiguous()


def sampled_exact(x, rows, k):
    """Exact cosine neighbours of the given rows against all N rows (self excluded), from
    the library's exact top-k: rows·N·d work."""
    xn = sk.normalize_rows(x)
    excl = sk.CSRGraph.from_edges(torch.arange(rows.numel()), rows, shape=(rows.numel(), x.shape[0]))
    idx, _ = sk.topk_similarity(xn[rows], k, y=xn, metric="ip", exclude=excl)
    return idx


def row_recalls(got, exact):
    """Per-row |got ∩ exact| / |exact| of (R, w) and (R, k) id tensors (-1 = none)."""
    match = (exact[:, :, None] == got[:, None, :]) & (exact[:, :, None] >= 0)
    return match.any(2).sum(1).double() / (exact >= 0).sum(1).clamp_min(1).double()


def fmt_recall(per_row, sampled):
    """Mean recall, with its standard error over rows when the rows are a sample."""
    r = float(per_row.mean())
    if not sampled:
        return f"{r:.4f}"
    se = float(per_row.std()) / per_row.numel() ** 0.5 if per_row.numel() > 1 else 0.0
    return f"{r:.4f} ± {se:.4f}"


def pynndescent_graph(x, k, init=None, seed=0):
    from pynndescent import NNDescent

    kw = {}
    if init is not None:
        # pynndescent lists include the point itself: prepend it to the seed lists.
        n = x.shape[0]
        idx = neighbour_lists(init)
        kw["init_graph"] = np.concatenate([np.arange(n)[:, None], idx.numpy()], 1)
    index = NNDescent(
        x.numpy(),
        metric="cosine",
        n_neighbors=k + 1,
        random_state=seed,
        n_jobs=torch.get_num_threads(),
        compressed=True,
        **kw,
    )
    nbrs, _ = index.neighbor_graph
    nbrs = torch.from_numpy(nbrs.astype(np.int64))
    return nbrs[self_match_dropped(nbrs)].view(x.shape[0], k)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--d", type=int, default=64)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--noise", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--recall-rows",
        type=int,
        default=0,
        help="measure recall on this many random rows (0: all rows, or 5000 with --no-exact)",
    )
    p.add_argument(
        "--no-exact",
        action="store_true",
        help="skip exact recomputation; seed graph from NN-descent, sampled recall",
    )
    p.add_argument("--no-pynndescent", action="store_true")
    p.add_argument(
        "--deltas", default="0.01", help="comma-separated extra stopping thresholds for ours ('' for none)"
    )
    p.add_argument("--output", help="append the result as JSON lines to this file")
    args = p.parse_args(argv)
    n, d, k = args.n, args.d, args.k
    x0 = clustered(n, d, seed=args.seed)
    x1 = perturb(x0, args.seed, args.noise)
    # Warm-up: JIT of both kernels on a small problem.
    small = x0[:3000]
    sk.knn_refine(small, sk.knn_graph(small, k), k)
    rows_out = []
    sampled = args.no_exact or args.recall_rows > 0
    if sampled:
        gen = torch.Generator().manual_seed(args.seed + 3)
        rows = torch.randperm(n, generator=gen)[: args.recall_rows or 5000]
    if args.no_exact:
        empty = sk.CSRGraph.from_edges([], [], shape=(n, n))
        t0, g0, m0 = measure(lambda: sk.knn_refine(x0, empty, k, seed=args.seed + 7))
        c0 = LAST_CPU["s"]
        t_e0 = time.perf_counter()
        exact0 = sampled_exact(x0, rows, k)
        t_e0 = time.perf_counter() - t_e0
        rows_out.append(
            {
                "method": "seed graph g0: knn_refine from an empty graph",
                "time_s": f"{t0:.2f}",
                "cpu_s": f"{c0:.2f}",
                "recall@k": fmt_recall(row_recalls(neighbour_lists(g0, rows), exact0), True),
                "peak_extra_MiB": f"{m0 / 2**20:.0f}",
                "note": f"vs exact kNN of x0 (sampled exact: {t_e0:.1f} s)",
            }
        )
    else:
        t0, g0, _ = measure(lambda: sk.knn_graph(x0, k, backend="numba"))
    t_ref, (g1, stats), m_ref = measure(lambda: sk.knn_refine(x1, g0, k, seed=args.seed, return_stats=True))
    c_ref = LAST_CPU["s"]
    exact_note = ""
    if sampled:
        t_e1 = time.perf_counter()
        exact = sampled_exact(x1, rows, k)
        t_e1 = time.perf_counter() - t_e1
        exact_note = f"; sampled exact: {t_e1:.1f} s"
        recall_note = f"on {rows.numel()} sampled rows (± standard error)"
    else:
        recall_note = "on all rows"
    t_exact = None
    if not args.no_exact:
        t_exact, g_exact, m_exact = measure(lambda: sk.knn_graph(x1, k, backend="numba"))
        c_exact = LAST_CPU["s"]
        if not sampled:
            exact = g_exact

    def recall(g_or_idx):
        """Recall@k of a graph or an (N, k) id tensor against ``exact``, as a table cell."""
        if not sampled:
            return f"{knn_recall(g_or_idx, exact):.4f}"
        got = neighbour_lists(g_or_idx, rows) if isinstance(g_or_idx, sk.CSRGraph) else g_or_idx[rows]
        return fmt_recall(row_recalls(got, exact), True)

    rows_out.append(
        {
            "method": "ours: sk.knn_refine (numba), seeded by g0",
            "time_s": f"{t_ref:.2f}",
            "cpu_s": f"{c_ref:.2f}",
            "recall@k": recall(g1),
            "peak_extra_MiB": f"{m_ref / 2**20:.0f}",
            "note": f"{stats['iterations']} rounds, updates {stats['updates']}{exact_note}",
        }
    )
    for delta in [float(v) for v in args.deltas.split(",") if v.strip()]:
        t_d, (g_d, st_d), m_d = measure(
            lambda: sk.knn_refine(x1, g0, k, seed=args.seed, delta=delta, return_stats=True)
        )
        rows_out.append(
            {
                "method": f"ours, delta = {delta}",
                "time_s": f"{t_d:.2f}",
                "cpu_s": f"{LAST_CPU['s']:.2f}",
                "recall@k": recall(g_d),
                "peak_extra_MiB": f"{m_d / 2**20:.0f}",
                "note": f"{st_d['iterations']} rounds",
            }
        )
    if t_exact is not None:
        rows_out.append(
            {
                "method": "exact recomputation: sk.knn_graph (numba)",
                "time_s": f"{t_exact:.2f}",
                "cpu_s": f"{c_exact:.2f}",
                "recall@k": "1.0000",
                "peak_extra_MiB": f"{m_exact / 2**20:.0f}",
                "note": f"refine is {t_exact / t_ref:.1f}x faster",
            }
        )
    if not args.no_pynndescent:
        w = x0[:5000]
        pynndescent_graph(w, k)
        pynndescent_graph(w, k, init=sk.knn_graph(w, k))
        t_p, i_p, m_p = measure(lambda: pynndescent_graph(x1, k, init=g0, seed=args.seed))
        c_p = LAST_CPU["s"]
        rows_out.append(
            {
                "method": "pynndescent NNDescent, init_graph = g0",
                "time_s": f"{t_p:.2f}",
                "cpu_s": f"{c_p:.2f}",
                "recall@k": recall(i_p),
                "peak_extra_MiB": f"{m_p / 2**20:.0f}",
                "note": f"{t_p / t_ref:.1f}x our time",
            }
        )
        t_q, i_q, m_q = measure(lambda: pynndescent_graph(x1, k, seed=args.seed))
        c_q = LAST_CPU["s"]
        rows_out.append(
            {
                "method": "pynndescent NNDescent, unseeded (defaults)",
                "time_s": f"{t_q:.2f}",
                "cpu_s": f"{c_q:.2f}",
                "recall@k": recall(i_q),
                "peak_extra_MiB": f"{m_q / 2**20:.0f}",
                "note": f"{t_q / t_ref:.1f}x our time",
            }
        )
    title = (
        f"kNN refresh, N = {n}, d = {d}, k = {k}, cosine, float32, rows moved by "
        f"{args.noise}·noise·|x|; recall {recall_note}"
    )
    cols = ["method", "time_s", "cpu_s", "recall@k", "peak_extra_MiB", "note"]
    info = environment()
    print(f"\n{title}\n{markdown_table(rows_out, cols, pad=True)}\n{json.dumps(info)}")
    if args.output:
        append_jsonl(args.output, {"task": "refine", "title": title, "rows": rows_out, "env": info})


if __name__ == "__main__":
    main()
