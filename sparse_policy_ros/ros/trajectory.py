"""
Action chunk -> timed joint trajectory (numpy), and the ROS message for it.

Timeline of one chunk (control period ``dt``, latency ``L`` from observation to publish)::

    obs stamp t_o            publish t_o + L = header.stamp
        |                        |
        a0      a1      a2      a3      a4      a5      a6      a7     executable actions
        t_o    t_o+dt  t_o+2dt  ...                                   action k is due at t_o + k dt
        |<-- already past, dropped -->|
                                 time_from_start = t_o + k dt - header.stamp  (> 0, strictly up)

Executable action 0 answers the newest observation, so action ``k`` is due at
``t_o + k * dt``; the header is stamped at publish time (observation stamp plus measured
latency) and points that are already due are dropped, as Diffusion Policy's real-robot loop
does. Velocities are finite differences of the (safety-filtered) positions.
"""

from dataclasses import dataclass

from builtin_interfaces.msg import Duration, Time
import numpy as np
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from .safety import check_actions, SafetyFilter, SafetyReport


@dataclass(frozen=True)
class TrajectoryPlan:
    """Timed joint targets ready to become a ``trajectory_msgs/JointTrajectory``."""

    joint_names: tuple[str, ...]
    stamp: float  # header stamp, seconds on the node's clock
    times_from_start: np.ndarray  # (N,) seconds, > 0 and strictly increasing
    positions: np.ndarray  # (N, dof)
    velocities: np.ndarray  # (N, dof) per second
    dropped: int = 0  # executable actions already due at publish time
    safety: SafetyReport | None = None

    @property
    def absolute_times(self) -> np.ndarray:
        """(N,) times at which each point is due."""
        return self.stamp + self.times_from_start

    def __len__(self) -> int:
        """Return the number of points."""
        return int(self.times_from_start.shape[0])


def plan_chunk(executable: np.ndarray, observation_stamp: float, publish_time: float,
               control_period: float, joint_names: tuple[str, ...] | list[str],
               safety: SafetyFilter, current_positions: np.ndarray) -> TrajectoryPlan:
    """
    Turn executable actions (n, dof) into a trajectory stamped at ``publish_time``.

    Raises ``ActionRejected`` for non-finite or mis-shaped actions. The result has zero points
    when every action was already due (the chunk came too late).
    """
    joint_names = tuple(joint_names)
    actions = check_actions(executable, len(joint_names))
    due = observation_stamp + control_period * np.arange(actions.shape[0], dtype=np.float64)
    keep = due > publish_time
    dropped = int(actions.shape[0] - np.count_nonzero(keep))
    positions, report = safety.apply(actions[keep], current_positions) if keep.any() else (
        np.zeros((0, len(joint_names))), SafetyReport(0, 0))
    return TrajectoryPlan(
        joint_names=joint_names, stamp=float(publish_time),
        times_from_start=due[keep] - publish_time, positions=positions,
        velocities=finite_difference_velocities(positions, control_period),
        dropped=dropped, safety=report)


def hold_plan(positions: np.ndarray, joint_names: tuple[str, ...] | list[str], stamp: float,
              hold_after: float) -> TrajectoryPlan:
    """One point at ``positions`` with zero velocity, reached ``hold_after`` s after ``stamp``."""
    positions = np.asarray(positions, dtype=np.float64).reshape(1, -1)
    if positions.shape[1] != len(joint_names):
        raise ValueError(f'positions: expected {len(joint_names)} joints, got '
                         f'{positions.shape[1]}')
    if not hold_after > 0:
        raise ValueError(f'hold_after must be > 0 s, got {hold_after}')
    return TrajectoryPlan(joint_names=tuple(joint_names), stamp=float(stamp),
                          times_from_start=np.array([float(hold_after)]), positions=positions,
                          velocities=np.zeros_like(positions))


def finite_difference_velocities(positions: np.ndarray, period: float) -> np.ndarray:
    """Central differences inside, one-sided at the ends; zeros for a single point."""
    positions = np.asarray(positions, dtype=np.float64)
    if positions.shape[0] < 2:
        return np.zeros_like(positions)
    return np.gradient(positions, period, axis=0)


def seconds_to_stamp(seconds: float) -> tuple[int, int]:
    """Split seconds into (sec, nanosec) as in ``builtin_interfaces/Time``."""
    total = int(round(seconds * 1e9))
    return total // 1_000_000_000, total % 1_000_000_000


def stamp_to_seconds(stamp) -> float:
    """Seconds of a ``builtin_interfaces`` Time or Duration (anything with sec, nanosec)."""
    return float(stamp.sec) + 1e-9 * float(stamp.nanosec)


def to_joint_trajectory_msg(plan: TrajectoryPlan) -> JointTrajectory:
    """Build the ``trajectory_msgs/JointTrajectory`` for ``plan``."""
    msg = JointTrajectory()
    sec, nanosec = seconds_to_stamp(plan.stamp)
    msg.header.stamp = Time(sec=sec, nanosec=nanosec)
    msg.joint_names = list(plan.joint_names)
    for k in range(len(plan)):
        sec, nanosec = seconds_to_stamp(float(plan.times_from_start[k]))
        msg.points.append(JointTrajectoryPoint(
            positions=plan.positions[k].tolist(), velocities=plan.velocities[k].tolist(),
            time_from_start=Duration(sec=sec, nanosec=nanosec)))
    return msg
