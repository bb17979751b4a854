"""
Seam metrics of executed joint targets, per episode and per evaluation.

``python -m sparse_policy_ros.sim.seams EVAL.json[:MODE] ...`` prints, per evaluation, the
largest take-over jump, the median and largest per-episode maximum of the step-to-step velocity
change (with the seed of the largest) and the median jerk RMS, from ``episodes_detail``.
"""

import argparse
import json
from pathlib import Path
import sys

import numpy as np


def seam_metrics(executed: np.ndarray, period: float, splices: list[float]) -> dict:
    """Splice jumps and smoothness of an episode's executed joint targets (steps, dof)."""
    velocity = np.diff(executed, axis=0) / period
    velocity_jump = np.abs(np.diff(velocity, axis=0))
    jerk = np.diff(executed, n=3, axis=0) / period ** 3
    return {'splice_max': float(max(splices)) if splices else 0.0,
            'splices': len(splices),
            'velocity_jump_max': float(velocity_jump.max()) if velocity_jump.size else 0.0,
            'jerk_rms': float(np.sqrt(np.mean(jerk ** 2))) if jerk.size else 0.0}


def seam_summary(episodes: list[dict]) -> dict:
    """Over episodes: worst splice, median and worst velocity change, median jerk RMS."""
    if not episodes:
        return {'splice_max': 0.0, 'velocity_jump_median': 0.0, 'velocity_jump_max': 0.0,
                'velocity_jump_max_seed': None, 'jerk_rms_median': 0.0}
    jumps = [e['velocity_jump_max'] for e in episodes]
    worst = int(np.argmax(jumps))
    return {'splice_max': float(max(e['splice_max'] for e in episodes)),
            'velocity_jump_median': float(np.median(jumps)),
            'velocity_jump_max': float(jumps[worst]),
            'velocity_jump_max_seed': episodes[worst].get('seed'),
            'jerk_rms_median': float(np.median([e['jerk_rms'] for e in episodes]))}


def main(argv: list[str] | None = None) -> int:
    """Console entry point: one row per FILE[:MODE]."""
    parser = argparse.ArgumentParser(description='Seam metrics of eval-policy results.')
    parser.add_argument('specs', nargs='+', metavar='FILE[:MODE]')
    args = parser.parse_args(argv)
    print('| evaluation | max take-over jump rad | velocity change rad/s, median of episode '
          'maxima (max, seed) | median jerk RMS rad/s^3 |\n|---|---:|---:|---:|')
    for spec in args.specs:
        path, _, mode = spec.partition(':')
        try:
            rows = json.loads(Path(path).read_text())['modes']
            row = next(r for r in rows if not mode or r['mode'] == mode)
            s = seam_summary(row['episodes_detail'])
        except (OSError, KeyError, StopIteration, ValueError) as error:
            print(f'seams: error: {spec}: {error!r} (expected an eval-policy eval.json with '
                  'episodes_detail)', file=sys.stderr)
            return 2
        print(f"| {Path(path).parent.name}:{row['mode']} | {s['splice_max']:.1e} | "
              f"{s['velocity_jump_median']:.2f} ({s['velocity_jump_max']:.1f}, seed "
              f"{s['velocity_jump_max_seed']}) | {s['jerk_rms_median']:.0f} |")
    return 0


if __name__ == '__main__':
    sys.exit(main())
