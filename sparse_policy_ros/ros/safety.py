"""
What the node lets through to the arm: finite, position-clamped, speed-limited targets.

Three guards, each pure and unit-tested:

* :func:`check_actions` rejects a whole chunk that is not finite or has the wrong shape;
* :class:`SafetyFilter` clamps targets to the joint position limits and limits each step to
  ``max_velocity * control_period`` from the previous point (the first point from the current
  joint position), so no commanded segment asks for more than the maximum speed;
* :class:`HoldLatch` turns "observations are stale" into exactly one hold command per outage.
"""

from dataclasses import dataclass

import numpy as np


class ActionRejected(ValueError):
    """The policy produced actions that must not reach the arm."""


@dataclass(frozen=True)
class JointLimits:
    """Per-joint position and speed limits, in the order of the node's joint names."""

    lower: np.ndarray  # (dof,) rad (or m), lowest allowed position
    upper: np.ndarray  # (dof,) highest allowed position
    max_velocity: np.ndarray  # (dof,) largest allowed |velocity| per second, > 0

    def __post_init__(self):
        lower = np.asarray(self.lower, dtype=np.float64)
        upper = np.asarray(self.upper, dtype=np.float64)
        max_velocity = np.asarray(self.max_velocity, dtype=np.float64)
        if lower.ndim != 1 or lower.shape != upper.shape or lower.shape != max_velocity.shape:
            raise ValueError(
                f'lower, upper and max_velocity must be 1-D of equal length, got shapes '
                f'{lower.shape}, {upper.shape}, {max_velocity.shape}')
        for name, values in (('lower', lower), ('upper', upper),
                             ('max_velocity', max_velocity)):
            if not np.all(np.isfinite(values)):
                raise ValueError(f'{name} must be finite, got {values.tolist()}')
        if np.any(lower > upper):
            bad = int(np.argmax(lower > upper))
            raise ValueError(
                f'lower must be <= upper for every joint, got joint {bad}: '
                f'lower {lower[bad]} > upper {upper[bad]}')
        if np.any(max_velocity <= 0):
            raise ValueError(f'max_velocity must be > 0 for every joint, got '
                             f'{max_velocity.tolist()}')
        object.__setattr__(self, 'lower', lower)
        object.__setattr__(self, 'upper', upper)
        object.__setattr__(self, 'max_velocity', max_velocity)

    @property
    def dof(self) -> int:
        """Return the number of joints."""
        return int(self.lower.shape[0])


@dataclass(frozen=True)
class SafetyReport:
    """How much the filter changed a chunk."""

    position_clamped: int  # targets moved onto a position limit (points x joints)
    velocity_limited: int  # targets pulled back to respect the speed limit (points x joints)


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


class SafetyFilter:
    """Clamp targets to position limits and cap each step at the maximum speed."""

    def __init__(self, limits: JointLimits, control_period: float):
        """Use ``limits`` for targets spaced ``control_period`` seconds apart."""
        if not control_period > 0:
            raise ValueError(f'control_period must be > 0 s, got {control_period}')
        self.limits = limits
        self.control_period = float(control_period)

    @property
    def max_step(self) -> np.ndarray:
        """Largest allowed change per point, (dof,)."""
        return self.limits.max_velocity * self.control_period

    def apply(self, positions: np.ndarray,
              current: np.ndarray) -> tuple[np.ndarray, SafetyReport]:
        """
        Limit (n, dof) targets that follow the current joint positions (dof,).

        Position limits win over the speed limit: if ``current`` is outside the limits, the
        first target is the nearest allowed position even if that is more than one step away.
        """
        positions = check_actions(positions, self.limits.dof)
        current = np.asarray(current, dtype=np.float64)
        if current.shape != (self.limits.dof,):
            raise ValueError(
                f'current: expected shape ({self.limits.dof},), got {current.shape}')
        clamped = np.clip(positions, self.limits.lower, self.limits.upper)
        position_clamped = int(np.count_nonzero(clamped != positions))
        max_step = self.max_step
        out = np.empty_like(clamped)
        previous = current
        velocity_limited = 0
        for k in range(clamped.shape[0]):
            step = clamped[k] - previous
            limited = np.clip(step, -max_step, max_step)
            velocity_limited += int(np.count_nonzero(limited != step))
            out[k] = np.clip(previous + limited, self.limits.lower, self.limits.upper)
            previous = out[k]
        return out, SafetyReport(position_clamped=position_clamped,
                                 velocity_limited=velocity_limited)


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
