"""Safety: finite checks, position clamping, per-point speed limit, one hold per outage."""

import numpy as np
import pytest
from sparse_policy_ros.ros.safety import ActionRejected, check_actions, HoldLatch
from sparse_policy_ros.ros.safety import JointLimits, SafetyFilter

LIMITS = JointLimits(lower=np.array([-1.0, 0.0]), upper=np.array([1.0, 2.0]),
                     max_velocity=np.array([1.0, 4.0]))


def test_rejects_non_finite_and_misshaped_actions():
    with pytest.raises(ActionRejected, match=r'nan at \(step, joint\) \(1, 0\)'):
        check_actions(np.array([[0.0, 0.0], [np.nan, 0.0]]), 2)
    with pytest.raises(ActionRejected, match='inf'):
        check_actions(np.array([[np.inf, 0.0]]), 2)
    with pytest.raises(ActionRejected, match=r'expected shape \(n >= 1, 2\), got \(3,\)'):
        check_actions(np.zeros(3), 2)
    with pytest.raises(ActionRejected):
        check_actions(np.zeros((0, 2)), 2)
    assert check_actions(np.zeros((2, 2), np.float32), 2).dtype == np.float64


def test_clamps_positions_and_limits_each_step():
    safety = SafetyFilter(LIMITS, control_period=0.1)  # max step (0.1, 0.4)
    targets = np.array([[0.5, 3.0], [0.5, 3.0], [-2.0, 1.0], [-2.0, 1.0]])
    out, report = safety.apply(targets, current=np.array([0.0, 1.0]))
    expected = np.array([[0.1, 1.4], [0.2, 1.8], [0.1, 1.4], [0.0, 1.0]])
    np.testing.assert_allclose(out, expected, atol=1e-12)
    assert report.position_clamped == 4  # two joint-1 targets above 2.0, two joint-0 below -1
    assert report.velocity_limited == 7  # the last joint-1 step is exactly at the limit
    steps = np.diff(np.vstack([[0.0, 1.0], out]), axis=0)
    assert np.all(np.abs(steps) <= safety.max_step + 1e-12)


def test_feasible_targets_pass_unchanged():
    safety = SafetyFilter(LIMITS, control_period=0.1)
    targets = np.array([[0.05, 1.2], [0.1, 1.5], [0.12, 1.6]])
    out, report = safety.apply(targets, current=np.array([0.0, 1.0]))
    np.testing.assert_array_equal(out, targets)
    assert (report.position_clamped, report.velocity_limited) == (0, 0)


def test_position_limits_win_when_starting_outside():
    safety = SafetyFilter(LIMITS, control_period=0.1)
    out, _ = safety.apply(np.array([[1.5, 1.0]]), current=np.array([1.5, 1.0]))
    np.testing.assert_array_equal(out, [[1.0, 1.0]])


def test_joint_limits_validate():
    with pytest.raises(ValueError, match='lower must be <= upper'):
        JointLimits(lower=np.array([1.0]), upper=np.array([0.0]), max_velocity=np.array([1.0]))
    with pytest.raises(ValueError, match='max_velocity must be > 0'):
        JointLimits(lower=np.array([0.0]), upper=np.array([1.0]), max_velocity=np.array([0.0]))
    with pytest.raises(ValueError, match='equal length'):
        JointLimits(lower=np.zeros(2), upper=np.ones(3), max_velocity=np.ones(2))
    with pytest.raises(ValueError, match='finite'):
        JointLimits(lower=np.array([-np.inf]), upper=np.ones(1), max_velocity=np.ones(1))


def test_hold_latch_fires_once_per_outage():
    latch = HoldLatch()
    assert latch.update(stale=True) is False  # nothing was running yet
    assert latch.update(stale=False) is False
    assert [latch.update(stale=True) for _ in range(5)] == [True, False, False, False, False]
    assert latch.update(stale=False) is False
    assert latch.update(stale=True) is True  # a second outage holds again
    latch.arm()
    latch.disarm()
    assert latch.update(stale=True) is False
