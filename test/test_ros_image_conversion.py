"""Image and CompressedImage conversion to RGB uint8, with field/expected/got errors."""

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
from sparse_policy_ros.control.message_errors import MessageError
from sparse_policy_ros.ros.image_conversion import compressed_msg_to_rgb, image_msg_to_rgb
from sparse_policy_ros.ros.image_conversion import rgb_to_image_fields

RGB = np.random.default_rng(0).integers(0, 256, (6, 7, 3), dtype=np.uint8)


def image(encoding: str, pixels: np.ndarray, pad: int = 0) -> SimpleNamespace:
    """Build an Image-like message with ``pad`` bytes of padding after each row."""
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    rows = np.concatenate([rows, np.full((height, pad), 255, np.uint8)], axis=1)
    return SimpleNamespace(encoding=encoding, height=height, width=width,
                           step=rows.shape[1], data=rows.tobytes())


@pytest.mark.parametrize('encoding, pixels', [
    ('rgb8', RGB),
    ('bgr8', RGB[:, :, ::-1]),
    ('rgba8', np.dstack([RGB, np.full(RGB.shape[:2], 9, np.uint8)])),
    ('bgra8', np.dstack([RGB[:, :, ::-1], np.full(RGB.shape[:2], 9, np.uint8)])),
])
@pytest.mark.parametrize('pad', [0, 5])
def test_color_encodings_become_rgb(encoding, pixels, pad):
    out = image_msg_to_rgb(image(encoding, pixels, pad))
    assert out.dtype == np.uint8 and out.flags['C_CONTIGUOUS']
    np.testing.assert_array_equal(out, RGB)


def test_mono8_is_replicated_to_three_channels():
    gray = RGB[:, :, 0]
    out = image_msg_to_rgb(image('mono8', gray[:, :, None]))
    np.testing.assert_array_equal(out, np.repeat(gray[:, :, None], 3, axis=2))


def test_round_trip_with_publisher_fields():
    fields = rgb_to_image_fields(RGB)
    assert fields['step'] == 21 and fields['encoding'] == 'rgb8'
    np.testing.assert_array_equal(image_msg_to_rgb(SimpleNamespace(**fields)), RGB)


def test_size_is_checked_or_resized():
    msg = image('rgb8', RGB)
    with pytest.raises(MessageError) as info:
        image_msg_to_rgb(msg, expected_hw=(4, 4))
    assert info.value.kind == 'image_size'
    assert '4 x 4' in str(info.value) and 'got 6 x 7' in str(info.value)
    resized = image_msg_to_rgb(msg, expected_hw=(4, 4), resize=True)
    assert resized.shape == (4, 4, 3) and resized.dtype == np.uint8
    assert image_msg_to_rgb(msg, expected_hw=(6, 7)) is not None


@pytest.mark.parametrize('change, kind, text', [
    ({'encoding': '16UC1'}, 'image_encoding', "got '16UC1'"),
    ({'step': 20}, 'image_data', 'image.step: expected >= width * channels = 7 * 3 = 21'),
    ({'data': b'\x00' * 10}, 'image_data', 'len(image.data): expected step * height'),
    ({'height': 0}, 'image_size', 'positive sizes'),
])
def test_bad_images_name_field_expected_and_got(change, kind, text):
    msg = image('rgb8', RGB)
    for key, value in change.items():
        setattr(msg, key, value)
    with pytest.raises(MessageError) as info:
        image_msg_to_rgb(msg)
    assert info.value.kind == kind
    assert text in str(info.value)


def test_compressed_png_and_jpeg():
    ok, png = cv2.imencode('.png', RGB[:, :, ::-1])
    assert ok
    out = compressed_msg_to_rgb(SimpleNamespace(format='png', data=png.tobytes()))
    np.testing.assert_array_equal(out, RGB)  # lossless
    smooth = np.tile(np.linspace(0, 255, 32, dtype=np.uint8)[None, :, None], (32, 1, 3))
    ok, jpeg = cv2.imencode('.jpg', smooth, [cv2.IMWRITE_JPEG_QUALITY, 95])
    out = compressed_msg_to_rgb(SimpleNamespace(format='jpeg', data=jpeg.tobytes()),
                                expected_hw=(16, 16), resize=True)
    assert out.shape == (16, 16, 3)
    with pytest.raises(MessageError, match='undecodable') as info:
        compressed_msg_to_rgb(SimpleNamespace(format='jpeg', data=b'not an image'))
    assert info.value.kind == 'image_encoding'
    with pytest.raises(MessageError, match='0 bytes'):
        compressed_msg_to_rgb(SimpleNamespace(format='jpeg', data=b''))
