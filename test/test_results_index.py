"""results/INDEX.md lists every result folder and is current."""

from pathlib import Path
import subprocess
import sys

REPO = Path(__file__).resolve().parents[1]


def test_results_index_is_current():
    result = subprocess.run([sys.executable, str(REPO / 'scripts' / 'results_index.py'),
                             '--check'], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
