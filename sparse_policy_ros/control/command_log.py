"""
What the node commanded, in continuous time: the plans it replaced and the one running.

A streaming node (issue 21) conditions each new chunk on the actions already committed: the
targets the controller followed at the steps its observation history covers, and those the
running plan holds for the steps that execute while the new chunk is computed. The node's
time line is continuous (observation stamps come at the camera's rate, not on a control grid),
so the committed rows are read off the commanded trajectories at the chunk's own row times,
``t_obs + (r - (n_obs_steps - 1)) * control_period`` (:func:`committed_rows`).

:class:`CommandLog` keeps each replaced :class:`TrajectoryFollower` with the time it stopped
being followed; a follower is immutable once replaced (``set_trajectory`` builds new arrays),
so keeping a shallow copy is exact. Numpy only: the simulator's evaluation can use it too.
"""

import copy

import numpy as np

from .trajectory_follower import TrajectoryFollower


class CommandLog:
    """Replaced trajectories and when each stopped being followed, newest last."""

    def __init__(self, keep_s: float):
        """Keep what was commanded over the last ``keep_s`` seconds (> 0)."""
        if not keep_s > 0:
            raise ValueError(f'keep_s must be > 0 s, got {keep_s!r}')
        self.keep_s = float(keep_s)
        self._replaced: list[tuple[float, TrajectoryFollower]] = []  # (until, follower)

    def clear(self) -> None:
        """Forget every replaced plan (a new episode, a reset)."""
        self._replaced = []

    def replaced(self, follower: TrajectoryFollower, at: float) -> None:
        """Record that ``follower``'s trajectory stopped being followed at ``at``."""
        if follower.active:
            self._replaced.append((float(at), copy.copy(follower)))
        self._replaced = [(until, old) for until, old in self._replaced
                          if until > at - self.keep_s]

    def sample(self, t: float, current: TrajectoryFollower) -> np.ndarray | None:
        """
        Commanded positions at ``t``: the plan that was being followed then (None: nothing).

        Before the oldest kept plan began, that plan's anchor (where it started from) stands
        for the earlier command.
        """
        for until, old in self._replaced:
            if t < until:
                return old.sample(t)
        return current.sample(t)


def committed_rows(log: CommandLog, current: TrajectoryFollower, observation_stamp: float,
                   control_period: float, n_obs_steps: int, future_rows: int, now: float,
                   plan_end: float | None) -> np.ndarray | None:
    """
    Rows of a chunk answering ``observation_stamp`` that are already committed (joint units).

    Row ``r`` is due at ``observation_stamp + (r - (n_obs_steps - 1)) * control_period``. The
    history rows (``r < n_obs_steps - 1``) and every row due by ``now`` are what was commanded
    then; later rows, up to ``future_rows`` rows after the history, come from the running plan
    as long as they are due no later than ``plan_end`` (the last of the policy's points in it,
    not its braking stop). Stops at the first row nothing covers; None when no row is known.
    """
    if n_obs_steps < 1 or future_rows < 0:
        raise ValueError(f'n_obs_steps must be >= 1 and future_rows >= 0, got {n_obs_steps} '
                         f'and {future_rows}')
    rows = []
    for r in range(n_obs_steps - 1 + future_rows):
        t = observation_stamp + (r - (n_obs_steps - 1)) * control_period
        if t > now and (plan_end is None or t > plan_end + 1e-9):
            break
        position = log.sample(t, current)
        if position is None:
            break
        rows.append(np.asarray(position, dtype=np.float32))
    return np.stack(rows) if rows else None
