#!/usr/bin/env bash
# Streaming vs chunked replanning in the closed-loop ROS demo (issue 21): sim_node and
# policy_node over DDS on loopback, models/default's pruner, the same episode seeds and the
# same sensors (camera 50 Hz, joint states 50 Hz) for both; every command checked against the
# stock joint_trajectory_controller's rules and the joint limits.
#
#   scripts/streaming_demo.sh [EPISODES] [SEED] [OUT]
#
# Writes OUT/chunked/eval.json, OUT/streaming/eval.json (consistency prefix),
# OUT/streaming_none/eval.json (independent chunks; demo --out), OUT/streaming_rollout/eval.json
# (sparsity_mode ddim_rollout @ 0.98: 2 of the searched 6 DDIM steps per call, the rest reused
# from the shifted rollout cache, noise continued) and OUT/paired.json.
# Resumable: a run whose eval.json exists is kept.
set -euo pipefail
episodes=${1:-30}
seed=${2:-0}
out=${3:-results/demo/streaming}
mkdir -p "$out"
run() {  # run NAME REPLAN_MODE [DEMO ARGS...]
  local name=$1 mode=$2; shift 2
  if [ -f "$out/$name/eval.json" ]; then return; fi
  python -m sparse_policy_ros.ros.demo --episodes "$episodes" --seed "$seed" --camera-rate 50 \
    --replan-mode "$mode" --out "$out/$name/eval.json" "$@" > "$out/$name.log" 2>&1
}
run chunked chunked
run streaming streaming
run streaming_none streaming --policy-params consistency:=none
run streaming_rollout streaming --sparsity-mode ddim_rollout --target-sparsity 0.98 \
  --policy-params sampling_noise:=shifted
python -m sparse_policy_ros.sim.paired "$out/chunked/eval.json" "$out/streaming/eval.json" \
  "$out/streaming_none/eval.json" "$out/streaming_rollout/eval.json" --json "$out/paired.json"
