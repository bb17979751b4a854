"""TrajectoryFollower: joint_trajectory_controller semantics, pure and exact."""

import numpy as np
import pytest
from sparse_policy_ros.ros.message_errors import MessageError
from sparse_policy_ros.ros.trajectory_follower import TrajectoryFollower

JOINTS = ('j0', 'j1')


def follower_at(current=(0.0, 0.0)) -> TrajectoryFollower:
    follower = TrajectoryFollower(JOINTS)
    assert follower.sample(0.0) is None and not follower.active
    return follower


def test_linear_interpolation_from_the_current_command_then_hold():
    follower = follower_at()
    kept = follower.set_trajectory(JOINTS, stamp=10.0, times_from_start=[0.5, 1.5],
                                   positions=[[1.0, 2.0], [3.0, 2.0]], now=10.0,
                                   current_positions=np.array([0.0, 0.0]))
    assert kept == 2 and follower.end_time == 11.5
    np.testing.assert_allclose(follower.sample(10.0), [0.0, 0.0])
    np.testing.assert_allclose(follower.sample(10.25), [0.5, 1.0])
    np.testing.assert_allclose(follower.sample(10.5), [1.0, 2.0])
    np.testing.assert_allclose(follower.sample(11.0), [2.0, 2.0])
    np.testing.assert_allclose(follower.sample(20.0), [3.0, 2.0])  # holds the last point
    assert [follower.remaining(t) for t in (10.0, 10.5, 11.0, 11.5)] == [2, 1, 1, 0]


def test_zero_stamp_means_now_and_joint_order_is_by_name():
    follower = follower_at()
    follower.set_trajectory(('j1', 'j0'), stamp=0.0, times_from_start=[1.0],
                            positions=[[5.0, 1.0]], now=3.0, current_positions=np.zeros(2))
    np.testing.assert_allclose(follower.sample(4.0), [1.0, 5.0])
    np.testing.assert_allclose(follower.sample(3.5), [0.5, 2.5])


def test_past_points_are_dropped_and_replacement_starts_from_the_command():
    follower = follower_at()
    follower.set_trajectory(JOINTS, 0.0, [2.0], [[2.0, 0.0]], now=0.0,
                            current_positions=np.zeros(2))
    # At t=1 the command is (1, 0); the new trajectory started at t=0.5, so its first point
    # (due at 0.7) is dropped and the command goes from (1, 0) to (-1, 1) due at 1.5.
    kept = follower.set_trajectory(JOINTS, 0.5, [0.2, 1.0], [[9.0, 9.0], [-1.0, 1.0]],
                                   now=1.0, current_positions=np.array([7.0, 7.0]))
    assert kept == 1
    np.testing.assert_allclose(follower.sample(1.0), [1.0, 0.0])
    np.testing.assert_allclose(follower.sample(1.25), [0.0, 0.5])
    np.testing.assert_allclose(follower.sample(1.5), [-1.0, 1.0])


def test_future_start_holds_until_the_stamp():
    follower = follower_at()
    follower.set_trajectory(JOINTS, 5.0, [1.0], [[2.0, 2.0]], now=4.0,
                            current_positions=np.zeros(2))
    np.testing.assert_allclose(follower.sample(4.5), [0.0, 0.0])
    np.testing.assert_allclose(follower.sample(5.0), [0.0, 0.0])
    np.testing.assert_allclose(follower.sample(5.5), [1.0, 1.0])


def test_empty_trajectory_stops_where_the_command_is():
    follower = follower_at()
    follower.set_trajectory(JOINTS, 0.0, [2.0], [[2.0, 4.0]], now=0.0,
                            current_positions=np.zeros(2))
    assert follower.set_trajectory(JOINTS, 0.0, [], np.zeros((0, 2)), now=1.0,
                                   current_positions=np.zeros(2)) == 0
    np.testing.assert_allclose(follower.sample(5.0), [1.0, 2.0])


@pytest.mark.parametrize('names, times, positions, stamp, kind, text', [
    (('j0', 'x'), [1.0], [[0.0, 0.0]], 0.0, 'trajectory_joints', 'a permutation of'),
    (('j0',), [1.0], [[0.0]], 0.0, 'trajectory_joints', 'a permutation of'),
    (JOINTS, [1.0, 1.0], [[0, 0], [1, 1]], 0.0, 'trajectory_points',
     'points[1].time_from_start'),
    (JOINTS, [1.0], [[0.0, np.nan]], 0.0, 'trajectory_points', 'finite'),
    (JOINTS, [1.0, 2.0], [[0.0, 0.0]], 0.0, 'trajectory_points', '2 points x 2 joints'),
    (JOINTS, [0.5, 1.0], [[0, 0], [1, 1]], 1.0, 'trajectory_late', 'after now'),
])
def test_invalid_trajectories_are_rejected_and_the_active_one_continues(
        names, times, positions, stamp, kind, text):
    follower = follower_at()
    follower.set_trajectory(JOINTS, 0.0, [10.0], [[10.0, 0.0]], now=0.0,
                            current_positions=np.zeros(2))
    with pytest.raises(MessageError) as info:
        follower.set_trajectory(names, stamp, times, np.array(positions, dtype=float),
                                now=5.0, current_positions=np.zeros(2))
    assert info.value.kind == kind and text in str(info.value)
    np.testing.assert_allclose(follower.sample(5.0), [5.0, 0.0])
    follower.clear()
    assert not follower.active
