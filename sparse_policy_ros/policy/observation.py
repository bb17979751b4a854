"""
The observation contract between the outside world and the policy, with validation.

An observation is a dict with two keys (named constants below)::

    {
        OBS_IMAGES: {camera_name: uint8 array (n_obs_steps, H, W, 3), ...},  # RGB, HWC
        OBS_STATE: float array (n_obs_steps, state_dim),                      # joint positions
    }

Index -1 along the first axis is the newest step. Every problem raises ``ValueError`` naming
the field, what was expected and what came, so a node can log it and keep running.
"""

from typing import Any

import numpy as np

from .config import PolicyConfig

OBS_IMAGES = 'images'
OBS_STATE = 'state'


def validate_observation(observation: Any,
                         config: PolicyConfig) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """
    Check an observation against ``config``; return (images by camera, float32 state).

    Images come back as uint8 (n_obs_steps, H, W, 3) arrays, state as float32
    (n_obs_steps, state_dim). Nothing is copied unless a dtype conversion is needed.
    """
    if not isinstance(observation, dict):
        raise ValueError(
            f'observation must be a dict with keys {[OBS_IMAGES, OBS_STATE]}, '
            f'got {type(observation).__name__}')
    for key in (OBS_IMAGES, OBS_STATE):
        if key not in observation:
            raise ValueError(
                f'observation is missing {key!r}; expected keys {[OBS_IMAGES, OBS_STATE]}, '
                f'got {sorted(observation)}')
    images = observation[OBS_IMAGES]
    if not isinstance(images, dict):
        raise ValueError(
            f'observation[{OBS_IMAGES!r}] must be a dict camera -> image array, '
            f'got {type(images).__name__}')
    t = config.n_obs_steps
    _, height, width = config.image_shape
    checked = {}
    for camera in config.camera_names:
        if camera not in images:
            raise ValueError(
                f'observation[{OBS_IMAGES!r}] is missing camera {camera!r}; expected cameras '
                f'{list(config.camera_names)}, got {sorted(images)}')
        image = np.asarray(images[camera])
        field_name = f'{OBS_IMAGES}.{camera}'
        if image.dtype != np.uint8:
            raise ValueError(f'{field_name} must have dtype uint8, got {image.dtype}')
        expected = (t, height, width, 3)
        if image.shape != expected:
            if image.ndim == 4 and image.shape[-1] != 3:
                raise ValueError(
                    f'{field_name} must have 3 (RGB) channels last, shape {expected}, '
                    f'got shape {image.shape}')
            raise ValueError(f'{field_name} must have shape {expected}, got {image.shape}')
        checked[camera] = image
    state = np.asarray(observation[OBS_STATE])
    if not (np.issubdtype(state.dtype, np.floating) or np.issubdtype(state.dtype, np.integer)):
        raise ValueError(f'{OBS_STATE} must be a float array, got dtype {state.dtype}')
    expected_state = (t, config.state_dim)
    if state.shape != expected_state:
        raise ValueError(
            f'{OBS_STATE} must have shape {expected_state} (n_obs_steps, joints), '
            f'got {state.shape}')
    state = state.astype(np.float32, copy=False)
    if not np.all(np.isfinite(state)):
        bad = np.argwhere(~np.isfinite(state))[0].tolist()
        raise ValueError(
            f'{OBS_STATE} must be finite, got {state[tuple(bad)]} at index {bad}')
    return checked, state
