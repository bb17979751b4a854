"""Training hyper-parameters and the config file that pairs them with a PolicyConfig."""

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from ..policy.config import PolicyConfig


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
        for name in ('steps', 'batch_size', 'val_every', 'val_batches', 'checkpoint_every'):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f'training {name} must be a positive int, got {value!r}')
        if not isinstance(self.warmup_steps, int) or self.warmup_steps < 0:
            raise ValueError(f'training warmup_steps must be an int >= 0, got '
                             f'{self.warmup_steps!r}')
        if not self.lr > 0:
            raise ValueError(f'training lr must be > 0, got {self.lr!r}')
        if not 0.0 <= self.val_ratio < 1.0:
            raise ValueError(f'training val_ratio must be in [0, 1), got {self.val_ratio!r}')


def load_run_config(path: str | Path) -> tuple[PolicyConfig, TrainConfig]:
    """Read a YAML/JSON file with ``policy:`` and ``training:`` sections."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'config file {path} does not exist')
    data = yaml.safe_load(path.read_text()) or {}
    if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a mapping with policy/training sections, got '
                         f'{type(data).__name__}')
    unknown = sorted(set(data) - {'policy', 'training'})
    if unknown:
        raise ValueError(f'{path}: unknown sections {unknown}; expected policy, training')
    train_data = data.get('training', {}) or {}
    known = {f.name for f in fields(TrainConfig)}
    bad = sorted(set(train_data) - known)
    if bad:
        raise ValueError(f'{path}: unknown training keys {bad}; known {sorted(known)}')
    return PolicyConfig.from_dict(data.get('policy', {}) or {}), TrainConfig(**train_data)


def train_config_dict(config: TrainConfig) -> dict[str, Any]:
    """JSON-friendly dict of a TrainConfig."""
    return asdict(config)
