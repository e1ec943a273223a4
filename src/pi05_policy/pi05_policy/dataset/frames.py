"""Pass 2 over a bag: decode the images the plan needs and hand LeRobot the frames in order.

Images are decoded as the bag is read and dropped after the last frame that uses them, so
memory holds only the images still pending, not a whole episode.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from eval_monitor.bag import BagReader

from pi05_policy.dataset.config import (
    ACTION_KEY,
    IMAGE_PREFIX,
    INTERVENTION_KEY,
    STATE_KEY,
    TIME_KEY,
    ConversionConfig,
    DatasetError,
)
from pi05_policy.dataset.segments import BagPlan
from pi05_policy.dataset.streams import CameraStream


class Timings:
    """Seconds spent per stage (for the summary and the benchmark)."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now


def _to_rgb(msg: Any, camera: CameraStream, size: tuple[int, int] | None, path: Path,
            log: float) -> np.ndarray:
    import cv2
    from so101_driver.images import compressed_to_rgb, image_to_rgb

    try:
        rgb = compressed_to_rgb(msg) if camera.compressed else image_to_rgb(msg)
    except ValueError as exc:
        raise DatasetError(f'bag {path}: {camera.topic} at {log:.3f} s: {exc}') from exc
    if size is not None:
        if rgb.shape[:2] != size:
            rgb = cv2.resize(rgb, (size[1], size[0]), interpolation=cv2.INTER_AREA)
    elif rgb.shape[:2] != camera.shape:
        raise DatasetError(f'bag {path}: {camera.topic} at {log:.3f} s is {rgb.shape[:2]}, '
                           f'earlier images {camera.shape}; pass --image-size HxW')
    return rgb


def write_bag(dataset: Any, plan: BagPlan, config: ConversionConfig, timings: Timings) -> None:
    """Pass 2 over one bag: decode the images the plan needs and add the frames in order."""
    if not plan.episodes:
        return
    streams = plan.streams
    cams = list(config.cameras)
    # frames in write order; for each camera, the last frame that needs each image
    frames = [(e, j) for e, ep in enumerate(plan.episodes) for j in range(len(ep.times))]
    last_use: dict[str, dict[int, int]] = {c: {} for c in cams}
    for f, (e, j) in enumerate(frames):
        for c in cams:
            last_use[c][int(plan.episodes[e].images[c][j])] = f
    cache: dict[str, dict[int, np.ndarray]] = {c: {} for c in cams}
    counters = dict.fromkeys(cams, 0)
    topic_cam = {streams.cameras[c].topic: c for c in cams}
    reader = BagReader(streams.path)
    next_frame = 0
    t0 = time.perf_counter()

    def emit_ready(t0: float) -> float:
        nonlocal next_frame
        while next_frame < len(frames):
            e, j = frames[next_frame]
            ep = plan.episodes[e]
            wanted = {c: int(ep.images[c][j]) for c in cams}
            if any(wanted[c] not in cache[c] for c in cams):
                break
            frame = {STATE_KEY: ep.state[j], ACTION_KEY: ep.action[j],
                     INTERVENTION_KEY: np.array([ep.intervention[j]]),
                     TIME_KEY: np.array([round(ep.times[j] * 1e9)], dtype=np.int64),
                     'task': ep.tasks[j]}
            for c in cams:
                frame[IMAGE_PREFIX + config.cameras[c]] = cache[c][wanted[c]]
            dataset.add_frame(frame)
            t0 = timings.add('lerobot_add_frame', t0)
            for c in cams:
                if last_use[c][wanted[c]] == next_frame:
                    del cache[c][wanted[c]]
            next_frame += 1
            if j == len(ep.times) - 1:
                dataset.save_episode()
                t0 = timings.add('lerobot_save_episode', t0)
        return t0

    for topic, _, log_ns, msg in reader.messages(topics=list(topic_cam)):
        t0 = timings.add('bag_read', t0)
        c = topic_cam[topic]
        ordinal = counters[c]
        counters[c] += 1
        if ordinal in last_use[c]:
            cache[c][ordinal] = _to_rgb(msg, streams.cameras[c], config.image_size,
                                        streams.path, log_ns / 1e9)
            t0 = timings.add('image_decode', t0)
            t0 = emit_ready(t0)
    if next_frame < len(frames):
        raise DatasetError(f'bag {streams.path}: the second read found fewer camera images '
                           f'than the first ({counters}); is the bag being written to?')
