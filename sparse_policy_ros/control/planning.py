"""
Action chunk -> timed joint trajectory, in numpy: what the policy node publishes.

Timeline of one chunk (control period ``dt``, latency ``L`` from observation to publish)::

    obs stamp t_o            publish t_o + L = header.stamp
        |                        |
        a0      a1      a2      a3      a4      a5      a6      a7     executable actions
        t_o    t_o+dt  t_o+2dt  ...                                   action k is due at t_o + k dt
        |<-- already past, dropped -->|
                                 time_from_start = t_o + k dt - header.stamp  (> 0, strictly up)

Executable action 0 answers the newest observation, so action ``k`` is due at
``t_o + k * dt`` (:func:`due_times`); the header is stamped at publish time (observation stamp
plus measured latency) and points due within ``min_lead`` of it are dropped
(:func:`kept_mask`), as Diffusion Policy's real-robot loop drops those already due (a
controller that receives a point already due would jump past its first segment). The safety
filter (``safety.py``) turns the kept targets into positions and velocities of cubic Hermite
segments that start at the current command and its velocity and stay within the position,
speed and acceleration limits, and appends a braking stop with zero velocity: a stock
joint_trajectory_controller on default parameters accepts the message
(``allow_nonzero_velocity_at_trajectory_end`` false), and the next chunk replaces the stop
before it begins while inference keeps up.

The ROS message for a :class:`TrajectoryPlan` is built in ``ros/trajectory.py``; nothing here
imports ROS, so the simulator's evaluation splices chunks with exactly this code.
"""

from dataclasses import dataclass

import numpy as np

from .safety import check_actions, SafetyFilter, SafetyReport


@dataclass(frozen=True)
class TrajectoryPlan:
    """Timed joint targets ready to become a ``trajectory_msgs/JointTrajectory``."""

    joint_names: tuple[str, ...]
    stamp: float  # header stamp, seconds on the node's clock
    times_from_start: np.ndarray  # (N,) seconds, > 0 and strictly increasing
    positions: np.ndarray  # (N, dof)
    velocities: np.ndarray  # (N, dof) per second; the last row is zero
    dropped: int = 0  # executable actions due too soon (or past) at publish time
    safety: SafetyReport | None = None
    executable: int = 0  # leading points that are the policy's targets (the rest: the stop)

    @property
    def absolute_times(self) -> np.ndarray:
        """(N,) times at which each point is due."""
        return self.stamp + self.times_from_start

    def __len__(self) -> int:
        """Return the number of points."""
        return int(self.times_from_start.shape[0])


def due_times(observation_stamp: float, control_period: float, n: int) -> np.ndarray:
    """Return the (n,) times at which executable actions ``0 .. n - 1`` are due."""
    return observation_stamp + control_period * np.arange(n, dtype=np.float64)


def kept_mask(due: np.ndarray, publish_time: float, min_lead: float = 0.0) -> np.ndarray:
    """
    Return which actions, due at ``due``, are still ahead when published at ``publish_time``.

    An action is kept when it is due strictly later than ``publish_time + min_lead``; one due
    exactly then is dropped, like every earlier one. Raises ``ValueError`` for a negative (or
    NaN) ``min_lead``.
    """
    if not min_lead >= 0:
        raise ValueError(f'min_lead must be >= 0 s, got {min_lead}')
    return np.asarray(due, dtype=np.float64) > publish_time + min_lead


def plan_chunk(executable: np.ndarray, observation_stamp: float, publish_time: float,
               control_period: float, joint_names: tuple[str, ...] | list[str],
               safety: SafetyFilter, current_position: np.ndarray,
               current_velocity: np.ndarray, min_lead: float = 0.0) -> TrajectoryPlan:
    """
    Turn executable actions (n, dof) into a trajectory stamped at ``publish_time``.

    The motion starts at the current command (``current_position``, ``current_velocity``);
    actions due no later than ``publish_time + min_lead`` are dropped (:func:`kept_mask`).
    Raises ``ActionRejected`` for non-finite or mis-shaped actions. The result has zero points
    when every action was dropped (the chunk came too late) or the first target cannot be
    reached within the limits.
    """
    joint_names = tuple(joint_names)
    actions = check_actions(executable, len(joint_names))
    due = due_times(observation_stamp, control_period, actions.shape[0])
    keep = kept_mask(due, publish_time, min_lead)
    dropped = int(actions.shape[0] - np.count_nonzero(keep))
    dof = len(joint_names)
    if not keep.any():
        return TrajectoryPlan(joint_names=joint_names, stamp=float(publish_time),
                              times_from_start=np.zeros(0), positions=np.zeros((0, dof)),
                              velocities=np.zeros((0, dof)), dropped=dropped,
                              safety=SafetyReport(0, 0))
    planned = safety.plan(actions[keep], due[keep] - publish_time, current_position,
                          current_velocity)
    if planned.executable == 0:
        return TrajectoryPlan(joint_names=joint_names, stamp=float(publish_time),
                              times_from_start=np.zeros(0), positions=np.zeros((0, dof)),
                              velocities=np.zeros((0, dof)), dropped=dropped,
                              safety=planned.report)
    return TrajectoryPlan(
        joint_names=joint_names, stamp=float(publish_time), times_from_start=planned.times,
        positions=planned.positions, velocities=planned.velocities, dropped=dropped,
        safety=planned.report, executable=planned.executable)


def hold_plan(safety: SafetyFilter, joint_names: tuple[str, ...] | list[str], stamp: float,
              current_position: np.ndarray, current_velocity: np.ndarray) -> TrajectoryPlan:
    """
    Brake to rest from the current command: one point with zero velocity.

    The stop decelerates within the acceleration limit, lasts at least one control period and
    ends inside the position limits (``SafetyFilter.stop``); it never jumps to a measured
    position.
    """
    joint_names = tuple(joint_names)
    if len(joint_names) != safety.limits.dof:
        raise ValueError(f'joint_names: expected {safety.limits.dof} joints, got '
                         f'{list(joint_names)}')
    duration, position = safety.stop(current_position, current_velocity)
    return TrajectoryPlan(joint_names=joint_names, stamp=float(stamp),
                          times_from_start=np.array([float(duration)]),
                          positions=position.reshape(1, -1),
                          velocities=np.zeros((1, len(joint_names))))
