#!/usr/bin/env bash
# Seconds per epoch on one dataset (default ml-1m-kg-mm) with the CPU to ourselves: a short run
# of LightGCN and of SLIF-MR (full, feedback rebuilt every epoch) under the exclusive CPU lock.
# Prints, per model: steady seconds per epoch (epochs after the first, which pays the kernels'
# JIT compilation), of which training steps, feedback rebuild (kNN over the item
# representations + insertion into A, A_m, KG) and its share of the epoch.
#
#   bench/time_epochs.sh [dataset] [epochs]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-ml-1m-kg-mm}
EPOCHS=${2:-4}
OUT=${OUT:-runs/timing}
LOCK=${SLIFMR_LOCK:-/tmp/slifmr-cpu.lock}
for model in lightgcn slifmr; do
  dir="$OUT/$DATA/$model"
  rm -rf "$dir"
  flock -x "$LOCK" python -m slifmr train --data "$DATA" --output "$dir" --quiet \
    --config "configs/$model.yaml" --epochs "$EPOCHS" --set patience=0 > /dev/null 2>&1
done
python - "$OUT/$DATA" <<'PY'
import json, os, sys
root = sys.argv[1]
print(f"| model | epochs timed | s/epoch | training steps s | feedback rebuild s | rebuild share | first epoch s (JIT) |")
print("|---|---|---|---|---|---|---|")
for model in ("lightgcn", "slifmr"):
    m = json.load(open(os.path.join(root, model, "metrics.json")))
    print(f"| {model} | {m['epochs_run'] - 1} | {m['seconds_per_epoch']:.2f} | {m['train_seconds_per_epoch']:.2f} "
          f"| {m['rebuild_seconds_per_epoch']:.3f} | {100 * m['rebuild_share']:.1f} % | {m['first_epoch_seconds']:.1f} |")
PY
