"""Checkpoint folders: exact round trips and loud, specific errors."""

import json

from engine_helpers import observation, TINY
import numpy as np
import pytest
from safetensors.torch import load_file, save_file
from sparse_policy_ros.policy.checkpoint import (
    CONFIG_FILE, load_config, load_policy, save_policy, STATS_FILE, WEIGHTS_FILE)
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.model import DiffusionPolicy
from sparse_policy_ros.policy.observation import OBS_STATE
from sparse_policy_ros.sparsity.pruner import (
    Pruner, PRUNER_CONFIG_FILE, PRUNER_WEIGHTS_FILE, PrunerConfig, save_pruner)
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy
import torch


def trained_like(config: PolicyConfig, seed: int = 0) -> tuple[DiffusionPolicy, Pruner]:
    torch.manual_seed(seed)
    model = DiffusionPolicy(config)
    model.normalizer.set_stats({
        OBS_STATE: {'min': np.linspace(-2, -1, config.state_dim),
                    'max': np.linspace(1, 3, config.state_dim)},
        'action': {'min': np.linspace(-1, -0.5, config.action_dim),
                   'max': np.linspace(0.5, 2, config.action_dim)}})
    pruner = Pruner(PrunerConfig(n_branches=config.n_branches, cond_dim=config.n_emb))
    with torch.no_grad():
        for param in pruner.parameters():
            param.normal_(0.0, 0.5)
    return model.eval(), pruner.eval()


def saved_folder(tmp_path, **overrides):
    config = PolicyConfig(**{**TINY, **overrides})
    model, pruner = trained_like(config)
    folder = tmp_path / 'model'
    save_policy(model, folder, extra={'task': 'unit'})
    save_pruner(pruner, folder)
    return folder, model, pruner


def test_round_trip_gives_identical_actions(tmp_path):
    folder, model, pruner = saved_folder(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [CONFIG_FILE, WEIGHTS_FILE, STATS_FILE, PRUNER_CONFIG_FILE, PRUNER_WEIGHTS_FILE])
    loaded = load_policy(folder)
    assert loaded.config == model.config and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    original = SparsePolicy(model, pruner, mode='pruner', target_sparsity=0.5, device='cpu')
    restored = SparsePolicy.from_pretrained(folder, device='cpu', mode='pruner',
                                            target_sparsity=0.5)
    for seed in range(3):  # dense first call, then pruner-driven sparse calls
        obs = observation(model.config, seed)
        a = original.predict(obs, generator=torch.Generator().manual_seed(seed))
        b = restored.predict(obs, generator=torch.Generator().manual_seed(seed))
        assert np.array_equal(a.actions, b.actions)
        assert torch.equal(a.stats.decisions, b.stats.decisions)
    assert b.stats.sparsity == pytest.approx(0.5, abs=1e-6)
    assert json.loads((folder / CONFIG_FILE).read_text())['task'] == 'unit'


def folder_with_policy_change(tmp_path, **changes):
    """Save a policy, then edit its config.json's policy section (weights unchanged)."""
    folder, _, _ = saved_folder(tmp_path)
    data = json.loads((folder / CONFIG_FILE).read_text())
    data['policy'].update(changes)
    (folder / CONFIG_FILE).write_text(json.dumps(data))
    return folder


def test_unknown_config_key_is_a_value_error(tmp_path):
    folder = folder_with_policy_change(tmp_path, n_layers=2)
    with pytest.raises(ValueError, match="unknown keys \\['n_layers'\\]"):
        load_policy(folder)


def test_bad_format_version_and_missing_section(tmp_path):
    folder, _, _ = saved_folder(tmp_path)
    data = json.loads((folder / CONFIG_FILE).read_text())
    (folder / CONFIG_FILE).write_text(json.dumps({**data, 'format_version': 99}))
    with pytest.raises(ValueError, match='format_version must be 1, got 99'):
        load_config(folder)
    (folder / CONFIG_FILE).write_text(json.dumps({'format_version': 1}))
    with pytest.raises(ValueError, match='no "policy" section'):
        load_config(folder)


def test_weights_that_do_not_match_the_config(tmp_path):
    folder = folder_with_policy_change(tmp_path, n_emb=64)
    with pytest.raises(ValueError) as info:
        load_policy(folder)
    message = str(info.value)
    assert WEIGHTS_FILE in message and 'does not match' in message
    assert 'transformer.branches.0.attn.q.bias: expected (64,), got (32,)' in message


def test_missing_layer_in_weights(tmp_path):
    folder = folder_with_policy_change(tmp_path, n_layer=3)
    with pytest.raises(ValueError, match='missing .*branches.6'):
        load_policy(folder)


@pytest.mark.parametrize('name', [STATS_FILE, WEIGHTS_FILE, CONFIG_FILE])
def test_missing_file_is_named(tmp_path, name):
    folder, _, _ = saved_folder(tmp_path)
    (folder / name).unlink()
    with pytest.raises(FileNotFoundError, match=name):
        load_policy(folder)


def test_missing_folder_and_missing_pruner(tmp_path):
    with pytest.raises(FileNotFoundError, match='does not exist'):
        load_policy(tmp_path / 'nowhere')
    folder, _, _ = saved_folder(tmp_path)
    (folder / PRUNER_WEIGHTS_FILE).unlink()
    with pytest.raises(FileNotFoundError, match=PRUNER_WEIGHTS_FILE):
        SparsePolicy.from_pretrained(folder, device='cpu', mode='pruner', target_sparsity=0.5)
    # Static modes do not need the pruner.
    policy = SparsePolicy.from_pretrained(folder, device='cpu', mode='fixed',
                                          target_sparsity=0.5)
    assert policy.pruner is None


def test_refuses_to_save_without_stats(tmp_path):
    with pytest.raises(ValueError, match='no stats'):
        save_policy(DiffusionPolicy(PolicyConfig(**TINY)), tmp_path / 'x')


def test_config_round_trip_and_validation():
    config = PolicyConfig(**TINY, camera_names=('front', 'wrist'))
    again = PolicyConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    with pytest.raises(ValueError, match=r"encoder must be one of \['resnet18_gn', 'small_cnn', "
                                         r"'small_cnn_fine'\]"):
        PolicyConfig(encoder='resnet50')
    with pytest.raises(ValueError, match='n_emb \\(30\\) must be divisible by n_head \\(4\\)'):
        PolicyConfig(n_emb=30)
    with pytest.raises(ValueError, match='crop_shape'):
        PolicyConfig(crop_shape=(100, 84))
    with pytest.raises(ValueError, match='random_shift must be a non-negative int .*-1'):
        PolicyConfig(random_shift=-1)
    with pytest.raises(ValueError, match='random_shift .* got 2.5'):
        PolicyConfig(random_shift=2.5)
    older = config.to_dict()
    del older['random_shift']  # written before the field existed: loads without any shift
    assert PolicyConfig.from_dict(older).random_shift == 0
    with pytest.raises(ValueError, match='num_inference_steps'):
        PolicyConfig(num_train_timesteps=10, num_inference_steps=20)
    with pytest.raises(ValueError, match='camera_names must be unique'):
        PolicyConfig(camera_names=('a', 'a'))


@pytest.mark.parametrize('field, value, expected', [
    ('control_hz', '10',
     "policy.control_hz must be a number, finite and > 0 (Hz), got '10' (str)"),
    ('n_layer', True, 'policy.n_layer must be an int, >= 1, got True (bool)'),
    ('horizon', 8.0, 'policy.horizon must be an int, >= 1, got 8.0 (float)'),
    ('image_shape', [3, '32', 32],
     "policy.image_shape must be a list of 3 ints, (3, H, W), got [3, '32', 32] (list)"),
    ('crop_shape', [28], 'policy.crop_shape must be a list of 2 ints or null, (h, w), got [28]'),
    ('camera_names', 'front', "policy.camera_names must be a list of strings, got 'front' (str)"),
    ('clip_sample', 1, 'policy.clip_sample must be true or false, got 1 (int)'),
    ('extra', [1], 'policy.extra must be a mapping of strings to values, got [1] (list)'),
    ('p_drop_attn', None, 'policy.p_drop_attn must be a number, in [0, 1), got None'),
    ('encoder', 3, "policy.encoder must be a string, one of ['resnet18_gn'"),
    ('control_hz', float('nan'), 'policy.control_hz must be a finite number > 0 (Hz), got nan'),
    ('control_hz', 0, 'policy.control_hz must be a finite number > 0 (Hz), got 0.0'),
])
def test_wrongly_typed_config_value_names_file_field_value_and_type(tmp_path, field, value,
                                                                    expected):
    folder = folder_with_policy_change(tmp_path, **{field: value})
    with pytest.raises(ValueError) as info:
        load_policy(folder)
    assert str(info.value).startswith(f'{folder / CONFIG_FILE}: {expected}'), str(info.value)


def test_config_types_accept_ints_for_floats_and_lists_for_tuples():
    config = PolicyConfig(**{**TINY, 'control_hz': 20, 'image_shape': [3, 32, 32],
                             'camera_names': ['front', 'wrist'], 'n_layer': np.int64(3)})
    assert config.control_hz == 20.0 and type(config.control_hz) is float
    assert config.image_shape == (3, 32, 32) and config.camera_names == ('front', 'wrist')
    assert type(config.n_layer) is int  # JSON-serialisable again
    json.dumps(config.to_dict())
    with pytest.raises(ValueError, match='camera_names must name at least one camera'):
        PolicyConfig(camera_names=[])
    with pytest.raises(ValueError, match='policy config must be a mapping'):
        PolicyConfig.from_dict(['control_hz', 10])


def truncate(path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


@pytest.mark.parametrize('name, damage, expected', [
    (WEIGHTS_FILE, truncate, 'expected a complete safetensors file'),
    (STATS_FILE, truncate, 'expected a complete safetensors file'),
    (WEIGHTS_FILE, lambda path: path.write_bytes(b''), 'expected a complete safetensors file'),
    (CONFIG_FILE, truncate, 'expected valid JSON, got a parse error at line'),
    (CONFIG_FILE, lambda path: path.write_bytes(b'\xff\xfe{'), 'expected a UTF-8 JSON file'),
    (CONFIG_FILE, lambda path: path.write_text('[1, 2]'),
     'expected a JSON object with format_version and policy, got list'),
])
def test_unreadable_file_is_named_with_what_was_expected(tmp_path, name, damage, expected):
    folder, _, _ = saved_folder(tmp_path)
    damage(folder / name)
    with pytest.raises(ValueError) as info:
        load_policy(folder)
    assert str(info.value).startswith(f'{folder / name}: {expected}'), str(info.value)


def test_non_finite_weights_are_refused_at_load_naming_file_tensor_and_count(tmp_path):
    folder, _, _ = saved_folder(tmp_path)
    weights = load_file(str(folder / WEIGHTS_FILE))
    key = 'transformer.branches.2.fc1.weight'
    weights[key][0, :2] = float('nan')
    weights[key][1, 0] = float('inf')
    save_file(weights, str(folder / WEIGHTS_FILE))
    with pytest.raises(ValueError) as info:
        load_policy(folder)
    message = str(info.value)
    assert message.startswith(f'{folder / WEIGHTS_FILE}: found non-finite weights'), message
    assert f'{key}: 3 of {weights[key].numel()}' in message and '1 tensors' in message


def test_non_finite_stats_name_the_stats_file(tmp_path):
    folder, _, _ = saved_folder(tmp_path)
    stats = load_file(str(folder / STATS_FILE))
    stats['action.max'][0] = float('nan')
    save_file(stats, str(folder / STATS_FILE))
    with pytest.raises(ValueError) as info:
        load_policy(folder)
    assert str(info.value).startswith(
        f"{folder / STATS_FILE}: stats for 'action' must be finite"), str(info.value)
