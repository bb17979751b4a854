"""eval-policy --executor node: episodes run by the policy node's control loop."""

import json
from pathlib import Path

import numpy as np
import pytest
from sparse_policy_ros.control.replanning import ReplanSettings
from sparse_policy_ros.sim.disturbance import DisturbanceSpec
from sparse_policy_ros.sim.env import ArmPushEnv
from sparse_policy_ros.sim.evaluate import main, run_episode, Timing
from sparse_policy_ros.sim.node_executor import node_joint_limits, NodeExecutor
from sparse_policy_ros.sim.node_executor import run_episode_node
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / 'models' / 'default'


@pytest.fixture(scope='module')
def policy():
    policy = SparsePolicy.from_pretrained(DEFAULT_MODEL, device='cpu', mode='fora',
                                          target_sparsity=0.9)
    yield policy
    policy.close()


def node_episode(policy: SparsePolicy, executor: NodeExecutor, seed: int = 100003,
                 max_steps: int = 25) -> dict:
    joint_names, limits = node_joint_limits('arm_push')
    env = ArmPushEnv(image_size=policy.config.image_shape[1], max_steps=max_steps)
    try:
        return run_episode_node(env, policy, seed, executor, joint_names, limits)
    finally:
        env.close()


def test_the_node_limits_are_the_demo_arms():
    names, limits = node_joint_limits('arm_push')
    assert names == ('base_yaw', 'shoulder', 'elbow', 'wrist_pitch')
    np.testing.assert_allclose(limits.max_velocity, [1.5, 1.5, 2.0, 2.5])
    np.testing.assert_allclose(limits.max_acceleration, [8.0, 8.0, 10.0, 12.0])
    _, looser = node_joint_limits('arm_push', {'max_joint_acceleration': [16, 16, 20, 24]})
    np.testing.assert_allclose(looser.max_acceleration, [16.0, 16.0, 20.0, 24.0])
    np.testing.assert_allclose(looser.max_velocity, limits.max_velocity)
    with pytest.raises(ValueError, match=r"\['replan_rate'\] cannot be set here"):
        node_joint_limits('arm_push', {'replan_rate': 5.0})


def test_fixed_latency_episodes_repeat_and_the_targets_keep_the_speed_limit(policy):
    executor = NodeExecutor(latency_ms=40.0)
    first = node_episode(policy, executor)
    again = node_episode(policy, executor)
    for key in first:
        if key != 'latencies_ms':
            assert first[key] == again[key], key
    assert first['steps'] == 25 and first['calls'] >= 3
    # Every chunk was published (the last call may still be running when the episode ends).
    assert first['calls'] - 1 <= first['chunk_outcomes']['published'] <= first['calls']
    assert set(first['chunk_outcomes']) == {'published'}
    # The first call's 40 ms hold the targets for the first control period only.
    assert first['held_steps'] == 1
    # Chunked: a call when 2 actions are left, each chunk spliced onto the running one.
    assert first['splices'] == first['calls'] - 1
    # The safety filter keeps the commanded speed within the limits (sampled per period).
    assert 0.0 < first['speed_ratio_max'] <= 1.0 + 1e-6


def test_a_chunk_slower_than_its_actions_comes_late_and_is_dropped(policy):
    # A chunk's 8 actions are due within 0.7 s of its observation; 800 ms later every one is
    # due within half a period of publishing: the node drops it (chunks_late) and the arm,
    # never commanded, rests at its targets.
    late = node_episode(policy, NodeExecutor(latency_ms=800.0), max_steps=30)
    assert set(late['chunk_outcomes']) == {'late'} and late['chunk_outcomes']['late'] >= 3
    assert late['held_steps'] == late['steps'] == 30
    # 500 ms: the last actions are still ahead and get published.
    slow = node_episode(policy, NodeExecutor(latency_ms=500.0), max_steps=30)
    assert slow['chunk_outcomes'].get('published', 0) >= 1


def test_streaming_calls_follow_new_data_and_keep_the_committed_rows(policy):
    streaming = NodeExecutor(ReplanSettings('streaming', consistency='prefix'), latency_ms=30.0)
    result = node_episode(policy, streaming)
    chunked = node_episode(policy, NodeExecutor(latency_ms=30.0))
    assert result['calls'] > 3 * chunked['calls']
    # Prefix-conditioned chunks join the running plan closely.
    assert result['splice_max'] < 0.05, result['splice_max']


def test_cli_runs_the_node_executor_and_records_its_settings(tmp_path):
    out = tmp_path / 'eval'
    assert main(['--model', str(DEFAULT_MODEL), '--episodes', '1', '--max-steps', '20',
                 '--modes', 'fora', '--target-sparsity', '0.9', '--executor', 'node',
                 '--latency-ms', '30', '--out', str(out)]) == 0
    report = json.loads((out / 'eval.json').read_text())
    assert report['meta']['executor'] == 'node'
    assert report['meta']['node']['mode'] == 'chunked'
    assert report['meta']['node']['latency_ms'] == 30.0
    row = report['modes'][0]
    assert row['calls'] - 1 <= row['chunk_outcomes']['published'] <= row['calls']
    assert row['velocity_limited'] >= 0
    assert row['action_deviation_from_dense'] is None  # no reference with the node executor


@pytest.mark.parametrize('args, message', [
    (['--executor', 'node', '--consistency', 'ensemble'], '--executor node takes --consistency'),
    (['--executor', 'node', '--cache-shift', 'on'], 'leave --cache-shift auto'),
    (['--replan-mode', 'streaming'], 'need --executor node'),
    (['--node-param', 'max_joint_velocity:=[1, 1, 1, 1]'], 'need --executor node'),
    (['--executor', 'node', '--node-param', 'replan_rate:=5'], "['replan_rate'] cannot be set"),
    (['--executor', 'node', '--node-param', 'max_joint_velocity'], 'expects NAME:=VALUE'),
    (['--executor', 'node', '--replan-rate', '-1'], 'replan_rate must be a finite number'),
])
def test_node_executor_arguments_it_cannot_honour_exit_2(tmp_path, capsys, args, message):
    assert main(['--model', str(DEFAULT_MODEL), '--out', str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


def test_the_disturbance_happens_at_its_control_step_as_in_the_grid_executor(policy):
    joint_names, limits = node_joint_limits('arm_push')
    spec = DisturbanceSpec('either')
    results = []
    for node in (False, True):
        env = ArmPushEnv(image_size=policy.config.image_shape[1], max_steps=60,
                         disturbance=spec)
        try:
            results.append(
                run_episode_node(env, policy, 100005, NodeExecutor(latency_ms=30.0),
                                 joint_names, limits) if node else
                run_episode(env, policy, 100005, None, False, None, Timing(8)))
        finally:
            env.close()
    grid, node = (r['disturbance'] for r in results)
    assert grid is not None and node is not None
    assert node['step'] == grid['step'] and node['kind'] == grid['kind']
    # Applied unless the episode ended before its step (it does not, for this seed).
    assert node['status'] == 'applied' or results[1]['steps'] < node['step']
    assert node['status'] == 'applied'
