"""scripts/zarr_to_bag.py writes a bag that bag-to-dataset turns back into the same episodes."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
from sparse_policy_ros.training.bag_dataset import convert_bag
from sparse_policy_ros.training.replay_buffer import ReplayBuffer

SCRIPT = Path(__file__).resolve().parents[1] / 'scripts' / 'zarr_to_bag.py'
spec = importlib.util.spec_from_file_location('zarr_to_bag', SCRIPT)
zarr_to_bag = importlib.util.module_from_spec(spec)
spec.loader.exec_module(zarr_to_bag)


def write_store(path: Path, lengths=(7, 5)) -> list[dict]:
    rng = np.random.default_rng(0)
    store = ReplayBuffer.create(path)
    episodes = []
    for n in lengths:
        episode = {'img': rng.integers(0, 256, (n, 12, 16, 3), dtype=np.uint8),
                   'state': rng.uniform(-1, 1, (n, 4)).astype(np.float32),
                   'action': rng.uniform(-1, 1, (n, 4)).astype(np.float32)}
        store.add_episode(episode)
        episodes.append(episode)
    return episodes


@pytest.mark.parametrize('storage', ['mcap', 'sqlite3'])
def test_round_trip_gives_back_every_step_but_the_last(tmp_path, storage):
    episodes = write_store(tmp_path / 'store.zarr')
    bag = tmp_path / 'bag'
    assert zarr_to_bag.main([str(tmp_path / 'store.zarr'), str(bag), '--storage', storage]) == 0
    convert_bag(bag, tmp_path / 'back.zarr', image_topics=[zarr_to_bag.CAMERA_TOPIC],
                camera_names=['img'], joint_state_topic=zarr_to_bag.JOINT_TOPIC,
                command_topic=zarr_to_bag.COMMAND_TOPIC, joint_names=list(zarr_to_bag.JOINTS),
                episode_topic=zarr_to_bag.EPISODE_TOPIC, progress=False)
    back = ReplayBuffer.open(tmp_path / 'back.zarr', mode='r')
    assert back.n_episodes == len(episodes)
    for i, episode in enumerate(episodes):
        got = back.get_episode(i)
        n = len(episode['state']) - 1  # the command stream ends 2 ms before the last tick
        for key in ('img', 'state', 'action'):
            assert np.array_equal(got[key], episode[key][:n]), (i, key)


def test_bad_arguments_exit_2(tmp_path, capsys):
    write_store(tmp_path / 'store.zarr')
    assert zarr_to_bag.main([str(tmp_path / 'store.zarr'), str(tmp_path / 'bag'),
                             '--episodes', '3']) == 2
    assert '--episodes must be in [1, 2], got 3' in capsys.readouterr().err
