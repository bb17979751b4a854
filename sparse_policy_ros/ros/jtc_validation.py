"""
What a stock ROS 2 Jazzy joint_trajectory_controller accepts, and what the arm then does.

Two checks for every ``trajectory_msgs/JointTrajectory`` the policy node publishes:

* :func:`jtc_rejection` applies the acceptance rules of the Jazzy controller on its default
  parameters (``validate_trajectory_msg`` in ros2_controllers, used by the topic callback and
  the action server alike): the joint set must equal the controller's (no
  ``allow_partial_joints_goal``), there must be points, a non-zero header stamp plus the last
  ``time_from_start`` must not lie in the past, ``time_from_start`` must increase strictly,
  every point needs one position per joint, velocities (and accelerations) are empty or one
  per joint, and the last point's velocities must be zero
  (``allow_nonzero_velocity_at_trajectory_end`` false). It returns the reason, or None.
* :class:`CommandedMotionChecker` rebuilds the commanded motion from the accepted messages
  the way the controller does (replace on arrival from the command at that moment, cubic
  Hermite between points that carry velocities; ``control/trajectory_follower.py``) and checks
  the position, velocity and acceleration limits over every instant of every segment, the seam
  from one chunk to the next included (``motion.bounds``, closed form, not samples).

The controller's receipt time is taken as the header stamp (loopback DDS delivers within a
millisecond; the node drops points due within half a control period of it). With the default
``open_loop_control: false`` a real controller starts each new trajectory from the measured
state, not the command: seams then also carry the arm's tracking error, which no publisher can
check.
"""

from dataclasses import dataclass, field

import numpy as np
from trajectory_msgs.msg import JointTrajectory

from .trajectory import points_from_msg, stamp_to_seconds
from ..control import motion
from ..control.message_errors import MessageError
from ..control.safety import JointLimits
from ..control.trajectory_follower import TrajectoryFollower

# The controller compares the last velocity with zero exactly; we allow float noise.
END_VELOCITY_TOLERANCE = 1e-12
# Limits hold to this relative slack. Messages carry times in whole nanoseconds and the
# controller adds them to the stamp in float seconds (about 0.24 us resolution at wall-clock
# epochs), so a rebuilt segment's duration differs from the planned one by up to ~1e-5 of a
# control period; the closed-form extremes themselves are exact.
LIMIT_TOLERANCE = 1e-4


def jtc_rejection(msg: JointTrajectory, controller_joints: tuple[str, ...] | list[str],
                  now: float) -> str | None:
    """Return why a stock Jazzy controller would reject ``msg`` at time ``now``, or None."""
    names = list(msg.joint_names)
    if len(set(names)) != len(names):
        return f'joint_names has duplicates: {names}'
    if set(names) != set(controller_joints):
        return (f'joint_names {names} differ from the controller joints '
                f'{list(controller_joints)} (allow_partial_joints_goal is false)')
    if not msg.points:
        return 'empty trajectory (no points)'
    stamp = stamp_to_seconds(msg.header.stamp)
    last = stamp_to_seconds(msg.points[-1].time_from_start)
    if stamp != 0 and stamp + last < now:
        return (f'trajectory ends in the past: header.stamp {stamp:.6f} + last '
                f'time_from_start {last:.6f} < now {now:.6f}')
    previous = -np.inf
    for k, point in enumerate(msg.points):
        t = stamp_to_seconds(point.time_from_start)
        if k > 0 and not t > previous:
            return (f'points[{k}].time_from_start {t:.6f} s is not after '
                    f'points[{k - 1}] ({previous:.6f} s)')
        previous = t
        if len(point.positions) != len(names):
            return (f'points[{k}].positions has {len(point.positions)} values, expected '
                    f'{len(names)}')
        for kind in ('velocities', 'accelerations'):
            size = len(getattr(point, kind))
            if size not in (0, len(names)):
                return f'points[{k}].{kind} has {size} values, expected 0 or {len(names)}'
        if not all(np.isfinite(list(point.positions) + list(point.velocities))):
            return f'points[{k}] has non-finite positions or velocities'
    end_velocities = list(msg.points[-1].velocities)
    if end_velocities and max(abs(v) for v in end_velocities) > END_VELOCITY_TOLERANCE:
        return (f'last point velocities {end_velocities} are not zero '
                f'(allow_nonzero_velocity_at_trajectory_end is false)')
    return None


@dataclass
class LimitViolation:
    """One segment of the commanded motion that leaves a limit."""

    message: int  # index of the message that made the segment
    segment: int  # 0: the seam from the previous command; k: between points k-1 and k
    joint: int
    quantity: str  # 'position', 'velocity' or 'acceleration'
    value: float  # the extreme value
    limit: float

    def __str__(self) -> str:
        """Describe the violation for an assertion message."""
        where = 'seam' if self.segment == 0 else f'segment {self.segment}'
        return (f'message {self.message} {where} joint {self.joint}: {self.quantity} '
                f'{self.value:.6g} beyond limit {self.limit:.6g}')


@dataclass
class CommandedMotionChecker:
    """Rebuild the commanded motion from published messages and check it against limits."""

    joint_names: tuple[str, ...]
    limits: JointLimits
    rejections: list[str] = field(default_factory=list)
    violations: list[LimitViolation] = field(default_factory=list)
    messages: int = 0
    segments_checked: int = 0
    seams_checked: int = 0
    peak_speed_ratio: float = 0.0  # max over segments of |v| / max_velocity
    peak_acceleration_ratio: float = 0.0  # max over segments of |a| / max_acceleration
    # Stop-and-go: at each replacement, the commanded speed (max over joints) and whether the
    # previous message's braking stop (its last segment) had already begun.
    seam_speeds: list[float] = field(default_factory=list)
    braking_seams: int = 0
    _tail_start: float | None = field(default=None, init=False, repr=False)
    _follower: TrajectoryFollower = field(init=False, repr=False)
    _executed_until: float = field(default=-np.inf, init=False, repr=False)
    _pending: list = field(default_factory=list, init=False, repr=False)

    def __post_init__(self):
        """Start idle: the first message starts from the given rest position."""
        self.joint_names = tuple(self.joint_names)
        self._follower = TrajectoryFollower(self.joint_names)

    def add(self, msg: JointTrajectory, start_position: np.ndarray | None = None) -> None:
        """
        Apply the controller's rules to ``msg`` received at its header stamp; check its motion.

        ``start_position`` is the arm's position when nothing was commanded yet (at rest).
        """
        index = self.messages
        self.messages += 1
        now = stamp_to_seconds(msg.header.stamp)
        reason = jtc_rejection(msg, self.joint_names, now)
        if reason is not None:
            self.rejections.append(f'message {index}: {reason}')
            return
        if not self._follower.active and start_position is None:
            raise ValueError('start_position is needed for the first message')
        # The segments of the previous message up to now were executed: check them.
        self._check_until(now)
        if self._follower.active:
            self.seam_speeds.append(float(np.max(np.abs(self._follower.sample_state(now)[1]))))
            self.braking_seams += int(self._tail_start is not None and now > self._tail_start)
        try:
            times, positions, velocities = points_from_msg(msg)
            self._follower.set_trajectory(list(msg.joint_names), now, times, positions, now,
                                          start_position if start_position is not None
                                          else np.zeros(len(self.joint_names)), velocities)
        except MessageError as error:
            self.rejections.append(f'message {index}: {error}')
            return
        self._pending = [(index, k, segment) for k, segment in
                         enumerate(self._follower.segments())]
        self._tail_start = self._pending[-2][2][3] if len(self._pending) >= 2 else None
        self._executed_until = now

    @property
    def following(self) -> bool:
        """Tell whether a message is being followed (the next one is a seam, not from rest)."""
        return self._follower.active

    def restart(self) -> None:
        """
        Check what was executed, then forget it: something else moved the arm (a sim reset).

        The next message then starts from the ``start_position`` given with it, at rest.
        """
        self.finish()
        self._follower.clear()
        self._pending = []
        self._tail_start = None

    def finish(self) -> None:
        """Check the rest of the last message's motion (it runs to its end)."""
        self._check_until(np.inf)

    @property
    def ok(self) -> bool:
        """Tell whether every message was accepted and every checked segment kept the limits."""
        return not self.rejections and not self.violations

    def summary(self) -> dict:
        """Return counts and peaks, for a report."""
        return {'messages': self.messages, 'rejections': len(self.rejections),
                'violations': len(self.violations), 'segments_checked': self.segments_checked,
                'seams_checked': self.seams_checked, 'braking_seams': self.braking_seams,
                'peak_speed_ratio': round(self.peak_speed_ratio, 6),
                'peak_acceleration_ratio': round(self.peak_acceleration_ratio, 6)}

    def _check_until(self, t: float) -> None:
        """Check the pending segments that start before ``t`` (the part executed)."""
        lim = self.limits
        for index, k, (t0, p0, v0, t1, p1, v1) in self._pending:
            if t0 >= t or t1 <= t0:
                continue
            # Replaced mid-segment: only the part before the replacement was executed.
            extent = motion.bounds(p0, v0, p1, v1, t1 - t0, until=min(t, t1) - t0)
            self.segments_checked += 1
            self.seams_checked += int(k == 0 and index > 0)
            speed_ratio = extent.speed_max / lim.max_velocity
            accel_ratio = extent.acceleration_max / lim.max_acceleration
            self.peak_speed_ratio = max(self.peak_speed_ratio, float(np.max(speed_ratio)))
            self.peak_acceleration_ratio = max(self.peak_acceleration_ratio,
                                               float(np.max(accel_ratio)))
            checks = (('position', extent.position_min, lim.lower, -1),
                      ('position', extent.position_max, lim.upper, 1),
                      ('velocity', extent.speed_max, lim.max_velocity, 1),
                      ('acceleration', extent.acceleration_max, lim.max_acceleration, 1))
            for quantity, value, limit, sign in checks:
                slack = LIMIT_TOLERANCE * np.maximum(1.0, np.abs(limit))
                bad = sign * (value - limit) > slack
                for joint in np.flatnonzero(bad):
                    self.violations.append(LimitViolation(index, k, int(joint), quantity,
                                                          float(value[joint]),
                                                          float(limit[joint])))
        self._pending = [item for item in self._pending if item[2][0] >= t]
