"""Static (observation-independent) baselines, run by the same sparse sampler as the pruner."""

import math

import torch

from .decisions import Decision, DECISION_DTYPE, dense_decisions

STATIC_SCHEDULES = ('dense', 'fora', 'fixed')


def fora_schedule(steps: int, n_branches: int, target_sparsity: float) -> torch.Tensor:
    """
    FORA-style: recompute every branch every N steps, reuse the previous step otherwise.

    N = round(1 / (1 - s)), so the achieved sparsity is close to, not exactly, the target.
    """
    _check_target(target_sparsity)
    interval = max(1, round(1.0 / (1.0 - target_sparsity)))
    return step_schedule(steps, n_branches, range(0, steps, interval))


def step_schedule(steps: int, n_branches: int, compute_steps) -> torch.Tensor:
    """
    Every branch computed at ``compute_steps`` (which must hold step 0), reused elsewhere.

    FORA's schedule with free spacing: each reused step takes the previous step's value of the
    branch. :mod:`..training.schedule_search` chooses the steps.
    """
    chosen = sorted({int(k) for k in compute_steps})
    if not chosen or chosen[0] != 0 or chosen[-1] >= steps:
        raise ValueError(f'compute_steps must include step 0 and lie in [0, {steps - 1}], '
                         f'got {chosen}')
    decisions = torch.full((steps, n_branches), int(Decision.REUSE_STEP), dtype=DECISION_DTYPE)
    decisions[chosen] = int(Decision.COMPUTE)
    return decisions


def fixed_schedule(steps: int, n_branches: int, target_sparsity: float) -> torch.Tensor:
    """
    Staggered refresh at exactly round((1 - s) * K * nb) computed entries.

    Step 0 is computed; the remaining budget is shared evenly between branches and each
    branch's refreshes are spread evenly over steps 1..K-1 with a per-branch phase, so work is
    level across steps. Everything else reuses the previous step.
    """
    _check_target(target_sparsity)
    decisions = torch.full((steps, n_branches), int(Decision.REUSE_STEP), dtype=DECISION_DTYPE)
    decisions[0] = int(Decision.COMPUTE)
    total = min(steps * n_branches, max(n_branches, round((1.0 - target_sparsity)
                                                          * steps * n_branches)))
    remaining = total - n_branches
    span = steps - 1
    golden = (math.sqrt(5.0) - 1.0) / 2.0
    for branch in range(n_branches):
        count = remaining // n_branches + (1 if branch < remaining % n_branches else 0)
        phase = (branch * golden) % 1.0
        for j in range(count):
            decisions[1 + int((j + phase) * span / count), branch] = int(Decision.COMPUTE)
    return decisions


def rollout_schedule(steps: int, n_branches: int, computed: int, call: int) -> torch.Tensor:
    """
    Cross-call reuse: ``computed`` steps per call, the others taken from earlier calls.

    Step 0 is computed; of steps 1..K-1, ``computed - 1`` are computed, chosen round-robin by
    ``call`` (the call index since the last reset), and every other step reuses the branch
    values the rollout cache holds for it (REUSE_ROLLOUT: the last call that computed that
    step, shifted along the action tokens by the streaming caller). Each step is refreshed every
    ``ceil((K - 1) / (computed - 1))`` calls. The first call after a reset computes everything
    (``make_executable``: the cache holds nothing).
    """
    if not 1 <= computed <= steps:
        raise ValueError(f'computed steps per call must be in [1, {steps}], got {computed}')
    if isinstance(call, bool) or not isinstance(call, int) or call < 0:
        raise ValueError(f'call must be an int >= 0, got {call!r}')
    decisions = torch.full((steps, n_branches), int(Decision.REUSE_ROLLOUT),
                           dtype=DECISION_DTYPE)
    decisions[0] = int(Decision.COMPUTE)
    others, fresh = steps - 1, computed - 1
    for j in range(fresh):
        decisions[1 + (call * fresh + j) % others] = int(Decision.COMPUTE)
    return decisions


def static_schedule(name: str, steps: int, n_branches: int,
                    target_sparsity: float | None) -> torch.Tensor:
    """Build a named static schedule (see STATIC_SCHEDULES)."""
    if name == 'dense':
        return dense_decisions(steps, n_branches)
    if target_sparsity is None:
        raise ValueError(f'static schedule {name!r} needs a target_sparsity, got None')
    if name == 'fora':
        return fora_schedule(steps, n_branches, target_sparsity)
    if name == 'fixed':
        return fixed_schedule(steps, n_branches, target_sparsity)
    raise ValueError(f'static schedule must be one of {list(STATIC_SCHEDULES)}, got {name!r}')


def ddim_steps_for(steps: int, target_sparsity: float) -> int:
    """Denoising steps of the fewer-step DDIM baseline that does (1 - s) of the work."""
    _check_target(target_sparsity)
    return max(1, round(steps * (1.0 - target_sparsity)))


def _check_target(target_sparsity: float) -> None:
    if not 0.0 <= target_sparsity < 1.0:
        raise ValueError(f'target_sparsity must be in [0, 1), got {target_sparsity}')
