"""
Follows joint trajectories the way ros2_control's joint_trajectory_controller does.

Semantics (pure numpy, times in float seconds on the controller's clock):

* a trajectory starts at its header stamp; a zero stamp means "now" (when received); before
  a future start the command holds;
* point ``i`` is due at ``start + time_from_start[i]``, times must be strictly increasing;
* points already due when the trajectory arrives are dropped; if all are, it is rejected and
  the active trajectory continues;
* a new trajectory replaces the active one; from its start the command moves linearly from
  the command at the moment of replacement (or the measured position when idle) to the first
  kept point, then linearly between points, and holds the last point afterwards;
* an empty trajectory stops: the command holds where it is now;
* joints may come in any order, but all of the controller's joints and no others.
"""

import numpy as np

from .message_errors import MessageError


class TrajectoryFollower:
    """Linear-interpolating joint trajectory executor with replace-on-arrival semantics."""

    def __init__(self, joint_names: tuple[str, ...] | list[str]):
        """Follow trajectories for ``joint_names`` (the order of every command returned)."""
        if not joint_names or len(set(joint_names)) != len(joint_names):
            raise ValueError(f'joint_names must be unique and non-empty, got {joint_names}')
        self.joint_names = tuple(joint_names)
        self._times = np.zeros(0)  # (N + 1,) anchor time then each point's due time
        self._positions = np.zeros((0, len(self.joint_names)))  # (N + 1, dof)

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

    def set_trajectory(self, joint_names: list[str] | tuple[str, ...], stamp: float,
                       times_from_start: np.ndarray, positions: np.ndarray, now: float,
                       current_positions: np.ndarray) -> int:
        """
        Replace the active trajectory; return how many points were kept.

        ``positions`` is (N, len(joint_names)) in the message's joint order; ``stamp`` 0 means
        ``now``. Raises :class:`MessageError` for a trajectory that cannot be followed (the
        active one then continues unchanged).
        """
        order = self._joint_order(joint_names)
        times_from_start = np.asarray(times_from_start, dtype=np.float64).reshape(-1)
        positions = np.asarray(positions, dtype=np.float64)
        start_command = self._start_command(now, current_positions)
        if times_from_start.size == 0:
            self._times = np.array([now])
            self._positions = start_command[None, :]
            return 0
        if positions.shape != (times_from_start.size, len(joint_names)):
            raise MessageError('trajectory_points', 'points[].positions',
                               f'{times_from_start.size} points x {len(joint_names)} joints',
                               f'shape {positions.shape}')
        if not np.all(np.isfinite(positions)):
            raise MessageError('trajectory_points', 'points[].positions', 'finite values',
                               'NaN or inf')
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
        self._positions = np.vstack([start_command[None, :], ordered[keep]])
        return int(np.count_nonzero(keep))

    def sample(self, t: float) -> np.ndarray | None:
        """Commanded positions (dof,) at time ``t``; None when idle."""
        if not self.active:
            return None
        if t <= self._times[0]:
            return self._positions[0].copy()
        if t >= self._times[-1]:
            return self._positions[-1].copy()
        upper = int(np.searchsorted(self._times, t, side='right'))
        t0, t1 = self._times[upper - 1], self._times[upper]
        alpha = (t - t0) / (t1 - t0)
        return (1.0 - alpha) * self._positions[upper - 1] + alpha * self._positions[upper]

    def remaining(self, t: float) -> int:
        """Points of the active trajectory not yet due at ``t`` (the anchor is not a point)."""
        if not self.active:
            return 0
        return int(np.count_nonzero(self._times[1:] > t))

    def _start_command(self, now: float, current_positions: np.ndarray) -> np.ndarray:
        if self.active:
            return self.sample(now)
        current = np.asarray(current_positions, dtype=np.float64)
        if current.shape != (len(self.joint_names),):
            raise ValueError(f'current_positions: expected shape ({len(self.joint_names)},), '
                             f'got {current.shape}')
        return current.copy()

    def _joint_order(self, joint_names: list[str] | tuple[str, ...]) -> list[int]:
        names = list(joint_names)
        if sorted(names) != sorted(self.joint_names):
            raise MessageError('trajectory_joints', 'joint_names',
                               f'a permutation of {list(self.joint_names)}', names)
        return [names.index(name) for name in self.joint_names]
