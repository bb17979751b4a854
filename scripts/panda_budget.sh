#!/usr/bin/env bash
# models/panda_push at a larger compute budget (issue 23 item 4: the pruner within 2 points of
# dense): the reuse schedule searched at SPARSITY (0.90: 10 computed steps of 100) as a pruner
# folder, evaluated on the seeds of the model card's table and paired with its dense row.
#
#   scripts/panda_budget.sh [SPARSITY] [DATA] [OUT] [RUNS]
#
# Resumable like panda_recipe.sh. Two evaluations side by side, one torch thread each.
set -euo pipefail
s=${1:-0.90}
data=${2:-/work/data/panda_push_400_lift06.zarr}
out=${3:-results/eval/panda_ft400}
runs=${4:-/tmp/panda_budget_runs}
model=models/panda_push
dir="$runs/reuse_$s"
export OMP_NUM_THREADS=1
mkdir -p "$out" "$runs"
if [ ! -f "$dir/pruner.json" ]; then
  search-schedule --policy "$model" --dataset "$data" --target-sparsity "$s" --trajectories 6 \
    --max-calls 8 --out "$out/schedule_$s.json"
  train-pruner --policy "$model" --dataset "$data" --target-sparsity "$s" --trajectories 30 \
    --max-calls 12 --held-out 6 --init-steps "$out/schedule_$s.json" --epochs 0 --out "$dir"
fi
evaluate() {  # evaluate NAME SEED_START EPISODES
  if [ -f "$out/$1/eval.json" ]; then return; fi
  eval-policy --model "$dir" --int8 --no-deviation --episodes "$3" --seed-start "$2" \
    --modes pruner --target-sparsity "$s" --out "$out/$1" > "$out/$1.log" 2>&1
}
evaluate "pruner_${s}_first" 100000 150 &
evaluate "pruner_${s}_second" 100150 150 &
wait
python -m sparse_policy_ros.sim.paired "$out/first/eval.json,$out/second/eval.json:dense" \
  "$out/pruner_${s}_first/eval.json,$out/pruner_${s}_second/eval.json:pruner" \
  "$out/first/eval.json,$out/second/eval.json:pruner" --json "$out/paired_budget_$s.json"
