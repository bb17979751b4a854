"""Typed, self-validating configuration of the visuomotor diffusion policy."""

from dataclasses import asdict, dataclass, field, fields
from typing import Any

ENCODER_TYPES = ('resnet18_gn', 'small_cnn', 'small_cnn_fine')
SCHEDULER_TYPES = ('ddpm', 'ddim')
BETA_SCHEDULES = ('squaredcos_cap_v2', 'linear')
PREDICTION_TYPES = ('epsilon',)


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
    state_dim: int = 7  # joint positions fed to the policy
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
    control_hz: float = 10.0  # rate at which consecutive actions are meant to be executed
    extra: dict[str, Any] = field(default_factory=dict)  # free-form metadata (task, dataset)

    def __post_init__(self):
        self.camera_names = tuple(self.camera_names)
        self.image_shape = tuple(self.image_shape)
        if self.crop_shape is not None:
            self.crop_shape = tuple(self.crop_shape)
        _one_of('encoder', self.encoder, ENCODER_TYPES)
        _one_of('scheduler', self.scheduler, SCHEDULER_TYPES)
        _one_of('beta_schedule', self.beta_schedule, BETA_SCHEDULES)
        _one_of('prediction_type', self.prediction_type, PREDICTION_TYPES)
        if len(self.camera_names) != len(set(self.camera_names)):
            raise ValueError(f'camera_names must be unique, got {self.camera_names}')
        if len(self.image_shape) != 3 or self.image_shape[0] != 3:
            raise ValueError(f'image_shape must be (3, H, W), got {self.image_shape}')
        if self.crop_shape is not None and (
                len(self.crop_shape) != 2
                or self.crop_shape[0] > self.image_shape[1]
                or self.crop_shape[1] > self.image_shape[2]):
            raise ValueError(
                f'crop_shape must be (h, w) no larger than image {self.image_shape[1:]}, '
                f'got {self.crop_shape}')
        if not isinstance(self.random_shift, int) or self.random_shift < 0:
            raise ValueError(
                f'random_shift must be a non-negative int (pixels), got {self.random_shift!r}')
        for name in ('state_dim', 'action_dim', 'horizon', 'n_obs_steps', 'n_action_steps',
                     'n_layer', 'n_head', 'n_emb', 'mlp_ratio', 'num_train_timesteps',
                     'num_inference_steps', 'image_feature_dim'):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
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
        if not self.control_hz > 0:
            raise ValueError(f'control_hz must be > 0, got {self.control_hz}')

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
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(
                f'policy config has unknown keys {unknown}; this code knows {sorted(known)}')
        return cls(**data)


def _one_of(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f'{name} must be one of {list(allowed)}, got {value!r}')
