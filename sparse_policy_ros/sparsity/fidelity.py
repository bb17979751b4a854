"""
Online fidelity: how far sparse actions drift from a higher-budget reference, and what to do.

Now and then, on spare cycles, the node runs a *reference* policy (dense, or a larger static
budget on slow hardware) on the observation and noise of a chunk it has just published and
feeds the deviation to a :class:`FidelityMonitor`::

    reference = reference_policy(primary)                     # shares the weights
    chunk = primary.predict(obs)                               # published
    if has_slack(seconds_until_next_inference, latency.estimate):
        ref = run_reference(reference, obs, chunk)             # the same x_T (and step noise)
        deviation = action_deviation(chunk, ref)               # action units (rad)
        latency.add(ref.stats.total_ms / 1e3)
        state = monitor.update(deviation.max_abs)              # ok | warn | fallback

"Same noise" (:func:`replay_noise`): the reference starts from the chunk's x_T. When the two
schedulers have the same kind and step count (a dense or lower-sparsity static reference of a
pruner or static primary), the per-step DDPM noise is shared too, so the deviation is the sparsity
error alone. A reference with another step count (a fewer-step DDIM primary or reference) can
share only x_T: DDIM injects nothing after it, and when the reference is DDPM its per-step noise
is drawn from a generator seeded by a hash of x_T, so the reference answer is still a function of
(observation, chunk noise); the deviation then also holds the sampler's own noise.

Everything here but :func:`reference_policy` and :func:`run_reference` is pure.
"""

from collections import deque
from dataclasses import dataclass, field
from enum import Enum
import hashlib
import math
import numbers

import numpy as np
import torch

from .sparse_policy import ActionChunk, SparsePolicy
from ..policy.sampler import SamplingNoise

REFERENCE_MODES = ('dense', 'fixed', 'fora', 'ddim')


def _is_real(value) -> bool:
    # numbers.Real takes numpy floats and ints (np.float32 from a reduction) but not bools.
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def _finite(name: str, value, minimum: float, strict: bool = False) -> float:
    """Return ``value`` as a float; ValueError unless it is a finite real >= (>) ``minimum``."""
    if not _is_real(value) or not math.isfinite(value) or value < minimum \
            or (strict and value == minimum):
        raise ValueError(f'{name} must be a finite number {">" if strict else ">="} {minimum}, '
                         f'got {value!r}')
    return float(value)


def _count(name: str, value) -> int:
    """Return ``value`` as an int; ValueError unless it is an integer >= 1."""
    if not isinstance(value, numbers.Integral) or isinstance(value, (bool, np.bool_)) \
            or value < 1:
        raise ValueError(f'{name} must be an int >= 1, got {value!r}')
    return int(value)


def reference_policy(primary: SparsePolicy, mode: str = 'dense',
                     target_sparsity: float | None = None, warmup: bool = True,
                     seed: int = 0) -> SparsePolicy:
    """
    Build a static-mode policy on the primary's model: the same weights, its own RolloutCache.

    ``mode`` is 'dense' (no target) or a static budget ('fixed', 'fora', 'ddim' with a
    ``target_sparsity`` lower than the primary's, for hardware too slow for dense). The
    reference uses the primary's nominal step count, device, CUDA-graph and int8 settings: the
    frozen view lives on the shared model (``DiffusionTransformer.freeze``), and a policy built
    with another int8 setting would replace it under the primary. Building it re-freezes that
    view with the same setting, which computes the same bits (int8 quantization is
    deterministic); build it before the primary's inference thread starts.

    A static (non-dense) reference's answer also depends on its own rollout cache, filled by
    its previous call: reset it whenever the primary is reset (a new episode).
    """
    if not isinstance(primary, SparsePolicy):
        raise TypeError(f'primary must be a SparsePolicy, got {type(primary).__name__}')
    if primary.model is None:
        raise ValueError('primary policy is closed (model is None)')
    if mode not in REFERENCE_MODES:
        raise ValueError(f'reference mode must be one of {list(REFERENCE_MODES)}, got {mode!r}')
    if mode == 'dense' and target_sparsity is not None:
        raise ValueError(f"reference mode 'dense' takes no target_sparsity, got {target_sparsity}")
    if (mode != 'dense' and target_sparsity is not None
            and primary.target_sparsity is not None
            and target_sparsity >= primary.target_sparsity):
        raise ValueError(
            "reference target_sparsity must be lower than the primary's "
            f'({primary.target_sparsity}), got {target_sparsity}')
    net = primary.model.transformer
    # The shared view's int8 setting must still be the primary's: another policy built on the
    # model with a different setting has already changed what the primary computes.
    view_int8 = net.frozen and net._frozen.int8_linears
    if view_int8 != primary.int8_linears:
        raise ValueError(
            f"the model's frozen view has int8_linears={view_int8} but the primary was built "
            f'with int8_linears={primary.int8_linears}: another policy on the same model changed '
            f'it; rebuild the primary')
    return SparsePolicy(primary.model, None, mode=mode, target_sparsity=target_sparsity,
                        num_inference_steps=primary.nominal_steps, device=primary.device,
                        warmup=warmup, seed=seed, cuda_graphs=primary._graphed is not None,
                        freeze=net.frozen, int8_linears=primary.int8_linears)


def replay_noise(noise: SamplingNoise, policy: SparsePolicy) -> SamplingNoise:
    """
    Return the chunk's noise as ``policy`` can replay it (see the module docstring).

    Returned as is when it fits ``policy``'s scheduler; otherwise x_T is kept and per-step
    noise is dropped (DDIM) or drawn from a generator seeded by a hash of x_T (DDPM).
    """
    if not isinstance(noise, SamplingNoise):
        raise TypeError(f'noise must be a SamplingNoise, got {type(noise).__name__}')
    scheduler = policy.scheduler
    shape = (1, policy.config.horizon, policy.config.action_dim)
    if not isinstance(noise.initial, torch.Tensor) or tuple(noise.initial.shape) != shape:
        got = (tuple(noise.initial.shape) if isinstance(noise.initial, torch.Tensor)
               else type(noise.initial).__name__)
        raise ValueError(f'noise.initial must have shape {shape}, got {got}')
    steps = scheduler.num_inference_steps
    if not scheduler.needs_noise:
        return noise if noise.per_step is None else SamplingNoise(noise.initial, None)
    if isinstance(noise.per_step, torch.Tensor) and noise.per_step.shape[0] == steps:
        return noise  # the same K-step DDPM draw (predict validates the rest of its shape)
    x_t = noise.initial.detach().cpu().contiguous().numpy()
    seed = int.from_bytes(hashlib.blake2b(x_t.tobytes(), digest_size=8).digest(), 'little')
    generator = torch.Generator().manual_seed(seed)
    per_step = torch.randn((steps, *shape), generator=generator)
    return SamplingNoise(noise.initial, per_step.to(noise.initial.device))


def run_reference(reference: SparsePolicy, observation: dict,
                  chunk: ActionChunk) -> ActionChunk:
    """Run ``reference`` on ``observation`` with ``chunk``'s noise; return its chunk."""
    if chunk.noise is None:
        raise ValueError('chunk carries no noise (not made by SparsePolicy.predict)')
    return reference.predict(observation, noise=replay_noise(chunk.noise, reference))


@dataclass(frozen=True)
class ActionDeviation:
    """Difference of two chunks over the executable actions, in action units (rad for joints)."""

    max_abs: float  # largest |primary - reference| over executed steps and joints
    max_abs_per_joint: tuple[float, ...]  # the same, per action dimension
    rms: float  # root mean square over executed steps and joints


def action_deviation(primary: ActionChunk, reference: ActionChunk) -> ActionDeviation:
    """Measure how far ``primary``'s executable actions lie from ``reference``'s."""
    a, b = primary.executable, reference.executable
    if a.shape != b.shape:
        raise ValueError(f'chunks must have the same executable shape, got primary {a.shape} '
                         f'and reference {b.shape}')
    if a.size == 0:
        raise ValueError(f'chunks have no executable actions, got shape {a.shape}')
    diff = np.abs(a.astype(np.float64) - b.astype(np.float64))  # (n_action_steps, action_dim)
    per_joint = tuple(float(v) for v in diff.max(axis=0))
    return ActionDeviation(max_abs=float(diff.max()), max_abs_per_joint=per_joint,
                           rms=float(np.sqrt(np.mean(diff ** 2))))


class FidelityState(str, Enum):
    """What the monitor asks of the node."""

    OK = 'ok'  # serve the primary (sparse) mode
    WARN = 'warn'  # serve the primary, report a warning
    FALLBACK = 'fallback'  # serve the reference mode until recovered


@dataclass
class FidelityMonitor:
    """
    Thresholds with hysteresis on a deviation (e.g. ``ActionDeviation.max_abs``).

    A check above ``fallback_threshold`` enters FALLBACK; it is left only after
    ``recover_checks`` consecutive checks below ``recover_threshold`` (a check at or above it
    restarts the count), to OK. Outside FALLBACK a check above ``warn_threshold`` is WARN, one
    at or below it OK: the warning has no memory. While falling back the node still checks the
    primary on spare cycles (it is the primary's deviation that must recover).
    """

    warn_threshold: float  # above: WARN
    fallback_threshold: float  # above: FALLBACK; >= warn_threshold
    recover_threshold: float  # below, recover_checks times in a row: leave FALLBACK; < warn
    recover_checks: int = 3  # consecutive checks below recover_threshold to leave FALLBACK
    state: FidelityState = field(default=FidelityState.OK, init=False)
    checks: int = field(default=0, init=False)  # deviations seen
    warnings: int = field(default=0, init=False)  # checks above warn_threshold, any state
    fallbacks: int = field(default=0, init=False)  # times FALLBACK was entered
    calm_checks: int = field(default=0, init=False)  # current run below recover_threshold
    last_deviation: float | None = field(default=None, init=False)
    max_deviation: float = field(default=0.0, init=False)

    def __post_init__(self):
        for name in ('warn_threshold', 'fallback_threshold', 'recover_threshold'):
            setattr(self, name, _finite(name, getattr(self, name), 0.0, strict=True))
        if self.fallback_threshold < self.warn_threshold:
            raise ValueError(
                f'fallback_threshold must be >= warn_threshold ({self.warn_threshold}), got '
                f'{self.fallback_threshold}')
        if self.recover_threshold >= self.warn_threshold:
            raise ValueError(
                f'recover_threshold must be < warn_threshold ({self.warn_threshold}), got '
                f'{self.recover_threshold}')
        self.recover_checks = _count('recover_checks', self.recover_checks)

    def update(self, deviation: float) -> FidelityState:
        """Record one check's deviation; return the new state."""
        deviation = _finite('deviation', deviation, 0.0)
        self.checks += 1
        self.last_deviation = deviation
        self.max_deviation = max(self.max_deviation, deviation)
        if deviation > self.warn_threshold:
            self.warnings += 1
        if self.state is FidelityState.FALLBACK:
            self.calm_checks = self.calm_checks + 1 if deviation < self.recover_threshold else 0
            if self.calm_checks >= self.recover_checks:
                self.calm_checks = 0
                self.state = FidelityState.OK  # below recover_threshold < warn_threshold
            return self.state
        if deviation > self.fallback_threshold:
            self.fallbacks += 1
            self.calm_checks = 0
            self.state = FidelityState.FALLBACK
        elif deviation > self.warn_threshold:
            self.state = FidelityState.WARN
        else:
            self.state = FidelityState.OK
        return self.state

    @property
    def in_fallback(self) -> bool:
        """Return whether the node should serve the reference mode."""
        return self.state is FidelityState.FALLBACK

    def summary(self) -> dict[str, str]:
        """Return key/value strings for a diagnostic status."""
        last = 'none' if self.last_deviation is None else f'{self.last_deviation:.6g}'
        return {'fidelity_state': self.state.value, 'fidelity_checks': str(self.checks),
                'fidelity_warnings': str(self.warnings),
                'fidelity_fallbacks': str(self.fallbacks),
                'fidelity_calm_checks': str(self.calm_checks),
                'fidelity_last_deviation': last,
                'fidelity_max_deviation': f'{self.max_deviation:.6g}'}


class RollingLatency:
    """The slowest of the last ``window`` reference run times: a cautious estimate (s)."""

    def __init__(self, window: int = 8):
        self._seconds: deque[float] = deque(maxlen=_count('window', window))

    def add(self, seconds: float) -> None:
        """Record one run time in seconds."""
        self._seconds.append(_finite('seconds', seconds, 0.0))

    @property
    def estimate(self) -> float | None:
        """Return the slowest recorded run time (s); None until a run was recorded."""
        return max(self._seconds) if self._seconds else None


def has_slack(seconds_until_needed: float, reference_latency_s: float | None,
              safety_factor: float = 1.5, margin_s: float = 0.0) -> bool:
    """
    Return whether a reference run fits before the next inference must start.

    True when ``safety_factor * latency + margin_s <= seconds_until_needed`` (a negative
    ``seconds_until_needed``, an inference already due, is False; inf is True). Without an
    estimate (None) the answer is False: time one reference call at start-up to seed it. Every
    argument is checked first, whatever the answer.
    """
    safety_factor = _finite('safety_factor', safety_factor, 1.0)
    margin_s = _finite('margin_s', margin_s, 0.0)
    if not _is_real(seconds_until_needed) or math.isnan(seconds_until_needed):
        raise ValueError(f'seconds_until_needed must be a number (inf allowed), got '
                         f'{seconds_until_needed!r}')
    if reference_latency_s is None:
        return False
    latency = _finite('reference_latency_s', reference_latency_s, 0.0)
    return safety_factor * latency + margin_s <= float(seconds_until_needed)  # a bool, not np
