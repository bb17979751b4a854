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
# the searched 3-step set (the same FLOPs). --noise shifted keeps the last call's initial noise
# (moved by the same steps); fresh draws new noise per call. Resumable: a run whose
# OUT/NAME/eval.json exists is kept.
set -euo pipefail
seed_start=${1:-106000}
episodes=${2:-300}
out=${3:-results/eval/rollout}
mkdir -p "$out"
export OMP_NUM_THREADS=1
run() {  # run NAME TARGET NOISE MODES
  local name=$1 target=$2 noise=$3 modes=$4
  if [ -f "$out/$name/eval.json" ]; then return; fi
  eval-policy --model models/default --int8 --no-deviation --episodes "$episodes" \
    --seed-start "$seed_start" --modes "$modes" --target-sparsity "$target" \
    --executed-actions 1 --consistency prefix --prefix-steps 5 --noise "$noise" \
    --out "$out/$name" > "$out/$name.log" 2>&1
}
(
  run k3_shifted 0.97 shifted ddim_searched,ddim_rollout
  run k2_shifted 0.98 shifted ddim_searched,ddim_rollout
) &
(
  run k3_fresh 0.97 fresh ddim_searched,ddim_rollout
  run k6 0.94 shifted ddim_searched
) &
wait
# Reference first: searched DDIM-k with fresh noise, what a user would pick today.
python -m sparse_policy_ros.sim.paired "$out/k3_fresh/eval.json:ddim_searched" \
  "$out/k3_fresh/eval.json:ddim_rollout" "$out/k3_shifted/eval.json:ddim_searched" \
  "$out/k3_shifted/eval.json:ddim_rollout" "$out/k6/eval.json:ddim_searched" \
  --json "$out/paired_k3.json"
python -m sparse_policy_ros.sim.paired "$out/k3_shifted/eval.json:ddim_searched" \
  "$out/k3_shifted/eval.json:ddim_rollout" --json "$out/paired_k3_shifted.json"
python -m sparse_policy_ros.sim.paired "$out/k2_shifted/eval.json:ddim_searched" \
  "$out/k2_shifted/eval.json:ddim_rollout" --json "$out/paired_k2_shifted.json"
