"""Stock joint_trajectory_controller acceptance rules and the commanded-motion limit check."""

from builtin_interfaces.msg import Duration, Time
import numpy as np
import pytest
from sparse_policy_ros.control.planning import hold_plan, plan_chunk
from sparse_policy_ros.control.safety import JointLimits, SafetyFilter
from sparse_policy_ros.control.trajectory_follower import TrajectoryFollower
from sparse_policy_ros.ros.jtc_validation import CommandedMotionChecker, jtc_rejection
from sparse_policy_ros.ros.trajectory import seconds_to_stamp, stamp_to_seconds
from sparse_policy_ros.ros.trajectory import to_joint_trajectory_msg
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

JOINTS = ('a', 'b')
LIMITS = JointLimits(lower=np.array([-1.0, -2.0]), upper=np.array([1.0, 2.0]),
                     max_velocity=np.array([1.0, 2.5]), max_acceleration=np.array([2.0, 10.0]))
SAFETY = SafetyFilter(LIMITS, control_period=0.05)


def planned_message(stamp: float = 10.0) -> JointTrajectory:
    """Build a message as the node does: four targets from rest, then the braking stop."""
    actions = np.array([[0.0, 0.0], [0.01, 0.02], [0.02, 0.04], [0.03, 0.06], [0.04, 0.08]])
    plan = plan_chunk(actions, stamp - 0.01, stamp, 0.05, JOINTS, SAFETY, np.zeros(2),
                      np.zeros(2), min_lead=0.025)
    assert plan.executable == 4
    return to_joint_trajectory_msg(plan)


def hand_made(stamp: float, points) -> JointTrajectory:
    """Message from (time_from_start, positions, velocities) tuples."""
    msg = JointTrajectory(joint_names=list(JOINTS))
    sec, nanosec = seconds_to_stamp(stamp)
    msg.header.stamp = Time(sec=sec, nanosec=nanosec)
    for t, positions, velocities in points:
        sec, nanosec = seconds_to_stamp(t)
        msg.points.append(JointTrajectoryPoint(
            positions=[float(x) for x in positions], velocities=[float(x) for x in velocities],
            time_from_start=Duration(sec=sec, nanosec=nanosec)))
    return msg


def test_a_planned_message_is_accepted():
    msg = planned_message()
    assert jtc_rejection(msg, JOINTS, now=10.0) is None
    assert jtc_rejection(msg, ('b', 'a'), now=10.0) is None  # any joint order
    msg.points = [JointTrajectoryPoint(positions=p.positions, time_from_start=p.time_from_start)
                  for p in msg.points]
    assert jtc_rejection(msg, JOINTS, now=10.0) is None  # positions only: no velocity rule


def set_names(names):
    def mutate(msg):
        msg.joint_names = names
    return mutate


def set_point(k, **fields):
    def mutate(msg):
        for name, value in fields.items():
            setattr(msg.points[k], name, value)
    return mutate


def drop_points(msg):
    msg.points = []


@pytest.mark.parametrize('mutate, now, reason', [
    (set_names(['a', 'x']), 10.0, 'differ from the controller joints'),
    (set_names(['a']), 10.0, 'differ from the controller joints'),
    (set_names(['a', 'a']), 10.0, 'joint_names has duplicates'),
    (drop_points, 10.0, 'empty trajectory'),
    (None, 11.0, 'trajectory ends in the past'),
    (set_point(2, time_from_start=Duration(sec=0, nanosec=20_000_000)), 10.0,
     'points[2].time_from_start'),
    (set_point(1, positions=[0.0]), 10.0, 'points[1].positions has 1 values, expected 2'),
    (set_point(1, velocities=[0.0]), 10.0, 'points[1].velocities has 1 values, expected 0'),
    (set_point(1, accelerations=[0.0, 0.0, 0.0]), 10.0, 'points[1].accelerations has 3'),
    (set_point(1, positions=[0.0, float('nan')]), 10.0, 'non-finite'),
    (set_point(-1, velocities=[0.0, 1e-6]), 10.0, 'last point velocities'),
])
def test_each_acceptance_rule_is_checked(mutate, now, reason):
    msg = planned_message()  # accepted at 10.0 as it is
    if mutate is not None:
        mutate(msg)
    rejection = jtc_rejection(msg, JOINTS, now=now)
    assert rejection is not None and reason in rejection, rejection


def test_a_late_end_is_fine_with_a_zero_stamp():
    msg = planned_message()
    end = 10.0 + stamp_to_seconds(msg.points[-1].time_from_start)
    assert jtc_rejection(msg, JOINTS, now=end) is None  # ends exactly now: not past
    assert 'in the past' in jtc_rejection(msg, JOINTS, now=end + 1e-3)
    msg.header.stamp = Time(sec=0, nanosec=0)  # zero stamp: starts when received
    assert jtc_rejection(msg, JOINTS, now=end + 100.0) is None


def test_a_speed_jump_at_the_seam_is_found():
    checker = CommandedMotionChecker(JOINTS, LIMITS)
    # From rest at 0: constant acceleration 0.5 to (0.25, 0.5) at t = 2, then back to rest.
    checker.add(hand_made(1.0, [(1.0, [0.25, 0.0], [0.5, 0.0]),
                                (2.0, [0.5, 0.0], [0.0, 0.0])]), start_position=np.zeros(2))
    # Replaced at t = 1.5 (command 0.0625 rad at 0.25 rad/s): 0.3 rad in 0.1 s is 3 rad/s.
    checker.add(hand_made(1.5, [(0.1, [0.3625, 0.0], [0.25, 0.0]),
                                (2.0, [0.5, 0.0], [0.0, 0.0])]))
    checker.finish()
    assert not checker.rejections and not checker.ok
    assert checker.seams_checked == 1
    assert checker.segments_checked == 3  # half of message 0's first segment, then two
    assert {(v.message, v.segment, v.joint) for v in checker.violations} == {(1, 0, 0)}
    assert {v.quantity for v in checker.violations} == {'velocity', 'acceleration'}
    speed = next(v for v in checker.violations if v.quantity == 'velocity')
    assert speed.value > 3.0 and speed.limit == 1.0
    assert str(speed).startswith('message 1 seam joint 0: velocity')
    assert checker.peak_speed_ratio == pytest.approx(speed.value)


def test_an_acceleration_spike_inside_a_chunk_is_found():
    checker = CommandedMotionChecker(JOINTS, LIMITS)
    # Between points 0 and 1 the velocity reverses from 0.5 to -0.5 in 0.1 s: |a| reaches 40.
    checker.add(hand_made(1.0, [(1.0, [0.5, 0.0], [0.5, 0.0]),
                                (1.1, [0.55, 0.0], [-0.5, 0.0]),
                                (2.1, [0.3, 0.0], [0.0, 0.0])]),
                start_position=np.zeros(2))
    assert checker.violations == []  # nothing of it ran yet
    checker.finish()
    assert not checker.rejections
    assert [(v.message, v.segment, v.joint, v.quantity) for v in checker.violations] == [
        (0, 1, 0, 'acceleration')]
    assert checker.violations[0].value == pytest.approx(40.0)
    assert 'message 0 segment 1 joint 0' in str(checker.violations[0])
    assert checker.peak_speed_ratio < 1.0
    assert checker.summary()['violations'] == 1 and checker.summary()['segments_checked'] == 3


def test_rejected_messages_are_recorded():
    checker = CommandedMotionChecker(JOINTS, LIMITS)
    with pytest.raises(ValueError, match='start_position is needed'):
        checker.add(planned_message())
    bad = planned_message()
    bad.points[-1].velocities = [0.1, 0.0]
    checker.add(bad, start_position=np.zeros(2))
    assert not checker.ok and len(checker.rejections) == 1
    assert checker.rejections[0].startswith('message 1: last point velocities')


def replan_like_the_node(rng, exact_stamps: bool) -> CommandedMotionChecker:
    """
    Replan as the node does: every chunk starts at the command the controller is at then.

    With ``exact_stamps`` publish times are on a 1 ms grid and points due on a 0.5 ms offset
    from it: messages (nanoseconds) then carry the planned times exactly and no new chunk
    arrives exactly when a point is due.
    """
    period = 0.05
    follower = TrajectoryFollower(JOINTS)
    checker = CommandedMotionChecker(JOINTS, LIMITS)
    start = np.array([0.1, -0.3])
    now = 1.0
    for tick in range(40):
        now += rng.choice([0.06, 0.1, 0.14, 0.25])
        latency = float(rng.uniform(0.01, 0.06))
        if exact_stamps:
            now, latency = round(now, 3), round(latency, 3) + 0.0005
        else:
            now += float(rng.uniform(0.0, 1e-3))
        stamp = now - latency
        current = follower.sample_state(now) if follower.active else (start, np.zeros(2))
        if tick == 25:
            plan = hold_plan(SAFETY, JOINTS, now, *current)  # an outage: brake to rest
        else:
            due = stamp + period * np.arange(8)
            # Fast sweeps with jumps: the filter has to cut speed and acceleration.
            targets = np.stack([0.9 * np.sin(2.0 * due), 1.8 * np.sin(3.0 * due + 1.0)], 1)
            if tick % 7 == 3:
                targets += rng.uniform(-0.5, 0.5, 2)
            plan = plan_chunk(targets, stamp, now, period, JOINTS, SAFETY, *current,
                              min_lead=0.5 * period)
        if len(plan) == 0:
            continue
        msg = to_joint_trajectory_msg(plan)
        assert jtc_rejection(msg, JOINTS, now=now) is None
        checker.add(msg, start_position=start if not follower.active else None)
        follower.set_trajectory(plan.joint_names, plan.stamp, plan.times_from_start,
                                plan.positions, now, current[0], plan.velocities)
    checker.finish()
    return checker


@pytest.mark.parametrize('exact_stamps', [True, False])
@pytest.mark.parametrize('seed', [0, 1])
def test_replanning_from_the_followed_command_keeps_every_limit(seed, exact_stamps):
    checker = replan_like_the_node(np.random.default_rng(seed), exact_stamps)
    assert checker.ok, [str(v) for v in checker.violations[:5]] + checker.rejections[:5]
    assert checker.messages >= 35 and checker.seams_checked == checker.messages - 1
    # The sweeps do push the motion against the limits: the check is not vacuous.
    assert checker.peak_acceleration_ratio > 0.99 and checker.peak_speed_ratio > 0.5


def cruise(stamp: float, position: float, moving: bool) -> JointTrajectory:
    """Joint 0 at 0.4321 rad/s (after a 0.25 s ramp from rest unless ``moving``), then rest."""
    speed, points, t = 0.4321, [], 0.0
    if not moving:
        t, position = 0.25, position + speed * 0.125
        points.append((t, [position, 0.0], [speed, 0.0]))
    for _ in range(3):
        t, position = t + 0.05, position + speed * 0.05
        points.append((t, [position, 0.0], [speed, 0.0]))
    points.append((t + 0.25, [position + speed * 0.125, 0.0], [0.0, 0.0]))
    return hand_made(stamp, points)


def test_a_replacement_when_a_point_is_due_is_not_a_violation():
    checker = CommandedMotionChecker(JOINTS, LIMITS)
    start = 0.123456789
    checker.add(cruise(6.004, start, moving=False), start_position=np.array([start, 0.0]))
    # Replaced at 6.304, when point 1 is due: same motion, the cruise goes on.
    checker.add(cruise(6.304, start + 0.4321 * (0.125 + 0.05), moving=True))
    checker.finish()
    assert checker.seams_checked == 1 and not checker.rejections
    assert checker.ok, [str(v) for v in checker.violations]
