"""Training hyper-parameters and the config file that pairs them with a PolicyConfig."""

from dataclasses import asdict, dataclass, field, fields
import math
from pathlib import Path
from typing import Any

import yaml

from ..policy.config import check_field_types, PolicyConfig

# Beyond its type, what a training setting must be (for the message of a wrong-typed value).
RANGE_HINTS = {'steps': '>= 1', 'batch_size': '>= 1', 'val_every': '>= 1',
               'val_batches': '>= 1', 'checkpoint_every': '>= 1', 'warmup_steps': '>= 0',
               'lr': 'finite and > 0 (YAML reads 1e-4 as a string: write 1.0e-4)',
               'weight_decay': 'finite and >= 0', 'val_ratio': 'in [0, 1)',
               'ema_power': 'finite and > 0', 'ema_max': 'in [0, 1]'}


@dataclass
class TrainConfig:
    """Dense policy training settings."""

    steps: int = 20000  # optimizer steps in total
    batch_size: int = 64  # per process
    lr: float = 1e-4  # peak AdamW learning rate
    weight_decay: float = 1e-3  # AdamW weight decay
    warmup_steps: int = 500  # linear warm-up before the cosine decay
    ema_power: float = 0.75  # EMA decay = 1 - (1 + step) ** -power, capped at ema_max
    ema_max: float = 0.9999  # upper bound of the EMA decay
    val_ratio: float = 0.1  # fraction of episodes held out for validation
    val_every: int = 1000  # steps between validation passes
    val_batches: int = 8  # batches per validation pass
    checkpoint_every: int = 1000  # steps between atomic checkpoints
    seed: int = 0  # data order, initialization and noise
    image_keys: dict[str, str] = field(default_factory=lambda: {'front': 'img'})  # camera->key
    state_key: str = 'state'  # data/<key> holding joint positions
    action_key: str = 'action'  # data/<key> holding actions

    def __post_init__(self):
        try:
            check_field_types(self, RANGE_HINTS)
        except ValueError as error:
            raise ValueError(f'training {error}') from None
        for name in ('steps', 'batch_size', 'val_every', 'val_batches', 'checkpoint_every'):
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f'training {name} must be a positive int, got {value!r}')
        if self.warmup_steps < 0:
            raise ValueError(f'training warmup_steps must be an int >= 0, got '
                             f'{self.warmup_steps!r}')
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f'training lr must be finite and > 0, got {self.lr!r}')
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f'training weight_decay must be finite and >= 0, got '
                             f'{self.weight_decay!r}')
        if not (math.isfinite(self.ema_power) and self.ema_power > 0):
            raise ValueError(f'training ema_power must be finite and > 0, got '
                             f'{self.ema_power!r}')
        if not 0.0 <= self.ema_max <= 1.0:
            raise ValueError(f'training ema_max must be in [0, 1], got {self.ema_max!r}')
        if not 0.0 <= self.val_ratio < 1.0:
            raise ValueError(f'training val_ratio must be in [0, 1), got {self.val_ratio!r}')


def load_run_config(path: str | Path) -> tuple[PolicyConfig, TrainConfig]:
    """Read a YAML/JSON file with ``policy:`` and ``training:`` sections."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'config file {path} does not exist')
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as error:
        raise ValueError(f'{path}: expected YAML or JSON with policy/training sections, got a '
                         f'parse error: {error}') from error
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a mapping with policy/training sections, got '
                         f'{type(data).__name__}')
    unknown = sorted(set(data) - {'policy', 'training'})
    if unknown:
        raise ValueError(f'{path}: unknown sections {unknown}; expected policy, training')
    train_data = data.get('training', {}) or {}
    if not isinstance(train_data, dict):
        raise ValueError(f'{path}: the training section must be a mapping, got '
                         f'{type(train_data).__name__}')
    known = {f.name for f in fields(TrainConfig)}
    bad = sorted(set(train_data) - known)
    if bad:
        raise ValueError(f'{path}: unknown training keys {bad}; known {sorted(known)}')
    try:
        policy = PolicyConfig.from_dict(data.get('policy', {}) or {})
    except ValueError as error:
        raise ValueError(f'{path}: policy section: {error}') from error
    try:
        training = TrainConfig(**train_data)
    except ValueError as error:
        raise ValueError(f'{path}: {error}') from error
    return policy, training


def train_config_dict(config: TrainConfig) -> dict[str, Any]:
    """JSON-friendly dict of a TrainConfig."""
    return asdict(config)
