"""Each camera frame is encoded once: features of the previous call's frames are reused."""

from engine_helpers import observation, TINY
import numpy as np
import pytest
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.frame_cache import FrameFeatureCache
from sparse_policy_ros.policy.observation import OBS_IMAGES, OBS_STATE
from sparse_policy_ros.sparsity.sparse_policy import SparsePolicy
import torch

CONFIG = PolicyConfig(**{**TINY, 'camera_names': ('front', 'wrist')})


def stream(config: PolicyConfig, calls: int, seed: int = 0) -> list[dict]:
    """Observations of consecutive calls: each adds one new frame per camera and drops one."""
    rng = np.random.default_rng(seed)
    _, h, w = config.image_shape
    frames = {c: [rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
                  for _ in range(calls + config.n_obs_steps)] for c in config.camera_names}
    states = rng.uniform(-1, 1, (calls + config.n_obs_steps, config.state_dim)).astype(np.float32)
    t = config.n_obs_steps
    return [{OBS_IMAGES: {c: np.stack(frames[c][i:i + t]) for c in config.camera_names},
             OBS_STATE: states[i:i + t]} for i in range(calls)]


def test_cached_features_give_the_actions_of_re_encoding_bit_for_bit():
    cached = SparsePolicy.random_init(CONFIG, mode='fixed', target_sparsity=0.5, seed=0,
                                      warmup=False)
    fresh = SparsePolicy(cached.model, mode='fixed', target_sparsity=0.5, device='cpu',
                         warmup=False, encoder_cache=False)
    for i, obs in enumerate(stream(CONFIG, 5)):
        a = cached.predict(obs, generator=torch.Generator().manual_seed(i))
        b = fresh.predict(obs, generator=torch.Generator().manual_seed(i))
        assert np.array_equal(a.actions, b.actions), i
        # Two cameras, two frames each: after the first call only the newest frame is new.
        assert (a.stats.frames_encoded, a.stats.frames_reused) == ((4, 0) if i == 0 else (2, 2))
        assert (b.stats.frames_encoded, b.stats.frames_reused) == (4, 0)
    # Batch-1 encoding agrees with the batched encoder the model was trained with.
    obs = observation(CONFIG, 3)
    images, state = cached.model.observation_to_tensors(obs[OBS_IMAGES], obs[OBS_STATE], 'cpu')
    with torch.inference_mode():
        batched = cached.model.encode_observation(images, state)
        single = cached.encode(obs[OBS_IMAGES], obs[OBS_STATE])
    torch.testing.assert_close(single, batched, rtol=1e-5, atol=1e-6)


def test_a_frame_with_other_pixels_is_encoded_even_with_the_same_position():
    policy = SparsePolicy.random_init(CONFIG, mode='dense', target_sparsity=None, warmup=False)
    obs = stream(CONFIG, 1)[0]
    policy.predict(obs)
    changed = {OBS_IMAGES: {c: v.copy() for c, v in obs[OBS_IMAGES].items()},
               OBS_STATE: obs[OBS_STATE]}
    changed[OBS_IMAGES]['wrist'][0, 0, 0, 0] ^= 1  # one bit of one pixel of one old frame
    stats = policy.predict(changed).stats
    assert (stats.frames_encoded, stats.frames_reused) == (1, 3)


def test_the_cache_keeps_at_most_capacity_frames_per_camera():
    cache = FrameFeatureCache(2)
    policy = SparsePolicy.random_init(CONFIG, mode='dense', target_sparsity=None, warmup=False)
    frames = stream(CONFIG, 3)
    encoder = policy.model.obs_encoder
    with torch.inference_mode():
        for obs in frames:
            cache.encode(encoder, 'front', obs[OBS_IMAGES]['front'], torch.device('cpu'))
        assert len(cache._features['front']) == 2
        # The oldest frame was dropped: it is encoded again.
        _, encoded = cache.encode(encoder, 'front', frames[0][OBS_IMAGES]['front'][:1],
                                  torch.device('cpu'))
    assert encoded == 1
    with pytest.raises(ValueError, match='capacity must be >= 1, got 0'):
        FrameFeatureCache(0)
