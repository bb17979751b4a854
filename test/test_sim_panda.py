"""Tests of the push task on gym-hil's Franka Panda: contract, determinism, errors, expert."""

import importlib.util

import numpy as np
import pytest
from sparse_policy_ros.policy.observation import OBS_IMAGES, OBS_STATE
from sparse_policy_ros.sim import panda_env
from sparse_policy_ros.sim.env import ArmPushEnv
from sparse_policy_ros.sim.expert import PushExpert
from sparse_policy_ros.sim.panda_env import PandaPushEnv
from sparse_policy_ros.sim.panda_expert import main, panda_expert_success_rate

# Not pytest.importorskip('gym_hil'): importing the package needs gymnasium, which the env does
# not use (it only reads gym-hil's XML), so look the package up without importing it.
requires_gym_hil = pytest.mark.skipif(
    importlib.util.find_spec('gym_hil') is None,
    reason=f'gym-hil is not installed ({panda_env.INSTALL_HINT})')


@pytest.fixture
def env():
    """Make a rendering Panda env and close it after the test."""
    environment = PandaPushEnv(image_size=96)
    yield environment
    environment.close()


def expert_rollout(environment: PandaPushEnv, seed: int, steps: int) -> tuple[list, list]:
    """Run the expert for up to ``steps`` steps; return (images, joint states), reset included."""
    expert = PushExpert(environment)
    obs = environment.reset(seed=seed)
    expert.reset(seed)
    images, states = [obs[OBS_IMAGES]['front']], [obs[OBS_STATE]]
    for _ in range(steps):
        obs, _, terminated, truncated, _ = environment.step(expert.act())
        images.append(obs[OBS_IMAGES]['front'])
        states.append(obs[OBS_STATE])
        if terminated or truncated:
            break
    return images, states


@requires_gym_hil
def test_observation_contract(env):
    obs = env.reset(seed=0)
    assert set(obs) == {OBS_IMAGES, OBS_STATE}
    assert list(obs[OBS_IMAGES]) == env.camera_names == ['front']
    image = obs[OBS_IMAGES]['front']
    assert image.shape == (96, 96, 3) and image.dtype == np.uint8
    assert obs[OBS_STATE].shape == (7,) and obs[OBS_STATE].dtype == np.float32
    assert env.joint_names == [f'panda_joint{i}' for i in range(1, 8)]
    lower, upper = env.joint_limits
    assert lower.shape == upper.shape == env.max_velocity.shape == (7,)
    assert np.all(lower < upper)
    assert env.success_radius == 0.03 and not env.success
    # The episode starts at rest at home, gripper closed, tool tip at push height.
    task = env.privileged_state()
    assert task.tip_pos[2] == pytest.approx(env.push_height, abs=1e-3)
    np.testing.assert_allclose(obs[OBS_STATE][1:], env.home_qpos[1:], atol=1e-6)
    # Puck (red) and goal (green) are in view.
    pixels = image.astype(int)
    red = (pixels[..., 0] > 150) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    green = (pixels[..., 1] > 150) & (pixels[..., 0] < 100) & (pixels[..., 2] < 120)
    assert red.sum() > 20 and green.sum() > 20


@requires_gym_hil
def test_same_seed_is_bit_identical(env):
    first = expert_rollout(env, seed=3, steps=12)
    other = PandaPushEnv(image_size=96)
    try:
        second = expert_rollout(other, seed=3, steps=12)
    finally:
        other.close()
    assert len(first[0]) == len(second[0]) == 13
    for a, b in zip(first[0] + first[1], second[0] + second[1]):
        np.testing.assert_array_equal(a, b)
    # The arm moved and the picture changed, so the comparison covered a real trajectory.
    assert np.abs(first[1][-1] - first[1][0]).max() > 0.1
    assert not np.array_equal(first[0][0], first[0][-1])


@requires_gym_hil
def test_seeds_draw_arm_push_layouts():
    environment = PandaPushEnv(render=False)
    small_arm = ArmPushEnv(render=False)
    layouts = []
    for seed in range(5):
        environment.reset(seed=seed)
        small_arm.reset(seed=seed)
        task, reference = environment.privileged_state(), small_arm.privileged_state()
        layouts.append(np.concatenate([task.object_xy, task.goal_xy]))
        # Same ranges, rules and draw order as ArmPushEnv: the same puck and goal per seed.
        np.testing.assert_array_equal(task.object_xy, reference.object_xy)
        np.testing.assert_array_equal(task.goal_xy, reference.goal_xy)
    assert len(np.unique(np.round(layouts, 6), axis=0)) == 5


@requires_gym_hil
def test_bad_actions_raise_value_error_naming_the_field():
    environment = PandaPushEnv(render=False)
    hold = environment.reset(seed=0)[OBS_STATE].astype(np.float64)
    with pytest.raises(ValueError, match=r'action must have shape \(7,\).*got shape \(4,\)'):
        environment.step(hold[:4])
    bad = hold.copy()
    bad[5] = np.inf
    with pytest.raises(ValueError, match='action must be finite'):
        environment.step(bad)
    with pytest.raises(ValueError, match='action must be a float array'):
        environment.step(['a'] * 7)
    # Nothing above moved the simulation; a good action does.
    assert environment.sim_time == 0.0
    environment.step(hold)
    assert environment.sim_time == pytest.approx(0.1)


@requires_gym_hil
def test_expert_succeeds_on_most_seeds():
    rate, lengths, failures = panda_expert_success_rate(5, seed_start=0, progress=False)
    assert rate >= 0.8, f'failed seeds {failures}'
    assert len(lengths) == 5 and all(1 <= n <= 150 for n in lengths)


@requires_gym_hil
def test_cli_prints_a_summary_table(capsys):
    assert main(['--episodes', '2', '--render-episodes', '1']) == 0
    out = capsys.readouterr().out
    assert '| success ' in out and '2/2' in out and 'rendering' in out


def test_missing_gym_hil_names_the_install_line(monkeypatch):
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(ImportError, match=r'pip install --no-deps gym-hil==\d'):
        PandaPushEnv(render=False)
