"""The frozen transformer view computes exactly what the modules compute."""

from engine_helpers import TINY
import numpy as np
import pytest
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.model import DiffusionPolicy
from sparse_policy_ros.policy.observation import OBS_STATE
from sparse_policy_ros.policy.sampler import (
    condition_all_steps, sample_dense, SamplingNoise, time_memory_for)
from sparse_policy_ros.policy.scheduler import NoiseScheduler
from sparse_policy_ros.sparsity.cache import RolloutCache
from sparse_policy_ros.sparsity.decisions import dense_decisions, make_executable
from sparse_policy_ros.sparsity.sampler import sample_sparse
import torch


def make_model(**overrides) -> DiffusionPolicy:
    config = PolicyConfig(**{**TINY, 'clip_sample': False, **overrides})  # no saturation
    torch.manual_seed(0)
    model = DiffusionPolicy(config)
    limits = {'min': -2 * np.ones(config.state_dim, np.float32),
              'max': 2 * np.ones(config.state_dim, np.float32)}
    model.normalizer.set_stats({OBS_STATE: limits, 'action': {
        'min': -2 * np.ones(config.action_dim, np.float32),
        'max': 2 * np.ones(config.action_dim, np.float32)}})
    with torch.no_grad():  # trained-looking norms and biases, so every weight matters
        for name, param in model.named_parameters():
            if name.endswith('bias'):
                param.normal_(0.0, 0.02)
            elif ('norm' in name or 'ln_f' in name) and name.endswith('weight'):
                param.normal_(1.0, 0.1)
    return model.eval()


def run_all(model: DiffusionPolicy, cross_kv: bool) -> list[torch.Tensor]:
    config = model.config
    net = model.transformer
    scheduler = NoiseScheduler(config)
    k, nb = scheduler.num_inference_steps, config.n_branches
    tokens = torch.randn(1, config.n_obs_steps, model.obs_encoder.feature_dim,
                         generator=torch.Generator().manual_seed(1))
    cache = RolloutCache()
    results = []
    with torch.inference_mode():
        time_memory = time_memory_for(model, scheduler, torch.device('cpu'))
        memory = condition_all_steps(model, tokens, scheduler, time_memory)
        kv = net.cross_kv_steps(memory, net.cross_kv_time(time_memory)) if cross_kv else None
        mixed = torch.randint(0, 4, (k, nb), dtype=torch.int8,
                              generator=torch.Generator().manual_seed(2))
        for call, decisions in enumerate((dense_decisions(k, nb), mixed, mixed)):
            ready = cache.prepare(k, nb, (1, config.horizon, config.n_emb), torch.float32,
                                  torch.device('cpu'))
            noise = SamplingNoise.draw(scheduler, (1, config.horizon, config.action_dim),
                                       torch.device('cpu'), torch.Generator().manual_seed(call))
            executable = make_executable(decisions, ready)
            results.append(sample_sparse(model, memory, scheduler, noise, cache,
                                         lambda: executable, kv))
        noise = SamplingNoise.draw(scheduler, (1, config.horizon, config.action_dim),
                                   torch.device('cpu'), torch.Generator().manual_seed(9))
        results.append(sample_dense(model, memory, scheduler, noise, kv))
        h = torch.randn(1, config.horizon, config.n_emb,
                        generator=torch.Generator().manual_seed(3))
        results.append(net.stream_offset(h))
        results.append(net.embed_actions_plus(results[0], net.stream_offset(h)))
        results += [net.branch(i, h, memory[3], kv, 3) for i in range(nb)]
    return results


@pytest.mark.parametrize('kind', ['ddim', 'ddpm'])
@pytest.mark.parametrize('cross_kv', [False, True])
def test_frozen_view_is_bit_identical_to_the_modules(kind, cross_kv):
    model = make_model(scheduler=kind)
    expected = run_all(model, cross_kv)
    model.transformer.freeze()
    assert model.transformer.frozen
    got = run_all(model, cross_kv)
    assert len(got) == len(expected)
    for i, (a, b) in enumerate(zip(got, expected)):
        assert torch.equal(a, b), f'result {i} differs'
    # Different weights give different results, so the equality above is not vacuous.
    with torch.no_grad():
        model.transformer.branches[0].attn.out.bias.add_(0.1)
    changed = run_all(model, cross_kv)
    assert not torch.equal(changed[1], expected[1])
    assert not torch.equal(changed[-model.config.n_branches], expected[-model.config.n_branches])
    assert len(set(expected[1].flatten().tolist())) > 16  # unclipped, varied actions


def test_train_and_moves_drop_the_frozen_view():
    model = make_model()
    net = model.transformer
    net.freeze()
    model.train()
    assert not net.frozen
    with pytest.raises(RuntimeError, match='eval mode'):
        net.freeze()
    model.eval()
    net.freeze()
    model.to(torch.float64)
    assert not net.frozen  # a stale view would keep the float32 masks
    model.to(torch.float32)
    net.freeze()
    assert net.frozen


def test_a_copy_of_a_frozen_model_computes_with_its_own_weights():
    import copy
    model = make_model()
    model.transformer.freeze()
    twin = copy.deepcopy(model)
    assert not twin.transformer.frozen
    with torch.no_grad():
        twin.transformer.head.bias.add_(1.0)
    twin.transformer.freeze()
    h = torch.zeros(1, model.config.horizon, model.config.n_emb)
    with torch.inference_mode():
        delta = twin.transformer.output(h) - model.transformer.output(h)
    torch.testing.assert_close(delta, torch.ones_like(delta))
