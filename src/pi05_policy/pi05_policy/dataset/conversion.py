"""The conversion: read and check every bag, plan the frames, write, check, summarize.

Every input check (calibration, robot, image sizes, an empty result) runs before the
dataset is created, so unusable input leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from so101_driver.feetech.calibration import ArmCalibration, MotorCalibration, load_calibration
from so101_driver.joints import JOINT_NAMES

from pi05_policy.dataset.config import (
    BAG_CALIBRATION_FILE,
    RANGE_MARGIN_TICKS,
    ROBOT_TYPE,
    ConversionConfig,
    DatasetError,
    MismatchAction,
)
from pi05_policy.dataset.frames import Timings
from pi05_policy.dataset.segments import BagPlan, plan_bag
from pi05_policy.dataset.streams import BagStreams, read_streams
from pi05_policy.dataset.writer import (
    _check_root,
    _write,
    check_video_encoder,
    dataset_features,
    dropped_video_frames,
)


@dataclass
class ConversionResult:
    summary: dict  # also written as JSON to summary_path
    root: Path
    summary_path: Path
    frames: int
    episodes: int


def convert(config: ConversionConfig) -> ConversionResult:
    """Read and check every bag, plan the frames, then write the dataset with LeRobot.

    Raises :class:`DatasetError` (nothing written) for input that cannot become a dataset.
    """
    timings = Timings()
    t0 = time.perf_counter()
    motors = load_calibration(config.calibration_file)
    calibration = ArmCalibration(motors)
    if config.video:
        check_video_encoder(config.vcodec)
    _check_root(config)
    bag_reports: list[dict] = []
    plans: list[BagPlan] = []
    robots: dict[tuple, Path] = {}
    for path in config.bags:
        report: dict[str, Any] = {'path': str(path)}
        bag_reports.append(report)
        own = path / BAG_CALIBRATION_FILE if path.is_dir() else None
        if own is not None and own.is_file():
            diff = calibration_differences(motors, load_calibration(own))
            if diff:
                text = (f'bag {path}: its {BAG_CALIBRATION_FILE} differs from '
                        f'{config.calibration_file}: {"; ".join(diff)}')
                if config.on_calibration_mismatch is MismatchAction.ERROR:
                    raise DatasetError(text + ' (convert it with its own calibration, or '
                                       'pass --on-calibration-mismatch skip)')
                report['skipped'] = text
                continue
            report['calibration'] = f'{BAG_CALIBRATION_FILE} matches'
        streams = read_streams(path, config)
        if streams.robot is not None:
            robots.setdefault(streams.robot, path)
            if len(robots) > 1:
                first = next(p for r, p in robots.items() if r != streams.robot)
                raise DatasetError(_robot_difference(first, path, robots))
        else:
            report.setdefault('notes', []).append('no robot_description: robot not checked')
        plan, notes = plan_bag(streams, config, calibration)
        plans.append(plan)
        report.update({
            'clock': streams.clock_note,
            'cameras': {c.name: {'topic': c.topic, 'images': len(c.stamps), 'shape': c.shape}
                        for c in streams.cameras.values()},
            'joint_states': len(streams.js_stamp),
            'source_episodes': [asdict(e) for e in plan.source_episodes],
            'replay': plan.replay,
            'out_of_calibrated_range': out_of_range(streams, calibration),
        })
        report.setdefault('notes', []).extend(streams.notes + notes)
    t0 = timings.add('read_and_plan', t0)

    shapes = _image_shapes(plans, config)
    total = sum(len(ep.times) for p in plans for ep in p.episodes)
    if total == 0:
        reasons = Counter(r for p in plans for s in p.skipped for r in s['reasons'])
        raise DatasetError(f'no frame to write (segments={config.segments.value}); skipped '
                           f'frames by reason: {dict(reasons) or "none"}')
    features = dataset_features(config, shapes)
    streaming = config.video and config.streaming_encoding
    write_notes = []
    _write(plans, config, features, timings, streaming)
    if streaming:
        dropped = dropped_video_frames(config)
        if dropped:
            # The streaming encoder drops a frame when it falls 0.1 s behind; never keep that.
            write_notes.append(f'streaming encoder dropped frames ({"; ".join(dropped)}): '
                               'rewritten with PNG staging')
            shutil.rmtree(config.root)
            timings.seconds.clear()
            _write(plans, config, features, timings, streaming=False)
            streaming = False
    summary = _summary(config, plans, bag_reports, features, timings)
    summary['dataset']['video_writing'] = ('streaming' if streaming else 'staged') \
        if config.video else None
    summary['write_notes'] = write_notes
    config.summary_path.parent.mkdir(parents=True, exist_ok=True)
    config.summary_path.write_text(json.dumps(summary, indent=2) + '\n')
    return ConversionResult(summary, config.root, config.summary_path, total,
                            sum(len(p.episodes) for p in plans))


# ---------------------------------------------------------------------------------------------
# Checks across bags
# ---------------------------------------------------------------------------------------------


def calibration_differences(a: dict[str, MotorCalibration],
                            b: dict[str, MotorCalibration]) -> list[str]:
    """``joint.field: a != b`` for every differing calibration value."""
    out = []
    for joint in JOINT_NAMES:
        for name, value in asdict(a[joint]).items():
            other = getattr(b[joint], name)
            if value != other:
                out.append(f'{joint}.{name}: {value} != {other}')
    return out


def out_of_range(streams: BagStreams, calibration: ArmCalibration) -> dict[str, float]:
    """Share of joint-state samples outside the calibrated range, per joint (where > 0)."""
    ticks = calibration.radians_to_ticks(streams.js_pos)  # broadcasts over (N, 6)
    low = ticks < calibration.range_min - RANGE_MARGIN_TICKS
    high = ticks > calibration.range_max + RANGE_MARGIN_TICKS
    share = (low | high).mean(axis=0)
    return {JOINT_NAMES[i]: round(float(s), 4) for i, s in enumerate(share) if s > 0}


def _robot_difference(first: Path, path: Path, robots: dict[tuple, Path]) -> str:
    a, b = (r for r in robots)
    ja, jb = dict((j[0], j[1:]) for j in a[1]), dict((j[0], j[1:]) for j in b[1])
    diff = sorted(n for n in set(ja) | set(jb) if ja.get(n) != jb.get(n))
    return (f'bags {first} and {path} come from different robots: robot_description differs '
            f'(robot {a[0]!r} vs {b[0]!r}; joints that differ: {diff[:8]}); convert them '
            'into separate datasets')


def _image_shapes(plans: list[BagPlan], config: ConversionConfig) -> dict[str, tuple[int, int]]:
    shapes: dict[str, tuple[int, int]] = {}
    for plan in plans:
        for name, cam in plan.streams.cameras.items():
            shape = config.image_size or cam.shape
            if name in shapes and shapes[name] != shape:
                raise DatasetError(f'bag {plan.streams.path}: camera {name} images are {shape}, '
                                   f'an earlier bag\'s {shapes[name]}; pass --image-size HxW')
            shapes[name] = shape
    return shapes


# ---------------------------------------------------------------------------------------------
# Summary
# ---------------------------------------------------------------------------------------------


def _summary(config: ConversionConfig, plans: list[BagPlan], bags: list[dict], features: dict,
             timings: Timings) -> dict:
    episodes = []
    for plan in plans:
        for ep in plan.episodes:
            episodes.append({
                'index': len(episodes), 'bag': str(ep.bag), 'source_episode': ep.source.index,
                'success': ep.source.success, 'kind': ep.kind, 'frames': len(ep.times),
                'start_s': round(float(ep.times[0]), 6),
                'end_s': round(float(ep.times[-1] + 1.0 / config.fps), 6),
                'intervention_frames': int(np.count_nonzero(ep.intervention)),
                'tasks': sorted(set(ep.tasks))})
    frames = sum(e['frames'] for e in episodes)
    secs = dict(timings.seconds)
    images = sum(v for k, v in secs.items() if k in ('image_decode', 'lerobot_add_frame',
                                                     'lerobot_save_episode'))
    return {
        'dataset': {'repo_id': config.repo_id, 'root': str(config.root), 'fps': config.fps,
                    'frames': frames, 'episodes': len(episodes), 'robot_type': ROBOT_TYPE,
                    'video': config.video, 'vcodec': config.vcodec if config.video else None,
                    'features': {k: {'dtype': v['dtype'], 'shape': list(v['shape']),
                                     'names': v['names']} for k, v in features.items()}},
        'units': {'state_and_action': [m.value for m in config.norm_modes],
                  'calibration_file': str(config.calibration_file),
                  'use_degrees': config.use_degrees},
        'segments': config.segments.value,
        'filtered_frames': sum(p.filtered_frames for p in plans),
        'skipped_frames': sum(s['frames'] for p in plans for s in p.skipped),
        'episodes': episodes,
        'skipped_spans': [s for p in plans for s in p.skipped],
        'bags': bags,
        'timings_s': {k: round(v, 4) for k, v in sorted(secs.items())},
        'image_share_of_write': round(images / max(1e-9, sum(secs.values())), 4),
    }
