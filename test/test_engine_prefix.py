"""Prefix-conditioned sampling: committed rows are reproduced, the rest is denoised freely."""

from engine_helpers import observation, TINY
import numpy as np
import pytest
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.prefix import ActionPrefix
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy
import torch

CONFIG = PolicyConfig(**TINY)


def policy(mode: str = 'dense', target: float | None = None, **extra) -> SparsePolicy:
    """Return a tiny random policy in ``mode``."""
    config = PolicyConfig(**{**TINY, **extra})
    return SparsePolicy.random_init(config, mode=mode, target_sparsity=target, warmup=False)


def committed(rows: int, seed: int = 1) -> np.ndarray:
    """Return (rows, action_dim) actions inside the normalizer's range."""
    return np.random.default_rng(seed).uniform(-1.0, 1.0, (rows, CONFIG.action_dim)) \
        .astype(np.float32)


@pytest.mark.parametrize('mode,target,extra', [
    ('dense', None, {}), ('fixed', 0.6, {}), ('fora', 0.5, {}), ('ddim', 0.7, {}),
    ('dense', None, {'scheduler': 'ddim'})])
def test_hard_prefix_reproduces_the_fixed_rows(mode, target, extra):
    sparse = policy(mode, target, **extra)
    obs = observation(sparse.config)
    fixed = committed(3)
    sparse.predict(obs, generator=torch.Generator().manual_seed(0))  # fill the cache
    chunk = sparse.predict(obs, generator=torch.Generator().manual_seed(1),
                           prefix=ActionPrefix(fixed, start=2))
    np.testing.assert_allclose(chunk.actions[2:5], fixed, atol=1e-5)
    free = sparse.predict(obs, generator=torch.Generator().manual_seed(1))
    # The free rows see the fixed ones through attention: they change too (the random DDIM
    # model saturates at the normalizer's bounds, where nothing can change).
    if 'scheduler' not in extra:
        assert not np.allclose(chunk.actions[5:], free.actions[5:], atol=1e-4)


def test_no_prefix_is_bit_identical_and_the_call_noise_stays_as_drawn():
    sparse = policy()
    obs = observation(sparse.config)
    plain = sparse.predict(obs, generator=torch.Generator().manual_seed(3))
    prefixed = sparse.predict(obs, generator=torch.Generator().manual_seed(3),
                              prefix=ActionPrefix(committed(2), start=0))
    assert torch.equal(plain.noise.initial, prefixed.noise.initial)
    again = sparse.predict(obs, generator=torch.Generator().manual_seed(3), prefix=None)
    assert np.array_equal(plain.actions, again.actions)


def test_soft_prefix_is_imposed_on_the_early_steps_only():
    sparse = policy()
    obs = observation(sparse.config)
    fixed = committed(4)
    hard = sparse.predict(obs, generator=torch.Generator().manual_seed(5),
                          prefix=ActionPrefix(fixed, start=1))
    soft = sparse.predict(obs, generator=torch.Generator().manual_seed(5),
                          prefix=ActionPrefix(fixed, start=1, until=0.5))
    free = sparse.predict(obs, generator=torch.Generator().manual_seed(5))
    np.testing.assert_allclose(hard.actions[1:5], fixed, atol=1e-5)
    assert not np.allclose(soft.actions[1:5], fixed, atol=1e-4)
    # Half the steps pulled toward the rows: the result lies closer to them than a free draw.
    assert (np.abs(soft.actions[1:5] - fixed).mean()
            < np.abs(free.actions[1:5] - fixed).mean())


@pytest.mark.parametrize('prefix,message', [
    (ActionPrefix(np.zeros((2, 3), np.float32)), r'prefix.actions must have shape \(P >= 1, 4\)'),
    (ActionPrefix(np.zeros((0, 4), np.float32)), 'prefix.actions must have shape'),
    (ActionPrefix(np.full((2, 4), np.nan, np.float32)), 'prefix.actions must be finite'),
    (ActionPrefix(np.zeros((2, 4), np.float32), start=-1), 'prefix.start must be an int >= 0'),
    (ActionPrefix(np.zeros((2, 4), np.float32), start=7), 'exceed the horizon of 8 rows'),
    (ActionPrefix(np.zeros((2, 4), np.float32), until=0.0), r'prefix.until must be in \(0, 1\]'),
])
def test_bad_prefixes_are_refused_naming_the_field(prefix, message):
    sparse = policy()
    with pytest.raises(ValueError, match=message):
        sparse.predict(observation(sparse.config), prefix=prefix)


def test_prefix_must_be_an_action_prefix():
    sparse = policy()
    with pytest.raises(TypeError, match='prefix must be an ActionPrefix, got ndarray'):
        sparse.predict(observation(sparse.config), prefix=np.zeros((2, 4)))
