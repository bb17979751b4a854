"""eval-policy on the shipped default model: a few short episodes, every reported field."""

from collections import deque
import json
import math
from pathlib import Path

import numpy as np
import pytest
from sparse_policy_ros.control.streaming import delay_steps, StreamSettings
from sparse_policy_ros.sim.env import ArmPushEnv
from sparse_policy_ros.sim.evaluate import (deviation_by_call, failure_breakdown, failure_table,
                                            main, run_episode, stack_history, Timing)
from sparse_policy_ros.sim.seams import main as seams_main, seam_metrics
from sparse_policy_ros.sparsity.schedules import step_schedule
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy
import torch

DEFAULT_MODEL = Path(__file__).resolve().parents[1] / 'models' / 'default'
FIELDS = {'mode', 'target_sparsity', 'episodes', 'success_rate', 'success_ci95',
          'action_deviation_from_dense', 'latency_p50_ms', 'latency_p99_ms', 'sparsity',
          'flops_per_call', 'calls', 'action_deviation_by_call', 'decision_fractions',
          'failures', 'episodes_detail', 'steps', 'held_steps', 'seams', 'observation_change',
          'chunk_outcomes', 'velocity_limited'}


def run(tmp_path: Path, *extra: str) -> tuple[dict, str]:
    out = tmp_path / 'eval'
    assert main(['--model', str(DEFAULT_MODEL), '--episodes', '2', '--max-steps', '20',
                 '--target-sparsity', '0.92', '--out', str(out), *extra]) == 0
    return json.loads((out / 'eval.json').read_text()), (out / 'eval.md').read_text()


def test_default_model_reports_every_field(tmp_path):
    report, table = run(tmp_path, '--modes', 'dense,static,pruner')
    rows = {row['mode']: row for row in report['modes']}
    assert list(rows) == ['dense', 'fixed', 'pruner']
    for mode, row in rows.items():
        assert set(row) == FIELDS, mode
        assert row['episodes'] == 2 and len(row['episodes_detail']) == 2
        assert [e['seed'] for e in row['episodes_detail']] == [100000, 100001]
        # The puck-to-goal distance at reset is the seed's layout, the same in every mode.
        env = ArmPushEnv(render=False)
        for e in row['episodes_detail']:
            env.reset(seed=e['seed'])
            assert e['object_to_goal_start'] == pytest.approx(env.object_to_goal())
            assert e['object_to_goal_end'] >= 0.0
        env.close()
        failed = [e for e in row['episodes_detail'] if not e['success']]
        assert row['failures']['episodes'] == len(failed)
        low, high = row['success_ci95']
        assert 0.0 <= low <= row['success_rate'] <= high <= 1.0
        assert row['calls'] >= 2 * 2  # 20 steps at 8 executed actions: >= 3 calls an episode
        assert 0 < row['latency_p50_ms'] <= row['latency_p99_ms']
        assert row['flops_per_call'] > 0
        assert f'| {mode} |' in table
    assert rows['dense']['sparsity'] == 0.0 and rows['dense']['action_deviation_from_dense'] == 0
    for mode in ('fixed', 'pruner'):
        # Neither schedule reuses across calls, so the first call of an episode is as sparse.
        assert rows[mode]['sparsity'] == pytest.approx(0.92, abs=1e-6)
        assert rows[mode]['flops_per_call'] < rows['dense']['flops_per_call'] / 2
        assert math.isfinite(rows[mode]['action_deviation_from_dense'])
        assert rows[mode]['action_deviation_from_dense'] > 0
        # Error over the rollout: 3 calls in each of the 2 episodes; the per-call means weigh
        # back to the overall mean; the first call after the reset is sparse too.
        by_call = rows[mode]['action_deviation_by_call']
        assert [(c['call'], c['episodes']) for c in by_call] == [(0, 2), (1, 2), (2, 2)]
        assert np.isclose(np.mean([c['mean'] for c in by_call]),
                          rows[mode]['action_deviation_from_dense'])
        assert all(0 < c['mean'] <= c['max'] for c in by_call)
        assert [len(e['deviation']) for e in rows[mode]['episodes_detail']] == [3, 3]
    assert rows['dense']['action_deviation_by_call'] == []
    # Decision shares: dense computes everything; the sparse modes' reuse share is their sparsity.
    assert rows['dense']['decision_fractions'] == {
        'compute': 1.0, 'reuse_block': 0.0, 'reuse_step': 0.0, 'reuse_rollout': 0.0}
    for mode in ('fixed', 'pruner'):
        shares = rows[mode]['decision_fractions']
        assert math.isclose(sum(shares.values()), 1.0)
        assert math.isclose(1.0 - shares['compute'], rows[mode]['sparsity'], abs_tol=1e-6)
    assert rows['pruner']['decision_fractions']['reuse_rollout'] == 0.0  # the searched steps
    assert '| mode | compute | reuse_block | reuse_step | reuse_rollout |' in table
    assert 'by call index' in table and '| 2 | ' in table
    meta = report['meta']
    assert meta['torch_threads'] >= 1 and meta['cpu_count'] >= 1 and meta['model']
    assert 'Command: `' in table


def test_executed_actions_sets_the_replanning_period(tmp_path):
    # 20 steps (no episode ends sooner: the expert needs >= 28): 5 calls at 4 executed
    # actions, 3 at the model's 8.
    report, _ = run(tmp_path, '--modes', 'fora', '--no-deviation', '--executed-actions', '4')
    assert report['meta']['executed_actions'] == 4
    assert report['modes'][0]['calls'] == 2 * 5
    report, _ = run(tmp_path, '--modes', 'fora', '--no-deviation')
    assert report['meta']['executed_actions'] == 8
    assert report['modes'][0]['calls'] == 2 * 3


def test_skipped_deviation_is_reported_as_not_measured(tmp_path):
    report, table = run(tmp_path, '--modes', 'fora', '--no-deviation')
    assert report['modes'][0]['action_deviation_from_dense'] is None
    assert report['modes'][0]['action_deviation_by_call'] == []
    assert '| not measured |' in table and 'by call index' not in table


def test_deviation_by_call_averages_the_episodes_that_reached_each_call():
    rows = deviation_by_call([{'deviation': [0.0, 0.2, 0.4]}, {'deviation': [0.0, 0.4]},
                              {'deviation': []}])
    assert [r['call'] for r in rows] == [0, 1, 2]
    assert [r['episodes'] for r in rows] == [2, 2, 1]
    assert np.allclose([r['mean'] for r in rows], [0.0, 0.3, 0.4])
    assert np.allclose([r['max'] for r in rows], [0.0, 0.4, 0.4])
    assert deviation_by_call([{'deviation': []}]) == []


@pytest.mark.parametrize('args, message', [
    (['--modes', 'dense,turbo'], "unknown modes ['turbo']"),
    (['--episodes', '0'], '--episodes must be >= 1, got 0'),
    (['--executed-actions', '9'], '--executed-actions must be in [0, 8]'),
])
def test_bad_arguments_exit_2_with_a_message(tmp_path, capsys, args, message):
    assert main(['--model', str(DEFAULT_MODEL), '--out', str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


def test_modes_are_interleaved_episode_by_episode(tmp_path, monkeypatch):
    import sparse_policy_ros.sim.evaluate as evaluate
    order = []
    real = evaluate.run_episode

    def recording(env, policy, seed, reference, count_flops, executed_actions=None,
                  timing=None):
        order.append((policy.mode, seed, reference is not None))
        return real(env, policy, seed, reference, count_flops, executed_actions, timing)

    monkeypatch.setattr(evaluate, 'run_episode', recording)
    report, _ = run(tmp_path, '--modes', 'dense,fora,pruner', '--episodes', '3')
    # The order of the modes rotates per episode; dense has no reference, the others share one.
    assert order == [('dense', 100000, False), ('fora', 100000, True), ('pruner', 100000, True),
                     ('fora', 100001, True), ('pruner', 100001, True), ('dense', 100001, False),
                     ('pruner', 100002, True), ('dense', 100002, False), ('fora', 100002, True)]
    assert [row['episodes'] for row in report['modes']] == [3, 3, 3]


@pytest.mark.parametrize('exact_budget', [True, False])
def test_default_pruner_decides_the_searched_schedule(exact_budget):
    # The model card says the shipped pruner's decisions are the searched steps on every call;
    # check it on real closed-loop observations, exact budget (at the sparsity it was searched
    # for) and argmax alike.
    record = json.loads((DEFAULT_MODEL / 'pruner.json').read_text())['training']
    target = record['target_sparsity'] if exact_budget else None
    policy = SparsePolicy.from_pretrained(DEFAULT_MODEL, device='cpu', mode='pruner',
                                          target_sparsity=target)
    env = ArmPushEnv(image_size=96)
    try:
        expected = step_schedule(100, policy.n_branches, record['init_steps'])
        for seed in (100000, 100001):
            policy.reset()
            obs = env.reset(seed=seed)
            history = deque([obs] * 2, maxlen=2)
            for call in range(3):
                chunk = policy.predict(stack_history(history),
                                       generator=torch.Generator().manual_seed(call))
                # The first call after a reset too: the schedule reuses nothing across calls.
                assert torch.equal(chunk.stats.decisions, expected), (seed, call)
                for action in chunk.executable:
                    obs = env.step(np.asarray(action))[0]
                    history.append(obs)
    finally:
        env.close()
        policy.close()


def test_default_model_folder_has_every_file_within_20_mb_and_no_pickles():
    # Issue 5: config, weights, stats, pruner and a model card; 20 MB at most in total.
    names = {path.name for path in DEFAULT_MODEL.iterdir()}
    assert names == {'MODEL_CARD.md', 'config.json', 'model.safetensors', 'stats.safetensors',
                     'pruner.json', 'pruner.safetensors', 'ddim_timesteps.json'}
    total = sum(path.stat().st_size for path in DEFAULT_MODEL.iterdir())
    assert total <= 20_000_000, f'models/default holds {total} bytes, more than 20 MB'
    card = (DEFAULT_MODEL / 'MODEL_CARD.md').read_text()
    config = json.loads((DEFAULT_MODEL / 'config.json').read_text())
    assert f"--seed {config['training']['training']['seed']}" in card
    assert f"--precision {config['training']['precision']}" in card


def test_failure_breakdown_counts_pucks_pushed_away_from_the_goal():
    results = [
        {'success': True, 'object_to_goal_start': 0.2, 'object_to_goal_end': 0.01},
        {'success': False, 'object_to_goal_start': 0.2, 'object_to_goal_end': 0.35},
        {'success': False, 'object_to_goal_start': 0.3, 'object_to_goal_end': 0.05},
        {'success': False, 'object_to_goal_start': 0.1, 'object_to_goal_end': 0.25},
    ]
    breakdown = failure_breakdown(results)
    assert breakdown == {'episodes': 3, 'pushed_away': 2, 'median_end_m': 0.25}
    assert failure_breakdown(results[:1]) == {'episodes': 0, 'pushed_away': 0,
                                              'median_end_m': None}
    table = failure_table([{'mode': 'dense', 'failures': breakdown}])
    assert table.splitlines()[-1] == '| dense | 3 | 2 | 0.250 |'


def episode(policy: SparsePolicy, seed: int, timing) -> dict:
    """Run one 25-step episode of the default task with ``timing``."""
    env = ArmPushEnv(image_size=policy.config.image_shape[1], max_steps=25)
    try:
        return run_episode(env, policy, seed, None, False, None, timing)
    finally:
        env.close()


def test_realtime_with_zero_latency_equals_the_synchronous_evaluation():
    policy = SparsePolicy.from_pretrained(DEFAULT_MODEL, device='cpu', mode='fora',
                                          target_sparsity=0.9)
    for every, stream in ((8, StreamSettings()), (2, StreamSettings('prefix', 2)),
                          (1, StreamSettings('ensemble'))):
        sync = episode(policy, 100003, Timing(every, stream=stream))
        zero = episode(policy, 100003, Timing(every, True, 0.0, stream))
        for key in sync:
            if key != 'latencies_ms':
                assert sync[key] == zero[key], (every, stream.method, key)
        assert sync['calls'] == math.ceil(25 / every) and sync['held_steps'] == 0


def test_realtime_latency_delays_each_chunk_and_the_old_plan_runs_meanwhile():
    policy = SparsePolicy.from_pretrained(DEFAULT_MODEL, device='cpu', mode='fora',
                                          target_sparsity=0.9)
    # 150 ms at 10 Hz: each chunk misses 2 steps; the first call's 2 steps hold the targets.
    slow = episode(policy, 100003, Timing(8, True, 150.0))
    assert slow['held_steps'] == 2
    # Chunked 8 with a 2-step delay: calls at 0, 6, 12, 18, 24 (each chunk runs 6 steps,
    # from the step after the previous chunk's last: no running plan is replaced).
    assert slow['calls'] == 5 and slow['splices'] == 0
    streaming = episode(policy, 100003, Timing(1, True, 150.0))
    # Streaming: a call whenever the policy is free, every 2 steps.
    assert streaming['calls'] == 13 and streaming['held_steps'] == 2
    assert streaming['splices'] == 12 and streaming['splice_max'] > 0
    # A measured latency costs the steps it spans (one for a call under 100 ms; more when a
    # loaded machine makes the first call slow): the first call's own latency holds the start,
    # and a later call slower than the plan it continues holds more steps.
    measured = episode(policy, 100003, Timing(1, True, None))
    assert measured['held_steps'] >= delay_steps(measured['latencies_ms'][0] / 1e3, 0.1)
    assert measured['held_steps'] >= 1


def test_seam_metrics_of_a_known_stream():
    executed = np.array([[0.0], [0.1], [0.3], [0.3]])
    metrics = seam_metrics(executed, 0.1, [0.05, 0.2])
    assert metrics['splice_max'] == 0.2 and metrics['splices'] == 2
    # Velocities 1, 2, 0 rad/s: jumps 1 and 2.
    assert math.isclose(metrics['velocity_jump_max'], 2.0)
    # Third difference -0.3 over 0.001 s^3.
    assert math.isclose(metrics['jerk_rms'], 300.0)


def test_seams_cli_summarises_the_episodes_of_an_evaluation(tmp_path, capsys):
    report, _ = run(tmp_path, '--modes', 'fora', '--no-deviation', '--executed-actions', '1',
                    '--consistency', 'prefix')
    episodes = report['modes'][0]['episodes_detail']
    assert seams_main([str(tmp_path / 'eval' / 'eval.json') + ':fora']) == 0
    line = capsys.readouterr().out.strip().splitlines()[-1]
    worst = max(episodes, key=lambda e: e['velocity_jump_max'])
    assert line.startswith('| eval:fora |') and f"seed {worst['seed']})" in line
    median = float(np.median([e['velocity_jump_max'] for e in episodes]))
    assert f'| {median:.2f} (' in line
    assert seams_main([str(tmp_path / 'missing.json')]) == 2
    assert 'expected an eval-policy eval.json' in capsys.readouterr().err


@pytest.mark.parametrize('args, message', [
    (['--latency-ms', '10'], '--latency-ms needs --realtime'),
    (['--realtime', '--latency-ms', '-1'], 'latency must be a finite number of seconds >= 0'),
    (['--consistency', 'prefix', '--prefix-steps', '-1'], 'prefix_steps must be an int >= 0'),
    (['--prefix-until', '0'], r'prefix_until must be in (0, 1]'),
])
def test_bad_timing_arguments_exit_2(tmp_path, capsys, args, message):
    assert main(['--model', str(DEFAULT_MODEL), '--out', str(tmp_path), *args]) == 2
    assert message in capsys.readouterr().err


def test_streaming_rollout_reuses_the_last_calls_steps_with_shifted_noise_and_cache():
    policy = SparsePolicy.from_pretrained(DEFAULT_MODEL, device='cpu', mode='ddim_rollout',
                                          target_sparsity=0.97)
    try:
        stream = StreamSettings('prefix', 5)
        shifted = episode(policy, 100004, Timing(1, stream=stream, cache_shift=True,
                                                 noise='shifted'))
        again = episode(policy, 100004, Timing(1, stream=stream, cache_shift=True,
                                               noise='shifted'))
        fresh = episode(policy, 100004, Timing(1, stream=stream, cache_shift=True))
    finally:
        policy.close()
    assert shifted == {**again, 'latencies_ms': shifted['latencies_ms']}  # reproducible
    counts = dict(zip(('compute', 'block', 'step', 'rollout'), shifted['decisions']))
    # 25 calls of 6 steps: the first computes all 6, each later one 3 and reuses 3.
    n_branches = policy.n_branches
    assert counts['compute'] == (6 + 24 * 3) * n_branches
    assert counts['rollout'] == 24 * 3 * n_branches
    assert fresh['calls'] == shifted['calls'] == 25
    with pytest.raises(ValueError, match="noise must be one of \\['fresh', 'shifted'\\]"):
        Timing(1, noise='same')


def test_cli_records_cache_shift_and_noise(tmp_path):
    report, _ = run(tmp_path, '--modes', 'ddim_rollout', '--target-sparsity', '0.97',
                    '--executed-actions', '1', '--consistency', 'prefix', '--noise', 'shifted',
                    '--no-deviation')
    assert report['meta']['cache_shift'] is True and report['meta']['noise'] == 'shifted'
    assert report['modes'][0]['decision_fractions']['reuse_rollout'] > 0.3


def test_streaming_warm_start_skips_half_of_the_steps_after_the_first_call(tmp_path):
    policy = SparsePolicy.from_pretrained(DEFAULT_MODEL, device='cpu', mode='ddim_searched',
                                          target_sparsity=0.94)
    try:
        warm = episode(policy, 100005, Timing(1, stream=StreamSettings('warm', warm_start=0.5)))
        cold = episode(policy, 100005, Timing(1, stream=StreamSettings('none')))
    finally:
        policy.close()
    n_branches = policy.n_branches
    counts = dict(zip(('compute', 'block', 'step', 'rollout'), warm['decisions']))
    # 25 calls of the searched 6 steps: the first from noise, each later one from the plan
    # re-noised to step 3 (3 steps computed, 3 skipped).
    assert warm['calls'] == cold['calls'] == 25
    assert counts['compute'] == (6 + 24 * 3) * n_branches
    assert dict(zip(('compute', 'block', 'step', 'rollout'), cold['decisions']))[
        'compute'] == 25 * 6 * n_branches
    # The guess carries the plan from call to call: the chunks jump less at the splices.
    assert warm['splice_max'] < cold['splice_max']
    report, _ = run(tmp_path, '--modes', 'fora', '--no-deviation', '--executed-actions', '1',
                    '--consistency', 'warm', '--warm-start', '0.3')
    assert report['meta']['consistency']['warm_start'] == 0.3
