"""
The policy node's control loop without ROS: when to call, what a call keeps, what is commanded.

:class:`ControlLoop` holds the observation history (``ObservationBuffer``), the replanning
bookkeeping (``Replanner``) and what was last commanded (a ``TrajectoryFollower`` that samples
the trajectory sent the way joint_trajectory_controller does). One policy call goes::

    call_due -> buffer.assemble -> call_started -> call_inputs -> (the policy) -> plan -> publish

``call_inputs`` gives the chunk's time base, the control steps the rollout cache and the noise
move by (streaming) and the committed rows the call keeps (``consistency: prefix``); ``plan``
plans the chunk from the current command and its velocity within the limits
(``planning.plan_chunk``) and measures the seam against the running plan; ``publish`` hands the
plan to ``send`` (the node turns it into a ``JointTrajectory``) and follows it. ``brake`` stops
from the current command; ``tracking_error`` compares a measured position with the command.

The policy node calls it under its lock with its clock; ``sim/node_executor.py`` calls it with
simulated time, so evaluation runs the node's timing, splicing and safety filter, not a copy.
Numpy only; locking, the policy and the clock are the caller's.
"""

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .observation_buffer import ObservationBuffer
from .planning import hold_plan, plan_chunk, TrajectoryPlan
from .replanning import Replanner, ReplanSettings, Splice
from .safety import SafetyFilter
from .trajectory_follower import TrajectoryFollower


@dataclass(frozen=True)
class CallInputs:
    """What one policy call needs from the control loop besides the observation."""

    time_base: float  # when the chunk's row n_obs_steps - 1 is due (Replanner.time_base)
    shift: int | None  # streaming: control steps since the last call's base (None: none)
    prefix_rows: np.ndarray | None  # committed rows from chunk row 0 (None: nothing kept)


@dataclass(frozen=True)
class ChunkOutcome:
    """What became of a finished chunk (:meth:`ControlLoop.commit_chunk`)."""

    status: str  # 'published', 'late' (every action due too soon), 'infeasible', 'no_state'
    plan: TrajectoryPlan | None = None
    splice: Splice | None = None


class ControlLoop:
    """Observation history, replanning and the commanded trajectory of one arm."""

    def __init__(self, joint_names: tuple[str, ...], output_type: str,
                 send: Callable[[TrajectoryPlan], None] | None = None):
        """
        Command ``joint_names``; ``output_type: preview`` means no controller follows.

        ``send`` receives every plan published (None: nothing is sent anywhere).
        """
        self.joint_names = tuple(joint_names)
        self.output_type = output_type
        self.send = send
        self.follower = TrajectoryFollower(self.joint_names)  # what was last commanded
        self.safety: SafetyFilter | None = None
        self.replanner: Replanner | None = None
        self.buffer: ObservationBuffer | None = None
        self.holding = False  # the last thing sent was a braking stop
        self.executable_due = np.zeros(0)  # due times of the policy's points in the plan

    def configure(self, safety: SafetyFilter, replanner: Replanner,
                  buffer: ObservationBuffer) -> None:
        """Use these limits, this bookkeeping and this history from now on."""
        self.safety = safety
        self.replanner = replanner
        self.buffer = buffer

    def release(self) -> None:
        """Forget limits, bookkeeping, history and the plan (cleanup)."""
        self.clear()
        self.safety = None
        self.replanner = None
        self.buffer = None

    def clear(self) -> None:
        """Drop the plan without a stop: it no longer describes the arm (reset, jump)."""
        self.follower.clear()
        if self.replanner is not None:
            self.replanner.clear()
        self.executable_due = np.zeros(0)

    @property
    def control_period(self) -> float:
        """Seconds between the policy's actions (configured)."""
        return self.replanner.control_period

    @property
    def commanding(self) -> bool:
        """Tell whether a plan of ours may be moving the arm (something sent, not a stop)."""
        return self.follower.active and not self.holding

    @property
    def plan_end(self) -> float | None:
        """When the running plan's last policy action is due (None without one)."""
        return float(self.executable_due[-1]) if self.executable_due.size else None

    def tracking_error(self, stamp: float, positions: np.ndarray) -> np.ndarray | None:
        """
        Return |measured - commanded| per joint at ``stamp``, the measurement's time.

        None when nothing of ours is followed (no plan yet, or a dry run).
        """
        if not self.follower.active or self.output_type == 'preview':
            return None
        return np.abs(np.asarray(positions, dtype=np.float64) - self.follower.sample(stamp))

    def current(self, now: float) -> tuple[np.ndarray, np.ndarray] | None:
        """
        Return where the arm is commanded to be now, and how fast: our plan.

        Before anything was commanded, and always in a dry run (``output_type: preview``,
        where no controller follows the plan): the newest measured joint state, at rest
        (None without one).
        """
        if self.follower.active and self.output_type != 'preview':
            return self.follower.sample_state(now)
        latest = self.buffer.latest_joint_state() if self.buffer is not None else None
        if latest is None:
            return None
        return latest[1].astype(np.float64), np.zeros(len(self.joint_names))

    # ------------------------------------------------------------------ one call
    def call_due(self, settings: ReplanSettings, now: float) -> bool:
        """Tell whether the replanning rule wants a call now (the worker is free)."""
        return self.replanner.due(settings, now, self.buffer.newest_stamp(),
                                  self.executable_due)

    def call_started(self, now: float, observation_stamp: float) -> None:
        """Record that a call answering the observation at ``observation_stamp`` started."""
        self.replanner.started(now, observation_stamp)

    def call_inputs(self, settings: ReplanSettings, observation_stamp: float, now: float,
                    expected_predict_s: float) -> CallInputs:
        """
        Return the time base, the cache / noise shift and the committed rows of a call.

        ``expected_predict_s``: how long the call is expected to take (the committed rows
        reach past it, ``Replanner.prefix_rows``).
        """
        base = self.replanner.time_base(settings, observation_stamp)
        shift = self.replanner.steps_since_last_call(base) if settings.streaming else None
        rows = self.replanner.prefix_rows(settings, self.follower, base, now, self.plan_end,
                                          max(now - base, 0.0) + expected_predict_s)
        return CallInputs(base, shift, rows)

    def plan(self, actions: np.ndarray, time_base: float, now: float
             ) -> tuple[TrajectoryPlan, Splice | None, np.ndarray] | None:
        """
        Plan ``actions`` (row 0 due at ``time_base``) from the current command, stamped ``now``.

        Points due within half a control period are dropped. Returns the plan, how it joins
        the running one (None while holding or with nothing running) and the position it
        starts from; None when there is no joint state to start from. Raises
        ``ActionRejected`` for non-finite or mis-shaped actions.
        """
        current = self.current(now)
        if current is None:
            return None
        period = self.control_period
        plan = plan_chunk(actions, time_base, now, period, self.joint_names, self.safety,
                          *current, min_lead=0.5 * period)
        splice = None
        if not self.holding and len(plan):
            splice = self.replanner.splice(self.follower, plan)
        return plan, splice, current[0]

    def commit_chunk(self, actions: np.ndarray, time_base: float, now: float) -> ChunkOutcome:
        """
        Plan a finished chunk's executable ``actions`` and publish it unless it is unusable.

        Unusable: no joint state to start from (``no_state``), every action due within half a
        control period (``late``), or its first target out of reach within the limits
        (``infeasible``); the running plan then stays. Raises ``ActionRejected`` for
        non-finite or mis-shaped actions.
        """
        planned = self.plan(actions, time_base, now)
        if planned is None:
            return ChunkOutcome('no_state')
        plan, splice, start = planned
        if len(plan) == 0:
            return ChunkOutcome('infeasible' if plan.safety.truncated else 'late', plan)
        self.publish(plan, now, start)
        return ChunkOutcome('published', plan, splice)

    def publish(self, plan: TrajectoryPlan, now: float, start: np.ndarray) -> None:
        """Send ``plan`` and follow it from ``now``, starting at ``start``."""
        if self.send is not None:
            self.send(plan)
        if self.replanner is not None:
            self.replanner.replaced(self.follower, now)
        self.follower.set_trajectory(plan.joint_names, plan.stamp, plan.times_from_start,
                                     plan.positions, now, start, plan.velocities)
        self.executable_due = plan.absolute_times[:plan.executable]
        self.holding = False

    def brake(self, now: float) -> TrajectoryPlan | None:
        """
        Publish a braking stop from the current command within the limits; return it.

        None (nothing sent) when nothing was commanded yet, the arm is not moving on our
        account, or the loop is not configured.
        """
        if not self.follower.active or self.safety is None:
            return None
        state = self.follower.sample_state(now)
        plan = hold_plan(self.safety, self.joint_names, now, *state)
        self.publish(plan, now, state[0])
        self.holding = True
        return plan

    def forward_command(self, now: float) -> np.ndarray | None:
        """Return the position to stream to forward_position_controller now (None: no plan)."""
        end = self.follower.end_time
        if end is None or now > end + self.control_period:
            return None
        return self.follower.sample(now)
