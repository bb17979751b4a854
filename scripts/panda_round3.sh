#!/usr/bin/env bash
# models/panda_push, third round (issue 23 item 4): fine-tune the second round (models/panda_push)
# on 800 lifted-approach demonstrations (seeds 0-799) for 6000 more bf16 steps at lr 1e-4 (its
# stats kept: seeds 400-799 reach 5.5% of the range below joint 1's kept minimum), with
# the second round's schedule search, pruner and evaluation on fresh seeds; then the second
# round's dense policy on the same seeds, paired against the third round.
#
#   scripts/panda_round3.sh [DATA] [RUN] [SEED_START] [EPISODES] [OUT]
set -euo pipefail
data=${1:-/work/data/panda_push_800_lift06.zarr}
run=${2:-/work/runs/panda_ft800}
seed_start=${3:-107000}
episodes=${4:-300}
out=${5:-results/eval/panda_ft800}
here=$(dirname "$0")
"$here/panda_finetune.sh" "$data" "$run" "$seed_start" "$episodes" "$out" models/panda_push 800 6000 0.1
export OMP_NUM_THREADS=1
half=$(( episodes / 2 ))
previous() {  # previous NAME SEED_START EPISODES
  if [ -f "$out/$1/eval.json" ]; then return; fi
  eval-policy --model models/panda_push --int8 --no-deviation --episodes "$3" --seed-start "$2" \
    --modes dense --out "$out/$1" > "$out/$1.log" 2>&1
}
previous second_round_first "$seed_start" "$half" &
previous second_round_second $(( seed_start + half )) $(( episodes - half )) &
wait
python -m sparse_policy_ros.sim.paired \
  "$out/second_round_first/eval.json,$out/second_round_second/eval.json:dense" \
  "$out/first/eval.json,$out/second/eval.json:dense" \
  "$out/first/eval.json,$out/second/eval.json:pruner" --json "$out/paired_vs_second_round.json"
