#!/usr/bin/env bash
# Streaming vs chunked replanning (issue 21), every row on the same fresh seeds, int8 branch
# matmuls, one torch thread per process, two evaluations side by side on a 2-core machine.
#
#   scripts/streaming_table.sh [SEED_START] [EPISODES] [OUT]
#
# Rows: synchronous chunked-8 and streaming (a call every control step, the committed actions
# inpainted: --consistency prefix --prefix-steps 5), both with models/default's pruner @ 0.94;
# then the disturbance variant (the puck shoved or the goal moved once) in realtime evaluation
# with fixed latency models (the equal-budget table's p50 on this VM: dense 97.3 ms, pruner
# 12.1 ms): chunked dense, chunked pruner, streaming pruner. Resumable: a row whose
# OUT/NAME/eval.json exists is kept. Paired comparisons go to OUT/paired_*.json; the seam
# columns of the README are printed by sparse_policy_ros.sim.seams.
set -euo pipefail
seed_start=${1:-104000}
episodes=${2:-300}
out=${3:-results/eval/streaming}
mkdir -p "$out"
export OMP_NUM_THREADS=1
run() {  # run NAME MODE ARGS...
  local name=$1 mode=$2; shift 2
  if [ -f "$out/$name/eval.json" ]; then return; fi
  eval-policy --model models/default --int8 --no-deviation --episodes "$episodes" \
    --seed-start "$seed_start" --modes "$mode" --target-sparsity 0.94 --out "$out/$name" "$@" \
    > "$out/$name.log" 2>&1
}
stream=(--executed-actions 1 --consistency prefix --prefix-steps 5)
(
  run sync_chunk8 pruner
  run dist_chunk8_dense dense --realtime --latency-ms 97.3 --disturbance either
  run dist_chunk8_pruner pruner --realtime --latency-ms 12.1 --disturbance either
) &
(
  run sync_stream_prefix5 pruner "${stream[@]}"
  run dist_stream_prefix5 pruner "${stream[@]}" --realtime --latency-ms 12.1 --disturbance either
) &
wait
python -m sparse_policy_ros.sim.paired "$out/sync_chunk8/eval.json" \
  "$out/sync_stream_prefix5/eval.json" --json "$out/paired_sync.json"
python -m sparse_policy_ros.sim.paired "$out/dist_chunk8_dense/eval.json" \
  "$out/dist_chunk8_pruner/eval.json" "$out/dist_stream_prefix5/eval.json" \
  --json "$out/paired_disturbance_vs_dense.json"
python -m sparse_policy_ros.sim.paired "$out/dist_chunk8_pruner/eval.json" \
  "$out/dist_stream_prefix5/eval.json" --json "$out/paired_disturbance_vs_chunked_pruner.json"
python -m sparse_policy_ros.sim.seams "$out"/sync_chunk8/eval.json \
  "$out"/sync_stream_prefix5/eval.json "$out"/dist_chunk8_dense/eval.json \
  "$out"/dist_chunk8_pruner/eval.json "$out"/dist_stream_prefix5/eval.json
