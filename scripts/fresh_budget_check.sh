#!/usr/bin/env bash
# The equal-budget table's leading rows again on fresh seeds (issue 20): are the wins at 6 and 4
# step-equivalents real, and which one should the node ship? Searched DDIM-k vs the shipped
# 100-step reuse schedule (budget 6) and vs the 10-step-grid reuse schedule (budget 4,
# scripts/coarse_folder.sh), plus dense; each row's seeds paired, and pooled with the table's
# seeds (results/eval/budget_table, results/eval/coarse_reuse).
#
#   scripts/fresh_budget_check.sh [RUNS] [SEED_START] [EPISODES] [OUT]
#
# RUNS: scripts/coarse_reuse.sh's RUNS folder (reuse_K10_k4/ must exist).
set -euo pipefail
runs=${1:-/work/runs/coarse}
seed_start=${2:-106000}
episodes=${3:-300}
out=${4:-results/eval/fresh_budget}
export OMP_NUM_THREADS=1
mkdir -p "$out"
coarse=$("$(dirname "$0")/coarse_folder.sh" "$runs" 4)
ev() {  # ev NAME ARGS...
  local name=$1; shift
  [ -f "$out/$name/eval.json" ] || eval-policy --int8 --no-deviation --episodes "$episodes" \
    --seed-start "$seed_start" --out "$out/$name" "$@" > "$out/$name.log" 2>&1
}
ev k10k4 --model "$coarse" --modes pruner --target-sparsity 0.96
ev ddim4 --model models/default --modes ddim_searched --target-sparsity 0.96
ev k100k6 --model models/default --modes pruner --target-sparsity 0.94
ev ddim6 --model models/default --modes ddim_searched --target-sparsity 0.94
ev dense --model models/default --modes dense
python -m sparse_policy_ros.sim.paired "$out/ddim6/eval.json:ddim_searched" \
  "$out/k100k6/eval.json:pruner" "$out/ddim4/eval.json:ddim_searched" \
  "$out/k10k4/eval.json:pruner" "$out/dense/eval.json:dense" --json "$out/paired.json"
table=results/eval/budget_table
python -m sparse_policy_ros.sim.paired \
  "$table/ddim_0.94/eval.json,$out/ddim6/eval.json:ddim_searched" \
  "$table/reuse_0.94/eval.json,$out/k100k6/eval.json:pruner" --json "$out/pooled_6.json"
python -m sparse_policy_ros.sim.paired \
  "$table/ddim_0.96/eval.json,$out/ddim4/eval.json:ddim_searched" \
  "results/eval/coarse_reuse/K10_k4/eval.json,$out/k10k4/eval.json:pruner" \
  --json "$out/pooled_4.json"
