#!/usr/bin/env bash
# models/panda_push from scratch (issue 23 item 4): lifted-approach demonstrations on the Franka
# Panda, models/default's width-256 recipe (config/train_wide_panda.yaml, bf16 on the CPU), the
# searched 6-step reuse schedule as the pruner, then dense and pruner on the same fresh seeds.
#
#   scripts/panda_recipe.sh [DATA] [RUN] [SEED_START] [EPISODES] [OUT]
#
# Each stage is skipped when its output exists (the store, RUN/model.safetensors, the pruner,
# OUT/<half>/eval.json), so an interrupted run resumes; training resumes from its checkpoint.
# The evaluation runs two processes side by side (seeds split in halves, one torch thread each).
set -euo pipefail
data=${1:-/work/data/panda_push_200_lift06.zarr}
run=${2:-/work/runs/panda_wide_lift06}
seed_start=${3:-100000}
episodes=${4:-300}
out=${5:-results/eval/panda_wide_lift06}
export OMP_NUM_THREADS=1
if [ ! -e "$data" ]; then
  record-demos --env panda_push --episodes 200 --out "$data" --seed-start 0 --lift 0.06
fi
if [ ! -f "$run/model.safetensors" ]; then
  resume=()
  if [ -d "$run/checkpoints/latest" ]; then resume=(--resume); fi
  train-policy --dataset "$data" --config config/train_wide_panda.yaml --out "$run" \
    --device cpu --precision bf16 "${resume[@]}"
fi
mkdir -p "$out"
if [ ! -f "$run/pruner.safetensors" ]; then
  search-schedule --policy "$run" --dataset "$data" --target-sparsity 0.94 --trajectories 6 \
    --max-calls 8 --out "$out/schedule_094.json"
  train-pruner --policy "$run" --dataset "$data" --target-sparsity 0.94 --trajectories 30 \
    --max-calls 12 --held-out 6 --init-steps "$out/schedule_094.json" --epochs 0 --out "$run"
fi
half=$(( episodes / 2 ))
evaluate() {  # evaluate NAME SEED_START EPISODES
  if [ -f "$out/$1/eval.json" ]; then return; fi
  eval-policy --model "$run" --int8 --no-deviation --episodes "$3" --seed-start "$2" \
    --modes dense,pruner --target-sparsity 0.94 --out "$out/$1" > "$out/$1.log" 2>&1
}
evaluate first "$seed_start" "$half" &
evaluate second $(( seed_start + half )) $(( episodes - half )) &
wait
both="$out/first/eval.json,$out/second/eval.json"
python -m sparse_policy_ros.sim.paired "$both:dense" "$both:pruner" --json "$out/paired.json"
