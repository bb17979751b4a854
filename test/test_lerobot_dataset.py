"""Foreign datasets: LeRobot v3 folders, Diffusion Policy .zarr.zip stores, column selection."""

import json
from pathlib import Path

import av
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sparse_policy_ros.policy.checkpoint import load_policy
from sparse_policy_ros.training.column_selection import (
    ColumnSelection, parse_column_selection, parse_column_selections)
from sparse_policy_ros.training.lerobot_dataset import (
    CONVERSION_ATTR, convert_lerobot, default_key_map, is_converted, LeRobotReader,
    main as lerobot_main, parse_key_map)
from sparse_policy_ros.training.replay_buffer import ReplayBuffer
from sparse_policy_ros.training.sequence_dataset import SequenceDataset
from sparse_policy_ros.training.train_policy import (
    dataset_format, default_cache, main as train_policy_main)
import yaml
import zarr
from zarr.storage import ZipStore

FPS = 10
SIDE = 32  # camera frames are SIDE x SIDE RGB
CAMERA = 'observation.images.front'
VIDEO_CODEC = 'libx264' if 'libx264' in av.codecs_available else 'mpeg4'
LENGTHS = (7, 5, 6)  # episodes 0 and 1 share data/file-000, episode 2 is in file-001


def png_frames(episode: int, length: int) -> np.ndarray:
    """Noise images (exact through PNG), different per episode and step."""
    rng = np.random.default_rng(100 + episode)
    return rng.integers(0, 256, (length, SIDE, SIDE, 3), dtype=np.uint8)


def video_frames(first: int, length: int) -> np.ndarray:
    """Smooth frames whose brightness encodes the global step (they survive lossy codecs)."""
    t = np.arange(first, first + length, dtype=np.float64)[:, None, None, None]
    x = np.linspace(0, 40, SIDE)[None, None, :, None]
    channel = np.array([0.0, 10.0, 20.0])[None, None, None, :]
    frames = np.clip(30 + 9 * t + x + channel, 0, 255)  # (T, 1, W, 3)
    return np.broadcast_to(frames, (length, SIDE, SIDE, 3)).astype(np.uint8)


def write_video(path: Path, frames: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode='w') as container:
        stream = container.add_stream(VIDEO_CODEC, rate=FPS)
        stream.width, stream.height, stream.pix_fmt = SIDE, SIDE, 'yuv420p'
        if VIDEO_CODEC == 'libx264':
            stream.options = {'crf': '0', 'preset': 'ultrafast', 'bf': '0'}
        else:
            stream.options = {'qscale': '1'}
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format='rgb24')
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_lerobot(root: Path, camera: str = 'video', lengths=LENGTHS,
                  video_frames_short_by: int = 0, state_dim: int = 3) -> dict:
    """Write a LeRobot v3 folder; return the arrays it holds per episode."""
    features = {
        'observation.state': {'dtype': 'float32', 'shape': [state_dim],
                              'names': [f'j{i}' for i in range(state_dim)]},
        'action': {'dtype': 'float32', 'shape': [3], 'names': ['a0', 'a1', 'a2']},
        CAMERA: {'dtype': camera, 'shape': [SIDE, SIDE, 3],
                 'names': ['height', 'width', 'channels']},
        'timestamp': {'dtype': 'float32', 'shape': [1], 'names': None},
        'frame_index': {'dtype': 'int64', 'shape': [1], 'names': None},
        'episode_index': {'dtype': 'int64', 'shape': [1], 'names': None},
        'index': {'dtype': 'int64', 'shape': [1], 'names': None},
        'task_index': {'dtype': 'int64', 'shape': [1], 'names': None},
    }
    info = {'codebase_version': 'v3.0', 'robot_type': 'toy', 'fps': FPS,
            'total_episodes': len(lengths), 'total_frames': sum(lengths), 'total_tasks': 1,
            'chunks_size': 1000, 'features': features,
            'data_path': 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet',
            'video_path': 'videos/{video_key}/chunk-{chunk_index:03d}/'
                          'file-{file_index:03d}.mp4'}
    (root / 'meta').mkdir(parents=True)
    (root / 'meta/info.json').write_text(json.dumps(info, indent=2))
    (root / 'meta/stats.json').write_text(json.dumps({'action': {'min': [0, 0, 0]}}))
    rng = np.random.default_rng(0)
    expected, rows, episodes, all_video = {}, {0: [], 1: []}, [], []
    start = 0
    for episode, length in enumerate(lengths):
        state = rng.standard_normal((length, state_dim)).astype(np.float32)
        action = rng.standard_normal((length, 3)).astype(np.float32)
        images = png_frames(episode, length) if camera == 'image' else video_frames(start, length)
        expected[episode] = {'state': state, 'action': action, 'img': images}
        file_index = 0 if episode < 2 else 1
        for t in range(length):
            row = {'observation.state': state[t].tolist(), 'action': action[t].tolist(),
                   'timestamp': np.float32(t / FPS), 'frame_index': t,
                   'episode_index': episode, 'index': start + t, 'task_index': 0}
            if camera == 'image':
                ok, data = cv2.imencode('.png', cv2.cvtColor(images[t], cv2.COLOR_RGB2BGR))
                assert ok
                row[CAMERA] = {'bytes': data.tobytes(), 'path': f'frame_{start + t:06d}.png'}
            rows[file_index].append(row)
        meta = {'episode_index': episode, 'length': length, 'tasks': ['push'],
                'data/chunk_index': 0, 'data/file_index': file_index,
                'dataset_from_index': start, 'dataset_to_index': start + length}
        if camera == 'video':
            meta.update({f'videos/{CAMERA}/chunk_index': 0, f'videos/{CAMERA}/file_index': 0,
                         f'videos/{CAMERA}/from_timestamp': start / FPS,
                         f'videos/{CAMERA}/to_timestamp': (start + length) / FPS})
            all_video.append(images)
        episodes.append(meta)
        start += length
    schema = pa.schema(
        [('observation.state', pa.list_(pa.float32())), ('action', pa.list_(pa.float32(), 3))]
        + ([(CAMERA, pa.struct([('bytes', pa.binary()), ('path', pa.string())]))]
           if camera == 'image' else [])
        + [('timestamp', pa.float32()), ('frame_index', pa.int64()),
           ('episode_index', pa.int64()), ('index', pa.int64()), ('task_index', pa.int64())])
    for file_index, file_rows in rows.items():
        path = root / f'data/chunk-000/file-{file_index:03d}.parquet'
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(file_rows, schema=schema), path)
    path = root / 'meta/episodes/chunk-000/file-000.parquet'
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(episodes), path)
    if camera == 'video':
        frames = np.concatenate(all_video)
        write_video(root / f'videos/{CAMERA}/chunk-000/file-000.mp4',
                    frames[:len(frames) - video_frames_short_by])
    return expected


def rewrite_parquet(path: Path, edit) -> None:
    table = pq.read_table(path)
    pq.write_table(edit(table), path)


@pytest.fixture(scope='module')
def video_dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp('lerobot') / 'video_ds'
    return root, write_lerobot(root, camera='video')


# ---------------------------------------------------------------------- LeRobot round trips


def test_image_dataset_round_trips_exactly(tmp_path):
    root = tmp_path / 'image_ds'
    expected = write_lerobot(root, camera='image')
    buffer = convert_lerobot(root, tmp_path / 'out.zarr', progress=False)
    assert buffer.keys == ['action', 'img', 'state']
    np.testing.assert_array_equal(buffer.episode_lengths, LENGTHS)
    reopened = ReplayBuffer.open(tmp_path / 'out.zarr')
    for episode, arrays in expected.items():
        got = reopened.get_episode(episode)
        for key, value in arrays.items():
            assert got[key].dtype == value.dtype, key
            np.testing.assert_array_equal(got[key], value, err_msg=f'{key} episode {episode}')
    attrs = reopened.attrs
    assert attrs['control_hz'] == FPS and attrs['source_format'] == 'lerobot'
    assert attrs['feature_names']['state'] == ['j0', 'j1', 'j2']
    assert attrs[CONVERSION_ATTR]['key_map'] == {
        'observation.state': 'state', 'action': 'action', CAMERA: 'img'}


def test_video_dataset_frames_are_close_and_in_order(video_dataset, tmp_path):
    root, expected = video_dataset
    buffer = convert_lerobot(root, tmp_path / 'out.zarr', progress=False)
    np.testing.assert_array_equal(buffer.episode_ends, np.cumsum(LENGTHS))
    originals = np.concatenate([expected[e]['img'] for e in range(len(LENGTHS))])
    decoded = buffer.array('img')[:]
    assert decoded.shape == originals.shape and decoded.dtype == np.uint8
    error = np.abs(decoded.astype(int)[:, None] - originals.astype(int)[None]).mean(
        axis=(2, 3, 4))  # (decoded step, original step)
    # Every decoded frame is closest to its own original: no frame is shifted or repeated.
    np.testing.assert_array_equal(error.argmin(axis=1), np.arange(len(originals)))
    assert np.diag(error).max() < 8.0  # mean |error| per frame, in 0..255 (mpeg4: ~5)
    for episode, arrays in expected.items():
        got = buffer.get_episode(episode)
        np.testing.assert_array_equal(got['state'], arrays['state'])
        np.testing.assert_array_equal(got['action'], arrays['action'])


def test_frames_resize_to_the_requested_image_size(video_dataset, tmp_path):
    root, _ = video_dataset
    buffer = convert_lerobot(root, tmp_path / 'small.zarr', image_size=(24, 20),
                             progress=False)
    assert buffer.array('img').shape == (sum(LENGTHS), 24, 20, 3)


def test_key_maps_and_cli(video_dataset, tmp_path, capsys):
    root, expected = video_dataset
    reader = LeRobotReader(root)
    assert reader.camera_keys == [CAMERA]
    assert default_key_map(reader)[CAMERA] == 'img'
    # A config's camera names the feature by name, or takes the only camera there is.
    assert default_key_map(reader, {'front': 'cam0'})[CAMERA] == 'cam0'
    assert default_key_map(reader, {'wrist': 'cam1'})[CAMERA] == 'cam1'
    with pytest.raises(ValueError, match=r'no image feature observation\.images\.top.*'
                                         r'--map observation\.images\.<cam>=a'):
        default_key_map(reader, {'top': 'a', 'wrist2': 'b'})
    assert parse_key_map(['action=act', 'observation.state=s']) == {
        'action': 'act', 'observation.state': 's'}
    with pytest.raises(ValueError, match='expected SRC=DST'):
        parse_key_map(['action'])
    out = tmp_path / 'cli.zarr'
    assert lerobot_main([str(root), '--out', str(out), '--map', 'action=act',
                         '--map', 'index=step']) == 0
    assert '| act | float32 | (18, 3) |' in capsys.readouterr().out
    buffer = ReplayBuffer.open(out)
    assert buffer.keys == ['act', 'img', 'state', 'step']
    np.testing.assert_array_equal(buffer.array('step')[:, 0], np.arange(sum(LENGTHS)))
    np.testing.assert_array_equal(buffer.get_episode(2)['act'], expected[2]['action'])
    # An existing store is refused without --overwrite (exit 2, message on stderr).
    assert lerobot_main([str(root), '--out', str(out)]) == 2
    assert 'already exists' in capsys.readouterr().err


# ---------------------------------------------------------------------- bad inputs


def test_truncated_parquet_names_the_file(tmp_path):
    root = tmp_path / 'ds'
    write_lerobot(root, camera='image')
    path = root / 'data/chunk-000/file-001.parquet'
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r'file-001\.parquet: not a readable parquet file.*'
                                         r'truncated or corrupt'):
        convert_lerobot(root, tmp_path / 'out.zarr', progress=False)
    assert not (tmp_path / 'out.zarr').exists()  # no partial store is left behind


def test_video_with_fewer_frames_names_episode_and_counts(tmp_path):
    root = tmp_path / 'ds'
    write_lerobot(root, camera='video', video_frames_short_by=2)
    with pytest.raises(ValueError, match=r'file-000\.mp4: video \'observation\.images\.front\' '
                                         r'has 4 frames for episode 2 .*expected 6 \(one per '
                                         r'row\): frame 4'):
        convert_lerobot(root, tmp_path / 'out.zarr', progress=False)


def test_lengths_that_disagree_are_refused(tmp_path):
    root = tmp_path / 'ds'
    write_lerobot(root, camera='image')
    episodes = root / 'meta/episodes/chunk-000/file-000.parquet'
    rewrite_parquet(episodes, lambda t: t.set_column(
        t.schema.get_field_index('length'), 'length', pa.array([7, 6, 6])))
    with pytest.raises(ValueError, match=r'file-000\.parquet: episode 1 has 5 rows but .*'
                                         r'gives it length 6'):
        convert_lerobot(root, tmp_path / 'out.zarr', progress=False)


def test_a_row_of_the_wrong_length_is_refused(tmp_path):
    root = tmp_path / 'ds'
    write_lerobot(root, camera='image')
    data = root / 'data/chunk-000/file-001.parquet'
    column = 'observation.state'

    def shorten(table):
        values = table.column(column).to_pylist()
        values[3] = values[3][:2]
        return table.set_column(table.schema.get_field_index(column), column,
                                pa.array(values, pa.list_(pa.float32())))
    rewrite_parquet(data, shorten)
    with pytest.raises(ValueError, match=r'file-001\.parquet: episode 2, column '
                                         r"'observation\.state': row 3 holds 2 values .*"
                                         r'expected shape \[3\]'):
        convert_lerobot(root, tmp_path / 'out.zarr', progress=False)


def test_missing_features_are_named(tmp_path):
    root = tmp_path / 'ds'
    write_lerobot(root, camera='image')
    with pytest.raises(ValueError, match=r"info\.json: no feature 'observation\.effort'; "
                                         r'expected one of'):
        convert_lerobot(root, tmp_path / 'out.zarr', {'observation.effort': 'effort'},
                        progress=False)
    rewrite_parquet(root / 'data/chunk-000/file-000.parquet', lambda t: t.drop(['action']))
    with pytest.raises(ValueError, match=r"file-000\.parquet: no column 'action'; expected "
                                         r"one for feature 'action'"):
        convert_lerobot(root, tmp_path / 'out.zarr', progress=False)


def test_other_versions_and_missing_videos_are_refused(tmp_path, video_dataset):
    root = tmp_path / 'old'
    write_lerobot(root, camera='image')
    info = json.loads((root / 'meta/info.json').read_text())
    (root / 'meta/info.json').write_text(json.dumps({**info, 'codebase_version': 'v2.1'}))
    with pytest.raises(ValueError, match=r"codebase_version is 'v2\.1'; expected 'v3\.0'"):
        LeRobotReader(root)
    with pytest.raises(FileNotFoundError, match=r'meta/info\.json does not exist'):
        LeRobotReader(tmp_path)
    source, _ = video_dataset
    reader = LeRobotReader(source)
    reader.video_path = 'videos/{video_key}/missing-{file_index}.mp4'
    with pytest.raises(ValueError, match=r'missing-0\.mp4: video file of feature '
                                         r"'observation\.images\.front' does not exist"):
        next(reader.episodes([CAMERA]))


# ---------------------------------------------------------------------- zarr.zip and columns


def write_pusht_zip(path: Path, lengths=(12, 10)) -> dict[str, np.ndarray]:
    """Write a Diffusion Policy PushT-like .zarr.zip (float 0..255 images, 5-D state)."""
    rng = np.random.default_rng(1)
    steps = sum(lengths)
    data = {'img': rng.integers(0, 256, (steps, 24, 24, 3)).astype(np.float32),
            'state': rng.standard_normal((steps, 5)).astype(np.float32),
            'action': rng.standard_normal((steps, 2)).astype(np.float32),
            'keypoint': rng.standard_normal((steps, 9, 2)).astype(np.float32)}
    store = ZipStore(path, mode='w')
    root = zarr.open_group(store, mode='w', zarr_format=2)
    for key, value in data.items():
        root.create_array(f'data/{key}', shape=value.shape, dtype=value.dtype,
                          chunks=(8,) + value.shape[1:])[:] = value
    root.create_array('meta/episode_ends', shape=(len(lengths),), dtype='int64')[:] = \
        np.cumsum(lengths)
    store.close()
    return data


def test_zarr_zip_opens_read_only_with_column_selection(tmp_path):
    path = tmp_path / 'pusht.zarr.zip'
    data = write_pusht_zip(path)
    buffer = ReplayBuffer.open(path)
    assert buffer.n_episodes == 2 and buffer.keys == ['action', 'img', 'keypoint', 'state']
    np.testing.assert_array_equal(buffer.get_episode(1)['state'], data['state'][12:])
    with pytest.raises(ValueError, match=r'zipped store, which opens read-only: expected '
                                         r"mode='r', got mode='a'"):
        ReplayBuffer.open(path, mode='a')
    columns = parse_column_selections(['state=state:0:2', 'img=img@uint8', 'pos=keypoint::1'])
    selected = ReplayBuffer.open(path, columns=columns)
    assert selected.keys == ['action', 'img', 'keypoint', 'pos', 'state']
    state = selected.array('state')
    assert state.shape == (22, 2) and state.ndim == 2 and state.dtype == np.float32
    np.testing.assert_array_equal(state[3:9], data['state'][3:9, :2])
    np.testing.assert_array_equal(state[4], data['state'][4, :2])
    np.testing.assert_array_equal(selected.array('pos')[:], data['keypoint'][:, :1])
    np.testing.assert_array_equal(selected.array('img')[:], data['img'].astype(np.uint8))
    dataset = SequenceDataset(selected, image_keys={'front': 'img'}, horizon=8, n_obs_steps=2,
                              n_action_steps=4)
    item = dataset[0]
    assert item['state'].shape == (2, 2) and item['images']['front'].shape == (2, 3, 24, 24)
    np.testing.assert_array_equal(item['state'][1].numpy(), data['state'][0, :2])
    # Without the cast the float images are refused by the dataset layer, naming the key.
    with pytest.raises(ValueError, match=r'data/img .*must be uint8'):
        SequenceDataset(buffer, image_keys={'front': 'img'}, horizon=8)


def test_column_selection_errors(tmp_path):
    path = tmp_path / 'pusht.zarr.zip'
    write_pusht_zip(path)
    assert parse_column_selection('s=state::2') == ('s', ColumnSelection('state', None, 2))
    assert str(parse_column_selection('s=state:1:@float64')[1]) == 'state:1:@float64'
    for text in ('state', 'state=state:0', 's=state:a:2', '=state', 's=state@'):
        with pytest.raises(ValueError, match=r'expected DST=SRC\[:START:STOP\]'):
            parse_column_selection(text)
    with pytest.raises(ValueError, match="'s' is already selected"):
        parse_column_selections(['s=state:0:1', 's=state:1:2'])
    with pytest.raises(ValueError, match=r'selects no column of data/state, shape \(22, 5\); '
                                         r'expected START:STOP within \[0, 5\]'):
        ReplayBuffer.open(path, columns={'s': ColumnSelection('state', 7, 9)})
    with pytest.raises(ValueError, match=r"no array data/pos; expected one of \['action'"):
        ReplayBuffer.open(path, columns={'s': ColumnSelection('pos')})
    with pytest.raises(ValueError, match=r"dtype 'complex' is not a numpy dtype|expected a "
                                         r'numeric dtype'):
        ReplayBuffer.open(path, columns={'s': ColumnSelection('state', dtype='complex')})
    store = tmp_path / 'plain.zarr'
    ReplayBuffer.create(store).add_episode({'x': np.zeros((3, 2), np.float32)})
    with pytest.raises(ValueError, match=r"column selections need mode='r'"):
        ReplayBuffer.open(store, mode='a', columns={'s': ColumnSelection('x', 0, 1)})
    not_zip = tmp_path / 'file.zarr.zip'
    not_zip.write_bytes(b'not a zip')
    with pytest.raises(ValueError, match='not a zip archive'):
        ReplayBuffer.open(not_zip)


# ---------------------------------------------------------------------- train-policy


POLICY = {'encoder': 'small_cnn', 'n_layer': 1, 'n_emb': 16, 'n_head': 2, 'state_dim': 3,
          'action_dim': 3, 'horizon': 4, 'n_obs_steps': 2, 'n_action_steps': 2,
          'image_shape': [3, 24, 24], 'crop_shape': [20, 20], 'image_feature_dim': 8,
          'num_train_timesteps': 10, 'num_inference_steps': 10, 'p_drop_attn': 0.0}
TRAINING = {'steps': 2, 'batch_size': 4, 'warmup_steps': 1, 'val_every': 2,
            'checkpoint_every': 2, 'val_ratio': 0.34, 'val_batches': 1}


def write_config(path: Path, **policy) -> Path:
    path.write_text(yaml.safe_dump({'policy': {**POLICY, **policy}, 'training': TRAINING}))
    return path


def test_train_policy_on_a_lerobot_folder(video_dataset, tmp_path):
    root, expected = video_dataset
    assert dataset_format(root) == 'lerobot' and dataset_format(tmp_path / 'x.zarr') == 'zarr'
    out = tmp_path / 'model'
    argv = ['--dataset', str(root), '--config', str(write_config(tmp_path / 'c.yaml')),
            '--out', str(out), '--device', 'cpu']
    assert train_policy_main(argv) == 0
    cache = default_cache(out)
    assert cache == tmp_path / 'model.dataset.zarr'
    buffer = ReplayBuffer.open(cache)
    assert buffer.array('img').shape == (sum(LENGTHS), 24, 24, 3)  # the config's image size
    np.testing.assert_array_equal(buffer.get_episode(0)['state'], expected[0]['state'])
    record = buffer.attrs[CONVERSION_ATTR]
    assert is_converted(cache, record)
    model = load_policy(out)
    assert model.config.state_dim == 3
    assert [h['step'] for h in json.loads((out / 'config.json').read_text())[
        'training']['history']] == [2]
    # A second run reuses the cache (same fingerprint); --format zarr refuses the folder.
    written = (cache / '.zattrs').stat().st_mtime_ns
    assert train_policy_main(argv + ['--out', str(tmp_path / 'model2'),
                                     '--cache', str(cache)]) == 0
    assert (cache / '.zattrs').stat().st_mtime_ns == written
    assert train_policy_main(argv + ['--format', 'zarr']) == 2


def test_train_policy_on_a_zarr_zip_with_selected_columns(tmp_path, capsys):
    path = tmp_path / 'pusht.zarr.zip'
    write_pusht_zip(path)
    config = write_config(tmp_path / 'c.yaml', state_dim=2, action_dim=2)
    out = tmp_path / 'model'
    argv = ['--dataset', str(path), '--config', str(config), '--out', str(out),
            '--device', 'cpu', '--select', 'state=state:0:2', '--select', 'img=img@uint8']
    assert train_policy_main(argv) == 0
    training = json.loads((out / 'config.json').read_text())['training']
    assert training['dataset_columns'] == {'state': 'state:0:2', 'img': 'img@uint8'}
    # The 5-D state does not fit state_dim 2 without its selection.
    assert train_policy_main(argv[:-4] + ['--select', 'img=img@uint8']) == 2
    assert 'dataset state has 5 dims but the policy config expects 2' in capsys.readouterr().err
