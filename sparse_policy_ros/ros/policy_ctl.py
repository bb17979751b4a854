"""
policy-ctl: operate a running policy_node from a shell, with or without the ``ros2`` CLI.

Each subcommand does one thing a deployment step needs and exits 0 when it worked, 1 when it
did not (timeout, refusal, ERROR), printing why; ``docs/deploy.md`` uses it step by step.

- ``status [--until TEXT]``: print the node's /diagnostics status; with ``--until``, wait for
  a status whose message starts with TEXT (e.g. ``running``, ``disarmed``). ERROR fails.
- ``enable`` / ``disable``: arm or disarm (``~/enable``); ``reset``: forget history (``~/reset``).
- ``trajectories --topic T --count N``: wait for N trajectories on T (the preview topic in a
  dry run, the controller topic otherwise) and print what each holds; ``--expect-none``
  succeeds only if nothing arrives (nothing reaches the controller in a dry run).
- ``moved --min-travel RAD``: wait until some joint of ``joint_states`` moved that far.

The ``ros2`` equivalents: ``ros2 topic echo /diagnostics``, ``ros2 service call
/policy_node/enable std_srvs/srv/SetBool "{data: true}"``, ``ros2 topic echo <topic>``.
"""

import argparse
import sys
import time
from typing import Callable

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
import rclpy
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import JointState
from std_srvs.srv import SetBool, Trigger
from trajectory_msgs.msg import JointTrajectory

from .diagnostics import LEVEL_NAMES, status_values

RELIABLE = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)


def _spin_until(node: Node, done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done():
        if time.monotonic() > deadline:
            return False
        rclpy.spin_once(node, timeout_sec=0.1)
    return True


def _status(node: Node, args: argparse.Namespace) -> int:
    prefix = f'{args.node.strip("/").split("/")[-1]}: '
    seen: list[DiagnosticStatus] = []

    def on_diagnostics(message: DiagnosticArray) -> None:
        seen.extend(s for s in message.status if s.name.startswith(prefix))

    node.create_subscription(DiagnosticArray, '/diagnostics', on_diagnostics, RELIABLE)

    def matched() -> bool:
        return bool(seen) and (seen[-1].level == DiagnosticStatus.ERROR or args.until is None
                               or seen[-1].message.startswith(args.until))

    found = _spin_until(node, matched, args.timeout)
    if not seen:
        print(f'status: no /diagnostics from {args.node} within {args.timeout} s '
              '(is it running, on this ROS_DOMAIN_ID?)', file=sys.stderr)
        return 1
    status = seen[-1]
    level = LEVEL_NAMES.get(status.level, str(status.level))
    print(f'{status.name}: {level}: {status.message}')
    for key, value in status_values(status).items():
        print(f'  {key}: {value}')
    if status.level == DiagnosticStatus.ERROR:
        return 1
    if not found:
        print(f'status: no message starting with {args.until!r} within {args.timeout} s',
              file=sys.stderr)
        return 1
    return 0


def _call(node: Node, args: argparse.Namespace) -> int:
    name = f'{args.node.rstrip("/")}/{"reset" if args.command == "reset" else "enable"}'
    if args.command == 'reset':
        client, request = node.create_client(Trigger, name), Trigger.Request()
    else:
        client = node.create_client(SetBool, name)
        request = SetBool.Request(data=args.command == 'enable')
    if not client.wait_for_service(timeout_sec=args.timeout):
        print(f'{args.command}: service {name} not available within {args.timeout} s',
              file=sys.stderr)
        return 1
    future = client.call_async(request)
    if not _spin_until(node, future.done, args.timeout):
        print(f'{args.command}: {name} did not answer within {args.timeout} s', file=sys.stderr)
        return 1
    response = future.result()
    print(f'{args.command}: {"ok" if response.success else "refused"}: {response.message}')
    return 0 if response.success else 1


def _trajectories(node: Node, args: argparse.Namespace) -> int:
    received: list[JointTrajectory] = []
    node.create_subscription(JointTrajectory, args.topic, received.append, RELIABLE)
    wanted = 1 if args.expect_none else args.count
    complete = _spin_until(node, lambda: len(received) >= wanted, args.timeout)
    for message in received[:wanted]:
        last = message.points[-1].time_from_start if message.points else None
        span = f'{last.sec + last.nanosec * 1e-9:.2f} s' if last is not None else '-'
        print(f'{args.topic}: {len(message.points)} points over {span}, joints '
              f'{list(message.joint_names)}')
    if args.expect_none:
        if complete:
            print(f'trajectories: expected none on {args.topic}, got one', file=sys.stderr)
            return 1
        print(f'trajectories: none on {args.topic} in {args.timeout} s, as expected')
        return 0
    if not complete:
        print(f'trajectories: {len(received)} of {args.count} on {args.topic} within '
              f'{args.timeout} s', file=sys.stderr)
        return 1
    return 0


def _moved(node: Node, args: argparse.Namespace) -> int:
    first: dict[str, float] = {}
    travel = {'max': 0.0, 'joint': ''}

    def on_state(message: JointState) -> None:
        for name, position in zip(message.name, message.position):
            if not np.isfinite(position):
                continue
            start = first.setdefault(name, float(position))
            if abs(position - start) > travel['max']:
                travel.update(max=abs(float(position) - start), joint=name)

    node.create_subscription(JointState, args.topic, on_state, qos_profile_sensor_data)
    moved = _spin_until(node, lambda: travel['max'] >= args.min_travel, args.timeout)
    if not first:
        print(f'moved: no joint states on {args.topic} within {args.timeout} s', file=sys.stderr)
        return 1
    print(f'moved: largest travel {travel["max"]:.3f} rad ({travel["joint"] or "-"})')
    if not moved:
        print(f'moved: less than {args.min_travel} rad within {args.timeout} s', file=sys.stderr)
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """Return the command-line parser."""
    parser = argparse.ArgumentParser(prog='policy-ctl', description=__doc__.split('\n\n')[0])
    parser.add_argument('--node', default='/policy_node', help='policy node name (namespace)')
    parser.add_argument('--timeout', type=float, default=60.0, help='seconds to wait')
    commands = parser.add_subparsers(dest='command', required=True)
    status = commands.add_parser('status', help="print the node's /diagnostics status")
    status.add_argument('--until', default=None, metavar='TEXT',
                        help='wait for a status message starting with TEXT')
    for name, text in (('enable', 'arm: allow motion'), ('disable', 'disarm: brake and hold'),
                       ('reset', 'forget history, plan and cache')):
        commands.add_parser(name, help=text)
    trajectories = commands.add_parser('trajectories', help='wait for published trajectories')
    trajectories.add_argument('--topic', default='/policy_node/preview')
    trajectories.add_argument('--count', type=int, default=1)
    trajectories.add_argument('--expect-none', action='store_true',
                              help='succeed only if none arrives within --timeout')
    moved = commands.add_parser('moved', help='wait until the arm moved')
    moved.add_argument('--topic', default='joint_states')
    moved.add_argument('--min-travel', type=float, default=0.05, help='radians (or metres)')
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one subcommand; the exit status says whether it worked."""
    args = build_parser().parse_args(argv)
    if args.timeout <= 0:
        print(f'--timeout must be > 0 s, got {args.timeout}', file=sys.stderr)
        return 2
    rclpy.init()
    node = rclpy.create_node('policy_ctl', start_parameter_services=False)
    try:
        run = {'status': _status, 'enable': _call, 'disable': _call, 'reset': _call,
               'trajectories': _trajectories, 'moved': _moved}[args.command]
        return run(node, args)
    except KeyboardInterrupt:
        return 130
    finally:
        node.destroy_node()
        rclpy.try_shutdown()


if __name__ == '__main__':
    sys.exit(main())
