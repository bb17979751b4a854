"""
``record-demos --command-path node``: the expert's targets reach the arm the way a policy's do.

The grid path (``record.record_episode``) holds each target as a step for one control period.
On a robot the policy node plans every chunk within the joint limits and the controller
interpolates between its points, so a policy trained on step targets meets other dynamics when
the node drives the arm (``eval-policy --executor node`` scored 6 points below the grid
executor). Here the expert drives the arm through the node's own control loop
(``control/control_loop.py``, as ``sim/node_executor.py`` does for a policy): at each control
step its target is a one-point chunk due one control period ahead (what ``sim_node``'s teleop
expert publishes), planned from the running command within the node's limits and followed at
the physics rate.

The labels follow the node's time base: the node schedules a chunk's row for the newest
observation at that observation's stamp (already due, so it is dropped) and the next rows a
period apart. So the action stored with the observation at step t is the target due at t (the
one the expert chose at t - 1; the reset pose at t = 0), and the policy's next row is the target
the expert chose at t, due at t + 1 period, where the node will put it.
"""

import numpy as np

from .node_executor import node_joint_limits
from ..control.control_loop import ControlLoop
from ..control.observation_buffer import ObservationBuffer
from ..control.replanning import Replanner
from ..control.safety import SafetyFilter

COMMAND_PATHS = ('grid', 'node')
PHYSICS_RATE = 100.0  # sim_node's default (config/sim.yaml), as in node_executor


class NodeCommandPath:
    """The policy node's planning and following of targets, for one task's joints and limits."""

    def __init__(self, env_name: str, physics_rate: float = PHYSICS_RATE):
        """Use the node's joint names and limits for ``env_name`` (``node_joint_limits``)."""
        if not physics_rate > 0:
            raise ValueError(f'physics_rate must be > 0, got {physics_rate!r}')
        self.joint_names, self.limits = node_joint_limits(env_name)
        self.physics_rate = float(physics_rate)
        self.published = 0  # targets planned and followed
        self.refused = 0  # targets the loop could not plan (counted, the old plan kept)

    def record_episode(self, env, expert, seed: int, noise=None,
                       camera: str = 'front') -> tuple[bool, dict[str, np.ndarray]]:
        """
        Run the expert on ``seed`` through the node's loop; return (success, arrays).

        Arrays: ``img`` (T, H, W, 3) uint8, ``state`` (T, n) and ``action`` (T, n) float32, the
        observation at each control step and the target due then. With ``noise`` the planned
        targets are perturbed (DART-style); the stored ones stay the expert's.
        """
        period = 1.0 / env.control_hz
        ticks = max(1, round(period * self.physics_rate))
        tick = period / ticks
        env.reset(seed=seed)
        expert.reset(seed)
        if noise is not None:
            noise.reset(seed)
        n = len(self.joint_names)
        if len(env.joint_names) != n:
            raise ValueError(f'the node commands {list(self.joint_names)}, the task has '
                             f'{list(env.joint_names)}')
        loop = ControlLoop(self.joint_names, 'joint_trajectory')
        loop.configure(SafetyFilter(self.limits, period), Replanner(period, 1, 1),
                       ObservationBuffer((), n, 1, period))
        images, states, actions = [], [], []
        due_now = env.state().astype(np.float32)  # at rest at the reset pose
        t = 0.0
        for _ in range(env.max_steps):
            state = env.state()
            loop.buffer.add_joint_state(t, state)
            images.append(env.render_images()[camera])
            states.append(state.astype(np.float32))
            actions.append(due_now)
            target = np.asarray(expert.act(), dtype=np.float64)
            executed = target if noise is None else noise.apply(target)
            outcome = loop.commit_chunk(executed[None], t + period, t)
            if outcome.status == 'published':
                self.published += 1
            else:
                self.refused += 1
            due_now = target.astype(np.float32)
            for _ in range(ticks):
                command = loop.follower.sample(t)
                if command is not None:
                    env.set_joint_targets(command)
                env.advance(tick)
                t += tick
            if env.success:
                break
        episode = {'img': np.stack(images).astype(np.uint8),
                   'state': np.stack(states).astype(np.float32),
                   'action': np.stack(actions).astype(np.float32)}
        return bool(env.success), episode
