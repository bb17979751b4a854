"""
The scripted push expert on the Franka Panda: ArmPushEnv's PushExpert, unchanged.

:class:`~sparse_policy_ros.sim.expert.PushExpert` plans the tip's path in the table plane and
turns it into joint targets by damped least squares on the env's ``kinematics(q)`` (tip site
position, tool axis and their Jacobians), at the env's ``push_height``, within its joint limits
and rated speeds. PandaPushEnv provides that interface (tip = the gripper's ``pinch`` site,
``PUSH_HEIGHT``, a disc ``pusher_radius`` covering the closed fingers), so the same expert runs on
the 7-joint arm without a line of Panda-specific planning. Its phases are PushExpert's: APPROACH
at push height (around the puck on one side when it is in the way) to the point behind it, then
PUSH through its centre towards the goal, re-approaching if it slips off; episodes end on
success, so there is no retreat. It needs no lift-and-descend phase because only the fingertips
are at puck height: the wrist and forearm pass over the puck.

With 7 joints, the 6 IK rows (tip position; tool axis vertical; the rotation about the tool axis
held, because its error term is zero) leave the elbow free, and the least-norm steps keep it
near the previous command. Over seeds 0-99 the commanded joints stayed at least 0.4 rad inside
every joint limit.

Success rate and step times (privileged state; no rendering for the success rate)::

    python -m sparse_policy_ros.sim.panda_expert --episodes 100 --seed-start 0
"""

import argparse
from dataclasses import dataclass, field
import sys
import time

import numpy as np
from tqdm import tqdm

from .expert import PushExpert
from .panda_env import PandaPushEnv


@dataclass
class ExpertRun:
    """What one batch of expert episodes did, with wall-clock time split by caller."""

    seeds: list[int] = field(default_factory=list)  # seeds run, in order
    lengths: list[int] = field(default_factory=list)  # control steps per episode
    failures: list[int] = field(default_factory=list)  # seeds where the puck missed the goal
    act_seconds: float = 0.0  # time in PushExpert.act (planning and IK)
    step_seconds: float = 0.0  # time in env.step (physics, plus rendering when on)

    @property
    def success_rate(self) -> float:
        """Fraction of episodes that ended with the puck on the goal."""
        return 1.0 - len(self.failures) / max(1, len(self.seeds))

    @property
    def steps(self) -> int:
        """Control steps over all episodes."""
        return int(sum(self.lengths))

    def ms_per_step(self, seconds: float) -> float:
        """Milliseconds per control step of a total of ``seconds``."""
        return 1e3 * seconds / max(1, self.steps)


def run_expert(episodes: int, seed_start: int = 0, render: bool = False,
               progress: bool = True) -> ExpertRun:
    """Run PushExpert on PandaPushEnv for seeds ``seed_start ...``; time act and step apart."""
    if episodes < 1:
        raise ValueError(f'episodes must be >= 1, got {episodes}')
    if seed_start < 0:
        raise ValueError(f'seed_start must be >= 0, got {seed_start}')
    env = PandaPushEnv(render=render)
    run = ExpertRun()
    try:
        expert = PushExpert(env)
        for seed in tqdm(range(seed_start, seed_start + episodes), desc='panda expert',
                         unit='ep', disable=not progress):
            env.reset(seed=seed)
            expert.reset(seed)
            done = False
            while not done:
                start = time.perf_counter()
                action = expert.act()
                middle = time.perf_counter()
                _, _, terminated, truncated, info = env.step(action)
                run.act_seconds += middle - start
                run.step_seconds += time.perf_counter() - middle
                done = terminated or truncated
            run.seeds.append(seed)
            run.lengths.append(info['steps'])
            if not info['success']:
                run.failures.append(seed)
    finally:
        env.close()
    return run


def panda_expert_success_rate(episodes: int, seed_start: int = 0,
                              progress: bool = True) -> tuple[float, list[int], list[int]]:
    """Success rate of the expert without rendering; return (rate, lengths, failed seeds)."""
    run = run_expert(episodes, seed_start, render=False, progress=progress)
    return run.success_rate, run.lengths, run.failures


def summary_table(plain: ExpertRun, rendered: ExpertRun | None) -> str:
    """Markdown table of a success run and, optionally, of a rendering timing run."""
    lengths = np.array(plain.lengths)
    rows = [
        ('episodes (seeds)', f'{len(plain.seeds)} ({plain.seeds[0]}-{plain.seeds[-1]})'),
        ('success', f'{len(plain.seeds) - len(plain.failures)}/{len(plain.seeds)} '
                    f'({plain.success_rate:.1%})'),
        ('failed seeds', str(plain.failures)),
        ('steps per episode (min / mean / max)',
         f'{lengths.min()} / {lengths.mean():.1f} / {lengths.max()}'),
        ('env.step, no rendering', f'{plain.ms_per_step(plain.step_seconds):.2f} ms'),
        ('expert.act (plan + IK)', f'{plain.ms_per_step(plain.act_seconds):.2f} ms'),
    ]
    if rendered is not None:
        rows.append((f'env.step with 96x96 rendering ({len(rendered.seeds)} episodes)',
                     f'{rendered.ms_per_step(rendered.step_seconds):.2f} ms'))
    width = max(len(name) for name, _ in rows)
    lines = [f'| {"quantity":<{width}} | value |', f'| {"-" * width} | ----- |']
    lines += [f'| {name:<{width}} | {value} |' for name, value in rows]
    return '\n'.join(lines)


def main(args: list[str] | None = None) -> int:
    """Measure the Panda expert: ``python -m sparse_policy_ros.sim.panda_expert``."""
    parser = argparse.ArgumentParser(
        description='Success rate and step time of the scripted push expert on the Panda.')
    parser.add_argument('--episodes', type=int, default=100, help='number of seeds to run')
    parser.add_argument('--seed-start', type=int, default=0, help='first seed')
    parser.add_argument('--render-episodes', type=int, default=5,
                        help='episodes re-run with the camera on to time rendering (0: skip)')
    parsed = parser.parse_args(args)
    if parsed.episodes < 1:
        parser.error(f'--episodes must be >= 1, got {parsed.episodes}')
    if parsed.seed_start < 0:
        parser.error(f'--seed-start must be >= 0, got {parsed.seed_start}')
    if parsed.render_episodes < 0:
        parser.error(f'--render-episodes must be >= 0, got {parsed.render_episodes}')
    try:
        plain = run_expert(parsed.episodes, parsed.seed_start)
        rendered = (run_expert(parsed.render_episodes, parsed.seed_start, render=True)
                    if parsed.render_episodes else None)
    except ImportError as error:
        print(f'panda_expert: {error}', file=sys.stderr)
        return 2
    print(summary_table(plain, rendered))
    return 0


if __name__ == '__main__':
    sys.exit(main())
