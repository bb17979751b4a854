"""
Cubic Hermite segments: what a joint_trajectory_controller commands between two points.

Between a point (position ``p0``, velocity ``v0``) at time 0 and the next (``p1``, ``v1``) at
``T``, ros2_control's joint_trajectory_controller interpolates with the cubic Hermite spline
when both points carry velocities (linearly when they carry positions only). Everything here
is exact, vectorised over joints (arrays of shape (dof,)) and pure numpy:

* :func:`sample` gives position, velocity and acceleration at a time inside the segment;
* :func:`bounds` gives the segment's extreme position, peak speed and peak acceleration, found
  in closed form (the velocity is a parabola, the acceleration a line), so a limit check over
  a segment is a check of every instant, not of samples;
* :func:`mean_velocity_interval` is the range of mean velocities ``(p1 - p0) / T`` for which
  the spline stays within a speed and an acceleration limit, given its end velocities.

With ``m = (p1 - p0) / T`` and ``s = t / T`` the velocity is
``v(s) = v0 (1 - s) + v1 s + c s (1 - s)`` with ``c = 6 (m - (v0 + v1) / 2)``: ``m`` halfway
between the end velocities gives a straight velocity ramp (constant acceleration).
"""

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SegmentBounds:
    """Extremes of a segment over every instant in [0, T], per joint."""

    position_min: np.ndarray
    position_max: np.ndarray
    speed_max: np.ndarray  # max |v|
    acceleration_max: np.ndarray  # max |a|


def _as_arrays(*values):
    return [np.asarray(value, dtype=np.float64) for value in values]


def sample(p0, v0, p1, v1, duration: float, t) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Position, velocity and acceleration at ``t`` in [0, duration] of the cubic segment."""
    p0, v0, p1, v1 = _as_arrays(p0, v0, p1, v1)
    if not duration > 0:
        raise ValueError(f'duration must be > 0 s, got {duration}')
    s = float(t) / duration
    d = p1 - p0
    h00, h10, h01, h11 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s, -2 * s**3 + 3 * s**2, \
        s**3 - s**2
    position = h00 * p0 + h10 * duration * v0 + h01 * p1 + h11 * duration * v1
    dh00, dh10, dh01, dh11 = 6 * s**2 - 6 * s, 3 * s**2 - 4 * s + 1, -6 * s**2 + 6 * s, \
        3 * s**2 - 2 * s
    velocity = (dh00 * p0 + dh01 * p1) / duration + dh10 * v0 + dh11 * v1
    ddh00, ddh10, ddh11 = 12 * s - 6, 6 * s - 4, 6 * s - 2
    acceleration = (ddh00 * -d) / duration**2 + (ddh10 * v0 + ddh11 * v1) / duration
    return position, velocity, acceleration


def end_accelerations(p0, v0, p1, v1, duration: float) -> tuple[np.ndarray, np.ndarray]:
    """Acceleration at the start and at the end of the segment (it is linear in between)."""
    p0, v0, p1, v1 = _as_arrays(p0, v0, p1, v1)
    m = (p1 - p0) / duration
    return (6 * m - 4 * v0 - 2 * v1) / duration, (-6 * m + 2 * v0 + 4 * v1) / duration


def bounds(p0, v0, p1, v1, duration: float, until: float | None = None) -> SegmentBounds:
    """
    Exact extremes of the segment's position, speed and acceleration over [0, ``until``].

    ``until`` (default: the whole segment, ``duration``) checks only the part executed before
    a replacement, on the same polynomial (no refit of a short piece, which float noise would
    turn into a huge acceleration).
    """
    p0, v0, p1, v1 = _as_arrays(p0, v0, p1, v1)
    if not duration > 0:
        raise ValueError(f'duration must be > 0 s, got {duration}')
    u = 1.0 if until is None else min(max(float(until) / duration, 0.0), 1.0)
    m = (p1 - p0) / duration
    c = 6.0 * (m - 0.5 * (v0 + v1))
    a0, _ = end_accelerations(p0, v0, p1, v1, duration)
    if u < 1.0:
        p_end, v_end, a_end = sample(p0, v0, p1, v1, duration, u * duration)
    else:
        p_end, v_end, a_end = p1, v1, end_accelerations(p0, v0, p1, v1, duration)[1]
    # v(s) = v0 + (v1 - v0 + c) s - c s^2: a vertex inside (0, u) when c != 0.
    b = v1 - v0 + c
    with np.errstate(divide='ignore', invalid='ignore'):
        s_vertex = np.where(c != 0, b / (2 * c), -1.0)
    inside = (s_vertex > 0) & (s_vertex < u)
    v_vertex = np.where(inside, v0 + b * s_vertex - c * s_vertex**2, 0.0)
    speed = np.maximum.reduce([np.abs(v0), np.abs(v_end), np.abs(v_vertex)])
    # Position extremes: the ends and where v(s) = 0 inside (0, u).
    lows, highs = [np.minimum(p0, p_end)], [np.maximum(p0, p_end)]
    for s_root in _velocity_roots(v0, b, c):
        ok = (s_root > 0) & (s_root < u)
        position = _position_at(p0, v0, p1, v1, duration, np.where(ok, s_root, 0.0))
        lows.append(np.where(ok, position, np.inf))
        highs.append(np.where(ok, position, -np.inf))
    return SegmentBounds(position_min=np.minimum.reduce(lows),
                         position_max=np.maximum.reduce(highs), speed_max=speed,
                         acceleration_max=np.maximum(np.abs(a0), np.abs(a_end)))


def _velocity_roots(v0: np.ndarray, b: np.ndarray, c: np.ndarray) -> list[np.ndarray]:
    """Roots in s of ``v0 + b s - c s^2`` (NaN where there is none), per joint."""
    with np.errstate(divide='ignore', invalid='ignore'):
        linear = np.where(b != 0, -v0 / b, np.nan)
        disc = b**2 + 4 * c * v0
        root = np.sqrt(np.where(disc >= 0, disc, np.nan))
        first = np.where(c != 0, (b - root) / (2 * c), linear)
        second = np.where(c != 0, (b + root) / (2 * c), np.nan)
    return [np.nan_to_num(first, nan=-1.0), np.nan_to_num(second, nan=-1.0)]


def _position_at(p0, v0, p1, v1, duration, s):
    h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
    h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
    return h00 * p0 + h10 * duration * v0 + h01 * p1 + h11 * duration * v1


def mean_velocity_interval(v0, v1, duration: float, max_velocity,
                           max_acceleration) -> tuple[np.ndarray, np.ndarray]:
    """
    Mean velocities ``m`` for which the segment keeps |v| <= vmax and |a| <= amax everywhere.

    Requires |v0|, |v1| <= vmax and |v1 - v0| <= amax * duration; then the interval contains
    ``(v0 + v1) / 2`` (the constant-acceleration ramp) and is never empty.
    """
    v0, v1, vmax, amax = _as_arrays(v0, v1, max_velocity, max_acceleration)
    reach = amax * duration
    # |a(0)| = |6m - 4v0 - 2v1| / T and |a(T)| = |6m - 2v0 - 4v1| / T at most amax.
    low = np.maximum(4 * v0 + 2 * v1 - reach, 2 * v0 + 4 * v1 - reach) / 6.0
    high = np.minimum(4 * v0 + 2 * v1 + reach, 2 * v0 + 4 * v1 + reach) / 6.0
    # Peak speed of the parabola: c in [c_min, c_max] keeps it within vmax (closed form).
    up = np.sqrt(np.clip((vmax - v0) * (vmax - v1), 0.0, None))
    down = np.sqrt(np.clip((vmax + v0) * (vmax + v1), 0.0, None))
    c_max = (2 * vmax - v0 - v1) + 2 * up
    c_min = -((2 * vmax + v0 + v1) + 2 * down)
    middle = 0.5 * (v0 + v1)
    low = np.maximum(low, middle + c_min / 6.0)
    high = np.minimum(high, middle + c_max / 6.0)
    return low, high
