#!/usr/bin/env bash
# models/panda_push, second round (issue 23 item 4): fine-tune the width-256 model
# (scripts/panda_recipe.sh) on twice the lifted-approach demonstrations (400 episodes, seeds
# 0-399; the first 200 are the first round's), 6000 more bf16 steps at lr 1e-4, then the same
# schedule search, pruner and evaluation as the first round on the same fresh seeds.
#
#   scripts/panda_finetune.sh [DATA] [RUN] [SEED_START] [EPISODES] [OUT] [FROM] [DEMOS] [STEPS] [TOL]
#
# DEMOS (default 400) episodes are recorded from seed 0; STEPS (default 6000) fine-tuning steps;
# TOL (default 0.05) train-policy's --stats-tolerance (the kept stats against the new data's).
# Stages are skipped when their output exists (see panda_recipe.sh).
set -euo pipefail
data=${1:-/work/data/panda_push_400_lift06.zarr}
run=${2:-/work/runs/panda_ft400}
seed_start=${3:-100000}
episodes=${4:-300}
out=${5:-results/eval/panda_ft400}
from=${6:-models/panda_push}
demos=${7:-400}
steps=${8:-6000}
tol=${9:-0.05}
export OMP_NUM_THREADS=1
if [ ! -e "$data" ]; then
  record-demos --env panda_push --episodes "$demos" --out "$data" --seed-start 0 --lift 0.06
fi
if [ ! -f "$run/model.safetensors" ]; then
  resume=()
  if [ -d "$run/checkpoints/latest" ]; then resume=(--resume); fi
  train-policy --dataset "$data" --config config/train_wide_panda.yaml --out "$run" \
    --init-from "$from" --keep-stats --stats-tolerance "$tol" --steps "$steps" --lr 0.0001 --warmup-steps 100 \
    --device cpu --precision bf16 "${resume[@]}"
fi
"$(dirname "$0")/panda_recipe.sh" "$data" "$run" "$seed_start" "$episodes" "$out"
cp "$run/train_log.jsonl" "$out/train_log.jsonl"
# Against the first round on the same seeds (its files are in the repo).
first=results/eval/panda_wide_lift06
if [ "$seed_start" = 100000 ] && [ -f "$first/first/eval.json" ]; then
  python -m sparse_policy_ros.sim.paired \
    "$first/first/eval.json,$first/second/eval.json:dense" \
    "$out/first/eval.json,$out/second/eval.json:dense" \
    "$out/first/eval.json,$out/second/eval.json:pruner" --json "$out/paired_vs_first_round.json"
fi
