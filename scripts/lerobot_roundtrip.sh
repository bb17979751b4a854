#!/usr/bin/env bash
# Issue 22's LeRobot path end to end: demonstrations as a LeRobot v3 dataset (parquet + H.264
# video) -> train-policy --format lerobot -> eval-policy, with the numbers at the end.
#
#   scripts/lerobot_roundtrip.sh [WORK] [OUT] [EPISODES]
#
# The dataset is written by scripts/zarr_to_lerobot.py from scripted-expert demonstrations;
# the frames go through a lossy codec (crf 23), as in LeRobot's own datasets. The converted
# store is compared with the recorded one, then a policy is trained from the LeRobot folder
# (config/train_cpu_default.yaml cut to 5000 steps, as scripts/bag_roundtrip.sh) and evaluated
# on fresh seeds. Stages whose output exists are skipped.
set -euo pipefail
work=${1:-/work/data}
out=${2:-results/eval/lerobot_roundtrip}
episodes=${3:-100}
export OMP_NUM_THREADS=1
store=$work/arm_push_200_lift06.zarr
dataset=$work/arm_push_200_lerobot
run=${RUN:-/work/runs/from_lerobot_5000}
if [ ! -e "$store" ]; then
  record-demos --episodes 200 --out "$store" --seed-start 0 --lift 0.06
fi
if [ ! -e "$dataset" ]; then python scripts/zarr_to_lerobot.py "$store" "$dataset"; fi
mkdir -p "$out"
if [ ! -f "$run/model.safetensors" ]; then
  train-policy --dataset "$dataset" --format lerobot --config config/train_cpu_default.yaml \
    --steps 5000 --out "$run" --device cpu --precision bf16
fi
cp "$run/train_log.jsonl" "$out/train_log.jsonl"
# train-policy converted the folder into its cache next to the model folder (default_cache):
# compare that with the recording.
python - "$store" "$run.dataset.zarr" > "$out/compare.txt" <<'PY'
import sys
import numpy as np
from sparse_policy_ros.training.replay_buffer import ReplayBuffer
recorded, converted = (ReplayBuffer.open(p, mode='r') for p in sys.argv[1:3])
worst, pixel = {}, []
for i in range(recorded.n_episodes):
    a, b = recorded.get_episode(i), converted.get_episode(i)
    for key in ('state', 'action'):
        worst[key] = max(worst.get(key, 0.0), float(np.abs(a[key] - b[key]).max()))
    pixel.append(float(np.abs(a['img'].astype(float) - b['img'].astype(float)).mean()))
print(f'episodes {recorded.n_episodes} / {converted.n_episodes}, steps {recorded.n_steps} / '
      f'{converted.n_steps}; largest state/action difference {worst}; image mean absolute '
      f'difference {np.mean(pixel):.2f} grey levels (worst episode {max(pixel):.2f})')
PY
cat "$out/compare.txt"
if [ ! -f "$out/eval/eval.json" ]; then
  eval-policy --model "$run" --int8 --no-deviation --episodes "$episodes" --seed-start 100000 \
    --modes dense,ddim,fora --target-sparsity 0.94 --out "$out/eval"
fi
