"""Chunk -> timed plan, numpy only: due times, dropped points, planning from the command, stops."""

import json
from pathlib import Path
import subprocess
import sys

import numpy as np
import pytest
from sparse_policy_ros.control import motion
from sparse_policy_ros.control.planning import due_times, hold_plan, kept_mask, plan_chunk
from sparse_policy_ros.control.safety import ActionRejected, JointLimits, SafetyFilter
from sparse_policy_ros.control.trajectory_follower import TrajectoryFollower

REPO = Path(__file__).resolve().parents[1]
JOINTS = ('a', 'b')
LIMITS = JointLimits(lower=np.array([-5.0, -5.0]), upper=np.array([5.0, 5.0]),
                     max_velocity=np.array([10.0, 10.0]),
                     max_acceleration=np.array([100.0, 100.0]))
SAFETY = SafetyFilter(LIMITS, control_period=0.1)
REST = (np.zeros(2), np.zeros(2))


def ramp(n: int) -> np.ndarray:
    """(n, 2) actions moving 0.1 and -0.2 per step from (0, 0)."""
    k = np.arange(n, dtype=np.float64)[:, None]
    return np.hstack([0.1 * k, -0.2 * k])


def assert_within_limits(plan, position, velocity):
    """Every instant from the current command through the plan keeps LIMITS."""
    t = 0.0
    for k in range(len(plan)):
        duration = plan.times_from_start[k] - t
        extent = motion.bounds(position, velocity, plan.positions[k], plan.velocities[k],
                               duration)
        assert np.all(extent.position_min >= LIMITS.lower - 1e-9), k
        assert np.all(extent.position_max <= LIMITS.upper + 1e-9), k
        assert np.all(extent.speed_max <= LIMITS.max_velocity * (1 + 1e-9)), k
        assert np.all(extent.acceleration_max <= LIMITS.max_acceleration * (1 + 1e-9)), k
        position, velocity, t = plan.positions[k], plan.velocities[k], plan.times_from_start[k]


def test_points_are_due_at_observation_plus_k_periods():
    # The current command is on the ramp at publish time: the targets pass unchanged.
    current = (np.array([0.13, -0.26]), np.array([1.0, -2.0]))
    plan = plan_chunk(ramp(8), observation_stamp=100.0, publish_time=100.13,
                      control_period=0.1, joint_names=JOINTS, safety=SAFETY,
                      current_position=current[0], current_velocity=current[1])
    assert plan.stamp == 100.13
    assert plan.dropped == 2  # actions due at 100.0 and 100.1 are in the past
    assert plan.executable == 6 and len(plan) == 7  # six targets, then the braking stop
    np.testing.assert_allclose(plan.absolute_times[:6], 100.0 + 0.1 * np.arange(2, 8),
                               atol=1e-9)
    np.testing.assert_allclose(plan.times_from_start[:6], 0.1 * np.arange(2, 8) - 0.13,
                               atol=1e-9)
    assert np.all(np.diff(plan.times_from_start) > 0) and plan.times_from_start[0] > 0
    np.testing.assert_allclose(plan.positions[:6], ramp(8)[2:], atol=1e-12)
    np.testing.assert_allclose(plan.velocities[:6], np.tile([1.0, -2.0], (6, 1)), atol=1e-9)
    np.testing.assert_array_equal(plan.velocities[6], [0.0, 0.0])
    assert plan.safety.position_clamped == plan.safety.velocity_limited == 0
    assert_within_limits(plan, *current)


def test_points_due_within_min_lead_are_dropped():
    current = (np.array([0.13, -0.26]), np.array([1.0, -2.0]))
    args = (ramp(8), 100.0, 100.13, 0.1, JOINTS, SAFETY, *current)
    # Action 2 is due 0.07 s after publishing: kept with a lead of 0.05, dropped with 0.08.
    assert plan_chunk(*args, min_lead=0.05).dropped == 2
    plan = plan_chunk(*args, min_lead=0.08)
    assert plan.dropped == 3 and plan.executable == 5
    np.testing.assert_allclose(plan.absolute_times[:5], 100.0 + 0.1 * np.arange(3, 8),
                               atol=1e-9)
    assert_within_limits(plan, *current)
    assert len(plan_chunk(*args, min_lead=0.6)) == 0  # the last action is due 0.57 s after
    with pytest.raises(ValueError, match='min_lead must be >= 0 s'):
        plan_chunk(*args, min_lead=-0.01)


def test_late_chunk_has_no_points_and_bad_actions_are_rejected():
    plan = plan_chunk(ramp(3), 10.0, 10.5, 0.1, JOINTS, SAFETY, *REST)
    assert len(plan) == 0 and plan.dropped == 3 and plan.executable == 0
    assert plan.positions.shape == plan.velocities.shape == (0, 2)
    with pytest.raises(ActionRejected):
        plan_chunk(np.full((3, 2), np.nan), 10.0, 10.05, 0.1, JOINTS, SAFETY, *REST)
    with pytest.raises(ActionRejected):
        plan_chunk(np.zeros((3, 3)), 10.0, 10.05, 0.1, JOINTS, SAFETY, *REST)


def test_the_motion_starts_from_the_current_command():
    targets = np.full((4, 2), 3.0)
    at_rest = (np.array([0.0, 2.5]), np.zeros(2))
    moving = (np.array([0.0, 2.5]), np.array([-10.0, 10.0]))
    plans = [plan_chunk(targets, 0.0, 0.05, 0.1, JOINTS, SAFETY, *current)
             for current in (at_rest, moving)]
    for plan, current in zip(plans, (at_rest, moving)):
        assert plan.dropped == 1 and plan.executable == 3  # action 0 was due at 0.0
        assert plan.safety.velocity_limited > 0
        assert_within_limits(plan, *current)
    # From rest the first 50 ms can move a*T^2/2 at most (constant full acceleration).
    assert 0.0 < plans[0].positions[0, 0] <= 0.5 * 100.0 * 0.05**2 + 1e-12
    assert plans[1].positions[0, 0] < 0.0  # still moving away from 3.0 at -10 rad/s


def test_a_first_target_that_cannot_be_reached_gives_no_points():
    # 10 rad/s toward the limit 0.1 rad away: no stop at 100 rad/s^2 keeps inside.
    plan = plan_chunk(np.full((3, 2), 5.0), 0.0, 0.05, 0.1, JOINTS, SAFETY,
                      np.array([4.9, 0.0]), np.array([10.0, 0.0]))
    assert len(plan) == 0 and plan.dropped == 1 and plan.safety.truncated == 2


@pytest.mark.parametrize('position, velocity', [
    ([0.3, -0.1], [0.0, 0.0]), ([0.3, -0.1], [2.0, -3.0]), ([4.0, -4.5], [10.0, -10.0])])
def test_hold_plan_brakes_to_rest_from_the_command_without_a_jump(position, velocity):
    position, velocity = np.array(position), np.array(velocity)
    plan = hold_plan(SAFETY, JOINTS, stamp=5.0, current_position=position,
                     current_velocity=velocity)
    assert len(plan) == 1 and plan.stamp == 5.0 and plan.executable == 0
    np.testing.assert_array_equal(plan.velocities, [[0.0, 0.0]])
    assert plan.times_from_start[0] >= SAFETY.control_period
    assert_within_limits(plan, position, velocity)
    # A follower moving with this command continues from it: no jump, then rest.
    follower = TrajectoryFollower(JOINTS)
    follower.set_trajectory(JOINTS, 4.0, [1.0, 3.0], [position, position + 2 * velocity],
                            now=4.0, current_positions=position - velocity,
                            velocities=[velocity, velocity])
    np.testing.assert_allclose(follower.sample_state(5.0)[0], position, atol=1e-12)
    follower.set_trajectory(plan.joint_names, plan.stamp, plan.times_from_start,
                            plan.positions, now=5.0, current_positions=np.zeros(2),
                            velocities=plan.velocities)
    start = follower.sample_state(5.0)
    np.testing.assert_allclose(start[0], position, atol=1e-12)
    np.testing.assert_allclose(start[1], velocity, atol=1e-12)
    end = follower.sample_state(5.0 + plan.times_from_start[0])
    np.testing.assert_array_equal(end[1], [0.0, 0.0])
    if not velocity.any():
        np.testing.assert_array_equal(plan.positions, [position])  # at rest: stays


def test_hold_plan_rejects_mismatched_joints_and_shapes():
    with pytest.raises(ValueError, match='expected 2 joints, got'):
        hold_plan(SAFETY, ('a', 'b', 'c'), 0.0, *REST)
    with pytest.raises(ValueError, match='current_velocity'):
        hold_plan(SAFETY, JOINTS, 0.0, np.zeros(2), np.zeros(3))


def test_due_times_and_kept_mask():
    due = due_times(100.0, 0.1, 5)
    np.testing.assert_allclose(due, [100.0, 100.1, 100.2, 100.3, 100.4], atol=1e-12)
    assert due.dtype == np.float64 and due_times(1.0, 0.1, 0).shape == (0,)
    np.testing.assert_array_equal(kept_mask(due, 100.13), [False, False, True, True, True])
    np.testing.assert_array_equal(kept_mask(due, 100.13, min_lead=0.08),
                                  [False, False, False, True, True])
    # Boundary: an action due exactly at publish_time + min_lead is dropped.
    exact = np.array([1.0, 1.5, 2.0])
    np.testing.assert_array_equal(kept_mask(exact, 1.0), [False, True, True])
    np.testing.assert_array_equal(kept_mask(exact, 1.0, min_lead=0.5), [False, False, True])
    np.testing.assert_array_equal(kept_mask(exact, 2.0), [False, False, False])
    for bad in (-0.01, float('nan')):
        with pytest.raises(ValueError, match='min_lead must be >= 0 s'):
            kept_mask(exact, 1.0, min_lead=bad)


def test_plan_chunk_keeps_exactly_what_kept_mask_keeps():
    actions = ramp(8)
    for publish_time, min_lead in ((100.0, 0.0), (100.13, 0.0), (100.13, 0.07), (100.2, 0.1),
                                   (100.05, 0.05)):
        keep = kept_mask(due_times(100.0, 0.1, len(actions)), publish_time, min_lead)
        current = (actions[0].copy(), np.array([1.0, -2.0]))
        plan = plan_chunk(actions, 100.0, publish_time, 0.1, JOINTS, SAFETY, *current,
                          min_lead=min_lead)
        assert plan.dropped == len(actions) - np.count_nonzero(keep)
        np.testing.assert_allclose(plan.absolute_times[:plan.executable],
                                   due_times(100.0, 0.1, len(actions))[keep][:plan.executable],
                                   atol=1e-9)


CONTROL_IMPORT_CHECK = """
import importlib, json, pkgutil, sys
before = set(sys.modules)
import sparse_policy_ros.control as control
names = sorted(info.name for info in pkgutil.iter_modules(control.__path__))
for name in names:
    importlib.import_module('sparse_policy_ros.control.' + name)
print(json.dumps({'modules': names, 'loaded': sorted(set(sys.modules) - before)}))
"""


def test_control_imports_only_numpy_and_the_standard_library():
    # A fresh interpreter: the layer rule holds for control/ on its own, whatever else the test
    # process has imported.
    result = subprocess.run([sys.executable, '-c', CONTROL_IMPORT_CHECK], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    expected = sorted(path.stem for path in (REPO / 'sparse_policy_ros' / 'control').glob('*.py')
                      if path.stem != '__init__')
    assert report['modules'] == expected
    assert {'motion', 'message_errors', 'planning', 'safety',
            'trajectory_follower'} <= set(report['modules'])
    loaded = set(report['loaded'])
    for forbidden in ('rclpy', 'builtin_interfaces', 'trajectory_msgs'):
        assert not {name for name in loaded if name.split('.')[0] == forbidden}, forbidden
    ours = {name for name in loaded if name.split('.')[0] == 'sparse_policy_ros'}
    # The observation buffer assembles the policy's observation: it may read the contract's
    # keys (policy/observation.py and its config, numpy only), nothing else of the engine.
    contract = {'sparse_policy_ros.policy', 'sparse_policy_ros.policy.observation',
                'sparse_policy_ros.policy.config'}
    assert ours - {'sparse_policy_ros', 'sparse_policy_ros.control'} - contract == {
        'sparse_policy_ros.control.' + name for name in report['modules']}
    assert 'torch' not in {name.split('.')[0] for name in loaded}
    others = {name.split('.')[0] for name in loaded} - {'numpy', 'sparse_policy_ros'}
    others -= set(sys.stdlib_module_names)
    assert not {name for name in others if not name.startswith('_')}, sorted(others)
