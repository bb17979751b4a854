"""The console entry shared by the node executables: init, spin, always clean up."""

import signal
import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


class TerminateRequested(Exception):
    """SIGTERM arrived: leave spin like Ctrl-C does."""


def _raise_terminate(signum, frame):
    raise TerminateRequested(f'signal {signum}')


def run_node(name: str, make_node: Callable[[], Node],
             start_errors: tuple[type[BaseException], ...],
             args: list[str] | None = None) -> int:
    """
    Spin the node ``make_node()`` builds until shutdown; return the process exit code.

    1 when construction raises one of ``start_errors`` (printed as ``name: error``) or the node
    reports ``autostart_ok`` False; 0 on a normal shutdown (Ctrl-C included). On Ctrl-C or an
    external shutdown a node with ``stop_motion(why)`` (the policy node) first commands a stop,
    while its publishers still work. The node's ``close()`` and ``destroy_node()`` run in every
    case.
    """
    # rclpy's own handlers would shut the context down before we could publish a stop: take
    # SIGINT (KeyboardInterrupt) and SIGTERM ourselves, stop, then shut down.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    previous_term = signal.signal(signal.SIGTERM, _raise_terminate)
    node = None
    try:
        node = make_node()
        if not getattr(node, 'autostart_ok', True):
            node.get_logger().fatal('autostart failed (see the error above); exiting')
            return 1
        rclpy.spin(node)
    except start_errors as error:
        print(f'{name}: {error}', file=sys.stderr)
        return 1
    except (KeyboardInterrupt, TerminateRequested, ExternalShutdownException) as error:
        stop = getattr(node, 'stop_motion', None)
        if stop is not None:
            stop(f'shutting down ({type(error).__name__})')
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
        signal.signal(signal.SIGTERM, previous_term)
    return 0
