"""
A scripted pushing expert for ArmPushEnv: planar path planning plus damped least-squares IK.

The expert reads the privileged task state (puck and goal poses) and plans only the pusher tip's
path in the table plane; inverse kinematics turns each tip point into joint position targets
with the tool held vertical. Phases::

    APPROACH: go to the point behind the puck (seen from the goal). If the puck is in the way,
              go around it on one side; where both sides are about as long the side is drawn
              at random, so the demonstrations hold both modes.
    PUSH:     drive the tip through the puck centre towards the goal, correcting sideways
              drift; if the puck slips off the tip, go back to APPROACH.

With ``lift`` > 0 the planar path is the same, but during APPROACH the tip is raised that high
above the push height (the pusher then clears the puck) until it is within ``lower_radius`` of
the point behind the puck, and the push starts only once it is back down. The expert's own path
never touches the puck either way; the raised approach leaves room for a policy that imitates it
imprecisely.

The commanded tip point moves with bounded speed and acceleration and joint steps stay under the
arm's rated speeds, so the demonstrated actions are smooth.

Success check (no rendering, about 4 s per 100 episodes)::

    python -m sparse_policy_ros.sim.expert --episodes 100 --seed-start 0 [--action-noise 0.03]

``--action-noise`` runs the expert DART-style (:class:`ExecutionNoise`): the arm executes the
expert's targets plus slowly varying joint noise, so the puck drifts off the planned line and the
expert has to correct and re-approach; recorded labels stay the noise-free targets.
"""

import argparse
import enum
import logging
import sys

import numpy as np
from tqdm import tqdm

from .env import ArmPushEnv

logger = logging.getLogger(__name__)


class Phase(enum.Enum):
    """What the expert is doing."""

    APPROACH = 'approach'
    PUSH = 'push'


def _unit(vector: np.ndarray) -> np.ndarray:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 1e-12 else np.zeros_like(vector)


def _wrap(angle: float) -> float:
    return float((angle + np.pi) % (2.0 * np.pi) - np.pi)


def _segment_point_distance(start: np.ndarray, end: np.ndarray, point: np.ndarray) -> float:
    segment = end - start
    length2 = float(segment @ segment)
    t = 0.0 if length2 < 1e-12 else float(np.clip((point - start) @ segment / length2, 0, 1))
    return float(np.linalg.norm(start + t * segment - point))


# Gaps (m) the expert keeps from the puck by default: on the way around it and behind it, and
# on a straight path past it. The recorded datasets of models/default use these.
DEFAULT_CLEARANCE = 0.02
DEFAULT_PASS_MARGIN = 0.008
# Height (m) above the push height at which the tip approaches the puck; 0 = on the table.
# models/default's data was recorded with --lift 0.06; 0 stays the default so that stores
# recorded before the option existed keep meaning what they hold.
DEFAULT_LIFT = 0.0
MAX_LIFT = 0.15


class PushExpert:
    """Scripted expert producing joint position targets for :class:`ArmPushEnv`."""

    def __init__(self, env: ArmPushEnv, travel_speed: float = 0.2, push_speed: float = 0.1,
                 max_accel: float = 1.0, clearance: float = DEFAULT_CLEARANCE,
                 ambiguous_angle: float = 2.2,
                 pass_margin: float = DEFAULT_PASS_MARGIN, lift: float = DEFAULT_LIFT,
                 lower_radius: float = 0.04, lift_speed: float = 0.2) -> None:
        """
        Bind to ``env``; speeds in m/s, acceleration in m/s^2, clearance in m, angle in rad.

        ``clearance``: gap kept from the puck on the way around it and at the point behind it
        where the push starts. ``pass_margin`` (m): the tip goes straight to that point when the
        straight line passes the puck with at least this gap, and around the puck otherwise.

        ``ambiguous_angle``: when the way around the puck is longer than this on the shorter
        side, both sides are about equally good and the side is drawn at random.

        ``lift`` (m, >= 0): height above the push height of the tip during APPROACH while it is
        farther than ``lower_radius`` (m) from the point behind the puck; the tip moves up and
        down at ``lift_speed`` (m/s) at most. ``lift = 0`` keeps the tip on the push height.
        """
        for name, value in (('travel_speed', travel_speed), ('push_speed', push_speed),
                            ('max_accel', max_accel), ('clearance', clearance),
                            ('pass_margin', pass_margin), ('lower_radius', lower_radius),
                            ('lift_speed', lift_speed)):
            if not np.isfinite(value) or value <= 0:
                raise ValueError(f'{name} must be a positive number, got {value!r}')
        if not np.isfinite(lift) or not 0.0 <= lift <= MAX_LIFT:
            raise ValueError(f'lift must be a number in [0, {MAX_LIFT}] m, got {lift!r}')
        if pass_margin >= clearance:
            raise ValueError(f'pass_margin must be smaller than clearance ({clearance!r}: the '
                             f'push starts that far from the puck), got {pass_margin!r}')
        if not 0.0 <= ambiguous_angle <= np.pi:
            raise ValueError(f'ambiguous_angle must be in [0, pi], got {ambiguous_angle!r}')
        self.env = env
        self.travel_speed = travel_speed
        self.push_speed = push_speed
        self.max_accel = max_accel
        self.dt = 1.0 / env.control_hz
        # Tip-centre to puck-centre distance at contact, and the radius kept while going around.
        self.contact_distance = env.object_radius + env.pusher_radius
        self.clearance = clearance
        self.pass_margin = pass_margin
        self.keep_out = self.contact_distance + clearance
        self.ambiguous_angle = ambiguous_angle
        self.lift = float(lift)
        self.lower_radius = lower_radius
        self.lift_speed = lift_speed
        self.phase = Phase.APPROACH
        self.side = 0  # +1 counter-clockwise, -1 clockwise around the puck, 0 undecided
        self.reapproaches = 0  # PUSH -> APPROACH switches (puck slipped off) this episode
        self._rng = np.random.default_rng(0)
        self._tip_cmd = np.zeros(2)
        self._velocity = np.zeros(2)
        self._z_cmd = env.push_height
        self._q_cmd = np.zeros(len(env.joint_names))

    def reset(self, seed: int) -> None:
        """Start a new episode (call after ``env.reset``); ``seed`` drives the side choices."""
        self._rng = np.random.default_rng([int(seed), 7])
        self.phase = Phase.APPROACH
        self.side = 0
        self.reapproaches = 0
        task = self.env.privileged_state()
        self._tip_cmd = task.tip_pos[:2].copy()
        self._velocity = np.zeros(2)
        self._z_cmd = float(task.tip_pos[2])
        self._q_cmd = task.joint_positions.copy()

    def act(self) -> np.ndarray:
        """Return the joint position targets (n,) float64 for the next control step."""
        task = self.env.privileged_state()
        target_velocity = self._plan(task.object_xy, task.goal_xy)
        # Acceleration limit, then integrate the commanded tip point.
        change = target_velocity - self._velocity
        max_change = self.max_accel * self.dt
        norm = float(np.linalg.norm(change))
        if norm > max_change:
            change *= max_change / norm
        self._velocity = self._velocity + change
        tip_target = np.array([*(self._tip_cmd + self._velocity * self.dt),
                               self._height_target(task.object_xy, task.goal_xy)])
        q = self.solve_ik(tip_target, self._q_cmd)
        # Stay under the rated joint speeds; the tip command follows what the joints can do.
        max_step = 0.9 * self.env.max_velocity * self.dt
        q = self._q_cmd + np.clip(q - self._q_cmd, -max_step, max_step)
        reached = self.env.kinematics(q).tip_pos
        self._velocity = (reached[:2] - self._tip_cmd) / self.dt
        self._tip_cmd = reached[:2]
        self._z_cmd = float(reached[2])
        self._q_cmd = q
        return q.copy()

    def _height_target(self, object_xy: np.ndarray, goal_xy: np.ndarray) -> float:
        """Tip height commanded this step: the push height, or raised while approaching."""
        if self.lift == 0.0:
            return self.env.push_height
        raised = (self.phase is Phase.APPROACH
                  and float(np.linalg.norm(self._approach_point(object_xy, goal_xy)
                                           - self._tip_cmd)) > self.lower_radius)
        wanted = self.env.push_height + (self.lift if raised else 0.0)
        max_move = self.lift_speed * self.dt
        return self._z_cmd + float(np.clip(wanted - self._z_cmd, -max_move, max_move))

    def _lowered(self) -> bool:
        """Whether the tip is back at the push height (always, without ``lift``)."""
        return self.lift == 0.0 or abs(self._z_cmd - self.env.push_height) < 0.002

    def _approach_point(self, object_xy: np.ndarray, goal_xy: np.ndarray) -> np.ndarray:
        """Where the push starts: ``keep_out`` behind the puck, seen from the goal."""
        return object_xy - self.keep_out * _unit(goal_xy - object_xy)

    def solve_ik(self, tip_target: np.ndarray, q_start: np.ndarray, iterations: int = 20,
                 tolerance: float = 1e-6) -> np.ndarray:
        """
        Joint positions putting the tip at ``tip_target`` (3,) with the tool pointing down.

        Damped least squares on MuJoCo's site Jacobians, from ``q_start``, within joint limits.
        """
        lower, upper = self.env.joint_limits
        q = np.clip(np.asarray(q_start, dtype=np.float64), lower, upper)
        down = np.array([0.0, 0.0, -1.0])
        damping = 1e-3
        for _ in range(iterations):
            kin = self.env.kinematics(q)
            # Rotating the tool axis by cross(axis, down) turns it towards straight down.
            error = np.concatenate([tip_target - kin.tip_pos,
                                    0.2 * np.cross(kin.tool_axis, down)])
            if float(np.linalg.norm(error)) < tolerance:
                break
            jac = np.vstack([kin.jac_pos, 0.2 * kin.jac_rot])  # (6, n)
            step = jac.T @ np.linalg.solve(jac @ jac.T + damping * np.eye(6), error)
            q = np.clip(q + step, lower, upper)
        return q

    # ------------------------------------------------------------------ planar planning
    def _plan(self, object_xy: np.ndarray, goal_xy: np.ndarray) -> np.ndarray:
        """Desired tip velocity (2,) in the table plane for this control step."""
        push_dir = _unit(goal_xy - object_xy)
        tip = self._tip_cmd
        if self.phase is Phase.PUSH:
            offset = tip - object_xy
            along = float(offset @ push_dir)
            lateral = offset - along * push_dir
            lost = (float(np.linalg.norm(lateral)) > 0.6 * self.env.object_radius
                    or along > -0.5 * self.contact_distance)
            if not lost:
                remaining = float(np.linalg.norm(goal_xy - object_xy))
                speed = min(self.push_speed, 1.5 * remaining + 0.02)
                return speed * push_dir - 2.0 * lateral
            logger.debug('puck slipped off the pusher; approaching again')
            self.phase = Phase.APPROACH
            self.side = 0
            self.reapproaches += 1
        approach = self._approach_point(object_xy, goal_xy)
        to_approach = approach - tip
        distance = float(np.linalg.norm(to_approach))
        if (distance < 0.004 and float(np.linalg.norm(self._velocity)) < 0.05
                and self._lowered()):
            self.phase = Phase.PUSH
            return self.push_speed * push_dir
        # Go straight when the segment tip -> approach point passes clear of the puck.
        if (_segment_point_distance(tip, approach, object_xy)
                >= self.contact_distance + self.pass_margin):
            speed = min(self.travel_speed, 2.0 * distance)
            return speed * _unit(to_approach)
        return self.travel_speed * self._around_direction(tip, object_xy, approach)

    def _around_direction(self, tip: np.ndarray, object_xy: np.ndarray,
                          approach: np.ndarray) -> np.ndarray:
        """Heading that takes the tip around the puck on the chosen side, towards ``approach``."""
        rel = tip - object_xy
        radius = float(np.linalg.norm(rel))
        angle = float(np.arctan2(rel[1], rel[0]))
        if self.side == 0:
            approach_rel = approach - object_xy
            remaining = _wrap(float(np.arctan2(approach_rel[1], approach_rel[0])) - angle)
            if abs(remaining) > self.ambiguous_angle:
                self.side = 1 if self._rng.random() < 0.5 else -1
            else:
                self.side = 1 if remaining > 0 else -1
        # Aim at the tangent point of the keep-out circle on the chosen side, plus a look-ahead
        # along the circle, so the heading stays defined once the tip is on the circle.
        tangent = float(np.arccos(min(1.0, self.keep_out / max(radius, 1e-9))))
        aim_angle = angle + self.side * (tangent + 0.3)
        aim = object_xy + self.keep_out * np.array([np.cos(aim_angle), np.sin(aim_angle)])
        return _unit(aim - tip)


class ExecutionNoise:
    """
    Joint noise added to the expert's targets before they are executed (DART-style).

    An AR(1) process per joint, ``n_t = rho * n_(t-1) + sqrt(1 - rho^2) * sigma * e_t`` with
    ``e_t ~ N(0, 1)``, so its stationary standard deviation is ``sigma`` rad and it varies over
    about ``1 / (1 - rho)`` control steps: slow enough that the position-controlled arm follows it
    and the pushed puck drifts off the planned line, which the expert then corrects. Only the
    executed action is perturbed; what is recorded as the label is the expert's own target, so the
    data shows how to recover from states the noise-free expert never visits. ``sigma = 0`` is
    exactly the noise-free expert.
    """

    def __init__(self, n_joints: int, sigma: float, rho: float = 0.9) -> None:
        """``sigma`` in rad (>= 0), ``rho`` in [0, 1): per-step correlation."""
        if not np.isfinite(sigma) or sigma < 0:
            raise ValueError(f'action noise sigma must be a number >= 0 rad, got {sigma!r}')
        if not 0.0 <= rho < 1.0:
            raise ValueError(f'action noise correlation rho must be in [0, 1), got {rho!r}')
        if n_joints < 1:
            raise ValueError(f'n_joints must be >= 1, got {n_joints!r}')
        self.sigma = float(sigma)
        self.rho = float(rho)
        self._value = np.zeros(n_joints)
        self._rng = np.random.default_rng(0)

    def reset(self, seed: int) -> None:
        """Start a new episode; the noise sequence is a function of ``seed``."""
        self._rng = np.random.default_rng([int(seed), 11])
        self._value = self.sigma * self._rng.standard_normal(self._value.shape)

    def apply(self, action: np.ndarray) -> np.ndarray:
        """Return ``action`` plus this step's noise; advance the process."""
        if self.sigma == 0.0:
            return action
        executed = action + self._value
        innovation = np.sqrt(1.0 - self.rho ** 2) * self.sigma
        self._value = self.rho * self._value + innovation * self._rng.standard_normal(
            self._value.shape)
        return executed


def expert_success_rate(episodes: int, seed_start: int = 0, progress: bool = True,
                        action_noise: float = 0.0, noise_rho: float = 0.9,
                        clearance: float = DEFAULT_CLEARANCE,
                        pass_margin: float = DEFAULT_PASS_MARGIN, lift: float = DEFAULT_LIFT
                        ) -> tuple[float, list[int], list[int], list[int]]:
    """
    Run the expert without rendering on consecutive seeds.

    Return (success rate, episode lengths, failed seeds, re-approaches per episode).

    ``action_noise`` > 0 executes the targets with :class:`ExecutionNoise` (sigma in rad).
    ``clearance``, ``pass_margin``: :class:`PushExpert`'s gaps from the puck, m; ``lift``: its
    raised approach height, m.
    """
    env = ArmPushEnv(render=False)
    expert = PushExpert(env, clearance=clearance, pass_margin=pass_margin, lift=lift)
    noise = ExecutionNoise(len(env.joint_names), action_noise, noise_rho)
    lengths, failures, reapproaches = [], [], []
    for seed in tqdm(range(seed_start, seed_start + episodes), desc='expert', unit='ep',
                     disable=not progress):
        env.reset(seed=seed)
        expert.reset(seed)
        noise.reset(seed)
        while True:
            _, _, terminated, truncated, info = env.step(noise.apply(expert.act()))
            if terminated or truncated:
                break
        lengths.append(info['steps'])
        reapproaches.append(expert.reapproaches)
        if not info['success']:
            failures.append(seed)
    env.close()
    return 1.0 - len(failures) / episodes, lengths, failures, reapproaches


def add_path_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the expert's path options ``--clearance``, ``--pass-margin``, ``--lift`` to a CLI."""
    parser.add_argument('--clearance', type=float, default=DEFAULT_CLEARANCE,
                        help='gap in m the expert keeps from the puck while going around it')
    parser.add_argument('--pass-margin', type=float, default=DEFAULT_PASS_MARGIN,
                        help='least gap in m of a straight path past the puck (< --clearance)')
    parser.add_argument('--lift', type=float, default=DEFAULT_LIFT,
                        help='height in m above the push height at which the tip approaches '
                        'the puck (0 = on the table; 0.06 clears the puck)')


def main(args: list[str] | None = None) -> int:
    """Measure the expert's success rate: ``python -m sparse_policy_ros.sim.expert``."""
    parser = argparse.ArgumentParser(description='Success rate of the scripted push expert.')
    parser.add_argument('--episodes', type=int, default=100, help='number of seeds to run')
    parser.add_argument('--seed-start', type=int, default=0, help='first seed')
    parser.add_argument('--action-noise', type=float, default=0.0,
                        help='DART-style execution noise, rad (standard deviation; 0 = none)')
    parser.add_argument('--noise-rho', type=float, default=0.9,
                        help='per-step correlation of the execution noise, in [0, 1)')
    add_path_arguments(parser)
    parsed = parser.parse_args(args)
    if parsed.episodes < 1:
        parser.error(f'--episodes must be >= 1, got {parsed.episodes}')
    try:
        rate, lengths, failures, reapproaches = expert_success_rate(
            parsed.episodes, parsed.seed_start, action_noise=parsed.action_noise,
            noise_rho=parsed.noise_rho, clearance=parsed.clearance,
            pass_margin=parsed.pass_margin, lift=parsed.lift)
    except ValueError as error:
        parser.error(str(error))
    print('| episodes | success rate | steps (min / mean / max) | re-approaches (episodes with '
          'one) | failed seeds |')
    print('| -------- | ------------ | ------------------------ | ------------------------------ '
          '| ------------ |')
    print(f'| {parsed.episodes} | {rate:.1%} | {min(lengths)} / {np.mean(lengths):.1f} / '
          f'{max(lengths)} | {sum(reapproaches)} ({sum(n > 0 for n in reapproaches)}) '
          f'| {failures} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
