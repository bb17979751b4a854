"""
Time-aligned observation history for the policy, built from stamped images and joint states.

The policy wants ``n_obs_steps`` observations one control period apart. Cameras and joint
states arrive at their own rates, so the buffer keeps a short stamped history of each and
samples it at the policy's period::

    time ------------------------------------------------------------------>
    camera:  |      |      |      |      |      |      |        (e.g. 30 Hz)
    joints:  ||||||||||||||||||||||||||||||||||||||||||||||     (e.g. 100 Hz)
    steps:            t_new - period            t_new          (n_obs_steps = 2)

``t_new`` is the newest time at which every camera has a frame (the oldest of the cameras'
latest stamps) and a joint state lies within ``pair_tolerance``; each earlier step takes the
frame and joint state closest to ``t_new - k * period`` (never more than ``pair_tolerance``
after ``t_new``). Early in a run, when the history is
shorter than the policy's, the oldest frame fills the missing steps (like padding with the
first observation). Pure numpy: no ROS import, times are float seconds.
"""

import bisect
from dataclasses import dataclass

import numpy as np

from ..policy.observation import OBS_IMAGES, OBS_STATE


@dataclass(frozen=True)
class AssembledObservation:
    """A policy observation plus the times it was sampled at."""

    observation: dict  # {OBS_IMAGES: {camera: uint8 (T, H, W, 3)}, OBS_STATE: float32 (T, D)}
    stamp: float  # time of the newest step (t_new): the time the chunk answers
    step_times: np.ndarray  # (T,) target time of each step, oldest first
    max_skew: float  # largest |sample stamp - target time| over all sources and steps

    @property
    def latest_state(self) -> np.ndarray:
        """Joint positions at the newest step, (state_dim,)."""
        return self.observation[OBS_STATE][-1]


class _StampedSeries:
    """Samples of one source kept sorted by stamp."""

    def __init__(self):
        self.stamps: list[float] = []
        self.values: list[np.ndarray] = []

    def add(self, stamp: float, value: np.ndarray) -> None:
        index = bisect.bisect_left(self.stamps, stamp)
        if index < len(self.stamps) and self.stamps[index] == stamp:
            self.values[index] = value  # same stamp twice: the newer message wins
            return
        self.stamps.insert(index, stamp)
        self.values.insert(index, value)

    def prune_before(self, stamp: float, keep_at_least: int) -> None:
        cut = min(bisect.bisect_left(self.stamps, stamp), len(self.stamps) - keep_at_least)
        if cut > 0:
            del self.stamps[:cut]
            del self.values[:cut]

    @property
    def latest(self) -> float | None:
        return self.stamps[-1] if self.stamps else None

    def closest(self, target: float, not_after: float) -> int:
        """
        Index of the sample nearest ``target`` among those stamped at or before ``not_after``.

        Assumes at least one such sample exists.
        """
        end = bisect.bisect_right(self.stamps, not_after)
        index = bisect.bisect_left(self.stamps, target, 0, end)
        if index == end:
            return end - 1
        if index > 0 and target - self.stamps[index - 1] <= self.stamps[index] - target:
            return index - 1
        return index


class ObservationBuffer:
    """Stamped history of camera images and joint positions, sampled at the control period."""

    def __init__(self, camera_names: tuple[str, ...] | list[str], state_dim: int,
                 n_obs_steps: int, control_period: float,
                 pair_tolerance: float | None = None, history_margin: float = 1.0):
        """
        Create an empty buffer.

        ``camera_names`` are the policy's cameras in its order, ``state_dim`` the joint
        positions per joint state, ``n_obs_steps`` the history length T and
        ``control_period`` the seconds between policy steps (1 / control_hz).
        ``pair_tolerance`` is the largest |joint stamp - image stamp| accepted for the newest
        step (default one control period); ``history_margin`` the seconds of history kept
        beyond the policy's window.
        """
        if n_obs_steps < 1:
            raise ValueError(f'n_obs_steps must be >= 1, got {n_obs_steps}')
        if not control_period > 0:
            raise ValueError(f'control_period must be > 0 s, got {control_period}')
        self.camera_names = tuple(camera_names)
        self.state_dim = int(state_dim)
        self.n_obs_steps = int(n_obs_steps)
        self.control_period = float(control_period)
        self.pair_tolerance = (self.control_period if pair_tolerance is None
                               else float(pair_tolerance))
        self._window = (self.n_obs_steps - 1) * self.control_period + history_margin
        self._images = {camera: _StampedSeries() for camera in self.camera_names}
        self._joints = _StampedSeries()

    def clear(self) -> None:
        """Forget every image and joint state."""
        self._images = {camera: _StampedSeries() for camera in self.camera_names}
        self._joints = _StampedSeries()

    def add_image(self, camera: str, stamp: float, image: np.ndarray) -> None:
        """Store an RGB uint8 (H, W, 3) frame of ``camera`` taken at ``stamp``."""
        if camera not in self._images:
            raise ValueError(f'camera must be one of {list(self.camera_names)}, got {camera!r}')
        series = self._images[camera]
        series.add(float(stamp), image)
        series.prune_before(series.latest - self._window, keep_at_least=2)

    def add_joint_state(self, stamp: float, positions: np.ndarray) -> None:
        """Store joint positions (state_dim,) measured at ``stamp``."""
        positions = np.array(positions, dtype=np.float64)  # exact copy; float32 at assembly
        if positions.shape != (self.state_dim,):
            raise ValueError(
                f'joint positions must have shape ({self.state_dim},), got {positions.shape}')
        self._joints.add(float(stamp), positions)
        self._joints.prune_before(self._joints.latest - self._window, keep_at_least=2)

    def missing_sources(self) -> list[str]:
        """Names of the sources with no data yet ('joint_states' or camera names)."""
        missing = [camera for camera in self.camera_names if self._images[camera].latest is None]
        if self._joints.latest is None:
            missing.append('joint_states')
        return missing

    def latest_joint_state(self) -> tuple[float, np.ndarray] | None:
        """(stamp, positions) of the newest joint state, or None."""
        if self._joints.latest is None:
            return None
        return self._joints.stamps[-1], self._joints.values[-1]

    def newest_stamp(self) -> float | None:
        """Stamp of the oldest among every source's newest sample: how fresh the data is."""
        if self.missing_sources():
            return None
        latest = [self._images[camera].latest for camera in self.camera_names]
        latest.append(self._joints.latest)
        return min(latest)

    def stalest_source(self) -> str | None:
        """Name of the source whose newest sample is oldest ('joint_states' or a camera)."""
        if self.missing_sources():
            return None
        latest = {camera: self._images[camera].latest for camera in self.camera_names}
        latest['joint_states'] = self._joints.latest
        return min(latest, key=latest.get)

    def age(self, now: float) -> float | None:
        """Seconds since the stalest source last reported; None while a source is missing."""
        newest = self.newest_stamp()
        return None if newest is None else now - newest

    def assemble(self) -> AssembledObservation:
        """Sample the history at the control period; raise LookupError when incomplete."""
        missing = self.missing_sources()
        if missing:
            raise LookupError(f'no data yet from {missing}')
        t_new = min((self._images[camera].latest for camera in self.camera_names),
                    default=self._joints.latest)  # a state-only policy: the joint state
        joint_index = self._joints.closest(t_new, not_after=np.inf)
        skew = abs(self._joints.stamps[joint_index] - t_new)
        if skew > self.pair_tolerance:
            raise LookupError(
                f'no joint state within {self.pair_tolerance:.3f} s of the newest image '
                f'(t={t_new:.3f} s): closest is {skew:.3f} s away')
        offsets = np.arange(self.n_obs_steps - 1, -1, -1, dtype=np.float64)
        step_times = t_new - offsets * self.control_period  # (T,) oldest first
        limit = t_new + self.pair_tolerance
        images = {}
        max_skew = 0.0
        for camera in self.camera_names:
            series = self._images[camera]
            frames = []
            for target in step_times:
                index = series.closest(target, not_after=limit)
                max_skew = max(max_skew, abs(series.stamps[index] - target))
                frames.append(series.values[index])
            images[camera] = np.stack(frames)  # (T, H, W, 3)
        states = []
        for target in step_times:
            index = self._joints.closest(target, not_after=limit)
            max_skew = max(max_skew, abs(self._joints.stamps[index] - target))
            states.append(self._joints.values[index])
        observation = {OBS_IMAGES: images, OBS_STATE: np.stack(states).astype(np.float32)}
        return AssembledObservation(observation=observation, stamp=float(t_new),
                                    step_times=step_times, max_skew=float(max_skew))
