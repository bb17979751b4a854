"""sim_node over loopback DDS: sensors, clock, trajectory execution and episodes."""

import importlib.util
import json

from builtin_interfaces.msg import Duration
from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from sparse_policy_ros.ros.diagnostics import status_values
from sparse_policy_ros.ros.sim_node import SimNode
from sparse_policy_ros.ros.trajectory import seconds_to_stamp, stamp_to_seconds
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

pytestmark = pytest.mark.ros

JOINTS = ['base_yaw', 'shoulder', 'elbow', 'wrist_pitch']


def close_node(node) -> None:
    """Stop the node's threads and destroy it (after the executor stopped)."""
    node.close()
    node.destroy_node()


@pytest.fixture
def make_sim_node(ros_harness):
    def make(**changes) -> SimNode:
        params = {'real_time_factor': 4.0, 'diagnostics_period': 0.1, 'seed': 3}
        params.update(changes)
        node = SimNode(context=ros_harness.context, parameter_overrides=[
            Parameter(name, value=value) for name, value in params.items()])
        return ros_harness.add_node(node, cleanup=close_node)

    return make


def trajectory(names, times, positions, stamp: float = 0.0) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(names))
    sec, nanosec = seconds_to_stamp(stamp)
    msg.header.stamp.sec, msg.header.stamp.nanosec = sec, nanosec
    for t, q in zip(times, positions):
        sec, nanosec = seconds_to_stamp(t)
        msg.points.append(JointTrajectoryPoint(positions=list(map(float, q)),
                                               time_from_start=Duration(sec=sec,
                                                                        nanosec=nanosec)))
    return msg


def latest_sim_status(diagnostics) -> dict | None:
    for array in reversed(diagnostics.snapshot()):
        for status in array.status:
            if status.name.startswith('sim_node'):
                return status_values(status)
    return None


def positions_after(harness, joint_states, sim_time: float) -> np.ndarray:
    """Joint positions from the first joint state stamped at or after ``sim_time``."""
    def find():
        for msg in joint_states.snapshot():
            if stamp_to_seconds(msg.header.stamp) >= sim_time:
                return msg
        return None
    msg = harness.wait_for(find, 10.0, f'a joint state at sim time {sim_time:.2f}')
    assert list(msg.name) == JOINTS
    return np.array(msg.position)


def test_sensors_and_clock_are_stamped_with_sim_time(ros_harness, make_sim_node):
    images = ros_harness.collect(Image, 'camera/front/image_raw', qos_profile_sensor_data)
    clock = ros_harness.collect(Clock, '/clock')
    joint_states = ros_harness.collect(JointState, 'joint_states')
    make_sim_node()
    ros_harness.wait_for(lambda: len(images) >= 5 and len(joint_states) >= 5, 10.0,
                         'images and joint states')
    image = images.snapshot()[-1]
    assert (image.encoding, image.height, image.width, image.step) == ('rgb8', 96, 96, 288)
    assert len(image.data) == 96 * 96 * 3
    assert np.frombuffer(bytes(image.data), np.uint8).std() > 0  # a rendered scene
    image_times = [stamp_to_seconds(msg.header.stamp) for msg in images.snapshot()]
    # Images every 1/20 s of simulated time (after the episode's first tick), stamped with
    # simulation ticks (1/100 s), on the time base of /clock.
    np.testing.assert_allclose(np.diff(image_times[1:]), 0.05, atol=1e-6)
    np.testing.assert_allclose(np.array(image_times) * 100, np.round(np.array(image_times) * 100),
                               atol=1e-6)
    ros_harness.wait_for(lambda: clock.snapshot() and stamp_to_seconds(
        clock.snapshot()[-1].clock) >= image_times[-1], 10.0, '/clock reaching the image time')
    clock_times = [stamp_to_seconds(msg.clock) for msg in clock.snapshot()]
    assert np.all(np.diff(clock_times) > 0)


def test_trajectory_execution_semantics(ros_harness, make_sim_node):
    joint_states = ros_harness.collect(JointState, 'joint_states')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    publisher = ros_harness.node.create_publisher(JointTrajectory,
                                                  '/arm_controller/joint_trajectory', 10)
    node = make_sim_node()
    ros_harness.wait_for(lambda: publisher.get_subscription_count() > 0, 10.0, 'the sim')
    start = positions_after(ros_harness, joint_states, node.sim_time)

    # Zero stamp = now; two points; the arm ends at the last one.
    target = start + np.array([0.3, -0.2, 0.2, 0.3])
    sent = node.sim_time
    publisher.publish(trajectory(JOINTS, [0.3, 0.6], [(start + target) / 2, target]))
    np.testing.assert_allclose(positions_after(ros_harness, joint_states, sent + 1.6), target,
                               atol=1e-3)

    # A slow trajectory replaced mid-way by a fast one in another joint order.
    far = target + np.array([-0.5, 0.3, 0.0, -0.4])
    publisher.publish(trajectory(JOINTS, [4.0], [far]))
    positions_after(ros_harness, joint_states, node.sim_time + 0.3)
    replacement = target + np.array([0.1, 0.1, -0.1, 0.1])
    order = [2, 0, 3, 1]
    sent = node.sim_time
    publisher.publish(trajectory([JOINTS[i] for i in order], [0.5], [replacement[order]]))
    np.testing.assert_allclose(positions_after(ros_harness, joint_states, sent + 1.6),
                               replacement, atol=1e-3)

    # Rejected: a trajectory whose points are all in the past, and one with unknown joints.
    now = node.sim_time
    publisher.publish(trajectory(JOINTS, [0.5, 1.0], [far, far], stamp=now - 5.0))
    publisher.publish(trajectory(['a', 'b', 'c', 'd'], [0.5], [far]))
    status = ros_harness.wait_for(
        lambda: (s := latest_sim_status(diagnostics)) is not None
        and s['trajectories_rejected'] == '2' and s, 10.0, 'two rejected trajectories')
    assert status['trajectories_accepted'] == '3'
    np.testing.assert_allclose(positions_after(ros_harness, joint_states, now + 0.5),
                               replacement, atol=1e-3)

    # A future start: the command holds until the stamp, then moves.
    now = node.sim_time
    publisher.publish(trajectory(JOINTS, [0.5], [target], stamp=now + 1.0))
    np.testing.assert_allclose(positions_after(ros_harness, joint_states, now + 0.9),
                               replacement, atol=1e-3)
    np.testing.assert_allclose(positions_after(ros_harness, joint_states, now + 2.5), target,
                               atol=1e-3)


def test_episodes_time_out_count_seeds_and_reset(ros_harness, make_sim_node):
    episodes = ros_harness.collect(String, '/sim_node/episode')
    node = make_sim_node(real_time_factor=0.0, max_episode_time=0.3, camera_rate=5.0)
    ros_harness.wait_for(lambda: len(episodes) >= 3, 20.0, 'three episodes')
    outcomes = [json.loads(msg.data) for msg in episodes.snapshot()]
    assert [o['seed'] for o in outcomes[:3]] == [3, 4, 5]
    assert [o['episode'] for o in outcomes[:3]] == [1, 2, 3]
    for outcome in outcomes[:3]:
        assert outcome['reason'] == 'timeout' and outcome['success'] is False
        assert outcome['duration_s'] == pytest.approx(0.3, abs=0.011)
    node.set_parameters([Parameter('seed', value=42), Parameter('max_episode_time', value=5.0)])
    response = ros_harness.call(Trigger, '/sim_node/reset_episode', Trigger.Request())
    assert response.success and 'seed 42' in response.message
    aborted = ros_harness.wait_for(
        lambda: [o for o in map(json.loads, (m.data for m in episodes.snapshot()))
                 if o['reason'] == 'aborted'], 10.0, 'the aborted episode')
    assert len(aborted) == 1
    node.set_parameters([Parameter('max_episode_time', value=0.3)])
    after = ros_harness.wait_for(
        lambda: [o for o in map(json.loads, (m.data for m in episodes.snapshot()))
                 if o['seed'] >= 42], 20.0, 'an episode with seed 42')
    assert after[0]['seed'] == 42 and after[0]['reason'] == 'timeout'


def test_commands_stamped_before_an_episode_reset_are_ignored(ros_harness, make_sim_node):
    # A controller node may publish a chunk planned before the reset moved the arm; following
    # it would pull the new episode's arm toward the old episode's targets.
    starts = ros_harness.collect(Header, '/sim_node/episode_start')
    joint_states = ros_harness.collect(JointState, 'joint_states')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    publisher = ros_harness.node.create_publisher(JointTrajectory,
                                                  '/arm_controller/joint_trajectory', 10)
    node = make_sim_node(max_episode_time=600.0)
    ros_harness.wait_for(lambda: publisher.get_subscription_count() > 0, 10.0, 'the sim')
    positions_after(ros_harness, joint_states, 1.0)  # stamps before the reset stay positive
    response = ros_harness.call(Trigger, '/sim_node/reset_episode', Trigger.Request())
    assert response.success
    episode = response.message.split()[1]  # 'episode N started with seed S'
    episode_start = stamp_to_seconds(ros_harness.wait_for(
        lambda: [m for m in starts.snapshot() if m.frame_id == episode], 10.0,
        f'episode {episode} starting')[0].stamp)
    start = positions_after(ros_harness, joint_states, episode_start)
    far = start + np.array([0.4, -0.3, 0.3, 0.4])
    # Still running when it arrives (ends 2 s after its stamp), but stamped before the reset.
    publisher.publish(trajectory(JOINTS, [0.5, 2.0], [far, far], stamp=episode_start - 0.05))
    status = ros_harness.wait_for(
        lambda: (s := latest_sim_status(diagnostics)) is not None
        and s['trajectories_before_episode'] == '1' and s, 10.0, 'the ignored trajectory')
    assert status['trajectories_accepted'] == '0'
    np.testing.assert_allclose(positions_after(ros_harness, joint_states, node.sim_time + 0.6),
                               start, atol=1e-3)
    # The same command stamped at the episode start is followed.
    publisher.publish(trajectory(JOINTS, [0.5, 2.0], [far, far], stamp=node.sim_time))
    np.testing.assert_allclose(positions_after(ros_harness, joint_states, node.sim_time + 2.5),
                               far, atol=1e-3)


@pytest.mark.skipif(importlib.util.find_spec('gym_hil') is None,
                    reason='gym-hil not installed (pip install --no-deps gym-hil==0.1.14)')
def test_the_panda_task_publishes_its_seven_joints_and_follows_a_trajectory(
        ros_harness, make_sim_node):
    joint_states = ros_harness.collect(JointState, 'joint_states')
    images = ros_harness.collect(Image, 'camera/front/image_raw', qos_profile_sensor_data)
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics')
    node = make_sim_node(task='panda_push')
    names = [f'panda_joint{i}' for i in range(1, 8)]
    ros_harness.wait_for(lambda: len(joint_states) >= 3 and len(images) >= 2, 20.0,
                         'Panda joint states and images')
    assert list(joint_states.snapshot()[-1].name) == names
    status = ros_harness.wait_for(lambda: latest_sim_status(diagnostics), 10.0, 'sim status')
    assert status['task'] == 'panda_push'
    start = np.array(joint_states.snapshot()[-1].position)
    target = start + np.array([0.2, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0])
    now = stamp_to_seconds(joint_states.snapshot()[-1].header.stamp)
    node.trajectory_callback(trajectory(names, [1.0], [target], stamp=now))

    def moved():  # the first joint follows the commanded move (the servo, not a teleport)
        latest = joint_states.snapshot()[-1]
        return (stamp_to_seconds(latest.header.stamp) > now + 1.5
                and abs(latest.position[0] - target[0]) < 0.02)
    ros_harness.wait_for(moved, 20.0, 'panda_joint1 at its target')
