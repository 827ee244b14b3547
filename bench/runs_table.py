"""One markdown row per training run under a directory: what differs from the defaults, the best
validation Recall@20 (what choices are made on), and the test metrics of that epoch.

    python bench/runs_table.py runs/explore [--sort valid]
    python bench/runs_table.py runs/explore --seeds     # runs NAME, NAME_s<seed>: mean ± std

A run is a directory holding ``config.json`` and ``metrics.jsonl`` (``slifmr train --output``);
runs still training show their best validation so far and no test metrics.
"""

import argparse
import json
import os
import re
import statistics
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from slifmr.config import Config  # noqa: E402

#: keys that never explain a result (runtime, bookkeeping)
IGNORED = {"model", "progress", "num_threads", "device", "backend", "epochs", "synthetic"}
#: keys only SLIF-MR reads: not shown for the other models
SLIFMR_ONLY = {
    "view_weight",
    "learn_view_weight",
    "modality_input",
    "kg_layers",
    "use_kg",
    "share_item_entity",
    "sc_weight",
    "sc_temperature",
    "sc_max_batch",
    "feedback_k",
    "feedback_beta",
    "feedback_gamma",
    "feedback_in",
    "feedback_init",
    "feedback_refine",
}
#: keys added after some runs were made: the behaviour those runs had without them
BEFORE_KEY = {"edge_dropout": 0.0}


def settings(cfg: dict) -> str:
    """The keys of a run's configuration that differ from the defaults of its model (``Config(
    model=...).resolved()``), as ``k=v``."""
    default = Config(model=cfg["model"]).resolved().to_dict()
    cfg = {**BEFORE_KEY, **cfg}
    skip = IGNORED | (SLIFMR_ONLY if cfg["model"] != "slifmr" else set())
    diff = [
        f"{k}={json.dumps(v).replace(' ', '')}"
        for k, v in sorted(cfg.items())
        if k not in skip and default.get(k) != v
    ]
    return " ".join(diff) or "(defaults)"


def load(run: str):
    """(name, settings, record) of one run directory, or None when it is not one."""
    cpath, lpath = os.path.join(run, "config.json"), os.path.join(run, "metrics.jsonl")
    if not (os.path.isfile(cpath) and os.path.isfile(lpath)):
        return None
    with open(cpath) as f:
        cfg = json.load(f)["config"]
    with open(lpath) as f:
        hist = [json.loads(x) for x in f if x.strip()]
    evals = [h for h in hist if h.get("valid_recall@20") is not None]
    best = max(evals, key=lambda h: h["valid_recall@20"]) if evals else {}
    rec = {
        "valid": best.get("valid_recall@20"),
        "best_epoch": best.get("epoch"),
        "epochs": len(hist),
        "s_epoch": sum(h["epoch_s"] for h in hist) / max(len(hist), 1),
        "model": cfg["model"],
    }
    mpath = os.path.join(run, "metrics.json")
    if os.path.isfile(mpath):
        with open(mpath) as f:
            rec.update(json.load(f))
    return os.path.basename(run), settings(cfg), rec


def seed_table(rows) -> None:
    """One row per group of finished runs ``NAME`` (the configured seed) and ``NAME_s<seed>``:
    mean ± sample std over the seeds of test Recall@20 / NDCG@20 and best validation."""
    groups = {}
    for name, _diff, r in rows:
        if "recall@20" in r:
            groups.setdefault(re.sub(r"_s\d+$", "", name), []).append(r)
    print("| runs | model | seeds | best valid R@20 | test R@20 | test NDCG@20 | best epochs | s/epoch |")
    print("|---|---|---|---|---|---|---|---|")

    def ms(vals, fmt=".4f"):
        sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
        return f"{statistics.mean(vals):{fmt}} ± {sd:{fmt}}"

    for base, rs in groups.items():
        if len(rs) < 2:
            continue
        print(
            f"| {base} | {rs[0]['model']} | {len(rs)} | {ms([r['valid'] for r in rs])} | "
            f"{ms([r['recall@20'] for r in rs])} | {ms([r['ndcg@20'] for r in rs])} | "
            f"{', '.join(str(r['best_epoch']) for r in rs)} | "
            f"{statistics.mean(r['s_epoch'] for r in rs):.1f} |"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("root")
    ap.add_argument("--sort", choices=["name", "valid"], default="name")
    ap.add_argument("--seeds", action="store_true", help="mean ± std over seeds instead")
    args = ap.parse_args(argv)
    rows = [r for r in (load(os.path.join(args.root, d)) for d in sorted(os.listdir(args.root))) if r]
    if args.seeds:
        seed_table(rows)
        return
    if args.sort == "valid":
        rows.sort(key=lambda r: -(r[2]["valid"] or 0.0))
    print(
        "| run | model | settings (vs defaults) | best valid R@20 | test R@20 | test NDCG@20 | "
        "best / run epochs | stopped | s/epoch |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, diff, r in rows:
        test = lambda k: f"{r[k]:.4f}" if k in r else "-"  # noqa: E731
        valid = f"{r['valid']:.4f}" if r["valid"] is not None else "-"
        print(
            f"| {name} | {r['model']} | {diff} | {valid} | {test('recall@20')} | {test('ndcg@20')} | "
            f"{r['best_epoch']} / {r['epochs']} | {r.get('stopped', 'running')} | {r['s_epoch']:.1f} |"
        )


if __name__ == "__main__":
    main()
