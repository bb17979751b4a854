"""Cubic Hermite segments: sampling, exact extremes and the mean velocities within limits."""

import numpy as np
import pytest
from sparse_policy_ros.control import motion


def oracle(p0, v0, p1, v1, duration):
    """Solve for the cubic p(t) with p(0) = p0, p'(0) = v0, p(T) = p1, p'(T) = v1."""
    system = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0],
                       [1.0, duration, duration**2, duration**3],
                       [0.0, 1.0, 2 * duration, 3 * duration**2]])
    return np.polynomial.Polynomial(np.linalg.solve(system, [p0, v0, p1, v1]))


def dense_extremes(poly, duration):
    """(min, max) of ``poly`` over [0, T]: a dense grid, then a dense grid around the best."""
    lows, highs = [], []
    for sign, out in ((1.0, highs), (-1.0, lows)):
        grid = np.linspace(0.0, duration, 20001)
        best = int(np.argmax(sign * poly(grid)))
        fine = np.linspace(grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)], 20001)
        out.append(float(np.max(sign * poly(fine))) * sign)
    return lows[0], highs[0]


def random_segment(rng, dof=4):
    p0, p1 = rng.uniform(-1.0, 1.0, (2, dof))
    v0, v1 = rng.normal(0.0, 1.0, (2, dof))
    return p0, v0, p1, v1, float(rng.uniform(0.05, 0.5))


def test_sample_meets_the_end_conditions_and_is_consistent():
    rng = np.random.default_rng(0)
    for _ in range(20):
        p0, v0, p1, v1, duration = random_segment(rng)
        start = motion.sample(p0, v0, p1, v1, duration, 0.0)
        end = motion.sample(p0, v0, p1, v1, duration, duration)
        np.testing.assert_allclose(start[0], p0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(start[1], v0, rtol=0, atol=1e-12)
        np.testing.assert_allclose(end[0], p1, rtol=0, atol=1e-12)
        np.testing.assert_allclose(end[1], v1, rtol=0, atol=1e-12)
        a0, a1 = motion.end_accelerations(p0, v0, p1, v1, duration)
        np.testing.assert_allclose(start[2], a0, rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(end[2], a1, rtol=1e-9, atol=1e-9)
        h = 1e-6 * duration
        for t in rng.uniform(0.1, 0.9, 3) * duration:
            before = motion.sample(p0, v0, p1, v1, duration, t - h)
            now = motion.sample(p0, v0, p1, v1, duration, t)
            after = motion.sample(p0, v0, p1, v1, duration, t + h)
            # Central differences of a cubic: exact for velocity up to the h^2 jerk term.
            np.testing.assert_allclose((after[0] - before[0]) / (2 * h), now[1],
                                       rtol=1e-6, atol=1e-6)
            np.testing.assert_allclose((after[1] - before[1]) / (2 * h), now[2],
                                       rtol=1e-6, atol=1e-5)
            for joint in range(p0.size):
                poly = oracle(p0[joint], v0[joint], p1[joint], v1[joint], duration)
                assert now[0][joint] == pytest.approx(poly(t), abs=1e-10)


def test_sample_rejects_non_positive_durations():
    with pytest.raises(ValueError, match='duration must be > 0 s, got 0.0'):
        motion.sample(0.0, 0.0, 1.0, 0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match='duration must be > 0 s'):
        motion.bounds(0.0, 0.0, 1.0, 0.0, -1.0)


def test_bounds_equal_a_dense_search_of_every_instant():
    rng = np.random.default_rng(1)
    for _ in range(40):
        p0, v0, p1, v1, duration = random_segment(rng)
        extent = motion.bounds(p0, v0, p1, v1, duration)
        for joint in range(p0.size):
            poly = oracle(p0[joint], v0[joint], p1[joint], v1[joint], duration)
            low, high = dense_extremes(poly, duration)
            v_low, v_high = dense_extremes(poly.deriv(), duration)
            a_low, a_high = dense_extremes(poly.deriv(2), duration)
            assert extent.position_min[joint] == pytest.approx(low, abs=1e-9)
            assert extent.position_max[joint] == pytest.approx(high, abs=1e-9)
            assert extent.speed_max[joint] == pytest.approx(max(-v_low, v_high), abs=1e-9)
            assert extent.acceleration_max[joint] == pytest.approx(max(-a_low, a_high),
                                                                   abs=1e-9)


def test_bounds_of_special_segments():
    # At rest: a point. A straight ramp: constant acceleration, speed peaks at an end.
    extent = motion.bounds([0.3], [0.0], [0.3], [0.0], 0.1)
    assert (extent.position_min[0], extent.position_max[0]) == (0.3, 0.3)
    assert (extent.speed_max[0], extent.acceleration_max[0]) == (0.0, 0.0)
    extent = motion.bounds([0.0], [0.0], [0.5], [1.0], 1.0)
    np.testing.assert_allclose([extent.speed_max[0], extent.acceleration_max[0]], [1.0, 1.0],
                               rtol=0, atol=1e-12)
    # Overshoot: leaves at speed 1 toward +, must come back to 0 at rest.
    extent = motion.bounds([0.0], [1.0], [0.0], [0.0], 1.0)
    assert extent.position_max[0] == pytest.approx(4.0 / 27.0, abs=1e-12)
    assert extent.position_min[0] == 0.0


def interval_cases(rng, count):
    for _ in range(count):
        vmax = rng.uniform(0.5, 3.0, 3)
        amax = rng.uniform(1.0, 30.0, 3)
        duration = float(rng.uniform(0.01, 0.3))
        v0 = rng.uniform(-0.95, 0.95, 3) * vmax
        reach = amax * duration
        v1 = np.clip(v0 + rng.uniform(-1.0, 1.0, 3) * reach, -0.95 * vmax, 0.95 * vmax)
        yield v0, v1, duration, vmax, amax


def test_every_mean_velocity_inside_the_interval_keeps_the_limits():
    rng = np.random.default_rng(2)
    for v0, v1, duration, vmax, amax in interval_cases(rng, 100):
        low, high = motion.mean_velocity_interval(v0, v1, duration, vmax, amax)
        middle = 0.5 * (v0 + v1)
        assert np.all(low <= middle + 1e-12) and np.all(middle <= high + 1e-12)
        for u in np.linspace(0.0, 1.0, 9):
            m = low + u * (high - low)
            extent = motion.bounds(np.zeros(3), v0, m * duration, v1, duration)
            assert np.all(extent.speed_max <= vmax * (1 + 1e-9)), (u, extent, vmax)
            assert np.all(extent.acceleration_max <= amax * (1 + 1e-9)), (u, extent, amax)


def test_a_mean_velocity_just_outside_the_interval_breaks_a_limit():
    rng = np.random.default_rng(3)
    for v0, v1, duration, vmax, amax in interval_cases(rng, 100):
        low, high = motion.mean_velocity_interval(v0, v1, duration, vmax, amax)
        step = 1e-6 * (vmax + amax * duration)
        for m in (high + step, low - step):
            extent = motion.bounds(np.zeros(3), v0, m * duration, v1, duration)
            broken = (extent.speed_max > vmax * (1 + 1e-12)) | (
                extent.acceleration_max > amax * (1 + 1e-12))
            assert np.all(broken), (m, low, high, extent)
