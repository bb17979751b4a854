#!/usr/bin/env bash
# The searched reuse schedule on a coarser nominal step grid (issue 20: every reuse step still
# costs the embedding, head and DDIM update; ~3 ms of a 100-step call at 94-98 reuse steps):
# models/default's weights sampled with K nominal DDIM steps instead of 100, the schedule of k
# computed steps searched on that grid, on the equal-budget table's seeds, paired with its
# searched DDIM-k and 100-step reuse rows (results/eval/budget_table).
#
#   scripts/coarse_reuse.sh DATASET [K] [k] [SEED_START] [EPISODES] [OUT] [RUNS]
#
# DATASET: models/default's recording (its MODEL_CARD.md). Resumable: stages with output kept.
# Latency side by side: python -m sparse_policy_ros.bench --model RUNS/reuse_K<K>_k<k> --int8 \
#   --threads 1 --frames sliding --modes ddim_searched pruner --sparsity $(1 - k / K) --calls 60
set -euo pipefail
dataset=${1:?usage: scripts/coarse_reuse.sh DATASET [K] [k] [SEED_START] [EPISODES] [OUT]}
K=${2:-25}
k=${3:-2}
seed_start=${4:-102000}
episodes=${5:-300}
out=${6:-results/eval/coarse_reuse}
runs=${7:-/tmp/coarse_reuse_runs}
export OMP_NUM_THREADS=1
name="K${K}_k${k}"
base="$runs/default_K$K"
dir="$runs/reuse_$name"
s=$(python -c "print(round(1 - $k / $K, 6))")
mkdir -p "$out" "$runs"
if [ ! -f "$base/config.json" ]; then  # the same weights, K nominal steps
  mkdir -p "$base"
  cp models/default/{model.safetensors,stats.safetensors,ddim_timesteps.json} "$base/"
  python - "$base/config.json" "$K" <<'PY'
import json, sys
config = json.load(open('models/default/config.json'))
config['policy']['num_inference_steps'] = int(sys.argv[2])
json.dump(config, open(sys.argv[1], 'w'), indent=2)
PY
fi
if [ ! -f "$dir/pruner.json" ]; then
  search-schedule --policy "$base" --dataset "$dataset" --target-sparsity "$s" \
    --trajectories 6 --max-calls 8 --out "$out/schedule_$name.json" > "$out/search_$name.log" 2>&1
  train-pruner --policy "$base" --dataset "$dataset" --target-sparsity "$s" --trajectories 6 \
    --max-calls 8 --held-out 2 --init-steps "$out/schedule_$name.json" --epochs 0 \
    --out "$dir" > "$out/pruner_$name.log" 2>&1
  cp "$base/ddim_timesteps.json" "$dir/"  # bench --modes ddim_searched on the same folder
fi
if [ ! -f "$out/$name/eval.json" ]; then
  eval-policy --model "$dir" --int8 --no-deviation --episodes "$episodes" \
    --seed-start "$seed_start" --modes pruner --target-sparsity "$s" --out "$out/$name" \
    > "$out/$name.log" 2>&1
fi
table=results/eval/budget_table
budget=$(python -c "print({6: 0.94, 4: 0.96, 3: 0.97, 2: 0.98}[$k])")
python -m sparse_policy_ros.sim.paired "$table/ddim_$budget/eval.json:ddim_searched" \
  "$table/reuse_$budget/eval.json:pruner" "$out/$name/eval.json:pruner" \
  --json "$out/paired_$name.json"
