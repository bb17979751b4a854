"""Replay buffer (zarr, crash safety) and sequence dataset (padding, splits, stats)."""

import logging
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from sparse_policy_ros.training.replay_buffer import ReplayBuffer
from sparse_policy_ros.training.sequence_dataset import (
    compute_stats, SequenceDataset, split_episodes)
import torch
import zarr

H, W = 4, 6  # tiny, non-square images: a swapped H/W would show


def make_episode(length: int, first: int = 0, state_dim: int = 2,
                 action_dim: int = 3) -> dict[str, np.ndarray]:
    """Make steps whose values encode their global index t: img = 10 t + channel, state = t, ..."""
    t = np.arange(first, first + length)
    img = (10 * t[:, None, None, None] + np.arange(3)[None, None, None, :]) % 256
    return {
        'img': np.broadcast_to(img, (length, H, W, 3)).astype(np.uint8),
        'state': np.repeat(t[:, None], state_dim, axis=1).astype(np.float32),
        'action': (100.0 + np.repeat(t[:, None], action_dim, axis=1)).astype(np.float32),
    }


def random_episode(rng: np.random.Generator, length: int) -> dict[str, np.ndarray]:
    return {
        'img': rng.integers(0, 256, (length, H, W, 3), dtype=np.uint8),
        'state': rng.standard_normal((length, 7)).astype(np.float32),
        'action': rng.standard_normal((length, 7)).astype(np.float32),
    }


def write_buffer(path, lengths) -> ReplayBuffer:
    rb = ReplayBuffer.create(path)
    start = 0
    for length in lengths:
        rb.add_episode(make_episode(length, first=start))
        start += length
    return rb


# ---------------------------------------------------------------------- replay buffer


def test_round_trip_is_exact(tmp_path):
    rng = np.random.default_rng(0)
    episodes = [random_episode(rng, n) for n in (5, 7, 3)]
    rb = ReplayBuffer.create(tmp_path / 'demo.zarr')
    for episode in episodes:
        rb.add_episode(episode)
    rb.set_attrs({'task': 'reach', 'control_hz': 10.0})

    reopened = ReplayBuffer.open(tmp_path / 'demo.zarr', mode='r')
    assert reopened.n_episodes == 3
    assert reopened.n_steps == 15
    np.testing.assert_array_equal(reopened.episode_ends, [5, 12, 15])
    assert reopened.episode_ends.dtype == np.int64
    assert reopened.keys == ['action', 'img', 'state']
    assert reopened.attrs == {'task': 'reach', 'control_hz': 10.0}
    for index, episode in enumerate(episodes):
        got = reopened.get_episode(index)
        assert sorted(got) == sorted(episode)
        for key, value in episode.items():
            assert got[key].dtype == value.dtype
            np.testing.assert_array_equal(got[key], value)
    np.testing.assert_array_equal(reopened.get_episode(-1)['state'], episodes[2]['state'])
    np.testing.assert_array_equal(
        reopened.array('img')[:], np.concatenate([e['img'] for e in episodes]))


def test_store_is_zarr_v2_chunked_and_compressed(tmp_path):
    rb = ReplayBuffer.create(tmp_path / 'demo.zarr')
    rb.add_episode({'img': np.zeros((20, 96, 96, 3), np.uint8),
                    'state': np.zeros((20, 7), np.float32)})
    assert (tmp_path / 'demo.zarr' / '.zgroup').exists()
    assert (tmp_path / 'demo.zarr' / 'meta' / 'episode_ends' / '.zarray').exists()
    img = zarr.open_array(str(tmp_path / 'demo.zarr' / 'data' / 'img'), mode='r')
    assert img.metadata.zarr_format == 2
    assert img.metadata.compressor is not None
    assert 1 < img.chunks[0] <= 10 and img.chunks[1:] == (96, 96, 3)


def test_opens_a_store_written_like_diffusion_policy(tmp_path):
    # Diffusion Policy's layout written directly with zarr: other chunks, extra arrays.
    root = zarr.open_group(str(tmp_path / 'dp.zarr'), mode='w', zarr_format=2)
    root.create_array('data/state', data=np.arange(10, dtype=np.float32).reshape(5, 2),
                      chunks=(100, 2))
    root.create_array('data/keypoint', data=np.ones((5, 9, 2), np.float32), chunks=(100, 9, 2))
    root.create_array('meta/episode_ends', data=np.array([2, 5], np.int64), chunks=(100,))
    rb = ReplayBuffer.open(tmp_path / 'dp.zarr')
    assert rb.keys == ['keypoint', 'state']
    np.testing.assert_array_equal(rb.get_episode(1)['state'], [[4, 5], [6, 7], [8, 9]])


def test_create_and_open_errors(tmp_path):
    path = tmp_path / 'demo.zarr'
    write_buffer(path, [3])
    with pytest.raises(FileExistsError, match='overwrite'):
        ReplayBuffer.create(path)
    assert ReplayBuffer.create(path, overwrite=True).n_episodes == 0

    precious = tmp_path / 'not_a_store'
    precious.mkdir()
    (precious / 'notes.txt').write_text('keep me')
    with pytest.raises(ValueError, match='refusing to overwrite'):
        ReplayBuffer.create(precious, overwrite=True)
    assert (precious / 'notes.txt').exists()

    with pytest.raises(FileNotFoundError, match='missing.zarr'):
        ReplayBuffer.open(tmp_path / 'missing.zarr')
    with pytest.raises(ValueError, match='not a replay buffer'):
        ReplayBuffer.open(precious)
    zarr.open_group(str(tmp_path / 'bare.zarr'), mode='w', zarr_format=2).create_group('data')
    with pytest.raises(ValueError, match='meta/episode_ends'):
        ReplayBuffer.open(tmp_path / 'bare.zarr')
    with pytest.raises(ValueError, match='mode'):
        ReplayBuffer.open(path, mode='w')

    read_only = ReplayBuffer.open(path, mode='r')
    with pytest.raises(ValueError, match="mode='a'"):
        read_only.add_episode(make_episode(2))
    with pytest.raises(ValueError, match="mode='a'"):
        read_only.set_attrs({'a': 1})


@pytest.mark.parametrize('episode, message', [
    ({'img': np.zeros((2, H, W, 3), np.uint8), 'state': np.zeros((2, 2), np.float32)},
     r"missing \['data/action'\]"),
    ({**make_episode(2), 'reward': np.zeros(2, np.float32)}, r"unexpected \['data/reward'\]"),
    ({**make_episode(2), 'state': np.zeros((2, 5), np.float32)}, r'data/state.*\(2,\).*\(5,\)'),
    ({**make_episode(2), 'action': np.zeros((2, 3), np.float64)},
     'data/action expects dtype float32, got float64'),
    ({**make_episode(2), 'img': np.zeros((2, H, W, 3), np.float32)},
     'data/img expects dtype uint8, got float32'),
    ({k: v[:0] for k, v in make_episode(2).items()}, 'data/img must have at least one step'),
    ({**make_episode(2), 'state': np.zeros((3, 2), np.float32)}, 'same length.*state.: 3'),
    ({}, 'non-empty'),
])
def test_add_episode_rejects_inconsistent_data(tmp_path, episode, message):
    rb = write_buffer(tmp_path / 'demo.zarr', [4])
    with pytest.raises(ValueError, match=message):
        rb.add_episode(episode)
    # Validation happens before any write: nothing changed on disk.
    reopened = ReplayBuffer.open(tmp_path / 'demo.zarr', mode='r')
    assert reopened.n_episodes == 1
    assert all(reopened.array(key).shape[0] == 4 for key in reopened.keys)


def test_reading_empty_or_missing(tmp_path):
    rb = ReplayBuffer.create(tmp_path / 'demo.zarr')
    with pytest.raises(ValueError, match='no episodes'):
        rb.get_episode(0)
    rb.add_episode(make_episode(2))
    with pytest.raises(IndexError, match=r'\[-1, 0\]'):
        rb.get_episode(1)
    with pytest.raises(ValueError, match='data/depth'):
        rb.array('depth')


def test_interrupted_append_is_invisible_and_repaired(tmp_path, monkeypatch, caplog):
    path = tmp_path / 'demo.zarr'
    rb = write_buffer(path, [5, 3])
    before = {i: rb.get_episode(i) for i in range(2)}

    def crash(self, end):
        raise KeyboardInterrupt('simulated interruption before the commit')
    monkeypatch.setattr(ReplayBuffer, '_commit_episode_end', crash)
    with pytest.raises(KeyboardInterrupt):
        rb.add_episode(make_episode(4, first=8))
    monkeypatch.undo()
    # The data really was written: the arrays hold 4 uncommitted steps.
    raw = zarr.open_group(str(path), mode='r')
    assert raw['data/state'].shape[0] == 12
    assert raw['meta/episode_ends'].shape == (2,)

    with caplog.at_level(logging.WARNING):
        reader = ReplayBuffer.open(path, mode='r')
    assert reader.n_episodes == 2 and reader.n_steps == 8
    assert 'ignoring 4 uncommitted steps' in caplog.text
    # The reader wrote nothing.
    assert zarr.open_group(str(path), mode='r')['data/state'].shape[0] == 12

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        writer = ReplayBuffer.open(path, mode='a')
    assert 'discarded 4 steps of data/state' in caplog.text
    assert all(writer.array(key).shape[0] == 8 for key in writer.keys)
    for i in range(2):
        for key, value in before[i].items():
            np.testing.assert_array_equal(writer.get_episode(i)[key], value)

    writer.add_episode(make_episode(2, first=8))
    final = ReplayBuffer.open(path, mode='r')
    np.testing.assert_array_equal(final.episode_ends, [5, 8, 10])
    np.testing.assert_array_equal(final.get_episode(2)['state'], make_episode(2, 8)['state'])


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    import zarr
    from sparse_policy_ros.training.replay_buffer import ReplayBuffer

    path, where = sys.argv[1], sys.argv[2]
    rb = ReplayBuffer.create(path)
    rb.add_episode({'state': np.zeros((5, 2), np.float32), 'action': np.zeros((5, 3), np.float32)})
    method = zarr.Array.resize if where == 'before_ends' else zarr.Array.__setitem__

    def die_on_episode_ends(self, *args, **kwargs):
        if self.path == 'meta/episode_ends':
            os.kill(os.getpid(), signal.SIGKILL)
        return method(self, *args, **kwargs)
    setattr(zarr.Array, 'resize' if where == 'before_ends' else '__setitem__',
            die_on_episode_ends)
    rb.add_episode({'state': np.ones((4, 2), np.float32), 'action': np.ones((4, 3), np.float32)})
    print('not killed')
""")


@pytest.mark.parametrize('where', ['before_ends', 'between_resize_and_write'])
def test_killed_writer_leaves_no_half_episode(tmp_path, caplog, where):
    script = tmp_path / 'writer.py'
    script.write_text(_KILL_SCRIPT)
    path = tmp_path / 'demo.zarr'
    result = subprocess.run([sys.executable, str(script), str(path), where],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == -signal.SIGKILL, result.stdout + result.stderr
    raw = zarr.open_group(str(path), mode='r')
    assert raw['data/state'].shape[0] == 9  # the second episode's data reached the disk
    if where == 'between_resize_and_write':
        np.testing.assert_array_equal(raw['meta/episode_ends'][:], [5, 0])
    else:
        np.testing.assert_array_equal(raw['meta/episode_ends'][:], [5])

    with caplog.at_level(logging.WARNING):
        rb = ReplayBuffer.open(path, mode='a')
    assert 'discarded 4 steps of data/state' in caplog.text
    np.testing.assert_array_equal(rb.episode_ends, [5])
    # Repaired on disk, not only in memory.
    raw = zarr.open_group(str(path), mode='r')
    assert raw['meta/episode_ends'].shape == (1,) and raw['data/state'].shape[0] == 5
    np.testing.assert_array_equal(rb.get_episode(0)['action'], np.zeros((5, 3), np.float32))

    rb.add_episode({'state': np.full((2, 2), 7, np.float32),
                    'action': np.full((2, 3), 7, np.float32)})
    final = ReplayBuffer.open(path, mode='r')
    np.testing.assert_array_equal(final.episode_ends, [5, 7])
    np.testing.assert_array_equal(final.get_episode(1)['state'], np.full((2, 2), 7, np.float32))
    assert final.array('state').shape[0] == 7


@pytest.mark.parametrize('ends, index, expected', [
    ([5, 8, 7], 2, 'meta/episode_ends[2] = 7 is not greater than meta/episode_ends[1] = 8'),
    ([5, 3, 12], 1, 'meta/episode_ends[1] = 3 is not greater than meta/episode_ends[0] = 5'),
    ([5, 5, 12], 1, 'meta/episode_ends[1] = 5 is not greater than meta/episode_ends[0] = 5'),
    ([0, 8, 12], 0, 'meta/episode_ends[0] = 0 is not greater than 0'),
    # 0 is the unwritten slot of a killed commit only after data written past the previous
    # end; here the data ends at 12, so it is corruption, not a crash.
    ([5, 12, 0], 2, 'meta/episode_ends[2] = 0 is not greater than meta/episode_ends[1] = 12'),
])
@pytest.mark.parametrize('mode', ['r', 'a'])
def test_non_increasing_episode_ends_are_refused(tmp_path, ends, index, expected, mode):
    path = tmp_path / 'demo.zarr'
    write_buffer(path, [5, 3, 4] if ends[-1] else [5, 7])
    stored = zarr.open_group(str(path), mode='r+')['meta/episode_ends']
    stored.resize((len(ends),))
    stored[:] = np.array(ends, np.int64)
    with pytest.raises(ValueError) as info:
        ReplayBuffer.open(path, mode=mode)
    message = str(info.value)
    assert message.startswith(f'replay buffer at {path}: {expected}'), message
    assert 'expected strictly increasing cumulative episode ends' in message
    # Refused, not repaired: the store is as it was.
    np.testing.assert_array_equal(zarr.open_group(str(path), mode='r')['meta/episode_ends'][:],
                                  ends)


@pytest.mark.parametrize('key, episode, step', [('action', 2, 3), ('state', 0, 0)])
def test_non_finite_values_name_key_episode_and_step(tmp_path, key, episode, step):
    path = tmp_path / 'demo.zarr'
    rb = ReplayBuffer.create(path)
    start = 0
    for index, length in enumerate([5, 6, 7]):
        data = make_episode(length, first=start)
        if index == episode:
            data[key][step, 1] = np.nan
            data[key][step + 1, 0] = np.inf
        rb.add_episode(data)
        start += length
    expected = (f'replay buffer at {path}: data/{key} holds 2 non-finite values (NaN or inf) '
                f'in episode(s) [{episode}], the first at step {step} of episode {episode}')
    with pytest.raises(ValueError) as info:
        SequenceDataset(path, horizon=4, n_obs_steps=2, n_action_steps=2)
    assert str(info.value).startswith(expected), str(info.value)
    with pytest.raises(ValueError) as info:
        compute_stats(path, ['state', 'action'], [episode])
    assert str(info.value).startswith(expected), str(info.value)
    # The other episodes are fine on their own.
    others = [i for i in range(3) if i != episode]
    assert len(SequenceDataset(path, horizon=4, n_obs_steps=2, n_action_steps=2,
                               episode_indices=others)) > 0
    compute_stats(path, ['state', 'action'], others)


# ---------------------------------------------------------------------- sequence dataset


def frames_of(item) -> tuple[list[int], list[int], list[int]]:
    """Decode (image frames, state frames, action frames) from make_episode's encoding."""
    images = item['images']['front']
    return ([int(v) // 10 for v in images[:, 0, 0, 0]],
            [int(v) for v in item['state'][:, 0]],
            [int(v) - 100 for v in item['action'][:, 0]])


def test_windows_pad_by_repeating_edge_frames(tmp_path):
    write_buffer(tmp_path / 'demo.zarr', [5, 3])  # global steps 0..4 and 5..7
    dataset = SequenceDataset(tmp_path / 'demo.zarr', horizon=4, n_obs_steps=2,
                              n_action_steps=3)  # pad_before=1, pad_after=2
    expected_actions = [
        [0, 0, 1, 2], [0, 1, 2, 3], [1, 2, 3, 4], [2, 3, 4, 4], [3, 4, 4, 4],  # episode 0
        [5, 5, 6, 7], [5, 6, 7, 7], [6, 7, 7, 7],  # episode 1: never crosses into episode 0
    ]
    assert len(dataset) == len(expected_actions)
    for index, actions in enumerate(expected_actions):
        item = dataset[index]
        images, state, action = frames_of(item)
        assert action == actions
        assert images == state == actions[:2]

    item = dataset[0]
    assert item['images']['front'].dtype == torch.uint8
    assert item['images']['front'].shape == (2, 3, H, W)
    assert item['state'].dtype == torch.float32 and item['state'].shape == (2, 2)
    assert item['action'].dtype == torch.float32 and item['action'].shape == (4, 3)
    # Channels stay channels: make_episode stores 10 t + c in channel c.
    np.testing.assert_array_equal(item['images']['front'][1, :, 0, 0].numpy(), [0, 1, 2])
    assert torch.equal(item['images']['front'][0], item['images']['front'][1])


def test_windows_with_explicit_padding_and_episode_subset(tmp_path):
    rb = write_buffer(tmp_path / 'demo.zarr', [5, 3])
    dataset = SequenceDataset(rb, horizon=3, n_obs_steps=1, pad_before=0, pad_after=0,
                              episode_indices=[1])
    assert [frames_of(dataset[i])[2] for i in range(len(dataset))] == [[5, 6, 7]]
    dataset = SequenceDataset(rb, image_keys={}, horizon=2, n_obs_steps=2, pad_before=1,
                              pad_after=0, episode_indices=[1, 0])
    assert dataset[0]['images'] == {}
    assert [[int(v) - 100 for v in dataset[i]['action'][:, 0]] for i in range(len(dataset))] \
        == [[5, 5], [5, 6], [6, 7], [0, 0], [0, 1], [1, 2], [2, 3], [3, 4]]


def test_short_episodes_and_too_long_horizon(tmp_path, caplog):
    rb = write_buffer(tmp_path / 'demo.zarr', [5, 3])
    with caplog.at_level(logging.WARNING):
        dataset = SequenceDataset(rb, horizon=7, n_obs_steps=2, n_action_steps=3)
    assert '1 of 2 episodes are too short' in caplog.text
    assert [frames_of(dataset[i])[2] for i in range(len(dataset))] == [
        [0, 0, 1, 2, 3, 4, 4], [0, 1, 2, 3, 4, 4, 4]]
    with pytest.raises(ValueError, match=r'horizon \(10\) is too long.*at most 5 steps'):
        SequenceDataset(rb, horizon=10, n_obs_steps=2, n_action_steps=3)
    with pytest.raises(ValueError, match='pad_after must be < horizon'):
        SequenceDataset(rb, horizon=4, n_obs_steps=2, n_action_steps=5)
    with pytest.raises(ValueError, match='n_obs_steps must be <= horizon'):
        SequenceDataset(rb, horizon=2, n_obs_steps=3, n_action_steps=1)


def test_dataset_rejects_bad_arrays(tmp_path):
    path = tmp_path / 'demo.zarr'
    write_buffer(path, [4])
    short = {'horizon': 2, 'n_action_steps': 1}
    with pytest.raises(ValueError, match=r"no array data/wrist; expected one of \['data/action'"):
        SequenceDataset(path, image_keys={'wrist': 'wrist'}, **short)
    with pytest.raises(ValueError, match='no array data/joints'):
        SequenceDataset(path, state_key='joints', **short)
    with pytest.raises(ValueError, match=r'data/state \(camera .front.\) must be uint8 \(T, H, W'):
        SequenceDataset(path, state_key='img', image_keys={'front': 'state'}, **short)

    bad = ReplayBuffer.create(tmp_path / 'bad.zarr')
    bad.add_episode({'img': np.zeros((4, H, W, 3), np.float32),
                     'state': np.zeros((4,), np.float32),
                     'pos': np.zeros((4, 2), np.float32),
                     'action': np.zeros((4, 2), np.int64)})
    with pytest.raises(ValueError, match=r'data/img .*must be uint8 \(T, H, W, 3\), got float32'):
        SequenceDataset(bad, **short)
    with pytest.raises(ValueError, match=r'data/state \(state\) must be a 2-D float.*\(4,\)'):
        SequenceDataset(bad, image_keys={}, **short)
    with pytest.raises(ValueError, match=r'data/action \(action\) must be a 2-D float.*int64'):
        SequenceDataset(bad, image_keys={}, state_key='pos', **short)
    assert len(SequenceDataset(bad, image_keys={}, state_key='pos', action_key='pos', **short))

    with pytest.raises(ValueError, match='is empty'):
        SequenceDataset(ReplayBuffer.create(tmp_path / 'empty.zarr'), **short)
    with pytest.raises(ValueError, match=r'episode_indices must be in \[0, 0\], got \[3\]'):
        SequenceDataset(path, episode_indices=[3], **short)
    with pytest.raises(ValueError, match='episode_indices must be a non-empty'):
        SequenceDataset(path, episode_indices=[], **short)


# ---------------------------------------------------------------------- splits and stats


def test_split_by_episode_is_disjoint_and_deterministic():
    train, val = split_episodes(20, 0.2, seed=3)
    assert len(val) == 4 and len(train) == 16
    assert set(train).isdisjoint(val)
    assert sorted([*train, *val]) == list(range(20))
    again_train, again_val = split_episodes(20, 0.2, seed=3)
    np.testing.assert_array_equal(train, again_train)
    np.testing.assert_array_equal(val, again_val)
    assert not np.array_equal(val, split_episodes(20, 0.2, seed=4)[1])

    train, val = split_episodes(1, 0.5, seed=0)
    assert train.tolist() == [0] and val.tolist() == []
    train, val = split_episodes(2, 0.9, seed=0)
    assert len(train) == 1 and len(val) == 1
    assert len(split_episodes(10, 0.01, seed=0)[1]) == 1  # a positive ratio validates something
    assert len(split_episodes(10, 0.0, seed=0)[1]) == 0
    with pytest.raises(ValueError, match='val_ratio'):
        split_episodes(10, 1.0, seed=0)
    with pytest.raises(ValueError, match='n_episodes'):
        split_episodes(0, 0.1, seed=0)


def test_stats_come_from_the_training_split_only(tmp_path):
    rb = ReplayBuffer.create(tmp_path / 'demo.zarr')
    rb.add_episode({'state': np.array([[0.0, -1.0], [2.0, 1.0]], np.float32),
                    'action': np.array([[1.0], [3.0]], np.float32)})
    rb.add_episode({'state': np.array([[50.0, -60.0]], np.float32),  # validation outlier
                    'action': np.array([[-9.0]], np.float32)})
    rb.add_episode({'state': np.array([[-1.0, 0.5], [1.0, 4.0]], np.float32),
                    'action': np.array([[2.0], [0.0]], np.float32)})
    stats = compute_stats(rb, ['state', 'action'], episode_indices=[0, 2])
    np.testing.assert_array_equal(stats['state']['min'], [-1.0, -1.0])
    np.testing.assert_array_equal(stats['state']['max'], [2.0, 4.0])
    np.testing.assert_array_equal(stats['action']['min'], [0.0])
    np.testing.assert_array_equal(stats['action']['max'], [3.0])
    assert stats['state']['min'].dtype == np.float32
    everything = compute_stats(tmp_path / 'demo.zarr', ['action'], episode_indices=[0, 1, 2])
    np.testing.assert_array_equal(everything['action']['min'], [-9.0])
    with pytest.raises(ValueError, match='no array data/reward'):
        compute_stats(rb, ['reward'], episode_indices=[0])
    with pytest.raises(ValueError, match='episode_indices'):
        compute_stats(rb, ['state'], episode_indices=[])
