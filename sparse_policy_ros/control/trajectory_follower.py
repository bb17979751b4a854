"""
Follows joint trajectories the way ros2_control's joint_trajectory_controller does.

Semantics (pure numpy, times in float seconds on the controller's clock):

* a trajectory starts at its header stamp; a zero stamp means "now" (when received); before
  a future start the command holds;
* point ``i`` is due at ``start + time_from_start[i]``, times must be strictly increasing;
* points already due when the trajectory arrives are dropped; if all are, it is rejected and
  the active trajectory continues;
* a new trajectory replaces the active one; from its start the command moves from the command
  at the moment of replacement (position and velocity; the measured position at rest when idle)
  to the first kept point, then between points, and holds the last point (at rest) afterwards;
* between points the command is the cubic Hermite spline through positions and velocities when
  the points carry velocities, linear when they carry positions only (as the controller's
  ``interpolation_method: splines`` does);
* an empty trajectory stops: the command holds where it is now;
* joints may come in any order, but all of the controller's joints and no others.
"""

import numpy as np

from . import motion
from .message_errors import MessageError


class TrajectoryFollower:
    """Spline-interpolating joint trajectory executor with replace-on-arrival semantics."""

    def __init__(self, joint_names: tuple[str, ...] | list[str]):
        """Follow trajectories for ``joint_names`` (the order of every command returned)."""
        if not joint_names or len(set(joint_names)) != len(joint_names):
            raise ValueError(f'joint_names must be unique and non-empty, got {joint_names}')
        self.joint_names = tuple(joint_names)
        self._times = np.zeros(0)  # (N + 1,) anchor time then each point's due time
        self._positions = np.zeros((0, len(self.joint_names)))  # (N + 1, dof)
        self._velocities: np.ndarray | None = None  # (N + 1, dof); None: linear

    @property
    def active(self) -> bool:
        """Tell whether a trajectory (or hold) is being followed."""
        return self._times.size > 0

    @property
    def end_time(self) -> float | None:
        """Due time of the last point, None when idle."""
        return float(self._times[-1]) if self.active else None

    def clear(self) -> None:
        """Drop the active trajectory (e.g. on an episode reset)."""
        self._times = np.zeros(0)
        self._positions = np.zeros((0, len(self.joint_names)))
        self._velocities = None

    def set_trajectory(self, joint_names: list[str] | tuple[str, ...], stamp: float,
                       times_from_start: np.ndarray, positions: np.ndarray, now: float,
                       current_positions: np.ndarray,
                       velocities: np.ndarray | None = None) -> int:
        """
        Replace the active trajectory; return how many points were kept.

        ``positions`` (and ``velocities``, None or empty for position-only points) are
        (N, len(joint_names)) in the message's joint order; ``stamp`` 0 means ``now``. Raises
        :class:`MessageError` for a trajectory that cannot be followed (the active one then
        continues unchanged).
        """
        order = self._joint_order(joint_names)
        times_from_start = np.asarray(times_from_start, dtype=np.float64).reshape(-1)
        positions = np.asarray(positions, dtype=np.float64)
        if velocities is not None:
            velocities = np.asarray(velocities, dtype=np.float64)
            if velocities.size == 0:
                velocities = None
        start_position, start_velocity = self._start_command(now, current_positions)
        if times_from_start.size == 0:
            self._times = np.array([now])
            self._positions = start_position[None, :]
            self._velocities = None
            return 0
        if positions.shape != (times_from_start.size, len(joint_names)):
            raise MessageError('trajectory_points', 'points[].positions',
                               f'{times_from_start.size} points x {len(joint_names)} joints',
                               f'shape {positions.shape}')
        if not np.all(np.isfinite(positions)):
            raise MessageError('trajectory_points', 'points[].positions', 'finite values',
                               'NaN or inf')
        if velocities is not None:
            if velocities.shape != positions.shape:
                raise MessageError('trajectory_points', 'points[].velocities',
                                   f'empty or {times_from_start.size} points x '
                                   f'{len(joint_names)} joints', f'shape {velocities.shape}')
            if not np.all(np.isfinite(velocities)):
                raise MessageError('trajectory_points', 'points[].velocities',
                                   'finite values', 'NaN or inf')
        if np.any(np.diff(times_from_start) <= 0):
            bad = int(np.argmax(np.diff(times_from_start) <= 0)) + 1
            raise MessageError('trajectory_points', f'points[{bad}].time_from_start',
                               f'> points[{bad - 1}].time_from_start = '
                               f'{times_from_start[bad - 1]:.6f} s',
                               f'{times_from_start[bad]:.6f} s')
        start = now if stamp == 0 else stamp
        due = start + times_from_start
        keep = due > now
        if not keep.any():
            raise MessageError('trajectory_late', 'header.stamp + points[-1].time_from_start',
                               f'after now ({now:.6f} s)', f'{due[-1]:.6f} s')
        ordered = positions[:, order]  # (N, dof) in the controller's joint order
        self._times = np.concatenate([[max(now, start)], due[keep]])
        self._positions = np.vstack([start_position[None, :], ordered[keep]])
        self._velocities = None if velocities is None else np.vstack(
            [start_velocity[None, :], velocities[:, order][keep]])
        return int(np.count_nonzero(keep))

    def sample(self, t: float) -> np.ndarray | None:
        """Commanded positions (dof,) at time ``t``; None when idle."""
        state = self.sample_state(t)
        return None if state is None else state[0]

    def sample_state(self, t: float) -> tuple[np.ndarray, np.ndarray] | None:
        """
        Commanded (position, velocity) at time ``t``, each (dof,); None when idle.

        Before the anchor the command holds the anchor's state; after the last point it holds
        the last position at rest.
        """
        if not self.active:
            return None
        dof = len(self.joint_names)
        if t >= self._times[-1]:
            return self._positions[-1].copy(), np.zeros(dof)
        if t <= self._times[0]:
            velocity = np.zeros(dof) if self._velocities is None else self._velocities[0]
            return self._positions[0].copy(), velocity.copy()
        upper = int(np.searchsorted(self._times, t, side='right'))
        t0, t1 = self._times[upper - 1], self._times[upper]
        p0, p1 = self._positions[upper - 1], self._positions[upper]
        if self._velocities is None:
            alpha = (t - t0) / (t1 - t0)
            return (1.0 - alpha) * p0 + alpha * p1, (p1 - p0) / (t1 - t0)
        position, velocity, _ = motion.sample(p0, self._velocities[upper - 1], p1,
                                              self._velocities[upper], t1 - t0, t - t0)
        return position, velocity

    def segments(self):
        """
        Yield (t0, p0, v0, t1, p1, v1) for each segment of the active trajectory.

        Linear trajectories yield their constant segment velocity as both ``v0`` and ``v1``.
        """
        for k in range(1, self._times.size):
            t0, t1 = float(self._times[k - 1]), float(self._times[k])
            p0, p1 = self._positions[k - 1], self._positions[k]
            if self._velocities is None:
                v = (p1 - p0) / (t1 - t0) if t1 > t0 else np.zeros_like(p0)
                yield t0, p0, v, t1, p1, v
            else:
                yield t0, p0, self._velocities[k - 1], t1, p1, self._velocities[k]

    def remaining(self, t: float) -> int:
        """Points of the active trajectory not yet due at ``t`` (the anchor is not a point)."""
        if not self.active:
            return 0
        return int(np.count_nonzero(self._times[1:] > t))

    def _start_command(self, now: float,
                       current_positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.active:
            return self.sample_state(now)
        current = np.asarray(current_positions, dtype=np.float64)
        if current.shape != (len(self.joint_names),):
            raise ValueError(f'current_positions: expected shape ({len(self.joint_names)},), '
                             f'got {current.shape}')
        return current.copy(), np.zeros(len(self.joint_names))

    def _joint_order(self, joint_names: list[str] | tuple[str, ...]) -> list[int]:
        names = list(joint_names)
        if sorted(names) != sorted(self.joint_names):
            raise MessageError('trajectory_joints', 'joint_names',
                               f'a permutation of {list(self.joint_names)}', names)
        return [names.index(name) for name in self.joint_names]
