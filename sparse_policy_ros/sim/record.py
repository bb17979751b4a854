"""
Record scripted-expert demonstrations of a push task into a Diffusion Policy replay buffer.

Usage::

    record-demos --episodes 200 --out data/arm_push.zarr --seed-start 0 [--image-size 96]
    record-demos --env panda_push --episodes 200 --out data/panda_push.zarr

``--action-noise SIGMA`` (rad, with ``--noise-rho``) records DART-style: the arm executes the
expert's targets plus slowly varying joint noise (:class:`.expert.ExecutionNoise`) and the stored
actions are the expert's noise-free targets, so the data holds recoveries from states off the
expert's own path. Each run's noise settings and seeds are kept in the ``action_noise`` attribute.

``--env`` picks the task (:mod:`.envs`: ``arm_push``, the default, or ``panda_push``); the same
PushExpert drives either arm.

``--command-path node`` sends the expert's targets through the policy node's control loop
(planned within the node's limits, interpolated by the controller; :mod:`.node_command_path`)
instead of holding each as a step for a control period, and stores with each observation the
target due at that step: data for a policy the node will drive. The store's ``command_path``
attribute says which; a store holds one kind.

Seeds ``seed_start, seed_start + 1, ...`` are tried until ``--episodes`` successful episodes are
stored (at most ``--max-attempts`` seeds); failed episodes are dropped and counted. Each kept
episode is appended with the observation seen *before* each action::

    data/img     uint8   (T, H, W, 3)   'front' camera
    data/state   float32 (T, n)         joint positions
    data/action  float32 (T, n)         joint position targets sent at that step
    meta/episode_ends  int64 (n_episodes,) cumulative

The root attributes describe the environment (joints, limits, rates) and the seeds used.
"""

import argparse
from dataclasses import dataclass, field
import logging
import os
from pathlib import Path
import sys
import time

import numpy as np
from tqdm import tqdm

from .env import ArmPushEnv, DEFAULT_MAX_STEPS
from .envs import DEFAULT_ENV, ENV_NAMES, make_env
from .expert import (add_path_arguments, DEFAULT_CLEARANCE, DEFAULT_LIFT, DEFAULT_PASS_MARGIN,
                     ExecutionNoise, PushExpert)
from .node_command_path import COMMAND_PATHS, NodeCommandPath
from ..policy.observation import OBS_IMAGES, OBS_STATE
from ..training.replay_buffer import ReplayBuffer

logger = logging.getLogger(__name__)

IMAGE_KEY = 'img'
STATE_KEY = 'state'
ACTION_KEY = 'action'
CAMERA = 'front'


@dataclass
class RecordSummary:
    """What one recording run did."""

    path: Path  # the zarr store
    kept_seeds: list[int] = field(default_factory=list)  # seeds whose episodes were stored
    failed_seeds: list[int] = field(default_factory=list)  # seeds where the expert failed
    lengths: list[int] = field(default_factory=list)  # steps of every stored episode
    n_episodes_total: int = 0  # episodes in the store after this run (earlier runs included)
    seconds: float = 0.0  # wall-clock time of the run
    # --command-path node: targets the node's loop planned, and those it could not (kept old)
    node_targets: tuple[int, int] | None = None

    def table(self) -> str:
        """Return a short markdown table of the run."""
        lengths = np.array(self.lengths) if self.lengths else np.zeros(1)
        rows = [
            ('store', str(self.path)),
            ('episodes kept', str(len(self.kept_seeds))),
            ('episodes failed (dropped)', str(len(self.failed_seeds))),
            ('episodes in store', str(self.n_episodes_total)),
            ('steps kept', str(int(np.sum(self.lengths)))),
            ('steps per episode (min / mean / max)',
             f'{lengths.min():.0f} / {lengths.mean():.1f} / {lengths.max():.0f}'),
            ('wall time', f'{self.seconds:.1f} s'),
        ]
        if self.node_targets is not None:
            rows.append(('node loop: targets planned / refused',
                         f'{self.node_targets[0]} / {self.node_targets[1]}'))
        width = max(len(name) for name, _ in rows)
        lines = [f'| {"quantity":<{width}} | value |', f'| {"-" * width} | ----- |']
        lines += [f'| {name:<{width}} | {value} |' for name, value in rows]
        return '\n'.join(lines)


def record_episode(env: ArmPushEnv, expert: PushExpert, seed: int,
                   noise: ExecutionNoise | None = None) -> tuple[bool, dict[str, np.ndarray]]:
    """
    Run the expert on ``seed``; return (success, {img, state, action} arrays of length T).

    With ``noise`` the executed targets are perturbed; the stored actions are the expert's own.
    """
    obs = env.reset(seed=seed)
    expert.reset(seed)
    if noise is not None:
        noise.reset(seed)
    images, states, actions = [], [], []
    success = False
    while True:
        action = expert.act()
        images.append(obs[OBS_IMAGES][CAMERA])
        states.append(obs[OBS_STATE])
        actions.append(action.astype(np.float32))
        executed = action if noise is None else noise.apply(action)
        obs, _, terminated, truncated, info = env.step(executed)
        if terminated or truncated:
            success = bool(info['success'])
            break
    episode = {
        IMAGE_KEY: np.stack(images).astype(np.uint8),
        STATE_KEY: np.stack(states).astype(np.float32),
        ACTION_KEY: np.stack(actions).astype(np.float32),
    }
    return success, episode


def env_metadata(env: ArmPushEnv, expert: PushExpert, command_path: str = 'grid') -> dict:
    """JSON-serialisable description of the task the demonstrations come from."""
    return {
        'command_path': command_path,
        'env': type(env).__name__,
        'expert': type(expert).__name__,
        'camera': CAMERA,
        'image_size': env.image_size,
        'joint_names': list(env.joint_names),
        'joint_limits_lower': env.joint_limits[0].tolist(),
        'joint_limits_upper': env.joint_limits[1].tolist(),
        'max_velocity': env.max_velocity.tolist(),
        'control_hz': env.control_hz,
        'max_steps': env.max_steps,
        'success_radius': env.success_radius,
        'expert_clearance_m': expert.clearance,
        'expert_pass_margin_m': expert.pass_margin,
        'expert_lift_m': expert.lift,
        'keys': {IMAGE_KEY: 'front camera RGB uint8 (T, H, W, 3)',
                 STATE_KEY: 'joint positions float32 (T, n), rad',
                 ACTION_KEY: 'joint position targets float32 (T, n), rad'},
    }


def record_demos(out: str | os.PathLike, episodes: int, seed_start: int = 0,
                 image_size: int = 96, max_steps: int = DEFAULT_MAX_STEPS,
                 max_attempts: int | None = None, progress: bool = True,
                 env_name: str = DEFAULT_ENV, action_noise: float = 0.0,
                 noise_rho: float = 0.9, clearance: float = DEFAULT_CLEARANCE,
                 pass_margin: float = DEFAULT_PASS_MARGIN,
                 lift: float = DEFAULT_LIFT, command_path: str = 'grid') -> RecordSummary:
    """
    Append ``episodes`` successful expert episodes to the replay buffer at ``out``.

    A new store is created if ``out`` does not exist; an existing one must come from the same
    task (joint names, image size and control rate are checked) and is appended to.
    ``env_name`` is one of :data:`.envs.ENV_NAMES`. ``action_noise`` > 0 (rad) records
    DART-style with :class:`.expert.ExecutionNoise` (``noise_rho``: its per-step correlation).
    ``clearance``, ``pass_margin`` (m): the expert's gaps from the puck; ``lift`` (m): its raised
    approach height (:class:`PushExpert`). ``command_path``: ``grid`` (each target held for a
    control period) or ``node`` (through the policy node's loop, :mod:`.node_command_path`).
    """
    if command_path not in COMMAND_PATHS:
        raise ValueError(f'command_path must be one of {list(COMMAND_PATHS)}, got '
                         f'{command_path!r}')
    if episodes < 1:
        raise ValueError(f'episodes must be >= 1, got {episodes}')
    if seed_start < 0:
        raise ValueError(f'seed_start must be >= 0, got {seed_start}')
    max_attempts = 2 * episodes if max_attempts is None else max_attempts
    if max_attempts < episodes:
        raise ValueError(f'max_attempts must be >= episodes ({episodes}), got {max_attempts}')
    path = Path(out)
    start = time.perf_counter()
    noise_check = ExecutionNoise(1, action_noise, noise_rho)  # validates before any file work
    env = make_env(env_name, image_size=image_size, max_steps=max_steps, render=True)
    try:
        expert = PushExpert(env, clearance=clearance, pass_margin=pass_margin, lift=lift)
        noise = (ExecutionNoise(len(env.joint_names), noise_check.sigma, noise_check.rho)
                 if noise_check.sigma > 0 else None)
        metadata = env_metadata(env, expert, command_path)
        node_path = NodeCommandPath(env_name) if command_path == 'node' else None
        buffer = _open_buffer(path, metadata)
        summary = RecordSummary(path=path)
        bar = tqdm(total=episodes, desc='record-demos', unit='ep', disable=not progress)
        seed = seed_start
        while len(summary.kept_seeds) < episodes and seed < seed_start + max_attempts:
            if node_path is None:
                success, episode = record_episode(env, expert, seed, noise)
            else:
                success, episode = node_path.record_episode(env, expert, seed, noise, CAMERA)
            if success:
                buffer.add_episode(episode)
                summary.kept_seeds.append(seed)
                summary.lengths.append(len(episode[ACTION_KEY]))
                bar.update(1)
            else:
                summary.failed_seeds.append(seed)
                logger.info('expert failed on seed %d; episode dropped', seed)
            bar.set_postfix(failed=len(summary.failed_seeds))
            seed += 1
        bar.close()
        attrs = buffer.attrs
        buffer.set_attrs({
            **metadata,
            'seeds': list(attrs.get('seeds', [])) + summary.kept_seeds,
            'failed_seeds': list(attrs.get('failed_seeds', [])) + summary.failed_seeds,
            'action_noise': list(attrs.get('action_noise', [])) + [{
                'sigma_rad': noise_check.sigma, 'rho': noise_check.rho,
                'seeds': summary.kept_seeds}],
        })
        summary.n_episodes_total = buffer.n_episodes
        if node_path is not None:
            summary.node_targets = (node_path.published, node_path.refused)
    finally:
        env.close()
    summary.seconds = time.perf_counter() - start
    if len(summary.kept_seeds) < episodes:
        logger.warning('only %d of %d episodes succeeded within %d attempts',
                       len(summary.kept_seeds), episodes, max_attempts)
    return summary


def _open_buffer(path: Path, metadata: dict) -> ReplayBuffer:
    if not path.exists():
        return ReplayBuffer.create(path)
    buffer = ReplayBuffer.open(path, mode='a')
    stored = buffer.attrs
    # Stores recorded before the expert's margins and lift were options hold the defaults' data.
    stored = {'expert_clearance_m': DEFAULT_CLEARANCE,
              'expert_pass_margin_m': DEFAULT_PASS_MARGIN, 'expert_lift_m': DEFAULT_LIFT,
              'command_path': 'grid', **stored}
    for key in ('joint_names', 'image_size', 'control_hz', 'camera', 'expert_clearance_m',
                'expert_pass_margin_m', 'expert_lift_m', 'command_path'):
        if key in stored and stored[key] != metadata[key]:
            raise ValueError(f'{path} holds demonstrations with {key}={stored[key]!r}; this run '
                             f'records {key}={metadata[key]!r}. Use another --out.')
    return buffer


def main(args: list[str] | None = None) -> int:
    """Console entry point ``record-demos``."""
    parser = argparse.ArgumentParser(
        prog='record-demos',
        description='Record scripted-expert push demonstrations into a zarr replay buffer.')
    parser.add_argument('--env', choices=ENV_NAMES, default=DEFAULT_ENV,
                        help='task: arm_push (4-joint arm) or panda_push (Franka Panda, gym-hil)')
    parser.add_argument('--episodes', type=int, required=True,
                        help='number of successful episodes to store')
    parser.add_argument('--out', required=True,
                        help='zarr store to create, or to append to if it exists')
    parser.add_argument('--seed-start', type=int, default=0,
                        help='first seed; episodes use consecutive seeds')
    parser.add_argument('--image-size', type=int, default=96, help='camera image side, pixels')
    parser.add_argument('--max-steps', type=int, default=DEFAULT_MAX_STEPS,
                        help='control steps before an episode counts as failed')
    parser.add_argument('--max-attempts', type=int, default=None,
                        help='give up after this many seeds (default: 2 x episodes)')
    parser.add_argument('--action-noise', type=float, default=0.0,
                        help='DART-style execution noise, rad (standard deviation; 0 = none); '
                        'the stored actions stay noise-free')
    parser.add_argument('--noise-rho', type=float, default=0.9,
                        help='per-step correlation of the execution noise, in [0, 1)')
    parser.add_argument('--command-path', choices=COMMAND_PATHS, default='grid',
                        help='grid: each target held for a control period; node: through the '
                        "policy node's control loop (limits, interpolation), each observation "
                        'stored with the target due then')
    add_path_arguments(parser)
    parsed = parser.parse_args(args)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        summary = record_demos(parsed.out, parsed.episodes, seed_start=parsed.seed_start,
                               image_size=parsed.image_size, max_steps=parsed.max_steps,
                               max_attempts=parsed.max_attempts, env_name=parsed.env,
                               action_noise=parsed.action_noise, noise_rho=parsed.noise_rho,
                               clearance=parsed.clearance, pass_margin=parsed.pass_margin,
                               lift=parsed.lift, command_path=parsed.command_path)
    except (ValueError, FileExistsError, ImportError) as error:
        print(f'record-demos: {error}', file=sys.stderr)
        return 2
    print(summary.table())
    return 0 if len(summary.kept_seeds) == parsed.episodes else 1


if __name__ == '__main__':
    sys.exit(main())
