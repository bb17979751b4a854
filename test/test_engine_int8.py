"""Dynamic int8 branch matmuls (CPU): close to float32, same sampler semantics, clear refusals."""

import json

from engine_helpers import observation
import pytest
from sparse_policy_ros.policy.frozen import cpu_has_vnni, float_linear, int8_linear
from sparse_policy_ros.policy.sampler import (
    condition_all_steps, sample_dense, SamplingNoise, time_memory_for)
from sparse_policy_ros.policy.scheduler import NoiseScheduler
from sparse_policy_ros.sim import evaluate
from sparse_policy_ros.sparsity.cache import RolloutCache
from sparse_policy_ros.sparsity.decisions import dense_decisions, make_executable
from sparse_policy_ros.sparsity.sampler import sample_sparse
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy
from test_engine_frozen import make_model, run_all
from test_evaluate import DEFAULT_MODEL
import torch


def test_int8_linear_is_close_to_float_but_quantized():
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(96, 64, generator=gen) / 8
    bias = torch.randn(96, generator=gen) / 10
    x = torch.randn(1, 16, 64, generator=gen)
    exact = float_linear(weight, bias)(x)
    assert torch.equal(exact, torch.nn.functional.linear(x, weight, bias))
    approx = int8_linear(weight, bias)(x)
    assert approx.shape == exact.shape and approx.dtype == torch.float32
    error = (approx - exact).abs().max() / exact.abs().max()
    assert 0 < error < 0.02, error  # quantized (not the float op), yet within 2%
    assert isinstance(cpu_has_vnni(), bool)


@pytest.mark.parametrize('cross_kv', [False, True])
def test_int8_view_tracks_float_and_keeps_the_sampler_identities(cross_kv):
    model = make_model()
    model.transformer.freeze()
    exact = run_all(model, cross_kv)
    model.transformer.freeze(int8_linears=True)
    approx = run_all(model, cross_kv)
    # Results 0-3: an all-compute call, two mixed-decision calls, a dense call (other noise).
    for i in range(4):
        scale = exact[i].abs().max()
        assert (approx[i] - exact[i]).abs().max() < 0.05 * scale, f'result {i}'
        assert not torch.equal(approx[i], exact[i])
    # Deterministic: the same calls again give the same bits.
    again = run_all(model, cross_kv)
    for i, (a, b) in enumerate(zip(again, approx)):
        assert torch.equal(a, b), f'result {i} not deterministic'
    # All-compute sparse sampling is dense sampling bit for bit, in int8 as in float32.
    config, net = model.config, model.transformer
    scheduler = NoiseScheduler(config)
    k, nb = scheduler.num_inference_steps, config.n_branches
    tokens = torch.randn(1, config.n_obs_steps, model.obs_encoder.feature_dim,
                         generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        time_memory = time_memory_for(model, scheduler, torch.device('cpu'))
        memory = condition_all_steps(model, tokens, scheduler, time_memory)
        kv = net.cross_kv_steps(memory, net.cross_kv_time(time_memory)) if cross_kv else None
        outs = []
        for sparse in (True, False):
            noise = SamplingNoise.draw(scheduler, (1, config.horizon, config.action_dim),
                                       torch.device('cpu'), torch.Generator().manual_seed(5))
            if sparse:
                cache = RolloutCache()
                ready = cache.prepare(k, nb, (1, config.horizon, config.n_emb), torch.float32,
                                      torch.device('cpu'))
                executable = make_executable(dense_decisions(k, nb), ready)
                outs.append(sample_sparse(model, memory, scheduler, noise, cache,
                                          lambda: executable, kv))
            else:
                outs.append(sample_dense(model, memory, scheduler, noise, kv))
    assert torch.equal(outs[0], outs[1])


def test_int8_needs_the_frozen_cpu_path():
    model = make_model()
    with pytest.raises(ValueError, match='int8_linears needs device cpu and freeze=True'):
        SparsePolicy(model, mode='dense', device='cpu', freeze=False, int8_linears=True,
                     warmup=False)
    with pytest.raises(ValueError, match='CPU only'):
        int8_linear(torch.zeros(4, 4, device='meta'), None)


def test_int8_policy_predicts_close_to_float():
    model = make_model()
    obs = observation(model.config)
    chunks = []
    for int8 in (False, True):
        policy = SparsePolicy(model, mode='fora', target_sparsity=0.5, device='cpu',
                              int8_linears=int8)
        assert policy.int8_linears is int8
        chunks.append(policy.predict(obs, generator=torch.Generator().manual_seed(0)).actions)
        policy.close()
    difference = abs(chunks[1] - chunks[0]).max()
    assert 0 < difference < 0.05 * abs(chunks[0]).max()


def test_eval_policy_int8_runs_and_records_it(tmp_path):
    out = tmp_path / 'eval'
    code = evaluate.main(['--model', str(DEFAULT_MODEL), '--episodes', '1', '--modes',
                          'dense,pruner', '--int8', '--max-steps', '8', '--out', str(out)])
    assert code == 0
    report = json.loads((out / 'eval.json').read_text())
    assert report['meta']['int8_linears'] is True
    assert [row['mode'] for row in report['modes']] == ['dense', 'pruner']
    assert report['modes'][1]['action_deviation_from_dense'] > 0  # float32 reference
    assert 'int8 branch matmuls' in (out / 'eval.md').read_text()


def test_eval_policy_int8_refuses_other_devices(tmp_path, capsys):
    code = evaluate.main(['--model', str(DEFAULT_MODEL), '--int8', '--device', 'cuda',
                          '--out', str(tmp_path)])
    assert code == 2
    assert "--int8 needs --device cpu, got 'cuda'" in capsys.readouterr().err


def test_int8_refuses_non_finite_weights_naming_the_parameter():
    model = make_model()
    with torch.no_grad():
        model.transformer.branches[2].fc1.weight[3, :2] = float('nan')
        model.transformer.branches[4].attn.q.bias[0] = float('inf')
    with pytest.raises(ValueError) as info:
        model.transformer.freeze(int8_linears=True)
    message = str(info.value)
    assert 'found non-finite weights (NaN or inf) in 2 transformer parameters' in message
    assert 'transformer.branches.2.fc1.weight: 2 of' in message
    assert 'transformer.branches.4.attn.q.bias: 1 of' in message
    model.transformer.freeze()  # the float view has nothing to quantize: NaNs just propagate
    weight = torch.ones(4, 4)
    weight[1, 1] = float('nan')
    with pytest.raises(ValueError, match=r'finite weights, found 1 non-finite values .* '
                                         r'\(4, 4\) linear weight'):
        int8_linear(weight, None)
