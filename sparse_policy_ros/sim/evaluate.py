"""
Closed-loop evaluation CLI: ``eval-policy --model DIR --episodes 100 --modes dense,fixed,pruner``.

Every mode runs the same seeds (disjoint from the recording seeds by default), episodes of the
modes interleaved so that a drifting machine speed affects all alike. Per mode it
reports success with a 95% Wilson interval, the mean action deviation from the dense policy on
the same observations with the same noise, predict latency p50/p99, achieved sparsity and
FLOPs per call (counted with FlopCounterMode on one call per episode), and saves JSON and a
markdown table. The deviation is also given by call index within the episode
(``action_deviation_by_call``; per episode in ``episodes_detail``), which shows whether reuse
errors grow over a rollout, and the share of each decision kind executed
(``decision_fractions``: compute, reuse_block, reuse_step, reuse_rollout).

The environment is ``--env`` (:mod:`.envs`), by default the one named by the model's
``policy.extra.task`` (``arm_push`` when it names none).

Receding horizon: a call every ``n_action_steps`` control steps; the chunk's executable actions
are applied one per step; the observation history is padded with the first frame at reset.
``--executor node`` runs the policy node's own control loop instead (``node_executor.py``).
"""

import argparse
from collections import Counter, deque
from dataclasses import asdict, dataclass, field
import datetime
import json
import math
import os
from pathlib import Path
import platform
import sys

import numpy as np
import torch
from tqdm import tqdm
import yaml

from .disturbance import DisturbanceSpec
from .env import ArmPushEnv
from .envs import env_name_for_task, ENV_NAMES, make_env
from .node_executor import node_joint_limits, NodeExecutor, run_episode_node
from .seams import seam_metrics, seam_summary
from ..control.replanning import NODE_CONSISTENCY, NOISE_MODES, REPLAN_MODES
from ..control.replanning import ReplanSettings
from ..control.streaming import ChunkStream, CONSISTENCY_METHODS, delay_steps, StreamSettings
from ..policy.checkpoint import load_config
from ..policy.observation import OBS_IMAGES, OBS_STATE
from ..policy.prefix import ActionPrefix
from ..policy.sampler import SamplingNoise
from ..policy.warm_start import warm_start_step, WarmStart
from ..sparsity.decisions import Decision, N_DECISIONS
from ..sparsity.sparse_policy import FEWER_STEP_MODES, MODES, SparsePolicy

MODE_ALIASES = {'static': 'fixed'}
DEFAULT_SEED_START = 100_000  # record-demos uses small seeds; evaluation stays far from them


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a binomial proportion."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def stack_history(history: deque) -> dict:
    """Deque of single-step observations -> the policy's (n_obs_steps, ...) observation."""
    cameras = history[0][OBS_IMAGES].keys()
    return {OBS_IMAGES: {c: np.stack([o[OBS_IMAGES][c] for o in history]) for c in cameras},
            OBS_STATE: np.stack([o[OBS_STATE] for o in history]).astype(np.float32)}


@dataclass(frozen=True)
class Timing:
    """
    How the world and the policy share time in an episode.

    ``realtime`` False: the world waits for every call (synchronous, latency costs nothing).
    True: simulated time runs on while the policy computes; a call answering the observation
    of step ``s`` sets actions from step ``s + delay_steps(latency)`` and the plan before
    keeps running meanwhile; the next call starts at the first step after it finished.
    ``latency_ms`` None: the call's measured time; a number: that fixed latency for every call
    (reproducible on any machine). ``replan_every``: control steps between calls (the node's
    ``executed_actions``; 1 = streaming, a call every step). ``cache_shift``: before each call
    move the rollout cache along the action tokens by the control steps since the last call
    (``SparsePolicy.shift_cache``), so that reuse-rollout reads the value computed for the same
    control step. ``noise``: 'fresh' (a new draw per call) or 'shifted' (the last call's
    initial noise moved by those steps, new rows at the end: ``SamplingNoise.continued``).
    """

    replan_every: int
    realtime: bool = False
    latency_ms: float | None = None
    stream: StreamSettings = field(default_factory=StreamSettings)
    cache_shift: bool = False
    noise: str = 'fresh'

    def __post_init__(self):
        if self.noise not in NOISE_MODES:
            raise ValueError(f'noise must be one of {list(NOISE_MODES)}, got {self.noise!r}')

    def delay(self, measured_ms: float, control_period: float) -> int:
        """Control steps a call of ``measured_ms`` misses (0 when synchronous)."""
        if not self.realtime:
            return 0
        latency = measured_ms if self.latency_ms is None else self.latency_ms
        return delay_steps(latency / 1e3, control_period)


def run_episode(env: ArmPushEnv, policy: SparsePolicy, seed: int,
                reference: SparsePolicy | None, count_flops: bool,
                executed_actions: int | None = None, timing: Timing | None = None) -> dict:
    """
    One closed-loop episode; returns success, per-call latencies, sparsity, deviations.

    The plan on the control grid is a :class:`ChunkStream` (the consistency method of
    ``timing.stream``); a step without a plan (a realtime episode's first call still
    computing) holds the current joint targets. Seam metrics of the executed stream:
    ``splice_max`` (largest joint jump between the new chunk and the plan it replaced at a
    take-over), ``velocity_jump_max`` (largest change of joint velocity between consecutive
    steps, rad/s) and ``jerk_rms`` (rad/s^3) of the executed targets.
    """
    config = policy.config
    timing = timing or Timing(executed_actions or config.n_action_steps)
    period = 1.0 / env.control_hz
    policy.reset()
    if reference is not None:
        reference.reset()
    obs = env.reset(seed=seed)
    start_distance = env.object_to_goal()
    history = deque([obs] * config.n_obs_steps, maxlen=config.n_obs_steps)
    stream = ChunkStream(config.n_obs_steps, config.n_action_steps, timing.stream)
    latencies, sparsities, deviations, flops, splices, executed = [], [], [], [], [], []
    changes = []  # observation change per call (PredictStats.observation_change)
    decision_counts = np.zeros(N_DECISIONS, dtype=np.int64)
    done = False
    call = step = held = 0
    free_at = last_call = 0
    expected_delay = timing.delay(0.0, period)  # the fixed latency model's; 0 when measured
    noise = None  # the last call's, for shifted noise
    while not done:
        due = call == 0 or step - last_call >= timing.replan_every - expected_delay
        if step >= free_at and (due or not stream.planned(step)):
            observation = stack_history(history)
            generator = torch.Generator().manual_seed(seed * 1000 + call)
            rows = stream.prefix_rows(step, expected_delay)
            prefix = None if rows is None else ActionPrefix(rows, 0, timing.stream.prefix_until)
            guess = stream.warm_rows(step, config.horizon)
            warm = None if guess is None else WarmStart(guess, warm_start_step(
                policy.scheduler.num_inference_steps, timing.stream.warm_start))
            if call > 0 and timing.cache_shift:
                policy.shift_cache(step - last_call)
            if timing.noise == 'shifted':
                fresh = SamplingNoise.draw(policy.scheduler, (1, config.horizon,
                                                              config.action_dim), 'cpu', generator)
                noise = fresh if noise is None else noise.continued(step - last_call, fresh)
                generator = None
            chunk = policy.predict(observation, generator=generator,
                                   count_flops_=count_flops and call == 1, prefix=prefix,
                                   noise=noise, warm=warm)
            if chunk.stats.observation_change is not None:
                changes.append(chunk.stats.observation_change)
            if chunk.stats.flops is not None:
                flops.append(chunk.stats.flops)
            else:
                latencies.append(chunk.stats.total_ms)
            if call > 0 or policy.mode in ('dense',) + FEWER_STEP_MODES:  # call 0: dense
                sparsities.append(chunk.stats.sparsity)
                executed_kinds = chunk.stats.decisions.flatten().to('cpu', torch.int64).numpy()
                decision_counts += np.bincount(executed_kinds, minlength=N_DECISIONS)
            if reference is not None:
                same = torch.Generator().manual_seed(seed * 1000 + call)
                if noise is None:
                    dense = reference.predict(observation, prefix=prefix, generator=same)
                else:  # the same initial noise; per-step noise (DDPM) of its own steps
                    own = SamplingNoise.draw(reference.scheduler, tuple(noise.initial.shape),
                                             'cpu', same)
                    dense = reference.predict(observation, prefix=prefix,
                                              noise=SamplingNoise(noise.initial, own.per_step))
                deviations.append(float(np.abs(dense.actions - chunk.actions).mean()))
            if chunk.stats.flops is None:
                delay = timing.delay(chunk.stats.total_ms, period)
                if timing.latency_ms is None:
                    expected_delay = delay  # the next call expects what this one took
            else:  # counting FLOPs slows the call: its time is not its latency
                delay = expected_delay
            stream.add(chunk.actions, step, step + delay)
            if stream.last_splice is not None:
                splices.append(stream.last_splice)
            call += 1
            last_call, free_at = step, step + max(delay, 1)
        action = stream.commit(step)
        if action is None:
            action, held = env.joint_targets, held + 1
            stream.record_hold(step, action)  # the next call's prefix starts from it
        executed.append(np.asarray(action, dtype=np.float64))
        obs, _, terminated, truncated, info = env.step(action)
        history.append(obs)
        step += 1
        done = terminated or truncated
    return {'seed': seed, 'success': bool(env.success), 'latencies_ms': latencies,
            'sparsity': sparsities, 'deviation': deviations, 'flops': flops, 'calls': call,
            'decisions': decision_counts.tolist(), 'steps': step, 'held_steps': held,
            'observation_change': changes,
            'object_to_goal_start': start_distance, 'object_to_goal_end': env.object_to_goal(),
            'disturbance': (None if getattr(env, 'disturbance', None) is None
                            else env.disturbance.to_dict()),
            **seam_metrics(np.array(executed), period, splices)}


def node_executor_from_args(args: argparse.Namespace, executed: int | None) -> NodeExecutor:
    """Build the ``--executor node`` settings; ValueError names a flag it cannot honour."""
    if args.consistency not in NODE_CONSISTENCY:
        raise ValueError(f'--executor node takes --consistency {list(NODE_CONSISTENCY)} (the '
                         f'node parameter), got {args.consistency!r}')
    if args.cache_shift != 'auto':
        raise ValueError('--executor node shifts the rollout cache as the node does '
                         '(streaming); leave --cache-shift auto')
    replan = ReplanSettings(args.replan_mode, args.replan_threshold, args.replan_rate,
                            args.consistency, args.prefix_steps, args.prefix_until)
    overrides = {}
    for item in args.node_param:
        name, sep, value = item.partition(':=')
        if not sep or not name:
            raise ValueError(f'--node-param expects NAME:=VALUE, got {item!r}')
        overrides[name] = yaml.safe_load(value)
    return NodeExecutor(replan, executed, args.latency_ms, args.noise, overrides)


def evaluate_modes(model: Path, modes: list[str], episodes: int, seed_start: int,
                   target_sparsity: float | None, device: str, with_deviation: bool,
                   max_steps: int, env_name: str | None = None,
                   executed_actions: int | None = None,
                   int8_linears: bool = False, timing: Timing | None = None,
                   disturbance: DisturbanceSpec | None = None,
                   rollout_refresh: float | None = None,
                   executor: NodeExecutor | None = None) -> list[dict]:
    """
    All episodes of every mode in ``env_name`` (default: the model's task); a summary per mode.

    Episodes are interleaved: episode i of every mode runs before episode i + 1 of any, the
    order of the modes rotating per episode, so that the machine's speed drifting over a long
    run (other jobs, a shared host) affects every mode's latency alike. Each mode has its own
    policy; the seeds and so the results do not depend on the interleaving.
    ``target_sparsity`` applies to every mode but dense. ``executed_actions``: actions executed
    per chunk before the next call (the policy node's ``executed_actions``); None = the model's
    ``n_action_steps``. ``int8_linears``: every mode's branch matmuls in dynamic int8 (CPU);
    the deviation reference stays the float32 dense policy. ``timing``: realtime evaluation
    and the consistency between chunks (:class:`Timing`; None: synchronous, replanning every
    ``executed_actions`` steps, chunks independent). ``disturbance``: the task's disturbance
    variant (``sim/disturbance.py``; drawn per seed, the same in every mode).
    ``rollout_refresh``: ddim_rollout computes every step of a call whose observation moved
    more than this (``SparsePolicy``). ``executor``: run each episode with the policy node's
    control loop (``node_executor.py``; realtime, no deviation reference) instead of one
    action per control step.
    """
    policies, reference, env = {}, None, None
    results: dict[str, list[dict]] = {mode: [] for mode in modes}
    try:
        for mode in modes:
            policies[mode] = SparsePolicy.from_pretrained(
                model, device=device, mode=mode,
                target_sparsity=None if mode == 'dense' else target_sparsity,
                int8_linears=int8_linears,
                rollout_refresh=rollout_refresh if mode == 'ddim_rollout' else None)
        if with_deviation and executor is None and any(mode != 'dense' for mode in modes):
            reference = SparsePolicy.from_pretrained(model, device=device, mode='dense')
        config = policies[modes[0]].config
        if env_name is None:
            env_name = env_name_for_task(config.extra)
        env = make_env(env_name, image_size=config.image_shape[1], max_steps=max_steps,
                       disturbance=disturbance)
        joint_names, limits = ((), None) if executor is None else node_joint_limits(
            env_name, executor.limit_overrides)
        with tqdm(total=episodes * len(modes), desc=f"eval {','.join(modes)}",
                  dynamic_ncols=True) as progress:
            for i in range(episodes):
                for j in range(len(modes)):
                    mode = modes[(i + j) % len(modes)]
                    if executor is not None:
                        results[mode].append(run_episode_node(
                            env, policies[mode], seed_start + i, executor, joint_names,
                            limits))
                    else:
                        results[mode].append(run_episode(
                            env, policies[mode], seed_start + i,
                            None if mode == 'dense' else reference, True, executed_actions,
                            timing))
                    progress.update()
    finally:
        if env is not None:
            env.close()
        for policy in [*policies.values(), reference]:
            if policy is not None:
                policy.close()
    return [summarize_mode(mode, None if mode == 'dense' else target_sparsity, results[mode])
            for mode in modes]


def summarize_mode(mode: str, target_sparsity: float | None, results: list[dict]) -> dict:
    """Success, deviation, latency, sparsity and FLOPs of one mode's episodes."""
    successes = sum(r['success'] for r in results)
    latencies = [x for r in results for x in r['latencies_ms']]
    sparsity = [x for r in results for x in r['sparsity']]
    deviation = [x for r in results for x in r['deviation']]
    flops = [x for r in results for x in r['flops']]
    low, high = wilson_interval(successes, len(results))
    return {
        'mode': mode, 'target_sparsity': target_sparsity, 'episodes': len(results),
        'success_rate': successes / max(1, len(results)), 'success_ci95': [low, high],
        # None: not measured (--no-deviation); dense is its own reference.
        'action_deviation_from_dense': (0.0 if mode == 'dense' else
                                        float(np.mean(deviation)) if deviation else None),
        'latency_p50_ms': float(np.percentile(latencies, 50)) if latencies else None,
        'latency_p99_ms': float(np.percentile(latencies, 99)) if latencies else None,
        'sparsity': float(np.mean(sparsity)) if sparsity else 0.0,
        'flops_per_call': float(np.mean(flops)) if flops else None,
        'calls': int(sum(r['calls'] for r in results)),
        'steps': int(sum(r['steps'] for r in results)),
        'held_steps': int(sum(r['held_steps'] for r in results)),
        'seams': {**seam_summary(results),
                  'splices': int(sum(r['splices'] for r in results))},
        'action_deviation_by_call': deviation_by_call(results),
        'decision_fractions': decision_fractions(results),
        'observation_change': change_percentiles(results),
        'failures': failure_breakdown(results),
        # --executor node: what became of the chunks, and targets the safety filter changed.
        'chunk_outcomes': (dict(sum((Counter(r['chunk_outcomes']) for r in results),
                                    Counter()))
                           if results and 'chunk_outcomes' in results[0] else None),
        'velocity_limited': (int(sum(r['velocity_limited'] for r in results))
                             if results and 'velocity_limited' in results[0] else None),
        'episodes_detail': [{'seed': r['seed'], 'success': r['success'], 'calls': r['calls'],
                             'steps': r['steps'], 'splice_max': r['splice_max'],
                             'velocity_jump_max': r['velocity_jump_max'],
                             'jerk_rms': r['jerk_rms'], 'disturbance': r['disturbance'],
                             'object_to_goal_start': r['object_to_goal_start'],
                             'object_to_goal_end': r['object_to_goal_end'],
                             'deviation': r['deviation']} for r in results],
    }


def change_percentiles(results: list[dict]) -> dict:
    """Percentiles of the calls' observation-token change (ddim_rollout only; else None)."""
    changes = [x for r in results for x in r.get('observation_change', [])]
    return {f'p{q}': (float(np.percentile(changes, q)) if changes else None)
            for q in (50, 90, 95, 99)}


def failure_breakdown(results: list[dict]) -> dict:
    """
    Where the failed episodes left the puck (metres from the goal centre, start and end).

    ``pushed_away``: failures that ended with the puck farther from the goal than at the reset
    (knocked the wrong way); ``median_end_m``: None without failures.
    """
    failed = [r for r in results if not r['success']]
    ends = [r['object_to_goal_end'] for r in failed]
    return {'episodes': len(failed),
            'pushed_away': sum(r['object_to_goal_end'] > r['object_to_goal_start']
                               for r in failed),
            'median_end_m': float(np.median(ends)) if ends else None}


def decision_fractions(results: list[dict]) -> dict[str, float]:
    """Share of each decision kind over all (step, branch) pairs of the counted calls."""
    counts = np.sum([r['decisions'] for r in results], axis=0) if results else None
    total = 0 if counts is None else int(np.sum(counts))
    return {kind.name.lower(): (float(counts[kind]) / total if total else 0.0)
            for kind in Decision}


def deviation_by_call(results: list[dict]) -> list[dict]:
    """
    Mean deviation from dense at each call index of an episode (error accumulation over a rollout).

    Calls an episode did not reach are absent from its mean; ``episodes`` says how many
    contributed. Empty when the deviation was not measured (dense, --no-deviation).
    """
    longest = max((len(r['deviation']) for r in results), default=0)
    rows = []
    for call in range(longest):
        values = [r['deviation'][call] for r in results if len(r['deviation']) > call]
        rows.append({'call': call, 'mean': float(np.mean(values)), 'max': float(np.max(values)),
                     'episodes': len(values)})
    return rows


def decision_table(rows: list[dict]) -> str:
    """Share of each decision kind, one row per mode."""
    kinds = [kind.name.lower() for kind in Decision]
    lines = ['| mode | ' + ' | '.join(kinds) + ' |', '|---|' + '---:|' * len(kinds)]
    for r in rows:
        lines.append(f"| {r['mode']} | "
                     + ' | '.join(f"{r['decision_fractions'][k]:.3f}" for k in kinds) + ' |')
    return '\n'.join(lines)


def deviation_table(rows: list[dict], min_episodes: int = 10) -> str:
    """
    Deviation from dense by call index, one column per sparse mode; '' if none was measured.

    A call index shows where at least ``min_episodes`` episodes (all, if fewer ran) reached it.
    """
    measured = [r for r in rows if r.get('action_deviation_by_call')]
    if not measured:
        return ''
    longest = max(len(r['action_deviation_by_call']) for r in measured)
    lines = ['| call | ' + ' | '.join(f"{r['mode']} mean (max, episodes)" for r in measured)
             + ' |', '|---:|' + '---:|' * len(measured)]
    for call in range(longest):
        cells = []
        for r in measured:
            by_call = r['action_deviation_by_call']
            enough = min(min_episodes, r['episodes'])
            if call < len(by_call) and by_call[call]['episodes'] >= enough:
                entry = by_call[call]
                cells.append(f"{entry['mean']:.4f} ({entry['max']:.4f}, {entry['episodes']})")
            else:
                cells.append('')
        if any(cells):
            lines.append(f'| {call} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def markdown_table(rows: list[dict]) -> str:
    """Summary table, one row per mode."""
    lines = ['| mode | success | 95% CI | dev. from dense | p50 ms | p99 ms | sparsity | '
             'GFLOP/call |', '|---|---:|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        flops = '' if r['flops_per_call'] is None else f"{r['flops_per_call'] / 1e9:.3f}"
        deviation = r['action_deviation_from_dense']
        deviation = 'not measured' if deviation is None else f'{deviation:.4f}'
        lines.append(
            f"| {r['mode']} | {r['success_rate']:.2f} | {r['success_ci95'][0]:.2f}-"
            f"{r['success_ci95'][1]:.2f} | {deviation} | "
            f"{r['latency_p50_ms']:.1f} | {r['latency_p99_ms']:.1f} | {r['sparsity']:.3f} | "
            f'{flops} |')
    return '\n'.join(lines)


def seam_table(rows: list[dict]) -> str:
    """Splice and smoothness metrics per mode (see ``run_episode``)."""
    lines = ['| mode | calls/episode | held steps | splices | max splice jump rad | '
             'velocity jump rad/s, median of episode maxima (max) | median jerk RMS rad/s^3 |',
             '|---|---:|---:|---:|---:|---:|---:|']
    for r in rows:
        m = r['seams']
        lines.append(f"| {r['mode']} | {r['calls'] / max(1, r['episodes']):.1f} | "
                     f"{r['held_steps']} | {m['splices']} | {m['splice_max']:.4f} | "
                     f"{m['velocity_jump_median']:.3f} ({m['velocity_jump_max']:.3f}) | "
                     f"{m['jerk_rms_median']:.1f} |")
    return '\n'.join(lines)


def failure_table(rows: list[dict]) -> str:
    """Failed episodes per mode: how many left the puck farther from the goal than at reset."""
    lines = ['| mode | failed | puck ended farther from the goal | median end distance m |',
             '|---|---:|---:|---:|']
    for r in rows:
        f = r['failures']
        median = '' if f['median_end_m'] is None else f"{f['median_end_m']:.3f}"
        lines.append(f"| {r['mode']} | {f['episodes']} | {f['pushed_away']} | {median} |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    parser = argparse.ArgumentParser(description='Closed-loop evaluation in the MuJoCo task.')
    parser.add_argument('--model', required=True, type=Path)
    parser.add_argument('--episodes', type=int, default=100)
    parser.add_argument('--modes', default='dense,fixed,pruner',
                        help=f'comma list of {list(MODES)} (static = fixed)')
    parser.add_argument('--target-sparsity', type=float, default=0.9,
                        help='for static modes and the pruner (negative: pruner argmax), in '
                        "step-equivalents of the model's dense steps (0.96 of 100: 4 computed, "
                        'also for a pruner on a coarser grid of its own)')
    parser.add_argument('--seed-start', type=int, default=DEFAULT_SEED_START)
    parser.add_argument('--max-steps', type=int, default=150)
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--env', choices=ENV_NAMES, default=None,
                        help="environment (default: the model's policy.extra.task)")
    parser.add_argument('--executed-actions', type=int, default=0,
                        help="actions executed per chunk (receding horizon); 0 = the model's "
                             'n_action_steps (the policy node parameter of the same name)')
    parser.add_argument('--no-deviation', action='store_true',
                        help='skip the dense reference calls (halves the time)')
    parser.add_argument('--int8', action='store_true',
                        help="every mode's transformer branches in dynamic int8 (CPU only; the "
                             'deviation reference stays float32 dense)')
    parser.add_argument('--consistency', choices=CONSISTENCY_METHODS, default='none',
                        help='how a chunk is reconciled with the one executing: none '
                             '(independent), prefix (committed actions inpainted), ensemble '
                             '(temporal ensembling, ACT), warm (start from the previous plan, '
                             're-noised: --warm-start)')
    parser.add_argument('--warm-start', type=float, default=StreamSettings.warm_start,
                        help='warm: fraction of the denoising steps skipped, the previous plan '
                             're-noised to the level of the first step that runs')
    parser.add_argument('--prefix-steps', type=int, default=StreamSettings.prefix_steps,
                        help='prefix: planned actions beyond the inference delay kept')
    parser.add_argument('--prefix-until', type=float, default=StreamSettings.prefix_until,
                        help='prefix: fraction of the denoising steps the prefix is imposed on')
    parser.add_argument('--ensemble-decay', type=float, default=StreamSettings.ensemble_decay,
                        help="ensemble: ACT's m (weights exp(-m i), i = 0 the oldest chunk)")
    parser.add_argument('--realtime', action='store_true',
                        help='simulated time runs while the policy computes (the plan before '
                             'keeps executing; a chunk sets actions from its arrival on)')
    parser.add_argument('--latency-ms', type=float, default=None,
                        help='realtime: a fixed latency per call (reproducible); default: '
                             "each call's measured time")
    parser.add_argument('--disturbance', choices=('none', 'shove', 'goal_jump', 'either'),
                        default='none',
                        help='disturbance variant: the puck is shoved or the goal jumps once, '
                             'at a step drawn from the seed (recorded per episode)')
    parser.add_argument('--cache-shift', choices=('auto', 'on', 'off'), default='auto',
                        help='move the rollout cache by the control steps between calls '
                             '(auto: when replanning before a chunk ends, --executed-actions '
                             "below the model's n_action_steps)")
    parser.add_argument('--noise', choices=NOISE_MODES, default='fresh',
                        help="fresh: a new draw per call; shifted: the last call's initial "
                             'noise moved by the steps since, new rows at the end')
    parser.add_argument('--rollout-refresh', type=float, default=None,
                        help='ddim_rollout: compute every step of a call whose observation '
                             "tokens moved more than this relative change (the report's "
                             'observation_change percentiles)')
    parser.add_argument('--executor', choices=('grid', 'node'), default='grid',
                        help="grid: one action per control step; node: the policy node's "
                             'control loop (planned within the joint limits by its safety '
                             'filter, published when the chunk arrives, the controller '
                             'interpolating at the physics rate): always realtime, no '
                             'deviation reference')
    parser.add_argument('--replan-mode', choices=REPLAN_MODES, default='chunked',
                        help='node executor: the node parameter replan_mode')
    parser.add_argument('--replan-threshold', type=int,
                        default=ReplanSettings.replan_threshold,
                        help='node executor, chunked: call when this many actions are left')
    parser.add_argument('--replan-rate', type=float, default=ReplanSettings.replan_rate,
                        help='node executor, streaming: calls per second (0 = as fast as '
                             'new data and inference allow)')
    parser.add_argument('--node-param', action='append', default=[], metavar='NAME:=VALUE',
                        help='node executor: a joint or limit parameter of the policy node '
                             '(YAML value, repeatable), e.g. max_joint_acceleration:=[16, 16, '
                             '20, 24]')
    parser.add_argument('--out', type=Path, default=Path('results/eval'))
    args = parser.parse_args(argv)
    modes = [MODE_ALIASES.get(m.strip(), m.strip()) for m in args.modes.split(',') if m.strip()]
    bad = [m for m in modes if m not in MODES]
    if bad:
        print(f'eval-policy: error: unknown modes {bad}; expected {list(MODES)}',
              file=sys.stderr)
        return 2
    if args.episodes < 1:
        print(f'eval-policy: error: --episodes must be >= 1, got {args.episodes}',
              file=sys.stderr)
        return 2
    try:
        config = load_config(args.model)
        env_name = args.env or env_name_for_task(config.extra)
    except ValueError as error:
        print(f'eval-policy: error: {error}', file=sys.stderr)
        return 2
    if not 0 <= args.executed_actions <= config.n_action_steps:
        print(f'eval-policy: error: --executed-actions must be in [0, {config.n_action_steps}] '
              f"(the model's n_action_steps), got {args.executed_actions}", file=sys.stderr)
        return 2
    executed = args.executed_actions or None
    try:
        stream = StreamSettings(args.consistency, args.prefix_steps, args.prefix_until,
                                args.ensemble_decay, args.warm_start)
        if args.latency_ms is not None:
            if not (args.realtime or args.executor == 'node'):
                raise ValueError('--latency-ms needs --realtime or --executor node')
            delay_steps(args.latency_ms / 1e3, 1.0)  # refuses a negative or non-finite one
    except ValueError as error:
        print(f'eval-policy: error: {error}', file=sys.stderr)
        return 2
    executor = None
    try:
        if args.executor == 'node':
            executor = node_executor_from_args(args, executed)
        elif (args.replan_mode, args.replan_threshold, args.replan_rate, args.node_param) != (
                'chunked', ReplanSettings.replan_threshold, ReplanSettings.replan_rate, []):
            raise ValueError('--replan-mode, --replan-threshold, --replan-rate and --node-param '
                             'need --executor node')
    except ValueError as error:
        print(f'eval-policy: error: {error}', file=sys.stderr)
        return 2
    replan_every = executed or config.n_action_steps
    cache_shift = (args.cache_shift == 'on' or args.cache_shift == 'auto'
                   and replan_every < config.n_action_steps)
    timing = Timing(replan_every, args.realtime, args.latency_ms, stream, cache_shift, args.noise)
    disturbance = None if args.disturbance == 'none' else DisturbanceSpec(args.disturbance)
    if args.int8 and args.device != 'cpu':
        print(f'eval-policy: error: --int8 needs --device cpu, got {args.device!r}',
              file=sys.stderr)
        return 2
    target = None if args.target_sparsity < 0 else args.target_sparsity
    rows = evaluate_modes(args.model, modes, args.episodes, args.seed_start, target,
                          args.device, not args.no_deviation, args.max_steps, env_name, executed,
                          args.int8, timing, disturbance, args.rollout_refresh, executor)
    table = markdown_table(rows) + '\n\nDecisions executed (calls after the first of each ' \
        'episode; dense: all calls):\n\n' + decision_table(rows) + \
        '\n\nFailed episodes, puck to goal centre (start of episode vs end):\n\n' + \
        failure_table(rows) + '\n\nSeams of the executed joint targets:\n\n' + seam_table(rows)
    by_call = deviation_table(rows)
    if by_call:
        table += ('\n\nMean (max) action deviation from dense by call index within an episode '
                  '(call 0 follows the reset; calls reached by at least 10 episodes or all):\n\n'
                  + by_call)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {'date': datetime.datetime.now().isoformat(timespec='seconds'),
            'machine': f'{platform.node()} {platform.machine()} {platform.processor()}',
            'cpu_count': os.cpu_count(), 'torch_threads': torch.get_num_threads(),
            'torch': torch.__version__,
            'model': str(args.model), 'env': env_name, 'command': ' '.join(sys.argv),
            'executed_actions': executed or config.n_action_steps,
            'realtime': args.realtime or args.executor == 'node', 'latency_ms': args.latency_ms,
            'disturbance': None if disturbance is None else disturbance.to_dict(),
            'consistency': asdict(stream), 'cache_shift': cache_shift, 'noise': args.noise,
            'rollout_refresh': args.rollout_refresh, 'executor': args.executor,
            'node': None if executor is None else {
                **asdict(executor.replan), 'executed_actions': executor.executed_actions,
                'latency_ms': executor.latency_ms, 'sampling_noise': executor.sampling_noise,
                'limit_overrides': executor.limit_overrides},
            'device': args.device, 'int8_linears': args.int8}
    if args.device.startswith('cuda') and torch.cuda.is_available():
        meta['device_name'] = torch.cuda.get_device_name(args.device)
    (args.out / 'eval.json').write_text(json.dumps({'meta': meta, 'modes': rows}, indent=2))
    (args.out / 'eval.md').write_text(
        f"Evaluated {meta['date']} on {meta['machine']} ({meta['cpu_count']} CPUs, torch "
        f"{meta['torch']}, {meta['torch_threads']} intra-op threads, device "
        f"{meta.get('device_name', meta['device'])}"
        f"{', int8 branch matmuls' if args.int8 else ''}).\n\n"
        f"Command: `{meta['command']}`\n\n{table}\n")
    return 0


if __name__ == '__main__':
    sys.exit(main())
