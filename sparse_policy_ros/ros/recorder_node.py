"""
Record demonstrations from live topics straight into a replay-buffer store.

Subscribes to the cameras (``sensor_msgs/Image`` or ``CompressedImage``), ``joint_states`` and
the teleop command topic (``JointTrajectory``, ``JointState`` or ``Float64MultiArray``).
Services, all ``std_srvs/Trigger``::

    ~/start    begin an episode: from now on the messages are kept in memory
    ~/stop     end it and queue it: the writer thread resamples it at ``rate`` and appends it
               to the store at ``output_path``
    ~/discard  end it and drop it

or marker topics: a ``std_msgs/Header`` on ``episode_start_topic`` writes the episode being
recorded and starts the next, a ``std_msgs/String`` on ``episode_end_topic`` writes it (with
``discard_failed``, one whose data is JSON with ``"success": false`` discards it): the sim
node's ``~/episode_start`` and ``~/episode`` record the scripted expert episode by episode.

The store is the one ``bag-to-dataset`` writes (``training/bag_dataset.py``), and so is the
data: the messages go through the converter's own collector and planner (same message checks,
same timing rules: header stamps, image hold, joint-state interpolation, the trajectory in force
at each tick, ``max_age`` staleness), so a live recording and a rosbag of the same run give the
same episode. One ``~/start`` .. ``~/stop`` is one episode: it is written only when it resamples
to one piece of at least ``min_steps`` steps without a stale step. A missing store is created
with the converter's metadata at the first episode; an existing one must match (cameras and
frame size, joint names, rate) or the node does not start. The root attribute
``recorded_episodes`` lists every episode the recorder added (store index, first tick in ns,
steps).

Writing (resampling, decoding into arrays, appending to zarr) takes a while for a long episode,
so one writer thread does it, in order, off the executor: ``~/stop`` (or a marker) answers at
once with ``queued: episode N being written`` (or refuses, writing nothing, when a topic had no
usable message), the next episode can start at once, and /diagnostics keeps coming. The outcome
(the store index and steps, or why not: a stale topic, too few steps, the store or the disk) is
logged and counted on /diagnostics (``episodes_written``, ``write_errors`` with
``last_write_error``, ``writes_pending``). Shutdown waits up to ``WRITE_DRAIN_TIMEOUT_S`` for the
queued episodes and logs the ones it leaves.

A message that cannot be used (joints missing, wrong image size or encoding, non-finite values)
is counted per topic and logged (throttled); the node keeps recording. Messages between episodes
are ignored. /diagnostics shows idle or recording, the episode's duration and messages per
topic, the bad-message counts, the episodes written, queued and failed, and the store.
"""

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
import json
import math
from pathlib import Path
import queue
import shutil
import sys
import threading
import time
from typing import Any

from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
import numpy as np
import rclpy
from rclpy.clock import Clock, ClockType
from rclpy.exceptions import InvalidParameterValueException
from rclpy.node import Node
from rclpy.parameter import Parameter
from rclpy.qos import (HistoryPolicy, qos_profile_sensor_data, QoSProfile,
                       ReliabilityPolicy)
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Float64MultiArray, Header, String
from std_srvs.srv import Trigger
from trajectory_msgs.msg import JointTrajectory

from .diagnostics import make_status
from .node_main import run_node
from .params import declare, RECORDER_PARAMS, spec_by_name, values
from ..training.bag_dataset import (
    ACTION_KEY, COMPRESSED_IMAGE, episode_arrays, FLOAT64_MULTI_ARRAY, IMAGE,
    image_key, JOINT_STATE, JOINT_TRAJECTORY, layout_attrs, plan_episodes, STATE_KEY,
    StreamCollector)
from ..training.replay_buffer import ReplayBuffer

# command_type parameter -> (rclpy message class, bag_dataset type name)
COMMAND_TYPES = {
    'joint_trajectory': (JointTrajectory, JOINT_TRAJECTORY),
    'joint_state': (JointState, JOINT_STATE),
    'float64_multi_array': (Float64MultiArray, FLOAT64_MULTI_ARRAY),
}
RECORDED_EPISODES = 'recorded_episodes'
# Joint states and commands come at tens of Hz and must all be kept: a deep queue. Joint states
# are best effort so that best-effort drivers match too; commands are reliable like controllers.
JOINT_QOS = QoSProfile(depth=100, history=HistoryPolicy.KEEP_LAST,
                       reliability=ReliabilityPolicy.BEST_EFFORT)
COMMAND_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
DIAGNOSTICS_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
LOG_THROTTLE_S = 1.0
# Shutdown waits this long for the queued episodes: a few minutes of 30 Hz frames take seconds.
WRITE_DRAIN_TIMEOUT_S = 120.0
_NS = 1_000_000_000
# The planner cuts at joint-state pauses longer than this; a recording is one episode, and a
# pause longer than max_age is refused as stale anyway.
_NO_GAP_S = 1e6


@dataclass(frozen=True)
class RecorderSettings:
    """What to record and where; validated by :func:`settings_from_parameters`."""

    path: Path  # the replay-buffer store
    cameras: tuple[str, ...]  # store order
    image_types: Mapping[str, str]  # topic -> IMAGE or COMPRESSED_IMAGE, in camera order
    joint_state_topic: str
    command_topic: str
    command_type: str  # JOINT_TRAJECTORY, JOINT_STATE or FLOAT64_MULTI_ARRAY
    joint_names: tuple[str, ...] | None  # None: the store's, else the first JointState's
    rate: float  # Hz, one stored step per 1 / rate s
    image_size: tuple[int, int] | None = None  # (H, W) frames are resized to; None: keep
    max_age: float = 0.5  # s: a stream older than this at a step makes the episode stale
    min_steps: int = 2
    use_receive_time: bool = False
    source: str = 'recorder_node'  # who wrote the episodes, for the store's attributes
    max_episode_duration: float = 300.0  # s after start: the episode is stopped and written
    episode_start_topic: str = ''  # std_msgs/Header: write the episode, start the next
    episode_end_topic: str = ''  # std_msgs/String: write the episode (or discard, see below)
    discard_failed: bool = False  # an end message with JSON "success": false discards


def settings_from_parameters(p: Mapping[str, Any], source: str) -> RecorderSettings:
    """Check the node's parameter values; raise ValueError naming parameter, value, expectation."""
    def refuse(name: str, expected: str) -> ValueError:
        return ValueError(f'parameter {name} = {p[name]!r}: expected {expected}')

    if not p['output_path']:
        raise refuse('output_path', 'the path of a replay-buffer store (a zarr folder, created '
                     'at the first episode)')
    problem = spec_by_name(RECORDER_PARAMS)['command_type'].check(p['command_type'])
    if problem is not None:
        raise ValueError(f'parameter {problem}')
    cameras = list(p['camera_names'])
    if not cameras or len(set(cameras)) != len(cameras) or any(
            not c or '/' in c for c in cameras):
        raise refuse('camera_names', 'one or more distinct names without "/"')
    topics = {}
    for name, msgtype in (('image_topics', IMAGE), ('compressed_image_topics',
                                                    COMPRESSED_IMAGE)):
        given = list(p[name]) or ['']
        given = given * len(cameras) if given == [''] else given
        if len(given) != len(cameras):
            raise refuse(name, f"one topic per camera of {cameras} ('' = none)")
        topics[msgtype] = given
    camera_topics = []
    for camera, raw, compressed in zip(cameras, topics[IMAGE], topics[COMPRESSED_IMAGE]):
        if bool(raw) == bool(compressed):
            raise ValueError(f'parameters image_topics = {p["image_topics"]!r} and '
                             f'compressed_image_topics = {p["compressed_image_topics"]!r}: '
                             f'expected exactly one topic for camera {camera!r}, got '
                             f'{"both" if raw else "none"}')
        camera_topics.append((raw or compressed, IMAGE if raw else COMPRESSED_IMAGE))
    wired = [topic for topic, _ in camera_topics] + [p['joint_state_topic'], p['command_topic']]
    repeated = sorted({t for t in wired if wired.count(t) > 1 or not t})
    if repeated:
        raise ValueError(f'parameters image_topics, compressed_image_topics, joint_state_topic '
                         f'and command_topic: expected distinct non-empty topics, got {wired} '
                         f'({repeated} repeated or empty)')
    image_types = dict(camera_topics)
    markers = [t for t in (p['episode_start_topic'], p['episode_end_topic']) if t]
    if len(set(markers)) != len(markers) or set(markers) & set(wired):
        raise ValueError(f"parameters episode_start_topic = {p['episode_start_topic']!r} and "
                         f"episode_end_topic = {p['episode_end_topic']!r}: expected topics "
                         f'of their own, not {wired} nor each other')
    names = list(p['joint_names'])
    if len(set(names)) != len(names) or not all(names):
        raise refuse('joint_names', 'distinct non-empty names (or not set)')
    size = list(p['image_size'])
    if size and (len(size) != 2 or min(size) < 1):
        raise refuse('image_size', '[H, W] with both >= 1 (or not set: keep the size)')
    return RecorderSettings(
        path=Path(p['output_path']).expanduser(), cameras=tuple(cameras),
        image_types=image_types, joint_state_topic=p['joint_state_topic'],
        command_topic=p['command_topic'], command_type=COMMAND_TYPES[p['command_type']][1],
        joint_names=tuple(names) or None, rate=float(p['rate']),
        image_size=(int(size[0]), int(size[1])) if size else None,
        max_age=float(p['max_age']), min_steps=int(p['min_steps']),
        use_receive_time=bool(p['use_receive_time']), source=source,
        max_episode_duration=float(p['max_episode_duration']),
        episode_start_topic=p['episode_start_topic'], episode_end_topic=p['episode_end_topic'],
        discard_failed=bool(p['discard_failed']))


def outcome_failed(data: str) -> bool:
    """Tell whether ``data`` is a JSON object whose ``success`` is false."""
    try:
        outcome = json.loads(data)
    except ValueError:
        return False
    return isinstance(outcome, dict) and outcome.get('success') is False


def _where(topic: str, index: int, time_ns: int | None) -> str:
    when = '' if time_ns is None else f' (t={time_ns / _NS:.6f} s)'
    return f'topic {topic!r}, message {index}{when}'


@dataclass(frozen=True, eq=False)  # eq=False: pending episodes are told apart by identity
class FinishedEpisode:
    """An episode taken off recording, its messages waiting to be resampled and appended."""

    number: int  # its store index if the episodes queued before it are written
    collector: StreamCollector  # detached: the next episode records into a fresh one
    summary: str  # duration and messages per topic at the stop, for the result message
    why: str = ''  # what stopped it, when not a stop request: starts the result message


class DemoRecorder:
    """
    The recorder without ROS: one episode's messages in memory, resampled and appended on stop.

    ``add`` takes messages by attribute (rclpy or any look-alike); times are ns on the
    recording's clock. ``start`` / ``stop`` / ``discard`` return ``(success, message)``.

    With ``submit`` None, ``stop`` writes the episode before it returns. Otherwise it hands
    the :class:`FinishedEpisode` to ``submit`` (the node's writer thread, which calls
    :meth:`write`) and returns at once. ``write`` may run in another thread than the rest:
    what it changes, and what ``status`` and ``start`` read of it, is guarded by a lock.
    """

    def __init__(self, settings: RecorderSettings,
                 submit: Callable[[FinishedEpisode], None] | None = None):
        """Check an existing store at ``settings.path`` against the settings (ValueError)."""
        self.settings = settings
        self.submit = submit
        self.joint_names = settings.joint_names
        self._lock = threading.Lock()
        self._store_size: dict[str, Any] = {}  # frame size the store (or image_size) fixes
        self.n_stored = self._check_store()  # episodes in the store
        self._pending: list[FinishedEpisode] = []  # stopped, not yet written or failed
        self._collector: StreamCollector | None = None
        self._start_ns = 0
        self._received: Counter[str] = Counter()  # this episode, every message
        self._bad: Counter[str] = Counter()  # this episode
        self.bad_total: Counter[str] = Counter()  # since start-up
        self.last_bad: dict[str, str] = {}  # topic -> the latest bad message's reason
        # Every key is here from the start: the writer thread only changes values.
        self.counts = Counter({'episodes_written': 0, 'episodes_refused': 0, 'write_errors': 0,
                               'episodes_discarded': 0, 'episodes_stopped_at_max_duration': 0,
                               'ignored_while_idle': 0, 'start_markers': 0, 'end_markers': 0,
                               'end_markers_while_idle': 0, 'failed_discarded': 0})
        self.last_result = 'none'
        self.last_write_error = 'none'
        self.last_write_failed = False  # the latest write's outcome

    @property
    def recording(self) -> bool:
        """Whether an episode is being recorded."""
        return self._collector is not None

    @property
    def pending(self) -> list[int]:
        """Return the numbers of the episodes stopped but not yet written (or failed)."""
        with self._lock:
            return [episode.number for episode in self._pending]

    def _next_number(self) -> int:
        """Return the store index the current (or next) episode gets, the queued ones written."""
        with self._lock:
            return self.n_stored + len(self._pending)

    @property
    def bad_this_episode(self) -> int:
        """Return how many messages of the current episode were unusable."""
        return sum(self._bad.values()) if self._collector is not None else 0

    @property
    def topics(self) -> list[str]:
        """Return the recorded topics: cameras, joint states, command."""
        s = self.settings
        return [*s.image_types, s.joint_state_topic, s.command_topic]

    def role(self, topic: str) -> str:
        """Return the parameter that names ``topic``."""
        s = self.settings
        if topic in s.image_types:
            return ('image_topics' if s.image_types[topic] == IMAGE
                    else 'compressed_image_topics')
        return 'joint_state_topic' if topic == s.joint_state_topic else 'command_topic'

    # ------------------------------------------------------------------ messages
    def add(self, topic: str, msg: Any, receive_ns: int) -> str | None:
        """
        Keep one message of the current episode; ValueError (counted) if it is unusable.

        A message that arrives ``max_episode_duration`` or more after ``start`` ends the
        episode first (written as by ``stop``) and is not recorded; the return value then
        says what happened (None otherwise).
        """
        if (self._collector is not None and receive_ns - self._start_ns
                >= self.settings.max_episode_duration * _NS):
            self.counts['episodes_stopped_at_max_duration'] += 1
            self.counts['ignored_while_idle'] += 1
            return self._stop(receive_ns, f'max_episode_duration '
                              f'{self.settings.max_episode_duration:g} s reached, stopped: ')[1]
        if self._collector is None:
            self.counts['ignored_while_idle'] += 1
            if self.joint_names is None and topic == self.settings.joint_state_topic:
                self._learn_joint_names(msg)
            return None
        index = self._received[topic]
        self._received[topic] += 1
        try:
            self._collector.add(topic, index, receive_ns, msg)
        except ValueError as error:
            self._bad[topic] += 1
            self.bad_total[topic] += 1
            self.last_bad[topic] = str(error)
            raise
        return None

    def _learn_joint_names(self, msg: Any) -> None:
        names = tuple(str(n) for n in msg.name)
        if names and len(set(names)) == len(names):
            self.joint_names = names

    # ------------------------------------------------------------------ episodes
    def start(self, now_ns: int) -> tuple[bool, str]:
        """Begin an episode at ``now_ns``."""
        if self._collector is not None:
            return False, (f'already recording episode {self._next_number()} '
                           f'({self._summary(now_ns)}): call ~/stop or ~/discard first')
        if self.joint_names is None:
            return False, (f'joint names unknown: no JointState on '
                           f'{self.settings.joint_state_topic!r} yet and the parameter '
                           f'joint_names is not set')
        s = self.settings
        with self._lock:
            size_ref = dict(self._store_size)
        self._collector = StreamCollector(
            s.image_types, s.joint_state_topic, s.command_topic, s.command_type,
            self.joint_names, _where, image_size=s.image_size,
            use_receive_time=s.use_receive_time, size_ref=size_ref, keep_frames=True)
        self._start_ns = now_ns
        self._received.clear()
        self._bad.clear()
        return True, f'recording episode {self._next_number()} into {s.path}'

    def start_marker(self, now_ns: int) -> list[tuple[bool, str]]:
        """Write the episode being recorded (as ``stop``) and start the next: one began."""
        self.counts['start_markers'] += 1
        results = [self.stop(now_ns)] if self._collector is not None else []
        return [*results, self.start(now_ns)]

    def end_marker(self, now_ns: int, data: str) -> tuple[bool, str] | None:
        """
        Write the episode being recorded: it ended (None when idle: counted, nothing done).

        With ``discard_failed``, ``data`` that is JSON with ``"success": false`` (the sim
        node's episode outcome) discards it instead.
        """
        if self._collector is None:
            self.counts['end_markers_while_idle'] += 1
            return None
        self.counts['end_markers'] += 1
        if self.settings.discard_failed and outcome_failed(data):
            self.counts['failed_discarded'] += 1
            ok, message = self.discard(now_ns)
            self.last_result = f'the episode failed ({data.strip()[:200]}): {message}'
            return ok, self.last_result
        return self.stop(now_ns)

    def discard(self, now_ns: int) -> tuple[bool, str]:
        """Drop the current episode."""
        if self._collector is None:
            return False, 'not recording: nothing to discard (call ~/start first)'
        summary = self._summary(now_ns)
        number = self._next_number()
        self._collector = None
        self.counts['episodes_discarded'] += 1
        self.last_result = f'discarded episode {number} ({summary})'
        return True, self.last_result

    def stop(self, now_ns: int) -> tuple[bool, str]:
        """
        End the current episode and write it, or refuse saying why.

        A topic without a usable message refuses it here (``episodes_refused``). Otherwise,
        with ``submit`` None, the episode is written before this returns (see :meth:`write`);
        with ``submit``, it is queued and the message says so: the writer reports the outcome.
        """
        return self._stop(now_ns)

    def _stop(self, now_ns: int, why: str = '') -> tuple[bool, str]:
        """Stop as :meth:`stop`; ``why`` starts the message (and ``last_result``)."""
        if self._collector is None:
            return False, 'not recording: nothing to stop (call ~/start first)'
        summary = self._summary(now_ns)
        collector, self._collector = self._collector, None
        number = self._next_number()
        empty = collector.empty_topics()
        if empty:
            self.counts['episodes_refused'] += 1
            self.last_result = f'{why}episode {number} not written ({summary}): ' + (
                'no usable messages on ' + '; '.join(
                    f'{t!r} ({self.role(t)}): '
                    + (f'{self._bad[t]} bad, the last: {self.last_bad[t]}' if self._bad[t]
                       else 'none arrived') for t in empty))
            return False, self.last_result
        episode = FinishedEpisode(number, collector, summary, why)
        with self._lock:
            self._pending.append(episode)
        if self.submit is None:
            return self.write(episode)
        # Set before the hand-over: the writer's outcome must not be overwritten by this.
        self.last_result = f'{why}queued: episode {number} being written to {self.settings.path}'
        self.submit(episode)
        return True, f'{self.last_result} ({summary})'

    def write(self, episode: FinishedEpisode) -> tuple[bool, str]:
        """
        Resample ``episode`` and append it to the store; return ``(written, message)``.

        Never raises: a failure (a stale topic, too few steps, the store or the disk refusing,
        or anything else) is counted in ``write_errors`` and kept in ``last_write_error``.
        """
        try:
            index, steps, store_size = self._write(episode.collector)
        except Exception as error:  # noqa: B902 - the writer thread reports it and goes on
            reason = (str(error) if isinstance(error, (ValueError, OSError))
                      else f'{type(error).__name__}: {error}')
            message = (f'{episode.why}episode {episode.number} not written '
                       f'({episode.summary}): {reason}')
            with self._lock:
                self._pending.remove(episode)
                self.counts['write_errors'] += 1
                self.last_write_error = self.last_result = message
                self.last_write_failed = True
            return False, message
        rate = self.settings.rate
        queued_as = f' (queued as episode {episode.number})' if index != episode.number else ''
        message = (f'{episode.why}episode {index} written to {self.settings.path}{queued_as}: '
                   f'{steps} steps at {rate:g} Hz ({steps / rate:.1f} s); {episode.summary}')
        with self._lock:
            self._pending.remove(episode)
            self.n_stored = index + 1
            self._store_size = store_size
            self.counts['episodes_written'] += 1
            self.last_result = message
            self.last_write_failed = False
        return True, message

    def _write(self, collector: StreamCollector) -> tuple[int, int, dict[str, Any]]:
        """
        Resample the episode with bag_dataset's planner and append it.

        Return its store index, its steps and the frame size it fixes for the next episodes.
        """
        s = self.settings
        plan = plan_episodes(collector.finish(), s.rate, _NO_GAP_S, s.max_age, s.min_steps)
        if plan.cuts:
            cut = plan.cuts[0]
            raise ValueError(f'{cut["topic"]!r} was {cut["age_s"]:.3f} s old at '
                             f't={cut["time_s"]:.3f} s; expected fresh data at every step '
                             f'(max_age {s.max_age:g} s)')
        if len(plan.episodes) != 1:
            reasons = '; '.join(item['reason'] for item in plan.skipped) or 'no data'
            raise ValueError(f'no episode of at least {s.min_steps} steps at {s.rate:g} Hz '
                             f'({reasons})')
        episode = plan.episodes[0]
        arrays = episode_arrays(episode, [collector.frames[t] for t in collector.image_topics],
                                s.cameras)
        index = self._append(arrays, int(episode.ticks[0]))
        frame = arrays[image_key(s.cameras[0], len(s.cameras))]
        return (index, len(episode.ticks),
                self._size_ref(tuple(frame.shape[1:3]), f'the frames in {s.path}'))

    def _append(self, arrays: Mapping[str, np.ndarray], start_ns: int) -> int:
        """Add the episode to the store (created if missing); return its index there."""
        s = self.settings
        created = not s.path.exists()
        buffer = ReplayBuffer.create(s.path) if created else ReplayBuffer.open(s.path, mode='a')
        fresh = buffer.n_episodes == 0
        try:
            buffer.add_episode(arrays)
        except ValueError as error:
            if created:
                shutil.rmtree(s.path, ignore_errors=True)
            raise ValueError(f'the store {s.path} refused it: {error}') from None
        attrs = buffer.attrs
        entry = {'episode': buffer.n_episodes - 1, 'start_ns': start_ns,
                 'start_s': start_ns / _NS, 'steps': len(arrays[STATE_KEY]),
                 'source': s.source}
        update = {RECORDED_EPISODES: [*attrs.get(RECORDED_EPISODES, []), entry]}
        if fresh:  # the store's layout is this recorder's: describe it like bag-to-dataset
            frame = arrays[image_key(s.cameras[0], len(s.cameras))]
            types = {**s.image_types, s.joint_state_topic: JOINT_STATE,
                     s.command_topic: s.command_type}
            update.update(source_format='ros2 topics', source=s.source, **layout_attrs(
                s.cameras, list(s.image_types), s.joint_state_topic, s.command_topic, None,
                types, self.joint_names, list(frame.shape[1:3]), s.rate, s.use_receive_time,
                s.max_age, s.min_steps))
        buffer.set_attrs(update)
        return buffer.n_episodes - 1

    def _check_store(self) -> int:
        """Return the episodes in an existing store; ValueError if it holds other data."""
        s = self.settings
        if s.image_size is not None:
            self._store_size = self._size_ref(s.image_size, 'the image_size parameter')
        if not s.path.exists():
            return 0
        try:
            buffer = ReplayBuffer.open(s.path, mode='r')
        except (ValueError, FileNotFoundError) as error:
            raise ValueError(f'parameter output_path = {str(s.path)!r}: {error}') from None
        attrs = buffer.attrs
        stored_names = attrs.get('joint_names')
        if stored_names and self.joint_names is None:
            self.joint_names = tuple(stored_names)
        elif stored_names and list(stored_names) != list(self.joint_names):
            raise ValueError(f'{s.path} holds joint_names {list(stored_names)}; this recorder '
                             f'records {list(self.joint_names)} (parameter joint_names). Use '
                             f'another output_path.')
        # bag-to-dataset and this node list 'cameras'; record-demos names its one 'camera'.
        stored_cameras = attrs.get('cameras', [attrs['camera']] if 'camera' in attrs else None)
        if stored_cameras is not None and list(stored_cameras) != list(s.cameras):
            raise ValueError(f'{s.path} holds cameras {list(stored_cameras)}; this recorder '
                             f'records {list(s.cameras)} (parameter camera_names). Use another '
                             f'output_path.')
        for key in ('control_hz', 'rate_hz'):
            if key in attrs and not math.isclose(float(attrs[key]), s.rate):
                raise ValueError(f'{s.path} holds data at {key}={attrs[key]!r}; this recorder '
                                 f'records at rate={s.rate:g} Hz. Use another output_path.')
        if buffer.n_episodes:
            self._check_arrays(buffer)
        return buffer.n_episodes

    def _check_arrays(self, buffer: ReplayBuffer) -> None:
        s = self.settings
        image_keys = [image_key(c, len(s.cameras)) for c in s.cameras]
        expected = sorted([*image_keys, STATE_KEY, ACTION_KEY])
        if buffer.keys != expected:
            raise ValueError(f'{s.path} holds arrays {buffer.keys}; this recorder writes '
                             f'{expected} (cameras {list(s.cameras)}). Use another output_path.')
        dof = buffer.array(STATE_KEY).shape[1:]
        if self.joint_names is not None and dof != (len(self.joint_names),):
            raise ValueError(f'{s.path} holds states of shape {dof}; this recorder records '
                             f'{len(self.joint_names)} joints {list(self.joint_names)}. Use '
                             f'another output_path.')
        sizes = {tuple(buffer.array(key).shape[1:]) for key in image_keys}
        size = next(iter(sizes))
        if len(sizes) != 1 or len(size) != 3 or size[2] != 3:
            raise ValueError(f'{s.path} holds images of shapes {sorted(sizes)}; expected one '
                             f'(H, W, 3) size. Use another output_path.')
        if s.image_size is not None and size[:2] != s.image_size:
            raise ValueError(f'{s.path} holds {size[0]} x {size[1]} frames; parameter '
                             f'image_size = {list(s.image_size)}. Use another output_path.')
        self._store_size = self._size_ref(size[:2], f'the frames in {s.path}')

    @staticmethod
    def _size_ref(size: tuple[int, int], where: str) -> dict[str, Any]:
        return {'size': tuple(int(v) for v in size), 'where': where,
                'hint': 'set image_size [H, W] to resize every frame'}

    # ------------------------------------------------------------------ reporting
    def duration(self, now_ns: int) -> float:
        """Return the seconds since ``start`` (0 when idle)."""
        return (now_ns - self._start_ns) / _NS if self._collector is not None else 0.0

    def _summary(self, now_ns: int) -> str:
        parts = []
        for topic in self.topics:
            kept = self._collector.count(topic) if self._collector is not None else 0
            bad = f', {self._bad[topic]} bad' if self._bad[topic] else ''
            parts.append(f'{topic} {kept}{bad}')
        return f'recorded {self.duration(now_ns):.1f} s, messages: ' + ', '.join(parts)

    def status(self, now_ns: int) -> dict[str, Any]:
        """Return the values /diagnostics shows."""
        with self._lock:  # one consistent view of what the writer thread changes
            n_stored, pending, counts = self.n_stored, len(self._pending), dict(self.counts)
            last_write_error = self.last_write_error
        report: dict[str, Any] = {
            'state': 'recording' if self.recording else 'idle',
            'store': str(self.settings.path),
            'episodes_in_store': n_stored,
            'episode': n_stored + pending if self.recording else 'none',
            'duration_s': self.duration(now_ns),
            'max_episode_duration_s': self.settings.max_episode_duration,
            'buffered_frames_mb': (self._collector.frame_bytes() / 2 ** 20
                                   if self._collector is not None else 0.0),
            **counts,
            'writes_pending': pending,
            'last_write_error': last_write_error,
            'bad_messages': sum(self.bad_total.values()),
        }
        for topic in self.topics:
            kept = self._collector.count(topic) if self._collector is not None else 0
            report[f'messages {topic}'] = kept
            report[f'bad {topic}'] = self.bad_total[topic]
        report['last_bad_message'] = (' | '.join(f'{t}: {m}' for t, m in self.last_bad.items())
                                      or 'none')
        report['last_result'] = self.last_result
        return report


class EpisodeWriter:
    """
    One thread that writes the finished episodes in the order they came, off the executor.

    ``write`` (``DemoRecorder.write`` and its report) runs in that thread and must not raise.
    """

    def __init__(self, write: Callable[[FinishedEpisode], None], name: str = 'episode_writer'):
        """Start the thread; it waits for :meth:`submit`."""
        self._write = write
        self._queue: queue.SimpleQueue[FinishedEpisode | None] = queue.SimpleQueue()
        self._lock = threading.Lock()  # no episode queued behind the stop sentinel
        self.closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, episode: FinishedEpisode) -> None:
        """
        Queue ``episode``.

        Once closed, write it in the caller's thread (nothing dropped), after the thread's
        last write: two writers at once would interleave appends to the store.
        """
        with self._lock:
            if not self.closed:
                self._queue.put(episode)
                return
        self._thread.join()
        self._write(episode)

    def close(self, timeout: float) -> bool:
        """Write the queued episodes, end the thread; return False if busy after ``timeout`` s."""
        with self._lock:
            if not self.closed:
                self.closed = True
                self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while (episode := self._queue.get()) is not None:
            self._write(episode)


class RecorderNode(Node):
    """Subscriptions, Trigger services and /diagnostics around a :class:`DemoRecorder`."""

    def __init__(self, node_name: str = 'recorder_node', *, namespace: str | None = None,
                 context: rclpy.context.Context | None = None,
                 parameter_overrides: list[Parameter] | None = None,
                 cli_args: list[str] | None = None):
        """Check the parameters and the store, subscribe, offer the services."""
        super().__init__(node_name, namespace=namespace, context=context,
                         parameter_overrides=parameter_overrides, cli_args=cli_args)
        declare(self, RECORDER_PARAMS)
        p = values(self, RECORDER_PARAMS)
        self.recorder = DemoRecorder(settings_from_parameters(p, self.get_fully_qualified_name()))
        # Started once the store checked out: a refused start-up leaves no thread behind.
        self._writer = EpisodeWriter(self._write_episode, name=f'{self.get_name()}_writer')
        self.recorder.submit = self._writer.submit
        self._drained = False
        settings = self.recorder.settings
        self._log_times: dict[str, float] = {}
        for topic, msgtype in settings.image_types.items():
            self.create_subscription(Image if msgtype == IMAGE else CompressedImage, topic,
                                     self._callback_for(topic), qos_profile_sensor_data)
        self.create_subscription(JointState, settings.joint_state_topic,
                                 self._callback_for(settings.joint_state_topic), JOINT_QOS)
        self.create_subscription(COMMAND_TYPES[p['command_type']][0], settings.command_topic,
                                 self._callback_for(settings.command_topic), COMMAND_QOS)
        if settings.episode_start_topic:
            self.create_subscription(Header, settings.episode_start_topic,
                                     self.episode_start_callback, COMMAND_QOS)
        if settings.episode_end_topic:
            self.create_subscription(String, settings.episode_end_topic,
                                     self.episode_end_callback, COMMAND_QOS)
        self.create_service(Trigger, '~/start', self.start_callback)
        self.create_service(Trigger, '~/stop', self.stop_callback)
        self.create_service(Trigger, '~/discard', self.discard_callback)
        self._diagnostics_pub = self.create_publisher(DiagnosticArray, '/diagnostics',
                                                      DIAGNOSTICS_QOS)
        # On the steady clock: diagnostics keep coming while /clock is stopped.
        self.create_timer(p['diagnostics_period'], self.diagnostics_callback,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.get_logger().info(
            f'recording {self.recorder.topics} at {settings.rate:g} Hz into {settings.path} '
            f'({self.recorder.n_stored} episodes there); call ~/start and ~/stop')

    def _now_ns(self) -> int:
        return self.get_clock().now().nanoseconds

    def _callback_for(self, topic: str):
        def callback(msg) -> None:
            self.message_callback(topic, msg)
        return callback

    def message_callback(self, topic: str, msg: Any) -> None:
        """Hand a message to the recorder; count and log (throttled) an unusable one."""
        try:
            stopped = self.recorder.add(topic, msg, self._now_ns())
        except ValueError as error:
            stopped = None
            now = time.monotonic()
            if now - self._log_times.get(topic, -math.inf) >= LOG_THROTTLE_S:
                self._log_times[topic] = now
                self.get_logger().warning(
                    f'bad message ({self.recorder.bad_total[topic]} on this topic so far), '
                    f'not recorded: {error}')
        if stopped is not None:
            self.get_logger().warning(stopped)

    def episode_start_callback(self, msg: Header) -> None:
        """Write the episode being recorded and start the next (episode_start_topic)."""
        for success, message in self.recorder.start_marker(self._now_ns()):
            self._log_result(success, message)

    def episode_end_callback(self, msg: String) -> None:
        """Write (or, failed, discard) the episode being recorded (episode_end_topic)."""
        result = self.recorder.end_marker(self._now_ns(), msg.data)
        if result is not None:
            self._log_result(*result)

    def start_callback(self, request: Trigger.Request,
                       response: Trigger.Response) -> Trigger.Response:
        """Begin an episode."""
        return self._respond(response, *self.recorder.start(self._now_ns()))

    def stop_callback(self, request: Trigger.Request,
                      response: Trigger.Response) -> Trigger.Response:
        """End the episode and queue it for the writer thread (or refuse, saying why)."""
        return self._respond(response, *self.recorder.stop(self._now_ns()))

    def discard_callback(self, request: Trigger.Request,
                         response: Trigger.Response) -> Trigger.Response:
        """End the episode and drop it."""
        return self._respond(response, *self.recorder.discard(self._now_ns()))

    def _respond(self, response: Trigger.Response, success: bool,
                 message: str) -> Trigger.Response:
        response.success, response.message = success, message
        self._log_result(success, message)
        return response

    def _log_result(self, success: bool, message: str) -> None:
        if success:  # one call site per severity: rclpy refuses to mix them
            self.get_logger().info(message)
        else:
            self.get_logger().warning(message)

    def _write_episode(self, episode: FinishedEpisode) -> None:
        """Write one queued episode and log the outcome (the writer thread)."""
        written, message = self.recorder.write(episode)
        if written:
            self.get_logger().info(message)
        else:
            self.get_logger().error(message)

    def diagnostics_callback(self) -> None:
        """Publish recording or idle, the episode's progress and the message counts."""
        report = self.recorder.status(self._now_ns())
        recording = self.recorder.recording
        warn = self.recorder.bad_this_episode or self.recorder.last_write_failed
        level = DiagnosticStatus.WARN if warn else DiagnosticStatus.OK
        message = (f'recording episode {report["episode"]}' if recording else 'idle')
        if report['writes_pending']:
            message += f', writing {report["writes_pending"]} episode(s)'
        if self.recorder.last_write_failed:
            message += f', the last write failed: {report["last_write_error"]}'
        status = make_status(f'{self.get_name()}: recorder', 'recorder', level, message, report)
        array = DiagnosticArray(status=[status])
        array.header.stamp = self.get_clock().now().to_msg()
        self._diagnostics_pub.publish(array)

    def close(self) -> None:
        """Drop an episode still recording (not written); wait for the queued ones' writes."""
        if self.recorder.recording:
            self.get_logger().warning(
                f'shutting down while recording: {self.recorder.discard(self._now_ns())[1]}')
        self._drain()

    def destroy_node(self) -> None:
        """Wait for the queued writes (as :meth:`close`), then destroy the node."""
        self._drain()
        super().destroy_node()

    def _drain(self) -> None:
        """Let the writer finish the queued episodes, waiting ``WRITE_DRAIN_TIMEOUT_S`` at most."""
        if self._drained:
            return
        self._drained = True
        pending = self.recorder.pending
        if pending:
            self.get_logger().info(f'waiting for the writes of episodes {pending}')
        if not self._writer.close(WRITE_DRAIN_TIMEOUT_S):
            self.get_logger().error(
                f'episodes {self.recorder.pending} still being written after '
                f'{WRITE_DRAIN_TIMEOUT_S:g} s: shutting down without them '
                f'({self.recorder.settings.path} may lack them)')


def main(args: list[str] | None = None) -> int:
    """Run the recorder until shut down; non-zero exit on bad parameters or store."""
    return run_node('recorder_node', RecorderNode,
                    (ValueError, InvalidParameterValueException), args)


if __name__ == '__main__':
    sys.exit(main())
