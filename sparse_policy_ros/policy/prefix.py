"""
Prefix-conditioned sampling: leading rows of a chunk fixed to actions already committed.

When a policy replans while an earlier chunk is executing, the actions that run before the new
chunk can take over (and any further ones the caller wants to keep) are known. The sampler
imposes them by replacement (inpainting): before every denoising step ``k`` the fixed rows of
the sample are overwritten with the known actions noised to that step's level,
``sqrt(a_k) a + sqrt(1 - a_k) e`` (``a_k`` the cumulative alpha of the step's timestep, ``e``
the call's initial noise in those rows), and after the last step with the actions themselves.
The free rows are denoised by the network, which sees the fixed rows through self-attention,
so they continue the committed motion instead of starting an independent sample. Costs no
network evaluation (one small copy per step).

``until`` (fraction of the denoising steps) weakens the constraint: the rows are imposed during
the first ``round(until * K)`` steps only, so the noisy steps, which choose the mode of the
motion, follow the committed actions and the late steps are free to correct details. With
``until = 1`` the returned rows equal the given actions (up to float32 rounding of the
normalizer's round trip).
"""

from dataclasses import dataclass

import numpy as np
import torch

from .scheduler import NoiseScheduler


@dataclass(frozen=True)
class ActionPrefix:
    """Chunk rows ``start .. start + len(actions) - 1`` fixed to ``actions`` (joint units)."""

    actions: np.ndarray  # (P, action_dim), unnormalized like the policy's output
    start: int = 0  # first fixed row of the chunk (row 0 answers the oldest observation)
    until: float = 1.0  # fraction of the denoising steps during which the rows are imposed

    def checked(self, horizon: int, action_dim: int) -> 'ActionPrefix':
        """Return this prefix with float32 actions; ValueError naming the bad field otherwise."""
        actions = np.asarray(self.actions)
        if actions.ndim != 2 or actions.shape[1] != action_dim or actions.shape[0] < 1:
            raise ValueError(f'prefix.actions must have shape (P >= 1, {action_dim}), got '
                             f'{actions.shape}')
        if not np.issubdtype(actions.dtype, np.number) or not np.all(np.isfinite(actions)):
            raise ValueError('prefix.actions must be finite numbers')
        if (isinstance(self.start, bool) or not isinstance(self.start, (int, np.integer))
                or self.start < 0):
            raise ValueError(f'prefix.start must be an int >= 0, got {self.start!r}')
        if self.start + actions.shape[0] > horizon:
            raise ValueError(f'prefix rows {self.start}..{self.start + actions.shape[0] - 1} '
                             f'exceed the horizon of {horizon} rows')
        if not isinstance(self.until, (int, float)) or not 0.0 < self.until <= 1.0:
            raise ValueError(f'prefix.until must be in (0, 1], got {self.until!r}')
        return ActionPrefix(actions.astype(np.float32), int(self.start), float(self.until))


class PrefixCondition:
    """The fixed rows at every noise level of one call, ready to be written into the sample."""

    def __init__(self, levels: list[torch.Tensor], start: int, until: int):
        self.levels = levels  # K + 1 tensors (B, P, Da): before step k, and the clean rows
        self.start = start
        self.stop = start + levels[0].shape[1]
        self.until = until  # imposed before steps k < until (and after the last if until == K)

    @classmethod
    def build(cls, normalized: torch.Tensor, start: int, until: float,
              scheduler: NoiseScheduler, initial_noise: torch.Tensor) -> 'PrefixCondition':
        """
        Precompute the noised rows for every step of ``scheduler``.

        ``normalized``: (B, P, Da) actions in the model's normalized space; ``initial_noise``:
        the call's (B, T, Da) initial noise, whose rows noise the prefix.
        """
        steps = scheduler.num_inference_steps
        stop = start + normalized.shape[1]
        eps = initial_noise[:, start:stop]
        alphas = scheduler.alphas_cumprod.to(normalized.device)[scheduler.timesteps]
        alphas = alphas.view(-1, *([1] * normalized.ndim))
        # Every step's level in two broadcast ops (this runs once per call, on the hot path).
        noised = alphas.sqrt() * normalized + (1.0 - alphas).sqrt() * eps
        return cls([*noised.unbind(0), normalized], start,
                   max(1, min(steps, round(until * steps))))

    @property
    def hard(self) -> bool:
        """Whether the rows are imposed at every step, so the result holds them exactly."""
        return self.until == len(self.levels) - 1

    def apply(self, k: int, x: torch.Tensor) -> None:
        """Write the rows for the sample before step ``k`` (``k == K``: the result) into ``x``."""
        if k < self.until or (k == len(self.levels) - 1 and self.hard):
            x[:, self.start:self.stop] = self.levels[k]
