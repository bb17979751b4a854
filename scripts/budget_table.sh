#!/usr/bin/env bash
# Equal-budget closed-loop table (issue 20): dense, searched DDIM-k, strided DDIM-k, FORA and the
# searched reuse schedule (the pruner folder) at k = 6, 4, 3, 2 network evaluations per call,
# every row on the same fresh seeds, int8 branch matmuls, one torch thread per process (two
# evaluations run side by side on a 2-core machine).
#
#   scripts/budget_table.sh DATASET [SEED_START] [EPISODES] [OUT]
#
# DATASET: the recording models/default was trained on (MODEL_CARD.md), used by the reuse
# schedule search of the budgets the model folder has no pruner for. Needs models/default's
# ddim_timesteps.json (search-schedule --kind ddim --save) for every budget. Resumable: a row
# whose OUT/NAME/eval.json exists is kept; delete that folder (and RUNS/reuse_S for a reuse
# schedule) to rerun it.
set -euo pipefail
dataset=${1:?usage: scripts/budget_table.sh DATASET [SEED_START] [EPISODES] [OUT]}
seed_start=${2:-102000}
episodes=${3:-300}
out=${4:-results/eval/budget_table}
runs=${RUNS:-/tmp/budget_table_runs}
model=models/default
mkdir -p "$out" "$runs"
export OMP_NUM_THREADS=1
evaluate() {  # evaluate NAME MODEL MODES SPARSITY (kept if OUT/NAME/eval.json exists)
  if [ -f "$out/$1/eval.json" ]; then return; fi
  eval-policy --model "$2" --int8 --no-deviation --episodes "$episodes" \
    --seed-start "$seed_start" --modes "$3" --target-sparsity "$4" --out "$out/$1" \
    > "$out/$1.log" 2>&1
}
# The searched reuse schedule of each budget as a pruner folder (a static prior, no
# distillation), as MODEL_CARD.md builds models/default's at 0.94.
reuse_folder() {  # reuse_folder SPARSITY -> folder
  local s=$1 dir="$runs/reuse_$1"
  if [ "$s" = 0.94 ]; then echo "$model"; return; fi
  if [ ! -f "$dir/pruner.json" ]; then
    search-schedule --policy "$model" --dataset "$dataset" --target-sparsity "$s" \
      --trajectories 6 --max-calls 8 --out "$out/reuse_search_$s.json" > "$runs/search_$s.log" 2>&1
    train-pruner --policy "$model" --dataset "$dataset" --target-sparsity "$s" \
      --trajectories 6 --max-calls 8 --held-out 2 --init-steps "$out/reuse_search_$s.json" \
      --epochs 0 --out "$dir" > "$runs/pruner_$s.log" 2>&1
  fi
  echo "$dir"
}
(
  evaluate dense "$model" dense 0.94
  for s in 0.94 0.96; do evaluate "reuse_$s" "$(reuse_folder $s)" pruner "$s"; done
) &
(
  for s in 0.94 0.96 0.97 0.98; do evaluate "ddim_$s" "$model" ddim_searched,ddim,fora "$s"; done
  for s in 0.97 0.98; do evaluate "reuse_$s" "$(reuse_folder $s)" pruner "$s"; done
) &
wait
args=(--dense "$out/dense/eval.json:dense")
for pair in 6:0.94 4:0.96 3:0.97 2:0.98; do
  k=${pair%%:*}; s=${pair##*:}
  args+=(--budget "$k" "$out/ddim_$s/eval.json:ddim_searched" "$out/ddim_$s/eval.json:ddim"
         "$out/ddim_$s/eval.json:fora" "$out/reuse_$s/eval.json:pruner")
done
python -m sparse_policy_ros.sim.budget_table "${args[@]}" --out "$out"
