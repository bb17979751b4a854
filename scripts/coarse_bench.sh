#!/usr/bin/env bash
# Latency side by side at each budget: searched DDIM-k vs the reuse schedule on the 10-step grid
# (issue 20), both from the shipped layout: models/default (100 dense steps) with the K = 10
# pruner of scripts/coarse_reuse.sh in the same folder (pruner.json n_steps 10), so the
# target sparsity 1 - k / 100 gives k computed steps to either row.
#
#   scripts/coarse_bench.sh [RUNS] [OUT] [CALLS] [BUDGETS...]
#
# RUNS: coarse_reuse.sh's RUNS folder (it holds reuse_K10_k<k>/ for each budget k). Run it on a
# quiet machine: nothing else on the cores (the rows of one run are timed one after another).
set -euo pipefail
runs=${1:-/work/runs/coarse}
out=${2:-results/bench/coarse_grid}
calls=${3:-100}
shift $(( $# < 3 ? $# : 3 ))
budgets=("${@:-2 3 4 6}")
read -r -a budgets <<< "${budgets[*]}"
mkdir -p "$out"
for k in "${budgets[@]}"; do
  folder=$("$(dirname "$0")/coarse_folder.sh" "$runs" "$k")
  s=$(python -c "print(round(1 - $k / 100, 6))")
  python -m sparse_policy_ros.bench --model "$folder" --int8 --threads 1 --frames sliding \
    --modes ddim_searched pruner --sparsity "$s" --calls "$calls" --out "$out/k$k"
done
