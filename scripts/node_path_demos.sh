#!/usr/bin/env bash
# Issue 21: does recording the demonstrations through the policy node's command path close the
# 6 points the node's loop loses against the grid executor (results/eval/node_executor)?
# record-demos --command-path node (the expert's targets planned by the node's control loop,
# each observation stored with the target due then), models/default fine-tuned on it, the
# searched reuse schedule at 0.94, then the node executor's chunked row on the same seeds,
# paired with models/default's rows.
#
#   scripts/node_path_demos.sh [DATA] [RUN] [OUT] [SEED_START] [EPISODES]
set -euo pipefail
data=${1:-/work/data/arm_push_200_lift06_node.zarr}
run=${2:-/work/runs/node_path_ft}
out=${3:-results/eval/node_path}
seed_start=${4:-105000}
episodes=${5:-300}
export OMP_NUM_THREADS=1
mkdir -p "$out"
[ -d "$data" ] || record-demos --episodes 200 --out "$data" --seed-start 0 --lift 0.06 \
  --command-path node > "$out/record.log" 2>&1
# The first label of each episode is the reset pose (the target due at step 0), 7.4% of the
# range below the default's action.min in one joint: kept stats, within 10%.
[ -f "$run/model.safetensors" ] || train-policy --dataset "$data" --config config/train_wide.yaml \
  --out "$run" --init-from models/default --keep-stats --stats-tolerance 0.1 --steps 4000 \
  --lr 0.0001 --warmup-steps 100 --device cpu --precision bf16 > "$out/train.log" 2>&1
if [ ! -f "$run/pruner.json" ]; then
  search-schedule --policy "$run" --dataset "$data" --target-sparsity 0.94 --trajectories 6 \
    --max-calls 8 --out "$out/schedule_094.json" > "$out/search.log" 2>&1
  train-pruner --policy "$run" --dataset "$data" --target-sparsity 0.94 --trajectories 30 \
    --max-calls 12 --held-out 6 --init-steps "$out/schedule_094.json" --epochs 0 \
    --out "$run/pruner_tmp" > "$out/pruner.log" 2>&1
  cp "$run/pruner_tmp"/pruner.{json,safetensors} "$run/"
fi
ev() {  # ev NAME ARGS...
  local name=$1; shift
  [ -f "$out/$name/eval.json" ] || eval-policy --model "$run" --int8 --no-deviation \
    --episodes "$episodes" --seed-start "$seed_start" --modes pruner --target-sparsity 0.94 \
    --out "$out/$name" "$@" > "$out/$name.log" 2>&1
}
ev node_chunked --executor node --latency-ms 30
ev grid_sync
base=results/eval/node_executor
python -m sparse_policy_ros.sim.paired "$base/node_chunked/eval.json:pruner" \
  "$out/node_chunked/eval.json:pruner" "$base/grid_sync/eval.json:pruner" \
  "$out/grid_sync/eval.json:pruner" --json "$out/paired.json"
