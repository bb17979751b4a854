"""The Python sources that ROS's linters check: every file of the package, tests and launch."""

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
LINT_PATHS = [str(REPO_ROOT / name) for name in
              ('sparse_policy_ros', 'test', 'launch', 'setup.py')]
