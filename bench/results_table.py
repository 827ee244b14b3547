"""Print the markdown tables of docs/RESULTS.md from the runs of bench/run_results.sh.

    python bench/results_table.py runs/results [dataset ...]

Per dataset and model family (LightGCN, full SLIF-MR) the run with the better best-validation
Recall@20 is the selected one; the ratio column is test Recall@20 over the selected LightGCN's.
"""

import json
import os
import sys

FAMILIES = {"lightgcn": ["lightgcn", "lightgcn-lr0.001"], "slifmr": ["slifmr", "slifmr-lr0.005"]}
ABLATIONS = [
    "slifmr-no-feedback",
    "slifmr-no-kg",
    "slifmr-no-modalities",
    "slifmr-no-image",
    "slifmr-no-consistency",
]
LABEL = {
    "lightgcn": "LightGCN",
    "slifmr": "SLIF-MR (full)",
    "slifmr-no-feedback": "SLIF-MR, no feedback (static graphs)",
    "slifmr-no-kg": "SLIF-MR, no KG view",
    "slifmr-no-modalities": "SLIF-MR, no modality views",
    "slifmr-no-image": "SLIF-MR, no image view (KG + text)",
    "slifmr-no-consistency": "SLIF-MR, no consistency loss",
}


def load(root, data, name):
    d = os.path.join(root, data, name)
    if not os.path.isfile(os.path.join(d, "metrics.json")):
        return None
    with open(os.path.join(d, "metrics.json")) as f:
        m = json.load(f)
    with open(os.path.join(d, "config.json")) as f:
        m["lr"] = json.load(f)["config"]["lr"]
    with open(os.path.join(d, "metrics.jsonl")) as f:
        m["best_valid"] = max(json.loads(x).get("valid_recall@20", -1.0) for x in f)
    return m


def row(label, m, base):
    ratio = f"{m['recall@20'] / base:.3f}x" if base else "-"
    share = (
        f"{m['rebuild_seconds_per_epoch']:.2f} ({100 * m['rebuild_share']:.1f} %)"
        if m.get("feedback") and m.get("model") != "lightgcn"
        else "-"
    )
    return (
        f"| {label} | {m['lr']:g} | {m['best_valid']:.4f} | {m['recall@20']:.4f} | {m['ndcg@20']:.4f} | "
        f"{m['recall@10']:.4f} | {m['ndcg@10']:.4f} | {ratio} | {m['best_epoch']} / {m['epochs_run']} | "
        f"{m['seconds_per_epoch']:.1f} | {share} |"
    )


def table(root: str, data: str) -> str:
    selected, unselected = {}, []
    for fam, names in FAMILIES.items():
        runs = [(n, load(root, data, n)) for n in names]
        runs = [(n, m) for n, m in runs if m is not None]
        if not runs:
            continue
        runs.sort(key=lambda nm: -nm[1]["best_valid"])
        selected[fam] = runs[0][1]
        unselected += [(fam, m) for _, m in runs[1:]]
    if not selected:
        return f"(no runs for {data} under {root})\n"
    base = selected["lightgcn"]["recall@20"] if "lightgcn" in selected else None
    out = [
        f"### {data}\n",
        "| model | lr | best valid R@20 | test Recall@20 | NDCG@20 | Recall@10 | NDCG@10 | vs LightGCN "
        "(R@20) | best / run epochs | s/epoch | feedback rebuild s/epoch (share) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for fam in ("lightgcn", "slifmr"):
        if fam in selected:
            out.append(row(LABEL[fam], selected[fam], base))
    for name in ABLATIONS:
        m = load(root, data, name)
        if m is not None:
            out.append(row(LABEL[name], m, base))
    for fam, m in unselected:
        out.append(row(f"{LABEL[fam]}, not selected", m, base))
    return "\n".join(out) + "\n"


def main(argv):
    root = argv[1] if len(argv) > 1 else "runs/results"
    datasets = argv[2:] or sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    print("\n".join(table(root, d) for d in datasets))


if __name__ == "__main__":
    main(sys.argv)
