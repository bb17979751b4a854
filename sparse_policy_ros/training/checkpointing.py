"""
Resumable training state on disk: safetensors tensors + JSON, swapped in atomically.

A checkpoint is a folder ``<out>/checkpoints/latest`` holding ``model``, ``ema`` and
``optimizer`` tensors (safetensors) and ``state.json`` (step, optimizer param groups, RNG
state). It is written to a temporary folder first and renamed into place, so a kill at any
moment leaves either the previous or the new checkpoint, never a half-written one. A kill
leaves the temporary folder (``checkpoints/.tmp-*``) behind, and the atomic writes of the model
folder their temporary files (``.model.safetensors.*``); :func:`remove_stale_temporaries` clears
them when a run starts.
"""

import json
import logging
import os
from pathlib import Path
import shutil
import tempfile
from typing import Any

import torch

from ..policy.checkpoint import (CONFIG_FILE, read_json, read_safetensors, STATS_FILE,
                                 WEIGHTS_FILE, write_safetensors)

logger = logging.getLogger(__name__)

LATEST = 'latest'
TMP_PREFIX = '.tmp-'


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
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=TMP_PREFIX))
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


def remove_stale_temporaries(out: Path) -> list[Path]:
    """
    Delete what killed writes left in ``out``; returns (and logs) the removed paths.

    That is ``checkpoints/.tmp-*`` folders and the model folder's ``.<file>.*`` temporaries of
    the atomic writes. Completed checkpoints (``latest``, and ``.old`` which may be the only
    one after a kill between the two renames) are never touched. Call it before the run writes
    anything: one writer per output folder.
    """
    out = Path(out)
    stale = []
    root = out / 'checkpoints'
    if root.is_dir():
        stale += sorted(p for p in root.iterdir()
                        if p.name.startswith(TMP_PREFIX) and p.is_dir() and not p.is_symlink())
    if out.is_dir():
        prefixes = tuple(f'.{name}.' for name in (CONFIG_FILE, WEIGHTS_FILE, STATS_FILE))
        stale += sorted(p for p in out.iterdir()
                        if p.name.startswith(prefixes) and p.is_file() and not p.is_symlink())
    for path in stale:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        logger.warning('removed %s, left by an interrupted checkpoint write', path)
    return stale


def load_training_state(folder: Path, model: torch.nn.Module, ema: torch.nn.Module,
                        optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore model, EMA, optimizer and RNG; returns state.json's content."""
    folder = Path(folder)
    meta = read_json(folder / 'state.json')
    model.load_state_dict(read_safetensors(folder / 'model.safetensors'))
    ema.load_state_dict(read_safetensors(folder / 'ema.safetensors'))
    optimizer.load_state_dict(unflatten_optimizer(
        read_safetensors(folder / 'optimizer.safetensors'), meta['optimizer']))
    torch.set_rng_state(read_safetensors(folder / 'rng.safetensors')['torch'])
    return meta
