"""Trajectory plans as ROS messages: round trip, reading incoming points, stamp helpers."""

import numpy as np
import pytest
from sparse_policy_ros.control.message_errors import MessageError
from sparse_policy_ros.control.planning import plan_chunk
from sparse_policy_ros.ros.trajectory import points_from_msg, seconds_to_stamp
from sparse_policy_ros.ros.trajectory import stamp_to_seconds, to_joint_trajectory_msg
from test_control_planning import JOINTS, ramp, REST, SAFETY
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint


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


def test_stamp_helpers():
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
