"""Tests of the disturbance variant of the push task: a shoved puck or a goal that jumps."""

import json

import numpy as np
import pytest
from sparse_policy_ros.policy.observation import OBS_IMAGES, OBS_STATE
from sparse_policy_ros.sim import env as env_module
from sparse_policy_ros.sim.disturbance import (
    APPLIED, candidate_displacements, Disturbance, DisturbanceSpec, draw_disturbance, GOAL_JUMP,
    PENDING, SEARCH_DISTANCES, SEARCH_HEADINGS, SHOVE, SKIPPED)
from sparse_policy_ros.sim.env import (
    ArmPushEnv, GOAL_X_RANGE, GOAL_Y_RANGE, OBJECT_X_RANGE, OBJECT_Y_RANGE)
from sparse_policy_ros.sim.envs import make_env
from sparse_policy_ros.sim.expert import PushExpert


def expert_rollout(environment: ArmPushEnv, seed: int, steps: int) -> tuple[list, list, list]:
    """Run the expert for up to ``steps`` steps; return (observations, task states, infos)."""
    expert = PushExpert(environment)
    observations = [environment.reset(seed=seed)]
    expert.reset(seed)
    tasks, infos = [environment.privileged_state()], []
    for _ in range(steps):
        obs, _, terminated, truncated, info = environment.step(expert.act())
        observations.append(obs)
        tasks.append(environment.privileged_state())
        infos.append(info)
        if terminated or truncated:
            break
    return observations, tasks, infos


def hold_rollout(environment: ArmPushEnv, seed: int, steps: int) -> tuple[list, list]:
    """Hold the home pose for ``steps`` steps (the puck rests); return (task states, infos)."""
    environment.reset(seed=seed)
    hold = environment.joint_targets
    tasks, infos = [environment.privileged_state()], []
    for _ in range(steps):
        infos.append(environment.step(hold)[4])
        tasks.append(environment.privileged_state())
    return tasks, infos


@pytest.mark.parametrize('render', [False, True])
def test_none_option_is_bit_identical_to_the_plain_env(render):
    plain = ArmPushEnv(image_size=32, render=render)
    off = ArmPushEnv(image_size=32, render=render, disturbance=None)
    try:
        for seed in (0, 3, 11):
            first = expert_rollout(plain, seed, 12)
            second = expert_rollout(off, seed, 12)
            assert len(first[0]) == len(second[0]) == 13
            for a, b in zip(first[0], second[0]):
                np.testing.assert_array_equal(a[OBS_STATE], b[OBS_STATE])
                assert a[OBS_IMAGES].keys() == b[OBS_IMAGES].keys()
                for camera in a[OBS_IMAGES]:
                    np.testing.assert_array_equal(a[OBS_IMAGES][camera], b[OBS_IMAGES][camera])
            for a, b in zip(first[1], second[1]):
                for name in ('object_xy', 'goal_xy', 'tip_pos', 'joint_positions'):
                    np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
            assert first[2] == second[2]
            assert all('disturbance' not in info for info in second[2])
            assert off.disturbance is None and not off.disturbance_happened
    finally:
        plain.close()
        off.close()


def test_the_disturbance_leaves_the_layout_of_a_seed_alone():
    plain = ArmPushEnv(render=False)
    disturbed = ArmPushEnv(render=False, disturbance=DisturbanceSpec(step_range=(30, 30)))
    for seed in range(4):
        first, second = hold_rollout(plain, seed, 5)[0], hold_rollout(disturbed, seed, 5)[0]
        for a, b in zip(first, second):
            np.testing.assert_array_equal(a.object_xy, b.object_xy)
            np.testing.assert_array_equal(a.goal_xy, b.goal_xy)
            np.testing.assert_array_equal(a.joint_positions, b.joint_positions)


def test_same_seed_gives_the_same_event_and_different_seeds_differ():
    spec = DisturbanceSpec()
    assert draw_disturbance(spec, 5) == draw_disturbance(spec, 5)
    events = [draw_disturbance(spec, seed) for seed in range(20)]
    assert len({(e.step, e.heading, e.distance) for e in events}) == 20
    assert {e.kind for e in events} == {SHOVE, GOAL_JUMP}
    assert all(spec.step_range[0] <= e.step <= spec.step_range[1] for e in events)
    assert all(e.status == PENDING and e.displacement is None for e in events)
    # Realised in the env: the same seed and actions give the same applied event twice.
    environment = ArmPushEnv(render=False, disturbance=spec)
    first = expert_rollout(environment, 4, 60)[2]
    event = environment.disturbance
    second = expert_rollout(environment, 4, 60)[2]
    assert event.happened and environment.disturbance == event
    assert first == second
    other = expert_rollout(environment, 5, 60)[2]
    assert environment.disturbance != event and other != first


@pytest.mark.parametrize('kind', [SHOVE, GOAL_JUMP])
def test_the_event_happens_exactly_at_the_drawn_step(kind):
    environment = ArmPushEnv(render=False, disturbance=DisturbanceSpec(kind=kind))
    for seed in range(3):
        tasks, infos = hold_rollout(environment, seed, 45)
        event = environment.disturbance
        assert event.kind == kind and event.status == APPLIED
        s = event.step
        moved = 'object_xy' if kind == SHOVE else 'goal_xy'
        still = 'goal_xy' if kind == SHOVE else 'object_xy'
        # tasks[k] is the state after k steps; nothing moves before step s, the jump is in s.
        for k in range(1, s):
            np.testing.assert_allclose(getattr(tasks[k], moved), getattr(tasks[0], moved),
                                       atol=1e-6)
            assert 'disturbance' not in infos[k - 1]
        jump = getattr(tasks[s], moved) - getattr(tasks[s - 1], moved)
        np.testing.assert_allclose(jump, event.displacement, atol=1e-6)
        assert np.linalg.norm(jump) >= 0.02
        np.testing.assert_allclose(getattr(tasks[s], still), getattr(tasks[s - 1], still),
                                   atol=1e-6)
        # From step s on, info carries the event; the env reports it as having happened.
        assert infos[s - 1]['steps'] == s
        assert all(info['disturbance'] == event.to_dict() for info in infos[s - 1:])
        assert environment.disturbance_happened


def test_disturbance_happened_is_false_until_the_step():
    environment = ArmPushEnv(render=False, disturbance=DisturbanceSpec(step_range=(3, 3)))
    environment.reset(seed=0)
    hold = environment.joint_targets
    for _ in range(2):
        environment.step(hold)
        assert not environment.disturbance_happened
        assert environment.disturbance.status == PENDING
    environment.step(hold)
    assert environment.disturbance_happened
    environment.reset(seed=0)
    assert not environment.disturbance_happened


def test_after_a_shove_the_puck_is_on_the_table_and_not_in_the_goal():
    spec = DisturbanceSpec(kind=SHOVE, shove_speed=(0.1, 0.3))
    environment = ArmPushEnv(render=False, disturbance=spec)
    successes = 0
    for seed in range(8):
        _, tasks, infos = expert_rollout(environment, seed, 150)
        event = environment.disturbance
        if event.status == PENDING:  # the expert finished before the drawn step
            continue
        assert event.happened
        after = np.array(event.object_after)
        assert OBJECT_X_RANGE[0] <= after[0] <= OBJECT_X_RANGE[1]
        assert OBJECT_Y_RANGE[0] <= after[1] <= OBJECT_Y_RANGE[1]
        assert np.linalg.norm(after - np.array(event.goal_after)) >= spec.min_separation
        np.testing.assert_allclose(after - np.array(event.object_before), event.displacement)
        assert spec.shove_distance[0] - 1e-9 <= np.linalg.norm(event.displacement) \
            <= spec.shove_distance[1] + 1e-9
        assert 0.1 <= np.linalg.norm(event.velocity) <= 0.3
        # Put down clear of the pusher (where the tip was when the step began).
        tip_xy = tasks[event.step - 1].tip_pos[:2]
        assert np.linalg.norm(after - tip_xy) >= (environment.object_radius
                                                  + environment.pusher_radius)
        # The shove itself does not finish the task.
        assert not infos[event.step - 1]['success']
        assert infos[event.step - 1]['object_to_goal'] > environment.success_radius
        successes += infos[-1]['success']
    # The expert re-plans from the privileged state every step, so it recovers.
    assert successes >= 6


def test_a_goal_jump_moves_the_goal_and_success_uses_the_new_goal():
    spec = DisturbanceSpec(kind=GOAL_JUMP)
    environment = ArmPushEnv(render=False, disturbance=spec)
    for seed in range(4):
        tasks, infos = hold_rollout(environment, seed, 41)
        event = environment.disturbance
        s = event.step
        old_goal, new_goal = np.array(event.goal_before), np.array(event.goal_after)
        object_xy = tasks[s].object_xy
        assert GOAL_X_RANGE[0] <= new_goal[0] <= GOAL_X_RANGE[1]
        assert GOAL_Y_RANGE[0] <= new_goal[1] <= GOAL_Y_RANGE[1]
        assert np.linalg.norm(new_goal - old_goal) >= spec.goal_jump_distance[0] - 1e-9
        assert np.linalg.norm(new_goal - object_xy) >= spec.min_separation
        np.testing.assert_allclose(tasks[s].goal_xy, new_goal)
        assert infos[s - 2]['object_to_goal'] == pytest.approx(
            np.linalg.norm(tasks[s - 1].object_xy - old_goal), abs=1e-6)
        assert infos[s - 1]['object_to_goal'] == pytest.approx(
            np.linalg.norm(object_xy - new_goal), abs=1e-6)
        assert environment.object_to_goal() == pytest.approx(
            np.linalg.norm(tasks[-1].object_xy - new_goal), abs=1e-6)
    # Success is tested against the goal where it is now: the puck on the old goal is no success,
    # on the new one it is.
    for xy, success in ((old_goal, False), (new_goal, True)):
        environment._data.qpos[environment._object_qpos_adr] = xy
        # (mujoco through env.py, which picks the headless GL backend before importing it)
        env_module.mujoco.mj_forward(environment.model, environment._data)
        assert environment.success is success


def test_search_starts_at_the_drawn_displacement_and_an_impossible_event_is_skipped():
    spec = DisturbanceSpec(kind=SHOVE)
    event = draw_disturbance(spec, 0)
    candidates = list(candidate_displacements(event, spec))
    np.testing.assert_allclose(candidates[0], event.distance * np.array(
        [np.cos(event.heading), np.sin(event.heading)]))
    assert len(candidates) == SEARCH_HEADINGS * (SEARCH_DISTANCES + 1)
    headings = [np.arctan2(c[1], c[0]) for c in candidates[:SEARCH_HEADINGS]]
    assert len({round(h, 6) for h in headings}) == SEARCH_HEADINGS
    # No 0.5 m shove keeps the puck in its 0.14 m x 0.34 m range: skipped, the world untouched.
    far = DisturbanceSpec(kind=SHOVE, step_range=(2, 2), shove_distance=(0.5, 0.6))
    environment = ArmPushEnv(render=False, disturbance=far)
    tasks, infos = hold_rollout(environment, 0, 3)
    assert environment.disturbance.status == SKIPPED and not environment.disturbance_happened
    assert 'no valid shove' in environment.disturbance.reason
    assert 'disturbance' not in infos[0]
    assert infos[1]['disturbance']['status'] == 'skipped'
    assert infos[1]['disturbance']['displacement'] is None
    np.testing.assert_allclose(tasks[2].object_xy, tasks[0].object_xy, atol=1e-6)


@pytest.mark.parametrize('kwargs, message', [
    ({'kind': 'push'}, r"kind must be one of \['shove', 'goal_jump', 'either'\], got 'push'"),
    ({'step_range': (0, 5)}, r'step_range must be .*1 <= first <= last.*got \(0, 5\)'),
    ({'step_range': (9, 3)}, r'step_range must be .*got \(9, 3\)'),
    ({'step_range': (1.5, 3)}, r'step_range must be a pair \(first, last\) of ints'),
    ({'shove_distance': (0.0, 0.1)}, r'shove_distance must be .*0 < lo <= hi \(m\), '
                                     r'got \(0.0, 0.1\)'),
    ({'shove_distance': (0.1,)}, r'shove_distance must be a pair .*got \(0.1,\)'),
    ({'shove_distance': 'far'}, r"shove_distance must be .*got 'far'"),
    ({'shove_speed': (-0.1, 0.2)}, r'shove_speed must be .*0 <= lo <= hi \(m/s\)'),
    ({'shove_speed': (0.3, 0.2)}, r'shove_speed must be .*got \(0.3, 0.2\)'),
    ({'goal_jump_distance': (0.01, 0.1)}, r'goal_jump_distance must be .*0.02 <= lo'),
    ({'goal_jump_distance': (0.05, float('nan'))}, r'goal_jump_distance must be .*finite'),
    ({'min_separation': 0.0}, r'min_separation must be a positive finite number.*got 0.0'),
    ({'min_separation': True}, r'min_separation must be .*got True'),
])
def test_spec_validation_names_the_field_and_the_value(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DisturbanceSpec(**kwargs)


def test_env_checks_the_spec_against_its_own_settings():
    with pytest.raises(ValueError, match=r'disturbance must be a DisturbanceSpec or None, '
                                         r"got \{'kind': 'shove'\}"):
        ArmPushEnv(render=False, disturbance={'kind': 'shove'})
    with pytest.raises(ValueError, match=r'disturbance.min_separation must exceed '
                                         r'success_radius \(0.03\).*got 0.02'):
        ArmPushEnv(render=False, disturbance=DisturbanceSpec(min_separation=0.02))
    with pytest.raises(ValueError, match=r'disturbance.step_range must end at most at '
                                         r'max_steps \(20\), got \(10, 40\)'):
        ArmPushEnv(render=False, max_steps=20, disturbance=DisturbanceSpec())


def test_spec_normalises_sequences_to_tuples():
    spec = DisturbanceSpec(step_range=[5, 7], shove_distance=[0.05, 0.1])
    assert spec.step_range == (5, 7) and spec.shove_distance == (0.05, 0.1)
    assert spec == DisturbanceSpec(step_range=(5, 7), shove_distance=(0.05, 0.1))
    hash(spec)


def test_to_dict_is_json_serialisable():
    spec = DisturbanceSpec(kind=SHOVE, shove_speed=(0.1, 0.2))
    assert json.loads(json.dumps(spec.to_dict())) == spec.to_dict()
    planned = draw_disturbance(spec, 1)
    assert json.loads(json.dumps(planned.to_dict())) == planned.to_dict()
    assert planned.to_dict()['displacement'] is None
    environment = ArmPushEnv(render=False, disturbance=spec)
    infos = hold_rollout(environment, 1, 41)[1]
    data = infos[-1]['disturbance']
    assert json.loads(json.dumps(data)) == data
    assert data['status'] == 'applied' and data['kind'] == 'shove'
    assert data['step'] == planned.step and len(data['displacement']) == 2
    assert isinstance(environment.disturbance, Disturbance)


def test_make_env_passes_the_disturbance_through():
    spec = DisturbanceSpec(kind=GOAL_JUMP)
    environment = make_env('arm_push', render=False, disturbance=spec)
    try:
        assert environment.disturbance_spec is spec
        environment.reset(seed=2)
        assert environment.disturbance == draw_disturbance(spec, 2)
    finally:
        environment.close()
    assert make_env('arm_push', render=False).disturbance_spec is None
    with pytest.raises(ValueError, match=r"disturbance variant exists for 'arm_push' only, "
                                         r"got env 'panda_push'"):
        make_env('panda_push', render=False, disturbance=spec)
