r"""
Paired comparison of two evaluations on the same seeds: is the success gap larger than noise.

Two modes evaluated on the same seeds are paired: a seed both succeed on (or both fail) says
nothing about the gap, only the discordant seeds do. This module gives the success difference
with a 95% interval for paired proportions (Agresti-Min: the Wald interval of the difference
after adding 1/2 to each cell of the 2x2 table) and the exact McNemar test (two-sided binomial
test of the discordant seeds), from ``eval-policy``'s ``eval.json`` files::

    python -m sparse_policy_ros.sim.paired results/eval/dense_final_code/eval.json:dense \\
        results/eval/sparse_090_final_code/eval.json:pruner [more FILE:MODE ...]

The first ``FILE:MODE`` is the reference; every further one is compared with it on the seeds
both hold (``episodes_detail``). ``:MODE`` may be left out where the file holds one mode;
``FILE,FILE:MODE`` merges evaluations of disjoint seeds (one run split over two processes).
"""

import argparse
from dataclasses import asdict, dataclass
import json
import math
from pathlib import Path
import sys


@dataclass
class PairedComparison:
    """Success of ``candidate`` minus ``reference`` over the seeds both were run on."""

    reference: str
    candidate: str
    seeds: int  # seeds both ran
    both: int  # seeds both succeeded on
    reference_only: int  # seeds only the reference succeeded on
    candidate_only: int  # seeds only the candidate succeeded on
    neither: int
    difference: float  # candidate success rate - reference success rate
    ci95: tuple[float, float]  # Agresti-Min interval of the difference
    mcnemar_p: float  # exact two-sided McNemar p-value (1.0 without discordant seeds)


def paired_interval(both: int, reference_only: int, candidate_only: int, neither: int,
                    z: float = 1.96) -> tuple[float, float]:
    """Agresti-Min 95% interval of p(candidate) - p(reference) for paired binary outcomes."""
    counts = (both, reference_only, candidate_only, neither)
    if any(c < 0 for c in counts) or sum(counts) == 0:
        raise ValueError(f'paired counts must be >= 0 and not all zero, got {counts}')
    n = sum(counts) + 2.0
    b, c = reference_only + 0.5, candidate_only + 0.5
    difference = (c - b) / n
    variance = ((b + c) - (c - b) ** 2 / n) / (n * n)
    half = z * math.sqrt(max(variance, 0.0))
    return max(-1.0, difference - half), min(1.0, difference + half)


def mcnemar_exact_p(reference_only: int, candidate_only: int) -> float:
    """Two-sided exact McNemar p-value: binomial(b + c, 1/2) test of the discordant seeds."""
    if reference_only < 0 or candidate_only < 0:
        raise ValueError('discordant counts must be >= 0, got '
                         f'{reference_only} and {candidate_only}')
    total = reference_only + candidate_only
    if total == 0:
        return 1.0
    tail = sum(math.comb(total, k) for k in range(min(reference_only, candidate_only) + 1))
    return min(1.0, 2.0 * tail / 2.0 ** total)


def compare(reference: dict[int, bool], candidate: dict[int, bool], reference_name: str = 'a',
            candidate_name: str = 'b') -> PairedComparison:
    """Compare two ``{seed: success}`` maps on the seeds they share."""
    seeds = sorted(set(reference) & set(candidate))
    if not seeds:
        raise ValueError(f'{reference_name} and {candidate_name} share no seeds; a paired '
                         'comparison needs evaluations of the same seeds')
    both = sum(reference[s] and candidate[s] for s in seeds)
    reference_only = sum(reference[s] and not candidate[s] for s in seeds)
    candidate_only = sum(candidate[s] and not reference[s] for s in seeds)
    neither = len(seeds) - both - reference_only - candidate_only
    return PairedComparison(
        reference=reference_name, candidate=candidate_name, seeds=len(seeds), both=both,
        reference_only=reference_only, candidate_only=candidate_only, neither=neither,
        difference=(candidate_only - reference_only) / len(seeds),
        ci95=paired_interval(both, reference_only, candidate_only, neither),
        mcnemar_p=mcnemar_exact_p(reference_only, candidate_only))


def outcomes_by_seed(mode_row: dict) -> dict[int, bool]:
    """``{seed: success}`` from one mode row of ``eval.json`` (its ``episodes_detail``)."""
    detail = mode_row.get('episodes_detail')
    if not detail:
        raise ValueError(f"mode {mode_row.get('mode')!r} has no episodes_detail (written by "
                         'eval-policy since 2026-11-25); rerun the evaluation')
    return {int(e['seed']): bool(e['success']) for e in detail}


def load_mode(spec: str) -> tuple[str, dict[int, bool]]:
    """
    Read ``FILE[,FILE...][:MODE]``; return (label, {seed: success}).

    Several files (e.g. one evaluation split over two processes by ``--seed-start``) are merged;
    a seed in more than one of them is an error.
    """
    label, rows = load_mode_rows(spec)
    return label, merged_outcomes(rows)


def merged_outcomes(rows: list[tuple[Path, dict]]) -> dict[int, bool]:
    """``{seed: success}`` of mode rows from several files; a repeated seed is an error."""
    merged: dict[int, bool] = {}
    for path, row in rows:
        outcomes = outcomes_by_seed(row)
        repeated = sorted(set(outcomes) & set(merged))
        if repeated:
            raise ValueError(f'{path} repeats seeds {repeated[:5]} of the files before it')
        merged.update(outcomes)
    return merged


def load_mode_rows(spec: str) -> tuple[str, list[tuple[Path, dict]]]:
    """Read ``FILE[,FILE...][:MODE]``; return (label, [(file, its row of that mode)])."""
    path_text, _, mode = spec.rpartition(':') if not Path(spec).exists() else (spec, '', '')
    if not path_text:
        path_text, mode = mode, ''
    found = []
    labels = []
    for part in path_text.split(','):
        path = Path(part)
        try:
            rows = json.loads(path.read_text())['modes']
        except (OSError, ValueError, KeyError, TypeError) as error:
            raise ValueError(f'{path}: not a readable eval-policy eval.json ({error})') from error
        names = [row.get('mode') for row in rows]
        chosen = mode
        if not chosen:
            if len(rows) != 1:
                raise ValueError(f'{path} holds modes {names}; name one as {path}:MODE')
            chosen = names[0]
        if chosen not in names:
            raise ValueError(f'{path} has no mode {chosen!r}; it holds {names}')
        found.append((path, rows[names.index(chosen)]))
        labels.append(path.parent.name)
    return f"{'+'.join(labels)}:{chosen}", found


def markdown_table(rows: list[PairedComparison]) -> str:
    """One line per candidate."""
    lines = ['| reference | candidate | seeds | both succeed | only reference | only candidate '
             '| difference | 95% CI | McNemar p |', '|---|---|---:|---:|---:|---:|---:|---:|---:|']
    lines += [f'| {r.reference} | {r.candidate} | {r.seeds} | {r.both} | {r.reference_only} | '
              f'{r.candidate_only} | {r.difference:+.3f} | {r.ci95[0]:+.3f} to '
              f'{r.ci95[1]:+.3f} | {r.mcnemar_p:.3f} |' for r in rows]
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    """Print (and with ``--json``, save) paired comparisons against the first evaluation."""
    parser = argparse.ArgumentParser(
        prog='python -m sparse_policy_ros.sim.paired',
        description='Paired success comparison of eval-policy results on the same seeds.')
    parser.add_argument('specs', nargs='+', metavar='FILE[:MODE]',
                        help='eval.json files (first = reference), each with the mode to use')
    parser.add_argument('--json', type=Path, default=None, help='also write the rows here')
    args = parser.parse_args(argv)
    if len(args.specs) < 2:
        parser.error('give a reference and at least one candidate FILE[:MODE]')
    try:
        reference_name, reference = load_mode(args.specs[0])
        rows = []
        for spec in args.specs[1:]:
            name, outcomes = load_mode(spec)
            rows.append(compare(reference, outcomes, reference_name, name))
    except ValueError as error:
        print(f'paired: error: {error}', file=sys.stderr)
        return 2
    print(markdown_table(rows))
    if args.json is not None:
        args.json.write_text(json.dumps([asdict(r) for r in rows], indent=2))
    return 0


if __name__ == '__main__':
    sys.exit(main())
