"""OpenCV capture for the camera node, without rclpy.

A ``CameraSource`` is one of three things, told apart by the ``source`` string:

* a device index (``"0"``): ``/dev/video0`` through OpenCV's V4L2 backend on Linux;
* a device path (``"/dev/video2"``, or better ``/dev/v4l/by-id/usb-...-video-index0``, which
  survives replugging and USB renumbering);
* a video file (anything else): replayed in a loop at the file's own frame rate, for replay
  and tests.

``CaptureThread`` owns the ``cv2.VideoCapture`` and runs in its own thread: it grabs, stamps
each frame right after the grab returns (the closest the host gets to exposure time), and hands
``Frame`` objects to a sink callback. A source that fails mid-run (device unplugged, file
moved away) is closed, reported as ``CaptureState.LOST`` and re-opened every
``reconnect_period_s``; nothing is handed to the sink while it is lost, so no stale frame is
ever re-published. A path source (device path or file) counts as lost as soon as its path
disappears, even if the already-open descriptor could still be read.

``CameraCalibration`` reads the ROS ``camera_calibration`` YAML format (what
``cameracalibrator`` writes and ``camera_info_manager`` reads).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import yaml


class CameraError(RuntimeError):
    """A camera cannot be opened or configured; the message names it and what to check."""


class CameraCalibrationError(ValueError):
    """A camera calibration YAML is missing or malformed; the message names file and field."""


class SourceKind(str, Enum):
    DEVICE_INDEX = 'device_index'
    DEVICE_PATH = 'device_path'
    FILE = 'file'


class CaptureState(str, Enum):
    STARTING = 'starting'  # not opened yet
    STREAMING = 'streaming'  # frames arrive
    LOST = 'lost'  # opened once, then failed; re-opened every reconnect_period_s
    STOPPED = 'stopped'  # stop() was called


def source_kind(source: str) -> SourceKind:
    """What a ``source`` string names: a digit string is an index, /dev/... a device."""
    text = source.strip()
    if text.isdigit():
        return SourceKind.DEVICE_INDEX
    if text.startswith('/dev/'):
        return SourceKind.DEVICE_PATH
    return SourceKind.FILE


@dataclass
class CameraConfig:
    """What to open and how; 0 for width/height/fps means the device's (or file's) own."""

    source: str  # device index ("0"), device path (/dev/v4l/by-id/...), or a video file
    width: int = 640  # requested frame width (devices); 0: keep the device default
    height: int = 480  # requested frame height (devices); 0: keep the device default
    fps: float = 30.0  # requested device rate; files play at their own rate, this if unknown
    fourcc: str = ''  # requested pixel format of a device, e.g. MJPG or YUYV; '' = default
    reconnect_period_s: float = 1.0  # how often a lost source is re-opened
    loop_file: bool = True  # files restart at their end (replay); False: LOST at the end
    buffer_size: int = 1  # driver-side frame queue (devices); 1 = always the newest frame

    def __post_init__(self):
        self.source = str(self.source).strip()
        if not self.source:
            raise ValueError('camera source is empty; give a device index ("0"), a device '
                             'path (/dev/v4l/by-id/...) or a video file')
        if self.width < 0 or self.height < 0:
            raise ValueError(f'width/height must be >= 0, got {self.width}x{self.height}')
        if not 0 <= self.fps <= 1000:
            raise ValueError(f'fps must be in 0..1000, got {self.fps}')
        if self.fourcc and len(self.fourcc) != 4:
            raise ValueError(f'fourcc must be 4 characters (e.g. MJPG, YUYV), got '
                             f'{self.fourcc!r}')
        if self.reconnect_period_s <= 0:
            raise ValueError(f'reconnect_period_s must be > 0, got {self.reconnect_period_s}')
        if self.buffer_size < 1:
            raise ValueError(f'buffer_size must be >= 1, got {self.buffer_size}')

    @property
    def kind(self) -> SourceKind:
        return source_kind(self.source)


@dataclass
class Frame:
    """One captured frame."""

    rgb: np.ndarray  # HxWx3 uint8, RGB order
    stamp: Any  # whatever the ``now`` callable returned right after the grab
    index: int  # running count of frames handed out (0-based)
    monotonic: float  # time.monotonic() at the grab, for rate statistics


@dataclass
class CaptureStats:
    """Counters for diagnostics (read without a lock: each is written by one thread)."""

    frames: int = 0  # frames handed to the sink
    drops: int = 0  # failed grabs on an open source plus frames missed by a late grab
    reconnects: int = 0  # successful re-opens after a loss
    open_failures: int = 0  # failed re-open attempts
    sink_errors: int = 0  # exceptions raised by the sink (frame not published)
    last_error: str = ''
    width: int = 0  # size of the frames actually delivered
    height: int = 0
    times: deque = field(default_factory=lambda: deque(maxlen=120))  # monotonic grab times

    def fps(self, window_s: float = 2.0, now: float | None = None) -> float:
        """Frames per second over the last ``window_s`` seconds (0 if none)."""
        now = time.monotonic() if now is None else now
        recent = [t for t in list(self.times) if now - t <= window_s]
        if len(recent) < 2:
            return 0.0
        span = max(recent[-1] - recent[0], 1e-9)
        return (len(recent) - 1) / span


def _open_hint(config: CameraConfig) -> str:
    kind = config.kind
    if kind is SourceKind.FILE:
        path = Path(config.source).expanduser()
        if not path.exists():
            return f'video file {path} does not exist'
        if not os.access(path, os.R_OK):
            return f'video file {path} is not readable (permissions)'
        return (f'video file {path} exists but OpenCV cannot decode it (codec not supported '
                'by this OpenCV build?)')
    device = f'/dev/video{config.source}' if kind is SourceKind.DEVICE_INDEX else config.source
    checks = [f'ls -l {device} /dev/v4l/by-id/ (is it plugged in? by-id paths survive '
              'replugging)',
              'permissions: be in the "video" group (sudo usermod -aG video $USER, log in '
              'again)',
              'is another process holding it? (fuser ' + device + ')']
    if not os.path.exists(device):
        lead = f'{device} does not exist'
    elif not os.access(device, os.R_OK | os.W_OK):
        lead = f'{device} exists but is not readable/writable by this user (permissions)'
    else:
        lead = f'{device} exists but did not open as a V4L2 camera'
    return lead + '; check: ' + '; '.join(checks)


def describe(config: CameraConfig) -> str:
    if config.kind is SourceKind.DEVICE_INDEX:
        return f'camera index {config.source} (/dev/video{config.source})'
    if config.kind is SourceKind.DEVICE_PATH:
        return f'camera device {config.source}'
    return f'video file {config.source}'


def open_capture(config: CameraConfig) -> tuple[cv2.VideoCapture, float]:
    """Open the source as configured; returns the capture and the frame period to pace a
    file with (0 for devices, which pace themselves). Raises ``CameraError`` naming it."""
    kind = config.kind
    backend = cv2.CAP_V4L2 if sys.platform.startswith('linux') else cv2.CAP_ANY
    if kind is SourceKind.DEVICE_INDEX:
        cap = cv2.VideoCapture(int(config.source), backend)
    elif kind is SourceKind.DEVICE_PATH:
        cap = cv2.VideoCapture(os.path.realpath(config.source), backend)
    else:
        path = Path(config.source).expanduser()
        cap = cv2.VideoCapture(str(path)) if path.is_file() else cv2.VideoCapture()
    if not cap.isOpened():
        cap.release()
        raise CameraError(f'cannot open {describe(config)}: {_open_hint(config)}')
    period = 0.0
    if kind is SourceKind.FILE:
        file_fps = cap.get(cv2.CAP_PROP_FPS)
        fps = file_fps if file_fps and 0 < file_fps <= 1000 else config.fps
        period = 1.0 / fps if fps > 0 else 0.0
    else:
        if config.fourcc:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*config.fourcc))
        if config.width:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, config.width)
        if config.height:
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, config.height)
        if config.fps:
            cap.set(cv2.CAP_PROP_FPS, config.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, config.buffer_size)
    return cap, period


class CaptureThread:
    """Grabs frames from one source in a thread and hands them to ``sink``.

    ``start()`` opens the source first, in the caller's thread, so a camera that cannot be
    opened at start fails loudly (``CameraError``) instead of retrying silently.
    """

    def __init__(self, config: CameraConfig, sink: Callable[[Frame], None],
                 now: Callable[[], Any] = time.time_ns,
                 on_state: Callable[[CaptureState, str], None] | None = None):
        self.config = config
        self.sink = sink
        self.now = now
        self.on_state = on_state or (lambda state, text: None)
        self.stats = CaptureStats()
        self.state = CaptureState.STARTING
        self.state_text = 'not started'
        self._cap: cv2.VideoCapture | None = None
        self._period = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------
    def start(self) -> None:
        self._cap, self._period = open_capture(self.config)
        self._set_state(CaptureState.STREAMING, f'{describe(self.config)} opened')
        self._thread = threading.Thread(target=self._run, name='camera_capture', daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout=timeout)
        self._release()
        self._set_state(CaptureState.STOPPED, 'stopped')

    @property
    def nominal_period(self) -> float:
        """Expected frame period: the file's own, else the requested fps (0 if unknown)."""
        if self._period:
            return self._period
        return 1.0 / self.config.fps if self.config.fps else 0.0

    # -- internals -------------------------------------------------------------
    def _set_state(self, state: CaptureState, text: str) -> None:
        changed = state is not self.state
        self.state, self.state_text = state, text
        if changed:
            self.on_state(state, text)

    def _release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def _lose(self, reason: str) -> None:
        self._release()
        self.stats.last_error = reason
        self._set_state(CaptureState.LOST, reason)

    def _path_gone(self) -> bool:
        if self.config.kind is SourceKind.DEVICE_INDEX:
            return False
        return not os.path.exists(os.path.expanduser(self.config.source))

    def _reopen(self) -> bool:
        try:
            self._cap, self._period = open_capture(self.config)
        except CameraError as err:
            self.stats.open_failures += 1
            self.stats.last_error = str(err)
            self.state_text = f'lost, re-opening every {self.config.reconnect_period_s:g} s: ' \
                              f'{err}'
            return False
        return True

    def _run(self) -> None:
        next_due = time.monotonic()
        last_grab = None
        while not self._stop.is_set():
            if self._cap is None:  # lost: re-open periodically
                if self._stop.wait(self.config.reconnect_period_s):
                    break
                if self._reopen():
                    self.stats.reconnects += 1
                    self._set_state(CaptureState.STREAMING, f'{describe(self.config)} re-opened')
                    next_due, last_grab = time.monotonic(), None
                continue
            if self._period:  # file: pace at its own rate with absolute deadlines
                delay = next_due - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    break
                next_due = max(next_due + self._period, time.monotonic() - self._period)
            if self._path_gone():
                self._lose(f'{describe(self.config)} disappeared')
                continue
            ok = self._cap.grab()
            grabbed = time.monotonic()
            stamp = self.now()
            if not ok:
                if self.config.kind is SourceKind.FILE and self.config.loop_file:
                    self._release()  # end of file: restart it (re-open also re-checks it)
                    if not self._reopen():
                        self._lose(f'{describe(self.config)} cannot be re-opened at its end')
                    next_due = time.monotonic()  # the empty grab used no frame slot
                    continue
                self.stats.drops += 1
                self._lose(f'{describe(self.config)}: grab failed (unplugged?)')
                continue
            ok, bgr = self._cap.retrieve()
            if not ok or bgr is None:
                self.stats.drops += 1
                self._lose(f'{describe(self.config)}: frame could not be decoded')
                continue
            if last_grab is not None and self.nominal_period:
                missed = round((grabbed - last_grab) / self.nominal_period) - 1
                if missed > 0:
                    self.stats.drops += missed
            last_grab = grabbed
            rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB) if bgr.ndim == 3 else \
                cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
            self.stats.height, self.stats.width = rgb.shape[:2]
            frame = Frame(rgb=rgb, stamp=stamp, index=self.stats.frames, monotonic=grabbed)
            self.stats.times.append(grabbed)
            self.stats.frames += 1
            try:
                self.sink(frame)
            except Exception as err:  # noqa: BLE001 - a bad frame must not end capture
                self.stats.sink_errors += 1
                self.stats.last_error = f'publishing frame {frame.index} failed: {err}'


# -- camera_info -----------------------------------------------------------------------
_MATRICES = {  # field -> (rows, cols)
    'camera_matrix': (3, 3),
    'rectification_matrix': (3, 3),
    'projection_matrix': (3, 4),
}


@dataclass(frozen=True)
class CameraCalibration:
    """Intrinsics as ``sensor_msgs/CameraInfo`` carries them (row-major lists)."""

    width: int  # image size the calibration was made at
    height: int
    camera_name: str
    distortion_model: str  # plumb_bob, rational_polynomial, equidistant, ...
    d: tuple[float, ...]  # distortion coefficients
    k: tuple[float, ...]  # 3x3 camera matrix
    r: tuple[float, ...]  # 3x3 rectification matrix
    p: tuple[float, ...]  # 3x4 projection matrix

    @classmethod
    def uncalibrated(cls, width: int, height: int, camera_name: str = '') -> CameraCalibration:
        """Size only; all-zero K/R/P mean "uncalibrated" (CameraInfo.msg)."""
        return cls(width=width, height=height, camera_name=camera_name, distortion_model='',
                   d=(), k=(0.0,) * 9, r=(0.0,) * 9, p=(0.0,) * 12)

    @classmethod
    def from_yaml(cls, path: str | Path) -> CameraCalibration:
        path = Path(path).expanduser()
        if not path.is_file():
            raise CameraCalibrationError(
                f'camera calibration file {path} does not exist; expected a ROS '
                'camera_calibration YAML (image_width, image_height, camera_matrix, '
                'distortion_model, distortion_coefficients, rectification_matrix, '
                'projection_matrix)')
        try:
            data = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise CameraCalibrationError(f'camera calibration file {path} is not YAML: '
                                         f'{err}') from err
        if not isinstance(data, dict):
            raise CameraCalibrationError(f'camera calibration file {path} must hold a mapping')
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_dict(cls, data: dict, source: str = '<dict>') -> CameraCalibration:
        def need(name):
            if name not in data:
                raise CameraCalibrationError(f'camera calibration {source} lacks field {name!r}')
            return data[name]

        def matrix(name, rows, cols):
            entry = need(name)
            values = entry.get('data') if isinstance(entry, dict) else None
            if not isinstance(values, list) or len(values) != rows * cols:
                raise CameraCalibrationError(
                    f'camera calibration {source}: {name} must be {{rows: {rows}, cols: {cols}, '
                    f'data: [{rows * cols} numbers]}}, got {entry!r}')
            try:
                out = tuple(float(v) for v in values)
            except (TypeError, ValueError) as err:
                raise CameraCalibrationError(f'camera calibration {source}: {name} holds a '
                                             f'non-number: {err}') from err
            if not all(np.isfinite(out)):
                raise CameraCalibrationError(f'camera calibration {source}: {name} holds '
                                             'NaN or inf')
            return out

        try:
            width, height = int(need('image_width')), int(need('image_height'))
        except (TypeError, ValueError) as err:
            raise CameraCalibrationError(f'camera calibration {source}: image_width/'
                                         f'image_height must be integers ({err})') from err
        if width <= 0 or height <= 0:
            raise CameraCalibrationError(f'camera calibration {source}: image size '
                                         f'{width}x{height} must be positive')
        dist = need('distortion_coefficients')
        d_values = dist.get('data') if isinstance(dist, dict) else None
        if not isinstance(d_values, list):
            raise CameraCalibrationError(f'camera calibration {source}: distortion_coefficients '
                                         f'must be {{rows: 1, cols: N, data: [...]}}, got '
                                         f'{dist!r}')
        return cls(width=width, height=height, camera_name=str(data.get('camera_name', '')),
                   distortion_model=str(need('distortion_model')),
                   d=tuple(float(v) for v in d_values),
                   k=matrix('camera_matrix', 3, 3),
                   r=matrix('rectification_matrix', 3, 3),
                   p=matrix('projection_matrix', 3, 4))
