#!/usr/bin/env bash
# The equal-budget table's leading rows again on other seeds (issue 20): are the wins real, and
# which one should the node ship? Searched DDIM-k vs the shipped 100-step reuse schedule
# (budget 6) and vs the 10-step-grid reuse schedule (budgets 4, 3, 2; scripts/coarse_folder.sh),
# plus dense; each row's seeds paired, and pooled with the table's seeds
# (results/eval/budget_table, results/eval/coarse_reuse).
#
#   scripts/fresh_budget_check.sh [RUNS] [SEED_START] [EPISODES] [OUT]
#
# RUNS: scripts/coarse_reuse.sh's RUNS folder (reuse_K10_k2/, _k3/ and _k4/ must exist).
set -euo pipefail
runs=${1:-/work/runs/coarse}
seed_start=${2:-106000}
episodes=${3:-300}
out=${4:-results/eval/fresh_budget}
export OMP_NUM_THREADS=1
mkdir -p "$out"
ev() {  # ev NAME ARGS...
  local name=$1; shift
  [ -f "$out/$name/eval.json" ] || eval-policy --int8 --no-deviation --episodes "$episodes" \
    --seed-start "$seed_start" --out "$out/$name" "$@" > "$out/$name.log" 2>&1
}
coarse() { "$(dirname "$0")/coarse_folder.sh" "$runs" "$1"; }
ev k10k4 --model "$(coarse 4)" --modes pruner --target-sparsity 0.96
ev ddim4 --model models/default --modes ddim_searched --target-sparsity 0.96
ev k100k6 --model models/default --modes pruner --target-sparsity 0.94
ev ddim6 --model models/default --modes ddim_searched --target-sparsity 0.94
ev dense --model models/default --modes dense
ev k10k3 --model "$(coarse 3)" --modes pruner --target-sparsity 0.97
ev ddim3 --model models/default --modes ddim_searched --target-sparsity 0.97
ev k10k2 --model "$(coarse 2)" --modes pruner --target-sparsity 0.98
ev ddim2 --model models/default --modes ddim_searched --target-sparsity 0.98
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
for k in 3 2; do
  python -m sparse_policy_ros.sim.paired "$out/ddim$k/eval.json:ddim_searched" \
    "$out/k10k$k/eval.json:pruner" --json "$out/paired_$k.json"
  python -m sparse_policy_ros.sim.paired \
    "$table/ddim_0.9$((10 - k))/eval.json,$out/ddim$k/eval.json:ddim_searched" \
    "results/eval/coarse_reuse/K10_k$k/eval.json,$out/k10k$k/eval.json:pruner" \
    --json "$out/pooled_$k.json"
done
