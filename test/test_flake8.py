"""ROS-style flake8 (ament_flake8: 99 columns, google import order, single quotes)."""

import subprocess
import sys

from lint_paths import LINT_PATHS
import pytest


@pytest.mark.flake8
@pytest.mark.linter
def test_flake8():
    # flake8 checks files in a pool of forked workers. Forked from a test process that already
    # ran rclpy nodes and torch (e.g. test_robot_description.py before this file on the command
    # line), a worker can segfault collecting the garbage it inherited and the pool then hangs;
    # a fresh interpreter forks cleanly.
    result = subprocess.run([sys.executable, '-m', 'ament_flake8.main', *LINT_PATHS],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (f'flake8 exited with {result.returncode}:\n'
                                    + result.stdout[-20000:] + result.stderr[-5000:])
