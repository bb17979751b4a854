#!/usr/bin/env bash
# Cross-call reuse in streaming (issue 21 item 2, issue 20 item 4): is reusing the previous
# call's branch values (ddim_rollout) better than simply taking fewer searched DDIM steps at
# the same compute? Every row streams (a call every control step, the committed actions
# inpainted: --consistency prefix --prefix-steps 5), int8 branch matmuls, one torch thread per
# process, two evaluations side by side on a 2-core machine, all on the same fresh seeds.
#
#   scripts/rollout_table.sh [SEED_START] [EPISODES] [OUT]
#
# ddim_rollout @ 0.97 samples models/default's searched 6-step DDIM set and computes 3 of the
# 6 steps per call (step 0 and two more, round-robin); the other 3 reuse the rollout cache,
# shifted along the action tokens by the steps since the last call. ddim_searched @ 0.97 is
# the searched 3-step set (the same FLOPs); pruner rows are scripts/budget_table.sh's searched
# reuse schedules at the same budgets (they reuse within a call only). --noise shifted keeps the last call's initial noise
# (moved by the same steps); fresh draws new noise per call. Resumable: a run whose
# OUT/NAME/eval.json exists is kept.
set -euo pipefail
seed_start=${1:-106000}
episodes=${2:-300}
out=${3:-results/eval/rollout}
# The searched reuse schedules of scripts/budget_table.sh (its RUNS folder), for the pruner rows.
runs=${RUNS:-/tmp/budget_table_runs}
mkdir -p "$out"
export OMP_NUM_THREADS=1
run() {  # run NAME TARGET NOISE MODES [MODEL [EVAL ARGS...]]
  local name=$1 target=$2 noise=$3 modes=$4 model=${5:-models/default}
  shift $(( $# < 5 ? $# : 5 ))
  if [ -f "$out/$name/eval.json" ]; then return; fi
  local seeds=$seed_start
  case $name in dist_*) seeds=$(( seed_start + 2000 ));; esac
  eval-policy --model "$model" --int8 --no-deviation --episodes "$episodes" \
    --seed-start "$seeds" --modes "$modes" --target-sparsity "$target" \
    --executed-actions 1 --consistency prefix --prefix-steps 5 --noise "$noise" "$@" \
    --out "$out/$name" > "$out/$name.log" 2>&1  # later arguments win
}
(
  run k3_shifted 0.97 shifted ddim_searched,ddim_rollout
  run k2_shifted 0.98 shifted ddim_searched,ddim_rollout
  run k2_fresh 0.98 fresh ddim_searched
  run k2_reuse 0.98 fresh pruner "$runs/reuse_0.98"
) &
(
  run k3_fresh 0.97 fresh ddim_searched,ddim_rollout
  run k6 0.94 shifted ddim_searched
  run k6_fresh 0.94 fresh ddim_searched
  run k3_reuse 0.97 fresh pruner "$runs/reuse_0.97"
) &
wait
# The disturbance variant (the puck shoved or the goal moved once), realtime with one fixed
# latency for every row (12.1 ms: any call under a control period costs one step), seeds
# SEED_START + 2000 onward. refresh: ddim_rollout computes all 6 steps of a call whose
# observation tokens moved more than 0.29 (the 95th percentile of the calls' change on tuning
# seeds 107000-107019 of this variant).
dist=(--realtime --latency-ms 12.1 --disturbance either)
(
  run dist_k2_fresh 0.98 fresh ddim_searched models/default "${dist[@]}"
  run dist_k2_shifted 0.98 shifted ddim_rollout models/default "${dist[@]}"
) &
(
  run dist_k2_reuse 0.98 fresh pruner "$runs/reuse_0.98" "${dist[@]}"
  run dist_k2_refresh 0.98 shifted ddim_rollout models/default "${dist[@]}" \
    --rollout-refresh 0.29
) &
# Issue 21's bar on this variant: chunked-8 dense at its own measured p50 (97.3 ms, the
# equal-budget table's).
run dist_chunk8_dense 0.94 fresh dense models/default "${dist[@]}" --latency-ms 97.3 \
  --executed-actions 8 --consistency none
wait
# Reference first: searched DDIM-k with fresh noise, what a user would pick today.
python -m sparse_policy_ros.sim.paired "$out/k3_fresh/eval.json:ddim_searched" \
  "$out/k3_fresh/eval.json:ddim_rollout" "$out/k3_shifted/eval.json:ddim_searched" \
  "$out/k3_shifted/eval.json:ddim_rollout" "$out/k6/eval.json:ddim_searched" \
  "$out/k6_fresh/eval.json:ddim_searched" "$out/k3_reuse/eval.json:pruner" \
  --json "$out/paired_k3.json"
python -m sparse_policy_ros.sim.paired "$out/k2_fresh/eval.json:ddim_searched" \
  "$out/k2_shifted/eval.json:ddim_searched" "$out/k2_shifted/eval.json:ddim_rollout" \
  "$out/k2_reuse/eval.json:pruner" --json "$out/paired_k2.json"
# Cross-call reuse against the within-call searched reuse schedule at the same budget.
python -m sparse_policy_ros.sim.paired "$out/k2_reuse/eval.json:pruner" \
  "$out/k2_shifted/eval.json:ddim_rollout" --json "$out/paired_k2_rollout_vs_reuse.json"
python -m sparse_policy_ros.sim.paired "$out/k3_reuse/eval.json:pruner" \
  "$out/k3_shifted/eval.json:ddim_rollout" --json "$out/paired_k3_rollout_vs_reuse.json"
python -m sparse_policy_ros.sim.paired "$out/dist_k2_fresh/eval.json:ddim_searched" \
  "$out/dist_k2_reuse/eval.json:pruner" "$out/dist_k2_shifted/eval.json:ddim_rollout" \
  "$out/dist_k2_refresh/eval.json:ddim_rollout" --json "$out/paired_dist_k2.json"
python -m sparse_policy_ros.sim.paired "$out/dist_k2_reuse/eval.json:pruner" \
  "$out/dist_k2_shifted/eval.json:ddim_rollout" "$out/dist_k2_refresh/eval.json:ddim_rollout" \
  --json "$out/paired_dist_k2_vs_reuse.json"
python -m sparse_policy_ros.sim.paired "$out/dist_chunk8_dense/eval.json:dense" \
  "$out/dist_k2_reuse/eval.json:pruner" "$out/dist_k2_refresh/eval.json:ddim_rollout" \
  --json "$out/paired_dist_vs_chunked_dense.json"
