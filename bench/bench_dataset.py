"""Benchmark: so101-dataset conversion speed (bag -> LeRobot dataset).

A synthetic bag of ``--seconds`` (default 20) at 30 fps: two 640x480 cameras (``front`` and
``handeye``, rgb8 ``image_raw``; a second bag carries them as JPEG ``image_raw/compressed``),
joint states at 100 Hz, policy trajectory chunks at 10 Hz, one operator takeover with teleop
trajectories, two episodes. The images are a smooth moving scene with sensor-like noise, so
encoders do realistic work. Each variant converts the bag at 30 fps:

* ``video_svtav1``: the default: libsvtav1 (LeRobot's codec) through LeRobot's streaming
  encoder threads (frames go straight to PyAV);
* ``video_svtav1_staged``: ``--no-streaming-encoding``: LeRobot's recording default, each
  frame staged as a PNG file, encoded at the end of the episode;
* ``video_h264``: streaming with ``--vcodec h264``;
* ``images``: ``--no-video`` (PNG images embedded in the parquet files);
* ``video_svtav1_jpeg_topics``: the default, reading the compressed (JPEG) topics.

Figures: frames per second (dataset frames, each with both cameras), wall and CPU time
(all threads and the encoder processes), and the share of wall time spent on image work
(decoding the bag's images to RGB, LeRobot's add_frame: PNG staging, or, streaming, handing
the frame to the encoder threads and waiting while their queue is full; save_episode: video
encoding, image stats, parquet) versus the rest (reading and CDR-decoding the bag, planning,
replaying commands, finalising). With streaming the encoder threads run while the bag is
read, so their work shows partly as add_frame waits and partly as a slower bag_read. The
lerobot import is timed on its own and left out. Prints the figures and writes
bench/results/bench_dataset.json.

    .venv/bin/python bench/bench_dataset.py [--seconds 20] [--variants video_svtav1 images]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import tempfile
import time
from pathlib import Path

os.environ.setdefault('HF_HUB_OFFLINE', '1')

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / 'bench' / 'results' / 'bench_dataset.json'
CALIBRATION = ROOT / 'config' / 'calibration' / 'so101_demo.json'
FPS = 30
WIDTH, HEIGHT = 640, 480
T0 = 1_700_000_000.0
#: stages counted as image work (see pi05_policy.dataset.write_bag)
IMAGE_STAGES = ('image_decode', 'lerobot_add_frame', 'lerobot_save_episode')
VARIANTS = {
    'video_svtav1': dict(video=True, vcodec='libsvtav1', streaming=True, jpeg=False),
    'video_svtav1_staged': dict(video=True, vcodec='libsvtav1', streaming=False, jpeg=False),
    'video_h264': dict(video=True, vcodec='h264', streaming=True, jpeg=False),
    'images': dict(video=False, vcodec='libsvtav1', streaming=False, jpeg=False),
    'video_svtav1_jpeg_topics': dict(video=True, vcodec='libsvtav1', streaming=True, jpeg=True),
}


def scene(t: float, camera: int, rng: np.random.Generator) -> np.ndarray:
    """A 480x640 RGB frame: gradient background, a moving 'arm' bar and 'cube', noise."""
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH]
    img = np.empty((HEIGHT, WIDTH, 3), dtype=np.float32)
    img[..., 0] = 90 + 60 * x / WIDTH
    img[..., 1] = 100 + 40 * y / HEIGHT
    img[..., 2] = 120 + 20 * camera
    cx = int(WIDTH / 2 + 150 * np.sin(0.7 * t + camera))
    cy = int(HEIGHT / 2 + 80 * np.cos(0.5 * t))
    img[max(cy - 20, 0):cy + 20, max(cx - 20, 0):cx + 20] = (200, 30, 30)
    img[HEIGHT // 2 - 10:HEIGHT // 2 + 10, :max(cx - 25, 0)] = (60, 60, 70)
    img += rng.normal(0.0, 3.0, img.shape).astype(np.float32)
    return np.clip(img, 0, 255).astype(np.uint8)


def generate_bag(path: Path, seconds: float, jpeg: bool) -> dict[str, int]:
    from so101_driver.eval_topics import EpisodeEvent, EpisodeMark
    from so101_driver.images import numpy_to_image, rgb_to_compressed
    from so101_driver.joints import urdf_text
    from so101_driver.ros_io import joint_state_msg, time_msg, trajectory_msg
    from std_msgs.msg import Bool, String

    from eval_monitor.bag import BagWriter

    def ns(t: float) -> int:
        return int(round((T0 + t) * 1e9))

    def q_at(t: float) -> np.ndarray:
        return np.array([0.3 * np.sin(0.4 * t), -0.8 + 0.2 * np.sin(0.3 * t),
                         0.7 + 0.2 * np.cos(0.3 * t), 1.2, 0.1 * np.sin(t),
                         0.4 + 0.3 * np.sin(0.8 * t)])

    rng = np.random.default_rng(0)
    half = seconds / 2
    takeover = (0.3 * seconds, 0.45 * seconds)
    with BagWriter(path) as writer:
        writer.write_msg('/robot_description', String(data=urdf_text()), ns(0))
        writer.write_msg('/policy/task', String(data='pick the red cube'), ns(0))
        for event, t, success in ((EpisodeEvent.START, 0.0, None), (EpisodeEvent.END, half, True),
                                  (EpisodeEvent.START, half, None),
                                  (EpisodeEvent.END, seconds, False)):
            mark = EpisodeMark(event=event, stamp=T0 + t, success=success)
            writer.write_msg('/eval/episode', String(data=mark.to_json()), ns(t))
        override = False
        for tick in range(int(seconds * 100) + 1):
            t = tick / 100
            writer.write_msg('/joint_states', joint_state_msg(time_msg(T0 + t), q_at(t)), ns(t))
            active = takeover[0] <= t < takeover[1]
            if active != override or tick % 100 == 0:
                override = active
                writer.write_msg('/teleop/override', Bool(data=active), ns(t))
            if tick % 10 == 0:  # a 1 s chunk every 0.1 s from the policy or the operator
                tfs = np.arange(11) * 0.1
                points = np.array([q_at(t + dt) for dt in tfs])
                topic = '/teleop/joint_trajectory' if active else '/joint_trajectory'
                writer.write_msg(topic, trajectory_msg(points, tfs, T0 + t), ns(t))
            if tick % 100 in {round(k * 100 / FPS) for k in range(FPS)}:
                for c, name in enumerate(('front', 'handeye')):
                    rgb = scene(t, c, rng)
                    stamp = time_msg(T0 + t)
                    if jpeg:
                        writer.write_msg(f'/cameras/{name}/image_raw/compressed',
                                         rgb_to_compressed(rgb, 90, stamp=stamp), ns(t))
                    else:
                        writer.write_msg(f'/cameras/{name}/image_raw',
                                         numpy_to_image(rgb, 'rgb8', stamp), ns(t))
        counts = writer.message_counts
    return counts


def cpu_seconds() -> float:
    """CPU time of this process (every thread) and its finished children (encoder pool)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_variant(bag: Path, out: Path, name: str, options: dict) -> dict:
    from pi05_policy.dataset import ConversionConfig, convert

    config = ConversionConfig(
        bags=[bag], root=out / name, calibration_file=CALIBRATION, fps=FPS,
        video=options['video'], vcodec=options['vcodec'],
        streaming_encoding=options['streaming'], image_tolerance_s=0.05)
    start, cpu = time.perf_counter(), cpu_seconds()
    result = convert(config)
    wall, cpu = time.perf_counter() - start, cpu_seconds() - cpu
    stages = result.summary['timings_s']
    create = stages.get('lerobot_import_and_create', 0.0)
    total = wall - create
    image = sum(stages.get(k, 0.0) for k in IMAGE_STAGES)
    size = sum(f.stat().st_size for f in (out / name).rglob('*') if f.is_file())
    return {
        'frames': result.frames, 'episodes': result.episodes,
        'images_per_frame': 2, 'wall_s': round(wall, 3),
        'wall_s_without_lerobot_create': round(total, 3),
        'fps': round(result.frames / total, 2),
        'cpu_s': round(cpu, 2),
        'image_share': round(image / total, 3),
        'stages_s': stages, 'dataset_mb': round(size / 1e6, 2),
        'skipped_frames': result.summary['skipped_frames'],
        'video_writing': result.summary['dataset'].get('video_writing'),
        'write_notes': result.summary.get('write_notes', []),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--seconds', type=float, default=20.0)
    parser.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    t = time.perf_counter()
    import lerobot.datasets.lerobot_dataset  # noqa: F401 - timed apart from the conversions

    import_s = time.perf_counter() - t
    results: dict = {'seconds': args.seconds, 'fps': FPS, 'cameras': 2,
                     'image_size': [HEIGHT, WIDTH], 'cpu_count': os.cpu_count(),
                     'machine': platform.machine(), 'lerobot_import_s': round(import_s, 2),
                     'variants': {}}
    with tempfile.TemporaryDirectory(prefix='bench_dataset_') as tmp:
        tmp = Path(tmp)
        bags = {}
        for jpeg in sorted({VARIANTS[v]['jpeg'] for v in args.variants}):
            path = tmp / ('bag_jpeg' if jpeg else 'bag_raw')
            t = time.perf_counter()
            counts = generate_bag(path, args.seconds, jpeg)
            size = sum(f.stat().st_size for f in path.rglob('*'))
            print(f'bag {path.name}: {sum(counts.values())} messages, {size / 1e6:.0f} MB, '
                  f'generated in {time.perf_counter() - t:.1f} s')
            bags[jpeg] = path
            results[f'bag_{"jpeg" if jpeg else "raw"}_mb'] = round(size / 1e6, 1)
        for name in args.variants:
            options = VARIANTS[name]
            figures = run_variant(bags[options['jpeg']], tmp / 'out', name, options)
            results['variants'][name] = figures
            print(f'{name:26s} {figures["fps"]:7.1f} frames/s ({figures["frames"]} frames x 2 '
                  f'cameras in {figures["wall_s_without_lerobot_create"]:.1f} s, CPU '
                  f'{figures["cpu_s"]:.1f} s), image work {100 * figures["image_share"]:.0f}%, '
                  f'dataset {figures["dataset_mb"]} MB')
            print(f'{"":26s} stages: {figures["stages_s"]}')
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(results, indent=2) + '\n')
    print(f'lerobot import: {import_s:.1f} s (not counted); wrote {RESULTS}')


if __name__ == '__main__':
    main()
