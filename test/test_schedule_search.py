"""Schedule search pieces (no policy needed): step schedules, budget, coordinate descent."""

import pytest
from sparse_policy_ros.sparsity.decisions import Decision, sparsity_of
from sparse_policy_ros.sparsity.schedules import fora_schedule, step_schedule
from sparse_policy_ros.training.schedule_search import (
    best_start, compute_budget, coordinate_descent, evenly_spaced_steps, interval_steps)
import torch


def test_step_schedule_generalises_fora():
    assert torch.equal(step_schedule(100, 12, range(0, 100, 10)),
                       fora_schedule(100, 12, 0.9))
    decisions = step_schedule(10, 3, [0, 4, 9])
    assert decisions[[0, 4, 9]].eq(int(Decision.COMPUTE)).all()
    assert decisions[[1, 2, 3, 5, 6, 7, 8]].eq(int(Decision.REUSE_STEP)).all()
    assert sparsity_of(decisions) == pytest.approx(0.7)
    for bad in ([4, 9], [0, 10], []):
        with pytest.raises(ValueError, match='compute_steps must include step 0'):
            step_schedule(10, 3, bad)


def test_budget_and_even_spacing():
    assert compute_budget(100, 0.9) == 10 and compute_budget(100, 0.95) == 5
    assert compute_budget(10, 0.99) == 1
    assert evenly_spaced_steps(100, 10) == (0, 11, 22, 33, 44, 55, 66, 77, 88, 99)
    assert evenly_spaced_steps(10, 1) == (0,)
    with pytest.raises(ValueError, match='target_sparsity'):
        compute_budget(100, 1.0)
    with pytest.raises(ValueError, match='count'):
        evenly_spaced_steps(5, 6)
    # FORA's spacing at a budget: every ceil(K / count) steps, all inside the K steps.
    assert interval_steps(100, 2) == (0, 50) and interval_steps(100, 3) == (0, 34, 68)
    assert interval_steps(100, 10) == tuple(range(0, 100, 10)) and interval_steps(7, 7)[-1] == 6
    # FORA's spacing would run past the last step: the widest spacing that fits instead.
    assert interval_steps(10, 6) == (0, 1, 2, 3, 4, 5) and interval_steps(10, 4) == (0, 3, 6, 9)
    with pytest.raises(ValueError, match='count'):
        interval_steps(5, 0)


def test_best_start_picks_the_cheapest():
    starts = {'evenly_spaced': (0, 99), 'interval': (0, 50)}
    name, costs = best_start(lambda steps: abs(steps[1] - 45), starts)
    assert name == 'interval' and costs == {'evenly_spaced': 54, 'interval': 5}


def test_coordinate_descent_finds_the_minimum_and_keeps_the_budget():
    target = (0, 20, 45, 70, 95)
    calls = []

    def cost(steps):
        calls.append(steps)
        return float(sum(abs(a - b) for a, b in zip(steps, target)))

    best, value, history = coordinate_descent(cost, 100, evenly_spaced_steps(100, 5),
                                              moves=(1, -1, 3, -3, 8, -8), max_passes=50)
    assert best == target and value == 0.0
    assert history[0]['steps'] == [0, 25, 50, 74, 99] and history[-1]['cost'] == 0.0
    assert all(len(h['steps']) == 5 and h['steps'][0] == 0 for h in history)
    assert len(calls) == len(set(calls))  # memoised: no schedule scored twice
    with pytest.raises(ValueError, match='start must be distinct steps including 0'):
        coordinate_descent(cost, 100, (1, 20))
    # Unpinned (DDIM timesteps): the first step moves too and can leave 0.
    shifted = (6, 20, 45, 70, 95)

    def cost_shifted(steps):
        return float(sum(abs(a - b) for a, b in zip(steps, shifted)))

    best, value, _ = coordinate_descent(cost_shifted, 100, evenly_spaced_steps(100, 5),
                                        max_passes=50, pin_first=False)
    assert best == shifted and value == 0.0
    pinned, pinned_value, _ = coordinate_descent(cost_shifted, 100, evenly_spaced_steps(100, 5),
                                                 max_passes=50)
    assert pinned[0] == 0 and pinned_value == 6.0
