"""Warm start: a call denoises from the previous plan re-noised to an intermediate step."""

from engine_helpers import observation, TINY
import numpy as np
import pytest
from sparse_policy_ros.control.streaming import ChunkStream, StreamSettings
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.prefix import ActionPrefix
from sparse_policy_ros.policy.sampler import SamplingNoise
from sparse_policy_ros.policy.warm_start import noised_guess, warm_start_step, WarmStart
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy
import torch

CONFIG = PolicyConfig(**{**TINY, 'scheduler': 'ddim'})


def make_policy(mode: str = 'dense', target: float | None = None) -> SparsePolicy:
    """Return a tiny random DDIM policy in ``mode``."""
    return SparsePolicy.random_init(CONFIG, mode=mode, target_sparsity=target, warmup=False)


def guess(seed: int = 1) -> np.ndarray:
    """Return (horizon, action_dim) actions inside the normalizer's range."""
    return np.random.default_rng(seed).uniform(-0.8, 0.8, (CONFIG.horizon, CONFIG.action_dim)) \
        .astype(np.float32)


def draw(policy: SparsePolicy, seed: int) -> SamplingNoise:
    """Return one call's noise."""
    return SamplingNoise.draw(policy.scheduler, (1, CONFIG.horizon, CONFIG.action_dim), 'cpu',
                              torch.Generator().manual_seed(seed))


def test_a_warm_start_at_step_zero_is_a_call_from_the_noised_guess():
    policy = make_policy()
    obs = observation(CONFIG)
    noise = draw(policy, 0)
    warm = policy.predict(obs, noise=noise, warm=WarmStart(guess(), 0))
    normalized = policy.model.normalizer.normalize('action', torch.from_numpy(guess())[None])
    start = SamplingNoise(noised_guess(normalized, noise.initial, policy.scheduler, 0), None)
    plain = policy.predict(obs, noise=start)
    assert np.array_equal(warm.actions, plain.actions)
    # The chunk keeps the call's own noise, so that it can be replayed.
    assert torch.equal(warm.noise.initial, noise.initial)


@pytest.mark.parametrize('mode,target', [('dense', None), ('fora', 0.5)])
def test_skipped_steps_are_not_computed(mode, target):
    policy = make_policy(mode, target)
    policy.profile_steps = True
    steps = policy.scheduler.num_inference_steps
    start = warm_start_step(steps, 0.5)
    chunk = policy.predict(observation(CONFIG), noise=draw(policy, 0),
                           warm=WarmStart(guess(), start))
    stats = chunk.stats
    assert stats.computed_steps + stats.reuse_steps == steps - start
    if mode == 'dense':
        assert stats.sparsity == pytest.approx(start / steps)
    else:
        # fora @ 0.5 computes every other step; the first step that runs computes.
        assert stats.sparsity > 0.5
    assert not stats.decisions[:start].eq(0).any()  # nothing computed before the start


def test_a_late_start_stays_close_to_the_guess_and_an_early_one_does_not():
    policy = make_policy()
    obs = observation(CONFIG)
    steps = policy.scheduler.num_inference_steps
    target = guess()
    errors = [np.abs(policy.predict(obs, noise=draw(policy, 2),
                                    warm=WarmStart(target, start)).actions - target).mean()
              for start in (0, steps // 2, steps - 1)]
    # The later the start, the less noise is added to the guess and the less is redrawn
    # (a random model: at step 0 the guess is nearly forgotten).
    assert errors[2] < 0.5 * errors[1] and errors[1] < 0.8 * errors[0], errors


def test_bad_warm_starts_are_refused_by_name():
    policy = make_policy()
    obs = observation(CONFIG)
    steps = policy.scheduler.num_inference_steps
    with pytest.raises(ValueError, match=r'warm.actions must have shape'):
        policy.predict(obs, warm=WarmStart(guess()[:3], 1))
    with pytest.raises(ValueError, match=rf'warm.start must be an int in \[0, {steps - 1}\]'):
        policy.predict(obs, warm=WarmStart(guess(), steps))
    with pytest.raises(ValueError, match='pass prefix or warm, not both'):
        policy.predict(obs, warm=WarmStart(guess(), 1), prefix=ActionPrefix(guess()[:2]))
    with pytest.raises(TypeError, match='warm must be a WarmStart'):
        policy.predict(obs, warm=guess())
    with pytest.raises(ValueError, match=r'warm-start fraction must be in \[0, 1\)'):
        warm_start_step(10, 1.0)
    with pytest.raises(ValueError, match=r'warm_start must be a fraction in \[0, 1\)'):
        StreamSettings('warm', warm_start=-0.1)


def test_warm_rows_shift_the_plan_and_hold_its_last_action():
    stream = ChunkStream(2, 4, StreamSettings('warm'))
    assert stream.warm_rows(1, 6) is None  # nothing planned yet
    chunk = np.arange(6, dtype=np.float32)[:, None] * np.ones((1, 2), np.float32)
    stream.add(chunk, 1)  # rows 0..5 plan steps 0..5; steps 1..4 executable
    stream.commit(1)
    stream.commit(2)
    rows = stream.warm_rows(2, 6)  # a call at step 2: rows plan steps 1..6
    # Step 1 executed (row 1 of the chunk), steps 2..4 planned, steps 5 and 6 past the plan.
    assert rows[:, 0].tolist() == [1.0, 2.0, 3.0, 4.0, 4.0, 4.0]
    assert ChunkStream(2, 4, StreamSettings('prefix')).warm_rows(2, 6) is None
