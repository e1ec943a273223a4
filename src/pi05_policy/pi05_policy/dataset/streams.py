"""Pass 1 over a bag: everything but the image payloads.

Joint states, commands, overrides, tasks, episode marks, the robot description and the
camera stamps are read once, on one clock (the header stamps), so planning needs no second
look at the bag; only the images the plan keeps are decoded later (:mod:`.frames`).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from eval_monitor.bag import BagReader
from so101_driver.eval_topics import EpisodeMark, PayloadError
from so101_driver.joints import JOINT_NAMES

from pi05_policy.dataset.config import CLOCK_OFFSET_S, ConversionConfig, DatasetError, ImageSource


@dataclass
class CameraStream:
    """One camera's messages in a bag: stamps and where each one sits in the stream."""

    name: str  # ROS camera name
    topic: str
    compressed: bool
    stamps: np.ndarray = field(default_factory=lambda: np.zeros(0))  # s, sorted
    ordinals: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    shape: tuple[int, int] | None = None  # (height, width) of the first image


@dataclass
class BagStreams:
    """What pass 1 read from one bag (times in seconds on the stamp clock)."""

    path: Path
    js_stamp: np.ndarray  # (N,) sorted
    js_pos: np.ndarray  # (N, 6) radians, JOINT_NAMES order
    events: list[tuple[float, int, str, Any]]  # (time, bag order, kind, payload) for replay
    overrides: list[tuple[float, bool]]  # (time, value), time order
    tasks: list[tuple[float, str]]
    marks: list[tuple[int, EpisodeMark]]  # (bag order, mark)
    cameras: dict[str, CameraStream]
    robot: tuple | None  # robot_description fingerprint
    clock_note: str
    notes: list[str]  # what was noticed and worked around


def _stamp(msg: Any, fallback: float) -> float:
    stamp = msg.header.stamp
    value = stamp.sec + stamp.nanosec / 1e9
    return value if value > 0 else fallback


def robot_fingerprint(urdf: str) -> tuple:
    """Joints of a URDF (name, type, limits): what makes two robots the same for a dataset."""
    root = ET.fromstring(urdf)
    joints = []
    for joint in root.iter('joint'):
        limit = joint.find('limit')
        lo = hi = None
        if limit is not None:
            lo = round(float(limit.get('lower', 'nan')), 4)
            hi = round(float(limit.get('upper', 'nan')), 4)
        joints.append((joint.get('name'), joint.get('type'), lo, hi))
    return (root.get('name'), tuple(sorted(joints, key=lambda j: str(j[0]))))


def _camera_streams(reader: BagReader, config: ConversionConfig) -> dict[str, CameraStream]:
    topics = reader.topics()
    cameras = {}
    for name in config.cameras:
        raw = config.topic(f'cameras/{name}/image_raw')
        compressed = raw + '/compressed'
        have_raw, have_compressed = raw in topics, compressed in topics
        if config.image_source is ImageSource.RAW:
            use = raw if have_raw else None
        elif config.image_source is ImageSource.COMPRESSED:
            use = compressed if have_compressed else None
        else:
            use = raw if have_raw else compressed if have_compressed else None
        if use is None:
            wanted = {ImageSource.RAW: [raw], ImageSource.COMPRESSED: [compressed]}.get(
                config.image_source, [raw, compressed])
            present = sorted(t for t in topics if '/cameras/' in t) or 'none'
            raise DatasetError(f'bag {reader.path}: camera {name!r} has no topic {wanted} '
                               f'(camera topics in the bag: {present}); map the cameras '
                               'with --cameras name[:key] or choose --image-source')
        cameras[name] = CameraStream(name, use, use == compressed)
    return cameras


def read_streams(path: Path, config: ConversionConfig) -> BagStreams:
    """Pass 1 over one bag: joint states, commands, marks, task, image stamps."""
    from so101_driver.images import compressed_to_rgb
    from so101_driver.ros_io import trajectory_from_msg
    from so101_driver.arm.trajectory import CommandSource, TrajectoryRejected

    try:
        reader = BagReader(path)
    except FileNotFoundError as exc:
        raise DatasetError(f'bag {path}: {exc}') from exc
    cameras = _camera_streams(reader, config)
    by_topic = {
        config.topic('joint_states'): 'joint_states',
        config.topic('joint_trajectory'): CommandSource.POLICY,
        config.topic('teleop/joint_trajectory'): CommandSource.TELEOP,
        config.topic('teleop/override'): 'override',
        config.topic('eval/episode'): 'episode',
        config.topic('policy/task'): 'task',
        config.topic('robot_description'): 'robot',
    }
    camera_of = {c.topic: c for c in cameras.values()}
    notes: list[str] = []
    js_stamp, js_log, js_pos = [], [], []
    raw_events: list[tuple[float, int, str, Any]] = []  # times are log times here
    marks: list[tuple[int, EpisodeMark]] = []
    image_stamps: dict[str, list[float]] = defaultdict(list)
    descriptions: set[str] = set()
    bad_joint_names = None
    order = 0
    for topic, _, log_ns, msg in reader.messages(topics=[*by_topic, *camera_of]):
        order += 1
        log = log_ns / 1e9
        camera = camera_of.get(topic)
        if camera is not None:
            image_stamps[camera.name].append(_stamp(msg, log))
            if camera.shape is None:
                if camera.compressed:
                    try:
                        camera.shape = compressed_to_rgb(msg).shape[:2]
                    except ValueError as exc:
                        raise DatasetError(f'bag {path}: {topic}: {exc}') from exc
                else:
                    camera.shape = (int(msg.height), int(msg.width))
            elif not camera.compressed and (msg.height, msg.width) != camera.shape \
                    and config.image_size is None:
                raise DatasetError(
                    f'bag {path}: {topic} changes image size from {camera.shape} to '
                    f'{(msg.height, msg.width)} at {log:.3f} s; pass --image-size HxW to '
                    'resize every image')
            continue
        kind = by_topic[topic]
        if kind == 'joint_states':
            names = list(msg.name)
            if sorted(names) != sorted(JOINT_NAMES):
                bad_joint_names = bad_joint_names or names
                continue
            if len(msg.position) != len(names):
                notes.append(f'joint_states at {log:.3f} s has {len(msg.position)} positions '
                             f'for {len(names)} names: skipped')
                continue
            index = [names.index(j) for j in JOINT_NAMES]
            js_stamp.append(_stamp(msg, log))
            js_log.append(log)
            js_pos.append(np.asarray(msg.position, dtype=float)[index])
        elif kind in (CommandSource.POLICY, CommandSource.TELEOP):
            try:
                raw_events.append((log, order, 'trajectory', (kind, trajectory_from_msg(msg))))
            except TrajectoryRejected as exc:
                notes.append(f'{topic} at {log:.3f} s unusable ({exc}): skipped, as the arm '
                             'rejects it')
        elif kind == 'override':
            raw_events.append((log, order, 'override', bool(msg.data)))
        elif kind == 'task':
            raw_events.append((log, order, 'task', str(msg.data)))
        elif kind == 'episode':
            try:
                marks.append((order, EpisodeMark.from_json(msg.data)))
            except PayloadError as exc:
                notes.append(f'eval/episode at {log:.3f} s ignored: {exc}')
        elif kind == 'robot':
            descriptions.add(str(msg.data))
    notes.extend(f'bag reader: {p}' for p in reader.problems)
    if bad_joint_names is not None:
        raise DatasetError(
            f'bag {path}: {config.topic("joint_states")} names joints {bad_joint_names}, '
            f'expected the SO-101 joints {list(JOINT_NAMES)}: a bag of another robot?')
    if not js_stamp:
        raise DatasetError(f'bag {path}: no usable {config.topic("joint_states")} messages '
                           f'(topics in the bag: {sorted(reader.topics())})')
    if not any(e[2] == 'trajectory' for e in raw_events):
        raise DatasetError(
            f'bag {path}: neither {config.topic("joint_trajectory")} nor '
            f'{config.topic("teleop/joint_trajectory")} was recorded; the action (the '
            'commanded target) cannot be reconstructed without them')
    for name, camera in cameras.items():
        if not image_stamps[name]:
            raise DatasetError(f'bag {path}: no usable messages on {camera.topic}')
    robot = None
    if len(descriptions) > 1:
        fingerprints = {robot_fingerprint(d) for d in descriptions}
        if len(fingerprints) > 1:
            raise DatasetError(f'bag {path}: robot_description changes within the bag')
    if descriptions:
        try:
            robot = robot_fingerprint(next(iter(descriptions)))
        except ET.ParseError as exc:
            raise DatasetError(f'bag {path}: robot_description is not valid URDF ({exc})') \
                from exc

    # One clock: stamps. Log times map onto it when the recorder ran on another clock.
    js_stamp_a = np.asarray(js_stamp)
    js_log_a = np.asarray(js_log)
    offsets = js_log_a - js_stamp_a
    median = float(np.median(offsets))
    if abs(median) > CLOCK_OFFSET_S:
        by_log = np.argsort(js_log_a, kind='stable')
        log_sorted, off_sorted = js_log_a[by_log], offsets[by_log]

        def to_stamp_clock(t: float) -> float:
            return t - float(np.interp(t, log_sorted, off_sorted))

        clock_note = (f'log times differ from header stamps by {median:+.3f} s (median): '
                      'override, task and trajectory receipt times mapped onto the stamps')
    else:
        def to_stamp_clock(t: float) -> float:
            return t

        clock_note = 'log times and header stamps on one clock'
    events = sorted(((to_stamp_clock(t), o, k, p) for t, o, k, p in raw_events),
                    key=lambda e: (e[0], e[1]))
    js_order = np.argsort(js_stamp_a, kind='stable')
    for name, camera in cameras.items():
        stamps = np.asarray(image_stamps[name])
        sort = np.argsort(stamps, kind='stable')
        camera.stamps, camera.ordinals = stamps[sort], sort.astype(np.int64)
    return BagStreams(
        path=path, js_stamp=js_stamp_a[js_order], js_pos=np.asarray(js_pos)[js_order],
        events=events,
        overrides=[(t, p) for t, _, k, p in events if k == 'override'],
        tasks=[(t, p) for t, _, k, p in events if k == 'task'],
        marks=marks, cameras=cameras, robot=robot, clock_note=clock_note, notes=notes)
