"""ObservationBuffer: time alignment, padding, staleness, incomplete data (pure numpy)."""

import numpy as np
import pytest
from sparse_policy_ros.control.observation_buffer import ObservationBuffer
from sparse_policy_ros.policy.observation import OBS_IMAGES, OBS_STATE


def frame(value: int) -> np.ndarray:
    return np.full((4, 5, 3), value, dtype=np.uint8)


def make_buffer(**changes) -> ObservationBuffer:
    kwargs = {'camera_names': ('front', 'wrist'), 'state_dim': 2, 'n_obs_steps': 3,
              'control_period': 0.1}
    kwargs.update(changes)
    return ObservationBuffer(**kwargs)


def test_samples_history_at_the_control_period():
    buffer = make_buffer()
    # Cameras at 30 Hz (front) and 20 Hz (wrist), joints at 100 Hz; values encode stamps.
    for k in range(31):
        buffer.add_image('front', k / 30, frame(k))
    for k in range(21):
        buffer.add_image('wrist', k / 20 + 0.001, frame(100 + k))
    for k in range(101):
        buffer.add_joint_state(k / 100, np.array([k, -k], dtype=np.float64))
    assembled = buffer.assemble()
    # Newest complete time: the older of the cameras' latest frames (front at 1.0 s).
    assert assembled.stamp == pytest.approx(1.0)
    np.testing.assert_allclose(assembled.step_times, [0.8, 0.9, 1.0])
    front = assembled.observation[OBS_IMAGES]['front']
    wrist = assembled.observation[OBS_IMAGES]['wrist']
    assert front.shape == (3, 4, 5, 3) and front.dtype == np.uint8
    assert front[:, 0, 0, 0].tolist() == [24, 27, 30]  # 0.8, 0.9, 1.0 s at 30 Hz
    assert wrist[:, 0, 0, 0].tolist() == [116, 118, 120]  # 0.801, 0.901, 1.001 s at 20 Hz
    state = assembled.observation[OBS_STATE]
    assert state.dtype == np.float32
    np.testing.assert_array_equal(state, [[80, -80], [90, -90], [100, -100]])
    np.testing.assert_array_equal(assembled.latest_state, [100, -100])
    assert assembled.max_skew == pytest.approx(0.001, abs=1e-9)


def test_out_of_order_and_duplicate_stamps():
    buffer = make_buffer(camera_names=('front',), n_obs_steps=2)
    for stamp, value in ((0.2, 2), (0.0, 0), (0.1, 1), (0.2, 3)):
        buffer.add_image('front', stamp, frame(value))
        buffer.add_joint_state(stamp, np.array([value, value]))
    assembled = buffer.assemble()
    assert assembled.observation[OBS_IMAGES]['front'][:, 0, 0, 0].tolist() == [1, 3]
    np.testing.assert_array_equal(assembled.observation[OBS_STATE][:, 0], [1, 3])


def test_short_history_repeats_the_oldest_frame():
    buffer = make_buffer(camera_names=('front',))
    buffer.add_image('front', 5.0, frame(7))
    buffer.add_joint_state(5.0, np.array([1.0, 2.0]))
    assembled = buffer.assemble()
    assert assembled.observation[OBS_IMAGES]['front'][:, 0, 0, 0].tolist() == [7, 7, 7]
    np.testing.assert_array_equal(assembled.observation[OBS_STATE], [[1, 2]] * 3)
    assert assembled.max_skew == pytest.approx(0.2)


def test_missing_sources_and_unpaired_joint_states():
    buffer = make_buffer()
    with pytest.raises(LookupError, match='no data yet'):
        buffer.assemble()
    assert buffer.missing_sources() == ['front', 'wrist', 'joint_states']
    assert buffer.age(1.0) is None
    buffer.add_image('front', 1.0, frame(1))
    buffer.add_image('wrist', 1.0, frame(1))
    buffer.add_joint_state(0.5, np.zeros(2))
    assert buffer.missing_sources() == []
    with pytest.raises(LookupError, match='no joint state within 0.100 s'):
        buffer.assemble()
    # Staleness follows the stalest source: joints last reported at 0.5 s.
    assert buffer.age(1.25) == pytest.approx(0.75)
    buffer.clear()
    assert buffer.missing_sources() == ['front', 'wrist', 'joint_states']


def test_old_samples_are_pruned():
    buffer = make_buffer(camera_names=('front',), n_obs_steps=2, history_margin=0.5)
    for k in range(1000):
        buffer.add_image('front', k * 0.01, frame(k % 256))
        buffer.add_joint_state(k * 0.01, np.zeros(2))
    # Window: (n_obs_steps - 1) * period + margin = 0.6 s of 100 Hz samples.
    assert len(buffer._images['front'].stamps) <= 62
    assert len(buffer._joints.stamps) <= 62


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match='camera must be one of'):
        make_buffer().add_image('rear', 0.0, frame(0))
    with pytest.raises(ValueError, match=r'shape \(2,\)'):
        make_buffer().add_joint_state(0.0, np.zeros(3))
    with pytest.raises(ValueError, match='control_period must be > 0'):
        make_buffer(control_period=0.0)


def test_state_only_policy_samples_the_joint_history():
    # No cameras (an imported low-dim Diffusion Policy): the joint state sets the step times.
    buffer = ObservationBuffer((), state_dim=2, n_obs_steps=2, control_period=0.1)
    assert buffer.missing_sources() == ['joint_states'] and buffer.age(1.0) is None
    for k in range(5):
        buffer.add_joint_state(0.05 * k, np.array([k, -k], dtype=np.float64))
    assembled = buffer.assemble()
    assert assembled.stamp == pytest.approx(0.2)
    np.testing.assert_allclose(assembled.step_times, [0.1, 0.2])
    assert assembled.observation[OBS_IMAGES] == {}
    np.testing.assert_array_equal(assembled.observation[OBS_STATE], [[2, -2], [4, -4]])
    assert buffer.age(0.5) == pytest.approx(0.3)
    assert buffer.stalest_source() == 'joint_states'
