"""Chunk -> trajectory: timing, dropped points, planning from the command, stops, message."""

import numpy as np
import pytest
from sparse_policy_ros.ros import motion
from sparse_policy_ros.ros.message_errors import MessageError
from sparse_policy_ros.ros.safety import ActionRejected, JointLimits, SafetyFilter
from sparse_policy_ros.ros.trajectory import hold_plan, plan_chunk, points_from_msg
from sparse_policy_ros.ros.trajectory import seconds_to_stamp, stamp_to_seconds
from sparse_policy_ros.ros.trajectory import to_joint_trajectory_msg
from sparse_policy_ros.ros.trajectory_follower import TrajectoryFollower
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

JOINTS = ('a', 'b')
LIMITS = JointLimits(lower=np.array([-5.0, -5.0]), upper=np.array([5.0, 5.0]),
                     max_velocity=np.array([10.0, 10.0]),
                     max_acceleration=np.array([100.0, 100.0]))
SAFETY = SafetyFilter(LIMITS, control_period=0.1)
REST = (np.zeros(2), np.zeros(2))


def ramp(n: int) -> np.ndarray:
    """(n, 2) actions moving 0.1 and -0.2 per step from (0, 0)."""
    k = np.arange(n, dtype=np.float64)[:, None]
    return np.hstack([0.1 * k, -0.2 * k])


def assert_within_limits(plan, position, velocity):
    """Every instant from the current command through the plan keeps LIMITS."""
    t = 0.0
    for k in range(len(plan)):
        duration = plan.times_from_start[k] - t
        extent = motion.bounds(position, velocity, plan.positions[k], plan.velocities[k],
                               duration)
        assert np.all(extent.position_min >= LIMITS.lower - 1e-9), k
        assert np.all(extent.position_max <= LIMITS.upper + 1e-9), k
        assert np.all(extent.speed_max <= LIMITS.max_velocity * (1 + 1e-9)), k
        assert np.all(extent.acceleration_max <= LIMITS.max_acceleration * (1 + 1e-9)), k
        position, velocity, t = plan.positions[k], plan.velocities[k], plan.times_from_start[k]


def test_points_are_due_at_observation_plus_k_periods():
    # The current command is on the ramp at publish time: the targets pass unchanged.
    current = (np.array([0.13, -0.26]), np.array([1.0, -2.0]))
    plan = plan_chunk(ramp(8), observation_stamp=100.0, publish_time=100.13,
                      control_period=0.1, joint_names=JOINTS, safety=SAFETY,
                      current_position=current[0], current_velocity=current[1])
    assert plan.stamp == 100.13
    assert plan.dropped == 2  # actions due at 100.0 and 100.1 are in the past
    assert plan.executable == 6 and len(plan) == 7  # six targets, then the braking stop
    np.testing.assert_allclose(plan.absolute_times[:6], 100.0 + 0.1 * np.arange(2, 8),
                               atol=1e-9)
    np.testing.assert_allclose(plan.times_from_start[:6], 0.1 * np.arange(2, 8) - 0.13,
                               atol=1e-9)
    assert np.all(np.diff(plan.times_from_start) > 0) and plan.times_from_start[0] > 0
    np.testing.assert_allclose(plan.positions[:6], ramp(8)[2:], atol=1e-12)
    np.testing.assert_allclose(plan.velocities[:6], np.tile([1.0, -2.0], (6, 1)), atol=1e-9)
    np.testing.assert_array_equal(plan.velocities[6], [0.0, 0.0])
    assert plan.safety.position_clamped == plan.safety.velocity_limited == 0
    assert_within_limits(plan, *current)


def test_points_due_within_min_lead_are_dropped():
    current = (np.array([0.13, -0.26]), np.array([1.0, -2.0]))
    args = (ramp(8), 100.0, 100.13, 0.1, JOINTS, SAFETY, *current)
    # Action 2 is due 0.07 s after publishing: kept with a lead of 0.05, dropped with 0.08.
    assert plan_chunk(*args, min_lead=0.05).dropped == 2
    plan = plan_chunk(*args, min_lead=0.08)
    assert plan.dropped == 3 and plan.executable == 5
    np.testing.assert_allclose(plan.absolute_times[:5], 100.0 + 0.1 * np.arange(3, 8),
                               atol=1e-9)
    assert_within_limits(plan, *current)
    assert len(plan_chunk(*args, min_lead=0.6)) == 0  # the last action is due 0.57 s after
    with pytest.raises(ValueError, match='min_lead must be >= 0 s'):
        plan_chunk(*args, min_lead=-0.01)


def test_late_chunk_has_no_points_and_bad_actions_are_rejected():
    plan = plan_chunk(ramp(3), 10.0, 10.5, 0.1, JOINTS, SAFETY, *REST)
    assert len(plan) == 0 and plan.dropped == 3 and plan.executable == 0
    assert plan.positions.shape == plan.velocities.shape == (0, 2)
    with pytest.raises(ActionRejected):
        plan_chunk(np.full((3, 2), np.nan), 10.0, 10.05, 0.1, JOINTS, SAFETY, *REST)
    with pytest.raises(ActionRejected):
        plan_chunk(np.zeros((3, 3)), 10.0, 10.05, 0.1, JOINTS, SAFETY, *REST)


def test_the_motion_starts_from_the_current_command():
    targets = np.full((4, 2), 3.0)
    at_rest = (np.array([0.0, 2.5]), np.zeros(2))
    moving = (np.array([0.0, 2.5]), np.array([-10.0, 10.0]))
    plans = [plan_chunk(targets, 0.0, 0.05, 0.1, JOINTS, SAFETY, *current)
             for current in (at_rest, moving)]
    for plan, current in zip(plans, (at_rest, moving)):
        assert plan.dropped == 1 and plan.executable == 3  # action 0 was due at 0.0
        assert plan.safety.velocity_limited > 0
        assert_within_limits(plan, *current)
    # From rest the first 50 ms can move a*T^2/2 at most (constant full acceleration).
    assert 0.0 < plans[0].positions[0, 0] <= 0.5 * 100.0 * 0.05**2 + 1e-12
    assert plans[1].positions[0, 0] < 0.0  # still moving away from 3.0 at -10 rad/s


def test_a_first_target_that_cannot_be_reached_gives_no_points():
    # 10 rad/s toward the limit 0.1 rad away: no stop at 100 rad/s^2 keeps inside.
    plan = plan_chunk(np.full((3, 2), 5.0), 0.0, 0.05, 0.1, JOINTS, SAFETY,
                      np.array([4.9, 0.0]), np.array([10.0, 0.0]))
    assert len(plan) == 0 and plan.dropped == 1 and plan.safety.truncated == 2


def test_message_round_trip():
    plan = plan_chunk(ramp(5), 1700000000.25, 1700000000.27, 0.1, JOINTS, SAFETY, *REST)
    msg = to_joint_trajectory_msg(plan)
    assert msg.joint_names == list(JOINTS)
    assert stamp_to_seconds(msg.header.stamp) == pytest.approx(1700000000.27, abs=1e-9)
    times = [stamp_to_seconds(p.time_from_start) for p in msg.points]
    np.testing.assert_allclose(times, plan.times_from_start, atol=1e-9)
    np.testing.assert_allclose([p.positions for p in msg.points], plan.positions)
    np.testing.assert_allclose([p.velocities for p in msg.points], plan.velocities)
    times, positions, velocities = points_from_msg(msg)
    np.testing.assert_allclose(times, plan.times_from_start, atol=1e-9)
    np.testing.assert_array_equal(positions, plan.positions)
    np.testing.assert_array_equal(velocities, plan.velocities)


@pytest.mark.parametrize('position, velocity', [
    ([0.3, -0.1], [0.0, 0.0]), ([0.3, -0.1], [2.0, -3.0]), ([4.0, -4.5], [10.0, -10.0])])
def test_hold_plan_brakes_to_rest_from_the_command_without_a_jump(position, velocity):
    position, velocity = np.array(position), np.array(velocity)
    plan = hold_plan(SAFETY, JOINTS, stamp=5.0, current_position=position,
                     current_velocity=velocity)
    assert len(plan) == 1 and plan.stamp == 5.0 and plan.executable == 0
    np.testing.assert_array_equal(plan.velocities, [[0.0, 0.0]])
    assert plan.times_from_start[0] >= SAFETY.control_period
    assert_within_limits(plan, position, velocity)
    # A follower moving with this command continues from it: no jump, then rest.
    follower = TrajectoryFollower(JOINTS)
    follower.set_trajectory(JOINTS, 4.0, [1.0, 3.0], [position, position + 2 * velocity],
                            now=4.0, current_positions=position - velocity,
                            velocities=[velocity, velocity])
    np.testing.assert_allclose(follower.sample_state(5.0)[0], position, atol=1e-12)
    follower.set_trajectory(plan.joint_names, plan.stamp, plan.times_from_start,
                            plan.positions, now=5.0, current_positions=np.zeros(2),
                            velocities=plan.velocities)
    start = follower.sample_state(5.0)
    np.testing.assert_allclose(start[0], position, atol=1e-12)
    np.testing.assert_allclose(start[1], velocity, atol=1e-12)
    end = follower.sample_state(5.0 + plan.times_from_start[0])
    np.testing.assert_array_equal(end[1], [0.0, 0.0])
    if not velocity.any():
        np.testing.assert_array_equal(plan.positions, [position])  # at rest: stays


def test_hold_plan_and_stamp_helpers():
    with pytest.raises(ValueError, match='expected 2 joints, got'):
        hold_plan(SAFETY, ('a', 'b', 'c'), 0.0, *REST)
    with pytest.raises(ValueError, match='current_velocity'):
        hold_plan(SAFETY, JOINTS, 0.0, np.zeros(2), np.zeros(3))
    assert seconds_to_stamp(1.5) == (1, 500_000_000)
    assert seconds_to_stamp(2.9999999999) == (3, 0)


def message(positions, velocities=None, names=JOINTS) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(names))
    for k, point in enumerate(positions):
        msg.points.append(JointTrajectoryPoint(positions=[float(x) for x in point]))
        msg.points[-1].time_from_start.sec = k + 1
        if velocities is not None:
            msg.points[-1].velocities = [float(x) for x in velocities[k]]
    return msg


def test_points_from_msg_without_velocities_and_with_errors():
    times, positions, velocities = points_from_msg(message([[0.0, 1.0], [2.0, 3.0]]))
    np.testing.assert_array_equal(times, [1.0, 2.0])
    np.testing.assert_array_equal(positions, [[0.0, 1.0], [2.0, 3.0]])
    assert velocities is None
    cases = [
        (message([[0.0, 1.0], [2.0]]), 'points[1].positions'),
        (message([[0.0, 1.0], [2.0, 3.0]], [[0.0, 0.0], []]), 'points[1].velocities'),
        (message([[0.0, 1.0], [2.0, 3.0]], [[], [0.0, 0.0]]), 'points[0].velocities'),
        (message([[0.0, 1.0]], [[0.0, 0.0, 0.0]]), 'points[0].velocities'),
    ]
    for msg, field in cases:
        with pytest.raises(MessageError) as info:
            points_from_msg(msg)
        assert info.value.kind == 'trajectory_points' and info.value.field == field
        assert str(info.value).startswith(field)
