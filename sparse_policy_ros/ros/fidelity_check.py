"""
The policy node's online fidelity check: when, against what, and which policy to serve.

Every ``period`` seconds, when the time until the next inference must start leaves room for
it (``has_slack`` on the slowest of the recent reference run times, times a safety factor),
the inference thread runs the reference (dense, or a static budget on slow hardware) on the
observation and noise of the chunk it has just published and feeds the action deviation to a
:class:`~sparse_policy_ros.sparsity.fidelity.FidelityMonitor`. Above ``fallback_threshold`` the
node serves the reference until the primary's deviation stays below ``recover_threshold`` for
``recover_checks`` checks; the check then runs the primary on the served chunk's noise.

No rclpy here: the node calls :meth:`FidelityCheck.served`, :meth:`FidelityCheck.due` and
:meth:`FidelityCheck.run` from its inference thread, with the policy lock held.
"""

from dataclasses import dataclass
import time

import numpy as np

from ..policy.prefix import ActionPrefix
from ..sparsity.fidelity import (action_deviation, FidelityMonitor, FidelityState, has_slack,
                                 reference_policy, replay_noise, RollingLatency)
from ..sparsity.sparse_policy import ActionChunk, SparsePolicy

SAFETY_FACTOR = 1.5  # a check runs only when 1.5 x its slowest recent run time fits


@dataclass(frozen=True)
class FidelitySettings:
    """The node's fidelity_* parameters."""

    period: float  # seconds between checks at start; 0 = no checks (runtime: see due())
    reference: str  # 'dense' or a static mode
    reference_sparsity: float  # target sparsity of a static reference
    warn_threshold: float
    fallback_threshold: float
    recover_threshold: float
    recover_checks: int

    @staticmethod
    def from_parameters(settings: dict) -> 'FidelitySettings':
        """Read the fidelity_* entries of the node's parameter dict."""
        return FidelitySettings(
            period=float(settings['fidelity_check_period']),
            reference=settings['fidelity_reference'],
            reference_sparsity=float(settings['fidelity_reference_sparsity']),
            warn_threshold=float(settings['fidelity_warn_threshold']),
            fallback_threshold=float(settings['fidelity_fallback_threshold']),
            recover_threshold=float(settings['fidelity_recover_threshold']),
            recover_checks=int(settings['fidelity_recover_checks']))


class FidelityCheck:
    """Reference policy, monitor and schedule of the online fidelity check."""

    def __init__(self, primary: SparsePolicy, settings: FidelitySettings):
        """Build the reference on the primary's weights and time one call of it."""
        self.settings = settings
        self.primary = primary
        self.monitor = FidelityMonitor(settings.warn_threshold, settings.fallback_threshold,
                                       settings.recover_threshold, settings.recover_checks)
        target = None if settings.reference == 'dense' else settings.reference_sparsity
        self.reference = reference_policy(primary, settings.reference, target)
        self.latency = RollingLatency()
        self.skipped_no_slack = 0
        self.fallback_withheld = 0  # calls served by the primary: the reference too slow
        self.serving_reference = False  # who served the latest call
        self.last_check: float | None = None  # node clock, seconds
        self.last_deviation_per_joint: tuple[float, ...] = ()
        self._seed_latency()

    def served(self, budget_s: float | None = None) -> SparsePolicy:
        """
        Return the policy to predict with: the reference while falling back.

        A reference whose slowest recent run time exceeds ``budget_s`` (the seconds a call
        may take before its chunk is late) is not served: on slow hardware a late chunk
        makes the arm brake at every seam, worse than a primary that deviates. The
        monitor stays in fallback (its WARN stays on /diagnostics) and such calls are
        counted in ``fallback_withheld``.
        """
        fits = self.reference_fits(budget_s)
        self.serving_reference = self.monitor.in_fallback and fits
        if self.monitor.in_fallback and not fits:
            self.fallback_withheld += 1
        return self.reference if self.serving_reference else self.primary

    def reference_fits(self, budget_s: float | None) -> bool:
        """Tell whether the reference's slowest recent run fits ``budget_s`` (None: any)."""
        estimate = self.latency.estimate
        return budget_s is None or estimate is None or estimate <= budget_s

    def due(self, now: float, seconds_until_needed: float,
            period: float | None = None) -> bool:
        """
        Tell whether to check now: ``period`` elapsed and the run fits the slack.

        ``period`` (seconds, 0 = never) defaults to the settings' (the node passes its
        runtime parameter).
        """
        period = self.settings.period if period is None else period
        if period <= 0:
            return False
        if self.last_check is not None and now - self.last_check < period:
            return False
        if not has_slack(seconds_until_needed, self.latency.estimate, SAFETY_FACTOR):
            self.skipped_no_slack += 1
            return False
        return True

    def run(self, observation: dict, chunk: ActionChunk, now: float,
            prefix: ActionPrefix | None = None) -> FidelityState:
        """
        Compare ``chunk`` (from :meth:`served`) with the other policy on its noise.

        Serving the primary, the reference answers; serving the reference, the primary does:
        the deviation is always the primary's. ``prefix``: the committed rows the chunk was
        conditioned on (streaming); the other policy gets the same.
        """
        other = self.primary if self.serving_reference else self.reference
        start = time.perf_counter()
        answer = other.predict(observation, noise=_noise_for(chunk, other), prefix=prefix)
        self.latency.add(time.perf_counter() - start)
        self.last_check = now
        primary, reference = (answer, chunk) if other is self.primary else (chunk, answer)
        deviation = action_deviation(primary, reference)
        self.last_deviation_per_joint = deviation.max_abs_per_joint
        return self.monitor.update(deviation.max_abs)

    def reset(self) -> None:
        """Forget the reference's rollout cache with the primary's (a new episode)."""
        self.reference.reset()

    def close(self) -> None:
        """Free the reference's buffers (the weights belong to the primary)."""
        self.reference.close()

    def summary(self) -> dict[str, str]:
        """Return key/value strings for /diagnostics."""
        estimate = self.latency.estimate
        out = self.monitor.summary()
        out.update({
            'fidelity_reference': self.settings.reference,
            'fidelity_serving': 'reference' if self.serving_reference else 'primary',
            'fidelity_fallback_withheld': str(self.fallback_withheld),
            'fidelity_reference_ms': 'none' if estimate is None else f'{estimate * 1e3:.1f}',
            'fidelity_skipped_no_slack': str(self.skipped_no_slack),
            'fidelity_last_deviation_per_joint': str([round(v, 6) for v in
                                                      self.last_deviation_per_joint])})
        return out

    def _seed_latency(self) -> None:
        """Time one reference call on a blank observation: has_slack needs an estimate."""
        config = self.reference.config
        _, h, w = config.image_shape
        t = config.n_obs_steps
        blank = {'images': {c: np.zeros((t, h, w, 3), np.uint8) for c in config.camera_names},
                 'state': np.zeros((t, config.state_dim), np.float32)}
        start = time.perf_counter()
        self.reference.predict(blank)
        self.latency.add(time.perf_counter() - start)
        self.reference.reset()


def _noise_for(chunk: ActionChunk, policy: SparsePolicy):
    """Return ``chunk``'s noise adapted to ``policy``'s scheduler."""
    return replay_noise(chunk.noise, policy)
