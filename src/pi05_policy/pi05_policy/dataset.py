"""Recorded bags -> a LeRobot dataset (``so101-dataset BAG... --root DIR``). No rclpy here.

Each bag (rosbag2 MCAP, read with :class:`eval_monitor.bag.BagReader`) becomes LeRobot
episodes written through LeRobot's own API (``LeRobotDataset.create``, ``add_frame``,
``save_episode``, ``finalize``), so the result is the current lerobot 0.6.1 on-disk format
and loads offline with ``LeRobotDataset(repo_id, root=...)``.

Frames. Episodes come from the ``eval/episode`` marks (START..END; one episode per bag when
there are none). Within an episode, frame ``k`` is at ``start + k / fps`` on the clock of the
bag's header stamps. Every stream is sampled causally: the frame holds the newest message
stamped at or before the frame time and at or after the episode start, i.e. what the policy
node would have had at that moment. A frame whose newest joint state or camera image is
older than its tolerance (a stalled camera, a gap in ``joint_states``) is never filled in:
it is skipped, the span is listed in the summary, and the episode is split there, because a
LeRobot episode's timestamps are ``frame_index / fps`` and a hole would shift every later
frame. Frames before each stream has delivered within the episode (the first frame or two
after a START mark) are skipped the same way ("lead-in").

Features (names as LeRobot's SO-101 follower writes them):

* ``observation.state`` (6 float32, ``<joint>.pos``): ``joint_states`` positions converted
  from radians to LeRobot units by ``so101_driver.feetech.calibration`` with the same calibration
  file and ``use_degrees`` as the policy node (``pi05_policy.runtime``), so training and
  deployment see the same numbers;
* ``action`` (same units and names): the commanded target at the frame time. It is
  reconstructed by replaying every ``joint_trajectory`` (policy) and
  ``teleop/joint_trajectory`` (operator) message, the ``teleop/override`` edges and the
  simulator's resets through the arm's own ``ArmController`` (splice at receipt, linear
  interpolation, hold after the last point, override arbitration, rejection rules; the
  joint limits and ``max_jump`` of the arm node) and reading the plan's setpoint at the
  frame time. The setpoint, not the measured position of the next frame, is what a policy
  outputs and what the arm was told to do, during operator control too, which makes
  intervention frames teach the correction the operator commanded. The per-tick clamp to
  ``present +/- max_relative_target`` is a safety limit of the arm, not part of the
  command, and is not applied. Frames before the first trajectory of a bag (whose plan was
  set before the recording began and is unknown) are skipped ("no command yet");
* ``observation.images.<key>``: the camera images (``cameras/<name>/image_raw``, or
  ``.../compressed`` when there is no raw topic or when asked), HxWx3 RGB, mapped from ROS
  camera names to keys as the policy node's ``cameras`` parameter does (``name`` or
  ``name:key``). Video (LeRobot's PyAV encoder, libsvtav1 by default) or, with ``--no-video``,
  PNG images in the parquet files. Video frames go straight to LeRobot's streaming encoder
  threads (several times faster than staging each frame as PNG); that encoder drops a frame
  when it falls 0.1 s behind, so every episode's video length is checked against its rows
  afterwards and, on a mismatch, the dataset is rewritten with PNG staging (which cannot
  drop);
* ``intervention`` (bool): ``teleop/override`` at the frame time, true for frame times in
  ``[rise, fall)``. It is deliberately not under ``observation.``: LeRobot would make every
  ``observation.*`` feature a policy input, which the policy node cannot provide;
* ``bag_time_ns`` (int64): the frame time in nanoseconds on the bag's stamp clock, to trace
  any frame back to the recording (an integer: LeRobot hands float64 columns to torch as
  float32, too coarse for wall-clock stamps);
* ``task``: ``policy/task`` at the frame time (the first one for frames before it: the
  topic is latched), or ``--task``.

Times: ``joint_states``, images and trajectory starts use their header stamps (zero: the
log time), ``eval/episode`` the stamp in its payload, and the unstamped ``teleop/override``,
``policy/task`` and the trajectories' receipt use the log time, as offline evaluation does.
When the recorder's clock differs from the stamps (sim time vs wall clock, > 1 s), log times
are mapped onto the stamp clock through the (log time, stamp) pairs of ``joint_states``.

Bad input: a missing required topic, joint names that are not the SO-101's, bags of
different robots (``robot_description`` joints and limits differ), a ``calibration.json``
in a bag folder that differs from the calibration given (error, or skip that bag), camera
images of another size than the dataset's: a :class:`DatasetError` naming the bag, topic
and field, before anything is written. What can be skipped is skipped and listed: the
summary is printed and written as JSON next to the dataset (``<root>.summary.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
import xml.etree.ElementTree as ET
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from so101_driver.feetech.calibration import (
    ArmCalibration,
    MotorCalibration,
    NormMode,
    load_calibration,
    so101_norm_modes,
)
from so101_driver.eval_topics import EpisodeEvent, EpisodeMark, PayloadError
from so101_driver.joints import JOINT_NAMES

from eval_monitor.bag import BagReader

#: LeRobot's robot type of the SO-101 follower (meta/info.json ``robot_type``).
ROBOT_TYPE = 'so101_follower'
STATE_KEY = 'observation.state'
ACTION_KEY = 'action'
IMAGE_PREFIX = 'observation.images.'
INTERVENTION_KEY = 'intervention'
TIME_KEY = 'bag_time_ns'
#: A calibration file the recorder (or the operator) put in a bag folder.
BAG_CALIBRATION_FILE = 'calibration.json'
#: Log times and header stamps further apart than this (median, s) are different clocks.
CLOCK_OFFSET_S = 1.0
#: Joint-state ticks this far outside the calibrated range count as out of range.
RANGE_MARGIN_TICKS = 50
#: Frames per camera the streaming video encoder may queue.
STREAMING_QUEUE = 60


class DatasetError(ValueError):
    """Input that cannot become a dataset; the message names the bag, topic or field."""


class Segments(str, Enum):
    """Which frames of each episode become dataset episodes."""

    WHOLE = 'whole'  # every frame
    INTERVENTIONS = 'interventions'  # only frames where the operator is in control
    AUTONOMOUS = 'autonomous'  # every frame except those


class ImageSource(str, Enum):
    """Which camera topic to read."""

    AUTO = 'auto'  # image_raw when the bag has it, else image_raw/compressed
    RAW = 'raw'  # cameras/<name>/image_raw (sensor_msgs/Image)
    COMPRESSED = 'compressed'  # cameras/<name>/image_raw/compressed (CompressedImage)


class MismatchAction(str, Enum):
    """What a bag whose own calibration.json differs from the given calibration gets."""

    ERROR = 'error'  # stop before writing anything
    SKIP = 'skip'  # leave that bag out, listed in the summary


@dataclass
class ConversionConfig:
    """Everything ``so101-dataset`` needs; validated on construction."""

    bags: list[Path]  # bag directories (or single .mcap files), converted in this order
    root: Path  # dataset folder to create (must not exist unless overwrite)
    calibration_file: Path  # LeRobot calibration JSON of the arm (same as the policy node's)
    repo_id: str = 'local/so101'  # dataset repo id (meta only; nothing is pushed)
    use_degrees: bool = True  # body joints in degrees (LeRobot 0.6.1 default) or -100..100
    cameras: dict[str, str] = field(
        default_factory=lambda: {'front': 'front', 'handeye': 'handeye'})  # ROS name -> key
    image_source: ImageSource = ImageSource.AUTO  # raw or compressed camera topics
    fps: int = 30  # dataset frame rate (the policy node's control_fps)
    task: str = ''  # task string for every frame; '' = policy/task from the bag
    segments: Segments = Segments.WHOLE  # whole episodes, interventions only, or the rest
    image_tolerance_s: float = 0.1  # max age of the newest image at a frame time (s)
    state_tolerance_s: float = 0.05  # max age of the newest joint state at a frame time (s)
    min_frames: int = 2  # shorter segments are dropped (listed)
    image_size: tuple[int, int] | None = None  # (height, width) to resize every image to
    video: bool = True  # store cameras as video (LeRobot/PyAV encoder) instead of images
    vcodec: str = 'libsvtav1'  # video codec (LeRobot's default)
    streaming_encoding: bool = True  # frames straight to the encoder (checked; see module doc)
    max_jump: float = 0.35  # replay executor: the arm node's max_jump (rad)
    limit_margin: float = 0.0  # replay executor: the arm node's limit_margin (rad)
    on_calibration_mismatch: MismatchAction = MismatchAction.ERROR  # see MismatchAction
    namespace: str = '/'  # namespace the topics were recorded under
    overwrite: bool = False  # replace an existing dataset at root (only a LeRobot dataset)
    image_writer_threads: int = 2  # LeRobot's asynchronous frame writer threads
    summary_path: Path | None = None  # '' -> <root>.summary.json

    def __post_init__(self):
        self.bags = [Path(b).expanduser() for b in self.bags]
        self.root = Path(self.root).expanduser()
        self.calibration_file = Path(self.calibration_file).expanduser()
        self.image_source = ImageSource(self.image_source)
        self.segments = Segments(self.segments)
        self.on_calibration_mismatch = MismatchAction(self.on_calibration_mismatch)
        if not self.bags:
            raise DatasetError('no bags given')
        if len(set(self.bags)) != len(self.bags):
            raise DatasetError(f'a bag is given twice: {[str(b) for b in self.bags]}')
        if not self.cameras:
            raise DatasetError('cameras is empty: map at least one ROS camera to an image key')
        keys = list(self.cameras.values())
        if len(set(keys)) != len(keys):
            raise DatasetError(f'cameras map two ROS cameras to one image key: {self.cameras}')
        if not 1 <= int(self.fps) <= 1000:
            raise DatasetError(f'fps must be an integer in 1..1000, got {self.fps}')
        self.fps = int(self.fps)
        for name in ('image_tolerance_s', 'state_tolerance_s'):
            if not 0 < getattr(self, name) <= 10:
                raise DatasetError(f'{name} must be in (0, 10] s, got {getattr(self, name)}')
        if self.min_frames < 1:
            raise DatasetError(f'min_frames must be >= 1, got {self.min_frames}')
        if self.image_size is not None:
            h, w = (int(v) for v in self.image_size)
            if h < 1 or w < 1:
                raise DatasetError(f'image_size must be positive (height, width), got '
                                   f'{self.image_size}')
            self.image_size = (h, w)
        if self.max_jump <= 0 or not 0 <= self.limit_margin < 0.5:
            raise DatasetError(f'need max_jump > 0 and 0 <= limit_margin < 0.5 rad, got '
                               f'{self.max_jump}, {self.limit_margin}')
        if self.image_writer_threads < 0:
            raise DatasetError('image_writer_threads must be >= 0')
        if self.summary_path is None:
            self.summary_path = Path(str(self.root).rstrip('/') + '.summary.json')

    @property
    def norm_modes(self) -> tuple[NormMode, ...]:
        return so101_norm_modes(self.use_degrees)

    def topic(self, relative: str) -> str:
        """Absolute bag topic of a relative name under the namespace."""
        return '/' + '/'.join(p for p in (self.namespace.strip('/'), relative) if p)


# ---------------------------------------------------------------------------------------------
# Pass 1: everything but the image payloads
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Planning: episodes, frame times, state/action/flags, validity, segments
# ---------------------------------------------------------------------------------------------


@dataclass
class SourceEpisode:
    """An episode of a bag (from its marks, or the whole bag)."""

    index: int  # within the bag
    start: float  # s, stamp clock
    end: float
    success: bool | None
    start_source: str  # who marked the start ('' when the bag has no marks)


@dataclass
class PlannedEpisode:
    """One dataset episode: a contiguous run of valid, kept frames of a source episode."""

    bag: Path
    source: SourceEpisode
    times: np.ndarray  # (F,) frame times, s
    state: np.ndarray  # (F, 6) float32, LeRobot units
    action: np.ndarray  # (F, 6) float32
    intervention: np.ndarray  # (F,) bool
    tasks: list[str]
    images: dict[str, np.ndarray]  # camera -> (F,) stream ordinals

    @property
    def kind(self) -> str:
        if self.intervention.all():
            return 'intervention'
        return 'autonomous' if not self.intervention.any() else 'mixed'


@dataclass
class BagPlan:
    streams: BagStreams
    episodes: list[PlannedEpisode]
    source_episodes: list[SourceEpisode]
    skipped: list[dict]  # spans of frames not written, with the reason
    filtered_frames: int  # valid frames left out by the segment filter
    replay: dict[str, Any]  # executor counters


def source_episodes(streams: BagStreams) -> tuple[list[SourceEpisode], list[str]]:
    """Episodes from the START/END marks (in stamp order); the whole bag when none."""
    notes = []
    first, last = float(streams.js_stamp[0]), float(streams.js_stamp[-1])
    episodes: list[SourceEpisode] = []
    open_mark: EpisodeMark | None = None
    for _, mark in sorted(streams.marks, key=lambda m: (m[1].stamp, m[0])):
        if mark.event is EpisodeEvent.START:
            if open_mark is not None:
                notes.append(f'episode started at {open_mark.stamp:.3f} s has no END mark; '
                             f'ended by the next START at {mark.stamp:.3f} s')
                episodes.append(SourceEpisode(len(episodes), open_mark.stamp, mark.stamp, None,
                                              open_mark.source))
            open_mark = mark
        elif open_mark is None:
            notes.append(f'END mark at {mark.stamp:.3f} s without a START: ignored')
        else:
            episodes.append(SourceEpisode(len(episodes), open_mark.stamp, mark.stamp,
                                          mark.success, open_mark.source))
            open_mark = None
    if open_mark is not None:
        notes.append(f'episode started at {open_mark.stamp:.3f} s has no END mark; ended at '
                     f'the last joint state ({last:.3f} s)')
        episodes.append(SourceEpisode(len(episodes), open_mark.stamp, math.nextafter(last, 1e18),
                                      None, open_mark.source))
    if not streams.marks:
        notes.append('no eval/episode marks: the whole bag is one episode')
        episodes.append(SourceEpisode(0, first, math.nextafter(last, 1e18), None, ''))
    kept = []
    for ep in episodes:
        if ep.end <= ep.start or ep.end < first or ep.start > last:
            notes.append(f'episode {ep.index} [{ep.start:.3f}, {ep.end:.3f}) s holds no joint '
                         f'states (bag: [{first:.3f}, {last:.3f}] s): skipped; marks and joint '
                         'states on different clocks?')
        else:
            kept.append(ep)
    return kept, notes


def _latest(stamps: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Index of the newest stamp <= each time (-1 where none)."""
    return np.searchsorted(stamps, times, side='right') - 1


def replay_commands(streams: BagStreams, times: np.ndarray, config: ConversionConfig,
                    calibration: ArmCalibration) -> tuple[np.ndarray, np.ndarray, dict]:
    """Commanded targets (radians) at ``times`` (sorted) through the arm's ``ArmController``.

    Returns the setpoints, a mask of the times where the plan is known (a trajectory was
    accepted or the simulator reset the arm before), and the controller's counters.
    """
    from pi05_policy.runtime import command_limits
    from so101_driver.arm.trajectory import ArmController, ExecutorConfig, Outcome

    controller = ArmController(ExecutorConfig(
        limits=command_limits(calibration, config.limit_margin), max_jump=config.max_jump))
    # Simulator resets teleport the arm and hold where it lands (sim.SimCell.reset).
    resets = [(mark.stamp, order, 'reset', None) for order, mark in streams.marks
              if mark.event is EpisodeEvent.START and mark.source == 'sim']
    events = sorted(streams.events + resets, key=lambda e: (e[0], e[1]))
    js_stamp, js_pos = streams.js_stamp, streams.js_pos
    out = np.zeros((len(times), len(JOINT_NAMES)))
    known = np.zeros(len(times), dtype=bool)
    plan_known = False
    rejections: Counter[str] = Counter()
    k = 0

    def present_at(t: float, after: bool = False) -> np.ndarray | None:
        """Newest joint state at or before ``t`` (``after``: the first one after it)."""
        if after:
            i = int(np.searchsorted(js_stamp, t, side='right'))
        else:
            i = int(np.searchsorted(js_stamp, t, side='right')) - 1
        return js_pos[i] if 0 <= i < len(js_stamp) else None

    for i, t in enumerate(times):
        while k < len(events) and events[k][0] <= t:
            when, _, kind, payload = events[k]
            k += 1
            if kind == 'trajectory':
                source, traj = payload
                outcome, text = controller.on_trajectory(source, traj, when, present_at(when))
                if outcome is Outcome.ACCEPTED:
                    plan_known = True
                elif outcome is Outcome.REJECTED:
                    rejections[text.split(':')[0]] += 1
            elif kind == 'override':
                controller.on_override(payload, when, present_at(when))
            elif kind == 'reset':
                landed = present_at(when, after=True)
                if landed is not None:
                    controller.hold_present(landed, when)
                    plan_known = True
        setpoint = controller.executor.setpoint(float(t))
        if plan_known and setpoint is not None:
            out[i] = setpoint
            known[i] = True
    counters = controller.counters
    replay = {'accepted': dict(counters.accepted), 'rejected': dict(counters.rejected),
              'ignored': dict(counters.ignored), 'override_edges': counters.override_edges,
              'rejections': dict(rejections)}
    return out, known, replay


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, stop) index ranges of the True runs of ``mask``."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def plan_bag(streams: BagStreams, config: ConversionConfig,
             calibration: ArmCalibration) -> tuple[BagPlan, list[str]]:
    """Frame times, values and validity of every episode of one bag; segments to write."""
    episodes, notes = source_episodes(streams)
    dt = 1.0 / config.fps
    per_episode = []
    for ep in episodes:
        n = max(0, math.ceil((ep.end - ep.start) * config.fps - 1e-9))
        times = ep.start + np.arange(n) * dt
        times = times[times < ep.end]
        per_episode.append((ep, times))
    all_times = np.concatenate([t for _, t in per_episode]) if per_episode else np.zeros(0)
    order = np.argsort(all_times, kind='stable')
    setpoints = np.zeros((len(all_times), len(JOINT_NAMES)))
    known = np.zeros(len(all_times), dtype=bool)
    sp, kn, replay = replay_commands(streams, all_times[order], config, calibration)
    setpoints[order], known[order] = sp, kn

    if not config.task and not streams.tasks:
        raise DatasetError(f'bag {streams.path}: no {config.topic("policy/task")} message and '
                           'no --task given; every frame needs a task string')
    task_times = np.array([t for t, _ in streams.tasks])
    task_texts = [text for _, text in streams.tasks]
    override_times = np.array([t for t, _ in streams.overrides])
    override_values = np.array([v for _, v in streams.overrides], dtype=bool)
    if not streams.overrides:
        notes.append(f'no {config.topic("teleop/override")} messages: intervention is false '
                     'on every frame')

    plans: list[PlannedEpisode] = []
    skipped: list[dict] = []
    filtered = 0
    offset = 0
    for ep, times in per_episode:
        count = len(times)
        sl = slice(offset, offset + count)
        offset += count
        reasons = [[] for _ in range(count)]
        # joint state: newest at or before the frame, inside the episode, young enough
        js_i = _latest(streams.js_stamp, times)
        _check(reasons, streams.js_stamp, js_i, times, ep.start, config.state_tolerance_s,
               'joint_states')
        image_index = {}
        for name, cam in streams.cameras.items():
            idx = _latest(cam.stamps, times)
            _check(reasons, cam.stamps, idx, times, ep.start, config.image_tolerance_s,
                   f'camera {name}')
            image_index[name] = idx
        for j in np.flatnonzero(~known[sl]):
            reasons[j].append('no command yet (the plan before the first trajectory is '
                              'unknown)')
        valid = np.array([not r for r in reasons], dtype=bool)
        intervention = np.zeros(count, dtype=bool)
        if len(override_times):
            ov_i = _latest(override_times, times)
            intervention = np.where(ov_i >= 0, override_values[np.maximum(ov_i, 0)], False)
        keep = {Segments.WHOLE: np.ones(count, dtype=bool),
                Segments.INTERVENTIONS: intervention,
                Segments.AUTONOMOUS: ~intervention}[config.segments]
        filtered += int(np.count_nonzero(valid & ~keep))
        for a, b in _runs(~valid):
            skipped.append(_span(streams.path, ep, times, a, b, dt,
                                 sorted({r for rs in reasons[a:b] for r in rs})))
        for a, b in _runs(valid & keep):
            if b - a < config.min_frames:
                skipped.append(_span(streams.path, ep, times, a, b, dt,
                                     [f'segment shorter than min_frames ({config.min_frames})']))
                continue
            ts = times[a:b]
            if config.task:
                tasks = [config.task] * (b - a)
            else:
                ti = _latest(task_times, ts)
                tasks = [task_texts[max(i, 0)] for i in ti]
            js = js_i[a:b]
            plans.append(PlannedEpisode(
                bag=streams.path, source=ep, times=ts,
                state=np.stack([calibration.radians_to_lerobot(streams.js_pos[i],
                                                               config.norm_modes)
                                for i in js]).astype(np.float32),
                action=np.stack([calibration.radians_to_lerobot(q, config.norm_modes)
                                 for q in setpoints[sl][a:b]]).astype(np.float32),
                intervention=intervention[a:b].astype(bool), tasks=tasks,
                images={name: streams.cameras[name].ordinals[idx[a:b]]
                        for name, idx in image_index.items()}))
    return BagPlan(streams, plans, episodes, skipped, filtered, replay), notes


def _check(reasons: list[list[str]], stamps: np.ndarray, index: np.ndarray, times: np.ndarray,
           start: float, tolerance: float, what: str) -> None:
    for j, (i, t) in enumerate(zip(index, times, strict=True)):
        if i < 0 or stamps[i] <= start:  # a sample stamped at the start may predate a reset
            reasons[j].append(f'lead-in: no {what} since the episode start')
        elif t - stamps[i] > tolerance + 1e-9:
            reasons[j].append(f'stale {what} (newest older than {tolerance:g} s)')


def _span(bag: Path, ep: SourceEpisode, times: np.ndarray, a: int, b: int, dt: float,
          reasons: list[str]) -> dict:
    return {'bag': str(bag), 'source_episode': ep.index, 'start_s': round(float(times[a]), 6),
            'end_s': round(float(times[b - 1] + dt), 6), 'frames': b - a, 'reasons': reasons}


# ---------------------------------------------------------------------------------------------
# Pass 2: images, and writing through LeRobot
# ---------------------------------------------------------------------------------------------


class Timings:
    """Seconds spent per stage (for the summary and the benchmark)."""

    def __init__(self) -> None:
        self.seconds: Counter[str] = Counter()

    def add(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] += now - since
        return now


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


# ---------------------------------------------------------------------------------------------
# The conversion
# ---------------------------------------------------------------------------------------------


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


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parse_cameras(entries: Iterable[str]) -> dict[str, str]:
    """The policy node's ``cameras`` syntax (``pi05_policy.runtime.parse_cameras``)."""
    from pi05_policy.runtime import parse_cameras as parse

    try:
        return parse(list(entries))
    except ValueError as err:
        raise DatasetError(str(err)) from err


def policy_params(path: Path, node: str = 'pi05_policy') -> dict[str, Any]:
    """calibration_file, cameras, use_degrees, use_compressed, control_fps of the policy node
    from its ROS parameters YAML (``config/pi05_policy.yaml``), so the dataset matches it."""
    try:
        document = yaml.safe_load(Path(path).read_text(encoding='utf-8')) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DatasetError(f'cannot read policy parameters {path}: {exc}') from exc
    values: dict[str, Any] = {}
    for key in ('/**', node, f'/{node}'):
        section = document.get(key) or {}
        values.update(section.get('ros__parameters') or {})
    out: dict[str, Any] = {}
    if values.get('calibration_file'):
        cal = Path(values['calibration_file']).expanduser()
        if not cal.is_absolute() and not cal.exists():
            cal = Path(path).parent / cal
        out['calibration_file'] = cal
    if values.get('cameras'):
        out['cameras'] = parse_cameras(values['cameras'])
    if 'use_degrees' in values:
        out['use_degrees'] = bool(values['use_degrees'])
    if values.get('use_compressed'):
        out['image_source'] = ImageSource.COMPRESSED
    if values.get('control_fps'):
        fps = float(values['control_fps'])
        if fps != round(fps):
            raise DatasetError(f'{path}: control_fps {fps} is not an integer; LeRobot datasets '
                               'need an integer fps')
        out['fps'] = int(round(fps))
    return out


def _image_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split('x'))
    except ValueError:
        raise argparse.ArgumentTypeError(f'expected HEIGHTxWIDTH, e.g. 480x640, got {text!r}') \
            from None
    return h, w


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog='so101-dataset',
        description='Convert rosbag2 MCAP bags of the SO-101 cell into a LeRobot dataset '
                    '(lerobot 0.6.1 format): episodes from eval/episode, frames at --fps, '
                    'state/action in the policy\'s units, camera images, the operator '
                    'intervention flag. A summary (skipped spans, episodes) is printed and '
                    'written to <root>.summary.json.')
    parser.add_argument('bags', nargs='+', type=Path, help='bag directories or .mcap files')
    parser.add_argument('--root', type=Path, required=True, help='dataset folder to create')
    parser.add_argument('--repo-id', default='local/so101',
                        help='dataset repo id written in the metadata (default local/so101)')
    parser.add_argument('--policy-params', type=Path,
                        help='the policy node\'s parameters YAML (config/pi05_policy.yaml): '
                             'calibration_file, cameras, use_degrees, use_compressed and '
                             'control_fps come from it; options given here win')
    parser.add_argument('--calibration', type=Path,
                        help='LeRobot calibration JSON of the arm (required without '
                             '--policy-params)')
    parser.add_argument('--use-degrees', action=argparse.BooleanOptionalAction, default=None,
                        help='body joints in degrees (default, LeRobot 0.6.1) or -100..100')
    parser.add_argument('--camera', action='append', dest='cameras', metavar='NAME[:KEY]',
                        help='ROS camera cameras/NAME/... -> observation.images.KEY, repeat '
                             'per camera (default: front and handeye)')
    parser.add_argument('--image-source', choices=[s.value for s in ImageSource],
                        help='raw, compressed, or auto (raw when recorded; default)')
    parser.add_argument('--fps', type=int, help='dataset frame rate (default 30)')
    parser.add_argument('--task', default='', help='task string for every frame (default: '
                        'policy/task from the bag)')
    parser.add_argument('--segments', choices=[s.value for s in Segments], default='whole',
                        help='whole episodes, only operator interventions, or autonomous '
                             'frames only (default whole)')
    parser.add_argument('--image-tolerance', type=float, default=0.1, metavar='S',
                        help='max age of the newest image at a frame (default 0.1 s)')
    parser.add_argument('--state-tolerance', type=float, default=0.05, metavar='S',
                        help='max age of the newest joint state at a frame (default 0.05 s)')
    parser.add_argument('--min-frames', type=int, default=2,
                        help='drop segments shorter than this (default 2)')
    parser.add_argument('--image-size', type=_image_size, metavar='HxW',
                        help='resize every image to HEIGHTxWIDTH')
    parser.add_argument('--no-video', dest='video', action='store_false',
                        help='store images (PNG in parquet) instead of video')
    parser.add_argument('--vcodec', default='libsvtav1',
                        help='video codec (default libsvtav1, LeRobot\'s)')
    parser.add_argument('--streaming-encoding', action=argparse.BooleanOptionalAction,
                        default=True,
                        help='video: feed frames straight to LeRobot\'s encoder threads '
                             '(default; several times faster) or stage them as PNG first')
    parser.add_argument('--max-jump', type=float, default=0.35,
                        help='the arm node\'s max_jump for the command replay (rad)')
    parser.add_argument('--limit-margin', type=float, default=0.0,
                        help='the arm node\'s limit_margin for the command replay (rad)')
    parser.add_argument('--on-calibration-mismatch', choices=[m.value for m in MismatchAction],
                        default='error', help='a bag whose calibration.json differs from the '
                                              'calibration: error (default) or skip the bag')
    parser.add_argument('--namespace', default='/', help='namespace of the recorded topics')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing LeRobot dataset at --root')
    parser.add_argument('--image-writer-threads', type=int, default=2,
                        help='LeRobot image writer threads (default 2)')
    parser.add_argument('--summary', type=Path, help='summary JSON path (default '
                                                     '<root>.summary.json)')
    return parser


def config_from_args(args: argparse.Namespace) -> ConversionConfig:
    values: dict[str, Any] = policy_params(args.policy_params) if args.policy_params else {}
    if args.calibration:
        values['calibration_file'] = args.calibration
    if 'calibration_file' not in values:
        raise DatasetError('no calibration: pass --calibration FILE (the arm\'s LeRobot '
                           'calibration JSON) or --policy-params config/pi05_policy.yaml')
    for option, name in (('use_degrees', 'use_degrees'), ('fps', 'fps')):
        if getattr(args, option) is not None:
            values[name] = getattr(args, option)
    if args.cameras:
        values['cameras'] = parse_cameras(args.cameras)
    if args.image_source:
        values['image_source'] = ImageSource(args.image_source)
    return ConversionConfig(
        bags=args.bags, root=args.root, repo_id=args.repo_id, task=args.task,
        segments=Segments(args.segments), image_tolerance_s=args.image_tolerance,
        state_tolerance_s=args.state_tolerance, min_frames=args.min_frames,
        image_size=args.image_size, video=args.video, vcodec=args.vcodec,
        streaming_encoding=args.streaming_encoding,
        max_jump=args.max_jump, limit_margin=args.limit_margin,
        on_calibration_mismatch=MismatchAction(args.on_calibration_mismatch),
        namespace=args.namespace, overwrite=args.overwrite,
        image_writer_threads=args.image_writer_threads, summary_path=args.summary, **values)


def print_summary(result: ConversionResult, out=None) -> None:
    out = out or sys.stdout
    s = result.summary
    d = s['dataset']
    print(f'dataset {d["repo_id"]} at {d["root"]}: {d["episodes"]} episodes, {d["frames"]} '
          f'frames at {d["fps"]} fps ({"video " + d["vcodec"] if d["video"] else "images"}), '
          f'segments={s["segments"]}', file=out)
    for bag in s['bags']:
        if 'skipped' in bag:
            print(f'skipped bag: {bag["skipped"]}', file=out)
            continue
        cams = ', '.join(f'{n} {c["topic"]} ({c["images"]} images)'
                         for n, c in bag['cameras'].items())
        print(f'bag {bag["path"]}: {len(bag["source_episodes"])} episodes, '
              f'{bag["joint_states"]} joint states, {cams}; {bag["clock"]}', file=out)
        for note in bag.get('notes', []):
            print(f'  note: {note}', file=out)
        if bag['replay'].get('rejected'):
            print(f'  replay rejected trajectories: {bag["replay"]["rejected"]}', file=out)
        if bag['out_of_calibrated_range']:
            print(f'  joint states outside the calibrated range (share): '
                  f'{bag["out_of_calibrated_range"]} - is this the arm\'s calibration?',
                  file=out)
    for e in s['episodes']:
        print(f'episode {e["index"]}: {e["frames"]} frames [{e["start_s"]:.3f}, '
              f'{e["end_s"]:.3f}) s, {e["kind"]}, {e["intervention_frames"]} intervention '
              f'frames (bag episode {e["source_episode"]}, success {e["success"]})', file=out)
    for span in s['skipped_spans']:
        print(f'skipped {span["frames"]} frames [{span["start_s"]:.3f}, {span["end_s"]:.3f}) s '
              f'of bag episode {span["source_episode"]}: {"; ".join(span["reasons"])}',
              file=out)
    if s['filtered_frames']:
        print(f'{s["filtered_frames"]} valid frames left out by --segments {s["segments"]}',
              file=out)
    print(f'summary: {result.summary_path}', file=out)


def main(argv: Sequence[str] | None = None) -> int:
    """``so101-dataset``: 0 when the dataset was written, 2 for unusable input or options."""
    os.environ.setdefault('HF_HUB_OFFLINE', '1')  # nothing here needs the Hub
    args = build_parser().parse_args(argv)
    try:
        config = config_from_args(args)
        result = convert(config)
    except (DatasetError, ValueError, FileNotFoundError) as exc:
        print(f'so101-dataset: error: {exc}', file=sys.stderr)
        return 2
    print_summary(result)
    return 0


if __name__ == '__main__':
    sys.exit(main())
