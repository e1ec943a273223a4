"""sensor_msgs/Image and CompressedImage <-> numpy, with cv_bridge's semantics (no cv_bridge).

cv_bridge is not installable from PyPI, so the camera, simulation and policy nodes convert
images here. Supported encodings are the 8-bit ones the suite uses: ``rgb8``, ``bgr8``,
``mono8``, ``rgba8``, ``bgra8``. Rows may be padded (``step`` > width * channels), as
cv_bridge allows. Compressed images follow image_transport's ``compressed`` plugin: JPEG or
PNG payload, ``format`` like ``"rgb8; jpeg compressed bgr8"``.
"""

from __future__ import annotations

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

CHANNELS = {'rgb8': 3, 'bgr8': 3, 'mono8': 1, 'rgba8': 4, 'bgra8': 4}

#: cv2 conversion code from a message encoding to RGB.
_TO_RGB = {'bgr8': cv2.COLOR_BGR2RGB, 'mono8': cv2.COLOR_GRAY2RGB,
           'rgba8': cv2.COLOR_RGBA2RGB, 'bgra8': cv2.COLOR_BGRA2RGB}


class ImageError(ValueError):
    """An image message cannot be converted; the message says which field is wrong."""


def numpy_to_image(array: np.ndarray, encoding: str = 'rgb8', stamp=None,
                   frame_id: str = '') -> Image:
    """An HxW or HxWxC uint8 array -> Image (no row padding)."""
    if encoding not in CHANNELS:
        raise ImageError(f'unsupported encoding {encoding!r}; supported: {sorted(CHANNELS)}')
    array = np.ascontiguousarray(array)
    channels = 1 if array.ndim == 2 else array.shape[2]
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or channels != CHANNELS[encoding]:
        raise ImageError(f'array {array.shape} {array.dtype} does not fit encoding {encoding} '
                         f'(uint8, {CHANNELS[encoding]} channel(s))')
    msg = Image()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.height, msg.width = array.shape[:2]
    msg.encoding = encoding
    msg.is_bigendian = 0
    msg.step = msg.width * channels
    msg.data = array.tobytes()
    return msg


def image_to_numpy(msg: Image) -> np.ndarray:
    """Image -> HxWxC (or HxW for mono8) uint8 array in the message's own encoding."""
    channels = CHANNELS.get(msg.encoding)
    if channels is None:
        raise ImageError(f'unsupported image encoding {msg.encoding!r}; supported: '
                         f'{sorted(CHANNELS)}')
    row = msg.width * channels
    if msg.step < row:
        raise ImageError(f'image step {msg.step} < width {msg.width} x {channels} channels')
    if len(msg.data) < msg.step * msg.height:
        raise ImageError(f'image data has {len(msg.data)} bytes, header says '
                         f'{msg.height} rows x step {msg.step} = {msg.step * msg.height}')
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8, count=msg.step * msg.height)
    rows = buf.reshape(msg.height, msg.step)[:, :row]
    shape = (msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels)
    return rows.reshape(shape)


def image_to_rgb(msg: Image) -> np.ndarray:
    """Image of any supported encoding -> HxWx3 RGB uint8."""
    array = image_to_numpy(msg)
    code = _TO_RGB.get(msg.encoding)
    return np.ascontiguousarray(array) if code is None else cv2.cvtColor(array, code)


def rgb_to_compressed(rgb: np.ndarray, quality: int = 90, fmt: str = 'jpeg', stamp=None,
                      frame_id: str = '') -> CompressedImage:
    """HxWx3 RGB -> CompressedImage as image_transport's compressed plugin writes it."""
    if fmt not in ('jpeg', 'png'):
        raise ImageError(f"compressed format must be 'jpeg' or 'png', not {fmt!r}")
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == 'jpeg' else []
    ok, data = cv2.imencode('.jpg' if fmt == 'jpeg' else '.png',
                            cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise ImageError(f'cv2.imencode failed for a {rgb.shape} image')
    msg = CompressedImage()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.format = f'rgb8; {fmt} compressed bgr8'
    msg.data = data.tobytes()
    return msg


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """CompressedImage (JPEG or PNG) -> HxWx3 RGB uint8."""
    bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageError(f'compressed image ({msg.format!r}, {len(msg.data)} bytes) '
                         'does not decode')
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
