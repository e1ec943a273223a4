"""Image conversions through cv_bridge: every supported encoding both ways, padded rows, and
a clear ImageError (never a numpy/OpenCV exception or wrong pixels) for malformed messages."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from sensor_msgs.msg import CompressedImage, Image

from so101_driver.images import (
    CHANNELS,
    ImageError,
    bridge,
    compressed_to_rgb,
    image_to_numpy,
    image_to_rgb,
    numpy_to_image,
    rgb_to_compressed,
)

RGB = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
TO = {'rgb8': None, 'bgr8': cv2.COLOR_RGB2BGR, 'mono8': cv2.COLOR_RGB2GRAY,
      'rgba8': cv2.COLOR_RGB2RGBA, 'bgra8': cv2.COLOR_RGB2BGRA}


def test_conversions_go_through_cv_bridge():
    from cv_bridge import CvBridge

    assert isinstance(bridge(), CvBridge)


@pytest.mark.parametrize('encoding', sorted(CHANNELS))
def test_every_encoding_round_trips_and_converts_to_rgb(encoding):
    array = RGB if TO[encoding] is None else cv2.cvtColor(RGB, TO[encoding])
    msg = numpy_to_image(array, encoding)
    assert (msg.encoding, msg.height, msg.width, msg.step) == (
        encoding, 48, 64, 64 * CHANNELS[encoding])
    np.testing.assert_array_equal(image_to_numpy(msg), array)
    expected = cv2.cvtColor(array, cv2.COLOR_GRAY2RGB) if encoding == 'mono8' else RGB
    np.testing.assert_array_equal(image_to_rgb(msg), expected)


def test_padded_rows_give_the_right_pixels():
    """ROS allows step > width * channels; the PyPI bridge alone returns shifted pixels."""
    step = 64 * 3 + 16
    rows = np.zeros((48, step), np.uint8)
    rows[:, :64 * 3] = RGB.reshape(48, -1)
    msg = Image(height=48, width=64, encoding='rgb8', step=step, data=rows.tobytes())
    np.testing.assert_array_equal(image_to_rgb(msg), RGB)
    np.testing.assert_array_equal(image_to_numpy(msg), RGB)


def test_compressed_round_trip_keeps_colours():
    y, x = np.mgrid[0:48, 0:64]
    smooth = np.dstack([x * 3, y * 4, np.full_like(x, 200)]).astype(np.uint8)  # R != B
    msg = rgb_to_compressed(smooth, quality=95)
    assert msg.format == 'rgb8; jpeg compressed bgr8'
    assert np.abs(compressed_to_rgb(msg).astype(int) - smooth).mean() < 3
    png = rgb_to_compressed(RGB, fmt='png')
    np.testing.assert_array_equal(compressed_to_rgb(png), RGB)


@pytest.mark.parametrize('fields, says', [
    ({'encoding': 'yuv422'}, 'unsupported image encoding'),
    ({'encoding': ''}, 'unsupported image encoding'),
    ({'step': 10}, 'step 10 <'),
    ({'data': b'\x00' * 100}, 'data has 100 bytes'),
    ({'width': 0, 'step': 0, 'data': b''}, 'empty'),
    ({'width': 100_000, 'height': 100_000, 'step': 300_000}, 'beyond'),
])
def test_malformed_images_raise_image_error_naming_the_field(fields, says):
    msg = numpy_to_image(RGB)
    for name, value in fields.items():
        setattr(msg, name, value)
    for convert in (image_to_rgb, image_to_numpy):
        with pytest.raises(ImageError, match=says):
            convert(msg)


@pytest.mark.parametrize('data', [b'', b'not a jpeg', b'\xff\xd8\xff' + b'\x00' * 50])
def test_undecodable_compressed_images_raise_image_error(data):
    with pytest.raises(ImageError, match='does not decode'):
        compressed_to_rgb(CompressedImage(format='jpeg', data=data))


def test_arrays_that_do_not_fit_the_encoding_are_refused():
    for array, encoding in ((RGB, 'mono8'), (RGB.astype(np.float32), 'rgb8'),
                            (RGB[..., 0], 'rgb8'), (np.zeros((2, 2, 2, 3), np.uint8), 'rgb8')):
        with pytest.raises(ImageError):
            numpy_to_image(array, encoding)
