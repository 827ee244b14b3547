"""Node order for locality: the training step with the generated ids and with relabelled ones.

docs/SCALE.md, "Found and left", item 9. Propagation gathers one 256-byte embedding row per
edge; the generator scatters graph neighbours over the id space. ``slifmr.data.reorder``
relabels users and items so that neighbours get nearby ids (``Config.reorder``; its module
docstring describes the orders, none of which uses the generator's hidden cluster labels).
This script times the step with each order and with the generated ids.

Step timing: one ``bench/scale.py`` run per order (``scale.py --reorder``), each in its own
process so that every run starts from the same memory, with the same catalog, batch and
``--max-steps``; then one table::

    python bench/reorder.py --items 1000000 --batch-size 524288 --max-steps 3 \
        --orders none,features,graph --rss-limit-gib 17

The order itself runs after generation and is reported as ``reorder s``; it is not part of
the epoch. ``step s`` is the mean of the steps after the first (the first builds the
transposes and Adam's state), ``first s`` the first one.

``--kernel`` times ``sk.propagate`` alone instead, forward and backward, on the interaction
graph [[0, R], [R^T, 0]] (sym-normalised, d = 64) of the same catalog in each order, in one
process, with the share of training edges whose item lies within 2048 positions of the
median item of its user (``near``, ``slifmr.data.reorder.locality_share``)::

    python bench/reorder.py --items 1000000 --kernel --orders none,features,graph
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import scipy.sparse as sp
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
if os.path.dirname(HERE) not in sys.path:  # run as a script from a checkout
    sys.path.insert(0, os.path.dirname(HERE))
if HERE not in sys.path:
    sys.path.insert(0, HERE)

from slifmr.data.reorder import REORDER_METHODS, locality_share, reorder_dataset  # noqa: E402

__all__ = ["main"]


def run_one(order: str, args) -> dict:
    cmd = [
        sys.executable,
        os.path.join(HERE, "scale.py"),
        "--items",
        str(args.items),
        "--batch-size",
        str(args.batch_size),
        "--max-steps",
        str(args.max_steps),
        "--rss-limit-gib",
        str(args.rss_limit_gib),
        "--reorder",
        order,
        "--eval-users",
        str(args.eval_users),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    sys.stderr.write(proc.stdout.rsplit("\n", 2)[0] + "\n" + proc.stderr[-2000:])
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SystemExit(f"{order}: no JSON from scale.py (exit {proc.returncode})")
    return json.loads(lines[-1])


def summary(order: str, r: dict) -> dict:
    if "failed" in r:
        return {"order": order, "failed": r["failed"], "during": r.get("during")}
    e = r["epochs"][-1]
    steps = e["step_seconds"]
    later = steps[1:] or steps
    return {
        "order": order,
        "reorder_s": r.get("reorder_seconds", 0.0),
        "first_s": steps[0],
        "step_s": round(sum(later) / len(later), 3),
        "steps": steps,
        "refresh_s": e["refresh"],
        "h_forward_s": e["h_forward"],
        "eval_s": e["eval"],
        "epoch_s": e["epoch_seconds"],
        "recall@20": e["recall@20"],
        "peak_rss_gib": r["peak_rss_gib"],
    }


def kernel_probe(args) -> list:
    """``--kernel``: sk.propagate forward + backward on the sym-normalised interaction graph."""
    from scale import make_catalog

    import slifmr_kernels as sk
    from slifmr.graphs import sym_normalize, to_csr_graph

    base = make_catalog(args.items).with_validation(0.1, 0)
    rows = []
    for order in [o for o in args.orders.split(",") if o]:
        t0 = time.perf_counter()
        ds = base if order == "none" else reorder_dataset(base, order)
        t_order = time.perf_counter() - t0
        R = ds.interaction_matrix("train")
        g = to_csr_graph(
            sym_normalize(sp.bmat([[None, R], [R.T, None]], format="csr", dtype=np.float32)), symmetric=True
        )
        del R
        x = torch.randn(g.shape[1], 64, generator=torch.Generator().manual_seed(0), requires_grad=True)
        times = []
        for _ in range(args.repeats + 1):  # the first call is not counted (allocation, JIT)
            t0 = time.perf_counter()
            y = sk.propagate(g, x)
            t1 = time.perf_counter()
            y.backward(torch.ones_like(y))
            times.append((t1 - t0, time.perf_counter() - t1))
            x.grad = None
            del y
        fwd = sum(t[0] for t in times[1:]) / args.repeats
        bwd = sum(t[1] for t in times[1:]) / args.repeats
        rows.append(
            {
                "order": order,
                "reorder_s": round(t_order, 2),
                "near": round(locality_share(ds), 3),
                "forward_s": round(fwd, 3),
                "backward_s": round(bwd, 3),
            }
        )
        print(
            f"{order:<10} reorder {t_order:6.1f} s  near {rows[-1]['near']:.3f}  forward "
            f"{fwd:.3f} s  backward {bwd:.3f} s  ({args.repeats} calls each)",
            flush=True,
        )
        del g, x, ds
    print(json.dumps({"items": args.items, "kernel": True, "rows": rows}, sort_keys=True))
    return rows


def main(argv=None) -> list:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--items", type=int, default=300000)
    p.add_argument("--batch-size", type=int, default=2**17)
    p.add_argument("--max-steps", type=int, default=3)
    p.add_argument(
        "--orders",
        default="none,features,graph",
        help="comma-separated: none and the methods " + ", ".join(REORDER_METHODS),
    )
    p.add_argument("--eval-users", type=int, default=10000)
    p.add_argument("--rss-limit-gib", type=float, default=17.0)
    p.add_argument(
        "--kernel",
        action="store_true",
        help="time sk.propagate alone on the interaction graph (see the docstring)",
    )
    p.add_argument("--repeats", type=int, default=3, help="--kernel: timed calls per order")
    args = p.parse_args(argv)
    if args.kernel:
        return kernel_probe(args)
    rows = [summary(o, run_one(o, args)) for o in args.orders.split(",") if o]
    base = next((r for r in rows if r["order"] == "none" and "step_s" in r), None)
    print(
        f"{'order':<10} {'reorder s':>9} {'first s':>8} {'step s':>8} {'speed-up':>8} "
        f"{'refresh s':>9} {'epoch s':>9} {'recall@20':>9} {'peak GiB':>8}"
    )
    for r in rows:
        if "failed" in r:
            print(f"{r['order']:<10} failed: {r['failed']} during {r['during']}")
            continue
        sp = f"{base['step_s'] / r['step_s']:.2f}x" if base else "-"
        print(
            f"{r['order']:<10} {r['reorder_s']:9.1f} {r['first_s']:8.2f} {r['step_s']:8.2f} "
            f"{sp:>8} {r['refresh_s']:9.1f} {r['epoch_s']:9.1f} {r['recall@20']:9.4f} "
            f"{r['peak_rss_gib']:8.2f}"
        )
    print(
        json.dumps(
            {"items": args.items, "batch_size": args.batch_size, "max_steps": args.max_steps, "rows": rows},
            sort_keys=True,
        )
    )
    return rows


if __name__ == "__main__":
    main()
