"""Start-up cost: how long the first ``sk.propagate`` forward + backward takes in a fresh process.

    python bench/first_call.py                     # 7 fresh processes, warm Numba cache
    python bench/first_call.py --runs 9 --cold 2   # plus 2 processes with an empty cache
    python bench/first_call.py --backend torch     # the pure-torch reference instead of Numba
    python bench/first_call.py --preimport scipy.linalg   # as a program that uses scipy already

Every measured run is a new ``python`` process (``sys.executable``) that imports torch and
slifmr_kernels, builds a random graph (``--nodes``, ``--edges``, float32, ``--dim`` columns)
and times, in this order: ``import torch``, ``import slifmr_kernels``, the graph's
construction, the first forward, the first backward, and the steady state (median of 5 more
forward + backward pairs). The table reports the median over the runs of each step, and which
heavy modules the process had imported by its end (``torch._dynamo``, ``triton``, ``scipy``,
``numba``). Before the measured runs, one run whose numbers are discarded fills the Numba
cache (``slifmr_kernels.backends.numba_cache_dir()``), so the warm rows are what every script
start after the first one pays. ``--cold N`` adds N runs with ``NUMBA_CACHE_DIR`` pointed at a
new empty folder each: the cost of the very first run on a machine (the kernels compile).
``--preimport`` names modules the process imports before anything is timed, as a program that
already uses them would (Numba loads ``scipy.linalg`` at its first kernel, to find BLAS).

The numbers, before and after the change that keeps ``torch._dynamo`` out of the first call,
are in docs/PORTING.md ("Start-up cost").
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

#: The modules whose presence the child reports: each one costs 0.2 to 1.5 s to import.
WATCHED = ("torch._dynamo", "torch._inductor", "triton", "sympy", "scipy", "numba")

STEPS = (
    ("import_torch", "import torch"),
    ("import_sk", "import slifmr_kernels"),
    ("graph", "graph construction"),
    ("first_fwd", "first forward"),
    ("first_bwd", "first backward"),
    ("first_fwd_bwd", "first forward + backward"),
    ("steady_fwd_bwd", "steady forward + backward (median of 5)"),
)


def child(args) -> dict:
    """One fresh-process measurement; only the standard library and ``--preimport`` are
    imported before it."""
    import importlib

    for name in filter(None, args.preimport.split(",")):
        importlib.import_module(name)
    t0 = time.perf_counter()
    import torch

    t1 = time.perf_counter()
    import slifmr_kernels as sk

    t2 = time.perf_counter()
    gen = torch.Generator().manual_seed(0)
    src = torch.randint(0, args.nodes, (args.edges,), generator=gen)
    dst = torch.randint(0, args.nodes, (args.edges,), generator=gen)
    g = sk.CSRGraph.from_edges(src, dst, shape=(args.nodes, args.nodes))
    x = torch.randn(args.nodes, args.dim, generator=gen, requires_grad=True)
    t3 = time.perf_counter()
    y = sk.propagate(g, x, backend=args.backend)
    t4 = time.perf_counter()
    y.sum().backward()
    t5 = time.perf_counter()
    steady = []
    for _ in range(5):
        t = time.perf_counter()
        sk.propagate(g, x, backend=args.backend).sum().backward()
        steady.append(time.perf_counter() - t)
    return {
        "import_torch": t1 - t0,
        "import_sk": t2 - t1,
        "graph": t3 - t2,
        "first_fwd": t4 - t3,
        "first_bwd": t5 - t4,
        "first_fwd_bwd": t5 - t3,
        "steady_fwd_bwd": statistics.median(steady),
        "backend": sk.last_backend("propagate"),
        "package": os.path.dirname(sk.__file__),
        "modules": [m for m in WATCHED if m in sys.modules],
    }


def run_child(args, env=None) -> dict:
    cmd = [
        sys.executable,
        os.path.abspath(__file__),
        "--child",
        "--backend",
        args.backend,
        "--nodes",
        str(args.nodes),
        "--edges",
        str(args.edges),
        "--dim",
        str(args.dim),
        "--preimport",
        args.preimport,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the measured process failed (exit {out.returncode}):\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict]) -> dict:
    row = {key: statistics.median(r[key] for r in runs) for key, _ in STEPS}
    row["modules"] = sorted({m for r in runs for m in r["modules"]})
    row["backend"] = runs[0]["backend"]
    return row


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7, help="fresh processes with a warm cache")
    p.add_argument(
        "--cold", type=int, default=0, help="fresh processes with an empty Numba cache each (kernels compile)"
    )
    p.add_argument("--backend", default="auto")
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--edges", type=int, default=10000)
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--preimport", default="", help="comma-separated modules imported before the clock starts")
    p.add_argument("--json", help="also write the runs and medians to this file")
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return
    if args.runs < 1 or args.cold < 0:
        p.error("--runs must be >= 1 and --cold >= 0")

    run_child(args)  # fills the Numba cache; not counted
    warm = [run_child(args) for _ in range(args.runs)]
    cold = []
    for _ in range(args.cold):
        with tempfile.TemporaryDirectory(prefix="slifmr-numba-") as tmp:
            cold.append(run_child(args, env={**os.environ, "NUMBA_CACHE_DIR": tmp}))

    columns = [("warm cache", summarise(warm), len(warm))]
    if cold:
        columns.append(("empty cache", summarise(cold), len(cold)))
    print(
        f"package: {warm[0]['package']}; backend {args.backend!r} -> "
        f"{columns[0][1]['backend']}; graph {args.nodes} nodes, {args.edges} edges, "
        f"d = {args.dim}, float32; preimported: {args.preimport or 'nothing'}; "
        f"python {sys.version.split()[0]}; "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n"
    )
    print("| step | " + " | ".join(f"{name} (median of {n})" for name, _, n in columns) + " |")
    print("|---|" + "---|" * len(columns))
    for key, label in STEPS:
        print(f"| {label} | " + " | ".join(f"{row[key]:.3f} s" for _, row, _ in columns) + " |")
    print(
        "| modules imported by the end | "
        + " | ".join(", ".join(row["modules"]) or "none watched" for _, row, _ in columns)
        + " |"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "args": vars(args),
                    "warm": warm,
                    "cold": cold,
                    "median": {name: row for name, row, _ in columns},
                },
                f,
                indent=1,
            )


if __name__ == "__main__":
    main()
