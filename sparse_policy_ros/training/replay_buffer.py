"""
Demonstrations on disk in Diffusion Policy's zarr replay-buffer layout.

Layout (zarr format 2, so stores written for Diffusion Policy open as they are)::

    <path>/
        data/<key>          (T_total, ...) one array per recorded quantity, episodes back to back
        meta/episode_ends   (n_episodes,) int64, cumulative: episode i is data[ends[i-1]:ends[i]]

Crash safety: ``add_episode`` writes every data array first and extends ``meta/episode_ends``
last, so an episode becomes visible only once its end is stored. A writer killed half-way leaves
data arrays longer than ``episode_ends[-1]``, or one unwritten (fill-value) last end after them;
readers ignore those steps and opening in append mode cuts them off (with a warning). Any other
end that does not exceed the one before it is a corrupt store, refused with ``ValueError``.
Zarr's local store writes each file atomically (temporary file + rename), which is what makes
"extend episode_ends" a commit point. One writer at a time.

Diffusion Policy's zipped stores (``*.zarr.zip``, zarr's ZipStore) open read-only. Read-only
opens can also expose column selections (:class:`ColumnSelection`): ``{'state': state[:, :2]}``
makes ``array('state')`` read the first two columns of ``data/state``, e.g. PushT's agent
position out of its 5-D state.
"""

from collections.abc import Mapping
import json
import logging
import math
import os
from pathlib import Path
import shutil
from typing import Any
import zipfile

import numpy as np
import zarr
from zarr.storage import ZipStore

from .column_selection import ColumnSelection, select_columns, SelectedColumns

logger = logging.getLogger(__name__)

DATA_GROUP = 'data'
META_GROUP = 'meta'
EPISODE_ENDS = 'meta/episode_ends'
OPEN_MODES = ('r', 'a')

# Aim for chunks of about this many bytes along time: a few 96x96 RGB frames, many state rows.
_TARGET_CHUNK_BYTES = 128 * 1024
_MAX_CHUNK_STEPS = 1024
_EPISODE_ENDS_CHUNK = 1024


def chunk_steps(step_shape: tuple[int, ...], dtype: np.dtype) -> int:
    """Return how many time steps one chunk of an array with per-step ``step_shape`` holds."""
    step_bytes = max(1, math.prod(step_shape) * np.dtype(dtype).itemsize)
    return int(np.clip(_TARGET_CHUNK_BYTES // step_bytes, 1, _MAX_CHUNK_STEPS))


class ReplayBuffer:
    """
    Episodes of equal-length arrays stored back to back in a zarr group.

    Create with :meth:`create`, open with :meth:`open`; the constructor is not public API.
    """

    def __init__(self, root: zarr.Group, path: Path, mode: str,
                 columns: Mapping[str, ColumnSelection] | None = None):
        self._root = root
        self._path = path
        self._mode = mode
        self._episode_ends = self._read_episode_ends()
        self._check_data_lengths()
        self._columns = select_columns(root[DATA_GROUP], dict(columns or {}), path)

    # ------------------------------------------------------------------ construction

    @classmethod
    def create(cls, path: str | os.PathLike, overwrite: bool = False) -> 'ReplayBuffer':
        """
        Create an empty replay buffer at ``path`` and return it open for appending.

        Raises ``FileExistsError`` if something exists at ``path`` and ``overwrite`` is False.
        With ``overwrite`` an existing zarr store (or empty directory) is replaced; any other
        existing file or directory is refused with ``ValueError`` rather than deleted.
        """
        path = Path(path)
        if path.exists():
            if not overwrite:
                raise FileExistsError(
                    f'{path} already exists; pass overwrite=True to replace it or use '
                    f"ReplayBuffer.open({str(path)!r}, mode='a') to append to it")
            _remove_store(path)
        root = zarr.open_group(str(path), mode='w-', zarr_format=2)
        root.create_group(DATA_GROUP)
        root.create_group(META_GROUP)
        root.create_array(EPISODE_ENDS, shape=(0,), chunks=(_EPISODE_ENDS_CHUNK,),
                          dtype='int64', fill_value=0)
        logger.info('created replay buffer at %s', path)
        return cls(root, path, 'a')

    @classmethod
    def open(cls, path: str | os.PathLike,  # noqa: A003 (the recorder's API names it open)
             mode: str = 'r',
             columns: Mapping[str, ColumnSelection] | None = None) -> 'ReplayBuffer':
        """
        Open an existing replay buffer read-only (``'r'``) or for appending (``'a'``).

        ``path`` is a directory store or a zipped one (``*.zarr.zip``, read-only). ``columns``
        (read-only) maps names to :class:`ColumnSelection` views that :meth:`array` and
        :attr:`keys` then serve, replacing a stored array of the same name.
        Raises ``FileNotFoundError`` if nothing is at ``path`` and ``ValueError`` if it is not a
        replay buffer or is inconsistent. In append mode, steps left behind by an interrupted
        ``add_episode`` are discarded (logged as a warning); in read mode they are ignored.
        """
        if mode not in OPEN_MODES:
            raise ValueError(f'mode must be one of {list(OPEN_MODES)}, got {mode!r}')
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f'no replay buffer at {path}: path does not exist')
        if columns and mode != 'r':
            raise ValueError(f"column selections need mode='r' (they are read-only views), got "
                             f'mode={mode!r} ({path})')
        store = str(path)
        if path.is_file():
            store = _zip_store(path)
            if mode != 'r':
                raise ValueError(f'{path} is a zipped store, which opens read-only: expected '
                                 f"mode='r', got mode={mode!r}")
        try:
            root = zarr.open_group(store, mode='r' if mode == 'r' else 'r+')
        except (zarr.errors.GroupNotFoundError, FileNotFoundError) as error:
            raise ValueError(
                f'{path} is not a replay buffer: expected a zarr group with {DATA_GROUP}/ and '
                f'{EPISODE_ENDS} ({error})') from error
        for name, kind in ((DATA_GROUP, zarr.Group), (EPISODE_ENDS, zarr.Array)):
            node = root.get(name)
            if not isinstance(node, kind):
                got = 'nothing' if node is None else type(node).__name__
                raise ValueError(f'{path} is not a replay buffer: expected {name} to be a zarr '
                                 f'{kind.__name__}, got {got}')
        return cls(root, path, mode, columns)

    # ------------------------------------------------------------------ reading

    @property
    def path(self) -> Path:
        """Where the store lives."""
        return self._path

    @property
    def mode(self) -> str:
        """``'r'`` (read-only) or ``'a'`` (append)."""
        return self._mode

    @property
    def episode_ends(self) -> np.ndarray:
        """Cumulative end index (exclusive) of every committed episode, int64 (n_episodes,)."""
        return self._episode_ends.copy()

    @property
    def n_episodes(self) -> int:
        """Return the number of committed episodes."""
        return len(self._episode_ends)

    @property
    def n_steps(self) -> int:
        """Total number of committed time steps over all episodes."""
        return int(self._episode_ends[-1]) if len(self._episode_ends) else 0

    @property
    def episode_lengths(self) -> np.ndarray:
        """Return the number of steps of every committed episode, int64 (n_episodes,)."""
        return np.diff(self._episode_ends, prepend=0)

    @property
    def keys(self) -> list[str]:
        """Names of the data arrays (``data/<key>``) and column selections, sorted."""
        return sorted(set(self._data_group().array_keys()) | set(self._columns))

    @property
    def attrs(self) -> dict[str, Any]:
        """Return a copy of the root attributes (free-form metadata)."""
        return dict(self._root.attrs)

    def episode_slice(self, index: int) -> slice:
        """Return the slice of the data arrays that holds episode ``index``."""
        n = self.n_episodes
        if n == 0:
            raise ValueError(f'replay buffer at {self._path} has no episodes ({EPISODE_ENDS} is '
                             f'empty)')
        if not -n <= index < n:
            raise IndexError(f'episode index must be in [{-n}, {n - 1}], got {index}')
        index %= n
        start = int(self._episode_ends[index - 1]) if index > 0 else 0
        return slice(start, int(self._episode_ends[index]))

    def get_episode(self, index: int) -> dict[str, np.ndarray]:
        """Return every data array of episode ``index`` as numpy arrays."""
        window = self.episode_slice(index)
        return {key: self.array(key)[window] for key in self.keys}

    def array(self, key: str) -> zarr.Array | SelectedColumns:
        """
        Return the zarr array ``data/<key>`` (or the column selection named ``key``).

        Only its first :attr:`n_steps` rows are committed: in read mode a store left by an
        interrupted writer may hold more, so slice with ``[:rb.n_steps]``.
        """
        if key in self._columns:
            return self._columns[key]
        node = self._data_group().get(key)
        if not isinstance(node, zarr.Array):
            raise ValueError(
                f'replay buffer at {self._path} has no array {DATA_GROUP}/{key}; '
                f'expected one of {self.keys}')
        return node

    # ------------------------------------------------------------------ writing

    def set_attrs(self, attrs: Mapping[str, Any]) -> None:
        """Merge ``attrs`` into the root attributes; values must be JSON-serialisable."""
        self._require_writable('set_attrs')
        try:
            json.dumps(dict(attrs))
        except (TypeError, ValueError) as error:
            raise ValueError(
                f'attrs must be JSON-serialisable, got {attrs!r} ({error})') from error
        self._root.attrs.update(dict(attrs))

    def add_episode(self, episode: Mapping[str, np.ndarray]) -> None:
        """
        Append one episode: ``{key: array (T, ...)}``, every array with the same T >= 1.

        Keys, per-step shapes and dtypes must match the arrays already stored (the first
        episode defines them). Everything is validated before anything is written.
        """
        self._require_writable('add_episode')
        arrays = self._validate_episode(episode)
        length = next(iter(arrays.values())).shape[0]
        start = self.n_steps
        end = start + length
        data = self._data_group()
        if self.n_episodes == 0:
            # No committed episode means no committed schema: arrays here are leftovers.
            for key in list(data.array_keys()):
                del data[key]
            for key, value in arrays.items():
                data.create_array(key, shape=(0,) + value.shape[1:], dtype=value.dtype,
                                  chunks=(chunk_steps(value.shape[1:], value.dtype),)
                                  + value.shape[1:])
        for key, value in arrays.items():
            target = data[key]
            # Sized from the committed length, not the array's: leftovers get overwritten.
            target.resize((end,) + value.shape[1:])
            target[start:end] = value
        self._commit_episode_end(end)

    def _commit_episode_end(self, end: int) -> None:
        """Make the episode ending at ``end`` visible; the last step of ``add_episode``."""
        ends = self._root[EPISODE_ENDS]
        n = self.n_episodes
        ends.resize((n + 1,))
        ends[n] = end
        self._episode_ends = np.append(self._episode_ends, np.int64(end))

    # ------------------------------------------------------------------ internals

    def _data_group(self) -> zarr.Group:
        return self._root[DATA_GROUP]

    def _require_writable(self, what: str) -> None:
        if self._mode != 'a':
            raise ValueError(f"{what} needs the replay buffer opened with mode='a', "
                             f'got mode={self._mode!r} ({self._path})')

    def _read_episode_ends(self) -> np.ndarray:
        stored = self._root[EPISODE_ENDS]
        if stored.ndim != 1 or not np.issubdtype(stored.dtype, np.integer):
            raise ValueError(f'{EPISODE_ENDS} must be a 1-D integer array, got shape '
                             f'{stored.shape} dtype {stored.dtype} ({self._path})')
        ends = np.asarray(stored[:], dtype=np.int64)
        lengths = np.diff(ends, prepend=0)
        bad = np.flatnonzero(lengths <= 0)
        if len(bad) and bad[0] == len(ends) - 1 and self._is_uncommitted_end(stored, ends):
            # A writer died between growing episode_ends and storing the new end.
            logger.warning('%s: last entry of %s (%d) is an unwritten slot after %d: an '
                           'interrupted add_episode; %s it', self._path, EPISODE_ENDS,
                           ends[-1], ends[-2] if len(ends) > 1 else 0,
                           'removing' if self._mode == 'a' else 'ignoring')
            ends = ends[:-1]
            if self._mode == 'a':
                stored.resize((len(ends),))
        elif len(bad):
            index = int(bad[0])
            previous = f'{EPISODE_ENDS}[{index - 1}] = {ends[index - 1]}' if index else '0'
            raise ValueError(
                f'replay buffer at {self._path}: {EPISODE_ENDS}[{index}] = {ends[index]} is not '
                f'greater than {previous}; expected strictly increasing cumulative episode ends '
                f'(each episode at least one step), the last equal to the data length')
        return ends

    def _is_uncommitted_end(self, stored: zarr.Array, ends: np.ndarray) -> bool:
        """
        Whether the last of ``ends`` is the slot a killed ``_commit_episode_end`` left unwritten.

        Such a slot holds the array's fill value and follows data arrays already extended past
        the previous end (``add_episode`` writes the data first). Any other non-increasing
        value is a corrupt store, not a crash to repair.
        """
        fill = 0 if stored.fill_value is None else int(stored.fill_value)
        previous = int(ends[-2]) if len(ends) > 1 else 0
        data = self._data_group()
        lengths = [data[key].shape[0] if data[key].ndim else 0 for key in data.array_keys()]
        return int(ends[-1]) == fill and bool(lengths) and min(lengths) > previous

    def _check_data_lengths(self) -> None:
        n_steps = self.n_steps
        data = self._data_group()
        for key in sorted(data.array_keys()):
            array = data[key]
            if array.ndim == 0 or array.shape[0] < n_steps:
                raise ValueError(
                    f'{DATA_GROUP}/{key} must hold at least {n_steps} steps '
                    f'({EPISODE_ENDS}[-1]), got shape {array.shape} ({self._path})')
            extra = array.shape[0] - n_steps
            if extra == 0:
                continue
            if self._mode == 'a':
                array.resize((n_steps,) + array.shape[1:])
                logger.warning('%s: discarded %d steps of %s/%s left by an interrupted '
                               'add_episode', self._path, extra, DATA_GROUP, key)
            else:
                logger.warning('%s: ignoring %d uncommitted steps of %s/%s left by an '
                               'interrupted add_episode', self._path, extra, DATA_GROUP, key)

    def _validate_episode(self, episode: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(episode, Mapping) or not episode:
            raise ValueError(f'episode must be a non-empty dict key -> array, got {episode!r}')
        arrays = {}
        for key, value in episode.items():
            if not isinstance(key, str) or not key or '/' in key or key.startswith('.'):
                raise ValueError(f'episode keys must be plain names (no "/"), got {key!r}')
            value = np.asarray(value)
            if value.dtype == object or value.dtype.kind in 'USV':
                raise ValueError(f'{DATA_GROUP}/{key} must be a numeric array, '
                                 f'got dtype {value.dtype}')
            if value.ndim == 0 or value.shape[0] == 0:
                raise ValueError(f'{DATA_GROUP}/{key} must have at least one step along axis 0, '
                                 f'got shape {value.shape}')
            arrays[key] = value
        lengths = {key: value.shape[0] for key, value in arrays.items()}
        if len(set(lengths.values())) > 1:
            raise ValueError(f'every array of an episode must have the same length along axis 0, '
                             f'got {lengths}')
        if self.n_episodes == 0:
            return arrays
        existing = {key: self._data_group()[key] for key in self.keys}
        missing = sorted(set(existing) - set(arrays))
        unexpected = sorted(set(arrays) - set(existing))
        if missing or unexpected:
            raise ValueError(
                f'episode keys must match the stored arrays {sorted(existing)}; missing '
                f'{[f"{DATA_GROUP}/{k}" for k in missing]}, unexpected '
                f'{[f"{DATA_GROUP}/{k}" for k in unexpected]}')
        for key, value in arrays.items():
            stored = existing[key]
            if value.shape[1:] != stored.shape[1:]:
                raise ValueError(
                    f'{DATA_GROUP}/{key} expects per-step shape {stored.shape[1:]}, got '
                    f'{value.shape[1:]} (array shape {value.shape})')
            if value.dtype != stored.dtype:
                raise ValueError(
                    f'{DATA_GROUP}/{key} expects dtype {stored.dtype}, got {value.dtype}')
        return arrays

    def __repr__(self) -> str:
        return (f'ReplayBuffer({str(self._path)!r}, mode={self._mode!r}, '
                f'n_episodes={self.n_episodes}, n_steps={self.n_steps}, keys={self.keys})')


def _zip_store(path: Path) -> ZipStore:
    """Open a zipped zarr store (Diffusion Policy's ``*.zarr.zip``) read-only."""
    if not zipfile.is_zipfile(path):
        raise ValueError(f'{path} is not a replay buffer: expected a zarr directory store or a '
                         f'zip of one (*.zarr.zip), got a file that is not a zip archive')
    return ZipStore(path, mode='r')


def _remove_store(path: Path) -> None:
    """Delete an existing zarr store (or empty directory) at ``path``; refuse anything else."""
    if path.is_dir():
        markers = ('.zgroup', '.zarray', 'zarr.json')
        if any(path.joinpath(name).exists() for name in markers):
            shutil.rmtree(path)
            return
        if not any(path.iterdir()):
            path.rmdir()
            return
    raise ValueError(f'refusing to overwrite {path}: it is not a zarr store or an empty '
                     f'directory')
