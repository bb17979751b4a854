"""Dense policy training and pruner distillation on tiny generated data."""

import json
import logging
import os
from pathlib import Path
import socket
import subprocess
import sys

import numpy as np
import pytest
from sparse_policy_ros.policy.checkpoint import load_policy
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.model import DiffusionPolicy
from sparse_policy_ros.sparsity.pruner import load_pruner
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy
from sparse_policy_ros.training import checkpointing
from sparse_policy_ros.training.checkpointing import (
    flatten_optimizer, latest_checkpoint, unflatten_optimizer)
from sparse_policy_ros.training.replay_buffer import ReplayBuffer
from sparse_policy_ros.training.schedule_search import main as search_main
from sparse_policy_ros.training.sequence_dataset import split_episodes
from sparse_policy_ros.training.train_config import load_run_config, TrainConfig
from sparse_policy_ros.training.train_policy import (
    autocast_context, init_weights_from, main as train_policy_main, train,
    with_recorded_joint_names)
from sparse_policy_ros.training.train_pruner import main as train_pruner_main, train_pruner
import torch
import yaml
import zarr

REPO = Path(__file__).resolve().parents[1]

POLICY = {'encoder': 'small_cnn', 'n_layer': 2, 'n_emb': 32, 'n_head': 2, 'state_dim': 3,
          'action_dim': 3, 'horizon': 8, 'n_obs_steps': 2, 'n_action_steps': 4,
          'image_shape': [3, 24, 24], 'crop_shape': [20, 20], 'image_feature_dim': 16,
          'num_train_timesteps': 10, 'num_inference_steps': 10, 'p_drop_attn': 0.0}


def make_dataset(path: Path, episodes: int = 6, length: int = 24, seed: int = 0) -> Path:
    """Episodes whose actions are a smooth function of a drifting state (learnable)."""
    rng = np.random.default_rng(seed)
    buffer = ReplayBuffer.create(path, overwrite=True)
    for _ in range(episodes):
        start = rng.uniform(-1, 1, size=3)
        t = np.arange(length)[:, None]
        state = (start + 0.05 * t * np.sign(start)).astype(np.float32)
        action = (state + 0.05 * np.sign(start)).astype(np.float32)
        images = np.zeros((length, 24, 24, 3), np.uint8)
        images[..., 0] = (127 + 100 * np.tanh(state[:, :1, None])).astype(np.uint8)
        buffer.add_episode({'img': images, 'state': state, 'action': action})
    return path


def write_config(path: Path, **training) -> Path:
    settings = {'steps': 60, 'batch_size': 16, 'warmup_steps': 5, 'val_every': 20,
                'checkpoint_every': 20, 'val_ratio': 0.2, 'lr': 1e-3, **training}
    path.write_text(yaml.safe_dump({'policy': POLICY, 'training': settings}))
    return path


@pytest.fixture(scope='module')
def dataset(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp('data') / 'demo.zarr')


@pytest.fixture(scope='module')
def trained(tmp_path_factory, dataset) -> Path:
    """Train a tiny policy long enough for its loss to fall (shared by the pruner tests)."""
    out = tmp_path_factory.mktemp('policy')
    config = write_config(out.parent / 'train.yaml', steps=300, val_every=100,
                          checkpoint_every=150)
    policy_config, train_config = load_run_config(config)
    train(dataset, policy_config, train_config, out, device='cpu')
    return out


def test_loss_falls_and_folder_loads(trained):
    lines = (trained / 'train_log.jsonl').read_text().splitlines()
    history = [json.loads(line) for line in lines]
    assert [h['step'] for h in history] == [100, 200, 300]
    # An untrained epsilon predictor outputs ~0, so its MSE against unit noise is ~1.
    assert history[-1]['train_loss'] < 0.3
    assert history[0]['val_loss'] < 0.9
    model = load_policy(trained)
    assert model.config.to_dict() == PolicyConfig(**POLICY).to_dict()


def test_the_model_records_the_joints_its_dataset_was_recorded_with(tmp_path):
    data = make_dataset(tmp_path / 'named.zarr', episodes=3, length=12)
    ReplayBuffer.open(data, mode='a').set_attrs({'joint_names': ['yaw', 'pitch', 'roll']})
    policy_config, train_config = load_run_config(
        write_config(tmp_path / 'c.yaml', steps=4, val_every=2, checkpoint_every=2,
                     val_ratio=0.34, batch_size=4))
    train(data, policy_config, train_config, tmp_path / 'out', device='cpu')
    assert load_policy(tmp_path / 'out').config.extra['joint_names'] == ['yaw', 'pitch', 'roll']
    # A config that declares other joints than the recording is refused, naming both lists.
    declared = PolicyConfig.from_dict({**policy_config.to_dict(),
                                       'extra': {'joint_names': ['roll', 'pitch', 'yaw']}})
    both = r"\['roll', 'pitch', 'yaw'\].*\['yaw', 'pitch', 'roll'\]"
    with pytest.raises(ValueError, match=both):
        with_recorded_joint_names(declared, data)
    # A dataset without recorded joints leaves the config as it is.
    assert with_recorded_joint_names(policy_config, make_dataset(tmp_path / 'plain.zarr')) \
        == policy_config


def test_resume_after_interruption_reaches_same_step(tmp_path, dataset):
    config = write_config(tmp_path / 'c.yaml', steps=40, checkpoint_every=10, val_every=10)
    policy_config, train_config = load_run_config(config)
    out = tmp_path / 'run'
    train(dataset, policy_config, train_config, out, device='cpu', stop_after=25)
    state = json.loads((latest_checkpoint(out) / 'state.json').read_text())
    assert state['step'] == 20  # the kill lost at most one checkpoint interval
    summary = train(dataset, policy_config, train_config, out, resume=True, device='cpu')
    assert summary['step'] == 40
    final = json.loads((latest_checkpoint(out) / 'state.json').read_text())
    assert final['step'] == 40
    assert [h['step'] for h in final['history']] == [10, 20, 30, 40]


def test_init_from_starts_at_the_given_weights(tmp_path, dataset, trained):
    # One step at a negligible learning rate: the result is the source's weights, not a
    # fresh initialisation (which would be far from them).
    config = write_config(tmp_path / 'c.yaml', steps=1, warmup_steps=0, lr=1e-12,
                          checkpoint_every=1, val_every=1)
    policy_config, train_config = load_run_config(config)
    out = tmp_path / 'ft'
    train(dataset, policy_config, train_config, out, device='cpu', init_from=trained)
    source, tuned = load_policy(trained).state_dict(), load_policy(out).state_dict()
    for name, value in source.items():
        torch.testing.assert_close(tuned[name], value, rtol=0, atol=1e-6, msg=name)


def test_cli_overrides_reach_the_run_and_the_seed_changes_it(tmp_path, dataset):
    config = write_config(tmp_path / 'c.yaml', steps=50, checkpoint_every=1, val_every=1)
    runs = {}
    for seed in (0, 7):
        out = tmp_path / f'seed{seed}'
        assert train_policy_main(['--dataset', str(dataset), '--config', str(config), '--out',
                                  str(out), '--device', 'cpu', '--steps', '1', '--seed',
                                  str(seed), '--lr', '2e-4']) == 0
        state = json.loads((latest_checkpoint(out) / 'state.json').read_text())
        assert (state['step'], state['training']['seed'], state['training']['lr']) == (
            1, seed, 2e-4)
        runs[seed] = load_policy(out).state_dict()
    assert any(not torch.equal(runs[0][name], runs[7][name]) for name in runs[0])


def test_bf16_precision_runs_the_forward_in_bf16_on_the_cpu_and_keeps_float32_weights(
        tmp_path, dataset):
    layer = torch.nn.Linear(4, 4)
    for precision, dtype in (('bf16', torch.bfloat16), ('fp32', torch.float32),
                             ('auto', torch.float32)):
        with autocast_context(torch.device('cpu'), precision):
            assert layer(torch.ones(2, 4)).dtype == dtype, precision
    config = write_config(tmp_path / 'c.yaml', steps=30, checkpoint_every=30, val_every=30)
    runs = {}
    for precision in ('fp32', 'bf16'):
        out = tmp_path / precision
        assert train_policy_main(['--dataset', str(dataset), '--config', str(config), '--out',
                                  str(out), '--device', 'cpu', '--precision', precision]) == 0
        state = json.loads((latest_checkpoint(out) / 'state.json').read_text())
        assert (state['step'], state['precision']) == (30, precision)
        history = [json.loads(line) for line in (out / 'train_log.jsonl').read_text().splitlines()]
        assert history[-1]['val_loss'] < 0.9  # learns under bf16 too (untrained: ~1)
        runs[precision] = load_policy(out).state_dict()
    assert all(value.dtype == torch.float32 for value in runs['bf16'].values()
               if value.is_floating_point())
    # Same seed and batches: only the forward's rounding differs, so the weights differ.
    assert any(not torch.equal(runs['fp32'][name], runs['bf16'][name]) for name in runs['fp32'])
    with pytest.raises(ValueError, match="precision must be one of auto, fp32, bf16, got 'fp16'"):
        train(dataset, *load_run_config(config), tmp_path / 'bad', device='cpu',
              precision='fp16')


def test_init_from_refuses_other_normalization_stats(tmp_path, trained):
    other = make_dataset(tmp_path / 'other.zarr', seed=5)
    config = write_config(tmp_path / 'c.yaml', steps=1)
    policy_config, train_config = load_run_config(config)
    with pytest.raises(ValueError, match='normalization stats'):
        train(other, policy_config, train_config, tmp_path / 'ft', device='cpu',
              init_from=trained)


def widened_copy(folder: Path, fraction: float):
    """Load ``folder`` and make a fresh policy whose action.max lies ``fraction`` higher."""
    source = load_policy(folder)
    stats = {name: {key: source.normalizer.stats_tensors()[f'{name}.{key}'].numpy()
                    for key in ('min', 'max')} for name in source.normalizer.fields}
    span = stats['action']['max'] - stats['action']['min']
    stats['action']['max'] = stats['action']['max'] + fraction * span
    fresh = type(source)(source.config)
    fresh.normalizer.set_stats(stats)
    return source, fresh


def test_keep_stats_keeps_the_source_stats_for_slightly_wider_data(trained):
    source, fresh = widened_copy(trained, 0.01)
    with pytest.raises(ValueError, match='--keep-stats for more data'):
        init_weights_from(fresh, trained)
    init_weights_from(fresh, trained, keep_stats=True)
    for key, value in source.normalizer.stats_tensors().items():
        torch.testing.assert_close(fresh.normalizer.stats_tensors()[key], value, rtol=0, atol=0)
    for name, value in source.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], value, rtol=0, atol=0, msg=name)


def test_keep_stats_refuses_data_of_another_range(trained):
    _, fresh = widened_copy(trained, 0.2)
    with pytest.raises(ValueError, match=r'action.max .* by 20.0% of its range, expected at most'
                                         r' 5% \(--stats-tolerance\)'):
        init_weights_from(fresh, trained, keep_stats=True)
    # A wider tolerance is the caller's call (e.g. labels that add the reset pose), and it is
    # still a bound: the source stats are kept within it, refused beyond it.
    source, fresh = widened_copy(trained, 0.08)
    init_weights_from(fresh, trained, keep_stats=True, tolerance=0.1)
    for key, value in source.normalizer.stats_tensors().items():
        torch.testing.assert_close(fresh.normalizer.stats_tensors()[key], value, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r'by 8.0% of its range, expected at most 7%'):
        init_weights_from(widened_copy(trained, 0.08)[1], trained, keep_stats=True,
                          tolerance=0.07)
    with pytest.raises(ValueError, match=r'--stats-tolerance must be in \[0, 1\]'):
        init_weights_from(fresh, trained, keep_stats=True, tolerance=-0.1)


def test_optimizer_state_round_trips_through_safetensors(tmp_path):
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(4, 3)).square().sum().backward()
        optimizer.step()
    tensors, meta = flatten_optimizer(optimizer)
    restored = torch.optim.AdamW(torch.nn.Linear(3, 2).parameters(), lr=5.0)
    restored.load_state_dict(unflatten_optimizer(tensors, json.loads(json.dumps(meta))))
    before, after = optimizer.state_dict(), restored.state_dict()
    assert after['param_groups'][0]['lr'] == 1e-3
    for index, slots in before['state'].items():
        for name, value in slots.items():
            assert torch.equal(after['state'][index][name], value), name


def test_bad_config_and_dataset_fail_clearly(tmp_path, dataset, capsys):
    bad = tmp_path / 'bad.yaml'
    bad.write_text(yaml.safe_dump({'policy': POLICY, 'training': {'stepz': 3}}))
    assert train_policy_main(['--dataset', str(dataset), '--config', str(bad),
                              '--out', str(tmp_path / 'o')]) == 2
    assert 'stepz' in capsys.readouterr().err
    with pytest.raises(ValueError, match='steps'):
        TrainConfig(steps=0)
    wrong_dims = write_config(tmp_path / 'w.yaml')
    data = yaml.safe_load(wrong_dims.read_text())
    data['policy']['state_dim'] = 5
    wrong_dims.write_text(yaml.safe_dump(data))
    assert train_policy_main(['--dataset', str(dataset), '--config', str(wrong_dims),
                              '--out', str(tmp_path / 'o2')]) == 2
    assert 'state' in capsys.readouterr().err
    assert train_policy_main(['--dataset', str(tmp_path / 'missing.zarr'), '--config',
                              str(write_config(tmp_path / 'ok.yaml')),
                              '--out', str(tmp_path / 'o3')]) == 2


def strict_json_lines(path: Path) -> list[dict]:
    """Parse JSON lines, refusing the NaN/Infinity literals that strict JSON lacks."""
    def refuse(constant):
        raise ValueError(f'{path}: invalid JSON constant {constant}')
    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


def test_nan_in_a_validation_episode_fails_naming_it(tmp_path, capsys):
    path = make_dataset(tmp_path / 'nan.zarr')
    _, val_idx = split_episodes(6, 0.2, 0)  # write_config's val_ratio and seed
    episode = int(val_idx[0])
    stored = zarr.open_group(str(path), mode='r+')['data/state']
    start = int(ReplayBuffer.open(path).episode_slice(episode).start)
    row = stored[start + 4]
    row[1] = np.nan
    stored[start + 4] = row
    out = tmp_path / 'o'
    assert train_policy_main(['--dataset', str(path), '--config',
                              str(write_config(tmp_path / 'c.yaml', steps=2, val_every=1)),
                              '--out', str(out), '--device', 'cpu']) == 2
    err = capsys.readouterr().err
    assert (f'data/state holds 1 non-finite values (NaN or inf) in episode(s) [{episode}], the '
            f'first at step 4 of episode {episode}') in err, err
    assert not (out / 'train_log.jsonl').exists()


@pytest.mark.parametrize('where, expected', [
    ('train', 'training loss is nan at step 1: stopping'),
    ('val', 'validation loss (val_loss) is nan at step 2 on validation episodes [3]'),
])
def test_non_finite_loss_stops_training_with_an_error(tmp_path, dataset, monkeypatch, capsys,
                                                      where, expected):
    original = DiffusionPolicy.compute_loss

    def nan_loss(self, batch, generator=None):
        loss = original(self, batch, generator=generator)
        return loss * float('nan') if self.training == (where == 'train') else loss
    monkeypatch.setattr(DiffusionPolicy, 'compute_loss', nan_loss)
    out = tmp_path / 'o'
    config = write_config(tmp_path / 'c.yaml', steps=4, val_every=2, checkpoint_every=2)
    assert train_policy_main(['--dataset', str(dataset), '--config', str(config),
                              '--out', str(out), '--device', 'cpu']) == 1
    assert expected in capsys.readouterr().err
    log = out / 'train_log.jsonl'
    assert not log.exists() or strict_json_lines(log) == []
    assert latest_checkpoint(out) is None  # nothing diverged reached a checkpoint


def test_stale_checkpoint_temporaries_are_removed_on_resume(tmp_path, dataset, caplog):
    config = write_config(tmp_path / 'c.yaml', steps=4, checkpoint_every=2, val_every=2)
    policy_config, train_config = load_run_config(config)
    out = tmp_path / 'run'
    train(dataset, policy_config, train_config, out, device='cpu', stop_after=2)
    # What kill -9 during the next checkpoint write leaves behind.
    stale_dir = out / 'checkpoints' / '.tmp-k1lled'
    stale_dir.mkdir()
    (stale_dir / 'model.safetensors').write_bytes(b'half a file')
    stale_file = out / '.model.safetensors.x7f3q'
    stale_file.write_bytes(b'half a file')
    keep = out / 'checkpoints' / 'notes.txt'
    keep.write_text('not ours to delete')
    with caplog.at_level(logging.WARNING):
        summary = train(dataset, policy_config, train_config, out, resume=True, device='cpu')
    assert summary['step'] == 4
    assert [h['step'] for h in summary['history']] == [2, 4]  # resumed, not restarted
    assert not stale_dir.exists() and not stale_file.exists() and keep.exists()
    assert f'removed {stale_dir}, left by an interrupted checkpoint write' in caplog.text
    assert f'removed {stale_file}' in caplog.text
    assert json.loads((latest_checkpoint(out) / 'state.json').read_text())['step'] == 4


def test_stale_temporaries_cleanup_keeps_completed_checkpoints(tmp_path):
    root = tmp_path / 'checkpoints'
    for name in ('latest', '.old', '.tmp-a', '.tmp-b'):
        (root / name).mkdir(parents=True)
        (root / name / 'state.json').write_text('{}')
    (root / '.tmp-file').write_text('a file, not a temporary folder')
    (tmp_path / 'model.safetensors').write_bytes(b'the finished weights')
    removed = checkpointing.remove_stale_temporaries(tmp_path)
    assert removed == [root / '.tmp-a', root / '.tmp-b']
    assert sorted(p.name for p in root.iterdir()) == ['.old', '.tmp-file', 'latest']
    assert (tmp_path / 'model.safetensors').exists()
    assert checkpointing.remove_stale_temporaries(tmp_path / 'missing') == []


def test_wrongly_typed_run_config_values_name_the_file(tmp_path):
    path = tmp_path / 'c.yaml'
    policy_yaml = yaml.safe_dump({'policy': POLICY})
    for text, expected in (
            # YAML 1.1 reads 1e-4 (no dot) as a string.
            (policy_yaml + 'training:\n  lr: 1e-4\n',
             'training lr must be a number, finite and > 0 (YAML reads 1e-4 as a string: '
             "write 1.0e-4), got '1e-4' (str)"),
            (policy_yaml + 'training:\n  steps: true\n',
             'training steps must be an int, >= 1, got True (bool)'),
            (yaml.safe_dump({'policy': {**POLICY, 'control_hz': '10'}}),
             "policy section: control_hz must be a number, finite and > 0 (Hz), got '10' "
             '(str)')):
        path.write_text(text)
        with pytest.raises(ValueError) as info:
            load_run_config(path)
        assert str(info.value) == f'{path}: {expected}', str(info.value)
    path.write_text('policy: [unclosed')
    with pytest.raises(ValueError) as info:
        load_run_config(path)
    assert str(info.value).startswith(f'{path}: expected YAML or JSON'), str(info.value)


def test_ddp_two_cpu_processes_on_gloo(tmp_path, dataset):
    config = write_config(tmp_path / 'c.yaml', steps=6, val_every=6, checkpoint_every=6)
    with socket.socket() as sock:
        sock.bind(('127.0.0.1', 0))
        port = sock.getsockname()[1]
    env = {**os.environ, 'OMP_NUM_THREADS': '1'}
    result = subprocess.run(
        [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '1', '--nproc_per_node', '2',
         '--master_addr', '127.0.0.1', '--master_port', str(port),
         '-m', 'sparse_policy_ros.training.train_policy', '--dataset', str(dataset),
         '--config', str(config), '--out', str(tmp_path / 'ddp'), '--device', 'cpu'],
        env=env, capture_output=True, text=True, timeout=240, cwd=REPO)
    assert result.returncode == 0, result.stderr[-3000:]
    log = [json.loads(x) for x in
           (tmp_path / 'ddp' / 'train_log.jsonl').read_text().splitlines()]
    assert [h['step'] for h in log] == [6]  # written once, by rank 0 only
    assert (tmp_path / 'ddp' / 'model.safetensors').is_file()


def test_pruner_reaches_target_and_beats_static(trained, dataset, tmp_path):
    record = train_pruner(trained, dataset, target=0.7, trajectories=4, out=tmp_path / 'p',
                          epochs=12, lr=3e-3, held_out=1, seed=0, sparsity_weight=1.0)
    assert abs(record['achieved_sparsity'] - 0.7) <= 0.05 + 1e-9  # 'within 0.05', float-safe
    assert abs(record['fixed_schedule_sparsity'] - record['achieved_sparsity']) <= 0.01
    assert record['held_out_action_l1'] < record['fixed_schedule_action_l1']
    pruner, saved = load_pruner(tmp_path / 'p')
    assert saved['target_sparsity'] == 0.7
    policy = SparsePolicy.from_pretrained(tmp_path / 'p', device='cpu', mode='pruner')
    assert policy.pruner is not None
    policy.close()


def test_pruner_started_at_a_static_schedule_is_exactly_that_schedule(trained, dataset,
                                                                      tmp_path):
    # No distillation (epochs=0): the prior alone must reproduce FORA on the held-out calls.
    record = train_pruner(trained, dataset, target=0.8, trajectories=2, out=tmp_path / 'p',
                          epochs=0, held_out=1, seed=0, init_schedule='fora')
    assert record['init_schedule'] == 'fora' and record['train_calls'] == 0
    assert record['achieved_sparsity'] == pytest.approx(record['fora_schedule_sparsity'])
    assert record['held_out_action_l1'] == pytest.approx(record['fora_schedule_action_l1'])
    assert record['held_out_action_l1'] != pytest.approx(record['fixed_schedule_action_l1'])
    pruner, _ = load_pruner(tmp_path / 'p')
    assert pruner.config.n_steps > 0
    with pytest.raises(ValueError, match='--init-schedule must be none, fora, fixed or steps'):
        train_pruner(trained, dataset, target=0.8, trajectories=2, out=tmp_path / 'q',
                     epochs=0, held_out=1, init_schedule='ddim')


def test_searched_steps_beat_fora_and_start_a_pruner_exactly_there(
        trained, dataset, tmp_path, capsys):
    # 10 denoising steps at 0.8: two computed steps, FORA's are (0, 5).
    record_path = tmp_path / 'search.json'
    assert search_main(['--policy', str(trained), '--dataset', str(dataset),
                        '--target-sparsity', '0.8', '--trajectories', '2', '--max-calls', '4',
                        '--out', str(record_path)]) == 0
    record = json.loads(record_path.read_text())
    assert record['fora_steps'] == [0, 5] and record['evenly_spaced_steps'] == [0, 9]
    assert len(record['compute_steps']) == 2 and record['compute_steps'][0] == 0
    assert record['sparsity'] == pytest.approx(0.8)
    assert record['action_l1'] <= min(record['fora_action_l1'],
                                      record['evenly_spaced_action_l1'])
    for bad, field in ((['--trajectories', '0'], '--trajectories'),
                       (['--max-calls', '-1'], '--max-calls'),
                       (['--max-passes', '0'], '--max-passes'),
                       (['--target-sparsity', '1.0'], 'target_sparsity')):
        assert search_main(['--policy', str(trained), '--dataset', str(dataset),
                            '--out', str(tmp_path / 'bad.json'), *bad]) == 2, field
        assert field in capsys.readouterr().err
    # A pruner started at the searched steps makes exactly their decisions (no distillation).
    out = tmp_path / 'p'
    assert train_pruner_main(['--policy', str(trained), '--dataset', str(dataset),
                              '--target-sparsity', '0.8', '--trajectories', '2',
                              '--held-out', '1', '--epochs', '0', '--init-steps',
                              str(record_path), '--out', str(out)]) == 0
    _, saved = load_pruner(out)
    assert saved['init_schedule'] == 'steps'
    assert saved['init_steps'] == record['compute_steps']
    assert saved['held_out_action_l1'] == pytest.approx(saved['init_schedule_action_l1'])
    assert saved['achieved_sparsity'] == pytest.approx(0.8)
    # Conflicting or unreadable settings are refused with the reason.
    assert train_pruner_main(['--policy', str(trained), '--dataset', str(dataset),
                              '--init-schedule', 'fora', '--init-steps', str(record_path),
                              '--out', str(tmp_path / 'q')]) == 2
    (tmp_path / 'bad.json').write_text('{"steps": [0]}')
    assert train_pruner_main(['--policy', str(trained), '--dataset', str(dataset),
                              '--init-steps', str(tmp_path / 'bad.json'),
                              '--out', str(tmp_path / 'q')]) == 2


def test_ddim_search_beats_uniform_spacing_and_saves_into_the_policy_folder(
        trained, dataset, tmp_path, capsys):
    folder = tmp_path / 'policy'
    folder.mkdir()
    for name in ('config.json', 'model.safetensors', 'stats.safetensors'):
        (folder / name).write_bytes((trained / name).read_bytes())
    record_path = tmp_path / 'ddim.json'
    assert search_main(['--policy', str(folder), '--dataset', str(dataset), '--kind', 'ddim',
                        '--budget', '3', '--trajectories', '2', '--max-calls', '4', '--save',
                        '--out', str(record_path)]) == 0
    record = json.loads(record_path.read_text())
    assert record['kind'] == 'ddim' and record['budget'] == 3
    assert len(record['timesteps']) == 3 and record['search_start'] in ('uniform', 'evenly_spaced')
    assert record['evenly_spaced_timesteps'] == [9, 5, 0]
    assert record['uniform_timesteps'] == [6, 3, 0]
    assert record['action_l1'] <= min(record['evenly_spaced_action_l1'],
                                      record['uniform_action_l1'])
    assert 'searched' in capsys.readouterr().out
    policy = SparsePolicy.from_pretrained(folder, device='cpu', mode='ddim_searched',
                                          target_sparsity=0.7, warmup=False)
    assert policy.scheduler.timesteps.tolist() == record['timesteps']
    policy.close()
    for bad, message in ((['--kind', 'ddim', '--budget', '11', '--save'],
                          '--budget must be in [1, 10]'),
                         (['--budget', '3', '--out', str(tmp_path / 'x.json')],
                          '--budget and --save go with --kind ddim'),
                         (['--kind', 'ddim'], 'give --out FILE')):
        assert search_main(['--policy', str(folder), '--dataset', str(dataset), *bad]) == 2
        assert message in capsys.readouterr().err
