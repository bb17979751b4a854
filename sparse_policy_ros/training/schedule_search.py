"""
Search where a fixed compute budget goes: reuse schedules and DDIM timesteps.

``search-schedule --policy DIR --dataset D --target-sparsity 0.9 --out DIR/schedule_search.json``
searches the denoising steps at which every branch is computed (a FORA schedule with free
spacing); ``--kind ddim --budget 6`` searches the timesteps of a 6-step DDIM sampler instead,
the equal-cost alternative that sparse sampling has to beat, and ``--save`` adds the result to
the policy folder's ``ddim_timesteps.json`` (mode ``ddim_searched``).

FORA computes every branch every N steps and reuses the previous step's value in between. On
our DDIM policy the reuse error is not spread evenly over the steps, so the same budget placed
differently does better. This CLI keeps the budget fixed, ``round((1 - s) * K)`` computed steps
(step 0 always among them), and, from the better of the evenly spaced set and FORA's spacing
at that budget, moves the other steps one at a time (coordinate descent over
``--moves``) while the mean L1 between the sparse and the dense policy's normalized actions goes
down. The calls come from whole recorded trajectories in order (the first dense), exactly as
``train-pruner`` scores a pruner, and from its *training* episodes: the held-out episodes stay
held out. ``train-pruner --init-steps FILE`` starts a pruner at the result.

The DDIM search moves the same way over the policy's denoising steps, each chosen step now
being a DDIM step at that step's timestep, from the better of the strided and the evenly
spaced set, the first step free to move too; each candidate samples every call with the call's
initial noise, scored against the dense policy.
"""

import argparse
import datetime
import json
import logging
import math
from pathlib import Path
import sys
import time
from typing import Callable, Sequence

import torch

from .replay_buffer import ReplayBuffer
from .train_pruner import call_contexts, CallContext, evaluate_contexts, split_trajectories
from ..policy.checkpoint import load_config, load_policy
from ..policy.ddim_timesteps import save_ddim_timesteps
from ..policy.model import ACTION, DiffusionPolicy
from ..policy.sampler import condition_all_steps, sample_dense, SamplingNoise
from ..policy.scheduler import NoiseScheduler
from ..sparsity.decisions import Decision
from ..sparsity.schedules import fora_schedule, step_schedule

logger = logging.getLogger(__name__)

Steps = tuple[int, ...]


def compute_budget(steps: int, target_sparsity: float) -> int:
    """Return how many computed steps (step 0 included) give ``target_sparsity``."""
    if not 0.0 < target_sparsity < 1.0:
        raise ValueError(f'target_sparsity must be in (0, 1), got {target_sparsity}')
    return max(1, min(steps, round((1.0 - target_sparsity) * steps)))


def evenly_spaced_steps(steps: int, count: int) -> Steps:
    """``count`` steps from 0 to ``steps - 1`` as evenly spaced as integers allow."""
    if not 1 <= count <= steps:
        raise ValueError(f'count must be in [1, {steps}], got {count}')
    if count == 1:
        return (0,)
    return tuple(round(j * (steps - 1) / (count - 1)) for j in range(count))


def interval_steps(steps: int, count: int) -> Steps:
    """
    ``count`` steps every ``ceil(steps / count)`` from 0: FORA's spacing at this budget.

    Where that spacing would run past the last step (6 of 10: 0, 2, .., 10), the widest
    spacing that fits, ``(steps - 1) // (count - 1)``.
    """
    if not 1 <= count <= steps:
        raise ValueError(f'count must be in [1, {steps}], got {count}')
    interval = math.ceil(steps / count)
    if count > 1 and (count - 1) * interval > steps - 1:
        interval = (steps - 1) // (count - 1)
    return tuple(j * interval for j in range(count))


def best_start(cost: Callable[[Steps], float],
               starts: dict[str, Steps]) -> tuple[str, dict[str, float]]:
    """Return the name of the cheapest start and every start's cost."""
    costs = {name: cost(steps) for name, steps in starts.items()}
    return min(costs, key=costs.get), costs


def coordinate_descent(cost: Callable[[Steps], float], steps: int, start: Steps,
                       moves: Sequence[int] = (1, -1, 3, -3, 8, -8),
                       max_passes: int = 3,
                       pin_first: bool = True) -> tuple[Steps, float, list[dict]]:
    """
    Minimise ``cost`` over sets of computed steps of the size of ``start``.

    Each pass tries every move of every step (but step 0 with ``pin_first``, which a reuse
    schedule must compute) in order and keeps a move as soon as it lowers the cost; the search
    ends after a pass without improvement or ``max_passes``. Costs are memoised. Returns (best
    steps, best cost, history of accepted moves).
    """
    if not start or len(set(start)) != len(start) or (pin_first and 0 not in start):
        raise ValueError(f'start must be distinct steps{" including 0" if pin_first else ""}, '
                         f'got {start}')
    memo: dict[Steps, float] = {}

    def scored(candidate: Steps) -> float:
        if candidate not in memo:
            memo[candidate] = cost(candidate)
        return memo[candidate]

    best = tuple(sorted(start))
    best_cost = scored(best)
    history = [{'pass': 0, 'steps': list(best), 'cost': best_cost}]
    for sweep in range(1, max_passes + 1):
        improved = False
        for index in range(1 if pin_first else 0, len(best)):
            for move in moves:
                moved = best[index] + move
                if not (0 < moved if pin_first else 0 <= moved) or moved >= steps \
                        or moved in best:
                    continue
                candidate = tuple(sorted(best[:index] + (moved,) + best[index + 1:]))
                value = scored(candidate)
                if value < best_cost:
                    best, best_cost, improved = candidate, value, True
                    history.append({'pass': sweep, 'steps': list(best), 'cost': best_cost})
                    logger.info('pass %d: %s -> %.5f', sweep, list(best), best_cost)
                    break
        if not improved:
            break
    return best, best_cost, history


def scored_calls(policy_dir: Path, dataset: Path, trajectories: int, max_calls: int | None,
                 seed: int, max_passes: int
                 ) -> tuple[DiffusionPolicy, NoiseScheduler, list[list[CallContext]], list[int]]:
    """
    Check the search settings; load the policy and the calls every candidate is scored on.

    Returns (model, its nominal scheduler, call contexts per training trajectory, episodes).
    """
    if trajectories < 1:
        raise ValueError(f'--trajectories must be >= 1, got {trajectories}')
    if max_calls is not None and max_calls < 1:
        raise ValueError(f'--max-calls must be >= 0 (0: whole trajectories), got {max_calls}')
    if max_passes < 1:
        raise ValueError(f'--max-passes must be >= 1, got {max_passes}')
    model = load_policy(policy_dir).requires_grad_(False)
    scheduler = NoiseScheduler(model.config)
    buffer = ReplayBuffer.open(dataset, mode='r')
    train_trajs, _, train_eps, _ = split_trajectories(policy_dir, model, buffer, trajectories,
                                                      0, max_calls)
    if not train_trajs:
        raise ValueError(f'{dataset} holds none of the training episodes of {policy_dir}')
    return model, scheduler, call_contexts(model, scheduler, train_trajs, seed), train_eps


def search_schedule(policy_dir: Path, dataset: Path, target: float, trajectories: int,
                    max_calls: int | None, seed: int = 0, max_passes: int = 3) -> dict:
    """Search the computed steps for the policy in ``policy_dir``; return the record."""
    started = time.time()
    model, scheduler, contexts, train_eps = scored_calls(policy_dir, dataset, trajectories,
                                                         max_calls, seed, max_passes)
    k, nb = scheduler.num_inference_steps, model.config.n_branches

    def cost(chosen: Steps) -> float:
        decisions = step_schedule(k, nb, chosen)
        return evaluate_contexts(model, scheduler, contexts, lambda ctx: decisions)[0]

    count = compute_budget(k, target)
    fora = fora_schedule(k, nb, target)
    computed = fora[:, 0] == int(Decision.COMPUTE)
    fora_steps = tuple(int(i) for i in torch.nonzero(computed).flatten())
    # Moving one step at a time from the evenly spaced set can stall far from a good schedule
    # (at 2 computed steps, [0, 99] -> [0, 96] with 16x FORA's error), so the search starts
    # from the better of it and FORA's spacing at this budget.
    starts = {'evenly_spaced': evenly_spaced_steps(k, count),
              'interval': interval_steps(k, count)}
    first, start_costs = best_start(cost, starts)
    best, best_cost, history = coordinate_descent(cost, k, starts[first], max_passes=max_passes)
    return {
        'compute_steps': list(best), 'action_l1': best_cost,
        'sparsity': 1.0 - len(best) / k, 'target_sparsity': target, 'denoising_steps': k,
        'evenly_spaced_steps': list(starts['evenly_spaced']),
        'evenly_spaced_action_l1': start_costs['evenly_spaced'],
        'interval_steps': list(starts['interval']),
        'interval_action_l1': start_costs['interval'], 'search_start': first,
        'fora_steps': list(fora_steps),
        'fora_action_l1': (start_costs['interval'] if fora_steps == starts['interval']
                           else cost(fora_steps)),
        'fora_sparsity': 1.0 - len(fora_steps) / k,
        'history': history, 'trajectories': train_eps, 'max_calls': max_calls,
        'calls': sum(len(c) for c in contexts), 'seed': seed,
        'policy': str(policy_dir), 'dataset': str(dataset),
        'date': datetime.datetime.now().isoformat(timespec='seconds'),
        'elapsed_s': round(time.time() - started, 1),
    }


def ddim_action_l1(model: DiffusionPolicy, contexts: list[list[CallContext]],
                   scheduler: NoiseScheduler) -> float:
    """Mean L1 (normalized actions) vs dense of DDIM at ``scheduler``'s timesteps, every call."""
    errors = []
    with torch.no_grad():
        for calls in contexts:
            for ctx in calls:
                memory = condition_all_steps(model, ctx.tokens, scheduler)
                out = sample_dense(model, memory, scheduler,
                                   SamplingNoise(ctx.noise.initial, None))
                errors.append(float((model.normalizer.normalize(ACTION, out)
                                     - ctx.reference).abs().mean()))
    return sum(errors) / len(errors)


def search_ddim(policy_dir: Path, dataset: Path, budget: int, trajectories: int,
                max_calls: int | None, seed: int = 0, max_passes: int = 3) -> dict:
    """Search the timesteps of a ``budget``-step DDIM sampler; return the record."""
    started = time.time()
    k = load_config(policy_dir).num_inference_steps
    if not 1 <= budget <= k:
        raise ValueError(f"--budget must be in [1, {k}] (the policy's denoising steps), "
                         f'got {budget}')
    model, nominal, contexts, train_eps = scored_calls(policy_dir, dataset, trajectories,
                                                       max_calls, seed, max_passes)

    def timesteps_of(chosen: Steps) -> list[int]:
        return [int(nominal.timesteps[i]) for i in chosen]

    def cost(chosen: Steps) -> float:
        scheduler = NoiseScheduler(model.config, kind='ddim', timesteps=timesteps_of(chosen))
        return ddim_action_l1(model, contexts, scheduler)

    uniform = NoiseScheduler(model.config, budget, kind='ddim')
    grid = nominal.timesteps.tolist()
    evenly = evenly_spaced_steps(k, budget)
    starts = {'evenly_spaced': evenly}
    if all(t in grid for t in uniform.timesteps.tolist()):
        starts['uniform'] = tuple(grid.index(t) for t in uniform.timesteps.tolist())
    first, start_costs = best_start(cost, starts)
    # The first step moves too: the strided DDIM starts below the noisiest timestep and did
    # better there on our policy at every budget than a set pinned at it.
    best, best_cost, history = coordinate_descent(cost, k, starts[first], max_passes=max_passes,
                                                  pin_first=False)
    return {
        'kind': 'ddim', 'budget': budget, 'timesteps': timesteps_of(best),
        'denoising_steps_chosen': list(best), 'action_l1': best_cost,
        'sparsity': 1.0 - budget / k, 'denoising_steps': k,
        'uniform_timesteps': uniform.timesteps.tolist(),
        'uniform_action_l1': (start_costs['uniform'] if 'uniform' in start_costs
                              else ddim_action_l1(model, contexts, uniform)),
        'evenly_spaced_timesteps': timesteps_of(evenly),
        'evenly_spaced_action_l1': start_costs['evenly_spaced'], 'search_start': first,
        'history': history, 'trajectories': train_eps, 'max_calls': max_calls,
        'calls': sum(len(c) for c in contexts), 'seed': seed,
        'policy': str(policy_dir), 'dataset': str(dataset),
        'date': datetime.datetime.now().isoformat(timespec='seconds'),
        'elapsed_s': round(time.time() - started, 1),
    }


def print_table(record: dict) -> None:
    """Print the record's comparison as a markdown table."""
    if record.get('kind') == 'ddim':
        print('| DDIM timesteps | steps | action L1 vs dense |\n|---|---:|---:|')
        for name in ('uniform', 'evenly_spaced', ''):
            key = f'{name}_timesteps' if name else 'timesteps'
            label = name.replace('_', ' ') if name else 'searched'
            value = record[f'{name}_action_l1' if name else 'action_l1']
            print(f'| {label} {record[key]} | {record["budget"]} | {value:.5f} |')
        return
    print('| schedule | computed steps | sparsity | action L1 vs dense |\n|---|---|---:|---:|')
    rows = [('fora', record['fora_steps'], record['fora_action_l1']),
            ('evenly spaced', record['evenly_spaced_steps'], record['evenly_spaced_action_l1'])]
    if 'interval_steps' in record:
        rows.append(('interval', record['interval_steps'], record['interval_action_l1']))
    rows.append(('searched', record['compute_steps'], record['action_l1']))
    for name, steps, l1 in rows:
        print(f"| {name} | {steps} | {1.0 - len(steps) / record['denoising_steps']:.3f} "
              f'| {l1:.5f} |')


def main(argv: list[str] | None = None) -> int:
    """Console entry point ``search-schedule``."""
    parser = argparse.ArgumentParser(
        prog='search-schedule',
        description='Search the computed denoising steps of a FORA-style schedule, or the '
                    'timesteps of a fewer-step DDIM sampler (--kind ddim).')
    parser.add_argument('--policy', required=True, type=Path, help='trained policy folder')
    parser.add_argument('--dataset', required=True, type=Path, help='replay-buffer zarr store')
    parser.add_argument('--kind', choices=('reuse', 'ddim'), default='reuse',
                        help='reuse: computed steps of a reuse schedule; ddim: DDIM timesteps')
    parser.add_argument('--target-sparsity', type=float, default=0.9,
                        help='budget as a sparsity (ddim: round((1 - s) * K) steps)')
    parser.add_argument('--budget', type=int, default=None,
                        help='--kind ddim: network evaluations per call (overrides '
                             '--target-sparsity)')
    parser.add_argument('--save', action='store_true',
                        help="--kind ddim: add the result to the policy folder's "
                             'ddim_timesteps.json (sparsity_mode ddim_searched)')
    parser.add_argument('--trajectories', type=int, default=6,
                        help='training trajectories scored (taken in order)')
    parser.add_argument('--max-calls', type=int, default=8,
                        help='calls per trajectory (0: the whole trajectory)')
    parser.add_argument('--max-passes', type=int, default=3)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', type=Path, default=None,
                        help='JSON record to write (required unless --save)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        if args.max_calls < 0:
            raise ValueError(f'--max-calls must be >= 0 (0: whole trajectories), got '
                             f'{args.max_calls}')
        if args.kind == 'reuse' and (args.budget is not None or args.save):
            raise ValueError('--budget and --save go with --kind ddim')
        if args.out is None and not args.save:
            raise ValueError('give --out FILE (the record) or, with --kind ddim, --save')
        if args.kind == 'ddim':
            steps = load_config(args.policy).num_inference_steps
            budget = (args.budget if args.budget is not None
                      else compute_budget(steps, args.target_sparsity))
            record = search_ddim(args.policy, args.dataset, budget, args.trajectories,
                                 args.max_calls or None, args.seed, args.max_passes)
        else:
            record = search_schedule(args.policy, args.dataset, args.target_sparsity,
                                     args.trajectories, args.max_calls or None, args.seed,
                                     args.max_passes)
    except (ValueError, FileNotFoundError) as error:
        print(f'search-schedule: error: {error}', file=sys.stderr)
        return 2
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(record, indent=2))
    if args.save:
        kept = {key: value for key, value in record.items() if key != 'history'}
        path = save_ddim_timesteps(args.policy, record['timesteps'], kept)
        print(f'saved {record["budget"]}-step timesteps to {path}')
    print_table(record)
    return 0


if __name__ == '__main__':
    sys.exit(main())
