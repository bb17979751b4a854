"""The console entry shared by the node executables: init, spin, always clean up."""

import sys
from typing import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def run_node(name: str, make_node: Callable[[], Node],
             start_errors: tuple[type[BaseException], ...],
             args: list[str] | None = None) -> int:
    """
    Spin the node ``make_node()`` builds until shutdown; return the process exit code.

    1 when construction raises one of ``start_errors`` (printed as ``name: error``) or the node
    reports ``autostart_ok`` False; 0 on a normal shutdown (Ctrl-C included). The node's
    ``close()`` and ``destroy_node()`` run in every case.
    """
    rclpy.init(args=args)
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
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.close()
            node.destroy_node()
        rclpy.try_shutdown()
    return 0
