"""
Write a replay-buffer store as a LeRobot v3 dataset (issue 22's LeRobot run).

    python scripts/zarr_to_lerobot.py STORE OUT [--episodes N] [--codec libx264|libsvtav1]
        [--crf 23] [--episodes-per-file 50]

The layout LeRobot 0.3+ writes: ``meta/info.json`` (codebase_version v3.0, fps, features),
``meta/stats.json``, ``meta/episodes/chunk-000/file-000.parquet`` (per episode: length, data
and video file indices, ``dataset_from_index`` / ``dataset_to_index``, the video time span),
``data/chunk-000/file-NNN.parquet`` (``observation.state``, ``action``, ``timestamp``,
``frame_index``, ``episode_index``, ``index``, ``task_index``) and the camera as lossy yuv420p
video, ``videos/observation.images.front/chunk-000/file-NNN.mp4``, several episodes per file
as LeRobot packs them. ``train-policy --format lerobot`` reads it back
(``scripts/lerobot_roundtrip.sh``); the frames come back through the codec, not bit for bit.
"""

import argparse
import json
from pathlib import Path
import sys

import av
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from sparse_policy_ros.training.replay_buffer import ReplayBuffer

CAMERA = 'observation.images.front'
DATA_PATH = 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
VIDEO_PATH = 'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4'
JOINTS = ('base_yaw', 'shoulder', 'elbow', 'wrist_pitch')


def write_video(path: Path, frames: np.ndarray, fps: float, codec: str, crf: int) -> None:
    """Encode (T, H, W, 3) uint8 frames as yuv420p video, one frame per 1 / fps s."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode='w') as container:
        stream = container.add_stream(codec, rate=int(round(fps)))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = 'yuv420p'
        stream.options = {'crf': str(crf), 'g': '2'}  # LeRobot encodes with a short GOP
        for i, image in enumerate(frames):
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format='rgb24')
            frame.pts = i
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def stats(values: np.ndarray) -> dict[str, list[float]]:
    """Return the per-feature statistics LeRobot keeps, of (N, D) values."""
    return {'min': values.min(0).tolist(), 'max': values.max(0).tolist(),
            'mean': values.mean(0).tolist(), 'std': values.std(0).tolist(),
            'count': [int(len(values))]}


def main(argv: list[str] | None = None) -> int:
    """Write the dataset; exit 2 with a message on bad input."""
    parser = argparse.ArgumentParser(prog='zarr_to_lerobot.py',
                                     description=__doc__.split('\n')[1])
    parser.add_argument('store', type=Path, help='replay-buffer zarr store (record-demos)')
    parser.add_argument('out', type=Path, help='LeRobot v3 folder to create')
    parser.add_argument('--episodes', type=int, default=None, help='first N episodes')
    parser.add_argument('--codec', default='libx264', help='video codec (PyAV name)')
    parser.add_argument('--crf', type=int, default=23, help='codec quality (lower = better)')
    parser.add_argument('--episodes-per-file', type=int, default=50)
    parser.add_argument('--fps', type=float, default=10.0, help='the store step rate, Hz')
    args = parser.parse_args(argv)
    store = ReplayBuffer.open(args.store, mode='r')
    count = store.n_episodes if args.episodes is None else args.episodes
    if not 1 <= count <= store.n_episodes:
        print(f'zarr_to_lerobot.py: --episodes must be in [1, {store.n_episodes}], got {count}',
              file=sys.stderr)
        return 2
    if args.out.exists():
        print(f'zarr_to_lerobot.py: {args.out} exists; refusing to overwrite it', file=sys.stderr)
        return 2
    if args.codec not in av.codecs_available:
        print(f'zarr_to_lerobot.py: codec {args.codec!r} is not in this PyAV build',
              file=sys.stderr)
        return 2
    episodes = [store.get_episode(i) for i in range(count)]
    height, width = episodes[0]['img'].shape[1:3]
    dof = episodes[0]['state'].shape[1]
    features = {
        'observation.state': {'dtype': 'float32', 'shape': [dof], 'names': list(JOINTS[:dof])},
        'action': {'dtype': 'float32', 'shape': [dof], 'names': list(JOINTS[:dof])},
        CAMERA: {'dtype': 'video', 'shape': [height, width, 3],
                 'names': ['height', 'width', 'channels'],
                 'info': {'video.fps': args.fps, 'video.codec': args.codec,
                          'video.pix_fmt': 'yuv420p'}},
        'timestamp': {'dtype': 'float32', 'shape': [1], 'names': None},
        'frame_index': {'dtype': 'int64', 'shape': [1], 'names': None},
        'episode_index': {'dtype': 'int64', 'shape': [1], 'names': None},
        'index': {'dtype': 'int64', 'shape': [1], 'names': None},
        'task_index': {'dtype': 'int64', 'shape': [1], 'names': None},
    }
    total = sum(len(e['state']) for e in episodes)
    info = {'codebase_version': 'v3.0', 'robot_type': 'arm_push', 'fps': args.fps,
            'total_episodes': count, 'total_frames': total, 'total_tasks': 1,
            'chunks_size': 1000, 'features': features, 'data_path': DATA_PATH,
            'video_path': VIDEO_PATH}
    (args.out / 'meta').mkdir(parents=True)
    (args.out / 'meta/info.json').write_text(json.dumps(info, indent=2))
    (args.out / 'meta/stats.json').write_text(json.dumps({
        key: stats(np.concatenate([e[name] for e in episodes]))
        for key, name in (('observation.state', 'state'), ('action', 'action'))}, indent=2))
    schema = pa.schema([('observation.state', pa.list_(pa.float32(), dof)),
                        ('action', pa.list_(pa.float32(), dof)), ('timestamp', pa.float32()),
                        ('frame_index', pa.int64()), ('episode_index', pa.int64()),
                        ('index', pa.int64()), ('task_index', pa.int64())])
    metas, start = [], 0
    for first in range(0, count, args.episodes_per_file):
        file_index = first // args.episodes_per_file
        group = episodes[first:first + args.episodes_per_file]
        rows, video_t = [], 0
        for offset, episode in enumerate(group):
            index = first + offset
            length = len(episode['state'])
            for t in range(length):
                rows.append({'observation.state': episode['state'][t].tolist(),
                             'action': episode['action'][t].tolist(),
                             'timestamp': np.float32(t / args.fps), 'frame_index': t,
                             'episode_index': index, 'index': start + t, 'task_index': 0})
            metas.append({
                'episode_index': index, 'length': length, 'tasks': ['push the puck'],
                'data/chunk_index': 0, 'data/file_index': file_index,
                'dataset_from_index': start, 'dataset_to_index': start + length,
                f'videos/{CAMERA}/chunk_index': 0, f'videos/{CAMERA}/file_index': file_index,
                f'videos/{CAMERA}/from_timestamp': video_t / args.fps,
                f'videos/{CAMERA}/to_timestamp': (video_t + length) / args.fps})
            start += length
            video_t += length
        path = args.out / DATA_PATH.format(chunk_index=0, file_index=file_index)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)
        write_video(args.out / VIDEO_PATH.format(video_key=CAMERA, chunk_index=0,
                                                 file_index=file_index),
                    np.concatenate([e['img'] for e in group]), args.fps, args.codec, args.crf)
    path = args.out / 'meta/episodes/chunk-000/file-000.parquet'
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(metas), path)
    print(f'wrote {count} episodes, {total} frames to {args.out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
