"""DiffusionPolicy: normalizer + observation encoder + noise-prediction transformer."""

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from .config import PolicyConfig
from .encoders import ObservationEncoder
from .normalizer import MinMaxNormalizer
from .observation import OBS_IMAGES, OBS_STATE
from .scheduler import NoiseScheduler
from .transformer import DiffusionTransformer

ACTION = 'action'


class DiffusionPolicy(nn.Module):
    """The dense model; samplers (dense and sparse) drive it step by step."""

    def __init__(self, config: PolicyConfig):
        super().__init__()
        self.config = config
        self.normalizer = MinMaxNormalizer({OBS_STATE: config.state_dim,
                                            ACTION: config.action_dim})
        self.obs_encoder = ObservationEncoder(config)
        self.transformer = DiffusionTransformer(config, self.obs_encoder.feature_dim)
        self.train_scheduler = NoiseScheduler(config, num_inference_steps=1)

    def encode_observation(self, images: dict[str, torch.Tensor],
                           state: torch.Tensor) -> torch.Tensor:
        """uint8 images camera -> (B, T, 3, H, W) and raw state (B, T, D) -> (B, T, F)."""
        return self.obs_encoder(images, self.normalizer.normalize(OBS_STATE, state))

    def observation_to_tensors(self, images: dict[str, np.ndarray], state: np.ndarray,
                               device: torch.device) -> tuple[dict[str, torch.Tensor],
                                                              torch.Tensor]:
        """Move a validated numpy observation (T, H, W, 3) / (T, D) to batch-1 device tensors."""
        tensors = {name: torch.from_numpy(np.ascontiguousarray(images[name]))
                   .to(device, non_blocking=True).permute(0, 3, 1, 2)[None]
                   for name in self.config.camera_names}  # (1, T, 3, H, W)
        return tensors, torch.from_numpy(state).to(device)[None]  # (1, T, D)

    def forward(self, batch: dict) -> torch.Tensor:
        """Training loss of a batch (so DistributedDataParallel can wrap the policy)."""
        return self.compute_loss(batch)

    def compute_loss(self, batch: dict, generator: torch.Generator | None = None) -> torch.Tensor:
        """
        Epsilon-prediction MSE for a training batch.

        batch: ``images`` camera -> uint8 (B, T_obs, 3, H, W), ``state`` (B, T_obs, D),
        ``action`` (B, horizon, Da), all raw (unnormalized).
        """
        obs_tokens = self.encode_observation(batch[OBS_IMAGES], batch[OBS_STATE])
        actions = self.normalizer.normalize(ACTION, batch[ACTION])
        b = actions.shape[0]
        device = actions.device
        noise = torch.randn(actions.shape, generator=generator, device=device)
        timesteps = torch.randint(0, self.config.num_train_timesteps, (b,), device=device,
                                  generator=generator)
        noisy = self.train_scheduler.add_noise(actions, noise, timesteps)
        memory = self.transformer.condition(obs_tokens, timesteps)
        return F.mse_loss(self.transformer(noisy, memory), noise)
