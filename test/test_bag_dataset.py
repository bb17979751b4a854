"""bag-to-dataset: rosbag2 bags (sqlite3 and mcap, written here with rosbags) -> replay buffer."""

from dataclasses import dataclass, field

import cv2
import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_typestore, Stores
from sparse_policy_ros.training.bag_dataset import (
    convert_bag, default_camera_names, image_to_rgb, main as bag_main, Trajectories)
from sparse_policy_ros.training.replay_buffer import ReplayBuffer
from sparse_policy_ros.training.sequence_dataset import SequenceDataset

TS = get_typestore(Stores.ROS2_JAZZY)
T = TS.types
NS = 1_000_000_000
BASE = 1_700_000_000 * NS  # epoch-like bag times: too large for float64 nanoseconds
JOINTS = ['j0', 'j1', 'j2']
BAG_JOINT_ORDER = ['extra', 'j2', 'j0', 'j1']  # shuffled, with a joint the policy ignores
CAMERA = '/front/image_raw'
WRIST = '/wrist/image_raw/compressed'
JOINT_TOPIC = '/joint_states'
COMMAND_TOPIC = '/arm_controller/joint_trajectory'
EPISODE_TOPIC = '/episode'
H, W = 6, 8
STORAGES = [StoragePlugin.SQLITE3, StoragePlugin.MCAP]
STORAGE_IDS = ['sqlite3', 'mcap']

# The main scene (seconds after BASE): markers at 0.2 and 3.0, a joint-state pause 5.5-7.0,
# trajectories every 0.47 s (points 0.1 s apart). Worked out by hand from the timing rules:
EPISODE_STARTS = [0.60, 3.42, 7.18]  # the first point of each episode's first trajectory
EPISODE_LENGTHS = [24, 21, 18]  # up to the last frame (2.961, 8.961) / joint state (5.484)


def ns(seconds: float) -> int:
    return BASE + int(round(seconds * NS))


def rel(times_ns) -> np.ndarray:
    return (np.asarray(times_ns, np.int64) - BASE) / NS


def joint_value(seconds, joint: str) -> np.ndarray:
    """Return the true joint trajectory: a sine per joint (linear interpolation error < 4e-4)."""
    k = BAG_JOINT_ORDER.index(joint)
    return 0.8 * np.sin(np.pi * np.asarray(seconds) + 0.7 * k) + 0.1 * k


def command_value(message: int, due_seconds, joint: str) -> np.ndarray:
    """Position of trajectory ``message`` at a point due at ``due_seconds`` (linear in time)."""
    return 0.1 * message + 0.5 * np.asarray(due_seconds) + JOINTS.index(joint)


def frame_pixels(index: int, height: int = H, width: int = W) -> np.ndarray:
    """RGB frame whose red channel is its index; green and blue vary by row and column."""
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = index % 256
    image[..., 1] = (np.arange(height) * 20)[:, None]
    image[..., 2] = (np.arange(width) * 9 + 3)[None, :]
    return image


def header(time_ns: int):
    sec, nanosec = divmod(time_ns, NS)
    return T['std_msgs/msg/Header'](stamp=T['builtin_interfaces/msg/Time'](
        sec=sec, nanosec=nanosec), frame_id='')


def raw_image(stamp: int, pixels: np.ndarray, encoding: str = 'rgb8', pad: int = 5):
    """Image with ``pad`` junk bytes at the end of every row (step > width * 3)."""
    height, width = pixels.shape[:2]
    data = {'rgb8': pixels, 'bgr8': pixels[..., ::-1], 'mono8': pixels[..., :1],
            'rgba8': np.dstack([pixels, np.full((height, width), 77, np.uint8)]),
            'bgra8': np.dstack([pixels[..., ::-1], np.full((height, width), 77, np.uint8)])}
    rows = data.get(encoding, pixels).reshape(height, -1)
    padded = np.hstack([rows, np.full((height, pad), 255, np.uint8)])
    return T['sensor_msgs/msg/Image'](
        header=header(stamp), height=height, width=width, encoding=encoding, is_bigendian=0,
        step=padded.shape[1], data=padded.reshape(-1).copy())


def png_image(stamp: int, pixels: np.ndarray):
    ok, data = cv2.imencode('.png', cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR))
    assert ok
    return T['sensor_msgs/msg/CompressedImage'](header=header(stamp), format='rgb8; png '
                                                'compressed bgr8', data=data.reshape(-1))


def joint_state(stamp: int, names, positions):
    empty = np.zeros(0, np.float64)
    return T['sensor_msgs/msg/JointState'](header=header(stamp), name=list(names),
                                           position=np.asarray(positions, np.float64),
                                           velocity=empty, effort=empty)


def trajectory(stamp: int, names, points):
    """JointTrajectory; ``points`` is [(time_from_start s, positions in ``names`` order)]."""
    empty = np.zeros(0, np.float64)
    msgs = []
    for offset, positions in points:
        sec, nanosec = divmod(int(round(offset * NS)), NS)
        msgs.append(T['trajectory_msgs/msg/JointTrajectoryPoint'](
            positions=np.asarray(positions, np.float64), velocities=empty,
            accelerations=empty, effort=empty,
            time_from_start=T['builtin_interfaces/msg/Duration'](sec=sec, nanosec=nanosec)))
    return T['trajectory_msgs/msg/JointTrajectory'](header=header(stamp), joint_names=list(names),
                                                    points=msgs)


@dataclass
class Scene:
    """Messages of a synthetic bag and the truth the test checks against."""

    messages: list = field(default_factory=list)  # (topic, msgtype, receive ns, msg)
    frame_stamps: dict = field(default_factory=dict)  # topic -> [stamp ns]
    frame_ids: dict = field(default_factory=dict)  # topic -> [index encoded in the frame]
    command_stamps: list = field(default_factory=list)  # ZOH commands: [stamp ns]
    command_values: list = field(default_factory=list)  # ZOH commands: [(dof,) policy order]

    def add(self, topic: str, receive: int, msg) -> None:
        self.messages.append((topic, msg.__msgtype__, receive, msg))

    def write(self, path, storage=StoragePlugin.MCAP):
        with Writer(path, version=9, storage_plugin=storage) as writer:
            connections = {}
            for topic, msgtype, receive, msg in sorted(self.messages, key=lambda m: m[2]):
                if topic not in connections:
                    connections[topic] = writer.add_connection(topic, msgtype, typestore=TS)
                writer.write(connections[topic], receive, TS.serialize_cdr(msg, msgtype))
        return path


def make_scene(image: str = 'rgb8', command: str = 'trajectory', cameras=(CAMERA,),
               duration: float = 9.0, markers=(0.2, 3.0), joint_gap=(5.5, 7.0),
               camera_gap=None, encoding=None, odd_frame=None, joint_hook=None,
               trajectory_hook=None) -> Scene:
    scene = Scene()
    for c, topic in enumerate(cameras):
        kind = image if c == 0 else 'png'
        stamps = scene.frame_stamps[topic] = []
        ids = scene.frame_ids[topic] = []
        i = 0
        while (t := 0.011 + 0.003 * c + 0.05 * i) < duration:
            if camera_gap is None or not camera_gap[0] <= t < camera_gap[1]:
                pixels = frame_pixels(i) if i != odd_frame else frame_pixels(i, H + 2, W)
                msg = (png_image(ns(t), pixels) if kind == 'png'
                       else raw_image(ns(t), pixels, encoding or kind))
                scene.add(topic, ns(t + 0.03), msg)  # 30 ms camera latency
                stamps.append(ns(t))
                ids.append(i)
            i += 1
    i = 0
    while (t := 0.004 + 0.02 * i) < duration:
        if not joint_gap[0] <= t < joint_gap[1]:
            names = list(BAG_JOINT_ORDER)
            positions = [joint_value(t, j) for j in names]
            if joint_hook is not None:
                names, positions = joint_hook(i, names, positions)
            scene.add(JOINT_TOPIC, ns(t + 0.002), joint_state(ns(t), names, positions))
        i += 1
    if command == 'trajectory':
        names = ['j1', 'j0', 'j2']
        k = 0
        while (start := 0.03 + 0.47 * k) < duration:
            points = [(0.1 * j, [command_value(k, start + 0.1 * j, n) for n in names])
                      for j in range(1, 7)]
            msg_names = names if trajectory_hook is None else trajectory_hook(k, names)
            scene.add(COMMAND_TOPIC, ns(start), trajectory(0, msg_names, points))  # stamp 0
            k += 1
    elif command != 'none':
        i = 0
        while (t := 0.007 + 0.04 * i) < duration:
            values = [np.cos(t + k) for k in range(len(JOINTS))]
            scene.command_stamps.append(ns(t))
            scene.command_values.append(values)
            if command == 'joint_state':
                order = ['j2', 'extra', 'j1', 'j0']
                by_name = dict(zip(JOINTS, values), extra=-9.0)
                scene.add(COMMAND_TOPIC, ns(t + 0.001),
                          joint_state(ns(t), order, [by_name[n] for n in order]))
            else:
                scene.add(COMMAND_TOPIC, ns(t), T['std_msgs/msg/Float64MultiArray'](
                    layout=T['std_msgs/msg/MultiArrayLayout'](dim=[], data_offset=0),
                    data=np.asarray(values, np.float64)))
            i += 1
    for m in markers:
        scene.add(EPISODE_TOPIC, ns(m + 0.01), header(ns(m)))
    return scene


def convert(bag, out, **overrides):
    options = {'image_topics': [CAMERA], 'joint_state_topic': JOINT_TOPIC,
               'command_topic': COMMAND_TOPIC, 'joint_names': JOINTS,
               'episode_topic': EPISODE_TOPIC, 'progress': False}
    options.update(overrides)
    return convert_bag(bag, out, **options)


def expected_ticks(starts=EPISODE_STARTS, lengths=EPISODE_LENGTHS) -> list[np.ndarray]:
    return [ns(s) + np.arange(n, dtype=np.int64) * (NS // 10) for s, n in zip(starts, lengths)]


def expected_trajectory_action(ticks: np.ndarray) -> tuple[np.ndarray, int]:
    """
    Replace semantics for the main scene; also return how many ticks precede a first point.

    Before the new message's first point is due (0.1 s after its stamp) the command moves
    linearly from the old command at the takeover to that point, as the controller does.
    """
    t = rel(ticks)
    k = np.floor((t - 0.03) / 0.47 + 1e-9).astype(int)
    start = 0.03 + 0.47 * k
    early = t < start + 0.1 - 1e-9  # the new message's first point is not due yet
    weight = (t - start) / 0.1
    columns = [np.where(early, command_value(k - 1, start, j) + weight * (
        command_value(k, start + 0.1, j) - command_value(k - 1, start, j)),
        command_value(k, t, j)) for j in JOINTS]
    return np.stack(columns, axis=1), int(early.sum())


def check_frames(frames: np.ndarray, ticks: np.ndarray, scene: Scene, topic: str) -> None:
    """Require the frame at or before every tick (by header stamp)."""
    latest = np.searchsorted(np.asarray(scene.frame_stamps[topic], np.int64), ticks,
                             side='right') - 1
    assert (latest >= 0).all()
    expected = [frame_pixels(scene.frame_ids[topic][i]) for i in latest]
    np.testing.assert_array_equal(frames, np.stack(expected))


# ---------------------------------------------------------------------- conversions


@pytest.mark.parametrize('image', ['rgb8', 'png'])
@pytest.mark.parametrize('storage', STORAGES, ids=STORAGE_IDS)
def test_trajectory_bag_converts(tmp_path, storage, image):
    scene = make_scene(image=image)
    bag = scene.write(tmp_path / 'bag', storage)
    result = convert(bag, tmp_path / 'out.zarr')
    assert result.lengths == EPISODE_LENGTHS
    np.testing.assert_allclose(result.start_times, rel([ns(s) for s in EPISODE_STARTS]) +
                               BASE / NS, rtol=0, atol=1e-6)
    buffer = ReplayBuffer.open(tmp_path / 'out.zarr')
    assert buffer.keys == ['action', 'img', 'state']
    assert list(buffer.episode_lengths) == EPISODE_LENGTHS
    held_total = 0
    for number, ticks in enumerate(expected_ticks()):
        episode = buffer.get_episode(number)
        assert episode['state'].dtype == np.float32 and episode['action'].dtype == np.float32
        truth = np.stack([joint_value(rel(ticks), j) for j in JOINTS], axis=1)
        np.testing.assert_allclose(episode['state'], truth, rtol=0, atol=1e-3)
        action, held = expected_trajectory_action(ticks)
        held_total += held
        np.testing.assert_allclose(episode['action'], action, rtol=0, atol=1e-5)
        check_frames(episode['img'], ticks, scene, CAMERA)
    assert held_total > 0  # some ticks fall between a replacement and its first point
    attrs = buffer.attrs
    assert attrs['joint_names'] == JOINTS and attrs['control_hz'] == 10.0
    assert attrs['cameras'] == ['front'] and attrs['image_keys'] == {'front': 'img'}
    assert attrs['image_size'] == [H, W] and attrs['source'] == str(bag.resolve())
    assert attrs['topics']['joint_states'] == JOINT_TOPIC
    assert attrs['episode_start_ns'] == [ns(s) for s in EPISODE_STARTS]
    assert [s['reason'] for s in attrs['skipped']] == [
        f"before the first episode marker on '{EPISODE_TOPIC}'"]
    assert attrs['cuts'] == []

    dataset = SequenceDataset(tmp_path / 'out.zarr', image_keys={'front': 'img'}, horizon=8,
                              n_obs_steps=2, n_action_steps=4)
    item = dataset[0]
    assert tuple(item['images']['front'].shape) == (2, 3, H, W)
    assert tuple(item['state'].shape) == (2, 3) and tuple(item['action'].shape) == (8, 3)


@pytest.mark.parametrize('command', ['joint_state', 'float64'])
@pytest.mark.parametrize('storage', STORAGES, ids=STORAGE_IDS)
def test_joint_state_and_array_commands_hold_the_latest(tmp_path, storage, command):
    scene = make_scene(command=command)
    result = convert(scene.write(tmp_path / 'bag', storage), tmp_path / 'out.zarr')
    # Commands start at 0.207 / 3.007 / 7.007 (25 Hz): the episodes start at the first frame
    # or joint state after the marker / pause instead (0.211, 3.011, 7.011).
    starts = [0.211, 3.011, 7.011]
    lengths = [28, 25, 20]  # up to 2.961 (frame), 5.484 (joint state), 8.961 (frame)
    assert result.lengths == lengths
    buffer = ReplayBuffer.open(tmp_path / 'out.zarr')
    stamps = np.asarray(scene.command_stamps, np.int64)
    values = np.asarray(scene.command_values)
    for number, ticks in enumerate(expected_ticks(starts, lengths)):
        episode = buffer.get_episode(number)
        latest = np.searchsorted(stamps, ticks, side='right') - 1
        np.testing.assert_allclose(episode['action'], values[latest], rtol=0, atol=1e-6)
        truth = np.stack([joint_value(rel(ticks), j) for j in JOINTS], axis=1)
        np.testing.assert_allclose(episode['state'], truth, rtol=0, atol=1e-3)


def test_default_joint_names_come_from_the_first_joint_state(tmp_path):
    scene = make_scene(command='joint_state')
    result = convert(scene.write(tmp_path / 'bag'), tmp_path / 'out.zarr', joint_names=None)
    buffer = ReplayBuffer.open(tmp_path / 'out.zarr')
    assert buffer.attrs['joint_names'] == BAG_JOINT_ORDER
    ticks = expected_ticks([0.211], result.lengths[:1])[0]
    episode = buffer.get_episode(0)
    truth = np.stack([joint_value(rel(ticks), j) for j in BAG_JOINT_ORDER], axis=1)
    np.testing.assert_allclose(episode['state'], truth, rtol=0, atol=1e-3)
    np.testing.assert_array_equal(episode['action'][:, 0], -9.0)  # 'extra' of the commands


@pytest.mark.parametrize('use_receive_time', [False, True])
@pytest.mark.parametrize('storage', STORAGES, ids=STORAGE_IDS)
def test_newer_trajectory_replaces_the_older_from_its_stamp(tmp_path, storage,
                                                            use_receive_time):
    scene = make_scene(command='none', duration=3.0, markers=(), joint_gap=(9, 9))
    # A: stamped 0.05, points every 0.1 s to 2.55 on the line d. B: received at 1.6 but stamped
    # 1.83 (due later), points 1.93 ... 2.83 on the line 5 - d: it takes over at 1.83.
    first = [(0.1 * j, [0.1 * j + 0.05] * 3) for j in range(1, 26)]
    second = [(0.1 * j, [5 - (1.83 + 0.1 * j)] * 3) for j in range(1, 11)]
    scene.add(COMMAND_TOPIC, ns(0.06), trajectory(ns(0.05), JOINTS, first))
    scene.add(COMMAND_TOPIC, ns(1.6), trajectory(ns(1.83), JOINTS, second))
    result = convert(scene.write(tmp_path / 'bag', storage), tmp_path / 'out.zarr',
                     episode_topic=None, use_receive_time=use_receive_time)
    assert len(result.lengths) == 1
    buffer = ReplayBuffer.open(tmp_path / 'out.zarr')
    episode = buffer.get_episode(0)
    takeover = 1.6 if use_receive_time else 1.83
    start = 0.16 if use_receive_time else 0.15  # A's first point (receive time 0.06 + 0.1)
    ticks = ns(start) + np.arange(len(episode['action'])) * (NS // 10)
    t = rel(ticks)
    offset = 0.01 if use_receive_time else 0.0  # A's points move with its start
    due_b = takeover + 0.1
    # Between the takeover and B's first point: from A's value then to that point (3.07).
    held = takeover - offset
    expected = np.where(t < takeover, t - offset,
                        np.where(t < due_b, held + (t - takeover) / 0.1 * (3.07 - held),
                                 5 - 1.83 - (t - takeover)))
    np.testing.assert_allclose(episode['action'][:, 0], expected, atol=1e-5)
    assert ((t >= takeover) & (t < due_b)).sum() == 1  # one tick between takeover and point
    assert rel(ticks[-1]) <= takeover + 1.0 + 1e-9  # until B's last point
    truth = joint_value(t - (0.002 if use_receive_time else 0.0), 'j0')
    np.testing.assert_allclose(episode['state'][:, 0], truth, rtol=0, atol=1e-3)
    other_clock = joint_value(t - (0.0 if use_receive_time else 0.002), 'j0')
    assert np.abs(episode['state'][:, 0] - other_clock).max() > 2e-3  # the clocks tell apart


def test_stale_streams_cut_episodes(tmp_path):
    scene = make_scene(camera_gap=(4.0, 4.8))
    bag = scene.write(tmp_path / 'bag')
    # --gap 2 keeps the joint-state pause (5.484 -> 7.004) inside one window: --max-age cuts.
    result = convert(bag, tmp_path / 'out.zarr', gap=2.0)
    assert result.lengths == [24, 11, 7, 20]
    assert [(c['topic'], round(c['time_s'] - BASE / NS, 3), round(c['resumed_s'] - BASE / NS, 3))
            for c in result.cuts] == [(CAMERA, 4.52, 4.82), (JOINT_TOPIC, 5.52, 7.02)]
    buffer = ReplayBuffer.open(tmp_path / 'out.zarr')
    assert buffer.attrs['episode_start_ns'] == [ns(s) for s in (0.6, 3.42, 4.82, 7.02)]
    assert len(buffer.attrs['cuts']) == 2
    ticks = expected_ticks([7.02], [20])[0]
    check_frames(buffer.get_episode(3)['img'], ticks, scene, CAMERA)


def test_string_markers_start_episodes_at_their_receive_time(tmp_path):
    scene = make_scene(markers=())
    for seconds in (0.2, 3.0, 8.5):
        scene.add(EPISODE_TOPIC, ns(seconds + 0.01), T['std_msgs/msg/String'](data='start'))
    result = convert(scene.write(tmp_path / 'bag'), tmp_path / 'out.zarr')
    # The third marker (received 8.51) ends episode C before it: 7.18 ... 8.38 (last frame
    # 8.461). D's only trajectory (8.96) has its first point at 9.06, after the last frame.
    assert result.lengths == [24, 21, 13]
    assert result.skipped[-1]['start_s'] == pytest.approx(BASE / NS + 8.51, abs=1e-6)
    assert result.skipped[-1]['reason'].startswith('no time at which every stream has data')


def test_multi_camera_keys_and_dataset(tmp_path):
    scene = make_scene(cameras=(CAMERA, WRIST))
    bag = scene.write(tmp_path / 'bag', StoragePlugin.SQLITE3)
    assert default_camera_names([CAMERA, WRIST]) == ['front', 'wrist']
    convert(bag, tmp_path / 'out.zarr', image_topics=[CAMERA, WRIST])
    buffer = ReplayBuffer.open(tmp_path / 'out.zarr')
    assert buffer.keys == ['action', 'img_front', 'img_wrist', 'state']
    assert buffer.attrs['image_keys'] == {'front': 'img_front', 'wrist': 'img_wrist'}
    for number, ticks in enumerate(expected_ticks()):
        episode = buffer.get_episode(number)
        check_frames(episode['img_front'], ticks, scene, CAMERA)
        check_frames(episode['img_wrist'], ticks, scene, WRIST)
    dataset = SequenceDataset(buffer, image_keys=buffer.attrs['image_keys'], horizon=4,
                              n_obs_steps=2, n_action_steps=2)
    item = dataset[len(dataset) - 1]
    assert set(item['images']) == {'front', 'wrist'}
    assert tuple(item['images']['wrist'].shape) == (2, 3, H, W)


def test_image_size_resizes_with_inter_area(tmp_path):
    bag = make_scene(odd_frame=21).write(tmp_path / 'bag')
    convert(bag, tmp_path / 'out.zarr', image_size=(3, 4))
    buffer = ReplayBuffer.open(tmp_path / 'out.zarr')
    frames = buffer.get_episode(0)['img']
    assert frames.shape[1:] == (3, 4, 3) and buffer.attrs['image_size'] == [3, 4]
    ticks = expected_ticks()[0]
    index = np.searchsorted(make_scene().frame_stamps[CAMERA], ticks, side='right') - 1
    expected = [cv2.resize(frame_pixels(i, H + 2 if i == 21 else H, W), (4, 3),
                           interpolation=cv2.INTER_AREA) for i in index]
    assert 21 in index  # the odd-sized frame is used (and resized)
    np.testing.assert_array_equal(frames, np.stack(expected))


@pytest.mark.parametrize('encoding', ['rgb8', 'bgr8', 'mono8', 'rgba8', 'bgra8'])
def test_image_encodings_decode_to_rgb(encoding):
    pixels = frame_pixels(42)
    rgb = image_to_rgb(raw_image(1, pixels, encoding, pad=3), 'sensor_msgs/msg/Image')
    expected = np.repeat(pixels[..., :1], 3, axis=2) if encoding == 'mono8' else pixels
    np.testing.assert_array_equal(rgb, expected)
    assert rgb.flags['C_CONTIGUOUS'] and rgb.dtype == np.uint8


def test_min_steps_skips_and_cli_summary(tmp_path, capsys):
    bag = make_scene().write(tmp_path / 'bag', StoragePlugin.SQLITE3)
    rc = bag_main([str(bag), '--out', str(tmp_path / 'out.zarr'), '--image-topic', CAMERA,
                   '--joint-state-topic', JOINT_TOPIC, '--command-topic', COMMAND_TOPIC,
                   '--joint-names', *JOINTS, '--episode-topic', EPISODE_TOPIC,
                   '--min-steps', '22'])
    assert rc == 0
    out = capsys.readouterr().out
    assert '| episodes written' in out and '| 1 |' in out
    assert out.count('fewer than --min-steps 22') == 2
    buffer = ReplayBuffer.open(tmp_path / 'out.zarr')
    assert list(buffer.episode_lengths) == [24]
    assert [s['steps'] for s in buffer.attrs['skipped']] == [0, 21, 18]


# ---------------------------------------------------------------------- errors


def check_error(tmp_path, scene_or_bag, match_all, **overrides):
    bag = scene_or_bag if not isinstance(scene_or_bag, Scene) \
        else scene_or_bag.write(tmp_path / 'bag')
    with pytest.raises(ValueError) as caught:
        convert(bag, tmp_path / 'out.zarr', **overrides)
    message = str(caught.value)
    assert str(bag) in message
    for text in match_all:
        assert text in message, message
    assert not (tmp_path / 'out.zarr').exists()
    return message


def test_missing_topic_lists_the_bags_topics(tmp_path):
    check_error(tmp_path, make_scene(), ["no topic '/nope' (--command-topic)", CAMERA,
                                         JOINT_TOPIC, 'trajectory_msgs/msg/JointTrajectory'],
                command_topic='/nope')


def test_wrong_message_type_for_a_role(tmp_path):
    check_error(tmp_path, make_scene(), [f"topic '{EPISODE_TOPIC}' (--joint-state-topic) has "
                                         f'type std_msgs/msg/Header',
                                         'sensor_msgs/msg/JointState'],
                joint_state_topic=EPISODE_TOPIC, episode_topic=None)


def test_unsupported_encoding(tmp_path):
    check_error(tmp_path, make_scene(encoding='yuv422'),
                [f"topic '{CAMERA}', message 0", "encoding 'yuv422' is not supported", 'rgb8'])


@pytest.mark.parametrize('image', ['rgb8', 'png'])
def test_image_size_must_match_without_image_size(tmp_path, image):
    check_error(tmp_path, make_scene(image=image, odd_frame=21),  # a frame that a tick uses
                [f"topic '{CAMERA}', message 21", f'image is {H + 2} x {W}',
                 f'expected {H} x {W}', '--image-size'])


def test_joint_state_missing_a_joint(tmp_path):
    def drop_j1(i, names, positions):
        if i == 7:
            k = names.index('j1')
            return names[:k] + names[k + 1:], positions[:k] + positions[k + 1:]
        return names, positions
    check_error(tmp_path, make_scene(joint_hook=drop_j1),
                [f"topic '{JOINT_TOPIC}', message 7", "lacks joint(s) ['j1']"])


def test_joint_state_nan_position(tmp_path):
    def nan_j2(i, names, positions):
        if i == 10:
            positions = list(positions)
            positions[names.index('j2')] = float('nan')
        return names, positions
    check_error(tmp_path, make_scene(joint_hook=nan_j2),
                [f"topic '{JOINT_TOPIC}', message 10", "'j2': nan", 'not finite'])


def test_trajectory_joint_names_must_match(tmp_path):
    def rename(k, names):
        return ['j1', 'j0', 'jX'] if k == 3 else names
    check_error(tmp_path, make_scene(trajectory_hook=rename),
                [f"topic '{COMMAND_TOPIC}', message 3", "lack ['j2']", 'JointTrajectory'])


def test_no_episode_long_enough(tmp_path):
    check_error(tmp_path, make_scene(), ['no episode of at least 100 steps',
                                         'fewer than --min-steps 100', JOINT_TOPIC],
                min_steps=100)


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    bag = make_scene().write(tmp_path / 'bag', StoragePlugin.SQLITE3)
    rc = bag_main([str(bag), '--out', str(tmp_path / 'out.zarr'), '--image-topic', '/nope',
                   '--joint-state-topic', JOINT_TOPIC, '--command-topic', COMMAND_TOPIC])
    captured = capsys.readouterr()
    assert rc == 2 and captured.out == ''
    assert captured.err.startswith('bag-to-dataset: error: ')
    assert "no topic '/nope' (--image-topic)" in captured.err and str(bag) in captured.err
    assert 'Traceback' not in captured.err


def test_jittered_teleop_commands_are_followed_as_the_controller_follows_them():
    # A teleop device at 10 Hz: one-point commands due one period after their stamps, the
    # stamps +-2 ms late or early. Before a command's point is due the controller moves from
    # the command in force towards it, so each tick gets (almost) the target meant for it.
    rng = np.random.default_rng(3)
    period = NS // 10
    n = 40
    starts = np.arange(n, dtype=np.int64) * period + rng.integers(-2_000_000, 2_000_001, n)
    targets = [np.full((1, 2), 0.1 * k) for k in range(n)]
    commands = Trajectories('/teleop', starts, np.arange(n, dtype=np.int64),
                            [np.array([s + period]) for s in starts], targets)
    ticks = np.arange(2, n, dtype=np.int64) * period
    values, age = commands.evaluate(ticks)
    meant = 0.1 * (np.arange(2, n) - 1)  # the target due at each tick
    assert np.all(np.isfinite(values)) and np.all(age <= 4_000_000)  # at most the jitter
    assert np.max(np.abs(values[:, 0] - meant)) < 0.01  # a held command would be 0.1 off
