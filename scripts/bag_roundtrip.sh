#!/usr/bin/env bash
# Issue 22's rosbag path end to end: demonstrations as a teleoperated arm's rosbag2 (MCAP) ->
# bag-to-dataset -> train-policy -> eval-policy, with the numbers at the end.
#
#   scripts/bag_roundtrip.sh [WORK] [OUT] [EPISODES]
#
# The bag is written by scripts/zarr_to_bag.py from scripted-expert demonstrations (camera
# Image, JointState, a forward-position Float64MultiArray command, /episode_start markers);
# bag-to-dataset reads it as a bag from a real arm. The converted store is compared with the
# recorded one, then a policy is trained on the converted store alone (the CPU recipe
# config/train_cpu_default.yaml cut to 5000 steps so it fits a session: not models/default's
# recipe) and evaluated on fresh seeds. Stages whose output exists are skipped.
set -euo pipefail
work=${1:-/work/data}
out=${2:-results/eval/bag_roundtrip}
episodes=${3:-100}
export OMP_NUM_THREADS=1
store=$work/arm_push_200_lift06.zarr
bag=$work/arm_push_200_bag
converted=$work/arm_push_200_from_bag.zarr
run=${RUN:-/work/runs/from_bag_5000}
if [ ! -e "$store" ]; then
  record-demos --episodes 200 --out "$store" --seed-start 0 --lift 0.06
fi
if [ ! -e "$bag" ]; then python scripts/zarr_to_bag.py "$store" "$bag"; fi
if [ ! -e "$converted" ]; then
  bag-to-dataset "$bag" --out "$converted" --image-topic /camera/front/image_raw \
    --camera-names img --joint-state-topic /joint_states \
    --joint-names base_yaw shoulder elbow wrist_pitch \
    --command-topic /forward_position_controller/commands --rate 10 \
    --episode-topic /episode_start
fi
mkdir -p "$out"
python - "$store" "$converted" > "$out/compare.txt" <<'PY'
import sys
import numpy as np
from sparse_policy_ros.training.replay_buffer import ReplayBuffer
recorded, converted = (ReplayBuffer.open(p, mode='r') for p in sys.argv[1:3])
assert recorded.n_episodes == converted.n_episodes, (recorded.n_episodes, converted.n_episodes)
worst, short = {}, set()
for i in range(recorded.n_episodes):
    a, b = recorded.get_episode(i), converted.get_episode(i)
    n = len(b['state'])
    short.add(len(a['state']) - n)
    for key in ('img', 'state', 'action'):
        diff = np.abs(a[key][:n].astype(np.float64) - b[key].astype(np.float64)).max()
        worst[key] = max(worst.get(key, 0.0), float(diff))
print(f'episodes {converted.n_episodes}, steps {recorded.n_steps} recorded, '
      f'{converted.n_steps} converted; recorded minus converted length per episode: '
      f'{sorted(short)}; largest difference on the common steps: {worst}')
PY
cat "$out/compare.txt"
if [ ! -f "$run/model.safetensors" ]; then
  train-policy --dataset "$converted" --config config/train_cpu_default.yaml --steps 5000 \
    --out "$run" --device cpu --precision bf16
fi
cp "$run/train_log.jsonl" "$out/train_log.jsonl"
if [ ! -f "$out/eval/eval.json" ]; then
  eval-policy --model "$run" --int8 --no-deviation --episodes "$episodes" --seed-start 100000 \
    --modes dense,ddim,fora --target-sparsity 0.94 --out "$out/eval"
fi
