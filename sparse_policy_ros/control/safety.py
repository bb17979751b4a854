"""
What the node lets through to the arm: finite targets on a motion within every joint limit.

Three guards, each pure and unit-tested:

* :func:`check_actions` rejects a whole chunk that is not finite or has the wrong shape;
* :class:`SafetyFilter` turns timed targets into the points a joint_trajectory_controller
  interpolates (positions and velocities, cubic Hermite segments; ``motion.py``), starting from
  the current command and its velocity, so that every instant of every segment, the seam to
  the new chunk included, stays within the position, velocity and acceleration limits; the last
  point is a braking stop with zero velocity, which a stock controller accepts;
* :class:`HoldLatch` turns "observations are stale" into exactly one hold command per outage.
"""

from dataclasses import dataclass

import numpy as np

from . import motion


class ActionRejected(ValueError):
    """The policy produced actions that must not reach the arm."""


@dataclass(frozen=True)
class JointLimits:
    """Per-joint position, speed and acceleration limits, in the node's joint order."""

    lower: np.ndarray  # (dof,) rad (or m), lowest allowed position
    upper: np.ndarray  # (dof,) highest allowed position
    max_velocity: np.ndarray  # (dof,) largest allowed |velocity| per second, > 0
    max_acceleration: np.ndarray  # (dof,) largest allowed |acceleration| per second^2, > 0

    def __post_init__(self):
        arrays = {name: np.asarray(getattr(self, name), dtype=np.float64)
                  for name in ('lower', 'upper', 'max_velocity', 'max_acceleration')}
        shapes = {array.shape for array in arrays.values()}
        if len(shapes) != 1 or arrays['lower'].ndim != 1:
            raise ValueError(
                f'lower, upper, max_velocity and max_acceleration must be 1-D of equal length, '
                f'got shapes {[array.shape for array in arrays.values()]}')
        for name, values in arrays.items():
            if not np.all(np.isfinite(values)):
                raise ValueError(f'{name} must be finite, got {values.tolist()}')
        lower, upper = arrays['lower'], arrays['upper']
        if np.any(lower > upper):
            bad = int(np.argmax(lower > upper))
            raise ValueError(
                f'lower must be <= upper for every joint, got joint {bad}: '
                f'lower {lower[bad]} > upper {upper[bad]}')
        for name in ('max_velocity', 'max_acceleration'):
            if np.any(arrays[name] <= 0):
                raise ValueError(f'{name} must be > 0 for every joint, got '
                                 f'{arrays[name].tolist()}')
        for name, values in arrays.items():
            object.__setattr__(self, name, values)

    @property
    def dof(self) -> int:
        """Return the number of joints."""
        return int(self.lower.shape[0])


@dataclass(frozen=True)
class SafetyReport:
    """How much the filter changed a chunk."""

    position_clamped: int  # targets moved onto a position limit (points x joints)
    velocity_limited: int  # targets moved to respect the speed / acceleration limits
    truncated: int = 0  # targets dropped: no segment to them stays within the limits


def check_actions(actions: np.ndarray, dof: int) -> np.ndarray:
    """Return ``actions`` as float64 (n, dof); raise ActionRejected if unusable."""
    actions = np.asarray(actions)
    if actions.ndim != 2 or actions.shape[1] != dof or actions.shape[0] == 0:
        raise ActionRejected(f'actions: expected shape (n >= 1, {dof}), got {actions.shape}')
    if not np.all(np.isfinite(actions)):
        index = np.argwhere(~np.isfinite(actions))[0].tolist()
        raise ActionRejected(
            f'actions: expected finite values, got {actions[tuple(index)]} at (step, joint) '
            f'{tuple(index)}; chunk rejected')
    return actions.astype(np.float64)


@dataclass(frozen=True)
class PlannedMotion:
    """Points a controller interpolates with cubic Hermite segments from the current command."""

    times: np.ndarray  # (N,) seconds after the start (the current command), strictly up
    positions: np.ndarray  # (N, dof)
    velocities: np.ndarray  # (N, dof); the last row is zero (a braking stop)
    executable: int  # leading points that are the policy's targets; the rest is the stop
    report: SafetyReport


class SafetyFilter:
    """Plan limit-respecting Hermite points through timed targets, ending in a braking stop."""

    def __init__(self, limits: JointLimits, control_period: float):
        """Use ``limits``; ``control_period`` is the shortest braking segment (seconds)."""
        if not control_period > 0:
            raise ValueError(f'control_period must be > 0 s, got {control_period}')
        self.limits = limits
        self.control_period = float(control_period)

    def plan(self, targets: np.ndarray, times: np.ndarray, current_position: np.ndarray,
             current_velocity: np.ndarray) -> PlannedMotion:
        """
        Points through (n, dof) ``targets`` due at ``times`` (s after now, > 0, increasing).

        Each target's velocity is the central difference from the point before it (the current
        command before the first) to the target after it, cut to what the acceleration limit
        reaches from the previous point, to the speed limit and to a speed that can still brake
        before a position limit; the target itself then moves to the nearest position the
        segment reaches within the speed and acceleration limits. A target whose segment would
        leave the position limits is dropped with all after it. After the last target a braking
        stop (zero velocity, constant deceleration within the limit) is appended: a stock
        controller accepts it, and the next chunk replaces it before it starts when inference
        keeps up.
        """
        dof = self.limits.dof
        targets = check_actions(targets, dof)
        times = np.asarray(times, dtype=np.float64).reshape(-1)
        if times.shape != (targets.shape[0],) or not np.all(np.isfinite(times)) or (
                times[0] <= 0) or np.any(np.diff(times) <= 0):
            raise ValueError(f'times: expected {targets.shape[0]} finite values > 0, strictly '
                             f'increasing, got {times.tolist()}')
        p0, v0 = self._current(current_position, current_velocity)
        lim = self.limits
        # A joint that starts outside its range may move back in, never further out.
        self._allowed = (np.minimum(lim.lower, p0), np.maximum(lim.upper, p0))
        clamped = np.clip(targets, lim.lower, lim.upper)
        position_clamped = int(np.count_nonzero(clamped != targets))
        positions, velocities = [p0], [v0]
        velocity_limited = 0
        stamps = np.concatenate([[0.0], times])
        for k in range(clamped.shape[0]):
            duration = times[k] - stamps[k]
            # Central difference from the point reached (which may lag its target) to the
            # next target: a chunk the limits cannot follow keeps moving toward its targets
            # instead of coming to rest at every point.
            after = min(k + 1, clamped.shape[0] - 1)
            reference = (clamped[after] - positions[-1]) / (stamps[after + 1] - stamps[k])
            point = self._segment(positions[-1], velocities[-1], clamped[k], reference,
                                  duration)
            if point is None:
                break
            velocity_limited += int(np.count_nonzero(np.abs(point[0] - clamped[k]) > 1e-12))
            positions.append(point[0])
            velocities.append(point[1])
        executable = len(positions) - 1
        while True:
            stop = self._stop(positions[-1], velocities[-1], check=executable > 0)
            if stop is not None:
                break
            positions.pop()
            velocities.pop()
            executable -= 1
        stop_duration, stop_position = stop
        start = times[executable - 1] if executable else 0.0
        all_times = np.concatenate([times[:executable], [start + stop_duration]])
        return PlannedMotion(
            times=all_times, positions=np.vstack(positions[1:] + [stop_position]),
            velocities=np.vstack(velocities[1:] + [np.zeros(dof)]), executable=executable,
            report=SafetyReport(position_clamped=position_clamped,
                                velocity_limited=velocity_limited,
                                truncated=int(targets.shape[0] - executable)))

    def stop(self, current_position: np.ndarray,
             current_velocity: np.ndarray) -> tuple[float, np.ndarray]:
        """
        Braking stop from the current command: (seconds to it, position), zero velocity there.

        Constant deceleration at most the acceleration limit and never shorter than one control
        period; the stop position is clamped to the position limits (for a joint already
        outside them: never further out than it is).
        """
        p0, v0 = self._current(current_position, current_velocity)
        lim = self.limits
        self._allowed = (np.minimum(lim.lower, p0), np.maximum(lim.upper, p0))
        return self._stop(p0, v0, check=False)

    # ------------------------------------------------------------------ internals
    def _current(self, position, velocity) -> tuple[np.ndarray, np.ndarray]:
        dof = self.limits.dof
        position = np.asarray(position, dtype=np.float64)
        velocity = np.asarray(velocity, dtype=np.float64)
        for name, value in (('current_position', position), ('current_velocity', velocity)):
            if value.shape != (dof,) or not np.all(np.isfinite(value)):
                raise ValueError(f'{name}: expected {dof} finite values, got {value.tolist()}')
        return position, velocity

    def _segment(self, p0, v0, target, reference, duration):
        """Return the point (position, velocity) ending a segment toward ``target``, or None."""
        lim = self.limits
        cap = np.minimum(lim.max_velocity,
                         _braking_speed(target, reference, lim, self.control_period))
        reach = lim.max_acceleration * duration
        for attempt in range(2):
            v1 = np.clip(np.clip(reference, -cap, cap), v0 - reach, v0 + reach)
            low, high = motion.mean_velocity_interval(v0, v1, duration, lim.max_velocity,
                                                      lim.max_acceleration)
            low = np.minimum(low, high)  # empty only when v0 itself breaks a limit
            p1 = p0 + np.clip((target - p0) / duration, low, high) * duration
            if self._within_positions(p0, v0, p1, v1, duration):
                return p1, v1
            cap = np.zeros_like(cap)  # retry arriving at rest
        return None

    def _stop(self, p0, v0, check: bool):
        lim = self.limits
        duration = max(self.control_period,
                       float(np.max(np.abs(v0) / lim.max_acceleration)))
        p1 = np.clip(p0 + 0.5 * v0 * duration, *self._allowed)
        if check:
            if not (self._within_positions(p0, v0, p1, np.zeros_like(v0), duration)
                    and self._within_dynamics(p0, v0, p1, duration)):
                return None
            return duration, p1
        # Unchecked (a hold from wherever the command is): a joint too close to its limit to
        # brake at constant deceleration ends on the limit; lengthen the stop until the
        # acceleration limit holds (it then overshoots the limit a little and comes back,
        # which no stop from that state avoids).
        for _ in range(60):
            if self._within_dynamics(p0, v0, p1, duration):
                break
            duration *= 1.25
            p1 = np.clip(p0 + 0.5 * v0 * duration, *self._allowed)
        return duration, p1

    def _within_positions(self, p0, v0, p1, v1, duration) -> bool:
        extent = motion.bounds(p0, v0, p1, v1, duration)
        lower, upper = self._allowed
        return bool(np.all(extent.position_min >= lower - POSITION_TOLERANCE)
                    and np.all(extent.position_max <= upper + POSITION_TOLERANCE))

    def _within_dynamics(self, p0, v0, p1, duration) -> bool:
        lim = self.limits
        extent = motion.bounds(p0, v0, p1, np.zeros_like(v0), duration)
        return bool(np.all(extent.speed_max <= lim.max_velocity * (1 + 1e-9))
                    and np.all(extent.acceleration_max <= lim.max_acceleration * (1 + 1e-9)))


POSITION_TOLERANCE = 1e-9


def _braking_speed(position: np.ndarray, direction: np.ndarray, limits: JointLimits,
                   period: float) -> np.ndarray:
    """
    Largest speed toward the limit ahead from which a stop within it is still possible.

    The stop decelerates at most at the limit and lasts at least ``period``; both distances
    (``v^2 / (2 a)`` and ``v period / 2``) fit, with a margin of two on the first.
    """
    distance = np.clip(np.where(direction >= 0, limits.upper - position,
                                position - limits.lower), 0.0, None)
    return np.minimum(np.sqrt(distance * limits.max_acceleration), 2.0 * distance / period)


class HoldLatch:
    """
    Fires once when data goes stale and re-arms when fresh data returns.

    ``update(stale=True)`` returns True only on the first stale update after fresh data (or
    after :meth:`arm`), so an outage publishes one hold command, not one per tick.
    """

    def __init__(self):
        """Start disarmed: nothing was commanded yet, so there is nothing to stop."""
        self._armed = False

    def arm(self) -> None:
        """Allow the next stale update to fire (e.g. after a trajectory was published)."""
        self._armed = True

    def disarm(self) -> None:
        """Nothing to stop any more (e.g. a hold was sent some other way, or data was cleared)."""
        self._armed = False

    def update(self, stale: bool) -> bool:
        """Record the data state; True means 'publish one hold now'."""
        if not stale:
            self._armed = True
            return False
        fire = self._armed
        self._armed = False
        return fire
