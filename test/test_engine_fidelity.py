"""Online fidelity: noise replay, reference deviation, the monitor's hysteresis, slack."""

import math
from pathlib import Path

from engine_helpers import observation, TINY
import numpy as np
import pytest
from sparse_policy_ros.policy.checkpoint import load_policy
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.sampler import SamplingNoise
from sparse_policy_ros.policy.scheduler import NoiseScheduler
from sparse_policy_ros.sparsity.decisions import Decision
from sparse_policy_ros.sparsity.fidelity import (
    action_deviation, FidelityMonitor, FidelityState, has_slack, reference_policy, replay_noise,
    RollingLatency, run_reference)
from sparse_policy_ros.sparsity.pruner import load_pruner
from sparse_policy_ros.sparsity.sparse_policy import ActionChunk, PredictStats, SparsePolicy
import torch

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / 'models' / 'default'
CPU = torch.device('cpu')


@pytest.fixture(scope='module')
def model():
    return load_policy(DEFAULT_MODEL)  # the shipped model: DDIM, 100 steps


@pytest.fixture(scope='module')
def pruner():
    return load_pruner(DEFAULT_MODEL)[0]


@pytest.fixture(scope='module')
def obs(model):
    return observation(model.config, 3)


def policy_on(model, mode='dense', target_sparsity=None, pruner=None, seed=0) -> SparsePolicy:
    return SparsePolicy(model, pruner, mode=mode, target_sparsity=target_sparsity, device='cpu',
                        warmup=False, seed=seed)


def sparse_primary(model, pruner, kind: str) -> SparsePolicy:
    if kind == 'pruner':
        return policy_on(model, 'pruner', 0.9, pruner)
    return policy_on(model, 'fixed', 0.8)


def action_shape(config: PolicyConfig) -> tuple[int, int, int]:
    return (1, config.horizon, config.action_dim)


def tiny_ddpm() -> PolicyConfig:
    return PolicyConfig(**{**TINY, 'scheduler': 'ddpm'})  # 10 DDPM steps, horizon 8


def draw(scheduler: NoiseScheduler, config: PolicyConfig, seed: int = 0) -> SamplingNoise:
    return SamplingNoise.draw(scheduler, action_shape(config), CPU,
                              torch.Generator().manual_seed(seed))


def manual_chunk(actions: np.ndarray) -> ActionChunk:
    return ActionChunk(actions.astype(np.float32), n_obs_steps=2, n_action_steps=3,
                       stats=PredictStats())


# --- replaying a call's noise -----------------------------------------------------------------

def test_dense_replay_right_after_the_call_is_bitwise_and_leaves_the_generator(model, obs):
    policy = policy_on(model)
    chunk = policy.predict(obs)
    assert chunk.noise is not None and chunk.noise.per_step is None  # DDIM: x_T only
    state = policy._generator.get_state()
    replay = policy.predict(obs, noise=chunk.noise)
    assert np.array_equal(replay.actions, chunk.actions)
    assert torch.equal(policy._generator.get_state(), state)  # replay drew nothing
    fresh = policy.predict(obs)  # new noise: the equality above is not trivially true
    assert not np.array_equal(fresh.actions, chunk.actions)


def test_pruner_replay_is_bitwise_and_after_reset_equals_a_fresh_first_call(
        model, pruner, obs):
    policy = policy_on(model, 'pruner', 0.9, pruner)
    policy.predict(obs)  # fills the rollout cache
    chunk = policy.predict(obs)
    assert not chunk.stats.dense_call
    assert np.array_equal(policy.predict(obs, noise=chunk.noise).actions, chunk.actions)
    policy.reset()
    after_reset = policy.predict(obs, noise=chunk.noise)
    assert not (after_reset.stats.decisions == Decision.REUSE_ROLLOUT).any()
    first = policy_on(model, 'pruner', 0.9, pruner, seed=11).predict(obs, noise=chunk.noise)
    assert np.array_equal(after_reset.actions, first.actions)
    # This pruner reads nothing from earlier calls: the reset changes nothing either.
    assert not (chunk.stats.decisions == Decision.REUSE_ROLLOUT).any()
    assert np.array_equal(after_reset.actions, chunk.actions)


def test_predict_refuses_noise_and_generator_together(model, obs):
    policy = policy_on(model)
    noise = policy.predict(obs).noise
    calls = policy.calls
    with pytest.raises(ValueError, match='noise or generator'):
        policy.predict(obs, generator=torch.Generator().manual_seed(1), noise=noise)
    with pytest.raises(TypeError, match='SamplingNoise'):
        policy.predict(obs, noise=noise.initial)
    assert policy.calls == calls


def test_predict_refuses_noise_that_does_not_fit_its_scheduler(model, obs):
    policy = policy_on(model)
    shape = action_shape(model.config)
    with pytest.raises(ValueError, match=r'noise\.initial must have shape \(1, 16, 4\)'):
        policy.predict(obs, noise=SamplingNoise(torch.zeros(1, 8, 4), None))
    ddpm = SamplingNoise.draw(NoiseScheduler(model.config, 100, kind='ddpm'), shape, CPU)
    with pytest.raises(ValueError, match=r'noise\.per_step must be None for a ddim'):
        policy.predict(obs, noise=ddpm)
    assert policy.calls == 0


# --- SamplingNoise.validate -------------------------------------------------------------------

def test_validate_accepts_what_draw_gives():
    config = tiny_ddpm()
    for kind in ('ddpm', 'ddim'):
        scheduler = NoiseScheduler(config, kind=kind)
        draw(scheduler, config).validate(scheduler, action_shape(config))


@pytest.mark.parametrize('initial, per_step, kind, message', [
    (torch.zeros(1, 8, 3), torch.zeros(10, 1, 8, 4), 'ddpm',
     r'noise\.initial must have shape \(1, 8, 4\), got shape \(1, 8, 3\)'),
    (np.zeros((1, 8, 4), np.float32), None, 'ddim',
     r'noise\.initial must have shape \(1, 8, 4\), got ndarray'),
    (torch.zeros(1, 8, 4), torch.zeros(9, 1, 8, 4), 'ddpm',
     r'noise\.per_step must have shape \(10, 1, 8, 4\).*got shape \(9, 1, 8, 4\)'),
    (torch.zeros(1, 8, 4), None, 'ddpm', r'noise\.per_step must have shape \(10, 1, 8, 4\).*None'),
    (torch.zeros(1, 8, 4), torch.zeros(10, 1, 8, 4), 'ddim',
     r'noise\.per_step must be None for a ddim scheduler.*shape \(10, 1, 8, 4\)'),
    (torch.zeros(1, 8, 4), [0.0] * 10, 'ddim', r'noise\.per_step must be None.*got list'),
    (torch.zeros(1, 8, 4, dtype=torch.float64), None, 'ddim',
     r'noise\.initial must be torch\.float32'),
    (torch.zeros(1, 8, 4), torch.zeros(10, 1, 8, 4, dtype=torch.float16), 'ddpm',
     r'noise\.per_step must be torch\.float32'),
])
def test_validate_refuses_with_the_field_and_the_expected_value(initial, per_step, kind,
                                                                message):
    config = tiny_ddpm()
    scheduler = NoiseScheduler(config, kind=kind)
    with pytest.raises(ValueError, match=message):
        SamplingNoise(initial, per_step).validate(scheduler, action_shape(config))


# --- replay_noise -----------------------------------------------------------------------------

def test_replay_noise_keeps_a_draw_that_fits_and_drops_per_step_for_ddim():
    config = tiny_ddpm()
    ddpm_policy = SparsePolicy.random_init(config, mode='dense', target_sparsity=None,
                                           warmup=False)
    ddim_policy = SparsePolicy.random_init(config, mode='ddim', target_sparsity=0.5,
                                           warmup=False)
    noise = draw(ddpm_policy.scheduler, config)
    assert replay_noise(noise, ddpm_policy) is noise  # same kind and steps: shared as is
    for_ddim = replay_noise(noise, ddim_policy)
    assert for_ddim.per_step is None and for_ddim.initial is noise.initial
    with pytest.raises(TypeError, match='SamplingNoise'):
        replay_noise(noise.initial, ddpm_policy)
    with pytest.raises(ValueError, match=r'noise\.initial must have shape \(1, 8, 4\)'):
        replay_noise(SamplingNoise(torch.zeros(1, 16, 4), None), ddpm_policy)


def test_replay_noise_for_a_ddpm_reference_of_a_fewer_step_primary_is_a_function_of_x_t():
    config = tiny_ddpm()
    primary = SparsePolicy.random_init(config, mode='ddim', target_sparsity=0.5, warmup=False)
    assert primary.scheduler.kind == 'ddim' and primary.scheduler.num_inference_steps == 5
    reference = reference_policy(primary, warmup=False)
    assert reference.scheduler.kind == 'ddpm' and reference.scheduler.num_inference_steps == 10
    obs = observation(config, 0)
    chunk = primary.predict(obs)
    first, second = replay_noise(chunk.noise, reference), replay_noise(chunk.noise, reference)
    assert first.initial is chunk.noise.initial
    assert first.per_step.shape == (10, *action_shape(config))
    assert torch.equal(first.per_step, second.per_step)
    # A copy of x_T (other storage, same values) gives the same draw; another x_T another one.
    copied = replay_noise(SamplingNoise(chunk.noise.initial.clone(), None), reference)
    assert torch.equal(copied.per_step, first.per_step)
    other = replay_noise(primary.predict(obs).noise, reference)
    assert not torch.equal(other.per_step, first.per_step)
    # So the reference's answer is a function of (observation, chunk noise).
    a, b = run_reference(reference, obs, chunk), run_reference(reference, obs, chunk)
    assert np.array_equal(a.actions, b.actions)


# --- reference deviation ----------------------------------------------------------------------

def test_dense_reference_of_a_dense_primary_deviates_by_exactly_zero(model, obs):
    primary = policy_on(model)
    # Another seed: only the replayed noise can make the two calls agree.
    reference = reference_policy(primary, warmup=False, seed=7)
    assert reference is not primary and reference.mode == 'dense'
    chunk = primary.predict(obs)
    deviation = action_deviation(chunk, run_reference(reference, obs, chunk))
    assert deviation.max_abs == 0.0 and deviation.rms == 0.0
    assert deviation.max_abs_per_joint == (0.0,) * model.config.action_dim
    # Without the shared noise the two would differ: the zero above is the replay's doing.
    unshared = action_deviation(
        chunk, reference.predict(obs, generator=torch.Generator().manual_seed(1)))
    assert unshared.max_abs > 0.0


@pytest.mark.parametrize('kind', ['pruner', 'fixed'])
def test_sparse_primary_deviation_from_dense_reference_is_the_direct_comparison(model, pruner,
                                                                                obs, kind):
    primary = sparse_primary(model, pruner, kind)
    primary.predict(obs)  # the first call of a pruner primary is dense
    chunk = primary.predict(obs)
    assert chunk.stats.sparsity > 0.5
    reference = reference_policy(primary, warmup=False, seed=7)
    deviation = action_deviation(chunk, run_reference(reference, obs, chunk))
    direct = policy_on(model, seed=11).predict(obs, noise=chunk.noise).executable
    direct = direct.astype(np.float64)
    diff = np.abs(chunk.executable.astype(np.float64) - direct)  # (n_action_steps, action_dim)
    assert diff.shape == (model.config.n_action_steps, model.config.action_dim)
    assert deviation.max_abs > 0.0
    assert deviation.max_abs == float(diff.max())
    assert deviation.max_abs_per_joint == tuple(float(v) for v in diff.max(axis=0))
    assert deviation.rms == float(np.sqrt(np.mean(diff ** 2)))


def test_fewer_step_ddim_primary_shares_x_t_with_the_dense_reference(model, obs):
    primary = policy_on(model, 'ddim', 0.5)
    assert primary.scheduler.num_inference_steps == 50
    reference = reference_policy(primary, warmup=False, seed=7)
    assert reference.scheduler.num_inference_steps == 100
    chunk = primary.predict(obs)
    assert replay_noise(chunk.noise, reference) is chunk.noise  # DDIM: x_T is all there is
    ref = run_reference(reference, obs, chunk)
    direct = policy_on(model, seed=11).predict(obs, noise=chunk.noise)
    assert np.array_equal(ref.actions, direct.actions)
    assert action_deviation(chunk, ref).max_abs > 0.0


def test_reference_policy_refuses_bad_settings(model, pruner):
    primary = policy_on(model, 'pruner', 0.9, pruner)
    with pytest.raises(TypeError, match='primary must be a SparsePolicy'):
        reference_policy(model)
    with pytest.raises(ValueError, match="reference mode must be one of .*got 'pruner'"):
        reference_policy(primary, 'pruner', warmup=False)
    with pytest.raises(ValueError, match="'dense' takes no target_sparsity"):
        reference_policy(primary, 'dense', 0.5, warmup=False)
    with pytest.raises(ValueError, match=r"lower than the primary's \(0\.9\), got 0\.95"):
        reference_policy(primary, 'fixed', 0.95, warmup=False)
    fixed = reference_policy(primary, 'fixed', 0.5, warmup=False)
    assert fixed.mode == 'fixed' and fixed.target_sparsity == 0.5
    assert fixed.nominal_steps == primary.nominal_steps and fixed.model is primary.model


def test_run_reference_needs_a_chunk_with_noise(model, obs):
    reference = policy_on(model)
    with pytest.raises(ValueError, match='chunk carries no noise'):
        run_reference(reference, obs, manual_chunk(np.zeros((16, 4))))


def test_action_deviation_covers_the_executable_actions_only():
    a = np.zeros((6, 2))
    b = np.zeros((6, 2))
    b[0] = 9.0  # before the executable window (n_obs_steps - 1 = 1): ignored
    b[4:] = 9.0  # after it (actions 1..3): ignored
    b[1, 0], b[3, 1] = 0.5, -0.25
    deviation = action_deviation(manual_chunk(a), manual_chunk(b))
    assert deviation.max_abs == 0.5
    assert deviation.max_abs_per_joint == (0.5, 0.25)
    assert deviation.rms == pytest.approx(math.sqrt((0.25 + 0.0625) / 6), abs=1e-12)
    with pytest.raises(ValueError, match='same executable shape'):
        action_deviation(manual_chunk(a), manual_chunk(np.zeros((6, 3))))
    empty = ActionChunk(np.zeros((6, 2), np.float32), 2, 0, PredictStats())
    with pytest.raises(ValueError, match='no executable actions'):
        action_deviation(empty, empty)


# --- FidelityMonitor --------------------------------------------------------------------------

def monitor(**overrides) -> FidelityMonitor:
    return FidelityMonitor(**{'warn_threshold': 0.1, 'fallback_threshold': 0.3,
                              'recover_threshold': 0.05, 'recover_checks': 3, **overrides})


def test_monitor_warn_has_no_memory_and_thresholds_are_strict():
    m = monitor()
    assert m.state is FidelityState.OK and m.last_deviation is None
    assert m.update(0.01) is FidelityState.OK
    assert m.update(0.2) is FidelityState.WARN
    assert m.update(0.01) is FidelityState.OK
    assert m.update(0.1) is FidelityState.OK  # at warn_threshold: not above
    assert m.update(0.3) is FidelityState.WARN  # at fallback_threshold: not above
    assert m.update(np.float32(0.02)) is FidelityState.OK  # a numpy scalar is a number
    assert (m.checks, m.warnings, m.fallbacks) == (6, 2, 0)
    assert m.max_deviation == 0.3 and m.last_deviation == pytest.approx(0.02)
    assert not m.in_fallback


def test_monitor_fallback_needs_consecutive_calm_checks_to_recover():
    m = monitor()
    m.update(0.2)
    assert m.update(0.5) is FidelityState.FALLBACK and m.in_fallback
    assert m.fallbacks == 1 and m.calm_checks == 0
    assert m.update(0.01) is FidelityState.FALLBACK and m.calm_checks == 1
    assert m.update(0.01) is FidelityState.FALLBACK and m.calm_checks == 2
    # Below warn but not below recover: still falling back, and the count starts over.
    assert m.update(0.07) is FidelityState.FALLBACK and m.calm_checks == 0
    m.update(0.01)
    assert m.update(0.05) is FidelityState.FALLBACK and m.calm_checks == 0  # at recover
    assert m.update(0.2) is FidelityState.FALLBACK  # a warning-level check in fallback
    assert m.update(0.9) is FidelityState.FALLBACK and m.fallbacks == 1  # not a new fallback
    assert m.update(0.01) is FidelityState.FALLBACK
    assert m.update(0.01) is FidelityState.FALLBACK
    assert m.update(0.01) is FidelityState.OK and m.calm_checks == 0
    assert not m.in_fallback
    assert (m.checks, m.warnings, m.max_deviation) == (12, 4, 0.9)
    assert m.update(0.4) is FidelityState.FALLBACK and m.fallbacks == 2
    assert m.summary() == {
        'fidelity_state': 'fallback', 'fidelity_checks': '13', 'fidelity_warnings': '5',
        'fidelity_fallbacks': '2', 'fidelity_calm_checks': '0',
        'fidelity_last_deviation': '0.4', 'fidelity_max_deviation': '0.9'}


def test_monitor_with_one_recover_check_leaves_fallback_at_once():
    m = monitor(recover_checks=1)
    m.update(1.0)
    assert m.update(0.04) is FidelityState.OK


@pytest.mark.parametrize('overrides, field_name', [
    ({'warn_threshold': 0.0}, 'warn_threshold'),
    ({'warn_threshold': '0.1'}, 'warn_threshold'),
    ({'fallback_threshold': math.nan}, 'fallback_threshold'),
    ({'fallback_threshold': math.inf}, 'fallback_threshold'),
    ({'fallback_threshold': 0.09}, 'fallback_threshold'),
    ({'recover_threshold': -0.01}, 'recover_threshold'),
    ({'recover_threshold': 0.1}, 'recover_threshold'),
    ({'recover_threshold': True}, 'recover_threshold'),
    ({'recover_checks': 0}, 'recover_checks'),
    ({'recover_checks': 2.5}, 'recover_checks'),
    ({'recover_checks': True}, 'recover_checks'),
])
def test_monitor_constructor_names_the_bad_field(overrides, field_name):
    with pytest.raises(ValueError, match=f'^{field_name} must'):
        monitor(**overrides)


@pytest.mark.parametrize('bad', [-0.1, math.nan, math.inf, True, None, '0.1'])
def test_monitor_update_refuses_a_bad_deviation_and_records_nothing(bad):
    m = monitor()
    with pytest.raises(ValueError, match='^deviation must'):
        m.update(bad)
    assert m.checks == 0 and m.last_deviation is None


# --- RollingLatency and has_slack -------------------------------------------------------------

def test_rolling_latency_is_the_max_over_the_window():
    latency = RollingLatency(window=3)
    assert latency.estimate is None
    for seconds, expected in ((0.1, 0.1), (0.3, 0.3), (0.2, 0.3), (0.05, 0.3), (0.04, 0.2),
                              (0.01, 0.05)):
        latency.add(seconds)
        assert latency.estimate == expected


@pytest.mark.parametrize('window', [0, -1, 2.5, True])
def test_rolling_latency_refuses_a_bad_window(window):
    with pytest.raises(ValueError, match='^window must'):
        RollingLatency(window)


@pytest.mark.parametrize('seconds', [-0.001, math.nan, math.inf, None])
def test_rolling_latency_refuses_a_bad_run_time(seconds):
    latency = RollingLatency()
    with pytest.raises(ValueError, match='^seconds must'):
        latency.add(seconds)
    assert latency.estimate is None


@pytest.mark.parametrize('args, kwargs, expected', [
    ((1.0, None), {}, False),  # no estimate yet
    ((math.inf, None), {}, False),
    ((1.0, 0.5), {}, True),  # 1.5 * 0.5 = 0.75 <= 1
    ((0.75, 0.5), {}, True),  # exactly fits
    ((0.7, 0.5), {}, False),
    ((1.0, 0.5), {'margin_s': 0.3}, False),  # 1.05 > 1
    ((0.5, 0.5), {'safety_factor': 1.0}, True),
    ((0.5, 0.5), {'safety_factor': 2.0}, False),
    ((-0.1, 0.0), {}, False),  # the next inference is already due
    ((math.inf, 10.0), {}, True),
    ((np.float32(1.0), np.float64(0.5)), {}, True),
])
def test_has_slack(args, kwargs, expected):
    assert has_slack(*args, **kwargs) is expected


@pytest.mark.parametrize('args, kwargs, name', [
    ((1.0, 0.5), {'safety_factor': 0.9}, 'safety_factor'),
    ((1.0, 0.5), {'safety_factor': math.nan}, 'safety_factor'),
    ((1.0, 0.5), {'margin_s': -0.1}, 'margin_s'),
    ((1.0, None), {'margin_s': math.inf}, 'margin_s'),
    ((1.0, -0.5), {}, 'reference_latency_s'),
    ((1.0, math.inf), {}, 'reference_latency_s'),
    ((1.0, math.nan), {}, 'reference_latency_s'),
    ((math.nan, 0.5), {}, 'seconds_until_needed'),
    ((math.nan, None), {}, 'seconds_until_needed'),  # checked even without an estimate
    ((None, 0.5), {}, 'seconds_until_needed'),
])
def test_has_slack_refuses_bad_inputs(args, kwargs, name):
    with pytest.raises(ValueError, match=f'^{name} must'):
        has_slack(*args, **kwargs)
