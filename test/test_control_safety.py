"""Safety: finite checks, limits on every instant of the planned motion, one hold per outage."""

import numpy as np
import pytest
from sparse_policy_ros.control import motion
from sparse_policy_ros.control.safety import ActionRejected, check_actions, HoldLatch
from sparse_policy_ros.control.safety import JointLimits, SafetyFilter

LIMITS = JointLimits(lower=np.array([-1.0, 0.0]), upper=np.array([1.0, 2.0]),
                     max_velocity=np.array([1.0, 4.0]), max_acceleration=np.array([5.0, 20.0]))
ONE_JOINT = JointLimits(lower=np.array([-1.0]), upper=np.array([1.0]),
                        max_velocity=np.array([1.0]), max_acceleration=np.array([5.0]))


def segments(planned, p0, v0):
    """Yield (p0, v0, p1, v1, duration) for every segment, the first from the current command."""
    position, velocity, t = np.asarray(p0, float), np.asarray(v0, float), 0.0
    for k in range(planned.times.size):
        yield position, velocity, planned.positions[k], planned.velocities[k], \
            planned.times[k] - t
        position, velocity, t = planned.positions[k], planned.velocities[k], planned.times[k]


def violations(limits, planned, p0, v0) -> list[str]:
    """Every limit that some instant of the planned motion breaks (closed-form extremes)."""
    found = []
    for k, (a, va, b, vb, duration) in enumerate(segments(planned, p0, v0)):
        assert duration > 0, f'segment {k}: duration {duration}'
        extent = motion.bounds(a, va, b, vb, duration)
        for name, bad in (
                ('position below', extent.position_min < limits.lower - 1e-9),
                ('position above', extent.position_max > limits.upper + 1e-9),
                ('speed', extent.speed_max > limits.max_velocity * (1 + 1e-9)),
                ('acceleration',
                 extent.acceleration_max > limits.max_acceleration * (1 + 1e-9))):
            if np.any(bad):
                found.append(f'segment {k}: {name} limit, joints {np.flatnonzero(bad)}')
    return found


def brakeable(limits, position, velocity, period) -> bool:
    """Tell whether the filter's own stop from this state keeps the position limits."""
    duration = max(period, float(np.max(np.abs(velocity) / limits.max_acceleration)))
    end = position + 0.5 * velocity * duration
    return bool(np.all(end >= limits.lower) and np.all(end <= limits.upper))


def test_rejects_non_finite_and_misshaped_actions():
    with pytest.raises(ActionRejected, match=r'nan at \(step, joint\) \(1, 0\)'):
        check_actions(np.array([[0.0, 0.0], [np.nan, 0.0]]), 2)
    with pytest.raises(ActionRejected, match='inf'):
        check_actions(np.array([[np.inf, 0.0]]), 2)
    with pytest.raises(ActionRejected, match=r'expected shape \(n >= 1, 2\), got \(3,\)'):
        check_actions(np.zeros(3), 2)
    with pytest.raises(ActionRejected):
        check_actions(np.zeros((0, 2)), 2)
    assert check_actions(np.zeros((2, 2), np.float32), 2).dtype == np.float64


def test_joint_limits_validate():
    one, zero = np.array([1.0]), np.array([0.0])
    with pytest.raises(ValueError, match='lower must be <= upper'):
        JointLimits(lower=one, upper=zero, max_velocity=one, max_acceleration=one)
    with pytest.raises(ValueError, match='max_velocity must be > 0'):
        JointLimits(lower=zero, upper=one, max_velocity=zero, max_acceleration=one)
    with pytest.raises(ValueError, match='max_acceleration must be > 0'):
        JointLimits(lower=zero, upper=one, max_velocity=one, max_acceleration=-one)
    with pytest.raises(ValueError, match='max_acceleration must be 1-D of equal length'):
        JointLimits(lower=np.zeros(2), upper=np.ones(2), max_velocity=np.ones(2),
                    max_acceleration=np.ones(3))
    with pytest.raises(ValueError, match='equal length'):
        JointLimits(lower=np.zeros(2), upper=np.ones(3), max_velocity=np.ones(2),
                    max_acceleration=np.ones(2))
    with pytest.raises(ValueError, match='lower must be finite'):
        JointLimits(lower=np.array([-np.inf]), upper=one, max_velocity=one,
                    max_acceleration=one)
    with pytest.raises(ValueError, match='max_acceleration must be finite'):
        JointLimits(lower=zero, upper=one, max_velocity=one, max_acceleration=np.array([np.nan]))
    with pytest.raises(TypeError, match='max_acceleration'):
        JointLimits(lower=zero, upper=one, max_velocity=one)
    assert LIMITS.dof == 2 and LIMITS.max_acceleration.dtype == np.float64


def test_plan_validates_its_inputs():
    with pytest.raises(ValueError, match='control_period must be > 0 s'):
        SafetyFilter(LIMITS, control_period=0.0)
    safety = SafetyFilter(LIMITS, control_period=0.1)
    targets, rest = np.array([[0.0, 1.0], [0.0, 1.0]]), np.array([0.0, 1.0])
    for times in ([0.1], [0.0, 0.1], [0.2, 0.1], [0.1, np.nan]):
        with pytest.raises(ValueError, match='times: expected 2 finite values > 0'):
            safety.plan(targets, np.array(times), rest, np.zeros(2))
    with pytest.raises(ValueError, match='current_position: expected 2 finite values'):
        safety.plan(targets, np.array([0.1, 0.2]), np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match='current_velocity: expected 2 finite values'):
        safety.plan(targets, np.array([0.1, 0.2]), rest, np.array([0.0, np.nan]))
    with pytest.raises(ActionRejected):
        safety.plan(np.full((2, 2), np.nan), np.array([0.1, 0.2]), rest, np.zeros(2))


def test_feasible_targets_pass_unchanged():
    # A smooth motion the current command is already on: the targets are kept exactly.
    safety = SafetyFilter(LIMITS, control_period=0.1)
    t = 0.1 * np.arange(11)
    path = np.stack([0.3 * np.sin(t), 1.0 + 0.5 * np.sin(2 * t)], axis=1)
    planned = safety.plan(path[1:], t[1:], path[0], np.array([0.3, 1.0]))
    np.testing.assert_array_equal(planned.positions[:-1], path[1:])
    np.testing.assert_array_equal(planned.times[:-1], t[1:])
    assert planned.executable == 10
    report = planned.report
    assert (report.position_clamped, report.velocity_limited, report.truncated) == (0, 0, 0)
    assert violations(LIMITS, planned, path[0], [0.3, 1.0]) == []


def test_a_step_right_after_the_current_command_stays_within_the_limits():
    # The seam that broke: at rest at 0, a target 1 rad away due 20 ms later.
    limits = JointLimits(lower=np.array([-3.0]), upper=np.array([3.0]),
                         max_velocity=np.array([2.5]), max_acceleration=np.array([10.0]))
    safety = SafetyFilter(limits, control_period=0.02)
    times = 0.02 * np.arange(1, 9)
    planned = safety.plan(np.ones((8, 1)), times, np.zeros(1), np.zeros(1))
    assert violations(limits, planned, np.zeros(1), np.zeros(1)) == []
    assert planned.executable == 8 and planned.report.truncated == 0
    assert planned.report.velocity_limited == 8
    assert np.all(np.diff(planned.positions[:, 0]) >= 0) and planned.positions[0, 0] > 0
    assert np.all(planned.velocities[-1] == 0.0)
    np.testing.assert_array_equal(planned.times[:-1], times)


def test_random_chunks_always_keep_every_limit_and_end_at_rest():
    limits = JointLimits(lower=np.array([-1.0, 0.0, -2.0]), upper=np.array([1.0, 2.0, 2.0]),
                         max_velocity=np.array([1.0, 4.0, 2.5]),
                         max_acceleration=np.array([5.0, 20.0, 10.0]))
    period = 0.05
    safety = SafetyFilter(limits, control_period=period)
    rng = np.random.default_rng(0)
    chunks = truncated = 0
    while chunks < 300:
        p0 = rng.uniform(limits.lower, limits.upper)
        v0 = rng.uniform(-limits.max_velocity, limits.max_velocity)
        if not brakeable(limits, p0, v0, period):
            continue  # no plan can keep such a state inside the limits
        chunks += 1
        n = int(rng.integers(1, 17))
        times = np.cumsum(rng.uniform(0.005, 0.1, n))
        if rng.random() < 0.3:
            targets = rng.uniform(limits.lower - 1.0, limits.upper + 1.0, (n, 3))
        else:
            targets = p0 + np.cumsum(rng.normal(0.0, 0.2, (n, 3)), axis=0)
        planned = safety.plan(targets, times, p0, v0)
        assert violations(limits, planned, p0, v0) == [], (p0, v0, targets, times)
        assert np.all(planned.velocities[-1] == 0.0)
        report = planned.report
        assert planned.executable + report.truncated == n
        assert planned.times.size == planned.executable + 1
        np.testing.assert_array_equal(planned.times[:-1], times[:planned.executable])
        outside = (targets < limits.lower) | (targets > limits.upper)
        assert report.position_clamped == int(np.count_nonzero(outside))
        truncated += int(report.truncated > 0)
    assert truncated > 0  # the fuzz reaches the limits, not only the easy middle


def test_targets_beyond_the_position_limits_are_clamped_and_counted():
    safety = SafetyFilter(LIMITS, control_period=0.1)
    # Slow enough to arrive: the clamped targets are met exactly, at rest on the limit.
    planned = safety.plan(np.array([[1.5, 2.5], [0.5, -3.0]]), np.array([2.0, 4.0]),
                          np.array([0.0, 1.0]), np.zeros(2))
    assert planned.report.position_clamped == 3
    np.testing.assert_array_equal(planned.positions[:2], [[1.0, 2.0], [0.5, 0.0]])
    assert violations(LIMITS, planned, [0.0, 1.0], [0.0, 0.0]) == []


@pytest.mark.parametrize('start, speed, executable', [
    (0.5, 1.0, 16),  # full speed, far enough: every target kept, slowed down
    (0.936, 0.8, 2),  # close: the targets after the braking point are dropped
])
def test_a_motion_toward_a_limit_brakes_before_it(start, speed, executable):
    safety = SafetyFilter(ONE_JOINT, control_period=0.05)
    times = 0.05 * np.arange(1, 17)
    targets = (start + speed * times)[:, None]  # runs through the limit at 1.0
    planned = safety.plan(targets, times, np.array([start]), np.array([speed]))
    assert violations(ONE_JOINT, planned, [start], [speed]) == []
    assert planned.executable == executable
    assert planned.report.truncated == 16 - executable
    assert planned.report.position_clamped == int(np.count_nonzero(targets > 1.0))
    assert np.all(np.diff(planned.velocities[:, 0]) <= 1e-12)  # only ever slows down
    assert planned.positions[-1, 0] <= 1.0 and planned.velocities[-1, 0] == 0.0


def test_a_state_that_cannot_stop_in_time_plans_no_targets():
    safety = SafetyFilter(ONE_JOINT, control_period=0.05)
    times = 0.05 * np.arange(1, 5)
    planned = safety.plan((0.95 + times)[:, None], times, np.array([0.95]), np.array([1.0]))
    assert planned.executable == 0 and planned.report.truncated == 4


@pytest.mark.parametrize('position, velocity', [
    ([0.0, 1.0], [0.0, 0.0]), ([0.2, 1.0], [1.0, -4.0]), ([0.9, 1.8], [1.0, 0.5]),
    ([-0.5, 0.5], [-0.1, 3.0])])
def test_stop_decelerates_within_the_limits(position, velocity):
    safety = SafetyFilter(LIMITS, control_period=0.1)
    p0, v0 = np.array(position), np.array(velocity)
    duration, end = safety.stop(p0, v0)
    assert duration == max(0.1, float(np.max(np.abs(v0) / LIMITS.max_acceleration)))
    np.testing.assert_allclose(end, p0 + 0.5 * v0 * duration, rtol=0, atol=1e-12)
    extent = motion.bounds(p0, v0, end, np.zeros(2), duration)
    assert np.all(extent.acceleration_max <= LIMITS.max_acceleration * (1 + 1e-9))
    assert np.all(extent.speed_max <= LIMITS.max_velocity * (1 + 1e-9))
    assert np.all(extent.position_min >= LIMITS.lower) and np.all(
        extent.position_max <= LIMITS.upper)


def test_stop_at_a_limit_moving_outward_keeps_the_acceleration_limit():
    safety = SafetyFilter(LIMITS, control_period=0.1)
    p0, v0 = np.array([1.0, 0.0]), np.array([1.0, -4.0])  # both on a limit, moving out
    duration, end = safety.stop(p0, v0)
    assert np.all(end >= LIMITS.lower) and np.all(end <= LIMITS.upper)
    extent = motion.bounds(p0, v0, end, np.zeros(2), duration)
    assert np.all(extent.acceleration_max <= LIMITS.max_acceleration * (1 + 1e-9))


def test_a_command_outside_the_limits_moves_back_within_the_dynamic_limits():
    safety = SafetyFilter(LIMITS, control_period=0.1)
    start = np.array([1.5, 1.0])  # joint 0 above its upper limit 1.0, at rest
    planned = safety.plan(np.tile([0.5, 1.0], (10, 1)), 0.1 * np.arange(1, 11), start,
                          np.zeros(2))
    assert planned.executable > 0
    outside_ok = JointLimits(lower=LIMITS.lower, upper=np.array([1.5, 2.0]),
                             max_velocity=LIMITS.max_velocity,
                             max_acceleration=LIMITS.max_acceleration)
    assert violations(outside_ok, planned, start, np.zeros(2)) == []


def test_hold_latch_fires_once_per_outage():
    latch = HoldLatch()
    assert latch.update(stale=True) is False  # nothing was running yet
    assert latch.update(stale=False) is False
    assert [latch.update(stale=True) for _ in range(5)] == [True, False, False, False, False]
    assert latch.update(stale=False) is False
    assert latch.update(stale=True) is True  # a second outage holds again
    latch.arm()
    latch.disarm()
    assert latch.update(stale=True) is False
    latch.arm()
    assert latch.update(stale=True) is True
