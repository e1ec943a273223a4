"""LeRobot's dataset writer: the feature spec, creating, writing, checking, discarding.

The only module that imports LeRobot (and PyAV), lazily, so the rest of the conversion
(reading, planning, checking the input) works and fails fast without loading them.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from so101_driver.joints import JOINT_NAMES

from pi05_policy.dataset.config import (
    ACTION_KEY,
    IMAGE_PREFIX,
    INTERVENTION_KEY,
    ROBOT_TYPE,
    STATE_KEY,
    STREAMING_QUEUE,
    TIME_KEY,
    ConversionConfig,
    DatasetError,
)
from pi05_policy.dataset.frames import Timings, write_bag
from pi05_policy.dataset.segments import BagPlan


def dataset_features(config: ConversionConfig, shapes: dict[str, tuple[int, int]]) -> dict:
    """LeRobot feature spec of the dataset."""
    names = [f'{j}.pos' for j in JOINT_NAMES]
    features = {
        STATE_KEY: {'dtype': 'float32', 'shape': (len(names),), 'names': names},
        ACTION_KEY: {'dtype': 'float32', 'shape': (len(names),), 'names': names},
    }
    for name, key in config.cameras.items():
        h, w = shapes[name]
        features[IMAGE_PREFIX + key] = {'dtype': 'video' if config.video else 'image',
                                        'shape': (h, w, 3),
                                        'names': ['height', 'width', 'channels']}
    features[INTERVENTION_KEY] = {'dtype': 'bool', 'shape': (1,), 'names': None}
    features[TIME_KEY] = {'dtype': 'int64', 'shape': (1,), 'names': None}
    return features


def check_video_encoder(vcodec: str) -> None:
    """Raise DatasetError when PyAV cannot encode ``vcodec`` here (before any work)."""
    try:
        import av
    except ImportError as exc:
        raise DatasetError('video needs PyAV (pip install "av>=15,<16", lerobot[dataset]); '
                           'or pass --no-video to store images') from exc
    try:
        av.codec.Codec(vcodec, 'w')
    except Exception as exc:  # noqa: BLE001 - UnknownCodecError and friends
        raise DatasetError(f'PyAV here cannot encode {vcodec!r} ({exc}); pass --vcodec h264 '
                           'or --no-video') from exc


def _write(plans: list[BagPlan], config: ConversionConfig, features: dict, timings: Timings,
           streaming: bool) -> None:
    """Create the dataset and write every planned episode; no dataset is left on failure."""
    t0 = time.perf_counter()
    dataset = _create_dataset(config, features, streaming)
    t0 = timings.add('lerobot_import_and_create', t0)
    try:
        for plan in plans:
            write_bag(dataset, plan, config, timings)
        t0 = time.perf_counter()
        dataset.finalize()
        timings.add('lerobot_finalize', t0)
    except BaseException:
        _discard(dataset, config.root)
        raise


def dropped_video_frames(config: ConversionConfig) -> list[str]:
    """Episodes whose videos hold fewer (or more) frames than the episode, from the written
    metadata (``videos/<key>/from_timestamp``..``to_timestamp`` vs ``length``)."""
    from lerobot.datasets.dataset_metadata import LeRobotDatasetMetadata

    meta = LeRobotDatasetMetadata(config.repo_id, root=config.root)
    problems = []
    for episode in meta.episodes:
        for key in meta.video_keys:
            video = f'videos/{key}/'
            seconds = episode[video + 'to_timestamp'] - episode[video + 'from_timestamp']
            if abs(seconds * meta.fps - episode['length']) > 0.5:
                problems.append(f'episode {episode["episode_index"]} {key}: '
                                f'{seconds * meta.fps:.1f} video frames, {episode["length"]} rows')
    return problems


def _check_root(config: ConversionConfig) -> None:
    root = config.root
    if not root.exists():
        return
    if not config.overwrite:
        raise DatasetError(f'dataset root {root} exists; choose another --root or pass '
                           '--overwrite')
    if root.is_dir() and any(root.iterdir()) and not (root / 'meta' / 'info.json').is_file():
        raise DatasetError(f'dataset root {root} exists and is not a LeRobot dataset '
                           '(no meta/info.json); refusing to delete it')
    shutil.rmtree(root) if root.is_dir() else root.unlink()


def _create_dataset(config: ConversionConfig, features: dict, streaming: bool) -> Any:
    from lerobot.configs.video import RGBEncoderConfig
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    extra = {}
    if config.video:
        extra['rgb_encoder'] = RGBEncoderConfig(vcodec=config.vcodec)
    return LeRobotDataset.create(
        repo_id=config.repo_id, fps=config.fps, features=features, root=config.root,
        robot_type=ROBOT_TYPE, use_videos=config.video,
        image_writer_threads=0 if streaming else config.image_writer_threads,
        streaming_encoding=streaming, encoder_queue_maxsize=STREAMING_QUEUE, **extra)


def _discard(dataset: Any, root: Path) -> None:
    """Drop a half-written dataset (the conversion failed)."""
    try:
        dataset.writer.cancel_pending_videos()
        dataset.writer.stop_image_writer()
    except Exception:  # noqa: BLE001 - best effort on the way out
        pass
    shutil.rmtree(root, ignore_errors=True)
