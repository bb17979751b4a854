"""Tests of the env factory and of record-demos / eval-policy choosing the environment by name."""

import importlib.util
import json
from pathlib import Path

from engine_helpers import TINY
import numpy as np
import pytest
from sparse_policy_ros.policy.checkpoint import save_policy
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.model import DiffusionPolicy
from sparse_policy_ros.policy.observation import OBS_STATE
from sparse_policy_ros.sim import evaluate, panda_env, record
from sparse_policy_ros.sim.env import ArmPushEnv
from sparse_policy_ros.sim.envs import env_name_for_task, ENV_NAMES, make_env
from sparse_policy_ros.training.replay_buffer import ReplayBuffer
import torch

# As in test_sim_panda.py: look gym-hil up without importing it (its package needs gymnasium).
requires_gym_hil = pytest.mark.skipif(
    importlib.util.find_spec('gym_hil') is None,
    reason=f'gym-hil is not installed ({panda_env.INSTALL_HINT})')

PANDA_JOINTS = [f'panda_joint{i}' for i in range(1, 8)]


@pytest.mark.parametrize('name, joints', [
    ('arm_push', ['base_yaw', 'shoulder', 'elbow', 'wrist_pitch']),
    pytest.param('panda_push', PANDA_JOINTS, marks=requires_gym_hil),
])
def test_make_env_builds_the_named_task(name, joints):
    environment = make_env(name, image_size=32, max_steps=7, render=False)
    try:
        assert isinstance(environment, ArmPushEnv)
        assert type(environment).__name__ == {'arm_push': 'ArmPushEnv',
                                              'panda_push': 'PandaPushEnv'}[name]
        assert environment.joint_names == joints
        assert environment.image_size == 32 and environment.max_steps == 7
        assert environment.reset(seed=0)[OBS_STATE].shape == (len(joints),)
    finally:
        environment.close()


def test_unknown_env_names_the_value_and_the_choices():
    assert ENV_NAMES == ('arm_push', 'panda_push')
    with pytest.raises(ValueError, match=r"env must be one of \['arm_push', 'panda_push'\], "
                                         r"got 'ur5_push'"):
        make_env('ur5_push')


def test_missing_gym_hil_only_matters_for_panda(monkeypatch):
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
    make_env('arm_push', render=False).close()
    with pytest.raises(ImportError, match=r'pip install --no-deps gym-hil==\d'):
        make_env('panda_push', render=False)


@pytest.mark.parametrize('extra, expected', [
    ({}, 'arm_push'), ({'task': 'arm_push'}, 'arm_push'), ({'task': 'panda_push'}, 'panda_push')])
def test_env_name_for_task(extra, expected):
    assert env_name_for_task(extra) == expected


def test_env_name_for_unknown_task_suggests_env():
    with pytest.raises(ValueError, match=r"task must be one of .* got 'sorting'; pass --env"):
        env_name_for_task({'task': 'sorting'})


@requires_gym_hil
def test_record_panda_round_trip(tmp_path, capsys):
    path = tmp_path / 'panda.zarr'
    assert record.main(['--env', 'panda_push', '--episodes', '1', '--out', str(path)]) == 0
    assert '| episodes kept ' in capsys.readouterr().out
    buffer = ReplayBuffer.open(path)
    assert buffer.n_episodes == 1
    attrs = buffer.attrs
    assert attrs['env'] == 'PandaPushEnv' and attrs['joint_names'] == PANDA_JOINTS
    assert attrs['seeds'] == [0] and attrs['failed_seeds'] == []
    episode = buffer.get_episode(0)
    length = int(buffer.episode_ends[0])
    assert episode[record.IMAGE_KEY].shape == (length, 96, 96, 3)
    assert episode[record.STATE_KEY].shape == episode[record.ACTION_KEY].shape == (length, 7)
    # The stored states are the Panda's, from its home pose on, and the arm follows the targets.
    environment = make_env('panda_push', render=False)
    try:
        first = environment.reset(seed=0)[OBS_STATE]
    finally:
        environment.close()
    np.testing.assert_array_equal(episode[record.STATE_KEY][0], first)
    np.testing.assert_allclose(episode[record.STATE_KEY][1:], episode[record.ACTION_KEY][:-1],
                               atol=0.05)
    # A store of one robot refuses the other's demonstrations.
    with pytest.raises(ValueError, match='joint_names'):
        record.record_demos(path, episodes=1, progress=False, env_name='arm_push')


def tiny_model(folder: Path, state_dim: int, extra: dict) -> Path:
    """Save an untrained tiny policy whose config names ``extra['task']``."""
    config = PolicyConfig(**{**TINY, 'state_dim': state_dim, 'action_dim': state_dim,
                             'extra': extra})
    torch.manual_seed(0)
    model = DiffusionPolicy(config)
    model.normalizer.set_stats({
        OBS_STATE: {'min': np.full(state_dim, -3.0), 'max': np.full(state_dim, 3.0)},
        'action': {'min': np.full(state_dim, -3.0), 'max': np.full(state_dim, 3.0)}})
    return save_policy(model.eval(), folder)


def run_eval(tmp_path: Path, model: Path, *extra: str) -> dict:
    out = tmp_path / 'eval'
    assert evaluate.main(['--model', str(model), '--episodes', '1', '--max-steps', '8',
                          '--modes', 'dense', '--out', str(out), *extra]) == 0
    return json.loads((out / 'eval.json').read_text())


@pytest.mark.parametrize('extra, state_dim, expected', [
    ({}, 4, 'arm_push'),
    ({'task': 'arm_push'}, 4, 'arm_push'),
    pytest.param({'task': 'panda_push'}, 7, 'panda_push', marks=requires_gym_hil),
])
def test_eval_policy_takes_the_env_from_the_model(tmp_path, extra, state_dim, expected):
    model = tiny_model(tmp_path / 'model', state_dim, extra)
    report = run_eval(tmp_path, model)
    assert report['meta']['env'] == expected
    # Both steps ran in that env: a 7-joint policy could not step the 4-joint arm, and back.
    assert report['modes'][0]['calls'] == 2


def test_eval_policy_env_flag_overrides_the_model(tmp_path, monkeypatch):
    model = tiny_model(tmp_path / 'model', 4, {'task': 'panda_push'})
    built = []
    monkeypatch.setattr(evaluate, 'make_env',
                        lambda name, **kwargs: built.append(name) or make_env(name, **kwargs))
    assert run_eval(tmp_path, model, '--env', 'arm_push')['meta']['env'] == 'arm_push'
    assert built == ['arm_push']


def test_eval_policy_rejects_an_unknown_task(tmp_path, capsys):
    model = tiny_model(tmp_path / 'model', 4, {'task': 'sorting'})
    assert evaluate.main(['--model', str(model), '--out', str(tmp_path / 'eval')]) == 2
    assert "got 'sorting'; pass --env" in capsys.readouterr().err
