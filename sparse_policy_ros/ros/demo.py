"""
Closed-loop demo without the ros2 CLI (``make demo``): the simulated arm driven by the policy.

Starts ``sim_node`` and ``policy_node`` as two processes with the parameter files the launch
file uses, keeps DDS on loopback with a domain of its own, runs ``--episodes`` episodes over
DDS, and prints the success rate, chunk rate, end-to-end latency (image stamp to trajectory
publish, from the policy's /diagnostics) and achieved sparsity. Without a trained
``models/default`` it falls back to random weights and says so loudly.
"""

import argparse
from collections import deque
from dataclasses import dataclass, field
import json
import os
from pathlib import Path
import platform
import signal
import subprocess
import sys
import tempfile
import time

from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from tqdm import tqdm
from trajectory_msgs.msg import JointTrajectory
import yaml

from .diagnostics import status_values
from .joint_states import joint_positions_from_msg
from .jtc_validation import CommandedMotionChecker
from .params import RANDOM_MODEL, SPARSITY_MODES
from .paths import default_model_dir, package_path
from .robot_description import configured_joint_limits
from .trajectory import stamp_to_seconds
from ..control.message_errors import MessageError
from ..control.safety import JointLimits
from ..policy.checkpoint import load_config

RELIABLE_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
# Random weights run the pruner at this sparsity so the demo's timing means something.
RANDOM_TARGET_SPARSITY = 0.9
EMPTY = "''"  # an empty string on the --ros-args command line (values are YAML)
# Two joint states this close (rad or m, any joint) mean the arm is at rest.
REST_TOLERANCE = 1e-4
TASKS = ('arm_push', 'panda_push')  # sim.envs.ENV_NAMES (not imported: it loads MuJoCo)


def isolate_dds() -> str:
    """
    Keep DDS on loopback; children inherit it.

    A ROS_DOMAIN_ID the caller set is honoured; without one the domain is unique to this run.
    """
    domain = os.environ.get('ROS_DOMAIN_ID') or str(os.getpid() % 100 + 110)
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ['ROS_DOMAIN_ID'] = domain
    os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    return domain


@dataclass
class DemoState:
    """What the monitor node has heard."""

    outcomes: list[dict] = field(default_factory=list)
    policy_status: dict[str, str] = field(default_factory=dict)
    sim_status: dict[str, str] = field(default_factory=dict)
    trajectories: int = 0
    counting: bool = False
    checker: CommandedMotionChecker | None = None  # stock JTC rules and limits, every message
    stamped_before_episode: int = 0  # commands planned before a sim reset (the sim ignores them)
    unchecked_before_first_episode: int = 0  # commands before the monitor saw an episode start
    # Commands of an episode in which the arm was already moving when the monitor got its first
    # one (it missed earlier commands, e.g. its subscription matched late): their motion cannot
    # be rebuilt from rest, so the rest of that episode is not checked.
    unchecked_missed_commands: int = 0
    # checked message index -> its stamp minus the latest episode start (failure reports)
    after_episode_start: dict[int, float] = field(default_factory=dict)


class DemoMonitor(Node):
    """Listens to episodes, diagnostics and commands; calls the reset services."""

    def __init__(self, command_topic: str, limits: JointLimits | None = None,
                 joint_names: tuple[str, ...] = (), context=None):
        """Subscribe to what the demo reports on; check every command against ``limits``."""
        super().__init__('demo_monitor', context=context)
        self.state = DemoState()
        self.joint_names = tuple(joint_names)
        # Recent (stamp, measured positions): where an idle arm rests when a command comes.
        self._positions: deque[tuple[float, np.ndarray]] = deque(maxlen=200)
        self._episode_start: float | None = None  # stamp of the latest episode start
        self._missed_commands = False  # this episode's motion cannot be rebuilt (see state)
        if limits is not None:
            self.state.checker = CommandedMotionChecker(self.joint_names, limits)
            self.create_subscription(JointState, 'joint_states', self.joint_state_callback,
                                     qos_profile_sensor_data)
            self.create_subscription(Header, '/sim_node/episode_start',
                                     self.episode_start_callback, RELIABLE_QOS)
        self.create_subscription(String, '/sim_node/episode', self.episode_callback,
                                 RELIABLE_QOS)
        self.create_subscription(DiagnosticArray, '/diagnostics', self.diagnostics_callback,
                                 RELIABLE_QOS)
        self.create_subscription(JointTrajectory, command_topic, self.trajectory_callback,
                                 RELIABLE_QOS)
        self.reset_sim = self.create_client(Trigger, '/sim_node/reset_episode')
        self.reset_policy = self.create_client(Trigger, '/policy_node/reset')

    def episode_callback(self, msg: String) -> None:
        """Record an episode outcome once counting started (aborted ones are not episodes)."""
        outcome = json.loads(msg.data)
        if self.state.counting and outcome['reason'] != 'aborted':
            self.state.outcomes.append(outcome)
            # The policy node follows /sim_node/episode_start itself: no reset call here.

    def diagnostics_callback(self, msg: DiagnosticArray) -> None:
        """Keep the latest status of each node."""
        for status in msg.status:
            if status.name.startswith('policy_node'):
                self.state.policy_status = status_values(status)
            elif status.name.startswith('sim_node'):
                self.state.sim_status = status_values(status)

    def trajectory_callback(self, msg: JointTrajectory) -> None:
        """Count the commands sent while episodes are counted; check every one."""
        if self.state.counting:
            self.state.trajectories += 1
        checker = self.state.checker
        if checker is not None:
            # The node planned from the joint state it had when it stamped the message.
            stamp = stamp_to_seconds(msg.header.stamp)
            if self._episode_start is None or not self._positions:
                # Before the demo's first reset the monitor may have missed earlier commands
                # (it starts after the nodes), so it cannot rebuild the motion they began.
                self.state.unchecked_before_first_episode += 1
                return
            if 0.0 < stamp < self._episode_start:
                # Planned before the simulator reset the arm; the sim node ignores it.
                self.state.stamped_before_episode += 1
                return
            before = [p for t, p in self._positions if t <= stamp]
            if not checker.following and not self._missed_commands:
                # The first command the monitor gets in an episode starts from rest, unless it
                # missed earlier ones that already move the arm.
                self._missed_commands = arm_moving(before)
            if self._missed_commands:
                self.state.unchecked_missed_commands += 1
                return
            self.state.after_episode_start[checker.messages] = stamp - self._episode_start
            checker.add(msg, start_position=before[-1] if before else self._positions[0][1])

    def joint_state_callback(self, msg: JointState) -> None:
        """Keep the latest measured position (the start of motion from rest)."""
        try:
            self._positions.append((stamp_to_seconds(msg.header.stamp),
                                    joint_positions_from_msg(msg, self.joint_names)))
        except MessageError:
            pass  # the policy node reports bad joint states; nothing to check here

    def episode_start_callback(self, msg: Header) -> None:
        """Restart the motion check: the simulator reset the arm (it rests where measured)."""
        self._episode_start = stamp_to_seconds(msg.stamp)
        self._missed_commands = False
        if self.state.checker is not None:
            self.state.checker.restart()


def arm_moving(positions: list[np.ndarray], tolerance: float = REST_TOLERANCE) -> bool:
    """Tell whether the last two measured positions differ by more than ``tolerance``."""
    if len(positions) < 2:
        return False
    return float(np.max(np.abs(positions[-1] - positions[-2]))) > tolerance


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the demo's command line."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0].strip(),
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument('--episodes', type=int, default=3, help='episodes to run')
    parser.add_argument('--task', default=None, choices=TASKS,
                        help="simulated task (default: the model's, else arm_push); "
                             'panda_push: the Franka Panda of gym-hil with models/panda_push '
                             'unless --model-path is given, and the Panda joint limits')
    parser.add_argument('--seed', type=int, default=0, help='seed of the first episode')
    parser.add_argument('--max-episode-time', type=float, default=12.0,
                        help='simulated seconds before an episode times out')
    parser.add_argument('--real-time-factor', type=float, default=1.0,
                        help='simulated seconds per wall second (0 = as fast as possible)')
    parser.add_argument('--model-path', default='',
                        help="model folder; '' = models/default, or random weights if missing")
    parser.add_argument('--device', default='auto', choices=('auto', 'cpu', 'cuda'))
    parser.add_argument('--sparsity-mode', default=None,
                        choices=SPARSITY_MODES,
                        help='override config/policy.yaml')
    parser.add_argument('--target-sparsity', type=float, default=None,
                        help='override config/policy.yaml')
    parser.add_argument('--torch-threads', type=int, default=max(1, (os.cpu_count() or 2) - 1),
                        help='policy_node torch_threads: one core is left to the simulator '
                             '(on 2 cores, 2 threads beside the sim made predict p50 ~100 ms '
                             'instead of ~54 ms)')
    parser.add_argument('--replan-mode', default=None, choices=('chunked', 'streaming'),
                        help='override config/policy.yaml replan_mode (streaming: a chunk per '
                             'new observation, spliced onto the one executing)')
    parser.add_argument('--camera-rate', type=float, default=None,
                        help='override config/sim.yaml camera_rate (images per simulated s; '
                             'streaming answers each new image, so it caps the chunk rate)')
    parser.add_argument('--policy-params', action='append', default=[], metavar='NAME:=VALUE',
                        help='extra policy_node parameter (repeatable)')
    parser.add_argument('--sim-params', action='append', default=[], metavar='NAME:=VALUE',
                        help='extra sim_node parameter (repeatable)')
    parser.add_argument('--startup-timeout', type=float, default=180.0,
                        help='seconds to wait for the policy to become active')
    parser.add_argument('--log-level', default='warn', help='log level of the two nodes')
    parser.add_argument('--out', type=Path, default=None,
                        help='also write the outcomes, chunk rate, diagnostics and motion '
                             'check as JSON to this file')
    args = parser.parse_args(argv)
    if args.episodes < 1:
        parser.error(f'--episodes must be >= 1, got {args.episodes}')
    if args.torch_threads < 0:
        parser.error(f'--torch-threads must be >= 0 (0 = torch default), got '
                     f'{args.torch_threads}')
    return args


def node_commands(args: argparse.Namespace, model_path: str) -> dict[str, list[str]]:
    """Build the two node command lines, configured like the launch file."""
    sim = [sys.executable, '-m', 'sparse_policy_ros.ros.sim_node', '--ros-args',
           '--params-file', str(package_path('config', 'sim.yaml')),
           '-p', f'real_time_factor:={args.real_time_factor}',
           '-p', f'max_episode_time:={args.max_episode_time}',
           '-p', f'seed:={args.seed}', '--log-level', args.log_level]
    policy = [sys.executable, '-m', 'sparse_policy_ros.ros.policy_node', '--ros-args',
              '--params-file', str(package_path('config', 'policy.yaml')),
              '-p', 'use_sim_time:=true', '-p', f'model_path:={model_path or EMPTY}',
              '-p', f'device:={args.device}', '-p', f'torch_threads:={args.torch_threads}',
              '--log-level', args.log_level]
    if args.camera_rate is not None:
        sim += ['-p', f'camera_rate:={args.camera_rate}']
    for extra in args.sim_params:
        sim += ['-p', extra]
    if args.replan_mode is not None:
        policy += ['-p', f'replan_mode:={args.replan_mode}']
    if args.sparsity_mode is not None:
        policy += ['-p', f'sparsity_mode:={args.sparsity_mode}']
    if args.target_sparsity is not None:
        policy += ['-p', f'target_sparsity:={args.target_sparsity}']
    for extra in args.policy_params:
        policy += ['-p', extra]
    return {'sim_node': sim, 'policy_node': policy}


def apply_task(args: argparse.Namespace) -> str:
    """
    Choose the task and set what it needs; return the task.

    Default: the task of the model (``policy.extra.task``), else arm_push. For panda_push the
    sim node gets ``task:=panda_push``, the model defaults to ``models/panda_push``, and the
    policy node gets the Panda's joint names and limits (``panda_env.controller_limits``)
    instead of the demo arm's URDF; explicit ``--sim-params`` / ``--policy-params`` still win.
    """
    task = args.task
    if task is None:
        model = Path(args.model_path) if args.model_path else default_model_dir()
        task = 'arm_push'
        if args.model_path != RANDOM_MODEL and (model / 'config.json').is_file():
            try:  # the policy node reports a broken model folder itself
                extra = load_config(model).extra
            except ValueError:
                extra = {}
            task = extra.get('task') if extra.get('task') in TASKS else 'arm_push'
    if task == 'panda_push':
        from ..sim.panda_env import controller_limits  # needs gym-hil (ImportError says so)
        if not args.model_path:
            args.model_path = str(package_path('models', 'panda_push'))
        limits = [f'{name}:={json.dumps(value)}' for name, value in controller_limits().items()]
        args.policy_params = [f'robot_description_file:={EMPTY}', *limits, *args.policy_params]
    args.sim_params = [f'task:={task}', *args.sim_params]
    return task


def policy_limits(overrides: list[str]) -> tuple[tuple[str, ...], JointLimits]:
    """Joint names and limits the policy node runs with: config/policy.yaml plus overrides."""
    values = {}
    for override in overrides:
        name, _, value = override.partition(':=')
        values[name] = yaml.safe_load(value)
    return configured_joint_limits(values)


def resolve_model(args: argparse.Namespace) -> str:
    """Choose the model_path parameter, falling back to random weights loudly."""
    if args.model_path:
        return args.model_path
    if default_model_dir().is_dir():
        return ''
    banner = '!' * 78
    print(f'{banner}\n!!! {default_model_dir()} does not exist: RUNNING WITH RANDOM WEIGHTS.\n'
          '!!! The arm will move meaninglessly; success rate is not meaningful. Train a\n'
          '!!! model (train-policy, train-pruner) for real numbers.\n'
          f'{banner}', flush=True)
    if args.target_sparsity is None:
        args.target_sparsity = RANDOM_TARGET_SPARSITY
    return RANDOM_MODEL


def spin_until(node: Node, predicate, timeout: float, children: dict) -> bool:
    """Spin ``node`` until ``predicate()``; False on timeout or when a child died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        if any(child.poll() is not None for child in children.values()):
            return False
        rclpy.spin_once(node, timeout_sec=0.05)
    return predicate()


def call(node: Node, client, children: dict, timeout: float = 10.0) -> Trigger.Response | None:
    """Call a Trigger service, spinning ``node`` while waiting."""
    if not spin_until(node, client.service_is_ready, timeout, children):
        return None
    future = client.call_async(Trigger.Request())
    spin_until(node, future.done, timeout, children)
    return future.result() if future.done() else None


def stop_children(children: dict) -> None:
    """SIGINT, then SIGTERM, then SIGKILL: every child ends."""
    for sig, grace in ((signal.SIGINT, 10.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
        alive = [child for child in children.values() if child.poll() is None]
        if not alive:
            return
        for child in alive:
            child.send_signal(sig)
        deadline = time.monotonic() + grace
        for child in alive:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass


def summary(state: DemoState, wall_s: float, model: str) -> str:
    """Format the closing table."""
    outcomes = state.outcomes
    successes = sum(o['success'] for o in outcomes)
    sim_s = sum(o['duration_s'] for o in outcomes)
    policy = state.policy_status

    def value(key: str, unit: str = '') -> str:
        text = policy.get(key, 'n/a')
        return text if text == 'n/a' else f'{text}{unit}'

    rows = [
        ('model', model or str(default_model_dir())),
        ('device / mode', f'{policy.get("device", "?")} / {policy.get("sparsity_mode", "?")}'),
        ('episodes', f'{len(outcomes)} ({sim_s:.1f} s simulated in {wall_s:.1f} s wall)'),
        ('success rate', f'{successes}/{len(outcomes)} = '
                         f'{successes / max(len(outcomes), 1):.0%}'),
        ('chunk rate', f'{state.trajectories / max(sim_s, 1e-9):.2f} chunks per simulated s '
                       f'({state.trajectories} trajectories)'),
        ('replan mode / consistency / prefix rows',
         f'{value("replan_mode")} / {value("consistency")} / {value("prefix_rows_mean")}'),
        ('splice position jump p50 / max',
         f'{value("splice_position_jump_p50", " rad")} / '
         f'{value("splice_position_jump_max", " rad")}'),
        ('splice velocity jump p50 / max',
         f'{value("splice_velocity_jump_p50", " rad/s")} / '
         f'{value("splice_velocity_jump_max", " rad/s")}'),
        ('end-to-end latency p50 / p99', f'{value("end_to_end_latency_p50_ms", " ms")} / '
                                         f'{value("end_to_end_latency_p99_ms", " ms")}'),
        ('predict latency p50 / p99', f'{value("predict_latency_p50_ms", " ms")} / '
                                      f'{value("predict_latency_p99_ms", " ms")}'),
        ('tracking error p50 / p99 / max (measured vs commanded)',
         f'{value("tracking_error_p50", " rad")} / {value("tracking_error_p99", " rad")} / '
         f'{value("tracking_error_max", " rad")}'),
        ('plans dropped: arm not following (start_tolerance)',
         value('plans_dropped_tracking')),
        ('achieved sparsity (mean)', value('sparsity_mean')),
        ('late chunks / holds / rejected input',
         f'{value("chunks_late")} / {value("holds_published")} / '
         f'{sum(int(v) for k, v in policy.items() if k.startswith("rejected_"))}'),
        ('fidelity checks / max deviation / fallbacks',
         f'{value("fidelity_checks")} vs {value("fidelity_reference")} / '
         f'{value("fidelity_max_deviation", " rad")} / {value("fidelity_fallbacks")} '
         f'(now {value("fidelity_state")}, skipped for no slack '
         f'{value("fidelity_skipped_no_slack")})'),
    ]
    if state.checker is not None:
        c = state.checker.summary()
        rows.append(('stock JTC rejections / limit violations',
                     f'{c["rejections"]} / {c["violations"]} over {c["messages"]} messages, '
                     f'{c["segments_checked"]} segments ({c["seams_checked"]} seams); peak '
                     f'speed {c["peak_speed_ratio"]:.2f}x, acceleration '
                     f'{c["peak_acceleration_ratio"]:.2f}x of the limits'))
        rows.append(('seams reached after braking began (stop-and-go)',
                     f'{c["braking_seams"]} of {c["seams_checked"]}'))
        rows.append(('not checked: before 1st episode / before a reset / arm moving',
                     f'{state.unchecked_before_first_episode} / '
                     f'{state.stamped_before_episode} (the sim node ignored '
                     f'{state.sim_status.get("trajectories_before_episode", "n/a")}) / '
                     f'{state.unchecked_missed_commands}'))
    width = max(len(name) for name, _ in rows)
    lines = [f'| {"metric".ljust(width)} | value', f'|-{"-" * width}-|------']
    lines += [f'| {name.ljust(width)} | {text}' for name, text in rows]
    return '\n'.join(lines)


def write_report(path: Path, state: DemoState, wall_s: float, model: str,
                 args: argparse.Namespace) -> None:
    """Write what the summary table shows, machine-readable, with the date and machine."""
    sim_s = sum(o['duration_s'] for o in state.outcomes)
    report = {
        'date': time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime()),
        'machine': f'{platform.machine()} {platform.processor() or platform.platform()}, '
                   f'{os.cpu_count()} cores',
        'command': ' '.join([Path(sys.argv[0]).name] + sys.argv[1:]),
        'arguments': {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        'model': model or str(default_model_dir()),
        # eval-policy's layout, so `python -m sparse_policy_ros.sim.paired` pairs two demos.
        'modes': [{'mode': 'demo', 'episodes_detail': state.outcomes}],
        'success_rate': sum(o['success'] for o in state.outcomes) / max(len(state.outcomes), 1),
        'simulated_s': sim_s,
        'wall_s': wall_s,
        'trajectories': state.trajectories,
        'chunks_per_simulated_s': state.trajectories / max(sim_s, 1e-9),
        'policy_diagnostics': state.policy_status,
        'motion_check': state.checker.summary() if state.checker is not None else None,
        'unchecked': {'before_first_episode': state.unchecked_before_first_episode,
                      'stamped_before_a_reset': state.stamped_before_episode,
                      'arm_already_moving': state.unchecked_missed_commands},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1, default=str) + '\n')


def main(argv: list[str] | None = None) -> int:
    """Run the closed-loop demo; 0 when every episode ran, 1 otherwise."""
    args = parse_args(argv)
    domain = isolate_dds()
    try:
        task = apply_task(args)
    except ImportError as error:
        print(f'demo: {error}', file=sys.stderr)
        return 2
    model_path = resolve_model(args)
    log_dir = Path(tempfile.mkdtemp(prefix='sparse_policy_demo_'))
    print(f'demo: task {task}, ROS_DOMAIN_ID={domain}, discovery on localhost only; node logs '
          f'in {log_dir}', flush=True)
    children: dict[str, subprocess.Popen] = {}
    logs = []
    rclpy.init(args=[])
    joint_names, limits = policy_limits(args.policy_params)
    monitor = DemoMonitor('/arm_controller/joint_trajectory', limits, joint_names)
    ok = False
    start = time.monotonic()
    try:
        for name, command in node_commands(args, model_path).items():
            log = open(log_dir / f'{name}.log', 'w')
            logs.append(log)
            children[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                              env=os.environ.copy())
        pids = ', '.join(f'{name} (pid {child.pid})' for name, child in children.items())
        print(f'demo: started {pids}; waiting for the policy to activate ...', flush=True)
        if not spin_until(monitor, lambda: monitor.state.policy_status.get('state') == 'active',
                          args.startup_timeout, children):
            print('demo: the policy did not become active in time', file=sys.stderr)
            return 1
        # The first episode ran while the model loaded: restart it with the requested seed.
        monitor.state.counting = True
        for client in (monitor.reset_policy, monitor.reset_sim):
            response = call(monitor, client, children)
            if response is None or not response.success:
                print(f'demo: {client.srv_name} failed: {response}', file=sys.stderr)
                return 1
        start = time.monotonic()
        wall_budget = 3.0 * args.episodes * args.max_episode_time / max(
            args.real_time_factor, 0.25) + 60.0
        with tqdm(total=args.episodes, unit='episode', desc='closed loop') as progress:
            while len(monitor.state.outcomes) < args.episodes:
                seen = len(monitor.state.outcomes)
                if not spin_until(monitor, lambda: len(monitor.state.outcomes) > seen,
                                  max(1.0, wall_budget - (time.monotonic() - start)),
                                  children):
                    print('demo: stopped waiting for episodes (a node died or time ran out)',
                          file=sys.stderr)
                    return 1
                progress.update(len(monitor.state.outcomes) - progress.n)
                done = monitor.state.outcomes
                progress.set_postfix(success=f'{sum(o["success"] for o in done)}/{len(done)}')
        # One more policy diagnostics message so the numbers include the last episode.
        heard = monitor.state.policy_status
        spin_until(monitor, lambda: monitor.state.policy_status is not heard, 5.0, children)
        checker = monitor.state.checker
        checker.finish()
        ok = checker.ok
        offsets = monitor.state.after_episode_start
        for problem in checker.rejections[:5] + [
                f'{v} (stamped {offsets.get(v.message, float("nan")):.3f} s after its episode '
                'started)' for v in checker.violations[:5]]:
            print(f'demo: SAFETY CHECK FAILED: {problem}', file=sys.stderr)
        if monitor.state.unchecked_missed_commands:
            print(f'demo: {monitor.state.unchecked_missed_commands} commands not checked: the '
                  'arm was already moving when the monitor got the first command of their '
                  'episode (it missed earlier ones)', file=sys.stderr)
    except KeyboardInterrupt:
        print('demo: interrupted', file=sys.stderr)
    finally:
        wall_s = time.monotonic() - start
        stop_children(children)
        for log in logs:
            log.close()
        monitor.destroy_node()
        rclpy.try_shutdown()
        if monitor.state.outcomes:
            print(summary(monitor.state, wall_s, model_path), flush=True)
            if args.out is not None:
                write_report(args.out, monitor.state, wall_s, model_path, args)
                print(f'demo: wrote {args.out}', flush=True)
        if not ok:
            for name in children:
                tail = (log_dir / f'{name}.log').read_text(errors='replace')[-2000:]
                print(f'--- last lines of {name}.log ---\n{tail}', file=sys.stderr)
    return 0 if ok else 1


if __name__ == '__main__':
    sys.exit(main())
