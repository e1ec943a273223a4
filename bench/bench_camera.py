"""Benchmark: the camera node's publish rate and CPU share on a 640x480 @ 30 fps source.

Writes a 640x480, 30 fps MJPG .avi (moving shapes over a noisy gradient, so JPEG has real
work to do), then runs the ``so101_camera`` node on it in a child process, twice: without
and with ``image_raw/compressed`` (JPEG quality 90). For each run, after a warm-up, it
measures over ``--seconds``:

* publish rate: ``image_raw`` messages received by a subscriber in this process, per second
  (and ``image_raw/compressed`` when on), plus the rate from the messages' own stamps; with
  a RELIABLE keep-last 1 subscriber (every frame arrives if it keeps up: the publish rate)
  and with the suite's BEST_EFFORT stream subscriber (``qos.STREAM_SUB``), which shows how
  many 921 kB rgb8 frames survive best-effort delivery between two processes;
* CPU share of the camera process: (user + system CPU time) / wall time, from
  ``/proc/<pid>/stat`` (1.0 = one core fully busy), covering decode of the source, BGR->RGB,
  the rgb8 message, JPEG encoding and DDS publishing;
* the capture-to-receipt latency of image_raw (receipt time - header stamp), p50/p99.

The file is decoded by OpenCV (FFmpeg MJPEG) on every frame, much like a USB camera that
sends MJPG; a real camera's decode happens in the same place.

First, the per-frame cost of the conversions the nodes run (``so101_driver.images``, through
cv_bridge) against the numpy/OpenCV code they replaced, interleaved in one run.

Prints the figures and writes bench/results/bench_camera.json.

    .venv/bin/python bench/bench_camera.py [--seconds 10] [--warmup 3] [--conversions-only]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'bench' / 'results' / 'bench_camera.json'
WIDTH, HEIGHT, FPS, FRAMES = 640, 480, 30.0, 90
CLK_TCK = os.sysconf('SC_CLK_TCK')


def write_source(path: Path) -> Path:
    """A 3 s loop of 640x480 frames: noisy gradient background and moving shapes."""
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*'MJPG'), FPS, (WIDTH, HEIGHT))
    if not writer.isOpened():
        raise SystemExit('cv2.VideoWriter cannot write MJPG .avi here')
    ramp = np.linspace(40, 200, WIDTH, dtype=np.float32)
    base = np.dstack([np.tile(ramp, (HEIGHT, 1))] * 3)
    for i in range(FRAMES):
        frame = base + rng.normal(0, 6, base.shape)
        x = int(100 + 400 * (i / FRAMES))
        cv2.rectangle(frame, (x, 150), (x + 80, 230), (30, 30, 220), -1)  # red cube (BGR)
        cv2.circle(frame, (320, 360), 60 + i % 20, (160, 160, 160), -1)  # grey bowl
        writer.write(np.clip(frame, 0, 255).astype(np.uint8))
    writer.release()
    return path


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, seconds."""
    fields = Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def camera_command(source: Path, compressed: bool) -> list[str]:
    exe = Path(sys.executable).parent / 'so101_camera'
    cmd = ([str(exe)] if exe.exists()
           else [sys.executable, '-m', 'so101_driver.cameras.camera_node'])
    return cmd + ['--ros-args', '-p', f'source:={source}', '-p', 'camera_name:=front',
                  '-p', f'publish_compressed:={"true" if compressed else "false"}',
                  '-p', 'jpeg_quality:=90', '--log-level', 'warn']


class Counter:
    """Subscriber in the bench process: receipt times, stamps, compressed count."""

    def __init__(self, node, reliable: bool):
        from sensor_msgs.msg import CompressedImage, Image
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
        from so101_driver.qos import STREAM_SUB

        self.lock = threading.Lock()
        self.images: list[tuple[float, float]] = []  # (receipt wall time, stamp)
        self.compressed: list[float] = []
        # reliable keep-last 1: newest frame only, but every fragment repaired
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=1,
                         reliability=ReliabilityPolicy.RELIABLE) if reliable else STREAM_SUB
        node.create_subscription(Image, 'cameras/front/image_raw', self._image, qos)
        node.create_subscription(CompressedImage, 'cameras/front/image_raw/compressed',
                                 self._compressed, qos)

    def _image(self, msg):
        now = time.time()
        with self.lock:
            self.images.append((now, msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9))

    def _compressed(self, msg):
        with self.lock:
            self.compressed.append(time.time())

    def window(self, t0: float, t1: float):
        with self.lock:
            images = [(r, s) for r, s in self.images if t0 <= r < t1]
            compressed = [r for r in self.compressed if t0 <= r < t1]
        return images, compressed


def run_case(node_ctx, source: Path, compressed: bool, reliable: bool, seconds: float,
             warmup: float) -> dict:
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node

    node = Node(f'bench_camera_{int(compressed)}{int(reliable)}', context=node_ctx)
    counter = Counter(node, reliable)
    executor = SingleThreadedExecutor(context=node_ctx)
    executor.add_node(node)
    spin = threading.Thread(target=executor.spin, daemon=True)
    spin.start()
    proc = subprocess.Popen(camera_command(source, compressed), stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not counter.images:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f'camera node gave no image (exit {proc.poll()}): '
                                 f'{proc.stderr.read() if proc.poll() is not None else ""}')
            time.sleep(0.05)
        time.sleep(warmup)
        wall0, cpu0 = time.time(), cpu_seconds(proc.pid)
        time.sleep(seconds)
        wall1, cpu1 = time.time(), cpu_seconds(proc.pid)
        images, comp = counter.window(wall0, wall1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        executor.shutdown(timeout_sec=2.0)
        spin.join(timeout=5)
        node.destroy_node()
    stamps = np.array([s for _, s in images])
    latency = np.array([r - s for r, s in images]) * 1e3
    span = wall1 - wall0
    return {
        'compressed': compressed,
        'subscriber_qos': 'reliable' if reliable else 'best_effort',
        'seconds': span,
        'image_rate_hz': len(images) / span,
        'stamp_rate_hz': float((len(stamps) - 1) / (stamps[-1] - stamps[0]))
        if len(stamps) > 1 else 0.0,
        'compressed_rate_hz': len(comp) / span,
        'cpu_share': (cpu1 - cpu0) / span,
        'latency_p50_ms': float(np.percentile(latency, 50)) if len(latency) else None,
        'latency_p99_ms': float(np.percentile(latency, 99)) if len(latency) else None,
    }


def _reference_to_image(array):
    """What so101_driver.images did before cv_bridge: numpy only (the reference)."""
    from sensor_msgs.msg import Image

    return Image(height=array.shape[0], width=array.shape[1], encoding='rgb8', is_bigendian=0,
                 step=array.shape[1] * 3, data=array.tobytes())


def _reference_to_rgb(msg):
    buf = np.frombuffer(bytes(msg.data), dtype=np.uint8, count=msg.step * msg.height)
    return np.ascontiguousarray(buf.reshape(msg.height, msg.step)[:, :msg.width * 3]
                                .reshape(msg.height, msg.width, 3))


def _reference_from_jpeg(msg):
    bgr = cv2.imdecode(np.frombuffer(bytes(msg.data), dtype=np.uint8), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def conversions(repeats: int = 300) -> dict:
    """Per-frame time of the image conversions the nodes run (so101_driver.images, through
    cv_bridge) against the numpy/OpenCV reference they replaced, interleaved in one run."""
    import cv_bridge

    from so101_driver.images import compressed_to_rgb, image_to_rgb, numpy_to_image, \
        rgb_to_compressed

    frame = np.random.default_rng(1).integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    msg, jpeg = numpy_to_image(frame), rgb_to_compressed(frame)
    pairs = {
        'rgb array -> Image': (lambda: numpy_to_image(frame), lambda: _reference_to_image(frame)),
        'Image -> rgb array': (lambda: image_to_rgb(msg), lambda: _reference_to_rgb(msg)),
        'CompressedImage -> rgb array': (lambda: compressed_to_rgb(jpeg),
                                         lambda: _reference_from_jpeg(jpeg)),
    }
    out = {'cv_bridge': getattr(cv_bridge, '__file__', '?'), 'cases': {}}
    for name, (bridged, reference) in pairs.items():
        times = {'cv_bridge': [], 'reference': []}
        for _ in range(repeats):
            for key, fn in (('cv_bridge', bridged), ('reference', reference)):
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
        p50 = {k: float(np.percentile(v, 50)) * 1e3 for k, v in times.items()}
        out['cases'][name] = {'cv_bridge_ms_p50': p50['cv_bridge'],
                              'reference_ms_p50': p50['reference'],
                              'ratio': p50['cv_bridge'] / p50['reference']}
        print(f'{name:>30}: cv_bridge {p50["cv_bridge"]:.3f} ms, numpy reference '
              f'{p50["reference"]:.3f} ms p50 ({p50["cv_bridge"] / p50["reference"]:.2f}x)')
    return out


def main():
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--seconds', type=float, default=10.0, help='measurement window')
    parser.add_argument('--warmup', type=float, default=3.0, help='seconds before measuring')
    parser.add_argument('--conversions-only', action='store_true',
                        help='only the image conversion timings (no camera node)')
    args = parser.parse_args()
    converted = conversions()
    if args.conversions_only:
        return

    import rclpy

    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    context = rclpy.Context()
    rclpy.init(context=context)
    results = []
    with tempfile.TemporaryDirectory(prefix='bench-camera-') as tmp:
        source = write_source(Path(tmp) / 'source_640x480_30fps.avi')
        for compressed, reliable in ((False, True), (True, True), (False, False),
                                     (True, False)):
            case = run_case(context, source, compressed, reliable, args.seconds, args.warmup)
            results.append(case)
            print(f'camera node, {WIDTH}x{HEIGHT} @ {FPS:g} fps file, compressed '
                  f'{"on " if compressed else "off"}, {case["subscriber_qos"]:>11} '
                  f'subscriber: image_raw {case["image_rate_hz"]:.1f} Hz '
                  f'(stamps {case["stamp_rate_hz"]:.1f} Hz), compressed '
                  f'{case["compressed_rate_hz"]:.1f} Hz, CPU {case["cpu_share"] * 100:.0f} % of '
                  f'a core, capture->receipt p50 {case["latency_p50_ms"]:.1f} ms / p99 '
                  f'{case["latency_p99_ms"]:.1f} ms')
    rclpy.try_shutdown(context=context)
    report = {
        'source': {'width': WIDTH, 'height': HEIGHT, 'fps': FPS, 'codec': 'MJPG avi',
                   'frames': FRAMES},
        'jpeg_quality': 90,
        'machine': {'cpus': os.cpu_count(), 'platform': platform.platform(),
                    'python': platform.python_version(), 'opencv': cv2.__version__},
        'load_average': os.getloadavg(),
        'cases': results,
        'conversions': converted,
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + '\n')
    print(f'wrote {RESULTS}')


if __name__ == '__main__':
    main()
