"""
Lifecycle node serving the sparse diffusion policy to a robot arm's controller.

Transitions: configure loads the model, warms it up and allocates the observation buffer and
safety filter; activate subscribes to cameras and joint states and enables the outputs;
deactivate stops the output (one hold command); cleanup frees the model and device memory.

Receding horizon: a control tick (four per control period) checks the data and, when the
published trajectory has ``replan_threshold`` or fewer of the policy's actions ahead, hands the
assembled observation to the inference thread. The finished chunk is stamped (observation
stamp + measured latency), its points due within half a control period dropped, and planned
from the current command and its velocity within the position, speed and acceleration limits,
ending in a braking stop a stock joint_trajectory_controller accepts (``control/planning.py``).
A hold is a braking stop from the current command, never a jump to a measured position.

Streaming (``replan_mode: streaming``, ``control/replanning.py``): a call starts whenever the
worker is free and a newer observation arrived (or at ``replan_rate``), its rows on the
episode's control grid, conditioned on the committed actions (``consistency: prefix``), and
spliced onto the running plan the same way.

History and rollout cache are cleared on activate, on ``~/reset``, on a new episode
(``episode_start_topic``), on a joint jump beyond ``joint_jump_threshold`` and on a clock jump
back; observations stamped in the future (beyond ``future_stamp_tolerance``) are rejected.
"""

import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.impl.implementation_singleton import rclpy_implementation as _rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, Header
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from .description_topic import wait_for_robot_description
from .diagnostics import make_status
from .fidelity_check import FidelityCheck, FidelitySettings
from .image_conversion import compressed_msg_to_rgb, image_msg_to_rgb
from .inference_worker import InferenceWorker
from .joint_states import joint_positions_from_msg
from .node_main import run_node
from .params import CONFIGURE, declare, POLICY_PARAMS, RANDOM_MODEL, spec_by_name, values
from .policy_loader import load_sparse_policy
from .policy_statistics import PolicyStatistics
from .robot_description import load_robot_description, parse_urdf, resolve_joint_limits
from .robot_description import resolve_joint_names, RobotDescription
from .trajectory import stamp_to_seconds, to_joint_trajectory_msg
from ..control.control_loop import ControlLoop
from ..control.message_errors import MessageError
from ..control.observation_buffer import AssembledObservation, ObservationBuffer
from ..control.replanning import Replanner, ReplanSettings
from ..control.safety import ActionRejected, HoldLatch, SafetyFilter
from ..policy.prefix import ActionPrefix

COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LOG_THROTTLE_S = 1.0
CLOCK_JUMP_BACK_S = 0.05  # the clock going back by more than this is a restart (sim reset)
STOP_ACK_TIMEOUT_S = 0.5  # at shutdown, wait this long for the controller to get the stop


class PolicyNode(LifecycleNode):
    """Subscribes to cameras and joint states, publishes timed action chunks."""

    def __init__(self, node_name: str = 'policy_node', *, namespace: str | None = None,
                 context: rclpy.context.Context | None = None,
                 parameter_overrides: list[Parameter] | None = None,
                 cli_args: list[str] | None = None):
        """Declare parameters, services and diagnostics; configure and activate if autostart."""
        super().__init__(node_name, namespace=namespace, context=context,
                         parameter_overrides=parameter_overrides, cli_args=cli_args)
        declare(self, POLICY_PARAMS)
        self._specs = spec_by_name(POLICY_PARAMS)
        fixed = values(self, POLICY_PARAMS)
        # Start-up errors (ValueError) name the parameter: the node cannot run without joints.
        self._description = self._load_description(fixed)
        self.joint_names = resolve_joint_names(fixed['joint_names'], self._description)
        self.camera_names = tuple(fixed['camera_names'])
        self._cameras: tuple[str, ...] = ()  # the model's: none for a state-only model
        self._check_wiring(fixed)
        self._image_topics = list(fixed['image_topics'])
        self._compressed_topics = list(fixed['compressed_image_topics'])
        self._output_type = fixed['output_type']
        self._state_label = 'unconfigured'
        self.add_on_set_parameters_callback(self.parameters_callback)

        self._lock = threading.RLock()  # buffer, follower, flags, statistics
        self._policy_lock = threading.Lock()  # the policy: predict, reset, close
        self._policy = None
        self._policy_source = ''
        # History, replanning and the commanded trajectory (configured at configure).
        self._loop = ControlLoop(self.joint_names, self._output_type, send=self._send_plan)
        self._trajectory_pub = None  # JointTrajectory to the controller (or the preview)
        self._forward_pub = None  # Float64MultiArray to forward_position_controller
        self._stats = PolicyStatistics()
        self._worker: InferenceWorker | None = None
        self._replan_mode = 'chunked'
        self._n_action_steps = 1
        self._fidelity: FidelityCheck | None = None  # online check against a reference
        self._control_period = 0.1
        self._image_hw: tuple[int, int] | None = None
        self._resize = False
        self._active = False
        self._enabled = True
        self._generation = 0  # bumped to discard in-flight chunks (hold, reset, deactivate)
        self._reset_policy_pending = False  # clear the rollout cache before the next predict
        self._last_noise = None  # the primary's last call's noise (sampling_noise: shifted)
        self._last_tick_time: float | None = None  # clock-jump detection
        self._episode_start: float | None = None  # data stamped before it is the old episode
        self._hold_latch = HoldLatch()
        self._waiting_reason = ''
        self._log_times: dict[str, float] = {}

        self._subscriptions_made = []
        self._tick_timer = None
        self._stream_timer = None
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics',
                                                      COMMAND_QOS)
        self.create_service(Trigger, '~/reset', self.reset_callback)
        self.create_service(SetBool, '~/enable', self.enable_callback)
        if fixed['episode_start_topic']:
            self.create_subscription(Header, fixed['episode_start_topic'],
                                     self.episode_start_callback, COMMAND_QOS)
        # Diagnostics on the steady clock: they keep coming while /clock is stopped.
        self.create_timer(fixed['diagnostics_period'], self.diagnostics_callback,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))

        self.autostart_ok = True
        if fixed['autostart']:
            self.autostart_ok = (
                self.trigger_configure() == TransitionCallbackReturn.SUCCESS
                and self.trigger_activate() == TransitionCallbackReturn.SUCCESS)

    # ------------------------------------------------------------------ lifecycle
    def _LifecycleNodeMixin__change_state(self, transition_id: int) -> TransitionCallbackReturn:
        """
        Refuse a transition the current state does not have, with a reason, and keep running.

        rclpy (7.1, Jazzy) raises ``RCLError: Transition is not registered`` out of the
        ``~/change_state`` service callback for one, which ends the executor
        (ros2/rclpy#1209). This overrides the mixin's private ``__change_state``, the one place
        both the service and ``trigger_*`` go through.
        """
        label = self._state_machine.current_state[1]
        available = {t[0]: t[1] for t in self._state_machine.available_transitions}
        if transition_id not in available:
            self.get_logger().error(
                f'refused lifecycle transition {transition_id}: not available in state '
                f'{label!r} (available: {sorted(available.values())})')
            return TransitionCallbackReturn.FAILURE
        try:
            return super()._LifecycleNodeMixin__change_state(transition_id)
        except _rclpy.RCLError as error:
            self.get_logger().error(f'lifecycle transition {transition_id} failed in state '
                                    f'{label!r}: {error}')
            return TransitionCallbackReturn.FAILURE

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load and warm up the model, build the buffer, safety filter and publishers."""
        settings = values(self, POLICY_PARAMS)
        try:
            limits, origins, warnings = resolve_joint_limits(settings, self.joint_names,
                                                             self._description)
            settings['joint_names'] = list(self.joint_names)  # resolved (URDF or parameter)
            policy, source, load_warnings = load_sparse_policy(settings)
            warnings += load_warnings
        except Exception as error:  # noqa: B902 - any load failure must be reported, not lost
            self.get_logger().error(f'configure failed: {error}')
            return TransitionCallbackReturn.FAILURE
        for warning in warnings:
            self.get_logger().warning(warning)
        config = policy.config
        problem = executed_actions_problem(settings['executed_actions'], config.n_action_steps)
        if problem is not None:
            self.get_logger().error(f'configure failed: {problem}')
            policy.close()
            return TransitionCallbackReturn.FAILURE
        self._control_period = 1.0 / config.control_hz
        self._replan_mode = settings['replan_mode']
        self._n_action_steps = config.n_action_steps
        self._image_hw = (config.image_shape[1], config.image_shape[2])
        self._resize = bool(settings['resize_images'])
        fidelity = None
        if policy.mode != 'dense':
            try:
                fidelity = FidelityCheck(policy, FidelitySettings.from_parameters(settings))
            except ValueError as error:
                self.get_logger().error(f'configure failed: fidelity check: {error}')
                policy.close()
                return TransitionCallbackReturn.FAILURE
        with self._policy_lock:
            self._policy = policy
            self._policy_source = source
            self._fidelity = fidelity
        with self._lock:
            self._cameras = tuple(config.camera_names)
            self._loop.configure(
                SafetyFilter(limits, self._control_period),
                Replanner(self._control_period, config.n_obs_steps, config.horizon),
                ObservationBuffer(self._cameras, config.state_dim, config.n_obs_steps,
                                  self._control_period))
            self._stats.clear()
        self._worker = InferenceWorker(self._run_inference, self._inference_error,
                                       on_idle=self._inference_idle)
        if (self._replan_mode == 'streaming' and fidelity is not None
                and settings['fidelity_check_period'] > 0 and settings['replan_rate'] <= 0):
            self.get_logger().warning(
                'streaming with replan_rate 0 leaves no spare cycle: the online fidelity '
                'check runs only when replan_rate > 0 leaves slack')
        if self._output_type in ('joint_trajectory', 'both'):
            self._trajectory_pub = self.create_lifecycle_publisher(
                JointTrajectory, settings['controller_topic'], COMMAND_QOS)
        elif self._output_type == 'preview':  # dry run: the plans, to nobody's controller
            self._trajectory_pub = self.create_lifecycle_publisher(
                JointTrajectory, settings['preview_topic'], COMMAND_QOS)
        if self._output_type in ('forward_position', 'both'):
            self._forward_pub = self.create_lifecycle_publisher(
                Float64MultiArray, settings['forward_position_topic'], COMMAND_QOS)
        if policy.mode == 'ddim_rollout' and (self._replan_mode != 'streaming'
                                              or settings['sampling_noise'] != 'shifted'):
            self.get_logger().warning(
                f'sparsity_mode ddim_rollout reuses steps computed by earlier calls: it is made '
                f'for replan_mode streaming with sampling_noise shifted (got '
                f"{self._replan_mode}, {settings['sampling_noise']}); with fresh noise it "
                'failed almost every episode in evaluation (README)')
        if settings['model_path'] == RANDOM_MODEL:
            self.get_logger().warning(
                '!!! RANDOM WEIGHTS: model_path is random; the arm will move meaninglessly '
                '(plumbing demo/test only) !!!')
        self.get_logger().info(
            f'configured: model {source} on {policy.device}, mode {policy.mode}, '
            f'{config.control_hz:g} Hz, horizon {config.horizon}, n_obs_steps '
            f'{config.n_obs_steps}, n_action_steps {config.n_action_steps}, replan_mode '
            f'{self._replan_mode}')
        if not self._cameras:
            self.get_logger().info('state-only model (no cameras): subscribing to joint states '
                                   'only; camera_names and the image topics are not used')
        self.get_logger().info(
            f'joints {list(self.joint_names)}: position {limits.lower.tolist()} .. '
            f'{limits.upper.tolist()}, velocity {limits.max_velocity.tolist()}, acceleration '
            f'{limits.max_acceleration.tolist()}; from '
            + ', '.join(f'{name}: {origin}' for name, origin in origins.items()))
        self._state_label = 'inactive'
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the sensors and start the control tick and outputs."""
        for camera, topic in zip(self.camera_names, self._image_topics):
            if topic and camera in self._cameras:
                self._subscriptions_made.append(self.create_subscription(
                    Image, topic, lambda msg, c=camera: self.image_callback(msg, c),
                    qos_profile_sensor_data))
        for camera, topic in zip(self.camera_names, self._compressed_topics):
            if topic and camera in self._cameras:
                self._subscriptions_made.append(self.create_subscription(
                    CompressedImage, topic,
                    lambda msg, c=camera: self.compressed_image_callback(msg, c),
                    qos_profile_sensor_data))
        self._subscriptions_made.append(self.create_subscription(
            JointState, self.get_parameter('joint_state_topic').value,
            self.joint_state_callback, qos_profile_sensor_data))
        with self._lock:
            self._clear_state('activate')
            self._loop.holding = False
            self._active = True
            if self.get_parameter('require_arming').value:
                self._enabled = False  # armed again by ~/enable after every activate
        self._tick_timer = self.create_timer(self._control_period / 4.0,
                                             self.control_tick_callback)
        if self._forward_pub is not None:
            self._stream_timer = self.create_timer(self._control_period,
                                                   self.forward_stream_callback)
        self._state_label = 'active'
        self.get_logger().info('active: waiting for observations')
        return super().on_activate(state)

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop new chunks, command one hold, drop the subscriptions."""
        with self._lock:
            self._active = False
            self._generation += 1
            self._stop_motion('deactivated')
        self._destroy_activity()
        self._state_label = 'inactive'
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free the model, its device memory and the publishers."""
        self._release()
        self._state_label = 'unconfigured'
        return super().on_cleanup(state)

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything whatever the state."""
        self.close()
        self._state_label = 'finalized'
        return super().on_shutdown(state)

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Release everything and go back to unconfigured."""
        self.get_logger().error(f'error during a transition from {state.label}: releasing')
        self.close()
        self._state_label = 'unconfigured'
        return TransitionCallbackReturn.SUCCESS

    def stop_motion(self, why: str) -> None:
        """Command a braking stop now if a plan of ours may be moving the arm (e.g. Ctrl-C)."""
        with self._lock:
            self._active = False
            self._generation += 1
            self._stop_motion(why)
        publisher = self._trajectory_pub
        if publisher is not None:
            try:
                publisher.wait_for_all_acked(Duration(seconds=STOP_ACK_TIMEOUT_S))
            except Exception as error:  # noqa: B902 - shutting down: report, never raise
                self.get_logger().warning(f'stop may not have been delivered: {error}')

    def close(self) -> None:
        """Stop everything and free the model; safe in any state, also after rclpy shutdown."""
        with self._lock:
            self._active = False
        self._destroy_activity()
        self._release()

    # ------------------------------------------------------------------ sensor callbacks
    def image_callback(self, msg: Image, camera: str) -> None:
        """Convert a raw camera image and store it."""
        source = f'image[{camera}]'
        try:
            stamp = self._checked_stamp(msg.header.stamp)
            rgb = image_msg_to_rgb(msg, self._image_hw, self._resize)
        except MessageError as error:
            self._reject(error, source)
            return
        self._store_image(camera, stamp, rgb)

    def compressed_image_callback(self, msg: CompressedImage, camera: str) -> None:
        """Decode a compressed camera image and store it."""
        try:
            stamp = self._checked_stamp(msg.header.stamp)
            rgb = compressed_msg_to_rgb(msg, self._image_hw, self._resize)
        except MessageError as error:
            self._reject(error, f'compressed_image[{camera}]')
            return
        self._store_image(camera, stamp, rgb)

    def joint_state_callback(self, msg: JointState) -> None:
        """Pick the policy's joints (any order, extras ignored) and store them."""
        try:
            stamp = self._checked_stamp(msg.header.stamp)
            positions = joint_positions_from_msg(msg, self.joint_names)
        except MessageError as error:
            self._reject(error, 'joint_states')
            return
        threshold = self.get_parameter('joint_jump_threshold').value
        with self._lock:
            if self._loop.buffer is None or not self._active or self._before_episode(stamp):
                return
            latest = self._loop.buffer.latest_joint_state()
            if latest is not None and threshold > 0:
                jump = np.abs(positions - latest[1])
                if float(jump.max()) > threshold:
                    joint = int(np.argmax(jump))
                    self._clear_state('joint_jump')
                    self.get_logger().warning(
                        f'joint {self.joint_names[joint]!r} jumped {jump[joint]:.4f} > '
                        f'joint_jump_threshold {threshold:g}: cleared history and rollout '
                        'cache, dropped the plan')
            error = self._loop.tracking_error(stamp, positions)
            if error is not None:
                self._stats.tracking_error.add(float(error.max()))
            self._loop.buffer.add_joint_state(stamp, positions)
        self._stream_trigger()

    def episode_start_callback(self, msg: Header) -> None:
        """Forget the old episode (history, rollout cache, plan): a new one started."""
        stamp = stamp_to_seconds(msg.stamp)
        with self._lock:
            self._episode_start = stamp if stamp > 0 else None
            if self._loop.buffer is None or not self._active:
                return
            self._clear_state('episode')
        self.get_logger().info(f'episode {msg.frame_id or "?"} started at {stamp:.3f} s: '
                               'cleared history and rollout cache')

    # ------------------------------------------------------------------ control
    def control_tick_callback(self) -> None:
        """Check freshness, hold once when stale, start inference when the plan runs low."""
        now = self._now()
        timeout = self.get_parameter('observation_timeout').value
        with self._lock:
            if not (self._active and self._enabled) or self._loop.buffer is None:
                return
            if self._last_tick_time is not None and now < self._last_tick_time - CLOCK_JUMP_BACK_S:
                self.get_logger().warning(
                    f'clock jumped back {self._last_tick_time - now:.3f} s (restart?): cleared '
                    'history and rollout cache, dropped the plan')
                self._clear_state('clock_jump')
            self._last_tick_time = now
            age = self._loop.buffer.age(now)
            if age is None:
                self._waiting_reason = f'no data yet from {self._loop.buffer.missing_sources()}'
                return
            stale = age > timeout
            if self._hold_latch.update(stale):
                self._generation += 1
                source = self._loop.buffer.stalest_source()
                self._publish_hold(now, f'observations stale ({source} {age:.3f} s old > '
                                   f'observation_timeout {timeout:.3f} s)',
                                   error=True)
            if not stale:
                self._start_inference_if_due(now)

    def _replan_settings(self) -> ReplanSettings:
        """Read the replanning parameters (runtime ones may change between calls)."""
        get = self.get_parameter
        return ReplanSettings(self._replan_mode, get('replan_threshold').value,
                              get('replan_rate').value, get('consistency').value,
                              get('prefix_steps').value, get('prefix_until').value)

    def _start_inference_if_due(self, now: float) -> None:
        """
        Hand the assembled observation to the worker if the replanning rule wants a call.

        Lock held; the caller checked that the node is active, enabled and the data fresh.
        """
        if self._worker is None or self._worker.busy or self._loop.replanner is None:
            return
        if not self._loop.call_due(self._replan_settings(), now):
            return
        try:
            assembled = self._loop.buffer.assemble()
        except LookupError as error:
            self._waiting_reason = str(error)
            return
        self._waiting_reason = ''
        if self._worker.submit((self._generation, assembled)):
            self._loop.call_started(now, assembled.stamp)

    def _stream_trigger(self) -> None:
        """Streaming: start a call when new data came and the worker is free."""
        if self._replan_mode != 'streaming':
            return
        now = self._now()
        timeout = self.get_parameter('observation_timeout').value
        with self._lock:
            if not (self._active and self._enabled) or self._loop.buffer is None:
                return
            age = self._loop.buffer.age(now)
            if age is None or age > timeout:
                return  # the control tick publishes the hold and reports it
            self._start_inference_if_due(now)

    def _inference_idle(self) -> None:
        """Worker thread, after each call: streaming goes on with the newest data at once."""
        self._stream_trigger()

    def forward_stream_callback(self) -> None:
        """Stream the current command for forward_position_controller while a plan runs."""
        now = self._now()
        with self._lock:
            if not (self._active and self._enabled):
                return
            command = self._loop.forward_command(now)
            publisher = self._forward_pub
        if command is not None and publisher is not None:
            publisher.publish(Float64MultiArray(data=command.tolist()))

    def _run_inference(self, job: tuple[int, AssembledObservation]) -> None:
        """Worker thread: predict, filter, stamp and publish one chunk."""
        generation, assembled = job
        with self._policy_lock:
            if self._policy is None:
                return
            with self._lock:
                reset, self._reset_policy_pending = self._reset_policy_pending, False
                if generation != self._generation:
                    self._stats.count('chunks_discarded')
                    return
            if reset:
                self._policy.reset()
                if self._fidelity is not None:
                    self._fidelity.reset()
            served = (self._policy if self._fidelity is None
                      else self._fidelity.served(self._inference_budget()))
            settings = self._replan_settings()
            with self._lock:
                if self._loop.replanner is None:
                    return
                predict_ms = self._stats.predict_percentile_ms(90) or 0.0
                inputs = self._loop.call_inputs(settings, assembled.stamp, self._now(),
                                                predict_ms * 1e-3)
            prefix = (None if inputs.prefix_rows is None
                      else ActionPrefix(inputs.prefix_rows, 0, settings.prefix_until))
            noise = self._streaming_reuse(served, inputs.shift)
            try:
                chunk = served.predict(assembled.observation, prefix=prefix, noise=noise)
            except FloatingPointError as error:
                self._reject(MessageError('actions_nonfinite', 'policy actions',
                                          'finite values', str(error)), 'policy')
                return
            except ValueError as error:
                self._reject(MessageError('observation_invalid', 'observation',
                                          'the policy input contract', str(error)), 'policy')
                return
            if served is self._policy:
                self._last_noise = chunk.noise
        now = self._now()
        with self._lock:
            if generation != self._generation or not (self._active and self._enabled):
                self._stats.count('chunks_discarded')
                return
            executed = self.get_parameter('executed_actions').value or len(chunk.executable)
            self._drop_plan_if_not_followed()
            try:
                outcome = self._loop.commit_chunk(chunk.executable[:executed],
                                                  inputs.time_base, now)
            except ActionRejected as error:
                self._reject(MessageError('actions_nonfinite', 'policy actions',
                                          'finite (horizon, dof) values', str(error)),
                             'policy')
                return
            if outcome.status == 'no_state':
                return
            latency = now - assembled.stamp
            self._stats.record_call(chunk.stats, latency, assembled.max_skew)
            if outcome.status == 'infeasible':
                self._stats.count('chunks_infeasible')
                self._log_throttled('chunks_infeasible',
                                    'chunk refused: its first target cannot be reached within '
                                    'the position, speed and acceleration limits; replanning')
                return
            if outcome.status == 'late':
                self._stats.count('chunks_late')
                self._log_throttled('chunks_late',
                                    f'chunk came too late: latency {latency:.3f} s, all '
                                    f'{outcome.plan.dropped} actions due within half a control '
                                    'period; replanning')
                return
            kept = 0 if prefix is None else len(prefix.actions)
            self._stats.record_published(outcome.plan, outcome.splice, kept, now)
            slack = self._seconds_until_inference(now)
        self._check_fidelity(assembled, chunk, now, slack, prefix)

    def _streaming_reuse(self, served, shift: int | None):
        """
        Streaming: align what this call reuses from the last one; return its noise (or None).

        The rollout cache moves by the control steps since the last call (``shift``), so that
        a reuse-rollout decision (``ddim_rollout``) reads the value computed for the same
        control step; with ``sampling_noise: shifted`` the initial noise continues the last
        call's. Only for the primary policy (a fidelity fallback has its own cache) and not
        for the first call after a reset (policy lock held).
        """
        if shift is None or served is not self._policy:
            return None
        self._policy.shift_cache(shift)
        previous = self._last_noise
        if previous is None or self.get_parameter('sampling_noise').value != 'shifted':
            return None
        return self._policy.continued_noise(previous, shift)

    def _inference_budget(self) -> float:
        """Seconds a call may take before its chunk is late (``Replanner.budget``)."""
        if self._loop.replanner is None:
            return 0.0
        return self._loop.replanner.budget(self._replan_settings(), self._n_action_steps)

    def _seconds_until_inference(self, now: float) -> float:
        """Seconds until the control loop will want the next chunk (lock held)."""
        if self._loop.replanner is None:
            return 0.0
        return self._loop.replanner.seconds_until_due(self._replan_settings(), now,
                                                      self._loop.executable_due)

    def _check_fidelity(self, assembled: AssembledObservation, chunk, now: float,
                        slack: float, prefix: ActionPrefix | None = None) -> None:
        """On a spare cycle, compare the chunk just published with the reference."""
        if self._fidelity is None:
            return
        period = self.get_parameter('fidelity_check_period').value
        with self._policy_lock:
            fidelity = self._fidelity  # cleanup may have dropped it meanwhile
            if fidelity is None or chunk.noise is None or not fidelity.due(now, slack, period):
                return
            before = fidelity.monitor.state
            state = fidelity.run(assembled.observation, chunk, now, prefix)
        if state is not before:
            deviation = fidelity.monitor.last_deviation
            if not fidelity.monitor.in_fallback:
                serving = 'serving the primary'
            elif fidelity.reference_fits(self._inference_budget()):
                serving = 'serving the reference'
            else:
                serving = (f'the reference ({fidelity.latency.estimate * 1e3:.0f} ms) cannot '
                           f'keep up (budget {self._inference_budget() * 1e3:.0f} ms): still '
                           'serving the primary')
            text = (f'fidelity {before.value} -> {state.value}: action deviation '
                    f'{deviation:.4f} from the {fidelity.settings.reference} reference; '
                    f'{serving}')
            if state.value == 'ok':
                self.get_logger().info(text)
            else:
                self.get_logger().warning(text)

    def _inference_error(self, error: BaseException) -> None:
        self._reject(MessageError('inference_error', 'inference', 'no exception',
                                  f'{type(error).__name__}: {error}'), 'policy')

    # ------------------------------------------------------------------ services
    def reset_callback(self, request: Trigger.Request,
                       response: Trigger.Response) -> Trigger.Response:
        """Stop, clear the observation history and the rollout cache (nothing reused across)."""
        if self._policy is None:
            response.success = False
            response.message = f'not configured (state {self._state_label}); nothing to reset'
            return response
        with self._lock:
            self._stop_motion('reset')
            self._clear_state('service')
        with self._policy_lock:
            freed = self._policy.cache_bytes if self._policy is not None else 0
            if self._policy is not None:
                self._policy.reset()
            if self._fidelity is not None:
                self._fidelity.reset()
        with self._lock:
            self._reset_policy_pending = False
            self._stats.cache_bytes = 0
        response.success = True
        response.message = f'cleared observation history and rollout cache ({freed} bytes)'
        self.get_logger().info(response.message)
        return response

    def enable_callback(self, request: SetBool.Request,
                        response: SetBool.Response) -> SetBool.Response:
        """Enable or disable the output; disabling commands one hold."""
        with self._lock:
            was = self._enabled
            self._enabled = bool(request.data)
            if was and not self._enabled:
                self._generation += 1
                self._stop_motion('disabled')
        response.success = True
        response.message = 'enabled' if request.data else 'disabled: holding position'
        self.get_logger().info(response.message)
        return response

    def parameters_callback(self, parameters: list[Parameter]) -> SetParametersResult:
        """Refuse configure-time changes unless unconfigured, and values outside choices."""
        for parameter in parameters:
            spec = self._specs.get(parameter.name)
            if spec is None:
                continue
            if spec.when == CONFIGURE and self._state_label != 'unconfigured':
                return SetParametersResult(
                    successful=False,
                    reason=f'{parameter.name} takes effect at configure; the node is '
                           f'{self._state_label}: deactivate and clean up first')
            problem = spec.check(parameter.value)
            if problem is None and parameter.name == 'executed_actions':
                policy = self._policy
                problem = executed_actions_problem(
                    parameter.value, policy.config.n_action_steps if policy else None)
            if problem is None and parameter.name == 'target_sparsity' and (
                    parameter.value != -1.0 and not 0.0 <= parameter.value < 1.0):
                problem = f'target_sparsity must be -1 or in [0, 1), got {parameter.value}'
            if problem is not None:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    # ------------------------------------------------------------------ diagnostics
    def diagnostics_callback(self) -> None:
        """Publish the node's status on /diagnostics."""
        now = self._now()
        timeout = self.get_parameter('observation_timeout').value
        with self._lock:
            age = self._loop.buffer.age(now) if self._loop.buffer is not None else None
            level, message = self._level_and_message(age, timeout)
            policy = self._policy  # cleanup may drop it meanwhile
            device = str(policy.device) if policy is not None else 'none'
            mode = policy.mode if policy is not None else 'none'
            report = {
                'state': self._state_label,
                'enabled': self._enabled,
                'output_type': self._output_type,
                'model': self._policy_source or 'none',
                'device': device,
                'sparsity_mode': mode,
                'replan_mode': self._replan_mode,
                'replan_rate_target_hz': self.get_parameter('replan_rate').value,
                'consistency': (self.get_parameter('consistency').value
                                if self._replan_mode == 'streaming' else 'none (chunked)'),
                'observation_age_s': age,
            }
            report.update(self._stats.values(now))
            fidelity = self._fidelity
            if fidelity is not None:
                report.update(fidelity.summary())
                if level == DiagnosticStatus.OK and fidelity.monitor.state.value != 'ok':
                    level = DiagnosticStatus.WARN
                    message = (f'fidelity {fidelity.monitor.state.value}: action deviation '
                               f'{fidelity.monitor.last_deviation:.4f} from the '
                               f'{fidelity.settings.reference} reference')
        status = make_status(f'{self.get_name()}: policy', device, level, message, report)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    def _level_and_message(self, age: float | None, timeout: float) -> tuple[bytes, str]:
        if not self._active:
            return DiagnosticStatus.OK, self._state_label
        if not self._enabled:
            if self.get_parameter('require_arming').value:
                return DiagnosticStatus.OK, 'disarmed: call ~/enable with true to move'
            return DiagnosticStatus.OK, 'disabled: holding position'
        if age is None:
            return DiagnosticStatus.WARN, f'waiting: {self._waiting_reason or "no data yet"}'
        if age > timeout:
            return DiagnosticStatus.ERROR, (
                f'observations stale: {self._loop.buffer.stalest_source()} {age:.3f} s old > '
                f'observation_timeout {timeout:.3f} s; holding position')
        if self._stats.new_rejections():
            return DiagnosticStatus.WARN, f'rejected input: {self._stats.last_error}'
        if self._waiting_reason:
            return DiagnosticStatus.WARN, f'waiting: {self._waiting_reason}'
        return DiagnosticStatus.OK, 'running'

    # ------------------------------------------------------------------ helpers
    def _store_image(self, camera: str, seconds: float, rgb: np.ndarray) -> None:
        with self._lock:
            buffer = self._loop.buffer
            if buffer is not None and self._active and not self._before_episode(seconds):
                buffer.add_image(camera, seconds, rgb)
        self._stream_trigger()

    def _latest_joint_state(self) -> tuple[float, np.ndarray] | None:
        """Return the newest (stamp, positions) joint state, None without one (lock held)."""
        return self._loop.buffer.latest_joint_state() if self._loop.buffer is not None else None

    def _clear_state(self, cause: str) -> None:
        """
        Forget history, plan and (before the next call) the rollout cache (lock held).

        The plan is dropped without a stop: after an episode reset, a joint jump or a clock
        jump it no longer describes the arm, and the next chunk starts from the measured state.
        """
        self._generation += 1
        if self._loop.buffer is not None:
            self._loop.buffer.clear()
        self._loop.clear()
        self._hold_latch.disarm()
        self._last_tick_time = None
        self._last_noise = None
        self._reset_policy_pending = True
        self._stats.reset_by(cause)

    def _drop_plan_if_not_followed(self) -> None:
        """
        Drop the plan when the arm is farther from it than ``start_tolerance`` (lock held).

        A new chunk starts from the current command. When the newest joint state lies far
        from what was commanded at its stamp, that command no longer describes the arm (it is
        blocked or was moved, another controller drives it, or a simulator reset was heard
        late), and a chunk starting there would make the controller jump from where the arm
        really is: the chunk then starts from the measured position at rest.
        """
        tolerance = self.get_parameter('start_tolerance').value
        latest = self._latest_joint_state()
        if tolerance <= 0 or latest is None:
            return
        error = self._loop.tracking_error(*latest)
        if error is None or float(error.max()) <= tolerance:
            return
        joint = int(np.argmax(error))
        self._loop.clear()
        self._stats.count('plans_dropped_tracking')
        self._log_throttled('plans_dropped_tracking',
                            f'joint {self.joint_names[joint]!r} is {error[joint]:.4f} from the '
                            f'command at its last joint state (start_tolerance {tolerance:g}): '
                            'the arm is not following the plan; dropped it, the chunk starts '
                            'from the measured position')

    def _before_episode(self, stamp: float) -> bool:
        """Tell whether data stamped ``stamp`` belongs to an episode before the current one."""
        return self._episode_start is not None and stamp < self._episode_start

    def _stop_motion(self, why: str) -> None:
        """Publish one stop if a plan of ours may still be moving the arm (lock held)."""
        if self._loop.commanding:
            self._publish_hold(self._now(), why, error=False)

    def _publish_hold(self, now: float, why: str, error: bool) -> None:
        """
        Brake to rest from the current command within the limits (lock held).

        Nothing is published when nothing was commanded yet (the arm is not moving on our
        account) or when the node is not configured.
        """
        plan = self._loop.brake(now)
        if plan is None:
            self.get_logger().info(f'{why}: nothing commanded yet, no stop needed')
            return
        self._stats.count('holds_published')
        text = (f'{why}: braking to {np.round(plan.positions[0], 4).tolist()} in '
                f'{plan.times_from_start[0]:.3f} s')
        # rclpy loggers refuse two severities from one call site: two calls.
        if error:
            self.get_logger().error(text)
        else:
            self.get_logger().info(text)

    def _send_plan(self, plan) -> None:
        """Publish a plan to the controller, or to the preview topic in a dry run."""
        if self._trajectory_pub is not None:
            self._trajectory_pub.publish(to_joint_trajectory_msg(plan))

    def _reject(self, error: MessageError, source: str) -> None:
        with self._lock:
            text = self._stats.reject(error, source)
        self._log_throttled(error.kind, text)

    def _log_throttled(self, key: str, text: str) -> None:
        """Warn at most once per LOG_THROTTLE_S per ``key`` (rclpy throttles per call site)."""
        now = time.monotonic()
        if now - self._log_times.get(key, -np.inf) >= LOG_THROTTLE_S:
            self._log_times[key] = now
            self.get_logger().warning(text)

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _checked_stamp(self, stamp) -> float:
        """
        Header stamp in seconds; an unset (zero) stamp means 'received now'.

        Raises MessageError for a stamp later than now plus ``future_stamp_tolerance``: it would
        make the data look fresh for as long as the clock takes to reach it.
        """
        now = self._now()
        seconds = stamp_to_seconds(stamp)
        if seconds <= 0:
            return now
        tolerance = self.get_parameter('future_stamp_tolerance').value
        if seconds > now + tolerance:
            raise MessageError('stamp_future', 'header.stamp',
                               f'<= now + future_stamp_tolerance ({now:.6f} + {tolerance:g} s)',
                               f'{seconds:.6f} s ({seconds - now:+.3f} s ahead)')
        return seconds

    def _destroy_activity(self) -> None:
        for subscription in self._subscriptions_made:
            self.destroy_subscription(subscription)
        self._subscriptions_made = []
        for timer in (self._tick_timer, self._stream_timer):
            if timer is not None:
                self.destroy_timer(timer)
        self._tick_timer = self._stream_timer = None

    def _release(self) -> None:
        if self._worker is not None:
            self._worker.close()
            self._worker = None
        with self._policy_lock:
            if self._fidelity is not None:
                self._fidelity.close()
                self._fidelity = None
            if self._policy is not None:
                self._policy.close()
            self._policy = None
            self._policy_source = ''
        with self._lock:
            publishers = (self._trajectory_pub, self._forward_pub)
            self._loop.release()
            self._trajectory_pub = self._forward_pub = None
        for publisher in publishers:
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)

    def _load_description(self, fixed: dict) -> RobotDescription | None:
        """Parse the URDF from the parameter, the file or the topic (set at most one)."""
        topic = fixed['robot_description_topic']
        if not topic:
            return load_robot_description(fixed['robot_description'],
                                          fixed['robot_description_file'])
        others = [name for name in ('robot_description', 'robot_description_file')
                  if fixed[name]]
        if others:
            raise ValueError(f'robot_description_topic {topic!r} and {others} are both set; '
                             f"set one (set {others[0]} to '' to take the URDF from the topic)")
        text = wait_for_robot_description(self, topic, fixed['robot_description_timeout'])
        return parse_urdf(text, f'robot_description_topic {topic}')

    def _check_wiring(self, fixed: dict) -> None:
        if not self.joint_names or len(set(self.joint_names)) != len(self.joint_names):
            raise ValueError(f'joint_names: expected unique names, got {list(self.joint_names)}')
        if not self.camera_names:
            raise ValueError('camera_names: expected at least one camera, got []')
        for name in ('image_topics', 'compressed_image_topics'):
            if len(fixed[name]) != len(self.camera_names):
                raise ValueError(f'{name}: expected one entry per camera '
                                 f"{list(self.camera_names)} ('' for none), got {fixed[name]}")
        for camera, raw, compressed in zip(self.camera_names, fixed['image_topics'],
                                           fixed['compressed_image_topics']):
            if not raw and not compressed:
                raise ValueError(f'image_topics/compressed_image_topics: expected a topic for '
                                 f'camera {camera!r}, got none')


def executed_actions_problem(value: int, n_action_steps: int | None) -> str | None:
    """Return why ``executed_actions`` cannot be used with the model, or None."""
    if value == 1:
        return ('executed_actions must be 0 (all) or >= 2, got 1: action 0 is always already '
                'due when a chunk is published, so nothing would be executed')
    if n_action_steps is not None and value > n_action_steps:
        return (f"executed_actions must be <= the model's n_action_steps ({n_action_steps}), "
                f'got {value}')
    return None


def main(args: list[str] | None = None) -> int:
    """Run the policy node until shut down; non-zero exit when start-up fails."""
    return run_node('policy_node', PolicyNode, (ValueError,), args)


if __name__ == '__main__':
    sys.exit(main())
