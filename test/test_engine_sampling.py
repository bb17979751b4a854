"""Sparse sampler: dense equivalence, the value each reuse kind adds, and real skipping."""

from engine_helpers import observation, TINY
import numpy as np
import pytest
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.model import DiffusionPolicy
from sparse_policy_ros.policy.observation import OBS_STATE, validate_observation
from sparse_policy_ros.policy.sampler import (
    condition_all_steps, sample_dense, SamplingNoise, time_memory_for)
from sparse_policy_ros.policy.scheduler import NoiseScheduler
from sparse_policy_ros.sparsity.cache import RolloutCache
from sparse_policy_ros.sparsity.decisions import (
    Decision, dense_decisions, make_executable, validate_decisions)
from sparse_policy_ros.sparsity.sampler import sample_sparse
from sparse_policy_ros.sparsity.schedules import fixed_schedule
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy
import torch
from torch import nn

C, B, S, R = (int(d) for d in Decision)


def tiny_config(**overrides) -> PolicyConfig:
    return PolicyConfig(**{**TINY, **overrides})


def make_model(config: PolicyConfig, seed: int = 0) -> DiffusionPolicy:
    torch.manual_seed(seed)
    model = DiffusionPolicy(config)
    lim = {'min': -np.ones(config.state_dim, np.float32) * 2,
           'max': np.ones(config.state_dim, np.float32) * 2}
    act = {'min': -np.ones(config.action_dim, np.float32) * 2,
           'max': np.ones(config.action_dim, np.float32) * 2}
    model.normalizer.set_stats({OBS_STATE: lim, 'action': act})
    return model.eval()


def random_memory(config: PolicyConfig, steps: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn((steps, 1, config.memory_len, config.n_emb), generator=gen)


def draw_noise(scheduler: NoiseScheduler, config: PolicyConfig, seed: int) -> SamplingNoise:
    return SamplingNoise.draw(scheduler, (1, config.horizon, config.action_dim),
                              torch.device('cpu'), torch.Generator().manual_seed(seed))


class Recorder(nn.Module):
    """Wrap a branch: record every input stream and output delta, return the output as is."""

    def __init__(self, inner: nn.Module):
        super().__init__()
        self.inner = inner
        self.inputs: list[torch.Tensor] = []
        self.outputs: list[torch.Tensor] = []

    def forward(self, h: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        out = self.inner(h, memory)
        self.inputs.append(h.clone())
        self.outputs.append(out.clone())
        return out

    def clear(self) -> None:
        self.inputs.clear()
        self.outputs.clear()


class Instrumented:
    """A model whose branches record their calls, indexed by (step, branch) via the decisions."""

    def __init__(self, model: DiffusionPolicy):
        self.model = model
        net = model.transformer
        self.recorders = []
        for i in range(len(net.branches)):
            net.branches[i] = Recorder(net.branches[i])
            self.recorders.append(net.branches[i])
        self.decisions: torch.Tensor | None = None

    def run(self, decisions: torch.Tensor, cache: RolloutCache, scheduler: NoiseScheduler,
            memory: torch.Tensor, noise: SamplingNoise) -> torch.Tensor:
        for rec in self.recorders:
            rec.clear()
        self.decisions = decisions
        with torch.inference_mode():
            return sample_sparse(self.model, memory, scheduler, noise, cache, lambda: decisions)

    def _index(self, branch: int, step: int) -> int:
        computed = [k for k in range(self.decisions.shape[0])
                    if int(self.decisions[k, branch]) == C]
        assert step in computed, f'branch {branch} was not computed at step {step}'
        return computed.index(step)

    def h_in(self, branch: int, step: int) -> torch.Tensor:
        return self.recorders[branch].inputs[self._index(branch, step)]

    def out(self, branch: int, step: int) -> torch.Tensor:
        return self.recorders[branch].outputs[self._index(branch, step)]

    def calls(self) -> list[int]:
        return [len(rec.outputs) for rec in self.recorders]


def setup_run(n_layer: int = 2, steps: int = 10):
    config = tiny_config(n_layer=n_layer, num_inference_steps=steps)
    model = make_model(config)
    scheduler = NoiseScheduler(config)
    cache = RolloutCache()
    cache.prepare(steps, config.n_branches, (1, config.horizon, config.n_emb), torch.float32,
                  torch.device('cpu'))
    return config, model, scheduler, cache


@pytest.mark.parametrize('kind', ['ddpm', 'ddim'])
def test_all_compute_sparse_equals_dense_bitwise(kind):
    config = tiny_config(scheduler=kind)
    model = make_model(config)
    scheduler = NoiseScheduler(config)
    memory = random_memory(config, scheduler.num_inference_steps, 1)
    cache = RolloutCache()
    cache.prepare(scheduler.num_inference_steps, config.n_branches,
                  (1, config.horizon, config.n_emb), torch.float32, torch.device('cpu'))
    decisions = dense_decisions(scheduler.num_inference_steps, config.n_branches)
    with torch.inference_mode():
        dense = sample_dense(model, memory, scheduler, draw_noise(scheduler, config, 5))
        sparse = sample_sparse(model, memory, scheduler, draw_noise(scheduler, config, 5), cache,
                               lambda: decisions)
        other = sample_dense(model, memory, scheduler, draw_noise(scheduler, config, 6))
    assert torch.equal(dense, sparse)
    assert not torch.equal(dense, other)  # the noise matters, so equality is meaningful
    assert cache.ready


def test_sparse_policy_dense_mode_equals_dense_sampler():
    config = tiny_config()
    policy = SparsePolicy.random_init(config, mode='dense', target_sparsity=None, seed=3)
    obs = observation(config, 1)
    chunk = policy.predict(obs, generator=torch.Generator().manual_seed(11))
    model = policy.model
    images, state = validate_observation(obs, config)
    with torch.inference_mode():
        # The policy encodes frame by frame (test_engine_frame_cache: close to the batched
        # encoder, bit-identical to itself with the frame cache).
        memory = condition_all_steps(model, policy.encode(images, state), policy.scheduler)
        # On a CPU the policy projects the cross-attention keys/values once per call.
        net = model.transformer
        time_memory = time_memory_for(model, policy.scheduler, torch.device('cpu'))
        cross_kv = net.cross_kv_steps(memory, net.cross_kv_time(time_memory))
        expected = sample_dense(model, memory, policy.scheduler,
                                draw_noise(policy.scheduler, config, 11), cross_kv)
    assert np.array_equal(chunk.actions, expected[0].numpy())
    assert chunk.stats.dense_call and chunk.stats.sparsity == 0.0
    assert chunk.actions.shape == (config.horizon, config.action_dim)
    assert np.array_equal(chunk.executable, chunk.actions[1:1 + config.n_action_steps])
    # A sparse mode at sparsity 0 computes everything: identical to dense; above 0 it is not.
    computing = SparsePolicy.random_init(config, mode='fixed', target_sparsity=0.0, seed=3)
    first = computing.predict(obs, generator=torch.Generator().manual_seed(11))
    assert first.stats.dense_call and np.array_equal(first.actions, chunk.actions)
    sparse = SparsePolicy.random_init(config, mode='fixed', target_sparsity=0.8, seed=3)
    second = sparse.predict(obs, generator=torch.Generator().manual_seed(11))
    assert not second.stats.dense_call
    assert not np.array_equal(second.actions, chunk.actions)


def test_reuse_step_adds_latest_computed_delta_of_that_branch():
    config, model, scheduler, cache = setup_run()
    inst = Instrumented(model)
    d = dense_decisions(10, config.n_branches)
    d[2, 1] = S
    d[3, 1] = S  # latest computed value of branch 1 is from step 1, not step 2
    assert torch.equal(make_executable(d), d)
    memory = random_memory(config, 10, 0)
    inst.run(d, cache, scheduler, memory, draw_noise(scheduler, config, 0))
    for k in (2, 3):
        expected = inst.h_in(0, k) + inst.out(0, k) + inst.out(1, 1)
        assert torch.equal(inst.h_in(2, k), expected)
    # Sanity: the deltas of different steps differ, so the check above tells them apart.
    assert not torch.equal(inst.out(1, 1), inst.out(1, 0))
    assert inst.calls() == [10, 8, 10, 10, 10, 10]


def test_reuse_block_adds_latest_computed_delta_of_same_kind_in_this_step():
    config, model, scheduler, cache = setup_run(n_layer=3)
    inst = Instrumented(model)
    d = dense_decisions(10, config.n_branches)
    d[4, 6] = B  # self-attention of layer 2 at step 4: layers 0 and 1 computed -> layer 1
    d[5, 3] = S  # step 5: layer 1 self-attention reused -> layer 2 takes layer 0
    d[5, 6] = B
    d[6, 4] = B  # cross-attention of layer 1 at step 6 -> layer 0 cross-attention
    d[6, 7] = B  # and layer 2 -> still layer 0 (layer 1 was not computed)
    assert torch.equal(make_executable(d), d)
    memory = random_memory(config, 10, 1)
    inst.run(d, cache, scheduler, memory, draw_noise(scheduler, config, 1))
    assert torch.equal(inst.h_in(7, 4), inst.h_in(5, 4) + inst.out(5, 4) + inst.out(3, 4))
    assert not torch.equal(inst.out(3, 4), inst.out(0, 4))
    assert torch.equal(inst.h_in(4, 5), inst.h_in(2, 5) + inst.out(2, 5) + inst.out(3, 4))
    assert torch.equal(inst.h_in(7, 5), inst.h_in(5, 5) + inst.out(5, 5) + inst.out(0, 5))
    assert torch.equal(inst.h_in(5, 6), inst.h_in(3, 6) + inst.out(3, 6) + inst.out(1, 6))
    assert torch.equal(inst.h_in(8, 6), inst.h_in(6, 6) + inst.out(6, 6) + inst.out(1, 6))
    calls = inst.calls()
    assert calls[3] == 9 and calls[4] == 9 and calls[6] == 8 and calls[7] == 9
    assert sum(calls) == int((d == C).sum())


def test_reuse_rollout_adds_previous_calls_entry_and_never_overwrites_it():
    config, model, scheduler, cache = setup_run()
    inst = Instrumented(model)
    memory = random_memory(config, 10, 2)
    dense = dense_decisions(10, config.n_branches)
    inst.run(dense, cache, scheduler, memory, draw_noise(scheduler, config, 1))
    first = {(k, b): inst.out(b, k) for k in range(10) for b in range(config.n_branches)}
    for (k, b), value in first.items():
        assert torch.equal(cache.rollout(k, b), value)  # computed values are stored
    before = cache._store.clone()

    d = dense.clone()
    d[3, 1] = R
    d[4, 2] = S
    d[5, 4] = B
    d[6, 3] = R
    assert torch.equal(make_executable(d), d)
    memory2 = random_memory(config, 10, 3)
    inst.run(d, cache, scheduler, memory2, draw_noise(scheduler, config, 2))
    assert torch.equal(inst.h_in(2, 3), inst.h_in(0, 3) + inst.out(0, 3) + first[(3, 1)])
    assert torch.equal(inst.h_in(4, 6), inst.h_in(2, 6) + inst.out(2, 6) + first[(6, 3)])
    # Reused slots keep the value they had; computed slots hold this call's values.
    for k in range(10):
        for b in range(config.n_branches):
            if int(d[k, b]) == C:
                assert torch.equal(cache.rollout(k, b), inst.out(b, k))
                assert not torch.equal(cache.rollout(k, b), before[k, b])
            else:
                assert torch.equal(cache.rollout(k, b), before[k, b]), (k, b)
    assert inst.calls() == [10, 9, 9, 9, 9, 10]


def test_reused_branches_are_not_called():
    config, model, scheduler, cache = setup_run(n_layer=2, steps=10)
    inst = Instrumented(model)
    memory = random_memory(config, 10, 4)
    inst.run(dense_decisions(10, config.n_branches), cache, scheduler, memory,
             draw_noise(scheduler, config, 0))
    gen = torch.Generator().manual_seed(0)
    d = torch.randint(0, 4, (10, config.n_branches), generator=gen, dtype=torch.int8)
    d[2:9:3] = torch.tensor([S, R, R, R, B, S], dtype=torch.int8)
    d = make_executable(d)
    assert (d == R).any() and (d == B).any() and (d == S).any()
    inst.run(d, cache, scheduler, memory, draw_noise(scheduler, config, 0))
    assert inst.calls() == (d == C).sum(dim=0).tolist()
    heavy = fixed_schedule(10, config.n_branches, 0.8)
    inst.run(heavy, cache, scheduler, memory, draw_noise(scheduler, config, 0))
    assert sum(inst.calls()) == 12 == int((heavy == C).sum())


def test_decisions_are_fetched_once_after_step_zero():
    config, model, scheduler, cache = setup_run()
    calls_seen = []
    inst = Instrumented(model)

    def get_decisions():
        calls_seen.append(sum(inst.calls()))
        return fixed_schedule(10, config.n_branches, 0.5)

    with torch.inference_mode():
        sample_sparse(model, random_memory(config, 10, 0), scheduler,
                      draw_noise(scheduler, config, 0), cache, get_decisions)
    assert calls_seen == [config.n_branches]  # asked once, when exactly step 0 was done


def test_make_executable_rules():
    k, nb = 4, 9  # 3 layers
    d = torch.full((k, nb), S, dtype=torch.int8)
    d[1, 0] = B  # layer 0: no earlier layer -> orphan
    d[1, 3] = B  # layer 1, layer 0 of that kind reused -> orphan
    d[2, 1] = C
    d[2, 4] = B  # layer 0 cross-attention computed -> stays
    d[2, 7] = B  # chained: still has a computed earlier one -> stays
    d[3, 5] = C
    d[3, 2] = B  # earlier layer is required, not a later one -> orphan
    d[3, 8] = B
    original = d.clone()
    out = make_executable(d)
    assert torch.equal(d, original)  # input untouched
    assert out.dtype == torch.int8 and out.device.type == 'cpu'
    assert (out[0] == C).all()
    assert out[1, 0] == S and out[1, 3] == S
    assert out[2, 4] == B and out[2, 7] == B
    assert out[3, 2] == S and out[3, 8] == B
    untouched = torch.ones_like(d, dtype=torch.bool)
    untouched[0] = False
    for i, j in ((1, 0), (1, 3), (3, 2)):
        untouched[i, j] = False
    assert torch.equal(out[untouched], original[untouched])
    # Reuse-rollout of an entry the cache does not hold is computed, and a REUSE_BLOCK can
    # then take that newly computed branch.
    with_rollout = original.clone()
    with_rollout[1, 3] = R  # layer 1 self-attention from the previous call ...
    with_rollout[1, 6] = B  # ... layer 2 reuses the latest computed self-attention block
    with_rollout[2, 0] = R
    warm = make_executable(with_rollout, rollout_available=True)
    assert warm[1, 3] == R and warm[1, 6] == S and warm[2, 0] == R  # nothing computed before
    cold = make_executable(with_rollout, rollout_available=False)
    assert cold[1, 3] == C and cold[1, 6] == B and cold[2, 0] == C
    assert not (cold == R).any()
    assert torch.equal(cold == C, (warm == C) | (with_rollout == R))
    held = np.ones((k, nb), dtype=bool)
    held[2, 0] = False  # a mask: only the missing entry is computed
    partial = make_executable(with_rollout, rollout_available=held)
    assert partial[1, 3] == R and partial[2, 0] == C
    assert torch.equal(partial[:2], warm[:2]) and torch.equal(partial[3], warm[3])
    assert make_executable(original.long()).dtype == torch.int8


@pytest.mark.parametrize('bad, message', [
    ([[0, 0]], 'must be a torch.Tensor'),
    (torch.zeros(3, 6, dtype=torch.int8), 'shape (4, 6)'),
    (torch.zeros(4, 5, dtype=torch.int8), 'got (4, 5)'),
    (torch.zeros(4, 6), 'integer tensor'),
    (torch.full((4, 6), 4, dtype=torch.int8), 'got range [4, 4]'),
    (torch.full((4, 6), -1, dtype=torch.int64), 'got range [-1, -1]'),
])
def test_validate_decisions_errors(bad, message):
    with pytest.raises(ValueError) as info:
        validate_decisions(bad, 4, 6)
    assert message in str(info.value)


def test_validate_decisions_accepts_valid():
    d = torch.tensor([[0, 1, 2, 3, 0, 0]] * 4, dtype=torch.int8)
    validate_decisions(d, 4, 6)
    validate_decisions(d.long(), 4, 6)


@pytest.mark.parametrize('batch', [1, 3])
def test_condition_all_steps_equals_per_pair_conditioning(batch):
    config = tiny_config()
    model = make_model(config)
    scheduler = NoiseScheduler(config)
    k = scheduler.num_inference_steps
    tokens = torch.randn(batch, config.n_obs_steps, model.obs_encoder.feature_dim)
    with torch.inference_mode():
        memory = condition_all_steps(model, tokens, scheduler)
        pairs = model.transformer.condition(tokens.repeat(k, 1, 1),
                                            scheduler.timesteps.repeat_interleave(batch))
    assert memory.shape == (k, batch, config.memory_len, config.n_emb)
    torch.testing.assert_close(memory, pairs.view(memory.shape), rtol=1e-5, atol=1e-6)
    assert not torch.equal(memory[0], memory[1])  # the time token differs per step
    assert torch.equal(memory[0, :, 1:], memory[-1, :, 1:])  # observation tokens do not
    with torch.inference_mode():
        time_memory = time_memory_for(model, scheduler, torch.device('cpu'))
        again = condition_all_steps(model, tokens, scheduler, time_memory)
    assert time_memory.shape == (k, 1, config.n_emb)
    assert torch.equal(again, memory)  # precomputed time tokens change nothing


@pytest.mark.parametrize('batch', [1, 3])
def test_precomputed_cross_kv_equals_projecting_the_memory_at_each_step(batch):
    config = tiny_config()
    model = make_model(config)
    net = model.transformer
    scheduler = NoiseScheduler(config)
    tokens = torch.randn(batch, config.n_obs_steps, model.obs_encoder.feature_dim)
    with torch.inference_mode():
        time_memory = time_memory_for(model, scheduler, torch.device('cpu'))
        memory = condition_all_steps(model, tokens, scheduler, time_memory)
        cross_kv = net.cross_kv_steps(memory, net.cross_kv_time(time_memory))
        assert len(cross_kv) == config.n_layer
        for layer, i in enumerate(net.cross_branches):
            torch.testing.assert_close(cross_kv[layer], net.branches[i].attn.kv(memory),
                                       rtol=1e-5, atol=1e-6)
        h = torch.randn(batch, config.horizon, config.n_emb)
        for k in (0, scheduler.num_inference_steps - 1):
            for i in range(config.n_branches):
                torch.testing.assert_close(net.branch(i, h, memory[k], cross_kv, k),
                                           net.branch(i, h, memory[k]), rtol=1e-5, atol=1e-6)
        first = memory[:, :1]  # the samplers run one observation (batch 1)
        plain = sample_dense(model, first, scheduler, draw_noise(scheduler, config, 2))
        fast = sample_dense(model, first, scheduler, draw_noise(scheduler, config, 2),
                            [kv[:, :1] for kv in cross_kv])
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('kind', ['ddpm', 'ddim'])
def test_gated_twin_with_one_hot_gates_matches_the_sparse_sampler(kind):
    """The pruner is trained through sample_gated; it must compute what sample_sparse runs."""
    from sparse_policy_ros.sparsity.gated_sampler import sample_gated
    from sparse_policy_ros.policy.model import ACTION
    config = tiny_config(scheduler=kind)
    model = make_model(config)
    scheduler = NoiseScheduler(config)
    k, nb = scheduler.num_inference_steps, config.n_branches
    cache = RolloutCache()
    rollout = torch.zeros(k, nb, 1, config.horizon, config.n_emb)
    gen = torch.Generator().manual_seed(11)
    for call in range(3):
        ready = cache.prepare(k, nb, (1, config.horizon, config.n_emb), torch.float32,
                              torch.device('cpu'))
        decisions = make_executable(
            torch.randint(0, 4, (k, nb), generator=gen, dtype=torch.int8), ready)
        if call == 0:  # the first call is dense, which fills the rollout cache
            decisions = dense_decisions(k, nb)
        else:
            # Steps that reuse every branch (the sampler's fast path), with computes between.
            decisions[3] = decisions[7] = S
        memory = random_memory(config, k, 20 + call)
        gates = nn.functional.one_hot(decisions.long(), 4).float()
        with torch.inference_mode():
            sparse = sample_sparse(model, memory, scheduler, draw_noise(scheduler, config, call),
                                   cache, lambda: decisions)
            gated, rollout = sample_gated(model, memory, scheduler,
                                          draw_noise(scheduler, config, call), gates, rollout)
        torch.testing.assert_close(model.normalizer.normalize(ACTION, sparse), gated,
                                   rtol=1e-5, atol=1e-5)
        if call:
            assert (decisions[1:] == R).any()  # rollout reuse was exercised


def test_cuda_graphs_need_cuda():
    config = tiny_config()
    if torch.cuda.is_available():
        pytest.skip('this checks the CPU-only error; python -m sparse_policy_ros.gpu_check '
                    'tests the graphs themselves on a GPU')
    with pytest.raises(ValueError, match='cuda_graphs=True needs a CUDA device'):
        SparsePolicy(make_model(config), mode='dense', device='cpu', cuda_graphs=True,
                     warmup=False)


def test_graphed_sampler_before_capture_is_the_eager_sampler_and_its_memory_is_bounded():
    # Runs on the CPU: until a decisions tensor is seen min_sightings times nothing is captured,
    # and the calls are plain sample_sparse calls. Distinct decisions (a pruner whose choices vary
    # per call) must not grow the bookkeeping without bound.
    from sparse_policy_ros.sparsity.cuda_graphs import GraphedSampler, MAX_PENDING_KEYS
    config = tiny_config()
    model = make_model(config)
    scheduler = NoiseScheduler(config)
    k, nb = scheduler.num_inference_steps, config.n_branches
    graphed = GraphedSampler(min_sightings=10 ** 6)
    cache = RolloutCache()
    with torch.inference_mode():
        for call in range(MAX_PENDING_KEYS + 20):
            cache.prepare(k, nb, (1, config.horizon, config.n_emb), torch.float32,
                          torch.device('cpu'))
            # Distinct per call: the call number's bits say which entries reuse the step.
            bits = torch.tensor([(call >> b) & 1 for b in range((k - 1) * nb)], dtype=torch.bool)
            decisions = dense_decisions(k, nb)
            decisions[1:][bits.view(k - 1, nb)] = S
            memory = random_memory(config, k, call)
            out = graphed.sample(model, memory, scheduler, draw_noise(scheduler, config, call),
                                 cache, decisions, True)
            if call < 3:
                twin = RolloutCache()
                twin.prepare(k, nb, (1, config.horizon, config.n_emb), torch.float32,
                             torch.device('cpu'))
                expected = sample_sparse(model, memory, scheduler,
                                         draw_noise(scheduler, config, call), twin,
                                         lambda: decisions)
                assert torch.equal(out, expected)
    assert graphed.captures == 0 and graphed.eager_calls == MAX_PENDING_KEYS + 20
    assert len(graphed._sightings) == MAX_PENDING_KEYS


@pytest.mark.parametrize('steps', [0, 1, 5, 16, 20])
def test_continued_noise_keeps_the_rows_a_later_call_plans_again(steps):
    gen = torch.Generator().manual_seed(0)
    last = SamplingNoise(torch.randn((1, 16, 3), generator=gen), None)
    fresh = SamplingNoise(torch.randn((1, 16, 3), generator=gen), None)
    before = last.initial.clone()
    nxt = last.continued(steps, fresh)
    kept = max(16 - steps, 0)
    assert torch.equal(nxt.initial[:, :kept], last.initial[:, steps:steps + kept])
    assert torch.equal(nxt.initial[:, kept:], fresh.initial[:, kept:])
    assert nxt.per_step is None
    assert torch.equal(last.initial, before)  # the last call's noise is left as it was


def test_continued_noise_refuses_bad_shifts_and_shapes():
    last = SamplingNoise(torch.zeros((1, 16, 3)), None)
    with pytest.raises(ValueError, match='noise shift must be an int >= 0'):
        last.continued(-1, last)
    with pytest.raises(ValueError, match=r'fresh noise must have shape \(1, 16, 3\)'):
        last.continued(1, SamplingNoise(torch.zeros((1, 8, 3)), None))


def test_policy_continues_a_calls_noise_from_its_own_generator():
    config = PolicyConfig(**TINY)
    policy = SparsePolicy.random_init(config, mode='dense', warmup=False)
    chunk = policy.predict(observation(config), generator=torch.Generator().manual_seed(2))
    nxt = policy.continued_noise(chunk.noise, 2)
    horizon = config.horizon
    assert torch.equal(nxt.initial[:, :horizon - 2], chunk.noise.initial[:, 2:].cpu())
    assert not torch.equal(nxt.initial[:, horizon - 2:], chunk.noise.initial[:, :2].cpu())
    assert (nxt.per_step is None) == (chunk.noise.per_step is None)
    policy.predict(observation(config), noise=nxt)  # fits the policy's scheduler


@pytest.mark.parametrize('mode', ['fora', 'dense'])
def test_profiled_steps_leave_the_actions_as_they_are_and_count_every_step(mode):
    config = PolicyConfig(**TINY)
    target = None if mode == 'dense' else 0.5
    plain = SparsePolicy.random_init(config, mode=mode, target_sparsity=target, seed=0,
                                     warmup=False)
    profiled = SparsePolicy(plain.model, mode=mode, target_sparsity=target, device='cpu',
                            warmup=False)
    profiled.profile_steps = True
    obs = observation(config, 1)
    a = plain.predict(obs, generator=torch.Generator().manual_seed(3))
    b = profiled.predict(obs, generator=torch.Generator().manual_seed(3))
    assert np.array_equal(a.actions, b.actions)
    assert a.stats.computed_steps_ms is None and a.stats.computed_steps is None
    steps = profiled.scheduler.num_inference_steps
    # fora @ 0.5 computes every branch at every other step and reuses all at the rest.
    expected = steps if mode == 'dense' else steps // 2
    assert (b.stats.computed_steps, b.stats.reuse_steps) == (expected, steps - expected)
    assert b.stats.computed_steps_ms > 0 and b.stats.reuse_steps_ms >= 0
    assert b.stats.computed_steps_ms + b.stats.reuse_steps_ms <= b.stats.denoise_ms
