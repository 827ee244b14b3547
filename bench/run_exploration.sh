#!/usr/bin/env bash
# The exploration runs of docs/RESULTS.md ("Converged training: exploration"), one training run
# each, until validation Recall@20 has not improved for 10 evaluations (the defaults), batch
# 8192. Finished runs (metrics.json present) are skipped, so the sweep resumes.
#
#   bench/run_exploration.sh                 # every run below, in order
#   bench/run_exploration.sh lfm_ bx_        # only the runs whose name starts with these
#   python bench/runs_table.py runs/explore  # the table
#
# Datasets are looked up under $SLIFMR_DATA (default ../shared/data).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/explore}
prefixes=("$@")

run() {  # run NAME DATASET ARGS...
  local name=$1 data=$2
  shift 2
  if [[ ${#prefixes[@]} -gt 0 ]]; then
    local hit=0 p
    for p in "${prefixes[@]}"; do [[ $name == "$p"* ]] && hit=1; done
    [[ $hit == 1 ]] || return 0
  fi
  if [[ -f "$OUT/$name/metrics.json" ]]; then
    echo "== $name: done already"
    return
  fi
  echo "== $name: slifmr train --data $data $*"
  rm -rf "${OUT:?}/$name"
  python -m slifmr train --data "$data" --output "$OUT/$name" --quiet --set batch_size=8192 "$@" \
    > "$OUT/$name.log" 2>&1
}
mkdir -p "$OUT"

# SLIF-MR with the defaults the earlier runs had (view weights learned from 0.2, no edge
# dropout); the current defaults are BEST further down.
EARLIER=(--model slifmr --set learn_view_weight=true --set view_weight=0.2 --set edge_dropout=0 --set neg_candidates=1)

# ml-1m-kg-mm: LightGCN (both losses), SLIF-MR variants, the peers with their reference
# settings at this protocol's batch size and rate
M=ml-1m-kg-mm
run lgcn_bpr "$M" --model lightgcn --set lr=0.005
run lgcn_sm_t01 "$M" --model lightgcn --set loss=softmax --set lr=0.005
run sm_full "$M" "${EARLIER[@]}" --set loss=softmax --set lr=0.005
run sm_ids "$M" "${EARLIER[@]}" --set loss=softmax --set lr=0.005 --set modality_input=ids
run sm_ids_g03 "$M" "${EARLIER[@]}" --set loss=softmax --set lr=0.005 --set modality_input=ids --set feedback_gamma=0.3
run bpr_ids "$M" "${EARLIER[@]}" --set lr=0.001 --set modality_input=ids
run sm_ids_nosc "$M" "${EARLIER[@]}" --set loss=softmax --set lr=0.005 --set modality_input=ids --set sc_weight=0
run sm_llm "$M" "${EARLIER[@]}" --set loss=softmax --set lr=0.005 --set modalities=[image,text_llm]
run freedom_b8192 "$M" --config configs/freedom.yaml --set lr=0.005 --set batch_size=8192
run lattice_b8192 "$M" --config configs/lattice.yaml --set lr=0.005 --set batch_size=8192

# lastfm-kg and book-crossing-kg (KG only)
for D in lfm:lastfm-kg bx:book-crossing-kg; do
  p=${D%%:*}; data=${D#*:}
  run "${p}_lgcn_bpr" "$data" --model lightgcn --set lr=0.005
  run "${p}_lgcn_sm" "$data" --model lightgcn --set lr=0.005 --set loss=softmax
  run "${p}_sm_full" "$data" "${EARLIER[@]}" --set lr=0.005 --set loss=softmax
  run "${p}_bpr_full" "$data" "${EARLIER[@]}" --set lr=0.005
  run "${p}_bpr_nosc" "$data" "${EARLIER[@]}" --set lr=0.005 --set sc_weight=0
done
run lfm_lgcn_bpr_lr001 lastfm-kg --model lightgcn --set lr=0.001
run lfm_lgcn_bpr_reg1e3 lastfm-kg --model lightgcn --set lr=0.005 --set reg_weight=0.001
run lfm_lgcn_bpr_reg1e2 lastfm-kg --model lightgcn --set lr=0.005 --set reg_weight=0.01
run lfm_lgcn_bpr_d32 lastfm-kg --model lightgcn --set lr=0.005 --set embed_dim=32
run lfm_bpr_nofb lastfm-kg "${EARLIER[@]}" --set lr=0.005 --set feedback=false
run lfm_bpr_nokg lastfm-kg "${EARLIER[@]}" --set lr=0.005 --set use_kg=false
for s in 2026 2027; do
  run "lfm_lgcn_bpr_s$s" lastfm-kg --model lightgcn --set lr=0.005 --set seed=$s
  run "lfm_bpr_full_s$s" lastfm-kg "${EARLIER[@]}" --set lr=0.005 --set seed=$s
  run "bx_lgcn_bpr_s$s" book-crossing-kg --model lightgcn --set lr=0.005 --set seed=$s
  run "bx_bpr_nosc_s$s" book-crossing-kg "${EARLIER[@]}" --set lr=0.005 --set sc_weight=0 --set seed=$s
done
for s in 2026 2027; do
  run "lgcn_sm_t01_s$s" "$M" --model lightgcn --set loss=softmax --set lr=0.005 --set seed=$s
  run "sm_ids_s$s" "$M" "${EARLIER[@]}" --set loss=softmax --set lr=0.005 --set modality_input=ids --set seed=$s
done
# A smaller cut of ml-1m-kg-mm (1,000 users, their interactions with the 1,400 items most
# popular among them: about 68k training pairs), the size of the datasets new users bring:
# the view weights, edge dropout and the components, chosen on its validation split.
SUB=runs/data/ml-1m-sub1k
[[ -f $SUB/train.txt ]] || python bench/subsample_kgat.py "${SLIFMR_DATA:-../shared/data}/ml-1m-kg-mm" "$SUB" \
  --users 1000 --items 1400 --seed 0
FIX=(--model slifmr --set learn_view_weight=false --set view_weight=0.2 --set edge_dropout=0 --set neg_candidates=1)
BEST=(--model slifmr --set learn_view_weight=false --set view_weight=0.05 --set edge_dropout=0.5 --set neg_candidates=1)
FREEDOM=(--config configs/freedom.yaml --set lr=0.005 --set batch_size=8192)
for s in 2025 2026 2027; do
  run "sub_lgcn_s$s" "$SUB" --model lightgcn --set seed=$s
  run "sub_best_s$s" "$SUB" "${BEST[@]}" --set seed=$s
  run "sub_freedom_s$s" "$SUB" "${FREEDOM[@]}" --set seed=$s
done
# LightGCN tuned on the cut's validation split (20 Optuna trials, configs/spaces/lightgcn.yaml)
[[ -f runs/tune/sub-lightgcn/best.yaml ]] || python -m slifmr tune --data "$SUB" --model lightgcn \
  --config configs/lightgcn.yaml --space configs/spaces/lightgcn.yaml --trials 20 \
  --output runs/tune/sub-lightgcn --set progress=false
for s in 2025 2026 2027; do
  run "sub_lgcn_tuned_s$s" "$SUB" --config runs/tune/sub-lightgcn/best.yaml --set seed=$s
done
run sub_slif_s2025 "$SUB" "${EARLIER[@]}" --set seed=2025
run sub_slif_nosc_s2025 "$SUB" "${EARLIER[@]}" --set seed=2025 --set sc_weight=0
run sub_slif_ids_s2025 "$SUB" "${EARLIER[@]}" --set seed=2025 --set modality_input=ids
run sub_slif_sm_s2025 "$SUB" "${EARLIER[@]}" --set seed=2025 --set loss=softmax
run sub_lgcn_sm_s2025 "$SUB" --model lightgcn --set seed=2025 --set loss=softmax
run sub_lgcn_ed05 "$SUB" --model lightgcn --set seed=2025 --set edge_dropout=0.5
run sub_freedom_nomod "$SUB" "${FREEDOM[@]}" --set seed=2025 --no-modalities
run sub_freedom_noprune "$SUB" "${FREEDOM[@]}" --set seed=2025 --set prune_ratio=0
run sub_slif_fixw "$SUB" "${FIX[@]}" --set seed=2025
run sub_slif_w005 "$SUB" "${FIX[@]}" --set seed=2025 --set view_weight=0.05
run sub_fix_w01 "$SUB" "${FIX[@]}" --set seed=2025 --set view_weight=0.1
run sub_fix_w05 "$SUB" "${FIX[@]}" --set seed=2025 --set view_weight=0.5
for v in nosc:sc_weight=0 ids:modality_input=ids nokg:use_kg=false nofb:feedback=false \
         both:modality_input=both ed05:edge_dropout=0.5 ed08:edge_dropout=0.8; do
  run "sub_fix_${v%%:*}" "$SUB" "${FIX[@]}" --set seed=2025 --set "${v#*:}"
done
run sub_fix_nomod "$SUB" "${FIX[@]}" --set seed=2025 --no-modalities
run sub_w002_ed05 "$SUB" "${FIX[@]}" --set seed=2025 --set view_weight=0.02 --set edge_dropout=0.5
run sub_w005_ed07 "$SUB" "${FIX[@]}" --set seed=2025 --set view_weight=0.05 --set edge_dropout=0.7
for v in ids:modality_input=ids nosc:sc_weight=0 nofb:feedback=false nokg:use_kg=false; do
  run "sub_w005_ed05_${v%%:*}" "$SUB" "${BEST[@]}" --set seed=2025 --set "${v#*:}"
done
run sub_w005_ed05_nomod "$SUB" "${BEST[@]}" --set seed=2025 --no-modalities
# the chosen settings (the defaults since) on the three datasets, three seeds each, and LightGCN
run bx_best_nosc_s2025 book-crossing-kg "${BEST[@]}" --set seed=2025 --set sc_weight=0
run sub_d_sc01 "$SUB" "${BEST[@]}" --set seed=2025 --set sc_weight=0.1
run sub_d_sc02 "$SUB" "${BEST[@]}" --set seed=2025 --set sc_weight=0.2
run sub_d_w01 "$SUB" "${BEST[@]}" --set seed=2025 --set view_weight=0.1
# modality views over the features plus the ID embeddings, and a lower rate, at the defaults
run sub_d_both "$SUB" "${BEST[@]}" --set seed=2025 --set modality_input=both
run ml1m_d_both ml-1m-kg-mm "${BEST[@]}" --set seed=2025 --set modality_input=both
run ml1m_d_lr002 ml-1m-kg-mm "${BEST[@]}" --set seed=2025 --set lr=0.002
for s in 2025 2026 2027; do
  for D in lfm:lastfm-kg bx:book-crossing-kg ml1m:ml-1m-kg-mm; do
    run "${D%%:*}_lgcn_s$s" "${D#*:}" --model lightgcn --set seed=$s
    run "${D%%:*}_best_s$s" "${D#*:}" "${BEST[@]}" --set seed=$s
  done
done

python bench/runs_table.py "$OUT"
