#!/usr/bin/env bash
# What the policy node's control loop costs or gains (issue 21 item 3): the same model, mode
# and fresh seeds through the grid executor (one action per control step) and through the
# node's loop (eval-policy --executor node: chunks planned within the joint limits by the safety
# filter, actions already due dropped, spliced onto the running trajectory, the controller
# interpolating at the physics rate). The node's default mode, the pruner at the checkpoint's
# 0.94, and dense. Fixed latency models, so the rows do not depend on how
# loaded the machine is: the pruner 30 ms, dense 100 ms (about their p50 on this 2-core VM
# beside a second evaluation). Streaming rows call at 10 Hz (--replan-rate 10, one call per
# control step) with the committed actions kept (--consistency prefix); the disturbance rows
# shove the puck or move the goal once per episode (--disturbance either). Int8, one torch
# thread per process, two side by side.
#
#   scripts/node_executor_table.sh [SEED_START] [EPISODES] [OUT] [MODEL]
#
# Resumable: a row whose OUT/NAME/eval.json exists is kept. Paired comparisons go to
# OUT/paired_*.json.
set -euo pipefail
seed_start=${1:-105000}
episodes=${2:-300}
out=${3:-results/eval/node_executor}
model=${4:-models/default}
mkdir -p "$out"
export OMP_NUM_THREADS=1
run() {  # run NAME MODE ARGS... (EPISODES seeds)
  run_n "$episodes" "$@"
}
run_n() {  # run_n N NAME MODE ARGS... (N seeds from SEED_START)
  local n=$1 name=$2 mode=$3; shift 3
  if [ -f "$out/$name/eval.json" ]; then return; fi
  eval-policy --model "$model" --int8 --no-deviation --episodes "$n" \
    --seed-start "$seed_start" --modes "$mode" --target-sparsity 0.94 --out "$out/$name" "$@" \
    > "$out/$name.log" 2>&1
}
stream=(--replan-mode streaming --replan-rate 10 --consistency prefix)
(
  run grid_sync pruner
  run node_chunked pruner --executor node --latency-ms 30
  run node_chunked_dense dense --executor node --latency-ms 100
  run dist_node_chunked pruner --executor node --latency-ms 30 --disturbance either
  run node_chunked_accel2 pruner --executor node --latency-ms 30 \
    --node-param 'max_joint_acceleration:=[16.0, 16.0, 20.0, 24.0]'
  run_n 100 node_chunked_limits4_100 pruner --executor node --latency-ms 30 \
    --node-param 'max_joint_velocity:=[6.0, 6.0, 8.0, 10.0]' \
    --node-param 'max_joint_acceleration:=[32.0, 32.0, 40.0, 48.0]'
) &
(
  run grid_realtime pruner --realtime --latency-ms 30
  run grid_realtime_exec6 pruner --realtime --latency-ms 30 --executed-actions 6
  run node_streaming pruner --executor node --latency-ms 30 "${stream[@]}"
  run dist_node_streaming pruner --executor node --latency-ms 30 "${stream[@]}" \
    --disturbance either
  # The dense node rows take ~10 s an episode on this 2-core VM beside the others: 100 seeds.
  run_n 100 dist_node_chunked_dense_100 dense --executor node --latency-ms 100 \
    --disturbance either
) &
wait
pair() {  # pair NAME A B
  python -m sparse_policy_ros.sim.paired "$out/$2/eval.json" "$out/$3/eval.json" \
    --json "$out/paired_$1.json"
}
pair grid_vs_node grid_sync node_chunked
pair realtime_vs_node grid_realtime node_chunked
pair replanning_period_vs_node grid_realtime_exec6 node_chunked
pair limits node_chunked node_chunked_accel2
pair limits4 node_chunked node_chunked_limits4_100
pair chunked_vs_streaming node_chunked node_streaming
pair dense_vs_streaming node_chunked_dense node_streaming
pair dist_chunked_vs_streaming dist_node_chunked dist_node_streaming
pair dist_dense_vs_streaming dist_node_chunked_dense_100 dist_node_streaming
pair dist_dense_vs_chunked dist_node_chunked_dense_100 dist_node_chunked
