"""
Warm start: begin a call's denoising from the previous plan, re-noised to an intermediate level.

When a policy replans a control step or two after its last call, that call's plan (shifted by
the elapsed steps) is already a good guess of the new chunk. Instead of denoising from pure
noise, the call noises the guess to the level of denoising step ``start``,
``sqrt(a_s) x0 + sqrt(1 - a_s) e`` (``a_s`` the cumulative alpha of that step's timestep, ``e``
the call's initial noise), and runs only steps ``start .. K - 1``: ``start / K`` of the network
evaluations are saved, and the noisy steps that would pick a new mode of the motion are the
ones skipped, so consecutive chunks stay in one mode (SDEdit-style; issue 21's third
consistency method beside prefix inpainting and temporal ensembling). ``start = 0`` is an
ordinary call (the guess is noised to the first step's level, where it is nearly forgotten).
"""

from dataclasses import dataclass

import numpy as np
import torch

from .scheduler import NoiseScheduler


@dataclass(frozen=True)
class WarmStart:
    """Every chunk row's guess (joint units) and the denoising step sampling starts from."""

    actions: np.ndarray  # (horizon, action_dim), unnormalized like the policy's output
    start: int  # first denoising step that runs; steps 0 .. start - 1 are skipped

    def checked(self, horizon: int, action_dim: int, steps: int) -> 'WarmStart':
        """Return this warm start with float32 actions; ValueError naming the bad field."""
        actions = np.asarray(self.actions)
        if actions.shape != (horizon, action_dim):
            raise ValueError(f'warm.actions must have shape ({horizon}, {action_dim}), got '
                             f'{actions.shape}')
        if not np.issubdtype(actions.dtype, np.number) or not np.all(np.isfinite(actions)):
            raise ValueError('warm.actions must be finite numbers')
        if (isinstance(self.start, bool) or not isinstance(self.start, (int, np.integer))
                or not 0 <= self.start < steps):
            raise ValueError(f'warm.start must be an int in [0, {steps - 1}] (a denoising step '
                             f'of {steps}), got {self.start!r}')
        return WarmStart(actions.astype(np.float32), int(self.start))


def warm_start_step(steps: int, skipped: float) -> int:
    """Return the first step that runs when the fraction ``skipped`` of ``steps`` is skipped."""
    if not 0.0 <= skipped < 1.0:
        raise ValueError(f'warm-start fraction must be in [0, 1), got {skipped!r}')
    return min(steps - 1, int(round(skipped * steps)))


def noised_guess(normalized: torch.Tensor, initial_noise: torch.Tensor,
                 scheduler: NoiseScheduler, start: int) -> torch.Tensor:
    """Return the sample entering step ``start``: the guess (B, T, Da) noised to its level."""
    t = scheduler.timesteps[start]
    alpha = scheduler.alphas_cumprod.to(normalized.device)[t]
    return alpha.sqrt() * normalized + (1.0 - alpha).sqrt() * initial_noise
