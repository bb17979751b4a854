"""RolloutCache: persistence across calls, reset, invalidation and memory accounting."""

from engine_helpers import observation, TINY
import numpy as np
import pytest
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.sparsity.cache import RolloutCache
from sparse_policy_ros.sparsity.decisions import Decision
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy
import torch

CPU = torch.device('cpu')


def filled_cache(steps=3, branches=6, shape=(1, 4, 8), dtype=torch.float32) -> RolloutCache:
    cache = RolloutCache()
    assert cache.prepare(steps, branches, shape, dtype, CPU) is False
    for k in range(steps):
        for b in range(branches):
            cache.store(k, b, torch.full(shape, float(10 * k + b), dtype=dtype))
    return cache


def test_store_rollout_ready_and_nbytes():
    cache = RolloutCache()
    assert cache.nbytes == 0 and not cache.ready
    assert cache.prepare(3, 6, (1, 4, 8), torch.float32, CPU) is False
    assert cache.nbytes == 3 * 6 * 1 * 4 * 8 * 4
    assert not cache.ready
    with pytest.raises(RuntimeError, match='step 1, branch 2'):
        cache.rollout(1, 2)
    value = torch.randn(1, 4, 8)
    cache.store(1, 2, value)
    kept = value.clone()
    value.add_(1.0)  # the cache holds a copy, not the caller's tensor
    assert torch.equal(cache.rollout(1, 2), kept)
    cache = filled_cache()
    assert cache.ready
    assert cache.prepare(3, 6, (1, 4, 8), torch.float32, CPU) is True
    assert torch.equal(cache.rollout(2, 5), torch.full((1, 4, 8), 25.0))
    doubles = filled_cache(dtype=torch.float64)
    assert doubles.nbytes == 3 * 6 * 4 * 8 * 8


@pytest.mark.parametrize('change', [
    {'steps': 4}, {'branches': 9}, {'shape': (1, 5, 8)}, {'shape': (2, 4, 8)},
    {'shape': (1, 4, 16)}, {'dtype': torch.float64}])
def test_invalidation_when_key_changes(change):
    cache = filled_cache()
    key = {'steps': 3, 'branches': 6, 'shape': (1, 4, 8), 'dtype': torch.float32}
    key.update(change)
    assert cache.prepare(key['steps'], key['branches'], key['shape'], key['dtype'], CPU) is False
    assert cache.invalidations == 1
    assert not cache.ready
    with pytest.raises(RuntimeError):
        cache.rollout(0, 0)  # a stale entry is never handed out
    numel = key['steps'] * key['branches'] * int(np.prod(key['shape']))
    assert cache.nbytes == numel * torch.empty((), dtype=key['dtype']).element_size()


def test_reset_frees_and_forgets():
    cache = filled_cache()
    cache.reset()
    assert cache.nbytes == 0 and not cache.ready
    assert cache.prepare(3, 6, (1, 4, 8), torch.float32, CPU) is False
    assert cache.invalidations == 0  # a reset is not an invalidation


def test_sparse_policy_cache_persists_and_reset_makes_next_call_dense():
    config = PolicyConfig(**TINY)
    policy = SparsePolicy.random_init(config, mode='fixed', target_sparsity=0.8, seed=1)
    dense_twin = SparsePolicy.random_init(config, mode='dense', target_sparsity=None, seed=1)
    assert policy.cache_bytes == 0  # warm-up resets
    obs = observation(config, 0)
    first = policy.predict(obs, generator=torch.Generator().manual_seed(0))
    assert first.stats.dense_call and first.stats.sparsity == 0.0
    assert (first.stats.decisions == Decision.COMPUTE).all()
    expected_bytes = 10 * config.n_branches * 1 * config.horizon * config.n_emb * 4
    assert policy.cache_bytes == first.stats.cache_bytes == expected_bytes
    assert policy.cache.ready
    store = policy.cache._store
    second = policy.predict(observation(config, 1), generator=torch.Generator().manual_seed(1))
    assert not second.stats.dense_call
    assert second.stats.sparsity == pytest.approx(1.0 - 12 / 60, abs=1e-6)
    assert policy.cache._store is store  # same storage, not reallocated per call
    assert policy.cache.invalidations == 0
    policy.reset()
    assert policy.cache_bytes == 0
    again = policy.predict(obs, generator=torch.Generator().manual_seed(0))
    assert again.stats.dense_call and again.stats.sparsity == 0.0
    assert np.array_equal(again.actions, first.actions)
    twin = dense_twin.predict(obs, generator=torch.Generator().manual_seed(0))
    assert np.array_equal(again.actions, twin.actions)


def test_pruner_policy_first_call_after_reset_skips_pruner_and_is_dense():
    config = PolicyConfig(**TINY)
    policy = SparsePolicy.random_init(config, mode='pruner', target_sparsity=0.5, seed=2)
    obs = observation(config, 0)
    first = policy.predict(obs)
    assert first.stats.dense_call and first.stats.sparsity == 0.0
    assert first.stats.pruner_run_ms == 0.0
    second = policy.predict(obs)
    assert not second.stats.dense_call
    assert second.stats.sparsity == pytest.approx(0.5, abs=1e-6)
    assert (second.stats.decisions[0] == Decision.COMPUTE).all()
    policy.reset()
    assert policy.predict(obs).stats.dense_call


def test_mark_computed_and_storage_key():
    # A CUDA graph replay writes the store on the device; the host bookkeeping follows here.
    cache = RolloutCache()
    assert cache.storage_key is None
    cache.prepare(3, 6, (1, 4, 8), torch.float32, CPU)
    key = cache.storage_key
    computed = torch.zeros(3, 6, dtype=torch.bool)
    computed[0] = True
    cache.mark_computed(computed)
    cache.rollout(0, 5)  # marked entries are readable
    with pytest.raises(RuntimeError):
        cache.rollout(1, 0)
    assert not cache.ready
    cache.mark_computed(~computed)
    assert cache.ready  # marks accumulate
    assert cache.prepare(3, 6, (1, 4, 8), torch.float32, CPU) is True
    assert cache.storage_key == key  # same storage across calls
    cache.prepare(4, 6, (1, 4, 8), torch.float32, CPU)
    assert cache.storage_key != key  # a new layout is a new key, whatever the address
