"""FLOPs counted on the executed path: skipped branches are exactly the FLOPs saved."""

from engine_helpers import observation, TINY
import pytest
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.model import DiffusionPolicy
from sparse_policy_ros.policy.sampler import SamplingNoise
from sparse_policy_ros.policy.scheduler import NoiseScheduler
from sparse_policy_ros.sparsity.cache import RolloutCache
from sparse_policy_ros.sparsity.decisions import dense_decisions, make_executable
from sparse_policy_ros.sparsity.flops import branch_flop_table, count_flops, skipped_flops
from sparse_policy_ros.sparsity.sampler import sample_sparse
from sparse_policy_ros.sparsity.schedules import fixed_schedule, fora_schedule
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy
import torch


def test_branch_flop_table_matches_closed_form():
    config = PolicyConfig(**TINY)
    table = branch_flop_table(DiffusionPolicy(config))
    t, e, s = config.horizon, config.n_emb, config.memory_len
    self_attn = 2 * t * e * e + 2 * t * e * 2 * e + 2 * t * e * e + 4 * t * t * e
    cross_attn = 2 * t * e * e + 2 * s * e * 2 * e + 2 * t * e * e + 4 * t * s * e
    mlp = 2 * (2 * t * e * config.mlp_ratio * e)
    assert table == [self_attn, cross_attn, mlp] * config.n_layer
    # With the keys/values projected once per call, a cross-attention branch skips that GEMM.
    cross_kv_given = cross_attn - 2 * s * e * 2 * e
    assert branch_flop_table(DiffusionPolicy(config), precomputed_kv=True) == [
        self_attn, cross_kv_given, mlp] * config.n_layer


def test_skipped_flops_counts_reused_entries():
    table = [10, 100, 1000]
    d = torch.tensor([[0, 0, 0], [1, 2, 0], [3, 0, 2]], dtype=torch.int8)
    assert skipped_flops(d, table) == 10 + 100 + 10 + 1000
    assert skipped_flops(dense_decisions(3, 3), table) == 0


def _decision_sets(steps: int, nb: int) -> list[torch.Tensor]:
    mixed = torch.randint(0, 4, (steps, nb), generator=torch.Generator().manual_seed(0),
                          dtype=torch.int8)
    return [fixed_schedule(steps, nb, 0.8), fora_schedule(steps, nb, 0.5),
            make_executable(mixed), fixed_schedule(steps, nb, 0.95)]


def test_sample_sparse_flops_fall_by_exactly_the_skipped_branches():
    config = PolicyConfig(**TINY)
    torch.manual_seed(0)
    model = DiffusionPolicy(config).eval()
    scheduler = NoiseScheduler(config)
    k, nb = scheduler.num_inference_steps, config.n_branches
    memory = torch.randn(k, 1, config.memory_len, config.n_emb)
    cache = RolloutCache()
    cache.prepare(k, nb, (1, config.horizon, config.n_emb), torch.float32, torch.device('cpu'))
    table = branch_flop_table(model)

    def run(decisions):
        noise = SamplingNoise.draw(scheduler, (1, config.horizon, config.action_dim),
                                   torch.device('cpu'), torch.Generator().manual_seed(0))
        with torch.inference_mode():
            return count_flops(sample_sparse, model, memory, scheduler, noise, cache,
                               lambda: decisions)[1]

    dense = run(dense_decisions(k, nb))
    assert dense >= k * sum(table)
    for decisions in _decision_sets(k, nb):
        assert dense - run(decisions) == skipped_flops(decisions, table)


@pytest.mark.parametrize('mode, target', [('fixed', 0.8), ('fora', 0.5), ('fixed', 0.95)])
def test_predict_flops_fall_by_exactly_the_skipped_branches(mode, target):
    config = PolicyConfig(**TINY)
    policy = SparsePolicy.random_init(config, mode=mode, target_sparsity=target, seed=0)
    table = branch_flop_table(policy.model, precomputed_kv=True)  # as the CPU policy runs
    computing = SparsePolicy.random_init(config, mode='fixed', target_sparsity=0.0, seed=0)
    dense = computing.predict(observation(config, 0), count_flops_=True)
    assert dense.stats.dense_call and dense.stats.flops > 0
    sparse = policy.predict(observation(config, 1), count_flops_=True)
    assert not sparse.stats.dense_call
    saved = skipped_flops(sparse.stats.decisions, table)
    assert saved > 0
    assert dense.stats.flops - sparse.stats.flops == saved
    # Uncounted calls report no FLOPs.
    assert policy.predict(observation(config, 2)).stats.flops is None


def test_pruner_mode_counts_the_pruner_too():
    config = PolicyConfig(**TINY)
    policy = SparsePolicy.random_init(config, mode='pruner', target_sparsity=0.8, seed=0)
    static = SparsePolicy.random_init(config, mode='fixed', target_sparsity=0.8, seed=0)
    table = branch_flop_table(policy.model, precomputed_kv=True)
    computing = SparsePolicy.random_init(config, mode='fixed', target_sparsity=0.0, seed=0)
    dense = computing.predict(observation(config, 0), count_flops_=True).stats.flops
    static.predict(observation(config, 0))
    assert static.predict(observation(config, 1), count_flops_=True).stats.flops < dense
    policy.predict(observation(config, 0))  # the rollout cache filled, as in an episode
    sparse = policy.predict(observation(config, 1), count_flops_=True)
    with torch.inference_mode():
        memory = torch.zeros(10, 1, config.memory_len, config.n_emb)
        pruner_flops = count_flops(policy.pruner, memory)[1]
    assert pruner_flops > 0
    saved = skipped_flops(sparse.stats.decisions, table)
    assert dense - sparse.stats.flops == saved - pruner_flops
