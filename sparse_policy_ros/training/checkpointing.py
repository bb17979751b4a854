"""
Resumable training state on disk: safetensors tensors + JSON, swapped in atomically.

A checkpoint is a folder ``<out>/checkpoints/latest`` holding ``model``, ``ema`` and
``optimizer`` tensors (safetensors) and ``state.json`` (step, optimizer param groups, RNG
state). It is written to a temporary folder first and renamed into place, so a kill at any
moment leaves either the previous or the new checkpoint, never a half-written one.
"""

import json
import os
from pathlib import Path
import shutil
import tempfile
from typing import Any

from safetensors.torch import load_file
import torch

from ..policy.checkpoint import write_safetensors

LATEST = 'latest'


def flatten_optimizer(
        optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state dict into flat tensors and JSON-able metadata."""
    state = optimizer.state_dict()
    tensors = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, slots in state['state'].items():
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f'{index}.{name}'] = value
            else:
                scalars.setdefault(str(index), {})[name] = value
    return tensors, {'param_groups': state['param_groups'], 'scalars': scalars}


def unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    """Inverse of :func:`flatten_optimizer`."""
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        index, name = key.split('.', 1)
        state.setdefault(int(index), {})[name] = value
    for index, slots in meta['scalars'].items():
        state.setdefault(int(index), {}).update(slots)
    return {'state': state, 'param_groups': meta['param_groups']}


def save_training_state(out: Path, model: torch.nn.Module, ema: torch.nn.Module,
                        optimizer: torch.optim.Optimizer, step: int,
                        extra: dict[str, Any]) -> Path:
    """Write the checkpoint folder atomically; returns its path."""
    root = Path(out) / 'checkpoints'
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix='.tmp-'))
    try:
        write_safetensors(tmp / 'model.safetensors', model.state_dict())
        write_safetensors(tmp / 'ema.safetensors', ema.state_dict())
        opt_tensors, opt_meta = flatten_optimizer(optimizer)
        write_safetensors(tmp / 'optimizer.safetensors', opt_tensors)
        write_safetensors(tmp / 'rng.safetensors', {'torch': torch.get_rng_state()})
        (tmp / 'state.json').write_text(json.dumps(
            {'step': step, 'optimizer': opt_meta, **extra}, indent=2))
        final = root / LATEST
        old = root / '.old'
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(tmp, final)
        if old.exists():
            shutil.rmtree(old)
        return final
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def latest_checkpoint(out: Path) -> Path | None:
    """Find the resumable checkpoint in ``out``, recovering from a kill between the two renames."""
    root = Path(out) / 'checkpoints'
    if (root / LATEST / 'state.json').is_file():
        return root / LATEST
    if (root / '.old' / 'state.json').is_file():
        return root / '.old'
    return None


def load_training_state(folder: Path, model: torch.nn.Module, ema: torch.nn.Module,
                        optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, EMA, optimizer and RNG; returns state.json's content."""
    meta = json.loads((folder / 'state.json').read_text())
    model.load_state_dict(load_file(str(folder / 'model.safetensors')))
    ema.load_state_dict(load_file(str(folder / 'ema.safetensors')))
    optimizer.load_state_dict(unflatten_optimizer(
        load_file(str(folder / 'optimizer.safetensors')), meta['optimizer']))
    torch.set_rng_state(load_file(str(folder / 'rng.safetensors'))['torch'])
    return meta
