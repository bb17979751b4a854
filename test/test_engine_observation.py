"""Observation validation: every bad input names the field, what was expected and what came."""

import numpy as np
import pytest
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.observation import OBS_IMAGES, OBS_STATE, validate_observation
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy

TINY = {'encoder': 'small_cnn', 'n_layer': 2, 'n_emb': 32, 'n_head': 2, 'state_dim': 4,
        'action_dim': 4, 'horizon': 8, 'n_obs_steps': 2, 'n_action_steps': 4,
        'num_train_timesteps': 10, 'num_inference_steps': 10, 'image_shape': (3, 32, 32),
        'crop_shape': (28, 28), 'image_feature_dim': 16,
        'camera_names': ('front', 'wrist')}
CONFIG = PolicyConfig(**TINY)


def good() -> dict:
    rng = np.random.default_rng(0)
    return {OBS_IMAGES: {c: rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
                         for c in CONFIG.camera_names},
            OBS_STATE: rng.uniform(-1, 1, (2, 4)).astype(np.float32)}


def with_image(camera: str, image) -> dict:
    obs = good()
    obs[OBS_IMAGES][camera] = image
    return obs


def with_state(state) -> dict:
    obs = good()
    obs[OBS_STATE] = state
    return obs


def without_camera(camera: str) -> dict:
    obs = good()
    del obs[OBS_IMAGES][camera]
    return obs


def nan_state() -> dict:
    state = np.zeros((2, 4), np.float32)
    state[1, 2] = np.nan
    return with_state(state)


def inf_state() -> dict:
    state = np.zeros((2, 4))
    state[0, 3] = -np.inf
    return with_state(state)


BAD = {
    'image size': (with_image('wrist', np.zeros((2, 30, 32, 3), np.uint8)),
                   ['images.wrist', '(2, 32, 32, 3)', 'got (2, 30, 32, 3)']),
    'history length': (with_image('front', np.zeros((1, 32, 32, 3), np.uint8)),
                       ['images.front', '(2, 32, 32, 3)', 'got (1, 32, 32, 3)']),
    'channels': (with_image('front', np.zeros((2, 32, 32, 4), np.uint8)),
                 ['images.front', '3 (RGB) channels', '(2, 32, 32, 3)',
                  'got shape (2, 32, 32, 4)']),
    'channels first': (with_image('front', np.zeros((2, 3, 32, 32), np.uint8)),
                       ['images.front', 'channels last', 'got shape (2, 3, 32, 32)']),
    'image dtype': (with_image('front', np.zeros((2, 32, 32, 3), np.float32)),
                    ['images.front', 'dtype uint8', 'got float32']),
    'missing camera': (without_camera('wrist'),
                       ["missing camera 'wrist'", "['front', 'wrist']", "got ['front']"]),
    'images not a dict': (with_state(np.zeros((2, 4))) | {OBS_IMAGES: [1, 2]},
                          ["observation['images']", 'dict camera -> image', 'got list']),
    'NaN state': (nan_state(), ['state must be finite', 'nan', '[1, 2]']),
    'inf state': (inf_state(), ['state must be finite', '-inf', '[0, 3]']),
    'joint count': (with_state(np.zeros((2, 3), np.float32)),
                    ['state', '(2, 4)', 'got (2, 3)']),
    'state dtype': (with_state(np.array([['a'] * 4] * 2)), ['state', 'float', 'dtype <U1']),
    'not a dict': ([1, 2], ['observation must be a dict', "['images', 'state']", 'got list']),
    'missing state': ({OBS_IMAGES: good()[OBS_IMAGES]},
                      ["missing 'state'", "got ['images']"]),
}


@pytest.mark.parametrize('case', sorted(BAD))
def test_bad_observation_message(case):
    obs, fragments = BAD[case]
    with pytest.raises(ValueError) as info:
        validate_observation(obs, CONFIG)
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


def test_predict_rejects_bad_observations_and_keeps_working():
    policy = SparsePolicy.random_init(CONFIG, mode='fixed', target_sparsity=0.5, seed=0)
    for case in ('NaN state', 'channels', 'missing camera'):
        with pytest.raises(ValueError):
            policy.predict(BAD[case][0])
    assert policy.calls == 0
    chunk = policy.predict(good())
    assert chunk.stats.sparsity == pytest.approx(0.5, abs=1e-6)
    assert np.all(np.isfinite(chunk.actions))


def test_good_observation_is_converted_without_copying_images():
    obs = good()
    obs[OBS_STATE] = obs[OBS_STATE].astype(np.float64)
    images, state = validate_observation(obs, CONFIG)
    assert state.dtype == np.float32 and state.shape == (2, 4)
    assert images['front'] is obs[OBS_IMAGES]['front']
    ints = validate_observation(with_state(np.ones((2, 4), np.int64)), CONFIG)[1]
    assert ints.dtype == np.float32
    extra = good()
    extra[OBS_IMAGES]['unused'] = np.zeros((1,), np.uint8)  # extra cameras are ignored
    assert sorted(validate_observation(extra, CONFIG)[0]) == ['front', 'wrist']
