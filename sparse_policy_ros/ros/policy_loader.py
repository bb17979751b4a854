"""Build the node's SparsePolicy from its parameters: a model folder or random weights."""

import json
from pathlib import Path
from typing import Any

import torch

from .params import RANDOM_MODEL
from .paths import default_model_dir
from ..policy.config import PolicyConfig
from ..sparsity.sparse_policy import resolve_device, SparsePolicy


def resolve_model_path(model_path: str) -> Path:
    """'' -> the package's models/default; otherwise the given folder, which must exist."""
    path = default_model_dir() if model_path == '' else Path(model_path).expanduser()
    if not path.is_dir():
        hint = (' (train one, or set model_path to a model folder or to '
                f"'{RANDOM_MODEL}' for random weights)") if model_path == '' else ''
        raise ValueError(f'model_path: expected a model folder, got {str(path)!r}, which does '
                         f'not exist{hint}')
    return path


def random_policy_config(overrides_json: str, joint_names: list[str],
                         camera_names: list[str]) -> PolicyConfig:
    """Build the random-weights PolicyConfig: JSON overrides plus the node's joints and cameras."""
    try:
        overrides = json.loads(overrides_json or '{}')
    except json.JSONDecodeError as error:
        raise ValueError(f'random_policy: expected a JSON object, got {overrides_json!r} '
                         f'({error})') from error
    if not isinstance(overrides, dict):
        raise ValueError(f'random_policy: expected a JSON object, got {overrides_json!r}')
    fixed = {'camera_names': list(camera_names), 'state_dim': len(joint_names),
             'action_dim': len(joint_names)}
    clash = sorted(set(overrides) & set(fixed))
    if clash:
        raise ValueError(f'random_policy: {clash} come from camera_names and joint_names; '
                         f'expected them absent, got {overrides_json!r}')
    return PolicyConfig.from_dict({**overrides, **fixed})


def int8_for_device(requested: bool, device: torch.device) -> tuple[bool, str | None]:
    """
    Whether the branches' matmuls run in int8 on ``device``, and a warning when a request is moot.

    int8_linears is a CPU option (like cuda_graphs is a CUDA one): on a CUDA device the float32
    kernels run and the returned warning says so, so one parameter file serves both machines.
    """
    if requested and device.type != 'cpu':
        return False, (f'int8_linears: true applies to the CPU only; device {device} runs the '
                       'float32 kernels')
    return bool(requested), None


def load_sparse_policy(settings: dict[str, Any]) -> tuple[SparsePolicy, str, list[str]]:
    """
    Load (or randomly initialise) and warm up the policy.

    Returns the policy, where it came from, and warnings for the log (parameters that do not
    apply to the resolved device). ``settings`` holds the policy node's parameter values. The
    policy's cameras and joint count must match the node's, otherwise ValueError names both; a
    state-only model (no cameras, e.g. an imported low-dim Diffusion Policy) uses none of the
    node's cameras.
    """
    if settings['torch_threads'] > 0:
        # Process-wide: threads started afterwards (the node's inference worker) inherit it.
        torch.set_num_threads(int(settings['torch_threads']))
    joint_names = list(settings['joint_names'])
    camera_names = list(settings['camera_names'])
    target = settings['target_sparsity']
    target = None if target < 0 else float(target)
    steps = int(settings['num_inference_steps']) or None
    refresh = settings.get('rollout_refresh') or None  # 0 = never
    if settings['sparsity_mode'] != 'ddim_rollout':
        refresh = None
    # True = wherever the device allows (CUDA only), False = never.
    graphs = None if settings['cuda_graphs'] else False
    int8, int8_warning = int8_for_device(settings['int8_linears'],
                                         resolve_device(settings['device']))
    warnings = [int8_warning] if int8_warning else []
    if settings['model_path'] == RANDOM_MODEL:
        config = random_policy_config(settings['random_policy'], joint_names, camera_names)
        if steps is not None:
            config = PolicyConfig.from_dict({**config.to_dict(), 'num_inference_steps': steps})
        policy = SparsePolicy.random_init(config, device=settings['device'],
                                          mode=settings['sparsity_mode'],
                                          target_sparsity=target, seed=int(settings['seed']),
                                          cuda_graphs=graphs, int8_linears=int8)
        source = 'RANDOM WEIGHTS (model_path: random)'
    else:
        path = resolve_model_path(settings['model_path'])
        policy = SparsePolicy.from_pretrained(path, device=settings['device'],
                                              mode=settings['sparsity_mode'],
                                              target_sparsity=target,
                                              num_inference_steps=steps, warmup=True,
                                              seed=int(settings['seed']), cuda_graphs=graphs,
                                              int8_linears=int8,
                                              rollout_refresh=refresh)
        source = str(path)
    config = policy.config
    problems = []
    if config.camera_names and list(config.camera_names) != camera_names:
        problems.append(f"camera_names: expected the model's {list(config.camera_names)}, "
                        f'got {camera_names}')
    if config.state_dim != len(joint_names) or config.action_dim != len(joint_names):
        problems.append(f'joint_names: expected {config.state_dim} joints (model state_dim) '
                        f'and {config.action_dim} (action_dim), got {len(joint_names)}')
    trained_on = config.extra.get('joint_names')  # models that record their joints
    if trained_on is not None and list(trained_on) != joint_names:
        problems.append(f'joint_names: the model was trained on joints {list(trained_on)} '
                        f'(in that order), the node has {joint_names}')
    if problems:
        policy.close()
        raise ValueError('; '.join(problems))
    return policy, source, warnings
