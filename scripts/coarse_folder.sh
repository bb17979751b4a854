#!/usr/bin/env bash
# Assemble the shipped layout of a 10-step-grid pruner: models/default (100 dense steps) with the
# pruner scripts/coarse_reuse.sh made for budget k (RUNS/reuse_K10_k<k>, pruner.json n_steps 10).
# SparsePolicy runs pruner calls on the pruner's own grid; target_sparsity 1 - k / 100 (or -1,
# the table's own) gives k computed steps. Prints the folder.
#
#   scripts/coarse_folder.sh RUNS k
set -euo pipefail
runs=${1:?usage: scripts/coarse_folder.sh RUNS k}
k=${2:?usage: scripts/coarse_folder.sh RUNS k}
folder="$runs/default_K10k$k"
mkdir -p "$folder"
cp models/default/{config.json,model.safetensors,stats.safetensors,ddim_timesteps.json} "$folder/"
cp "$runs/reuse_K10_k$k"/pruner.{json,safetensors} "$folder/"
echo "$folder"
