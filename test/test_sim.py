"""Tests of the simulated push task: env contract, determinism, expert and demo recording."""

import numpy as np
import pytest
from sparse_policy_ros.policy.observation import OBS_IMAGES, OBS_STATE
from sparse_policy_ros.sim.env import ArmPushEnv
from sparse_policy_ros.sim.expert import ExecutionNoise, expert_success_rate, Phase, PushExpert
from sparse_policy_ros.sim.record import ACTION_KEY, IMAGE_KEY, record_demos, STATE_KEY
from sparse_policy_ros.training.replay_buffer import ReplayBuffer


@pytest.fixture
def env():
    """Make a rendering env and close it after the test."""
    environment = ArmPushEnv(image_size=96)
    yield environment
    environment.close()


def rollout(environment: ArmPushEnv, seed: int, steps: int) -> tuple[list, list, list]:
    """Run the expert for ``steps`` steps; return (images, states, privileged states)."""
    expert = PushExpert(environment)
    obs = environment.reset(seed=seed)
    expert.reset(seed)
    images, states, tasks = [obs[OBS_IMAGES]['front']], [obs[OBS_STATE]], []
    for _ in range(steps):
        tasks.append(environment.privileged_state())
        obs, _, terminated, truncated, _ = environment.step(expert.act())
        images.append(obs[OBS_IMAGES]['front'])
        states.append(obs[OBS_STATE])
        if terminated or truncated:
            break
    return images, states, tasks


def test_contract(env):
    obs = env.reset(seed=0)
    n = len(env.joint_names)
    assert n >= 4
    assert env.camera_names == ['front']
    assert set(obs) == {OBS_IMAGES, OBS_STATE}
    assert obs[OBS_IMAGES]['front'].shape == (96, 96, 3)
    assert obs[OBS_IMAGES]['front'].dtype == np.uint8
    assert obs[OBS_STATE].shape == (n,) and obs[OBS_STATE].dtype == np.float32
    lower, upper = env.joint_limits
    assert lower.shape == upper.shape == env.max_velocity.shape == (n,)
    assert np.all(lower < upper) and np.all(env.max_velocity > 0)
    assert env.control_hz == 10.0
    assert env.sim_time == 0.0
    assert not env.success
    # The scene is not blank: the puck (red) and the goal (green) are visible.
    image = obs[OBS_IMAGES]['front'].astype(int)
    red = (image[..., 0] > 150) & (image[..., 1] < 80) & (image[..., 2] < 80)
    green = (image[..., 1] > 150) & (image[..., 0] < 100) & (image[..., 2] < 120)
    assert red.sum() > 20 and green.sum() > 20


def test_same_seed_is_bit_identical(env):
    first = rollout(env, seed=7, steps=15)
    other = ArmPushEnv(image_size=96)
    try:
        second = rollout(other, seed=7, steps=15)
    finally:
        other.close()
    assert len(first[0]) == len(second[0]) == 16
    for a, b in zip(first[0], second[0]):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first[1], second[1]):
        np.testing.assert_array_equal(a, b)
    # The arm moved, so the comparison covered changing observations.
    assert not np.array_equal(first[1][0], first[1][-1])
    assert not np.array_equal(first[0][0], first[0][-1])


def test_different_seeds_place_object_and_goal_differently():
    environment = ArmPushEnv(render=False)
    placements = []
    for seed in range(5):
        environment.reset(seed=seed)
        task = environment.privileged_state()
        placements.append(np.concatenate([task.object_xy, task.goal_xy]))
        assert np.linalg.norm(task.goal_xy - task.object_xy) > environment.success_radius
    placements = np.array(placements)
    assert len(np.unique(placements.round(6), axis=0)) == 5
    # Goals fall on both sides of the puck across seeds.
    sides = set()
    for seed in range(40):
        environment.reset(seed=seed)
        task = environment.privileged_state()
        sides.add(bool(task.goal_xy[1] > task.object_xy[1]))
    assert sides == {True, False}


def test_different_seeds_give_different_images(env):
    first = env.reset(seed=1)[OBS_IMAGES]['front']
    second = env.reset(seed=2)[OBS_IMAGES]['front']
    assert not np.array_equal(first, second)


@pytest.mark.parametrize('seed', [0, 1, 2, 3, 4])
def test_expert_succeeds_smoothly(seed):
    environment = ArmPushEnv(render=False)
    expert = PushExpert(environment)
    environment.reset(seed=seed)
    expert.reset(seed)
    previous = environment.state().astype(np.float64)
    lower, upper = environment.joint_limits
    info = {'success': False}
    for _ in range(environment.max_steps):
        action = expert.act()
        assert np.all(action >= lower) and np.all(action <= upper)
        # Actions are smooth: no joint asked to move faster than its rated speed.
        assert np.all(np.abs(action - previous) <= environment.max_velocity
                      / environment.control_hz + 1e-9)
        previous = action
        _, reward, terminated, truncated, info = environment.step(action)
        if terminated or truncated:
            break
    assert info['success'] and info['is_success'] and terminated and not truncated
    assert reward == 1.0 and environment.success
    assert info['object_to_goal'] < environment.success_radius


def test_truncates_after_max_steps():
    environment = ArmPushEnv(render=False, max_steps=3)
    obs = environment.reset(seed=0)
    assert obs[OBS_IMAGES] == {}
    hold = obs[OBS_STATE].astype(np.float64)
    results = [environment.step(hold) for _ in range(3)]
    assert [r[3] for r in results] == [False, False, True]
    assert not any(r[2] for r in results)
    assert environment.sim_time == pytest.approx(0.3)
    with pytest.raises(RuntimeError, match='reset'):
        environment.step(hold)


def test_advance_in_small_pieces_matches_one_control_step():
    whole = ArmPushEnv(render=False)
    pieces = ArmPushEnv(render=False)
    target = whole.reset(seed=3)[OBS_STATE].astype(np.float64) + 0.2
    pieces.reset(seed=3)
    whole.set_joint_targets(target)
    whole.advance(0.1)
    pieces.set_joint_targets(target)
    for _ in range(10):
        pieces.advance(0.01)
    assert whole.sim_time == pieces.sim_time == pytest.approx(0.1)
    np.testing.assert_array_equal(whole.state(), pieces.state())
    assert not np.array_equal(whole.state(), target.astype(np.float32) - 0.2)


def test_actions_are_clipped_to_joint_limits():
    environment = ArmPushEnv(render=False)
    environment.reset(seed=0)
    lower, upper = environment.joint_limits
    environment.set_joint_targets(upper + 1.0)
    np.testing.assert_array_equal(environment.joint_targets, upper)
    environment.set_joint_targets(lower - 1.0)
    np.testing.assert_array_equal(environment.joint_targets, lower)


def test_bad_actions_raise_value_error():
    environment = ArmPushEnv(render=False)
    obs = environment.reset(seed=0)
    good = obs[OBS_STATE].astype(np.float64)
    with pytest.raises(ValueError, match=r'action must have shape \(4,\).*got shape \(3,\)'):
        environment.step(good[:3])
    with pytest.raises(ValueError, match=r'action must have shape.*got shape \(1, 4\)'):
        environment.step(good[None])
    bad = good.copy()
    bad[2] = np.nan
    with pytest.raises(ValueError, match='action must be finite'):
        environment.step(bad)
    with pytest.raises(ValueError, match='action must be a float array'):
        environment.step(['a', 'b', 'c', 'd'])
    with pytest.raises(ValueError, match='q must have shape'):
        environment.set_joint_targets(np.zeros(5))
    with pytest.raises(ValueError, match='dt must be'):
        environment.advance(float('inf'))
    # Nothing above moved the simulation.
    assert environment.sim_time == 0.0


def test_record_round_trip(tmp_path):
    path = tmp_path / 'demos.zarr'
    summary = record_demos(path, episodes=2, seed_start=0, progress=False)
    assert summary.kept_seeds == [0, 1] and summary.failed_seeds == []
    buffer = ReplayBuffer.open(path)
    assert buffer.n_episodes == 2
    assert buffer.keys == sorted([ACTION_KEY, IMAGE_KEY, STATE_KEY])
    np.testing.assert_array_equal(buffer.episode_ends, np.cumsum(summary.lengths))
    assert buffer.episode_ends.dtype == np.int64
    attrs = buffer.attrs
    assert attrs['joint_names'] == ['base_yaw', 'shoulder', 'elbow', 'wrist_pitch']
    assert attrs['control_hz'] == 10.0 and attrs['seeds'] == [0, 1]
    for index, seed in enumerate((0, 1)):
        episode = buffer.get_episode(index)
        length = summary.lengths[index]
        assert episode[IMAGE_KEY].shape == (length, 96, 96, 3)
        assert episode[IMAGE_KEY].dtype == np.uint8
        assert episode[STATE_KEY].shape == episode[ACTION_KEY].shape == (length, 4)
        assert episode[STATE_KEY].dtype == episode[ACTION_KEY].dtype == np.float32
        # The stored frames and states are what the env shows for that seed, step for step.
        environment = ArmPushEnv(image_size=96)
        try:
            images, states, _ = rollout(environment, seed=seed, steps=3)
        finally:
            environment.close()
        np.testing.assert_array_equal(episode[IMAGE_KEY][:3], np.stack(images[:3]))
        np.testing.assert_array_equal(episode[STATE_KEY][:3], np.stack(states[:3]))
        # Actions lead the state: the arm follows the targets within a step.
        np.testing.assert_allclose(episode[STATE_KEY][1:], episode[ACTION_KEY][:-1], atol=0.02)


def test_expert_goes_around_the_puck_on_both_sides():
    environment = ArmPushEnv(render=False)
    expert = PushExpert(environment)
    first_sides = set()
    for seed in range(12):
        environment.reset(seed=seed)
        expert.reset(seed)
        for _ in range(30):
            environment.step(expert.act())
            if expert.side != 0:
                first_sides.add(expert.side)
                break
    assert first_sides == {1, -1}


def _closest_approach(clearance: float, pass_margin: float, seed: int) -> float:
    """Smallest tip-to-puck distance before the first push."""
    environment = ArmPushEnv(render=False)
    expert = PushExpert(environment, clearance=clearance, pass_margin=pass_margin)
    environment.reset(seed=seed)
    expert.reset(seed)
    closest = np.inf
    while expert.phase is Phase.APPROACH:
        state = environment.privileged_state()
        closest = min(closest, float(np.linalg.norm(state.tip_pos[:2] - state.object_xy)))
        environment.step(expert.act())
    environment.close()
    return closest


def test_wider_margins_keep_the_pusher_farther_from_the_puck_before_the_push():
    env = ArmPushEnv(render=False)
    contact = env.object_radius + env.pusher_radius
    for seed in range(6):
        narrow = _closest_approach(0.02, 0.008, seed)
        wide = _closest_approach(0.04, 0.03, seed)
        # The default path may graze the puck at contact + 8 mm; the wide one keeps ~30 mm.
        assert narrow > contact + 0.005, (seed, narrow)
        assert wide > contact + 0.027, (seed, wide)
        assert wide > narrow, (seed, narrow, wide)
    with pytest.raises(ValueError, match='clearance must be a positive number, got -0.01'):
        PushExpert(env, clearance=-0.01)
    with pytest.raises(ValueError, match='pass_margin must be smaller than clearance'):
        PushExpert(env, clearance=0.03, pass_margin=0.03)
    env.close()


def test_lifted_approach_clears_the_puck_and_pushes_from_the_table():
    environment = ArmPushEnv(render=False)
    puck_top = 0.05  # the puck is 5 cm high, standing on the table (arm_push.xml)
    pusher_bottom_below_tip = 0.02  # the pusher reaches 2 cm below the tip site
    for seed in range(4):
        lifted = PushExpert(environment, lift=0.06)
        environment.reset(seed=seed)
        lifted.reset(seed)
        heights = {Phase.APPROACH: [], Phase.PUSH: []}
        while True:
            state = environment.privileged_state()
            phase = lifted.phase
            _, _, terminated, truncated, info = environment.step(lifted.act())
            heights[phase].append(float(state.tip_pos[2]))
            if terminated or truncated:
                break
        assert info['success'], seed
        # Raised on the way (the pusher's bottom above the puck's top), on the table to push.
        assert max(heights[Phase.APPROACH]) - pusher_bottom_below_tip > puck_top + 0.01, seed
        pushing = np.array(heights[Phase.PUSH][1:])
        np.testing.assert_allclose(pushing, environment.push_height, atol=0.004)
    with pytest.raises(ValueError, match=r'lift must be a number in \[0, 0.15\] m, got -0.01'):
        PushExpert(environment, lift=-0.01)
    environment.close()


def test_recording_stores_the_clearance_and_refuses_to_mix_two(tmp_path):
    path = tmp_path / 'demos.zarr'
    record_demos(path, episodes=1, seed_start=0, progress=False, clearance=0.04,
                 pass_margin=0.03)
    attrs = ReplayBuffer.open(path).attrs
    assert attrs['expert_clearance_m'] == 0.04 and attrs['expert_pass_margin_m'] == 0.03
    assert attrs['expert_lift_m'] == 0.0
    with pytest.raises(ValueError, match='expert_clearance_m=0.04.*expert_clearance_m=0.02'):
        record_demos(path, episodes=1, seed_start=1, progress=False)
    # A store from before the options existed holds default-margin, unlifted data: appending
    # wider margins or a lift to it is refused too.
    legacy = tmp_path / 'legacy.zarr'
    record_demos(legacy, episodes=1, seed_start=0, progress=False)
    buffer = ReplayBuffer.open(legacy, mode='a')
    for key in ('expert_clearance_m', 'expert_pass_margin_m', 'expert_lift_m'):
        del buffer._root.attrs[key]
    assert 'expert_clearance_m' not in ReplayBuffer.open(legacy).attrs
    with pytest.raises(ValueError, match='expert_clearance_m=0.02.*expert_clearance_m=0.04'):
        record_demos(legacy, episodes=1, seed_start=1, progress=False, clearance=0.04,
                     pass_margin=0.03)
    assert record_demos(legacy, episodes=1, seed_start=1, progress=False).kept_seeds == [1]
    with pytest.raises(ValueError, match='expert_lift_m=0.0.*expert_lift_m=0.06'):
        record_demos(legacy, episodes=1, seed_start=2, progress=False, lift=0.06)


def test_execution_noise_statistics_and_determinism():
    noise = ExecutionNoise(4, sigma=0.04, rho=0.9)
    zero = np.zeros(4)

    def sequence(seed: int, steps: int) -> np.ndarray:
        noise.reset(seed)
        return np.stack([noise.apply(zero) for _ in range(steps)])

    first = sequence(3, 20000)
    np.testing.assert_array_equal(first, sequence(3, 20000))
    assert not np.array_equal(first[:50], sequence(4, 50))
    # Stationary standard deviation sigma and lag-1 correlation rho, per joint.
    np.testing.assert_allclose(first.std(axis=0), 0.04, rtol=0.1)
    lag1 = [np.corrcoef(first[:-1, j], first[1:, j])[0, 1] for j in range(4)]
    np.testing.assert_allclose(lag1, 0.9, atol=0.03)
    # sigma = 0 is the noise-free expert: the action itself comes back.
    action = np.array([0.1, -0.2, 0.3, 0.4])
    quiet = ExecutionNoise(4, sigma=0.0)
    quiet.reset(0)
    assert quiet.apply(action) is action


@pytest.mark.parametrize('kwargs, field', [({'sigma': -0.1}, 'sigma'),
                                           ({'sigma': float('nan')}, 'sigma'),
                                           ({'sigma': 0.1, 'rho': 1.0}, 'rho'),
                                           ({'sigma': 0.1, 'rho': -0.1}, 'rho')])
def test_execution_noise_rejects_bad_settings(kwargs, field):
    with pytest.raises(ValueError, match=field):
        ExecutionNoise(4, **kwargs)


def test_noisy_recording_stores_the_expert_targets(tmp_path):
    path = tmp_path / 'dart.zarr'
    record_demos(path, episodes=1, seed_start=0, progress=False)
    summary = record_demos(path, episodes=1, seed_start=5, progress=False, action_noise=0.04)
    assert summary.kept_seeds == [5]
    buffer = ReplayBuffer.open(path)
    assert buffer.attrs['action_noise'] == [{'sigma_rad': 0.0, 'rho': 0.9, 'seeds': [0]},
                                            {'sigma_rad': 0.04, 'rho': 0.9, 'seeds': [5]}]
    episode = buffer.get_episode(1)
    # Replaying the stored actions with the same noise reproduces the stored states: the labels
    # are the expert's targets and the arm executed them plus the noise (up to the float32
    # rounding of the stored actions, which contact dynamics amplify to ~3e-5 rad here; the noise
    # itself is 0.04 rad).
    environment = ArmPushEnv(render=False)
    noise = ExecutionNoise(4, sigma=0.04)
    try:
        environment.reset(seed=5)
        noise.reset(5)
        states = [environment.state()]
        for action in episode[ACTION_KEY][:-1].astype(np.float64):
            environment.step(noise.apply(action))
            states.append(environment.state())
    finally:
        environment.close()
    np.testing.assert_allclose(episode[STATE_KEY], np.stack(states), atol=1e-3)
    # The noise is visible: the arm is off the stored targets by more than the noise-free 0.02.
    lag = np.abs(episode[STATE_KEY][1:] - episode[ACTION_KEY][:-1]).max()
    assert lag > 0.05


def test_expert_counts_its_reapproaches():
    environment = ArmPushEnv(render=False)
    expert = PushExpert(environment)
    counted, seen = [], []
    try:
        for seed in range(4):
            environment.reset(seed=seed)
            expert.reset(seed)
            switches, previous = 0, expert.phase
            while True:
                _, _, terminated, truncated, _ = environment.step(expert.act())
                switches += previous is Phase.PUSH and expert.phase is Phase.APPROACH
                previous = expert.phase
                if terminated or truncated:
                    break
            counted.append(expert.reapproaches)
            seen.append(switches)
    finally:
        environment.close()
    assert counted == seen and sum(counted) > 0
    rate, lengths, failures, reapproaches = expert_success_rate(4, progress=False)
    assert rate == 1.0 and failures == [] and len(lengths) == 4
    assert reapproaches == counted
