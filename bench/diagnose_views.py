"""What each view contributes at ranking time, for a trained SLIF-MR run.

    python bench/diagnose_views.py runs/results/ml-1m-kg-mm/slifmr [--split valid|test]

Loads the run's last checkpoint (model + the item representations H that define the next
feedback graph), rebuilds the graphs of that epoch, and ranks with: the fused model; the
interaction view alone (Z^cf); the fused model with one auxiliary view removed (alpha_v = 0);
each auxiliary view alone (normalised Z^v). Prints Recall@20 / NDCG@20 per variant and the
learned view weights alpha, as a markdown table.
"""

import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from slifmr.checkpoint import load_checkpoint  # noqa: E402
from slifmr.config import Config  # noqa: E402
from slifmr.data.prepare import prepare_data  # noqa: E402
from slifmr.evaluate import rank_metrics  # noqa: E402
from slifmr.train import Trainer  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("--split", choices=["valid", "test"], default="valid")
    args = ap.parse_args()
    with open(os.path.join(args.run, "config.json")) as f:
        saved = json.load(f)
    cfg = Config(**saved["config"])
    ds = prepare_data(cfg, saved["data"])
    tr = Trainer(cfg.updated(progress=False), ds, os.path.join(args.run, "diagnose"), log=lambda s: None)
    st = load_checkpoint(os.path.join(args.run, "last.pt"))
    tr._load_state(st)
    graphs, _ = tr.selfloop.graphs()
    model = tr.model.eval()
    with torch.no_grad():
        out = model(graphs)
    train = ds.interaction_matrix("train")
    if args.split == "valid":
        truth, exclude = ds.interaction_matrix("valid"), train
    else:
        truth, exclude = ds.interaction_matrix("test"), (train + ds.interaction_matrix("valid")).tocsr()

    def score(u, i):
        m = rank_metrics(u, i, truth, exclude, [20])
        return m["recall@20"], m["ndcg@20"]

    rows = [("fused (the model)", *score(out.user, out.item))]
    zu_cf, zi_cf = out.cf
    rows.append(("interaction view alone (Z^cf)", *score(zu_cf, zi_cf)))
    alpha = model.alpha.detach()
    names = model.view_names
    for k, name in enumerate(names):
        zu, zi = zu_cf.clone(), zi_cf.clone()
        for j, other in enumerate(names):
            if j != k:
                vu, vi = out.views[other]
                zu = zu + alpha[j] * F.normalize(vu, dim=1)
                zi = zi + alpha[j] * F.normalize(vi, dim=1)
        rows.append((f"fused without {name}", *score(zu, zi)))
    for name in names:
        vu, vi = out.views[name]
        rows.append((f"{name} view alone", *score(F.normalize(vu, dim=1), F.normalize(vi, dim=1))))
    print(
        f"run {args.run}, epoch {tr.epoch}, {args.split} split; learned alpha: "
        + ", ".join(f"{n} {float(a):.3f}" for n, a in zip(names, alpha))
    )
    print("| ranking with | Recall@20 | NDCG@20 |")
    print("|---|---|---|")
    for name, r, n in rows:
        print(f"| {name} | {r:.4f} | {n:.4f} |")


if __name__ == "__main__":
    main()
