"""The node's fidelity check (no rclpy): which policy serves, and when the reference may."""

from engine_helpers import observation, TINY
import pytest
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.ros.fidelity_check import FidelityCheck, FidelitySettings
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy


def settings(**changes) -> FidelitySettings:
    values = {'period': 1.0, 'reference': 'dense', 'reference_sparsity': 0.5,
              'warn_threshold': 2e-6, 'fallback_threshold': 3e-6, 'recover_threshold': 1e-6,
              'recover_checks': 2}
    values.update(changes)
    return FidelitySettings(**values)


@pytest.fixture
def primary():
    return SparsePolicy.random_init(PolicyConfig(**TINY), device='cpu', mode='fixed',
                                    target_sparsity=0.75, seed=1)


def test_fallback_serves_the_reference_only_when_it_fits_the_budget(primary):
    check = FidelityCheck(primary, settings())
    obs = observation(primary.config, 0)
    check.served(0.1).predict(obs)  # the first call after a reset is dense
    chunk = check.served(0.1).predict(obs)
    assert check.serving_reference is False and chunk.stats.sparsity > 0
    check.run(obs, chunk, now=0.0)  # sparse vs dense on random weights: far above 3e-6
    assert check.monitor.in_fallback
    assert check.served(None) is check.reference and check.serving_reference
    # A reference slower than the budget is not served: late chunks would brake the arm.
    check.latency.add(10.0)
    assert not check.reference_fits(0.1) and check.reference_fits(None)
    assert check.served(0.1) is check.primary and not check.serving_reference
    assert check.fallback_withheld == 1
    summary = check.summary()
    assert summary['fidelity_state'] == 'fallback'
    assert summary['fidelity_serving'] == 'primary'
    assert summary['fidelity_fallback_withheld'] == '1'
    # Served by the primary in fallback, the check compares it with the reference again.
    chunk = check.served(0.1).predict(obs)
    check.run(obs, chunk, now=2.0)
    assert check.monitor.last_deviation > 3e-6 and check.monitor.in_fallback


def test_check_is_due_after_the_period_and_only_with_slack(primary):
    check = FidelityCheck(primary, settings(period=1.0))
    estimate = check.latency.estimate
    assert estimate is not None and estimate > 0  # seeded by one timed reference call
    assert check.due(0.0, seconds_until_needed=100.0)
    assert not check.due(0.0, seconds_until_needed=0.0)
    assert check.skipped_no_slack == 1
    assert not check.due(0.0, 100.0, period=0.0)  # period 0: never
    obs = observation(primary.config, 0)
    check.run(obs, check.served().predict(obs), now=5.0)
    assert not check.due(5.5, 100.0) and check.due(6.0, 100.0)
