"""
Pruner distillation CLI.

``train-pruner --policy DIR --dataset D --target-sparsity 0.93 --trajectories 100 --out DIR``

The policy is frozen. Observations come from whole trajectories taken in order, one policy
call every ``n_action_steps`` steps, so reuse-rollout is trained the way it is used
(consecutive calls). The first call of a trajectory is run dense here to fill the rollout; at
inference it runs the pruner's decisions and computes only the reuse-rollout entries it cannot
read, so a pruner that reuses across calls sees slightly different rollout values at its second
call than in training (one that does not, like the shipped one, is unaffected). The reference
is the dense policy's chunk for the same fixed noise; gates are straight-through over the 4
decisions; loss = L1(sparse, dense) + weight * |achieved sparsity - target|. The pruner is saved
next to the policy with its record: target, achieved sparsity and held-out action error,
compared with the static 'fixed' schedule at the same sparsity.
"""

import argparse
import json
import logging
from pathlib import Path
import random
import shutil
import sys
import time

import numpy as np
import torch
from tqdm import tqdm

from .replay_buffer import ReplayBuffer
from ..policy.checkpoint import load_policy, read_json
from ..policy.model import ACTION, DiffusionPolicy
from ..policy.observation import OBS_IMAGES, OBS_STATE
from ..policy.sampler import condition_all_steps, sample_dense, SamplingNoise
from ..policy.scheduler import NoiseScheduler
from ..sparsity.cache import RolloutCache
from ..sparsity.decisions import Decision, make_executable, sparsity_of
from ..sparsity.gated_sampler import sample_gated, straight_through
from ..sparsity.pruner import calibrate_compute_bias, decide, Pruner, PrunerConfig, save_pruner
from ..sparsity.sampler import sample_sparse
from ..sparsity.schedules import fixed_schedule, static_schedule, step_schedule

logger = logging.getLogger(__name__)


def trajectory_calls(buffer: ReplayBuffer, episode: int, image_keys: dict[str, str],
                     state_key: str, n_obs_steps: int, stride: int) -> list[dict]:
    """Observations of consecutive policy calls along one recorded episode."""
    data = buffer.get_episode(episode)
    length = len(data[state_key])
    calls = []
    for t in range(0, length, stride):
        steps = np.clip(np.arange(t - n_obs_steps + 1, t + 1), 0, length - 1)
        calls.append({OBS_IMAGES: {cam: data[key][steps] for cam, key in image_keys.items()},
                      OBS_STATE: data[state_key][steps].astype(np.float32)})
    return calls


def split_trajectories(policy_dir: Path, model: DiffusionPolicy, buffer: ReplayBuffer,
                       trajectories: int, held_out: int, max_calls: int | None
                       ) -> tuple[list[list[dict]], list[list[dict]], list[int], list[int]]:
    """
    Call observations of the first ``trajectories`` training and ``held_out`` held-out episodes.

    The episodes are the policy's own split (``config.json`` training record); where it holds
    fewer validation episodes than ``held_out``, the last training episodes are held out too.
    Returns (train calls, held-out calls, train episodes, held-out episodes).
    """
    config = model.config
    meta = read_json(policy_dir / 'config.json').get('training', {})
    image_keys = meta.get('training', {}).get('image_keys', {'front': 'img'})
    state_key = meta.get('training', {}).get('state_key', 'state')
    train_eps = [e for e in meta.get('train_episodes', range(buffer.n_episodes))
                 if e < buffer.n_episodes]
    val_eps = [e for e in meta.get('val_episodes', []) if e < buffer.n_episodes]
    if len(val_eps) < held_out:
        val_eps = val_eps + train_eps[len(train_eps) - (held_out - len(val_eps)):]
        train_eps = [e for e in train_eps if e not in val_eps]
    train_eps, val_eps = train_eps[:trajectories], val_eps[:held_out]

    def load(eps: list[int]) -> list[list[dict]]:
        trajs = [trajectory_calls(buffer, e, image_keys, state_key, config.n_obs_steps,
                                  config.n_action_steps) for e in eps]
        return [t[:max_calls] if max_calls else t for t in trajs]

    return load(train_eps), load(val_eps), train_eps, val_eps


class CallContext:
    """Frozen-policy quantities of one call: memory, fixed noise, dense reference."""

    def __init__(self, model: DiffusionPolicy, scheduler: NoiseScheduler, observation: dict,
                 seed: int, with_reference: bool = True):
        config = model.config
        device = next(model.parameters()).device
        with torch.no_grad():
            images, state = model.observation_to_tensors(observation[OBS_IMAGES],
                                                         observation[OBS_STATE], device)
            self.tokens = model.encode_observation(images, state)  # (1, n_obs, F)
            self.memory = condition_all_steps(model, self.tokens, scheduler)
            if not with_reference:
                return
            self.noise = SamplingNoise.draw(scheduler, (1, config.horizon, config.action_dim),
                                            device, torch.Generator().manual_seed(seed))
            dense = sample_dense(model, self.memory, scheduler, self.noise)
            self.reference = model.normalizer.normalize(ACTION, dense)  # (1, T, Da)


def call_contexts(model: DiffusionPolicy, scheduler: NoiseScheduler,
                  trajectories: list[list[dict]], seed: int) -> list[list[CallContext]]:
    """Build the frozen-policy quantities (memory, noise, dense reference) of every call."""
    return [[CallContext(model, scheduler, observation, seed + 1000 * j + c)
             for c, observation in enumerate(calls)] for j, calls in enumerate(trajectories)]


def evaluate_contexts(model: DiffusionPolicy, scheduler: NoiseScheduler,
                      contexts: list[list[CallContext]], decisions_for) -> tuple[float, float]:
    """Mean L1 (normalized actions) vs dense over all calls; mean sparsity of sparse calls."""
    errors, sparsities = [], []
    for calls in contexts:
        cache = RolloutCache()
        for index, ctx in enumerate(calls):
            ready = cache.prepare(scheduler.num_inference_steps, model.config.n_branches,
                                  (1, model.config.horizon, model.config.n_emb),
                                  ctx.memory.dtype, ctx.memory.device)
            executed = make_executable(decisions_for(ctx), True if ready else cache.filled)
            with torch.no_grad():
                out = sample_sparse(model, ctx.memory, scheduler, ctx.noise, cache,
                                    lambda: executed)
            errors.append(float((model.normalizer.normalize(ACTION, out)
                                 - ctx.reference).abs().mean()))
            if index > 0:  # the first call of a trajectory cannot reuse across calls
                sparsities.append(sparsity_of(executed))
    return float(np.mean(errors)), float(np.mean(sparsities))


def train_pruner(policy_dir: Path, dataset: Path, target: float, trajectories: int,
                 out: Path, epochs: int = 1, lr: float = 1e-3, sparsity_weight: float = 1.0,
                 held_out: int = 4, seed: int = 0, max_calls: int | None = None,
                 d_model: int | None = None, init_schedule: str = 'none',
                 prior_strength: float = 2.0, init_steps: list[int] | None = None,
                 decisions: tuple[str, ...] | None = None) -> dict:
    """
    Distill a pruner for the frozen policy in ``policy_dir``; returns its record.

    ``init_schedule`` 'fora' or 'fixed' starts the pruner's prior at that static schedule;
    ``init_steps`` (with ``init_schedule`` 'steps') at :func:`step_schedule` of those steps,
    e.g. the ``compute_steps`` found by ``search-schedule``. ``decisions`` restricts the
    pruner to those Decision names (default: all four).
    """
    if not 0.0 < target < 1.0:
        raise ValueError(f'--target-sparsity must be in (0, 1), got {target}')
    torch.manual_seed(seed)
    random.seed(seed)
    model = load_policy(policy_dir).requires_grad_(False)
    config = model.config
    scheduler = NoiseScheduler(config)
    buffer = ReplayBuffer.open(dataset, mode='r')
    train_trajs, val_trajs, train_eps, val_eps = split_trajectories(
        policy_dir, model, buffer, trajectories, held_out, max_calls)
    if not train_eps:
        raise ValueError(f'dataset {dataset} has no episodes left for pruner training')
    k, nb = scheduler.num_inference_steps, config.n_branches
    if init_schedule not in ('none', 'fora', 'fixed', 'steps'):
        raise ValueError('--init-schedule must be none, fora, fixed or steps, got '
                         f'{init_schedule!r}')
    if (init_schedule == 'steps') != (init_steps is not None):
        raise ValueError('--init-steps FILE and --init-schedule steps go together')
    initial = (None if init_schedule == 'none' else step_schedule(k, nb, init_steps)
               if init_schedule == 'steps' else static_schedule(init_schedule, k, nb, target))
    sizes = {'d_model': d_model} if d_model else {}
    if decisions is not None:
        sizes['decisions'] = tuple(decisions)
    pruner = Pruner(PrunerConfig(n_branches=nb, cond_dim=config.n_emb,
                                 n_steps=0 if init_schedule == 'none' else k, **sizes))
    if init_schedule == 'none':
        with torch.no_grad():
            # Start from "reuse the previous step everywhere" (sparsity ~ 1 - 1/K): the error
            # term then buys back compute where it matters. Starting from the dense side (the
            # inference default) left the sparsity term too weak to reach ~0.93 in a few
            # hundred calls.
            pruner.head.bias.copy_(torch.tensor([0.0, -1.0, 1.0, -1.0]))
    else:
        # Start exactly at a static schedule whose closed-loop quality is known.
        pruner.init_prior_from(initial, strength=prior_strength)
    optimizer = torch.optim.AdamW(pruner.parameters(), lr=lr, weight_decay=1e-4)
    shape = (1, config.horizon, config.n_emb)
    total_calls = epochs * sum(len(t) for t in train_trajs)
    progress = tqdm(total=total_calls, desc='train-pruner', dynamic_ncols=True, mininterval=5.0)
    history = []
    started = time.time()
    for epoch in range(epochs):
        order = list(range(len(train_trajs)))
        random.shuffle(order)
        for j in order:
            rollout = None
            for c, observation in enumerate(train_trajs[j]):
                ctx = CallContext(model, scheduler, observation, seed + 1000 * j + c)
                if rollout is None:  # first call of a trajectory: dense, fills the rollout
                    gates = torch.zeros(k, nb, 4)
                    gates[..., int(Decision.COMPUTE)] = 1.0
                    with torch.no_grad():
                        _, rollout = sample_gated(model, ctx.memory, scheduler, ctx.noise,
                                                  gates, torch.zeros(k, nb, *shape))
                    progress.update(1)
                    continue
                logits = pruner(ctx.memory)[:, 0]  # (K, nb, 4)
                gates = straight_through(logits)
                step0 = torch.zeros(1, nb, 4)
                step0[..., int(Decision.COMPUTE)] = 1.0
                gates = torch.cat([step0, gates[1:]], dim=0)
                x, rollout = sample_gated(model, ctx.memory, scheduler, ctx.noise, gates,
                                          rollout)
                achieved = 1.0 - gates[..., int(Decision.COMPUTE)].mean()
                error = (x - ctx.reference).abs().mean()
                loss = error + sparsity_weight * (achieved - target).abs()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                rollout = rollout.detach()
                history.append({'error': float(error.detach()),
                                'sparsity': float(achieved.detach())})
                progress.update(1)
                recent = history[-20:]
                progress.set_postfix(err=f"{np.mean([h['error'] for h in recent]):.4f}",
                                     sparsity=f"{np.mean([h['sparsity'] for h in recent]):.3f}")
    progress.close()
    pruner.eval()
    # Calibrate the COMPUTE bias on the training calls so argmax decisions meet the target.
    with torch.no_grad():
        calib_logits = [pruner(CallContext(model, scheduler, obs, seed, False).memory)
                        for calls in train_trajs for obs in calls[1:]]
    bias = calibrate_compute_bias(calib_logits, target) if calib_logits else 0.0
    pruner.compute_bias.fill_(bias)

    def pruner_decisions(ctx: CallContext) -> torch.Tensor:
        with torch.no_grad():
            return decide(pruner(ctx.memory))

    # The held-out calls' memory, noise and dense reference, computed once for every schedule.
    val_contexts = call_contexts(model, scheduler, val_trajs, seed)

    def evaluate(decisions_for) -> tuple[float, float]:
        return evaluate_contexts(model, scheduler, val_contexts, decisions_for)

    err_pruner, sp_pruner = evaluate(pruner_decisions)
    static = fixed_schedule(k, nb, min(max(sp_pruner, 0.0), 0.99))
    err_fixed, sp_fixed = evaluate(lambda ctx: static)
    fora = static_schedule('fora', k, nb, min(max(sp_pruner, 0.0), 0.99))
    err_fora, sp_fora = evaluate(lambda ctx: fora)
    err_init, sp_init = (evaluate(lambda ctx: initial)
                         if initial is not None else (None, None))
    record = {'target_sparsity': target, 'achieved_sparsity': sp_pruner,
              'compute_bias': bias,
              'held_out_action_l1': err_pruner, 'fixed_schedule_sparsity': sp_fixed,
              'fixed_schedule_action_l1': err_fixed, 'fora_schedule_sparsity': sp_fora,
              'fora_schedule_action_l1': err_fora, 'train_trajectories': train_eps,
              'held_out_trajectories': val_eps, 'epochs': epochs, 'lr': lr,
              'sparsity_weight': sparsity_weight, 'train_calls': len(history),
              'init_schedule': init_schedule, 'init_steps': init_steps,
              'decisions': list(pruner.config.decisions),
              'init_schedule_sparsity': sp_init, 'init_schedule_action_l1': err_init,
              'prior_strength': prior_strength if init_schedule != 'none' else None,
              'elapsed_s': round(time.time() - started, 1),
              'final_train_error': float(np.mean([h['error'] for h in history[-50:]]))
              if history else None}
    out = Path(out)
    if out.resolve() != Path(policy_dir).resolve():
        out.mkdir(parents=True, exist_ok=True)
        for name in ('config.json', 'model.safetensors', 'stats.safetensors'):
            shutil.copy2(Path(policy_dir) / name, out / name)
    save_pruner(pruner, out, record)
    print('\n| pruner | value |\n|---|---:|')
    for key in ('target_sparsity', 'achieved_sparsity', 'held_out_action_l1',
                'fixed_schedule_sparsity', 'fixed_schedule_action_l1', 'fora_schedule_sparsity',
                'fora_schedule_action_l1', 'init_schedule_sparsity', 'init_schedule_action_l1',
                'elapsed_s'):
        if record[key] is not None:
            print(f'| {key} | {record[key]:.4f} |')
    return record


def read_compute_steps(path: Path) -> list[int]:
    """Read the ``compute_steps`` of a search-schedule record."""
    try:
        steps = json.loads(Path(path).read_text())['compute_steps']
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f'{path}: not a search-schedule record with compute_steps '
                         f'({error})') from error
    if not isinstance(steps, list) or not all(isinstance(s, int) for s in steps):
        raise ValueError(f'{path}: compute_steps must be a list of ints, got {steps!r}')
    return steps


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    parser = argparse.ArgumentParser(description='Distill a test-time-sparsity pruner.')
    parser.add_argument('--policy', required=True, type=Path, help='trained policy folder')
    parser.add_argument('--dataset', required=True, type=Path, help='replay-buffer zarr store')
    parser.add_argument('--target-sparsity', type=float, default=0.93)
    parser.add_argument('--trajectories', type=int, default=100,
                        help='training trajectories taken in order')
    parser.add_argument('--held-out', type=int, default=4, help='held-out trajectories')
    parser.add_argument('--epochs', type=int, default=1)
    parser.add_argument('--lr', type=float, default=1e-3)
    parser.add_argument('--sparsity-weight', type=float, default=1.0)
    parser.add_argument('--max-calls', type=int, default=None,
                        help='calls per trajectory (default: the whole trajectory)')
    parser.add_argument('--d-model', type=int, default=None, help='pruner width')
    parser.add_argument('--init-schedule', default='none',
                        choices=['none', 'fora', 'fixed', 'steps'],
                        help='warm-start the pruner on this static schedule at the target '
                        '(steps: the computed steps of --init-steps)')
    parser.add_argument('--init-steps', type=Path, default=None,
                        help='search-schedule record whose compute_steps start the pruner '
                        '(implies --init-schedule steps)')
    parser.add_argument('--prior-strength', type=float, default=2.0,
                        help='logit margin of the initial schedule (smaller: easier to move)')
    parser.add_argument('--decisions', default=None,
                        help='comma list of the decisions the pruner may take, e.g. '
                        'compute,reuse_step (default: compute,reuse_block,reuse_step,'
                        'reuse_rollout)')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--out', required=True, type=Path,
                        help='folder to write the pruner to (the policy folder itself is fine)')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    torch.set_num_threads(max(1, torch.get_num_threads()))
    try:
        init_steps = None
        if args.init_steps is not None:
            init_steps = read_compute_steps(args.init_steps)
            if args.init_schedule not in ('none', 'steps'):
                raise ValueError(f'--init-steps conflicts with --init-schedule '
                                 f'{args.init_schedule}')
            args.init_schedule = 'steps'
        train_pruner(args.policy, args.dataset, args.target_sparsity, args.trajectories,
                     args.out, epochs=args.epochs, lr=args.lr,
                     sparsity_weight=args.sparsity_weight, held_out=args.held_out,
                     seed=args.seed, max_calls=args.max_calls, d_model=args.d_model,
                     init_schedule=args.init_schedule, prior_strength=args.prior_strength,
                     init_steps=init_steps,
                     decisions=tuple(d.strip() for d in args.decisions.split(','))
                     if args.decisions else None)
    except (ValueError, FileNotFoundError) as error:
        print(f'train-pruner: error: {error}', file=sys.stderr)
        return 2
    return 0


if __name__ == '__main__':
    sys.exit(main())
