"""sensor_msgs/Image and CompressedImage <-> numpy through cv_bridge, with clear errors.

Conversions go through ``cv_bridge.CvBridge``: the distribution's on a ROS 2 install, the
pure-Python ``cv-bridge`` package from PyPI elsewhere (same API). This module adds what a node
that takes images from any process on the DDS domain needs around it: every field of a
message is checked first (encoding, size, ``step``, data length), so a malformed image is an
:class:`ImageError` naming the field instead of a numpy or OpenCV exception, or worse, wrong
pixels. Supported encodings are the 8-bit ones the suite uses: ``rgb8``, ``bgr8``, ``mono8``,
``rgba8``, ``bgra8``.

Two things the bridge does not do, done here:
- rows padded beyond ``width * channels`` (``step`` larger, as ROS allows): the PyPI bridge
  ignores ``step`` and returns shifted pixels; such images are unpadded before the bridge;
- a JPEG quality for CompressedImage (``cv2_to_compressed_imgmsg`` has no quality setting):
  encoding uses OpenCV directly. ``format`` follows image_transport's ``compressed`` plugin,
  ``"rgb8; jpeg compressed bgr8"``.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image

CHANNELS = {'rgb8': 3, 'bgr8': 3, 'mono8': 1, 'rgba8': 4, 'bgra8': 4}
#: Largest image accepted (pixels): 4K; larger is a malformed header, not a camera.
MAX_PIXELS = 3840 * 2160


class ImageError(ValueError):
    """An image message cannot be converted; the message says which field is wrong."""


@functools.cache
def bridge():
    """The process's CvBridge (stateless; built once)."""
    from cv_bridge import CvBridge

    return CvBridge()


def numpy_to_image(array: np.ndarray, encoding: str = 'rgb8', stamp=None,
                   frame_id: str = '') -> Image:
    """An HxW or HxWxC uint8 array -> Image (no row padding)."""
    if encoding not in CHANNELS:
        raise ImageError(f'unsupported encoding {encoding!r}; supported: {sorted(CHANNELS)}')
    array = np.ascontiguousarray(array)
    channels = 1 if array.ndim == 2 else array.shape[2] if array.ndim == 3 else 0
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or channels != CHANNELS[encoding]:
        raise ImageError(f'array {array.shape} {array.dtype} does not fit encoding {encoding} '
                         f'(uint8, {CHANNELS[encoding]} channel(s))')
    msg = bridge().cv2_to_imgmsg(array, encoding=encoding)
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def _check(msg: Image) -> int:
    """Channels of a well-formed message; ImageError naming the bad field otherwise."""
    channels = CHANNELS.get(msg.encoding)
    if channels is None:
        raise ImageError(f'unsupported image encoding {msg.encoding!r}; supported: '
                         f'{sorted(CHANNELS)}')
    if msg.width <= 0 or msg.height <= 0 or msg.width * msg.height > MAX_PIXELS:
        raise ImageError(f'image size {msg.width}x{msg.height} is empty or beyond '
                         f'{MAX_PIXELS} pixels')
    if msg.step < msg.width * channels:
        raise ImageError(f'image step {msg.step} < width {msg.width} x {channels} channels')
    if len(msg.data) < msg.step * msg.height:
        raise ImageError(f'image data has {len(msg.data)} bytes, header says '
                         f'{msg.height} rows x step {msg.step} = {msg.step * msg.height}')
    return channels


def _unpadded(msg: Image, channels: int) -> Image:
    """``msg`` itself, or a copy without row padding (the PyPI bridge ignores ``step``)."""
    row = msg.width * channels
    if msg.step == row and len(msg.data) == row * msg.height:
        return msg
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8, count=msg.step * msg.height)
    rows = np.ascontiguousarray(buf.reshape(msg.height, msg.step)[:, :row])
    return Image(header=msg.header, height=msg.height, width=msg.width, encoding=msg.encoding,
                 is_bigendian=msg.is_bigendian, step=row, data=rows.tobytes())


def image_to_numpy(msg: Image) -> np.ndarray:
    """Image -> HxWxC (or HxW for mono8) uint8 array in the message's own encoding."""
    channels = _check(msg)
    return bridge().imgmsg_to_cv2(_unpadded(msg, channels), desired_encoding='passthrough')


def image_to_rgb(msg: Image) -> np.ndarray:
    """Image of any supported encoding -> HxWx3 RGB uint8."""
    channels = _check(msg)
    rgb = bridge().imgmsg_to_cv2(_unpadded(msg, channels), desired_encoding='rgb8')
    return np.ascontiguousarray(rgb)


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
    """CompressedImage (JPEG or PNG, colour) -> HxWx3 RGB uint8."""
    try:
        rgb = bridge().compressed_imgmsg_to_cv2(msg, desired_encoding='rgb8') if msg.data else None
    except Exception:  # noqa: BLE001 - the bridge raises cv2.error/KeyError for bad payloads
        rgb = None
    if rgb is None or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ImageError(f'compressed image ({msg.format!r}, {len(msg.data)} bytes) '
                         'does not decode to a colour image')
    return np.ascontiguousarray(rgb)
