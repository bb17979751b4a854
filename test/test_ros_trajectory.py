"""Chunk -> trajectory: timing, dropped points, finite-difference velocities, message."""

import numpy as np
import pytest
from sparse_policy_ros.ros.safety import ActionRejected, JointLimits, SafetyFilter
from sparse_policy_ros.ros.trajectory import finite_difference_velocities, hold_plan
from sparse_policy_ros.ros.trajectory import plan_chunk, seconds_to_stamp, stamp_to_seconds
from sparse_policy_ros.ros.trajectory import to_joint_trajectory_msg

JOINTS = ('a', 'b')
SAFETY = SafetyFilter(JointLimits(lower=np.array([-5.0, -5.0]), upper=np.array([5.0, 5.0]),
                                  max_velocity=np.array([10.0, 10.0])), control_period=0.1)


def ramp(n: int) -> np.ndarray:
    """(n, 2) actions moving 0.1 and -0.2 per step from (0, 0)."""
    k = np.arange(n, dtype=np.float64)[:, None]
    return np.hstack([0.1 * k, -0.2 * k])


def test_points_are_due_at_observation_plus_k_periods():
    plan = plan_chunk(ramp(8), observation_stamp=100.0, publish_time=100.13,
                      control_period=0.1, joint_names=JOINTS, safety=SAFETY,
                      current_positions=np.array([0.0, 0.0]))
    assert plan.stamp == 100.13
    assert plan.dropped == 2  # actions due at 100.0 and 100.1 are in the past
    np.testing.assert_allclose(plan.absolute_times, 100.0 + 0.1 * np.arange(2, 8), atol=1e-9)
    np.testing.assert_allclose(plan.times_from_start, 0.1 * np.arange(2, 8) - 0.13, atol=1e-9)
    assert np.all(np.diff(plan.times_from_start) > 0) and plan.times_from_start[0] > 0
    np.testing.assert_allclose(plan.positions, ramp(8)[2:])
    np.testing.assert_allclose(plan.velocities, np.tile([1.0, -2.0], (6, 1)), atol=1e-9)


def test_late_chunk_has_no_points_and_bad_actions_are_rejected():
    plan = plan_chunk(ramp(3), 10.0, 10.5, 0.1, JOINTS, SAFETY, np.zeros(2))
    assert len(plan) == 0 and plan.dropped == 3
    with pytest.raises(ActionRejected):
        plan_chunk(np.full((3, 2), np.nan), 10.0, 10.05, 0.1, JOINTS, SAFETY, np.zeros(2))
    with pytest.raises(ActionRejected):
        plan_chunk(np.zeros((3, 3)), 10.0, 10.05, 0.1, JOINTS, SAFETY, np.zeros(2))


def test_safety_is_applied_from_the_current_command():
    plan = plan_chunk(np.full((4, 2), 3.0), 0.0, 0.05, 0.1, JOINTS, SAFETY,
                      current_positions=np.array([0.0, 2.5]))
    np.testing.assert_allclose(plan.positions[:, 0], [1.0, 2.0, 3.0])  # 10 rad/s * 0.1 s
    np.testing.assert_allclose(plan.positions[:, 1], [3.0, 3.0, 3.0])
    assert plan.safety.velocity_limited == 2


def test_finite_differences():
    positions = np.array([[0.0], [1.0], [4.0]])
    np.testing.assert_allclose(finite_difference_velocities(positions, 0.5),
                               [[2.0], [4.0], [6.0]])
    np.testing.assert_array_equal(finite_difference_velocities(np.ones((1, 3)), 0.1),
                                  np.zeros((1, 3)))


def test_message_round_trip():
    plan = plan_chunk(ramp(5), 1700000000.25, 1700000000.27, 0.1, JOINTS, SAFETY, np.zeros(2))
    msg = to_joint_trajectory_msg(plan)
    assert msg.joint_names == list(JOINTS)
    assert stamp_to_seconds(msg.header.stamp) == pytest.approx(1700000000.27, abs=1e-9)
    times = [stamp_to_seconds(p.time_from_start) for p in msg.points]
    np.testing.assert_allclose(times, plan.times_from_start, atol=1e-9)
    np.testing.assert_allclose([p.positions for p in msg.points], plan.positions)
    np.testing.assert_allclose([p.velocities for p in msg.points], plan.velocities)


def test_hold_plan_and_stamp_helpers():
    plan = hold_plan(np.array([0.3, -0.1]), JOINTS, stamp=5.0, hold_after=0.1)
    assert len(plan) == 1
    np.testing.assert_array_equal(plan.positions, [[0.3, -0.1]])
    np.testing.assert_array_equal(plan.velocities, [[0.0, 0.0]])
    with pytest.raises(ValueError, match='expected 2 joints, got 3'):
        hold_plan(np.zeros(3), JOINTS, 0.0, 0.1)
    assert seconds_to_stamp(1.5) == (1, 500_000_000)
    assert seconds_to_stamp(2.9999999999) == (3, 0)
