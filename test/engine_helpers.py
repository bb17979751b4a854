"""Shared pieces of the engine tests: a tiny policy config and random observations."""

import numpy as np
from sparse_policy_ros.policy.config import PolicyConfig
from sparse_policy_ros.policy.observation import OBS_IMAGES, OBS_STATE

TINY = {'encoder': 'small_cnn', 'n_layer': 2, 'n_emb': 32, 'n_head': 2, 'state_dim': 4,
        'action_dim': 4, 'horizon': 8, 'n_obs_steps': 2, 'n_action_steps': 4,
        'num_train_timesteps': 10, 'num_inference_steps': 10, 'image_shape': (3, 32, 32),
        'crop_shape': (28, 28), 'image_feature_dim': 16}


def observation(config: PolicyConfig, seed: int = 0) -> dict:
    """Return a valid random observation for ``config``."""
    rng = np.random.default_rng(seed)
    _, h, w = config.image_shape
    return {OBS_IMAGES: {c: rng.integers(0, 256, (config.n_obs_steps, h, w, 3), dtype=np.uint8)
                         for c in config.camera_names},
            OBS_STATE: rng.uniform(-1, 1, (config.n_obs_steps, config.state_dim))
            .astype(np.float32)}
