"""Fuzz: every subscription of every node survives any message of its type (issue 12 item 7).

A seeded adversarial set per message type the suite subscribes to (JointTrajectory,
JointState, Image, CompressedImage, the JSON ``String`` payloads, Bool, DiagnosticArray: empty,
ragged, NaN/inf/1e308, 10^5 entries, unknown and repeated names, extreme stamps and times,
images whose encoding, size, step or data lie, payloads that are not JSON or lack fields, plus
a random mix drawn from a numpy Generator) is published at each node, started in-process with
the parameters its own tests use, over real DDS. Messages go in batches the subscription's
history holds, and each batch is waited on until the node's callbacks have taken it (the
test wraps the node's subscription callbacks to count them), so nothing is lost unnoticed
on the reliable topics and every message is known to have been processed.

Then, per node: its spin thread is alive and it still publishes its periodic output and
answers (a service, a fresh valid message); the arm (on the bus emulator) and the sim did
not move; every trajectory got an answer from a rule (accepted + rejected + ignored ==
delivered: no exception stood in for a rule) and the counters that say so rose.

The policy's test is ``tests/pi05_policy/test_fuzz_policy.py`` (it needs that folder's
session checkpoints); it uses the generators here.
"""

from __future__ import annotations

import functools
import json
import math
import threading
import time
from collections import Counter

import cv2
import numpy as np
import pytest
from builtin_interfaces.msg import Duration, Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from rclpy.node import Node
from rclpy.parameter import Parameter
from sensor_msgs.msg import CompressedImage, Image, JointState
from std_msgs.msg import Bool, String
from trajectory_msgs.msg import JointTrajectory, JointTrajectoryPoint

from so101_driver import qos
from so101_driver.eval_topics import EpisodeEvent, EpisodeMark, SimTruth
from so101_driver.joints import JOINT_NAMES
from so101_driver.ros_io import duration_msg, trajectory_msg
from tests.helpers import wait_for

pytestmark = pytest.mark.slow  # ~10-20 s per node on a loaded 2-core machine

SEED = 20240612
INT32_MIN, INT32_MAX, UINT32_MAX = -2**31, 2**31 - 1, 2**32 - 1
HUGE = 100_000  # "huge array" length
NON_FINITE = (math.nan, math.inf, -math.inf)
SPECIAL = (*NON_FINITE, 1e308, -1e308)
#: The arm and the sim must not move more than this (rad) while the messages arrive
#: (the emulator reports its ticks exactly; the sim's joints settle under gravity).
STILL_TOL = 0.01
#: Reasons the fixed trajectory set must have been rejected for, each at least once.
EXPECTED_REJECTIONS = {'empty', 'unknown_joint', 'missing_joint', 'duplicate_joint',
                       'bad_shape', 'non_finite', 'time_not_increasing', 'out_of_limits',
                       'jump_too_large', 'all_points_in_past'}


# =============================================================================================
# Adversarial messages, per type. Each generator returns [(label, message)], the label saying
# what is wrong, so a failure names the message that caused it.
# =============================================================================================

def _time(stamp) -> Time:
    sec, nanosec = stamp
    return Time(sec=sec, nanosec=nanosec)


def _duration(t) -> Duration:
    """Seconds (float) or an explicit (sec, nanosec) pair, which may be out of the normal."""
    if isinstance(t, tuple):
        return Duration(sec=t[0], nanosec=t[1])
    return duration_msg(t)


def trajectory(names, rows, tfs=None, stamp=(0, 0), velocities=None) -> JointTrajectory:
    """A JointTrajectory exactly as given: no check that rows fit the names."""
    msg = JointTrajectory()
    msg.header.stamp = _time(stamp)
    msg.joint_names = list(names)
    rows = list(rows)
    tfs = [0.1 * (k + 1) for k in range(len(rows))] if tfs is None else list(tfs)
    points = []
    for k, (row, t) in enumerate(zip(rows, tfs, strict=True)):
        point = JointTrajectoryPoint(positions=[float(v) for v in row],
                                     time_from_start=_duration(t))
        if velocities is not None:
            point.velocities = [float(v) for v in velocities[k]]
        points.append(point)
    msg.points = points
    return msg


def _with(row, index, value) -> np.ndarray:
    row = np.array(row, dtype=float)
    row[index] = value
    return row


def fixed_trajectories(hold, upper) -> list[tuple[str, JointTrajectory]]:
    """Every rule broken once, and the edge cases of time and stamps.

    ``hold`` is the node's present setpoint: the few messages here that are valid (far-future
    stamp, before-1970 stamp, 68-year time_from_start, garbage velocities) only ever command
    it, so whatever is accepted keeps the arm where it is.
    """
    names = list(JOINT_NAMES)
    h = np.asarray(hold, dtype=float)
    out = [
        ('an empty message', JointTrajectory()),
        ('joint names, no points', trajectory(names, [])),
        ('points, no joint names', trajectory([], [h, h])),
        ('a point with 5 positions', trajectory(names, [h, h[:5]])),
        ('a point with 7 positions', trajectory(names, [np.r_[h, 0.0]])),
        ('points without positions', trajectory(names, [[], []])),
    ]
    for value in SPECIAL:
        for j in (0, 5):
            out.append((f'{value} for {names[j]}', trajectory(names, [h, _with(h, j, value)])))
    out += [
        ('NaN everywhere', trajectory(names, [np.full(6, math.nan)])),
        ('an unknown joint name', trajectory(['elbow', *names[1:]], [h])),
        ('a 7th, unknown joint', trajectory([*names, 'tail'], [np.r_[h, 0.0]])),
        ('5 of the 6 joints', trajectory(names[:5], [h[:5]])),
        ('a joint named twice', trajectory([*names[:5], names[0]], [h])),
        ('every joint named twice', trajectory(names * 2, [np.r_[h, h]])),
        ('empty joint names', trajectory([''] * 6, [h])),
        ('a 100 000-character joint name', trajectory(['x' * HUGE, *names[1:]], [h])),
        ('unicode joint names', trajectory([f'épaule_{n}_✓' for n in names], [h])),
        ('negative time_from_start', trajectory(names, [h], tfs=[(-1, 0)])),
        ('the most negative time_from_start', trajectory(names, [h], tfs=[(INT32_MIN, 0)])),
        ('time_from_start decreasing', trajectory(names, [h, h], tfs=[0.5, 0.2])),
        ('time_from_start repeated', trajectory(names, [h, h], tfs=[0.3, 0.3])),
        ('nanosec 2^32-1 (4.29 s) before 1 s', trajectory(names, [h, h],
                                                          tfs=[(0, UINT32_MAX), (1, 0)])),
        ('beyond the upper limits', trajectory(names, [h, np.asarray(upper) + 0.5])),
        ('first point 1 rad from the present', trajectory(names, [_with(h, 0, h[0] + 1.0)])),
        ('first point 3 rad from the present', trajectory(names, [_with(h, 2, h[2] - 3.0)])),
        ('stamped 1 s after 1970', trajectory(names, [h, h], stamp=(1, 0))),
        ('stamped 1 ns after 1970', trajectory(names, [h], stamp=(0, 1))),
        # valid, and they command only the hold position: accepted or ignored, never a move
        ('stamped in 2038', trajectory(names, [h], stamp=(INT32_MAX, 999_999_999))),
        ('stamped before 1970 (on receipt)', trajectory(names, [h], stamp=(INT32_MIN, 0))),
        ('time_from_start of 68 years', trajectory(names, [h], tfs=[(INT32_MAX, 999_999_999)])),
        ('NaN and ragged velocities', trajectory(names, [h, h],
                                                 velocities=[[math.nan] * 6, [1.0] * 3])),
    ]
    return out


@functools.cache
def _huge_trajectories(hold: tuple[float, ...]) -> tuple[tuple[str, JointTrajectory], ...]:
    h = np.asarray(hold)
    junk = [f'j{i}' for i in range(HUGE)]
    return (
        ('100 000 points, all at t=0', trajectory(JOINT_NAMES, [h] * HUGE, tfs=[0.0] * HUGE)),
        ('100 000 joint names, 100 000 empty points',
         trajectory(junk, [[]] * HUGE, tfs=[0.0] * HUGE)),
        ('100 000 joint names, one point of 100 000', trajectory(junk, [np.zeros(HUGE)])),
    )


def huge_trajectories(hold) -> list[tuple[str, JointTrajectory]]:
    """Three messages of 10^5 points or names (each ~1 s to build and to take)."""
    return list(_huge_trajectories(tuple(float(v) for v in hold)))


def random_trajectories(rng: np.random.Generator, hold, upper,
                        count: int) -> list[tuple[str, JointTrajectory]]:
    """A seeded random mix: names in any order or broken, any number of points, values from
    plausible to absurd, random stamps and times; each carries at least one defect a rule
    must refuse (so none of them may move anything)."""
    out = []
    pool = [*JOINT_NAMES, '', 'elbow', 'wrist', 'Gripper', 'shoulder_pan ', 'x' * 300]
    for i in range(count):
        names = [str(n) for n in rng.permutation(JOINT_NAMES)]
        points = int(rng.integers(0, 12))
        rows = []
        for _ in range(points):
            row = [hold[JOINT_NAMES.index(n)] for n in names] + rng.normal(0, 0.05, 6)
            rows.append(row)
        tfs = sorted(rng.uniform(0.01, 3.0, points).tolist())
        stamp = (0, 0)
        if rng.random() < 0.3:
            stamp = (int(rng.integers(INT32_MIN, INT32_MAX)), int(rng.integers(0, UINT32_MAX)))
        if rng.random() < 0.3 and points:  # absurd values somewhere
            k, j = rng.integers(0, points), rng.integers(0, 6)
            rows[k][j] = rng.choice([*SPECIAL, 1e9, -1e9, 3.2, -3.2])
        defect = rng.choice(['value', 'limit', 'jump', 'time', 'name', 'duplicate', 'ragged',
                             'missing', 'empty'])
        if points == 0:
            defect = 'empty'
        if defect == 'value':
            rows[rng.integers(0, points)][rng.integers(0, 6)] = rng.choice(NON_FINITE)
        elif defect == 'limit':
            j = int(rng.integers(0, 6))
            rows[rng.integers(0, points)][j] = upper[JOINT_NAMES.index(names[j])] + \
                rng.uniform(0.1, 1e6)
        elif defect == 'jump':
            rows[0] = rows[0] + rng.choice([-1, 1]) * rng.uniform(0.5, 2.0, 6)
        elif defect == 'time':
            tfs = [(-int(rng.integers(1, 100)), 0)] + tfs[1:] if points == 1 else \
                [tfs[1], tfs[0], *tfs[2:]] if tfs[0] != tfs[1] else [tfs[0]] * points
        elif defect == 'name':
            names[int(rng.integers(0, 6))] = str(rng.choice(pool[6:]))
        elif defect == 'duplicate':
            names[int(rng.integers(1, 6))] = names[0]
        elif defect == 'ragged':
            k = int(rng.integers(0, points))
            rows[k] = rows[k][:int(rng.integers(0, 6))] if rng.random() < 0.5 else \
                np.r_[rows[k], rng.normal(size=int(rng.integers(1, 4)))]
        elif defect == 'missing':
            drop = int(rng.integers(0, 6))
            names = names[:drop] + names[drop + 1:]
            rows = [np.delete(np.asarray(r), drop) for r in rows]
        elif defect == 'empty':
            rows, tfs = [], []
        out.append((f'random trajectory {i} ({defect})',
                    trajectory(names, rows, tfs=tfs, stamp=stamp)))
    return out


def joint_state(names=(), position=(), velocity=(), effort=(), stamp=(0, 0)) -> JointState:
    msg = JointState(name=list(names), position=[float(v) for v in position],
                     velocity=[float(v) for v in velocity], effort=[float(v) for v in effort])
    msg.header.stamp = _time(stamp)
    return msg


def unusable_joint_states(position=None) -> list[tuple[str, JointState]]:
    """Joint states a consumer must not use: a joint missing, ragged, or a joint's position
    not finite or more than a turn from zero (no servo reports that)."""
    names = list(JOINT_NAMES)
    h = np.zeros(6) if position is None else np.asarray(position, dtype=float)
    out = [
        ('an empty joint state', JointState()),
        ('names, no positions', joint_state(names)),
        ('positions, no names', joint_state((), h)),
        ('5 positions for 6 names', joint_state(names, h[:5])),
        ('7 positions for 6 names', joint_state(names, np.r_[h, 0.0])),
        ('6 positions for 5 names', joint_state(names[:5], h)),
        ('unknown names', joint_state([f'joint{i}' for i in range(6)], h)),
        ('6 names, 100 000 positions', joint_state(names, np.zeros(HUGE))),
        ('100 000 unknown names and positions', joint_state([f'j{i}' for i in range(HUGE)],
                                                            np.zeros(HUGE))),
    ]
    for value in (*SPECIAL, 1e9, 7.0):
        for j in (0, 5):
            out.append((f'{value} for {names[j]}', joint_state(names, _with(h, j, value))))
    return out


def joint_states(rng: np.random.Generator, count: int) -> list[tuple[str, JointState]]:
    """Unusable states, odd but harmless ones, and a seeded random mix."""
    names = list(JOINT_NAMES)
    h = np.zeros(6)
    out = unusable_joint_states()
    out += [
        ('ragged velocity and effort', joint_state(names, h, [0.0] * 3, [0.0] * 9)),
        ('NaN velocity, inf effort', joint_state(names, h, [math.nan] * 6, [math.inf] * 6)),
        ('a joint named twice', joint_state([*names, names[0]], np.r_[h, 3.0])),
        ('the six among 100 000 names, 6 positions', joint_state(
            [*names, *(f'j{i}' for i in range(HUGE))], h)),
        ('a 100 000-character name', joint_state(['x' * HUGE], [0.0])),
        ('stamped 1 ns after 1970', joint_state(names, h, stamp=(0, 1))),
        ('stamped in 2038', joint_state(names, h, stamp=(INT32_MAX, 999_999_999))),
        ('stamped before 1970', joint_state(names, h, stamp=(INT32_MIN, UINT32_MAX))),
    ]
    pool = [*JOINT_NAMES, '', 'elbow', 'j', '✓' * 20]
    for i in range(count):
        n = int(rng.integers(0, 9))
        chosen = [str(v) for v in rng.choice(pool, n)] if rng.random() < 0.5 else \
            [str(v) for v in rng.permutation(JOINT_NAMES)][:n]
        sizes = [n if rng.random() < 0.6 else int(rng.integers(0, 9)) for _ in range(3)]
        values = [_random_values(rng, size) for size in sizes]
        out.append((f'random joint state {i}', joint_state(chosen, *values, stamp=(
            int(rng.integers(INT32_MIN, INT32_MAX)), int(rng.integers(0, UINT32_MAX)))
            if rng.random() < 0.3 else (0, 0))))
    return out


def _random_values(rng: np.random.Generator, size: int) -> np.ndarray:
    values = rng.normal(0.0, 1.0, size)
    for k in np.flatnonzero(rng.random(size) < 0.2):
        values[k] = rng.choice([*SPECIAL, 1e9, -1e-300])
    return values


def image(width, height, encoding='rgb8', step=None, data=b'', is_bigendian=0) -> Image:
    step = width * 3 if step is None else step
    return Image(width=width, height=height, encoding=encoding, step=step, data=bytes(data),
                 is_bigendian=is_bigendian)


def images(rng: np.random.Generator, count: int) -> list[tuple[str, Image]]:
    """Images whose encoding, size, step or data lie, a few odd valid ones, a random mix."""
    frame = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8).tobytes()
    out = [('an empty image', Image())]
    for encoding in ('', 'rgb16', '32FC1', '8UC3', 'yuv422', 'jpeg', 'RGB8', 'x' * 1000):
        out.append((f'encoding {encoding[:20]!r}', image(4, 4, encoding, 12, bytes(48))))
    out += [
        ('4G x 4G pixels in 3 bytes', image(UINT32_MAX, UINT32_MAX, 'rgb8', UINT32_MAX,
                                            bytes(3))),
        ('2^31 x 1 pixels in 3 bytes', image(2**31, 1, 'rgb8', UINT32_MAX, bytes(3))),
        ('1 x 4G pixels in 3 bytes', image(1, UINT32_MAX, 'rgb8', 3, bytes(3))),
        ('width 0', image(0, 4, 'rgb8', 0, b'')),
        ('height 0', image(4, 0, 'rgb8', 12, b'')),
        ('step 0', image(4, 4, 'rgb8', 0, bytes(48))),
        ('step one byte short of a row', image(4, 4, 'rgb8', 11, bytes(48))),
        ('step 2^32-1', image(4, 4, 'rgb8', UINT32_MAX, bytes(48))),
        ('data one byte short', image(4, 4, 'rgb8', 12, bytes(47))),
        ('no data', image(128, 96, 'rgb8', 384, b'')),
        ('mono8 header, rgb8 data', image(128, 96, 'mono8', 128, frame)),
        ('rgb8 header, mono8 data', image(128, 96, 'rgb8', 384, frame[:128 * 96])),
        # valid but odd: the consumer converts or resizes them
        ('2 MB of data for 2x2 pixels', image(2, 2, 'rgb8', 6, bytes(2 * 10**6))),
        ('padded rows', image(128, 96, 'rgb8', 400, bytes(400 * 96))),
        ('1x1 pixel', image(1, 1, 'rgb8', 3, b'\x01\x02\x03')),
        ('mono8', image(128, 96, 'mono8', 128, frame[:128 * 96])),
        ('bgra8', image(128, 96, 'bgra8', 512, frame + frame[:128 * 96 * 1])),
        ('is_bigendian 255', image(128, 96, 'rgb8', 384, frame, is_bigendian=255)),
        ('1280x720', image(1280, 720, 'rgb8', 3840, bytes(3840 * 720))),
    ]
    encodings = ['rgb8', 'bgr8', 'mono8', 'rgba8', 'bgra8', 'rgb16', '', 'jpeg']
    sizes = [0, 1, 2, 3, 16, 96, 128, 2**16, UINT32_MAX]
    for i in range(count):
        width, height = (int(v) for v in rng.choice(sizes, 2))
        channels = int(rng.integers(1, 5))
        step = int(rng.choice([0, width * channels, max(0, width * channels - 1),
                               int(rng.integers(0, UINT32_MAX))])) % (UINT32_MAX + 1)
        length = int(rng.integers(0, 4096))
        out.append((f'random image {i}', image(width, height, str(rng.choice(encodings)), step,
                                               rng.bytes(length))))
    return out


def compressed_images(rng: np.random.Generator, count: int) -> list[tuple[str, CompressedImage]]:
    """Garbage, empty, huge, truncated and mislabelled compressed images, and a random mix."""
    rgb = rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)
    jpeg = cv2.imencode('.jpg', rgb)[1].tobytes()
    png = cv2.imencode('.png', rgb)[1].tobytes()

    def compressed(data, fmt='rgb8; jpeg compressed bgr8'):
        return CompressedImage(format=fmt, data=bytes(data))

    broken_crc = bytearray(png)
    broken_crc[40] ^= 0xFF
    out = [
        ('an empty compressed image', CompressedImage()),
        ('a format, no data', compressed(b'')),
        ('1 KB of noise', compressed(rng.bytes(1024))),
        ('5 MB of noise', compressed(rng.bytes(5 * 10**6))),
        ('a JPEG cut in half', compressed(jpeg[:len(jpeg) // 2])),
        ('the JPEG magic only', compressed(b'\xff\xd8\xff')),
        ('the PNG magic only', compressed(b'\x89PNG\r\n\x1a\n', 'png')),
        ('a PNG with a broken chunk', compressed(broken_crc, 'png')),
        ('a grayscale PNG', compressed(cv2.imencode('.png', rgb[:, :, 0])[1], 'png')),
        ('a 16-bit PNG', compressed(cv2.imencode('.png', rgb.astype(np.uint16) * 257)[1], 'png')),
        ('an RGBA PNG', compressed(cv2.imencode('.png', np.dstack([rgb, rgb[:, :, :1]]))[1])),
        ('a 1x1 JPEG', compressed(cv2.imencode('.jpg', rgb[:1, :1])[1])),
        ('a JPEG labelled garbage', compressed(jpeg, 'garbage ✓')),
        ('a JPEG with a 4000-character format', compressed(jpeg, 'f' * 4000)),
    ]
    magics = [b'', b'\xff\xd8\xff', b'\x89PNG\r\n\x1a\n', b'BM', b'GIF89a']
    for i in range(count):
        data = magics[int(rng.integers(0, len(magics)))] + rng.bytes(int(rng.integers(0, 20000)))
        if rng.random() < 0.3:
            data = jpeg[:int(rng.integers(0, len(jpeg)))]
        out.append((f'random compressed image {i}', compressed(data, str(rng.choice(
            ['jpeg', 'png', '', 'rgb8; jpeg compressed bgr8'])))))
    return out


#: Text that is not the JSON object a payload must be.
NOT_JSON_OBJECTS = [
    '', ' ', '\n\t', '{', '}', '[', 'not json', "{'single': 'quotes'}", 'null', 'true', '42',
    '-0', '"a string"', '[]', '[1, 2, 3]', 'NaN', 'Infinity', '-Infinity', '1e999',
    '[' * HUGE, '{"a": ' * 20000 + '1' + '}' * 20000, 'x' * 10**6, '✓' * 10000,
    '\x01\x02\x7f\x1b[2J', 'a\x00b', '9' * 5000, '{"stamp": ' + '9' * 5000 + '}',
]


def _json(data) -> str:
    return json.dumps(data)  # allow_nan: NaN and Infinity as Python writes them


def episode_payloads(rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    """eval/episode: not JSON, missing fields, wrong types, NaN, out of order, random."""
    start = json.loads(EpisodeMark(EpisodeEvent.START, stamp=1.0).to_json())
    variants = [
        {}, {'event': 'start'}, {'stamp': 1.0}, {'event': 'end', 'stamp': 1.0},
        {'event': 'start', 'stamp': 1.0, 'success': True}, {'event': 'middle', 'stamp': 1.0},
        {'event': None, 'stamp': None}, {'event': 5, 'stamp': 'soon'},
        {'event': ['start'], 'stamp': 1.0}, {'event': {'a': 1}, 'stamp': 1.0},
        {'event': 'start', 'stamp': math.nan}, {'event': 'start', 'stamp': math.inf},
        {'event': 'end', 'stamp': 2.0, 'success': 'maybe'},
        {'event': 'end', 'stamp': -1e308, 'success': False},
        {'event': 'start', 'stamp': 1e308, 'episode': [1, {}], 'source': {'a': 1},
         'note': ['x']},
        {'event': 'end', 'stamp': 1e308, 'success': [], 'note': 'x' * HUGE},
        {**start, 'stamp': 10**400},
    ]
    return _payloads(rng, count, 'episode', start, variants)


def truth_payloads(rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    """sim/truth: not JSON, missing fields, NaN positions, wrong types, random."""
    good = json.loads(SimTruth(stamp=1.0, cube_position=(0.2, 0.0, 0.015), held=False,
                               lifted=False, in_bowl=False, episode=1).to_json())
    variants = [{k: v for k, v in good.items() if k != field} for field in good]
    for field, values in {
        'cube_position': [[math.nan, 0, 0], [0, math.inf, 0], [1, 2], 'abc', {'x': 1}, None,
                          [[1], [2], [3]], [1e308] * 3, ['1', '2', '3'], list(range(HUGE))],
        'stamp': [math.nan, math.inf, -math.inf, 'x', None, 1e308, -1e308, [1]],
        'held': ['false', None, [], {'a': 1}],
        'episode': [[1], {'a': 1}, 'x', 1.5, 10**400],
        'extra': ['x', [1, 2], [[1, 2]], None, {'k': [math.nan] * 10}],
        'dropped': ['yes', None],
    }.items():
        variants += [{**good, field: value} for value in values]
    return _payloads(rng, count, 'truth', good, variants)


def event_payloads(rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    """eval/events (the console shows them): odd kinds, stamps, episodes and data."""
    good = {'kind': 'grasp_success', 'stamp': 12.5, 'episode': 1, 'data': {'width_m': 0.02}}
    variants = [
        {}, {'kind': None}, {'kind': {'a': [1]}}, {'kind': ['x'] * 1000},
        {**good, 'stamp': True}, {**good, 'stamp': 'x'}, {**good, 'stamp': math.inf},
        {**good, 'stamp': math.nan}, {**good, 'stamp': 10**400}, {**good, 'episode': {'a': 1}},
        {**good, 'data': [1, 2]}, {**good, 'data': 'x'}, {**good, 'data': {'k': math.nan}},
        {**good, 'data': {'k': 10**400, 'j': 1e308, 'i': -math.inf}},
        {**good, 'data': {f'k{i}': 'v' * 100 for i in range(10000)}},
    ]
    return _payloads(rng, count, 'event', good, variants)


def task_payloads(rng: np.random.Generator, count: int) -> list[tuple[str, str]]:
    """policy/task: empty, blank, huge, control characters, random text."""
    texts = ['', ' ', '\n\t\r', 'x' * 10**6, '✓' * 10000, '\x01\x02\x7f', 'a\x00b',
             'pick ' * 20000, '{"task": "json"}']
    out = [(f'task {text[:20]!r} ({len(text)} characters)', text) for text in texts]
    out += [(f'not a JSON object: {text[:20]!r}', text) for text in NOT_JSON_OBJECTS[:12]]
    for i in range(count):
        out.append((f'random task {i}', rng.bytes(int(rng.integers(0, 300))).decode('latin-1')))
    return out


def _payloads(rng, count, what, good, variants) -> list[tuple[str, str]]:
    out = [(f'not a JSON object: {text[:30]!r} ({len(text)} characters)', text)
           for text in NOT_JSON_OBJECTS]
    out += [(f'{what} {str(v)[:80]}', _json(v)) for v in variants]
    text = _json(good)
    junk = [None, math.nan, -math.inf, 1e308, -1, '', 'x' * 100, [], [1, 2], {}, {'a': None},
            True, 10**30]
    for i in range(count):
        r = rng.random()
        if r < 0.3:  # the good payload cut or with a character removed
            k = int(rng.integers(0, len(text)))
            mutated = text[:k] if rng.random() < 0.5 else text[:k] + text[k + 1:]
        elif r < 0.8:  # fields dropped and replaced by junk
            data = dict(good)
            for key in list(data):
                if rng.random() < 0.3:
                    del data[key]
                elif rng.random() < 0.4:
                    data[key] = junk[int(rng.integers(0, len(junk)))]
            mutated = _json(data)
        else:  # noise
            mutated = rng.bytes(int(rng.integers(0, 500))).decode('latin-1')
        out.append((f'random {what} {i}: {mutated[:60]!r}', mutated))
    return out


def strings(payloads) -> list[tuple[str, String]]:
    return [(label, String(data=text)) for label, text in payloads]


def diagnostic_arrays(rng: np.random.Generator, count: int) -> list[tuple[str, DiagnosticArray]]:
    """eval/status as the console reads it: empty, odd levels, huge and repeated values."""
    def array(*statuses):
        return DiagnosticArray(status=list(statuses))

    def status(values=(), level=b'\x00', name='eval_monitor: counters', message=''):
        return DiagnosticStatus(level=level, name=name, message=message,
                                values=[KeyValue(key=k, value=v) for k, v in values])

    out = [
        ('an empty array', DiagnosticArray()),
        ('one empty status', array(DiagnosticStatus())),
        ('level 255', array(status(level=b'\xff'))),
        ('10 000 values', array(status([(f'k{i}', str(i)) for i in range(10000)]))),
        ('a 1 MB value', array(status([('episodes', 'x' * 10**6)]))),
        ('repeated and empty keys', array(status([('', ''), ('', 'x'), ('a', '1'), ('a', '')]))),
        ('1000 statuses', array(*[status([('i', str(i))]) for i in range(1000)])),
        ('unicode and control characters', array(status([('✓\x1b[2J', '\x01' * 10)],
                                                        name='✓' * 100, message='\x07'))),
    ]
    for i in range(count):
        values = [(rng.bytes(int(rng.integers(0, 20))).decode('latin-1'),
                   rng.bytes(int(rng.integers(0, 50))).decode('latin-1'))
                  for _ in range(int(rng.integers(0, 30)))]
        out.append((f'random status array {i}', array(*[status(
            values, level=bytes([int(rng.integers(0, 256))]),
            message=rng.bytes(int(rng.integers(0, 80))).decode('latin-1'))
            for _ in range(int(rng.integers(0, 3)))])))
    return out


# =============================================================================================
# Harness: count what a node's callbacks took, publish in batches, record outputs.
# =============================================================================================

class Deliveries:
    """Counts each call of a node's subscription callbacks, per resolved topic, by wrapping
    them (an exception still escapes as before)."""

    def __init__(self, node):
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self._wrapped: set[int] = set()
        self.wrap(node)

    def wrap(self, node) -> None:
        """Wrap the subscriptions not wrapped yet (the recorder subscribes as it discovers)."""
        for sub in node.subscriptions:
            if id(sub) not in self._wrapped:
                self._wrapped.add(id(sub))
                self._wrap(sub)

    def _wrap(self, sub) -> None:
        topic, original = sub.topic_name, sub.callback

        @functools.wraps(original)  # keeps the signature rclpy inspects (raw: data, info)
        def counted(*args):
            try:
                return original(*args)
            finally:
                with self._lock:
                    self._counts[topic] += 1

        sub.callback = counted

    def __getitem__(self, topic: str) -> int:
        with self._lock:
            return self._counts[topic]

    def counter(self, topic: str):
        return lambda: self[topic]


class Listener(Node):
    """Records what nodes publish: ``topics`` maps a key to (type, topic, qos)."""

    def __init__(self, context, topics: dict[str, tuple], name='fuzz_listener'):
        super().__init__(name, context=context)
        self.lock = threading.Lock()
        self.got: dict[str, list] = {key: [] for key in topics}
        for key, (msg_type, topic, profile) in topics.items():
            self.create_subscription(msg_type, topic, functools.partial(self._keep, key),
                                     profile)

    def _keep(self, key, msg):
        with self.lock:
            self.got[key].append(msg)

    def count(self, key) -> int:
        with self.lock:
            return len(self.got[key])

    def last(self, key):
        with self.lock:
            return self.got[key][-1] if self.got[key] else None

    def since(self, key, index: int) -> list:
        with self.lock:
            return list(self.got[key][index:])

    def wait_more(self, key, more: int, timeout=15.0, alive=lambda: True):
        """Wait for ``more`` messages on ``key`` beyond those there now (the node still
        publishes); returns the last."""
        start = self.count(key)
        wait_for(lambda: self.count(key) >= start + more or not alive(), timeout,
                 message=f'{more} more messages on {key}')
        assert alive(), f'the node died while waiting for {key}'
        return self.last(key)


def spinning(spinner, node) -> bool:
    """Whether ``node``'s executor thread still runs (an exception out of a callback ends
    it; tests.helpers.Spinner prints the traceback)."""
    entry = spinner._spinning.get(node)
    return entry is not None and entry[1].is_alive()


def blast(pub, messages, delivered, batch: int, alive=lambda: True, lossy=False,
          timeout=30.0) -> int:
    """Publish ``messages`` ([(label, msg)]) in batches of ``batch``; after each, wait until
    the node's callbacks took all of it (``delivered()`` counts them) and check ``alive()``.
    A BEST_EFFORT (``lossy``) subscription may lose a message: its wait gives up after a few
    seconds and goes on. Returns how many the node took."""
    wait_for(lambda: pub.get_subscription_count() > 0, 15,
             message=f'a subscriber on {pub.topic_name}')
    first = target = delivered()
    for i in range(0, len(messages), batch):
        part = messages[i:i + batch]
        labels = [label for label, _ in part]
        for _, msg in part:
            pub.publish(msg)
        target += len(part)
        try:
            wait_for(lambda: delivered() >= target or not alive(), 3.0 if lossy else timeout,
                     interval=0.002, message=f'{pub.topic_name}: the node to take {labels}')
        except AssertionError:
            if not lossy:
                raise
            target = delivered()
        assert alive(), f'{pub.topic_name}: the node died on one of {labels}'
    return delivered() - first


def flips(times: int, last: bool) -> list[tuple[str, Bool]]:
    """Bool values alternating, ending with ``last``."""
    values = [last if (times - 1 - k) % 2 == 0 else not last for k in range(times)]
    return [(f'flip {k} to {value}', Bool(data=value)) for k, value in enumerate(values)]


def toggle(pub, times: int, last: bool) -> None:
    """Publish Bool values alternating as fast as possible (no wait), ending with ``last``."""
    for _, msg in flips(times, last):
        pub.publish(msg)


def diag_values(msg: DiagnosticArray, index=0) -> dict[str, str]:
    return {kv.key: kv.value for kv in msg.status[index].values}


def answered(counters) -> int:
    """Trajectories the controller answered by a rule: accepted, rejected or ignored."""
    return (sum(counters.accepted.values()) + sum(counters.rejected.values())
            + sum(counters.ignored.values()))


def assert_still(states: list[JointState], before: np.ndarray, joints=slice(None),
                 tol=STILL_TOL, what='the arm'):
    assert states, f'no joint_states from {what} while the messages arrived'
    positions = np.array([s.position for s in states])[:, joints]
    moved = np.max(np.abs(positions - np.asarray(before)[joints]), axis=0)
    assert np.all(moved < tol), (
        f'{what} moved: max |position - before| per joint {np.round(moved, 4).tolist()} rad '
        f'(tolerance {tol})')


def fuzz_arm_interface(blaster, deliveries, controller, hold, upper, alive, rng) -> dict:
    """What the arm and the sim subscribe to: every trajectory set on joint_trajectory while
    the policy is in control, override toggled fast to teleop, every set again on
    teleop/joint_trajectory, some policy ones while ignored, override back off. Returns the
    number delivered per topic."""
    policy = blaster.publisher(JointTrajectory, 'joint_trajectory', qos.COMMAND)
    teleop = blaster.publisher(JointTrajectory, 'teleop/joint_trajectory', qos.COMMAND)
    override = blaster.publisher(Bool, 'teleop/override', qos.LATCHED)
    fixed = fixed_trajectories(hold, upper)
    mixed = random_trajectories(rng, hold, upper, 120)
    sent = Counter()
    sent['/joint_trajectory'] += blast(policy, fixed + huge_trajectories(hold) + mixed,
                                       deliveries.counter('/joint_trajectory'), 5, alive)
    toggle(override, 41, last=True)  # a burst: the latched history keeps only the last
    sent['/teleop/override'] += blast(override, flips(41, last=True),
                                      deliveries.counter('/teleop/override'), 1, alive)
    wait_for(lambda: controller.override or not alive(), 15, message='override on')
    sent['/teleop/joint_trajectory'] += blast(
        teleop, fixed + mixed, deliveries.counter('/teleop/joint_trajectory'), 5, alive)
    sent['/joint_trajectory'] += blast(policy, mixed[:30],
                                       deliveries.counter('/joint_trajectory'), 5, alive)
    toggle(override, 20, last=False)
    sent['/teleop/override'] += blast(override, flips(20, last=False),
                                      deliveries.counter('/teleop/override'), 1, alive)
    wait_for(lambda: not controller.override or not alive(), 15, message='override off')
    assert alive()
    return sent


def params(**values):
    return [Parameter(k, value=v) for k, v in values.items()]


class Blaster(Node):
    """The adversary: one publisher per (type, topic)."""

    def __init__(self, context):
        super().__init__('fuzz_blaster', context=context)
        self._pubs = {}

    def publisher(self, msg_type, topic, profile):
        key = (msg_type, topic)
        if key not in self._pubs:
            self._pubs[key] = self.create_publisher(msg_type, topic, profile)
        return self._pubs[key]


@pytest.fixture
def blaster(spinner, ros_context):
    node = spinner.add(Blaster(ros_context))
    yield node
    spinner.executor.remove_node(node)
    node.destroy_node()


# =============================================================================================
# The nodes
# =============================================================================================

@pytest.fixture
def arm_emulator(tmp_path):
    from so101_driver.arm.driver_demo import DEMO_CALIBRATION, emulator_calibration
    from so101_driver.feetech.emulator import EmulatorProcess

    emulator = EmulatorProcess()
    emulator.start()
    emulator.call('load_calibration', emulator_calibration(DEMO_CALIBRATION))
    path = tmp_path / 'calibration.json'
    path.write_text(json.dumps(DEMO_CALIBRATION))
    try:
        yield emulator, path
    finally:
        emulator.stop()


def test_arm_takes_every_trajectory_and_override_without_dying_or_moving(
        arm_emulator, ros_context, spinner, started, blaster):  # emulator stops last
    from so101_driver.arm.arm_node import ArmNode

    emulator, cal_file = arm_emulator
    arm = started(ArmNode(context=ros_context, parameter_overrides=params(
        port=emulator.port, calibration_file=str(cal_file), diagnostics_rate_hz=10.0,
        packet_timeout_ms=100.0)))
    listener = started(Listener(ros_context, {
        'state': (JointState, 'joint_states', qos.STREAM_SUB),
        'diag': (DiagnosticArray, 'diagnostics', qos.STREAM_SUB)}))
    wait_for(lambda: listener.count('state') > 5 and listener.last('diag'), 20,
             message='joint_states and diagnostics from so101_arm')
    alive = lambda: spinning(spinner, arm)  # noqa: E731

    deliveries = Deliveries(arm)
    hold = arm.controller.executor.setpoint(arm._now())
    before = np.array(listener.last('state').position)
    first_state = listener.count('state')
    answered_before = answered(arm.controller.counters)
    t0 = time.monotonic()
    sent = fuzz_arm_interface(blaster, deliveries, arm.controller, hold, arm.limits.upper,
                              alive, np.random.default_rng(SEED))
    blast_s = time.monotonic() - t0

    values = diag_values(listener.wait_more('diag', 3, alive=alive))  # still publishing
    assert alive(), 'the arm node\'s executor died'
    assert_still(listener.since('state', first_state), before)
    servos = emulator.call('state')['servos']
    ticks = [servos[i + 1]['registers']['present_position'] for i in range(6)]
    np.testing.assert_allclose(arm.calibration.ticks_to_radians(ticks), before, atol=STILL_TOL,
                               err_msg='the servos moved')
    counters = arm.controller.counters
    trajectories = sent['/joint_trajectory'] + sent['/teleop/joint_trajectory']
    assert answered(counters) - answered_before == trajectories, (
        f'{trajectories} trajectories delivered, {answered(counters) - answered_before} '
        f'answered by a rule: {counters}')
    assert counters.override_edges >= 40, counters  # the fast toggles reached it
    missing = EXPECTED_REJECTIONS - {k for k, v in counters.rejected.items() if v}
    assert not missing, f'never rejected for {missing}: {counters.rejected}'
    assert int(values['rejected_total']) > 0, values
    # it still answers and obeys: the override reaches it, a valid trajectory is followed
    override = blaster.publisher(Bool, 'teleop/override', qos.LATCHED)
    override.publish(Bool(data=True))
    wait_for(lambda: diag_values(listener.last('diag'))['override'] == 'True', 10,
             message='override True in diagnostics')
    override.publish(Bool(data=False))
    wait_for(lambda: diag_values(listener.last('diag'))['override'] == 'False', 10,
             message='override False in diagnostics')
    present = np.array(listener.last('state').position)
    target = present + np.array([0.1, 0, 0, 0, 0, 0])
    blaster.publisher(JointTrajectory, 'joint_trajectory', qos.COMMAND).publish(
        trajectory_msg([target], [0.3], None))
    wait_for(lambda: abs(listener.last('state').position[0] - target[0]) < 0.02, 10,
             message=f'shoulder_pan to reach {target[0]:.3f} after the fuzz')
    print(f'arm: {dict(sent)} trajectories in {blast_s:.1f} s; rejected '
          f'{dict(counters.rejected)}, accepted {dict(counters.accepted)}, ignored '
          f'{dict(counters.ignored)}')


def test_sim_takes_every_trajectory_and_override_without_dying_or_moving(
        ros_context, spinner, started, blaster):
    from so101_driver.sim.sim_node import SimNode

    sim = started(SimNode(context=ros_context, parameter_overrides=params(
        camera_rate_hz=0.0, real_time_factor=1.0, diagnostics_rate_hz=5.0,
        episode_mark_wait_s=0.0)))
    listener = started(Listener(ros_context, {
        'state': (JointState, 'joint_states', qos.STREAM_SUB),
        'diag': (DiagnosticArray, 'diagnostics', qos.STREAM_SUB)}))
    # settled under gravity first (the elbow sags ~0.02 rad in the first second)
    wait_for(lambda: sim.cell.time > 1.5 and listener.last('diag'), 30,
             message='1.5 s of sim time and diagnostics')
    alive = lambda: spinning(spinner, sim) and sim._loop.is_alive()  # noqa: E731

    deliveries = Deliveries(sim)
    controller = sim.cell.controller
    hold = controller.executor.setpoint(sim.cell.time)
    before = np.array(listener.last('state').position)
    first_state = listener.count('state')
    answered_before = answered(controller.counters)
    t0 = time.monotonic()
    sent = fuzz_arm_interface(blaster, deliveries, controller, hold,
                              controller.executor.config.limits.upper, alive,
                              np.random.default_rng(SEED + 1))
    blast_s = time.monotonic() - t0

    values = diag_values(listener.wait_more('diag', 3, alive=alive))
    assert alive(), 'the sim node\'s executor or worker died'
    # the gripper's jaw is not held stiff under gravity; the existing sim tests skip it too
    assert_still(listener.since('state', first_state), before, joints=slice(0, 5),
                 what='the sim arm')
    counters = controller.counters
    trajectories = sent['/joint_trajectory'] + sent['/teleop/joint_trajectory']
    assert answered(counters) - answered_before == trajectories, (
        f'{trajectories} trajectories delivered, {answered(counters) - answered_before} '
        f'answered by a rule (the rest raised: {sim.last_rejection}): {counters}')
    assert counters.override_edges >= 40, counters  # the fast toggles reached it
    missing = EXPECTED_REJECTIONS - {k for k, v in counters.rejected.items() if v}
    assert not missing, f'never rejected for {missing}: {counters.rejected}'
    assert int(values['rejected_total']) > 0 and values['rejected_messages'] == '0', values
    present = np.array(listener.last('state').position)
    target = present + np.array([0.1, 0, 0, 0, 0, 0])
    blaster.publisher(JointTrajectory, 'joint_trajectory', qos.COMMAND).publish(
        trajectory_msg([present, target], [0.0, 0.3], sim.cell.time))
    wait_for(lambda: abs(listener.last('state').position[0] - target[0]) < 0.02, 15,
             message=f'shoulder_pan to reach {target[0]:.3f} after the fuzz')
    print(f'sim: {dict(sent)} trajectories in {blast_s:.1f} s; rejected '
          f'{dict(counters.rejected)}, accepted {dict(counters.accepted)}, ignored '
          f'{dict(counters.ignored)}')


def _good_truth(stamp: float, episode: int) -> String:
    return String(data=SimTruth(stamp=stamp, cube_position=(0.22, -0.03, 0.015), held=False,
                                lifted=False, in_bowl=False, episode=episode).to_json())


def _check_chunks(chunks: list[JointTrajectory], what: str) -> None:
    for msg in chunks:
        assert list(msg.joint_names) == list(JOINT_NAMES), f'{what}: {msg.joint_names}'
        pos = np.array([p.positions for p in msg.points])
        assert pos.ndim == 2 and pos.shape[1] == 6 and np.all(np.isfinite(pos)), \
            f'{what} published a chunk of {pos.shape} positions, some not finite: {pos}'


def test_sim_expert_takes_any_joint_state_and_truth_and_keeps_commanding_sanely(
        ros_context, spinner, started, blaster):
    from so101_driver.sim.expert_node import SimExpertNode

    expert = started(SimExpertNode(context=ros_context, parameter_overrides=params(
        chunk_period_s=0.05, reaction_delay_s=0.0)))  # wall clock: no sim here
    listener = started(Listener(ros_context, {
        'chunk': (JointTrajectory, 'joint_trajectory', qos.COMMAND)}))
    alive = lambda: spinning(spinner, expert)  # noqa: E731
    deliveries = Deliveries(expert)
    rng = np.random.default_rng(SEED + 2)
    states = blaster.publisher(JointState, 'joint_states', qos.STREAM_PUB)
    truths = blaster.publisher(String, 'sim/truth', qos.STREAM_PUB)
    good_state = JointState(name=list(JOINT_NAMES), position=[0.0, -1.5, 1.4, 0.9, 0.0, 0.0])

    def good_inputs(episode):
        states.publish(good_state)
        truths.publish(_good_truth(time.time() - 0.5, episode))

    wait_for(lambda: states.get_subscription_count() and truths.get_subscription_count(), 15,
             message='the expert to subscribe')
    good_inputs(1)
    wait_for(lambda: listener.count('chunk') >= 3, 15, message='the expert commanding')
    # each unusable joint state alone, in an attempt of its own (a plan runs out): it must
    # not become the measured position, and the chunks go on (finite, from the good state)
    for k, (label, msg) in enumerate(unusable_joint_states(good_state.position)):
        wait_for(lambda: good_inputs(10 + k) or expert.expert.episode == 10 + k, 10,
                 message=f'the attempt at episode {10 + k}')
        blast(states, [(label, msg)], deliveries.counter('/joint_states'), 1, alive,
              lossy=True)
        listener.wait_more('chunk', 2, alive=alive)
        assert np.array_equal(expert._present, good_state.position), \
            f'the expert took {expert._present} from {label} as the measured position'
    took = Counter()
    messages = {'joint_states': joint_states(rng, 100),
                'sim/truth': strings(truth_payloads(rng, 100))}
    took['joint_states'] += blast(states, messages['joint_states'],
                                  deliveries.counter('/joint_states'), 4, alive, lossy=True)
    took['sim/truth'] += blast(truths, messages['sim/truth'], deliveries.counter('/sim/truth'),
                               4, alive, lossy=True)
    for topic, n in took.items():
        assert n > 0.9 * len(messages[topic]), (topic, n, len(messages[topic]))
    assert alive(), 'the expert\'s executor died'
    # a new episode's cube at an absurd place: planned, but no chunk that is not finite
    for episode, cube in ((3, [math.nan, 0.0, 0.015]), (4, [1e308, 0.0, 0.015])):
        truth = json.loads(_good_truth(0.0, episode).data)
        text = _json({**truth, 'stamp': time.time() - 0.5, 'cube_position': cube})
        blast(truths, [(f'episode {episode}, cube at {cube}', String(data=text))],
              deliveries.counter('/sim/truth'), 1, alive, lossy=True)
    wait_for(lambda: expert.expert.episode == 4, 10, message='the attempt at episode 4')
    # it still listens and still sees: a good truth of a new episode starts a new attempt,
    # a good state is the first point of the next chunks
    wait_for(lambda: good_inputs(2) or expert.expert.episode == 2, 10,
             message='a new attempt for a good sim/truth of episode 2 after the garbage '
                     f'(the expert is at episode {expert.expert.episode!r})')
    n = listener.count('chunk')
    listener.wait_more('chunk', 3, alive=alive)
    np.testing.assert_allclose(listener.last('chunk').points[0].positions, np.clip(
        good_state.position, expert.expert.kin.lower, expert.expert.kin.upper))
    _check_chunks(listener.since('chunk', 0), 'the expert')
    print(f'expert: took {dict(took)}; {listener.count("chunk") - n} chunks after the fuzz; '
          f'guard {expert.guard_values()}')


@pytest.fixture
def leader_emulator(tmp_path):
    from so101_driver.feetech.emulator import EmulatorProcess
    from tests.so101_driver.test_leader import LEADER_CALIBRATION

    emulator = EmulatorProcess(ids=(1, 2, 3, 4, 5, 6))
    emulator.start()
    emulator.call('load_calibration', {c['id']: (c['homing_offset'], c['range_min'],
                                                 c['range_max'])
                                       for c in LEADER_CALIBRATION.values()})
    path = tmp_path / 'leader.json'
    path.write_text(json.dumps(LEADER_CALIBRATION))
    try:
        yield emulator, str(path)
    finally:
        emulator.stop()


def test_leader_takes_any_follower_joint_state_and_keeps_its_teleop_sane(
        leader_emulator, ros_context, spinner, started, blaster):  # emulator stops last
    from std_srvs.srv import SetBool

    from tests.so101_driver.test_leader import make_leader

    emulator, cal_file = leader_emulator
    leader = started(make_leader(ros_context, emulator.port, cal_file,
                                 diagnostics_rate_hz=10.0))
    listener = started(Listener(ros_context, {
        'diag': (DiagnosticArray, 'diagnostics', qos.STREAM_SUB),
        'teleop': (JointTrajectory, 'teleop/joint_trajectory', qos.COMMAND)}))
    alive = lambda: spinning(spinner, leader) and leader._loop.is_alive()  # noqa: E731
    deliveries = Deliveries(leader)
    states = blaster.publisher(JointState, 'joint_states', qos.STREAM_PUB)
    client = blaster.create_client(SetBool, 'so101_leader/set_override')
    rng = np.random.default_rng(SEED + 3)

    def set_override(on: bool):
        assert client.wait_for_service(timeout_sec=10), 'so101_leader/set_override missing'
        future = client.call_async(SetBool.Request(data=on))
        wait_for(future.done, 10, message='set_override to answer')
        assert future.result().success, future.result().message

    wait_for(lambda: listener.last('diag'), 15, message='diagnostics from so101_leader')
    messages = joint_states(rng, 100)
    took = blast(states, messages, deliveries.counter('/joint_states'), 4, alive, lossy=True)
    assert not listener.since('teleop', 0), 'a teleop trajectory without the override'
    set_override(True)  # now the follower's state shapes each teleop trajectory
    follower = np.zeros(6)
    blast(states, [('a good follower state', joint_state(JOINT_NAMES, follower))],
          deliveries.counter('/joint_states'), 1, alive)
    for label, msg in unusable_joint_states():  # each alone, fresh while the leader ticks
        blast(states, [(label, msg)], deliveries.counter('/joint_states'), 1, alive,
              lossy=True)
        listener.wait_more('teleop', 2, alive=alive)
        assert np.array_equal(leader._follower, follower), \
            f'the leader took {leader._follower} from {label} as the follower\'s position'
    took += blast(states, messages, deliveries.counter('/joint_states'), 4, alive, lossy=True)
    assert took > 0.9 * 2 * len(messages), (took, len(messages))
    listener.wait_more('teleop', 5, alive=alive)
    assert alive(), 'the leader\'s executor or read thread died'
    n = listener.count('teleop')
    wait_for(lambda: states.publish(joint_state(JOINT_NAMES, follower)) or
             listener.count('teleop') > n + 3, 10, message='teleop after a good follower state')
    first = np.array(listener.last('teleop').points[0].positions)
    assert np.max(np.abs(first - follower)) <= 0.3 + 1e-9, \
        f'first teleop point {first} is not within max_jump of the follower'
    _check_chunks(listener.since('teleop', 0), 'the leader')
    set_override(False)
    values = diag_values(listener.wait_more('diag', 2, alive=alive))
    assert values['override'] == 'False' and int(values['joint_states_refused']) > 0, values
    print(f'leader: took {took} joint states; guard {leader.guard_values()}')


def test_monitor_counts_every_message_and_keeps_reporting(ros_context, spinner, started,
                                                          blaster, tmp_path):
    from std_srvs.srv import Trigger

    from eval_monitor.monitor_node import MEASURE, MonitorNode

    monitor = started(MonitorNode(context=ros_context, parameter_overrides=params(
        run_dir=str(tmp_path / 'run'), status_period_s=0.2)))
    listener = started(Listener(ros_context, {
        'status': (DiagnosticArray, 'eval/status', qos.STREAM_SUB)}))
    alive = lambda: spinning(spinner, monitor)  # noqa: E731
    deliveries = Deliveries(monitor)
    rng = np.random.default_rng(SEED + 4)
    hold = np.zeros(6)
    upper = np.full(6, 2.0)
    plan = [
        (JointState, 'joint_states', MEASURE, joint_states(rng, 100), 20),
        (String, 'eval/episode', qos.EPISODE_MARKS, strings(episode_payloads(rng, 80)), 5),
        (String, 'sim/truth', qos.COMMAND, strings(truth_payloads(rng, 80)), 5),
        (JointTrajectory, 'joint_trajectory', qos.COMMAND,
         fixed_trajectories(hold, upper) + random_trajectories(rng, hold, upper, 40), 5),
        (JointTrajectory, 'teleop/joint_trajectory', qos.COMMAND,
         random_trajectories(rng, hold, upper, 40), 5),
    ]
    wait_for(lambda: listener.last('status'), 15, message='eval/status')
    took = Counter()
    for msg_type, topic, profile, messages, batch in plan:
        pub = blaster.publisher(msg_type, topic, profile)
        took[topic] = blast(pub, messages, deliveries.counter('/' + topic), batch, alive)
        assert took[topic] == len(messages), (topic, took[topic], len(messages))
    override = blaster.publisher(Bool, 'teleop/override', qos.LATCHED)
    wait_for(lambda: override.get_subscription_count(), 15, message='override subscriber')
    toggle(override, 60, last=False)
    values = diag_values(listener.wait_more('status', 3, alive=alive))
    assert alive(), 'the monitor\'s executor died'
    received = {t.value: n for t, n in monitor._feeder.received.items()}
    rejected = {topic: monitor.rejected_messages[topic] for topic in took}
    for topic, n in took.items():  # every message reached the feeder, which counted it
        assert received.get(topic, 0) == n, (topic, received, took)
    assert int(values['skipped']) > 0, values  # the payloads it could not use are noted
    client = blaster.create_client(Trigger, 'eval/start_episode')
    assert client.wait_for_service(timeout_sec=10)
    future = client.call_async(Trigger.Request())
    wait_for(future.done, 10, message='eval/start_episode to answer')
    assert future.result().message, 'eval/start_episode answered without a message'
    save = blaster.create_client(Trigger, 'eval/save_report')
    assert save.wait_for_service(timeout_sec=10)
    future = save.call_async(Trigger.Request())
    wait_for(future.done, 30, message='eval/save_report to answer')
    assert future.result().success, f'the report failed after the fuzz: {future.result()}'
    print(f'monitor: took {dict(took)}; fed {received}; rejected by the guard {rejected}; '
          f'skipped {values["skipped"]}')


def test_recorder_bags_every_message_it_takes(ros_context, spinner, started, blaster,
                                              tmp_path):
    import yaml

    from eval_monitor.recorder_node import RecorderNode

    rng = np.random.default_rng(SEED + 5)
    hold = np.zeros(6)
    plan = {
        '/joint_states': (JointState, qos.STREAM_PUB, joint_states(rng, 60)),
        '/joint_trajectory': (JointTrajectory, qos.COMMAND,
                              fixed_trajectories(hold, np.full(6, 2.0))),
        '/eval/episode': (String, qos.EPISODE_MARKS, strings(episode_payloads(rng, 30))),
        '/cameras/front/image_raw': (Image, qos.STREAM_PUB, images(rng, 30)),
        '/teleop/override': (Bool, qos.LATCHED, []),
    }
    pubs = {topic: blaster.publisher(t, topic, p) for topic, (t, p, _) in plan.items()}
    recorder = started(RecorderNode(context=ros_context, parameter_overrides=params(
        output=str(tmp_path / 'bag'), topics=list(plan), discovery_period_s=0.05)))
    wait_for(lambda: set(recorder.recorded_topics) == set(plan), 15,
             message='the recorder to subscribe to every topic')
    deliveries = Deliveries(recorder)
    alive = lambda: spinning(spinner, recorder)  # noqa: E731
    took = {topic: blast(pubs[topic], messages, deliveries.counter(topic), 5, alive)
            for topic, (_, _, messages) in plan.items() if topic != '/teleop/override'}
    pubs['/teleop/override'].publish(Bool(data=True))
    wait_for(lambda: recorder.received_counts.get('/teleop/override'), 10,
             message='the latched override')
    took['/teleop/override'] = 1
    assert alive(), 'the recorder\'s executor died'
    assert recorder.received_counts == took, (recorder.received_counts, took)
    spinner.executor.remove_node(recorder)
    recorder.close()
    info = yaml.safe_load((tmp_path / 'bag' / 'metadata.yaml').read_text())
    counts = {entry['topic_metadata']['name']: entry['message_count']
              for entry in info['rosbag2_bagfile_information']['topics_with_message_count']}
    assert counts == took, f'bagged {counts}, took {took}'
    print(f'recorder: bagged {counts}')


def test_console_shows_or_rejects_every_message_and_keeps_listening(
        ros_context, spinner, started, blaster):
    import io

    from eval_monitor.console import ConsoleNode

    out = io.StringIO()
    console = started(ConsoleNode(out=out, context=ros_context, parameter_overrides=params(
        service_wait_s=0.0)))
    alive = lambda: spinning(spinner, console)  # noqa: E731
    deliveries = Deliveries(console)
    rng = np.random.default_rng(SEED + 6)
    status = blaster.publisher(DiagnosticArray, 'eval/status', qos.STREAM_PUB)
    events = blaster.publisher(String, 'eval/events', qos.COMMAND)
    override = blaster.publisher(Bool, 'teleop/override', qos.LATCHED)
    said = Counter()
    say = console.say

    def counting_say(*lines):
        said.update(line.split(':')[0] for line in lines)
        return say(*lines)

    console.say = counting_say  # each event shown is one 'event: ...' line
    took_status = blast(status, diagnostic_arrays(rng, 60), deliveries.counter('/eval/status'),
                        4, alive, lossy=True)
    event_messages = strings(event_payloads(rng, 80))
    took_events = blast(events, event_messages, deliveries.counter('/eval/events'), 5, alive)
    wait_for(lambda: override.get_subscription_count(), 15, message='override subscriber')
    toggle(override, 60, last=True)
    assert took_status > 40 and took_events == len(event_messages), (took_status, took_events)
    shown = said['event']
    rejected = console.rejected_messages['eval/events']
    assert shown + rejected == took_events, (shown, rejected, took_events)
    # still listening: a good status and event are shown, the override is known
    good = DiagnosticArray(status=[DiagnosticStatus(name='eval_monitor: counters', values=[
        KeyValue(key='episodes', value='7')])])
    wait_for(lambda: status.publish(good) or 'episodes=7' in console.status()[0], 10,
             message='a good eval/status shown after the fuzz')
    events.publish(String(data=json.dumps({'kind': 'place', 'stamp': 3.0, 'episode': 2})))
    wait_for(lambda: 'event: place episode 2' in out.getvalue(), 10, message='a good event')
    wait_for(lambda: console.view.override is True, 10, message='override ON in the view')
    assert alive(), 'the console\'s executor died'
    print(f'console: took {took_status} status arrays, {took_events} events ({shown} shown, '
          f'{rejected} rejected); guard {console.guard_values()}')
