"""Print the markdown tables of docs/RESULTS.md from the runs of bench/run_results.sh.

    python bench/results_table.py runs/results [dataset ...]
"""
import json
import os
import sys

ORDER = ["lightgcn", "slifmr", "slifmr-no-feedback", "slifmr-no-kg", "slifmr-no-modalities",
         "slifmr-no-image", "slifmr-no-consistency", "lightgcn-lr0.001", "slifmr-lr0.005"]
LABEL = {"lightgcn": "LightGCN", "slifmr": "SLIF-MR (full)",
         "slifmr-no-feedback": "SLIF-MR, no feedback (static graphs)",
         "slifmr-no-kg": "SLIF-MR, no KG view", "slifmr-no-modalities": "SLIF-MR, no modality views",
         "slifmr-no-consistency": "SLIF-MR, no consistency loss",
         "slifmr-no-image": "SLIF-MR, no image view (KG + text)",
         "lightgcn-lr0.001": "LightGCN, lr 0.001 (not selected)",
         "slifmr-lr0.005": "SLIF-MR, lr 0.005 (not selected)"}


def table(root: str, data: str) -> str:
    rows = []
    base = None
    for name in ORDER:
        path = os.path.join(root, data, name, "metrics.json")
        if not os.path.isfile(path):
            continue
        with open(path) as f:
            m = json.load(f)
        if name == "lightgcn":
            base = m["recall@20"]
        rows.append((name, m))
    if not rows:
        return f"(no runs for {data} under {root})\n"
    out = [f"### {data}\n",
           "| model | Recall@20 | NDCG@20 | Recall@10 | NDCG@10 | vs LightGCN (R@20) | best / run epochs "
           "| s/epoch | feedback rebuild s/epoch (share) |",
           "|---|---|---|---|---|---|---|---|---|"]
    for name, m in rows:
        ratio = f"{m['recall@20'] / base:.3f}x" if base else "-"
        share = (f"{m['rebuild_seconds_per_epoch']:.2f} ({100 * m['rebuild_share']:.1f} %)"
                 if m.get("feedback") and name != "lightgcn" else "-")
        out.append(f"| {LABEL.get(name, name)} | {m['recall@20']:.4f} | {m['ndcg@20']:.4f} | "
                   f"{m['recall@10']:.4f} | {m['ndcg@10']:.4f} | {ratio} | {m['best_epoch']} / "
                   f"{m['epochs_run']} | {m['seconds_per_epoch']:.1f} | {share} |")
    return "\n".join(out) + "\n"


def main(argv):
    root = argv[1] if len(argv) > 1 else "runs/results"
    datasets = argv[2:] or sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    print("\n".join(table(root, d) for d in datasets))


if __name__ == "__main__":
    main(sys.argv)
