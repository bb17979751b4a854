"""
Receding-horizon bookkeeping on the control grid: which chunk's action runs at each step.

A policy call answers the observation of control step ``s``; row ``r`` of its chunk is the
action of step ``s - (n_obs_steps - 1) + r`` (row ``n_obs_steps - 1`` answers ``s`` itself,
the last executable row is step ``s + n_action_steps - 1``). A chunk takes over from the first
step it can still reach, ``s + d`` for a call that took ``d`` control steps (``d = 0`` in a
synchronous evaluation); until then the previous plan keeps running.

Consistency between consecutive chunks (issue 21), chosen by ``StreamSettings.method``:

* ``none``: each chunk replaces the plan from its take-over step (independent samples).
* ``prefix``: the new call is conditioned on what is already committed (``prefix``, used with
  ``policy/prefix.py``): the actions executed at the steps its observation history covers,
  those that will execute while it computes (steps ``s .. s + d - 1``) and ``prefix_steps``
  further planned ones, as in real-time chunking; the rest of the chunk is inpainted.
* ``ensemble``: temporal ensembling (ACT): the action of a step is the average of every
  chunk's prediction for it, weighted ``exp(-decay * i)`` with ``i = 0`` the oldest chunk.
* ``warm``: the new call starts from the current plan shifted to its rows (``warm_rows``),
  re-noised to an intermediate level, and skips the first ``warm_start`` of its denoising
  steps (``policy/warm_start.py``); each chunk then replaces the plan as with ``none``.

:class:`ChunkStream` is numpy only, so the simulator's evaluation and the policy node share it.
"""

from dataclasses import dataclass
import math

import numpy as np

CONSISTENCY_METHODS = ('none', 'prefix', 'ensemble', 'warm')


@dataclass(frozen=True)
class StreamSettings:
    """How consecutive chunks are reconciled (see the module docstring)."""

    method: str = 'none'
    prefix_steps: int = 3  # planned actions beyond the inference delay kept in a new chunk
    prefix_until: float = 1.0  # fraction of the denoising steps the prefix is imposed on
    ensemble_decay: float = 0.1  # ACT's m; 0 = plain average
    warm_start: float = 0.5  # warm: fraction of the denoising steps skipped, in [0, 1)

    def __post_init__(self):
        """Refuse settings that cannot be used, naming the field."""
        if self.method not in CONSISTENCY_METHODS:
            raise ValueError(f'consistency method must be one of {list(CONSISTENCY_METHODS)}, '
                             f'got {self.method!r}')
        if (isinstance(self.prefix_steps, bool) or not isinstance(self.prefix_steps, int)
                or self.prefix_steps < 0):
            raise ValueError(f'prefix_steps must be an int >= 0, got {self.prefix_steps!r}')
        if not isinstance(self.prefix_until, (int, float)) or not 0 < self.prefix_until <= 1:
            raise ValueError(f'prefix_until must be in (0, 1], got {self.prefix_until!r}')
        if not isinstance(self.ensemble_decay, (int, float)) or not (
                math.isfinite(self.ensemble_decay) and self.ensemble_decay >= 0):
            raise ValueError(f'ensemble_decay must be a finite number >= 0, got '
                             f'{self.ensemble_decay!r}')
        if (isinstance(self.warm_start, bool) or not isinstance(self.warm_start, (int, float))
                or not 0.0 <= self.warm_start < 1.0):
            raise ValueError(f'warm_start must be a fraction in [0, 1), got '
                             f'{self.warm_start!r}')


def delay_steps(latency_s: float, control_period: float) -> int:
    """
    Control steps a chunk misses when it arrives ``latency_s`` after its observation.

    The controller holds action ``k`` of a chunk from ``k * control_period`` after the
    observation, so the first action the chunk can still set is the first one starting at or
    after its arrival: ``ceil(latency / period)`` (0 for a synchronous call).
    """
    if not (math.isfinite(latency_s) and latency_s >= 0):
        raise ValueError(f'latency must be a finite number of seconds >= 0, got {latency_s!r}')
    if not (math.isfinite(control_period) and control_period > 0):
        raise ValueError(f'control_period must be > 0 s, got {control_period!r}')
    return int(math.ceil(latency_s / control_period - 1e-9))


class ChunkStream:
    """The plan on the control grid, built from chunks, with the consistency method applied."""

    def __init__(self, n_obs_steps: int, n_action_steps: int,
                 settings: StreamSettings | None = None):
        if n_obs_steps < 1 or n_action_steps < 1:
            raise ValueError(f'n_obs_steps and n_action_steps must be >= 1, got {n_obs_steps} '
                             f'and {n_action_steps}')
        self.n_obs_steps = n_obs_steps
        self.n_action_steps = n_action_steps
        self.settings = settings or StreamSettings()
        self.reset()

    def reset(self) -> None:
        """Forget every plan and executed action (a new episode)."""
        self._plan: dict[int, np.ndarray] = {}  # step -> action of the chunk in charge
        # step -> every chunk's action for it, oldest chunk first (ensembling)
        self._votes: dict[int, list[np.ndarray]] = {}
        self._executed: dict[int, np.ndarray] = {}
        self.last_splice: float | None = None

    def add(self, actions: np.ndarray, obs_step: int, first_step: int | None = None) -> int:
        """
        Take a chunk answering the observation of ``obs_step``; it runs from ``first_step``.

        ``first_step`` (default ``obs_step``) is the first step the chunk can still set
        (``obs_step + delay_steps(...)``). Returns how many executable actions it planned
        (0: it arrived after its last one). ``last_splice``: the largest joint difference
        between this chunk and the plan it replaced at the take-over step (None when no plan
        was running there).
        """
        actions = np.asarray(actions)
        first = obs_step if first_step is None else first_step
        if first < obs_step:
            raise ValueError(f'first_step {first} is before the observation step {obs_step}')
        origin = obs_step - (self.n_obs_steps - 1)
        last = obs_step + self.n_action_steps - 1
        if actions.ndim != 2 or actions.shape[0] < last - origin + 1:
            raise ValueError(f'chunk must have shape (>= {last - origin + 1}, dof), got '
                             f'{actions.shape}')
        planned = 0
        self.last_splice = None
        for step in range(first, last + 1):
            row = actions[step - origin]
            if self.settings.method == 'ensemble':
                self._votes.setdefault(step, []).append(row)
            if step == first and step in self._plan:
                self.last_splice = float(np.max(np.abs(row - self._plan[step])))
            self._plan[step] = row
            planned += 1
        # Steps past this chunk's last action keep nothing of older chunks: the plan ends here.
        for step in [s for s in self._plan if s > last]:
            del self._plan[step]
        return planned

    def planned(self, step: int) -> bool:
        """Whether the plan has an action for ``step``."""
        return step in self._plan

    def commit(self, step: int) -> np.ndarray | None:
        """
        Return the action to execute at ``step`` and record it as executed (None: no plan).

        ``ensemble``: the weighted average of every chunk's prediction for the step among the
        chunks that planned it or an earlier step still running; otherwise the plan's action.
        """
        if step not in self._plan:
            return None
        action = self._plan[step]
        if self.settings.method == 'ensemble':
            votes = self._votes.get(step, [])
            weights = np.exp(-self.settings.ensemble_decay * np.arange(len(votes)))
            stacked = np.stack(votes)
            action = (weights[:, None] * stacked).sum(0) / weights.sum()
        action = np.asarray(action, dtype=np.float64)
        self._executed[step] = action
        for old in [s for s in self._votes if s < step - self.n_obs_steps]:
            del self._votes[old]
        for old in [s for s in self._executed if s < step - self.n_obs_steps]:
            del self._executed[old]
        return action

    def record_hold(self, step: int, action: np.ndarray) -> None:
        """Record what ran at a step without a plan (the held targets), for later prefixes."""
        self._executed[step] = np.asarray(action, dtype=np.float64)

    def prefix_rows(self, obs_step: int, delay: int) -> np.ndarray | None:
        """
        Return the committed actions for a call at ``obs_step`` that takes ``delay`` steps.

        Rows from chunk row 0: the executed actions of the history steps before ``obs_step``,
        then the planned actions of steps ``obs_step .. obs_step + delay - 1`` (they run while
        the call computes) and of ``prefix_steps`` steps after, as far as they are known
        without a gap. None when nothing is known (the first call of an episode). Returns
        None unless the method is ``prefix``.
        """
        if self.settings.method != 'prefix':
            return None
        origin = obs_step - (self.n_obs_steps - 1)
        rows = []
        for step in range(origin, obs_step + delay + self.settings.prefix_steps):
            if step < obs_step:
                row = self._executed.get(step)
            else:
                row = self._plan.get(step)
            if row is None:
                break
            rows.append(np.asarray(row, dtype=np.float32))
        return np.stack(rows) if rows else None

    def warm_rows(self, obs_step: int, horizon: int) -> np.ndarray | None:
        """
        Return the guess of every row of a call at ``obs_step`` (``warm``), or None.

        Row ``r`` plans step ``obs_step - (n_obs_steps - 1) + r``: the executed action for a
        history step, the plan's for a later one, and past the plan's end its last action
        (the arm would hold there). None when the plan has nothing at ``obs_step`` (the first
        call of an episode, or after a gap) or the method is not ``warm``.
        """
        if self.settings.method != 'warm' or obs_step not in self._plan:
            return None
        origin = obs_step - (self.n_obs_steps - 1)
        rows = []
        for step in range(origin, origin + horizon):
            row = self._executed.get(step) if step < obs_step else self._plan.get(step)
            if row is None:
                row = rows[-1] if step > obs_step else self._plan[obs_step]
            rows.append(np.asarray(row, dtype=np.float32))
        return np.stack(rows)
