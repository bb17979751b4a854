"""
Simulated arm for the closed loop: the MuJoCo push task behind ROS topics.

Publishes what a real cell would: ``<prefix>/<camera>/image_raw`` (rgb8), ``joint_states`` and
``/clock``, all stamped with simulated time; executes ``JointTrajectory`` commands with
joint_trajectory_controller semantics (see ``control/trajectory_follower.py``). A loop thread steps
the physics at ``physics_rate`` ticks per simulated second, in real time scaled by
``real_time_factor`` or as fast as possible (0). Episodes end on success or after
``max_episode_time``; each outcome is published as JSON on ``~/episode`` and the next episode
starts with the next seed. ``~/reset_episode`` aborts the current one and restarts with the
``seed`` parameter. A reset moves the arm at once; ``~/episode_start`` announces the episode
``command_delay`` later (its header stamp), and commands stamped before that are ignored: a
controller node may still publish a chunk it planned from the old episode's arm before it heard
of the reset (at tens of chunks per second one is almost always in flight).

``teleop: expert`` stands in for a teleoperator: the scripted PushExpert (it reads the puck, which
only this process can see) commands the arm. Each control step (1 / 10 s) from the announced
episode start it publishes a one-point ``JointTrajectory`` on ``trajectory_topic``, due one
control step after its stamp, as a teleop device would, and the simulation follows it; commands
from other nodes are then not taken. ``recorder_node`` records such runs as demonstrations.
"""

import json
import sys
import threading
import time

from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from .diagnostics import make_status
from .image_conversion import rgb_to_image_fields
from .node_main import run_node
from .params import declare, SIM_PARAMS, spec_by_name, values
from .trajectory import points_from_msg, seconds_to_stamp, stamp_to_seconds
from ..control.message_errors import MessageError
from ..control.trajectory_follower import TrajectoryFollower
from ..sim.env import ArmPushEnv
from ..sim.envs import make_env
from ..sim.expert import PushExpert

RELIABLE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Fall this far behind the wall clock and the pacing gives up catching up (no bursts).
MAX_LAG_S = 0.2


class SimNode(Node):
    """ArmPushEnv with camera, joint state and clock publishers and a trajectory input."""

    def __init__(self, node_name: str = 'sim_node', *, namespace: str | None = None,
                 context: rclpy.context.Context | None = None,
                 parameter_overrides: list[Parameter] | None = None,
                 cli_args: list[str] | None = None):
        """Load the task, create the interfaces and start the simulation thread."""
        super().__init__(node_name, namespace=namespace, context=context,
                         parameter_overrides=parameter_overrides, cli_args=cli_args)
        declare(self, SIM_PARAMS)
        p = values(self, SIM_PARAMS)
        for name in ('teleop', 'task'):
            problem = spec_by_name(SIM_PARAMS)[name].check(p[name])
            if problem is not None:
                raise ValueError(f'parameter {problem}')
        self._task = p['task']
        self._tick = 1.0 / p['physics_rate']
        self._camera_period = 1.0 / p['camera_rate']
        self._joint_period = 1.0 / p['joint_state_rate']
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ready = threading.Event()  # the loop thread made the task
        self._go = threading.Event()  # the publishers exist: start stepping
        self._startup_error: BaseException | None = None
        self._reset_request: tuple[int, threading.Event] | None = None
        self._time = 0.0  # simulated seconds since start, monotonic across episodes
        self._next_camera = 0.0
        self._next_joint = 0.0
        self._episode = 0
        self._seed = int(p['seed'])
        self._episode_start = 0.0
        self._episode_start_stamp = 0.0  # header stamp of the episode start (s)
        self._episode_running = False
        self._counts = {'trajectories_accepted': 0, 'trajectories_rejected': 0,
                        'trajectories_before_episode': 0, 'episodes': 0, 'successes': 0}
        self._last_error = ''
        self._wall_rate = (time.monotonic(), 0.0)  # (wall, sim) at the last diagnostics

        # The renderer's GL context belongs to the thread that made it: the loop thread owns
        # the task from creation to close, and other threads only post requests to it.
        self.env: ArmPushEnv | None = None
        self._thread = threading.Thread(target=self._run, args=(int(p['image_size']),),
                                        name='sim_loop', daemon=True)
        self._thread.start()
        self._ready.wait()
        if self._startup_error is not None:
            raise RuntimeError(f'could not create the simulation: {self._startup_error!r}')
        self.joint_names = tuple(self.env.joint_names)
        self._follower = TrajectoryFollower(self.joint_names)
        self._expert = PushExpert(self.env) if p['teleop'] == 'expert' else None
        self._command_period = 1.0 / self.env.control_hz
        self._next_command = 0.0  # sim time of the expert's next command
        self._clock_pub = (self.create_publisher(Clock, '/clock', RELIABLE_QOS)
                           if p['publish_clock'] else None)
        prefix = p['image_topic_prefix'].rstrip('/')
        self._image_pubs = {
            camera: self.create_publisher(Image, f'{prefix}/{camera}/image_raw',
                                          qos_profile_sensor_data)
            for camera in self.env.camera_names}
        self._joint_pub = self.create_publisher(JointState, p['joint_state_topic'],
                                                RELIABLE_QOS)
        self._episode_pub = self.create_publisher(String, '~/episode', RELIABLE_QOS)
        # A new episode starts: header.stamp is its start (sim time), frame_id its number.
        # The policy node follows it to clear its history and rollout cache.
        self._episode_start_pub = self.create_publisher(Header, '~/episode_start',
                                                        RELIABLE_QOS)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics',
                                                      RELIABLE_QOS)
        if self._expert is None:
            self.create_subscription(JointTrajectory, p['trajectory_topic'],
                                     self.trajectory_callback, RELIABLE_QOS)
        else:  # the expert holds the arm's command topic, as a teleop device would
            self._command_pub = self.create_publisher(JointTrajectory, p['trajectory_topic'],
                                                      RELIABLE_QOS)
        self.create_service(Trigger, '~/reset_episode', self.reset_episode_callback)
        self.create_timer(p['diagnostics_period'], self.diagnostics_callback)

        self._go.set()
        self.get_logger().info(
            f'simulating {self._task}: {list(self.joint_names)} with cameras '
            f'{self.env.camera_names} at '
            f'{p["physics_rate"]:g} ticks/s, real_time_factor {p["real_time_factor"]:g}, '
            f'teleop {p["teleop"]}')

    @property
    def sim_time(self) -> float:
        """Return the simulated seconds since the node started."""
        with self._lock:
            return self._time

    # ------------------------------------------------------------------ callbacks
    def trajectory_callback(self, msg: JointTrajectory) -> None:
        """Replace the active trajectory (joint_trajectory_controller semantics)."""
        with self._lock:
            stamp = stamp_to_seconds(msg.header.stamp)
            if self._episode > 0 and 0.0 < stamp < self._episode_start_stamp:
                # Planned for the arm before the reset moved it: following it would pull
                # the new episode's arm toward the old one's targets.
                self._counts['trajectories_before_episode'] += 1
                self.get_logger().info(
                    f'ignored a trajectory stamped {stamp:.3f} s, before episode '
                    f'{self._episode} started at {self._episode_start_stamp:.3f} s',
                    throttle_duration_sec=1.0)
                return
            self._follow(msg)

    def _follow(self, msg: JointTrajectory) -> bool:
        """Make ``msg`` the active trajectory, or count it rejected (lock held)."""
        try:
            times, positions, velocities = points_from_msg(msg)
            self._follower.set_trajectory(list(msg.joint_names),
                                          stamp_to_seconds(msg.header.stamp), times,
                                          positions, self._time, self.env.joint_targets,
                                          velocities)
        except MessageError as error:
            self._counts['trajectories_rejected'] += 1
            self._last_error = str(error)
            self.get_logger().warning(f'rejected trajectory: {error}',
                                      throttle_duration_sec=1.0)
            return False
        self._counts['trajectories_accepted'] += 1
        return True

    def reset_episode_callback(self, request: Trigger.Request,
                               response: Trigger.Response) -> Trigger.Response:
        """Abort the current episode and start one with the ``seed`` parameter."""
        seed = int(self.get_parameter('seed').value)
        done = threading.Event()
        with self._lock:
            self._reset_request = (seed, done)
        if not done.wait(timeout=5.0) or not self._thread.is_alive():
            response.success = False
            response.message = 'the simulation loop did not take the reset (is it running?)'
            return response
        with self._lock:
            episode = self._episode
        response.success = True
        response.message = f'episode {episode} started with seed {seed}'
        return response

    def diagnostics_callback(self) -> None:
        """Publish episode and timing status on /diagnostics."""
        wall = time.monotonic()
        with self._lock:
            sim = self._time
            report = {'episode': self._episode, 'seed': self._seed, 'sim_time_s': sim,
                      'episode_running': self._episode_running,
                      'task': self._task,
                      'teleop': 'none' if self._expert is None else 'expert',
                      'trajectory_active': self._follower.active, **self._counts,
                      'last_error': self._last_error or 'none'}
        last_wall, last_sim = self._wall_rate
        self._wall_rate = (wall, sim)
        report['real_time_factor_achieved'] = (sim - last_sim) / max(wall - last_wall, 1e-9)
        status = make_status(f'{self.get_name()}: simulation', 'mujoco',
                             DiagnosticStatus.OK, 'running', report)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self._stamp(sim)
        self._diagnostics_pub.publish(array)

    # ------------------------------------------------------------------ simulation
    def _run(self, image_size: int) -> None:
        """Loop thread: make the task, wait for the publishers, simulate, close the task."""
        try:
            self.env = make_env(self._task, image_size=image_size, render=True)
        except Exception as error:  # noqa: B902 - handed to __init__, which raises it
            self._startup_error = error
            self._ready.set()
            return
        self._ready.set()
        try:
            self._go.wait()
            with self._lock:
                self._start_episode(self._seed)
            self._loop()
        finally:
            self.env.close()

    def _loop(self) -> None:
        anchor_wall, anchor_sim, anchor_rtf = time.monotonic(), 0.0, None
        while not self._stop.is_set():
            rtf = float(self.get_parameter('real_time_factor').value)
            with self._lock:
                try:
                    self._step()
                except Exception as error:  # noqa: B902 - report, then stop simulating
                    self.get_logger().fatal(f'simulation stopped: {error!r}')
                    return
                now = self._time
            if rtf <= 0.0:
                time.sleep(0)  # let the executor thread take the lock
                continue
            wall = time.monotonic()
            target = anchor_wall + (now - anchor_sim) / rtf
            if rtf != anchor_rtf or wall - target > MAX_LAG_S:
                anchor_wall, anchor_sim, anchor_rtf = wall, now, rtf
                continue
            if target > wall:
                self._stop.wait(target - wall)

    def _step(self) -> None:
        """Advance one tick: requests, command, physics, sensors, episode end (lock held)."""
        if self._reset_request is not None:
            (seed, done), self._reset_request = self._reset_request, None
            if self._episode_running:
                self._finish_episode('aborted')
            self._start_episode(seed)
            done.set()
        if (self._expert is not None and self._episode_running
                and self._time + 1e-9 >= self._next_command):
            self._next_command += self._command_period
            self._expert_command()
        command = self._follower.sample(self._time)
        if command is not None:
            self.env.set_joint_targets(command)
        self.env.advance(self._tick)
        self._time += self._tick
        stamp = self._stamp(self._time)
        if self._clock_pub is not None:
            self._clock_pub.publish(Clock(clock=stamp))
        if self._time + 1e-9 >= self._next_joint:
            self._next_joint += self._joint_period
            msg = JointState(name=list(self.joint_names),
                             position=self.env.state().astype(np.float64).tolist())
            msg.header.stamp = stamp
            self._joint_pub.publish(msg)
        if self._time + 1e-9 >= self._next_camera:
            self._next_camera += self._camera_period
            for camera, rgb in self.env.render_images().items():
                image = Image(**rgb_to_image_fields(rgb))
                image.header.stamp = stamp
                image.header.frame_id = f'{camera}_camera'
                self._image_pubs[camera].publish(image)
        if self._episode_running:
            if self.env.success:
                self._finish_episode('success')
            elif self._time - self._episode_start >= self.get_parameter(
                    'max_episode_time').value:
                self._finish_episode('timeout')
            if not self._episode_running and self.get_parameter('autoreset').value:
                self._start_episode(self._seed + 1)

    def _expert_command(self) -> None:
        """Publish and follow the expert's next target, due one control step ahead (lock held)."""
        sec, nanosec = seconds_to_stamp(self._command_period)
        point = JointTrajectoryPoint(positions=self._expert.act().tolist(),
                                     time_from_start=Duration(sec=sec, nanosec=nanosec))
        msg = JointTrajectory(header=Header(stamp=self._stamp(self._time)),
                              joint_names=list(self.joint_names), points=[point])
        if self._follow(msg):
            self._command_pub.publish(msg)

    def _start_episode(self, seed: int) -> None:
        """Reset the task with ``seed`` (lock held)."""
        self.env.reset(seed)
        self._follower.clear()
        self._seed = seed
        self._episode += 1
        self._episode_start = self._time
        # Commands stamped before the announced start were planned for the old episode (or
        # before the policy could know of the reset): ignored, the arm rests until then.
        announced = self._time + self.get_parameter('command_delay').value
        self._episode_start_stamp = stamp_to_seconds(self._stamp(announced))
        if self._expert is not None:
            self._expert.reset(seed)
            self._next_command = announced
        self._episode_running = True
        self._next_camera = self._next_joint = self._time  # publish the new scene at once
        self._episode_start_pub.publish(Header(stamp=self._stamp(announced),
                                               frame_id=str(self._episode)))

    def _finish_episode(self, reason: str) -> None:
        """Publish the outcome of the running episode (lock held)."""
        success = reason == 'success'
        self._episode_running = False
        self._counts['episodes'] += 1
        self._counts['successes'] += int(success)
        outcome = {'episode': self._episode, 'seed': self._seed, 'success': success,
                   'reason': reason, 'duration_s': round(self._time - self._episode_start, 6),
                   'object_to_goal_m': round(self.env.object_to_goal(), 6),
                   'sim_time_s': round(self._time, 6)}
        self._episode_pub.publish(String(data=json.dumps(outcome)))
        self.get_logger().info(f'episode {self._episode} (seed {self._seed}): {reason}')

    @staticmethod
    def _stamp(seconds: float) -> Time:
        sec, nanosec = seconds_to_stamp(seconds)
        return Time(sec=sec, nanosec=nanosec)

    def close(self) -> None:
        """Stop the simulation thread and free the renderer."""
        self._stop.set()
        self._go.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=5.0)


def main(args: list[str] | None = None) -> int:
    """Run the simulation node until shut down; non-zero exit when the task cannot start."""
    return run_node('sim_node', SimNode, (RuntimeError, ValueError), args)


if __name__ == '__main__':
    sys.exit(main())
