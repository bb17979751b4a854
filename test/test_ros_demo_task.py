"""make demo's --task: the Panda runs behind the same nodes with its own model and limits."""

import argparse
import importlib.util

from builtin_interfaces.msg import Duration, Time
import numpy as np
import pytest
from sensor_msgs.msg import JointState
from sparse_policy_ros.control.safety import JointLimits
from sparse_policy_ros.ros.demo import apply_task, DemoMonitor, node_commands, parse_args
from sparse_policy_ros.ros.demo import policy_limits
from sparse_policy_ros.ros.paths import package_path
from std_msgs.msg import Header
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

requires_gym_hil = pytest.mark.skipif(importlib.util.find_spec('gym_hil') is None,
                                      reason='gym-hil not installed')


def test_the_default_task_is_the_models_and_changes_nothing_else():
    args = parse_args([])
    assert apply_task(args) == 'arm_push'
    assert args.sim_params == ['task:=arm_push'] and args.policy_params == []
    commands = node_commands(args, '')
    assert 'task:=arm_push' in commands['sim_node']


@requires_gym_hil
def test_panda_gets_its_model_joints_and_limits_and_explicit_params_win():
    args = parse_args(['--task', 'panda_push', '--policy-params', 'max_joint_velocity:=[1.0, '
                       '1.0, 1.0, 1.0, 1.0, 1.0, 1.0]'])
    assert apply_task(args) == 'panda_push'
    assert args.model_path == str(package_path('models', 'panda_push'))
    assert args.sim_params == ['task:=panda_push']
    names, limits = policy_limits(args.policy_params)
    assert names == tuple(f'panda_joint{i}' for i in range(1, 8))
    assert list(limits.max_velocity) == [1.0] * 7  # the user's override came last
    assert limits.lower[3] == pytest.approx(-3.0718) and limits.upper[5] == pytest.approx(3.7525)
    assert list(limits.max_acceleration) == [15.0, 7.5, 10.0, 12.5, 15.0, 20.0, 20.0]
    # A Panda model folder picks the task by itself.
    args = argparse.Namespace(task=None, model_path=str(package_path('models', 'panda_push')),
                              policy_params=[], sim_params=[])
    assert apply_task(args) == 'panda_push'


def joint_state(names, seconds: float, positions) -> JointState:
    msg = JointState(name=list(names), position=[float(p) for p in positions])
    msg.header.stamp = Time(sec=int(seconds), nanosec=int(round(seconds % 1 * 1e9)))
    return msg


def trajectory(names, seconds: float, target) -> JointTrajectory:
    msg = JointTrajectory(joint_names=list(names), points=[JointTrajectoryPoint(
        positions=[float(p) for p in target], velocities=[0.0] * len(names),
        time_from_start=Duration(sec=1))])
    msg.header.stamp = Time(sec=int(seconds), nanosec=int(round(seconds % 1 * 1e9)))
    return msg


@pytest.mark.ros
def test_monitor_does_not_check_from_rest_an_arm_already_moving(ros_env):
    # The monitor's trajectory subscription may match after the node's first commands: the
    # first one it gets then finds the arm moving, and rebuilding that motion from rest would
    # report limits broken that were not. Such an episode is counted unchecked instead.
    names = ('a', 'b')
    limits = JointLimits(lower=np.full(2, -3.0), upper=np.full(2, 3.0),
                         max_velocity=np.full(2, 1.0), max_acceleration=np.full(2, 5.0))
    monitor = DemoMonitor('/arm_controller/joint_trajectory', limits, names, context=ros_env)
    try:
        monitor.episode_start_callback(Header(stamp=Time(sec=1)))
        monitor.joint_state_callback(joint_state(names, 1.00, [0.0, 0.0]))
        monitor.joint_state_callback(joint_state(names, 1.02, [0.01, 0.0]))  # moving
        monitor.trajectory_callback(trajectory(names, 1.03, [0.2, 0.0]))
        monitor.trajectory_callback(trajectory(names, 1.50, [0.3, 0.0]))
        assert monitor.state.unchecked_missed_commands == 2
        assert monitor.state.checker.messages == 0
        # The next episode starts at rest: its first command is checked from there.
        monitor.episode_start_callback(Header(stamp=Time(sec=2)))
        monitor.joint_state_callback(joint_state(names, 2.00, [0.5, 0.0]))
        monitor.joint_state_callback(joint_state(names, 2.02, [0.5, 0.0]))
        monitor.trajectory_callback(trajectory(names, 2.03, [0.6, 0.0]))
        assert monitor.state.unchecked_missed_commands == 2
        assert monitor.state.checker.messages == 1
        monitor.state.checker.finish()
        assert monitor.state.checker.ok
    finally:
        monitor.destroy_node()
