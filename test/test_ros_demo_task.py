"""make demo's --task: the Panda runs behind the same nodes with its own model and limits."""

import argparse
import importlib.util

import pytest
from sparse_policy_ros.ros.demo import apply_task, node_commands, parse_args, policy_limits
from sparse_policy_ros.ros.paths import package_path

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
