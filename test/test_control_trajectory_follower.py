"""TrajectoryFollower: joint_trajectory_controller semantics (linear and Hermite), exact."""

import numpy as np
import pytest
from sparse_policy_ros.control import motion
from sparse_policy_ros.control.message_errors import MessageError
from sparse_policy_ros.control.trajectory_follower import TrajectoryFollower

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


@pytest.mark.parametrize('names, times, positions, stamp, kind, text, velocities', [
    (('j0', 'x'), [1.0], [[0.0, 0.0]], 0.0, 'trajectory_joints', 'a permutation of', None),
    (('j0',), [1.0], [[0.0]], 0.0, 'trajectory_joints', 'a permutation of', None),
    (('j0', 'j1', 'j1'), [1.0], [[0.0, 0.0, 0.0]], 0.0, 'trajectory_joints',
     'a permutation of', None),
    (JOINTS, [1.0, 1.0], [[0, 0], [1, 1]], 0.0, 'trajectory_points',
     'points[1].time_from_start', None),
    (JOINTS, [1.0], [[0.0, np.nan]], 0.0, 'trajectory_points', 'finite', None),
    (JOINTS, [1.0, 2.0], [[0.0, 0.0]], 0.0, 'trajectory_points', '2 points x 2 joints', None),
    (JOINTS, [0.5, 1.0], [[0, 0], [1, 1]], 1.0, 'trajectory_late', 'after now', None),
    (JOINTS, [1.0, 2.0], [[0, 0], [1, 1]], 0.0, 'trajectory_points', 'points[].velocities',
     [[0.0, 0.0]]),
    (JOINTS, [1.0], [[0, 0]], 0.0, 'trajectory_points', 'points[].velocities',
     [[0.0, 0.0, 0.0]]),
    (JOINTS, [1.0, 2.0], [[0, 0], [1, 1]], 0.0, 'trajectory_points', 'finite values',
     [[0.0, 0.0], [np.nan, 0.0]]),
    (JOINTS, [1.0], [[0, 0]], 0.0, 'trajectory_points', 'finite values', [[np.inf, 0.0]]),
])
def test_invalid_trajectories_are_rejected_and_the_active_one_continues(
        names, times, positions, stamp, kind, text, velocities):
    follower = follower_at()
    follower.set_trajectory(JOINTS, 0.0, [10.0], [[10.0, 0.0]], now=0.0,
                            current_positions=np.zeros(2))
    with pytest.raises(MessageError) as info:
        follower.set_trajectory(names, stamp, times, np.array(positions, dtype=float),
                                now=5.0, current_positions=np.zeros(2),
                                velocities=None if velocities is None else np.array(
                                    velocities, dtype=float))
    assert info.value.kind == kind and text in str(info.value)
    np.testing.assert_allclose(follower.sample(5.0), [5.0, 0.0])
    assert follower.end_time == 10.0
    follower.clear()
    assert not follower.active and follower.end_time is None
    assert follower.sample_state(5.0) is None and follower.remaining(5.0) == 0


def test_constructor_and_idle_start_validate():
    with pytest.raises(ValueError, match='unique and non-empty'):
        TrajectoryFollower(('j0', 'j0'))
    with pytest.raises(ValueError, match='unique and non-empty'):
        TrajectoryFollower(())
    with pytest.raises(ValueError, match=r'current_positions: expected shape \(2,\)'):
        follower_at().set_trajectory(JOINTS, 0.0, [1.0], [[0.0, 0.0]], now=0.0,
                                     current_positions=np.zeros(3))


def test_linear_velocity_and_segments():
    follower = follower_at()
    follower.set_trajectory(JOINTS, 10.0, [0.5, 1.5], [[1.0, 2.0], [3.0, 2.0]], now=10.0,
                            current_positions=np.zeros(2), velocities=np.zeros((0, 2)))
    position, velocity = follower.sample_state(10.25)
    np.testing.assert_allclose(position, [0.5, 1.0])
    np.testing.assert_allclose(velocity, [2.0, 4.0])
    np.testing.assert_array_equal(follower.sample_state(12.0)[1], [0.0, 0.0])
    segments = list(follower.segments())
    assert [(t0, t1) for t0, _, _, t1, _, _ in segments] == [(10.0, 10.5), (10.5, 11.5)]
    for _, _, v0, _, _, v1 in segments:
        np.testing.assert_array_equal(v0, v1)
    np.testing.assert_allclose(segments[1][2], [2.0, 0.0])


def test_hermite_interpolation_through_positions_and_velocities():
    follower = follower_at()
    positions = np.array([[1.0, -1.0], [2.0, 0.0]])
    velocities = np.array([[1.5, 0.0], [0.0, 0.0]])
    follower.set_trajectory(JOINTS, 2.0, [0.5, 1.5], positions, now=2.0,
                            current_positions=np.array([0.5, 0.5]), velocities=velocities)
    for t, p, v in ((2.0, [0.5, 0.5], [0.0, 0.0]), (2.5, positions[0], velocities[0]),
                    (3.5, positions[1], velocities[1]), (9.0, positions[1], [0.0, 0.0])):
        state = follower.sample_state(t)
        np.testing.assert_allclose(state[0], p, atol=1e-12)
        np.testing.assert_allclose(state[1], v, atol=1e-12)
    expected = motion.sample([0.5, 0.5], [0.0, 0.0], positions[0], velocities[0], 0.5, 0.2)
    state = follower.sample_state(2.2)
    np.testing.assert_allclose(state[0], expected[0], atol=1e-12)
    np.testing.assert_allclose(state[1], expected[1], atol=1e-12)
    # Linear interpolation would give 0.5 + 0.5 * 0.4 = 0.7 on joint 0: this is the cubic.
    assert abs(state[0][0] - 0.7) > 1e-3
    segments = list(follower.segments())
    assert len(segments) == 2
    np.testing.assert_array_equal(segments[0][5], velocities[0])
    np.testing.assert_array_equal(segments[1][2], velocities[0])


def test_hermite_replacement_continues_position_and_velocity():
    follower = follower_at()
    follower.set_trajectory(JOINTS, 0.0, [1.0, 2.0], [[1.0, 0.0], [2.0, 0.0]], now=0.0,
                            current_positions=np.zeros(2), velocities=[[1.0, 0.0], [0.0, 0.0]])
    before = follower.sample_state(1.4)
    # Stamp in the past with joints swapped: the command still continues from (p, v) at 1.4.
    follower.set_trajectory(('j1', 'j0'), 1.2, [0.1, 0.6], [[0.0, 9.0], [1.0, 1.5]],
                            now=1.4, current_positions=np.zeros(2),
                            velocities=[[0.0, 9.0], [0.0, 0.0]])
    after = follower.sample_state(1.4)
    np.testing.assert_array_equal(after[0], before[0])
    np.testing.assert_array_equal(after[1], before[1])
    assert follower.remaining(1.4) == 1 and follower.end_time == pytest.approx(1.8)
    np.testing.assert_allclose(follower.sample(1.8), [1.5, 1.0], atol=1e-12)
    t0, p0, v0, t1, p1, v1 = next(follower.segments())
    assert (t0, t1) == (1.4, pytest.approx(1.8))
    np.testing.assert_array_equal(v0, before[1])
