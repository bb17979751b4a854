"""The console entry shared by the node executables: init, spin, always clean up."""

import signal
import sys
import threading
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


MAX_CONSECUTIVE_ERRORS = 100  # a failure that repeats this often without a success is fatal
STOPPING = (KeyboardInterrupt, ExternalShutdownException)


class TerminateRequested(Exception):
    """SIGTERM arrived: leave spin like Ctrl-C does."""


# Set by the SIGTERM handler, read by the spin loop. The handler must not raise where the signal
# lands: inside a callback (or rclpy) an ``except Exception`` would swallow it and the node
# would go on commanding the arm.
_TERMINATE = threading.Event()


def _request_terminate(signum, frame):
    _TERMINATE.set()


def run_node(name: str, make_node: Callable[[], Node],
             start_errors: tuple[type[BaseException], ...],
             args: list[str] | None = None) -> int:
    """
    Spin the node ``make_node()`` builds until shutdown; return the process exit code.

    1 when construction raises one of ``start_errors`` (printed as ``name: error``) or the node
    reports ``autostart_ok`` False; 0 on a normal shutdown (Ctrl-C included). On Ctrl-C or an
    external shutdown a node with ``stop_motion(why)`` (the policy node) first commands a stop,
    while its publishers still work. The node's ``close()`` and ``destroy_node()`` run in every
    case. An exception escaping a callback (or rclpy taking a message, which has failed on a
    malformed one) is logged and spinning goes on: one bad message must not stop the arm's
    controller node; ``MAX_CONSECUTIVE_ERRORS`` in a row without a clean spin end it.
    """
    # rclpy's own handlers would shut the context down before we could publish a stop: take
    # SIGINT (KeyboardInterrupt) and SIGTERM ourselves, stop, then shut down.
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    _TERMINATE.clear()
    previous_term = signal.signal(signal.SIGTERM, _request_terminate)
    node = None
    try:
        node = make_node()
        if not getattr(node, 'autostart_ok', True):
            node.get_logger().fatal('autostart failed (see the error above); exiting')
            return 1
        spin_tolerating_errors(node)
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


def spin_tolerating_errors(node: Node) -> None:
    """Spin ``node`` until shutdown, logging (not raising) errors from single callbacks."""
    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    consecutive = 0
    try:
        while node.context.ok():
            if _TERMINATE.is_set():
                raise TerminateRequested('SIGTERM')
            try:
                executor.spin_once(timeout_sec=0.1)
                consecutive = 0
            except (*STOPPING, TerminateRequested):
                raise
            except Exception as error:  # noqa: B902 - logged; the node keeps serving
                consecutive += 1
                node.get_logger().error(
                    f'callback failed ({consecutive} in a row): {type(error).__name__}: '
                    f'{error}; the node keeps running')
                if consecutive >= MAX_CONSECUTIVE_ERRORS:
                    raise
        raise ExternalShutdownException()  # the context was shut down from elsewhere
    finally:
        executor.remove_node(node)
        executor.shutdown(timeout_sec=0)
