"""DDPM / DDIM schedulers: timesteps, exact x0 recovery, marginals of the reverse step."""

import math

import pytest
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.scheduler import make_betas, NoiseScheduler
import torch


def config(**overrides) -> PolicyConfig:
    return PolicyConfig(**{'num_train_timesteps': 100, 'num_inference_steps': 100, **overrides})


def alpha_bar(scheduler: NoiseScheduler, t: int) -> float:
    return float(scheduler.alphas_cumprod[t])


def test_timesteps():
    assert NoiseScheduler(config(num_train_timesteps=10, num_inference_steps=10)) \
        .timesteps.tolist() == list(range(9, -1, -1))
    assert NoiseScheduler(config(), 10).timesteps.tolist() == list(range(90, -1, -10))
    assert NoiseScheduler(config(), 5, kind='ddim').timesteps.tolist() == [80, 60, 40, 20, 0]
    with pytest.raises(ValueError, match='num_inference_steps must be in \\[1, 100\\]'):
        NoiseScheduler(config(), 101)
    with pytest.raises(ValueError, match="got 'euler'"):
        NoiseScheduler(config(), kind='euler')


@pytest.mark.parametrize('schedule, n', [('squaredcos_cap_v2', 100), ('linear', 1000)])
def test_betas(schedule, n):
    betas = make_betas(n, schedule)
    assert betas.dtype == torch.float64 and betas.shape == (n,)
    assert (betas > 0).all() and (betas <= 0.999).all()
    assert (betas[1:] >= betas[:-1]).all()
    cumprod = torch.cumprod(1 - betas, 0)
    assert cumprod[0] > 0.99 and cumprod[-1] < 0.05
    with pytest.raises(ValueError):
        make_betas(100, 'cosine')


def test_add_noise_is_the_forward_marginal():
    scheduler = NoiseScheduler(config())
    x0 = torch.full((4, 3), 0.5)
    noise = torch.randn(4, 3)
    t = torch.tensor([0, 10, 50, 99])
    out = scheduler.add_noise(x0, noise, t)
    for i, ti in enumerate(t.tolist()):
        a = alpha_bar(scheduler, ti)
        torch.testing.assert_close(out[i], math.sqrt(a) * x0[i] + math.sqrt(1 - a) * noise[i])


@pytest.mark.parametrize('kind, steps', [('ddpm', 100), ('ddpm', 10), ('ddim', 10), ('ddim', 3)])
def test_last_step_with_true_noise_recovers_x0(kind, steps):
    scheduler = NoiseScheduler(config(), steps, kind=kind)
    gen = torch.Generator().manual_seed(0)
    x0 = torch.rand((2, 16, 7), generator=gen) * 1.8 - 0.9
    eps = torch.randn((2, 16, 7), generator=gen)
    k = steps - 1
    x = scheduler.add_noise(x0, eps, scheduler.timesteps[k].repeat(2))
    out = scheduler.step(k, eps, x, None)  # no noise needed at the last step
    torch.testing.assert_close(out, x0, rtol=0, atol=1e-5)


@pytest.mark.parametrize('steps', [100, 10, 4])
def test_ddim_step_with_true_noise_lands_on_the_next_marginal(steps):
    scheduler = NoiseScheduler(config(), steps, kind='ddim')
    gen = torch.Generator().manual_seed(1)
    x0 = torch.rand((1, 16, 7), generator=gen) * 1.8 - 0.9
    eps = torch.randn((1, 16, 7), generator=gen)
    for k in range(steps - 1):
        x = scheduler.add_noise(x0, eps, scheduler.timesteps[k:k + 1])
        expected = scheduler.add_noise(x0, eps, scheduler.timesteps[k + 1:k + 2])
        torch.testing.assert_close(scheduler.step(k, eps, x, None), expected,
                                   rtol=0, atol=2e-4)


@pytest.mark.parametrize('steps, k', [(100, 0), (100, 50), (100, 98), (10, 3)])
def test_ddpm_step_has_the_right_marginal(steps, k):
    # x_t ~ q(x_t | x0) and the true noise as eps: x_{t'} must be ~ q(x_{t'} | x0).
    scheduler = NoiseScheduler(config(), steps)
    gen = torch.Generator().manual_seed(k)
    n = 400_000
    x0 = torch.full((n,), 0.3)
    eps = torch.randn(n, generator=gen)
    x = scheduler.add_noise(x0, eps, scheduler.timesteps[k].repeat(n))
    out = scheduler.step(k, eps, x, torch.randn(n, generator=gen))
    a_prev = alpha_bar(scheduler, int(scheduler.timesteps[k + 1]))
    assert float(out.mean()) == pytest.approx(math.sqrt(a_prev) * 0.3, abs=5e-3)
    assert float(out.var()) == pytest.approx(1 - a_prev, rel=1e-2, abs=1e-4)


def test_oracle_denoiser_reaches_x0_through_the_whole_chain():
    for kind in ('ddpm', 'ddim'):
        scheduler = NoiseScheduler(config(), 20, kind=kind)
        gen = torch.Generator().manual_seed(2)
        x0 = torch.rand((1, 16, 7), generator=gen) * 1.6 - 0.8
        x = torch.randn((1, 16, 7), generator=gen)
        for k in range(20):
            a = alpha_bar(scheduler, int(scheduler.timesteps[k]))
            eps = (x - math.sqrt(a) * x0) / math.sqrt(1 - a)
            x = scheduler.step(k, eps, x, torch.randn((1, 16, 7), generator=gen))
        torch.testing.assert_close(x, x0, rtol=0, atol=1e-4)


def test_clip_and_noise_requirements():
    scheduler = NoiseScheduler(config(), 10)
    x = torch.full((1, 4, 2), 5.0)
    last = scheduler.step(9, torch.zeros_like(x), x, None)
    assert float(last.abs().max()) <= 1.0  # predicted x0 is clipped
    no_clip = NoiseScheduler(config(clip_sample=False), 10)
    unclipped = no_clip.step(9, torch.zeros_like(x), x, None)
    assert float(unclipped.min()) > 4.0
    with pytest.raises(ValueError, match='DDPM step 0 needs noise'):
        scheduler.step(0, torch.zeros_like(x), x, None)
    assert scheduler.needs_noise and not NoiseScheduler(config(), 10, kind='ddim').needs_noise


def test_ddim_steps_with_a_reused_eps_compose_into_one_jump():
    """
    Why the default model samples with DDIM: reusing eps over steps is a consistent jump.

    With eta = 0, m steps that all use the same eps keep x0 fixed, so they equal one DDIM jump
    from the first timestep to the last, which is what 'reuse the previous step' approximates.
    With DDPM each of those steps injects fresh noise that no network call ever sees.
    """
    ddim = NoiseScheduler(config(clip_sample=False), kind='ddim')
    gen = torch.Generator().manual_seed(3)
    x = torch.randn((2, 16, 4), generator=gen)
    eps = torch.randn((2, 16, 4), generator=gen)
    start, m = 20, 14
    a_start = alpha_bar(ddim, int(ddim.timesteps[start]))
    a_end = alpha_bar(ddim, int(ddim.timesteps[start + m]))
    x0 = (x - math.sqrt(1 - a_start) * eps) / math.sqrt(a_start)
    jump = math.sqrt(a_end) * x0 + math.sqrt(1 - a_end) * eps
    out = x
    for k in range(start, start + m):
        out = ddim.step(k, eps, out, None)
    torch.testing.assert_close(out, jump, rtol=1e-4, atol=1e-4)
    ddpm = NoiseScheduler(config(clip_sample=False), kind='ddpm')
    out = x
    for k in range(start, start + m):
        out = ddpm.step(k, eps, out, torch.randn(x.shape, generator=gen))
    assert (out - jump).abs().mean() > 0.1


@pytest.mark.parametrize('kind', ['ddim', 'ddpm'])
def test_explicit_timesteps_equal_the_strided_default_and_step_to_the_next(kind):
    strided = NoiseScheduler(config(), 5, kind=kind)
    explicit = NoiseScheduler(config(), kind=kind, timesteps=[80, 60, 40, 20, 0])
    assert explicit.timesteps.tolist() == strided.timesteps.tolist()
    assert explicit._affine == strided._affine  # the same floats, so the same samples
    # Free spacing: step k of DDIM with the true noise lands on the marginal of the next one.
    searched = NoiseScheduler(config(), kind='ddim', timesteps=[99, 82, 60, 37, 17, 2])
    assert searched.num_inference_steps == 6
    x0 = torch.rand(4, 8, 3) * 1.6 - 0.8
    eps = torch.randn(4, 8, 3)
    ts = searched.timesteps.tolist()
    for k, t in enumerate(ts):
        x = searched.add_noise(x0, eps, torch.full((4,), t))
        out = searched.step(k, eps, x, None)
        if k + 1 < len(ts):
            expected = searched.add_noise(x0, eps, torch.full((4,), ts[k + 1]))
        else:
            expected = x0
        torch.testing.assert_close(out, expected, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize('timesteps, message', [
    ([], 'non-empty list of ints'), ([99, 50.0], 'non-empty list of ints'),
    ([100, 50], r'lie in \[0, 99\], got \[100, 50\]'), ([50, -1], r'lie in \[0, 99\]'),
    ([50, 60], r'strictly decreasing, got \[50, 60\]'), ([50, 50], 'strictly decreasing')])
def test_bad_explicit_timesteps_are_refused_naming_them(timesteps, message):
    with pytest.raises(ValueError, match=message):
        NoiseScheduler(config(), kind='ddim', timesteps=timesteps)
    with pytest.raises(ValueError, match='num_inference_steps 3 disagrees with the 2'):
        NoiseScheduler(config(), 3, kind='ddim', timesteps=[90, 10])
