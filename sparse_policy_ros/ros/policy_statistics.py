"""
What the policy node counts and measures, and the ``/diagnostics`` values built from it.

The node records each call (latency, sparsity, cache), each published plan (splice jumps,
committed prefix, safety-filter interventions), each refused input (by kind) and each reset (by
cause) here; ``values`` turns them into the key/value report. The lock is the caller's.
"""

from collections import Counter

from .diagnostics import RateMeter, RollingWindow
from ..control.message_errors import MessageError
from ..control.planning import TrajectoryPlan
from ..control.replanning import Splice

REJECTION_KINDS = ('image_encoding', 'image_size', 'image_data', 'joint_missing',
                   'joint_nonfinite', 'joint_data', 'joint_duplicate', 'stamp_future',
                   'observation_invalid', 'actions_nonfinite', 'inference_error')
RESET_CAUSES = ('service', 'activate', 'episode', 'joint_jump', 'clock_jump')
# The plan was dropped (history kept): the arm was farther from it than start_tolerance.
PLAN_DROP_CAUSES = ('tracking',)
COUNTS = ('chunks_published', 'chunks_late', 'chunks_discarded', 'holds_published',
          'chunks_infeasible', 'dense_calls', 'cold_calls', 'points_dropped', 'points_truncated',
          'position_clamped', 'velocity_limited', *(f'resets_{cause}' for cause in RESET_CAUSES),
          *(f'plans_dropped_{cause}' for cause in PLAN_DROP_CAUSES))
WINDOW = 10000  # samples kept per rolling statistic


class PolicyStatistics:
    """Rolling latency / splice statistics and event counters of one policy node."""

    def __init__(self, rate_window: float = 5.0):
        """Start with nothing recorded; the chunk rate averages over ``rate_window`` s."""
        self._rate_window = rate_window
        self.clear()

    def clear(self) -> None:
        """Forget everything (a new configuration)."""
        self.predict_ms = RollingWindow(WINDOW)
        self.e2e_ms = RollingWindow(WINDOW)
        self.sparsity = RollingWindow(WINDOW)
        self.chunk_rate = RateMeter(self._rate_window)
        self.splice_position = RollingWindow(WINDOW)  # at each new plan's first point
        self.splice_velocity = RollingWindow(WINDOW)
        self.prefix_rows = RollingWindow(WINDOW)  # committed rows kept per call
        # Max over joints of |measured - commanded at the joint state's stamp|, per state.
        self.tracking_error = RollingWindow(WINDOW)
        self.cache_bytes = 0
        self.skew_ms: float | None = None
        self.counts = Counter(dict.fromkeys(COUNTS, 0))
        self.rejected = Counter()
        self._rejected_reported = 0
        self.last_error = ''

    def count(self, key: str, n: int = 1) -> None:
        """Add ``n`` to the counter ``key`` (one of COUNTS)."""
        if key not in self.counts:
            raise KeyError(f'unknown counter {key!r}; expected one of {list(COUNTS)}')
        self.counts[key] += n

    def reset_by(self, cause: str) -> None:
        """Count one clearing of history and rollout cache caused by ``cause``."""
        self.count(f'resets_{cause}')

    def reject(self, error: MessageError, source: str) -> str:
        """Count a refused input and return the line to log."""
        self.rejected[error.kind] += 1
        self.last_error = f'{source}: {error}'
        return f'rejected {source}: {error}'

    def record_call(self, stats, latency_s: float, skew_s: float) -> None:
        """Record one finished policy call (``stats``: its ChunkStats)."""
        self.predict_ms.add(stats.total_ms)
        self.e2e_ms.add(latency_s * 1e3)
        self.sparsity.add(stats.sparsity)
        self.cache_bytes = stats.cache_bytes
        self.counts['dense_calls'] += int(stats.dense_call)
        self.counts['cold_calls'] += int(stats.cold_call)
        self.skew_ms = skew_s * 1e3

    def record_published(self, plan: TrajectoryPlan, splice: Splice | None, prefix_rows: int,
                         now: float) -> None:
        """Record one chunk published as ``plan``, spliced with ``splice`` (None: no seam)."""
        if splice is not None:
            self.splice_position.add(splice.position_jump)
            self.splice_velocity.add(splice.velocity_jump)
        self.prefix_rows.add(prefix_rows)
        self.counts['chunks_published'] += 1
        self.counts['points_dropped'] += plan.dropped
        self.counts['position_clamped'] += plan.safety.position_clamped
        self.counts['velocity_limited'] += plan.safety.velocity_limited
        self.counts['points_truncated'] += plan.safety.truncated
        self.chunk_rate.tick(now)

    def predict_percentile_ms(self, q: float) -> float | None:
        """Return a percentile of recent predict times in ms (None before the first call)."""
        return self.predict_ms.percentile(q)

    def new_rejections(self) -> bool:
        """Tell whether inputs were refused since the last ``values`` call."""
        return sum(self.rejected.values()) > self._rejected_reported

    def values(self, now: float) -> dict:
        """Return the measured part of the diagnostics report; marks rejections as reported."""
        report = {
            'predict_latency_p50_ms': self.predict_ms.percentile(50),
            'predict_latency_p99_ms': self.predict_ms.percentile(99),
            'end_to_end_latency_p50_ms': self.e2e_ms.percentile(50),
            'end_to_end_latency_p99_ms': self.e2e_ms.percentile(99),
            'chunk_rate_hz': self.chunk_rate.rate(now),
            'prefix_rows_mean': self.prefix_rows.mean(),
            'splice_position_jump_p50': self.splice_position.percentile(50),
            'splice_position_jump_max': self.splice_position.percentile(100),
            'splice_velocity_jump_p50': self.splice_velocity.percentile(50),
            'splice_velocity_jump_max': self.splice_velocity.percentile(100),
            'tracking_error_p50': self.tracking_error.percentile(50),
            'tracking_error_p99': self.tracking_error.percentile(99),
            'tracking_error_max': self.tracking_error.percentile(100),
            'sparsity_mean': self.sparsity.mean(),
            'cache_bytes': self.cache_bytes,
            'observation_skew_ms': self.skew_ms,
        }
        report.update(self.counts)
        report.update({f'rejected_{kind}': self.rejected[kind] for kind in REJECTION_KINDS})
        report['last_error'] = self.last_error or 'none'
        self._rejected_reported = sum(self.rejected.values())
        return report
