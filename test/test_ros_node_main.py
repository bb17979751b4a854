"""run_node keeps a node spinning when one callback fails, and gives up on a failure loop."""

import os
import signal
import subprocess
import sys
import textwrap

from conftest import isolate_dds
import pytest

pytestmark = pytest.mark.ros

SCRIPT = textwrap.dedent("""
    import sys
    import rclpy
    from rclpy.node import Node
    from sparse_policy_ros.ros import node_main

    node_main.MAX_CONSECUTIVE_ERRORS = 5
    FAILING = int(sys.argv[1])  # timer calls that raise before the node behaves

    class Flaky(Node):
        def __init__(self):
            super().__init__('flaky')
            self.calls = 0
            self.create_timer(0.01, self.tick)

        def close(self):  # run_node's contract: the node frees what it holds
            pass

        def tick(self):
            self.calls += 1
            if self.calls <= FAILING:
                raise RuntimeError(f'bad message {self.calls}')
            if self.calls == FAILING + 3:
                print(f'served {self.calls - FAILING} calls after the failures', flush=True)
                rclpy.shutdown()

    sys.exit(node_main.run_node('flaky', Flaky, (ValueError,), args=[]))
""")


def run_script(failing: int) -> subprocess.CompletedProcess:
    env = os.environ.copy()
    env['ROS_DOMAIN_ID'] = isolate_dds()
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    return subprocess.run([sys.executable, '-c', SCRIPT, str(failing)], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_failing_callback_is_logged_and_the_node_keeps_running():
    result = run_script(failing=3)
    assert result.returncode == 0, result.stderr
    assert 'served 3 calls after the failures' in result.stdout
    assert 'callback failed (3 in a row): RuntimeError: bad message 3' in result.stderr


def test_a_callback_that_always_fails_ends_the_process():
    result = run_script(failing=1000)
    assert result.returncode != 0
    assert 'callback failed (5 in a row)' in result.stderr
    assert 'RuntimeError: bad message 5' in result.stderr


SWALLOWING = textwrap.dedent("""
    import sys
    import time
    from rclpy.node import Node
    from sparse_policy_ros.ros import node_main

    class Busy(Node):
        # Its callback runs most of the time and catches every Exception, like many do.
        def __init__(self):
            super().__init__('busy')
            self.create_timer(0.01, self.tick)
            self.ticks = 0

        def tick(self):
            self.ticks += 1
            if self.ticks == 2:
                print('ready', flush=True)
            try:
                time.sleep(0.5)
            except Exception:
                pass

        def stop_motion(self, why):
            print(f'stop_motion: {why}', flush=True)

        def close(self):
            pass

    sys.exit(node_main.run_node('busy', Busy, (ValueError,), args=[]))
""")


def test_sigterm_stops_the_node_even_when_it_lands_in_a_callback_catching_everything():
    env = os.environ.copy()
    env['ROS_DOMAIN_ID'] = isolate_dds()
    env['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
    process = subprocess.Popen([sys.executable, '-c', SWALLOWING], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == 'ready'
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=20)
    finally:
        process.kill()
    assert process.returncode == 0, err
    assert 'stop_motion: shutting down (TerminateRequested)' in out
