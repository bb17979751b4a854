"""RolloutCache: persistence across calls, reset, invalidation and memory accounting."""

from engine_helpers import observation, TINY
import numpy as np
import pytest
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.sampler import SamplingNoise
from sparse_policy_ros.sparsity.cache import RolloutCache
from sparse_policy_ros.sparsity.decisions import Decision, make_executable, sparsity_of
from sparse_policy_ros.sparsity.sampler import sample_sparse
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


def test_sparse_policy_cache_persists_and_reset_computes_only_what_it_cannot_reuse():
    config = PolicyConfig(**TINY)
    policy = SparsePolicy.random_init(config, mode='fixed', target_sparsity=0.8, seed=1)
    # The static schedules reuse within a call only; give this one reuse across calls too.
    schedule = policy._planned_static().clone()
    schedule[1::2][schedule[1::2] == Decision.REUSE_STEP] = int(Decision.REUSE_ROLLOUT)
    policy._static = schedule
    assert policy.cache_bytes == 0  # warm-up resets
    obs = observation(config, 0)
    first = policy.predict(obs, generator=torch.Generator().manual_seed(0))
    # No earlier call: the reuse-rollout entries are computed, the in-call reuse is kept.
    expected = make_executable(schedule, rollout_available=False)
    assert torch.equal(first.stats.decisions, expected)
    assert not (expected == Decision.REUSE_ROLLOUT).any()
    assert first.stats.sparsity == pytest.approx(sparsity_of(expected), abs=1e-6)
    expected_bytes = 10 * config.n_branches * 1 * config.horizon * config.n_emb * 4
    assert policy.cache_bytes == first.stats.cache_bytes == expected_bytes
    store = policy.cache._store
    # Every entry the schedule reads from the previous call is now held: the schedule as is.
    second = policy.predict(observation(config, 1), generator=torch.Generator().manual_seed(1))
    assert torch.equal(second.stats.decisions, make_executable(schedule))
    assert second.stats.sparsity == pytest.approx(1.0 - 12 / 60, abs=1e-6)
    assert policy.cache._store is store  # same storage, not reallocated per call
    assert policy.cache.invalidations == 0
    policy.reset()
    assert policy.cache_bytes == 0
    again = policy.predict(obs, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.stats.decisions, expected)
    assert np.array_equal(again.actions, first.actions)


def test_a_schedule_without_rollout_reuse_runs_sparse_from_the_first_call():
    config = PolicyConfig(**TINY)
    policy = SparsePolicy.random_init(config, mode='fora', target_sparsity=0.5, seed=1)
    assert not (policy._planned_static() == Decision.REUSE_ROLLOUT).any()
    for _ in range(2):
        first = policy.predict(observation(config, 0))
        assert not first.stats.dense_call
        assert first.stats.sparsity == pytest.approx(0.5, abs=1e-6)
        policy.reset()


def test_pruner_policy_first_call_after_reset_runs_the_pruner_without_rollout_reuse():
    config = PolicyConfig(**TINY)
    policy = SparsePolicy.random_init(config, mode='pruner', target_sparsity=0.5, seed=2)
    obs = observation(config, 0)
    first = policy.predict(obs)
    assert first.stats.pruner_run_ms > 0.0
    assert not (first.stats.decisions == Decision.REUSE_ROLLOUT).any()
    assert (first.stats.decisions[0] == Decision.COMPUTE).all()
    second = policy.predict(obs)
    assert not second.stats.dense_call
    assert second.stats.sparsity == pytest.approx(0.5, abs=1e-6)
    assert (second.stats.decisions[0] == Decision.COMPUTE).all()
    policy.reset()
    after = policy.predict(obs)
    assert torch.equal(after.stats.decisions, first.stats.decisions)


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


def test_shift_zero_keeps_the_entries_a_repeated_call_would_recompute():
    # Two identical calls: all reuse-rollout after shift(0) gives the dense call's actions,
    # i.e. the shifted entries equal the ones recomputing them gives.
    config = PolicyConfig(**TINY)
    sparse = SparsePolicy.random_init(config, mode='dense', warmup=False)
    steps = sparse.scheduler.num_inference_steps
    rollout = torch.full((steps, config.n_branches), int(Decision.REUSE_ROLLOUT),
                         dtype=torch.int8)
    rollout[0] = int(Decision.COMPUTE)
    sparse._static = rollout
    obs = observation(config)
    # The first call has no earlier one to read: every entry is computed (a dense call).
    dense = sparse.predict(obs, generator=torch.Generator().manual_seed(4))
    assert dense.stats.dense_call
    stored = sparse.cache._store.clone()
    sparse.shift_cache(0)
    assert torch.equal(sparse.cache._store, stored)
    again = sparse.predict(obs, generator=torch.Generator().manual_seed(4))
    np.testing.assert_allclose(again.actions, dense.actions, atol=1e-6)


@pytest.mark.parametrize('steps', [1, 3, 9])
def test_shift_moves_rows_earlier_and_repeats_the_last(steps):
    cache = RolloutCache()
    cache.prepare(3, 6, (1, 4, 8), torch.float32, CPU)
    for k in range(3):
        for b in range(6):  # every row of every entry distinct
            cache.store(k, b, torch.arange(32, dtype=torch.float32).view(1, 4, 8) + 100 * k + b)
    before = cache._store.clone()
    cache.shift(steps)
    moved = min(steps, 3)
    assert torch.equal(cache._store[:, :, :, :4 - moved], before[:, :, :, moved:])
    for row in range(4 - moved, 4):
        assert torch.equal(cache._store[:, :, :, row], before[:, :, :, 3])
    assert cache.ready


def test_shift_refuses_a_negative_or_non_integer_step_count():
    cache = filled_cache()
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match='cache shift must be an int >= 0'):
            cache.shift(bad)
    RolloutCache().shift(2)  # nothing stored: nothing to move


def test_only_policies_that_read_earlier_calls_move_their_cache():
    # Moving the cache costs a copy of it every call: a policy whose decisions never read
    # earlier calls (static schedules, the shipped table pruner) leaves it where it is.
    config = PolicyConfig(**TINY)
    fixed = SparsePolicy.random_init(config, mode='fixed', target_sparsity=0.5, warmup=False)
    fixed.predict(observation(config), generator=torch.Generator().manual_seed(4))
    assert not fixed.reads_rollout_cache
    # Nothing reads it, so nothing is written: no cache memory, nothing to move.
    assert fixed.cache._store is None and fixed.cache_bytes == 0
    fixed.shift_cache(3)
    assert fixed.cache._store is None
    pruner = SparsePolicy.random_init(config, mode='pruner', target_sparsity=0.5, warmup=False)
    assert pruner.reads_rollout_cache  # a learned pruner may choose reuse-rollout
    pruner.predict(observation(config), generator=torch.Generator().manual_seed(4))
    stored = pruner.cache._store.clone()
    pruner.shift_cache(3)
    assert not torch.equal(pruner.cache._store, stored)


def test_sampling_without_a_cache_refuses_a_reuse_rollout_decision():
    config = PolicyConfig(**TINY)
    policy = SparsePolicy.random_init(config, mode='dense', warmup=False)
    steps = policy.scheduler.num_inference_steps
    decisions = torch.zeros((steps, config.n_branches), dtype=torch.int8)
    decisions[1, 2] = int(Decision.REUSE_ROLLOUT)
    memory = torch.zeros((steps, 1, config.memory_len, config.n_emb))
    noise = SamplingNoise.draw(policy.scheduler, (1, config.horizon, config.action_dim), CPU)
    with pytest.raises(ValueError, match=r'\(step 1, branch 2\) is reuse_rollout, but no '
                                         r'rollout cache was given'):
        sample_sparse(policy.model, memory, policy.scheduler, noise, None, lambda: decisions)
