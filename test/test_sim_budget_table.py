"""Equal-budget table: rows paired with searched DDIM-k on the seeds both ran."""

import json

from sparse_policy_ros.sim.budget_table import main


def write_eval(path, modes):
    path.mkdir(parents=True)
    rows = [{'mode': name, 'latency_p50_ms': 10.0, 'latency_p99_ms': 14.0, 'sparsity': 0.94,
             'flops_per_call': 2e9,
             'episodes_detail': [{'seed': s, 'success': ok} for s, ok in enumerate(outcomes)]}
            for name, outcomes in modes.items()]
    (path / 'eval.json').write_text(json.dumps({'modes': rows}))
    return path / 'eval.json'


def test_the_table_pairs_each_row_with_searched_ddim(tmp_path, capsys):
    ref = [True] * 8 + [False] * 2
    cand = [True] * 6 + [False] * 4
    f = write_eval(tmp_path / 'k6', {'ddim_searched': ref, 'fora': cand})
    assert main(['--dense', f'{f}:ddim_searched', '--budget', '6', f'{f}:ddim_searched',
                 f'{f}:fora', '--out', str(tmp_path / 'out')]) == 0
    rows = json.loads((tmp_path / 'out' / 'table.json').read_text())
    assert [r['budget'] for r in rows] == [None, 6, 6]
    assert rows[2]['vs_reference']['difference'] == -0.2
    assert rows[2]['gflop_per_call'] == 2.0 and rows[1]['success'] == 0.8
    assert 'reference' in capsys.readouterr().out
    assert main(['--budget', 'six', f'{f}:fora']) == 2
    assert '--budget takes K' in capsys.readouterr().err
