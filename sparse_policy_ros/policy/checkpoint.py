"""
Checkpoint folders: JSON config, safetensors weights and normalization stats. No pickles.

Layout of a model folder::

    config.json          PolicyConfig.to_dict() plus a format version
    model.safetensors    DiffusionPolicy weights (normalizer excluded)
    stats.safetensors    normalization min / max per field
    pruner.json, pruner.safetensors   optional, written by sparsity.pruner
"""

import json
import logging
import os
from pathlib import Path
import tempfile
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
import torch

from .config import PolicyConfig
from .model import DiffusionPolicy

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
CONFIG_FILE = 'config.json'
WEIGHTS_FILE = 'model.safetensors'
STATS_FILE = 'stats.safetensors'


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
    try:
        with os.fdopen(fd, 'wb') as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: Path, data: Any) -> None:
    """Atomically write pretty JSON."""
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + '\n').encode())


def read_json(path: Path) -> Any:
    """Read JSON with clear errors, naming the file, for a missing or unparsable one."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'expected JSON file {path}, which does not exist')
    try:
        return json.loads(path.read_text())
    except UnicodeDecodeError as error:
        raise ValueError(f'{path}: expected a UTF-8 JSON file, got undecodable bytes '
                         f'({error})') from error
    except json.JSONDecodeError as error:
        raise ValueError(f'{path}: expected valid JSON, got a parse error at line '
                         f'{error.lineno} column {error.colno}: {error.msg} (a truncated or '
                         f'hand-edited file?)') from error


def read_safetensors(path: Path, device: str = 'cpu') -> dict[str, torch.Tensor]:
    """Load a safetensors file; a missing, truncated or foreign file is an error naming it."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'expected safetensors file {path}, which does not exist')
    try:
        return load_file(str(path), device=device)
    except SafetensorError as error:
        raise ValueError(
            f'{path}: expected a complete safetensors file, could not read it ({error}); '
            f'it is {path.stat().st_size} bytes: truncated, still being written, or not '
            f'safetensors') from error


def check_finite_tensors(tensors: dict[str, torch.Tensor], what: str) -> None:
    """Raise ValueError naming every floating-point tensor of ``what`` with NaN or inf values."""
    bad = []
    for key in sorted(tensors):
        value = tensors[key]
        if value.is_floating_point():
            count = int((~torch.isfinite(value)).sum())
            if count:
                bad.append(f'{key}: {count} of {value.numel()}')
    if bad:
        raise ValueError(
            f'{what}: found non-finite weights (NaN or inf) in {len(bad)} tensors: '
            f'{", ".join(bad[:5])}{" ..." if len(bad) > 5 else ""}; expected finite values '
            f'(did training diverge, or is the file corrupt?)')


def write_safetensors(path: Path, tensors: dict[str, torch.Tensor],
                      metadata: dict[str, str] | None = None) -> None:
    """Atomically write contiguous CPU tensors in safetensors format."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.')
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp,
                  metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_state_strict(module: torch.nn.Module, tensors: dict[str, torch.Tensor],
                      what: str) -> None:
    """load_state_dict that names missing, unexpected and mis-shaped tensors."""
    own = module.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = [f'{k}: expected {tuple(own[k].shape)}, got {tuple(tensors[k].shape)}'
              for k in sorted(set(own) & set(tensors)) if own[k].shape != tensors[k].shape]
    if missing or unexpected or shapes:
        raise ValueError(
            f'{what} does not match the model built from its config: missing {missing[:5]}'
            f'{"..." if len(missing) > 5 else ""}, unexpected {unexpected[:5]}'
            f'{"..." if len(unexpected) > 5 else ""}, shape mismatches {shapes[:5]}')
    module.load_state_dict(tensors, strict=True)


def save_policy(model: DiffusionPolicy, folder: str | os.PathLike,
                extra: dict[str, Any] | None = None) -> Path:
    """Write config, weights and stats of ``model`` into ``folder`` (created if needed)."""
    if not model.normalizer.fitted:
        raise ValueError('refusing to save a policy whose normalizer has no stats')
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = {k: v for k, v in model.state_dict().items() if not k.startswith('normalizer.')}
    write_safetensors(folder / WEIGHTS_FILE, weights)
    write_safetensors(folder / STATS_FILE, model.normalizer.stats_tensors())
    write_json(folder / CONFIG_FILE, {'format_version': FORMAT_VERSION,
                                      'policy': model.config.to_dict(), **(extra or {})})
    return folder


def load_config(folder: str | os.PathLike) -> PolicyConfig:
    """Read and validate ``config.json`` of a model folder."""
    path = Path(folder) / CONFIG_FILE
    data = read_json(path)
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a JSON object with format_version and policy, got '
                         f'{type(data).__name__}')
    version = data.get('format_version')
    if version != FORMAT_VERSION:
        raise ValueError(
            f'{path}: format_version must be {FORMAT_VERSION}, got {version!r}')
    if 'policy' not in data:
        raise ValueError(f'{path} has no "policy" section')
    try:
        return PolicyConfig.from_dict(data['policy'])
    except ValueError as error:
        raise ValueError(f'{path}: policy.{error}' if _names_a_field(error)
                         else f'{path}: {error}') from error


def _names_a_field(error: ValueError) -> bool:
    """Whether PolicyConfig's message starts with a field name (then 'policy.<field>' reads)."""
    return str(error).split(' ', 1)[0] in PolicyConfig.__dataclass_fields__


def load_policy(folder: str | os.PathLike, map_location: str = 'cpu') -> DiffusionPolicy:
    """Rebuild a DiffusionPolicy from a model folder; every mismatch is a clear error."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f'model folder {folder} does not exist')
    config = load_config(folder)
    model = DiffusionPolicy(config)
    for name in (WEIGHTS_FILE, STATS_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f'model folder {folder} lacks {name}; a policy needs {CONFIG_FILE}, '
                f'{WEIGHTS_FILE} and {STATS_FILE}')
    weights = read_safetensors(folder / WEIGHTS_FILE, device=map_location)
    check_finite_tensors(weights, str(folder / WEIGHTS_FILE))
    # The normalizer's buffers come from stats.safetensors, not from the weights file.
    state = {k: v for k, v in model.state_dict().items() if k.startswith('normalizer.')}
    state.update(weights)
    load_state_strict(model, state, str(folder / WEIGHTS_FILE))
    stats = read_safetensors(folder / STATS_FILE)
    try:
        model.normalizer.load_stats_tensors(stats)
    except ValueError as error:
        raise ValueError(f'{folder / STATS_FILE}: {error}') from error
    model.eval()
    logger.info('loaded policy from %s', folder)
    return model
