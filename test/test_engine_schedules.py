"""Static sparsity schedules and the fewer-step DDIM baseline."""

import math

import numpy as np
import pytest
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.observation import OBS_IMAGES, OBS_STATE
from sparse_policy_ros.sparsity.decisions import Decision, make_executable, sparsity_of
from sparse_policy_ros.sparsity.schedules import (
    ddim_steps_for, fixed_schedule, fora_schedule, static_schedule)
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy
import torch

C, S = int(Decision.COMPUTE), int(Decision.REUSE_STEP)


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
