"""docs/deploy.md's walkthrough, run as written: real sim_node and policy_node on loopback DDS."""

import os
from pathlib import Path
import re
import subprocess
import sys

from conftest import isolate_dds
import pytest

REPO = Path(__file__).resolve().parents[1]
GUIDE = REPO / 'docs' / 'deploy.md'
SECTION = '## Walkthrough on the simulated arm'


def walkthrough_commands(text: str) -> str:
    """Return the ``bash`` blocks of the walkthrough section, in order, as one script."""
    start = text.index(SECTION)
    following = text.find('\n## ', start + len(SECTION))
    section = text[start:following if following >= 0 else len(text)]
    blocks = re.findall(r'^```bash\n(.*?)^```$', section, flags=re.MULTILINE | re.DOTALL)
    assert blocks, f'no ```bash blocks under {SECTION!r}'
    return '\n'.join(blocks)


def test_the_walkthrough_has_the_deployment_steps():
    script = walkthrough_commands(GUIDE.read_text())
    for step in ('urdf_export --check', 'output_type:=preview', 'require_arming:=true',
                 'policy-ctl enable', 'policy-ctl disable', '--expect-none', 'moved'):
        assert step in script, step
    assert 'ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST' in script


@pytest.mark.slow
@pytest.mark.ros
def test_the_walkthrough_moves_the_simulated_arm(tmp_path):
    isolate_dds()  # the guide keeps an exported ROS_DOMAIN_ID: this test's own
    script = tmp_path / 'walkthrough.sh'
    # Every line must succeed; whatever is still running at the end is stopped.
    header = "set -euo pipefail\ntrap 'kill $(jobs -p) 2>/dev/null || true' EXIT\n"
    script.write_text(header + walkthrough_commands(GUIDE.read_text())
                      + '\necho WALKTHROUGH_DONE\n')
    bin_dir = str(Path(sys.executable).parent)  # policy-ctl and python of this environment
    env = {**os.environ, 'PATH': f'{bin_dir}:{os.environ["PATH"]}', 'PYTHONUNBUFFERED': '1'}
    result = subprocess.run(['bash', str(script)], cwd=REPO, env=env, capture_output=True,
                            text=True, timeout=1200)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-6000:]
    assert 'WALKTHROUGH_DONE' in result.stdout
    assert 'up to date' in result.stdout
    assert 'as expected' in result.stdout  # nothing reached the controller when it should not
    assert re.search(r'largest travel (\d+\.\d+) rad', result.stdout)
    assert 'enable: ok' in result.stdout and 'disable: ok' in result.stdout


@pytest.mark.ros
def test_policy_ctl_fails_clearly_without_a_node(capsys):
    from sparse_policy_ros.ros.policy_ctl import main
    isolate_dds()  # a fresh domain: no policy node there
    assert main(['--timeout', '1', 'status']) == 1
    assert 'no /diagnostics from /policy_node within 1.0 s' in capsys.readouterr().err
    assert main(['--timeout', '1', 'enable']) == 1
    assert 'service /policy_node/enable not available within 1.0 s' in capsys.readouterr().err
    assert main(['--timeout', '1', 'trajectories', '--expect-none']) == 0
    assert main(['--timeout', '1', 'moved']) == 1
    assert 'no joint states on joint_states' in capsys.readouterr().err
    assert main(['--timeout', '0', 'status']) == 2
