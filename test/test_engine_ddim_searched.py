"""Searched DDIM timesteps: carried by the model folder, sampled by mode 'ddim_searched'."""

import json

from engine_helpers import observation, TINY
import numpy as np
import pytest
from sparse_policy_ros.policy.checkpoint import save_policy
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.ddim_timesteps import (
    DDIM_TIMESTEPS_FILE, load_ddim_timesteps, save_ddim_timesteps)
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy
import torch

CONFIG = PolicyConfig(**{**TINY, 'num_train_timesteps': 20, 'num_inference_steps': 20})


@pytest.fixture(scope='module')
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp('model')
    policy = SparsePolicy.random_init(CONFIG, mode='dense', target_sparsity=None, warmup=False)
    save_policy(policy.model, path)
    return path


def test_timesteps_round_trip_through_the_model_folder_and_are_sampled(folder):
    save_ddim_timesteps(folder, [19, 12, 3], {'action_l1': 0.01})
    save_ddim_timesteps(folder, [19, 4], None)
    save_ddim_timesteps(folder, [19, 13, 2], {'action_l1': 0.005})  # replaces the 3-step set
    assert load_ddim_timesteps(folder, CONFIG) == {2: [19, 4], 3: [19, 13, 2]}
    data = json.loads((folder / DDIM_TIMESTEPS_FILE).read_text())
    assert data['schedules']['3']['record'] == {'action_l1': 0.005}
    # 1 - 3/20 = 0.85: the 3-step set.
    policy = SparsePolicy.from_pretrained(folder, device='cpu', mode='ddim_searched',
                                          target_sparsity=0.85, warmup=False)
    assert policy.scheduler.timesteps.tolist() == [19, 13, 2]
    chunk = policy.predict(observation(CONFIG), generator=torch.Generator().manual_seed(3))
    assert chunk.stats.sparsity == pytest.approx(0.85)
    assert chunk.stats.decisions.shape[0] == 3
    policy.close()


def test_searched_mode_at_the_strided_timesteps_is_bit_identical_to_ddim(folder):
    plain = SparsePolicy.from_pretrained(folder, device='cpu', mode='ddim', target_sparsity=0.8,
                                         warmup=False)
    strided = plain.scheduler.timesteps.tolist()
    searched = SparsePolicy(plain.model, mode='ddim_searched', target_sparsity=0.8,
                            device='cpu', warmup=False, ddim_timesteps={4: strided})
    obs = observation(CONFIG, 1)
    a = plain.predict(obs, generator=torch.Generator().manual_seed(0)).actions
    b = searched.predict(obs, generator=torch.Generator().manual_seed(0)).actions
    assert np.array_equal(a, b)
    other = SparsePolicy(plain.model, mode='ddim_searched', target_sparsity=0.8, device='cpu',
                         warmup=False, ddim_timesteps={4: [19, 14, 8, 1]})
    c = other.predict(obs, generator=torch.Generator().manual_seed(0)).actions
    assert not np.array_equal(a, c)


def test_a_missing_budget_or_a_bad_file_is_an_error_naming_it(folder, tmp_path):
    save_ddim_timesteps(folder, [19, 4], None)
    with pytest.raises(ValueError, match=r'for 5 steps in .*ddim_timesteps\.json; found '
                                         r'budgets \[2, 3\]\. Run search-schedule --kind ddim '
                                         r'--budget 5'):
        SparsePolicy.from_pretrained(folder, device='cpu', mode='ddim_searched',
                                     target_sparsity=0.75, warmup=False)
    with pytest.raises(ValueError, match='needs target_sparsity'):
        SparsePolicy.from_pretrained(folder, device='cpu', mode='ddim_searched', warmup=False)
    bad = tmp_path / 'bad'
    bad.mkdir()
    for name in ('config.json', 'model.safetensors', 'stats.safetensors'):
        (bad / name).write_bytes((folder / name).read_bytes())
    for content, message in (
            ({'schedules': {'2': {'timesteps': [19, 4, 1]}}}, r"schedules\['2'\]\.timesteps "
                                                              r'must be a list of 2'),
            ({'schedules': {'two': {'timesteps': [19, 4]}}}, "key 'two' must be a budget"),
            ({'schedules': {'2': {'timesteps': [4, 19]}}}, 'strictly decreasing'),
            ({'schedules': {'2': {'timesteps': [25, 4]}}}, r'lie in \[0, 19\]'),
            ([1, 2], 'expected an object with "schedules"')):
        (bad / DDIM_TIMESTEPS_FILE).write_text(json.dumps(content))
        with pytest.raises(ValueError, match=message):
            SparsePolicy.from_pretrained(bad, device='cpu', mode='ddim_searched',
                                         target_sparsity=0.9, warmup=False)
