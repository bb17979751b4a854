"""
Read LeRobotDataset v3 folders (pyarrow + PyAV) and convert them into a replay buffer.

The v3 layout (LeRobot's ``codebase_version`` ``v3.0``; many episodes per file)::

    <root>/meta/info.json           fps, features {key: {dtype, shape, names}}, path templates
    <root>/meta/episodes/chunk-*/file-*.parquet   one row per episode: length, data file,
                                    per video key its file and from/to timestamps in it
    <root>/data/chunk-*/file-*.parquet            one row per frame: episode_index,
                                    frame_index, index, timestamp, one column per feature
    <root>/videos/<key>/chunk-*/file-*.mp4        frames of many episodes back to back

Numeric features are list (or scalar, for shape (1,)) columns; ``image`` features are
structs {bytes, path} of PNG/JPEG files; ``video`` features live in the mp4 files: frame ``i``
of an episode is the one shown at ``from_timestamp + timestamp[i]`` of its video file.

Episodes are the runs of equal ``episode_index`` in the data files (in path order; an episode
may continue into the next file), checked against ``meta/episodes`` where it exists. Every
problem raises ``ValueError`` naming the file, the feature or column, the row or episode and
what was expected. :func:`convert_lerobot` writes the episodes into a replay buffer
(``ReplayBuffer.create`` + ``add_episode``) under the store's key names (:func:`default_key_map`).
"""

import argparse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
import hashlib
import json
import logging
import os
from pathlib import Path
import re
import shutil
import sys
from typing import Any

import av
import cv2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from tqdm import tqdm

from .replay_buffer import ReplayBuffer

logger = logging.getLogger(__name__)

CODEBASE_VERSION = 'v3.0'
INFO_PATH = 'meta/info.json'
EPISODES_DIR = 'meta/episodes'
DEFAULT_DATA_PATH = 'data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet'
DEFAULT_VIDEO_PATH = 'videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4'
IMAGE_PREFIX = 'observation.images.'
STATE_FEATURE = 'observation.state'
ACTION_FEATURE = 'action'
EPISODE_INDEX = 'episode_index'
FRAME_INDEX = 'frame_index'
TIMESTAMP = 'timestamp'
CAMERA_DTYPES = ('image', 'video')
# Attribute that marks a finished conversion (set last) and fingerprints its source.
CONVERSION_ATTR = 'lerobot_conversion'


@dataclass(frozen=True)
class Feature:
    """One entry of ``meta/info.json`` ``features``."""

    key: str  # e.g. 'observation.state', 'observation.images.top'
    dtype: str  # 'float32', 'int64', ..., 'image' or 'video'
    shape: tuple[int, ...]  # per frame; (H, W, 3) for cameras
    names: Any = None  # per-dimension names as written (list, dict or None)

    @property
    def is_camera(self) -> bool:
        """Whether frames are images (PNG in parquet) or video (mp4) rather than numbers."""
        return self.dtype in CAMERA_DTYPES

    def frame_shape(self) -> tuple[int, int, int]:
        """Return (H, W, 3) of a camera feature, whichever order info.json lists the axes in."""
        shape = tuple(self.shape)
        names = list(self.names) if isinstance(self.names, (list, tuple)) else []
        if len(shape) == 3 and names and str(names[0]).startswith('channel'):
            shape = (shape[1], shape[2], shape[0])
        if len(shape) != 3 or shape[2] != 3:
            raise ValueError(f'feature {self.key!r} ({self.dtype}) must have shape (H, W, 3), '
                             f'got {list(self.shape)} names {self.names}')
        return shape


class LeRobotReader:
    """
    A LeRobotDataset v3 folder on disk: its features, episodes and frames.

    ``episodes(keys)`` yields ``(episode_index, {feature key: array (T, ...)})`` in order;
    camera frames come as uint8 RGB (T, H, W, 3), numeric features as (T, *shape).
    """

    def __init__(self, root: str | os.PathLike, tolerance_s: float | None = None):
        """Read and check ``meta/info.json``; ``tolerance_s`` defaults to 0.4 / fps."""
        self.root = Path(root)
        info_path = self.root / INFO_PATH
        if not info_path.is_file():
            raise FileNotFoundError(f'{self.root} is not a LeRobot dataset: {info_path} does '
                                    f'not exist')
        try:
            info = json.loads(info_path.read_text())
        except json.JSONDecodeError as error:
            raise ValueError(f'{info_path}: expected JSON, got a parse error: {error}') from None
        self.info_path = info_path
        version = str(info.get('codebase_version', ''))
        if not version.startswith('v3'):
            raise ValueError(f'{info_path}: codebase_version is {version!r}; expected '
                             f'{CODEBASE_VERSION!r} (convert v2.x datasets with the '
                             f'LeRobot script convert_dataset_v21_to_v30 first)')
        for name in ('fps', 'features'):
            if name not in info:
                raise ValueError(f'{info_path}: missing {name!r}; expected a v3 info.json with '
                                 f'fps and features')
        self.fps = float(info['fps'])
        if not self.fps > 0:
            raise ValueError(f'{info_path}: fps must be > 0, got {info["fps"]!r}')
        self.info = info
        self.features = {}
        for key, spec in info['features'].items():
            if not isinstance(spec, dict) or 'dtype' not in spec or 'shape' not in spec:
                raise ValueError(f'{info_path}: feature {key!r} must have dtype and shape, got '
                                 f'{spec!r}')
            self.features[key] = Feature(key, str(spec['dtype']),
                                         tuple(int(n) for n in spec['shape']), spec.get('names'))
        self.data_path = info.get('data_path') or DEFAULT_DATA_PATH
        self.video_path = info.get('video_path') or DEFAULT_VIDEO_PATH
        self.tolerance_s = 0.4 / self.fps if tolerance_s is None else float(tolerance_s)
        self._videos: dict[str, tuple[Path, Any]] = {}

    # ------------------------------------------------------------------ metadata

    @property
    def camera_keys(self) -> list[str]:
        """Feature keys whose frames are images or video, in info.json order."""
        return [key for key, feature in self.features.items() if feature.is_camera]

    def feature(self, key: str) -> Feature:
        """Return feature ``key``; a missing one is an error listing those there are."""
        if key not in self.features:
            raise ValueError(f'{self.info_path}: no feature {key!r}; expected one of '
                             f'{sorted(self.features)}')
        return self.features[key]

    def data_files(self) -> list[Path]:
        """Return the data parquet files (``data_path`` with any index), sorted by path."""
        pattern = re.sub(r'\{[^}]*\}', '*', self.data_path)
        files = sorted(self.root.glob(pattern))
        if not files:
            raise ValueError(f'{self.root}: no data files match {pattern!r} (info.json '
                             f'data_path {self.data_path!r}); expected at least one parquet file')
        return files

    def episode_table(self) -> dict[int, dict[str, Any]]:
        """Return ``meta/episodes`` rows by episode index ({} when the folder has none)."""
        files = sorted((self.root / EPISODES_DIR).glob('**/*.parquet'))
        wanted = {EPISODE_INDEX, 'length', 'dataset_from_index', 'dataset_to_index',
                  'data/chunk_index', 'data/file_index'}
        rows: dict[int, dict[str, Any]] = {}
        for path in files:
            names = _read_schema(path).names
            if EPISODE_INDEX not in names:
                raise ValueError(f'{path}: no column {EPISODE_INDEX!r}; expected one row per '
                                 f'episode with columns episode_index, length, ...')
            columns = [n for n in names if n in wanted or n.startswith('videos/')]
            for row in _read_table(path, columns).to_pylist():
                rows[int(row[EPISODE_INDEX])] = row
        return rows

    # ------------------------------------------------------------------ frames

    def episodes(self, keys: Sequence[str]) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
        """Yield ``(episode_index, {key: array (T, ...)})`` for features ``keys``, in order."""
        for key in keys:
            self.feature(key)
        meta = self.episode_table()
        if any(self.features[k].dtype == 'video' for k in keys) and not meta:
            raise ValueError(f'{self.root / EPISODES_DIR}: no episode metadata; expected '
                             f'meta/episodes/chunk-*/file-*.parquet to locate the video frames '
                             f'of {[k for k in keys if self.features[k].dtype == "video"]}')
        seen = []
        try:
            for index, rows, path in self._episode_rows(keys):
                episode = self._episode_arrays(index, rows, path, keys, meta.get(index))
                seen.append(index)
                yield index, episode
        finally:
            self.close()
        missing = sorted(set(meta) - set(seen))
        if missing:
            raise ValueError(f'{self.root / EPISODES_DIR} lists episodes {missing[:10]} that no '
                             f'data file holds rows of; expected the data files '
                             f'{self.data_path!r} to hold every listed episode')

    def close(self) -> None:
        """Close the video files kept open between episodes."""
        for _, container in self._videos.values():
            container.close()
        self._videos.clear()

    def _episode_rows(self, keys: Sequence[str]) -> Iterator[tuple[int, pa.Table, Path]]:
        """Yield (episode index, its rows, the file they start in), joining across files."""
        pending: tuple[int, pa.Table, Path] | None = None
        finished: set[int] = set()
        for path in self.data_files():
            names = _read_schema(path).names
            for column in [EPISODE_INDEX, *(k for k in keys
                                            if self.features[k].dtype != 'video')]:
                if column not in names:
                    what = ('the episode of each row' if column == EPISODE_INDEX
                            else f'feature {column!r} of {self.info_path}')
                    raise ValueError(f'{path}: no column {column!r}; expected one for {what} '
                                     f'(columns: {names})')
            columns = [c for c in names if c in (EPISODE_INDEX, FRAME_INDEX, TIMESTAMP, 'index')
                       or c in keys]
            table = _read_table(path, columns)
            episode = table.column(EPISODE_INDEX).to_numpy()
            if len(episode) == 0:
                continue
            starts = np.flatnonzero(np.diff(episode, prepend=episode[0] - 1) != 0)
            for start, stop in zip(starts, [*starts[1:], len(episode)]):
                index = int(episode[start])
                rows = table.slice(start, stop - start)
                if pending is not None and pending[0] == index and start == 0:
                    pending = (index, pa.concat_tables([pending[1], rows]), pending[2])
                    continue
                if index in finished or (pending is not None and pending[0] == index):
                    raise ValueError(f'{path}: row {start} has episode_index {index}, which '
                                     f'ended before; expected the rows of each episode to be '
                                     f'contiguous')
                if pending is not None:
                    finished.add(pending[0])
                    yield pending
                pending = (index, rows, path)
        if pending is not None:
            yield pending

    def _episode_arrays(self, index: int, rows: pa.Table, path: Path, keys: Sequence[str],
                        meta: dict[str, Any] | None) -> dict[str, np.ndarray]:
        length = rows.num_rows
        where = f'{path}: episode {index}'
        if meta is not None:
            expected = meta.get('length')
            if expected is None and 'dataset_to_index' in meta:
                expected = meta['dataset_to_index'] - meta['dataset_from_index']
            if expected is not None and int(expected) != length:
                raise ValueError(f'{where} has {length} rows but {self.root / EPISODES_DIR} '
                                 f'gives it length {int(expected)}; expected the episode '
                                 f'metadata and the data columns to agree')
        if FRAME_INDEX in rows.column_names:
            frames = rows.column(FRAME_INDEX).to_numpy()
            bad = np.flatnonzero(frames != np.arange(length))
            if len(bad):
                raise ValueError(f'{where}: column {FRAME_INDEX!r} is {int(frames[bad[0]])} at '
                                 f'its row {int(bad[0])}; expected 0..{length - 1} in order '
                                 f'(missing or repeated rows)')
        arrays = {}
        for key in keys:
            feature = self.features[key]
            if feature.dtype == 'video':
                arrays[key] = self._video_frames(feature, index, rows, meta)
            elif feature.dtype == 'image':
                arrays[key] = self._image_frames(feature, index, rows, path)
            else:
                arrays[key] = _numeric_column(rows.column(key), feature, f'{where}, column '
                                              f'{key!r}')
        return arrays

    def _image_frames(self, feature: Feature, index: int, rows: pa.Table,
                      path: Path) -> np.ndarray:
        expected = feature.frame_shape()
        frames = np.empty((rows.num_rows, *expected), np.uint8)
        for row, cell in enumerate(rows.column(feature.key).to_pylist()):
            where = f'{path}: episode {index}, column {feature.key!r}, frame {row}'
            data = cell.get('bytes') if isinstance(cell, dict) else None
            if not data and isinstance(cell, dict) and cell.get('path'):
                file = self.root / cell['path']
                if not file.is_file():
                    raise ValueError(f'{where}: image file {file} does not exist; expected the '
                                     f'bytes in the parquet or a file at that path')
                data = file.read_bytes()
            if not data:
                raise ValueError(f'{where}: expected a struct {{bytes, path}} holding an image, '
                                 f'got {type(cell).__name__}')
            image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                raise ValueError(f'{where}: the bytes are not a decodable image (PNG/JPEG)')
            if image.shape != expected:
                raise ValueError(f'{where}: image has shape {image.shape}; expected {expected} '
                                 f'as info.json declares')
            frames[row] = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        return frames

    def _video_frames(self, feature: Feature, index: int, rows: pa.Table,
                      meta: dict[str, Any] | None) -> np.ndarray:
        key = feature.key
        episodes_dir = self.root / EPISODES_DIR
        columns = [f'videos/{key}/{name}' for name in
                   ('chunk_index', 'file_index', 'from_timestamp', 'to_timestamp')]
        if meta is None:
            raise ValueError(f'{episodes_dir}: no row for episode {index}; expected one to '
                             f'locate its video {key!r}')
        absent = [c for c in columns if meta.get(c) is None]
        if absent:
            raise ValueError(f'{episodes_dir}: episode {index} has no {absent}; expected them '
                             f'for video feature {key!r}')
        chunk, file, start, stop = (meta[c] for c in columns)
        path = self.root / self.video_path.format(video_key=key, chunk_index=int(chunk),
                                                  file_index=int(file))
        if TIMESTAMP in rows.column_names:
            offsets = rows.column(TIMESTAMP).to_numpy().astype(np.float64)
        else:
            offsets = np.arange(rows.num_rows) / self.fps
        wanted = float(start) + offsets  # (T,) seconds into the video file
        times, frames = self._decode(path, key, wanted[0], wanted[-1])
        expected = feature.frame_shape()
        nearest = np.zeros(len(wanted), np.int64)  # decoded frame shown at each row's time
        error = np.full(len(wanted), np.inf)
        if len(times):
            right = np.clip(np.searchsorted(times, wanted), 0, len(times) - 1)
            left = np.maximum(right - 1, 0)
            nearest = np.where(np.abs(times[left] - wanted) <= np.abs(times[right] - wanted),
                               left, right)
            error = np.abs(times[nearest] - wanted)
        bad = np.flatnonzero(error > self.tolerance_s)
        if len(bad):
            raise ValueError(
                f'{path}: video {key!r} has {len(times)} frames for episode {index} between '
                f'{float(start):.4f} s and {float(stop):.4f} s; expected {len(wanted)} (one per '
                f'row): frame {int(bad[0])} at {wanted[bad[0]]:.4f} s has none within '
                f'{self.tolerance_s:.4f} s')
        out = np.stack([frames[i] for i in nearest])
        if out.shape[1:] != expected:
            raise ValueError(f'{path}: video {key!r} frames have shape {out.shape[1:]}; '
                             f'expected {expected} as info.json declares')
        return out

    def _decode(self, path: Path, key: str, first: float,
                last: float) -> tuple[np.ndarray, list[np.ndarray]]:
        """Decode the frames of ``path`` shown in [first, last] (+- tolerance): (times, RGB)."""
        cached = self._videos.get(key)
        if cached is None or cached[0] != path:
            if cached is not None:
                cached[1].close()
            if not path.is_file():
                raise ValueError(f'{path}: video file of feature {key!r} does not exist; '
                                 f'expected it as info.json video_path {self.video_path!r} says')
            try:
                container = av.open(str(path))
            except av.FFmpegError as error:
                raise ValueError(f'{path}: cannot open video of feature {key!r} ({error}); '
                                 f'expected an mp4 file') from None
            if not container.streams.video:
                container.close()
                raise ValueError(f'{path}: no video stream; expected the frames of {key!r}')
            self._videos[key] = cached = (path, container)
        container = cached[1]
        stream = container.streams.video[0]
        times, frames = [], []
        try:
            # Seek lands on the keyframe at or before ``first``; decode forward from there.
            container.seek(max(0, int((first - self.tolerance_s) / stream.time_base)),
                           stream=stream, backward=True)
            for frame in container.decode(stream):
                if frame.pts is None:
                    continue
                time = float(frame.pts * stream.time_base)
                if time < first - self.tolerance_s:
                    continue
                if time > last + self.tolerance_s:
                    break
                times.append(time)
                frames.append(frame.to_ndarray(format='rgb24'))
        except av.FFmpegError as error:
            raise ValueError(f'{path}: decoding video {key!r} failed after {len(frames)} '
                             f'frames from {first:.4f} s ({error}); expected a readable mp4') \
                from None
        return np.asarray(times, np.float64), frames


def default_key_map(reader: LeRobotReader, image_keys: Mapping[str, str] | None = None,
                    state_key: str = 'state',
                    action_key: str = 'action') -> dict[str, str]:
    """
    Map LeRobot feature keys to replay-buffer keys: state, action and one key per camera.

    ``image_keys`` is a training config's camera -> store key map: camera ``c`` is read from
    ``observation.images.c`` (or from the only camera when both sides have one). Without it
    a single camera becomes ``img`` (what record-demos writes) and several ``img_<cam>``.
    """
    mapping = {STATE_FEATURE: state_key, ACTION_FEATURE: action_key}
    cameras = {key[len(IMAGE_PREFIX):] if key.startswith(IMAGE_PREFIX) else key: key
               for key in reader.camera_keys}
    if image_keys is None:
        names = {camera: 'img' if len(cameras) == 1 else f'img_{camera}' for camera in cameras}
        return {**mapping, **{cameras[c]: name for c, name in names.items()}}
    for camera, key in image_keys.items():
        if camera in cameras:
            mapping[cameras[camera]] = key
        elif len(image_keys) == 1 and len(cameras) == 1:
            mapping[next(iter(cameras.values()))] = key
        else:
            raise ValueError(f'{reader.info_path}: no image feature {IMAGE_PREFIX}{camera} for '
                             f'camera {camera!r}; expected one of {list(cameras.values())} '
                             f'(map one with --map {IMAGE_PREFIX}<cam>={key})')
    return mapping


def parse_key_map(texts: Sequence[str] | None) -> dict[str, str]:
    """Parse ``SRC=DST`` pairs (CLI ``--map``) into {LeRobot feature: store key}."""
    mapping: dict[str, str] = {}
    for text in texts or []:
        source, sep, target = text.partition('=')
        if not sep or not source or not target or '/' in target:
            raise ValueError(f'--map {text!r}: expected SRC=DST, a LeRobot feature and a store '
                             f'key without "/", e.g. observation.images.top=img')
        mapping[source] = target
    return mapping


def source_fingerprint(root: str | os.PathLike) -> str:
    """Hash the names, sizes and modification times of a dataset's files (cache validity)."""
    root = Path(root)
    digest = hashlib.sha256()
    for folder in ('meta', 'data', 'videos', 'images'):
        for path in sorted((root / folder).rglob('*')):
            if path.is_file():
                stat = path.stat()
                digest.update(f'{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}\n'
                              .encode())
    return digest.hexdigest()


def conversion_record(root: str | os.PathLike, key_map: Mapping[str, str],
                      image_size: tuple[int, int] | None) -> dict[str, Any]:
    """Describe a conversion: its source, settings and the source's fingerprint."""
    return {'source': str(Path(root).resolve()), 'key_map': dict(key_map),
            'image_size': None if image_size is None else list(image_size),
            'fingerprint': source_fingerprint(root)}


def is_converted(store: str | os.PathLike, record: Mapping[str, Any]) -> bool:
    """Whether ``store`` is a finished conversion of exactly ``record`` (a reusable cache)."""
    try:
        attrs = ReplayBuffer.open(store, mode='r').attrs
    except (FileNotFoundError, ValueError):
        return False
    return attrs.get(CONVERSION_ATTR) == dict(record)


def convert_lerobot(source: str | os.PathLike, out: str | os.PathLike,
                    key_map: Mapping[str, str] | None = None,
                    image_size: tuple[int, int] | None = None,
                    overwrite: bool = False, progress: bool = True) -> ReplayBuffer:
    """
    Convert the LeRobot v3 dataset ``source`` into a replay buffer at ``out``; return it.

    ``key_map`` maps feature keys to store keys (default :func:`default_key_map`); camera
    frames are resized to ``image_size`` (H, W) where given. The store is removed again if the
    conversion fails; a finished one records :func:`conversion_record` in its attributes.
    """
    reader = LeRobotReader(source)
    key_map = dict(default_key_map(reader) if key_map is None else key_map)
    if not key_map:
        raise ValueError('key_map must map at least one feature, got {}')
    for key in key_map:
        reader.feature(key)
    targets = list(key_map.values())
    if len(set(targets)) != len(targets):
        raise ValueError(f'key_map {key_map} maps several features to one store key; expected '
                         f'distinct store keys')
    if image_size is not None:
        image_size = (int(image_size[0]), int(image_size[1]))
        if min(image_size) < 1:
            raise ValueError(f'image_size must be (H, W) >= 1, got {image_size}')
    record = conversion_record(source, key_map, image_size)
    out = Path(out)
    buffer = ReplayBuffer.create(out, overwrite=overwrite)
    try:
        n_episodes = reader.info.get('total_episodes')
        bar = tqdm(reader.episodes(list(key_map)), total=n_episodes, desc='lerobot-to-dataset',
                   disable=not progress, dynamic_ncols=True, mininterval=2.0)
        for _, episode in bar:
            arrays = {}
            for key, values in episode.items():
                if reader.features[key].is_camera and image_size is not None \
                        and values.shape[1:3] != image_size:
                    values = np.stack([cv2.resize(frame, image_size[::-1],
                                                  interpolation=cv2.INTER_AREA)
                                       for frame in values])
                arrays[key_map[key]] = values
            buffer.add_episode(arrays)
        if buffer.n_episodes == 0:
            raise ValueError(f'{source}: the data files hold no rows; expected at least one '
                             f'episode')
        names = {key_map[k]: reader.features[k].names for k in key_map
                 if not reader.features[k].is_camera and reader.features[k].names is not None}
        buffer.set_attrs({'source_format': 'lerobot', 'codebase_version':
                          reader.info.get('codebase_version'), 'control_hz': reader.fps,
                          'robot_type': reader.info.get('robot_type'), 'feature_names': names})
        buffer.set_attrs({CONVERSION_ATTR: record})  # last: marks the store finished
    except BaseException:  # noqa: B902 (an interrupt, too, must not leave a partial store)
        shutil.rmtree(out, ignore_errors=True)
        raise
    logger.info('converted %s: %d episodes, %d steps into %s', source, buffer.n_episodes,
                buffer.n_steps, out)
    return buffer


def summary_table(buffer: ReplayBuffer) -> str:
    """Markdown table of a store's arrays: key, dtype and shape."""
    lines = [f'{buffer.path}: {buffer.n_episodes} episodes, {buffer.n_steps} steps', '',
             '| key | dtype | shape |', '|---|---|---|']
    for key in buffer.keys:
        array = buffer.array(key)
        lines.append(f'| {key} | {array.dtype} | {tuple(array.shape)} |')
    return '\n'.join(lines)


def main(argv: list[str] | None = None) -> int:
    """Console entry point: ``lerobot-to-dataset SRC --out STORE [--map SRC=DST ...]``."""
    parser = argparse.ArgumentParser(
        description='Convert a LeRobotDataset v3 folder into a replay-buffer zarr store.')
    parser.add_argument('source', type=Path, help='LeRobot v3 folder (holding meta/info.json)')
    parser.add_argument('--out', required=True, type=Path, help='replay-buffer store to write')
    parser.add_argument('--map', action='append', default=None, metavar='SRC=DST',
                        help='feature -> store key, added to (or replacing) the defaults '
                             'observation.state=state, action=action, one camera=img')
    parser.add_argument('--only-map', action='store_true',
                        help='convert only the --map features (no defaults)')
    parser.add_argument('--image-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='resize camera frames to H x W')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing store')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        extra = parse_key_map(args.map)
        if args.only_map:
            key_map = extra
        else:
            key_map = {**default_key_map(LeRobotReader(args.source)), **extra}
        buffer = convert_lerobot(args.source, args.out, key_map, image_size=args.image_size,
                                 overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f'lerobot-to-dataset: error: {error}', file=sys.stderr)
        return 2
    print(summary_table(buffer))
    return 0


def _read_schema(path: Path) -> pa.Schema:
    try:
        return pq.read_schema(path)
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f'{path}: not a readable parquet file ({error}); expected an intact '
                         f'parquet file (truncated or corrupt?)') from None


def _read_table(path: Path, columns: list[str]) -> pa.Table:
    try:
        return pq.read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as error:
        raise ValueError(f'{path}: not a readable parquet file ({error}); expected an intact '
                         f'parquet file (truncated or corrupt?)') from None


def _numeric_column(column: pa.ChunkedArray, feature: Feature, where: str) -> np.ndarray:
    """Return a list (or scalar) column as an array (T, *shape), checking every row's length."""
    values = column.combine_chunks()
    if isinstance(values, pa.ExtensionArray):
        values = values.storage
    rows = len(values)
    shape = feature.shape if feature.shape != (1,) or _is_list(values.type) else (1,)
    for depth, size in enumerate(shape):
        if not _is_list(values.type):
            if depth == 0 and shape == (1,):
                break
            raise ValueError(f'{where}: expected nested lists of shape {list(shape)} as '
                             f'info.json declares, got type {column.type}')
        if values.null_count:
            row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
            raise ValueError(f'{where}: row {row // max(1, int(np.prod(shape[:depth])))} is '
                             f'null; expected {list(shape)} values per row')
        lengths = pc.list_value_length(values).to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(lengths != size)
        if len(bad):
            row = int(bad[0]) // max(1, int(np.prod(shape[:depth])))
            raise ValueError(f'{where}: row {row} holds {int(lengths[bad[0]])} values along '
                             f'axis {depth}; expected shape {list(shape)} per row as info.json '
                             f'declares')
        values = values.flatten()
    if values.null_count:
        row = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        raise ValueError(f'{where}: row {row // max(1, int(np.prod(shape)))} holds a null '
                         f'value; expected {list(shape)} numbers per row')
    array = values.to_numpy(zero_copy_only=False)
    if array.dtype == object or array.dtype.kind not in 'biuf':
        raise ValueError(f'{where}: expected numbers ({feature.dtype}), got type {column.type}')
    return array.reshape((rows, *shape))


def _is_list(kind: pa.DataType) -> bool:
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) \
        or pa.types.is_fixed_size_list(kind)


if __name__ == '__main__':
    sys.exit(main())
