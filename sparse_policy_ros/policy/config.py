"""Typed, self-validating configuration of the visuomotor diffusion policy."""

from dataclasses import asdict, dataclass, field, fields
import math
import types
from typing import Any, get_args, get_origin, Union

import numpy as np

ENCODER_TYPES = ('resnet18_gn', 'small_cnn', 'small_cnn_fine')
SCHEDULER_TYPES = ('ddpm', 'ddim')
BETA_SCHEDULES = ('squaredcos_cap_v2', 'linear')
PREDICTION_TYPES = ('epsilon',)
# 'identity': normalized state goes into the condition tokens as is (Diffusion Policy low-dim).
STATE_ENCODERS = ('mlp', 'identity')
# Epsilon of a DDIM step: recomputed from the clipped x0 (ours) or the network's own (diffusers).
DDIM_EPS_MODES = ('from_clipped_x0', 'raw')

POSITIVE_INT_FIELDS = ('state_dim', 'action_dim', 'horizon', 'n_obs_steps', 'n_action_steps',
                       'n_layer', 'n_head', 'n_emb', 'mlp_ratio', 'num_train_timesteps',
                       'num_inference_steps', 'image_feature_dim')
# What a field's value must be beyond its type, for the message of a wrong-typed value.
RANGE_HINTS = {**dict.fromkeys(POSITIVE_INT_FIELDS, '>= 1'), 'random_shift': '>= 0',
               'p_drop_emb': 'in [0, 1)', 'p_drop_attn': 'in [0, 1)',
               'control_hz': 'finite and > 0 (Hz)', 'image_shape': '(3, H, W)',
               'crop_shape': '(h, w)', 'encoder': f'one of {list(ENCODER_TYPES)}',
               'scheduler': f'one of {list(SCHEDULER_TYPES)}',
               'beta_schedule': f'one of {list(BETA_SCHEDULES)}',
               'prediction_type': f'one of {list(PREDICTION_TYPES)}',
               'state_encoder': f'one of {list(STATE_ENCODERS)}',
               'ddim_eps': f'one of {list(DDIM_EPS_MODES)}'}


@dataclass
class PolicyConfig:
    """
    Everything needed to rebuild the policy; stored as JSON next to the weights.

    Timeline of one policy call (n_obs_steps=2, horizon=16, n_action_steps=8)::

        observed:  |o|o|
        predicted: |a|a|a|a|a|a|a|a|a|a|a|a|a|a|a|a|
        executed:    |x|x|x|x|x|x|x|x|

    The first executed action answers the latest observation (index n_obs_steps - 1).
    """

    camera_names: tuple[str, ...] = ('front',)  # one RGB image per camera per observation step
    image_shape: tuple[int, int, int] = (3, 96, 96)  # (C, H, W) of incoming camera images
    crop_shape: tuple[int, int] | None = (84, 84)  # random crop in training, center crop at test
    random_shift: int = 0  # training only: shift images by up to this many px (edges replicated)
    encoder: str = 'resnet18_gn'  # one of ENCODER_TYPES
    image_feature_dim: int = 64  # per-camera feature size after spatial softmax + projection
    image_feature_relu: bool = False  # ReLU on each camera's features (robomimic's encoder)
    state_dim: int = 7  # joint positions fed to the policy
    state_encoder: str = 'mlp'  # one of STATE_ENCODERS; 'identity' allows no cameras
    action_dim: int = 7  # joint position targets produced by the policy
    horizon: int = 16  # actions predicted per call
    n_obs_steps: int = 2  # observation history length
    n_action_steps: int = 8  # actions executed per call
    n_layer: int = 8  # transformer decoder layers (3 prunable branches each)
    n_head: int = 4  # attention heads
    n_emb: int = 256  # transformer width
    mlp_ratio: int = 4  # MLP hidden width = mlp_ratio * n_emb
    p_drop_emb: float = 0.0  # dropout on embeddings (training only)
    p_drop_attn: float = 0.1  # dropout in attention and MLP (training only)
    num_train_timesteps: int = 100  # DDPM training steps
    num_inference_steps: int = 100  # denoising steps per call
    scheduler: str = 'ddpm'  # one of SCHEDULER_TYPES
    beta_schedule: str = 'squaredcos_cap_v2'  # one of BETA_SCHEDULES
    prediction_type: str = 'epsilon'  # one of PREDICTION_TYPES
    clip_sample: bool = True  # clip the predicted clean sample to [-1, 1]
    ddim_eps: str = 'from_clipped_x0'  # one of DDIM_EPS_MODES (DDIM steps only)
    control_hz: float = 10.0  # rate at which consecutive actions are meant to be executed
    extra: dict[str, Any] = field(default_factory=dict)  # free-form metadata (task, dataset)

    def __post_init__(self):
        check_field_types(self, RANGE_HINTS)
        _one_of('state_encoder', self.state_encoder, STATE_ENCODERS)
        _one_of('ddim_eps', self.ddim_eps, DDIM_EPS_MODES)
        if not self.camera_names and self.state_encoder != 'identity':
            raise ValueError(f'camera_names must name at least one camera (none only for a '
                             f"low-dim policy, state_encoder='identity'), got "
                             f'{self.camera_names!r}')
        _one_of('encoder', self.encoder, ENCODER_TYPES)
        _one_of('scheduler', self.scheduler, SCHEDULER_TYPES)
        _one_of('beta_schedule', self.beta_schedule, BETA_SCHEDULES)
        _one_of('prediction_type', self.prediction_type, PREDICTION_TYPES)
        if len(self.camera_names) != len(set(self.camera_names)):
            raise ValueError(f'camera_names must be unique, got {self.camera_names}')
        if self.image_shape[0] != 3 or min(self.image_shape) < 1:
            raise ValueError(f'image_shape must be (3, H, W), got {self.image_shape}')
        if self.crop_shape is not None and (
                min(self.crop_shape) < 1
                or self.crop_shape[0] > self.image_shape[1]
                or self.crop_shape[1] > self.image_shape[2]):
            raise ValueError(
                f'crop_shape must be (h, w) no larger than image {self.image_shape[1:]}, '
                f'got {self.crop_shape}')
        if self.random_shift < 0:
            raise ValueError(
                f'random_shift must be a non-negative int (pixels), got {self.random_shift!r}')
        for name in POSITIVE_INT_FIELDS:
            value = getattr(self, name)
            if value < 1:
                raise ValueError(f'{name} must be a positive int, got {value!r}')
        if self.n_emb % self.n_head:
            raise ValueError(f'n_emb ({self.n_emb}) must be divisible by n_head ({self.n_head})')
        if self.n_obs_steps - 1 + self.n_action_steps > self.horizon:
            raise ValueError(
                f'n_obs_steps - 1 + n_action_steps must be <= horizon ({self.horizon}), got '
                f'{self.n_obs_steps} - 1 + {self.n_action_steps}')
        if self.num_inference_steps > self.num_train_timesteps:
            raise ValueError(
                f'num_inference_steps must be <= num_train_timesteps '
                f'({self.num_train_timesteps}), got {self.num_inference_steps}')
        for name in ('p_drop_emb', 'p_drop_attn'):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ValueError(f'{name} must be a probability in [0, 1), got {value!r}')
        if not (math.isfinite(self.control_hz) and self.control_hz > 0):
            raise ValueError(f'control_hz must be a finite number > 0 (Hz), got '
                             f'{self.control_hz!r}')

    @property
    def n_branches(self) -> int:
        """Prunable residual branches: self-attention, cross-attention and MLP per layer."""
        return 3 * self.n_layer

    @property
    def memory_len(self) -> int:
        """Cross-attention memory: one time token plus one token per observation step."""
        return 1 + self.n_obs_steps

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (tuples become lists)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, tuple):
                out[key] = list(value)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> 'PolicyConfig':
        """Rebuild from ``to_dict`` output; unknown or missing keys are errors."""
        if not isinstance(data, dict):
            raise ValueError(f'policy config must be a mapping of field names to values, got '
                             f'{type(data).__name__} {data!r}')
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f'policy config has unknown keys {unknown}; this code knows {sorted(known)}')
        return cls(**data)


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f'{name} must be one of {list(allowed)}, got {value!r}')


def check_field_types(config: Any, hints: dict[str, str] | None = None) -> None:
    """
    Check every field of dataclass ``config`` against its annotation, in place.

    Raises ``ValueError`` naming the first field whose value has another type. Accepted values
    are normalised: lists become the annotated tuples, ints (and numpy scalars) in float fields
    become floats, numpy ints become ints. ``bool`` is not an int here, though Python says so:
    ``n_layer: true`` in a config file is a mistake, not 1. ``hints`` (field -> expected range)
    go into the message.
    """
    for item in fields(config):
        value = getattr(config, item.name)
        try:
            setattr(config, item.name, _conform(value, item.type))
        except _Mismatch:
            hint = (hints or {}).get(item.name)
            raise ValueError(
                f'{item.name} must be {_describe(item.type)}{f", {hint}" if hint else ""}, '
                f'got {value!r} ({type(value).__name__})') from None


class _Mismatch(Exception):
    """A value that does not have its field's annotated type (internal to _conform)."""


def _conform(value: Any, annotation: Any) -> Any:
    """Return ``value`` normalised to ``annotation``, or raise _Mismatch."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is Any:
        return value
    if annotation is type(None):
        if value is None:
            return None
        raise _Mismatch
    if origin in (Union, types.UnionType):
        for option in args:
            try:
                return _conform(value, option)
            except _Mismatch:
                continue
        raise _Mismatch
    if annotation is bool:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise _Mismatch
    if annotation is int:
        if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
            return int(value)
        raise _Mismatch
    if annotation is float:
        if isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
                value, bool):
            return float(value)
        raise _Mismatch
    if annotation is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_conform(v, args[0]) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_conform(v, a) for v, a in zip(value, args))
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch
        return [_conform(v, args[0]) for v in value] if args else list(value)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise _Mismatch
        if not args:
            return value
        return {_conform(k, args[0]): _conform(v, args[1]) for k, v in value.items()}
    raise TypeError(f'check_field_types does not know the annotation {annotation!r}')


_NAMES = {int: ('an int', 'ints'), float: ('a number', 'numbers'),
          bool: ('true or false', 'booleans'), str: ('a string', 'strings'),
          type(None): ('null', 'nulls'), Any: ('any value', 'values')}


def _describe(annotation: Any, plural: bool = False) -> str:
    """Say in words what ``annotation`` accepts: 'a list of 3 ints', 'an int'."""
    if annotation in _NAMES:
        return _NAMES[annotation][plural]
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, types.UnionType):
        return ' or '.join(_describe(a, plural) for a in args)
    lists = 'lists' if plural else 'a list'
    if origin in (tuple, list):
        if not args:
            return lists
        if origin is list or (len(args) == 2 and args[1] is Ellipsis):
            return f'{lists} of {_describe(args[0], plural=True)}'
        if len(set(args)) == 1:
            return f'{lists} of {len(args)} {_describe(args[0], plural=True)}'
        return f'{lists} [{", ".join(_describe(a) for a in args)}]'
    if origin is dict:
        maps = 'mappings' if plural else 'a mapping'
        return f'{maps} of {_describe(args[0], True)} to {_describe(args[1], True)}'
    return repr(annotation)
