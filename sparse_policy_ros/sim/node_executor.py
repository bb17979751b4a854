"""
``eval-policy --executor node``: closed-loop episodes run by the policy node's control loop.

The grid executor (``evaluate.run_episode``) applies one action per control step. A robot
gets something else: the node plans each chunk from its current command within the position,
speed and acceleration limits (the safety filter changes targets it cannot follow), drops the
actions already due when the chunk is published, splices it onto the running trajectory, and
the controller interpolates between the points. This executor runs that code
(``control/control_loop.py``, the class the node calls) against the simulator the way
``sim_node`` does, in simulated time:

* every physics tick (``physics_rate``) the arm's servo targets are the commanded trajectory
  sampled at that instant (joint_trajectory_controller semantics, no transport delay);
* joint states and camera frames enter the node's observation history at their rates;
* a call starts when the node would start one: chunked, on the control tick (four per control
  period) once ``replan_threshold`` of the policy's actions are left; streaming, whenever new
  data came and no call is running (or at ``replan_rate``);
* the call's chunk arrives ``latency`` later (its measured predict time, or the fixed latency
  model ``--latency-ms`` for reproducible runs) while the old trajectory keeps running, and is
  then planned and published by the node's code, with the node's parameters.

The joint limits are the policy node's: ``config/policy.yaml`` with the demo arm's URDF, or
the Franka Panda's (``panda_env.controller_limits``), read by the node's own URDF and limit
code (no rclpy). Seeds give the same episodes as the grid executor: only how actions reach the
arm differs.
"""

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from .env import ArmPushEnv
from .seams import seam_metrics
from ..control.control_loop import CallInputs, ControlLoop
from ..control.observation_buffer import ObservationBuffer
from ..control.replanning import NOISE_MODES, Replanner, ReplanSettings
from ..control.safety import JointLimits, SafetyFilter
from ..policy.prefix import ActionPrefix
from ..sparsity.decisions import N_DECISIONS
from ..sparsity.sparse_policy import FEWER_STEP_MODES, SparsePolicy


@dataclass(frozen=True)
class NodeExecutor:
    """The node's parameters and the simulator's rates for ``--executor node``."""

    replan: ReplanSettings = field(default_factory=ReplanSettings)
    executed_actions: int | None = None  # the node's executed_actions (None: every one)
    latency_ms: float | None = None  # None: each call's measured predict time
    sampling_noise: str = 'fresh'
    limit_overrides: dict = field(default_factory=dict)  # node parameters (LIMIT_OVERRIDES)
    physics_rate: float = 100.0  # sim_node's defaults (config/sim.yaml)
    camera_rate: float = 20.0
    joint_state_rate: float = 50.0

    def __post_init__(self):
        """Refuse values the node would refuse, naming the parameter."""
        if self.sampling_noise not in NOISE_MODES:
            raise ValueError(f'sampling_noise must be one of {list(NOISE_MODES)}, got '
                             f'{self.sampling_noise!r}')
        if self.latency_ms is not None and not (np.isfinite(self.latency_ms)
                                                and self.latency_ms >= 0):
            raise ValueError(f'latency_ms must be a finite number >= 0, got {self.latency_ms!r}')
        check_limit_overrides(self.limit_overrides)
        for name in ('physics_rate', 'camera_rate', 'joint_state_rate'):
            if not getattr(self, name) > 0:
                raise ValueError(f'{name} must be > 0, got {getattr(self, name)!r}')


# Node parameters --node-param may set (the joints and their limits).
LIMIT_OVERRIDES = ('joint_names', 'robot_description_file', 'joint_position_lower',
                   'joint_position_upper', 'max_joint_velocity', 'max_joint_acceleration')


def check_limit_overrides(overrides: dict) -> None:
    """Refuse node parameters other than :data:`LIMIT_OVERRIDES`, naming them."""
    unknown = sorted(set(overrides) - set(LIMIT_OVERRIDES))
    if unknown:
        raise ValueError(f'node parameters {unknown} cannot be set here; expected some of '
                         f'{list(LIMIT_OVERRIDES)}')


def node_joint_limits(env_name: str, overrides: dict | None = None
                      ) -> tuple[tuple[str, ...], JointLimits]:
    """
    Return the joint names and limits the policy node runs with for ``env_name``.

    ``config/policy.yaml`` with the demo arm's URDF, or the Panda's limits as ``make demo``
    gives them, then ``overrides`` (parameter values, :data:`LIMIT_OVERRIDES` only); read by the
    node's own URDF and limit code (``ros/robot_description.py``, which imports no rclpy).
    """
    from ..ros.robot_description import configured_joint_limits
    check_limit_overrides(overrides or {})
    values = {}
    if env_name == 'panda_push':
        from .panda_env import controller_limits
        values = {'robot_description_file': '', **controller_limits()}
    return configured_joint_limits({**values, **(overrides or {})})


@dataclass
class _Call:
    """A policy call whose chunk has not arrived yet."""

    done_at: float
    chunk: object
    inputs: CallInputs


def run_episode_node(env: ArmPushEnv, policy: SparsePolicy, seed: int, executor: NodeExecutor,
                     joint_names: tuple[str, ...], limits: JointLimits) -> dict:
    """
    One closed-loop episode driven by the node's control loop; the grid executor's keys.

    Seam metrics use the servo targets at each control period. Extra keys:
    ``chunk_outcomes`` (published / late / infeasible / no_state counts),
    ``velocity_limited`` / ``position_clamped`` (targets the safety filter changed) and
    ``speed_ratio_max`` (the largest target speed between control periods over its limit).
    """
    config = policy.config
    period = 1.0 / config.control_hz
    tick = 1.0 / executor.physics_rate
    settings = executor.replan
    policy.reset()
    env.reset(seed=seed)
    start_distance = env.object_to_goal()
    loop = ControlLoop(joint_names, 'joint_trajectory')
    loop.configure(SafetyFilter(limits, period),
                   Replanner(period, config.n_obs_steps, config.horizon),
                   ObservationBuffer(tuple(config.camera_names), config.state_dim,
                                     config.n_obs_steps, period))
    time_limit = env.max_steps * period
    outcomes = Counter()
    latencies, sparsities, splices, executed, changes = [], [], [], [], []
    decision_counts = np.zeros(N_DECISIONS, dtype=np.int64)
    velocity_limited = position_clamped = 0
    t = next_joint = next_camera = next_tick = next_record = 0.0
    pending: _Call | None = None
    last_noise = None
    calls = held = 0

    def commit(now: float) -> bool:
        """Publish the pending chunk if it has arrived; tell whether one did."""
        nonlocal pending, velocity_limited, position_clamped
        if pending is None or now + 1e-9 < pending.done_at:
            return False
        executable = pending.chunk.executable
        executable = executable[:executor.executed_actions or len(executable)]
        outcome = loop.commit_chunk(executable, pending.inputs.time_base, now)
        outcomes[outcome.status] += 1
        if outcome.splice is not None:
            splices.append(outcome.splice.position_jump)
        if outcome.plan is not None and outcome.status == 'published':
            velocity_limited += outcome.plan.safety.velocity_limited
            position_clamped += outcome.plan.safety.position_clamped
        pending = None
        return True

    while True:
        new_data = False
        if t + 1e-9 >= next_joint:
            loop.buffer.add_joint_state(t, env.state())
            next_joint += 1.0 / executor.joint_state_rate
            new_data = True
        if t + 1e-9 >= next_camera:
            for camera, rgb in env.render_images().items():
                loop.buffer.add_image(camera, t, rgb)
            next_camera += 1.0 / executor.camera_rate
            new_data = True
        arrived = commit(t)
        if settings.streaming:
            check = new_data or arrived
        else:
            check = t + 1e-9 >= next_tick
            while next_tick <= t + 1e-9:
                next_tick += period / 4.0  # the node's control tick
        if pending is None and check and loop.call_due(settings, t):
            try:
                assembled = loop.buffer.assemble()
            except LookupError:
                assembled = None
            if assembled is not None:
                loop.call_started(t, assembled.stamp)
                expected_ms = (executor.latency_ms if executor.latency_ms is not None else
                               float(np.percentile(latencies, 90)) if latencies else 0.0)
                inputs = loop.call_inputs(settings, assembled.stamp, t, expected_ms * 1e-3)
                prefix = (None if inputs.prefix_rows is None
                          else ActionPrefix(inputs.prefix_rows, 0, settings.prefix_until))
                noise = None
                if inputs.shift is not None:  # streaming: what the node's _streaming_reuse does
                    policy.shift_cache(inputs.shift)
                    if executor.sampling_noise == 'shifted' and last_noise is not None:
                        noise = policy.continued_noise(last_noise, inputs.shift)
                generator = torch.Generator().manual_seed(seed * 1000 + calls)
                chunk = policy.predict(assembled.observation, generator=generator,
                                       prefix=prefix, noise=noise)
                last_noise = chunk.noise
                latencies.append(chunk.stats.total_ms)
                if chunk.stats.observation_change is not None:
                    changes.append(chunk.stats.observation_change)
                if calls > 0 or policy.mode in ('dense',) + FEWER_STEP_MODES:  # call 0: dense
                    sparsities.append(chunk.stats.sparsity)
                    kinds = chunk.stats.decisions.flatten().to('cpu', torch.int64).numpy()
                    decision_counts += np.bincount(kinds, minlength=N_DECISIONS)
                latency_ms = (chunk.stats.total_ms if executor.latency_ms is None
                              else executor.latency_ms)
                pending = _Call(t + latency_ms * 1e-3, chunk, inputs)
                calls += 1
                commit(t)  # a zero latency model: the chunk is there at once
        command = loop.follower.sample(t)
        if command is not None:
            env.set_joint_targets(command)
        if t + 1e-9 >= next_record:
            env.disturb_if_due(len(executed))  # before the physics of the coming period
            executed.append(env.joint_targets)
            held += int(command is None)
            next_record += period
        env.advance(tick)
        t += tick
        if env.success or t + 1e-9 >= time_limit:
            break
    return {'seed': seed, 'success': bool(env.success), 'latencies_ms': latencies,
            'sparsity': sparsities, 'deviation': [], 'flops': [], 'calls': calls,
            'decisions': decision_counts.tolist(), 'steps': len(executed), 'held_steps': held,
            'observation_change': changes,
            'object_to_goal_start': start_distance, 'object_to_goal_end': env.object_to_goal(),
            'disturbance': (None if getattr(env, 'disturbance', None) is None
                            else env.disturbance.to_dict()),
            'chunk_outcomes': dict(outcomes),
            'velocity_limited': velocity_limited, 'position_clamped': position_clamped,
            'speed_ratio_max': speed_ratio_max(np.array(executed), period, limits),
            **seam_metrics(np.array(executed), period, splices)}


def speed_ratio_max(targets: np.ndarray, period: float, limits: JointLimits) -> float:
    """Largest |target change| / period over the speed limit, any joint and step (0: none)."""
    if len(targets) < 2:
        return 0.0
    speed = np.abs(np.diff(targets, axis=0)) / period
    return float(np.max(speed / limits.max_velocity))
