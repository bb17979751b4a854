"""
DDPM and DDIM noise schedulers (epsilon prediction), written for a fixed step count.

Both precompute every per-step coefficient at construction so that a denoising step is a few
tensor ops with no Python-side recomputation; ``timesteps[k]`` is the diffusion time of
denoising step ``k`` (k = 0 is the noisiest).
"""

import math

import torch

from .config import PolicyConfig


def make_betas(num_train_timesteps: int, beta_schedule: str) -> torch.Tensor:
    """Noise variances per training step, float64."""
    if beta_schedule == 'squaredcos_cap_v2':
        def alpha_bar(t: float) -> float:
            return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        n = num_train_timesteps
        betas = [min(1 - alpha_bar((i + 1) / n) / alpha_bar(i / n), 0.999) for i in range(n)]
        return torch.tensor(betas, dtype=torch.float64)
    if beta_schedule == 'linear':
        return torch.linspace(1e-4, 0.02, num_train_timesteps, dtype=torch.float64)
    raise ValueError(f'beta_schedule must be squaredcos_cap_v2 or linear, got {beta_schedule!r}')


class NoiseScheduler:
    """Forward noising for training and reverse steps for sampling (DDPM or DDIM, eta=0)."""

    def __init__(self, config: PolicyConfig, num_inference_steps: int | None = None,
                 kind: str | None = None):
        self.kind = kind or config.scheduler
        if self.kind not in ('ddpm', 'ddim'):
            raise ValueError(f'scheduler must be one of [ddpm, ddim], got {self.kind!r}')
        self.num_train_timesteps = config.num_train_timesteps
        steps = num_inference_steps or config.num_inference_steps
        if not 1 <= steps <= self.num_train_timesteps:
            raise ValueError(
                f'num_inference_steps must be in [1, {self.num_train_timesteps}], got {steps}')
        self.num_inference_steps = steps
        self.clip_sample = config.clip_sample
        betas = make_betas(self.num_train_timesteps, config.beta_schedule)
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.alphas_cumprod = alphas_cumprod.float()
        stride = self.num_train_timesteps // steps
        self.timesteps = torch.arange(steps - 1, -1, -1, dtype=torch.long) * stride
        a_t = alphas_cumprod[self.timesteps]
        prev = self.timesteps - stride
        a_prev = torch.where(prev >= 0, alphas_cumprod[prev.clamp_min(0)],
                             torch.ones_like(a_t))
        # x0 = (x - sqrt(1 - a_t) * eps) / sqrt(a_t)
        self._x0_from_x = (1.0 / a_t.sqrt()).float()
        self._x0_from_eps = ((1.0 - a_t).sqrt() / a_t.sqrt()).float()
        if self.kind == 'ddpm':
            alpha_step = a_t / a_prev
            beta_step = 1.0 - alpha_step
            self._coef_x0 = (a_prev.sqrt() * beta_step / (1.0 - a_t)).float()
            self._coef_x = (alpha_step.sqrt() * (1.0 - a_prev) / (1.0 - a_t)).float()
            variance = ((1.0 - a_prev) / (1.0 - a_t) * beta_step).clamp_min(1e-20)
            self._sigma = torch.where(prev >= 0, variance.sqrt(), torch.zeros_like(a_t)).float()
        else:
            self._coef_x0 = a_prev.sqrt().float()
            self._coef_eps = (1.0 - a_prev).sqrt().float()
            self._sigma = torch.zeros_like(a_t).float()
            self._a_t = a_t.float()

    @property
    def needs_noise(self) -> bool:
        """Whether reverse steps inject fresh noise (DDPM)."""
        return self.kind == 'ddpm'

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor,
                  timesteps: torch.Tensor) -> torch.Tensor:
        """q(x_t | x_0) for training; timesteps index the training schedule, shape (B,)."""
        a = self.alphas_cumprod.to(x0.device)[timesteps].view(-1, *([1] * (x0.ndim - 1)))
        return a.sqrt() * x0 + (1.0 - a).sqrt() * noise

    def step(self, k: int, eps: torch.Tensor, x: torch.Tensor,
             noise: torch.Tensor | None) -> torch.Tensor:
        """One reverse step from denoising step k; ``noise`` is used by DDPM when k is not last."""
        x0 = x * float(self._x0_from_x[k]) - eps * float(self._x0_from_eps[k])
        if self.clip_sample:
            x0 = x0.clamp(-1.0, 1.0)
        if self.kind == 'ddpm':
            out = x0 * float(self._coef_x0[k]) + x * float(self._coef_x[k])
            sigma = float(self._sigma[k])
            if sigma > 0.0:
                if noise is None:
                    raise ValueError(f'DDPM step {k} needs noise, got None')
                out = out + sigma * noise
            return out
        a_t = float(self._a_t[k])
        eps_used = (x - math.sqrt(a_t) * x0) / math.sqrt(1.0 - a_t)
        return x0 * float(self._coef_x0[k]) + eps_used * float(self._coef_eps[k])
