"""The streaming node's bookkeeping: when to call, the committed rows, the splice metrics."""

import numpy as np
import pytest

from sparse_policy_ros.control.command_log import CommandLog, committed_rows
from sparse_policy_ros.control.planning import plan_chunk
from sparse_policy_ros.control.replanning import Replanner, ReplanSettings
from sparse_policy_ros.control.safety import JointLimits, SafetyFilter
from sparse_policy_ros.control.trajectory_follower import TrajectoryFollower

JOINTS = ('a', 'b')
DT = 0.1


def linear_follower(start: float, positions: list[list[float]]) -> TrajectoryFollower:
    """Follow ``positions`` one period apart from ``start`` (anchor at rest at row 0)."""
    follower = TrajectoryFollower(JOINTS)
    points = np.asarray(positions, dtype=np.float64)
    times = DT * np.arange(1, len(points))
    follower.set_trajectory(JOINTS, start, times, points[1:], start, points[0])
    return follower


def wide_safety() -> SafetyFilter:
    """Limits far from the test motions: the filter keeps the targets."""
    dof = len(JOINTS)
    return SafetyFilter(JointLimits(lower=np.full(dof, -10.0), upper=np.full(dof, 10.0),
                                    max_velocity=np.full(dof, 50.0),
                                    max_acceleration=np.full(dof, 500.0)), DT)


def test_chunked_calls_when_the_plan_runs_low():
    replanner = Replanner(DT, 2, 16)
    settings = ReplanSettings('chunked', replan_threshold=2)
    due = np.array([1.0, 1.1, 1.2, 1.3])
    assert not replanner.due(settings, 1.05, 1.0, due)  # 3 ahead
    assert replanner.due(settings, 1.15, 1.0, due)  # 2 ahead
    assert replanner.due(settings, 1.15, None, due)  # chunked does not look at the stamp


def test_streaming_calls_on_each_new_observation_and_at_most_at_the_rate():
    replanner = Replanner(DT, 2, 16)
    fast = ReplanSettings('streaming')
    assert not replanner.due(fast, 1.0, None, np.zeros(0))  # nothing to answer yet
    assert replanner.due(fast, 1.0, 0.98, np.zeros(0))
    replanner.started(1.0, 0.98)
    assert not replanner.due(fast, 1.01, 0.98, np.zeros(0))  # the same observation again
    assert replanner.due(fast, 1.01, 1.0, np.zeros(0))
    capped = ReplanSettings('streaming', replan_rate=20.0)  # one call per 50 ms
    assert not replanner.due(capped, 1.04, 1.0, np.zeros(0))
    assert replanner.due(capped, 1.05, 1.0, np.zeros(0))
    assert replanner.seconds_until_due(capped, 1.02, np.zeros(0)) == pytest.approx(0.03)
    assert replanner.seconds_until_due(fast, 1.02, np.zeros(0)) == 0.0
    replanner.clear()
    assert replanner.due(fast, 2.0, 0.5, np.zeros(0))  # a reset forgets the last stamp


def test_budget_and_slack_in_each_mode():
    replanner = Replanner(DT, 2, 16)
    chunked = ReplanSettings('chunked', replan_threshold=2)
    assert replanner.budget(chunked, 8) == pytest.approx(0.15)
    assert replanner.budget(ReplanSettings('streaming'), 8) == pytest.approx(0.75)
    due = np.array([1.0, 1.1, 1.2, 1.3, 1.4])
    # 5 ahead at 0.95; the call is wanted when 2 remain, i.e. after 1.2 passed.
    assert replanner.seconds_until_due(chunked, 0.95, due) == pytest.approx(0.25)


def test_settings_name_the_bad_parameter():
    for kwargs, name in (({'mode': 'sometimes'}, 'replan_mode'),
                         ({'consistency': 'ensemble'}, 'consistency'),
                         ({'replan_rate': -1.0}, 'replan_rate'),
                         ({'replan_rate': float('nan')}, 'replan_rate'),
                         ({'prefix_steps': -1}, 'prefix_steps'),
                         ({'prefix_until': 0.0}, 'prefix_until')):
        with pytest.raises(ValueError, match=name):
            ReplanSettings(**kwargs)


def test_command_log_reads_the_plan_that_ran_at_each_time():
    log = CommandLog(keep_s=1.0)
    old = linear_follower(0.0, [[0, 0], [1, 1], [2, 2], [3, 3]])
    log.replaced(old, 0.15)  # followed until 0.15; then the new plan
    new = linear_follower(0.15, [[1.5, 1.5], [5, 5], [6, 6]])
    np.testing.assert_allclose(log.sample(0.1, new), [1, 1])  # the old plan's target
    np.testing.assert_allclose(log.sample(0.25, new), [5, 5])  # the new plan's
    np.testing.assert_allclose(log.sample(-1.0, new), [0, 0])  # before it: its anchor
    log.replaced(new, 5.0)  # much later: the first plan falls out of the window
    assert len(log._replaced) == 1
    log.clear()
    assert log.sample(0.1, TrajectoryFollower(JOINTS)) is None
    with pytest.raises(ValueError, match='keep_s'):
        CommandLog(0.0)


def test_committed_rows_cover_history_running_and_planned_steps_only():
    log = CommandLog(keep_s=2.0)
    log.replaced(linear_follower(0.0, [[0, 0], [1, 1], [2, 2]]), 0.2)
    plan = linear_follower(0.2, [[2, 2], [3, 3], [4, 4], [5, 5], [6, 6]])
    # Observation at 0.2 (n_obs 2): rows due at 0.1, 0.2, 0.3, ...; now 0.22; the plan's
    # policy points end at 0.5 (the rest would be its braking stop).
    rows = committed_rows(log, plan, 0.2, DT, 2, future_rows=10, now=0.22, plan_end=0.5)
    np.testing.assert_allclose(rows, [[1, 1], [2, 2], [3, 3], [4, 4], [5, 5]])
    assert rows.dtype == np.float32
    few = committed_rows(log, plan, 0.2, DT, 2, future_rows=2, now=0.22, plan_end=0.5)
    np.testing.assert_allclose(few, [[1, 1], [2, 2], [3, 3]])
    # Rows due by now come from what ran even after the plan's end (a hold), none beyond.
    past = committed_rows(log, plan, 0.2, DT, 2, future_rows=10, now=0.22, plan_end=0.1)
    np.testing.assert_allclose(past, [[1, 1], [2, 2]])
    nothing = committed_rows(CommandLog(1.0), TrajectoryFollower(JOINTS), 0.2, DT, 2, 5,
                             0.22, None)
    assert nothing is None
    with pytest.raises(ValueError, match='future_rows'):
        committed_rows(log, plan, 0.2, DT, 2, -1, 0.22, None)


def test_prefix_rows_only_when_streaming_with_prefix_and_within_the_horizon():
    replanner = Replanner(DT, 2, 6)
    follower = linear_follower(0.0, [[k, k] for k in range(12)])
    streaming = ReplanSettings('streaming', prefix_steps=3)
    # Latency 0.15 s -> 2 steps run while the call computes, 3 more kept: 1 + 5 rows.
    rows = replanner.prefix_rows(streaming, follower, 0.5, 0.52, 1.1, 0.15)
    np.testing.assert_allclose(rows[:, 0], [4, 5, 6, 7, 8, 9])
    long = ReplanSettings('streaming', prefix_steps=30)
    assert len(replanner.prefix_rows(long, follower, 0.5, 0.52, 1.1, 0.15)) == 6  # horizon
    assert replanner.prefix_rows(ReplanSettings('streaming', consistency='none'), follower,
                                 0.5, 0.52, 1.1, 0.15) is None
    assert replanner.prefix_rows(ReplanSettings('chunked'), follower, 0.5, 0.52, 1.1,
                                 0.15) is None


def test_splice_measures_the_new_plan_against_the_running_one():
    replanner = Replanner(DT, 2, 16)
    safety = wide_safety()
    follower = TrajectoryFollower(JOINTS)
    first = plan_chunk(np.array([[0.0, 0.0], [0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]), 0.0, 0.02,
                       DT, JOINTS, safety, np.zeros(2), np.zeros(2), min_lead=0.05)
    assert replanner.splice(follower, first) is None  # nothing was running
    follower.set_trajectory(JOINTS, first.stamp, first.times_from_start, first.positions, 0.02,
                            np.zeros(2), first.velocities)
    position, velocity = follower.sample_state(0.12)
    # The same targets again, observed a step later: the new first point is on the old plan.
    same = plan_chunk(np.array([[0.1, 0.1], [0.2, 0.2], [0.3, 0.3]]), 0.1, 0.12, DT, JOINTS,
                      safety, position, velocity, min_lead=0.05)
    splice = replanner.splice(follower, same)
    assert splice.position_jump < 1e-9
    other = plan_chunk(np.array([[0.1, 0.1], [0.5, -0.2], [0.6, -0.3]]), 0.1, 0.12, DT, JOINTS,
                       safety, position, velocity, min_lead=0.05)
    moved = replanner.splice(follower, other)
    assert moved.position_jump == pytest.approx(0.4, abs=1e-9)
    assert moved.velocity_jump > 0.5


def test_streaming_rows_sit_on_the_episode_control_grid():
    replanner = Replanner(DT, 2, 16)
    streaming = ReplanSettings('streaming')
    assert replanner.time_base(ReplanSettings('chunked'), 1.234) == 1.234
    assert replanner.time_base(streaming, 1.0) == 1.0  # the first call starts the grid
    assert replanner.time_base(streaming, 1.02) == pytest.approx(1.0)
    assert replanner.time_base(streaming, 1.06) == pytest.approx(1.1)
    assert replanner.time_base(streaming, 1.349) == pytest.approx(1.3)
    replanner.clear()
    assert replanner.time_base(streaming, 5.03) == 5.03  # a new episode, a new grid


def test_steps_since_last_call_counts_control_steps_between_time_bases():
    replanner = Replanner(0.1, 2, 16)
    assert replanner.steps_since_last_call(1.0) is None  # the first call after clear
    assert replanner.steps_since_last_call(1.1) == 1
    assert replanner.steps_since_last_call(1.4) == 3
    assert replanner.steps_since_last_call(1.4) == 0
    assert replanner.steps_since_last_call(1.2) == 0  # never a negative shift
    replanner.clear()
    assert replanner.steps_since_last_call(5.0) is None
