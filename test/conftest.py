"""Shared fixtures: every rclpy user in the suite goes through ``ros_env``."""

import os

import pytest

# Unique per test process: pytest-xdist workers and concurrent CI jobs get separate domains.
_DOMAIN_ID = str(os.getpid() % 200 + 10)


def isolate_dds() -> str:
    """Keep DDS discovery on loopback with a domain unique to this process; return the domain."""
    os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    os.environ['ROS_DOMAIN_ID'] = _DOMAIN_ID
    os.environ.setdefault('RMW_IMPLEMENTATION', 'rmw_fastrtps_cpp')
    return _DOMAIN_ID


@pytest.fixture
def ros_env():
    """Set loopback-only discovery and a unique domain, init rclpy, shut it down after."""
    isolate_dds()
    import rclpy
    from rclpy.context import Context
    context = Context()
    rclpy.init(context=context)
    try:
        yield context
    finally:
        if context.ok():
            rclpy.shutdown(context=context)
