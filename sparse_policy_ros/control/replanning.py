"""
When the node starts a policy call, what the call must keep, and how well chunks join.

Two modes (``replan_mode``):

* ``chunked``: a call starts when ``replan_threshold`` or fewer of the policy's published
  actions are still ahead (receding horizon, a few chunks per second).
* ``streaming``: a call starts as soon as the inference worker is free and an observation newer
  than the last call's has arrived (``replan_rate`` 0), or at most ``replan_rate`` times per
  second. Each chunk is spliced onto the one executing: the safety filter starts it from the
  current command and velocity, and with ``consistency: prefix`` the call is conditioned on the
  committed actions (``command_log.committed_rows``): those executed at the steps of its
  observation history, those that run while it computes (the expected delay) and
  ``prefix_steps`` more, so consecutive chunks continue one motion instead of dithering
  between modes (issue 21).

Streaming calls come faster than the control period (a call per camera frame), so a chunk's
rows are placed on the episode's control grid (:meth:`Replanner.time_base`): row ``r`` of a
call answering an observation at ``t`` is due at ``g + (r - (n_obs_steps - 1)) * period`` with
``g`` the grid time nearest ``t`` (at most half a period away). Every plan's targets then lie
on the same times, the committed rows a call keeps are exactly the targets already planned
(no resampling between them, which would smooth the motion a little more with every call),
and the calls within one period refine the same uncommitted rows with newer observations.

Numpy only (no ROS): the node's control loop calls :class:`Replanner`; tests drive it directly.
"""

from dataclasses import dataclass
import math

import numpy as np

from .command_log import CommandLog, committed_rows
from .planning import TrajectoryPlan
from .streaming import delay_steps
from .trajectory_follower import TrajectoryFollower

REPLAN_MODES = ('chunked', 'streaming')
NODE_CONSISTENCY = ('none', 'prefix')  # ensembling is evaluated in eval-policy only
# sampling_noise: a new draw per call, or the last call's moved on (SamplingNoise.continued)
NOISE_MODES = ('fresh', 'shifted')


@dataclass(frozen=True)
class ReplanSettings:
    """The node's replanning parameters (runtime ones are read again on every use)."""

    mode: str = 'chunked'
    replan_threshold: int = 2
    replan_rate: float = 0.0  # streaming: Hz; 0 = as fast as observations and inference allow
    consistency: str = 'prefix'
    prefix_steps: int = 5
    prefix_until: float = 1.0

    def __post_init__(self):
        """Refuse settings that cannot be used, naming the parameter."""
        if self.mode not in REPLAN_MODES:
            raise ValueError(f'replan_mode must be one of {list(REPLAN_MODES)}, got '
                             f'{self.mode!r}')
        if self.consistency not in NODE_CONSISTENCY:
            raise ValueError(f'consistency must be one of {list(NODE_CONSISTENCY)}, got '
                             f'{self.consistency!r}')
        if not (math.isfinite(self.replan_rate) and self.replan_rate >= 0):
            raise ValueError(f'replan_rate must be a finite number of Hz >= 0, got '
                             f'{self.replan_rate!r}')
        if self.replan_threshold < 0 or self.prefix_steps < 0:
            raise ValueError(f'replan_threshold and prefix_steps must be >= 0, got '
                             f'{self.replan_threshold} and {self.prefix_steps}')
        if not 0 < self.prefix_until <= 1:
            raise ValueError(f'prefix_until must be in (0, 1], got {self.prefix_until!r}')

    @property
    def streaming(self) -> bool:
        """Tell whether calls follow observations instead of the plan running low."""
        return self.mode == 'streaming'


@dataclass(frozen=True)
class Splice:
    """How a new plan joins the one it replaces, at the new plan's first point."""

    position_jump: float  # max over joints of |new target - old plan's position|
    velocity_jump: float  # max over joints of |new velocity - old plan's velocity|


class Replanner:
    """The control loop's bookkeeping between policy calls."""

    def __init__(self, control_period: float, n_obs_steps: int, horizon: int):
        if not control_period > 0 or n_obs_steps < 1 or horizon < n_obs_steps:
            raise ValueError(f'need control_period > 0 and 1 <= n_obs_steps <= horizon, got '
                             f'{control_period}, {n_obs_steps}, {horizon}')
        self.control_period = float(control_period)
        self.n_obs_steps = int(n_obs_steps)
        self.horizon = int(horizon)
        # History rows reach n_obs_steps - 1 periods before the observation, which may itself
        # be up to an observation timeout old: keep a generous window.
        self.commands = CommandLog(keep_s=(n_obs_steps + 1) * control_period + 1.0)
        self.clear()

    def clear(self) -> None:
        """Forget the calls and what was commanded (reset, new episode, clock jump)."""
        self.commands.clear()
        self.last_stamp: float | None = None  # observation stamp of the last call started
        self.last_start: float | None = None  # when the last call started
        self.grid_origin: float | None = None  # streaming: the first call's observation time
        self.last_base: float | None = None  # the time base of the last call that predicted

    def due(self, settings: ReplanSettings, now: float, newest_stamp: float | None,
            executable_due: np.ndarray) -> bool:
        """
        Tell whether to start a call now (the worker is free and the data fresh).

        ``executable_due``: due times of the policy's points in the running plan;
        ``newest_stamp``: the time the next assembled observation would answer.
        """
        if not settings.streaming:
            return int(np.count_nonzero(executable_due > now)) <= settings.replan_threshold
        if newest_stamp is None:
            return False
        if self.last_stamp is not None and newest_stamp <= self.last_stamp:
            return False  # nothing new to answer: the last chunk already did
        if settings.replan_rate > 0 and self.last_start is not None:
            return now - self.last_start >= 1.0 / settings.replan_rate - 1e-9
        return True

    def time_base(self, settings: ReplanSettings, observation_stamp: float) -> float:
        """
        Return when the chunk's row ``n_obs_steps - 1`` is due (its other rows a period apart).

        Chunked: the observation's stamp. Streaming: the control-grid time nearest it, the
        grid starting at the first call after :meth:`clear`.
        """
        if not settings.streaming:
            return float(observation_stamp)
        if self.grid_origin is None:
            self.grid_origin = float(observation_stamp)
        steps = round((observation_stamp - self.grid_origin) / self.control_period)
        return self.grid_origin + steps * self.control_period

    def steps_since_last_call(self, time_base: float) -> int | None:
        """
        Return the control steps between this call's time base and the last call's; record it.

        What a streaming call moves the rollout cache and the continued noise by
        (``SparsePolicy.shift_cache``, ``SamplingNoise.continued``). None for the first call
        after :meth:`clear`; 0 when the bases are equal (or this one is earlier).
        """
        last, self.last_base = self.last_base, float(time_base)
        if last is None:
            return None
        return max(round((time_base - last) / self.control_period), 0)

    def started(self, now: float, stamp: float) -> None:
        """Record that a call answering the observation at ``stamp`` started at ``now``."""
        self.last_stamp = float(stamp)
        self.last_start = float(now)

    def seconds_until_due(self, settings: ReplanSettings, now: float,
                          executable_due: np.ndarray) -> float:
        """Spare seconds before the control loop wants the next call (fidelity checks)."""
        if settings.streaming:
            if settings.replan_rate <= 0 or self.last_start is None:
                return 0.0
            return max(self.last_start + 1.0 / settings.replan_rate - now, 0.0)
        ahead = executable_due[executable_due > now]
        if ahead.size <= settings.replan_threshold:
            return 0.0
        return float(ahead[ahead.size - settings.replan_threshold - 1] - now)

    def budget(self, settings: ReplanSettings, n_action_steps: int) -> float:
        """
        Seconds a call may take before its chunk is late.

        Chunked: the call starts with ``replan_threshold`` points ahead, one period apart, and
        points due within half a period of publishing are dropped. Streaming: the running
        plan's actions last ``n_action_steps`` periods from its observation.
        """
        steps = n_action_steps if settings.streaming else settings.replan_threshold
        return max(steps - 0.5, 0.0) * self.control_period

    def prefix_rows(self, settings: ReplanSettings, follower: TrajectoryFollower,
                    time_base: float, now: float, plan_end: float | None,
                    expected_latency: float) -> np.ndarray | None:
        """
        Return the committed rows (from chunk row 0) for a call whose rows start at the base.

        ``time_base``: when row ``n_obs_steps - 1`` is due (:meth:`time_base`). None unless
        streaming with ``consistency: prefix``, or when nothing was commanded.
        ``expected_latency``: seconds from ``time_base`` to the chunk's publication.
        """
        if not (settings.streaming and settings.consistency == 'prefix'):
            return None
        delay = delay_steps(max(expected_latency, 0.0), self.control_period)
        future = min(delay + settings.prefix_steps, self.horizon - (self.n_obs_steps - 1))
        return committed_rows(self.commands, follower, time_base, self.control_period,
                              self.n_obs_steps, future, now, plan_end)

    def splice(self, follower: TrajectoryFollower, plan: TrajectoryPlan) -> Splice | None:
        """Compare ``plan``'s first point with the running plan there (None: nothing runs)."""
        if not follower.active or len(plan) == 0 or plan.executable == 0:
            return None
        t = float(plan.absolute_times[0])
        position, velocity = follower.sample_state(t)
        return Splice(float(np.max(np.abs(plan.positions[0] - position))),
                      float(np.max(np.abs(plan.velocities[0] - velocity))))

    def replaced(self, follower: TrajectoryFollower, at: float) -> None:
        """Record that the running plan stops being followed at ``at`` (a new one comes)."""
        self.commands.replaced(follower, at)
