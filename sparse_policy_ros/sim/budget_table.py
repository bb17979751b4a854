r"""
Equal-budget comparison table: every row against searched DDIM at the same compute budget.

Sparse sampling has to beat the strongest alternative a user could pick at the same cost, DDIM
with k steps at searched timesteps (``search-schedule --kind ddim``). Each ``--budget`` names
its k, the searched-DDIM evaluation first (the reference) and then the candidates, all
``eval-policy`` results on the same seeds; ``--dense`` adds the dense row (compared with
nothing)::

    python -m sparse_policy_ros.sim.budget_table --dense D/eval.json:dense \
        --budget 6 D6/eval.json:ddim_searched D6/eval.json:ddim D6/eval.json:fora P6/eval.json \
        --budget 4 ... --out results/eval/budget_table

Per row: success, the paired difference from searched DDIM-k with its 95% interval and the
exact McNemar p (``sim.paired``), predict p50 / p99 over whole episodes (resets included) and
GFLOP per call.
"""

import argparse
from dataclasses import asdict
import json
from pathlib import Path
import sys

from .paired import compare, load_mode_rows, merged_outcomes


def row_stats(spec: str) -> tuple[dict, dict[int, bool]]:
    """
    Success, latency and FLOPs of one ``FILE:MODE`` (latency only for a single file).

    Returns the row and its ``{seed: success}``.
    """
    label, rows = load_mode_rows(spec)
    outcomes = merged_outcomes(rows)
    single = rows[0][1] if len(rows) == 1 else None
    flops = single.get('flops_per_call') if single else None
    return {'label': label, 'spec': spec, 'seeds': len(outcomes),
            'success': sum(outcomes.values()) / len(outcomes),
            'p50_ms': single.get('latency_p50_ms') if single else None,
            'p99_ms': single.get('latency_p99_ms') if single else None,
            'gflop_per_call': None if flops is None else flops / 1e9,
            'sparsity': single.get('sparsity') if single else None}, outcomes


def build(dense: str | None, budgets: list[list[str]]) -> list[dict]:
    """Rows of the table: the dense one, then per budget the reference and its candidates."""
    out = []
    if dense is not None:
        out.append({'budget': None, **row_stats(dense)[0], 'vs_reference': None})
    for entry in budgets:
        if len(entry) < 2 or not entry[0].isdigit():
            raise ValueError(f'--budget takes K then the searched-DDIM FILE:MODE and the '
                             f'candidates, got {entry}')
        budget, specs = int(entry[0]), entry[1:]
        reference_row, reference = row_stats(specs[0])
        out.append({'budget': budget, **reference_row, 'vs_reference': None})
        for spec in specs[1:]:
            row, outcomes = row_stats(spec)
            paired = compare(reference, outcomes, reference_row['label'], row['label'])
            out.append({'budget': budget, **row, 'vs_reference': asdict(paired)})
    return out


def markdown(rows: list[dict]) -> str:
    """Render the rows as a markdown table."""
    def number(value, digits=1):
        return '' if value is None else f'{value:.{digits}f}'

    lines = ['| budget (steps) | row | seeds | success | vs searched DDIM-k (95% CI) | '
             'McNemar p | p50 ms | p99 ms | GFLOP/call |',
             '|---:|---|---:|---:|---|---:|---:|---:|---:|']
    for r in rows:
        paired = r['vs_reference']
        versus = ('' if paired is None else f"{paired['difference']:+.3f} "
                  f"({paired['ci95'][0]:+.3f} to {paired['ci95'][1]:+.3f})")
        p_value = '' if paired is None else f"{paired['mcnemar_p']:.3f}"
        budget = 'dense' if r['budget'] is None else str(r['budget'])
        lines.append(f"| {budget} | {r['label']} | {r['seeds']} | {r['success']:.3f} | "
                     f"{versus or 'reference' if r['budget'] else ''} | {p_value} | "
                     f"{number(r['p50_ms'])} | {number(r['p99_ms'])} | "
                     f"{number(r['gflop_per_call'], 3)} |")
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    """Console entry point."""
    parser = argparse.ArgumentParser(prog='python -m sparse_policy_ros.sim.budget_table',
                                     description=__doc__.split('\n\n')[0].strip())
    parser.add_argument('--dense', default=None, metavar='FILE:MODE')
    parser.add_argument('--budget', nargs='+', action='append', default=[],
                        metavar='K FILE:MODE', help='K, searched DDIM-K, then candidates')
    parser.add_argument('--out', type=Path, default=None,
                        help='folder for table.md and table.json')
    args = parser.parse_args(argv)
    if not args.budget:
        parser.error('give at least one --budget K REFERENCE CANDIDATE...')
    try:
        rows = build(args.dense, args.budget)
    except ValueError as error:
        print(f'budget_table: error: {error}', file=sys.stderr)
        return 2
    table = markdown(rows)
    print(table)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / 'table.md').write_text(table + '\n')
        (args.out / 'table.json').write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
