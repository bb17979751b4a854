"""Paired success comparison of evaluations on the same seeds."""

import json

import pytest
from sparse_policy_ros.sim.paired import (
    compare, main, mcnemar_exact_p, paired_interval)


def test_counts_difference_and_mcnemar():
    reference = {s: s < 82 for s in range(100)}  # 82 successes
    candidate = {s: (s < 72) or (s == 90) for s in range(100)}  # 73, 10 lost, 1 gained
    row = compare(reference, candidate, 'dense', 'pruner')
    assert (row.both, row.reference_only, row.candidate_only, row.neither) == (72, 10, 1, 17)
    assert row.difference == pytest.approx(-0.09)
    # Exact two-sided binomial test of 1 vs 10 discordant seeds: 2 * (1 + 11) / 2^11.
    assert row.mcnemar_p == pytest.approx(24 / 2048)
    assert row.ci95[0] < -0.09 < row.ci95[1] < 0
    # Only the seeds both ran count.
    assert compare({1: True, 2: True}, {2: False, 3: True}).seeds == 1


def test_interval_and_p_edge_cases():
    assert mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(3, 3) == 1.0
    low, high = paired_interval(50, 0, 0, 50)
    assert low < 0 < high and high - low < 0.05
    with pytest.raises(ValueError, match='paired counts'):
        paired_interval(0, 0, 0, 0)
    with pytest.raises(ValueError, match='share no seeds'):
        compare({1: True}, {2: True})


def test_cli_reads_eval_json(tmp_path, capsys):
    def write(name, modes):
        path = tmp_path / name / 'eval.json'
        path.parent.mkdir()
        path.write_text(json.dumps({'modes': [
            {'mode': mode, 'episodes_detail': [{'seed': s, 'success': ok, 'calls': 3}
                                               for s, ok in enumerate(outcomes)]}
            for mode, outcomes in modes.items()]}))
        return path

    dense = write('dense', {'dense': [True, True, False, True]})
    sparse = write('sparse', {'pruner': [True, False, False, True],
                              'fora': [True, True, True, True]})
    out = tmp_path / 'rows.json'
    assert main([str(dense), f'{sparse}:pruner', f'{sparse}:fora', '--json', str(out)]) == 0
    printed = capsys.readouterr().out
    assert 'dense:dense | sparse:pruner | 4 | 2 | 1 | 0 | -0.250' in printed
    rows = json.loads(out.read_text())
    assert [r['candidate'] for r in rows] == ['sparse:pruner', 'sparse:fora']
    assert main([str(dense), str(sparse)]) == 2  # two modes: which one?
    assert 'name one as' in capsys.readouterr().err
    assert main([str(dense), f'{sparse}:dense']) == 2


def test_cli_merges_split_runs(tmp_path, capsys):
    def write(name, first_seed, outcomes):
        path = tmp_path / name / 'eval.json'
        path.parent.mkdir()
        path.write_text(json.dumps({'modes': [{'mode': 'pruner', 'episodes_detail': [
            {'seed': first_seed + i, 'success': ok, 'calls': 3}
            for i, ok in enumerate(outcomes)]}]}))
        return path

    first, second = write('a', 0, [True, False]), write('b', 2, [True, True])
    reference = write('ref', 0, [True, True, True, False])
    assert main([str(reference), f'{first},{second}:pruner']) == 0
    assert 'ref:pruner | a+b:pruner | 4 | 2 | 1 | 1 | +0.000' in capsys.readouterr().out
    assert main([str(reference), f'{first},{first}']) == 2
    assert 'repeats seeds [0, 1]' in capsys.readouterr().err
