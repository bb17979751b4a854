"""
Read-only column views of replay-buffer arrays: ``state=state[:, :2]`` without copying a store.

A :class:`ColumnSelection` names a source array ``data/<source>``, a column range along axis 1
and an optional dtype; :class:`SelectedColumns` serves it with the ``shape``/``dtype``/slicing
that the dataset layer reads. PushT's Diffusion Policy store, for example, feeds the agent
position (``state[:, :2]``) as the policy state and its float 0..255 images as uint8::

    ReplayBuffer.open('pusht_cchi_v7_replay.zarr.zip', columns={
        'state': ColumnSelection('state', 0, 2), 'img': ColumnSelection('img', dtype='uint8')})
"""

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import zarr

SELECTION_FORMAT = 'DST=SRC[:START:STOP][@DTYPE], e.g. state=state:0:2 or img=img@uint8'


@dataclass(frozen=True)
class ColumnSelection:
    """A read-only view of ``data/<source>``: columns ``start:stop`` of axis 1, cast on read."""

    source: str  # data/<source> to read
    start: int | None = None  # first column along axis 1 (None: from the first)
    stop: int | None = None  # one past the last column (None: to the end)
    dtype: str | None = None  # cast on read, e.g. 'uint8' for float 0..255 images

    def __str__(self) -> str:
        """Return the selection in the ``--select`` syntax, without the name."""
        columns = ('' if self.start is None and self.stop is None else
                   f':{"" if self.start is None else self.start}:'
                   f'{"" if self.stop is None else self.stop}')
        return f'{self.source}{columns}{"" if self.dtype is None else "@" + self.dtype}'


def parse_column_selection(text: str) -> tuple[str, ColumnSelection]:
    """
    Parse ``DST=SRC[:START:STOP][@DTYPE]`` (CLI ``--select``) into (DST, selection).

    ``state=state:0:2`` is ``state[:, 0:2]``; START or STOP may be empty (``state=state::2``);
    ``img=img@uint8`` casts (floats are rounded and clipped to the integer range).
    """
    name, sep, spec = text.partition('=')
    spec, at, dtype = spec.partition('@')
    source, *bounds = spec.split(':')
    if not sep or not name or not source or (at and not dtype) or len(bounds) not in (0, 2):
        raise ValueError(f'column selection {text!r}: expected {SELECTION_FORMAT}')
    try:
        start, stop = (int(b) if b else None for b in bounds) if bounds else (None, None)
    except ValueError:
        raise ValueError(f'column selection {text!r}: START and STOP must be integers; '
                         f'expected {SELECTION_FORMAT}') from None
    return name, ColumnSelection(source, start, stop, dtype or None)


def parse_column_selections(texts: list[str] | None) -> dict[str, ColumnSelection]:
    """Parse repeated ``--select`` values; a name selected twice is an error."""
    selections: dict[str, ColumnSelection] = {}
    for text in texts or []:
        name, selection = parse_column_selection(text)
        if name in selections:
            raise ValueError(f'column selection {text!r}: {name!r} is already selected as '
                             f'{selections[name]}; expected each DST once')
        selections[name] = selection
    return selections


class SelectedColumns:
    """Read-only array-like over a :class:`ColumnSelection` (``shape``, ``dtype``, slicing)."""

    def __init__(self, source: zarr.Array, selection: ColumnSelection):
        self._source = source
        self.selection = selection
        self._columns = (None if selection.start is None and selection.stop is None
                         else slice(selection.start, selection.stop))
        self.dtype = np.dtype(selection.dtype or source.dtype)
        shape = tuple(source.shape)
        if self._columns is not None and len(shape) >= 2:
            shape = (shape[0], len(range(*self._columns.indices(shape[1])))) + shape[2:]
        self.shape = shape
        self.ndim = len(shape)

    def __getitem__(self, rows: Any) -> np.ndarray:
        """Read ``rows`` (an index along time) of the selected columns."""
        values = np.asarray(self._source[rows])
        if self._columns is not None:
            # An int row index drops the time axis: the columns are then axis 0.
            leading = values.ndim - self._source.ndim + 1
            values = values[(slice(None),) * leading + (self._columns,)]
        if values.dtype == self.dtype:
            return values
        if np.issubdtype(self.dtype, np.integer) and np.issubdtype(values.dtype, np.floating):
            info = np.iinfo(self.dtype)
            values = np.clip(np.rint(values), info.min, info.max)
        return values.astype(self.dtype)

    def __len__(self) -> int:
        """Return the number of rows."""
        return self.shape[0]


def select_columns(data: zarr.Group, selections: Mapping[str, ColumnSelection],
                   path: Path) -> dict[str, SelectedColumns]:
    """Check ``selections`` against the arrays of ``data`` (the store at ``path``); view each."""
    views = {}
    for name, selection in selections.items():
        where = f'column selection {name}={selection} ({path})'
        if not isinstance(selection, ColumnSelection):
            raise TypeError(f'column selection {name!r} ({path}): expected a ColumnSelection, '
                            f'got {type(selection).__name__}')
        if not isinstance(name, str) or not name or '/' in name:
            raise ValueError(f'{where}: expected a plain name (no "/") to select into, got '
                             f'{name!r}')
        source = data.get(selection.source)
        if not isinstance(source, zarr.Array):
            raise ValueError(f'{where}: no array data/{selection.source}; expected one of '
                             f'{sorted(data.array_keys())}')
        try:
            dtype = np.dtype(selection.dtype or source.dtype)
        except TypeError:
            raise ValueError(f'{where}: dtype {selection.dtype!r} is not a numpy dtype; '
                             f'expected e.g. float32 or uint8') from None
        if dtype.kind not in 'biuf':
            raise ValueError(f'{where}: expected a numeric dtype, got {dtype}')
        ranged = selection.start is not None or selection.stop is not None
        if ranged and source.ndim < 2:
            raise ValueError(f'{where}: data/{selection.source} has shape {source.shape}; '
                             f'selecting columns needs an array (T, D, ...)')
        view = SelectedColumns(source, selection)
        if ranged and view.shape[1] == 0:
            raise ValueError(f'{where}: selects no column of data/{selection.source}, shape '
                             f'{source.shape}; expected START:STOP within [0, '
                             f'{source.shape[1]}]')
        views[name] = view
    return views
