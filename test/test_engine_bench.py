"""The benchmark script runs end to end on a tiny config and writes complete results."""

import json

from sparse_policy_ros.bench import main, ROW_FIELDS


def test_quick_bench_writes_complete_json_and_markdown(tmp_path, capsys):
    assert main(['--quick', '--calls', '2', '--out', str(tmp_path)]) == 0
    [json_path] = tmp_path.glob('bench-*.json')
    [md_path] = tmp_path.glob('bench-*.md')
    record = json.loads(json_path.read_text())
    for key in ('date', 'machine', 'source', 'settings', 'policy_config', 'rows', 'targets'):
        assert key in record, key
    for key in ('platform', 'cpu_count', 'torch', 'device', 'device_name'):
        assert record['machine'][key] not in (None, ''), key
    rows = record['rows']
    # dense + 3 sparsities x (fora, fixed, ddim, pruner inline, pruner overlapped)
    assert len(rows) == 1 + 3 * 5
    assert rows[0]['mode'] == 'dense' and rows[0]['speedup_p50'] == 1.0
    assert rows[0]['sparsity'] == 0.0 and rows[0]['flop_reduction'] == 0.0
    seen = set()
    for row in rows:
        assert set(ROW_FIELDS) <= set(row), set(ROW_FIELDS) - set(row)
        assert row['calls'] == 2
        assert set(row['latency_ms']) == {'p50', 'p99', 'mean', 'min', 'max'}
        split = row['split_ms']
        assert {'encode', 'pruner_wait', 'pruner_run', 'denoise', 'other'} <= set(split)
        # The CPU split: every step is a computed or a reuse step, and the parts add up.
        steps = row['steps']
        assert split['n_computed_steps'] + split['n_reuse_steps'] == steps
        if row['mode'] in ('dense', 'ddim'):
            assert split['n_reuse_steps'] == 0
        if row['mode'] == 'fora' and row['target_sparsity'] == 0.5:
            assert split['n_computed_steps'] == 5
        # The measured parts fit inside the call (nothing counted twice).
        assert split['rest'] >= -0.02 * split['mean_call'], split
        if row['mode'] == 'pruner' and not row['async_pruner']:  # inline: its run is its cost
            assert split['pruner'] > 0.0
        assert min(split['computed_steps'], split['reuse_steps'], split['encoder']) >= 0.0
        assert set(row['floor_ms']) == {'gemm_gflops', 'branch_gemm_gflops'}
        assert row['floor_ms']['gemm_gflops'] > 0 and row['x_floor']['gemm_gflops'] > 0
        assert row['flops'] > 0 and row['speedup_p50'] > 0
        # Only decisions that read earlier calls keep a rollout cache (the random pruner's).
        assert (row['cache_bytes'] > 0) == (row['mode'] == 'pruner'), row
        assert abs(sum(row['decision_mix'].values()) - 1.0) < 1e-6
        seen.add((row['mode'], row['target_sparsity'], row['async_pruner']))
        if row['mode'] in ('fixed', 'pruner', 'ddim') and row['target_sparsity'] == 0.5:
            assert abs(row['sparsity'] - 0.5) < 1e-6
        if row['mode'] != 'pruner':
            assert row['async_pruner'] is None
    assert len(seen) == len(rows)
    assert {r['async_pruner'] for r in rows if r['mode'] == 'pruner'} == {True, False}
    assert sorted(r['label'] for r in record['targets']['rows']) == [
        'ddim @ 0.95', 'fixed @ 0.95', 'fora @ 0.95', 'pruner @ 0.95 (inline)',
        'pruner @ 0.95 (overlapped)']
    markdown = md_path.read_text()
    assert '| dense |' in markdown and 'pruner @ 0.8 (overlapped)' in markdown
    assert 'Time split' in markdown and record['machine']['gemm_gflops'] > 0
    assert '| dense |' in capsys.readouterr().out


def test_module_calls_rows_time_the_unfrozen_engine_beside_the_frozen_one(tmp_path):
    assert main(['--quick', '--calls', '2', '--sparsity', '0.8', '--modes', 'fora', 'pruner',
                 '--pruner-overlap', 'auto', '--module-calls', '--out', str(tmp_path)]) == 0
    [json_path] = tmp_path.glob('bench-*.json')
    rows = json.loads(json_path.read_text())['rows']
    assert [(r['label'], r['frozen']) for r in rows] == [
        ('dense', True), ('fora @ 0.8', True), ('fora @ 0.8, module calls', False),
        ('pruner @ 0.8', True), ('pruner @ 0.8, module calls', False)]
    by_label = {r['label']: r for r in rows}
    for mode in ('fora', 'pruner'):
        frozen, modules = by_label[f'{mode} @ 0.8'], by_label[f'{mode} @ 0.8, module calls']
        assert frozen['sparsity'] == modules['sparsity']
        # Projecting the cross-attention keys/values at each computed step costs FLOPs.
        assert modules['flops'] > frozen['flops']


def test_int8_rows_time_the_int8_engine_beside_the_float_one(tmp_path):
    assert main(['--quick', '--calls', '2', '--sparsity', '0.8', '--modes', 'fora', 'pruner',
                 '--pruner-overlap', 'auto', '--int8', '--device', 'cpu',
                 '--out', str(tmp_path)]) == 0
    [json_path] = tmp_path.glob('bench-*.json')
    rows = json.loads(json_path.read_text())['rows']
    assert [(r['label'], r['int8_linears']) for r in rows] == [
        ('dense', False), ('dense, int8', True), ('fora @ 0.8', False),
        ('fora @ 0.8, int8', True), ('pruner @ 0.8', False), ('pruner @ 0.8, int8', True)]
    by_label = {r['label']: r for r in rows}
    for name in ('dense', 'fora @ 0.8', 'pruner @ 0.8'):
        exact, int8 = by_label[name], by_label[f'{name}, int8']
        assert exact['sparsity'] == int8['sparsity']
        # The int8 matmuls are counted like the float ones they replace.
        assert exact['flops'] == int8['flops'] > 0


def test_sliding_frames_encode_one_frame_per_call_and_uncached_rows_encode_all(tmp_path):
    assert main(['--quick', '--calls', '3', '--sparsity', '0.8', '--modes', 'fora',
                 '--frames', 'sliding', '--uncached-rows', '--device', 'cpu',
                 '--out', str(tmp_path)]) == 0
    [json_path] = tmp_path.glob('bench-*.json')
    record = json.loads(json_path.read_text())
    rows = record['rows']
    assert [(r['label'], r['frame_cache']) for r in rows] == [
        ('dense', True), ('dense, no frame cache', False), ('fora @ 0.8', True),
        ('fora @ 0.8, no frame cache', False)]
    n_obs = record['policy_config']['n_obs_steps']
    for row in rows:
        # The window moves one frame per call: the cache encodes only the newest.
        assert row['frames_encoded'] == (1.0 if row['frame_cache'] else n_obs), row['label']
        assert row['split_ms']['encoder'] > 0


def test_fresh_frames_leave_the_frame_cache_nothing_to_reuse(tmp_path):
    assert main(['--quick', '--calls', '2', '--sparsity', '0.8', '--modes', 'ddim',
                 '--device', 'cpu', '--out', str(tmp_path)]) == 0
    [json_path] = tmp_path.glob('bench-*.json')
    rows = json.loads(json_path.read_text())['rows']
    n_obs = json.loads(json_path.read_text())['policy_config']['n_obs_steps']
    assert [r['frames_encoded'] for r in rows] == [n_obs, n_obs]
