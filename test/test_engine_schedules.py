"""Static sparsity schedules and the fewer-step DDIM baseline."""

import math
from pathlib import Path

import numpy as np
import pytest
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.observation import OBS_IMAGES, OBS_STATE
from sparse_policy_ros.sparsity.decisions import Decision, make_executable, sparsity_of
from sparse_policy_ros.sparsity.schedules import (
    ddim_steps_for, fixed_schedule, fora_schedule, rollout_schedule, static_schedule)
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy
import torch

C, S = int(Decision.COMPUTE), int(Decision.REUSE_STEP)
DEFAULT_MODEL = Path(__file__).resolve().parents[1] / 'models' / 'default'


def default_observation(config: PolicyConfig) -> dict:
    rng = np.random.default_rng(0)
    _, h, w = config.image_shape
    return {OBS_IMAGES: {c: rng.integers(0, 256, (config.n_obs_steps, h, w, 3), dtype=np.uint8)
                         for c in config.camera_names},
            OBS_STATE: rng.normal(0.0, 0.3, (config.n_obs_steps, config.state_dim))
            .astype(np.float32)}


@pytest.mark.parametrize('steps, nb', [(100, 24), (10, 6), (16, 9), (7, 3)])
@pytest.mark.parametrize('target', [0.0, 0.5, 0.8, 0.93, 0.95])
def test_fixed_schedule_hits_the_budget_exactly(steps, nb, target):
    d = fixed_schedule(steps, nb, target)
    assert d.shape == (steps, nb) and d.dtype == torch.int8
    assert set(d.unique().tolist()) <= {C, S}
    assert (d[0] == C).all()
    budget = round((1 - target) * steps * nb)
    assert int((d == C).sum()) == max(nb, budget)
    assert torch.equal(make_executable(d), d)
    per_branch = (d == C).sum(dim=0)
    assert int(per_branch.max() - per_branch.min()) <= 1  # shared evenly between branches
    if steps > 1 and budget > nb:
        per_step = (d[1:] == C).sum(dim=1)
        # Level work: no later step computes much more than the average.
        assert int(per_step.max()) <= (budget - nb) / (steps - 1) + nb / 2 + 1


@pytest.mark.parametrize('target, interval', [(0.5, 2), (0.8, 5), (0.95, 20), (0.0, 1)])
def test_fora_schedule(target, interval):
    d = fora_schedule(100, 24, target)
    assert (d[::interval] == C).all()
    mask = torch.ones(100, dtype=torch.bool)
    mask[::interval] = False
    assert (d[mask] == S).all()
    assert sparsity_of(d) == pytest.approx(target, abs=1e-6)  # exact for K = 100
    short = fora_schedule(10, 6, target)
    assert sparsity_of(short) == pytest.approx(1 - math.ceil(10 / interval) / 10, abs=1e-6)


def test_static_schedule_dispatch_and_errors():
    assert (static_schedule('dense', 5, 6, None) == C).all()
    assert torch.equal(static_schedule('fixed', 10, 6, 0.5), fixed_schedule(10, 6, 0.5))
    assert torch.equal(static_schedule('fora', 10, 6, 0.5), fora_schedule(10, 6, 0.5))
    with pytest.raises(ValueError, match='needs a target_sparsity'):
        static_schedule('fora', 10, 6, None)
    with pytest.raises(ValueError, match="got 'magic'"):
        static_schedule('magic', 10, 6, 0.5)
    for bad in (1.0, -0.01):
        with pytest.raises(ValueError, match='target_sparsity must be in \\[0, 1\\)'):
            fixed_schedule(10, 6, bad)


def test_ddim_steps_for():
    assert ddim_steps_for(100, 0.5) == 50
    assert ddim_steps_for(100, 0.8) == 20
    assert ddim_steps_for(100, 0.95) == 5
    assert ddim_steps_for(10, 0.99) == 1
    assert ddim_steps_for(10, 0.0) == 10


def test_ddim_mode_reports_sparsity_against_nominal_steps():
    config = PolicyConfig(encoder='small_cnn', n_layer=2, n_emb=32, n_head=2, state_dim=4,
                          action_dim=4, horizon=8, n_obs_steps=2, n_action_steps=4,
                          num_train_timesteps=10, num_inference_steps=10,
                          image_shape=(3, 32, 32), crop_shape=(28, 28), image_feature_dim=16)
    policy = SparsePolicy.random_init(config, mode='ddim', target_sparsity=0.8)
    assert policy.scheduler.num_inference_steps == 2 and policy.scheduler.kind == 'ddim'
    rng = np.random.default_rng(0)
    obs = {OBS_IMAGES: {'front': rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)},
           OBS_STATE: np.zeros((2, 4), np.float32)}
    for _ in range(2):
        stats = policy.predict(obs).stats
        assert stats.decisions.shape == (2, config.n_branches)
        assert stats.sparsity == pytest.approx(0.8, abs=1e-6)


@pytest.mark.parametrize('steps, computed', [(6, 3), (6, 2), (6, 1), (6, 6), (10, 4)])
def test_rollout_schedule_computes_a_round_robin_and_reuses_earlier_calls(steps, computed):
    nb = 6
    period = math.ceil((steps - 1) / (computed - 1)) if computed > 1 else 1
    seen = np.zeros(steps, bool)
    for call in range(period):
        decisions = rollout_schedule(steps, nb, computed, call)
        assert decisions.shape == (steps, nb) and decisions.dtype == torch.int8
        assert torch.all(decisions[0] == C)
        rows = (decisions == C).all(dim=1)
        assert int(rows.sum()) == computed  # whole steps, the same count every call
        assert torch.all(decisions[~rows] == int(Decision.REUSE_ROLLOUT))
        seen |= rows.numpy()
    # Every step is refreshed within one period (computing step 0 alone refreshes nothing).
    assert seen.all() or (computed == 1 and seen.sum() == 1)
    # A first call (nothing cached) runs every step.
    assert torch.all(make_executable(rollout_schedule(steps, nb, computed, 5), False) == C)


def test_rollout_schedule_refuses_bad_arguments():
    with pytest.raises(ValueError, match=r'computed steps per call must be in \[1, 6\]'):
        rollout_schedule(6, 3, 7, 0)
    with pytest.raises(ValueError, match='call must be an int >= 0'):
        rollout_schedule(6, 3, 2, -1)


def test_ddim_rollout_repeating_a_call_reproduces_the_full_set():
    # Same observation, same noise, no shift: the steps a call takes from the last call are
    # what computing them gives, so the 3-of-6 call equals the first (all 6 computed) call.
    policy = SparsePolicy.from_pretrained(DEFAULT_MODEL, device='cpu', mode='ddim_rollout',
                                          target_sparsity=0.97, warmup=False)
    try:
        obs = default_observation(policy.config)
        first = policy.predict(obs, generator=torch.Generator().manual_seed(1))
        assert first.stats.dense_call and policy.scheduler.num_inference_steps == 6
        for call in range(1, 4):
            policy.shift_cache(0)
            again = policy.predict(obs, noise=first.noise)
            computed = (again.stats.decisions == C).all(dim=1)
            assert int(computed.sum()) == 3 and not again.stats.dense_call
            assert again.stats.sparsity == pytest.approx(0.97)
            np.testing.assert_allclose(again.actions, first.actions, atol=1e-5)
        # After a reset the next call computes everything again.
        policy.reset()
        assert policy.predict(obs, noise=first.noise).stats.dense_call
    finally:
        policy.close()
    with pytest.raises(ValueError, match='computes at most 6 steps per call'):
        SparsePolicy.from_pretrained(DEFAULT_MODEL, device='cpu', mode='ddim_rollout',
                                     target_sparsity=0.9, warmup=False)


def test_ddim_rollout_refreshes_every_step_when_the_observation_moved():
    policy = SparsePolicy.from_pretrained(DEFAULT_MODEL, device='cpu', mode='ddim_rollout',
                                          target_sparsity=0.98, warmup=False,
                                          rollout_refresh=0.05)
    try:
        obs = default_observation(policy.config)
        first = policy.predict(obs, generator=torch.Generator().manual_seed(1))
        assert first.stats.observation_change is None  # nothing to compare with
        same = policy.predict(obs, noise=first.noise)
        assert same.stats.observation_change == 0.0
        assert int((same.stats.decisions == C).all(dim=1).sum()) == 2  # reuses 4 of 6
        moved = {**obs, OBS_STATE: obs[OBS_STATE] + 1.0}
        refreshed = policy.predict(moved, noise=first.noise)
        assert refreshed.stats.observation_change > 0.05
        assert refreshed.stats.dense_call  # every step computed
        policy.reset()
        assert policy.predict(moved, noise=first.noise).stats.observation_change is None
    finally:
        policy.close()
    with pytest.raises(ValueError, match='rollout_refresh must be > 0'):
        SparsePolicy.from_pretrained(DEFAULT_MODEL, device='cpu', mode='ddim_rollout',
                                     target_sparsity=0.98, warmup=False, rollout_refresh=0.0)
