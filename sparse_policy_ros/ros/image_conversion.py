"""
Camera messages to the policy's RGB uint8 (H, W, 3) arrays, with numpy and OpenCV.

``sensor_msgs/Image`` in rgb8, bgr8, rgba8, bgra8 or mono8 is converted with numpy (rows are
cut at ``step`` so padded rows work); other encodings go through ``cv_bridge`` when a ROS 2
``cv_bridge`` is importable. ``sensor_msgs/CompressedImage`` is decoded with ``cv2.imdecode``.
Messages are read by attribute only, so plain objects with the same fields work in tests.
Every problem raises :class:`MessageError` naming the field, what was expected and what came.
"""

from typing import Any

import cv2
import numpy as np

from ..control.message_errors import MessageError

try:  # a ROS 2 install ships cv_bridge; PyPI has only the ROS 1 one, which lacks CvBridge here
    from cv_bridge import CvBridge
except ImportError:  # pragma: no cover - depends on the machine
    CvBridge = None

# encoding -> (channels, channel order to reach RGB)
NUMPY_ENCODINGS = {
    'rgb8': (3, (0, 1, 2)),
    'bgr8': (3, (2, 1, 0)),
    'rgba8': (4, (0, 1, 2)),
    'bgra8': (4, (2, 1, 0)),
    'mono8': (1, (0, 0, 0)),
}

_bridge = None


def image_msg_to_rgb(msg: Any, expected_hw: tuple[int, int] | None = None,
                     resize: bool = False) -> np.ndarray:
    """
    Convert a ``sensor_msgs/Image`` to a contiguous RGB uint8 (H, W, 3) array.

    With ``expected_hw`` the result must have that (height, width): a different size is an
    error, unless ``resize`` is set, in which case the image is resized with area averaging.
    """
    encoding = str(msg.encoding).lower()
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise MessageError('image_size', 'image.height x image.width', 'positive sizes',
                           f'{height} x {width}')
    if encoding in NUMPY_ENCODINGS:
        rgb = _numpy_to_rgb(encoding, height, width, step, msg.data)
    elif CvBridge is not None:
        rgb = _bridge_to_rgb(msg)
    else:
        raise MessageError('image_encoding', 'image.encoding',
                           f'one of {sorted(NUMPY_ENCODINGS)} (cv_bridge not installed)',
                           repr(msg.encoding))
    return fit_to_size(rgb, expected_hw, resize, 'image')


def compressed_msg_to_rgb(msg: Any, expected_hw: tuple[int, int] | None = None,
                          resize: bool = False) -> np.ndarray:
    """Decode a ``sensor_msgs/CompressedImage`` (jpeg, png, ...) to RGB uint8 (H, W, 3)."""
    buffer = np.frombuffer(bytes(msg.data), dtype=np.uint8)
    if buffer.size == 0:
        raise MessageError('image_data', 'compressed_image.data', 'encoded image bytes',
                           '0 bytes')
    decoded = cv2.imdecode(buffer, cv2.IMREAD_COLOR)  # BGR (H, W, 3), None if undecodable
    if decoded is None:
        raise MessageError('image_encoding', 'compressed_image.data',
                           'an image OpenCV can decode', f'{buffer.size} undecodable bytes '
                           f'(format {msg.format!r})')
    rgb = np.ascontiguousarray(decoded[:, :, ::-1])
    return fit_to_size(rgb, expected_hw, resize, 'compressed_image')


def fit_to_size(rgb: np.ndarray, expected_hw: tuple[int, int] | None, resize: bool,
                field: str) -> np.ndarray:
    """Check (or, with ``resize``, make) the image's (height, width) equal ``expected_hw``."""
    if expected_hw is None or tuple(rgb.shape[:2]) == tuple(expected_hw):
        return rgb
    if not resize:
        raise MessageError('image_size', f'{field}.height x {field}.width',
                           f'{expected_hw[0]} x {expected_hw[1]} (the model input; set '
                           f'resize_images to resize)', f'{rgb.shape[0]} x {rgb.shape[1]}')
    height, width = expected_hw
    return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)


def rgb_to_image_fields(rgb: np.ndarray) -> dict[str, Any]:
    """Fields of an rgb8 ``sensor_msgs/Image`` holding ``rgb`` (for publishers and tests)."""
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f'rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}')
    height, width, _ = rgb.shape
    return {'height': height, 'width': width, 'encoding': 'rgb8', 'is_bigendian': 0,
            'step': 3 * width, 'data': np.ascontiguousarray(rgb).tobytes()}


def _numpy_to_rgb(encoding: str, height: int, width: int, step: int, data: Any) -> np.ndarray:
    channels, order = NUMPY_ENCODINGS[encoding]
    row_bytes = width * channels
    if step < row_bytes:
        raise MessageError('image_data', 'image.step',
                           f'>= width * channels = {width} * {channels} = {row_bytes}', step)
    buffer = np.frombuffer(bytes(data), dtype=np.uint8)
    if buffer.size != step * height:
        raise MessageError('image_data', 'len(image.data)',
                           f'step * height = {step} * {height} = {step * height}', buffer.size)
    rows = buffer.reshape(height, step)[:, :row_bytes]  # drop row padding
    pixels = rows.reshape(height, width, channels)
    return np.ascontiguousarray(pixels[:, :, list(order)])  # (H, W, 3) RGB


def _bridge_to_rgb(msg: Any) -> np.ndarray:  # pragma: no cover - needs a ROS 2 cv_bridge
    global _bridge
    if _bridge is None:
        _bridge = CvBridge()
    try:
        rgb = _bridge.imgmsg_to_cv2(msg, desired_encoding='rgb8')
    except Exception as error:  # noqa: B902 - CvBridgeError and cv2.error have no common base
        raise MessageError('image_encoding', 'image.encoding',
                           'an encoding cv_bridge converts to rgb8',
                           f'{msg.encoding!r} ({error})') from error
    return np.ascontiguousarray(rgb, dtype=np.uint8)
