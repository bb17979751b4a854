"""scripts/zarr_to_lerobot.py writes a LeRobot v3 folder that the LeRobot reader converts back."""

import importlib.util
from pathlib import Path

import av
import numpy as np
from sparse_policy_ros.training.lerobot_dataset import convert_lerobot
from sparse_policy_ros.training.replay_buffer import ReplayBuffer

SCRIPT = Path(__file__).resolve().parents[1] / 'scripts' / 'zarr_to_lerobot.py'
spec = importlib.util.spec_from_file_location('zarr_to_lerobot', SCRIPT)
zarr_to_lerobot = importlib.util.module_from_spec(spec)
spec.loader.exec_module(zarr_to_lerobot)
CODEC = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'


def write_store(path: Path, lengths=(7, 5, 6)) -> list[dict]:
    store = ReplayBuffer.create(path)
    rng = np.random.default_rng(0)
    episodes, step = [], 0
    for n in lengths:
        # Smooth frames whose brightness encodes the step: they survive a lossy codec.
        level = 40 + 8 * np.arange(step, step + n, dtype=np.float64)
        frames = np.broadcast_to(level[:, None, None, None] + np.linspace(0, 30, 32)[None, None,
                                 :, None], (n, 32, 32, 3)).clip(0, 255).astype(np.uint8)
        episode = {'img': frames, 'state': rng.uniform(-1, 1, (n, 4)).astype(np.float32),
                   'action': rng.uniform(-1, 1, (n, 4)).astype(np.float32)}
        store.add_episode(episode)
        episodes.append(episode)
        step += n
    return episodes


def test_round_trip_keeps_every_step_and_the_frames_within_the_codec(tmp_path):
    episodes = write_store(tmp_path / 'store.zarr')
    out = tmp_path / 'lerobot'
    assert zarr_to_lerobot.main([str(tmp_path / 'store.zarr'), str(out), '--codec', CODEC,
                                 '--crf', '10', '--episodes-per-file', '2']) == 0
    assert sorted(p.name for p in (out / 'data/chunk-000').iterdir()) == [
        'file-000.parquet', 'file-001.parquet']  # episodes 0-1, then 2
    convert_lerobot(out, tmp_path / 'back.zarr')
    back = ReplayBuffer.open(tmp_path / 'back.zarr', mode='r')
    assert back.n_episodes == len(episodes)
    for i, episode in enumerate(episodes):
        got = back.get_episode(i)
        for key in ('state', 'action'):
            assert np.array_equal(got[key], episode[key]), (i, key)
        error = np.abs(got['img'].astype(float) - episode['img'].astype(float))
        error = error.mean(axis=(1, 2, 3))
        assert error.max() < 3.0, (i, error)  # each frame in its place, within the codec


def test_bad_arguments_exit_2(tmp_path, capsys):
    write_store(tmp_path / 'store.zarr')
    assert zarr_to_lerobot.main([str(tmp_path / 'store.zarr'), str(tmp_path / 'x'),
                                 '--episodes', '4']) == 2
    assert '--episodes must be in [1, 3], got 4' in capsys.readouterr().err
    (tmp_path / 'x').mkdir()
    assert zarr_to_lerobot.main([str(tmp_path / 'store.zarr'), str(tmp_path / 'x')]) == 2
    assert 'exists; refusing to overwrite it' in capsys.readouterr().err
