"""recorder_node: expert-teleoperated sim_node episodes recorded over loopback DDS into a store."""

import json
import threading
import time

from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray
import numpy as np
import pytest
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image, JointState
from sparse_policy_ros.ros import recorder_node
from sparse_policy_ros.ros.diagnostics import status_values
from sparse_policy_ros.ros.image_conversion import rgb_to_image_fields
from sparse_policy_ros.ros.params import RECORDER_PARAMS, values
from sparse_policy_ros.ros.recorder_node import (DemoRecorder, RECORDED_EPISODES, RecorderNode,
                                                 settings_from_parameters)
from sparse_policy_ros.ros.sim_node import SimNode
from sparse_policy_ros.ros.trajectory import seconds_to_stamp
from sparse_policy_ros.training.replay_buffer import ReplayBuffer
from sparse_policy_ros.training.sequence_dataset import SequenceDataset
from std_msgs.msg import Header, String
from std_srvs.srv import Trigger
from test_ros_sim_node import close_node, JOINTS
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

pytestmark = pytest.mark.ros

COMMAND_TOPIC = '/arm_controller/joint_trajectory'
IMAGE_TOPIC = 'camera/front/image_raw'
DEEP = QoSProfile(depth=1000, reliability=ReliabilityPolicy.RELIABLE)
NS = 1_000_000_000
SIZE = 32


@pytest.fixture
def make_recorder(ros_harness):
    def make(name: str = 'recorder_node', **params) -> RecorderNode:
        params = {'diagnostics_period': 0.1, 'joint_names': JOINTS, **params}
        node = RecorderNode(name, context=ros_harness.context, parameter_overrides=[
            Parameter(key, value=value) for key, value in params.items()])
        return ros_harness.add_node(node, cleanup=close_node)

    return make


def trigger(harness, name: str) -> Trigger.Response:
    return harness.call(Trigger, name, Trigger.Request())


def recorder_status(harness, diagnostics, node: str = 'recorder_node', **expected) -> dict:
    """Wait for a status of ``node`` whose values include ``expected``; return its values."""
    def find():
        for array in reversed(diagnostics.snapshot()):
            for status in array.status:
                if status.name == f'{node}: recorder':
                    found = status_values(status)
                    return found if expected.items() <= found.items() else None
        return None
    return harness.wait_for(find, 10.0, f'{node} status with {expected}')


def ns_of(stamp) -> int:
    return int(stamp.sec) * NS + int(stamp.nanosec)


def expected_actions(commands, ticks: np.ndarray) -> np.ndarray:
    """Return the commanded position at each tick: the point of the latest trajectory due."""
    due = np.array([ns_of(m.header.stamp) + ns_of(m.points[0].time_from_start)
                    for m in commands])
    points = np.array([[m.points[0].positions[JOINTS.index(j)] for j in JOINTS]
                       for m in commands])
    order = np.argsort(due)
    index = np.searchsorted(due[order], ticks, side='right') - 1
    assert index.min() >= 0
    return points[order][index]


def test_expert_teleop_episodes_are_recorded_discarded_and_refused(
        ros_harness, make_recorder, tmp_path):
    store = tmp_path / 'demos.zarr'
    outcomes = ros_harness.collect(String, '/sim_node/episode')
    starts = ros_harness.collect(Header, '/sim_node/episode_start')
    commands = ros_harness.collect(JointTrajectory, COMMAND_TOPIC, DEEP)
    joint_states = ros_harness.collect(JointState, 'joint_states', DEEP)
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics', DEEP)
    bad_publisher = ros_harness.node.create_publisher(JointState, 'joint_states', 10)
    sim = ros_harness.add_node(SimNode(context=ros_harness.context, parameter_overrides=[
        Parameter(name, value=value) for name, value in {
            'teleop': 'expert', 'autoreset': False, 'real_time_factor': 3.0,
            'image_size': SIZE, 'camera_rate': 10.0, 'max_episode_time': 8.0,
            'seed': 17}.items()]), cleanup=close_node)
    make_recorder(output_path=str(store))
    # Joint names the sim does not have: every joint state and command is unusable.
    make_recorder('wrong_joints', output_path=str(tmp_path / 'never.zarr'),
                  joint_names=['a', 'b', 'c', 'd'])

    refused = trigger(ros_harness, '/recorder_node/stop')
    assert not refused.success
    assert 'not recording' in refused.message
    assert not trigger(ros_harness, '/recorder_node/discard').success

    def begin_episode(seed: int, *recorders: str) -> int:
        """Reset the sim to ``seed``, wait for the episode's start, start the recorders."""
        assert sim.set_parameters([Parameter('seed', value=seed)])[0].successful
        response = trigger(ros_harness, '/sim_node/reset_episode')
        assert response.success, response.message
        number = response.message.split()[1]  # 'episode N started with seed S'
        ros_harness.wait_for(lambda: any(m.frame_id == number for m in starts.snapshot()),
                             10.0, f'episode {number} starting')
        for recorder in recorders:
            started = trigger(ros_harness, f'/{recorder}/start')
            assert started.success, started.message
        return int(number)

    def outcome_of(number: int) -> dict:
        return ros_harness.wait_for(
            lambda: next((o for o in map(json.loads, (m.data for m in outcomes.snapshot()))
                          if o['episode'] == number), None), 30.0, f'episode {number} ending')

    # Episode 0, with a bad message in the middle; the wrong-joints recorder records too.
    number = begin_episode(17, 'recorder_node', 'wrong_joints')
    again = trigger(ros_harness, '/recorder_node/start')
    assert not again.success and 'already recording episode 0' in again.message
    bad_publisher.publish(JointState(name=['not_a_joint'], position=[0.0]))
    status = recorder_status(ros_harness, diagnostics, state='recording')
    status = recorder_status(ros_harness, diagnostics, **{'bad joint_states': '1'})
    assert int(status[f'messages {IMAGE_TOPIC}']) > 0
    first = outcome_of(number)
    queued = trigger(ros_harness, '/recorder_node/stop')
    assert queued.success, queued.message
    assert queued.message.startswith(f'queued: episode 0 being written to {store}')
    # The writer thread reports the outcome on /diagnostics.
    status = recorder_status(ros_harness, diagnostics, episodes_written='1', writes_pending='0')
    assert status['last_result'].startswith(f'episode 0 written to {store}: ')
    unusable = trigger(ros_harness, '/wrong_joints/stop')
    assert not unusable.success
    assert 'episode 0 not written' in unusable.message
    assert "'joint_states' (joint_state_topic)" in unusable.message
    assert 'lacks joint(s)' in unusable.message
    assert not (tmp_path / 'never.zarr').exists()

    # An episode started and thrown away, then episode 1.
    begin_episode(4, 'recorder_node')
    recorder_status(ros_harness, diagnostics, state='recording')
    discarded = trigger(ros_harness, '/recorder_node/discard')
    assert discarded.success and discarded.message.startswith('discarded episode 1')
    second = outcome_of(begin_episode(10, 'recorder_node'))
    queued = trigger(ros_harness, '/recorder_node/stop')
    assert queued.success, queued.message
    assert queued.message.startswith('queued: episode 1 being written')
    status = recorder_status(ros_harness, diagnostics, state='idle', episodes_written='2',
                             writes_pending='0')
    assert status['last_result'].startswith('episode 1 written')
    assert status['write_errors'] == '0' and status['last_write_error'] == 'none'
    assert status['episodes_discarded'] == '1' and status['bad_messages'] == '1'
    assert status['store'] == str(store)

    buffer = ReplayBuffer.open(store)
    assert buffer.n_episodes == 2
    assert buffer.keys == ['action', 'img', 'state']
    lengths = buffer.episode_lengths
    np.testing.assert_array_equal(buffer.episode_ends, np.cumsum(lengths))
    for length, outcome in zip(lengths, (first, second)):
        # The expert starts command_delay (0.15 s) into the episode, at 10 Hz.
        assert abs(length - 10 * (outcome['duration_s'] - 0.15)) <= 4, (length, outcome)
    assert buffer.array('img').dtype == np.uint8
    assert buffer.array('img').shape == (buffer.n_steps, SIZE, SIZE, 3)
    assert buffer.array('state').shape == buffer.array('action').shape == (buffer.n_steps, 4)
    attrs = buffer.attrs
    assert attrs['joint_names'] == JOINTS and attrs['control_hz'] == 10.0
    assert attrs['image_size'] == [SIZE, SIZE] and attrs['topics']['command'] == COMMAND_TOPIC
    recorded = attrs[RECORDED_EPISODES]
    assert [(r['episode'], r['steps']) for r in recorded] == [(0, lengths[0]), (1, lengths[1])]

    stamps = np.array([ns_of(m.header.stamp) for m in joint_states.snapshot()
                       if list(m.name) == JOINTS])
    positions = np.array([m.position for m in joint_states.snapshot() if list(m.name) == JOINTS])
    for index, entry in enumerate(recorded):
        episode = buffer.get_episode(index)
        ticks = entry['start_ns'] + np.round(np.arange(lengths[index]) * NS / 10).astype(np.int64)
        # Every action is exactly a target the expert commanded, the one in force at the step.
        np.testing.assert_array_equal(episode['action'],
                                      expected_actions(commands.snapshot(), ticks)
                                      .astype(np.float32))
        assert np.ptp(episode['action'], axis=0).max() > 0.1  # the arm was driven
        state = np.stack([np.interp(ticks, stamps, positions[:, j]) for j in range(4)], axis=1)
        # Interpolated between the joint states around each step (a step later: ~0.05 rad).
        np.testing.assert_allclose(episode['state'], state, atol=2e-3)
        assert not np.array_equal(episode['img'][0], episode['img'][-1])

    dataset = SequenceDataset(store, horizon=8, n_obs_steps=2, n_action_steps=4)
    item = dataset[0]
    assert item['images']['front'].shape == (2, 3, SIZE, SIZE)
    assert item['state'].shape == (2, 4) and item['action'].shape == (8, 4)


def image_msg(stamp_ns: int, value: int, size: int = 8) -> Image:
    msg = Image(**rgb_to_image_fields(np.full((size, size, 3), value % 256, np.uint8)))
    msg.header.stamp = Time(sec=stamp_ns // NS, nanosec=stamp_ns % NS)
    return msg


def joint_msg(stamp_ns: int, q) -> JointState:
    msg = JointState(name=list(reversed(JOINTS)), position=[float(v) for v in reversed(q)])
    msg.header.stamp = Time(sec=stamp_ns // NS, nanosec=stamp_ns % NS)
    return msg


def command_msg(stamp_ns: int, q) -> JointTrajectory:
    sec, nanosec = seconds_to_stamp(0.1)
    msg = JointTrajectory(joint_names=JOINTS, points=[JointTrajectoryPoint(
        positions=[float(v) for v in q], time_from_start=Duration(sec=sec, nanosec=nanosec))])
    msg.header.stamp = Time(sec=stamp_ns // NS, nanosec=stamp_ns % NS)
    return msg


def feed(recorder: DemoRecorder, seconds: float, camera_gap: tuple[float, float] = (0, 0)):
    """Give the recorder 50 Hz joint states, 10 Hz commands and 20 Hz frames for ``seconds``."""
    for k in range(int(round(seconds * 100)) + 1):
        t = k * NS // 100
        q = np.full(4, 0.01 * k)
        if k % 2 == 0:
            recorder.add('joint_states', joint_msg(t, q), t)
        if k % 10 == 0:
            recorder.add(COMMAND_TOPIC, command_msg(t, q + 0.1), t)
        if k % 5 == 0 and not camera_gap[0] <= t / NS < camera_gap[1]:
            recorder.add(IMAGE_TOPIC, image_msg(t, k), t)


def recorder_settings(ros_env, path, **changes):
    node = RecorderNode(context=ros_env, parameter_overrides=[
        Parameter(name, value=value) for name, value in {
            'output_path': str(path), 'joint_names': JOINTS, **changes}.items()])
    try:
        return settings_from_parameters(values(node, RECORDER_PARAMS), 'test')
    finally:
        node.destroy_node()


def test_a_new_recorder_appends_to_the_store_and_refuses_a_stale_episode(ros_env, tmp_path):
    settings = recorder_settings(ros_env, tmp_path / 'demos.zarr')
    first = DemoRecorder(settings)
    assert first.start(0) == (True, f'recording episode 0 into {settings.path}')
    feed(first, 2.0)
    ok, message = first.stop(2 * NS)
    assert ok, message
    assert '20 steps at 10 Hz' in message  # commands due 0.1 .. 2.1 s, frames to 2.0 s

    second = DemoRecorder(settings)  # a restarted node: appends to what is there
    assert second.n_stored == 1
    assert second.start(0)[0]
    feed(second, 1.0)
    assert second.stop(NS)[0]
    buffer = ReplayBuffer.open(settings.path)
    np.testing.assert_array_equal(buffer.episode_ends, [20, 30])
    np.testing.assert_array_equal(buffer.get_episode(1)['img'][:, 0, 0, 0],
                                  np.arange(10, 101, 10))  # the frame at each 0.1 s tick

    assert second.start(0)[0]
    feed(second, 3.0, camera_gap=(1.0, 2.0))
    ok, message = second.stop(3 * NS)
    assert not ok
    assert f"'{IMAGE_TOPIC}' was 0.550 s old" in message
    assert ReplayBuffer.open(settings.path).n_episodes == 2

    # Frames of another size than the store's are bad messages; the episode has none left.
    assert second.start(0)[0]
    with pytest.raises(ValueError, match='image is 4 x 4 .* expected 8 x 8 like the frames'):
        second.add(IMAGE_TOPIC, image_msg(0, 1, size=4), 0)
    ok, message = second.stop(NS)
    assert not ok and 'no usable messages on' in message and '1 bad' in message


def test_an_episode_reaching_max_episode_duration_is_stopped_and_written(ros_env, tmp_path):
    settings = recorder_settings(ros_env, tmp_path / 'demos.zarr', max_episode_duration=1.5)
    recorder = DemoRecorder(settings)
    assert recorder.start(0)[0]
    status = recorder.status(0)
    assert status['max_episode_duration_s'] == 1.5 and status['buffered_frames_mb'] == 0.0
    recorder.add(IMAGE_TOPIC, image_msg(0, 1), 0)
    assert recorder.status(0)['buffered_frames_mb'] == 8 * 8 * 3 / 2 ** 20
    feed(recorder, 2.0)  # messages up to 2 s: the one at 1.5 s ends the episode
    assert not recorder.recording
    assert recorder.counts['episodes_stopped_at_max_duration'] == 1
    assert recorder.last_result.startswith('max_episode_duration 1.5 s reached, stopped: '
                                           'episode 0 written')
    buffer = ReplayBuffer.open(settings.path)
    assert buffer.n_episodes == 1 and buffer.n_steps == 14  # ticks 0.1 .. 1.4 s
    assert recorder.counts['ignored_while_idle'] > 0  # the messages after the stop


@pytest.mark.parametrize('changes, words', [
    ({'output_path': ''}, 'parameter output_path = '),
    ({'compressed_image_topics': ['camera/front/image_raw/compressed']},
     "expected exactly one topic for camera 'front', got both"),
    ({'command_type': 'twist'}, 'command_type must be one of'),
    ({'image_size': [32]}, 'parameter image_size = [32]: expected [H, W]'),
    ({'joint_names': ['shoulder', 'shoulder']}, 'parameter joint_names'),
])
def test_bad_parameters_are_refused_at_start_up(ros_env, tmp_path, changes, words):
    overrides = {'output_path': str(tmp_path / 'demos.zarr'), **changes}
    with pytest.raises(ValueError, match=words.replace('[', r'\[').replace(']', r'\]')):
        RecorderNode(context=ros_env, parameter_overrides=[
            Parameter(name, value=value) for name, value in overrides.items()])


def test_an_incompatible_store_is_refused_at_start_up(ros_env, tmp_path):
    path = tmp_path / 'other.zarr'
    buffer = ReplayBuffer.create(path)
    buffer.add_episode({'img': np.zeros((3, 8, 8, 3), np.uint8),
                        'state': np.zeros((3, 2), np.float32),
                        'action': np.zeros((3, 2), np.float32)})
    buffer.set_attrs({'joint_names': ['x', 'y'], 'control_hz': 10.0, 'camera': 'front'})
    with pytest.raises(ValueError, match=r"holds joint_names \['x', 'y'\]; this recorder"):
        RecorderNode(context=ros_env, parameter_overrides=[
            Parameter('output_path', value=str(path)), Parameter('joint_names', value=JOINTS)])
    with pytest.raises(ValueError, match='holds data at control_hz=10.0; .* rate=20 Hz'):
        RecorderNode(context=ros_env, parameter_overrides=[
            Parameter('output_path', value=str(path)), Parameter('rate', value=20.0)])
    with pytest.raises(ValueError, match=r"holds cameras \['front'\]; this recorder records "
                                         r"\['wrist'\]"):
        RecorderNode(context=ros_env, parameter_overrides=[
            Parameter('output_path', value=str(path)), Parameter('camera_names', value=['wrist']),
            Parameter('image_topics', value=['camera/wrist/image_raw'])])
    assert ReplayBuffer.open(path).n_episodes == 1  # left as it was


def test_marker_topics_write_each_episode_and_discard_failed_ones(ros_env, tmp_path):
    settings = recorder_settings(ros_env, tmp_path / 'demos.zarr',
                                 episode_start_topic='/sim_node/episode_start',
                                 episode_end_topic='/sim_node/episode', discard_failed=True)
    recorder = DemoRecorder(settings)
    assert recorder.end_marker(0, '{"success": true}') is None  # idle: nothing to end
    assert recorder.counts['end_markers_while_idle'] == 1
    assert recorder.start_marker(0) == [(True, f'recording episode 0 into {settings.path}')]
    feed(recorder, 1.0)
    # The next episode's start writes this one first.
    (written, message), (started, _) = recorder.start_marker(NS)
    assert written and message.startswith('episode 0 written') and started
    feed(recorder, 1.0)
    ok, message = recorder.end_marker(NS, '{"episode": 2, "success": false}')
    assert ok and message.startswith('the episode failed') and 'discarded episode 1' in message
    assert recorder.start_marker(NS)[0][0]
    feed(recorder, 1.0)
    ok, message = recorder.end_marker(NS, 'not json: written')
    assert ok and message.startswith('episode 1 written')
    assert ReplayBuffer.open(settings.path).n_episodes == 2
    assert recorder.counts['failed_discarded'] == 1 and recorder.counts['start_markers'] == 3


def test_marker_topics_must_be_their_own(ros_env, tmp_path):
    with pytest.raises(ValueError, match='expected topics of their own'):
        recorder_settings(ros_env, tmp_path / 'demos.zarr', episode_start_topic='joint_states')
    with pytest.raises(ValueError, match='expected topics of their own'):
        recorder_settings(ros_env, tmp_path / 'demos.zarr', episode_start_topic='/a',
                          episode_end_topic='/a')


def test_sim_expert_episodes_are_recorded_one_by_one_from_the_marker_topics(
        ros_harness, make_recorder, tmp_path):
    store = tmp_path / 'auto.zarr'
    outcomes = ros_harness.collect(String, '/sim_node/episode')
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics', DEEP)
    make_recorder(output_path=str(store), episode_start_topic='/sim_node/episode_start',
                  episode_end_topic='/sim_node/episode', discard_failed=True)
    ros_harness.add_node(SimNode(context=ros_harness.context, parameter_overrides=[
        Parameter(name, value=value) for name, value in {
            'teleop': 'expert', 'autoreset': True, 'real_time_factor': 3.0,
            'image_size': SIZE, 'camera_rate': 10.0, 'max_episode_time': 8.0,
            'seed': 17}.items()]), cleanup=close_node)

    def written():
        for array in reversed(diagnostics.snapshot()):
            for status in array.status:
                if status.name == 'recorder_node: recorder':
                    found = status_values(status)
                    return found if int(found['episodes_written']) >= 2 else None
        return None
    status = ros_harness.wait_for(written, 90.0, 'two episodes written by the markers')
    # Every episode the recorder saw end was written (or is being written), or discarded as
    # failed; none by hand.
    ended = int(status['end_markers'])
    assert (int(status['episodes_written']) + int(status['writes_pending'])
            + int(status['failed_discarded'])) == ended
    assert int(status['start_markers']) >= ended
    buffer = ReplayBuffer.open(store)
    assert buffer.n_episodes == int(status['episodes_written'])
    successes = [o for o in map(json.loads, (m.data for m in outcomes.snapshot()))
                 if o['success']]
    assert len(successes) >= buffer.n_episodes
    assert min(buffer.episode_lengths) >= 10  # seconds of expert pushing, at 10 Hz


class Teleop:
    """The camera, joint states and teleop commands, published by the test node tick by tick."""

    def __init__(self, harness, diagnostics, recorders: int = 1):
        self.harness, self.diagnostics = harness, diagnostics
        self.publishers = {
            IMAGE_TOPIC: harness.node.create_publisher(Image, IMAGE_TOPIC, DEEP),
            'joint_states': harness.node.create_publisher(JointState, 'joint_states', DEEP),
            COMMAND_TOPIC: harness.node.create_publisher(JointTrajectory, COMMAND_TOPIC, DEEP)}
        harness.wait_for(lambda: all(p.get_subscription_count() >= recorders
                                     for p in self.publishers.values()),
                         10.0, f'{recorders} recorder(s) subscribing')

    def episode(self, start_s: float, ticks: int = 6, node: str = 'recorder_node') -> None:
        """
        Publish ``ticks`` 0.1 s ticks stamped from ``start_s`` into ``node``'s episode.

        One tick at a time, each once the recorder's /diagnostics counted the one before: the
        camera's best-effort queue is shallow, and a burst could lose frames.
        """
        for k in range(ticks):
            stamp = int(round((start_s + k / 10) * NS))
            q = np.full(4, 0.05 * k)
            self.publishers[IMAGE_TOPIC].publish(image_msg(stamp, k))
            self.publishers['joint_states'].publish(joint_msg(stamp, q))
            self.publishers[COMMAND_TOPIC].publish(command_msg(stamp, q + 0.1))
            recorder_status(self.harness, self.diagnostics, node, state='recording', **{
                f'messages {topic}': str(k + 1) for topic in self.publishers})


def hold_writes(monkeypatch, recorder) -> tuple[threading.Event, threading.Event]:
    """Make ``recorder``'s appends wait: return (a write started, let the writes go on)."""
    append = recorder._append
    writing, release = threading.Event(), threading.Event()

    def held_append(arrays, start_ns):
        writing.set()
        assert release.wait(30.0), 'the test never let the write go on'
        return append(arrays, start_ns)
    monkeypatch.setattr(recorder, '_append', held_append)
    return writing, release


def test_a_slow_write_leaves_the_node_recording_and_reporting(
        ros_harness, make_recorder, tmp_path, monkeypatch):
    store = tmp_path / 'demos.zarr'
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics', DEEP)
    node = make_recorder(output_path=str(store))
    teleop = Teleop(ros_harness, diagnostics)
    writing, release = hold_writes(monkeypatch, node.recorder)

    try:
        assert trigger(ros_harness, '/recorder_node/start').success
        teleop.episode(0.0)
        queued = trigger(ros_harness, '/recorder_node/stop')  # answered with the write held
        assert queued.success, queued.message
        assert queued.message.startswith(f'queued: episode 0 being written to {store} (')
        ros_harness.wait_for(writing.is_set, 10.0, 'the write of episode 0 starting')

        # While the write hangs, /diagnostics keeps coming and the next episode records.
        before = len(diagnostics)
        recorder_status(ros_harness, diagnostics, state='idle', writes_pending='1',
                        episodes_written='0')
        started = trigger(ros_harness, '/recorder_node/start')
        assert started.success and started.message == f'recording episode 1 into {store}'
        teleop.episode(10.0)
        status = recorder_status(ros_harness, diagnostics, state='recording', episode='1',
                                 writes_pending='1', episodes_written='0')
        assert status[f'messages {IMAGE_TOPIC}'] == '6'
        assert len(diagnostics) > before
        assert not store.exists()  # the first write is still held
        queued = trigger(ros_harness, '/recorder_node/stop')
        assert queued.success and queued.message.startswith('queued: episode 1 being written')
        recorder_status(ros_harness, diagnostics, state='idle', writes_pending='2')
    finally:
        release.set()

    status = recorder_status(ros_harness, diagnostics, episodes_written='2', writes_pending='0')
    assert status['write_errors'] == '0' and status['last_result'].startswith('episode 1 written')
    buffer = ReplayBuffer.open(store)
    assert buffer.n_episodes == 2
    # Written in the order they were stopped.
    starts = [entry['start_ns'] for entry in buffer.attrs[RECORDED_EPISODES]]
    assert starts[0] < 10 * NS <= starts[1]


def test_a_failing_write_is_counted_and_the_node_goes_on(
        ros_harness, make_recorder, tmp_path, monkeypatch):
    store = tmp_path / 'demos.zarr'
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics', DEEP)
    node = make_recorder(output_path=str(store))
    teleop = Teleop(ros_harness, diagnostics)
    append = node.recorder._append
    failures = [RuntimeError('simulated failure in the store')]

    def failing_append(arrays, start_ns):
        if failures:
            raise failures.pop()
        return append(arrays, start_ns)
    monkeypatch.setattr(node.recorder, '_append', failing_append)

    assert trigger(ros_harness, '/recorder_node/start').success
    teleop.episode(0.0)
    queued = trigger(ros_harness, '/recorder_node/stop')
    assert queued.success and queued.message.startswith('queued: episode 0 being written')
    status = recorder_status(ros_harness, diagnostics, write_errors='1', writes_pending='0')
    assert status['episodes_written'] == '0' and status['episodes_in_store'] == '0'
    error = status['last_write_error']
    assert error.startswith('episode 0 not written (recorded ')
    assert error.endswith(': RuntimeError: simulated failure in the store')
    assert status['last_result'] == error

    # The writer thread survived it: the next episode takes the index and is written.
    started = trigger(ros_harness, '/recorder_node/start')
    assert started.success and started.message == f'recording episode 0 into {store}'
    teleop.episode(10.0)
    assert trigger(ros_harness, '/recorder_node/stop').success
    status = recorder_status(ros_harness, diagnostics, episodes_written='1', writes_pending='0')
    assert status['write_errors'] == '1' and status['last_write_error'] == error
    assert status['last_result'].startswith(f'episode 0 written to {store}: ')
    assert ReplayBuffer.open(store).n_episodes == 1


def test_close_waits_for_the_queued_writes_and_gives_up_after_its_bound(
        ros_harness, make_recorder, tmp_path, monkeypatch):
    diagnostics = ros_harness.collect(DiagnosticArray, '/diagnostics', DEEP)
    store, held = tmp_path / 'demos.zarr', tmp_path / 'held.zarr'
    node = make_recorder(output_path=str(store))
    other = make_recorder('held_recorder', output_path=str(held))
    teleop = Teleop(ros_harness, diagnostics, recorders=2)  # the idle one ignores the messages
    append = node.recorder._append

    def slow_append(arrays, start_ns):
        time.sleep(1.0)  # a slow disk: close must outwait it
        return append(arrays, start_ns)
    monkeypatch.setattr(node.recorder, '_append', slow_append)
    assert trigger(ros_harness, '/recorder_node/start').success
    teleop.episode(0.0)
    assert trigger(ros_harness, '/recorder_node/stop').success
    assert node.recorder.pending == [0]
    node.close()
    assert node.recorder.pending == []
    assert ReplayBuffer.open(store).n_episodes == 1
    assert node.recorder.counts['episodes_written'] == 1

    # A write that outlasts WRITE_DRAIN_TIMEOUT_S: close returns, the episode still pending.
    monkeypatch.setattr(recorder_node, 'WRITE_DRAIN_TIMEOUT_S', 0.2)
    writing, release = hold_writes(monkeypatch, other.recorder)
    try:
        assert trigger(ros_harness, '/held_recorder/start').success
        teleop.episode(0.0, node='held_recorder')
        assert trigger(ros_harness, '/held_recorder/stop').success
        ros_harness.wait_for(writing.is_set, 10.0, 'the held write starting')
        other.close()
        assert other.recorder.pending == [0] and not held.exists()
    finally:
        release.set()
    ros_harness.wait_for(lambda: not other.recorder.pending, 10.0, 'the held write ending')
    assert ReplayBuffer.open(held).n_episodes == 1
