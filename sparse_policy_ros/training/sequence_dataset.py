"""
Fixed-length training windows over replay-buffer episodes, with edge padding.

Windows follow Diffusion Policy's sampler. For an episode of length L, a window starts at every
s in [-pad_before, L - horizon + pad_after] and covers steps s .. s + horizon - 1; steps before 0
repeat frame 0 and steps after L - 1 repeat frame L - 1. With horizon=16, n_obs_steps=2,
n_action_steps=8 (pad_before=1, pad_after=7)::

    first window:  steps -1 0 1 ... 14  -> frames 0 0 1 ... 14     (observations: 0 0)
    last window:   steps L-9 ... L+6    -> frames L-9 ... L-1 L-1 ... L-1

Observations are the first n_obs_steps steps of the window, actions the whole window, so the
first executed action (index n_obs_steps - 1) answers the newest observation.
"""

from collections.abc import Mapping, Sequence
import logging
import os

import numpy as np
import torch
from torch.utils.data import Dataset

from .replay_buffer import DATA_GROUP, ReplayBuffer
from ..policy.model import ACTION
from ..policy.observation import OBS_IMAGES, OBS_STATE

logger = logging.getLogger(__name__)

DEFAULT_IMAGE_KEYS = {'front': 'img'}  # camera name -> data/<key>


def split_episodes(n_episodes: int, val_ratio: float,
                   seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """
    Split episode indices into sorted (train, validation) int64 arrays.

    Deterministic for a given seed. The validation split gets round(n * val_ratio) episodes, at
    least one when val_ratio > 0 and n > 1, and never all of them: training keeps at least one.
    """
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, (int, np.integer)) \
            or n_episodes < 1:
        raise ValueError(f'n_episodes must be a positive int, got {n_episodes!r}')
    if not 0.0 <= val_ratio < 1.0:
        raise ValueError(f'val_ratio must be in [0, 1), got {val_ratio!r}')
    n_val = int(round(n_episodes * val_ratio))
    if val_ratio > 0:
        n_val = max(n_val, 1)
    n_val = min(n_val, n_episodes - 1)
    order = np.random.default_rng(seed).permutation(n_episodes)
    return np.sort(order[n_val:]).astype(np.int64), np.sort(order[:n_val]).astype(np.int64)


def compute_stats(replay_buffer: ReplayBuffer | str | os.PathLike, keys: Sequence[str],
                  episode_indices: Sequence[int] | np.ndarray
                  ) -> dict[str, dict[str, np.ndarray]]:
    """
    Per-dimension min and max of ``data/<key>`` over the given episodes (the training split).

    Returns ``{key: {'min': float32 array, 'max': float32 array}}`` with the per-step shape of
    the array, ready for min-max normalization to [-1, 1].
    """
    buffer = _as_replay_buffer(replay_buffer)
    episodes = _check_episode_indices(episode_indices, buffer)
    if isinstance(keys, str) or not keys:
        raise ValueError(f'keys must be a non-empty list of array names, got {keys!r}')
    stats = {}
    for key in keys:
        _require_key(buffer, key)
        array = buffer.array(key)
        lo = hi = None
        for episode in episodes:
            values = np.asarray(array[buffer.episode_slice(int(episode))])
            _require_finite(values, buffer, key, np.array([episode]), np.array([len(values)]))
            ep_lo, ep_hi = values.min(axis=0), values.max(axis=0)
            lo = ep_lo if lo is None else np.minimum(lo, ep_lo)
            hi = ep_hi if hi is None else np.maximum(hi, ep_hi)
        stats[key] = {'min': lo.astype(np.float32), 'max': hi.astype(np.float32)}
    return stats


class SequenceDataset(Dataset):
    """
    Padded windows of (images, state, action) from a replay buffer, held in memory.

    Each item::

        {
            'images': {camera: uint8 tensor (n_obs_steps, 3, H, W)},
            'state': float32 tensor (n_obs_steps, state_dim),
            'action': float32 tensor (horizon, action_dim),
        }

    Values are raw; normalization belongs to the policy (see :func:`compute_stats`).
    """

    def __init__(self, replay_buffer: ReplayBuffer | str | os.PathLike, *,
                 image_keys: Mapping[str, str] | None = None,
                 state_key: str = 'state',
                 action_key: str = 'action',
                 horizon: int = 16,
                 n_obs_steps: int = 2,
                 n_action_steps: int = 8,
                 pad_before: int | None = None,
                 pad_after: int | None = None,
                 episode_indices: Sequence[int] | np.ndarray | None = None):
        """
        Validate everything, load the selected episodes and index every window.

        ``pad_before`` defaults to ``n_obs_steps - 1`` and ``pad_after`` to
        ``n_action_steps - 1``; ``episode_indices`` defaults to every episode.
        """
        for name, value in (('horizon', horizon), ('n_obs_steps', n_obs_steps),
                            ('n_action_steps', n_action_steps)):
            _check_int(name, value, minimum=1)
        if n_obs_steps > horizon:
            raise ValueError(f'n_obs_steps must be <= horizon ({horizon}), got {n_obs_steps}')
        pad_before = n_obs_steps - 1 if pad_before is None else pad_before
        pad_after = n_action_steps - 1 if pad_after is None else pad_after
        for name, value in (('pad_before', pad_before), ('pad_after', pad_after)):
            _check_int(name, value, minimum=0)
            if value >= horizon:
                raise ValueError(f'{name} must be < horizon ({horizon}) so that every window '
                                 f'holds a real step, got {value}')
        image_keys = dict(DEFAULT_IMAGE_KEYS if image_keys is None else image_keys)
        self.horizon = horizon
        self.n_obs_steps = n_obs_steps
        self.pad_before = pad_before
        self.pad_after = pad_after
        self.image_keys = image_keys

        buffer = _as_replay_buffer(replay_buffer)
        episodes = _check_episode_indices(
            range(buffer.n_episodes) if episode_indices is None else episode_indices, buffer)
        self.episode_indices = episodes
        for key in [*image_keys.values(), state_key, action_key]:
            _require_key(buffer, key)
        for camera, key in image_keys.items():
            array = buffer.array(key)
            if array.dtype != np.uint8 or array.ndim != 4 or array.shape[-1] != 3:
                raise ValueError(
                    f'{DATA_GROUP}/{key} (camera {camera!r}) must be uint8 (T, H, W, 3), got '
                    f'{array.dtype} {array.shape}')
        for field, key in ((OBS_STATE, state_key), (ACTION, action_key)):
            array = buffer.array(key)
            if array.ndim != 2 or not np.issubdtype(array.dtype, np.floating):
                raise ValueError(
                    f'{DATA_GROUP}/{key} ({field}) must be a 2-D float array (T, D), got '
                    f'{array.dtype} {array.shape}')

        # Only the selected episodes, back to back: local_ends[i] ends episode episodes[i].
        slices = [buffer.episode_slice(int(i)) for i in episodes]
        lengths = np.array([s.stop - s.start for s in slices], dtype=np.int64)
        self._images = {
            camera: np.ascontiguousarray(np.moveaxis(_load(buffer, key, slices), -1, 1))
            for camera, key in image_keys.items()}  # (T, 3, H, W)
        self._state = _load(buffer, state_key, slices).astype(np.float32, copy=False)
        self._action = _load(buffer, action_key, slices).astype(np.float32, copy=False)
        for key, values in ((state_key, self._state), (action_key, self._action)):
            _require_finite(values, buffer, key, episodes, lengths)
        self._windows = self._index_windows(lengths)
        if len(self._windows) == 0:
            raise ValueError(
                f'no training windows: horizon ({horizon}) is too long for episodes of at most '
                f'{lengths.max()} steps with pad_before={pad_before}, pad_after={pad_after} '
                f'(need length >= horizon - pad_before - pad_after = '
                f'{horizon - pad_before - pad_after})')
        logger.info('SequenceDataset: %d episodes, %d steps, %d windows of %d steps',
                    len(episodes), int(lengths.sum()), len(self._windows), horizon)

    def _index_windows(self, lengths: np.ndarray) -> np.ndarray:
        """Return the step indices of every window, int64 (n_windows, horizon)."""
        offsets = np.arange(self.horizon)
        windows = []
        skipped = 0
        start = 0
        for length in lengths:
            starts = np.arange(-self.pad_before, length - self.horizon + self.pad_after + 1)
            if len(starts) == 0:
                skipped += 1
            steps = np.clip(starts[:, None] + offsets[None, :], 0, length - 1)  # (n, horizon)
            windows.append(start + steps)
            start += length
        if skipped:
            logger.warning('SequenceDataset: %d of %d episodes are too short for horizon %d '
                           '(pad_before=%d, pad_after=%d) and give no windows', skipped,
                           len(lengths), self.horizon, self.pad_before, self.pad_after)
        return np.concatenate(windows).astype(np.int64)

    def __len__(self) -> int:
        """Return the number of windows."""
        return len(self._windows)

    def __getitem__(self, index: int) -> dict:
        """Return window ``index`` as tensors (see the class docstring)."""
        steps = self._windows[index]
        obs_steps = steps[:self.n_obs_steps]
        # Fancy indexing copies, so the tensors own their memory.
        return {
            OBS_IMAGES: {camera: torch.from_numpy(images[obs_steps])
                         for camera, images in self._images.items()},
            OBS_STATE: torch.from_numpy(self._state[obs_steps]),
            ACTION: torch.from_numpy(self._action[steps]),
        }

    def window_steps(self, index: int) -> np.ndarray:
        """Return the in-memory step indices (horizon,) that window ``index`` reads."""
        return self._windows[index].copy()


def _as_replay_buffer(replay_buffer: ReplayBuffer | str | os.PathLike) -> ReplayBuffer:
    if isinstance(replay_buffer, ReplayBuffer):
        buffer = replay_buffer
    elif isinstance(replay_buffer, (str, os.PathLike)):
        buffer = ReplayBuffer.open(replay_buffer, mode='r')
    else:
        raise TypeError(f'expected a ReplayBuffer or a path, got {type(replay_buffer).__name__}')
    if buffer.n_episodes == 0:
        raise ValueError(f'replay buffer at {buffer.path} is empty: meta/episode_ends has no '
                         f'episodes')
    return buffer


def _check_episode_indices(indices: Sequence[int] | np.ndarray,
                           buffer: ReplayBuffer) -> np.ndarray:
    indices = np.asarray(list(indices) if isinstance(indices, range) else indices)
    if indices.ndim != 1 or len(indices) == 0:
        raise ValueError(f'episode_indices must be a non-empty 1-D list, got {indices!r}')
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f'episode_indices must be integers, got dtype {indices.dtype}')
    bad = indices[(indices < 0) | (indices >= buffer.n_episodes)]
    if len(bad):
        raise ValueError(f'episode_indices must be in [0, {buffer.n_episodes - 1}], got '
                         f'{bad.tolist()}')
    if len(np.unique(indices)) != len(indices):
        raise ValueError(f'episode_indices must not repeat, got {indices.tolist()}')
    return indices.astype(np.int64)


def _require_key(buffer: ReplayBuffer, key: str) -> None:
    if key not in buffer.keys:
        raise ValueError(f'replay buffer at {buffer.path} has no array {DATA_GROUP}/{key}; '
                         f'expected one of {[f"{DATA_GROUP}/{k}" for k in buffer.keys]}')


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f'{name} must be an int >= {minimum}, got {value!r}')


def _require_finite(values: np.ndarray, buffer: ReplayBuffer, key: str, episodes: np.ndarray,
                    lengths: np.ndarray) -> None:
    """Name the episodes and first step of NaN/inf rows of ``values`` (episodes back to back)."""
    if not np.issubdtype(values.dtype, np.floating):
        return
    finite = np.isfinite(values).reshape(len(values), -1).all(axis=1)  # (T,)
    if finite.all():
        return
    rows = np.flatnonzero(~finite)
    ends = np.cumsum(lengths)
    which = np.searchsorted(ends, rows, side='right')  # position in ``episodes`` of each row
    first_step = int(rows[0] - (ends[which[0] - 1] if which[0] else 0))
    bad = sorted({int(episodes[i]) for i in which})
    count = int((~np.isfinite(values)).sum())
    raise ValueError(
        f'replay buffer at {buffer.path}: {DATA_GROUP}/{key} holds {count} non-finite values '
        f'(NaN or inf) in episode(s) {bad[:10]}{" ..." if len(bad) > 10 else ""}, the first at '
        f'step {first_step} of episode {int(episodes[which[0]])}; expected finite values '
        f'(drop or re-record those episodes)')


def _load(buffer: ReplayBuffer, key: str, slices: list[slice]) -> np.ndarray:
    array = buffer.array(key)
    if slices[0].start == 0 and slices[-1].stop == buffer.n_steps and all(
            a.stop == b.start for a, b in zip(slices, slices[1:])):
        return np.asarray(array[:buffer.n_steps])  # every episode in order: one read
    return np.concatenate([np.asarray(array[s]) for s in slices])
