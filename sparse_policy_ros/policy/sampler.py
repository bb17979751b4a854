"""
Dense sampling: every branch computed at every denoising step.

The sparse sampler uses the same primitives in the same order, so with all decisions set to
compute it reproduces these actions bit for bit.
"""

import torch

from .model import ACTION, DiffusionPolicy
from .scheduler import NoiseScheduler


class SamplingNoise:
    """All randomness of one call, drawn up front from a CPU generator (device independent)."""

    def __init__(self, initial: torch.Tensor, per_step: torch.Tensor | None):
        self.initial = initial  # (B, T, Da)
        self.per_step = per_step  # (K, B, T, Da) or None for deterministic schedulers

    @classmethod
    def draw(cls, scheduler: NoiseScheduler, shape: tuple[int, ...], device: torch.device,
             generator: torch.Generator | None = None) -> 'SamplingNoise':
        """Draw initial noise and, for DDPM, one noise tensor per step."""
        initial = torch.randn(shape, generator=generator)
        per_step = None
        if scheduler.needs_noise:
            per_step = torch.randn((scheduler.num_inference_steps, *shape), generator=generator)
            per_step = per_step.to(device, non_blocking=True)
        return cls(initial.to(device, non_blocking=True), per_step)

    def continued(self, steps: int, fresh: 'SamplingNoise') -> 'SamplingNoise':
        """
        Return the noise of a call ``steps`` control steps later that keeps this call's.

        Streaming: token ``r`` of the next call plans the step token ``r + steps`` of this call
        planned, so its initial noise is this call's moved ``steps`` rows earlier; the rows no
        earlier call planned, and any per-step noise, come from ``fresh`` (a new draw of the
        same shapes). ``steps = 0`` repeats this call's initial noise.
        """
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
            raise ValueError(f'noise shift must be an int >= 0 (control steps), got {steps!r}')
        if tuple(fresh.initial.shape) != tuple(self.initial.shape):
            raise ValueError(f'fresh noise must have shape {tuple(self.initial.shape)}, got '
                             f'{tuple(fresh.initial.shape)}')
        initial = fresh.initial.clone()
        kept = self.initial.shape[1] - steps
        if kept > 0:
            initial[:, :kept] = self.initial[:, steps:].to(initial.device)
        return SamplingNoise(initial, fresh.per_step)

    def at(self, k: int) -> torch.Tensor | None:
        """Noise injected after denoising step k."""
        return None if self.per_step is None else self.per_step[k]

    def validate(self, scheduler: NoiseScheduler, shape: tuple[int, ...]) -> None:
        """
        Raise ValueError unless this noise is what ``draw(scheduler, shape)`` would give.

        Shapes and dtype (values and device are the caller's): ``initial`` is ``shape``;
        ``per_step`` is ``(K, *shape)`` for a DDPM scheduler of K steps and None for DDIM, whose
        steps inject nothing (a DDPM draw handed to a DDIM call is refused rather than silently
        half used); both in the default dtype, as drawn.
        """
        def described(value) -> str:
            if isinstance(value, torch.Tensor):
                return f'shape {tuple(value.shape)}'
            return 'None' if value is None else type(value).__name__

        shape = tuple(shape)
        if not isinstance(self.initial, torch.Tensor) or tuple(self.initial.shape) != shape:
            raise ValueError(f'noise.initial must have shape {shape}, got '
                             f'{described(self.initial)}')
        # draw() gives the default dtype (float32); another would fail inside the denoiser.
        dtype = torch.get_default_dtype()
        if self.initial.dtype != dtype:
            raise ValueError(f'noise.initial must be {dtype}, got {self.initial.dtype}')
        if not scheduler.needs_noise:
            if self.per_step is not None:
                raise ValueError(
                    f'noise.per_step must be None for a {scheduler.kind} scheduler (no noise '
                    f'is injected between steps), got {described(self.per_step)}')
            return
        expected = (scheduler.num_inference_steps, *shape)
        if not isinstance(self.per_step, torch.Tensor) or tuple(self.per_step.shape) != expected:
            raise ValueError(
                f'noise.per_step must have shape {expected} (one draw per step of this '
                f'{scheduler.num_inference_steps}-step {scheduler.kind} scheduler), got '
                f'{described(self.per_step)}')
        if self.per_step.dtype != dtype:
            raise ValueError(f'noise.per_step must be {dtype}, got {self.per_step.dtype}')


def time_memory_for(model: DiffusionPolicy, scheduler: NoiseScheduler,
                    device: torch.device) -> torch.Tensor:
    """Encode the time token of every denoising step: (K, 1, E)."""
    return model.transformer.condition_time(scheduler.timesteps.to(device))


def condition_all_steps(model: DiffusionPolicy, obs_tokens: torch.Tensor,
                        scheduler: NoiseScheduler,
                        time_memory: torch.Tensor | None = None) -> torch.Tensor:
    """
    Conditioning memory for every denoising step in one batch: (K, B, L, E).

    ``time_memory`` (from :func:`time_memory_for`) depends only on the weights and the steps,
    so a frozen policy can compute it once and pass it in; computed here when None.
    """
    if time_memory is None:
        time_memory = time_memory_for(model, scheduler, obs_tokens.device)
    return model.transformer.condition_steps(obs_tokens, time_memory)


def sample_dense(model: DiffusionPolicy, memory: torch.Tensor, scheduler: NoiseScheduler,
                 noise: SamplingNoise,
                 cross_kv: list[torch.Tensor] | None = None) -> torch.Tensor:
    """
    Run all K steps densely; returns unnormalized actions (B, T, Da).

    ``cross_kv``: the memory's cross-attention keys/values precomputed per branch
    (``DiffusionTransformer.cross_kv_steps``); projected at every step when None.
    """
    net = model.transformer
    x = noise.initial
    for k in range(scheduler.num_inference_steps):
        h = net.embed_actions(x)
        for index in range(len(net.branches)):
            h = h + net.branch(index, h, memory[k], cross_kv, k)
        x = scheduler.step(k, net.output(h), x, noise.at(k))
    return model.normalizer.unnormalize(ACTION, x)
