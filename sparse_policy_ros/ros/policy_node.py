"""
Lifecycle node serving the sparse diffusion policy to a robot arm's controller.

Transitions: configure loads the model, warms it up and allocates the observation buffer and
safety filter; activate subscribes to cameras and joint states and enables the outputs;
deactivate stops the output (one hold command); cleanup frees the model and device memory.

Receding horizon: a control tick (four per control period) checks the data and, when the
published trajectory has ``replan_threshold`` or fewer actions ahead, hands the assembled
observation to the inference thread. The finished chunk is safety-filtered, stamped
(observation stamp + measured latency), its already-due points dropped, and published.
"""

from collections import Counter
import sys
import threading
import time

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
from rcl_interfaces.msg import SetParametersResult
import rclpy
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from .diagnostics import make_status, RateMeter, RollingWindow
from .image_conversion import compressed_msg_to_rgb, image_msg_to_rgb
from .inference_worker import InferenceWorker
from .joint_states import joint_positions_from_msg
from .message_errors import MessageError
from .node_main import run_node
from .observation_buffer import AssembledObservation, ObservationBuffer
from .params import CONFIGURE, declare, POLICY_PARAMS, RANDOM_MODEL, spec_by_name, values
from .policy_loader import load_sparse_policy
from .safety import ActionRejected, HoldLatch, JointLimits, SafetyFilter
from .trajectory import hold_plan, plan_chunk, stamp_to_seconds, to_joint_trajectory_msg
from .trajectory import TrajectoryPlan
from .trajectory_follower import TrajectoryFollower

REJECTION_KINDS = ('image_encoding', 'image_size', 'image_data', 'joint_missing',
                   'joint_nonfinite', 'joint_data', 'observation_invalid', 'actions_nonfinite',
                   'inference_error')
COMMAND_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LOG_THROTTLE_S = 1.0


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
        self.joint_names = tuple(fixed['joint_names'])
        self.camera_names = tuple(fixed['camera_names'])
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
        self._buffer: ObservationBuffer | None = None
        self._safety: SafetyFilter | None = None
        self._follower = TrajectoryFollower(self.joint_names)  # what this node last commanded
        self._worker: InferenceWorker | None = None
        self._control_period = 0.1
        self._image_hw: tuple[int, int] | None = None
        self._resize = False
        self._active = False
        self._enabled = True
        self._generation = 0  # bumped to discard in-flight chunks (hold, reset, deactivate)
        self._hold_latch = HoldLatch()
        self._holding = False
        self._waiting_reason = ''
        self._reset_statistics()
        self._log_times: dict[str, float] = {}

        self._subscriptions_made = []
        self._tick_timer = None
        self._stream_timer = None
        self._trajectory_pub = None
        self._forward_pub = None
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics',
                                                      COMMAND_QOS)
        self.create_service(Trigger, '~/reset', self.reset_callback)
        self.create_service(SetBool, '~/enable', self.enable_callback)
        self.create_timer(fixed['diagnostics_period'], self.diagnostics_callback)

        self.autostart_ok = True
        if fixed['autostart']:
            self.autostart_ok = (
                self.trigger_configure() == TransitionCallbackReturn.SUCCESS
                and self.trigger_activate() == TransitionCallbackReturn.SUCCESS)

    # ------------------------------------------------------------------ lifecycle
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load and warm up the model, build the buffer, safety filter and publishers."""
        settings = values(self, POLICY_PARAMS)
        try:
            limits = self._joint_limits(settings)
            policy, source, warnings = load_sparse_policy(settings)
        except Exception as error:  # noqa: B902 - any load failure must be reported, not lost
            self.get_logger().error(f'configure failed: {error}')
            return TransitionCallbackReturn.FAILURE
        for warning in warnings:
            self.get_logger().warning(warning)
        config = policy.config
        self._control_period = 1.0 / config.control_hz
        self._image_hw = (config.image_shape[1], config.image_shape[2])
        self._resize = bool(settings['resize_images'])
        with self._policy_lock:
            self._policy = policy
            self._policy_source = source
        with self._lock:
            self._buffer = ObservationBuffer(self.camera_names, config.state_dim,
                                             config.n_obs_steps, self._control_period)
            self._safety = SafetyFilter(limits, self._control_period)
            self._reset_statistics()
        self._worker = InferenceWorker(self._run_inference, self._inference_error)
        if self._output_type in ('joint_trajectory', 'both'):
            self._trajectory_pub = self.create_lifecycle_publisher(
                JointTrajectory, settings['controller_topic'], COMMAND_QOS)
        if self._output_type in ('forward_position', 'both'):
            self._forward_pub = self.create_lifecycle_publisher(
                Float64MultiArray, settings['forward_position_topic'], COMMAND_QOS)
        if settings['model_path'] == RANDOM_MODEL:
            self.get_logger().warning(
                '!!! RANDOM WEIGHTS: model_path is random; the arm will move meaninglessly '
                '(plumbing demo/test only) !!!')
        self.get_logger().info(
            f'configured: model {source} on {policy.device}, mode {policy.mode}, '
            f'{config.control_hz:g} Hz, horizon {config.horizon}, n_obs_steps '
            f'{config.n_obs_steps}, n_action_steps {config.n_action_steps}')
        self._state_label = 'inactive'
        return super().on_configure(state)

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe to the sensors and start the control tick and outputs."""
        for camera, topic in zip(self.camera_names, self._image_topics):
            if topic:
                self._subscriptions_made.append(self.create_subscription(
                    Image, topic, lambda msg, c=camera: self.image_callback(msg, c),
                    qos_profile_sensor_data))
        for camera, topic in zip(self.camera_names, self._compressed_topics):
            if topic:
                self._subscriptions_made.append(self.create_subscription(
                    CompressedImage, topic,
                    lambda msg, c=camera: self.compressed_image_callback(msg, c),
                    qos_profile_sensor_data))
        self._subscriptions_made.append(self.create_subscription(
            JointState, self.get_parameter('joint_state_topic').value,
            self.joint_state_callback, qos_profile_sensor_data))
        with self._lock:
            self._buffer.clear()
            self._follower.clear()
            self._hold_latch.disarm()
            self._holding = False
            self._generation += 1
            self._active = True
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

    def close(self) -> None:
        """Stop everything and free the model; safe in any state, also after rclpy shutdown."""
        with self._lock:
            self._active = False
        self._destroy_activity()
        self._release()

    # ------------------------------------------------------------------ sensor callbacks
    def image_callback(self, msg: Image, camera: str) -> None:
        """Convert a raw camera image and store it."""
        try:
            rgb = image_msg_to_rgb(msg, self._image_hw, self._resize)
        except MessageError as error:
            self._reject(error, f'image[{camera}]')
            return
        self._store_image(camera, msg.header.stamp, rgb)

    def compressed_image_callback(self, msg: CompressedImage, camera: str) -> None:
        """Decode a compressed camera image and store it."""
        try:
            rgb = compressed_msg_to_rgb(msg, self._image_hw, self._resize)
        except MessageError as error:
            self._reject(error, f'compressed_image[{camera}]')
            return
        self._store_image(camera, msg.header.stamp, rgb)

    def joint_state_callback(self, msg: JointState) -> None:
        """Pick the policy's joints (any order, extras ignored) and store them."""
        try:
            positions = joint_positions_from_msg(msg, self.joint_names)
        except MessageError as error:
            self._reject(error, 'joint_states')
            return
        stamp = self._stamp_or_now(msg.header.stamp)
        with self._lock:
            if self._buffer is not None and self._active:
                self._buffer.add_joint_state(stamp, positions)

    # ------------------------------------------------------------------ control
    def control_tick_callback(self) -> None:
        """Check freshness, hold once when stale, start inference when the plan runs low."""
        now = self._now()
        timeout = self.get_parameter('observation_timeout').value
        threshold = self.get_parameter('replan_threshold').value
        with self._lock:
            if not (self._active and self._enabled) or self._buffer is None:
                return
            age = self._buffer.age(now)
            if age is None:
                self._waiting_reason = f'no data yet from {self._buffer.missing_sources()}'
                return
            stale = age > timeout
            if self._hold_latch.update(stale):
                self._generation += 1
                self._publish_hold(now, f'observations stale ({age:.3f} s old > '
                                   f'observation_timeout {timeout:.3f} s)', error=True)
            if stale or self._worker is None or self._worker.busy:
                return
            if self._follower.remaining(now) > threshold:
                return
            try:
                assembled = self._buffer.assemble()
            except LookupError as error:
                self._waiting_reason = str(error)
                return
            self._waiting_reason = ''
            self._worker.submit((self._generation, assembled))

    def forward_stream_callback(self) -> None:
        """Stream the current command for forward_position_controller while a plan runs."""
        now = self._now()
        with self._lock:
            if not (self._active and self._enabled) or self._holding:
                return
            end = self._follower.end_time
            if end is None or now > end + self._control_period:
                return
            command = self._follower.sample(now)
        self._forward_pub.publish(Float64MultiArray(data=command.tolist()))

    def _run_inference(self, job: tuple[int, AssembledObservation]) -> None:
        """Worker thread: predict, filter, stamp and publish one chunk."""
        generation, assembled = job
        with self._policy_lock:
            if self._policy is None:
                return
            try:
                chunk = self._policy.predict(assembled.observation)
            except FloatingPointError as error:
                self._reject(MessageError('actions_nonfinite', 'policy actions',
                                          'finite values', str(error)), 'policy')
                return
            except ValueError as error:
                self._reject(MessageError('observation_invalid', 'observation',
                                          'the policy input contract', str(error)), 'policy')
                return
        now = self._now()
        with self._lock:
            if generation != self._generation or not (self._active and self._enabled):
                self._counts['chunks_discarded'] += 1
                return
            executed = self.get_parameter('executed_actions').value or len(chunk.executable)
            current = self._current_command(now)
            if current is None:
                return
            try:
                plan = plan_chunk(chunk.executable[:executed], assembled.stamp, now,
                                  self._control_period, self.joint_names, self._safety,
                                  current)
            except ActionRejected as error:
                self._reject(MessageError('actions_nonfinite', 'policy actions',
                                          'finite (horizon, dof) values', str(error)),
                             'policy')
                return
            latency = now - assembled.stamp
            self._predict_ms.add(chunk.stats.total_ms)
            self._e2e_ms.add(latency * 1e3)
            self._sparsity.add(chunk.stats.sparsity)
            self._cache_bytes = chunk.stats.cache_bytes
            self._counts['dense_calls'] += int(chunk.stats.dense_call)
            self._skew_ms = assembled.max_skew * 1e3
            if len(plan) == 0:
                self._counts['chunks_late'] += 1
                self._log_throttled('chunks_late',
                                    f'chunk came too late: latency {latency:.3f} s, all '
                                    f'{plan.dropped} actions already due; replanning')
                return
            self._publish_plan(plan, now, current)
            self._holding = False
            self._counts['chunks_published'] += 1
            self._counts['points_dropped'] += plan.dropped
            self._counts['position_clamped'] += plan.safety.position_clamped
            self._counts['velocity_limited'] += plan.safety.velocity_limited
            self._chunk_rate.tick(now)

    def _inference_error(self, error: BaseException) -> None:
        self._reject(MessageError('inference_error', 'inference', 'no exception',
                                  f'{type(error).__name__}: {error}'), 'policy')

    # ------------------------------------------------------------------ services
    def reset_callback(self, request: Trigger.Request,
                       response: Trigger.Response) -> Trigger.Response:
        """Stop, clear the observation history and the rollout cache (next call is dense)."""
        if self._policy is None:
            response.success = False
            response.message = f'not configured (state {self._state_label}); nothing to reset'
            return response
        with self._lock:
            self._generation += 1
            self._stop_motion('reset')
            self._buffer.clear()
            self._follower.clear()
            self._hold_latch.disarm()
        with self._policy_lock:
            freed = self._policy.cache_bytes if self._policy is not None else 0
            if self._policy is not None:
                self._policy.reset()
        with self._lock:
            self._cache_bytes = 0
            self._counts['resets'] += 1
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
            age = self._buffer.age(now) if self._buffer is not None else None
            level, message = self._level_and_message(age, timeout)
            policy = self._policy  # cleanup may drop it meanwhile
            device = str(policy.device) if policy is not None else 'none'
            mode = policy.mode if policy is not None else 'none'
            report = {
                'state': self._state_label,
                'enabled': self._enabled,
                'model': self._policy_source or 'none',
                'device': device,
                'sparsity_mode': mode,
                'predict_latency_p50_ms': self._predict_ms.percentile(50),
                'predict_latency_p99_ms': self._predict_ms.percentile(99),
                'end_to_end_latency_p50_ms': self._e2e_ms.percentile(50),
                'end_to_end_latency_p99_ms': self._e2e_ms.percentile(99),
                'chunk_rate_hz': self._chunk_rate.rate(now),
                'sparsity_mean': self._sparsity.mean(),
                'cache_bytes': self._cache_bytes,
                'observation_age_s': age,
                'observation_skew_ms': self._skew_ms,
            }
            report.update(self._counts)
            report.update({f'rejected_{kind}': self._rejected[kind] for kind in REJECTION_KINDS})
            report['last_error'] = self._last_error or 'none'
            self._rejected_reported = sum(self._rejected.values())
        status = make_status(f'{self.get_name()}: policy', device, level, message, report)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    def _level_and_message(self, age: float | None, timeout: float) -> tuple[bytes, str]:
        if not self._active:
            return DiagnosticStatus.OK, self._state_label
        if not self._enabled:
            return DiagnosticStatus.OK, 'disabled: holding position'
        if age is None:
            return DiagnosticStatus.WARN, f'waiting: {self._waiting_reason or "no data yet"}'
        if age > timeout:
            return DiagnosticStatus.ERROR, (
                f'observations stale: {age:.3f} s old > observation_timeout {timeout:.3f} s; '
                'holding position')
        if sum(self._rejected.values()) > self._rejected_reported:
            return DiagnosticStatus.WARN, f'rejected input: {self._last_error}'
        if self._waiting_reason:
            return DiagnosticStatus.WARN, f'waiting: {self._waiting_reason}'
        return DiagnosticStatus.OK, 'running'

    # ------------------------------------------------------------------ helpers
    def _store_image(self, camera: str, stamp, rgb: np.ndarray) -> None:
        seconds = self._stamp_or_now(stamp)
        with self._lock:
            if self._buffer is not None and self._active:
                self._buffer.add_image(camera, seconds, rgb)

    def _current_command(self, now: float) -> np.ndarray | None:
        """Where the arm is commanded to be now: our plan, else the latest joint state."""
        if self._follower.active:
            return self._follower.sample(now)
        latest = self._buffer.latest_joint_state() if self._buffer is not None else None
        return None if latest is None else latest[1].astype(np.float64)

    def _stop_motion(self, why: str) -> None:
        """Publish one hold if a plan of ours may still be moving the arm (lock held)."""
        if self._follower.active and not self._holding:
            self._publish_hold(self._now(), why, error=False)

    def _publish_hold(self, now: float, why: str, error: bool) -> None:
        """Command the current joint positions (lock held)."""
        latest = self._buffer.latest_joint_state() if self._buffer is not None else None
        positions = latest[1] if latest is not None else self._follower.sample(now)
        if positions is None:
            return
        plan = hold_plan(positions, self.joint_names, now, self._control_period)
        self._publish_plan(plan, now, positions)
        if self._forward_pub is not None:
            self._forward_pub.publish(Float64MultiArray(data=plan.positions[0].tolist()))
        self._holding = True
        self._counts['holds_published'] += 1
        text = f'{why}: holding position {np.round(plan.positions[0], 4).tolist()}'
        # rclpy loggers refuse two severities from one call site: two calls.
        if error:
            self.get_logger().error(text)
        else:
            self.get_logger().info(text)

    def _publish_plan(self, plan: TrajectoryPlan, now: float, current: np.ndarray) -> None:
        if self._trajectory_pub is not None:
            self._trajectory_pub.publish(to_joint_trajectory_msg(plan))
        self._follower.set_trajectory(plan.joint_names, plan.stamp, plan.times_from_start,
                                      plan.positions, now, current)

    def _reject(self, error: MessageError, source: str) -> None:
        with self._lock:
            self._rejected[error.kind] += 1
            self._last_error = f'{source}: {error}'
        self._log_throttled(error.kind, f'rejected {source}: {error}')

    def _log_throttled(self, key: str, text: str) -> None:
        """Warn at most once per LOG_THROTTLE_S per ``key`` (rclpy throttles per call site)."""
        now = time.monotonic()
        if now - self._log_times.get(key, -np.inf) >= LOG_THROTTLE_S:
            self._log_times[key] = now
            self.get_logger().warning(text)

    def _reset_statistics(self) -> None:
        self._predict_ms = RollingWindow(10000)
        self._e2e_ms = RollingWindow(10000)
        self._sparsity = RollingWindow(10000)
        self._chunk_rate = RateMeter(5.0)
        self._cache_bytes = 0
        self._skew_ms = None
        self._counts = Counter(dict.fromkeys((
            'chunks_published', 'chunks_late', 'chunks_discarded', 'holds_published',
            'dense_calls', 'points_dropped', 'position_clamped', 'velocity_limited',
            'resets'), 0))
        self._rejected = Counter()
        self._rejected_reported = 0
        self._last_error = ''

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _stamp_or_now(self, stamp) -> float:
        """Header stamp in seconds; an unset (zero) stamp means 'received now'."""
        seconds = stamp_to_seconds(stamp)
        return seconds if seconds > 0 else self._now()

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
            if self._policy is not None:
                self._policy.close()
            self._policy = None
            self._policy_source = ''
        for publisher in (self._trajectory_pub, self._forward_pub):
            if publisher is not None:
                self.destroy_lifecycle_publisher(publisher)
        self._trajectory_pub = self._forward_pub = None
        with self._lock:
            self._buffer = None
            self._safety = None
            self._follower.clear()

    def _joint_limits(self, settings: dict) -> JointLimits:
        dof = len(self.joint_names)
        for name in ('joint_position_lower', 'joint_position_upper', 'max_joint_velocity'):
            if len(settings[name]) != dof:
                raise ValueError(f'{name}: expected one value per joint ({dof}: '
                                 f'{list(self.joint_names)}), got {settings[name]}')
        return JointLimits(lower=np.array(settings['joint_position_lower']),
                           upper=np.array(settings['joint_position_upper']),
                           max_velocity=np.array(settings['max_joint_velocity']))

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


def main(args: list[str] | None = None) -> int:
    """Run the policy node until shut down; non-zero exit when start-up fails."""
    return run_node('policy_node', PolicyNode, (ValueError,), args)


if __name__ == '__main__':
    sys.exit(main())
