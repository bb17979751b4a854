"""
Convert rosbag2 recordings (sqlite3 or MCAP storage) into a replay buffer for train-policy.

Usage::

    bag-to-dataset BAG --out STORE.zarr --image-topic /front/image_raw
        --joint-state-topic /joint_states --command-topic /arm_controller/joint_trajectory
        [--image-topic /wrist/image_raw/compressed --camera-names front wrist]
        [--joint-names j1 j2 ...] [--rate 10] [--image-size H W] [--episode-topic /episode]
        [--gap 1.0] [--max-age 0.5] [--min-steps 2] [--use-receive-time] [--overwrite]

The bag is read with ``rosbags`` (no ROS installation needed). Topics map to the store written by
``record-demos`` (:mod:`..sim.record`), one row per policy tick::

    data/img           uint8   (T, H, W, 3)  --image-topic (RGB); with several cameras one
                                             array per camera, data/img_<camera>
    data/state         float32 (T, dof)      --joint-state-topic position, in --joint-names order
    data/action        float32 (T, dof)      --command-topic: the commanded joint positions
    meta/episode_ends  int64   (n_episodes,)

Message types: images are ``sensor_msgs/Image`` (rgb8, bgr8, mono8, rgba8, bgra8; rows cut at
``step``) or ``sensor_msgs/CompressedImage`` (PNG/JPEG via ``cv2.imdecode``). Joint states are
``sensor_msgs/JointState``; joints are picked by name (any order, extra joints ignored) and the
policy order is ``--joint-names`` or else the names of the first message. Commands are
``trajectory_msgs/JointTrajectory``, ``sensor_msgs/JointState`` (position, by name) or
``std_msgs/Float64MultiArray`` (data in policy joint order). Episode markers are
``std_msgs/Header`` or ``std_msgs/String``.

Timing rules. A message's time is its ``header.stamp`` where that is nonzero, else the time the
bag received it (always the receive time with ``--use-receive-time``, and for messages without a
header). Episodes are cut at every marker message (data before the first marker is dropped) and
wherever the joint-state stream pauses longer than ``--gap`` seconds. Within an episode, ticks
run at ``t0 + k / rate`` from the first time at which every stream (each camera, joint states,
command) has data in the episode to the last time at which all of them still have. At a tick:

* image: the latest frame at or before the tick (zero-order hold);
* state: linear interpolation between the joint-state samples either side of the tick;
* action from a JointTrajectory: each point is due at ``header.stamp + time_from_start`` (stamp 0
  means the receive time); a message replaces the previous one from its stamp on (ros2_control's
  replace semantics); between points the position is interpolated linearly, after the last point
  it is held, and before the first point it moves linearly from the command in force when the
  message took over to the first point, as joint_trajectory_controller does (nothing in force
  yet: undefined until the first point is due);
* action from JointState / Float64MultiArray: the latest command at or before the tick.

A tick where a stream is stale ends the episode (reported as a cut); the next episode starts at
the next tick of the same grid where every stream is fresh again. Stale means: the latest frame
or command message is more than ``--max-age`` seconds old, the joint-state samples around the
tick are more than ``--max-age`` apart, or a trajectory's last point is more than ``--max-age``
in the past. Episodes with fewer than ``--min-steps`` ticks are skipped and reported.

Every bad input raises ``ValueError`` naming the bag, the topic, the message index (in the
topic's bag order) with its time, and what was expected.

``recorder_node`` (``ros/recorder_node.py``) records live topics with the same pieces: messages
go through :class:`StreamCollector`, episodes through :func:`plan_episodes` and
:func:`episode_arrays`, and a new store gets :func:`layout_attrs`.
"""

import argparse
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
import logging
import math
import os
from pathlib import Path
import shutil
import sys
from typing import Any

import cv2
import numpy as np
from rosbags.rosbag2 import Reader, ReaderError
from rosbags.typesys import get_typestore, Stores
from tqdm import tqdm

from .replay_buffer import ReplayBuffer

logger = logging.getLogger(__name__)

IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
JOINT_STATE = 'sensor_msgs/msg/JointState'
JOINT_TRAJECTORY = 'trajectory_msgs/msg/JointTrajectory'
FLOAT64_MULTI_ARRAY = 'std_msgs/msg/Float64MultiArray'
HEADER = 'std_msgs/msg/Header'
STRING = 'std_msgs/msg/String'
ROLE_TYPES = {
    '--image-topic': (IMAGE, COMPRESSED_IMAGE),
    '--joint-state-topic': (JOINT_STATE,),
    '--command-topic': (JOINT_TRAJECTORY, JOINT_STATE, FLOAT64_MULTI_ARRAY),
    '--episode-topic': (HEADER, STRING),
}
# Image encoding -> (channels, channel indices giving R, G, B)
ENCODINGS = {
    'rgb8': (3, [0, 1, 2]),
    'bgr8': (3, [2, 1, 0]),
    'mono8': (1, [0, 0, 0]),
    'rgba8': (4, [0, 1, 2]),
    'bgra8': (4, [2, 1, 0]),
}
IMAGE_KEY = 'img'
STATE_KEY = 'state'
ACTION_KEY = 'action'
# Trailing topic segments that name the image rather than the camera.
_GENERIC_SEGMENTS = {'compressed', 'image', 'image_raw', 'image_rect', 'image_color',
                     'image_rect_color', 'color', 'rgb'}
_NS = 1_000_000_000


def image_key(camera: str, n_cameras: int) -> str:
    """Return the store key of a camera: ``img`` for a single camera, else ``img_<camera>``."""
    return IMAGE_KEY if n_cameras == 1 else f'{IMAGE_KEY}_{camera}'


def default_camera_names(topics: Sequence[str]) -> list[str]:
    """Return a camera name per image topic: its path without image-ish trailing segments."""
    names = []
    for topic in topics:
        segments = [s for s in topic.strip('/').split('/') if s]
        while len(segments) > 1 and segments[-1] in _GENERIC_SEGMENTS:
            segments.pop()
        names.append('_'.join(segments) or 'camera')
    return names


def image_to_rgb(msg: Any, msgtype: str) -> np.ndarray:
    """
    Convert a rosbags ``Image`` or ``CompressedImage`` message to RGB uint8 (H, W, 3).

    Raises ``ValueError`` saying what is wrong (without the message's location).
    """
    if msgtype == COMPRESSED_IMAGE:
        if 'compresseddepth' in str(msg.format).lower():
            raise ValueError(f'format {msg.format!r} is not supported; expected a PNG or JPEG '
                             f'colour or mono image')
        data = np.asarray(msg.data, np.uint8)
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            raise ValueError(f'format {msg.format!r}: the {data.size} bytes are not a decodable '
                             f'image; expected PNG or JPEG data')
        return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    channels, order = check_raw_image(msg)
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    rows = np.asarray(msg.data, np.uint8)[:height * step].reshape(height, step)
    pixels = rows[:, :width * channels].reshape(height, width, channels)
    return np.ascontiguousarray(pixels[:, :, order])


def check_raw_image(msg: Any) -> tuple[int, list[int]]:
    """Check a ``sensor_msgs/Image``'s encoding and sizes; return (channels, RGB order)."""
    encoding = str(msg.encoding).lower()
    if encoding not in ENCODINGS:
        raise ValueError(f'encoding {msg.encoding!r} is not supported; expected one of '
                         f'{sorted(ENCODINGS)}')
    channels, order = ENCODINGS[encoding]
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height < 1 or width < 1:
        raise ValueError(f'image is {height} x {width}; expected at least 1 x 1 pixels')
    if step < width * channels:
        raise ValueError(f'step is {step} bytes; expected at least width * channels = '
                         f'{width} * {channels} = {width * channels} for {encoding}')
    size = len(msg.data)
    if size < height * step:
        raise ValueError(f'data holds {size} bytes; expected height * step = {height} * {step} '
                         f'= {height * step}')
    return channels, order


# ---------------------------------------------------------------------- streams


@dataclass
class Samples:
    """Time-sorted samples of one topic (frames, joint states or commands)."""

    topic: str
    msgtype: str
    times: np.ndarray  # int64 (N,) ns, sorted
    index: np.ndarray  # int64 (N,) message index in the topic's bag order
    values: np.ndarray | None = None  # float64 (N, dof); None for frames and markers

    def window(self, lo: int | None, hi: int | None) -> 'Samples':
        """Return the samples with lo <= time < hi (None: unbounded)."""
        keep = _in_window(self.times, lo, hi)
        return Samples(self.topic, self.msgtype, self.times[keep], self.index[keep],
                       None if self.values is None else self.values[keep])


@dataclass
class Trajectories:
    """JointTrajectory commands, sorted by the time each takes over (its start)."""

    topic: str
    starts: np.ndarray  # int64 (M,) ns: header stamp, or receive time
    index: np.ndarray  # int64 (M,) message index
    due: list[np.ndarray]  # per message int64 (P,) ns at which each point is due
    positions: list[np.ndarray]  # per message float64 (P, dof)
    msgtype: str = JOINT_TRAJECTORY

    def window(self, lo: int | None, hi: int | None) -> 'Trajectories':
        """Return the messages that start in [lo, hi)."""
        keep = np.flatnonzero(_in_window(self.starts, lo, hi))
        return Trajectories(self.topic, self.starts[keep], self.index[keep],
                            [self.due[i] for i in keep], [self.positions[i] for i in keep])

    def held(self) -> list[np.ndarray | None]:
        """Return, per message, the command in force when it took over (None: none yet)."""
        held: list[np.ndarray | None] = [None]
        for i in range(1, len(self.starts)):
            held.append(self._value(i - 1, int(self.starts[i]), held[i - 1]))
        return held

    def evaluate(self, ticks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the commanded positions (T, dof) (NaN: undefined) and their age (ns) at ticks."""
        dof = self.positions[0].shape[1] if self.positions else 0
        values = np.full((len(ticks), dof), np.nan)
        age = np.full(len(ticks), np.inf)
        if not len(self.starts):
            return values, age
        held = self.held()
        active = np.searchsorted(self.starts, ticks, side='right') - 1
        for row, (tick, i) in enumerate(zip(ticks.tolist(), active.tolist())):
            if i < 0:
                continue
            value = self._value(i, tick, held[i])
            if value is not None:
                values[row] = value
                age[row] = max(0, tick - self.coverage_end(i))
        return values, age

    def coverage_end(self, i: int) -> int:
        """Return when message ``i`` stops commanding motion: its last point, or its start."""
        due = self.due[i]
        return max(int(self.starts[i]), int(due[-1]) if len(due) else int(self.starts[i]))

    def first_defined(self) -> int | None:
        """
        Return the first time a command is in force (a message's first point falls due).

        A point due exactly when the next message takes over counts: that message holds it (a
        teleop device's one-point commands, each due when the next one comes, are all this).
        """
        for i in range(len(self.starts)):
            if len(self.due[i]) and (i + 1 == len(self.starts)
                                     or self.due[i][0] <= self.starts[i + 1]):
                return int(self.due[i][0])
        return None

    def _value(self, i: int, tick: int, held: np.ndarray | None) -> np.ndarray | None:
        due, positions = self.due[i], self.positions[i]
        if not len(due):
            return held
        if tick < due[0]:
            start = int(self.starts[i])
            if held is None or due[0] <= start:
                return held
            # From the command in force at the takeover to the first point (JTC semantics):
            # a teleop command published a little late still counts for the tick it was meant for.
            weight = max(tick - start, 0) / (int(due[0]) - start)
            return held + weight * (positions[0] - held)
        j = int(np.searchsorted(due, tick, side='right')) - 1
        if j + 1 >= len(due):
            return positions[-1]
        weight = (tick - int(due[j])) / (int(due[j + 1]) - int(due[j]))
        return positions[j] + weight * (positions[j + 1] - positions[j])


def _in_window(times: np.ndarray, lo: int | None, hi: int | None) -> np.ndarray:
    keep = np.ones(len(times), bool)
    if lo is not None:
        keep &= times >= lo
    if hi is not None:
        keep &= times < hi
    return keep


def _hold(samples: Samples, ticks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the sample at or before each tick (-1: none) and its age in ns (inf: none)."""
    prev = np.searchsorted(samples.times, ticks, side='right') - 1
    age = np.where(prev >= 0, ticks - samples.times[np.maximum(prev, 0)], np.inf)
    return prev, age.astype(np.float64)


def _interpolate(samples: Samples, ticks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return linearly interpolated values (T, dof) and the span of the samples used (ns)."""
    times, values = samples.times, samples.values
    prev = np.clip(np.searchsorted(times, ticks, side='right') - 1, 0, len(times) - 1)
    nxt = np.minimum(prev + 1, len(times) - 1)
    exact = ticks == times[prev]
    span = (times[nxt] - times[prev]).astype(np.float64)
    offset = (ticks - times[prev]).astype(np.float64)
    weight = np.where((span > 0) & ~exact, offset / np.where(span > 0, span, 1.0), 0.0)
    result = values[prev] + weight[:, None] * (values[nxt] - values[prev])
    # The span a tick is interpolated across; a tick on a sample or after the last one: its age.
    age = np.where(exact, 0.0, np.where(nxt > prev, span, offset))
    return result, age


# ---------------------------------------------------------------------- reading


class BagReader:
    """A rosbag2 bag (folder, or one .db3/.mcap file) opened with rosbags for conversion."""

    def __init__(self, path: str | os.PathLike):
        """Open the bag; a missing path raises FileNotFoundError, an unreadable one ValueError."""
        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f'no bag at {self.path}: path does not exist')
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except (ReaderError, FileNotFoundError) as error:
            raise ValueError(f'{self.path}: not a readable rosbag2 bag ({error}); expected a '
                             f'folder with metadata.yaml and .db3 or .mcap files') from None
        self.typestore = get_typestore(Stores.ROS2_JAZZY)
        self.topics: dict[str, str | None] = {}
        self._connections: dict[str, list] = {}
        for connection in self._reader.connections:
            self._connections.setdefault(connection.topic, []).append(connection)
        for topic, connections in self._connections.items():
            types = {_normalize_type(c.msgtype) for c in connections}
            self.topics[topic] = types.pop() if len(types) == 1 else None

    def close(self) -> None:
        """Close the bag's storage files."""
        if self._reader.is_open:
            self._reader.close()

    def msgtype(self, topic: str, role: str) -> str:
        """Return the type of ``topic``, checking it exists and suits ``role`` (a CLI flag)."""
        if topic not in self.topics:
            listing = ', '.join(f'{t} [{m}]' for t, m in sorted(self.topics.items()))
            raise ValueError(f'{self.path}: no topic {topic!r} ({role}); the bag has: '
                             f'{listing or "no topics"}')
        msgtype = self.topics[topic]
        if msgtype is None:
            types = sorted({c.msgtype for c in self._connections[topic]})
            raise ValueError(f'{self.path}: topic {topic!r} ({role}) carries several types '
                             f'{types}; expected one of {list(ROLE_TYPES[role])}')
        if msgtype not in ROLE_TYPES[role]:
            raise ValueError(f'{self.path}: topic {topic!r} ({role}) has type {msgtype}; '
                             f'expected one of {list(ROLE_TYPES[role])}')
        return msgtype

    def message_count(self, topics: Sequence[str]) -> int:
        """Return how many messages the bag's metadata lists on ``topics``."""
        return sum(c.msgcount for t in topics for c in self._connections.get(t, []))

    def messages(self, topics: Sequence[str]) -> Iterator[tuple[str, int, int, Any]]:
        """Yield ``(topic, index, receive time ns, raw CDR)`` in bag order; index per topic."""
        connections = [c for t in topics for c in self._connections[t]]
        counters = dict.fromkeys(topics, 0)
        for connection, receive, raw in self._reader.messages(connections=connections):
            index = counters[connection.topic]
            counters[connection.topic] = index + 1
            yield connection.topic, index, int(receive), raw

    def decode(self, topic: str, index: int, receive: int, raw: Any) -> Any:
        """Deserialize one message; an unreadable one raises ValueError naming it."""
        msgtype = self.topics[topic]
        try:
            return self.typestore.deserialize_cdr(raw, msgtype)
        except Exception as error:  # noqa: B902 (any parse failure means a malformed message)
            raise ValueError(f'{self.where(topic, index, receive)}: cannot deserialize as '
                             f'{msgtype} ({type(error).__name__}: {error}); expected a CDR '
                             f'message of that type') from None

    def where(self, topic: str, index: int, time_ns: int | None = None) -> str:
        """Return ``'<bag>: topic '<t>', message <i> (t=... s)'`` for error messages."""
        when = '' if time_ns is None else f' (t={time_ns / _NS:.6f} s)'
        return f'{self.path}: topic {topic!r}, message {index}{when}'

    def first_joint_names(self, topic: str) -> list[str]:
        """Return the joint names of the first message on a JointState topic."""
        for _, index, receive, raw in self.messages([topic]):
            names = [str(n) for n in self.decode(topic, index, receive, raw).name]
            if not names:
                raise ValueError(f'{self.where(topic, index, receive)}: JointState has no '
                                 f'names; expected joint names (or pass --joint-names)')
            if len(set(names)) != len(names):
                raise ValueError(f'{self.where(topic, index, receive)}: JointState names '
                                 f'{names} repeat; expected distinct joint names')
            return names
        raise ValueError(f'{self.path}: topic {topic!r} (--joint-state-topic) has no messages; '
                         f'expected joint states')


def _normalize_type(msgtype: str) -> str:
    """Return ``pkg/msg/Name`` for ``pkg/msg/Name`` or ``pkg/Name``."""
    parts = msgtype.split('/')
    return f'{parts[0]}/msg/{parts[1]}' if len(parts) == 2 else msgtype


def _stamp(header: Any, receive: int, use_receive_time: bool) -> int:
    """Return the header stamp in ns, or ``receive`` where it is zero (or receive is forced)."""
    stamp = int(header.stamp.sec) * _NS + int(header.stamp.nanosec)
    return receive if use_receive_time or stamp == 0 else stamp


class _Collector:
    """Gather one topic's samples in bag order; ``finish`` sorts them by time."""

    def __init__(self, topic: str, msgtype: str):
        self.topic, self.msgtype = topic, msgtype
        self.times: list[int] = []
        self.index: list[int] = []
        self.values: list[np.ndarray] = []

    def add(self, index: int, time: int, value: np.ndarray | None = None) -> None:
        self.times.append(time)
        self.index.append(index)
        if value is not None:
            self.values.append(value)

    def finish(self) -> Samples:
        times = np.asarray(self.times, np.int64)
        order = np.argsort(times, kind='stable')
        values = np.asarray(self.values, np.float64)[order] if self.values else None
        return Samples(self.topic, self.msgtype, times[order],
                       np.asarray(self.index, np.int64)[order], values)


class _JointPicker:
    """Pick the policy joints out of JointState messages by name (cached per name list)."""

    def __init__(self, joint_names: Sequence[str]):
        self.joint_names = list(joint_names)
        self._orders: dict[tuple[str, ...], np.ndarray | list[str]] = {}

    def __call__(self, msg: Any, where: str) -> np.ndarray:
        names = tuple(str(n) for n in msg.name)
        position = np.asarray(msg.position, np.float64)
        if len(position) != len(names):
            raise ValueError(f'{where}: JointState has {len(names)} names but {len(position)} '
                             f'positions; expected one position per name')
        order = self._orders.get(names)
        if order is None:
            missing = [j for j in self.joint_names if j not in names]
            order = missing or np.array([names.index(j) for j in self.joint_names])
            self._orders[names] = order
        if isinstance(order, list):
            raise ValueError(f'{where}: JointState lacks joint(s) {order}; expected every joint '
                             f'of {self.joint_names}, got names {list(names)}')
        values = position[order]
        _require_finite(values, self.joint_names, where, 'position')
        return values


def _require_finite(values: np.ndarray, names: Sequence[str], where: str, what: str) -> None:
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        got = {names[i]: float(values[i]) for i in bad}
        raise ValueError(f'{where}: {what} {got} is not finite; expected finite numbers for '
                         f'joints {list(names)}')


@dataclass
class Streams:
    """Every stream of a recording: per-camera frame times, joint states, command, markers."""

    cameras: list[Samples]
    joints: Samples
    command: Samples | Trajectories
    markers: Samples | None


class StreamCollector:
    """
    Gather the policy streams one message at a time: a bag's first pass, or a live recording.

    Messages are read by attribute, so rosbags and rclpy messages both work. ``add`` raises
    ``ValueError`` starting with ``where(topic, index, time_ns)`` for a message that cannot be
    used, and then keeps nothing of it. With ``keep_frames`` every image is decoded when it is
    added (resized to ``image_size``, or checked against ``size_ref``) and kept in
    ``frames[topic][index]``; without, Image messages are only checked (the bag decodes the
    frames it needs in a second pass).
    """

    def __init__(self, image_types: Mapping[str, str], joint_topic: str, command_topic: str,
                 command_type: str, joint_names: Sequence[str],
                 where: Callable[[str, int, int | None], str], *,
                 episode_topic: str | None = None, episode_type: str | None = None,
                 image_size: tuple[int, int] | None = None, use_receive_time: bool = False,
                 size_ref: dict[str, Any] | None = None, keep_frames: bool = False):
        """Collect ``image_types`` (topic -> Image or CompressedImage type) and the others."""
        self.image_topics = list(image_types)
        self.joint_topic, self.command_topic = joint_topic, command_topic
        self.episode_topic = episode_topic
        self.picker = _JointPicker(joint_names)
        self.where = where
        self.image_size = image_size
        self.use_receive_time = use_receive_time
        self.size_ref = {} if size_ref is None else size_ref
        self.keep_frames = keep_frames
        self.frames: dict[str, dict[int, np.ndarray]] = {t: {} for t in self.image_topics}
        self._frame_bytes = 0
        self._collectors = {topic: _Collector(topic, msgtype)
                            for topic, msgtype in image_types.items()}
        self._collectors[joint_topic] = _Collector(joint_topic, JOINT_STATE)
        self._collectors[command_topic] = _Collector(command_topic, command_type)
        self._handlers: dict[str, Callable[[str, int, int, Any], None]] = {
            **dict.fromkeys(self.image_topics, self._add_image),
            joint_topic: self._add_joints, command_topic: self._add_command}
        if episode_topic is not None:
            self._collectors[episode_topic] = _Collector(episode_topic, episode_type)
            self._handlers[episode_topic] = self._add_marker
        self._trajectories: list[tuple[int, int, np.ndarray, np.ndarray]] = []

    @property
    def topics(self) -> list[str]:
        """Return every topic collected, images first."""
        return list(self._handlers)

    def add(self, topic: str, index: int, receive: int, msg: Any) -> None:
        """Add message ``index`` of ``topic``, received at ``receive`` ns."""
        self._handlers[topic](topic, index, receive, msg)

    def count(self, topic: str) -> int:
        """Return how many messages of ``topic`` were kept."""
        return len(self._collectors[topic].index)

    def frame_bytes(self) -> int:
        """Return the bytes of the decoded frames kept (``keep_frames``)."""
        return self._frame_bytes

    def empty_topics(self) -> list[str]:
        """Return the topics without a kept message."""
        return [topic for topic, collector in self._collectors.items() if not collector.index]

    def finish(self) -> Streams:
        """Return the streams, each sorted by time (every topic must have a message)."""
        assert not self.empty_topics(), self.empty_topics()
        command_collector = self._collectors[self.command_topic]
        if command_collector.msgtype == JOINT_TRAJECTORY:
            trajectories = sorted(self._trajectories, key=lambda item: item[0])
            command: Samples | Trajectories = Trajectories(
                self.command_topic, np.array([t[0] for t in trajectories], np.int64),
                np.array([t[1] for t in trajectories], np.int64),
                [t[2] for t in trajectories], [t[3] for t in trajectories])
        else:
            command = command_collector.finish()
        markers = (None if self.episode_topic is None
                   else self._collectors[self.episode_topic].finish())
        return Streams([self._collectors[t].finish() for t in self.image_topics],
                       self._collectors[self.joint_topic].finish(), command, markers)

    def _add_image(self, topic: str, index: int, receive: int, msg: Any) -> None:
        collector = self._collectors[topic]
        time = _stamp(msg.header, receive, self.use_receive_time)
        if self.keep_frames:
            frame = decode_frame(msg, collector.msgtype, self.where(topic, index, time),
                                 self.image_size, self.size_ref)
            self.frames[topic][index] = frame
            self._frame_bytes += frame.nbytes
        elif collector.msgtype == IMAGE:
            where = self.where(topic, index, time)
            try:
                check_raw_image(msg)
            except ValueError as error:
                raise ValueError(f'{where}: {error}') from None
            if self.image_size is None:
                _check_size(self.size_ref, (int(msg.height), int(msg.width)), where)
        collector.add(index, time)

    def _add_joints(self, topic: str, index: int, receive: int, msg: Any) -> None:
        time = _stamp(msg.header, receive, self.use_receive_time)
        values = self.picker(msg, self.where(topic, index, time))
        self._collectors[topic].add(index, time, values)

    def _add_command(self, topic: str, index: int, receive: int, msg: Any) -> None:
        collector = self._collectors[topic]
        names = self.picker.joint_names
        if collector.msgtype == JOINT_STATE:
            self._add_joints(topic, index, receive, msg)
        elif collector.msgtype == FLOAT64_MULTI_ARRAY:
            where = self.where(topic, index, receive)
            data = np.asarray(msg.data, np.float64)
            if data.shape != (len(names),):
                raise ValueError(f'{where}: Float64MultiArray holds {data.size} values; '
                                 f'expected {len(names)}, one per joint of {names}')
            _require_finite(data, names, where, 'data')
            collector.add(index, receive, data)
        else:
            start = _stamp(msg.header, receive, self.use_receive_time)
            due, positions = _trajectory_points(msg, start, names,
                                                self.where(topic, index, start))
            self._trajectories.append((start, index, due, positions))
            collector.add(index, start)

    def _add_marker(self, topic: str, index: int, receive: int, msg: Any) -> None:
        collector = self._collectors[topic]
        time = (_stamp(msg, receive, self.use_receive_time) if collector.msgtype == HEADER
                else receive)
        collector.add(index, time)


def _read_streams(bag: BagReader, image_topics: Sequence[str], joint_topic: str,
                  command_topic: str, episode_topic: str | None, joint_names: Sequence[str],
                  image_size: tuple[int, int] | None, use_receive_time: bool,
                  size_ref: dict[str, Any], progress: bool) -> Streams:
    """Read every message of the topics once: times, joint values, and image checks."""
    collector = StreamCollector(
        {topic: bag.topics[topic] for topic in image_topics}, joint_topic, command_topic,
        bag.topics[command_topic], joint_names, bag.where, episode_topic=episode_topic,
        episode_type=None if episode_topic is None else bag.topics[episode_topic],
        image_size=image_size, use_receive_time=use_receive_time, size_ref=size_ref)
    topics = collector.topics
    bar = tqdm(bag.messages(topics), total=bag.message_count(topics), desc='bag-to-dataset read',
               disable=not progress, dynamic_ncols=True, mininterval=2.0)
    for topic, index, receive, raw in bar:
        collector.add(topic, index, receive, bag.decode(topic, index, receive, raw))
    for topic in collector.empty_topics():
        role = ('--image-topic' if topic in image_topics else '--joint-state-topic'
                if topic == joint_topic else '--command-topic' if topic == command_topic
                else '--episode-topic')
        raise ValueError(f'{bag.path}: topic {topic!r} ({role}) has no messages; expected '
                         f'at least one')
    return collector.finish()


def _trajectory_points(msg: Any, start: int, joint_names: Sequence[str],
                       where: str) -> tuple[np.ndarray, np.ndarray]:
    """Return a JointTrajectory's due times (P,) ns and positions (P, dof) in policy order."""
    names = [str(n) for n in msg.joint_names]
    missing = [j for j in joint_names if j not in names]
    if missing:
        raise ValueError(f'{where}: JointTrajectory joint_names {names} lack {missing}; '
                         f'expected every joint of {list(joint_names)} (any order)')
    order = np.array([names.index(j) for j in joint_names])
    due, positions = [], []
    for number, point in enumerate(msg.points):
        values = np.asarray(point.positions, np.float64)
        if values.shape != (len(names),):
            raise ValueError(f'{where}, point {number}: {values.size} positions for '
                             f'{len(names)} joint_names; expected one position per joint')
        values = values[order]
        _require_finite(values, joint_names, f'{where}, point {number}', 'position')
        offset = int(point.time_from_start.sec) * _NS + int(point.time_from_start.nanosec)
        if offset < 0 or (due and start + offset < due[-1]):
            raise ValueError(f'{where}, point {number}: time_from_start {offset / _NS:.6f} s '
                             f'comes before the previous point; expected non-negative, '
                             f'non-decreasing times')
        due.append(start + offset)
        positions.append(values)
    return (np.asarray(due, np.int64),
            np.asarray(positions, np.float64).reshape(len(due), len(joint_names)))


def _check_size(size_ref: dict[str, Any], size: tuple[int, int], where: str) -> None:
    """
    Require every image to have the first image's (H, W) when --image-size is not given.

    ``size_ref`` holds the first size and where it came from (a caller may set both up front,
    and a ``hint`` that replaces the --image-size advice).
    """
    if 'size' not in size_ref:
        size_ref.update(size=size, where=where)
    elif size_ref['size'] != size:
        hint = size_ref.get('hint', 'pass --image-size H W to resize every frame')
        raise ValueError(f'{where}: image is {size[0]} x {size[1]} (H x W); expected '
                         f'{size_ref["size"][0]} x {size_ref["size"][1]} like {size_ref["where"]}'
                         f' ({hint})')


def decode_frame(msg: Any, msgtype: str, where: str, image_size: tuple[int, int] | None,
                 size_ref: dict[str, Any]) -> np.ndarray:
    """
    Decode an Image or CompressedImage to RGB uint8 (H, W, 3) at the store's frame size.

    With ``image_size`` the frame is resized to it (INTER_AREA), else its size must match
    ``size_ref`` (see :func:`_check_size`). Errors start with ``where``.
    """
    try:
        frame = image_to_rgb(msg, msgtype)
    except ValueError as error:
        raise ValueError(f'{where}: {error}') from None
    if image_size is not None:
        if frame.shape[:2] != image_size:
            frame = cv2.resize(frame, image_size[::-1], interpolation=cv2.INTER_AREA)
    else:
        _check_size(size_ref, frame.shape[:2], where)
    return frame


# ---------------------------------------------------------------------- planning


@dataclass
class Episode:
    """One episode's ticks and values; frames are message indices, decoded later."""

    ticks: np.ndarray  # int64 (T,) ns
    state: np.ndarray  # float32 (T, dof)
    action: np.ndarray  # float32 (T, dof)
    frames: list[np.ndarray]  # per camera int64 (T,) message index


@dataclass
class Plan:
    """The episodes of a recording, and what was left out of them."""

    episodes: list[Episode] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    cuts: list[dict[str, Any]] = field(default_factory=list)


def episode_arrays(episode: Episode, frames: Sequence[Mapping[int, np.ndarray]],
                   cameras: Sequence[str]) -> dict[str, np.ndarray]:
    """Return the store arrays of ``episode``; ``frames[c]`` maps camera c's indices to RGB."""
    arrays = {image_key(name, len(cameras)):
              np.stack([frames[c][i] for i in episode.frames[c].tolist()])
              for c, name in enumerate(cameras)}
    return {**arrays, STATE_KEY: episode.state, ACTION_KEY: episode.action}


def _seconds(ns: int | None) -> float | None:
    return None if ns is None else ns / _NS


def _segments(streams: Streams, gap_ns: int) -> tuple[list[tuple[int | None, int | None]],
                                                      int | None]:
    """Return the [lo, hi) windows between markers and joint-state gaps, and the first marker."""
    times = streams.joints.times
    cuts = set(times[1:][np.diff(times) > gap_ns].tolist())
    first_marker = None
    if streams.markers is not None:
        cuts |= set(streams.markers.times.tolist())
        first_marker = int(streams.markers.times[0])
    bounds: list[int | None] = [None, *sorted(cuts), None]
    return list(zip(bounds[:-1], bounds[1:])), first_marker


def plan_episodes(streams: Streams, rate: float, gap: float, max_age: float,
                  min_steps: int) -> Plan:
    """Cut the streams into episodes and resample every stream at the policy ticks."""
    plan = Plan()
    windows, first_marker = _segments(streams, int(round(gap * _NS)))
    for lo, hi in windows:
        if first_marker is not None and (lo is None or lo < first_marker):
            joints = streams.joints.window(lo, hi)
            if len(joints.times):
                plan.skipped.append({
                    'start_s': _seconds(int(joints.times[0])), 'end_s': _seconds(hi),
                    'steps': 0, 'reason': f'before the first episode marker on '
                                          f'{streams.markers.topic!r}'})
            continue
        _plan_window(streams, lo, hi, rate, int(round(max_age * _NS)), min_steps, plan)
    return plan


def _plan_window(streams: Streams, lo: int | None, hi: int | None, rate: float,
                 max_age_ns: int, min_steps: int, plan: Plan) -> None:
    cameras = [c.window(lo, hi) for c in streams.cameras]
    joints = streams.joints.window(lo, hi)
    command = streams.command.window(lo, hi)
    start = lo if lo is not None else int(joints.times[0]) if len(joints.times) else None

    def skip(reason: str, steps: int = 0, first: int | None = start,
             last: int | None = hi) -> None:
        plan.skipped.append({'start_s': _seconds(first), 'end_s': _seconds(last),
                             'steps': steps, 'reason': reason})

    empty = [s.topic for s in [*cameras, joints] if not len(s.times)]
    if isinstance(command, Trajectories):
        if command.first_defined() is None:
            empty.append(command.topic)
    elif not len(command.times):
        empty.append(command.topic)
    if empty:
        skip(f'no messages on {empty}')
        return
    firsts = {s.topic: int(s.times[0]) for s in [*cameras, joints]}
    lasts = {s.topic: int(s.times[-1]) for s in [*cameras, joints]}
    if isinstance(command, Trajectories):
        firsts[command.topic] = command.first_defined()
        lasts[command.topic] = command.coverage_end(len(command.starts) - 1)
    else:
        firsts[command.topic] = int(command.times[0])
        lasts[command.topic] = int(command.times[-1])
    t0 = max(firsts.values())
    t_end = min(lasts.values())
    if hi is not None:
        t_end = min(t_end, hi - 1)
    if t_end < t0:
        skip(f'no time at which every stream has data (the last stream starts at '
             f'{t0 / _NS:.6f} s, the first ends at {t_end / _NS:.6f} s)')
        return
    period = _NS / rate
    count = int(math.floor((t_end - t0) / period + 1e-9)) + 1
    ticks = t0 + np.round(np.arange(count) * period).astype(np.int64)
    ticks = ticks[ticks <= t_end]

    state, joint_age = _interpolate(joints, ticks)
    frames, ages, topics = [], [joint_age], [joints.topic]
    for camera in cameras:
        prev, age = _hold(camera, ticks)
        frames.append(camera.index[prev])
        ages.append(age)
        topics.append(camera.topic)
    if isinstance(command, Trajectories):
        action, command_age = command.evaluate(ticks)
    else:
        prev, command_age = _hold(command, ticks)
        action = command.values[prev]
    ages.append(command_age)
    topics.append(command.topic)
    ages = np.stack(ages)  # (streams, T)
    stale = (ages > max_age_ns).any(axis=0)

    row = 0
    while row < len(ticks):
        if stale[row]:
            stop = row + int(np.argmax(~stale[row:])) if (~stale[row:]).any() else len(ticks)
            worst = int(np.argmax(ages[:, row]))
            plan.cuts.append({'time_s': ticks[row] / _NS, 'topic': topics[worst],
                              'age_s': float(ages[worst, row]) / _NS,
                              'resumed_s': ticks[stop] / _NS if stop < len(ticks) else None})
            logger.info('cut at %.6f s: %s is %.3f s stale (--max-age %.3f s)',
                        ticks[row] / _NS, topics[worst], ages[worst, row] / _NS,
                        max_age_ns / _NS)
            row = stop
            continue
        stop = row + int(np.argmax(stale[row:])) if stale[row:].any() else len(ticks)
        if stop - row < min_steps:
            skip(f'{stop - row} steps, fewer than --min-steps {min_steps}', stop - row,
                 int(ticks[row]), int(ticks[stop - 1]))
        else:
            if np.isnan(action[row:stop]).any():  # pragma: no cover - t0 guarantees a command
                raise AssertionError('undefined command inside an episode')
            plan.episodes.append(Episode(
                ticks[row:stop], state[row:stop].astype(np.float32),
                action[row:stop].astype(np.float32), [f[row:stop] for f in frames]))
        row = stop


# ---------------------------------------------------------------------- writing


@dataclass
class BagConversion:
    """What one conversion wrote and left out."""

    path: Path  # the replay buffer
    lengths: list[int]  # steps of every episode written
    start_times: list[float]  # bag time (s) of every episode's first tick
    skipped: list[dict[str, Any]]  # episodes left out: start_s, end_s, steps, reason
    cuts: list[dict[str, Any]]  # stale ticks that ended an episode: time_s, topic, age_s

    def table(self) -> str:
        """Return a short report: a markdown table, then the skipped episodes and cuts."""
        lengths = np.array(self.lengths)
        rows = [('store', str(self.path)), ('episodes written', str(len(self.lengths))),
                ('steps', str(int(lengths.sum()))),
                ('steps per episode (min / mean / max)',
                 f'{lengths.min()} / {lengths.mean():.1f} / {lengths.max()}'),
                ('episodes skipped', str(len(self.skipped))),
                ('stale cuts', str(len(self.cuts)))]
        width = max(len(name) for name, _ in rows)
        lines = [f'| {"quantity":<{width}} | value |', f'| {"-" * width} | ----- |']
        lines += [f'| {name:<{width}} | {value} |' for name, value in rows]
        for item in self.skipped:
            end = '...' if item['end_s'] is None else f'{item["end_s"]:.3f}'
            start = '...' if item['start_s'] is None else f'{item["start_s"]:.3f}'
            lines.append(f'skipped {start} - {end} s: {item["reason"]}')
        for cut in self.cuts:
            lines.append(f'cut at {cut["time_s"]:.3f} s: {cut["topic"]} was {cut["age_s"]:.3f} '
                         f's old')
        return '\n'.join(lines)


def convert_bag(bag: str | os.PathLike, out: str | os.PathLike, *,
                image_topics: Sequence[str], joint_state_topic: str, command_topic: str,
                camera_names: Sequence[str] | None = None,
                joint_names: Sequence[str] | None = None, rate: float = 10.0,
                image_size: tuple[int, int] | None = None, episode_topic: str | None = None,
                gap: float = 1.0, max_age: float = 0.5, min_steps: int = 2,
                use_receive_time: bool = False, overwrite: bool = False,
                progress: bool = True) -> BagConversion:
    """
    Convert the rosbag2 bag ``bag`` into a replay buffer at ``out``; return what was written.

    See the module docstring for the mapping and the timing rules. Everything is read and
    checked before the store is created; a store left by a failure while writing is removed.
    """
    image_topics = list(image_topics)
    _check_settings(image_topics, joint_state_topic, command_topic, episode_topic, camera_names,
                    joint_names, rate, image_size, gap, max_age, min_steps)
    cameras = list(camera_names) if camera_names else default_camera_names(image_topics)
    if len(set(cameras)) != len(cameras):
        raise ValueError(f'camera names {cameras} (from --image-topic {image_topics}) repeat; '
                         f'pass --camera-names with one distinct name per image topic')
    size = None if image_size is None else (int(image_size[0]), int(image_size[1]))
    reader = BagReader(bag)
    try:
        roles = [(t, '--image-topic') for t in image_topics]
        roles += [(joint_state_topic, '--joint-state-topic'), (command_topic, '--command-topic')]
        if episode_topic is not None:
            roles.append((episode_topic, '--episode-topic'))
        types = {topic: reader.msgtype(topic, role) for topic, role in roles}
        names = list(joint_names) if joint_names else reader.first_joint_names(joint_state_topic)
        size_ref: dict[str, Any] = {}
        streams = _read_streams(reader, image_topics, joint_state_topic, command_topic,
                                episode_topic, names, size, use_receive_time, size_ref, progress)
        plan = plan_episodes(streams, rate, gap, max_age, min_steps)
        if not plan.episodes:
            reasons = '; '.join(sorted({s['reason'] for s in plan.skipped})) or 'no data'
            raise ValueError(f'{reader.path}: no episode of at least {min_steps} steps at '
                             f'{rate:g} Hz from {[*image_topics, joint_state_topic]} and '
                             f'{command_topic!r}; expected at least one ({len(plan.skipped)} '
                             f'skipped: {reasons}; {len(plan.cuts)} stale cuts)')
        out = Path(out)
        buffer = ReplayBuffer.create(out, overwrite=overwrite)
        try:
            frame_size = _write_episodes(reader, buffer, plan, streams, cameras, size, size_ref,
                                         progress)
            settings = {'rate': rate, 'gap': gap, 'max_age': max_age, 'min_steps': min_steps,
                        'use_receive_time': use_receive_time}
            buffer.set_attrs(_attrs(reader, plan, cameras, image_topics, joint_state_topic,
                                    command_topic, episode_topic, types, names, frame_size,
                                    settings))
        except BaseException:  # noqa: B902 (an interrupt, too, must not leave a partial store)
            shutil.rmtree(out, ignore_errors=True)
            raise
    finally:
        reader.close()
    lengths = [len(e.ticks) for e in plan.episodes]
    logger.info('converted %s: %d episodes, %d steps into %s (%d skipped, %d stale cuts)',
                bag, len(lengths), sum(lengths), out, len(plan.skipped), len(plan.cuts))
    return BagConversion(out, lengths, [e.ticks[0] / _NS for e in plan.episodes], plan.skipped,
                         plan.cuts)


def _check_settings(image_topics: list[str], joint_state_topic: str, command_topic: str,
                    episode_topic: str | None, camera_names: Sequence[str] | None,
                    joint_names: Sequence[str] | None, rate: float,
                    image_size: tuple[int, int] | None, gap: float, max_age: float,
                    min_steps: int) -> None:
    if not image_topics:
        raise ValueError('expected at least one --image-topic, got none')
    topics = [*image_topics, joint_state_topic, command_topic]
    topics += [] if episode_topic is None else [episode_topic]
    repeated = sorted({t for t in topics if topics.count(t) > 1})
    if repeated:
        raise ValueError(f'topics {repeated} are given for more than one role; expected '
                         f'distinct --image-topic, --joint-state-topic, --command-topic and '
                         f'--episode-topic')
    if camera_names and len(camera_names) != len(image_topics):
        raise ValueError(f'--camera-names gives {len(camera_names)} names {list(camera_names)} '
                         f'for {len(image_topics)} --image-topic {image_topics}; expected one '
                         f'name per topic')
    for name in camera_names or []:
        if not name or '/' in name:
            raise ValueError(f'camera name {name!r} must be non-empty and without "/"')
    if joint_names is not None and len(set(joint_names)) != len(joint_names):
        raise ValueError(f'--joint-names {list(joint_names)} repeat; expected distinct names')
    for flag, value in (('--rate', rate), ('--gap', gap), ('--max-age', max_age)):
        if not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            raise ValueError(f'{flag} must be a number > 0, got {value!r}')
    if isinstance(min_steps, bool) or not isinstance(min_steps, int) or min_steps < 1:
        raise ValueError(f'--min-steps must be an int >= 1, got {min_steps!r}')
    if image_size is not None and (len(image_size) != 2 or min(image_size) < 1):
        raise ValueError(f'--image-size must be H W >= 1, got {list(image_size)}')


def _write_episodes(reader: BagReader, buffer: ReplayBuffer, plan: Plan, streams: Streams,
                    cameras: list[str], size: tuple[int, int] | None,
                    size_ref: dict[str, Any], progress: bool) -> list[int]:
    """Decode the frames the ticks use (second pass) and add the episodes in order."""
    topics = [c.topic for c in streams.cameras]
    last_use: list[dict[int, int]] = [{} for _ in topics]  # per camera: message -> last episode
    for number, episode in enumerate(plan.episodes):
        for camera, indices in enumerate(episode.frames):
            last_use[camera].update(dict.fromkeys(indices.tolist(), number))
    needs = [[int(f.max()) for f in e.frames] for e in plan.episodes]
    decoded: list[dict[int, np.ndarray]] = [{} for _ in topics]
    seen = [-1] * len(topics)
    written = 0
    shape: list[int] = []

    def flush_ready() -> None:
        nonlocal written
        while written < len(plan.episodes) and all(
                seen[c] >= needs[written][c] for c in range(len(topics))):
            episode = plan.episodes[written]
            buffer.add_episode(episode_arrays(episode, decoded, cameras))
            for c in range(len(topics)):
                for i in set(episode.frames[c].tolist()):
                    if last_use[c][i] == written:
                        del decoded[c][i]
            written += 1

    # Same topics as the first pass, so every topic's message order (its indices) is the same.
    read_topics = [*topics, streams.joints.topic, streams.command.topic]
    if streams.markers is not None:
        read_topics.append(streams.markers.topic)
    bar = tqdm(reader.messages(read_topics), total=reader.message_count(read_topics),
               desc='bag-to-dataset write', disable=not progress, dynamic_ncols=True,
               mininterval=2.0)
    position = {t: c for c, t in enumerate(topics)}
    for topic, index, receive, raw in bar:
        camera = position.get(topic)
        if camera is None:
            continue
        seen[camera] = index
        if index in last_use[camera]:
            msg = reader.decode(topic, index, receive, raw)
            where = reader.where(topic, index, _stamp(msg.header, receive, False))
            frame = decode_frame(msg, reader.topics[topic], where, size, size_ref)
            decoded[camera][index] = frame
            shape = list(frame.shape[:2])
        flush_ready()
    bar.close()
    if written != len(plan.episodes):  # pragma: no cover - both passes read the same messages
        raise ValueError(f'{reader.path}: the second read of the image topics {topics} ended '
                         f'before the frames of episode {written}; expected the same messages '
                         f'as the first read')
    return shape


def _attrs(reader: BagReader, plan: Plan, cameras: list[str], image_topics: list[str],
           joint_state_topic: str, command_topic: str, episode_topic: str | None,
           types: Mapping[str, str], joint_names: list[str], frame_size: list[int],
           settings: Mapping[str, Any]) -> dict[str, Any]:
    """Describe the conversion in the store's root attributes (JSON)."""
    layout = layout_attrs(cameras, image_topics, joint_state_topic, command_topic,
                          episode_topic, types, joint_names, frame_size, settings['rate'],
                          settings['use_receive_time'], settings['max_age'],
                          settings['min_steps'])
    return {
        'source_format': 'rosbag2',
        'source': str(reader.path.resolve()),
        **layout,
        'gap_s': settings['gap'],
        'episode_start_times': [e.ticks[0] / _NS for e in plan.episodes],
        'episode_start_ns': [int(e.ticks[0]) for e in plan.episodes],
        'skipped': plan.skipped,
        'cuts': plan.cuts,
    }


def layout_attrs(cameras: Sequence[str], image_topics: Sequence[str], joint_state_topic: str,
                 command_topic: str, episode_topic: str | None, types: Mapping[str, str],
                 joint_names: Sequence[str], frame_size: Sequence[int], rate: float,
                 use_receive_time: bool, max_age: float, min_steps: int) -> dict[str, Any]:
    """Return the root attributes that describe a store made from topics: layout and timing."""
    keys = {image_key(c, len(cameras)): c for c in cameras}
    return {
        'topics': {'images': dict(zip(cameras, image_topics)), 'joint_states': joint_state_topic,
                   'command': command_topic, 'episode': episode_topic},
        'message_types': dict(types),
        'rate_hz': rate,
        'control_hz': rate,
        'joint_names': list(joint_names),
        'camera': cameras[0],
        'cameras': list(cameras),
        'image_keys': {camera: key for key, camera in keys.items()},
        'image_size': list(frame_size),
        'timestamps': 'receive time' if use_receive_time
        else 'header.stamp (receive time where zero)',
        'max_age_s': max_age,
        'min_steps': min_steps,
        'keys': {**{key: f'camera {camera!r} RGB uint8 (T, H, W, 3)'
                    for key, camera in keys.items()},
                 STATE_KEY: 'joint positions float32 (T, n), rad',
                 ACTION_KEY: 'commanded joint positions float32 (T, n), rad'},
    }


def main(argv: list[str] | None = None) -> int:
    """Console entry point: ``bag-to-dataset BAG --out STORE --image-topic T ...``."""
    parser = argparse.ArgumentParser(
        prog='bag-to-dataset',
        description='Convert a rosbag2 bag (sqlite3 or mcap) into a replay-buffer zarr store.')
    parser.add_argument('bag', type=Path, help='rosbag2 folder (metadata.yaml + .db3/.mcap)')
    parser.add_argument('--out', required=True, type=Path, help='replay-buffer store to write')
    parser.add_argument('--image-topic', action='append', required=True, dest='image_topics',
                        metavar='TOPIC', help='sensor_msgs/Image or CompressedImage topic '
                        '(repeat for several cameras)')
    parser.add_argument('--camera-names', nargs='+', default=None, metavar='NAME',
                        help='one name per --image-topic (default: from the topic names)')
    parser.add_argument('--joint-state-topic', required=True, metavar='TOPIC',
                        help='sensor_msgs/JointState topic: the state')
    parser.add_argument('--joint-names', nargs='+', default=None, metavar='NAME',
                        help='policy joint order (default: the names of the first JointState)')
    parser.add_argument('--command-topic', required=True, metavar='TOPIC',
                        help='trajectory_msgs/JointTrajectory, sensor_msgs/JointState or '
                        'std_msgs/Float64MultiArray topic: the action')
    parser.add_argument('--rate', type=float, default=10.0, metavar='HZ',
                        help='policy rate the streams are resampled to (default 10)')
    parser.add_argument('--image-size', type=int, nargs=2, default=None, metavar=('H', 'W'),
                        help='resize frames to H x W (INTER_AREA); else all must share a size')
    parser.add_argument('--episode-topic', default=None, metavar='TOPIC',
                        help='std_msgs/Header or String topic: each message starts an episode')
    parser.add_argument('--gap', type=float, default=1.0, metavar='SECONDS',
                        help='a joint-state pause longer than this cuts episodes (default 1)')
    parser.add_argument('--max-age', type=float, default=0.5, metavar='SECONDS',
                        help='a tick whose data is older than this ends the episode '
                        '(default 0.5)')
    parser.add_argument('--min-steps', type=int, default=2, metavar='N',
                        help='skip episodes with fewer ticks (default 2)')
    parser.add_argument('--use-receive-time', action='store_true',
                        help='time messages by when the bag received them, not header.stamp')
    parser.add_argument('--overwrite', action='store_true', help='replace an existing store')
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format='%(levelname)s %(name)s: %(message)s')
    try:
        result = convert_bag(
            args.bag, args.out, image_topics=args.image_topics,
            joint_state_topic=args.joint_state_topic, command_topic=args.command_topic,
            camera_names=args.camera_names, joint_names=args.joint_names, rate=args.rate,
            image_size=args.image_size, episode_topic=args.episode_topic, gap=args.gap,
            max_age=args.max_age, min_steps=args.min_steps,
            use_receive_time=args.use_receive_time, overwrite=args.overwrite)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f'bag-to-dataset: error: {error}', file=sys.stderr)
        return 2
    print(result.table())
    return 0


if __name__ == '__main__':
    sys.exit(main())
