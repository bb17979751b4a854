"""
A :class:`~sparse_policy_ros.control.planning.TrajectoryPlan` as a ROS message, and back.

The timing, dropping and safety filtering of a chunk are numpy only and live in
``control/planning.py`` (its docstring shows the timeline); this module converts the result to
``trajectory_msgs/JointTrajectory``, reads incoming trajectories into arrays and converts
``builtin_interfaces`` stamps.
"""

from builtin_interfaces.msg import Duration, Time
import numpy as np
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from ..control.message_errors import MessageError
from ..control.planning import TrajectoryPlan


def points_from_msg(msg: JointTrajectory) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """
    Return (times_from_start (N,), positions (N, J), velocities (N, J) or None) of ``msg``.

    Velocities are None when every point leaves them empty. Raises :class:`MessageError` for
    points of different lengths, or velocities on some points only.
    """
    joints = len(msg.joint_names)
    times = np.array([stamp_to_seconds(p.time_from_start) for p in msg.points],
                     dtype=np.float64)
    for k, point in enumerate(msg.points):
        if len(point.positions) != joints:
            raise MessageError('trajectory_points', f'points[{k}].positions',
                               f'{joints} values (one per joint_names entry)',
                               f'{len(point.positions)} values')
    with_velocities = [len(p.velocities) > 0 for p in msg.points]
    if any(with_velocities) and not all(with_velocities):
        k = with_velocities.index(False)
        raise MessageError('trajectory_points', f'points[{k}].velocities',
                           'velocities on every point or on none', 'empty on this point only')
    for k, point in enumerate(msg.points):
        if with_velocities[k] and len(point.velocities) != joints:
            raise MessageError('trajectory_points', f'points[{k}].velocities',
                               f'empty or {joints} values', f'{len(point.velocities)} values')
    positions = np.array([list(p.positions) for p in msg.points],
                         dtype=np.float64).reshape(len(msg.points), joints)
    velocities = (np.array([list(p.velocities) for p in msg.points], dtype=np.float64)
                  if msg.points and all(with_velocities) else None)
    return times, positions, velocities


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
